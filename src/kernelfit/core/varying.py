"""(moved from kernelfit.variation)"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from math import comb

import numpy as np
import scipy.fft

from .conventions import as_image, make_geometry
from .forward import convolve as convolve_plain

# The FFT length of one block of the blocked residual (:func:`residual_valid`), the kernel's
# rows and columns included: small enough for a block's transforms to stay in cache, large
# enough that the kernel's overlap is a small part (measured, see BENCHMARKS.md).  Read at
# call time, so tests may lower it.
RESIDUAL_FFT_LENGTH = 256


def check_variation(degree) -> int:
    """Validate ``variation=``: a non-negative integer polynomial degree.

    Examples
    --------
    >>> check_variation(2)
    2
    """
    if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, numbers.Integral) \
            or degree < 0:
        raise ValueError(f"variation={degree!r} must be None or a non-negative integer (the "
                         "polynomial degree of the kernel's variation over the image)")
    return int(degree)


def monomial_powers(degree: int) -> list[tuple[int, int]]:
    """``(p, q)`` of the terms ``y^p x^q``, total degree ``≤ degree``: ``1, x, y, x², xy, y², …``.

    Examples
    --------
    >>> monomial_powers(1)
    [(0, 0), (0, 1), (1, 0)]
    """
    return [(p, n - p) for n in range(degree + 1) for p in range(n + 1)]


def term_names(degree: int) -> list[str]:
    """Names of the terms, e.g. ``['1', 'x', 'y']`` for degree 1.

    Examples
    --------
    >>> term_names(2)
    ['1', 'x', 'y', 'x^2', 'x*y', 'y^2']
    """
    def power(variable, n):
        return "" if n == 0 else variable if n == 1 else f"{variable}^{n}"

    return ["*".join(filter(None, (power("x", q), power("y", p)))) or "1"
            for p, q in monomial_powers(degree)]


def scaled(coordinate, n: int):
    """Pixel index along an axis of ``n`` pixels → ``[−1, 1]`` (0 for a single pixel)."""
    coordinate = np.asarray(coordinate, dtype=np.float64)
    return 2.0 * coordinate / (n - 1) - 1.0 if n > 1 else 0.0 * coordinate


def term_values(powers, frame, y, x) -> np.ndarray:
    """``m_t(y, x)`` for the terms ``powers`` (:func:`monomial_powers`) at pixel ``(y, x)`` of
    ``frame`` (scalars or broadcastable arrays): shape ``(T,) + broadcast shape``.

    Examples
    --------
    >>> term_values(monomial_powers(1), (11, 21), 0, 20).tolist()   # 1, x, y at a corner
    [1.0, 1.0, -1.0]
    """
    sy, sx = scaled(y, frame[0]), scaled(x, frame[1])
    return np.array([sy ** p * sx ** q for p, q in powers])


def grid_positions(frame, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ``(rows, columns)`` of an ``n × n`` grid spanning ``frame`` from corner to corner.

    The positions along each axis are ``linspace(0, size − 1, n)`` (scaled coordinates
    ``linspace(−1, 1, n)``): ``n = 3`` gives the corners, the edge midpoints and the centre
    (fractional for an even size).  Flattened, rows first.

    Examples
    --------
    >>> ys, xs = grid_positions((5, 9), 3)
    >>> ys.tolist(), xs.tolist()
    ([0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0], [0.0, 4.0, 8.0, 0.0, 4.0, 8.0, 0.0, 4.0, 8.0])
    """
    ys, xs = np.meshgrid(np.linspace(0.0, frame[0] - 1, n), np.linspace(0.0, frame[1] - 1, n),
                         indexing="ij")
    return ys.ravel(), xs.ravel()


def translation_blocks(shape, center, powers, frame) -> np.ndarray:
    """``M[j, s, t]`` with ``m_s(ζ + δ_j) = Σ_t M[j, s, t]·m_t(ζ)``, ``δ_j`` the scaled offset
    ``j − center`` of kernel pixel ``j``: the blocks of ``B`` in ``X_ext = X_T · B``."""
    kh, kw = shape
    p, T = kh * kw, len(powers)
    gy, gx = (2.0 / (n - 1) if n > 1 else 0.0 for n in frame)
    jy, jx = np.divmod(np.arange(p), kw)
    dy, dx = (jy - center[0]) * gy, (jx - center[1]) * gx
    M = np.zeros((p, T, T))
    for s, (ps, qs) in enumerate(powers):
        for t, (pt, qt) in enumerate(powers):
            if pt <= ps and qt <= qs:
                M[:, s, t] = comb(ps, pt) * comb(qs, qt) * dy ** (ps - pt) * dx ** (qs - qt)
    return M


