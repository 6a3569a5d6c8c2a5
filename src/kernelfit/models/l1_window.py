"""The L1 objective of a one-parameter family on a window of its parameter.

For ``s`` in ``[lo, hi]`` and an amplitude ``A`` in ``[A_lo, A_hi]`` (or fixed), the
objective ``f(s, A) = Σ_i |A·m_i(s) − b_i|`` (``m(s) = a ⊛ k(s)`` over the used pixels of
every source) is replaced by a model that costs no image work to evaluate:

* **Nodes.**  ``m`` is computed exactly at the window's ends; the straight line through
  them, ``m̃(s) = Σ_n ℓ_n(s) M_n``, is within ``‖ε(s)‖₁·max|P|`` of ``m(s)`` at every pixel,
  where ``ε(s) = k(s) − Σ_n ℓ_n(s) k(s_n)`` is the same interpolation on the *kernel*
  (computed, no image work).  Exact images added later (:meth:`Window.add_node`) make the
  interpolant of higher degree and exact at those points.
* **Split.**  A pixel whose exact residual cannot change sign anywhere in the window — its
  residual at the window's centre exceeds the largest change the line allows over the
  window plus that error — contributes ``s_i·(A·m_i(s) − b_i)`` with a known sign
  ``s_i``: all of them sum into one number per node, ``g_n = Σ s_i M_n,i``, and
  ``Σ s_i b_i``.  The pixels whose sign can change are kept individually; in a window a few
  standard errors wide there are of order ``1/√N`` of them.
* **Profile.**  ``F(s) = min_A [A·Σ_n ℓ_n(s) g_n − Σ s_i b_i + Σ_kept |A·m̃_i(s) − b_i|]``:
  the inner minimum is exact (a weighted median, :func:`amplitude_l1`).

Since the signs are those of the exact residuals, ``|F̃ − f| ≤ max|A|·Σ|P|·‖ε(s)‖₁ = B(s)``
over the window, whatever the nodes (:meth:`Window.bound`), and ``F`` is exact at a node.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from .parametric_data import _Layout
from .pixel_sample import extended_abs_max, predictions, used_b

__all__ = ["Family", "Sources", "Window", "amplitude_l1"]

_GRID = 9               # points of the coarse scan of a window (and of its error bound)
_CHUNK = 1 << 15        # pixels per step of the split (its temporaries stay in cache)


class Family:
    """The unit kernel as a function of the family's one parameter, and its pieces."""

    def __init__(self, layout: _Layout):
        self.layout = layout
        self.lower, self.upper = float(layout.lower[0]), float(layout.upper[0])

    def kernel(self, s):
        layout = self.layout
        return layout.model.unit_kernel([s], layout.shape, layout.center, (0.0, 0.0)).ravel()

    def support(self, s):
        return self.kernel(s) != 0

    def piece(self, s, lo, hi):
        """``(lo', hi', jump_lo, jump_hi)``: the part of ``[lo, hi]`` around ``s`` where the
        kernel's support is the one at ``s`` (a family such as ``Gaussian(truncate=)``
        changes its support, and so jumps, at some values); ``jump_*`` tell whether an end
        is such a change rather than the window's."""
        ref = self.support(s)
        lo2, jump_lo = self._edge(ref, s, lo)
        hi2, jump_hi = self._edge(ref, s, hi)
        return lo2, hi2, jump_lo, jump_hi

    def _edge(self, ref, s, end):
        if np.array_equal(self.support(end), ref):
            return end, False
        inside, outside = s, end          # bisect to the last float with the support at s
        while True:
            mid = 0.5 * (inside + outside)
            if mid in (inside, outside):
                return inside, True
            if np.array_equal(self.support(mid), ref):
                inside = mid
            else:
                outside = mid

    def across(self, edge, direction):
        """The first float past a jump at ``edge`` towards ``direction``, or ``None``."""
        x = np.nextafter(edge, direction * np.inf)
        if not self.lower <= x <= self.upper or np.array_equal(self.support(x),
                                                               self.support(edge)):
            return None
        return float(x)


class Sources:
    """Exact model images ``m(s)`` over the used pixels of some sources (pairs or bands)."""

    def __init__(self, family: Family, sources, spectrum=None):
        self.family, self.sources, self.spectrum = family, list(sources), spectrum
        self.b = used_b(self.sources)
        self.abs_max = extended_abs_max(self.sources)
        self.n = self.b.size
        self.count = 0          # images computed, in units of the whole source set
        self._work = {}

    def images(self, values, *, single=False):
        """``m`` at each of ``values``: ``len(values) × n``; ``single=True`` allows single
        precision where it is faster (then within :attr:`single_error` of exact)."""
        self.count += len(values)
        kernels = [self.family.kernel(v) for v in values]
        return predictions(self.sources, kernels, self.family.layout.shape, self.spectrum,
                           self._work, single)

    @property
    def single_error(self):
        """A bound on the pointwise error of single-precision images of unit-sum kernels:
        float32 rounding (6e-8) amplified by the FFT's log-depth, with a wide margin."""
        return 1e-5 * self.abs_max


