"""Rank-one kernels: their factors, and their 'valid' convolution as two 1-D passes.

A kernel ``k = u vᵀ`` (an isotropic Gaussian, a box, any separable family without rotation)
convolves an image as a convolution of its columns with ``u`` followed by one of its rows
with ``v``: ``kh + kw`` multiply-adds per pixel instead of the FFT's transforms, and exact to
rounding.  The parametric L1 search (:mod:`~kernelfit.models.parametric_l1`) evaluates the
model image this way at every node of its window.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = ["rank_one_factors", "convolve_valid_rank_one", "convolve_spectrum_rank_one"]

# A kernel is treated as rank one when the best rank-one approximation through its largest
# entry reproduces it to this relative accuracy: rounding of a product of two float64
# vectors, with room for the normalisation.
_RANK_ONE_RTOL = 1e-14


def rank_one_factors(kernel):
    """``(u, v)`` with ``kernel == outer(u, v)`` to rounding, or ``None``.

    Parameters
    ----------
    kernel : (kh, kw) ndarray

    Returns
    -------
    tuple of 1-D ndarray, or None
        The column through the largest entry, and the row through it divided by that entry.

    Examples
    --------
    >>> import numpy as np
    >>> u, v = rank_one_factors(np.outer([1.0, 2.0], [3.0, 4.0, 5.0]))
    >>> bool(np.allclose(np.outer(u, v), [[3, 4, 5], [6, 8, 10]]))
    True
    >>> rank_one_factors(np.eye(2)) is None
    True
    """
    k = np.asarray(kernel, dtype=np.float64)
    scale = np.abs(k).max()
    if not scale > 0:
        return None
    i, j = np.unravel_index(np.argmax(np.abs(k)), k.shape)
    u = k[:, j].copy()
    v = k[i, :] / k[i, j]
    if np.abs(np.outer(u, v) - k).max() > _RANK_ONE_RTOL * scale:
        return None
    return u, v


def convolve_valid_rank_one(extended, u, v, *, out=None, work=None, rows_out=None):
    """The 'valid' convolution of ``extended`` with ``outer(u, v)``, as two 1-D passes.

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
        The extended image ``P`` (float64).
    u, v : 1-D ndarray
        The kernel's column and row factors (lengths ``kh``, ``kw``).
    out : (Ph − kh + 1, Pw − kw + 1) ndarray, optional
        Where to write the result.
    rows_out : (Ph, Pw − kw + 1) ndarray, optional
        Memory for the last pass, whose rows ``kh // 2`` to ``kh // 2 + Ph − kh`` are then
        the result (returned as a view, no copy).
    work : dict, optional
        Buffers kept between calls, one set per image shape (fresh large arrays cost page
        faults at every call).

    Returns
    -------
    (Ph − kh + 1, Pw − kw + 1) ndarray
        What :meth:`~kernelfit.core.forward.ExtendedSpectrum.convolve_valid` returns for
        ``outer(u, v)``, to rounding.

    Examples
    --------
    >>> import numpy as np, scipy.signal
    >>> P = np.random.default_rng(0).random((9, 8))
    >>> u, v = np.array([1.0, 2.0, 0.5]), np.array([0.25, 1.0])
    >>> bool(np.allclose(convolve_valid_rank_one(P, u, v),
    ...                  scipy.signal.convolve2d(P, np.outer(u, v), mode="valid")))
    True
    """
    kh, kw = len(u), len(v)
    ph, pw = extended.shape
    key = (ph, pw, kh, kw)
    buffers = None if work is None else work.get(key)
    if buffers is None:
        buffers = {"cols": np.empty((ph, pw)), "rows": np.empty((ph, pw - kw + 1))}
        if work is not None:
            work[key] = buffers
    # A convolution is a correlation with the reversed weights; ndimage centres a length-n
    # filter at n // 2, so the 'valid' part of its output starts there (the boundary mode
    # only affects the discarded margin).  Rows last: the valid rows of the last output are
    # one contiguous block, which can be the caller's own memory (``rows_out``).
    scipy.ndimage.correlate1d(extended, v[::-1], axis=1, mode="constant",
                              output=buffers["cols"])
    cols = buffers["cols"][:, kw // 2: kw // 2 + pw - kw + 1]
    target = buffers["rows"] if rows_out is None else rows_out
    scipy.ndimage.correlate1d(cols, u[::-1], axis=0, mode="constant", output=target)
    valid = target[kh // 2: kh // 2 + ph - kh + 1]
    if rows_out is not None:
        return valid
    if out is None:
        return valid.copy()
    np.copyto(out, valid)
    return out


def convolve_spectrum_rank_one(spectrum, u, v, *, work=None, single=False):
    """The 'valid' convolution of an extended image with ``outer(u, v)`` from its spectrum.

    The kernel's 2-D transform is the outer product of the 1-D transforms of ``u`` and
    ``v``, so each image costs one product and one inverse transform; the image's own
    transform (``spectrum``, an :class:`~kernelfit.core.forward.ExtendedSpectrum`) is
    shared by every kernel.  A view of the inverse transform is returned: copy it before
    the next call with the same ``work``.  ``single=True`` computes in single precision
    (relative error of order 1e-7 of ``max|P|·‖k‖₁``; twice as fast).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.forward import ExtendedSpectrum
    >>> P = np.random.default_rng(0).random((9, 8))
    >>> u, v = np.array([1.0, 2.0, 0.5]), np.array([0.25, 1.0])
    >>> spectrum = ExtendedSpectrum(P, (3, 2))
    >>> bool(np.allclose(convolve_spectrum_rank_one(spectrum, u, v),
    ...                  spectrum.convolve_valid(np.outer(u, v))))
    True
    """
    kh, kw = len(u), len(v)
    ly, lx = spectrum.fft_shape
    work = {} if work is None else work
    hat = spectrum.hat
    if single:
        key = ("hat32", id(spectrum))
        if key not in work:
            work[key] = hat.astype(np.complex64)
        hat = work[key]
    product = work.get(("product", hat.shape, hat.dtype))
    if product is None:
        product = work[("product", hat.shape, hat.dtype)] = np.empty_like(hat)
    ku = scipy.fft.fft(u, ly).astype(hat.dtype)[:, None]
    kv = scipy.fft.rfft(v, lx).astype(hat.dtype)[None, :]
    # Both factors in one pass over the spectrum: blocks of rows that stay in the cache.
    rows = max(1, (1 << 15) // hat.shape[1])
    for i in range(0, ly, rows):
        block = product[i:i + rows]
        np.multiply(hat[i:i + rows], ku[i:i + rows], out=block)
        block *= kv
    full = scipy.fft.irfft2(product, (ly, lx), overwrite_x=True)
    ph, pw = spectrum.extended.shape
    return full[kh - 1:ph, kw - 1:pw]
