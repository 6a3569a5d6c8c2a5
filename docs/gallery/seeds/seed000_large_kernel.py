"""
A kernel larger than its image (seed 000)
=========================================

The question: a binary image ``A`` (about 20 % ones, 100×100) is convolved with a 199×199
kernel that decays as ``1/r`` from its centre (0 at the centre), ``B = A ⊛ K + S`` with unit
Gaussian noise ``S``.  How can ``K`` be estimated from ``A`` and ``B``?

39,601 unknowns and 10,000 equations: least squares on a free kernel cannot determine it,
and kernelfit says so.  A model with few parameters can: a radial profile, or a power law.
"""

# %%
# The data, exactly as the question builds them
# ---------------------------------------------
# ``kernelfit.demo.seed000_data`` is the question's code with a seeded generator.
# ``oaconvolve(src, kernel, mode='same')`` pads with zeros and puts the kernel's centre
# ``(99, 99)`` on the output pixel: kernelfit's ``boundary="fill"`` with the default centre.
import warnings

import matplotlib.pyplot as plt
import numpy as np

import kernelfit as kf
from kernelfit.demo import relative_error, seed000_data

src, tgt, kernel = seed000_data(seed=0)
print(src.shape, tgt.shape, kernel.shape)

# %%
# A free kernel is not determined
# -------------------------------
# The plain call fits *some* kernel that reproduces ``B`` exactly, one of many.  kernelfit
# marks it ``converged=False`` and warns, naming the options that do determine the kernel.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    free = kf.estimate(src, tgt, kernel.shape, boundary="fill")
print("converged:", free.converged)
print(caught[0].category.__name__, ":", str(caught[0].message)[:240], "...")

# %%
# A radial profile and a power law
# --------------------------------
# ``model="radial"`` fits one value per ring of radii (the rings chosen automatically);
# ``model="powerlaw"`` fits ``amplitude · r^-exponent`` with a free centre value: three
# parameters, each with a standard error.
radial = kf.estimate(src, tgt, kernel.shape, boundary="fill", model="radial")
powerlaw = kf.estimate(src, tgt, kernel.shape, boundary="fill", model="powerlaw")
errors = {name: relative_error(fit.kernel, kernel)
          for name, fit in (("radial", radial), ("powerlaw", powerlaw))}
for name, error in errors.items():
    print(f"model={name!r}: relative error {error:.4f}")
p, s = powerlaw.params, powerlaw.stderr
print(f"power law: ({p['amplitude']:.4f} ± {s['amplitude']:.4f}) · "
      f"r^-({p['exponent']:.4f} ± {s['exponent']:.4f})")

# %%
# The profiles against the truth
# ------------------------------
# Along the row through the centre, right of it (``r = 1 … 99``).
r = np.arange(1, 100)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(r, kernel[99, 100:], "k-", lw=3, alpha=0.3, label="true 1/r")
ax.loglog(r, radial.kernel[99, 100:], label="model='radial'")
ax.loglog(r, powerlaw.kernel[99, 100:], "--", label="model='powerlaw'")
ax.set_xlabel("distance from the centre (pixels)")
ax.set_ylabel("kernel value")
ax.legend()
fig.tight_layout()

# %%
# A free kernel with a smoothness penalty and ``k ≥ 0`` also works
# (``reg="gradient", nonneg=True``, λ by generalised cross-validation, solved matrix-free),
# less accurately and more slowly; ``examples/seed000_large_kernel.py`` compares all of them.
