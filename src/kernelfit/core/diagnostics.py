"""Identifiability diagnostics: do the images determine the kernel, or only the noise?

Least squares always returns a kernel.  Whether it means anything depends on ``a``: the fit
sees the kernel only at the spatial frequencies where ``a`` has power, so a smooth, small or
periodic ``a`` leaves part of the kernel to the noise.  :func:`annotate` (run by
``kf.estimate`` on every least-squares fit) stores the evidence in
``fit.info['identifiability']``, a dict of scalars:

``below_noise_fraction``
    The fraction of the kernel's ``p = kh·kw`` frequencies at which ``a``'s power, seen
    through a typical kernel, is below the noise (exact definition in
    :func:`identifiability`, with ``snr_min``, ``snr_median``, ``kernel_power``).  If a
    fraction ``f`` is below the noise, the unregularised kernel's relative error is about
    ``√f`` or more.
``relative_error``
    The relative standard error ``‖δk‖/‖k‖`` of the least-squares (unregularised) kernel:
    exact from ``fit.cov`` for an unregularised free fit, a spectral estimate otherwise.
``condition_number``, ``condition_method``
    The 2-norm condition number ``λ_max/λ_min`` of the Gram matrix ``G = XᵀX`` on the free
    model's direct path (:func:`gram_condition`; NaN elsewhere), next to
    ``noise_condition_limit``, the largest condition number the noise allows.
``effective_parameters``, ``n_coefficients``
    ``tr H``, the trace of the hat matrix: ``p`` for an unregularised free kernel,
    ``tr((G + lam·n·LᵀL)⁻¹G) < p`` under a quadratic regulariser, the number of parameters
    of a parametric or structured model; and ``p``.

A free kernel fitted without a regulariser or ``nonneg`` raises an
:class:`IdentifiabilityWarning` with the remedies, and says so in ``fit.message``, when any
of these holds: ``below_noise_fraction ≥`` :data:`BELOW_NOISE_LIMIT`, ``condition_number >``
:data:`CONDITION_MARGIN` ``× noise_condition_limit``, ``relative_error ≥``
:data:`RELATIVE_ERROR_LIMIT`.  A free kernel without a
regulariser or ``nonneg`` that has more effective parameters than used pixels (after one mean
per pair) is *not determined* at all: the fit is one of many that reproduce ``b`` exactly.
It gets ``converged = False``, ``info['identifiability']['determined'] = False`` with the
``unseen_fraction`` ``1 − n/p`` of directions no pixel sees, an
:class:`IdentifiabilityWarning` naming the one-call alternatives, and a summary whose status
line says so.  A regularised, non-negative, structured or parametric fit only
records the numbers: its prior or model supplies what the data lack, at the price of a bias
the standard errors do not include.

Cost: one FFT of at most 64 blocks of ``3kh × 3kw`` pixels per pair, a pass over ``b``, and
on the direct path an eigendecomposition of ``G`` up to :data:`MAX_EIGEN_UNKNOWNS` unknowns.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import scipy.fft
import scipy.linalg


class IdentifiabilityWarning(UserWarning):
    """The images determine the kernel poorly: much of it is noise.

    :class:`kernelfit.RankDeficientWarning` (some coefficient is not determined at all) is a
    subclass, so filtering this category filters both.
    """


# Warn when at least this fraction of the kernel's frequencies is below the noise: the
# unregularised kernel's relative error is then about √0.1 ≈ 30 % or more.
BELOW_NOISE_LIMIT = 0.1
# ... or when the Gram matrix's condition number exceeds the one the noise allows this many
# times: its weakest direction then carries a standard error of at least √100 = 10 times the
# kernel's typical component (a relative error of at least 10/√p, 20 % at the direct path's
# largest kernel, 51×51).
CONDITION_MARGIN = 100.0
# ... or when the least-squares kernel's relative standard error is at least this.
RELATIVE_ERROR_LIMIT = 0.5
# The exact condition number costs an eigendecomposition, O(p³): 0.05 s at 32×32 on one core,
# a small part of the fit's own Cholesky factor and inverse.  Above, the solver's LAPACK
# estimate is used when it has one.
MAX_EIGEN_UNKNOWNS = 32 * 32
# Welch blocks are 3× the kernel per axis: the periodic Hann window spreads a spectral line
# over ±1 bin, which then stays inside one kernel-frequency cell (3 bins wide).
_BLOCK_FACTOR = 3
# The spectrum needs only the kernel's resolution; on a large image this many blocks (chosen
# at random with a fixed seed) give each cell ~9·64 periodogram values, a ~4 % estimate.
_MAX_BLOCKS = 64
# Fits that are not least squares on a (possibly weighted) subset of pixels: their noise_std
# is not the residual standard deviation these diagnostics compare with.
# Fits these diagnostics do not describe: not least squares, or (a varying kernel) not one
# kernel on one design.
_NOT_LEAST_SQUARES = ("fourier", "wiener", "richardson-lucy", "lp", "normal-varying")


def spectral_power(pairs, shape) -> np.ndarray:
    """The power of ``a`` at the kernel's frequencies, in the units of the Gram matrix.

    Parameters
    ----------
    pairs : list of kernelfit.design.PreparedPair
        The prepared image pairs of a fit.
    shape : (kh, kw)
        Kernel shape.

    Returns
    -------
    (kh, kw) ndarray
        ``S[jy, jx]``, the power at frequency ``(jy/kh, jx/kw)`` cycles per pixel (FFT
        order), summed over the pairs.  For each pair: Welch's estimate from periodic
        Hann-windowed blocks of ``3kh × 3kw`` pixels of the extended image ``P`` (at most
        64 blocks), each pixel weighted by the fraction of the kernel footprints of used
        pixels that contain it, the weighted mean ``ā`` removed; the periodogram bins are
        averaged over the cell of frequencies nearest each kernel frequency and scaled by
        ``n_used / Σ(window·weight)²``; the mean adds ``n_used·p·ā²`` at frequency 0.  So
        ``S`` approximates the eigenvalues of ``G`` (the kernel's Fourier modes are nearly
        its eigenvectors): for a white ``a`` of variance ``v`` and mean ``μ``,
        ``S ≈ n·v`` and ``S[0, 0] ≈ n·(v + p·μ²)``, as are ``G``'s eigenvalues.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> a = np.random.default_rng(0).normal(size=(96, 96))
    >>> pair = prepare_pair(a, a[2:-2, 2:-2], (5, 5), boundary="valid")
    >>> S = spectral_power([pair], (5, 5))
    >>> S.shape, bool(np.allclose(S / pair.n_used, 1.0, atol=0.3))   # white: n·var(a)
    ((5, 5), True)
    """
    shape = tuple(int(n) for n in shape)
    for pair in pairs:
        if tuple(pair.geometry.kernel_shape) != shape:
            raise ValueError(f"shape={shape} is not the kernel shape "
                             f"{tuple(pair.geometry.kernel_shape)} the pairs were prepared for")
    fluctuation, mean_power = _power_parts(pairs, shape)
    fluctuation[0, 0] += mean_power
    return fluctuation


def _power_parts(pairs, shape):
    """``spectral_power`` as the power of ``a − ā`` (kernel-shaped) and that of the mean
    ``ā`` (which adds at frequency 0), each summed over the pairs."""
    fluctuation, mean_power = np.zeros(shape), 0.0
    for pair in pairs:
        part, mean = _pair_power(pair.extended, pair.use, shape, pair.n_used)
        fluctuation += part
        mean_power += pair.n_used * shape[0] * shape[1] * mean * mean
    return fluctuation, mean_power


def _pair_power(P, use, shape, n_used):
    kh, kw = shape
    weight = None if use is None else _coverage(use, shape)
    by, bx = min(_BLOCK_FACTOR * kh, P.shape[0]), min(_BLOCK_FACTOR * kw, P.shape[1])
    ny, nx = P.shape[0] // by, P.shape[1] // bx
    window = np.outer(_hann(by), _hann(bx))
    if weight is None:
        mean = float(P.mean())
        chosen = _choose(np.arange(ny * nx))
        taper = np.broadcast_to(window, (len(chosen), by, bx))
    else:
        mean = float(np.sum(weight * P) / np.sum(weight))
        seen = _blocks(weight, by, bx, ny, nx).sum(axis=(1, 3)).ravel() > 0
        chosen = _choose(np.flatnonzero(seen))
        taper = _pick(weight, by, bx, ny, nx, chosen) * window
    tapered = (_pick(P, by, bx, ny, nx, chosen) - mean) * taper
    spectrum = scipy.fft.fft2(tapered, axes=(1, 2))
    power = np.sum(spectrum.real ** 2 + spectrum.imag ** 2, axis=0)
    power *= n_used / float(np.sum(taper * taper))
    cells = _cell_index(by, kh)[:, None] * kw + _cell_index(bx, kw)[None, :]
    sums = np.bincount(cells.ravel(), power.ravel(), kh * kw)
    counts = np.bincount(cells.ravel(), None, kh * kw)
    return (sums / counts).reshape(shape), mean


def _coverage(use, shape):
    """Fraction of the kernel footprints of used pixels that contain each pixel of ``P``."""
    kh, kw = shape
    padded = np.pad(use.astype(np.int64), ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), np.int64)
    integral[1:, 1:] = padded.cumsum(axis=0).cumsum(axis=1)
    box = (integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw]
           + integral[:-kh, :-kw])
    return box / (kh * kw)


def _blocks(image, by, bx, ny, nx):
    """``image``'s top-left ``ny·by × nx·bx`` as a ``(ny, by, nx, bx)`` view."""
    return image[:ny * by, :nx * bx].reshape(ny, by, nx, bx)


