"""Conventions: boundary modes, kernel centre, and which pixels of ``b`` a kernel explains.

Everything about geometry lives here, so that the forward model, the statistics and the
solvers agree by construction.  The single rule, the one ``scipy.signal.convolve2d`` follows::

    b[i] = sum_j k[j] * a[i + center - j]

where ``a`` outside its bounds is supplied by the boundary mode.  Every case is reduced to one
form: an *extended* image ``P`` (``a`` padded, or ``a`` itself) whose 'valid' convolution with
``k`` equals a rectangle of ``b`` (the *used* rectangle).  The statistics and the forward model
only ever see ``P`` and that rectangle.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

BOUNDARIES = ("valid", "fill", "wrap", "reflect", "nearest", "mirror")

# scipy.signal, scipy.ndimage and numpy spell the same boundaries differently.  We follow
# scipy.ndimage (reflect = half-sample symmetric, mirror = whole-sample symmetric).
_ALIASES = {
    "valid": "valid",
    "fill": "fill", "constant": "fill", "grid-constant": "fill", "zeros": "fill",
    "wrap": "wrap", "circular": "wrap", "grid-wrap": "wrap", "periodic": "wrap",
    "reflect": "reflect", "symm": "reflect", "symmetric": "reflect", "grid-mirror": "reflect",
    "nearest": "nearest", "edge": "nearest", "extend": "nearest",
    "mirror": "mirror",
}

# The numpy.pad mode that extends an image the way each boundary does.
_NUMPY_PAD_MODE = {
    "fill": "constant",
    "wrap": "wrap",
    "reflect": "symmetric",
    "nearest": "edge",
    "mirror": "reflect",
}

OUTPUT_SIZES = ("same", "valid", "full")


def normalize_boundary(boundary) -> str:
    """Return the canonical name of a boundary mode, accepting scipy's and numpy's aliases.

    Examples
    --------
    >>> normalize_boundary("symm")
    'reflect'
    """
    if isinstance(boundary, str) and boundary.lower() == "auto":
        # kf.estimate(boundary='auto') chooses a rule (kernelfit.auto) before reaching here.
        raise ValueError("boundary='auto' is chosen from the data by kernelfit.estimate only; "
                         "here name the rule: "
                         f"{', '.join(repr(b) for b in BOUNDARIES)}")
    if not isinstance(boundary, str) or boundary.lower() not in _ALIASES:
        raise ValueError(
            f"boundary={boundary!r} is not a known boundary mode; use one of "
            f"{', '.join(repr(b) for b in BOUNDARIES)}"
        )
    return _ALIASES[boundary.lower()]


def normalize_shape(shape, name: str = "shape") -> tuple[int, int]:
    """Turn an int or a pair of ints into a validated ``(kh, kw)`` kernel shape."""
    pair = (shape, shape) if isinstance(shape, numbers.Integral) else shape
    try:
        kh, kw = pair
    except (TypeError, ValueError):
        raise TypeError(f"{name}={shape!r} must be an int or a pair of ints (kh, kw)") from None
    for n in (kh, kw):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{name}={shape!r} must be an int or a pair of ints (kh, kw)")
        if n < 1:
            raise ValueError(f"{name}={shape!r}: kernel sizes must be positive")
    return int(kh), int(kw)


def default_center(shape: tuple[int, int]) -> tuple[int, int]:
    """scipy.signal's centre ``((kh-1)//2, (kw-1)//2)``; scipy.ndimage uses ``(kh//2, kw//2)``."""
    return ((shape[0] - 1) // 2, (shape[1] - 1) // 2)


def normalize_center(center, shape: tuple[int, int]) -> tuple[int, int]:
    """Validate ``center`` (an index into the kernel) or return the default for ``shape``."""
    if center is None:
        return default_center(shape)
    try:
        cy, cx = center
    except (TypeError, ValueError):
        raise TypeError(f"center={center!r} must be a pair of ints (row, column)") from None
    for c, n in zip((cy, cx), shape):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise TypeError(f"center={center!r} must be a pair of ints (row, column)")
        if not 0 <= c < n:
            raise ValueError(f"center={center!r} lies outside a kernel of shape {shape}")
    return int(cy), int(cx)


@dataclass(frozen=True)
class Geometry:
    """How a kernel of ``kernel_shape`` maps an image of ``image_shape`` onto ``b``.

    Attributes
    ----------
    image_shape, kernel_shape : tuple of int
    center : tuple of int
        Index of the kernel element that lands on the output pixel.
    boundary : str
        Canonical boundary mode; ``'valid'`` means no padding at all.
    output_size : {'same', 'valid', 'full'}
        How ``b``'s shape relates to ``a``'s.
    pad : ((top, bottom), (left, right))
        Padding that turns ``a`` into the extended image ``P``.
    used : (slice, slice)
        The rectangle of ``b`` equal to the 'valid' convolution of ``P`` with the kernel.
    """

    image_shape: tuple[int, int]
    kernel_shape: tuple[int, int]
    center: tuple[int, int]
    boundary: str
    output_size: str
    pad: tuple[tuple[int, int], tuple[int, int]]
    used: tuple[slice, slice]

    @property
    def output_shape(self) -> tuple[int, int]:
        """Shape of ``b`` for this geometry."""
        (H, W), (kh, kw) = self.image_shape, self.kernel_shape
        return {
            "same": (H, W),
            "valid": (H - kh + 1, W - kw + 1),
            "full": (H + kh - 1, W + kw - 1),
        }[self.output_size]

    @property
    def used_shape(self) -> tuple[int, int]:
        """Shape of the used rectangle of ``b``."""
        shape = self.output_shape
        return tuple(len(range(*s.indices(n))) for s, n in zip(self.used, shape))

    def extend(self, a: np.ndarray) -> np.ndarray:
        """Return the extended image ``P`` (``a`` padded by the boundary mode)."""
        if self.boundary == "valid" or not any(sum(p) for p in self.pad):
            return a
        return np.pad(a, self.pad, mode=_NUMPY_PAD_MODE[self.boundary])

    def crop(self, b: np.ndarray) -> np.ndarray:
        """Return the used rectangle of ``b`` (a view)."""
        return b[self.used]


def make_geometry(image_shape, kernel_shape, *, boundary, center=None, output_size="same"):
    """Build the :class:`Geometry` of a convolution; raise ``ValueError`` when impossible.

    Parameters
    ----------
    image_shape : (H, W)
    kernel_shape : (kh, kw)
    boundary : str
        A boundary mode (see :data:`BOUNDARIES`; aliases accepted).
    center : pair of int, optional
        Only meaningful when ``output_size == 'same'``.
    output_size : {'same', 'valid', 'full'}

    Examples
    --------
    >>> g = make_geometry((10, 10), (3, 3), boundary="valid")
    >>> g.used_shape
    (8, 8)
    """
    boundary = normalize_boundary(boundary)
    kh, kw = kernel_shape = normalize_shape(kernel_shape)
    cy, cx = center = normalize_center(center, kernel_shape)
    H, W = image_shape
    if output_size not in OUTPUT_SIZES:
        raise ValueError(f"mode={output_size!r} must be one of {OUTPUT_SIZES}")
    if output_size == "valid" or boundary == "valid":
        _require_valid_pixels(image_shape, kernel_shape)
    everything = (slice(None), slice(None))
    no_pad = ((0, 0), (0, 0))
    if output_size == "valid":
        return Geometry(image_shape, kernel_shape, center, "valid", "valid", no_pad, everything)
    if output_size == "same":
        if boundary == "valid":
            used = (slice(kh - 1 - cy, H - cy), slice(kw - 1 - cx, W - cx))
            return Geometry(image_shape, kernel_shape, center, boundary, "same", no_pad, used)
        pad = ((kh - 1 - cy, cy), (kw - 1 - cx, cx))
        return Geometry(image_shape, kernel_shape, center, boundary, "same", pad, everything)
    # 'full': every output pixel that any input pixel reaches.
    if boundary == "valid":
        used = (slice(kh - 1, H), slice(kw - 1, W))
        return Geometry(image_shape, kernel_shape, center, boundary, "full", no_pad, used)
    pad = ((kh - 1, kh - 1), (kw - 1, kw - 1))
    return Geometry(image_shape, kernel_shape, center, boundary, "full", pad, everything)


def _require_valid_pixels(image_shape, kernel_shape) -> None:
    (H, W), (kh, kw) = image_shape, kernel_shape
    if kh > H or kw > W:
        raise ValueError(
            f"shape={kernel_shape} is larger than the image ({H}x{W}), so no pixel of b has its "
            "footprint wholly inside a with boundary='valid'; use a smaller shape or say how b "
            "was made at the edges (boundary='fill', 'nearest', ...)"
        )


def output_size_of(image_shape, b_shape, kernel_shape) -> str:
    """Tell whether ``b`` is 'same'-, 'valid'- or 'full'-sized relative to ``a``."""
    (H, W), (kh, kw) = image_shape, kernel_shape
    b_shape = tuple(b_shape)
    if b_shape == (H, W):
        return "same"
    if b_shape == (H - kh + 1, W - kw + 1):
        return "valid"
    if b_shape == (H + kh - 1, W + kw - 1):
        return "full"
    raise ValueError(
        f"b has shape {b_shape}, which fits neither a's shape {(H, W)} ('same'), "
        f"{(H - kh + 1, W - kw + 1)} ('valid') nor {(H + kh - 1, W + kw - 1)} ('full') "
        f"for a kernel of shape {(kh, kw)}"
    )


def as_image(x, name: str) -> np.ndarray:
    """Validate one 2-D real image; integers become float64, float32 is kept.

    Boolean arrays are refused: a True/False array passed as an image is almost always a mask
    in the wrong place, and its "values" would silently become 0 and 1.  The masked pixels of
    a ``numpy.ma.MaskedArray`` become NaN (:func:`masked_as_nan`): unusable, never their
    hidden values.

    Examples
    --------
    >>> as_image([[1, 2], [3]], "a")
    Traceback (most recent call last):
    ...
    ValueError: a is not a rectangular array: its rows (or nested lists) have different lengths
    """
    if x is None:
        raise TypeError(f"{name} must be a 2-D numeric array, got None")
    x = masked_as_nan(x)
    try:
        arr = np.asarray(x)
    except ValueError:
        # NumPy's "inhomogeneous shape" error for ragged nested lists names no argument.
        raise ValueError(
            f"{name} is not a rectangular array: its rows (or nested lists) have different "
            "lengths"
        ) from None
    if arr.dtype == bool:
        hint = "" if name.startswith("kernel") else "; a mask of usable pixels goes in mask="
        raise TypeError(
            f"{name} is a boolean array; an image must hold numbers (convert it with "
            f"{name.split('[')[0]}.astype(float) if 0/1 values are meant{hint})"
        )
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr


def masked_as_nan(x):
    """A ``numpy.ma.MaskedArray`` as a plain array with NaN at its masked entries.

    kernelfit treats a masked pixel exactly like a NaN one (not used, and spoiling what it
    touches), so the mask must not be dropped by ``np.asarray``, which returns the hidden
    values.  Integer data become float64 (NaN needs a float), float32 stays float32.
    Anything that is not a masked array, or has no masked entry, is returned as it is (the
    plain data for a masked array without masked entries); so are masked arrays of a dtype
    that holds no numbers, for the caller's own dtype check.

    Examples
    --------
    >>> x = np.ma.MaskedArray([[1, 2], [3, 4]], mask=[[False, True], [False, False]])
    >>> masked_as_nan(x).tolist()
    [[1.0, nan], [3.0, 4.0]]
    """
    if not np.ma.isMaskedArray(x):
        return x
    data = np.ma.getdata(x)
    mask = np.ma.getmaskarray(x)
    if not mask.any():
        return data
    if data.dtype == bool or not np.issubdtype(data.dtype, np.number) \
            or np.iscomplexobj(data):
        return data
    dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float64
    out = np.array(data, dtype=dtype)
    out[mask] = np.nan
    return out
