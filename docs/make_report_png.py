"""Make ``docs/report.png``: a screenshot of a kernelfit report in headless Chromium.

The fit is seed 001's situation: a photo blurred by an (asymmetric, rotated Gaussian) kernel
with edge extension and 8-bit rounding, fitted as a free 9×9 kernel with a Laplacian
regulariser whose weight is chosen by GCV.  Run from the repository root::

    python docs/make_report_png.py          # needs matplotlib, scikit-image and chromium

It writes ``docs/report.png`` (the page at 1200 px wide, trimmed below the footer); the HTML
page itself is drawn in a temporary directory (pass a path to keep it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np

import kernelfit as kf

HERE = Path(__file__).resolve().parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def make_report(path: Path) -> None:
    from skimage import data

    a = data.camera()[96:352, 128:384].astype(float)
    yy, xx = np.mgrid[-3:4, -3:4]
    theta = np.deg2rad(30)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    kernel = np.exp(-(u ** 2 / (2 * 1.6 ** 2) + v ** 2 / (2 * 0.7 ** 2)))
    kernel /= kernel.sum()
    b = np.clip(np.rint(kf.convolve(a, kernel, boundary="nearest")), 0, 255)
    fit = kf.estimate(a, b, 9, boundary="nearest", reg="laplacian")
    fit.report(path, a=a, b=b, title="kernelfit report: a photo blurred in an image editor")


def screenshot(page: Path, out: Path) -> None:
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        sys.exit("Chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        f"--screenshot={out}", "--window-size=1200,6000", page.as_uri()],
                       check=True, capture_output=True, timeout=180)
    image = iio.imread(out)[..., :3]
    # Trim the empty page background below the footer.
    background = image[-1, 0]
    rows = np.nonzero((image != background).any(axis=(1, 2)))[0]
    iio.imwrite(out, image[: rows[-1] + 24], optimize=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(scratch) / "report.html"
        make_report(page)
        screenshot(page, HERE / "report.png")
    print(f"wrote {HERE / 'report.png'}")
