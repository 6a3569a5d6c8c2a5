"""A fitted kernel as other tools apply it: their orientation, and an integer matrix.

kernelfit's kernels are in *convolution* orientation, like ``scipy.ndimage.convolve`` and
``scipy.signal.convolve2d``.  Image editors and deep-learning frameworks *correlate*: they
slide the matrix over the image as written, so the kernel they need is kernelfit's rotated
by 180°.  One line each:

* ``'scipy'``: ``scipy.ndimage.convolve(a, k)`` — convolution, the kernel as fitted.
* ``'pillow'``: ``img.filter(ImageFilter.Kernel(k.shape, k.ravel(), scale=1))`` — correlates.
* ``'opencv'``: ``cv2.filter2D(a, -1, k)`` — correlates (its ``anchor`` defaults to the
  centre).
* ``'torch'``: ``torch.nn.functional.conv2d(x, k[None, None])`` — correlates, despite the name.

:func:`integer_matrix` turns a kernel into what an editor's "convolution matrix" dialog
takes: integers, a divisor and an offset (GIMP, Pillow's ``scale``/``offset``, Paint.NET).

Examples
--------
>>> import numpy as np
>>> k = np.array([[0, 0, 0], [0, 1, 2], [0, 0, 0]]) / 3
>>> kernel_for(k, "opencv")[1]
array([0.66666667, 0.33333333, 0.        ])
>>> m = integer_matrix(k)
>>> m.matrix[1].tolist(), m.divisor
([0, 1, 2], 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CORRELATING = ("pillow", "opencv", "torch")
CONVOLVING = ("scipy",)
TOOLS = CONVOLVING + CORRELATING
# Editors' dialogs take divisors up to a few hundred or thousand; beyond, no integer matrix
# is a useful description of the kernel.
MAX_DIVISOR = 4096


def kernel_for(kernel, tool: str) -> np.ndarray:
    """``kernel`` (convolution orientation) as ``tool`` applies it (see the module docstring).

    Parameters
    ----------
    kernel : (kh, kw) array_like
    tool : {'scipy', 'pillow', 'opencv', 'torch'}

    Returns
    -------
    ndarray
        The kernel for ``'scipy'``, rotated by 180° for the tools that correlate.  For odd
        sizes the centre stays the centre; for even sizes check the tool's anchor.
    """
    kernel = np.asarray(kernel)
    if not isinstance(tool, str) or tool.lower() not in TOOLS:
        raise ValueError(f"tool={tool!r}: expected one of {', '.join(map(repr, TOOLS))}")
    return kernel[::-1, ::-1].copy() if tool.lower() in CORRELATING else kernel.copy()


@dataclass(frozen=True)
class IntegerMatrix:
    """``kernel ≈ matrix / divisor``, plus an offset added after the division.

    Attributes
    ----------
    matrix : (kh, kw) ndarray of int
    divisor : int
    offset : float
        The constant the tool adds to every output pixel (the fit's background when one was
        fitted, else 0), rounded to an integer when the images are integers.
    max_error : float
        ``max |matrix/divisor − kernel|``.
    """

    matrix: np.ndarray
    divisor: int
    offset: float
    max_error: float

    @property
    def kernel(self) -> np.ndarray:
        """The kernel the integers stand for: ``matrix / divisor``."""
        return self.matrix / self.divisor

    def __str__(self) -> str:
        rows = "\n".join(" ".join(f"{v:>{self._width()}d}" for v in row)
                         for row in self.matrix)
        return f"{rows}\ndivisor: {self.divisor}   offset: {self.offset:g}"

    def _width(self) -> int:
        return max(len(str(int(v))) for v in self.matrix.ravel())


def integer_matrix(kernel, *, tolerance=None, offset=0.0, max_divisor=MAX_DIVISOR) \
        -> IntegerMatrix:
    """The integer matrix with the smallest divisor that reproduces ``kernel``.

    Parameters
    ----------
    kernel : (kh, kw) array_like
    tolerance : float or (kh, kw) array_like, optional
        How far ``matrix/divisor`` may be from ``kernel`` per coefficient: e.g. two standard
        errors (``2 * fit.stderr``).  Default: ``1e-3 · max|kernel|``.
    offset : float
        Reported as is (see :class:`IntegerMatrix`).
    max_divisor : int
        The largest divisor tried; without a divisor that meets ``tolerance`` the one with the
        smallest error relative to it is returned.

    Returns
    -------
    IntegerMatrix

    Examples
    --------
    >>> import numpy as np
    >>> true = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    >>> noisy = true + 1e-4 * np.random.default_rng(0).normal(size=(3, 3))
    >>> m = integer_matrix(noisy, tolerance=5e-4)
    >>> m.matrix.tolist(), m.divisor
    ([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 16)
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or not np.all(np.isfinite(kernel)):
        raise ValueError(f"kernel must be a finite 2-D array; got shape {kernel.shape}")
    scale = float(np.abs(kernel).max())
    if scale == 0:
        return IntegerMatrix(np.zeros(kernel.shape, dtype=int), 1, float(offset), 0.0)
    allowed = np.broadcast_to(1e-3 * scale if tolerance is None else
                              np.asarray(tolerance, dtype=np.float64), kernel.shape)
    allowed = np.where(np.isfinite(allowed) & (allowed > 0), allowed, 1e-3 * scale)
    best = None
    for divisor in range(1, int(max_divisor) + 1):
        matrix = np.rint(kernel * divisor)
        excess = float(np.max(np.abs(matrix / divisor - kernel) / allowed))
        if best is None or excess < best[0]:
            best = (excess, divisor, matrix)
        if excess <= 1.0:
            break
    _, divisor, matrix = best
    return IntegerMatrix(matrix.astype(int), divisor, float(offset),
                         float(np.max(np.abs(matrix / divisor - kernel))))
