"""Where an image-space objective is evaluated: every used pixel, or bands of rows of them.

A *source* is a piece of one pair: an extended image ``P``, the part of ``b`` it predicts
and the mask of the pixels used (the attributes ``extended``, ``b_used``, ``use`` and
``n_used`` of a :class:`~kernelfit.core.design.PreparedPair`, which is itself one).  A band
of output rows ``[y0, y1)`` (or a tile, rows and columns) is a source of its own: it needs
only the rows ``[y0, y1 + kh − 1)`` of ``P``, so its prediction costs its share of the image.
Bands and tiles spread over every pair are the pixel samples on which the parametric L1
search finds its start (:mod:`~kernelfit.models.parametric_l1`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.forward import convolve_extended
from .rank_one import convolve_spectrum_rank_one, convolve_valid_rank_one, rank_one_factors

__all__ = ["Band", "sample", "predictions", "used_b", "extended_abs_max", "abs_sum",
           "residual_in_place"]


@dataclass
class Band:
    """A rectangle of one pair's used pixels: views into its extended image, ``b`` and
    mask."""

    extended: np.ndarray
    b_used: np.ndarray
    use: np.ndarray | None

    @property
    def n_used(self) -> int:
        return self.b_used.size if self.use is None else int(self.use.sum())


def sample(pairs, kernel_shape, fraction, *, most=8):
    """Pieces of every pair holding about ``fraction`` of its used rectangle: the pair itself
    above half, else up to ``most`` bands of full rows evenly spread, or, for a sample
    smaller than one band, up to ``most`` square tiles on a regular grid.

    A piece costs its extended size, ``kh − 1`` rows (and tiles ``kw − 1`` columns) more
    than its own: bands and tiles are kept at least twice the kernel's size.
    """
    kh, kw = kernel_shape
    side = 2 * max(kh, kw)
    out = []
    for pair in pairs:
        rows, cols = pair.b_used.shape
        want = fraction * rows * cols
        if want >= 0.5 * rows * cols:
            out.append(pair)
            continue
        if want >= side * cols:
            count = int(min(most, want // (side * cols)))
            height = int(round(want / (count * cols)))
            boxes = [(y0, height, 0, cols) for y0 in _spread(rows, height, count)]
        else:
            count = int(np.clip(round(want / side**2), 1, most))
            t = int(min(max(side, np.sqrt(want / count)), rows, cols))
            ny = int(np.clip(round(np.sqrt(count * rows / cols)), 1, count))
            nx = -(-count // ny)
            boxes = [(y0, t, x0, t) for y0 in _spread(rows, t, ny)
                     for x0 in _spread(cols, t, nx)]
        for y0, h, x0, w in boxes:
            use = None if pair.use is None else pair.use[y0:y0 + h, x0:x0 + w]
            piece = Band(pair.extended[y0:y0 + h + kh - 1, x0:x0 + w + kw - 1],
                         pair.b_used[y0:y0 + h, x0:x0 + w], use)
            if piece.n_used:
                out.append(piece)
    return out


def _spread(length, size, count):
    """``count`` distinct starts of pieces of ``size`` evenly spread over ``length``."""
    return np.unique(np.linspace(0, length - size, count).round().astype(int))


# From this kernel size on, a product with a shared spectrum beats two 1-D passes.
_FFT_FROM = 9


def predictions(sources, kernels, kernel_shape, spectrum=None, work=None, single=False):
    """``X k`` over the used pixels of every source, for each kernel: ``len(kernels) × n``.

    With ``spectrum(i)`` (an :class:`~kernelfit.core.forward.ExtendedSpectrum` of source
    ``i``, computed once and reused), kernels of 9 pixels or more across take the FFT
    product (rank-one kernels from their 1-D transforms); otherwise rank-one kernels take
    two 1-D passes (:mod:`~kernelfit.models.rank_one`) and the others a direct FFT
    convolution.  ``work`` keeps buffers between calls; ``single=True`` lets the FFT
    product run in single precision (:func:`~kernelfit.models.rank_one.convolve_spectrum_rank_one`).
    """
    factors = [rank_one_factors(np.reshape(k, kernel_shape)) for k in kernels]
    work = {} if work is None else work
    fft = spectrum is not None and max(kernel_shape) >= _FFT_FROM
    if not fft and len(sources) == 1 and sources[0].use is None \
            and all(uv is not None for uv in factors):
        return _rank_one_in_place(sources[0], factors, kernel_shape, work)
    # Single-precision images stay single: half the memory traffic for their users.
    out = np.empty((len(kernels), sum(source.n_used for source in sources)),
                   np.float32 if single and fft else np.float64)
    start = 0
    for i, source in enumerate(sources):
        stop = start + source.n_used
        for row, (k, uv) in enumerate(zip(kernels, factors)):
            if fft and uv is not None:
                image = convolve_spectrum_rank_one(spectrum(i), *uv, work=work,
                                                   single=single)
            elif spectrum is not None:
                image = spectrum(i).convolve_valid(np.reshape(k, kernel_shape))
            elif uv is not None:
                image = convolve_valid_rank_one(source.extended, *uv, work=work)
            else:
                image = convolve_extended(source.extended, np.reshape(k, kernel_shape))
            dest = out[row, start:stop]
            if source.use is None:
                np.copyto(dest.reshape(image.shape), image)
            else:
                dest[:] = image[source.use]
        start = stop
    return out


def _rank_one_in_place(source, factors, kernel_shape, work):
    """:func:`predictions` of one unmasked source and rank-one kernels, each written by its
    last pass straight into the rows of the result (no copy)."""
    kh, kw = kernel_shape
    ph, pw = source.extended.shape
    rows, cols = ph - kh + 1, pw - kw + 1
    block = np.empty((len(factors), ph * cols))
    for row, uv in enumerate(factors):
        convolve_valid_rank_one(source.extended, *uv, work=work,
                                rows_out=block[row].reshape(ph, cols))
    start = (kh // 2) * cols
    return block[:, start:start + rows * cols]


def used_b(sources):
    """``b`` over the used pixels of every source, in the order of :func:`predictions`."""
    parts = [s.b_used.ravel() if s.use is None else s.b_used[s.use] for s in sources]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def extended_abs_max(sources):
    """``max|P|`` over the sources' extended images: a kernel error ``ε`` changes any one
    prediction by at most ``‖ε‖₁·max|P|``."""
    return max(_abs_max(s.extended) for s in sources)


# Pixels per step of the reductions below: each step's temporaries stay in the cache, so a
# large image is read from memory once.
_STEP = 1 << 15


def _abs_max(x):
    rows = max(1, _STEP // max(x.shape[-1], 1))
    return max(float(np.abs(x[i:i + rows]).max()) for i in range(0, x.shape[0], rows))


def abs_sum(x):
    """``Σ|x|`` of a 1-D array, in steps that stay in the cache (no full-size temporary)."""
    return sum(float(np.abs(x[i:i + _STEP]).sum()) for i in range(0, x.size, _STEP))


def residual_in_place(image, amplitude, b):
    """``image ← amplitude·image − b`` (1-D, in steps that stay in the cache) and
    ``Σ|image|`` afterwards."""
    total = 0.0
    for i in range(0, image.size, _STEP):
        part = image[i:i + _STEP]
        part *= amplitude
        part -= b[i:i + _STEP]
        total += float(np.abs(part).sum())
    return image, total
