"""Parametric kernels: the families, their fits (L2 / exact L1 / Huber) and uncertainties.

Acceptance tests of issue 4 are marked in their names (``test_acceptance_*``).
"""

import re

import numpy as np
import pytest
import scipy.integrate
import scipy.ndimage as ndi

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.models.fit_parametric import ParametricFit, fit_parametric
from kernelfit.models.parametric import Box, Disk, Elliptical, Gaussian, KernelModel, Moffat, Motion, disk_coverage, kernel_moments, make_model, segment_coverage
from kernelfit.stats.gram import SufficientStatistics
from kernelfit.stats.compute import statistics

skimage = pytest.importorskip("skimage")
from skimage import color, data, restoration  # noqa: E402


@pytest.fixture(scope="module")
def astronaut():
    return color.rgb2gray(data.astronaut())          # float64 in [0, 1], 512 x 512


@pytest.fixture(scope="module")
def white():
    # White noise makes the Gram matrix well conditioned: ideal for exact-recovery checks.
    return np.random.default_rng(11).random((72, 72))


# ---------------------------------------------------------------------------------------------
# The families
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma,truncate", [(0.7, 4.0), (1.0, 4.0), (2.37, 4.0), (3.3, 4.0),
                                            (1.6, 3.0), (0.4, 4.0)])
def test_gaussian_equals_gaussian_filter(sigma, truncate):
    a = np.random.default_rng(1).random((48, 53))
    r = int(truncate * sigma + 0.5)
    expected = ndi.gaussian_filter(a, sigma, mode="reflect", truncate=truncate)
    # Exactly gaussian_filter's support, and a larger array (zeros around it).
    for n in (2 * r + 1, 2 * r + 5):
        k = Gaussian(truncate=truncate).evaluate([sigma], (n, n))
        got = kf.convolve(a, k, boundary="reflect", center=(n // 2, n // 2))
        # Both sides sum the same products in a different order (separable passes vs one 2-D
        # sum): rounding of ~1e-16 per term on values <= 1.
        assert np.abs(got - expected).max() <= 1e-12
    # truncate=None on the (2r+1)² array is the same kernel.
    k_full = Gaussian().evaluate([sigma], (2 * r + 1, 2 * r + 1))
    assert np.allclose(k_full, Gaussian(truncate=truncate).evaluate([sigma], 2 * r + 1),
                       rtol=0, atol=1e-15)


def test_gaussian_integrated_sampling_is_the_pixel_integral():
    sigma, d = 0.45, 0.3
    k = Gaussian(sampling="integrated").evaluate([sigma], (7, 7), offset=(0.0, d))
    row = k.sum(axis=0)
    pdf = lambda x: np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))  # noqa: E731
    ref = np.array([scipy.integrate.quad(pdf, i - 3 - d - 0.5, i - 3 - d + 0.5,
                                         epsabs=1e-14)[0] for i in range(7)])
    # quad is accurate to ~1e-14; the kernel is normalised over the 7 pixels, ref too.
    assert np.allclose(row, ref / ref.sum(), rtol=0, atol=1e-12)
    assert k.shape == (7, 7) and abs(k.sum() - 1) < 1e-14


MODELS_AND_PARAMS = [
    (Gaussian(), [1.4]),
    (Gaussian(sampling="integrated"), [0.8]),
    (Gaussian(truncate=3.0), [1.2]),
    (Elliptical(), [2.6, 1.1, 30.0]),
    (Moffat(), [2.2, 2.7]),
    (Box(), [3.3, 2.4]),
    (Disk(), [2.7]),
    (Motion(), [6.3, 23.0]),
]


@pytest.mark.parametrize("model,params", MODELS_AND_PARAMS, ids=lambda v: repr(v))
def test_jacobian_matches_central_differences(model, params):
    shape, offset = (11, 13), (0.23, -0.31)
    J = model.jacobian(params, shape, offset=offset)
    full = np.r_[params, offset]
    for j in range(len(full)):
        h = 1e-6 * max(1.0, abs(full[j]))
        up, down = full.copy(), full.copy()
        up[j] += h
        down[j] -= h
        fd = (model.evaluate(up[:-2], shape, offset=up[-2:])
              - model.evaluate(down[:-2], shape, offset=down[-2:])) / (2 * h)
        # Central differences are accurate to ~h²·k''' + eps/h ≈ 1e-10 for smooth families;
        # the coverage families are piecewise smooth in their parameters (kinks where an edge
        # crosses a pixel boundary), so they get a looser bound.
        tol = 1e-7 if model.name in ("gaussian", "elliptical", "moffat") else 2e-4
        assert np.abs(J[j] - fd).max() <= tol, (model, j)


