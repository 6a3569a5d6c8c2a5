"""What every structured model shares: the data behind a fit, linear solves, the result type.

A structured model writes the kernel as ``k = K θ`` (``K``: ``p × m``, a few columns) or, for
nonlinear models, linearises it to that form.  The least-squares problem in ``θ`` then needs
only ``Kᵀ X ᵀX K`` and ``Kᵀ Xᵀ b``, which :class:`PairData` provides in one of two ways:

* ``'statistics'``: from the sufficient statistics ``G = XᵀX``, ``c = Xᵀb`` (``p × p``), as
  ``KᵀGK`` and ``Kᵀc``.  Cheap for every ``K`` once ``G`` exists, but ``G`` has ``p²``
  entries: only for kernels of at most :data:`MAX_STATISTICS_UNKNOWNS` pixels.
* ``'fft'``: the design columns ``X K_j`` themselves, each one FFT convolution of a pair's
  extended image with the basis kernel ``K_j`` (the image's transform is computed once per
  pair), restricted to the used pixels.  Memory ``8·n_used·(m+1)`` bytes for the largest pair;
  no ``p × p`` matrix, so any kernel size (seed 000: 199², far beyond a Gram matrix).

Both are reduced to the same *square-root form* ``(R, z, ρ²)`` with
``‖X K θ − b‖² = ‖R θ − z‖² + ρ²`` for every ``θ`` (``R``: ``m × m``): a QR factorisation of
``[XK | b]`` on the FFT path (numerically the best one can do), an eigen-decomposition of
``KᵀGK`` on the statistics path.  One solver (:func:`solve_square_root`) then handles both,
with an optional quadratic penalty, rank detection and the covariance.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse

from ..core.conventions import normalize_center, normalize_shape
from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum, convolve_extended
from ..stats.background import project_out
from ..stats.compute import statistics as _statistics
from ..stats.gram import SufficientStatistics

# A p×p Gram matrix of 4096² doubles is 134 MB and O(p²) per product with it: the largest
# kernel (64×64) for which the statistics path is used by default; above it, FFT columns.
MAX_STATISTICS_UNKNOWNS = 4096

METHODS = (None, "statistics", "fft")


@dataclass
class StructuredFit:
    """The result of a structured or parametric kernel fit.

    Attributes
    ----------
    model : str
        ``'radial'``, ``'powerlaw'``, ``'separable'`` or ``'lowrank'``.
    kernel : ndarray
        The fitted kernel, kernel-shaped, convolution orientation (as ``scipy.signal``).
    params : dict
        The model's parameters (see each fitting function).
    stderr : dict
        Standard errors: one entry per parameter where defined, and ``'kernel'`` (an array
        like ``kernel``).  NaN where the data do not determine a value.
    cov : ndarray or None
        Covariance of the model's free parameters in the order given by
        ``info['param_order']``, ``σ̂²·(JᵀXᵀXJ)⁻¹``; ``None`` when not determined.
    rss : float
        Residual sum of squares ``‖X k − b‖²`` over the used pixels of every pair.
    n_used : int
        Number of pixels of ``b`` used (all pairs).
    noise_std : float
        ``sqrt(rss / (n_used − dof))``: the noise level the residuals imply (units of ``b``).
    dof : float
        Effective number of fitted parameters.
    converged : bool
        False when the result cannot be trusted; ``message`` says why and which knob to turn.
    message : str
    shape, center : tuple of int
    method : str
        ``'statistics'`` or ``'fft'`` (how the design was formed; see :class:`PairData`).
    info : dict
        Diagnostics (iterations, timings, the exponent search, ...).
    """

    model: str
    kernel: np.ndarray
    params: dict
    stderr: dict
    cov: np.ndarray | None
    rss: float
    n_used: int
    noise_std: float
    dof: float
    converged: bool
    message: str
    shape: tuple[int, int]
    center: tuple[int, int]
    method: str
    info: dict = field(default_factory=dict)


def as_pairs(pairs) -> list[PreparedPair]:
    """A list of :class:`~kernelfit.design.PreparedPair` (a single one is wrapped)."""
    if isinstance(pairs, PreparedPair):
        return [pairs]
    if not isinstance(pairs, (list, tuple)) or len(pairs) == 0:
        raise TypeError(
            f"pairs must be a non-empty list of PreparedPair (from kernelfit.design."
            f"prepare_pair), got {type(pairs).__name__}"
        )
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PreparedPair):
            raise TypeError(f"pairs[{i}] is a {type(pair).__name__}, not a PreparedPair "
                            "(make it with kernelfit.design.prepare_pair)")
    return list(pairs)


def check_real(value, name, *, low=None, high=None):
    """A finite real number (not bool) within ``[low, high]``, as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name}={value!r} must be a finite real number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} must lie in [{low}, {high}]")
    return float(value)


