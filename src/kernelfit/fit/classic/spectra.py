"""The spectra the Fourier and Wiener ratios divide: every pair on one FFT grid, edges treated.

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
   not only 'wrap'.

Several pairs share one grid (the largest used rectangle, zero-padded), so that their
spectra can be summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.sparse.linalg

from ...core.design import PreparedPair
from ...core.forward import ExtendedSpectrum

EDGES = ("auto", "window", "periodic", "none")
# Kernels up to this many coefficients get the p×p window fit and covariance of the Fourier
# method (one eigendecomposition) and the covariance of the Wiener ratio; larger ones are
# cropped from the ratio.
MAX_DENSE = 31 * 31


@dataclass
class Spectra:
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


def under_b(pair: PreparedPair) -> np.ndarray:
    """The part ``A`` of the extended image with ``b_used[i] = Σ_j k[j]·A[i + c − j]``."""
    (kh, kw), (cy, cx) = pair.geometry.kernel_shape, pair.geometry.center
    M, N = pair.b_used.shape
    return pair.extended[kh - 1 - cy:kh - 1 - cy + M, kw - 1 - cx:kw - 1 - cx + N]


def is_periodic(pair: PreparedPair) -> bool:
    """True when ``b = A ⊛ k`` is exactly circular on ``A``'s grid."""
    g = pair.geometry
    return g.boundary == "wrap" and g.output_size == "same" and pair.use is None


def resolve_edges(pairs, edges) -> str:
    if edges not in EDGES:
        raise ValueError(f"edges={edges!r} must be one of {EDGES}")
    if edges == "auto":
        return "none" if all(is_periodic(p) for p in pairs) else "window"
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


def default_taper(pairs, shape) -> float:
    smallest = min(min(p.b_used.shape) for p in pairs)
    return float(max(1, min(max(4 * max(shape), 16), smallest // 4)))


def taper_window(pair: PreparedPair, length: float) -> np.ndarray:
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


def build_spectra(pairs, shape, edges, taper) -> Spectra:
    kh, kw = shape
    if edges == "window":
        length = default_taper(pairs, shape) if taper is None else float(taper)
        if not length > 0:
            raise ValueError(f"taper={taper!r} must be a positive number of pixels")
        M = max(p.b_used.shape[0] for p in pairs)
        N = max(p.b_used.shape[1] for p in pairs)
        grid = (scipy.fft.next_fast_len(M + kh - 1, real=True),
                scipy.fft.next_fast_len(N + kw - 1, real=True))
        windows = [taper_window(p, length) for p in pairs]
        transforms = [(lambda u, w=w: u * w) for w in windows]
        norm2 = np.array([np.sum(w * w) for w in windows])
    else:
        grid = pairs[0].b_used.shape
        transforms = [periodic_component if edges == "periodic" else (lambda u: u)] * len(pairs)
        norm2 = np.array([float(np.prod(grid))] * len(pairs))
    a_hat = [scipy.fft.rfft2(t(under_b(p)), grid) for p, t in zip(pairs, transforms)]
    b_hat = [scipy.fft.rfft2(t(p.b_used), grid) for p, t in zip(pairs, transforms)]
    weight = np.full(grid[1] // 2 + 1, 2.0)
    weight[0] = 1.0
    if grid[1] % 2 == 0:
        weight[-1] = 1.0
    convolvers = [ExtendedSpectrum(p.extended, shape) for p in pairs]
    return Spectra(grid, edges, transforms, a_hat, b_hat, norm2, convolvers, weight[None, :])


def place(kernel, grid, center) -> np.ndarray:
    """The kernel on the FFT grid with its centre at the origin (index ``j − center``)."""
    out = np.zeros(grid)
    rows, cols = _lags(kernel.shape, grid, center)
    out[np.ix_(rows, cols)] = kernel
    return out


def extract(full, shape, center) -> np.ndarray:
    rows, cols = _lags(shape, full.shape, center)
    return full[np.ix_(rows, cols)]


def _lags(shape, grid, center):
    return ((np.arange(shape[0]) - center[0]) % grid[0],
            (np.arange(shape[1]) - center[1]) % grid[1])


def toeplitz_block(g, shape) -> np.ndarray:
    """``G[j, j'] = g[(j − j') mod grid]`` for kernel indices ``j, j'`` (C order)."""
    jy, jx = np.indices(shape)
    jy, jx = jy.ravel(), jx.ravel()
    return g[(jy[:, None] - jy[None, :]) % g.shape[0], (jx[:, None] - jx[None, :]) % g.shape[1]]


def needs_correction(pairs, edges, edge_correction) -> bool:
    """The edge correction changes nothing only for circular data used as they are."""
    return bool(edge_correction) and not (edges == "none" and all(map(is_periodic, pairs)))


def edge_errors(spec: Spectra, pairs, kernel, center) -> list:
    """``rfft2(T(X k)) − Â·K̂`` per pair: what the edge treatment changes."""
    k_hat = scipy.fft.rfft2(place(kernel, spec.grid, center))
    out = []
    for pair, t, ah, conv in zip(pairs, spec.transforms, spec.a_hat, spec.convolvers):
        predicted = conv.convolve_valid(kernel)
        if pair.use is not None:
            predicted = np.where(pair.use, predicted, 0.0)
        out.append(scipy.fft.rfft2(t(predicted), spec.grid) - ah * k_hat)
    return out


def corrected_solve(spec, pairs, solve, shape, center, *, correct, maxiter, tol):
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
        return x + solve(edge_errors(spec, pairs, x.reshape(shape), center)).ravel()

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