@dataclass
class VaryingKernel:
    """A kernel whose coefficients are polynomials of the position: ``Σ_t m_t(y, x)·k_t``.

    Parameters
    ----------
    coefficients : (T, kh, kw) ndarray
        ``k_t`` for the terms of :func:`monomial_powers` (``coefficients[0]`` is the kernel at
        the centre of the frame).
    degree : int
    frame : (H, W)
        The shape of ``b`` whose pixel indices are the coordinates (scaled to [−1, 1]).
    center : (int, int)
        Kernel index landing on the output pixel, as in :func:`kernelfit.convolve`.
    origin : (int, int), default (0, 0)
        Index of ``a`` on which pixel ``(0, 0)`` of the frame is centred (0 for a ``b`` shaped
        like ``a``; ``−center`` for a 'full' ``b``, ``shape − 1 − center`` for a 'valid' one);
        :meth:`convolve` uses it to place any output it makes on the frame.

    Examples
    --------
    >>> import numpy as np
    >>> k0, kx = np.eye(3) / 3, np.eye(3)[::-1] / 30
    >>> vk = VaryingKernel(np.stack([k0, kx, 0 * k0]), 1, frame=(21, 41), center=(1, 1))
    >>> np.allclose(vk.at(10, 40), k0 + kx), np.allclose(vk.at(10, 20), k0)
    (True, True)
    """

    coefficients: np.ndarray
    degree: int
    frame: tuple[int, int]
    center: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    powers: list = field(init=False, repr=False)

    def __post_init__(self):
        self.degree = check_variation(self.degree)
        self.coefficients = np.asarray(self.coefficients, dtype=np.float64)
        self.powers = monomial_powers(self.degree)
        if self.coefficients.ndim != 3 or len(self.coefficients) != len(self.powers):
            raise ValueError(f"coefficients has shape {self.coefficients.shape}; degree="
                             f"{self.degree} needs ({len(self.powers)}, kh, kw)")
        if not np.all(np.isfinite(self.coefficients)):
            raise ValueError("coefficients contain NaN or infinite values")
        self.frame = tuple(int(n) for n in self.frame)
        self.center = tuple(int(c) for c in self.center)
        self.origin = tuple(int(o) for o in self.origin)

    @property
    def shape(self) -> tuple[int, int]:
        return self.coefficients.shape[1:]

    def term_values(self, y, x) -> np.ndarray:
        """``m_t`` at pixel ``(y, x)`` of the frame (scalars or broadcastable arrays)."""
        return term_values(self.powers, self.frame, y, x)

    def at(self, y, x) -> np.ndarray:
        """The kernel at pixel ``(y, x)`` of ``b`` (row, column; fractional and outside are
        fine: the polynomial is evaluated there)."""
        return np.tensordot(self.term_values(float(y), float(x)), self.coefficients, axes=1)

    def convolve(self, a, *, boundary="fill", center=None, mode="same") -> np.ndarray:
        """``Σ_t m_t ⊙ (a ⊛ k_t)``, exactly; the arguments are those of :func:`kernelfit.convolve`.

        Each output pixel takes the coordinates of the pixel of ``b`` it stands for, so
        ``convolve(a, fit.varying, boundary=fit.boundary)`` predicts the ``b`` of a fit.
        """
        center = self.center if center is None else center
        mode = "valid" if boundary == "valid" else mode
        planes = [convolve_plain(a, k, boundary=boundary, center=center, mode=mode)
                  for k in self.coefficients]
        geometry = make_geometry(as_image(a, "a").shape, self.shape, boundary=boundary,
                                 center=center, output_size=mode)
        shift = _output_origin(mode, self.shape, geometry.center)
        H, W = planes[0].shape
        return _weighted_sum(planes, self.powers, np.arange(H) + shift[0] - self.origin[0],
                             np.arange(W) + shift[1] - self.origin[1], self.frame)


def _output_origin(output_size, shape, center) -> tuple[int, int]:
    """Index of ``a`` on which output pixel ``(0, 0)`` is centred, for each output size."""
    return {"same": (0, 0), "valid": (shape[0] - 1 - center[0], shape[1] - 1 - center[1]),
            "full": (-center[0], -center[1])}[output_size]


def _weighted_sum(planes, powers, rows, cols, frame) -> np.ndarray:
    """``Σ_t y^p x^q ⊙ planes[t]`` with ``(y, x)`` the scaled ``rows × cols`` of ``frame``."""
    sy, sx = scaled(rows, frame[0]), scaled(cols, frame[1])
    out = np.zeros(np.shape(planes[0]), dtype=np.result_type(planes[0], np.float64))
    for plane, (p, q) in zip(planes, powers):
        out += (sy ** p)[:, None] * (sx ** q)[None, :] * plane
    return out


