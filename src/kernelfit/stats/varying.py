"""Sufficient statistics of a spatially varying kernel's extended design (``variation=``).

The extended design has ``T·p`` columns ``m_s(i)·P[i + center − j]``.  Its statistics come
from the channel design ``X_T`` (inputs ``a_t = m_t(ζ) ⊙ P``, coordinates of the input pixel)
through ``X_ext = X_T·B`` (:func:`kernelfit.core.varying.translation_blocks`):
``G = Bᵀ (X_TᵀX_T) B``, ``c = Bᵀ X_Tᵀ b``.  ``X_TᵀX_T`` consists of the channels'
cross-Grams, computed exactly by blocks (:mod:`kernelfit.stats.varying_lags`); masked pixels
are subtracted explicitly, or, when most are masked, the kept ones summed explicitly.  A
polynomial background's cross terms ``X_TᵀT`` are one matrix sandwich, since the basis and
the channel weights are separable (:func:`varying_background_terms`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.varying import monomial_powers, translation_blocks
from .background import BackgroundBasis, BackgroundTerms, background_terms, check_degree
from .gram import SufficientStatistics
from .varying_lags import ChannelGeometry, band_sums, core_lag_sums, cross_gram

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

    ``method``: ``None`` chooses, ``'fft'`` (the blocked cross-Grams of
    :mod:`kernelfit.stats.varying_lags`) or ``'im2col'`` force one (tests, benchmarks).
    """
    kh, kw = shape
    powers = monomial_powers(degree)
    channels = ChannelGeometry(pair, shape, powers, frame)
    method = _choose_method(pair, shape, len(powers), method)
    if method == "im2col":
        G, c, _ = _explicit_sums(pair, channels, pair.use)
    else:
        G, c = _fft_sums(pair, channels)
        if pair.use is not None:
            # b is 0 at the dropped pixels, so only the Gram keeps their contribution.
            G -= _explicit_sums(pair, channels, ~pair.use)[0]
    p = kh * kw
    # Flipped (correlation) order u -> convolution order j, within every term's block.
    order = (np.arange(len(powers))[:, None] * p + np.arange(p)[None, ::-1]).ravel()
    G, c = G[np.ix_(order, order)], c[order]
    M = translation_blocks(shape, pair.geometry.center, powers, frame)
    return SufficientStatistics(_congruence(G, M), _translate(c, M),
                                float(np.sum(pair.b_used ** 2)), pair.n_used,
                                (len(powers), kh, kw))


def _choose_method(pair, shape, T, method):
    """``'fft'`` unless the image is too small for a core or im2col is cheaper (or most of
    ``b`` is dropped, when summing the kept pixels beats subtracting the dropped ones)."""
    Ph, Pw = pair.extended.shape
    has_core = all(n - k + 1 >= k for n, k in zip((Ph, Pw), shape))
    if method is None:
        n_kept = pair.n_used
        work = pair.b_used.size * (T * shape[0] * shape[1]) ** 2
        method = "fft" if has_core and work > _EXPLICIT_WORK_LIMIT \
            and 2 * n_kept > pair.b_used.size else "im2col"
    if method not in ("fft", "im2col"):
        raise ValueError(f"method={method!r} must be None, 'fft' or 'im2col'")
    if method == "fft" and not has_core:
        raise ValueError(f"method='fft' needs an image at least twice the kernel {shape}")
    return method


def varying_background_terms(pair, shape, degree, frame, background) -> BackgroundTerms:
    """:func:`kernelfit.background.background_terms` for the extended design: ``XᵀWT`` has
    one row per coefficient of every term ``k_t`` (``X_ext = X_T·B``, so it is
    ``Bᵀ·X_TᵀWT``).

    The basis images and the channels are separable (products of a function of the row and
    one of the column), so ``X_TᵀT`` over all pixels is one matrix sandwich ``V_y·P·V_xᵀ``
    (:func:`_separable_cross`); the pixels a mask drops are then subtracted explicitly.
    """
    powers = monomial_powers(degree)
    channels = ChannelGeometry(pair, shape, powers, frame)
    basis = BackgroundBasis(pair.b_used.shape, check_degree(background))
    cross = _separable_cross(pair.extended, basis, channels)
    if pair.use is not None and not pair.use.all():
        cross -= _explicit_sums(pair, channels, ~pair.use, basis=basis)[2]
    p = shape[0] * shape[1]
    # Flipped order u -> convolution order j within each term's block, then X_ext = X_T·B.
    cross = cross.reshape(len(powers), shape[0], shape[1], -1)[:, ::-1, ::-1]
    cross = cross.reshape(len(powers) * p, -1)
    M = translation_blocks(shape, pair.geometry.center, powers, frame)
    plain = background_terms(pair, shape, background, cross=np.zeros((p, len(basis))))
    return dataclasses.replace(plain, cross=_translate(cross, M),
                               kernel_shape=(len(powers),) + tuple(shape))