class PairData:
    """The image pairs of one fit, ready to evaluate linear models ``k = K θ``.

    Parameters
    ----------
    pairs : list of PreparedPair
        One kernel shared by every pair; each prepared with kernel shape ``shape``.
    shape : int or (kh, kw)
    center : (int, int), optional
        Default: the centre the pairs were prepared with.
    method : {None, 'statistics', 'fft'}
        ``None``: statistics when ``kh·kw ≤ MAX_STATISTICS_UNKNOWNS``, else FFT columns.
    statistics : SufficientStatistics, optional
        The statistics of exactly these pairs when the caller has them (e.g. from a free
        fit): they are used instead of being computed again (statistics path).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((20, 20))
    >>> data = PairData([prepare_pair(a, a, (3, 3), boundary="fill")], (3, 3), None, None)
    >>> data.method, data.n_used
    ('statistics', 400)
    """

    def __init__(self, pairs, shape, center, method, statistics=None):
        self.pairs = as_pairs(pairs)
        self.shape = normalize_shape(shape)
        for i, pair in enumerate(self.pairs):
            if pair.geometry.kernel_shape != self.shape:
                raise ValueError(
                    f"shape={self.shape} differs from the kernel shape "
                    f"{pair.geometry.kernel_shape} pairs[{i}] was prepared for"
                )
        self.center = (self.pairs[0].geometry.center if center is None
                       else normalize_center(center, self.shape))
        p = self.shape[0] * self.shape[1]
        if method not in METHODS:
            raise ValueError(f"method={method!r} must be one of {METHODS}")
        if statistics is not None:
            self._check_statistics(statistics)
            if method == "fft":
                raise ValueError("method='fft' does not use statistics=; pass one of them")
            method = "statistics"
        if method is None:
            method = "statistics" if p <= MAX_STATISTICS_UNKNOWNS else "fft"
        if method == "statistics" and p > MAX_STATISTICS_UNKNOWNS:
            raise ValueError(
                f"shape={self.shape} has {p} pixels, too many for a {p}×{p} Gram matrix "
                f"(at most {MAX_STATISTICS_UNKNOWNS}); use method='fft' or None"
            )
        self.method = method
        self.n_used = sum(pair.n_used for pair in self.pairs)
        # Statistics with a background profiled out (kernelfit.background) carry its terms:
        # the residuals are then those after the best background, and the background's
        # coefficients are taken off the degrees of freedom.
        self.backgrounds = getattr(statistics, "terms", ()) or None
        if self.backgrounds is not None:
            self.n_used = statistics.n_used
        self.btb = float(sum(np.sum(pair.b_used**2) for pair in self.pairs))  # 0 where unused
        self.stats = None
        self.spectra = None
        if statistics is not None:
            self.stats = statistics
        elif method == "statistics":
            self.stats = sum(
                _statistics(pair.extended, pair.b_used, self.shape,
                           weights=None if pair.use is None else pair.use.astype(np.float64))
                for pair in self.pairs
            )
        else:
            self.spectra = [ExtendedSpectrum(pair.extended, self.shape) for pair in self.pairs]

    def _check_statistics(self, stats):
        if not isinstance(stats, SufficientStatistics):
            raise TypeError(f"statistics must be a SufficientStatistics, got "
                            f"{type(stats).__name__}")
        n_used = sum(pair.n_used for pair in self.pairs)
        if tuple(stats.shape) != self.shape or getattr(stats, "n_pixels",
                                                       stats.n_used) != n_used:
            raise ValueError(
                f"statistics (kernel shape {tuple(stats.shape)}, {stats.n_used} pixels) do not "
                f"belong to these pairs (shape={self.shape}, {n_used} pixels)"
            )

    # -- the design -------------------------------------------------------------------------

    def columns(self, i, kernels, extra=()):
        """Design columns of pair ``i``: ``X_i K_j`` over its used pixels, one per kernel.

        ``extra`` are ready-made columns (e.g. an exact shifted image) appended after them;
        the last column is always ``b`` over the used pixels.  FFT path only.
        """
        pair = self.pairs[i]
        n = pair.n_used
        out = np.empty((n, len(kernels) + len(extra) + 1))
        for j, kernel in enumerate(kernels):
            out[:, j] = self._used(pair, self.spectra[i].convolve_valid(kernel))
        for j, column in enumerate(extra):
            out[:, len(kernels) + j] = column
        out[:, -1] = self._used(pair, pair.b_used)
        return out

    def shifted_image(self, i, index):
        """``X_i δ_index``: the exact design column of a kernel that is 1 at ``index``."""
        pair = self.pairs[i]
        kh, kw = self.shape
        Ho, Wo = pair.b_used.shape
        r0, c0 = kh - 1 - index[0], kw - 1 - index[1]
        return self._used(pair, pair.extended[r0:r0 + Ho, c0:c0 + Wo])

    @staticmethod
    def _used(pair, image):
        return image.ravel() if pair.use is None else image[pair.use]

    def square_root(self, K, *, kernels=None, extra_index=None):
        """``(R, z, ρ²)`` with ``‖X K θ − b‖² = ‖Rθ − z‖² + ρ²`` for every ``θ``.

        Parameters
        ----------
        K : (p, m) ndarray or sparse matrix, or None
            Basis kernels as columns (kernel flattened in C order).
        kernels : iterable of kernel-shaped arrays, optional
            The basis kernels instead of ``K`` (``K=None``).
        extra_index : (int, int), optional
            With ``kernels``: append the delta kernel at this index as the last column (on
            the FFT path formed exactly, by shifting the image).
        """
        if self.method == "statistics":
            if K is None:
                K = np.column_stack([np.ravel(k) for k in kernels])
                if extra_index is not None:
                    delta = np.zeros(self.shape)
                    delta[extra_index] = 1.0
                    K = np.column_stack([K, delta.ravel()])
            return self._square_root_statistics(K)
        if kernels is None:
            K = scipy.sparse.csc_matrix(K) if scipy.sparse.issparse(K) else K
            kernels = [_column(K, j).reshape(self.shape) for j in range(K.shape[1])]
        kernels = list(kernels)
        blocks = []
        for i in range(len(self.pairs)):
            extra = () if extra_index is None else (self.shifted_image(i, extra_index),)
            Zb = self.columns(i, kernels, extra)
            # Only the triangular factor is kept: R̃ = [[R, z], [0, ρ]] of [Z | b].
            blocks.append(_triangular(Zb))
        Rt = blocks[0] if len(blocks) == 1 else _triangular(np.vstack(blocks))
        m = Rt.shape[1] - 1
        if Rt.shape[0] < m + 1:  # fewer used pixels than columns: pad with zero rows
            Rt = np.vstack([Rt, np.zeros((m + 1 - Rt.shape[0], m + 1))])
        R, z = Rt[:m, :m], Rt[:m, m]
        return R, z, float(Rt[m, m] ** 2)

    def _square_root_statistics(self, K):
        M, r = self.quadratic_form(K)
        # M = W Λ Wᵀ  ⇒  R = Λ^½ Wᵀ, z = Λ^-½ Wᵀ r, ρ² = bᵀb − ‖z‖²  (directions with
        # eigenvalues lost to rounding are dropped: R and z get zero rows there).
        lam, W = np.linalg.eigh(M)
        keep = lam > _eig_floor(M.shape[0]) * max(lam[-1], 0.0)
        root = np.sqrt(np.where(keep, lam, 1.0))
        R = np.where(keep[:, None], root[:, None] * W.T, 0.0)
        z = np.where(keep, (W.T @ r) / root, 0.0)
        return R, z, float(self.stats.btb - z @ z)

    def quadratic_form(self, K):
        """``(KᵀGK, Kᵀc)`` from the statistics (``K``: ``p × m``, dense or sparse)."""
        G, c = self.stats.gram, self.stats.rhs
        if scipy.sparse.issparse(K):
            KtG = np.asarray(K.T @ G)          # sparse × dense: O(nnz(K)·p)
            M = np.asarray(K.T @ KtG.T).T
        else:
            KtG = K.T @ G
            M = KtG @ K
        return 0.5 * (M + M.T), np.asarray(K.T @ c).ravel()

    @property
    def rss_rounding(self) -> float:
        """Rounding level of residual sums of squares from :meth:`square_root`.

        On the statistics path ``ρ² = bᵀb − ‖z‖²`` cancels: its error is a few ``eps·bᵀb``.
        1e-13·bᵀb (≈ 450 eps) bounds it for the few columns used here; two RSS values closer
        than this cannot be told apart.
        """
        return 1e-13 * self.btb

    # -- residuals --------------------------------------------------------------------------

    def rss(self, kernel) -> float:
        """``‖X k − b‖²`` over every used pixel, computed from the images (exact)."""
        total = 0.0
        for i, pair in enumerate(self.pairs):
            if self.spectra is not None:
                prediction = self.spectra[i].convolve_valid(kernel)
            else:
                prediction = convolve_extended(pair.extended, np.asarray(kernel, np.float64))
            r = pair.b_used - prediction
            if self.backgrounds is not None:
                r = project_out(r, self.backgrounds[i])
            r = self._used(pair, r)
            total += float(r @ r)
        return total


