"""(moved from kernelfit.estimate)"""

from __future__ import annotations

from functools import partial

from .physical import physical_parameters
from .result import KernelFit, ResidualImages
from ..models._common import MAX_STATISTICS_UNKNOWNS
from ..models.factored import fit_lowrank, fit_separable
from ..models.fit_parametric import fit_parametric
from ..models.parametric import make_model
from ..models.powerlaw import fit_powerlaw
from ..models.radial import fit_radial

from ..stats.background import (
    fitted_background,
    profiled_statistics,
    residual_with_background,
)

# Structured models: the fitting function and the estimate() options it takes (estimate's
# name -> the function's keyword).
STRUCTURED = {
    "radial": (fit_radial, {"radial_bins": "bins", "smooth": "smooth"}),
    "powerlaw": (fit_powerlaw, {"exponent_bounds": "exponent_bounds"}),
    "separable": (fit_separable, {}),
    "lowrank": (fit_lowrank, {"rank": "rank"}),
}


def _fit_structured(model, pairs, shape, options, *, single, background) -> KernelFit:
    fitter = STRUCTURED[model][0]
    stats, terms, fitted, info = _profile_background(pairs, shape, background, model=model)
    if stats is not None:
        options = dict(options, statistics=stats)
    result = fitter(pairs, shape, **options)
    if terms is not None:
        fitted, info = fitted_background(terms, result.kernel, single=single)
    stderr = dict(result.stderr)
    geometry = pairs[0].geometry
    return KernelFit(
        kernel=result.kernel, shape=shape, center=geometry.center, boundary=geometry.boundary,
        model=model, params=result.params, stderr=stderr, cov=result.cov, background=fitted,
        _residual=ResidualImages(pairs, None, result.kernel, single=single, backgrounds=terms),
        noise_std=result.noise_std, lam=None,
        n_used=result.n_used if stats is None else stats.n_pixels,
        converged=result.converged, message=result.message, method=result.method,
        info=dict(result.info, rss=result.rss, dof=result.dof,
                  **({"background": info} if info else {})),
    )


def _profile_background(pairs, shape, background, *, model):
    """Profiled statistics for a model fitted on them: ``(stats, terms, None, {})``, or all
    empty without a background."""
    if background is None:
        return None, None, None, {}
    if shape[0] * shape[1] > MAX_STATISTICS_UNKNOWNS:
        raise ValueError(f"background={background} with model={model!r} needs the sufficient "
                         f"statistics, so at most {MAX_STATISTICS_UNKNOWNS} kernel pixels; "
                         f"shape={shape} has {shape[0] * shape[1]}")
    stats, terms, _ = profiled_statistics(pairs, shape, background)
    return stats, terms, None, {}


def _fit_parametric(model, pairs, shape, *, loss, normalize, options, single,
                    background) -> KernelFit:
    fit_options = {k: v for k, v in options.items() if k in PARAMETRIC_FIT_OPTIONS}
    family = make_model(model, **{k: v for k, v in options.items()
                                  if k not in PARAMETRIC_FIT_OPTIONS})
    if background is not None and shape[0] * shape[1] > MAX_STATISTICS_UNKNOWNS:
        raise ValueError(f"background={background} with model={family.name!r} needs the "
                         f"sufficient statistics, so at most {MAX_STATISTICS_UNKNOWNS} kernel "
                         f"pixels; shape={shape} has {shape[0] * shape[1]}")
    # The background is fitted inside: profiled out of the statistics for L2, jointly with
    # the parameters on the pixels for the robust losses.
    result = fit_parametric(pairs, family, shape, loss=loss, normalize=normalize,
                            background=background, **fit_options)
    fitted, info = None, {}
    residual = ResidualImages(pairs, None, result.kernel, single=single)
    if background is not None:
        fitted, info = _background_report(result.background_terms, result.background, single)
        residual = partial(_residuals_with_background, pairs, result.background_terms,
                           result.kernel, result.background, single)
    geometry = pairs[0].geometry
    widths, width_errors = physical_parameters(family.name, result.params, result.cov,
                                               result.free)
    return KernelFit(
        kernel=result.kernel, shape=shape, center=geometry.center, boundary=geometry.boundary,
        model=family.name, params={**result.params, **widths},
        stderr={**result.stderr, **width_errors}, cov=result.cov,
        background=fitted, _residual=residual, noise_std=result.noise_std, lam=None,
        n_used=result.n_used, converged=result.converged, message=result.message,
        method=f"parametric-{loss}",
        info=dict(result.info, objective=result.objective, free=result.free, loss=loss,
                  physical=list(widths),
                  **({"background": info} if info else {})),
    )


def _background_report(terms_list, betas, single):
    """``(fit.background, fit.info['background'])`` from fitted coefficients, laid out as
    :func:`~kernelfit.stats.background.fitted_background` lays out least-squares ones."""
    info = {"degree": terms_list[0].basis.degree, "names": list(terms_list[0].names),
            "monomials": [terms.basis.monomials(beta)
                          for terms, beta in zip(terms_list, betas)]}
    if single:
        info["monomials"] = info["monomials"][0]
    return (betas[0] if single else betas), info


def _residuals_with_background(pairs, terms_list, kernel, betas, single):
    """``b − a ⊛ k − background`` of every pair with the fitted coefficients (computed when
    ``fit.residual`` is first read)."""
    images = [residual_with_background(pair, terms, kernel, beta)
              for pair, terms, beta in zip(pairs, terms_list, betas)]
    return images[0] if single else images


# Options of fit_parametric itself; every other model option goes to the model family.
PARAMETRIC_FIT_OPTIONS = ("f_scale", "fit_offset", "x0", "n_refine")
