"""The exact L1 fit of a one-parameter family: the window search of
kernelfit.models.parametric_l1 and its pieces (rank-one convolution, pixel samples, the
window model, the weighted-median amplitude).

The reference for "exact" is always the objective itself, evaluated independently with
``scipy.ndimage.gaussian_filter`` (the seed-002 peer) on a dense grid of σ.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.core.forward import ExtendedSpectrum
from kernelfit.models.fit_parametric import fit_parametric
from kernelfit.models.l1_window import Family, Sources, Window, amplitude_l1
from kernelfit.models.parametric import Disk, Gaussian, make_model
from kernelfit.models.parametric_data import _Layout
from kernelfit.models.pixel_sample import predictions, sample, used_b
from kernelfit.models.rank_one import (convolve_spectrum_rank_one, convolve_valid_rank_one,
                                       rank_one_factors)
from kernelfit.stats.compute import statistics

skimage = pytest.importorskip("skimage")
from skimage import color, data  # noqa: E402


@pytest.fixture(scope="module")
def photo():
    """A 160² crop of the astronaut, grey in [0, 1]."""
    return np.ascontiguousarray(color.rgb2gray(data.astronaut())[150:310, 180:340])


def _blurred(a, sigma, noise, seed, radius=7):
    rng = np.random.default_rng(seed)
    b = ndi.gaussian_filter(a, sigma, mode="reflect", radius=radius)
    return b + noise * rng.normal(size=b.shape)


def _l1(a, b, sigma, radius=7, amplitude=1.0):
    """The seed-002 objective, from gaussian_filter: Σ|A·g_σ ⊛ a − b| ('reflect')."""
    return float(np.abs(amplitude * ndi.gaussian_filter(a, sigma, mode="reflect",
                                                        radius=radius) - b).sum())


def _best_amplitude(m, b):
    """The exact L1 amplitude for a given image m: the weighted median of b/m, brute force."""
    m, b = m.ravel(), b.ravel()
    candidates = b[m != 0] / m[m != 0]
    values = [np.abs(c * m - b).sum() for c in candidates]
    return float(candidates[int(np.argmin(values))])


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("boundary", ["valid", "reflect", "nearest"])
@pytest.mark.parametrize("amplitude", [None, 1.7])
def test_noise_free_exact_recovery(boundary, amplitude):
    """Data made by the model: σ and A come back to rounding (the L1 minimum is a sharp kink
    at zero objective; 1e-10 leaves room for the last window's interpolation)."""
    a = np.random.default_rng(3).random((70, 64))
    k = Gaussian().evaluate([1.35], 9, amplitude=amplitude or 1.0)
    b = kf.convolve(a, k, boundary=boundary, mode="valid" if boundary == "valid" else "same")
    fit = kf.estimate(a, b, 9, boundary=boundary, model="gaussian", loss="l1",
                      normalize=amplitude)
    assert fit.params["sigma"] == pytest.approx(1.35, rel=1e-10)
    assert fit.params["amplitude"] == pytest.approx(amplitude or 1.0, rel=1e-10)
    assert fit.info["l1_search"] == "window"
    assert fit.converged, fit.message
    assert np.nanmax(np.abs(fit.residual)) <= 1e-10


@pytest.mark.parametrize("seed,sigma", [(0, 1.3), (1, 2.1), (2, 0.8)])
def test_objective_within_1e_9_of_a_dense_grid(photo, seed, sigma):
    """Issue 13: the L1 objective at the answer is within 1e-9 (relative) of a dense grid's
    best, the grid evaluated with gaussian_filter itself.  The grid steps by 2e-6 over ±4
    standard errors of the answer, fine enough that its own best lies within ~1e-11 of the
    minimum (the objective's curvature is ~N/se², so a step h costs ≤ (h/2)²/(2·se²)/N)."""
    b = _blurred(photo, sigma, 0.01, seed)
    fit = kf.estimate(photo, b, 15, boundary="reflect", model="gaussian", loss="l1",
                      normalize=1.0)
    s = fit.params["sigma"]
    ours = _l1(photo, b, s)
    # The fit's own objective (FFT / separable convolution) is gaussian_filter's, to rounding.
    assert fit.info["objective"] == pytest.approx(ours, rel=1e-12)
    half = 4 * fit.stderr["sigma"]
    grid = s + np.arange(-half, half + 1e-12, 2e-6)
    best = min(_l1(photo, b, x) for x in grid)
    assert ours <= best * (1 + 1e-9)
    # And the window held the minimum: a coarse grid over the whole plausible range agrees.
    coarse = np.linspace(0.5 * sigma, 2 * sigma, 61)
    assert ours <= min(_l1(photo, b, x) for x in coarse)


def test_free_amplitude_is_the_exact_l1_amplitude(photo):
    """With the amplitude free the objective is profiled exactly: at the fitted σ, the
    fitted A is the weighted median (brute force here), and σ beats its neighbours with
    their own best amplitudes."""
    a = photo[:64, :64]
    b = 0.9 * _blurred(a, 1.4, 0.01, 5)
    fit = kf.estimate(a, b, 15, boundary="reflect", model="gaussian", loss="l1")
    s, amp = fit.params["sigma"], fit.params["amplitude"]
    m = ndi.gaussian_filter(a, s, mode="reflect", radius=7)
    assert amp == pytest.approx(_best_amplitude(m, b), rel=1e-12)
    ours = _l1(a, b, s, amplitude=amp)
    assert fit.info["objective"] == pytest.approx(ours, rel=1e-12)
    for x in s + 4 * fit.stderr["sigma"] * np.linspace(-1, 1, 9):
        mx = ndi.gaussian_filter(a, x, mode="reflect", radius=7)
        assert ours <= _l1(a, b, x, amplitude=_best_amplitude(mx, b)) * (1 + 1e-9)


def test_truncated_gaussian_searches_both_sides_of_a_jump():
    """Gaussian(truncate=4) changes its radius at σ = (R + ½)/4, where the objective jumps;
    the answer is the best of the pieces around it (a grid straddling σ = 1.125)."""
    rng = np.random.default_rng(8)
    a = ndi.uniform_filter(rng.random((96, 96)), 2)
    # σ = 1.1255 sits a third of a standard error above the jump at 1.125.
    b = ndi.gaussian_filter(a, 1.1255, mode="reflect", truncate=4.0) \
        + 0.002 * rng.normal(size=a.shape)
    fit = fit_parametric(prepare_pair(a, b, 15, boundary="reflect", center=(7, 7)),
                         Gaussian(truncate=4.0), 15, loss="l1", normalize=1.0)
    s = fit.params["sigma"]

    def objective(x):
        return float(np.abs(ndi.gaussian_filter(a, x, mode="reflect", truncate=4.0) - b).sum())

    grid = np.concatenate([np.linspace(1.05, 1.2, 301), [1.125 - 1e-12, 1.125]])
    assert objective(s) <= min(objective(x) for x in grid) * (1 + 1e-9)
    windows = fit.info["l1_levels"][-1]["windows"]
    assert any(w["hi"] < 1.125 for w in windows) and any(w["lo"] >= 1.125 for w in windows)


def test_several_pairs_are_one_objective(photo):
    """Pairs share σ: the objective is the sum over the pairs, minimised jointly."""
    pieces = [photo[:80, :80], photo[80:, 80:], photo[:80, 80:]]
    rng = np.random.default_rng(6)
    bs = [ndi.gaussian_filter(p, 1.6, mode="reflect", radius=7)
          + 0.01 * rng.normal(size=p.shape) for p in pieces]
    fit = kf.estimate(pieces, bs, 15, boundary="reflect", model="gaussian", loss="l1",
                      normalize=1.0)
    s = fit.params["sigma"]

    def total(x):
        return sum(_l1(p, b, x) for p, b in zip(pieces, bs))

    assert fit.info["objective"] == pytest.approx(total(s), rel=1e-12)
    grid = s + 4 * fit.stderr["sigma"] * np.linspace(-1, 1, 201)
    assert total(s) <= min(total(x) for x in grid) * (1 + 1e-9)
    single = kf.estimate(pieces[0], bs[0], 15, boundary="reflect", model="gaussian",
                         loss="l1", normalize=1.0)
    assert fit.stderr["sigma"] < single.stderr["sigma"]        # three times the data


def test_masked_pixels_are_left_out(photo):
    """A mask removes pixels from the objective: the fit equals one on the kept pixels."""
    b = _blurred(photo, 1.2, 0.01, 9)
    mask = np.random.default_rng(10).random(b.shape) > 0.3
    b_bad = np.where(mask, b, 5.0)                 # garbage where masked
    fit = kf.estimate(photo, b_bad, 15, boundary="reflect", model="gaussian", loss="l1",
                      normalize=1.0, mask=mask)
    s = fit.params["sigma"]

    def masked(x):
        m = ndi.gaussian_filter(photo, x, mode="reflect", radius=7)
        return float(np.abs(m - b)[mask].sum())

    assert fit.n_used == int(mask.sum())
    assert fit.info["objective"] == pytest.approx(masked(s), rel=1e-12)
    grid = s + 4 * fit.stderr["sigma"] * np.linspace(-1, 1, 101)
    assert masked(s) <= min(masked(x) for x in grid) * (1 + 1e-9)


def test_a_family_that_is_not_rank_one(photo):
    """A disk is not separable: its images come from the FFT.  Its exact pixel coverage is
    only piecewise smooth in the radius (its derivatives blow up where the circle touches a
    pixel edge), so a window's interpolant may not settle: then the general path answers.
    Either way the noise-free radius comes back to 1e-8."""
    a = photo[:96, :96]
    for radius in (2.6, 3.2):
        b = kf.convolve(a, Disk().evaluate([radius], 9), boundary="reflect")
        fit = kf.estimate(a, b, 9, boundary="reflect", model="disk", loss="l1",
                          normalize=1.0)
        assert fit.params["radius"] == pytest.approx(radius, rel=1e-8)
        assert fit.converged, fit.message


# ---------------------------------------------------------------------------------------------
# Robustness and uncertainty
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_l1_beats_l2_under_salt_and_pepper(photo, seed):
    """5 % of the pixels set to 0 or 1: least squares is dragged off, L1 is not.  Across
    seeds 0-5 the L2 error is 0.05-0.3 and the L1 one below 0.004; the bounds leave a factor
    of 2 or more."""
    rng = np.random.default_rng(seed)
    b = _blurred(photo, 1.6, 0.003, seed + 20)
    hit = rng.random(b.shape) < 0.05
    b[hit] = rng.integers(0, 2, hit.sum())
    l2 = kf.estimate(photo, b, 15, boundary="reflect", model="gaussian", normalize=1.0)
    l1 = kf.estimate(photo, b, 15, boundary="reflect", model="gaussian", loss="l1",
                     normalize=1.0)
    assert abs(l2.params["sigma"] - 1.6) > 0.02
    assert abs(l1.params["sigma"] - 1.6) < 0.01
    assert abs(l1.params["sigma"] - 1.6) < 5 * l1.stderr["sigma"]
    assert l1.converged, l1.message


def test_stderr_is_the_median_regression_one(photo):
    """Gaussian noise: the L1 standard error is √(π/2) = 1.25 times the L2 one (the median's
    efficiency); the density estimate at 0 is good to a few per cent with 25k residuals."""
    b = _blurred(photo, 1.5, 0.01, 11)
    l2 = kf.estimate(photo, b, 15, boundary="reflect", model="gaussian")
    l1 = kf.estimate(photo, b, 15, boundary="reflect", model="gaussian", loss="l1")
    for name in ("sigma", "amplitude"):
        assert 1.1 < l1.stderr[name] / l2.stderr[name] < 1.4
    assert abs(l1.noise_std - 0.01) < 5e-4


def test_background_still_takes_the_general_path(photo):
    """With background= the window search does not apply (β joins θ); the general robust
    path fits, and recovers a constant offset."""
    a = photo[:64, :64]
    b = kf.convolve(a, Gaussian().evaluate([1.2], 9), boundary="fill") + 0.25
    fit = kf.estimate(a, b, 9, boundary="fill", model="gaussian", loss="l1", background=0)
    assert "l1_search" not in fit.info
    assert fit.params["sigma"] == pytest.approx(1.2, rel=1e-8)
    assert fit.background[0] == pytest.approx(0.25, abs=1e-8)


def test_several_parameters_take_the_general_path(photo):
    a = photo[:64, :64]
    b = kf.convolve(a, make_model("elliptical").evaluate([2.0, 1.2, 30.0], 11),
                    boundary="reflect")
    fit = kf.estimate(a, b, 11, boundary="reflect", model="elliptical", loss="l1",
                      normalize=1.0)
    assert "l1_search" not in fit.info
    assert fit.params["sigma_x"] == pytest.approx(2.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (9, 2), (11, 11)])
