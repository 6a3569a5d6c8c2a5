"""Exact statistics of images larger than memory, one tile at a time, and lazy image files.

The sufficient statistics (``G = XᵀWX``, ``c = XᵀWb``, ``bᵀWb``, ``n``) are sums over the used
pixels of ``b``, so cutting the used rectangle of ``b`` into tiles and adding the tiles'
statistics gives the whole image's, exactly (up to the rounding of the sums, ~1e-13 relative).
A tile needs the pixels of the extended image ``P`` under its footprints: the tile's rows and
columns of ``P`` plus a *halo* of ``kh−1`` rows and ``kw−1`` columns.  Those are read from ``a``
through the boundary rule (:mod:`kernelfit._conventions`): inside ``a`` they are ``a``'s own
pixels, beyond its edges the padding that ``boundary`` defines (zeros, the nearest pixel, a
reflection, the opposite edge).  Each tile therefore reads only a rectangle of ``a`` slightly
larger than itself (two rectangles for ``'wrap'`` at an edge), and memory stays bounded by the
tile size and ``p² = (kh·kw)²``.

NaN/inf and masks follow :mod:`kernelfit.design` tile by tile: a non-finite pixel of ``b`` or a
pixel the mask marks False is dropped, and a non-finite pixel of ``P`` (of ``a``, or its padded
copies) drops every pixel of ``b`` whose footprint touches it.  Each footprint lies wholly
inside its tile's ``P``, so this decision is the same as on the whole image.

Sources are anything that can be sliced into NumPy arrays: arrays, ``np.memmap``, zarr arrays,
and :class:`LazyImage` (a TIFF, ``.npy`` or zarr file read one rectangle at a time).  The
summed statistics are then solved like the in-memory direct path: :func:`fit_statistics`
handles the free model (L2, quadratic regularisers, ``nonneg``, ``normalize``) and the
parametric families with ``loss='l2'``; models that need the images themselves are refused.
:mod:`kernelfit.distributed` runs the same tiles on a Dask cluster.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._conventions import (Geometry, as_image, make_geometry, normalize_boundary,
                           normalize_shape, output_size_of)
from .design import _touches
from .stats import SufficientStatistics, statistics

# A 2048² tile of float64 is 32 MiB; with the FFT buffers of the statistics a tile costs a few
# hundred MiB at most, and the per-tile overhead (the kernel-sized halo, p×p additions) is small.
DEFAULT_TILE = 2048

# File types LazyImage reads one rectangle at a time (a .zarr store is a directory).
STREAMED_EXTENSIONS = (".tif", ".tiff", ".npy", ".zarr")


# --------------------------------------------------------------------------------------------
# Planning: which rows and columns of a each tile reads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisReads:
    """How one axis of a tile's extended image is read from ``a``.

    Attributes
    ----------
    runs : tuple of (int, int)
        Ranges ``[start, stop)`` of ``a``'s indices to read, in increasing order.
    take : ndarray of int or None
        For each index of the extended tile, its position in the concatenated runs, or −1
        for a zero (``'fill'`` padding).  ``None``: the runs themselves, in order.
    """

    runs: tuple
    take: np.ndarray | None


@dataclass(frozen=True)
class Tile:
    """One tile: a rectangle of ``b`` and the reads of ``a`` its footprints need.

    ``rows``/``cols`` index the whole ``b``; the extended tile is ``(rows, cols)`` of the used
    rectangle grown by ``kh−1`` rows and ``kw−1`` columns (the halo).
    """

    rows: slice
    cols: slice
    a_rows: AxisReads
    a_cols: AxisReads


def tile_edges(n: int, tile: int) -> list[int]:
    """Edges ``0, tile, 2·tile, …, n`` of a regular tiling of ``n`` pixels.

    Examples
    --------
    >>> tile_edges(10, 4)
    [0, 4, 8, 10]
    """
    return list(range(0, n, tile)) + [n]


def plan_tiles(geometry: Geometry, row_edges, col_edges) -> list[Tile]:
    """The tiles of the used rectangle of ``b`` cut at ``row_edges`` × ``col_edges``.

    Edges are positions in the used rectangle (from 0 to its height/width, increasing).

    Examples
    --------
    >>> g = make_geometry((10, 12), (3, 3), boundary="wrap")
    >>> tiles = plan_tiles(g, [0, 5, 10], [0, 12])
    >>> [t.a_rows.runs for t in tiles]
    [((0, 6), (9, 10)), ((0, 1), (4, 10))]
    """
    (kh, kw), (H, W) = geometry.kernel_shape, geometry.image_shape
    (top, _), (left, _) = geometry.pad
    row0 = geometry.used[0].indices(geometry.output_shape[0])[0]
    col0 = geometry.used[1].indices(geometry.output_shape[1])[0]
    rows = [(r0, r1, _axis_reads(r0 - top, r1 + kh - 1 - top, H, geometry.boundary))
            for r0, r1 in zip(row_edges[:-1], row_edges[1:]) if r1 > r0]
    cols = [(c0, c1, _axis_reads(c0 - left, c1 + kw - 1 - left, W, geometry.boundary))
            for c0, c1 in zip(col_edges[:-1], col_edges[1:]) if c1 > c0]
    return [Tile(slice(row0 + r0, row0 + r1), slice(col0 + c0, col0 + c1), reads_r, reads_c)
            for r0, r1, reads_r in rows for c0, c1, reads_c in cols]


def _axis_reads(start: int, stop: int, n: int, boundary: str) -> AxisReads:
    """Reads of ``a``'s indices ``start..stop-1`` (any integers) under ``boundary``."""
    index = _boundary_index(np.arange(start, stop), n, boundary)
    inside = np.unique(index[index >= 0])
    # Split the sorted indices into runs of consecutive ones: each is one slice of a.
    breaks = np.flatnonzero(np.diff(inside) != 1) + 1
    runs = tuple((int(run[0]), int(run[-1]) + 1) for run in np.split(inside, breaks) if run.size)
    if np.array_equal(index, inside):
        return AxisReads(runs, None)
    take = np.where(index >= 0, np.searchsorted(inside, index), -1)
    return AxisReads(runs, take)


