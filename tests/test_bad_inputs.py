"""The bad-input corpus: every kind of input kernelfit cannot use, in one place.

Each bad input must end in a clear error naming the parameter or file and the problem:

* through the API (``kernelfit.estimate``, ``kernelfit.convolve``, the ``kernelfit.io``
  readers) a ``ValueError`` or ``TypeError``;
* through the installed ``kernelfit`` command, run as a separate process, exit status 2 and
  exactly one stderr line ``kernelfit: error: ...`` -- no traceback, and no output file (nor a
  temporary one) left behind.

Files that are valid but need a decision (colour, RGBA, gray+alpha, multi-page TIFF) are
refused with advice unless the decision is given (``channel=``/``gray=``/``page=``, or
``--channel``/``--gray``/``--page``), and the images that must simply be read right (16-bit
PNG, float TIFF, 1-bit PNG) are checked value for value.  Hypothesis fuzzes ``estimate``'s
arguments and the file readers: the only exceptions allowed are ``ValueError``/``TypeError``.

Inputs that must be used right rather than refused (issue 14, "nothing lost, nothing silently
wrong"): masked arrays (the mask is honoured by ``estimate`` on every path and by
``convolve``, which masks the footprint), NaN/inf in ``convolve``'s FFT path (kept in their
footprint, exactly as scipy.signal.convolve2d), images of magnitude 1e-300 to 1e+300 (the
exact kernel, scale-equivariant), a large DC offset (the QR least-squares kernel); and the
problems a method cannot take (Wiener with one pixel, Richardson-Lucy with a one-hot ``a``,
``method='normal'`` beyond memory) as clear ``ValueError``s in the API corpus.

The corpus: 225 cases (``pytest --collect-only tests/test_bad_inputs.py``), all passing; the
two unwritable-directory cases are skipped when run as root.  67 API refusals (3 of them
from issue 14), 35 reader refusals, 37 command-line refusals, 2 fuzzers, 5 valid files read
exactly, 7 constant or ragged inputs, 5 more (unwritable directories, tifffile's log, a
constant ``a`` on the command line, distinct ids), and 67 cases of issue 14: 23 masked or
non-finite inputs, 40 scales, 4 DC offsets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import scipy.signal
import tifffile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import kernelfit as kf
from kernelfit import io

RNG = np.random.default_rng(2024)
A = RNG.random((12, 12))
K3 = np.array([[0.0, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.0]])
RAGGED = [[1.0, 2.0, 3.0], [4.0, 5.0]]


# --------------------------------------------------------------------------------------------
# API: estimate and convolve
# --------------------------------------------------------------------------------------------

def _estimate(**changes):
    """A call of kf.estimate(A, A, 3, ...) with some arguments replaced."""
    args = dict(a=A, b=A, shape=3)
    args.update(changes)
    return lambda: kf.estimate(args.pop("a"), args.pop("b"), args.pop("shape"), **args)


def _with_nan(image, fraction=1.0):
    out = np.array(image, dtype=float)
    out.flat[: int(out.size * fraction)] = np.nan
    return out


# (id, call, exception, message regex).  The regex names the parameter and the problem.
API_CASES = [
    # wrong types
    ("a-str", _estimate(a="a.png"), TypeError, r"a must be a numeric array, got dtype <U5"),
    ("a-none", _estimate(a=None), TypeError, r"a must be a 2-D numeric array, got None"),
    ("b-none", _estimate(b=None), TypeError, r"b must be a 2-D numeric array, got None"),
    ("a-object-array", _estimate(a=np.full((12, 12), None)), TypeError,
     r"a must be a numeric array, got dtype object"),
    ("b-datetime", _estimate(b=np.zeros((12, 12), "datetime64[s]")), TypeError,
     r"b must be a numeric array, got dtype datetime64"),
    ("a-ragged-convolve", lambda: kf.convolve(RAGGED, K3), ValueError,
     r"a is not a rectangular array: its rows .* different lengths"),
    ("kernel-ragged-convolve", lambda: kf.convolve(A, RAGGED), ValueError,
     r"kernel is not a rectangular array"),
    ("a-complex", _estimate(a=A + 1j), TypeError, r"a must be real, got complex dtype"),
    ("b-complex", _estimate(b=(A + 0j).astype(np.complex64)), TypeError, r"b must be real"),
    ("a-bool", _estimate(a=A > 0.5), TypeError, r"a is a boolean array.*mask="),
    ("b-bool", _estimate(b=A > 0.5), TypeError, r"b is a boolean array"),
    ("kernel-bool-convolve", lambda: kf.convolve(A, K3 > 0), TypeError,
     r"kernel is a boolean array"),
    # dimensions and sizes
    ("a-0d", _estimate(a=np.float64(3.0)), ValueError, r"a must be a 2-D image, .*shape \(\)"),
    ("b-1d", _estimate(b=np.ones(12)), ValueError, r"b must be a 2-D image, .*shape \(12,\)"),
    ("a-3d-colour", _estimate(a=np.ones((12, 12, 3))), ValueError,
     r"a must be a 2-D image, .*\(12, 12, 3\)"),
    ("a-4d", _estimate(a=np.ones((1, 1, 12, 12))), ValueError, r"a must be a 2-D image"),
    ("a-empty", _estimate(a=np.ones((0, 12))), ValueError, r"a is empty \(shape \(0, 12\)\)"),
    ("b-empty", _estimate(b=np.ones((0, 0))), ValueError, r"b is empty"),
    ("kernel-empty-convolve", lambda: kf.convolve(A, np.ones((3, 0))), ValueError,
     r"kernel is empty"),
    # shapes of a and b
    ("b-transposed", _estimate(b=np.ones((12, 10))), ValueError,
     r"b has shape \(12, 10\), which fits neither"),
    ("b-matches-no-rule", _estimate(b=np.ones((13, 13))), ValueError,
     r"b has shape \(13, 13\).*'same'.*'valid'.*'full'"),
    ("list-lengths", _estimate(a=[A, A], b=[A]), ValueError, r"same non-zero length"),
    ("list-empty", _estimate(a=[], b=[]), ValueError, r"same non-zero length"),
    # kernel shape
    ("shape-zero", _estimate(shape=0), ValueError, r"shape=0: kernel sizes must be positive"),
    ("shape-negative", _estimate(shape=(3, -1)), ValueError, r"shape=\(3, -1\).*positive"),
    ("shape-float", _estimate(shape=2.5), TypeError, r"shape=2\.5 must be an int or a pair"),
    ("shape-str", _estimate(shape="3x3"), TypeError, r"shape='3x3' must be an int or a pair"),
    ("shape-triple", _estimate(shape=(3, 3, 3)), TypeError, r"shape=\(3, 3, 3\)"),
    ("shape-none-with-center", _estimate(shape=None, center=(1, 1)), ValueError,
     r"center=\(1, 1\) is an index into a kernel of a given size"),
    ("shape-bool", _estimate(shape=True), TypeError, r"shape=True"),
    ("shape-larger-than-image", _estimate(shape=13), ValueError,
     r"shape=\(13, 13\) is larger than the image \(12x12\)"),
    ("shape-larger-than-image-convolve", lambda: kf.convolve(A, np.ones((3, 13)), mode="valid"),
     ValueError, r"larger than the image"),
    ("center-outside", _estimate(center=(3, 0)), ValueError, r"center=\(3, 0\) lies outside"),
    ("center-str", _estimate(center="11"), TypeError, r"center='11' must be a pair of ints"),
    # values
    ("a-all-nan", _estimate(a=_with_nan(A)), ValueError, r"a has no finite pixels"),
    ("b-all-nan", _estimate(b=_with_nan(A)), ValueError, r"b has no finite pixels"),
    ("b-all-inf", _estimate(b=np.full((12, 12), -np.inf)), ValueError, r"b has no finite"),
    ("a-nan-everywhere-it-matters", _estimate(a=_with_nan(A, 0.95)), ValueError,
     r"no usable pixel is left in b"),
    ("kernel-nan-convolve", lambda: kf.convolve(A, _with_nan(K3, 0.2)), ValueError,
     r"kernel contains NaN"),
    # masks
    ("mask-shape", _estimate(mask=np.ones((3, 3), bool)), ValueError,
     r"mask has shape \(3, 3\); it must have b's shape \(12, 12\)"),
    ("mask-float", _estimate(mask=np.ones((12, 12))), TypeError,
     r"mask must be a boolean array .*float64"),
    ("mask-str", _estimate(mask="all"), TypeError, r"mask must be a boolean array"),
    ("mask-ragged", _estimate(mask=[[True, False], [True]]), ValueError,
     r"mask is not a rectangular array"),
    ("mask-nothing-usable", _estimate(mask=np.zeros((12, 12), bool)), ValueError,
     r"no usable pixel"),
    ("mask-list-for-lists", _estimate(a=[A, A], b=[A, A], mask=np.ones((12, 12), bool)),
     ValueError, r"mask must be None or a list"),
    # names of modes
    ("boundary-unknown", _estimate(boundary="sideways"), ValueError,
     r"boundary='sideways' is not a known boundary mode"),
    ("boundary-none", _estimate(boundary=None), ValueError, r"boundary=None"),
    ("boundary-unknown-convolve", lambda: kf.convolve(A, K3, boundary="zero"), ValueError,
     r"boundary='zero'"),
    ("mode-unknown-convolve", lambda: kf.convolve(A, K3, mode="middle"), ValueError,
     r"mode='middle'"),
    ("model-unknown", _estimate(model="gauss"), ValueError, r"model='gauss' is not available"),
    ("loss-unknown", _estimate(loss="l3"), ValueError, r"loss='l3' is not available"),
    ("reg-unknown", _estimate(reg="tikhonov-ish"), ValueError, r"reg='tikhonov-ish'"),
    ("method-unknown", _estimate(method="magic"), ValueError, r"method='magic'"),
    # conflicting options
    ("nonneg-with-gaussian", _estimate(nonneg=True, model="gaussian"), ValueError,
     r"nonneg=True is not available with model='gaussian'"),
    ("reg-with-radial", _estimate(reg="ridge", model="radial"), ValueError,
     r"reg='ridge' is not available with model='radial'"),
    ("l1-with-radial", _estimate(loss="l1", model="radial"), ValueError,
     r"loss='l1' is available for the free model and the parametric models"),
    ("huber-with-tv", _estimate(loss="huber", reg="tv", lam=0.1), ValueError,
     r"reg='tv' is not available with a robust loss"),
    ("lp-with-l2", _estimate(method="lp"), ValueError,
     r"method='lp' is the exact L1 linear program: it needs loss='l1'"),
    ("clip-with-huber", _estimate(loss="huber", clip=3.0), ValueError,
     r"clip=3.0 is sigma-clipping for loss='l2'"),
    ("lam-without-reg", _estimate(lam=0.1), ValueError, r"lam=0\.1 is given but reg=None"),
    ("nonneg-negative-sum", _estimate(nonneg=True, normalize=-1.0), ValueError,
     r"normalize=-1\.0 is impossible with nonneg=True"),
    ("option-model-lacks", _estimate(rank=2), TypeError, r"model='free' does not take"),
    ("nonneg-not-bool", _estimate(nonneg="yes"), TypeError, r"nonneg='yes' must be True"),
    ("noise-std-negative", _estimate(noise_std=-1.0), ValueError, r"noise_std=-1\.0"),
    # problems a method cannot take (issue 14): each was a ZeroDivisionError, LAPACK's
    # "DLASCL parameter number 4" lines and "SVD did not converge", or a MemoryError
    ("wiener-one-output-pixel", _estimate(a=A[:5, :5], b=A[:1, :1], shape=5, method="wiener"),
     ValueError, r"method='wiener' with eps='auto' chooses ε by cross-validation, which needs "
     r"more used pixels of b than kernel coefficients: b has 1 for a 5x5 kernel \(25\)"),
    ("richardson-lucy-one-hot-a", _estimate(a=np.eye(1, 144, 70).reshape(12, 12),
                                            b=np.full((12, 12), 3.0), boundary="fill",
                                            method="richardson-lucy"),
     ValueError, r"method='richardson-lucy' cannot explain b: 135 used pixel\(s\) of b are "
     r"positive where a is zero under the whole 3x3 kernel footprint"),
    ("normal-gram-too-large", _estimate(shape=(300, 300), boundary="fill", method="normal"),
     ValueError, r"method='normal' with shape=\(300, 300\) needs 90000 x 90000 matrices .* "
     r"about 181 GiB, more than this machine's .* GiB of memory; use method='iterative'"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_input(call, exc, match):
    with pytest.raises(exc, match=match), np.errstate(all="ignore"):  # overflow on the way
        call()


def test_corpus_ids_are_distinct():
    ids = [c[0] for c in API_CASES] + [c[0] for c in READ_CASES] + [c[0] for c in CLI_CASES]
    assert len(ids) == len(set(ids))


# A constant a determines only the kernel's sum.  Decision: like any rank-deficient problem it
# is reported, not refused -- a RankDeficientWarning saying the images do not determine the
# kernel, fit.converged False -- because a regularised fit of it is well posed (see
# test_estimate.test_rank_deficiency_is_reported_not_hidden).  The CLI prints the warning as
# one line and marks the summary NOT TRUSTED.
CONSTANT_IMAGES = {
    "ones": np.ones((12, 12)),
    "zeros": np.zeros((12, 12)),
    "constant-with-nan": np.where(A > 0.9, np.nan, 2.0),
}


@pytest.mark.parametrize("a", CONSTANT_IMAGES.values(), ids=CONSTANT_IMAGES.keys())
def test_constant_a_is_reported_as_undetermined(a):
    with pytest.warns(kf.RankDeficientWarning,
                      match=r"do not determine the kernel; use a larger or more textured image"):
        fit = kf.estimate(a, A, 3, boundary="nearest")
    assert fit.converged is False and "rank-deficient" in fit.message


# The parametric and structured fitters do not say so: 'gaussian' returns converged=False
# without a warning, 'separable' even converged=True.  The check belongs in estimate() (see
# the report of issue 5 part 6); remove the mark when it lands.
@pytest.mark.parametrize("model", ["gaussian", "separable"])
def test_constant_a_is_reported_for_every_model(model):
    with pytest.warns(kf.RankDeficientWarning, match=r"a is constant"):
        fit = kf.estimate(np.ones((12, 12)), A, 3, model=model)
    assert fit.converged is False


# A list of rows is one image to NumPy, but estimate() reads any list as a list of pairs.  The
# fix belongs in estimate._single (a list whose items are numbers or 1-D rows is one image);
# as_image already reports ragged rows clearly.  Remove the marks when that lands.
def test_estimate_names_ragged_rows_of_a():
    with pytest.raises(ValueError, match=r"a is not a rectangular array"):
        kf.estimate(RAGGED, np.ones((2, 3)), 1)


def test_estimate_takes_a_list_of_rows_as_one_image():
    fit = kf.estimate(A.tolist(), kf.convolve(A, K3).tolist(), 3, boundary="fill")
    np.testing.assert_allclose(fit.kernel, K3, atol=1e-10)


# --------------------------------------------------------------------------------------------
# API: the file readers
# --------------------------------------------------------------------------------------------

def _good_bytes(ext):
    """The bytes of a small valid gray image (or kernel) file with extension ``ext``."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x{ext}"
        image = np.random.default_rng(5).integers(0, 256, (16, 16)).astype(np.uint8)
        if ext in (".csv", ".txt"):
            io.write_kernel(path, image / 255.0)
        elif ext == ".gif":
            iio.imwrite(path, image)
        else:
            io.write_image(path, image, like_dtype=np.uint8)
        return path.read_bytes()


