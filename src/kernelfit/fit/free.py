"""Free-form kernels: one coefficient per kernel pixel, on the direct or the matrix-free path.

The direct path builds the sufficient statistics once and solves in the ``p × p`` Gram form
(Cholesky, the constrained active-set solver, exact GCV).  The matrix-free path
(:mod:`kernelfit.solvers.iterative`) never forms the Gram matrix and handles kernels of any
size and the non-smooth regularisers.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.design import PreparedPair
from ..core.diagnostics import gram_condition
from ..core.forward import ExtendedSpectrum
from .result import KernelFit, ResidualImages
from ..select.direct import choose_lambda
from ..select.iterative import choose_lambda_iterative
from ..solvers.constrained import solve_quadratic, system_matrix
from ..solvers.direct import solve_centred, solve_normal_equations
from ..solvers.iterative import solve_iterative
from ..solvers.operator import FFTKernelOperator
from ..solvers.projected import ProjectedOperator
from ..solvers.regularisers import NONSMOOTH, penalty_matrix
from ..solvers.weighted import matrix_free_pays, solve_weighted
from ..stats.background import fitted_background, profiled_statistics
from ..stats.centred import centred_statistics, needs_centring
from ..stats.compute import choose_method, statistics, tiles_pay

# The direct path holds a p×p Gram matrix and factors it in O(p³); the matrix-free path costs
# O(N log N) per iteration.  Measured (benchmarks/bench_regularisation.py part 4, 512² photo,
# unregularised, matrix-free converged to 1e-10): 41² 0.9 s vs 1.6 s, 51² 2.4 s vs 2.2 s,
# 64² 7.9 s vs 3.1 s.  The direct path also gives exact GCV and standard errors, so it keeps
# everything up to the crossing, 51×51.
MAX_DIRECT_UNKNOWNS = 51 * 51


def uses_direct_path(shape, *, reg, method) -> bool:
    """Whether a free-kernel fit runs on the statistics (True) or matrix-free (False)."""
    if method == "iterative" or reg in NONSMOOTH:
        return False
    return method == "normal" or shape[0] * shape[1] <= MAX_DIRECT_UNKNOWNS


def fit_free_direct(pairs: list[PreparedPair], shape, *, reg, lam, nonneg, normalize,
                    noise_std, single, background=None) -> KernelFit:
    """Least squares on the statistics, optionally regularised and constrained.

    ``background=d`` profiles a polynomial background of degree ``d`` per pair out of the
    statistics (:mod:`kernelfit.background`); everything after that is unchanged.

    ``fit.cov`` (and ``fit.stderr``, the square root of its diagonal) is the sampling
    covariance of the estimator, ``σ̂²`` times (``fit.info['covariance']`` says which):

    * no regulariser: ``G⁻¹``, the Cramér–Rao bound the least-squares kernel attains;
    * a quadratic regulariser: ``H⁻¹GH⁻¹`` with ``H = G + lam·n·LᵀL``, the spread of the
      regularised kernel around its own mean ``E k̂ = H⁻¹Gk`` at the chosen ``lam`` (held
      fixed).  The bias ``E k̂ − k`` is not included: ``stderr`` is not an error bar on the
      true kernel.  ``σ̂² = RSS/(n − tr(H⁻¹G))``;
    * ``normalize``: the above projected onto ``Σk = normalize`` (zero variance along it);
    * ``nonneg``: the covariance of the coefficients the constraint leaves free, with those
      held at 0 fixed (their ``stderr`` is 0): conditional on the active set, exact when the
      kernel is well above 0, approximate for coefficients that could hit the bound.

    The Gram matrix's condition number goes to ``fit.info['identifiability']``
    (:func:`kernelfit.diagnostics.gram_condition`).
    """
    started = time.perf_counter()
    spectra = [_spectrum_if_useful(pair, shape) for pair in pairs]
    if background is None and not reg and not nonneg and normalize is None \
            and _masks_favour_matrix_free(pairs, shape):
        return _fit_masked_matrix_free(pairs, shape, spectra, single=single, started=started)
    terms = centred = None
    if background is None and not reg and not nonneg and normalize is None \
            and needs_centring(pairs):
        # A large mean in a: its direction is split off exactly (kernelfit.stats.centred).
        centred = centred_statistics(pairs, shape, weights=[_weights(p) for p in pairs])
        stats = centred.full
    elif background is None:
        stats = sum(statistics(pair.extended, pair.b_used, shape, weights=_weights(pair),
                               spectrum=spectrum)
                    for pair, spectrum in zip(pairs, spectra))
    else:
        stats, terms, spectra = profiled_statistics(pairs, shape, background, spectra=spectra)
    t_stats = time.perf_counter()
    info = {"n_pairs": len(pairs)}
    kernel, trusted, message, cov_unscaled, dof, lam = _solve_statistics(
        stats, shape, reg=reg, lam=lam, nonneg=nonneg, normalize=normalize,
        noise_std=noise_std, info=info, centred=centred)
    residuals = ResidualImages(pairs, spectra, kernel, single=single, backgrounds=terms)
    rss = _residual_sum_of_squares(stats, kernel, residuals)
    # With a background, stats.n_used = pixels − background terms: the residual's degrees of
    # freedom before the kernel's are taken off.
    noise, cov, stderr, message = _uncertainty(rss, stats.n_used, kernel, cov_unscaled, dof,
                                               message)
    fitted = None
    if terms is not None:
        fitted, info["background"] = fitted_background(terms, kernel, single=single)
    info["seconds"] = {"statistics": t_stats - started, "total": time.perf_counter() - started}
    return free_kernel_fit(pairs, kernel, stderr=stderr, cov=cov, residuals=residuals, noise=noise,
                     lam=lam, n_used=getattr(stats, "n_pixels", stats.n_used),
                     converged=trusted, message=message, method="normal", info=info,
                     background=fitted)


# Relative resolution of ``bᵀb − 2kᵀc + kᵀGk`` from summed statistics (see fit_free_statistics).
_RSS_RESOLUTION = 1e-12


def fit_free_statistics(stats, *, center, boundary, reg, lam, nonneg, normalize,
                        noise_std) -> KernelFit:
    """The direct path on statistics summed elsewhere (tiles, Dask workers): no images.

    The same solve as :func:`fit_free_direct`; without the images ``fit.residual`` is
    ``None`` and the residual sum of squares comes from the statistics alone,
    ``bᵀb − 2kᵀc + kᵀGk``.  Below ``1e-12·bᵀb`` (a nearly noise-free ``b``) that is mostly
    rounding: ``fit.noise_std`` and ``fit.stderr`` are then NaN and ``fit.message`` says so.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> a = np.random.default_rng(0).random((30, 30))
    >>> s = kf.statistics(a, kf.convolve(a, np.eye(3), mode="valid"), (3, 3))
    >>> fit = fit_free_statistics(s, center=(1, 1), boundary="valid", reg=None, lam="auto",
    ...                           nonneg=False, normalize=None, noise_std=None)
    >>> bool(np.allclose(fit.kernel, np.eye(3))), fit.residual is None
    (True, True)
    """
    started = time.perf_counter()
    info = {}
    kernel, trusted, message, cov_unscaled, dof, lam = _solve_statistics(
        stats, stats.shape, reg=reg, lam=lam, nonneg=nonneg, normalize=normalize,
        noise_std=noise_std, info=info)
    k = kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    # The formula cancels: its rounding is ~1e-13·bᵀb for sums over many pixels, so a
    # smaller RSS (a noise-free b) is not resolved and gives no noise level.
    resolved = rss > _RSS_RESOLUTION * stats.btb
    noise, cov, stderr, message = _uncertainty(rss if resolved else float("nan"),
                                               stats.n_used, kernel, cov_unscaled, dof, message)
    if not resolved:
        cov = None
        note = ("the residual is below what summed statistics resolve (RSS < "
                f"{_RSS_RESOLUTION:g}·bᵀb, a nearly noise-free b): no noise level or standard "
                "errors")
        message = f"{message}; {note}" if message else note
    info["seconds"] = {"total": time.perf_counter() - started}
    return KernelFit(kernel=kernel, shape=kernel.shape, center=tuple(center), boundary=boundary,
                     model="free", params={}, stderr=stderr, cov=cov, noise_std=noise, lam=lam,
                     n_used=stats.n_used, converged=trusted, message=message, method="normal",
                     info=info)


def _solve_statistics(stats, shape, *, reg, lam, nonneg, normalize, noise_std, info,
                      centred=None):
    """Choose ``lam`` (when 'auto') and solve; records the choice and the solver in ``info``.

    Returns ``(kernel, trusted, message, cov_unscaled, dof, lam)``, ``lam`` None without a
    regulariser.  ``centred`` (:class:`~kernelfit.stats.centred.CentredStatistics` of
    ``stats``, for the plain least squares) is solved with the mean split off.
    """
    penalty = penalty_matrix(reg, shape) if reg else None
    if reg and lam == "auto":
        choice = choose_lambda(stats, penalty, noise_std=noise_std)
        lam = choice.lam
        info["lambda_selection"] = {"criterion": choice.criterion, "lams": choice.lams,
                                    "scores": choice.scores, "edf": choice.edf,
                                    "message": choice.message}
    lam = float(lam) if reg else None
    if nonneg or normalize is not None:
        fit_core = _constrained(stats, penalty, lam or 0.0, nonneg, normalize)
    else:
        fit_core = _unconstrained(stats, penalty, lam or 0.0, centred=centred)
    kernel, trusted, message, cov_unscaled, dof, solver_info = fit_core
    info.update(solver_info)
    # The solver's LAPACK estimate is of G itself only without a penalty or constraints.
    plain = not lam and not nonneg and normalize is None
    info["identifiability"] = gram_condition(stats.gram,
                                             rcond=info.get("rcond") if plain else None)
    info["covariance"] = _covariance_meaning(reg=reg, nonneg=nonneg, normalize=normalize)
    return kernel, trusted, message, cov_unscaled, dof, lam


def _covariance_meaning(*, reg, nonneg, normalize) -> str:
    """What ``fit.cov`` (and ``fit.stderr``) of a direct-path fit is, for ``fit.info``."""
    if reg:
        text = ("sigma^2 H^-1 G H^-1 with H = G + lam*n*L'L: the spread of the regularised "
                "kernel around its own mean at this lam (held fixed); the regularisation "
                "bias is not included")
    else:
        text = "sigma^2 G^-1: the spread of the least-squares kernel around the true one"
    if normalize is not None:
        text += "; projected onto the constraint sum(k) = normalize (no spread along it)"
    if nonneg:
        text += ("; for the coefficients left free by nonneg, with those held at 0 fixed "
                 "(stderr 0 there), given the active set")
    return text


def fit_free_iterative(pairs: list[PreparedPair], shape, *, reg, lam, nonneg, normalize,
                       noise_std, single, tol=1e-5, maxiter=None, background=None) -> KernelFit:
    """The matrix-free path: FFT operator, CG or FISTA (:mod:`kernelfit.solvers.iterative`).

    ``background=d`` fits a polynomial background of degree ``d`` per pair jointly with the
    kernel: the operator projects the background directions out of its range
    (:class:`kernelfit.solvers.projected.ProjectedOperator`), every solver and ``lam``
    criterion then works on the profiled problem, and ``β`` follows from the kernel exactly.
    It is reported as on the direct path (``fit.background``, ``fit.info['background']``,
    ``fit.residual`` with the background subtracted); the noise level counts its terms.

    ``lam='auto'`` is chosen by :func:`kernelfit.select_iterative.choose_lambda_iterative`
    and its solution warm-starts the final solve.  Standard errors are not computed here (the
    covariance is a ``p × p`` matrix this path exists to avoid).  ``fit.noise_std`` is
    ``RSS/(n − p)`` without regularisation, the GCV fit's ``RSS/(n − tr H)`` for a quadratic
    regulariser, and the level used by the discrepancy principle for ``'tv'``/``'l1'``.
    """
    started = time.perf_counter()
    op = FFTKernelOperator(pairs, shape) if background is None \
        else ProjectedOperator(pairs, shape, background)
    terms = getattr(op, "terms", None)
    info = {"n_pairs": len(pairs)}
    if nonneg:
        info["nonneg"] = True
    x0, noise = None, float("nan")
    if reg is not None and lam == "auto":
        selection = choose_lambda_iterative(op, reg, noise_std=noise_std, nonneg=nonneg,
                                            total=normalize)
        choice, x0, noise = selection.choice, selection.kernel, selection.noise_std
        lam = choice.lam
        info["lambda_selection"] = {"criterion": choice.criterion, "lams": choice.lams,
                                    "scores": choice.scores, "edf": choice.edf,
                                    "message": choice.message}
    lam = float(lam) if reg is not None else 0.0
    # The noise level (given, or implied by the lam choice) lets the solver stop once the fit
    # moves by far less than the data resolve.
    level = noise_std if noise_std is not None else (None if np.isnan(noise) else noise)
    solution = solve_iterative(op, shape, reg=reg, lam=lam, nonneg=nonneg, total=normalize,
                               x0=x0, tol=tol, maxiter=maxiter, noise_std=level)
    kernel = solution.kernel
    info.update(iterations=solution.iterations, history=solution.history,
                solver=solution.method, objective=solution.objective)
    message = solution.message
    if reg is None:
        # Unregularised: the parameters are the coefficients (those held at 0 excluded).
        dof = float(np.count_nonzero(kernel) if nonneg else kernel.size)
        noise, _, _, message = _uncertainty(op.residual_sum_of_squares(kernel), op.n_used,
                                            kernel, None, dof, message)
    elif np.isnan(noise):
        message += ("; the noise level is estimated only with lam='auto' (it needs the "
                    "effective number of parameters)")
    message += "; standard errors are not computed on the matrix-free path"
    fitted = None
    if terms is not None:
        fitted, info["background"] = fitted_background(terms, kernel, single=single)
    info["seconds"] = {"total": time.perf_counter() - started}
    return free_kernel_fit(pairs, kernel, stderr=None, cov=None,
                     residuals=ResidualImages(pairs, None, kernel, single=single,
                                              backgrounds=terms),
                     noise=noise, lam=lam if reg is not None else None,
                     n_used=getattr(op, "n_pixels", op.n_used),
                     converged=solution.converged, message=message, method="iterative",
                     info=info, background=fitted)


def free_kernel_fit(pairs, kernel, *, stderr, cov, residuals, noise, lam, n_used, converged,
                    message, method, info, background=None) -> KernelFit:
    """The :class:`KernelFit` of a free kernel fitted on ``pairs`` (geometry from the first),
    whichever solver found it (direct, matrix-free, robust, classic)."""
    geometry = pairs[0].geometry
    return KernelFit(
        kernel=kernel, shape=kernel.shape, center=geometry.center,
        boundary=geometry.boundary, model="free", params={}, stderr=stderr, cov=cov,
        background=background, _residual=residuals, noise_std=noise, lam=lam, n_used=n_used,
        converged=converged, message=message, method=method, info=info,
    )


def _unconstrained(stats, penalty, lam, centred=None):
    if centred is not None and not lam:
        solution = solve_centred(centred)
        info = {"rcond": solution.rcond, "rank": solution.rank, "dof": solution.dof,
                "centred": "the mean of a split off exactly (kernelfit.stats.centred); "
                           "rcond is that of the centred Gram matrix"}
    else:
        solution = solve_normal_equations(stats, penalty=penalty, lam=lam)
        info = {"rcond": solution.rcond, "rank": solution.rank, "dof": solution.dof}
    return (solution.kernel, solution.trusted, solution.message, solution.cov_unscaled,
            solution.dof, info)


def _constrained(stats, penalty, lam, nonneg, normalize):
    """Active-set / KKT solve; the covariance is that of the equality-constrained least
    squares on the coefficients left free (those held at 0 by ``nonneg`` have none)."""
    solution = solve_quadratic(stats, penalty=penalty, lam=lam, nonneg=nonneg, total=normalize)
    free = np.ones(solution.kernel.size, bool) if solution.active is None \
        else ~solution.active.ravel()
    A, _ = system_matrix(stats, penalty, lam)
    G = stats.gram
    p = len(free)
    cov_unscaled, dof = np.zeros((p, p)), 0.0
    if free.any():
        A_inv = np.linalg.inv(A[np.ix_(free, free)])
        if normalize is not None:
            # Project out the direction the sum constraint fixes.
            v = A_inv.sum(axis=1)
            A_inv = A_inv - np.outer(v, v) / v.sum()
        G_ff = G[np.ix_(free, free)]
        cov_unscaled[np.ix_(free, free)] = A_inv @ G_ff @ A_inv
        dof = float(np.sum(A_inv * G_ff))
    info = {"active": solution.active, "iterations": solution.iterations, "dof": dof,
            "multiplier": solution.multiplier}
    return (solution.kernel, solution.converged, solution.message, cov_unscaled, dof, info)


def _masks_favour_matrix_free(pairs, shape) -> bool:
    """Scattered dropped pixels (NaN in ``a`` drops whole footprints) make the exact weighted
    statistics slow; then a matrix-free weighted solve is cheaper (by the cost model of
    :func:`kernelfit.solvers.weighted.matrix_free_pays`)."""
    if all(pair.use is None for pair in pairs):
        return False
    return matrix_free_pays(_mask_weights(pairs), [pair.extended.shape for pair in pairs],
                            shape)


def _mask_weights(pairs) -> list:
    """Every pair's 0/1 weights over its used rectangle (all 1 where nothing is masked)."""
    return [np.ones(pair.b_used.shape) if pair.use is None else _weights(pair)
            for pair in pairs]


