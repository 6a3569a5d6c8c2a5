"""The seed answers as methods (kernelfit.classic): Fourier ratio, Wiener ratio, Richardson–Lucy."""

import re
import warnings

import numpy as np
import pytest
from skimage.data import camera

import kernelfit as kf
from kernelfit.fit import classic
from kernelfit.demo import EDITOR_MATRIX, fourier_ratio_kernel
from kernelfit.core.design import prepare_pair

TRUE_EDITOR = EDITOR_MATRIX / EDITOR_MATRIX.sum()


def _rel_err(estimate, truth):
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def _pairs(a, b, shape, boundary, **options):
    if isinstance(a, list):
        return [prepare_pair(ai, bi, shape, boundary=boundary, label=f"[{i}]", **options)
                for i, (ai, bi) in enumerate(zip(a, b))]
    return [prepare_pair(a, b, shape, boundary=boundary, **options)]


def _photo(half=False):
    """scikit-image's 512² camera, or its 2×2 block means (256², still 0…255)."""
    photo = camera().astype(np.float64)
    return photo.reshape(256, 2, 256, 2).mean(axis=(1, 3)) if half else photo


def _editor_blur(photo, noise=0.0, seed=0):
    """Seed 001's data: edges extended ('nearest'), optional noise, 8-bit rounding and clipping."""
    rng = np.random.default_rng(seed)
    blurred = kf.convolve(photo, TRUE_EDITOR, boundary="nearest")
    return np.clip(np.rint(blurred + rng.normal(0.0, noise, photo.shape)), 0, 255)


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("shape,center", [((3, 3), None), ((4, 6), None), ((5, 4), (2, 2)),
                                          ((5, 5), (0, 4)), ((15, 15), None)])
