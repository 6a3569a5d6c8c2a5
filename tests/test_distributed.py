"""Fits on a Dask cluster: equal to the in-memory fits, for Dask and NumPy inputs, by client or
scheduler address, from the API and the command line."""

import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile

import kernelfit as kf
from kernelfit import cli
from kernelfit.front import distributed as kd

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

# Statistics summed over chunks equal the whole image's to ~1e-13 relative; the white-noise
# Gram matrices here have condition numbers below 1e2, so kernels agree to 1e-10 relative.
KERNEL_RTOL = 1e-10


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded workers in this process: starts in about a second, and an
    in-process scheduler is reachable by its address from the same test process."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as connected:
        yield connected


def noisy_pair(seed, size, shape, boundary):
    rng = np.random.default_rng(seed)
    a = rng.random(size)
    b = kf.convolve(a, rng.random(shape), boundary=boundary)
    return a, b + 0.01 * rng.standard_normal(b.shape)


def assert_same_kernel(fit, reference):
    scale = np.abs(reference.kernel).max()
    np.testing.assert_allclose(fit.kernel, reference.kernel, rtol=0, atol=KERNEL_RTOL * scale)


@pytest.mark.parametrize("boundary", ["valid", "wrap", "reflect"])
def test_dask_arrays_on_two_workers_equal_the_numpy_fit(client, boundary):
    # Chunks of 100 on a 512² pair: halos cross chunks, and for 'valid' the first and last
    # tiles end where the used rectangle does, not at a chunk edge.
    a, b = noisy_pair(1, (512, 512), (7, 7), boundary)
    reference = kf.estimate(a, b, 7, boundary=boundary)
    fit = kf.estimate(da.from_array(a, chunks=100), da.from_array(b, chunks=(128, 96)), 7,
                      boundary=boundary, client=client)
    assert_same_kernel(fit, reference)
    np.testing.assert_allclose(fit.stderr, reference.stderr, rtol=1e-6)
    assert fit.n_used == reference.n_used and fit.info["distributed"]
    # Tiles follow b's chunks: 4 rows x 6 columns of them (for 'valid' cut where the used
    # rectangle meets the chunk edges).
    assert fit.info["tiles"] == 24


def test_chunks_larger_than_the_cluster_tile_are_cut(client, monkeypatch):
    monkeypatch.setattr(kd, "CLUSTER_TILE", 40)
    a, b = noisy_pair(8, (200, 200), (3, 3), "wrap")
    fit = kf.estimate(da.from_array(a, chunks=100), da.from_array(b, chunks=100), 3,
                      boundary="wrap", client=client)
    assert fit.info["tiles"] == 6 * 6  # each 100-pixel chunk in 3 parts of 33 or 34
    assert_same_kernel(fit, kf.estimate(a, b, 3, boundary="wrap"))


def test_numpy_inputs_are_scattered_to_the_cluster(client):
    a, b = noisy_pair(2, (300, 260), (5, 3), "fill")
    reference = kf.estimate(a, b, (5, 3), boundary="fill", reg="ridge", nonneg=True)
    fit = kd.estimate(a, b, (5, 3), boundary="fill", reg="ridge", nonneg=True, client=client,
                      tile=64)
    assert_same_kernel(fit, reference)
    assert fit.lam == pytest.approx(reference.lam, rel=1e-6)  # GCV's optimiser tolerance


def test_scheduler_address_and_several_pairs(cluster):
    pairs = [noisy_pair(seed, (200, 150), (3, 3), "nearest") for seed in (3, 3)]
    rng = np.random.default_rng(4)
    a = [p[0] for p in pairs]
    b = [p[1] + 0.01 * rng.standard_normal(p[1].shape) for p in pairs]
    reference = kf.estimate(a, b, 3, boundary="nearest")
    fit = kd.estimate([da.from_array(x, chunks=64) for x in a], b, 3, boundary="nearest",
                      scheduler=cluster.scheduler_address)
    assert_same_kernel(fit, reference)
    assert fit.n_used == 2 * 200 * 150