def _pick(image, by, bx, ny, nx, chosen):
    """The blocks numbered ``chosen`` (row-major over the block grid), ``(m, by, bx)``."""
    rows, cols = np.divmod(chosen, nx)
    return _blocks(image, by, bx, ny, nx)[rows, :, cols, :]


def _choose(candidates):
    """At most ``_MAX_BLOCKS`` of the candidate blocks, spread at random (fixed seed)."""
    if len(candidates) <= _MAX_BLOCKS:
        return candidates
    return np.sort(np.random.default_rng(0).choice(candidates, _MAX_BLOCKS, replace=False))


def _hann(n):
    # Periodic Hann: its DFT is non-zero only at bins 0 and ±1, so the mean and any line at
    # a bin frequency stay within one kernel-frequency cell.
    return np.hanning(n + 1)[:-1] if n > 1 else np.ones(1)


def _cell_index(n_bins, k):
    """Kernel-frequency cell (0..k−1, FFT order) nearest to each of ``n_bins`` FFT bins."""
    return np.floor(np.arange(n_bins) * k / n_bins + 0.5).astype(np.int64) % k


def gram_condition(gram, *, rcond=None) -> dict:
    """The Gram matrix's condition number, exactly when affordable.

    Parameters
    ----------
    gram : (p, p) ndarray
        ``G = XᵀX`` (symmetric positive semi-definite).
    rcond : float, optional
        LAPACK's reciprocal condition estimate of ``G`` in the 1-norm, if the solver made
        one; used above :data:`MAX_EIGEN_UNKNOWNS` unknowns.

    Returns
    -------
    dict
        ``condition_number``: ``λ_max/λ_min`` from the eigenvalues (``inf`` when ``G`` is
        singular) for ``p ≤ MAX_EIGEN_UNKNOWNS``; above, ``1/rcond`` (within a factor ``p``
        of the 2-norm value) or NaN without ``rcond``.  ``condition_method`` says which:
        ``'eigenvalues'``, ``'lapack-1-norm-estimate'`` or ``'not computed'``.

    Examples
    --------
    >>> import numpy as np
    >>> gram_condition(np.diag([4.0, 2.0, 1.0]))
    {'condition_number': 4.0, 'condition_method': 'eigenvalues'}
    """
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or not np.all(np.isfinite(gram)):
        raise ValueError(f"gram must be a finite square matrix, not an array of shape "
                         f"{gram.shape}" + ("" if np.all(np.isfinite(gram)) else " with NaN/inf"))
    p = gram.shape[0]
    if p <= MAX_EIGEN_UNKNOWNS:
        eigenvalues = scipy.linalg.eigvalsh(gram, check_finite=False)
        low, high = float(eigenvalues[0]), float(eigenvalues[-1])
        condition = high / low if low > 0 else float("inf")
        return {"condition_number": condition, "condition_method": "eigenvalues"}
    if rcond is not None:
        condition = 1.0 / rcond if rcond > 0 else float("inf")
        return {"condition_number": condition, "condition_method": "lapack-1-norm-estimate"}
    return {"condition_number": float("nan"), "condition_method": "not computed"}


