"""``kf.estimate``: the front door that ties validation, statistics and solvers together."""

from __future__ import annotations

import numbers
import time

import numpy as np

from ._conventions import normalize_boundary, normalize_shape
from .design import PreparedPair, prepare_pair
from .forward import ExtendedSpectrum, convolve_extended
from .regularisers import QUADRATIC, penalty_matrix
from .result import KernelFit
from .solvers import solve_normal_equations
from .stats import choose_method, statistics

MODELS = ("free",)
LOSSES = ("l2",)
REGULARISERS = (None,) + QUADRATIC
METHODS = (None, "normal")
# The direct path holds a p×p Gram matrix and factors it in O(p³): 64×64 = 4096 unknowns take
# a few seconds and 134 MB.  Larger kernels need the matrix-free path.
MAX_DIRECT_UNKNOWNS = 4096


def estimate(a, b, shape, *, boundary="valid", center=None, model="free", loss="l2",
             reg=None, lam=None, mask=None, method=None) -> KernelFit:
    """Estimate the kernel ``k`` with ``b ≈ a ⊛ k`` by least squares.

    Parameters
    ----------
    a, b : (H, W) array_like, or equal-length lists of them
        The original and the observed image.  ``b`` may have ``a``'s shape, the 'valid' shape
        ``a.shape − shape + 1`` or the 'full' shape ``a.shape + shape − 1``.  Lists fit one
        kernel shared by every pair.  NaN/inf in ``b`` drop that pixel; in ``a`` they drop
        every pixel of ``b`` whose footprint touches them.
    shape : int or (kh, kw)
        Kernel size in pixels, odd or even.
    boundary : str, default 'valid'
        How ``b`` was made at the edges.  ``'valid'`` uses only pixels whose footprint lies
        inside ``a`` (right whatever made ``b``); ``'fill'`` (zeros), ``'wrap'``,
        ``'reflect'`` (= scipy.signal's 'symm'), ``'nearest'`` (edge replication) and
        ``'mirror'`` use every pixel under that assumption.
    center : (int, int), optional
        Kernel index landing on the output pixel; default ``((kh-1)//2, (kw-1)//2)`` as in
        scipy.signal.  Users of scipy.ndimage with an even kernel pass ``(kh//2, kw//2)``.
    model : {'free'}
        Free-form kernel (one coefficient per pixel).
    loss : {'l2'}
        Least squares.
    reg : {None, 'ridge', 'gradient', 'laplacian'}
        Adds ``lam·‖Lk‖²`` to the mean squared residual: ``L`` is the identity (``'ridge'``),
        the kernel's finite differences (``'gradient'``) or its Laplacian (``'laplacian'``);
        see :mod:`kernelfit.regularisers`.
    lam : float, optional
        Regularisation weight per pixel (the objective is ``‖Xk − b‖²/n + lam·‖k‖²``, so one
        value means the same on images of any size).  Required with ``reg``.
    mask : bool array like ``b`` (or list of them), optional
        True where a pixel of ``b`` may be used.
    method : {None, 'normal'}
        Solver; ``None`` chooses (currently always the normal equations).

    Returns
    -------
    KernelFit

    Raises
    ------
    ValueError, TypeError
        For inputs that cannot describe a convolution; the message names the parameter.

    Warns
    -----
    kernelfit.RankDeficientWarning
        When the images do not determine the kernel (then ``fit.converged`` is False).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((64, 64))
    >>> k = np.array([[0.0, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.1, 0.0]])
    >>> fit = kf.estimate(a, kf.convolve(a, k), (3, 3), boundary="fill")
    >>> np.allclose(fit.kernel, k)
    True
    """
    started = time.perf_counter()
    shape = normalize_shape(shape)
    boundary = normalize_boundary(boundary)
    _check_options(model=model, loss=loss, reg=reg, lam=lam, method=method, shape=shape)
    pairs = _prepare_pairs(a, b, shape, boundary=boundary, center=center, mask=mask)
    spectra = [_spectrum_if_useful(pair, shape) for pair in pairs]
    stats = sum(statistics(pair.extended, pair.b_used, shape, weights=_weights(pair),
                           method="fft" if spectrum else "im2col", spectrum=spectrum)
                for pair, spectrum in zip(pairs, spectra))
    t_stats = time.perf_counter()
    lam = float(lam) if reg else None
    penalty = penalty_matrix(reg, shape) if reg else None
    solution = solve_normal_equations(stats, penalty=penalty, lam=lam or 0.0)
    residuals = ResidualImages(pairs, spectra, solution.kernel, single=_single(a))
    rss = _residual_sum_of_squares(stats, solution.kernel, residuals)
    noise_std, cov, stderr, message = _uncertainty(rss, stats.n_used, solution)
    geometry = pairs[0].geometry
    return KernelFit(
        kernel=solution.kernel, shape=shape, center=geometry.center,
        boundary=geometry.boundary, model="free", params={}, stderr=stderr, cov=cov,
        background=None, _residual=residuals,
        noise_std=noise_std, lam=lam, n_used=stats.n_used,
        converged=solution.trusted, message=message, method="normal",
        info={
            "rcond": solution.rcond, "rank": solution.rank, "dof": solution.dof,
            "n_pairs": len(pairs),
            "seconds": {"statistics": t_stats - started,
                        "total": time.perf_counter() - started},
        },
    )


