"""Constrained quadratic solver: NNLS on the Gram form, sum constraint, both together."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from kernelfit.core.forward import convolve
from kernelfit.solvers.regularisers import operator, penalty_matrix
from kernelfit.solvers.constrained import ConstrainedSolution, solve_quadratic
from kernelfit.stats.gram import SufficientStatistics
from kernelfit.stats.compute import statistics


def im2col(a, shape):
    """Explicit design matrix of 'valid' convolution: ``X @ k.ravel() == convolve2d(a, k)``."""
    kh, kw = shape
    return sliding_window_view(a, shape)[:, :, ::-1, ::-1].reshape(-1, kh * kw)


def explicit_problem(seed, image=30, shape=(5, 5), noise=0.3, offset=0.5):
    """A random image, a kernel of mixed sign, noisy 'valid' data: its X, b and statistics."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(image, image)) + offset
    X = im2col(a, shape)
    k = rng.normal(size=shape)
    b = X @ k.ravel() + noise * rng.normal(size=X.shape[0])
    stats = statistics(a, b.reshape(image - shape[0] + 1, image - shape[1] + 1), shape)
    return X, b, stats


def kkt_violation(stats, sol, *, penalty=None, lam=0.0):
    """Largest violation of the KKT conditions, relative to the size of the gradient's terms.

    With ``A k − c + ν·1 = μ``: ``μ = 0`` on the passive set and ``μ ≥ 0`` on the active one.
    """
    A = stats.gram + (0 if penalty is None else lam * stats.n_used * penalty.toarray())
    k = sol.kernel.ravel()
    nu = sol.multiplier or 0.0
    mu = A @ k - stats.rhs + nu
    scale = max(np.abs(stats.rhs).max(), np.abs(A).max() * np.abs(k).sum(), abs(nu))
    if sol.active is None:
        return np.abs(mu).max() / scale
    active = sol.active.ravel()
    return max(np.abs(mu[~active]).max(initial=0.0), (-mu[active]).max(initial=0.0)) / scale


# The Gram form of a well-conditioned 25-unknown problem loses at most ~cond(G)·eps ≈ 1e-13
# of the kernel against scipy's nnls working on X directly; 1e-8 leaves a wide margin while
# any wrong active set would show up at the size of the noise (~1e-2).
AGREE = 1e-8
# Backward-stable Cholesky solves leave the KKT residual at a few p·eps of its terms
# (~1e-14 here); 1e-10 is far below any real violation, which would be O(1) relative.
KKT = 1e-10


@pytest.mark.parametrize("seed", range(6))
def test_nonneg_matches_scipy_nnls(seed):
    X, b, stats = explicit_problem(seed)
    sol = solve_quadratic(stats, nonneg=True)
    reference, _ = scipy.optimize.nnls(X, b)
    assert sol.converged and sol.message == ""
    assert np.abs(sol.kernel.ravel() - reference).max() <= AGREE * np.abs(reference).max()
    # Both the constraint and the active set are exact: held coefficients are exactly 0.
    assert np.all(sol.kernel >= 0) and np.all(sol.kernel[sol.active] == 0)
    assert 0 < sol.active.sum() < sol.active.size   # the constraint really binds here
    assert np.array_equal(sol.active.ravel(), reference == 0)
    assert kkt_violation(stats, sol) <= KKT
    assert 1 <= sol.iterations <= 3 * stats.rhs.size


@pytest.mark.parametrize("name", ["ridge", "gradient", "laplacian"])
def test_nonneg_with_penalty_matches_stacked_nnls(name):
    # ‖Xk − b‖²/n + lam‖Lk‖² is n⁻¹ times the least squares of [X; √(n·lam)·L] k ≈ [b; 0].
    X, b, stats = explicit_problem(7)
    lam = 0.05
    L = operator(name, stats.shape).toarray()
    stacked = np.vstack([X, np.sqrt(lam * stats.n_used) * L])
    reference, _ = scipy.optimize.nnls(stacked, np.r_[b, np.zeros(len(L))])
    P = penalty_matrix(name, stats.shape)
    sol = solve_quadratic(stats, penalty=P, lam=lam, nonneg=True)
    assert np.abs(sol.kernel.ravel() - reference).max() <= AGREE * np.abs(reference).max()
    assert kkt_violation(stats, sol, penalty=P, lam=lam) <= KKT


def test_unconstrained_is_the_normal_equations():
    X, b, stats = explicit_problem(8)
    sol = solve_quadratic(stats)
    reference = np.linalg.lstsq(X, b, rcond=None)[0]
    # Normal equations square cond(X) (~10 here): agreement to ~1e-14 relative.
    assert np.allclose(sol.kernel.ravel(), reference, rtol=0, atol=1e-10)
    assert sol.active is None and sol.iterations == 0 and sol.multiplier is None


