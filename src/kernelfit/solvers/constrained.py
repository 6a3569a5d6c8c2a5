"""Quadratic kernel problems with sign and sum constraints, solved on the Gram matrix.

The problem, in the notation of :mod:`kernelfit.stats`::

    minimise   kᵀ A k − 2 kᵀ c          A = G + n·lam·P
    subject to k ≥ 0                    (nonneg=True)
               Σ k = total              (total given)

which is ``‖Xk − b‖²/n + lam·‖Lk‖²`` times ``n`` up to a constant.  Everything happens in the
``p × p`` Gram form, never on the pixels, so the cost does not depend on the image size.

* No constraint: one Cholesky factorisation of ``A``.
* Sum only: the KKT system ``A k + ν·1 = c``, ``1ᵀk = total`` has the closed form
  ``k = A⁻¹c − ν·A⁻¹1`` with ``ν = (1ᵀA⁻¹c − total)/(1ᵀA⁻¹1)``: two solves, one factor.
* Non-negativity (with or without the sum): a Lawson–Hanson active-set method written on ``A``
  and ``c`` (the "fast NNLS" form).  The *passive* set ``F`` holds the coefficients allowed to
  be non-zero; on it the equality-constrained problem is solved exactly (with the sum
  constraint, by the same two-solve formula on ``A_FF``), the others are exactly 0.  The
  Cholesky factor of ``A_FF`` is extended by one row and column when a coefficient enters
  (``O(|F|²)``) and recomputed when coefficients leave (rarer).

Multiplier convention: at the solution ``A k − c + ν·1 = μ`` with ``μ ≥ 0`` on the active set
(coefficients held at 0) and ``μ = 0`` on the passive set; ``ν`` is reported as
:attr:`ConstrainedSolution.multiplier` (``None`` without a sum constraint).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..stats.gram import SufficientStatistics

_EPS = np.finfo(float).eps


@dataclass
class ConstrainedSolution:
    """What :func:`solve_quadratic` found.

    Attributes
    ----------
    kernel : ndarray
        Kernel-shaped solution (convolution orientation).
    active : bool ndarray like ``kernel``, or None
        True where a coefficient is held at exactly 0 by ``nonneg``; ``None`` without it.
    iterations : int
        Number of passive-set systems solved by the active-set method (0 for the closed-form
        paths).
    converged : bool
        False when the iteration cap was hit or the system was singular; ``message`` says why.
    message : str
        Empty when all is well.
    multiplier : float or None
        Lagrange multiplier ``ν`` of the sum constraint (see the module docstring).
    """

    kernel: np.ndarray
    active: np.ndarray | None
    iterations: int
    converged: bool
    message: str
    multiplier: float | None = None


def solve_quadratic(stats: SufficientStatistics, *, penalty=None, lam: float = 0.0,
                    nonneg: bool = False, total: float | None = None,
                    max_iter: int | None = None) -> ConstrainedSolution:
    """Minimise ``kᵀAk − 2kᵀc``, ``A = G + n·lam·penalty``, under optional constraints.

    Parameters
    ----------
    stats : SufficientStatistics
        Gram matrix ``G``, right-hand side ``c`` and pixel count ``n``.
    penalty : (p, p) array or sparse matrix, optional
        ``LᵀL`` of a quadratic regulariser (:func:`kernelfit.regularisers.penalty_matrix`).
    lam : float, default 0
        Regularisation weight per pixel (the objective is ``‖Xk − b‖²/n + lam·‖Lk‖²``).
    nonneg : bool, default False
        Constrain every kernel coefficient to be ``≥ 0``.
    total : float, optional
        Constrain the kernel to sum to ``total`` (e.g. 1.0 for a flux-preserving kernel).
        With ``nonneg`` it must be ``≥ 0``.
    max_iter : int, optional
        Cap on the active-set iterations; default ``3·p``.

    Returns
    -------
    ConstrainedSolution
        Coefficients on the active set are exactly 0 and the sum equals ``total`` to rounding
        (``≤ 1e-10`` relative).

    Raises
    ------
    ValueError
        For a malformed parameter (named in the message) or infeasible constraints.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import SufficientStatistics
    >>> s = SufficientStatistics(np.eye(4), np.array([1.0, -2.0, 3.0, 0.5]), 20.0, 100, (2, 2))
    >>> sol = solve_quadratic(s, nonneg=True)
    >>> sol.kernel
    array([[1. , 0. ],
           [3. , 0.5]])
    >>> sol.active.tolist()
    [[False, True], [False, False]]
    >>> float(solve_quadratic(s, nonneg=True, total=1.0).kernel.sum())
    1.0
    """
    A, c = system_matrix(stats, penalty, lam)
    p = len(c)
    if not isinstance(nonneg, (bool, np.bool_)):
        raise ValueError(f"nonneg={nonneg!r} must be True or False")
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, numbers.Real) \
                or not np.isfinite(total):
            raise ValueError(f"total={total!r} must be a finite number or None")
        total = float(total)
        if nonneg and total < 0:
            raise ValueError(f"total={total!r}: non-negative coefficients cannot sum to a "
                             "negative number; use total >= 0 or nonneg=False")
    if max_iter is None:
        max_iter = 3 * p
    elif isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) \
            or max_iter < 0:
        raise ValueError(f"max_iter={max_iter!r} must be a non-negative integer or None")

    if not nonneg:
        kernel, nu, ok, message = _solve_unbounded(A, c, total)
        return ConstrainedSolution(kernel.reshape(stats.shape), None, 0, ok, message, nu)
    if total == 0.0:
        # Non-negative numbers summing to zero are all zero: the feasible set is one point.
        kernel = np.zeros(stats.shape)
        return ConstrainedSolution(kernel, np.ones(stats.shape, bool), 0, True,
                                   "total=0 with nonneg=True: the only feasible kernel is 0",
                                   _zero_kernel_multiplier(c))
    result = _ActiveSet(A, c, total, int(max_iter)).run()
    kernel, passive, iterations, converged, message, nu = result
    return ConstrainedSolution(kernel.reshape(stats.shape), ~passive.reshape(stats.shape),
                               iterations, converged, message, nu)


def system_matrix(stats: SufficientStatistics, penalty, lam):
    """``(A, c)`` with ``A = G + n·lam·penalty`` as dense arrays, after checking the inputs.

    Raises ``ValueError`` naming ``stats``, ``penalty`` or ``lam`` when one is malformed.
    """
    if not isinstance(stats, SufficientStatistics):
        raise ValueError(f"stats must be a SufficientStatistics, not {type(stats).__name__}")
    G = np.asarray(stats.gram, dtype=np.float64)
    c = np.asarray(stats.rhs, dtype=np.float64)
    p = len(c)
    if G.shape != (p, p) or p != stats.shape[0] * stats.shape[1]:
        raise ValueError(f"stats: gram {G.shape} and rhs ({p},) do not fit kernel shape "
                         f"{stats.shape}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0 \
            or not np.isfinite(lam):
        raise ValueError(f"lam={lam!r} must be a finite number >= 0")
    A = G
    if penalty is not None and lam > 0:
        A = G + (float(lam) * stats.n_used) * dense_penalty(penalty, p)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(c))):
        raise ValueError("stats contain NaN or inf; check a and b for huge values")
    return A, c


def dense_penalty(penalty, p: int) -> np.ndarray:
    """``penalty`` as a dense symmetric ``(p, p)`` float array, or a ``ValueError``."""
    P = penalty.toarray() if hasattr(penalty, "toarray") else np.asarray(penalty, float)
    if P.shape != (p, p):
        raise ValueError(f"penalty has shape {P.shape}; expected ({p}, {p}) for this kernel")
    if not np.all(np.isfinite(P)):
        raise ValueError("penalty contains NaN or inf")
    # LᵀL is symmetric by construction; tolerate rounding, not a wrong matrix.
    if not np.allclose(P, P.T, rtol=0, atol=1e-12 * max(np.abs(P).max(), 1e-300)):
        raise ValueError("penalty must be symmetric (LᵀL of a regulariser)")
    return P


def _solve_unbounded(A, c, total):
    """Cholesky solution, with the sum constraint's closed form when ``total`` is given."""
    p = len(c)
    ones = np.ones(p)
    try:
        factor = scipy.linalg.cho_factor(A, lower=False, check_finite=False)
        singular = _pivot_ratio(factor[0]) < _dependence_limit(p)
    except np.linalg.LinAlgError:
        singular = True
    if not singular:
        y_c = scipy.linalg.cho_solve(factor, c, check_finite=False)
        if total is None:
            return y_c, None, True, ""
        y_1 = scipy.linalg.cho_solve(factor, ones, check_finite=False)
        nu = (y_c.sum() - total) / y_1.sum()
        k = y_c - nu * y_1
        # Rounding leaves Σk − total at ~1e-16·Σ|k|; spread the remainder evenly.
        k += (total - k.sum()) / p
        return k, float(nu), True, ""
    # A is (numerically) singular: the minimiser is not unique.  Take the minimum-norm one
    # through the (bordered) KKT matrix and say so.
    message = ("the system matrix is singular: the kernel is not determined by the data; "
               "the minimum-norm solution is returned; use lam > 0 with a penalty")
    if total is None:
        k = scipy.linalg.lstsq(A, c)[0]
        return k, None, False, message
    K = np.block([[A, ones[:, None]], [ones[None, :], np.zeros((1, 1))]])
    sol = scipy.linalg.lstsq(K, np.r_[c, total])[0]
    k = sol[:p] + (total - sol[:p].sum()) / p
    return k, float(sol[p]), False, message


