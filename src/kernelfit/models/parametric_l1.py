"""Exact L1 for a one-parameter family (and its amplitude) at the cost of a scalar search.

The problem is ``min f(s, A) = Σ_i |A·m_i(s) − b_i|`` over the family's one parameter ``s``
(σ of a Gaussian) and, unless ``normalize=`` fixes it, the amplitude ``A``, with
``m(s) = a ⊛ k(s)`` over the used pixels of every pair.  A scalar search over convolutions
of the image (``minimize_scalar`` over ``gaussian_filter``) pays one convolution per step,
fifteen or so in all; this search pays about three images of the whole data, and needs no
statistics:

1. **Start.**  A scan and bounded Brent over the family's whole range of ``s`` on a sample
   of a few thousand pixels (tiles spread over every pair,
   :mod:`~kernelfit.models.pixel_sample`), the amplitude by least squares.
2. **Levels.**  A sample of ``√(N·n₀)`` pixels (bands of rows), then every pixel: on each, a
   window a few standard errors (of the previous answer) wide around the previous answer,
   in which the exact L1 objective is modelled from two exact images (single precision
   where that is faster; :class:`~kernelfit.models.l1_window.Window`: sign split,
   weighted-median amplitude).  When the answer is on the window's edge the window moves
   there, four times wider; where a jump of the kernel (the radius of
   ``Gaussian(truncate=)``) cuts a window, the piece beyond is searched too.
3. **Polish** (every pixel).  The exact image at the model's answer becomes a node, which
   makes the model exact there; the model is searched again, and a better point it finds
   (by more than 5e-10 of the objective) is evaluated in turn.  The best exactly evaluated
   point is the answer, with its exact objective and residual.
4. **Refinement.**  While the last window was far wider than the answer's own standard
   error (noise-free data: the minimum is a sharp kink at zero), a narrower window, in
   double precision, around the answer.

The standard errors use the Gauss–Newton matrix from the last window's images.  ``None``
means the search does not apply or gave up (the windows kept moving, or the model's
objective at a node disagreed with the exact one, a broken split): the caller takes the
general path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

from .l1_window import Family, Sources, Window
from .parametric_data import _Layout
from .pixel_sample import abs_sum, residual_in_place, sample

__all__ = ["fit_l1_one_parameter", "applies"]

_WIDTH = 4.0            # a level's window: this many standard errors of the previous answer
_GROWTH = 4.0           # a window whose answer is on its edge moves there, this much wider
_MAX_WINDOWS = 12       # per level
_MAX_POLISH = 6
_MAX_REFINE = 4         # narrower windows around the last level's answer
_REFINE = 32            # ... while the last was this many times wider than needed
_EDGE = 1e-3            # an answer this close to the window's edge (in half-widths) is on it
_IMPROVES = 5e-10       # a model point better than the best exact by this (relative) is tried
_START_PIXELS = (4096, 16384)   # the start's sample: N/64 pixels, within these
_START_GRID = 8         # points of the start's scan over the family's range


def applies(layout: _Layout) -> bool:
    """Whether the search handles this family: one shape parameter with finite bounds,
    no centre offset (the amplitude may be free or fixed)."""
    return layout.m == 1 and not layout.fit_offset \
        and np.isfinite(layout.lower[0]) and np.isfinite(layout.upper[0]) \
        and layout.upper[0] > layout.lower[0]


@dataclass
class _Point:
    """An exactly evaluated point."""

    s: float
    amplitude: float
    objective: float
    residual: np.ndarray


def fit_l1_one_parameter(pairs, layout: _Layout, *, spectrum=None):
    """The exact L1 fit of a one-parameter family; ``None`` where it gives up.

    Parameters
    ----------
    pairs : list of PreparedPair
    layout : _Layout
    spectrum : callable, optional
        ``spectrum(i)``: the FFT spectrum of pair ``i`` (computed once, on first use).

    Returns
    -------
    (theta, residual, gauss_newton, notes, info) or None
    """
    family = Family(layout)
    fixed_a = layout.normalize is not None
    n = sum(pair.n_used for pair in pairs)
    rounding = 1e-12 * sum(abs_sum(pair.b_used.ravel() if pair.use is None
                                   else pair.b_used[pair.use]) for pair in pairs)
    first = int(np.clip(n // 64, *_START_PIXELS))
    info = {"l1_search": "window", "l1_levels": []}
    # The start's sample: from four of the pairs at most (evenly chosen), each call of a
    # small piece costing more in overhead than in arithmetic.
    chosen = pairs[::-(-len(pairs) // 4)]
    n_chosen = sum(pair.n_used for pair in chosen)
    s, a, se_s, se_a, record = _start(
        family, sample(chosen, layout.shape, min(first / n_chosen, 1.0), most=2), layout,
        fixed_a)
    info["l1_levels"].append(record)
    # One intermediate sample, the geometric mean of the start's and the whole: each level's
    # window is then a few of its standard errors wide around an answer √(N/first) times
    # less precise, for a cost of a small fraction of an image.
    middle = int(np.sqrt(first * n))
    sizes = ([middle] if middle * 4 <= n and middle >= 4 * first else []) + [n]
    for size in sizes:
        last = size == n
        sources = pairs if last else sample(pairs, layout.shape, size / n)
        exact = Sources(family, sources, spectrum if last else None)
        found = _level(exact, family, s, a, _half(se_s, s), _half(se_a, a) * (not fixed_a),
                       fixed_a, last, rounding)
        if found is None:
            return None
        s, a, se_s, se_a, record, final = found
        info["l1_levels"].append(dict(record, pixels=exact.n, images=exact.count))
    point, window = _refine(exact, family, final, fixed_a, rounding, info)
    # Image evaluations in units of one of the whole data.
    info["l1_images"] = sum(level["images"] * level["pixels"]
                            for level in info["l1_levels"]) / n
    theta = np.array([point.s] if fixed_a else [point.s, point.amplitude])
    notes = []
    return theta, point.residual, _gauss_newton(window, point.amplitude, fixed_a), notes, info


def _refine(exact, family, final, fixed_a, rounding, info):
    """Narrower windows (double precision) around the answer while the last one was far
    wider than the answer's own standard error: a window's model is only as precise as the
    interpolation over its width (noise-free data: the L1 minimum is a sharp kink at zero
    objective)."""
    point, window = final
    for _ in range(_MAX_REFINE):
        se_s, se_a = _standard_errors(window.slope_stats, window.hi - window.lo,
                                      point.amplitude, point.objective / exact.n, fixed_a)
        half_s = _half(se_s, point.s)
        if point.objective <= rounding or not window.hi - window.lo > 2 * _REFINE * half_s:
            break
        found = _level(exact, family, point.s, point.amplitude, half_s,
                       _half(se_a, point.amplitude) * (not fixed_a), fixed_a, True,
                       rounding, single=False)
        if found is None:
            break
        info["l1_levels"].append(dict(found[4], pixels=exact.n, images=exact.count))
        if not found[5][0].objective < point.objective:
            break
        point, window = found[5]
    return point, window


def _half(se, value):
    """A window's half-width from a standard error, kept within sane limits of the value."""
    scale = max(abs(value), 1e-12)
    half = _WIDTH * se if np.isfinite(se) else 0.05 * scale
    return float(np.clip(half, 1e-13 * scale, 0.5 * scale))