def _boundary_index(y: np.ndarray, n: int, boundary: str) -> np.ndarray:
    """The index of ``a`` that the extended image holds at position ``y`` (−1: a zero).

    The same extension as ``numpy.pad`` with the modes of :mod:`kernelfit._conventions`,
    for any padding width (repeated reflections for pads wider than the image).
    """
    if boundary in ("valid", "fill"):
        return np.where((y >= 0) & (y < n), y, -1)
    if boundary == "nearest":
        return np.clip(y, 0, n - 1)
    if boundary == "wrap":
        return y % n
    if boundary == "reflect":     # half-sample symmetric: period 2n
        m = y % (2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    if n == 1:                    # 'mirror' (whole-sample symmetric): period 2n − 2
        return np.zeros_like(y)
    m = y % (2 * n - 2)
    return np.where(m < n, m, 2 * n - 2 - m)


# --------------------------------------------------------------------------------------------
# One tile
# --------------------------------------------------------------------------------------------


def tile_blocks(a, b, mask, tile: Tile):
    """Slice what ``tile`` needs out of the sources: ``(a_blocks, b_block, mask_block)``.

    ``a_blocks`` is a nested list (row runs × column runs).  The slices are NumPy arrays for
    in-memory and lazy sources, Dask arrays for Dask sources (computed where the task runs).
    """
    a_blocks = [[a[r0:r1, c0:c1] for c0, c1 in tile.a_cols.runs]
                for r0, r1 in tile.a_rows.runs]
    return a_blocks, b[tile.rows, tile.cols], None if mask is None else mask[tile.rows,
                                                                             tile.cols]


def tile_statistics(a_blocks, b_block, mask_block, tile: Tile, shape) -> SufficientStatistics:
    """The exact statistics of one tile from the blocks :func:`tile_blocks` sliced.

    A tile without a usable pixel contributes zero statistics.
    """
    P = _extended_tile(a_blocks, tile)
    b = np.array(b_block, dtype=np.float64)  # a copy: unused pixels are zeroed below
    use = np.isfinite(b)
    if mask_block is not None:
        use &= _usable(np.asarray(mask_block))
    bad = ~np.isfinite(P)
    if bad.any():
        use &= ~_touches(bad, shape)
        P[bad] = 0.0
    n_used = int(np.count_nonzero(use))
    if n_used == 0:
        p = shape[0] * shape[1]
        return SufficientStatistics(np.zeros((p, p)), np.zeros(p), 0.0, 0, tuple(shape))
    if n_used < use.size:
        b[~use] = 0.0
    weights = None if n_used == use.size else use.astype(np.float64)
    return statistics(P, b, shape, weights=weights)


def _extended_tile(a_blocks, tile: Tile) -> np.ndarray:
    """The tile's extended image (float64, a fresh array) from the blocks of ``a``."""
    rows, cols = tile.a_rows, tile.a_cols
    if len(a_blocks) == 1 and len(a_blocks[0]) == 1:
        # A copy even for float64 input: non-finite pixels are zeroed in it.
        data = np.array(a_blocks[0][0], dtype=np.float64)
    else:
        data = np.block([[np.asarray(x, dtype=np.float64) for x in row] for row in a_blocks])
    # Fancy indexing copies; the extension repeats or zeroes rows and columns of the runs.
    if rows.take is not None:
        data = data[np.maximum(rows.take, 0)]
        data[rows.take < 0] = 0.0
    if cols.take is not None:
        data = data[:, np.maximum(cols.take, 0)]
        data[:, cols.take < 0] = 0.0
    return data


def _usable(mask: np.ndarray) -> np.ndarray:
    """True where a mask block allows a pixel: booleans as they are; numbers nonzero and
    finite (a mask read from a file, as :func:`kernelfit.io.read_mask` reads one)."""
    if mask.dtype == bool:
        return mask
    return np.isfinite(mask) & (mask != 0)


# --------------------------------------------------------------------------------------------
# Whole images
# --------------------------------------------------------------------------------------------


def prepare_sources(a, b, shape, *, boundary, center=None, mask=None, label=""):
    """Validate one pair of sources without reading their pixels.

    Returns ``(a, b, mask, geometry)``; sources with ``shape``/``dtype``/slicing are kept as
    they are (nothing is loaded), other array_likes become arrays.
    """
    a = as_source(a, f"a{label}")
    b = as_source(b, f"b{label}")
    if mask is not None:
        mask = as_source(mask, f"mask{label}", allow_bool=True)
        if tuple(mask.shape) != tuple(b.shape):
            raise ValueError(f"mask{label} has shape {tuple(mask.shape)}; it must have b's "
                             f"shape {tuple(b.shape)}")
    shape = normalize_shape(shape)
    geometry = make_geometry(tuple(a.shape), shape, boundary=boundary, center=center,
                             output_size=output_size_of(tuple(a.shape), tuple(b.shape), shape))
    return a, b, mask, geometry


def as_source(x, name: str, *, allow_bool: bool = False):
    """A 2-D real image to be read tile by tile, checked without loading it.

    Objects with ``shape``, ``dtype`` and slicing (ndarray, memmap, zarr, Dask,
    :class:`LazyImage`) are returned as they are; anything else goes through
    :func:`kernelfit._conventions.as_image`.

    Examples
    --------
    >>> as_source([[1, 2], [3, 4]], "a").dtype
    dtype('float64')
    >>> as_source(np.zeros((2, 2, 3)), "b")
    Traceback (most recent call last):
    ...
    ValueError: b must be a 2-D image, got an array of shape (2, 2, 3)
    """
    if not all(hasattr(x, attr) for attr in ("shape", "dtype", "__getitem__")):
        return _as_small_mask(x, name) if allow_bool else as_image(x, name)
    dtype = np.dtype(x.dtype)
    if dtype == bool and not allow_bool:
        raise TypeError(f"{name} is a boolean array; an image must hold numbers (a mask of "
                        "usable pixels goes in mask=)")
    if dtype != bool and (not np.issubdtype(dtype, np.number)
                          or np.issubdtype(dtype, np.complexfloating)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}")
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be a 2-D image, got an array of shape {tuple(x.shape)}")
    if any(n != n for n in x.shape):   # NaN: a Dask array whose chunk sizes are unknown
        raise ValueError(f"{name} has an unknown shape {tuple(x.shape)}; compute it first "
                         "(dask: x.compute_chunk_sizes())")
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _as_small_mask(x, name):
    m = np.asarray(x)
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"{name} must be a boolean array (True = usable), got dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array like b, got shape {m.shape}")
    return m.astype(bool)


