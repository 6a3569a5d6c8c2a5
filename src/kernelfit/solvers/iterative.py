"""Matrix-free solvers for kernels too large for a ``p × p`` Gram matrix: the front.

:func:`solve_iterative` checks the options once and hands the problem to conjugate gradients
(quadratic regularisers, :mod:`kernelfit.solvers.cg` on :mod:`kernelfit.solvers.standard_form`)
or FISTA (constraints and non-smooth regularisers, :mod:`kernelfit.solvers.fista` with the
maps of :mod:`kernelfit.solvers.proximal`), all on the FFT operator of
:mod:`kernelfit.solvers.operator`.  The objective is the library's::

    F(k) = ‖W(Xk − b)‖² / n  +  lam · R(k)          (n = number of used pixels, W = 0/1 mask)

This module also re-exports those pieces under their former names, so that
``kernelfit.solvers.iterative`` stays importable as before.  The matrix-free GCV moved up a
layer, to :mod:`kernelfit.select.gcv_iterative` (a solver may not import the λ choice).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..core.conventions import normalize_shape
from .cg import CG_MAXITER, solve_jacobi, solve_standard_form
from .fista import fista
from .operator import FFTKernelOperator, as_operator
from .proximal import project
from .regularisers import NONSMOOTH
from .solution import IterativeSolution, check_limits
from .standard_form import penalty_eigenvalues

__all__ = [
    "FFTKernelOperator",
    "IterativeSolution",
    "penalty_eigenvalues",
    "project",
    "solve_iterative",
]

QUADRATIC = (None, "ridge", "gradient", "laplacian")
# Proximal methods converge more slowly than CG (see kernelfit.solvers.cg for its limit).
_PROX_MAXITER = 5000


def _check_common(reg, lam, nonneg, total, tol, maxiter):
    if reg not in QUADRATIC + NONSMOOTH:
        raise ValueError(f"reg={reg!r} is not a known regulariser; use one of "
                         f"{QUADRATIC + NONSMOOTH}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not np.isfinite(lam) \
            or lam < 0:
        raise ValueError(f"lam={lam!r} must be a finite number >= 0")
    if reg is None and lam != 0:
        raise ValueError(f"lam={lam!r} is given but reg=None; name a regulariser")
    if not isinstance(nonneg, (bool, np.bool_)):
        raise TypeError(f"nonneg={nonneg!r} must be True or False")
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, numbers.Real) \
                or not np.isfinite(total):
            raise ValueError(f"total={total!r} must be a finite number (the kernel's sum)")
        if nonneg and total < 0:
            raise ValueError(f"total={total!r} < 0 cannot be met by a kernel with nonneg=True")
    check_limits(tol, maxiter)


def _check_x0(x0, shape):
    if x0 is None:
        return None
    x = np.array(x0, dtype=np.float64)
    if x.shape != shape:
        raise ValueError(f"x0 has shape {x.shape}; expected the kernel shape {shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 contains NaN or inf")
    return x


def solve_iterative(pairs, shape, *, reg=None, lam=0.0, nonneg=False, total=None, x0=None,
                    tol=1e-6, maxiter=None, callback=None, noise_std=None) -> IterativeSolution:
    """Minimise ``‖W(Xk − b)‖²/n + lam·R(k)`` without forming ``X`` or ``XᵀX``.

    Parameters
    ----------
    pairs : list of PreparedPair, or FFTKernelOperator
        The prepared image pairs (attributes ``extended``, ``b_used``, ``use``), sharing one
        kernel; an :class:`FFTKernelOperator` built earlier is reused as is.
    shape : int or (kh, kw)
        Kernel shape.
    reg : {None, 'ridge', 'gradient', 'laplacian', 'tv', 'l1'}
        Regulariser ``R`` (:mod:`kernelfit.solvers.regularisers`).
    lam : float, default 0
        Its weight per pixel (the data term is a mean over the ``n`` used pixels, so one
        value means the same on images of any size).
    nonneg : bool, default False
        Constrain ``k ≥ 0``.
    total : float, optional
        Constrain ``Σ k = total``.
    x0 : (kh, kw) array, optional
        Starting kernel (warm start).  Infeasible starts are projected.
    tol : float, default 1e-6
        CG stops when the residual of the normal equations in their solved (standard, or
        Jacobi-scaled) form falls to ``tol`` times its value at ``k = 0``; proximal methods
        stop when a step moves the kernel by less than ``tol·‖k‖`` (the proximal-gradient
        residual) on three successive iterations.  (With ``total`` and a quadratic or no
        regulariser, "at ``k = 0``" means at the constant kernel ``total/p``.)  CG on the
        standard form also waits for the objective to settle: its last quarter of
        iterations (at least 10) must have lowered it by at most ``tol`` relative, because
        there a small residual does not mean an accurate kernel.
    maxiter : int, optional
        Iteration limit (default 3000 for CG, 5000 for proximal methods).
    callback : callable, optional
        ``callback(iteration, kernel)`` after every iteration; returning True stops.
    noise_std : float, optional
        The noise level of ``b`` (per pixel), known or estimated.  Proximal methods then
        also stop once the last quarter of their iterations (at least 10) lowered ``n·F``
        by at most ``0.1·noise_std²``: a change of the fit far below what the data resolve.
        CG on the standard form accepts that much as a settled objective too.

    Returns
    -------
    IterativeSolution

    Raises
    ------
    ValueError
        For an unknown ``reg``, a negative ``lam``, ``total < 0`` with ``nonneg``, bad
        ``tol``/``maxiter``/``x0``, or pairs that do not fit ``shape``.

    Notes
    -----
    Quadratic ``reg`` without ``nonneg`` use conjugate gradients: on the standard form for
    ``'gradient'``/``'laplacian'`` (the regulariser is the preconditioner, see
    :mod:`kernelfit.solvers.standard_form`), Jacobi-preconditioned otherwise.  Everything else uses FISTA with
    backtracking and restarts, whose steps are exact projections / proximal maps.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((40, 40)), rng.random((5, 5))
    >>> pair = prepare_pair(a, kf.convolve(a, k), 5, boundary="fill")
    >>> sol = solve_iterative([pair], 5, tol=1e-10)
    >>> sol.converged, bool(np.allclose(sol.kernel, k, atol=1e-7))
    (True, True)
    """
    shape = normalize_shape(shape)
    _check_common(reg, lam, nonneg, total, tol, maxiter)
    x0 = _check_x0(x0, shape)
    op = as_operator(pairs, shape)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable: callback(iteration, kernel)")
    if noise_std is not None and (isinstance(noise_std, bool)
                                  or not isinstance(noise_std, numbers.Real)
                                  or not np.isfinite(noise_std) or noise_std <= 0):
        raise ValueError(f"noise_std={noise_std!r} must be a finite number > 0")
    if nonneg or reg in NONSMOOTH:
        return fista(op, reg, float(lam), nonneg, total, x0, tol,
                      maxiter or _PROX_MAXITER, callback,
                      None if noise_std is None else float(noise_std))
    maxiter = maxiter or CG_MAXITER
    if reg in ("gradient", "laplacian") and lam > 0:
        return solve_standard_form(op, reg, float(lam), total, x0, tol, maxiter, callback,
                                    None if noise_std is None else float(noise_std))
    return solve_jacobi(op, reg, float(lam), total, x0, tol, maxiter, callback)
