"""Physical widths of parametric kernels: FWHM, ellipticity and angle, with standard errors.

Each family's parameters are its own (σ, Moffat's α and β, a disk's radius); what people
compare across instruments and tools is the full width at half maximum, in pixels:

* ``gaussian``: ``fwhm = 2√(2 ln 2)·σ``;
* ``elliptical``: ``fwhm_major``, ``fwhm_minor`` (from the larger and smaller σ),
  ``ellipticity = 1 − minor/major`` and ``angle``, the major axis's direction in degrees
  (as ``theta``: counter-clockwise as displayed, 0 along the columns), in ``[0, 180)``;
* ``moffat``: ``fwhm = 2α·√(2^(1/β) − 1)``;
* ``disk``: ``fwhm = 2·radius`` (a top hat is at full height out to its edge);
* ``box`` and ``motion``: their ``width``/``height`` and ``length`` are already widths.

Standard errors follow from the fit's covariance of its fitted parameters by the delta
method (the gradient taken by central differences), so they are as honest as ``fit.cov``.

Examples
--------
>>> import numpy as np
>>> values, errors = physical_parameters("gaussian", {"sigma": 2.0}, np.array([[1e-4]]),
...                                      ["sigma"])
>>> round(values["fwhm"], 4), round(errors["fwhm"], 5)
(4.7096, 0.02355)
"""

from __future__ import annotations

import numpy as np

GAUSSIAN_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _gaussian(p):
    return {"fwhm": GAUSSIAN_FWHM * p["sigma"]}


def _elliptical(p):
    major, minor = max(p["sigma_x"], p["sigma_y"]), min(p["sigma_x"], p["sigma_y"])
    angle = p["theta"] if p["sigma_x"] >= p["sigma_y"] else p["theta"] + 90.0
    return {"fwhm_major": GAUSSIAN_FWHM * major, "fwhm_minor": GAUSSIAN_FWHM * minor,
            "ellipticity": 1.0 - minor / major, "angle": float(np.mod(angle, 180.0))}


def _moffat(p):
    return {"fwhm": 2.0 * p["alpha"] * np.sqrt(2.0 ** (1.0 / p["beta"]) - 1.0)}


def _disk(p):
    return {"fwhm": 2.0 * p["radius"]}


WIDTHS = {"gaussian": _gaussian, "elliptical": _elliptical, "moffat": _moffat, "disk": _disk}


def physical_parameters(model, params, cov, free):
    """FWHM and friends of a parametric fit, with their standard errors.

    Parameters
    ----------
    model : str
        The family's name (``fit.model``).
    params : dict
        ``fit.params``.
    cov : ndarray or None
        Covariance of the fitted parameters, in the order of ``free``.
    free : sequence of str
        The names of the fitted parameters (``fit.info['free']``).

    Returns
    -------
    values, errors : dict, dict
        Empty for a family without a width of its own; ``errors`` NaN where ``cov`` is
        missing or does not cover what a width depends on.
    """
    width = WIDTHS.get(model)
    if width is None:
        return {}, {}
    values = {name: float(value) for name, value in width(params).items()}
    errors = {name: float("nan") for name in values}
    free = list(free or [])
    if cov is None or np.shape(cov) != (len(free), len(free)):
        return values, errors
    gradient = _gradient(width, params, free, values)
    spread = np.einsum("ni,ij,nj->n", gradient, np.asarray(cov, dtype=np.float64), gradient)
    for name, variance in zip(values, spread):
        errors[name] = float(np.sqrt(variance)) if variance >= 0 else float("nan")
    return values, errors


def _gradient(width, params, free, values) -> np.ndarray:
    """``∂ value / ∂ parameter``, one row per value, one column per fitted parameter."""
    gradient = np.zeros((len(values), len(free)))
    for j, name in enumerate(free):
        if name not in params:
            continue
        step = 1e-6 * max(abs(float(params[name])), 1.0)
        up, down = dict(params), dict(params)
        up[name] = params[name] + step
        down[name] = params[name] - step
        above, below = width(up), width(down)
        for i, key in enumerate(values):
            change = above[key] - below[key]
            if key == "angle":   # across the 0/180 seam
                change = (change + 90.0) % 180.0 - 90.0
            gradient[i, j] = change / (2.0 * step)
    return gradient