def _file(directory, name, content):
    path = Path(directory) / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    return path


def _rgba(d):
    iio.imwrite(d / "rgba.png", RNG.integers(0, 256, (10, 12, 4), dtype=np.uint8))
    return d / "rgba.png"


def _gray_alpha(d):
    from PIL import Image

    plane = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    Image.fromarray(plane).convert("LA").save(d / "la.png")
    return d / "la.png"


def _planar_rgb_tiff(d):
    # tifffile stores a (3, H, W) array as one planar RGB page: a colour image, not 3 pages.
    tifffile.imwrite(d / "planar.tif", RNG.random((3, 10, 12)).astype(np.float32),
                     photometric="rgb", planarconfig="separate")
    return d / "planar.tif"


def _pages(d, n=3):
    tifffile.imwrite(d / "pages.tif", RNG.random((n, 10, 12)).astype(np.float32),
                     photometric="minisblack")
    return d / "pages.tif"


def _npy_forged_header(d):
    path = d / "forged.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
        f.write(b"\0" * 64)
    return path


def _damaged_tiff_tags(d):
    """A TIFF whose directory claims 5 entries too many and a width of millions of pixels.

    tifffile logs each bad tag (on the ``tifffile`` logger) before it fails to read the data.
    """
    data = bytearray(_good_bytes(".tif"))
    assert data[:2] == b"II"
    ifd = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[ifd:ifd + 2], "little")
    data[ifd:ifd + 2] = (count + 5).to_bytes(2, "little")
    data[ifd + 2 + 10] = 78  # third byte of the first entry's (ImageWidth's) value
    return _file(d, "tags.tif", bytes(data))


