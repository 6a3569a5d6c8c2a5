"""The polynomial background, profiled out of the sufficient statistics (kernelfit.background).

Tolerances: noise-free recoveries are limited by rounding in the statistics (sums of ~1e3
products of O(1) numbers, then a solve with a Gram matrix of condition ~1e2–1e4), so errors
are ~1e-13; 1e-8 leaves a wide margin and still catches any modelling error (which would be
O(1e-2) or worse).  Comparisons with brute-force im2col algebra use 1e-10 relative to the
largest entry for the same reason.
"""

import numpy as np
import pytest

import kernelfit as kf
from numpy.lib.stride_tricks import sliding_window_view

from kernelfit.stats.background import BackgroundBasis, ProfiledStatistics, background_coefficients, background_image, background_terms, check_degree, profile_out, profiled_statistics, project_out, residual_with_background
from kernelfit.core.design import prepare_pair
from kernelfit.core.forward import convolve
from kernelfit.solvers.direct import solve_normal_equations
from kernelfit.stats.compute import statistics


def _monomial_background(shape, coefficients):
    """Σ m_ij x^i y^j on x, y = linspace(-1, 1) over ``shape`` — written independently of the
    module's Legendre basis."""
    Ho, Wo = shape
    y, x = np.meshgrid(np.linspace(-1, 1, Ho), np.linspace(-1, 1, Wo), indexing="ij")
    return sum(value * x**i * y**j for (i, j), value in coefficients.items())


def _random_monomials(rng, degree):
    return {(t - j, j): float(rng.normal()) for t in range(degree + 1) for j in range(t + 1)}


def _name(i, j):
    part = lambda p, v: "" if p == 0 else v if p == 1 else f"{v}^{p}"  # noqa: E731
    return part(i, "x") + ("*" if i and j else "") + part(j, "y") or "1"


def _brute_design(pair, shape):
    """Explicit X (convolution orientation) and T over the used pixels."""
    kh, kw = shape
    windows = sliding_window_view(pair.extended, (kh, kw))
    X = windows.reshape(-1, kh * kw)[:, ::-1]     # X[i, j] = P[i + (kh-1, kw-1) - j]
    return X


def _problem(rng, degree, *, boundary, shape, size=(40, 44), noise=0.0):
    a = rng.random(size)
    k = rng.normal(size=shape)
    b = convolve(a, k, boundary=boundary)
    truth = _random_monomials(rng, degree)
    b = b + _monomial_background(b.shape, truth) + noise * rng.normal(size=b.shape)
    return a, b, k, truth


@pytest.mark.parametrize("degree", [0, 1, 2])
@pytest.mark.parametrize("boundary, shape", [("valid", (5, 5)), ("fill", (4, 3))])
def test_noise_free_recovery_of_kernel_and_background(degree, boundary, shape):
    rng = np.random.default_rng(10 + degree)
    a, b, k, truth = _problem(rng, degree, boundary=boundary, shape=shape)
    pair = prepare_pair(a, b, shape, boundary=boundary)
    assert pair.b_used.shape == b.shape  # the background covers all of b here
    terms = background_terms(pair, shape, degree)
    stats = profile_out(statistics(pair.extended, pair.b_used, shape), terms)
    kernel = solve_normal_equations(stats).kernel
    beta = background_coefficients(terms, kernel)
    np.testing.assert_allclose(kernel, k, rtol=0, atol=1e-8)
    monomials = terms.basis.monomials(beta)
    for (i, j), value in truth.items():
        assert abs(monomials[_name(i, j)] - value) < 1e-8
    np.testing.assert_allclose(background_image(terms, beta), _monomial_background(b.shape, truth),
                               rtol=0, atol=1e-8)
    assert stats.n_used == b.size - len(truth) and stats.n_pixels == b.size


