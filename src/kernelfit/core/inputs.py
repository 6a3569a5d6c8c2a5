"""(moved from kernelfit.distributed)"""

from __future__ import annotations

import sys

import numpy as np

from .conventions import as_image


def is_dask_array(x) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (False, without importing Dask, if Dask has not
    been imported: no Dask array can exist then).

    Examples
    --------
    >>> import numpy as np
    >>> is_dask_array(np.zeros(3))
    False
    """
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


def has_dask_input(*values) -> bool:
    """Whether any value, or any item of a list/tuple value, is a Dask array."""
    return any(is_dask_array(v) or (isinstance(v, (list, tuple))
                                    and any(is_dask_array(x) for x in v))
               for v in values)


def as_source(x, name: str, *, allow_bool: bool = False):
    """A 2-D real image to be read tile by tile, checked without loading it.

    Objects with ``shape``, ``dtype`` and slicing (ndarray, memmap, zarr, Dask,
    :class:`LazyImage`) are returned as they are; anything else goes through
    :func:`kernelfit._conventions.as_image`.

    Examples
    --------
    >>> as_source([[1, 2], [3, 4]], "a").dtype
    dtype('float64')
    >>> as_source(np.zeros((2, 2, 3)), "b")
    Traceback (most recent call last):
    ...
    ValueError: b must be a 2-D image, got an array of shape (2, 2, 3)
    """
    if np.ma.isMaskedArray(x):
        # In memory already; its slices would drop the mask, so make masked pixels NaN now.
        return as_image(x, name) if not allow_bool else _as_small_mask(np.ma.filled(x, False),
                                                                        name)
    if not all(hasattr(x, attr) for attr in ("shape", "dtype", "__getitem__")):
        return _as_small_mask(x, name) if allow_bool else as_image(x, name)
    dtype = np.dtype(x.dtype)
    if dtype == bool and not allow_bool:
        raise TypeError(f"{name} is a boolean array; an image must hold numbers (a mask of "
                        "usable pixels goes in mask=)")
    if dtype != bool and (not np.issubdtype(dtype, np.number)
                          or np.issubdtype(dtype, np.complexfloating)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}")
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be a 2-D image, got an array of shape {tuple(x.shape)}")
    if any(n != n for n in x.shape):   # NaN: a Dask array whose chunk sizes are unknown
        raise ValueError(f"{name} has an unknown shape {tuple(x.shape)}; compute it first "
                         "(dask: x.compute_chunk_sizes())")
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _as_small_mask(x, name):
    m = np.asarray(x)
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise TypeError(f"{name} must be a boolean array (True = usable), got dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array like b, got shape {m.shape}")
    return m.astype(bool)
