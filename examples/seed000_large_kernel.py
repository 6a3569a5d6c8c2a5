"""Seed 000: a 199×199 kernel, larger than the 100×100 image it blurred.

The question builds a binary image ``src`` (20 % ones), a ``1/r`` kernel of size 2N−1 with 0
at its centre, and ``tgt = oaconvolve(src, kernel, mode='same') + N(0, 1)`` noise, then asks
how to estimate the kernel in Python.  39,601 unknowns and 10,000 equations: plain least
squares cannot determine it, but a model with few parameters can.

``oaconvolve(..., mode='same')`` is a zero-padded convolution with the kernel's centre at
``(N−1, N−1)`` -- kernelfit's ``boundary='fill'`` with the default centre.

Run: ``python examples/seed000_large_kernel.py``
"""

import time

import numpy as np

import kernelfit as kf
from kernelfit.demo import seed000_data


def main():
    src, tgt, kernel = seed000_data(seed=0)
    for model in ("radial", "powerlaw"):
        started = time.perf_counter()
        fit = kf.estimate(src, tgt, kernel.shape, boundary="fill", model=model)
        seconds = time.perf_counter() - started
        error = np.linalg.norm(fit.kernel - kernel) / np.linalg.norm(kernel)
        print(f"{model:9s} relative error {error:.4f} in {seconds:.2f} s")
    print(fit.summary().split("status")[0])


if __name__ == "__main__":
    main()