@pytest.mark.parametrize("weighted", [False, True])
def test_profiled_statistics_equal_augmented_least_squares(weighted):
    rng = np.random.default_rng(1)
    shape, degree = (3, 4), 2
    a, b, _, _ = _problem(rng, degree, boundary="valid", shape=shape, size=(21, 19), noise=0.1)
    pair = prepare_pair(a, b, shape, boundary="valid")
    # IRLS-like weights: positive, non-binary, some exactly 0.
    w = rng.uniform(0.2, 3.0, pair.b_used.shape) * (rng.random(pair.b_used.shape) > 0.1) \
        if weighted else None
    terms = background_terms(pair, shape, degree, weights=w)
    s = profile_out(statistics(pair.extended, pair.b_used, shape, weights=w), terms)

    X = _brute_design(pair, shape)
    T = terms.basis.images.reshape(len(terms.basis), -1).T
    y = pair.b_used.ravel()
    wv = np.ones_like(y) if w is None else w.ravel()
    TtT = T.T @ (wv[:, None] * T)
    XtT = X.T @ (wv[:, None] * T)
    proj = XtT @ np.linalg.solve(TtT, np.eye(len(TtT)))
    G = X.T @ (wv[:, None] * X) - proj @ XtT.T
    c = X.T @ (wv * y) - proj @ (T.T @ (wv * y))
    btb = y @ (wv * y) - (T.T @ (wv * y)) @ np.linalg.solve(TtT, T.T @ (wv * y))
    scale = np.abs(X.T @ (wv[:, None] * X)).max()
    assert np.abs(s.gram - G).max() < 1e-10 * scale
    assert np.abs(s.rhs - c).max() < 1e-10 * scale
    assert abs(s.btb - btb) < 1e-10 * (y @ (wv * y))
    assert s.n_used == np.count_nonzero(wv) - 6

    # The kernel and background from the profile = the augmented weighted fit [X T].
    sw = np.sqrt(wv)
    joint = np.linalg.lstsq(sw[:, None] * np.hstack([X, T]), sw * y, rcond=None)[0]
    kernel = solve_normal_equations(s).kernel
    beta = background_coefficients(terms, kernel)
    np.testing.assert_allclose(kernel.ravel(), joint[:X.shape[1]], rtol=0, atol=1e-10)
    np.testing.assert_allclose(beta, joint[X.shape[1]:], rtol=0, atol=1e-10)
    # The profiled RSS is the augmented fit's weighted RSS, and project_out reproduces it.
    k = kernel.ravel()
    rss = s.btb - 2 * k @ s.rhs + k @ s.gram @ k
    r_joint = y - np.hstack([X, T]) @ joint
    assert abs(rss - r_joint @ (wv * r_joint)) < 1e-10 * (y @ (wv * y))
    projected = project_out((X @ k - y).reshape(pair.b_used.shape), terms).ravel()
    used = wv != 0
    np.testing.assert_allclose(projected[used], -r_joint[used], rtol=0, atol=1e-10)


def test_masked_pixels():
    rng = np.random.default_rng(2)
    shape, degree = (5, 5), 1
    a, b, k, truth = _problem(rng, degree, boundary="valid", shape=shape, size=(48, 48))
    a = a.copy()
    a[10, 30] = np.nan                        # drops a 5×5 block of b's pixels
    b[rng.random(b.shape) < 0.1] = np.nan     # 10 % of b
    mask = rng.random(b.shape) > 0.05         # 5 % more through the user's mask
    pair = prepare_pair(a, b, shape, boundary="valid", mask=mask)
    assert pair.use is not None and pair.n_used < 0.9 * b.size
    terms = background_terms(pair, shape, degree)
    s = profile_out(statistics(pair.extended, pair.b_used, shape,
                               weights=pair.use.astype(float)), terms)
    assert s.n_pixels == pair.n_used == terms.n_used
    kernel = solve_normal_equations(s).kernel
    np.testing.assert_allclose(kernel, k, rtol=0, atol=1e-8)
    beta = background_coefficients(terms, kernel)
    expected = _monomial_background(b.shape, truth)
    np.testing.assert_allclose(background_image(terms, beta), expected, rtol=0, atol=1e-8)
    # Residuals: NaN exactly where unused, ~0 elsewhere (noise-free).
    r = residual_with_background(pair, terms, kernel)
    assert np.array_equal(np.isnan(r), ~pair.use)
    assert np.nanmax(np.abs(r)) < 1e-8
    # Same answer through the multi-pair helper, and with the pair given twice: each copy
    # gets its own background, the kernel is shared, and the pixel counts add.
    one, _, _ = profiled_statistics(pair, shape, degree)
    two, terms2, _ = profiled_statistics([pair, pair], shape, degree)
    assert isinstance(two, ProfiledStatistics)
    assert two.n_pixels == 2 * pair.n_used and two.n_background == 6
    np.testing.assert_allclose(two.gram, 2 * one.gram, rtol=1e-12, atol=0)


