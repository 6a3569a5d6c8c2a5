"""(moved from kernelfit.variation)"""

from __future__ import annotations

import dataclasses
from math import comb

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from ..core import tiling
from ..core.forward import ExtendedSpectrum
from ..core.varying import monomial_powers, scaled
from .background import BackgroundTerms, background_terms
from .gram import (
    SufficientStatistics,
    _band_indices,
    _band_lag_sums,
    _rectangle_sums,
    _scatter_lag,
)

# Explicit (im2col) sums cost N·(p·T)² multiply-adds; below this the FFT set-up does not pay
# (the same threshold as kernelfit.stats.choose_method).
_EXPLICIT_WORK_LIMIT = 3e7


_CHUNK_BYTES = 32 * 2**20


def _common_frame(pairs, degree) -> tuple[int, int]:
    """The shape of every ``b`` (the coordinates are its pixel indices, so they must agree)."""
    frames = {tuple(pair.b_shape) for pair in pairs}
    if len(frames) > 1:
        raise ValueError(f"variation= needs every b to have the same shape (the kernel is a "
                         f"function of the pixel position); got {sorted(frames)}")
    frame = frames.pop()
    used = [pair.geometry.used_shape for pair in pairs]
    if degree >= min(min(u) for u in used):
        raise ValueError(f"variation={degree}: the used part of b is {used[0]} pixels, too "
                         "few positions for a polynomial of that degree")
    return frame


def varying_statistics(pair, shape, degree, *, frame, method=None) -> SufficientStatistics:
    """Statistics of the extended design: ``shape`` ``(T, kh, kw)``, entries in C order.

    ``method``: ``None`` chooses, ``'fft'`` or ``'im2col'`` force one (tests, benchmarks).
    """
    kh, kw = shape
    powers = monomial_powers(degree)
    G, c = None, None
    for rows, cols in _tiles(pair.b_used.shape, shape):
        # A tile of b's used rectangle and its footprint in the extended image: the sums
        # over output pixels add up, and large images never hold T whole-image channels.
        channels = input_channels(pair, shape, powers, frame, rows=rows, cols=cols)
        use = None if pair.use is None else pair.use[rows, cols]
        G_tile, c_tile = _multichannel_statistics(channels, pair.b_used[rows, cols], shape,
                                                  use, method)
        G, c = (G_tile, c_tile) if G is None else (G + G_tile, c + c_tile)
    # Flipped (correlation) order u -> convolution order j, within every term's block.
    p = kh * kw
    order = (np.arange(len(powers))[:, None] * p + np.arange(p)[None, ::-1]).ravel()
    G, c = G[np.ix_(order, order)], c[order]
    B = translation_matrix(shape, pair.geometry.center, powers, frame)
    return SufficientStatistics(B.T @ G @ B, B.T @ c, float(np.sum(pair.b_used ** 2)),
                                pair.n_used, (len(powers), kh, kw))


def varying_background_terms(pair, shape, degree, frame, background) -> BackgroundTerms:
    """:func:`kernelfit.background.background_terms` for the extended design: ``XᵀWT`` has
    one row per coefficient of every term ``k_t`` (``X_ext = X_T·B``, so it is
    ``Bᵀ·X_TᵀWT``, ``X_TᵀWT`` the correlations of each channel ``m_t ⊙ P`` with ``W·T_s``)."""
    plain = background_terms(pair, shape, background)
    powers = monomial_powers(degree)
    images = [plain.basis.image(s) if plain.weights is None
              else plain.weights * plain.basis.image(s) for s in range(len(plain.basis))]
    # The constant term's channel is P itself, whose correlations background_terms made.
    blocks = [plain.cross]
    for channel in input_channels(pair, shape, powers[1:], frame):
        spectrum = ExtendedSpectrum(channel, shape)
        # correlate_valid is in flipped order: flip back to convolution order.
        blocks.append(np.stack([spectrum.correlate_valid(image)[::-1, ::-1].ravel()
                                for image in images], axis=1))
    cross = translation_matrix(shape, pair.geometry.center, powers, frame).T @ np.vstack(blocks)
    return dataclasses.replace(plain, cross=cross,
                               kernel_shape=(len(powers),) + tuple(shape))


