"""Layer 4, ``models``: kernel models with few parameters.

Structured models fitted on prepared image pairs or their statistics (radial, power law,
separable, low rank) and the parametric families (:mod:`~kernelfit.models.parametric`:
Gaussian, Moffat, disk, motion, box; built from ``kernel_model``, ``families``, ``coverage``
and ``moments``) with their nonlinear fitter (:mod:`~kernelfit.models.fit_parametric`, with
``parametric_data``, ``parametric_l2`` and ``parametric_robust``; the L1 window search of
one-parameter families in ``parametric_l1``, with ``l1_window``, ``pixel_sample`` and
``rank_one``).

Rule: returns parameters and kernels, never a :class:`~kernelfit.KernelFit`; imports
``solvers``, ``stats`` and ``core`` only (not ``select``, its sibling).
"""

from ._common import MAX_STATISTICS_UNKNOWNS, StructuredFit
from .factored import fit_lowrank, fit_separable
from .powerlaw import fit_powerlaw, powerlaw_kernel
from .radial import fit_radial, radial_basis, radial_kernel, radial_knots

__all__ = [
    "MAX_STATISTICS_UNKNOWNS",
    "StructuredFit",
    "fit_lowrank",
    "fit_powerlaw",
    "fit_radial",
    "fit_separable",
    "powerlaw_kernel",
    "radial_basis",
    "radial_kernel",
    "radial_knots",
]
