"""Tests for the HTML report (``fit.report``, ``kernelfit estimate --report``, ``_repr_html_``).

The pages are parsed with :mod:`html.parser`: every ``<img>`` must hold a decodable base64
PNG, the expected sections must be there and text supplied by the user must come out escaped.
The browser test opens a report in headless Chromium; it is skipped, with the reason shown by
``-ra``, only when Chromium is absent outside CI (``CI`` set in the environment: it fails).
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import os
import re
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

import kernelfit as kf
from kernelfit import cli
from kernelfit.report import figures, inputs, sections
from kernelfit.report import html as report

IN_CI = bool(os.environ.get("CI"))

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


@pytest.fixture
def requires_matplotlib():
    if not HAVE_MATPLOTLIB:
        if IN_CI:
            pytest.fail("matplotlib is missing in CI: the report cannot be tested")
        pytest.skip("matplotlib is not installed (pip install kernelfit[report])")


# An asymmetric kernel, so that a report in the wrong orientation would show it.
KERNEL = np.array([[0.0, 1.0, 0.0, 0.0],
                   [1.0, 4.0, 2.0, 0.0],
                   [0.0, 2.0, 3.0, 1.0],
                   [0.0, 0.0, 1.0, 1.0]]) / 16.0


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    a = rng.random((48, 56))
    b = kf.convolve(a, KERNEL, boundary="fill") + 0.01 * rng.standard_normal(a.shape)
    a2 = rng.random((40, 40))
    b2 = kf.convolve(a2, KERNEL, boundary="fill") + 0.01 * rng.standard_normal(a2.shape)
    return a, b, a2, b2


@pytest.fixture(scope="module")
def fits(data):
    a, b, a2, b2 = data
    yy, xx = np.mgrid[-3:4, -3:4]
    gauss = np.exp(-(yy ** 2 + xx ** 2) / (2 * 1.3 ** 2))
    bg = kf.convolve(a, gauss / gauss.sum(), boundary="nearest")
    return {
        "free-reg": (kf.estimate(a, b, 5, boundary="fill", reg="laplacian"), a, b),
        "gaussian": (kf.estimate(a, bg, 7, boundary="nearest", model="gaussian"), a, bg),
        "pairs": (kf.estimate([a, a2], [b, b2], 4, boundary="fill"), [a, a2], [b, b2]),
    }


@pytest.fixture(scope="module")
def written(fits, tmp_path_factory):
    """Each fit's report with its images, written once: {name: path}."""
    if not HAVE_MATPLOTLIB:
        return {}
    directory = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, (fit, a, b) in fits.items():
        (directory / name).mkdir()
        paths[name] = fit.report(directory / name / "report.html", a=a, b=b)
    return paths