@pytest.mark.parametrize("total", [1.0, -2.5, 0.0])
def test_total_only_matches_explicit_kkt_solve(total):
    X, b, stats = explicit_problem(9)
    P = penalty_matrix("gradient", stats.shape)
    lam = 0.01
    A = stats.gram + lam * stats.n_used * P.toarray()
    p = len(stats.rhs)
    K = np.block([[A, np.ones((p, 1))], [np.ones((1, p)), np.zeros((1, 1))]])
    reference = np.linalg.solve(K, np.r_[stats.rhs, total])
    sol = solve_quadratic(stats, penalty=P, lam=lam, total=total)
    # Two solves with one well-conditioned factor against a dense LU: ~1e-13 relative.
    assert np.allclose(sol.kernel.ravel(), reference[:p], rtol=0, atol=1e-9)
    assert np.isclose(sol.multiplier, reference[p], rtol=1e-9)
    assert abs(sol.kernel.sum() - total) <= 1e-10 * max(1.0, np.abs(sol.kernel).sum())
    assert kkt_violation(stats, sol, penalty=P, lam=lam) <= KKT


def brute_force_nonneg_total(A, c, total):
    """Exact minimiser of kᵀAk − 2kᵀc over k ≥ 0, Σk = total, by trying every support."""
    p = len(c)
    best, best_value = None, np.inf
    for r in range(1, p + 1):
        for support in itertools.combinations(range(p), r):
            s = list(support)
            K = np.block([[A[np.ix_(s, s)], np.ones((r, 1))], [np.ones((1, r)), np.zeros((1, 1))]])
            z = np.linalg.solve(K, np.r_[c[s], total])[:r]
            if np.all(z >= 0):
                k = np.zeros(p)
                k[s] = z
                value = k @ A @ k - 2 * k @ c
                if value < best_value:
                    best, best_value = k, value
    return best


