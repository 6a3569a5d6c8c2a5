"""Fitting parametric kernels: L2 on the sufficient statistics, exact L1, Huber.

The fit runs in stages, one module each:

* :mod:`~kernelfit.models.parametric_data`: the statistics ``G = XᵀX``, ``c = Xᵀb`` of every
  pair (or their exact symmetric 'reflect' form from two DCTs), their whitened square root,
  and the image residuals the robust losses need;
* :mod:`~kernelfit.models.parametric_l2`: the least-squares fit on the statistics alone,
  multi-start from the family's candidates;
* :mod:`~kernelfit.models.parametric_robust`: ``loss='l1'`` (exact minimiser) and
  ``loss='huber'`` on the images, from the L2 answer;
* :mod:`~kernelfit.models.parametric_l1`: ``loss='l1'`` for a family with one shape
  parameter (Gaussian σ, disk radius; amplitude free or fixed, no offset or background):
  a window search on the images that needs no statistics at all, tried first.

Uncertainty
-----------
``H = JᵀGJ`` with ``J = ∂k/∂θ`` (free parameters) is the Gauss–Newton matrix for every loss.

* L2: ``cov = σ̂²·H⁻¹``, ``σ̂² = RSS / (n − m)``.
* L1: the asymptotic covariance of least-absolute-deviation regression with independent
  errors, ``cov = H⁻¹ / (2 f̂(0))²``, where ``f̂(0)`` is the residual density at zero, from a
  Gaussian kernel density estimate with Silverman's bandwidth.  It describes the sampling
  spread of ``θ̂`` when the model holds with i.i.d. errors; when ``b`` is not a blurred copy
  of ``a`` at all (seed 002's network output) it is only indicative.
* Huber: Huber's asymptotic formula ``cov = [Σψ(r)²/(n − m)] / [mean ψ'(r)]² · H⁻¹``.

Fixed parameters (``amplitude`` with ``normalize=``, ``dy``/``dx`` without ``fit_offset``) have
standard error 0.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.conventions import normalize_shape
from ..stats.background import check_degree
from .parametric import make_model
from .parametric_data import _Data, _Layout
# Re-exported: its tests import it from here.
from .parametric_data import _reflect_symmetric_statistics  # noqa: F401
from .parametric_l2 import _fit_l2, _symmetric_kernel
from .parametric_l1 import applies, fit_l1_one_parameter
from .pixel_sample import abs_sum
from .parametric_robust import _fit_huber, _fit_l1, _ImageProblem
from ..stats.gram import SufficientStatistics

__all__ = ["ParametricFit", "fit_parametric", "LOSSES"]


LOSSES = ("l2", "l1", "huber")


@dataclass
class ParametricFit:
    """The result of :func:`fit_parametric`.

    Attributes
    ----------
    model : str
        The family's name.
    kernel : (kh, kw) ndarray
        The fitted kernel, convolution orientation, centre at ``center``.
    params : dict
        Every parameter: the family's, then ``'dy'``, ``'dx'`` (sub-pixel centre offset,
        pixels) and ``'amplitude'`` (the kernel sum).  Angles in degrees.
    stderr : dict
        Standard error of each parameter (0 for fixed ones, NaN where not determined).
    cov : ndarray or None
        Covariance of the free parameters, in the order of ``free``.
    free : tuple of str
        Names of the fitted parameters.
    objective : float
        The loss at the optimum: ``Σr²`` (l2), ``Σ|r|`` (l1) or ``Σρ(r)`` (huber), over every
        used pixel of every pair, in units of ``b`` (squared for l2).
    loss : str
    rss : float
        ``Σr²`` at the optimum (whatever the loss).
    noise_std : float
        ``sqrt(rss / (n_used − n_background − len(free)))`` (``n_background``: the
        background terms of every pair, 0 without ``background=``).
    n_used : int
        Pixels used, over every pair.
    converged : bool
        False when the optimiser stopped early, a parameter ended on a bound, or the
        covariance is singular; ``message`` says which and what to change.
    message : str
    shape, center : tuple of int
    info : dict
        Diagnostics: the starts refined and their objectives, function evaluations, IRLS
        iterations, the residual density (l1), timings.
    background : list of ndarray or None
        With ``background=``: each pair's polynomial coefficients ``β`` (Legendre products,
        in the order of ``background_terms[i].names``), fitted with the same loss as the
        kernel.
    background_terms : list of BackgroundTerms or None
        With ``background=``: each pair's basis and statistics
        (:func:`kernelfit.stats.background.background_terms`), for the background image.
    """

    model: str
    kernel: np.ndarray
    params: dict
    stderr: dict
    cov: np.ndarray | None
    free: tuple
    objective: float
    loss: str
    rss: float
    noise_std: float
    n_used: int
    converged: bool
    message: str
    shape: tuple
    center: tuple
    info: dict = field(default_factory=dict)
    background: list | None = None
    background_terms: list | None = None


def fit_parametric(pairs, model, shape, center=None, *, loss="l2", f_scale=1.0, normalize=None,
                   fit_offset=False, x0=None, n_refine=None, background=None) -> ParametricFit:
    """Fit a parametric kernel ``k(θ)`` with ``b ≈ a ⊛ k(θ)``.

    Parameters
    ----------
    pairs : PreparedPair, list of PreparedPair, or SufficientStatistics
        The data: pairs from :func:`kernelfit.design.prepare_pair` (all with kernel shape
        ``shape``; one parameter set shared by all), or ready statistics (``loss='l2'``
        only: the fit then never touches an image).
    model : str or KernelModel
        ``'gaussian'``, ``'elliptical'``, ``'moffat'``, ``'disk'``, ``'motion'``, ``'box'``
        (default options), or a model object such as ``Gaussian(truncate=4.0)``.
    shape : int or (kh, kw)
        Kernel size.
    center : (int, int), optional
        Kernel index of the model's centre.  Default: the centre the pairs were prepared
        with (``((kh-1)//2, (kw-1)//2)`` for statistics); it must equal that centre.
    loss : {'l2', 'l1', 'huber'}, default 'l2'
        Least squares, least absolute deviations (exact minimiser), or Huber.
    f_scale : float, default 1.0
        Huber's threshold, in units of ``b``: residuals beyond it count linearly.
    normalize : float, optional
        Fix the kernel sum (the amplitude) to this value; ``None`` fits the amplitude.
    fit_offset : bool, default False
        Also fit a sub-pixel centre offset ``(dy, dx)`` (pixels, within half the kernel).
    x0 : dict or sequence, optional
        Starting values: a dict by parameter name (others get the automatic guess) or one
        value per free parameter, in the order of ``fit.free``.  Skips the multi-start grid.
    n_refine : int, optional
        Number of best grid candidates refined by the local optimiser; default the family's
        ``n_starts`` (1 for the Gaussian, whose objective has one minimum; 3 for families
        with angles or radii).
    background : int, optional
        Fit a polynomial background of this degree per pair (0: a constant offset) jointly
        with the kernel: ``b ≈ a ⊛ k(θ) + Σ β_t T_t`` (:mod:`kernelfit.stats.background`).
        L2 profiles it out of the statistics exactly; ``'l1'`` and ``'huber'`` fit ``β``
        with ``θ`` on the pixels' residuals, from the L2 answer.  Needs pairs, not
        statistics (pass profiled statistics for an L2 fit on statistics instead).

    Returns
    -------
    ParametricFit

    Raises
    ------
    ValueError
        For an unknown loss or model, inconsistent shapes or centres, a non-positive
        ``f_scale``, ``normalize=0``, a robust loss or a background on statistics, or a
        background the used pixels do not determine.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi
    >>> from kernelfit.core.design import prepare_pair
    >>> rng = np.random.default_rng(0)
    >>> a = ndi.uniform_filter(rng.random((96, 96)), 3)
    >>> b = ndi.gaussian_filter(a, 1.7, mode="reflect", truncate=4.0)
    >>> pair = prepare_pair(a, b, (15, 15), boundary="reflect", center=(7, 7))
    >>> fit = fit_parametric(pair, "gaussian", (15, 15), normalize=1.0)
    >>> round(fit.params["sigma"], 6)
    1.7
    """
    started = time.perf_counter()
    shape = normalize_shape(shape)
    model = make_model(model)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} must be one of {LOSSES}")
    if isinstance(f_scale, bool) or not isinstance(f_scale, numbers.Real) \
            or not np.isfinite(f_scale) or f_scale <= 0:
        raise ValueError(f"f_scale={f_scale!r} must be a positive finite number")
    if normalize is not None and (isinstance(normalize, bool)
                                  or not isinstance(normalize, numbers.Real)
                                  or not np.isfinite(normalize) or normalize == 0):
        raise ValueError(f"normalize={normalize!r} must be a finite non-zero number or None")
    if n_refine is None:
        n_refine = int(getattr(model, "n_starts", 3))
    if isinstance(n_refine, bool) or not isinstance(n_refine, numbers.Integral) or n_refine < 1:
        raise ValueError(f"n_refine={n_refine!r} must be a positive integer")
    background = check_degree(background)
    symmetric = bool(getattr(model, "symmetric", False)) and not fit_offset \
        and background is None
    if loss == "l1" and background is None and x0 is None \
            and not isinstance(pairs, SufficientStatistics):
        fast = _fit_l1_window(pairs, model, shape, center, normalize, bool(fit_offset),
                              started)
        if fast is not None:
            return fast
    data = _Data(pairs, shape, center, needs_images=loss != "l2", symmetric=symmetric,
                 background=background)
    layout = _Layout(model, shape, data.center, normalize, bool(fit_offset))
    t_data = time.perf_counter()

    # --- L2 on the statistics: candidates, screening, refinement ---------------------------
    theta, status_ok, notes, info = _fit_l2(layout, data, x0, n_refine)
    if data.quadrant is not None and not _symmetric_kernel(layout.kernel(theta), shape):
        # The family claims symmetry but this kernel lacks it: redo with the full statistics.
        data = _Data(pairs, shape, center, needs_images=loss != "l2", symmetric=False)
        theta, status_ok, notes, info = _fit_l2(layout, data, x0, n_refine)
    beta = None if data.terms is None else data.background_coefficients(layout.kernel(theta))
    t_l2 = time.perf_counter()

    # --- robust losses on the images (the background's coefficients fitted jointly) --------
    residual = None
    if loss != "l2":
        problem = _ImageProblem(layout, data)
        start = problem.join(theta, beta)
        if loss == "l1":
            t, residual, robust_notes, robust_info = _fit_l1(problem, start)
        else:
            t, residual, robust_notes, robust_info = _fit_huber(problem, start, float(f_scale))
        theta, beta = problem.split(t)
        status_ok &= not robust_notes
        notes += robust_notes
        info.update(robust_info)
    t_robust = time.perf_counter()

    fit = _result(layout, data, theta, beta, residual, loss=loss, f_scale=float(f_scale),
                  notes=notes, ok=status_ok, info=info)
    info["seconds"] = {"statistics": t_data - started, "l2": t_l2 - t_data,
                       "robust": t_robust - t_l2, "total": time.perf_counter() - started}
    return fit


def _fit_l1_window(pairs, model, shape, center, normalize, fit_offset, started):
    """The L1 window search of :mod:`.parametric_l1` (one shape parameter), with no
    statistics at all; ``None`` where it does not apply or gives up."""
    data = _Data(pairs, shape, center, needs_images=True, symmetric=False, statistics=False)
    layout = _Layout(model, shape, data.center, normalize, fit_offset)
    if not applies(layout):
        return None
    t_data = time.perf_counter()
    found = fit_l1_one_parameter(data.pairs, layout, spectrum=data._spectrum)
    if found is None:
        return None
    theta, residual, gauss_newton, notes, info = found
    t_robust = time.perf_counter()
    fit = _result(layout, data, theta, None, residual, loss="l1", f_scale=1.0, notes=notes,
                  ok=True, info=info, gauss_newton=gauss_newton)
    info["seconds"] = {"statistics": t_data - started, "l2": 0.0,
                       "robust": t_robust - t_data, "total": time.perf_counter() - started}
    return fit


def _result(layout, data, theta, beta, residual, *, loss, f_scale, notes, ok, info,
            gauss_newton=None):
    """Canonical form, objective, uncertainty: the :class:`ParametricFit`.  ``gauss_newton``
    (``JᵀXᵀXJ`` over the free parameters) replaces the one from the statistics, and the
    residual's RSS theirs, when the fit had no statistics."""
    theta = layout.canonical(theta)
    k, J = layout.kernel_jacobian(theta)
    # With a robust background the residual holds the fitted β; the statistics' RSS would be
    # that of the least-squares β.
    rss = data.rss(k) if (beta is None and gauss_newton is None) or residual is None \
        else float(residual @ residual)
    n_free = len(layout.free)
    n = data.n_used   # pixels less the background terms: the degrees of freedom count both
    noise_std = float(np.sqrt(max(rss, 0.0) / (n - n_free))) if n > n_free else float("nan")
    if residual is None and loss != "l2":
        residual = data.residuals(k)
    objective, scale2, unc_info = _objective_and_scale(loss, rss, residual, n, n_free,
                                                       f_scale)
    info.update(unc_info)
    # With a background G is profiled: JᵀGJ is the Schur complement of the joint (θ, β)
    # Gauss–Newton matrix, so its inverse is θ's covariance with β as a nuisance.
    if gauss_newton is None:
        Jr = data.reduce(J)
        H = Jr.T @ (data.gram @ Jr)
    else:
        H = gauss_newton
    cov, cov_note = _covariance(H, scale2, layout.free)
    if cov_note:
        notes.append(cov_note)
    notes += layout.bound_notes(theta)
    params, stderr = layout.report(theta, cov)
    return ParametricFit(
        model=layout.model.name, kernel=k.reshape(layout.shape), params=params, stderr=stderr,
        cov=cov, free=layout.free, objective=float(objective), loss=loss, rss=float(rss),
        noise_std=noise_std, n_used=int(data.n_pixels),
        converged=bool(ok and not notes), message="; ".join(notes),
        shape=layout.shape, center=data.center, info=info,
        background=None if beta is None else data.split_background(beta),
        background_terms=None if data.terms is None else list(data.terms),
    )


# ---------------------------------------------------------------------------------------------
# Objective values and covariance
# ---------------------------------------------------------------------------------------------

def _objective_and_scale(loss, rss, residual, n, m, f_scale):
    """The loss at the optimum and the factor ``s²`` in ``cov = s²·(JᵀGJ)⁻¹``."""
    dof = n - m
    if loss == "l2":
        return rss, (rss / dof if dof > 0 else np.nan), {}
    if loss == "l1":
        density = _density_at_zero(residual)
        scale2 = 1.0 / (2.0 * density) ** 2 if density > 0 else np.nan
        return abs_sum(residual), scale2, {"density_at_zero": density}
    inside = np.abs(residual) <= f_scale
    rho = np.where(inside, 0.5 * residual**2, f_scale * np.abs(residual) - 0.5 * f_scale**2)
    psi = np.clip(residual, -f_scale, f_scale)
    mean_dpsi = inside.mean()
    scale2 = (psi @ psi / dof) / mean_dpsi**2 if dof > 0 and mean_dpsi > 0 else np.nan
    return float(rho.sum()), scale2, {"huber_inlier_fraction": float(mean_dpsi)}


def _density_at_zero(residual):
    """Gaussian kernel density estimate of the residuals at 0 (Silverman's bandwidth)."""
    r = np.asarray(residual, dtype=np.float64)
    n = r.size
    if n < 2:
        return float("nan")
    # A regular subsample of at most 2^16 residuals (every k-th) estimates the density to
    # about 1 %, enough for a standard error; 2^14 of them give the bandwidth's spread.
    r = r[::-(-n // 65536)]
    n = r.size
    few = r[::-(-n // 16384)]
    q75, q25 = np.percentile(few, [75, 25])
    spread = min(np.std(few), (q75 - q25) / 1.349) or np.std(few)
    if not spread > 0:
        return float("nan")
    h = 0.9 * spread * n ** (-0.2)
    return float(np.exp(-0.5 * (r / h) ** 2).sum() / (n * h * np.sqrt(2.0 * np.pi)))


def _covariance(H, scale2, names):
    """``scale2·H⁻¹``, or ``None`` with a note when ``H`` is singular."""
    if not np.isfinite(scale2):
        return None, "too few pixels or a degenerate residual: no standard errors"
    H = 0.5 * (H + H.T)
    d = np.sqrt(np.clip(np.diag(H), 0.0, None))
    if not np.all(d > 0):
        bad = [n for n, v in zip(names, d) if not v > 0]
        return None, f"the data do not constrain {bad} (zero sensitivity): no standard errors"
    # Scale to unit diagonal so the condition test sees correlations, not units.
    C = H / np.outer(d, d)
    lam = np.linalg.eigvalsh(C)
    if not lam[0] > 1e-12 * lam[-1]:
        return None, ("the parameters are not separately determined (singular Gauss–Newton "
                      "matrix): no standard errors; fix some of them (e.g. normalize=)")
    cov = scale2 * np.linalg.inv(C) / np.outer(d, d)
    return 0.5 * (cov + cov.T), ""
