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

Part 6 — a star field against HOTPANTS and SFFT (``--star N``, default 4096; 0 skips): two
N² exposures of a few thousand stars with Moffat PSFs (β = 2.5), the template ``a`` sharp
(FWHM 2.5 px), the science image ``b`` broader with a width that changes across the field
(FWHM 3.0 → 5.6 px, bilinear in the position), skies of 200 and of 300 plus a quadratic
gradient, Poisson-like noise (variance = the noise-free value, gain 1).  Fitted: a 17×17
kernel of degree 2 with a background of degree 2.  Timed: kernelfit's fit plus
``fit.residual`` (wall and CPU seconds); HOTPANTS (the C program, run as a subprocess on FITS
files, ``-r 8 -ko 2 -bgo 2``; found through the environment variable ``KERNELFIT_HOTPANTS`` or
``PATH``, skipped with a message otherwise — it is not a dependency and nothing here builds
it).  Reported: the model-error RMS, the RMS of ``model − noise-free b`` over the pixels both
methods model (``model = b − difference image``), next to the noise RMS.  SFFT (PyPI
``sfft``, its CPU backend ``'Numpy'`` with one thread, skipped when not importable) is run
on a smaller field of the same kind (``--sfft-size``, default 1024; 0 skips); its second
subtraction is timed (numba compiles during the first).

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_varying.py`` (``--quick``: 512² in part
2, no OIS, anchor and star field at 1024², no SFFT).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
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


# --------------------------------------------------------------------------- part 6

def moffat(dy, dx, fwhm, beta=2.5):
    """A Moffat profile of unit flux sampled at pixel offsets ``dy``, ``dx``."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return (beta - 1) / (np.pi * alpha ** 2) * (1 + (dy * dy + dx * dx) / alpha ** 2) ** -beta


def star_field(n, *, n_stars=3000, seed=1, radius=24):
    """``(a, b, b_true)``: template and science exposures (float32) and the noise-free
    science image; see part 6 of the module docstring."""
    rng = np.random.default_rng(seed)
    ys, xs = rng.uniform(-10, n + 10, (2, n_stars))
    flux = np.minimum(2e3 * (1 - rng.random(n_stars)) ** (-1 / 1.2), 5e6)   # power law
    a_true, b_true = np.full((n, n), 200.0), np.zeros((n, n))
    for y, x, f in zip(ys, xs, flux):
        iy, ix = int(round(y)), int(round(x))
        y0, y1 = max(iy - radius, 0), min(iy + radius + 1, n)
        x0, x1 = max(ix - radius, 0), min(ix + radius + 1, n)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = (np.arange(y0, y1) - y)[:, None], (np.arange(x0, x1) - x)[None, :]
        u, v = 2 * y / (n - 1) - 1, 2 * x / (n - 1) - 1
        a_true[y0:y1, x0:x1] += f * moffat(dy, dx, 2.5)
        b_true[y0:y1, x0:x1] += f * moffat(dy, dx, 4.0 + 0.8 * v + 0.5 * u + 0.3 * u * v)
    u = np.linspace(-1, 1, n)
    b_true += (300.0 + 40.0 * u[None, :] + 25.0 * u[:, None] + 15.0 * u[:, None] * u[None, :]
               + 10.0 * u[None, :] ** 2)
    a = a_true + np.sqrt(a_true) * rng.standard_normal((n, n))
    b = b_true + np.sqrt(b_true) * rng.standard_normal((n, n))
    return a.astype(np.float32), b.astype(np.float32), b_true


def hotpants_binary():
    """The HOTPANTS executable named by ``KERNELFIT_HOTPANTS``, or on ``PATH``, or None."""
    named = os.environ.get("KERNELFIT_HOTPANTS")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("hotpants")


def run_hotpants(binary, a, b, workdir):
    """HOTPANTS on FITS copies; returns (seconds, model = b − difference, valid pixels)."""
    from astropy.io import fits

    paths = {name: str(Path(workdir) / f"{name}.fits") for name in ("tmpl", "sci", "diff")}
    fits.writeto(paths["tmpl"], a, overwrite=True)
    fits.writeto(paths["sci"], b, overwrite=True)
    # Kernel half width 8 (17×17), kernel and background of degree 2, the template
    # convolved, the difference in the science image's units (-n i), no saturation.
    command = [binary, "-inim", paths["sci"], "-tmplim", paths["tmpl"], "-outim",
               paths["diff"], "-r", "8", "-ko", "2", "-bgo", "2", "-c", "t", "-n", "i",
               "-tu", "1e9", "-iu", "1e9", "-tl", "-1e9", "-il", "-1e9", "-tg", "1", "-ig",
               "1", "-v", "0"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    diff = fits.getdata(paths["diff"]).astype(np.float64)
    valid = np.isfinite(diff) & (np.abs(diff) > 1e-20)    # HOTPANTS fills bad pixels 1e-30
    return seconds, b - diff, valid


def run_sfft(a, b):
    """SFFT's CPU backend (one thread); returns (seconds, model = b − difference)."""
    from sfft.sfftcore.SFFTConfigure import SingleSFFTConfigure
    from sfft.sfftcore.SFFTSubtract import GeneralSFFTSubtract

    # SFFT works on transposed (x, y) arrays, as its FITS reader makes them.
    I, J = (np.ascontiguousarray(x.T, dtype=np.float64) for x in (a, b))
    config = SingleSFFTConfigure.SSC(NX=I.shape[0], NY=I.shape[1], KerHW=8, KerPolyOrder=2,
                                     BGPolyOrder=2, ConstPhotRatio=True,
                                     BACKEND_4SUBTRACT="Numpy", NUM_CPU_THREADS_4SUBTRACT=1,
                                     VERBOSE_LEVEL=0)
    def subtract():
        return GeneralSFFTSubtract.GSS(PixA_I=I, PixA_J=J, PixA_mI=I, PixA_mJ=J,
                                       SFFTConfig=config, ContamMask_I=None,
                                       BACKEND_4SUBTRACT="Numpy", NUM_CPU_THREADS_4SUBTRACT=1,
                                       VERBOSE_LEVEL=0)[1]

    subtract()   # numba compiles on the first call: time the second
    started = time.perf_counter()
    diff = subtract()
    return time.perf_counter() - started, b - diff.T


