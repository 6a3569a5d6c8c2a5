"""Parametric kernel families: Gaussian, elliptical Gaussian, Moffat, disk, motion line, box.

A family describes the *shape* of a kernel with a few numbers (``sigma``, ``radius``, ...).
Two things are common to every family and handled by the base class :class:`KernelModel`:

* the **amplitude**, which is the kernel's sum: :meth:`KernelModel.evaluate` returns the shape
  normalised to sum exactly 1 over the kernel array, times ``amplitude``;
* a **sub-pixel centre offset** ``(dy, dx)``: the model's centre sits at ``center + (dy, dx)``
  in kernel-array coordinates.

Geometry and units
------------------
Pixel ``(row, col)`` of a kernel array is a unit square centred on integer coordinates; the
model is evaluated at the offsets ``y = row − cy − dy`` (rows, increasing downwards) and
``x = col − cx − dx`` (columns, increasing to the right), all in pixels.  In kernelfit's
convolution orientation a point in ``a`` becomes the kernel itself in ``b`` (not a mirrored
copy), so the geometry of a kernel is the geometry of the blur seen in ``b``.

Angles are in **degrees, counter-clockwise as the image is displayed** (row 0 at the top, as
``matplotlib.pyplot.imshow`` shows it): angle 0 points along +columns, angle 90 points *up*,
towards row 0.  This is the convention of MATLAB's ``fspecial('motion', len, theta)``.

Sampling
--------
``Gaussian`` is sampled at pixel centres exactly as :func:`scipy.ndimage.gaussian_filter`
builds its weights (or pixel-integrated with ``sampling='integrated'``); ``Elliptical`` and
``Moffat`` are sampled at pixel centres.  ``Disk``, ``Motion`` and ``Box`` are anti-aliased by
their **exact** pixel-area coverage, computed in closed form (no supersampling):

* ``Disk``: the area of each pixel square inside the circle, from the primitive of
  ``sqrt(r² − x²)`` combined over the pixel's four corners;
* ``Motion``: the area of each pixel inside a ``length × 1`` rectangle (a unit-width line
  segment with flat ends) rotated by ``angle``: the vertical chord of a convex polygon clipped
  to a pixel is piecewise linear in ``x``, so the midpoint rule between its breakpoints is
  exact;
* ``Box``: the overlap of each pixel with a ``width × height`` axis-aligned rectangle (a
  product of 1-D overlaps), so edge pixels get fractional weights.

Writing your own family
-----------------------
Subclass :class:`KernelModel`, set ``name`` and ``param_names``, implement
``profile(params, y, x)`` (unnormalised values at pixel offsets; arrays of the kernel's
shape) and, if you can, ``profile_derivatives``; override ``bounds`` and ``start`` to give
the fitter physical limits and a first guess from the kernel's moments.  Derivatives that are
not supplied are taken by central differences.

Examples
--------
>>> import numpy as np
>>> from kernelfit.models.parametric import Gaussian
>>> k = Gaussian(truncate=4.0).evaluate({"sigma": 1.0}, (9, 9))
>>> round(float(k.sum()), 12), k.shape
(1.0, (9, 9))
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.special

from ..core.conventions import normalize_center, normalize_shape

__all__ = [
    "KernelModel", "Gaussian", "Elliptical", "Moffat", "Disk", "Motion", "Box",
    "Moments", "kernel_moments", "make_model", "MODEL_CLASSES",
]

_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
# Relative step of the central differences used where a family has no analytic derivative:
# about eps^(1/3), which balances rounding (eps/h) against truncation (h²).
_FD_STEP = 6e-6


# ---------------------------------------------------------------------------------------------
# Moments of a kernel: where first guesses come from
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Moments:
    """Zeroth, first and second moments of a (non-negative part of a) kernel.

    Attributes
    ----------
    total : float
        Sum of the kernel (before clipping negative values).
    dy, dx : float
        Centroid relative to the kernel's centre index, in pixels.
    cov : (2, 2) ndarray
        Second central moments in ``(row, col)`` coordinates, in pixels², of the kernel's
        values at pixel centres.  For a smooth profile sampled at pixel centres they are the
        profile's own moments; an area-sampled (pixel-integrated) kernel has 1/12 more per
        axis, which the coverage families take off in their ``start``.
    """

    total: float
    dy: float
    dx: float
    cov: np.ndarray

    @property
    def axis_variance(self) -> float:
        """Mean of the two axis variances (``trace(cov) / 2``), at least 0."""
        return max(float(np.trace(self.cov)) / 2.0, 0.0)

    def principal(self):
        """``(major variance, minor variance, angle of the major axis in degrees)``.

        The angle follows the module's convention (counter-clockwise as displayed).
        """
        vals, vecs = np.linalg.eigh(self.cov)
        major = vecs[:, 1]  # (row, col) direction
        # Row increases downwards: the displayed direction is (col, −row).
        angle = np.degrees(np.arctan2(-major[0], major[1]))
        return max(vals[1], 0.0), max(vals[0], 0.0), _wrap_half_turn(angle)


def kernel_moments(kernel, center=None, *, floor=0.02) -> Moments:
    """Moments of a kernel estimate, robust to the noise of a free fit.

    Values below ``floor`` times the peak are ignored (clipped to zero), so that noise in the
    wide tails of a free-form estimate does not inflate the second moments.

    Parameters
    ----------
    kernel : (kh, kw) array_like
    center : (int, int), optional
        Default ``((kh-1)//2, (kw-1)//2)``.
    floor : float, default 0.02
        Fraction of the peak below which pixels are ignored.

    Returns
    -------
    Moments

    Examples
    --------
    >>> k = Gaussian().evaluate([2.0], (21, 21))
    >>> m = kernel_moments(k, floor=0.0)
    >>> round(m.axis_variance ** 0.5, 2)
    2.0
    """
    k = np.asarray(kernel, dtype=np.float64)
    shape = normalize_shape(k.shape, "kernel.shape")
    cy, cx = normalize_center(center, shape)
    total = float(k.sum())
    w = np.clip(k - floor * max(k.max(), 0.0), 0.0, None)
    s = w.sum()
    if not s > 0:
        return Moments(total, 0.0, 0.0, np.zeros((2, 2)))
    y = np.arange(shape[0])[:, None] - cy
    x = np.arange(shape[1])[None, :] - cx
    my, mx = float((w * y).sum() / s), float((w * x).sum() / s)
    yy = float((w * (y - my) ** 2).sum() / s)
    xx = float((w * (x - mx) ** 2).sum() / s)
    xy = float((w * (y - my) * (x - mx)).sum() / s)
    return Moments(total, my, mx, np.array([[max(yy, 0.0), xy], [xy, max(xx, 0.0)]]))


# ---------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------

class KernelModel:
    """Base class of parametric kernel families; subclass it for a family of your own.

    A subclass sets :attr:`name` and :attr:`param_names` and implements :meth:`profile`
    (or, for full control of the pixel grid, :meth:`raw`).  Everything else has defaults:

    * :meth:`evaluate` normalises the profile to sum 1 over the kernel array and multiplies
      by ``amplitude`` (so the amplitude *is* the kernel sum);
    * :meth:`jacobian` uses :meth:`profile_derivatives` when the subclass provides it, else
      central differences;
    * :meth:`bounds` are unbounded, :meth:`start` asks for ``x0``, :meth:`candidates` is
      ``[start]``, :meth:`canonical` is the identity.

    Attributes
    ----------
    name : str
        Name used in results and messages.
    param_names : tuple of str
        The shape parameters, in the order of every parameter vector.
    angle_params : tuple of str
        The parameters that are angles in degrees (for messages and canonical forms).
    n_starts : int
        How many of the best :meth:`candidates` the fitter refines (default 3).
    symmetric : bool
        True when every kernel of the family, centred in an odd-sized array with no offset,
        is unchanged by flipping its rows or its columns.  It lets ``boundary='reflect'``
        fits use exact statistics from two DCTs instead of the full Gram matrix (the fitter
        checks the fitted kernel and falls back if the claim is wrong).

    Examples
    --------
    A Lorentzian-like family in a few lines:

    >>> import numpy as np
    >>> class Cauchy(KernelModel):
    ...     name, param_names = "cauchy", ("gamma",)
    ...     def profile(self, params, y, x):
    ...         return 1.0 / (1.0 + (x * x + y * y) / params[0] ** 2)
    ...     def bounds(self, shape):
    ...         return [(0.05, 10.0 * max(shape))]
    ...     def start(self, moments, shape):
    ...         return [1.0]
    >>> k = Cauchy().evaluate([1.5], (7, 7), amplitude=2.0)
    >>> round(float(k.sum()), 12)
    2.0
    """

    name: str = "custom"
    param_names: tuple[str, ...] = ()
    angle_params: tuple[str, ...] = ()
    n_starts: int = 3
    symmetric: bool = False

    # -- what a subclass provides -------------------------------------------------------------

    def profile(self, params, y, x):
        """Unnormalised kernel values at pixel offsets ``y`` (down) and ``x`` (right).

        ``y`` and ``x`` are arrays of the kernel's shape, measured from the model's
        (sub-pixel) centre.  Subclasses implement this or :meth:`raw`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement profile() or raw()")

    def profile_derivatives(self, params, y, x):
        """Optional analytic derivatives: ``(values, d_params, d_y, d_x)`` or ``None``.

        ``d_params`` has shape ``(len(param_names),) + y.shape``; ``d_y``/``d_x`` are the
        derivatives with respect to the *coordinates* ``y``/``x``.  ``None`` (the default)
        means central differences.
        """
        return None

    def bounds(self, shape) -> list[tuple[float, float]]:
        """``[(low, high), ...]`` per parameter for a kernel of ``shape``."""
        return [(-np.inf, np.inf)] * len(self.param_names)

    def start(self, moments: Moments, shape):
        """A first guess of the parameters from the moments of a free-form estimate."""
        raise NotImplementedError(
            f"model {self.name!r} has no default starting values; pass x0= to the fit"
        )

    def candidates(self, moments: Moments, shape) -> np.ndarray:
        """Starting points tried by the fitter, ``(n, len(param_names))``.

        Families whose objective can have several minima (an angle, a radius) return a
        grid here; the fitter screens them all cheaply and refines the best.
        """
        return np.atleast_2d(np.asarray(self.start(moments, shape), dtype=np.float64))

    def canonical(self, params) -> np.ndarray:
        """The canonical form of equivalent parameter vectors (e.g. angles wrapped)."""
        return np.asarray(params, dtype=np.float64)

    # -- the pixel grid -----------------------------------------------------------------------

    def raw(self, params, shape, center, offset):
        """Unnormalised kernel on the pixel grid (default: :meth:`profile` at the offsets)."""
        y, x = pixel_offsets(shape, center, offset)
        return np.asarray(self.profile(params, y, x), dtype=np.float64)

    def raw_derivatives(self, params, shape, center, offset):
        """``(raw, d_raw)`` with ``d_raw`` over ``(params..., dy, dx)``, or ``None``."""
        y, x = pixel_offsets(shape, center, offset)
        out = self.profile_derivatives(params, y, x)
        if out is None:
            return None
        values, d_params, d_y, d_x = out
        m = len(self.param_names)
        d = np.empty((m + 2,) + tuple(shape))
        d[:m] = np.reshape(d_params, (m,) + tuple(shape))
        # y = row − cy − dy, so ∂/∂dy = −∂/∂y (and likewise for x).
        d[m], d[m + 1] = -np.asarray(d_y), -np.asarray(d_x)
        return np.asarray(values, dtype=np.float64), d

    # -- public evaluation --------------------------------------------------------------------

    def evaluate(self, params, shape, center=None, offset=None, amplitude=None) -> np.ndarray:
        """The kernel: the shape normalised to sum 1 over the array, times ``amplitude``.

        Parameters
        ----------
        params : sequence of float, or dict
            The shape parameters in the order of :attr:`param_names`, or a dict by name
            (which may also hold ``'amplitude'``, ``'dy'`` and ``'dx'``).
        shape : int or (kh, kw)
            Kernel size.
        center : (int, int), optional
            Kernel index of the model's centre; default ``((kh-1)//2, (kw-1)//2)``.
        offset : (float, float), optional
            Sub-pixel shift ``(dy, dx)`` of the centre, in pixels (default 0, or the dict's).
        amplitude : float, optional
            The kernel sum (default 1, or the dict's ``'amplitude'``).

        Returns
        -------
        (kh, kw) ndarray

        Examples
        --------
        >>> k = Box().evaluate({"width": 2.5, "height": 1.0}, (1, 5))
        >>> (k * 2.5).round(6).tolist()
        [[0.0, 0.75, 1.0, 0.75, 0.0]]
        """
        shape, center = _shape_center(shape, center)
        theta, offset, amplitude = self._split(params, offset, amplitude)
        return amplitude * self.unit_kernel(theta, shape, center, offset)

    def unit_kernel(self, params, shape, center, offset=(0.0, 0.0)) -> np.ndarray:
        """The kernel normalised to sum 1 (no validation; used by the fitter)."""
        raw = self.raw(params, shape, center, offset)
        return raw / _checked_sum(raw, self, params)

    def jacobian(self, params, shape, center=None, offset=None) -> np.ndarray:
        """Derivatives of the unit-sum kernel with respect to ``(params..., dy, dx)``.

        Parameters
        ----------
        params, shape, center, offset :
            As in :meth:`evaluate` (an amplitude in a dict is ignored: the result is for
            amplitude 1; multiply by it).

        Returns
        -------
        (len(param_names) + 2, kh, kw) ndarray
            Angles are differentiated per degree.

        Examples
        --------
        >>> import numpy as np
        >>> g = Gaussian()
        >>> J = g.jacobian([1.3], (7, 7))
        >>> step = 1e-6
        >>> fd = (g.evaluate([1.3 + step], 7) - g.evaluate([1.3 - step], 7)) / (2 * step)
        >>> bool(np.allclose(J[0], fd, atol=1e-8))
        True
        """
        shape, center = _shape_center(shape, center)
        theta, offset, _ = self._split(params, offset, None)
        return self.unit_kernel_and_jacobian(theta, shape, center, offset)[1]

    def unit_kernel_and_jacobian(self, params, shape, center, offset=(0.0, 0.0)):
        """``(unit-sum kernel, derivatives over (params..., dy, dx))`` (no validation)."""
        params = np.asarray(params, dtype=np.float64)
        analytic = self.raw_derivatives(params, shape, center, offset)
        if analytic is not None:
            raw, d_raw = analytic
            total = _checked_sum(raw, self, params)
            k = raw / total
            # d(raw / Σraw) = (d_raw − k·Σd_raw) / Σraw
            d = (d_raw - k[None] * d_raw.sum(axis=(1, 2))[:, None, None]) / total
            return k, d
        return self._numerical_jacobian(params, shape, center, offset)

    def _numerical_jacobian(self, params, shape, center, offset):
        k = self.unit_kernel(params, shape, center, offset)
        m = len(params)
        full = np.concatenate([params, np.asarray(offset, dtype=np.float64)])
        d = np.empty((m + 2,) + tuple(shape))
        lows = [lo for lo, _ in self.bounds(shape)] + [-np.inf, -np.inf]
        for j in range(m + 2):
            h = _FD_STEP * max(abs(full[j]), 1.0)
            up, down = full.copy(), full.copy()
            up[j] += h
            down[j] -= h
            if down[j] < lows[j]:   # one-sided at a lower bound (e.g. a length near 0)
                down[j] = full[j]
            k_up = self.unit_kernel(up[:m], shape, center, up[m:])
            k_down = self.unit_kernel(down[:m], shape, center, down[m:])
            d[j] = (k_up - k_down) / (up[j] - down[j])
        return k, d

    def _split(self, params, offset, amplitude):
        """Parameters, offset and amplitude from a sequence or a dict, validated."""
        m = len(self.param_names)
        if isinstance(params, dict):
            unknown = set(params) - set(self.param_names) - {"amplitude", "dy", "dx"}
            missing = [n for n in self.param_names if n not in params]
            if unknown or missing:
                raise ValueError(
                    f"params={params!r}: model {self.name!r} takes {self.param_names} "
                    "(and optionally 'amplitude', 'dy', 'dx')"
                    + (f"; unknown {sorted(unknown)}" if unknown else "")
                    + (f"; missing {missing}" if missing else ""))
            theta = [params[n] for n in self.param_names]
            if offset is None:
                offset = (params.get("dy", 0.0), params.get("dx", 0.0))
            if amplitude is None:
                amplitude = params.get("amplitude", 1.0)
        else:
            theta = params
        theta = np.asarray(theta, dtype=np.float64).ravel()
        if theta.size != m or not np.all(np.isfinite(theta)):
            raise ValueError(f"params={params!r}: model {self.name!r} needs {m} finite "
                             f"values {self.param_names}")
        offset = (0.0, 0.0) if offset is None else offset
        try:
            offset = tuple(float(v) for v in offset)
        except (TypeError, ValueError):
            raise ValueError(f"offset={offset!r} must be a pair of numbers (dy, dx)") from None
        if len(offset) != 2 or not np.all(np.isfinite(offset)):
            raise ValueError(f"offset={offset!r} must be a pair of finite numbers (dy, dx)")
        amplitude = 1.0 if amplitude is None else amplitude
        if isinstance(amplitude, bool) or not isinstance(amplitude, numbers.Real) \
                or not np.isfinite(amplitude):
            raise ValueError(f"amplitude={amplitude!r} must be a finite number")
        for value, name, (lo, hi) in zip(theta, self.param_names, self.bounds((99, 99))):
            if name not in self.angle_params and lo > 0 and value <= 0:
                raise ValueError(f"{name}={value!r} must be positive for model {self.name!r}")
        return theta, offset, float(amplitude)

    def __repr__(self):
        options = getattr(self, "_options", {})
        inner = ", ".join(f"{k}={v!r}" for k, v in options.items())
        return f"{type(self).__name__}({inner})"


def pixel_offsets(shape, center, offset):
    """Offsets ``(y, x)`` of every pixel centre from the model's centre, kernel-shaped."""
    kh, kw = shape
    y = (np.arange(kh) - center[0] - offset[0])[:, None] * np.ones((1, kw))
    x = (np.arange(kw) - center[1] - offset[1])[None, :] * np.ones((kh, 1))
    return y, x


def _shape_center(shape, center):
    shape = normalize_shape(shape)
    return shape, normalize_center(center, shape)


def _checked_sum(raw, model, params):
    total = float(raw.sum())
    if not (np.isfinite(total) and total != 0.0):
        raise ValueError(
            f"model {model.name!r} with params {np.round(params, 6).tolist()} is zero (or not "
            "finite) everywhere on the kernel grid; it may have moved off the kernel")
    return total


def _wrap_half_turn(angle):
    """Wrap an angle in degrees to ``[-90, 90)`` (an orientation, period 180°)."""
    return (np.asarray(angle) + 90.0) % 180.0 - 90.0


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive finite number")
    return float(value)


def _log_grid(lo, hi, n):
    return np.exp(np.linspace(np.log(lo), np.log(hi), n))


# ---------------------------------------------------------------------------------------------
# Gaussian (circular)
# ---------------------------------------------------------------------------------------------

class Gaussian(KernelModel):
    """Circular Gaussian with standard deviation ``sigma`` (pixels), as ``gaussian_filter``.

    With the default ``sampling='center'`` the kernel is the outer product of the 1-D weights
    ``exp(−x²/2σ²)`` at pixel centres, normalised: exactly the weights
    :func:`scipy.ndimage.gaussian_filter` applies along each axis, so ``sigma`` means what it
    means there.  ``truncate=T`` cuts the support to ``|x| ≤ int(T·σ + 0.5)`` along each axis
    (gaussian_filter's radius; the support is a square).  So a kernel of shape
    ``(2r+1, 2r+1)`` with ``r = int(T·σ + 0.5)`` reproduces
    ``gaussian_filter(a, σ, truncate=T)`` exactly; a larger shape adds zeros, a smaller one
    cuts the support further (the kernel is then normalised over what remains).
    ``truncate=None`` uses the whole kernel array.

    With ``sampling='integrated'`` each 1-D weight is the Gaussian's integral over the pixel,
    ``Φ((x+½)/σ) − Φ((x−½)/σ)`` (computed from ``erfc`` on the far side, so tails keep full
    relative precision), which stays accurate for ``σ`` well below one pixel.

    Parameters
    ----------
    truncate : float, optional
        Support radius in units of ``sigma``, as in gaussian_filter (default: whole array).
        The radius jumps with ``sigma``, so the fit's objective has small steps there.
    sampling : {'center', 'integrated'}, default 'center'

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi, kernelfit as kf
    >>> a = np.random.default_rng(0).random((32, 32))
    >>> k = Gaussian(truncate=4.0).evaluate([1.2], (11, 11))
    >>> bool(np.allclose(kf.convolve(a, k, boundary="reflect", center=(5, 5)),
    ...                  ndi.gaussian_filter(a, 1.2, mode="reflect", truncate=4.0),
    ...                  rtol=0, atol=1e-13))
    True
    """

    name = "gaussian"
    param_names = ("sigma",)
    n_starts = 1   # the objective in σ has a single basin; the grid screening finds it
    symmetric = True

    def __init__(self, truncate=None, sampling="center"):
        if truncate is not None:
            truncate = _positive("truncate", truncate)
        if sampling not in ("center", "integrated"):
            raise ValueError(f"sampling={sampling!r} must be 'center' or 'integrated'")
        self.truncate = truncate
        self.sampling = sampling
        self._options = {"truncate": truncate, "sampling": sampling}

    def bounds(self, shape):
        return [(0.05, 2.0 * max(shape))]

    def start(self, moments, shape):
        return [max(np.sqrt(moments.axis_variance), 0.3)]

    def candidates(self, moments, shape):
        grid = _log_grid(0.2, max(shape) / 2.0, 24)
        return np.concatenate([self.start(moments, shape), grid])[:, None]

    def _weights(self, sigma, n, c, d, derivatives):
        """1-D weights on ``n`` pixels (centre index ``c``, offset ``d``), and derivatives
        with respect to ``sigma`` and ``d``."""
        i = np.arange(n) - c
        x = i - d
        if self.sampling == "center":
            w = np.exp(-0.5 / (sigma * sigma) * x * x)
            dw_ds = w * x * x / sigma**3 if derivatives else None
            dw_dd = w * x / sigma**2 if derivatives else None
        else:
            up, lo = (x + 0.5) / (sigma * _SQRT2), (x - 0.5) / (sigma * _SQRT2)
            right = x > 0
            # On the right, erfc(lo) − erfc(up) keeps the tail's relative precision; on the
            # left, the mirror image.
            w = np.where(right, 0.5 * (scipy.special.erfc(lo) - scipy.special.erfc(up)),
                         0.5 * (scipy.special.erfc(-up) - scipy.special.erfc(-lo)))
            if derivatives:
                phi_up = _INV_SQRT_2PI * np.exp(-0.5 * ((x + 0.5) / sigma) ** 2)
                phi_lo = _INV_SQRT_2PI * np.exp(-0.5 * ((x - 0.5) / sigma) ** 2)
                dw_ds = (-(x + 0.5) * phi_up + (x - 0.5) * phi_lo) / sigma**2
                dw_dd = -(phi_up - phi_lo) / sigma
            else:
                dw_ds = dw_dd = None
        if self.truncate is not None:
            outside = np.abs(i) > int(self.truncate * sigma + 0.5)
            w = np.where(outside, 0.0, w)
            if derivatives:
                dw_ds = np.where(outside, 0.0, dw_ds)
                dw_dd = np.where(outside, 0.0, dw_dd)
        return w, dw_ds, dw_dd

    def raw(self, params, shape, center, offset):
        sigma = float(params[0])
        wy = self._weights(sigma, shape[0], center[0], offset[0], False)[0]
        wx = self._weights(sigma, shape[1], center[1], offset[1], False)[0]
        return np.outer(wy, wx)

    def raw_derivatives(self, params, shape, center, offset):
        sigma = float(params[0])
        wy, sy, dy = self._weights(sigma, shape[0], center[0], offset[0], True)
        wx, sx, dx = self._weights(sigma, shape[1], center[1], offset[1], True)
        raw = np.outer(wy, wx)
        d = np.stack([np.outer(sy, wx) + np.outer(wy, sx), np.outer(dy, wx), np.outer(wy, dx)])
        return raw, d


# ---------------------------------------------------------------------------------------------
# Elliptical Gaussian
# ---------------------------------------------------------------------------------------------

class Elliptical(KernelModel):
    """Elliptical Gaussian: ``sigma_x`` along the axis at ``theta`` degrees, ``sigma_y`` across.

    ``exp(−u²/2σx² − v²/2σy²)`` at pixel centres, normalised, where ``u`` is the coordinate
    along the direction at angle ``theta`` (counter-clockwise as displayed, 0 = along the
    columns) and ``v`` the coordinate across it.  ``(σx, σy, θ)`` and ``(σy, σx, θ + 90)``
    describe the same kernel; :meth:`canonical` returns the form with ``σx ≥ σy`` and
    ``θ`` in ``[-90, 90)``.

    Examples
    --------
    >>> import numpy as np
    >>> k = Elliptical().evaluate([3.0, 1.0, 90.0], (15, 15))
    >>> bool(k[:, 7].sum() > k[7, :].sum())   # long axis vertical
    True
    """

    name = "elliptical"
    param_names = ("sigma_x", "sigma_y", "theta")
    angle_params = ("theta",)

    def __init__(self):
        self._options = {}

    def bounds(self, shape):
        big = 2.0 * max(shape)
        return [(0.05, big), (0.05, big), (-270.0, 270.0)]

    def start(self, moments, shape):
        major, minor, angle = moments.principal()
        return [max(np.sqrt(major), 0.3), max(np.sqrt(minor), 0.3), float(angle)]

    def candidates(self, moments, shape):
        sx, sy, angle = self.start(moments, shape)
        rows = [[sx, sy, angle]]
        for f1 in (0.6, 1.0, 1.6):
            for f2 in (0.6, 1.0, 1.6):
                for a in np.arange(-90.0, 90.0, 22.5):
                    rows.append([sx * f1, sy * f2, a])
        return np.array(rows)

    def canonical(self, params):
        sx, sy, theta = np.asarray(params, dtype=np.float64)
        if sx < sy:
            sx, sy, theta = sy, sx, theta + 90.0
        return np.array([sx, sy, float(_wrap_half_turn(theta))])

    def profile_derivatives(self, params, y, x):
        sx, sy, theta = params
        t = np.radians(theta)
        c, s = np.cos(t), np.sin(t)
        # Displayed coordinates are (x, −y): u along (cos t, sin t), v across it.
        u = x * c - y * s
        v = x * s + y * c
        p = np.exp(-0.5 * (u * u / sx**2 + v * v / sy**2))
        d_sx = p * u * u / sx**3
        d_sy = p * v * v / sy**3
        # ∂u/∂t = −v, ∂v/∂t = u  ⇒  ∂p/∂t = p·u·v·(1/σx² − 1/σy²); per degree.
        d_t = p * u * v * (1.0 / sx**2 - 1.0 / sy**2) * (np.pi / 180.0)
        d_x = -p * (u * c / sx**2 + v * s / sy**2)
        d_y = -p * (-u * s / sx**2 + v * c / sy**2)
        return p, np.stack([d_sx, d_sy, d_t]), d_y, d_x

    def profile(self, params, y, x):
        return self.profile_derivatives(params, y, x)[0]


# ---------------------------------------------------------------------------------------------
# Moffat
# ---------------------------------------------------------------------------------------------

class Moffat(KernelModel):
    """Moffat profile ``(1 + r²/α²)^(−β)`` at pixel centres, normalised (astronomy's PSF).

    ``alpha`` is the core width in pixels, ``beta`` the wing exponent (large β approaches a
    Gaussian with ``σ ≈ α/√(2β)``; β ≈ 2.5–4.5 is typical of seeing-limited stars).  The
    full width at half maximum is ``2α·sqrt(2^(1/β) − 1)``.

    Examples
    --------
    >>> k = Moffat().evaluate({"alpha": 2.0, "beta": 3.0}, (11, 11))
    >>> bool(abs(k.sum() - 1) < 1e-12 and k[5, 5] == k.max())
    True
    """

    name = "moffat"
    param_names = ("alpha", "beta")
    symmetric = True

    def __init__(self):
        self._options = {}

    def bounds(self, shape):
        return [(0.05, 4.0 * max(shape)), (0.05, 50.0)]

    def start(self, moments, shape):
        # Per-axis variance of a 2-D Moffat is α²/(2(β−2)) for β > 2; guess β = 3.
        return [max(np.sqrt(2.0 * moments.axis_variance), 0.3), 3.0]

    def candidates(self, moments, shape):
        rows = [self.start(moments, shape)]
        for beta in (1.2, 1.8, 2.5, 3.5, 5.0, 8.0, 14.0):
            for alpha in _log_grid(0.3, max(shape), 14):
                rows.append([alpha, beta])
        return np.array(rows)

    def profile_derivatives(self, params, y, x):
        alpha, beta = params
        q = (x * x + y * y) / alpha**2
        p = (1.0 + q) ** (-beta)
        d_alpha = p * beta * 2.0 * q / (alpha * (1.0 + q))
        d_beta = -p * np.log1p(q)
        common = -p * beta * 2.0 / (alpha**2 * (1.0 + q))
        return p, np.stack([d_alpha, d_beta]), common * y, common * x

    def profile(self, params, y, x):
        alpha, beta = params
        return (1.0 + (x * x + y * y) / alpha**2) ** (-beta)


# ---------------------------------------------------------------------------------------------
# Disk: exact pixel-area coverage of a circle
# ---------------------------------------------------------------------------------------------

def _circle_primitive(t, r):
    """``∫_0^t sqrt(r² − s²) ds`` for ``0 ≤ t ≤ r``."""
    return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0.0)) + r * r * np.arcsin(t / r))


