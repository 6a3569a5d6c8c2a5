"""The L2 fit of a parametric kernel: starting points and refinement on the statistics.

Starting values: the free-form least-squares kernel ``G⁻¹c`` comes almost free from the same
factor; its moments give a first guess (:func:`~kernelfit.models.parametric.kernel_moments`),
to which each family adds a grid of candidates (angles, radii, widths).  All candidates are
scored at once through ``G`` (``O(p²)`` each, with the best amplitude in closed form), and
the best few are refined: multi-start where the objective has several minima.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from .moments import kernel_moments
from .parametric_data import _Data, _Layout


def _starting_points(layout: _Layout, data: _Data, moments, x0, n_refine):
    """The starts to refine: ``x0``, or the best ``n_refine`` of the family's candidates."""
    model = layout.model
    offset = (moments.dy, moments.dx) if layout.fit_offset else (0.0, 0.0)
    if x0 is not None:
        return [_start_from_x0(layout, data, moments, offset, x0)], 1
    candidates = np.atleast_2d(np.asarray(model.candidates(moments, layout.shape), float))
    if candidates.shape[1] != layout.m:
        raise ValueError(f"model {model.name!r}: candidates() has {candidates.shape[1]} "
                         f"columns for {layout.m} parameters")
    candidates = np.clip(candidates, layout.lower[:layout.m], layout.upper[:layout.m])
    kernels, kept = [], []
    for row in candidates:
        try:
            kernels.append(model.unit_kernel(row, layout.shape, layout.center, offset).ravel())
            kept.append(row)
        except ValueError:      # a candidate that vanishes on the grid
            continue
    if not kernels:
        raise ValueError(f"model {model.name!r}: no starting candidate gives a non-zero kernel "
                         f"of shape {layout.shape}; pass x0=")
    K = data.reduce(np.stack(kernels, axis=1))
    G, c, btb = data.gram, data.rhs, data.btb
    quad = np.einsum("ij,ij->j", K, G @ K)
    lin = c @ K
    if layout.normalize is None:
        amplitude = np.where(quad > 0, lin / np.where(quad > 0, quad, 1.0), 0.0)
        objective = btb - amplitude * lin
    else:
        amplitude = np.full(len(kept), layout.normalize)
        objective = layout.normalize**2 * quad - 2 * layout.normalize * lin + btb
    order = np.argsort(objective)
    starts, seen = [], []
    for idx in order:
        row = kept[idx]
        if any(np.allclose(row, s, rtol=1e-3, atol=1e-6) for s in seen):
            continue
        seen.append(row)
        theta = list(row)
        if layout.fit_offset:
            theta += list(offset)
        if layout.normalize is None:
            theta.append(amplitude[idx] if amplitude[idx] != 0 else moments.total or 1.0)
        starts.append(layout.inside(np.array(theta, dtype=np.float64)))
        if len(starts) == n_refine:
            break
    return starts, len(kept)


def _fit_l2(layout, data, x0, n_refine):
    """Multi-start trust-region Gauss–Newton on the statistics; the best refined start."""
    moments = kernel_moments(data.free_kernel(), data.center)
    starts, n_candidates = _starting_points(layout, data, moments, x0, n_refine)
    refined = [_refine_l2(layout, data, theta) for theta in starts]
    best = min(refined, key=lambda r: r["objective"])
    info = {
        "n_candidates": n_candidates,
        "starts": [dict(zip(layout.free, np.round(r["start"], 10).tolist())) for r in refined],
        "start_objectives": [r["objective"] for r in refined],
        "nfev": sum(r["nfev"] for r in refined),
        "whitening": data.whitening,
        "statistics": data.statistics_path,
    }
    return best["theta"], best["ok"], list(best["notes"]), info


def _symmetric_kernel(k, shape):
    k = k.reshape(shape)
    tol = 1e-12 * np.abs(k).max()
    return bool(np.abs(k - k[::-1]).max() <= tol and np.abs(k - k[:, ::-1]).max() <= tol)


def _start_from_x0(layout, data, moments, offset, x0):
    model = layout.model
    if isinstance(x0, dict):
        unknown = set(x0) - set(layout.free)
        if unknown:
            raise ValueError(f"x0 has unknown or fixed parameters {sorted(unknown)}; the free "
                             f"ones are {layout.free}")
        guess = list(np.asarray(model.start(moments, layout.shape), float)) \
            if set(model.param_names) - set(x0) else [0.0] * layout.m
        if layout.fit_offset:
            guess += list(offset)
        if layout.normalize is None:
            guess.append(moments.total if moments.total else 1.0)
        theta = np.array([x0.get(name, g) for name, g in zip(layout.free, guess)], float)
    else:
        theta = np.asarray(x0, dtype=np.float64).ravel()
        if theta.size != len(layout.free):
            raise ValueError(f"x0 has {theta.size} values; the free parameters are "
                             f"{layout.free}")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"x0={x0!r} must be finite")
    return layout.inside(theta)


def _refine_l2(layout: _Layout, data: _Data, theta0):
    """Trust-region Gauss–Newton on the whitened residual ``R k(θ) − z``."""
    cache = {}

    def evaluate(theta):
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = layout.kernel_jacobian(theta)
        return cache[key]

    def fun(theta):
        return data.R @ data.reduce(evaluate(theta)[0]) - data.z

    def jac(theta):
        return data.R @ data.reduce(evaluate(theta)[1])

    notes = []
    try:
        result = scipy.optimize.least_squares(
            fun, theta0, jac=jac, bounds=(layout.lower, layout.upper), method="trf",
            x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200 * len(theta0))
    except ValueError as err:   # a step onto parameters that vanish on the grid
        return {"theta": theta0, "objective": np.inf, "ok": False, "nfev": 0,
                "start": theta0, "notes": [f"refinement failed: {err}"]}
    ok = result.status > 0
    if not ok:
        notes.append(f"the L2 refinement stopped: {result.message}")
    return {"theta": result.x, "objective": float(2.0 * result.cost + data.rho2), "ok": ok,
            "nfev": int(result.nfev), "start": theta0, "notes": notes}

