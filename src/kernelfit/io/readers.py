"""Reading images, masks and kernels from files.

The format is chosen by extension (the table is in :mod:`~kernelfit.io.formats`).  A file
with several pages (a multi-page TIFF) is refused unless ``page=`` says which one to read;
1-bit images (and boolean ``.npy`` files) are read as ``uint8`` 0/1.  Every reader failure
(a corrupt, truncated or misnamed file) becomes one ValueError that names the file.

Every reader refuses an image of more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`,
16384 x 16384), from the size its header declares and before anything is decoded, so that a
small compressed file cannot make a reader allocate gigabytes.  Colour samples are not
counted (an RGB image of H x W has H·W pixels; so is the last axis of a 3-D ``.npy`` stack);
the planes of a FITS cube are.

FITS files: the first image HDU that holds data is read (a table or an empty primary HDU
before it is skipped), or the one ``hdu=`` names; length-1 axes above the image plane are
dropped, and the planes of a cube (FITS NAXIS3, NumPy's first axis) are put on the last
axis, where ``channel=`` picks them.
"""

from __future__ import annotations

import contextlib
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
           "REC709_WEIGHTS", "MAX_PIXELS"]

# The pixel limit of every reader: 2**28, a 16384 x 16384 image (2 GiB as float64), as large as
# the pairs the tiled fits are documented for.  A zlib TIFF of 30000 x 30000 zeros is 1 MB on
# disk and would decompress to 0.84 GB (6.7 GiB as float64) without it.
MAX_PIXELS = 2**28

# ITU-R BT.709 luma weights for R, G, B.  They are applied to the stored values as they are
# (no gamma linearisation), which keeps the conversion linear: a kernel fitted on the gray
# versions of two colour images is the kernel of each channel when all channels share it.
REC709_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


def read_image(path, *, channel=None, gray=False, page=None, hdu=None,
               max_pixels=None) -> np.ndarray:
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
    hdu : int, optional
        FITS files: the HDU to read, counted from 0 (the primary HDU); default the first
        image HDU that holds data.
    max_pixels : int, optional
        Refuse, before decoding, an image whose header declares more pixels than this;
        default :data:`MAX_PIXELS` (2**28).  Colour samples are not counted.

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
        image read without ``channel`` or ``gray``, a multi-page TIFF read without
        ``page``, or an image larger than ``max_pixels``.  The message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.eye(3))
    >>> read_image(path).shape
    (3, 3)
    """
    array = read_array(path, page=page, hdu=hdu, max_pixels=max_pixels)
    return select_plane(array, channel=channel, gray=gray, source=path)


def read_array(path, *, page=None, hdu=None, max_pixels=None) -> np.ndarray:
    """Read an image file as stored: any number of dimensions, the file's dtype.

    Use :func:`select_plane` to turn the result into a 2-D image; :func:`read_image` does
    both.  Keeping the two steps apart lets a caller remember the stored dtype (for example to
    write a result back as 8-bit) after a colour image has been converted to float gray.

    Parameters
    ----------
    path : str or os.PathLike
    page : int, optional
        Page of a multi-page TIFF or frame of a GIF (from 0); see :func:`read_image`.
    hdu : int, optional
        The HDU of a FITS file (from 0); see :func:`read_image`.
    max_pixels : int, optional
        The pixel limit (default :data:`MAX_PIXELS`); see :func:`read_image`.

    Returns
    -------
    ndarray
        A non-empty real numeric array in native byte order (booleans become ``uint8``).
        Colour channels, and the planes of a FITS cube, are on the last axis.

    Raises
    ------
    ValueError
        Missing file, unknown extension, a reader failure (corrupt or truncated file), data
        that is empty or not real numbers, a multi-page TIFF without ``page``, or more
        pixels than ``max_pixels``.

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
    limit = check_max_pixels(max_pixels)
    family = _family(ext)
    _check_hdu(hdu, path, ext)
    if page not in (None, 0) and family not in ("tiff", "gif"):
        raise ValueError(
            f"{path}: page={page} requested, but {ext} files hold a single image (page 0)"
        )
    if ext in FITS_EXTENSIONS:
        data = _read_fits(path, hdu, limit)
    else:
        data = _call_reader(path, lambda p: _IMAGE_READERS[family](p, page, limit))
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


