"""Structured models: radial, power law, separable and low rank.

Exact recovery on noise-free data, the FFT-column path against the statistics path, honest
standard errors, every error path, and seed 000 (a 199×199 1/r kernel on a 100×100 binary
image) against its acceptance targets.
"""

import time
import warnings

import numpy as np
import pytest
from scipy.signal import oaconvolve

from kernelfit.core.design import prepare_pair
from kernelfit.core.forward import convolve
from kernelfit.models import factored
from kernelfit.models.factored import fit_lowrank, fit_separable
from kernelfit.models.powerlaw import fit_powerlaw, powerlaw_kernel
from kernelfit.models.radial import fit_radial, radial_kernel, radial_knots
from kernelfit.core.diagnostics import RankDeficientWarning
from kernelfit.stats.compute import statistics

# Noise-free data.  Direct solves (radial, power law after Gauss–Newton) err only by rounding
# amplified by the small problem's condition number: measured ≤ 2e-13.  Alternating least
# squares from a random start stops when an iteration changes the kernel by ≤ 1e-10 and
# converges linearly, so its error is that change times rate/(1 − rate): measured ≤ 2e-10,
# and a slow rate of 0.999 would still stay below 1e-7.  1e-6 therefore flags any real error.
EXACT = 1e-6


def _rel_err(estimate, truth):
    return np.linalg.norm(estimate - truth) / np.linalg.norm(truth)


def _pair(a, kernel, *, boundary, center=None, sigma=0.0, rng=None, mask=None):
    shape = kernel.shape
    mode = "valid" if boundary == "valid" else "same"
    b = convolve(a, kernel, boundary="fill" if boundary == "valid" else boundary,
                 center=center, mode=mode)
    if sigma:
        b = b + rng.normal(0.0, sigma, b.shape)
    return prepare_pair(a, b, shape, boundary=boundary, center=center, mask=mask)


# Cases: (kernel shape, boundary, centre).  The (6, 6) case is even-sized with scipy.ndimage's
# centre, so the radius is measured from (3, 3), not the array's middle.
CASES = [((9, 9), "fill", None), ((9, 9), "valid", None), ((6, 6), "fill", (3, 3)),
         ((7, 11), "valid", None)]


