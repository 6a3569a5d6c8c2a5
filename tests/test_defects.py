"""Saturation, the used-pixel map and quantisation (kernelfit.defects, design.prepare_pair)."""

import re

import numpy as np
import pytest
from skimage.data import camera

import kernelfit as kf
from kernelfit.core.defects import detect_floor, detect_saturation, quantisation_variance
from kernelfit.core.design import prepare_pair
from kernelfit.fit.free import fit_free_direct


def _photo():
    """scikit-image's camera, 2×2 block means (256², values 0…1, float64)."""
    return camera().astype(np.float64).reshape(256, 2, 256, 2).mean(axis=(1, 3)) / 255


def _gaussian(size=9, sigma=1.3):
    y, x = np.mgrid[: size, : size] - (size - 1) / 2
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / k.sum()


def _blurred_photo(seed):
    a = _photo()
    k = _gaussian()
    b = kf.convolve(a, k, boundary="nearest") + np.random.default_rng(seed).normal(0, 0.002,
                                                                                 a.shape)
    return a, b, k


# --- detection -------------------------------------------------------------------------------

def test_detects_the_ceiling_of_a_photo_clipped_at_80_percent():
    photo = camera()
    level = int(0.8 * photo.max())  # 204
    report = detect_saturation(np.clip(photo, 0, level))
    assert report.level == level
    assert report.n_pixels == np.count_nonzero(photo >= level)
    assert "saturated" in report.message


def test_detects_the_ceiling_of_a_blurred_noisy_float_photo():
    _, b, _ = _blurred_photo(1)
    ceiling = 0.8 * b.max()
    report = detect_saturation(np.minimum(b, ceiling))
    assert report.level == ceiling  # exactly the clip value: the plateau holds it unchanged
    assert report.n_pixels == np.count_nonzero(b >= ceiling)


def test_finds_the_255_plateau_of_a_saturated_8bit_image():
    overexposed = np.clip(np.round(camera() * 1.3), 0, 255).astype(np.uint8)
    report = detect_saturation(overexposed)
    assert report.level == 255
    assert report.n_pixels == np.count_nonzero(camera() * 1.3 >= 254.5)


@pytest.mark.parametrize("image", [
    camera(),                                   # 271 pixels at 255, 293 at 254: no plateau
    _blurred_photo(2)[1],                       # continuous values: one pixel at the maximum
    np.random.default_rng(3).normal(size=(200, 200)),
], ids=["camera-8bit", "blurred-float-photo", "gaussian-noise"])
def test_finds_nothing_on_unclipped_images(image):
    report = detect_saturation(image)
    assert report.level is None and report.n_pixels == 0
    assert report.message.startswith("no saturation")


@pytest.mark.parametrize("image,why", [
    (np.full((20, 20), np.nan), "no finite pixel"),
    (np.ones((20, 20)), "too few to tell"),                      # constant: no histogram
    ((np.arange(400).reshape(20, 20) % 2).astype(float), "too few to tell"),   # binary
    (np.minimum(np.arange(1000.0), 997), "fewer than"),           # 3 pixels at 997 < 5
    (np.minimum(-np.arange(1000.0), -10), "not positive"),
])
def test_no_ceiling_in_degenerate_images(image, why):
    report = detect_saturation(image)
    assert report.level is None
    assert why in report.message


def test_detection_refuses_non_numeric_input():
    with pytest.raises(TypeError, match="real numeric array"):
        detect_saturation(np.zeros(5, bool))


# --- saturation in prepare_pair -------------------------------------------------------------

def test_saturation_level_masks_exactly_b_at_or_above_it():
    rng = np.random.default_rng(4)
    a, b = rng.random((30, 28)), rng.random((30, 28))
    pair = prepare_pair(a, b, (3, 3), boundary="fill", saturation=0.9)
    np.testing.assert_array_equal(pair.used_map(), b < 0.9)
    assert pair.notes["saturation_b"] == 0.9
    assert pair.notes["n_saturated_b"] == np.count_nonzero(b >= 0.9)
    # A pixel exactly at the level counts as saturated.
    b[5, 5] = 0.9
    assert not prepare_pair(a, b, (3, 3), boundary="fill", saturation=0.9).used_map()[5, 5]