def test_parametric_model_and_mask_on_the_cluster(client):
    import scipy.ndimage as ndi

    rng = np.random.default_rng(5)
    a = rng.random((256, 256))
    b = ndi.gaussian_filter(a, 1.6, mode="reflect") + 0.01 * rng.standard_normal(a.shape)
    b[10:20, 30:200] = np.nan
    mask = rng.random(b.shape) > 0.05
    reference = kf.estimate(a, b, 11, boundary="reflect", model="gaussian", mask=mask)
    fit = kf.estimate(da.from_array(a, chunks=90), da.from_array(b, chunks=90), 11,
                      boundary="reflect", model="gaussian", mask=da.from_array(mask, chunks=90),
                      client=client)
    # The same objective to ~1e-12; the optimiser stops at its own tolerance.
    assert fit.params["sigma"] == pytest.approx(reference.params["sigma"], rel=1e-6)
    assert fit.n_used == reference.n_used


def test_lazy_files_are_read_by_the_workers(client, tmp_path):
    a, b = noisy_pair(6, (150, 170), (3, 5), "mirror")
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.save(tmp_path / "b.npy", b)
    from kernelfit.io.lazy import open_lazy

    fit = kd.estimate(open_lazy(tmp_path / "a.tif"), open_lazy(tmp_path / "b.npy"), (3, 5),
                      boundary="mirror", client=client, tile=64)
    assert_same_kernel(fit, kf.estimate(a, b, (3, 5), boundary="mirror"))


def test_cli_scheduler_computes_on_the_cluster(cluster, tmp_path, capsys):
    a, b = noisy_pair(7, (120, 100), (3, 3), "nearest")
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    for tile in ([], ["--tile", "40"]):
        status = cli.main(["estimate", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
                           "--shape", "3", "--boundary", "nearest", "-o",
                           str(tmp_path / "k.npy"), "--scheduler", cluster.scheduler_address]
                          + tile)
        assert status == 0, capsys.readouterr().err
        np.testing.assert_allclose(np.load(tmp_path / "k.npy"),
                                   kf.estimate(a, b, 3, boundary="nearest").kernel, atol=1e-10)


def test_errors_name_the_option(client):
    a = da.ones((20, 20), chunks=10)
    with pytest.raises(TypeError, match="client must be a distributed.Client, got str"):
        kd.estimate(a, a, 3, client="tcp://x")
    with pytest.raises(ValueError, match="give client= or scheduler="):
        kd.estimate(a, a, 3, client=client, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="scheduler=8786 must be an address string"):
        kd.estimate(a, a, 3, scheduler=8786)
    with pytest.raises(ValueError, match="channel_axis=-1 is not available for Dask arrays"):
        kf.estimate(a, a, 3, channel_axis=-1)
    with pytest.raises(ValueError, match="model='separable' is not available for tiled"):
        kf.estimate(a, a, 3, model="separable")
    with pytest.raises(ValueError, match="shape=None, boundary='valid': tiled and distributed"):
        kf.estimate(a, a, None)
    unknown = da.ones((20, 20), chunks=10)[da.ones(20, chunks=10) > 0]
    with pytest.raises(ValueError, match=r"b has an unknown shape \(nan, 20\)"):
        kd.estimate(np.ones((20, 20)), unknown, 3)


