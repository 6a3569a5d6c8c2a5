"""Richardson–Lucy (:func:`fit_richardson_lucy`), accelerated and stopped in statistical units.

``k ← k · Xᵀ(u·b / Xk) / Xᵀu`` (``u`` the used pixels), the EM algorithm for Poisson data,
which keeps ``k ≥ 0`` and needs ``a, b ≥ 0``.  Plain RL crawls (thousands of updates on a
photo), so it is accelerated by SQUAREM (Varadhan & Roland, Scand. J. Stat. 35, 2008): each
cycle is three RL updates and an extrapolation (no coefficient cut below 1 % of its value in
one cycle), discarded when the Poisson objective does not decrease.

The count is set by a stopping rule in statistical units: every few cycles the objective
still to be gained is estimated by the Newton decrement (on the coefficients not heading to
zero, plus ``Σ k_j·g_j`` for those that are), and RL stops when it is below ``tol`` × half
the number of free coefficients × the dispersion (Pearson ``χ²/(n − p)``, or
``noise_std²·mean(1/Xk)`` when the noise is known): the kernel is then within about ``√tol``
of its statistical error from the Poisson maximum-likelihood kernel (default ``tol=0.1``:
about 5 % added to that error).  On noise-free data it stops at the objective's float64
rounding.  (The discrepancy principle is not used: with far more pixels than coefficients it
stops long before the kernel has converged.)
"""

from __future__ import annotations

import time

import numpy as np

from ...core.design import PreparedPair
from ...core.forward import ExtendedSpectrum, box_counts
from ...stats.compute import statistics
from ..free import free_kernel_fit
from ..result import KernelFit, ResidualImages
from .noise import noise_std_of, quantisation_floor


class _Pair:
    """One pair for Richardson–Lucy: forward ``X k``, adjoint ``Xᵀ r`` on the used pixels."""

    def __init__(self, pair: PreparedPair, shape):
        self.pair = pair
        self.shape = shape
        self.use = None if pair.use is None else pair.use.astype(np.float64)
        self.b = pair.b_used
        self.spectrum = ExtendedSpectrum(pair.extended, shape)
        ones = np.ones(self.b.shape) if self.use is None else self.use
        self.denominator = self.adjoint(ones)

    def forward(self, kernel):
        return self.spectrum.convolve_valid(kernel)

    def adjoint(self, r):
        return self.spectrum.correlate_valid(r)[::-1, ::-1]

    def masked(self, x):
        return x if self.use is None else x * self.use

    def adjoint_squared(self, r):
        """``Σ_i r[i]·X_ij²`` (the diagonal of ``Xᵀ diag(r) X``)."""
        if not hasattr(self, "_squared"):
            self._squared = ExtendedSpectrum(self.pair.extended ** 2, self.shape)
        return self._squared.correlate_valid(r)[::-1, ::-1]


def _check_nonnegative(pairs) -> None:
    for i, pair in enumerate(pairs):
        label = "" if len(pairs) == 1 else f"[{i}]"
        b = pair.b_used if pair.use is None else pair.b_used[pair.use]
        lowest_a, lowest_b = float(pair.extended.min()), float(b.min())
        for name, lowest in ((f"a{label}", lowest_a), (f"b{label}", lowest_b)):
            if lowest < 0:
                raise ValueError(
                    f"method='richardson-lucy' needs non-negative images, but {name} has "
                    f"values down to {lowest:.6g}; add an offset to both images (with "
                    "background=0 in least squares), or use least squares with nonneg=True")


