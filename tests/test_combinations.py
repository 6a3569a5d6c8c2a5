"""Every combination of the main options: exact recovery on noise-free data, or a refusal
that says why.

The product enumerated is model × loss × background × defects (mask / NaN) × constraint
(nonneg / normalize) × method × front door (``kf.estimate`` in memory, or
``kernelfit.front.tiled.estimate_tiled`` on tiles).  :func:`expected` says, for each
combination, either ``'exact'`` (the true kernel comes back, to the tolerance of
:func:`tolerance`) or ``('refused', phrase)``: a ``ValueError``/``TypeError`` whose message
contains ``phrase``.  It reads the ordered table :data:`RULES`; the first rule that applies
decides, in the order the front doors check their options.

Each rule is either ``MATH`` (the combination asks for something contradictory or undefined;
docs/refusals.md gives the sentence) or ``NOT_YET`` (nothing forbids it, the code does not do
it yet).  The test asserts the current refusal for both, so it passes today; when a hole is
closed, DELETE ITS ONE LINE from :data:`RULES` and the combinations fall through to the next
rule or to ``'exact'`` (and move its line in docs/refusals.md, which
:func:`test_rules_are_documented` keeps in step with the table).

Nothing is pruned: the full product (1944 combinations) runs in a few seconds, because the
refusals come before any work and each fit is a 36×36 problem.  The constraint axis takes
nonneg and normalize one at a time (both together: tests/test_estimate.py and
tests/test_robust_free.py).
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest

import kernelfit as kf
from kernelfit.front.tiled import estimate_tiled
from kernelfit.models.parametric import make_model

SHAPE = (5, 5)      # small enough for the LP and the 25×25 Gram matrix, big enough for a
IMAGE = (40, 40)    # radial profile with 6 knots; 'valid' b is 36×36 = 1296 equations
TILE = 16           # 36×36 valid pixels → 9 tiles, so the tiled sums really add tiles

MODELS = ("free", "separable", "radial", "gaussian")
LOSSES = ("l2", "l1", "huber")
BACKGROUNDS = (None, 0, 1)
DEFECTS = ("none", "mask", "nan")
CONSTRAINTS = ("none", "nonneg", "normalize")
METHODS = (None, "iterative", "lp")
FRONTS = ("memory", "tiled")


class Combo(NamedTuple):
    model: str
    loss: str
    background: int | None
    defect: str
    constraint: str
    method: str | None
    front: str


# --- the expected outcome ------------------------------------------------------------------

MATH, NOT_YET = "math", "not yet"


class Rule(NamedTuple):
    name: str                           # cited in docs/refusals.md
    status: str                         # MATH or NOT_YET
    applies: Callable[[Combo], bool]
    phrase: str                         # a piece of the error message (matched literally)


def _memory(c): return c.front == "memory"
def _tiled(c): return c.front == "tiled"
def _structured(c): return c.model in ("separable", "radial")


RULES = (
    # The tiled front door (front/tiled.py, check_statistics_options), in its order.
    Rule("tiled-structured", NOT_YET, lambda c: _tiled(c) and _structured(c),
         "is not available for tiled or distributed fits"),
    Rule("tiled-background", NOT_YET, lambda c: _tiled(c) and c.background is not None,
         "is not available for tiled or distributed fits"),
    Rule("tiled-robust-loss", MATH, lambda c: _tiled(c) and c.loss != "l2",
         "only loss='l2'"),
    Rule("tiled-method", MATH, lambda c: _tiled(c) and c.method is not None,
         "only method=None or 'normal'"),
    # A parametric family: nonneg is refused by both front doors (after the rules above on
    # the tiled one, first of all in memory), then kf.estimate's own checks.
    Rule("parametric-nonneg", NOT_YET,
         lambda c: c.model == "gaussian" and c.constraint == "nonneg",
         "nonneg=True is not available with model='gaussian'"),
    Rule("parametric-method", MATH, lambda c: c.model == "gaussian" and c.method is not None,
         "is not available with model='gaussian'"),
    # kf.estimate with the free model and a robust loss or method='lp' (_fit_robust).
    Rule("free-l1-background", NOT_YET,                # being closed now (l1 and lp)
         lambda c: c.model == "free" and c.background is not None
         and (c.loss == "l1" or c.method == "lp"),
         "is available with sigma-clipping (clip=) and loss='huber'"),
    Rule("lp-needs-l1", MATH, lambda c: c.model == "free" and c.method == "lp" and c.loss != "l1",
         "method='lp' is the exact L1 linear program: it needs loss='l1'"),
    Rule("robust-iterative", NOT_YET,                  # being closed now
         lambda c: c.model == "free" and c.loss != "l2" and c.method == "iterative",
         "is solved by reweighting a Gram matrix"),
    # kf.estimate with a structured model: the loss first, then _structured_options.
    Rule("structured-robust-loss", NOT_YET, lambda c: _structured(c) and c.loss != "l2",
         "fits loss='l2'"),
    Rule("structured-nonneg", NOT_YET, lambda c: _structured(c) and c.constraint == "nonneg",
         "nonneg=True is not available with model="),
    Rule("structured-normalize", NOT_YET,
         lambda c: _structured(c) and c.constraint == "normalize",
         "is not available with model="),
    Rule("radial-method", NOT_YET, lambda c: c.model == "radial" and c.method is not None,
         "is not available with model='radial'"),
    Rule("separable-method", MATH, lambda c: c.model == "separable" and c.method is not None,
         "is not available with model='separable'"),
    # kf.estimate, free model, loss='l2'.
)


def expected(combo: Combo):
    """``'exact'`` or ``('refused', phrase)``: the first rule of :data:`RULES` that applies."""
    for rule in RULES:
        if rule.applies(combo):
            return "refused", rule.phrase
    return "exact"


def tolerance(combo: Combo) -> float:
    """Largest relative kernel error ‖k̂ − k‖/‖k‖ that counts as exact recovery.

    Measured on these data: the direct paths (normal equations with and without background,
    the active set for nonneg, the tiled sums, the L1 linear program, IRLS for L1/Huber and
    the parametric fits) stay below 2e-13; 1e-10 leaves three orders of magnitude for other
    BLAS/HiGHS builds.  The matrix-free path (conjugate gradients or FISTA, run with
    tol=1e-12) stops between 1e-13 and 8e-11, so it gets 1e-8.  (At its default tol=1e-5 it
    stops early, at 5e-7 … 6e-4 here: that regularises, it is not the least-squares kernel,
    hence tol=1e-12 in :func:`run`.)
    """
    return 1e-8 if combo.method == "iterative" else 1e-10


# --- data ------------------------------------------------------------------------------------

def _true_kernels():
    """One kernel inside each model's family, positive (so nonneg=True is no constraint)."""
    rng = np.random.default_rng(20240611)
    y, x = np.mgrid[:SHAPE[0], :SHAPE[1]] - np.array([[[2]], [[2]]])
    r = np.hypot(y, x)
    return {
        "free": rng.random(SHAPE) + 0.05,
        "separable": np.outer([0.2, 0.5, 1.0, 0.6, 0.1], [0.3, 0.7, 1.0, 0.4, 0.2]),
        # Every distinct radius of a 5×5 kernel (0, 1, √2, 2, √5, √8) is a default knot,
        # so any function of r is in the radial family.
        "radial": np.exp(-r / 1.3) + 0.1 * np.cos(r),
        "gaussian": make_model("gaussian").evaluate([1.1], SHAPE, amplitude=1.7),
    }


