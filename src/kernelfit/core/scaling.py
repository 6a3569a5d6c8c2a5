"""Units of a fit: images far from 1 in magnitude are fitted in exactly rescaled units.

The kernel problem is scale-equivariant: scaling ``a`` by ``s`` and ``b`` by ``t`` gives the
kernel ``k·t/s``, the background, residual and noise times ``t``.  Floating point is not:
the Gram matrix holds squares of ``a``, so images of magnitude ``1e-160`` leave it in the
subnormal range (a degraded kernel reported as converged), ``1e-300`` underflow it to zero
(called rank-deficient), and ``1e+160`` overflow it.  A ``b`` of ``1e-300`` next to an ``a`` of
1 underflows ``bᵀb`` and the kernel's energy, so the diagnostics call a determined kernel
undetermined.

So the prepared pairs are rescaled by powers of two (exact: only the exponents change) when
an image's largest finite magnitude lies outside ``[2^-LIMIT, 2^LIMIT]``
(:func:`choose_scale`), and the fit's options and results are converted between the units
(:class:`DataScale`; the fit layer converts the result, ``kernelfit.fit.rescale``).  Images
inside that range (every ordinary image: ``LIMIT = 256``, about ``1e±77``) are not touched,
so their fits are bit for bit what they were.

Free kernels take a factor for ``a`` and one for ``b`` (each image to magnitude about 1).
Structured and parametric models take one factor for both, which leaves the kernel and
every parameter unchanged (only quantities in units of ``b`` scale); it is used only when it
brings both images into range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

# Exponent range (base 2) of the largest magnitude of an image left as it is.
LIMIT = 256


@dataclass(frozen=True)
class DataScale:
    """The exact factors (powers of two) the images of a fit are multiplied by.

    Attributes
    ----------
    a, b : float
        ``a`` is fitted as ``a·self.a`` and ``b`` as ``b·self.b``; the fitted kernel is then
        ``k·self.b/self.a``.
    """

    a: float = 1.0
    b: float = 1.0

    @property
    def identity(self) -> bool:
        return self.a == 1.0 and self.b == 1.0

    @property
    def kernel(self) -> float:
        """Factor from the user's kernel to the fitted one (``b/a``)."""
        return self.b / self.a

    def lam(self, value, degree: int, *, to_user: bool = False):
        """``lam`` (a number or an array) in fitted units, or back with ``to_user``.

        ``lam`` weighs ``R(k)`` against the mean squared residual, which the rescaling
        multiplies by ``b²``; the kernel is multiplied by ``b/a``, so a quadratic penalty
        (``degree=2``: ridge, gradient, Laplacian) by ``(b/a)²`` and a homogeneous one
        (``degree=1``: TV, L1) by ``b/a``: the factor is ``a²`` or ``a·b``.  Applied one
        factor at a time, so that only a result beyond float64 over- or underflows.
        """
        first, second = (self.a, self.a) if degree == 2 else (self.a, self.b)
        with np.errstate(over="ignore", under="ignore"):
            if to_user:
                return np.asarray(value, dtype=np.float64) / first / second
            return np.asarray(value, dtype=np.float64) * first * second

    def options(self, *, lam, noise_std, normalize, model_options, lam_degree=2) -> dict:
        """The options in fitted units.

        ``lam`` by :meth:`lam` (``lam_degree`` is the penalty's degree of homogeneity);
        ``noise_std`` and the Huber ``f_scale`` are in units of ``b``; ``normalize`` is a
        kernel sum.

        Raises
        ------
        ValueError
            For a ``lam`` that is not representable in fitted units (a fixed ``lam`` on
            images near ``1e-300`` weighs the penalty some ``1e+600`` times the data).
        """
        fitted_lam = lam
        if lam != "auto" and lam is not None:
            fitted_lam = float(self.lam(lam, lam_degree))
            if not np.isfinite(fitted_lam):
                raise ValueError(
                    f"lam={lam!r} weighs the penalty beyond float64's range against images of "
                    "this scale (it would leave a kernel of 0): pass lam='auto', or a lam "
                    "that scales with the images (with a² for reg='ridge', 'gradient', "
                    "'laplacian', with a·b for 'tv', 'l1')")
        out = {"lam": fitted_lam,
               "noise_std": None if noise_std is None else float(noise_std) * self.b,
               "normalize": None if normalize is None else float(normalize) * self.kernel}
        options = dict(model_options)
        if options.get("f_scale") is not None:
            options["f_scale"] = float(options["f_scale"]) * self.b
        if isinstance(options.get("eps"), (int, float, np.number)) \
                and not isinstance(options["eps"], bool):
            # The Wiener ε is in units of |Â|²: a² (times the grid's pixel count).
            options["eps"] = float(self.lam(options["eps"], 2))
        out["model_options"] = options
        return out

    def problem(self, problem, *, lam_degree=2):
        """A :class:`~kernelfit.core.problem.FitProblem` with its options in fitted units."""
        return dataclasses.replace(problem, **self.options(
            lam=problem.lam, noise_std=problem.noise_std, normalize=problem.normalize,
            model_options=problem.model_options, lam_degree=lam_degree))

    def apply(self, pairs) -> list:
        """The pairs in fitted units (new pair objects; the arrays are rescaled copies)."""
        if self.identity:
            return list(pairs)
        return [dataclasses.replace(
            pair, extended=pair.extended * self.a, b_used=pair.b_used * self.b,
            quantisation_var=pair.quantisation_var * self.b * self.b,
            quantisation_var_a=pair.quantisation_var_a * self.a * self.a) for pair in pairs]


