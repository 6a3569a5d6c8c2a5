"""Moments of a kernel: where the parametric families' first guesses come from.

A free-form estimate's zeroth, first and second moments give each family of
:mod:`~kernelfit.models.families` a starting point (a width from the variance, an angle from
the principal axis).  Angles follow the convention of :mod:`~kernelfit.models.parametric`:
degrees, counter-clockwise as the image is displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.conventions import normalize_center, normalize_shape

__all__ = ["Moments", "kernel_moments"]


@dataclass(frozen=True)
class Moments:
    """Zeroth, first and second moments of a (non-negative part of a) kernel.

    Attributes
    ----------
    total : float
        Sum of the kernel (before clipping negative values).
    dy, dx : float
        Centroid relative to the kernel's centre index, in pixels.
    cov : (2, 2) ndarray
        Second central moments in ``(row, col)`` coordinates, in pixels², of the kernel's
        values at pixel centres.  For a smooth profile sampled at pixel centres they are the
        profile's own moments; an area-sampled (pixel-integrated) kernel has 1/12 more per
        axis, which the coverage families take off in their ``start``.
    """

    total: float
    dy: float
    dx: float
    cov: np.ndarray

    @property
    def axis_variance(self) -> float:
        """Mean of the two axis variances (``trace(cov) / 2``), at least 0."""
        return max(float(np.trace(self.cov)) / 2.0, 0.0)

    def principal(self):
        """``(major variance, minor variance, angle of the major axis in degrees)``.

        The angle follows the module's convention (counter-clockwise as displayed).
        """
        vals, vecs = np.linalg.eigh(self.cov)
        major = vecs[:, 1]  # (row, col) direction
        # Row increases downwards: the displayed direction is (col, −row).
        angle = np.degrees(np.arctan2(-major[0], major[1]))
        return max(vals[1], 0.0), max(vals[0], 0.0), _wrap_half_turn(angle)


def kernel_moments(kernel, center=None, *, floor=0.02) -> Moments:
    """Moments of a kernel estimate, robust to the noise of a free fit.

    Values below ``floor`` times the peak are ignored (clipped to zero), so that noise in the
    wide tails of a free-form estimate does not inflate the second moments.

    Parameters
    ----------
    kernel : (kh, kw) array_like
    center : (int, int), optional
        Default ``((kh-1)//2, (kw-1)//2)``.
    floor : float, default 0.02
        Fraction of the peak below which pixels are ignored.

    Returns
    -------
    Moments

    Examples
    --------
    >>> from kernelfit.models.parametric import Gaussian
    >>> k = Gaussian().evaluate([2.0], (21, 21))
    >>> m = kernel_moments(k, floor=0.0)
    >>> round(m.axis_variance ** 0.5, 2)
    2.0
    """
    k = np.asarray(kernel, dtype=np.float64)
    shape = normalize_shape(k.shape, "kernel.shape")
    cy, cx = normalize_center(center, shape)
    total = float(k.sum())
    w = np.clip(k - floor * max(k.max(), 0.0), 0.0, None)
    s = w.sum()
    if not s > 0:
        return Moments(total, 0.0, 0.0, np.zeros((2, 2)))
    y = np.arange(shape[0])[:, None] - cy
    x = np.arange(shape[1])[None, :] - cx
    my, mx = float((w * y).sum() / s), float((w * x).sum() / s)
    yy = float((w * (y - my) ** 2).sum() / s)
    xx = float((w * (x - mx) ** 2).sum() / s)
    xy = float((w * (y - my) * (x - mx)).sum() / s)
    return Moments(total, my, mx, np.array([[max(yy, 0.0), xy], [xy, max(xx, 0.0)]]))


def _wrap_half_turn(angle):
    """Wrap an angle in degrees to ``[-90, 90)`` (an orientation, period 180°)."""
    return (np.asarray(angle) + 90.0) % 180.0 - 90.0