def _quadrant_area(X, Y, r):
    """Area of the disk of radius ``r`` (centred at 0) inside ``[0, X] × [0, Y]``, X, Y ≥ 0."""
    Xm = np.minimum(X, r)
    inside = Y < r
    # Where the circle's height exceeds Y (|x| < xc) the chord is capped at Y.
    xc = np.sqrt(np.maximum(r * r - Y * Y, 0.0))
    xa = np.where(inside, np.minimum(Xm, xc), 0.0)
    return Y * xa * inside + _circle_primitive(Xm, r) - _circle_primitive(xa, r)


def disk_coverage(y, x, radius):
    """Exact area of each unit pixel (centred at ``(y, x)``) inside a disk at the origin.

    The oriented area over ``[0, X] × [0, Y]`` is ``sign(X)·sign(Y)·Q(|X|, |Y|)`` by symmetry,
    and a pixel's area is the alternating sum of that over its four corners.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[-6:7, -6:7].astype(float)
    >>> bool(np.isclose(disk_coverage(y, x, 4.3).sum(), np.pi * 4.3 ** 2, rtol=1e-13))
    True
    """
    r = float(radius)
    total = 0.0
    for sy, Y in ((1, y + 0.5), (-1, y - 0.5)):
        for sx, X in ((1, x + 0.5), (-1, x - 0.5)):
            total = total + sy * sx * np.sign(X) * np.sign(Y) * _quadrant_area(
                np.abs(X), np.abs(Y), r)
    return np.clip(total, 0.0, 1.0)