def test_disk_coverage_is_exact():
    y, x = np.mgrid[-6:7, -6:7].astype(float)
    for r in (0.4, 1.0, 2.5, 4.9):
        cov = disk_coverage(y, x, r)
        # Whole disk inside the grid: the areas add up to πr² to rounding.
        assert abs(cov.sum() - np.pi * r * r) <= 1e-12 * np.pi * r * r
        assert cov.min() >= 0 and cov.max() <= 1
    # One pixel against a fine midpoint rule (error ~ perimeter·step² is below 1e-6 here).
    n = 2000
    s = (np.arange(n) + 0.5) / n - 0.5
    yy, xx = np.meshgrid(2 + s, 1 + s, indexing="ij")
    brute = ((yy**2 + xx**2) <= 2.5**2).mean()
    assert abs(disk_coverage(np.array(2.0), np.array(1.0), 2.5) - brute) < 1e-3


def test_segment_coverage_is_exact():
    y, x = np.mgrid[-8:9, -8:9].astype(float)
    for length, angle in ((9.3, 23.0), (5.0, 0.0), (7.0, 90.0), (6.1, -45.0), (3.3, 137.0)):
        cov = segment_coverage(y, x, length, angle)
        assert abs(cov.sum() - length) <= 1e-12 * length
    # A horizontal blur of odd integer length is that many equal weights.
    k = Motion().evaluate([7.0, 0.0], (3, 9))
    assert np.allclose(k[1], np.r_[0, np.full(7, 1 / 7), 0], rtol=0, atol=1e-15)
    assert np.abs(k[[0, 2]]).max() == 0
    # Against a fine sampling of the rotated rectangle (|u| ≤ L/2, |v| ≤ 1/2) in one pixel.
    n = 1500
    s = (np.arange(n) + 0.5) / n - 0.5
    yy, xx = np.meshgrid(-1 + s, 2 + s, indexing="ij")   # pixel (row −1, col 2)
    t = np.radians(23.0)
    X, Y = xx, -yy                                          # displayed coordinates
    u, v = X * np.cos(t) + Y * np.sin(t), -X * np.sin(t) + Y * np.cos(t)
    brute = ((np.abs(u) <= 4.65) & (np.abs(v) <= 0.5)).mean()
    assert abs(segment_coverage(np.array(-1.0), np.array(2.0), 9.3, 23.0) - brute) < 2e-3


def test_angle_convention_is_counter_clockwise_as_displayed():
    # 45°: up and to the right, i.e. towards row 0 and the last column.
    k = Motion().evaluate([8.0, 45.0], (9, 9))
    assert k[2, 6] > 0.05 and k[6, 2] > 0.05 and k[2, 2] == 0 and k[6, 6] == 0
    e = Elliptical().evaluate([3.0, 0.8, 45.0], (9, 9))
    assert e[2, 6] > 10 * e[2, 2]


def test_box_has_fractional_edges_and_amplitude_is_the_sum():
    k = Box().evaluate({"width": 4.4, "height": 1.0, "amplitude": 2.0}, (1, 6), center=(0, 2))
    assert np.allclose(k[0], 2 * np.array([0.7, 1, 1, 1, 0.7, 0]) / 4.4, rtol=0, atol=1e-15)
    # Moved by half a pixel, the same box covers four whole pixels and two fifths.
    k = Box().evaluate({"width": 4.4, "height": 1.0, "dx": 0.5}, (1, 6), center=(0, 2))
    assert np.allclose(k[0], np.array([0.2, 1, 1, 1, 1, 0.2]) / 4.4, rtol=0, atol=1e-15)


def test_canonical_forms():
    assert np.allclose(Elliptical().canonical([1.0, 2.0, 10.0]), [2.0, 1.0, -80.0])
    assert np.allclose(Motion().canonical([5.0, 200.0]), [5.0, 20.0])
    a = Elliptical().evaluate([1.0, 2.0, 10.0], 9)
    b = Elliptical().evaluate(Elliptical().canonical([1.0, 2.0, 10.0]), 9)
    assert np.allclose(a, b, rtol=0, atol=1e-15)