def test_saturation_auto_masks_the_plateau_and_reports_it():
    _, b, _ = _blurred_photo(5)
    clipped = np.minimum(b, 0.8 * b.max())
    pair = prepare_pair(_photo(), clipped, (9, 9), boundary="nearest", saturation="auto")
    assert pair.notes["saturation_b"] == 0.8 * b.max()
    np.testing.assert_array_equal(pair.used_map(), b < 0.8 * b.max())
    assert pair.notes["saturation_b_message"].startswith("saturated")


def test_saturation_auto_without_plateau_masks_nothing():
    _, b, _ = _blurred_photo(6)
    pair = prepare_pair(_photo(), b, (9, 9), boundary="nearest", saturation="auto")
    assert pair.n_used == b.size
    assert pair.notes["saturation_b"] is None and pair.notes["n_saturated_b"] == 0
    assert pair.notes["saturation_b_message"].startswith("no saturation")


def test_no_options_no_notes():
    pair = prepare_pair(np.ones((8, 8)), np.ones((8, 8)), 3, boundary="fill")
    assert pair.notes == {}


def _footprint_brute_force(a, b_shape, kernel_shape, boundary, level):
    """used[i] by the definition b[i] = Σ_j k[j] a[i + c − j]: every a pixel read must exist
    ('valid') and be finite and below ``level``; padded values follow the boundary rule."""
    kh, kw = kernel_shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    H, W = a.shape
    used = np.zeros(b_shape, bool)
    for i in range(b_shape[0]):
        for j in range(b_shape[1]):
            ok = True
            for u in range(kh):
                for v in range(kw):
                    y, x = i + cy - u, j + cx - v
                    inside = 0 <= y < H and 0 <= x < W
                    if boundary == "valid" and not inside:
                        ok = False
                    elif boundary == "nearest":
                        y, x = min(max(y, 0), H - 1), min(max(x, 0), W - 1)
                    elif boundary == "wrap":
                        y, x = y % H, x % W
                    elif not inside:  # 'fill': a zero, neither NaN nor saturated
                        continue
                    if ok and not (a[y, x] < level):  # catches NaN too
                        ok = False
            used[i, j] = ok
    return used


@pytest.mark.parametrize("boundary", ["valid", "fill", "nearest", "wrap"])
@pytest.mark.parametrize("kernel_shape", [(3, 3), (3, 4), (2, 5)])
def test_saturation_a_drops_the_footprint(boundary, kernel_shape):
    rng = np.random.default_rng(7)
    a = rng.random((12, 10))
    a[[0, 5, 11], [9, 4, 0]] = 2.0     # saturated, two of them on the edge
    a[8, 2] = np.nan                  # NaN and saturation combine
    b = rng.random(a.shape)
    pair = prepare_pair(a, b, kernel_shape, boundary=boundary, saturation_a=1.5)
    expected = _footprint_brute_force(a, b.shape, kernel_shape, boundary, 1.5)
    np.testing.assert_array_equal(pair.used_map(), expected)
    assert pair.notes["n_saturated_a"] == 3
    # A level equal to the saturated value: ">=" drops those pixels too.
    at_level = prepare_pair(a, b, kernel_shape, boundary=boundary, saturation_a=2.0)
    np.testing.assert_array_equal(at_level.used_map(), expected)


def test_saturation_a_auto_detects_a_clipped_a():
    a = _photo()
    clipped = np.minimum(a, 0.8 * a.max())
    pair = prepare_pair(clipped, a, (9, 9), boundary="valid", saturation_a="auto")
    assert pair.notes["saturation_a"] == 0.8 * a.max()
    assert pair.notes["n_saturated_a"] == np.count_nonzero(a >= 0.8 * a.max())
    assert pair.notes["n_dropped_by_saturation_a"] == 248 * 248 - pair.n_used


def test_everything_saturated_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable pixel.*saturated"):
        prepare_pair(np.ones((8, 8)), np.full((8, 8), 3.0), 3, boundary="fill", saturation=2)


@pytest.mark.parametrize("name", ["saturation", "saturation_a"])
@pytest.mark.parametrize("value,error,match", [
    ("magic", ValueError, "='magic' must be None, 'auto', a saturation level > 0 or a "
                          r"\(floor, ceiling\) pair"),
    (-1.0, ValueError, "=-1.0 must be"),
    (0, ValueError, "=0 must be"),
    (np.nan, ValueError, "=nan must be"),
    (np.inf, ValueError, "=inf must be"),
    (True, TypeError, "=True must be .* got bool"),
    ([255], TypeError, r"=\[255\] must be .* got list"),
    ((10, 5), ValueError, r"=\(10, 5\): the floor must be below the ceiling"),
    ((0, np.inf), ValueError, r"=\(0, inf\) must be .* its levels must be finite"),
    (("0", 255), TypeError, r"=\('0', 255\) must be .* got str"),
])
def test_bad_saturation_values(name, value, error, match):
    with pytest.raises(error, match=name + match):
        prepare_pair(np.ones((8, 8)), np.ones((8, 8)), 3, boundary="fill", **{name: value})


