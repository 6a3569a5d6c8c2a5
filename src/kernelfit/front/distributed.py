"""Kernel fits on a Dask cluster: statistics per tile on the workers, summed in a tree.

The image pair is cut into tiles of ``b`` (by default along ``b``'s Dask chunks); each task
slices its tile of ``b`` and the rectangle of ``a`` under the tile's footprints (the halo of
``kh−1`` rows and ``kw−1`` columns, with the boundary rule at the image edges, see
:mod:`kernelfit.tiles`) and returns that tile's sufficient statistics.  The statistics are
added pairwise in a tree on the cluster, so only ``p × p`` matrices travel between workers
and to the client, never images; the client then solves them like the in-memory direct path
(:func:`kernelfit.tiles.fit_statistics`).  The result equals the in-memory one to rounding.

Dask is optional: this module imports it only when called, and :func:`is_dask_array` tells a
Dask array apart without importing Dask.
"""

from __future__ import annotations

import contextlib
import numbers
import time
from concurrent.futures import CancelledError

import numpy as np

from ..core.inputs import is_dask_array
from ..fit.statistics import fit_statistics
from .tiled import check_named, check_statistics_options
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

# Largest tile side on a cluster when tile= is not given: larger chunks are cut, which bounds
# a task's memory and gives the workers more tasks to share.  Smaller tiles cost more per
# pixel (each has its halo and its O(p²) share of the Gram assembly): measured on a 4096²
# pair with a 21×21 kernel, 1024² tiles took 1.23× as long as 2048² tiles.
CLUSTER_TILE = DEFAULT_TILE

# Statistics added per reduction task: with 8, a 16384² image in 2048² tiles (64 tasks)
# is reduced in two levels.
FAN_IN = 8

_INSTALL_HINT = "kernelfit.distributed needs Dask: pip install kernelfit[dask]"


def estimate(a, b, shape, *, client=None, scheduler=None, tile=None, boundary="valid",
             center=None, mask=None, timeout=None, **options):
    """:func:`kernelfit.estimate` computed on a Dask cluster.

    Parameters
    ----------
    a, b : (H, W) arrays, or equal-length lists of them (pairs sharing one kernel)
        Dask arrays (their chunks are read where the tasks run), NumPy arrays, zarr arrays or
        :class:`kernelfit.tiles.LazyImage` files (wrapped with ``dask.array.from_array``; a
        LazyImage travels as its path, so the workers must see the file).
    shape : int or (kh, kw)
    client : distributed.Client, optional
        The cluster to compute on.  Default: Dask's current scheduler (the active
        ``Client`` if there is one, else local threads).
    scheduler : str, optional
        Address of a running scheduler (``'tcp://host:8786'``): a client is connected for
        this call and closed after it.  Give ``client`` or ``scheduler``, not both.
    tile : int, optional
        Tile side in pixels of ``b``.  Default: ``b``'s chunks for a Dask ``b`` (tiles then
        follow them), cut to at most 2048 pixels; 2048 for other inputs.
    timeout : float, optional
        Seconds the cluster may take (all attempts together); past it the call cancels its
        tasks and raises ``TimeoutError`` saying how many workers are left.  Without it a
        cluster whose every worker died waits for new workers forever.  It needs a
        distributed cluster (``client``, ``scheduler`` or an active ``distributed.Client``).
        Losing some workers needs no timeout: their tasks are recomputed on the others, and
        when data scattered to a lost worker is gone the fit is run again (up to
        :data:`LOST_DATA_RETRIES` times).
    boundary, center, mask, **options
        As in :func:`kernelfit.estimate`; supported as in
        :func:`kernelfit.tiles.estimate_tiled` (free model with L2 and quadratic
        regularisers, ``nonneg``, ``normalize``; parametric families with ``loss='l2'``).

    Returns
    -------
    KernelFit
        ``fit.residual`` is ``None``; ``fit.info['tiles']`` is the number of tasks that
        computed statistics, ``fit.info['attempts']`` how many runs that took.

    Raises
    ------
    TimeoutError
        When ``timeout`` passed first.
    ConnectionError
        When the workers holding the scattered images were lost on every attempt.

    Examples
    --------
    >>> import numpy as np, dask.array as da, kernelfit as kf
    >>> rng = np.random.default_rng(0)
    >>> a, k = rng.random((64, 64)), rng.random((3, 3))
    >>> b = kf.convolve(a, k, boundary="wrap")
    >>> fit = estimate(da.from_array(a, chunks=32), da.from_array(b, chunks=32), 3,
    ...                boundary="wrap")
    >>> bool(np.allclose(fit.kernel, k)), fit.info["tiles"]
    (True, 4)
    """
    dask, _ = _import_dask()
    shape, boundary = check_named(shape, boundary)
    fit_options = _split_options(options)
    check_statistics_options(shape, **fit_options)
    tile = None if tile is None else check_tile(tile)
    _check_scheduler(client, scheduler)
    timeout = check_timeout(timeout)
    with _connection(client, scheduler) as active:
        active = _timed_client(active, timeout)
        pair_stats, floors, n_tiles, geometry, attempts = _cluster_statistics(
            dask, active, timeout, a, b, mask, shape, boundary=boundary, center=center,
            tile=tile)
    stats = sum(pair_stats)
    floor = sum(s.n_used * q for s, q in zip(pair_stats, floors)) / max(stats.n_used, 1)
    return fit_statistics(stats, center=geometry.center, boundary=boundary,
                          quantisation_var=floor,
                          info={"tiles": n_tiles, "tile": tile or CLUSTER_TILE,
                                "distributed": True, "attempts": attempts},
                          **{k: v for k, v in fit_options.items() if k in _FIT_KEYS},
                          model_options=fit_options["model_options"])


