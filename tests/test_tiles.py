"""Tiled statistics, fits on summed statistics, lazy image files and ``--tile``."""

import itertools
import pickle

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile

import kernelfit as kf
from kernelfit import cli
from kernelfit.core.design import prepare_pair
from kernelfit.io.lazy import LazyImage, open_lazy
from kernelfit.front.tiled import estimate_tiled
from kernelfit.stats.tiles import plan_tiles, tiled_statistics
from kernelfit.core.conventions import make_geometry

# Sums of the same products in another order and through other FFT sizes: both sides are
# exact up to rounding, ~1e-15 relative per entry; 1e-12 leaves room for long sums.
STATS_RTOL = 1e-12
# A kernel solved from statistics equal to 1e-12 relative: the white-noise Gram matrices
# here have condition numbers below 1e2, so the kernels agree to ~1e-10 relative.
KERNEL_RTOL = 1e-10


def whole_statistics(a, b, shape, **options):
    pair = prepare_pair(a, b, shape, **options)
    weights = None if pair.use is None else pair.use.astype(float)
    return kf.statistics(pair.extended, pair.b_used, shape, weights=weights)


def assert_same_statistics(s, whole):
    assert s.n_used == whole.n_used
    scale = np.abs(whole.gram).max()
    np.testing.assert_allclose(s.gram, whole.gram, rtol=0, atol=STATS_RTOL * scale)
    np.testing.assert_allclose(s.rhs, whole.rhs, rtol=0,
                               atol=STATS_RTOL * np.abs(whole.rhs).max())
    assert s.btb == pytest.approx(whole.btb, rel=STATS_RTOL)


def noisy_pair(rng, size, kernel, boundary="reflect", noise=0.01, **options):
    a = rng.random(size)
    b = kf.convolve(a, kernel, boundary=boundary, **options)
    return a, b + noise * rng.standard_normal(b.shape)


# --------------------------------------------------------------------------------------------
# Tiled statistics equal the whole image's
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ["valid", "fill", "wrap", "reflect", "nearest", "mirror"])
def test_tiled_statistics_equal_whole_for_every_output_size_centre_and_parity(boundary):
    rng = np.random.default_rng(1)
    for output, shape, ndimage_centre in itertools.product(
            ["same", "valid", "full"], [(3, 4), (2, 1), (5, 5)], [False, True]):
        center = (shape[0] // 2, shape[1] // 2) if ndimage_centre else None
        a = rng.random((23, 19))
        b = kf.convolve(a, rng.random(shape), boundary="fill" if boundary == "valid"
                        else boundary, center=center, mode=output)
        whole = whole_statistics(a, b, shape, boundary=boundary, center=center)
        # Tiles of 1 pixel, a few pixels (halos crossing tiles) and one tile for everything.
        for tile in (1, 6, 100):
            assert_same_statistics(tiled_statistics(a, b, shape, boundary=boundary,
                                                    center=center, tile=tile), whole)


@pytest.mark.parametrize("boundary", ["fill", "wrap", "reflect", "nearest", "mirror"])
def test_kernel_larger_than_the_image_reads_repeated_padding(boundary):
    # The pad (8 rows, 10 columns) exceeds the image (5 x 6): numpy.pad reflects or wraps
    # repeatedly, and the tiles must read the same pixels.
    rng = np.random.default_rng(2)
    a = rng.random((5, 6))
    b = kf.convolve(a, rng.random((9, 11)), boundary=boundary)
    whole = whole_statistics(a, b, (9, 11), boundary=boundary)
    assert_same_statistics(tiled_statistics(a, b, (9, 11), boundary=boundary, tile=2), whole)


def test_nan_and_mask_drop_the_same_pixels_as_in_memory():
    rng = np.random.default_rng(3)
    a, b = noisy_pair(rng, (40, 33), rng.random((3, 5)), boundary="nearest")
    a[0, 0] = np.nan          # on the edge: its padded copies spoil their footprints too
    a[17, 20] = np.inf
    b[5, 6] = np.nan
    b[30:40, 25:33] = np.nan  # one tile of 8 x 8 has no usable pixel at all
    mask = rng.random(b.shape) > 0.2
    whole = whole_statistics(a, b, (3, 5), boundary="nearest", mask=mask)
    tiled = tiled_statistics(a, b, (3, 5), boundary="nearest", mask=mask, tile=8)
    assert_same_statistics(tiled, whole)
    assert tiled.n_used < mask.sum() - 80  # the NaN really dropped pixels


def test_inputs_are_not_modified():
    rng = np.random.default_rng(4)
    a, b = noisy_pair(rng, (20, 20), np.ones((3, 3)))
    a[4, 4] = np.nan
    b[7, 7] = np.nan
    a0, b0 = a.copy(), b.copy()
    tiled_statistics(a, b, 3, boundary="reflect", tile=7)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_wrap_tiles_read_two_runs_at_the_edges_and_one_inside():
    g = make_geometry((20, 12), (5, 3), boundary="wrap")
    tiles = plan_tiles(g, [0, 10, 20], [0, 12])
    assert tiles[0].a_rows.runs == ((0, 12), (18, 20))
    assert tiles[1].a_rows.runs == ((0, 2), (8, 20))
    assert tiles[0].a_cols.runs == ((0, 12),)


# --------------------------------------------------------------------------------------------
# Fits on summed statistics equal the in-memory fits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {},
    {"reg": "ridge"},                            # lam by GCV on the summed statistics
    {"reg": "laplacian", "lam": 1e-3},
    {"nonneg": True, "normalize": 1.0},
    {"noise_std": 0.01, "reg": "gradient"},      # the discrepancy principle
])
def test_free_fit_on_tiles_equals_the_in_memory_fit(options):
    rng = np.random.default_rng(5)
    kernel = rng.random((5, 5))
    kernel /= kernel.sum()
    a, b = noisy_pair(rng, (150, 130), kernel)
    reference = kf.estimate(a, b, 5, boundary="reflect", **options)
    fit = estimate_tiled(a, b, 5, boundary="reflect", tile=40, **options)
    scale = np.abs(reference.kernel).max()
    np.testing.assert_allclose(fit.kernel, reference.kernel, rtol=0, atol=KERNEL_RTOL * scale)
    if reference.lam is not None:
        # GCV / the discrepancy principle on statistics equal to ~1e-12: the same λ to the
        # root finder's tolerance.
        assert fit.lam == pytest.approx(reference.lam, rel=1e-6)
    # The noise level from the statistics' formula against the residual images: the formula
    # carries ~1e-13·bᵀb of rounding on an RSS of ~1e-4·bᵀb.
    assert fit.noise_std == pytest.approx(reference.noise_std, rel=1e-7)
    np.testing.assert_allclose(fit.stderr, reference.stderr, rtol=1e-6)
    assert fit.residual is None and fit.info["tiles"] == 16
    assert (fit.boundary, fit.center, fit.n_used) == ("reflect", (2, 2), b.size)


