"""Automatic lam: GCV and the discrepancy principle against brute-force dense computations."""

import numpy as np
import pytest
import scipy.ndimage
from numpy.lib.stride_tricks import sliding_window_view

from kernelfit.core.forward import convolve
from kernelfit.solvers.regularisers import penalty_matrix
from kernelfit.select.direct import LambdaChoice, RegularisationPath, choose_lambda, solve_at
from kernelfit.stats.compute import statistics

PENALTIES = ["ridge", "gradient", "laplacian"]
SMOOTH_3x3 = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0


def im2col(a, shape):
    """Explicit design matrix of 'valid' convolution: ``X @ k.ravel() == convolve2d(a, k)``."""
    kh, kw = shape
    return sliding_window_view(a, shape)[:, :, ::-1, ::-1].reshape(-1, kh * kw)


def small_problem(seed, noise=0.1):
    """20×20 image, 3×3 smooth kernel: explicit X and b, and the statistics."""
    rng = np.random.default_rng(seed)
    a = rng.random((20, 20))
    X = im2col(a, (3, 3))
    b = X @ SMOOTH_3x3.ravel() + noise * rng.normal(size=X.shape[0])
    return X, b, statistics(a, b.reshape(18, 18), (3, 3))


def hat_matrix(X, P, lam):
    n = X.shape[0]
    return X @ np.linalg.solve(X.T @ X + n * lam * P, X.T)


def brute_gcv(X, b, P, lam):
    n = len(b)
    H = hat_matrix(X, P, lam)
    r = b - H @ b
    return n * (r @ r) / (n - np.trace(H)) ** 2


def brute_loo(X, b, P, lam):
    """Exact leave-one-out mean squared error of the linear smoother with penalty n·lam·P."""
    H = hat_matrix(X, P, lam)
    e = b - H @ b
    return np.mean((e / (1 - np.diag(H))) ** 2)


@pytest.mark.parametrize("name", PENALTIES)
def test_gcv_scores_equal_brute_force(name):
    X, b, stats = small_problem(0)
    P = penalty_matrix(name, (3, 3))
    lams = [1e-5, 1e-3, 3e-2, 1.0, 30.0]
    choice = choose_lambda(stats, P, lams=lams)
    reference = [brute_gcv(X, b, P.toarray(), lam) for lam in lams]
    # Both are exact formulas; the eigen route and the dense 324×324 hat matrix differ by
    # rounding (~1e-14 measured), so 1e-8 relative is a safe bound.
    assert np.allclose(choice.scores, reference, rtol=1e-8, atol=0)
    assert choice.criterion == "gcv" and np.array_equal(choice.lams, lams)
    # With explicit lams the choice is the best of them.
    assert choice.lam == lams[int(np.argmin(reference))]
    H = hat_matrix(X, P.toarray(), choice.lam)
    assert np.isclose(choice.edf, np.trace(H), rtol=1e-10)
    r = b - H @ b
    assert np.isclose(choice.rss, r @ r, rtol=1e-8)


@pytest.mark.parametrize("name", PENALTIES)
def test_path_kernel_equals_direct_solve(name):
    _, _, stats = small_problem(1)
    P = penalty_matrix(name, (3, 3))
    path = RegularisationPath(stats, P)
    for lam in [0.0, 1e-4, 1e-2, 1.0, 1e3]:
        # Eigen route vs one Cholesky solve of a well-conditioned 9×9 system: ~1e-14.
        k = solve_at(stats, P, lam)
        assert np.allclose(path.kernel(lam), k, rtol=0, atol=1e-10 * np.abs(k).max())
        rss = stats.btb - 2 * k.ravel() @ stats.rhs + k.ravel() @ stats.gram @ k.ravel()
        assert np.isclose(path.rss(lam), rss, rtol=1e-9)


