"""(moved from kernelfit.tiles)"""

from __future__ import annotations

from ..core.conventions import normalize_boundary, normalize_shape
from ..fit.statistics import _parametric_family, fit_statistics
from ..models._common import MAX_STATISTICS_UNKNOWNS
from ..models.parametric import KernelModel
from ..solvers.regularisers import NONSMOOTH
from ..stats.tiles import (
    DEFAULT_TILE,
    check_tile,
    plan_tiles,
    prepare_sources,
    quantisation_of,
    source_pairs,
    tile_blocks,
    tile_edges,
    tile_statistics,
)
from .options import PARAMETRIC, _check_options
from ..core.threads import uses_threads


@uses_threads
def estimate_tiled(a, b, shape, *, tile=DEFAULT_TILE, boundary="valid", center=None,
                   model="free", loss="l2", reg=None, lam="auto", nonneg=False, normalize=None,
                   mask=None, method=None, noise_std=None, background=None, saturation=None,
                   saturation_a=None, **model_options):
    """:func:`kernelfit.estimate` for images read tile by tile (larger than memory).

    The statistics are summed over tiles of ``tile × tile`` pixels of ``b``
    (:func:`tiled_statistics`) and solved as in memory, so the kernel equals the in-memory
    direct fit's (to ~1e-12 relative on well-conditioned problems).  Supported: the free
    model (``reg`` None, 'ridge', 'gradient' or 'laplacian', ``lam``, ``nonneg``,
    ``normalize``, ``noise_std``) and the parametric families with ``loss='l2'``, for kernels
    of at most 64×64 pixels.  What needs the images in memory is refused with a
    ``ValueError``: structured models, robust losses, the matrix-free and classic methods,
    ``background``, ``saturation``.  ``fit.residual`` is ``None`` (it would be an image as
    large as ``b``); ``fit.noise_std`` comes from ``‖Xk − b‖² = bᵀb − 2kᵀc + kᵀGk``.

    Parameters
    ----------
    a, b : (H, W) array, :class:`LazyImage`, zarr array or memmap, or lists of them
        Lists are several pairs sharing one kernel.
    shape : int or (kh, kw)
    tile : int, default 2048
        Tile side in pixels of ``b``.  Memory is bounded by the tile and ``p² = (kh·kw)²``,
        not by the images: a 16384² float32 pair from TIFF files with a 21×21 kernel peaked
        at 0.32 GiB for the whole process (``benchmarks/bench_scale.py --part rss``).
    **options
        As in :func:`kernelfit.estimate`.

    Returns
    -------
    KernelFit
        ``fit.info['tiles']`` holds the number of tiles, ``fit.info['tile']`` their size.

    Examples
    --------
    >>> import numpy as np, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((80, 70)), rng.random((5, 3))
    >>> fit = estimate_tiled(a, kf.convolve(a, k, boundary="nearest"), (5, 3), tile=32,
    ...                      boundary="nearest")
    >>> bool(np.allclose(fit.kernel, k)), fit.info["tiles"]
    (True, 9)
    """
    shape, boundary = check_named(shape, boundary)
    tile = check_tile(tile)
    check_statistics_options(shape, model=model, loss=loss, reg=reg, lam=lam, method=method,
                             nonneg=nonneg, normalize=normalize, noise_std=noise_std,
                             background=background, saturation=saturation,
                             saturation_a=saturation_a, model_options=model_options)
    total, floor, n_tiles, geometry = None, 0.0, 0, None
    for label, (ai, bi, mi) in source_pairs(a, b, mask):
        ai, bi, mi, geometry = prepare_sources(ai, bi, shape, boundary=boundary,
                                               center=center, mask=mi, label=label)
        tiles = plan_tiles(geometry, *(tile_edges(n, tile) for n in geometry.used_shape))
        stats = sum(tile_statistics(*tile_blocks(ai, bi, mi, t), t, shape) for t in tiles)
        floor += stats.n_used * quantisation_of(bi)
        total = stats if total is None else total + stats
        n_tiles += len(tiles)
    return fit_statistics(total, center=geometry.center, boundary=boundary, model=model,
                          reg=reg, lam=lam, nonneg=nonneg, normalize=normalize,
                          noise_std=noise_std, model_options=model_options,
                          quantisation_var=floor / max(total.n_used, 1),
                          info={"tiles": n_tiles, "tile": tile})


def check_named(shape, boundary):
    """The normalised ``(shape, boundary)``; the automatic choices (``shape=None``,
    ``boundary='auto'``) compare fits on whole images, so a tiled fit needs them given."""
    if shape is None or (isinstance(boundary, str) and boundary.lower() == "auto"):
        raise ValueError(f"shape={shape!r}, boundary={boundary!r}: tiled and distributed fits "
                         "need a kernel shape and a named boundary (the automatic choices "
                         "compare fits on whole images)")
    return normalize_shape(shape), normalize_boundary(boundary)


def check_statistics_options(shape, *, model, loss, reg, lam, method, nonneg, normalize,
                             noise_std, background, saturation, saturation_a, model_options):
    """Refuse, with the knob named, what a fit on summed statistics cannot do."""

    _check_options(model=model, loss=loss, reg=reg, lam=lam, method=method, shape=shape,
                   nonneg=nonneg, normalize=normalize, noise_std=noise_std)
    where = "tiled or distributed fits (they see the images only as summed statistics)"
    parametric = isinstance(model, KernelModel) or model in PARAMETRIC
    if not parametric and model != "free":
        raise ValueError(f"model={model!r} is not available for {where}; use model='free' "
                         f"or a parametric model {PARAMETRIC}")
    for name, value in (("background", background), ("saturation", saturation),
                        ("saturation_a", saturation_a)):
        if value is not None:
            raise ValueError(f"{name}={value!r} is not available for {where}; mask the "
                             "pixels instead (mask=)")
    if loss != "l2":
        raise ValueError(f"loss={loss!r} is not available for {where}: only loss='l2'")
    if method not in (None, "normal"):
        raise ValueError(f"method={method!r} is not available for {where}: only "
                         "method=None or 'normal'")
    p = shape[0] * shape[1]
    if p > MAX_STATISTICS_UNKNOWNS:
        raise ValueError(f"shape={shape} has {p} pixels, too many for the {p}×{p} Gram matrix "
                         f"that {where} need (at most {MAX_STATISTICS_UNKNOWNS})")
    if parametric:
        for name, value in (("reg", reg), ("nonneg", nonneg)):
            if value is not None and value is not False:
                raise ValueError(f"{name}={value!r} is not available with model={model!r}")
        _parametric_family(model, model_options)   # unknown options fail now, not after reading
    else:
        if reg in NONSMOOTH:
            raise ValueError(f"reg={reg!r} is solved matrix-free on the images; {where} "
                             "take reg=None, 'ridge', 'gradient' or 'laplacian'")
        if model_options:
            raise TypeError(f"model='free' on summed statistics takes no options "
                            f"{sorted(model_options)}")
