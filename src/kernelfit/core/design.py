"""From user arrays to a well-posed problem: validation, the NaN policy and masks.

This is the door every fit goes through.  It checks shapes and dtypes, decides which pixels
of ``b`` can be used, and hands the statistics a finite extended image and a finite ``b``:

* pixels of ``b`` that are NaN/inf, or that the user's ``mask`` marks False, are dropped;
* NaN/inf in ``a`` drop every pixel of ``b`` whose kernel footprint touches them (they are set
  to 0 in the extended image, which is harmless because no used pixel sees them);
* ``saturation=`` drops the pixels of ``b`` at or above a ceiling, and with a
  ``(floor, ceiling)`` pair or ``'auto'`` at or below a floor too (given, or found by
  :func:`~kernelfit.defects.detect_saturation` and ``detect_floor``); ``saturation_a=`` drops
  every pixel of ``b`` whose footprint touches a clipped pixel of ``a``, like a NaN in ``a``.
  Only ``a``'s mask is grown: see :mod:`kernelfit.defects` for why.  Without these options,
  an integer image with many pixels at its dtype's range ends gets a ``clipping_b`` /
  ``clipping_a`` note saying so.

For boundaries other than 'valid' the padded values of ``a`` follow the boundary rule, so a
NaN or saturated pixel on ``a``'s edge also spoils the outputs that see its padded copies.
What was found (ceilings, counts) is kept in ``PreparedPair.notes``, and the rounding noise of
integer inputs in ``PreparedPair.quantisation_var`` / ``quantisation_var_a``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .conventions import (
    Geometry,
    as_image,
    make_geometry,
    normalize_shape,
    output_size_of,
)
from .defects import (
    check_saturation_option,
    clipping_note,
    detect_floor,
    detect_saturation,
    quantisation_variance,
)
from .forward import all_finite, box_counts, convolve_extended


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
    notes : dict
        What the defect handling found, JSON-friendly, for ``fit.info``.  With ``saturation=``:
        ``saturation_b`` (the ceiling, or None when there is none), ``saturation_b_floor``
        (the floor, or None), ``n_saturated_b`` (pixels of the whole ``b`` at or beyond
        them), ``saturation_b_message``; with ``saturation_a=``: ``saturation_a``,
        ``saturation_a_floor``, ``n_saturated_a`` (pixels of ``a``),
        ``n_dropped_by_saturation_a`` (pixels of the used rectangle of ``b`` whose footprint
        touches them), ``saturation_a_message``.  Without the option, ``clipping_b`` /
        ``clipping_a`` when an integer image crowds its dtype's range ends
        (:func:`~kernelfit.defects.clipping_note`).  Empty otherwise.
    quantisation_var, quantisation_var_a : float
        Rounding-noise variance of ``b`` and of ``a`` (1/12 for integer input, else 0); see
        :func:`~kernelfit.defects.quantisation_variance` and :meth:`quantisation_floor`.
    """

    geometry: Geometry
    extended: np.ndarray
    b_used: np.ndarray
    use: np.ndarray | None
    b_shape: tuple[int, int]
    notes: dict = field(default_factory=dict)
    quantisation_var: float = 0.0
    quantisation_var_a: float = 0.0

    @property
    def n_used(self) -> int:
        return self.b_used.size if self.use is None else int(self.use.sum())

    def used_map(self) -> np.ndarray:
        """Boolean map shaped like the whole ``b``: True where the pixel entered the fit.

        Pixels outside the used rectangle (e.g. the border of a 'valid' fit) are False.
        """
        out = np.zeros(self.b_shape, bool)
        out[self.geometry.used] = True if self.use is None else self.use
        return out

    def quantisation_floor(self, kernel=None) -> float:
        """Rounding-noise variance of a residual: ``q_b + ‖kernel‖² · q_a``.

        Without ``kernel`` only ``b``'s part; see :mod:`kernelfit.defects` for its use.
        """
        floor = self.quantisation_var
        if kernel is not None and self.quantisation_var_a:
            floor += float(np.sum(np.square(kernel))) * self.quantisation_var_a
        return floor

    def residual(self, kernel, spectrum=None) -> np.ndarray:
        """``b − a ⊛ kernel`` shaped like ``b``, NaN where a pixel was not used.

        ``spectrum`` (an :class:`~kernelfit.forward.ExtendedSpectrum` of this pair) makes the
        convolution reuse the image's FFT.
        """
        if spectrum is None:
            prediction = convolve_extended(self.extended, np.asarray(kernel, dtype=np.float64))
        else:
            prediction = spectrum.convolve_valid(kernel)
        return self.embed(np.subtract(self.b_used, prediction, dtype=np.float64), copy=False)

    def embed(self, values_used: np.ndarray, *, copy=True) -> np.ndarray:
        """Place an array over the used rectangle into a NaN array shaped like ``b``.

        ``copy=False`` lets it write into (and return) ``values_used`` itself when that is a
        float64 array the caller no longer needs.
        """
        block = np.array(values_used, dtype=np.float64, copy=copy or None)
        if self.use is not None:
            block[~self.use] = np.nan
        if block.shape == tuple(self.b_shape):
            # The used rectangle is all of b: no NaN frame to fill (on a large image, one
            # fewer image-sized array to allocate and write).
            return block
        out = np.full(self.b_shape, np.nan)
        out[self.geometry.used] = block
        return out