def test_core_imports_without_dask():
    # Importing kernelfit (and its Dask front door) must not import Dask: the core runs
    # where Dask is not installed.
    code = ("import sys, kernelfit, kernelfit.front.distributed, kernelfit.cli; "
            "import numpy as np; kernelfit.estimate(np.eye(9), np.eye(9), 3); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed',"
            " 'zarr')], 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Workers that die (issue 14): real processes, started here and killed by their own handles
# --------------------------------------------------------------------------------------------

class ProcessCluster:
    """A scheduler and two worker processes without nannies (a killed worker stays dead)."""

    def __init__(self, directory):
        import json
        import os
        import shutil
        import time

        command = shutil.which("dask", path=os.path.dirname(sys.executable))
        if command is None:
            pytest.skip("the dask command is not installed")
        spec = directory / "scheduler.json"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes = [subprocess.Popen(
            [command, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(spec)], **quiet)]
        started = time.monotonic()
        while not spec.exists() or not spec.read_text().strip():
            assert time.monotonic() - started < 60, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)   # the file is written before it is complete on slow machines
        self.address = json.loads(spec.read_text())["address"]
        # The workers import this checkout's kernelfit, as the test process does.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.workers = [subprocess.Popen(
            [command, "worker", self.address, "--no-nanny", "--nthreads", "1",
             "--no-dashboard"], env=env, **quiet) for _ in range(2)]
        self.processes += self.workers
        self.client = distributed.Client(self.address, timeout="60s")
        self.client.wait_for_workers(2, timeout=60)
        self.pids = self.client.run(os.getpid)   # worker address -> process id

    def kill_worker(self, address):
        pid = self.pids[address]
        (worker,) = [w for w in self.workers if w.pid == pid]
        worker.kill()
        worker.wait()

    def close(self):
        self.client.close()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path):
    cluster = ProcessCluster(tmp_path)
    yield cluster
    cluster.close()


def test_losing_one_worker_of_two_still_gives_the_numpy_kernel(processes, monkeypatch):
    # Deterministically mid-fit: the images are scattered, then the worker holding one of
    # them is killed before the tasks run.  Its data cannot be recomputed; the fit is run
    # again on the survivor and must equal the in-memory fit.
    a, b = noisy_pair(11, (160, 160), (5, 5), "wrap")
    compute = kd._gather
    killed = []

    def kill_then_compute(client, totals, deadline, timeout):
        if not killed:
            holder = next(iter(client.who_has().values()))[0]
            processes.kill_worker(holder)
            killed.append(holder)
        return compute(client, totals, deadline, timeout)

    monkeypatch.setattr(kd, "_gather", kill_then_compute)
    fit = kd.estimate(a, b, 5, boundary="wrap", client=processes.client, timeout=120)
    assert killed and fit.info["attempts"] == 2
    assert_same_kernel(fit, kf.estimate(a, b, 5, boundary="wrap"))


def test_every_worker_dead_ends_with_a_timeout(processes, tmp_path, capsys):
    # Without timeout= the call would wait for new workers forever.
    for address in list(processes.pids):
        processes.kill_worker(address)
    a, b = noisy_pair(12, (64, 64), (3, 3), "wrap")
    with pytest.raises(TimeoutError, match=r"the Dask cluster did not finish the fit within "
                                           r"timeout=3 s: no worker is left"):
        kd.estimate(a, b, 3, boundary="wrap", client=processes.client, timeout=3)
    with pytest.raises(TimeoutError, match=r"timeout=2 s"):
        kf.estimate(da.from_array(a, chunks=32), da.from_array(b, chunks=32), 3,
                    boundary="wrap", client=processes.client, timeout=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    status = cli.main(["estimate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                       "--shape", "3", "--boundary", "wrap", "-o", str(tmp_path / "k.npy"),
                       "--scheduler", processes.address, "--timeout", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and not (tmp_path / "k.npy").exists()
    assert len(err) == 1 and re.match(r"kernelfit: error: the Dask cluster did not finish the "
                                      r"fit within timeout=2 s: no worker is left", err[0])


def test_timeout_is_checked():
    a = np.ones((20, 20))
    with pytest.raises(ValueError, match=r"timeout=0 must be None or a number of seconds > 0"):
        kd.estimate(a, a, 3, timeout=0)
    with pytest.raises(TypeError, match=r"timeout='1' must be None or a number of seconds"):
        kd.estimate(a, a, 3, timeout="1")
    # Without any distributed client (this module's fixtures may have one active: a fresh
    # process has none), Dask's local scheduler has no workers to lose.
    code = ("import numpy as np, kernelfit.front.distributed as kd; "
            "kd.estimate(np.ones((20, 20)), np.ones((20, 20)), 3, timeout=5)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "ValueError: timeout=5 applies to a distributed cluster" in run.stderr
