"""Defects of real images that the model ``b = a ⊛ k + noise`` does not describe.

Two of them are handled here, both with plain NumPy:

**Saturation** (a clipped ceiling).  A sensor, an ``np.clip`` or a conversion to 8 bits replaces
every value above some level by the level itself.  Such a pixel of ``b`` no longer obeys the
model, so it must not enter the fit.  :func:`detect_saturation` finds the ceiling when the user
does not know it; :func:`~kernelfit.design.prepare_pair` masks it (``saturation=``).

* A clipped pixel of **b** is wrong by itself only: clipping happens *after* the convolution,
  so its neighbours, computed from the unclipped ``a``, are still right.  Its mask is therefore
  not grown by the kernel footprint.
* A clipped pixel of **a** (``saturation_a=``) is a wrong *input* to every output pixel whose
  kernel footprint covers it, exactly like a NaN in ``a``: all those pixels of ``b`` are dropped.

The test for a ceiling: let ``m`` be the largest finite value and ``n_max`` the number of pixels
equal to it.  A clipped ceiling is reported when

1. ``n_max >= max(min_count, min_fraction · n_finite)`` (defaults 5 pixels and 0.1 %): a real
   plateau, not a few coincidences;
2. ``n_max >= min_ratio · c`` (default 2), where ``c`` is the largest count among the
   ``n_levels`` (default 8) distinct values just below ``m``.  A smooth histogram (a photo's
   bright tail, sensor noise) puts about as many pixels on its top level as on the levels next
   to it; clipping piles the whole tail above the ceiling onto one level.  For continuous
   (float) data every level holds about one pixel, so test 1 decides; for quantised data
   (8/16-bit) this test tells a histogram peak near white from a clipped tail;
3. there are at least ``n_levels`` distinct values below ``m`` (a binary or few-level image has
   no histogram to compare with, and its top value is not a ceiling) and ``m > 0``.

Measured on scikit-image's ``camera`` (8-bit, unclipped): 271 pixels at 255 against 293 at
254, so no ceiling is reported; after ``np.clip(camera, 0, 204)``: 45,283 pixels at 204 against
at most 3,865 on the 8 levels below, a ceiling at 204.

**A floor** is the same defect at the other end: an 8-bit output clips at 0 as well as at 255
(a dark photo, a difference image, sensor black level).  :func:`detect_floor` applies the
mirrored test (a plateau at the minimum, piled above the histogram of the levels just above
it; condition 3's ``m > 0`` has no counterpart: a floor at 0 or below is the usual case), and
``saturation='auto'`` looks for both; ``saturation=(lo, hi)`` gives both levels (either may be
None).  :func:`clipping_note` says when many pixels sit at the ends of an integer dtype's range
and no saturation option was given: the fits that the model cannot explain then say why.

**Quantisation.**  An integer image holds values rounded to whole numbers.  kernelfit uses
integer images as their values (``as_image`` converts to float64 without rescaling; the file
readers keep 8/16-bit data as integers), so the least significant bit is 1.0 and rounding adds
independent, uniform noise of variance ``LSB² / 12 = 1/12`` to each pixel
(:func:`quantisation_variance`).  Float inputs carry no known step: 0.  How it enters the noise
model:

* rounding of ``b`` adds ``q_b = 1/12`` to the variance of every residual; rounding of ``a``
  adds ``‖k‖² · q_a`` (each output pixel is a weighted sum of rounded inputs) — at most ``q_a``
  for a non-negative kernel that sums to 1;
* the noise estimated from the residuals already contains these terms; the floor matters where
  the residuals understate it (a near-exact fit, few degrees of freedom): the noise used for
  ``stderr`` is ``sqrt(max(noise_std², q))`` with ``q = q_b + ‖k‖² q_a``;
* the discrepancy principle with a user's ``noise_std=σ`` (the sensor noise before rounding)
  aims at ``RSS = n · (σ² + q)``, not ``n · σ²``: otherwise it under-regularises 8-bit data
  whose σ is comparable to the rounding step.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["SaturationReport", "detect_saturation", "detect_floor", "quantisation_variance",
           "check_saturation_option", "clipping_note"]

MIN_FRACTION = 1e-3
MIN_COUNT = 5
MIN_RATIO = 2.0
N_LEVELS = 8


@dataclass(frozen=True)
class SaturationReport:
    """What :func:`detect_saturation` found.

    Attributes
    ----------
    level : float or None
        The ceiling (pixels ``>= level`` are saturated), or ``None`` when there is none.
    n_pixels : int
        Number of pixels at the ceiling (0 when none was found).
    message : str
        One line of evidence, for ``fit.info`` and the report.
    """

    level: float | None
    n_pixels: int
    message: str


def detect_saturation(image, *, min_fraction=MIN_FRACTION, min_count=MIN_COUNT,
                      min_ratio=MIN_RATIO, n_levels=N_LEVELS) -> SaturationReport:
    """Find a clipped ceiling: a plateau of many pixels at exactly the maximum value.

    See the module docstring for the test and its defaults.  Non-finite pixels are ignored.

    Parameters
    ----------
    image : array_like
        Any real array (its shape does not matter).
    min_fraction, min_count : float, int
        The plateau must hold at least ``max(min_count, min_fraction · n_finite)`` pixels.
    min_ratio : float
        ... and at least ``min_ratio`` times the count of any of the ``n_levels`` distinct
        values just below the maximum.
    n_levels : int
        How many levels below the maximum describe the histogram's tail.

    Returns
    -------
    SaturationReport

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((100, 100))
    >>> detect_saturation(x).level is None
    True
    >>> detect_saturation(np.clip(x, 0, 0.8)).level
    0.8
    """
    return _detect_plateau(image, "ceiling", min_fraction=min_fraction, min_count=min_count,
                           min_ratio=min_ratio, n_levels=n_levels)


def detect_floor(image, *, min_fraction=MIN_FRACTION, min_count=MIN_COUNT,
                 min_ratio=MIN_RATIO, n_levels=N_LEVELS) -> SaturationReport:
    """Find a clipped floor: a plateau of many pixels at exactly the minimum value.

    The mirror of :func:`detect_saturation` (same parameters), without its ``m > 0``
    condition: a floor at 0 is what an 8-bit conversion leaves.  ``level`` is the floor
    (pixels ``<= level`` are clipped).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((100, 100))
    >>> detect_floor(x).level is None
    True
    >>> detect_floor(np.clip(x, 0.2, 1)).level
    0.2
    """
    return _detect_plateau(image, "floor", min_fraction=min_fraction, min_count=min_count,
                           min_ratio=min_ratio, n_levels=n_levels)


def _detect_plateau(image, end, *, min_fraction, min_count, min_ratio, n_levels):
    """The test of the module docstring at the top (``end='ceiling'``) or bottom end."""
    values = np.asarray(image)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number) \
            or np.iscomplexobj(values):
        raise TypeError(f"detect_saturation needs a real numeric array, got dtype {values.dtype}")
    values = values.ravel()
    if not np.issubdtype(values.dtype, np.integer):
        values = values[np.isfinite(values)]
    if values.size == 0:
        return SaturationReport(None, 0, "no saturation: the image has no finite pixel")
    ceiling = end == "ceiling"
    extreme, word = (values.max(), "maximum") if ceiling else (values.min(), "minimum")
    n_max = int(np.count_nonzero(values == extreme))
    needed = max(int(min_count), int(np.ceil(min_fraction * values.size)))
    shown = f"{float(extreme):.6g}"
    if n_max < needed:
        return SaturationReport(
            None, 0, f"no saturation: {n_max} pixel(s) at the {word} {shown}, fewer than the "
            f"{needed} a clipped {end} needs")
    if ceiling and extreme <= 0:
        return SaturationReport(None, 0, f"no saturation: the maximum {shown} is not positive")
    levels, counts = np.unique(values[values < extreme] if ceiling else values[values > extreme],
                               return_counts=True)
    side = "below" if ceiling else "above"
    if levels.size < n_levels:
        return SaturationReport(
            None, 0, f"no saturation: only {levels.size} distinct value(s) {side} the {word} "
            f"{shown}; too few to tell a clipped {end} from the image's own values")
    nearest = counts[-n_levels:] if ceiling else counts[:n_levels]
    neighbour = int(nearest.max())
    if n_max < min_ratio * neighbour:
        return SaturationReport(
            None, 0, f"no saturation: {n_max} pixels at the {word} {shown}, but up to "
            f"{neighbour} on the {n_levels} levels {side} it: a smooth histogram, not a plateau")
    return SaturationReport(
        float(extreme), n_max, f"saturated: {n_max} pixels ({n_max / values.size:.2%}) at the "
        f"{end} {shown}, against at most {neighbour} on each of the {n_levels} levels {side}")


def quantisation_variance(original_array) -> float:
    """Variance of the rounding noise of an image, in the units kernelfit uses it in.

    Integer dtypes (``uint8``, ``uint16``, ``int32`` …) hold values rounded to whole numbers,
    used without rescaling, so the step is 1 and the variance ``1/12``.  Floating dtypes: 0
    (no known step).  Pass the array *as the user gave it*: after ``as_image`` it is float.

    Examples
    --------
    >>> import numpy as np
    >>> quantisation_variance(np.zeros(3, np.uint8))
    0.08333333333333333
    >>> quantisation_variance(np.zeros(3))
    0.0
    """
    dtype = np.asarray(original_array).dtype
    if dtype == bool or not np.issubdtype(dtype, np.number) \
            or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"quantisation_variance needs a real numeric array, got dtype {dtype}")
    return 1.0 / 12.0 if np.issubdtype(dtype, np.integer) else 0.0


def check_saturation_option(value, name: str):
    """Validate ``saturation=`` / ``saturation_a=``.

    ``None``; ``'auto'`` (detect a ceiling and a floor); a level > 0 (a ceiling: pixels
    ``>=`` it are clipped); or a pair ``(floor, ceiling)`` of finite numbers or None (pixels
    ``<= floor`` or ``>= ceiling`` are clipped; ``floor < ceiling``).  Returns ``None``,
    ``'auto'``, the level as a float, or the pair as a tuple of floats or None.

    Examples
    --------
    >>> check_saturation_option(255, "saturation")
    255.0
    >>> check_saturation_option((0, 255), "saturation")
    (0.0, 255.0)
    >>> check_saturation_option("magic", "saturation")
    Traceback (most recent call last):
    ...
    ValueError: saturation='magic' must be None, 'auto', a saturation level > 0 or a (floor, ceiling) pair
    """
    usage = "must be None, 'auto', a saturation level > 0 or a (floor, ceiling) pair"
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() == "auto":
            return "auto"
        raise ValueError(f"{name}={value!r} {usage}")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _check_limits(value, name, usage)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} {usage}; got {type(value).__name__}")
    level = float(value)
    if not np.isfinite(level) or level <= 0:
        raise ValueError(f"{name}={value!r} {usage}")
    return level


def _check_limits(value, name, usage):
    limits = []
    for level in value:
        if level is None:
            limits.append(None)
            continue
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Real):
            raise TypeError(f"{name}={value!r} {usage}; its levels must be numbers or None, "
                            f"got {type(level).__name__}")
        if not np.isfinite(level):
            raise ValueError(f"{name}={value!r} {usage}; its levels must be finite")
        limits.append(float(level))
    floor, ceiling = limits
    if floor is not None and ceiling is not None and not floor < ceiling:
        raise ValueError(f"{name}={value!r}: the floor must be below the ceiling")
    return floor, ceiling


def clipping_note(image) -> str:
    """A line saying that many pixels of an integer image sit at its dtype's range ends.

    ``image`` as the user gave it (its dtype matters).  "Many" is the plateau size of the
    module docstring (``max(5, 0.1 %)`` of the pixels); float images and lists give ``''``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(1000).reshape(40, 25).astype(np.uint8)
    >>> clipping_note(x)
    ''
    >>> print(clipping_note(np.minimum(np.arange(1000), 255).astype(np.uint8)))
    745 pixels (74.50%) sit at 255, the end of uint8's range 0..255: clipped values that no kernel explains (pass saturation=(0, 255) or saturation='auto' to leave them out)
    """
    dtype = getattr(image, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.integer):
        return ""
    values = np.asarray(image)
    info = np.iinfo(values.dtype)
    counts = {end: int(np.count_nonzero(values == end)) for end in (info.min, info.max)}
    needed = max(MIN_COUNT, int(np.ceil(MIN_FRACTION * values.size)))
    crowded = {end: n for end, n in counts.items() if n >= needed}
    if not crowded:
        return ""
    total = sum(crowded.values())
    where = " and ".join(str(end) for end in crowded)
    ends = "ends" if len(crowded) > 1 else "end"
    return (f"{total} pixels ({total / values.size:.2%}) sit at {where}, the {ends} of "
            f"{values.dtype}'s range {info.min}..{info.max}: clipped values that no kernel "
            f"explains (pass saturation=({info.min}, {info.max}) or saturation='auto' to "
            "leave them out)")
