"""(moved from kernelfit.variation)"""

from __future__ import annotations

from ..core.conventions import normalize_boundary, normalize_shape

from ..core.design import _prepare_pairs, _single
from ..core.varying import check_variation, monomial_powers
from ..fit.varying import MAX_UNKNOWNS, fit_varying
from ..stats.background import check_degree

# Options of estimate() this path honours only at their defaults.
_DEFAULTS = {"model": "free", "loss": "l2", "reg": None, "lam": "auto", "nonneg": False,
             "normalize": None, "noise_std": None}


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
    return fit_varying(pairs, shape, degree, background=background, single=_single(a))


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
