"""Quadratic kernel problems under general linear constraints, solved on the Gram matrix.

The problem, in the notation of :mod:`kernelfit.stats`::

    minimise   ½ kᵀ A k − kᵀ c          A = G + n·lam·P   (positive definite)
    subject to E k = e                  (equalities, e.g. kernel sums)
               C k ≥ d                  (inequalities, e.g. the kernel ≥ 0 at some positions)

(the minimiser of ``‖Xk − b‖²/n + lam·‖Lk‖²`` under the constraints).  Unlike
:mod:`kernelfit.solvers.constrained`, whose bounds act on single coefficients, every row of
``C`` may combine any coefficients: the sign of a varying kernel at a position is a linear
combination of its polynomial terms.

The method is the dual active-set method of Goldfarb and Idnani (1983).  It starts at the
unconstrained minimiser ``A⁻¹c`` and adds violated constraints one at a time, keeping the
iterate the exact minimiser over the *active set* (constraints held as equalities) with
non-negative multipliers on its inequalities; a constraint whose multiplier would turn
negative leaves the set.  Each step is exact linear algebra, so the answer is the exact
minimiser (to rounding) after finitely many steps, and a problem whose unconstrained
minimiser is feasible is answered by one Cholesky solve.

The factors: ``A = LLᵀ`` once, and a full QR decomposition ``L⁻¹N = Q [R; 0]`` of the active
constraints' normals ``N`` (columns), updated by ``scipy.linalg.qr_insert``/``qr_delete``
(``O(m²)`` for ``m`` unknowns).  With ``Q = [Q₁ Q₂]``:

* the primal step direction for a new constraint ``n`` is ``z = L⁻ᵀQ₂Q₂ᵀL⁻¹n`` (the part of
  ``A⁻¹n`` the active constraints leave free), with ``zᵀn = ‖Q₂ᵀL⁻¹n‖²``;
* the change of the active multipliers per unit of the new one is ``r = R⁻¹Q₁ᵀL⁻¹n``;
* ``K = L⁻ᵀQ₂Q₂ᵀL⁻¹ = A⁻¹ − A⁻¹N(NᵀA⁻¹N)⁻¹NᵀA⁻¹`` is the inverse of ``A`` on the subspace the
  active set leaves free: the covariance of the solution, given its active set, is
  ``σ²·K G K`` (:attr:`LinearConstraintSolution.projected_inverse`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg import lapack

from ..stats.gram import SufficientStatistics

_EPS = np.finfo(float).eps


@dataclass
class LinearConstraintSolution:
    """What :func:`solve_linearly_constrained` found.

    Attributes
    ----------
    kernel : ndarray
        The solution, shaped like ``stats.shape``.
    projected_inverse : (m, m) ndarray
        ``K``: ``A⁻¹`` restricted to the directions the active constraints leave free (see
        the module docstring); ``K G K`` is the unit-noise covariance given the active set.
    active : int ndarray
        Rows of ``C`` held as equalities at the solution.
    multipliers : ndarray
        Lagrange multipliers of the equalities (in the order of ``E``'s rows), then of the
        active inequalities (in the order of ``active``, all ``≥ 0``): ``A k − c = Eᵀν + C_activeᵀμ``.
    iterations : int
        Constraints added or dropped.
    converged : bool
        False when the iteration cap was hit; ``message`` says so.
    message : str
        Empty when all is well.
    """

    kernel: np.ndarray
    projected_inverse: np.ndarray
    active: np.ndarray
    multipliers: np.ndarray
    iterations: int
    converged: bool
    message: str


def solve_linearly_constrained(stats: SufficientStatistics, *, penalty=None, lam: float = 0.0,
                               equalities=None, inequalities=None,
                               max_iter: int | None = None) -> LinearConstraintSolution:
    """Minimise ``½kᵀAk − kᵀc``, ``A = G + n·lam·penalty``, subject to ``Ek = e``, ``Ck ≥ d``.

    Parameters
    ----------
    stats : SufficientStatistics
        ``G``, ``c`` and ``n``; the unknowns are ``stats.rhs``'s entries (any ``stats.shape``).
    penalty : (m, m) array or sparse matrix, optional
        ``LᵀL`` of a quadratic regulariser.
    lam : float, default 0
        Regularisation weight per pixel.
    equalities : (E, e), optional
        ``E`` a ``(q, m)`` array or sparse matrix of independent rows, ``e`` a ``(q,)`` array.
    inequalities : (C, d), optional
        ``C`` a ``(r, m)`` array or sparse matrix (rows may be redundant), ``d`` ``(r,)``.
    max_iter : int, optional
        Cap on the constraints added or dropped; default ``3·m + q``.

    Returns
    -------
    LinearConstraintSolution
        Feasible to rounding: ``Ek − e`` and the violations of ``Ck ≥ d`` are below
        ``1e3·eps`` times the size of the terms of each row.

    Raises
    ------
    ValueError
        When ``A`` is not (numerically) positive definite (the data do not determine the
        kernel: add a penalty with ``lam > 0``), for malformed constraints, or when the
        constraints cannot all hold.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import SufficientStatistics
    >>> s = SufficientStatistics(np.eye(3), np.array([1.0, -3.0, 0.5]), 11.0, 10, (1, 3))
    >>> sol = solve_linearly_constrained(s, inequalities=(np.array([[1.0, 1.0, 0.0]]), [0.0]),
    ...                                  equalities=(np.ones((1, 3)), [1.0]))
    >>> np.round(sol.kernel, 12)        # k0 + k1 >= 0 and sum 1: the constraint is active
    array([[ 2., -2.,  1.]])
    >>> sol.active.tolist()
    [0]
    """
    A, c = _system(stats, penalty, lam)
    m = len(c)
    E, e = _constraints(equalities, m, "equalities")
    C, d = _constraints(inequalities, m, "inequalities")
    if max_iter is None:
        max_iter = 3 * m + E.shape[0]
    elif isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) \
            or max_iter < 0:
        raise ValueError(f"max_iter={max_iter!r} must be a non-negative integer or None")
    method = _DualActiveSet(A, c, int(max_iter))
    for i in range(E.shape[0]):
        method.add(_row(E, i), float(e[i]), equality=True, label=-1)
    converged = method.add_violated(C, d)
    message = "" if converged else (
        f"the active-set method hit its iteration cap (max_iter={max_iter}) with constraints "
        "still violated; the kernel is not feasible")
    return LinearConstraintSolution(
        method.x.reshape(stats.shape), method.projected_inverse(),
        np.array([label for label in method.labels if label >= 0], dtype=int),
        np.array(method.u) * np.array(method.signs), method.iterations, converged, message)


def _system(stats, penalty, lam):
    """Dense ``A = G + n·lam·penalty`` and ``c``, after checking them."""
    if not isinstance(stats, SufficientStatistics):
        raise ValueError(f"stats must be a SufficientStatistics, not {type(stats).__name__}")
    G = np.asarray(stats.gram, dtype=np.float64)
    c = np.asarray(stats.rhs, dtype=np.float64)
    m = len(c)
    if G.shape != (m, m) or m != int(np.prod(stats.shape)):
        raise ValueError(f"stats: gram {G.shape} and rhs ({m},) do not fit shape {stats.shape}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0 \
            or not np.isfinite(lam):
        raise ValueError(f"lam={lam!r} must be a finite number >= 0")
    A = G
    if penalty is not None and lam > 0:
        P = penalty.toarray() if hasattr(penalty, "toarray") else np.asarray(penalty, float)
        if P.shape != (m, m):
            raise ValueError(f"penalty has shape {P.shape}; expected ({m}, {m})")
        A = G + (float(lam) * stats.n_used) * P
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(c))):
        raise ValueError("stats contain NaN or inf; check a and b for huge values")
    return A, c


def _constraints(pair, m, name):
    """``(M, v)`` as a CSR matrix with ``m`` columns and a float vector (empty for None)."""
    if pair is None:
        return sp.csr_matrix((0, m)), np.zeros(0)
    try:
        M, v = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (matrix, vector), not {pair!r}") from None
    M = sp.csr_matrix(M, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64).ravel()
    if M.shape[1] != m or M.shape[0] != len(v):
        raise ValueError(f"{name}: matrix {M.shape} and vector ({len(v)},) do not fit "
                         f"{m} unknowns")
    if not (np.all(np.isfinite(M.data)) and np.all(np.isfinite(v))):
        raise ValueError(f"{name} contain NaN or inf")
    return M, v


def _row(M, i) -> np.ndarray:
    return M.getrow(i).toarray().ravel()


class _DualActiveSet:
    """Goldfarb–Idnani on a dense ``A`` (see the module docstring for the factors).

    Invariant after every :meth:`add`: ``x`` minimises the objective subject to the active
    constraints held as equalities, with ``u ≥ 0`` on the active inequalities.
    """

    def __init__(self, A, c, max_iter):
        m = len(c)
        factor, rcond = _cholesky(A)
        if factor is None or rcond < 100.0 * m * _EPS:
            raise ValueError(
                "the normal equations are (numerically) singular: these images do not "
                "determine the kernel, so a constrained minimiser is not unique; add a "
                "regulariser (reg='ridge' with lam > 0) or use a smaller shape or degree")
        self.L, self.max_iter, self.iterations = factor, max_iter, 0
        self.x = scipy.linalg.cho_solve((factor, True), c, check_finite=False)
        self.Q, self.R = np.eye(m), np.zeros((m, 0))
        self.u: list[float] = []          # multipliers of the active constraints
        self.labels: list[int] = []       # row of C of each active constraint; −1: equality
        self.signs: list[float] = []      # −1 for an equality added as −n·x ≥ −b

    def _lower_solve(self, v, trans=False):
        return scipy.linalg.solve_triangular(self.L, v, lower=True, trans="T" if trans else "N",
                                             check_finite=False)

    def add(self, n, b, *, equality, label):
        """Make ``n·x ≥ b`` (``= b`` for an equality) active, dropping blocking ones."""
        sign = 1.0
        if equality and n @ self.x - b > 0:
            n, b, sign = -n, -b, -1.0   # approach the equality from its violated side
        u_new = 0.0
        while True:
            s = n @ self.x - b
            v = self._lower_solve(n)
            d = self.Q.T @ v
            q = len(self.u)
            d2 = d[q:]
            dd = float(d2 @ d2)
            r = scipy.linalg.solve_triangular(self.R[:q, :q], d[:q], check_finite=False) \
                if q else np.zeros(0)
            t1, leaving = self._partial_step(r)
            # n in the span of the active normals (to rounding): the primal cannot move.
            t2 = -s / dd if dd > 1e3 * _EPS * float(v @ v) else np.inf
            t = min(t1, max(t2, 0.0))
            if not np.isfinite(t):
                raise ValueError("the constraints cannot all hold (they are infeasible), "
                                 "e.g. nonneg=True with a negative normalize=")
            self.iterations += 1
            if np.isfinite(t2):
                self.x = self.x + t * self._lower_solve(self.Q[:, q:] @ d2, trans=True)
            self.u = [u_j - t * r_j for u_j, r_j in zip(self.u, r)]
            u_new += t
            if t == max(t2, 0.0) and np.isfinite(t2):
                self.Q, self.R = scipy.linalg.qr_insert(self.Q, self.R, v, q, which="col",
                                                        check_finite=False)
                self.u.append(u_new)
                self.labels.append(label)
                self.signs.append(sign)
                return
            self._drop(leaving)
            if self.iterations >= self.max_iter:
                return

    def _partial_step(self, r):
        """Largest dual step keeping the active inequalities' multipliers ≥ 0, and which one
        reaches 0 first (``inf``, None when none limits it)."""
        best, leaving = np.inf, None
        for j, (u_j, r_j, label) in enumerate(zip(self.u, r, self.labels)):
            if label >= 0 and r_j > 0 and max(u_j, 0.0) / r_j < best:
                best, leaving = max(u_j, 0.0) / r_j, j
        return best, leaving

    def _drop(self, j):
        self.Q, self.R = scipy.linalg.qr_delete(self.Q, self.R, j, 1, which="col",
                                                check_finite=False)
        del self.u[j], self.labels[j], self.signs[j]

    def add_violated(self, C, d) -> bool:
        """Add the most violated inequality until none is; False if the cap stopped it."""
        magnitude = abs(C)
        while True:
            values = C @ self.x
            # Each row's value is a sum of terms of size |C||x| and d: rounding leaves a
            # few eps of those, so only a violation beyond 1e3·eps of them is real.
            tol = 1e3 * _EPS * (magnitude @ np.abs(self.x) + np.abs(d))
            violation = np.where(values - d < -tol, values - d, 0.0)
            violation[[label for label in self.labels if label >= 0]] = 0.0
            if not violation.any():
                return True
            if self.iterations >= self.max_iter:
                return False
            i = int(np.argmin(violation))
            self.add(_row(C, i), float(d[i]), equality=False, label=i)

    def projected_inverse(self) -> np.ndarray:
        W = self._lower_solve(self.Q[:, len(self.u):], trans=True)
        return W @ W.T


def _cholesky(A):
    """Lower Cholesky factor of ``A`` and LAPACK's reciprocal condition estimate."""
    try:
        factor = scipy.linalg.cholesky(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None, 0.0
    rcond, info = lapack.dpocon(factor, np.abs(A).sum(axis=0).max(), uplo="L")
    return factor, float(rcond) if info == 0 else 0.0