def check_tile(tile) -> int:
    """Validate a tile size (pixels per side of a tile of ``b``)."""
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise ValueError(f"tile={tile!r} must be a positive integer (pixels per tile side)")
    return int(tile)


def tiled_statistics(a, b, shape, *, boundary="valid", center=None, mask=None,
                     tile=DEFAULT_TILE) -> SufficientStatistics:
    """The sufficient statistics of one image pair, computed tile by tile.

    Equal to :func:`kernelfit.stats.statistics` of the whole prepared pair (to ~1e-13
    relative), with memory bounded by the tile size: each tile reads its rectangle of ``b``
    and the rectangle of ``a`` under its footprints (with the boundary rule at the edges).

    Parameters
    ----------
    a, b : (H, W) arrays or lazy sources
        ndarray, ``np.memmap``, zarr array or :class:`LazyImage`; ``b`` has ``a``'s shape or
        its 'valid' or 'full' shape, as in :func:`kernelfit.estimate`.
    shape : int or (kh, kw)
    boundary, center : as in :func:`kernelfit.estimate`
    mask : array like ``b``, optional
        True (or nonzero) where a pixel of ``b`` may be used.
    tile : int, default 2048
        Tile side in pixels of ``b``.

    Returns
    -------
    SufficientStatistics

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((60, 50))
    >>> b = kf.convolve(a, rng.random((3, 4)), boundary="reflect")
    >>> s = tiled_statistics(a, b, (3, 4), boundary="reflect", tile=16)
    >>> from kernelfit.design import prepare_pair
    >>> pair = prepare_pair(a, b, (3, 4), boundary="reflect")
    >>> whole = kf.statistics(pair.extended, pair.b_used, (3, 4))
    >>> bool(np.allclose(s.gram, whole.gram, rtol=1e-12)), s.n_used
    (True, 3000)
    """
    boundary = normalize_boundary(boundary)
    a, b, mask, geometry = prepare_sources(a, b, shape, boundary=boundary, center=center,
                                           mask=mask)
    tiles = plan_tiles(geometry, *(tile_edges(n, check_tile(tile))
                                   for n in geometry.used_shape))
    return sum(tile_statistics(*tile_blocks(a, b, mask, t), t, geometry.kernel_shape)
               for t in tiles)


