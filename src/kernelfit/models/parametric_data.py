"""The data of a parametric fit: statistics, their whitened square root, and the images.

The L2 fit never touches the pixels after one pass
--------------------------------------------------
For a kernel ``k(θ)`` the squared misfit is

    ‖X k(θ) − b‖² = k(θ)ᵀ G k(θ) − 2 k(θ)ᵀ c + bᵀb,

with ``G = XᵀX``, ``c = Xᵀb`` from :func:`kernelfit.stats.statistics` (they add over image
pairs).  One pass over the pixels makes ``G``; afterwards every evaluation costs ``O(p²)``
(``p = kh·kw``), whatever the image size.

To hand this to a Gauss–Newton / trust-region solver we write it as a sum of squares of ``p``
*whitened residuals*.  With the Cholesky factor ``G = RᵀR`` (``R`` upper triangular) and
``z = R⁻ᵀc``,

    ‖X k − b‖² = ‖R k − z‖² + (bᵀb − ‖z‖²),

so minimising ``‖R k(θ) − z‖²`` is *the same problem* as the image least squares, with a
``p``-vector residual instead of an ``N``-pixel one, and its Jacobian ``R·∂k/∂θ`` gives the
Gauss–Newton matrix ``JᵀGJ`` exactly as the image Jacobian ``X·∂k/∂θ`` would.
:func:`scipy.optimize.least_squares` (trust-region reflective, with bounds) then runs on
it.  When ``G`` is too ill-conditioned for Cholesky, ``R = Λ^½Wᵀ`` from ``G = WΛWᵀ`` (with
rounding-level eigenvalues dropped) plays the same role.

Symmetric kernels with ``boundary='reflect'`` (gaussian_filter's default mode) need even
less: the orthonormal 2-D DCT-II diagonalises that convolution for kernels symmetric in both
axes, so the statistics restricted to such kernels (``QᵀGQ``, ``Qᵀc`` over the kernel's
quadrant) come exactly from two DCTs and two matrix products
(:func:`_reflect_symmetric_statistics`).  Families that declare ``symmetric = True``
(Gaussian, Moffat, disk, box) use this path when the pairs are 'reflect', 'same'-sized and
unmasked, the kernel is odd-sized and centred, and no offset is fitted; the fitted kernel is
checked for the symmetry, with a fall-back to the full statistics.


:class:`_Layout` maps the vector of free parameters (the family's, the offset, the amplitude)
to the kernel and its Jacobian, for every loss.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg

from ..core.conventions import normalize_center
from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum
from .kernel_model import KernelModel
from ..stats.background import background_coefficients, profiled_statistics
from ..stats.compute import choose_method, statistics
from ..stats.gram import SufficientStatistics


class _Data:
    """Statistics of every pair, their whitened square root, and image-space residuals.

    Kernels enter through :meth:`reduce`: the identity, or — on the symmetric 'reflect'
    path — the map from a kernel to its quadrant (see :func:`_reflect_symmetric_statistics`),
    in whose coordinates ``gram``/``rhs`` are expressed.
    """

    def __init__(self, pairs, shape, center, *, needs_images, symmetric, background=None,
                 statistics=True):
        self.shape = shape
        self.quadrant = None          # (cy, cx) when the statistics are in quadrant form
        self.statistics_path = "gram"
        self.terms = None             # BackgroundTerms per pair with background=
        self._background_columns = None
        if isinstance(pairs, SufficientStatistics):
            if needs_images or background is not None:
                what = "a robust loss (l1, huber)" if needs_images else \
                    f"background={background}"
                raise ValueError(f"{what} needs the images: pass PreparedPair objects as "
                                 "pairs, not statistics")
            if tuple(pairs.shape) != shape:
                raise ValueError(f"shape={shape} differs from the statistics' kernel shape "
                                 f"{tuple(pairs.shape)}")
            self.pairs, self.spectra = None, None
            self.center = normalize_center(center, shape)
            gram, rhs, btb, n = pairs.gram, pairs.rhs, pairs.btb, pairs.n_used
            self.n_pixels = int(n)
        else:
            self.pairs = _as_pairs(pairs)
            self.center = _prepared_center(self.pairs, shape, center)
            self.spectra = [None] * len(self.pairs)
            self.n_pixels = sum(pair.n_used for pair in self.pairs)
            if not statistics:
                # Image space only (the parametric L1 window search): no Gram matrix.
                self.statistics_path = "none"
                self.gram = self.rhs = None
                self.btb, self.n_used = float("nan"), self.n_pixels
                return
            if background is not None:
                gram, rhs, btb, n = self._profiled(background)
            elif symmetric and _reflect_symmetric_applies(self.pairs, shape, self.center):
                gram, rhs, btb, n = self._quadrant_statistics()
            else:
                gram, rhs, btb, n = self._statistics(needs_images)
        self.gram, self.rhs, self.btb, self.n_used = gram, rhs, float(btb), int(n)
        self._whiten()

    def _statistics(self, needs_images):
        """The full Gram statistics of every pair, summed (FFT spectra kept for reuse)."""
        total = None
        for i, pair in enumerate(self.pairs):
            weights = None if pair.use is None else pair.use.astype(np.float64)
            method = choose_method(pair.extended.shape, self.shape, weights)
            if method == "fft" or needs_images:
                self.spectra[i] = ExtendedSpectrum(pair.extended, self.shape)
            s = statistics(pair.extended, pair.b_used, self.shape, weights=weights,
                           method=method,
                           spectrum=self.spectra[i] if method == "fft" else None)
            total = s if total is None else total + s
        return total.gram, total.rhs, total.btb, total.n_used

    def _quadrant_statistics(self):
        """The statistics restricted to doubly symmetric kernels, from DCTs."""
        self.quadrant = self.center
        self.statistics_path = "dct-reflect-symmetric"
        parts = [_reflect_symmetric_statistics(pair, self.shape) for pair in self.pairs]
        return (sum(part[0] for part in parts), sum(part[1] for part in parts),
                sum(part[2] for part in parts), sum(pair.n_used for pair in self.pairs))

    def _profiled(self, degree):
        """Statistics with a polynomial background per pair profiled out
        (:mod:`kernelfit.stats.background`); ``n`` counts the background terms off."""
        stats, self.terms, self.spectra = profiled_statistics(self.pairs, self.shape, degree)
        self.statistics_path = "gram-profiled-background"
        return stats.gram, stats.rhs, stats.btb, stats.n_used

    # -- the background (background=) ---------------------------------------------------------

    def background_columns(self):
        """The basis images over the used pixels, ``n × M`` (block diagonal over pairs, one
        block of the pair's ``m`` terms each), in the pixel order of :meth:`residuals`."""
        if self._background_columns is None:
            blocks = []
            for pair, terms in zip(self.pairs, self.terms):
                images = terms.basis.images
                blocks.append(np.stack([t.ravel() if pair.use is None else t[pair.use]
                                        for t in images], axis=1))
            self._background_columns = scipy.linalg.block_diag(*blocks)
        return self._background_columns

    def background_coefficients(self, k):
        """The least-squares background of every pair for the kernel ``k``, concatenated."""
        return np.concatenate([background_coefficients(terms, k) for terms in self.terms])

    def split_background(self, beta):
        """The concatenated coefficients as one array per pair."""
        sizes = np.cumsum([len(terms.basis) for terms in self.terms])[:-1]
        return np.split(np.asarray(beta, dtype=np.float64), sizes)

    def reduce(self, x):
        """Kernels (first axis: ``p``, C order) in the coordinates of ``gram``/``rhs``."""
        if self.quadrant is None:
            return x
        cy, cx = self.quadrant
        kh, kw = self.shape
        rest = x.shape[1:]
        return x.reshape((kh, kw) + rest)[cy:, cx:].reshape(((kh - cy) * (kw - cx),) + rest)

    def expand(self, u):
        """A kernel-shaped array from reduced coordinates (inverse of :meth:`reduce`)."""
        if self.quadrant is None:
            return u.reshape(self.shape)
        cy, cx = self.quadrant
        kh, kw = self.shape
        quarter = u.reshape(kh - cy, kw - cx)
        rows = np.abs(np.arange(kh) - cy)
        cols = np.abs(np.arange(kw) - cx)
        return quarter[np.ix_(rows, cols)]

    def _whiten(self):
        """``R``, ``z``, ``ρ²`` with ``kᵀGk − 2kᵀc + bᵀb = ‖Rk − z‖² + ρ²`` for every ``k``."""
        G, c = self.gram, self.rhs
        p = G.shape[0]
        self.whitening = "cholesky"
        try:
            U = scipy.linalg.cholesky(G, lower=False, check_finite=False)
            d = np.abs(np.diag(U))
            # Cholesky is used while G's condition number (≈ (max d / min d)²) is below 1e12.
            if not d.min() > 1e-6 * d.max():
                raise np.linalg.LinAlgError
            self.R = U
            self.z = scipy.linalg.solve_triangular(U, c, trans="T", check_finite=False)
        except np.linalg.LinAlgError:
            self.whitening = "eigen"
            lam, W = np.linalg.eigh(G)
            keep = lam > 100.0 * p * np.finfo(float).eps * max(lam[-1], 0.0)
            if not keep.any():
                raise ValueError("the images carry no information about the kernel "
                                 "(the Gram matrix is zero): is a constant?") from None
            root = np.sqrt(lam[keep])
            self.R = root[:, None] * W[:, keep].T
            self.z = (W[:, keep].T @ c) / root
            self._eig = (W[:, keep], root)
        self.rho2 = float(self.btb - self.z @ self.z)

    def free_kernel(self):
        """The unconstrained least-squares kernel ``G⁻¹c`` (pseudo-inverse if singular);
        symmetric on the quadrant path."""
        if self.whitening == "cholesky":
            u = scipy.linalg.solve_triangular(self.R, self.z, check_finite=False)
        else:
            W, root = self._eig
            u = W @ (self.z / root)
        return self.expand(u)

    def l2(self, k):
        """``‖Xk − b‖²`` from the statistics (``O(p²)``)."""
        r = self.R @ self.reduce(k) - self.z
        return float(r @ r + self.rho2)

    def rss(self, k):
        """``‖Xk − b‖²``; from the images when the statistics' formula would be mostly
        rounding (a near-perfect fit cancels it down to ~1e-15·bᵀb)."""
        value = self.l2(k)
        if value < 1e-9 * self.btb and self.pairs is not None:
            r = self.residuals(k)
            if self.terms is not None:
                r = r + self.background_columns() @ self.background_coefficients(k)
            return float(r @ r)
        return value

    # -- image space (robust losses) ---------------------------------------------------------

    def _spectrum(self, i):
        if self.spectra[i] is None:
            self.spectra[i] = ExtendedSpectrum(self.pairs[i].extended, self.shape)
        return self.spectra[i]

    def residuals(self, k):
        """``X k − b`` over the used pixels of every pair, one vector."""
        k = np.reshape(k, self.shape)
        parts = []
        for i, pair in enumerate(self.pairs):
            r = self._spectrum(i).convolve_valid(k) - pair.b_used
            parts.append(r.ravel() if pair.use is None else r[pair.use])
        return np.concatenate(parts)

    def columns(self, J):
        """``X·J[:, j]`` over the used pixels, as an ``n × m`` matrix."""
        cols = []
        for i, pair in enumerate(self.pairs):
            spectrum = self._spectrum(i)
            block = []
            for j in range(J.shape[1]):
                col = spectrum.convolve_valid(J[:, j].reshape(self.shape))
                block.append(col.ravel() if pair.use is None else col[pair.use])
            cols.append(np.column_stack(block))
        return np.vstack(cols)


def _prepared_center(pairs, shape, center):
    """The centre the pairs were prepared with, checked against ``shape`` and ``center``."""
    for i, pair in enumerate(pairs):
        if pair.geometry.kernel_shape != shape:
            raise ValueError(f"shape={shape} differs from the kernel shape "
                             f"{pair.geometry.kernel_shape} pairs[{i}] was prepared for")
    prepared_center = pairs[0].geometry.center
    if any(p.geometry.center != prepared_center for p in pairs):
        raise ValueError("the pairs were prepared with different centres")
    chosen = prepared_center if center is None else normalize_center(center, shape)
    if chosen != prepared_center:
        raise ValueError(f"center={center!r} differs from the centre "
                         f"{prepared_center} the pairs were prepared with")
    return chosen


def _as_pairs(pairs):
    if isinstance(pairs, PreparedPair):
        return [pairs]
    if not isinstance(pairs, (list, tuple)) or len(pairs) == 0:
        raise TypeError("pairs must be a PreparedPair, a non-empty list of them (from "
                        "kernelfit.design.prepare_pair) or SufficientStatistics; got "
                        f"{type(pairs).__name__}")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreparedPair):
            raise TypeError(f"pairs[{i}] is a {type(pair).__name__}, not a PreparedPair")
    return list(pairs)


