"""The file formats kernelfit reads and writes, chosen by extension.

===================  ============================  =========================================
extension            read                          write
===================  ============================  =========================================
``.npy``             any array, as stored          images and kernels, exactly
``.png``             8/16-bit (imageio)            images rounded to 8/16 bits; kernels as a
                                                   picture (lossy, for viewing only)
``.jpg .jpeg``       8-bit (imageio)               images rounded to 8 bits (lossy codec)
``.bmp .gif``        8-bit (imageio)               images rounded to 8 bits
``.tif .tiff``       8/16-bit, float (tifffile)    images as float or the input's integer
                     one page (``page=``)          type; kernels as float64
``.fits .fit .fts``  first image HDU (``hdu=``;    float64; a stack of kernels as a cube
                     astropy, optional)            (channels on NAXIS3)
``.csv .txt``        kernels only                  kernels, full precision (``%.17g``)
===================  ============================  =========================================

Every reader refuses an image larger than one pixel limit (``max_pixels=``, default
:data:`~kernelfit.io.readers.MAX_PIXELS` = 16384 x 16384), checked from the header before
decoding.  The readers are in :mod:`~kernelfit.io.readers`, the writers in
:mod:`~kernelfit.io.writers`.

>>> ".fits" in IMAGE_READ_EXTENSIONS and ".png" not in KERNEL_READ_EXTENSIONS
True
"""

from __future__ import annotations

PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TIFF_EXTENSIONS = (".tif", ".tiff")
FITS_EXTENSIONS = (".fits", ".fit", ".fts")
TEXT_EXTENSIONS = (".csv", ".txt")

IMAGE_READ_EXTENSIONS = (".npy",) + PICTURE_EXTENSIONS + TIFF_EXTENSIONS + FITS_EXTENSIONS
KERNEL_READ_EXTENSIONS = (".npy",) + TEXT_EXTENSIONS + TIFF_EXTENSIONS + FITS_EXTENSIONS
KERNEL_WRITE_EXTENSIONS = (".npy",) + TEXT_EXTENSIONS + TIFF_EXTENSIONS + FITS_EXTENSIONS + (
    ".png",
)
IMAGE_WRITE_EXTENSIONS = (
    (".npy",) + TIFF_EXTENSIONS + FITS_EXTENSIONS + (".png", ".jpg", ".jpeg", ".bmp")
)

_FITS_HINT = "reading and writing FITS needs astropy: pip install kernelfit[fits]"


def import_astropy_fits():
    """``astropy.io.fits``, or a ValueError saying how to install it (FITS is optional)."""
    try:
        from astropy.io import fits
    except ImportError:
        raise ValueError(_FITS_HINT) from None
    return fits