def test_parametric_fit_on_tiles_equals_the_in_memory_fit():
    rng = np.random.default_rng(6)
    a = rng.random((120, 110))
    b = ndi.gaussian_filter(a, 1.3, mode="reflect", truncate=4.0) \
        + 0.01 * rng.standard_normal(a.shape)
    reference = kf.estimate(a, b, 9, boundary="reflect", model="gaussian")
    fit = estimate_tiled(a, b, 9, boundary="reflect", model="gaussian", tile=50)
    # The same objective to ~1e-12; the optimiser stops at its own tolerance (~1e-8 here).
    assert fit.params["sigma"] == pytest.approx(reference.params["sigma"], rel=1e-6)
    assert fit.params["sigma"] == pytest.approx(1.3, abs=0.01)
    assert fit.model == "gaussian" and fit.method == "parametric-l2"


def test_several_pairs_share_one_kernel():
    rng = np.random.default_rng(7)
    kernel = rng.random((3, 3))
    pairs = [noisy_pair(rng, size, kernel) for size in ((60, 50), (45, 70))]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    reference = kf.estimate(a, b, 3, boundary="reflect")
    fit = estimate_tiled(a, b, 3, boundary="reflect", tile=16)
    np.testing.assert_allclose(fit.kernel, reference.kernel, rtol=0, atol=1e-10)
    assert fit.n_used == 60 * 50 + 45 * 70


