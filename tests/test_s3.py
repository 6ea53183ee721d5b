"""Object storage: a real S3-compatible server (moto) on loopback, started and stopped here."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from PIL import Image

from pipeline.cli import main

pytestmark = pytest.mark.slow
fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto keeps its buckets per process, not per server: a test process that sets this fixture
    # up twice (the suite deals tests out to two processes) would find the last one's buckets
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset",
                                                  method="POST"), timeout=30).close()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # what s3fs reads, here and in the dask workers started from here
    fsspec.config.conf.pop("s3", None)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("archive")
    fs.mkdir("out")
    try:
        yield fs
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def bucket_archive(s3, tmp_path_factory):
    from skimage import data

    local = tmp_path_factory.mktemp("s3src")
    cam = data.camera()
    for i in range(11):
        p = local / f"box{i % 2}" / f"scan {i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(cam[i * 20 : i * 20 + 60, i * 15 : i * 15 + 80]).save(p)
    (local / "box0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    s3.put(str(local) + "/", "archive/scans/", recursive=True)
    return local


def cli(*args):
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def test_scan_run_interrupt_resume_audit_on_s3(s3, bucket_archive, ckpt, tmp_path, capsys):
    man = "s3://archive/manifest.parquet"
    assert main(["scan", "s3://archive/scans", "-o", man, "--shard-size", "3", "-q"]) == 0
    assert "12 images in 4 shards, 1 unreadable" in capsys.readouterr().out
    out = "s3://out/job1"
    args = ["run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--size", "32",
            "--batch-size", "2", "--window", "1", "-q"]
    proc = subprocess.Popen(cli(*args), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(s3.glob("out/job1/results/shard-*.parquet")) >= 1:
                break
            time.sleep(0.01)
            s3.invalidate_cache()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    s3.invalidate_cache()
    assert 1 <= len(s3.glob("out/job1/results/shard-*.parquet")) < 4
    assert main(args) == 0  # resumes: the dead run's lock is recognised as stale at once
    assert main(["status", out]) == 0
    said = capsys.readouterr().out
    assert "4 committed, 0 pending of 4; images 11 ok, 1 error, 0 skipped of 12" in said
    assert main(["audit", out, "-q"]) == 0
    s3.invalidate_cache()
    report = json.loads(s3.cat_file("out/job1/audit.json"))
    assert report["ok"] and report["counts"] == {"ok": 11, "error": 1, "skipped": 0, "gone": 0}
    assert report["errors"][0]["error"].startswith("truncated file")
    keys = s3.find("out/job1/images")
    assert len(keys) == 11 and all(k.endswith(".png") for k in keys)
    with s3.open("out/job1/images/box1/scan 01.png", "rb") as f:
        assert Image.open(f).size == (80, 60)
    # the same job on local disk gives the same bytes
    local_out = tmp_path / "local"
    assert main(["run", "--manifest", man, "-o", str(local_out), "--checkpoint", ckpt, "--size",
                 "32", "--batch-size", "2", "-q"]) == 0
    for k in keys:
        rel = k.split("out/job1/", 1)[1]
        assert (local_out / rel).read_bytes() == s3.cat_file(k)


def test_audit_on_s3_finds_a_deleted_object(s3, bucket_archive, ckpt, capsys):
    man = "s3://archive/m2.parquet"
    assert main(["scan", "s3://archive/scans/box1", "-o", man, "-q"]) == 0
    out = "s3://out/job2"
    assert main(["run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--size", "32",
                 "-q"]) == 0
    victim = s3.find("out/job2/images")[0]
    s3.rm(victim)
    s3.invalidate_cache()
    capsys.readouterr()
    assert main(["audit", out, "-q"]) == 1
    assert "missing_output: images/" in capsys.readouterr().err
    assert main(["run", "--manifest", man, "-o", out, "--checkpoint", ckpt, "--size", "32", "-q",
                 "--repair"]) == 0
    s3.invalidate_cache()
    assert main(["audit", out, "-q"]) == 0
