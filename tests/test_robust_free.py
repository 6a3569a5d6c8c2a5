"""Robust free kernels (kernelfit.robust): Huber, L1 (IRLS + exact finish, and the LP),
sigma-clipping; their statistics, certificates, uncertainties and errors."""

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

import kernelfit as kf
import kernelfit.fit.robust as robust
from kernelfit.core.design import prepare_pair
from kernelfit.fit.robust import fit_free_robust
from kernelfit.stats.compute import statistics


def _gaussian(n, sigma):
    y = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (y / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def _err(k_hat, k):
    return float(np.linalg.norm(k_hat - k) / np.linalg.norm(k))


def _salt_and_pepper(b, fraction, rng):
    out = b.copy()
    hit = rng.random(b.shape) < fraction
    out[hit] = np.where(rng.random(hit.sum()) < 0.5, b.min(), b.max())
    return out, hit


@pytest.fixture(scope="module")
def camera_case():
    """The issue's acceptance case: camera photo 256² (central crop, [0, 1]), 9×9 Gaussian
    σ = 1.3, noise 0.002, 'valid', 2 % salt-and-pepper outliers in b."""
    skimage_data = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(20240501)
    a = skimage_data.camera().astype(float)[128:384, 128:384] / 255.0
    k = _gaussian(9, 1.3)
    b = kf.convolve(a, k, boundary="valid") + 0.002 * rng.standard_normal((248, 248))
    b_out, hit = _salt_and_pepper(b, 0.02, rng)
    clean_ls = _err(kf.estimate(a, b, 9).kernel, k)
    outlier_ls = _err(kf.estimate(a, b_out, 9).kernel, k)
    pair = prepare_pair(a, b_out, 9, boundary="valid")
    return a, b_out, hit, k, pair, clean_ls, outlier_ls


def _small_case(seed=3, n=40, outliers=0.05, noise="laplace"):
    """A small problem the full LP solves in milliseconds (38² pixels × 9 coefficients)."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    k = np.array([[0.0, 0.2, 0.0], [0.1, 0.5, 0.3], [0.0, 0.1, -0.05]])
    clean = kf.convolve(a, k, mode="valid")
    e = 0.01 * (rng.laplace(size=clean.shape) if noise == "laplace"
                else rng.standard_normal(clean.shape))
    b, _ = _salt_and_pepper(clean + e, outliers, rng)
    return a, b, k, prepare_pair(a, b, 3, boundary="valid")


# ---------------------------------------------------------------------------------------------
# Acceptance: robust beats plain least squares under outliers
# ---------------------------------------------------------------------------------------------

def test_plain_least_squares_is_ruined(camera_case):
    *_, clean_ls, outlier_ls = camera_case
    # The premise of the acceptance test (issue: "≈ 0.5"; 0.41 with this crop and seed).
    assert clean_ls < 0.02 and outlier_ls > 0.3


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_acceptance_robust_loss(camera_case, loss):
    a, b_out, hit, k, pair, clean_ls, _ = camera_case
    fit = fit_free_robust([pair], (9, 9), loss=loss)
    assert fit.converged, fit.message
    # The bar: within 1.5× the plain-LS error on the same data without outliers
    # (measured: huber 1.05×, l1 1.33× — L1 is 64 % efficient under Gaussian noise).
    assert _err(fit.kernel, k) <= 1.5 * clean_ls
    weights = fit.info["weights"]
    assert weights.shape == b_out.shape and fit.n_used == b_out.size
    # Every salted pixel that stands out is down-weighted hard (some salt lands near the
    # local value and is harmless; those are allowed to keep a large weight).
    wild = hit & (np.abs(fit.residual) > 0.05)
    assert wild.sum() > 0.9 * hit.sum() and np.all(weights[wild] < 0.2)
    assert fit.info["n_downweighted"] >= wild.sum()
    assert fit.info["iterations"] >= 1 and fit.method == f"irls-{loss}"
    # The noise level is the robust one, not inflated by the outliers (true σ = 0.002).
    assert 0.0018 < fit.noise_std < 0.0023
    if loss == "l1":
        assert fit.info["l1_exact"] and fit.info["l1_certificate"] <= 1 + 1e-9


def test_acceptance_sigma_clipping(camera_case):
    a, b_out, hit, k, pair, clean_ls, outlier_ls = camera_case
    fit = fit_free_robust([pair], (9, 9), loss="l2", clip=3.0)
    assert fit.converged, fit.message
    assert _err(fit.kernel, k) < 0.1 * outlier_ls and _err(fit.kernel, k) <= 1.5 * clean_ls
    w = fit.info["weights"]
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert fit.info["n_clipped"] == fit.info["n_downweighted"] == int((w == 0).sum())
    # Gaussian noise beyond 3σ is 0.27 % of the pixels; the rest clipped are outliers.
    assert fit.info["n_clipped"] < hit.sum() + 0.006 * w.size
    # The clipping-corrected noise level is unbiased to a few per cent (true σ = 0.002).
    assert abs(fit.noise_std / 0.002 - 1) < 0.05


# ---------------------------------------------------------------------------------------------
# L1: IRLS with exact finish against the full linear program
# ---------------------------------------------------------------------------------------------

def _primal_l1(X, y, nonneg=False, total=None):
    """Reference: the primal LP min Σ(t⁺ + t⁻), Xk + t⁺ − t⁻ = y (independent of robust.py's
    dual formulation)."""
    N, p = X.shape
    A = sp.hstack([sp.csr_matrix(X), sp.eye(N), -sp.eye(N)]).tocsr()
    b_eq = y
    if total is not None:
        A = sp.vstack([A, sp.csr_matrix(np.r_[np.ones(p), np.zeros(2 * N)][None])])
        b_eq = np.r_[y, total]
    cost = np.r_[np.zeros(p), np.ones(2 * N)]
    bounds = [(0 if nonneg else None, None)] * p + [(0, None)] * (2 * N)
    res = scipy.optimize.linprog(cost, A_eq=A, b_eq=b_eq, bounds=bounds, method="highs")
    assert res.status == 0
    return res.fun


@pytest.mark.parametrize("nonneg,normalize", [(False, None), (True, None), (False, 1.0),
                                              (True, 0.7)])
def test_l1_irls_equals_lp(nonneg, normalize):
    a, b, k, pair = _small_case()
    irls = fit_free_robust([pair], (3, 3), loss="l1", nonneg=nonneg, normalize=normalize)
    lp = fit_free_robust([pair], (3, 3), loss="l1", method="lp", nonneg=nonneg,
                         normalize=normalize)
    X = np.lib.stride_tricks.sliding_window_view(a, (3, 3)).reshape(-1, 9)[:, ::-1]
    reference = _primal_l1(X, b.ravel(), nonneg, normalize)
    # Both are exact LP solutions: the brief asks 1e-6 relative; they agree to ~1e-13.
    assert irls.info["objective"] == pytest.approx(lp.info["objective"], rel=1e-6)
    assert lp.info["objective"] == pytest.approx(reference, rel=1e-9)
    assert irls.converged and irls.info["l1_exact"] and lp.method == "lp"
    assert np.abs(irls.residual).sum() == pytest.approx(irls.info["objective"], rel=1e-12)
    if nonneg:
        assert irls.kernel.min() >= 0 and lp.kernel.min() >= 0
    if normalize is not None:
        assert irls.kernel.sum() == pytest.approx(normalize, abs=1e-9)


def test_l1_irls_alone_reaches_the_minimum():
    # With a quadratic reg (here lam=0, so the minimiser is the plain L1 one) there is no LP
    # finish: the ε schedule alone must get within its 1e-6 gap target.
    a, b, k, pair = _small_case(seed=5)
    exact = fit_free_robust([pair], (3, 3), loss="l1", method="lp")
    irls = fit_free_robust([pair], (3, 3), loss="l1", reg="ridge", lam=0.0)
    assert irls.converged and not irls.info["l1_exact"]
    gap = irls.info["objective"] - exact.info["objective"]
    assert -1e-12 <= gap / exact.info["objective"] <= 1e-6
    # The reported gap is an estimate (the IRLS stage is solved to 1e-6, not exactly): it
    # has the right size.
    assert gap <= 3 * irls.info["l1_gap_estimate"]


def test_l1_exact_on_noise_free_data_with_outliers():
    # L1 ignores up to a large fraction of wild pixels exactly when the rest fit perfectly.
    rng = np.random.default_rng(8)
    a = rng.random((50, 50))
    k = rng.random((5, 5))
    b, _ = _salt_and_pepper(kf.convolve(a, k, mode="valid"), 0.1, rng)
    fit = fit_free_robust([prepare_pair(a, b, 5, boundary="valid")], (5, 5), loss="l1")
    assert fit.info["l1_exact"]
    np.testing.assert_allclose(fit.kernel, k, atol=1e-10)  # a vertex solve: rounding only


def test_lp_refuses_large_problems(camera_case):
    pair = camera_case[4]
    with pytest.raises(ValueError, match=r"N·p = 61504 pixels × 81 coefficients = 4,981,824"):
        fit_free_robust([pair], (9, 9), loss="l1", method="lp")


# ---------------------------------------------------------------------------------------------
# Huber
# ---------------------------------------------------------------------------------------------

def test_huber_with_huge_f_scale_is_least_squares():
    a, b, k, pair = _small_case(noise="gauss")
    ls = kf.estimate(a, b, 3)
    huber = fit_free_robust([pair], (3, 3), loss="huber", f_scale=1e6)
    # Every pixel is an inlier: one Newton step is the normal equations (rounding only).
    np.testing.assert_allclose(huber.kernel, ls.kernel, rtol=0, atol=1e-12)
    np.testing.assert_allclose(huber.stderr, ls.stderr, rtol=1e-8)
    assert huber.info["n_downweighted"] == 0 and huber.converged


def test_huber_solution_is_stationary():
    a, b, k, pair = _small_case(seed=11, noise="gauss")
    f_scale = 0.02
    fit = fit_free_robust([pair], (3, 3), loss="huber", f_scale=f_scale)
    r = b - kf.convolve(a, fit.kernel, mode="valid")
    X = np.lib.stride_tricks.sliding_window_view(a, (3, 3)).reshape(-1, 9)[:, ::-1]
    psi = np.clip(r.ravel(), -f_scale, f_scale)
    # The Huber gradient Xᵀψ(r) vanishes at the minimiser; relative to its scale Σ|x||ψ|
    # the Newton finish leaves rounding (~1e-15), far below 1e-10.
    assert np.abs(X.T @ psi).max() <= 1e-10 * (np.abs(X).T @ np.abs(psi)).max()
    assert fit.info["newton_steps"] >= 1 and fit.info["f_scale"] == f_scale


def test_huber_default_f_scale_is_a_fixed_point_of_the_mad():
    """The default threshold is 1.345 robust σ of the Huber fit's *own* residuals: it is
    re-estimated until it moves by < 2 %, so it agrees with a fresh MAD to that 2 %."""
    a, b, k, pair = _small_case(noise="gauss")
    fit = fit_free_robust([pair], (3, 3), loss="huber")
    r = fit.residual[np.isfinite(fit.residual)]
    sigma = 1.4826 * np.median(np.abs(r - np.median(r)))
    assert fit.info["f_scale"] == pytest.approx(1.345 * sigma, rel=0.02)


def test_default_huber_threshold_is_not_inflated_by_outliers(camera_case):
    """Started from least-squares residuals (inflated by the outliers) the threshold would be
    several times the noise; re-estimated, it ends within 30 % of 1.345 × the true noise
    0.002 (the MAD of 248² residuals is good to a few %, the kernel's misfit adds a little)."""
    pair = camera_case[4]
    fit = fit_free_robust([pair], (9, 9), loss="huber")
    assert fit.info["f_scale"] == pytest.approx(1.345 * 0.002, rel=0.3)


def test_maxiter_reached_is_reported(camera_case):
    pair = camera_case[4]
    fit = fit_free_robust([pair], (9, 9), loss="huber", maxiter=1)
    assert not fit.converged and "maxiter=1" in fit.message


def test_huber_constraints_pass_through(camera_case):
    a, b_out, hit, k, pair, clean_ls, _ = camera_case
    fit = fit_free_robust([pair], (9, 9), loss="huber", nonneg=True, normalize=1.0)
    assert fit.kernel.min() >= 0 and fit.kernel.sum() == pytest.approx(1.0, abs=1e-10)
    assert _err(fit.kernel, k) <= 1.5 * clean_ls
    assert np.all(np.isnan(fit.stderr)) and "not computed" in fit.message


def test_regularised_huber_shrinks():
    a, b, k, pair = _small_case(noise="gauss")
    loose = fit_free_robust([pair], (3, 3), loss="huber", reg="ridge", lam=0.0)
    tight = fit_free_robust([pair], (3, 3), loss="huber", reg="ridge", lam=10.0)
    assert np.linalg.norm(tight.kernel) < 0.5 * np.linalg.norm(loose.kernel)
    assert tight.lam == 10.0 and tight.converged


# ---------------------------------------------------------------------------------------------
# Uncertainty: asymptotic efficiencies under Gaussian noise
# ---------------------------------------------------------------------------------------------

def test_stderr_ratios_match_asymptotic_efficiency():
    rng = np.random.default_rng(17)
    a = rng.random((130, 130))
    k = rng.random((5, 5))
    b = kf.convolve(a, k, mode="valid") + 0.05 * rng.standard_normal((126, 126))
    pair = prepare_pair(a, b, 5, boundary="valid")
    ls = kf.estimate(a, b, 5)
    l1 = fit_free_robust([pair], (5, 5), loss="l1")
    huber = fit_free_robust([pair], (5, 5), loss="huber")
    ratio_l1 = np.median(l1.stderr / ls.stderr)
    ratio_huber = np.median(huber.stderr / ls.stderr)
    # Gaussian noise: the median's variance is π/2 that of the mean (ratio 1.2533), Huber's
    # with c = 1.345 is 1/0.95 (1.026).  The density at 0 comes from a kernel estimate on
    # 15876 residuals (a few per cent of noise): 7 % and 3 % margins.
    assert abs(ratio_l1 / np.sqrt(np.pi / 2) - 1) < 0.07
    assert abs(ratio_huber / np.sqrt(1 / 0.95) - 1) < 0.03
    assert 0 < l1.info["density_at_zero"]
    assert abs(l1.noise_std / 0.05 - 1) < 0.05 and abs(huber.noise_std / 0.05 - 1) < 0.05


# ---------------------------------------------------------------------------------------------
# The weighted statistics and the pixel bookkeeping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction_low", [0.1, 0.9])
def test_weighted_statistics_are_exact(fraction_low, monkeypatch):
    # fraction_low=0.1 takes the downdate path, 0.9 the direct sum; both against im2col.
    rng = np.random.default_rng(4)
    pairs, ws = [], []
    for shape_a in [(30, 26), (24, 24)]:
        a = rng.random(shape_a)
        b = rng.random((shape_a[0] - 3, shape_a[1] - 4))
        b[0, 0] = np.nan                      # a masked pixel
        pairs.append(prepare_pair(a, b, (4, 5), boundary="valid"))
    for cached in (True, False):
        if not cached:
            monkeypatch.setattr(robust, "_CACHE_BYTES", 0)
        design = robust._PixelDesign(pairs, (4, 5))
        assert (design.cache is not None) == cached
        w = np.where(rng.random(design.n) < fraction_low, rng.random(design.n), 1.0)
        (got,) = design.weighted([w])
        want = sum(statistics(pair.extended, pair.b_used, (4, 5),
                              weights=design.on_pair(w, j), method="im2col")
                   for j, pair in enumerate(pairs))
        scale = np.abs(want.gram).max()
        assert np.abs(got.gram - want.gram).max() <= 1e-12 * scale
        assert np.abs(got.rhs - want.rhs).max() <= 1e-12 * np.abs(want.rhs).max()
        assert got.btb == pytest.approx(want.btb, rel=1e-12)
        kernel = rng.random(20)
        prediction = np.concatenate([
            kf.convolve(pair.extended, kernel.reshape(4, 5), mode="valid").ravel()[f]
            for pair, f in zip(pairs, design.flat)])
        np.testing.assert_allclose(design.predict(kernel), prediction, rtol=1e-12)
        v = rng.standard_normal(design.n)
        # Dot test of the adjoint: <Xk, v> = <k, Xᵀv>.
        assert design.predict(kernel) @ v == pytest.approx(kernel @ design.adjoint(v),
                                                           rel=1e-12)


def test_masks_and_several_pairs():
    rng = np.random.default_rng(6)
    k = _gaussian(5, 1.0)
    a_list, b_list = [], []
    for _ in range(2):
        a = rng.random((60, 60))
        b, _ = _salt_and_pepper(kf.convolve(a, k) + 0.001 * rng.standard_normal((60, 60)),
                                0.03, rng)
        b[10:14, 20:30] = np.nan
        a_list.append(a)
        b_list.append(b)
    pairs = [prepare_pair(a, b, 5, boundary="fill") for a, b in zip(a_list, b_list)]
    fit = fit_free_robust(pairs, (5, 5), loss="huber", single=False)
    assert isinstance(fit.info["weights"], list) and len(fit.info["weights"]) == 2
    for w, b in zip(fit.info["weights"], b_list):
        assert w.shape == b.shape and np.all(np.isnan(w[10:14, 20:30]))
        assert np.all(np.isfinite(w[np.isfinite(b)]))
    assert fit.n_used == sum(np.isfinite(b).sum() for b in b_list)
    assert _err(fit.kernel, k) < 0.01 and isinstance(fit.residual, list)


@pytest.mark.parametrize("options", [dict(loss="huber"), dict(loss="l1"),
                                     dict(loss="l2", clip=3.0)])
def test_noise_free_data_is_recovered(options):
    rng = np.random.default_rng(9)
    a = rng.random((40, 40))
    k = rng.random((3, 4))
    pair = prepare_pair(a, kf.convolve(a, k, boundary="wrap"), (3, 4), boundary="wrap")
    fit = fit_free_robust([pair], (3, 4), **options)
    np.testing.assert_allclose(fit.kernel, k, atol=1e-10)  # rounding of a 12-unknown solve
    assert fit.converged


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,match", [
    (dict(loss="l3"), r"loss='l3' is not available"),
    (dict(loss="l2"), r"loss='l2' without clip is plain least squares"),
    (dict(loss="huber", clip=3.0), r"clip=3.0 is sigma-clipping for loss='l2'"),
    (dict(loss="l2", clip=0.5), r"clip=0.5 must be a finite number >= 1"),
    (dict(loss="l2", clip=float("nan")), r"clip=nan must be a finite number"),
    (dict(loss="l2", clip="3"), r"clip='3' must be a finite number"),
    (dict(loss="l1", f_scale=1.0), r"f_scale=1.0 applies to loss='huber' only"),
    (dict(loss="huber", f_scale=0.0), r"f_scale=0.0 must be a finite number > 0"),
    (dict(loss="huber", f_scale=-1), r"f_scale=-1 must be a finite number > 0"),
    (dict(loss="huber", method="fourier"), r"method='fourier' is not available"),
    (dict(loss="huber", method="lp"), r"method='lp' .* needs loss='l1', not loss='huber'"),
    (dict(loss="l2", clip=3.0, method="lp"), r"needs loss='l1', not loss='l2' with clip"),
    (dict(loss="l1", method="lp", reg="ridge", lam=1.0), r"method='lp' cannot add"),
    (dict(loss="huber", reg="ridge"), r"lam=None: a robust loss with reg='ridge' needs lam"),
    (dict(loss="huber", reg="ridge", lam="auto"), r"lam='auto'.*no automatic choice"),
    (dict(loss="huber", reg="tv", lam=1.0), r"reg='tv' is not available with a robust"),
    (dict(loss="l1", nonneg=1), r"nonneg=1 must be True or False"),
    (dict(loss="l1", normalize=np.inf), r"normalize=inf must be None or a finite number"),
    (dict(loss="l1", maxiter=0), r"maxiter=0 must be an integer >= 1"),
    (dict(loss="l1", tol=-1.0), r"tol=-1.0 must be a finite number > 0"),
])
def test_bad_options(options, match):
    a, b, k, pair = _small_case()
    with pytest.raises(ValueError, match=match):
        fit_free_robust([pair], (3, 3), **options)