def test_moments_of_a_gaussian():
    m = kernel_moments(Elliptical().evaluate([3.0, 1.5, 30.0], (31, 31)), floor=0.0)
    major, minor, angle = m.principal()
    # Moments of a Gaussian sampled at pixel centres equal the continuous ones up to aliasing
    # terms of order exp(−2π²σ²) (~1e-19 at σ = 1.5) and the tails cut by the 31x31 array.
    assert abs(np.sqrt(major) - 3.0) < 1e-3 and abs(np.sqrt(minor) - 1.5) < 1e-3
    assert abs(angle - 30.0) < 0.5


# ---------------------------------------------------------------------------------------------
# Fitting: exact recovery, acceptance, uncertainty
# ---------------------------------------------------------------------------------------------

RECOVERY = [
    (Gaussian(), {"sigma": 1.37}, 11),
    (Gaussian(sampling="integrated"), {"sigma": 0.62}, 7),
    (Elliptical(), {"sigma_x": 2.1, "sigma_y": 0.9, "theta": -35.0}, 13),
    (Moffat(), {"alpha": 1.9, "beta": 2.6}, 13),
    (Disk(), {"radius": 2.65}, 9),
    (Motion(), {"length": 7.4, "angle": 61.0}, 11),
    (Box(), {"width": 3.6, "height": 5.2}, 9),
]


@pytest.mark.parametrize("model,truth,n", RECOVERY, ids=lambda v: getattr(v, "name", None))
@pytest.mark.parametrize("offset", [False, True])
def test_noise_free_exact_recovery(white, model, truth, n, offset):
    true = dict(truth, amplitude=0.9, **({"dy": 0.27, "dx": -0.18} if offset else {}))
    k = model.evaluate(true, (n, n))
    b = kf.convolve(white, k, boundary="fill")
    pair = prepare_pair(white, b, n, boundary="fill")
    fit = fit_parametric(pair, model, n, fit_offset=offset)
    assert isinstance(fit, ParametricFit) and fit.converged, fit.message
    # Noise-free: the minimum is the truth; Gauss–Newton converges quadratically, so only
    # rounding in the statistics (~1e-13 relative) limits it. 1e-7 leaves ample margin.
    for name, value in true.items():
        assert abs(fit.params[name] - value) <= 1e-7 * max(abs(value), 1.0), (name, fit.params)
    assert np.allclose(fit.kernel, k, rtol=0, atol=1e-9)
    assert fit.rss < 1e-16


def test_acceptance_astronaut_gaussian_sigma(astronaut):
    """Issue 4, (a): σ = 2.37 via gaussian_filter(reflect, truncate=4), noise 0.005, whole
    512² photo: relative σ error ≤ 3e-4."""
    rng = np.random.default_rng(0)
    b = ndi.gaussian_filter(astronaut, 2.37, mode="reflect", truncate=4.0)
    b = b + 0.005 * rng.normal(size=b.shape)
    # truncate=4 gives radius int(4·2.37 + 0.5) = 9: a 19x19 kernel holds the whole support,
    # and on it the untruncated model is the same kernel with a σ-derivative free of jumps.
    pair = prepare_pair(astronaut, b, 19, boundary="reflect", center=(9, 9))
    fit = fit_parametric(pair, "gaussian", 19, normalize=1.0)
    # The reported standard error is 1.8e-4 relative (calibrated: a 120-seed Monte-Carlo run
    # gave a spread of 1.82e-4), so 3e-4 is a 1.7-sigma bound that ~1 seed in 9 would miss;
    # seed 0 gives 1e-5.  Least squares is efficient here, so no estimator does better.
    assert abs(fit.params["sigma"] / 2.37 - 1) <= 3e-4
    assert 1.2e-4 < fit.stderr["sigma"] / 2.37 < 2.4e-4
    assert fit.converged and abs(fit.noise_std - 0.005) < 1e-4
    assert fit.info["statistics"] == "dct-reflect-symmetric"


