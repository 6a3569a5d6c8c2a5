"""Layer 1, ``core``: what every other layer stands on.

Conventions (:mod:`~kernelfit.core.conventions`: boundary rules, centres, output sizes),
input checks (:mod:`~kernelfit.core.inputs`), image defects (:mod:`~kernelfit.core.defects`:
saturation, quantisation), the forward model (:mod:`~kernelfit.core.forward`, with the
spectrum of the extended image and the kernel operator, and :mod:`~kernelfit.core.varying`
for spatially varying kernels), the pixel design of one image pair
(:mod:`~kernelfit.core.design`), the tiling rule (:mod:`~kernelfit.core.tiling`) and the
diagnostics and warnings (:mod:`~kernelfit.core.diagnostics`).

Rule: imports numpy and scipy only, never another kernelfit layer (checked by the import
contracts in ``pyproject.toml``).
"""
