"""Robust free-kernel fits: Huber and L1 losses, the exact L1 linear program, sigma-clipping.

A plain least-squares kernel is ruined by a few wild pixels of ``b`` (cosmic rays, hot pixels,
salt-and-pepper noise, a sticker on the target).  :func:`fit_free_robust` fits a free kernel
(one coefficient per kernel pixel) under a loss that bounds their influence.  Every method
starts from the least-squares kernel on the sufficient statistics and works with the rows
``x_i`` of the design matrix (the footprints of the used pixels of ``b``) and the residuals
``r = b − X k``.

Losses
------
``loss='huber'``
    Minimises ``Σ 2ρ(r_i)`` with ``2ρ(r) = r²`` for ``|r| ≤ f_scale`` and
    ``2·f_scale·|r| − f_scale²`` beyond (so a huge ``f_scale`` is plain least squares).  The
    default ``f_scale`` is ``1.345·σ̂``, with ``σ̂ = 1.4826·MAD`` (median absolute deviation
    about the median) of the residuals: 95 % efficiency under Gaussian noise.  σ̂ starts
    from the least-squares residuals, which the outliers inflate, and is re-estimated from
    the Huber fit's own residuals, refitting until it changes by less than 2 % (at most 5
    rounds; ``fit.info['scale']`` is the last one).
    The objective is convex and piecewise quadratic.  Each iteration first tries the Newton
    step on the current piece (weights 1 on the pixels with ``|r| ≤ f_scale``, 0 on the
    others, plus the constant pull ``f_scale·sign(r)`` of the others), which lands exactly on
    the minimiser once the set of down-weighted pixels has settled; if it does not lower the
    objective, the IRLS step (weights ``min(1, f_scale/|r|)``), a majorise-minimise step that
    never increases it.  It stops when the kernel moves by less than ``tol`` (relative).
``loss='l1'``
    The least-absolute-deviations kernel, ``argmin Σ|r_i|`` (seed 001's answer; a median-like
    fit).  IRLS with weights ``1/max(|r_i|, ε)`` (scaled to ``min(1, ε/|r_i|)``, which changes
    nothing) minimises a Huber loss of threshold ``ε``.  The ε schedule: ``ε_j = σ̂·10^(−j)``,
    ``j = 0, 1, …, 6`` (``σ̂`` as above); stage ``j`` iterates until the kernel moves by less
    than ``max(tol, 10^(−2−j))`` (relative).  IRLS with ``ε → 0`` crawls near the L1 kink, so
    it only has to find the residual signs: an *exact finish* is tried after each stage (and
    after 2, 4, 8, … iterations of a long one).  It solves the L1 problem as a linear program
    (HiGHS on the dual, which has only ``p`` constraints) over a working set — the
    ``max(1000, 20·p)`` pixels with the smallest ``|r|`` — the others held at their current
    signs.  When the new kernel leaves every held pixel on its side, it is the L1 minimiser
    of the whole problem (the restricted objective is a lower bound of the full one that
    touches it there).  Wrongly held pixels join the working set (doubled, up to 8000
    pixels, when there are many) and the LP is solved again, at most three times.  The LP
    answer is then snapped to its vertex (the ``p`` basic pixels fitted exactly by one
    ``p × p`` solve) and checked with the L1 optimality condition ``Σ_{i∉B} sign(r_i) x_i +
    X_Bᵀu_B = 0`` with ``|u_B| ≤ 1`` (``fit.info['l1_certificate'] = max|u_B|``; a
    feasibility LP decides degenerate vertices where more than ``p`` pixels fit exactly).
    ``fit.info['l1_exact'] = True`` reports a certified minimiser.  With a quadratic ``reg``
    (no LP finish) the IRLS goes down the schedule until the estimated gap to the minimum,
    ``m·ε/4`` (``m`` = pixels with ``|r| < ε``; ``fit.info['l1_gap_estimate']``), is below
    1e-6 of the objective.
``method='lp'``
    The whole L1 problem as one linear program (HiGHS on ``max bᵀu`` subject to ``Xᵀu = 0``,
    ``|u| ≤ 1``; the kernel is minus the constraint multipliers, then snapped to its vertex
    as above; ``nonneg`` and ``normalize`` become ``Xᵀu + ν1 ≤ 0`` and a free ``ν``).  Dense
    in ``X``, so it is refused above :data:`MAX_LP_ENTRIES` entries (``N·p``; about 6 s at
    the limit).
``clip=c`` (with ``loss='l2'``)
    Iterative sigma-clipping: fit, drop the pixels with ``|r − median(r)| > c·σ̂``
    (``σ̂ = 1.4826·MAD`` of all used residuals), refit on the others, until the set of
    dropped pixels repeats.

With a background
-----------------
``background=d`` (a polynomial per pair, as in :mod:`kernelfit.background`) works with
``clip`` and ``loss='huber'``: :func:`fit_robust_with_background` profiles the backgrounds out
of the weighted statistics at every reweighting, so each step is the exact weighted
least-squares kernel and background; Huber there uses plain IRLS steps (no Newton step, no
downdating).  The L1 loss and ``method='lp'`` do not take a background.

Cost of the weighted statistics
-------------------------------
IRLS needs ``G_w = XᵀWX`` for general weights, which rules out the FFT path of
:mod:`kernelfit.stats`: im2col costs ``N·p²``.  Most weights are often exactly 1 (Huber:
every pixel with ``|r| ≤ f_scale``, about 80 % of them; clipping: all kept pixels), so
:meth:`_PixelDesign.weighted` *downdates* the exact unweighted statistics (FFT path, computed
once) by the others, ``G_w = G − Σ_{w_i<1} (1 − w_i) x_i x_iᵀ``, at a cost proportional to
their number; when more than half the pixels have ``w_i < 1`` (L1) it sums
``Σ w_i x_i x_iᵀ`` directly instead, which also avoids cancellation.  The footprints of the
used pixels are kept in memory when they fit in 64 MB (``N·p·8`` bytes; a 256² image with a
9×9 kernel takes 40 MB) and gathered in chunks otherwise.  Measured on the 2-core machine
(248² used pixels, 9×9): the FFT statistics 8 ms; ``stats.statistics`` with general weights
(im2col) 0.34 s; a direct weighted sum from the cached footprints 0.06 s; a Huber downdate
(~20 % of the pixels) 0.02 s.  Whole fits with 2 % salt-and-pepper outliers: 248² used
pixels, Huber 0.1 s, L1 0.6–0.9 s, clipping 0.06 s (least squares 0.007 s); 1016², Huber
3.2 s, L1 15 s (13 direct ``N·p²`` passes of ~1 s each), clipping 0.5 s (least squares
0.05 s).

Uncertainty
-----------
With ``G = XᵀX`` over the used pixels (standard errors for unregularised, unconstrained fits;
NaN otherwise, with a note in ``fit.message``):

* Huber: Huber's asymptotic covariance ``[Σψ(r)²/(n − p)] / [mean ψ'(r)]² · G⁻¹``,
  ``ψ(r) = clip(r, −f_scale, f_scale)``.
* L1: the asymptotic covariance of least-absolute-deviations regression with i.i.d. errors,
  ``G⁻¹ / (2 f̂(0))²``, ``f̂(0)`` the residual density at zero from a Gaussian kernel density
  estimate with Silverman's bandwidth (the same estimator as the parametric L1 fits).
* Clipping: least squares on the kept pixels, ``σ̂²·G_kept⁻¹`` with ``σ̂² = RSS_kept /
  (n_kept − p)`` divided by ``1 − 2cφ(c)/(2Φ(c) − 1)``, the variance of a standard normal
  truncated at ``±c`` (0.973 at ``c = 3``), so that ``σ̂`` is not biased low by the clipping.

``fit.noise_std`` is the robust ``1.4826·MAD`` of the final residuals for Huber and L1, the
corrected ``σ̂`` above for clipping.

What is reported
----------------
``fit.info['weights']``: per pair, an array shaped like ``b`` (NaN where unused) with each
pixel's final weight in ``[0, 1]``: Huber ``min(1, f_scale/|r|)``; clipping 0 or 1; L1 (whose
influence is ``sign(r)`` for every pixel) the Huber weights at ``1.345·fit.noise_std``, which
flag the pixels the fit treats as outliers.  ``fit.info['n_downweighted']`` counts the used
pixels with weight < 1.  Also ``'iterations'``, ``'objective'``, ``'scale'`` (the robust σ̂ of
the least-squares residuals), ``'f_scale'``/``'clip'``, and timings.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtr

from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum, convolve_extended
from .free import free_kernel_fit
from .result import KernelFit, ResidualImages
from ..models.fit_parametric import _density_at_zero
from ..solvers.constrained import solve_quadratic
from ..solvers.direct import solve_normal_equations
from ..solvers.regularisers import QUADRATIC, penalty_matrix
from ..stats.background import (
    fitted_background,
    profiled_statistics,
    residual_with_background,
)
from ..stats.compute import choose_method, statistics
from ..stats.gram import SufficientStatistics

__all__ = ["fit_free_robust", "MAX_LP_ENTRIES", "HUBER_C", "LOSSES", "METHODS"]

LOSSES = ("l2", "l1", "huber")
# None and 'irls'/'normal' run IRLS on the statistics; 'lp' the whole linear program.
METHODS = (None, "irls", "normal", "lp")
#: Largest ``N·p`` (used pixels × kernel coefficients) ``method='lp'`` accepts: HiGHS takes
#: about 6 s on the dual of a 20000 × 81 problem (1.6e6 entries) on the 2-core machine.
MAX_LP_ENTRIES = 2_000_000
#: Huber's tuning constant: 95 % asymptotic efficiency under Gaussian noise.
HUBER_C = 1.345
#: The robust fits work on a p × p Gram matrix, like the direct path of the free model.
MAX_ROBUST_UNKNOWNS = 4096
_MAD_TO_SIGMA = 1.4826
_CACHE_BYTES = 64 * 2**20
_CHUNK_BYTES = 32 * 2**20
# L1 schedule: ε from σ̂ down to σ̂·10^(−_L1_STAGES + 1), tenfold per stage.
_L1_STAGES = 7
_L1_STAGE_TOL = 2
# Without an exact finish (quadratic reg) the IRLS stops once the estimated gap to the L1
# minimum is below this fraction of the objective.
_L1_GAP_TARGET = 1e-6
# Exact finish: working set of this many pixels (at least), enlarged this many times.
_L1_WORKING_SET = 1000
_L1_WORKING_SET_GROWTHS = 3
# HiGHS time grows faster than linearly: 0.15 s at 1620 × 81, 0.9 s at 6480 × 81, ~6 s at
# 20000 × 81.  Larger working sets are not tried (the IRLS continues instead).
_L1_MAX_WORKING_SET = 8000
# The constraints ``Xᵀu = g`` sum thousands of pixels: HiGHS' default 1e-7 feasibility
# tolerances are too loose for them.
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@dataclass
class _Outcome:
    kernel: np.ndarray          # flat, convolution orientation
    residual: np.ndarray        # over the used pixels of all pairs
    weights: np.ndarray         # reported weights over the used pixels, in [0, 1]
    iterations: int
    converged: bool
    message: str
    objective: float
    info: dict = field(default_factory=dict)
    kept: np.ndarray | None = None   # clipping: the kept pixels


def fit_free_robust(pairs: list[PreparedPair], shape, *, loss, f_scale=None, clip=None,
                    method=None, reg=None, lam=None, nonneg=False, normalize=None,
                    single=True, maxiter=100, tol=1e-9) -> KernelFit:
    """Free kernel under a robust loss (Huber, L1) or with iterative sigma-clipping.

    Parameters
    ----------
    pairs : list of PreparedPair
        From :func:`kernelfit.design.prepare_pair`; one kernel is shared by every pair.
    shape : (kh, kw)
        Kernel shape (at most :data:`MAX_ROBUST_UNKNOWNS` coefficients).
    loss : {'huber', 'l1', 'l2'}
        ``'huber'``: ``Σ 2ρ(r)``, quadratic within ``±f_scale``, linear beyond.
        ``'l1'``: ``Σ|r|``, the exact least-absolute-deviations kernel.  ``'l2'``: only with
        ``clip``.  See the module docstring for the algorithms.
    f_scale : float, optional
        Huber threshold in units of ``b`` (``loss='huber'`` only).  Default
        ``1.345 · 1.4826 · MAD`` of the residuals, re-estimated from the Huber fit's own
        residuals until it settles.
    clip : float, optional
        Sigma-clipping threshold in robust standard deviations (``loss='l2'`` only), e.g. 3.0;
        at least 1.
    method : {None, 'irls', 'normal', 'lp'}
        ``None``/``'irls'``/``'normal'``: IRLS on the statistics (with the exact LP finish for
        L1).  ``'lp'``: the whole L1 linear program (``loss='l1'``, no ``reg``; refused when
        ``N·p`` exceeds :data:`MAX_LP_ENTRIES`).
    reg : {None, 'ridge', 'gradient', 'laplacian'}
        Quadratic regulariser; the objective becomes ``(1/n)·Σ 2ρ(r) + lam·R(k)`` (Huber),
        ``(1/n)·Σ|r| + lam·R(k)`` (L1; ``lam`` then has units of ``b``) or
        ``‖r‖²/n + lam·R(k)`` on the kept pixels (clipping).
    lam : float
        Required with ``reg`` (no automatic choice for robust losses).
    nonneg : bool
        Constrain the kernel to be ``>= 0`` (each weighted solve is the exact active-set QP).
    normalize : float, optional
        Constrain the kernel sum.
    single : bool
        The user passed one pair (``fit.residual`` and ``fit.info['weights']`` are then
        arrays, not lists).
    maxiter : int, default 100
        Cap on the reweighting / clipping iterations.
    tol : float, default 1e-9
        Stop when the kernel moves by less than ``tol`` relative to its norm.

    Returns
    -------
    KernelFit
        ``fit.converged`` is False when ``maxiter`` was hit first (``fit.message`` says so).
        ``fit.info`` holds ``'weights'``, ``'n_downweighted'``, ``'iterations'``,
        ``'objective'``, ``'loss'`` and the method's diagnostics.

    Raises
    ------
    ValueError
        For a bad or conflicting option (named in the message), or a linear program too
        large for ``method='lp'``.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((60, 60))
    >>> k = np.array([[0.0, 0.2, 0.0], [0.1, 0.5, 0.1], [0.0, 0.1, 0.0]])
    >>> b = kf.convolve(a, k, mode="valid") + 1e-3 * rng.standard_normal((58, 58))
    >>> b[rng.random(b.shape) < 0.05] = 5.0           # 5 % wild pixels
    >>> pair = prepare_pair(a, b, 3, boundary="valid")
    >>> fit = fit_free_robust([pair], (3, 3), loss="l1")
    >>> bool(np.abs(fit.kernel - k).max() < 2e-3), fit.info["l1_exact"]
    (True, True)
    """
    shape = tuple(int(s) for s in shape)
    method = _check_options(shape, loss=loss, f_scale=f_scale, clip=clip, method=method,
                            reg=reg, lam=lam, nonneg=nonneg, normalize=normalize,
                            maxiter=maxiter, tol=tol)
    started = time.perf_counter()
    design = _PixelDesign(pairs, shape)
    if method == "lp" and design.n * design.p > MAX_LP_ENTRIES:
        raise ValueError(
            f"method='lp' would build a dense linear program of N·p = {design.n} pixels × "
            f"{design.p} coefficients = {design.n * design.p:,} entries; the limit is "
            f"{MAX_LP_ENTRIES:,} (kernelfit.robust.MAX_LP_ENTRIES): use method=None (IRLS "
            "with an exact finish), a smaller image or a mask"
        )
    problem = _Problem(penalty_matrix(reg, shape) if reg else None,
                       float(lam) if reg else 0.0, bool(nonneg), normalize)
    t_stats = time.perf_counter()
    # The least-squares start (and G⁻¹ for the standard errors).
    if problem.plain:
        # The final solve reports rank problems itself.
        ls = solve_normal_equations(design.base, warn=False)
        k0, cov_unscaled = ls.kernel.ravel(), ls.cov_unscaled
    else:
        k0, _ = problem.solve(design.base, problem.lam)
        cov_unscaled = None
    r0 = design.residual(k0)
    scale = _robust_sigma(r0, design.b)

    if method == "lp":
        outcome = _fit_lp(design, problem, r0)
    elif clip is not None:
        outcome = _fit_clip(design, problem, k0, r0, float(clip), maxiter, tol)
    elif loss == "huber" and f_scale is not None:
        outcome = _fit_huber(design, problem, k0, r0, float(f_scale), maxiter, tol)
    elif loss == "huber":
        outcome, scale = _fit_huber_rescaled(design, problem, k0, r0, scale, maxiter, tol)
    else:
        outcome = _fit_l1(design, problem, k0, r0, scale, maxiter, tol)

    kernel = outcome.kernel.reshape(shape)
    noise, cov, stderr, note = _uncertainty(loss, clip, outcome, design, problem,
                                            cov_unscaled, f_scale=outcome.info.get("f_scale"))
    message = "; ".join(m for m in (outcome.message, note) if m)
    weights_images = [pair.embed(design.on_pair(outcome.weights, j))
                      for j, pair in enumerate(pairs)]
    info = {
        "n_pairs": len(pairs), "loss": loss, "clip": clip, "scale": scale,
        "iterations": outcome.iterations, "objective": outcome.objective,
        "weights": weights_images[0] if single else weights_images,
        "n_downweighted": int(np.count_nonzero(outcome.weights < 1)),
        "stored_footprints": design.cache is not None,
    }
    info.update(outcome.info)
    info["seconds"] = {"statistics": t_stats - started, "total": time.perf_counter() - started}
    spectra = [design.spectrum(j) for j in range(len(pairs))]
    return free_kernel_fit(
        pairs, kernel, stderr=stderr, cov=cov,
        residuals=ResidualImages(pairs, spectra, kernel, single=single), noise=noise,
        lam=problem.lam if reg else None, n_used=design.n, converged=outcome.converged,
        message=message, method=_method_name(loss, clip, method), info=info)


def fit_robust_with_background(pairs: list[PreparedPair], shape, *, background, loss="l2",
                               clip=None, f_scale=None, reg=None, lam=None, nonneg=False,
                               normalize=None, single=True, maxiter=100,
                               tol=1e-7) -> KernelFit:
    """Sigma-clipping (``clip=``) or Huber (``loss='huber'``) with a polynomial background
    per pair (``background=`` its degree).

    Every weighted solve profiles the backgrounds out of the weighted statistics
    (:func:`kernelfit.background.profiled_statistics`), so kernel and backgrounds are the
    weighted least-squares solution, and the residuals that set the next weights have the
    background subtracted.

    * ``clip``: 0/1 weights, the pixels within ``clip`` robust standard deviations of the
      median residual (as :func:`fit_free_robust`), until the kept set repeats.
    * ``'huber'``: IRLS with weights ``min(1, f_scale/|r|)`` (a majorise-minimise step, so the
      Huber objective never increases) until the kernel moves by less than ``tol``
      (relative); the default ``f_scale`` is 1.345 robust standard deviations of the
      residuals, re-estimated after each convergence until it settles within 2 % (at most 5
      rounds).  ``'l1'`` is not available here.

    Standard errors: least squares on the kept pixels (clipping, the kept residuals' variance
    corrected for the truncation) or Huber's asymptotic formula, with the profiled Gram
    matrix; not computed for regularised or constrained fits.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((60, 60)), np.array([[0.1, 0.2], [0.3, 0.4]])
    >>> b = kf.convolve(a, k, mode="valid") + 2.0 + 1e-3 * rng.standard_normal((59, 59))
    >>> b[rng.random(b.shape) < 0.03] += 5.0                     # cosmic rays
    >>> pairs = [prepare_pair(a, b, 2, boundary="valid")]
    >>> for options in (dict(clip=3.0), dict(loss="huber")):
    ...     fit = fit_robust_with_background(pairs, (2, 2), background=0, **options)
    ...     print(bool(np.abs(fit.kernel - k).max() < 1e-3), round(float(fit.background[0]), 2))
    True 2.0
    True 2.0
    """
    shape = tuple(int(s) for s in shape)
    if loss == "l1":
        raise ValueError("background= is available with clip= or loss='huber', not "
                         "loss='l1'; subtract the background first, or use loss='huber'")
    _check_options(shape, loss=loss, f_scale=f_scale, clip=clip, method=None, reg=reg,
                   lam=lam, nonneg=nonneg, normalize=normalize, maxiter=maxiter, tol=tol)
    started = time.perf_counter()
    fitter = _BackgroundFitter(pairs, shape, background,
                               _Problem(penalty_matrix(reg, shape) if reg else None,
                                        float(lam) if reg else 0.0, bool(nonneg), normalize))
    if clip is not None:
        state = fitter.clip(float(clip), maxiter)
    else:
        state = fitter.huber(f_scale, maxiter, tol)
    state.info["seconds"] = {"total": time.perf_counter() - started}
    return fitter.result(state, loss=loss, clip=clip, single=single)


@dataclass
class _BackgroundState:
    kernel: np.ndarray
    weights: list            # per pair, over the used rectangle (0 where unused)
    residuals: list          # per pair, over the used rectangle (NaN where unused)
    stats: object            # the profiled statistics of the last solve
    terms: list
    spectra: list
    converged: bool
    message: str
    info: dict
    # The statistics whose Gram matrix gives the standard errors: the kept pixels' (those of
    # the last solve) for clipping, every used pixel's, unweighted, for Huber.
    gram_stats: object = None

    def __post_init__(self):
        if self.gram_stats is None:
            self.gram_stats = self.stats


class _BackgroundFitter:
    """Weighted solves with the backgrounds profiled out, for clipping and Huber."""

    def __init__(self, pairs, shape, degree, problem):
        self.pairs, self.shape, self.degree, self.problem = pairs, shape, degree, problem
        self.used = [np.ones(pair.b_used.shape, bool) if pair.use is None else pair.use
                     for pair in pairs]

    def solve(self, weights):
        """Kernel, residuals, profiled statistics, terms and spectra for these weights."""
        stats, terms, spectra = profiled_statistics(self.pairs, self.shape, self.degree,
                                                    weights=weights)
        kernel = self.problem.solve(stats, self.problem.lam)[0].reshape(self.shape)
        residuals = [residual_with_background(pair, t, kernel, spectrum=sp)[pair.geometry.used]
                     for pair, t, sp in zip(self.pairs, terms, spectra)]
        return kernel, residuals, stats, terms, spectra

    def all_used(self, residuals) -> np.ndarray:
        return np.concatenate([r[u] for r, u in zip(residuals, self.used)])

    def clip(self, clip, maxiter):
        kept, seen, converged = [u.copy() for u in self.used], [], False
        for iteration in range(1, maxiter + 1):
            solved = self.solve([k.astype(np.float64) for k in kept])
            residuals = solved[1]
            everything = self.all_used(residuals)
            sigma, centre = _robust_sigma(everything), float(np.median(everything))
            with np.errstate(invalid="ignore"):   # unused pixels are NaN: never kept
                new_kept = [u & (np.abs(r - centre) <= clip * sigma)
                            for r, u in zip(residuals, self.used)]
            if _same_sets(new_kept, kept) or any(_same_sets(new_kept, old) for old in seen):
                converged = True   # settled, or the kept sets cycle: keep the current fit
                break
            seen.append(kept)
            kept = new_kept
        message = "" if converged else (
            f"sigma-clipping stopped at maxiter={maxiter} while the clipped set still "
            "changed: raise maxiter")
        n_clipped = int(sum(u.sum() - k.sum() for u, k in zip(self.used, kept)))
        return _BackgroundState(solved[0], [k.astype(np.float64) for k in kept], residuals,
                                *solved[2:], converged, message,
                                {"iterations": iteration, "scale": sigma,
                                 "n_clipped": n_clipped})

    def huber(self, f_scale, maxiter, tol):
        weights = [u.astype(np.float64) for u in self.used]
        kernel, residuals, unweighted = self.solve(weights)[:3]
        scale = _robust_sigma(self.all_used(residuals))
        total, converged = 0, False
        for _ in range(1 if f_scale is not None else 5):
            c = float(f_scale) if f_scale is not None else HUBER_C * scale
            converged = False
            for _ in range(maxiter):
                total += 1
                weights = [u * np.minimum(1.0, c / np.maximum(np.abs(np.nan_to_num(r)),
                                                              np.finfo(float).tiny))
                           for r, u in zip(residuals, self.used)]
                solved = self.solve(weights)
                change = _relative_change(solved[0].ravel(), kernel.ravel())
                kernel, residuals = solved[:2]
                if change <= tol:
                    converged = True
                    break
            new_scale = _robust_sigma(self.all_used(residuals))
            settled = abs(new_scale - scale) <= 0.02 * scale
            scale = new_scale
            if settled:
                break
        message = "" if converged else (
            f"Huber IRLS stopped at maxiter={maxiter} before the kernel settled: raise "
            "maxiter")
        return _BackgroundState(kernel, weights, residuals, *solved[2:], converged, message,
                                {"iterations": total, "scale": scale, "f_scale": c},
                                gram_stats=unweighted)

    def result(self, state, *, loss, clip, single) -> KernelFit:
        shape, p, m = self.shape, int(np.prod(self.shape)), state.stats.n_background
        everything = self.all_used(state.residuals)
        n = everything.size
        noise, cov, stderr, note = float("nan"), None, np.full(shape, np.nan), ""
        if clip is not None:
            kept = np.concatenate([r[w > 0] for r, w in zip(state.residuals, state.weights)])
            if kept.size > p + m:
                noise = float(np.sqrt(kept @ kept / (kept.size - p - m)
                                      / _truncated_variance(clip)))
            scale2 = noise ** 2
        else:
            noise = _robust_sigma(everything)
            c = state.info["f_scale"]
            psi = np.clip(everything, -c, c)
            inside = float(np.mean(np.abs(everything) <= c))
            scale2 = (psi @ psi / (n - p - m)) / inside ** 2 if n > p + m and inside > 0 \
                else float("nan")
        if not self.problem.plain:
            note = "standard errors are not computed for regularised or constrained robust fits"
        elif np.isfinite(scale2):
            # The Gram matrix of the used pixels (clipping: of the kept ones), background
            # profiled out.
            # The solve reports rank problems itself.
            cov_unscaled = solve_normal_equations(state.gram_stats, warn=False).cov_unscaled
            if cov_unscaled is not None:
                cov = scale2 * cov_unscaled
                stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
        fitted, background_info = fitted_background(state.terms, state.kernel, single=single)
        weights = [pair.embed(w) for pair, w in zip(self.pairs, state.weights)]
        info = dict(state.info, n_pairs=len(self.pairs), loss=loss, clip=clip,
                    weights=weights[0] if single else weights,
                    n_downweighted=int(sum(np.count_nonzero((w < 1) & u)
                                           for w, u in zip(state.weights, self.used))),
                    background=background_info)
        return free_kernel_fit(
            self.pairs, state.kernel, stderr=stderr, cov=cov, background=fitted,
            residuals=ResidualImages(self.pairs, state.spectra, state.kernel, single=single,
                                     backgrounds=state.terms),
            noise=noise, lam=self.problem.lam if self.problem.penalty is not None else None,
            n_used=state.stats.n_pixels, converged=state.converged,
            message="; ".join(filter(None, [state.message, note])),
            method="sigma-clip" if clip is not None else f"irls-{loss}", info=info)


def _same_sets(new, old) -> bool:
    return all(np.array_equal(n, o) for n, o in zip(new, old))


def _method_name(loss, clip, method):
    if method == "lp":
        return "lp"
    return "sigma-clip" if clip is not None else f"irls-{loss}"


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _number(value) -> bool:
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)
            and bool(np.isfinite(value)))


def _check_options(shape, *, loss, f_scale, clip, method, reg, lam, nonneg, normalize,
                   maxiter, tol):
    """Validate the options; return the canonical method (None for IRLS, or 'lp')."""
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not available; available: {LOSSES}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not available for a robust free kernel; "
                         f"available: {METHODS}")
    if shape[0] * shape[1] > MAX_ROBUST_UNKNOWNS:
        raise ValueError(f"shape={shape}: robust losses work on a p × p Gram matrix and take "
                         f"at most {MAX_ROBUST_UNKNOWNS} coefficients; use a smaller shape "
                         "or mask the outliers and use loss='l2'")
    if f_scale is not None:
        if loss != "huber":
            raise ValueError(f"f_scale={f_scale!r} applies to loss='huber' only, not "
                             f"loss={loss!r}")
        if not (_number(f_scale) and f_scale > 0):
            raise ValueError(f"f_scale={f_scale!r} must be a finite number > 0 (units of b)")
    if clip is not None:
        if loss != "l2":
            raise ValueError(f"clip={clip!r} is sigma-clipping for loss='l2'; loss={loss!r} "
                             "down-weights outliers by itself: drop clip or use loss='l2'")
        if not (_number(clip) and clip >= 1):
            raise ValueError(f"clip={clip!r} must be a finite number >= 1 (robust standard "
                             "deviations; 3.0 is usual)")
    elif loss == "l2":
        raise ValueError("loss='l2' without clip is plain least squares, not a robust fit: "
                         "pass clip=3.0, or loss='huber' or 'l1'")
    if method == "lp":
        if loss != "l1":
            raise ValueError(f"method='lp' solves the L1 problem exactly; it needs loss='l1', "
                             f"not loss={loss!r}" + (" with clip" if clip is not None else ""))
        if reg is not None:
            raise ValueError(f"method='lp' cannot add the quadratic reg={reg!r}; use "
                             "method=None (IRLS)")
    if reg is not None:
        if reg not in QUADRATIC:
            raise ValueError(f"reg={reg!r} is not available with a robust loss; available: "
                             f"{(None,) + QUADRATIC}")
        if not (_number(lam) and lam >= 0):
            raise ValueError(f"lam={lam!r}: a robust loss with reg={reg!r} needs lam as a "
                             "finite number >= 0 (no automatic choice for robust losses)")
    if not isinstance(nonneg, (bool, np.bool_)):
        raise ValueError(f"nonneg={nonneg!r} must be True or False")
    if normalize is not None and not _number(normalize):
        raise ValueError(f"normalize={normalize!r} must be None or a finite number")
    if isinstance(maxiter, (bool, np.bool_)) or not isinstance(maxiter, numbers.Integral) \
            or maxiter < 1:
        raise ValueError(f"maxiter={maxiter!r} must be an integer >= 1")
    if not (_number(tol) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a finite number > 0")
    return "lp" if method == "lp" else None


# ---------------------------------------------------------------------------------------------
# The pixels: footprints, predictions, weighted statistics
# ---------------------------------------------------------------------------------------------

class _PixelDesign:
    """The used pixels of every pair as rows ``x_i`` of ``X`` (convolution orientation).

    Pixels are numbered pair after pair, in C order over each pair's used rectangle.
    """

    def __init__(self, pairs: list[PreparedPair], shape):
        self.pairs, self.shape = pairs, tuple(shape)
        self.p = shape[0] * shape[1]
        self.flat = [np.arange(pair.b_used.size) if pair.use is None
                     else np.flatnonzero(pair.use) for pair in pairs]
        self.offsets = np.cumsum([0] + [len(f) for f in self.flat])
        self.n = int(self.offsets[-1])
        self.b = np.concatenate([pair.b_used.ravel()[f] for pair, f in zip(pairs, self.flat)])
        self._windows = [sliding_window_view(pair.extended, shape) for pair in pairs]
        self._spectra = []
        base = []
        for pair in pairs:
            weights = None if pair.use is None else pair.use.astype(np.float64)
            fast = choose_method(pair.extended.shape, shape, weights) == "fft"
            spectrum = ExtendedSpectrum(pair.extended, shape) if fast else None
            self._spectra.append(spectrum)
            base.append(statistics(pair.extended, pair.b_used, shape, weights=weights,
                                   method="fft" if fast else "im2col", spectrum=spectrum))
        #: The exact unweighted statistics of every used pixel.
        self.base: SufficientStatistics = sum(base)
        self.cache = (self._gather(np.arange(self.n))
                      if self.n * self.p * 8 <= _CACHE_BYTES else None)

    def spectrum(self, j):
        return self._spectra[j]

    def on_pair(self, values, j):
        """Values over all used pixels → pair ``j``'s used rectangle (0 where unused)."""
        out = np.zeros(self.pairs[j].b_used.shape)
        out.ravel()[self.flat[j]] = values[self.offsets[j]:self.offsets[j + 1]]
        return out

    def _gather(self, idx):
        """Rows ``X[idx]`` (``idx`` sorted) from the image windows."""
        out = np.empty((len(idx), self.p))
        bounds = np.searchsorted(idx, self.offsets)
        for j, windows in enumerate(self._windows):
            lo, hi = bounds[j], bounds[j + 1]
            if hi == lo:
                continue
            flat = self.flat[j][idx[lo:hi] - self.offsets[j]]
            # Window order is the flipped kernel; reversing the flattened window flips it.
            if hi - lo == windows.shape[0] * windows.shape[1]:
                out[lo:hi] = windows.reshape(-1, self.p)[:, ::-1]   # every pixel: one copy
            else:
                iy, ix = np.divmod(flat, windows.shape[1])
                out[lo:hi] = windows[iy, ix].reshape(-1, self.p)[:, ::-1]
        return out

    def rows(self, idx):
        return self.cache[idx] if self.cache is not None else self._gather(idx)

    def _chunks(self, idx):
        step = max(1, _CHUNK_BYTES // (8 * self.p))
        for start in range(0, len(idx), step):
            yield idx[start:start + step]

    def predict(self, kernel_flat):
        """``X k`` over the used pixels."""
        if self.cache is not None:
            return self.cache @ kernel_flat
        k = kernel_flat.reshape(self.shape)
        parts = []
        for j, pair in enumerate(self.pairs):
            spectrum = self._spectra[j]
            full = (spectrum.convolve_valid(k) if spectrum is not None
                    else convolve_extended(pair.extended, k))
            parts.append(full.ravel()[self.flat[j]])
        return np.concatenate(parts)

    def residual(self, kernel_flat):
        return self.b - self.predict(kernel_flat)

    def adjoint(self, v):
        """``Xᵀ v`` for ``v`` over the used pixels (a flat kernel-sized vector)."""
        if self.cache is not None:
            return self.cache.T @ v
        total = np.zeros(self.p)
        for j, pair in enumerate(self.pairs):
            image = self.on_pair(v, j)
            total += scipy.signal.correlate(pair.extended, image, mode="valid")[::-1, ::-1].ravel()
        return total

    def weighted(self, weight_sets, n_used=None):
        """Exact ``SufficientStatistics`` for each weight vector (values in ``[0, 1]``).

        The weight vectors of one call must be < 1 on the same pixels (the rows are gathered
        once).  With few such pixels the unweighted statistics are downdated,
        ``G − Σ (1 − w_i) x_i x_iᵀ``; otherwise ``Σ w_i x_i x_iᵀ`` is summed directly.
        """
        first = weight_sets[0]
        low = np.flatnonzero(first < 1)
        n_used = self.n if n_used is None else n_used
        downdate = len(low) <= self.n / 2
        if downdate:
            acc = [[self.base.gram.copy(), self.base.rhs.copy(), self.base.btb]
                   for _ in weight_sets]
            sign, idx = -1.0, low
        else:
            acc = [[np.zeros((self.p, self.p)), np.zeros(self.p), 0.0] for _ in weight_sets]
            sign, idx = 1.0, np.flatnonzero(np.max(weight_sets, axis=0) > 0)
        for chunk in self._chunks(idx):
            X, y = self.rows(chunk), self.b[chunk]
            for a, w in zip(acc, weight_sets):
                d = (1.0 - w[chunk]) if downdate else w[chunk]
                Y = X * np.sqrt(d)[:, None]
                a[0] += sign * (Y.T @ Y)
                a[1] += sign * (X.T @ (d * y))
                a[2] += sign * float(d @ (y * y))
        return [SufficientStatistics(G, c, float(btb), int(n_used), self.shape)
                for G, c, btb in acc]


@dataclass
class _Problem:
    """The regulariser and constraints every weighted solve carries."""

    penalty: object
    lam: float
    nonneg: bool
    total: float | None

    @property
    def plain(self) -> bool:
        return self.penalty is None and not self.nonneg and self.total is None

    def solve(self, stats, lam):
        """Minimise ``kᵀ(G + n·lam·P)k − 2kᵀc`` under the constraints: (flat kernel, ok)."""
        solution = solve_quadratic(stats, penalty=self.penalty, lam=lam, nonneg=self.nonneg,
                                   total=self.total)
        return solution.kernel.ravel(), bool(solution.converged)

    def penalty_term(self, kernel_flat, n):
        """``n·lam·kᵀPk`` (0 without a regulariser)."""
        if self.penalty is None or self.lam == 0:
            return 0.0
        return float(n * self.lam * kernel_flat @ (self.penalty @ kernel_flat))


def _robust_sigma(r, b=None):
    """``1.4826·MAD`` about the median, floored at a tiny multiple of ``b``'s scale."""
    if r.size == 0:
        return float("nan")
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
    floor = 1e-14 * (float(np.max(np.abs(b))) if b is not None and b.size else 1.0)
    return max(sigma, floor, np.finfo(float).tiny)


def _relative_change(new, old):
    return float(np.linalg.norm(new - old) / max(np.linalg.norm(new), np.finfo(float).tiny))


# ---------------------------------------------------------------------------------------------
# Huber
# ---------------------------------------------------------------------------------------------

def _huber_objective(r, c, kernel, problem, n):
    a = np.abs(r)
    return float(np.sum(np.where(a <= c, r * r, 2 * c * a - c * c))) \
        + problem.penalty_term(kernel, n)


def _fit_huber(design, problem, k, r, c, maxiter, tol):
    objective = _huber_objective(r, c, k, problem, design.n)
    newton_steps = irls_steps = 0
    converged = False
    it = 0
    for it in range(1, maxiter + 1):
        a = np.abs(r)
        (stats_in,) = design.weighted([(a <= c).astype(np.float64)])
        # Newton on the current piece: G_in k' = G_in k + Xᵀψ(r).
        psi = np.clip(r, -c, c)
        stats_in.rhs = stats_in.gram @ k + design.adjoint(psi)
        k_new, ok = problem.solve(stats_in, problem.lam)
        accepted = False
        if ok and np.all(np.isfinite(k_new)):
            r_new = design.residual(k_new)
            obj_new = _huber_objective(r_new, c, k_new, problem, design.n)
            accepted = obj_new <= objective
        if accepted:
            newton_steps += 1
        else:
            irls_w = np.minimum(1.0, c / np.maximum(a, np.finfo(float).tiny))
            (stats_w,) = design.weighted([irls_w])
            k_new, _ = problem.solve(stats_w, problem.lam)
            r_new = design.residual(k_new)
            obj_new = _huber_objective(r_new, c, k_new, problem, design.n)
            irls_steps += 1
        change = _relative_change(k_new, k)
        k, r, objective = k_new, r_new, obj_new
        if change <= tol:
            converged = True
            break
    weights = np.minimum(1.0, c / np.maximum(np.abs(r), np.finfo(float).tiny))
    message = "" if converged else (
        f"Huber IRLS stopped at maxiter={maxiter} before the kernel settled (last relative "
        "change above tol): raise maxiter")
    return _Outcome(k, r, weights, it, converged, message, objective,
                    {"f_scale": c, "newton_steps": newton_steps, "irls_steps": irls_steps})


# ---------------------------------------------------------------------------------------------
# L1
# ---------------------------------------------------------------------------------------------

def _fit_huber_rescaled(design, problem, k, r, scale, maxiter, tol, rounds=5):
    """Huber with the default threshold ``HUBER_C·σ̂``, σ̂ re-estimated from the fit's own
    residuals until it settles (within 2 %, at most ``rounds`` refits).

    The least-squares residuals that give the first σ̂ are inflated by the very outliers the
    fit is meant to ignore (every pixel near one inherits part of it), so the first threshold
    is too lenient; the Huber residuals are not.  Returns the outcome and the final σ̂.
    """
    total = 0
    for _ in range(rounds):
        outcome = _fit_huber(design, problem, k, r, HUBER_C * scale, maxiter, tol)
        total += outcome.iterations
        k, r = outcome.kernel, outcome.residual
        new_scale = _robust_sigma(r, design.b)
        settled = abs(new_scale - scale) <= 0.02 * scale
        scale = new_scale
        if settled:
            break
    outcome.iterations = total
    return outcome, scale


def _fit_l1(design, problem, k, r, scale, maxiter, tol):
    exact_possible = problem.penalty is None
    tiny = np.finfo(float).tiny
    it, stages, history, stage_start = 0, 0, [], 0
    converged = exact = False
    eps = scale
    finish_info = {}
    for stage in range(_L1_STAGES):
        eps = scale * 10.0 ** (-stage)
        stage_tol = max(tol, 10.0 ** (-_L1_STAGE_TOL - stage))
        stages += 1
        settled, stage_start, finish = False, it, None
        while it < maxiter:
            w = np.minimum(1.0, eps / np.maximum(np.abs(r), tiny))
            (stats_w,) = design.weighted([w])
            k_new, _ = problem.solve(stats_w, 2.0 * eps * problem.lam)
            r_new = design.residual(k_new)
            change = _relative_change(k_new, k)
            k, r = k_new, r_new
            it += 1
            if change <= stage_tol:
                settled = True
                break
            # Long stages try the exact finish early, after 2, 4, 8, … iterations.
            in_stage = it - stage_start
            if exact_possible and stage > 0 and in_stage >= 2 and in_stage & (in_stage - 1) == 0:
                finish = _l1_exact_finish(design, problem, k, r, scale, eps)
                finish_info = finish[2]
                if finish[0] is not None:
                    break
        history.append({"eps": eps, "iterations": it - stage_start,
                        "objective": float(np.abs(r).sum())})
        if exact_possible:
            if finish is None or finish[0] is None:
                finish = _l1_exact_finish(design, problem, k, r, scale, eps)
                finish_info = finish[2]
            if finish[0] is not None:
                k, r = finish[0], finish[1]
                converged = exact = True
                break
        if not settled:
            break
        if not exact_possible and _l1_gap(r, eps) <= _L1_GAP_TARGET * np.abs(r).sum():
            converged = True
            break
    else:
        converged = settled
    objective = float(np.abs(r).sum()) + problem.penalty_term(k, design.n)
    info = {"l1_exact": exact, "eps_schedule": history, "stages": stages}
    info.update(finish_info)
    if not exact:
        info["l1_gap_estimate"] = _l1_gap(r, eps)
    if converged:
        why = ("no exact finish with reg" if not exact_possible
               else "the exact LP finish did not certify a solution")
        message = "" if exact else (
            f"L1 by IRLS down to eps={eps:.3g}; the objective is within about "
            f"{info['l1_gap_estimate']:.3g} of the minimum ({why})")
    else:
        message = (f"L1 IRLS stopped at maxiter={maxiter} at eps={eps:.3g} without an exact "
                   "finish: raise maxiter, or use method='lp' for a small problem")
    weights = _outlier_weights(r)
    return _Outcome(k, r, weights, it, converged, message, objective, info)


def _l1_gap(r, eps):
    """Estimated distance of ``Σ|r|`` from the L1 minimum after IRLS at ``ε``: the dual
    point ``u = clip(r/ε, −1, 1)`` of the smoothed problem gives ``Σ_{|r|<ε} (|r| − r²/ε)``,
    at most ``ε/4`` per pixel with ``|r| < ε``."""
    small = np.abs(r) < eps
    return float(np.count_nonzero(small) * eps / 4.0)


def _outlier_weights(r):
    """Huber weights at ``1.345·σ̂`` (σ̂ the robust scale of ``r``): flags the outliers."""
    c = HUBER_C * _robust_sigma(r)
    return np.minimum(1.0, c / np.maximum(np.abs(r), np.finfo(float).tiny))


def _l1_exact_finish(design, problem, k, r, scale, eps):
    """Solve the L1 problem on a working set of small residuals, the others held at their
    signs; return ``(kernel, residual, info)``, the kernel None when not certified.

    The working set: the ``max(1000, 20·p)`` smallest ``|r|``, and every pixel the IRLS fits
    to within ``max(1e-3·ε, 1e-6·σ̂)`` (noise-free data, where most pixels are fitted
    exactly, would otherwise hold near-zero residuals at arbitrary signs)."""
    n, p = design.n, design.p
    order = np.argsort(np.abs(r), kind="stable")
    m = min(n, max(_L1_WORKING_SET, 20 * p))
    # Residuals are trusted to this absolute accuracy (HiGHS' tolerances are ~1e-7 relative
    # on the multipliers; a held pixel this close to 0 may sit on either side).
    slack = 1e-9 * max(float(np.max(np.abs(design.b))), scale)
    info = {"lp_working_set": []}
    held_sign = np.sign(r)
    extra = np.flatnonzero(np.abs(r) < max(1e-3 * eps, 1e-6 * scale))
    for _ in range(_L1_WORKING_SET_GROWTHS + 1):
        free = np.union1d(order[:m], extra)
        info["lp_working_set"].append(int(len(free)))
        s = held_sign.copy()
        s[free] = 0.0
        g = -design.adjoint(s)
        k_lp, u = _l1_lp(design.rows(free), design.b[free], g, problem.nonneg, problem.total)
        if k_lp is None:
            # Infeasible dual (unbounded restricted problem): the held signs are far from
            # right; a later stage will do better.
            return None, None, info
        r_lp = design.residual(k_lp)
        violated = np.flatnonzero(s * r_lp < -slack)
        if len(violated) == 0:
            if problem.plain:
                k_lp, r_lp, certificate = _l1_vertex(design, k_lp, r_lp,
                                                     free[np.abs(u) < 1 - 1e-6])
                info["l1_certificate"] = certificate
                if certificate > 1 + 1e-9:
                    return None, None, info
            return k_lp, r_lp, info
        if len(free) == n:
            return None, None, info
        # A few wrongly held pixels: free them; many: the working set was too small.
        extra = np.union1d(extra, violated)
        if len(violated) > p:
            if 2 * m > _L1_MAX_WORKING_SET:
                return None, None, info   # the IRLS is not close yet: let it go on
            m = min(n, 2 * m)
    return None, None, info


def _l1_vertex(design, k, r, basis):
    """Snap an LP solution to its vertex: the ``p`` basic pixels (dual ``|u_i| < 1``, or else
    those with the smallest ``|r|``) fitted exactly, ``k = X_B⁻¹ b_B`` (HiGHS' multipliers
    carry its ~1e-7 tolerances).  Kept only when the L1 objective does not increase."""
    p = design.p
    if len(basis) != p:
        basis = np.sort(np.argpartition(np.abs(r), p - 1)[:p])
    X_B = design.rows(basis)
    if np.linalg.cond(X_B) > 1e12:
        return k, r, float("nan")
    k_v = np.linalg.solve(X_B, design.b[basis])
    r_v = design.residual(k_v)
    if np.abs(r_v).sum() > np.abs(r).sum():
        return k, r, float("nan")
    return k_v, r_v, _vertex_certificate(design, r_v, basis, X_B)


def _vertex_certificate(design, r, basis, X_B):
    """The L1 optimality condition at a vertex: ``Σ_{i∉Z} sign(r_i) x_i + X_Zᵀ u_Z = 0`` for
    some ``|u_Z| ≤ 1``, ``Z`` the pixels fitted exactly (the basis ``B`` and any others).

    Returns ``max|u_B|`` with ``u = 0`` off the basis, which certifies the vertex when it is
    ``<= 1``.  When more than ``p`` pixels are fitted exactly (noise-free data: a degenerate
    vertex) and that choice fails, a feasibility LP looks for other ``u_Z``; if it finds one,
    1.0 is returned.
    """
    zero = np.abs(r) <= 1e-12 * max(float(np.max(np.abs(design.b))), 1e-300)
    zero[basis] = True
    s = np.where(zero, 0.0, np.sign(r))
    target = -design.adjoint(s)
    certificate = float(np.max(np.abs(np.linalg.solve(X_B.T, target))))
    if certificate <= 1 + 1e-9 or np.count_nonzero(zero) <= design.p:
        return certificate
    Z = np.flatnonzero(zero)
    res = scipy.optimize.linprog(np.zeros(len(Z)), A_eq=design.rows(Z).T, b_eq=target,
                                 bounds=(-1.0, 1.0), method="highs", options=_HIGHS_OPTIONS)
    return 1.0 if res.status == 0 else certificate


def _l1_lp(X, b, g=None, nonneg=False, total=None):
    """``argmin_k Σ|b − Xk| + gᵀk`` (``k ≥ 0``, ``Σk = total`` optional) through the dual
    ``max bᵀu + total·ν`` s.t. ``Xᵀu + ν·1 (= or ≤) g``, ``|u| ≤ 1``; ``k`` is minus the
    constraint multipliers.  None when HiGHS fails."""
    m, p = X.shape
    g = np.zeros(p) if g is None else g
    A, cost, bounds = X.T, -b, [(-1.0, 1.0)] * m
    if total is not None:
        A = np.hstack([A, np.ones((p, 1))])
        cost = np.r_[cost, -float(total)]
        bounds = bounds + [(None, None)]
    if nonneg:
        res = scipy.optimize.linprog(cost, A_ub=A, b_ub=g, bounds=bounds, method="highs",
                                     options=_HIGHS_OPTIONS)
        multipliers = None if res.status != 0 else res.ineqlin.marginals
    else:
        res = scipy.optimize.linprog(cost, A_eq=A, b_eq=g, bounds=bounds, method="highs",
                                     options=_HIGHS_OPTIONS)
        multipliers = None if res.status != 0 else res.eqlin.marginals
    if multipliers is None:
        return None, None
    k = -np.asarray(multipliers, dtype=np.float64)
    return (np.maximum(k, 0.0) if nonneg else k), res.x[:m]


def _fit_lp(design, problem, r0):
    k, u = _l1_lp(design.rows(np.arange(design.n)), design.b, None, problem.nonneg,
                  problem.total)
    if k is None:
        raise RuntimeError("HiGHS failed on the L1 linear program")  # pragma: no cover
    r = design.residual(k)
    info = {"l1_exact": True}
    if problem.plain:
        k, r, info["l1_certificate"] = _l1_vertex(design, k, r,
                                                  np.flatnonzero(np.abs(u) < 1 - 1e-6))
    return _Outcome(k, r, _outlier_weights(r), 1, True, "", float(np.abs(r).sum()), info)


# ---------------------------------------------------------------------------------------------
# Sigma-clipping
# ---------------------------------------------------------------------------------------------

def _fit_clip(design, problem, k, r, clip, maxiter, tol):
    kept = np.ones(design.n, bool)
    converged = False
    it = 0
    seen = []
    for it in range(1, maxiter + 1):
        sigma = _robust_sigma(r, design.b)
        new_kept = np.abs(r - np.median(r)) <= clip * sigma
        if np.array_equal(new_kept, kept) and it > 1:
            converged = True
            break
        if any(np.array_equal(new_kept, old) for old in seen):
            converged = True   # a cycle: the kept sets repeat; keep the current fit
            break
        seen.append(kept)
        kept = new_kept
        (stats,) = design.weighted([kept.astype(np.float64)], n_used=int(kept.sum()))
        k, _ = problem.solve(stats, problem.lam)
        r = design.residual(k)
    message = "" if converged else (
        f"sigma-clipping stopped at maxiter={maxiter} while the clipped set still changed: "
        "raise maxiter")
    objective = float(np.sum(r[kept] ** 2)) + problem.penalty_term(k, int(kept.sum()))
    return _Outcome(k, r, kept.astype(np.float64), it, converged, message, objective,
                    {"clip": clip, "n_clipped": int(np.count_nonzero(~kept))}, kept=kept)


# ---------------------------------------------------------------------------------------------
# Uncertainty
# ---------------------------------------------------------------------------------------------

def _truncated_variance(c):
    """Variance of a standard normal truncated to ``[−c, c]``."""
    phi = np.exp(-0.5 * c * c) / np.sqrt(2 * np.pi)
    return 1.0 - 2.0 * c * phi / (2.0 * ndtr(c) - 1.0)


def _uncertainty(loss, clip, outcome, design, problem, cov_unscaled, *, f_scale):
    """``(noise_std, cov, stderr, note)`` as described in the module docstring."""
    r, p, shape = outcome.residual, design.p, design.shape
    nan = np.full(shape, np.nan)
    if clip is not None:
        kept = outcome.kept
        n_kept = int(kept.sum())
        if n_kept <= p:
            return float("nan"), None, nan, (f"only {n_kept} pixels kept for {p} "
                                             "coefficients: no noise level or standard errors")
        noise = float(np.sqrt(np.sum(r[kept] ** 2) / (n_kept - p) / _truncated_variance(clip)))
        if not problem.plain:
            return noise, None, nan, ("standard errors are not computed for regularised or "
                                      "constrained robust fits")
        (stats,) = design.weighted([kept.astype(np.float64)], n_used=n_kept)
        cov_unscaled = solve_normal_equations(stats, warn=False).cov_unscaled
        scale2 = noise ** 2
    else:
        noise = _robust_sigma(r)
        if not problem.plain:
            return noise, None, nan, ("standard errors are not computed for regularised or "
                                      "constrained robust fits")
        n = design.n
        if loss == "huber":
            psi = np.clip(r, -f_scale, f_scale)
            inside = float(np.mean(np.abs(r) <= f_scale))
            scale2 = (psi @ psi / (n - p)) / inside**2 if n > p and inside > 0 else np.nan
        else:
            density = _density_at_zero(r)
            scale2 = 1.0 / (2.0 * density) ** 2 if density > 0 else np.nan
            outcome.info["density_at_zero"] = density
    if cov_unscaled is None or not np.isfinite(scale2):
        return noise, None, nan, ("the data do not determine every coefficient or the "
                                  "residuals are degenerate: no standard errors")
    cov = scale2 * cov_unscaled
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    return noise, cov, stderr, ""