def test_rank_one_convolutions_equal_scipy(shape):
    rng = np.random.default_rng(12)
    P = rng.random((31, 28))
    u, v = rng.random(shape[0]), rng.random(shape[1])
    k = np.outer(u, v)
    ref = scipy.signal.convolve2d(P, k, mode="valid")
    assert np.abs(convolve_valid_rank_one(P, u, v) - ref).max() <= 1e-13
    spectrum = ExtendedSpectrum(P, shape)
    assert np.abs(convolve_spectrum_rank_one(spectrum, u, v) - ref).max() <= 1e-13
    # Single precision: ~1e-7 relative, far inside the bound the window allows for it.
    single = convolve_spectrum_rank_one(spectrum, u, v, single=True)
    assert single.dtype == np.float32
    assert np.abs(single - ref).max() <= 1e-5 * np.abs(P).max() * np.abs(k).sum()
    fu, fv = rank_one_factors(k)
    assert np.abs(np.outer(fu, fv) - k).max() <= 1e-15 * k.max()


def test_rank_one_factors_refuses_other_kernels():
    assert rank_one_factors(np.eye(3)) is None
    assert rank_one_factors(np.zeros((3, 3))) is None
    assert rank_one_factors(Disk().evaluate([2.0], 7)) is None
    assert rank_one_factors(Gaussian().evaluate([1.3], 7)) is not None


