"""The one tiling rule: when a large image is processed in tiles, and how tiles are cut.

Statistics and convolutions are sums over output pixels, so cutting the output into tiles
(each reading its kernel-sized footprint of the extended image) is exact.  Above
:data:`TILED_ABOVE` output pixels whole-image transforms are slowed by memory traffic, not
arithmetic, so both go tile by tile: statistics in tiles of :data:`STATISTICS_TILE`² output
pixels, convolutions in tiles of :data:`CONVOLUTION_TILE`² (an FFT convolution's transform is
the image itself, the statistics' carries the kernel's lags too; each size was the faster one
measured, see BENCHMARKS.md).  The values are read at call time, so tests may lower them.
"""

from __future__ import annotations

import numpy as np

TILED_ABOVE = 3072 * 3072
STATISTICS_TILE = 2048
CONVOLUTION_TILE = 1024


def is_large(n_output_pixels: int) -> bool:
    """Whether an output of this many pixels is processed tile by tile."""
    return n_output_pixels > TILED_ABOVE


def tile_slices(shape, side) -> list[tuple[slice, slice]]:
    """``(rows, cols)`` slices cutting an array of ``shape`` into near-equal tiles of at most
    ``side`` × ``side`` (the tiles of a large image's output; each reads its footprint).

    Examples
    --------
    >>> [(r.start, r.stop, c.start, c.stop) for r, c in tile_slices((5, 3), 3)]
    [(0, 2, 0, 3), (2, 5, 0, 3)]
    """
    edges = [np.linspace(0, n, -(-n // side) + 1).round().astype(int).tolist()
             for n in shape]
    return [(slice(y0, y1), slice(x0, x1))
            for y0, y1 in zip(edges[0][:-1], edges[0][1:])
            for x0, x1 in zip(edges[1][:-1], edges[1][1:])]
