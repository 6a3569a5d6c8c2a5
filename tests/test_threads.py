"""The thread policy (kernelfit.core.threads): one knob, FFT workers and BLAS threads set
deliberately during a fit, nothing left changed afterwards."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.fft
from threadpoolctl import threadpool_info

import kernelfit as kf
from kernelfit import cli
from kernelfit.core import threads as threads_module
from kernelfit.solvers import direct


def _pair(seed=0, n=48, size=5):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    k = rng.random((size, size))
    return a, kf.convolve(a, k, mode="valid"), k


def _blas_threads():
    return sorted(info["num_threads"] for info in threadpool_info()
                  if info["user_api"] == "blas")


def _record_during_solve(monkeypatch):
    """Replace the direct solver's Cholesky by one that records the thread settings."""
    seen = []
    original = direct.cholesky_rcond

    def recording(A):
        seen.append({"fft_workers": scipy.fft.get_workers(), "blas": _blas_threads()})
        return original(A)
    monkeypatch.setattr(direct, "cholesky_rcond", recording)
    return seen


def test_threads_sets_the_count_and_restores_it():
    outside = kf.thread_count()
    assert outside == threads_module.available_cores()
    with kf.threads(1):
        assert kf.thread_count() == 1
        with kf.threads(3):
            assert kf.thread_count() == 3
        assert kf.thread_count() == 1
    assert kf.thread_count() == outside


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_threads_refuses_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"threads\(n=.*\): n must be an integer >= 1"):
        kf.threads(bad)


def test_a_fit_runs_blas_single_threaded_and_ffts_on_the_thread_count(monkeypatch):
    """A small ridge fit goes through the direct solver: BLAS on one thread there (a small
    factorisation is slower on more), FFTs on kf.thread_count() workers."""
    seen = _record_during_solve(monkeypatch)
    a, b, _ = _pair()
    before = _blas_threads()
    with kf.threads(2):
        kf.estimate(a, b, 5, reg="ridge", lam=1e-6)
    assert seen and all(record["fft_workers"] == 2 for record in seen)
    assert all(set(record["blas"]) == {1} for record in seen)
    assert _blas_threads() == before   # restored when the fit ends


def test_large_factorisations_get_more_blas_threads(monkeypatch):
    """dense_threads widens BLAS in proportion to the unknowns, up to kf.thread_count(), on
    an idle machine (the load average is part of the rule, so it is fixed here)."""
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(threads_module, "available_cores", lambda: 2)
    with threads_module.compute_threads(), kf.threads(2):
        with threads_module.dense_threads(100):
            assert set(_blas_threads()) == {1}
        with threads_module.dense_threads(10_000):
            assert set(_blas_threads()) == {2}
        assert set(_blas_threads()) == {1}
        monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
        with threads_module.dense_threads(10_000):   # another process holds a core
            assert set(_blas_threads()) == {1}


def test_the_result_does_not_depend_on_the_thread_count():
    a, b, k = _pair(1)
    with kf.threads(1):
        one = kf.estimate(a, b, 5).kernel
    with kf.threads(2):
        two = kf.estimate(a, b, 5).kernel
    # Different FFT work splits round differently: both are exact to ~1e-12 relative.
    np.testing.assert_allclose(one, k, rtol=0, atol=1e-10)
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-10)


def test_concurrent_fits_in_threads_leave_blas_as_it_was():
    """Two fits in two Python threads: the first to finish must not restore BLAS's own
    thread count under the other, and the last restores it."""
    before = _blas_threads()
    a, b, k = _pair(2)
    errors = []

    def work():
        for _ in range(5):
            fit = kf.estimate(a, b, 5, reg="ridge", lam=1e-9)
            errors.append(float(np.abs(fit.kernel - k).max()))
    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(errors) == 15 and max(errors) < 1e-5   # ridge bias at lam=1e-9: far below
    assert _blas_threads() == before


def test_cli_threads_option(tmp_path, capsys):
    a, b, _ = _pair(3)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "k.npy"
    assert cli.main(["estimate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--shape",
                     "5", "-o", str(out), "--threads", "1", "--quiet"]) == 0
    assert out.exists()
    assert cli.main(["estimate", "a.npy", "b.npy", "--shape", "5", "-o", "k.npy",
                     "--threads", "zero"]) == 2
    assert "--threads 'zero': expected an integer >= 1" in capsys.readouterr().err