class _Nodes:
    """Interpolation nodes in ``s`` and their unit kernels (Lagrange form)."""

    def __init__(self, family: Family, values):
        self.family = family
        self.s = np.array(values, dtype=np.float64)
        self.kernels = np.stack([family.kernel(v) for v in self.s])
        self._denominators()

    def add(self, value):
        self.s = np.append(self.s, value)
        self.kernels = np.vstack([self.kernels, self.family.kernel(value)])
        self._denominators()

    def _denominators(self):
        d = self.s[:, None] - self.s[None, :]
        np.fill_diagonal(d, 1.0)
        self._inverse = 1.0 / d.prod(axis=1)

    def weights(self, s):
        """``ℓ_n(s) = Π_{m≠n} (s − s_m) / (s_n − s_m)``; exactly a unit vector at a node."""
        d = s - self.s
        zero = d == 0
        if zero.any():
            return zero / float(zero.sum())
        return d.prod() / d * self._inverse

    def kernel_error(self, s):
        """``‖k(s) − Σ ℓ_n(s) k_n‖₁``: the interpolant's error, on the kernel."""
        return float(np.abs(self.family.kernel(s) - self.weights(s) @ self.kernels).sum())


def amplitude_l1(m, b, slope, lo, hi, order=None):
    """``argmin_A slope·A + Σ|m_i·A − b_i|`` on ``[lo, hi]``, and the order of ``b/m``.

    The function is convex and piecewise linear: its minimum is the weighted median of
    ``b/m`` with weights ``|m|``, where the linear term acts as a weight at infinity.
    ``order`` (the one returned for nearby ``m``) makes the sort one of an almost sorted
    array.

    Examples
    --------
    >>> import numpy as np
    >>> amplitude_l1(np.ones(3), np.array([1.0, 2.0, 9.0]), 0.0, -10.0, 10.0)[0]
    2.0
    >>> amplitude_l1(np.ones(3), np.array([1.0, 2.0, 9.0]), 2.5, -10.0, 10.0)[0]
    1.0
    """
    w = np.abs(m)
    # Pixels with m = 0 carry no weight: any breakpoint will do.
    z = np.divide(b, m, out=np.zeros_like(b), where=w > 0)
    if order is None or order.size != z.size:
        order = np.argsort(z)
    else:
        order = order[np.argsort(z[order], kind="stable")]
    cum = np.cumsum(w[order])
    total = cum[-1] if cum.size else 0.0
    # The slope just right of z_k is slope − total + 2·cum_k: the minimum is the first z_k
    # where it turns non-negative.
    target = 0.5 * (total - slope)
    if target <= 0:
        return lo, order
    k = int(np.searchsorted(cum, target))
    if k >= z.size:
        return hi, order
    return float(np.clip(z[order[k]], lo, hi)), order


