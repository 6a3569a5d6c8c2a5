"""The seed answers as methods: the Fourier ratio, the Wiener ratio and Richardson–Lucy.

Seed 001's answers estimate the kernel by dividing spectra (``B̂/Â``), by a regularised ratio,
or by Richardson–Lucy iterations with the image as the "PSF".  Each is implemented here as
well as it can be, so that users can compare them with least squares (:func:`kf.estimate
<kernelfit.estimate>`, ``method=None``) on their own data.  All three take the prepared pairs
of :func:`kernelfit.design.prepare_pair` and return a normal :class:`~kernelfit.KernelFit`
(``model='free'``, ``method`` = the method's name, its own numbers in ``fit.info``).

**The Fourier ratio** (:func:`fit_fourier`).  Convolution is a product of spectra only for
*periodic* images.  The naive ``irfft2(rfft2(b)/rfft2(a))`` treats the photo as wrapping
around, so the jump between opposite edges pollutes every coefficient (seed 001's "cross-shaped
artefact"), and it divides by Fourier coefficients of ``a`` that are buried in noise.  Here:

1. Only the used rectangle of ``b`` is modelled, together with the part ``A`` of the extended
   image that lies under it with the kernel's centre (``b[i] = Σ_j k[j]·A[i + center − j]``,
   kernelfit's convention; ``A`` is ``a`` itself for an output like ``a``).
2. Edges (``edges=``): ``'window'`` multiplies ``A`` and ``b`` by the same smooth taper
   (``sin²`` over ``taper`` pixels from the border and from every unusable pixel, so masks and
   NaN are handled) and zero-pads to a fast length ``>= size + kernel − 1``, so that the FFT's
   product is a linear convolution; ``'periodic'`` uses Moisan's periodic-plus-smooth
   decomposition (J. Math. Imaging Vis. 39, 2011) of both images instead; ``'none'`` uses the
   images as they are (exact for ``boundary='wrap'`` with ``b`` shaped like ``a``, which
   ``'auto'`` detects).
3. Edge correction (``edge_correction=True``): what the taper (or the periodic assumption)
   changes is computable from the data and the current kernel,
   ``E(k) = T(X k) − T(A) ⊛ k`` with ``X k`` the true, 'valid' forward model, and the ratio
   is taken of ``T(b) − E(k)``.  That is linear in ``k``: the ``p × p`` system
   ``k + ratio(E(k)) = ratio(T(b))`` is solved by GMRES (matrix-free, typically 5–30
   products).  On noise-free data the solution is the true kernel for every boundary rule,
   not only 'wrap' (seed 001: 2.6e-3 → 1.5e-3 on 8-bit data).
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

**The Wiener ratio** (:func:`fit_wiener`): ``K̂ = Σ conj(Â_i)B̂_i / (Σ|Â_i|² + ε)`` on the same
tapered, zero-padded, edge-corrected spectra, cropped to the window.  ``ε='auto'`` minimises
generalised cross-validation of the *cropped* kernel (see :class:`_WienerGCV`; the ratio is
diagonal in the Fourier domain, so each trial costs one inverse FFT and ``O(p²)``), on the
data with the edge error removed; ε and the edge correction alternate until ε settles.
``fit.lam`` is ``ε`` (units of ``|Â|²``: ``a²`` times the number of pixels in the grid).

**Richardson–Lucy** (:func:`fit_richardson_lucy`): ``k ← k · Xᵀ(u·b / Xk) / Xᵀu`` (``u`` the
used pixels), the EM algorithm for Poisson data, which keeps ``k ≥ 0`` and needs ``a, b ≥ 0``.
Plain RL crawls (thousands of updates on a photo), so it is accelerated by SQUAREM (Varadhan &
Roland, Scand. J. Stat. 35, 2008): each cycle is three RL updates and an extrapolation (no
coefficient cut below 1 % of its value in one cycle), discarded when the Poisson objective
does not decrease.  The count is set by a stopping rule in statistical
units: every few cycles the objective still to be gained is estimated by the Newton decrement
(on the coefficients not heading to zero, plus ``Σ k_j·g_j`` for those that are), and RL stops
when it is below ``tol`` × half the number of free coefficients × the dispersion (Pearson
``χ²/(n − p)``, or ``noise_std²·mean(1/Xk)`` when the noise is known): the kernel is then
within about ``√tol`` of its statistical error from the Poisson maximum-likelihood kernel
(default ``tol=0.1``: about 5 % added to that error).  On noise-free data it stops at the
objective's float64 rounding.
(The discrepancy principle is not used: with far more pixels than coefficients it stops long
before the kernel has converged.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.optimize
import scipy.sparse.linalg

from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum
from .free import free_kernel_fit
from .result import KernelFit, ResidualImages
from ..stats.compute import statistics

METHODS = ("fourier", "wiener", "richardson-lucy")
EDGES = ("auto", "window", "periodic", "none")
# Options each method takes (passed through kf.estimate's **model_options).
OPTIONS = {
    "fourier": ("edges", "taper", "threshold", "edge_correction", "maxiter", "tol"),
    "wiener": ("eps", "edges", "taper", "edge_correction", "maxiter", "tol"),
    "richardson-lucy": ("tol", "maxiter", "accelerate"),
}
# Kernels up to this many coefficients get the p×p window fit and covariance of the Fourier
# method (one eigendecomposition); larger ones are cropped from the ratio.
MAX_DENSE = 31 * 31
# Kernels up to this many coefficients get the automatic frequency selection (about 30
# eigendecompositions); larger ones divide every frequency where Â ≠ 0.
MAX_SELECT = 21 * 21


# --------------------------------------------------------------------------- dispatch

def check_options(method, *, model="free", loss="l2", reg=None, nonneg=False, normalize=None,
                  background=None, options=None) -> None:
    """Raise ``ValueError``/``TypeError`` for options ``method`` cannot honour.

    ``richardson-lucy`` accepts ``nonneg=True`` (its kernels are non-negative anyway).

    Examples
    --------
    >>> check_options("wiener", reg="ridge")
    Traceback (most recent call last):
    ...
    ValueError: reg='ridge' is not available with method='wiener'; ...
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    given = {"model": (model, "free"), "loss": (loss, "l2"), "reg": (reg, None),
             "normalize": (normalize, None), "background": (background, None)}
    if method != "richardson-lucy":
        given["nonneg"] = (bool(nonneg), False)
    for name, (value, default) in given.items():
        if value != default:
            hint = ("use least squares (method=None), which takes it" if name != "model"
                    else "the classic methods estimate free kernels")
            raise ValueError(f"{name}={value!r} is not available with method={method!r}; "
                             f"{hint}")
    unknown = sorted(set(options or {}) - set(OPTIONS[method]))
    if unknown:
        raise TypeError(f"method={method!r} does not take {unknown}; it takes "
                        f"{sorted(OPTIONS[method])}")


