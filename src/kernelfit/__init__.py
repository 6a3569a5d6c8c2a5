"""kernelfit: find the convolution kernel that maps one image to another.

>>> import numpy as np, kernelfit as kf
>>> rng = np.random.default_rng(1)
>>> a = rng.random((50, 50))
>>> b = kf.convolve(a, np.full((3, 3), 1 / 9), boundary="nearest")
>>> fit = kf.estimate(a, b, 3, boundary="nearest")
>>> np.round(fit.kernel, 6).tolist() == np.round(np.full((3, 3), 1 / 9), 6).tolist()
True
"""

from .core.conventions import BOUNDARIES
from .core.diagnostics import IdentifiabilityWarning, RankDeficientWarning
from .core.forward import KernelOperator, convolve
from .core.threads import thread_count, threads
from .core.varying import VaryingKernel
from .fit.channels import ChannelFits
from .fit.result import KernelFit
from .fit.varying import VaryingKernelFit
from .front.estimate import estimate
from .stats.compute import statistics
from .stats.gram import SufficientStatistics

__version__ = "0.1.0"

__all__ = [
    "BOUNDARIES",
    "ChannelFits",
    "IdentifiabilityWarning",
    "KernelFit",
    "KernelOperator",
    "RankDeficientWarning",
    "SufficientStatistics",
    "VaryingKernel",
    "VaryingKernelFit",
    "convolve",
    "estimate",
    "statistics",
    "thread_count",
    "threads",
]