def _start(family, sample, layout, fixed_a):
    """``(s, A, se_s, se_a, record)`` on a small sample: a scan of the family's range, then
    Brent; the amplitude by least squares for each ``s`` (robust enough for a start: the
    levels' windows move the amplitude too)."""
    exact = Sources(family, sample)
    b = exact.b

    def fit(s):
        m = exact.images((s,))[0]
        mm = float(m @ m)
        a = layout.normalize if fixed_a else (float(m @ b) / mm if mm > 0 else 0.0)
        return float(np.abs(a * m - b).sum()), a

    lo, hi = family.lower, family.upper
    grid = np.geomspace(lo, hi, _START_GRID) if lo > 0 else np.linspace(lo, hi, _START_GRID)
    values = [fit(s)[0] for s in grid]
    j = int(np.argmin(values))
    a_end, b_end = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    res = scipy.optimize.minimize_scalar(lambda s: fit(s)[0], bounds=(a_end, b_end),
                                         method="bounded",
                                         options={"xatol": 3e-3 * grid[j], "maxiter": 100})
    s = float(res.x) if res.fun <= values[j] else float(grid[j])
    objective, a = fit(s)
    # Standard errors from the least-squares curvature, with the L1 scale of Gaussian noise.
    step = 1e-3 * max(abs(s), 1e-3)
    lo_s, hi_s = max(s - step, lo), min(s + step, hi)
    m_lo, m_hi = exact.images((lo_s, hi_s))
    d, mid = m_hi - m_lo, 0.5 * (m_hi + m_lo)
    se = _standard_errors((d @ d, d @ mid, mid @ mid), hi_s - lo_s, a, objective / b.size,
                          fixed_a)
    record = {"pixels": exact.n, "images": exact.count, "s": s, "se": se[0]}
    return s, a, se[0], se[1], record


