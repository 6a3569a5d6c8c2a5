"""
Astronomer: a PSF that changes across the field, with the sky
=============================================================

Two exposures of one star field, as FITS files: a sharp reference and a science image whose
point-spread function widens from the left edge to the right and which sits on a sloping sky.
Image subtraction (Alard & Lupton's method) fits the kernel that maps the reference onto the
science image, its variation across the field and the sky at once: ``variation=1`` lets each
kernel coefficient be a plane in the pixel position, ``background=1`` fits a plane of sky.
"""

# %%
# Two FITS files
# --------------
# A synthetic field: 300 stars with a power-law brightness distribution.  The reference has
# a Gaussian PSF of σ = 0.8 px.  The science image is the reference convolved with a
# Gaussian kernel whose σ grows linearly from 1.0 px at the left edge to 1.6 px at the right
# edge, plus sky ``40 + 6·x/W + 3·y/H`` and noise of standard deviation 1.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits
from scipy import ndimage

import kernelfit as kf


def gaussian_kernel(sigma, size=11):
    """A normalised, centred Gaussian on a ``size``×``size`` grid."""
    y, x = np.mgrid[:size, :size] - size // 2
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / k.sum()


rng = np.random.default_rng(7)
H = W = 160
stars = np.zeros((H, W))
stars[rng.integers(0, H, 300), rng.integers(0, W, 300)] = 2000 * rng.pareto(1.5, 300) + 500
reference = ndimage.gaussian_filter(stars, 0.8)

# A kernel linear in x: k(x) = (1 − w)·k_left + w·k_right with w = x/(W − 1); the blend of
# the two convolutions is exactly the convolution with that kernel.
k_left, k_right = gaussian_kernel(1.0), gaussian_kernel(1.6)
w = np.arange(W) / (W - 1)
science = ((1 - w) * kf.convolve(reference, k_left, boundary="fill")
           + w * kf.convolve(reference, k_right, boundary="fill"))
yy, xx = np.mgrid[:H, :W]
sky = 40 + 6 * xx / W + 3 * yy / H
science += sky + rng.normal(0, 1, (H, W))

folder = Path(tempfile.mkdtemp())
fits.writeto(folder / "reference.fits", reference.astype(np.float32))
fits.writeto(folder / "science.fits", science.astype(np.float32))

# %%
# The fit
# -------
# :func:`kernelfit.io.read_image` reads FITS through astropy (float32 as stored).  An 11×11
# kernel, each coefficient a plane in (y, x), the sky a plane, ``boundary="valid"``: only
# pixels whose footprint lies inside the reference are used, so nothing is assumed about
# the edges.  The result is a :class:`kernelfit.VaryingKernelFit`.
a = kf.io.read_image(folder / "reference.fits")
b = kf.io.read_image(folder / "science.fits")
fit = kf.estimate(a, b, 11, variation=1, background=1)
print(type(fit).__name__, "converged:", fit.converged)
print("noise std:", round(fit.noise_std, 3), "(true 1)")

# %%
# The kernel across the field
# ---------------------------
# ``fit.kernel_at(y, x)`` is the kernel at pixel ``(y, x)`` of ``b``.  The width of each
# kernel, from its second moment, against the truth:
size = 11
offsets = np.arange(size) - size // 2


def moment_sigma(k):
    """σ of a centred kernel from its second moment along x."""
    return float(np.sqrt((k.sum(axis=0) * offsets**2).sum() / k.sum()))


# ``b`` has the reference's shape, so its pixels are the images' pixels; the columns shown
# are those whose 11×11 footprint lies inside the reference (the pixels the fit used).
columns = [5, 42, 80, 117, W - 6]
measured = [moment_sigma(fit.kernel_at(H // 2, x)) for x in columns]
true_kernels = [(1 - x / (W - 1)) * k_left + x / (W - 1) * k_right for x in columns]
truth = [moment_sigma(k) for k in true_kernels]
for x, m, t in zip(columns, measured, truth):
    print(f"x = {x:3d}: kernel width {m:.3f} px (true {t:.3f})")
errors = [np.linalg.norm(fit.kernel_at(H // 2, x) - k) / np.linalg.norm(k)
          for x, k in zip(columns, true_kernels)]
print("largest relative error of the kernel:", round(max(errors), 4))

# %%
# The difference image
# --------------------
# ``fit.residual`` is ``b`` minus the reference convolved with the varying kernel, minus the
# sky: what image subtraction is for.  Here it is noise of standard deviation 1.
residual = fit.residual
print("residual std:", round(float(np.nanstd(residual)), 3))
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, (title, image) in zip(axes, (("reference", a), ("science", b),
                                     ("science − model", residual))):
    ax.imshow(image, cmap="gray", origin="lower",
              vmin=np.nanpercentile(image, 1), vmax=np.nanpercentile(image, 99))
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