def input_channels(pair, shape, powers, frame, *, rows=slice(None),
                   cols=slice(None)) -> list[np.ndarray]:
    """``a_t = m_t(ζ) ⊙ P``: the extended image times each term at the coordinate ``ζ`` (in
    ``b``'s frame) of the output pixel each of its pixels lands on through the kernel centre.

    ``rows``, ``cols`` (slices of ``b``'s used rectangle, step 1) restrict it to the part of
    ``P`` under those output pixels.
    """
    geometry = pair.geometry
    (kh, kw), (cy, cx) = shape, geometry.center
    oy = geometry.used[0].indices(frame[0])[0]
    ox = geometry.used[1].indices(frame[1])[0]
    Ph, Pw = pair.extended.shape
    y0, y1, _ = rows.indices(Ph - kh + 1)
    x0, x1, _ = cols.indices(Pw - kw + 1)
    sy = scaled(np.arange(y0, y1 + kh - 1) - (kh - 1) + cy + oy, frame[0])
    sx = scaled(np.arange(x0, x1 + kw - 1) - (kw - 1) + cx + ox, frame[1])
    P = pair.extended[y0:y1 + kh - 1, x0:x1 + kw - 1]
    return [(sy ** p)[:, None] * (sx ** q)[None, :] * P for p, q in powers]


def _tiles(b_shape, shape):
    """``(rows, cols)`` slices cutting ``b``'s used rectangle into tiles of about
    ``tiling.STATISTICS_TILE``² pixels when it has more than ``tiling.TILED_ABOVE`` (as the plain statistics do,
    :mod:`kernelfit.stats`), else the whole rectangle."""
    if b_shape[0] * b_shape[1] <= tiling.TILED_ABOVE:
        return [(slice(0, b_shape[0]), slice(0, b_shape[1]))]
    return tiling.tile_slices(b_shape, tiling.STATISTICS_TILE)


def translation_matrix(shape, center, powers, frame) -> np.ndarray:
    """``B`` with ``X_ext = X_T · B``: ``m_s(ζ + δ_j) = Σ_t M_j[s, t] m_t(ζ)``, ``δ_j`` the
    scaled offset ``j − center`` of kernel pixel ``j``; ``B[t·p + j, s·p + j] = M_j[s, t]``."""
    kh, kw = shape
    p, T = kh * kw, len(powers)
    gy, gx = (2.0 / (n - 1) if n > 1 else 0.0 for n in frame)
    jy, jx = np.divmod(np.arange(p), kw)
    dy, dx = (jy - center[0]) * gy, (jx - center[1]) * gx
    B = np.zeros((T * p, T * p))
    diagonal = np.arange(p)
    for s, (ps, qs) in enumerate(powers):
        for t, (pt, qt) in enumerate(powers):
            if pt <= ps and qt <= qs:
                value = comb(ps, pt) * comb(qs, qt) * dy ** (ps - pt) * dx ** (qs - qt)
                B[t * p + diagonal, s * p + diagonal] = value
    return B


def _multichannel_statistics(channels, b, shape, use, method):
    """``Σ_i x_i x_iᵀ`` and ``Σ_i b_i x_i`` over the used pixels, ``x_i`` the footprints of
    every channel concatenated (flipped order ``t·p + u``)."""
    T, p = len(channels), shape[0] * shape[1]
    n_kept = b.size if use is None else int(use.sum())
    has_core = all(n - k + 1 >= k for n, k in zip(channels[0].shape, shape))
    if method is None:
        work = b.size * (T * p) ** 2
        method = "fft" if has_core and work > _EXPLICIT_WORK_LIMIT \
            and 2 * n_kept > b.size else "im2col"
    if method == "im2col":
        return _explicit_sums(channels, b, shape, use)
    if not has_core:
        raise ValueError(f"method='fft' needs an image at least twice the kernel {shape}")
    G, c = _fft_sums(channels, b, shape)
    if use is not None:
        # b is 0 at the dropped pixels, so only the Gram keeps their contribution.
        G -= _explicit_sums(channels, b, shape, ~use)[0]
    return G, c