def test_samples_and_predictions_cover_the_used_pixels():
    rng = np.random.default_rng(13)
    a, b = rng.random((200, 150)), rng.random((200, 150))
    mask = rng.random(b.shape) > 0.2
    pair = prepare_pair(a, b, (7, 5), boundary="reflect", mask=mask)
    k = rng.random((7, 5))
    full = ExtendedSpectrum(pair.extended, (7, 5)).convolve_valid(k)
    for fraction in (0.01, 0.1, 0.3, 0.9):
        pieces = sample([pair], (7, 5), fraction)
        n = sum(p.n_used for p in pieces)
        # about the fraction asked (tiles and bands are whole), never more than the pair
        assert 0.3 * fraction * mask.sum() <= n <= mask.sum()
        m = predictions(pieces, [k], (7, 5))[0]
        assert m.size == n == used_b(pieces).size
        # every piece's prediction is the pair's own prediction at those pixels
        start = 0
        for piece in pieces:
            values = full[_offset(pair, piece)][piece.use]
            np.testing.assert_allclose(m[start:start + piece.n_used], values, atol=1e-12)
            start += piece.n_used


def _offset(pair, piece):
    """The slices of the pair's used rectangle that a piece (a view into it) covers."""
    if piece is pair:
        return (slice(None), slice(None))
    base = pair.b_used
    offset = (piece.b_used.__array_interface__["data"][0]
              - base.__array_interface__["data"][0]) // base.itemsize
    y0, x0 = divmod(offset, base.shape[1])
    h, w = piece.b_used.shape
    return (slice(y0, y0 + h), slice(x0, x0 + w))