def prepare_pair(a, b, shape, *, boundary, center=None, mask=None, label="",
                 saturation=None, saturation_a=None) -> PreparedPair:
    """Validate one pair ``(a, b)`` and work out the usable pixels.

    ``label`` (e.g. ``"[2]"``) is appended to parameter names in error messages when the user
    passed lists of pairs.  ``saturation`` (for ``b``) and ``saturation_a`` are ``None``, a
    level > 0 (pixels ``>=`` it are saturated), a ``(floor, ceiling)`` pair (either may be
    None; pixels ``<=`` the floor are clipped too) or ``'auto'`` (detect a clipped ceiling and
    floor; see :func:`~kernelfit.defects.detect_saturation`).  A saturated pixel of ``b`` is dropped by
    itself; one of ``a`` drops every pixel of ``b`` whose footprint touches it.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.ones((6, 6)); b[0, 0] = np.nan
    >>> prepare_pair(np.ones((6, 6)), b, 3, boundary="fill").n_used
    35
    >>> b = np.arange(36.0).reshape(6, 6)
    >>> pair = prepare_pair(np.ones((6, 6)), b, 3, boundary="fill", saturation=30)
    >>> pair.n_used, pair.notes["n_saturated_b"]
    (30, 6)
    """
    saturation = check_saturation_option(saturation, "saturation")
    saturation_a = check_saturation_option(saturation_a, "saturation_a")
    a_given, b_given = a, b
    a = as_image(a, f"a{label}")
    b = as_image(b, f"b{label}")
    # From the dtype as given (valid now): as_image has made integers float64.
    q_a, q_b = quantisation_variance(a_given), quantisation_variance(b_given)
    for name, image in (("b", b), ("a", a)):
        if not all_finite(image) and not np.isfinite(image).any():
            raise ValueError(f"{name}{label} has no finite pixels")
    output_size = output_size_of(a.shape, b.shape, normalize_shape(shape))
    geometry = make_geometry(a.shape, shape, boundary=boundary, center=center,
                             output_size=output_size)
    # Views of the caller's arrays where possible: nothing below writes into them.
    extended = geometry.extend(np.asarray(a, dtype=np.float64))
    b_used = np.asarray(geometry.crop(b), dtype=np.float64)
    use = np.ones(b_used.shape, bool) if all_finite(b_used) else np.isfinite(b_used)
    notes = {}
    finite_a = all_finite(extended)
    if saturation_a is not None:
        floor_a, level_a, message = _limits(a, saturation_a)
        notes.update(saturation_a=level_a, saturation_a_floor=floor_a,
                     saturation_a_message=message,
                     n_saturated_a=_count_clipped(a, floor_a, level_a),
                     n_dropped_by_saturation_a=0)
        if level_a is not None or floor_a is not None:
            # NaN compares False: NaN pixels are handled below, not counted here.
            spoiled = _touches(_clipped(extended, floor_a, level_a), geometry.kernel_shape)
            notes["n_dropped_by_saturation_a"] = int(np.count_nonzero(spoiled))
            use &= ~spoiled
    if not finite_a:
        bad_a = ~np.isfinite(extended)
        use &= ~_touches(bad_a, geometry.kernel_shape)
        extended = np.where(bad_a, 0.0, extended)
    if saturation is not None:
        # No growth: a clipped b pixel is wrong by itself (clipping follows the convolution).
        floor_b, level_b, message = _limits(b, saturation)
        notes.update(saturation_b=level_b, saturation_b_floor=floor_b,
                     saturation_b_message=message,
                     n_saturated_b=_count_clipped(b, floor_b, level_b))
        use &= ~_clipped(b_used, floor_b, level_b)
    for name, given, option in (("b", b_given, saturation), ("a", a_given, saturation_a)):
        note = "" if option is not None else clipping_note(given)
        if note:
            notes[f"clipping_{name}"] = f"{name}{label}: {note}"
    if mask is not None:
        use &= geometry.crop(_as_mask(mask, b.shape, f"mask{label}"))
    if not use.any():
        raise ValueError(
            f"no usable pixel is left in b{label}: every pixel is masked, non-finite"
            + (", saturated" if saturation is not None else "") + ", or has a non-finite"
            + (" or saturated" if saturation_a is not None else "")
            + " pixel of a under its kernel footprint"
        )
    if not use.all():
        b_used = np.where(use, b_used, 0.0)
    return PreparedPair(geometry, extended, b_used, None if use.all() else use, b.shape,
                        notes=notes, quantisation_var=q_b, quantisation_var_a=q_a)