def read_mask(path, *, page=None, hdu=None, max_pixels=None) -> np.ndarray:
    """Read a mask file: nonzero (and finite) pixels are usable, zero or NaN ones are not.

    A colour mask counts a pixel as usable when any of its colour channels is nonzero.
    ``page``, ``hdu`` and ``max_pixels`` are as in :func:`read_image`.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npy")
    >>> np.save(path, np.array([[0, 255], [1, 0]]))
    >>> read_mask(path).tolist()
    [[False, True], [True, False]]
    """
    arr = read_array(path, page=page, hdu=hdu, max_pixels=max_pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        colour = arr[..., :3]
        return np.all(np.isfinite(colour), axis=-1) & np.any(colour != 0, axis=-1)
    arr = select_plane(arr, source=path)
    return np.isfinite(arr) & (arr != 0)


def read_kernel(path, *, stack=False, hdu=None, max_pixels=None) -> np.ndarray:
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
    hdu, max_pixels : int, optional
        As in :func:`read_image`.

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
    limit = check_max_pixels(max_pixels)
    _check_hdu(hdu, path, ext)
    if ext in FITS_EXTENSIONS:
        data = _read_fits(path, hdu, limit)
    elif ext in TEXT_EXTENSIONS:
        delimiter = "," if ext == ".csv" else None
        data = _call_reader(path, lambda p: _load_text(p, delimiter))
    else:
        reader = _read_tiff if ext in TIFF_EXTENSIONS else _read_npy
        data = _call_reader(path, lambda p: reader(p, None, limit))
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


def _check_hdu(hdu, path, ext) -> None:
    if hdu is None:
        return
    if isinstance(hdu, bool) or not isinstance(hdu, (int, np.integer)) or hdu < 0:
        raise ValueError(f"{path}: hdu={hdu!r} must be a non-negative integer")
    if ext not in FITS_EXTENSIONS:
        raise ValueError(f"{path}: hdu={hdu} requested, but only FITS files have HDUs")


def check_max_pixels(max_pixels) -> int:
    """The pixel limit to use: ``max_pixels``, or :data:`MAX_PIXELS` when it is None.

    Examples
    --------
    >>> check_max_pixels(None) == MAX_PIXELS, check_max_pixels(100)
    (True, 100)
    """
    if max_pixels is None:
        return MAX_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) \
            or max_pixels < 1:
        raise ValueError(f"max_pixels={max_pixels!r} must be a positive integer")
    return int(max_pixels)


def check_pixels(shape, limit, *, channels_axis=None) -> None:
    """Refuse an image of ``shape`` (as its header declares it) with more than ``limit``
    pixels; the axis ``channels_axis`` (colour samples) is not counted."""
    dims = [int(n) for i, n in enumerate(shape)
            if channels_axis is None or i != channels_axis % len(shape)]
    pixels = int(np.prod(dims, dtype=object)) if dims else 1
    if pixels > limit:
        size = "x".join(str(int(n)) for n in shape)
        raise _Refused(
            f"the image has {pixels} pixels ({size}), more than the limit of {limit}; "
            "it was not decoded (raise the limit with max_pixels=, or --max-pixels N)"
        )


class _Refused(ValueError):
    """A readable file that needs a decision (which page, a larger pixel limit); reported
    without 'cannot read'."""


def _load_text(path, delimiter):
    import warnings

    with warnings.catch_warnings():
        # An empty file gives "input contained no data" as a warning *and* an empty array;
        # the empty array is reported as an error, so the warning is only noise.  (Text needs
        # no pixel limit: every value takes bytes of the file.)
        warnings.simplefilter("ignore", UserWarning)
        return np.loadtxt(path, delimiter=delimiter, ndmin=2)