def _standard_errors(stats, width, amplitude, mean_abs, fixed_a):
    """``(se_s, se_A)`` from ``(ΣD², ΣD·m, Σm²)`` of a window of ``width``: the
    least-squares covariance with the L1 scale ``(π/2)·mean|r|`` of Gaussian noise."""
    scale2 = (0.5 * np.pi * mean_abs) ** 2
    H = _curvature(stats, width, amplitude, fixed_a)
    try:
        cov = scale2 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.nan, np.nan
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return float(se[0]), (0.0 if fixed_a else float(se[1]))


def _curvature(stats, width, amplitude, fixed_a):
    """The Gauss–Newton matrix in ``(s[, A])`` from a window's image statistics."""
    dd, dm, mm = stats
    a = amplitude
    if fixed_a:
        return np.array([[a * a * dd / width**2]])
    return np.array([[a * a * dd / width**2, a * dm / width], [a * dm / width, mm]])


def _gauss_newton(window, amplitude, fixed_a):
    return _curvature(window.slope_stats, window.hi - window.lo, amplitude, fixed_a)


def _level(exact, family, s_c, a_c, half_s, half_a, fixed_a, last, rounding, *,
           single=True):
    """The search on one sample: windows from ``(s_c, a_c)`` until the answer is inside
    one; on the last level, polished.

    Returns ``(s, A, se_s, se_A, record, final)`` with ``final = (point, window)`` on the
    last level, else None; or ``None`` when the search gives up."""
    queue, crossed, windows, best = [(s_c, a_c, half_s, half_a)], set(), [], None
    while queue:
        if len(windows) >= _MAX_WINDOWS:
            return None
        s_c, a_c, half_s, half_a = queue.pop(0)
        lo, hi = max(s_c - half_s, family.lower), min(s_c + half_s, family.upper)
        lo, hi, jump_lo, jump_hi = family.piece(s_c, lo, hi)
        # A jump of the kernel inside the nominal window cuts it: the piece beyond is
        # searched too (its minimum may be lower, the objective being discontinuous).
        for jump, edge, direction in ((jump_lo, lo, -1.0), (jump_hi, hi, 1.0)):
            across = family.across(edge, direction) if jump and edge not in crossed else None
            if across is not None:
                crossed.update((edge, across))      # both sides of the jump
                queue.append((across, a_c, half_s, half_a))
        if not hi - lo > 1e-12 * max(abs(s_c), 1.0):
            continue        # no room for a window (a start between a bound and a jump)
        window = Window(exact, lo, hi, a_c, half_a, fixed_a, single=single)
        windows.append({"lo": lo, "hi": hi, "kept": window.n_kept})
        # Levels before the last only place the next window: a coarse answer does.
        s, a, value, tau = window.minimise(xatol=1e-5 if last else 1e-3)
        on_a_edge = not fixed_a and a in (window.a_lo, window.a_hi)
        at_lo, at_hi = tau <= -1 + _EDGE, tau >= 1 - _EDGE
        moves = (at_lo and lo > family.lower and not jump_lo) or \
            (at_hi and hi < family.upper and not jump_hi)
        if moves or on_a_edge:
            queue.append(((lo if at_lo else hi) if moves else s_c, a,
                          _GROWTH * half_s if moves else half_s,
                          _GROWTH * half_a if on_a_edge else half_a))
            continue
        if last:
            polished = _polish(window, s, a, rounding)
            if polished is None:
                return None
            point = polished
            value = point.objective
        if best is None or value < best[0]:
            best = (value, s, a, window, point if last else None)
    if best is None:
        return None
    value, s, a, window, point = best
    if last:
        s, a = point.s, point.amplitude
    se_s, se_a = _standard_errors(window.slope_stats, window.hi - window.lo, a,
                                  window.center_objective / exact.n, fixed_a)
    record = {"s": s, "se": se_s, "windows": windows}
    return s, a, se_s, se_a, record, ((point, window) if last else None)


def _polish(window, s, amplitude, rounding):
    """Exact images at the model's answers until it finds nothing better than the best
    exactly evaluated point: that point, or ``None`` if the model's objective at a node
    disagrees with the exact one (a broken split)."""
    best, polished = None, set()
    for _ in range(_MAX_POLISH):
        polished.add(s)
        image = window.exact.images((s,))[0]
        window.add_node(s, image)
        value, amplitude = window.profile(s)
        residual, exact = residual_in_place(image, amplitude, window.exact.b)
        if not abs(exact - value) <= 1e-9 * exact + rounding:
            return None
        if best is None or exact < best.objective:
            best = _Point(s, amplitude, exact, residual)
        if best.objective <= rounding:
            return best                 # an exact fit, to rounding
        s_next, a_next, model, _ = window.minimise(around=best.s)
        if model < best.objective * (1.0 - _IMPROVES) and s_next not in polished:
            s, amplitude = s_next, a_next
            continue
        break
    return best
