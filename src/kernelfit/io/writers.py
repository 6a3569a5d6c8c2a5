"""Writing kernels, images and JSON, each file appearing only once it is complete.

The format is chosen by extension (the table is in :mod:`~kernelfit.io.formats`); every
writer goes through :func:`~kernelfit.io.atomic.write_atomically`, so an interrupted or
failed run never leaves a half-written output behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import check_writable, write_atomically
from .formats import (
    IMAGE_WRITE_EXTENSIONS,
    KERNEL_WRITE_EXTENSIONS,
    PICTURE_EXTENSIONS,
    TEXT_EXTENSIONS,
    TIFF_EXTENSIONS,
    import_astropy_fits,
)

__all__ = ["write_kernel", "write_image", "write_json", "check_output_path"]


def check_output_path(path, kind="image") -> Path:
    """Fail early, before any work, if ``path`` cannot be written as ``kind``.

    Parameters
    ----------
    path : str or os.PathLike
    kind : {'image', 'kernel', 'json'}

    Raises
    ------
    ValueError
        Unknown extension for ``kind``, a directory that does not exist or that the user may
        not write to, or a path that is a directory.

    Examples
    --------
    >>> check_output_path("kernel.csv", "kernel").name
    'kernel.csv'
    """
    path = Path(path)
    allowed = {
        "image": IMAGE_WRITE_EXTENSIONS,
        "kernel": KERNEL_WRITE_EXTENSIONS,
        "json": (".json",),
    }[kind]
    ext = path.suffix.lower()
    if ext not in allowed:
        raise ValueError(
            f"{path}: cannot write {'an' if kind[0] in 'aeiou' else 'a'} {kind} as "
            f"{ext or '(no extension)'!r}; "
            f"use one of {', '.join(allowed)}"
        )
    return check_writable(path)



def write_kernel(path, kernel) -> None:
    """Write a kernel, choosing the format by extension; the file appears only when complete.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy`` (exact), ``.csv`` / ``.txt`` (text, ``%.17g``: exact round trip of float64),
        ``.tif``/``.tiff`` (float64), ``.fits``/``.fit``/``.fts`` (float64, needs astropy),
        or ``.png`` -- a *picture* of the kernel for viewing: values are mapped linearly
        from [min, max] to [0, 255] and rounded to 8 bits, so the numbers are lost.
    kernel : (kh, kw) array_like
        Or a 3-D stack of kernels (one per channel, ``estimate(..., channel_axis=)``), written
        as it is to ``.npy`` and ``.tif``, and to ``.fits`` as a cube with the channels on
        NAXIS3 (read back channels last); the 2-D formats refuse it.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "k.txt")
    >>> write_kernel(path, [[0.25, 0.75]])
    >>> open(path).read().split()
    ['0.25', '0.75']
    """
    path = check_output_path(path, "kernel")
    kernel = np.asarray(kernel, dtype=np.float64)
    ext = path.suffix.lower()
    if kernel.ndim == 3 and ext in _ARRAY_WRITERS:
        # A stack (one kernel per channel, channel_axis=): array formats hold it as it is
        # (a TIFF as grey planes: 3 or 4 float samples would otherwise be tagged RGB(A)).
        writer = _write_tiff_stack if ext in (".tif", ".tiff") else _ARRAY_WRITERS[ext]
        write_atomically(path, writer, kernel)
        return
    if kernel.ndim == 3:
        raise ValueError(f"{path}: a stack of kernels of shape {kernel.shape} (one per "
                         f"channel) can be written as .npy, .tif or .fits, not as {ext}")
    if kernel.ndim != 2:
        raise ValueError(f"{path}: a kernel must be 2-D, got an array of shape {kernel.shape}")
    if ext == ".png":
        write_atomically(path, _write_picture, _kernel_picture(kernel))
    elif ext in TEXT_EXTENSIONS:
        delimiter = "," if ext == ".csv" else " "
        def write_text(p, k):
            np.savetxt(p, k, fmt="%.17g", delimiter=delimiter)

        write_atomically(path, write_text, kernel)
    else:
        write_atomically(path, _ARRAY_WRITERS[ext], kernel)


def write_image(path, image, *, like_dtype=None) -> None:
    """Write an image, choosing the format by extension; the file appears only when complete.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy`` (as is), ``.tif``/``.tiff`` (float kept, or ``like_dtype``),
        ``.fits`` (as is, needs astropy), ``.png``, ``.jpg``/``.jpeg`` (lossy), ``.bmp``.
    image : (H, W) or (H, W, 3 | 4) array_like
        Grey, or colour with the channels last (RGB, RGBA).
    like_dtype : dtype, optional
        The dtype the result should look like, normally that of the input image.  For
        ``.png``/``.jpg``/``.bmp`` the values are always rounded and clipped to integers:
        to 0..65535 if ``like_dtype`` is uint16 and the file is PNG, otherwise to 0..255
        (so float data in [0, 1] must be scaled by the caller first).  For ``.tif``, an
        integer ``like_dtype`` rounds and clips to that type; otherwise the data are kept.

    Raises
    ------
    ValueError
        If NaN or infinite values would have to be converted to integers.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "b.png")
    >>> write_image(path, np.array([[-3.0, 12.6], [255.4, 300.0]]))
    >>> from kernelfit.io import read_image
    >>> read_image(path).tolist()
    [[0, 13], [255, 255]]
    """
    path = check_output_path(path, "image")
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise ValueError(f"{path}: an image must be 2-D, or colour (H, W, 3 or 4), got an "
                         f"array of shape {image.shape}")
    ext = path.suffix.lower()
    like = np.dtype(like_dtype) if like_dtype is not None else None
    if ext in PICTURE_EXTENSIONS:
        target = np.uint16 if (ext == ".png" and like == np.uint16) else np.uint8
        write_atomically(path, _write_picture, _round_clip(image, target, path))
    elif ext in TIFF_EXTENSIONS and like is not None and np.issubdtype(like, np.integer):
        write_atomically(path, _write_tiff, _round_clip(image, like, path))
    else:
        write_atomically(path, _ARRAY_WRITERS[ext], image)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON; NumPy scalars and arrays are converted on the way.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "fit.json")
    >>> write_json(path, {"sigma": np.float64(1.5)})
    >>> open(path).read()
    '{\\n  "sigma": 1.5\\n}\\n'
    """
    path = check_output_path(path, "json")
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"

    def write(p, t):
        Path(p).write_text(t, encoding="utf-8")

    write_atomically(path, write, text)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write a {type(value).__name__} to JSON")


