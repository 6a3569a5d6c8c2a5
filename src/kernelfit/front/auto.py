"""Choices the user need not make: the kernel size (``shape=None``) and the edge rule
(``boundary='auto'``) of :func:`kernelfit.estimate`.

Both choices are made on evidence, and the evidence is returned in ``fit.info``:

Kernel size
    Chosen by :func:`kernelfit.select.shape.choose_shape` (see there).

Edge rule (:func:`choose_boundary`)
    The kernel is first fitted on the 'valid' interior, with every option the user gave.
    Then each rule of :data:`BORDER_RULES` predicts the border of ``b`` (the pixels whose
    footprint leaves ``a``) with that kernel; the score is the border's mean squared
    residual over the interior noise variance, about 1 for the rule that made ``b``.  Every
    rule is scored on the same pixels, so ranking by score is ranking by Gaussian
    likelihood.  The best rule is used to refit with the border included, unless even its
    score exceeds :data:`BORDER_EXPLAINED` (``b`` was cropped from a larger image or made by
    software with another rule): then the 'valid' fit is kept, and ``fit.message`` says so.
    A 'valid'-sized ``b`` has no border, and gets the 'valid' fit.
"""

from __future__ import annotations


import numpy as np
from numpy.polynomial import legendre

from ..core.conventions import (
    BOUNDARIES,
    normalize_boundary,
)
from ..core.defects import check_saturation_option
from ..core.design import PreparedPair, _prepare_pairs
from ..core.forward import convolve_extended
from ..fit.result import KernelFit
from .options import _check_options
from ..stats.background import BackgroundBasis, check_degree
from ..select.shape import choose_shape

AUTO = "auto"
# The rules a border can be scored against ('valid' has no border to predict).
BORDER_RULES = tuple(rule for rule in BOUNDARIES if rule != "valid")
# The best rule's border score must stay below this to be believed.  Under the right rule the
# score is 1 plus the kernel's estimation error seen at the border: 0.92-1.28 over the 30
# cases of benchmarks/bench_auto.py; a b cropped from a larger blurred image scored 4.9 (a
# smooth moon crop) to 23 there, and wrong rules on textured borders far more.
BORDER_EXPLAINED = 3.0
# An offset is fitted when it lowers the held-out mean squared residual by more than this
# fraction: one coefficient more among thousands of pixels changes it by ~1/n when there is
# no offset, far less than 1 %.
OFFSET_GAIN = 0.01


def is_auto(value) -> bool:
    """Whether ``boundary`` asks for the automatic rule.

    Examples
    --------
    >>> is_auto("Auto"), is_auto("fill"), is_auto(None)
    (True, False, False)
    """
    return isinstance(value, str) and value.lower() == AUTO


def estimate_auto(a, b, shape, *, boundary, refit, center=None, **options) -> KernelFit:
    """:func:`kernelfit.estimate` with ``shape=None`` and/or ``boundary='auto'``.

    The size is chosen first (on the 'valid' interior, where no edge rule matters), then the
    rule; the final fit is an ordinary :func:`kernelfit.estimate` call with every option
    given, so every model, loss, regulariser and constraint composes with both choices.

    Parameters
    ----------
    a, b, shape, boundary, center, **options
        As for :func:`kernelfit.estimate`; ``shape`` may be None and ``boundary`` 'auto'.
    refit : callable
        The front door that fits under the chosen size and rule (:func:`kernelfit.estimate`,
        passed in so that this module never imports it).

    Returns
    -------
    KernelFit
        With ``info['shape_scores']`` and ``info['kernel_offset']`` (for ``shape=None``) and
        ``info['boundary_scores']`` (for ``boundary='auto'``).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((48, 48))
    >>> k = np.array([[0.0, 0.2, 0.0], [0.1, 0.4, 0.2], [0.0, 0.1, 0.0]])
    >>> fit = estimate_auto(a, kf.convolve(a, k, boundary="wrap"), None, boundary="auto",
    ...                     refit=kf.estimate)
    >>> fit.shape, fit.boundary, bool(np.allclose(fit.kernel, k))
    ((3, 3), 'wrap', True)
    """
    _check_early(shape, boundary, center, options)
    choice = None
    if shape is None:
        choice, offset = _choose_shape_and_offset(a, b, options)
        shape, center = choice.shape, choice.center
        if offset is not None:
            options = dict(options, background=0)
    if is_auto(boundary):
        fit = choose_boundary(a, b, shape, refit=refit, center=center, **options)
    else:
        fit = refit(a, b, shape, boundary=boundary, center=center, **options)
    if choice is not None:
        fit.info["shape_scores"] = choice.scores
        fit.info["kernel_offset"] = kernel_offset(fit.kernel, fit.center)
        _add_message(fit, choice.message)
        if offset is not None:
            fit.info["offset_choice"] = offset
            _add_message(fit, offset["message"])
    return fit


