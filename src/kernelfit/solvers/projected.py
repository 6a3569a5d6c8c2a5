"""The matrix-free operator with a polynomial background profiled out exactly.

With a background of degree ``d`` per pair the model is ``b ≈ Xk + Tβ`` (``T`` the
``m = (d+1)(d+2)/2`` Legendre products of :mod:`kernelfit.stats.background` over the used
rectangle).  For a fixed kernel the best ``β`` is a least-squares fit of ``T`` to the residual,
so the joint problem is the kernel problem with the projector

    M = W − W T (TᵀWT)⁻¹ Tᵀ W = W − Q Qᵀ,     Q = W T L⁻ᵀ,  TᵀWT = LLᵀ,

applied to the data and to the operator's range (``W`` the 0/1 use mask; ``Q`` the background
columns orthonormalised over the used pixels).  ``M`` is symmetric and idempotent, so

    minimise ‖M(Xk − b)‖²    has the normal operator  XᵀMX  and the data  XᵀMb,

and everything built on :class:`~kernelfit.solvers.operator.FFTKernelOperator` -- CG, the
standard form, FISTA with ``'tv'``/``'l1'`` and the constraints, GCV by multi-shift CG, the
discrepancy path -- solves the joint problem unchanged when handed a
:class:`ProjectedOperator`.  The background itself is recovered afterwards exactly,
``β = (TᵀWT)⁻¹ Tᵀ W (b − Xk)`` (:func:`kernelfit.stats.background.background_coefficients`).

``n_used`` is the residual's degrees of freedom, pixels − background terms, as on the direct
path (:class:`~kernelfit.stats.background.ProfiledStatistics`): the objective
``‖M(Xk − b)‖²/n`` and the noise estimate ``RSS/(n − p)`` count the background like the
direct path does.  ``M`` costs a few small matrix products per application and no FFT; the
diagonal of ``XᵀMX`` (Jacobi, the default ``lam`` grid) is that of ``XᵀWX`` minus the
squared rows of ``XᵀQ``, which :func:`~kernelfit.stats.background.background_terms` has
already correlated (one FFT per term).
"""

from __future__ import annotations

import numpy as np

from ..core.conventions import normalize_shape
from ..stats.background import BackgroundTerms, background_terms
from .operator import FFTKernelOperator

__all__ = ["ProjectedOperator"]


class ProjectedOperator(FFTKernelOperator):
    """``M X`` (kernel → used pixels, background directions removed) of one or more pairs.

    A :class:`~kernelfit.solvers.operator.FFTKernelOperator` whose :meth:`forward`,
    :meth:`adjoint`, :meth:`normal`, :meth:`diagonal`, :meth:`residual_sum_of_squares`,
    ``rhs``, ``btb`` and ``n_used`` are those of the profiled problem (see the module
    docstring), so that every matrix-free solver fits kernel and background jointly.

    Parameters
    ----------
    pairs : PreparedPair or list of them
        From :func:`kernelfit.core.design.prepare_pair`.
    shape : int or (kh, kw)
        Kernel shape (that of the pairs' geometry).
    degree : int
        Polynomial degree of each pair's background (0 = a constant offset).

    Attributes
    ----------
    terms : list of BackgroundTerms
        One per pair: for :func:`kernelfit.stats.background.fitted_background` and the
        residuals.
    n_pixels : int
        Used pixels over all pairs (``n_used`` plus the background terms).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.random((20, 20)), rng.random((20, 20))
    >>> op = ProjectedOperator([prepare_pair(a, b, 5, boundary="fill")], 5, 1)
    >>> k, r = rng.normal(size=(5, 5)), rng.normal(size=(20, 20))
    >>> bool(np.isclose(np.vdot(op.forward(k)[0], r), np.vdot(k, op.adjoint([r]))))
    True
    >>> op.n_pixels - op.n_used        # three terms: 1, x, y
    3
    """

    def __init__(self, pairs, shape, degree):
        if not isinstance(pairs, (list, tuple)):
            pairs = [pairs]
        # The projector must exist before the base class forms rhs = adjoint(b).
        self.terms = [background_terms(pair, normalize_shape(shape), degree) for pair in pairs]
        self._projectors = [_Projector(terms) for terms in self.terms]
        super().__init__(pairs, shape)
        self.n_pixels = self.n_used
        self.n_used = self.n_pixels - sum(len(terms.basis) for terms in self.terms)
        self._data = [np.where(pair.use, pair.b_used, 0.0) if pair.use is not None
                      else np.asarray(pair.b_used, dtype=np.float64) for pair in pairs]
        # ‖Mb‖²: the data's sum of squares after the best background.
        self.btb = float(sum(np.sum(proj(b) ** 2)
                             for proj, b in zip(self._projectors, self._data)))

    def forward(self, kernel):
        """``M X k`` for every pair (0 where a pixel is not used)."""
        return [proj(y) for proj, y in zip(self._projectors, super().forward(kernel))]

    def adjoint(self, residuals):
        """``Σ_pairs Xᵀ M r``, kernel-shaped."""
        return super().adjoint([proj(np.asarray(r, dtype=np.float64)) for proj, r
                                in zip(self._projectors, self._one_per_pair(residuals))])

    def normal(self, kernel):
        """``Σ_pairs Xᵀ M X k`` (``M`` idempotent: the adjoint of :meth:`forward` after it)."""
        kernel = self._check_kernel(kernel)
        if kernel.ndim == 3:
            return np.stack([self.normal(k) for k in kernel])
        return super().adjoint(self.forward(kernel))

    def diagonal(self):
        """``diag(Σ XᵀMX) = diag(Σ XᵀWX) − Σ_t (XᵀQ)²_t``, kernel-shaped."""
        if self._diagonal is None:
            removed = sum(np.sum(terms.whiten(terms.cross.T) ** 2, axis=0)
                          for terms in self.terms).reshape(self.shape)
            self._diagonal = np.maximum(super().diagonal() - removed, 0.0)
        return self._diagonal

    def residual_sum_of_squares(self, kernel) -> float:
        """``Σ ‖M(Xk − b)‖²``: the residual after the best background, from the images."""
        raw = FFTKernelOperator.forward(self, kernel)
        return float(sum(np.sum(proj(y - b) ** 2) for proj, y, b
                         in zip(self._projectors, raw, self._data)))


class _Projector:
    """``r ↦ W r − Q Qᵀ r`` of one pair, for one residual image or a stack of them."""

    def __init__(self, terms: BackgroundTerms):
        basis = terms.basis
        self._terms = terms
        self._vx, self._vy = basis.vx, basis.vy
        self._ix = np.array([i for i, _ in basis.powers])
        self._iy = np.array([j for _, j in basis.powers])
        self._grid = (basis.degree + 1, basis.degree + 1)
        self._w = terms.weights

    def __call__(self, r):
        wr = r if self._w is None else r * self._w
        # Tᵀ(Wr) for every image of a stack: Σ_y Σ_x P_j(y) P_i(x) r[y, x].
        ttr = (self._vy.T @ wr @ self._vx)[..., self._iy, self._ix]          # (..., m)
        gamma = self._terms.solve(ttr.reshape(-1, ttr.shape[-1]).T).T      # (s, m)
        grid = np.zeros((gamma.shape[0],) + self._grid)
        grid[:, self._iy, self._ix] = gamma
        fitted = (self._vy @ grid @ self._vx.T).reshape(wr.shape)
        return wr - (fitted if self._w is None else fitted * self._w)