def residual_valid(observed, extended, varying: VaryingKernel, first, *, background=None,
                   out=None) -> np.ndarray:
    """``observed − Σ_t m_t ⊙ (P ⊛ k_t) − background`` over the 'valid' output of ``P``.

    The prediction is computed block by block in the input-weighted form ``Σ_t a_t ⊛ k'_t``
    (``a_t = m_t(ζ) ⊙ P`` with ``ζ`` the output pixel an input pixel lands on through the
    kernel centre, ``k'_t[j] = Σ_s M[j, s, t]·k_s[j]``, :func:`translation_blocks`): ``T``
    forward transforms of cache-sized blocks and one inverse, the terms summed in frequency
    space; the prediction is never held whole.

    Parameters
    ----------
    observed : (H, W) ndarray
        ``H, W = P.shape − kernel shape + 1``.
    extended : ndarray
        The extended image ``P``.
    varying : VaryingKernel
    first : (int, int)
        The frame pixel (row, column) of output pixel ``(0, 0)``.
    background : (U, V) or None
        A background given as the product ``U @ V.T`` (``U`` with ``H`` rows, ``V`` with
        ``W``), e.g. a separable polynomial.
    out : (H, W) ndarray, optional
        Where to write (may be ``observed`` itself, or a view into a larger array).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> P = rng.random((30, 40))
    >>> vk = VaryingKernel(rng.random((3, 3, 5)), 1, frame=(28, 36), center=(1, 2),
    ...                    origin=(1, 2))          # a 'valid' b is the frame
    >>> b = vk.convolve(P, boundary="valid")
    >>> bool(np.abs(residual_valid(b, P, vk, (0, 0))).max() < 1e-12)
    True
    """
    (kh, kw), (cy, cx) = varying.shape, varying.center
    H, W = extended.shape[0] - kh + 1, extended.shape[1] - kw + 1
    out = np.empty((H, W)) if out is None else out
    (Ly, Ny), (Lx, Nx) = (_residual_block(n, k) for n, k in ((H, kh), (W, kw)))
    M = translation_blocks(varying.shape, varying.center, varying.powers, varying.frame)
    p = kh * kw
    input_basis = np.einsum("jst,sj->tj", M, varying.coefficients.reshape(-1, p))
    spectra = scipy.fft.rfft2(input_basis.reshape(-1, kh, kw), (Ny, Nx))
    # ζ of every row and column of P: input pixel z lands on output z − (k − 1) + center.
    zy = scaled(np.arange(extended.shape[0]) + first[0] - (kh - 1) + cy, varying.frame[0])
    zx = scaled(np.arange(extended.shape[1]) + first[1] - (kw - 1) + cx, varying.frame[1])
    channels = np.empty((len(varying.powers), Ny, Nx))
    for y0 in range(0, H, Ly):
        y1 = min(y0 + Ly, H)
        for x0 in range(0, W, Lx):
            x1 = min(x0 + Lx, W)
            rows, cols = slice(y0, y1 + kh - 1), slice(x0, x1 + kw - 1)
            h, w = y1 - y0 + kh - 1, x1 - x0 + kw - 1
            channels.fill(0.0)
            for t, (p_, q) in enumerate(varying.powers):
                np.multiply((zy[rows] ** p_)[:, None] * extended[rows, cols],
                            (zx[cols] ** q)[None, :], out=channels[t, :h, :w])
            total = np.einsum("tyx,tyx->yx", scipy.fft.rfft2(channels), spectra)
            prediction = scipy.fft.irfft2(total, (Ny, Nx))[kh - 1:h, kw - 1:w]
            values = np.subtract(observed[y0:y1, x0:x1], prediction, dtype=np.float64)
            if background is not None:
                values -= background[0][y0:y1] @ background[1][x0:x1].T
            out[y0:y1, x0:x1] = values
    return out


def _residual_block(n, k) -> tuple[int, int]:
    """``(block, transform length)`` along an axis of ``n`` outputs for a kernel of ``k``:
    near-equal blocks whose transform (``block + k − 1``) has length
    :data:`RESIDUAL_FFT_LENGTH` (one block of the smallest fast length when all fit)."""
    if n + k - 1 <= RESIDUAL_FFT_LENGTH:
        return n, scipy.fft.next_fast_len(n + k - 1, real=True)
    width = max(RESIDUAL_FFT_LENGTH - (k - 1), 1)
    width = -(-n // -(-n // width))
    return width, max(RESIDUAL_FFT_LENGTH, width + k - 1)
