"""Many pairs against stacked im2col least squares, and spatially varying kernels
(``variation=``): statistics against the explicit extended design, exact recovery, the d=0
limit, ``kf.convolve`` with a varying kernel, error paths."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.core.varying import VaryingKernel, monomial_powers
from kernelfit.fit.varying import VaryingKernelFit
from kernelfit.stats.varying import varying_statistics


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


def im2col_fill(a, shape):
    """Zero-padded footprints of every pixel of a 'same' output, convolution order."""
    kh, kw = shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(a, ((cy, kh - 1 - cy), (cx, kw - 1 - cx)))
    return sliding_window_view(padded, shape)[:, :, ::-1, ::-1].reshape(-1, kh * kw)


def stacked_lstsq(a_list, b_list, shape, keep_list=None):
    keep_list = keep_list or [np.ones(b.shape, bool) for b in b_list]
    X = np.vstack([im2col_fill(a, shape)[keep.ravel()] for a, keep in zip(a_list, keep_list)])
    y = np.concatenate([b[keep] for b, keep in zip(b_list, keep_list)])
    return np.linalg.lstsq(X, y, rcond=None)[0].reshape(shape)


# ------------------------------------------------------------------------- many pairs


@pytest.fixture
def twelve_pairs(rng):
    shape = (9, 9)
    k = rng.random(shape)
    k /= k.sum()
    a_list = [rng.standard_normal((64, 64)) for _ in range(12)]
    b_list = [kf.convolve(a, k, boundary="fill") + 0.05 * rng.standard_normal(a.shape)
              for a in a_list]
    return a_list, b_list, k, shape


def test_many_pairs_match_stacked_im2col_lstsq(twelve_pairs):
    a_list, b_list, k, shape = twelve_pairs
    fit = kf.estimate(a_list, b_list, shape, boundary="fill")
    ref = stacked_lstsq(a_list, b_list, shape)
    error, error_ref = (np.linalg.norm(x - k) / np.linalg.norm(k) for x in (fit.kernel, ref))
    assert error <= 1.02 * error_ref  # the acceptance criterion
    # Both are the same least-squares solution; they differ by rounding only (condition of
    # a white-noise Gram ~ 1, so ~1e-15 relative, with a wide margin).
    assert np.allclose(fit.kernel, ref, rtol=0, atol=1e-10)
    assert fit.n_used == 12 * 64 * 64 and fit.info["n_pairs"] == 12


def test_many_pairs_with_masks_and_nan(twelve_pairs, rng):
    a_list, b_list, k, shape = twelve_pairs
    a_list, b_list = a_list[:4], [b.copy() for b in b_list[:4]]
    masks = [rng.random(b.shape) > 0.2 for b in b_list]
    b_list[2][5, 7] = np.nan            # NaN in b: that pixel only
    keep = [m.copy() for m in masks]
    keep[2][5, 7] = False
    fit = kf.estimate(a_list, b_list, shape, boundary="fill", mask=masks)
    ref = stacked_lstsq(a_list, b_list, shape, keep)
    assert np.allclose(fit.kernel, ref, rtol=0, atol=1e-10)  # same solution, to rounding
    assert fit.n_used == sum(int(m.sum()) for m in keep)
    assert [u.sum() for u in fit.info["used"]] == [m.sum() for m in keep]


def test_many_pairs_mask_list_must_match(twelve_pairs):
    a_list, b_list, _, shape = twelve_pairs
    with pytest.raises(ValueError, match="mask must be None or a list of the same length"):
        kf.estimate(a_list[:2], b_list[:2], shape, mask=[None])


# ------------------------------------------------------------------------- statistics


def extended_design(a, shape, degree, boundary, b_shape, center=None):
    """Columns of the extended design from the definition: one convolution per (t, j)."""
    T = len(monomial_powers(degree))
    geometry = prepare_pair(a, np.zeros(b_shape), shape, boundary=boundary,
                            center=center).geometry
    from kernelfit.core.varying import _output_origin

    origin = _output_origin(geometry.output_size, shape, geometry.center)
    columns = []
    for t in range(T):
        for j in range(shape[0] * shape[1]):
            coefficients = np.zeros((T,) + tuple(shape))
            coefficients[t].flat[j] = 1.0
            vk = VaryingKernel(coefficients, degree, frame=b_shape, center=geometry.center,
                               origin=origin)
            out = kf.convolve(a, vk, boundary=boundary,
                              mode=geometry.output_size if boundary != "valid" else "valid")
            columns.append(out.ravel())
    return np.array(columns).T, geometry


@pytest.mark.parametrize("shape, boundary, out, center", [
    ((3, 4), "fill", "same", None), ((4, 3), "wrap", "same", (2, 1)),
    ((3, 3), "valid", "valid", None), ((2, 3), "reflect", "full", None),
])
@pytest.mark.parametrize("degree", [0, 1, 2])
def test_statistics_equal_explicit_extended_design(rng, shape, boundary, out, center, degree):
    a = rng.random((17, 19))
    b_shape = {"same": a.shape, "valid": (18 - shape[0], 20 - shape[1]),
               "full": (16 + shape[0], 18 + shape[1])}[out]
    b = rng.random(b_shape)
    X, geometry = extended_design(a, shape, degree, boundary, b_shape, center)
    pair = prepare_pair(a, b, shape, boundary=boundary, center=center)
    y = b[geometry.used].ravel()
    for method in ("fft", "im2col"):
        s = varying_statistics(pair, shape, degree, frame=b_shape, method=method)
        # Same sums in another order: rounding only (entries are O(100), eps·100·N).
        assert np.allclose(s.gram, X.T @ X, rtol=0, atol=1e-10)
        assert np.allclose(s.rhs, X.T @ y, rtol=0, atol=1e-10)
        assert s.n_used == y.size and np.isclose(s.btb, y @ y)


def test_masked_statistics_downdate_equals_explicit(rng):
    a, b = rng.random((40, 41)), rng.random((40, 41))
    mask = rng.random(b.shape) > 0.1
    pair = prepare_pair(a, b, (5, 5), boundary="fill", mask=mask)
    fft = varying_statistics(pair, (5, 5), 1, frame=b.shape, method="fft")
    explicit = varying_statistics(pair, (5, 5), 1, frame=b.shape, method="im2col")
    assert np.allclose(fft.gram, explicit.gram, rtol=0, atol=1e-9)  # rounding of O(1e3) sums
    assert np.allclose(fft.rhs, explicit.rhs, rtol=0, atol=1e-9)
    assert fft.n_used == explicit.n_used == mask.sum()


# ------------------------------------------------------------------------- fits


def linear_kernel(rng, shape, frame, center=None):
    """A kernel varying linearly over the frame (T = 3 coefficient kernels)."""
    center = center or ((shape[0] - 1) // 2, (shape[1] - 1) // 2)
    return VaryingKernel(rng.normal(size=(3,) + tuple(shape)), 1, frame=frame, center=center)


@pytest.mark.parametrize("boundary", ["fill", "nearest", "wrap"])
def test_exact_recovery_of_a_linearly_varying_kernel(rng, boundary):
    a = rng.random((48, 52))
    vk = linear_kernel(rng, (5, 4), a.shape)
    b = kf.convolve(a, vk, boundary=boundary)
    fit = kf.estimate(a, b, (5, 4), boundary=boundary, variation=1)
    assert isinstance(fit, VaryingKernelFit) and fit.converged
    # Noise-free and well conditioned: the least-squares solution is the truth to rounding.
    assert np.allclose(fit.params["variation"], vk.coefficients, rtol=0, atol=1e-10)
    for y, x in [(0, 0), (47, 51), (10.5, 30)]:
        assert np.allclose(fit.kernel_at(y, x), vk.at(y, x), rtol=0, atol=1e-10)
    assert np.allclose(fit.kernel, vk.at(23.5, 25.5), rtol=0, atol=1e-10)  # centre of b
    assert np.allclose(kf.convolve(a, fit, boundary=boundary), b, rtol=0, atol=1e-10)
    assert np.nanmax(np.abs(fit.residual)) < 1e-10


def test_valid_boundary_recovers_and_reproduces_b(rng):
    a = rng.random((50, 46))
    vk = linear_kernel(rng, (3, 5), a.shape)
    b = kf.convolve(a, vk, boundary="fill")   # the edges hold zero padding: 'valid' skips it
    fit = kf.estimate(a, b, (3, 5), variation=1)
    assert np.allclose(fit.params["variation"], vk.coefficients, rtol=0, atol=1e-10)
    used = fit.info["used"]
    prediction = kf.convolve(a, fit.varying, boundary="valid")  # the 'valid' part of b
    assert np.allclose(prediction, b[used].reshape(prediction.shape), rtol=0, atol=1e-10)


def test_two_pairs_share_a_varying_kernel(rng):
    a_list = [rng.random((30, 30)) for _ in range(2)]
    vk = VaryingKernel(rng.normal(size=(6, 3, 3)), 2, frame=(30, 30), center=(1, 1))
    b_list = [kf.convolve(a, vk) for a in a_list]
    fit = kf.estimate(a_list, b_list, 3, boundary="fill", variation=2)
    assert np.allclose(fit.params["variation"], vk.coefficients, rtol=0, atol=1e-9)
    assert isinstance(fit.residual, list) and len(fit.residual) == 2


def test_degree_zero_is_the_plain_fit(rng):
    a = rng.random((64, 60))
    b = kf.convolve(a, rng.random((5, 5))) + 0.01 * rng.standard_normal(a.shape)
    plain = kf.estimate(a, b, 5, boundary="fill")
    varying = kf.estimate(a, b, 5, boundary="fill", variation=0)
    # Same statistics computed by the same algorithm: equal to rounding.
    assert np.allclose(varying.kernel, plain.kernel, rtol=0, atol=1e-12)
    assert np.allclose(varying.stderr, plain.stderr, rtol=1e-9)
    assert np.isclose(varying.noise_std, plain.noise_std, rtol=1e-9)
    assert varying.n_used == plain.n_used


def test_masked_varying_fit_with_nan(rng):
    a = rng.random((40, 40))
    vk = linear_kernel(rng, (3, 3), a.shape)
    b = kf.convolve(a, vk)
    b[3, 4] = np.nan
    mask = np.ones(b.shape, bool)
    mask[10:14, 20:30] = False
    fit = kf.estimate(a, b, 3, boundary="fill", variation=1, mask=mask)
    assert np.allclose(fit.params["variation"], vk.coefficients, rtol=0, atol=1e-10)
    assert fit.n_used == mask.sum() - 1 and np.isnan(fit.residual[3, 4])


def test_noise_level_and_standard_errors(rng):
    a = rng.standard_normal((96, 96))
    vk = linear_kernel(rng, (3, 3), a.shape)
    b = kf.convolve(a, vk) + 0.1 * rng.standard_normal(a.shape)
    fit = kf.estimate(a, b, 3, boundary="fill", variation=1)
    # 9216 residuals: the estimate of σ = 0.1 is within ~1.5 % (3 standard deviations).
    assert abs(fit.noise_std - 0.1) < 0.0045
    errors = fit.info["variation"]["stderr"]
    z = (fit.params["variation"] - vk.coefficients) / errors
    # 27 z-scores of a calibrated fit: all within 4.
    assert errors.shape == (3, 3, 3) and np.all(np.abs(z) < 4)
    assert np.array_equal(fit.stderr, errors[0])


def test_varying_convolve_is_the_kernel_at_each_pixel(rng):
    a = rng.random((21, 23))
    vk = VaryingKernel(rng.normal(size=(6, 3, 4)), 2, frame=a.shape, center=(1, 1))
    out = kf.convolve(a, vk, boundary="reflect")
    for y, x in [(0, 0), (10, 5), (20, 22)]:
        plain = kf.convolve(a, vk.at(y, x), boundary="reflect", center=(1, 1))
        assert np.isclose(out[y, x], plain[y, x], rtol=1e-12)


def test_dot_product_of_extended_design(rng):
    """<X_ext θ, r> = <θ, X_extᵀ r>: kf.convolve with a varying kernel against the statistics'
    right-hand side."""
    a, r = rng.random((30, 33)), rng.standard_normal((30, 33))
    theta = rng.normal(size=(3, 5, 3))
    vk = VaryingKernel(theta, 1, frame=r.shape, center=(2, 1))
    pair = prepare_pair(a, r, (5, 3), boundary="mirror")
    s = varying_statistics(pair, (5, 3), 1, frame=r.shape)
    lhs = np.sum(kf.convolve(a, vk, boundary="mirror") * r)
    assert np.isclose(lhs, theta.ravel() @ s.rhs, rtol=1e-12)


def test_fit_serialises(rng, tmp_path):
    a = rng.random((24, 24))
    fit = kf.estimate(a, kf.convolve(a, linear_kernel(rng, (3, 3), a.shape)), 3,
                      boundary="fill", variation=1)
    d = fit.to_dict()
    assert np.array(d["params"]["variation"]).shape == (3, 3, 3)
    assert d["info"]["variation"]["terms"] == ["1", "x", "y"]
    assert "variation: array of shape (3, 3, 3)" in fit.summary()
    fit.save(tmp_path / "fit.json")


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("options, error, match", [
    ({"variation": -1}, ValueError, r"variation=-1 must be None or a non-negative integer"),
    ({"variation": 1.5}, ValueError, r"variation=1\.5 must be"),
    ({"variation": True}, ValueError, r"variation=True must be"),
    ({"variation": 1, "model": "gaussian"}, ValueError, r"model='gaussian' is not available "
     r"with variation="),
    # reg='ridge' and nonneg=True are available with variation= since the varying-kernel
    # holes were closed (tests/test_varying_holes.py); what stays refused:
    ({"variation": 1, "reg": "tv"}, ValueError, r"reg='tv' is not available"),
    ({"variation": 1, "nonneg": "yes"}, TypeError, r"nonneg='yes' must be True or False"),
    ({"variation": 1, "background": -1}, ValueError, r"background=-1 must be None or a "
     r"non-negative integer"),
    ({"variation": 1, "loss": "l1"}, ValueError, r"loss='l1' is not available"),
    ({"variation": 1, "method": "iterative"}, ValueError, r"method='iterative' is not "
     r"available with variation="),
    ({"variation": 1, "rank": 2}, TypeError, r"option 'rank', which variation= does not"),
    ({"variation": 1, "shape": None}, ValueError, r"shape=None \(chosen automatically\) is "
     r"not available with variation="),
    ({"variation": 40}, ValueError, r"variation=40 with shape=\(3, 3\) has 7749 unknowns"),
])
def test_refused_options(rng, options, error, match):
    a = rng.random((30, 30))
    options = {"shape": 3, **options}
    with pytest.raises(error, match=match):
        kf.estimate(a, a, boundary="fill", **options)


def test_refused_inputs(rng):
    a = rng.random((12, 12))
    with pytest.raises(ValueError, match=r"every b to have the same shape"):
        kf.estimate([a, a[:10]], [a, a[:10]], 3, boundary="fill", variation=1)
    with pytest.raises(ValueError, match=r"variation=6: the used part of b is \(6, 6\)"):
        kf.estimate(a, a[:6, :6], (7, 7), variation=6)
    with pytest.raises(ValueError, match=r"coefficients has shape \(2, 3, 3\); degree=1 "
                                         r"needs \(3, kh, kw\)"):
        VaryingKernel(np.zeros((2, 3, 3)), 1, frame=(9, 9), center=(1, 1))
    with pytest.raises(ValueError, match="coefficients contain NaN"):
        VaryingKernel(np.full((1, 3, 3), np.nan), 0, frame=(9, 9), center=(1, 1))


def test_cli_variation_writes_the_centre_kernel_and_the_coefficients(tmp_path):
    """--variation D: -o holds the kernel at b's centre, --json the (T, kh, kw) stack."""
    import json

    from kernelfit import cli

    rng = np.random.default_rng(2)
    a = rng.random((48, 48))
    fit_truth = np.zeros((3, 3, 3))
    fit_truth[0] = [[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]]
    fit_truth[1, 1, 1] = 0.1                        # the centre weight grows with x
    # A 'valid' b of 46²: pixel (0, 0) is centred on a's (1, 1) (origin = shape − 1 − center).
    varying = kf.VaryingKernel(fit_truth, 1, frame=(46, 46), center=(1, 1), origin=(1, 1))
    b = kf.convolve(a, varying, boundary="valid")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    status = cli.main([str(x) for x in ("estimate", tmp_path / "a.npy", tmp_path / "b.npy",
                                        "--shape", "3", "--variation", "1", "-q",
                                        "-o", tmp_path / "k.npy", "--json",
                                        tmp_path / "fit.json")])
    assert status == 0
    coefficients = np.array(json.loads((tmp_path / "fit.json").read_text())
                            ["params"]["variation"])
    # Noise-free: exact to rounding.
    np.testing.assert_allclose(coefficients, fit_truth, atol=1e-9)
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), varying.at(22.5, 22.5), atol=1e-9)


