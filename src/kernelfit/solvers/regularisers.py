"""Regularisers on the kernel grid, as sparse operators.

A regulariser adds ``lam · R(k)`` to the mean squared residual ``‖Xk − b‖²/n``, so ``lam``
is per pixel and means the same on images of any size.  Every regulariser is defined by a
sparse operator ``L`` on the kernel flattened in C order:

* ``"ridge"``      ``R = ‖k‖²``,        ``L = I``                       (null space: none)
* ``"gradient"``   ``R = ‖D k‖²``,      ``L = D``, forward differences    (null space: constants)
* ``"laplacian"``  ``R = ‖Δ k‖²``,      ``L = DᵀD``, the 5-point Laplacian with reflecting
  (Neumann) edges                                                        (null space: constants)
* ``"tv"``         ``R = Σ_pixels ‖(D k)_pixel‖₂`` (isotropic total variation), ``L = D``
* ``"l1"``         ``R = ‖k‖₁``,        ``L = I``

``D`` stacks the differences along rows (``k[i+1, j] − k[i, j]``) on top of those along
columns (``k[i, j+1] − k[i, j]``), each only between pixels of the kernel (no wrap-around).
The first three are quadratic (``R = ‖Lk‖²``, solved directly or by CG); ``"tv"`` and ``"l1"``
are not smooth and need a proximal solver.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

QUADRATIC = ("ridge", "gradient", "laplacian")
NONSMOOTH = ("tv", "l1")
REGULARISERS = QUADRATIC + NONSMOOTH


def _first_differences(n: int) -> sp.csr_matrix:
    """``(n−1) × n`` forward differences."""
    if n == 1:
        return sp.csr_matrix((0, 1))
    return sp.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n), format="csr")


def gradient_operator(shape) -> sp.csr_matrix:
    """``D``: differences along rows, then along columns, of a kernel flattened in C order.

    Examples
    --------
    >>> D = gradient_operator((2, 3))
    >>> D.shape
    (7, 6)
    >>> D @ np.ones(6)
    array([0., 0., 0., 0., 0., 0., 0.])
    """
    kh, kw = shape
    along_rows = sp.kron(_first_differences(kh), sp.identity(kw))
    along_cols = sp.kron(sp.identity(kh), _first_differences(kw))
    return sp.vstack([along_rows, along_cols]).tocsr()


def operator(name: str, shape) -> sp.csr_matrix:
    """The sparse operator ``L`` of regulariser ``name`` for a kernel of ``shape``.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    p = shape[0] * shape[1]
    if name in ("ridge", "l1"):
        return sp.identity(p, format="csr")
    if name in ("gradient", "tv"):
        return gradient_operator(shape)
    if name == "laplacian":
        D = gradient_operator(shape)
        return (D.T @ D).tocsr()
    raise ValueError(f"reg={name!r} is not a known regulariser; use one of {REGULARISERS}")


def penalty_matrix(name: str, shape) -> sp.csr_matrix:
    """``LᵀL`` for a quadratic regulariser: the objective's Hessian contribution per ``lam``.

    Examples
    --------
    >>> P = penalty_matrix("gradient", (3, 3)).toarray()
    >>> bool(np.allclose(P, P.T)), bool(np.allclose(P @ np.ones(9), 0))
    (True, True)
    """
    if name not in QUADRATIC:
        raise ValueError(f"reg={name!r} is not quadratic; quadratic regularisers: {QUADRATIC}")
    L = operator(name, shape)
    return (L.T @ L).tocsr()


def penalty_value(name: str, kernel) -> float:
    """``R(k)`` for any regulariser (see the module docstring)."""
    k = np.asarray(kernel, dtype=np.float64)
    flat = k.ravel()
    if name in QUADRATIC:
        Lk = operator(name, k.shape) @ flat
        return float(Lk @ Lk)
    if name == "l1":
        return float(np.abs(flat).sum())
    if name == "tv":
        return float(np.sum(np.sqrt(_pixel_gradient_norms_squared(k))))
    raise ValueError(f"reg={name!r} is not a known regulariser; use one of {REGULARISERS}")


def _pixel_gradient_norms_squared(k: np.ndarray) -> np.ndarray:
    """``|∂y k|² + |∂x k|²`` per pixel, forward differences, zero past the last row/column."""
    gy = np.zeros_like(k)
    gx = np.zeros_like(k)
    gy[:-1] = np.diff(k, axis=0)
    gx[:, :-1] = np.diff(k, axis=1)
    return gy * gy + gx * gx
