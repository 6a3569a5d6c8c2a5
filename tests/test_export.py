"""Kernels as other tools apply them (kernelfit.fit.export)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import kernelfit as kf
from kernelfit.fit.export import integer_matrix, kernel_for


@pytest.fixture
def asymmetric_fit():
    rng = np.random.default_rng(0)
    a = rng.random((40, 40))
    k = np.array([[0, 1, 0], [2, 5, 1], [0, 3, 0]]) / 12
    return a, kf.estimate(a, kf.convolve(a, k, boundary="nearest"), 3, boundary="nearest"), k


def test_correlating_tools_get_the_kernel_rotated(asymmetric_fit):
    """scipy.ndimage.correlate stands for Pillow, OpenCV and torch (all correlate): with the
    exported kernel it reproduces what the fitted kernel does by convolution."""
    a, fit, _ = asymmetric_fit
    expected = ndimage.convolve(a, fit.kernel, mode="nearest")
    for tool in ("pillow", "opencv", "torch"):
        got = ndimage.correlate(a, fit.kernel_for(tool), mode="nearest")
        np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_array_equal(fit.kernel_for("scipy"), fit.kernel)


def test_kernel_for_refuses_unknown_tools():
    with pytest.raises(ValueError, match=r"tool='gimp': expected one of 'scipy', 'pillow'"):
        kernel_for(np.eye(3), "gimp")


def test_integer_matrix_recovers_the_editor_matrix(asymmetric_fit):
    _, fit, _ = asymmetric_fit
    matrix = fit.as_integer_matrix()
    assert matrix.divisor == 12
    assert matrix.matrix.tolist() == [[0, 1, 0], [2, 5, 1], [0, 3, 0]]
    rotated = fit.as_integer_matrix(orientation="correlation")
    assert rotated.matrix.tolist() == [[0, 3, 0], [1, 5, 2], [0, 1, 0]]
    assert "divisor: 12" in str(matrix)


def test_integer_matrix_offset_from_a_constant_background():
    rng = np.random.default_rng(1)
    a = rng.random((48, 48))
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    fit = kf.estimate(a, kf.convolve(a, k, mode="valid") + 10.0, 3, background=0)
    matrix = fit.as_integer_matrix()
    assert matrix.divisor == 16 and matrix.offset == pytest.approx(10.0)


def test_integer_matrix_without_a_close_divisor_returns_the_best_one():
    m = integer_matrix(np.array([[np.pi, 1.0]]), tolerance=1e-12, max_divisor=10)
    assert m.divisor == 7 and m.matrix.tolist() == [[22, 7]]   # 22/7, the best below 10


def test_integer_matrix_errors():
    with pytest.raises(ValueError, match="finite 2-D array"):
        integer_matrix(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="orientation='upside'"):
        kf.estimate(np.random.default_rng(2).random((20, 20)), np.ones((18, 18)), 3,
                    background=None).as_integer_matrix(orientation="upside")


def test_cli_as_matrix_and_orientation(tmp_path, capsys):
    """Seed 001's question: the integer matrix (and divisor) an editor applied, printed by
    --as-matrix; --orientation correlation writes the kernel as editors apply it."""
    from kernelfit import cli

    rng = np.random.default_rng(3)
    a = rng.random((40, 40))
    k = np.array([[0, 1, 0], [2, 5, 1], [0, 3, 0]]) / 12
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", kf.convolve(a, k, mode="valid"))
    out = tmp_path / "k.npy"
    argv = ["estimate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--shape", "3",
            "-o", str(out), "--as-matrix", "--orientation", "correlation"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "integer matrix (correlation orientation):" in text
    assert "0 3 0\n1 5 2\n0 1 0\ndivisor: 12" in text
    np.testing.assert_allclose(np.load(out), k[::-1, ::-1], atol=1e-10)