def _choose_shape_and_offset(a, b, options):
    """The size, and whether ``b`` carries a constant offset the user did not model.

    Without ``background=`` the size is chosen twice, with no background and with a constant
    one (``background=0``: an editor's offset, 8-bit truncation's −½, a sky level); the
    offset is kept when it lowers the held-out mean squared residual by more than
    :data:`OFFSET_GAIN`.  A kernel cannot absorb an offset (it would have to fake it from
    ``a``'s mean), so a true offset shows up as a clearly lower held-out error.

    Returns ``(choice, offset_record or None)``.
    """
    defects = {name: options.get(name) for name in
               ("mask", "saturation", "saturation_a", "background")}
    plain = choose_shape(a, b, **defects)
    if options.get("background") is not None or "held_out_mse" not in plain.scores:
        return plain, None
    with_offset = choose_shape(a, b, **dict(defects, background=0))
    mse_plain, mse_offset = plain.scores["held_out_mse"], with_offset.scores["held_out_mse"]
    if not mse_offset < (1.0 - OFFSET_GAIN) * mse_plain:
        return plain, None
    record = {"chosen": "background=0", "held_out_mse": {"none": mse_plain,
                                                          "background=0": mse_offset},
              "message": (f"shape=None: b carries a constant offset (held-out error "
                          f"{mse_offset:.3g} with it, {mse_plain:.3g} without), so it was "
                          "fitted as background=0")}
    return with_offset, record

def _check_early(shape, boundary, center, options) -> None:
    """Refuse bad options before the (costly) search rather than after it."""
    if shape is None and center is not None:
        raise ValueError(f"center={center!r} is an index into a kernel of a given size; with "
                         "shape=None the size and the centre are chosen together (the chosen "
                         "centre is fit.center): pass shape= as well, or no center")
    if not is_auto(boundary):
        normalize_boundary(boundary)
    check_degree(options.get("background"))
    check_saturation_option(options.get("saturation"), "saturation")
    check_saturation_option(options.get("saturation_a"), "saturation_a")
    checked = {name: options.get(name, default) for name, default in
               (("model", "free"), ("loss", "l2"), ("reg", None), ("lam", "auto"),
                ("method", None), ("nonneg", False), ("normalize", None),
                ("noise_std", None))}
    _check_options(shape=shape, **checked)


def _add_message(fit: KernelFit, message: str) -> None:
    if message:
        fit.message = f"{fit.message} {message}".strip()


# --------------------------------------------------------------------------------------------
# Kernel offset
# --------------------------------------------------------------------------------------------


