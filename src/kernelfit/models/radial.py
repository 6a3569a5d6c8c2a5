"""Radial kernels: ``k = f(r)``, ``f`` piecewise linear in the distance ``r`` from the centre.

The profile ``f`` is linear between knots ``t_0 < t_1 < … < t_{m−1}`` and takes the value
``θ_j`` at knot ``t_j``, so the kernel is linear in ``θ``: ``k = B θ`` with ``B`` the *hat*
basis (each pixel is a mix of the two knots around its radius).  The fit is ordinary least
squares in ``θ`` (``m`` unknowns instead of ``kh·kw``), optionally with a smoothness penalty.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse

from ..core.conventions import normalize_center, normalize_shape
from ..core.diagnostics import RankDeficientWarning, user_stacklevel
from ._common import (
    PairData,
    StructuredFit,
    check_real,
    noise_level,
    radius_grid,
    solve_square_root,
)

# Default knots (see radial_knots): every distinct pixel radius up to EXACT_RADIUS, then a
# spacing of max(1 px, (RATIO − 1)·r) out to the "full-ring" radius, then one segment to the
# farthest pixel.  RATIO = 1.2 bounds the interpolation error of 1/r-like profiles by
# (RATIO−1)²/(4·RATIO) ≈ 0.8 % of the local value; on seed 000 (8 noise draws) ratios 1.1,
# 1.15, 1.2 and 1.3 gave mean errors 0.032, 0.029, 0.025, 0.022 (noise-dominated): beyond
# ~1.2 fewer knots buy little variance and cost bias on profiles less smooth than 1/r (the
# bound is 1.7 % at 1.3), so 1.2 is the default.
EXACT_RADIUS = 3.0
RATIO = 1.2


def radial_knots(shape, center=None, *, exact_radius=EXACT_RADIUS, ratio=RATIO):
    """Default knot radii for a radial profile on a kernel of ``shape``.

    * Near the centre, where a kernel changes fastest and pixel radii are few, there is a knot
      at every distinct pixel radius up to ``exact_radius`` (0, 1, √2, 2, √5, √8, 3 by
      default): there the profile is completely free.
    * Further out the spacing is ``max(1, (ratio − 1)·r)`` pixels — 1 px up to
      ``r = 1/(ratio − 1)`` (5 px by default), then geometric — up to the *full-ring radius*
      ``r_ring = min(max(cy, kh−1−cy), max(cx, kw−1−cx))`` (for a centred kernel, the largest
      circle inside it), which is always a knot.
    * Beyond ``r_ring`` rings lie only partly in the kernel (its corners): few pixels, and
      for a kernel as large as the image very few observations, so one linear segment runs
      from ``r_ring`` to the farthest pixel.  (Separate knots there made seed 000's error
      jump from 0.03 to 0.17 for some noise draws: their values were barely determined.)

    A knot less than half a spacing before ``r_ring`` is dropped.

    Parameters
    ----------
    shape : int or (kh, kw)
    center : (int, int), optional
        Default ``((kh−1)//2, (kw−1)//2)``.
    exact_radius : float, default 3.0
        Radius (pixels) up to which every distinct pixel radius is a knot.
    ratio : float > 1, default 1.2
        Ratio of consecutive knot radii in the geometric part.

    Returns
    -------
    ndarray
        Strictly increasing knot radii in pixels, starting at 0.

    Examples
    --------
    >>> np.round(radial_knots((15, 15)), 3).tolist()
    [0.0, 1.0, 1.414, 2.0, 2.236, 2.828, 3.0, 4.0, 5.0, 6.0, 7.0, 9.899]
    """
    shape = normalize_shape(shape)
    center = normalize_center(center, shape)
    exact_radius = check_real(exact_radius, "exact_radius", low=0.0)
    ratio = check_real(ratio, "ratio")
    if not ratio > 1.0:
        raise ValueError(f"ratio={ratio!r} must be greater than 1")
    (kh, kw), (cy, cx) = shape, center
    d2 = radius_grid(shape, center)
    r_max = float(np.sqrt(d2.max()))
    r_ring = float(min(max(cy, kh - 1 - cy), max(cx, kw - 1 - cx)))
    # Squared distances are integers, so the distinct radii are found exactly.
    knots = list(np.sqrt(np.unique(d2[d2 <= exact_radius**2]).astype(float)))
    n_exact = len(knots)
    if r_ring > knots[-1]:
        t = knots[-1]
        while True:
            step = max(1.0, (ratio - 1.0) * t)
            if t + step > r_ring:
                break
            t += step
            knots.append(t)
        if r_ring > knots[-1]:
            if len(knots) > n_exact and r_ring - knots[-1] < 0.5 * step:
                knots[-1] = r_ring
            else:
                knots.append(r_ring)
    if r_max > knots[-1]:
        knots.append(r_max)
    return np.array(knots)


def radial_basis(shape, center, knots):
    """The hat basis ``B`` (sparse, ``kh·kw × m``): ``k.ravel() = B @ profile``.

    A pixel at radius ``r`` between knots ``t_j ≤ r < t_{j+1}`` gets weights
    ``(t_{j+1} − r)/(t_{j+1} − t_j)`` on knot ``j`` and the rest on knot ``j+1``.  Pixels
    inside the first knot take its value; pixels beyond the last knot are 0 (so short knot
    lists limit the kernel's support).

    Examples
    --------
    >>> B = radial_basis((3, 3), (1, 1), [0.0, 1.0, 2.0])
    >>> (B @ np.array([1.0, 0.5, 0.0])).reshape(3, 3).round(3).tolist()
    [[0.293, 0.5, 0.293], [0.5, 1.0, 0.5], [0.293, 0.5, 0.293]]
    """
    knots = np.asarray(knots, dtype=float)
    r = np.sqrt(radius_grid(shape, center).ravel().astype(float))
    p, m = r.size, knots.size
    r = np.maximum(r, knots[0])                  # inside the first knot: its value
    pixel = np.flatnonzero(r <= knots[-1])       # beyond the last knot: 0
    r = r[pixel]
    if m == 1:
        B = scipy.sparse.csr_matrix((np.ones(pixel.size), (pixel, np.zeros_like(pixel))),
                                    shape=(p, 1))
    else:
        j = np.clip(np.searchsorted(knots, r, side="right") - 1, 0, m - 2)
        w = (r - knots[j]) / (knots[j + 1] - knots[j])
        B = scipy.sparse.csr_matrix(
            (np.concatenate([1.0 - w, w]), (np.tile(pixel, 2), np.concatenate([j, j + 1]))),
            shape=(p, m))
    B.eliminate_zeros()
    return B


def radial_kernel(radii, profile, shape, center=None):
    """Evaluate a piecewise-linear radial profile on a kernel grid.

    Parameters
    ----------
    radii : (m,) array_like
        Knot radii in pixels, strictly increasing, non-negative.
    profile : (m,) array_like
        The profile's value at each knot.
    shape : int or (kh, kw)
    center : (int, int), optional
        Pixel at radius 0; default ``((kh−1)//2, (kw−1)//2)``.

    Returns
    -------
    ndarray of shape ``shape``

    Examples
    --------
    >>> radial_kernel([0, 1], [1.0, 0.0], 3).tolist()
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    shape = normalize_shape(shape)
    center = normalize_center(center, shape)
    radii = _check_knots(radii, "radii")
    profile = np.asarray(profile, dtype=float)
    if profile.shape != radii.shape:
        raise ValueError(f"profile has shape {profile.shape}; it needs one value per knot "
                         f"radius {radii.shape}")
    return (radial_basis(shape, center, radii) @ profile).reshape(shape)


def second_differences(m):
    """``(m−2) × m`` matrix of second differences ``θ_{j−1} − 2θ_j + θ_{j+1}``."""
    if m < 3:
        return np.zeros((0, m))
    D = np.zeros((m - 2, m))
    i = np.arange(m - 2)
    D[i, i], D[i, i + 1], D[i, i + 2] = 1.0, -2.0, 1.0
    return D


def fit_radial(pairs, shape, center=None, *, bins=None, smooth=0.0, method=None,
               statistics=None):
    """Fit a radially symmetric kernel ``k = f(r)`` with a piecewise-linear profile ``f``.

    Parameters
    ----------
    pairs : list of PreparedPair
        Image pairs from :func:`kernelfit.design.prepare_pair`, one kernel shared by all.
    shape : int or (kh, kw)
        Kernel shape the pairs were prepared with.
    center : (int, int), optional
        The pixel at radius 0; default: the convolution centre of the pairs.
    bins : (m,) array_like, optional
        Knot radii in pixels (strictly increasing, ≥ 0).  Default :func:`radial_knots`:
        every pixel radius up to 3 px, then spacing ``max(1, 0.2·r)`` px out to the
        largest full ring, then one segment to the farthest pixel.  Pixels inside the
        first knot take its value, pixels beyond the last are 0.
    smooth : float, default 0
        Weight of the penalty ``smooth·‖D₂θ‖²`` added to the *mean* squared residual
        ``‖Xk − b‖²/n`` (``D₂``: second differences of consecutive knot values), so the
        same value means the same on any image size; units: ``b``² per (kernel value)².
    method : {None, 'statistics', 'fft'}
        ``None``: ``BᵀGB`` from the sufficient statistics when ``kh·kw ≤ 4096``, else one
        FFT convolution of each pair's image per knot (any kernel size).
    statistics : SufficientStatistics, optional
        Sufficient statistics of exactly these pairs, when already computed (e.g. by a free
        fit); they are reused instead of computed (implies the statistics path).

    Returns
    -------
    StructuredFit
        ``params = {'radii': knots, 'profile': θ}``; ``stderr = {'profile', 'kernel'}``
        from ``σ̂²·(BᵀXᵀXB)⁻¹`` (with ``smooth``, the sandwich ``A⁻¹BᵀXᵀXBA⁻¹``).

    Raises
    ------
    ValueError, TypeError
        For invalid ``pairs``, ``shape``, ``center``, ``bins``, ``smooth`` or ``method``.

    Warns
    -----
    RankDeficientWarning
        When some knot values are not determined (e.g. no pixel between two knots); then
        ``converged`` is False and the message names ``bins``.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.core.forward import convolve
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((40, 40))
    >>> truth = radial_kernel([0, 1, 2, 3], [1.0, 0.6, 0.2, 0.0], (7, 7))
    >>> pair = prepare_pair(a, convolve(a, truth), (7, 7), boundary="fill")
    >>> fit = fit_radial([pair], (7, 7), bins=[0, 1, 2, 3])
    >>> np.round(fit.params["profile"], 8).tolist()
    [1.0, 0.6, 0.2, 0.0]
    """
    started = time.perf_counter()
    data = PairData(pairs, shape, center, method, statistics)
    smooth = check_real(smooth, "smooth", low=0.0)
    knots = (radial_knots(data.shape, data.center) if bins is None
             else _check_knots(bins, "bins"))
    B = radial_basis(data.shape, data.center, knots)
    R, z, rho2 = data.square_root(B)
    t_design = time.perf_counter()
    n, m = data.n_used, len(knots)
    penalty = np.sqrt(smooth * n) * second_differences(m) if smooth > 0 else None
    solution = solve_square_root(R, z, rho2, penalty)
    theta = solution.theta
    kernel = np.asarray(B @ theta).reshape(data.shape)
    rss = data.rss(kernel)
    noise_std = noise_level(rss, n, solution.dof)
    converged, message = True, ""
    if solution.cov_unscaled is None or not np.isfinite(noise_std):
        if solution.cov_unscaled is None:
            converged = False
            message = (f"the profile is not determined at every knot (rank {solution.rank} "
                       f"of {m}): some knots have no kernel pixel near them or the images "
                       "cannot tell them apart; use fewer or wider-spaced bins, or smooth > 0")
            warnings.warn(message, RankDeficientWarning, stacklevel=user_stacklevel())
        else:
            message = (f"only {n} pixels for {solution.dof:.0f} parameters: no noise level "
                       "or standard errors")
        cov = None
        stderr = {"profile": np.full(m, np.nan), "kernel": np.full(data.shape, np.nan)}
    else:
        cov = noise_std**2 * solution.cov_unscaled
        pixel_var = np.asarray(B.multiply(B @ cov).sum(axis=1)).ravel()
        stderr = {"profile": np.sqrt(np.clip(np.diag(cov), 0, None)),
                  "kernel": np.sqrt(np.clip(pixel_var, 0, None)).reshape(data.shape)}
    return StructuredFit(
        model="radial", kernel=kernel, params={"radii": knots, "profile": theta},
        stderr=stderr, cov=cov, rss=rss, n_used=n, noise_std=noise_std, dof=solution.dof,
        converged=converged, message=message, shape=data.shape, center=data.center,
        method=data.method,
        info={"param_order": ["profile"], "rank": solution.rank, "smooth": smooth,
              "seconds": {"design": t_design - started,
                          "total": time.perf_counter() - started}},
    )


def _check_knots(knots, name):
    try:
        arr = np.asarray(knots, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D sequence of radii in pixels") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of radii, got shape "
                         f"{arr.shape}")
    if not np.all(np.isfinite(arr)) or arr[0] < 0 or np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name}={arr.tolist()} must be finite, non-negative and strictly "
                         "increasing")
    return arr
