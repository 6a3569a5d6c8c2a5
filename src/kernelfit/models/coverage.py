"""Exact pixel-area coverage of a disk, a rotated rectangle and an interval, in closed form.

The coverage families (:class:`~kernelfit.models.families.Disk`,
:class:`~kernelfit.models.families.Motion`, :class:`~kernelfit.models.families.Box`) weight
each unit pixel by the area of it inside their shape, with no supersampling:

* a disk: the area of each pixel square inside the circle, from the primitive of
  ``sqrt(r² − x²)`` combined over the pixel's four corners (:func:`disk_coverage`);
* a ``length × width`` rectangle rotated by ``angle`` (a line segment with flat ends): the
  vertical chord of a convex polygon clipped to a pixel is piecewise linear in ``x``, so the
  midpoint rule between its breakpoints is exact (:func:`segment_coverage`);
* an interval: the overlap of a pixel with ``[−size/2, size/2]`` (an axis-aligned box is the
  product of two).

Pixel centres are given as offsets ``y`` (rows, down) and ``x`` (columns, right) from the
shape's centre; angles are in degrees counter-clockwise as displayed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["disk_coverage", "segment_coverage", "interval_overlap"]


def _circle_primitive(t, r):
    """``∫_0^t sqrt(r² − s²) ds`` for ``0 ≤ t ≤ r``."""
    return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0.0)) + r * r * np.arcsin(t / r))


def _quadrant_area(X, Y, r):
    """Area of the disk of radius ``r`` (centred at 0) inside ``[0, X] × [0, Y]``, X, Y ≥ 0."""
    Xm = np.minimum(X, r)
    inside = Y < r
    # Where the circle's height exceeds Y (|x| < xc) the chord is capped at Y.
    xc = np.sqrt(np.maximum(r * r - Y * Y, 0.0))
    xa = np.where(inside, np.minimum(Xm, xc), 0.0)
    return Y * xa * inside + _circle_primitive(Xm, r) - _circle_primitive(xa, r)


def disk_coverage(y, x, radius):
    """Exact area of each unit pixel (centred at ``(y, x)``) inside a disk at the origin.

    The oriented area over ``[0, X] × [0, Y]`` is ``sign(X)·sign(Y)·Q(|X|, |Y|)`` by symmetry,
    and a pixel's area is the alternating sum of that over its four corners.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[-6:7, -6:7].astype(float)
    >>> bool(np.isclose(disk_coverage(y, x, 4.3).sum(), np.pi * 4.3 ** 2, rtol=1e-13))
    True
    """
    r = float(radius)
    total = 0.0
    for sy, Y in ((1, y + 0.5), (-1, y - 0.5)):
        for sx, X in ((1, x + 0.5), (-1, x - 0.5)):
            total = total + sy * sx * np.sign(X) * np.sign(Y) * _quadrant_area(
                np.abs(X), np.abs(Y), r)
    return np.clip(total, 0.0, 1.0)


def _convex_coverage(a, b, d, y, x):
    """Area of each unit pixel (centres ``y`` down, ``x`` right) inside a convex polygon.

    The polygon is ``{(X, Y) : a_i·X + b_i·Y ≤ d_i}`` in displayed coordinates
    (``X = x``, ``Y = −y``).  Inside a pixel the polygon's vertical chord at ``X`` is linear
    between breakpoints (pairwise intersections of the polygon's edges and the pixel's top
    and bottom), so the midpoint rule between sorted breakpoints is exact.
    """
    x0, x1 = x - 0.5, x + 0.5
    y0, y1 = -y - 0.5, -y + 0.5
    vertical = np.abs(b) < 1e-12
    lines = [(a[i], b[i], d[i]) for i in range(len(a))]
    # Lines of the pixel's bottom and top edges: 0·X + 1·Y = y0 / y1.
    breaks = [x0, x1]
    for i, (ai, bi, di) in enumerate(lines):
        if vertical[i]:
            breaks.append(np.full_like(x, di / ai))
            continue
        for edge in (y0, y1):
            if ai != 0:
                breaks.append((di - bi * edge) / ai)
        for aj, bj, dj in lines[i + 1:]:
            det = ai * bj - aj * bi
            if abs(det) > 1e-12:
                breaks.append(np.full_like(x, (di * bj - dj * bi) / det))
    B = np.sort(np.clip(np.stack(breaks), x0, x1), axis=0)
    mid = 0.5 * (B[1:] + B[:-1])
    width = B[1:] - B[:-1]
    top = np.broadcast_to(y1, mid.shape).copy()
    bottom = np.broadcast_to(y0, mid.shape).copy()
    ok = np.ones(mid.shape, bool)
    for i, (ai, bi, di) in enumerate(lines):
        if vertical[i]:
            ok &= ai * mid <= di
        elif bi > 0:
            top = np.minimum(top, (di - ai * mid) / bi)
        else:
            bottom = np.maximum(bottom, (di - ai * mid) / bi)
    chord = np.where(ok, np.maximum(top - bottom, 0.0), 0.0)
    return np.clip((chord * width).sum(axis=0), 0.0, 1.0)


def segment_coverage(y, x, length, angle, width=1.0):
    """Exact area of each unit pixel inside a ``length × width`` rectangle at ``angle``.

    The rectangle (a line segment of the given width with flat ends) is centred at the
    origin, its long axis at ``angle`` degrees counter-clockwise as displayed.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[-7:8, -7:8].astype(float)
    >>> bool(np.isclose(segment_coverage(y, x, 9.3, 23.0).sum(), 9.3, rtol=1e-12))
    True
    """
    t = np.radians(angle)
    c, s = np.cos(t), np.sin(t)
    half_l, half_w = 0.5 * float(length), 0.5 * float(width)
    # |u| ≤ L/2 and |v| ≤ w/2 with u = X c + Y s, v = −X s + Y c.
    a = np.array([c, -c, -s, s])
    b = np.array([s, -s, c, -c])
    d = np.array([half_l, half_l, half_w, half_w])
    return _convex_coverage(a, b, d, y, x)


def interval_overlap(x, size):
    """Length of ``[x − ½, x + ½] ∩ [−size/2, size/2]``."""
    return np.clip(np.minimum(x + 0.5, size / 2.0) - np.maximum(x - 0.5, -size / 2.0), 0.0, 1.0)

