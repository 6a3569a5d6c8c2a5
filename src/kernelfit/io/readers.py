"""Reading images, masks and kernels from files.

The format is chosen by extension (the table is in :mod:`~kernelfit.io.formats`).  A file
with several pages (a multi-page TIFF) is refused unless ``page=`` says which one to read;
1-bit images (and boolean ``.npy`` files) are read as ``uint8`` 0/1.  Every reader failure
(a corrupt, truncated or misnamed file) becomes one ValueError that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .formats import (
    FITS_EXTENSIONS,
    IMAGE_READ_EXTENSIONS,
    KERNEL_READ_EXTENSIONS,
    TEXT_EXTENSIONS,
    TIFF_EXTENSIONS,
    import_astropy_fits,
)

__all__ = ["read_image", "read_array", "select_plane", "read_mask", "read_kernel",
           "REC709_WEIGHTS"]

# ITU-R BT.709 luma weights for R, G, B.  They are applied to the stored values as they are
# (no gamma linearisation), which keeps the conversion linear: a kernel fitted on the gray
# versions of two colour images is the kernel of each channel when all channels share it.
REC709_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


def read_image(path, *, channel=None, gray=False, page=None) -> np.ndarray:
    """Read a 2-D image from ``path``, keeping its stored dtype where it is already 2-D.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``, ``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.gif`` (first frame), ``.tif``/
        ``.tiff`` or ``.fits``/``.fit``/``.fts`` (needs astropy).
    channel : int, optional
        For an image with several channels (the last axis: RGB, RGBA or any stack stored as
        ``(H, W, C)``), the channel to use, counted from 0.
    gray : bool, default False
        Convert an RGB(A) image to luma with the Rec. 709 weights (0.2126, 0.7152, 0.0722),
        ignoring alpha (of a gray+alpha image, keep the gray plane).  The result is float64,
        in the units of the stored values.
    page : int, optional
        The page of a multi-page TIFF (or the frame of a GIF) to read, counted from 0.  A
        multi-page TIFF is refused without it; single-image files only have page 0.

    Returns
    -------
    ndarray, shape (H, W)
        8/16-bit integer and float data keep their dtype; ``gray=True`` gives float64.  An
        RGB(A) file whose three colour channels are identical (a grayscale picture saved as
        colour, as GIF always does) is returned as its single plane.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, of an unknown type, empty, not 2-D, a colour
        image read without ``channel`` or ``gray``, or a multi-page TIFF read without
        ``page``.  The message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.eye(3))
    >>> read_image(path).shape
    (3, 3)
    """
    return select_plane(read_array(path, page=page), channel=channel, gray=gray, source=path)


def read_array(path, *, page=None) -> np.ndarray:
    """Read an image file as stored: any number of dimensions, the file's dtype.

    Use :func:`select_plane` to turn the result into a 2-D image; :func:`read_image` does
    both.  Keeping the two steps apart lets a caller remember the stored dtype (for example to
    write a result back as 8-bit) after a colour image has been converted to float gray.

    Parameters
    ----------
    path : str or os.PathLike
    page : int, optional
        Page of a multi-page TIFF or frame of a GIF (from 0); see :func:`read_image`.

    Returns
    -------
    ndarray
        A non-empty real numeric array in native byte order (booleans become ``uint8``).

    Raises
    ------
    ValueError
        Missing file, unknown extension, a reader failure (corrupt or truncated file), data
        that is empty or not real numbers, or a multi-page TIFF without ``page``.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "rgb.npy")
    >>> np.save(path, np.zeros((4, 5, 3), np.uint8))
    >>> read_array(path).shape
    (4, 5, 3)
    """
    path = _existing_file(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_READ_EXTENSIONS:
        raise ValueError(
            f"{path}: unknown image type {ext or '(no extension)'!r}; "
            f"use one of {', '.join(IMAGE_READ_EXTENSIONS)}"
        )
    page = _check_page(page, path)
    family = _family(ext)
    if page not in (None, 0) and family not in ("tiff", "gif"):
        raise ValueError(
            f"{path}: page={page} requested, but {ext} files hold a single image (page 0)"
        )
    if ext in FITS_EXTENSIONS:
        data = _read_fits(path)
    elif family in ("tiff", "gif"):
        data = _call_reader(path, lambda p: _IMAGE_READERS[family](p, page))
    else:
        data = _call_reader(path, _IMAGE_READERS[family])
    return _check_numeric(data, path)


def select_plane(array, *, channel=None, gray=False, source="image") -> np.ndarray:
    """Reduce an image array to one 2-D plane: pick a channel, convert to gray, or reject.

    Parameters
    ----------
    array : ndarray
        2-D, or 3-D with channels on the last axis.
    channel : int, optional
        Channel to keep (on the last axis).  For a 2-D image only ``0`` is allowed.
    gray : bool, default False
        Rec. 709 luma of an RGB or RGBA image (alpha ignored); a no-op for a 2-D image.
    source : str or os.PathLike
        Named in error messages (normally the file the array came from).

    Returns
    -------
    ndarray, shape (H, W)

    Raises
    ------
    ValueError
        For 1-D or higher-dimensional arrays, colour images without ``channel``/``gray``,
        a ``channel`` out of range, or ``gray`` on something that is not RGB(A).

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.zeros((2, 2, 3)); rgb[..., 1] = 1.0
    >>> float(select_plane(rgb, gray=True)[0, 0])
    0.7152
    >>> float(select_plane(rgb, channel=1)[0, 0])
    1.0
    """
    arr = np.asarray(array)
    if channel is not None and gray:
        raise ValueError(f"{source}: give either a channel or gray, not both")
    is_integer = isinstance(channel, (int, np.integer)) and not isinstance(channel, bool)
    if channel is not None and not is_integer:
        raise ValueError(f"{source}: channel={channel!r} must be an integer")
    if arr.ndim == 2:
        if channel not in (None, 0):
            raise ValueError(
                f"{source}: channel={channel} requested, but the image is grayscale (2-D, "
                "only channel 0)"
            )
        return arr
    if arr.ndim != 3:
        raise ValueError(
            f"{source}: expected a 2-D image, got a {arr.ndim}-D array of shape {arr.shape}"
        )
    n_channels = arr.shape[-1]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise ValueError(
                f"{source}: channel={channel} is out of range; the image has {n_channels} "
                f"channels (0 to {n_channels - 1}) on its last axis, shape {arr.shape}"
            )
        return arr[..., channel]
    is_colour = n_channels in (3, 4)
    if gray and n_channels == 2:  # gray + alpha: the gray plane, alpha ignored
        return arr[..., 0].astype(np.float64)
    if gray:
        if not is_colour:
            raise ValueError(
                f"{source}: gray needs an RGB or RGBA image, got shape {arr.shape}; pick one "
                "plane with channel=N (--channel N)"
            )
        return arr[..., :3].astype(np.float64) @ REC709_WEIGHTS
    if is_colour and _colour_channels_equal(arr):
        return arr[..., 0]
    if is_colour:
        raise ValueError(
            f"{source}: is a colour image (shape {arr.shape}); pick one channel with "
            "channel=N (--channel N) or convert it with gray=True (--gray); to fit every "
            "channel, estimate(..., channel_axis=-1) (--per-channel, or --shared for one "
            "kernel)"
        )
    if n_channels == 2:
        raise ValueError(
            f"{source}: is a gray+alpha image (shape {arr.shape}); use its gray plane with "
            "gray=True (--gray) or channel=0 (--channel 0)"
        )
    raise ValueError(
        f"{source}: expected a 2-D image, got a 3-D array of shape {arr.shape}; pick a plane "
        "on the last axis with channel=N (--channel N)"
    )


def read_mask(path, *, page=None) -> np.ndarray:
    """Read a mask file: nonzero (and finite) pixels are usable, zero or NaN ones are not.

    A colour mask counts a pixel as usable when any of its colour channels is nonzero.
    ``page`` is as in :func:`read_image`.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npy")
    >>> np.save(path, np.array([[0, 255], [1, 0]]))
    >>> read_mask(path).tolist()
    [[False, True], [True, False]]
    """
    arr = read_array(path, page=page)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        colour = arr[..., :3]
        return np.all(np.isfinite(colour), axis=-1) & np.any(colour != 0, axis=-1)
    arr = select_plane(arr, source=path)
    return np.isfinite(arr) & (arr != 0)


def read_kernel(path, *, stack=False) -> np.ndarray:
    """Read a kernel written by :func:`write_kernel` (or by hand) as a float64 2-D array.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``, ``.csv`` (comma-separated), ``.txt`` (whitespace-separated), ``.tif``/
        ``.tiff`` or ``.fits``.  PNG kernels are pictures (rescaled to 0..255) and are
        refused, since their values are not the kernel's.
    stack : bool, default False
        Also accept a ``(kh, kw, C)`` stack, one kernel per channel (what
        ``estimate(..., channel_axis=-1)`` writes).

    Returns
    -------
    ndarray, shape (kh, kw), float64
        A single row or column of text gives a ``(1, n)`` kernel.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "k.csv")
    >>> from kernelfit.io import write_kernel
    >>> write_kernel(path, np.full((3, 3), 1 / 9))
    >>> float(read_kernel(path).sum())
    1.0
    """
    path = _existing_file(path)
    ext = path.suffix.lower()
    if ext not in KERNEL_READ_EXTENSIONS:
        hint = " (a .png kernel is a rescaled picture, not the values)" if ext == ".png" else ""
        raise ValueError(
            f"{path}: cannot read a kernel from {ext or '(no extension)'!r} files{hint}; "
            f"use one of {', '.join(KERNEL_READ_EXTENSIONS)}"
        )
    if ext in FITS_EXTENSIONS:
        data = _read_fits(path)
    elif ext in TEXT_EXTENSIONS:
        delimiter = "," if ext == ".csv" else None
        data = _call_reader(path, lambda p: _load_text(p, delimiter))
    else:
        data = _call_reader(path, _read_tiff if ext in TIFF_EXTENSIONS else _read_npy)
    data = _check_numeric(data, path)
    if not (data.ndim == 2 or (stack and data.ndim == 3)):
        wanted = "2-D (or a (kh, kw, C) stack)" if stack else "2-D"
        raise ValueError(f"{path}: a kernel must be {wanted}, got an array of shape "
                         f"{data.shape}")
    return data.astype(np.float64)


def _existing_file(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path={path!r} must be a file name (str or os.PathLike)")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: is not a file")
    return path


def _family(ext: str) -> str:
    if ext == ".npy":
        return "npy"
    if ext in TIFF_EXTENSIONS:
        return "tiff"
    if ext == ".gif":
        return "gif"
    return "picture"


def _check_page(page, path):
    if page is None:
        return None
    if isinstance(page, bool) or not isinstance(page, (int, np.integer)) or page < 0:
        raise ValueError(f"{path}: page={page!r} must be a non-negative integer")
    return int(page)


class _Choice(ValueError):
    """A readable file that needs a decision (which page); reported without 'cannot read'."""


def _load_text(path, delimiter):
    import warnings

    with warnings.catch_warnings():
        # An empty file gives "input contained no data" as a warning *and* an empty array;
        # the empty array is reported as an error, so the warning is only noise.
        warnings.simplefilter("ignore", UserWarning)
        return np.loadtxt(path, delimiter=delimiter, ndmin=2)


def _read_npy(path):
    # Without its magic bytes np.load would guess "pickle" and suggest unsafe loading.
    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise ValueError("not a .npy file (no NumPy header)")
        _check_npy_size(f, os.fstat(f.fileno()).st_size)
    # allow_pickle=False: an .npy file must never be able to run code when it is read.
    return np.load(path, allow_pickle=False)


_NPY_MAGIC = b"\x93NUMPY"


def _check_npy_size(f, file_size) -> None:
    """Refuse a truncated file (or a forged header) before NumPy allocates what it promises."""
    from numpy.lib import format as npy_format

    f.seek(0)
    version = npy_format.read_magic(f)
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        return  # np.load gives its own message for other versions
    shape, _, dtype = readers[version](f)
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False)
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = file_size - f.tell()
    if needed > available:
        raise ValueError(
            f"truncated: the header promises a {dtype} array of shape {shape} "
            f"({needed} bytes) but only {available} bytes follow it"
        )


def _read_picture(path, page=None):
    import imageio.v3 as iio

    # index=0: the first frame of an animated GIF, and a plain array for single images.
    # plugin="pillow": otherwise a corrupt file is offered to every plugin imageio has
    # (DICOM, video...), which is slow and gives a confusing error.
    index = 0 if page is None else page
    try:
        return iio.imread(path, index=index, plugin="pillow")
    except IndexError as exc:
        raise _Choice(f"page={page} is out of range: {exc}") from None
    except OSError as exc:
        # imageio's own wording for "Pillow did not recognise the bytes" names no format;
        # say what it means.  Other errors (truncated data...) are specific and kept.
        if type(exc.__cause__).__name__ == "InitializationError":
            raise ValueError(
                f"not a valid {Path(path).suffix.lower()} image (corrupt, or another format "
                "under this extension)"
            ) from exc
        raise


def _read_tiff(path, page=None):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        n_pages = len(tif.pages)
        if page is None:
            if n_pages > 1:
                raise _Choice(
                    f"is a multi-page TIFF with {n_pages} pages; choose one with page=K "
                    f"(--page K), counted from 0"
                )
            return _samples_last(tif.asarray(), tif.series[0].axes)
        if page >= n_pages:
            raise _Choice(
                f"page={page} is out of range; the file has {n_pages} page"
                f"{'s' if n_pages > 1 else ''} (0 to {n_pages - 1})"
            )
        chosen = tif.pages[page]
        return _samples_last(chosen.asarray(), chosen.axes)


def _samples_last(array, axes):
    """Put a TIFF's colour samples on the last axis (planar RGB is stored as (3, H, W))."""
    if "S" in axes and array.ndim == len(axes) and axes.index("S") != len(axes) - 1:
        return np.moveaxis(array, axes.index("S"), -1)
    return array