def test_auto_is_case_insensitive_and_levels_may_be_numpy_scalars():
    b = np.minimum(np.arange(400.0).reshape(20, 20), 300)
    pair = prepare_pair(np.ones((20, 20)), b, 3, boundary="fill", saturation="AUTO")
    assert pair.notes["saturation_b"] == 300
    pair = prepare_pair(np.ones((20, 20)), b, 3, boundary="fill", saturation=np.uint8(200))
    assert pair.notes["n_saturated_b"] == 200


# --- used-pixel map ---------------------------------------------------------------------------

def test_used_map_has_b_shape_and_marks_every_exclusion():
    rng = np.random.default_rng(8)
    a, b = rng.random((20, 16)), rng.random((20, 16))
    b[3, 4] = np.nan
    mask = np.ones(b.shape, bool)
    mask[10, 7] = False
    pair = prepare_pair(a, b, (5, 3), boundary="valid", mask=mask)
    used = pair.used_map()
    expected = np.zeros(b.shape, bool)
    expected[2:-2, 1:-1] = True        # 'valid' with a 5×3 kernel: centre (2, 1)
    expected[3, 4] = expected[10, 7] = False
    assert used.dtype == bool
    np.testing.assert_array_equal(used, expected)
    assert used.sum() == pair.n_used
    # Consistent with the residual: NaN exactly where unused.
    np.testing.assert_array_equal(np.isfinite(pair.residual(np.zeros((5, 3)))), used)


def test_used_map_of_a_valid_sized_b_is_all_true():
    rng = np.random.default_rng(9)
    pair = prepare_pair(rng.random((20, 16)), rng.random((16, 14)), (5, 3), boundary="valid")
    assert pair.used_map().shape == (16, 14) and pair.used_map().all()


# --- quantisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,expected", [
    (np.uint8, 1 / 12), (np.uint16, 1 / 12), (np.int32, 1 / 12), (np.int64, 1 / 12),
    (np.float32, 0.0), (np.float64, 0.0),
])
def test_quantisation_variance(dtype, expected):
    assert quantisation_variance(np.zeros((4, 4), dtype)) == expected


def test_quantisation_variance_is_the_rounding_noise():
    # Rounding uniform values to integers: the error variance is 1/12 within sampling error
    # (standard error of a variance of a uniform on 1e6 samples ≈ 0.0745/√1e6 ≈ 7e-5; 5e-4
    # is about 7 standard errors).
    x = np.random.default_rng(10).uniform(0, 255, 1_000_000)
    assert abs(np.var(np.round(x) - x) - quantisation_variance(np.round(x).astype(np.uint8))) \
        < 5e-4


def test_quantisation_variance_refuses_non_numbers():
    with pytest.raises(TypeError, match="real numeric array, got dtype bool"):
        quantisation_variance(np.zeros(3, bool))
    with pytest.raises(TypeError, match="got dtype complex128"):
        quantisation_variance(np.zeros(3, complex))


def test_prepare_pair_records_quantisation_from_the_given_dtype():
    rng = np.random.default_rng(11)
    a = rng.random((16, 16))
    b = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    pair = prepare_pair(a, b, 3, boundary="fill")
    assert pair.quantisation_var == 1 / 12 and pair.quantisation_var_a == 0.0
    swapped = prepare_pair(b, a, 3, boundary="fill")
    k = np.full((3, 3), 1 / 9)
    assert swapped.quantisation_floor() == 0.0
    assert swapped.quantisation_floor(k) == pytest.approx(np.sum(k**2) / 12, rel=1e-12)
    lists = prepare_pair(b.tolist(), a, 3, boundary="fill")   # Python ints are integers too
    assert lists.quantisation_var_a == 1 / 12


# --- end to end -------------------------------------------------------------------------------

def _kernel_error(a, b, k, boundary, **options):
    pair = prepare_pair(a, b, k.shape, boundary=boundary, **options)
    fit = fit_free_direct([pair], k.shape, reg=None, lam="auto", nonneg=False, normalize=None,
                          noise_std=None, single=True)
    return np.linalg.norm(fit.kernel - k) / np.linalg.norm(k)


