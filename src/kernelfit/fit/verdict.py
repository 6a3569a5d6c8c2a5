"""The quality verdict of a fit: ``'ok'``, ``'doubtful'`` or ``'failed'``, with its reasons.

A solver that converged has found *a* kernel; whether it is the kernel that made ``b`` is a
second question, answered by what the fit left behind:

``failed``
    The fit is not trusted (``fit.converged`` is False): the solver failed, the normal
    equations were rank-deficient, or the images cannot determine the kernel at all.
``doubtful``
    The solve succeeded, but the evidence says the kernel may be wrong:

    * the images barely determine it (the identifiability check of
      :mod:`kernelfit.core.diagnostics` warned);
    * the residual has structure the model does not explain: its lag-1 autocorrelation (along
      rows or columns, after clipping outliers) exceeds :data:`STRUCTURE_LIMIT`, where white
      noise gives ``≈ ±1/√n``, and it holds more than :data:`UNEXPLAINED_LIMIT` of ``b``'s
      variance — what unrelated images, a wrong boundary rule or a model too small for the
      blur leave behind;
    * a least-squares fit's residual has heavy tails: more than :data:`TAIL_LIMIT` of it
      beyond :data:`TAIL_SIGMAS` robust standard deviations (MAD), where Gaussian noise puts
      ``6·10⁻⁷`` — outliers that pull a plain least-squares kernel (``loss='huber'`` resists
      them);
    * with ``noise_std=`` given, the reduced χ² of the residual against it is off 1 by more
      than the noise allows (:func:`chi2_tolerance`).
``ok``
    None of the above.

The residual checks are skipped where the residual is only rounding: an exact fit (residual
RMS below :data:`EXACT_FRACTION` of ``b``'s) or one at the quantisation floor of integer
images (the rounding of an 8-bit ``b`` is not the model's to explain).

Every number is kept in ``verdict.checks``; the verdict appears in ``fit.summary()``, the
JSON of the fit (``to_dict()['verdict']``), the HTML report's banner and the CLI's exit
status (0 ok, 3 doubtful, 4 failed).

Examples
--------
>>> import numpy as np, kernelfit as kf
>>> rng = np.random.default_rng(0)
>>> a = rng.random((96, 96))
>>> b = kf.convolve(a, np.full((3, 3), 1 / 9), mode="valid") + 0.01 * rng.normal(size=(94, 94))
>>> kf.estimate(a, b, 3).verdict.level
'ok'
>>> unrelated = kf.convolve(rng.random((102, 102)), np.ones((9, 9)) / 81, mode="valid")
>>> verdict = kf.estimate(a, unrelated, 3).verdict
>>> verdict.level, verdict.reasons[0][:39]
('doubtful', 'the residual has structure the model do')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVELS = ("ok", "doubtful", "failed")
EXIT_CODES = {"ok": 0, "doubtful": 3, "failed": 4}

# White noise gives a lag-1 autocorrelation of about ±1/√n (±0.01 at 100² pixels); smooth
# leftovers of b (unrelated images, a wrong model) give 0.7–0.99.  0.5 leaves room for the
# mildly correlated noise of real cameras (demosaicing, JPEG).
STRUCTURE_LIMIT = 0.5
# Gaussian noise puts 5.7e-7 of its values beyond 5σ; 0.5 % is thousands of times that.
TAIL_SIGMAS = 5.0
TAIL_LIMIT = 0.005
# Residual RMS below this fraction of b's: an exact fit, whose residual is rounding (FFT
# rounding and the classic methods' edge corrections leave ~1e-9 that is not white).
EXACT_FRACTION = 1e-7
# A structured residual counts only when it holds this much of b's variance: a fit that
# explains 99.9 % of b and leaves a small regularisation bias or clipped pixels is not
# wrong; unrelated images leave most of b's variance behind.
UNEXPLAINED_LIMIT = 1e-3
# Residual variance up to this many times the rounding variance of integer b: rounding.
QUANTISATION_FACTOR = 2.0
# The residual checks need enough pixels to mean anything.
MIN_PIXELS = 100


@dataclass(frozen=True)
class Verdict:
    """How far a fit can be trusted.

    Attributes
    ----------
    level : {'ok', 'doubtful', 'failed'}
    reasons : tuple of str
        Why the level is not ``'ok'`` (empty when it is), each a sentence with the remedy.
    checks : dict
        The numbers behind it: ``structure`` (largest lag-1 autocorrelation of the residual),
        ``tail_fraction``, ``explained_fraction`` (``1 − RSS/Σ(b − b̄)²``), ``reduced_chi2``
        (with ``noise_std=`` given), and which checks were ``skipped`` and why.
    """

    level: str
    reasons: tuple = ()
    checks: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status for this verdict: 0, 3 or 4."""
        return EXIT_CODES[self.level]

    def __str__(self) -> str:
        return self.level if not self.reasons else f"{self.level}: {'; '.join(self.reasons)}"

    def to_dict(self) -> dict:
        return {"level": self.level, "reasons": list(self.reasons), "checks": dict(self.checks)}


def assess(fit) -> Verdict:
    """The :class:`Verdict` of ``fit`` (a :class:`kernelfit.KernelFit`), from its convergence,
    its identifiability report and its residual (computed if it was not yet)."""
    checks: dict = {}
    failed, doubtful = [], []
    identifiability = fit.info.get("identifiability", {})
    if not fit.converged:
        failed.append(_failure_reason(identifiability))
    elif identifiability.get("poorly_determined"):
        doubtful.append("the images barely determine this kernel (relative standard error "
                        f"~{identifiability['relative_error']:.2g}); use a regulariser, "
                        "nonneg=True or a parametric model")
    residuals = _residual_values(fit)
    if residuals is not None:
        doubtful.extend(_residual_reasons(fit, residuals, checks))
    level = "failed" if failed else "doubtful" if doubtful else "ok"
    return Verdict(level, tuple(failed + doubtful), checks)


