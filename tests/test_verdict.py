"""The fit's verdict (kernelfit.fit.verdict): fits wrong on purpose are never 'ok', the CLI's
exit status says so, and sound fits stay 'ok'."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import kernelfit as kf
from kernelfit import cli
from kernelfit.fit.verdict import STRUCTURE_LIMIT, Verdict, chi2_tolerance

K = np.outer([1, 2, 1], [1, 2, 1]) / 16.0


def _photo(seed, n=128):
    """A textured image with the smooth structure of a photo (white noise blurred a little)."""
    return gaussian_filter(np.random.default_rng(seed).random((n, n)), 1.0)


def _sound(seed=0, n=128, noise=1e-3):
    a = _photo(seed, n)
    b = kf.convolve(a, K, mode="valid")
    return a, b + noise * np.random.default_rng(seed + 100).normal(size=b.shape)


def _unrelated(n=128):
    """b from another image: its kernel is meaningless."""
    return _photo(1, n), kf.convolve(_photo(2, n), K, mode="valid")


def _outliers(fraction=0.05, n=128):
    a, b = _sound(3, n)
    rng = np.random.default_rng(4)
    hit = rng.random(b.shape) < fraction
    return a, np.where(hit, b + rng.choice([-1.0, 1.0], b.shape), b)


# ------------------------------------------------------------------- the API

def test_a_sound_fit_is_ok():
    fit = kf.estimate(*_sound(), 3)
    assert fit.verdict.level == "ok" and fit.verdict.reasons == ()
    # The residual is white noise: its lag-1 autocorrelation is ~±1/√n, far below the limit.
    assert fit.verdict.checks["structure"] < 0.1 < STRUCTURE_LIMIT
    assert fit.verdict.exit_code == 0


def test_an_exact_fit_is_ok():
    a, b = _sound(noise=0.0)
    fit = kf.estimate(a, b, 3)
    assert fit.verdict.level == "ok"
    assert "exact fit" in fit.verdict.checks["skipped"]


def test_unrelated_images_are_doubtful():
    fit = kf.estimate(*_unrelated(), 3)
    assert fit.converged   # the solver is happy ...
    assert fit.verdict.level == "doubtful"   # ... the residual is not
    assert "residual has structure" in fit.verdict.reasons[0]
    assert fit.verdict.checks["structure"] > STRUCTURE_LIMIT
    assert fit.verdict.exit_code == 3
    assert "status: doubtful" in fit.summary()


def test_a_constant_pair_fails():
    a = np.ones((32, 32))
    with pytest.warns(kf.RankDeficientWarning):
        fit = kf.estimate(a, np.full((30, 30), 2.0), 3)
    assert fit.verdict.level == "failed" and fit.verdict.exit_code == 4
    assert "status: failed" in fit.summary()


@pytest.mark.filterwarnings("ignore::kernelfit.IdentifiabilityWarning")   # outliers' noise
def test_outliers_make_least_squares_doubtful_not_huber():
    a, b = _outliers()
    plain = kf.estimate(a, b, 3)
    assert plain.verdict.level == "doubtful"
    assert any("loss='huber'" in reason for reason in plain.verdict.reasons)
    # 5 % of pixels hit, against 6e-7 expected beyond 5σ for Gaussian noise.
    assert plain.verdict.checks["tail_fraction"] > 0.03
    robust = kf.estimate(a, b, 3, loss="huber")
    assert robust.verdict.level == "ok", robust.verdict


def test_noise_std_given_is_checked_by_reduced_chi2():
    a, b = _sound(noise=1e-2)
    right = kf.estimate(a, b, 3, noise_std=1e-2)
    assert right.verdict.level == "ok"
    # 126² pixels: the reduced χ² has a standard deviation of √(2/15867) ≈ 0.011.
    assert right.verdict.checks["reduced_chi2"] == pytest.approx(1.0, abs=0.05)
    wrong = kf.estimate(a, b, 3, noise_std=3e-3)   # b's noise is 3.3× that
    assert wrong.verdict.level == "doubtful"
    assert "reduced chi-square" in wrong.verdict.reasons[0]


def test_the_images_barely_determining_the_kernel_is_doubtful():
    """A smooth a leaves half of a 5×5 kernel's frequencies to the noise: the identifiability
    warning's case (the example of kernelfit.core.diagnostics.annotate)."""
    a = gaussian_filter(np.random.default_rng(0).random((64, 64)), 1.5)
    b = kf.convolve(a, np.full((5, 5), 1 / 25), mode="valid")
    b = b + 0.01 * np.random.default_rng(1).normal(size=b.shape)
    with pytest.warns(kf.IdentifiabilityWarning):
        fit = kf.estimate(a, b, 5)
    assert fit.verdict.level == "doubtful"
    assert "barely determine" in fit.verdict.reasons[0]


def test_the_verdict_is_in_the_json_and_the_report_banner():
    fit = kf.estimate(*_unrelated(), 3)
    record = json.loads(json.dumps(fit.to_dict()))
    assert record["verdict"]["level"] == "doubtful"
    assert record["verdict"]["reasons"] == list(fit.verdict.reasons)
    from kernelfit.report.sections import status_banner

    assert 'class="status doubtful"' in status_banner(fit)


def test_channel_fits_take_the_worst_channel():
    a1, b1 = _sound()
    a2, b2 = _unrelated()
    fits = kf.estimate(np.stack([a1, a2], -1), np.stack([b1, b2], -1), 3, channel_axis=-1)
    assert fits.verdict.level == "doubtful"
    assert fits.verdict.reasons[0].startswith("channel 1: ")


def test_verdict_helpers():
    assert str(Verdict("ok")) == "ok"
    assert str(Verdict("failed", ("a", "b"))) == "failed: a; b"
    assert chi2_tolerance(10.0) == pytest.approx(5 * np.sqrt(0.2))
    assert chi2_tolerance(1e9) == 0.25


# ------------------------------------------------------------------- the CLI

def _files(tmp_path, a, b, suffix=".npy"):
    paths = []
    for name, image in (("a", a), ("b", b)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".fits":
            from astropy.io import fits

            fits.writeto(path, image)
        else:
            np.save(path, image)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("case, expected, strict", [
    ("sound", 0, 0), ("unrelated", 3, 4), ("constant", 4, 4), ("outliers", 3, 4)])
def test_cli_exit_status_says_the_verdict(tmp_path, capsys, case, expected, strict):
    a, b = {"sound": _sound, "unrelated": _unrelated, "outliers": _outliers,
            "constant": lambda: (np.ones((32, 32)), np.full((30, 30), 2.0))}[case]()
    # The outlier-dominated pair comes as FITS files, as an astronomer's would.
    paths = _files(tmp_path, a, b, ".fits" if case == "outliers" else ".npy")
    out = tmp_path / "k.npy"
    assert cli.main(["estimate", *paths, "--shape", "3", "-o", str(out), "--quiet"]) == expected
    err = capsys.readouterr().err
    assert out.exists()   # the outputs are written for inspection whatever the verdict
    if expected:
        assert "kernelfit: fit " in err
    out.unlink()
    assert cli.main(["estimate", *paths, "--shape", "3", "-o", str(out), "--quiet",
                     "--strict"]) == strict
