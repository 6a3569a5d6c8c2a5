"""
ML practitioner: a convolution layer's weights from an image pair
=================================================================

An image went through some fixed filter (a preprocessing step of a pipeline, a camera's
sharpening, a layer of a trained network) and the filter is wanted as the weights of a
convolution layer, to reproduce it inside a model.  Two conventions differ from
kernelfit's:

* deep-learning "convolution" layers compute a cross-correlation, so their weight is the
  kernel flipped on both axes: ``weight = kernel[::-1, ::-1]``;
* ``padding="same"`` (or ``padding=k // 2``) pads with zeros: ``boundary="fill"``.

This example uses only numpy and scipy; the last cell shows the PyTorch lines.
"""

# %%
# An image and its filtered copy
# ------------------------------
# The unknown filter: a 5×5 sharpening kernel with a directional component, applied as a
# zero-padded correlation with odd size (what a ``Conv2d(1, 1, 5, padding=2, bias=True)``
# does), plus a bias of 0.1.  The image is scikit-image's ``camera`` in [0, 1], 128×128.
import matplotlib.pyplot as plt
import numpy as np
from scipy.signal import correlate2d
from skimage import data

import kernelfit as kf

rng = np.random.default_rng(0)
layer_weight = -0.05 * rng.random((5, 5))
layer_weight[2, 2] = 1.8
layer_weight[1, 3] = 0.3
layer_bias = 0.1
image = data.camera()[::4, ::4] / 255.0
output = correlate2d(image, layer_weight, mode="same", boundary="fill") + layer_bias

# %%
# The kernel, then the weight
# ---------------------------
# ``background=0`` fits the bias (a constant).  The layer's zero padding is
# ``boundary="fill"``; for odd sizes scipy's default centre is the layer's too.
fit = kf.estimate(image, output, 5, boundary="fill", background=0)
weight = fit.kernel[::-1, ::-1]  # convolution kernel -> correlation weight
bias = float(fit.background[0])
print("largest weight error:", float(np.abs(weight - layer_weight).max()))
print("bias:", round(bias, 6))

# %%
# The layer reproduces the output
# -------------------------------
# ``correlate2d`` with the weight is the layer; :func:`kernelfit.convolve` with the kernel
# is the same operation in kernelfit's orientation.
layer_output = correlate2d(image, weight, mode="same", boundary="fill") + bias
same = kf.convolve(image, fit.kernel, boundary="fill") + bias
print("layer vs data:", float(np.abs(layer_output - output).max()))
print("convolve vs layer:", float(np.abs(same - layer_output).max()))

# %%
# As a layer's weight tensor
# --------------------------
# ``(out_channels, in_channels, kh, kw)``; for colour images, one kernel per channel
# (``channel_axis=-1``) gives the weights of a depthwise layer, ``(3, 1, kh, kw)``.
conv_weight = weight[np.newaxis, np.newaxis].astype(np.float32)
print(conv_weight.shape, conv_weight.dtype)

# %%
# In PyTorch (not run here)::
#
#     layer = torch.nn.Conv2d(1, 1, 5, padding=2)
#     with torch.no_grad():
#         layer.weight.copy_(torch.from_numpy(conv_weight))
#         layer.bias.fill_(bias)
#
# An even-sized kernel has no centre: ``padding="same"`` in PyTorch puts the extra row and
# column of padding at the bottom and right, which is kernelfit's ``center=(kh//2, kw//2)``
# for the flipped kernel; the safest check is the one above, comparing the layer's output
# with ``kf.convolve`` on a test image.

fig, axes = plt.subplots(1, 3, figsize=(8, 3))
for ax, (title, k) in zip(axes, (("layer's weight", layer_weight), ("estimated weight", weight),
                                 ("difference × 1000", 1000 * (weight - layer_weight)))):
    ax.imshow(k, cmap="RdBu_r", vmin=-np.abs(k).max(), vmax=np.abs(k).max())
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