# -- radial ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,boundary,center", CASES)
def test_radial_exact_recovery_on_default_knots(shape, boundary, center):
    rng = np.random.default_rng(101)
    a = rng.random((48, 45))
    cy, cx = center or ((shape[0] - 1) // 2, (shape[1] - 1) // 2)
    knots = radial_knots(shape, (cy, cx))
    profile = np.exp(-knots / 2.0) + rng.normal(0, 0.1, knots.size)  # any values will do
    truth = radial_kernel(knots, profile, shape, (cy, cx))
    fit = fit_radial([_pair(a, truth, boundary=boundary, center=center)], shape, center)
    assert _rel_err(fit.kernel, truth) <= EXACT
    np.testing.assert_allclose(fit.params["profile"], profile, atol=EXACT * np.abs(profile).max())
    np.testing.assert_array_equal(fit.params["radii"], knots)
    assert fit.converged and fit.message == "" and fit.method == "statistics"
    assert fit.center == (cy, cx) and fit.kernel.shape == shape


def test_radial_shares_one_kernel_across_pairs_and_honours_masks():
    rng = np.random.default_rng(102)
    shape, bins = (7, 7), [0.0, 1.0, 2.0, 3.0, 4.3]
    truth = radial_kernel(bins, [2.0, 1.0, 0.5, 0.2, 0.0], shape)
    a1, a2 = rng.random((30, 30)), rng.random((25, 40))
    b2 = convolve(a2, truth)
    b2[5:9, 10:20] = 1e6                      # corrupted, but masked out
    mask = np.ones(b2.shape, bool)
    mask[5:9, 10:20] = False
    pairs = [_pair(a1, truth, boundary="fill"),
             prepare_pair(a2, b2, shape, boundary="fill", mask=mask)]
    for method in ("statistics", "fft"):
        fit = fit_radial(pairs, shape, bins=bins, method=method)
        assert _rel_err(fit.kernel, truth) <= EXACT
        assert fit.n_used == 30 * 30 + 25 * 40 - 40


def test_radial_bins_limit_the_support_and_inner_pixels_take_the_first_value():
    kernel = radial_kernel([1.0, 2.0], [3.0, 1.0], (5, 5))
    assert kernel[2, 2] == 3.0 and kernel[2, 3] == 3.0    # r = 0 and r = 1: first knot's value
    assert kernel[2, 4] == 1.0 and kernel[0, 0] == 0.0    # r = 2: last knot; r = √8: outside
    assert np.isclose(kernel[1, 1], 3.0 - 2.0 * (np.sqrt(2) - 1.0))  # linear in between


def test_radial_default_knots_are_documented_shape():
    knots = radial_knots((199, 199))
    # Every pixel radius up to 3 px, 1-px steps to 5 px, then ≤ 20 % steps, the largest full
    # ring (99) and the farthest pixel (99·√2).
    np.testing.assert_allclose(knots[:7], np.sqrt([0, 1, 2, 4, 5, 8, 9]))
    np.testing.assert_allclose(knots[7:10], [4, 5, 6])
    ratios = knots[10:-2] / knots[9:-3]
    assert np.all(ratios <= 1.2 + 1e-12) and np.all(ratios >= 1.2 - 1e-12)
    assert knots[-2] == 99.0 and np.isclose(knots[-1], 99 * np.sqrt(2))
    assert len(knots) <= 30
    # A one-pixel kernel has one knot; knots never repeat.
    assert radial_knots(1).tolist() == [0.0]
    for shape, center in [((4, 4), None), ((15, 15), (0, 0)), ((2, 9), None), ((8, 8), (4, 4))]:
        k = radial_knots(shape, center)
        assert k[0] == 0 and np.all(np.diff(k) > 0)


def test_radial_smoothness_penalty():
    rng = np.random.default_rng(103)
    a = rng.random((40, 40))
    shape = (11, 11)
    truth = radial_kernel([0, 1, 2, 3, 5, 7.1], [1.0, 0.7, 0.4, 0.25, 0.1, 0.0], shape)
    pairs = [_pair(a, truth, boundary="fill", sigma=0.05, rng=rng)]
    plain = fit_radial(pairs, shape)
    smooth = fit_radial(pairs, shape, smooth=1e-3)
    stiff = fit_radial(pairs, shape, smooth=1e6)
    m = len(plain.params["radii"])
    # The penalty's null space (profiles linear in the knot index) has 2 dimensions: the
    # effective number of parameters falls from m towards 2 as the weight grows.
    assert plain.dof == m and 2 < stiff.dof < 2.01 and stiff.dof < smooth.dof < m
    assert np.abs(np.diff(stiff.params["profile"], 2)).max() <= 1e-6
    assert smooth.rss >= plain.rss and np.all(np.isfinite(smooth.stderr["profile"]))


def test_radial_rank_deficient_bins_warn_and_say_so():
    rng = np.random.default_rng(104)
    a = rng.random((30, 30))
    truth = radial_kernel([0, 1, 2], [1.0, 0.5, 0.0], (5, 5))
    pair = _pair(a, truth, boundary="fill")
    # No pixel has a radius strictly between 1.1 and 1.2: that knot has an all-zero column.
    with pytest.warns(RankDeficientWarning, match="bins"):
        fit = fit_radial([pair], (5, 5), bins=[0, 1.0, 1.1, 1.2, 2.0, 3.0])
    assert not fit.converged and "bins" in fit.message
    assert np.isnan(fit.stderr["profile"]).all() and fit.cov is None


# -- power law ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,boundary,center", CASES)
def test_powerlaw_exact_recovery(shape, boundary, center):
    rng = np.random.default_rng(105)
    a = rng.random((48, 45))
    truth_params = {"amplitude": 0.7, "exponent": 1.7, "center_value": -0.4}
    truth = powerlaw_kernel(shape, center, **truth_params)
    fit = fit_powerlaw([_pair(a, truth, boundary=boundary, center=center)], shape, center)
    assert _rel_err(fit.kernel, truth) <= EXACT
    for name, value in truth_params.items():
        assert abs(fit.params[name] - value) <= EXACT
    assert fit.converged and fit.message == ""


def test_powerlaw_on_a_bound_is_not_converged():
    rng = np.random.default_rng(106)
    a = rng.random((30, 30))
    truth = powerlaw_kernel(7, amplitude=1.0, exponent=2.5)
    fit = fit_powerlaw([_pair(a, truth, boundary="fill")], 7, exponent_bounds=(0.0, 2.0))
    assert not fit.converged and "exponent_bounds" in fit.message
    assert fit.params["exponent"] == 2.0
    # Equal bounds fix the exponent: amplitude and centre value are then a linear fit.  A
    # single PreparedPair is accepted without a list.
    fixed = fit_powerlaw(_pair(a, truth, boundary="fill"), 7, exponent_bounds=(2.5, 2.5))
    assert fixed.converged and fixed.params["exponent"] == 2.5
    assert _rel_err(fixed.kernel, truth) <= EXACT


# -- separable and low rank -----------------------------------------------------------------------

@pytest.mark.parametrize("shape,boundary,center", CASES)
@pytest.mark.parametrize("init", ["svd", "random"])
def test_separable_exact_recovery(shape, boundary, center, init):
    rng = np.random.default_rng(107)
    a = rng.random((48, 45))
    truth = np.outer(rng.normal(size=shape[0]), rng.normal(size=shape[1]))
    fit = fit_separable([_pair(a, truth, boundary=boundary, center=center)], shape, center,
                        init=init)
    assert _rel_err(fit.kernel, truth) <= EXACT and fit.converged
    u, v = fit.params["u"], fit.params["v"]
    assert np.isclose(np.linalg.norm(v), 1.0) and v[np.argmax(np.abs(v))] > 0
    np.testing.assert_allclose(np.outer(u, v), fit.kernel, atol=1e-14 * np.abs(u).max())


@pytest.mark.parametrize("shape,boundary,center", CASES)
@pytest.mark.parametrize("init", ["svd", "random"])
def test_lowrank_rank2_exact_recovery(shape, boundary, center, init):
    rng = np.random.default_rng(108)
    a = rng.random((48, 45))
    truth = rng.normal(size=(shape[0], 2)) @ rng.normal(size=(2, shape[1]))
    fit = fit_lowrank([_pair(a, truth, boundary=boundary, center=center)], shape, center,
                      rank=2, init=init)
    assert _rel_err(fit.kernel, truth) <= EXACT and fit.converged
    U, V = fit.params["U"], fit.params["V"]
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-12)
    gram_u = U.T @ U
    assert abs(gram_u[0, 1]) <= 1e-10 * gram_u[0, 0] and gram_u[0, 0] >= gram_u[1, 1]
    assert fit.dof == (shape[0] + shape[1] - 2) * 2


