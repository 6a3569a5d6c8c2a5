"""A polynomial background fitted jointly with the kernel, by profiling it out of the statistics.

The model is ``b ≈ a ⊛ k + Σ_t β_t T_t`` with ``T_t`` the polynomials of total degree
``≤ d`` over the used rectangle of ``b`` (``d = 0``: a constant offset, e.g. a sky level).

The basis
    Coordinates are scaled to ``[−1, 1]`` across the used rectangle of ``b`` (``x`` along
    columns, ``y`` along rows; the first used pixel is −1, the last +1), and the basis images
    are products of Legendre polynomials ``P_i(x)·P_j(y)``, ``i + j ≤ d``, in the order
    ``1, x, y, P2(x), x*y, P2(y), P3(x), ...`` (``P1(x) = x``, ``P2(x) = (3x² − 1)/2``,
    ``P3(x) = (5x³ − 3x)/2``).  On the scaled grid they are nearly orthogonal, so ``TᵀWT`` is
    well conditioned for any image size (monomials ``x^i y^j`` on ``[−1, 1]`` would be fine up
    to ``d ≈ 3``; on pixel coordinates they are hopeless).  The span is that of the monomials:
    :meth:`BackgroundBasis.monomials` converts coefficients to ``Σ m_ij x^i y^j`` in the same
    scaled coordinates.  ``m = (d+1)(d+2)/2`` terms.

Profiling (why every statistics-based model handles a background unchanged)
    With ``W`` the pixel weights (0 = unused), ``A = TᵀWT`` (``m × m``), ``C = XᵀWT``
    (``p × m``, one FFT correlation per term) and ``e = TᵀWb``, minimising over ``β`` for a
    fixed ``k`` gives ``β(k) = A⁻¹(e − Cᵀk)`` and leaves exactly the kernel problem with

        G' = G − C A⁻¹ Cᵀ,   c' = c − C A⁻¹ e,   bᵀWb' = bᵀWb − eᵀA⁻¹e,   n' = n − m,

    i.e. the statistics of the data with the background directions projected out.  Any L2 fit
    on ``(G', c', bᵀWb', n')`` — the free direct path, the constraints, λ by GCV, the
    structured models, parametric L2 — is the joint least-squares fit of kernel and
    background, and its noise estimate ``RSS/(n' − dof)`` counts the ``m`` background terms.
    Several pairs: each pair has its own ``β`` and the kernel is shared, so profile each pair
    and then add the profiled statistics.  ``G'`` is formed by a subtraction: it loses
    ``log10(‖G‖/‖G'‖)`` digits (about 2 for an image whose mean is 10× its standard deviation
    with ``d = 0``), far below the noise of any real fit.

Matrix-free path
    The profiled objective is ``‖W^½ Q (Xk − b)‖²`` with ``Q = I − T(TᵀWT)⁻¹TᵀW``
    (:func:`project_out`), so the operator becomes ``k ↦ Q X k`` and its adjoint
    ``r ↦ Xᵀ W Q r``; the data term ``b`` becomes ``Q b``.  Nothing else changes (``Q`` costs
    two small matrix products per application, no FFT).

Robust losses (IRLS) call :func:`background_terms` with the iteration's weights: the profile is
then the weighted one and ``β`` the weighted least-squares background of that iteration.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.polynomial import legendre

from ..core.design import PreparedPair
from ..core.forward import ExtendedSpectrum
from .compute import statistics
from .gram import SufficientStatistics

# TᵀWT with a condition number above this is treated as singular: the used pixels do not
# determine the polynomial (e.g. every used pixel on one row with a term in y).
_MAX_CONDITION = 1e12


def check_degree(degree) -> int | None:
    """Validate the ``background`` option: ``None`` or a non-negative integer.

    Examples
    --------
    >>> check_degree(2), check_degree(None)
    (2, None)
    """
    if degree is None:
        return None
    if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, numbers.Integral):
        raise ValueError(f"background={degree!r} must be None or a non-negative integer "
                         "(the polynomial degree; 0 = a constant offset)")
    if degree < 0:
        raise ValueError(f"background={degree!r} must be None or a non-negative integer "
                         "(the polynomial degree; 0 = a constant offset)")
    return int(degree)


def n_terms(degree: int) -> int:
    """Number of polynomials of total degree ``≤ degree`` in two variables."""
    return (degree + 1) * (degree + 2) // 2


class BackgroundBasis:
    """Legendre products ``P_i(x)·P_j(y)``, ``i + j ≤ degree``, over a rectangle.

    The images are never all held at once: each is the outer product of two 1-D Legendre
    columns, so every product with the basis costs a few matrix products with ``Ho × (d+1)``
    and ``Wo × (d+1)`` arrays.

    Parameters
    ----------
    shape : (Ho, Wo)
        Shape of the used rectangle of ``b``.
    degree : int
        Total degree, ``0 ≤ degree < min(Ho, Wo)`` (higher degrees are not determined by the
        grid).

    Examples
    --------
    >>> basis = BackgroundBasis((5, 9), 1)
    >>> basis.names
    ('1', 'x', 'y')
    >>> basis.image(1)[0, [0, 4, 8]].tolist()
    [-1.0, 0.0, 1.0]
    >>> basis.monomials(np.array([2.0, 0.5, 0.0]))
    {'1': 2.0, 'x': 0.5, 'y': 0.0}
    """

    def __init__(self, shape, degree):
        degree = check_degree(degree)
        if degree is None:
            raise ValueError("background=None has no basis")
        self.shape = (int(shape[0]), int(shape[1]))
        self.degree = degree
        Ho, Wo = self.shape
        if degree >= min(Ho, Wo):
            raise ValueError(
                f"background={degree}: the used rectangle of b is {Ho}×{Wo} pixels, which "
                f"determines polynomials of degree at most {min(Ho, Wo) - 1}; use a lower degree"
            )
        self.vx = legendre.legvander(_scaled(Wo), degree)   # (Wo, d+1): P_i(x)
        self.vy = legendre.legvander(_scaled(Ho), degree)   # (Ho, d+1): P_j(y)
        # (i, j) = (degree in x, degree in y), by total degree, x's degree descending.
        self.powers = tuple((t - j, j) for t in range(degree + 1) for j in range(t + 1))
        self.names = tuple(_name(i, "x") + ("*" if i and j else "") + _name(j, "y") or "1"
                           for i, j in self.powers)
        self._ix = np.array([i for i, _ in self.powers])
        self._iy = np.array([j for _, j in self.powers])

    def __len__(self) -> int:
        return len(self.powers)

    def image(self, t: int) -> np.ndarray:
        """Basis image ``t`` (shape of the used rectangle)."""
        i, j = self.powers[t]
        return np.outer(self.vy[:, j], self.vx[:, i])

    @property
    def images(self) -> np.ndarray:
        """All basis images, ``(m, Ho, Wo)`` (for tests and small problems)."""
        return np.stack([self.image(t) for t in range(len(self))])

    def evaluate(self, beta) -> np.ndarray:
        """``Σ_t β_t T_t`` over the used rectangle."""
        return self.vy @ self._coefficient_grid(beta) @ self.vx.T

    def factors(self, beta) -> tuple[np.ndarray, np.ndarray]:
        """``(U, V)`` with ``U @ V.T = evaluate(beta)``: the background as a product of a
        ``Ho × (d+1)`` and a ``Wo × (d+1)`` array, for callers that need it only block by
        block."""
        return self.vy @ self._coefficient_grid(beta), self.vx

    def transpose_apply(self, image) -> np.ndarray:
        """``Tᵀ image``: ``Σ_pixels T_t · image`` for every term ``t`` (``m`` values)."""
        full = self.vy.T @ np.asarray(image, dtype=np.float64) @ self.vx   # [j, i]
        return full[self._iy, self._ix]

    def monomials(self, beta) -> dict:
        """The same polynomial as ``{"x^i*y^j": coefficient}`` in the scaled coordinates."""
        B = self._coefficient_grid(beta)                     # [j, i] in the Legendre basis
        to_power = np.zeros((self.degree + 1, self.degree + 1))  # [power, Legendre index]
        for n in range(self.degree + 1):
            unit = np.zeros(n + 1)
            unit[n] = 1.0
            coef = legendre.leg2poly(unit)
            to_power[:len(coef), n] = coef
        M = to_power @ B @ to_power.T                       # [y power, x power]
        return {_monomial_name(i, j): float(M[j, i]) for i, j in self.powers}

    def _coefficient_grid(self, beta) -> np.ndarray:
        beta = np.asarray(beta, dtype=np.float64).ravel()
        if beta.size != len(self):
            raise ValueError(f"{beta.size} background coefficients given for {len(self)} terms")
        B = np.zeros((self.degree + 1, self.degree + 1))
        B[self._iy, self._ix] = beta
        return B


@dataclass
class BackgroundTerms:
    """Everything the background adds to one pair's least-squares problem.

    Attributes
    ----------
    basis : BackgroundBasis
    cross : (p, m) ndarray
        ``XᵀWT``: column ``t`` is the kernel-shaped (C-order, convolution orientation)
        correlation of the image with ``W·T_t``.
    ttt : (m, m) ndarray
        ``TᵀWT``.
    ttb : (m,) ndarray
        ``TᵀWb``.
    weights : ndarray or None
        The pixel weights over the used rectangle (0 = unused); ``None`` = all 1.
    n_used : int
        Pixels with non-zero weight.
    kernel_shape : (kh, kw)
    used : (slice, slice)
        The used rectangle within ``b``.
    b_shape : (int, int)
    """

    basis: BackgroundBasis
    cross: np.ndarray
    ttt: np.ndarray
    ttb: np.ndarray
    weights: np.ndarray | None
    n_used: int
    kernel_shape: tuple[int, int]
    used: tuple[slice, slice]
    b_shape: tuple[int, int]

    def __post_init__(self):
        # TᵀWT = LLᵀ, computed once; every profile and coefficient uses it.
        self._factor = scipy.linalg.cholesky(self.ttt, lower=True)

    @property
    def names(self) -> tuple[str, ...]:
        return self.basis.names

    def solve(self, rhs) -> np.ndarray:
        """``(TᵀWT)⁻¹ rhs``."""
        return scipy.linalg.cho_solve((self._factor, True), rhs)

    def whiten(self, rhs) -> np.ndarray:
        """``L⁻¹ rhs`` with ``TᵀWT = LLᵀ``."""
        return scipy.linalg.solve_triangular(self._factor, rhs, lower=True)


@dataclass
class ProfiledStatistics(SufficientStatistics):
    """Sufficient statistics with a background profiled out (see the module docstring).

    A :class:`~kernelfit.stats.SufficientStatistics` whose ``n_used`` is the degrees of
    freedom left after the background, ``n_pixels − n_background``; it adds like any other.

    Attributes
    ----------
    n_pixels : int
        Pixels used (what the user would call ``n_used``).
    n_background : int
        Background coefficients profiled out (over all pairs added).
    terms : tuple of BackgroundTerms
        One per pair added, in order: what a model fitted on these statistics needs for its
        residuals (:func:`project_out`) and background (:func:`background_coefficients`).
    """

    n_pixels: int = 0
    n_background: int = 0
    terms: tuple = ()

    def __add__(self, other):
        total = super().__add__(other)
        if total is NotImplemented or not isinstance(other, ProfiledStatistics):
            return total
        return ProfiledStatistics(total.gram, total.rhs, total.btb, total.n_used, total.shape,
                                  self.n_pixels + other.n_pixels,
                                  self.n_background + other.n_background,
                                  self.terms + other.terms)


def background_terms(pair: PreparedPair, shape, degree, *, spectrum=None,
                     weights=None, cross=None) -> BackgroundTerms:
    """``XᵀWT``, ``TᵀWT`` and ``TᵀWb`` of one prepared pair.

    Parameters
    ----------
    pair : PreparedPair
        From :func:`kernelfit.design.prepare_pair`; its unused pixels get weight 0.
    shape : (kh, kw)
        Kernel shape (that of the pair's geometry).
    degree : int
        Polynomial degree of the background (0 = constant).
    spectrum : ExtendedSpectrum, optional
        The FFT of ``pair.extended`` when the caller has it (the statistics' FFT path does);
        otherwise one is computed.  Cost: one FFT per term.
    weights : ndarray like ``pair.b_used``, optional
        Non-negative pixel weights (IRLS); multiplied by the pair's use mask.  Pass the same
        weights to :func:`kernelfit.stats.statistics`.
    cross : ndarray, optional
        ``XᵀWT`` when the caller computed it another way (the varying kernel's design has its
        own columns, :func:`kernelfit.stats.varying.varying_background_terms`); it is used
        as given and no FFT is made.

    Returns
    -------
    BackgroundTerms

    Raises
    ------
    ValueError
        If ``degree`` is not a non-negative integer, or the used pixels are too few or too
        badly placed to determine the polynomial (the message names ``background``).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> a = np.random.default_rng(0).random((20, 20))
    >>> terms = background_terms(prepare_pair(a, a, 3, boundary="valid"), (3, 3), 1)
    >>> terms.names, terms.cross.shape
    (('1', 'x', 'y'), (9, 3))
    """
    degree = check_degree(degree)
    if degree is None:
        raise ValueError("background=None: there is no background to fit")
    shape = (int(shape[0]), int(shape[1]))
    if tuple(pair.geometry.kernel_shape) != shape:
        raise ValueError(f"shape={shape} differs from the kernel shape "
                         f"{tuple(pair.geometry.kernel_shape)} the pair was prepared for")
    w = _effective_weights(pair, weights)
    n_used = pair.b_used.size if w is None else int(np.count_nonzero(w))
    m = n_terms(degree)
    if m >= n_used:
        raise ValueError(f"background={degree} has {m} terms but only {n_used} pixels of b "
                         "are used; use a lower degree")
    basis = BackgroundBasis(pair.b_used.shape, degree)
    if w is None:
        ttt = _gram_of_basis(basis, None)
        ttb = basis.transpose_apply(pair.b_used)
    else:
        ttt = _gram_of_basis(basis, w)
        ttb = basis.transpose_apply(w * pair.b_used)
    condition = np.linalg.cond(ttt)
    if not np.isfinite(condition) or condition > _MAX_CONDITION:
        raise ValueError(
            f"background={degree}: the {n_used} used pixels of b do not determine a polynomial "
            f"of degree {degree} (TᵀWT has condition number {condition:.1e}); use a lower degree"
        )
    if cross is not None:
        return BackgroundTerms(basis, cross, ttt, ttb, w, n_used, shape, pair.geometry.used,
                               tuple(pair.b_shape))
    if spectrum is None:
        spectrum = ExtendedSpectrum(pair.extended, shape)
    cross = np.empty((shape[0] * shape[1], m))
    for t in range(m):
        image = basis.image(t) if w is None else w * basis.image(t)
        # correlate_valid is in flipped-kernel order u = (kh-1, kw-1) − j: flip back.
        cross[:, t] = spectrum.correlate_valid(image)[::-1, ::-1].ravel()
    return BackgroundTerms(basis, cross, ttt, ttb, w, n_used, shape, pair.geometry.used,
                           tuple(pair.b_shape))


def profile_out(stats: SufficientStatistics, terms: BackgroundTerms) -> ProfiledStatistics:
    """The statistics of the kernel problem with the background minimised out.

    ``stats`` and ``terms`` must belong to the same pair and weights.  Profile each pair, then
    add (each pair has its own background).

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> from kernelfit.core.forward import convolve
    >>> from kernelfit.stats import statistics
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((30, 30)), rng.random((3, 3))
    >>> pair = prepare_pair(a, convolve(a, k, boundary="valid") + 5.0, 3, boundary="valid")
    >>> terms = background_terms(pair, (3, 3), 0)
    >>> s = profile_out(statistics(pair.extended, pair.b_used, (3, 3)), terms)
    >>> kernel = np.linalg.solve(s.gram, s.rhs).reshape(3, 3)
    >>> np.allclose(kernel, k), np.round(background_coefficients(terms, kernel), 10)
    (True, array([5.]))
    """
    if tuple(stats.shape) != tuple(terms.kernel_shape):
        raise ValueError(f"statistics of kernel shape {tuple(stats.shape)} and background "
                         f"terms of kernel shape {terms.kernel_shape} do not belong together")
    if isinstance(stats, ProfiledStatistics) or stats.n_used != terms.n_used:
        raise ValueError(f"the statistics ({stats.n_used} pixels) and the background terms "
                         f"({terms.n_used} pixels) are not of the same pair and weights "
                         "(or the statistics are already profiled)")
    Y = terms.whiten(terms.cross.T)          # L⁻¹Cᵀ, (m, p)
    f = terms.whiten(terms.ttb)              # L⁻¹e
    gram = stats.gram - Y.T @ Y
    gram = 0.5 * (gram + gram.T)
    rhs = stats.rhs - Y.T @ f
    btb = max(float(stats.btb - f @ f), 0.0)
    m = len(terms.basis)
    return ProfiledStatistics(gram, rhs, btb, int(stats.n_used) - m, tuple(stats.shape),
                              int(stats.n_used), m, (terms,))


def profiled_statistics(pairs, shape, degree, *, weights=None, spectra=None):
    """Statistics of several pairs with a background per pair profiled out, summed.

    Parameters
    ----------
    pairs : PreparedPair or list of PreparedPair
    shape : (kh, kw)
    degree : int
    weights : list of ndarray or None, optional
        Pixel weights per pair (IRLS); ``None`` = the pairs' use masks.
    spectra : list of ExtendedSpectrum or None, optional
        FFTs of the pairs' extended images, when the caller has them; computed otherwise
        (they are returned so that the prediction can reuse them).

    Returns
    -------
    (ProfiledStatistics, list of BackgroundTerms, list of ExtendedSpectrum)
    """
    pairs = [pairs] if isinstance(pairs, PreparedPair) else list(pairs)
    weights = [None] * len(pairs) if weights is None else list(weights)
    spectra = [None] * len(pairs) if spectra is None else list(spectra)
    total, all_terms, all_spectra = None, [], []
    for pair, w, spectrum in zip(pairs, weights, spectra):
        spectrum = spectrum or ExtendedSpectrum(pair.extended, shape)
        terms = background_terms(pair, shape, degree, spectrum=spectrum, weights=w)
        w_stats = terms.weights
        binary = w_stats is None or bool(np.all((w_stats == 0) | (w_stats == 1)))
        s = statistics(pair.extended, pair.b_used, shape, weights=w_stats,
                       spectrum=spectrum if binary else None)
        profiled = profile_out(s, terms)
        total = profiled if total is None else total + profiled
        all_terms.append(terms)
        all_spectra.append(spectrum)
    return total, all_terms, all_spectra


def background_coefficients(terms: BackgroundTerms, kernel) -> np.ndarray:
    """The least-squares background of a fitted kernel: ``β = (TᵀWT)⁻¹(TᵀWb − TᵀWX k)``.

    ``kernel`` is in convolution orientation (kernel-shaped or flattened in C order).
    Exact for any kernel — from any model or solver — fitted on the profiled statistics.
    """
    k = np.asarray(kernel, dtype=np.float64).ravel()
    if k.size != terms.cross.shape[0]:
        raise ValueError(f"a kernel of {k.size} coefficients given for background terms of "
                         f"kernel shape {terms.kernel_shape}")
    return terms.solve(terms.ttb - terms.cross.T @ k)


def background_image(terms: BackgroundTerms, beta, *, full=True) -> np.ndarray:
    """The fitted background ``Σ_t β_t T_t``.

    ``full=True``: shaped like ``b``, the polynomial continued (same scaled coordinates)
    beyond the used rectangle; ``full=False``: over the used rectangle only.
    """
    if not full:
        return terms.basis.evaluate(beta)
    basis = terms.basis
    coords = []
    for axis in (0, 1):
        start = terms.used[axis].indices(terms.b_shape[axis])[0]
        n_inside = basis.shape[axis]
        index = np.arange(terms.b_shape[axis]) - start
        coords.append(2.0 * index / (n_inside - 1) - 1.0 if n_inside > 1
                      else np.zeros(terms.b_shape[axis]))
    vy = legendre.legvander(coords[0], basis.degree)
    vx = legendre.legvander(coords[1], basis.degree)
    return vy @ basis._coefficient_grid(beta) @ vx.T


def project_out(residual, terms: BackgroundTerms) -> np.ndarray:
    """``r ↦ r − T(TᵀWT)⁻¹TᵀW r`` over the used rectangle (weight-0 pixels read as 0).

    For a fixed kernel, ``project_out(X k − b)`` is the residual after the best background
    (the negative of ``b − a ⊛ k − background``), and ``Xᵀ W project_out(X k − b)`` is the
    gradient of the profiled objective: what the matrix-free path needs (see the module
    docstring).  Pixels of weight 0 come back as ``−(fitted background)`` there;
    multiply by the weights (or mask them) before summing.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> a = np.random.default_rng(0).random((12, 12))
    >>> terms = background_terms(prepare_pair(a, a, 3, boundary="valid"), (3, 3), 1)
    >>> r = 3.0 + 2.0 * terms.basis.image(2)
    >>> float(np.abs(project_out(r, terms)).max()) < 1e-12
    True
    """
    r = np.asarray(residual, dtype=np.float64)
    if r.shape != terms.basis.shape:
        raise ValueError(f"residual has shape {r.shape}; the used rectangle is "
                         f"{terms.basis.shape}")
    w = terms.weights
    if w is None:
        wr = r
    else:
        wr = np.where(w != 0, w * np.where(w != 0, r, 0.0), 0.0)
        r = np.where(w != 0, r, 0.0)
    gamma = terms.solve(terms.basis.transpose_apply(wr))
    return r - terms.basis.evaluate(gamma)


def residual_with_background(pair: PreparedPair, terms: BackgroundTerms, kernel, beta=None,
                             spectrum=None) -> np.ndarray:
    """``b − a ⊛ kernel − background``, shaped like ``b``, NaN where a pixel was not used.

    ``beta`` defaults to :func:`background_coefficients` of ``kernel``.
    """
    if beta is None:
        beta = background_coefficients(terms, kernel)
    return pair.residual(kernel, spectrum) - background_image(terms, beta)


# -- helpers ---------------------------------------------------------------------------------

def _scaled(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def _name(power: int, variable: str) -> str:
    return "" if power == 0 else variable if power == 1 else f"P{power}({variable})"


def _monomial_name(i: int, j: int) -> str:
    def one(power, variable):
        return "" if power == 0 else variable if power == 1 else f"{variable}^{power}"
    return one(i, "x") + ("*" if i and j else "") + one(j, "y") or "1"


def _effective_weights(pair: PreparedPair, weights):
    if weights is None:
        return None if pair.use is None else pair.use.astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != pair.b_used.shape:
        raise ValueError(f"weights have shape {w.shape}; the used rectangle of b is "
                         f"{pair.b_used.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    return w if pair.use is None else np.where(pair.use, w, 0.0)


def _gram_of_basis(basis: BackgroundBasis, w) -> np.ndarray:
    """``TᵀWT`` from the 1-D factors: ``Σ_y P_j P_l(y) Σ_x w P_i P_k(x)``, no image-sized
    temporaries beyond one ``Ho × (d+1)²`` array."""
    d1 = basis.degree + 1
    vx, vy = basis.vx, basis.vy
    xx = (vx[:, :, None] * vx[:, None, :]).reshape(len(vx), d1 * d1)     # [x, (i, k)]
    if w is None:
        rows = np.broadcast_to(xx.sum(axis=0), (len(vy), d1 * d1))
    else:
        rows = w @ xx                                                      # [y, (i, k)]
    yy = (vy[:, :, None] * vy[:, None, :]).reshape(len(vy), d1 * d1)     # [y, (j, l)]
    full = (yy.T @ rows).reshape(d1, d1, d1, d1)                           # [j, l, i, k]
    ix, iy = basis._ix, basis._iy
    ttt = full[iy[:, None], iy[None, :], ix[:, None], ix[None, :]]
    return 0.5 * (ttt + ttt.T)


def fitted_background(terms_list, kernel, *, single):
    """``(fit.background, fit.info['background'])`` for a kernel fitted on profiled statistics.

    ``fit.background`` holds each pair's Legendre coefficients ``β`` (one array, or a list
    for several pairs); the info gives the degree, the term names and the same background
    as monomials in the scaled coordinates.
    """
    betas = [background_coefficients(terms, kernel) for terms in terms_list]
    basis = terms_list[0].basis
    info = {"degree": basis.degree, "names": list(terms_list[0].names),
            "monomials": [terms.basis.monomials(beta)
                          for terms, beta in zip(terms_list, betas)]}
    if single:
        info["monomials"] = info["monomials"][0]
    return (betas[0] if single else betas), info
