"""
Camera engineer: a lens's blur from a photo pair, exported
==========================================================

A sharp reference photo and the same scene through the lens under test, as 8-bit colour
PNGs.  The blur differs by colour (the lens has some lateral chromatic blur), so each
channel gets its own kernel.  The kernels are exported for the image pipeline, compared by
their MTF, and the same fit is run from the shell.
"""

# %%
# The photo pair
# --------------
# scikit-image's ``astronaut`` (cropped to 160×160) is the sharp reference.  The "lens"
# blurs red, green and blue with Gaussians of σ = 1.0, 1.2 and 1.6 px, displaced by
# −0.5, 0 and +0.5 px horizontally; the result is rounded to 8 bits.
import tempfile
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import kernelfit as kf
from kernelfit.cli import main as kernelfit_command


def lens_kernel(sigma, shift, size=9):
    """A normalised Gaussian of width ``sigma``, its centre moved right by ``shift``."""
    y, x = np.mgrid[:size, :size] - size // 2
    k = np.exp(-((x - shift) ** 2 + y**2) / (2 * sigma**2))
    return k / k.sum()


sharp = data.astronaut()[:160, 140:300]
true_kernels = np.stack([lens_kernel(1.0, -0.5), lens_kernel(1.2, 0.0),
                         lens_kernel(1.6, 0.5)], axis=-1)
blurred = np.stack([kf.convolve(sharp[..., c].astype(float), true_kernels[..., c],
                                boundary="nearest") for c in range(3)], axis=-1)
blurred = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)

folder = Path(tempfile.mkdtemp())
iio.imwrite(folder / "sharp.png", sharp)
iio.imwrite(folder / "through_lens.png", blurred)

# %%
# One kernel per channel
# ----------------------
# :func:`kernelfit.io.read_array` reads the files as stored, ``(H, W, 3)`` ``uint8``.
# ``channel_axis=-1`` fits each channel on its own; a blur is non-negative and keeps the
# light, so ``nonneg=True, normalize=1.0``.  ``boundary="valid"`` (the default) assumes
# nothing about how the camera treated the edges.
a = kf.io.read_array(folder / "sharp.png")
b = kf.io.read_array(folder / "through_lens.png")
fits = kf.estimate(a, b, 9, channel_axis=-1, nonneg=True, normalize=1.0)
print(type(fits).__name__, fits.kernel.shape)


def centroid(k):
    """The horizontal centre of mass of a kernel, in pixels right of its centre."""
    return float((k.sum(axis=0) * (np.arange(k.shape[1]) - k.shape[1] // 2)).sum() / k.sum())


for c, name in enumerate("RGB"):
    k, truth = fits.kernel[..., c], true_kernels[..., c]
    error = np.linalg.norm(k - truth) / np.linalg.norm(truth)
    print(f"{name}: relative error {error:.4f}, horizontal centroid {centroid(k):+.3f} px "
          f"(true {centroid(truth):+.3f})")

# %%
# Export
# ------
# The stack of kernels as ``.npy`` (exact, ``(9, 9, 3)``), each channel as CSV for tools
# that take a text matrix, and the whole fit (kernels, standard errors, diagnostics) as JSON.
kf.io.write_kernel(folder / "lens_psf.npy", fits.kernel)
for c, name in enumerate("rgb"):
    kf.io.write_kernel(folder / f"lens_psf_{name}.csv", fits.kernel[..., c])
fits.save(folder / "lens_fit.json")
print(sorted(path.name for path in folder.iterdir()))
reloaded = kf.io.read_kernel(folder / "lens_psf.npy", stack=True)
print("reloaded equals the fit:", np.array_equal(reloaded, fits.kernel))

# %%
# The same from the shell
# -----------------------
# ``kernelfit estimate`` takes the same options; ``kernelfit_command`` here is the
# command's entry point, called with the arguments one would type.
status = kernelfit_command([
    "estimate", str(folder / "sharp.png"), str(folder / "through_lens.png"),
    "--shape", "9", "--per-channel", "--nonneg", "--normalize", "1",
    "-o", str(folder / "cli_psf.npy"), "--quiet",
])
from_shell = np.load(folder / "cli_psf.npy")
print("exit status", status, "; same kernels:", np.allclose(from_shell, fits.kernel))

# %%
# MTF by channel
# --------------
# The modulus of each kernel's Fourier transform along the horizontal frequency axis,
# sampled finely by zero padding; 0.5 cycles/pixel is the Nyquist frequency.
n = 256
frequencies = np.fft.rfftfreq(n)
fig, ax = plt.subplots(figsize=(6, 3.5))
for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
    mtf = np.abs(np.fft.rfft(fits.kernel[..., c].sum(axis=0), n))
    ax.plot(frequencies, mtf, color=colour, label="RGB"[c])
ax.set_xlabel("spatial frequency (cycles/pixel)")
ax.set_ylabel("MTF")
ax.legend()
fig.tight_layout()