KERNELS = _true_kernels()
A = np.random.default_rng(7).random(IMAGE)


@functools.lru_cache(maxsize=None)
def make_data(model: str, background, defect: str):
    """``(k, b, mask)``: noise-free 'valid' ``b = a ⊛ k`` plus the background the fit
    models (none, a constant, a plane), with ~10 % of pixels masked or 6 pixels NaN."""
    k = KERNELS[model]
    b = kf.convolve(A, k, mode="valid")
    y, x = np.mgrid[:b.shape[0], :b.shape[1]]
    if background is not None:
        b = b + 0.3 + (background >= 1) * (0.01 * y - 0.02 * x)
    mask = None
    if defect == "mask":
        mask = np.random.default_rng(1).random(b.shape) > 0.1
    elif defect == "nan":
        b = b.copy()
        b.flat[np.random.default_rng(2).choice(b.size, 6, replace=False)] = np.nan
    return k, b, mask


def run(combo: Combo):
    """Fit ``combo`` on its data; returns ``(fit, true kernel)``."""
    k, b, mask = make_data(combo.model, combo.background, combo.defect)
    options = dict(model=combo.model, loss=combo.loss, background=combo.background,
                   mask=mask, method=combo.method)
    if combo.constraint == "nonneg":
        options["nonneg"] = True
    elif combo.constraint == "normalize":
        options["normalize"] = float(k.sum())
    if combo.method == "iterative":
        options.update(tol=1e-12, maxiter=5000)   # the least-squares kernel, not early stopping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the outcome is judged on the kernel, not warnings
        if combo.front == "memory":
            return kf.estimate(A, b, SHAPE, **options), k
        return estimate_tiled(A, b, SHAPE, tile=TILE, **options), k


