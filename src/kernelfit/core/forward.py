"""The forward model ``b = a ⊛ k`` and its adjoint with respect to the kernel."""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from .conventions import Geometry, as_image, make_geometry, masked_as_nan, normalize_shape
from . import tiling
from .threads import uses_threads


@uses_threads
def convolve(a, kernel, *, boundary="fill", center=None, mode="same"):
    """Convolve image ``a`` with ``kernel`` — the forward model that :func:`estimate` inverts.

    ``out[i] = sum_j kernel[j] * a[i + center - j]``, with ``a`` extended beyond its edges by
    ``boundary``.  This equals ``scipy.signal.convolve2d(a, kernel, mode, boundary)`` for
    ``'fill'``, ``'wrap'`` and ``'reflect'`` (``'symm'`` there), and
    ``scipy.ndimage.convolve(a, kernel, mode=boundary)`` for every ndimage mode when
    ``center=(kh // 2, kw // 2)`` (ndimage's centre; it differs only for even sizes).

    Parameters
    ----------
    a : (H, W) array_like
        The image.  Integers are promoted to float64; float32 is kept.
    kernel : (kh, kw) array_like, or a varying kernel
        The kernel, in convolution orientation.  It may be larger than ``a``.  A
        :class:`kernelfit.VaryingKernel` (or a fit with ``variation=``) gives
        ``Σ_t m_t ⊙ (a ⊛ k_t)``, each output pixel with its own kernel (its ``center`` is the
        default centre).
    boundary : str, default 'fill'
        ``'fill'`` (zeros), ``'wrap'``, ``'reflect'``, ``'nearest'``, ``'mirror'``, or
        ``'valid'`` (no extension: the output is the 'valid' part only).
    center : (int, int), optional
        Kernel index that lands on the output pixel; default ``((kh-1)//2, (kw-1)//2)``.
    mode : {'same', 'valid', 'full'}, default 'same'
        Output size: like ``a``, ``a.shape - kernel.shape + 1`` or ``a.shape + kernel.shape - 1``.

    Returns
    -------
    ndarray or numpy.ma.MaskedArray
        The convolved image.  NaN/inf pixels of ``a`` spoil only their footprint (the kernel
        box around them), as in ``scipy.signal.convolve2d``.  For a masked ``a``
        (``numpy.ma.MaskedArray``) a masked array: every output pixel whose footprint touches
        a masked pixel is masked, and its value is NaN (a masked pixel counts as NaN, so the
        hidden values never leak into the result, even if the mask is dropped later).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> a = np.arange(16.0).reshape(4, 4)
    >>> kf.convolve(a, [[0, 0, 0], [0, 1, 0], [0, 0, 0]]).tolist() == a.tolist()
    True
    """
    if np.ma.isMaskedArray(a):
        return _convolve_masked(a, kernel, boundary=boundary, center=center, mode=mode)
    varying = _as_varying(kernel)
    if varying is not None:
        return varying.convolve(a, boundary=boundary, center=center, mode=mode)
    a = as_image(a, "a")
    if np.ma.isMaskedArray(kernel) and np.ma.getmaskarray(kernel).any():
        raise ValueError(f"kernel is a masked array with {np.ma.count_masked(kernel)} masked "
                         "entries; a kernel needs every value (fill them first)")
    kernel = as_image(kernel, "kernel")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel contains NaN or infinite values")
    if boundary == "valid":
        mode = "valid"
    geometry = make_geometry(a.shape, kernel.shape, boundary=boundary, center=center,
                             output_size=mode)
    return convolve_extended(geometry.extend(a), kernel)


def _convolve_masked(a, kernel, *, boundary, center, mode):
    """:func:`convolve` of a masked array: masked pixels are NaN, their footprint is masked."""
    filled = masked_as_nan(a)
    out = convolve(filled, kernel, boundary=boundary, center=center, mode=mode)
    varying = _as_varying(kernel)
    shape = varying.shape if varying is not None else np.shape(kernel)
    if varying is not None:
        center = varying.center if center is None else center
    mask = np.ma.getmaskarray(a)
    if boundary == "valid":
        mode = "valid"
    geometry = make_geometry(mask.shape, shape, boundary=boundary, center=center,
                             output_size=mode)
    footprint = box_counts(geometry.extend(mask), geometry.kernel_shape) > 0
    return np.ma.MaskedArray(out, mask=footprint)


def _as_varying(kernel):
    """The varying kernel a kernel argument stands for, or None for a plain array.

    Recognised by what it does, not by its type: a varying kernel has ``term_values`` (see
    :class:`kernelfit.core.varying.VaryingKernel`), and a fit of one carries it as ``varying``.
    """
    if isinstance(kernel, np.ndarray):
        return None
    if hasattr(kernel, "term_values") and hasattr(kernel, "convolve"):
        return kernel
    return getattr(kernel, "varying", None)


# Direct summation is exact to the last ulp; FFT convolution has errors of ~1e-16 times the
# largest output.  Below this many multiply-adds direct summation is also fast, so use it.
_DIRECT_WORK_LIMIT = 2e7


