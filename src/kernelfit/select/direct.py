"""Automatic choice of the regularisation weight ``lam`` for quadratic regularisers.

The objective is ``‖Xk − b‖²/n + lam·‖Lk‖²`` (see :mod:`kernelfit.regularisers`), whose
minimiser solves ``(G + n·lam·P) k = c`` with ``P = LᵀL``.  Two criteria are offered:

* **Generalised cross-validation** (default):
  ``GCV(lam) = n·RSS(lam) / (n − tr H(lam))²``, with ``RSS = ‖Xk − b‖²`` and the hat matrix
  ``H = X (G + n·lam·P)⁻¹ Xᵀ``, so ``tr H = tr((G + n·lam·P)⁻¹ G)`` (the effective number of
  parameters).  GCV approximates leave-one-out prediction error without refitting.
* **Discrepancy principle** (when the noise standard deviation ``σ`` is known): the ``lam`` at
  which the mean squared residual equals the noise variance, ``RSS(lam) = n·σ²`` (Morozov's
  rule with safety factor 1).  ``RSS`` grows with ``lam``, so this is the largest ``lam``
  whose fit is still consistent with the noise.  The variant ``RSS = (n − tr H)·σ²`` is *not*
  used: the unregularised fit satisfies it on average (``E RSS(0) = (n − p)·σ²``), so it does
  not pin ``lam`` down.

Both need ``k``, ``RSS`` and ``tr H`` at many ``lam``.  One generalised eigendecomposition
(:class:`RegularisationPath`) makes each evaluation ``O(p)`` (``O(p²)`` for the kernel).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize

from ..solvers.constrained import dense_penalty, solve_quadratic, system_matrix
from ..stats.gram import SufficientStatistics

_EPS = np.finfo(float).eps
# Default search grid: this many log-spaced values (then refined, see choose_lambda).
_GRID_POINTS = 60


@dataclass
class LambdaChoice:
    """The chosen ``lam`` and the evidence for it.

    Attributes
    ----------
    lam : float
        The chosen weight, per pixel (same units as ``estimate(..., lam=...)``).
    lams : ndarray
        The grid searched (ascending).
    scores : ndarray
        At each ``lams``: the GCV value (``criterion='gcv'``), or the discrepancy
        ``RSS/n − σ²`` whose root was sought (``criterion='discrepancy'``).
    criterion : {'gcv', 'discrepancy'}
    edf : float
        Effective degrees of freedom ``tr H`` at ``lam``.
    rss : float
        ``‖Xk − b‖²`` at ``lam``.
    message : str
        Empty, or why the choice sits at an end of the range searched.
    """

    lam: float
    lams: np.ndarray
    scores: np.ndarray
    criterion: str
    edf: float
    rss: float = float("nan")
    message: str = field(default="")


class RegularisationPath:
    """``k(lam)``, ``RSS(lam)`` and ``tr H(lam)`` for every ``lam`` from one decomposition.

    We solve the generalised symmetric eigenproblem ``G v = θ B v`` with
    ``B = G + τ·n·P``, ``τ = tr G / (n·tr P)``, normalised so ``VᵀBV = I``.  Then
    ``VᵀGV = diag θ`` and ``Vᵀ(nP)V = diag((1 − θ)/τ)`` with ``0 ≤ θ ≤ 1``, hence

        G + n·lam·P = V⁻ᵀ diag(δ) V⁻¹,   δ_i = θ_i + lam·(1 − θ_i)/τ.

    Why this pencil: ``P`` is singular for 'gradient' and 'laplacian' (constants are free)
    and ``G`` is singular when the image does not determine the kernel; ``eigh(P, G)`` or
    ``eigh(G, P)`` would need one of them definite.  ``B`` is positive definite whenever
    ``G + n·lam·P`` is for some ``lam > 0`` (no direction free in both), and the weight ``τ``
    makes the two terms equally large, which keeps ``B`` well conditioned.  Null directions of
    ``P`` get ``θ = 1`` (never penalised), null directions of ``G`` get ``θ = 0``.  Each
    direction is damped once ``lam`` passes ``lam_i = τ·θ_i/(1 − θ_i)`` (``g_i/n`` for
    the generalised eigenvalues ``g_i`` of ``(G, P)``, so ``tr H = Σ g_i/(g_i + n·lam)``);
    these values set the default search range.

    Parameters
    ----------
    stats : SufficientStatistics
    penalty : (p, p) array or sparse matrix
        ``LᵀL`` (:func:`kernelfit.regularisers.penalty_matrix`).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import statistics
    >>> from kernelfit.solvers.regularisers import penalty_matrix
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.random((30, 30)), rng.random((28, 28))
    >>> path = RegularisationPath(statistics(a, b, (3, 3)), penalty_matrix("ridge", (3, 3)))
    >>> edf = path.edf(np.array([0.0, 1e-3, 1e6]))
    >>> np.round(edf, 1).tolist()   # 9 parameters, shrinking towards 0 as lam grows
    [9.0, 8.9, 0.0]
    """

    def __init__(self, stats: SufficientStatistics, penalty):
        if penalty is None:
            raise ValueError("penalty must be given (LᵀL of a quadratic regulariser)")
        G, c = system_matrix(stats, None, 0.0)
        p, n = len(c), stats.n_used
        nP = n * dense_penalty(penalty, p)
        trace_p = np.trace(nP)
        if not trace_p > 0:
            raise ValueError("penalty has no positive diagonal: it penalises nothing")
        if not np.trace(G) > 0:
            raise ValueError("stats: the Gram matrix is zero (an all-zero image?)")
        tau = np.trace(G) / trace_p
        B = G + tau * nP
        try:
            R = scipy.linalg.cholesky(B, lower=False, check_finite=False)
            ratio = np.min(np.diag(R) ** 2 / np.diag(B))
        except np.linalg.LinAlgError:
            ratio = 0.0
        # A pivot this small relative to its diagonal means some direction is free (up to
        # rounding) in both G and P: no lam makes the kernel determined.
        if not ratio > 100 * p * _EPS:
            raise ValueError(
                "stats and penalty leave a kernel direction free in both (the image cannot "
                "see it and the penalty does not penalise it): no lam determines the kernel")
        # LAPACK's generalised driver (Cholesky of B, reduction, divide and conquer) is the
        # fastest route measured: ~1 s for p = 1681 on one core.
        theta, V = scipy.linalg.eigh(G, B, driver="gvd", check_finite=False)
        self.theta = np.clip(theta, 0.0, 1.0)
        # diag of Vᵀ(nP)V.  θ carries rounding of a few p·eps, so 1 − θ below 10·p·eps is a
        # direction the penalty does not touch (the constants of 'gradient'/'laplacian').
        self.eta = np.where(1.0 - self.theta > 10 * p * _EPS, (1.0 - self.theta) / tau, 0.0)
        self.V = V
        self.d = V.T @ c
        self.n, self.p, self.shape, self.btb = n, p, stats.shape, float(stats.btb)
        self.tau = tau
        # Directions the data determine (θ above rounding) carry the least-squares fit; the
        # rest have d ≈ 0 and only matter through the damping.
        self._data = self.theta > 10 * p * _EPS
        d2 = self.d ** 2
        # RSS of the unregularised fit over the determined directions.  Computed once, as
        # btb − Σ d²/θ; RSS(lam) then adds only non-negative terms, so it is smooth and
        # monotone in lam to the last digit (the root finder and the GCV minimiser need it).
        self.rss_floor = max(self.btb - float(np.sum(d2[self._data] / self.theta[self._data])),
                             0.0)

    def transitions(self) -> np.ndarray:
        """``lam_i = τ·θ_i/(1 − θ_i)``, ascending: where direction ``i`` starts being damped
        (``inf`` for directions the penalty does not touch)."""
        penalised = self.eta > 0
        out = np.full(self.theta.shape, np.inf)
        out[penalised] = self.theta[penalised] / self.eta[penalised]
        return np.sort(out)

    def _delta(self, lam):
        lam = np.asarray(lam, dtype=np.float64)
        return self.theta + lam[..., None] * self.eta

    def edf(self, lam):
        """``tr H(lam) = Σ θ_i/δ_i``: effective number of parameters (array in, array out)."""
        delta = self._delta(lam)
        return np.sum(np.divide(self.theta, delta, out=np.zeros_like(delta),
                                where=delta > 0), axis=-1)

    def rss(self, lam):
        """``RSS(lam) = ‖X k(lam) − b‖²`` (array in, array out)."""
        lam = np.asarray(lam, dtype=np.float64)
        delta = self._delta(lam)
        theta, d2 = self.theta, self.d ** 2
        safe = np.where(delta > 0, delta, 1.0)
        # Determined directions: RSS − RSS_floor = Σ d²·(δ − θ)²/(θ·δ²), all terms ≥ 0.
        extra = np.where(self._data, d2 * (delta - theta) ** 2
                         / (np.where(self._data, theta, 1.0) * safe ** 2), 0.0)
        # Undetermined ones: the plain expansion −2d²/δ + θd²/δ² (d ≈ 0 there).
        rest = np.where(self._data | (delta <= 0), 0.0, d2 * (theta / safe - 2.0) / safe)
        return self.rss_floor + np.sum(extra + rest, axis=-1)

    def gcv(self, lam):
        """``n·RSS/(n − tr H)²``; ``inf`` where ``tr H ≥ n`` (array in, array out)."""
        dof_left = self.n - self.edf(lam)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dof_left > 0, self.n * self.rss(lam) / dof_left ** 2, np.inf)

    def kernel(self, lam: float) -> np.ndarray:
        """The kernel ``k(lam) = V diag(1/δ) Vᵀc``, kernel-shaped."""
        delta = self._delta(float(lam))
        coef = np.divide(self.d, delta, out=np.zeros_like(delta), where=delta > 0)
        return (self.V @ coef).reshape(self.shape)

    def default_grid(self) -> np.ndarray:
        """``_GRID_POINTS`` log-spaced values from 1e-3 × the smallest to 1e3 × the largest
        transition point ``lam_i``.

        Direction ``i`` is damped by the factor ``1/(1 + lam/lam_i)``, so GCV and RSS change
        only while ``lam`` is within a few decades of some ``lam_i``: at a thousandth of the
        smallest every coefficient is within 0.1 % of plain least squares, at a thousand
        times the largest everything penalised is within 0.1 % of gone.  A nearly singular
        ``G`` can spread the ``lam_i`` over many more decades than carry information; the
        ends are then clipped at 1e-12 and 1e6 times the median ``lam_i`` (the smallest
        ``lam_i`` belong to directions the data barely see, the largest to directions the
        penalty barely sees).  Sixty points give at least 2.5 per decade; the refinement in
        :func:`choose_lambda` does the fine work.
        """
        t = self.transitions()
        t = t[np.isfinite(t) & (t > 0)]
        if t.size == 0:
            # Everything penalised is also undetermined (or nothing is penalised).
            t = np.array([self.tau])
        median = float(np.median(t))
        lo = max(t[0], 1e-12 * median) * 1e-3
        hi = min(t[-1], 1e6 * median) * 1e3
        return np.geomspace(lo, hi, _GRID_POINTS)


def choose_lambda(stats: SufficientStatistics, penalty, *, noise_std=None,
                  lams=None) -> LambdaChoice:
    """Choose ``lam`` for ``‖Xk − b‖²/n + lam·‖Lk‖²`` by GCV or the discrepancy principle.

    Parameters
    ----------
    stats : SufficientStatistics
    penalty : (p, p) array or sparse matrix
        ``LᵀL`` (:func:`kernelfit.regularisers.penalty_matrix`).
    noise_std : float, optional
        Standard deviation of the noise in ``b`` (in ``b``'s units).  Given: the
        discrepancy principle ``RSS(lam) = n·noise_std²``.  Omitted: GCV.
    lams : array_like, optional
        Values to search (positive).  Default: 60 log-spaced values spanning the pencil's
        spectrum (see :meth:`RegularisationPath.default_grid`), after which the GCV minimum is
        refined by a bounded scalar minimisation in ``log lam`` between its grid neighbours.
        With explicit ``lams`` GCV picks the best of them, and the discrepancy root is sought
        between the two that bracket it.

    Returns
    -------
    LambdaChoice

    Raises
    ------
    ValueError
        For a malformed parameter, named in the message.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.forward import convolve
    >>> from kernelfit.stats import statistics
    >>> from kernelfit.solvers.regularisers import penalty_matrix
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((60, 60))
    >>> y, x = np.mgrid[-3:4, -3:4]
    >>> k = np.exp(-(x**2 + y**2) / 4.0); k /= k.sum()
    >>> b = convolve(a, k, boundary="valid") + 0.1 * rng.normal(size=(54, 54))
    >>> s = statistics(a, b, (7, 7))
    >>> choice = choose_lambda(s, penalty_matrix("laplacian", (7, 7)))
    >>> choice.criterion, bool(choice.lam > 0), bool(choice.edf < 49)
    ('gcv', True, True)
    >>> d = choose_lambda(s, penalty_matrix("laplacian", (7, 7)), noise_std=0.1)
    >>> bool(np.isclose(d.rss, s.n_used * 0.1**2, rtol=1e-9))
    True
    """
    path = RegularisationPath(stats, penalty)
    grid = path.default_grid() if lams is None else _check_lams(lams)
    if noise_std is None:
        return _by_gcv(path, grid, refine=lams is None)
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) \
            or not (noise_std > 0 and np.isfinite(noise_std)):
        raise ValueError(f"noise_std={noise_std!r} must be a finite number > 0 or None")
    return _by_discrepancy(path, grid, float(noise_std), extend=lams is None)


def solve_at(stats: SufficientStatistics, penalty, lam: float) -> np.ndarray:
    """The kernel minimising ``‖Xk − b‖²/n + lam·‖Lk‖²``, by one Cholesky solve.

    Independent of :class:`RegularisationPath` (which it cross-checks).

    Parameters
    ----------
    stats : SufficientStatistics
    penalty : (p, p) array or sparse matrix
    lam : float
        ``>= 0``, per pixel.

    Returns
    -------
    ndarray
        Kernel-shaped.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.stats import SufficientStatistics
    >>> s = SufficientStatistics(np.eye(4), np.ones(4), 4.0, 10, (2, 2))
    >>> solve_at(s, np.eye(4), 0.1)     # (1 + 10·0.1)·k = 1
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    if penalty is None:
        raise ValueError("penalty must be given (LᵀL of a quadratic regulariser)")
    return solve_quadratic(stats, penalty=penalty, lam=lam).kernel


def _check_lams(lams) -> np.ndarray:
    try:
        grid = np.asarray(lams, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"lams={lams!r} must be an array of positive numbers") from None
    if grid.size == 0 or not np.all(np.isfinite(grid)) or not np.all(grid > 0):
        raise ValueError(f"lams={lams!r} must be a non-empty array of finite numbers > 0")
    return np.unique(grid)


def _by_gcv(path: RegularisationPath, grid, *, refine: bool) -> LambdaChoice:
    scores = path.gcv(grid)
    if not np.any(np.isfinite(scores)):
        raise ValueError("stats: every lam searched leaves no degrees of freedom for the noise "
                         f"(tr H >= n = {path.n}); GCV needs more pixels than effective "
                         "parameters")
    i = int(np.argmin(scores))
    lam, message = float(grid[i]), ""
    if refine and 0 < i < len(grid) - 1:
        res = scipy.optimize.minimize_scalar(
            lambda t: float(path.gcv(np.exp(t))), method="bounded",
            bounds=(np.log(grid[i - 1]), np.log(grid[i + 1])),
            # 1e-6 in log lam is a relative step of 1e-6 in lam: far finer than GCV can tell.
            options={"xatol": 1e-6})
        if res.fun <= scores[i]:
            lam = float(np.exp(res.x))
    elif len(grid) > 1 and i == 0:
        message = (f"GCV decreases down to the smallest lam searched ({lam:.3g}): the data "
                   "ask for (almost) no regularisation")
    elif len(grid) > 1:
        message = (f"GCV decreases up to the largest lam searched ({lam:.3g}): the data ask "
                   "for the penalty's null space only (e.g. a constant kernel)")
    return LambdaChoice(lam, grid, scores, "gcv", float(path.edf(lam)), float(path.rss(lam)),
                        message)


def _by_discrepancy(path: RegularisationPath, grid, sigma, *, extend: bool) -> LambdaChoice:

    def excess(t):   # RSS/n − σ² at lam = exp(t); increasing in t
        return float(path.rss(np.exp(t))) / path.n - sigma ** 2

    scores = path.rss(grid) / path.n - sigma ** 2
    lo, hi = float(grid[0]), float(grid[-1])
    if extend:
        # The default grid covers every transition; still widen it (tenfold steps) when
        # the root lies beyond, which happens only when it is barely determined.
        for _ in range(6):
            if excess(np.log(lo)) <= 0:
                break
            lo /= 10
        for _ in range(6):
            if excess(np.log(hi)) >= 0:
                break
            hi *= 10
    message = ""
    if excess(np.log(lo)) > 0:
        lam = lo
        message = (f"noise_std={sigma:.4g} is below the residual noise of the least-squares "
                   f"fit (RSS/n = {float(path.rss(lo)) / path.n:.4g} at lam={lo:.3g}); "
                   "no lam meets the discrepancy principle: the smallest lam is returned")
    elif excess(np.log(hi)) < 0:
        lam = hi
        message = (f"noise_std={sigma:.4g} exceeds what even the most regularised fit leaves "
                   f"(RSS/n = {float(path.rss(hi)) / path.n:.4g} at lam={hi:.3g}); the largest "
                   "lam is returned")
    else:
        # Bracket between neighbouring grid points, then solve in log lam.
        below = grid[(grid >= lo) & (scores <= 0)]
        above = grid[(grid <= hi) & (scores >= 0)]
        a = float(below.max()) if below.size else lo
        b = float(above[above >= a].min()) if np.any(above >= a) else hi
        if a == b:
            lam = a
        else:
            # xtol/rtol: 1e-13 relative in log lam resolves RSS to ~1e-12 of the target,
            # well inside the 1e-6 the tests and users need.
            lam = float(np.exp(scipy.optimize.brentq(excess, np.log(a), np.log(b),
                                                     xtol=1e-14, rtol=1e-13)))
    return LambdaChoice(lam, grid, scores, "discrepancy", float(path.edf(lam)),
                        float(path.rss(lam)), message)