# --------------------------------------------------------------------------------------------
# Fitting on summed statistics
# --------------------------------------------------------------------------------------------


def estimate_tiled(a, b, shape, *, tile=DEFAULT_TILE, boundary="valid", center=None,
                   model="free", loss="l2", reg=None, lam="auto", nonneg=False, normalize=None,
                   mask=None, method=None, noise_std=None, background=None, saturation=None,
                   saturation_a=None, **model_options):
    """:func:`kernelfit.estimate` for images read tile by tile (larger than memory).

    The statistics are summed over tiles of ``tile × tile`` pixels of ``b``
    (:func:`tiled_statistics`) and solved as in memory, so the kernel equals the in-memory
    direct fit's (to ~1e-12 relative on well-conditioned problems).  Supported: the free
    model (``reg`` None, 'ridge', 'gradient' or 'laplacian', ``lam``, ``nonneg``,
    ``normalize``, ``noise_std``) and the parametric families with ``loss='l2'``, for kernels
    of at most 64×64 pixels.  What needs the images in memory is refused with a
    ``ValueError``: structured models, robust losses, the matrix-free and classic methods,
    ``background``, ``saturation``.  ``fit.residual`` is ``None`` (it would be an image as
    large as ``b``); ``fit.noise_std`` comes from ``‖Xk − b‖² = bᵀb − 2kᵀc + kᵀGk``.

    Parameters
    ----------
    a, b : (H, W) array, :class:`LazyImage`, zarr array or memmap, or lists of them
        Lists are several pairs sharing one kernel.
    shape : int or (kh, kw)
    tile : int, default 2048
        Tile side in pixels of ``b``.  Memory is bounded by the tile and ``p² = (kh·kw)²``,
        not by the images: a 16384² float32 pair from TIFF files with a 21×21 kernel peaked
        at 0.32 GiB for the whole process (``benchmarks/bench_scale.py --part rss``).
    **options
        As in :func:`kernelfit.estimate`.

    Returns
    -------
    KernelFit
        ``fit.info['tiles']`` holds the number of tiles, ``fit.info['tile']`` their size.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((80, 70)), rng.random((5, 3))
    >>> fit = estimate_tiled(a, kf.convolve(a, k, boundary="nearest"), (5, 3), tile=32,
    ...                      boundary="nearest")
    >>> bool(np.allclose(fit.kernel, k)), fit.info["tiles"]
    (True, 9)
    """
    shape, boundary = check_named(shape, boundary)
    tile = check_tile(tile)
    check_statistics_options(shape, model=model, loss=loss, reg=reg, lam=lam, method=method,
                             nonneg=nonneg, normalize=normalize, noise_std=noise_std,
                             background=background, saturation=saturation,
                             saturation_a=saturation_a, model_options=model_options)
    total, floor, n_tiles, geometry = None, 0.0, 0, None
    for label, (ai, bi, mi) in source_pairs(a, b, mask):
        ai, bi, mi, geometry = prepare_sources(ai, bi, shape, boundary=boundary,
                                               center=center, mask=mi, label=label)
        tiles = plan_tiles(geometry, *(tile_edges(n, tile) for n in geometry.used_shape))
        stats = sum(tile_statistics(*tile_blocks(ai, bi, mi, t), t, shape) for t in tiles)
        floor += stats.n_used * quantisation_of(bi)
        total = stats if total is None else total + stats
        n_tiles += len(tiles)
    return fit_statistics(total, center=geometry.center, boundary=boundary, model=model,
                          reg=reg, lam=lam, nonneg=nonneg, normalize=normalize,
                          noise_std=noise_std, model_options=model_options,
                          quantisation_var=floor / max(total.n_used, 1),
                          info={"tiles": n_tiles, "tile": tile})