class Window:
    """The model of the L1 objective over ``[lo, hi] × [A_lo, A_hi]`` (module docstring).

    ``single=True`` lets the two node images be computed in single precision where that is
    faster (:meth:`Sources.images`); the split allows for their error.

    Attributes
    ----------
    lo, hi, a_lo, a_hi : float
    n_kept : int
        Pixels whose sign can change in the window.
    center_objective : float
        ``Σ|A_c·m(centre) − b|`` of the line's centre (exact to the interpolation error).
    slope_stats : tuple
        ``(ΣD², ΣD·m, Σm²)`` with ``D = M_hi − M_lo`` and ``m`` the line's centre: the
        least-squares curvature in ``(s, A)``, for the next window's width.
    """

    def __init__(self, exact: Sources, lo, hi, amplitude, half_a, fixed_a, *, single=True):
        self.exact, self.family = exact, exact.family
        self.lo, self.hi, self.fixed_a = lo, hi, fixed_a
        self.a_lo, self.a_hi = amplitude - half_a, amplitude + half_a
        self.nodes = _Nodes(self.family, (lo, hi))
        self.a_max = max(abs(self.a_lo), abs(self.a_hi))
        self._order = None
        worst = max(self.nodes.kernel_error(self._s(t)) for t in np.linspace(-1, 1, _GRID))
        # The line's pointwise error (twice its sampled worst, for the points between the
        # samples), plus the rounding of the exact images themselves.
        error = self.a_max * ((2.0 * worst + 1e-13) * exact.abs_max
                              + (exact.single_error if single else 0.0))
        self._split(exact.images((lo, hi), single=single), amplitude, half_a, error)

    def _s(self, tau):
        return 0.5 * (self.lo + self.hi) + 0.5 * (self.hi - self.lo) * tau

    def _split(self, M, amplitude, half_a, error):
        b = self.exact.b
        n = b.size
        self.sign = np.empty(n)
        kept, g, g_b, stats, center = [], np.zeros(2), 0.0, np.zeros(3), 0.0
        # |m̃(τ) − mid| ≤ |d|/2 for τ ∈ [−1, 1] (d = hi − lo, mid = (hi + lo)/2), and A
        # moves the prediction by at most half_a·(|mid| + |d|/2) more: the residual's sign
        # is fixed where |A·mid − b| exceeds that plus the pointwise error.
        reach = 0.5 * (abs(amplitude) + half_a)
        for start in range(0, n, _CHUNK):
            part = slice(start, min(start + _CHUNK, n))
            lo, hi, bb, sign = M[0, part], M[1, part], b[part], self.sign[part]
            mid = np.add(hi, lo, dtype=np.float64)
            mid *= 0.5
            r = mid * amplitude
            r -= bb
            np.sign(r, out=sign)
            np.abs(r, out=r)
            center += float(r.sum())
            d = np.subtract(hi, lo, dtype=np.float64)
            stats[0] += d @ d
            if half_a > 0:
                stats[1:] += (d @ mid, mid @ mid)
            np.abs(d, out=d)
            d *= reach
            d += error
            if half_a > 0:
                np.abs(mid, out=mid)
                mid *= half_a
                d += mid
            active = r <= d
            sign[active] = 0.0
            kept.append(np.flatnonzero(active) + start)
            g += (float(np.dot(lo, sign)), float(np.dot(hi, sign)))
            g_b += float(sign @ bb)
        self.index = np.concatenate(kept)
        self.g, self.g_b = g, g_b
        self.m = M[:, self.index].astype(np.float64)
        self.b = b[self.index]
        self.n_kept = int(self.index.size)
        self.center_objective = center
        self.slope_stats = tuple(float(x) for x in stats)

    def add_node(self, s, image):
        """Make the exact image ``m(s)`` a node of the interpolant (replacing the node's
        single-precision image if ``s`` is one already)."""
        same = np.flatnonzero(self.nodes.s == s)
        if same.size:
            self.g[same[0]] = image @ self.sign
            self.m[same[0]] = image[self.index]
            return
        self.nodes.add(s)
        self.g = np.append(self.g, image @ self.sign)
        self.m = np.vstack([self.m, image[self.index]])

    def profile(self, s):
        """``(F(s), A(s))``: the model's objective at ``s``, minimised over the box's ``A``."""
        w = self.nodes.weights(s)
        slope = float(w @ self.g)
        m = w @ self.m
        if self.fixed_a:
            amplitude = self.a_lo
        else:
            amplitude, self._order = amplitude_l1(m, self.b, slope, self.a_lo, self.a_hi,
                                                  self._order)
        return amplitude * slope - self.g_b + float(np.abs(amplitude * m - self.b).sum()), \
            amplitude

    def minimise(self, *, around=None, xatol=1e-5):
        """``(s, A, F, τ)`` minimising ``F`` over the window, or near ``around`` (a value of
        ``s``) when given: a scan, then bounded Brent to ``xatol`` (in half-widths)."""
        def objective(tau):
            return self.profile(self._s(float(tau)))[0]

        step = 2.0 / (_GRID - 1)
        if around is None:
            tau = np.linspace(-1.0, 1.0, _GRID)
        else:
            t0 = 2.0 * (around - self.lo) / (self.hi - self.lo) - 1.0
            tau = np.unique(np.clip(t0 + 0.25 * step * np.arange(-2, 3), -1.0, 1.0))
        values = [objective(t) for t in tau]
        j = int(np.argmin(values))
        best_tau, best = float(tau[j]), values[j]
        a, b = tau[max(j - 1, 0)], tau[min(j + 1, tau.size - 1)]
        if b > a:
            res = scipy.optimize.minimize_scalar(objective, bounds=(a, b), method="bounded",
                                                 options={"xatol": xatol, "maxiter": 200})
            if res.fun < best:
                best_tau, best = float(res.x), float(res.fun)
        s = self._s(best_tau)
        return s, self.profile(s)[1], best, best_tau