@pytest.mark.parametrize("seed", range(3))
def test_nonneg_and_total_brute_force(seed):
    X, b, stats = explicit_problem(20 + seed, image=12, shape=(3, 3), noise=0.5)
    total = 1.0
    sol = solve_quadratic(stats, nonneg=True, total=total)
    exact = brute_force_nonneg_total(stats.gram, stats.rhs, total)
    # Enumeration solves the same KKT systems densely: agreement to rounding (~1e-14).
    assert np.abs(sol.kernel.ravel() - exact).max() <= AGREE
    assert np.all(sol.kernel >= 0) and np.all(sol.kernel[sol.active] == 0)
    assert 0 < sol.active.sum()
    assert abs(sol.kernel.sum() - total) <= 1e-10 * total
    assert kkt_violation(stats, sol) <= KKT

    # An independent general-purpose method agrees too.  SLSQP stops at ftol on the
    # objective, which leaves the kernel accurate to about √ftol·(scale): 1e-5 is safe.
    def f(k):
        return (k @ stats.gram @ k - 2 * k @ stats.rhs) / stats.n_used

    def grad(k):
        return 2 * (stats.gram @ k - stats.rhs) / stats.n_used

    p = len(stats.rhs)
    res = scipy.optimize.minimize(
        f, np.full(p, total / p), jac=grad, method="SLSQP", bounds=[(0, None)] * p,
        constraints=[{"type": "eq", "fun": lambda k: k.sum() - total,
                      "jac": lambda k: np.ones_like(k)}],
        options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    assert np.abs(sol.kernel.ravel() - res.x).max() <= 1e-5
    assert f(sol.kernel.ravel()) <= f(res.x) + 1e-12


def line_kernel(size, length, angle_deg):
    """Non-negative anti-aliased line through the centre, summing to 1."""
    k = np.zeros((size, size))
    c = (size - 1) / 2
    for t in np.linspace(-length / 2, length / 2, 400):
        y = c + t * np.sin(np.deg2rad(angle_deg))
        x = c + t * np.cos(np.deg2rad(angle_deg))
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        k[y0, x0] += (1 - fy) * (1 - fx)
        k[y0 + 1, x0] += fy * (1 - fx)
        k[y0, x0 + 1] += (1 - fy) * fx
        k[y0 + 1, x0 + 1] += fy * fx
    return k / k.sum()


def test_motion_blur_nonneg_beats_unconstrained():
    # A random image smoothed by 0.7 px is correlated like a photo, which is what makes the
    # unconstrained fit noisy (a white image conditions G so well that constraints add little).
    rng = np.random.default_rng(3)
    a = scipy.ndimage.gaussian_filter(rng.random((128, 128)), 0.7)
    k = line_kernel(9, 6, 30)
    b = convolve(a, k, boundary="valid") + 0.05 * rng.normal(size=(120, 120))
    stats = statistics(a, b, (9, 9))
    plain = solve_quadratic(stats).kernel
    nonneg = solve_quadratic(stats, nonneg=True)
    both = solve_quadratic(stats, nonneg=True, total=1.0)

    def err(x):
        return np.linalg.norm(x - k) / np.linalg.norm(k)

    # Most of the 81 coefficients are 0 in truth; fixing them removes most of the noise.
    # Measured over seeds 0-7: unconstrained 0.22-0.33, nonneg/unconstrained 0.26-0.41;
    # "clearly below" = under half.
    assert err(nonneg.kernel) < 0.5 * err(plain)
    assert err(both.kernel) < 0.5 * err(plain)
    assert nonneg.active.sum() > 40
    assert abs(both.kernel.sum() - 1.0) <= 1e-10 and np.all(both.kernel[both.active] == 0)


def test_all_zero_solution():
    # A positive image and b = −(a ⊛ positive kernel) make c = Xᵀb ≤ 0: k = 0 is optimal.
    rng = np.random.default_rng(4)
    a = rng.random((20, 20))
    b = -convolve(a, rng.random((3, 3)), boundary="valid")
    stats = statistics(a, b, (3, 3))
    sol = solve_quadratic(stats, nonneg=True)
    assert np.all(sol.kernel == 0) and np.all(sol.active)
    assert sol.iterations == 0 and sol.converged
    reference, _ = scipy.optimize.nnls(im2col(a, (3, 3)), b.ravel())
    assert np.all(reference == 0)


def test_everything_passive():
    # A strictly positive kernel, no noise: the unconstrained solution is feasible.
    rng = np.random.default_rng(5)
    a = rng.random((25, 25))
    k = 0.5 + rng.random((4, 3))
    stats = statistics(a, convolve(a, k, boundary="valid"), (4, 3))
    sol = solve_quadratic(stats, nonneg=True)
    assert not sol.active.any()
    # Noise-free recovery through the normal equations: ~cond(G)·eps ≈ 1e-12.
    assert np.allclose(sol.kernel, k, rtol=0, atol=1e-9)
    assert np.allclose(sol.kernel, solve_quadratic(stats).kernel, rtol=0, atol=1e-12)
    assert sol.iterations == k.size   # one entry per coefficient, no removals


def test_total_zero_with_nonneg_is_the_zero_kernel():
    _, _, stats = explicit_problem(10)
    sol = solve_quadratic(stats, nonneg=True, total=0.0)
    assert np.all(sol.kernel == 0) and sol.active.all() and sol.converged


def test_iteration_cap_is_reported():
    _, _, stats = explicit_problem(7)
    full = solve_quadratic(stats, nonneg=True)
    assert full.iterations > 2
    sol = solve_quadratic(stats, nonneg=True, max_iter=2)
    assert not sol.converged and "max_iter=2" in sol.message
    assert sol.iterations == 2
    # Still feasible, just not optimal.
    assert np.all(sol.kernel >= 0) and np.all(sol.kernel[sol.active] == 0)


def test_singular_gram_is_reported():
    # 4 equations, 9 unknowns: G has rank 4, the minimiser is not unique.
    rng = np.random.default_rng(12)
    a = rng.random((4, 4))
    b = rng.random((2, 2))
    stats = statistics(a, b, (3, 3))
    sol = solve_quadratic(stats)
    assert not sol.converged and "singular" in sol.message
    assert solve_quadratic(stats, penalty=sp.identity(9), lam=1e-3).converged
    # The active-set method only lets in columns independent of the passive ones, so its
    # passive systems stay regular, and it reaches the same (unique) residual as nnls.
    X = im2col(a, (3, 3))
    nonneg = solve_quadratic(stats, nonneg=True)
    reference, _ = scipy.optimize.nnls(X, b.ravel())
    residual = np.linalg.norm(X @ nonneg.kernel.ravel() - b.ravel())
    # Residual norms of size ~1: rounding of the Gram form gives ~1e-15; 1e-9 is ample.
    assert residual <= np.linalg.norm(X @ reference - b.ravel()) + 1e-9
    assert np.all(nonneg.kernel >= 0) and np.all(nonneg.kernel[nonneg.active] == 0)


def test_returns_dataclass_shapes():
    _, _, stats = explicit_problem(13, shape=(4, 6))
    sol = solve_quadratic(stats, nonneg=True)
    assert isinstance(sol, ConstrainedSolution)
    assert sol.kernel.shape == (4, 6) and sol.active.shape == (4, 6)


@pytest.mark.parametrize("kwargs,match", [
    ({"lam": -1.0}, "lam="),
    ({"lam": float("nan")}, "lam="),
    ({"lam": 0.1, "penalty": np.eye(3)}, "penalty has shape"),
    ({"total": float("inf")}, "total="),
    ({"total": "1"}, "total="),
    ({"total": -1.0, "nonneg": True}, "total=-1.0"),
    ({"nonneg": "yes"}, "nonneg="),
    ({"max_iter": -1, "nonneg": True}, "max_iter="),
])
def test_bad_parameters(kwargs, match):
    _, _, stats = explicit_problem(14, image=10, shape=(3, 3))
    with pytest.raises(ValueError, match=match):
        solve_quadratic(stats, **kwargs)


def test_bad_stats():
    with pytest.raises(ValueError, match="stats"):
        solve_quadratic(np.eye(3))
    bad = SufficientStatistics(np.eye(4), np.ones(4), 1.0, 10, (3, 3))
    with pytest.raises(ValueError, match="stats"):
        solve_quadratic(bad)
