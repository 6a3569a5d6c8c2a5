"""Tests for kernelfit.io: every reader/writer round trip, colour handling, errors, atomicity."""

import errno
import os
import re
import stat
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from kernelfit import io


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


def _only_files(directory):
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------------------------
# Image round trips
# --------------------------------------------------------------------------------------------


def test_png_uint8_round_trip(tmp_path, rng):
    image = rng.integers(0, 256, size=(17, 23), dtype=np.uint8)
    io.write_image(tmp_path / "a.png", image)
    back = io.read_image(tmp_path / "a.png")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, image)  # PNG is lossless


def test_png_uint16_round_trip_with_like_dtype(tmp_path, rng):
    image = rng.integers(0, 65536, size=(9, 11)).astype(np.float64)
    io.write_image(tmp_path / "a.png", image, like_dtype=np.uint16)
    back = io.read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


def test_png_rounds_and_clips_floats_to_uint8(tmp_path):
    image = np.array([[-3.0, 12.4, 12.6], [254.5, 255.4, 1e6]])
    io.write_image(tmp_path / "a.png", image)
    # np.rint rounds half to even: 254.5 -> 254.
    assert io.read_image(tmp_path / "a.png").tolist() == [[0, 12, 13], [254, 255, 255]]


def test_png_of_non_finite_values_is_refused(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinite"):
        io.write_image(tmp_path / "a.png", np.array([[1.0, np.nan]]))
    assert _only_files(tmp_path) == []


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_tiff_round_trip_keeps_dtype(tmp_path, rng, dtype):
    if np.issubdtype(dtype, np.integer):
        image = rng.integers(0, 65536, size=(12, 7)).astype(dtype)
    else:
        image = rng.standard_normal((12, 7)).astype(dtype)
    io.write_image(tmp_path / "a.tif", image)
    back = io.read_image(tmp_path / "a.tif")
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)


def test_tiff_with_integer_like_dtype_rounds_and_clips(tmp_path):
    io.write_image(tmp_path / "a.tiff", np.array([[-1.0, 2.6, 7e4]]), like_dtype=np.uint16)
    back = io.read_image(tmp_path / "a.tiff")
    assert back.dtype == np.uint16
    assert back.tolist() == [[0, 3, 65535]]


def test_npy_round_trip_is_exact(tmp_path, rng):
    image = rng.standard_normal((5, 6))
    io.write_image(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.npy"), image)


def test_jpeg_round_trip_is_close(tmp_path):
    # A smooth ramp: JPEG is lossy, but at imageio's default quality a smooth 8-bit image
    # comes back within a few grey levels.
    image = np.add.outer(np.arange(32), np.arange(32)) * 4.0
    io.write_image(tmp_path / "a.jpg", image)
    back = io.read_image(tmp_path / "a.jpg").astype(float)
    assert back.shape == image.shape
    assert np.max(np.abs(back - image)) <= 8


@pytest.mark.parametrize("ext", [".bmp", ".gif"])
def test_bmp_and_gif_are_read_as_gray(tmp_path, rng, ext):
    # GIF stores a palette, so imageio hands back RGB with three equal channels; such an
    # image is grayscale and must not be refused as colour.
    image = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
    iio.imwrite(tmp_path / f"a{ext}", image)
    back = io.read_image(tmp_path / f"a{ext}")
    assert back.shape == image.shape
    np.testing.assert_array_equal(back, image)


def test_fits_image_and_kernel_round_trip(tmp_path, rng):
    pytest.importorskip("astropy")
    image = rng.standard_normal((8, 9))
    io.write_image(tmp_path / "a.fits", image)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.fits"), image)
    kernel = rng.standard_normal((3, 5))
    io.write_kernel(tmp_path / "k.fits", kernel)
    back = io.read_kernel(tmp_path / "k.fits")
    assert back.dtype.isnative  # FITS is big-endian on disk
    np.testing.assert_array_equal(back, kernel)


def test_fits_without_astropy_says_how_to_install(tmp_path, monkeypatch):
    pytest.importorskip("astropy")
    io.write_kernel(tmp_path / "k.fits", np.ones((2, 2)))
    # A None entry in sys.modules makes the import fail as if astropy were not installed.
    monkeypatch.setitem(sys.modules, "astropy.io", None)
    monkeypatch.setitem(sys.modules, "astropy.io.fits", None)
    with pytest.raises(ValueError, match=r"pip install kernelfit\[fits\]"):
        io.read_image(tmp_path / "k.fits")
    with pytest.raises(ValueError, match=r"pip install kernelfit\[fits\]"):
        io.write_kernel(tmp_path / "k2.fits", np.ones((2, 2)))
    assert not (tmp_path / "k2.fits").exists()


# --------------------------------------------------------------------------------------------
# Kernel round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".npy", ".csv", ".txt", ".tif", ".tiff"])
def test_kernel_round_trip_is_exact(tmp_path, rng, ext):
    # '%.17g' prints enough digits to identify every float64, so text is exact too.
    kernel = rng.standard_normal((4, 6)) * 10.0 ** rng.integers(-12, 12, size=(4, 6))
    io.write_kernel(tmp_path / f"k{ext}", kernel)
    back = io.read_kernel(tmp_path / f"k{ext}")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, kernel)


