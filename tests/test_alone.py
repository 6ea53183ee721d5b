"""A scan that kills every worker that colorizes it (its memory) becomes its own error row; the
rest of its shard is colorized, in the bytes an undisturbed run writes; a worker that dies on
everything blames no scan. Real dask workers, really killed, by what they really hold: a thread
plays the nanny's memory limit (dask kills a worker past 95 % of it), drawn above what a worker
holds for the small scans as measured on it, so that the test does not hang on a baseline."""

import errno
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.client.cluster import worker_pid
from pipeline.client.outdir import Outdir

BIG = (7000, 5000)  # 35 MP: a worker holds some 500 MB more while it colorizes it; the small
# scans some 100 MB more than idle


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("alone") / "scans"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(7):  # manifest order puts the big one among them, in the first shard
        g = np.clip(np.add.outer(np.arange(48), np.arange(64)) * 2 + rng.integers(0, 30, (48, 64)), 0, 255)
        Image.fromarray(g.astype(np.uint8)).save(root / f"p{i}.png")
    w, h = BIG
    big = (np.add.outer(np.arange(h) // 20, np.arange(w) // 20) % 200 + 30).astype(np.uint8)
    Image.fromarray(big).save(root / "p2b.png")
    man = root.parent / "m.parquet"
    assert main(["scan", str(root), "-o", str(man), "--shard-size", "4", "-q"]) == 0
    return root, man


def run_args(man, out, ckpt, *extra):
    return ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32",
            "--batch-size", "4", "-q", *extra]


def _warm(ckpt: str) -> int:
    """A worker as it is once it has colorized a small scan: torch and the net loaded."""
    from pipeline.worker.engine import Colorizer

    Colorizer(ckpt, device="cpu", size=32).predict_ab(np.zeros((4, 32, 32), np.uint8))
    return psutil.Process().memory_info().rss


def test_asking_a_worker_its_pid_parses_no_source_beside_its_imports(monkeypatch):
    """The watcher below asked every 10 ms with client.run(os.getpid): the worker read the
    builtin's signature by ast.parse, beside torch's import in a task thread, and CPython 3.11
    raised SystemError there (python/cpython#106905), failing a shard in CI under load."""
    import ast

    from distributed.utils import has_arg  # what a worker asks of a function it is to run

    parsed = []
    monkeypatch.setattr(ast, "parse", lambda *a, **k: parsed.append(a) or ast.Module([], []))
    has_arg(os.getpid, "dask_worker")
    assert len(parsed) == 1  # why worker_pid is there
    has_arg(worker_pid, "dask_worker")
    assert len(parsed) == 1 and worker_pid() == os.getpid()


class MemoryLimit:
    """Kills a worker (SIGKILL, as dask's nanny does past 95 % of its memory limit) that holds
    more than `limit` bytes; counts the kills. Only once each nanny has its worker running: a
    worker killed while its nanny still starts it fails the nanny's start, which then closes
    (distributed's Nanny.instantiate), and the cluster is left with none (CI, under load, once)."""

    def __init__(self, cluster, client, limit: float):
        self.cluster, self.client, self.limit, self.kills = cluster, client, limit, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        while not self.done.is_set():
            try:
                if not all(n.process is not None and n.process.status.name == "running"
                           for n in self.cluster.workers.values()):
                    time.sleep(0.01)
                    continue
                pids = self.client.run(worker_pid)
            except Exception:  # noqa: BLE001 - a worker restarting
                time.sleep(0.05)
                continue
            for pid in pids.values():
                try:
                    if psutil.Process(pid).memory_info().rss > self.limit:
                        os.kill(pid, signal.SIGKILL)
                        self.kills += 1
                except psutil.Error:
                    continue
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)


def rows(out):
    return {r["source_path"].rsplit("/", 1)[-1]: r for r in Outdir(out).read_results().to_pylist()}