@pytest.mark.parametrize("boundary, shape, degree", [
    ("valid", (5, 3), 2), ("fill", (4, 5), 1), ("nearest", (3, 3), 2), ("wrap", (6, 4), 2)])
@pytest.mark.parametrize("holes", [False, True])
def test_blocked_statistics_equal_the_explicit_design(monkeypatch, boundary, shape, degree,
                                                      holes):
    """The blocked cross-Grams (kernelfit.stats.varying_lags) cut into many blocks — a block
    FFT length of 16 leaves a few pixels per block — give the statistics and the background
    cross terms of the explicit extended design, with NaN in a and a mask on b (the explicit
    rows are the used ones).  Tolerance: rounding of sums of O(10³) terms of O(1), 1e-12 of
    the largest entry."""
    from kernelfit.stats import varying_lags
    from kernelfit.stats.background import BackgroundBasis
    from kernelfit.stats.varying import varying_background_terms

    rng = np.random.default_rng(31)
    a = rng.random((41, 37)) + 1.0
    b_shape = (42 - shape[0], 38 - shape[1]) if boundary == "valid" else a.shape
    b = rng.random(b_shape)
    mask = None
    if holes:
        a[7, 20] = np.nan
        mask = rng.random(b_shape) > 0.1
    pair = prepare_pair(a, b, shape, boundary=boundary, mask=mask)
    X, geometry = extended_design(np.nan_to_num(a), shape, degree, boundary, b_shape)
    use = np.ones(pair.b_used.shape, bool) if pair.use is None else pair.use
    X, y = X[use.ravel()], b[geometry.used][use]
    monkeypatch.setattr(varying_lags, "BLOCK_FFT_LENGTH", 16)
    s = varying_statistics(pair, shape, degree, frame=b_shape, method="fft")
    scale = np.abs(X.T @ X).max()
    np.testing.assert_allclose(s.gram, X.T @ X, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(s.rhs, X.T @ y, rtol=0, atol=1e-12 * scale)
    assert s.n_used == y.size
    terms = varying_background_terms(pair, shape, degree, b_shape, 2)
    T = BackgroundBasis(pair.b_used.shape, 2).images.reshape(6, -1).T[use.ravel()]
    np.testing.assert_allclose(terms.cross, X.T @ T, rtol=0, atol=1e-12 * np.abs(X.T @ T).max())
    np.testing.assert_allclose(terms.ttb, T.T @ y, rtol=0, atol=1e-12 * np.abs(T.T @ y).max())


def test_blocked_residual_equals_the_direct_prediction(monkeypatch):
    """The residual made block by block (kernelfit.core.varying.residual_valid, block FFT
    length 20: blocks of a few pixels) equals b − convolve(a, fit.varying) − the fitted
    background, NaN where b is masked; rounding only (1e-12 of the image scale)."""
    from kernelfit.core import varying as core_varying

    rng = np.random.default_rng(32)
    a = rng.random((47, 52))
    b = rng.random((43, 50))             # 'valid' for a 5×3 kernel
    mask = rng.random(b.shape) > 0.05
    monkeypatch.setattr(core_varying, "RESIDUAL_FFT_LENGTH", 20)
    fit = kf.estimate(a, b, (5, 3), variation=2, background=1, mask=mask)
    background = fit.info["background"]["monomials"]
    y, x = np.mgrid[:43, :50]
    sy, sx = 2 * y / 42 - 1, 2 * x / 49 - 1
    sky = background["1"] + background["x"] * sx + background["y"] * sy
    expected = b - kf.convolve(a, fit.varying, boundary="valid") - sky
    expected[~mask] = np.nan
    np.testing.assert_allclose(fit.residual, expected, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("boundary", ["valid", "fill"])
def test_varying_kernel_with_a_polynomial_background_is_exact(boundary):
    """variation= with background=1: a linearly varying kernel plus a sky plane, noise-free,
    NaN in a: both recovered to rounding (1e-9), the residual is 0 and the background is
    reported like an invariant fit's."""
    rng = np.random.default_rng(9)
    a = rng.random((56, 50))
    coefficients = np.zeros((3, 3, 3))
    coefficients[0] = [[0.0, 0.2, 0.0], [0.1, 0.4, 0.1], [0.0, 0.2, 0.0]]
    coefficients[1, 1, 1] = 0.15
    coefficients[2, 0, 1] = -0.05
    frame = (54, 48) if boundary == "valid" else a.shape
    origin = (1, 1) if boundary == "valid" else (0, 0)
    truth = kf.VaryingKernel(coefficients, 1, frame=frame, center=(1, 1), origin=origin)
    y, x = np.mgrid[:frame[0], :frame[1]]
    sky = 3.0 + 0.01 * x - 0.02 * y
    b = kf.convolve(a, truth, boundary=boundary) + sky
    a[5, 40] = np.nan
    fit = kf.estimate(a, b, 3, boundary=boundary, variation=1, background=1)
    np.testing.assert_allclose(fit.params["variation"], coefficients, atol=1e-9)
    assert np.nanmax(np.abs(fit.residual)) < 1e-9
    assert fit.info["background"]["degree"] == 1 and np.shape(fit.background) == (3,)
    assert fit.n_used == np.count_nonzero(np.isfinite(fit.residual))
