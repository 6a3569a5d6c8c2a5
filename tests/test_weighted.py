"""Masked and weighted statistics and solves against the im2col reference."""

import numpy as np
import pytest

from kernelfit.core.forward import convolve
from kernelfit.solvers.weighted import WeightedNormal, matrix_free_pays, solve_weighted, solve_weighted_seconds
from kernelfit.stats.weighted import gram_of_pixels, plan_statistics, weighted_statistics
from kernelfit.stats.compute import statistics

# Every path sums the same products as im2col, some through FFTs (errors of a few ulps of
# the largest entry times log N) and some as a difference (the FFT Gram minus the dropped
# pixels: rounding of the full Gram's entries).  1e-10 relative to the largest entry leaves
# a margin of ~1e4 over what is observed (~1e-14).
RTOL = 1e-10


def _close(x, y, rtol=RTOL):
    return np.abs(np.asarray(x) - np.asarray(y)).max() <= rtol * np.abs(y).max()


def _assert_same(fast, slow):
    assert _close(fast.gram, slow.gram) and _close(fast.rhs, slow.rhs)
    assert np.isclose(fast.btb, slow.btb, rtol=RTOL)
    assert fast.n_used == slow.n_used and fast.shape == slow.shape


def _problem(seed, image=(48, 44), shape=(5, 4)):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=image)
    b = rng.normal(size=(image[0] - shape[0] + 1, image[1] - shape[1] + 1))
    return rng, P, b, shape


def _masks(rng, out_shape):
    """One weight image per kind of missing or down-weighted data."""
    Ho, Wo = out_shape
    random_nan = (rng.random(out_shape) > 0.05).astype(float)
    footprints = np.ones(out_shape)                 # a few large dropped squares (NaN in a)
    for y, x in rng.integers(0, min(Ho, Wo) - 6, size=(6, 2)):
        footprints[y:y + 6, x:x + 6] = 0.0
    hole = np.ones(out_shape)
    hole[8:30, 6:27] = 0.0
    island = np.zeros(out_shape)                    # most dropped, a kept block and scatter
    island[5:25, 10:32] = 1.0
    island[rng.random(out_shape) < 0.05] = 1.0
    irls = np.ones(out_shape)
    down = rng.random(out_shape) < 0.1
    irls[down] = rng.uniform(0.1, 1.0, down.sum())
    blocks = np.ones(out_shape)                     # constant non-1 weights on blocks, w > 1
    blocks[4:20, 3:22] = 0.5
    blocks[25:40, 20:38] = 2.0
    blocks[0, :5] = 0.0
    return {"random-nan": random_nan, "footprints": footprints, "hole": hole,
            "island": island, "irls": irls, "blocks": blocks}


@pytest.mark.parametrize("kind", ["random-nan", "footprints", "hole", "island", "irls",
                                  "blocks"])
@pytest.mark.parametrize("strategy", [None, "downdate", "direct"])
@pytest.mark.parametrize("min_rectangle", [None, 1])
def test_weighted_statistics_equal_im2col(kind, strategy, min_rectangle):
    # min_rectangle=1 makes every constant rectangle an FFT Gram, so both the rectangle and
    # the explicit-pixel code run on every mask kind.
    rng, P, b, shape = _problem(31)
    w = _masks(rng, b.shape)[kind]
    fast = weighted_statistics(P, b, shape, w, strategy=strategy, min_rectangle=min_rectangle)
    slow = statistics(P, b, shape, weights=w, method="im2col")
    _assert_same(fast, slow)


def test_rectangles_are_found_to_the_pixel():
    rng, P, b, shape = _problem(32)
    w = np.ones(b.shape)
    w[7:31, 5:29] = 0.0                      # not aligned with any tile grid
    plan = plan_statistics(w, P.shape, shape, strategy="downdate", min_rectangle=1)
    assert plan.rectangles == [(7, 31, 5, 29, 1.0)] and plan.n_explicit == 0
    _assert_same(weighted_statistics(P, b, shape, w, plan=plan),
                 statistics(P, b, shape, weights=w, method="im2col"))


