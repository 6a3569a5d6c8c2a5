"""Choosing ``lam`` on the matrix-free path, where no Gram matrix is available.

The criteria are those of :mod:`kernelfit.select` -- generalised cross-validation by default,
the discrepancy principle ``RSS(lam) = n·σ²`` when the noise level ``σ`` is known -- evaluated
differently:

* **Quadratic regularisers** (``'ridge'``, ``'gradient'``, ``'laplacian'``): one multi-shift
  conjugate-gradient run gives the kernel, ``RSS`` and a Hutchinson estimate of the effective
  number of parameters ``tr H`` at every ``lam`` of the grid at once
  (:func:`kernelfit.select.gcv_iterative.gcv_curve_iterative`).
* **Non-smooth regularisers** (``'tv'``, ``'l1'``): the discrepancy principle along a path
  of warm-started proximal solves, with the noise level given or estimated by a GCV-chosen
  ``'gradient'`` fit.  (GCV itself needs the effective number of parameters, which has a
  closed form for exact solutions -- the number of non-zero coefficients for ``'l1'``, of
  groups of equal coefficients for ``'tv'`` -- but counting them on iterative solutions
  proved unreliable: on seed 000 the count moved by a factor 10 with the tie tolerance.)

The default grid is scaled to the problem: ``lam`` is compared with the typical curvature of
the data term, ``mean(diag(XᵀWX))/n``, divided by the mean eigenvalue of the regulariser's
``LᵀL``, and spans eight decades around that (two points per decade; their number does not
change the cost of the multi-shift run).  For ``'l1'``/``'tv'`` it spans four decades below
``lam_max = max|2c|``, the smallest ``lam`` at which the ``'l1'`` solution is zero (for
``'tv'``, an estimate of the smallest ``lam`` giving a constant kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from .direct import LambdaChoice
from ..solvers.iterative import solve_iterative
from ..solvers.operator import FFTKernelOperator
from ..solvers.standard_form import penalty_eigenvalues
from .gcv_iterative import gcv_curve_iterative

# Relative tolerance of each proximal solve along a non-smooth path (the chosen lam is then
# solved again at the caller's tolerance, warm-started).
_PATH_TOL = 1e-4


def choose_lambda_iterative(op: FFTKernelOperator, reg, *, noise_std=None, nonneg=False,
                            total=None, lams=None, probes=1):
    """Choose ``lam`` for ``reg`` on the matrix-free path.

    Parameters
    ----------
    op : FFTKernelOperator
    reg : {'ridge', 'gradient', 'laplacian', 'tv', 'l1'}
    noise_std : float, optional
        Known noise level: the discrepancy principle; otherwise GCV.
    nonneg, total : optional
        Constraints of the final fit.  For quadratic regularisers ``lam`` is chosen on the
        unconstrained problem (its influence matrix is linear); the non-smooth path honours
        them.
    lams : array_like, optional
        The grid (positive values); default: see the module docstring.
    probes : int, default 1
        Hutchinson probes of the GCV trace (quadratic regularisers).  Each costs as much as
        the data's own solve; one resolves GCV's minimum unless two grid points score
        within about a percent of each other, which the choice's message then says.

    Returns
    -------
    IterativeChoice
    """
    grid = np.sort(np.asarray(lams, dtype=np.float64)) if lams is not None \
        else default_grid(op, reg)
    if reg in ("ridge", "gradient", "laplacian"):
        choice, kernel = _quadratic(op, reg, grid, noise_std, probes)
        noise = noise_std if noise_std is not None else \
            float(np.sqrt(choice.rss / max(op.n_used - choice.edf, 1.0)))
        return IterativeChoice(choice, kernel, noise)
    return _nonsmooth(op, reg, grid, noise_std, nonneg, total)


@dataclass
class IterativeChoice:
    """What :func:`choose_lambda_iterative` found.

    Attributes
    ----------
    choice : LambdaChoice
        ``lam``, the values tried and their scores (as on the direct path).
    kernel : ndarray
        The (approximate) solution at ``lam``: a warm start for the final solve.
    noise_std : float
        The noise level used (discrepancy) or implied (GCV: ``RSS/(n − tr H)``).
    """

    choice: LambdaChoice
    kernel: np.ndarray
    noise_std: float


def default_grid(op: FFTKernelOperator, reg) -> np.ndarray:
    """Log-spaced candidate ``lam`` scaled to the problem (see the module docstring)."""
    n = op.n_used
    if reg == "l1":
        return _positive(np.abs(2.0 * op.rhs / n).max()) * np.logspace(-4, 0, 9)
    if reg == "tv":
        return _tv_lam_max(op) * np.logspace(-4, 0, 9)
    curvature = float(op.diagonal().mean()) / n
    q = penalty_eigenvalues(reg, op.shape)
    scale = max(curvature / float(q[q > 0].mean()), 1e-300)
    return scale * np.logspace(-4, 4, 17)


def _positive(value):
    return max(float(value), 1e-300)


def _tv_lam_max(op):
    """About the smallest ``lam`` at which the ``'tv'`` solution is a constant kernel.

    At the best constant kernel ``α·1`` the data term's gradient ``g`` (minus its mean: the
    constant is not penalised) must be a divergence ``Dᵀp`` with every pixel's ``|p| ≤ lam``.
    The least-squares ``p = D (DᵀD)⁺ g`` is found with the DCT that diagonalises ``DᵀD``; its
    largest pixel norm bounds the smallest such ``lam`` from above.
    """
    n = op.n_used
    ones = np.ones(op.shape)
    alpha = float(np.vdot(ones, op.rhs)) / _positive(np.vdot(ones, op.normal(ones)))
    g = 2.0 * (alpha * op.normal(ones) - op.rhs) / n
    g -= g.mean()
    mu = penalty_eigenvalues("gradient", op.shape)
    coefficients = scipy.fft.dctn(g, norm="ortho")
    coefficients[mu > 0] /= mu[mu > 0]
    coefficients[mu == 0] = 0.0
    u = scipy.fft.idctn(coefficients, norm="ortho")             # (DᵀD)⁺ g
    gy = np.zeros_like(u)
    gx = np.zeros_like(u)
    gy[:-1] = np.diff(u, axis=0)
    gx[:, :-1] = np.diff(u, axis=1)
    return _positive(np.sqrt(gy * gy + gx * gx).max())


def _quadratic(op, reg, grid, noise_std, probes=1):
    curve = gcv_curve_iterative(op, op.shape, reg, lams=grid, probes=probes)
    n = op.n_used
    if noise_std is None:
        best = int(np.argmin(curve.scores))
        scores, criterion = curve.scores, "gcv"
        lam = float(grid[best])
    else:
        scores, criterion = curve.rss / n - noise_std ** 2, "discrepancy"
        lam, best = _discrepancy_root(grid, scores)
    message = _edge_message(best, grid.size) if criterion == "gcv" else ""
    # The curve's own account (iterations, effective parameters and their error, how well
    # the probes resolve the minimum) goes with the choice.
    message = "; ".join(filter(None, [message, curve.message]))
    choice = LambdaChoice(lam, grid, scores, criterion, float(curve.trace[best]),
                          float(curve.rss[best]), message)
    return choice, curve.kernels[best]


def _discrepancy_root(grid, excess):
    """``lam`` where ``RSS/n − σ²`` (increasing in ``lam``) crosses 0, interpolated in
    ``log lam``; the grid end nearest to it when it does not cross."""
    above = np.flatnonzero(excess >= 0)
    if above.size == 0:
        return float(grid[-1]), grid.size - 1
    i = int(above[0])
    if i == 0:
        return float(grid[0]), 0
    t = excess[i - 1] / (excess[i - 1] - excess[i])
    lam = float(np.exp(np.log(grid[i - 1]) + t * (np.log(grid[i]) - np.log(grid[i - 1]))))
    return lam, i if t >= 0.5 else i - 1


def _nonsmooth(op, reg, grid, noise_std, nonneg, total):
    """Discrepancy principle along warm-started proximal solves, ascending in ``lam``.

    Without ``noise_std`` the noise level is that of a GCV-chosen ``'gradient'`` fit,
    ``RSS/(n − tr H)``.  ``lam`` doubles from ``grid[0]`` until ``RSS/n`` reaches ``σ²``,
    then three bisections in ``log lam`` refine the crossing.  Ascending, because each
    solve then starts from a less regularised, nearby kernel, and the proximal steps are
    cheapest at small ``lam`` (the TV proximal map's dual problem is hardest when the
    kernel is nearly constant).
    """
    n = op.n_used
    message = ""
    if noise_std is None:
        reference, _ = _quadratic(op, "gradient", default_grid(op, "gradient"), None)
        noise_std = float(np.sqrt(reference.rss / max(n - reference.edf, 1.0)))
        message = (f"noise_std estimated as {noise_std:.4g} by a GCV-chosen 'gradient' fit "
                   f"(lam={reference.lam:.3g})")
    target = noise_std ** 2
    tried = {}

    def solve(lam, start):
        sol = solve_iterative(op, op.shape, reg=reg, lam=lam, nonneg=nonneg, total=total,
                              x0=start, tol=_PATH_TOL)
        tried[lam] = (op.residual_sum_of_squares(sol.kernel) / n - target, sol.kernel)
        return sol.kernel

    lo, hi = float(grid[0]), None
    kernel = solve(lo, None)
    while hi is None and lo < grid[-1]:
        lam = 2.0 * lo
        candidate = solve(lam, kernel)
        if tried[lam][0] >= 0:
            hi = lam
        else:
            lo, kernel = lam, candidate
    if tried[lo][0] >= 0:
        message = "; ".join(filter(None, [message, "even the smallest lam searched leaves "
                                          "RSS/n above the noise variance"]))
    elif hi is None:
        message = "; ".join(filter(None, [message, "the largest lam searched still fits "
                                          "below the noise level"]))
    else:
        for _ in range(3):
            mid = float(np.sqrt(lo * hi))
            candidate = solve(mid, kernel)
            if tried[mid][0] >= 0:
                hi = mid
            else:
                lo, kernel = mid, candidate
    lam = lo
    lams = np.array(sorted(tried))
    scores = np.array([tried[value][0] for value in lams])
    rss = (scores[lams == lam][0] + target) * n
    choice = LambdaChoice(lam, lams, scores, "discrepancy", float("nan"), float(rss), message)
    return IterativeChoice(choice, tried[lam][1], noise_std)


def _edge_message(best, size):
    if best in (0, size - 1):
        return ("the GCV minimum is at the end of the lam range searched; pass lam= "
                "explicitly or widen the range")
    return ""