def kernelfit_star(a, b):
    """Fit + residual; returns (wall s, CPU s, model = b − residual)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fit = kf.estimate(a, b, 17, variation=2, background=2)
    residual = fit.residual
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, b - residual


def rms(values):
    return float(np.sqrt(np.mean(np.square(values))))


def part_star_field(n, sfft_size):
    a, b, b_true = star_field(n)
    binary = hotpants_binary()
    print(f"part 6: {n}² star field, 3000 Moffat stars, FWHM 2.5 px (a) vs 3.0 → 5.6 px across "
          "the field (b), sky gradient, Poisson-like noise; 17×17, degree 2, background 2")
    wall, cpu, model = kernelfit_star(a, b)
    used = np.isfinite(model)
    noise = rms((b - b_true)[used])
    print(f"  kernelfit  fit + residual {wall:6.2f} s wall, {cpu:6.2f} s CPU;  model-error "
          f"RMS {rms((model - b_true)[used]):.4f}  (noise RMS {noise:.3f})")
    if binary is None:
        print("  HOTPANTS   skipped: no executable (set KERNELFIT_HOTPANTS=/path/to/hotpants "
              "or put hotpants on PATH)")
    else:
        with tempfile.TemporaryDirectory() as workdir:
            seconds, hp_model, valid = run_hotpants(binary, a, b, workdir)
        both = valid & used
        print(f"  HOTPANTS   {seconds:6.2f} s wall (subprocess, FITS I/O included);  model-error "
              f"RMS {rms((hp_model - b_true)[both]):.4f}  (kernelfit on the same pixels "
              f"{rms((model - b_true)[both]):.4f})")
        print(f"  HOTPANTS / kernelfit time: {seconds / wall:.2f}×")
    if not sfft_size:
        return
    try:
        import sfft  # noqa: F401
    except ImportError as exc:
        print(f"  SFFT       skipped: not importable ({exc})")
        return
    a, b, b_true = star_field(sfft_size, n_stars=max(3000 * sfft_size ** 2 // n ** 2, 200))
    wall, cpu, model = kernelfit_star(a, b)
    seconds, sfft_model = run_sfft(a, b)
    inner = np.zeros(b.shape, bool)
    inner[8:-8, 8:-8] = True
    both = inner & np.isfinite(model) & np.isfinite(sfft_model)
    print(f"  at {sfft_size}² (same density of stars): kernelfit {wall:.2f} s wall, model-error "
          f"RMS {rms((model - b_true)[both]):.4f};  SFFT (CPU, 1 thread, compilation not "
          f"timed) {seconds:.2f} s, model-error RMS {rms((sfft_model - b_true)[both]):.4f};  "
          f"SFFT / kernelfit time {seconds / wall:.1f}×")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512² in part 2, no OIS")
    parser.add_argument("--anchor", type=int, default=None,
                        help="image side of part 5 (default 4096, 1024 with --quick; 0 skips)")
    parser.add_argument("--star", type=int, default=None,
                        help="image side of part 6 (default 4096, 1024 with --quick; 0 skips)")
    parser.add_argument("--sfft-size", type=int, default=None,
                        help="image side of part 6's SFFT comparison (default 1024, 0 with "
                             "--quick; 0 skips)")
    parser.add_argument("--parts", default="123456", help="which parts to run, e.g. 6")
    args = parser.parse_args()
    print(f"kernelfit {kf.__version__}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; load average "
          f"{os.getloadavg()[0]:.2f}")
    parts = set(args.parts)
    if "1" in parts:
        part_many_pairs()
    if "2" in parts:
        part_varying(512 if args.quick else 1024)
    if "3" in parts:
        part_statistics()
    if "4" in parts and not args.quick:
        part_ois()
    anchor = args.anchor if args.anchor is not None else (1024 if args.quick else 4096)
    if anchor and "5" in parts:
        part_anchor(anchor)
    star = args.star if args.star is not None else (1024 if args.quick else 4096)
    sfft_size = args.sfft_size if args.sfft_size is not None else (0 if args.quick else 1024)
    if star and "6" in parts:
        part_star_field(star, sfft_size)


if __name__ == "__main__":
    main()
