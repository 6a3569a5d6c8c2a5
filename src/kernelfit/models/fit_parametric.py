"""Fitting parametric kernels: L2 on the sufficient statistics, exact L1, Huber.

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

Starting values: the free-form least-squares kernel ``G⁻¹c`` comes almost free from the same
factor; its moments give a first guess (:func:`~kernelfit.models.parametric.kernel_moments`),
to which each family adds a grid of candidates (angles, radii, widths).  All candidates are
scored at once through ``G`` (``O(p²)`` each, with the best amplitude in closed form), and
the best few are refined: multi-start where the objective has several minima.

Robust losses
-------------
``loss='l1'`` returns the exact minimiser of ``Σ|X k(θ) − b|``:

1. Reweighting from the L2 fit.  IRLS on the weighted statistics ``XᵀWX`` would cost
   ``N·p²`` per pass (general weights rule out the FFT path), but a parametric model needs
   them only projected on its Jacobian, ``(XJ)ᵀW(XJ)``: the few columns ``X·∂k/∂θ_j`` are FFT
   convolutions of the image, so each pass costs ``m + 1`` convolutions (``m`` = free
   parameters).  The weights ``min(1, δ/|r|)`` are those of a Huber loss with threshold
   ``δ``; plain IRLS (``δ → 0``) crawls near the L1 kink, so ``δ`` starts at the median
   ``|r|`` and shrinks tenfold per stage (four stages), each solved by scipy's robust-loss
   trust region (IRLS with a curvature correction) from the previous stage's answer.
2. Polish on the true objective (computed from the images): for one free parameter a
   bracket found by doubling steps downhill, bounded Brent to ``1e-10`` relative, and a scan
   at ``1e-4`` relative around the answer (repeated from any better point it finds); for
   several, Nelder–Mead with tight tolerances, restarted once from its own answer.  The
   best point ever evaluated is returned, so the answer is never worse than any point the
   search saw (the L2 start included).

``loss='huber'`` minimises ``Σ ρ(r)`` with ``ρ(r) = r²/2`` for ``|r| ≤ f_scale`` and
``f_scale·|r| − f_scale²/2`` beyond (the objective is smooth, so the solver's own robust-loss
Gauss–Newton converges to the exact minimiser), on the image residuals with the Jacobian
columns ``X·∂k/∂θ_j``.

Uncertainty
-----------
``H = JᵀGJ`` with ``J = ∂k/∂θ`` (free parameters) is the Gauss–Newton matrix for every loss.

* L2: ``cov = σ̂²·H⁻¹``, ``σ̂² = RSS / (n − m)``.
* L1: the asymptotic covariance of least-absolute-deviation regression with independent
  errors, ``cov = H⁻¹ / (2 f̂(0))²``, where ``f̂(0)`` is the residual density at zero, from a
  Gaussian kernel density estimate with Silverman's bandwidth.  It describes the sampling
  spread of ``θ̂`` when the model holds with i.i.d. errors; when ``b`` is not a blurred copy
  of ``a`` at all (seed 002's network output) it is only indicative.
* Huber: Huber's asymptotic formula ``cov = [Σψ(r)²/(n − m)] / [mean ψ'(r)]² · H⁻¹``.

Fixed parameters (``amplitude`` with ``normalize=``, ``dy``/``dx`` without ``fit_offset``) have
standard error 0.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.optimize

from ..core.conventions import normalize_center, normalize_shape
from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum
from .parametric import KernelModel, kernel_moments, make_model
from ..stats.compute import choose_method, statistics
from ..stats.gram import SufficientStatistics

__all__ = ["ParametricFit", "fit_parametric", "LOSSES"]

LOSSES = ("l2", "l1", "huber")


@dataclass
class ParametricFit:
    """The result of :func:`fit_parametric`.

    Attributes
    ----------
    model : str
        The family's name.
    kernel : (kh, kw) ndarray
        The fitted kernel, convolution orientation, centre at ``center``.
    params : dict
        Every parameter: the family's, then ``'dy'``, ``'dx'`` (sub-pixel centre offset,
        pixels) and ``'amplitude'`` (the kernel sum).  Angles in degrees.
    stderr : dict
        Standard error of each parameter (0 for fixed ones, NaN where not determined).
    cov : ndarray or None
        Covariance of the free parameters, in the order of ``free``.
    free : tuple of str
        Names of the fitted parameters.
    objective : float
        The loss at the optimum: ``Σr²`` (l2), ``Σ|r|`` (l1) or ``Σρ(r)`` (huber), over every
        used pixel of every pair, in units of ``b`` (squared for l2).
    loss : str
    rss : float
        ``Σr²`` at the optimum (whatever the loss).
    noise_std : float
        ``sqrt(rss / (n_used − len(free)))``.
    n_used : int
    converged : bool
        False when the optimiser stopped early, a parameter ended on a bound, or the
        covariance is singular; ``message`` says which and what to change.
    message : str
    shape, center : tuple of int
    info : dict
        Diagnostics: the starts refined and their objectives, function evaluations, IRLS
        iterations, the residual density (l1), timings.
    """

    model: str
    kernel: np.ndarray
    params: dict
    stderr: dict
    cov: np.ndarray | None
    free: tuple
    objective: float
    loss: str
    rss: float
    noise_std: float
    n_used: int
    converged: bool
    message: str
    shape: tuple
    center: tuple
    info: dict = field(default_factory=dict)


def fit_parametric(pairs, model, shape, center=None, *, loss="l2", f_scale=1.0, normalize=None,
                   fit_offset=False, x0=None, n_refine=None) -> ParametricFit:
    """Fit a parametric kernel ``k(θ)`` with ``b ≈ a ⊛ k(θ)``.

    Parameters
    ----------
    pairs : PreparedPair, list of PreparedPair, or SufficientStatistics
        The data: pairs from :func:`kernelfit.design.prepare_pair` (all with kernel shape
        ``shape``; one parameter set shared by all), or ready statistics (``loss='l2'``
        only: the fit then never touches an image).
    model : str or KernelModel
        ``'gaussian'``, ``'elliptical'``, ``'moffat'``, ``'disk'``, ``'motion'``, ``'box'``
        (default options), or a model object such as ``Gaussian(truncate=4.0)``.
    shape : int or (kh, kw)
        Kernel size.
    center : (int, int), optional
        Kernel index of the model's centre.  Default: the centre the pairs were prepared
        with (``((kh-1)//2, (kw-1)//2)`` for statistics); it must equal that centre.
    loss : {'l2', 'l1', 'huber'}, default 'l2'
        Least squares, least absolute deviations (exact minimiser), or Huber.
    f_scale : float, default 1.0
        Huber's threshold, in units of ``b``: residuals beyond it count linearly.
    normalize : float, optional
        Fix the kernel sum (the amplitude) to this value; ``None`` fits the amplitude.
    fit_offset : bool, default False
        Also fit a sub-pixel centre offset ``(dy, dx)`` (pixels, within half the kernel).
    x0 : dict or sequence, optional
        Starting values: a dict by parameter name (others get the automatic guess) or one
        value per free parameter, in the order of ``fit.free``.  Skips the multi-start grid.
    n_refine : int, optional
        Number of best grid candidates refined by the local optimiser; default the family's
        ``n_starts`` (1 for the Gaussian, whose objective has one minimum; 3 for families
        with angles or radii).

    Returns
    -------
    ParametricFit

    Raises
    ------
    ValueError
        For an unknown loss or model, inconsistent shapes or centres, a non-positive
        ``f_scale``, ``normalize=0``, or a robust loss on statistics.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a = ndi.uniform_filter(rng.random((96, 96)), 3)
    >>> b = ndi.gaussian_filter(a, 1.7, mode="reflect", truncate=4.0)
    >>> pair = prepare_pair(a, b, (15, 15), boundary="reflect", center=(7, 7))
    >>> fit = fit_parametric(pair, "gaussian", (15, 15), normalize=1.0)
    >>> round(fit.params["sigma"], 6)
    1.7
    """
    started = time.perf_counter()
    shape = normalize_shape(shape)
    model = make_model(model)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} must be one of {LOSSES}")
    if isinstance(f_scale, bool) or not isinstance(f_scale, numbers.Real) \
            or not np.isfinite(f_scale) or f_scale <= 0:
        raise ValueError(f"f_scale={f_scale!r} must be a positive finite number")
    if normalize is not None and (isinstance(normalize, bool)
                                  or not isinstance(normalize, numbers.Real)
                                  or not np.isfinite(normalize) or normalize == 0):
        raise ValueError(f"normalize={normalize!r} must be a finite non-zero number or None")
    if n_refine is None:
        n_refine = int(getattr(model, "n_starts", 3))
    if isinstance(n_refine, bool) or not isinstance(n_refine, numbers.Integral) or n_refine < 1:
        raise ValueError(f"n_refine={n_refine!r} must be a positive integer")
    symmetric = bool(getattr(model, "symmetric", False)) and not fit_offset
    data = _Data(pairs, shape, center, needs_images=loss != "l2", symmetric=symmetric)
    layout = _Layout(model, shape, data.center, normalize, bool(fit_offset))
    t_data = time.perf_counter()

    # --- L2 on the statistics: candidates, screening, refinement ---------------------------
    theta, status_ok, notes, info = _fit_l2(layout, data, x0, n_refine)
    if data.quadrant is not None and not _symmetric_kernel(layout.kernel(theta), shape):
        # The family claims symmetry but this kernel lacks it: redo with the full statistics.
        data = _Data(pairs, shape, center, needs_images=loss != "l2", symmetric=False)
        theta, status_ok, notes, info = _fit_l2(layout, data, x0, n_refine)
    t_l2 = time.perf_counter()

    # --- robust losses on the images --------------------------------------------------------
    residual = None
    if loss == "l1":
        theta, residual, ok, l1_info = _fit_l1(layout, data, theta)
        status_ok &= ok
        info.update(l1_info)
    elif loss == "huber":
        theta, residual, ok, h_info = _fit_huber(layout, data, theta, float(f_scale))
        status_ok &= ok
        info.update(h_info)
    t_robust = time.perf_counter()

    # --- canonical form, uncertainty, result ------------------------------------------------
    theta = layout.canonical(theta)
    k, J = layout.kernel_jacobian(theta)
    rss = data.rss(k)
    n_free = len(layout.free)
    n = data.n_used
    noise_std = float(np.sqrt(max(rss, 0.0) / (n - n_free))) if n > n_free else float("nan")
    if residual is None and loss != "l2":
        residual = data.residuals(k)
    objective, scale2, unc_info = _objective_and_scale(loss, rss, residual, n, n_free,
                                                       float(f_scale))
    info.update(unc_info)
    Jr = data.reduce(J)
    H = Jr.T @ (data.gram @ Jr)
    cov, cov_note = _covariance(H, scale2, layout.free)
    if cov_note:
        notes.append(cov_note)
    notes += layout.bound_notes(theta)
    params, stderr = layout.report(theta, cov)
    info["seconds"] = {"statistics": t_data - started, "l2": t_l2 - t_data,
                       "robust": t_robust - t_l2, "total": time.perf_counter() - started}
    return ParametricFit(
        model=model.name, kernel=k.reshape(shape), params=params, stderr=stderr, cov=cov,
        free=layout.free, objective=float(objective), loss=loss, rss=float(rss),
        noise_std=noise_std, n_used=int(n),
        converged=bool(status_ok and not notes), message="; ".join(notes),
        shape=shape, center=data.center, info=info,
    )


# ---------------------------------------------------------------------------------------------
# The data: statistics, their square root, and (for robust losses) the images
# ---------------------------------------------------------------------------------------------

class _Data:
    """Statistics of every pair, their whitened square root, and image-space residuals.

    Kernels enter through :meth:`reduce`: the identity, or — on the symmetric 'reflect'
    path — the map from a kernel to its quadrant (see :func:`_reflect_symmetric_statistics`),
    in whose coordinates ``gram``/``rhs`` are expressed.
    """

    def __init__(self, pairs, shape, center, *, needs_images, symmetric):
        self.shape = shape
        self.quadrant = None          # (cy, cx) when the statistics are in quadrant form
        self.statistics_path = "gram"
        if isinstance(pairs, SufficientStatistics):
            if needs_images:
                raise ValueError("a robust loss (l1, huber) needs the images: pass "
                                 "PreparedPair objects as pairs, not statistics")
            if tuple(pairs.shape) != shape:
                raise ValueError(f"shape={shape} differs from the statistics' kernel shape "
                                 f"{tuple(pairs.shape)}")
            self.pairs, self.spectra = None, None
            self.center = normalize_center(center, shape)
            gram, rhs, btb, n = pairs.gram, pairs.rhs, pairs.btb, pairs.n_used
        else:
            self.pairs = _as_pairs(pairs)
            for i, pair in enumerate(self.pairs):
                if pair.geometry.kernel_shape != shape:
                    raise ValueError(f"shape={shape} differs from the kernel shape "
                                     f"{pair.geometry.kernel_shape} pairs[{i}] was prepared for")
            prepared_center = self.pairs[0].geometry.center
            if any(p.geometry.center != prepared_center for p in self.pairs):
                raise ValueError("the pairs were prepared with different centres")
            self.center = prepared_center if center is None else normalize_center(center,
                                                                                  shape)
            if self.center != prepared_center:
                raise ValueError(f"center={center!r} differs from the centre "
                                 f"{prepared_center} the pairs were prepared with")
            self.spectra = [None] * len(self.pairs)
            if symmetric and _reflect_symmetric_applies(self.pairs, shape, self.center):
                self.quadrant = self.center
                self.statistics_path = "dct-reflect-symmetric"
                parts = [_reflect_symmetric_statistics(pair, shape) for pair in self.pairs]
                gram = sum(part[0] for part in parts)
                rhs = sum(part[1] for part in parts)
                btb = sum(part[2] for part in parts)
                n = sum(pair.n_used for pair in self.pairs)
            else:
                total = None
                for i, pair in enumerate(self.pairs):
                    weights = None if pair.use is None else pair.use.astype(np.float64)
                    method = choose_method(pair.extended.shape, shape, weights)
                    if method == "fft" or needs_images:
                        self.spectra[i] = ExtendedSpectrum(pair.extended, shape)
                    s = statistics(pair.extended, pair.b_used, shape, weights=weights,
                                   method=method,
                                   spectrum=self.spectra[i] if method == "fft" else None)
                    total = s if total is None else total + s
                gram, rhs, btb, n = total.gram, total.rhs, total.btb, total.n_used
        self.gram, self.rhs, self.btb, self.n_used = gram, rhs, float(btb), int(n)
        self._whiten()

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


# ---------------------------------------------------------------------------------------------
# L2: starting points and refinement on the statistics
# ---------------------------------------------------------------------------------------------

def _starting_points(layout: _Layout, data: _Data, moments, x0, n_refine):
    """The starts to refine: ``x0``, or the best ``n_refine`` of the family's candidates."""
    model = layout.model
    offset = (moments.dy, moments.dx) if layout.fit_offset else (0.0, 0.0)
    if x0 is not None:
        return [_start_from_x0(layout, data, moments, offset, x0)], 1
    candidates = np.atleast_2d(np.asarray(model.candidates(moments, layout.shape), float))
    if candidates.shape[1] != layout.m:
        raise ValueError(f"model {model.name!r}: candidates() has {candidates.shape[1]} "
                         f"columns for {layout.m} parameters")
    candidates = np.clip(candidates, layout.lower[:layout.m], layout.upper[:layout.m])
    kernels, kept = [], []
    for row in candidates:
        try:
            kernels.append(model.unit_kernel(row, layout.shape, layout.center, offset).ravel())
            kept.append(row)
        except ValueError:      # a candidate that vanishes on the grid
            continue
    if not kernels:
        raise ValueError(f"model {model.name!r}: no starting candidate gives a non-zero kernel "
                         f"of shape {layout.shape}; pass x0=")
    K = data.reduce(np.stack(kernels, axis=1))
    G, c, btb = data.gram, data.rhs, data.btb
    quad = np.einsum("ij,ij->j", K, G @ K)
    lin = c @ K
    if layout.normalize is None:
        amplitude = np.where(quad > 0, lin / np.where(quad > 0, quad, 1.0), 0.0)
        objective = btb - amplitude * lin
    else:
        amplitude = np.full(len(kept), layout.normalize)
        objective = layout.normalize**2 * quad - 2 * layout.normalize * lin + btb
    order = np.argsort(objective)
    starts, seen = [], []
    for idx in order:
        row = kept[idx]
        if any(np.allclose(row, s, rtol=1e-3, atol=1e-6) for s in seen):
            continue
        seen.append(row)
        theta = list(row)
        if layout.fit_offset:
            theta += list(offset)
        if layout.normalize is None:
            theta.append(amplitude[idx] if amplitude[idx] != 0 else moments.total or 1.0)
        starts.append(layout.inside(np.array(theta, dtype=np.float64)))
        if len(starts) == n_refine:
            break
    return starts, len(kept)


def _fit_l2(layout, data, x0, n_refine):
    """Multi-start trust-region Gauss–Newton on the statistics; the best refined start."""
    moments = kernel_moments(data.free_kernel(), data.center)
    starts, n_candidates = _starting_points(layout, data, moments, x0, n_refine)
    refined = [_refine_l2(layout, data, theta) for theta in starts]
    best = min(refined, key=lambda r: r["objective"])
    info = {
        "n_candidates": n_candidates,
        "starts": [dict(zip(layout.free, np.round(r["start"], 10).tolist())) for r in refined],
        "start_objectives": [r["objective"] for r in refined],
        "nfev": sum(r["nfev"] for r in refined),
        "whitening": data.whitening,
        "statistics": data.statistics_path,
    }
    return best["theta"], best["ok"], list(best["notes"]), info


def _symmetric_kernel(k, shape):
    k = k.reshape(shape)
    tol = 1e-12 * np.abs(k).max()
    return bool(np.abs(k - k[::-1]).max() <= tol and np.abs(k - k[:, ::-1]).max() <= tol)


def _start_from_x0(layout, data, moments, offset, x0):
    model = layout.model
    if isinstance(x0, dict):
        unknown = set(x0) - set(layout.free)
        if unknown:
            raise ValueError(f"x0 has unknown or fixed parameters {sorted(unknown)}; the free "
                             f"ones are {layout.free}")
        guess = list(np.asarray(model.start(moments, layout.shape), float)) \
            if set(model.param_names) - set(x0) else [0.0] * layout.m
        if layout.fit_offset:
            guess += list(offset)
        if layout.normalize is None:
            guess.append(moments.total if moments.total else 1.0)
        theta = np.array([x0.get(name, g) for name, g in zip(layout.free, guess)], float)
    else:
        theta = np.asarray(x0, dtype=np.float64).ravel()
        if theta.size != len(layout.free):
            raise ValueError(f"x0 has {theta.size} values; the free parameters are "
                             f"{layout.free}")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"x0={x0!r} must be finite")
    return layout.inside(theta)


def _refine_l2(layout: _Layout, data: _Data, theta0):
    """Trust-region Gauss–Newton on the whitened residual ``R k(θ) − z``."""
    cache = {}

    def evaluate(theta):
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = layout.kernel_jacobian(theta)
        return cache[key]

    def fun(theta):
        return data.R @ data.reduce(evaluate(theta)[0]) - data.z

    def jac(theta):
        return data.R @ data.reduce(evaluate(theta)[1])

    notes = []
    try:
        result = scipy.optimize.least_squares(
            fun, theta0, jac=jac, bounds=(layout.lower, layout.upper), method="trf",
            x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200 * len(theta0))
    except ValueError as err:   # a step onto parameters that vanish on the grid
        return {"theta": theta0, "objective": np.inf, "ok": False, "nfev": 0,
                "start": theta0, "notes": [f"refinement failed: {err}"]}
    ok = result.status > 0
    if not ok:
        notes.append(f"the L2 refinement stopped: {result.message}")
    return {"theta": result.x, "objective": float(2.0 * result.cost + data.rho2), "ok": ok,
            "nfev": int(result.nfev), "start": theta0, "notes": notes}


# ---------------------------------------------------------------------------------------------
# Robust losses on the images
# ---------------------------------------------------------------------------------------------

class _Tracked:
    """An objective that remembers the best point it has been evaluated at."""

    def __init__(self, f):
        self.f, self.best_x, self.best_f, self.count = f, None, np.inf, 0

    def __call__(self, theta):
        theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        value = self.f(theta)
        self.count += 1
        if value < self.best_f:
            self.best_x, self.best_f = theta.copy(), value
        return value


def _fit_l1(layout: _Layout, data: _Data, theta):
    """Smoothed-L1 continuation from the L2 solution, then a polish on the exact objective."""

    def l1(t):
        try:
            return float(np.abs(data.residuals(layout.kernel(t))).sum())
        except ValueError:   # parameters at which the kernel vanishes on the grid
            return np.inf

    objective = _Tracked(l1)
    theta = layout.inside(theta)
    objective(theta)
    # Huber losses with a shrinking threshold δ approach L1 (their IRLS weights are
    # min(1, δ/|r|)); each stage starts next to its answer, so it takes few iterations.
    delta = float(np.median(np.abs(data.residuals(layout.kernel(theta)))))
    stages = 0
    for _ in range(4):
        if not delta > 0:
            break
        theta, _, _, stage_info = _fit_huber(layout, data, theta, delta)
        objective(theta)
        stages += stage_info["huber_nfev"]
        delta *= 0.1
    notes = []
    scale = np.maximum(np.abs(objective.best_x), 1.0)
    if len(theta) == 1:
        _polish_1d(objective, objective.best_x[0], layout.lower[0], layout.upper[0], scale[0])
    else:
        for _ in range(2):   # Nelder–Mead restarted once from its own answer
            start = objective.best_x
            simplex = [start] + [start + np.eye(len(start))[j] * 1e-3 * scale[j]
                                 for j in range(len(start))]
            res = scipy.optimize.minimize(
                objective, start, method="Nelder-Mead",
                bounds=list(zip(layout.lower, layout.upper)),
                options={"initial_simplex": np.array(simplex), "xatol": 1e-10,
                         "fatol": 1e-12 * max(objective.best_f, 1e-300), "maxfev": 4000})
        if not res.success:
            notes.append(f"the L1 polish stopped: {res.message}")
    theta = objective.best_x
    residual = data.residuals(layout.kernel(theta))
    info = {"smoothing_evaluations": stages, "l1_evaluations": objective.count}
    return theta, residual, not notes, info


def _polish_1d(objective, x0, lo, hi, scale):
    """Bracket the minimum (steps doubling downhill), close it with bounded Brent, then check
    a fine scan around the answer and repeat from any better point it finds."""
    x_best = x0
    for _ in range(3):
        a, b = _bracket(objective, x_best, lo, hi, 1e-3 * scale)
        if b > a:
            scipy.optimize.minimize_scalar(objective, bounds=(a, b), method="bounded",
                                           options={"xatol": 1e-10 * scale, "maxiter": 200})
        x_best, f_best = objective.best_x[0], objective.best_f
        # The objective is a sum of |·| of smooth functions of x: kinks everywhere, but its
        # envelope is smooth.  A scan at 1e-4·scale confirms no nearby point is better.
        h = 1e-4 * scale
        for x in np.clip(x_best + h * np.r_[-5:0, 1:6], lo, hi):
            objective(x)
        if not objective.best_f < f_best:
            return


def _bracket(objective, x0, lo, hi, h):
    """``(a, b)`` around a local minimum, found by steps that double while going downhill."""
    f0 = objective(x0)
    x_right = min(x0 + h, hi)
    f_right = objective(x_right)
    if f_right < f0:
        direction, prev, (x, f) = 1.0, x0, (x_right, f_right)
    else:
        x_left = max(x0 - h, lo)
        f_left = objective(x_left)
        if not f_left < f0:
            return x_left, x_right
        direction, prev, (x, f) = -1.0, x0, (x_left, f_left)
    step = h
    for _ in range(60):
        step *= 2.0
        x_next = float(np.clip(x + direction * step, lo, hi))
        if x_next == x:                 # reached a bound while still going downhill
            return _ordered(prev, x)
        f_next = objective(x_next)
        if not f_next < f:              # f(prev) ≥ f(x) ≤ f(x_next): a bracket
            return _ordered(prev, x_next)
        prev, x, f = x, x_next, f_next
    return _ordered(prev, x)


def _ordered(u, v):
    return (u, v) if u <= v else (v, u)


def _fit_huber(layout: _Layout, data: _Data, theta, f_scale):
    """Exact Huber minimiser on the image residuals (scipy's robust-loss trust region)."""
    cache = {}

    def evaluate(t):
        key = t.tobytes()
        if key not in cache:
            cache.clear()
            k, J = layout.kernel_jacobian(t)
            cache[key] = (data.residuals(k), J)
        return cache[key]

    def fun(t):
        return evaluate(t)[0]

    def jac(t):
        return data.columns(evaluate(t)[1])

    result = scipy.optimize.least_squares(
        fun, layout.inside(theta), jac=jac, bounds=(layout.lower, layout.upper), method="trf",
        loss="huber", f_scale=f_scale, x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12,
        max_nfev=100 * len(theta))
    ok = result.status > 0
    return result.x, result.fun, ok, {"huber_nfev": int(result.nfev)}


# ---------------------------------------------------------------------------------------------
# Objective values and covariance
# ---------------------------------------------------------------------------------------------

def _objective_and_scale(loss, rss, residual, n, m, f_scale):
    """The loss at the optimum and the factor ``s²`` in ``cov = s²·(JᵀGJ)⁻¹``."""
    dof = n - m
    if loss == "l2":
        return rss, (rss / dof if dof > 0 else np.nan), {}
    if loss == "l1":
        density = _density_at_zero(residual)
        scale2 = 1.0 / (2.0 * density) ** 2 if density > 0 else np.nan
        return float(np.abs(residual).sum()), scale2, {"density_at_zero": density}
    inside = np.abs(residual) <= f_scale
    rho = np.where(inside, 0.5 * residual**2, f_scale * np.abs(residual) - 0.5 * f_scale**2)
    psi = np.clip(residual, -f_scale, f_scale)
    mean_dpsi = inside.mean()
    scale2 = (psi @ psi / dof) / mean_dpsi**2 if dof > 0 and mean_dpsi > 0 else np.nan
    return float(rho.sum()), scale2, {"huber_inlier_fraction": float(mean_dpsi)}


def _density_at_zero(residual):
    """Gaussian kernel density estimate of the residuals at 0 (Silverman's bandwidth)."""
    r = np.asarray(residual, dtype=np.float64)
    n = r.size
    if n < 2:
        return float("nan")
    q75, q25 = np.percentile(r, [75, 25])
    spread = min(np.std(r), (q75 - q25) / 1.349) or np.std(r)
    if not spread > 0:
        return float("nan")
    h = 0.9 * spread * n ** (-0.2)
    return float(np.exp(-0.5 * (r / h) ** 2).sum() / (n * h * np.sqrt(2.0 * np.pi)))


def _covariance(H, scale2, names):
    """``scale2·H⁻¹``, or ``None`` with a note when ``H`` is singular."""
    if not np.isfinite(scale2):
        return None, "too few pixels or a degenerate residual: no standard errors"
    H = 0.5 * (H + H.T)
    d = np.sqrt(np.clip(np.diag(H), 0.0, None))
    if not np.all(d > 0):
        bad = [n for n, v in zip(names, d) if not v > 0]
        return None, f"the data do not constrain {bad} (zero sensitivity): no standard errors"
    # Scale to unit diagonal so the condition test sees correlations, not units.
    C = H / np.outer(d, d)
    lam = np.linalg.eigvalsh(C)
    if not lam[0] > 1e-12 * lam[-1]:
        return None, ("the parameters are not separately determined (singular Gauss–Newton "
                      "matrix): no standard errors; fix some of them (e.g. normalize=)")
    cov = scale2 * np.linalg.inv(C) / np.outer(d, d)
    return 0.5 * (cov + cov.T), ""