def _round_clip(image, dtype, path) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(image.dtype, np.integer) and np.can_cast(image.dtype, dtype):
        return image.astype(dtype)
    values = image.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"{path}: the image has NaN or infinite values, which {dtype} cannot hold; "
            "write it as .npy, .tif or .fits instead"
        )
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _kernel_picture(kernel) -> np.ndarray:
    if not np.all(np.isfinite(kernel)):
        raise ValueError("cannot draw a kernel that has NaN or infinite values as a PNG")
    low, high = float(kernel.min()), float(kernel.max())
    if high == low:  # a constant kernel has no contrast to stretch
        return np.full(kernel.shape, 255 if high > 0 else 0, dtype=np.uint8)
    return np.rint((kernel - low) * (255.0 / (high - low))).astype(np.uint8)


def _write_npy(path, array):
    np.save(path, array, allow_pickle=False)


def _write_picture(path, array):
    import imageio.v3 as iio

    iio.imwrite(path, array, plugin="pillow", extension=Path(path).suffix.lower())


def _write_tiff(path, array):
    import tifffile

    tifffile.imwrite(path, array)


def _write_tiff_stack(path, array):
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack")


def _write_fits(path, array):
    fits = import_astropy_fits()
    array = np.asarray(array)
    if array.ndim == 3:
        # FITS puts the planes of a cube on NAXIS3, NumPy's first axis; the readers put
        # them back on the last axis, where kernelfit keeps channels.
        array = np.moveaxis(array, -1, 0)
    # The temporary file already exists (it reserves the name), hence overwrite=True.
    fits.PrimaryHDU(array).writeto(path, overwrite=True)


_ARRAY_WRITERS = {
    ".npy": _write_npy,
    ".tif": _write_tiff,
    ".tiff": _write_tiff,
    ".fits": _write_fits,
    ".fit": _write_fits,
    ".fts": _write_fits,
}