def test_two_pairs_with_different_backgrounds_share_the_kernel():
    rng = np.random.default_rng(3)
    shape = (3, 3)
    k = rng.normal(size=shape)
    pairs, offsets = [], [2.0, -7.5]
    for offset, size in zip(offsets, [(30, 34), (26, 40)]):
        a = rng.random(size)
        pairs.append(prepare_pair(a, convolve(a, k, boundary="valid", mode="valid") + offset,
                                  shape, boundary="valid"))
    s, terms, _ = profiled_statistics(pairs, shape, 0)
    kernel = solve_normal_equations(s).kernel
    np.testing.assert_allclose(kernel, k, rtol=0, atol=1e-8)
    for t, offset in zip(terms, offsets):
        assert abs(background_coefficients(t, kernel)[0] - offset) < 1e-8


def _elliptical_gaussian(size, sigma_x, sigma_y, theta):
    r = np.arange(size) - size // 2
    y, x = np.meshgrid(r, r, indexing="ij")
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def test_acceptance_hubble_nan_and_constant_background():
    skimage = pytest.importorskip("skimage")
    from skimage.color import rgb2gray
    grey = rgb2gray(skimage.data.hubble_deep_field())
    a = grey[300:556, 400:656]
    a = (a - a.min()) / (a.max() - a.min())
    shape = (11, 11)
    k = _elliptical_gaussian(11, 2.0, 1.2, np.deg2rad(30))
    rng = np.random.default_rng(4)
    clean_b = convolve(a, k, boundary="fill") + 0.003 * rng.normal(size=a.shape)

    def error(kernel):
        return np.linalg.norm(kernel - k) / np.linalg.norm(k)

    clean = prepare_pair(a, clean_b, shape, boundary="valid")
    clean_error = error(solve_normal_equations(
        statistics(clean.extended, clean.b_used, shape)).kernel)

    a_nan, b = a.copy(), clean_b + 2.0
    a_nan[rng.random(a.shape) < 0.002] = np.nan
    b[rng.random(b.shape) < 0.05] = np.nan
    pair = prepare_pair(a_nan, b, shape, boundary="valid")
    s, (terms,), _ = profiled_statistics(pair, shape, 0)
    kernel = solve_normal_equations(s).kernel
    beta = background_coefficients(terms, kernel)
    # Measured (seed 4): clean error 0.0378, with NaN + background 0.0448 (ratio 1.18),
    # |β − 2| = 1.2e-5; seeds 4–11 give ratios 0.99–1.20 and |β − 2| ≤ 2.5e-5.
    assert error(kernel) <= 1.5 * clean_error
    assert abs(beta[0] - 2.0) <= 1e-3


def test_basis_is_legendre_on_scaled_coordinates():
    basis = BackgroundBasis((7, 11), 2)
    assert basis.names == ("1", "x", "y", "P2(x)", "x*y", "P2(y)")
    y, x = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 11), indexing="ij")
    expected = [np.ones_like(x), x, y, (3 * x**2 - 1) / 2, x * y, (3 * y**2 - 1) / 2]
    np.testing.assert_allclose(basis.images, np.stack(expected), rtol=0, atol=1e-14)
    beta = np.arange(1.0, 7.0)
    np.testing.assert_allclose(basis.evaluate(beta), np.tensordot(beta, expected, 1),
                               rtol=0, atol=1e-13)
    mono = basis.monomials(beta)   # 1 + 2x + 3y + 4(3x²−1)/2 + 5xy + 6(3y²−1)/2
    assert mono == pytest.approx({"1": 1 - 2 - 3, "x": 2, "y": 3, "x^2": 6, "x*y": 5,
                                  "y^2": 9}, abs=1e-12)


@pytest.mark.parametrize("degree", [-1, 1.5, "1", True, 2.0])
def test_invalid_degree(degree):
    with pytest.raises(ValueError, match="background="):
        check_degree(degree)
    pair = prepare_pair(np.random.default_rng(0).random((20, 20)), np.zeros((20, 20)), 3,
                        boundary="valid")
    with pytest.raises(ValueError, match="background="):
        background_terms(pair, (3, 3), degree)


