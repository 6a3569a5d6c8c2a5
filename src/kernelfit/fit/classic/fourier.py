"""The Fourier ratio ``B̂/Â`` (:func:`fit_fourier`), with edge treatment, noise threshold and window fit.

Convolution is a product of spectra only for *periodic* images.  The naive
``irfft2(rfft2(b)/rfft2(a))`` treats the photo as wrapping around, so the jump between
opposite edges pollutes every coefficient (seed 001's "cross-shaped artefact"), and it
divides by Fourier coefficients of ``a`` that are buried in noise.  Steps 1–3, the edge
treatment and its correction, are in :mod:`~kernelfit.fit.classic.spectra`; then:

4. Division only where ``|Â|`` is well above the noise.  The ratio's noise at a frequency is
   ``σ²·v`` with ``v = Σ|Â|²Σw²/(Σ|Â|²)²``.  ``threshold='auto'`` divides the frequencies of
   smallest ``v``, as many as minimise the trace of the kernel's predicted covariance (a
   frequency is worth dividing while it adds less variance than it averages away; ``σ``
   cancels, so no noise estimate is needed).  A number keeps the frequencies where
   ``σ·√v <= threshold·Σ|k|`` (``Σ|k|`` bounds ``|K̂|``; ``σ`` is ``noise_std`` or the
   residual level of a least-squares pass on the same spectra).
5. Support: the kernel window is fitted to the divided ratios by least squares over the
   frequencies, ``min Σ_f∈T |K̂(f) − R(f)|²`` with ``k`` zero outside its window (a ``p × p``
   system whose matrix is the inverse FFT of the trusted-frequency indicator).  When every
   frequency is divided this is exactly "invert and crop"; otherwise the dropped frequencies
   are filled in by the window constraint instead of being set to zero.  (Kernels over
   :data:`MAX_DENSE` coefficients are cropped.)

Assumptions: ``b = a ⊛ k`` (+ noise) with the boundary rule given to ``prepare_pair``; the
noise white for the threshold and the standard errors.  No background, no constraints.

Several pairs: the ratio is ``Σ conj(Â_i)·B̂_i / Σ|Â_i|²`` (the H1 transfer-function
estimate), on a grid common to all pairs.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.fft

from ...core.design import PreparedPair
from ..free import free_kernel_fit
from ..result import KernelFit, ResidualImages
from .noise import noise_std_of, quantisation_floor
from .spectra import (
    MAX_DENSE,
    Spectra,
    build_spectra,
    corrected_solve,
    default_taper,
    extract,
    needs_correction,
    resolve_edges,
    toeplitz_block,
)

# Kernels up to this many coefficients get the automatic frequency selection (about 30
# eigendecompositions); larger ones divide every frequency where Â ≠ 0.
MAX_SELECT = 21 * 21


class _WindowFit:
    """``min Σ_f W·|K̂ − R|²`` over kernels zero outside the window, for fixed weights ``W``.

    The normal matrix is the Toeplitz block of ``irfft2(W)``; it is factored once (``eigh``,
    eigenvalues below ``1e-10`` of the largest dropped) and reused for every right-hand side
    (the edge correction solves many).  Called with ``W·R``.  Kernels beyond
    :data:`MAX_DENSE` coefficients are cropped instead (``k`` = the window of
    ``irfft2(W·R)``), which is the same thing when ``W ≡ 1``.
    """

    def __init__(self, spec: Spectra, weights, shape, center):
        self.spec, self.shape, self.center = spec, shape, center
        p = shape[0] * shape[1]
        self.pinv, self.rank, self.cond = None, None, None
        if p <= MAX_DENSE:
            G = toeplitz_block(scipy.fft.irfft2(weights, spec.grid), shape)
            values, vectors = np.linalg.eigh(G)
            top = max(values[-1], np.finfo(float).tiny)
            keep = values > 1e-10 * top
            self.pinv = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
            self.rank = int(keep.sum())
            self.cond = float(top / values[keep][0]) if keep.any() else float("inf")

    def __call__(self, weighted_ratio):
        rhs = extract(scipy.fft.irfft2(weighted_ratio, self.spec.grid), self.shape,
                       self.center)
        return rhs if self.pinv is None else (self.pinv @ rhs.ravel()).reshape(self.shape)


def _choose_frequencies(spec: Spectra, power, noise_power, shape):
    """The frequencies to divide: the best-determined ones, as many as minimise the kernel's
    predicted variance.

    A frequency's ratio has noise variance ``∝ v = Σ|Â|²Σw²/(Σ|Â|²)²``; keeping the ``m``
    frequencies of smallest ``v``, the window fit's covariance is ``G⁺HG⁺`` (``G`` from the
    kept set, ``H`` from ``v`` on it; unit noise).  Its trace is computed for ~30 values of
    ``m`` (log-spaced fractions of the grid) and the smallest wins: dividing a frequency only
    pays while it adds less variance than it averages away.  Kernels beyond
    :data:`MAX_SELECT` coefficients divide every frequency with ``|Â| > 1e-12·max|Â|``.
    """
    p = shape[0] * shape[1]
    n_grid = float(np.prod(spec.grid))
    positive = _nonzero(power)
    v = np.where(positive, noise_power / np.where(positive, power, 1.0) ** 2, np.inf)
    order = np.argsort(v, axis=None)
    weights = np.broadcast_to(spec.weight, v.shape).ravel()[order]
    sorted_v = v.ravel()[order]
    counts = np.cumsum(weights)
    finite = int(np.count_nonzero(np.isfinite(sorted_v)))
    if finite == 0:
        return np.zeros(v.shape, bool), {"fractions": [], "scores": [], "fraction": 0.0}
    if p > MAX_SELECT:
        return positive, {"criterion": f"none: every frequency with |Â| > 1e-12·max|Â| (the "
                                       f"selection stops at {MAX_SELECT} coefficients)",
                          "fraction": float(np.sum(spec.weight * positive) / n_grid)}
    smallest = min(1.0, max(2.0 * p / n_grid, 1e-4))
    fractions = np.unique(np.geomspace(smallest, counts[finite - 1] / n_grid, 30))
    scores, masks = [], []
    for fraction in fractions:
        m = min(int(np.searchsorted(counts, fraction * n_grid)) + 1, finite)
        trusted = np.zeros(v.size, bool)
        trusted[order[:m]] = True
        trusted = trusted.reshape(v.shape)
        G = toeplitz_block(scipy.fft.irfft2(trusted.astype(float), spec.grid), shape)
        H = toeplitz_block(scipy.fft.irfft2(np.where(trusted, v, 0.0), spec.grid), shape)
        values, vectors = np.linalg.eigh(G)
        if values[0] <= 1e-10 * values[-1]:
            scores.append(np.inf)
        else:
            root = vectors / values
            scores.append(float(np.trace(root.T @ H @ root)) / n_grid)
        masks.append(trusted)
    best = int(np.argmin(scores))
    return masks[best], {"criterion": "trace of the predicted kernel covariance (unit noise)",
                         "fractions": fractions, "scores": np.array(scores),
                         "fraction": float(fractions[best])}


def _nonzero(power) -> np.ndarray:
    """Frequencies where ``|Â|`` is above float64 rounding of the largest."""
    return power > 1e-24 * float(power.max()) if power.size and power.max() > 0 \
        else np.zeros(power.shape, bool)


def fit_fourier(pairs: list[PreparedPair], shape, *, single, noise_std=None, edges="auto",
                taper=None, threshold="auto", edge_correction=True, maxiter=300,
                tol=1e-12) -> KernelFit:
    """The Fourier ratio ``B̂/Â`` with edge treatment, noise threshold and window fit.

    Parameters
    ----------
    pairs : list of PreparedPair
    shape : (kh, kw)
    single : bool
        One pair given (the residual is one array).
    noise_std : float, optional
        Noise of ``b`` (units of ``b``) for a numeric ``threshold``; default: estimated from
        the residual of a least-squares pass on the same spectra.
    edges : {'auto', 'window', 'periodic', 'none'}
        See the module docstring; ``'auto'`` is ``'none'`` for exactly circular data
        (``boundary='wrap'``, ``b`` shaped like ``a``, no mask), else ``'window'``.
    taper : float, optional
        Taper length in pixels for ``edges='window'``; default ``4·max(shape)`` (at least 16,
        at most a quarter of the image).
    threshold : 'auto' or float, default 'auto'
        Which frequencies are divided.  ``'auto'``: the best-determined ones (largest
        ``|Â|`` relative to the noise gain), as many as minimise the predicted variance of the
        kernel (see :func:`_choose_frequencies`; ``info['threshold_selection']``).  A number:
        those where the ratio's noise is at most ``threshold·Σ|k|``.  ``0``: every frequency
        with ``Â ≠ 0`` (the seed's plain ratio).
    edge_correction : bool, default True
        Remove what the edge treatment changes (exact on noise-free data), by GMRES.
    maxiter, tol :
        Most GMRES products and its relative residual target.

    Returns
    -------
    KernelFit
        ``method='fourier'``; ``info`` holds ``edges``, ``taper``, ``grid``,
        ``frequencies_divided`` (fraction of the grid), ``edge_products``,
        ``edge_residuals``, ``rank`` and ``cond`` of the window fit.  ``stderr``/``cov``
        propagate white noise of level ``fit.noise_std`` through the ratio (taper
        correlations and the edge correction ignored: roughly right, not calibrated).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((32, 32)), rng.random((3, 3))
    >>> pair = prepare_pair(a, kf.convolve(a, k, boundary="wrap"), 3, boundary="wrap")
    >>> fit = fit_fourier([pair], (3, 3), single=True)
    >>> bool(np.allclose(fit.kernel, k, atol=1e-10))
    True
    """
    started = time.perf_counter()
    shape = tuple(shape)
    if not (threshold == "auto" or (isinstance(threshold, (int, float, np.number))
                                    and np.isfinite(threshold) and threshold >= 0)):
        raise ValueError(f"threshold={threshold!r} must be 'auto' or a number >= 0")
    if threshold != "auto" and threshold == 0:
        noise_std = 0.0 if noise_std is None else noise_std   # no noise level is needed
    edges = resolve_edges(pairs, edges)
    spec = build_spectra(pairs, shape, edges, taper)
    center = pairs[0].geometry.center
    power, noise_power = spec.power(), spec.noise_power()
    p = shape[0] * shape[1]
    n_used = sum(pair.n_used for pair in pairs)
    loop = dict(correct=needs_correction(pairs, edges, edge_correction),
                maxiter=int(maxiter), tol=float(tol))

    nonzero = _nonzero(power)
    sigma = None if noise_std is None else float(noise_std)
    selection = None
    if threshold == "auto":
        trusted, selection = _choose_frequencies(spec, power, noise_power, shape)
    elif threshold == 0:
        trusted = nonzero
    else:
        # A least-squares pass on the same spectra (weights |Â|²; the plain ratio for kernels
        # too large for the window fit) gives the kernel's scale and, unless given, σ.
        if p <= MAX_DENSE:
            prefit_solve = _WindowFit(spec, power, shape, center)
            prefit, *_ = corrected_solve(spec, pairs, lambda b_hats: prefit_solve(
                spec.cross(b_hats)), shape, center, **loop)
        else:
            safe_all = np.where(nonzero, power, 1.0)
            prefit, *_ = corrected_solve(spec, pairs, lambda b_hats: extract(
                scipy.fft.irfft2(np.where(nonzero, spec.cross(b_hats) / safe_all, 0.0),
                                 spec.grid), shape, center), shape, center, **loop)
        if sigma is None:
            rss = sum(np.nansum(pair.residual(prefit) ** 2) for pair in pairs)
            sigma = float(np.sqrt(max(rss / max(n_used - p, 1), quantisation_floor(pairs))))
        # Divide where σ·√(Σ|Â|²Σw²)/Σ|Â|² <= threshold·Σ|k|.
        scale = threshold * max(np.abs(prefit).sum(), np.finfo(float).tiny)
        trusted = power * scale >= sigma * np.sqrt(noise_power)
    trusted = trusted & nonzero
    safe = np.where(trusted, power, 1.0)
    window_fit = _WindowFit(spec, trusted.astype(np.float64), shape, center)

    def solve(b_hats):
        return window_fit(np.where(trusted, spec.cross(b_hats) / safe, 0.0))

    kernel, products, residual_history, settled, note = corrected_solve(
        spec, pairs, solve, shape, center, **loop)
    n_grid = float(np.prod(spec.grid))
    fraction = float(np.sum(spec.weight * trusted) / n_grid)
    problems = []
    if window_fit.rank is not None and window_fit.rank < p:
        problems.append(f"the frequencies divided ({fraction:.1%} of them) determine only "
                        f"{window_fit.rank} of the kernel's {p} coefficients: use a larger "
                        "or more textured image, method='wiener', or least squares with reg=")
    if n_used < p:   # the ratio still returns a kernel, but the data cannot pick it
        problems.append(f"b has {n_used} used pixel(s) for the kernel's {p} coefficients: the "
                        "data cannot determine it; use a larger b or a smaller shape")
    notes = []
    if window_fit.pinv is None and not trusted[nonzero].all():
        notes.append(f"kernels over {MAX_DENSE} coefficients are cropped from the ratio, "
                     "with the frequencies not divided set to 0 (biased)")
    converged = settled and not problems
    messages = ([note] if note else []) + problems + notes
    # Noise of the ratio: var R = σ²·Σ|Â|²Σw²/(Σ|Â|²)² per frequency; k = G⁺·rhs, and
    # cov(rhs) is the Toeplitz block of irfft2(var R)/N (white noise, edge correction ignored).
    residuals = ResidualImages(pairs, None, kernel, single=single)
    noise = noise_std_of(residuals, n_used, p)
    variance = np.where(trusted, noise_power / safe ** 2, 0.0)
    lag_cov = scipy.fft.irfft2(variance, spec.grid) / n_grid
    cov = None
    if window_fit.pinv is not None:
        cov = noise ** 2 * window_fit.pinv @ toeplitz_block(lag_cov, shape) @ window_fit.pinv
        stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    else:
        stderr = np.full(shape, noise * np.sqrt(max(lag_cov[0, 0], 0.0)))
    info = {"n_pairs": len(pairs), "edges": edges, "grid": list(spec.grid),
            "taper": default_taper(pairs, shape) if edges == "window" and taper is None
            else taper, "threshold": threshold, "frequencies_divided": fraction,
            "noise_std_threshold": sigma, "edge_products": products,
            "edge_residuals": residual_history, "rank": window_fit.rank,
            "cond": window_fit.cond,
            "seconds": {"total": time.perf_counter() - started}}
    if selection is not None:
        info["threshold_selection"] = selection
    return free_kernel_fit(pairs, kernel, method="fourier", residuals=residuals, noise=noise,
                stderr=stderr, cov=cov, lam=None, n_used=n_used, converged=bool(converged),
                message="; ".join(messages), info=info)
