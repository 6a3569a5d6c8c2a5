"""Parametric kernel families: Gaussian, elliptical Gaussian, Moffat, disk, motion line, box.

A family describes the *shape* of a kernel with a few numbers (``sigma``, ``radius``, ...).
Two things are common to every family and handled by the base class :class:`KernelModel`:

* the **amplitude**, which is the kernel's sum: :meth:`KernelModel.evaluate` returns the shape
  normalised to sum exactly 1 over the kernel array, times ``amplitude``;
* a **sub-pixel centre offset** ``(dy, dx)``: the model's centre sits at ``center + (dy, dx)``
  in kernel-array coordinates.

This module is the entry point: :func:`make_model` and the registry :data:`MODEL_CLASSES`.
The pieces live in one module each and are re-exported here: the base class
(:mod:`~kernelfit.models.kernel_model`), the families (:mod:`~kernelfit.models.families`),
the exact coverage geometry (:mod:`~kernelfit.models.coverage`) and the moments that give
first guesses (:mod:`~kernelfit.models.moments`).

Geometry and units
------------------
Pixel ``(row, col)`` of a kernel array is a unit square centred on integer coordinates; the
model is evaluated at the offsets ``y = row − cy − dy`` (rows, increasing downwards) and
``x = col − cx − dx`` (columns, increasing to the right), all in pixels.  In kernelfit's
convolution orientation a point in ``a`` becomes the kernel itself in ``b`` (not a mirrored
copy), so the geometry of a kernel is the geometry of the blur seen in ``b``.

Angles are in **degrees, counter-clockwise as the image is displayed** (row 0 at the top, as
``matplotlib.pyplot.imshow`` shows it): angle 0 points along +columns, angle 90 points *up*,
towards row 0.  This is the convention of MATLAB's ``fspecial('motion', len, theta)``.

Sampling
--------
``Gaussian`` is sampled at pixel centres exactly as :func:`scipy.ndimage.gaussian_filter`
builds its weights (or pixel-integrated with ``sampling='integrated'``); ``Elliptical`` and
``Moffat`` are sampled at pixel centres.  ``Disk``, ``Motion`` and ``Box`` are anti-aliased by
their **exact** pixel-area coverage, computed in closed form (no supersampling):

* ``Disk``: the area of each pixel square inside the circle, from the primitive of
  ``sqrt(r² − x²)`` combined over the pixel's four corners;
* ``Motion``: the area of each pixel inside a ``length × 1`` rectangle (a unit-width line
  segment with flat ends) rotated by ``angle``: the vertical chord of a convex polygon clipped
  to a pixel is piecewise linear in ``x``, so the midpoint rule between its breakpoints is
  exact;
* ``Box``: the overlap of each pixel with a ``width × height`` axis-aligned rectangle (a
  product of 1-D overlaps), so edge pixels get fractional weights.

Writing your own family
-----------------------
Subclass :class:`KernelModel`, set ``name`` and ``param_names``, implement
``profile(params, y, x)`` (unnormalised values at pixel offsets; arrays of the kernel's
shape) and, if you can, ``profile_derivatives``; override ``bounds`` and ``start`` to give
the fitter physical limits and a first guess from the kernel's moments.  Derivatives that are
not supplied are taken by central differences.

Examples
--------
>>> import numpy as np
>>> from kernelfit.models.parametric import Gaussian
>>> k = Gaussian(truncate=4.0).evaluate({"sigma": 1.0}, (9, 9))
>>> round(float(k.sum()), 12), k.shape
(1.0, (9, 9))
"""

from __future__ import annotations

from .coverage import disk_coverage, segment_coverage
from .families import Box, Disk, Elliptical, Gaussian, Moffat, Motion
from .kernel_model import KernelModel, pixel_offsets
from .moments import Moments, kernel_moments

__all__ = [
    "KernelModel", "Gaussian", "Elliptical", "Moffat", "Disk", "Motion", "Box",
    "Moments", "kernel_moments", "make_model", "MODEL_CLASSES",
    "disk_coverage", "segment_coverage", "pixel_offsets",
]

MODEL_CLASSES = {
    "gaussian": Gaussian,
    "elliptical": Elliptical,
    "moffat": Moffat,
    "disk": Disk,
    "motion": Motion,
    "box": Box,
}


def make_model(model, **options) -> KernelModel:
    """A model object from a name (``'gaussian'``, ...) and its options, or the object itself.

    Parameters
    ----------
    model : str or KernelModel
    **options
        Options of the family, e.g. ``truncate=4.0`` for ``'gaussian'``.

    Examples
    --------
    >>> make_model("gaussian", truncate=4.0)
    Gaussian(truncate=4.0, sampling='center')
    """
    if isinstance(model, KernelModel):
        if options:
            raise ValueError(f"model options {sorted(options)} are only accepted with a model "
                             "name; set them on the model object instead")
        return model
    if isinstance(model, str) and model.lower() in MODEL_CLASSES:
        cls = MODEL_CLASSES[model.lower()]
        try:
            return cls(**options)
        except TypeError:
            raise ValueError(f"model={model!r} does not take the options {sorted(options)}") \
                from None
    raise ValueError(f"model={model!r} is not a parametric family; use one of "
                     f"{sorted(MODEL_CLASSES)} or a KernelModel object")