def test_csv_is_comma_separated_and_txt_whitespace_separated(tmp_path):
    io.write_kernel(tmp_path / "k.csv", [[0.5, 0.25]])
    io.write_kernel(tmp_path / "k.txt", [[0.5, 0.25]])
    assert (tmp_path / "k.csv").read_text().strip() == "0.5,0.25"
    assert (tmp_path / "k.txt").read_text().split() == ["0.5", "0.25"]


def test_single_row_text_kernel_is_2d(tmp_path):
    (tmp_path / "k.csv").write_text("0.25,0.5,0.25\n")
    assert io.read_kernel(tmp_path / "k.csv").shape == (1, 3)


def test_png_kernel_is_a_linear_picture(tmp_path):
    kernel = np.array([[-1.0, 0.0], [1.0, 3.0]])
    io.write_kernel(tmp_path / "k.png", kernel)
    picture = io.read_image(tmp_path / "k.png")
    assert picture.dtype == np.uint8
    # min -> 0, max -> 255, linear in between: (0 - -1) / 4 * 255 = 63.75 -> 64.
    assert picture.tolist() == [[0, 64], [128, 255]]


def test_png_kernel_cannot_be_read_back(tmp_path):
    io.write_kernel(tmp_path / "k.png", np.eye(3))
    with pytest.raises(ValueError, match="picture"):
        io.read_kernel(tmp_path / "k.png")


def test_kernel_must_be_2d(tmp_path):
    np.save(tmp_path / "k.npy", np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"k\.npy.*2-D"):
        io.read_kernel(tmp_path / "k.npy")
    with pytest.raises(ValueError, match="2-D"):
        io.write_kernel(tmp_path / "out.npy", np.ones(3))
    assert not (tmp_path / "out.npy").exists()


def test_write_json_converts_numpy_values(tmp_path):
    import json

    io.write_json(tmp_path / "fit.json", {"k": np.eye(2), "s": np.float32(0.5), "n": np.int64(3)})
    assert json.loads((tmp_path / "fit.json").read_text()) == {
        "k": [[1.0, 0.0], [0.0, 1.0]], "s": 0.5, "n": 3}


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------


@pytest.fixture
def colour_png(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    iio.imwrite(path, rgb)
    return path, rgb


def test_colour_image_is_refused_with_advice(colour_png):
    path, _ = colour_png
    with pytest.raises(ValueError, match=r"colour\.png.*colour image.*--channel N.*--gray"):
        io.read_image(path)


def test_channel_picks_one_plane(colour_png):
    path, rgb = colour_png
    np.testing.assert_array_equal(io.read_image(path, channel=1), rgb[..., 1])


def test_gray_is_rec709_luma_ignoring_alpha(tmp_path, colour_png):
    path, rgb = colour_png
    expected = rgb @ np.array([0.2126, 0.7152, 0.0722])
    np.testing.assert_allclose(io.read_image(path, gray=True), expected, rtol=1e-12)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_allclose(io.read_image(tmp_path / "rgba.png", gray=True), expected,
                               rtol=1e-12)


def test_gray_saved_as_rgb_is_accepted(tmp_path, rng):
    plane = rng.integers(0, 256, size=(5, 5), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", np.dstack([plane] * 3))
    np.testing.assert_array_equal(io.read_image(tmp_path / "g.png"), plane)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channel": 3}, r"channel=3 is out of range; the image has 3 channels"),
        ({"channel": -1}, r"channel=-1 is out of range"),
        ({"channel": 0, "gray": True}, r"either a channel or gray"),
    ],
)
def test_bad_channel_requests(colour_png, kwargs, match):
    path, _ = colour_png
    with pytest.raises(ValueError, match=match):
        io.read_image(path, **kwargs)