@pytest.mark.parametrize("boundary", ["nearest", "valid"])
def test_saturation_auto_recovers_the_unclipped_accuracy(boundary):
    # Issue 5's acceptance: b clipped at 80 % of its maximum.  Masking 26 % of the pixels (the
    # bright, smooth sky of the photo, which carries little information on the kernel) costs
    # 1.00–1.07× the unclipped error over seeds 0–11 (≤ 1.1 required); plain least squares on
    # the clipped b is 9–14× worse (≥ 5× asserted, the figure the issue quotes).
    a, b, k = _blurred_photo(5)
    clipped = np.minimum(b, 0.8 * b.max())
    unclipped = _kernel_error(a, b, k, boundary)
    assert _kernel_error(a, clipped, k, boundary, saturation="auto") <= 1.1 * unclipped
    assert _kernel_error(a, clipped, k, boundary) >= 5 * unclipped
    # 'auto' on an unclipped b changes nothing.
    assert _kernel_error(a, b, k, boundary, saturation="auto") == unclipped


def test_saturation_a_auto_recovers_from_a_clipped_a():
    # a (not b) clipped at 80 %: its saturated pixels are wrong inputs to every b pixel that
    # sees them.  Dropping those footprints (30 % of the pixels) measured 1.06× the error with
    # the unclipped a (≤ 1.2 asserted: fewer pixels, a little more noise), plain LS 8.2×.
    a, b, k = _blurred_photo(0)
    clipped = np.minimum(a, 0.8 * a.max())
    reference = _kernel_error(a, b, k, "valid")
    assert _kernel_error(clipped, b, k, "valid", saturation_a="auto") <= 1.2 * reference
    assert _kernel_error(clipped, b, k, "valid") >= 5 * reference


# --- through kf.estimate and the CLI ----------------------------------------------------------


def test_estimate_saturation_auto_reports_and_recovers():
    """Clipped at 80 % of its maximum: with saturation='auto' the error stays within 1.1× of
    the unclipped fit (measured 0.98–1.07× over 12 seeds), plain LS is far worse."""
    import kernelfit as kf
    from skimage import data
    rng = np.random.default_rng(5)
    a = data.camera()[128:384, 128:384] / 255.0
    y, x = np.mgrid[-4:5, -4:5]
    k = np.exp(-(x * x + y * y) / (2 * 1.3 ** 2))
    k /= k.sum()
    b = kf.convolve(a, k, boundary="nearest") + 0.002 * rng.normal(size=a.shape)
    clipped = np.minimum(b, 0.8 * b.max())
    err = lambda fit: np.linalg.norm(fit.kernel - k) / np.linalg.norm(k)  # noqa: E731
    clean = kf.estimate(a, b, 9, boundary="nearest")
    fit = kf.estimate(a, clipped, 9, boundary="nearest", saturation="auto")
    plain = kf.estimate(a, clipped, 9, boundary="nearest")
    assert fit.info["saturation_b"] == pytest.approx(0.8 * b.max())
    assert fit.info["used"].sum() == fit.n_used < a.size
    assert err(fit) <= 1.1 * err(clean)
    assert err(plain) >= 5 * err(clean)


def test_estimate_integer_b_has_a_quantisation_floor():
    import kernelfit as kf
    a = np.random.default_rng(1).random((40, 40)) * 200
    b = np.rint(kf.convolve(a, np.full((3, 3), 1 / 9), boundary="fill")).astype(np.uint8)
    fit = kf.estimate(a, b, 3, boundary="fill")
    assert fit.info["quantisation_var"] == pytest.approx(1 / 12)
    assert fit.noise_std >= np.sqrt(1 / 12) - 1e-12


# --- the floor: 8-bit outputs clip at 0 too (issue 14) ---------------------------------------

def test_detects_the_floor_of_a_photo_clipped_at_51():
    report = detect_floor(np.clip(camera(), 51, 255))
    assert report.level == 51
    assert report.n_pixels == np.count_nonzero(camera() <= 51)
    assert "at the floor 51" in report.message


def test_finds_no_floor_on_the_unclipped_camera():
    # One pixel at its minimum 0: no plateau.
    report = detect_floor(camera())
    assert report.level is None and "fewer than" in report.message