def test_acceptance_l1_beats_dense_grid():
    """Issue 4, (b): B = TV-denoised, 8-bit camera crop; the L1-best σ against a grid of
    2,700 values of s (step 0.001) evaluated with gaussian_filter itself."""
    A = data.camera()[128:384, 128:384].astype(np.float64) / 255.0
    B = np.round(restoration.denoise_tv_chambolle(A, weight=0.1) * 255.0) / 255.0
    # The grid [0.3, 3.0) holds the optimum (≈ 1.138) with a wide margin on both sides.
    grid = 0.3 + 0.001 * np.arange(2700)
    l1 = np.array([np.abs(ndi.gaussian_filter(A, s, mode="reflect", truncate=4.0) - B).sum()
                   for s in grid])
    # 25x25 holds gaussian_filter's support for every σ < 3.0 (radius ≤ 12).
    pair = prepare_pair(A, B, 25, boundary="reflect", center=(12, 12))
    fit = fit_parametric(pair, Gaussian(truncate=4.0), 25, loss="l1", normalize=1.0)
    sigma = fit.params["sigma"]
    ours = np.abs(ndi.gaussian_filter(A, sigma, mode="reflect", truncate=4.0) - B).sum()
    assert ours <= l1.min() * (1 + 1e-9)
    assert abs(sigma - grid[np.argmin(l1)]) <= 0.002
    # The fit's own objective (FFT convolution) agrees with gaussian_filter's to rounding.
    assert abs(fit.objective - ours) <= 1e-10 * ours
    # The L1 answer is not the L2 one: the question's point (B only looks blurred).
    l2 = fit_parametric(pair, Gaussian(truncate=4.0), 25, normalize=1.0)
    assert abs(l2.params["sigma"] - sigma) > 0.1
    assert fit.stderr["sigma"] > 0 and fit.converged


NOISY = [
    (Elliptical(), {"sigma_x": 2.6, "sigma_y": 1.1, "theta": 30.0}, 17),
    (Moffat(), {"alpha": 2.5, "beta": 3.0}, 21),
    (Disk(), {"radius": 3.4}, 9),
    (Motion(), {"length": 11.0, "angle": 23.0}, 15),
    (Box(), {"width": 5.3, "height": 3.7}, 9),
]


@pytest.mark.parametrize("model,truth,n", NOISY, ids=lambda v: getattr(v, "name", None))
def test_acceptance_families_from_noisy_photo(astronaut, model, truth, n):
    """Issue 4, (c): parameters within 1 % (angles 0.5°) from a 384² photo, noise 0.003."""
    a = astronaut[64:448, 64:448]
    rng = np.random.default_rng(3)
    b = kf.convolve(a, model.evaluate(truth, n), boundary="reflect")
    b = b + 0.003 * rng.normal(size=b.shape)
    fit = fit_parametric(prepare_pair(a, b, n, boundary="reflect"), model, n, normalize=1.0)
    assert fit.converged, fit.message
    for name, value in truth.items():
        if name in model.angle_params:
            assert abs(fit.params[name] - value) <= 0.5
        else:
            assert abs(fit.params[name] / value - 1) <= 0.01
        # Measured errors are 1e-5–2e-3 relative, a few standard errors at most.
        assert abs(fit.params[name] - value) <= 5 * fit.stderr[name] + 1e-12


def test_acceptance_stderr_matches_monte_carlo(astronaut):
    """Issue 4, (d): the L2 standard error of σ̂ against the spread of 200 noisy trials."""
    a = astronaut[200:296, 200:296]
    shape = (9, 9)
    op = kf.KernelOperator(a, shape, boundary="valid")
    b0 = op.forward(Gaussian().evaluate([1.5], shape))
    s0 = statistics(op.extended, b0, shape)
    # G depends on a only; each trial changes only c = Xᵀb (one correlation) and bᵀb.
    assert np.allclose(op.adjoint(b0).ravel(), s0.rhs, rtol=1e-12, atol=0)
    rng = np.random.default_rng(5)
    sigmas, stderrs = [], []
    for _ in range(200):
        b = b0 + 0.02 * rng.normal(size=b0.shape)
        s = SufficientStatistics(s0.gram, op.adjoint(b).ravel(), float(np.sum(b * b)), b.size,
                                 shape)
        fit = fit_parametric(s, "gaussian", shape, normalize=1.0)
        sigmas.append(fit.params["sigma"])
        stderrs.append(fit.stderr["sigma"])
    # The sample std of 200 draws is itself uncertain by 1/sqrt(2·199) = 5 %: 20 % is 4σ.
    ratio = np.std(sigmas, ddof=1) / np.mean(stderrs)
    assert 0.8 <= ratio <= 1.2, ratio
    assert abs(np.mean(sigmas) - 1.5) < 3 * np.std(sigmas) / np.sqrt(200)


# ---------------------------------------------------------------------------------------------
# The symmetric 'reflect' path (statistics from two DCTs)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_shape,shape", [((40, 37), (9, 9)), ((23, 30), (7, 11)),
                                               ((12, 15), (31, 29)), ((64, 64), (1, 5))])
