"""Masked and weighted least squares at nearly the speed of the unmasked problem.

For ``min_k ‖W^½(Xk − b)‖²`` with pixel weights ``w`` (0 = pixel dropped: NaN, mask,
saturation; IRLS weights for robust losses) the statistics are ``G_W = Σ_i w_i x_i x_iᵀ``,
``c = Σ_i w_i b_i x_i``, ``Σ w b²`` and the number of pixels with ``w ≠ 0``.  ``c`` is one
FFT correlation of ``w·b`` with the image whatever ``w`` is; the Gram matrix is the hard part,
because an arbitrary ``w`` breaks the shift structure that makes the unweighted Gram an FFT
computation (:func:`kernelfit.stats.gram_fft`).  Two tools, both here:

Exact statistics (:func:`weighted_statistics`)
    ``G_W`` is assembled from pieces whose cost is known beforehand, and a small planner
    (:func:`plan_statistics`) picks the cheapest exact combination:

    * ``'downdate'``: the unweighted Gram by FFT, minus ``(1 − w_i) x_i x_iᵀ`` for the pixels
      with ``w ≠ 1`` — right when few pixels are masked or down-weighted;
    * ``'direct'``: ``w_i x_i x_iᵀ`` summed over the pixels with ``w ≠ 0`` — right when most
      are dropped.

    In both, rectangles of constant weight (a masked block, a bad column, a kept island) are
    found on a tile grid, grown to their exact pixel edges, and their Gram is
    :func:`~kernelfit.stats.gram_fft` of the sub-image — exact, and independent of how many
    pixels they hold.  What is left is summed explicitly: footprints gathered in chunks of a
    few thousand pixels (``p × chunk`` arrays, so memory stays bounded) and one BLAS product
    per chunk.  Every piece is exact; the result equals the im2col reference to rounding.

Matrix-free weighted solve (:func:`solve_weighted`)
    When the dropped pixels are many *and* scattered (NaN in ``a``: each one removes the whole
    kernel footprint around it from ``b``; or IRLS weights that all differ), no exact
    assembly is cheap — each used pixel costs ``p²`` multiply-adds that no FFT shares.  Then
    the kernel comes from conjugate gradients on ``G_W k = c`` with ``G_W k`` applied by FFT
    (:class:`WeightedNormal`, ~0.09 s at 2048²), preconditioned by the Cholesky factor of the
    exact Gram of a random sample of the used pixels (``'sketch'``, 120,000 pixels by
    default, drawn in proportion to the weight) or of the unweighted image (``'gram'``,
    when few pixels are down-weighted).  The unweighted Gram alone is a poor preconditioner
    when most pixels are dropped (19 iterations for 0.2 % NaN in ``a``; the sketch: 14).
    It stops when the preconditioned residual is ``tol = 1e-12`` of the right-hand side's;
    the kernel then agrees with the exact weighted least-squares solution to 8e-11
    (relative, measured at 2048²; tested to 1e-9 on small problems).  The sample Gram,
    rescaled, is returned as an estimate of ``G_W`` for standard errors
    (:meth:`WeightedSolution.covariance_unscaled`): measured within 2.3 % of the exact
    standard errors for every kernel pixel (their spread is about ``√(2/s)``).
    :func:`matrix_free_pays` says when this beats the exact statistics.

Measured on the 2-core Xeon VM (shared with other jobs, so ±30 %; one BLAS/FFT thread),
2048² photo mosaic, 21×21 kernel, 'valid', whole fits (``kf.estimate``) in seconds; the
unmasked fit takes 0.27 s, ``benchmarks/bench_masked.py`` reproduces the table::

    mask                           pixels kept   before   exact statistics   matrix-free
    5 % random NaN in b                  95 %     2.0          1.3              —
    0.2 % NaN in a (footprints)          41 %    13.6          7.0             2.3
    500×500 masked block                 94 %     2.4          0.41             —
    IRLS weights, 2 % in [0.1, 1)*      100 %    37           0.9               —

(* statistics + solve, there being no weight option in ``estimate``.  before = the previous
code: the FFT Gram minus the dropped pixels by im2col, or im2col over the kept pixels when
more than half were dropped, or im2col over every pixel for general weights.  An L1-like
IRLS weighting, every weight different, at 1024²: exact 6.1 s, matrix-free 0.6 s.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.linalg

from ..core.conventions import normalize_shape
from ..core.forward import ExtendedSpectrum
from ..stats.gram import gram_fft
from ..stats.weighted import (
    _check_weights,
    _gram_fft_seconds,
    _pixels_seconds,
    StatisticsPlan,
    gram_of_pixels,
    plan_statistics,
    weighted_statistics,
)

__all__ = [
    "StatisticsPlan",
    "WeightedNormal",
    "WeightedSolution",
    "gram_of_pixels",
    "matrix_free_pays",
    "plan_statistics",
    "solve_weighted",
    "solve_weighted_seconds",
    "weighted_statistics",
]

#   one application of XᵀWX by FFT (WeightedNormal), per pixel of the transform grid.
_SECONDS_PER_NORMAL_PIXEL = 2.3e-8


# --------------------------------------------------------------------------------------------
# Matrix-free weighted solve
# --------------------------------------------------------------------------------------------
class WeightedNormal:
    """``k ↦ XᵀWXk`` for one image pair and any pixel weights, by FFT.

    Kernels are in convolution orientation.  The image's FFT is taken once; each
    application costs a real 2-D FFT and its inverse on the image grid plus two partial
    transforms (a 2-D FFT of a ``kh``-row kernel and a ``kh``-row inverse, done as small DFT
    matrix products).

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
    shape : (kh, kw)
    weights : ndarray like the used rectangle of ``b``
    spectrum : ExtendedSpectrum, optional

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> P, w = rng.random((30, 30)), rng.random((26, 26))
    >>> op = WeightedNormal(P, (5, 5), w)
    >>> k, r = rng.normal(size=(5, 5)), rng.normal(size=(26, 26))
    >>> bool(np.isclose(np.vdot(op.forward(k), r), np.vdot(k, op.adjoint(r))))
    True
    """

    def __init__(self, extended, shape, weights, *, spectrum=None):
        self.extended = np.ascontiguousarray(extended, dtype=np.float64)
        self.shape = normalize_shape(shape)
        kh, kw = self.shape
        Ph, Pw = self.extended.shape
        self.out_shape = (Ph - kh + 1, Pw - kw + 1)
        self.weights = _check_weights(weights, self.out_shape)
        if spectrum is None:
            spectrum = ExtendedSpectrum(self.extended, self.shape)
        self.spectrum = spectrum
        Ly, Lx = spectrum.fft_shape
        # DFT matrices along y for the kh non-zero rows of a kernel and the kh lags needed.
        rows = np.arange(kh)
        self._dft_y = np.exp(-2j * np.pi * np.outer(np.arange(Ly), rows) / Ly)   # (Ly, kh)
        self._idft_y = np.conj(self._dft_y.T) / Ly                               # (kh, Ly)

    def forward(self, kernel):
        """``X k``: the 'valid' convolution of the image with ``kernel`` (unweighted)."""
        kh, kw = self.shape
        Ly, Lx = self.spectrum.fft_shape
        Ph, Pw = self.extended.shape
        full = scipy.fft.irfft2(self._kernel_spectrum(kernel), (Ly, Lx), overwrite_x=True)
        return full[kh - 1:Ph, kw - 1:Pw]

    def adjoint(self, residual):
        """``Xᵀ r`` in convolution orientation (unweighted)."""
        r_hat = scipy.fft.rfft2(np.asarray(residual, dtype=np.float64), self.spectrum.fft_shape)
        return self._correlation(r_hat)

    def __call__(self, kernel):
        """``XᵀWX k``.

        The forward transform's last pass, the weighting and the adjoint's first pass are
        done together in blocks of rows (both are along x), which keeps the image-sized
        intermediate out of memory: measured 93 ms instead of 134 ms at 2048², 21×21.
        """
        kh, kw = self.shape
        Ly, Lx = self.spectrum.fft_shape
        Ho, Wo = self.out_shape
        Z = scipy.fft.ifft(self._kernel_spectrum(kernel), axis=0, overwrite_x=True)
        R = np.zeros_like(Z)
        block = 64
        for r0 in range(0, Ho, block):
            r1 = min(Ho, r0 + block)
            rows = scipy.fft.irfft(Z[kh - 1 + r0:kh - 1 + r1], Lx, axis=1)[:, kw - 1:kw - 1 + Wo]
            rows *= self.weights[r0:r1]
            R[r0:r1] = scipy.fft.rfft(rows, Lx, axis=1)
        return self._correlation(scipy.fft.fft(R, axis=0, overwrite_x=True))

    def _kernel_spectrum(self, kernel):
        """``rfft2(kernel) · rfft2(P)`` on the transform grid (a new array)."""
        kh, kw = self.shape
        Lx = self.spectrum.fft_shape[1]
        k = np.asarray(kernel, dtype=np.float64).reshape(kh, kw)
        product = self._dft_y @ scipy.fft.rfft(k, Lx, axis=1)
        product *= self.spectrum.hat
        return product

    def _correlation(self, r_hat):
        """The kernel-box lags of the correlation whose spectrum is ``conj(r_hat)·P̂``,
        flipped to convolution orientation (``r_hat`` is overwritten)."""
        kh, kw = self.shape
        Lx = self.spectrum.fft_shape[1]
        np.conjugate(r_hat, out=r_hat)
        r_hat *= self.spectrum.hat
        corr = scipy.fft.irfft(self._idft_y @ r_hat, Lx, axis=1)[:, :kw]
        return corr[::-1, ::-1].copy()


@dataclass
class WeightedSolution:
    """What :func:`solve_weighted` found.

    Attributes
    ----------
    kernel : ndarray
        The weighted least-squares kernel (convolution orientation).
    converged : bool
    iterations : int
    residual_norms : list of float
        Preconditioned residual norm relative to the right-hand side's, per iteration.
    rhs : ndarray
        ``XᵀWb`` (kernel-shaped), exact.
    btb : float
        ``bᵀWb``, exact.
    n_used : int
        Pixels with non-zero weight.
    gram_estimate : ndarray
        A ``p × p`` estimate of ``G_W`` (convolution orientation): the preconditioner's
        matrix, rescaled to be unbiased (see :attr:`gram_estimate_kind`).
    gram_estimate_kind : str
        ``'sketch'`` (exact Gram of a random sample of used pixels, times
        ``n_used/s``), ``'exact'`` (the exact ``G_W``: then the solve is direct) or
        ``'unweighted'`` (the unweighted Gram times the weight mean; a poor estimate).
    sample_size : int
        Pixels in the sketch (0 otherwise).
    message : str
    """

    kernel: np.ndarray
    converged: bool
    iterations: int
    residual_norms: list
    rhs: np.ndarray
    btb: float
    n_used: int
    gram_estimate: np.ndarray
    gram_estimate_kind: str
    sample_size: int
    message: str

    def covariance_unscaled(self) -> np.ndarray:
        """``G_W⁻¹`` estimated from :attr:`gram_estimate` (times ``σ²`` = the covariance).

        For a sketch of ``s`` pixels the inverse of the rescaled sample Gram is biased high
        by ``s/(s − p − 1)`` (a Wishart mean); that factor is removed.
        """
        p = self.gram_estimate.shape[0]
        inverse = np.linalg.inv(self.gram_estimate)
        if self.gram_estimate_kind == "sketch" and self.sample_size > p + 1:
            inverse *= (self.sample_size - p - 1) / self.sample_size
        return inverse


def solve_weighted(extended, b_used, shape, weights, *, spectrum=None, tol=1e-12,
                   maxiter=100, preconditioner="auto", sample_size=None, seed=0,
                   x0=None) -> WeightedSolution:
    """Weighted least-squares kernel by preconditioned conjugate gradients, matrix-free.

    Solves ``Σ_pairs XᵀWX k = Σ_pairs XᵀWb`` without forming ``XᵀWX``: each iteration applies
    it by FFT (:class:`WeightedNormal`).  Use it where :func:`matrix_free_pays` (many
    scattered dropped pixels, e.g. NaN in ``a``).

    Parameters
    ----------
    extended, b_used, weights : ndarray, or equal-length lists of them (one per image pair)
        As in :func:`weighted_statistics`.
    shape : (kh, kw)
    spectrum : ExtendedSpectrum or list of them, optional
    tol : float, default 1e-12
        Stop when the preconditioned residual norm ``√(rᵀM⁻¹r)`` is ``tol`` times the
        right-hand side's.  Measured on the 2048², 21×21 benchmark: the kernel is then within
        6e-11 (relative) of the exact weighted least-squares solution; ``tol=1e-11`` gives
        about 1e-9.
    maxiter : int, default 100
    preconditioner : {'auto', 'sketch', 'gram', 'exact'}
        ``'sketch'``: Cholesky of the exact Gram of a random sample of used pixels
        (``sample_size`` of them, weighted by ``w``, rescaled).  ``'gram'``: Cholesky of the
        unweighted FFT Gram times the mean weight (good when few pixels are down-weighted).
        ``'exact'``: the exact ``G_W`` from :func:`weighted_statistics` (one iteration; for
        tests).  ``'auto'``: ``'gram'`` when fewer than 10 % of the pixels have ``w ≠ 1``,
        else ``'sketch'``.
    sample_size : int, optional
        Pixels in the sketch, over all pairs; default ``max(20·p, 120,000)`` (measured the
        fastest total at 2048², 21×21: 60k → 17 iterations, 120k → 14, 240k → 12).
    seed : int
        Seed of the sketch's random sample.
    x0 : ndarray, optional
        Starting kernel.

    Returns
    -------
    WeightedSolution

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.forward import convolve
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((80, 80)), rng.random((5, 5))
    >>> b = convolve(a, k, mode="valid")
    >>> w = (rng.random(b.shape) > 0.5).astype(float)
    >>> sol = solve_weighted(a, b, (5, 5), w)
    >>> sol.converged and bool(np.allclose(sol.kernel, k, rtol=1e-8))
    True
    """
    shape = normalize_shape(shape)
    kh, kw = shape
    p = kh * kw
    Ps, bs, ws, spectra = _as_pairs(extended, b_used, weights, spectrum, shape)
    if preconditioner not in ("auto", "sketch", "gram", "exact"):
        raise ValueError(f"preconditioner={preconditioner!r} must be 'auto', 'sketch', "
                         "'gram' or 'exact'")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r} must be a positive number")
    if not (isinstance(maxiter, (int, np.integer)) and maxiter >= 1):
        raise ValueError(f"maxiter={maxiter!r} must be a positive integer")
    spectra = [sp or ExtendedSpectrum(P, shape) for P, sp in zip(Ps, spectra)]
    ops = [WeightedNormal(P, shape, w, spectrum=sp) for P, w, sp in zip(Ps, ws, spectra)]
    bs = [np.where(w != 0, b, 0.0) for b, w in zip(bs, ws)]
    rhs = sum(op.adjoint(w * b) for op, b, w in zip(ops, bs, ws))
    btb = float(sum(np.sum(w * b * b) for b, w in zip(bs, ws)))
    used = [np.flatnonzero(w) for w in ws]
    n_used = int(sum(u.size for u in used))
    if n_used == 0:
        raise ValueError("every weight is 0: no pixel is used")
    can_gram = all(P.shape[0] - kh + 1 >= kh and P.shape[1] - kw + 1 >= kw for P in Ps)
    if preconditioner == "auto":
        changed = sum(np.count_nonzero(w != 1) for w in ws)
        total = sum(w.size for w in ws)
        preconditioner = "gram" if can_gram and changed < 0.1 * total else "sketch"
    sample = 0
    if preconditioner == "exact":
        M = sum(weighted_statistics(P, b, shape, w, spectrum=sp).gram
                for P, b, w, sp in zip(Ps, bs, ws, spectra))
        kind = "exact"
    elif preconditioner == "gram":
        if not can_gram:
            raise ValueError(f"preconditioner='gram' needs images at least twice the "
                             f"kernel {shape}")
        M = sum(gram_fft(P, shape, core_lag_sums=sp.core_lag_sums())[::-1, ::-1]
                * (float(np.sum(w)) / w.size) for P, w, sp in zip(Ps, ws, spectra))
        kind = "unweighted"
    else:
        target = int(sample_size or max(20 * p, 120_000))
        rng = np.random.default_rng(seed)
        M = np.zeros((p, p))
        exact = True
        for P, w, u in zip(Ps, ws, used):
            # Each pair contributes in proportion to its used pixels.
            share = int(min(u.size, max(1, round(target * u.size / n_used))))
            values = w.ravel()[u]
            if share == u.size:
                M += gram_of_pixels(P, shape, u, values)[::-1, ::-1]
            elif np.all(values == values[0]):
                # A mask: a uniform sample without replacement.
                chosen = np.sort(rng.choice(u.size, share, replace=False))
                M += gram_of_pixels(P, shape, u[chosen], values[0])[::-1, ::-1] \
                    * (u.size / share)
                exact = False
            else:
                # General weights: sample in proportion to the weight (unbiased, and the
                # heavily weighted pixels that dominate G_W are not missed).
                total = float(values.sum())
                chosen = np.sort(rng.choice(u.size, share, replace=True, p=values / total))
                M += gram_of_pixels(P, shape, u[chosen], total / share)[::-1, ::-1]
                exact = False
            sample += share
        kind = "exact" if exact else "sketch"
    M = 0.5 * (M + M.T)
    factor = _cholesky(M)

    def normal(x):
        return sum(op(x) for op in ops)

    def precondition(r):
        return scipy.linalg.cho_solve(factor, r.ravel()).reshape(shape)

    if x0 is None:
        x, r = np.zeros(shape), rhs.copy()
    else:
        x = np.array(x0, dtype=np.float64).reshape(shape)
        r = rhs - normal(x)
    z = precondition(r)
    rz = float(np.vdot(r, z))
    scale = np.sqrt(max(float(np.vdot(rhs, precondition(rhs))), 0.0))
    norms, it = [], 0
    converged = scale == 0.0 or np.sqrt(max(rz, 0.0)) <= tol * scale
    d = z.copy()
    while not converged and it < maxiter:
        it += 1
        Ad = normal(d)
        curvature = float(np.vdot(d, Ad))
        if not curvature > 0:
            break
        alpha = rz / curvature
        x += alpha * d
        r -= alpha * Ad
        z = precondition(r)
        rz_new = float(np.vdot(r, z))
        norms.append(np.sqrt(max(rz_new, 0.0)) / scale)
        if norms[-1] <= tol:
            converged = True
            break
        d = z + (rz_new / rz) * d
        rz = rz_new
    if converged:
        message = (f"conjugate gradients ({kind} preconditioner) converged in {it} "
                   "iterations")
    else:
        last = norms[-1] if norms else float("nan")
        message = (f"conjugate gradients ({kind} preconditioner) stopped after {it} "
                   f"iterations at relative residual {last:.1e} > tol {tol:g}; raise "
                   "maxiter, or use weighted_statistics")
    return WeightedSolution(x, bool(converged), it, norms, rhs, btb, n_used, M, kind, sample,
                            message)


def matrix_free_pays(weights, image_shape, shape, *, factor=2.0) -> bool:
    """Whether :func:`solve_weighted` is expected to be ``factor`` times faster than the
    exact statistics (:func:`weighted_statistics`), by the module's cost model.

    The exact statistics serve every model, regulariser and constraint and give exact
    standard errors, so prefer them unless the matrix-free solve is much faster.  With a
    0.2 % NaN ``a`` (its footprints drop 59 % of ``b``) at 2048², 21×21 the model predicts
    7.3 s against 2.2 s (measured about 6.8 s against 1.9 s); with 5 % NaN in ``b``, 1.1 s
    against 1.0 s, so the exact statistics are kept.

    Parameters
    ----------
    weights : ndarray or list of ndarray
        Weights of the used rectangle of ``b``, one array per image pair.
    image_shape : (Ph, Pw) or list of them
        Shapes of the extended images.
    shape : (kh, kw)
    factor : float, default 2.0

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones((2028, 2028)); w[::2, ::2] = 0.0
    >>> matrix_free_pays(w, (2048, 2048), (21, 21))
    True
    >>> matrix_free_pays(np.ones((92, 92)), (100, 100), (9, 9))
    False
    """
    shape = normalize_shape(shape)
    several = isinstance(weights, (list, tuple))
    ws = [_check_weights(w, None) for w in (weights if several else [weights])]
    shapes = list(image_shape) if several else [image_shape]
    if len(shapes) != len(ws):
        raise ValueError("weights and image_shape must have one entry per image pair")
    exact = sum(plan_statistics(w, s, shape).seconds for w, s in zip(ws, shapes))
    return factor * solve_weighted_seconds(ws, shapes, shape) < exact


def solve_weighted_seconds(weights, image_shape, shape) -> float:
    """Cost-model estimate of :func:`solve_weighted` with its default options, in seconds
    (``weights`` and ``image_shape`` may be lists, one entry per image pair)."""
    shape = normalize_shape(shape)
    several = isinstance(weights, (list, tuple))
    ws = [_check_weights(w, None) for w in (weights if several else [weights])]
    shapes = list(image_shape) if several else [image_shape]
    p = shape[0] * shape[1]
    fft_pixels = [float(np.prod([scipy.fft.next_fast_len(int(n), real=True) for n in s]))
                  for s in shapes]
    changed = sum(np.count_nonzero(w != 1) for w in ws)
    if changed < 0.1 * sum(w.size for w in ws):
        setup = sum(_gram_fft_seconds(n, shape) for n in fft_pixels)
        iterations = 6
    else:
        used = sum(np.count_nonzero(w) for w in ws)
        setup, iterations = _pixels_seconds(min(used, max(20 * p, 120_000)), shape), 15
    return setup + (iterations + 2) * _SECONDS_PER_NORMAL_PIXEL * sum(fft_pixels)


def _as_pairs(extended, b_used, weights, spectrum, shape):
    """Lists of (P, b, w, spectrum), checked; single arrays become lists of one."""
    kh, kw = shape
    several = isinstance(extended, (list, tuple))
    Ps = list(extended) if several else [extended]
    bs = list(b_used) if several else [b_used]
    ws = list(weights) if several else [weights]
    if spectrum is None:
        spectra = [None] * len(Ps)
    else:
        spectra = list(spectrum) if isinstance(spectrum, (list, tuple)) else [spectrum]
    if not Ps or not (len(Ps) == len(bs) == len(ws) == len(spectra)):
        raise ValueError("extended, b_used, weights (and spectrum) must be arrays, or lists "
                         "of the same non-zero length")
    out_P, out_b, out_w = [], [], []
    for i, (P, b, w) in enumerate(zip(Ps, bs, ws)):
        P = np.ascontiguousarray(P, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if P.ndim != 2 or b.shape != (P.shape[0] - kh + 1, P.shape[1] - kw + 1):
            raise ValueError(f"b_used[{i}] has shape {b.shape}; expected "
                             f"{(P.shape[0] - kh + 1, P.shape[1] - kw + 1)} for extended "
                             f"{P.shape} and kernel {shape}")
        out_P.append(P)
        out_b.append(b)
        out_w.append(_check_weights(w, b.shape))
    return out_P, out_b, out_w, spectra


def _cholesky(M):
    """Cholesky factor of ``M``, with a tiny ridge if rounding made it indefinite."""
    try:
        return scipy.linalg.cho_factor(M)
    except np.linalg.LinAlgError:
        jitter = 1e-12 * max(float(np.trace(M)) / M.shape[0], np.finfo(float).tiny)
        return scipy.linalg.cho_factor(M + jitter * np.eye(M.shape[0]))