def _failure_reason(identifiability) -> str:
    if identifiability.get("determined") is False:
        return "the images cannot determine this kernel (more unknowns than data)"
    return "the fit did not succeed (see the message)"


def _residual_values(fit):
    """The residual images as a list of 2-D arrays (NaN where unused), or None."""
    try:
        residual = fit.residual
    except (ValueError, MemoryError):   # a residual that cannot be made is not a verdict
        return None
    if residual is None:
        return None
    images = residual if isinstance(residual, (list, tuple)) else [residual]
    images = [np.asarray(image, dtype=np.float64) for image in images]
    return images if all(image.ndim == 2 for image in images) else None


def _residual_reasons(fit, images, checks) -> list[str]:
    values = np.concatenate([image[np.isfinite(image)] for image in images])
    if values.size < MIN_PIXELS:
        checks["skipped"] = f"only {values.size} residual pixels"
        return []
    rms = float(np.sqrt(np.mean(values ** 2)))
    scale = _b_scale(fit)
    if rms <= EXACT_FRACTION * scale:
        checks["skipped"] = "exact fit: the residual is rounding"
        return []
    checks["explained_fraction"] = _explained(fit, values)
    reasons = _noise_model_reasons(fit, values, checks)
    quantisation = float(fit.info.get("quantisation_var", 0.0))
    if quantisation > 0 and rms ** 2 <= QUANTISATION_FACTOR * quantisation:
        checks["skipped"] = "the residual is at the rounding level of integer b"
        return reasons
    centre, sigma = _robust_centre_and_sigma(values)
    checks["tail_fraction"] = _tail_fraction(values, centre, sigma)
    checks["structure"] = _structure(images, sigma)
    unexplained = 1.0 - checks["explained_fraction"]
    if checks["structure"] > STRUCTURE_LIMIT and not unexplained <= UNEXPLAINED_LIMIT:
        reasons.append(
            "the residual has structure the model does not explain (lag-1 autocorrelation "
            f"{checks['structure']:.2f}; white noise gives ~0): a and b may not be related "
            "by this kernel, or the size, boundary rule or model is wrong")
    if fit.info.get("loss", "l2") == "l2" and checks["tail_fraction"] > TAIL_LIMIT:
        reasons.append(
            f"{checks['tail_fraction']:.1%} of the residual lies beyond {TAIL_SIGMAS:g} robust "
            "standard deviations (outliers pull a least-squares kernel): try loss='huber' or "
            "a mask")
    return reasons


def _b_scale(fit) -> float:
    """RMS of ``b`` over the used pixels, as recorded when the fit was made (0 if not:
    then only an exactly zero residual counts as exact)."""
    return float(fit.info.get("b_rms", 0.0))


def _explained(fit, values) -> float:
    spread = fit.info.get("b_variance_sum")
    if not spread:
        return float("nan")
    return float(1.0 - np.sum(values ** 2) / spread)


def _noise_model_reasons(fit, values, checks) -> list[str]:
    """Reduced χ² of the residual against the ``noise_std`` the user gave."""
    given = fit.info.get("noise_std_given")
    if not given:
        return []
    dof = max(values.size - float(fit.info.get("identifiability", {})
                                  .get("effective_parameters", 0.0) or 0.0), 1.0)
    chi2 = float(np.sum(values ** 2) / (given ** 2 * dof))
    checks["reduced_chi2"] = chi2
    tolerance = chi2_tolerance(dof)
    if abs(chi2 - 1.0) <= tolerance:
        return []
    return [f"the residual's reduced chi-square against noise_std={given:g} is {chi2:.3g} "
            f"(1 ± {tolerance:.2g} expected): the noise level or the model is wrong"]


def chi2_tolerance(dof: float) -> float:
    """How far the reduced χ² may stray from 1: 5 of its standard deviations ``√(2/dof)``,
    and at least 0.25 (a noise level given to two digits is not known better)."""
    return max(0.25, 5.0 * np.sqrt(2.0 / dof))


def _robust_centre_and_sigma(values):
    """The median and ``1.4826 · MAD``: the centre and standard deviation of Gaussian
    noise, blind to outliers."""
    centre = float(np.median(values))
    return centre, float(1.4826 * np.median(np.abs(values - centre)))


def _tail_fraction(values, centre, sigma) -> float:
    if sigma <= 0:
        return 0.0
    return float(np.mean(np.abs(values - centre) > TAIL_SIGMAS * sigma))


def _structure(images, sigma) -> float:
    """Largest lag-1 autocorrelation along rows or columns over the images, with values
    clipped at :data:`TAIL_SIGMAS` robust σ (one outlier must not decide it)."""
    largest = 0.0
    for image in images:
        clipped = np.clip(image, -TAIL_SIGMAS * sigma, TAIL_SIGMAS * sigma) if sigma > 0 \
            else image
        for axis in (0, 1):
            largest = max(largest, _lag1(clipped, axis))
    return largest


def _lag1(image, axis) -> float:
    first = image[:-1, :] if axis == 0 else image[:, :-1]
    second = image[1:, :] if axis == 0 else image[:, 1:]
    both = np.isfinite(first) & np.isfinite(second)
    if np.count_nonzero(both) < MIN_PIXELS:
        return 0.0
    x, y = first[both], second[both]
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator > 0 else 0.0