def _truncated(ext, keep=0.5):
    def build(d):
        data = _good_bytes(ext)
        return _file(d, f"cut{ext}", data[: int(len(data) * keep)])
    return build


# (id, builder(d) -> call, message regex); every call must raise ValueError or TypeError.
READ_CASES = [
    *[(f"zero-byte{ext}", lambda d, ext=ext: lambda: io.read_image(_file(d, f"z{ext}", b"")),
       r"z\.\w+: cannot read the file")
      for ext in (".png", ".jpg", ".gif", ".bmp", ".tif", ".npy", ".fits")],
    ("text-as-png", lambda d: lambda: io.read_image(_file(d, "t.png", "just some text\n" * 9)),
     r"t\.png: cannot read the file: not a valid \.png image"),
    ("text-as-tif", lambda d: lambda: io.read_image(_file(d, "t.tif", "II* not really")),
     r"t\.tif: cannot read the file"),
    ("npy-as-png", lambda d: lambda: io.read_image(_file(d, "n.png", _good_bytes(".npy"))),
     r"n\.png: cannot read the file: not a valid \.png image"),
    ("truncated-png", lambda d: lambda: io.read_image(_truncated(".png")(d)),
     r"cut\.png: cannot read the file"),
    ("truncated-tif", lambda d: lambda: io.read_image(_truncated(".tif", 0.7)(d)),
     r"cut\.tif: cannot read the file"),
    ("damaged-tiff-tags", lambda d: lambda: io.read_image(_damaged_tiff_tags(d)),
     r"tags\.tif: cannot read the file"),
    ("truncated-jpg", lambda d: lambda: io.read_image(_truncated(".jpg")(d)),
     r"cut\.jpg: cannot read the file"),
    ("truncated-npy", lambda d: lambda: io.read_image(_truncated(".npy", 0.8)(d)),
     r"cut\.npy: cannot read the file: truncated: the header promises"),
    ("forged-npy-header", lambda d: lambda: io.read_image(_npy_forged_header(d)),
     r"forged\.npy: .*truncated.*\(1000000, 1000000\)"),
    ("directory", lambda d: lambda: io.read_image(d), r": is not a file"),
    ("directory-kernel", lambda d: lambda: io.read_kernel(d), r": is not a file"),
    ("missing", lambda d: lambda: io.read_mask(d / "nope.png"), r"nope\.png: no such file"),
    ("no-extension", lambda d: lambda: io.read_image(_file(d, "image", b"x")),
     r"image: unknown image type '\(no extension\)'"),
    ("path-none", lambda d: lambda: io.read_image(None), r"path=None must be a file name"),
    ("kernel-empty-csv", lambda d: lambda: io.read_kernel(_file(d, "k.csv", "")),
     r"k\.csv: the image is empty"),
    ("kernel-ragged-csv", lambda d: lambda: io.read_kernel(_file(d, "k.csv", "1,2\n3\n")),
     r"k\.csv: cannot read the file: the number of columns changed"),
    ("kernel-words-txt", lambda d: lambda: io.read_kernel(_file(d, "k.txt", "one two\n")),
     r"k\.txt: cannot read the file: could not convert"),
    ("mask-of-strings", lambda d: lambda: io.read_mask(_npy(d, "m.npy", np.array([["a"]]))),
     r"m\.npy: holds <U1 data, not numbers"),
    # valid files that need a decision
    ("rgba-without-choice", lambda d: lambda: io.read_image(_rgba(d)),
     r"rgba\.png: is a colour image .*channel=N \(--channel N\).*gray=True \(--gray\)"),
    ("planar-rgb-tiff-without-choice", lambda d: lambda: io.read_image(_planar_rgb_tiff(d)),
     r"planar\.tif: is a colour image \(shape \(10, 12, 3\)\)"),
    ("gray-alpha-without-choice", lambda d: lambda: io.read_image(_gray_alpha(d)),
     r"la\.png: is a gray\+alpha image.*--gray.*--channel 0"),
    ("channel-out-of-range", lambda d: lambda: io.read_image(_rgba(d), channel=4),
     r"channel=4 is out of range; the image has 4 channels"),
    ("channel-and-gray", lambda d: lambda: io.read_image(_rgba(d), channel=0, gray=True),
     r"either a channel or gray"),
    ("multipage-without-page", lambda d: lambda: io.read_image(_pages(d)),
     r"pages\.tif: is a multi-page TIFF with 3 pages; choose one with page=K \(--page K\)"),
    ("multipage-mask-without-page", lambda d: lambda: io.read_mask(_pages(d)),
     r"pages\.tif: is a multi-page TIFF"),
    ("page-out-of-range", lambda d: lambda: io.read_image(_pages(d), page=3),
     r"page=3 is out of range; the file has 3 pages \(0 to 2\)"),
    ("page-negative", lambda d: lambda: io.read_image(_pages(d), page=-1),
     r"page=-1 must be a non-negative integer"),
    ("page-of-npy", lambda d: lambda: io.read_image(
        _file(d, "one.npy", _good_bytes(".npy")), page=1),
     r"one\.npy: page=1 requested, but \.npy files hold a single image"),
]


