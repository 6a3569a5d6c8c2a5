"""Layer 5, ``fit``: results, and the fits that build them.

The result types (:mod:`~kernelfit.fit.result`: :class:`~kernelfit.KernelFit`;
:mod:`~kernelfit.fit.channels`, :mod:`~kernelfit.fit.varying`), the fits of the free kernel
(:mod:`~kernelfit.fit.free`, :mod:`~kernelfit.fit.robust`, :mod:`~kernelfit.fit.classic`), of
the structured and parametric models (:mod:`~kernelfit.fit.models`), from summed statistics
(:mod:`~kernelfit.fit.statistics`), and what every fit records about its pairs
(:mod:`~kernelfit.fit.annotate`).

Rule: the only layer that builds a :class:`~kernelfit.KernelFit`; imports the layers below
(and ``io``/``report`` to save and draw a fit), never the front door.
"""
