"""Robust losses of a parametric fit, on the image residuals: exact L1 and Huber.

``loss='l1'`` returns the exact minimiser of ``Σ|X k(θ) − b|``:

1. Reweighting from the L2 fit.  IRLS on the weighted statistics ``XᵀWX`` would cost
   ``N·p²`` per pass (general weights rule out the FFT path), but a parametric model needs
   them only projected on its Jacobian, ``(XJ)ᵀW(XJ)``: the few columns ``X·∂k/∂θ_j`` are FFT
   convolutions of the image, so each pass costs ``m + 1`` convolutions (``m`` = free
   parameters).  The weights ``min(1, δ/|r|)`` are those of a Huber loss with threshold
   ``δ``; plain IRLS (``δ → 0``) crawls near the L1 kink, so ``δ`` starts at the median
   ``|r|`` and shrinks tenfold per stage (four stages), each solved by scipy's robust-loss
   trust region (IRLS with a curvature correction) from the previous stage's answer.
2. Polish on the true objective (computed from the images): for one free parameter a
   bracket found by doubling steps downhill, bounded Brent to ``1e-10`` relative, and a scan
   at ``1e-4`` relative around the answer (repeated from any better point it finds); for
   several, Nelder–Mead with tight tolerances, restarted once from its own answer.  The
   best point ever evaluated is returned, so the answer is never worse than any point the
   search saw (the L2 start included).

``loss='huber'`` minimises ``Σ ρ(r)`` with ``ρ(r) = r²/2`` for ``|r| ≤ f_scale`` and
``f_scale·|r| − f_scale²/2`` beyond (the objective is smooth, so the solver's own robust-loss
Gauss–Newton converges to the exact minimiser), on the image residuals with the Jacobian
columns ``X·∂k/∂θ_j``.

"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from .parametric_data import _Data, _Layout


class _Tracked:
    """An objective that remembers the best point it has been evaluated at."""

    def __init__(self, f):
        self.f, self.best_x, self.best_f, self.count = f, None, np.inf, 0

    def __call__(self, theta):
        theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        value = self.f(theta)
        self.count += 1
        if value < self.best_f:
            self.best_x, self.best_f = theta.copy(), value
        return value


def _fit_l1(layout: _Layout, data: _Data, theta):
    """Smoothed-L1 continuation from the L2 solution, then a polish on the exact objective."""

    def l1(t):
        try:
            return float(np.abs(data.residuals(layout.kernel(t))).sum())
        except ValueError:   # parameters at which the kernel vanishes on the grid
            return np.inf

    objective = _Tracked(l1)
    theta = layout.inside(theta)
    objective(theta)
    # Huber losses with a shrinking threshold δ approach L1 (their IRLS weights are
    # min(1, δ/|r|)); each stage starts next to its answer, so it takes few iterations.
    delta = float(np.median(np.abs(data.residuals(layout.kernel(theta)))))
    stages = 0
    for _ in range(4):
        if not delta > 0:
            break
        theta, _, _, stage_info = _fit_huber(layout, data, theta, delta)
        objective(theta)
        stages += stage_info["huber_nfev"]
        delta *= 0.1
    notes = []
    scale = np.maximum(np.abs(objective.best_x), 1.0)
    if len(theta) == 1:
        _polish_1d(objective, objective.best_x[0], layout.lower[0], layout.upper[0], scale[0])
    else:
        for _ in range(2):   # Nelder–Mead restarted once from its own answer
            start = objective.best_x
            simplex = [start] + [start + np.eye(len(start))[j] * 1e-3 * scale[j]
                                 for j in range(len(start))]
            res = scipy.optimize.minimize(
                objective, start, method="Nelder-Mead",
                bounds=list(zip(layout.lower, layout.upper)),
                options={"initial_simplex": np.array(simplex), "xatol": 1e-10,
                         "fatol": 1e-12 * max(objective.best_f, 1e-300), "maxfev": 4000})
        if not res.success:
            notes.append(f"the L1 polish stopped: {res.message}")
    theta = objective.best_x
    residual = data.residuals(layout.kernel(theta))
    info = {"smoothing_evaluations": stages, "l1_evaluations": objective.count}
    return theta, residual, not notes, info


def _polish_1d(objective, x0, lo, hi, scale):
    """Bracket the minimum (steps doubling downhill), close it with bounded Brent, then check
    a fine scan around the answer and repeat from any better point it finds."""
    x_best = x0
    for _ in range(3):
        a, b = _bracket(objective, x_best, lo, hi, 1e-3 * scale)
        if b > a:
            scipy.optimize.minimize_scalar(objective, bounds=(a, b), method="bounded",
                                           options={"xatol": 1e-10 * scale, "maxiter": 200})
        x_best, f_best = objective.best_x[0], objective.best_f
        # The objective is a sum of |·| of smooth functions of x: kinks everywhere, but its
        # envelope is smooth.  A scan at 1e-4·scale confirms no nearby point is better.
        h = 1e-4 * scale
        for x in np.clip(x_best + h * np.r_[-5:0, 1:6], lo, hi):
            objective(x)
        if not objective.best_f < f_best:
            return


def _bracket(objective, x0, lo, hi, h):
    """``(a, b)`` around a local minimum, found by steps that double while going downhill."""
    f0 = objective(x0)
    x_right = min(x0 + h, hi)
    f_right = objective(x_right)
    if f_right < f0:
        direction, prev, (x, f) = 1.0, x0, (x_right, f_right)
    else:
        x_left = max(x0 - h, lo)
        f_left = objective(x_left)
        if not f_left < f0:
            return x_left, x_right
        direction, prev, (x, f) = -1.0, x0, (x_left, f_left)
    step = h
    for _ in range(60):
        step *= 2.0
        x_next = float(np.clip(x + direction * step, lo, hi))
        if x_next == x:                 # reached a bound while still going downhill
            return _ordered(prev, x)
        f_next = objective(x_next)
        if not f_next < f:              # f(prev) ≥ f(x) ≤ f(x_next): a bracket
            return _ordered(prev, x_next)
        prev, x, f = x, x_next, f_next
    return _ordered(prev, x)


def _ordered(u, v):
    return (u, v) if u <= v else (v, u)


def _fit_huber(layout: _Layout, data: _Data, theta, f_scale):
    """Exact Huber minimiser on the image residuals (scipy's robust-loss trust region)."""
    cache = {}

    def evaluate(t):
        key = t.tobytes()
        if key not in cache:
            cache.clear()
            k, J = layout.kernel_jacobian(t)
            cache[key] = (data.residuals(k), J)
        return cache[key]

    def fun(t):
        return evaluate(t)[0]

    def jac(t):
        return data.columns(evaluate(t)[1])

    result = scipy.optimize.least_squares(
        fun, layout.inside(theta), jac=jac, bounds=(layout.lower, layout.upper), method="trf",
        loss="huber", f_scale=f_scale, x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12,
        max_nfev=100 * len(theta))
    ok = result.status > 0
    return result.x, result.fun, ok, {"huber_nfev": int(result.nfev)}