# Runs of the fit after the data scattered to a worker was lost with it (a Dask array's
# chunks are recomputed by Dask itself; scattered NumPy arrays cannot be).
LOST_DATA_RETRIES = 2


def _cluster_statistics(dask, client, timeout, a, b, mask, shape, *, boundary, center, tile):
    """The statistics of every pair, computed on the cluster; retried when the scattered
    images were lost with a worker."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in range(1, LOST_DATA_RETRIES + 2):
        totals, floors, n_tiles, geometry = [], [], 0, None
        scattered = []   # the scattered arrays live on the cluster while these are held
        for label, (ai, bi, mi) in source_pairs(a, b, mask):
            ai, bi, mi, geometry = prepare_sources(ai, bi, shape, boundary=boundary,
                                                   center=center, mask=mi, label=label)
            floors.append(quantisation_of(bi))
            try:
                parts = _tile_tasks(ai, bi, mi, geometry, tile, client, scattered,
                                    deadline)
            except TimeoutError:   # scattering found no worker to hold the images
                raise _stalled(client, timeout) from None
            totals.append(_tree_sum(dask, parts))
            n_tiles += len(parts)
        if client is None:
            return list(dask.compute(*totals)), floors, n_tiles, geometry, attempt
        try:
            # One p×p total per pair comes back (the rounding variance of integer b is per
            # pair).
            return (_gather(client, totals, deadline, timeout), floors, n_tiles, geometry,
                    attempt)
        except CancelledError as exc:
            lost = exc
    raise ConnectionError(
        f"the Dask cluster lost the data of this fit {LOST_DATA_RETRIES + 1} times (workers "
        f"holding the scattered images died; {_n_workers(client)} worker(s) left): {lost}; "
        "give Dask arrays (their chunks are recomputed) or check the workers") from None


def _gather(client, totals, deadline, timeout):
    """Compute ``totals`` on ``client``, waiting no later than ``deadline``."""
    from distributed import wait

    futures = client.compute(totals)
    remaining = _remaining(deadline)
    try:
        if remaining is not None and remaining <= 0:
            raise TimeoutError
        wait(futures, timeout=remaining)
    except TimeoutError:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise _stalled(client, timeout) from None
    return client.gather(futures)


def _remaining(deadline):
    """Seconds left until ``deadline`` (``time.monotonic()`` time; None: no limit)."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _stalled(client, timeout) -> TimeoutError:
    """The error of a cluster that did not finish: how long it had, and who is left."""
    n = _n_workers(client)
    state = ("no worker is left (every worker died or left)" if n == 0 else
             f"{n} worker(s) connected" if n is not None else "the scheduler does not answer")
    within = "in time" if timeout is None else f"within timeout={timeout:g} s"
    return TimeoutError(f"the Dask cluster did not finish the fit {within}: {state}; check "
                        "the cluster, or give a larger timeout=")


def _n_workers(client, wait_s=5):
    """Workers connected to the scheduler now, or None when it does not answer."""
    try:
        return len(client.sync(client.scheduler.ncores, callback_timeout=wait_s))
    except Exception:  # noqa: BLE001 - only a number for a message
        return None


