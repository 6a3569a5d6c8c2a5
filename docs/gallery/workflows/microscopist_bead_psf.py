"""
Microscopist: the PSF from a 16-bit image of beads
==================================================

Sub-resolution fluorescent beads are points: the recorded image of a bead sample is the
point-spread function placed at every bead, on the camera's offset, with photon noise, in a
16-bit TIFF.  Given the bead positions and brightness (from localisation, or a calibrated
sample), the PSF is the kernel that maps the point image onto the recording.  A PSF is
non-negative and, for deconvolution, sums to one: ``nonneg=True, normalize=1.0`` impose both
exactly.
"""

# %%
# The bead image, as a 16-bit TIFF
# --------------------------------
# 40 beads of 20,000 photons each and one bright aggregate (250 beads' worth) in a
# 128×128 field; an elongated, tilted Gaussian PSF; a camera offset of 100 counts; Poisson
# noise; stored as ``uint16``, so the aggregate's core clips at 65,535.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tifffile

import kernelfit as kf

rng = np.random.default_rng(3)
size = 15
y, x = np.mgrid[:size, :size] - size // 2
u, v = x * np.cos(0.5) + y * np.sin(0.5), -x * np.sin(0.5) + y * np.cos(0.5)
true_psf = np.exp(-u**2 / (2 * 1.4**2) - v**2 / (2 * 2.2**2))
true_psf /= true_psf.sum()

# The object: photons per bead, at the beads' positions.
beads = np.zeros((128, 128))
beads[rng.integers(10, 118, 40), rng.integers(10, 118, 40)] = 20_000
beads[64, 64] = 5_000_000  # the aggregate
expected = kf.convolve(beads, true_psf, boundary="fill") + 100
recorded = np.clip(rng.poisson(expected), 0, 65_535).astype(np.uint16)

folder = Path(tempfile.mkdtemp())
tifffile.imwrite(folder / "beads.tif", recorded)

# %%
# Reading it back
# ---------------
# :func:`kernelfit.io.read_image` keeps the stored ``uint16``; kernelfit converts to float
# itself (and knows integer data carry a rounding error of variance 1/12).
b = kf.io.read_image(folder / "beads.tif")
print(b.dtype, b.shape, "max", b.max())

# %%
# The PSF
# -------
# ``nonneg=True`` and ``normalize=1.0``: the exact constrained least-squares kernel (an
# active-set method).  ``background=0`` fits the camera offset, a constant.
# ``saturation="auto"`` finds the plateau at 65,535 and drops those pixels: they hold the
# ceiling, not the convolution.  The beads are away from the edges and the field outside
# is dark, so ``boundary="fill"`` (zeros outside) is right and uses every pixel.
fit = kf.estimate(beads, b, size, boundary="fill", nonneg=True, normalize=1.0,
                  background=0, saturation="auto")
print("saturation found at", fit.info["saturation_b"])
print("offset fitted:", np.round(fit.background, 2))
print("kernel sum", round(float(fit.kernel.sum()), 6), " min", fit.kernel.min())
error = np.linalg.norm(fit.kernel - true_psf) / np.linalg.norm(true_psf)
print(f"relative error of the PSF: {error:.4f}")

# %%
# Without ``saturation="auto"`` the clipped core pulls the estimate down:
clipped = kf.estimate(beads, b, size, boundary="fill", nonneg=True, normalize=1.0,
                      background=0)
clipped_error = np.linalg.norm(clipped.kernel - true_psf) / np.linalg.norm(true_psf)
print(f"relative error without the saturation rule: {clipped_error:.4f}")

# %%
# Export for deconvolution
# ------------------------
# A float TIFF keeps the values (a PNG would only be a picture of them).
kf.io.write_kernel(folder / "psf.tif", fit.kernel)
psf = kf.io.read_kernel(folder / "psf.tif")
print("written and read back:", psf.shape, psf.dtype, np.array_equal(psf, fit.kernel))

fig, axes = plt.subplots(1, 3, figsize=(8, 3))
for ax, (title, image) in zip(axes, (("recording (log)", np.log(b.astype(float))),
                                     ("true PSF", true_psf), ("estimated PSF", fit.kernel))):
    ax.imshow(image, cmap="magma")
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
