"""Conjugate gradients on the FFT operator: standard form, Jacobi, and multi-shift.

Quadratic regularisers without constraints: CG on the standard form for ``'gradient'`` and
``'laplacian'`` (:mod:`kernelfit.solvers.standard_form`), CG preconditioned by the diagonal of
``B + lam·I`` (Jacobi) for ``None`` and ``'ridge'``; that diagonal,
``Σ_i W_i P[i + (kh−1, kw−1) − j]²``, is the correlation of ``P²`` with ``W``: one FFT.
:func:`multishift_block_cg` runs one Krylov recurrence for every shift ``λ`` and several
right-hand sides at once (the data and the GCV probes).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import daxpy as _axpy, dscal as _scal

from .solution import IterativeSolution, objective, objective_settled, window
from .standard_form import StandardForm

__all__ = ["CG_MAXITER", "conjugate_gradients", "multishift_block_cg", "solve_jacobi",
           "solve_standard_form"]

# Default iteration limit: CG on the standard form needs a few hundred iterations for the
# hardest case measured (seed 000, laplacian), more to settle its objective.
CG_MAXITER = 3000


def conjugate_gradients(apply, rhs, x, tol, maxiter, precondition=None, project=None, report=None,
        settled=None):
    """Preconditioned CG from ``x``; returns ``(x, iterations, history, converged, stop)``.

    ``project`` (optional) restricts the iteration to a subspace (projected CG).
    ``settled`` (optional, not with ``project``) is a second test that convergence also
    needs: ``settled(values)`` with ``values[i] = xᵢᵀAxᵢ − 2·rhsᵀxᵢ = −rhsᵀxᵢ − xᵢᵀrᵢ``,
    the quadratic's value along the iterates (from the start), cheap from the recurrence.
    """
    identity = (lambda v: v)
    M = precondition or identity
    Pj = project or identity
    r = Pj(rhs - apply(x)) if np.any(x) else Pj(rhs.copy())
    scale = np.linalg.norm(Pj(rhs))
    history = []
    if scale == 0:
        return np.zeros_like(x), 0, [0.0], True, False
    z = Pj(M(r))
    p = z.copy()
    rz = np.vdot(r, z)
    rel = np.linalg.norm(r) / scale
    history.append(float(rel))
    values = [] if settled is None else [float(-np.vdot(rhs, x) - np.vdot(x, r))]
    if rel <= tol and settled is None:
        return x, 0, history, True, False
    for it in range(1, maxiter + 1):
        Ap = Pj(apply(p))
        pAp = np.vdot(p, Ap)
        if not pAp > 0:
            # Only a singular (semi-definite) system gets here: the remaining residual lies
            # in its null space, and x is a least-squares solution.
            return x, it - 1, history, False, False
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rel = np.linalg.norm(r) / scale
        history.append(float(rel))
        if report is not None and report(it, x):
            return x, it, history, False, True
        if settled is not None:
            values.append(float(-np.vdot(rhs, x) - np.vdot(x, r)))
        if rel <= tol and (settled is None or settled(values)):
            return x, it, history, True, False
        z = Pj(M(r))
        rz_new = np.vdot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, maxiter, history, False, False


def cg_message(name, converged, stopped, iterations, history, tol, maxiter):
    last = history[-1] if history else float("nan")
    if stopped:
        return f"{name}: stopped by the callback after {iterations} iterations " \
               f"(relative residual {last:.2e})"
    if converged:
        return f"{name}: converged, relative residual {last:.2e} <= tol={tol:g} after " \
               f"{iterations} iterations"
    if iterations < maxiter:
        return f"{name}: stalled after {iterations} iterations at relative residual " \
               f"{last:.2e} > tol={tol:g}: the system is singular (the images do not " \
               "determine the kernel); add a regulariser (reg=..., lam > 0)"
    return f"{name}: NOT converged, relative residual {last:.2e} > tol={tol:g} after " \
           f"maxiter={maxiter} iterations; raise maxiter or loosen tol"


def solve_standard_form(op, reg, lam, total, x0, tol, maxiter, callback, noise_std=None):
    sf = StandardForm(op, reg, total=total)
    u0 = np.zeros(op.shape) if x0 is None else sf.coefficients(x0)
    report = None if callback is None else (lambda it, u: callback(it, sf.kernel(u)))
    # On the standard form a small relative residual can leave the fit far from converged
    # (seed 000, laplacian, lam = 0.25: residual 1e-5 with the residual sum of squares 1.6 %
    # off), so convergence also asks the objective to have settled (see objective_settled).
    offset = objective(op, reg, lam, sf.kernel(np.zeros(op.shape)))
    n = op.n_used

    def settled(values):
        return objective_settled(values, offset=offset, tol=tol, n=n, noise_std=noise_std)

    u, its, history, converged, stopped = conjugate_gradients(lambda v: sf.apply(v) + lam * v, sf.g, u0,
                                              tol, maxiter, report=report, settled=settled)
    kernel = sf.kernel(u)
    if total is not None:
        kernel = kernel + (total - kernel.sum()) / kernel.size
    message = cg_message("CG on the standard form", converged, stopped, its, history, tol,
                          maxiter)
    if converged:
        message += (f", and the objective settled (its last {window(its)} iterations "
                    "lowered it by at most tol relative)")
    return IterativeSolution(kernel, converged, its, history, message, "cg-standard-form",
                             objective(op, reg, lam, kernel))


def solve_jacobi(op, reg, lam, total, x0, tol, maxiter, callback):
    n = op.n_used
    c = op.rhs / n
    ridge = lam if reg == "ridge" else 0.0
    diag = op.diagonal() / n + ridge
    diag = np.where(diag > 0, diag, 1.0)   # untouched coefficients (no data, no ridge)

    def apply(k):
        return op.normal(k) / n + ridge * k

    if total is not None:
        p = c.size
        zero_sum = (lambda v: v - v.mean())
        # k = start + d with the feasible start total/p and a zero-sum correction d
        # solving the normal equations on that subspace (projected CG).
        start = np.full(op.shape, total / p)
        d0 = np.zeros(op.shape) if x0 is None else zero_sum(x0)
        rhs = c - apply(start)
        report = None if callback is None else (lambda it, d: callback(it, start + d))
        d, its, history, converged, stopped = conjugate_gradients(apply, rhs, d0, tol, maxiter,
                                                  lambda v: v / diag, zero_sum, report)
        kernel = start + d
        kernel = kernel + (total - kernel.sum()) / p
    else:
        start = np.zeros(op.shape) if x0 is None else x0
        report = None if callback is None else callback
        kernel, its, history, converged, stopped = conjugate_gradients(apply, c, start, tol, maxiter,
                                                       lambda v: v / diag, None, report)
    message = cg_message("Jacobi-preconditioned CG", converged, stopped, its, history, tol,
                          maxiter)
    if converged and reg is None and op.n_used < c.size:
        message += (f"; note: {op.n_used} used pixels for {c.size} unknowns, so the data "
                    "cannot determine the kernel: this is one of many exact fits")
    return IterativeSolution(kernel, converged, its, history, message, "cg-jacobi",
                             objective(op, reg, lam, kernel))


def multishift_block_cg(apply, rhs, shifts, *, tol, maxiter, monitor=None):
    """CG on ``(S + σ) x = r_j`` for every shift σ and every right-hand side ``r_j``.

    One Krylov recurrence per right-hand side (at the smallest shift); the other shifts
    follow from the collinearity of the shifted residuals (Frommer's multi-shift CG), so the
    cost is one ``S`` product per iteration for the whole block.  Returns ``xs`` (the
    solutions for the first right-hand side, one per shift), ``forms[j, σ] = r_jᵀ x_{j,σ}``
    (the quadratic forms of every right-hand side), the iteration count and, per shift,
    whether every right-hand side reached ``tol``.
    """
    m = rhs.shape[0]
    ns = shifts.size
    s0 = shifts[0]
    ds = shifts - s0
    norms = np.sqrt(np.einsum("jab,jab->j", rhs, rhs))
    norms = np.where(norms > 0, norms, 1.0)
    r = rhs.copy()
    p = rhs.copy()
    rr = np.einsum("jab,jab->j", r, r)
    xs = np.zeros((ns,) + rhs.shape[1:])
    ps0 = np.repeat(rhs[:1], ns, axis=0)           # shifted directions, data only
    xs_flat, ps0_flat = xs.reshape(ns, -1), ps0.reshape(ns, -1)   # views for BLAS
    forms = np.zeros((m, ns))
    rp = np.repeat(rr[:, None], ns, axis=1)        # r_jᵀ p_{j,σ} (p starts as r)
    zeta = np.ones((m, ns))
    zeta_old = np.ones((m, ns))
    alpha_old = np.ones(m)
    beta_old = np.zeros(m)
    done = np.zeros((m, ns), bool)
    rhs0 = rhs.copy()
    its = 0
    for its in range(1, maxiter + 1):
        Ap = apply(p) + s0 * p
        pAp = np.einsum("jab,jab->j", p, Ap)
        live = pAp > 0
        alpha = np.where(live, rr / np.where(live, pAp, 1.0), 0.0)
        # Shifted coefficients (Frommer 2003; Jegerlehner 1996).
        denom = (alpha[:, None] * beta_old[:, None] * (zeta_old - zeta)
                 + zeta_old * alpha_old[:, None] * (1.0 + alpha[:, None] * ds[None]))
        zeta_new = np.where(denom != 0, zeta * zeta_old * alpha_old[:, None]
                            / np.where(denom != 0, denom, 1.0), 0.0)
        alpha_s = np.where(zeta != 0, alpha[:, None] * zeta_new / np.where(zeta != 0, zeta,
                                                                           1.0), 0.0)
        alpha_s = np.where(done, 0.0, alpha_s)
        # x_{j,σ} += α_σ p_{j,σ}: vectors for the data (only for shifts still moving),
        # quadratic forms for all.
        moving = np.flatnonzero(~done[0])
        # A loop of in-place BLAS updates: fancy-indexed updates copy (10× slower), and
        # ``xs[i] += a * ps0[i]`` makes a temporary.
        for i in moving:
            _axpy(ps0_flat[i], xs_flat[i], a=alpha_s[0, i])
        forms += alpha_s * rp
        r = r - alpha[:, None, None] * Ap
        rr_new = np.einsum("jab,jab->j", r, r)
        beta = np.where(rr > 0, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
        ratio = np.where(zeta != 0, zeta_new / np.where(zeta != 0, zeta, 1.0), 0.0)
        beta_s = beta[:, None] * ratio ** 2
        r0 = r[0].ravel()
        for i in moving:
            _scal(beta_s[0, i], ps0_flat[i])
            _axpy(r0, ps0_flat[i], a=zeta_new[0, i])
        rhs_r = np.einsum("jab,jab->j", rhs0, r)
        rp = zeta_new * rhs_r[:, None] + beta_s * rp
        p = r + beta[:, None, None] * p
        zeta_old, zeta = zeta, zeta_new
        alpha_old, beta_old, rr = np.where(live, alpha, 1.0), beta, rr_new
        residual = np.abs(zeta) * np.sqrt(rr)[:, None] / norms[:, None]
        reached = residual <= tol
        # A system stops moving only once its residual is below tol AND its score has
        # settled: on the laplacian's standard form a residual of 1e-5 can leave the
        # residual sum of squares 1.6 % off (seed 000, lam = 0.25), and a frozen system
        # would then look settled to the monitor.
        done |= reached & (True if monitor is None else monitor.steady[None, :])
        if done.all() or not live.any():
            break
        if monitor is not None and monitor(
                its, xs, forms, lambda: zeta[0] * np.einsum("lij,ij->l", xs, r[0])):
            break
    return xs, forms, its, (done | reached).all(axis=0)