def check_named(shape, boundary):
    """The normalised ``(shape, boundary)``; the automatic choices (``shape=None``,
    ``boundary='auto'``) compare fits on whole images, so a tiled fit needs them given."""
    if shape is None or (isinstance(boundary, str) and boundary.lower() == "auto"):
        raise ValueError(f"shape={shape!r}, boundary={boundary!r}: tiled and distributed fits "
                         "need a kernel shape and a named boundary (the automatic choices "
                         "compare fits on whole images)")
    return normalize_shape(shape), normalize_boundary(boundary)


def source_pairs(a, b, mask):
    """``[(label, (a, b, mask))]``: one pair, or the pairs of equal-length lists."""
    from .estimate import _single

    if _single(a) and _single(b):
        return [("", (a, b, mask))]
    if _single(a) or _single(b) or len(a) != len(b) or len(a) == 0:
        raise ValueError("a and b must both be images, or lists of the same non-zero length")
    masks = [None] * len(a) if mask is None else mask
    if not isinstance(masks, (list, tuple)) or len(masks) != len(a):
        raise ValueError("with lists of pairs, mask must be None or a list of the same length")
    return [(f"[{i}]", triple) for i, triple in enumerate(zip(a, b, masks))]


def quantisation_of(image) -> float:
    """Rounding variance of an image from its dtype alone (1/12 for integers; nothing is read)."""
    return 1.0 / 12.0 if np.issubdtype(np.dtype(image.dtype), np.integer) else 0.0


