"""Tests for the ``kernelfit`` command line, run in-process through ``main(argv)``."""

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

import kernelfit as kf
from kernelfit import cli
from kernelfit import io

# A small asymmetric non-negative kernel summing to 1: a fit in the wrong orientation would
# not match it, and with zero padding a blurred 8-bit image stays within 0..255.
KERNEL = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 2.0], [0.0, 1.0, 1.0]]) / 10.0


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def pair(tmp_path, rng):
    """A random 8-bit image and its 8-bit blurred copy (zero padding), as PNG files."""
    a = rng.integers(0, 256, size=(40, 48), dtype=np.uint8)
    b = np.clip(np.rint(kf.convolve(a, KERNEL, boundary="fill")), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    iio.imwrite(tmp_path / "b.png", b)
    return tmp_path / "a.png", tmp_path / "b.png", a, b


def run(capsys, *argv):
    """Run the CLI; return (exit status, stdout, stderr lines)."""
    status = cli.main([str(x) for x in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def test_estimate_then_apply_reproduces_b_on_pngs(tmp_path, pair, capsys):
    a_png, b_png, _, b = pair
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3x3",
                           "--boundary", "fill", "-o", tmp_path / "k.npy",
                           "--json", tmp_path / "fit.json")
    assert status == 0, err
    assert err == []  # a small image gets no progress lines
    assert "kernel" in out  # the summary
    # 8-bit rounding is noise of std 1/sqrt(12) on 1920 pixels against a 0..255 image, so
    # each coefficient is good to about 1e-3 of the kernel sum.
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), KERNEL, atol=5e-3)
    saved = json.loads((tmp_path / "fit.json").read_text())
    np.testing.assert_allclose(saved["kernel"], np.load(tmp_path / "k.npy"))

    status, _, err = run(capsys, "apply", a_png, tmp_path / "k.npy", "-o",
                         tmp_path / "pred.png", "--boundary", "fill")
    assert status == 0, err
    predicted = iio.imread(tmp_path / "pred.png")
    assert predicted.dtype == np.uint8  # like the input PNG
    # The fitted kernel predicts b before rounding to within a fraction of a grey level,
    # so after rounding each pixel is off by at most one level.
    assert np.max(np.abs(predicted.astype(int) - b.astype(int))) <= 1


def test_constraints_and_regularisation_options(tmp_path, pair, capsys):
    a_png, b_png, _, _ = pair
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "5", "--boundary",
                         "fill", "--nonneg", "--normalize", "1", "--reg", "laplacian",
                         "--lam", "auto", "-o", tmp_path / "k.npy", "--json", tmp_path / "f.json")
    assert status == 0, err
    k = np.load(tmp_path / "k.npy")
    assert k.min() >= 0 and abs(k.sum() - 1) <= 1e-10
    assert json.loads((tmp_path / "f.json").read_text())["lam"] > 0
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--ridge", "1",
                         "--reg", "ridge", "-o", tmp_path / "k2.npy")
    assert status == 2 and "give one or the other" in err[0]


def test_parametric_model_prints_parameters(tmp_path, capsys):
    from scipy.ndimage import gaussian_filter

    a = np.random.default_rng(8).random((64, 64))
    b = gaussian_filter(a, 1.7, mode="reflect", truncate=4.0)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    status, out, err = run(capsys, "estimate", tmp_path / "a.npy", tmp_path / "b.npy",
                           "--shape", "15", "--boundary", "reflect", "--model", "gaussian",
                           "--truncate", "4", "--loss", "l1", "-o", tmp_path / "k.npy")
    assert status == 0, err
    sigma = float(re.search(r"sigma = ([0-9.]+)", out).group(1))
    assert abs(sigma - 1.7) < 1e-4  # noise-free data: the L1 minimiser is the truth


@pytest.mark.parametrize("ext", [".csv", ".txt", ".tif"])
def test_every_readable_kernel_format_feeds_apply(tmp_path, pair, capsys, ext):
    a_png, b_png, _, b = pair
    kernel_path = tmp_path / f"k{ext}"
    assert run(capsys, "estimate", a_png, b_png, "--shape", "3", "--boundary", "fill",
               "-o", kernel_path)[0] == 0
    assert run(capsys, "apply", a_png, kernel_path, "-o", tmp_path / "pred.npy")[0] == 0
    predicted = np.load(tmp_path / "pred.npy")
    assert predicted.dtype == np.float64  # .npy keeps the exact prediction
    assert np.max(np.abs(predicted - b)) <= 1.0  # b is the prediction rounded, see above