@pytest.mark.parametrize("build, match", [c[1:] for c in READ_CASES],
                         ids=[c[0] for c in READ_CASES])
def test_readers_refuse_bad_files(tmp_path, build, match):
    call = build(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader must not talk besides raising
        with pytest.raises((ValueError, TypeError), match=match):
            call()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into any directory")
def test_unwritable_output_directory_is_refused_before_the_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"k\.npy: cannot write, directory .* not writable"):
            io.check_output_path(locked / "k.npy", "kernel")
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------------------------
# Files that must simply be read right
# --------------------------------------------------------------------------------------------

def test_16_bit_png_is_read_exactly(tmp_path):
    values = np.array([[0, 1, 255, 256], [4095, 32768, 65534, 65535]], dtype=np.uint16)
    image = np.tile(values, (3, 2))
    iio.imwrite(tmp_path / "deep.png", image)
    read = io.read_image(tmp_path / "deep.png")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, image)


def test_float32_tiff_is_read_exactly(tmp_path):
    image = RNG.normal(size=(9, 7)).astype(np.float32)
    image[0, :5] = [np.nan, -0.0, 1e-38, -3.4e38, np.inf]
    tifffile.imwrite(tmp_path / "f.tif", image)
    read = io.read_image(tmp_path / "f.tif")
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, image)  # NaN matches NaN


def test_one_bit_png_is_read_as_zero_one(tmp_path):
    from PIL import Image

    bits = RNG.random((8, 9)) > 0.5
    Image.fromarray(bits).save(tmp_path / "bits.png")
    read = io.read_image(tmp_path / "bits.png")
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, bits.astype(np.uint8))


def test_decisions_given_make_the_files_readable(tmp_path):
    rgba = iio.imread(_rgba(tmp_path))
    np.testing.assert_array_equal(io.read_image(tmp_path / "rgba.png", channel=3), rgba[..., 3])
    np.testing.assert_allclose(io.read_image(tmp_path / "rgba.png", gray=True),
                               rgba[..., :3] @ io.REC709_WEIGHTS)
    stack = tifffile.imread(_pages(tmp_path))
    for page in range(3):
        np.testing.assert_array_equal(io.read_image(tmp_path / "pages.tif", page=page),
                                      stack[page])
    planar = tifffile.imread(_planar_rgb_tiff(tmp_path))
    np.testing.assert_array_equal(io.read_image(tmp_path / "planar.tif", channel=2), planar[2])
    gray_alpha = iio.imread(_gray_alpha(tmp_path))
    np.testing.assert_array_equal(io.read_image(tmp_path / "la.png", gray=True),
                                  gray_alpha[..., 0])


# --------------------------------------------------------------------------------------------
# The installed command
# --------------------------------------------------------------------------------------------

def _command() -> list[str]:
    """The ``kernelfit`` console script of this environment (else on PATH, else -m)."""
    beside = Path(sys.executable).with_name("kernelfit")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("kernelfit")
    return [found] if found else [sys.executable, "-m", "kernelfit"]