def relative_error(kernel, true) -> float:
    return float(np.linalg.norm(kernel - true) / np.linalg.norm(true))


# --- the tests ---------------------------------------------------------------------------------

def _combo_id(c: Combo) -> str:
    return (f"{c.model}-{c.loss}-bg{c.background}-{c.defect}-{c.constraint}-"
            f"{c.method or 'default'}-{c.front}")


COMBOS = [Combo(*values) for values in itertools.product(
    MODELS, LOSSES, BACKGROUNDS, DEFECTS, CONSTRAINTS, METHODS, FRONTS)]


@pytest.mark.parametrize("combo", [pytest.param(c, id=_combo_id(c)) for c in COMBOS])
def test_combination(combo):
    outcome = expected(combo)
    if outcome == "exact":
        fit, k = run(combo)
        assert relative_error(fit.kernel, k) <= tolerance(combo)
    else:
        with pytest.raises((ValueError, TypeError), match=re.escape(outcome[1])):
            run(combo)


# Two options outside the product, both holes being closed now: the automatic shape and
# boundary on the tiled front door, and the varying kernel with constraints or a regulariser.
AUTOMATIC_NOT_YET = {"tiled"}   # remove "tiled" when estimate_tiled chooses shape/boundary


def _aligned_error(fit, k) -> float:
    """Relative error of a kernel whose window may differ from ``k``'s (shape=None):
    both are placed on one canvas with their centres (the output pixel) together."""
    (kh, kw), (fh, fw) = k.shape, fit.kernel.shape
    (cy, cx), (fy, fx) = (2, 2), fit.center
    top, left = max(cy, fy), max(cx, fx)
    size = (top + max(kh - cy, fh - fy), left + max(kw - cx, fw - fx))
    true, got = np.zeros(size), np.zeros(size)
    true[top - cy:top - cy + kh, left - cx:left - cx + kw] = k
    got[top - fy:top - fy + fh, left - fx:left - fx + fw] = fit.kernel
    return relative_error(got, true)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("model", ("free", "gaussian"))
@pytest.mark.parametrize("shape, boundary", [(None, "valid"), (SHAPE, "auto")],
                         ids=["shape-None", "boundary-auto"])
def test_automatic_choices(front, model, shape, boundary):
    k, b, _ = make_data(model, None, "none")

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if front == "memory":
                return kf.estimate(A, b, shape, boundary=boundary, model=model)
            return estimate_tiled(A, b, shape, boundary=boundary, model=model, tile=TILE)

    if front in AUTOMATIC_NOT_YET:
        with pytest.raises(ValueError, match=re.escape("need a kernel shape and a named boundary")):
            fit()
    else:
        assert _aligned_error(fit(), k) <= 1e-10   # direct path, as tolerance() says


VARIATION_NOT_YET: dict = {}   # option → phrase of a refusal; all three are closed now


@pytest.mark.parametrize("option", ("none", "nonneg", "normalize", "ridge"))
def test_variation_options(option):
    """A constant kernel fitted with variation=1 comes back exactly (its slopes are zero)."""
    k, b, _ = make_data("free", None, "none")
    options = {"none": {}, "nonneg": {"nonneg": True}, "normalize": {"normalize": float(k.sum())},
               # lam=0: any positive weight biases a noise-free fit, so 'exact' needs lam=0
               "ridge": {"reg": "ridge", "lam": 0.0}}[option]
    if option in VARIATION_NOT_YET:
        with pytest.raises(ValueError, match=re.escape(VARIATION_NOT_YET[option])):
            kf.estimate(A, b, SHAPE, variation=1, **options)
        return
    fit = kf.estimate(A, b, SHAPE, variation=1, **options)
    assert relative_error(fit.kernel, k) <= 1e-10
    assert relative_error(fit.kernel_at(0, 0), k) <= 1e-10


def test_rules_are_documented():
    """docs/refusals.md names every rule, and says which ones are planned."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "refusals.md").read_text()
    for rule in RULES:
        assert f"`{rule.name}`" in text, rule.name
    planned = text[text.index("## Not yet"):]
    assert {r.name for r in RULES if r.status == NOT_YET} == \
        set(re.findall(r"^- `([a-z0-9-]+)`", planned, flags=re.M))


def test_every_rule_is_reached():
    """No dead rule: each one decides at least one combination of the product."""
    deciding = set()
    for combo in COMBOS:
        for rule in RULES:
            if rule.applies(combo):
                deciding.add(rule.name)
                break
    assert deciding == {rule.name for rule in RULES}
