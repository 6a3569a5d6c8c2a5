"""Power-law kernels: ``k(r) = amplitude · r^(−exponent)`` off the centre, a free centre value.

The natural parametric answer to seed 000 (a 1/r kernel with 0 at the centre).  For a fixed
exponent the kernel is linear in ``(amplitude, center_value)``, so the fit is a 1-D search
over the exponent of the residual left after the best linear fit (*variable projection*):
a coarse grid guards against local minima, a bounded Brent search refines the best cell, and
Gauss–Newton steps on all three parameters finish to full precision.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize

from ..core.conventions import normalize_center, normalize_shape
from ._common import (
    PairData,
    StructuredFit,
    check_real,
    noise_level,
    radius_grid,
    solve_square_root,
)

# Spacing of the coarse grid in the exponent.  On seed 000 RSS(exponent) is unimodal on
# [0, 4] (checked on a 0.01 grid) and doubles within ±0.1 of its minimum: a 0.1 grid brackets
# the minimum for Brent, and would also see any other valley wider than 0.1.
GRID_STEP = 0.1
# Brent's tolerance in the exponent; Gauss–Newton then polishes to rounding level.
BRENT_XATOL = 1e-6
MAX_GAUSS_NEWTON = 20
PARAMS = ("amplitude", "exponent", "center_value")


def powerlaw_kernel(shape, center=None, *, amplitude=1.0, exponent=1.0, center_value=0.0):
    """``amplitude · r^(−exponent)`` at every pixel but the centre, ``center_value`` there.

    Parameters
    ----------
    shape : int or (kh, kw)
    center : (int, int), optional
        The pixel at ``r = 0``; default ``((kh−1)//2, (kw−1)//2)``.
    amplitude, exponent, center_value : float
        ``r`` is in pixels, so ``amplitude`` is the value at 1 px.

    Returns
    -------
    ndarray of shape ``shape``

    Examples
    --------
    >>> powerlaw_kernel(3, amplitude=2.0, exponent=2.0, center_value=5.0).tolist()
    [[1.0, 2.0, 1.0], [2.0, 5.0, 2.0], [1.0, 2.0, 1.0]]
    """
    shape = normalize_shape(shape)
    center = normalize_center(center, shape)
    amplitude = check_real(amplitude, "amplitude")
    exponent = check_real(exponent, "exponent")
    center_value = check_real(center_value, "center_value")
    kernel = amplitude * _Radii(shape, center).power(exponent)
    kernel[center] = center_value
    return kernel


class _Radii:
    """``r`` and ``log r`` of every kernel pixel (0 at the centre)."""

    def __init__(self, shape, center):
        d2 = radius_grid(shape, center).astype(float)
        self.off = d2 > 0
        self.r = np.sqrt(d2)
        self.log_r = np.zeros(shape)
        self.log_r[self.off] = 0.5 * np.log(d2[self.off])

    def power(self, exponent):
        """``r^(−exponent)`` off the centre, 0 at it."""
        out = np.zeros(self.r.shape)
        out[self.off] = np.exp(-exponent * self.log_r[self.off])
        return out


def fit_powerlaw(pairs, shape, center=None, *, exponent_bounds=(0.0, 4.0), method=None,
                 statistics=None):
    """Fit ``k(r) = amplitude · r^(−exponent)`` (``r > 0``) with a free value at the centre.

    Parameters
    ----------
    pairs : list of PreparedPair
        Image pairs from :func:`kernelfit.design.prepare_pair`, one kernel shared by all.
    shape : int or (kh, kw)
        Kernel shape the pairs were prepared with (at least 2 pixels).
    center : (int, int), optional
        The pixel at ``r = 0``; default: the convolution centre of the pairs.
    exponent_bounds : (float, float), default (0, 4)
        The exponent is searched in this closed interval.  A result on a bound has
        ``converged = False``: widen the bounds.  Equal bounds fix the exponent.
    method : {None, 'statistics', 'fft'}
        ``None``: the sufficient statistics when ``kh·kw ≤ 4096`` (each trial exponent then
        costs ``O(p²)``, independent of the image size), else two FFT convolutions per pair
        and trial exponent (any kernel size).
    statistics : SufficientStatistics, optional
        Sufficient statistics of exactly these pairs, when already computed (e.g. by a free
        fit); they are reused instead of computed (implies the statistics path).

    Returns
    -------
    StructuredFit
        ``params = {'amplitude', 'exponent', 'center_value'}`` (``r`` in pixels, so
        ``amplitude`` is the value at 1 px); ``stderr`` has the same keys and ``'kernel'``,
        from the Gauss–Newton covariance ``σ̂²(JᵀJ)⁻¹`` with Jacobian columns ``X r^−e``,
        ``X(−amplitude·log r·r^−e)`` and ``X δ_center``; ``cov`` is ordered as ``PARAMS``.

    Raises
    ------
    ValueError, TypeError
        For invalid ``pairs``, ``shape``, ``center``, ``exponent_bounds`` or ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.core.forward import convolve
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((40, 40))
    >>> truth = powerlaw_kernel(9, amplitude=0.5, exponent=1.5, center_value=2.0)
    >>> pair = prepare_pair(a, convolve(a, truth), 9, boundary="fill")
    >>> fit = fit_powerlaw([pair], 9)
    >>> {k: round(float(v), 8) for k, v in fit.params.items()}
    {'amplitude': 0.5, 'exponent': 1.5, 'center_value': 2.0}
    """
    started = time.perf_counter()
    data = PairData(pairs, shape, center, method, statistics)
    if data.shape[0] * data.shape[1] < 2:
        raise ValueError(f"shape={data.shape} has no pixel away from the centre: a power law "
                         "needs at least 2 pixels")
    lo, hi = _check_bounds(exponent_bounds)
    radii = _Radii(data.shape, data.center)
    c = data.center

    def linear_fit(exponent):
        """Best (amplitude, center_value) for this exponent, and the residual sum of squares."""
        R, z, rho2 = data.square_root(None, kernels=[radii.power(exponent)], extra_index=c)
        s = solve_square_root(R, z, rho2)
        return s.theta, s.rss_reduced

    evaluations = 0

    def objective(exponent):
        nonlocal evaluations
        evaluations += 1
        return linear_fit(exponent)[1]

    grid = np.linspace(lo, hi, max(3, int(np.ceil((hi - lo) / GRID_STEP)) + 1)) \
        if hi > lo else np.array([lo])
    grid_rss = np.array([objective(e) for e in grid])
    best = int(np.argmin(grid_rss))
    exponent = float(grid[best])
    if grid.size > 1:
        bracket = (grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)])
        found = scipy.optimize.minimize_scalar(objective, bounds=bracket, method="bounded",
                                               options={"xatol": BRENT_XATOL})
        if found.fun <= grid_rss[best]:
            exponent = float(found.x)
    (amplitude, center_value), rss = linear_fit(exponent)
    # Gauss–Newton on (amplitude, exponent, center_value): the model linearised in the
    # exponent is linear in (amplitude', Δexponent, center_value').
    steps = 0
    for steps in range(1, MAX_GAUSS_NEWTON + 1):
        g = radii.power(exponent)
        R, z, rho2 = data.square_root(None, kernels=[g, -amplitude * radii.log_r * g],
                                      extra_index=c)
        step = solve_square_root(R, z, rho2).theta[1]
        if not np.isfinite(step):
            break
        trial = float(np.clip(exponent + step, lo, hi))
        (trial_amp, trial_cv), trial_rss = linear_fit(trial)
        evaluations += 1
        if trial_rss > rss + data.rss_rounding:
            break
        moved = abs(trial - exponent)
        exponent, amplitude, center_value, rss = trial, trial_amp, trial_cv, trial_rss
        if moved <= 1e-13 * max(1.0, abs(exponent)):
            break
    kernel = amplitude * radii.power(exponent)
    kernel[c] = center_value
    params = {"amplitude": float(amplitude), "exponent": float(exponent),
              "center_value": float(center_value)}
    rss = data.rss(kernel)
    n = data.n_used
    noise_std = noise_level(rss, n, 3.0)
    # Covariance from the Jacobian at the solution, columns in PARAMS order.
    g = radii.power(exponent)
    R, z, rho2 = data.square_root(None, kernels=[g, -amplitude * radii.log_r * g],
                                  extra_index=c)
    cov_unscaled = solve_square_root(R, z, rho2).cov_unscaled
    converged, message = True, ""
    on_bound = hi > lo and (np.isclose(exponent, lo, atol=1e-9)
                            or np.isclose(exponent, hi, atol=1e-9))
    if on_bound:
        converged = False
        message = (f"the best exponent {exponent:.6g} lies on a bound of "
                   f"exponent_bounds={(lo, hi)}; widen exponent_bounds")
    if cov_unscaled is None or not np.isfinite(noise_std):
        note = ("the parameters are not all determined (amplitude 0 leaves the exponent free, "
                "or the images cannot tell the centre from the rest): no standard errors"
                if cov_unscaled is None else
                f"only {n} pixels for 3 parameters: no noise level or standard errors")
        converged = converged and cov_unscaled is not None
        message = f"{message}; {note}" if message else note
        cov = None
        stderr = {name: float("nan") for name in PARAMS}
        stderr["kernel"] = np.full(data.shape, np.nan)
    else:
        cov = noise_std**2 * cov_unscaled
        stderr = {name: float(np.sqrt(max(cov[i, i], 0.0))) for i, name in enumerate(PARAMS)}
        delta = np.zeros(data.shape)
        delta[c] = 1.0
        J = np.column_stack([g.ravel(), (-amplitude * radii.log_r * g).ravel(), delta.ravel()])
        pixel_var = np.sum((J @ cov) * J, axis=1)
        stderr["kernel"] = np.sqrt(np.clip(pixel_var, 0, None)).reshape(data.shape)
    return StructuredFit(
        model="powerlaw", kernel=kernel, params=params, stderr=stderr, cov=cov, rss=rss,
        n_used=n, noise_std=noise_std, dof=3.0, converged=converged, message=message,
        shape=data.shape, center=data.center, method=data.method,
        info={"param_order": list(PARAMS), "exponent_grid": grid, "grid_rss": grid_rss,
              "evaluations": evaluations, "gauss_newton_steps": steps,
              "exponent_bounds": (lo, hi),
              "seconds": {"total": time.perf_counter() - started}},
    )


def _check_bounds(bounds):
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise TypeError(f"exponent_bounds={bounds!r} must be a pair (low, high)") from None
    lo = check_real(lo, "exponent_bounds[0]")
    hi = check_real(hi, "exponent_bounds[1]")
    if lo > hi:
        raise ValueError(f"exponent_bounds={bounds!r}: low must not exceed high")
    return lo, hi