def test_saturation_pair_masks_both_ends_of_b():
    rng = np.random.default_rng(4)
    a, b = rng.random((30, 28)), rng.random((30, 28))
    pair = prepare_pair(a, b, (3, 3), boundary="fill", saturation=(0.1, 0.9))
    np.testing.assert_array_equal(pair.used_map(), (b > 0.1) & (b < 0.9))
    assert pair.notes["saturation_b_floor"] == 0.1 and pair.notes["saturation_b"] == 0.9
    assert pair.notes["n_saturated_b"] == np.count_nonzero((b <= 0.1) | (b >= 0.9))
    only_floor = prepare_pair(a, b, (3, 3), boundary="fill", saturation=(0.1, None))
    np.testing.assert_array_equal(only_floor.used_map(), b > 0.1)


def test_saturation_a_pair_grows_the_floor_of_a_by_the_footprint():
    a = np.ones((12, 12))
    a[5, 5] = 0.0
    pair = prepare_pair(a, np.ones((12, 12)), 3, boundary="valid", saturation_a=(0.0, None))
    assert pair.notes["n_saturated_a"] == 1
    assert pair.notes["n_dropped_by_saturation_a"] == 9


def _eight_bit_pair(seed):
    """An 8-bit b clipped at both ends: about 20 % of its pixels at 0 and 9 % at 255."""
    rng = np.random.default_rng(seed)
    a = camera()[128:384, 128:384].astype(np.float64)
    k = 1.5 * _gaussian()
    raw = kf.convolve(a, k, boundary="nearest") - 40 + rng.normal(0, 0.5, a.shape)
    return a, raw, np.clip(np.rint(raw), 0, 255).astype(np.uint8), k


@pytest.mark.parametrize("seed", [0, 1])
def test_floor_and_ceiling_recover_the_kernel_of_an_8_bit_b(seed):
    # Measured over seeds 0-2: the unclipped (rounded) fit's error 0.008-0.009; with both
    # ends dropped 1.08-1.11x that; with only the ceiling 7x; plain 20x.
    a, raw, b8, k = _eight_bit_pair(seed)
    err = lambda fit: np.linalg.norm(fit.kernel - k) / np.linalg.norm(k)  # noqa: E731
    clean = err(kf.estimate(a, np.rint(raw), 9, boundary="nearest", background=0))
    both = kf.estimate(a, b8, 9, boundary="nearest", background=0, saturation=(0, 255))
    auto = kf.estimate(a, b8, 9, boundary="nearest", background=0, saturation="auto")
    ceiling = kf.estimate(a, b8, 9, boundary="nearest", background=0, saturation=255)
    assert auto.info["saturation_b_floor"] == 0 and auto.info["saturation_b"] == 255
    assert auto.n_used == both.n_used == np.count_nonzero((b8 > 0) & (b8 < 255))
    assert err(both) <= 1.2 * clean and err(auto) <= 1.2 * clean
    assert err(ceiling) >= 4 * clean


def test_clipped_8_bit_b_is_named_in_the_summary():
    a, _, b8, _ = _eight_bit_pair(0)
    fit = kf.estimate(a, b8, 9, boundary="nearest", background=0)
    assert re.search(r"b: \d+ pixels \(\d+\.\d+%\) sit at 0 and 255, the ends of uint8's range",
                     fit.info["clipping_b"])
    assert re.search(r"clipping: b: .*pass saturation=\(0, 255\) or saturation='auto'",
                     fit.summary())
    handled = kf.estimate(a, b8, 9, boundary="nearest", background=0, saturation="auto")
    assert "clipping_b" not in handled.info and "clipping:" not in handled.summary()


def test_auto_boundary_fallback_names_the_clipping():
    # b cropped from a larger blurred 8-bit image, 2 % of it clipped at 0: no rule explains
    # its border (best score 8.7), and the message names the pixels at uint8's end as a
    # cause to consider.
    rng = np.random.default_rng(2)
    big = camera()[96:416, 96:416].astype(np.float64)
    blurred = kf.convolve(big, _gaussian()) - 5 + rng.normal(0, 0.5, big.shape)
    b8 = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)[32:-32, 32:-32]
    fit = kf.estimate(big[32:-32, 32:-32], b8, 9, boundary="auto", background=0)
    assert fit.boundary == "valid"
    assert re.search(r"no edge rule explains the border of b .* or clipped \(b: \d+ pixels "
                     r"\(2\.\d+%\) sit at 0, the end of uint8's range", fit.message)