def npy_layout(path):
    """The layout a ``.npy`` header declares: ``(shape, dtype, fortran_order, data offset)``.

    Read with :mod:`numpy.lib.format`, never with ``np.load``: a file without the NumPy magic
    bytes (a pickle, say) is refused as not a ``.npy`` file, as are object arrays, and a
    header that promises more bytes than the file holds is refused as truncated.
    """
    from numpy.lib import format as npy_format

    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise ValueError("not a .npy file (no NumPy header); kernelfit reads only plain "
                             "numeric arrays saved with numpy.save")
        f.seek(0)
        version = npy_format.read_magic(f)
        # Version 3.0 only differs for structured dtypes with non-Latin-1 field names,
        # which are not numbers anyway.
        readers = {(1, 0): npy_format.read_array_header_1_0,
                   (2, 0): npy_format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        shape, fortran, dtype = readers[version](f)
        offset = f.tell()
        file_size = os.fstat(f.fileno()).st_size
    if dtype.hasobject:
        raise ValueError(f"holds {dtype} data (Python objects), not numbers")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > file_size - offset:
        raise ValueError(
            f"truncated: the header promises a {dtype} array of shape {shape} "
            f"({needed} bytes) but only {file_size - offset} bytes follow it"
        )
    return shape, dtype, fortran, offset


def _read_npy(path, page=None, limit=MAX_PIXELS):
    shape, _, _, _ = npy_layout(path)
    check_pixels(shape, limit, channels_axis=-1 if len(shape) >= 3 else None)
    # allow_pickle=False: an .npy file must never be able to run code when it is read.
    return np.load(path, allow_pickle=False)


_NPY_MAGIC = b"\x93NUMPY"


def _read_picture(path, page=None, limit=MAX_PIXELS):
    import imageio.v3 as iio

    # index=0: the first frame of an animated GIF, and a plain array for single images.
    # plugin="pillow": otherwise a corrupt file is offered to every plugin imageio has
    # (DICOM, video...), which is slow and gives a confusing error.
    index = 0 if page is None else page
    with _pillow_limit_replaced():
        _check_picture_size(path, limit)
        try:
            return iio.imread(path, index=index, plugin="pillow")
        except IndexError as exc:
            raise _Refused(f"page={page} is out of range: {exc}") from None
        except OSError as exc:
            # imageio's own wording for "Pillow did not recognise the bytes" names no format;
            # say what it means.  Other errors (truncated data...) are specific and kept.
            if type(exc.__cause__).__name__ == "InitializationError":
                raise ValueError(
                    f"not a valid {Path(path).suffix.lower()} image (corrupt, or another "
                    "format under this extension)"
                ) from exc
            raise


def _check_picture_size(path, limit) -> None:
    """The pixel limit, from the header Pillow reads when it opens a file (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - a header Pillow cannot read: the read below says why
        return
    check_pixels((height, width), limit)


@contextlib.contextmanager
def _pillow_limit_replaced():
    """Pillow's own decompression-bomb limit (a warning above 89 million pixels, an error
    above twice that) lifted while a picture is read: ``max_pixels`` replaces it, checked from
    the header first.  Pillow has only this process-wide setting, so it is restored at once."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_tiff(path, page=None, limit=MAX_PIXELS):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        n_pages = len(tif.pages)
        if page is None:
            if n_pages > 1:
                raise _Refused(
                    f"is a multi-page TIFF with {n_pages} pages; choose one with page=K "
                    f"(--page K), counted from 0"
                )
            series = tif.series[0]
            _check_tiff_size(series.shape, series.axes, limit)
            return _samples_last(tif.asarray(), series.axes)
        if page >= n_pages:
            raise _Refused(
                f"page={page} is out of range; the file has {n_pages} page"
                f"{'s' if n_pages > 1 else ''} (0 to {n_pages - 1})"
            )
        chosen = tif.pages[page]
        _check_tiff_size(chosen.shape, chosen.axes, limit)
        return _samples_last(chosen.asarray(), chosen.axes)


def _check_tiff_size(shape, axes, limit) -> None:
    """The pixel limit on the shape a TIFF's tags declare; samples ('S') are not counted."""
    samples = axes.index("S") if "S" in axes and len(axes) == len(shape) else None
    check_pixels(shape, limit, channels_axis=samples)


def _samples_last(array, axes):
    """Put a TIFF's colour samples on the last axis (planar RGB is stored as (3, H, W))."""
    if "S" in axes and array.ndim == len(axes) and axes.index("S") != len(axes) - 1:
        return np.moveaxis(array, axes.index("S"), -1)
    return array


_IMAGE_READERS = {"npy": _read_npy, "picture": _read_picture, "gif": _read_picture,
                  "tiff": _read_tiff}


def _read_fits(path, hdu=None, limit=MAX_PIXELS):
    fits = import_astropy_fits()

    def read(p):
        # memmap=False: the data are read into memory, so they outlive the open file.
        with fits.open(p, memmap=False) as hdus:
            chosen = _image_hdu(hdus, hdu)
            header = chosen.header
            shape = tuple(int(header[f"NAXIS{i}"]) for i in range(header["NAXIS"], 0, -1))
            check_pixels(shape, limit)
            return _planes_last(np.asarray(chosen.data))

    return _call_reader(path, read)


def _image_hdu(hdus, hdu):
    """The HDU ``hdu`` names, or the first image HDU with data; a table is never an image."""
    if hdu is not None:
        if hdu >= len(hdus):
            raise _Refused(f"hdu={hdu} is out of range; the file has {len(hdus)} HDU"
                           f"{'s' if len(hdus) > 1 else ''} (0 to {len(hdus) - 1})")
        chosen = hdus[hdu]
        if not chosen.is_image:
            raise _Refused(f"hdu={hdu} is a {type(chosen).__name__} (a table), not an image")
        if not chosen.header.get("NAXIS", 0):
            raise _Refused(f"hdu={hdu} holds no data")
        return chosen
    for chosen in hdus:
        if chosen.is_image and chosen.header.get("NAXIS", 0):
            return chosen
    found = ", ".join(f"{i}: {type(h).__name__}" for i, h in enumerate(hdus))
    raise _Refused(f"the FITS file holds no image data (HDUs {found})")


def _planes_last(data):
    """A FITS image as kernelfit holds images: length-1 axes above the image plane dropped
    (a cube with NAXIS3 = 1 is an image), the planes of a cube on the last axis."""
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 3:
        data = np.moveaxis(data, 0, -1)
    return data


def _call_reader(path, reader):
    """Run a third-party reader; its many exception types become one ValueError naming ``path``."""
    try:
        return reader(path)
    except _Refused as exc:
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

