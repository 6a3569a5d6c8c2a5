"""The report's drawing: matplotlib figures (Agg, no display) embedded as PNG ``data:`` URIs.

Drawing primitives shared by the sections (:mod:`~kernelfit.report.sections`): a figure, its
PNG, the kernel image and radial profile, the kernel's MTF, and the display range and stride
of large images.  matplotlib is imported inside the functions, so that importing the report
works without it (:func:`~kernelfit.report.html.require_matplotlib` says how to install it).
"""

from __future__ import annotations

import base64
import html
import io as _bytes_io
import math

import numpy as np

# Images larger than this (per side) are strided down for display: a figure a few hundred
# pixels wide cannot show more, and drawing a 8k² image would dominate the report's cost.
DISPLAY_MAX = 1024


def new_figure(width, height):
    """A matplotlib Figure of ``width`` × ``height`` inches, not tied to any display."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png_uri(fig, dpi=96) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_html(fig, alt, caption="") -> str:
    """``<figure>`` with the PNG of ``fig`` embedded, its ``alt`` text and caption escaped."""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_uri(fig)}" alt="{html.escape(alt)}"/>{cap}</figure>'


def colormap_with_bad(name, bad):
    """The named colour map, with ``bad`` as the colour of NaN (unused) pixels."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=bad)


def draw_kernel(fig, ax, kernel, center, small=False) -> None:
    """The kernel as an image with a colour bar (signed kernels on a symmetric scale);
    ``small`` for the notebook thumbnail."""
    finite = kernel[np.isfinite(kernel)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    signed = finite.size and finite.min() < -0.05 * top
    if signed:
        im = ax.imshow(kernel, cmap=colormap_with_bad("RdBu_r", "#bbbbbb"), vmin=-top, vmax=top,
                       interpolation="nearest")
    else:
        im = ax.imshow(kernel, cmap=colormap_with_bad("viridis", "#bbbbbb"), interpolation="nearest")
    mark_center(ax, center)
    if small:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("kernel", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
        fig.tight_layout()
        return
    ax.set_title("kernel k (convolution orientation)")
    ax.set_xlabel("column j")
    ax.set_ylabel("row i")
    fig.colorbar(im, ax=ax, shrink=0.85)


def mark_center(ax, center) -> None:
    """A + at the kernel's centre ``(row, column)``."""
    ax.plot([center[1]], [center[0]], marker="+", color="#e74c3c", ms=12, mew=2)


def draw_radial_profile(ax, kernel, center) -> None:
    """Every coefficient against its distance from the centre, and the mean per ring."""
    yy, xx = np.indices(kernel.shape, dtype=float)
    r = np.hypot(yy - center[0], xx - center[1]).ravel()
    k = kernel.ravel()
    if k.size <= 5000:
        ax.plot(r, k, ".", color="#4a78b5", alpha=0.5, ms=4, label="coefficients")
    ring = np.rint(r).astype(int)
    counts = np.bincount(ring)
    sums = np.bincount(ring, weights=k)
    have = counts > 0
    ax.plot(np.nonzero(have)[0], sums[have] / counts[have], "-", color="#c0392b", lw=1.6,
            label="ring mean")
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xlabel("distance from centre (pixels)")
    ax.set_ylabel("k")
    ax.set_title("radial profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def radial_mtf(kernel):
    """Radially averaged ``|FFT|``: (frequency in cycles/pixel, value, normalised by k̂(0))."""
    n = int(min(1024, max(64, 2 ** math.ceil(math.log2(4 * max(kernel.shape))))))
    n = max(n, *kernel.shape)
    spectrum = np.abs(np.fft.rfft2(kernel, s=(n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    radius = np.hypot(fy, fx)
    bins = np.rint(radius * n).astype(int).ravel()
    keep = bins <= n // 2
    counts = np.bincount(bins[keep])
    sums = np.bincount(bins[keep], weights=spectrum.ravel()[keep])
    have = counts > 0
    freq = np.nonzero(have)[0] / n
    mtf = sums[have] / counts[have]
    dc = abs(float(kernel.sum()))
    normalised = dc > 1e-12 * max(float(np.abs(kernel).sum()), 1e-300)
    scale = dc if normalised else max(float(mtf.max()), 1e-300)
    return freq, mtf / scale, normalised


def strided(image):
    """``image`` strided so that neither side exceeds the display limit, and the stride."""
    step = max(1, math.ceil(max(image.shape) / DISPLAY_MAX))
    return (image[::step, ::step] if step > 1 else image), step


def pixel_extent(shape):
    """The ``extent`` that puts an image of ``shape`` at its pixel-centre coordinates (also
    when it is drawn strided)."""
    return (-0.5, shape[1] - 0.5, shape[0] - 0.5, -0.5)


def display_limits(image):
    """The colour range of an image: its 0.5–99.5 % points (a constant image gets ±0.5)."""
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
    return float(low), float(high)