def convolve_extended(extended, kernel):
    """'valid' convolution of an already-extended image (direct when cheap, else FFT).

    Non-finite pixels of ``extended`` spoil only their footprint, exactly as in
    ``scipy.signal.convolve2d`` (see :func:`_nonfinite_footprint`), whichever method runs:
    an FFT would otherwise spread one NaN over the whole output.
    """
    dtype = np.result_type(extended.dtype, kernel.dtype)
    kernel = kernel.astype(dtype, copy=False)
    if all_finite(extended):
        return _convolve_finite(extended, kernel).astype(dtype, copy=False)
    bad = ~np.isfinite(extended)
    out = _convolve_finite(np.where(bad, 0.0, extended).astype(dtype, copy=False), kernel)
    spoiled, values = _nonfinite_footprint(extended, bad, kernel)
    out[spoiled] = values
    return out.astype(dtype, copy=False)


def _convolve_finite(extended, kernel):
    out_size = (extended.shape[0] - kernel.shape[0] + 1) * (extended.shape[1] - kernel.shape[1] + 1)
    if tiling.is_large(out_size):
        return _convolve_tiled(extended, kernel)
    method = "direct" if out_size * kernel.size <= _DIRECT_WORK_LIMIT else "fft"
    return scipy.signal.convolve(extended, kernel, mode="valid", method=method)


def all_finite(image) -> bool:
    """Whether every value of ``image`` is finite, in one cheap pass."""
    # The sum is finite only if every term is (a sum that overflows merely
    # sends the caller to the exact pixel-by-pixel treatment, which then finds nothing).
    with np.errstate(over="ignore", invalid="ignore"):   # inf + -inf is NaN: not finite
        return bool(np.isfinite(np.sum(image, dtype=np.float64)))


def _nonfinite_footprint(extended, bad, kernel):
    """Where non-finite input pixels reach the 'valid' output, and the value they leave there.

    ``scipy.signal.convolve2d`` multiplies every kernel entry, zeros included, so a NaN or inf
    input pixel reaches the whole kernel box around it, and an output pixel that it reaches
    is NaN when any product is NaN (a NaN input, or ``0 · inf``) or infinities of both signs
    meet; otherwise it is the sign of the infinities.  The counts come from convolutions of
    0/1 images with 0/1 kernels, exact integers after rounding.

    Returns the mask of the affected output pixels and their values (a 1-D array).
    """
    kh, kw = kernel.shape
    box = box_counts(bad, (kh, kw)) > 0
    if not box.any():
        return box, np.empty(0)
    nan_in, pos_in, neg_in = np.isnan(extended), extended == np.inf, extended == -np.inf
    pos_k, neg_k, zero_k = kernel > 0, kernel < 0, kernel == 0
    count = _indicator_convolution
    nan_hits = box_counts(nan_in, (kh, kw)) + count(pos_in | neg_in, zero_k)
    up = count(pos_in, pos_k) + count(neg_in, neg_k)
    down = count(pos_in, neg_k) + count(neg_in, pos_k)
    values = np.where(up > 0, np.inf, -np.inf)
    values[(nan_hits > 0) | ((up > 0) & (down > 0))] = np.nan
    return box, values[box]


def box_counts(flags, shape):
    """For each 'valid' output pixel, how many ``flags`` lie in its ``shape`` box (exact)."""
    kh, kw = shape
    integral = np.pad(np.cumsum(np.cumsum(flags, axis=0, dtype=np.int64), axis=1),
                      ((1, 0), (1, 0)))
    return (integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw]
            + integral[:-kh, :-kw])


def _indicator_convolution(image_flags, kernel_flags):
    """'valid' convolution of two 0/1 arrays, rounded to the exact integer counts."""
    if not image_flags.any() or not kernel_flags.any():
        return np.zeros((image_flags.shape[0] - kernel_flags.shape[0] + 1,
                         image_flags.shape[1] - kernel_flags.shape[1] + 1), np.int64)
    counts = _convolve_finite(image_flags.astype(np.float64), kernel_flags.astype(np.float64))
    return np.rint(counts).astype(np.int64)


def _convolve_tiled(extended, kernel):
    """'valid' convolution, one ``CONVOLUTION_TILE``² block of the output at a time (each block
    reads its footprint of ``extended``: the output tiles exactly)."""
    kh, kw = kernel.shape
    H, W = extended.shape[0] - kh + 1, extended.shape[1] - kw + 1
    out = np.empty((H, W), dtype=np.result_type(extended.dtype, kernel.dtype))
    for rows, cols in tiling.tile_slices((H, W), tiling.CONVOLUTION_TILE):
        out[rows, cols] = scipy.signal.fftconvolve(
            extended[rows.start:rows.stop + kh - 1, cols.start:cols.stop + kw - 1], kernel,
            mode="valid")
    return out