def test_lowrank_large_kernel_start_and_given_start(monkeypatch):
    # Above EXACT_INIT_UNKNOWNS the free kernel that seeds the factors comes from conjugate
    # gradients; pretend every kernel is that large.  A given kernel is also a valid start.
    rng = np.random.default_rng(114)
    a = rng.random((40, 40))
    truth = rng.normal(size=(7, 2)) @ rng.normal(size=(2, 6))
    pair = _pair(a, truth, boundary="fill")
    monkeypatch.setattr(factored, "EXACT_INIT_UNKNOWNS", 10)
    fit = fit_lowrank([pair], (7, 6), rank=2)
    assert fit.info["init"] == "svd" and _rel_err(fit.kernel, truth) <= EXACT
    fit = fit_lowrank([pair], (7, 6), rank=2, init=truth + 0.1 * rng.normal(size=truth.shape))
    assert fit.info["init"] == "given" and _rel_err(fit.kernel, truth) <= EXACT


def test_lowrank_hessian_is_jacobian_gram():
    # The structured contractions equal JᵀGJ formed explicitly (rounding level: 1e-12).
    rng = np.random.default_rng(115)
    kh, kw, r = 5, 4, 2
    X = rng.normal(size=(200, kh * kw))
    G = X.T @ X
    U, V = rng.normal(size=(kh, r)), rng.normal(size=(kw, r))
    J = factored._jacobian(U, V)
    explicit = J.T @ G @ J
    H = factored._hessian(G.reshape(kh, kw, kh, kw), U, V)
    assert np.abs(H - explicit).max() <= 1e-12 * np.abs(explicit).max()
    # and the Jacobian is that of k = U Vᵀ
    dU = rng.normal(size=U.shape) * 1e-7
    k1 = (U + dU) @ V.T - U @ V.T
    np.testing.assert_allclose(J[:, :kh * r] @ dU.ravel(), k1.ravel(), atol=1e-12)