def test_apply_keeps_16_bit_tiff(tmp_path, rng, capsys):
    a = rng.integers(0, 65536, size=(20, 20), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.save(tmp_path / "k.npy", KERNEL)
    assert run(capsys, "apply", tmp_path / "a.tif", tmp_path / "k.npy",
               "-o", tmp_path / "out.tif")[0] == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint16
    expected = np.clip(np.rint(kf.convolve(a, KERNEL)), 0, 65535)
    np.testing.assert_array_equal(out, expected)


def test_apply_modes_and_center(tmp_path, pair, capsys):
    a_png, _, a, _ = pair
    np.save(tmp_path / "k.npy", KERNEL)
    for mode, shape in (("same", a.shape), ("valid", (38, 46)), ("full", (42, 50))):
        assert run(capsys, "apply", a_png, tmp_path / "k.npy", "--mode", mode,
                   "-o", tmp_path / "out.npy")[0] == 0
        assert np.load(tmp_path / "out.npy").shape == shape
    assert run(capsys, "apply", a_png, tmp_path / "k.npy", "--center", "0,0",
               "-o", tmp_path / "out.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               kf.convolve(a, KERNEL, center=(0, 0)))


def test_colour_images_with_channel_and_gray(tmp_path, rng, capsys):
    rgb = rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    blurred = np.stack([kf.convolve(rgb[..., c], KERNEL, boundary="nearest")
                        for c in range(3)], axis=-1)
    np.save(tmp_path / "a.npy", rgb)
    np.save(tmp_path / "b.npy", blurred)
    for option in (["--channel", "2"], ["--gray"]):
        status, _, err = run(capsys, "estimate", tmp_path / "a.npy", tmp_path / "b.npy",
                             "--shape", "3", "--boundary", "nearest", *option,
                             "-o", tmp_path / "k.npy")
        assert status == 0, err
        # Noise-free data and a linear gray conversion: exact up to rounding error.
        np.testing.assert_allclose(np.load(tmp_path / "k.npy"), KERNEL, atol=1e-9)


def test_mask_file_excludes_pixels(tmp_path, pair, capsys):
    a_png, _, a, b = pair
    spoiled = b.copy()
    spoiled[:10, :10] = 255  # a saturated corner that the mask hides
    iio.imwrite(tmp_path / "spoiled.png", spoiled)
    mask = np.full(b.shape, 255, np.uint8)
    mask[:12, :12] = 0
    iio.imwrite(tmp_path / "mask.png", mask)
    status, _, err = run(capsys, "estimate", a_png, tmp_path / "spoiled.png", "--shape", "3",
                         "--boundary", "fill", "--mask", tmp_path / "mask.png",
                         "-o", tmp_path / "k.npy")
    assert status == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), KERNEL, atol=5e-3)


def test_ridge_option_reaches_the_fit(tmp_path, pair, capsys):
    a_png, b_png, _, _ = pair
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--ridge", "0.5",
                         "-o", tmp_path / "k.npy", "--json", tmp_path / "fit.json")
    assert status == 0, err
    assert json.loads((tmp_path / "fit.json").read_text())["lam"] == 0.5


@pytest.mark.parametrize("options, method", [
    (("--loss", "huber"), "irls-huber"), (("--clip", "3"), "sigma-clip"),
    (("--loss", "l1", "--method", "lp"), "lp"), (("--method", "wiener"), "wiener"),
])
def test_robust_and_classic_methods_reach_the_fit(tmp_path, pair, capsys, options, method):
    a_png, b_png, _, _ = pair
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--boundary", "fill",
                         *options, "-o", tmp_path / "k.npy", "--json", tmp_path / "fit.json")
    assert status == 0, err
    assert json.loads((tmp_path / "fit.json").read_text())["method"] == method


def test_kernel_picture_output(tmp_path, pair, capsys):
    a_png, b_png, _, _ = pair
    assert run(capsys, "estimate", a_png, b_png, "--shape", "3", "--boundary", "fill",
               "-o", tmp_path / "k.png")[0] == 0
    picture = iio.imread(tmp_path / "k.png")
    assert picture.shape == (3, 3) and picture.max() == 255 and picture.min() == 0


# --------------------------------------------------------------------------------------------
# Option parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shape",
    [("5", (5, 5)), ("5x5", (5, 5)), ("4x6", (4, 6)), ("4,6", (4, 6)), ("4X6", (4, 6)),
     (" 7 ", (7, 7))],
)
def test_parse_shape_accepts(text, shape):
    assert cli.parse_shape(text) == shape


@pytest.mark.parametrize("text", ["abc", "-3", "0x5", "5x0", "0", "5x", "x5", "5x5x5",
                                  "2.5", "", "5;5"])
def test_parse_shape_refuses(text):
    with pytest.raises(ValueError, match="--shape"):
        cli.parse_shape(text)