class KernelOperator:
    """The linear map ``k ↦ (a ⊛ k)`` restricted to the used pixels, and its adjoint.

    The adjoint ``r ↦ Xᵀr`` is the correlation of the extended image with ``r``; together
    they are what iterative solvers need, and they must pass the dot test
    ``<X k, r> == <k, Xᵀ r>``.

    Parameters
    ----------
    a : (H, W) array_like
    shape : int or (kh, kw)
    boundary, center, output_size :
        As in :func:`kernelfit._conventions.make_geometry`.

    Examples
    --------
    >>> import numpy as np
    >>> op = KernelOperator(np.ones((5, 5)), 3, boundary="fill")
    >>> op.forward(np.ones((3, 3))).shape
    (5, 5)
    """

    def __init__(self, a, shape, *, boundary="valid", center=None, output_size="same"):
        a = as_image(a, "a").astype(np.float64, copy=False)
        self.shape = normalize_shape(shape)
        self.geometry: Geometry = make_geometry(
            a.shape, self.shape, boundary=boundary, center=center, output_size=output_size
        )
        self.extended = self.geometry.extend(a)

    def forward(self, kernel):
        """``X k``: the used rectangle of ``a ⊛ kernel``."""
        return convolve_extended(self.extended, np.asarray(kernel, dtype=np.float64))

    def adjoint(self, residual):
        """``Xᵀ r``: a kernel-shaped array, ``sum_i r[i] * P[i + kh-1-j]``."""
        r = np.asarray(residual, dtype=np.float64)
        return scipy.signal.correlate(self.extended, r, mode="valid")[::-1, ::-1]


class ExtendedSpectrum:
    """The 2-D real FFT of an extended image, shared by the statistics and the prediction.

    The transform length is the smallest fast length ``>= P.shape``.  That is enough for every
    product computed here to be free of wrap-around: 'valid' convolutions and correlations
    only reach indices inside ``P``, and the core (``P`` inset by the kernel size on every
    side) never reaches past ``P`` at lags smaller than the kernel.  Where only a few outputs
    are needed, the inverse transform computes only those rows of its last pass.

    Parameters
    ----------
    extended : (Ph, Pw) ndarray
        The extended image ``P``, finite.
    kernel_shape : (kh, kw)

    Examples
    --------
    >>> import numpy as np
    >>> P, k = np.random.default_rng(0).random((9, 8)), np.ones((2, 3))
    >>> np.allclose(ExtendedSpectrum(P, k.shape).convolve_valid(k), convolve_extended(P, k))
    True
    """

    def __init__(self, extended, kernel_shape):
        self.extended = extended
        self.kernel_shape = tuple(kernel_shape)
        self.fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in extended.shape)
        self.hat = scipy.fft.rfft2(extended, self.fft_shape)

    def convolve_valid(self, kernel):
        """'valid' convolution of ``P`` with ``kernel`` (shape ``kernel_shape``)."""
        kh, kw = self.kernel_shape
        # The kernel has only kh non-zero rows: transform those along x, then along y.
        kernel_hat = scipy.fft.fft(scipy.fft.rfft(kernel, self.fft_shape[1], axis=1),
                                   self.fft_shape[0], axis=0)
        full = scipy.fft.irfft2(self.hat * kernel_hat, self.fft_shape)
        return full[kh - 1:self.extended.shape[0], kw - 1:self.extended.shape[1]]

    def correlate_valid(self, b):
        """``r[u] = Σ_i b[i]·P[i+u]`` for ``u`` in the kernel box (``b`` is 'valid'-sized)."""
        kh, kw = self.kernel_shape
        return self._correlation_at(b, np.arange(kh), np.arange(kw))

    def core_lag_sums(self):
        """``S[dy, dx] = Σ_{z in core} P(z)·P(z+d)`` for ``|dy| < kh``, ``|dx| < kw``.

        The core is ``P`` without its outer ``kh−1`` rows and ``kw−1`` columns; the result is
        indexed by ``d + (kh−1, kw−1)``.
        """
        ty, tx = self.kernel_shape[0] - 1, self.kernel_shape[1] - 1
        Ph, Pw = self.extended.shape
        # With the core moved to the origin, S(d) is its correlation with P at lag d + t.
        core = self.extended[ty:Ph - ty, tx:Pw - tx]
        return self._correlation_at(core, np.arange(2 * ty + 1), np.arange(2 * tx + 1))

    def _correlation_at(self, x, rows, cols):
        """``r[u] = Σ_i x[i]·P[i+u]`` for ``u`` in ``rows × cols`` (non-negative lags).

        Only a few lags are needed, so the inverse transform's first pass (along y) is
        complete but its last pass runs only on the needed rows.
        """
        spectrum = scipy.fft.rfft2(x, self.fft_shape)
        np.conjugate(spectrum, out=spectrum)
        spectrum *= self.hat
        partial = scipy.fft.ifft(spectrum, axis=0, overwrite_x=True)[rows]
        return scipy.fft.irfft(partial, self.fft_shape[1], axis=1)[:, cols]
