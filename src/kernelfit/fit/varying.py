"""Spatially varying kernels: every kernel coefficient is a polynomial in the pixel position.

The model (``estimate(..., variation=d)``), in the output coordinates of astronomy's
difference-imaging codes (Alard–Lupton, Bramich's adaptive kernels, HOTPANTS, SFFT)::

    b(i) = Σ_j Σ_t k_t[j] · m_t(y_i, x_i) · a(i + center − j)
         = Σ_t m_t(y_i, x_i) · (a ⊛ k_t)(i)

``m_t(y, x) = y^p x^q`` (``p + q ≤ d``, ``T = (d+1)(d+2)/2`` terms in the order ``1, x, y,
x², x·y, y², ...``) on coordinates scaled to ``[−1, 1]`` over ``b``: pixel ``(0, 0)`` of ``b``
is ``(−1, −1)``, its last pixel ``(+1, +1)``, its centre ``(0, 0)``.  So ``k_0`` is the kernel
at the image centre, and the kernel anywhere is :meth:`VaryingKernel.at`.

Statistics without a ``p·T``-column design
    The model is linear in the ``p·T`` coefficients, so everything the solver needs is the Gram
    matrix of the extended design, whose blocks ``Σ_i m_s m_t x_i x_iᵀ`` are weighted Grams
    with no shift structure.  They get one back by a change of parameters: ``m_s`` evaluated at
    the output pixel ``i`` equals ``m_s`` evaluated at the *input* pixel ``z = i + center − j``
    shifted by ``j − center``, and a polynomial shifted is a polynomial of the same degree
    (binomial expansion).  So the column of coefficient ``(s, j)`` is a fixed combination of
    the columns ``(t, j)`` of the design whose input images are ``a_t = m_t ⊙ a``: an
    ordinary ``T``-input convolution design ``X_T`` with ``X_ext = X_T · B`` (``B``
    block-diagonal over kernel pixels, ``T × T`` triangular blocks).  ``X_Tᵀ X_T`` consists of
    cross-Grams ``Σ_i a_s[i+u] a_t[i+v]``, which have the shift structure again: the core of
    the image by FFT correlations summed over cache-sized blocks in frequency space, the bands
    by batched 1-D correlations of monomial-weighted rows
    (:mod:`kernelfit.stats.varying_lags`).  Then ``G = Bᵀ (X_Tᵀ X_T) B``, ``c = Bᵀ X_Tᵀ b``:
    exact, at ``2T + 1`` small transforms per block instead of im2col's ``N·(pT)²``.  Masked
    pixels are subtracted explicitly (or, when most are masked, the kept ones summed
    explicitly).  A background's cross terms are one separable matrix product, and the
    residual is made block by block (:func:`kernelfit.core.varying.residual_valid`).

Regularisers and constraints, on the same statistics of the ``T·p`` coefficients
    ``reg`` penalises every term alike, ``lam·Σ_t R(k_t)`` (penalty ``I_T ⊗ LᵀL``), with
    ``lam`` per pixel and ``'auto'`` chosen as on the invariant direct path.  ``normalize=s``
    is ``T`` linear equalities (``Σ_j k_0[j] = s``, ``Σ_j k_t[j] = 0`` for ``t ≥ 1``), so the
    kernel sums to ``s`` at every position.  ``nonneg`` is ``kernel_at(y, x) ≥ 0`` at the
    positions of an ``n × n`` grid of ``b`` (:func:`kernelfit.core.varying.grid_positions`):
    ``p`` linear inequalities per position, which for degree ≤ 1 (a kernel linear in the
    position, least at a corner) bound the kernel over all of ``b``.  Both go to the dual
    active-set solver :func:`kernelfit.solvers.linear_constraints.solve_linearly_constrained`.

Speed and accuracy against im2col and OIS: ``benchmarks/bench_varying.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..core.varying import (
    VaryingKernel,
    _output_origin,
    grid_positions,
    monomial_powers,
    residual_valid,
    term_names,
    term_values,
)
from .annotate import _annotate
from .result import KernelFit
from ..select.direct import choose_lambda
from ..solvers.direct import solve_normal_equations
from ..solvers.linear_constraints import solve_linearly_constrained
from ..solvers.regularisers import penalty_matrix
from ..stats.background import background_coefficients, fitted_background, profile_out
from ..stats.varying import _common_frame, varying_background_terms, varying_statistics

# The direct solve holds a (p·T)² Gram matrix and factors it in O((p·T)³): 4096 unknowns is
# 134 MB and a few seconds, the size at which the free model also leaves its direct path.
MAX_UNKNOWNS = 4096

# nonneg=True holds the kernel >= 0 on this n × n grid of b by default: the corners, the edge
# midpoints and the centre.
NONNEG_GRID = 3


@dataclass
class VaryingKernelFit(KernelFit):
    """A :class:`~kernelfit.KernelFit` whose kernel varies over the image.

    ``kernel``, ``stderr`` and ``cov`` are those of the kernel at the centre of ``b``; ``params['variation']`` holds the ``(T, kh, kw)`` coefficients ``k_t`` (terms in
    ``info['variation']['terms']``), ``info['variation']['stderr']`` their standard errors,
    ``varying`` the :class:`VaryingKernel` that :func:`kernelfit.convolve` accepts.
    """

    varying: VaryingKernel | None = None

    def kernel_at(self, y, x) -> np.ndarray:
        """The kernel at pixel ``(y, x)`` of ``b`` (row and column indices of ``b``)."""
        return self.varying.at(y, x)


# ---------------------------------------------------------------------------------------------
# Sufficient statistics
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Residuals and uncertainties
# ---------------------------------------------------------------------------------------------


class _Residuals:
    """``b − Σ_t m_t ⊙ (a ⊛ k_t) − background`` per pair, NaN where unused; made on first
    access, block by block (:func:`kernelfit.core.varying.residual_valid`)."""

    def __init__(self, pairs, varying: VaryingKernel, single, backgrounds=None):
        self._pairs, self._varying, self._single = pairs, varying, single
        # Each pair's fitted background as factors (U, V), U @ V.T over the used rectangle.
        self._backgrounds = backgrounds or [None] * len(pairs)
        self._images = None

    def __call__(self):
        if self._images is None:
            self._images = [self._residual(pair, background)
                            for pair, background in zip(self._pairs, self._backgrounds)]
        return self._images[0] if self._single else self._images

    def _residual(self, pair, background) -> np.ndarray:
        out = np.full(pair.b_shape, np.nan)
        used = out[pair.geometry.used]
        first = tuple(axis.indices(n)[0] for axis, n in zip(pair.geometry.used, pair.b_shape))
        residual_valid(pair.b_used, pair.extended, self._varying, first,
                       background=background, out=used)
        if pair.use is not None:
            used[~pair.use] = np.nan
        return out

    def sum_of_squares(self) -> float:
        images = self()
        images = [images] if self._single else images
        return float(sum(np.nansum(r * r) for r in images))


def _uncertainty(stats, solved, residuals):
    """Noise from the residuals (``RSS/(n − dof)``); covariance ``σ̂²·cov_unscaled`` and the
    standard errors (T, kh, kw)."""
    k = solved.kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    if rss < 1e-9 * stats.btb:
        # A near-perfect fit: the formula would be mostly rounding; use the images.
        rss = residuals.sum_of_squares()
    dof_left = stats.n_used - solved.dof
    if dof_left <= 0.5 or solved.cov_unscaled is None:
        return float("nan") if dof_left <= 0.5 else float(np.sqrt(rss / dof_left)), None, None
    noise = float(np.sqrt(max(rss, 0.0) / dof_left))
    cov = noise ** 2 * solved.cov_unscaled
    return noise, cov, np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(stats.shape)


# ---------------------------------------------------------------------------------------------
# The solve: plain, regularised, constrained
# ---------------------------------------------------------------------------------------------


@dataclass
class _Solved:
    """The coefficients ``(T, kh, kw)`` and what the uncertainty needs."""

    kernel: np.ndarray
    cov_unscaled: np.ndarray | None
    dof: float
    trusted: bool
    message: str
    lam: float | None


def _solve(stats, shape, degree, frame, *, reg, lam, nonneg, nonneg_grid, normalize,
           noise_std, info) -> _Solved:
    """Choose ``lam`` (when 'auto'), then solve; records the choice and the solver in ``info``.

    The penalty is ``Σ_t R(k_t)``: the regulariser of every term's coefficients, one ``lam``
    for all (block-diagonal ``I_T ⊗ LᵀL``).  ``lam='auto'`` is the direct path's GCV or
    discrepancy choice (:func:`kernelfit.select.direct.choose_lambda`) on these statistics.
    """
    T = len(monomial_powers(degree))
    penalty = None
    if not reg:
        lam = None
    else:
        penalty = sp.kron(sp.identity(T), penalty_matrix(reg, shape), format="csr")
        if lam == "auto":
            # choose_lambda reads any kernel of shape[0]·shape[1] unknowns: stack the terms.
            stacked = dataclasses.replace(stats, shape=(T * shape[0], shape[1]))
            choice = choose_lambda(stacked, penalty, noise_std=noise_std)
            lam = choice.lam
            info["lambda_selection"] = {"criterion": choice.criterion, "lams": choice.lams,
                                        "scores": choice.scores, "edf": choice.edf,
                                        "message": choice.message}
        lam = float(lam)
    if not nonneg and normalize is None:
        solution = solve_normal_equations(stats, penalty=penalty, lam=lam or 0.0)
        info.update(rcond=solution.rcond, rank=solution.rank, dof=solution.dof)
        return _Solved(solution.kernel, solution.cov_unscaled, solution.dof, solution.trusted,
                       solution.message, lam)
    equalities = None if normalize is None else _sum_constraints(T, shape, normalize)
    inequalities = None
    if nonneg:
        inequalities, positions = _nonneg_constraints(degree, frame, shape, nonneg_grid)
        info["nonneg_positions"] = positions
    solution = solve_linearly_constrained(stats, penalty=penalty, lam=lam or 0.0,
                                          equalities=equalities, inequalities=inequalities)
    # Given the active set the fit is least squares under equalities: its covariance is
    # K G K with K = A⁻¹ on the directions the active constraints leave free.
    K, G = solution.projected_inverse, stats.gram
    dof = float(np.sum(K * G))
    info.update(dof=dof, iterations=solution.iterations, n_active=len(solution.active),
                multipliers=solution.multipliers)
    return _Solved(solution.kernel, K @ G @ K, dof, solution.converged, solution.message, lam)


def _sum_constraints(T, shape, total):
    """``Σ_j k_0[j] = total`` and ``Σ_j k_t[j] = 0`` for ``t ≥ 1``: the kernel's sum is
    ``Σ_t m_t(y, x)·Σ_j k_t[j] = total`` at every position (``m_0 = 1``)."""
    p = shape[0] * shape[1]
    E = sp.kron(sp.identity(T), np.ones((1, p)), format="csr")
    return E, np.r_[float(total), np.zeros(T - 1)]


def _nonneg_constraints(degree, frame, shape, n):
    """``Σ_t m_t(y_g, x_g)·k_t[j] ≥ 0`` for every kernel pixel ``j`` at every position ``g``
    of the ``n × n`` grid (:func:`kernelfit.core.varying.grid_positions`); positions whose
    term values repeat (all of them for degree 0) are kept once.  Returns ``((C, 0), the
    positions as [[row, column], ...])``."""
    ys, xs = grid_positions(frame, n)
    M = term_values(monomial_powers(degree), frame, ys, xs).T          # (positions, T)
    M = np.unique(M, axis=0)
    p = shape[0] * shape[1]
    C = sp.kron(sp.csr_matrix(M), sp.identity(p), format="csr")        # rows g·p + j
    return (C, np.zeros(C.shape[0])), [[float(y), float(x)] for y, x in zip(ys, xs)]


def fit_varying(pairs, shape, degree, *, background, single, reg=None, lam="auto",
                nonneg=False, nonneg_grid=NONNEG_GRID, normalize=None,
                noise_std=None) -> VaryingKernelFit:
    """Least squares for a polynomially varying kernel on prepared pairs, optionally
    regularised and constrained (see :func:`kernelfit.front.variation.estimate_varying`)."""
    frame = _common_frame(pairs, degree)
    parts, terms = [], []
    for pair in pairs:
        part = varying_statistics(pair, shape, degree, frame=frame)
        if background is not None:
            # The polynomial background of each pair is minimised out exactly, as for an
            # invariant kernel (kernelfit.background), with the extended design's columns.
            terms.append(varying_background_terms(pair, shape, degree, frame, background))
            part = profile_out(part, terms[-1])
        parts.append(part)
    stats = sum(parts)
    info = {"n_pairs": len(pairs)}
    solution = _solve(stats, shape, degree, frame, reg=reg, lam=lam, nonneg=nonneg,
                      nonneg_grid=nonneg_grid, normalize=normalize, noise_std=noise_std,
                      info=info)
    geometry = pairs[0].geometry
    varying = VaryingKernel(solution.kernel, degree, frame, geometry.center,
                            _output_origin(geometry.output_size, shape, geometry.center))
    fitted, background_info = (None, None) if not terms else \
        fitted_background(terms, solution.kernel, single=single)
    backgrounds = None if not terms else [
        t.basis.factors(background_coefficients(t, solution.kernel)) for t in terms]
    residuals = _Residuals(pairs, varying, single, backgrounds)
    noise, cov, stderr = _uncertainty(stats, solution, residuals)
    p = shape[0] * shape[1]
    info["variation"] = {"degree": degree, "terms": term_names(degree), "frame": list(frame),
                         "origin": list(varying.origin), "stderr": stderr}
    if background_info is not None:
        info["background"] = background_info
    fit = VaryingKernelFit(
        kernel=varying.coefficients[0].copy(), shape=shape, center=geometry.center,
        boundary=geometry.boundary, model="free", params={"variation": varying.coefficients},
        stderr=None if stderr is None else stderr[0], cov=None if cov is None else cov[:p, :p],
        background=fitted, _residual=residuals, noise_std=noise, lam=solution.lam,
        n_used=getattr(stats, "n_pixels", stats.n_used),
        converged=solution.trusted, message=solution.message, method="normal-varying",
        info=info, varying=varying)
    return _annotate(pairs, fit)