def test_reflect_symmetric_statistics_equal_the_projected_gram(image_shape, shape):
    from kernelfit.models.fit_parametric import _reflect_symmetric_statistics

    rng = np.random.default_rng(13)
    a, b = rng.random(image_shape), rng.random(image_shape)
    kh, kw = shape
    cy, cx = kh // 2, kw // 2
    pair = prepare_pair(a, b, shape, boundary="reflect", center=(cy, cx))
    M, v, btb = _reflect_symmetric_statistics(pair, shape)
    full = statistics(pair.extended, pair.b_used, shape, method="im2col")
    # Q maps a quadrant (offsets ≥ 0) to the symmetric kernel; the DCT path must give QᵀGQ
    # and Qᵀc.  Both are sums of ~N·p products; 1e-12 of the largest entry is ample.  The
    # third case has a kernel more than twice the image (repeated reflections).
    qy, qx = kh - cy, kw - cx
    Q = np.zeros((kh * kw, qy * qx))
    for i in range(kh):
        for j in range(kw):
            Q[i * kw + j, abs(i - cy) * qx + abs(j - cx)] = 1.0
    G, c = Q.T @ full.gram @ Q, Q.T @ full.rhs
    assert np.abs(M - G).max() <= 1e-12 * np.abs(G).max()
    assert np.abs(v - c).max() <= 1e-12 * np.abs(c).max()
    assert np.isclose(btb, full.btb, rtol=1e-14)


def test_reflect_path_gives_the_full_statistics_answer(astronaut):
    a = astronaut[:160, 200:330]
    rng = np.random.default_rng(6)
    b = ndi.gaussian_filter(a, 1.9, mode="reflect") + 0.004 * rng.normal(size=a.shape)
    pair = prepare_pair(a, b, 17, boundary="reflect", center=(8, 8))
    for model in ("gaussian", "moffat", "disk", "box"):
        fast = fit_parametric(pair, model, 17)
        assert fast.info["statistics"] == "dct-reflect-symmetric"
        stats = statistics(pair.extended, pair.b_used, (17, 17))
        slow = fit_parametric(stats, model, 17, (8, 8))
        assert slow.info["statistics"] == "gram"
        for name in fast.params:
            # Same optimum of the same objective; both stop at ~1e-12 relative steps.
            assert abs(fast.params[name] - slow.params[name]) <= 1e-7 * max(
                abs(slow.params[name]), 1.0), (model, name)
            assert np.isclose(fast.stderr[name], slow.stderr[name], rtol=1e-6, atol=0)
        assert np.isclose(fast.rss, slow.rss, rtol=1e-9)
    # A mask or an offset leaves the DCT path.
    mask = np.ones(a.shape, bool)
    mask[5, 5] = False
    masked = prepare_pair(a, b, 17, boundary="reflect", center=(8, 8), mask=mask)
    assert fit_parametric(masked, "gaussian", 17).info["statistics"] == "gram"
    assert fit_parametric(pair, "gaussian", 17, fit_offset=True).info["statistics"] == "gram"


def test_wrong_symmetry_claim_falls_back(white):
    class Lopsided(KernelModel):          # claims symmetry it does not have
        name, param_names, symmetric = "lopsided", ("s",), True

        def profile(self, params, y, x):
            return np.exp(-0.5 * (x * x + y * y) / params[0] ** 2) * (1.0 + 0.3 * (x > 0))

        def bounds(self, shape):
            return [(0.2, 20.0)]

        def start(self, moments, shape):
            return [1.0]

    k = Lopsided().evaluate([1.3], 9)
    b = kf.convolve(white, k, boundary="reflect", center=(4, 4))
    fit = fit_parametric(prepare_pair(white, b, 9, boundary="reflect", center=(4, 4)),
                         Lopsided(), 9, normalize=1.0)
    assert fit.info["statistics"] == "gram" and abs(fit.params["s"] - 1.3) < 1e-7


# ---------------------------------------------------------------------------------------------
# Robust losses
# ---------------------------------------------------------------------------------------------

