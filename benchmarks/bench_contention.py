#!/usr/bin/env python
"""Speed on a busy machine: three fits alone and beside competing CPU-bound processes.

A fit that runs well on an idle machine can run ten times slower beside one other busy
process when its BLAS threads spin waiting for a core (see kernelfit.core.threads).  This
script times three fits

* ``free``: the 2048² photo mosaic of bench_free_kernel.py, free 21×21 kernel, 'valid';
* ``seed000``: seed 000's data, 199×199 free kernel, ``reg='gradient', nonneg=True``;
* ``varying``: a 2048² photo mosaic blurred by a kernel that changes across the field,
  17×17, ``variation=2``, ``background=2``;

alone, beside one and beside two competing processes (each a pure-Python busy loop on one
core), with the library's default thread policy, and prints each time (median of the runs)
and its slowdown ratio against the time alone.  It also prints the free fit's time alone in
units of one single-threaded ``scipy.fft.rfft2`` of its image (DESIGN's target: ≤ 12).

Run ``python benchmarks/bench_contention.py`` (``--quick`` for smaller cases,
``--cases free,seed000`` to choose).  The machine should be otherwise idle: the competitors
are the load.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

import kernelfit as kf
from kernelfit.demo import seed000_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_free_kernel import gaussian_kernel, make_inputs, photo_mosaic  # noqa: E402


def _busy_loop(stop):
    """A CPU-bound competitor: one core's worth of pure-Python work until told to stop."""
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


@contextlib.contextmanager
def competitors(n):
    """``n`` busy processes running for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes = [context.Process(target=_busy_loop, args=(stop,), daemon=True)
                 for _ in range(n)]
    for process in processes:
        process.start()
    time.sleep(1.0 if n else 0.0)   # let them reach full speed
    try:
        yield
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()


def free_case(size):
    inputs = make_inputs(size, 21, 1e-3, 0)
    a, b, k = inputs["a"], inputs["b"], inputs["k"]

    def run():
        fit = kf.estimate(a, b, 21)
        return float(np.linalg.norm(fit.kernel - k) / np.linalg.norm(k))
    return run, a


def seed000_case(_size):
    src, tgt, kernel = seed000_data(0)

    def run():
        fit = kf.estimate(src, tgt, kernel.shape, boundary="fill", reg="gradient", nonneg=True)
        return float(np.linalg.norm(fit.kernel - kernel) / np.linalg.norm(kernel))
    return run, None


def varying_case(size):
    """b = (1 − w)·(a ⊛ k₁) + w·(a ⊛ k₂) + sky, w rising linearly across the columns: a kernel
    whose shape varies linearly (so degree 2 contains it) on a degree-1 sky."""
    a = photo_mosaic(size, 3)
    k1, k2 = gaussian_kernel(17, 1.2, 1.2, 0.0), gaussian_kernel(17, 2.5, 1.6, 30.0)
    b1, b2 = kf.convolve(a, k1, mode="valid"), kf.convolve(a, k2, mode="valid")
    rows, cols = b1.shape
    w = np.linspace(0.0, 1.0, cols)[None, :]
    sky = 0.05 + 0.02 * np.linspace(-1.0, 1.0, rows)[:, None]
    b = (1 - w) * b1 + w * b2 + sky
    b = b + np.random.default_rng(4).normal(0.0, 1e-3, b.shape)

    def run():
        fit = kf.estimate(a, b, 17, variation=2, background=2)
        _ = fit.residual   # the user's next step: the difference image
        middle = 0.5 * (k1 + k2)   # the kernel at b's middle column, where w = 1/2
        at = fit.kernel_at((rows - 1) / 2, (cols - 1) / 2)
        return float(np.linalg.norm(at - middle) / np.linalg.norm(middle))
    return run, None


CASES = {"free": free_case, "seed000": seed000_case, "varying": varying_case}


def dense_part(loads):
    """Cholesky factor and inverse (what the direct solver does) at three sizes on one and
    two BLAS threads, alone and beside busy processes: the evidence for
    kernelfit.core.threads' rule (one BLAS thread below 2000 unknowns per thread, and only
    on idle cores above)."""
    import scipy.linalg
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits

    print()
    print("dense: Cholesky factor + inverse, seconds (median of 3)")
    print(f"{'unknowns':>9}{'BLAS':>6}" + "".join(f"{f'{n} busy':>10}" for n in loads))
    rng = np.random.default_rng(0)
    for p in (1000, 2500, 4000):
        X = rng.random((p + 50, p))
        A = X.T @ X
        for blas in (1, 2):
            row = f"{p:9d}{blas:6d}"
            for n in loads:
                with competitors(n), threadpool_limits(blas, user_api="blas"):
                    times = []
                    for _ in range(3):
                        started = time.perf_counter()
                        factor, _ = scipy.linalg.cho_factor(A)
                        lapack.dpotri(factor)
                        times.append(time.perf_counter() - started)
                row += f"{np.median(times):10.3f}"
            print(row, flush=True)


def timed(run, repeats):
    times, error = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            error = run()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), error


def rfft_unit(image):
    times = []
    for _ in range(6):
        started = time.perf_counter()
        scipy.fft.rfft2(image)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512² images instead of 2048²")
    parser.add_argument("--cases", default="free,seed000,varying")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--competitors", default="0,1,2",
                        help="numbers of competing busy processes to run beside each fit")
    parser.add_argument("--no-dense", action="store_true",
                        help="skip the dense-factorisation part")
    args = parser.parse_args(argv)
    size = 512 if args.quick else 2048
    loads = [int(n) for n in args.competitors.split(",")]
    print(f"bench_contention.py  {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores "
          f"({kf.core.threads.available_cores()} available), load average "
          f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}, numpy "
          f"{np.__version__}, scipy {scipy.__version__}, kernelfit {kf.__version__}")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}, "
          f"kf.thread_count()={kf.thread_count()}; image side {size}; median of "
          f"{args.repeats} runs")
    print()
    header = f"{'case':<9}" + "".join(f"{f'{n} busy (s)':>13}" for n in loads) + \
        "".join(f"{f'x alone @{n}':>12}" for n in loads if n) + f"{'error':>10}"
    print(header)
    for name in args.cases.split(","):
        run, image = CASES[name](size)
        run()   # warm-up: imports, FFT plans
        seconds, error = {}, None
        for n in loads:
            with competitors(n):
                seconds[n], error = timed(run, args.repeats)
        row = f"{name:<9}" + "".join(f"{seconds[n]:13.3f}" for n in loads)
        row += "".join(f"{seconds[n] / seconds[loads[0]]:12.2f}" for n in loads if n)
        print(row + f"{error:10.3g}", flush=True)
        if image is not None and 0 in seconds:
            unit = rfft_unit(image)
            print(f"{'':9}alone: {seconds[0] / unit:.1f} single-threaded rfft2 units "
                  f"(one rfft2 of {image.shape[0]}² = {unit * 1e3:.1f} ms; target <= 12)")
    print()
    print("x alone @n: the fit's time beside n busy processes over its time alone "
          "(issue 13's target beside one: <= 2.5).")
    if not args.no_dense:
        dense_part(loads)


if __name__ == "__main__":
    main()