def kernel_offset(kernel, center) -> list[float]:
    """Centroid of the kernel's energy ``k²`` relative to ``center``, as ``[rows, columns]``.

    Positive values mean ``b`` is displaced down/right of ``a``.

    Examples
    --------
    >>> k = np.zeros((5, 5)); k[2, 4] = 1.0
    >>> kernel_offset(k, (2, 2))
    [0.0, 2.0]
    """
    energy = np.square(np.asarray(kernel, dtype=np.float64))
    total = energy.sum()
    if not total > 0:
        return [0.0, 0.0]
    rows, cols = np.indices(energy.shape)
    return [round(float((energy * rows).sum() / total - center[0]), 3),
            round(float((energy * cols).sum() / total - center[1]), 3)]


# --------------------------------------------------------------------------------------------
# boundary='auto'
# --------------------------------------------------------------------------------------------


def choose_boundary(a, b, shape, *, refit, center=None, **options) -> KernelFit:
    """Fit with the edge rule that best explains the border of ``b`` (see the module notes).

    Returns
    -------
    KernelFit
        The refit under the chosen rule (``fit.boundary``), or the 'valid' fit; the scores
        in ``fit.info['boundary_scores']``.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> a = np.random.default_rng(2).random((40, 40))
    >>> b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="mirror")
    >>> choose_boundary(a, b, (3, 3), refit=kf.estimate).info["boundary_scores"]["chosen"]
    'mirror'
    """
    defects = {name: options.get(name) for name in ("mask", "saturation", "saturation_a")}
    valid_pairs = _prepare_pairs(a, b, shape, boundary="valid", center=center, **defects)
    fit_valid = refit(a, b, shape, boundary="valid", center=center, **options)
    if all(pair.geometry.output_size == "valid" for pair in valid_pairs):
        fit_valid.info["boundary_scores"] = {
            "candidates": [], "scores": [], "chosen": "valid",
            "message": "b has the 'valid' size: it has no border to score"}
        return fit_valid
    residuals = {rule: _border_residuals(a, b, shape, rule, center, defects, valid_pairs,
                                         fit_valid) for rule in BORDER_RULES}
    # The same pixels for every rule, so that the scores compare like with like (a NaN in a
    # spoils different border pixels under different rules).
    common = np.logical_and.reduce([np.isfinite(r) for r in residuals.values()])
    n_border = int(common.sum())
    if n_border == 0:
        fit_valid.info["boundary_scores"] = {
            "candidates": [], "scores": [], "chosen": "valid",
            "message": "no usable border pixel (all masked or not finite)"}
        return fit_valid
    variance = _noise_variance(fit_valid, valid_pairs)
    scores = [float(np.mean(np.square(r[common])) / variance) for r in residuals.values()]
    best = int(np.argmin(scores))
    rule = BORDER_RULES[best]
    record = {"candidates": list(BORDER_RULES), "scores": scores, "chosen": rule,
              "criterion": "mean squared border residual / interior noise variance",
              "n_border": n_border}
    if scores[best] > BORDER_EXPLAINED:
        record["chosen"] = "valid"
        clipping = "; ".join(pair.notes[key] for pair in valid_pairs
                             for key in ("clipping_b", "clipping_a") if key in pair.notes)
        record["message"] = (
            f"no edge rule explains the border of b (best: {rule!r}, score "
            f"{scores[best]:.3g} > {BORDER_EXPLAINED}): b may be cropped from a larger image "
            + ("or made with another rule" if not clipping else
               f", made with another rule, or clipped ({clipping})")
            + ", so only the 'valid' interior was used")
        fit_valid.info["boundary_scores"] = record
        _add_message(fit_valid, "boundary='auto': " + record["message"] + ".")
        return fit_valid
    fit = refit(a, b, shape, boundary=rule, center=center, **options)
    fit.info["boundary_scores"] = record
    return fit


def _border_residuals(a, b, shape, rule, center, defects, valid_pairs, fit_valid):
    """``b − prediction`` under ``rule`` on the border pixels of every pair, flattened; NaN
    where a pixel is unusable (masked, non-finite, or not a border pixel)."""
    pairs = _prepare_pairs(a, b, shape, boundary=rule, center=center, **defects)
    backgrounds = _as_list(fit_valid.background, len(pairs))
    kernel = np.asarray(fit_valid.kernel, dtype=np.float64)
    out = []
    for pair, valid_pair, beta in zip(pairs, valid_pairs, backgrounds):
        residual = _border_residual(pair, valid_pair.geometry.used, kernel)
        if beta is not None:
            residual = residual - _background_image(beta, valid_pair)
        out.append(residual.ravel())
    return np.concatenate(out)