@pytest.mark.parametrize("text", ["1", "1,", "a,b", "-1,2", "1,2,3"])
def test_parse_pair_refuses(text):
    with pytest.raises(ValueError, match="--center"):
        cli.parse_pair(text, "--center")


@pytest.mark.parametrize("text", ["x", "-1", "nan", "inf"])
def test_parse_lam_refuses(text):
    with pytest.raises(ValueError, match="--ridge"):
        cli.parse_lam(text, "--ridge")
    with pytest.raises(ValueError, match="--lam"):
        cli.parse_lam(text, "--lam")


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "estimate" in capsys.readouterr().out


def test_usage_error_exits_two_and_writes_nothing(tmp_path, pair, capsys):
    a_png, b_png, _, _ = pair
    # A command and -o are required; argparse reports the usage error itself.  (--shape is
    # optional: without it the size is chosen, see tests/test_auto.py.)
    assert cli.main([str(a_png), str(b_png)]) == 2
    assert cli.main(["estimate", str(a_png), str(b_png), "--shape", "3"]) == 2
    assert not (tmp_path / "k.npy").exists()
    assert "-o/--output" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad input: one error line, status 2, no output file
# --------------------------------------------------------------------------------------------


def _save(directory, name, array):
    np.save(directory / name, array)
    return directory / name


def _bad_estimate_cases():
    """(id, builder) pairs; a builder gets tmp_path and returns (argv, expected message regex)."""
    good = np.random.default_rng(3).random((20, 20))

    def estimate(d, a, b, *extra, shape="3"):
        return ["estimate", a, b, "--shape", shape, *extra, "-o", d / "k.npy"]

    def missing_file(d):
        b = _save(d, "b.npy", good)
        return estimate(d, d / "nope.png", b), r"nope\.png: no such file"

    def unreadable_file(d):
        (d / "junk.png").write_bytes(b"\x89PNG but really just garbage bytes" * 20)
        return estimate(d, d / "junk.png", _save(d, "b.npy", good)), r"junk\.png: cannot read"

    def shape_mismatch(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good[:15, :11])
        return estimate(d, a, b), r"b has shape \(15, 11\)"

    def one_dimensional(d):
        a = _save(d, "a.npy", np.arange(10.0))
        return estimate(d, a, _save(d, "b.npy", good)), r"a\.npy: .*1-D"

    def three_dimensional(d):
        a = _save(d, "a.npy", np.zeros((4, 5, 6)))
        return estimate(d, a, _save(d, "b.npy", good)), r"a\.npy: .*3-D array of shape"

    def empty(d):
        a = _save(d, "a.npy", np.zeros((0, 5)))
        return estimate(d, a, _save(d, "b.npy", good)), r"a\.npy: .*empty"

    def kernel_larger_than_image(d):
        a, b = _save(d, "a.npy", good[:4, :4]), _save(d, "b.npy", good[:4, :4])
        return estimate(d, a, b, "--boundary", "valid", shape="7"), r"larger than the image"

    def non_numeric_shape(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, shape="abc"), r"--shape 'abc'"

    def unknown_boundary(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, "--boundary", "sideways"), r"boundary='sideways'"

    def negative_size(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, shape="-3"), r"--shape '-3'"

    def zero_size(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, shape="0x5"), r"--shape '0x5'"

    def all_nan_a(d):
        a = _save(d, "a.npy", np.full((20, 20), np.nan))
        return estimate(d, a, _save(d, "b.npy", good)), r"a has no finite pixels"

    def all_nan_b(d):
        b = _save(d, "b.npy", np.full((20, 20), np.nan))
        return estimate(d, _save(d, "a.npy", good), b), r"b has no finite pixels"

    def colour_without_channel(d):
        rgb = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        iio.imwrite(d / "rgb.png", rgb)
        return estimate(d, d / "rgb.png", _save(d, "b.npy", good)), r"rgb\.png: is a colour"

    def unknown_output_type(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        argv = estimate(d, a, b)
        argv[-1] = d / "k.xyz"
        return argv, r"k\.xyz: cannot write a kernel"

    def mask_wrong_shape(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        m = _save(d, "m.npy", np.ones((5, 5)))
        return estimate(d, a, b, "--mask", m), r"mask"

    def center_outside_kernel(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, "--center", "5,0"), r"center"

    def bad_center_text(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, "--center", "middle"), r"--center 'middle'"

    return [(f.__name__, f) for f in (
        missing_file, unreadable_file, shape_mismatch, one_dimensional, three_dimensional,
        empty, kernel_larger_than_image, non_numeric_shape, unknown_boundary, negative_size,
        zero_size, all_nan_a, all_nan_b, colour_without_channel, unknown_output_type,
        mask_wrong_shape, center_outside_kernel, bad_center_text,
    )]


def _assert_one_error_line(status, out, err, match):
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith("kernelfit: error: ")
    assert re.search(match, err[0]), err[0]
    assert "Traceback" not in out


@pytest.mark.parametrize("name, build", _bad_estimate_cases(),
                         ids=[n for n, _ in _bad_estimate_cases()])
def test_bad_estimate_input(tmp_path, capsys, name, build):
    argv, match = build(tmp_path)
    status, out, err = run(capsys, *argv)
    _assert_one_error_line(status, out, err, match)
    assert not (tmp_path / "k.npy").exists()
    assert not any(p.name.startswith(".k") for p in tmp_path.iterdir())  # no temp files


def test_bad_estimate_input_writes_no_json(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((4, 5, 6)))
    status, out, err = run(capsys, "estimate", tmp_path / "a.npy", tmp_path / "a.npy",
                           "--shape", "3", "-o", tmp_path / "k.npy",
                           "--json", tmp_path / "fit.json")
    _assert_one_error_line(status, out, err, r"3-D")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_failed_json_write_takes_the_kernel_back(tmp_path, pair, capsys, monkeypatch):
    a_png, b_png, _, _ = pair

    def full_disk(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "write_json", full_disk)
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "-o",
                           tmp_path / "k.npy", "--json", tmp_path / "fit.json")
    _assert_one_error_line(status, "", err, r"No space left")
    assert not (tmp_path / "k.npy").exists()
    assert not (tmp_path / "fit.json").exists()


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing kernel", r"nokernel\.npy: no such file"),
        ("png kernel", r"k\.png: cannot read a kernel"),
        ("missing output directory", r"does not exist"),
        ("unknown boundary", r"boundary='sideways'"),
    ],
)
def test_bad_apply_input(tmp_path, pair, capsys, case, match):
    a_png, _, _, _ = pair
    out_path = tmp_path / "out.png"
    kernel = tmp_path / "k.npy"
    np.save(kernel, KERNEL)
    extra = []
    if case == "missing kernel":
        kernel = tmp_path / "nokernel.npy"
    elif case == "png kernel":
        io.write_kernel(tmp_path / "k.png", KERNEL)
        kernel = tmp_path / "k.png"
    elif case == "missing output directory":
        out_path = tmp_path / "no" / "out.png"
    else:
        extra = ["--boundary", "sideways"]
    status, out, err = run(capsys, "apply", a_png, kernel, "-o", out_path, *extra)
    _assert_one_error_line(status, out, err, match)
    assert not out_path.exists()