_IMAGE_READERS = {"npy": _read_npy, "picture": _read_picture, "gif": _read_picture,
                  "tiff": _read_tiff}


def _read_fits(path):
    fits = import_astropy_fits()

    def read(p):
        # getdata returns the first HDU that holds data (the primary one is often empty).
        return fits.getdata(p)

    data = _call_reader(path, read)
    if data is None:
        raise ValueError(f"{path}: the FITS file holds no image data")
    return data


def _call_reader(path, reader):
    """Run a third-party reader; its many exception types become one ValueError naming ``path``."""
    try:
        return reader(path)
    except _Choice as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: cannot read the file: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - readers raise OSError, SyntaxError, KeyError...
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"{path}: cannot read the file: {reason}") from exc


def _check_numeric(data, path) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{path}: holds {arr.dtype} data, not numbers")
    if np.iscomplexobj(arr):
        raise ValueError(f"{path}: holds complex numbers; kernelfit needs real images")
    if arr.ndim == 0:
        raise ValueError(f"{path}: holds a single number, not an image")
    if arr.size == 0:
        raise ValueError(f"{path}: the image is empty (shape {arr.shape})")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)  # 1-bit pictures: 0/1, numbers like any other image
    if not arr.dtype.isnative:
        # FITS stores big-endian data; numerical code downstream expects native order.
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _colour_channels_equal(arr) -> bool:
    red = arr[..., 0]
    return bool(np.array_equal(red, arr[..., 1]) and np.array_equal(red, arr[..., 2]))