class Disk(KernelModel):
    """Uniform disk of ``radius`` pixels (defocus), anti-aliased by exact pixel coverage.

    Each pixel's weight is the area of the pixel square inside the circle, computed in
    closed form (see :func:`disk_coverage`), then normalised.  The kernel changes
    continuously with the radius and the centre, which lets a fit find sub-pixel radii.

    Examples
    --------
    >>> k = Disk().evaluate([1.0], (3, 3))
    >>> round(float(k[1, 1]), 4), round(float(k[0, 0]), 4)
    (0.3183, 0.0251)
    """

    name = "disk"
    param_names = ("radius",)
    symmetric = True

    def __init__(self):
        self._options = {}

    def bounds(self, shape):
        return [(0.05, float(np.hypot(*shape)))]

    def start(self, moments, shape):
        # Per-axis variance of a uniform disk is r²/4, plus 1/12 from the pixel area.
        return [max(2.0 * np.sqrt(max(moments.axis_variance - 1.0 / 12.0, 0.0)), 0.5)]

    def candidates(self, moments, shape):
        grid = np.linspace(0.5, max(shape) / 2.0 + 0.5, 4 * max(shape))
        return np.concatenate([self.start(moments, shape), grid])[:, None]

    def profile(self, params, y, x):
        return disk_coverage(y, x, params[0])