def test_planner_picks_the_cheaper_side():
    w = np.ones((300, 300))
    w[::7, ::3] = 0.0                        # few dropped, scattered: subtract them
    assert plan_statistics(w, (320, 320), (21, 21)).strategy == "downdate"
    w = np.zeros((300, 300))
    w[::7, ::3] = 1.0                        # few kept: sum them
    plan = plan_statistics(w, (320, 320), (21, 21))
    assert plan.strategy == "direct" and plan.n_explicit == np.count_nonzero(w)
    assert set(plan.alternatives) == {"downdate", "direct"}
    # An image smaller than twice the kernel has no FFT Gram: always direct.
    assert plan_statistics(np.ones((3, 3)), (7, 7), (5, 5)).strategy == "direct"


def test_nan_in_b_where_the_weight_is_zero_is_ignored():
    rng, P, b, shape = _problem(33)
    w = _masks(rng, b.shape)["random-nan"]
    b_nan = np.where(w == 0, np.nan, b)
    _assert_same(weighted_statistics(P, b_nan, shape, w),
                 statistics(P, np.where(w == 0, 0.0, b), shape, weights=w, method="im2col"))


@pytest.mark.parametrize("kind", ["random-nan", "footprints", "hole", "island", "irls"])
def test_statistics_routes_large_weighted_problems_here(kind):
    # Large enough (n·p² > 3e7) for statistics() to take the weighted FFT path: 0/1 masks
    # through method='fft' (what the fits pass), general weights through method=None.
    rng = np.random.default_rng(34)
    shape = (9, 9)
    P = rng.normal(size=(100, 96))
    b = rng.normal(size=(92, 88))
    w = _masks(rng, b.shape)[kind]
    slow = statistics(P, b, shape, weights=w, method="im2col")
    _assert_same(statistics(P, b, shape, weights=w), slow)
    if kind != "irls":
        _assert_same(statistics(P, b, shape, weights=w, method="fft"), slow)