def test_integer_b_carries_its_rounding_floor():
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    b = np.rint(kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest")).astype(np.uint8)
    fit = estimate_tiled(a, b, 3, boundary="nearest", tile=20)
    assert fit.info["quantisation_var"] == pytest.approx(1 / 12)
    assert fit.noise_std >= np.sqrt(1 / 12) - 1e-12


def test_a_noise_free_fit_says_its_noise_level_is_not_resolved():
    rng = np.random.default_rng(9)
    a = rng.random((50, 50))
    fit = estimate_tiled(a, kf.convolve(a, np.eye(3), boundary="wrap"), 3, boundary="wrap")
    np.testing.assert_allclose(fit.kernel, np.eye(3), atol=1e-12)
    assert np.isnan(fit.noise_std) and "below what summed statistics resolve" in fit.message
    assert fit.converged


# --------------------------------------------------------------------------------------------
# Lazy files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def image():
    return np.random.default_rng(10).random((70, 90)).astype(np.float32)


@pytest.mark.parametrize("writer", ["tiff", "tiff-big-endian", "tiff-compressed", "npy",
                                    "npy-fortran", "zarr"])
def test_lazy_images_read_rectangles_exactly(tmp_path, image, writer):
    if writer == "tiff":
        path = tmp_path / "x.tif"
        tifffile.imwrite(path, image)
    elif writer == "tiff-big-endian":
        path = tmp_path / "x.tiff"
        tifffile.imwrite(path, image, byteorder=">")
    elif writer == "tiff-compressed":
        pytest.importorskip("zarr")
        path = tmp_path / "x.tif"
        tifffile.imwrite(path, image, compression="zlib", tile=(32, 32))
    elif writer.startswith("npy"):
        path = tmp_path / "x.npy"
        np.save(path, np.asfortranarray(image) if writer == "npy-fortran" else image)
    else:
        zarr = pytest.importorskip("zarr")
        path = tmp_path / "x.zarr"
        zarr.save(str(path), image)
    lazy = open_lazy(path)
    assert lazy.shape == image.shape and lazy.dtype == np.float32 and lazy.dtype.isnative
    np.testing.assert_array_equal(lazy[5:40, 17:89], image[5:40, 17:89])
    np.testing.assert_array_equal(np.asarray(lazy), image)
    # Pickles as its path (what a Dask worker receives) and reads the same after.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy))[3:9, :4], image[3:9, :4])


def test_lazy_multi_page_tiff_needs_a_page(tmp_path, image):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([image, 2 * image]))
    with pytest.raises(ValueError, match="multi-page TIFF with 2 pages"):
        open_lazy(path)
    np.testing.assert_array_equal(open_lazy(path, page=1)[:3, :3], 2 * image[:3, :3])
    with pytest.raises(ValueError, match="page=5 is out of range"):
        open_lazy(path, page=5)


def test_lazy_reading_errors_name_the_file(tmp_path, image):
    with pytest.raises(ValueError, match=r"x\.png.*cannot be read tile by tile"):
        LazyImage(tmp_path / "x.png")
    with pytest.raises(ValueError, match="missing.tif"):
        open_lazy(tmp_path / "missing.tif")
    np.save(tmp_path / "rgb.npy", np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match=r"shape \(4, 5, 3\).*2-D single-channel"):
        open_lazy(tmp_path / "rgb.npy")
    np.save(tmp_path / "ok.npy", image)
    with pytest.raises(ValueError, match="page=1 requested"):
        open_lazy(tmp_path / "ok.npy", page=1)


def test_estimate_from_files_equals_in_memory(tmp_path):
    rng = np.random.default_rng(11)
    a, b = noisy_pair(rng, (120, 100), rng.random((4, 3)), boundary="fill")
    a[30, 40] = np.nan
    tifffile.imwrite(tmp_path / "a.tif", a.astype(np.float32))
    np.save(tmp_path / "b.npy", b)
    mask = rng.random(b.shape) > 0.1
    tifffile.imwrite(tmp_path / "m.tif", mask.astype(np.uint8))
    reference = kf.estimate(a.astype(np.float32), b, (4, 3), boundary="fill", mask=mask)
    fit = estimate_tiled(open_lazy(tmp_path / "a.tif"), open_lazy(tmp_path / "b.npy"), (4, 3),
                         boundary="fill", mask=open_lazy(tmp_path / "m.tif"), tile=32)
    assert fit.n_used == reference.n_used
    # The in-memory fit with scattered dropped pixels may solve by CG to 1e-12.
    np.testing.assert_allclose(fit.kernel, reference.kernel, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------
# What summed statistics cannot do is refused
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, error, match", [
    ({"tile": 0}, ValueError, r"tile=0 must be a positive integer"),
    ({"tile": 2.5}, ValueError, r"tile=2.5 must be a positive integer"),
    ({"model": "radial"}, ValueError, r"model='radial' is not available for tiled"),
    ({"loss": "l1"}, ValueError, r"loss='l1' is not available for tiled"),
    ({"background": 0}, ValueError, r"background=0 is not available for tiled"),
    ({"saturation": 2.0}, ValueError, r"saturation=2.0 is not available"),
    ({"method": "iterative"}, ValueError, r"method='iterative' is not available for tiled"),
    ({"reg": "tv"}, ValueError, r"reg='tv' is solved matrix-free"),
    ({"tol": 1e-3}, TypeError, r"takes no options \['tol'\]"),
    ({"model": "gaussian", "nonneg": True}, ValueError, r"nonneg=True is not available"),
    ({"model": "gaussian", "f_scale": 2.0}, ValueError, r"f_scale= is the Huber threshold"),
    ({"model": "nonsense"}, ValueError, r"model='nonsense' is not available"),
    ({"boundary": "auto"}, ValueError, r"need a kernel shape and a named boundary"),
])
def test_unsupported_options_are_refused(options, error, match):
    a = np.ones((10, 10))
    with pytest.raises(error, match=match):
        estimate_tiled(a, a, 3, **options)


