#!/usr/bin/env python
"""Scaling: image size, kernel size, Dask workers, and memory of a fit from disk.

Four parts (``--part``; all by default), each printing a table:

``size``
    Float32 white-noise pairs from 512² to 8192² (``--sizes``), a 21×21 kernel (a normalised
    elliptical Gaussian), ``b = kf.convolve(a, k, mode='valid') + 0.01·noise``.  Times the
    in-memory ``kf.estimate`` and the tiled ``kernelfit.tiles.estimate_tiled`` (2048² tiles),
    each also as a multiple of one ``scipy.fft.rfft2`` of ``a`` (the yardstick that does not
    drift with the machine), and the kernel error ``‖k̂ − k‖/‖k‖``.
``kernel``
    One 1024² pair, kernels from 5×5 to 63×63 (``--kernels``): ``kf.estimate`` with its
    default routing (the Gram-matrix direct path up to 51×51, the matrix-free path above, at
    ``tol=1e-10``); the method that ran is printed.  A 63×63 Gram matrix has 3969² entries
    (126 MB) and an O(p³) solve, which is why the default routes it matrix-free.
``dask``
    (a) A 4096² pair stored as zarr in ``/tmp``, read by a ``distributed.LocalCluster`` of 2
    worker processes (1 thread each): ``kernelfit.distributed.estimate`` against the
    in-memory NumPy fit, as the largest relative kernel difference.  (b) An 8192² zarr pair:
    the same fit on clusters of 1 and 2 workers (cluster start-up not timed; best of
    ``--repeat``), and the speed-up.  A speed-up near 2 needs two idle cores.
``rss``
    A 16384² float32 TIFF pair (1 GiB each, written to ``/tmp`` block by block, deleted after)
    and a 21×21 kernel, estimated from disk by ``kernelfit estimate A.tif B.tif --tile 2048``
    in a child process; its peak resident memory is read from
    ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh intermediate process.

Usage::

    python benchmarks/bench_scale.py                       # everything (~15 min on 2 cores)
    python benchmarks/bench_scale.py --part dask --repeat 3
    python benchmarks/bench_scale.py --part size --sizes 512,1024 --part kernel --kernels 5,11

One BLAS thread is used (set before NumPy is imported), so that one Dask worker is one core.
Needs the ``dask`` extra (dask[distributed], zarr).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.signal  # noqa: E402

import kernelfit as kf  # noqa: E402
from kernelfit.models.parametric import make_model  # noqa: E402
from kernelfit.front.tiled import estimate_tiled  # noqa: E402

NOISE = 0.01


def kernel_of(size):
    """A normalised elliptical Gaussian (σ = size/7 × size/12, 30°) of ``size × size``."""
    model = make_model("elliptical")
    center = ((size - 1) // 2,) * 2
    params = {"sigma_x": size / 7, "sigma_y": size / 12, "theta": 30.0, "amplitude": 1.0}
    return model.evaluate(params, (size, size), center)


def white_pair(n, kernel, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = kf.convolve(a, kernel, mode="valid")
    b += NOISE * rng.standard_normal(b.shape)
    return a, b.astype(np.float32)


def error(estimate, truth):
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def timed(function, repeat=1):
    best, result = np.inf, None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def part_size(args):
    print("\n## size: 21x21 free kernel, float32 white noise, boundary 'valid'")
    print(f"{'image':>7} {'rfft2 s':>8} {'estimate s':>11} {'(x rfft2)':>9} {'tiled s':>8} "
          f"{'(x rfft2)':>9} {'err mem':>9} {'err tiled':>9}")
    kernel = kernel_of(21)
    for n in args.sizes:
        a, b = white_pair(n, kernel, seed=n)
        t_fft, _ = timed(lambda: scipy.fft.rfft2(a), repeat=3)
        t_mem, fit = timed(lambda: kf.estimate(a, b, 21), repeat=args.repeat if n <= 2048 else 1)
        t_tiled, tiled = timed(lambda: estimate_tiled(a, b, 21, tile=2048),
                               repeat=args.repeat if n <= 2048 else 1)
        print(f"{n:>6}² {t_fft:8.3f} {t_mem:11.2f} {t_mem / t_fft:9.1f} {t_tiled:8.2f} "
              f"{t_tiled / t_fft:9.1f} {error(fit.kernel, kernel):9.2e} "
              f"{error(tiled.kernel, kernel):9.2e}", flush=True)
        del a, b


def part_kernel(args):
    n = 1024
    print(f"\n## kernel: {n}² float32 white noise, free kernel, boundary 'valid'")
    print(f"{'kernel':>7} {'p':>6} {'method':>10} {'seconds':>8} {'err':>9}")
    for size in args.kernels:
        kernel = kernel_of(size)
        a, b = white_pair(n, kernel, seed=size)
        options = {} if size * size <= 51 * 51 else {"tol": 1e-10}
        t, fit = timed(lambda: kf.estimate(a, b, size, **options), repeat=args.repeat)
        print(f"{size:>4}x{size:<2} {size * size:6d} {fit.method:>10} {t:8.2f} "
              f"{error(fit.kernel, kernel):9.2e}", flush=True)


def part_dask(args):
    import dask.array as da
    from distributed import Client, LocalCluster

    from kernelfit.front import distributed as kd

    workdir = tempfile.mkdtemp(prefix="kernelfit-bench-", dir="/tmp")
    try:
        print("\n## dask: LocalCluster of worker processes (1 thread each), zarr inputs on "
              "/tmp, 21x21 free kernel, boundary 'valid'")
        kernel = kernel_of(21)

        def store(n):
            a, b = white_pair(n, kernel, seed=n + 1)
            paths = [os.path.join(workdir, f"{name}{n}.zarr") for name in "ab"]
            for path, x in zip(paths, (a, b)):
                da.from_array(x, chunks=2048).to_zarr(path)
            return a, b, [da.from_zarr(path) for path in paths]

        a, b, (a_d, b_d) = store(4096)
        reference = kf.estimate(a, b, 21)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            fit = kd.estimate(a_d, b_d, 21, client=client)
        diff = np.abs(fit.kernel - reference.kernel).max() / np.abs(reference.kernel).max()
        print(f"4096²: 2 workers vs NumPy in memory: max |Δk| / max |k| = {diff:.2e} "
              f"(target ≤ 1e-10); tiles {fit.info['tiles']}")
        del a, b

        _, _, (a_d, b_d) = store(8192)
        times = {}
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                times[workers], _ = timed(lambda: kd.estimate(a_d, b_d, 21, client=client),
                                          repeat=args.repeat)
            print(f"8192², {workers} worker(s): {times[workers]:.2f} s", flush=True)
        machine = machine_speedup()
        print(f"speed-up 2 vs 1 workers: {times[1] / times[2]:.2f}x (target ≥ 1.6 on an idle "
              f"2-core machine; load average now {os.getloadavg()[0]:.2f})")
        print(f"the machine itself, same moment: 2 processes of pure FFTs run {machine:.2f}x "
              "faster than 1 (2.0 = two idle cores)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fft_work(_):
    x = np.random.default_rng(0).random((2048, 2048))
    for _ in range(20):
        scipy.fft.rfft2(x)


def machine_speedup() -> float:
    """How much faster 2 processes do 2 units of pure FFT work than 1 process does (2.0 on
    two idle cores): what the other jobs on the machine leave for the Dask workers."""
    import multiprocessing

    seconds = {}
    for processes in (1, 2):
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(_fft_work, range(processes))  # warm-up: imports, page faults
            started = time.perf_counter()
            pool.map(_fft_work, range(2))
            seconds[processes] = time.perf_counter() - started
    return seconds[1] / seconds[2]


def write_tiff_pair(workdir, n, kernel, band=2048):
    """a: float32 white noise; b: its 'valid' blur (+ noise) at a's size, border zero; both
    written band by band so that this process never holds a whole image."""
    import tifffile

    kh = kernel.shape[0]
    t = kh - 1
    rng = np.random.default_rng(16384)
    paths = [os.path.join(workdir, name) for name in ("a.tif", "b.tif")]
    a = tifffile.memmap(paths[0], shape=(n, n), dtype=np.float32)
    for r0 in range(0, n, band):
        a[r0:r0 + band] = rng.standard_normal((min(band, n - r0), n), dtype=np.float32)
    a.flush()
    b = tifffile.memmap(paths[1], shape=(n, n), dtype=np.float32)
    cy = (kh - 1) // 2
    b[:cy] = 0
    b[n - (t - cy):] = 0
    for r0 in range(0, n - t, band):
        r1 = min(r0 + band, n - t)
        block = scipy.signal.fftconvolve(a[r0:r1 + t], kernel, mode="valid")
        block += NOISE * rng.standard_normal(block.shape)
        b[r0 + cy:r1 + cy, :cy] = 0
        b[r0 + cy:r1 + cy, cy:n - (t - cy)] = block
        b[r0 + cy:r1 + cy, n - (t - cy):] = 0
    b.flush()
    del a, b
    return paths


def part_rss(args):
    n = args.rss_size
    print(f"\n## rss: {n}² float32 TIFF pair on disk, 21x21 free kernel, --tile 2048, "
          "boundary 'valid'")
    kernel = kernel_of(21)
    workdir = tempfile.mkdtemp(prefix="kernelfit-rss-", dir="/tmp")
    try:
        started = time.perf_counter()
        a_path, b_path = write_tiff_pair(workdir, n, kernel)
        size_gib = os.path.getsize(a_path) / 2**30
        print(f"wrote 2 x {size_gib:.2f} GiB in {time.perf_counter() - started:.0f} s")
        out = os.path.join(workdir, "k.npy")
        command = [sys.executable, "-m", "kernelfit", "estimate", a_path, b_path, "--shape",
                   "21", "--tile", "2048", "-o", out, "-q"]
        started = time.perf_counter()
        peak_kib = peak_rss_kib(command)
        seconds = time.perf_counter() - started
        print(f"peak RSS of the child: {peak_kib / 2**20:.2f} GiB (target ≤ 1.5 GiB); "
              f"{seconds:.0f} s; kernel error {error(np.load(out), kernel):.2e}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def peak_rss_kib(command) -> int:
    """Peak resident memory (KiB) of ``command``, measured by a fresh intermediate process
    whose only child it is (RUSAGE_CHILDREN here would also count the Dask workers)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, *command], check=True,
                            capture_output=True, text=True)
    return int(result.stdout.split()[-1])


PARTS = {"size": part_size, "kernel": part_kernel, "dask": part_dask, "rss": part_rss}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", action="append", choices=tuple(PARTS),
                        help="run only these parts (repeatable); default all")
    parser.add_argument("--sizes", default="512,1024,2048,4096,8192")
    parser.add_argument("--kernels", default="5,11,21,31,41,51,63")
    parser.add_argument("--rss-size", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.kernels = [int(x) for x in args.kernels.split(",")]
    print(f"kernelfit {kf.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, load average "
          f"{os.getloadavg()[0]:.2f}")
    for name in args.part or PARTS:
        PARTS[name](args)


if __name__ == "__main__":
    main()
