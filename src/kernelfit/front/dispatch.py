"""Which fit a :class:`~kernelfit.core.problem.FitProblem` calls for.

:func:`choose_fit` reads the validated problem, makes the checks only one fit needs (the
options a structured model takes, the free model's solver options, ...) and returns that fit
as a function of the prepared pairs.  Every branch ends in the ``fit`` layer; the checks run
before the images are prepared, so a wrong option is reported before any work is done.
"""

from __future__ import annotations

from functools import partial

from ..core.problem import FitProblem
from ..fit import classic
from ..fit.annotate import _annotate, _warn_if_constant, _with_rounding
from ..fit.free import fit_free_direct, fit_free_iterative, uses_direct_path
from ..fit.models import _fit_parametric, _fit_structured
from ..fit.result import KernelFit
from ..fit.robust import fit_free_robust, fit_robust_with_background
from ..models.parametric import KernelModel
from ..solvers.regularisers import NONSMOOTH
from .options import FREE_OPTIONS, PARAMETRIC, ROBUST_OPTIONS, _refuse, _structured_options


def choose_fit(problem: FitProblem):
    """The fit for ``problem``: a function ``pairs -> KernelFit`` (options checked)."""
    if problem.method in classic.METHODS:
        classic.check_options(problem.method, model=problem.model, loss=problem.loss,
                              reg=problem.reg, nonneg=problem.nonneg,
                              normalize=problem.normalize, background=problem.background,
                              options=problem.model_options)
        return partial(_classic, problem)
    if isinstance(problem.model, KernelModel) or problem.model in PARAMETRIC:
        _check_parametric(problem)
        return partial(_parametric, problem)
    if problem.model == "free" and _is_robust(problem):
        _check_robust(problem)
        return partial(_robust, problem)
    if problem.loss != "l2":
        raise ValueError(f"loss={problem.loss!r} is available for the free model and the "
                         f"parametric models {PARAMETRIC}; model={problem.model!r} fits "
                         "loss='l2'")
    if problem.model != "free":
        options = _structured_options(problem.model, problem.model_options, reg=problem.reg,
                                      nonneg=problem.nonneg, normalize=problem.normalize,
                                      method=problem.method)
        return partial(_structured, problem, options)
    return _choose_free(problem)


def _is_robust(problem: FitProblem) -> bool:
    return (problem.loss != "l2" or "clip" in problem.model_options
            or problem.method == "lp")


def _check_parametric(problem: FitProblem) -> None:
    _refuse(problem.model, reg=problem.reg, nonneg=problem.nonneg, method=problem.method)


def _check_robust(problem: FitProblem) -> None:
    loss, method, background = problem.loss, problem.method, problem.background
    if background is not None and (loss == "l1" or method == "lp"):
        raise ValueError(f"background={background} is available with sigma-clipping (clip=) "
                         f"and loss='huber', not with loss={loss!r}"
                         + (" and method='lp'" if method == "lp" else "")
                         + "; subtract it first, or use loss='huber'")
    if method == "lp" and loss != "l1":
        raise ValueError(f"method='lp' is the exact L1 linear program: it needs loss='l1', "
                         f"not loss={loss!r}")
    if method == "iterative":
        raise ValueError(f"loss={loss!r} (or clip=) is solved by reweighting a Gram matrix; "
                         "method='iterative' is not available with it")
    unknown = sorted(set(problem.model_options) - set(ROBUST_OPTIONS))
    if unknown:
        raise TypeError(f"a robust free fit does not take {unknown}; it takes "
                        f"{list(ROBUST_OPTIONS)}")


def _choose_free(problem: FitProblem):
    """The free model under least squares: the direct path or the matrix-free one."""
    options, reg, method = problem.model_options, problem.reg, problem.method
    if "f_scale" in options:
        raise ValueError("f_scale= is the Huber threshold: pass loss='huber' with it")
    unknown = sorted(set(options) - set(FREE_OPTIONS))
    if unknown:
        raise TypeError(f"estimate() got options {unknown} that model='free' does not take; "
                        f"it takes {list(FREE_OPTIONS)} (and, with a robust loss or clip=, "
                        f"{list(ROBUST_OPTIONS)})")
    if method == "normal" and reg in NONSMOOTH:
        raise ValueError(f"reg={reg!r} is solved by a proximal method: use method=None or "
                         "'iterative', not 'normal'")
    if uses_direct_path(problem.shape, reg=reg, method=method):
        if options:
            raise ValueError(f"{sorted(options)} apply to the matrix-free path; pass "
                             "method='iterative'")
        return partial(_free, problem, fit_free_direct, {"background": problem.background})
    return partial(_free, problem, fit_free_iterative,
                   dict(options, background=problem.background))


def _classic(problem: FitProblem, pairs) -> KernelFit:
    return _annotate(pairs, classic.fit_classic(
        problem.method, pairs, problem.shape, single=problem.single,
        noise_std=_with_rounding(problem.noise_std, pairs), **problem.model_options))


def _parametric(problem: FitProblem, pairs) -> KernelFit:
    return _warn_if_constant(pairs, problem.shape, _fit_parametric(
        problem.model, pairs, problem.shape, loss=problem.loss, normalize=problem.normalize,
        options=problem.model_options, single=problem.single, background=problem.background))


def _robust(problem: FitProblem, pairs) -> KernelFit:
    """A free kernel under loss='huber'/'l1', method='lp' or sigma-clipping (clip=)."""
    common = dict(loss=problem.loss, reg=problem.reg,
                  lam=None if problem.reg is None else problem.lam,
                  nonneg=bool(problem.nonneg), normalize=problem.normalize,
                  single=problem.single, **problem.model_options)
    if problem.background is not None:
        fit = fit_robust_with_background(pairs, problem.shape, background=problem.background,
                                         **common)
    else:
        fit = fit_free_robust(pairs, problem.shape,
                              method="lp" if problem.method == "lp" else None, **common)
    return _annotate(pairs, fit)


def _structured(problem: FitProblem, options, pairs) -> KernelFit:
    return _warn_if_constant(pairs, problem.shape, _fit_structured(
        problem.model, pairs, problem.shape, options, single=problem.single,
        background=problem.background))


def _free(problem: FitProblem, fitter, options, pairs) -> KernelFit:
    return _annotate(pairs, fitter(pairs, problem.shape, reg=problem.reg, lam=problem.lam,
                                   nonneg=bool(problem.nonneg), normalize=problem.normalize,
                                   noise_std=_with_rounding(problem.noise_std, pairs),
                                   single=problem.single, **options))
