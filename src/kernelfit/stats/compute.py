"""(moved from kernelfit.stats)"""

from __future__ import annotations

import numpy as np

from ..core import tiling
from ..core.forward import ExtendedSpectrum
from .gram import SufficientStatistics, _fft_sums, _im2col_sums
from .weighted import weighted_statistics


def statistics(extended, b_used, shape, *, weights=None, method=None, spectrum=None):
    """Sufficient statistics of one image pair.

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
        The extended image ``P`` (see :mod:`kernelfit._conventions`); must be finite.
    b_used : (Ph-kh+1, Pw-kw+1) ndarray
        The used rectangle of ``b``; must be finite where ``weights`` is non-zero.
    shape : (kh, kw)
    weights : ndarray like ``b_used``, optional
        Non-negative pixel weights; 0 drops a pixel.  ``None`` = every pixel, weight 1.
        On images where the FFT pays, masks and weights are handled exactly by
        :func:`kernelfit.solvers.weighted.weighted_statistics` (FFT Grams of the whole
        image and of constant-weight rectangles, plus or minus the remaining pixels).
    method : {None, 'fft', 'im2col'}
        ``None`` picks the faster exact method (see :func:`choose_method`); the others force
        one (for tests).
    spectrum : ExtendedSpectrum, optional
        The FFT of ``extended`` when the caller has it (it is reused for the prediction).

    Returns
    -------
    SufficientStatistics
    """
    P = np.asarray(extended, dtype=np.float64)
    b = np.asarray(b_used, dtype=np.float64)
    kh, kw = shape
    if b.shape != (P.shape[0] - kh + 1, P.shape[1] - kw + 1):
        raise ValueError(f"b_used has shape {b.shape}; expected "
                         f"{(P.shape[0] - kh + 1, P.shape[1] - kw + 1)}")
    chosen = choose_method(P.shape, shape, weights) if method is None else method
    if chosen == "im2col":
        if method is None and weights is not None and _is_large(P.shape, shape):
            # General weights on a large image: exact, by FFT Grams and downdates.
            return _weighted(P, b, shape, weights, spectrum)
        G, c, btb, n = _im2col_sums(P, b, shape, weights)
    elif chosen == "fft":
        if not _is_binary(weights):
            raise ValueError("method='fft' handles only 0/1 weights; use method='im2col'")
        if not _has_core(P.shape, shape):
            raise ValueError(f"method='fft' needs an image at least twice the kernel {shape}")
        if weights is not None and not np.all(weights == 1):
            return _weighted(P, b, shape, weights, spectrum)
        if method is None and tiles_pay(P.shape, shape):
            return _tiled_statistics(P, b, shape)
        G, c, btb, n = _fft_sums(P, b, shape, weights, spectrum or ExtendedSpectrum(P, shape))
    else:
        raise ValueError(f"method={method!r} must be None, 'fft' or 'im2col'")
    # Flipping u -> j reverses the C-order flattening, so it is a reversal of both axes.
    return SufficientStatistics(G[::-1, ::-1].copy(), c[::-1].copy(), float(btb), int(n),
                                tuple(shape))


def choose_method(image_shape, shape, weights=None) -> str:
    """'fft' where it is exact and faster, else 'im2col'.

    im2col costs about ``N·p²`` multiply-adds with BLAS: below ~3e7 that takes milliseconds,
    above it the FFT path wins by a growing factor.  With 0/1 weights the FFT path hands the
    mask to :func:`kernelfit.solvers.weighted.weighted_statistics`, which picks the cheapest
    exact assembly (FFT Gram minus the dropped pixels, or the kept pixels alone; masked or
    kept rectangles by FFT).  General weights are not 'fft' here, but ``method=None`` sends
    them on large images to the same weighted path.
    """
    fast = _has_core(image_shape, shape) and _is_large(image_shape, shape)
    return "fft" if fast and _is_binary(weights) else "im2col"


def _is_large(image_shape, shape) -> bool:
    n_out = (image_shape[0] - shape[0] + 1) * (image_shape[1] - shape[1] + 1)
    p = shape[0] * shape[1]
    return n_out * p * p > 3e7


def _weighted(P, b, shape, weights, spectrum):
    """The exact weighted statistics of :mod:`kernelfit.solvers.weighted`."""
    # Imported here: kernelfit.solvers imports this module.

    return weighted_statistics(P, b, shape, weights, spectrum=spectrum)


def tiles_pay(image_shape, shape) -> bool:
    """Whether :func:`statistics` sums unweighted FFT statistics over tiles (see
    :data:`TILED_ABOVE`); then a whole-image :class:`ExtendedSpectrum` is not needed."""
    n_out = (image_shape[0] - shape[0] + 1) * (image_shape[1] - shape[1] + 1)
    return tiling.is_large(n_out)


def _tiled_statistics(P, b, shape) -> SufficientStatistics:
    kh, kw = shape
    total = None
    for rows, cols in tiling.tile_slices(b.shape, tiling.STATISTICS_TILE):
        part = statistics(P[rows.start:rows.stop + kh - 1, cols.start:cols.stop + kw - 1],
                          b[rows, cols], shape, method="fft")
        total = part if total is None else total + part
    return total


def _is_binary(weights) -> bool:
    return weights is None or bool(np.all((weights == 0) | (weights == 1)))


def _has_core(image_shape, shape) -> bool:
    (Ph, Pw), (kh, kw) = image_shape, shape
    return Ph - kh + 1 >= kh and Pw - kw + 1 >= kw
