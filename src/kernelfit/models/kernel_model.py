"""The base class of the parametric kernel families: :class:`KernelModel`.

Two things are common to every family and handled here:

* the **amplitude**, which is the kernel's sum: :meth:`KernelModel.evaluate` returns the shape
  normalised to sum exactly 1 over the kernel array, times ``amplitude``;
* a **sub-pixel centre offset** ``(dy, dx)``: the model's centre sits at ``center + (dy, dx)``
  in kernel-array coordinates.

A family provides the unnormalised ``profile`` (and, if it can, its derivatives); the base
class turns it into a unit-sum kernel and the Jacobian the fitter needs, by the quotient rule
or, without analytic derivatives, by central differences.  The geometry (pixel offsets,
angles) is that of :mod:`~kernelfit.models.parametric`.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..core.conventions import normalize_center, normalize_shape
from .moments import Moments

__all__ = ["KernelModel", "pixel_offsets"]

# Relative step of the central differences used where a family has no analytic derivative:
# about eps^(1/3), which balances rounding (eps/h) against truncation (h²).
_FD_STEP = 6e-6

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
        >>> from kernelfit.models.parametric import Box
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
        >>> from kernelfit.models.parametric import Gaussian
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