def _fit_masked_matrix_free(pairs, shape, spectra, *, single, started) -> KernelFit:
    """Unregularised least squares on the used pixels by preconditioned CG, matrix-free.

    The kernel is the exact least-squares kernel (CG to 1e-12); the standard errors come from
    a Gram matrix of a random sample of the used pixels, so they carry a sampling error of
    about ``√(2/s)`` relative (``s`` ≥ 120,000 pixels: under 1 %).
    """
    spectra = [sp or ExtendedSpectrum(pair.extended, shape) for pair, sp in zip(pairs, spectra)]
    solution = solve_weighted([pair.extended for pair in pairs],
                              [pair.b_used for pair in pairs], shape, _mask_weights(pairs),
                              spectrum=spectra)
    residuals = ResidualImages(pairs, spectra, solution.kernel, single=single)
    p = shape[0] * shape[1]
    message = solution.message
    if solution.gram_estimate_kind != "exact":
        note = (f"standard errors from the Gram matrix of {solution.sample_size} sampled "
                "pixels" if solution.gram_estimate_kind == "sketch"
                else "standard errors from the unweighted Gram matrix")
        message = f"{message}; {note}" if message else note
    noise, cov, stderr, message = _uncertainty(residuals.sum_of_squares(), solution.n_used,
                                               solution.kernel,
                                               solution.covariance_unscaled(), p, message)
    info = {"n_pairs": len(pairs), "iterations": solution.iterations,
            "history": solution.residual_norms, "solver": "weighted-cg",
            "preconditioner": solution.gram_estimate_kind,
            "seconds": {"total": time.perf_counter() - started}}
    return free_kernel_fit(pairs, solution.kernel, stderr=stderr, cov=cov, residuals=residuals,
                     noise=noise, lam=None, n_used=solution.n_used,
                     converged=solution.converged, message=message, method="weighted-cg",
                     info=info)