def test_lowrank_reports_when_it_runs_out_of_iterations():
    rng = np.random.default_rng(109)
    a = rng.random((40, 40))
    truth = rng.normal(size=(7, 3)) @ rng.normal(size=(3, 7))
    pair = _pair(a, truth, boundary="fill", sigma=0.1, rng=rng)
    fit = fit_lowrank([pair], 7, rank=2, init="random", maxiter=1)
    assert not fit.converged and "maxiter" in fit.message and fit.info["iterations"] == 1


# -- the FFT-column path against the statistics path ----------------------------------------------

@pytest.mark.parametrize("shape,center", [((9, 9), None), ((6, 8), (3, 4))])
def test_fft_columns_equal_statistics(shape, center):
    # Noisy data, so that the fits are not trivially exact; two pairs, one 'valid' and one
    # masked 'fill'.  Both paths solve the same small least-squares problem; they differ by
    # rounding in G or in the FFT columns (~1e-15) amplified by the model's condition number
    # (measured differences ≤ 2e-13): 1e-8 is a wide margin.
    rng = np.random.default_rng(110)
    a = rng.random((40, 36))
    truth = powerlaw_kernel(shape, center, amplitude=0.5, exponent=1.2, center_value=1.0)
    mask = rng.random(a.shape) > 0.2
    pairs = [_pair(a, truth, boundary="fill", center=center, sigma=0.05, rng=rng, mask=mask),
             _pair(rng.random((30, 30)), truth, boundary="valid", center=center, sigma=0.05,
                   rng=rng)]
    for fitter, options in [(fit_radial, {}), (fit_radial, {"smooth": 1e-4}),
                            (fit_powerlaw, {})]:
        stats = fitter(pairs, shape, center, method="statistics", **options)
        fft = fitter(pairs, shape, center, method="fft", **options)
        assert (stats.method, fft.method) == ("statistics", "fft")
        assert _rel_err(fft.kernel, stats.kernel) <= 1e-8
        assert np.isclose(fft.rss, stats.rss, rtol=1e-8)
        assert _rel_err(fft.stderr["kernel"], stats.stderr["kernel"]) <= 1e-6


def test_precomputed_statistics_are_reused():
    rng = np.random.default_rng(116)
    a = rng.random((30, 30))
    truth = powerlaw_kernel(5, amplitude=1.0, exponent=1.0, center_value=0.5)
    pair = _pair(a, truth, boundary="fill", sigma=0.01, rng=rng)
    stats = statistics(pair.extended, pair.b_used, (5, 5))
    for fitter, options in [(fit_radial, {}), (fit_powerlaw, {}), (fit_separable, {}),
                            (fit_lowrank, {"rank": 2})]:
        fresh = fitter([pair], 5, **options)
        reused = fitter([pair], 5, statistics=stats, **options)
        np.testing.assert_array_equal(reused.kernel, fresh.kernel)
    with pytest.raises(ValueError, match="statistics"):
        fit_radial([pair], 5, statistics=stats + stats)
    with pytest.raises(TypeError, match="statistics"):
        fit_radial([pair], 5, statistics=stats.gram)
    with pytest.raises(ValueError, match="statistics"):
        fit_radial([pair], 5, statistics=stats, method="fft")


# -- standard errors ------------------------------------------------------------------------------

