"""``io``: reading and writing images, masks and kernels, and images read lazily tile by tile.

Readers and writers by extension (:mod:`~kernelfit.io.files`: PNG/JPEG, TIFF, FITS, ``.npy``,
text), atomic outputs that never leave a half-written file, and lazy images on disk
(:mod:`~kernelfit.io.lazy`).

Rule: imports ``core`` only.
"""