# ---------------------------------------------------------------------------------------------
# Motion: exact pixel-area coverage of a rotated unit-width segment
# ---------------------------------------------------------------------------------------------

def _convex_coverage(a, b, d, y, x):
    """Area of each unit pixel (centres ``y`` down, ``x`` right) inside a convex polygon.

    The polygon is ``{(X, Y) : a_i·X + b_i·Y ≤ d_i}`` in displayed coordinates
    (``X = x``, ``Y = −y``).  Inside a pixel the polygon's vertical chord at ``X`` is linear
    between breakpoints (pairwise intersections of the polygon's edges and the pixel's top
    and bottom), so the midpoint rule between sorted breakpoints is exact.
    """
    x0, x1 = x - 0.5, x + 0.5
    y0, y1 = -y - 0.5, -y + 0.5
    vertical = np.abs(b) < 1e-12
    lines = [(a[i], b[i], d[i]) for i in range(len(a))]
    # Lines of the pixel's bottom and top edges: 0·X + 1·Y = y0 / y1.
    breaks = [x0, x1]
    for i, (ai, bi, di) in enumerate(lines):
        if vertical[i]:
            breaks.append(np.full_like(x, di / ai))
            continue
        for edge in (y0, y1):
            if ai != 0:
                breaks.append((di - bi * edge) / ai)
        for aj, bj, dj in lines[i + 1:]:
            det = ai * bj - aj * bi
            if abs(det) > 1e-12:
                breaks.append(np.full_like(x, (di * bj - dj * bi) / det))
    B = np.sort(np.clip(np.stack(breaks), x0, x1), axis=0)
    mid = 0.5 * (B[1:] + B[:-1])
    width = B[1:] - B[:-1]
    top = np.broadcast_to(y1, mid.shape).copy()
    bottom = np.broadcast_to(y0, mid.shape).copy()
    ok = np.ones(mid.shape, bool)
    for i, (ai, bi, di) in enumerate(lines):
        if vertical[i]:
            ok &= ai * mid <= di
        elif bi > 0:
            top = np.minimum(top, (di - ai * mid) / bi)
        else:
            bottom = np.maximum(bottom, (di - ai * mid) / bi)
    chord = np.where(ok, np.maximum(top - bottom, 0.0), 0.0)
    return np.clip((chord * width).sum(axis=0), 0.0, 1.0)


