"""(moved from kernelfit.solvers.weighted)"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.conventions import normalize_shape
from ..core.forward import ExtendedSpectrum
from .gram import SufficientStatistics, gram_fft

# Cost model of the pieces, in seconds, measured on the 2-core benchmark machine (one
# thread).  Only ratios matter: they decide between exact methods that give the same result.
#   explicit footprints: one p×p rank-one update per pixel through BLAS, plus the gather;
_SECONDS_PER_FMA = 1.4e-11


_SECONDS_PER_GATHER = 3.5e-9


_SECONDS_PER_ROW = 5e-8


#   gram_fft of a sub-image: a fixed part growing like p² (the lag scatter) plus the FFTs.
_GRAM_FFT_FIXED = 2e-3


_GRAM_FFT_PER_P2 = 2e-7


_GRAM_FFT_PER_PIXEL = 5e-8


# Footprints are gathered in chunks of about this many bytes (p × chunk float64).
_CHUNK_BYTES = 16 * 2**20


# --------------------------------------------------------------------------------------------
# Exact statistics
# --------------------------------------------------------------------------------------------
@dataclass
class StatisticsPlan:
    """How :func:`weighted_statistics` assembles ``G_W`` (see :func:`plan_statistics`).

    Attributes
    ----------
    strategy : {'downdate', 'direct'}
        ``'downdate'``: the unweighted FFT Gram minus ``(1 − w) x xᵀ`` where ``w ≠ 1``;
        ``'direct'``: ``w x xᵀ`` summed where ``w ≠ 0``.
    rectangles : list of (y0, y1, x0, x1, value)
        Output-pixel rectangles ``[y0, y1) × [x0, x1)`` of constant coefficient ``value``
        (``1 − w`` or ``w``) whose Gram is computed by FFT.
    pixels : ndarray of int
        Flat indices (into the used rectangle of ``b``) of the pixels summed explicitly.
    coefficients : ndarray
        Their coefficients (``1 − w`` or ``w``).
    seconds : float
        Estimated cost of this plan (the cost model of the module).
    alternatives : dict
        Estimated cost of every strategy considered.
    """

    strategy: str
    rectangles: list
    pixels: np.ndarray
    coefficients: np.ndarray
    seconds: float
    alternatives: dict = field(default_factory=dict)

    @property
    def n_explicit(self) -> int:
        """Number of pixels whose footprints are summed explicitly."""
        return int(self.pixels.size)


def weighted_statistics(extended, b_used, shape, weights, *, spectrum=None, plan=None,
                        strategy=None, min_rectangle=None) -> SufficientStatistics:
    """Exact statistics ``G = XᵀWX``, ``c = XᵀWb``, ``bᵀWb``, ``n`` for any pixel weights.

    The same numbers as :func:`kernelfit.stats.statistics` with ``method='im2col'`` (to
    rounding), usually far faster: see the module docstring for the method and timings.

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
        The extended image ``P`` (finite).
    b_used : (Ph-kh+1, Pw-kw+1) ndarray
        The used rectangle of ``b``; must be finite where ``weights`` is non-zero.
    shape : (kh, kw)
    weights : ndarray like ``b_used``
        Non-negative pixel weights (0 drops a pixel, 1 is the unweighted case).
    spectrum : ExtendedSpectrum, optional
        The FFT of ``extended`` when the caller has it.
    plan : StatisticsPlan, optional
        A plan from :func:`plan_statistics` for these weights (it is made here otherwise).
    strategy, min_rectangle :
        Passed to :func:`plan_statistics` (tests use them to force each path).

    Returns
    -------
    SufficientStatistics
        In convolution orientation, like :func:`kernelfit.stats.statistics`.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import statistics
    >>> rng = np.random.default_rng(0)
    >>> P, b = rng.random((60, 60)), rng.random((56, 56))
    >>> w = np.ones_like(b); w[10:40, 5:50] = 0.0; w[0, 0] = 0.3
    >>> fast = weighted_statistics(P, b, (5, 5), w)
    >>> slow = statistics(P, b, (5, 5), weights=w, method="im2col")
    >>> bool(np.allclose(fast.gram, slow.gram, rtol=1e-12, atol=1e-12 * slow.gram.max()))
    True
    """
    P = np.ascontiguousarray(extended, dtype=np.float64)
    b = np.asarray(b_used, dtype=np.float64)
    shape = normalize_shape(shape)
    w = _check_weights(weights, b.shape)
    kh, kw = shape
    if b.shape != (P.shape[0] - kh + 1, P.shape[1] - kw + 1):
        raise ValueError(f"b_used has shape {b.shape}; expected "
                         f"{(P.shape[0] - kh + 1, P.shape[1] - kw + 1)}")
    if plan is None:
        plan = plan_statistics(w, P.shape, shape, strategy=strategy,
                               min_rectangle=min_rectangle)
    b = np.where(w != 0, b, 0.0)   # b may be NaN where the weight is 0
    wb = w * b
    if spectrum is None and (plan.strategy == "downdate" or _fft_worth_it(P.shape, shape)):
        spectrum = ExtendedSpectrum(P, shape)
    if spectrum is not None:
        c = spectrum.correlate_valid(wb).ravel()
    else:
        c = _correlate_direct(P, wb, shape)
    if plan.strategy == "downdate":
        G = gram_fft(P, shape, core_lag_sums=spectrum.core_lag_sums())
        sign = -1.0
    else:
        G = np.zeros((kh * kw, kh * kw))
        sign = 1.0
    for y0, y1, x0, x1, value in plan.rectangles:
        G += (sign * value) * gram_fft(P[y0:y1 + kh - 1, x0:x1 + kw - 1], shape)
    if plan.pixels.size:
        G += gram_of_pixels(P, shape, plan.pixels, sign * plan.coefficients)
    btb = float(np.sum(wb * b))
    n = int(np.count_nonzero(w))
    return SufficientStatistics(G[::-1, ::-1].copy(), c[::-1].copy(), btb, n, tuple(shape))


def plan_statistics(weights, image_shape, shape, *, strategy=None,
                    min_rectangle=None) -> StatisticsPlan:
    """Choose the cheapest exact way to assemble ``G_W`` for these weights.

    Parameters
    ----------
    weights : ndarray
        Pixel weights, shaped like the used rectangle of ``b``.
    image_shape : (Ph, Pw)
        Shape of the extended image.
    shape : (kh, kw)
    strategy : {None, 'downdate', 'direct'}
        Force one (``'downdate'`` needs an image at least twice the kernel).
    min_rectangle : int, optional
        Smallest rectangle (in pixels) worth an FFT Gram; default from the cost model
        (about 10,000 pixels for a 21×21 kernel).

    Returns
    -------
    StatisticsPlan
    """
    shape = normalize_shape(shape)
    w = _check_weights(weights, None)
    kh, kw = shape
    can_downdate = image_shape[0] - kh + 1 >= kh and image_shape[1] - kw + 1 >= kw
    if strategy not in (None, "downdate", "direct"):
        raise ValueError(f"strategy={strategy!r} must be None, 'downdate' or 'direct'")
    if strategy == "downdate" and not can_downdate:
        raise ValueError(f"strategy='downdate' needs an image at least twice the kernel {shape}")
    candidates = [s for s in ("downdate", "direct")
                  if (strategy or s) == s and (s == "direct" or can_downdate)]
    tiles = _tile_extremes(w, shape)
    options = []
    for name in candidates:
        # 'downdate' works on the pixels with w ≠ 1 (coefficient 1 − w), 'direct' on those
        # with w ≠ 0 (coefficient w).
        neutral = 1.0 if name == "downdate" else 0.0
        rectangles = _constant_rectangles(w, tiles, neutral, shape, min_rectangle)
        n_rest = int(np.count_nonzero(w != neutral)) - sum(
            (y1 - y0) * (x1 - x0) for y0, y1, x0, x1, _ in rectangles)
        seconds = _pixels_seconds(n_rest, shape)
        seconds += sum(_gram_fft_seconds((y1 - y0 + kh - 1) * (x1 - x0 + kw - 1), shape)
                       for y0, y1, x0, x1, _ in rectangles)
        if name == "downdate":
            seconds += _gram_fft_seconds(int(np.prod(image_shape)), shape)
        options.append((seconds, name, neutral, rectangles))
    seconds, name, neutral, rectangles = min(options, key=lambda option: option[0])
    rest = w != neutral
    for y0, y1, x0, x1, _ in rectangles:
        rest[y0:y1, x0:x1] = False
    pixels = np.flatnonzero(rest)
    values = w.ravel()[pixels]
    coefficients = 1.0 - values if name == "downdate" else values
    rectangles = [(y0, y1, x0, x1, (1.0 - v) if name == "downdate" else v)
                  for y0, y1, x0, x1, v in rectangles]
    return StatisticsPlan(name, rectangles, pixels, coefficients, seconds,
                          {option[1]: option[0] for option in options})


def gram_of_pixels(extended, shape, pixels, coefficients=None) -> np.ndarray:
    """``Σ_i a_i x_i x_iᵀ`` over the given output pixels, in flipped-kernel (``u``) order.

    ``x_i[u] = P[i + u]`` is the footprint of output pixel ``i`` (flat index into the
    'valid' output grid).  Footprints are gathered in chunks (bounded memory) and each chunk
    costs one BLAS product.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.arange(20.0).reshape(4, 5)
    >>> G = gram_of_pixels(P, (2, 2), np.array([0, 5]))
    >>> x0, x1 = P[0:2, 0:2].ravel(), P[1:3, 1:3].ravel()
    >>> bool(np.allclose(G, np.outer(x0, x0) + np.outer(x1, x1)))
    True
    """
    P = np.ascontiguousarray(extended, dtype=np.float64)
    kh, kw = normalize_shape(shape)
    Wo = P.shape[1] - kw + 1
    iy, ix = np.divmod(np.asarray(pixels, dtype=np.int64).ravel(), Wo)
    base = iy * P.shape[1] + ix
    if coefficients is None:
        return _sum_of_outer_products(P, (kh, kw), base)
    coef = np.broadcast_to(np.asarray(coefficients, dtype=np.float64), base.shape)
    if coef.size and np.all(coef == coef.flat[0]):
        # One value (a 0/1 mask): no products with the coefficients at all.
        return float(coef.flat[0]) * _sum_of_outer_products(P, (kh, kw), base)
    # Scale the footprints by √|a| so that each chunk is a symmetric rank-k update (X Xᵀ,
    # which BLAS does in half the time of a general product); signs go to separate sums.
    positive, negative = coef > 0, coef < 0
    G = _sum_of_outer_products(P, (kh, kw), base[positive], np.sqrt(coef[positive]))
    if negative.any():
        G -= _sum_of_outer_products(P, (kh, kw), base[negative], np.sqrt(-coef[negative]))
    return G


def _sum_of_outer_products(P, shape, base, root=None):
    """``Σ (r_i x_i)(r_i x_i)ᵀ`` for footprints starting at flat offsets ``base`` of ``P``."""
    kh, kw = shape
    p = kh * kw
    offsets = (np.arange(kh)[:, None] * P.shape[1] + np.arange(kw)[None, :]).ravel()
    flat = P.ravel()
    G = np.zeros((p, p))
    chunk = int(max(64, min(8192, _CHUNK_BYTES // (8 * p))))
    buffer = np.empty((p, min(chunk, max(base.size, 1))))
    for start in range(0, base.size, chunk):
        rows = base[start:start + chunk]
        X = buffer if rows.size == buffer.shape[1] else np.empty((p, rows.size))
        # One gather per kernel offset: each reads a sorted, cache-friendly set of pixels
        # (measured 2-3× faster than one gather of the whole p × chunk index array).
        for u in range(p):
            np.take(flat, rows + offsets[u], out=X[u])
        if root is not None:
            X *= root[start:start + chunk]
        G += X @ X.T      # numpy recognises X @ X.T and calls the symmetric update
    return G


def _check_weights(weights, b_shape):
    w = np.asarray(weights, dtype=np.float64)
    if b_shape is not None and w.shape != tuple(b_shape):
        raise ValueError(f"weights has shape {w.shape}; expected b_used's {tuple(b_shape)}")
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    return w


def _fft_worth_it(image_shape, shape) -> bool:
    kh, kw = shape
    n_out = (image_shape[0] - kh + 1) * (image_shape[1] - kw + 1)
    return n_out * kh * kw > 1e6


def _correlate_direct(P, wb, shape):
    """``c[u] = Σ_i wb[i]·P[i+u]`` by explicit sums (small images)."""
    kh, kw = shape
    Ho, Wo = wb.shape
    return np.array([np.vdot(wb, P[uy:uy + Ho, ux:ux + Wo])
                     for uy in range(kh) for ux in range(kw)])


def _pixels_seconds(n, shape) -> float:
    p = shape[0] * shape[1]
    return n * (_SECONDS_PER_FMA * p * p + _SECONDS_PER_GATHER * p + _SECONDS_PER_ROW)


def _gram_fft_seconds(n_pixels, shape) -> float:
    p = shape[0] * shape[1]
    return _GRAM_FFT_FIXED + _GRAM_FFT_PER_P2 * p * p + _GRAM_FFT_PER_PIXEL * n_pixels


def _tile_extremes(w, shape):
    """``(tile, low, high)``: the tile side and each tile's minimum and maximum weight."""
    kh, kw = shape
    Ho, Wo = w.shape
    tile = int(max(8, min(kh, kw), -(-max(Ho, Wo) // 128)))
    ny, nx = Ho // tile, Wo // tile
    if ny == 0 or nx == 0:
        return tile, np.zeros((0, 0)), np.zeros((0, 0))
    blocks = w[:ny * tile, :nx * tile].reshape(ny, tile, nx, tile)
    low = blocks.min(axis=3).min(axis=1)
    high = blocks.max(axis=3).max(axis=1)
    return tile, low, high


def _constant_rectangles(w, tiles, neutral, shape, min_rectangle=None):
    """Disjoint rectangles of constant weight ``≠ neutral`` worth an FFT Gram.

    Tiles of ``T × T`` pixels of uniform weight form a coarse grid; the largest rectangle of
    uniform tiles of one weight is taken repeatedly, grown pixel by pixel to the true edge of
    the region, until what is left is smaller than ``min_rectangle`` pixels (there, summing
    footprints is cheaper than the FFT Gram's fixed cost).  Each rectangle is at least the
    kernel in both directions (the FFT Gram needs a core).

    Returns a list of ``(y0, y1, x0, x1, weight)``.
    """
    kh, kw = shape
    Ho, Wo = w.shape
    tile, low, high = tiles
    if min_rectangle is None:
        # Break-even of an FFT Gram against explicit sums (the sub-image's extra border
        # pixels counted at their FFT cost).
        per_pixel = _pixels_seconds(1, shape) - _GRAM_FFT_PER_PIXEL
        min_rectangle = int(np.ceil(_gram_fft_seconds(0, shape) / max(per_pixel, 1e-12)))
    rectangles = []
    if low.size == 0:
        return rectangles
    uniform = (low == high) & (low != neutral)
    if not uniform.any():
        return rectangles
    values, counts = np.unique(low[uniform], return_counts=True)
    min_tiles_y = -(-kh // tile)
    min_tiles_x = -(-kw // tile)
    covered = None
    for value in values[counts * tile * tile >= min_rectangle]:
        grid = uniform & (low == value)
        while True:
            found = _largest_rectangle(grid, min_tiles_y, min_tiles_x)
            if found is None:
                break
            r0, r1, c0, c1 = found
            if (r1 - r0) * (c1 - c0) * tile * tile < min_rectangle:
                break
            if covered is None:
                covered = np.zeros((Ho, Wo), bool)
            y0, y1, x0, x1 = _grow(w, covered, value,
                                   r0 * tile, r1 * tile, c0 * tile, c1 * tile)
            covered[y0:y1, x0:x1] = True
            rectangles.append((y0, y1, x0, x1, float(value)))
            # Tiles touched by the grown rectangle are no longer available.
            grid[y0 // tile:-(-y1 // tile), x0 // tile:-(-x1 // tile)] = False
    return rectangles


def _largest_rectangle(grid, min_h, min_w):
    """Largest all-True rectangle ``(r0, r1, c0, c1)`` of a small boolean grid, at least
    ``min_h × min_w``, or None.  ``O(ny·nx²)`` vectorised work (the grid is ≤ 128²)."""
    ny, nx = grid.shape
    heights = np.zeros((ny, nx), np.int64)
    run = np.zeros(nx, np.int64)
    for r in range(ny):
        run = np.where(grid[r], run + 1, 0)
        heights[r] = run
    best, best_area = None, 0
    for c0 in range(nx):
        lowest = np.minimum.accumulate(heights[:, c0:], axis=1)  # [r, width - 1]
        widths = np.arange(1, nx - c0 + 1)
        area = np.where((lowest >= min_h) & (widths >= min_w), lowest * widths, 0)
        flat = int(np.argmax(area))
        if area.flat[flat] > best_area:
            r, j = divmod(flat, area.shape[1])
            best_area = int(area.flat[flat])
            best = (r - int(lowest[r, j]) + 1, r + 1, c0, c0 + j + 1)
    return best


def _grow(w, covered, value, y0, y1, x0, x1):
    """Extend a rectangle of constant weight ``value`` side by side while the new row or
    column is all ``value`` and not yet covered."""
    Ho, Wo = w.shape

    def free(ys, xs):
        return bool(np.all(w[ys, xs] == value) and not np.any(covered[ys, xs]))

    grown = True
    while grown:
        grown = False
        if y0 > 0 and free(y0 - 1, slice(x0, x1)):
            y0, grown = y0 - 1, True
        if y1 < Ho and free(y1, slice(x0, x1)):
            y1, grown = y1 + 1, True
        if x0 > 0 and free(slice(y0, y1), x0 - 1):
            x0, grown = x0 - 1, True
        if x1 < Wo and free(slice(y0, y1), x1):
            x1, grown = x1 + 1, True
    return y0, y1, x0, x1
