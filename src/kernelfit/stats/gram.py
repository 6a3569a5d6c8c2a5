"""Sufficient statistics of the least-squares kernel problem, computed without im2col.

For ``min_k ‖W^½ (X k − b)‖²`` everything a solver needs is ``G = XᵀWX``, ``c = XᵀWb``,
``bᵀWb`` and the number of pixels used.  They are sums over pixels, so the statistics of
several tiles, image pairs or workers simply add (``s1 + s2``).

Row ``i`` of ``X`` holds the pixels of the extended image ``P`` under the kernel footprint of
output pixel ``i``.  Internally we index the kernel by its *flipped* position ``u = (kh-1-jy,
kw-1-jx)``, for which ``X[i, u] = P[i + u]``: a plain correlation.  The public arrays are
flipped back to convolution orientation at the end.

The fast path (:func:`gram_fft`) is exact.  ``G[u, u+d]`` is the sum of ``P(z)·P(z+d)`` over a
rectangle that moves with ``u``.  Every such rectangle contains the same *core* (the image
inset by ``kh-1`` rows and ``kw-1`` columns); the core's lag sums for all ``d`` come from one
FFT correlation, and the remaining bands — at most ``kh-1`` rows or ``kw-1`` columns thick —
come from batched 1-D FFT correlations (band rows × core columns, and the transpose) and direct
products (band corners).  Cumulative sums over the bands (:func:`_rectangle_sums`) then give
every rectangle at once.  Cost: two 2-D FFTs of the image, about ``4k²`` short 1-D FFTs
and ``O(k⁴)`` work, instead of im2col's ``O(N·k⁴)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from ..core.forward import ExtendedSpectrum

# im2col chunks are kept to about this many bytes, so that memory stays bounded.
_CHUNK_BYTES = 32 * 2**20


@dataclass
class SufficientStatistics:
    """``G = XᵀWX``, ``c = XᵀWb``, ``bᵀWb`` and the pixel count, in convolution orientation.

    Entries are indexed by the kernel flattened in C order, so ``rhs.reshape(shape)`` is a
    kernel-shaped array.  Statistics of the same kernel shape add.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((40, 40)), rng.random((3, 3))
    >>> from kernelfit.core.forward import convolve
    >>> from kernelfit.stats import statistics
    >>> s = statistics(a, convolve(a, k, mode="valid"), (3, 3))
    >>> np.allclose(np.linalg.solve(s.gram, s.rhs).reshape(3, 3), k)
    True
    >>> (s + s).n_used == 2 * s.n_used
    True
    """

    gram: np.ndarray
    rhs: np.ndarray
    btb: float
    n_used: int
    shape: tuple[int, int]

    def __add__(self, other: "SufficientStatistics") -> "SufficientStatistics":
        if not isinstance(other, SufficientStatistics):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(
                f"cannot add statistics of kernel shapes {self.shape} and {other.shape}"
            )
        return SufficientStatistics(
            self.gram + other.gram, self.rhs + other.rhs, self.btb + other.btb,
            self.n_used + other.n_used, self.shape,
        )

    def __radd__(self, other):
        # Lets ``sum(list_of_statistics)`` work.
        return self if other == 0 else self.__add__(other)




def _fft_sums(P, b, shape, weights, spectrum):
    """Exact statistics from FFTs; pixels with weight 0 are subtracted afterwards."""
    G = gram_fft(P, shape, core_lag_sums=spectrum.core_lag_sums())
    # c[u] = Σ_i b[i]·P[i+u]: one correlation, sharing the FFT of P with G.
    c = spectrum.correlate_valid(b).ravel()
    btb = float(np.sum(b * b))
    n = b.size
    if weights is not None:
        dropped = weights == 0
        if dropped.any():
            G_d, c_d, btb_d, n_d = _im2col_sums(P, b, shape, dropped.astype(float))
            G, c, btb, n = G - G_d, c - c_d, btb - btb_d, n - n_d
    return G, c, btb, n


def gram_fft(P, shape, *, core_lag_sums=None):
    """The Gram matrix ``G[u, v] = Σ_i P[i+u]·P[i+v]`` (flipped-kernel order), exactly.

    Parameters
    ----------
    P : (Ph, Pw) ndarray
        Extended image, at least ``2·kh − 1`` by ``2·kw − 1``.
    shape : (kh, kw)
    core_lag_sums : ndarray, optional
        ``ExtendedSpectrum(P, shape).core_lag_sums()`` when the caller has it.

    Returns
    -------
    (kh·kw, kh·kw) ndarray
    """
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    if core_lag_sums is None:
        core_lag_sums = ExtendedSpectrum(P, shape).core_lag_sums()
    row_band_sums = _band_lag_sums(P, ty, tx)                       # [m, dy, dx]
    col_band_sums = _band_lag_sums(P.T, tx, ty).transpose(0, 2, 1)  # [n, dy, dx]
    rows, cols = _band_indices(P.shape[0], ty), _band_indices(P.shape[1], tx)
    P_zero_padded = np.pad(P, ((ty, ty), (tx, tx)))
    band_r = np.r_[0:ty, ty + 1:2 * ty + 1]   # compressed index of each band row
    band_s = np.r_[0:tx, tx + 1:2 * tx + 1]
    p = kh * kw
    G = np.zeros(p * p)
    dx_all = np.arange(-tx, tx + 1)
    for iy, dy in enumerate(range(-ty, ty + 1)):
        # Lag sums compressed to (band rows | core | band rows) × (band cols | core | band cols).
        neighbours = P_zero_padded[(rows + dy + ty)[:, None, None],
                                   (cols[:, None] + dx_all[None, :] + tx)[None]]  # [m, n, dx]
        corners = P[np.ix_(rows, cols)][:, :, None] * neighbours
        Q = np.empty((2 * tx + 1, 2 * ty + 1, 2 * tx + 1))
        Q[:, ty, tx] = core_lag_sums[iy]
        Q[:, band_r, tx] = row_band_sums[:, iy, :].T
        Q[:, ty, band_s] = col_band_sums[:, iy, :].T
        Q[:, band_r[:, None], band_s[None, :]] = corners.transpose(2, 0, 1)
        # Sum over each rectangle: F[dx, uy, ux] = Σ_rs A(uy, r) Q[dx, r, s] A(ux, s).
        F = _rectangle_sums(_rectangle_sums(Q, axis=1), axis=2)
        _scatter_lag(G, F, dy, kh, kw)
    return G.reshape(p, p)


def _band_indices(n, t):
    """Indices of the top and bottom bands, ``t`` rows each, of an axis of length ``n``."""
    return np.r_[0:t, n - t:n]


def _band_lag_sums(P, ty, tx, Q=None):
    """``R[m, dy, dx] = Σ_{x in core columns} P(y_m, x)·Q(y_m+dy, x+dx)`` for band rows y_m.

    ``Q`` defaults to ``P`` (the Gram's lag sums; another image gives the cross-Gram of two
    designs, :mod:`kernelfit.variation`).  Rows outside ``Q`` count as zero.  One batched 1-D
    FFT correlation per ``dy``; only the rows within ``ty`` of a band are transformed.
    """
    Q = P if Q is None else Q
    Ph, Pw = P.shape
    rows = _band_indices(Ph, ty)
    # Core columns x and x + dx both lie inside the row, so length Pw has no wrap-around.
    n_fft = scipy.fft.next_fast_len(Pw, real=True)
    core_cols = np.zeros((len(rows), Pw))
    core_cols[:, tx:Pw - tx] = P[rows, tx:Pw - tx]
    band_hat = np.conj(scipy.fft.rfft(core_cols, n_fft, axis=1))
    # Spectra of every row some band row meets at some lag; the last one stands for the
    # all-zero rows outside P.
    needed = rows[:, None] + np.arange(-ty, ty + 1)[None, :]  # [m, dy]
    inside = (needed >= 0) & (needed < Ph)
    unique_rows, position = np.unique(needed[inside], return_inverse=True)
    spectra = np.zeros((len(unique_rows) + 1, n_fft // 2 + 1), complex)
    spectra[:-1] = scipy.fft.rfft(Q[unique_rows], n_fft, axis=1)
    index = np.full(needed.shape, len(unique_rows))
    index[inside] = position.ravel()
    lags = np.arange(-tx, tx + 1) % n_fft
    out = np.empty((len(rows), 2 * ty + 1, 2 * tx + 1))
    for iy in range(2 * ty + 1):
        corr = scipy.fft.irfft(band_hat * spectra[index[:, iy]], n_fft, axis=1)
        out[:, iy, :] = corr[:, lags]
    return out


def _rectangle_sums(Q, axis):
    """Collapse a compressed axis (``t`` top band rows, the core, ``t`` bottom band rows) into
    the ``t+1`` sums over the rectangles that start at offset ``u = 0..t``.

    The rectangle starting at ``u`` contains top band rows ``r >= u``, the core, and bottom
    band rows ``m < u``: a suffix sum plus the core plus a prefix sum.
    """
    Q = np.moveaxis(Q, axis, 0)
    t = (Q.shape[0] - 1) // 2
    zero = np.zeros((1,) + Q.shape[1:])
    top = np.cumsum(np.concatenate([zero, Q[t - 1::-1] if t else Q[:0]]), axis=0)[::-1]
    bottom = np.cumsum(np.concatenate([zero, Q[t + 1:]]), axis=0)
    return np.moveaxis(top + Q[t] + bottom, 0, axis)


def _scatter_lag(G_flat, F, dy, kh, kw):
    """Write ``G[u, u+d] = F[dx, uy, ux]`` for every valid ``u`` and every ``dx``."""
    p = kh * kw
    tx = kw - 1
    uy = np.arange(max(0, -dy), min(kh, kh - dy))
    ux, dx = np.meshgrid(np.arange(kw), np.arange(-tx, tx + 1), indexing="ij")
    ok = (ux + dx >= 0) & (ux + dx < kw)
    ux, dx = ux[ok], dx[ok]
    u = uy[:, None] * kw + ux[None, :]
    G_flat[(u * (p + 1) + dy * kw + dx[None, :]).ravel()] = F[dx + tx, uy[:, None], ux[None, :]].ravel()


def _im2col_sums(P, b, shape, weights):
    """Reference statistics from explicit footprints, in row chunks of bounded memory."""
    kh, kw = shape
    p = kh * kw
    Ho, Wo = b.shape
    windows = sliding_window_view(P, (kh, kw))
    G, c, btb, n = np.zeros((p, p)), np.zeros(p), 0.0, 0
    step = max(1, _CHUNK_BYTES // (8 * p * Wo))
    for r0 in range(0, Ho, step):
        rows = slice(r0, min(Ho, r0 + step))
        w = None if weights is None else weights[rows]
        keep = (slice(None),) if w is None else (w != 0,)
        X = windows[rows][keep].reshape(-1, p)
        y = b[rows][keep].ravel()
        wX = X if w is None else X * w[keep].ravel()[:, None]
        G += wX.T @ X
        c += wX.T @ y
        btb += float(y @ (y if w is None else y * w[keep].ravel()))
        n += len(y)
    return G, c, btb, n
