"""Spatially varying kernels (``variation=``) and many pairs: accuracy and speed, side by side.

Part 1 — many pairs: 12 pairs of 64² white-noise images, a 9×9 kernel, noise σ = 0.05,
boundary 'fill'.  The joint kernelfit fit against stacked im2col least squares
(``numpy.linalg.lstsq`` on every pair's zero-padded footprints): kernel errors and their ratio.

Part 2 — a PSF that varies across the image: a photo mosaic blurred by a Gaussian whose σ
grows linearly from 1.0 (left column of ``b``) to 2.5 (right column), 'valid' convolution
(``b`` is ``(N − 16)²``), noise σ = 1e-3.  ``b`` is made exactly: every output column ``x``
gets the 17×17 sampled Gaussian of its own σ(x) (separable, normalised to sum 1), applied by
a vertical then a horizontal weighted sum over that column's footprint — no interpolation
between precomputed blurs.  Reported: the relative kernel error ``‖k̂ − k‖/‖k‖`` at the 9
centres of a 3×3 grid of tiles and at the left/right edge columns, for ``variation=0``
(one invariant kernel), 1 and 2, with the fit times.

Part 3 — the statistics: the FFT cross-Gram assembly against im2col of the same extended
design (time, largest difference).

Part 4 — OIS ``AdaptiveBramich`` (``pip install wheel setuptools && pip install
--no-build-isolation ois``), same kind of problem on a smaller mosaic with an 11×11 kernel,
same-sized ``b`` (OIS needs it), polynomial degree 2, probes in the interior.

Part 5 — astronomy's speed anchor (``--anchor N``, default 4096; 0 skips): an N² float32
white-noise image, a 17×17 kernel varying as a degree-2 polynomial (a Gaussian core with
position-dependent anisotropic terms), 'valid', noise 1e-3: the fit's time and its kernel
error.  For scale, DESIGN.md quotes SFFT at about 1.4 s on an A100 GPU and HOTPANTS at about
43 s on a CPU for a 4096² image with a 17×17 varying kernel (their figures, not run here).

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_varying.py`` (``--quick``: 512² in part
2, no OIS, anchor at 1024²).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.stats.varying import varying_statistics

sys.path.insert(0, str(Path(__file__).parent))
from bench_free_kernel import photo_mosaic  # noqa: E402


def rel_err(k_hat, k):
    return float(np.linalg.norm(k_hat - k) / np.linalg.norm(k))


# --------------------------------------------------------------------------- part 1

def stacked_lstsq(a_list, b_list, shape):
    """The careful user's answer: stack every pair's im2col rows and call lstsq."""
    kh, kw = shape
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    rows, rhs = [], []
    for a, b in zip(a_list, b_list):
        padded = np.pad(a, ((cy, kh - 1 - cy), (cx, kw - 1 - cx)))  # zeros = 'fill'
        windows = sliding_window_view(padded, shape)[:, :, ::-1, ::-1]  # convolution order
        rows.append(windows.reshape(-1, kh * kw))
        rhs.append(b.ravel())
    return np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)[0].reshape(shape)


def part_many_pairs():
    rng = np.random.default_rng(7)
    shape = (9, 9)
    k = rng.random(shape)
    k /= k.sum()
    a_list = [rng.standard_normal((64, 64)) for _ in range(12)]
    b_list = [kf.convolve(a, k, boundary="fill") + 0.05 * rng.standard_normal(a.shape)
              for a in a_list]
    t0 = time.perf_counter()
    fit = kf.estimate(a_list, b_list, shape, boundary="fill")
    t1 = time.perf_counter()
    ref = stacked_lstsq(a_list, b_list, shape)
    t2 = time.perf_counter()
    e_fit, e_ref = rel_err(fit.kernel, k), rel_err(ref, k)
    print("part 1: 12 pairs of 64² white noise, 9×9, σ=0.05, 'fill'")
    print(f"  kernelfit joint fit   err {e_fit:.6f}   {t1 - t0:.3f} s")
    print(f"  stacked im2col lstsq  err {e_ref:.6f}   {t2 - t1:.3f} s")
    print(f"  error ratio {e_fit / e_ref:.12f} (target ≤ 1.02);  max |k_fit − k_lstsq| = "
          f"{np.abs(fit.kernel - ref).max():.2e};  speed-up {(t2 - t1) / (t1 - t0):.1f}×")


# --------------------------------------------------------------------------- part 2

def gaussian_1d(sigma, radius):
    t = np.arange(-radius, radius + 1)
    h = np.exp(-0.5 * (t / sigma) ** 2)
    return h / h.sum()


def true_kernel(sigma, size):
    h = gaussian_1d(sigma, size // 2)
    return np.outer(h, h)


def varying_blur(a, size, sigma_of_column):
    """'valid' output; column x of b is blurred by the Gaussian of σ(x), exactly."""
    r = size // 2
    H, W = a.shape
    Ho, Wo = H - 2 * r, W - 2 * r
    b = np.empty((Ho, Wo))
    for x in range(Wo):
        h = gaussian_1d(sigma_of_column(x), r)
        columns = a[:, x:x + size]                                       # footprint columns
        vertical = sliding_window_view(columns, size, axis=0) @ h       # (Ho, size)
        b[:, x] = vertical @ h                                           # symmetric h
    return b


def part_varying(n, *, degrees=(0, 1, 2), size=17, noise=1e-3, label="part 2"):
    rng = np.random.default_rng(3)
    a = photo_mosaic(n, 3)
    Wo = n - (size - 1)

    def sigma(x):
        return 1.0 + 1.5 * x / (Wo - 1)

    t0 = time.perf_counter()
    b = varying_blur(a, size, sigma) + noise * rng.standard_normal((n - size + 1, Wo))
    print(f"{label}: {n}² photo mosaic, {size}×{size} Gaussian, σ 1.0 → 2.5 left to right, "
          f"'valid', noise {noise:g} (b made exactly in {time.perf_counter() - t0:.1f} s)")
    probes = [(int(round(fy * (Wo - 1))), int(round(fx * (Wo - 1))))
              for fy in (1 / 6, 1 / 2, 5 / 6) for fx in (1 / 6, 1 / 2, 5 / 6)]
    edges = [(Wo // 2, 0), (Wo // 2, Wo - 1)]
    for degree in degrees:
        t0 = time.perf_counter()
        fit = kf.estimate(a, b, size, boundary="valid",
                          variation=degree) if degree else kf.estimate(a, b, size)
        seconds = time.perf_counter() - t0
        at = fit.kernel_at if degree else (lambda y, x: fit.kernel)
        errors = [rel_err(at(y, x), true_kernel(sigma(x), size)) for y, x in probes]
        edge = [rel_err(at(y, x), true_kernel(sigma(x), size)) for y, x in edges]
        name = f"variation={degree}" if degree else "invariant"
        print(f"  {name:12s} {seconds:6.2f} s   3×3 grid errors: "
              + " ".join(f"{e:.3f}" for e in errors)
              + f"   max {max(errors):.3f}   edge columns (σ=1.0, 2.5): "
              + " ".join(f"{e:.3f}" for e in edge))
    return a, b


# --------------------------------------------------------------------------- part 3

def part_statistics(n=384, size=15, degree=1):
    rng = np.random.default_rng(5)
    a = photo_mosaic(n, 5)
    b = rng.standard_normal((n, n))
    pair = prepare_pair(a, b, size, boundary="fill")
    shape = (size, size)
    out = {}
    for method in ("fft", "im2col"):
        best = np.inf
        for _ in range(2):
            t0 = time.perf_counter()
            out[method] = varying_statistics(pair, shape, degree, frame=b.shape, method=method)
            best = min(best, time.perf_counter() - t0)
        out[method + "_s"] = best
    diff = np.abs(out["fft"].gram - out["im2col"].gram).max() / np.abs(out["im2col"].gram).max()
    print(f"part 3: statistics of the extended design, {n}², {size}×{size}, degree {degree} "
          f"({3 * size * size} unknowns)")
    print(f"  FFT cross-Grams {out['fft_s']:.3f} s   im2col {out['im2col_s']:.3f} s   ratio "
          f"{out['im2col_s'] / out['fft_s']:.1f}×   max relative difference {diff:.1e}")


# --------------------------------------------------------------------------- part 4

def part_ois(n=320, size=11, degree=2):
    try:
        import ois
    except ImportError as exc:
        print(f"part 4: OIS not installed ({exc})")
        return
    rng = np.random.default_rng(11)
    a = photo_mosaic(n, 11)
    r = size // 2

    def sigma(x):
        return 0.8 + 0.8 * x / (n - 1)

    padded = np.pad(a, r)  # zeros: b shaped like a, 'fill'
    b = varying_blur(padded, size, sigma) + 1e-3 * rng.standard_normal(a.shape)
    probes = [(int(round(fy * (n - 1))), int(round(fx * (n - 1))))
              for fy in (1 / 6, 1 / 2, 5 / 6) for fx in (1 / 6, 1 / 2, 5 / 6)]
    t0 = time.perf_counter()
    fit = kf.estimate(a, b, size, boundary="fill", variation=degree)
    t_kf = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ois.optimal_system(b, a, kernelshape=(size, size), bkgdegree=None,
                             method="AdaptiveBramich", poly_degree=degree)
    t_ois = time.perf_counter() - t0
    k_ois = np.asarray(out[2], dtype=float)
    e_kf = [rel_err(fit.kernel_at(y, x), true_kernel(sigma(x), size)) for y, x in probes]
    e_ois = [rel_err(ois.eval_adpative_kernel(k_ois, x, y), true_kernel(sigma(x), size))
             for y, x in probes]
    print(f"part 4: vs OIS AdaptiveBramich, {n}² mosaic, {size}×{size}, σ 0.8 → 1.6, "
          f"degree {degree}, 'fill'")
    print(f"  kernelfit  {t_kf:7.2f} s   max probe error {max(e_kf):.4f}")
    print(f"  OIS        {t_ois:7.2f} s   max probe error {max(e_ois):.4f}")
    print(f"  OIS / kernelfit time: {t_ois / t_kf:.1f}×")


# --------------------------------------------------------------------------- part 5

def part_anchor(n, size=17, degree=2):
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(np.float32)
    r = size // 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    core = np.exp(-(x * x + y * y) / (2 * 2.0 ** 2))
    core /= core.sum()
    coefficients = np.zeros((6, size, size))
    coefficients[0] = core
    coefficients[1] = 0.1 * core * (x * x - y * y) / r     # ellipticity growing along x
    coefficients[2] = 0.05 * core * (x * y) / r            # and a tilt along y
    frame = (n - size + 1, n - size + 1)
    truth = kf.VaryingKernel(coefficients, degree, frame=frame, center=(r, r), origin=(r, r))
    b = kf.convolve(a, truth, boundary="valid") + 1e-3 * rng.standard_normal(frame)
    started = time.perf_counter()
    fit = kf.estimate(a, b, size, variation=degree)
    seconds = time.perf_counter() - started
    probes = [(y0 * (frame[0] - 1), x0 * (frame[1] - 1)) for y0 in (0, 0.5, 1)
              for x0 in (0, 0.5, 1)]
    worst = max(rel_err(fit.kernel_at(py, px), truth.at(py, px)) for py, px in probes)
    print(f"part 5: {n}² float32 white noise, {size}×{size} kernel varying with degree "
          f"{degree}, 'valid', noise 1e-3")
    print(f"  kernelfit variation={degree}: {seconds:.2f} s; worst kernel error over 9 probes "
          f"(corners, edges, centre) {worst:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512² in part 2, no OIS")
    parser.add_argument("--anchor", type=int, default=None,
                        help="image side of part 5 (default 4096, 1024 with --quick; 0 skips)")
    args = parser.parse_args()
    part_many_pairs()
    part_varying(512 if args.quick else 1024)
    part_statistics()
    if not args.quick:
        part_ois()
    anchor = args.anchor if args.anchor is not None else (1024 if args.quick else 4096)
    if anchor:
        part_anchor(anchor)


if __name__ == "__main__":
    main()
