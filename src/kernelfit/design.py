"""From user arrays to a well-posed problem: validation, the NaN policy and masks.

This is the door every fit goes through.  It checks shapes and dtypes, decides which pixels
of ``b`` can be used, and hands the statistics a finite extended image and a finite ``b``:

* pixels of ``b`` that are NaN/inf, or that the user's ``mask`` marks False, are dropped;
* NaN/inf in ``a`` drop every pixel of ``b`` whose kernel footprint touches them (they are set
  to 0 in the extended image, which is harmless because no used pixel sees them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._conventions import Geometry, as_image, make_geometry, normalize_shape, output_size_of
from .forward import convolve_extended


@dataclass
class PreparedPair:
    """One image pair ready for the statistics.

    Attributes
    ----------
    geometry : Geometry
    extended : ndarray
        The extended image ``P`` (float64, finite).
    b_used : ndarray
        The used rectangle of ``b`` (float64; 0 where not used).
    use : ndarray of bool or None
        Which pixels of ``b_used`` enter the fit; ``None`` means all of them.
    b_shape : tuple of int
        Shape of the whole ``b``.
    """

    geometry: Geometry
    extended: np.ndarray
    b_used: np.ndarray
    use: np.ndarray | None
    b_shape: tuple[int, int]

    @property
    def n_used(self) -> int:
        return self.b_used.size if self.use is None else int(self.use.sum())

    def residual(self, kernel, spectrum=None) -> np.ndarray:
        """``b − a ⊛ kernel`` shaped like ``b``, NaN where a pixel was not used.

        ``spectrum`` (an :class:`~kernelfit.forward.ExtendedSpectrum` of this pair) makes the
        convolution reuse the image's FFT.
        """
        if spectrum is None:
            prediction = convolve_extended(self.extended, np.asarray(kernel, dtype=np.float64))
        else:
            prediction = spectrum.convolve_valid(kernel)
        return self.embed(self.b_used - prediction)

    def embed(self, values_used: np.ndarray) -> np.ndarray:
        """Place an array over the used rectangle into a NaN array shaped like ``b``."""
        out = np.full(self.b_shape, np.nan)
        block = np.array(values_used, dtype=np.float64)
        if self.use is not None:
            block[~self.use] = np.nan
        out[self.geometry.used] = block
        return out


def prepare_pair(a, b, shape, *, boundary, center=None, mask=None, label="") -> PreparedPair:
    """Validate one pair ``(a, b)`` and work out the usable pixels.

    ``label`` (e.g. ``"[2]"``) is appended to parameter names in error messages when the user
    passed lists of pairs.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.ones((6, 6)); b[0, 0] = np.nan
    >>> prepare_pair(np.ones((6, 6)), b, 3, boundary="fill").n_used
    35
    """
    a = as_image(a, f"a{label}")
    b = as_image(b, f"b{label}")
    for name, image in (("b", b), ("a", a)):
        if not _all_finite(image) and not np.isfinite(image).any():
            raise ValueError(f"{name}{label} has no finite pixels")
    output_size = output_size_of(a.shape, b.shape, normalize_shape(shape))
    geometry = make_geometry(a.shape, shape, boundary=boundary, center=center,
                             output_size=output_size)
    # Views of the caller's arrays where possible: nothing below writes into them.
    extended = geometry.extend(np.asarray(a, dtype=np.float64))
    b_used = np.asarray(geometry.crop(b), dtype=np.float64)
    use = np.ones(b_used.shape, bool) if _all_finite(b_used) else np.isfinite(b_used)
    if not _all_finite(extended):
        bad_a = ~np.isfinite(extended)
        use &= ~_touches(bad_a, geometry.kernel_shape)
        extended = np.where(bad_a, 0.0, extended)
    if mask is not None:
        use &= geometry.crop(_as_mask(mask, b.shape, f"mask{label}"))
    if not use.any():
        raise ValueError(
            f"no usable pixel is left in b{label}: every pixel is masked, non-finite, or has "
            "a non-finite pixel of a under its kernel footprint"
        )
    if not use.all():
        b_used = np.where(use, b_used, 0.0)
    return PreparedPair(geometry, extended, b_used, None if use.all() else use, b.shape)


def _all_finite(image) -> bool:
    # One cheap pass: the sum is finite only if every term is (a sum that overflows merely
    # sends us to the exact pixel-by-pixel check).
    return bool(np.isfinite(np.sum(image, dtype=np.float64)))


def _as_mask(mask, b_shape, name) -> np.ndarray:
    if isinstance(mask, (str, bytes)):
        raise TypeError(f"{name} must be a boolean array (True = usable), got {mask!r}")
    try:
        m = np.asarray(mask)
    except ValueError:
        raise ValueError(f"{name} is not a rectangular array: its rows have different "
                         "lengths") from None
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"{name} must be a boolean array (True = usable), got dtype {m.dtype}")
    if m.shape != tuple(b_shape):
        raise ValueError(f"{name} has shape {m.shape}; it must have b's shape {tuple(b_shape)}")
    return m.astype(bool)


def _touches(bad: np.ndarray, kernel_shape) -> np.ndarray:
    """For each 'valid' output pixel, whether its footprint contains a ``bad`` pixel.

    Uses an integral image, so the counts are exact integers.
    """
    kh, kw = kernel_shape
    integral = np.pad(np.cumsum(np.cumsum(bad, axis=0, dtype=np.int64), axis=1), ((1, 0), (1, 0)))
    counts = (integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw]
              + integral[:-kh, :-kw])
    return counts > 0
