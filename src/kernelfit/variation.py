"""Spatially varying kernels: every kernel coefficient is a polynomial in the pixel position.

The model (``estimate(..., variation=d)``), in the output coordinates of astronomy's
difference-imaging codes (Alard–Lupton, Bramich's adaptive kernels, HOTPANTS, SFFT)::

    b(i) = Σ_j Σ_t k_t[j] · m_t(y_i, x_i) · a(i + center − j)
         = Σ_t m_t(y_i, x_i) · (a ⊛ k_t)(i)

``m_t(y, x) = y^p x^q`` (``p + q ≤ d``, ``T = (d+1)(d+2)/2`` terms in the order ``1, x, y,
x², x·y, y², ...``) on coordinates scaled to ``[−1, 1]`` over ``b``: pixel ``(0, 0)`` of ``b``
is ``(−1, −1)``, its last pixel ``(+1, +1)``, its centre ``(0, 0)``.  So ``k_0`` is the kernel
at the image centre, and the kernel anywhere is :meth:`VaryingKernel.at`.

Statistics without a ``p·T``-column design
    The model is linear in the ``p·T`` coefficients, so everything the solver needs is the Gram
    matrix of the extended design, whose blocks ``Σ_i m_s m_t x_i x_iᵀ`` are weighted Grams
    with no shift structure.  They get one back by a change of parameters: ``m_s`` evaluated at
    the output pixel ``i`` equals ``m_s`` evaluated at the *input* pixel ``z = i + center − j``
    shifted by ``j − center``, and a polynomial shifted is a polynomial of the same degree
    (binomial expansion).  So the column of coefficient ``(s, j)`` is a fixed combination of
    the columns ``(t, j)`` of the design whose input images are ``a_t = m_t ⊙ a``: an
    ordinary ``T``-input convolution design ``X_T`` with ``X_ext = X_T · B`` (``B``
    block-diagonal over kernel pixels, ``T × T`` triangular blocks).  ``X_Tᵀ X_T`` consists of
    cross-Grams ``Σ_i a_s[i+u] a_t[i+v]``, which have the shift structure again: the core of
    the image by one FFT correlation, the bands by batched 1-D correlations
    (:func:`cross_gram`, the two-image form of :func:`kernelfit.stats.gram_fft`).  Then
    ``G = Bᵀ (X_Tᵀ X_T) B``, ``c = Bᵀ X_Tᵀ b``: exact, at ``T(T+1)/2`` Gram costs instead of
    im2col's ``N·(pT)²``.  Masked pixels are subtracted explicitly (or, when most are masked,
    the kept ones summed explicitly).

Speed and accuracy against im2col and OIS: ``benchmarks/bench_varying.py``.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from math import comb

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from ._conventions import as_image, make_geometry, normalize_boundary, normalize_shape
from .background import (BackgroundTerms, background_coefficients, background_image,
                         background_terms, check_degree, fitted_background, profile_out)
from .forward import convolve as convolve_plain
from .forward import ExtendedSpectrum, convolve_extended, tile_slices
from .result import KernelFit
from .solvers import solve_normal_equations
from . import stats
from .stats import (SufficientStatistics, _band_indices, _band_lag_sums, _rectangle_sums,
                    _scatter_lag)

# The direct solve holds a (p·T)² Gram matrix and factors it in O((p·T)³): 4096 unknowns is
# 134 MB and a few seconds, the size at which the free model also leaves its direct path.
MAX_UNKNOWNS = 4096
# Explicit (im2col) sums cost N·(p·T)² multiply-adds; below this the FFT set-up does not pay
# (the same threshold as kernelfit.stats.choose_method).
_EXPLICIT_WORK_LIMIT = 3e7
_CHUNK_BYTES = 32 * 2**20
# Options of estimate() this path honours only at their defaults.
_DEFAULTS = {"model": "free", "loss": "l2", "reg": None, "lam": "auto", "nonneg": False,
             "normalize": None, "noise_std": None}


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
        sy, sx = scaled(y, self.frame[0]), scaled(x, self.frame[1])
        return np.array([sy ** p * sx ** q for p, q in self.powers])

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


def as_varying(kernel):
    """The :class:`VaryingKernel` of ``kernel`` (itself, or a fit's), else ``None``."""
    if isinstance(kernel, VaryingKernel):
        return kernel
    return getattr(kernel, "varying", None) if isinstance(kernel, KernelFit) else None


@dataclass
class VaryingKernelFit(KernelFit):
    """A :class:`~kernelfit.KernelFit` whose kernel varies over the image.

    ``kernel``, ``stderr`` and ``cov`` are those of the kernel at the centre of ``b``; ``params['variation']`` holds the ``(T, kh, kw)`` coefficients ``k_t`` (terms in
    ``info['variation']['terms']``), ``info['variation']['stderr']`` their standard errors,
    ``varying`` the :class:`VaryingKernel` that :func:`kernelfit.convolve` accepts.
    """

    varying: VaryingKernel | None = None

    def kernel_at(self, y, x) -> np.ndarray:
        """The kernel at pixel ``(y, x)`` of ``b`` (row and column indices of ``b``)."""
        return self.varying.at(y, x)


def estimate_varying(a, b, shape, *, variation, boundary="valid", center=None, mask=None,
                     saturation=None, saturation_a=None, method=None, channel_axis=None,
                     shared_channels=False, **options):
    """``kf.estimate(..., variation=d)``: least squares for a polynomially varying kernel.

    Takes :func:`kernelfit.estimate`'s arguments; only the free model with ``loss='l2'``,
    no regulariser or constraint and the direct solver are available; ``background=d`` fits a
    polynomial background per pair with the kernel (profiled out of the statistics, see
    :func:`varying_background_terms`).

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> a = np.random.default_rng(0).random((40, 40))
    >>> vk = VaryingKernel([np.eye(3) / 3, np.eye(3)[::-1] / 9, np.zeros((3, 3))], 1,
    ...                    frame=a.shape, center=(1, 1))
    >>> fit = kf.estimate(a, kf.convolve(a, vk), 3, boundary="fill", variation=1)
    >>> np.allclose(fit.kernel_at(0, 39), vk.at(0, 39))
    True
    """
    from .estimate import _annotate, _prepare_pairs, _single

    # Channels are split off before this is called (kernelfit.channels).
    del channel_axis, shared_channels
    degree = check_variation(variation)
    background = check_degree(options.pop("background", None))
    _refuse(options, method)
    if shape is None:
        raise ValueError("shape=None (chosen automatically) is not available with "
                         "variation=; give the kernel size, e.g. shape=(15, 15)")
    shape = normalize_shape(shape)
    boundary = normalize_boundary(boundary)
    n_unknowns = len(monomial_powers(degree)) * shape[0] * shape[1]
    if n_unknowns > MAX_UNKNOWNS:
        raise ValueError(f"variation={degree} with shape={shape} has {n_unknowns} unknowns; "
                         f"at most {MAX_UNKNOWNS} are solved directly: use a smaller "
                         "kernel or degree")
    pairs = _prepare_pairs(a, b, shape, boundary=boundary, center=center, mask=mask,
                           saturation=saturation, saturation_a=saturation_a)
    frame = _common_frame(pairs, degree)
    parts, terms = [], []
    for pair in pairs:
        part = varying_statistics(pair, shape, degree, frame=frame)
        if background is not None:
            # The polynomial background of each pair is minimised out exactly, as for an
            # invariant kernel (kernelfit.background), with the extended design's columns.
            terms.append(varying_background_terms(pair, shape, degree, frame, background))
            part = profile_out(part, terms[-1])
        parts.append(part)
    stats = sum(parts)
    solution = solve_normal_equations(stats)
    geometry = pairs[0].geometry
    varying = VaryingKernel(solution.kernel, degree, frame, geometry.center,
                            _output_origin(geometry.output_size, shape, geometry.center))
    single = _single(a)
    fitted, background_info = (None, None) if not terms else \
        fitted_background(terms, solution.kernel, single=single)
    backgrounds = None if not terms else [
        background_image(t, background_coefficients(t, solution.kernel), full=False)
        for t in terms]
    residuals = _Residuals(pairs, varying, single, backgrounds)
    noise, cov, stderr = _uncertainty(stats, solution, residuals)
    p = shape[0] * shape[1]
    info = {"n_pairs": len(pairs), "rcond": solution.rcond, "rank": solution.rank,
            "dof": solution.dof,
            "variation": {"degree": degree, "terms": term_names(degree), "frame": list(frame),
                          "origin": list(varying.origin), "stderr": stderr}}
    if background_info is not None:
        info["background"] = background_info
    fit = VaryingKernelFit(
        kernel=varying.coefficients[0].copy(), shape=shape, center=geometry.center,
        boundary=geometry.boundary, model="free", params={"variation": varying.coefficients},
        stderr=None if stderr is None else stderr[0], cov=None if cov is None else cov[:p, :p],
        background=fitted, _residual=residuals, noise_std=noise, lam=None,
        n_used=getattr(stats, "n_pixels", stats.n_used),
        converged=solution.trusted, message=solution.message, method="normal-varying",
        info=info, varying=varying)
    return _annotate(pairs, fit)


def _refuse(options, method):
    for name, value in options.items():
        if name not in _DEFAULTS and (value is None or value is False):
            continue  # an estimate() option left unset that this path does not know
        if name not in _DEFAULTS:
            raise TypeError(f"estimate() got option {name!r}, which variation= does not take")
        if not _same(value, _DEFAULTS[name]):
            raise ValueError(f"{name}={value!r} is not available with variation= (a free "
                             f"kernel fitted by least squares); leave {name} at "
                             f"{_DEFAULTS[name]!r}")
    if method not in (None, "normal"):
        raise ValueError(f"method={method!r} is not available with variation=: its kernels "
                         "are solved on the statistics (method='normal')")


def _same(value, default) -> bool:
    return value is default or (isinstance(value, str) and value == default)


def _common_frame(pairs, degree) -> tuple[int, int]:
    """The shape of every ``b`` (the coordinates are its pixel indices, so they must agree)."""
    frames = {tuple(pair.b_shape) for pair in pairs}
    if len(frames) > 1:
        raise ValueError(f"variation= needs every b to have the same shape (the kernel is a "
                         f"function of the pixel position); got {sorted(frames)}")
    frame = frames.pop()
    used = [pair.geometry.used_shape for pair in pairs]
    if degree >= min(min(u) for u in used):
        raise ValueError(f"variation={degree}: the used part of b is {used[0]} pixels, too "
                         "few positions for a polynomial of that degree")
    return frame


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


# ---------------------------------------------------------------------------------------------
# Sufficient statistics
# ---------------------------------------------------------------------------------------------


def varying_statistics(pair, shape, degree, *, frame, method=None) -> SufficientStatistics:
    """Statistics of the extended design: ``shape`` ``(T, kh, kw)``, entries in C order.

    ``method``: ``None`` chooses, ``'fft'`` or ``'im2col'`` force one (tests, benchmarks).
    """
    kh, kw = shape
    powers = monomial_powers(degree)
    G, c = None, None
    for rows, cols in _tiles(pair.b_used.shape, shape):
        # A tile of b's used rectangle and its footprint in the extended image: the sums
        # over output pixels add up, and large images never hold T whole-image channels.
        channels = input_channels(pair, shape, powers, frame, rows=rows, cols=cols)
        use = None if pair.use is None else pair.use[rows, cols]
        G_tile, c_tile = _multichannel_statistics(channels, pair.b_used[rows, cols], shape,
                                                  use, method)
        G, c = (G_tile, c_tile) if G is None else (G + G_tile, c + c_tile)
    # Flipped (correlation) order u -> convolution order j, within every term's block.
    p = kh * kw
    order = (np.arange(len(powers))[:, None] * p + np.arange(p)[None, ::-1]).ravel()
    G, c = G[np.ix_(order, order)], c[order]
    B = translation_matrix(shape, pair.geometry.center, powers, frame)
    return SufficientStatistics(B.T @ G @ B, B.T @ c, float(np.sum(pair.b_used ** 2)),
                                pair.n_used, (len(powers), kh, kw))


def varying_background_terms(pair, shape, degree, frame, background) -> BackgroundTerms:
    """:func:`kernelfit.background.background_terms` for the extended design: ``XᵀWT`` has
    one row per coefficient of every term ``k_t`` (``X_ext = X_T·B``, so it is
    ``Bᵀ·X_TᵀWT``, ``X_TᵀWT`` the correlations of each channel ``m_t ⊙ P`` with ``W·T_s``)."""
    plain = background_terms(pair, shape, background)
    powers = monomial_powers(degree)
    images = [plain.basis.image(s) if plain.weights is None
              else plain.weights * plain.basis.image(s) for s in range(len(plain.basis))]
    # The constant term's channel is P itself, whose correlations background_terms made.
    blocks = [plain.cross]
    for channel in input_channels(pair, shape, powers[1:], frame):
        spectrum = ExtendedSpectrum(channel, shape)
        # correlate_valid is in flipped order: flip back to convolution order.
        blocks.append(np.stack([spectrum.correlate_valid(image)[::-1, ::-1].ravel()
                                for image in images], axis=1))
    cross = translation_matrix(shape, pair.geometry.center, powers, frame).T @ np.vstack(blocks)
    return dataclasses.replace(plain, cross=cross,
                               kernel_shape=(len(powers),) + tuple(shape))


def input_channels(pair, shape, powers, frame, *, rows=slice(None),
                   cols=slice(None)) -> list[np.ndarray]:
    """``a_t = m_t(ζ) ⊙ P``: the extended image times each term at the coordinate ``ζ`` (in
    ``b``'s frame) of the output pixel each of its pixels lands on through the kernel centre.

    ``rows``, ``cols`` (slices of ``b``'s used rectangle, step 1) restrict it to the part of
    ``P`` under those output pixels.
    """
    geometry = pair.geometry
    (kh, kw), (cy, cx) = shape, geometry.center
    oy = geometry.used[0].indices(frame[0])[0]
    ox = geometry.used[1].indices(frame[1])[0]
    Ph, Pw = pair.extended.shape
    y0, y1, _ = rows.indices(Ph - kh + 1)
    x0, x1, _ = cols.indices(Pw - kw + 1)
    sy = scaled(np.arange(y0, y1 + kh - 1) - (kh - 1) + cy + oy, frame[0])
    sx = scaled(np.arange(x0, x1 + kw - 1) - (kw - 1) + cx + ox, frame[1])
    P = pair.extended[y0:y1 + kh - 1, x0:x1 + kw - 1]
    return [(sy ** p)[:, None] * (sx ** q)[None, :] * P for p, q in powers]


def _tiles(b_shape, shape):
    """``(rows, cols)`` slices cutting ``b``'s used rectangle into tiles of about
    ``TILE_SIDE``² pixels when it has more than ``TILED_ABOVE`` (as the plain statistics do,
    :mod:`kernelfit.stats`), else the whole rectangle."""
    if b_shape[0] * b_shape[1] <= stats.TILED_ABOVE:
        return [(slice(0, b_shape[0]), slice(0, b_shape[1]))]
    return tile_slices(b_shape, stats.TILE_SIDE)


def translation_matrix(shape, center, powers, frame) -> np.ndarray:
    """``B`` with ``X_ext = X_T · B``: ``m_s(ζ + δ_j) = Σ_t M_j[s, t] m_t(ζ)``, ``δ_j`` the
    scaled offset ``j − center`` of kernel pixel ``j``; ``B[t·p + j, s·p + j] = M_j[s, t]``."""
    kh, kw = shape
    p, T = kh * kw, len(powers)
    gy, gx = (2.0 / (n - 1) if n > 1 else 0.0 for n in frame)
    jy, jx = np.divmod(np.arange(p), kw)
    dy, dx = (jy - center[0]) * gy, (jx - center[1]) * gx
    B = np.zeros((T * p, T * p))
    diagonal = np.arange(p)
    for s, (ps, qs) in enumerate(powers):
        for t, (pt, qt) in enumerate(powers):
            if pt <= ps and qt <= qs:
                value = comb(ps, pt) * comb(qs, qt) * dy ** (ps - pt) * dx ** (qs - qt)
                B[t * p + diagonal, s * p + diagonal] = value
    return B


def _multichannel_statistics(channels, b, shape, use, method):
    """``Σ_i x_i x_iᵀ`` and ``Σ_i b_i x_i`` over the used pixels, ``x_i`` the footprints of
    every channel concatenated (flipped order ``t·p + u``)."""
    T, p = len(channels), shape[0] * shape[1]
    n_kept = b.size if use is None else int(use.sum())
    has_core = all(n - k + 1 >= k for n, k in zip(channels[0].shape, shape))
    if method is None:
        work = b.size * (T * p) ** 2
        method = "fft" if has_core and work > _EXPLICIT_WORK_LIMIT \
            and 2 * n_kept > b.size else "im2col"
    if method == "im2col":
        return _explicit_sums(channels, b, shape, use)
    if not has_core:
        raise ValueError(f"method='fft' needs an image at least twice the kernel {shape}")
    G, c = _fft_sums(channels, b, shape)
    if use is not None:
        # b is 0 at the dropped pixels, so only the Gram keeps their contribution.
        G -= _explicit_sums(channels, b, shape, ~use)[0]
    return G, c


def _explicit_sums(channels, b, shape, pixels):
    """im2col sums over ``pixels`` (bool like ``b``, ``None`` = all), in bounded chunks."""
    kh, kw = shape
    T, p = len(channels), kh * kw
    windows = [sliding_window_view(channel, shape) for channel in channels]
    G, c = np.zeros((T * p, T * p)), np.zeros(T * p)
    Ho, Wo = b.shape
    step = max(1, _CHUNK_BYTES // (8 * T * p * Wo))
    for r0 in range(0, Ho, step):
        rows = slice(r0, min(Ho, r0 + step))
        keep = (slice(None),) if pixels is None else (pixels[rows],)
        X = np.concatenate([w[rows][keep].reshape(-1, p) for w in windows], axis=1)
        G += X.T @ X
        c += X.T @ b[rows][keep].ravel()
    return G, c


def _fft_sums(channels, b, shape):
    """Every cross-Gram block by :func:`cross_gram`, ``c`` by one correlation per channel."""
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    T, p = len(channels), kh * kw
    Ph, Pw = channels[0].shape
    fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in (Ph, Pw))
    hats = [scipy.fft.rfft2(channel, fft_shape) for channel in channels]
    b_hat = np.conj(scipy.fft.rfft2(b, fft_shape))
    # Lags stay within the image (b and the core are inset by the kernel), so the transform
    # length P.shape has no wrap-around (see kernelfit.forward.ExtendedSpectrum).
    c = np.concatenate([scipy.fft.irfft2(b_hat * hat, fft_shape)[:kh, :kw].ravel()
                        for hat in hats])
    core = (slice(ty, Ph - ty), slice(tx, Pw - tx))
    G = np.empty((T * p, T * p))
    for s in range(T):
        core_hat = np.conj(scipy.fft.rfft2(channels[s][core], fft_shape))
        for t in range(s, T):
            lag_sums = scipy.fft.irfft2(core_hat * hats[t], fft_shape)[:2 * ty + 1, :2 * tx + 1]
            block = cross_gram(channels[s], channels[t], shape, core_lag_sums=lag_sums)
            G[s * p:(s + 1) * p, t * p:(t + 1) * p] = block
            G[t * p:(t + 1) * p, s * p:(s + 1) * p] = block.T
    return G, c


def cross_gram(P1, P2, shape, *, core_lag_sums) -> np.ndarray:
    """``C[u, v] = Σ_i P1[i+u]·P2[i+v]`` (flipped-kernel order), exactly, for two images of
    one shape; ``core_lag_sums[d + t] = Σ_{z in core} P1(z)·P2(z+d)``.

    The algorithm of :func:`kernelfit.stats.gram_fft` with the two factors told apart: core
    lag sums, band rows and columns by batched 1-D correlations, corners directly, then the
    sums over every moving rectangle by cumulative sums.
    """
    kh, kw = shape
    ty, tx = kh - 1, kw - 1
    row_band_sums = _band_lag_sums(P1, ty, tx, P2)                       # [m, dy, dx]
    col_band_sums = _band_lag_sums(P1.T, tx, ty, P2.T).transpose(0, 2, 1)  # [n, dy, dx]
    rows, cols = _band_indices(P1.shape[0], ty), _band_indices(P1.shape[1], tx)
    P2_padded = np.pad(P2, ((ty, ty), (tx, tx)))
    band_r = np.r_[0:ty, ty + 1:2 * ty + 1]
    band_s = np.r_[0:tx, tx + 1:2 * tx + 1]
    p = kh * kw
    C = np.zeros(p * p)
    dx_all = np.arange(-tx, tx + 1)
    corner_values = P1[np.ix_(rows, cols)][:, :, None]
    for iy, dy in enumerate(range(-ty, ty + 1)):
        neighbours = P2_padded[(rows + dy + ty)[:, None, None],
                               (cols[:, None] + dx_all[None, :] + tx)[None]]   # [m, n, dx]
        Q = np.empty((2 * tx + 1, 2 * ty + 1, 2 * tx + 1))
        Q[:, ty, tx] = core_lag_sums[iy]
        Q[:, band_r, tx] = row_band_sums[:, iy, :].T
        Q[:, ty, band_s] = col_band_sums[:, iy, :].T
        Q[:, band_r[:, None], band_s[None, :]] = (corner_values * neighbours).transpose(2, 0, 1)
        F = _rectangle_sums(_rectangle_sums(Q, axis=1), axis=2)
        _scatter_lag(C, F, dy, kh, kw)
    return C.reshape(p, p)


# ---------------------------------------------------------------------------------------------
# Residuals and uncertainties
# ---------------------------------------------------------------------------------------------


class _Residuals:
    """``b − Σ_t m_t ⊙ (a ⊛ k_t)`` per pair, NaN where unused; made on first access."""

    def __init__(self, pairs, varying: VaryingKernel, single, backgrounds=None):
        self._pairs, self._varying, self._single = pairs, varying, single
        # The fitted background over each pair's used rectangle, or None.
        self._backgrounds = backgrounds or [0.0] * len(pairs)
        self._images = None

    def __call__(self):
        if self._images is None:
            self._images = [pair.embed(pair.b_used - self.prediction(pair) - background)
                            for pair, background in zip(self._pairs, self._backgrounds)]
        return self._images[0] if self._single else self._images

    def prediction(self, pair) -> np.ndarray:
        """The model over the used rectangle of ``pair``'s ``b``."""
        vk = self._varying
        planes = [convolve_extended(pair.extended, k) for k in vk.coefficients]
        rows = np.arange(planes[0].shape[0]) + pair.geometry.used[0].indices(vk.frame[0])[0]
        cols = np.arange(planes[0].shape[1]) + pair.geometry.used[1].indices(vk.frame[1])[0]
        return _weighted_sum(planes, vk.powers, rows, cols, vk.frame)

    def sum_of_squares(self) -> float:
        self()
        return float(sum(np.nansum(r * r) for r in self._images))


def _uncertainty(stats, solution, residuals):
    """Noise from the residuals; covariance ``σ̂² G⁻¹`` and the standard errors (T, kh, kw)."""
    k = solution.kernel.ravel()
    rss = stats.btb - 2.0 * (k @ stats.rhs) + k @ (stats.gram @ k)
    if rss < 1e-9 * stats.btb:
        # A near-perfect fit: the formula would be mostly rounding; use the images.
        rss = residuals.sum_of_squares()
    dof_left = stats.n_used - solution.dof
    if dof_left <= 0.5 or solution.cov_unscaled is None:
        return float("nan") if dof_left <= 0.5 else float(np.sqrt(rss / dof_left)), None, None
    noise = float(np.sqrt(max(rss, 0.0) / dof_left))
    cov = noise ** 2 * solution.cov_unscaled
    return noise, cov, np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(stats.shape)
