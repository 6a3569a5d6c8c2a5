"""Layer 2, ``stats``: sufficient statistics of the least-squares problem.

``G = XᵀWX``, ``c = XᵀWb``, ``bᵀWb`` and the pixel count, computed exactly and fast: by FFT
(:mod:`~kernelfit.stats.gram`, dispatched by :mod:`~kernelfit.stats.compute`), with weights
and masks (:mod:`~kernelfit.stats.weighted`), with a polynomial background profiled out
(:mod:`~kernelfit.stats.background`), for spatially varying kernels
(:mod:`~kernelfit.stats.varying`) and summed over tiles of images on disk
(:mod:`~kernelfit.stats.tiles`); robust scale estimates of residuals
(:mod:`~kernelfit.stats.scale`).

Rule: builds statistics, never solves; imports ``core`` only.
"""

from .compute import statistics
from .gram import SufficientStatistics

__all__ = ["SufficientStatistics", "statistics"]
