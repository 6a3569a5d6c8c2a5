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
from .rank_one import convolve_valid_rank_one, rank_one_factors

__all__ = ["Band", "sample", "predictions", "used_b", "extended_abs"]


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


def predictions(sources, kernels, kernel_shape, spectrum=None):
    """``X k`` over the used pixels of every source, for each kernel: ``len(kernels) × n``.

    Rank-one kernels take two 1-D passes (:mod:`~kernelfit.models.rank_one`); the others
    the FFT, through ``spectrum(i)`` (an
    :class:`~kernelfit.core.forward.ExtendedSpectrum` of source ``i``, reused) when given.
    """
    factors = [rank_one_factors(np.reshape(k, kernel_shape)) for k in kernels]
    out = np.empty((len(kernels), sum(source.n_used for source in sources)))
    start = 0
    for i, source in enumerate(sources):
        stop = start + source.n_used
        for row, (k, uv) in enumerate(zip(kernels, factors)):
            if uv is not None:
                image = convolve_valid_rank_one(source.extended, *uv)
            elif spectrum is not None:
                image = spectrum(i).convolve_valid(np.reshape(k, kernel_shape))
            else:
                image = convolve_extended(source.extended, np.reshape(k, kernel_shape))
            out[row, start:stop] = image.ravel() if source.use is None else image[source.use]
        start = stop
    return out


def used_b(sources):
    """``b`` over the used pixels of every source, in the order of :func:`predictions`."""
    return np.concatenate([s.b_used.ravel() if s.use is None else s.b_used[s.use]
                           for s in sources])


def extended_abs(sources):
    """``(Σ|P|, max|P|)`` over the sources' extended images: a kernel error ``ε`` changes
    the predictions by at most ``‖ε‖₁·Σ|P|`` summed over the pixels, ``‖ε‖₁·max|P|`` at any
    one."""
    sums = [float(np.abs(s.extended).sum()) for s in sources]
    highs = [float(np.abs(s.extended).max()) for s in sources]
    return sum(sums), max(highs)
