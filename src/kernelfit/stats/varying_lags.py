"""Cross-Grams of the position-weighted channels ``a_t = m_t ⊙ P``, exactly, by blocks.

The statistics of a spatially varying kernel (:mod:`kernelfit.stats.varying`) need, for every
pair of terms ``s ≤ t``, the cross-Gram ``C_st[u, v] = Σ_{i∈R} a_s[i+u]·a_t[i+v]`` (flipped
kernel order, ``R`` the used output rectangle) and ``c_t[u] = Σ_i b[i]·a_t[i+u]``.  As in
:func:`kernelfit.stats.gram.gram_fft`, ``C_st[u, u+d]`` is a lag sum over a rectangle that
moves with ``u``: the *core* common to every rectangle, plus bands at most ``kh−1`` rows or
``kw−1`` columns thick.

Core, by blocks in frequency space
    The core lag sums ``S_st(d) = Σ_{z∈core} a_s(z)·a_t(z+d)`` (``|d| < k``) and ``c_t`` are
    sums over blocks of output positions.  One block's share is a correlation of the block of
    ``a_s`` (or ``b``) with the block of ``a_t`` widened by the kernel's lags; with an FFT
    length of at least the block plus twice the lags, no wrap-around reaches a needed lag, so
    the blocks' cross-spectra add in frequency space and one small inverse transform per pair
    ends it.  Per block: ``2T + 1`` forward transforms of a few hundred pixels a side (they
    stay in cache, several times faster per pixel than whole-image transforms) and
    ``T(T+1)/2 + T`` products; the channels are made block by block, never whole.

Bands, by monomials
    On a band row ``y`` the channels are ``m_s(y)``-scaled rows of ``P`` weighted by a
    monomial in ``x``, and ``m_t`` at ``x + dx`` is a binomial sum of monomials at ``x``.  So
    every pair's band lag sums are combinations of ``Q_n(y, dy, dx) = Σ_x ζ_x(x)^n
    P(y, x)·P(y+dy, x+dx)``, ``n ≤ 2·degree``: ``2d + 1`` batched 1-D correlations instead of
    one per pair (columns likewise).  Band corners are summed directly.

The rectangle sums then assemble each pair's cross-Gram (:func:`cross_gram`).
"""

from __future__ import annotations

from math import comb

import numpy as np
import scipy.fft

from ..core.varying import scaled
from .gram import _band_indices, _rectangle_sums, _scatter_lag

# The FFT length of a block, lags included (see BENCHMARKS.md for the measurements that
# chose it).  Read at call time, so tests may lower it.
BLOCK_FFT_LENGTH = 256


class ChannelGeometry:
    """Where the channels ``a_t = m_t(ζ) ⊙ P`` of a prepared pair live.

    ``ζ`` is the coordinate (scaled over ``b``'s frame) of the output pixel that an input pixel
    lands on through the kernel centre.  ``ypow[p]``, ``xpow[q]``: ``ζ_y^p`` of every row of
    ``P`` and ``ζ_x^q`` of every column, ``p, q ≤ 2·degree`` (products of two terms need
    twice the degree); ``gy``, ``gx``: the change of ``ζ`` per pixel.
    """

    def __init__(self, pair, shape, powers, frame):
        geometry = pair.geometry
        (kh, kw), (cy, cx) = shape, geometry.center
        oy = geometry.used[0].indices(frame[0])[0]
        ox = geometry.used[1].indices(frame[1])[0]
        Ph, Pw = pair.extended.shape
        self.shape, self.powers = tuple(shape), list(powers)
        self.zy = scaled(np.arange(Ph) - (kh - 1) + cy + oy, frame[0])
        self.zx = scaled(np.arange(Pw) - (kw - 1) + cx + ox, frame[1])
        self.gy, self.gx = (2.0 / (n - 1) if n > 1 else 0.0 for n in frame)
        top = 2 * max((max(p, q) for p, q in self.powers), default=0)
        self.ypow = self.zy[None, :] ** np.arange(top + 1)[:, None]
        self.xpow = self.zx[None, :] ** np.arange(top + 1)[:, None]

    def channels(self, P, rows, cols, out=None):
        """The channels over ``P[rows, cols]`` (slices of ``P``), ``(T, h, w)``."""
        block = P[rows, cols]
        if out is None:
            out = np.empty((len(self.powers),) + block.shape)
        for t, (p, q) in enumerate(self.powers):
            np.multiply(self.ypow[p, rows, None] * block, self.xpow[q, None, cols], out=out[t])
        return out