def identifiability(pairs, kernel, noise_std, *, variance_sum=None) -> dict:
    """How well the pairs determine a kernel of this shape at this noise level.

    Parameters
    ----------
    pairs : list of kernelfit.design.PreparedPair
    kernel : (kh, kw) ndarray
        The fitted kernel ``k̂`` (it bounds the kernel scale, see below).
    noise_std : float
        The fit's noise standard deviation ``σ̂`` (units of ``b``).
    variance_sum : float, optional
        ``trace(fit.cov)`` of an unregularised fit: the exact ``Σ var(k̂_u)`` for
        ``relative_error`` instead of its spectral estimate.

    Returns
    -------
    dict
        With ``S_j`` the power of ``a`` at kernel frequency ``f_j`` (:func:`spectral_power`,
        ≈ the eigenvalues of ``G``; ``S'_j`` the same without ``a``'s mean), least squares
        gives the kernel's component along the Fourier mode ``f_j`` (unit norm) a standard
        error ``σ̂/√S_j``.  Against it stands a typical component of the kernel, ``κ``:

        * ``kernel_power``: ``κ² = min(Σ(b − b̄)² − (n − 1)·σ̂²) / Σ_j S'_j, ‖k̂‖²/p)``;
          the first term is the kernel power per frequency that makes ``a``'s fluctuations
          explain those of ``b`` above the noise (``b̄`` per pair), the second caps it by the
          fitted kernel (smaller whenever ``a``'s power sits where the kernel is strongest).
          When the first is not positive (``σ̂`` holds more than noise, e.g. the misfit of a
          wrong ``normalize``), ``κ² = ‖k̂‖²/p``;
        * ``snr_min``, ``snr_median`` of ``SNR_j = S_j·κ²/σ̂²``, the squared ratio of ``κ``
          to the standard error at ``f_j``;
        * ``below_noise_fraction``: the fraction of the ``p`` frequencies with ``SNR_j < 1``:
          there ``a``'s power, seen through a typical kernel, is weaker than the noise;
        * ``noise_condition_limit``: ``max_j SNR_j``, the largest condition number of ``G``
          the noise allows (a direction of ``G`` weaker than ``λ_max`` over it is below the
          noise);
        * ``relative_error``: ``√(Σ_u var k̂_u) / (√p·κ)``, the relative standard error of
          the least-squares (unregularised) kernel, with ``Σ var = variance_sum`` when given,
          else ``Σ_j σ̂²/S_j`` (so ``√mean_j(1/SNR_j)``).

        NaN without a finite ``σ̂``.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> from kernelfit.core.design import prepare_pair
    >>> from scipy.ndimage import gaussian_filter
    >>> rng = np.random.default_rng(0)
    >>> k = np.full((5, 5), 1 / 25)
    >>> white = rng.random((64, 64))
    >>> smooth = gaussian_filter(white, 4)   # almost nothing above 0.1 cycles/pixel
    >>> for a in (white, smooth):
    ...     pair = prepare_pair(a, kf.convolve(a, k, mode="valid"), (5, 5), boundary="valid")
    ...     print(identifiability([pair], k, 0.01)["below_noise_fraction"])
    0.0
    0.8
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.number)) \
            or noise_std < 0:
        raise ValueError(f"noise_std={noise_std!r} must be a number >= 0 (or NaN: unknown)")
    expected = tuple(pairs[0].geometry.kernel_shape)
    if kernel.shape != expected:
        raise ValueError(f"kernel has shape {kernel.shape}; the pairs were prepared for "
                         f"shape {expected}")
    p = kernel.size
    fluctuation, mean_power = _power_parts(pairs, kernel.shape)
    S = fluctuation.ravel().copy()
    S[0] += mean_power
    nan = float("nan")
    if not (np.isfinite(noise_std) and noise_std >= 0 and np.all(np.isfinite(kernel))):
        return dict.fromkeys(("kernel_power", "snr_min", "snr_median", "below_noise_fraction",
                              "noise_condition_limit", "relative_error"), nan)
    # Σ(b − b̄)² holds the noise of n − (one mean per pair) pixels.  a's mean is left out of
    # both sides: it meets only the kernel's sum, which is rarely where a fit goes wrong.
    n_dof = sum(pair.n_used for pair in pairs) - len(pairs)
    signal_energy = max(fluctuation_energy(pairs) - n_dof * noise_std ** 2, 0.0)
    total = float(fluctuation.sum())
    kappa2 = float(np.sum(kernel ** 2)) / p
    if signal_energy > 0 and total > 0:
        kappa2 = min(signal_energy / total, kappa2)
    signal = S * kappa2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # σ̂ = 0 (an exact fit): every frequency that carries signal is infinitely clear,
        # one that carries none is not seen at all.
        snr = np.where(signal > 0, signal / noise_std ** 2, 0.0)
        if variance_sum is None:
            variance_sum = float(np.sum(noise_std ** 2 / S)) if np.all(S > 0) else np.inf
        relative = np.sqrt(variance_sum / (p * kappa2)) if kappa2 > 0 else np.inf
    return {"kernel_power": kappa2, "snr_min": float(snr.min()),
            "snr_median": float(np.median(snr)),
            "below_noise_fraction": float(np.mean(snr < 1.0)),
            "noise_condition_limit": float(snr.max()),
            "relative_error": float(relative)}


def fluctuation_energy(pairs) -> float:
    """``Σ (b − b̄)²`` over the used pixels of every pair, ``b̄`` each pair's mean."""
    total = 0.0
    for pair in pairs:
        # b_used is 0 on the unused pixels, so plain sums cover the used ones.  Sums instead
        # of a centred copy (b_used is often a strided view): b's fluctuations carry the
        # signal, so they are not so small next to its mean that the difference loses much.
        b = pair.b_used
        with np.errstate(over="ignore", invalid="ignore"):   # huge b: inf, not an exception
            spread = np.einsum("ij,ij->", b, b) - np.square(b.sum()) / pair.n_used
        total += max(float(spread), 0.0) if np.isfinite(spread) else float("inf")
    return total


