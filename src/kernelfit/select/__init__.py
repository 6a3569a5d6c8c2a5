"""Layer 4, ``select``: the choice of the regularisation weight λ.

Generalised cross-validation and the discrepancy principle, exactly on the statistics
(:mod:`~kernelfit.select.direct`) or with randomized traces on the matrix-free operator
(:mod:`~kernelfit.select.iterative`, on the multi-shift GCV of
:mod:`~kernelfit.select.gcv_iterative`).

Rule: returns choices with their evidence (the curve searched), never a fit; imports
``solvers``, ``stats`` and ``core`` only.
"""