def test_robust_losses_resist_outliers(astronaut):
    a = astronaut[100:228, 150:278]
    rng = np.random.default_rng(8)
    b = ndi.gaussian_filter(a, 1.6, mode="reflect", truncate=4.0)
    b = b + 0.003 * rng.normal(size=b.shape)
    bad = rng.random(b.shape) < 0.05                  # 5 % of the pixels replaced
    b[bad] = rng.random(bad.sum())
    pair = prepare_pair(a, b, 15, boundary="reflect", center=(7, 7))
    l2 = fit_parametric(pair, "gaussian", 15, normalize=1.0)
    l1 = fit_parametric(pair, "gaussian", 15, loss="l1", normalize=1.0)
    hub = fit_parametric(pair, "gaussian", 15, loss="huber", f_scale=0.01, normalize=1.0)
    assert abs(l2.params["sigma"] - 1.6) > 0.05      # least squares is dragged away
    assert abs(l1.params["sigma"] - 1.6) < 0.01 and abs(hub.params["sigma"] - 1.6) < 0.01
    for fit in (l1, hub):
        assert fit.converged and abs(fit.params["sigma"] - 1.6) < 5 * fit.stderr["sigma"]
    # Objectives are what they say: Σ|r| and Σρ(r).
    r = (kf.convolve(a, l1.kernel, boundary="reflect", center=(7, 7)) - b).ravel()
    assert np.isclose(l1.objective, np.abs(r).sum(), rtol=1e-10)
    r = (kf.convolve(a, hub.kernel, boundary="reflect", center=(7, 7)) - b).ravel()
    rho = np.where(np.abs(r) <= 0.01, 0.5 * r * r, 0.01 * np.abs(r) - 0.5e-4)
    assert np.isclose(hub.objective, rho.sum(), rtol=1e-10)


def test_l1_several_parameters_and_its_stderr(astronaut):
    a = astronaut[150:278, 150:278]
    rng = np.random.default_rng(9)
    truth = [2.0, 1.2, -20.0]
    b = kf.convolve(a, Elliptical().evaluate(truth, 13), boundary="reflect")
    b = b + 0.01 * rng.normal(size=b.shape)
    pair = prepare_pair(a, b, 13, boundary="reflect")
    l2 = fit_parametric(pair, "elliptical", 13, normalize=1.0)
    l1 = fit_parametric(pair, "elliptical", 13, loss="l1", normalize=1.0)
    assert l1.converged, l1.message
    # The L1 polish never returns a point worse than the IRLS/L2 points it started from.
    r2 = np.abs(kf.convolve(a, l2.kernel, boundary="reflect") - b).sum()
    assert l1.objective <= r2
    # With Gaussian noise the median's asymptotic variance is π/2 times the mean's, so the
    # L1 standard errors are sqrt(π/2) = 1.25 times the L2 ones; the density estimate at 0
    # is accurate to a few per cent with 16k residuals.
    for name in ("sigma_x", "sigma_y", "theta"):
        assert 1.1 < l1.stderr[name] / l2.stderr[name] < 1.4
        assert abs(l1.params[name] - truth[["sigma_x", "sigma_y", "theta"].index(name)]) \
            < 5 * l1.stderr[name]


# ---------------------------------------------------------------------------------------------
# Several pairs, statistics input, options, user models, errors
# ---------------------------------------------------------------------------------------------

def test_pairs_share_parameters_and_statistics_input_agrees(astronaut):
    rng = np.random.default_rng(4)
    pairs = []
    for y0 in (0, 200):
        a = astronaut[y0:y0 + 96, 100:196]
        b = ndi.gaussian_filter(a, 1.3, mode="nearest") + 0.002 * rng.normal(size=a.shape)
        pairs.append(prepare_pair(a, b, 11, boundary="nearest", center=(5, 5)))
    both = fit_parametric(pairs, "gaussian", 11)
    stats = sum(statistics(p.extended, p.b_used, (11, 11)) for p in pairs)
    from_stats = fit_parametric(stats, "gaussian", 11, (5, 5))
    assert abs(both.params["sigma"] - from_stats.params["sigma"]) < 1e-9
    assert both.n_used == 2 * 96 * 96
    single = fit_parametric(pairs[0], "gaussian", 11)
    assert both.stderr["sigma"] < single.stderr["sigma"]      # more data, smaller error


def test_fixed_and_free_amplitude(white):
    k = Gaussian().evaluate([1.2], 9, amplitude=2.0)
    b = kf.convolve(white, k, boundary="wrap")
    pair = prepare_pair(white, b, 9, boundary="wrap")
    free = fit_parametric(pair, "gaussian", 9)
    assert abs(free.params["amplitude"] - 2.0) < 1e-9 and "amplitude" in free.free
    fixed = fit_parametric(pair, "gaussian", 9, normalize=2.0)
    assert fixed.free == ("sigma",) and fixed.stderr["amplitude"] == 0.0
    assert abs(fixed.kernel.sum() - 2.0) < 1e-12