class _Page(html.parser.HTMLParser):
    """Collects what the tests look at: tags, <img> sources, headings, scripts, text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.images, self.headings, self.text = [], [], [], []
        self.scripts = 0
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts += 1
        if tag in ("h2", "script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.headings.append(data.strip())
        elif self._in is None:
            self.text.append(data)


def parse(text) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def decode_png(src) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    raw = base64.b64decode(src[len(prefix):], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    image = iio.imread(raw, extension=".png")
    assert image.ndim == 3 and min(image.shape[:2]) > 50
    # A figure, not a blank canvas.
    assert image[..., :3].std() > 5
    return image


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, sections, n_images", [
    # kernel+stderr+profile, MTF, images, residual, λ curve
    ("free-reg", ["Kernel", "Parameters", "Images", "Automatic choices", "Diagnostics",
                  "Summary"], 5),
    # kernel+profile, MTF, images, residual (no λ: nothing was chosen automatically)
    ("gaussian", ["Kernel", "Parameters", "Images", "Diagnostics", "Summary"], 4),
    # kernel, MTF, and images + residual for each of the two pairs
    ("pairs", ["Kernel", "Parameters", "Images", "Diagnostics", "Summary"], 6),
])
def test_report_is_one_self_contained_page(fits, written, requires_matplotlib,
                                           name, sections, n_images):
    fit = fits[name][0]
    path = written[name]
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.headings == sections
    assert len(page.images) == n_images
    for src in page.images:
        decode_png(src)
    # Self-contained: nothing fetched from anywhere (our one inline script, inline style).
    assert page.scripts == 1
    assert "link" not in page.tags
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text)
    assert fit.summary().splitlines()[0] in "".join(page.text)


def test_parameters_and_diagnostics_are_listed(fits, written, requires_matplotlib):
    fit = fits["gaussian"][0]
    text = "".join(parse(written["gaussian"].read_text(encoding="utf-8")).text)
    sigma, error = fit.params["sigma"], fit.stderr["sigma"]
    assert f"{sigma:.4g}" in text and f"{error:.4g}" in text
    for label in ("pixels used (n_used)", "noise_std", "converged", "message", "method",
                  "info.objective", "info.nfev"):
        assert label in text
    free = "".join(parse(written["free-reg"].read_text(encoding="utf-8")).text)
    for label in ("kernel summary numbers", "MTF50", "centroid", "info.lambda_selection.criterion",
                  "median standard error per coefficient"):
        assert label in free


def test_lambda_curve_needs_the_selection(fits, written, requires_matplotlib):
    fit = fits["free-reg"][0]
    assert "lambda selection curve" in written["free-reg"].read_text(encoding="utf-8")
    bare = dataclasses.replace(fit, info={k: v for k, v in fit.info.items()
                                          if k != "lambda_selection"})
    assert "lambda selection curve" not in report.render_report(bare)


def test_other_selection_scores_are_drawn(fits, requires_matplotlib):
    fit = fits["gaussian"][0]
    scored = dataclasses.replace(fit, info=dict(fit.info, boundary_selection={
        "scores": {"fill": 3.0, "nearest": 1.0, "wrap": 2.5}, "chosen": "nearest"}))
    page = parse(report.render_report(scored))
    assert "Automatic choices" in page.headings
    assert "chosen: nearest" in "".join(page.text)


def test_user_text_is_escaped(tmp_path, fits, requires_matplotlib):
    fit = fits["gaussian"][0]
    evil = "<script>alert('x')</script> & <b>bold</b>"
    fit = dataclasses.replace(fit, message=evil, converged=False,
                              info=dict(fit.info, **{"note<i>": "<img src=x onerror=alert(1)>"}))
    text = report.render_report(fit, title="<h1>my & fit</h1>")
    page = parse(text)
    assert page.scripts == 1
    assert "b" not in page.tags and "i" not in page.tags and "h1" in page.tags
    assert page.tags.count("h1") == 1  # the header; the title's <h1> stayed text
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    body = "".join(page.text)
    assert evil in body and "<img src=x onerror=alert(1)>" in body
    assert "<h1>my & fit</h1>" in body and "status: failed" in body


def test_prediction_is_in_the_frame_of_b(data, requires_matplotlib):
    """prediction + residual == b on the used pixels, for each output size of b."""
    a = data[0]
    rng = np.random.default_rng(5)
    cases = {
        "same, fill": (kf.convolve(a, KERNEL, boundary="fill"), "fill"),
        "same, valid boundary": (kf.convolve(a, KERNEL, boundary="reflect"), "valid"),
        "valid": (kf.convolve(a, KERNEL, mode="valid"), "valid"),
        "full": (kf.convolve(a, KERNEL, mode="full"), "fill"),
    }
    for label, (b, boundary) in cases.items():
        b = b + 1e-3 * rng.standard_normal(b.shape)
        fit = kf.estimate(a, b, KERNEL.shape, boundary=boundary)
        prediction, _ = inputs.prediction_of(fit, fit.kernel, a, b, fit.residual)
        used = np.isfinite(fit.residual)
        assert prediction.shape == b.shape, label
        # Float rounding only: both sides are the same convolution.
        np.testing.assert_allclose(prediction[used] + fit.residual[used], b[used], atol=1e-9,
                                   err_msg=label)
        assert np.isnan(prediction[~used]).all(), label


def test_without_images_only_the_residual_is_drawn(tmp_path, fits, requires_matplotlib):
    fit, a, _ = fits["free-reg"]
    page = parse(report.render_report(fit))
    assert len(page.images) == 4  # kernel, MTF, residual, λ
    assert "fit.report(path, a=a, b=b)" in "".join(page.text)
    with_a = parse(report.render_report(fit, a=a))
    assert len(with_a.images) == 5  # + a and the prediction


def test_mtf_of_known_kernels():
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    freq, mtf, normalised = figures.radial_mtf(delta)
    assert normalised and freq[0] == 0 and freq[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(mtf, 1.0, atol=1e-12)
    sigma = 2.0
    yy, xx = np.mgrid[-12:13, -12:13]
    gauss = np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2))
    freq, mtf, _ = figures.radial_mtf(gauss / gauss.sum())
    # A sampled Gaussian with σ=2 has the continuous MTF exp(−2π²σ²f²) up to aliasing and
    # the ring average over ±1/(2n) in f: both below 1e-2 here.
    np.testing.assert_allclose(mtf, np.exp(-2 * np.pi ** 2 * sigma ** 2 * freq ** 2), atol=1e-2)


def test_kernel_numbers_locate_and_size_the_kernel(fits):
    fit = fits["gaussian"][0]
    rows = dict(sections.kernel_numbers(fit, fit.kernel))
    sigma = fit.params["sigma"]
    width = float(rows["second-moment width σ of |k|"].split()[0])
    # The second moment of a 7×7 Gaussian of σ≈1.3 truncated at ±3 is a little below σ.
    assert 0.8 * sigma < width <= sigma
    assert rows["centroid of |k| − centre (dy, dx)"].startswith("(")


def test_repr_html_is_compact(fits, requires_matplotlib):
    fit = fits["gaussian"][0]
    text = fit._repr_html_()
    page = parse(text)
    assert len(page.images) == 1
    decode_png(page.images[0])
    assert len(text) < 40_000
    body = "".join(page.text)
    assert f"{fit.params['sigma']:.4g} ± {fit.stderr['sigma']:.3g}" in body


def test_without_matplotlib(monkeypatch, tmp_path, fits):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    fit = fits["gaussian"][0]
    with pytest.raises(ImportError, match=r"pip install kernelfit\[report\]"):
        fit.report(tmp_path / "r.html")
    assert not list(tmp_path.iterdir())
    assert "<img" not in fit._repr_html_() and "KernelFit" in fit._repr_html_()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, match", [
    ("report.png", "use a path ending in .html"),
    ("missing/report.html", "does not exist"),
    ("adir.html", "is a directory"),
])
def test_bad_path_writes_nothing(tmp_path, fits, where, match):
    (tmp_path / "adir.html").mkdir()
    fit, a, b = fits["gaussian"]
    with pytest.raises(ValueError, match=match):
        fit.report(tmp_path / where, a=a, b=b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.html"]


def test_images_that_do_not_match_the_fit(tmp_path, fits, requires_matplotlib):
    fit, a, b = fits["gaussian"]
    with pytest.raises(ValueError, match=r"b has shape \(10, 10\) but fit.residual"):
        fit.report(tmp_path / "r.html", a=a, b=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="a is a list of images but the fit was made from 1"):
        fit.report(tmp_path / "r.html", a=[a, a])
    pairs, a2, _ = fits["pairs"]
    with pytest.raises(ValueError, match="a has 1 images but the fit has 2 pairs"):
        pairs.report(tmp_path / "r.html", a=a2[:1])
    with pytest.raises(ValueError, match="max_pairs"):
        pairs.report(tmp_path / "r.html", max_pairs=-1)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, size=(40, 48), dtype=np.uint8)
    b = np.clip(np.rint(kf.convolve(a, KERNEL, boundary="fill")), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    iio.imwrite(tmp_path / "b.png", b)
    return tmp_path / "a.png", tmp_path / "b.png"


def run(capsys, *argv):
    status = cli.main([str(x) for x in argv])
    return status, capsys.readouterr().err


def test_cli_report_round_trip(tmp_path, pngs, capsys, requires_matplotlib):
    a, b = pngs
    out = tmp_path / "out.html"
    status, err = run(capsys, "estimate", a, b, "--shape", "4", "--boundary", "fill", "-q",
                      "-o", tmp_path / "k.npy", "--json", tmp_path / "fit.json",
                      "--report", out)
    assert status == 0, err
    page = parse(out.read_text(encoding="utf-8"))
    assert len(page.images) == 4  # kernel + stderr + profile, MTF, a/b/prediction, residual
    for src in page.images:
        decode_png(src)
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), KERNEL, atol=0.02)


@pytest.mark.parametrize("report_name", ["out.txt", "missing/out.html"])
def test_cli_bad_report_path_exits_2_before_the_fit(tmp_path, pngs, capsys, report_name):
    a, b = pngs
    status, err = run(capsys, "estimate", a, b, "--shape", "4", "-o", tmp_path / "k.npy",
                      "--report", tmp_path / report_name)
    assert status == 2
    assert err.startswith("kernelfit: error:") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_cli_report_failure_removes_the_other_outputs(tmp_path, pngs, capsys, monkeypatch,
                                                      requires_matplotlib):
    def fail(*args, **kwargs):
        raise ValueError("drawing failed")

    monkeypatch.setattr(kf.KernelFit, "report", fail)
    a, b = pngs
    status, err = run(capsys, "estimate", a, b, "--shape", "4", "-o", tmp_path / "k.npy",
                      "--json", tmp_path / "fit.json", "--report", tmp_path / "r.html")
    assert status == 2 and "drawing failed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


# --------------------------------------------------------------------------------------------
# In a browser
# --------------------------------------------------------------------------------------------

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def chromium():
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if IN_CI:
        pytest.fail("Chromium is not installed in CI (.ci/run: apt-get install -y chromium)")
    pytest.skip("Chromium not found (Debian: apt-get install chromium): the report is not "
                "checked in a browser")


def open_in_chromium(browser, page, tmp_path, *extra):
    """Run headless Chromium on ``page``; return (stdout, console lines)."""
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
               *extra, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    # Chromium logs each console message as "...:CONSOLE:<line>] ..." (older versions
    # "CONSOLE(<line>)"); the report logs nothing, so any such line is a failure.
    console = [line for line in done.stderr.splitlines() if re.search(r"CONSOLE[:(]", line)]
    return done.stdout, console


def loaded_state(dom):
    root = re.search(r"<html[^>]*>", dom).group(0)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', root))


def test_report_renders_in_headless_chromium(tmp_path, written, chromium, requires_matplotlib):
    page = written["free-reg"]
    dom, console = open_in_chromium(chromium, page, tmp_path, "--dump-dom")
    state = loaded_state(dom)
    assert state == {"figures": "5/5", "figures-loaded": "true", "errors": "0"}, state
    assert console == []
    shot = tmp_path / "shot.png"
    open_in_chromium(chromium, page, tmp_path, f"--screenshot={shot}",
                     "--window-size=1200,3000")
    image = iio.imread(shot)
    assert image.shape[:2] == (3000, 1200)
    assert image[..., :3].std() > 20  # figures and text, not an empty page


def test_chromium_check_catches_broken_figures_and_console_errors(tmp_path, fits, chromium,
                                                                  requires_matplotlib):
    """The browser check itself: a damaged image and a console error must be reported."""
    fit, a, b = fits["gaussian"]
    text = report.render_report(fit, a, b)
    text = text.replace("base64,iVBOR", "base64,XXXX", 1)
    text = text.replace("</body>", "<script>console.error('broken')</script></body>")
    page = tmp_path / "broken.html"
    page.write_text(text, encoding="utf-8")
    dom, console = open_in_chromium(chromium, page, tmp_path, "--dump-dom")
    state = loaded_state(dom)
    assert state["figures"] == "3/4" and state["figures-loaded"] == "false"
    assert int(state["errors"]) >= 1
    assert any("broken" in line for line in console)


def test_channel_report_has_every_channel_with_unique_ids(tmp_path, requires_matplotlib):
    """ChannelFits.report: one section per channel, each with the single-fit sections and
    its own images; no id repeats."""
    rng = np.random.default_rng(3)
    a = rng.random((40, 40, 3))
    b = np.stack([kf.convolve(a[..., c], KERNEL * (c + 1), boundary="nearest")
                  for c in range(3)], axis=-1) + 1e-3 * rng.standard_normal((40, 40, 3))
    fits = kf.estimate(a, b, KERNEL.shape, boundary="nearest", channel_axis=-1)
    page = fits.report(tmp_path / "channels.html", a=a, b=b).read_text(encoding="utf-8")
    ids = re.findall(r'id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for c in range(3):
        assert f"channel{c}" in ids and f"channel{c}-kernel" in ids
        assert f"channel{c}-images" in ids
    with pytest.raises(ValueError, match=r"b has shape \(40, 40\); the report of 3 channels"):
        fits.report(tmp_path / "bad.html", a=a, b=b[..., 0])
    assert not (tmp_path / "bad.html").exists()


def test_channel_report_renders_in_headless_chromium(tmp_path, chromium, requires_matplotlib):
    rng = np.random.default_rng(4)
    a = rng.random((32, 32, 2))
    b = np.stack([kf.convolve(a[..., c], KERNEL, boundary="fill") for c in range(2)], axis=-1)
    fits = kf.estimate(a, b, KERNEL.shape, boundary="fill", channel_axis=-1)
    page = fits.report(tmp_path / "channels.html", a=a, b=b)
    dom, console = open_in_chromium(chromium, page, tmp_path, "--dump-dom")
    state = loaded_state(dom)
    total = page.read_text(encoding="utf-8").count("<img ")
    assert state == {"figures": f"{total}/{total}", "figures-loaded": "true", "errors": "0"}
    assert console == [] and total >= 2 * 4


def test_varying_kernel_report_shows_the_kernel_across_the_image(tmp_path, requires_matplotlib):
    rng = np.random.default_rng(5)
    a = rng.random((48, 48))
    coefficients = np.zeros((3,) + KERNEL.shape)
    coefficients[0], coefficients[1] = KERNEL, 0.2 * KERNEL[::-1]
    truth = kf.VaryingKernel(coefficients, 1, frame=(48, 48), center=(1, 1))
    b = kf.convolve(a, truth, boundary="fill")
    fit = kf.estimate(a, b, KERNEL.shape, boundary="fill", center=(1, 1), variation=1)
    page = fit.report(tmp_path / "varying.html", a=a, b=b).read_text(encoding="utf-8")
    assert 'alt="kernel across the image"' in page
    # The prediction is the varying kernel's (b − residual), not the centre kernel's.
    assert "a ⊛ k(y, x), the varying kernel" in page
