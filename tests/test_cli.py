"""Tests for the ``kernelfit`` command line, run in-process through ``main(argv)``.

Every run made through ``cli.main`` here is watched by :func:`_watched_runs`: no input file
changes, a failed run leaves its directories exactly as they were (no output, no temporary
file), and a run that succeeds adds or changes nothing but its outputs.
"""

import contextlib
import errno
import hashlib
import io as stdio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

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


# --------------------------------------------------------------------------------------------
# Every run: inputs untouched; a failed run leaves nothing; a good one only its outputs
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _watched_runs(monkeypatch):
    real_main = cli.main

    def watched(argv=None):
        argv = [str(x) for x in (sys.argv[1:] if argv is None else argv)]
        inputs, outputs = _paths_of(argv)
        directories = {p.resolve().parent for p in inputs + outputs if p.parent.is_dir()}
        inputs_before = {p: _digest(p) for p in inputs if p.exists()}
        before = {d: _listing(d) for d in directories}
        status = real_main(argv)
        for path, digest in inputs_before.items():
            assert _digest(path) == digest, f"the input {path} was modified"
        allowed = set() if status != 0 else {p.name for p in outputs}
        for directory, listing in before.items():
            after = _listing(directory)
            changed = {name for name in set(listing) | set(after)
                       if listing.get(name) != after.get(name)}
            assert changed <= allowed, (
                f"status {status} left {sorted(changed - allowed)} in {directory}")
        return status

    monkeypatch.setattr(cli, "main", watched)


def _paths_of(argv):
    """(inputs, outputs) of a command line, as the CLI's own parser reads it."""
    quiet = stdio.StringIO()
    try:
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            args = cli.build_parser().parse_args(argv)
    except SystemExit:  # a usage error: every file named counts as an input
        return [Path(x) for x in argv if os.path.isfile(x)], []
    inputs = [getattr(args, name, None) for name in ("a", "b", "mask", "kernel")]
    outputs = [getattr(args, name, None) for name in ("output", "json", "report")]
    return [Path(p) for p in inputs if p], [Path(p) for p in outputs if p]


