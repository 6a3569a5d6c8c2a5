#!/usr/bin/env python
"""Outliers, NaN and a background offset: issue 5's accuracy targets, through ``kf.estimate``.

Part 1 — salt and pepper.  The camera photo (central 256², [0, 1]) blurred by a 9×9 Gaussian
(σ = 1.3), noise σ = 0.002, 'valid'; then 2 % of the pixels of ``b`` set to 0 or 1 at random.
Rows: plain least squares on the clean ``b`` (the reference) and on the corrupted ``b``, and
the robust fits on the corrupted ``b``: ``loss='huber'``, ``loss='l1'``, ``clip=3.0``,
``loss='l1', method='lp'`` is left out (the 248²×81 linear program is beyond its size limit).
Target: a robust error ≤ 1.5 × the clean least-squares error.

Part 2 — Hubble deep field.  scikit-image's ``hubble_deep_field`` (grey, a 256² crop scaled to
[0, 1]) blurred by an 11×11 elliptical Gaussian (σ 2.0 × 1.2, 30°) with zero padding, noise
σ = 0.003; then 0.2 % of ``a`` and 5 % of ``b`` NaN and a constant 2.0 added to ``b``, fitted
with ``background=0`` ('valid').  Targets: error ≤ 1.5 × the clean least-squares error and
``|background − 2| ≤ 1e-3``.  Several seeds.

Part 3 — saturation.  The camera crop blurred by the 9×9 Gaussian with edge replication
(``boundary='nearest'``), noise 0.002, then clipped at 80 % of its maximum: ``saturation='auto'``
against the unclipped fit and plain least squares on the clipped ``b``.  Target ≤ 1.1×.

Errors are relative Frobenius errors ``‖k̂ − k‖/‖k‖``.  Run ``python benchmarks/bench_robust.py``.
"""

from __future__ import annotations

import datetime
import platform
import time

import numpy as np
import scipy
from skimage import data
from skimage.color import rgb2gray

import kernelfit as kf


def gaussian(size, sigma_y, sigma_x=None, theta=0.0):
    """A normalised (elliptical) Gaussian sampled at pixel centres."""
    sigma_x = sigma_y if sigma_x is None else sigma_x
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def error(kernel, truth):
    return float(np.linalg.norm(kernel - truth) / np.linalg.norm(truth))


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    fit = function(*args, **kwargs)
    return fit, time.perf_counter() - started


def salt_and_pepper():
    print("## Part 1: 2 % salt-and-pepper outliers (camera 256², 9×9 Gaussian σ=1.3, "
          "noise 0.002, 'valid')\n")
    a = data.camera().astype(float)[128:384, 128:384] / 255.0
    k = gaussian(9, 1.3)
    print("| seed | clean LS | LS with outliers | huber | l1 | clip=3 | worst robust / clean |")
    print("|---|---|---|---|---|---|---|")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        b = kf.convolve(a, k, mode="valid") + 0.002 * rng.standard_normal((248, 248))
        hit = rng.random(b.shape) < 0.02
        b_out = np.where(hit, rng.integers(0, 2, b.shape).astype(float), b)
        clean, t_clean = timed(kf.estimate, a, b, 9)
        plain, _ = timed(kf.estimate, a, b_out, 9)
        cells = [f"{error(clean.kernel, k):.4f} ({t_clean:.2f} s)",
                 f"{error(plain.kernel, k):.3f}"]
        worst = 0.0
        for options in (dict(loss="huber"), dict(loss="l1"), dict(clip=3.0)):
            fit, seconds = timed(kf.estimate, a, b_out, 9, **options)
            worst = max(worst, error(fit.kernel, k) / error(clean.kernel, k))
            cells.append(f"{error(fit.kernel, k):.4f} ({seconds:.2f} s)")
        print(f"| {seed} | " + " | ".join(cells) + f" | {worst:.2f} |")
    print()


def hubble():
    print("## Part 2: Hubble deep field, 0.2 % NaN in a, 5 % NaN in b, background 2.0, "
          "11×11 elliptical Gaussian, background=0\n")
    grey = rgb2gray(data.hubble_deep_field())
    a = grey[300:556, 400:656]
    a = (a - a.min()) / (a.max() - a.min())
    k = gaussian(11, 2.0, 1.2, np.deg2rad(30))
    print("| seed | clean LS error | error with NaN + background | ratio | "
          "background − 2 | time |")
    print("|---|---|---|---|---|---|")
    for seed in range(4, 10):
        rng = np.random.default_rng(seed)
        clean_b = kf.convolve(a, k, boundary="fill") + 0.003 * rng.standard_normal(a.shape)
        clean = kf.estimate(a, clean_b, 11)
        a_nan, b = a.copy(), clean_b + 2.0
        a_nan[rng.random(a.shape) < 0.002] = np.nan
        b[rng.random(b.shape) < 0.05] = np.nan
        fit, seconds = timed(kf.estimate, a_nan, b, 11, background=0)
        ratio = error(fit.kernel, k) / error(clean.kernel, k)
        print(f"| {seed} | {error(clean.kernel, k):.4f} | {error(fit.kernel, k):.4f} | "
              f"{ratio:.2f} | {float(fit.background[0]) - 2.0:+.1e} | {seconds:.2f} s |")
    print()


def saturation():
    print("## Part 3: b clipped at 80 % of its maximum (camera 256², 9×9 Gaussian σ=1.3, "
          "noise 0.002, 'nearest')\n")
    a = data.camera().astype(float)[128:384, 128:384] / 255.0
    k = gaussian(9, 1.3)
    print("| seed | unclipped LS | clipped, plain LS | clipped, saturation='auto' | "
          "ratio to unclipped | pixels masked |")
    print("|---|---|---|---|---|---|")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        b = kf.convolve(a, k, boundary="nearest") + 0.002 * rng.standard_normal(a.shape)
        clipped = np.minimum(b, 0.8 * b.max())
        clean = kf.estimate(a, b, 9, boundary="nearest")
        plain = kf.estimate(a, clipped, 9, boundary="nearest")
        fit = kf.estimate(a, clipped, 9, boundary="nearest", saturation="auto")
        ratio = error(fit.kernel, k) / error(clean.kernel, k)
        print(f"| {seed} | {error(clean.kernel, k):.4f} | {error(plain.kernel, k):.4f} | "
              f"{error(fit.kernel, k):.4f} | {ratio:.2f} | {1 - fit.n_used / b.size:.1%} |")
    print()


def main():
    print(f"# bench_robust.py — {datetime.date.today()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}, kernelfit {kf.__version__}\n")
    salt_and_pepper()
    hubble()
    saturation()


if __name__ == "__main__":
    main()