def segment_coverage(y, x, length, angle, width=1.0):
    """Exact area of each unit pixel inside a ``length × width`` rectangle at ``angle``.

    The rectangle (a line segment of the given width with flat ends) is centred at the
    origin, its long axis at ``angle`` degrees counter-clockwise as displayed.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[-7:8, -7:8].astype(float)
    >>> bool(np.isclose(segment_coverage(y, x, 9.3, 23.0).sum(), 9.3, rtol=1e-12))
    True
    """
    t = np.radians(angle)
    c, s = np.cos(t), np.sin(t)
    half_l, half_w = 0.5 * float(length), 0.5 * float(width)
    # |u| ≤ L/2 and |v| ≤ w/2 with u = X c + Y s, v = −X s + Y c.
    a = np.array([c, -c, -s, s])
    b = np.array([s, -s, c, -c])
    d = np.array([half_l, half_l, half_w, half_w])
    return _convex_coverage(a, b, d, y, x)


class Motion(KernelModel):
    """Linear motion blur: a segment of ``length`` pixels at ``angle`` degrees, anti-aliased.

    The kernel is the exact area of each pixel inside a ``length × 1`` rectangle (the path of
    a one-pixel-wide point moving ``length`` pixels, with flat ends) centred on the kernel
    centre, normalised (see :func:`segment_coverage`).  A horizontal blur of odd integer
    length ``L`` is ``L`` equal weights, like MATLAB's ``fspecial('motion', L, 0)``.  The
    angle is an orientation (period 180°); :meth:`canonical` wraps it to ``[-90, 90)``.

    Examples
    --------
    >>> k = Motion().evaluate({"length": 5, "angle": 0}, (5, 7))
    >>> (k[2] * 5).round(12).tolist()
    [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    """

    name = "motion"
    param_names = ("length", "angle")
    angle_params = ("angle",)

    def __init__(self):
        self._options = {}

    def bounds(self, shape):
        return [(0.05, 2.0 * float(np.hypot(*shape))), (-270.0, 270.0)]

    def start(self, moments, shape):
        major, _, angle = moments.principal()
        # Along the segment the variance is L²/12, plus about 1/12 from the pixel area.
        return [max(np.sqrt(max(12.0 * major - 1.0, 0.0)), 1.0), float(angle)]

    def candidates(self, moments, shape):
        length, angle = self.start(moments, shape)
        rows = [[length, angle]]
        for f in (0.5, 0.75, 1.0, 1.33, 2.0):
            for a in np.arange(-90.0, 90.0, 7.5):
                rows.append([length * f, a])
        return np.array(rows)

    def canonical(self, params):
        length, angle = np.asarray(params, dtype=np.float64)
        return np.array([length, float(_wrap_half_turn(angle))])

    def profile(self, params, y, x):
        return segment_coverage(y, x, params[0], params[1])


