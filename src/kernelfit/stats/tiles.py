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
from dataclasses import dataclass

import numpy as np

from ..core import tiling
from ..core.conventions import (
    Geometry,
    make_geometry,
    normalize_boundary,
    normalize_shape,
    output_size_of,
)
from ..core.design import _single, _touches
from ..core.inputs import as_source
from ..core.progress import steps
from .compute import statistics
from .gram import SufficientStatistics

# A 2048² tile of float64 is 32 MiB; with the FFT buffers of the statistics a tile costs a few
# hundred MiB at most, and the per-tile overhead (the kernel-sized halo, p×p additions) is small.
DEFAULT_TILE = tiling.STATISTICS_TILE


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
    >>> from kernelfit.core.design import prepare_pair
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
               for t in steps(tiles, total=len(tiles), label="statistics by tile"))


# --------------------------------------------------------------------------------------------
# Fitting on summed statistics
# --------------------------------------------------------------------------------------------


def source_pairs(a, b, mask):
    """``[(label, (a, b, mask))]``: one pair, or the pairs of equal-length lists."""

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


# --------------------------------------------------------------------------------------------
# Lazy image files
# --------------------------------------------------------------------------------------------
