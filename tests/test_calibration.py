"""Are the standard errors honest?  Monte-Carlo z-scores on every L2 path with a covariance.

One white image ``a`` (48², uniform), a 5×5 Gaussian kernel, noise σ = 0.05; each trial adds
fresh noise to the same noise-free ``b``.  For an honest ``stderr`` the z-scores
``(k̂ − target)/stderr`` have standard deviation 1, where the target is the true kernel for an
unbiased estimator and, for a regularised one, its own mean ``E k̂`` — the covariance of a
regularised fit describes its spread, not its bias (see ``fit.info['covariance']``).  Every
estimator here is linear in ``b`` (or nearly so), so ``E k̂`` is the fit of the noise-free
``b`` with the same fixed ``lam``.

Tolerance, 1 ± 0.1 (the acceptance of issue 6): the sample standard deviation of ``m``
independent z-scores has a relative spread of about ``1/√(2m)``.  Pooled over 200 trials × 25
coefficients the values are correlated within a trial (through ``G⁻¹`` and the shared σ̂), so
take ``m`` ≈ 200–5000: a spread of 1–5 %, and 0.1 is two (worst case) to ten standard
deviations.  The parametric fits pool two parameters over 500 trials (``m`` = 1000: 2.2 %).
"""

from __future__ import annotations

import numpy as np
import pytest

import kernelfit as kf
from kernelfit.models.parametric import Gaussian

SIGMA = 0.05
TRIALS = 200
SHAPE = (5, 5)
TOLERANCE = 0.1


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(20240601)
    a = rng.random((48, 48))
    kernel = Gaussian().evaluate([1.2], SHAPE)
    b0 = kf.convolve(a, kernel, mode="valid")
    noise = SIGMA * rng.normal(size=(TRIALS,) + b0.shape)
    return a, kernel, b0, noise


def _fits(case, trials=TRIALS, **options):
    a, _, b0, noise = case
    return [kf.estimate(a, b0 + noise[t], SHAPE, **options) for t in range(trials)]


def _kernel_z(fits, target, stderr=lambda fit: fit.stderr):
    return np.concatenate([((fit.kernel - target) / stderr(fit)).ravel() for fit in fits])


def test_least_squares_zscores_have_unit_spread(case):
    _, kernel, _, _ = case
    z = _kernel_z(_fits(case), kernel)
    assert abs(z.std() - 1) <= TOLERANCE
    # Unbiased: the mean of ≥ 200 effectively independent z-scores is within 4/√200 of 0.
    assert abs(z.mean()) <= 0.3


def test_least_squares_attains_the_cramer_rao_bound(case):
    # E‖k̂ − k‖² of least squares is exactly σ²·tr(G⁻¹), the Cramér–Rao bound for fixed a.
    # Over 200 trials × 25 correlated coefficients the MSE estimate is within a few percent.
    a, kernel, b0, _ = case
    fits = _fits(case)
    mse = np.mean([np.sum((fit.kernel - kernel) ** 2) for fit in fits])
    gram = kf.statistics(a, b0, SHAPE).gram
    bound = SIGMA ** 2 * np.trace(np.linalg.inv(gram))
    assert bound / mse == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("reg", ["ridge", "gradient", "laplacian"])
def test_regularised_zscores_are_calibrated_around_their_mean(case, reg):
    a, kernel, b0, noise = case
    # lam as GCV picks it on one noisy draw, then held fixed (the covariance is at fixed lam).
    lam = kf.estimate(a, b0 + noise[-1], SHAPE, reg=reg).lam
    mean_kernel = kf.estimate(a, b0, SHAPE, reg=reg, lam=lam).kernel   # linear in b
    fits = _fits(case, reg=reg, lam=lam)
    z = _kernel_z(fits, mean_kernel)
    assert abs(z.std() - 1) <= TOLERANCE
    assert "bias is not included" in fits[0].info["covariance"]


def test_regularised_stderr_excludes_the_bias(case):
    # A strong penalty: the spread around E k̂ is still calibrated, the error around the true
    # kernel is not (z-scores of spread ~2 measured) -- stderr is not a bias bound.
    a, kernel, b0, _ = case
    mean_kernel = kf.estimate(a, b0, SHAPE, reg="gradient", lam=1e-2).kernel
    fits = _fits(case, reg="gradient", lam=1e-2)
    assert abs(_kernel_z(fits, mean_kernel).std() - 1) <= TOLERANCE
    assert _kernel_z(fits, kernel).std() > 1.5


def test_normalized_zscores_use_the_projected_covariance(case):
    _, kernel, _, _ = case
    fits = _fits(case, normalize=1.0)
    assert abs(_kernel_z(fits, kernel).std() - 1) <= TOLERANCE
    # The constraint fixes the sum: no spread along the all-ones direction.
    ones = np.ones(kernel.size)
    assert ones @ fits[0].cov @ ones == pytest.approx(0.0, abs=1e-12 * np.trace(fits[0].cov))


def test_nonneg_zscores_on_a_positive_kernel(case):
    # A kernel 0.03 above zero everywhere (about 7 standard errors): the constraint is never
    # active, so the free-coefficient covariance is the whole covariance.
    a, kernel, _, noise = case
    positive = kernel + 0.03
    b0 = kf.convolve(a, positive, mode="valid")
    fits = [kf.estimate(a, b0 + noise[t], SHAPE, nonneg=True) for t in range(TRIALS)]
    assert not any(fit.info["active"].any() for fit in fits)
    assert abs(_kernel_z(fits, positive).std() - 1) <= TOLERANCE


def test_radial_model_zscores(case):
    # A linear model: its estimate is linear in b, so E k̂ is the noise-free fit.
    a, _, b0, _ = case
    mean_kernel = kf.estimate(a, b0, SHAPE, model="radial").kernel
    fits = _fits(case, model="radial")
    z = _kernel_z(fits, mean_kernel, stderr=lambda fit: fit.stderr["kernel"])
    assert abs(z.std() - 1) <= TOLERANCE


def test_gaussian_parameter_zscores(case):
    a, _, b0, _ = case
    rng = np.random.default_rng(7)
    z = []
    for _ in range(500):
        fit = kf.estimate(a, b0 + SIGMA * rng.normal(size=b0.shape), SHAPE, model="gaussian")
        z.append([(fit.params["sigma"] - 1.2) / fit.stderr["sigma"],
                  (fit.params["amplitude"] - 1.0) / fit.stderr["amplitude"]])
    z = np.array(z)
    assert abs(z.std() - 1) <= TOLERANCE
    for column in z.T:   # each parameter alone: 500 values, a spread of 3 %
        assert abs(column.std() - 1) <= 0.15