def run_kernelfit(*argv, cwd):
    """Run the command line in a separate process; return (status, stdout, stderr lines).

    Every file already in ``cwd`` (the run's inputs) must come out of the run unchanged."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    before = _hashes(cwd)
    done = subprocess.run([*_command(), *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    after = _hashes(cwd)
    words = [str(word) for word in argv]
    outputs = {Path(words[i + 1]).name for i, word in enumerate(words[:-1])
               if word in ("-o", "--output", "--json", "--report")}
    changed = [name for name, digest in before.items()
               if name not in outputs and after.get(name) != digest]
    assert not changed, f"the run changed or removed its input files {changed}"
    return done.returncode, done.stdout, done.stderr.splitlines()


def _hashes(directory) -> dict:
    import hashlib

    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in Path(directory).iterdir() if path.is_file()}


def _npy(d, name, array):
    np.save(d / name, array)
    return d / name


def _pair(d):
    """a.npy and b.npy: a random image and its 'valid' blur by K3."""
    a = np.random.default_rng(11).random((16, 16))
    return _npy(d, "a.npy", a), _npy(d, "b.npy", kf.convolve(a, K3, mode="valid"))


def _fit(d, a, b, *options, shape="3"):
    return ["estimate", a, b, "--shape", shape, *options, "-o", d / "k.npy"]


def _apply(d, a, kernel, *options, out="out.npy"):
    return ["apply", a, kernel, *options, "-o", d / out]


def _kernel(d, values=K3, name="k3.npy"):
    return _npy(d, name, np.asarray(values, float))


# (id, builder(d) -> argv, stderr regex).  Builders write their inputs into d; after the run d
# must hold exactly those inputs.  The output paths are d/k.npy, d/out.npy unless stated.
CLI_CASES = [
    # files
    ("cli-zero-byte", lambda d: _fit(d, _file(d, "a.png", b""), _pair(d)[1]),
     r"a\.png: cannot read the file: not a valid \.png image"),
    ("cli-not-an-image", lambda d: _fit(d, _file(d, "a.tif", "hello\n"), _pair(d)[1]),
     r"a\.tif: cannot read the file: not a TIFF file"),
    ("cli-truncated-npy", lambda d: _fit(d, _truncated(".npy", 0.6)(d), _pair(d)[1]),
     r"cut\.npy: cannot read the file: truncated"),
    ("cli-damaged-tiff-tags", lambda d: _apply(d, _damaged_tiff_tags(d), _kernel(d)),
     r"tags\.tif: cannot read the file"),  # and no line of what tifffile logged on the way
    ("cli-truncated-tif", lambda d: _apply(d, _truncated(".tif", 0.7)(d), _kernel(d)),
     r"cut\.tif: cannot read the file"),
    ("cli-directory", lambda d: _fit(d, _pair(d)[0], d),
     r": is not a file"),
    ("cli-missing-kernel", lambda d: _apply(d, _pair(d)[0], d / "nokernel.csv"),
     r"nokernel\.csv: no such file"),
    ("cli-empty-kernel-file", lambda d: _apply(d, _pair(d)[0], _file(d, "k.txt", "")),
     r"k\.txt: the image is empty"),
    ("cli-complex", lambda d: _fit(d, _npy(d, "c.npy", A + 1j), _pair(d)[1]),
     r"c\.npy: holds complex numbers"),
    ("cli-4d", lambda d: _fit(d, _npy(d, "s.npy", np.ones((2, 2, 8, 8))), _pair(d)[1]),
     r"s\.npy: expected a 2-D image, got a 4-D array"),
    # decisions
    ("cli-rgba", lambda d: _fit(d, _rgba(d), _rgba(d)),
     r"rgba\.png: is a colour image .*--channel N.*--gray"),
    ("cli-multipage", lambda d: _apply(d, _pages(d), _kernel(d)),
     r"pages\.tif: is a multi-page TIFF with 3 pages; choose one with .*--page K"),
    ("cli-page-out-of-range", lambda d: _apply(d, _pages(d), _kernel(d), "--page", "7"),
     r"page=7 is out of range"),
    ("cli-channel-out-of-range", lambda d: _apply(d, _rgba(d), _kernel(d), "--channel", "9"),
     r"channel=9 is out of range"),
    # contents
    ("cli-all-nan-b", lambda d: _fit(d, _pair(d)[0], _npy(d, "nan.npy", np.full((14, 14), np.nan))),
     r"b has no finite pixels"),
    ("cli-shapes-mismatch", lambda d: _fit(d, _pair(d)[0], _npy(d, "bt.npy", np.ones((16, 9)))),
     r"b has shape \(16, 9\), which fits neither"),
    ("cli-mask-wrong-shape", lambda d: _fit(d, *_pair(d), "--mask",
                                            _npy(d, "m.npy", np.ones((5, 5)))),
     r"mask has shape \(5, 5\)"),
    ("cli-mask-wrong-dtype", lambda d: _fit(d, *_pair(d), "--mask",
                                            _npy(d, "m.npy", np.array([["x"] * 14] * 14))),
     r"m\.npy: holds <U1 data, not numbers"),
    ("cli-kernel-nan", lambda d: _apply(d, _pair(d)[0], _kernel(d, _with_nan(K3, 0.2))),
     r"kernel contains NaN"),
    # options
    ("cli-shape-not-integer", lambda d: _fit(d, *_pair(d), shape="2.5"),
     r"--shape '2\.5' is not a kernel size"),
    ("cli-shape-zero", lambda d: _fit(d, *_pair(d), shape="0"),
     r"--shape '0'"),
    ("cli-shape-larger-than-image", lambda d: _fit(d, _pair(d)[0], d / "a.npy", shape="20x3"),
     r"larger than the image"),
    ("cli-boundary", lambda d: _fit(d, *_pair(d), "--boundary", "sideways"),
     r"boundary='sideways' is not a known boundary mode"),
    ("cli-model", lambda d: _fit(d, *_pair(d), "--model", "gauss"),
     r"model='gauss' is not available"),
    ("cli-loss", lambda d: _fit(d, *_pair(d), "--model", "gaussian", "--loss", "l3"),
     r"loss='l3' is not available"),
    ("cli-nonneg-gaussian", lambda d: _fit(d, *_pair(d), "--model", "gaussian", "--nonneg"),
     r"nonneg=True is not available with model='gaussian'"),
    ("cli-ridge-and-reg", lambda d: _fit(d, *_pair(d), "--ridge", "1", "--reg", "gradient"),
     r"--ridge LAM is short for"),
    ("cli-channel-not-int", lambda d: _fit(d, *_pair(d), "--channel", "red"),
     r"argument --channel: invalid int value: 'red'"),
    ("cli-unknown-option", lambda d: _fit(d, *_pair(d), "--frobnicate"),
     r"unrecognized arguments: --frobnicate"),
    ("cli-missing-output", lambda d: ["estimate", *_pair(d), "--shape", "3"],
     r"the following arguments are required: -o/--output"),
    ("cli-apply-mode", lambda d: _apply(d, _pair(d)[0], _kernel(d), "--mode", "middle"),
     r"argument --mode: invalid choice: 'middle'"),
    # outputs
    ("cli-output-directory-missing", lambda d: [*_fit(d, *_pair(d))[:-1], d / "no" / "k.npy"],
     r"cannot write, directory .* does not exist"),
    ("cli-output-is-directory", lambda d: [*_fit(d, *_pair(d))[:-1], _dir(d, "k.npy")],
     r"k\.npy: cannot write, it is a directory"),
    ("cli-output-under-a-file", lambda d: [*_fit(d, *_pair(d))[:-1], d / "a.npy" / "k.npy"],
     r"cannot write, directory .*a\.npy does not exist"),
    ("cli-output-unknown-type", lambda d: _apply(d, _pair(d)[0], _kernel(d), out="out.csv"),
     r"out\.csv: cannot write an image as '\.csv'"),
    ("cli-json-unknown-type", lambda d: _fit(d, *_pair(d), "--json", d / "fit.txt"),
     r"fit\.txt: cannot write a json"),
    ("cli-output-unwritable", lambda d: [*_fit(d, *_pair(d))[:-1], "/proc/kernelfit-k.npy"],
     r"/proc/kernelfit-k\.npy: cannot write"),
]


def _dir(d, name):
    (d / name).mkdir()
    return d / name


@pytest.mark.parametrize("build, match", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_command_reports_one_error_line(tmp_path, build, match):
    if "/proc/" in match and not os.path.isdir("/proc"):
        pytest.skip("needs /proc, a directory where no file can be created")
    argv = build(tmp_path)
    inputs = sorted(p.name for p in tmp_path.iterdir())
    status, out, err = run_kernelfit(*argv, cwd=tmp_path)
    assert status == 2, (out, err)
    assert len(err) == 1, err
    assert err[0].startswith("kernelfit: error: "), err
    assert re.search(match, err[0]), err[0]
    assert "Traceback" not in out and "Traceback" not in err[0]
    # Nothing written: no output, no temporary file, nothing but the inputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == inputs
    assert not Path("/proc/kernelfit-k.npy").exists()


def test_damaged_tiff_makes_tifffile_log(tmp_path, caplog):
    """The premise of cli-damaged-tiff-tags: the reader logs before it fails."""
    with pytest.raises(ValueError):
        io.read_image(_damaged_tiff_tags(tmp_path))
    assert any(r.name == "tifffile" for r in caplog.records)


def test_command_reports_a_constant_a_in_one_warning_line(tmp_path):
    a = _npy(tmp_path, "flat.npy", np.ones((16, 16)))
    status, out, err = run_kernelfit(*_fit(tmp_path, a, _pair(tmp_path)[1]), cwd=tmp_path)
    assert status == 4   # the verdict 'failed' (kernelfit.fit.verdict)
    assert err[0].startswith("kernelfit: fit failed: "), err
    warnings_printed = [line for line in err if line.startswith("kernelfit: warning: ")]
    assert len(err) == 2 and len(warnings_printed) == 1, err
    assert re.search(r"rank-deficient .*do not determine the kernel", warnings_printed[0])
    assert "NOT TRUSTED" in out


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into any directory")
def test_command_refuses_an_unwritable_directory(tmp_path):
    a, b = _pair(tmp_path)
    locked = _dir(tmp_path, "locked")
    locked.chmod(0o500)
    try:
        status, _, err = run_kernelfit(*_fit(tmp_path, a, b)[:-1], locked / "k.npy",
                                       cwd=tmp_path)
    finally:
        locked.chmod(0o700)
    assert status == 2 and len(err) == 1 and "not writable" in err[0], err
    assert list(locked.iterdir()) == []


def test_command_reads_the_valid_files_exactly(tmp_path):
    """16-bit PNG, float32 TIFF, a chosen page and a chosen channel, end to end.

    ``apply`` with the 1x1 kernel [[1]] writes the image it read to .npy unchanged.
    """
    one = _kernel(tmp_path, [[1.0]], "one.npy")
    deep = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
    iio.imwrite(tmp_path / "deep.png", deep)
    real = RNG.normal(size=(9, 11)).astype(np.float32)
    tifffile.imwrite(tmp_path / "real.tif", real)
    stack = tifffile.imread(_pages(tmp_path))
    rgba = iio.imread(_rgba(tmp_path))
    cases = [("deep.png", [], deep), ("real.tif", [], real),
             ("pages.tif", ["--page", "2"], stack[2]),
             ("rgba.png", ["--channel", "1"], rgba[..., 1])]
    for name, options, expected in cases:
        status, _, err = run_kernelfit(*_apply(tmp_path, tmp_path / name, one, *options),
                                       cwd=tmp_path)
        assert status == 0, (name, err)
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected, err_msg=name)


# --------------------------------------------------------------------------------------------
# Inputs that must be used right: nothing lost, nothing silently wrong (issue 14)
# --------------------------------------------------------------------------------------------

def _pair_with_outliers(n_outliers=25, size=64, seed=14):
    """A well-posed pair, and a map of ``n_outliers`` pixels whose values are spoiled."""
    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    k = rng.random((5, 5))
    k /= k.sum()
    b = kf.convolve(a, k) + 1e-4 * rng.standard_normal(a.shape)
    spoiled = np.zeros(a.shape, bool)
    spoiled.flat[rng.choice(a.size, n_outliers, replace=False)] = True
    return a, b, k, spoiled


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("path", [dict(), dict(method="iterative", tol=1e-10),
                                  dict(channel_axis=-1), dict(boundary="auto")],
                         ids=["direct", "iterative", "channels", "auto"])
def test_masked_array_pixels_are_not_used(which, path):
    # The outliers (1e3 against values ~0.5) hide under the mask: a fit that used them would
    # be off by ~1e1 (1.5e4 in the issue); one that drops them is off by the noise (1e-4)
    # through ~25 coefficients, so 2e-4 is 100 times below the first and twice the second.
    a, b, k, spoiled = _pair_with_outliers()
    bad = (a if which == "a" else b).copy()
    bad[spoiled] = 1e3
    images = dict(a=a, b=b)
    images[which] = np.ma.MaskedArray(bad, spoiled)
    options = dict(boundary="fill")
    options.update(path)
    if "channel_axis" in options:
        images = {name: np.ma.stack([x, x], axis=-1) if np.ma.isMaskedArray(x)
                  else np.stack([x, x], axis=-1) for name, x in images.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the masked outliers must leave no trace
        fit = kf.estimate(images["a"], images["b"], 5, **options)
    kernel = fit.kernel[..., 0] if "channel_axis" in options else fit.kernel
    assert np.abs(kernel - k).max() < 2e-4
    # A masked pixel of b is one pixel fewer; one of a drops every pixel it touches.
    if "channel_axis" not in options:
        expected = kf.estimate(np.where(spoiled, np.nan, a) if which == "a" else a,
                               np.where(spoiled, np.nan, b) if which == "b" else b, 5,
                               **options)
        assert fit.n_used == expected.n_used < a.size


@pytest.mark.parametrize("boundary", ["fill", "nearest", "valid"])
def test_convolve_of_a_masked_array_masks_the_footprint(boundary):
    # Each masked pixel spoils the output pixels whose kernel box covers it: those are masked
    # and NaN (never the hidden value blurred in); the others equal the plain convolution.
    a, _, k, spoiled = _pair_with_outliers(n_outliers=4)
    hidden = np.where(spoiled, 1e3, a)
    out = kf.convolve(np.ma.MaskedArray(hidden, spoiled), k, boundary=boundary)
    reference = kf.convolve(np.where(spoiled, np.nan, a), k, boundary=boundary)
    assert isinstance(out, np.ma.MaskedArray)
    np.testing.assert_array_equal(out.mask, np.isnan(reference))
    assert np.isnan(out.data[out.mask]).all()
    np.testing.assert_allclose(out.data[~out.mask], reference[~out.mask], rtol=1e-12)
    plain = kf.convolve(a, k, boundary=boundary)
    np.testing.assert_allclose(out.data[~out.mask], plain[~out.mask], rtol=1e-12)
    assert 0 < out.mask.sum() <= 4 * k.size


def test_convolve_refuses_a_masked_kernel():
    kernel = np.ma.MaskedArray(K3, K3 == 0.5)
    with pytest.raises(ValueError, match=r"kernel is a masked array with 1 masked entries"):
        kf.convolve(A, kernel)


def _spoiled_image(values, positions, size=512, seed=3):
    rng = np.random.default_rng(seed)
    image = rng.random((size, size))
    for value, (y, x) in zip(values, positions):
        image[y, x] = value
    return image


# NaN, +inf, -inf alone and together, near the edge and in the interior; kernels with zeros
# and negative entries (0·inf is NaN in scipy, and +inf meeting -inf too).
NONFINITE_CASES = {
    "one-nan": ([np.nan], [(40, 40)]),
    "one-inf": ([np.inf], [(40, 40)]),
    "edge-minus-inf": ([-np.inf], [(0, 5)]),
    "inf-meets-minus-inf": ([np.inf, -np.inf], [(40, 40), (42, 44)]),
    "nan-and-inf": ([np.nan, np.inf], [(10, 10), (60, 70)]),
}


@pytest.mark.parametrize("values, positions", NONFINITE_CASES.values(),
                         ids=NONFINITE_CASES.keys())
@pytest.mark.parametrize("kernel", ["positive", "signed-with-zeros"])
def test_convolve_keeps_nonfinite_pixels_in_their_footprint(values, positions, kernel):
    # kf.convolve takes the FFT on this image and kernel size (512², 9×9); scipy's direct
    # sum is the reference for every NaN and inf, and for the finite values to rounding
    # (1e-10 against values ~1-10).
    rng = np.random.default_rng(7)
    k = rng.random((9, 9)) if kernel == "positive" else \
        np.where(rng.random((9, 9)) < 0.3, 0.0, rng.standard_normal((9, 9)))
    image = _spoiled_image(values, positions)
    out = kf.convolve(image, k)
    reference = scipy.signal.convolve2d(image, k, mode="same")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(reference))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(reference))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(reference))
    finite = np.isfinite(reference)
    np.testing.assert_allclose(out[finite], reference[finite], atol=1e-10)
    assert (~finite).sum() <= len(values) * k.size


def test_one_nan_in_a_large_image_spoils_81_pixels_not_all():
    # The case: 512² and a 9×9 kernel, where convolve uses the FFT.
    image = _spoiled_image([np.nan], [(200, 300)], size=512)
    for dtype in (np.float64, np.float32):
        out = kf.convolve(image.astype(dtype), np.full((9, 9), 1 / 81, dtype))
        assert out.dtype == dtype and np.isnan(out).sum() == 81
        assert np.isnan(out[196:205, 296:305]).all()



def _well_posed_pair(seed=21, size=48):
    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    k = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
    return a, kf.convolve(a, k, boundary="fill") + 0.5 + 1e-3 * rng.standard_normal(a.shape)


SCALES = {"both-1e-300": (1e-300, 1e-300), "both-1e-160": (1e-160, 1e-160),
          "b-1e-300": (1.0, 1e-300), "a-1e-300": (1e-300, 1.0),
          "both-1e+300": (1e300, 1e300), "both-2^-1000": (2.0 ** -1000, 2.0 ** -1000)}
SCALE_PATHS = {"direct": dict(), "background": dict(background=0),
               "iterative": dict(method="iterative", tol=1e-10), "huber": dict(loss="huber"),
               "nonneg": dict(nonneg=True), "ridge-auto": dict(reg="ridge")}


@pytest.mark.parametrize("path", SCALE_PATHS.values(), ids=SCALE_PATHS.keys())
@pytest.mark.parametrize("s, t", SCALES.values(), ids=SCALES.keys())
def test_tiny_and_huge_images_give_the_exact_kernel(s, t, path):
    # k(a·s, b·t) = k(a, b)·t/s; background, residual and noise scale with t.  The images are
    # fitted in rescaled units (powers of two), so the only differences from the unscaled fit
    # are the roundings of a·s and b·t themselves (none for powers of two): 1e-9 relative,
    # 1e-6 where GCV's λ search (a bounded minimiser, tolerance 1e-3 in log λ on a flat
    # curve) lands a little differently.
    # The issue: 1e-300 called rank-deficient, 1e-160 off by 6e-5 yet converged, b ~ 1e-300
    # warned IdentifiabilityWarning.
    a, b = _well_posed_pair()
    reference = kf.estimate(a, b, 3, boundary="fill", **path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = kf.estimate(a * s, b * t, 3, boundary="fill", **path)
    assert fit.converged == reference.converged
    rtol = 1e-6 if "reg" in path else 1e-9
    np.testing.assert_allclose(fit.kernel * (s / t), reference.kernel, rtol=rtol,
                               atol=1e-12 * np.abs(reference.kernel).max())
    np.testing.assert_allclose(fit.noise_std / t, reference.noise_std, rtol=1e-6)
    if reference.stderr is not None:
        np.testing.assert_allclose(fit.stderr * (s / t), reference.stderr, rtol=1e-6)
    if reference.background is not None:
        np.testing.assert_allclose(np.asarray(fit.background) / t, reference.background,
                                   rtol=1e-9)
    if reference.lam is not None:
        # λ in the user's units is beyond float64 here (1e-6·1e-600); the fitted one is that
        # of images rescaled by a·s ≈ 1, GCV's λ scaling with the square of that factor.
        fitted = fit.info["data_scale"]
        assert fitted["lam"] == pytest.approx(reference.lam * (fitted["a"] * s) ** 2, rel=1e-3)
    # The residual is a difference of values ~1 (b): its error is the kernel's times b's.
    np.testing.assert_allclose(fit.residual / t, reference.residual, rtol=0,
                               atol=10 * rtol * np.abs(b).max())
    assert fit.info["data_scale"]["a"] * s == pytest.approx(1.0, rel=1.0)


def test_powers_of_two_scale_the_fit_bit_for_bit():
    a, b = _well_posed_pair()
    reference = kf.estimate(a, b, 3, boundary="fill")
    fit = kf.estimate(a * 2.0 ** -700, b * 2.0 ** -900, 3, boundary="fill")
    np.testing.assert_array_equal(fit.kernel * 2.0 ** 200, reference.kernel)
    np.testing.assert_array_equal(fit.stderr * 2.0 ** 200, reference.stderr)


def test_ordinary_images_are_not_rescaled():
    a, b = _well_posed_pair()
    assert "data_scale" not in kf.estimate(a * 1e50, b * 1e-50, 3, boundary="fill").info


def test_a_parametric_fit_of_tiny_images_keeps_its_parameters():
    a, b = _well_posed_pair()
    reference = kf.estimate(a, b, 3, boundary="fill", model="gaussian", background=0)
    fit = kf.estimate(a * 1e-300, b * 1e-300, 3, boundary="fill", model="gaussian",
                      background=0)
    assert fit.params["sigma"] == pytest.approx(reference.params["sigma"], rel=1e-9)
    np.testing.assert_allclose(fit.kernel, reference.kernel, rtol=1e-9)


def test_a_fixed_lam_out_of_range_at_this_scale_is_refused():
    a, b = _well_posed_pair()
    with pytest.raises(ValueError, match=r"lam=0\.1 weighs the penalty beyond float64's range "
                                         r"against images of this scale .* lam='auto'"):
        kf.estimate(a * 1e-300, b * 1e-300, 3, boundary="fill", reg="ridge", lam=0.1)



def _design(a, kh):
    """The explicit 'valid' design: row i holds a's pixels under output pixel i's footprint
    in convolution orientation."""
    from numpy.lib.stride_tricks import sliding_window_view
    return sliding_window_view(a, (kh, kh))[:, :, ::-1, ::-1].reshape(-1, kh * kh)


@pytest.mark.parametrize("size, kh, texture", [(64, 9, 1.0), (64, 5, 0.1), (128, 5, 1.0)])
def test_a_large_dc_offset_gives_the_qr_least_squares_kernel(size, kh, texture):
    # a = 30000 + texture, noise 1e-3, no background: G's condition number is ~p·(μ/σ)²
    # (1e12-1e14), which the plain normal equations called rank-deficient (64², 9×9) or
    # solved a standard error off (128², 5×5).  QR on the explicit design (numpy lstsq) is
    # the reference; the fit must match it to 1e-3 of its standard error (measured: 1e-7)
    # and its standard errors QR's to 1e-6.
    rng = np.random.default_rng(1)
    a = 30000 + texture * rng.random((size, size))
    k = rng.random((kh, kh))
    k /= k.sum()
    b = kf.convolve(a, k, mode="valid") + 1e-3 * rng.standard_normal((size - kh + 1,) * 2)
    X = _design(a, kh)
    solution, rss, *_ = np.linalg.lstsq(X, b.ravel(), rcond=None)
    sigma = np.sqrt(rss[0] / (X.shape[0] - X.shape[1]))
    qr_stderr = sigma * np.sqrt(np.sum(np.linalg.inv(np.linalg.qr(X)[1]) ** 2, axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = kf.estimate(a, b, kh)
    assert fit.converged
    assert np.max(np.abs(fit.kernel.ravel() - solution) / fit.stderr.ravel()) < 1e-3
    np.testing.assert_allclose(fit.stderr.ravel(), qr_stderr, rtol=1e-6)


def test_a_large_dc_offset_with_masks_and_several_pairs():
    # One mean for every pair keeps the split exact for their sum; masked pixels drop out.
    rng = np.random.default_rng(3)
    k = rng.random((7, 7))
    k /= k.sum()
    A = [30000 + rng.random((n, n)) for n in (96, 80)]
    B = [kf.convolve(a, k, mode="valid") + 1e-3 * rng.standard_normal((len(a) - 6,) * 2)
         for a in A]
    M = [rng.random(b.shape) > 0.1 for b in B]
    X = np.vstack([_design(a, 7)[m.ravel()] for a, m in zip(A, M)])
    solution = np.linalg.lstsq(X, np.concatenate([b[m] for b, m in zip(B, M)]), rcond=None)[0]
    fit = kf.estimate(A, B, 7, mask=M)
    assert fit.converged and fit.n_used == X.shape[0]
    assert np.max(np.abs(fit.kernel.ravel() - solution) / fit.stderr.ravel()) < 1e-3


# --------------------------------------------------------------------------------------------
# Fuzzing
# --------------------------------------------------------------------------------------------

_GOOD_DTYPES = [np.float64, np.float32, np.int16, np.uint8]
_BAD_DTYPES = [bool, np.complex128, object, np.str_, np.float16]  # float16 is fine, in fact

# Ways to spoil a valid call, each applied to the drawn arguments (a, b, shape, options).
_SPOILERS = {
    "a-dtype": lambda draw, a, b, shape, o: (_cast(a, draw(st.sampled_from(_BAD_DTYPES))), b,
                                              shape, o),
    "b-dtype": lambda draw, a, b, shape, o: (a, _cast(b, draw(st.sampled_from(_BAD_DTYPES))),
                                              shape, o),
    "a-ndim": lambda draw, a, b, shape, o: (
        draw(st.sampled_from([a[0], a[None], a[..., None], a[0, 0], a[:0], None, "a"])),
        b, shape, o),
    "b-values": lambda draw, a, b, shape, o: (a, _spoil_values(b, draw), shape, o),
    "a-values": lambda draw, a, b, shape, o: (_spoil_values(a, draw), b, shape, o),
    "b-shape": lambda draw, a, b, shape, o: (a, b[1:] if draw(st.booleans()) else b.T[:, 1:],
                                              shape, o),
    "shape": lambda draw, a, b, shape, o: (a, b, draw(st.sampled_from(
        [0, -1, (2, 0), 2.0, "3", (2,), (1, 2, 3), None, True, 99])), o),
    "option": lambda draw, a, b, shape, o: (a, b, shape, {**o, **draw(st.sampled_from([
        {"boundary": "bogus"}, {"boundary": None}, {"model": "nope"}, {"loss": "l9"},
        {"nonneg": "yes"}, {"nonneg": True, "model": "gaussian"}, {"reg": "l9"},
        {"lam": -1.0, "reg": "ridge"}, {"lam": 0.1}, {"normalize": float("nan")},
        {"normalize": -1.0, "nonneg": True}, {"center": (9, 9)}, {"center": "cc"},
        {"noise_std": 0.0}, {"rank": 2}, {"loss": "huber", "model": "free"}]))}),
    "mask": lambda draw, a, b, shape, o: (a, b, shape, {**o, "mask": draw(st.sampled_from([
        np.zeros(b.shape, bool), np.ones(b.shape), np.ones((2, 2), bool), "x",
        [[True], [True, False]], np.ones(b.shape, np.complex64)]))}),
}


def _numeric(image):
    return isinstance(image, np.ndarray) and image.size > 0 and (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating))


def _cast(image, dtype):
    if not _numeric(image):  # already spoilt
        return image
    if dtype is bool:
        return image > image.mean()
    with np.errstate(all="ignore"):
        return image.astype(dtype)


def _spoil_values(image, draw):
    if not _numeric(image):
        return image
    out = np.array(image, dtype=np.float64)
    kind = draw(st.sampled_from(["nan-all", "nan-some", "inf", "constant", "huge", "tiny"]))
    if kind == "nan-all":
        out[...] = np.nan
    elif kind == "nan-some":
        out.flat[:: draw(st.integers(1, 5))] = np.nan
    elif kind == "inf":
        out.flat[draw(st.integers(0, out.size - 1))] = -np.inf
    elif kind == "constant":
        out[...] = draw(st.sampled_from([0.0, 1.0, 255.0]))
    else:
        out *= 1e200 if kind == "huge" else 1e-200
    return out


@st.composite
def _estimate_arguments(draw):
    """A valid call of estimate, then spoilt in 0 to 2 ways."""
    H, W = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    shape = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    kh, kw = (shape, shape) if isinstance(shape, int) else shape
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).random((H, W)) * 100
    a = _cast(a, draw(st.sampled_from(_GOOD_DTYPES)))
    model = draw(st.sampled_from(["free", "free", "free", "separable", "gaussian", "radial"]))
    rule = draw(st.sampled_from(["same", "valid", "full"]))
    boundary = draw(st.sampled_from(list(kf.BOUNDARIES) + ["symm", "edge", "constant"]))
    if rule == "same" and boundary == "valid":
        rule = "valid"
    b = kf.convolve(np.asarray(a, float), np.full((kh, kw), 1.0 / (kh * kw)),
                    boundary="fill" if boundary == "valid" else boundary, mode=rule)
    b = b + np.random.default_rng(seed + 1).normal(0, 0.1, b.shape)
    options = {"boundary": boundary, "model": model}
    if model == "free" and draw(st.booleans()):
        options.update(draw(st.sampled_from([{"nonneg": True}, {"normalize": 1.0},
                                             {"reg": "ridge"}, {"reg": "laplacian", "lam": 0.01},
                                             {"mask": np.ones(b.shape, bool)}])))
    spoilers = draw(st.lists(st.sampled_from(sorted(_SPOILERS)), max_size=2, unique=True))
    for name in spoilers:
        a, b, shape, options = _SPOILERS[name](draw, a, b, shape, options)
    return a, b, shape, options


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_estimate_arguments())
def test_fuzz_estimate_returns_a_fit_or_refuses(arguments):
    a, b, shape, options = arguments
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank deficiency, overflow: allowed, not our subject
        try:
            fit = kf.estimate(a, b, shape, **options)
        except (ValueError, TypeError) as exc:
            assert str(exc), "an error must say what is wrong"
            event(f"refused: {type(exc).__name__}")
            return
    event("fitted")
    assert isinstance(fit, kf.KernelFit)
    assert fit.kernel.ndim == 2


_READ_EXTENSIONS = (".png", ".jpg", ".gif", ".bmp", ".tif", ".npy", ".fits")
_KERNEL_EXTENSIONS = (".npy", ".csv", ".txt", ".tif")
_SEEDS = {ext: _good_bytes(ext) for ext in _READ_EXTENSIONS + (".csv", ".txt")}


@st.composite
def _damaged_file(draw):
    reader = draw(st.sampled_from(["image", "mask", "kernel"]))
    ext = draw(st.sampled_from(_KERNEL_EXTENSIONS if reader == "kernel" else _READ_EXTENSIONS))
    if draw(st.booleans()):
        data = draw(st.binary(max_size=300))  # random bytes
    else:  # a valid file, damaged: bytes overwritten and/or cut short
        data = bytearray(_SEEDS[ext])
        for _ in range(draw(st.integers(0, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        data = bytes(data)
    return reader, ext, data


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_damaged_file())
def test_fuzz_readers_return_an_image_or_refuse(case):
    reader, ext, data = case
    read = {"image": io.read_image, "mask": io.read_mask, "kernel": io.read_kernel}[reader]
    with tempfile.TemporaryDirectory() as d:
        path = _file(d, f"f{ext}", data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. astropy's header-fixing notes
            try:
                image = read(path)
            except ValueError as exc:
                event(f"refused {reader}")
                # A read error names the file (or says how to install the FITS reader).
                assert f"f{ext}" in str(exc) or "astropy" in str(exc), str(exc)
                return
    event(f"read {reader}")
    assert isinstance(image, np.ndarray) and image.ndim == 2 and image.size > 0
    assert image.dtype == bool or np.issubdtype(image.dtype, np.number)
    assert not np.iscomplexobj(image)
