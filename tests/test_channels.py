"""Images with a channel axis: one kernel per channel (ChannelFits) or one shared kernel;
3-D kernels in io.write_kernel; the CLI's --per-channel and --shared."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

import kernelfit as kf
from kernelfit import cli
from kernelfit import io
from kernelfit.fit.channels import ChannelFits


@pytest.fixture
def rng():
    return np.random.default_rng(77)


@pytest.fixture
def colour(rng):
    """(H, W, 3) images blurred by a different kernel per channel, with a little noise."""
    a = rng.random((40, 44, 3))
    kernels = [rng.random((3, 3)) for _ in range(3)]
    b = np.stack([kf.convolve(a[..., c], kernels[c]) for c in range(3)], axis=-1)
    return a, b + 1e-3 * rng.standard_normal(b.shape), kernels


@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -3])
def test_per_channel_kernels_are_stacked_on_the_channel_axis(colour, axis):
    a, b, kernels = colour
    position = axis % 3
    a_moved, b_moved = np.moveaxis(a, -1, position), np.moveaxis(b, -1, position)
    fits = kf.estimate(a_moved, b_moved, 3, boundary="fill", channel_axis=axis)
    assert isinstance(fits, ChannelFits) and fits.channel_axis == position
    assert fits.kernel.shape == np.moveaxis(np.zeros((3, 3, 3)), -1, position).shape
    for c in range(3):
        alone = kf.estimate(a[..., c], b[..., c], 3, boundary="fill")
        kernel_c = np.take(fits.kernel, c, axis=position)
        # The same computation on the same data: identical.
        assert np.array_equal(kernel_c, alone.kernel)
        assert np.array_equal(np.take(fits.stderr, c, axis=position), alone.stderr)
        # Noise 1e-3 on 1760 pixels: each kernel within 0.01 of the truth.
        assert np.abs(kernel_c - kernels[c]).max() < 0.01
    assert fits.residual.shape == b_moved.shape
    assert fits.noise_std.shape == (3,) and fits.converged


def test_shared_kernel_is_the_fit_of_the_channels_as_pairs(colour):
    a, b, _ = colour
    shared = kf.estimate(a, b, 3, boundary="fill", channel_axis=-1, shared_channels=True)
    pairs = kf.estimate([a[..., c] for c in range(3)], [b[..., c] for c in range(3)], 3,
                        boundary="fill")
    assert isinstance(shared, kf.KernelFit)
    assert np.array_equal(shared.kernel, pairs.kernel) and shared.info["n_pairs"] == 3


def test_grey_a_for_every_channel_and_masks(rng):
    a = rng.random((36, 36))
    kernels = [np.eye(3) * (c + 1) for c in range(3)]
    b = np.stack([kf.convolve(a, k) for k in kernels], axis=0)
    mask2d = rng.random(a.shape) > 0.3
    fits = kf.estimate(a, b, 3, boundary="fill", channel_axis=0, mask=mask2d)
    for c in range(3):
        assert np.allclose(fits.kernel[c], kernels[c], atol=1e-10)  # noise-free: exact
        assert fits.fits[c].n_used == mask2d.sum()
    mask3d = np.stack([mask2d, ~mask2d, mask2d])
    fits = kf.estimate(a, b, 3, boundary="fill", channel_axis=0, mask=mask3d)
    assert [f.n_used for f in fits.fits] == [m.sum() for m in mask3d]


def test_channels_with_a_varying_kernel(rng):
    a = rng.random((30, 30, 2))
    vk = kf.VaryingKernel(rng.normal(size=(3, 3, 3)), 1, frame=(30, 30), center=(1, 1))
    b = np.stack([kf.convolve(a[..., c], vk) for c in range(2)], axis=-1)
    fits = kf.estimate(a, b, 3, boundary="fill", channel_axis=-1, variation=1)
    for fit in fits.fits:
        assert np.allclose(fit.params["variation"], vk.coefficients, atol=1e-10)


def test_summary_to_dict_and_save(colour, tmp_path):
    a, b, _ = colour
    fits = kf.estimate(a, b, 3, boundary="fill", channel_axis=-1)
    assert "--- channel 2 ---" in fits.summary()
    d = fits.to_dict()
    assert np.array(d["kernel"]).shape == (3, 3, 3) and len(d["channels"]) == 3
    fits.save(tmp_path / "fits.json")
    assert json.loads((tmp_path / "fits.json").read_text())["channel_axis"] == 2
    fits.save(tmp_path / "fits.npz")
    with np.load(tmp_path / "fits.npz") as saved:
        assert np.array_equal(saved["kernel"], fits.kernel)
    with pytest.raises(ValueError, match=r"ChannelFits.save writes .json or .npz"):
        fits.save(tmp_path / "fits.txt")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"channel_axis": 3}, ValueError, r"channel_axis=3 is out of range for a 3-D b"),
    ({"channel_axis": 1.0}, TypeError, r"channel_axis=1\.0 must be an integer axis"),
    ({"channel_axis": None, "shared_channels": True}, ValueError,
     r"shared_channels=True needs channel_axis="),
    ({"channel_axis": -1, "shared_channels": "yes"}, TypeError,
     r"shared_channels='yes' must be True or False"),
    ({"channel_axis": -1, "mask": np.ones((40, 44, 2), bool)}, ValueError,
     r"mask has shape \(40, 44, 2\); with channel_axis it must be 2-D"),
])
def test_channel_errors(colour, kwargs, error, match):
    a, b, _ = colour
    with pytest.raises(error, match=match):
        kf.estimate(a, b, 3, **kwargs)


def test_channel_input_errors(colour):
    a, b, _ = colour
    with pytest.raises(ValueError, match=r"b has shape \(40, 44\); with channel_axis it must "
                                         r"be 3-D"):
        kf.estimate(a, b[..., 0], 3, channel_axis=-1)
    with pytest.raises(ValueError, match=r"a has shape \(40, 44, 2\); .* it must be 2-D or "
                                         r"3-D with 3 channels on axis 2"):
        kf.estimate(a[..., :2], b, 3, channel_axis=-1)
    with pytest.raises(TypeError, match=r"b: with channel_axis, give one array"):
        kf.estimate([a], [b], 3, channel_axis=-1)
    with pytest.raises(TypeError, match=r"a: with channel_axis, give one array"):
        kf.estimate([a], b, 3, channel_axis=-1)


# ------------------------------------------------------------------------- io


def test_write_kernel_stack(tmp_path, rng):
    stack = rng.random((3, 3, 4))
    for name in ("k.npy", "k.tif"):
        io.write_kernel(tmp_path / name, stack)
    assert np.array_equal(np.load(tmp_path / "k.npy"), stack)
    import tifffile

    assert np.array_equal(tifffile.imread(tmp_path / "k.tif"), stack)
    pytest.importorskip("astropy")
    io.write_kernel(tmp_path / "k.fits", stack)
    from astropy.io import fits

    # FITS keeps the planes of a cube on NAXIS3 (NumPy's first axis); read back channels last.
    assert np.array_equal(fits.getdata(tmp_path / "k.fits"), np.moveaxis(stack, -1, 0))
    assert np.array_equal(io.read_kernel(tmp_path / "k.fits", stack=True), stack)


@pytest.mark.parametrize("name", ["k.csv", "k.txt", "k.png"])
def test_write_kernel_stack_refused_by_2d_formats(tmp_path, name):
    with pytest.raises(ValueError, match=r"stack of kernels of shape \(3, 3, 2\) .* can be "
                                         r"written as .npy, .tif or .fits"):
        io.write_kernel(tmp_path / name, np.zeros((3, 3, 2)))
    assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------- CLI


@pytest.fixture
def colour_files(tmp_path, rng):
    a = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    kernels = [np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 8 * (c + 1) for c in range(3)]
    b = np.stack([kf.convolve(a[..., c].astype(float), kernels[c], boundary="nearest")
                  for c in range(3)], axis=-1)
    iio.imwrite(tmp_path / "a.png", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path, kernels


def run(*argv):
    return cli.main([str(x) for x in argv])


def test_cli_per_channel(colour_files):
    path, kernels = colour_files
    status = run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3", "-q",
                 "--boundary", "nearest", "--per-channel", "-o", path / "k.npy",
                 "--json", path / "fit.json")
    assert status == 0
    written = np.load(path / "k.npy")
    assert written.shape == (3, 3, 3)
    for c in range(3):
        assert np.allclose(written[..., c], kernels[c], atol=1e-9)  # noise-free, 8-bit a
    assert len(json.loads((path / "fit.json").read_text())["channels"]) == 3


def test_cli_apply_per_channel_kernels_reproduces_b(colour_files, capsys):
    """A (kh, kw, 3) stack from --per-channel applies channel by channel to a colour image."""
    path, _ = colour_files
    assert run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3", "-q",
               "--boundary", "nearest", "--per-channel", "-o", path / "k.npy") == 0
    assert run("apply", path / "a.png", path / "k.npy", "--boundary", "nearest", "-q",
               "-o", path / "pred.npy") == 0
    # Noise-free fit of an exact 8-bit a: the prediction is b to rounding (1e-9 of 255).
    np.testing.assert_allclose(np.load(path / "pred.npy"), np.load(path / "b.npy"), atol=1e-7)
    assert run("apply", path / "a.png", path / "k.npy", "--channel", "0", "-q",
               "-o", path / "p.npy") == 2
    assert "holds one kernel per channel (3)" in capsys.readouterr().err
    np.save(path / "grey.npy", np.zeros((40, 40)))
    assert run("apply", path / "grey.npy", path / "k.npy", "-q", "-o", path / "p.npy") == 2
    assert "need the same number of channels" in capsys.readouterr().err


def test_cli_shared(colour_files):
    path, kernels = colour_files
    status = run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3", "-q",
                 "--boundary", "nearest", "--shared", "-o", path / "k.csv")
    assert status == 0
    written = np.loadtxt(path / "k.csv", delimiter=",")
    # Least squares over the channels, scaled ×1, ×2, ×3: between the smallest and largest.
    assert kernels[0][1, 1] < written[1, 1] < kernels[2][1, 1]


@pytest.mark.parametrize("extra, message", [
    (["--per-channel", "--channel", "1"], "--per-channel fits every channel; it cannot be "
     "combined with --channel or --gray"),
    (["--shared", "--gray"], "--shared fits every channel"),
])
def test_cli_channel_conflicts(colour_files, capsys, extra, message):
    path, _ = colour_files
    status = run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3", "-o",
                 path / "k.npy", *extra)
    assert status == 2 and message in capsys.readouterr().err
    assert not (path / "k.npy").exists()


def test_cli_per_channel_needs_an_array_format(colour_files, capsys):
    path, _ = colour_files
    status = run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3",
                 "--per-channel", "-o", path / "k.csv")
    assert status == 2
    assert "--per-channel writes a (kh, kw, C) stack" in capsys.readouterr().err
    assert not (path / "k.csv").exists()


def test_cli_colour_refusal_mentions_per_channel(colour_files, capsys):
    path, _ = colour_files
    assert run("estimate", path / "a.png", path / "b.npy", "--shape", "3", "-o",
               path / "k.npy") == 2
    assert "--per-channel" in capsys.readouterr().err


def test_per_channel_automatic_size_is_chosen_once_for_all_channels():
    """shape=None with one kernel per channel: one size and centre from all channels together,
    so the kernels stack (boundary="auto" is decided per channel); each channel's kernel is
    recovered in that window."""
    rng = np.random.default_rng(5)
    a = rng.random((64, 64, 3))
    kernels = [np.pad(np.full((3, 3), 1 / 9), 1), np.pad(np.eye(3) / 3, 1),
               np.pad(np.fliplr(np.eye(3)) / 3, 1)]
    b = np.stack([kf.convolve(a[..., c], kernels[c], boundary="nearest") for c in range(3)],
                 axis=-1) + 1e-4 * rng.standard_normal((64, 64, 3))
    fits = kf.estimate(a, b, None, boundary="auto", channel_axis=-1)
    assert fits.kernel.ndim == 3 and fits.kernel.shape[-1] == 3
    # With a 3×3 kernel the border needs one pixel of extension, where 'reflect' and 'nearest'
    # agree: either is right.
    assert all(fit.boundary in ("nearest", "reflect") and fit.shape == fits.fits[0].shape
               for fit in fits.fits)
    for c, fit in enumerate(fits.fits):
        # The chosen window holds the 3×3 support: compare on the overlap, centred.
        kh, kw = fit.shape
        cy, cx = fit.center
        truth = np.zeros(fit.shape)
        for (y, x), v in np.ndenumerate(kernels[c]):
            yy, xx = y - 2 + cy, x - 2 + cx
            if 0 <= yy < kh and 0 <= xx < kw:
                truth[yy, xx] = v
        assert np.abs(fit.kernel - truth).max() < 1e-2


def test_cli_per_channel_report(colour_files):
    """--per-channel --report: one page with every channel's report."""
    pytest.importorskip("matplotlib")
    path, _ = colour_files
    assert run("estimate", path / "a.png", path / "b.npy", "--shape", "3x3", "-q",
               "--boundary", "nearest", "--per-channel", "-o", path / "k.npy",
               "--report", path / "r.html") == 0
    page = (path / "r.html").read_text(encoding="utf-8")
    assert all(f'id="channel{c}"' in page for c in range(3))
