"""Layer 6, the front door: validation of the options and dispatch.

:func:`~kernelfit.front.estimate.estimate` (``kf.estimate``) checks every option once
(:mod:`~kernelfit.front.options`), prepares the pairs and hands them to one fit of the
``fit`` layer.  The wrappers that refit — automatic size and edge rule
(:mod:`~kernelfit.front.auto`), colour channels (:mod:`~kernelfit.front.channels`), spatially
varying kernels (:mod:`~kernelfit.front.variation`), images on disk in tiles
(:mod:`~kernelfit.front.tiled`) and Dask clusters (:mod:`~kernelfit.front.distributed`) —
receive the front door as an argument (``refit=``) instead of importing it.

Rule: imports ``fit`` and below; nothing but ``cli``, ``demo`` and the package's public names
imports it.
"""