def _column(K, j):
    column = K[:, j]
    return np.asarray(column.toarray()).ravel() if scipy.sparse.issparse(column) else column


def _triangular(A):
    """The upper-triangular factor of ``A`` (``min(rows, cols) × cols``), Q not formed."""
    (R,) = scipy.linalg.qr(A, mode="r", overwrite_a=True, check_finite=False)
    return R[: min(A.shape)]


def _eig_floor(m):
    # Eigenvalues of KᵀGK below this fraction of the largest are at the level of rounding
    # (relative error ~ m·eps of the largest), as in the direct solver's limit.
    return 100.0 * m * np.finfo(float).eps


@dataclass
class LinearSolution:
    """Solution of ``min ‖Rθ − z‖² + ‖Lθ‖²`` (``L`` an optional penalty)."""

    theta: np.ndarray
    cov_unscaled: np.ndarray | None   # covariance of θ for unit noise variance
    dof: float
    rank: int
    rss_reduced: float                # ‖Rθ − z‖² + ρ², the data misfit


def solve_square_root(R, z, rho2, penalty=None) -> LinearSolution:
    """Least squares in square-root form, with rank detection and the covariance.

    With a penalty ``L`` (rows appended to ``R``), ``A = RᵀR + LᵀL`` and the covariance of
    ``θ̂ = A⁻¹Rᵀz`` for unit noise is ``A⁻¹(RᵀR)A⁻¹``; ``dof = trace(A⁻¹RᵀR)``.

    Examples
    --------
    >>> s = solve_square_root(np.eye(2), np.array([1.0, 2.0]), 0.5)
    >>> s.theta.tolist(), s.rss_reduced
    ([1.0, 2.0], 0.5)
    """
    m = R.shape[1]
    A = R if penalty is None else np.vstack([R, penalty])
    rhs = z if penalty is None else np.concatenate([z, np.zeros(penalty.shape[0])])
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    # Singular values below this are lost to rounding (relative accuracy ~ m·eps).
    keep = s > 100.0 * m * np.finfo(float).eps * (s[0] if s.size and s[0] > 0 else 1.0)
    keep &= s > 0
    rank = int(keep.sum())
    theta = Vt[keep].T @ ((U[:, keep].T @ rhs) / s[keep])
    residual = R @ theta - z
    rss_reduced = float(residual @ residual + rho2)
    if rank < m:
        return LinearSolution(theta, None, float(rank), rank, rss_reduced)
    A_inv = (Vt.T / s**2) @ Vt
    if penalty is None:
        return LinearSolution(theta, A_inv, float(m), rank, rss_reduced)
    RtR = R.T @ R
    cov = A_inv @ RtR @ A_inv
    return LinearSolution(theta, 0.5 * (cov + cov.T), float(np.sum(A_inv * RtR)), rank,
                          rss_reduced)


def noise_level(rss, n_used, dof):
    """``sqrt(rss / (n_used − dof))``, NaN when no degrees of freedom are left."""
    left = n_used - dof
    return float(np.sqrt(max(rss, 0.0) / left)) if left > 0.5 else float("nan")


def radius_grid(shape, center):
    """Integer squared distances ``(y−cy)² + (x−cx)²`` of every kernel pixel (kernel-shaped)."""
    kh, kw = shape
    y = np.arange(kh)[:, None] - center[0]
    x = np.arange(kw)[None, :] - center[1]
    return y * y + x * x