@pytest.mark.parametrize("slope", [-30.0, -2.0, 0.0, 1.5, 30.0])
def test_amplitude_is_the_weighted_median(slope):
    """argmin slope·A + Σ|m A − b| on [lo, hi], against a brute-force scan of the
    breakpoints and the ends (the function is piecewise linear and convex)."""
    rng = np.random.default_rng(14)
    m, b = rng.normal(size=40), rng.normal(size=40)
    m[3] = 0.0
    lo, hi = -3.0, 3.0
    found, order = amplitude_l1(m, b, slope, lo, hi)

    def phi(x):
        return slope * x + np.abs(m * x - b).sum()

    candidates = np.clip(np.concatenate([b[m != 0] / m[m != 0], [lo, hi]]), lo, hi)
    assert phi(found) <= min(phi(x) for x in candidates) + 1e-12
    again, _ = amplitude_l1(m * 1.001, b, slope, lo, hi, order)     # from a nearby order
    assert again == pytest.approx(amplitude_l1(m * 1.001, b, slope, lo, hi)[0], abs=0)


def test_window_model_is_exact_at_its_nodes_and_close_between(photo):
    """The window's split model equals the exact objective at a node, and between nodes
    stays within the bound of the interpolation error (a worst case: the actual error here
    is some 1e4 times smaller)."""
    b = _blurred(photo, 1.5, 0.01, 15)
    pair = prepare_pair(photo, b, 15, boundary="reflect", center=(7, 7))
    layout = _Layout(Gaussian(), (15, 15), (7, 7), 1.0, False)
    exact = Sources(Family(layout), [pair])
    window = Window(exact, 1.48, 1.52, 1.0, 0.0, True, single=False)
    for s in (1.48, 1.52):
        assert window.profile(s)[0] == pytest.approx(_l1(photo, b, s), rel=1e-12)
    # Between the nodes: within Σ|P|·‖ε‖₁, the bound of the line's error on the kernel.
    bound = np.abs(pair.extended).sum() * window.nodes.kernel_error(1.5)
    assert abs(window.profile(1.5)[0] - _l1(photo, b, 1.5)) <= bound


def test_errors(photo):
    pair = prepare_pair(photo, photo, 5, boundary="fill")
    stats = statistics(pair.extended, pair.b_used, (5, 5))
    with pytest.raises(ValueError, match="robust loss"):
        fit_parametric(stats, "gaussian", 5, loss="l1")
    with pytest.raises(ValueError, match="loss="):
        fit_parametric(pair, "gaussian", 5, loss="L1")
    with pytest.raises(ValueError, match="normalize="):
        fit_parametric(pair, "gaussian", 5, loss="l1", normalize=0.0)
    with pytest.raises(ValueError, match="shape="):
        fit_parametric(pair, "gaussian", 7, loss="l1")
    with pytest.raises(ValueError, match="center="):
        fit_parametric(pair, "gaussian", 5, (1, 1), loss="l1")
    with pytest.raises(TypeError, match="pairs"):
        fit_parametric([photo], "gaussian", 5, loss="l1")
    with pytest.raises(ValueError, match="model="):
        kf.estimate(photo, photo, 5, model="lorentz", loss="l1")
