"""A polynomial background on the matrix-free path (solvers/projected.py, fit_free_iterative).

The operator projects the background directions out of its range; these tests check that it
is still an exact adjoint pair, that noise-free data give the kernel and the background back,
and that with ``'tv'`` or ``nonneg`` the background changes nothing but ``fit.background``.
"""

import numpy as np
import pytest

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.fit.free import MAX_DIRECT_UNKNOWNS
from kernelfit.solvers.projected import ProjectedOperator
from kernelfit.stats.background import BackgroundBasis, n_terms

rng = np.random.default_rng(20260611)
A = rng.random((120, 120))
SHAPE = (55, 55)                                     # above the direct path's 51×51
_y, _x = np.mgrid[-27:28, -27:28]
SMOOTH = np.exp(-(_x ** 2 + _y ** 2) / (2 * 6.0 ** 2))
SMOOTH /= SMOOTH.sum()
B_CLEAN = kf.convolve(A, SMOOTH, boundary="fill")


def relative(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def plane(shape, beta):
    """The background ``Σ β_t T_t`` of degree fitting ``len(beta)`` over ``shape``."""
    degree = {1: 0, 3: 1, 6: 2}[len(beta)]
    return BackgroundBasis(shape, degree).evaluate(beta)


def masked_operator(degree):
    a, b = rng.random((30, 34)), rng.random((30, 34))
    mask = rng.random(b.shape) > 0.2
    pair = prepare_pair(a, b, (5, 6), boundary="fill", mask=mask)
    return ProjectedOperator([pair, prepare_pair(b, a, (5, 6), boundary="fill")], (5, 6),
                             degree), pair


@pytest.mark.parametrize("degree", [0, 2])
def test_projected_operator_is_an_exact_adjoint_pair(degree):
    op, pair = masked_operator(degree)
    k = rng.normal(size=(5, 6))
    rs = [rng.normal(size=s) for s in op.used_shapes]
    # Dot test: <MXk, r> = <k, XᵀMr>, to rounding of sums of ~1000 terms (1e-12 relative).
    lhs = sum(np.vdot(y, r) for y, r in zip(op.forward(k), rs))
    assert lhs == pytest.approx(np.vdot(k, op.adjoint(rs)), rel=1e-12)
    # M is idempotent: XᵀM(MXk) = XᵀMXk = normal(k); and the stack form agrees.
    assert np.allclose(op.adjoint(op.forward(k)), op.normal(k), rtol=1e-12, atol=1e-12)
    assert np.allclose(op.normal(np.stack([k, 2 * k]))[1], 2 * op.normal(k), rtol=1e-12)
    # The diagonal of XᵀMX from the correlations equals e_jᵀ XᵀMX e_j.
    units = np.eye(30).reshape(30, 5, 6)
    exact = np.array([np.vdot(e, op.normal(e)) for e in units]).reshape(5, 6)
    assert np.allclose(op.diagonal(), exact, rtol=1e-10, atol=1e-12)
    # The background directions are annihilated; unused pixels stay 0.
    T = BackgroundBasis(op.used_shapes[0], degree).images
    forward_of_t = op.adjoint([T[-1], np.zeros(op.used_shapes[1])])
    assert np.abs(forward_of_t).max() <= 1e-10 * np.abs(op.adjoint(rs)).max()
    assert np.all(op.forward(k)[0][~pair.use] == 0.0)
    assert op.n_pixels - op.n_used == 2 * n_terms(degree)


@pytest.mark.parametrize("degree", [0, 1])
def test_noise_free_recovery_of_kernel_and_background(degree):
    assert SHAPE[0] * SHAPE[1] > MAX_DIRECT_UNKNOWNS
    k = rng.random(SHAPE)
    beta = [2.0, 0.5, -0.3][:n_terms(degree)]
    b = kf.convolve(A, k, boundary="fill") + plane(A.shape, beta)
    fit = kf.estimate(A, b, SHAPE, boundary="fill", method="iterative", background=degree,
                      tol=1e-10, maxiter=5000)
    assert fit.method == "iterative" and fit.converged, fit.message
    # Noise-free: CG stops at a relative residual of 1e-10, which leaves a kernel error of at
    # most cond(XᵀMX)·1e-10; measured ~4e-8 for this random image, so 1e-6 has room.
    assert relative(fit.kernel, k) <= 1e-6
    assert np.allclose(fit.background, beta, rtol=1e-6, atol=1e-6)
    assert fit.info["background"]["degree"] == degree
    assert len(fit.info["background"]["names"]) == n_terms(degree)
    # The residual has the background subtracted: what is left is the solver's rounding.
    assert np.nanmax(np.abs(fit.residual)) <= 1e-6 * np.abs(b).max()
    assert fit.n_used == A.size


@pytest.mark.parametrize("options", [dict(reg="tv", lam=1e-6), dict(nonneg=True)])
def test_background_leaves_the_regularised_kernel_unchanged(options):
    beta = [2.0, 0.5, -0.3]
    common = dict(boundary="fill", method="iterative", background=1, tol=1e-8, maxiter=5000,
                  **options)
    with_bg = kf.estimate(A, B_CLEAN + plane(A.shape, beta), SHAPE, **common)
    without = kf.estimate(A, B_CLEAN, SHAPE, **common)
    assert with_bg.converged and with_bg.info["solver"] == "fista", with_bg.message
    # Adding a background of the fitted degree leaves M b unchanged, so both fits solve one
    # problem from one start: they differ by rounding only (measured ~3e-13).
    assert relative(with_bg.kernel, without.kernel) <= 1e-9
    assert np.allclose(with_bg.background, np.asarray(without.background) + beta, atol=1e-9)
    # Against the truth, the background costs little accuracy: the kernel is about as good
    # as the same fit of the background-free b with no background modelled (measured
    # 6.6e-4 against 5.3e-4 for 'tv': the projection removes 3 of 14,400 data directions,
    # and both stop at tol=1e-8 with the regulariser's bias).  A factor 2 leaves room for
    # that; a background leaking into the kernel would cost orders of magnitude.
    plain = {key: value for key, value in common.items() if key != "background"}
    reference = kf.estimate(A, B_CLEAN, SHAPE, **plain)
    assert relative(with_bg.kernel, reference.kernel) <= 1e-2
    assert relative(with_bg.kernel, SMOOTH) <= 2.0 * relative(reference.kernel, SMOOTH)
    assert np.allclose(with_bg.background, beta, atol=1e-3)
    if options.get("nonneg"):
        assert with_bg.kernel.min() >= 0.0


def test_noise_level_counts_the_background_terms():
    # Unregularised: σ̂² = RSS/(n − m − p), with RSS after the background, as on the direct
    # path; matrix-free to 1e-11 and direct agree to the solver's accuracy.
    a = rng.random((40, 44))
    b = kf.convolve(a, SMOOTH[20:35, 20:34], boundary="fill") + plane(a.shape, [1.0, 0.2, 0.1])
    b = b + 0.01 * rng.normal(size=b.shape)
    direct = kf.estimate(a, b, (15, 14), boundary="fill", method="normal", background=1)
    free = kf.estimate(a, b, (15, 14), boundary="fill", method="iterative", background=1,
                       tol=1e-11, maxiter=5000)
    assert relative(free.kernel, direct.kernel) <= 1e-6
    assert free.noise_std == pytest.approx(direct.noise_std, rel=1e-6)
    assert np.allclose(free.background, direct.background, rtol=1e-6, atol=1e-8)
    assert free.info["background"]["names"] == direct.info["background"]["names"]
