"""Factored kernels: separable ``k = u vᵀ`` and low rank ``k = Σᵢ uᵢ vᵢᵀ = U Vᵀ``.

Fitted by alternating least squares on the sufficient statistics.  With one factor fixed the
kernel is linear in the other — ``vec(k) = (I ⊗ V) vec(U)`` in C order — so each half-step
is a small least-squares problem whose normal matrix is the Gram matrix ``G`` contracted
with the fixed factor on both sides (``O(p²·r)`` work, no pass over the images).  The fixed
factor is orthonormalised before every half-step, which keeps those systems well conditioned.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import scipy.linalg

from ..core.conventions import normalize_shape
from ._common import (
    MAX_STATISTICS_UNKNOWNS,
    PairData,
    StructuredFit,
    noise_level,
)

INITS = ("svd", "random")
# Starting point from the free least-squares kernel: exact up to this many pixels (Cholesky of
# a 1024² Gram: 0.4 Gflop), approximate (conjugate gradients) beyond; see _free_kernel.
EXACT_INIT_UNKNOWNS = 1024
CG_INIT_ITERATIONS = 50


def fit_separable(pairs, shape, center=None, *, init="svd", seed=0, tol=1e-10, maxiter=500,
                  statistics=None):
    """Fit a separable (rank-1) kernel ``k = u vᵀ`` by alternating least squares.

    Parameters
    ----------
    pairs, shape, center, init, seed, tol, maxiter, statistics :
        As in :func:`fit_lowrank` (``rank=1``).

    Returns
    -------
    StructuredFit
        ``params = {'u': (kh,), 'v': (kw,)}`` normalised so that ``‖v‖ = 1`` and the entry
        of ``v`` largest in magnitude is positive (``u`` carries the scale and the sign);
        ``stderr = {'u', 'v', 'kernel'}`` under that normalisation.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.core.forward import convolve
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((30, 30))
    >>> k = np.outer([1.0, 2.0, 1.0], [0.0, 3.0, 4.0])
    >>> fit = fit_separable([prepare_pair(a, convolve(a, k), 3, boundary="fill")], 3)
    >>> np.round(fit.params["v"], 8).tolist(), np.round(fit.params["u"], 8).tolist()
    ([0.0, 0.6, 0.8], [5.0, 10.0, 5.0])
    """
    fit = fit_lowrank(pairs, shape, center, rank=1, init=init, seed=seed, tol=tol,
                      maxiter=maxiter, statistics=statistics)
    fit.model = "separable"
    fit.params = {"u": fit.params["U"][:, 0], "v": fit.params["V"][:, 0]}
    fit.stderr = {"u": fit.stderr["U"][:, 0], "v": fit.stderr["V"][:, 0],
                  "kernel": fit.stderr["kernel"]}
    fit.info["param_order"] = ["u", "v"]
    return fit


def fit_lowrank(pairs, shape, center=None, *, rank, init="svd", seed=0, tol=1e-10,
                maxiter=500, statistics=None):
    """Fit a low-rank kernel ``k = U Vᵀ = Σᵢ uᵢ vᵢᵀ`` by alternating least squares.

    Needs the sufficient statistics, so ``kh·kw ≤ 4096`` (64×64).

    Parameters
    ----------
    pairs : list of PreparedPair
        Image pairs from :func:`kernelfit.design.prepare_pair`, one kernel shared by all.
    shape : int or (kh, kw)
        Kernel shape the pairs were prepared with.
    center : (int, int), optional
        Recorded in the result; a product of factors has no centre of its own.
    rank : int
        Number of terms, ``1 ≤ rank ≤ min(kh, kw)``.
    init : {'svd', 'random'} or ndarray, default 'svd'
        ``'svd'``: the leading right singular vectors of the free least-squares kernel
        (exact up to 1024 pixels, 50 conjugate-gradient steps beyond; ``'random'`` when the
        images do not determine it); ``'random'``: a random ``V`` from ``seed``; an array
        of shape ``shape`` (e.g. a free fit's kernel): its leading right singular vectors.
    seed : int, default 0
        Seed of ``numpy.random.default_rng`` for the random start.
    tol : float, default 1e-10
        Stop when an iteration changes the kernel by at most ``tol·‖k‖`` (Frobenius).
    maxiter : int, default 500
        Most iterations (each: one solve for ``U``, one for ``V``).
    statistics : SufficientStatistics, optional
        Sufficient statistics of exactly these pairs, when already computed (e.g. by a free
        fit); they are reused instead of computed (implies the statistics path).

    Returns
    -------
    StructuredFit
        ``params = {'U': (kh, r), 'V': (kw, r)}`` in the canonical form of the SVD of the
        fitted kernel: ``V`` has orthonormal columns, ``U`` orthogonal columns whose norms
        (the singular values) decrease, and the entry of each ``vᵢ`` largest in magnitude is
        positive.  ``stderr = {'U', 'V', 'kernel'}``: from ``σ̂²(JᵀGJ)⁻¹`` restricted to
        parameter changes that keep this form (first order), which removes the ``r²``
        directions ``(U A, V A⁻ᵀ)`` that do not change the kernel; undefined (NaN) when
        singular values tie.  ``dof = (kh + kw − r)·r``.

    Raises
    ------
    ValueError
        For ``shape`` too large for the statistics, an invalid ``rank``, ``init``, ``tol``
        or ``maxiter`` (the message names the parameter).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.core.forward import convolve
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((40, 40))
    >>> k = rng.normal(size=(5, 2)) @ rng.normal(size=(2, 6))
    >>> pair = prepare_pair(a, convolve(a, k, mode="valid"), (5, 6), boundary="valid")
    >>> fit = fit_lowrank([pair], (5, 6), rank=2)
    >>> bool(np.allclose(fit.kernel, k)), fit.params["U"].shape, fit.params["V"].shape
    (True, (5, 2), (6, 2))
    """
    started = time.perf_counter()
    shape = normalize_shape(shape)
    kh, kw = shape
    if kh * kw > MAX_STATISTICS_UNKNOWNS:
        raise ValueError(
            f"shape={shape} has {kh * kw} pixels; separable and low-rank fits need the "
            f"{kh * kw}×{kh * kw} Gram matrix, available up to {MAX_STATISTICS_UNKNOWNS} "
            "pixels (64×64)"
        )
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank={rank!r} must be an int")
    if not 1 <= rank <= min(kh, kw):
        raise ValueError(f"rank={rank!r} must lie in [1, min(kh, kw)] = [1, {min(kh, kw)}] "
                         f"for shape={shape}")
    if isinstance(init, np.ndarray):
        if init.shape != shape or not np.all(np.isfinite(init)):
            raise ValueError(f"init: a starting kernel must be finite with shape {shape}, got "
                             f"shape {init.shape}")
    elif init not in INITS:
        raise ValueError(f"init={init!r} must be one of {INITS} or a kernel-shaped array")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol={tol!r} must be a number >= 0")
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 1:
        raise ValueError(f"maxiter={maxiter!r} must be an int >= 1")
    data = PairData(pairs, shape, center, "statistics", statistics)
    r = int(rank)
    G4 = data.stats.gram.reshape(kh, kw, kh, kw)
    C = data.stats.rhs.reshape(kh, kw)

    V, init_used = _initial_right_factor(data, r, init, seed)
    kernel = np.zeros(shape)
    change, converged, iterations = np.inf, False, 0
    for iterations in range(1, maxiter + 1):
        V = _orthonormal(V)
        U = _orthonormal(_solve_left(G4, C, V))
        V = _solve_right(G4, C, U)
        new = U @ V.T
        scale = np.linalg.norm(new)
        change = np.linalg.norm(new - kernel) / scale if scale > 0 else 0.0
        kernel = new
        if change <= tol:
            converged = True
            break
    U, V = _canonical(kernel, r)
    kernel = U @ V.T
    rss = data.rss(kernel)
    n = data.n_used
    dof = float((kh + kw - r) * r)
    noise_std = noise_level(rss, n, dof)
    message = "" if converged else (
        f"alternating least squares stopped after maxiter={maxiter} iterations with a "
        f"relative change {change:.2g} > tol={tol:g}; raise maxiter or tol")
    cov_unscaled = _constrained_covariance(G4, U, V)
    if cov_unscaled is None or not np.isfinite(noise_std):
        note = ("the factors are not determined to first order (tied singular values or "
                "rank larger than the data support): no standard errors"
                if cov_unscaled is None else
                f"only {n} pixels for {dof:.0f} parameters: no noise level or standard errors")
        message = f"{message}; {note}" if message else note
        cov = None
        stderr = {"U": np.full(U.shape, np.nan), "V": np.full(V.shape, np.nan),
                  "kernel": np.full(shape, np.nan)}
    else:
        cov = noise_std**2 * cov_unscaled
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        J = _jacobian(U, V)
        pixel_var = np.sum((J @ cov) * J, axis=1)
        stderr = {"U": sd[:kh * r].reshape(kh, r), "V": sd[kh * r:].reshape(kw, r),
                  "kernel": np.sqrt(np.clip(pixel_var, 0, None)).reshape(shape)}
    return StructuredFit(
        model="lowrank", kernel=kernel, params={"U": U, "V": V}, stderr=stderr, cov=cov,
        rss=rss, n_used=n, noise_std=noise_std, dof=dof, converged=converged,
        message=message, shape=shape, center=data.center, method="statistics",
        info={"param_order": ["U", "V"], "rank": r, "iterations": iterations,
              "relative_change": float(change), "init": init_used,
              "seconds": {"total": time.perf_counter() - started}},
    )


def _initial_right_factor(data, r, init, seed):
    """``V`` (``kw × r``) to start from, and the name of the start actually used."""
    if isinstance(init, np.ndarray):
        return np.linalg.svd(init)[2][:r].T, "given"
    if init == "svd":
        free = _free_kernel(data)
        if free is not None and np.all(np.isfinite(free)) and np.any(free):
            return np.linalg.svd(free)[2][:r].T, "svd"
    rng = np.random.default_rng(seed)
    return rng.standard_normal((data.shape[1], r)), "random"


def _free_kernel(data):
    """The free least-squares kernel ``G⁻¹c``, or an approximation of it, or ``None``.

    Exact (Cholesky, ``p³/3`` flops) up to ``EXACT_INIT_UNKNOWNS`` pixels; beyond, where that
    would cost more than the whole alternating fit (23 Gflop at 64×64), conjugate gradients
    for at most ``CG_INIT_ITERATIONS`` products with ``G``: only a starting point is needed.
    """
    G, c = data.stats.gram, data.stats.rhs
    kh, kw = data.shape
    if len(c) <= EXACT_INIT_UNKNOWNS:
        try:
            factor = scipy.linalg.cho_factor(G, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        return scipy.linalg.cho_solve(factor, c).reshape(kh, kw)
    return _conjugate_gradients(G, c, CG_INIT_ITERATIONS).reshape(kh, kw)


def _conjugate_gradients(A, b, iterations):
    """At most ``iterations`` CG steps on ``A x = b`` (``A`` SPD) from ``x = 0``."""
    x, r = np.zeros_like(b), b.copy()
    d, rr = r.copy(), float(r @ r)
    stop = 1e-12 * rr
    for _ in range(iterations):
        if rr <= stop:
            break
        Ad = A @ d
        curvature = float(d @ Ad)
        if not curvature > 0:   # A singular along d: keep what we have
            break
        step = rr / curvature
        x += step * d
        r -= step * Ad
        rr, rr_old = float(r @ r), rr
        d = r + (rr / rr_old) * d
    return x


def _orthonormal(F):
    """An orthonormal basis of the columns of ``F`` (same shape; QR with signs of R ≥ 0)."""
    Q, R = np.linalg.qr(F)
    signs = np.where(np.diag(R) < 0, -1.0, 1.0)
    return Q * signs


def _solve_left(G4, C, V):
    """``U`` minimising ``‖X vec(U Vᵀ) − b‖²`` for fixed ``V``."""
    kh, r = G4.shape[0], V.shape[1]
    T = np.tensordot(G4, V, axes=([3], [0]))                    # [i, j, i', l']
    M = np.tensordot(V, T, axes=([0], [1])).transpose(1, 0, 2, 3)  # [i, l, i', l']
    return _solve_spd(M.reshape(kh * r, kh * r), (C @ V).ravel()).reshape(kh, r)


def _solve_right(G4, C, U):
    """``V`` minimising ``‖X vec(U Vᵀ) − b‖²`` for fixed ``U``."""
    kw, r = G4.shape[1], U.shape[1]
    W = _contract_first(G4, U)                                 # [l', j', i, j]
    M = np.tensordot(W, U, axes=([2], [0])).transpose(2, 3, 1, 0)  # [j, l, j', l']
    return _solve_spd(M.reshape(kw * r, kw * r), (C.T @ U).ravel()).reshape(kw, r)


def _contract_first(G4, U):
    """``W[l', j', i, j] = Σ_{i'} U[i', l'] G[i, j, i', j']``.

    ``G`` is symmetric (``G[i, j, i', j'] = G[i', j', i, j]``), so this contracts its *first*
    axis, a reshape that needs no copy of the ``p × p`` matrix (contracting the third would
    transpose it, 134 MB at 64×64, on every call).
    """
    return np.tensordot(U, G4, axes=([0], [0]))


def _solve_spd(M, rhs):
    M = 0.5 * (M + M.T)
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(M, check_finite=False), rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(M, rhs, rcond=None)[0]


def _canonical(kernel, r):
    """``(U, V)`` from the SVD of ``kernel``: ``V`` orthonormal, ``U = A·diag(s)``, and the
    largest-magnitude entry of each ``vᵢ`` positive."""
    A, s, Bt = np.linalg.svd(kernel, full_matrices=False)
    U, V = A[:, :r] * s[:r], Bt[:r].T
    flip = V[np.argmax(np.abs(V), axis=0), np.arange(r)] < 0
    return np.where(flip, -U, U), np.where(flip, -V, V)


def _jacobian(U, V):
    """``∂ vec(k) / ∂ (vec U, vec V)`` (``p × (kh + kw)·r``), all in C order."""
    (kh, r), kw = U.shape, V.shape[0]
    J = np.zeros((kh, kw, kh + kw, r))
    rows = np.arange(kh)
    cols = np.arange(kw)
    J[rows, :, rows, :] = V[None, :, :]                   # ∂k[i, j]/∂U[i, l] = V[j, l]
    J[:, cols, kh + cols, :] = U[:, None, :]                    # ∂k[i, j]/∂V[j, l] = U[i, l]
    return J.reshape(kh * kw, (kh + kw) * r)


def _hessian(G4, U, V):
    """``JᵀGJ`` for the parameters ``(vec U, vec V)``, from the same contractions as the ALS
    steps (``O(p²·r)``), never forming ``G·J``."""
    (kh, r), kw = U.shape, V.shape[0]
    TV = np.tensordot(G4, V, axes=([3], [0]))                      # [i, j, i', l']
    W = _contract_first(G4, U)                                     # [l', j', i, j]
    H_uu = np.tensordot(V, TV, axes=([0], [1])).transpose(1, 0, 2, 3).reshape(kh * r, kh * r)
    H_vv = np.tensordot(W, U, axes=([2], [0])).transpose(2, 3, 1, 0).reshape(kw * r, kw * r)
    H_uv = np.tensordot(W, V, axes=([3], [0])).transpose(2, 3, 1, 0)  # [i, l, j', l']
    H_uv = H_uv.reshape(kh * r, kw * r)
    H = np.block([[H_uu, H_uv], [H_uv.T, H_vv]])
    return 0.5 * (H + H.T)


def _constrained_covariance(G4, U, V):
    """Unit-noise covariance of ``(vec U, vec V)`` under the canonical normalisation.

    ``H = JᵀGJ`` is singular along the ``r²`` directions ``(U A, −V Aᵀ)`` that leave the
    kernel unchanged.  The normalisation ``VᵀV = I``, ``UᵀU`` diagonal fixes them; to first
    order it is ``r²`` linear constraints ``C δ = 0``, and with ``N`` a basis of their null
    space the covariance is ``N (Nᵀ H N)⁻¹ Nᵀ``.  ``None`` when that matrix is singular.
    """
    (kh, r), kw = U.shape, V.shape[0]
    H = _hessian(G4, U, V)
    q = (kh + kw) * r
    constraints = []
    for i in range(r):
        for j in range(i, r):
            # VᵀV = I:  v_iᵀ δv_j + v_jᵀ δv_i = 0   (i ≤ j)
            row = np.zeros((kh + kw, r))
            row[kh:, j] += V[:, i]
            row[kh:, i] += V[:, j]
            constraints.append(row.ravel())
            if i < j:
                # UᵀU diagonal:  u_iᵀ δu_j + u_jᵀ δu_i = 0   (i < j)
                row = np.zeros((kh + kw, r))
                row[:kh, j] += U[:, i]
                row[:kh, i] += U[:, j]
                constraints.append(row.ravel())
    N = scipy.linalg.null_space(np.array(constraints).reshape(-1, q))
    Hn = N.T @ H @ N
    eigval, eigvec = np.linalg.eigh(Hn)
    # As in the linear solves: eigenvalues under 100·n·eps of the largest are rounding.
    if eigval.size == 0 or eigval[0] <= 100 * len(eigval) * np.finfo(float).eps * eigval[-1]:
        return None
    inner = (eigvec / eigval) @ eigvec.T
    cov = N @ inner @ N.T
    return 0.5 * (cov + cov.T)