def test_too_many_unknowns():
    a, b, k, pair = _small_case()
    with pytest.raises(ValueError, match=r"shape=\(65, 65\): robust losses .* at most 4096"):
        fit_free_robust([pair], (65, 65), loss="huber")


# ------------------------------------------------------------------ through kf.estimate

@pytest.mark.parametrize("options", [dict(loss="huber"), dict(loss="l1"), dict(clip=3.0),
                                     dict(loss="l1", method="lp")])
def test_estimate_routes_robust_free_fits(options):
    """kf.estimate(model='free') with a robust loss, clip= or method='lp' is fit_free_robust,
    with the used-pixel map added by estimate."""
    a, b, k, pair = _small_case()
    fit = kf.estimate(a, b, 3, **options)
    direct = fit_free_robust([pair], (3, 3), loss=options.get("loss", "l2"),
                             clip=options.get("clip"), method=options.get("method"))
    np.testing.assert_array_equal(fit.kernel, direct.kernel)
    assert fit.method == direct.method and fit.info["used"].shape == b.shape


@pytest.mark.parametrize("options, match", [
    (dict(loss="l1", background=0), r"background=0 is available with sigma-clipping "
     r"\(clip=\) and loss='huber', not with loss='l1'"),
    (dict(loss="l1", method="iterative"), r"method='iterative' is not available with it"),
    (dict(loss="huber", radial_bins=3), r"robust free fit does not take \['radial_bins'\]"),
    (dict(f_scale=0.1), r"f_scale= is the Huber threshold: pass loss='huber'"),
    (dict(method="lp"), r"method='lp' is the exact L1 linear program: it needs loss='l1'"),
    (dict(loss="huber", model="radial"), r"loss='huber' is available for the free model"),
    (dict(loss="huber", reg="ridge"), r"needs lam as a finite number"),
])
def test_estimate_refuses_what_robust_fits_cannot_do(options, match):
    a, b, _, _ = _small_case()
    with pytest.raises((ValueError, TypeError), match=match):
        kf.estimate(a, b, 3, **options)


