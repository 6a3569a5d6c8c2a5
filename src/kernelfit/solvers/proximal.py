"""Exact proximal maps: projections onto ``{k ≥ 0}``, ``{Σk = s}`` or both, soft
thresholding within those sets, and the TV proximal map by dual fast gradient projection.

The projections are sort-based, ``O(p log p)``.  TV uses the dual fast gradient projection of
Beck & Teboulle (2009) rather than ADMM, because it keeps the outer method the same FISTA as
for ``'l1'`` and the constraints, needs no extra linear solve with ``XᵀX``, and warm-starts
well; it stops on its exact duality gap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["project", "prox_tv", "tv_value"]


def project(v, *, nonneg=False, total=None, threshold=0.0):
    """Exact ``argmin_x ½‖x − v‖² + threshold·‖x‖₁`` over ``{x ≥ 0 if nonneg, Σx = total}``.

    With ``threshold = 0`` this is the Euclidean projection onto the constraint set (the
    simplex scaled to ``total`` when both constraints are given).  The solution is
    ``x = g(v − τ)`` with ``g`` the soft threshold (followed by ``max(·, 0)`` under
    ``nonneg``); ``Σ g(v − τ)`` is piecewise linear and non-increasing in ``τ``, so sorting
    its breakpoints and interpolating linearly between the two that bracket ``total`` gives
    ``τ`` exactly, in ``O(p log p)``.

    Parameters
    ----------
    v : array_like
    nonneg : bool
    total : float, optional
    threshold : float, default 0

    Returns
    -------
    ndarray, like ``v``

    Examples
    --------
    >>> project([0.5, 2.0, -1.0], nonneg=True, total=1.0).tolist()
    [0.0, 1.0, 0.0]
    >>> project([0.5, 2.0, -1.0], threshold=1.0).tolist()
    [0.0, 1.0, -0.0]
    """
    v = np.asarray(v, dtype=np.float64)
    t = float(threshold)
    if t < 0:
        raise ValueError(f"threshold={threshold!r} must be >= 0")

    def shrink(u):
        if nonneg:
            return np.maximum(u - t, 0.0)
        if t == 0:
            return u
        return np.sign(u) * np.maximum(np.abs(u) - t, 0.0)

    if total is None:
        return shrink(v)
    s = float(total)
    if nonneg and s < 0:
        raise ValueError(f"total={total!r} < 0 cannot be met with nonneg=True")
    if nonneg and s == 0:
        return np.zeros_like(v)
    flat = v.ravel()
    p = flat.size
    upper = np.sort(flat - t)                    # entries are positive above these
    upper_suffix = np.concatenate([np.cumsum(upper[::-1])[::-1], [0.0]])
    lower = None if nonneg else np.sort(flat + t)  # entries are negative below these
    lower_prefix = None if nonneg else np.concatenate([[0.0], np.cumsum(lower)])

    def h(tau):
        tau = np.asarray(tau, dtype=np.float64)
        i = np.searchsorted(upper, tau, side="right")
        value = upper_suffix[i] - (p - i) * tau
        if not nonneg:
            j = np.searchsorted(lower, tau, side="left")
            value = value - (j * tau - lower_prefix[j])
        return value

    breaks = upper if nonneg else np.sort(np.concatenate([upper, lower]))
    hb = h(breaks)                                # non-increasing
    if s >= hb[0]:
        # Left of every breakpoint all entries are on the upper branch: Σ(v − t − τ) = s.
        tau = (upper.sum() - s) / p
    elif not nonneg and s <= hb[-1]:
        # Right of every breakpoint all are on the lower branch: Σ(v + t − τ) = s.
        tau = (lower.sum() - s) / p
    else:
        # The last breakpoint with h >= s, and the next one.
        k = int(np.searchsorted(-hb, -s, side="right")) - 1
        k = min(max(k, 0), len(breaks) - 2)
        b0, b1, h0, h1 = breaks[k], breaks[k + 1], hb[k], hb[k + 1]
        tau = b0 if h0 == h1 else b0 + (h0 - s) * (b1 - b0) / (h0 - h1)
    x = shrink(flat - tau)
    # Remove the last rounding error of the sum, on the entries that are free to move.
    free = x > 0 if nonneg else (x != 0 if t > 0 else np.ones(p, bool))
    if free.any():
        x[free] += (s - x.sum()) / free.sum()
        if nonneg:
            np.maximum(x, 0.0, out=x)
    return x.reshape(v.shape)


def _tv_gradient(k):
    """Forward differences (zero past the last row/column), as in :mod:`regularisers`."""
    gy = np.zeros_like(k)
    gx = np.zeros_like(k)
    gy[:-1] = k[1:] - k[:-1]
    gx[:, :-1] = k[:, 1:] - k[:, :-1]
    return gy, gx


def _tv_gradient_adjoint(py, px):
    out = np.zeros_like(py)
    out[1:] += py[:-1]
    out[:-1] -= py[:-1]
    out[:, 1:] += px[:, :-1]
    out[:, :-1] -= px[:, :-1]
    return out


def tv_value(k):
    gy, gx = _tv_gradient(k)
    return float(np.sum(np.sqrt(gy * gy + gx * gx)))


def prox_tv(v, t, constrain, dual, tol, maxiter):
    """``argmin_x ½‖x − v‖² + t·TV(x)`` over the constraint set (``constrain`` projects).

    Dual fast gradient projection (Beck & Teboulle 2009): the dual variable ``p`` lives in
    a unit disc per pixel, ``x(p) = constrain(v − t·Dᵀp)``, the dual gradient is ``t·D x(p)``
    with Lipschitz constant ``t²‖D‖² ≤ 8t²``.  It stops on the duality gap
    ``t·TV(x) − t·⟨p, Dx⟩`` (``≥ ‖x − x*‖²/2`` by strong convexity), once that is below
    ``(tol·‖x‖)²/2``.  ``dual`` warm-starts ``p``; returns ``(x, p, iterations)``.
    """
    if t <= 0:
        return constrain(v), dual, 0
    py, px = dual if dual is not None else (np.zeros_like(v), np.zeros_like(v))

    def primal(qy, qx):
        return constrain(v - t * _tv_gradient_adjoint(qy, qx))

    def gap(x, qy, qx):
        gy, gx = _tv_gradient(x)
        return t * (np.sum(np.sqrt(gy * gy + gx * gx)) - np.vdot(qy, gy) - np.vdot(qx, gx))

    x = primal(py, px)
    if gap(x, py, px) <= 0.5 * (tol * np.linalg.norm(x)) ** 2:
        return x, (py, px), 0
    qy, qx = py, px
    theta = 1.0
    used = 0
    for used in range(1, maxiter + 1):
        gy, gx = _tv_gradient(primal(qy, qx))
        ny = qy + gy / (8.0 * t)
        nx = qx + gx / (8.0 * t)
        norm = np.maximum(1.0, np.sqrt(ny * ny + nx * nx))
        ny /= norm
        nx /= norm
        theta_new = (1.0 + np.sqrt(1.0 + 4.0 * theta * theta)) / 2.0
        w = (theta - 1.0) / theta_new
        qy, qx = ny + w * (ny - py), nx + w * (nx - px)
        py, px, theta = ny, nx, theta_new
        if used % 5 == 0 or used == maxiter:
            x = primal(py, px)
            if gap(x, py, px) <= 0.5 * (tol * np.linalg.norm(x)) ** 2:
                break
    return primal(py, px), (py, px), used
