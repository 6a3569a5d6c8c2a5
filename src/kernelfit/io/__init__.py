"""``io``: reading and writing images, masks and kernels, and images read lazily tile by tile.

The formats, chosen by extension (:mod:`~kernelfit.io.formats`: PNG/JPEG, TIFF, FITS,
``.npy``, text); the readers (:mod:`~kernelfit.io.readers`), which all refuse images over
one pixel limit (:data:`MAX_PIXELS`, ``max_pixels=``) from the header, before decoding, and
writers (:mod:`~kernelfit.io.writers`); atomic outputs that never leave a half-written file,
alone or as a set that appears whole or not at all (:mod:`~kernelfit.io.atomic`); and lazy
images on disk (:mod:`~kernelfit.io.lazy`, imported on demand).  The package re-exports
the readers, writers and output checks, so callers write ``io.read_image``,
``io.write_json``...

Rule: imports ``core`` only.
"""

from .atomic import (
    DiskFullError,
    atomic_output,
    atomic_outputs,
    check_not_inputs,
    check_writable,
)
from .readers import (
    MAX_PIXELS,
    REC709_WEIGHTS,
    read_array,
    read_image,
    read_kernel,
    read_mask,
    select_plane,
)
from .writers import check_output_path, write_image, write_json, write_kernel

__all__ = [
    "MAX_PIXELS",
    "REC709_WEIGHTS",
    "DiskFullError",
    "atomic_output",
    "atomic_outputs",
    "check_not_inputs",
    "check_output_path",
    "check_writable",
    "read_array",
    "read_image",
    "read_kernel",
    "read_mask",
    "select_plane",
    "write_image",
    "write_json",
    "write_kernel",
]