def _separable_cross(P, basis, channels) -> np.ndarray:
    """``X_TᵀT`` over every pixel, ``(T·p, m)`` in flipped order: ``Σ_i T_r(i)·a_t(i+u)``.

    With ``z = i + u``, ``T_r(z − u)·a_t(z) = P(z)·[L_j(z_y − u_y)·ζ_y^p] [L_i(z_x − u_x)·ζ_x^q]``
    (``T_r = L_j(y)·L_i(x)``, ``m_t = ζ_y^p ζ_x^q``): one product ``V_y·P·V_xᵀ`` holds
    every ``(r, t, u)``.
    """
    kh, kw = channels.shape
    top = 1 + max(max(p, q) for p, q in channels.powers)
    Vy = _shifted_products(basis.vy, channels.ypow[:top], kh, P.shape[0])   # [j, p, uy, z_y]
    Vx = _shifted_products(basis.vx, channels.xpow[:top], kw, P.shape[1])   # [i, q, ux, z_x]
    M = (Vy.reshape(-1, P.shape[0]) @ P) @ Vx.reshape(-1, P.shape[1]).T
    M = M.reshape(Vy.shape[:3] + Vx.shape[:3])                         # [j, p, uy, i, q, ux]
    T, p = len(channels.powers), kh * kw
    cross = np.empty((T, p, len(basis)))
    for r, (i, j) in enumerate(basis.powers):
        for t, (pt, qt) in enumerate(channels.powers):
            cross[t, :, r] = M[j, pt, :, i, qt, :].ravel()
    return cross.reshape(T * p, len(basis))


def _shifted_products(legendre_columns, powers, k, n) -> np.ndarray:
    """``V[j, p, u, z] = L_j(z − u)·ζ(z)^p`` where ``0 ≤ z − u < len(L)``, else 0."""
    length = legendre_columns.shape[0]
    V = np.zeros((legendre_columns.shape[1], powers.shape[0], k, n))
    for u in range(k):
        V[:, :, u, u:u + length] = legendre_columns.T[:, None, :] * powers[None, :, u:u + length]
    return V


def _translate(X, M) -> np.ndarray:
    """``Bᵀ X`` for ``X`` with ``T·p`` rows (a vector or a matrix)."""
    p, T = M.shape[0], M.shape[1]
    shaped = X.reshape((T, p) + X.shape[1:])
    return np.einsum("jst,tj...->sj...", M, shaped).reshape(X.shape)


def _congruence(G, M) -> np.ndarray:
    """``Bᵀ G B`` in ``O(T³p²)`` (``B`` is diagonal within each ``T × T`` block pair)."""
    p, T = M.shape[0], M.shape[1]
    left = np.einsum("jst,tjvl->sjvl", M, G.reshape(T, p, T, p), optimize=True)
    return np.einsum("lwv,sjvl->sjwl", M, left, optimize=True).reshape(T * p, T * p)


def _explicit_sums(pair, channels, pixels, *, basis=None):
    """im2col sums over ``pixels`` (bool like ``b``, ``None`` = all), in bounded chunks of
    rows, the channels made chunk by chunk: ``(Σ x_i x_iᵀ, Σ b_i x_i, Σ x_i T(i)ᵀ)`` (the last
    with ``basis``, else None), ``x_i`` the footprints of every channel (flipped order)."""
    kh, kw = channels.shape
    T, p = len(channels.powers), kh * kw
    b = pair.b_used
    Ho, Wo = b.shape
    G, c = np.zeros((T * p, T * p)), np.zeros(T * p)
    cross = None if basis is None else np.zeros((T * p, len(basis)))
    step = max(1, _CHUNK_BYTES // (8 * T * p * Wo))
    for r0 in range(0, Ho, step):
        r1 = min(Ho, r0 + step)
        keep = np.ones((r1 - r0, Wo), bool) if pixels is None else pixels[r0:r1]
        if not keep.any():
            continue
        block = channels.channels(pair.extended, slice(r0, r1 + kh - 1), slice(None))
        windows = sliding_window_view(block, (kh, kw), axis=(1, 2))     # [t, y, x, u]
        X = np.moveaxis(windows[:, keep], 0, 1).reshape(-1, T * p)
        G += X.T @ X
        c += X.T @ b[r0:r1][keep]
        if basis is not None:
            values = np.stack([np.outer(basis.vy[r0:r1, j], basis.vx[:, i])[keep]
                               for i, j in basis.powers], axis=1)
            cross += X.T @ values
    return G, c, cross


def _fft_sums(pair, channels):
    """Every cross-Gram block from the blocked core lag sums and the monomial band sums
    (:mod:`kernelfit.stats.varying_lags`), ``c`` from the same blocks."""
    kh, kw = channels.shape
    T, p = len(channels.powers), kh * kw
    P = pair.extended
    S, c = core_lag_sums(P, pair.b_used, channels)
    rows, cols, strip_rows, _ = band_sums(P, channels)
    strips = channels.channels(P, strip_rows, slice(None))
    G = np.empty((T * p, T * p))
    for t in range(T):
        for s in range(t + 1):
            block = cross_gram(strips[s], strips[t], channels.shape, core_lag_sums=S[t][s],
                               row_band_sums=rows[t][s], col_band_sums=cols[t][s])
            G[s * p:(s + 1) * p, t * p:(t + 1) * p] = block
            G[t * p:(t + 1) * p, s * p:(s + 1) * p] = block.T
    return G, np.concatenate([ct.ravel() for ct in c])
