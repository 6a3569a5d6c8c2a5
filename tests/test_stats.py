"""Sufficient statistics: the fast FFT path against explicit footprints (im2col)."""

import numpy as np
import pytest

from kernelfit.stats.gram import SufficientStatistics, gram_fft
from kernelfit.stats.compute import statistics

# The FFT path sums the same products as im2col but through transforms: its error is a few
# ulps of the largest entry times log(N); 1e-12 relative to the largest entry is ample.
RTOL = 1e-12

CASES = [((20, 17), (3, 4)), ((30, 30), (5, 5)), ((13, 11), (1, 1)), ((25, 31), (6, 2)),
         ((40, 40), (7, 9)), ((9, 9), (5, 5)), ((16, 33), (8, 8)), ((7, 40), (1, 6))]


def _close(x, y):
    return np.abs(x - y).max() <= RTOL * np.abs(y).max()


@pytest.mark.parametrize("image_shape,shape", CASES)
def test_fft_equals_im2col(image_shape, shape):
    rng = np.random.default_rng(21)
    P = rng.normal(size=image_shape)
    b = rng.normal(size=(image_shape[0] - shape[0] + 1, image_shape[1] - shape[1] + 1))
    fast = statistics(P, b, shape, method="fft")
    slow = statistics(P, b, shape, method="im2col")
    assert _close(fast.gram, slow.gram) and _close(fast.rhs, slow.rhs)
    assert np.isclose(fast.btb, slow.btb, rtol=1e-13) and fast.n_used == slow.n_used


@pytest.mark.parametrize("image_shape,shape", CASES[:4])
def test_masked_fft_equals_im2col(image_shape, shape):
    rng = np.random.default_rng(22)
    P = rng.normal(size=image_shape)
    b = rng.normal(size=(image_shape[0] - shape[0] + 1, image_shape[1] - shape[1] + 1))
    w = (rng.random(b.shape) > 0.3).astype(float)
    fast = statistics(P, b, shape, weights=w, method="fft")
    slow = statistics(P, b, shape, weights=w, method="im2col")
    assert _close(fast.gram, slow.gram) and _close(fast.rhs, slow.rhs)
    assert fast.n_used == slow.n_used == int(w.sum())


def test_gram_is_the_explicit_sum():
    # Definition check on a tiny case, in the flipped-kernel order gram_fft documents.
    rng = np.random.default_rng(23)
    P, (kh, kw) = rng.normal(size=(7, 6)), (3, 2)
    Ho, Wo = 5, 5
    X = np.array([[P[i + uy, j + ux] for uy in range(kh) for ux in range(kw)]
                  for i in range(Ho) for j in range(Wo)])
    assert _close(gram_fft(P, (kh, kw)), X.T @ X)


def test_weighted_statistics_match_weighted_normal_equations():
    rng = np.random.default_rng(24)
    P, b = rng.normal(size=(12, 12)), rng.normal(size=(10, 10))
    w = rng.random(b.shape)
    s = statistics(P, b, (3, 3), weights=w)
    X = np.array([P[i:i + 3, j:j + 3][::-1, ::-1].ravel() for i in range(10) for j in range(10)])
    assert _close(s.gram, X.T @ (w.ravel()[:, None] * X))
    assert _close(s.rhs, X.T @ (w.ravel() * b.ravel()))


def test_statistics_add_across_tiles():
    # Splitting b into two row blocks (with their footprints) and adding gives the whole.
    rng = np.random.default_rng(25)
    P = rng.normal(size=(40, 30))
    b = rng.normal(size=(36, 26))
    whole = statistics(P, b, (5, 5))
    top = statistics(P[:24], b[:20], (5, 5))
    bottom = statistics(P[20:], b[20:], (5, 5))
    total = sum([top, bottom])
    assert _close(total.gram, whole.gram) and _close(total.rhs, whole.rhs)
    assert total.n_used == whole.n_used


def test_statistics_errors():
    s = SufficientStatistics(np.eye(4), np.zeros(4), 0.0, 1, (2, 2))
    t = SufficientStatistics(np.eye(9), np.zeros(9), 0.0, 1, (3, 3))
    with pytest.raises(ValueError, match="kernel shapes"):
        s + t
    P = np.ones((5, 5))
    with pytest.raises(ValueError, match="b_used has shape"):
        statistics(P, np.ones((2, 2)), (3, 3))
    with pytest.raises(ValueError, match="method='magic'"):
        statistics(P, np.ones((3, 3)), (3, 3), method="magic")
    with pytest.raises(ValueError, match="at least twice the kernel"):
        statistics(P, np.ones((1, 1)), (5, 5), method="fft")
    with pytest.raises(ValueError, match="only 0/1 weights"):
        statistics(P, np.ones((3, 3)), (3, 3), weights=np.full((3, 3), 0.5), method="fft")


@pytest.mark.parametrize("shape", [(5, 5), (4, 7)])
def test_tiled_fft_statistics_equal_the_whole_image(monkeypatch, shape):
    """Large images sum their statistics over tiles (with kernel-sized halos); shrinking the
    thresholds makes a small image tile: the sums equal the whole-image statistics to
    rounding (1e-12 of the Gram's largest entry)."""
    from kernelfit.core import tiling
    from kernelfit.stats import compute as stats_module

    rng = np.random.default_rng(8)
    P = rng.random((150, 131))
    b = rng.random((150 - shape[0] + 1, 131 - shape[1] + 1))
    whole = statistics(P, b, shape, method="fft")
    monkeypatch.setattr(tiling, "TILED_ABOVE", 1000)
    monkeypatch.setattr(tiling, "STATISTICS_TILE", 40)
    # This image is small enough for im2col: make the FFT path the automatic choice.
    monkeypatch.setattr(stats_module, "choose_method", lambda *args: "fft")
    calls = []
    original = stats_module._tiled_statistics
    monkeypatch.setattr(stats_module, "_tiled_statistics",
                        lambda *args: calls.append(1) or original(*args))
    tiled = statistics(P, b, shape)
    assert calls and stats_module.tiles_pay(P.shape, shape)
    scale = np.abs(whole.gram).max()
    np.testing.assert_allclose(tiled.gram, whole.gram, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(tiled.rhs, whole.rhs, rtol=0, atol=1e-12 * scale)
    assert tiled.btb == pytest.approx(whole.btb, rel=1e-12) and tiled.n_used == whole.n_used
