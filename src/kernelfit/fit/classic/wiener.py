"""The Wiener ratio (:func:`fit_wiener`), its ``ε`` chosen by cross-validation of the cropped kernel.

``K̂ = Σ conj(Â_i)B̂_i / (Σ|Â_i|² + ε)`` on the same tapered, zero-padded, edge-corrected
spectra as the Fourier ratio (:mod:`~kernelfit.fit.classic.spectra`), cropped to the window.
``ε='auto'`` minimises generalised cross-validation of the *cropped* kernel (see :class:`_WienerGCV`; the ratio is
diagonal in the Fourier domain, so each trial costs one inverse FFT and ``O(p²)``), on the
data with the edge error removed; ε and the edge correction alternate until ε settles.
``fit.lam`` is ``ε`` (units of ``|Â|²``: ``a²`` times the number of pixels in the grid).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.fft
import scipy.optimize

from ...core.design import PreparedPair
from ..free import free_kernel_fit
from ..result import KernelFit, ResidualImages
from .noise import noise_std_of
from .spectra import (
    MAX_DENSE,
    Spectra,
    build_spectra,
    corrected_solve,
    default_taper,
    edge_errors,
    extract,
    needs_correction,
    resolve_edges,
    toeplitz_block,
)


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

    def __init__(self, spec: Spectra, b_hats, shape, center):
        self.spec, self.shape, self.center = spec, shape, center
        self.power = spec.power()
        self.cross = spec.cross(b_hats)
        n_grid = float(np.prod(spec.grid))
        self.n_grid = n_grid
        energy = sum(np.abs(bh) ** 2 for bh in b_hats)
        self.q = float(np.sum(spec.weight * energy)) / n_grid
        self.c = extract(scipy.fft.irfft2(self.cross, spec.grid), shape, center).ravel()
        self.T = toeplitz_block(scipy.fft.irfft2(self.power, spec.grid), shape)
        self.n = float(np.sum(spec.norm2))
        self.p = shape[0] * shape[1]

    def kernel(self, eps):
        denominator = self.power + eps
        ratio = np.where(denominator > 0, self.cross / np.where(denominator > 0, denominator,
                                                                 1.0), 0.0)
        return extract(scipy.fft.irfft2(ratio, self.spec.grid), self.shape, self.center)

    def score(self, eps):
        k = self.kernel(eps).ravel()
        rss = max(self.q - 2.0 * k @ self.c + k @ (self.T @ k), 0.0)
        denominator = self.power + eps
        h = np.where(denominator > 0, self.power / np.where(denominator > 0, denominator, 1.0),
                     0.0)
        dof = self.p * float(np.sum(self.spec.weight * h)) / self.n_grid
        if self.n - dof <= 0:
            return np.inf, dof   # as many fitted degrees of freedom as data: no criticism
        return self.n * rss / (self.n - dof) ** 2, dof


def _choose_eps(spec: Spectra, b_hats, shape, center, previous=None):
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
    n_used, p = sum(pair.n_used for pair in pairs), shape[0] * shape[1]
    if eps == "auto" and n_used <= p:
        raise ValueError(
            f"method='wiener' with eps='auto' chooses ε by cross-validation, which needs more "
            f"used pixels of b than kernel coefficients: b has {n_used} for a "
            f"{shape[0]}x{shape[1]} kernel ({p}); pass eps= (a number >= 0), use a larger "
            "b or a smaller shape")
    edges = resolve_edges(pairs, edges)
    spec = build_spectra(pairs, shape, edges, taper)
    center = pairs[0].geometry.center
    power = spec.power()
    correct = needs_correction(pairs, edges, edge_correction)
    chosen = {"eps": None if eps == "auto" else float(eps), "rounds": 0}

    def solver(value):
        denominator = power + value
        inverse = np.where(denominator > 0, 1.0 / np.where(denominator > 0, denominator, 1), 0)
        return lambda b_hats: extract(scipy.fft.irfft2(spec.cross(b_hats) * inverse,
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
        kernel, used, changes, settled, note = corrected_solve(
            spec, pairs, solver(chosen["eps"]), shape, center, correct=correct,
            maxiter=int(maxiter), tol=float(tol))
        products += used
        if eps != "auto" or not correct or (
                previous is not None and abs(np.log(max(chosen["eps"], 1e-300)
                                                    / max(previous, 1e-300))) < 0.01):
            break
        errors = edge_errors(spec, pairs, kernel, center)
        b_hats = [bh - e for bh, e in zip(spec.b_hat, errors)]
    passes = products
    residuals = ResidualImages(pairs, None, kernel, single=single)
    noise = noise_std_of(residuals, n_used, p)
    messages = [note] if note else []
    selection = chosen.get("selection")
    if selection and selection["message"]:
        messages.append(selection["message"])
    denominator = power + chosen["eps"]
    variance = np.where(denominator > 0, spec.noise_power() / np.where(denominator > 0,
                                                                       denominator, 1) ** 2, 0)
    cov = stderr = None
    if p <= MAX_DENSE:
        cov = noise ** 2 * toeplitz_block(scipy.fft.irfft2(variance, spec.grid), shape) / \
            np.prod(spec.grid)
        stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    info = {"n_pairs": len(pairs), "edges": edges, "grid": list(spec.grid),
            "taper": default_taper(pairs, shape) if edges == "window" and taper is None
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