def _zero_kernel_multiplier(c):
    # At k = 0 with 1ᵀk = 0 every ν ≥ max(c) makes μ = −c + ν ≥ 0; report the smallest.
    return float(c.max())


def _dependence_limit(p: int) -> float:
    # A coefficient whose column of X is this close to the span of the others (squared sine
    # of the angle, ρ²/A_jj) would lose ~11 of 16 digits: treat it as linearly dependent.
    return 100.0 * p * _EPS


def _pivot_ratio(R) -> float:
    """Smallest squared pivot of an upper Cholesky factor relative to its diagonal entry of A."""
    d = np.diag(R) ** 2
    col = np.sum(np.triu(R) ** 2, axis=0)   # = diag(A)
    return float(np.min(d / np.maximum(col, np.finfo(float).tiny)))


class _ActiveSet:
    """Lawson–Hanson on the Gram form, with an optional equality ``Σk = total``.

    Invariant at the top of the outer loop: ``x`` is feasible (``x ≥ 0``, sum = total) and is
    the exact minimiser over the passive set ``F`` (coefficients outside ``F`` are 0).  The
    dual ``w = c − A x − ν·1`` (= −μ) is 0 on ``F``; a coefficient outside ``F`` with
    ``w_j > 0`` would lower the objective by moving up from 0, so the largest such ``w_j``
    enters ``F``.  If the new passive solution ``z`` has coefficients ``≤ 0``, the inner loop
    moves from ``x`` towards ``z`` until the first one reaches 0 and drops every coefficient
    that got there, then solves again.
    """

    def __init__(self, A, c, total, max_iter):
        self.A, self.c, self.total, self.max_iter = A, c, total, max_iter
        self.p = len(c)
        self.a_max = float(np.abs(A).max())
        self.order: list[int] = []      # passive coefficients, in factor order
        self.R = np.zeros((0, 0))       # upper Cholesky factor of A[order][:, order]
        self.iterations = 0

    # --- the passive-set system ------------------------------------------------------------
    def _append(self, j) -> bool:
        """Add ``j`` to the factor; False (and no change) if its column is dependent."""
        A, m = self.A, len(self.order)
        a_jj = A[j, j]
        if not a_jj > 0:
            return False
        if m:
            r = scipy.linalg.solve_triangular(self.R, A[self.order, j], trans="T",
                                              check_finite=False)
            rho2 = a_jj - r @ r
        else:
            r, rho2 = np.zeros(0), a_jj
        if not rho2 > _dependence_limit(self.p) * a_jj:
            return False
        R = np.zeros((m + 1, m + 1))
        R[:m, :m] = self.R
        R[:m, m] = r
        R[m, m] = np.sqrt(rho2)
        self.R = R
        self.order.append(j)
        return True

    def _remove(self, leaving):
        """Drop the coefficients in ``leaving`` from the passive set and its factor.

        ``R`` is the triangular factor of a QR decomposition ``I·R`` of ``R`` itself, and
        ``RᵀR = A_FF``; deleting a column from that QR decomposition (Givens rotations,
        ``O(|F|²)``) gives the factor of ``A_FF`` without that row and column.
        """
        for pos in sorted((self.order.index(j) for j in leaving), reverse=True):
            m = len(self.order)
            if m == 1:
                self.R = np.zeros((0, 0))
            else:
                _, R = scipy.linalg.qr_delete(np.eye(m), self.R, pos, 1, which="col",
                                              check_finite=False)
                self.R = np.ascontiguousarray(R[:m - 1])
            del self.order[pos]

    def _solve_passive(self):
        """Minimiser over the passive set (with the sum constraint): ``(z_F, ν)``."""
        self.iterations += 1
        idx = np.array(self.order)
        y_c = scipy.linalg.cho_solve((self.R, False), self.c[idx], check_finite=False)
        if self.total is None:
            return y_c, 0.0
        y_1 = scipy.linalg.cho_solve((self.R, False), np.ones(len(idx)), check_finite=False)
        nu = (y_c.sum() - self.total) / y_1.sum()
        return y_c - nu * y_1, float(nu)

    # --- the iteration ---------------------------------------------------------------------
    def _start(self):
        """Feasible start: 0 without a sum; else the best single coefficient holding it all."""
        x = np.zeros(self.p)
        if self.total is None:
            return x, 0.0
        t = self.total
        diag = np.diag(self.A)
        objective = np.where(diag > 0, t * t * diag - 2 * t * self.c, np.inf)
        for j in np.argsort(objective, kind="stable"):
            if np.isfinite(objective[j]) and self._append(int(j)):
                x[j] = t
                return x, float(self.c[j] - diag[j] * t)
        raise ValueError("stats: the Gram matrix has no positive diagonal entry; "
                         "the images carry no signal")

    def _tolerance(self, x, nu):
        # The dual w = c − Ax − ν is a difference of terms of size |c|, |A||x| and |ν|;
        # rounding in the passive solve and in the product leaves errors of a few p·eps of
        # the largest, so only w_j above 10·p·eps·scale counts as a real descent direction.
        scale = max(np.abs(self.c).max(), self.a_max * np.abs(x).sum(), abs(nu))
        return 10.0 * self.p * _EPS * scale

    def run(self):
        A, c, p = self.A, self.c, self.p
        x, nu = self._start()
        passive = np.zeros(p, bool)
        passive[self.order] = True
        blocked = np.zeros(p, bool)     # refused entry since the passive set last changed
        message, converged, capped = "", True, False
        while not capped:
            w = c - A @ x - nu      # x is exactly 0 off the passive set
            tol = self._tolerance(x, nu)
            candidates = ~passive & ~blocked & (w > tol)
            if not candidates.any():
                if (blocked & (w > tol)).any():
                    converged = False
                    message = ("stopped with coefficients that would lower the objective but "
                               "are numerically dependent on the others (singular Gram "
                               "matrix); use lam > 0 with a penalty")
                break
            if self.iterations >= self.max_iter:
                capped = True
                break
            j = int(np.argmax(np.where(candidates, w, -np.inf)))
            if not self._append(j):
                blocked[j] = True
                continue
            passive[j] = True
            entering = j
            while True:
                z_f, nu_new = self._solve_passive()
                idx = np.array(self.order)
                if np.all(z_f > 0):
                    x[:] = 0.0
                    x[idx] = z_f
                    nu = nu_new
                    blocked[:] = False
                    break
                if entering is not None and z_f[-1] <= 0:
                    # The entering coefficient (last in the factor) would not move up from
                    # 0: its w_j > tol was rounding.  Undo the entry (x and ν stay) and
                    # refuse it until the passive set changes.
                    self._remove({entering})
                    passive[entering] = False
                    blocked[entering] = True
                    break
                # Move from x towards z until the first coefficient reaches 0, drop every
                # coefficient that is then at 0, and solve again on the smaller set.
                x_f = x[idx]
                bad = z_f <= 0
                steps = x_f[bad] / (x_f[bad] - z_f[bad])
                alpha = float(np.min(steps))
                x_f = x_f + alpha * (z_f - x_f)
                leaving = idx[bad][steps <= alpha].tolist() + idx[x_f <= 0].tolist()
                x[idx] = x_f
                x[leaving] = 0.0
                passive[leaving] = False
                self._remove(set(leaving))
                entering = None
                blocked[:] = False
                if not self.order:
                    # Only without a sum constraint (a positive sum keeps one coefficient).
                    nu = 0.0
                    break
                if self.iterations >= self.max_iter:
                    capped = True
                    break
        if capped:
            converged = False
            message = (f"the active-set method hit its iteration cap (max_iter="
                       f"{self.max_iter}) before meeting the optimality conditions; the "
                       "kernel is feasible but not optimal")
        if self.total is not None:
            # Every passive coefficient is > 0 and the rest are exactly 0, so scaling by a
            # factor 1 + O(eps) fixes the sum's rounding without touching either property.
            s = x.sum()
            if s > 0:
                x *= self.total / s
        return x, passive, self.iterations, converged, message, (
            None if self.total is None else nu)
