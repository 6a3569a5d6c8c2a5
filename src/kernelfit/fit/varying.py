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
    the image by one FFT correlation, the bands by batched 1-D correlations
    (:func:`cross_gram`, the two-image form of :func:`kernelfit.stats.gram_fft`).  Then
    ``G = Bᵀ (X_Tᵀ X_T) B``, ``c = Bᵀ X_Tᵀ b``: exact, at ``T(T+1)/2`` Gram costs instead of
    im2col's ``N·(pT)²``.  Masked pixels are subtracted explicitly (or, when most are masked,
    the kept ones summed explicitly).

Speed and accuracy against im2col and OIS: ``benchmarks/bench_varying.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.forward import convolve_extended
from ..core.varying import VaryingKernel, _output_origin, _weighted_sum, term_names
from .annotate import _annotate
from .result import KernelFit
from ..solvers.direct import solve_normal_equations
from ..stats.background import (
    background_coefficients,
    background_image,
    fitted_background,
    profile_out,
)
from ..stats.varying import _common_frame, varying_background_terms, varying_statistics

# The direct solve holds a (p·T)² Gram matrix and factors it in O((p·T)³): 4096 unknowns is
# 134 MB and a few seconds, the size at which the free model also leaves its direct path.
MAX_UNKNOWNS = 4096


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
    """``b − Σ_t m_t ⊙ (a ⊛ k_t)`` per pair, NaN where unused; made on first access."""

    def __init__(self, pairs, varying: VaryingKernel, single, backgrounds=None):
        self._pairs, self._varying, self._single = pairs, varying, single
        # The fitted background over each pair's used rectangle, or None.
        self._backgrounds = backgrounds or [0.0] * len(pairs)
        self._images = None

    def __call__(self):
        if self._images is None:
            self._images = [pair.embed(pair.b_used - self.prediction(pair) - background)
                            for pair, background in zip(self._pairs, self._backgrounds)]
        return self._images[0] if self._single else self._images

    def prediction(self, pair) -> np.ndarray:
        """The model over the used rectangle of ``pair``'s ``b``."""
        vk = self._varying
        planes = [convolve_extended(pair.extended, k) for k in vk.coefficients]
        rows = np.arange(planes[0].shape[0]) + pair.geometry.used[0].indices(vk.frame[0])[0]
        cols = np.arange(planes[0].shape[1]) + pair.geometry.used[1].indices(vk.frame[1])[0]
        return _weighted_sum(planes, vk.powers, rows, cols, vk.frame)

    def sum_of_squares(self) -> float:
        self()
        return float(sum(np.nansum(r * r) for r in self._images))


def _uncertainty(stats, solution, residuals):
    """Noise from the residuals; covariance ``σ̂² G⁻¹`` and the standard errors (T, kh, kw)."""
    k = solution.kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    if rss < 1e-9 * stats.btb:
        # A near-perfect fit: the formula would be mostly rounding; use the images.
        rss = residuals.sum_of_squares()
    dof_left = stats.n_used - solution.dof
    if dof_left <= 0.5 or solution.cov_unscaled is None:
        return float("nan") if dof_left <= 0.5 else float(np.sqrt(rss / dof_left)), None, None
    noise = float(np.sqrt(max(rss, 0.0) / dof_left))
    cov = noise ** 2 * solution.cov_unscaled
    return noise, cov, np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(stats.shape)


def fit_varying(pairs, shape, degree, *, background, single) -> VaryingKernelFit:
    """Least squares for a polynomially varying kernel on prepared pairs (see
    :func:`kernelfit.front.variation.estimate_varying`)."""
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
    solution = solve_normal_equations(stats)
    geometry = pairs[0].geometry
    varying = VaryingKernel(solution.kernel, degree, frame, geometry.center,
                            _output_origin(geometry.output_size, shape, geometry.center))
    fitted, background_info = (None, None) if not terms else \
        fitted_background(terms, solution.kernel, single=single)
    backgrounds = None if not terms else [
        background_image(t, background_coefficients(t, solution.kernel), full=False)
        for t in terms]
    residuals = _Residuals(pairs, varying, single, backgrounds)
    noise, cov, stderr = _uncertainty(stats, solution, residuals)
    p = shape[0] * shape[1]
    info = {"n_pairs": len(pairs), "rcond": solution.rcond, "rank": solution.rank,
            "dof": solution.dof,
            "variation": {"degree": degree, "terms": term_names(degree), "frame": list(frame),
                          "origin": list(varying.origin), "stderr": stderr}}
    if background_info is not None:
        info["background"] = background_info
    fit = VaryingKernelFit(
        kernel=varying.coefficients[0].copy(), shape=shape, center=geometry.center,
        boundary=geometry.boundary, model="free", params={"variation": varying.coefficients},
        stderr=None if stderr is None else stderr[0], cov=None if cov is None else cov[:p, :p],
        background=fitted, _residual=residuals, noise_std=noise, lam=None,
        n_used=getattr(stats, "n_pixels", stats.n_used),
        converged=solution.trusted, message=solution.message, method="normal-varying",
        info=info, varying=varying)
    return _annotate(pairs, fit)
