"""The parametric kernel families: Gaussian, elliptical Gaussian, Moffat, disk, motion, box.

Each is a :class:`~kernelfit.models.kernel_model.KernelModel` with physical bounds, a first
guess from the kernel's moments and a grid of candidates for the fitter.  Geometry and angle
conventions are those of :mod:`~kernelfit.models.parametric`.

Sampling
--------
``Gaussian`` is sampled at pixel centres exactly as :func:`scipy.ndimage.gaussian_filter`
builds its weights (or pixel-integrated with ``sampling='integrated'``); ``Elliptical`` and
``Moffat`` are sampled at pixel centres.  ``Disk``, ``Motion`` and ``Box`` are anti-aliased by
their **exact** pixel-area coverage, computed in closed form (:mod:`~kernelfit.models.coverage`).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.special

from .coverage import disk_coverage, interval_overlap, segment_coverage
from .kernel_model import KernelModel
from .moments import _wrap_half_turn

__all__ = ["Gaussian", "Elliptical", "Moffat", "Disk", "Motion", "Box"]

_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


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
        ox, oy = interval_overlap(x, w), interval_overlap(y, h)
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
        return interval_overlap(x, params[0]) * interval_overlap(y, params[1])