def test_too_many_terms_for_the_pixels():
    rng = np.random.default_rng(5)
    a = rng.random((12, 12))
    pair = prepare_pair(a, a, 3, boundary="valid")       # 10×10 used pixels
    with pytest.raises(ValueError, match=r"background=10: .* at most 9"):
        background_terms(pair, (3, 3), 10)
    b = np.full((12, 12), np.nan)
    b[4:6, 3:6] = 1.0                                     # 6 pixels left
    few = prepare_pair(a, b, 3, boundary="valid")
    with pytest.raises(ValueError, match=r"background=2 has 6 terms but only 6 pixels"):
        background_terms(few, (3, 3), 2)
    b = np.full((12, 12), np.nan)
    b[5, 2:10] = 1.0                                      # one row: no term in y is determined
    row = prepare_pair(a, b, 3, boundary="valid")
    with pytest.raises(ValueError, match=r"background=1: the 8 used pixels .* do not determine"):
        background_terms(row, (3, 3), 1)


def test_mismatched_statistics_and_terms():
    rng = np.random.default_rng(6)
    a = rng.random((20, 20))
    pair = prepare_pair(a, a, 3, boundary="valid")
    terms = background_terms(pair, (3, 3), 0)
    with pytest.raises(ValueError, match="kernel shape"):
        profile_out(statistics(pair.extended[:, :-1], pair.b_used[:, :-2], (3, 4)), terms)
    s = profile_out(statistics(pair.extended, pair.b_used, (3, 3)), terms)
    with pytest.raises(ValueError, match="already profiled"):
        profile_out(s, terms)


# --- through kf.estimate ----------------------------------------------------------------------

_RNG = np.random.default_rng(77)
_A = _RNG.random((50, 56))
_K = np.outer(np.hanning(7), np.hanning(7))[1:-1, 1:-1]
_K /= _K.sum()
_Y, _X = np.mgrid[:50, :56]


@pytest.mark.parametrize("degree, offset", [(0, 2.0 + 0 * _Y), (1, 2.0 + 0.01 * _X - 0.02 * _Y),
                                            (2, 1.0 + 1e-4 * (_X - 20.0) ** 2)])
@pytest.mark.parametrize("model", ["free", "radial", "separable"])
def test_estimate_recovers_kernel_and_background_exactly(degree, offset, model):
    """Noise-free data, a model that contains the truth: the kernel and the background come
    back to rounding (1e-8 allows the conditioning of a 25-coefficient fit)."""
    b = kf.convolve(_A, _K, boundary="fill") + offset
    fit = kf.estimate(_A, b, _K.shape, boundary="fill", model=model, background=degree)
    assert np.linalg.norm(fit.kernel - _K) / np.linalg.norm(_K) <= 1e-8
    assert np.nanmax(np.abs(fit.residual)) <= 1e-8
    assert fit.n_used == _A.size
    assert fit.info["background"]["degree"] == degree


def test_estimate_parametric_with_background():
    from kernelfit.models.parametric import make_model
    k = make_model("gaussian").evaluate({"sigma": 1.4}, (9, 9))
    b = kf.convolve(_A, k, boundary="fill") + 3.0
    fit = kf.estimate(_A, b, 9, boundary="fill", model="gaussian", background=0)
    assert fit.params["sigma"] == pytest.approx(1.4, rel=1e-8)
    assert fit.background[0] == pytest.approx(3.0, rel=1e-8)


def test_estimate_background_for_several_pairs():
    a2 = _RNG.random((40, 40))
    bs = [kf.convolve(_A, _K, boundary="fill") + 1.0, kf.convolve(a2, _K, boundary="fill") - 2.0]
    fit = kf.estimate([_A, a2], bs, _K.shape, boundary="fill", background=0)
    assert [float(beta[0]) for beta in fit.background] == pytest.approx([1.0, -2.0], abs=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(background=-1), "background=-1"),
    (dict(background=0.5), "background=0.5"),
])
def test_estimate_background_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kf.estimate(_A, _A, 3, **kwargs)