def test_standard_errors_are_calibrated():
    # z-scores (estimate − truth) / stderr over 150 noise draws.  Their standard deviation
    # is estimated to ±1/√300 ≈ 6 % per parameter; pooled over each model's parameters the
    # spread is smaller, so a pooled std within 1 ± 0.15 and every parameter within 1 ± 0.3
    # (5σ) fail only for mis-scaled errors.
    rng = np.random.default_rng(111)
    a = rng.random((40, 40))
    shape, sigma, trials = (7, 7), 0.05, 150
    bins = [0.0, 1.0, 2.0, 3.0, 4.3]
    truths = {
        "radial": radial_kernel(bins, [1.0, 0.6, 0.3, 0.1, 0.0], shape),
        "powerlaw": powerlaw_kernel(shape, amplitude=0.5, exponent=1.3, center_value=1.0),
        "lowrank": rng.normal(size=(7, 2)) @ rng.normal(size=(2, 7)),
    }
    z = {name: [] for name in truths}
    for _ in range(trials):
        pairs = {name: [_pair(a, k, boundary="fill", sigma=sigma, rng=rng)]
                 for name, k in truths.items()}
        fit = fit_radial(pairs["radial"], shape, bins=bins)
        z["radial"].append((fit.params["profile"] - [1.0, 0.6, 0.3, 0.1, 0.0])
                           / fit.stderr["profile"])
        fit = fit_powerlaw(pairs["powerlaw"], shape)
        z["powerlaw"].append([(fit.params[n] - v) / fit.stderr[n] for n, v in
                              [("amplitude", 0.5), ("exponent", 1.3), ("center_value", 1.0)]])
        fit = fit_lowrank(pairs["lowrank"], shape, rank=2)
        z["lowrank"].append(((fit.kernel - truths["lowrank"]) / fit.stderr["kernel"]).ravel())
    for name, scores in z.items():
        scores = np.array(scores)
        spread = scores.std(axis=0)
        assert abs(np.sqrt(np.mean(spread**2)) - 1.0) <= 0.15, (name, spread)
        assert np.all(np.abs(spread - 1.0) <= 0.3), (name, spread)


def test_separable_factor_errors_match_their_spread():
    # The canonical normalisation (‖v‖ = 1) makes u and v identifiable; their stderr must
    # match the spread of the estimates over noise draws (same bounds as above).
    rng = np.random.default_rng(112)
    a = rng.random((40, 40))
    u0, v0 = np.array([0.5, 1.0, 2.0, 1.0, 0.4]), np.array([0.2, 1.0, 0.6, 0.3, 0.1])
    v0 = v0 / np.linalg.norm(v0)
    truth = np.outer(u0, v0)
    z = []
    for _ in range(150):
        fit = fit_separable([_pair(a, truth, boundary="fill", sigma=0.05, rng=rng)], 5)
        z.append(np.r_[(fit.params["u"] - u0) / fit.stderr["u"],
                       (fit.params["v"] - v0) / fit.stderr["v"]])
    spread = np.array(z).std(axis=0)
    assert abs(np.sqrt(np.mean(spread**2)) - 1.0) <= 0.15 and np.all(np.abs(spread - 1) <= 0.3)


# -- errors ---------------------------------------------------------------------------------------

