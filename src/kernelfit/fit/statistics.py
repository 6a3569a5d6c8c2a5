"""(moved from kernelfit.tiles)"""

from __future__ import annotations

import numpy as np

from .annotate import _scaled
from .free import fit_free_statistics
from .models import PARAMETRIC_FIT_OPTIONS
from .result import KernelFit
from ..models.fit_parametric import fit_parametric
from ..models.parametric import make_model
from ..stats.gram import SufficientStatistics


def _parametric_family(model, model_options):
    """The model object and the options of :func:`fit_parametric` itself."""

    fit_options = {k: v for k, v in model_options.items() if k in PARAMETRIC_FIT_OPTIONS}
    if "f_scale" in fit_options:
        raise ValueError("f_scale= is the Huber threshold; summed statistics fit loss='l2'")
    family = make_model(model, **{k: v for k, v in model_options.items()
                                  if k not in PARAMETRIC_FIT_OPTIONS})
    return family, fit_options


def fit_statistics(stats: SufficientStatistics, *, center, boundary, model="free", reg=None,
                   lam="auto", nonneg=False, normalize=None, noise_std=None,
                   model_options=None, quantisation_var=0.0, info=None):
    """A :class:`~kernelfit.result.KernelFit` from statistics summed over tiles or workers.

    The options must have passed :func:`check_statistics_options`.  ``quantisation_var``
    is the rounding variance of integer ``b`` (1/12), added to ``noise_std`` for the
    discrepancy principle and used as a floor for ``fit.noise_std``, as in
    :func:`kernelfit.estimate`.
    """

    info = dict(info or {})
    if noise_std is not None:
        noise_std = float(np.sqrt(noise_std ** 2 + quantisation_var))
    if model == "free":
        fit = fit_free_statistics(stats, center=center, boundary=boundary, reg=reg, lam=lam,
                                  nonneg=bool(nonneg), normalize=normalize,
                                  noise_std=noise_std)
    else:
        fit = _fit_parametric_statistics(stats, model, model_options or {}, center=center,
                                         boundary=boundary, normalize=normalize)
    fit.info.update(info)
    if quantisation_var > 0:
        _apply_floor(fit, quantisation_var)
    return fit


def _fit_parametric_statistics(stats, model, model_options, *, center, boundary, normalize):

    family, fit_options = _parametric_family(model, model_options)
    result = fit_parametric(stats, family, stats.shape, center=center, loss="l2",
                            normalize=normalize, **fit_options)
    return KernelFit(
        kernel=result.kernel, shape=stats.shape, center=result.center, boundary=boundary,
        model=family.name, params=result.params, stderr=result.stderr, cov=result.cov,
        noise_std=result.noise_std, lam=None, n_used=result.n_used,
        converged=result.converged, message=result.message, method="parametric-l2",
        info=dict(result.info, objective=result.objective, free=result.free, loss="l2"),
    )


def _apply_floor(fit, floor):
    """Integer ``b`` cannot be fitted better than its rounding (see kernelfit.estimate)."""

    fit.info["quantisation_var"] = floor
    if np.isnan(fit.noise_std) or fit.noise_std ** 2 >= floor:
        return
    scale = np.sqrt(floor) / fit.noise_std if fit.noise_std > 0 else np.inf
    fit.noise_std = float(np.sqrt(floor))
    if fit.stderr is not None and np.isfinite(scale):
        fit.stderr = _scaled(fit.stderr, scale)
        fit.cov = None if fit.cov is None else fit.cov * scale ** 2
