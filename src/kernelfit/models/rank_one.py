"""Rank-one kernels: their factors, and their 'valid' convolution as two 1-D passes.

A kernel ``k = u vᵀ`` (an isotropic Gaussian, a box, any separable family without rotation)
convolves an image as a convolution of its columns with ``u`` followed by one of its rows
with ``v``: ``kh + kw`` multiply-adds per pixel instead of the FFT's transforms, and exact to
rounding.  The parametric L1 search (:mod:`~kernelfit.models.parametric_l1`) evaluates the
model image this way at every node of its window.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

__all__ = ["rank_one_factors", "convolve_valid_rank_one"]

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


def convolve_valid_rank_one(extended, u, v):
    """The 'valid' convolution of ``extended`` with ``outer(u, v)``, as two 1-D passes.

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
        The extended image ``P`` (float64).
    u, v : 1-D ndarray
        The kernel's column and row factors (lengths ``kh``, ``kw``).

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
    # A convolution is a correlation with the reversed weights; ndimage centres a length-n
    # filter at n // 2, so the 'valid' part of its output starts there (the boundary mode
    # only affects the discarded margin).
    rows = scipy.ndimage.correlate1d(extended, u[::-1], axis=0, mode="constant")
    rows = rows[kh // 2: kh // 2 + extended.shape[0] - kh + 1]
    out = scipy.ndimage.correlate1d(rows, v[::-1], axis=1, mode="constant")
    return out[:, kw // 2: kw // 2 + extended.shape[1] - kw + 1]