def _check_explainable(pairs, shape) -> None:
    """Refuse pixels of ``b`` that no non-negative kernel can reach.

    Where ``a`` is zero under a pixel's whole footprint, ``a ⊛ k`` is 0 there for every
    kernel; if ``b`` is positive there, the Poisson likelihood is 0 whatever ``k`` is, and
    the updates (``b / (a ⊛ k)``) overflow.
    """
    for i, pair in enumerate(pairs):
        label = "" if len(pairs) == 1 else f"[{i}]"
        unreachable = box_counts(pair.extended > 0, shape) == 0
        if pair.use is not None:
            unreachable &= pair.use
        stranded = int(np.count_nonzero(unreachable & (pair.b_used > 0)))
        if stranded:
            raise ValueError(
                f"method='richardson-lucy' cannot explain b{label}: {stranded} used pixel(s) "
                f"of b{label} are positive where a{label} is zero under the whole "
                f"{shape[0]}x{shape[1]} kernel footprint, so a ⊛ k is 0 there for every "
                "kernel; mask them (mask=), fit a background with least squares "
                "(background=0), or use least squares (method=None)")


def fit_richardson_lucy(pairs: list[PreparedPair], shape, *, single, noise_std=None,
                        tol=0.1, maxiter=3000, accelerate=True) -> KernelFit:
    """Richardson–Lucy kernel updates, accelerated, stopped in statistical units.

    Parameters
    ----------
    pairs, shape, single :
        As :func:`fit_fourier`.  Masks and NaN are handled (unused pixels get weight 0).
    noise_std : float, optional
        Known noise of ``b``; sets the dispersion of the stopping rule (default: Pearson
        ``χ²/(n − p)`` of the current fit).
    tol : float, default 0.1
        Stop when the Poisson objective still to be gained is below ``tol`` × its statistical
        resolution (``dispersion × free coefficients / 2``): the kernel is then within about
        ``√tol`` of its statistical error from where RL converges, which adds about
        ``tol/2`` (5 %) to that error.
    maxiter : int, default 3000
        Most RL updates; reaching it leaves ``fit.converged`` False.
    accelerate : bool, default True
        SQUAREM extrapolation (False: plain RL, one update per step).

    Returns
    -------
    KernelFit
        ``method='richardson-lucy'``, a non-negative kernel; ``info['iterations']`` (RL
        updates), ``['cycles']``, ``['history']`` (objective per check),
        ``['stopping']`` (remaining gain, resolution, dispersion, rule).

    Raises
    ------
    ValueError
        When ``a`` or ``b`` (used pixels) has negative values, or a used pixel of ``b`` is
        positive where ``a`` is zero under its whole footprint (no kernel can explain it).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((64, 64)), np.array([[0.1, 0.2], [0.6, 0.1]])
    >>> pair = prepare_pair(a, kf.convolve(a, k, boundary="valid"), 2, boundary="valid")
    >>> fit = fit_richardson_lucy([pair], (2, 2), single=True)
    >>> bool(np.abs(fit.kernel - k).max() < 1e-3), fit.converged
    (True, True)
    """
    started = time.perf_counter()
    shape = tuple(shape)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a number > 0")
    if int(maxiter) < 1:
        raise ValueError(f"maxiter={maxiter!r} must be at least 1")
    _check_nonnegative(pairs)
    _check_explainable(pairs, shape)
    p = shape[0] * shape[1]
    n_used = sum(pair.n_used for pair in pairs)
    data = [_Pair(pair, shape) for pair in pairs]
    denominator = sum(d.denominator for d in data)
    flux = sum(float(np.sum(d.masked(d.b))) for d in data)
    info = {"n_pairs": len(pairs), "accelerated": bool(accelerate)}
    if flux == 0 or not np.any(denominator > 0):
        kernel = np.zeros(shape)
        message = ("b is zero on every used pixel: the kernel is 0" if flux == 0 else
                   "a is zero under every used pixel: the kernel is not determined")
        info.update(iterations=0, cycles=0)
        residuals = ResidualImages(pairs, None, kernel, single=single)
        return free_kernel_fit(pairs, kernel, method="richardson-lucy", residuals=residuals,
                    noise=noise_std_of(residuals, n_used, p), stderr=None, cov=None, lam=None,
                    n_used=n_used, converged=flux == 0, message=message, info=info)
    undetermined = denominator <= 0
    floor_var = quantisation_floor(pairs)
    b_scale = max(float(np.max(np.abs(d.masked(d.b)))) for d in data)
    safe_den = np.where(undetermined, 1.0, denominator)
    tiny = np.finfo(float).tiny

    def predictions(kernel):
        return [d.forward(kernel) for d in data]

    def objective(preds):
        # Σ u·(Xk − b·log Xk), the negative Poisson log-likelihood up to a constant.
        total = 0.0
        for d, pred in zip(data, preds):
            pred = np.maximum(pred, tiny)
            total += float(np.sum(d.masked(pred - d.b * np.log(pred))))
        return total

    def update(kernel, preds):
        numerator = sum(d.adjoint(d.masked(d.b / np.maximum(pred, tiny)))
                        for d, pred in zip(data, preds))
        return np.where(undetermined, 0.0, kernel * numerator / safe_den)

    kernel = np.where(undetermined, 0.0, flux / float(np.sum(denominator[~undetermined])))
    preds = predictions(kernel)
    value = objective(preds)
    iterations = cycles = 0
    history = [value]
    checks = []
    converged, message, last_check, fisher = False, "", None, None
    while iterations < maxiter:
        if accelerate and iterations + 3 <= maxiter:
            k1 = update(kernel, preds)
            k2 = update(k1, predictions(k1))
            r, v = k1 - kernel, k2 - 2 * k1 + kernel
            norm_v = np.linalg.norm(v)
            alpha = -np.linalg.norm(r) / norm_v if norm_v > 0 else -1.0
            alpha = min(alpha, -1.0)
            # Each coefficient keeps at least 1% of its value: RL grows a coefficient back
            # from near zero only slowly, so an extrapolation must not throw it there.
            trial = np.maximum(kernel - 2 * alpha * r + alpha ** 2 * v, 0.01 * kernel)
            candidate = update(trial, predictions(trial))
            candidate_preds = predictions(candidate)
            candidate_value = objective(candidate_preds)
            if not candidate_value <= value:
                candidate = k2
                candidate_preds = predictions(k2)
                candidate_value = objective(candidate_preds)
            iterations += 3
        else:
            candidate = update(kernel, preds)
            candidate_preds = predictions(candidate)
            candidate_value = objective(candidate_preds)
            iterations += 1
        kernel, preds, value = candidate, candidate_preds, candidate_value
        cycles += 1
        history.append(value)
        if last_check is None or iterations - last_check >= 15:
            last_check = iterations
            refresh = (len(checks) & (len(checks) - 1)) == 0   # Fisher at checks 0,1,2,4,8..
            check = _remaining_gain(data, kernel, preds, p, noise_std, undetermined,
                                    fisher if not refresh else None, floor_var=floor_var,
                                    scale=b_scale)
            fisher = check.pop("fisher")
            check["iteration"] = iterations
            checks.append(check)
            # On (nearly) noise-free data the resolution vanishes: stop at the objective's
            # float64 rounding instead.
            check["rounding"] = 1e3 * np.finfo(float).eps * abs(value)
            if check["remaining"] <= max(tol * check["resolution"], check["rounding"]):
                converged = True
                break
    if not converged:
        last = checks[-1] if checks else {}
        message = (f"Richardson–Lucy stopped at maxiter={maxiter} updates with an estimated "
                   f"{last.get('remaining', float('nan')):.3g} of objective still to gain "
                   f"(resolution {last.get('resolution', float('nan')):.3g}); raise maxiter= "
                   "or use least squares with nonneg=True")
    if undetermined.any():
        message = "; ".join(filter(None, [message, f"{int(undetermined.sum())} coefficients "
                                          "see no pixel of a and are set to 0"]))
    residuals = ResidualImages(pairs, None, kernel, single=single)
    info.update(iterations=iterations, cycles=cycles, history=history, checks=checks,
                stopping={"rule": "remaining gain (Newton decrement) below tol × statistical "
                                  "resolution, or below the objective's rounding",
                          "tol": tol, **(checks[-1] if checks else {})},
                objective=value, seconds={"total": time.perf_counter() - started})
    return free_kernel_fit(pairs, kernel, method="richardson-lucy", residuals=residuals,
                noise=noise_std_of(residuals, n_used, p), stderr=None, cov=None, lam=None,
                n_used=n_used, converged=converged and not undetermined.any(),
                message=message, info=info)


