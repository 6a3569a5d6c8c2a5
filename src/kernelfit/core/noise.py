"""The noise model of ``b``: per-pixel variances or weights, or a CCD's gain and read noise.

Astronomers know the noise of every pixel: a variance map from their pipeline, or the
detector's gain and read noise, from which the variance follows from the (expected) signal.
A least-squares fit that gives every pixel the weight ``1/variance`` is the maximum-likelihood
fit under Gaussian noise, and its residual has a reduced χ² of 1.  This module turns the
options of :func:`kernelfit.estimate` (``variance=``, ``weights=``, ``gain=``,
``read_noise=``) into one checked :class:`NoiseModel` and, for an image, into its weights.

The CCD model: with the signal ``s`` in ADU (data units), the gain ``g`` in electrons per
ADU and the read noise ``r`` in electrons, the variance in ADU² is

    var = max(s, 0) / g + (r / g)²

(Poisson noise of ``s·g`` electrons, plus read noise, converted to ADU).  ``s`` is ``b``
itself for a first fit and the fitted model of ``b`` once one exists: the model is not
correlated with the pixel's own noise, so weights from it do not bias the fit.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NoiseModel:
    """A checked noise model of ``b`` (at most one of its three forms is set).

    Attributes
    ----------
    variance : ndarray or list of ndarray or None
        Per-pixel variance of ``b`` (units of b²), shaped like ``b`` (a list for a list of
        ``b``); ``inf`` drops a pixel.
    weights : ndarray or list of ndarray or None
        Per-pixel inverse variance; ``0`` drops a pixel.
    gain, read_noise : float or None
        The CCD model: electrons per ADU, and the read noise in electrons (default 0).
    """

    variance: Any = None
    weights: Any = None
    gain: float | None = None
    read_noise: float | None = None

    @property
    def given(self) -> bool:
        """Whether any noise model was given (otherwise every pixel has one weight)."""
        return self.variance is not None or self.weights is not None or self.gain is not None

    @property
    def needs_signal(self) -> bool:
        """Whether the variance follows from the signal (the CCD model)."""
        return self.gain is not None


def check_noise_options(*, variance=None, weights=None, gain=None, read_noise=None) -> NoiseModel:
    """Validate ``estimate()``'s noise options; shapes are checked later, against ``b``.

    Examples
    --------
    >>> check_noise_options(gain=2.0, read_noise=5.0).needs_signal
    True
    >>> check_noise_options(variance=1.0, weights=1.0)
    Traceback (most recent call last):
    ...
    ValueError: give at most one of variance=, weights= and gain= (the noise model of b); got variance, weights
    """
    given = [name for name, value in (("variance", variance), ("weights", weights),
                                      ("gain", gain)) if value is not None]
    if len(given) > 1:
        raise ValueError("give at most one of variance=, weights= and gain= (the noise model "
                         f"of b); got {', '.join(given)}")
    if gain is not None and not _positive_number(gain):
        raise ValueError(f"gain={gain!r} must be a finite number > 0 (electrons per ADU)")
    if read_noise is not None:
        if gain is None:
            raise ValueError(f"read_noise={read_noise!r} needs gain= (electrons per ADU) to "
                             "convert it to data units")
        if not (_real(read_noise) and np.isfinite(read_noise) and read_noise >= 0):
            raise ValueError(f"read_noise={read_noise!r} must be a finite number >= 0 "
                             "(electrons)")
    return NoiseModel(variance=variance, weights=weights,
                      gain=None if gain is None else float(gain),
                      read_noise=None if read_noise is None else float(read_noise))


def pixel_weights(noise: NoiseModel, b_shape, *, index=None, signal=None) -> np.ndarray | None:
    """The inverse variance of every pixel of one ``b`` (0 where a pixel must not be used).

    Parameters
    ----------
    noise : NoiseModel
    b_shape : tuple of int
        Shape of this ``b``.
    index : int, optional
        Which pair of a list (``variance``/``weights`` given as lists).
    signal : ndarray, optional
        The signal of ``b`` in data units (``b`` itself, or its fitted model); required by
        the CCD model.

    Returns
    -------
    ndarray of float64 shaped like ``b``, or None when no noise model was given.

    Examples
    --------
    >>> noise = check_noise_options(variance=np.full((2, 2), 4.0))
    >>> pixel_weights(noise, (2, 2))
    array([[0.25, 0.25],
           [0.25, 0.25]])
    >>> ccd = check_noise_options(gain=2.0, read_noise=4.0)
    >>> pixel_weights(ccd, (1, 2), signal=np.array([[0.0, 8.0]])).tolist()   # var = s/2 + 4
    [[0.25, 0.125]]
    """
    if not noise.given:
        return None
    if noise.needs_signal:
        if signal is None:
            raise ValueError("the CCD noise model (gain=) needs the signal of b")
        signal = np.asarray(signal, dtype=np.float64)
        read = 0.0 if noise.read_noise is None else (noise.read_noise / noise.gain) ** 2
        variance = np.maximum(np.nan_to_num(signal, nan=0.0), 0.0) / noise.gain + read
        with np.errstate(divide="ignore"):
            # A pixel of zero signal and no read noise has no noise: give it the largest
            # finite weight of the image rather than an infinite one.
            weights = np.where(variance > 0, 1.0 / np.where(variance > 0, variance, 1.0), 0.0)
        if np.any(variance <= 0):
            top = weights.max() if np.any(weights > 0) else 1.0
            weights[variance <= 0] = top
        return weights
    name = "variance" if noise.variance is not None else "weights"
    values = _pick(getattr(noise, name), index, name)
    values = _as_map(values, b_shape, name)
    if name == "variance":
        if np.any(np.isnan(values)) or np.any(values <= 0):
            raise ValueError("variance= must be > 0 where it is not inf (inf drops a pixel; "
                             "use mask= for pixels without a variance); found "
                             f"{_bad_count(np.isnan(values) | (values <= 0))}")
        with np.errstate(divide="ignore"):
            return 1.0 / values
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise ValueError("weights= must be finite and >= 0 (0 drops a pixel); found "
                         f"{_bad_count(~np.isfinite(values) | (values < 0))}")
    return values


def _pick(value, index, name):
    if isinstance(value, (list, tuple)):
        if index is None or index >= len(value):
            raise ValueError(f"{name}= is a list of {len(value)} maps; give one per pair of "
                             "images")
        return value[index]
    return value


def _as_map(value, b_shape, name) -> np.ndarray:
    values = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) \
        else value.astype(np.float64, copy=False)
    if values.ndim == 0:
        return np.full(b_shape, float(values))
    if values.shape != tuple(b_shape):
        raise ValueError(f"{name}= has shape {values.shape}; it must be shaped like b "
                         f"{tuple(b_shape)} (or be one number)")
    return values


def _bad_count(bad) -> str:
    return f"{int(np.count_nonzero(bad))} such pixel(s)"


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _positive_number(value) -> bool:
    return _real(value) and bool(np.isfinite(value)) and value > 0