def _limits(image, option) -> tuple[float | None, float | None, str]:
    """The clipping floor and ceiling for ``option`` and a line saying so.

    ``option`` is a ceiling (a float), a ``(floor, ceiling)`` pair, or 'auto' (both ends
    detected; see :func:`~kernelfit.defects.detect_saturation` and ``detect_floor``).
    """
    if option == "auto":
        top, bottom = detect_saturation(image), detect_floor(image)
        message = top.message if bottom.level is None else (
            bottom.message if top.level is None else f"{top.message}; {bottom.message}")
        return bottom.level, top.level, message
    if isinstance(option, tuple):
        floor, ceiling = option
        given = [f"{word} {level:.6g}" for word, level in (("floor", floor),
                                                            ("ceiling", ceiling))
                 if level is not None]
        return floor, ceiling, "saturation " + " and ".join(given or ["none"]) + " given"
    return None, option, f"saturation level {option:.6g} given"


def _clipped(image, floor, ceiling) -> np.ndarray:
    """Pixels at or beyond a limit (compared in float64; NaN is never clipped)."""
    out = np.zeros(np.shape(image), bool)
    if ceiling is not None:
        out |= image >= np.float64(ceiling)
    if floor is not None:
        out |= image <= np.float64(floor)
    return out


def _count_clipped(image, floor, ceiling) -> int:
    """Finite pixels at or beyond a limit, 0 for no limits."""
    return int(np.count_nonzero(_clipped(image, floor, ceiling) & np.isfinite(image)))


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
    """For each 'valid' output pixel, whether its footprint contains a ``bad`` pixel."""
    return box_counts(bad, kernel_shape) > 0


def _single(a) -> bool:
    """One image (an array, or a nested list of numbers), not a list of images."""
    if not isinstance(a, (list, tuple)):
        return True
    return len(a) > 0 and all(np.ndim(row) <= 1 for row in a)


def _prepare_pairs(a, b, shape, *, mask, **options) -> list[PreparedPair]:
    if _single(a) and _single(b):
        return [prepare_pair(a, b, shape, mask=mask, **options)]
    if _single(a) or _single(b) or len(a) != len(b) or len(a) == 0:
        raise ValueError("a and b must both be images, or lists of the same non-zero length")
    masks = [None] * len(a) if mask is None else mask
    if not isinstance(masks, (list, tuple)) or len(masks) != len(a):
        raise ValueError("with lists of pairs, mask must be None or a list of the same length")
    return [prepare_pair(ai, bi, shape, mask=mi, label=f"[{i}]", **options)
            for i, (ai, bi, mi) in enumerate(zip(a, b, masks))]