def check_statistics_options(shape, *, model, loss, reg, lam, method, nonneg, normalize,
                             noise_std, background, saturation, saturation_a, model_options):
    """Refuse, with the knob named, what a fit on summed statistics cannot do."""
    from .estimate import PARAMETRIC, _check_options
    from .models._common import MAX_STATISTICS_UNKNOWNS
    from .models.parametric import KernelModel
    from .regularisers import NONSMOOTH

    _check_options(model=model, loss=loss, reg=reg, lam=lam, method=method, shape=shape,
                   nonneg=nonneg, normalize=normalize, noise_std=noise_std)
    where = "tiled or distributed fits (they see the images only as summed statistics)"
    parametric = isinstance(model, KernelModel) or model in PARAMETRIC
    if not parametric and model != "free":
        raise ValueError(f"model={model!r} is not available for {where}; use model='free' "
                         f"or a parametric model {PARAMETRIC}")
    for name, value in (("background", background), ("saturation", saturation),
                        ("saturation_a", saturation_a)):
        if value is not None:
            raise ValueError(f"{name}={value!r} is not available for {where}; mask the "
                             "pixels instead (mask=)")
    if loss != "l2":
        raise ValueError(f"loss={loss!r} is not available for {where}: only loss='l2'")
    if method not in (None, "normal"):
        raise ValueError(f"method={method!r} is not available for {where}: only "
                         "method=None or 'normal'")
    p = shape[0] * shape[1]
    if p > MAX_STATISTICS_UNKNOWNS:
        raise ValueError(f"shape={shape} has {p} pixels, too many for the {p}×{p} Gram matrix "
                         f"that {where} need (at most {MAX_STATISTICS_UNKNOWNS})")
    if parametric:
        for name, value in (("reg", reg), ("nonneg", nonneg)):
            if value is not None and value is not False:
                raise ValueError(f"{name}={value!r} is not available with model={model!r}")
        _parametric_family(model, model_options)   # unknown options fail now, not after reading
    else:
        if reg in NONSMOOTH:
            raise ValueError(f"reg={reg!r} is solved matrix-free on the images; {where} "
                             "take reg=None, 'ridge', 'gradient' or 'laplacian'")
        if model_options:
            raise TypeError(f"model='free' on summed statistics takes no options "
                            f"{sorted(model_options)}")


def _parametric_family(model, model_options):
    """The model object and the options of :func:`fit_parametric` itself."""
    from .estimate import PARAMETRIC_FIT_OPTIONS
    from .models.parametric import make_model

    fit_options = {k: v for k, v in model_options.items() if k in PARAMETRIC_FIT_OPTIONS}
    if "f_scale" in fit_options:
        raise ValueError("f_scale= is the Huber threshold; summed statistics fit loss='l2'")
    family = make_model(model, **{k: v for k, v in model_options.items()
                                  if k not in PARAMETRIC_FIT_OPTIONS})
    return family, fit_options