def _spectrum_if_useful(pair: PreparedPair, shape):
    """The image's FFT when the statistics take the whole-image FFT path (the prediction
    reuses it); not for images whose statistics are summed over tiles."""
    if choose_method(pair.extended.shape, shape, _weights(pair)) == "fft" \
            and not (pair.use is None and tiles_pay(pair.extended.shape, shape)):
        return ExtendedSpectrum(pair.extended, shape)
    return None


def _weights(pair: PreparedPair):
    return None if pair.use is None else pair.use.astype(np.float64)


def _residual_sum_of_squares(stats, kernel, residuals: ResidualImages) -> float:
    """``‖Xk − b‖²`` from the statistics, or from the residual images when the fit is so good
    that the statistics' formula would be mostly rounding (it cancels to ~1e-15·bᵀb)."""
    k = kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    if rss < 1e-9 * stats.btb:
        return residuals.sum_of_squares()
    return float(rss)


def _uncertainty(rss, n_used, kernel, cov_unscaled, dof, message):
    """Noise level from the residuals; covariance ``σ̂²·(unit-noise covariance)``."""
    dof_left = n_used - dof
    if dof_left <= 0.5:
        note = (f"only {n_used} pixels for {dof:.0f} effective parameters: the noise "
                "level and standard errors cannot be estimated")
        return float("nan"), None, None, f"{message}; {note}" if message else note
    noise_std = float(np.sqrt(rss / dof_left))
    if cov_unscaled is None:
        return noise_std, None, np.full(kernel.shape, np.nan), message
    cov = noise_std**2 * cov_unscaled
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(kernel.shape)
    return noise_std, cov, stderr, message
