"""Shared fixtures: tiny checkpoints and images made on the spot, nothing downloaded."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

# Two or three test processes share the cores, each with torch (and the CLIs and workers they
# start, which inherit this): OpenMP's threads spinning while they wait, and each process split
# over every core, fought each other for them (measured on test_engine and test_model with
# -n 2: a quarter less CPU time, 24.5 -> 17.4 s). Read when OpenMP loads: before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.model.net import ColorizationNet, save_checkpoint  # noqa: E402

# The colour table's cache (worker/recombine.py) for the suite's own processes and the workers
# they start: out of the user's home, shared by the test processes and by later runs.
os.environ.setdefault("COLORIZE_CACHE", os.path.join(tempfile.gettempdir(), "colorize-test-cache"))

# Every job the suite makes has one date, the suite's start (set here, before xdist starts its
# processes, which inherit it): a job's date is written into each output, and tests that
# compare a run made before midnight UTC with one made after it found other bytes (a CI run
# at 23:59 failed five tests so).
os.environ.setdefault("SOURCE_DATE_EPOCH", str(int(time.time())))


def mild_net(seed: int = 0) -> ColorizationNet:
    """An untrained net whose output is a moderate, varying colour (a* ~ 13, b* ~ 25):
    realistic chroma without needing the shipped weights."""
    torch.manual_seed(seed)
    net = ColorizationNet().eval()
    with torch.no_grad():
        net.layer6.weight.mul_(0.05)
        net.layer6.bias.copy_(torch.tensor([0.55, 0.6]))
    return net


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "mild.pt"
    save_checkpoint(path, mild_net(), {"note": "test fixture"})
    return str(path)


@pytest.fixture
def photo_gray() -> np.ndarray:
    from skimage import data

    return data.camera()[::2, ::2].copy()  # 256 x 256 uint8 photo


@contextlib.contextmanager
def _users_cluster(n_workers: int = 1, allowed_failures: int | None = None):
    """A real cluster of worker processes, each under a nanny, standing in for one the user
    runs (`dask worker` restarts a killed worker however long that takes). A LocalCluster
    alone closes a nanny whose new worker has not joined 15 s after the last one died
    (distributed.deploy.lost-worker-timeout), which a loaded CI machine reached: the run then
    waited for ever on none (the product's own local cluster starts one anew: cluster._Kept)."""
    import dask
    from distributed import Client, LocalCluster

    cfg = {"distributed.deploy.lost-worker-timeout": "1h"}
    if allowed_failures is not None:
        cfg["distributed.scheduler.allowed-failures"] = allowed_failures
    with dask.config.set(cfg), LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                            dashboard_address=":0", memory_limit=0) as cluster, \
            Client(cluster) as client:
        yield cluster, client


@pytest.fixture
def users_cluster():
    return _users_cluster


@pytest.fixture(scope="session")
def warm_cluster():
    """One real cluster per test process for the tests whose runs are about records, catalogues
    and outputs, not about the local cluster a run starts: their runs go to it with --scheduler,
    as a user's go to theirs. Its worker keeps torch and the net loaded from one run to the next
    (a local run's own worker takes ~2.5 s of CPU to start, most of the suite's time)."""
    with _users_cluster(1) as (cluster, _):
        yield cluster.scheduler_address


@pytest.fixture
def warm(warm_cluster, request, monkeypatch):
    """The test's runs go to the warm cluster: its module's CLUSTER, which its run helpers pass
    through on_cluster (`pytestmark = pytest.mark.usefixtures("warm")` for a whole module)."""
    monkeypatch.setattr(request.module, "CLUSTER", warm_cluster)
    return warm_cluster


def on_cluster(args, address: str) -> list[str]:
    """A command line, a `run` sent to the cluster at `address` if one is given (other commands
    as they are)."""
    args = [str(a) for a in args]
    if address and args[:1] == ["run"] and "--scheduler" not in args:
        return [*args, "--scheduler", address]
    return args


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def photos(tmp_path):
    """24 colour photos: gradients in a few hues, with a lighter blob."""
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(22)
    for i in range(24):
        hue = rng.uniform(0, 1, 3)
        y, x = np.mgrid[0:60, 0:80] / 80.0
        px = np.stack([(hue[c] * 200 + 40 * x + 10 * y) for c in range(3)], -1)
        px[20:35, 30:50] += 40
        Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(d / f"p{i:02d}.jpg", quality=95)
    return d