def fit_classic(method, pairs, shape, *, single, noise_std=None, **options) -> KernelFit:
    """Run one of :data:`METHODS` on prepared pairs (what ``kf.estimate(method=...)`` calls)."""
    if method == "fourier":
        return fit_fourier(pairs, shape, single=single, noise_std=noise_std, **options)
    if method == "wiener":
        return fit_wiener(pairs, shape, single=single, **options)
    if method == "richardson-lucy":
        return fit_richardson_lucy(pairs, shape, single=single, noise_std=noise_std,
                                   **options)
    raise ValueError(f"method={method!r} is not one of {METHODS}")


# --------------------------------------------------------------------------- spectra

@dataclass
class _Spectra:
    """Every pair on one FFT grid, after the edge treatment."""

    grid: tuple[int, int]
    edges: str
    transforms: list          # per pair: image on the used rectangle -> treated image
    a_hat: list               # per pair: rfft2 of the treated A
    b_hat: list               # per pair: rfft2 of the treated b
    norm2: np.ndarray         # per pair: Σ w² (noise gain of the treatment)
    convolvers: list          # per pair: ExtendedSpectrum (the 'valid' forward model)
    weight: np.ndarray        # rfft half-grid multiplicity (1 or 2) for full-spectrum sums

    def cross(self, b_hats=None):
        """``Σ conj(Â_i)·B̂_i``."""
        b_hats = self.b_hat if b_hats is None else b_hats
        return sum(np.conj(ah) * bh for ah, bh in zip(self.a_hat, b_hats))

    def power(self):
        """``Σ |Â_i|²``."""
        return sum(np.abs(ah) ** 2 for ah in self.a_hat)

    def noise_power(self):
        """``Σ |Â_i|²·Σw_i²``: the variance of ``Σ conj(Â_i)B̂_i`` per unit noise variance."""
        return sum(np.abs(ah) ** 2 * n2 for ah, n2 in zip(self.a_hat, self.norm2))


def _under_b(pair: PreparedPair) -> np.ndarray:
    """The part ``A`` of the extended image with ``b_used[i] = Σ_j k[j]·A[i + c − j]``."""
    (kh, kw), (cy, cx) = pair.geometry.kernel_shape, pair.geometry.center
    M, N = pair.b_used.shape
    return pair.extended[kh - 1 - cy:kh - 1 - cy + M, kw - 1 - cx:kw - 1 - cx + N]


def _is_periodic(pair: PreparedPair) -> bool:
    """True when ``b = A ⊛ k`` is exactly circular on ``A``'s grid."""
    g = pair.geometry
    return g.boundary == "wrap" and g.output_size == "same" and pair.use is None


def _resolve_edges(pairs, edges) -> str:
    if edges not in EDGES:
        raise ValueError(f"edges={edges!r} must be one of {EDGES}")
    if edges == "auto":
        return "none" if all(_is_periodic(p) for p in pairs) else "window"
    if edges in ("periodic", "none"):
        masked = [i for i, p in enumerate(pairs) if p.use is not None]
        if masked:
            raise ValueError(
                f"edges={edges!r} cannot leave out pixels, but pair {masked[0]} has masked, "
                "NaN or saturated pixels; use edges='window' (or 'auto'), which tapers "
                "around them")
        if len({p.b_used.shape for p in pairs}) > 1:
            raise ValueError(f"edges={edges!r} needs every pair's used rectangle to have one "
                             "size; use edges='window', which zero-pads them to a common grid")
    return edges


