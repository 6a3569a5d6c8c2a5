"""
An image editor's convolution matrix (seed 001)
===============================================

The question: a photo was blurred with some "convolution matrix" in an image editor; can the
matrix be computed from the photo and its blurred copy?  The accepted answer divides the
Fourier transforms of the two images.  Here the same data go through
:func:`kernelfit.estimate` and through that Fourier ratio.
"""

# %%
# The photo and the editor's blur
# -------------------------------
# A 5×5 matrix of small integers, divided by its sum as editors do, applied with the edges
# extended by repeating the border pixels (``boundary="nearest"``), rounded to 8 bits.  The
# matrix is asymmetric on purpose: an estimate in the wrong orientation (correlation instead
# of convolution, rows for columns) would show as a large error.
import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import kernelfit as kf
from kernelfit.demo import EDITOR_MATRIX, fourier_ratio_kernel, relative_error

photo = data.camera()[:256, :256].astype(float)
divisor = EDITOR_MATRIX.sum()
true_kernel = EDITOR_MATRIX / divisor
blurred = np.clip(np.rint(kf.convolve(photo, true_kernel, boundary="nearest")), 0, 255)

# %%
# Least squares, with and without an edge model
# ---------------------------------------------
# ``boundary="nearest"`` is the rule that made the data; ``boundary="valid"`` (the default)
# uses only the pixels whose 5×5 footprint lies inside the photo, so it needs no edge model.
fits = {boundary: kf.estimate(photo, blurred, 5, boundary=boundary)
        for boundary in ("nearest", "valid")}
print("the matrix × divisor, estimated with boundary='nearest':")
print(np.round(fits["nearest"].kernel * divisor, 2) + 0.0)

# %%
# Knowing nothing but the two images, ``shape=None, boundary="auto"`` chooses the window
# size (by held-out pixels) and the edge rule (by the border pixels):
auto = kf.estimate(photo, blurred, None, boundary="auto")
print(f"chosen: {auto.shape[0]}x{auto.shape[1]}, boundary={auto.boundary!r}")

# %%
# The Fourier ratio, and the classic methods done carefully
# ---------------------------------------------------------
# ``irfft2(rfft2(b) / rfft2(a))`` treats both images as periodic, so the jump between
# opposite edges leaks into every coefficient, and dividing by weak frequencies amplifies
# the 8-bit rounding.  ``method="fourier"`` and ``method="wiener"`` are the same idea with
# padding, tapering and a regularised division.
estimates = {name: fit.kernel for name, fit in fits.items()}
estimates["fft ratio"] = fourier_ratio_kernel(photo, blurred, (5, 5))
for method in ("fourier", "wiener"):
    estimates[method] = kf.estimate(photo, blurred, 5, method=method).kernel
errors = {name: relative_error(k, true_kernel) for name, k in estimates.items()}
for name, error in errors.items():
    print(f"{name:>9}: relative error {error:.2e}")

# %%
# Side by side
# ------------
shown = {"true": true_kernel, "boundary='nearest'": estimates["nearest"],
         "FFT ratio": estimates["fft ratio"]}
fig, axes = plt.subplots(1, 3, figsize=(8, 3))
for ax, (title, k) in zip(axes, shown.items()):
    ax.imshow(k * divisor, cmap="viridis", vmin=0, vmax=EDITOR_MATRIX.max())
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
