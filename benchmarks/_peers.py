"""The methods compared by ``bench_free_kernel.py``.

Every function takes ``(a, b, b_same, shape, opts)`` and returns ``(kernel, note)``:

* ``a`` — the sharp image, ``b`` — ``a ⊛ k`` in 'valid' size plus noise (no edge assumption),
  ``b_same`` — the same blur at ``a``'s size (edges extended by replication) plus noise, for
  the methods that need two images of one size;
* ``kernel`` — in convolution orientation with its centre at ``((kh-1)//2, (kw-1)//2)``,
  the convention of ``kernelfit.convolve`` (and of ``scipy.signal.convolve2d``);
* ``note`` — a short remark printed next to the method's row.

The peers are written the way a user would write them with each tool; none of them calls
kernelfit.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

import kernelfit as kf

# Each chunk of the im2col matrix is kept near this size in the chunked normal equations.
NE_CHUNK_BYTES = 128 * 2**20


def run_kernelfit(a, b, b_same, shape, opts):
    fit = kf.estimate(a, b, shape)  # boundary='valid' is the default
    return fit.kernel, ""


def run_chunked_ne(a, b, b_same, shape, opts):
    """Normal equations ``XᵀX k = Xᵀb`` accumulated over row blocks of the im2col matrix."""
    kh, kw = shape
    p = kh * kw
    windows = sliding_window_view(a, shape)          # windows[i, j] = a[i:i+kh, j:j+kw]
    n_rows, n_cols = b.shape
    rows = max(1, int(NE_CHUNK_BYTES // (n_cols * p * 8)))
    gram = np.zeros((p, p))
    rhs = np.zeros(p)
    for r0 in range(0, n_rows, rows):
        X = windows[r0:r0 + rows].reshape(-1, p)     # copies one block of footprints
        gram += X.T @ X
        rhs += X.T @ b[r0:r0 + rows].ravel()
    solution = scipy.linalg.solve(gram, rhs, assume_a="pos")
    # Window position (u, v) multiplies kernel entry (kh-1-u, kw-1-v): flip both axes.
    note = f"blocks of {rows} rows ({rows * n_cols * p * 8 / 2**20:.0f} MiB)"
    return solution.reshape(shape)[::-1, ::-1], note


def run_lstsq(a, b, b_same, shape, opts):
    """Full im2col matrix and ``np.linalg.lstsq``, on a central crop when it would not fit."""
    kh, kw = shape
    n = min(opts["lstsq_crop"], a.shape[0], a.shape[1])
    y0, x0 = (a.shape[0] - n) // 2, (a.shape[1] - n) // 2
    a_crop = a[y0:y0 + n, x0:x0 + n]
    b_crop = b[y0:y0 + n - kh + 1, x0:x0 + n - kw + 1]
    X = sliding_window_view(a_crop, shape).reshape(-1, kh * kw)
    solution = np.linalg.lstsq(X, b_crop.ravel(), rcond=None)[0]
    if n < min(a.shape):
        full_gib = b.size * kh * kw * 8 / 2**30
        note = (f"on a {n}x{n} crop (X {X.nbytes / 2**30:.2f} GiB); the full X would need "
                f"{full_gib:.1f} GiB")
    else:
        note = f"whole image (X {X.nbytes / 2**30:.2f} GiB)"
    return solution.reshape(shape)[::-1, ::-1], note


def pylops_operator(a, shape):
    """``kernel ↦ valid part of a ⊛ kernel`` from pylops building blocks.

    The kernel (the model) is zero-padded to ``a``'s size, convolved with ``a`` by
    ``Convolve2D`` (``a`` acting as the filter; convolution commutes) and the rows and columns
    of the 'valid' output are kept with two ``Restriction`` operators.
    """
    import pylops

    H, W = a.shape
    kh, kw = shape
    conv = pylops.signalprocessing.Convolve2D((H, W), h=a, offset=(H // 2, W // 2),
                                              method="fft")
    # Convolve2D returns the 'same' part of the full convolution, which starts at
    # (nh - 1) // 2 for its (possibly padded) filter shape nh; place the kernel so that the
    # first 'valid' output pixel lands on row/column 0.
    py = (conv.nh[0] - 1) // 2 - (kh - 1)
    px = (conv.nh[1] - 1) // 2 - (kw - 1)
    pad = pylops.Pad((kh, kw), ((py, H - kh - py), (px, W - kw - px)))
    keep_rows = pylops.Restriction((H, W), np.arange(H - kh + 1), axis=0)
    keep_cols = pylops.Restriction((H - kh + 1, W), np.arange(W - kw + 1), axis=1)
    return keep_cols @ keep_rows @ conv @ pad


def run_pylops(a, b, b_same, shape, opts):
    from pylops.optimization.basic import lsqr

    op = pylops_operator(a, shape)
    out = lsqr(op, b.ravel(), niter=opts["pylops_iter"])
    x, istop, iterations = out[0], out[1], out[2]
    return x.reshape(shape), f"LSQR {iterations} iterations (istop={istop})"


def run_fft_ratio(a, b, b_same, shape, opts):
    """``irfft2(rfft2(b) / rfft2(a))`` cropped around the origin (needs same-sized images)."""
    kh, kw = shape
    ratio = np.fft.irfft2(np.fft.rfft2(b_same) / np.fft.rfft2(a), s=a.shape)
    # Circular lag m holds kernel entry m + centre.
    centre = ((kh - 1) // 2, (kw - 1) // 2)
    return np.roll(ratio, centre, axis=(0, 1))[:kh, :kw], "same-sized b (edges replicated)"


def run_ois(a, b, b_same, shape, opts):
    """Bramich delta-basis kernel from the ``ois`` package (only when it is installed)."""
    import ois

    out = ois.optimal_system(b_same, a, kernelshape=shape, bkgdegree=None, method="Bramich")
    kernel = np.asarray(out[2], dtype=float)
    return kernel, "same-sized b (edges replicated)"


PEERS = {
    "kernelfit": run_kernelfit,
    "chunked-ne": run_chunked_ne,
    "lstsq": run_lstsq,
    "pylops": run_pylops,
    "fft-ratio": run_fft_ratio,
    "ois": run_ois,
}

DESCRIPTIONS = {
    "kernelfit": "kf.estimate(a, b, shape), boundary='valid'",
    "chunked-ne": "im2col in row blocks, XᵀX and Xᵀb with BLAS, Cholesky solve",
    "lstsq": "full im2col matrix + np.linalg.lstsq",
    "pylops": "LSQR on Pad -> Convolve2D(h=a) -> Restriction",
    "fft-ratio": "irfft2(rfft2(b)/rfft2(a)), cropped around the origin",
    "ois": "ois.optimal_system, method='Bramich'",
}


def available(name):
    """``None`` if the peer can run here, else the reason it cannot."""
    modules = {"pylops": "pylops", "ois": "ois"}
    if name in modules:
        try:
            __import__(modules[name])
        except ImportError as exc:
            return f"not installed ({exc})"
    return None
