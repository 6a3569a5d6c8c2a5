"""The seed answers as methods: the Fourier ratio, the Wiener ratio and Richardson–Lucy.

Seed 001's answers estimate the kernel by dividing spectra (``B̂/Â``), by a regularised ratio,
or by Richardson–Lucy iterations with the image as the "PSF".  Each is implemented here as
well as it can be, so that users can compare them with least squares (:func:`kf.estimate
<kernelfit.estimate>`, ``method=None``) on their own data.  All three take the prepared pairs
of :func:`kernelfit.core.design.prepare_pair` and return a normal :class:`~kernelfit.KernelFit`
(``model='free'``, ``method`` = the method's name, its own numbers in ``fit.info``).

The methods are :mod:`~kernelfit.fit.classic.fourier`, :mod:`~kernelfit.fit.classic.wiener`
and :mod:`~kernelfit.fit.classic.richardson_lucy`; the two ratios share the edge-treated
spectra and the edge correction of :mod:`~kernelfit.fit.classic.spectra`.  Here: the options
each method takes, their check, and the dispatch that ``kf.estimate(method=...)`` calls.

>>> METHODS
('fourier', 'wiener', 'richardson-lucy')
"""

from __future__ import annotations

from ..result import KernelFit
from .fourier import MAX_SELECT, fit_fourier
from .richardson_lucy import fit_richardson_lucy
from .spectra import EDGES, MAX_DENSE, periodic_component
from .wiener import fit_wiener

__all__ = ["EDGES", "MAX_DENSE", "MAX_SELECT", "METHODS", "OPTIONS", "check_options",
           "fit_classic", "fit_fourier", "fit_richardson_lucy", "fit_wiener",
           "periodic_component"]

METHODS = ("fourier", "wiener", "richardson-lucy")
# Options each method takes (passed through kf.estimate's **model_options).
OPTIONS = {
    "fourier": ("edges", "taper", "threshold", "edge_correction", "maxiter", "tol"),
    "wiener": ("eps", "edges", "taper", "edge_correction", "maxiter", "tol"),
    "richardson-lucy": ("tol", "maxiter", "accelerate"),
}


def check_options(method, *, model="free", loss="l2", reg=None, nonneg=False, normalize=None,
                  background=None, options=None) -> None:
    """Raise ``ValueError``/``TypeError`` for options ``method`` cannot honour.

    ``richardson-lucy`` accepts ``nonneg=True`` (its kernels are non-negative anyway).

    Examples
    --------
    >>> check_options("wiener", reg="ridge")
    Traceback (most recent call last):
    ...
    ValueError: reg='ridge' is not available with method='wiener'; ...
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    given = {"model": (model, "free"), "loss": (loss, "l2"), "reg": (reg, None),
             "normalize": (normalize, None), "background": (background, None)}
    if method != "richardson-lucy":
        given["nonneg"] = (bool(nonneg), False)
    for name, (value, default) in given.items():
        if value != default:
            hint = ("use least squares (method=None), which takes it" if name != "model"
                    else "the classic methods estimate free kernels")
            raise ValueError(f"{name}={value!r} is not available with method={method!r}; "
                             f"{hint}")
    unknown = sorted(set(options or {}) - set(OPTIONS[method]))
    if unknown:
        raise TypeError(f"method={method!r} does not take {unknown}; it takes "
                        f"{sorted(OPTIONS[method])}")


def fit_classic(method, pairs, shape, *, single, noise_std=None, **options) -> KernelFit:
    """Run one of :data:`METHODS` on prepared pairs (what ``kf.estimate(method=...)`` calls)."""
    if method == "fourier":
        return fit_fourier(pairs, shape, single=single, noise_std=noise_std, **options)
    if method == "wiener":
        return fit_wiener(pairs, shape, single=single, **options)
    if method == "richardson-lucy":
        return fit_richardson_lucy(pairs, shape, single=single, noise_std=noise_std,
                                   **options)
    raise ValueError(f"method={method!r} is not one of {METHODS}")