def test_a_scan_no_worker_survives_becomes_its_error_row_and_its_shard_commits(archive, ckpt, tmp_path, capsys,
                                                                              users_cluster):
    root, man = archive
    clean = tmp_path / "clean"  # the same job, undisturbed: the bytes to expect
    assert main(run_args(man, clean, ckpt, "--workers", "1")) == 0
    out = tmp_path / "out"
    with users_cluster(1, allowed_failures=1) as (cluster, client):
        warm = max(client.run(_warm, ckpt).values())
        with MemoryLimit(cluster, client, warm + 300e6) as limit:
                assert main(run_args(man, out, ckpt, "--scheduler", cluster.scheduler_address,
                                 "--retries", "0")) == 0
    err = "".join(capsys.readouterr())
    assert limit.kills >= 4, limit.kills  # twice in its batch, twice alone (allowed-failures 1)
    assert "a worker died each time shard 00000 was tried; trying its images one at a time" in err
    got, want = rows(out), rows(clean)
    assert got["p2b.png"]["status"] == "error"
    why = got["p2b.png"]["error"]
    assert why.startswith("the worker died each time it colorized this image, 2 times with nothing "
                          "else in hand (most often its memory: a 7000x5000 scan needs about "), why
    assert f"colorize run -o {out} --redo {got['p2b.png']['image_id']}" in why
    # every other scan, its shard's too, as the undisturbed run made it, byte for byte
    assert [n for n, r in got.items() if r["status"] != "ok"] == ["p2b.png"]
    for name, r in got.items():
        if name != "p2b.png":
            assert (r["output_sha256"], r["output_path"]) == (want[name]["output_sha256"], want[name]["output_path"])
    assert not list((out / "results").glob(".shard-*"))  # the record went with the commit
    assert main(["audit", str(out), "-q"]) == 0
    # and a redo of it with a worker that can hold it colorizes it
    assert main(["run", "-o", str(out), "--redo", got["p2b.png"]["image_id"], "--workers", "1", "-q"]) == 0
    assert rows(out)["p2b.png"]["output_sha256"] == want["p2b.png"]["output_sha256"]


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    """A shard of four masters none of which a worker can hold, and a shard of small scans."""
    root = tmp_path_factory.mktemp("masters") / "scans"
    root.mkdir()
    w, h = BIG
    for i in range(4):
        big = (np.add.outer(np.arange(h) // (20 + i), np.arange(w) // 20) % 200 + 30).astype(np.uint8)
        Image.fromarray(big).save(root / f"a{i}.png")
    for i in range(4):
        Image.fromarray(np.full((48, 64), 60 + 30 * i, np.uint8)).save(root / f"b{i}.png")
    man = root.parent / "m.parquet"
    assert main(["scan", str(root), "-o", str(man), "--shard-size", "4", "-q"]) == 0
    return root, man


def test_a_worker_that_dies_on_every_scan_blames_none(masters, ckpt, tmp_path, capsys, users_cluster):
    """A worker that dies on every image of a shard, each alone: the worker's fault (too little
    memory for any of them, or broken), not the scans': after three such images the shard fails,
    saying so, no scan is marked, the other shard commits; the next run starts the count afresh."""
    _, man = masters
    out = tmp_path / "out"
    with users_cluster(1, allowed_failures=0) as (cluster, client):
        warm = max(client.run(_warm, ckpt).values())
        with MemoryLimit(cluster, client, warm + 300e6) as limit:
            assert main(run_args(man, out, ckpt, "--scheduler", cluster.scheduler_address,
                                 "--retries", "0")) == 1
    err = "".join(capsys.readouterr())
    assert limit.kills >= 4, limit.kills  # the batch, then three masters alone
    assert "a worker died each time shard 00000 was tried; trying its images one at a time" in err
    assert ("shard 00000 failed: WorkerDies: tried one image at a time, the worker died on 3 of "
            "them and colorized none (") in err, err
    assert "it is the worker (too little memory for any of them, or broken), not the scans" in err
    assert "the shard's largest scan is " in err and "every other shard went on" in err
    assert not (out / "results" / "shard-00000.parquet").exists()
    t = pq.read_table(out / "results" / "shard-00001.parquet")
    assert t.column("status").to_pylist() == ["ok"] * 4
    assert (out / "results" / ".shard-00000.alone.json").exists()
    assert main(run_args(man, out, ckpt, "--dry-run")) == 0  # changes nothing
    assert (out / "results" / ".shard-00000.alone.json").exists()
    # workers that can hold them: the next run colorizes them, and the last run's count is gone
    assert main(run_args(man, out, ckpt, "--workers", "1")) == 0
    assert not list((out / "results").glob(".shard-*"))
    assert set(pq.read_table(out / "results" / "shard-00000.parquet").column("status").to_pylist()) == {"ok"}


def test_the_record_of_deaths(tmp_path):
    """The rules on their own: a death counts once, on the image begun; blamed after two while
    others lived (or while it is the only one that needs the net); the worker, not the scans,
    when nothing lived; a death while the worker ran other tasks beside it counts less."""
    from pipeline.client.alone import SHARED_TRIES, Deaths
    from pipeline.storage import Store

    (tmp_path / "results").mkdir()
    assert Deaths.said(Store(str(tmp_path)), 7) == (0, False)  # no try started yet
    d = Deaths.load(str(tmp_path), 7)
    assert (d.deaths, d.lived) == ({}, False)
    assert Deaths.said(d.store, 7) == (1, False)  # a try started (said before the model loads)
    d.begin("a")  # ... and the worker died
    assert Deaths.said(d.store, 7) == (1, True)
    d = Deaths.load(str(tmp_path), 7)
    assert d.deaths == {"a": 1} and d.trying is None
    assert Deaths.load(str(tmp_path), 7).deaths == {"a": 1}  # counted once, however often read
    assert Deaths.said(d.store, 7) == (3, False)
    abc = ["a", "b", "c"]
    assert not d.blamed("a", abc) and not d.hopeless(abc)
    d.begin("b")
    d.lived_through("b", colorized=False)  # an error row: says nothing of the worker
    assert not d.lived
    d.begin("c")  # died
    d = Deaths.load(str(tmp_path), 7)
    d.begin("a")  # died again: twice alone, but nothing lived yet: the worker's fault so far
    d = Deaths.load(str(tmp_path), 7)
    assert d.deaths == {"a": 2, "c": 1} and d.hopeless(abc)
    d.lived_through("b", colorized=True)
    assert d.blamed("a", abc) and not d.hopeless(abc)
    d.lived_through("c", colorized=True)  # it lived this time: its death was another's doing
    assert d.deaths == {"a": 2}
    # the only one of its shard that needs the net (the others errors or skips): blamed alone
    one = Deaths.load(str(tmp_path), 8)
    for e in ("e1", "e2"):
        one.begin(e)
        one.lived_through(e, colorized=False, netted=False)
    for _ in range(2):
        one.begin("x")
        one = Deaths.load(str(tmp_path), 8)
    xs = ["e1", "x", "e2"]
    assert one.blamed("x", xs) and not one.hopeless(xs) and one.netless == ["e1", "e2"]
    # deaths while the worker ran other tasks beside the image (several threads): not enough
    # twice; enough with one death that had the worker to itself, or SHARED_TRIES of them
    sh = Deaths.load(str(tmp_path), 9)
    sh.lived_through("ok", colorized=True)
    for n in range(1, SHARED_TRIES + 1):
        sh.begin("s", shared=True)
        sh = Deaths.load(str(tmp_path), 9)
        assert sh.deaths["s"] == n and sh.blamed("s", ["ok", "s"]) == (n >= SHARED_TRIES)
    sh.deaths, sh.solo = {"s": 1}, {}
    sh.begin("s")
    sh = Deaths.load(str(tmp_path), 9)
    assert (sh.deaths, sh.solo) == ({"s": 2}, {"s": 1}) and sh.blamed("s", ["ok", "s"])
    Deaths.forget(one.store, 7)
    assert Deaths.said(one.store, 7) == (0, False) and Deaths.load(str(tmp_path), 7).deaths == {}


def test_an_exception_on_an_image_alone_is_raised_and_never_counted_a_death(archive, ckpt, tmp_path, monkeypatch):
    """A bug, or OUTDIR failing, while an image is in hand is raised as itself (dask retries it,
    the run then fails with its traceback), and the next try does not count it a death: two
    such would have blamed the image as too large for the worker's memory."""
    from pipeline.client.alone import Deaths, rel_of
    from pipeline.client.jobspec import JobSpec
    from pipeline.client.state import file_sha256
    from pipeline.worker import shard as shard_mod
    from pipeline.worker.shard import ShardJob

    root, man = archive
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    job = ShardJob(JobSpec(manifest=str(man), checkpoint=ckpt, size=32, batch_size=4, threads=1),
                   outdir=str(out), checkpoint_sha256=file_sha256(ckpt))
    calls = []

    def broken(self, row, options=None):
        calls.append(row["path"])
        if len(calls) == 2:
            raise ZeroDivisionError("a bug")
        return real(self, row, options)

    real = shard_mod.ShardJob.read
    monkeypatch.setattr(shard_mod.ShardJob, "read", broken)
    for _ in range(3):
        calls.clear()
        with pytest.raises(ZeroDivisionError):
            job(0, alone=True)
        assert not (out / "results" / "shard-00000.parquet").exists()
    d = Deaths.load(str(out), 0)
    assert d.deaths == {} and d.tries == 4 and (out / rel_of(0)).exists()


def test_a_blamed_image_colorized_by_an_earlier_try_leaves_no_stray_output(archive, ckpt, tmp_path):
    """An image that lived once (its output written), then killed the worker twice, is blamed:
    its earlier output, which its error row does not claim, goes to quarantine/ (never deleted),
    and images/ holds only what the rows claim."""
    import json

    from pipeline.client.alone import rel_of

    root, man = archive
    out = tmp_path / "out"
    assert main(run_args(man, out, ckpt, "--workers", "1")) == 0
    rows = {r["image_id"]: r for r in pq.read_table(out / "results" / "shard-00000.parquet").to_pylist()}
    victim = next(r for r in rows.values() if r["source_path"].endswith("p1.png"))
    made = (out / victim["output_path"]).read_bytes()
    (out / "results" / "shard-00000.parquet").unlink()  # as before the shard's commit
    others = [i for i in rows if i != victim["image_id"]]
    (out / rel_of(0)).write_text(json.dumps({"trying": None, "deaths": {victim["image_id"]: 2},
                                             "solo": {victim["image_id"]: 2}, "lived": True, "tries": 3}))
    from pipeline.client.jobspec import JobSpec
    from pipeline.client.state import file_sha256
    from pipeline.worker.shard import ShardJob

    job = ShardJob(JobSpec(manifest=str(man), checkpoint=ckpt, size=32, batch_size=4, threads=1),
                   outdir=str(out), checkpoint_sha256=file_sha256(ckpt),
                   created=json.loads((out / "job.json").read_text())["created"])
    s = job(0, alone=True)
    assert (s["ok"], s["error"]) == (len(others), 1)
    after = {r["image_id"]: r for r in pq.read_table(out / "results" / "shard-00000.parquet").to_pylist()}
    assert after[victim["image_id"]]["error"].startswith("the worker died each time it colorized this image")
    assert not (out / victim["output_path"]).exists()
    assert [p.read_bytes() for p in (out / "quarantine").rglob("*.png")] == [made]
    # (the audit's other finding here, altered_result, is this test's: it commits behind the ledger)
    claimed = [r["output_path"] for f in sorted((out / "results").glob("shard-*.parquet"))
               for r in pq.read_table(f).to_pylist() if r["output_path"]]
    assert sorted(f"images/{p.name}" for p in (out / "images").iterdir()) == sorted(claimed)
    # a file there that colorize did not write (a curator's retouch) is theirs: left alone
    from pipeline.client.manifest import read_manifest
    from pipeline.worker.shard import _aside_earlier_output

    Image.new("RGB", (8, 8), (200, 10, 10)).save(out / victim["output_path"])
    mrow = next(r for r in read_manifest(man).to_pylist() if r["image_id"] == victim["image_id"])
    _aside_earlier_output(job, mrow)
    assert (out / victim["output_path"]).exists() and len(list((out / "quarantine").rglob("*.png"))) == 1


@pytest.mark.parametrize("oom", [MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory")],
                         ids=["MemoryError", "ENOMEM"])
def test_an_image_the_worker_cannot_allocate_memory_for_is_its_error_row(archive, ckpt, tmp_path, monkeypatch, oom):
    """Alone, an allocation the process cannot make (MemoryError, torch's out of memory, the
    kernel's ENOMEM) is that image's: its error row says so, and the rest of the shard commits."""
    from pipeline.client.jobspec import JobSpec
    from pipeline.client.state import file_sha256
    from pipeline.worker import shard as shard_mod
    from pipeline.worker.shard import ShardJob

    root, man = archive
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    job = ShardJob(JobSpec(manifest=str(man), checkpoint=ckpt, size=32, batch_size=4, threads=1),
                   outdir=str(out), checkpoint_sha256=file_sha256(ckpt))
    real = shard_mod.ShardJob.read

    def hungry(self, row, options=None):
        if row["path"].endswith("p1.png"):
            raise oom
        return real(self, row, options)

    monkeypatch.setattr(shard_mod.ShardJob, "read", hungry)
    s = job(0, alone=True)
    assert (s["ok"], s["error"]) == (3, 1)
    rows = {Path(r["source_path"]).name: r for r in pq.read_table(out / "results" / "shard-00000.parquet").to_pylist()}
    assert rows["p1.png"]["error"].startswith(f"the worker ran out of memory colorizing this image alone "
                                              f"({type(oom).__name__}: a 64x48 scan needs about"), rows["p1.png"]["error"]
    assert "--redo" in rows["p1.png"]["error"] and all(rows[n]["status"] == "ok" for n in rows if n != "p1.png")


def test_a_try_alone_that_never_starts_is_sent_again_only_a_few_times(tmp_path):
    """A try that never started (queued on a worker another shard's scan killed) is sent again
    uncounted; a worker that dies before any try starts (it cannot load the job) would be sent
    it for ever: after UNSTARTED such, the shard fails as it did before alone mode."""
    from types import SimpleNamespace

    from pipeline.client.alone import Deaths
    from pipeline.client.orchestrate import UNSTARTED, _Shards

    class Cluster:
        def submit(self, *args, key, **kw):
            return SimpleNamespace(key=key)

    (tmp_path / "results").mkdir()
    sent = []
    shards = _Shards(Cluster(), SimpleNamespace(spec=SimpleNamespace(retries=0)),
                     SimpleNamespace(key="k", options={}), None, Outdir(tmp_path), log=lambda m: None)
    shards.ac = SimpleNamespace(add=sent.append)
    assert shards.again_alone(shards.submit((0, None)))  # its workers died: sent alone
    Deaths.load(str(tmp_path), 0).begin("a")  # a try that started, and died on an image
    assert shards.again_alone(sent[-1])  # sent again
    for _ in range(UNSTARTED):
        assert shards.again_alone(sent[-1])  # never started: sent again, uncounted
    assert not shards.again_alone(sent[-1])
    assert len(sent) == UNSTARTED + 2


def test_a_worker_that_can_allocate_for_no_image_is_the_workers_fault(archive, ckpt, tmp_path, monkeypatch):
    """Every image alone out of memory (a GPU another process holds): no scan is blamed, the
    shard fails uncommitted, as when the worker dies on every one."""
    from pipeline.client.alone import WorkerDies
    from pipeline.client.jobspec import JobSpec
    from pipeline.client.state import file_sha256
    from pipeline.worker import shard as shard_mod
    from pipeline.worker.shard import ShardJob

    root, man = archive
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    job = ShardJob(JobSpec(manifest=str(man), checkpoint=ckpt, size=32, batch_size=4, threads=1),
                   outdir=str(out), checkpoint_sha256=file_sha256(ckpt))

    def starved(self, row, options=None):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(shard_mod.ShardJob, "read", starved)
    with pytest.raises(WorkerDies, match="could not allocate the memory for any of them"):
        job(0, alone=True)
    assert not (out / "results" / "shard-00000.parquet").exists()