def fit_statistics(stats: SufficientStatistics, *, center, boundary, model="free", reg=None,
                   lam="auto", nonneg=False, normalize=None, noise_std=None,
                   model_options=None, quantisation_var=0.0, info=None):
    """A :class:`~kernelfit.result.KernelFit` from statistics summed over tiles or workers.

    The options must have passed :func:`check_statistics_options`.  ``quantisation_var``
    is the rounding variance of integer ``b`` (1/12), added to ``noise_std`` for the
    discrepancy principle and used as a floor for ``fit.noise_std``, as in
    :func:`kernelfit.estimate`.
    """
    from .free import fit_free_statistics

    info = dict(info or {})
    if noise_std is not None:
        noise_std = float(np.sqrt(noise_std ** 2 + quantisation_var))
    if model == "free":
        fit = fit_free_statistics(stats, center=center, boundary=boundary, reg=reg, lam=lam,
                                  nonneg=bool(nonneg), normalize=normalize,
                                  noise_std=noise_std)
    else:
        fit = _fit_parametric_statistics(stats, model, model_options or {}, center=center,
                                         boundary=boundary, normalize=normalize)
    fit.info.update(info)
    if quantisation_var > 0:
        _apply_floor(fit, quantisation_var)
    return fit


def _fit_parametric_statistics(stats, model, model_options, *, center, boundary, normalize):
    from .models.fit_parametric import fit_parametric
    from .result import KernelFit

    family, fit_options = _parametric_family(model, model_options)
    result = fit_parametric(stats, family, stats.shape, center=center, loss="l2",
                            normalize=normalize, **fit_options)
    return KernelFit(
        kernel=result.kernel, shape=stats.shape, center=result.center, boundary=boundary,
        model=family.name, params=result.params, stderr=result.stderr, cov=result.cov,
        noise_std=result.noise_std, lam=None, n_used=result.n_used,
        converged=result.converged, message=result.message, method="parametric-l2",
        info=dict(result.info, objective=result.objective, free=result.free, loss="l2"),
    )


def _apply_floor(fit, floor):
    """Integer ``b`` cannot be fitted better than its rounding (see kernelfit.estimate)."""
    from .estimate import _scaled

    fit.info["quantisation_var"] = floor
    if np.isnan(fit.noise_std) or fit.noise_std ** 2 >= floor:
        return
    scale = np.sqrt(floor) / fit.noise_std if fit.noise_std > 0 else np.inf
    fit.noise_std = float(np.sqrt(floor))
    if fit.stderr is not None and np.isfinite(scale):
        fit.stderr = _scaled(fit.stderr, scale)
        fit.cov = None if fit.cov is None else fit.cov * scale ** 2


# --------------------------------------------------------------------------------------------
# Lazy image files
# --------------------------------------------------------------------------------------------