def _single(a) -> bool:
    return not isinstance(a, (list, tuple))


def _check_options(*, model, loss, reg, lam, method, shape):
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not available; available: {MODELS}")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not available; available: {LOSSES}")
    if reg not in REGULARISERS:
        raise ValueError(f"reg={reg!r} is not available; available: {REGULARISERS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not available; available: {METHODS}")
    if reg is not None:
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0 \
                or not np.isfinite(lam):
            raise ValueError(f"lam={lam!r}: reg={reg!r} needs a finite number lam >= 0")
    elif lam is not None:
        raise ValueError(f"lam={lam!r} is given but reg=None; pass reg='ridge' to use it")
    p = shape[0] * shape[1]
    if p > MAX_DIRECT_UNKNOWNS:
        raise ValueError(
            f"shape={shape} has {p} unknowns; the direct solver handles at most "
            f"{MAX_DIRECT_UNKNOWNS} (e.g. 64x64)"
        )


def _prepare_pairs(a, b, shape, *, boundary, center, mask) -> list[PreparedPair]:
    if _single(a) and _single(b):
        return [prepare_pair(a, b, shape, boundary=boundary, center=center, mask=mask)]
    if _single(a) or _single(b) or len(a) != len(b) or len(a) == 0:
        raise ValueError("a and b must both be images, or lists of the same non-zero length")
    masks = [None] * len(a) if mask is None else mask
    if _single(masks) or len(masks) != len(a):
        raise ValueError("with lists of pairs, mask must be None or a list of the same length")
    return [prepare_pair(ai, bi, shape, boundary=boundary, center=center, mask=mi,
                         label=f"[{i}]")
            for i, (ai, bi, mi) in enumerate(zip(a, b, masks))]


def _weights(pair: PreparedPair):
    return None if pair.use is None else pair.use.astype(np.float64)


def _spectrum_if_useful(pair: PreparedPair, shape):
    """The image's FFT when the statistics take the FFT path (the prediction reuses it)."""
    if choose_method(pair.extended.shape, shape, _weights(pair)) == "fft":
        return ExtendedSpectrum(pair.extended, shape)
    return None


class ResidualImages:
    """``b − prediction`` for every pair, computed once, when first asked for.

    A fit's residual costs a full-size convolution, about a third of the whole fit on a large
    image, and many callers never look at it; :class:`KernelFit` calls this object on first
    access.  Until then it keeps references to the prepared images.
    """

    def __init__(self, pairs, spectra, kernel, *, single):
        self._inputs = (pairs, spectra, kernel)
        self._single = single
        self._images = None

    def __call__(self):
        if self._images is None:
            pairs, spectra, kernel = self._inputs
            self._images = [_residual(pair, spectrum, kernel)
                            for pair, spectrum in zip(pairs, spectra)]
            self._inputs = None  # let the inputs go
        return self._images[0] if self._single else self._images

    def sum_of_squares(self) -> float:
        images = self()
        return float(sum(np.nansum(r * r) for r in (images if not self._single else [images])))


def _residual_sum_of_squares(stats, kernel, residuals: ResidualImages) -> float:
    """``‖Xk − b‖²`` from the statistics, or from the residual images when the fit is so good
    that the statistics' formula would be mostly rounding (it cancels to ~1e-15·bᵀb)."""
    k = kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    if rss < 1e-9 * stats.btb:
        return residuals.sum_of_squares()
    return float(rss)


def _residual(pair: PreparedPair, spectrum, kernel) -> np.ndarray:
    if spectrum is None:
        prediction = convolve_extended(pair.extended, kernel)
    else:
        prediction = spectrum.convolve_valid(kernel)
    return pair.embed(pair.b_used - prediction)


def _uncertainty(rss, n_used, solution):
    """Noise level from the residuals; covariance ``σ̂²·(unit-noise covariance)``."""
    message = solution.message
    dof_left = n_used - solution.dof
    if dof_left <= 0.5:
        note = (f"only {n_used} pixels for {solution.dof:.0f} effective parameters: the noise "
                "level and standard errors cannot be estimated")
        message = f"{message}; {note}" if message else note
        return float("nan"), None, None, message
    noise_std = float(np.sqrt(rss / dof_left))
    if solution.cov_unscaled is None:
        return noise_std, None, np.full(solution.kernel.shape, np.nan), message
    cov = noise_std**2 * solution.cov_unscaled
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(solution.kernel.shape)
    return noise_std, cov, stderr, message
