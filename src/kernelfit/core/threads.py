"""How many threads kernelfit's computations use, and the one knob that sets it.

Two kinds of work share the cores, and they want different things:

* **FFTs** (the statistics, the matrix-free operator, convolutions) split well over threads:
  ``scipy.fft`` runs them on :func:`thread_count` workers.
* **Small dense linear algebra** (Gram assembly, Cholesky and eigendecompositions of a few
  thousand unknowns, the many tiny products of an iterative solver) does not: OpenBLAS's
  threads spin while they wait for work, so beside any other busy process (a second fit, a
  Dask worker, a compiler) a multi-threaded factorisation of a small matrix runs many times
  slower than a single-threaded one.  kernelfit runs BLAS on one thread during a fit and
  widens it only for factorisations large enough to keep every thread busy
  (:func:`dense_threads`).

The knob is :func:`threads`, a context manager: ``with kf.threads(1): ...`` makes every fit
inside run single-threaded (what to use when several fits or Dask workers share a machine);
the CLI's ``--threads N`` does the same for one command.  Without it, FFTs use the cores this
process may run on (``os.sched_getaffinity``).  No environment variable or global setting is
read or changed: the limit lives in a :mod:`contextvars` variable (so threads and asyncio
tasks each see their own), and BLAS's own thread count is restored when the last fit running
in the process ends.

Examples
--------
>>> import numpy as np, kernelfit as kf
>>> rng = np.random.default_rng(0)
>>> a = rng.random((64, 64))
>>> b = kf.convolve(a, np.full((3, 3), 1 / 9), mode="valid")
>>> with kf.threads(1):
...     fit = kf.estimate(a, b, 3)
>>> bool(np.allclose(fit.kernel, 1 / 9))
True
>>> with kf.threads(2):
...     kf.thread_count()
2
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading

import scipy.fft

_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("kernelfit_threads",
                                                                     default=None)
# A Cholesky factor of p unknowns costs p³/3 flops; below this many unknowns per BLAS thread
# a thread's share of the work is too small to pay for waking it, and beside a busy process
# a second thread loses even at 4000 unknowns (benchmarks/bench_contention.py, part "dense"),
# so widening also needs idle cores.
_UNKNOWNS_PER_BLAS_THREAD = 2000


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


class threads:
    """Run kernelfit's computations inside the block on at most ``n`` threads.

    Parameters
    ----------
    n : int
        ``≥ 1``: the FFT workers and the largest BLAS thread count of every fit, convolution
        and tiled pass started inside the block (in this thread or task).  Use ``1`` when
        several fits run at once (processes, threads, Dask workers) on the same cores.

    Examples
    --------
    >>> import kernelfit as kf
    >>> with kf.threads(1):
    ...     kf.thread_count()
    1
    >>> kf.threads(0)
    Traceback (most recent call last):
    ...
    ValueError: threads(n=0): n must be an integer >= 1
    """

    def __init__(self, n):
        if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 1:
            raise ValueError(f"threads(n={n!r}): n must be an integer >= 1")
        self.n = int(n)
        self._tokens = []

    def __enter__(self) -> int:
        self._tokens.append(_LIMIT.set(self.n))
        return self.n

    def __exit__(self, *exc_info) -> None:
        _LIMIT.reset(self._tokens.pop())


def thread_count() -> int:
    """The thread count fits use here: the innermost :func:`threads` limit, else the cores
    available."""
    limit = _LIMIT.get()
    return available_cores() if limit is None else limit


class _BlasLimiter:
    """Reference-counted single-threaded BLAS while any fit runs in the process.

    BLAS's thread count is process-wide, so it is lowered when the first fit starts and
    restored when the last one ends (two fits in two Python threads must not undo each
    other's limit).  threadpoolctl finds the BLAS libraries once; the controller is kept.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._controller = None
        self._restore = None

    def _blas(self):
        if self._controller is None:
            from threadpoolctl import ThreadpoolController
            self._controller = ThreadpoolController().select(user_api="blas")
        return self._controller

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._restore = self._blas().limit(limits=1)

    def exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._restore is not None:
                self._restore.restore_original_limits()
                self._restore = None

    @contextlib.contextmanager
    def widened(self, n: int):
        """``n`` BLAS threads for one large factorisation, if this is the only fit running
        (another fit's small products must not spin on the widened pool)."""
        with self._lock:
            alone = self._active <= 1
        if n <= 1 or not alone:
            yield
            return
        limited = self._blas().limit(limits=n)
        try:
            yield
        finally:
            limited.restore_original_limits()


_BLAS = _BlasLimiter()


@contextlib.contextmanager
def compute_threads():
    """The thread policy every public computation runs under: FFTs on :func:`thread_count`
    workers, BLAS on one thread (see the module docstring).  Nested uses are free."""
    _BLAS.enter()
    try:
        with scipy.fft.set_workers(thread_count()):
            yield
    finally:
        _BLAS.exit()


def dense_threads(n_unknowns: int):
    """A context for one dense factorisation of ``n_unknowns``: BLAS threads in proportion to
    its size (at most :func:`thread_count`), one for the small ones."""
    n = min(thread_count(), max(1, int(n_unknowns) // _UNKNOWNS_PER_BLAS_THREAD),
            _idle_cores())
    return _BLAS.widened(n)


def _idle_cores() -> int:
    """Cores not busy with other work: the available ones less the 1-minute load average,
    this process's own running thread counted back in."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):   # not on Unix: assume the machine is ours
        return available_cores()
    return max(1, min(available_cores(), int(available_cores() - load + 1.5)))


def uses_threads(function):
    """Decorator: run ``function`` under :func:`compute_threads`."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        with compute_threads():
            return function(*args, **kwargs)
    return call