# --------------------------------------------------------------------------------------------
# Progress and quiet
# --------------------------------------------------------------------------------------------


def test_verbose_prints_stages(tmp_path, pair, capsys):
    a_png, b_png, _, _ = pair
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--verbose",
                         "-o", tmp_path / "k.npy")
    assert status == 0
    assert err[0] == f"kernelfit: reading {a_png}"
    assert "kernelfit: fitting 3x3 kernel on 40x48 pixels ..." in err
    assert re.fullmatch(r"kernelfit: done in \d+\.\d s", err[-1])


def test_large_images_print_stages_without_verbose(tmp_path, pair, capsys, monkeypatch):
    a_png, b_png, _, _ = pair
    monkeypatch.setattr(cli, "LARGE_IMAGE_PIXELS", 100)  # make 40x48 count as large
    status, _, err = run(capsys, "estimate", a_png, b_png, "--shape", "3",
                         "-o", tmp_path / "k.npy")
    assert status == 0
    # The line for A is held until A's size is known, then printed first.
    assert err[0] == f"kernelfit: reading {a_png}"
    assert err[1] == f"kernelfit: reading {b_png}"


def test_quiet_prints_nothing(tmp_path, pair, capsys, monkeypatch):
    a_png, b_png, _, _ = pair
    monkeypatch.setattr(cli, "LARGE_IMAGE_PIXELS", 100)
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--quiet",
                           "-o", tmp_path / "k.npy")
    assert (status, out, err) == (0, "", [])
    assert (tmp_path / "k.npy").exists()


# --------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------


def test_demo_recovers_the_editor_matrix(capsys):
    # Seed 001's acceptance criterion: relative error <= 0.005.  The demo fits two 5x5
    # kernels on a 512x512 photo, well under a second with the direct solver.
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"kernelfit, boundary='nearest' +(\S+) +\(", out)
    assert found, out
    assert float(found.group(1)) <= 0.005, out
    assert "target error <= 0.005 with boundary='nearest': met" in out