def test_channel_on_grayscale_image(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 3)))
    assert io.read_image(tmp_path / "a.npy", channel=0).shape == (3, 3)
    assert io.read_image(tmp_path / "a.npy", gray=True).shape == (3, 3)
    with pytest.raises(ValueError, match="grayscale"):
        io.read_image(tmp_path / "a.npy", channel=1)


def test_channel_picks_a_plane_of_any_stack(tmp_path):
    stack = np.arange(4 * 5 * 6.0).reshape(4, 5, 6)
    np.save(tmp_path / "s.npy", stack)
    np.testing.assert_array_equal(io.read_image(tmp_path / "s.npy", channel=5), stack[..., 5])
    with pytest.raises(ValueError, match="gray needs an RGB or RGBA image"):
        io.read_image(tmp_path / "s.npy", gray=True)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def test_mask_nonzero_is_usable_and_nan_is_not(tmp_path):
    np.save(tmp_path / "m.npy", np.array([[0.0, 2.0], [np.nan, -1.0]]))
    assert io.read_mask(tmp_path / "m.npy").tolist() == [[False, True], [False, True]]


def test_colour_mask_uses_any_channel(tmp_path):
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1, 2] = 255
    rgb[0, 2] = 255
    iio.imwrite(tmp_path / "m.png", rgb)
    assert io.read_mask(tmp_path / "m.png").tolist() == [[False, True, True]]


# --------------------------------------------------------------------------------------------
# Read errors: each a ValueError that names the file
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.png: no such file"):
        io.read_image(tmp_path / "nope.png")


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match=r"d\.png: is not a file"):
        io.read_image(tmp_path / "d.png")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".npy", ".fits", ".gif"])
def test_corrupt_file(tmp_path, ext):
    if ext == ".fits":
        pytest.importorskip("astropy")
    path = tmp_path / f"junk{ext}"
    path.write_bytes(b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(ValueError, match=rf"junk\{ext}: cannot read the file"):
        io.read_image(path)


def test_truncated_png(tmp_path, rng):
    io.write_image(tmp_path / "a.png", rng.integers(0, 256, size=(64, 64)))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.png: cannot read the file"):
        io.read_image(tmp_path / "cut.png")


def test_unknown_extension(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"1")
    with pytest.raises(ValueError, match=r"a\.xyz: unknown image type '\.xyz'"):
        io.read_image(tmp_path / "a.xyz")
    (tmp_path / "k.png").write_bytes(b"1")
    with pytest.raises(ValueError, match=r"k\.xyz.*cannot read a kernel"):
        (tmp_path / "k.xyz").write_bytes(b"1")
        io.read_kernel(tmp_path / "k.xyz")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.arange(5.0), r"expected a 2-D image, got a 1-D array of shape \(5,\)"),
        (np.zeros((4, 5, 6)), r"got a 3-D array of shape \(4, 5, 6\)"),
        (np.zeros((2, 3, 4, 5)), r"got a 4-D array"),
        (np.zeros((0, 5)), r"empty \(shape \(0, 5\)\)"),
        (np.float64(3.0), r"a single number"),
        (np.ones((2, 2), complex), r"complex"),
        (np.array([["a", "b"]]), r"not numbers"),
    ],
)
def test_bad_arrays(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=r"bad\.npy: .*" + match):
        io.read_image(tmp_path / "bad.npy")


def test_pickled_npy_is_not_loaded(tmp_path):
    # Loading pickles can run arbitrary code; an object array must be refused, not unpickled.
    np.save(tmp_path / "obj.npy", np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy: cannot read the file"):
        io.read_image(tmp_path / "obj.npy")


# --------------------------------------------------------------------------------------------
# Writing: checks, atomicity, permissions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, match",
    [
        ("k.xyz", "kernel", r"cannot write a kernel as '\.xyz'"),
        ("k.jpg", "kernel", r"cannot write a kernel as '\.jpg'"),
        ("out.csv", "image", r"cannot write an image as '\.csv'"),
        ("no/such/dir/k.npy", "kernel", r"directory .* does not exist"),
    ],
)
def test_check_output_path(tmp_path, name, kind, match):
    with pytest.raises(ValueError, match=match):
        io.check_output_path(tmp_path / name, kind)