def test_gram_of_pixels_is_the_explicit_sum():
    rng, P, b, (kh, kw) = _problem(35, image=(12, 10), shape=(3, 2))
    Wo = P.shape[1] - kw + 1
    pixels = np.array([0, 3, 17, 40, 41, 77])
    coef = np.array([1.0, -0.5, 2.0, 0.0, 0.25, -3.0])
    X = np.array([P[i // Wo:i // Wo + kh, i % Wo:i % Wo + kw].ravel() for i in pixels])
    assert _close(gram_of_pixels(P, (kh, kw), pixels), X.T @ X)
    assert _close(gram_of_pixels(P, (kh, kw), pixels, coef), X.T @ (coef[:, None] * X))
    assert _close(gram_of_pixels(P, (kh, kw), pixels, 0.5), 0.5 * X.T @ X)
    assert np.all(gram_of_pixels(P, (kh, kw), pixels[:0]) == 0)


def test_weighted_normal_is_the_weighted_gram():
    rng, P, b, shape = _problem(36)
    w = _masks(rng, b.shape)["irls"]
    op = WeightedNormal(P, shape, w)
    s = statistics(P, b, shape, weights=w, method="im2col")
    k = rng.normal(size=shape)
    assert _close(op(k).ravel(), s.gram @ k.ravel(), 1e-12)
    r = rng.normal(size=b.shape)                          # dot test of forward/adjoint
    assert np.isclose(np.vdot(op.forward(k), r), np.vdot(k, op.adjoint(r)), rtol=1e-12)
    assert _close(op.adjoint(w * b).ravel(), s.rhs, 1e-12)


def _exact_kernel(P, b, shape, w):
    s = statistics(P, b, shape, weights=w, method="im2col")
    return np.linalg.solve(s.gram, s.rhs).reshape(shape), s


@pytest.mark.parametrize("preconditioner,sample_size",
                         [("sketch", 400), ("sketch", None), ("gram", None),
                          ("exact", None), ("auto", None)])
@pytest.mark.parametrize("kind", ["footprints", "irls", "island"])
def test_solve_weighted_reaches_the_exact_solution(preconditioner, sample_size, kind):
    rng = np.random.default_rng(37)
    shape = (5, 5)
    a = rng.random((70, 66))
    b = convolve(a, rng.random(shape), mode="valid") + 0.01 * rng.normal(size=(66, 62))
    w = _masks(rng, b.shape)[kind]
    exact, s = _exact_kernel(a, b, shape, w)
    sol = solve_weighted(a, b, shape, w, preconditioner=preconditioner,
                         sample_size=sample_size)
    # tol=1e-12 on the preconditioned residual: the kernel is within ~1e-11 of the exact
    # solution (the Gram's condition number here is ~1e2); 1e-9 leaves room.
    assert sol.converged, sol.message
    assert np.linalg.norm(sol.kernel - exact) <= 1e-9 * np.linalg.norm(exact)
    assert _close(sol.rhs.ravel(), s.rhs, 1e-12) and np.isclose(sol.btb, s.btb)
    assert sol.n_used == s.n_used
    if preconditioner == "sketch" and sample_size == 400:
        assert sol.gram_estimate_kind == "sketch" and sol.sample_size == 400
        assert sol.iterations > 1


def test_solve_weighted_several_pairs_and_warm_start():
    rng = np.random.default_rng(38)
    shape = (4, 5)
    k = rng.random(shape)
    Ps = [rng.random((50, 60)), rng.random((40, 44))]
    bs = [convolve(P, k, mode="valid") + 0.01 * rng.normal(size=(P.shape[0] - 3,
                                                                 P.shape[1] - 4))
          for P in Ps]
    ws = [_masks(rng, b.shape)["footprints"] if i == 0 else (rng.random(b.shape) > 0.3) * 1.0
          for i, b in enumerate(bs)]
    stats = [statistics(P, b, shape, weights=w, method="im2col") for P, b, w in zip(Ps, bs, ws)]
    total = sum(stats)
    exact = np.linalg.solve(total.gram, total.rhs).reshape(shape)
    sol = solve_weighted(Ps, bs, shape, ws, sample_size=300)
    assert sol.converged and sol.n_used == total.n_used
    assert np.linalg.norm(sol.kernel - exact) <= 1e-9 * np.linalg.norm(exact)
    warm = solve_weighted(Ps, bs, shape, ws, sample_size=300, x0=sol.kernel)
    assert warm.iterations <= 2
    assert np.linalg.norm(warm.kernel - exact) <= 1e-9 * np.linalg.norm(exact)


def test_sketch_covariance_is_close_to_the_exact_one():
    rng = np.random.default_rng(39)
    shape = (3, 3)
    P = rng.random((160, 160))
    b = rng.normal(size=(158, 158))
    w = (rng.random(b.shape) > 0.5).astype(float)
    _, s = _exact_kernel(P, b, shape, w)
    sol = solve_weighted(P, b, shape, w, preconditioner="sketch", sample_size=6000)
    ratio = np.diag(sol.covariance_unscaled()) / np.diag(np.linalg.inv(s.gram))
    # A 6000-pixel sample of ~12,500: the diagonal of the inverse is within a few per cent
    # (its relative spread is about √(2/s)·√(1 − s/n) ≈ 1.3 %).
    assert np.all(np.abs(ratio - 1) < 0.08)


def test_not_converged_is_reported():
    rng, P, b, shape = _problem(40)
    w = _masks(rng, b.shape)["footprints"]
    sol = solve_weighted(P, b, shape, w, preconditioner="gram", maxiter=1, tol=1e-15)
    assert not sol.converged and sol.iterations == 1
    assert "stopped after 1 iterations" in sol.message


def test_zero_right_hand_side_gives_zero_kernel():
    rng, P, b, shape = _problem(41)
    sol = solve_weighted(P, np.zeros_like(b), shape, np.ones_like(b))
    assert sol.converged and sol.iterations == 0 and np.all(sol.kernel == 0)


def test_cost_model_helpers():
    w = np.ones((2028, 2028))
    w[::3, ::2] = 0.0
    assert solve_weighted_seconds(w, (2048, 2048), (21, 21)) > 0
    assert isinstance(matrix_free_pays(w, (2048, 2048), (21, 21)), bool)
    assert not matrix_free_pays(np.ones((92, 92)), (100, 100), (9, 9))


def test_errors():
    rng, P, b, shape = _problem(42)
    w = np.ones_like(b)
    with pytest.raises(ValueError, match="weights has shape"):
        weighted_statistics(P, b, shape, w[:-1])
    with pytest.raises(ValueError, match="finite and non-negative"):
        weighted_statistics(P, b, shape, -w)
    with pytest.raises(ValueError, match="finite and non-negative"):
        weighted_statistics(P, b, shape, np.where(w > 0, np.nan, 0.0))
    with pytest.raises(ValueError, match="b_used has shape"):
        weighted_statistics(P, b[:-1], shape, w[:-1])
    with pytest.raises(ValueError, match="strategy='magic'"):
        plan_statistics(w, P.shape, shape, strategy="magic")
    with pytest.raises(ValueError, match="twice the kernel"):
        plan_statistics(np.ones((3, 3)), (7, 7), (5, 5), strategy="downdate")
    with pytest.raises(ValueError, match="preconditioner='magic'"):
        solve_weighted(P, b, shape, w, preconditioner="magic")
    with pytest.raises(ValueError, match="tol="):
        solve_weighted(P, b, shape, w, tol=0.0)
    with pytest.raises(ValueError, match="maxiter="):
        solve_weighted(P, b, shape, w, maxiter=0)
    with pytest.raises(ValueError, match="every weight is 0"):
        solve_weighted(P, b, shape, 0 * w)
    with pytest.raises(ValueError, match="same non-zero length"):
        solve_weighted([P, P], [b], shape, [w, w])
    with pytest.raises(ValueError, match=r"b_used\[0\] has shape"):
        solve_weighted(P, b[:, :-1], shape, w[:, :-1])
    with pytest.raises(ValueError, match="twice the kernel"):
        solve_weighted(np.ones((7, 7)), np.ones((3, 3)), (5, 5), np.ones((3, 3)),
                       preconditioner="gram")


def test_estimate_takes_the_matrix_free_route_for_scattered_nan_in_a(monkeypatch):
    """Where the cost model prefers it (large images with NaN in a; forced here on a small
    one), kf.estimate solves by weighted CG: the same kernel as the exact statistics to the
    CG tolerance (1e-12 → ~1e-10 relative), standard errors from a pixel sample within a few
    % (the sample holds every used pixel here, so the Gram is exact: 1e-8)."""
    import kernelfit as kf
    from kernelfit.fit import free

    rng = np.random.default_rng(11)
    a = rng.random((90, 90))
    k = rng.random((5, 5))
    b = kf.convolve(a, k, mode="valid") + 0.01 * rng.standard_normal((86, 86))
    a[rng.random(a.shape) < 0.01] = np.nan
    exact = kf.estimate(a, b, 5)
    monkeypatch.setattr(free, "_masks_favour_matrix_free", lambda pairs, shape: True)
    fast = kf.estimate(a, b, 5)
    assert exact.method == "normal" and fast.method == "weighted-cg" and fast.converged
    np.testing.assert_allclose(fast.kernel, exact.kernel, rtol=0, atol=1e-10 * np.abs(k).max())
    np.testing.assert_allclose(fast.stderr, exact.stderr, rtol=1e-8)
    assert fast.n_used == exact.n_used
    np.testing.assert_array_equal(fast.info["used"], exact.info["used"])