def choose_scale(pairs, *, kernel_units: bool) -> DataScale:
    """The :class:`DataScale` for prepared pairs: identity unless an image is out of range.

    ``kernel_units`` allows separate factors for ``a`` and ``b`` (the caller converts
    kernel-valued results); without it one factor scales both, or none is used.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelfit.core.design import prepare_pair
    >>> pair = prepare_pair(np.ones((8, 8)) * 1e-300, np.ones((8, 8)), 3, boundary="fill")
    >>> scale = choose_scale([pair], kernel_units=True)
    >>> scale.b, bool(0.5 <= scale.a * 1e-300 <= 1)
    (1.0, True)
    >>> choose_scale([prepare_pair(np.ones((8, 8)), np.ones((8, 8)), 3, boundary="fill")],
    ...              kernel_units=True).identity
    True
    """
    exp_a = _exponent(pair.extended for pair in pairs)
    exp_b = _exponent(pair.b_used for pair in pairs)
    out_a, out_b = _outside(exp_a), _outside(exp_b)
    if not (out_a or out_b):
        return DataScale()
    if kernel_units:
        return DataScale(a=_power(-exp_a) if out_a else 1.0, b=_power(-exp_b) if out_b else 1.0)
    # One factor for both: the middle of the two exponents, if that brings both into range.
    shift = -round((exp_a + exp_b) / 2) if None not in (exp_a, exp_b) else 0
    if _outside(_shifted(exp_a, shift)) or _outside(_shifted(exp_b, shift)):
        return DataScale()
    return DataScale(a=_power(shift), b=_power(shift))


def _exponent(images):
    """Base-2 exponent of the largest finite magnitude over ``images`` (None if all zero)."""
    # Prepared pairs are finite (unusable pixels hold 0).
    largest = max(float(np.max(np.abs(image))) for image in images)
    return math.frexp(largest)[1] if largest > 0 else None


def _outside(exponent) -> bool:
    return exponent is not None and abs(exponent) > LIMIT


def _shifted(exponent, shift):
    return None if exponent is None else exponent + shift


def _power(exponent) -> float:
    return math.ldexp(1.0, exponent)