def _remaining_gain(data, kernel, preds, p, noise_std, undetermined, fisher=None, *,
                    floor_var=0.0, scale=1.0) -> dict:
    """The Poisson objective still to gain, and its statistical resolution.

    Gradient ``g = Xᵀu − Xᵀ(u·b/Xk)``; Fisher matrix ``H = Xᵀ diag(u/Xk) X`` (exact weighted
    statistics; ``fisher`` reuses an earlier one, as it changes slowly).  Coefficients whose
    Newton step would cross zero while ``g > 0`` are taken
    to their bound (gain ``≈ k_j·g_j``); the rest contribute ``½ gᵀH⁻¹g``.
    """
    tiny = np.finfo(float).tiny
    gradient = sum(d.denominator - d.adjoint(d.masked(d.b / np.maximum(pred, tiny)))
                   for d, pred in zip(data, preds)).ravel()
    pearson, n, inverse_mean = 0.0, 0, 0.0
    for d, pred in zip(data, preds):
        safe = np.maximum(pred, tiny)
        used = np.ones(d.b.shape, bool) if d.use is None else d.use > 0
        positive = used & (pred > 0)
        pearson += float(np.sum(((d.b - pred) ** 2 / safe)[positive]))
        inverse_mean += float(np.sum((1.0 / safe)[positive]))
        n += int(positive.sum())
    k = kernel.ravel()
    free = ~undetermined.ravel()
    hessian = fisher
    if hessian is None and p <= 1024:
        hessian = sum(statistics(d.pair.extended, d.b, d.shape, method="im2col",
                                 weights=d.masked(1.0 / np.maximum(pred, tiny))
                                 * (pred > 0)).gram
                      for d, pred in zip(data, preds))
    bound_gain = 0.0
    if hessian is not None:
        for _ in range(p):
            idx = np.flatnonzero(free)
            if idx.size == 0:
                break
            step = -np.linalg.lstsq(hessian[np.ix_(idx, idx)], gradient[idx], rcond=1e-12)[0]
            crossing = idx[(k[idx] + step < 0) & (gradient[idx] > 0)]
            if crossing.size == 0:
                break
            free[crossing] = False
        idx = np.flatnonzero(free)
        newton = 0.5 * float(-gradient[idx] @ step) if idx.size else 0.0
        bound = ~free & ~undetermined.ravel()
        bound_gain = float(np.sum(np.clip(k[bound] * gradient[bound], 0, None)))
        remaining = max(newton, 0.0) + bound_gain
    else:
        # Too many coefficients for the Fisher matrix: its diagonal (which understates the
        # gain still to come along correlated directions).
        diagonal = np.maximum(sum(d.adjoint_squared(d.masked(1.0 / np.maximum(pr, tiny)))
                                  for d, pr in zip(data, preds)).ravel(), tiny)
        remaining = 0.5 * float(np.sum(gradient[free] ** 2 / diagonal[free]))
    n_free = int(free.sum())
    # The noise cannot be below the rounding of integer b, nor below float64's precision.
    floor = max(floor_var, (1e-12 * scale) ** 2) * inverse_mean / max(n, 1)
    if noise_std is not None:
        dispersion = max(float(noise_std) ** 2 * inverse_mean / max(n, 1), floor)
    else:
        dispersion = max(pearson / max(n - n_free, 1), floor)
    return {"remaining": float(remaining), "resolution": 0.5 * dispersion * max(n_free, 1),
            "dispersion": float(dispersion), "n_free": n_free,
            "hessian": "exact" if hessian is not None else "diagonal", "fisher": hessian}