def _explicit_sums(channels, b, shape, pixels):
    """im2col sums over ``pixels`` (bool like ``b``, ``None`` = all), in bounded chunks."""
    kh, kw = shape
    T, p = len(channels), kh * kw
    windows = [sliding_window_view(channel, shape) for channel in channels]
    G, c = np.zeros((T * p, T * p)), np.zeros(T * p)
    Ho, Wo = b.shape
    step = max(1, _CHUNK_BYTES // (8 * T * p * Wo))
    for r0 in range(0, Ho, step):
        rows = slice(r0, min(Ho, r0 + step))
        keep = (slice(None),) if pixels is None else (pixels[rows],)
        X = np.concatenate([w[rows][keep].reshape(-1, p) for w in windows], axis=1)
        G += X.T @ X
        c += X.T @ b[rows][keep].ravel()
    return G, c


def _fft_sums(channels, b, shape):
    """Every cross-Gram block by :func:`cross_gram`, ``c`` by one correlation per channel."""
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    T, p = len(channels), kh * kw
    Ph, Pw = channels[0].shape
    fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in (Ph, Pw))
    hats = [scipy.fft.rfft2(channel, fft_shape) for channel in channels]
    b_hat = np.conj(scipy.fft.rfft2(b, fft_shape))
    # Lags stay within the image (b and the core are inset by the kernel), so the transform
    # length P.shape has no wrap-around (see kernelfit.forward.ExtendedSpectrum).
    c = np.concatenate([scipy.fft.irfft2(b_hat * hat, fft_shape)[:kh, :kw].ravel()
                        for hat in hats])
    core = (slice(ty, Ph - ty), slice(tx, Pw - tx))
    G = np.empty((T * p, T * p))
    for s in range(T):
        core_hat = np.conj(scipy.fft.rfft2(channels[s][core], fft_shape))
        for t in range(s, T):
            lag_sums = scipy.fft.irfft2(core_hat * hats[t], fft_shape)[:2 * ty + 1, :2 * tx + 1]
            block = cross_gram(channels[s], channels[t], shape, core_lag_sums=lag_sums)
            G[s * p:(s + 1) * p, t * p:(t + 1) * p] = block
            G[t * p:(t + 1) * p, s * p:(s + 1) * p] = block.T
    return G, c


def cross_gram(P1, P2, shape, *, core_lag_sums) -> np.ndarray:
    """``C[u, v] = Σ_i P1[i+u]·P2[i+v]`` (flipped-kernel order), exactly, for two images of
    one shape; ``core_lag_sums[d + t] = Σ_{z in core} P1(z)·P2(z+d)``.

    The algorithm of :func:`kernelfit.stats.gram_fft` with the two factors told apart: core
    lag sums, band rows and columns by batched 1-D correlations, corners directly, then the
    sums over every moving rectangle by cumulative sums.
    """
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    row_band_sums = _band_lag_sums(P1, ty, tx, P2)                       # [m, dy, dx]
    col_band_sums = _band_lag_sums(P1.T, tx, ty, P2.T).transpose(0, 2, 1)  # [n, dy, dx]
    rows, cols = _band_indices(P1.shape[0], ty), _band_indices(P1.shape[1], tx)
    P2_padded = np.pad(P2, ((ty, ty), (tx, tx)))
    band_r = np.r_[0:ty, ty + 1:2 * ty + 1]
    band_s = np.r_[0:tx, tx + 1:2 * tx + 1]
    p = kh * kw
    C = np.zeros(p * p)
    dx_all = np.arange(-tx, tx + 1)
    corner_values = P1[np.ix_(rows, cols)][:, :, None]
    for iy, dy in enumerate(range(-ty, ty + 1)):
        neighbours = P2_padded[(rows + dy + ty)[:, None, None],
                               (cols[:, None] + dx_all[None, :] + tx)[None]]   # [m, n, dx]
        Q = np.empty((2 * tx + 1, 2 * ty + 1, 2 * tx + 1))
        Q[:, ty, tx] = core_lag_sums[iy]
        Q[:, band_r, tx] = row_band_sums[:, iy, :].T
        Q[:, ty, band_s] = col_band_sums[:, iy, :].T
        Q[:, band_r[:, None], band_s[None, :]] = (corner_values * neighbours).transpose(2, 0, 1)
        F = _rectangle_sums(_rectangle_sums(Q, axis=1), axis=2)
        _scatter_lag(C, F, dy, kh, kw)
    return C.reshape(p, p)
