"""What a matrix-free solve returns, its objective, and the stopping rules CG and FISTA share.

Besides their own tests (a relative residual for CG, the proximal-gradient step for FISTA)
the solvers stop on the objective ``F`` itself: once the last quarter of the iterations (at
least 10) lowered it by at most a set amount (:func:`objective_settled`,
:func:`settled_at_noise`).  For CG that decrease is the Hestenes–Stiefel estimate of the
energy-norm error with a delay that grows with the run.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .regularisers import penalty_value

__all__ = ["IterativeSolution", "NOISE_FRACTION", "check_limits", "objective", "objective_settled",
           "settled_at_noise", "window"]


@dataclass
class IterativeSolution:
    """What :func:`solve_iterative` found.

    Attributes
    ----------
    kernel : ndarray
        The kernel, convolution orientation.
    converged : bool
        Whether the stopping test was met (see ``message``).
    iterations : int
    history : list of float
        Per iteration: the relative residual (CG methods) or the objective ``F(k)``
        (proximal methods).
    message : str
        What was done and, when not converged, which knob to turn.
    method : str
        ``'cg-standard-form'``, ``'cg-jacobi'`` or ``'fista'``.
    objective : float
        ``F(kernel)``, see :func:`objective`.
    """

    kernel: np.ndarray
    converged: bool
    iterations: int
    history: list
    message: str
    method: str = ""
    objective: float = float("nan")


def objective(op, reg, lam, kernel):
    """``F(kernel) = ‖W(Xk − b)‖²/n + lam·R(k)`` on ``op``."""
    value = op.residual_sum_of_squares(kernel) / op.n_used
    if reg is not None and lam > 0:
        value += lam * penalty_value(reg, kernel)
    return float(value)


# The noise-level stop of FISTA: the objective F (a mean over n pixels) counts as settled
# when the last quarter of the iterations (at least 10) lowered n·F -- the residual sum of
# squares plus n·lam·R -- by at most this fraction of one pixel's noise variance.  The noise
# alone moves the residual sum of squares by about σ²·√(2n) from one draw to the next, so
# the change left is far below what the data resolve.  On seed 000 (gradient + nonneg) it
# stops after about 150 iterations with the kernel error 0.2 % from that of a run 10× longer.
NOISE_FRACTION = 0.1


def window(its):
    return max(10, its // 4)


def settled_at_noise(history, n, noise_std) -> bool:
    its = len(history) - 1
    back = window(its)
    if its < 2 * back:
        return False
    return n * (history[-1 - back] - history[-1]) <= NOISE_FRACTION * noise_std ** 2


def objective_settled(values, *, offset, tol, n, noise_std=None) -> bool:
    """Whether the last quarter of the iterations (at least 10) lowered the objective
    ``F = offset + values[-1]`` by at most ``tol·F`` (or, with a noise level, by at most
    ``0.1·noise_std²/n`` when that is larger; see ``NOISE_FRACTION``).  For CG this decrease
    is the Hestenes–Stiefel estimate of the energy-norm error ``F(x_{k−w}) − F(x*)`` with the
    delay ``w``: a lower bound, which a window growing with the iteration count keeps close
    on the long plateaus of the standard form."""
    its = len(values) - 1
    back = window(its)
    if its < back:
        return False
    allowed = tol * abs(offset + values[-1])
    if noise_std is not None:
        allowed = max(allowed, NOISE_FRACTION * noise_std ** 2 / n)
    return values[-1 - back] - values[-1] <= allowed


def check_limits(tol, maxiter):
    """``ValueError`` unless ``0 < tol < 1`` and ``maxiter`` is ``None`` or a positive integer."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol={tol!r} must be a number in (0, 1)")
    if maxiter is not None and (isinstance(maxiter, bool)
                                or not isinstance(maxiter, numbers.Integral) or maxiter < 1):
        raise ValueError(f"maxiter={maxiter!r} must be a positive integer")
