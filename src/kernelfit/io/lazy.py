"""Images in files read lazily, one rectangle at a time (for fits tile by tile)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.inputs import as_source
from . import readers

# File types LazyImage reads one rectangle at a time (a .zarr store is a directory).
STREAMED_EXTENSIONS = (".tif", ".tiff", ".npy", ".zarr")


class LazyImage:
    """A 2-D image in a file, read one rectangle at a time.

    Slicing (``image[r0:r1, c0:c1]``) returns a NumPy array in native byte order; nothing
    else is held in memory.  Uncompressed TIFF pages and ``.npy`` files are mapped for each
    read and unmapped after it, so the pages read do not stay counted in the process's
    memory; compressed or tiled TIFFs are read through ``tifffile``'s zarr store and zarr
    directories through zarr (both need ``zarr``: ``pip install kernelfit[dask]``).  The
    object pickles as its path, so Dask workers that see the same file system can read it.

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif``/``.tiff``, ``.npy`` or a ``.zarr`` array store.
    page : int, optional
        The page of a multi-page TIFF (from 0); required when there are several.
    max_pixels : int, optional
        Refuse an image whose header declares more pixels than this (default
        :data:`kernelfit.io.readers.MAX_PIXELS`, the limit of every reader).  Tiles bound
        the memory, but not the time a decompression bomb takes to decode.

    Attributes
    ----------
    shape : (int, int)
    dtype : numpy.dtype
        Native byte order.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(12.0).reshape(3, 4))
    >>> image = LazyImage(path)
    >>> image.shape, image[1:, 2:].tolist()
    ((3, 4), [[6.0, 7.0], [10.0, 11.0]])
    """

    ndim = 2

    def __init__(self, path, *, page=None, max_pixels=None):
        self.path = str(path)
        ext = Path(self.path).suffix.lower()
        if ext not in STREAMED_EXTENSIONS:
            raise ValueError(f"{self.path}: {ext or '(no extension)'!r} files cannot be read "
                             f"tile by tile; use one of {', '.join(STREAMED_EXTENSIONS)} "
                             "(or read the image into memory without tiling)")
        if ext == ".zarr":
            if not os.path.exists(self.path):
                raise ValueError(f"{self.path}: no such file or directory")
        else:
            readers._existing_file(self.path)
        self.page = readers._check_page(page, self.path)
        if self.page not in (None, 0) and ext not in (".tif", ".tiff"):
            raise ValueError(f"{self.path}: page={page} requested, but {ext} files hold a "
                             "single image (page 0)")
        self._array = None   # the open zarr array (not pickled)
        self._map = None     # (offset, dtype as stored, order) of a mapped layout
        inspect = {".npy": self._inspect_npy, ".zarr": self._inspect_zarr}.get(ext,
                                                                              self._inspect_tiff)
        shape, dtype = readers._call_reader(self.path, lambda _: inspect())
        if len(shape) != 2:
            raise ValueError(f"{self.path}: holds an array of shape {tuple(shape)}; tiled "
                             "reading needs a 2-D single-channel image")
        limit = readers.check_max_pixels(max_pixels)
        readers._call_reader(self.path, lambda _: readers.check_pixels(shape, limit))
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        as_source(self, self.path, allow_bool=True)

    def _inspect_npy(self):
        # The header only, parsed the way every reader parses it: a pickle under a .npy
        # name is refused as not a .npy file, never offered to unsafe loading.
        shape, dtype, fortran, offset = readers.npy_layout(self.path)
        self._map = (offset, dtype, "F" if fortran else "C")
        return shape, dtype

    def _inspect_tiff(self):
        import tifffile

        with tifffile.TiffFile(self.path) as tif:
            if self.page is None and len(tif.pages) > 1:
                raise ValueError(f"is a multi-page TIFF with {len(tif.pages)} pages; choose "
                                 "one with page=K (--page K), counted from 0")
            if (self.page or 0) >= len(tif.pages):
                raise ValueError(f"page={self.page} is out of range; the file has "
                                 f"{len(tif.pages)} page(s)")
            page = tif.pages[self.page or 0]
            dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
            if page.is_memmappable:
                self._map = (int(page.dataoffsets[0]), dtype, "C")
            return page.shape, dtype

    def _inspect_zarr(self):
        array = self._zarr()
        return array.shape, array.dtype

    def _zarr(self):
        """The zarr array behind a compressed TIFF or a zarr store, opened once per process."""
        if self._array is None:
            try:
                import zarr
            except ImportError:
                raise ValueError(f"{self.path}: reading it tile by tile needs zarr (pip install "
                                 "kernelfit[dask]); or save it as an uncompressed TIFF") from None
            if self.path.lower().endswith(".zarr"):
                array = zarr.open(self.path, mode="r")
                if not hasattr(array, "dtype"):
                    raise ValueError("is a zarr group, not an array; open the array inside it")
            else:
                import tifffile

                array = zarr.open(tifffile.imread(self.path, aszarr=True, key=self.page or 0),
                                  mode="r")
            self._array = array
        return self._array

    def __getitem__(self, key) -> np.ndarray:
        if self._map is not None:
            offset, stored, order = self._map
            mapped = np.memmap(self.path, dtype=stored, mode="r", offset=offset,
                               shape=self.shape, order=order)
            out = np.array(mapped[key])   # a copy; the mapping is dropped with `mapped`
            del mapped
        else:
            out = np.asarray(self._zarr()[key])
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None   # reopened where it is used (a Dask worker)
        return state

    def __repr__(self) -> str:
        page = "" if self.page is None else f", page={self.page}"
        return f"LazyImage({self.path!r}{page}, shape={self.shape}, dtype={self.dtype})"


def open_lazy(path, *, page=None, max_pixels=None) -> LazyImage:
    """Open an image file for reading tile by tile (see :class:`LazyImage`)."""
    return LazyImage(path, page=page, max_pixels=max_pixels)
