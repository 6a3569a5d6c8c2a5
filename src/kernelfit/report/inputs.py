"""What the report is drawn from: the fit's kernel, the image pairs checked against the fit,
and the prediction ``a ⊛ k`` in ``b``'s frame."""

from __future__ import annotations

import numpy as np

from ..core.conventions import as_image, make_geometry, output_size_of
from ..core.forward import convolve_extended


def kernel_of(fit) -> np.ndarray:
    kernel = np.asarray(fit.kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"the report draws 2-D kernels; fit.kernel has shape {kernel.shape}")
    return kernel


def image_pairs(fit, a, b):
    """``[(a_i or None, b_i or None, residual_i or None)]``, validated against the fit."""
    residual = fit.residual
    multi = isinstance(residual, (list, tuple))
    residuals = list(residual) if multi else [residual]
    n = len(residuals)
    images = {}
    for name, value in (("a", a), ("b", b)):
        if value is None:
            images[name] = [None] * n
            continue
        is_list = isinstance(value, (list, tuple)) and not _is_one_image(value)
        if is_list != multi:
            raise ValueError(
                f"{name} is {'a list of images' if is_list else 'one image'} but the fit was "
                f"made from {n} image pair{'s' if n != 1 else ''}; pass {name} as the fit got "
                "it")
        values = list(value) if is_list else [value]
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} images but the fit has {n} pairs")
        images[name] = [as_image(v, f"{name}[{i}]" if multi else name).astype(np.float64)
                        for i, v in enumerate(values)]
    for i, (bi, ri) in enumerate(zip(images["b"], residuals)):
        if bi is not None and ri is not None and np.shape(bi) != np.shape(ri):
            label = f"b[{i}]" if multi else "b"
            raise ValueError(
                f"{label} has shape {bi.shape} but fit.residual has shape {np.shape(ri)}; "
                "pass the b the fit was made from")
    return list(zip(images["a"], images["b"], residuals))


def _is_one_image(value) -> bool:
    """A list of rows (one image) rather than a list of images."""
    try:
        return np.ndim(value[0]) == 1
    except (IndexError, TypeError, ValueError):
        return False


def prediction_of(fit, kernel, a, b, residual):
    """``a ⊛ k`` in ``b``'s frame (NaN outside the part the boundary rule defines), or None."""
    if a is None:
        return None, ""
    if b is not None and residual is not None and fit.background is not None:
        return b - residual, "b − residual = a ⊛ k + fitted background (used pixels)"
    if getattr(fit, "varying", None) is not None:
        if b is not None and residual is not None:
            return b - residual, "b − residual = a ⊛ k(y, x), the varying kernel (used pixels)"
        return None, ""
    if b is not None:
        size = output_size_of(a.shape, b.shape, kernel.shape)
    else:
        size = "valid" if fit.boundary == "valid" else "same"
    try:
        geometry = make_geometry(a.shape, kernel.shape, boundary=fit.boundary,
                                 center=fit.center, output_size=size)
    except ValueError:
        return None, ""
    out = np.full(geometry.output_shape, np.nan)
    out[geometry.used] = convolve_extended(geometry.extend(a), kernel)
    note = "a ⊛ k"
    if fit.background is not None:
        note += " (fitted background not included: pass b to include it)"
    return out, note