def _digest(path):
    path = Path(path)
    if path.is_dir():  # a .zarr store
        return tuple((str(p.relative_to(path)), _digest(p))
                     for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(directory):
    return {p.name: _digest(p) for p in directory.iterdir()}


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

    def timeout_without_scheduler(d):
        a, b = _save(d, "a.npy", good), _save(d, "b.npy", good)
        return estimate(d, a, b, "--timeout", "5"), r"--timeout 5 needs --scheduler"

    return [(f.__name__, f) for f in (
        timeout_without_scheduler, missing_file, unreadable_file, shape_mismatch, one_dimensional, three_dimensional,
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


# --------------------------------------------------------------------------------------------
# Nothing lost: an output that is an input is refused
# --------------------------------------------------------------------------------------------


def _same_file_cases():
    """(id, builder): a builder gets the directory and the two .npy inputs and returns
    (argv, the option refused, the input it names)."""

    def estimate(d, a, b, *extra):
        return ["estimate", a, b, "--shape", "3", "--boundary", "fill", *extra]

    def kernel_onto_a(d, a, b):
        return estimate(d, a, b, "-o", a), "-o", "A"

    def kernel_onto_b_by_another_name(d, a, b):
        return estimate(d, a, b, "-o", d / "." / "b.npy"), "-o", "B"

    def kernel_onto_mask(d, a, b):
        mask = _save(d, "m.npy", np.ones((20, 20)))
        return estimate(d, a, b, "--mask", mask, "-o", mask), "-o", "--mask"

    def kernel_onto_a_through_a_symlink(d, a, b):
        (d / "link.npy").symlink_to(a)
        return estimate(d, a, b, "-o", d / "link.npy"), "-o", "A"

    def kernel_onto_a_through_a_hard_link(d, a, b):
        os.link(a, d / "hard.npy")
        return estimate(d, a, b, "-o", d / "hard.npy"), "-o", "A"

    def json_onto_b_through_a_symlink(d, a, b):
        (d / "fit.json").symlink_to(b)
        return estimate(d, a, b, "-o", d / "k.npy", "--json", d / "fit.json"), "--json", "B"

    def apply_onto_a(d, a, b):
        np.save(d / "k.npy", KERNEL)
        return ["apply", a, d / "k.npy", "-o", a], "-o", "A"

    def apply_onto_the_kernel_through_a_hard_link(d, a, b):
        np.save(d / "k.npy", KERNEL)
        os.link(d / "k.npy", d / "out.npy")
        return ["apply", a, d / "k.npy", "-o", d / "out.npy"], "-o", "KERNEL"

    return [(f.__name__, f) for f in (
        kernel_onto_a, kernel_onto_b_by_another_name, kernel_onto_mask,
        kernel_onto_a_through_a_symlink, kernel_onto_a_through_a_hard_link,
        json_onto_b_through_a_symlink, apply_onto_a, apply_onto_the_kernel_through_a_hard_link,
    )]


@pytest.mark.parametrize("name, build", _same_file_cases(),
                         ids=[n for n, _ in _same_file_cases()])
def test_an_output_that_is_an_input_is_refused(tmp_path, rng, capsys, name, build):
    a = _save(tmp_path, "a.npy", rng.random((20, 20)))
    b = _save(tmp_path, "b.npy", kf.convolve(np.load(a), KERNEL, boundary="fill"))
    argv, option, source = build(tmp_path, a, b)
    status, out, err = run(capsys, *argv)
    # The watcher (_watched_runs) checks that every input is unchanged and nothing written.
    _assert_one_error_line(status, out, err,
                           rf"{re.escape(option)} .* is the input {re.escape(source)} \(")
    assert "never overwrites its inputs" in err[0]


# --------------------------------------------------------------------------------------------
# All outputs or none: interrupts and a full disk
# --------------------------------------------------------------------------------------------

# The CLI in a child process whose report drawing stops until the test signals it: the
# kernel and the JSON have been written to their temporary files by then.
_SLOW_REPORT = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive shell does
    import kernelfit.report.html as html

    def slow_report(*args, **kwargs):
        print("drawing", flush=True)
        time.sleep(120)

    html.render_report = slow_report
    from kernelfit import cli
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_the_report_is_drawn_leaves_no_output(tmp_path, pair, signum, status):
    pytest.importorskip("matplotlib")
    a_png, b_png, _, _ = pair
    source = Path(kf.__file__).resolve().parents[1]  # this checkout's src/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]))
    argv = ["estimate", a_png, b_png, "--shape", "3", "--quiet", "-o", tmp_path / "k.npy",
            "--json", tmp_path / "fit.json", "--report", tmp_path / "report.html"]
    before = _listing(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_REPORT, *map(str, argv)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "drawing\n", child.communicate(timeout=60)
        # The kernel's and the JSON's temporary files exist now: the first thing to check.
        assert len(_listing(tmp_path)) > len(before)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    name = signal.Signals(signum).name
    assert (child.returncode, err.splitlines()) == (
        status, [f"kernelfit: interrupted by {name}; no output was written"])
    assert _listing(tmp_path) == before  # no output, no temporary file, inputs unchanged


def _short_write(path, array, allow_pickle=False):
    """np.save on a full disk: part of the file, then numpy's own wording of a short write."""
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY partial")
    raise OSError("360000 requested and 131038 written")


def test_a_full_disk_is_named_and_leaves_nothing(tmp_path, pair, capsys, monkeypatch):
    a_png, b_png, _, _ = pair
    monkeypatch.setattr(np, "save", _short_write)
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "-o",
                           tmp_path / "k.npy", "--json", tmp_path / "fit.json")
    _assert_one_error_line(status, "", err, r"k\.npy: cannot write, the disk is full "
                           r"\(ENOSPC: .*\); 131038 of 360000 bytes were written")
    assert not (tmp_path / "k.npy").exists() and not (tmp_path / "fit.json").exists()


def test_a_full_disk_while_writing_the_report_takes_the_kernel_back(tmp_path, pair, capsys,
                                                                  monkeypatch):
    pytest.importorskip("matplotlib")
    a_png, b_png, _, _ = pair

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", no_space)  # how write_report writes the page
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "-o",
                           tmp_path / "k.npy", "--report", tmp_path / "report.html")
    _assert_one_error_line(status, "", err, r"report\.html: cannot write, the disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


# --------------------------------------------------------------------------------------------
# Readers: the pixel limit, FITS HDUs, pickles
# --------------------------------------------------------------------------------------------


def test_max_pixels_refuses_large_images(tmp_path, pair, capsys):
    a_png, b_png, a, _ = pair
    pixels = a.size  # 40 x 48
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3", "--max-pixels",
                           pixels - 1, "-o", tmp_path / "k.npy")
    _assert_one_error_line(status, out, err, rf"a\.png: the image has {pixels} pixels "
                           rf"\(40x48\), more than the limit of {pixels - 1}")
    assert run(capsys, "estimate", a_png, b_png, "--shape", "3", "--max-pixels", pixels,
               "-o", tmp_path / "k.npy")[0] == 0
    small = _save(tmp_path, "small.npy", np.ones((2, 4)))  # 8 pixels: under the limit
    status, out, err = run(capsys, "apply", small, tmp_path / "k.npy", "--max-pixels", 8,
                           "-o", tmp_path / "out.npy")
    _assert_one_error_line(status, out, err, r"k\.npy: the image has 9 pixels")  # 3x3
    status, out, err = run(capsys, "estimate", a_png, b_png, "--shape", "3",
                           "--max-pixels", "0", "-o", tmp_path / "k2.npy")
    _assert_one_error_line(status, out, err, r"--max-pixels 0 must be a positive")


def test_zlib_bomb_is_refused_with_tiles_too(tmp_path, capsys):
    bomb = _zlib_bomb(tmp_path / "bomb.tif")
    np.save(tmp_path / "b.npy", np.zeros((30000, 1), np.uint8))  # never reached
    for tile in ([], ["--tile", "1024"]):
        status, out, err = run(capsys, "estimate", bomb, tmp_path / "b.npy", "--shape", "3",
                               *tile, "-o", tmp_path / "k.npy")
        _assert_one_error_line(status, out, err, rf"bomb\.tif: the image has 900000000 "
                               rf"pixels \(30000x30000\), more than the limit of "
                               rf"{io.MAX_PIXELS}")


def _zlib_bomb(path):
    """A 1 MB tiled zlib TIFF of 30000 x 30000 zeros, made from one compressed tile."""
    import zlib

    tile = zlib.compress(bytes(256 * 256))
    n_tiles = (-(-30000 // 256)) ** 2  # rounded up
    tifffile.imwrite(path, (tile for _ in range(n_tiles)), shape=(30000, 30000),
                     dtype=np.uint8, tile=(256, 256), compression="zlib")
    return path


def test_hdu_option_reads_that_fits_hdu(tmp_path, rng, capsys):
    fits = pytest.importorskip("astropy.io.fits")
    images = [rng.random((12, 13)), rng.random((12, 13))]
    fits.HDUList([fits.PrimaryHDU(images[0]), fits.ImageHDU(images[1])]).writeto(
        tmp_path / "two.fits")
    np.save(tmp_path / "k.npy", KERNEL)
    for hdu, image in ((None, images[0]), (1, images[1])):
        option = [] if hdu is None else ["--hdu", hdu]
        assert run(capsys, "apply", tmp_path / "two.fits", tmp_path / "k.npy", *option,
                   "-o", tmp_path / "out.npy")[0] == 0
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), kf.convolve(image, KERNEL))
    status, out, err = run(capsys, "apply", tmp_path / "two.fits", tmp_path / "k.npy",
                           "--hdu", "2", "-o", tmp_path / "out2.npy")
    _assert_one_error_line(status, out, err, r"two\.fits: hdu=2 is out of range; the file "
                           r"has 2 HDUs")


def test_pickle_named_npy_with_tiles_gets_no_unsafe_advice(tmp_path, capsys):
    import pickle

    (tmp_path / "a.npy").write_bytes(pickle.dumps([[1.0, 2.0], [3.0, 4.0]]))
    np.save(tmp_path / "b.npy", np.zeros((2, 2)))
    for tile in ([], ["--tile", "64"]):
        status, out, err = run(capsys, "estimate", tmp_path / "a.npy", tmp_path / "b.npy",
                               "--shape", "1", *tile, "-o", tmp_path / "k.npy")
        _assert_one_error_line(status, out, err, r"a\.npy: cannot read the file: not a \.npy "
                               r"file \(no NumPy header\)")
        assert "allow_pickle" not in err[0] and "pickle.load" not in err[0]