# ---------------------------------------------------------------------------------------------
# Box
# ---------------------------------------------------------------------------------------------

def _overlap(x, size):
    """Length of ``[x − ½, x + ½] ∩ [−size/2, size/2]``."""
    return np.clip(np.minimum(x + 0.5, size / 2.0) - np.maximum(x - 0.5, -size / 2.0), 0.0, 1.0)


class Box(KernelModel):
    """Axis-aligned box of ``width`` (columns) × ``height`` (rows) pixels, continuous sizes.

    Each pixel's weight is its exact area inside the rectangle (normalised to sum 1): a width
    of 4.4 centred on a pixel covers three columns fully and two by 0.7; shifted by
    ``dx = 0.5`` it covers four fully and two by 0.2.  With odd integer sizes it is the usual
    uniform (mean) filter.

    Examples
    --------
    >>> k = Box().evaluate([3, 3], (3, 3))
    >>> bool((k == k[0, 0]).all())
    True
    """

    name = "box"
    param_names = ("width", "height")
    symmetric = True

    def __init__(self):
        self._options = {}

    def bounds(self, shape):
        return [(0.05, 2.0 * shape[1]), (0.05, 2.0 * shape[0])]

    def start(self, moments, shape):
        # A uniform interval of length L has variance L²/12, plus 1/12 from the pixel area.
        return [max(np.sqrt(max(12.0 * moments.cov[1, 1] - 1.0, 0.0)), 1.0),
                max(np.sqrt(max(12.0 * moments.cov[0, 0] - 1.0, 0.0)), 1.0)]

    def candidates(self, moments, shape):
        w, h = self.start(moments, shape)
        rows = [[w, h]]
        for fw in (0.5, 0.75, 1.0, 1.33, 2.0):
            for fh in (0.5, 0.75, 1.0, 1.33, 2.0):
                rows.append([w * fw, h * fh])
        return np.array(rows)

    def profile_derivatives(self, params, y, x):
        w, h = params
        ox, oy = _overlap(x, w), _overlap(y, h)
        # The overlap grows at half the rate of the size at each active (clipped) edge.
        dox_dw = 0.5 * (((x + 0.5) > w / 2) & (ox > 0)).astype(float) \
            + 0.5 * (((x - 0.5) < -w / 2) & (ox > 0)).astype(float)
        doy_dh = 0.5 * (((y + 0.5) > h / 2) & (oy > 0)).astype(float) \
            + 0.5 * (((y - 0.5) < -h / 2) & (oy > 0)).astype(float)
        # ∂overlap/∂x: +1 while the box's left edge cuts the pixel (the pixel moves further
        # in), −1 while its right edge does.
        dox_dx = (((x - 0.5) < -w / 2) & (ox > 0)).astype(float) \
            - (((x + 0.5) > w / 2) & (ox > 0)).astype(float)
        doy_dy = (((y - 0.5) < -h / 2) & (oy > 0)).astype(float) \
            - (((y + 0.5) > h / 2) & (oy > 0)).astype(float)
        return ox * oy, np.stack([dox_dw * oy, ox * doy_dh]), ox * doy_dy, dox_dx * oy

    def profile(self, params, y, x):
        return _overlap(x, params[0]) * _overlap(y, params[1])


MODEL_CLASSES = {
    "gaussian": Gaussian,
    "elliptical": Elliptical,
    "moffat": Moffat,
    "disk": Disk,
    "motion": Motion,
    "box": Box,
}


def make_model(model, **options) -> KernelModel:
    """A model object from a name (``'gaussian'``, ...) and its options, or the object itself.

    Parameters
    ----------
    model : str or KernelModel
    **options
        Options of the family, e.g. ``truncate=4.0`` for ``'gaussian'``.

    Examples
    --------
    >>> make_model("gaussian", truncate=4.0)
    Gaussian(truncate=4.0, sampling='center')
    """
    if isinstance(model, KernelModel):
        if options:
            raise ValueError(f"model options {sorted(options)} are only accepted with a model "
                             "name; set them on the model object instead")
        return model
    if isinstance(model, str) and model.lower() in MODEL_CLASSES:
        cls = MODEL_CLASSES[model.lower()]
        try:
            return cls(**options)
        except TypeError:
            raise ValueError(f"model={model!r} does not take the options {sorted(options)}") \
                from None
    raise ValueError(f"model={model!r} is not a parametric family; use one of "
                     f"{sorted(MODEL_CLASSES)} or a KernelModel object")
