"""Geometry rules, checked against scipy.signal and scipy.ndimage themselves."""

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

import kernelfit as kf
from kernelfit.core.conventions import as_image, make_geometry, normalize_boundary, normalize_center, normalize_shape, output_size_of

KERNEL_SHAPES = [(1, 1), (3, 3), (4, 6), (5, 4), (2, 2)]
# Forward-model agreement: both sides sum the same ≤ 30 products in float64, so the
# difference is a few ulps of the largest output; 1e-12 relative is the bar.
RTOL = 1e-12


def _rel(x, y):
    return np.abs(x - y).max() / np.abs(y).max()


@pytest.fixture
def image():
    return np.random.default_rng(3).random((23, 19))


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("mode", ["same", "valid", "full"])
@pytest.mark.parametrize("ours,theirs", [("fill", "fill"), ("wrap", "wrap"), ("reflect", "symm")])
def test_convolve_matches_signal_convolve2d(image, shape, mode, ours, theirs):
    k = np.random.default_rng(4).normal(size=shape)
    expected = scipy.signal.convolve2d(image, k, mode=mode, boundary=theirs)
    assert _rel(kf.convolve(image, k, boundary=ours, mode=mode), expected) < RTOL


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("mode", ["constant", "wrap", "reflect", "nearest", "mirror"])
def test_convolve_matches_ndimage_with_its_centre(image, shape, mode):
    k = np.random.default_rng(5).normal(size=shape)
    expected = scipy.ndimage.convolve(image, k, mode=mode, cval=0.0)
    center = (shape[0] // 2, shape[1] // 2)
    assert _rel(kf.convolve(image, k, boundary=mode, center=center), expected) < RTOL


def test_convolve_valid_boundary_gives_valid_output(image):
    k = np.ones((4, 6))
    expected = scipy.signal.convolve2d(image, k, mode="valid")
    out = kf.convolve(image, k, boundary="valid")
    assert out.shape == (20, 14)
    assert _rel(out, expected) < RTOL


def test_kernel_larger_than_image_matches_full_fftconvolve():
    # Seed 000's situation: a 'same' output from a kernel wider than the image.
    rng = np.random.default_rng(6)
    a, k = rng.random((10, 12)), rng.random((19, 23))
    expected = scipy.signal.oaconvolve(a, k, mode="same")
    assert _rel(kf.convolve(a, k, boundary="fill"), expected) < 1e-10  # FFT rounding


def test_delta_kernel_returns_the_image_exactly(image):
    for shape in KERNEL_SHAPES:
        delta = np.zeros(shape)
        delta[(shape[0] - 1) // 2, (shape[1] - 1) // 2] = 1
        for boundary in kf.BOUNDARIES[1:]:
            np.testing.assert_array_equal(kf.convolve(image, delta, boundary=boundary), image)


def test_float32_is_kept_and_integers_promoted():
    assert kf.convolve(np.ones((5, 5), np.float32), np.ones((3, 3), np.float32)).dtype == np.float32
    assert kf.convolve(np.ones((5, 5), np.uint8), np.ones((3, 3))).dtype == np.float64


def test_inputs_are_not_modified(image):
    before = image.copy()
    kf.convolve(image, np.ones((3, 3)), boundary="reflect")
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("alias,name", [("symm", "reflect"), ("constant", "fill"),
                                        ("circular", "wrap"), ("edge", "nearest"),
                                        ("EXTEND", "nearest"), ("grid-mirror", "reflect")])
def test_boundary_aliases(alias, name):
    assert normalize_boundary(alias) == name


def test_geometry_of_valid_boundary_with_same_sized_b():
    g = make_geometry((10, 12), (3, 4), boundary="valid", center=(0, 3))
    # b[i] = Σ k[j] a[i + c − j] needs i + c − (k−1) ≥ 0 and i + c ≤ H−1.
    assert g.used == (slice(2, 10), slice(0, 9))
    assert g.used_shape == (8, 9)


def test_output_size_detection():
    assert output_size_of((10, 10), (10, 10), (3, 3)) == "same"
    assert output_size_of((10, 10), (8, 8), (3, 3)) == "valid"
    assert output_size_of((10, 10), (12, 12), (3, 3)) == "full"


@pytest.mark.parametrize("call,exc,match", [
    (lambda: normalize_boundary("zero"), ValueError, "boundary='zero'"),
    (lambda: normalize_boundary(3), ValueError, "boundary=3"),
    (lambda: normalize_shape(-3), ValueError, r"shape=-3.*positive"),
    (lambda: normalize_shape((3, 0)), ValueError, "positive"),
    (lambda: normalize_shape("5x5"), TypeError, "shape='5x5'"),
    (lambda: normalize_shape((2.5, 3)), TypeError, "pair of ints"),
    (lambda: normalize_shape(True), TypeError, "shape=True"),
    (lambda: normalize_center((3, 0), (3, 3)), ValueError, "outside a kernel"),
    (lambda: normalize_center(1, (3, 3)), TypeError, "center=1"),
    (lambda: make_geometry((5, 5), (6, 3), boundary="valid"), ValueError, "larger than the image"),
    (lambda: make_geometry((5, 5), (3, 3), boundary="fill", output_size="big"), ValueError,
     "mode='big'"),
    (lambda: output_size_of((10, 10), (9, 10), (3, 3)), ValueError, r"b has shape \(9, 10\)"),
    (lambda: as_image(np.ones(5), "a"), ValueError, "a must be a 2-D image"),
    (lambda: as_image(np.ones((2, 2, 2)), "b"), ValueError, "b must be a 2-D image"),
    (lambda: as_image(np.ones((0, 4)), "a"), ValueError, "a is empty"),
    (lambda: as_image(np.ones((2, 2), complex), "a"), TypeError, "must be real"),
    (lambda: as_image(np.array([["x"]]), "a"), TypeError, "numeric"),
    (lambda: kf.convolve(np.ones((4, 4)), [[np.nan]]), ValueError, "kernel contains NaN"),
])
def test_errors_name_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
