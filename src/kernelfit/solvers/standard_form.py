"""The standard form of a quadratic problem: the regulariser as its own preconditioner.

The minimiser of ``‖W(Xk − b)‖²/n + lam·‖Lk‖²`` solves ``(B + lam·LᵀL) k = c`` with
``B = XᵀWX/n``, ``c = XᵀWb/n``.  ``LᵀL`` of ``'gradient'`` and ``'laplacian'`` (reflecting
edges) is diagonalised by the orthonormal 2-D DCT-II: ``LᵀL = C diag(q) Cᵀ`` with ``q = μ``
or ``μ²``, ``μ = 4 sin²(π i / 2kh) + 4 sin²(π j / 2kw)``.  Writing ``k = α·1 + C q^{-1/2} u``
(``1`` spans the null space) turns the system into ``(S + lam) u = g``: conjugate gradients
preconditioned by the regulariser itself.  Only a shift ``lam`` depends on λ, so one Krylov
run serves every λ at once (multi-shift CG, :func:`kernelfit.solvers.cg.multishift_block_cg`),
which is what makes GCV cheap (:mod:`kernelfit.select.gcv_iterative`).  A sum constraint
fixes ``α = s/p`` (the DCT modes other than the constant sum to 0).

Measured on seed 000 (100² binary image, 199² kernel, ``'gradient'`` at λ = 0.3, iterations to
a kernel within 1e-3 of the exact minimiser): Jacobi 254, ``c·I + λLᵀL`` by DCT 156-184, the
standard form (``c = 0``) about as few, and only the latter keeps every λ on one Krylov
space.  ``'laplacian'`` (``LᵀL`` spans 10⁹) needs 1000-1500 with any of them.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ..core.conventions import normalize_shape
from .operator import FFTKernelOperator

__all__ = ["DCT2", "StandardForm", "penalty_eigenvalues"]


def penalty_eigenvalues(reg, shape) -> np.ndarray:
    """Eigenvalues of ``LᵀL`` in the orthonormal 2-D DCT-II basis, kernel-shaped.

    ``LᵀL`` of :mod:`kernelfit.solvers.regularisers` (reflecting edges) is diagonal in that basis:
    ``ridge`` 1, ``gradient`` μ, ``laplacian`` μ², with
    ``μ[i, j] = 4 sin²(π i / 2kh) + 4 sin²(π j / 2kw)``; ``μ[0, 0] = 0`` is the constant.

    Examples
    --------
    >>> import numpy as np, scipy.fft
    >>> from kernelfit.solvers.regularisers import penalty_matrix
    >>> k = np.random.default_rng(0).normal(size=(4, 5))
    >>> q = penalty_eigenvalues("laplacian", (4, 5))
    >>> via_dct = scipy.fft.idctn(q * scipy.fft.dctn(k, norm="ortho"), norm="ortho")
    >>> bool(np.allclose(via_dct.ravel(), penalty_matrix("laplacian", (4, 5)) @ k.ravel()))
    True
    """
    kh, kw = normalize_shape(shape)
    if reg == "ridge":
        return np.ones((kh, kw))
    my = 4.0 * np.sin(np.pi * np.arange(kh) / (2 * kh)) ** 2
    mx = 4.0 * np.sin(np.pi * np.arange(kw) / (2 * kw)) ** 2
    mu = my[:, None] + mx[None, :]
    if reg == "gradient":
        return mu
    if reg == "laplacian":
        return mu * mu
    raise ValueError(f"reg={reg!r} has no DCT spectrum; use 'ridge', 'gradient' or 'laplacian'")


def _dct_matrix(n):
    """Orthonormal DCT-II matrix: ``dct(x, norm='ortho') == C @ x``."""
    j = np.arange(n)
    C = np.sqrt(2.0 / n) * np.cos(np.pi * np.outer(j, 2 * j + 1) / (2 * n))
    C[0] /= np.sqrt(2.0)
    return C


class DCT2:
    """Orthonormal 2-D DCT-II and its inverse on the last two axes.

    Lengths that pocketfft handles fast use it; others (e.g. a prime like 199, where it falls
    back to Bluestein's algorithm) use a dense matrix product, about 3× faster there.
    (Splitting the matrix into its even and odd rows halves the flops but, at these sizes,
    costs more in temporaries than it saves: measured.)
    """

    def __init__(self, shape):
        self.shape = shape
        self._mats = [None if _is_fast_length(n) else _dct_matrix(n) for n in shape]

    def forward(self, x):
        return self._apply(x, inverse=False)

    def inverse(self, x):
        return self._apply(x, inverse=True)

    def _apply(self, x, inverse):
        if x.ndim == 3:
            # One array at a time: a stack in one product per axis needs transposed copies
            # and measured twice as slow (2 arrays of 199²).
            return np.stack([self._apply(v, inverse) for v in x])
        for axis, C in zip((0, 1), self._mats):
            if C is None:
                fn = scipy.fft.idct if inverse else scipy.fft.dct
                x = fn(x, norm="ortho", axis=axis)
            elif axis == 0:
                x = (C.T if inverse else C) @ x
            else:
                x = x @ (C if inverse else C.T)
        return x


def _is_fast_length(n):
    # pocketfft is fastest for 2-, 3- and 5-smooth lengths; a DCT of length n uses an FFT of
    # length n or 2n.
    return n > 64 and scipy.fft.next_fast_len(n) == n


# --------------------------------------------------------------------------------------------
# The standard form of a quadratic problem
# --------------------------------------------------------------------------------------------
class StandardForm:
    """``(B + lam·Q) k = c`` rewritten as ``(S + lam) u = g`` by ``k = α·1 + C q^{-½} u``.

    ``B = XᵀWX/n``, ``c = XᵀWb/n``, ``Q = LᵀL = C diag(q) Cᵀ``.  For ``'gradient'`` and
    ``'laplacian'`` the constant ``α·1`` spans the null space of ``Q``: it is either free
    (eliminated exactly: ``B`` becomes ``B̃ = B − B1 (B1)ᵀ / 1ᵀB1``, i.e. the data are
    projected off ``T = WX1``) or fixed by a sum constraint (``α = total/p``).  For
    ``'ridge'``, ``q = 1``, there is no null space and no transform is needed.
    """

    def __init__(self, op: FFTKernelOperator, reg, total=None):
        self.op = op
        self.reg = reg
        self.n = op.n_used
        shape = op.shape
        self.p = shape[0] * shape[1]
        self.total = total
        c = op.rhs / self.n
        if reg == "ridge":
            self.dct = None
            self.zs = None
            self.B1 = None
            self.g = c
            self.mean_fixed = None
            return
        self.dct = DCT2(shape)
        q = penalty_eigenvalues(reg, shape)
        zs = np.zeros(shape)
        positive = q > 0
        zs[positive] = 1.0 / np.sqrt(q[positive])
        self.zs = zs
        self.B1 = op.normal(np.ones(shape)) / self.n        # B·1
        self.oBo = float(np.sum(self.B1))                   # 1ᵀB1 = ‖WX1‖²/n
        if total is not None:
            self.mean_fixed = total / self.p
            self.g = self._to_coefficients(c - self.mean_fixed * self.B1)
        else:
            self.mean_fixed = None
            if not self.oBo > 0:
                raise ValueError("the images see no constant kernel (W X 1 = 0), so the "
                                 f"kernel's mean is not determined with reg={reg!r}; "
                                 "pass total= or use reg='ridge'")
            self.g = self._to_coefficients(self._project(c))

    def _project(self, v):
        """``v − B1 (1ᵀv) / 1ᵀB1`` (stacks allowed): the data projected off ``T = WX1``."""
        if self.mean_fixed is not None:
            return v
        s = np.sum(v, axis=(-2, -1), keepdims=True)
        return v - self.B1 * (s / self.oBo)

    def _to_coefficients(self, v):
        """``q^{-½} Cᵀ v``."""
        return self.zs * self.dct.forward(v)

    def _from_coefficients(self, u):
        """``C q^{-½} u`` (zero mean)."""
        return self.dct.inverse(self.zs * u)

    def apply(self, u):
        """``S u`` for one coefficient array or a stack."""
        if self.dct is None:
            return self.op.normal(u) / self.n
        # The DCTs take the whole stack at once; the operator one kernel at a time.
        return self._to_coefficients(self._project(self.op.normal(self._from_coefficients(u))
                                                   / self.n))

    def data_vector(self, v):
        """``g`` for a kernel-space vector ``v = XᵀWz/n`` (a probe or the data)."""
        if self.dct is None:
            return v
        return self._to_coefficients(self._project(v))

    def kernel(self, u):
        """The kernel for coefficients ``u`` (the mean term solved or fixed)."""
        if self.dct is None:
            return u
        kR = self._from_coefficients(u)
        if self.mean_fixed is not None:
            alpha = self.mean_fixed
        else:
            c = self.op.rhs / self.n
            alpha = (np.sum(c) - np.sum(self.B1 * kR, axis=(-2, -1))) / self.oBo
            alpha = np.asarray(alpha)[..., None, None]
        return kR + alpha

    def coefficients(self, kernel):
        """Inverse of :meth:`kernel` on its range (for warm starts)."""
        if self.dct is None:
            return np.array(kernel, dtype=np.float64)
        v = self.dct.forward(np.asarray(kernel, dtype=np.float64))
        u = np.zeros_like(v)
        positive = self.zs > 0
        u[positive] = v[positive] / self.zs[positive]
        return u