def _border_residual(pair: PreparedPair, inner, kernel) -> np.ndarray:
    """``b − a ⊛ kernel`` on the pixels of ``b`` outside the rectangle ``inner`` (NaN inside
    it and where unused), convolving only the four border strips.

    Under a padding rule the used rectangle is the whole of ``b``, so ``b``'s indices are
    those of ``pair.b_used`` and strip ``[y0, y1) × [x0, x1)`` of the prediction is the
    'valid' convolution of ``extended[y0:y1+kh−1, x0:x1+kw−1]``.
    """
    kh, kw = kernel.shape
    Ho, Wo = pair.b_used.shape
    (r0, r1, _), (c0, c1, _) = (s.indices(n) for s, n in zip(inner, (Ho, Wo)))
    out = np.full((Ho, Wo), np.nan)
    strips = ((0, r0, 0, Wo), (r1, Ho, 0, Wo), (r0, r1, 0, c0), (r0, r1, c1, Wo))
    for y0, y1, x0, x1 in strips:
        if y1 <= y0 or x1 <= x0:
            continue
        prediction = convolve_extended(pair.extended[y0:y1 + kh - 1, x0:x1 + kw - 1], kernel)
        out[y0:y1, x0:x1] = pair.b_used[y0:y1, x0:x1] - prediction
    if pair.use is not None:
        out[~pair.use] = np.nan
    return out


def _as_list(value, n):
    if value is None:
        return [None] * n
    return list(value) if isinstance(value, list) else [value]


def _background_image(beta, valid_pair: PreparedPair) -> np.ndarray:
    """The 'valid' fit's polynomial background continued over the whole of ``b``.

    Its coordinates are scaled to [−1, 1] across the valid rectangle (see
    :mod:`kernelfit.background`), so the border lies just outside that range.
    """
    beta = np.asarray(beta, dtype=np.float64)
    used, b_shape = valid_pair.geometry.used, valid_pair.b_shape
    inside = valid_pair.geometry.used_shape
    degree = int(round((np.sqrt(8 * beta.size + 1) - 3) / 2))  # m = (d+1)(d+2)/2 terms
    basis = BackgroundBasis(inside, degree)
    coords = []
    for axis in (0, 1):
        start = used[axis].indices(b_shape[axis])[0]
        index = np.arange(b_shape[axis]) - start
        coords.append(2.0 * index / (inside[axis] - 1) - 1.0 if inside[axis] > 1
                      else np.zeros(b_shape[axis]))
    vy, vx = legendre.legvander(coords[0], degree), legendre.legvander(coords[1], degree)
    return sum(coef * np.outer(vy[:, j], vx[:, i]) for coef, (i, j) in zip(beta, basis.powers))


def _noise_variance(fit: KernelFit, pairs) -> float:
    """The interior noise variance, floored so that noise-free data still compare.

    The floor, 1e-20 of ``b``'s mean square, sits far below any real noise (8-bit rounding is
    ~1e-5 of it) and above the border residual of an exact fit, whose kernel a smooth image
    determines to ~1e-10 (its square ~1e-20): exact data still score ~1 under their rule.
    """
    mean_square = np.mean([np.mean(np.square(pair.b_used)) for pair in pairs])
    noise = fit.noise_std if np.isfinite(fit.noise_std) else 0.0
    return float(max(noise ** 2, 1e-20 * mean_square, np.finfo(float).tiny))


# --------------------------------------------------------------------------------------------
# shape=None
# --------------------------------------------------------------------------------------------