@pytest.mark.parametrize("options", [dict(clip=3.0), dict(loss="huber")])
def test_robust_fits_with_a_background_recover_both(options):
    """clip= or loss='huber' with background=1: a sky plane plus cosmic rays.  Least squares
    with the background is ruined by the outliers; the robust fits recover the kernel within
    1.3x the clean fit's error (noise 1e-3: both are ~1e-3 relative) and the plane within 1e-4
    (its standard error is ~1e-5)."""
    rng = np.random.default_rng(21)
    a = rng.random((90, 90))
    k = np.array([[0.0, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.1, 0.1]])
    y, x = np.mgrid[:88, :88]
    clean = kf.convolve(a, k, mode="valid") + 1e-3 * rng.standard_normal((88, 88))
    sky = 2.0 + 0.3 * (x / 87) - 0.1 * (y / 87)
    hit = rng.random(clean.shape) < 0.03
    b = np.where(hit, clean + sky + rng.uniform(1, 5, clean.shape), clean + sky)
    err = lambda kernel: np.linalg.norm(kernel - k) / np.linalg.norm(k)  # noqa: E731
    reference = kf.estimate(a, clean + sky, 3, background=1)
    plain = kf.estimate(a, b, 3, background=1)
    fit = kf.estimate(a, b, 3, background=1, **options)
    assert fit.method == ("sigma-clip" if "clip" in options else "irls-huber") and fit.converged
    assert err(plain.kernel) > 10 * err(reference.kernel)
    assert err(fit.kernel) <= 1.3 * err(reference.kernel)
    assert fit.info["n_downweighted"] >= 0.9 * hit.sum()
    # b − a ⊛ k̂ − residual is the fitted background: the sky plane, to 1e-4.
    background = b - kf.convolve(a, fit.kernel, mode="valid") - fit.residual
    np.testing.assert_allclose(background, sky, atol=1e-4)
    assert np.all(np.isfinite(fit.stderr)) and np.shape(fit.background) == (3,)
