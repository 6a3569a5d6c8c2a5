"""Every option of :func:`kernelfit.estimate`, checked once, at the door.

:func:`check_request` validates the options every fit shares and returns the
:class:`~kernelfit.core.problem.FitProblem` the dispatch reads; the checks that only one fit
needs (the options a structured model takes, a robust fit's) are the small helpers below,
called by :mod:`kernelfit.front.dispatch`.  The messages name the parameter, its value and
the fix.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from ..core.conventions import normalize_boundary, normalize_shape
from ..core.defects import check_saturation_option
from ..core.problem import FitProblem
from ..fit import classic
from ..fit.models import STRUCTURED
from ..models.parametric import MODEL_CLASSES, KernelModel
from ..solvers.regularisers import NONSMOOTH, QUADRATIC
from ..stats.background import check_degree

# Options of the free model: the matrix-free path's (solvers.iterative.solve_iterative) and the
# robust fits' (kernelfit.robust: the Huber threshold and sigma-clipping).
FREE_OPTIONS = ("tol", "maxiter")


ROBUST_OPTIONS = ("f_scale", "clip", "tol", "maxiter")


PARAMETRIC = tuple(MODEL_CLASSES)


MODELS = ("free",) + tuple(STRUCTURED) + PARAMETRIC


LOSSES = ("l2", "l1", "huber")


REGULARISERS = (None,) + QUADRATIC + NONSMOOTH


METHODS = (None, "normal", "iterative", "lp") + classic.METHODS


def check_request(shape, *, boundary, center, mask, saturation, saturation_a, background,
                  single, model_options, **options) -> FitProblem:
    """Validate the options every fit shares; the problem without its pairs.

    ``options`` are ``model``, ``loss``, ``reg``, ``lam``, ``nonneg``, ``normalize``,
    ``method`` and ``noise_std``, as :func:`kernelfit.estimate` takes them.
    """
    shape = normalize_shape(shape)
    boundary = normalize_boundary(boundary)
    background = check_degree(background)
    check_saturation_option(saturation, "saturation")
    check_saturation_option(saturation_a, "saturation_a")
    _check_options(shape=shape, **options)
    preparation = dict(boundary=boundary, center=center, mask=mask, saturation=saturation,
                       saturation_a=saturation_a)
    return FitProblem(shape=shape, boundary=boundary, background=background, single=single,
                      model_options=dict(model_options), preparation=preparation, **options)


def _check_options(*, model, loss, reg, lam, method, shape, nonneg, normalize, noise_std):
    if not isinstance(model, KernelModel) and model not in MODELS:
        raise ValueError(f"model={model!r} is not available; available: {MODELS} or a "
                         "kernelfit.models.parametric.KernelModel object")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not available; available: {LOSSES}")
    if reg not in REGULARISERS:
        raise ValueError(f"reg={reg!r} is not available; available: {REGULARISERS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not available; available: {METHODS}")
    if reg is None and lam != "auto":
        raise ValueError(f"lam={lam!r} is given but reg=None; pass reg='ridge' (or another "
                         "regulariser) to use it")
    if reg is not None and lam != "auto" and not _is_finite_number(lam, minimum=0.0):
        raise ValueError(f"lam={lam!r}: reg={reg!r} needs lam='auto' or a finite number >= 0")
    if not isinstance(nonneg, (bool, np.bool_)):
        raise TypeError(f"nonneg={nonneg!r} must be True or False")
    if normalize is not None and not _is_finite_number(normalize):
        raise ValueError(f"normalize={normalize!r} must be None or a finite number (the kernel sum)")
    if nonneg and normalize is not None and normalize < 0:
        raise ValueError(f"normalize={normalize!r} is impossible with nonneg=True")
    if noise_std is not None and not (_is_finite_number(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std={noise_std!r} must be None or a finite number > 0")
    if method == "normal":
        check_gram_memory(shape)


# The direct path holds the Gram matrix, its Cholesky factor and its inverse (the covariance)
# at once: at least this many p × p float64 matrices.
GRAM_COPIES = 3


def check_gram_memory(shape, *, memory=None) -> None:
    """Refuse ``method='normal'`` up front when its ``p × p`` matrices cannot fit in memory.

    ``memory`` (bytes) defaults to the machine's physical memory.  Without the check, such
    a fit spends seconds on the statistics before NumPy's ``MemoryError``.

    Examples
    --------
    >>> check_gram_memory((300, 300), memory=2**34)
    Traceback (most recent call last):
    ...
    ValueError: method='normal' with shape=(300, 300) needs 90000 x 90000 matrices ...
    """
    p = shape[0] * shape[1]
    needed = GRAM_COPIES * 8 * p * p
    memory = physical_memory() if memory is None else memory
    if needed > memory:
        raise ValueError(
            f"method='normal' with shape={tuple(shape)} needs {p} x {p} matrices (the Gram "
            f"matrix, its factor and its inverse): about {needed / 2**30:.4g} GiB, more "
            f"than this machine's {memory / 2**30:.4g} GiB of memory; use "
            "method='iterative' (matrix-free, any kernel size) or a smaller shape")


def physical_memory() -> int:
    """The machine's physical memory in bytes (1 TiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return 2**40


def _is_finite_number(value, minimum=None) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    return bool(np.isfinite(value)) and (minimum is None or value >= minimum)


def _refuse(model, **options):
    """Raise for options (given as name=value, unset = None/False) the model cannot honour."""
    for name, value in options.items():
        if value is not None and value is not False:
            raise ValueError(f"{name}={value!r} is not available with model={model!r}")


def _structured_options(model, model_options, *, reg, nonneg, normalize, method):
    """Translate estimate()'s options for a structured model; refuse what it cannot do."""
    _refuse(model, reg=reg, nonneg=nonneg, normalize=normalize, method=method)
    accepted = STRUCTURED[model][1]
    unknown = sorted(set(model_options) - set(accepted))
    if unknown:
        raise TypeError(f"model={model!r} does not take {unknown}; it takes {sorted(accepted)}")
    return {accepted[name]: value for name, value in model_options.items()}
