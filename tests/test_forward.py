"""The kernel operator and its adjoint."""

import numpy as np
import scipy.signal
import pytest

import kernelfit as kf
from kernelfit import KernelOperator


@pytest.mark.parametrize("boundary", ["valid", "fill", "wrap", "reflect", "nearest", "mirror"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (5, 4)])
@pytest.mark.parametrize("output_size", ["same", "full", "valid"])
def test_dot_test(boundary, shape, output_size):
    rng = np.random.default_rng(11)
    op = KernelOperator(rng.random((17, 21)), shape, boundary=boundary, output_size=output_size)
    k = rng.normal(size=shape)
    r = rng.normal(size=op.geometry.used_shape)
    lhs = np.vdot(op.forward(k), r)
    rhs = np.vdot(k, op.adjoint(r))
    # Both sides are the same sum of ~N·p products taken in different orders: 1e-12 relative.
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs))


def test_forward_equals_convolve_on_the_used_rectangle():
    rng = np.random.default_rng(12)
    a, k = rng.random((15, 15)), rng.random((3, 4))
    op = KernelOperator(a, k.shape, boundary="valid")
    full = kf.convolve(a, k, boundary="fill")
    np.testing.assert_allclose(op.forward(k), full[op.geometry.used], rtol=1e-13)


def test_kernel_larger_than_image_operator():
    rng = np.random.default_rng(13)
    op = KernelOperator(rng.random((8, 8)), (15, 15), boundary="fill")
    k, r = rng.normal(size=(15, 15)), rng.normal(size=(8, 8))
    assert np.isclose(np.vdot(op.forward(k), r), np.vdot(k, op.adjoint(r)), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 7), (9, 2)])
def test_large_valid_convolutions_go_tile_by_tile_exactly(monkeypatch, shape):
    """Above tiling.TILED_ABOVE output pixels the convolution is computed in CONVOLUTION_TILE²
    blocks; shrunk thresholds make a small image take that path: the same result as
    scipy.signal.convolve to FFT rounding (1e-13 of the largest output)."""
    from kernelfit.core import forward, tiling

    rng = np.random.default_rng(4)
    P, k = rng.random((61, 53)), rng.random(shape)
    monkeypatch.setattr(tiling, "TILED_ABOVE", 100)
    monkeypatch.setattr(tiling, "CONVOLUTION_TILE", 16)
    out = forward.convolve_extended(P, k)
    expected = scipy.signal.convolve(P, k, mode="valid", method="direct")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
