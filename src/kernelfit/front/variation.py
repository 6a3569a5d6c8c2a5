"""The front door of ``kf.estimate(..., variation=d)``: checks the options, prepares the
pairs and hands them to :func:`kernelfit.fit.varying.fit_varying`."""

from __future__ import annotations

import numbers

import numpy as np

from ..core.conventions import normalize_boundary, normalize_shape
from ..core.design import _prepare_pairs, _single
from ..core.varying import check_variation, monomial_powers
from ..fit.annotate import _with_rounding
from ..fit.varying import MAX_UNKNOWNS, NONNEG_GRID, fit_varying
from ..solvers.regularisers import QUADRATIC
from ..stats.background import check_degree
from .options import _check_options

# Options of estimate() this path honours only at their defaults.
_DEFAULTS = {"model": "free", "loss": "l2"}
# Options it passes on to the fit (checked in estimate_varying).
_PASSED = ("reg", "lam", "nonneg", "normalize", "noise_std", "nonneg_grid")


def estimate_varying(a, b, shape, *, variation, boundary="valid", center=None, mask=None,
                     saturation=None, saturation_a=None, method=None, channel_axis=None,
                     shared_channels=False, **options):
    """``kf.estimate(..., variation=d)``: least squares for a polynomially varying kernel.

    Takes :func:`kernelfit.estimate`'s arguments; the free model with ``loss='l2'`` and the
    direct solver (on the statistics of the ``T·p`` coefficients).  Options:

    ``background=d``
        A polynomial background per pair, fitted with the kernel (profiled out of the
        statistics, see :func:`kernelfit.stats.varying.varying_background_terms`).
    ``reg='ridge'|'gradient'|'laplacian'``, ``lam``
        The penalty is the regulariser of every term's coefficients with one ``lam``: the
        objective is ``‖Xk − b‖²/n + lam·Σ_t R(k_t)``, ``lam`` per pixel as for an invariant
        kernel; ``lam='auto'`` is chosen by GCV, or by the discrepancy principle when
        ``noise_std`` is given (exactly, on the statistics).
    ``nonneg=True``, ``nonneg_grid=n`` (default 3)
        The kernel is held ``≥ 0`` — every coefficient of ``kernel_at(y, x)`` — exactly at the
        ``n × n`` positions ``linspace(0, H − 1, n) × linspace(0, W − 1, n)`` of ``b`` (by
        default its corners, edge midpoints and centre), not at every pixel: the constraint
        at every pixel is semi-infinite.  For ``variation`` ≤ 1 the kernel is linear in the
        position, so each coefficient's minimum over ``b`` is at a corner and any grid
        (``n ≥ 2``) makes it ``≥ 0`` everywhere on ``b``.  For higher degrees a finer grid
        narrows the gaps.  The positions are in ``fit.info['nonneg_positions']``.
    ``normalize=s``
        The kernel sums to ``s`` at every position: ``Σ_j k_0[j] = s`` and ``Σ_j k_t[j] = 0``
        for ``t ≥ 1`` (``k_0`` is the constant term), linear equalities solved exactly.

    Constraints are solved by a dual active-set method on the normal equations
    (:func:`kernelfit.solvers.linear_constraints.solve_linearly_constrained`); the standard
    errors are then those of least squares with the active constraints held as equalities.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> a = np.random.default_rng(0).random((40, 40))
    >>> vk = kf.VaryingKernel([np.eye(3) / 3, np.eye(3)[::-1] / 9, np.zeros((3, 3))], 1,
    ...                    frame=a.shape, center=(1, 1))
    >>> fit = kf.estimate(a, kf.convolve(a, vk), 3, boundary="fill", variation=1)
    >>> np.allclose(fit.kernel_at(0, 39), vk.at(0, 39))
    True
    """

    # Channels are split off before this is called (kernelfit.channels).
    del channel_axis, shared_channels
    degree = check_variation(variation)
    background = check_degree(options.pop("background", None))
    passed = _refuse(options, method)
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
    passed = _check_passed(passed, shape)
    passed["noise_std"] = _with_rounding(passed["noise_std"], pairs)
    return fit_varying(pairs, shape, degree, background=background, single=_single(a),
                       **passed)


def _check_passed(passed, shape) -> dict:
    """The fit's options with their defaults, checked as estimate() checks them."""
    options = {"reg": None, "lam": "auto", "nonneg": False, "normalize": None,
               "noise_std": None, "nonneg_grid": None, **passed}
    reg, grid = options["reg"], options["nonneg_grid"]
    if reg is not None and reg not in QUADRATIC:
        raise ValueError(f"reg={reg!r} is not available with variation= (a free kernel "
                         f"solved on the statistics); use one of {QUADRATIC} or None")
    _check_options(model="free", loss="l2", reg=reg, lam=options["lam"], method=None,
                   shape=shape, nonneg=options["nonneg"], normalize=options["normalize"],
                   noise_std=options["noise_std"])
    if grid is not None and not options["nonneg"]:
        raise ValueError(f"nonneg_grid={grid!r} is given but nonneg=False; pass nonneg=True "
                         "to use it")
    if grid is None:
        grid = NONNEG_GRID
    elif isinstance(grid, (bool, np.bool_)) or not isinstance(grid, numbers.Integral) \
            or grid < 2:
        raise ValueError(f"nonneg_grid={grid!r} must be an integer >= 2 (the n of the n x n "
                         "grid of positions of b where the kernel is held >= 0)")
    options["nonneg_grid"] = int(grid)
    options["nonneg"] = bool(options["nonneg"])
    return options


def _refuse(options, method) -> dict:
    """Raise for options this path cannot honour; return those it passes on."""
    passed = {}
    for name, value in options.items():
        if name in _PASSED:
            passed[name] = value
            continue
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
    return passed


def _same(value, default) -> bool:
    return value is default or (isinstance(value, str) and value == default)