def _default_taper(pairs, shape) -> float:
    smallest = min(min(p.b_used.shape) for p in pairs)
    return float(max(1, min(max(4 * max(shape), 16), smallest // 4)))


def _taper_window(pair: PreparedPair, length: float) -> np.ndarray:
    """``sin²`` ramp over ``length`` pixels from the border and from every unused pixel."""
    M, N = pair.b_used.shape
    ok = np.zeros((M + 2, N + 2), bool)
    ok[1:-1, 1:-1] = True if pair.use is None else pair.use
    distance = scipy.ndimage.distance_transform_edt(ok)[1:-1, 1:-1]
    ramp = np.clip((distance - 0.5) / length, 0.0, 1.0)
    return np.sin(0.5 * np.pi * ramp) ** 2


def periodic_component(u) -> np.ndarray:
    """Moisan's periodic component of an image (periodic-plus-smooth decomposition).

    ``u = p + s`` with ``s`` smooth and ``p`` free of the jump between opposite edges, so
    ``rfft2(p)`` has no cross-shaped artefact.

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.add.outer(np.arange(8.0), np.arange(6.0))   # jumps at the wrap-around
    >>> p = periodic_component(ramp)
    >>> bool(abs(p[0] - p[-1]).max() < abs(ramp[0] - ramp[-1]).max())
    True
    """
    u = np.asarray(u, dtype=np.float64)
    M, N = u.shape
    v = np.zeros_like(u)
    v[0, :] += u[-1, :] - u[0, :]
    v[-1, :] += u[0, :] - u[-1, :]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    q = np.arange(M)[:, None]
    r = np.arange(N // 2 + 1)[None, :]
    denominator = 2 * np.cos(2 * np.pi * q / M) + 2 * np.cos(2 * np.pi * r / N) - 4
    denominator[0, 0] = 1.0
    s_hat = scipy.fft.rfft2(v) / denominator
    s_hat[0, 0] = 0.0
    return u - scipy.fft.irfft2(s_hat, (M, N))


def _spectra(pairs, shape, edges, taper) -> _Spectra:
    kh, kw = shape
    if edges == "window":
        length = _default_taper(pairs, shape) if taper is None else float(taper)
        if not length > 0:
            raise ValueError(f"taper={taper!r} must be a positive number of pixels")
        M = max(p.b_used.shape[0] for p in pairs)
        N = max(p.b_used.shape[1] for p in pairs)
        grid = (scipy.fft.next_fast_len(M + kh - 1, real=True),
                scipy.fft.next_fast_len(N + kw - 1, real=True))
        windows = [_taper_window(p, length) for p in pairs]
        transforms = [(lambda u, w=w: u * w) for w in windows]
        norm2 = np.array([np.sum(w * w) for w in windows])
    else:
        grid = pairs[0].b_used.shape
        transforms = [periodic_component if edges == "periodic" else (lambda u: u)] * len(pairs)
        norm2 = np.array([float(np.prod(grid))] * len(pairs))
    a_hat = [scipy.fft.rfft2(t(_under_b(p)), grid) for p, t in zip(pairs, transforms)]
    b_hat = [scipy.fft.rfft2(t(p.b_used), grid) for p, t in zip(pairs, transforms)]
    weight = np.full(grid[1] // 2 + 1, 2.0)
    weight[0] = 1.0
    if grid[1] % 2 == 0:
        weight[-1] = 1.0
    convolvers = [ExtendedSpectrum(p.extended, shape) for p in pairs]
    return _Spectra(grid, edges, transforms, a_hat, b_hat, norm2, convolvers, weight[None, :])


def _place(kernel, grid, center) -> np.ndarray:
    """The kernel on the FFT grid with its centre at the origin (index ``j − center``)."""
    out = np.zeros(grid)
    rows, cols = _lags(kernel.shape, grid, center)
    out[np.ix_(rows, cols)] = kernel
    return out


def _extract(full, shape, center) -> np.ndarray:
    rows, cols = _lags(shape, full.shape, center)
    return full[np.ix_(rows, cols)]


def _lags(shape, grid, center):
    return ((np.arange(shape[0]) - center[0]) % grid[0],
            (np.arange(shape[1]) - center[1]) % grid[1])


def _needs_correction(pairs, edges, edge_correction) -> bool:
    """The edge correction changes nothing only for circular data used as they are."""
    return bool(edge_correction) and not (edges == "none" and all(map(_is_periodic, pairs)))


def _edge_errors(spec: _Spectra, pairs, kernel, center) -> list:
    """``rfft2(T(X k)) − Â·K̂`` per pair: what the edge treatment changes."""
    k_hat = scipy.fft.rfft2(_place(kernel, spec.grid, center))
    out = []
    for pair, t, ah, conv in zip(pairs, spec.transforms, spec.a_hat, spec.convolvers):
        predicted = conv.convolve_valid(kernel)
        if pair.use is not None:
            predicted = np.where(pair.use, predicted, 0.0)
        out.append(scipy.fft.rfft2(t(predicted), spec.grid) - ah * k_hat)
    return out


def _corrected_solve(spec, pairs, solve, shape, center, *, correct, maxiter, tol):
    """Solve ``k = solve(b̂ − E(k))`` for a ``solve`` linear in the spectra.

    That is the ``p × p`` linear system ``(I + solve∘E) k = solve(b̂)``, solved by GMRES
    (matrix-free: each product is one 'valid' convolution and one FFT per pair); plain
    fixed-point passes would need many passes, or diverge, when the taper is short compared
    with the kernel.  Returns ``(kernel, products, residuals, converged, note)``.
    """
    first = solve(spec.b_hat)
    if not correct:
        return first, 0, [], True, ""
    p = first.size
    products = [0]

    def matvec(x):
        products[0] += 1
        return x + solve(_edge_errors(spec, pairs, x.reshape(shape), center)).ravel()

    operator = scipy.sparse.linalg.LinearOperator((p, p), matvec=matvec, dtype=np.float64)
    history = []
    restart = min(p, 100)
    solution, status = scipy.sparse.linalg.gmres(
        operator, first.ravel(), x0=first.ravel(), rtol=tol, atol=0.0, restart=restart,
        maxiter=max(1, -(-int(maxiter) // restart)), callback=history.append,
        callback_type="pr_norm")
    kernel = solution.reshape(shape)
    # GMRES's own residual is preconditioned and restarted: check the true one.
    rhs_norm = max(np.linalg.norm(first), np.finfo(float).tiny)
    residual = float(np.linalg.norm(matvec(solution) - first.ravel()) / rhs_norm)
    history = [float(h) for h in history] + [residual]
    if status == 0 or residual <= 1e3 * tol:
        return kernel, products[0], history, True, ""
    return kernel, products[0], history, False, (
        f"the edge correction did not converge in {products[0]} GMRES steps (relative "
        f"residual {residual:.2g}): raise maxiter= or taper=, or use least squares "
        "(method=None)")


# --------------------------------------------------------------------------- fourier

class _WindowFit:
    """``min Σ_f W·|K̂ − R|²`` over kernels zero outside the window, for fixed weights ``W``.

    The normal matrix is the Toeplitz block of ``irfft2(W)``; it is factored once (``eigh``,
    eigenvalues below ``1e-10`` of the largest dropped) and reused for every right-hand side
    (the edge correction solves many).  Called with ``W·R``.  Kernels beyond
    :data:`MAX_DENSE` coefficients are cropped instead (``k`` = the window of
    ``irfft2(W·R)``), which is the same thing when ``W ≡ 1``.
    """

    def __init__(self, spec: _Spectra, weights, shape, center):
        self.spec, self.shape, self.center = spec, shape, center
        p = shape[0] * shape[1]
        self.pinv, self.rank, self.cond = None, None, None
        if p <= MAX_DENSE:
            G = _toeplitz_block(scipy.fft.irfft2(weights, spec.grid), shape)
            values, vectors = np.linalg.eigh(G)
            top = max(values[-1], np.finfo(float).tiny)
            keep = values > 1e-10 * top
            self.pinv = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
            self.rank = int(keep.sum())
            self.cond = float(top / values[keep][0]) if keep.any() else float("inf")

    def __call__(self, weighted_ratio):
        rhs = _extract(scipy.fft.irfft2(weighted_ratio, self.spec.grid), self.shape,
                       self.center)
        return rhs if self.pinv is None else (self.pinv @ rhs.ravel()).reshape(self.shape)


def _choose_frequencies(spec: _Spectra, power, noise_power, shape):
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
        G = _toeplitz_block(scipy.fft.irfft2(trusted.astype(float), spec.grid), shape)
        H = _toeplitz_block(scipy.fft.irfft2(np.where(trusted, v, 0.0), spec.grid), shape)
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


def _toeplitz_block(g, shape) -> np.ndarray:
    """``G[j, j'] = g[(j − j') mod grid]`` for kernel indices ``j, j'`` (C order)."""
    jy, jx = np.indices(shape)
    jy, jx = jy.ravel(), jx.ravel()
    return g[(jy[:, None] - jy[None, :]) % g.shape[0], (jx[:, None] - jx[None, :]) % g.shape[1]]


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
    edges = _resolve_edges(pairs, edges)
    spec = _spectra(pairs, shape, edges, taper)
    center = pairs[0].geometry.center
    power, noise_power = spec.power(), spec.noise_power()
    p = shape[0] * shape[1]
    n_used = sum(pair.n_used for pair in pairs)
    loop = dict(correct=_needs_correction(pairs, edges, edge_correction),
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
            prefit, *_ = _corrected_solve(spec, pairs, lambda b_hats: prefit_solve(
                spec.cross(b_hats)), shape, center, **loop)
        else:
            safe_all = np.where(nonzero, power, 1.0)
            prefit, *_ = _corrected_solve(spec, pairs, lambda b_hats: _extract(
                scipy.fft.irfft2(np.where(nonzero, spec.cross(b_hats) / safe_all, 0.0),
                                 spec.grid), shape, center), shape, center, **loop)
        if sigma is None:
            rss = sum(np.nansum(pair.residual(prefit) ** 2) for pair in pairs)
            sigma = float(np.sqrt(max(rss / max(n_used - p, 1), _quantisation_floor(pairs))))
        # Divide where σ·√(Σ|Â|²Σw²)/Σ|Â|² <= threshold·Σ|k|.
        scale = threshold * max(np.abs(prefit).sum(), np.finfo(float).tiny)
        trusted = power * scale >= sigma * np.sqrt(noise_power)
    trusted = trusted & nonzero
    safe = np.where(trusted, power, 1.0)
    window_fit = _WindowFit(spec, trusted.astype(np.float64), shape, center)

    def solve(b_hats):
        return window_fit(np.where(trusted, spec.cross(b_hats) / safe, 0.0))

    kernel, products, residual_history, settled, note = _corrected_solve(
        spec, pairs, solve, shape, center, **loop)
    n_grid = float(np.prod(spec.grid))
    fraction = float(np.sum(spec.weight * trusted) / n_grid)
    problems = []
    if window_fit.rank is not None and window_fit.rank < p:
        problems.append(f"the frequencies divided ({fraction:.1%} of them) determine only "
                        f"{window_fit.rank} of the kernel's {p} coefficients: use a larger "
                        "or more textured image, method='wiener', or least squares with reg=")
    notes = []
    if window_fit.pinv is None and not trusted[nonzero].all():
        notes.append(f"kernels over {MAX_DENSE} coefficients are cropped from the ratio, "
                     "with the frequencies not divided set to 0 (biased)")
    converged = settled and not problems
    messages = ([note] if note else []) + problems + notes
    # Noise of the ratio: var R = σ²·Σ|Â|²Σw²/(Σ|Â|²)² per frequency; k = G⁺·rhs, and
    # cov(rhs) is the Toeplitz block of irfft2(var R)/N (white noise, edge correction ignored).
    residuals = ResidualImages(pairs, None, kernel, single=single)
    noise = _noise_std(residuals, n_used, p)
    variance = np.where(trusted, noise_power / safe ** 2, 0.0)
    lag_cov = scipy.fft.irfft2(variance, spec.grid) / n_grid
    cov = None
    if window_fit.pinv is not None:
        cov = noise ** 2 * window_fit.pinv @ _toeplitz_block(lag_cov, shape) @ window_fit.pinv
        stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    else:
        stderr = np.full(shape, noise * np.sqrt(max(lag_cov[0, 0], 0.0)))
    info = {"n_pairs": len(pairs), "edges": edges, "grid": list(spec.grid),
            "taper": _default_taper(pairs, shape) if edges == "window" and taper is None
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


# --------------------------------------------------------------------------- wiener

class _WienerGCV:
    """Generalised cross-validation of the *cropped* Wiener kernel, as a function of ``ε``.

    The kernel returned is ``k(ε)``: the window of ``irfft2(C/(S + ε))`` (``C = Σ conj(Â)B̂``,
    ``S = Σ|Â|²``).  Its fit to the treated data is ``RSS = Q/N − 2kᵀc + kᵀT k`` (``Q = Σ|B̂|²``,
    ``c`` the window of ``irfft2(C)``, ``T`` the Toeplitz matrix of ``irfft2(S)``), and its
    influence matrix has trace ``p·mean(S/(S + ε))`` (a window of a circulant operator).
    ``GCV = n·RSS/(n − tr)²`` with ``n = Σ_i Σw_i²``.  Criticising the whole-grid ratio
    instead would judge ``N`` free Fourier coefficients, not the ``p`` returned, and picks an
    ``ε`` far too large.
    """

    def __init__(self, spec: _Spectra, b_hats, shape, center):
        self.spec, self.shape, self.center = spec, shape, center
        self.power = spec.power()
        self.cross = spec.cross(b_hats)
        n_grid = float(np.prod(spec.grid))
        self.n_grid = n_grid
        energy = sum(np.abs(bh) ** 2 for bh in b_hats)
        self.q = float(np.sum(spec.weight * energy)) / n_grid
        self.c = _extract(scipy.fft.irfft2(self.cross, spec.grid), shape, center).ravel()
        self.T = _toeplitz_block(scipy.fft.irfft2(self.power, spec.grid), shape)
        self.n = float(np.sum(spec.norm2))
        self.p = shape[0] * shape[1]

    def kernel(self, eps):
        denominator = self.power + eps
        ratio = np.where(denominator > 0, self.cross / np.where(denominator > 0, denominator,
                                                                 1.0), 0.0)
        return _extract(scipy.fft.irfft2(ratio, self.spec.grid), self.shape, self.center)

    def score(self, eps):
        k = self.kernel(eps).ravel()
        rss = max(self.q - 2.0 * k @ self.c + k @ (self.T @ k), 0.0)
        denominator = self.power + eps
        h = np.where(denominator > 0, self.power / np.where(denominator > 0, denominator, 1.0),
                     0.0)
        dof = self.p * float(np.sum(self.spec.weight * h)) / self.n_grid
        return self.n * rss / max(self.n - dof, 1e-300) ** 2, dof


def _choose_eps(spec: _Spectra, b_hats, shape, center, previous=None):
    """``ε`` minimising :class:`_WienerGCV`: a log grid (or, given ``previous``, a bracket of
    one decade around it), then a bounded refinement."""
    top = float(spec.power().max())
    if top == 0:
        return 0.0, {"eps": [], "gcv": [], "edf": [], "message": "a is zero: ε is moot"}
    gcv = _WienerGCV(spec, b_hats, shape, center)
    if previous is None or previous <= 0:
        grid = top * np.logspace(-14, 2, 49)
    else:
        grid = previous * np.logspace(-1, 1, 5)
    scores, dofs = zip(*(gcv.score(e) for e in grid))
    scores = np.array(scores)
    best = int(np.argmin(scores))
    message = ""
    eps = float(grid[best])
    if best in (0, len(grid) - 1):
        if previous is None:
            message = (f"GCV is smallest at the end of the searched range (ε = {eps:.3g}); "
                       "pass eps= to override")
    else:
        lo, hi = np.log(grid[best - 1]), np.log(grid[best + 1])
        result = scipy.optimize.minimize_scalar(lambda t: gcv.score(np.exp(t))[0],
                                                bounds=(lo, hi), method="bounded",
                                                options={"xatol": 1e-3})
        if result.fun <= scores[best]:
            eps = float(np.exp(result.x))
    return eps, {"eps": grid, "gcv": scores, "edf": np.array(dofs), "message": message}


def fit_wiener(pairs: list[PreparedPair], shape, *, single, eps="auto", edges="auto",
               taper=None, edge_correction=True, maxiter=300, tol=1e-12) -> KernelFit:
    """The Wiener ratio ``Σ conj(Â)B̂ / (Σ|Â|² + ε)`` cropped to the kernel window.

    Parameters
    ----------
    pairs, shape, single :
        As :func:`fit_fourier`.
    eps : float or 'auto', default 'auto'
        The regularisation ``ε`` (units of ``|Â|²``: ``a²`` times the number of grid
        pixels); ``'auto'`` minimises generalised cross-validation of the cropped kernel.
        Reported in ``fit.lam`` and ``fit.info['eps']``.
    edges, taper, edge_correction, maxiter, tol :
        As :func:`fit_fourier`.

    Returns
    -------
    KernelFit
        ``method='wiener'``, ``lam = ε``; ``info['eps_selection']`` holds the GCV curve.
        ``stderr`` is the noise part only (the ratio is biased towards 0 by ``ε``).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((64, 64)), rng.random((3, 3))
    >>> b = kf.convolve(a, k, boundary="wrap") + rng.normal(0, 1e-3, a.shape)
    >>> fit = fit_wiener([prepare_pair(a, b, 3, boundary="wrap")], (3, 3), single=True)
    >>> bool(np.abs(fit.kernel - k).max() < 0.01)
    True
    """
    started = time.perf_counter()
    shape = tuple(shape)
    if not (eps == "auto" or (isinstance(eps, (int, float, np.number))
                              and not isinstance(eps, bool) and np.isfinite(eps) and eps >= 0)):
        raise ValueError(f"eps={eps!r} must be 'auto' or a number >= 0")
    edges = _resolve_edges(pairs, edges)
    spec = _spectra(pairs, shape, edges, taper)
    center = pairs[0].geometry.center
    power = spec.power()
    correct = _needs_correction(pairs, edges, edge_correction)
    chosen = {"eps": None if eps == "auto" else float(eps), "rounds": 0}

    def solver(value):
        denominator = power + value
        inverse = np.where(denominator > 0, 1.0 / np.where(denominator > 0, denominator, 1), 0)
        return lambda b_hats: _extract(scipy.fft.irfft2(spec.cross(b_hats) * inverse,
                                                        spec.grid), shape, center)

    # ε is chosen on the data with the current edge error removed, then the corrected
    # system is solved at that ε; a few rounds until ε settles.
    b_hats, products = spec.b_hat, 0
    for _ in range(8):
        previous = chosen["eps"]
        if eps == "auto":
            chosen["eps"], selection = _choose_eps(spec, b_hats, shape, center,
                                                   previous=previous)
            chosen.setdefault("selection", selection)
        chosen["rounds"] += 1
        kernel, used, changes, settled, note = _corrected_solve(
            spec, pairs, solver(chosen["eps"]), shape, center, correct=correct,
            maxiter=int(maxiter), tol=float(tol))
        products += used
        if eps != "auto" or not correct or (
                previous is not None and abs(np.log(max(chosen["eps"], 1e-300)
                                                    / max(previous, 1e-300))) < 0.01):
            break
        errors = _edge_errors(spec, pairs, kernel, center)
        b_hats = [bh - e for bh, e in zip(spec.b_hat, errors)]
    passes = products
    p = shape[0] * shape[1]
    n_used = sum(pair.n_used for pair in pairs)
    residuals = ResidualImages(pairs, None, kernel, single=single)
    noise = _noise_std(residuals, n_used, p)
    messages = [note] if note else []
    selection = chosen.get("selection")
    if selection and selection["message"]:
        messages.append(selection["message"])
    denominator = power + chosen["eps"]
    variance = np.where(denominator > 0, spec.noise_power() / np.where(denominator > 0,
                                                                       denominator, 1) ** 2, 0)
    cov = stderr = None
    if p <= MAX_DENSE:
        cov = noise ** 2 * _toeplitz_block(scipy.fft.irfft2(variance, spec.grid), shape) / \
            np.prod(spec.grid)
        stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    info = {"n_pairs": len(pairs), "edges": edges, "grid": list(spec.grid),
            "taper": _default_taper(pairs, shape) if edges == "window" and taper is None
            else taper, "eps": chosen["eps"], "eps_rounds": chosen["rounds"],
            "edge_products": passes, "edge_residuals": changes,
            "seconds": {"total": time.perf_counter() - started}}
    if selection:
        info["eps_selection"] = {"criterion": "gcv", "eps": selection["eps"],
                                 "scores": selection["gcv"], "edf": selection["edf"],
                                 "message": selection["message"]}
    return free_kernel_fit(pairs, kernel, method="wiener", residuals=residuals, noise=noise,
                stderr=stderr, cov=cov, lam=chosen["eps"], n_used=n_used,
                converged=bool(settled), message="; ".join(messages), info=info)


# --------------------------------------------------------------------------- richardson-lucy

class _Pair:
    """One pair for Richardson–Lucy: forward ``X k``, adjoint ``Xᵀ r`` on the used pixels."""

    def __init__(self, pair: PreparedPair, shape):
        self.pair = pair
        self.shape = shape
        self.use = None if pair.use is None else pair.use.astype(np.float64)
        self.b = pair.b_used
        self.spectrum = ExtendedSpectrum(pair.extended, shape)
        ones = np.ones(self.b.shape) if self.use is None else self.use
        self.denominator = self.adjoint(ones)

    def forward(self, kernel):
        return self.spectrum.convolve_valid(kernel)

    def adjoint(self, r):
        return self.spectrum.correlate_valid(r)[::-1, ::-1]

    def masked(self, x):
        return x if self.use is None else x * self.use

    def adjoint_squared(self, r):
        """``Σ_i r[i]·X_ij²`` (the diagonal of ``Xᵀ diag(r) X``)."""
        if not hasattr(self, "_squared"):
            self._squared = ExtendedSpectrum(self.pair.extended ** 2, self.shape)
        return self._squared.correlate_valid(r)[::-1, ::-1]


def _check_nonnegative(pairs) -> None:
    for i, pair in enumerate(pairs):
        label = "" if len(pairs) == 1 else f"[{i}]"
        b = pair.b_used if pair.use is None else pair.b_used[pair.use]
        lowest_a, lowest_b = float(pair.extended.min()), float(b.min())
        for name, lowest in ((f"a{label}", lowest_a), (f"b{label}", lowest_b)):
            if lowest < 0:
                raise ValueError(
                    f"method='richardson-lucy' needs non-negative images, but {name} has "
                    f"values down to {lowest:.6g}; add an offset to both images (with "
                    "background=0 in least squares), or use least squares with nonneg=True")


def fit_richardson_lucy(pairs: list[PreparedPair], shape, *, single, noise_std=None,
                        tol=0.1, maxiter=3000, accelerate=True) -> KernelFit:
    """Richardson–Lucy kernel updates, accelerated, stopped in statistical units.

    Parameters
    ----------
    pairs, shape, single :
        As :func:`fit_fourier`.  Masks and NaN are handled (unused pixels get weight 0).
    noise_std : float, optional
        Known noise of ``b``; sets the dispersion of the stopping rule (default: Pearson
        ``χ²/(n − p)`` of the current fit).
    tol : float, default 0.1
        Stop when the Poisson objective still to be gained is below ``tol`` × its statistical
        resolution (``dispersion × free coefficients / 2``): the kernel is then within about
        ``√tol`` of its statistical error from where RL converges, which adds about
        ``tol/2`` (5 %) to that error.
    maxiter : int, default 3000
        Most RL updates; reaching it leaves ``fit.converged`` False.
    accelerate : bool, default True
        SQUAREM extrapolation (False: plain RL, one update per step).

    Returns
    -------
    KernelFit
        ``method='richardson-lucy'``, a non-negative kernel; ``info['iterations']`` (RL
        updates), ``['cycles']``, ``['history']`` (objective per check),
        ``['stopping']`` (remaining gain, resolution, dispersion, rule).

    Raises
    ------
    ValueError
        When ``a`` or ``b`` (used pixels) has negative values.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((64, 64)), np.array([[0.1, 0.2], [0.6, 0.1]])
    >>> pair = prepare_pair(a, kf.convolve(a, k, boundary="valid"), 2, boundary="valid")
    >>> fit = fit_richardson_lucy([pair], (2, 2), single=True)
    >>> bool(np.abs(fit.kernel - k).max() < 1e-3), fit.converged
    (True, True)
    """
    started = time.perf_counter()
    shape = tuple(shape)
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a number > 0")
    if int(maxiter) < 1:
        raise ValueError(f"maxiter={maxiter!r} must be at least 1")
    _check_nonnegative(pairs)
    p = shape[0] * shape[1]
    n_used = sum(pair.n_used for pair in pairs)
    data = [_Pair(pair, shape) for pair in pairs]
    denominator = sum(d.denominator for d in data)
    flux = sum(float(np.sum(d.masked(d.b))) for d in data)
    info = {"n_pairs": len(pairs), "accelerated": bool(accelerate)}
    if flux == 0 or not np.any(denominator > 0):
        kernel = np.zeros(shape)
        message = ("b is zero on every used pixel: the kernel is 0" if flux == 0 else
                   "a is zero under every used pixel: the kernel is not determined")
        info.update(iterations=0, cycles=0)
        residuals = ResidualImages(pairs, None, kernel, single=single)
        return free_kernel_fit(pairs, kernel, method="richardson-lucy", residuals=residuals,
                    noise=_noise_std(residuals, n_used, p), stderr=None, cov=None, lam=None,
                    n_used=n_used, converged=flux == 0, message=message, info=info)
    undetermined = denominator <= 0
    floor_var = _quantisation_floor(pairs)
    b_scale = max(float(np.max(np.abs(d.masked(d.b)))) for d in data)
    safe_den = np.where(undetermined, 1.0, denominator)
    tiny = np.finfo(float).tiny

    def predictions(kernel):
        return [d.forward(kernel) for d in data]

    def objective(preds):
        # Σ u·(Xk − b·log Xk), the negative Poisson log-likelihood up to a constant.
        total = 0.0
        for d, pred in zip(data, preds):
            pred = np.maximum(pred, tiny)
            total += float(np.sum(d.masked(pred - d.b * np.log(pred))))
        return total

    def update(kernel, preds):
        numerator = sum(d.adjoint(d.masked(d.b / np.maximum(pred, tiny)))
                        for d, pred in zip(data, preds))
        return np.where(undetermined, 0.0, kernel * numerator / safe_den)

    kernel = np.where(undetermined, 0.0, flux / float(np.sum(denominator[~undetermined])))
    preds = predictions(kernel)
    value = objective(preds)
    iterations = cycles = 0
    history = [value]
    checks = []
    converged, message, last_check, fisher = False, "", None, None
    while iterations < maxiter:
        if accelerate and iterations + 3 <= maxiter:
            k1 = update(kernel, preds)
            k2 = update(k1, predictions(k1))
            r, v = k1 - kernel, k2 - 2 * k1 + kernel
            norm_v = np.linalg.norm(v)
            alpha = -np.linalg.norm(r) / norm_v if norm_v > 0 else -1.0
            alpha = min(alpha, -1.0)
            # Shorten the step while it would cut a coefficient by more than 10× (RL cannot
            # grow a coefficient back quickly from near zero).
            # Each coefficient keeps at least 1% of its value: RL grows a coefficient back
            # from near zero only slowly, so an extrapolation must not throw it there.
            trial = np.maximum(kernel - 2 * alpha * r + alpha ** 2 * v, 0.01 * kernel)
            candidate = update(trial, predictions(trial))
            candidate_preds = predictions(candidate)
            candidate_value = objective(candidate_preds)
            if not candidate_value <= value:
                candidate = k2
                candidate_preds = predictions(k2)
                candidate_value = objective(candidate_preds)
            iterations += 3
        else:
            candidate = update(kernel, preds)
            candidate_preds = predictions(candidate)
            candidate_value = objective(candidate_preds)
            iterations += 1
        kernel, preds, value = candidate, candidate_preds, candidate_value
        cycles += 1
        history.append(value)
        if last_check is None or iterations - last_check >= 15:
            last_check = iterations
            refresh = (len(checks) & (len(checks) - 1)) == 0   # Fisher at checks 0,1,2,4,8..
            check = _remaining_gain(data, kernel, preds, p, noise_std, undetermined,
                                    fisher if not refresh else None, floor_var=floor_var,
                                    scale=b_scale)
            fisher = check.pop("fisher")
            check["iteration"] = iterations
            checks.append(check)
            # On (nearly) noise-free data the resolution vanishes: stop at the objective's
            # float64 rounding instead.
            check["rounding"] = 1e3 * np.finfo(float).eps * abs(value)
            if check["remaining"] <= max(tol * check["resolution"], check["rounding"]):
                converged = True
                break
    if not converged:
        last = checks[-1] if checks else {}
        message = (f"Richardson–Lucy stopped at maxiter={maxiter} updates with an estimated "
                   f"{last.get('remaining', float('nan')):.3g} of objective still to gain "
                   f"(resolution {last.get('resolution', float('nan')):.3g}); raise maxiter= "
                   "or use least squares with nonneg=True")
    if undetermined.any():
        message = "; ".join(filter(None, [message, f"{int(undetermined.sum())} coefficients "
                                          "see no pixel of a and are set to 0"]))
    residuals = ResidualImages(pairs, None, kernel, single=single)
    info.update(iterations=iterations, cycles=cycles, history=history, checks=checks,
                stopping={"rule": "remaining gain (Newton decrement) below tol × statistical "
                                  "resolution, or below the objective's rounding",
                          "tol": tol, **(checks[-1] if checks else {})},
                objective=value, seconds={"total": time.perf_counter() - started})
    return free_kernel_fit(pairs, kernel, method="richardson-lucy", residuals=residuals,
                noise=_noise_std(residuals, n_used, p), stderr=None, cov=None, lam=None,
                n_used=n_used, converged=converged and not undetermined.any(),
                message=message, info=info)


def _remaining_gain(data, kernel, preds, p, noise_std, undetermined, fisher=None, *,
                    floor_var=0.0, scale=1.0) -> dict:
    """The Poisson objective still to gain, and its statistical resolution.

    Gradient ``g = Xᵀu − Xᵀ(u·b/Xk)``; Fisher matrix ``H = Xᵀ diag(u/Xk) X`` (exact weighted
    statistics; ``fisher`` reuses an earlier one, as it changes slowly).  Coefficients whose
    Newton step would cross zero while ``g > 0`` are taken
    to their bound (gain ``≈ k_j·g_j``); the rest contribute ``½ gᵀH⁻¹g``.
    """
    tiny = np.finfo(float).tiny
    gradient = sum(d.denominator - d.adjoint(d.masked(d.b / np.maximum(pred, tiny)))
                   for d, pred in zip(data, preds)).ravel()
    pearson, n, inverse_mean = 0.0, 0, 0.0
    for d, pred in zip(data, preds):
        safe = np.maximum(pred, tiny)
        used = np.ones(d.b.shape, bool) if d.use is None else d.use > 0
        positive = used & (pred > 0)
        pearson += float(np.sum(((d.b - pred) ** 2 / safe)[positive]))
        inverse_mean += float(np.sum((1.0 / safe)[positive]))
        n += int(positive.sum())
    k = kernel.ravel()
    free = ~undetermined.ravel()
    hessian = fisher
    if hessian is None and p <= 1024:
        hessian = sum(statistics(d.pair.extended, d.b, d.shape, method="im2col",
                                 weights=d.masked(1.0 / np.maximum(pred, tiny))
                                 * (pred > 0)).gram
                      for d, pred in zip(data, preds))
    bound_gain = 0.0
    if hessian is not None:
        for _ in range(p):
            idx = np.flatnonzero(free)
            if idx.size == 0:
                break
            step = -np.linalg.lstsq(hessian[np.ix_(idx, idx)], gradient[idx], rcond=1e-12)[0]
            crossing = idx[(k[idx] + step < 0) & (gradient[idx] > 0)]
            if crossing.size == 0:
                break
            free[crossing] = False
        idx = np.flatnonzero(free)
        newton = 0.5 * float(-gradient[idx] @ step) if idx.size else 0.0
        bound = ~free & ~undetermined.ravel()
        bound_gain = float(np.sum(np.clip(k[bound] * gradient[bound], 0, None)))
        remaining = max(newton, 0.0) + bound_gain
    else:
        # Too many coefficients for the Fisher matrix: its diagonal (which understates the
        # gain still to come along correlated directions).
        diagonal = np.maximum(sum(d.adjoint_squared(d.masked(1.0 / np.maximum(pr, tiny)))
                                  for d, pr in zip(data, preds)).ravel(), tiny)
        remaining = 0.5 * float(np.sum(gradient[free] ** 2 / diagonal[free]))
    n_free = int(free.sum())
    # The noise cannot be below the rounding of integer b, nor below float64's precision.
    floor = max(floor_var, (1e-12 * scale) ** 2) * inverse_mean / max(n, 1)
    if noise_std is not None:
        dispersion = max(float(noise_std) ** 2 * inverse_mean / max(n, 1), floor)
    else:
        dispersion = max(pearson / max(n - n_free, 1), floor)
    return {"remaining": float(remaining), "resolution": 0.5 * dispersion * max(n_free, 1),
            "dispersion": float(dispersion), "n_free": n_free,
            "hessian": "exact" if hessian is not None else "diagonal", "fisher": hessian}


# --------------------------------------------------------------------------- common

def _quantisation_floor(pairs) -> float:
    n = sum(pair.n_used for pair in pairs)
    return float(sum(pair.n_used * pair.quantisation_var for pair in pairs) / n)


def _noise_std(residuals: ResidualImages, n_used, p) -> float:
    if n_used <= p:
        return float("nan")
    return float(np.sqrt(residuals.sum_of_squares() / (n_used - p)))
