"""A fit made in rescaled units (:mod:`kernelfit.core.scaling`), returned in the user's.

With ``a`` fitted as ``a·s`` and ``b`` as ``b·t`` (powers of two, so every conversion is
exact): the kernel, its standard errors and kernel-valued parameters are divided by ``t/s``
(the covariance by its square), the background, residual and noise by ``t``, ``lam`` by
``s²`` (``s·t`` for the homogeneous penalties TV and L1).  ``fit.info['data_scale']`` holds
``a`` (``s``), ``b`` (``t``) and ``lam``, the fitted λ: in the user's units λ can lie beyond
float64 (reported as 0 or inf).  The entries of ``fit.info`` in units of the data that are
converted: the λ search (``lambda_selection``: λ values as ``lam``, GCV scores by ``t²``),
the background monomials, the rounding variance and the identifiability report's kernel
power; the rest (condition numbers, ratios, counts, weights, iteration histories of the
matrix-free and robust solvers) are those of the rescaled problem.
"""

from __future__ import annotations

import numpy as np

from ..core.scaling import DataScale
from .result import KernelFit

# Parameters of the free model's variants that are kernels (``variation``: the coefficient
# kernels of a varying kernel).
KERNEL_PARAMETERS = ("variation",)


def in_user_units(fit: KernelFit, scale: DataScale, *, kernel_units: bool,
                  lam_degree: int = 2) -> KernelFit:
    """``fit`` (made on pairs rescaled by ``scale``) converted back, in place.

    ``kernel_units`` says that ``scale`` may hold different factors for ``a`` and ``b`` (a
    free kernel, whose kernel-valued fields are converted); otherwise the two factors are
    equal and the kernel and its parameters need no conversion.  ``lam_degree`` is the
    penalty's degree of homogeneity (:meth:`DataScale.lam`).  Values beyond float64 in the
    user's units (the λ grid of images near ``1e+200``) become inf, as they are.
    """
    if scale.identity:
        return fit
    ratio = scale.kernel if kernel_units else 1.0
    b = scale.b
    fit.kernel = fit.kernel / ratio
    if isinstance(fit.stderr, np.ndarray):
        fit.stderr = fit.stderr / ratio
    if fit.cov is not None and kernel_units:
        with np.errstate(over="ignore"):
            fit.cov = fit.cov / ratio / ratio
        if not np.all(np.isfinite(fit.cov)):
            # A kernel near 1e+300 has variances beyond float64: kept as stderr only.
            fit.cov = None
            fit.info["covariance"] = "not representable in float64 at this scale"
    fit.params = {name: (value / ratio if name in KERNEL_PARAMETERS else value)
                  for name, value in fit.params.items()}
    fit.background = _divided(fit.background, b)
    fit.noise_std = float(fit.noise_std) / b
    fitted_lam = fit.lam
    if fit.lam is not None:
        fit.lam = float(scale.lam(fit.lam, lam_degree, to_user=True))
    fit._residual = _residual_in(fit._residual, b)
    with np.errstate(over="ignore", under="ignore"):
        _info_in_user_units(fit.info, scale, ratio, lam_degree)
    # In the user's units λ may be beyond float64 (0 or inf): the fitted value says it all.
    fit.info["data_scale"]["lam"] = fitted_lam
    return fit


def _divided(value, factor):
    if value is None:
        return None
    if isinstance(value, list):
        return [_divided(v, factor) for v in value]
    if isinstance(value, dict):
        return {name: _divided(v, factor) for name, v in value.items()}
    if np.ndim(value) == 0:
        return float(value) / factor
    return np.asarray(value) / factor


def _residual_in(residual, factor):
    if residual is None:
        return None
    if callable(residual):
        return lambda: _divided(residual(), factor)
    return _divided(residual, factor)


def _info_in_user_units(info: dict, scale: DataScale, ratio: float, lam_degree: int) -> None:
    info["data_scale"] = {"a": scale.a, "b": scale.b}
    selection = info.get("lambda_selection")
    if isinstance(selection, dict):
        selection = dict(selection)
        if selection.get("lams") is not None:
            selection["lams"] = scale.lam(selection["lams"], lam_degree, to_user=True)
        if selection.get("scores") is not None and selection.get("criterion") == "gcv":
            selection["scores"] = np.asarray(selection["scores"]) / scale.b / scale.b
        info["lambda_selection"] = selection
    background = info.get("background")
    if isinstance(background, dict) and "monomials" in background:
        info["background"] = dict(background,
                                  monomials=_divided(background["monomials"], scale.b))
    if "quantisation_var" in info:
        info["quantisation_var"] = info["quantisation_var"] / scale.b / scale.b
    report = info.get("identifiability")
    if isinstance(report, dict) and "kernel_power" in report:
        info["identifiability"] = dict(report, kernel_power=report["kernel_power"] / ratio / ratio)
