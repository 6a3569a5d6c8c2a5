"""Structured kernel models fitted on prepared image pairs (radial, power law, low rank)."""

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
