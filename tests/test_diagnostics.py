"""Identifiability diagnostics (kernelfit.diagnostics) and the IdentifiabilityWarning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import kernelfit as kf
from kernelfit.core.design import prepare_pair
from kernelfit.core.diagnostics import MAX_EIGEN_UNKNOWNS, gram_condition, identifiability, spectral_power
from kernelfit.models.parametric import Gaussian
from kernelfit.solvers.regularisers import penalty_matrix

N = 64
KERNEL = Gaussian().evaluate([1.0], (5, 5))


def _pair_of(a, noise, seed=1):
    """``(a, b)``: 'valid' blur of ``a`` by KERNEL plus white noise."""
    rng = np.random.default_rng(seed)
    b = kf.convolve(a, KERNEL, mode="valid")
    return a, b + noise * rng.normal(size=b.shape)


@pytest.fixture(scope="module")
def white():
    return np.random.default_rng(0).random((N, N))


@pytest.fixture(scope="module")
def blurred(white):
    # Blurred by σ = 1.5 px: the power above ~0.25 cycles/pixel is down by 1e-5 or more, so
    # at noise 0.01 the kernel's high frequencies are lost -- but G stays numerically full
    # rank (a σ = 3 blur makes it rank-deficient: RankDeficientWarning, tested elsewhere).
    return gaussian_filter(white, 1.5)


@pytest.fixture(scope="module")
def sinusoid():
    rng = np.random.default_rng(2)
    y, x = np.mgrid[:N, :N]
    # Two frequencies and a trace of texture: a pattern, not an image with every frequency.
    return np.sin(2 * np.pi * x / 9) * np.cos(2 * np.pi * y / 13) \
        + 1e-3 * rng.normal(size=(N, N))


def _fit_recording(a, b, *args, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = kf.estimate(a, b, *args, **options)
    return fit, [w.category for w in caught]


# --- the warning -----------------------------------------------------------------------------

@pytest.mark.parametrize("image", ["blurred", "sinusoid"])
def test_smooth_or_periodic_image_warns_with_the_advice(image, request):
    a, b = _pair_of(request.getfixturevalue(image), 0.01)
    with pytest.warns(kf.IdentifiabilityWarning,
                      match=r"larger or more textured image.*reg='laplacian'.*parametric") \
            as caught:
        fit = kf.estimate(a, b, 5)
    # The identifiability warning itself, not the rank deficiency (a subclass).
    assert [w.category for w in caught] == [kf.IdentifiabilityWarning]
    report = fit.info["identifiability"]
    assert report["below_noise_fraction"] >= 0.1
    assert "barely determine" in fit.message
    # The warning is right: the kernel is mostly noise (relative error 2.7 and 9.7 measured).
    assert np.linalg.norm(fit.kernel - KERNEL) > 0.5 * np.linalg.norm(KERNEL)


def test_white_image_does_not_warn(white):
    a, b = _pair_of(white, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = kf.estimate(a, b, 5)
    report = fit.info["identifiability"]
    assert report["below_noise_fraction"] == 0.0
    # A white image sees every frequency: all 25 above the noise by a wide margin.
    assert report["snr_min"] > 100
    assert fit.message == ""


def test_below_noise_fraction_grows_with_the_blur_and_the_noise(white):
    fractions = []
    for blur, noise in [(0.0, 0.01), (1.5, 0.001), (1.5, 0.05), (3.0, 0.05)]:
        a = gaussian_filter(white, blur) if blur else white
        a, b = _pair_of(a, noise)
        fit, _ = _fit_recording(a, b, 5)
        fractions.append(fit.info["identifiability"]["below_noise_fraction"])
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] > 0.5


def test_relative_error_predicts_the_least_squares_error(white):
    # White a: G ≈ n·var(a)·I, so the relative standard error is σ√p / (√(n var a)·‖k‖).
    errors, predicted = [], []
    for seed in range(5):
        a, b = _pair_of(white, 0.05, seed=seed)
        fit = kf.estimate(a, b, 5)
        errors.append(np.linalg.norm(fit.kernel - KERNEL) / np.linalg.norm(KERNEL))
        predicted.append(fit.info["identifiability"]["relative_error"])
    # The RMS of 5 draws of a 25-dimensional error: within ~15 % of its expectation.
    assert np.sqrt(np.mean(np.square(errors))) == pytest.approx(np.mean(predicted), rel=0.25)


def test_regularised_and_nonneg_fits_record_but_do_not_warn(blurred):
    a, b = _pair_of(blurred, 0.01)
    for options in ({"reg": "laplacian"}, {"nonneg": True}):
        fit, categories = _fit_recording(a, b, 5, **options)
        assert kf.IdentifiabilityWarning not in categories, options
        assert fit.info["identifiability"]["below_noise_fraction"] >= 0.1


def test_parametric_and_structured_fits_record_but_do_not_warn(blurred):
    a, b = _pair_of(blurred, 0.01)
    for model, n_params in [("gaussian", 2), ("radial", None)]:
        fit, categories = _fit_recording(a, b, 5, model=model)
        assert kf.IdentifiabilityWarning not in categories, model
        report = fit.info["identifiability"]
        assert report["below_noise_fraction"] >= 0.1
        assert report["effective_parameters"] == (n_params or fit.info["dof"])
        assert np.isnan(report["condition_number"])    # no Gram matrix on these paths


def test_robust_loss_is_not_diagnosed(white):
    a, b = _pair_of(white, 0.01)
    fit = kf.estimate(a, b, 5, model="gaussian", loss="l1")
    assert "identifiability" not in fit.info


def test_matrix_free_path_gets_the_spectral_diagnostics(blurred):
    a, b = _pair_of(blurred, 0.01)
    with pytest.warns(kf.IdentifiabilityWarning):
        fit = kf.estimate(a, b, 5, method="iterative", tol=1e-10)
    assert fit.info["identifiability"]["condition_method"] == "not computed"


def test_rank_deficiency_is_the_extreme_case_and_warns_once():
    assert issubclass(kf.RankDeficientWarning, kf.IdentifiabilityWarning)
    assert issubclass(kf.IdentifiabilityWarning, UserWarning)
    a = np.ones((30, 30))
    fit, categories = _fit_recording(a, kf.convolve(a, KERNEL, mode="valid"), 5)
    assert categories == [kf.RankDeficientWarning]
    assert fit.info["identifiability"]["condition_number"] == np.inf
    # Only the mean is seen: at least every other frequency carries no signal.
    assert fit.info["identifiability"]["below_noise_fraction"] >= 24 / 25


def test_noise_free_fit_is_identifiable(white):
    a = white
    fit, categories = _fit_recording(a, kf.convolve(a, KERNEL, mode="valid"), 5)
    assert categories == []
    assert fit.info["identifiability"]["below_noise_fraction"] == 0.0


# --- condition number and effective parameters -----------------------------------------------

def test_condition_number_matches_numpy(white):
    a = white[:24, :20]
    b = kf.convolve(a, np.arange(12.0).reshape(3, 4), mode="valid")
    fit = kf.estimate(a, b, (3, 4))
    gram = kf.statistics(a, b, (3, 4)).gram
    report = fit.info["identifiability"]
    assert report["condition_method"] == "eigenvalues"
    # eigvalsh and the SVD agree to rounding on a condition number of ~10: 1e-9 is ample.
    assert report["condition_number"] == pytest.approx(np.linalg.cond(gram), rel=1e-9)


def test_condition_number_above_the_eigen_limit():
    p = MAX_EIGEN_UNKNOWNS + 1
    gram = np.diag(np.linspace(1.0, 4.0, p))
    assert gram_condition(gram, rcond=0.25) == {
        "condition_number": 4.0, "condition_method": "lapack-1-norm-estimate"}
    report = gram_condition(gram)
    assert np.isnan(report["condition_number"]) and report["condition_method"] == "not computed"


def test_effective_parameters_is_p_unregularised_and_shrinks_with_lam(white):
    a, b = _pair_of(white, 0.05)
    fit = kf.estimate(a, b, 5)
    assert fit.info["identifiability"]["effective_parameters"] == pytest.approx(25, abs=1e-9)
    stats = kf.statistics(a, b, (5, 5))
    P = penalty_matrix("laplacian", (5, 5)).toarray()
    edf = []
    for lam in (1e-5, 1e-3, 1e-1):
        report = kf.estimate(a, b, 5, reg="laplacian", lam=lam).info["identifiability"]
        edf.append(report["effective_parameters"])
        # tr((G + lam·n·LᵀL)⁻¹G), computed directly on this well-conditioned 25×25 system.
        H = stats.gram + lam * stats.n_used * P
        assert edf[-1] == pytest.approx(np.trace(np.linalg.solve(H, stats.gram)), rel=1e-9)
    assert 25 > edf[0] > edf[1] > edf[2] >= 1   # the Laplacian never damps the constant


def test_effective_parameters_of_gcv_is_the_selection_edf(white):
    a, b = _pair_of(white, 0.05)
    fit = kf.estimate(a, b, 5, reg="ridge")
    assert fit.info["identifiability"]["effective_parameters"] == pytest.approx(
        fit.info["lambda_selection"]["edf"], rel=1e-9)


# --- the spectral estimate -------------------------------------------------------------------

@pytest.mark.parametrize("blur", [0.0, 1.5])
def test_spectral_power_tracks_the_gram_eigenvalues(white, blur):
    a = gaussian_filter(white, blur) if blur else white
    a, b = _pair_of(a, 0.0)
    pair = prepare_pair(a, b, (5, 5), boundary="valid")
    S = np.sort(spectral_power([pair], (5, 5)).ravel())
    eigenvalues = np.linalg.eigvalsh(kf.statistics(a, b, (5, 5)).gram)
    # Szegő: the eigenvalues of the (block-Toeplitz) Gram are distributed as a's spectrum at
    # the kernel's frequencies.  The totals (trace) agree to a few percent (measured 1-2 %),
    # and so does the largest (the mean's).
    assert S.sum() == pytest.approx(eigenvalues.sum(), rel=0.05)
    assert S[-1] == pytest.approx(eigenvalues[-1], rel=0.05)
    # What the diagnostics use: how many lie below a level.  Frequencies f and −f have equal
    # power, so S moves in steps of 2, and the Hann window blurs it over ±1 bin: counts
    # differ by at most 6 of 25 (measured, blurred a, levels 1e-10..1e3), so the fraction
    # below the noise is right to about ±0.25 -- enough to tell 0 from most.
    for level in np.geomspace(1e-10, 1e3, 40):
        assert abs(np.sum(S < level) - np.sum(eigenvalues < level)) <= 6, level
    if not blur:   # white: every sorted pair within a factor 2 (Welch noise at 9×16 values)
        assert np.all(np.abs(np.log(S[:-1] / eigenvalues[:-1])) < np.log(2))


def test_spectral_power_of_white_noise_is_flat():
    a = np.random.default_rng(3).normal(size=(200, 200))
    pair = prepare_pair(a, a[2:-2, 2:-2], (5, 5), boundary="valid")
    S = spectral_power([pair], (5, 5)) / pair.n_used
    # Unit variance, zero mean: S ≈ n·1 at every frequency; ~9 bins × 169 blocks per cell.
    assert np.allclose(S, 1.0, atol=0.15)


def test_spectral_power_respects_the_mask(white):
    a, b = _pair_of(white, 0.0)
    mask = np.zeros(b.shape, bool)
    mask[:, : b.shape[1] // 2] = True
    pair = prepare_pair(a, b, (5, 5), boundary="valid", mask=mask)
    S = spectral_power([pair], (5, 5))
    gram = kf.statistics(pair.extended, pair.b_used, (5, 5),
                         weights=mask.astype(float)).gram
    # Half the pixels: the trace halves, and the estimate follows (5 % as above).
    assert S.sum() == pytest.approx(np.trace(gram), rel=0.05)


def test_spectral_power_adds_over_pairs(white):
    a, b = _pair_of(white, 0.0)
    pair = prepare_pair(a, b, (5, 5), boundary="valid")
    assert np.allclose(spectral_power([pair, pair], (5, 5)), 2 * spectral_power([pair], (5, 5)))


def test_kernel_larger_than_the_image():
    rng = np.random.default_rng(4)
    a = (rng.random((40, 40)) > 0.5).astype(float)
    pair = prepare_pair(a, a, (61, 61), boundary="fill")
    S = spectral_power([pair], (61, 61))
    assert S.shape == (61, 61) and np.all(np.isfinite(S)) and np.all(S > 0)


# --- errors ----------------------------------------------------------------------------------

def test_spectral_power_refuses_a_shape_that_is_not_the_pairs(white):
    a, b = _pair_of(white, 0.0)
    pair = prepare_pair(a, b, (5, 5), boundary="valid")
    with pytest.raises(ValueError, match=r"shape=\(3, 3\).*\(5, 5\)"):
        spectral_power([pair], (3, 3))


def test_identifiability_refuses_bad_input(white):
    a, b = _pair_of(white, 0.0)
    pair = prepare_pair(a, b, (5, 5), boundary="valid")
    with pytest.raises(ValueError, match=r"noise_std=-1"):
        identifiability([pair], KERNEL, -1.0)
    with pytest.raises(ValueError, match=r"kernel.*shape \(3, 3\)"):
        identifiability([pair], np.ones((3, 3)), 0.1)


@pytest.mark.parametrize("gram", [np.ones((2, 3)), np.ones(4), np.array([[1.0, np.nan],
                                                                         [np.nan, 1.0]])])
def test_gram_condition_refuses_what_is_not_a_gram_matrix(gram):
    with pytest.raises(ValueError, match="gram"):
        gram_condition(gram)


@pytest.mark.parametrize("options", [{}, {"boundary": "auto"}])
def test_warning_points_at_the_users_call(options):
    """However deep the fit runs (boundary='auto' calls estimate() again), the warning's
    location is the caller's line, not kernelfit's."""
    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.random((64, 64)), 1.5)
    b = kf.convolve(a, np.full((5, 5), 1 / 25)) + 0.01 * rng.normal(size=a.shape)
    with pytest.warns(kf.IdentifiabilityWarning) as caught:
        kf.estimate(a, b, 5, **options)
    assert {record.filename for record in caught} == {__file__}


@pytest.mark.parametrize("seed", range(5))
def test_seed000_plain_call_says_the_kernel_is_not_determined(seed):
    """Seed 000's plain call: 10,000 used pixels for a 199×199 free kernel (39,601 unknowns).
    Whatever the solver returns is one of many exact fits, so the call must warn with the
    one-call alternatives, not claim convergence, and print numbers (not NaN) in its
    identifiability line."""
    from kernelfit.demo import seed000_data

    src, tgt, _ = seed000_data(seed)
    with pytest.warns(kf.IdentifiabilityWarning,
                      match=r"cannot determine this 199x199 kernel.*model='radial'.*"
                            r"model='powerlaw'.*reg='gradient', nonneg=True"):
        fit = kf.estimate(src, tgt, 199, boundary="fill")
    assert fit.converged is False
    report = fit.info["identifiability"]
    assert report["determined"] is False
    # 1 − 10000/39601 of the directions carry no data whatever the noise.
    assert report["unseen_fraction"] == pytest.approx(1 - 10000 / 199 ** 2)
    summary = fit.summary()
    assert "status: failed: NOT DETERMINED" in summary
    line = next(text for text in summary.splitlines() if text.startswith("identifiability"))
    assert "nan" not in line and "75%" in line


def test_determined_fit_has_no_undetermined_verdict():
    """The same check leaves a well-posed free fit alone (more pixels than unknowns)."""
    rng = np.random.default_rng(3)
    a = rng.random((64, 64))
    b = kf.convolve(a, np.full((5, 5), 1 / 25), mode="valid") + 1e-3 * rng.normal(size=(60, 60))
    fit = kf.estimate(a, b, 5)
    assert fit.converged and "determined" not in fit.info["identifiability"]
    assert "status: ok" in fit.summary()


# --------------------------------------------------------------------------------------------
# Warnings under threads (issue 14): a fit never touches the process-wide warning state
# --------------------------------------------------------------------------------------------

def _recording(calls, name, original):
    def record(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)
    return record


def _robust_and_choosing_fits():
    """Fits whose code used to silence warnings around inner solves, and a rank-deficient one."""
    rng = np.random.default_rng(5)
    a = rng.random((30, 30))
    b = kf.convolve(a, KERNEL, mode="valid") + 0.01 * rng.standard_normal((26, 26))
    b[::7, ::5] += 3.0    # outliers for the robust losses
    constant = np.ones((20, 20))
    return [
        lambda: kf.estimate(a, b, 5, loss="huber"),
        lambda: kf.estimate(a, b, 5, clip=3.0),
        lambda: kf.estimate(a, b, 5, loss="huber", background=0),
        lambda: kf.estimate(a, kf.convolve(a, KERNEL), None, boundary="fill"),
        lambda: kf.estimate(constant, constant, 3),   # rank-deficient: warns
    ]


def test_fits_never_change_the_warning_filters(monkeypatch):
    # Deterministic: catch_warnings/simplefilter/filterwarnings swap the process-wide filters
    # (and showwarning), so any call of them inside a fit loses or misroutes the warnings of
    # fits running in other threads.  Every fit here must work without them.
    calls = []
    for name in ("catch_warnings", "simplefilter", "filterwarnings", "resetwarnings"):
        monkeypatch.setattr(warnings, name, _recording(calls, name, getattr(warnings, name)))
    with pytest.warns(kf.RankDeficientWarning):   # entered before the recording counts
        calls.clear()
        for fit in _robust_and_choosing_fits():
            fit()
        made = list(calls)
    monkeypatch.undo()
    assert made == []


def test_concurrent_fits_keep_every_warning_and_the_filters():
    # 40 rank-deficient fits in threads while robust fits run in others: every one warns (the
    # issue lost 5 of 40), and warnings.filters is the same list afterwards.  Recording is set
    # up once, in this thread, before the threads start.
    from concurrent.futures import ThreadPoolExecutor

    robust = _robust_and_choosing_fits()[:3]
    constant = np.ones((20, 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with ThreadPoolExecutor(max_workers=6) as pool:
            jobs = [pool.submit(robust[i % 3]) for i in range(12)]
            deficient = [pool.submit(kf.estimate, constant, constant, 3) for _ in range(40)]
            fits = [job.result() for job in deficient]
            for job in jobs:
                job.result()
        after = list(warnings.filters)
    assert after == before
    assert not any(fit.converged for fit in fits)
    rank = [w for w in caught if issubclass(w.category, kf.RankDeficientWarning)]
    assert len(rank) == 40