def test_bad_sources_are_refused():
    a = np.random.default_rng(0).random((10, 10))
    with pytest.raises(ValueError, match=r"shape=\(65, 65\) has 4225 pixels"):
        estimate_tiled(np.ones((200, 200)), np.ones((200, 200)), 65)
    with pytest.raises(TypeError, match="a is a boolean array"):
        estimate_tiled(a > 0.5, a, 3)
    with pytest.raises(ValueError, match=r"mask has shape \(9, 10\)"):
        estimate_tiled(a, a, 3, mask=np.ones((9, 10), bool))
    with pytest.raises(ValueError, match="b has shape"):
        estimate_tiled(a, a[:7], 3)
    with pytest.raises(ValueError, match="lists of the same non-zero length"):
        estimate_tiled([a, a], [a], 3)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_tile_streams_tiffs_and_matches_the_in_memory_fit(tmp_path, capsys):
    rng = np.random.default_rng(12)
    a, b = noisy_pair(rng, (90, 80), rng.random((3, 3)), boundary="nearest")
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    status = cli.main(["estimate", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
                       "--shape", "3", "--boundary", "nearest", "--tile", "25",
                       "-o", str(tmp_path / "k.npy"), "--json", str(tmp_path / "fit.json")])
    assert status == 0, capsys.readouterr().err
    reference = kf.estimate(a, b, 3, boundary="nearest")
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), reference.kernel, atol=1e-10)
    assert '"tiles": 16' in (tmp_path / "fit.json").read_text()


@pytest.mark.parametrize("extra, match", [
    (["--tile", "0"], "--tile 0 must be a positive number of pixels"),
    (["--tile", "8", "--report", "r.html"], "--report draws the images"),
    (["--tile", "8", "--gray"], "--channel, --gray"),
    (["--tile", "8", "--model", "lowrank"], "model='lowrank' is not available for tiled"),
])
def test_cli_tile_errors_are_one_line(tmp_path, capsys, extra, match):
    np.save(tmp_path / "a.npy", np.ones((20, 20)))
    status = cli.main(["estimate", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"),
                       "--shape", "3", "-o", str(tmp_path / "k.npy")]
                      + [x if not x.endswith(".html") else str(tmp_path / x) for x in extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / "k.npy").exists()


def test_cli_tile_refuses_a_picture_it_cannot_stream(tmp_path, capsys):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    status = cli.main(["estimate", str(tmp_path / "a.png"), str(tmp_path / "a.png"),
                       "--shape", "3", "--tile", "8", "-o", str(tmp_path / "k.npy")])
    assert status == 2
    assert "cannot be read tile by tile" in capsys.readouterr().err


def test_tiled_pass_shows_progress_only_when_asked(tmp_path):
    """A progress bar (tqdm) on the stream given to progress_to, nothing otherwise."""
    import io as text_io

    from kernelfit.core.progress import progress_to
    from kernelfit.stats.tiles import tiled_statistics

    rng = np.random.default_rng(0)
    a = rng.random((64, 64))
    b = kf.convolve(a, np.full((3, 3), 1 / 9), mode="valid")
    stream = text_io.StringIO()
    with progress_to(stream):
        tiled_statistics(a, b, 3, tile=16)
    assert "kernelfit: statistics by tile" in stream.getvalue()
    assert "/16 " in stream.getvalue()   # 62² valid pixels in 16-pixel tiles: 4 × 4
    quiet = text_io.StringIO()
    tiled_statistics(a, b, 3, tile=16)
    assert quiet.getvalue() == ""