class LazyImage:
    """A 2-D image in a file, read one rectangle at a time.

    Slicing (``image[r0:r1, c0:c1]``) returns a NumPy array in native byte order; nothing
    else is held in memory.  Uncompressed TIFF pages and ``.npy`` files are mapped for each
    read and unmapped after it, so the pages read do not stay counted in the process's
    memory; compressed or tiled TIFFs are read through ``tifffile``'s zarr store and zarr
    directories through zarr (both need ``zarr``: ``pip install kernelfit[dask]``).  The
    object pickles as its path, so Dask workers that see the same file system can read it.

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif``/``.tiff``, ``.npy`` or a ``.zarr`` array store.
    page : int, optional
        The page of a multi-page TIFF (from 0); required when there are several.

    Attributes
    ----------
    shape : (int, int)
    dtype : numpy.dtype
        Native byte order.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(12.0).reshape(3, 4))
    >>> image = LazyImage(path)
    >>> image.shape, image[1:, 2:].tolist()
    ((3, 4), [[6.0, 7.0], [10.0, 11.0]])
    """

    ndim = 2

    def __init__(self, path, *, page=None):
        from . import io

        self.path = str(path)
        ext = Path(self.path).suffix.lower()
        if ext not in STREAMED_EXTENSIONS:
            raise ValueError(f"{self.path}: {ext or '(no extension)'!r} files cannot be read "
                             f"tile by tile; use one of {', '.join(STREAMED_EXTENSIONS)} "
                             "(or read the image into memory without tiling)")
        if ext == ".zarr":
            if not os.path.exists(self.path):
                raise ValueError(f"{self.path}: no such file or directory")
        else:
            io._existing_file(self.path)
        self.page = io._check_page(page, self.path)
        if self.page not in (None, 0) and ext not in (".tif", ".tiff"):
            raise ValueError(f"{self.path}: page={page} requested, but {ext} files hold a "
                             "single image (page 0)")
        self._array = None   # the open zarr array (not pickled)
        self._map = None     # (offset, dtype as stored, order) of a mapped layout
        inspect = {".npy": self._inspect_npy, ".zarr": self._inspect_zarr}.get(ext,
                                                                              self._inspect_tiff)
        shape, dtype = io._call_reader(self.path, lambda _: inspect())
        if len(shape) != 2:
            raise ValueError(f"{self.path}: holds an array of shape {tuple(shape)}; tiled "
                             "reading needs a 2-D single-channel image")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        as_source(self, self.path, allow_bool=True)

    def _inspect_npy(self):
        # np.load maps the file and parses its header; only the layout is kept.
        mapped = np.load(self.path, mmap_mode="r")
        fortran = mapped.flags.f_contiguous and not mapped.flags.c_contiguous
        self._map = (mapped.offset, mapped.dtype, "F" if fortran else "C")
        return mapped.shape, mapped.dtype

    def _inspect_tiff(self):
        import tifffile

        with tifffile.TiffFile(self.path) as tif:
            if self.page is None and len(tif.pages) > 1:
                raise ValueError(f"is a multi-page TIFF with {len(tif.pages)} pages; choose "
                                 "one with page=K (--page K), counted from 0")
            if (self.page or 0) >= len(tif.pages):
                raise ValueError(f"page={self.page} is out of range; the file has "
                                 f"{len(tif.pages)} page(s)")
            page = tif.pages[self.page or 0]
            dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
            if page.is_memmappable:
                self._map = (int(page.dataoffsets[0]), dtype, "C")
            return page.shape, dtype

    def _inspect_zarr(self):
        array = self._zarr()
        return array.shape, array.dtype

    def _zarr(self):
        """The zarr array behind a compressed TIFF or a zarr store, opened once per process."""
        if self._array is None:
            try:
                import zarr
            except ImportError:
                raise ValueError(f"{self.path}: reading it tile by tile needs zarr (pip install "
                                 "kernelfit[dask]); or save it as an uncompressed TIFF") from None
            if self.path.lower().endswith(".zarr"):
                array = zarr.open(self.path, mode="r")
                if not hasattr(array, "dtype"):
                    raise ValueError("is a zarr group, not an array; open the array inside it")
            else:
                import tifffile

                array = zarr.open(tifffile.imread(self.path, aszarr=True, key=self.page or 0),
                                  mode="r")
            self._array = array
        return self._array

    def __getitem__(self, key) -> np.ndarray:
        if self._map is not None:
            offset, stored, order = self._map
            mapped = np.memmap(self.path, dtype=stored, mode="r", offset=offset,
                               shape=self.shape, order=order)
            out = np.array(mapped[key])   # a copy; the mapping is dropped with `mapped`
            del mapped
        else:
            out = np.asarray(self._zarr()[key])
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None   # reopened where it is used (a Dask worker)
        return state

    def __repr__(self) -> str:
        page = "" if self.page is None else f", page={self.page}"
        return f"LazyImage({self.path!r}{page}, shape={self.shape}, dtype={self.dtype})"


def open_lazy(path, *, page=None) -> LazyImage:
    """Open an image file for reading tile by tile (see :class:`LazyImage`)."""
    return LazyImage(path, page=page)
