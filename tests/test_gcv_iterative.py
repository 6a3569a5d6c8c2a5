"""The matrix-free λ choice: GCV by multi-shift CG and Hutchinson's trace, against the exact
(direct-path) GCV, and the final solve at the chosen λ."""

import numpy as np
import pytest

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.select.direct import RegularisationPath
from kernelfit.select.gcv_iterative import gcv_curve_iterative
from kernelfit.solvers.iterative import solve_iterative
from kernelfit.solvers.regularisers import penalty_matrix
from kernelfit.stats.compute import statistics


def blurred(seed, size=48, shape=(9, 9), noise=0.05):
    """A random image, a smooth positive kernel and noise of ``noise``·std(b)."""
    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    y, x = np.mgrid[:shape[0], :shape[1]] - (np.array(shape)[:, None, None] - 1) / 2
    k = np.exp(-0.5 * (x * x / 4.0 + y * y / 2.0))
    k /= k.sum()
    clean = kf.convolve(a, k, boundary="fill")
    return a, clean + noise * clean.std() * rng.normal(size=a.shape), k


def exact_path(a, b, shape, reg):
    pair = prepare_pair(a, b, shape, boundary="fill")
    stats = statistics(pair.extended, pair.b_used, shape)
    return RegularisationPath(stats, penalty_matrix(reg, shape)), stats.n_used


def test_effective_parameters_never_exceed_p():
    # 7×7 kernel (p = 49) on 24² pixels: at tiny λ, H̃ is nearly a projection of rank
    # p − 1, and this seed's single probe overshoots it (the raw estimate is above 49).
    rng = np.random.default_rng(0)
    a = rng.random((24, 24))
    b = kf.convolve(a, rng.random((7, 7))) + 0.05 * rng.normal(size=a.shape)
    pair = prepare_pair(a, b, 7, boundary="fill")
    curve = gcv_curve_iterative([pair], 7, "gradient", lams=np.logspace(-12, -2, 6),
                                probes=1, seed=0)
    assert "clipped" in curve.message
    assert np.all(curve.trace <= 49) and np.all(curve.trace >= 1)
    assert "effective parameters" in curve.message and "p=49" in curve.message


def test_effective_parameters_never_exceed_the_pixels():
    # p = 225 > n = 144: tr H <= n.  Through kf.estimate, as a user gets it.
    rng = np.random.default_rng(1)
    a = rng.random((12, 12))
    b = kf.convolve(a, rng.random((15, 15))) + 0.05 * rng.normal(size=a.shape)
    fit = kf.estimate(a, b, 15, boundary="fill", reg="gradient", method="iterative")
    selection = fit.info["lambda_selection"]
    assert selection["edf"] <= min(144, 225)


@pytest.mark.parametrize("reg", ["gradient", "laplacian", "ridge"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_free_choice_matches_exact_gcv(reg, seed):
    """On the same grid the matrix-free GCV picks the exact GCV's λ, or one whose exact score
    is as good within what one probe can resolve.

    One Rademacher probe estimates tr H̃ with a standard error of at most sqrt(2·tr H̃)
    (its eigenvalues lie in [0, 1]); GCV's relative error is 2·δtr/(n − tr), so at 3 standard
    errors at each of the two λ the matrix-free choice may prefer a λ whose exact score is
    higher by up to 6·(sd₁ + sd₂)/(n − tr), plus the scores' settling tolerance (1e-3, twice).
    """
    a, b, k = blurred(seed)
    fit = kf.estimate(a, b, k.shape, boundary="fill", reg=reg, method="iterative")
    selection = fit.info["lambda_selection"]
    grid = np.asarray(selection["lams"])
    path, n = exact_path(a, b, k.shape, reg)
    exact = path.gcv(grid)
    chosen = int(np.argmin(np.abs(grid - fit.lam)))
    best = int(np.argmin(exact))
    offset = 0.0 if reg == "ridge" else 1.0
    sd = [np.sqrt(2 * (float(path.edf(grid[i])) - offset)) for i in (chosen, best)]
    allowed = 6 * sum(sd) / (n - float(path.edf(grid[best]))) + 2e-3
    assert exact[chosen] <= exact[best] * (1 + allowed), (grid[chosen], grid[best])
    # The reported effective parameters are the estimate's: within 4 standard errors.
    assert abs(selection["edf"] - float(path.edf(fit.lam))) <= 4 * sd[0] + 1e-6


@pytest.mark.parametrize("reg", ["gradient", "laplacian"])
def test_final_solve_runs_at_the_chosen_lam(reg):
    """The kernel returned is the exact minimiser at the chosen λ, and the solve that made it
    ran (a warm start from the GCV run is polished, not returned after 0 iterations)."""
    a, b, k = blurred(3)
    fit = kf.estimate(a, b, k.shape, boundary="fill", reg=reg, method="iterative")
    assert fit.lam in fit.info["lambda_selection"]["lams"]
    assert fit.info["iterations"] > 0
    assert f"after {fit.info['iterations']} iterations" in fit.message
    path, _ = exact_path(a, b, k.shape, reg)
    exact = path.kernel(fit.lam).reshape(k.shape)
    # tol = 1e-5 on the residual and on the objective's last-quarter decrease: the kernel
    # is then within ~1e-4 of the minimiser here (measured 1e-6 .. 1e-5).
    assert np.linalg.norm(fit.kernel - exact) <= 1e-4 * np.linalg.norm(exact)


def test_warm_start_at_the_minimiser_still_iterates():
    a, b, k = blurred(4)
    pair = prepare_pair(a, b, k.shape, boundary="fill")
    path, _ = exact_path(a, b, k.shape, "laplacian")
    exact = path.kernel(1e-4).reshape(k.shape)
    sol = solve_iterative([pair], k.shape, reg="laplacian", lam=1e-4, x0=exact, tol=1e-5)
    # The objective test needs a window of at least 10 iterations to judge.
    assert sol.converged and sol.iterations >= 10
    assert np.linalg.norm(sol.kernel - exact) <= 1e-6 * np.linalg.norm(exact)
