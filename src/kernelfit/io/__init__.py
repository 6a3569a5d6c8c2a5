"""``io``: reading and writing images, masks and kernels, and images read lazily tile by tile.

The formats, chosen by extension (:mod:`~kernelfit.io.formats`: PNG/JPEG, TIFF, FITS,
``.npy``, text); the readers (:mod:`~kernelfit.io.readers`) and writers
(:mod:`~kernelfit.io.writers`); atomic outputs that never leave a half-written file
(:mod:`~kernelfit.io.atomic`); and lazy images on disk (:mod:`~kernelfit.io.lazy`, imported
on demand).  The package re-exports the readers, writers and output checks, so callers write
``io.read_image``, ``io.write_json``...

Rule: imports ``core`` only.
"""

from .atomic import atomic_output, check_writable
from .readers import REC709_WEIGHTS, read_array, read_image, read_kernel, read_mask, select_plane
from .writers import check_output_path, write_image, write_json, write_kernel

__all__ = [
    "REC709_WEIGHTS",
    "atomic_output",
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