def test_loo_shortcut_equals_refitting():
    # The check below relies on e_i/(1 − H_ii) being the exact leave-one-out residual of a
    # linear smoother with a fixed penalty matrix; confirm it by refitting n times.
    X, b, _ = small_problem(2)
    P = penalty_matrix("gradient", (3, 3)).toarray()
    n, lam = len(b), 1e-3
    errors = []
    for i in range(n):
        keep = np.arange(n) != i
        k = np.linalg.solve(X[keep].T @ X[keep] + n * lam * P, X[keep].T @ b[keep])
        errors.append(b[i] - X[i] @ k)
    # Both are exact; rounding of 324 small solves: ~1e-13 relative.
    assert np.isclose(np.mean(np.square(errors)), brute_loo(X, b, P, lam), rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", PENALTIES)
def test_gcv_choice_is_close_to_leave_one_out(name, seed):
    X, b, stats = small_problem(seed, noise=0.1)
    P = penalty_matrix(name, (3, 3))
    choice = choose_lambda(stats, P)
    fine = np.geomspace(choice.lams[0], choice.lams[-1], 240)
    loo = np.array([brute_loo(X, b, P.toarray(), lam) for lam in fine])
    best = fine[np.argmin(loo)]
    # GCV is leave-one-out with every H_ii replaced by their mean; on this problem the two
    # minimisers agree to ~10 % (measured 0.94-1.05 over seeds 0-9), so a factor 3 is a loose
    # bound.  At higher noise the LOO curve can be flat near its minimum; the λ factor then
    # means little, and the LOO value below is the criterion that matters.
    assert 1 / 3 <= choice.lam / best <= 3
    assert brute_loo(X, b, P.toarray(), choice.lam) <= 1.1 * loo.min()


def gaussian_kernel(size, sigma):
    h = size // 2
    y, x = np.mgrid[-h:h + 1, -h:h + 1]
    k = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    return k / k.sum()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", PENALTIES)
def test_gcv_kernel_error_near_hindsight_best(name, seed):
    # An 11×11 kernel window around a σ = 1.5 Gaussian, on a 64² random image lightly
    # smoothed (0.5 px), noise at half of b's standard deviation: regularisation matters
    # (least squares is 1.2-2.2× worse than the best lam).
    rng = np.random.default_rng(seed)
    a = scipy.ndimage.gaussian_filter(rng.random((64, 64)), 0.5)
    k = gaussian_kernel(11, 1.5)
    b = convolve(a, k, boundary="valid")
    b = b + 0.5 * b.std() * rng.normal(size=b.shape)
    stats = statistics(a, b, (11, 11))
    P = penalty_matrix(name, (11, 11))
    choice = choose_lambda(stats, P)
    path = RegularisationPath(stats, P)

    def err(lam):
        return np.linalg.norm(path.kernel(lam) - k) / np.linalg.norm(k)

    errors = np.array([err(lam) for lam in np.geomspace(choice.lams[0], choice.lams[-1], 400)])
    # Measured over seeds 0-19: worst ratio 1.16 (ridge 1.12, gradient 1.16, laplacian 1.12).
    assert err(choice.lam) <= 1.3 * errors.min()
    assert err(0.0) > 1.1 * errors.min()   # the case is one where lam matters
    assert choice.message == ""


@pytest.mark.parametrize("name", PENALTIES)
def test_discrepancy_principle_hits_its_target(name):
    rng = np.random.default_rng(5)
    a = rng.random((48, 48))
    k = gaussian_kernel(7, 1.2)
    sigma = 0.05
    b = convolve(a, k, boundary="valid") + sigma * rng.normal(size=(42, 42))
    stats = statistics(a, b, (7, 7))
    P = penalty_matrix(name, (7, 7))
    choice = choose_lambda(stats, P, noise_std=sigma)
    assert choice.criterion == "discrepancy" and choice.message == ""
    target = stats.n_used * sigma ** 2
    kernel = solve_at(stats, P, choice.lam)
    residual = b - convolve(a, kernel, boundary="valid")
    # brentq solves to ~1e-12 relative in RSS; the explicit residual adds ~1e-15: 1e-6 is
    # the stated requirement with a wide margin.
    assert abs(np.sum(residual ** 2) / target - 1) <= 1e-6
    assert abs(choice.rss / target - 1) <= 1e-6
    # RSS grows with lam: the choice is the largest lam consistent with the noise.
    path = RegularisationPath(stats, P)
    assert path.rss(choice.lam * 1.01) > target > path.rss(choice.lam / 1.01)
    # The scores are RSS/n − σ² on the grid: increasing, changing sign around the choice.
    assert np.all(np.diff(choice.scores) >= -1e-15 * sigma ** 2)
    assert choice.scores[0] < 0 < choice.scores[-1]


def test_discrepancy_without_solution_says_so():
    _, _, stats = small_problem(3, noise=0.1)
    P = penalty_matrix("ridge", (3, 3))
    low = choose_lambda(stats, P, noise_std=1e-4)
    assert "below the residual noise" in low.message
    high = choose_lambda(stats, P, noise_std=100.0)
    assert "exceeds" in high.message


def test_gcv_at_the_grid_end_says_so():
    # Noise-free data: every bit of regularisation hurts, GCV decreases towards lam = 0.
    rng = np.random.default_rng(6)
    a = rng.random((30, 30))
    b = convolve(a, rng.random((3, 3)), boundary="valid")
    stats = statistics(a, b, (3, 3))
    choice = choose_lambda(stats, penalty_matrix("ridge", (3, 3)))
    assert choice.lam == choice.lams[0] and "smallest" in choice.message


def test_default_grid_spans_every_transition():
    _, _, stats = small_problem(4)
    path = RegularisationPath(stats, penalty_matrix("laplacian", (3, 3)))
    choice = choose_lambda(stats, penalty_matrix("laplacian", (3, 3)))
    t = path.transitions()
    finite = t[np.isfinite(t)]
    assert len(choice.lams) == 60
    assert np.all(np.diff(np.log(choice.lams)) > 0)
    assert choice.lams[0] <= 1e-3 * finite.min() * (1 + 1e-12)
    assert choice.lams[-1] >= 1e3 * finite.max() * (1 - 1e-12)
    # The Laplacian leaves constants free: exactly one direction is never penalised.
    assert np.sum(np.isinf(t)) == 1
    # At the grid's ends the effective dof are within 0.1 % of p and of the null space.
    assert path.edf(choice.lams[0]) > 9 * (1 - 2e-3)
    assert path.edf(choice.lams[-1]) < 1 + 9 * 2e-3


def test_more_unknowns_than_pixels():
    # G is singular (16 pixels, 25 unknowns); G + n·lam·P is not, for any lam > 0.
    rng = np.random.default_rng(7)
    a = rng.random((8, 8))
    stats = statistics(a, rng.random((4, 4)), (5, 5))
    P = penalty_matrix("gradient", (5, 5))
    path = RegularisationPath(stats, P)
    for lam in [1e-3, 1.0]:
        k = solve_at(stats, P, lam)
        # The Cholesky solve of this (worse conditioned) system agrees to ~1e-12.
        assert np.allclose(path.kernel(lam), k, rtol=0, atol=1e-8 * np.abs(k).max())
    # A huge weight leaves only the penalty's null space: a constant kernel.
    flat = path.kernel(1e12)
    assert np.allclose(flat, flat.mean(), rtol=0, atol=1e-6 * abs(flat.mean()))
    choice = choose_lambda(stats, P)
    assert isinstance(choice, LambdaChoice) and np.isfinite(choice.lam)


def test_direction_free_in_both_is_an_error():
    # Rows alternating +1/−1 and a kernel two rows high: every footprint sums to 0, so the
    # data cannot see a constant kernel, and the gradient penalty does not penalise one.
    a = np.repeat(np.array([1.0, -1.0] * 5)[:, None], 10, axis=1)
    stats = statistics(a, np.ones((9, 9)), (2, 2))
    with pytest.raises(ValueError, match="free in both"):
        choose_lambda(stats, penalty_matrix("gradient", (2, 2)))
    # Ridge penalises every direction: fine.
    assert np.isfinite(choose_lambda(stats, penalty_matrix("ridge", (2, 2))).lam)
    with pytest.raises(ValueError, match="penalty"):
        choose_lambda(stats, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="Gram matrix is zero"):
        choose_lambda(statistics(np.zeros((10, 10)), np.ones((9, 9)), (2, 2)),
                      penalty_matrix("ridge", (2, 2)))


@pytest.mark.parametrize("kwargs,match", [
    ({"noise_std": 0.0}, "noise_std="),
    ({"noise_std": -1.0}, "noise_std="),
    ({"noise_std": float("nan")}, "noise_std="),
    ({"lams": []}, "lams="),
    ({"lams": [1.0, -1.0]}, "lams="),
    ({"lams": ["a"]}, "lams="),
])
def test_bad_parameters(kwargs, match):
    _, _, stats = small_problem(9)
    with pytest.raises(ValueError, match=match):
        choose_lambda(stats, penalty_matrix("ridge", (3, 3)), **kwargs)


def test_bad_penalty():
    _, _, stats = small_problem(10)
    with pytest.raises(ValueError, match="penalty"):
        choose_lambda(stats, None)
    with pytest.raises(ValueError, match="penalty has shape"):
        choose_lambda(stats, np.eye(4))
    with pytest.raises(ValueError, match="penalty"):
        solve_at(stats, None, 1.0)
    with pytest.raises(ValueError, match="lam="):
        solve_at(stats, np.eye(9), -1.0)