def test_errors_name_the_parameter():
    rng = np.random.default_rng(113)
    a = rng.random((20, 20))
    pair = _pair(a, np.ones((3, 3)), boundary="fill")
    with pytest.raises(TypeError, match="pairs"):
        fit_radial(a, 3)
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        fit_radial([pair, a], 3)
    with pytest.raises(ValueError, match="shape"):
        fit_radial([pair], 5)
    with pytest.raises(ValueError, match="center"):
        fit_radial([pair], 3, (3, 0))
    with pytest.raises(ValueError, match="bins"):
        fit_radial([pair], 3, bins=[0, 2, 1])
    with pytest.raises(ValueError, match="bins"):
        fit_radial([pair], 3, bins=[])
    with pytest.raises(ValueError, match="smooth"):
        fit_radial([pair], 3, smooth=-1.0)
    with pytest.raises(ValueError, match="method"):
        fit_radial([pair], 3, method="magic")
    with pytest.raises(ValueError, match="ratio"):
        radial_knots(5, ratio=1.0)
    with pytest.raises(ValueError, match="profile"):
        radial_kernel([0, 1], [1.0], 3)
    with pytest.raises(ValueError, match="exponent_bounds"):
        fit_powerlaw([pair], 3, exponent_bounds=(2.0, 1.0))
    with pytest.raises(TypeError, match="exponent_bounds"):
        fit_powerlaw([pair], 3, exponent_bounds=1.0)
    with pytest.raises(ValueError, match="shape"):
        fit_powerlaw([_pair(a, np.ones((1, 1)), boundary="fill")], 1)
    with pytest.raises(ValueError, match="rank"):
        fit_lowrank([pair], 3, rank=4)
    with pytest.raises(TypeError, match="rank"):
        fit_lowrank([pair], 3, rank=1.5)
    with pytest.raises(ValueError, match="init"):
        fit_separable([pair], 3, init="zeros")
    with pytest.raises(ValueError, match="init"):
        fit_separable([pair], 3, init=np.ones((2, 2)))
    with pytest.raises(ValueError, match="maxiter"):
        fit_separable([pair], 3, maxiter=0)
    big = prepare_pair(np.ones((70, 70)), np.ones((70, 70)), (65, 65), boundary="fill")
    with pytest.raises(ValueError, match=r"shape=\(65, 65\)"):
        fit_separable([big], (65, 65))
    with pytest.raises(ValueError, match=r"shape=\(65, 65\)"):
        fit_radial([big], (65, 65), method="statistics")


# -- seed 000 -------------------------------------------------------------------------------------

def _seed000(seed, N=100):
    """Exactly the question's data: a binary N×N image (p = 0.2), a (2N−1)² 1/r kernel with 0
    at the centre, ``oaconvolve(..., mode='same')`` and N(0, 1) noise (seeded)."""
    rng = np.random.default_rng(seed)
    src = rng.binomial(n=1, p=0.2, size=(N, N))
    with np.errstate(divide="ignore"):  # 1/0 at the centre, overwritten next, as in the seed
        kernel = np.fromfunction(
            lambda x, y: np.sqrt((x - (N - 1))**2 + (y - (N - 1))**2)**(-1),
            (2 * N - 1, 2 * N - 1))
    kernel[N - 1, N - 1] = 0
    tgt = oaconvolve(src, kernel, mode="same") + rng.normal(0, 1, src.shape)
    return src, tgt, kernel


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed000_acceptance(seed):
    # Acceptance targets of issue 3 over the whole 199×199 kernel: radial ≤ 0.10, power law
    # ≤ 0.01.  Measured over 30 noise draws: radial 0.019–0.033, power law 0.0006–0.0064.
    src, tgt, kernel = _seed000(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no warning on this well-posed problem
        started = time.perf_counter()
        pair = prepare_pair(src, tgt, (199, 199), boundary="fill")
        radial = fit_radial([pair], (199, 199))
        t_radial = time.perf_counter() - started
        started = time.perf_counter()
        pair = prepare_pair(src, tgt, (199, 199), boundary="fill")
        powerlaw = fit_powerlaw([pair], (199, 199))
        t_powerlaw = time.perf_counter() - started
    err_radial = _rel_err(radial.kernel, kernel)
    err_powerlaw = _rel_err(powerlaw.kernel, kernel)
    print(f"\nseed000[{seed}] radial err {err_radial:.4f} in {t_radial:.2f} s, "
          f"powerlaw err {err_powerlaw:.5f} in {t_powerlaw:.2f} s (target ≤ 2 s each)")
    assert radial.method == powerlaw.method == "fft"
    assert err_radial <= 0.10 and radial.converged
    assert err_powerlaw <= 0.01 and powerlaw.converged
    # The noise level the residuals imply is the true σ = 1 (10⁴ pixels: ±1.5 % at 2σ).
    assert abs(radial.noise_std - 1.0) <= 0.03 and abs(powerlaw.noise_std - 1.0) <= 0.03
    # The exponent is 1 within its standard error (4σ).
    assert abs(powerlaw.params["exponent"] - 1.0) <= 4 * powerlaw.stderr["exponent"]