def test_user_model_subclass(white):
    class Cauchy(KernelModel):
        name, param_names = "cauchy", ("gamma",)

        def profile(self, params, y, x):
            return 1.0 / (1.0 + (x * x + y * y) / params[0] ** 2)

        def bounds(self, shape):
            return [(0.05, 50.0)]

    k = Cauchy().evaluate([1.7], 11)
    pair = prepare_pair(white, kf.convolve(white, k), 11, boundary="fill")
    with pytest.raises(NotImplementedError, match="x0"):
        fit_parametric(pair, Cauchy(), 11, normalize=1.0)
    fit = fit_parametric(pair, Cauchy(), 11, normalize=1.0, x0={"gamma": 1.0})
    assert abs(fit.params["gamma"] - 1.7) < 1e-6      # numerical derivatives: ~1e-10 error


def test_x0_sequence_and_n_refine(white):
    k = Disk().evaluate([2.2], 9)
    pair = prepare_pair(white, kf.convolve(white, k), 9, boundary="fill")
    fit = fit_parametric(pair, "disk", 9, normalize=1.0, x0=[2.0])
    assert abs(fit.params["radius"] - 2.2) < 1e-7 and fit.info["n_candidates"] == 1
    fit = fit_parametric(pair, "disk", 9, normalize=1.0, n_refine=5)
    assert len(fit.info["starts"]) == 5 and abs(fit.params["radius"] - 2.2) < 1e-7


def test_errors(white):
    pair = prepare_pair(white, white, 5, boundary="fill")
    with pytest.raises(ValueError, match="loss="):
        fit_parametric(pair, "gaussian", 5, loss="l3")
    with pytest.raises(ValueError, match="f_scale="):
        fit_parametric(pair, "gaussian", 5, loss="huber", f_scale=0)
    with pytest.raises(ValueError, match="normalize="):
        fit_parametric(pair, "gaussian", 5, normalize=0.0)
    with pytest.raises(ValueError, match="model="):
        fit_parametric(pair, "lorentz", 5)
    with pytest.raises(ValueError, match="shape="):
        fit_parametric(pair, "gaussian", 7)
    with pytest.raises(ValueError, match="center="):
        fit_parametric(pair, "gaussian", 5, (1, 1))
    with pytest.raises(ValueError, match="x0"):
        fit_parametric(pair, "gaussian", 5, x0={"radius": 1.0})
    with pytest.raises(ValueError, match="n_refine="):
        fit_parametric(pair, "gaussian", 5, n_refine=0)
    stats = statistics(pair.extended, pair.b_used, (5, 5))
    with pytest.raises(ValueError, match="robust loss"):
        fit_parametric(stats, "gaussian", 5, loss="l1")
    with pytest.raises(TypeError, match="pairs"):
        fit_parametric([white], "gaussian", 5)
    with pytest.raises(ValueError, match="truncate="):
        Gaussian(truncate=-1)
    with pytest.raises(ValueError, match="sampling="):
        Gaussian(sampling="area")
    with pytest.raises(ValueError, match="params="):
        Gaussian().evaluate([1.0, 2.0], 5)
    with pytest.raises(ValueError, match="sigma="):
        Gaussian().evaluate([-1.0], 5)
    with pytest.raises(ValueError, match="offset="):
        Gaussian().evaluate([1.0], 5, offset=(1.0,))
    with pytest.raises(ValueError, match="options"):
        make_model(Gaussian(), truncate=4.0)
    with pytest.raises(ValueError, match="does not take"):
        make_model("disk", truncate=4.0)


def test_bound_is_reported_not_silent(white):
    # A flat 5x5 blur: the Gaussian comes closest as σ → ∞, so σ runs to its upper bound.
    b = kf.convolve(white, np.full((5, 5), 1 / 25), boundary="wrap")
    pair = prepare_pair(white, b, 5, boundary="wrap")
    fit = fit_parametric(pair, "gaussian", 5, normalize=1.0)
    assert not fit.converged and "bound" in fit.message


# ---------------------------------------------------------------------------------------------
# Command line (issue 4, scope 6): parameters ± stderr, and seed 002 in the demo
# ---------------------------------------------------------------------------------------------