def test_failed_write_leaves_no_temp_file_and_keeps_old_output(tmp_path, monkeypatch):
    target = tmp_path / "k.tif"
    target.write_bytes(b"previous result")

    def half_write(path, array):
        with open(path, "wb") as f:
            f.write(b"half a TIFF")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(OSError, match="disk full"):
        io.write_kernel(target, np.ones((3, 3)))
    assert _only_files(tmp_path) == ["k.tif"]
    assert target.read_bytes() == b"previous result"


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(path, array, allow_pickle=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.write_image(tmp_path / "a.npy", np.ones((2, 2)))
    assert _only_files(tmp_path) == []


def test_written_file_has_ordinary_permissions(tmp_path):
    # The temporary file starts as owner-only (0600); the result must get the permissions a
    # plain open() would give, i.e. 0666 minus the umask.
    old = os.umask(0o022)
    try:
        io.write_kernel(tmp_path / "k.npy", np.ones((2, 2)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.npy").stat().st_mode) == 0o644


def test_output_set_leaves_all_or_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("old")

    def text(path, words):
        Path(path).write_text(words)

    def failing(path):
        Path(path).write_text("half")
        raise OSError("the writer broke")

    with pytest.raises(OSError, match="the writer broke"):
        with io.atomic_outputs() as outputs:
            outputs.write(tmp_path / "a.txt", text, "new")
            outputs.write(tmp_path / "b.txt", failing)
    assert _only_files(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_outputs() as outputs:
            outputs.write(tmp_path / "b.txt", text, "new")
            raise KeyboardInterrupt
    assert _only_files(tmp_path) == ["a.txt"]
    with io.atomic_outputs() as outputs:
        outputs.write(tmp_path / "a.txt", text, "new")
        outputs.write(tmp_path / "b.txt", text, "two")
        assert (tmp_path / "a.txt").read_text() == "old"  # nothing renamed before the end
    assert _only_files(tmp_path) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "new" and outputs.committed


def test_output_paths_that_are_inputs_are_refused(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"input")
    (tmp_path / "sym.npy").symlink_to(tmp_path / "a.npy")
    os.link(tmp_path / "a.npy", tmp_path / "hard.npy")
    for output in ("a.npy", "sym.npy", "hard.npy", "sub/../a.npy"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(ValueError, match=r"-o .* is the input A \(.*a\.npy\): kernelfit "
                                             r"never overwrites its inputs"):
            io.check_not_inputs({"-o": tmp_path / output}, {"A": tmp_path / "a.npy"})
    with pytest.raises(ValueError, match=r"--json .*sym\.npy is also the output -o"):
        io.check_not_inputs({"-o": tmp_path / "a.npy", "--json": tmp_path / "sym.npy"}, {})
    io.check_not_inputs({"-o": tmp_path / "k.npy", "--json": None}, {"A": tmp_path / "a.npy"})


# --------------------------------------------------------------------------------------------
# A full disk: named, and nothing left behind
# --------------------------------------------------------------------------------------------


def test_short_write_says_the_disk_is_full(tmp_path, monkeypatch):
    def short_write(path, array, allow_pickle=False):
        with open(path, "wb") as f:  # what tofile leaves when the disk fills up
            f.write(b"\x93NUMPY" + bytes(100))
        raise OSError("360000 requested and 131038 written")  # numpy's wording, no errno

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(OSError, match=r"k\.npy: cannot write, the disk is full \(ENOSPC: "
                                      r".*\); 131038 of 360000 bytes were written") as caught:
        io.write_kernel(tmp_path / "k.npy", np.ones((300, 150)))
    assert caught.value.errno == errno.ENOSPC
    assert _only_files(tmp_path) == []


def test_enospc_is_named_after_the_output(tmp_path, monkeypatch):
    def no_space(path, array, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", no_space)
    with pytest.raises(OSError, match=r"k\.tif: cannot write, the disk is full"):
        io.write_kernel(tmp_path / "k.tif", np.ones((3, 3)))
    assert _only_files(tmp_path) == []


# --------------------------------------------------------------------------------------------
# One pixel limit, checked from the header before decoding
# --------------------------------------------------------------------------------------------


def _write_60x50(path):
    image = np.arange(3000, dtype=np.uint16).reshape(60, 50) % 251
    ext = path.suffix
    if ext == ".tif":
        tifffile.imwrite(path, image, compression="zlib")
    elif ext == ".npy":
        np.save(path, image.astype(np.float64))
    elif ext == ".fits":
        from astropy.io import fits

        fits.PrimaryHDU(image.astype(np.float32)).writeto(path)
    else:
        iio.imwrite(path, image.astype(np.uint8))
    return image


def _no_decoding(monkeypatch):
    """Make every decoder fail loudly: the limit must act on the header alone."""
    import imageio.v3

    def decoded(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", decoded)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", decoded)
    monkeypatch.setattr(imageio.v3, "imread", decoded)
    monkeypatch.setattr(np, "load", decoded)
    try:
        from astropy.io.fits.hdu.image import _ImageBaseHDU
    except ImportError:
        return
    monkeypatch.setattr(_ImageBaseHDU, "data", property(decoded))


@pytest.mark.parametrize("name", ["a.tif", "a.png", "a.gif", "a.bmp", "a.npy", "a.fits"])
def test_pixel_limit_from_the_header(tmp_path, monkeypatch, name):
    if name.endswith(".fits"):
        pytest.importorskip("astropy")
    path = tmp_path / name
    image = _write_60x50(path)
    np.testing.assert_array_equal(io.read_image(path, max_pixels=3000), image)  # inclusive
    _no_decoding(monkeypatch)
    with pytest.raises(ValueError, match=re.escape(name) + r": the image has 3000 pixels "
                                         r"\(60x50\), more than the limit of 2999; it was "
                                         r"not decoded"):
        io.read_image(path, max_pixels=2999)
    with pytest.raises(ValueError, match=r"the image has 3000 pixels"):
        io.read_mask(path, max_pixels=2999)


def test_pixel_limit_does_not_count_colour_samples(tmp_path, monkeypatch):
    rgb = np.zeros((60, 50, 3), np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.save(tmp_path / "rgb.npy", rgb)
    for name in ("rgb.png", "rgb.tif", "rgb.npy"):
        assert io.read_array(tmp_path / name, max_pixels=3000).shape == (60, 50, 3)
        with pytest.raises(ValueError, match=r"3000 pixels \(60x50(x3)?\)"):
            io.read_array(tmp_path / name, max_pixels=2999)


def test_kernels_and_lazy_images_have_the_pixel_limit(tmp_path):
    from kernelfit.io.lazy import open_lazy

    np.save(tmp_path / "k.npy", np.ones((3, 5)))
    tifffile.imwrite(tmp_path / "a.tif", np.ones((6, 7), np.float32))
    with pytest.raises(ValueError, match=r"k\.npy: the image has 15 pixels"):
        io.read_kernel(tmp_path / "k.npy", max_pixels=14)
    for name in ("k.npy", "a.tif"):
        with pytest.raises(ValueError, match=rf"{name[0]}\.\w+: the image has \d+ pixels"):
            open_lazy(tmp_path / name, max_pixels=14)
    assert open_lazy(tmp_path / "a.tif", max_pixels=42).shape == (6, 7)


def test_default_pixel_limit_refuses_a_zlib_bomb_unread(tmp_path, monkeypatch):
    import zlib

    from kernelfit.io.lazy import open_lazy

    # 30000 x 30000 zeros, one compressed 256 x 256 tile repeated: under 2 MB on disk,
    # 0.84 GB decoded (6.7 GiB as float64).
    tile = zlib.compress(bytes(256 * 256))
    n_tiles = (-(-30000 // 256)) ** 2  # rounded up
    tifffile.imwrite(tmp_path / "bomb.tif", (tile for _ in range(n_tiles)),
                     shape=(30000, 30000), dtype=np.uint8, tile=(256, 256),
                     compression="zlib")
    assert (tmp_path / "bomb.tif").stat().st_size < 2**21
    _no_decoding(monkeypatch)
    message = rf"bomb\.tif: the image has 900000000 pixels \(30000x30000\), more than the " \
              rf"limit of {io.MAX_PIXELS}"
    with pytest.raises(ValueError, match=message):
        io.read_image(tmp_path / "bomb.tif")
    with pytest.raises(ValueError, match=message):
        open_lazy(tmp_path / "bomb.tif")
    assert io.MAX_PIXELS == 16384 ** 2  # the documented default


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_max_pixels_must_be_a_positive_integer(tmp_path, bad):
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match=rf"max_pixels={re.escape(repr(bad))} must be a "
                                         "positive integer"):
        io.read_image(tmp_path / "a.npy", max_pixels=bad)


# --------------------------------------------------------------------------------------------
# FITS: the first image HDU, squeezed cubes, planes on the last axis
# --------------------------------------------------------------------------------------------


def test_fits_cube_with_one_plane_is_an_image(tmp_path, rng):
    fits = pytest.importorskip("astropy.io.fits")
    cube = rng.random((1, 20, 20))  # NAXIS3 = 1
    fits.PrimaryHDU(cube).writeto(tmp_path / "c.fits")
    np.testing.assert_array_equal(io.read_image(tmp_path / "c.fits"), cube[0])
    np.testing.assert_array_equal(io.read_image(tmp_path / "c.fits", channel=0), cube[0])


def test_fits_cube_planes_are_channels(tmp_path, rng):
    fits = pytest.importorskip("astropy.io.fits")
    cube = rng.random((3, 20, 21))  # NAXIS3 = 3 planes of 20 x 21
    fits.PrimaryHDU(cube).writeto(tmp_path / "c.fits")
    assert io.read_array(tmp_path / "c.fits").shape == (20, 21, 3)
    for plane in range(3):
        np.testing.assert_array_equal(io.read_image(tmp_path / "c.fits", channel=plane),
                                      cube[plane])


def test_fits_image_behind_a_table_is_found(tmp_path, rng):
    fits = pytest.importorskip("astropy.io.fits")
    image = rng.random((5, 6))
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="D", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table, fits.ImageHDU(image)]).writeto(tmp_path / "e.fits")
    np.testing.assert_array_equal(io.read_image(tmp_path / "e.fits"), image)
    np.testing.assert_array_equal(io.read_image(tmp_path / "e.fits", hdu=2), image)
    with pytest.raises(ValueError, match=r"e\.fits: hdu=1 is a BinTableHDU \(a table\), not "
                                         r"an image"):
        io.read_image(tmp_path / "e.fits", hdu=1)
    with pytest.raises(ValueError, match=r"e\.fits: hdu=0 holds no data"):
        io.read_image(tmp_path / "e.fits", hdu=0)
    with pytest.raises(ValueError, match=r"e\.fits: hdu=3 is out of range; the file has 3 "
                                         r"HDUs \(0 to 2\)"):
        io.read_image(tmp_path / "e.fits", hdu=3)
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "t.fits")
    with pytest.raises(ValueError, match=r"t\.fits: the FITS file holds no image data \(HDUs "
                                         r"0: PrimaryHDU, 1: BinTableHDU\)"):
        io.read_image(tmp_path / "t.fits")


def test_hdu_is_only_for_fits(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"a\.npy: hdu=1 requested, but only FITS files"):
        io.read_image(tmp_path / "a.npy", hdu=1)
    with pytest.raises(ValueError, match=r"a\.npy: hdu=-1 must be a non-negative integer"):
        io.read_image(tmp_path / "a.npy", hdu=-1)


def test_fits_kernel_stack_is_a_cube_with_channels_on_naxis3(tmp_path, rng):
    fits = pytest.importorskip("astropy.io.fits")
    stack = rng.random((3, 5, 2))  # (kh, kw, C)
    io.write_kernel(tmp_path / "k.fits", stack)
    header = fits.getheader(tmp_path / "k.fits")
    assert (header["NAXIS1"], header["NAXIS2"], header["NAXIS3"]) == (5, 3, 2)
    np.testing.assert_array_equal(io.read_kernel(tmp_path / "k.fits", stack=True), stack)


# --------------------------------------------------------------------------------------------
# Pickles are never loaded, nor is loading them advised
# --------------------------------------------------------------------------------------------


def test_pickle_named_npy_is_refused_without_unsafe_advice(tmp_path):
    import pickle

    from kernelfit.io.lazy import open_lazy

    (tmp_path / "p.npy").write_bytes(pickle.dumps(np.ones((4, 4))))
    np.save(tmp_path / "obj.npy", np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
    for read in (io.read_image, open_lazy):
        with pytest.raises(ValueError, match=r"p\.npy: cannot read the file: not a \.npy file "
                                             r"\(no NumPy header\)") as caught:
            read(tmp_path / "p.npy")
        assert "allow_pickle" not in str(caught.value)
        with pytest.raises(ValueError, match=r"obj\.npy: cannot read the file: holds object "
                                             r"data \(Python objects\)") as caught:
            read(tmp_path / "obj.npy")
        assert "allow_pickle" not in str(caught.value)
