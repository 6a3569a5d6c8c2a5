"""Robust losses of a parametric fit, on the image residuals: exact L1 and Huber.

``loss='l1'`` returns the exact minimiser of ``Σ|X k(θ) − b|`` (a family with one shape
parameter and no background takes the faster window search of
:mod:`~kernelfit.models.parametric_l1` instead; this is the general path, and its fallback):

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
   search saw (the L2 start included).  When the smoothing stages already fit the data to
   rounding (``Σ|r| ≤ 1e-12·Σ|b|``) there is nothing to polish, and it is skipped.

``loss='huber'`` minimises ``Σ ρ(r)`` with ``ρ(r) = r²/2`` for ``|r| ≤ f_scale`` and
``f_scale·|r| − f_scale²/2`` beyond (the objective is smooth, so the solver's own robust-loss
Gauss–Newton converges to the exact minimiser), on the image residuals with the Jacobian
columns ``X·∂k/∂θ_j``.

With a polynomial background (``background=``) the residual is ``X k(θ) + T β − b`` over the
pixels, ``T`` the background's basis images (one block per pair).  A robust loss cannot
profile ``β`` out of the statistics as least squares does, so ``β`` joins ``θ`` as extra
*linear* parameters of the same fitters (their Jacobian columns are the basis images
themselves), warm-started from the least-squares background of the L2 kernel.  The L1 polish
then runs Nelder–Mead over ``(θ, β)`` together.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from .parametric_data import _Data, _Layout


class _ImageProblem:
    """The image residuals as a function of ``t = (θ, β)``: the free kernel parameters of
    ``layout`` and, with a background, its coefficients (all pairs', concatenated)."""

    def __init__(self, layout: _Layout, data: _Data):
        self.layout, self.data = layout, data
        self.n_theta = len(layout.free)
        n_beta = 0 if data.terms is None else data.background_columns().shape[1]
        self.lower = np.concatenate([layout.lower, np.full(n_beta, -np.inf)])
        self.upper = np.concatenate([layout.upper, np.full(n_beta, np.inf)])
        # An L1 objective this small is rounding: the data are fitted exactly.
        self.rounding = 1e-12 * sum(
            float(np.abs(pair.b_used if pair.use is None else pair.b_used[pair.use]).sum())
            for pair in data.pairs)

    def join(self, theta, beta):
        return np.concatenate([theta, [] if beta is None else beta])

    def split(self, t):
        """``(θ, β)``; ``β`` is None without a background."""
        beta = t[self.n_theta:] if self.data.terms is not None else None
        return t[:self.n_theta], beta

    def inside(self, t):
        theta, beta = self.split(t)
        return self.join(self.layout.inside(theta), beta)

    def residuals(self, t):
        theta, beta = self.split(t)
        r = self.data.residuals(self.layout.kernel(theta))
        return r if beta is None else r + self.data.background_columns() @ beta

    def residuals_and_kernel_jacobian(self, t):
        """The residuals and ``∂k/∂θ`` (cheap: no image convolution beyond the residual)."""
        theta, beta = self.split(t)
        k, J = self.layout.kernel_jacobian(theta)
        r = self.data.residuals(k)
        return (r if beta is None else r + self.data.background_columns() @ beta), J

    def columns(self, J):
        """The residuals' Jacobian over ``t``, ``n × len(t)``, from ``∂k/∂θ``: one image
        convolution per kernel parameter, and the basis images for ``β``."""
        columns = self.data.columns(J)
        if self.data.terms is None:
            return columns
        return np.hstack([columns, self.data.background_columns()])


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


def _fit_l1(problem: _ImageProblem, theta):
    """Smoothed-L1 continuation from the L2 solution, then a polish on the exact objective."""

    def l1(t):
        try:
            return float(np.abs(problem.residuals(t)).sum())
        except ValueError:   # parameters at which the kernel vanishes on the grid
            return np.inf

    objective = _Tracked(l1)
    theta = problem.inside(theta)
    objective(theta)
    # Huber losses with a shrinking threshold δ approach L1 (their IRLS weights are
    # min(1, δ/|r|)); each stage starts next to its answer, so it takes few iterations.
    delta = float(np.median(np.abs(problem.residuals(theta))))
    stages = 0
    for _ in range(4):
        if not delta > 0:
            break
        theta, _, _, stage_info = _fit_huber(problem, theta, delta)
        objective(theta)
        stages += stage_info["huber_nfev"]
        delta *= 0.1
    notes = []
    scale = np.maximum(np.abs(objective.best_x), 1.0)
    if objective.best_f <= problem.rounding:
        pass    # an exact fit (to rounding): a polish would only wander in the rounding
    elif len(theta) == 1:
        _polish_1d(objective, objective.best_x[0], problem.lower[0], problem.upper[0],
                   scale[0])
    else:
        notes += _polish_simplex(objective, problem, scale)
    theta = objective.best_x
    residual = problem.residuals(theta)
    info = {"smoothing_evaluations": stages, "l1_evaluations": objective.count}
    return theta, residual, notes, info


def _polish_simplex(objective, problem, scale):
    """Nelder–Mead on the exact objective, restarted once from its own answer; the notes."""
    for _ in range(2):
        start = objective.best_x
        simplex = [start] + [start + np.eye(len(start))[j] * 1e-3 * scale[j]
                             for j in range(len(start))]
        res = scipy.optimize.minimize(
            objective, start, method="Nelder-Mead",
            bounds=list(zip(problem.lower, problem.upper)),
            options={"initial_simplex": np.array(simplex), "xatol": 1e-10,
                     "fatol": 1e-12 * max(objective.best_f, 1e-300), "maxfev": 4000})
    return [] if res.success else [f"the L1 polish stopped: {res.message}"]


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


def _fit_huber(problem: _ImageProblem, theta, f_scale):
    """Exact Huber minimiser on the image residuals (scipy's robust-loss trust region)."""
    cache = {}

    def evaluate(t):
        key = t.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = problem.residuals_and_kernel_jacobian(t)
        return cache[key]

    def fun(t):
        return evaluate(t)[0]

    def jac(t):
        return problem.columns(evaluate(t)[1])

    result = scipy.optimize.least_squares(
        fun, problem.inside(theta), jac=jac, bounds=(problem.lower, problem.upper),
        method="trf", loss="huber", f_scale=f_scale, x_scale="jac", ftol=1e-12, xtol=1e-12,
        gtol=1e-12, max_nfev=100 * len(theta))
    notes = [] if result.status > 0 else [f"the Huber fit stopped: {result.message}"]
    return result.x, result.fun, notes, {"huber_nfev": int(result.nfev)}