def annotate(pairs, fit) -> None:
    """Store ``fit.info['identifiability']`` and warn when a free kernel is mostly noise.

    Runs on least-squares fits (any model); adds the spectral numbers of
    :func:`identifiability` and ``effective_parameters`` to what the solver recorded there
    (the free model's direct path: :func:`gram_condition`).  Fits that are not least
    squares (robust losses, the classic Fourier/Wiener/Richardson–Lucy answers) are left
    alone.  The warning (criteria in the module docstring) is for a free kernel fitted
    without ``reg`` or ``nonneg`` whose solve succeeded (``fit.converged``; a failed one has
    already said why); it adds a line to ``fit.message`` too.

    Warns
    -----
    IdentifiabilityWarning

    Examples
    --------
    >>> import warnings, numpy as np, kernelfit as kf
    >>> from scipy.ndimage import gaussian_filter
    >>> a = gaussian_filter(np.random.default_rng(0).random((64, 64)), 1.5)   # smooth
    >>> b = kf.convolve(a, np.full((5, 5), 1 / 25), mode="valid")
    >>> b = b + 0.01 * np.random.default_rng(1).normal(size=b.shape)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     fit = kf.estimate(a, b, 5)          # estimate() runs annotate
    >>> [w.category.__name__ for w in caught]
    ['IdentifiabilityWarning']
    >>> report = fit.info["identifiability"]
    >>> report["below_noise_fraction"], round(report["effective_parameters"], 6)
    (0.48, 25.0)
    """
    if fit.method in _NOT_LEAST_SQUARES or fit.info.get("loss", "l2") != "l2" \
            or np.ndim(fit.kernel) != 2:
        return
    report = dict(fit.info.get("identifiability", {}))
    kernel = np.asarray(fit.kernel, dtype=np.float64)
    report.update(identifiability(pairs, kernel, float(fit.noise_std),
                                  variance_sum=_variance_sum(fit)))
    report.setdefault("condition_number", float("nan"))
    report.setdefault("condition_method", "not computed")
    report["effective_parameters"] = _effective_parameters(fit)
    report["n_coefficients"] = int(fit.kernel.size)
    fit.info["identifiability"] = report
    if _is_undetermined(pairs, fit, report):
        _mark_undetermined(pairs, fit, report)
    elif _should_warn(fit, report):
        report["poorly_determined"] = True
        message = _advice(fit.kernel.shape, report)
        fit.message = f"{fit.message}; {message}" if fit.message else message
        warnings.warn(message, IdentifiabilityWarning, stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside kernelfit: the warning points at the user's
    call, however deep the fit ran (the automatic choices call estimate() again)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("kernelfit"):
        frame, level = frame.f_back, level + 1
    return level


def _variance_sum(fit):
    """``trace(fit.cov)`` when it is the least-squares kernel's (free, unregularised)."""
    if fit.model != "free" or fit.lam is not None or fit.cov is None:
        return None
    return float(np.trace(fit.cov))


def _effective_parameters(fit) -> float:
    """``tr H``: the solver's, the λ selection's, or the number of (free) parameters."""
    if "dof" in fit.info:
        return float(fit.info["dof"])
    selection = fit.info.get("lambda_selection")
    if fit.lam is not None and selection is not None:
        return float(selection["edf"])
    if fit.model == "free" and fit.lam is None:
        return float(fit.kernel.size)
    if fit.cov is not None:
        return float(np.shape(fit.cov)[0])
    return float("nan")


def _unregularised_free(fit) -> bool:
    """A free kernel with nothing but the data to determine it (no ``reg``, no ``nonneg``)."""
    return fit.model == "free" and fit.lam is None and fit.info.get("active") is None \
        and not fit.info.get("nonneg", False)


def _is_undetermined(pairs, fit, report) -> bool:
    """More effective parameters than used pixels (after one mean per pair): whatever the
    solver returns is one of many kernels that fit ``b`` exactly, however small the noise."""
    n_used = sum(pair.n_used for pair in pairs)
    return _unregularised_free(fit) and report["effective_parameters"] > n_used - len(pairs)


def _mark_undetermined(pairs, fit, report) -> None:
    """Record, say and warn that the kernel is not determined; ``fit.converged = False``.

    With ``n`` used pixels, the design has rank ``≤ n``, so at least ``1 − n/p`` of the
    kernel's ``p`` directions carry no data at all: their signal-to-noise ratio is 0 whatever
    the noise, which is a lower bound on ``below_noise_fraction`` (the spectral estimate
    needs a noise level, and an exact fit has none to offer).
    """
    n_used = sum(pair.n_used for pair in pairs)
    p = fit.kernel.size
    unseen = max(0.0, 1.0 - n_used / p)
    spectral = report["below_noise_fraction"]
    report["determined"] = False
    report["unseen_fraction"] = unseen
    report["below_noise_fraction"] = unseen if np.isnan(spectral) else max(spectral, unseen)
    report["relative_error"] = float("inf")
    fit.converged = False
    shape = fit.kernel.shape
    message = (
        f"the images cannot determine this {shape[0]}x{shape[1]} kernel: "
        f"{n_used} used pixels for {report['effective_parameters']:.6g} effective parameters, "
        f"so this is one of many kernels that fit b exactly and at least {unseen:.0%} of its "
        "directions are not seen by the data; one-call alternatives: model='radial' (a "
        "kernel that depends only on the distance from its centre), model='powerlaw' "
        "(amplitude * r**-exponent), or reg='gradient', nonneg=True (a smooth non-negative "
        "free kernel, lam chosen by GCV); see fit.info['identifiability']")
    fit.message = f"{fit.message}; {message}" if fit.message else message
    warnings.warn(message, IdentifiabilityWarning, stacklevel=user_stacklevel())


def _should_warn(fit, report) -> bool:
    if not _unregularised_free(fit) or not fit.converged:
        return False
    fraction = report["below_noise_fraction"]
    limit = report["noise_condition_limit"]
    condition = report["condition_number"]
    return bool(fraction >= BELOW_NOISE_LIMIT
                or (np.isfinite(limit) and condition > CONDITION_MARGIN * limit)
                or report["relative_error"] >= RELATIVE_ERROR_LIMIT)


def _advice(shape, report) -> str:
    condition = report["condition_number"]
    gram = ("" if np.isnan(condition) else
            f"; the Gram matrix's condition number is {condition:.3g}, the noise allows about "
            f"{report['noise_condition_limit']:.3g}")
    return (
        f"the images barely determine this {shape[0]}x{shape[1]} kernel: its relative "
        f"standard error is about {report['relative_error']:.2g} and "
        f"{report['below_noise_fraction']:.0%} of its frequencies are below the noise (a's "
        f"power there, seen through the kernel, is weaker than the noise in b){gram}; use a "
        "larger or more textured image, a regulariser (reg='laplacian' or reg='ridge'), "
        "nonneg=True, or a parametric model (e.g. model='gaussian'); see "
        "fit.info['identifiability']"
    )


class RankDeficientWarning(IdentifiabilityWarning):
    """The images do not determine every kernel coefficient.

    The extreme case of :class:`kernelfit.IdentifiabilityWarning` (a subclass of
    ``UserWarning``), so filtering that category filters this one too.
    """
