"""kf.estimate for free kernels: exact recovery, statistics of the noise, and every error."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelfit as kf
from kernelfit.demo import seed000_data

SHAPES = [(1, 1), (3, 3), (4, 6), (5, 4), (15, 15)]
# Noise-free data: the only error is rounding in G (≈1e-15 relative) amplified by cond(G),
# which is ≲ 1e3 for uniform random images, so 1e-8 has a wide margin.
EXACT = 1e-8


def _rel_err(estimate, truth):
    return np.linalg.norm(estimate - truth) / np.linalg.norm(truth)


def _centers(shape):
    kh, kw = shape
    return sorted({None, (kh // 2, kw // 2), (0, kw - 1)}, key=str)


def _cases():
    for shape in SHAPES:
        for boundary in kf.BOUNDARIES:
            sizes = ["same", "full"] if boundary != "valid" else ["same", "full", "valid"]
            for size in sizes:
                for center in (_centers(shape) if size == "same" else [None]):
                    yield shape, boundary, size, center


@pytest.mark.parametrize("shape,boundary,size,center", list(_cases()))
def test_exact_recovery(shape, boundary, size, center):
    rng = np.random.default_rng(31)
    a = rng.random((48, 45))
    k = rng.normal(size=shape)
    b = kf.convolve(a, k, boundary=boundary, center=center, mode=size)
    fit = kf.estimate(a, b, shape, boundary=boundary, center=center)
    assert _rel_err(fit.kernel, k) <= EXACT
    assert fit.converged and fit.message == ""
    # The forward model with the fitted kernel reproduces b.
    again = kf.convolve(a, fit.kernel, boundary=fit.boundary, center=fit.center, mode=size)
    used = np.isfinite(fit.residual)
    np.testing.assert_allclose(again[used], b[used], atol=1e-9 * np.abs(b).max())


@pytest.mark.parametrize("size", ["valid", "same"])
def test_valid_boundary_is_right_whatever_made_the_edges(size):
    # b made with edge replication; the default 'valid' fit ignores the edges and is exact.
    rng = np.random.default_rng(32)
    a, k = rng.random((40, 40)), rng.random((5, 5))
    b = kf.convolve(a, k, boundary="nearest")
    fit = kf.estimate(a, b, 5)
    assert _rel_err(fit.kernel, k) <= EXACT
    assert fit.n_used == 36 * 36
    assert np.isnan(fit.residual[:2]).all() and np.isfinite(fit.residual[2:-2, 2:-2]).all()


def test_cramer_rao_efficiency_and_calibrated_stderr():
    """Least squares attains the Cramér–Rao bound σ²·trace(G⁻¹) and reports honest errors."""
    rng = np.random.default_rng(33)
    a = rng.random((256, 256))
    k = rng.normal(size=(7, 7)) / 7
    sigma, trials = 0.05, 100
    clean = kf.convolve(a, k, mode="valid")
    errors, stderrs, crb = [], [], None
    for _ in range(trials):
        fit = kf.estimate(a, clean + rng.normal(0, sigma, clean.shape), 7)
        errors.append(fit.kernel - k)
        stderrs.append(fit.stderr)
        if crb is None:
            crb = sigma**2 * np.trace(fit.cov) / fit.noise_std**2
    errors, stderrs = np.array(errors), np.array(stderrs)
    mse = np.mean(np.sum(errors**2, axis=(1, 2)))
    # The MSE over 100 trials has a relative spread of about sqrt(2/(49·100)) ≈ 2 %, so the
    # efficiency bound 0.95 is ≥ 2.5 spreads away from the expected ratio 1.
    assert crb / mse >= 0.95
    assert mse / crb >= 0.90  # and not suspiciously better than the bound either
    # z-scores pooled over 49 coefficients × 100 trials: their std is 1 ± ~1 %.
    z = errors / stderrs
    assert abs(z.std() - 1) <= 0.1
    empirical = errors.std(axis=0)
    assert abs(np.sqrt(np.mean(empirical**2) / np.mean(stderrs**2)) - 1) <= 0.15


@pytest.mark.parametrize("reg", ["ridge", "gradient", "laplacian"])
def test_regularised_fit_solves_the_penalised_normal_equations(reg):
    from kernelfit.solvers.regularisers import operator

    rng = np.random.default_rng(34)
    a, k = rng.random((20, 20)), rng.random((3, 3))
    b = kf.convolve(a, k, mode="valid") + rng.normal(0, 0.1, (18, 18))
    lam = 0.05
    fit = kf.estimate(a, b, 3, reg=reg, lam=lam)
    X = np.array([a[i:i + 3, j:j + 3][::-1, ::-1].ravel() for i in range(18) for j in range(18)])
    n = X.shape[0]
    L = operator(reg, (3, 3)).toarray()
    expected = np.linalg.solve(X.T @ X / n + lam * L.T @ L, X.T @ b.ravel() / n)
    # Both solve the same 9×9 well-conditioned system; 1e-10 allows for its rounding.
    np.testing.assert_allclose(fit.kernel.ravel(), expected, rtol=1e-10)
    assert fit.lam == lam
    assert fit.info["dof"] < 9  # shrinkage removes effective parameters


def test_rank_deficiency_is_reported_not_hidden():
    a = np.ones((30, 30))  # a constant image only determines the kernel's sum
    b = kf.convolve(a, np.full((3, 3), 1 / 9), mode="valid")
    with pytest.warns(kf.RankDeficientWarning, match="reg='ridge'"):
        fit = kf.estimate(a, b, 3)
    assert not fit.converged
    assert "rank-deficient" in fit.message and "smaller shape" in fit.message
    assert fit.info["rank"] == 1
    assert np.isnan(fit.stderr).all() and fit.cov is None
    assert np.isclose(fit.kernel.sum(), 1.0)  # the determined direction is still right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kf.estimate(a, b, 3, reg="ridge", lam=1e-3).converged


def test_nan_in_b_drops_only_that_pixel():
    rng = np.random.default_rng(35)
    a, k = rng.random((30, 30)), rng.random((3, 3))
    b = kf.convolve(a, k, boundary="fill")
    b[10, 12] = np.nan
    fit = kf.estimate(a, b, 3, boundary="fill")
    assert fit.n_used == 30 * 30 - 1 and np.isnan(fit.residual[10, 12])
    assert _rel_err(fit.kernel, k) <= EXACT


def test_nan_in_a_drops_every_pixel_it_touches():
    rng = np.random.default_rng(36)
    a, k = rng.random((30, 30)), rng.random((3, 4))
    b = kf.convolve(a, k, boundary="fill")
    a_bad = a.copy()
    a_bad[10, 12] = np.inf
    fit = kf.estimate(a_bad, b, (3, 4), boundary="fill")
    assert fit.n_used == 30 * 30 - 12  # a 3×4 footprint touches 12 output pixels
    assert _rel_err(fit.kernel, k) <= EXACT


def test_mask_excludes_corrupted_pixels():
    rng = np.random.default_rng(37)
    a, k = rng.random((40, 40)), rng.random((5, 5))
    b = kf.convolve(a, k, boundary="reflect")
    b[5:9, 20:30] += 100.0  # a corrupted patch
    mask = np.ones(b.shape, bool)
    mask[5:9, 20:30] = False
    fit = kf.estimate(a, b, 5, boundary="reflect", mask=mask)
    assert _rel_err(fit.kernel, k) <= EXACT
    assert fit.n_used == 40 * 40 - 40


def test_several_pairs_share_one_kernel():
    rng = np.random.default_rng(38)
    k = rng.random((4, 4))
    a_list = [rng.random((20, 25)), rng.random((31, 17))]
    b_list = [kf.convolve(a, k, mode="valid") for a in a_list]
    fit = kf.estimate(a_list, b_list, (4, 4))
    assert _rel_err(fit.kernel, k) <= EXACT
    assert fit.n_used == 17 * 22 + 28 * 14 and len(fit.residual) == 2


def test_inputs_are_not_modified_and_dtypes_are_accepted():
    rng = np.random.default_rng(39)
    a = (rng.random((20, 20)) * 255).astype(np.uint8)
    b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest").astype(np.float32)
    b[0, 0] = np.nan
    a0, b0 = a.copy(), b.copy()
    fit = kf.estimate(a, b, 3, boundary="nearest")
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    assert fit.kernel.dtype == np.float64
    # float32 storage of b limits the fit to ~1e-7 relative.
    assert _rel_err(fit.kernel, np.full((3, 3), 1 / 9)) < 1e-5


def test_the_64x64_direct_path_on_request():
    """Above the default limit (51×51) the direct path still works when asked for."""
    rng = np.random.default_rng(40)
    a, k = rng.random((140, 140)), rng.random((64, 64))
    fit = kf.estimate(a, kf.convolve(a, k, mode="valid"), 64, method="normal")
    assert fit.method == "normal"
    assert _rel_err(fit.kernel, k) <= 1e-7  # cond(G) grows with 4096 unknowns


# --- hypothesis properties -------------------------------------------------------------------

images = st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed))
boundaries = st.sampled_from(["fill", "wrap", "reflect", "nearest", "mirror", "valid"])
kernel_shapes = st.tuples(st.integers(1, 4), st.integers(1, 4))


# b is noise unrelated to a, so the kernels are noise too: the warning saying so is right.
@pytest.mark.filterwarnings("ignore::kernelfit.IdentifiabilityWarning")
@settings(max_examples=25, deadline=None)
@given(rng=images, boundary=boundaries, shape=kernel_shapes,
       alpha=st.floats(-3, 3), beta=st.floats(-3, 3))
def test_estimate_is_linear_in_b(rng, boundary, shape, alpha, beta):
    a = rng.random((14, 13))
    b1, b2 = rng.normal(size=(14, 13)), rng.normal(size=(14, 13))
    k1 = kf.estimate(a, b1, shape, boundary=boundary).kernel
    k2 = kf.estimate(a, b2, shape, boundary=boundary).kernel
    k12 = kf.estimate(a, alpha * b1 + beta * b2, shape, boundary=boundary).kernel
    scale = np.abs(alpha * k1).max() + np.abs(beta * k2).max() + 1e-300
    assert np.abs(k12 - (alpha * k1 + beta * k2)).max() <= 1e-9 * scale


@settings(max_examples=25, deadline=None)
@given(rng=images, shape=kernel_shapes, shift=st.tuples(st.integers(-5, 5), st.integers(-5, 5)))
def test_circular_shift_of_both_images_leaves_the_kernel(rng, shape, shift):
    a, k = rng.random((16, 15)), rng.normal(size=shape)
    b = kf.convolve(a, k, boundary="wrap") + 0.01 * rng.normal(size=(16, 15))
    k0 = kf.estimate(a, b, shape, boundary="wrap").kernel
    k1 = kf.estimate(np.roll(a, shift, (0, 1)), np.roll(b, shift, (0, 1)), shape,
                     boundary="wrap").kernel
    np.testing.assert_allclose(k1, k0, atol=1e-9 * np.abs(k0).max())


@settings(max_examples=25, deadline=None)
@given(rng=images, boundary=boundaries, shape=kernel_shapes, gain=st.floats(0.1, 10))
def test_kernel_sum_is_the_gain_of_a_scaled_image(rng, boundary, shape, gain):
    a = rng.random((15, 15))
    fit = kf.estimate(a, gain * a, shape, boundary=boundary,
                      center=((shape[0] - 1) // 2, (shape[1] - 1) // 2))
    assert np.isclose(fit.kernel.sum(), gain, rtol=1e-9)


# --- errors -----------------------------------------------------------------------------------

A = np.random.default_rng(41).random((12, 12))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(b=np.ones((11, 12))), ValueError, r"b has shape \(11, 12\)"),
    (dict(shape=13), ValueError, "larger than the image"),
    (dict(boundary="zeros-ish"), ValueError, "boundary='zeros-ish'"),
    (dict(shape=-2), ValueError, "positive"),
    (dict(shape="3"), TypeError, "shape='3'"),
    (dict(b=np.full((12, 12), np.nan)), ValueError, "b has no finite pixels"),
    (dict(a=np.full((12, 12), np.nan)), ValueError, "a has no finite pixels"),
    (dict(a=np.ones(12)), ValueError, "a must be a 2-D image"),
    (dict(mask=np.ones((3, 3), bool)), ValueError, "mask has shape"),
    (dict(mask=np.ones((12, 12))), TypeError, "mask must be a boolean array"),
    (dict(mask=np.zeros((12, 12), bool)), ValueError, "no usable pixel"),
    (dict(model="gaussian-ish"), ValueError, "model=.gaussian-ish."),
    (dict(loss="l7"), ValueError, "loss='l7'"),
    (dict(reg="tv2"), ValueError, "reg='tv2'"),
    (dict(method="magic"), ValueError, "method='magic'"),
    (dict(lam=0.1), ValueError, "reg=None"),
    (dict(reg="ridge", lam=None), ValueError, "lam=None"),
    (dict(reg="ridge", lam=-1.0), ValueError, "lam=-1.0"),
    (dict(nonneg=1), TypeError, "nonneg=1"),
    (dict(normalize="one"), ValueError, "normalize='one'"),
    (dict(nonneg=True, normalize=-1.0), ValueError, "impossible with nonneg"),
    (dict(noise_std=0.0), ValueError, "noise_std=0.0"),
    (dict(reg="tv", method="normal"), ValueError, "proximal method"),
    (dict(center=(5, 5)), ValueError, "outside a kernel"),
])
def test_errors(kwargs, exc, match):
    args = dict(a=A, b=A, shape=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        kf.estimate(args.pop("a"), args.pop("b"), args.pop("shape"), **args)


def test_list_errors():
    with pytest.raises(ValueError, match="same non-zero length"):
        kf.estimate([A, A], [A], 3)
    with pytest.raises(ValueError, match="mask must be None or a list"):
        kf.estimate([A, A], [A, A], 3, mask=np.ones((12, 12), bool))
    with pytest.raises(ValueError, match=r"b\[1\] has no finite pixels"):
        kf.estimate([A, A], [A, np.full((12, 12), np.nan)], 3)


# --- the result object ------------------------------------------------------------------------


def test_result_summary_dict_and_save(tmp_path):
    import json

    rng = np.random.default_rng(42)
    a, k = rng.random((30, 30)), rng.random((3, 3))
    fit = kf.estimate(a, kf.convolve(a, k, mode="valid") + rng.normal(0, 0.01, (28, 28)), 3)
    text = fit.summary()
    assert "free kernel 3x3" in text and "status: ok" in text
    d = json.loads(json.dumps(fit.to_dict()))  # JSON-safe all the way down
    np.testing.assert_allclose(d["kernel"], fit.kernel)
    assert d["boundary"] == "valid" and d["n_used"] == 28 * 28
    fit.save(tmp_path / "fit.json")
    assert json.loads((tmp_path / "fit.json").read_text())["shape"] == [3, 3]
    fit.save(tmp_path / "fit.npz")
    with np.load(tmp_path / "fit.npz") as saved:
        np.testing.assert_array_equal(saved["kernel"], fit.kernel)
        np.testing.assert_array_equal(saved["stderr"], fit.stderr)
    assert "<table>" in fit._repr_html_()
    with pytest.raises(ValueError, match="writes .json or .npz"):
        fit.save(tmp_path / "fit.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.json", "fit.npz"]


# --- regularisation and constraints through the front door ----------------------------------


def _motion_case(rng, size=96, noise=0.05):
    a = rng.random((size, size))
    k = np.zeros((9, 9))
    k[4, 1:8] = 1.0
    k[3, 6:8] = 0.5
    k /= k.sum()
    b = kf.convolve(a, k, mode="valid") + rng.normal(0, noise, (size - 8, size - 8))
    return a, b, k


def test_nonneg_and_normalize_hold_exactly():
    a, b, k = _motion_case(np.random.default_rng(43))
    plain = kf.estimate(a, b, 9)
    fit = kf.estimate(a, b, 9, nonneg=True, normalize=1.0)
    assert fit.kernel.min() >= 0.0
    assert abs(fit.kernel.sum() - 1.0) <= 1e-10
    # The constraints remove the noise's negative lobes: a clearly better kernel.
    assert _rel_err(fit.kernel, k) < 0.7 * _rel_err(plain.kernel, k)
    held = fit.info["active"]
    assert held.any() and np.all(fit.kernel[held] == 0) and np.all(fit.stderr[held] == 0)


def test_normalize_alone_fixes_the_sum():
    a, b, k = _motion_case(np.random.default_rng(44))
    fit = kf.estimate(a, b, 9, normalize=2.0)
    assert abs(fit.kernel.sum() - 2.0) <= 1e-10
    # The sum is fixed, so its variance (1ᵀ cov 1) vanishes up to rounding.
    assert abs(fit.cov.sum()) <= 1e-12 * np.abs(fit.cov).sum()


@pytest.mark.parametrize("reg", ["ridge", "gradient", "laplacian"])
def test_lam_auto_chooses_by_gcv_and_reports_the_curve(reg):
    a, b, k = _motion_case(np.random.default_rng(45), noise=0.2)
    fit = kf.estimate(a, b, 9, reg=reg)
    selection = fit.info["lambda_selection"]
    assert selection["criterion"] == "gcv" and fit.lam > 0
    assert len(selection["lams"]) == len(selection["scores"]) >= 20
    discrepancy = kf.estimate(a, b, 9, reg=reg, noise_std=0.2)
    assert discrepancy.info["lambda_selection"]["criterion"] == "discrepancy"


# --- structured models through the front door ------------------------------------------------


@pytest.mark.parametrize("model,target", [("radial", 0.10), ("powerlaw", 0.01)])
def test_seed000_kernel_larger_than_the_image(model, target):
    src, tgt, kernel = seed000_data(5)
    fit = kf.estimate(src, tgt, kernel.shape, boundary="fill", model=model)
    assert fit.model == model and fit.converged
    assert _rel_err(fit.kernel, kernel) <= target  # the acceptance targets
    # The residuals are the N(0, 1) noise: σ̂ within a few % of 1 (10⁴ pixels).
    assert abs(fit.noise_std - 1) < 0.05
    assert fit.residual.shape == tgt.shape


def test_structured_model_option_errors():
    with pytest.raises(ValueError, match="nonneg=True is not available with model='radial'"):
        kf.estimate(A, A, 3, model="radial", nonneg=True)
    with pytest.raises(ValueError, match="reg='ridge' is not available"):
        kf.estimate(A, A, 3, model="powerlaw", reg="ridge")
    with pytest.raises(TypeError, match=r"does not take \['rank'\]"):
        kf.estimate(A, A, 3, model="radial", rank=2)
    with pytest.raises(TypeError, match="model='free' does not take"):
        kf.estimate(A, A, 3, rank=2)


def test_parametric_gaussian_through_estimate():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(46)
    a = rng.random((96, 96))
    b = gaussian_filter(a, 2.1, mode="reflect", truncate=4.0) + rng.normal(0, 0.01, a.shape)
    fit = kf.estimate(a, b, 17, boundary="reflect", model="gaussian", normalize=1.0)
    assert fit.model == "gaussian" and fit.converged
    # σ̂ within 4 reported standard errors of the truth (a 1-in-15000 event if calibrated).
    assert abs(fit.params["sigma"] - 2.1) < 4 * fit.stderr["sigma"]
    assert abs(fit.kernel.sum() - 1.0) < 1e-12
    with pytest.raises(ValueError, match="nonneg=True is not available with model='gaussian'"):
        kf.estimate(a, b, 17, model="gaussian", nonneg=True)
    with pytest.raises(ValueError, match="loss='l1' is available for the free model and the "
                       "parametric models"):
        kf.estimate(a, b, 5, loss="l1", model="separable")


def test_to_dict_describes_image_sized_info_arrays():
    """The used-pixel map of a 70×70 'valid' fit (68² > MAX_INFO_ARRAY values) is described in
    to_dict(), not listed; the fit keeps the array."""
    from kernelfit.fit.result import MAX_INFO_ARRAY

    a = np.random.default_rng(3).random((70, 70))
    fit = kf.estimate(a, kf.convolve(a, np.eye(3) / 3, mode="valid"), 3)
    assert fit.info["used"].size > MAX_INFO_ARRAY
    assert "shape (68, 68)" in fit.to_dict()["info"]["used"]["omitted"]
