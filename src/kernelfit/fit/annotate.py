"""(moved from kernelfit.estimate)"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.diagnostics import RankDeficientWarning, fluctuation_energy, user_stacklevel
from ..core.diagnostics import annotate as annotate_identifiability
from .result import KernelFit


def _warn_if_constant(pairs, shape, fit: KernelFit) -> KernelFit:
    """A constant ``a`` fixes only the kernel's sum: say so (the free model's solver already
    does, through the Gram matrix's rank)."""
    if shape[0] * shape[1] > 1 and all(np.ptp(pair.extended) == 0 for pair in pairs):
        warnings.warn(f"a is constant, so it determines only the kernel's sum, not a kernel "
                      f"of shape {shape}", RankDeficientWarning, stacklevel=user_stacklevel())
        fit.converged = False
    return _annotate(pairs, fit)


def _annotate(pairs, fit: KernelFit) -> KernelFit:
    """Record what preparing the pairs found: the used pixels, saturation, quantisation."""
    single = len(pairs) == 1
    maps = [pair.used_map() for pair in pairs]
    fit.info["used"] = maps[0] if single else maps
    if single:
        fit.info.update(pairs[0].notes)
    elif any(pair.notes for pair in pairs):
        fit.info["defects"] = [pair.notes for pair in pairs]
    fit.info.update(_b_moments(pairs))
    floor = _quantisation_floor(pairs)
    if floor > 0:
        fit.info["quantisation_var"] = floor
        if not np.isnan(fit.noise_std) and fit.noise_std ** 2 < floor:
            # Integer images cannot be fitted better than their rounding: the residuals of an
            # over-fitted model understate it, and the standard errors would follow them.
            scale = np.sqrt(floor) / fit.noise_std if fit.noise_std > 0 else np.inf
            fit.noise_std = float(np.sqrt(floor))
            if fit.stderr is not None and np.isfinite(scale):
                fit.stderr = _scaled(fit.stderr, scale)
                fit.cov = None if fit.cov is None else fit.cov * scale ** 2
    # After the noise floor: whether a and this noise level determine the kernel.
    annotate_identifiability(pairs, fit)
    return fit


def _b_moments(pairs) -> dict:
    """``b``'s RMS and ``Σ(b − b̄)²`` over the used pixels (``b̄`` per pair): the scales the
    verdict (:mod:`kernelfit.fit.verdict`) measures the residual against."""
    n = sum(pair.n_used for pair in pairs)
    # b_used is 0 on the unused pixels, so plain sums cover the used ones.
    with np.errstate(over="ignore"):   # huge b: inf, not an exception
        square_sum = sum(float(np.einsum("ij,ij->", pair.b_used, pair.b_used)) for pair in pairs)
    return {"b_rms": float(np.sqrt(square_sum / max(n, 1))),
            "b_variance_sum": fluctuation_energy(pairs)}


def _quantisation_floor(pairs) -> float:
    """Rounding variance of integer ``b`` (LSB²/12), mean over the used pixels.

    Only ``b``'s: an integer ``a`` is the model's input as it is (a binary mask, a photo
    file), so its values carry no error with respect to ``b ≈ a ⊛ k``.
    """
    n = sum(pair.n_used for pair in pairs)
    return float(sum(pair.n_used * pair.quantisation_var for pair in pairs) / n)


def _scaled(stderr, scale):
    if isinstance(stderr, dict):
        return {name: value * scale for name, value in stderr.items()}
    return stderr * scale


def _with_rounding(noise_std, pairs):
    """The whole noise of ``b``: the sensor's (if known) and the rounding of integer images
    (LSB²/12, see kernelfit.defects) — the discrepancy principle's target."""
    if noise_std is None:
        return None
    return float(np.sqrt(noise_std ** 2 + _quantisation_floor(pairs)))