def _reflect_symmetric_applies(pairs, shape, center):
    """Whether the symmetric 'reflect' statistics are exact for these pairs."""
    kh, kw = shape
    if kh % 2 == 0 or kw % 2 == 0 or center != (kh // 2, kw // 2):
        return False
    return all(p.geometry.boundary == "reflect" and p.geometry.output_size == "same"
               and p.use is None for p in pairs)


def _cosine_matrix(n, r):
    """``C[f, j] = (2 − δ_j0)·cos(π f j / n)``: a symmetric kernel's quadrant → its cosine
    transform, for ``f < n``, ``0 ≤ j ≤ r``."""
    f = np.arange(n)[:, None]
    j = np.arange(r + 1)[None, :]
    return np.cos(np.pi * f * j / n) * np.where(j == 0, 1.0, 2.0)


def _reflect_symmetric_statistics(pair, shape):
    """Exact statistics of a kernel symmetric in both axes, for ``boundary='reflect'``.

    The 'reflect' extension of ``a`` (half-sample symmetric, gaussian_filter's default mode)
    repeats with period ``2H × 2W``, and a kernel with ``k[−y, x] = k[y, x] = k[y, −x]``
    keeps that symmetry; so the orthonormal 2-D DCT-II diagonalises the convolution:
    ``DCT(a ⊛ k) = Â·K̂`` with ``K̂ = C_y u C_xᵀ``, where ``u`` is the kernel's quadrant
    (``j ≥ 0`` in both axes) and ``C`` is :func:`_cosine_matrix`.  With Parseval,

        ‖a ⊛ k − b‖² = Σ_f (Â K̂ − B̂)² = uᵀ M u − 2 uᵀ v + bᵀb,

    ``M[(jy,jx), (ly,lx)] = Σ_f Â²·C_y[fy,jy] C_y[fy,ly] C_x[fx,jx] C_x[fx,lx]`` and
    ``v = C_yᵀ (Â B̂) C_x``: the normal statistics restricted to symmetric kernels
    (``QᵀGQ``, ``Qᵀc`` for the quadrant-to-kernel map ``Q``), for two DCTs and two matrix
    products instead of the full ``p × p`` Gram matrix.
    """
    kh, kw = shape
    ry, rx = kh // 2, kw // 2
    H, W = pair.b_used.shape
    a = pair.extended[ry:ry + H, rx:rx + W]          # the original image inside its padding
    A = scipy.fft.dctn(a, type=2, norm="ortho")
    B = scipy.fft.dctn(pair.b_used, type=2, norm="ortho")
    Cy, Cx = _cosine_matrix(H, ry), _cosine_matrix(W, rx)
    qy, qx = ry + 1, rx + 1
    pair_x = (Cx[:, :, None] * Cx[:, None, :]).reshape(W, qx * qx)
    pair_y = (Cy[:, :, None] * Cy[:, None, :]).reshape(H, qy * qy)
    T = (A * A) @ pair_x                                        # [fy, (jx, lx)]
    M = (pair_y.T @ T).reshape(qy, qy, qx, qx).transpose(0, 2, 1, 3).reshape(qy * qx, -1)
    v = (Cy.T @ (A * B) @ Cx).ravel()
    return 0.5 * (M + M.T), v, float(np.sum(pair.b_used * pair.b_used))


# ---------------------------------------------------------------------------------------------
# Which parameters are free, and the kernel as a function of them
# ---------------------------------------------------------------------------------------------

class _Layout:
    """Maps the free-parameter vector θ to the kernel and its Jacobian."""

    def __init__(self, model: KernelModel, shape, center, normalize, fit_offset):
        self.model, self.shape, self.center = model, shape, center
        self.m = len(model.param_names)
        self.fit_offset = fit_offset
        self.normalize = None if normalize is None else float(normalize)
        names = list(model.param_names)
        bounds = list(model.bounds(shape))
        if len(bounds) != self.m:
            raise ValueError(f"model {model.name!r}: bounds() returned {len(bounds)} pairs for "
                             f"{self.m} parameters")
        if fit_offset:
            names += ["dy", "dx"]
            bounds += [(-shape[0] / 2.0, shape[0] / 2.0), (-shape[1] / 2.0, shape[1] / 2.0)]
        if normalize is None:
            names.append("amplitude")
            bounds.append((-np.inf, np.inf))
        self.free = tuple(names)
        self.lower = np.array([lo for lo, _ in bounds], dtype=np.float64)
        self.upper = np.array([hi for _, hi in bounds], dtype=np.float64)

    def split(self, theta):
        params = theta[:self.m]
        offset = (theta[self.m], theta[self.m + 1]) if self.fit_offset else (0.0, 0.0)
        amplitude = theta[-1] if self.normalize is None else self.normalize
        return params, offset, amplitude

    def kernel(self, theta):
        params, offset, amplitude = self.split(theta)
        return amplitude * self.model.unit_kernel(params, self.shape, self.center,
                                                  offset).ravel()

    def kernel_jacobian(self, theta):
        """``k`` (``p``) and ``∂k/∂θ`` (``p × len(free)``)."""
        params, offset, amplitude = self.split(theta)
        unit, d = self.model.unit_kernel_and_jacobian(params, self.shape, self.center, offset)
        columns = list(amplitude * d[:self.m])
        if self.fit_offset:
            columns += [amplitude * d[self.m], amplitude * d[self.m + 1]]
        if self.normalize is None:
            columns.append(unit)
        J = np.stack([c.ravel() for c in columns], axis=1)
        return amplitude * unit.ravel(), J

    def inside(self, theta):
        """``theta`` moved just inside the bounds (the optimisers need a feasible start)."""
        span = np.where(np.isfinite(self.upper - self.lower), self.upper - self.lower, 1.0)
        margin = 1e-9 * span
        return np.clip(theta, self.lower + margin, self.upper - margin)

    def canonical(self, theta):
        theta = np.array(theta, dtype=np.float64)
        theta[:self.m] = self.model.canonical(theta[:self.m])
        return theta

    def bound_notes(self, theta):
        notes = []
        for name, value, lo, hi in zip(self.free, theta, self.lower, self.upper):
            for limit in (lo, hi):
                if np.isfinite(limit) and abs(value - limit) <= 1e-6 * max(abs(limit), 1.0):
                    notes.append(f"{name}={value:.6g} stopped at its bound {limit:g}: the model "
                                 "may not describe the data, or shape= is too small for it")
        return notes

    def report(self, theta, cov):
        params, offset, amplitude = self.split(theta)
        values = dict(zip(self.model.param_names, map(float, params)))
        values.update(dy=float(offset[0]), dx=float(offset[1]), amplitude=float(amplitude))
        stderr = {name: 0.0 for name in values}
        diag = np.full(len(self.free), np.nan) if cov is None else np.diag(cov)
        for name, var in zip(self.free, diag):
            stderr[name] = float(np.sqrt(var)) if var >= 0 else float("nan")
        return values, stderr

