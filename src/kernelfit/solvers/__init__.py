"""Layer 3, ``solvers``: solutions of the kernel's equations.

Direct (:mod:`~kernelfit.solvers.direct`: Cholesky or eigen-decomposition of the normal
equations), constrained (:mod:`~kernelfit.solvers.constrained`: active set for ``nonneg`` and
``normalize``), matrix-free (:mod:`~kernelfit.solvers.iterative`: CG and FISTA on the FFT
operator; :mod:`~kernelfit.solvers.weighted`: weighted CG), and the regularisers
(:mod:`~kernelfit.solvers.regularisers`).

Rule: a solver takes statistics or an operator and returns a solution object (``kernel``,
``converged``, ``message``, ...), never a :class:`~kernelfit.KernelFit`; imports ``stats`` and
``core`` only.
"""

from .direct import DirectSolution, solve_normal_equations

__all__ = ["DirectSolution", "solve_normal_equations"]
