"""The FFT operator of the matrix-free path: ``X k`` and ``Xᵀ r`` without forming ``X``.

The objective of every matrix-free solver is the library's::

    F(k) = ‖W(Xk − b)‖² / n  +  lam · R(k)          (n = number of used pixels, W = 0/1 mask)

summed over image pairs, with ``X`` the 'valid' convolution of each pair's extended image
``P`` with the kernel (see :mod:`kernelfit.core.conventions`) and ``R`` a regulariser of
:mod:`kernelfit.solvers.regularisers`.

``X k`` and ``Xᵀ r`` are products of real FFTs with the spectrum of ``P``, which is taken
once.  Rows and columns of ``P`` that are entirely zero (zero padding, ``'fill'``) are
dropped first, and the transform length along each axis is the smallest fast length
``L ≥ max(hi, Ph − lo, kh)``, where ``[lo, hi)`` is the span that is left: a circular
convolution of that length agrees with the linear one on every index that is read (a
wrapped product would have to land on an index at least ``hi`` above the first one read, or
below the last one).  For seed 000 (100² image, 199² kernel, ``'fill'``) that is 200²
instead of 300².
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ..core.conventions import normalize_shape

__all__ = ["FFTKernelOperator", "as_operator"]


class FFTKernelOperator:
    """``X`` (kernel → used pixels of ``b``) of one or several image pairs, by FFT.

    For each pair, ``(X k)[i] = Σ_j k[j] · P[i + (kh−1, kw−1) − j]`` on the used rectangle
    (the 'valid' convolution of the extended image ``P`` with ``k``), times the use mask
    ``W`` (0 at pixels that are not used).  The FFT of each ``P`` is computed once, here;
    afterwards :meth:`forward` and :meth:`adjoint` cost two real FFTs per pair and
    :meth:`normal` (``Σ XᵀWX k``) four.  All methods accept a stack of kernels
    ``(m, kh, kw)`` (or of residuals) and then transform them together.

    Parameters
    ----------
    pairs : PreparedPair or list of them
        Objects with attributes ``extended`` (``P``), ``b_used`` and ``use`` (``None`` or a
        boolean mask like ``b_used``), e.g. :class:`kernelfit.design.PreparedPair`.
    shape : int or (kh, kw)
        Kernel shape.

    Attributes
    ----------
    shape : (int, int)
    n_used : int
        Number of used pixels over all pairs (``n`` of the objective).
    rhs : ndarray
        ``Σ XᵀWb`` (kernel-shaped).
    btb : float
        ``Σ ‖Wb‖²``.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.random((20, 20)), rng.random((20, 20))
    >>> op = FFTKernelOperator([prepare_pair(a, b, 5, boundary="fill")], 5)
    >>> k, r = rng.normal(size=(5, 5)), rng.normal(size=(20, 20))
    >>> bool(np.isclose(np.vdot(op.forward(k)[0], r), np.vdot(k, op.adjoint([r]))))
    True
    """

    def __init__(self, pairs, shape):
        self.shape = normalize_shape(shape)
        if not isinstance(pairs, (list, tuple)):
            pairs = [pairs]
        if len(pairs) == 0:
            raise ValueError("pairs is empty; pass at least one prepared image pair")
        self._blocks = [_PairBlock(pair, self.shape, index) for index, pair in enumerate(pairs)]
        self.n_used = int(sum(block.n_used for block in self._blocks))
        self.btb = float(sum(np.vdot(block.b, block.b) for block in self._blocks))
        self.rhs = self.adjoint([block.b for block in self._blocks])
        self._diagonal = None

    @property
    def n_pairs(self) -> int:
        return len(self._blocks)

    @property
    def used_shapes(self) -> list:
        """Shape of the used rectangle of every pair."""
        return [block.out_shape for block in self._blocks]

    @property
    def masks(self) -> list:
        """The 0/1 weights ``W`` of every pair (``None`` where every pixel is used)."""
        return [block.weights for block in self._blocks]

    def forward(self, kernel):
        """``W X k`` for every pair: a list of used-rectangle arrays (0 where not used)."""
        kernel = self._check_kernel(kernel)
        return [block.forward(kernel) for block in self._blocks]

    def adjoint(self, residuals):
        """``Σ_pairs Xᵀ W r``, kernel-shaped; ``residuals`` holds one array per pair."""
        out = None
        for block, r in zip(self._blocks, self._one_per_pair(residuals)):
            r = np.asarray(r, dtype=np.float64)
            if r.shape[-2:] != block.out_shape:
                raise ValueError(f"residuals has an array of shape {r.shape}; expected "
                                 f"{block.out_shape} (the used rectangle)")
            term = block.adjoint(r)
            out = term if out is None else out + term
        return out

    def _one_per_pair(self, residuals) -> list:
        """``residuals`` as a list of one array per pair (a lone array for one pair); the
        count is checked here because ``zip`` would silently drop extra arrays."""
        if isinstance(residuals, np.ndarray):
            residuals = [residuals]
        if len(residuals) != len(self._blocks):
            raise ValueError(f"residuals has {len(residuals)} arrays; expected one per pair "
                             f"({len(self._blocks)})")
        return residuals

    def normal(self, kernel):
        """``Σ_pairs Xᵀ W X k`` (the Gram matrix applied to ``k``; 4 FFTs per pair)."""
        kernel = self._check_kernel(kernel)
        if kernel.ndim == 3:
            # One kernel at a time: the transforms of a whole stack fall out of the cache
            # and run slower per kernel (measured: 5 kernels of 199² take 1.5× as long).
            return np.stack([self.normal(k) for k in kernel])
        out = None
        for block in self._blocks:
            term = block.adjoint(block.forward(kernel), weighted=False)
            out = term if out is None else out + term
        return out

    def diagonal(self):
        """``diag(Σ XᵀWX)``, kernel-shaped: the correlation of ``P²`` with ``W`` (one FFT)."""
        if self._diagonal is None:
            self._diagonal = sum(block.diagonal() for block in self._blocks)
        return self._diagonal

    def residual_sum_of_squares(self, kernel) -> float:
        """``Σ ‖W(Xk − b)‖²`` computed from the residual images (no cancellation)."""
        return float(sum(np.sum((y - block.b) ** 2)
                         for y, block in zip(self.forward(kernel), self._blocks)))

    def _check_kernel(self, kernel):
        k = np.asarray(kernel, dtype=np.float64)
        if k.ndim not in (2, 3) or k.shape[-2:] != self.shape:
            raise ValueError(f"kernel has shape {k.shape}; expected {self.shape} "
                             "(or a stack of them)")
        return k


class _PairBlock:
    """One pair's share of :class:`FFTKernelOperator`."""

    def __init__(self, pair, shape, index):
        try:
            P, b_used, use = pair.extended, pair.b_used, pair.use
        except AttributeError:
            raise TypeError(f"pairs[{index}] must have attributes extended, b_used and use "
                            "(a kernelfit.design.PreparedPair)") from None
        P = np.asarray(P, dtype=np.float64)
        b_used = np.asarray(b_used, dtype=np.float64)
        kh, kw = shape
        if P.ndim != 2 or P.shape[0] < kh or P.shape[1] < kw:
            raise ValueError(f"pairs[{index}].extended has shape {P.shape}; it must be 2-D "
                             f"and at least as large as the kernel {shape}")
        out_shape = (P.shape[0] - kh + 1, P.shape[1] - kw + 1)
        if b_used.shape != out_shape:
            raise ValueError(f"pairs[{index}].b_used has shape {b_used.shape}; the 'valid' "
                             f"convolution of extended {P.shape} with {shape} is {out_shape}")
        if not (np.all(np.isfinite(P)) and np.all(np.isfinite(b_used))):
            raise ValueError(f"pairs[{index}] contains NaN or inf; prepare it with "
                             "kernelfit.design.prepare_pair")
        if use is not None:
            use = np.asarray(use, dtype=bool)
            if use.shape != out_shape:
                raise ValueError(f"pairs[{index}].use has shape {use.shape}; expected "
                                 f"{out_shape}")
            if use.all():
                use = None
        self.shape = shape
        self.out_shape = out_shape
        self.weights = None if use is None else use.astype(np.float64)
        self.n_used = b_used.size if use is None else int(use.sum())
        self.b = b_used if use is None else np.where(use, b_used, 0.0)
        # All-zero rows/columns at the edges of P (zero padding) carry nothing: drop them and
        # shrink the FFT.  At most kh−1 rows are dropped at the top so that the forward read
        # offset kh−1−r0 stays non-negative.
        (r0, r1), (c0, c1) = _nonzero_span(P, 0, kh), _nonzero_span(P, 1, kw)
        self.trimmed = P[r0:r1, c0:c1]
        self.fft_shape = tuple(
            scipy.fft.next_fast_len(max(hi, n - lo, k), real=True)
            for hi, lo, n, k in ((r1, r0, P.shape[0], kh), (c1, c0, P.shape[1], kw))
        )
        self.start = (kh - 1 - r0, kw - 1 - c0)
        self.hat = scipy.fft.rfft2(self.trimmed, self.fft_shape)
        # The adjoint reads the circular correlation at lags j − (r0, c0); multiplying the
        # spectrum by a phase ramp once moves those lags to 0..kh−1 × 0..kw−1.
        self._ramp = self._phase_ramp(r0, c0)
        self.hat_adjoint = self.hat * self._ramp

    def _phase_ramp(self, r0, c0):
        Ly, Lx = self.fft_shape
        fy = np.fft.fftfreq(Ly)[:, None]
        fx = np.fft.rfftfreq(Lx)[None, :]
        return np.exp(-2j * np.pi * (fy * r0 + fx * c0))

    def forward(self, kernel):
        y0, x0 = self.start
        Ho, Wo = self.out_shape
        spectrum = scipy.fft.rfft2(kernel, self.fft_shape)
        spectrum *= self.hat
        out = scipy.fft.irfft2(spectrum, self.fft_shape)[..., y0:y0 + Ho, x0:x0 + Wo]
        if self.weights is not None:
            return out * self.weights
        return np.ascontiguousarray(out)

    def adjoint(self, r, *, weighted=True):
        if weighted and self.weights is not None:
            r = r * self.weights
        return self._correlate(r, self.hat_adjoint)

    def diagonal(self):
        w = np.ones(self.out_shape) if self.weights is None else self.weights
        hat_sq = scipy.fft.rfft2(self.trimmed ** 2, self.fft_shape) * self._ramp
        # Sums of non-negative terms: clip the FFT's rounding below zero.
        return np.maximum(self._correlate(w, hat_sq), 0.0)

    def _correlate(self, r, hat):
        kh, kw = self.shape
        spectrum = scipy.fft.rfft2(r, self.fft_shape)
        np.conjugate(spectrum, out=spectrum)
        spectrum *= hat
        corr = scipy.fft.irfft2(spectrum, self.fft_shape)[..., :kh, :kw]
        return np.ascontiguousarray(corr[..., ::-1, ::-1])


def _nonzero_span(P, axis, k):
    """``(lo, hi)``: rows (axis 0) or columns (axis 1) of ``P`` outside ``[lo, hi)`` are 0.

    ``lo`` is capped at ``k − 1`` so that the forward read offset stays non-negative.
    """
    nonzero = np.flatnonzero(np.any(P != 0, axis=1 - axis))
    if nonzero.size == 0:
        return 0, P.shape[axis]
    return min(int(nonzero[0]), k - 1), int(nonzero[-1]) + 1


def as_operator(pairs, shape) -> FFTKernelOperator:
    """``pairs`` as an operator: an :class:`FFTKernelOperator` is reused (its shape checked)."""
    if isinstance(pairs, FFTKernelOperator):
        if pairs.shape != normalize_shape(shape):
            raise ValueError(f"shape={shape!r} differs from the operator's kernel shape "
                             f"{pairs.shape}")
        return pairs
    return FFTKernelOperator(pairs, shape)