def check_timeout(timeout):
    """``None`` or a number of seconds > 0 (as a float).

    Examples
    --------
    >>> check_timeout(0)
    Traceback (most recent call last):
    ...
    ValueError: timeout=0 must be None or a number of seconds > 0
    """
    if timeout is None:
        return None
    if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout={timeout!r} must be None or a number of seconds > 0")
    if not (np.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be None or a number of seconds > 0")
    return float(timeout)


def _timed_client(active, timeout):
    """The client that ``timeout`` is kept on: the given one, or the active
    ``distributed.Client`` (Dask's local scheduler runs in this process: nothing to lose)."""
    if active is not None or timeout is None:
        return active
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        raise ValueError(f"timeout={timeout:g} applies to a distributed cluster: give client= "
                         "or scheduler= (or start a distributed.Client); Dask's local "
                         "scheduler runs in this process and needs none") from None


def _tile_tasks(a, b, mask, geometry, tile, client, scattered, deadline=None):
    """One delayed statistics task per tile of ``b``."""
    dask, da = _import_dask()
    edges = _edges(geometry, b, tile)
    a, b, mask = (None if x is None else _as_dask(da, x, tile, client, scattered,
                                               deadline)
                  for x in (a, b, mask))
    task = dask.delayed(tile_statistics, pure=True)
    return [task(*tile_blocks(a, b, mask, t), t, geometry.kernel_shape)
            for t in plan_tiles(geometry, *edges)]


# estimate()'s options and their defaults; everything else is a model option.
_DEFAULTS = {"model": "free", "loss": "l2", "reg": None, "lam": "auto", "nonneg": False,
             "normalize": None, "method": None, "noise_std": None, "background": None,
             "saturation": None, "saturation_a": None}
_FIT_KEYS = ("model", "reg", "lam", "nonneg", "normalize", "noise_std")


# estimate()'s front doors that need the images whole; their "unset" values.
_WHOLE_IMAGE_OPTIONS = {"channel_axis": None, "shared_channels": False, "variation": None}


def _split_options(options):
    """estimate()'s options (with defaults) and the model options, from ``**options``."""
    for name, unset in _WHOLE_IMAGE_OPTIONS.items():
        value = options.pop(name, unset)
        if value is not unset and value != unset:
            raise ValueError(f"{name}={value!r} is not available for Dask arrays; compute "
                             "them (np.asarray) or fit each channel as its own pair")
    fit_options = {name: options.pop(name, default) for name, default in _DEFAULTS.items()}
    fit_options["model_options"] = options
    return fit_options


def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return dask, da


def _check_scheduler(client, scheduler):
    if client is not None and scheduler is not None:
        raise ValueError("give client= or scheduler= (an address), not both")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler={scheduler!r} must be an address string such as "
                        "'tcp://127.0.0.1:8786'")
    if client is None:
        return
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")


@contextlib.contextmanager
def _connection(client, scheduler):
    """The client to compute with: ``client``, one connected to ``scheduler`` for the
    duration, or None (Dask's current scheduler)."""
    if scheduler is None:
        yield client
        return
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    try:
        connected = Client(scheduler, timeout="10s")
    except OSError as exc:
        raise OSError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    with connected:
        yield connected


def _edges(geometry, b, tile):
    """Tile edges in the used rectangle of ``b``: every ``tile`` pixels, or ``b``'s chunks
    cut to at most :data:`CLUSTER_TILE` pixels."""
    if tile is not None or not is_dask_array(b):
        return [tile_edges(n, tile or CLUSTER_TILE) for n in geometry.used_shape]
    edges = []
    for chunks, used, n_used in zip(b.chunks, geometry.used, geometry.used_shape):
        start = used.indices(sum(chunks))[0]
        cuts = [sum(chunks[:i]) - start for i in range(1, len(chunks))]
        bounds = [0] + [c for c in cuts if 0 < c < n_used] + [n_used]
        edges.append(_subdivided(bounds, CLUSTER_TILE))
    return edges


def _subdivided(bounds, most):
    """``bounds`` with every interval longer than ``most`` cut into equal parts.

    Examples
    --------
    >>> _subdivided([0, 4096, 4200], 2048)
    [0, 2048, 4096, 4200]
    """
    out = [bounds[0]]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        parts = -(-(stop - start) // most)
        out += [start + (stop - start) * i // parts for i in range(1, parts + 1)]
    return out


def _as_dask(da, x, tile, client, scattered, deadline=None):
    """A Dask array of ``x`` (a Dask array is kept as it is).

    An in-memory array on a cluster is scattered once, as one piece that the tiles slice,
    rather than written into the task graph; lazy sources (LazyImage, zarr) become chunks of
    about ``tile`` pixels that each read their own rectangle where they run.
    """
    if is_dask_array(x):
        return x
    import numpy as np

    if isinstance(x, np.ndarray):
        if client is None:
            return da.from_array(x, chunks=tile or CLUSTER_TILE)
        dask, _ = _import_dask()
        limit = {} if deadline is None else {"timeout": max(_remaining(deadline), 1e-3)}
        future = client.scatter(x, hash=False, **limit)
        scattered.append(future)
        return da.from_delayed(dask.delayed(future), shape=x.shape, dtype=x.dtype)
    return da.from_array(x, chunks=tile or CLUSTER_TILE,
                         meta=np.empty((0, 0), np.dtype(x.dtype)))


def _add(*parts):
    return sum(parts[1:], parts[0])


def _tree_sum(dask, parts):
    """Sum delayed statistics ``FAN_IN`` at a time, level by level (a tree on the cluster)."""
    add = dask.delayed(_add, pure=True)
    while len(parts) > 1:
        parts = [add(*parts[i:i + FAN_IN]) for i in range(0, len(parts), FAN_IN)]
    return parts[0]