# ---------------------------------------------------------------------------------------------
# Core lag sums and c, by blocks
# ---------------------------------------------------------------------------------------------


def block_grid(n, halo, fft_length):
    """``(starts, width, transform length)`` cutting ``n`` positions into near-equal blocks
    whose transform, ``halo`` each side included, has length ``fft_length`` (one block, and
    the smallest fast length, when the whole axis fits)."""
    if n + 2 * halo <= fft_length:
        return range(0, n, n), n, scipy.fft.next_fast_len(n + 2 * halo, real=True)
    width = max(fft_length - 2 * halo, 1)
    width = -(-n // -(-n // width))
    return range(0, n, width), width, max(fft_length, width + 2 * halo)


def core_lag_sums(P, b, channels: ChannelGeometry):
    """``(S, c)``: ``S[t][s]`` the core lag sums of ``a_s`` with ``a_t`` (``s ≤ t``, indexed
    ``d + (kh−1, kw−1)``) and ``c[t]`` the correlation ``Σ_i b[i]·a_t[i+u]`` (flipped order).

    ``b`` is the used rectangle (``P`` less ``kh−1`` rows and ``kw−1`` columns); the core is
    its rows ``≥ kh−1`` and columns ``≥ kw−1``.
    """
    kh, kw = channels.shape
    ty, tx = kh - 1, kw - 1
    Ho, Wo = b.shape
    T = len(channels.powers)
    row_starts, ly, Ny = block_grid(Ho, ty, BLOCK_FFT_LENGTH)
    col_starts, lx, Nx = block_grid(Wo, tx, BLOCK_FFT_LENGTH)
    # acc[t][f]: Σ_blocks conj(F_f)·G_t with F = (b, a_0, …, a_t) on the block and G_t = a_t
    # on the block widened by the lags.
    acc = [np.zeros((t + 2, Ny, Nx // 2 + 1), complex) for t in range(T)]
    g = np.zeros((T, Ny, Nx))
    f = np.zeros((T + 1, Ny, Nx))
    product = np.empty((T + 1, Ny, Nx // 2 + 1), complex)
    for y0 in row_starts:
        y1 = min(y0 + ly, Ho)
        for x0 in col_starts:
            x1 = min(x0 + lx, Wo)
            _fill_block(P, b, channels, g, f, (y0, y1), (x0, x1))
            G = scipy.fft.rfft2(g)
            F = scipy.fft.rfft2(f)
            np.conjugate(F, out=F)
            for t in range(T):
                np.multiply(F[:t + 2], G[t], out=product[:t + 2])
                acc[t] += product[:t + 2]
    S, c = [], []
    for t in range(T):
        corr = scipy.fft.irfft2(acc[t], (Ny, Nx))
        c.append(corr[0, ty:ty + kh, tx:tx + kw])
        S.append(list(corr[1:, :2 * ty + 1, :2 * tx + 1]))
    return S, c


def _fill_block(P, b, channels, g, f, rows, cols):
    """``g``: the channels on the block widened by the lags (zero outside ``P``), placed so
    that index 0 is the block start minus the lags; ``f``: ``b`` and the channels on the
    block's part of the core, placed at index 0 (zero elsewhere)."""
    ty, tx = channels.shape[0] - 1, channels.shape[1] - 1
    (y0, y1), (x0, x1) = rows, cols
    Ph, Pw = P.shape
    gy0, gy1 = max(y0 - ty, 0), min(y1 + ty, Ph)
    gx0, gx1 = max(x0 - tx, 0), min(x1 + tx, Pw)
    oy, ox = gy0 - (y0 - ty), gx0 - (x0 - tx)
    g.fill(0.0)
    channels.channels(P, slice(gy0, gy1), slice(gx0, gx1),
                      out=g[:, oy:oy + gy1 - gy0, ox:ox + gx1 - gx0])
    f.fill(0.0)
    f[0, :y1 - y0, :x1 - x0] = b[y0:y1, x0:x1]
    cy0, cx0 = max(y0, ty), max(x0, tx)          # the core starts kh−1 rows in
    if cy0 < y1 and cx0 < x1:
        f[1:, cy0 - y0:y1 - y0, cx0 - x0:x1 - x0] = \
            g[:, cy0 - y0 + ty:y1 - y0 + ty, cx0 - x0 + tx:x1 - x0 + tx]


# ---------------------------------------------------------------------------------------------
# Bands
# ---------------------------------------------------------------------------------------------


def _strip(n, t):
    """Indices of the lines within ``2t`` of either end of an axis of ``n`` (all when the
    two ends meet): the band lines and every line they reach at lags ``< t``."""
    return np.arange(n) if n < 4 * t else np.r_[0:2 * t, n - 2 * t:n]


def band_sums(P, channels: ChannelGeometry):
    """``(rows, cols, row_strip, col_strip)``: every pair's band lag sums, ``rows[t][s]``
    ``[m, dy, dx]`` over band rows (as :func:`kernelfit.stats.gram._band_lag_sums`) and
    ``cols[t][s]`` ``[n, dy, dx]`` over band columns, and the rows and columns of ``P`` the
    strips hold."""
    kh, kw = channels.shape
    ty, tx = kh - 1, kw - 1
    Ph, Pw = P.shape
    strip_rows, strip_cols = _strip(Ph, ty), _strip(Pw, tx)
    row_strip = P[strip_rows]
    col_strip = P[:, strip_cols]
    Qx = _weighted_band_lag_sums(row_strip, channels.xpow, ty, tx)       # [n, m, dy, dx]
    Qy = _weighted_band_lag_sums(col_strip.T, channels.ypow, tx, ty).transpose(0, 1, 3, 2)
    band_rows = strip_rows[_band_indices(len(strip_rows), ty)]
    band_cols = strip_cols[_band_indices(len(strip_cols), tx)]
    dy, dx = np.arange(-ty, ty + 1), np.arange(-tx, tx + 1)
    rows, cols = [], []
    for t, (pt, qt) in enumerate(channels.powers):
        rows.append([_pair_band(Qx, (channels.zy[band_rows], channels.gy * dy, ps, pt),
                                (channels.gx * dx, qs, qt), across_axis=1)
                     for ps, qs in channels.powers[:t + 1]])
        cols.append([_pair_band(Qy, (channels.zx[band_cols], channels.gx * dx, qs, qt),
                                (channels.gy * dy, ps, pt), across_axis=2)
                     for ps, qs in channels.powers[:t + 1]])
    return rows, cols, strip_rows, strip_cols


def _pair_band(Q, across, along, *, across_axis):
    """One pair's band lag sums ``[line, dy, dx]`` from the monomial ones ``Q[n]``.

    ``across = (ζ of the band lines, ζ's change at each lag across, p_s, p_t)``: the channels
    contribute ``ζ(line)^p_s · ζ(line + lag)^p_t``.  ``along = (ζ's change at each lag along,
    q_s, q_t)``: ``ζ^q_s · (ζ + δ)^q_t = Σ_k C(q_t, k)·δ^(q_t−k)·ζ^(q_s+k)``, a combination of
    ``Q[q_s + k]``.  ``across_axis``: 1 for band rows (lag ``dy`` across), 2 for columns.
    """
    z, step, p_s, p_t = across
    delta, q_s, q_t = along
    factor = z[:, None] ** p_s * (z[:, None] + step[None, :]) ** p_t      # [line, lag across]
    along_shape = (1, 1, -1) if across_axis == 1 else (1, -1, 1)
    total = sum(comb(q_t, k) * (delta ** (q_t - k)).reshape(along_shape) * Q[q_s + k]
                for k in range(q_t + 1))
    return total * (factor[:, :, None] if across_axis == 1 else factor[:, None, :])


def _weighted_band_lag_sums(S, weights, ty, tx):
    """``Q[n, m, dy, dx] = Σ_{x in core columns} weights[n, x]·S(y_m, x)·S(y_m+dy, x+dx)``
    for the band rows ``y_m`` of ``S``; rows outside ``S`` count as zero.

    One batched 1-D FFT correlation per ``dy`` for all weights (cf.
    :func:`kernelfit.stats.gram._band_lag_sums`, one weight).
    """
    Sh, Sw = S.shape
    rows = _band_indices(Sh, ty)
    n_fft = scipy.fft.next_fast_len(Sw, real=True)
    weighted = np.zeros((len(weights), len(rows), Sw))
    weighted[:, :, tx:Sw - tx] = weights[:, None, tx:Sw - tx] * S[rows, tx:Sw - tx][None]
    band_hat = np.conj(scipy.fft.rfft(weighted, n_fft, axis=-1))      # [n, m, k]
    spectra = np.zeros((Sh + 1, n_fft // 2 + 1), complex)
    spectra[:-1] = scipy.fft.rfft(S, n_fft, axis=1)
    lags = np.arange(-tx, tx + 1) % n_fft
    out = np.empty((len(weights), len(rows), 2 * ty + 1, 2 * tx + 1))
    for iy, dy in enumerate(range(-ty, ty + 1)):
        neighbour = rows + dy
        neighbour = np.where((neighbour >= 0) & (neighbour < Sh), neighbour, Sh)
        corr = scipy.fft.irfft(band_hat * spectra[neighbour][None], n_fft, axis=-1)
        out[:, :, iy, :] = corr[..., lags]
    return out


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


def cross_gram(P1, P2, shape, *, core_lag_sums, row_band_sums, col_band_sums) -> np.ndarray:
    """``C[u, v] = Σ_i P1[i+u]·P2[i+v]`` (flipped-kernel order), exactly, for two channels of
    one image: ``core_lag_sums[d + t] = Σ_{z in core} P1(z)·P2(z+d)``, the band sums of
    :func:`band_sums`, and ``P1``, ``P2`` on the rows of :func:`_strip` only (the corners are
    read from them).

    The algorithm of :func:`kernelfit.stats.gram_fft` with the two factors told apart: core
    lag sums, band rows and columns, corners directly, then the sums over every moving
    rectangle by cumulative sums.
    """
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    rows, cols = _band_indices(P1.shape[0], ty), _band_indices(P1.shape[1], tx)
    P2_padded = np.pad(P2, ((ty, ty), (tx, tx)))
    band_r = np.r_[0:ty, ty + 1:2 * ty + 1]
    band_s = np.r_[0:tx, tx + 1:2 * tx + 1]
    p = kh * kw
    C = np.zeros(p * p)
    dx_all = np.arange(-tx, tx + 1)
    corner_values = P1[np.ix_(rows, cols)][:, :, None]
    column_index = (cols[:, None] + dx_all[None, :] + tx)[None]
    for iy, dy in enumerate(range(-ty, ty + 1)):
        neighbours = P2_padded[(rows + dy + ty)[:, None, None], column_index]   # [m, n, dx]
        Q = np.empty((2 * tx + 1, 2 * ty + 1, 2 * tx + 1))
        Q[:, ty, tx] = core_lag_sums[iy]
        Q[:, band_r, tx] = row_band_sums[:, iy, :].T
        Q[:, ty, band_s] = col_band_sums[:, iy, :].T
        Q[:, band_r[:, None], band_s[None, :]] = (corner_values * neighbours).transpose(2, 0, 1)
        F = _rectangle_sums(_rectangle_sums(Q, axis=1), axis=2)
        _scatter_lag(C, F, dy, kh, kw)
    return C.reshape(p, p)