def test_acceptance_cli_l1_prints_parameters_with_stderr(tmp_path, capsys):
    """Issue 4: `kernelfit estimate … --model gaussian --loss l1` prints params ± stderr."""
    import imageio.v3 as iio

    from kernelfit import cli

    # An 8-bit PNG pair, as a user would have it: a camera crop blurred by gaussian_filter
    # (σ = 1.8, reflect, truncate 4), seeded noise of 1 grey level, rounded to 8 bits.
    a = data.camera()[128:384, 128:384]
    rng = np.random.default_rng(4)
    b = ndi.gaussian_filter(a.astype(np.float64), 1.8, mode="reflect", truncate=4.0)
    b = np.clip(np.rint(b + rng.normal(size=b.shape)), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    iio.imwrite(tmp_path / "b.png", b)
    status = cli.main([
        "estimate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--shape", "21",
        "--boundary", "reflect", "--model", "gaussian", "--truncate", "4", "--loss", "l1",
        "--normalize", "1", "-o", str(tmp_path / "k.npy")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "method 'parametric-l1'" in out
    found = re.search(r"sigma = ([0-9.eE+-]+) ± ([0-9.eE+-]+)", out)
    assert found, out
    sigma, stderr = float(found.group(1)), float(found.group(2))
    # 65,536 pixels with noise ~1 grey level determine σ to a few 1e-4 (the stderr printed);
    # 0.01 is a loose bound that any sign/orientation/scale mistake would break by far.
    assert abs(sigma - 1.8) < 0.01, out
    assert 0 < stderr < 0.01, out
    assert abs(sigma - 1.8) < 6 * stderr + 1e-3, out


def test_acceptance_demo_has_seed_002(capsys):
    """Issue 4: `kernelfit demo` includes seed 002, and its L1 σ has the smaller L1 objective."""
    from kernelfit import cli

    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Seed 002" in out, out
    l1 = re.search(r"loss='l1': sigma = (\S+) +sum\|g\*A - B\| = (\S+)", out)
    l2 = re.search(r"loss='l2': sigma = (\S+) +sum\|g\*A - B\| = (\S+)", out)
    assert l1 and l2, out
    # The demo's closing sentence ("the L1 fit has the smaller L1 objective") is printed
    # unconditionally; check it holds, and that the two answers differ visibly.
    assert float(l1.group(2)) <= float(l2.group(2))
    assert abs(float(l1.group(1)) - float(l2.group(1))) > 0.05


def _beads(model_kernel, seed, n=160, noise=2e-3):
    """Beads: sparse bright points on a flat field, blurred by the kernel, with white noise."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((n, n)) < 0.02, rng.uniform(0.5, 1.0, (n, n)), 0.0)
    b = kf.convolve(a, model_kernel, mode="valid")
    return a, b + noise * rng.normal(size=b.shape)


@pytest.mark.parametrize("model, params, fwhm", [
    # Gaussian: FWHM = 2√(2 ln 2)·σ; Moffat: FWHM = 2α√(2^(1/β) − 1).
    ("gaussian", {"sigma": 1.7}, 2 * np.sqrt(2 * np.log(2)) * 1.7),
    ("moffat", {"alpha": 2.5, "beta": 3.0}, 2 * 2.5 * np.sqrt(2 ** (1 / 3.0) - 1)),
])
def test_fwhm_matches_the_analytic_value_within_its_standard_error(model, params, fwhm):
    """On simulated beads the fitted FWHM is the analytic one to within 3 of its standard
    errors (the delta-method error from fit.cov), and the error is not absurdly large."""
    from kernelfit.models.parametric import make_model

    true = make_model(model).evaluate(tuple(params.values()), (15, 15))
    a, b = _beads(true / true.sum(), seed=11)
    fit = kf.estimate(a, b, 15, model=model)
    assert abs(fit.params["fwhm"] - fwhm) <= 3 * fit.stderr["fwhm"]
    assert 0 < fit.stderr["fwhm"] < 0.05 * fwhm
    assert "fwhm" in fit.summary() and " dy = " not in fit.summary()   # dy was not fitted


def test_elliptical_widths_angle_and_ellipticity():
    from kernelfit.fit.physical import physical_parameters

    values, errors = physical_parameters(
        "elliptical", {"sigma_x": 1.0, "sigma_y": 2.0, "theta": 10.0},
        np.diag([1e-4, 4e-4, 1.0]), ["sigma_x", "sigma_y", "theta"])
    c = 2 * np.sqrt(2 * np.log(2))
    assert values["fwhm_major"] == pytest.approx(2 * c) and values["fwhm_minor"] == pytest.approx(c)
    assert values["ellipticity"] == pytest.approx(0.5) and values["angle"] == pytest.approx(100.0)
    assert errors["fwhm_major"] == pytest.approx(c * 0.02, rel=1e-5)
    assert errors["angle"] == pytest.approx(1.0, rel=1e-5)
    # ellipticity 1 − σx/σy: ∂/∂σx = −1/2, ∂/∂σy = σx/σy² = 1/4
    assert errors["ellipticity"] == pytest.approx(np.hypot(0.5 * 1e-2, 0.25 * 2e-2), rel=1e-5)
