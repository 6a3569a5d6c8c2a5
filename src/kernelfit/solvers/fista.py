"""FISTA for constraints and non-smooth regularisers (``nonneg``, ``total``, ``'tv'``, ``'l1'``).

Backtracking, adaptive (gradient) restart, exact proximal steps (:mod:`kernelfit.solvers.
proximal`).  For ``'tv'`` the inner proximal map is warm-started from the previous outer
iteration and asked for a tenth of the last outer step (an inexact prox otherwise stalls the
outer iteration).  The metric is low-rank plus identity (:class:`Metric`) where the proximal
step stays exact with it; diagonal (Jacobi) metrics did not help with ``nonneg`` (same error
after the same number of iterations).  With a noise level the iteration also stops once the
fit moves far less than the data resolve (:func:`kernelfit.solvers.solution.settled_at_noise`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as sla

from .proximal import project, prox_tv, tv_value
from .regularisers import NONSMOOTH, penalty_matrix
from .solution import IterativeSolution, NOISE_FRACTION, objective, settled_at_noise, window

__all__ = ["Metric", "fista"]

# Inner iterations of the TV proximal map per outer step.  Its dual is warm-started, so a
# cap costs little accuracy: on seed 000 (TV + nonneg, tol 1e-5) a cap of 100 converged in
# 605 outer steps and 32 s against ~100 s with 1000, to the same error (0.128 vs 0.131);
# a cap of 20 stalled (3000 steps, not converged).
PROX_TV_MAXITER = 100


def _largest_eigenvalue(apply, shape, iterations=30, seed=0):
    """Power iteration for the largest eigenvalue of a PSD operator (a slight underestimate;
    backtracking corrects it)."""
    v = np.random.default_rng(seed).normal(size=shape)
    v /= np.linalg.norm(v)
    value = 0.0
    for _ in range(iterations):
        w = apply(v)
        value = float(np.linalg.norm(w))
        if value == 0:
            return 0.0
        v = w / value
    return value


class Metric:
    """The FISTA metric ``M = L0·(I + Vᵀ diag(γ) V)``, a majorant of the Hessian ``H``.

    ``V`` (``r × p``, orthonormal rows) holds approximations of the ``r`` largest
    eigenvectors of ``H`` with eigenvalues ``w``; ``L0`` bounds the rest of the spectrum and
    ``L0·(1 + γ_i) = w_i``.  With ``r = 0`` this is the Euclidean metric of plain FISTA,
    ``L0 = λ_max(H)``.  The step size of FISTA is set by the largest eigenvalue it has to
    majorise: on seed 000 (gradient, λ = 0.125) ``H``'s spectrum starts 177, 55, 51, 16,
    13, …, 1.8 (17th), so ``r = 16`` lowers it a hundredfold and FISTA needs about a tenth
    of the iterations.  The proximal steps stay exact for separable non-smooth terms
    (``nonneg``, ``'l1'``): see :meth:`prox`.
    """

    def __init__(self, V, gamma, L0):
        self.V, self.gamma, self.L0 = V, gamma, float(L0)

    @property
    def rank(self) -> int:
        return self.V.shape[0]

    def times(self, d):
        """``M d``."""
        out = d.copy()
        if self.rank:
            out += (self.V.T @ (self.gamma * (self.V @ d.ravel()))).reshape(d.shape)
        return self.L0 * out

    def solve(self, d):
        """``M⁻¹ d`` (Sherman–Morrison–Woodbury on orthonormal ``V``)."""
        out = d.copy()
        if self.rank:
            shrink = self.gamma / (1.0 + self.gamma)
            out -= (self.V.T @ (shrink * (self.V @ d.ravel()))).reshape(d.shape)
        return out / self.L0

    def scale(self, factor):
        self.L0 *= factor

    def prox(self, z, s, *, nonneg, threshold):
        """``argmin_x (x − z)ᵀM(x − z) + 2·L0·threshold·‖x‖₁`` over ``{x ≥ 0 if nonneg}``.

        The minimiser is ``x = P(z − Vᵀs)``, ``P`` the separable proximal map of
        :func:`project` (soft threshold and/or clipping at 0), where ``s = γ∘V(x − z)``.  That
        ``s`` minimises the strongly convex ``ψ(s) = ½sᵀγ⁻¹s + ½‖P(z − Vᵀs)‖² + sᵀVz``
        (``½‖P(u)‖²`` has gradient ``P(u)``), found by semismooth Newton on its ``r``
        unknowns with a backtracking line search; ``s`` of the previous step starts it, so
        one or two Newton steps usually suffice.  Returns ``(x, s)``.
        """
        flat = z.ravel()
        if not self.rank:
            return project(z, nonneg=nonneg, threshold=threshold), s
        V, inv_gamma = self.V, 1.0 / self.gamma
        Vz = V @ flat

        def evaluate(s):
            u = flat - V.T @ s
            x = project(u, nonneg=nonneg, threshold=threshold)
            value = 0.5 * float(s @ (inv_gamma * s)) + 0.5 * float(x @ x) + float(s @ Vz)
            return x, u, value

        x, u, value = evaluate(s)
        for _ in range(50):
            grad = inv_gamma * s - V @ x + Vz
            clamped = x == 0 if nonneg else np.abs(u) <= threshold
            Vc = V[:, clamped]
            # Jacobian γ⁻¹ + V D Vᵀ with D the free coordinates: VVᵀ = I, so subtract the
            # clamped ones.
            jac = np.diag(inv_gamma + 1.0) - Vc @ Vc.T
            step = np.linalg.solve(jac, grad)
            t = 1.0
            while True:
                x_new, u_new, value_new = evaluate(s - t * step)
                if value_new <= value - 1e-4 * t * float(grad @ step) or t < 1e-8:
                    break
                t *= 0.5
            s, x, u, value = s - t * step, x_new, u_new, value_new
            # ψ is quadratic on each piece: a full Newton step that keeps the clamped set
            # lands on the minimiser exactly.
            same = np.array_equal(clamped, x == 0 if nonneg else np.abs(u) <= threshold)
            tiny = np.linalg.norm(t * step) <= 1e-12 * (1.0 + np.linalg.norm(s))
            if (t == 1.0 and same) or tiny:
                break
        return x.reshape(z.shape), s


# Rank of the FISTA metric (see Metric): on seed 000 (gradient + nonneg, from the GCV
# kernel) the error 0.447 is reached after 330 Euclidean iterations, 110 with r = 3, 50 with
# r = 8 and 30 with r = 16, whose eigenvectors cost about 60 operator products.
_METRIC_RANK = 16


def _metric(hess, shape, *, rank):
    """A majorant of the Hessian ``hess``: the low-rank metric when ``rank > 0`` and the
    problem is large enough for it to pay, else the Euclidean ``λ_max·I``."""
    p = shape[0] * shape[1]
    rank = min(rank, p // 8)
    if rank < 1:
        top = _largest_eigenvalue(hess, shape)
        return Metric(np.zeros((0, p)), np.zeros(0), max(top * 1.05, 1e-300))
    operator = sla.LinearOperator((p, p), dtype=np.float64,
                                  matvec=lambda v: hess(v.reshape(shape)).ravel())
    start = np.random.default_rng(0).normal(size=p)
    # Eigenvalues to 1e-3: a majorant needs no more, backtracking absorbs the rest.
    values, vectors = sla.eigsh(operator, k=rank + 1, which="LA", tol=1e-3, v0=start)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    L0 = max(1.05 * float(values[rank]), 1e-300)
    gamma = np.maximum(1.05 * values[:rank] / L0 - 1.0, 0.0)
    keep = gamma > 0
    return Metric(np.ascontiguousarray(vectors[:, :rank][:, keep].T), gamma[keep], L0)


def fista(op, reg, lam, nonneg, total, x0, tol, maxiter, callback, noise_std=None):
    n = op.n_used
    c = op.rhs / n
    bn = op.btb / n
    quad_reg = reg if reg in ("ridge", "gradient", "laplacian") and lam > 0 else None
    Q = penalty_matrix(quad_reg, op.shape) if quad_reg is not None else None

    def hess(k):
        """``(B + lam·Q) k``."""
        out = op.normal(k) / n
        if Q is not None:
            out += lam * (Q @ k.ravel()).reshape(k.shape)
        return out

    def smooth(k, Hk):
        """``f(k) = kᵀBk − 2cᵀk + bᵀb/n + lam·kᵀQk`` from ``Hk = (B + lam·Q)k``."""
        return float(np.vdot(k, Hk) - 2.0 * np.vdot(c, k) + bn)

    def constrain(v):
        return project(v, nonneg=nonneg, total=total)

    nonsmooth_lam = lam if reg in NONSMOOTH else 0.0

    def g_value(k):
        if reg == "l1":
            return nonsmooth_lam * float(np.abs(k).sum())
        if reg == "tv":
            return nonsmooth_lam * tv_value(k)
        return 0.0

    # A low-rank metric keeps the proximal step exact only for separable terms: the sum
    # constraint and TV couple the coefficients, and take the Euclidean metric.
    separable = total is None and reg != "tv"
    metric = _metric(hess, op.shape, rank=_METRIC_RANK if separable else 0)
    dual = [None]
    # The TV prox is itself iterative.  Its accuracy must keep up with the outer iteration
    # (an inexact prox makes FISTA wander at the level of its error), so it is asked for a
    # tenth of the last outer step, relative, but never less than tol/10.
    inner_tol = [1e-3]
    inner_work = [0]
    shift = [np.zeros(metric.rank)]

    def prox(z):
        # The step of plain FISTA is 1/L with L = 2·L0 (∇f = 2(Hk − c)).
        t = nonsmooth_lam / (2.0 * metric.L0)
        if separable:
            x, shift[0] = metric.prox(z, shift[0], nonneg=nonneg, threshold=t)
            return x
        if reg == "l1":
            return project(z, nonneg=nonneg, total=total, threshold=t)
        if reg == "tv":
            x, dual[0], used = prox_tv(z, t, constrain, dual[0], tol=inner_tol[0],
                                        maxiter=PROX_TV_MAXITER)
            inner_work[0] += used
            return x
        return constrain(z)

    x = constrain(np.zeros(op.shape) if x0 is None else x0)
    Hx = hess(x)
    F = smooth(x, Hx) + g_value(x)
    y, Hy = x, Hx
    theta = 1.0
    history = [F]
    quiet = 0
    converged = stopped = settled = False
    its = 0
    for its in range(1, maxiter + 1):
        while True:
            # Minimise f(y) + ∇f(y)ᵀd + dᵀMd + g over d: the step z = y − M⁻¹(Hy − c).
            x_new = prox(y - metric.solve(Hy - c))
            d = x_new - y
            Hx_new = hess(x_new)
            # f is quadratic: f(y + d) = f(y) + ∇f(y)ᵀd + dᵀHd exactly, so the majorisation
            # test f(y + d) <= f(y) + ∇f(y)ᵀd + dᵀMd is dᵀHd <= dᵀMd, evaluated without the
            # cancellation of comparing two values of f.
            Md = metric.times(d)
            if np.vdot(d, Hx_new - Hy) <= np.vdot(d, Md) * (1 + 1e-12):
                break
            metric.scale(2.0)
        f_new = smooth(x_new, Hx_new)
        F_new = f_new + g_value(x_new)
        step = np.linalg.norm(x_new - x)
        # Adaptive restart (O'Donoghue & Candès): drop the momentum when it points uphill
        # (the generalised gradient M(y − x⁺) = −Md against the last move).
        if -np.vdot(Md, x_new - x) > 0:
            theta = 1.0
        theta_new = (1.0 + np.sqrt(1.0 + 4.0 * theta * theta)) / 2.0
        beta = (theta - 1.0) / theta_new
        y = x_new + beta * (x_new - x)
        Hy = Hx_new + beta * (Hx_new - Hx)
        x, Hx, F, theta = x_new, Hx_new, F_new, theta_new
        history.append(F)
        if callback is not None and callback(its, x):
            stopped = True
            break
        # Stop on the proximal-gradient residual ‖x⁺ − y‖ (zero exactly at a minimiser),
        # relative to ‖x‖, three times in a row (one small step can be a restart artefact).
        size = max(np.linalg.norm(x), 1e-300)
        inner_tol[0] = max(0.1 * tol, min(1e-3, 0.1 * np.linalg.norm(d) / size))
        quiet = quiet + 1 if np.linalg.norm(d) <= tol * size and step <= 10 * tol * size \
            else 0
        if quiet >= 3:
            converged = True
            break
        if noise_std is not None and settled_at_noise(history, n, noise_std):
            converged = settled = True
            break
    if total is not None and not nonneg:
        x = x + (total - x.sum()) / x.size
    final = objective(op, reg, lam, x)
    size = max(np.linalg.norm(x), 1e-300)
    metric_note = (f"metric of rank {metric.rank}" if metric.rank else "Euclidean metric")
    if stopped:
        message = f"FISTA: stopped by the callback after {its} iterations"
    elif settled:
        message = (f"FISTA ({metric_note}): converged at the noise level after {its} "
                   f"iterations: the last {window(its)} improved n·F by "
                   f"{n * (history[-1 - window(its)] - history[-1]):.3g} <= "
                   f"{NOISE_FRACTION:g}·noise_std² (noise_std={noise_std:.4g})")
    elif converged:
        message = (f"FISTA ({metric_note}): converged, proximal-gradient step "
                   f"<= tol={tol:g}·‖k‖ three times in a row, after {its} iterations")
    else:
        message = (f"FISTA: NOT converged after maxiter={maxiter} iterations (last "
                   f"proximal-gradient step {np.linalg.norm(d) / size:.2e}·‖k‖, last move "
                   f"{step / size:.2e}·‖k‖; the test asks for <= tol={tol:g} and "
                   f"<= 10·tol three times in a row); raise maxiter or loosen tol")
    if reg == "tv":
        message += f" ({inner_work[0]} inner iterations of the TV proximal map)"
    return IterativeSolution(x, converged, its, history, message, "fista", final)
