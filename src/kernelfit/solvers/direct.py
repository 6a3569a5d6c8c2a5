"""Direct solution of the (optionally regularised) normal equations.

``(G + λ·n·LᵀL) k = c`` by Cholesky.  The objective is ``‖Xk − b‖²/n + λ‖Lk‖²``, so ``λ`` is
per pixel: the same λ means the same thing on images of different sizes.

A Cholesky factor that exists is not enough: a nearly singular ``G`` (an image too small or too
smooth for the kernel size) gives a kernel dominated by rounding noise.  The LAPACK condition
estimate decides; below the limit we fall back to an eigen-decomposition, return the
minimum-norm solution and say plainly that the kernel is not determined by the data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from ..core.diagnostics import RankDeficientWarning, user_stacklevel
from ..core.threads import dense_threads
from ..stats.gram import SufficientStatistics


@dataclass
class DirectSolution:
    """What the direct solver found.

    Attributes
    ----------
    kernel : ndarray
        Kernel-shaped solution.
    cov_unscaled : ndarray or None
        Covariance of the kernel for unit noise variance (``G⁻¹``, or ``A⁻¹GA⁻¹`` with
        ridge); ``None`` when the problem is rank-deficient.
    dof : float
        Effective number of fitted parameters, ``trace(A⁻¹G)``.
    rank : int
    rcond : float
        Reciprocal condition number estimate of the system matrix.
    trusted : bool
        False when the system is numerically singular.
    message : str
    """

    kernel: np.ndarray
    cov_unscaled: np.ndarray | None
    dof: float
    rank: int
    rcond: float
    trusted: bool
    message: str


def _rcond_limit(p: int) -> float:
    # Below this the solution may lose more than ~11 of its 16 digits to rounding.
    return 100.0 * p * np.finfo(float).eps


def solve_normal_equations(stats: SufficientStatistics, *, penalty=None,
                           lam: float = 0.0, warn: bool = True) -> DirectSolution:
    """Solve ``(G + lam·n·penalty) k = c``.

    Parameters
    ----------
    stats : SufficientStatistics
    penalty : (p, p) array or sparse matrix, optional
        ``LᵀL`` of a quadratic regulariser (:func:`kernelfit.regularisers.penalty_matrix`).
    lam : float, default 0
        Weight of the penalty per pixel (see module docstring).
    warn : bool, default True
        Whether a rank-deficient system warns.  Callers that report it themselves pass
        False (rather than silencing the warning: ``warnings.catch_warnings`` changes the
        process-wide filters, which loses other threads' warnings).

    Returns
    -------
    DirectSolution

    Warns
    -----
    RankDeficientWarning
        When the system is numerically singular.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import SufficientStatistics
    >>> s = SufficientStatistics(np.eye(4), np.arange(4.0), 14.0, 100, (2, 2))
    >>> solve_normal_equations(s).kernel
    array([[0., 1.],
           [2., 3.]])
    """
    G, c = stats.gram, stats.rhs
    p = len(c)
    regularised = penalty is not None and lam > 0
    A = G + (lam * stats.n_used) * _dense(penalty) if regularised else G
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(c))):
        raise ValueError("the statistics contain NaN or inf; check a and b for huge values")
    with dense_threads(p):   # O(p³): worth more BLAS threads only when p is large
        factor, rcond = cholesky_rcond(A)
        if factor is not None and rcond >= _rcond_limit(p):
            kernel = scipy.linalg.cho_solve((factor, False), c)
            A_inv, rank = _inverse_from_cholesky(factor), p
        else:
            kernel, A_inv, rank = _eigen_solve(A, c)
    if A_inv is None:
        message = (
            f"the normal equations are rank-deficient (numerical rank {rank} of {p} unknowns): "
            "these images do not determine the kernel; use a larger or more textured image, "
            "reg='ridge' with lam > 0, or a smaller shape"
        )
        if warn:
            warnings.warn(message, RankDeficientWarning, stacklevel=user_stacklevel())
        return DirectSolution(kernel.reshape(stats.shape), None, float(rank), rank, rcond,
                              False, message)
    with dense_threads(p):
        cov = A_inv @ G @ A_inv if regularised else A_inv
    dof = float(np.sum(A_inv * G))  # trace(A⁻¹G) for symmetric A⁻¹ and G
    return DirectSolution(kernel.reshape(stats.shape), cov, dof, p, rcond, True, "")


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def cholesky_rcond(A):
    """Upper Cholesky factor and LAPACK's reciprocal condition estimate (None, 0 if not PD)."""
    try:
        factor, _ = scipy.linalg.cho_factor(A, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None, 0.0
    anorm = np.abs(A).sum(axis=0).max()
    rcond, info = lapack.dpocon(factor, anorm, uplo="U")
    return factor, float(rcond) if info == 0 else 0.0


def _inverse_from_cholesky(factor):
    inv, info = lapack.dpotri(factor, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK dpotri failed (info={info})")
    return _symmetric_from_upper(inv)


def _symmetric_from_upper(m, block=256):
    """Copy the upper triangle onto the lower one, in cache-friendly blocks, in place."""
    p = m.shape[0]
    for i0 in range(0, p, block):
        i1 = min(p, i0 + block)
        m[i0:i1, :i0] = m[:i0, i0:i1].T
        diagonal = m[i0:i1, i0:i1]
        m[i0:i1, i0:i1] = np.triu(diagonal) + np.triu(diagonal, 1).T
    return m


def _eigen_solve(A, c):
    """Minimum-norm solution over the numerically determined subspace.

    Returns the solution, ``A⁻¹`` (``None`` when some direction of ``A`` is lost to rounding;
    the solution then ignores that direction) and the numerical rank.
    """
    eigval, eigvec = np.linalg.eigh(A)
    keep = eigval > _rcond_limit(len(c)) * max(eigval[-1], 0.0)
    coef = (eigvec[:, keep].T @ c) / eigval[keep]
    kernel = eigvec[:, keep] @ coef
    rank = int(keep.sum())
    if rank < len(c):
        return kernel, None, rank
    # Cholesky's condition estimate was pessimistic; the spectrum says the system is fine.
    return kernel, (eigvec / eigval) @ eigvec.T, rank


def solve_centred(centred, *, warn: bool = True) -> DirectSolution:
    """The least-squares kernel from :class:`~kernelfit.stats.centred.CentredStatistics`.

    ``G = Ḡ + N·x̄x̄ᵀ`` and ``c = c̄ + N·b̄·x̄``: with ``u = Ḡ⁻¹c̄`` and ``v = Ḡ⁻¹x̄`` (one
    Cholesky factor of the well-conditioned ``Ḡ``),

        ``k = u + v·(b̄ − x̄ᵀu) / (1/N + x̄ᵀv)``,   ``G⁻¹ = Ḡ⁻¹ − vvᵀ / (1/N + x̄ᵀv)``

    (Sherman–Morrison), so the mean's direction costs no digits.  The condition of ``Ḡ``
    decides whether the kernel is determined; when it is not (a constant image: ``Ḡ = 0``)
    this falls back to :func:`solve_normal_equations` on the plain statistics.
    """
    G_bar, c_bar, x_bar = centred.gram, centred.rhs, centred.mean_row
    p = len(c_bar)
    if not (np.all(np.isfinite(G_bar)) and np.all(np.isfinite(c_bar))):
        raise ValueError("the statistics contain NaN or inf; check a and b for huge values")
    factor, rcond = cholesky_rcond(G_bar)
    if factor is None or rcond < _rcond_limit(p):
        return solve_normal_equations(centred.full, warn=warn)
    solved = scipy.linalg.cho_solve((factor, False), np.column_stack([c_bar, x_bar]))
    u, v = solved[:, 0], solved[:, 1]
    denominator = 1.0 / centred.n_used + x_bar @ v
    kernel = u + v * ((centred.b_mean - x_bar @ u) / denominator)
    cov = _inverse_from_cholesky(factor) - np.outer(v, v) / denominator
    shape = centred.full.shape
    return DirectSolution(kernel.reshape(shape), cov, float(p), p, rcond, True, "")