def test_fourier_exact_on_wrap_around_data(shape, center):
    # Circular data are exactly a product of spectra: the only error is FFT rounding
    # (~1e-15 relative, times the window fit's condition number, which is 1 here).
    rng = np.random.default_rng(1)
    a, k = rng.random((60, 57)), rng.normal(size=shape)
    b = kf.convolve(a, k, boundary="wrap", center=center)
    fit = classic.fit_fourier(_pairs(a, b, shape, "wrap", center=center), shape, single=True)
    assert _rel_err(fit.kernel, k) <= 1e-10
    assert fit.info["edges"] == "none" and fit.info["edge_products"] == 0
    assert fit.converged and fit.method == "fourier" and fit.model == "free"
    assert fit.center == (center or ((shape[0] - 1) // 2, (shape[1] - 1) // 2))


@pytest.mark.parametrize("boundary,size", [("fill", "same"), ("reflect", "full"),
                                           ("nearest", "same"), ("mirror", "same"),
                                           ("valid", "same"), ("valid", "valid")])
@pytest.mark.parametrize("shape", [(3, 3), (4, 6)])
def test_fourier_edge_correction_is_exact_for_every_boundary(boundary, size, shape):
    # Non-periodic data: the taper alone leaves an error of ~1e-3 (the taper's slope times the
    # kernel width); the edge correction removes it exactly, so only GMRES's 1e-12 target and
    # rounding remain (1e-9 leaves three orders of margin).
    rng = np.random.default_rng(2)
    a, k = rng.random((50, 53)), rng.normal(size=shape)
    b = kf.convolve(a, k, boundary=boundary, mode=size)
    pairs = _pairs(a, b, shape, boundary)
    fit = classic.fit_fourier(pairs, shape, single=True)
    assert _rel_err(fit.kernel, k) <= 1e-9 and fit.converged
    assert fit.info["edges"] == "window" and fit.info["edge_products"] > 0
    plain = classic.fit_fourier(pairs, shape, single=True, edge_correction=False)
    assert _rel_err(plain.kernel, k) > 1e3 * _rel_err(fit.kernel, k)
    # The fitted kernel reproduces b through the forward model.
    np.testing.assert_allclose(np.nanmax(np.abs(fit.residual)), 0.0, atol=1e-9)


def test_wiener_nearly_exact_on_noise_free_data():
    # GCV on noise-free data picks a tiny ε (the residual is rounding); its bias is ~ε/|Â|².
    rng = np.random.default_rng(3)
    a, k = rng.random((64, 64)), rng.normal(size=(5, 5))
    b = kf.convolve(a, k, boundary="reflect")
    fit = classic.fit_wiener(_pairs(a, b, 5, "reflect"), (5, 5), single=True)
    assert _rel_err(fit.kernel, k) <= 1e-5
    assert fit.method == "wiener" and fit.lam == fit.info["eps"] >= 0


# ----------------------------------------------------------------------------- seed 001

def test_seed001_fourier_with_edge_handling_beats_the_naive_ratio():
    # The 512² camera photo, the editor's asymmetric 5×5 matrix, edges extended, 8-bit
    # rounding: exactly the demo.  Measured: naive irfft2(rfft2(b)/rfft2(a)) 7.9e-2 (the
    # cross-shaped artefact), fourier 1.5e-3 ('window') / 1.5e-3 ('periodic'), fourier without
    # edge correction 2.6e-3, least squares 1.1e-3.  Bounds leave ~2x margin.
    photo = _photo()
    blurred = _editor_blur(photo)
    naive = _rel_err(fourier_ratio_kernel(photo, blurred, (5, 5)), TRUE_EDITOR)
    pairs = _pairs(photo, blurred, 5, "nearest")
    fit = classic.fit_fourier(pairs, (5, 5), single=True)
    periodic = classic.fit_fourier(pairs, (5, 5), single=True, edges="periodic")
    uncorrected = classic.fit_fourier(pairs, (5, 5), single=True, edge_correction=False)
    least_squares = kf.estimate(photo, blurred, 5, boundary="nearest")
    errors = {name: _rel_err(f.kernel, TRUE_EDITOR) for name, f in
              [("fourier", fit), ("periodic", periodic), ("uncorrected", uncorrected),
               ("least squares", least_squares)]}
    print(f"naive {naive:.2e}", {k: f"{v:.2e}" for k, v in errors.items()})
    assert naive > 0.05
    assert errors["fourier"] <= 3e-3 and errors["periodic"] <= 3e-3
    assert errors["fourier"] <= naive / 20
    assert errors["fourier"] < errors["uncorrected"]
    # Least squares stays the better estimator, but the Fourier answer is now comparable.
    assert errors["least squares"] <= errors["fourier"] <= 3 * errors["least squares"]
    assert fit.converged and 0.1 < fit.info["frequencies_divided"] <= 1.0
    assert fit.info["threshold_selection"]["fraction"] == pytest.approx(
        fit.info["frequencies_divided"], rel=0.05)
    # The same data without an edge assumption (only the valid rectangle).
    valid = classic.fit_fourier(_pairs(photo, blurred, 5, "valid"), (5, 5), single=True)
    assert _rel_err(valid.kernel, TRUE_EDITOR) <= 3e-3


def test_fourier_threshold_options():
    # 'auto' chooses how many frequencies to divide; dividing all of them (threshold=0, the
    # seed's plain ratio with the edges handled) amplifies the noise at weak frequencies.
    # Measured on 256² camera with σ=2: auto 2.7e-2, threshold=0 about 3x worse.
    photo = _photo(half=True)
    pairs = _pairs(photo, _editor_blur(photo, noise=2.0, seed=5), 5, "nearest")
    auto = classic.fit_fourier(pairs, (5, 5), single=True)
    everything = classic.fit_fourier(pairs, (5, 5), single=True, threshold=0)
    numeric = classic.fit_fourier(pairs, (5, 5), single=True, threshold=0.5, noise_std=2.0)
    assert everything.info["frequencies_divided"] == pytest.approx(1.0, abs=1e-3)
    assert _rel_err(auto.kernel, TRUE_EDITOR) < _rel_err(everything.kernel, TRUE_EDITOR)
    assert _rel_err(auto.kernel, TRUE_EDITOR) <= 0.05
    assert _rel_err(numeric.kernel, TRUE_EDITOR) <= 0.1
    assert numeric.info["noise_std_threshold"] == 2.0
    # Standard errors are those of the ratio: the right order of magnitude.
    z2 = np.mean(((auto.kernel - TRUE_EDITOR) / auto.stderr) ** 2)
    assert 0.2 < z2 < 5.0


def test_wiener_automatic_eps_beats_bad_fixed_values():
    # 256² camera, σ=2 noise plus 8-bit rounding.  Measured: GCV's ε gives 3.5e-2; ε/1000
    # gives 5.5e-2 (noise amplified), ε·1000 gives 0.26 (kernel shrunk towards 0).
    photo = _photo(half=True)
    pairs = _pairs(photo, _editor_blur(photo, noise=2.0, seed=5), 5, "nearest")
    auto = classic.fit_wiener(pairs, (5, 5), single=True)
    eps = auto.lam
    assert eps > 0 and auto.converged and auto.info["eps_selection"]["criterion"] == "gcv"
    error = _rel_err(auto.kernel, TRUE_EDITOR)
    assert error <= 0.06
    for bad in (eps * 1e-3, eps * 1e3, 0.0):
        fixed = classic.fit_wiener(pairs, (5, 5), single=True, eps=bad)
        assert fixed.lam == bad and "eps_selection" not in fixed.info
        assert _rel_err(fixed.kernel, TRUE_EDITOR) > 1.3 * error


def test_richardson_lucy_non_negative_and_stopped_by_its_rule():
    # Noisy non-negative data (256² camera, σ=2, rounded, clipped at 0).  Measured: RL 2.2e-2
    # after ~110 updates, least squares 1.7e-2 (RL maximises a Poisson likelihood, which
    # weights dark pixels more than Gaussian noise deserves).
    photo = _photo(half=True)
    blurred = _editor_blur(photo, noise=2.0, seed=5)
    pairs = _pairs(photo, blurred, 5, "nearest")
    fit = classic.fit_richardson_lucy(pairs, (5, 5), single=True)
    least_squares = kf.estimate(photo, blurred, 5, boundary="nearest")
    assert fit.method == "richardson-lucy" and fit.converged, fit.message
    assert np.all(fit.kernel >= 0)
    assert _rel_err(fit.kernel, TRUE_EDITOR) <= 2 * _rel_err(least_squares.kernel, TRUE_EDITOR)
    stop = fit.info["stopping"]
    assert stop["remaining"] <= stop["tol"] * stop["resolution"]
    assert stop["rounding"] < 1e-3 * stop["tol"] * stop["resolution"]   # not a rounding stop
    assert 10 < fit.info["iterations"] < 3000
    # The rule, not a fixed count, sets the iterations: a looser tolerance stops sooner.
    loose = classic.fit_richardson_lucy(pairs, (5, 5), single=True, tol=3.0)
    assert loose.info["iterations"] < fit.info["iterations"]
    # Plain RL (no acceleration) is far slower: it runs out of its budget.
    plain = classic.fit_richardson_lucy(pairs, (5, 5), single=True, accelerate=False,
                                        maxiter=60)
    assert not plain.converged and "maxiter=60" in plain.message
    assert plain.info["iterations"] == 60


def test_richardson_lucy_known_noise_sets_the_dispersion():
    photo = _photo(half=True)
    pairs = _pairs(photo, _editor_blur(photo, noise=2.0, seed=6), 5, "valid")
    fit = classic.fit_richardson_lucy(pairs, (5, 5), single=True, noise_std=2.0)
    assert fit.converged and _rel_err(fit.kernel, TRUE_EDITOR) <= 0.05
    inverse_mean = np.mean(1.0 / kf.convolve(photo, fit.kernel, boundary="valid"))
    assert fit.info["stopping"]["dispersion"] == pytest.approx(4.0 * inverse_mean, rel=0.05)


# ----------------------------------------------------------------------------- masks, pairs

def test_masks_and_nan_are_handled():
    # The window tapers around unusable pixels and the edge correction makes that exact, so
    # noise-free data still give the kernel to GMRES precision; RL weights them out.
    rng = np.random.default_rng(7)
    a, k = rng.random((64, 70)) + 0.5, rng.random((5, 5))
    b = kf.convolve(a, k, boundary="nearest")
    b[10:14, 20:25] = np.nan
    a = a.copy()
    a[40, 50] = np.nan
    mask = np.ones(b.shape, bool)
    mask[50:, :6] = False
    pairs = _pairs(a, b, 5, "nearest", mask=mask)
    assert pairs[0].use is not None
    fourier = classic.fit_fourier(pairs, (5, 5), single=True)
    assert _rel_err(fourier.kernel, k) <= 1e-9 and fourier.info["edges"] == "window"
    wiener = classic.fit_wiener(pairs, (5, 5), single=True)
    assert _rel_err(wiener.kernel, k) <= 1e-4
    rl = classic.fit_richardson_lucy(pairs, (5, 5), single=True)
    assert _rel_err(rl.kernel, k) <= 1e-3 and rl.converged
    for fit in (fourier, wiener, rl):
        assert fit.n_used == pairs[0].n_used and np.isnan(fit.residual[11, 22])
    with pytest.raises(ValueError, match="edges='periodic' cannot leave out pixels"):
        classic.fit_fourier(pairs, (5, 5), single=True, edges="periodic")


def test_several_pairs_share_one_kernel():
    # Pairs of different sizes go on one zero-padded grid; the ratio is Σ conj(Â)B̂ / Σ|Â|².
    rng = np.random.default_rng(8)
    a = [rng.random((48, 52)) + 0.2, rng.random((60, 41)) + 0.2]
    k = rng.random((3, 4))
    b = [kf.convolve(ai, k, boundary="fill") for ai in a]
    pairs = _pairs(a, b, (3, 4), "fill")
    fourier = classic.fit_fourier(pairs, (3, 4), single=False)
    assert _rel_err(fourier.kernel, k) <= 1e-9 and fourier.info["n_pairs"] == 2
    assert isinstance(fourier.residual, list) and len(fourier.residual) == 2
    assert _rel_err(classic.fit_wiener(pairs, (3, 4), single=False).kernel, k) <= 1e-4
    assert _rel_err(classic.fit_richardson_lucy(pairs, (3, 4), single=False).kernel, k) <= 1e-3
    with pytest.raises(ValueError, match="one size; use edges='window'"):
        classic.fit_fourier(pairs, (3, 4), single=False, edges="none")


# ----------------------------------------------------------------------------- errors

def test_richardson_lucy_refuses_negative_data():
    rng = np.random.default_rng(9)
    a = rng.random((30, 30))
    b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest")
    with pytest.raises(ValueError, match=r"non-negative images, but a has values down to -0\.99"):
        classic.fit_richardson_lucy(_pairs(a - 1.0, b, 3, "nearest"), (3, 3), single=True)
    with pytest.raises(ValueError, match=r"but b has values down to -0\.5"):
        classic.fit_richardson_lucy(_pairs(a, b - 0.5 * (b == b.min()) - b.min(), 3,
                                           "nearest"), (3, 3), single=True)
    negative_b = b.copy()
    negative_b[0, 0] = -2.0
    pairs = _pairs([a, a], [b, negative_b], 3, "nearest")
    with pytest.raises(ValueError, match=r"b\[1\] has values down to -2"):
        classic.fit_richardson_lucy(pairs, (3, 3), single=False)
    # A negative pixel that is masked out does not count.
    mask = np.ones(b.shape, bool)
    mask[0, 0] = False
    fit = classic.fit_richardson_lucy(_pairs(a, negative_b, 3, "nearest", mask=mask), (3, 3),
                                      single=True)
    assert np.all(fit.kernel >= 0)


@pytest.mark.parametrize("call,match", [
    (lambda p: classic.fit_fourier(p, (3, 3), single=True, edges="smooth"), "edges='smooth'"),
    (lambda p: classic.fit_fourier(p, (3, 3), single=True, threshold=-1), "threshold=-1"),
    (lambda p: classic.fit_fourier(p, (3, 3), single=True, taper=0), "taper=0"),
    (lambda p: classic.fit_wiener(p, (3, 3), single=True, eps=-1.0), "eps=-1.0"),
    (lambda p: classic.fit_wiener(p, (3, 3), single=True, eps="gcv"), "eps='gcv'"),
    (lambda p: classic.fit_richardson_lucy(p, (3, 3), single=True, tol=0), "tol=0"),
    (lambda p: classic.fit_richardson_lucy(p, (3, 3), single=True, maxiter=0), "maxiter=0"),
    (lambda p: classic.fit_classic("lsqr", p, (3, 3), single=True), "method='lsqr'"),
])
def test_bad_options(call, match):
    rng = np.random.default_rng(10)
    a = rng.random((20, 20))
    pairs = _pairs(a, kf.convolve(a, np.eye(3) / 3, boundary="fill"), 3, "fill")
    with pytest.raises(ValueError, match=match):
        call(pairs)


def test_check_options_names_what_the_method_cannot_do():
    with pytest.raises(ValueError, match=r"reg='ridge' is not available with method='wiener'"):
        classic.check_options("wiener", reg="ridge")
    with pytest.raises(ValueError, match=r"nonneg=True is not available with method='fourier'"):
        classic.check_options("fourier", nonneg=True)
    with pytest.raises(ValueError, match=r"model='gaussian' is not available"):
        classic.check_options("richardson-lucy", model="gaussian")
    with pytest.raises(ValueError, match=r"background=0 is not available"):
        classic.check_options("fourier", background=0)
    with pytest.raises(TypeError, match=r"method='wiener' does not take \['threshold'\]"):
        classic.check_options("wiener", options={"threshold": 0.1})
    classic.check_options("richardson-lucy", nonneg=True, options={"tol": 0.1})


def test_fit_classic_dispatches_and_returns_normal_fits():
    rng = np.random.default_rng(11)
    a, k = rng.random((40, 40)), rng.random((3, 3))
    pairs = _pairs(a, kf.convolve(a, k, boundary="wrap"), 3, "wrap")
    for method in classic.METHODS:
        fit = classic.fit_classic(method, pairs, (3, 3), single=True)
        assert isinstance(fit, kf.KernelFit) and fit.method == method
        assert fit.boundary == "wrap" and fit.shape == (3, 3) and fit.residual.shape == a.shape
        assert _rel_err(fit.kernel, k) <= 1e-3
        assert fit.to_dict()["method"] == method and method in fit.summary()


@pytest.mark.parametrize("method", ["fourier", "wiener", "richardson-lucy"])
def test_estimate_method_runs_the_classic_fit(method):
    """kf.estimate(method=...) is classic.fit_classic on the same prepared pair, plus the
    used-pixel map."""
    from kernelfit.core.design import prepare_pair

    rng = np.random.default_rng(7)
    a = rng.random((48, 48))
    k = np.array([[0.0, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.1, 0.1]])
    b = kf.convolve(a, k, boundary="wrap") + 1e-3 * rng.standard_normal(a.shape)
    fit = kf.estimate(a, b, 3, boundary="wrap", method=method)
    pair = prepare_pair(a, b, 3, boundary="wrap")
    direct = classic.fit_classic(method, [pair], (3, 3), single=True)
    np.testing.assert_allclose(fit.kernel, direct.kernel, rtol=1e-12, atol=1e-15)
    assert fit.method == method and fit.info["used"].shape == b.shape


def test_estimate_refuses_options_a_classic_method_cannot_honour():
    a = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match=r"normalize=1.0 is not available with method='fourier'"):
        kf.estimate(a, a, 3, method="fourier", normalize=1.0)
    with pytest.raises(TypeError, match=r"method='wiener' does not take \['clip'\]"):
        kf.estimate(a, a, 3, method="wiener", clip=3.0)


def test_fourier_ratio_on_fewer_pixels_than_coefficients_is_not_converged():
    # One used pixel of b for 25 coefficients: the ratio returns a kernel, but any kernel with
    # the same inner product with the footprint fits as well, so it must not claim success.
    rng = np.random.default_rng(3)
    a, k = rng.random((5, 5)), rng.random((5, 5))
    b = kf.convolve(a, k, mode="valid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = kf.estimate(a, b, (5, 5), method="fourier")
    assert not fit.converged
    assert re.search(r"1 used pixel\(s\) for the kernel's 25 coefficients", fit.message)
    assert fit.verdict.level == "failed"
