"""End to end on real dask clusters: LocalCluster, and scheduler/workers as separate processes."""

import csv
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.client.cluster import worker_pid
from pipeline.client.outdir import Outdir, RunLock

pytestmark = pytest.mark.slow
SHARD = 4


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """34 small scans in nested folders and several formats, plus a CSV with accession numbers."""
    from skimage import data

    root = tmp_path_factory.mktemp("archive")
    cam = data.camera()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(34):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
        y, x = int(rng.integers(0, 512 - h)), int(rng.integers(0, 512 - w))
        im = Image.fromarray(cam[y : y + h, x : x + w])
        sub = root / f"box{i % 3}" / f"folder {i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        ext = [".png", ".jpg", ".tif"][i % 3]
        p = sub / f"scan_{i:03d}{ext}"
        im.save(p)
        rows.append({"path": str(p.relative_to(root)), "accession": f"ACC-{1000 + i}"})
    with open(root / "catalogue.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, ["path", "accession"])
        wr.writeheader()
        wr.writerows(rows)
    man = root / "manifest.parquet"
    assert main(["scan", str(root / "catalogue.csv"), "-o", str(man), "--shard-size", str(SHARD),
                 "-q"]) == 0
    return root, man


def run_args(man, out, ckpt, *extra):
    return ["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32",
            "--batch-size", "4", "-q", *extra]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def image_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in (out / "images").rglob("*") if p.is_file()}


def comparable(out: Path) -> list[dict]:
    t = Outdir(out).read_results().drop_columns(["seconds"]).sort_by("image_id")
    return t.to_pylist()


@pytest.fixture(scope="module")
def clean_run(archive, ckpt, tmp_path_factory):
    _, man = archive
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(run_args(man, out, ckpt, "--workers", "2", "--threads", "1")) == 0
    return out


def test_every_row_has_one_result_and_outputs_match(archive, clean_run):
    root, man = archive
    manifest = pq.read_table(man).to_pylist()
    res = Outdir(clean_run).read_results()
    assert res.num_rows == len(manifest) == 34
    assert sorted(res.column("image_id").to_pylist()) == sorted(r["image_id"] for r in manifest)
    assert len(list((clean_run / "results").glob("shard-*.parquet"))) == 9  # ceil(34 / 4)
    by_id = {r["image_id"]: r for r in manifest}
    for r in res.to_pylist():
        m = by_id[r["image_id"]]
        assert r["status"] == "ok", r
        out = clean_run / r["output_path"]
        assert out.is_file() and sha(out) == r["output_sha256"]
        with Image.open(out) as im:
            assert im.size == (m["width"], m["height"]) and im.mode == "RGB"
        assert r["output_path"] == f"images/{m['out_stem']}.png"
        assert r["accession"] == m["accession"] and r["accession"].startswith("ACC-")
        assert r["source_sha256"] == sha(Path(m["path"]))
        assert r["shard"] == m["shard"]
    job = json.loads((clean_run / "job.json").read_text())
    assert len(job["fingerprint"]) == 64 and job["spec"]["size"] == 32
    from pipeline import __version__

    assert job["tool"] == f"archive-colorizer {__version__}"
    # the suite's SOURCE_DATE_EPOCH (conftest) is the job's day; when it started is its own
    epoch = dt.datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), dt.timezone.utc)
    assert job["created"] == epoch.strftime("%Y-%m-%d")
    assert dt.datetime.fromisoformat(job["started"]) >= epoch.replace(microsecond=0)


def test_the_jobs_day_is_today_or_source_date_epoch_and_a_bad_one_is_a_usage_error(
        archive, ckpt, tmp_path, monkeypatch, capsys):
    from pipeline.client.state import job_date

    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    def today():
        return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")

    before, got, after = today(), job_date(), today()
    assert got in (before, after) and len(got) == 10
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(365 * 86400 + 86399))
    assert job_date() == "1971-01-01"
    _, man = archive
    out = tmp_path / "out"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2026-12-05")
    capsys.readouterr()
    assert main(run_args(man, out, ckpt)) == 2
    err = capsys.readouterr().err
    assert "SOURCE_DATE_EPOCH='2026-12-05' is not a time in seconds" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "job.json").exists() and not (out / "images").exists()


def test_rerun_of_finished_job_does_no_work(archive, clean_run, ckpt, capsys):
    _, man = archive
    before = {p: p.stat().st_mtime_ns for p in (clean_run / "results").iterdir()}
    assert main(run_args(archive[1], clean_run, ckpt)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in (clean_run / "results").iterdir()}
    assert main(["status", str(clean_run)]) == 0
    assert "9 committed, 0 pending of 9; images 34 ok, 0 error, 0 skipped" in capsys.readouterr().out


def test_a_refusals_flags_paste_as_a_shell_reads_them():
    import shlex

    from pipeline.client.state import refusal

    said = refusal("out", {"metadata_columns": "identifier=Accession No,title=Title", "manifest": "my scans/m.parquet"},
                   {"metadata_columns": "creator=Photographer", "manifest": "my scans/m.parquet"})
    how = said.split("to continue it, add ")[1].split(";")[0]
    assert shlex.split(how) == ["--metadata-columns", "identifier=Accession No,title=Title"]


def test_changed_option_is_refused(archive, clean_run, ckpt, capsys):
    _, man = archive
    for extra in (["--format", "jpeg"],):
        assert main(run_args(man, clean_run, ckpt, *extra)) == 2
        err = capsys.readouterr().err
        # each change old -> new, then the flag that continues the job, before the way out
        assert "different job (changed: format png -> jpeg); to continue it, add --format png;" in err
        assert err.index("--format png") < err.index("--restart")
    args = run_args(man, clean_run, ckpt)
    args[args.index("--size") + 1] = "64"
    assert main(args) == 2
    assert "changed: size 32 -> 64); to continue it, add --size 32" in capsys.readouterr().err
    assert main([*run_args(man, clean_run, ckpt, "--recolor")]) == 2
    # (a flag to leave out is said so: "add no --recolor" read as a flag that does not exist)
    assert (f"recolor False -> True); to continue it, leave out --recolor (the images this job skipped as "
            f"colour are coloured by colorize run -o {clean_run} --redo {clean_run}/audit-skipped.txt --recolor, "
            "after colorize audit lists them);") in capsys.readouterr().err
    # a dry run answers as the run would: refused, exit 2, the same reasons
    assert main([*run_args(man, clean_run, ckpt, "--recolor", "--dry-run")]) == 2
    err = capsys.readouterr().err
    assert "dry run: a real run would be refused:" in err and "leave out --recolor" in err


def test_dry_run_restart_says_what_restart_does(archive, clean_run, ckpt, capsys):
    _, man = archive
    assert main(run_args(man, clean_run, ckpt, "--format", "jpeg", "--dry-run", "--restart")) == 0
    out = capsys.readouterr().out
    assert "0 committed, 9 pending" in out and "would be discarded first" in out
    # counted as the restart would do it (a trial's dry run said what, not how many)
    assert ("and 34 outputs it wrote removed; 0 moved to quarantine/ (altered since, or ours where "
            "the new job writes); 0 that colorize did not write left)") in out, out
    assert "refused" not in out


def test_restart_on_a_new_outdir_is_a_first_run(archive, ckpt, tmp_path, capsys):
    """--restart in a job spec or a habit: with nothing to discard, the job simply runs."""
    _, man = archive
    assert main(run_args(man, tmp_path / "out", ckpt, "--restart")) == 0
    assert (tmp_path / "out" / "job.json").is_file() and "done: 34 ok" in capsys.readouterr().out


def test_second_run_on_locked_outdir_is_refused(archive, ckpt, tmp_path, capsys):
    with RunLock(tmp_path / "out"):  # busy, not broken: cron tries again tomorrow (EX_TEMPFAIL)
        assert main(run_args(archive[1], tmp_path / "out", ckpt)) == 75
    assert "another run is using" in capsys.readouterr().err


def test_a_lock_left_by_a_colleague_is_taken_over_unless_held(tmp_path, monkeypatch):
    """A run killed on a team's share left OUTDIR/.lock, mode 644 and another user's: the next
    user's resume was refused with 'Permission denied'. Locked by no one, it is taken over;
    held, the run is busy. (Read-only stands for a colleague's file; root, whom no mode stops,
    is refused its writing as such a user is.)"""
    from pipeline.client.outdir import Busy

    out = tmp_path / "share"
    out.mkdir()
    lock = out / ".lock"
    lock.write_text("pid 1 on elsewhere")
    lock.chmod(0o444)
    real_open = os.open

    def as_a_colleague(path, flags, *a):
        if Path(path) == lock and flags & os.O_RDWR and not lock.stat().st_mode & 0o200:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", as_a_colleague)
    with open(lock) as held:  # a colleague's run still going: busy, the file kept
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Busy, match=r"another run is using .* \(pid 1 on elsewhere\)"):
            RunLock(out).__enter__()
        fcntl.flock(held, fcntl.LOCK_UN)
    with RunLock(out):  # it ended (killed): the lock is this user's now
        assert lock.read_text().startswith(f"pid {os.getpid()} ")
        assert lock.stat().st_mode & 0o777 == (0o666 & ~_umask()) | 0o044  # who holds it: readable
    assert sorted(p.name for p in out.iterdir()) == []  # let go: no lock, no stray file
    # a link planted as the lock (anyone who writes a shared folder can) is not written through
    from pipeline.errors import JobError

    victim = tmp_path / "notes.txt"
    victim.write_text("precious")
    lock.symlink_to(victim)
    with pytest.raises(JobError, match="is a link, not a lock this tool made"):
        RunLock(out).__enter__()
    assert victim.read_text() == "precious"
    # two colleagues taking over the same stale lock at once: the one that looks second finds
    # it replaced by the first's and looks again, never holding a lock no longer at the path
    lock.unlink()
    lock.write_text("pid 1 on elsewhere")
    monkeypatch.undo()

    def taken_meanwhile(path, flags, *a):
        fd = real_open(path, flags, *a)
        if Path(path) == lock and flags == os.O_RDONLY | os.O_NOFOLLOW:
            lock.rename(tmp_path / "old-lock")
            lock.write_text("pid 2 on the first colleague's machine")
        return fd

    monkeypatch.setattr(os, "open", taken_meanwhile)
    assert RunLock(out)._left_by_another_user(lock) is None


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_dry_run_runs_nothing(archive, ckpt, tmp_path, capsys):
    assert main(run_args(archive[1], tmp_path / "out", ckpt, "--dry-run")) == 0
    assert "9 pending (34 of 34 images)" in capsys.readouterr().out
    assert not (tmp_path / "out" / "results").exists()


def test_resume_after_sigkill_is_identical(archive, clean_run, ckpt, tmp_path):
    _, man = archive
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline", *run_args(man, out, ckpt, "--workers", "1",
                                                         "--window", "1")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if len(list((out / "results").glob("shard-*.parquet"))) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, scheduler and workers: no polite stop
        proc.wait()
    done = len(list((out / "results").glob("shard-*.parquet")))
    assert 2 <= done < 9, f"kill landed after {done} shards"
    assert main(run_args(man, out, ckpt)) == 0
    assert comparable(out) == comparable(clean_run)
    assert image_files(out) == image_files(clean_run)
    ids = Outdir(out).read_results().column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 34
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_scheduler_and_workers_as_separate_processes(archive, clean_run, ckpt, tmp_path, capsys):
    _, man = archive
    sfile = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--scheduler-file", str(sfile),
                               "--port", "0", "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for _ in range(600):
            if sfile.exists() and sfile.stat().st_size:
                break
            time.sleep(0.1)
        addr = json.loads(sfile.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", addr, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        from distributed import Client

        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        out = tmp_path / "out"
        assert main(run_args(man, out, ckpt, "--scheduler", addr, "--workers", "3")) == 0
        # the cluster's workers run it: --workers said unused, not dropped without a word
        assert f"--workers 3 not used: the run goes on the workers of the cluster at {addr}" in capsys.readouterr().out
        assert comparable(out) == comparable(clean_run)
        assert image_files(out) == image_files(clean_run)
        # the scheduler killed under a run: its one-line message, not dask's client's ERROR
        # lines and tracebacks (distributed.client has a log level of its own)
        # (its client waits this long to reconnect: the run ends at once all the same, not once
        # the client gives up; it waited 30 s in silence, dask's default)
        again = tmp_path / "again"
        run = subprocess.Popen([sys.executable, "-m", "pipeline", *run_args(
            man, again, ckpt, "--scheduler", addr, "--window", "1")], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "900s"})
        deadline = time.time() + 120
        while not list((again / "results").glob("shard-*")) and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(procs[0].pid, signal.SIGKILL)
        try:
            err = run.communicate(timeout=120)[1]
        finally:
            run.kill()  # (a run that hangs is not left behind the test)
        assert run.returncode == 1 and "committed shards are intact; resume with:" in err, err
        assert "ERROR" not in err and "Traceback" not in err and len(err.splitlines()) <= 3, err
        # (not dask's words, which named a shard "cancelled" that a worker went on to commit)
        assert "cancelled for reason" not in err and "shard-0" not in err, err
        st = subprocess.run([sys.executable, "-m", "pipeline", "status", str(again)],
                            capture_output=True, text=True)  # its hint: the cluster the run used
        assert f"resume with: colorize run -o {again} --scheduler {addr}" in st.stdout, st.stdout
        # advice to redo inside the job names the cluster too (pasted without it, it ran on a
        # local cluster and the job forgot the cluster); a bare rerun with work says where it runs
        from pipeline.client.audit import redo_errors_advice

        assert f"--redo {again}/audit-errors.txt --scheduler {addr}" in redo_errors_advice(str(again))
        assert main(run_args(man, out, ckpt)) == 0  # nothing to do: the cluster stays recorded
        assert json.loads((out / "job.json").read_text())["scheduler"] == addr
        r = subprocess.run([sys.executable, "-m", "pipeline", "run", "-o", str(again), "-q"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and (f"the job's last run used the dask cluster at {addr}; this one "
                                      f"starts a local cluster here") in r.stdout, r.stdout
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_audit_finds_damage_and_repair_fixes_exactly_it(archive, clean_run, ckpt, tmp_path, capsys):
    import shutil

    _, man = archive
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    job = json.loads((out / "job.json").read_text())
    assert main(["audit", str(out), "-q"]) == 0
    rows = sorted(Outdir(out).read_results().to_pylist(), key=lambda r: r["output_path"])
    corrupt, deleted = out / rows[3]["output_path"], out / rows[20]["output_path"]
    corrupt.write_bytes(corrupt.read_bytes()[:-10] + b"0123456789")
    deleted.unlink()
    # ours, claimed by no row: a row's output name (another format's), as a run killed before
    # its commit leaves it
    stray_rel = os.path.splitext(rows[5]["output_path"])[0] + ".tif"
    stray = out / stray_rel
    stray.write_bytes((out / rows[5]["output_path"]).read_bytes())
    theirs = out / "images" / "box0" / "notes.txt"  # the user's: never a discrepancy, never moved
    theirs.write_bytes(b"not ours")
    retouched = out / "images" / "box0" / "retouched copy.png"  # our metadata kept, not our name
    retouched.write_bytes((out / rows[6]["output_path"]).read_bytes())
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"corrupt_output: {rows[3]['output_path']} (sha256 differs)" in err
    assert f"missing_output: {rows[20]['output_path']}" in err
    assert f"stray_output: {stray_rel}" in err
    assert "1 file in images/ that colorize did not write (left alone): images/box0/notes.txt; " \
           "1 file in images/ with colorize's provenance at names no row gives (renamed, copied or " \
           "retouched) (left alone): images/box0/retouched copy.png" in err
    report = json.loads((out / "audit.json").read_text())
    assert report["problem_counts"] == {"corrupt_output": 1, "missing_output": 1, "stray_output": 1}
    html_text = (out / "audit.html").read_text()
    assert "FAIL" in html_text and "data:image/jpeg;base64," in html_text
    untouched = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")
                 if p not in (corrupt, stray, retouched)}
    assert main(run_args(man, out, ckpt, "--repair")) == 0
    out_text = capsys.readouterr().out
    assert "repairing 2 images in 2 shards" in out_text or "repairing 2 images in 1 shard" in out_text
    assert "done: 2 ok, 0 error, 0 skipped" in out_text
    assert not stray.exists() and (out / "quarantine" / stray_rel).exists()
    assert theirs.read_bytes() == b"not ours" and retouched.exists()
    theirs.unlink()
    retouched.unlink()
    assert image_files(out) == image_files(clean_run)
    assert comparable(out) == comparable(clean_run)
    # exactly those two were rewritten
    assert untouched == {p: p.stat().st_mtime_ns for p in untouched}
    assert json.loads((out / "job.json").read_text()) == job
    assert main(["audit", str(out), "-q"]) == 0


def test_a_damaged_or_stray_results_file_is_named_and_repair_mends_it(archive, clean_run, ckpt, tmp_path, capsys):
    """A results file cut short (a disk's damage, a copy stopped half-way) and one copied in for a
    shard the job does not have: audit names both (exit 1, not a traceback), status says so,
    export refuses in one line, and --repair sets them aside and runs the damaged shard again."""
    import shutil

    _, man = archive
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    res = out / "results"
    good = (res / "shard-00001.parquet").read_bytes()
    retouched = out / pq.read_table(res / "shard-00001.parquet").column("output_path")[0].as_py()
    retouched.write_bytes(retouched.read_bytes() + b"retouched")  # a curator's work in that shard
    (res / "shard-00001.parquet").write_bytes(good[:300])
    shutil.copy(res / "shard-00000.parquet", res / "shard-00099.parquet")
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "damaged_result: results/shard-00001.parquet" in err
    assert "extra_result: results/shard-00099.parquet" in err
    assert "fix the outputs and results with `colorize run -o" in err
    counts = json.loads((out / "audit.json").read_text())["problem_counts"]
    assert counts == {"damaged_result": 1, "extra_result": 1, "no_result": SHARD}  # no duplicates
    assert main(["status", str(out)]) == 3  # a job not whole, as run and audit say it
    o = capsys.readouterr()
    assert f"shards 8 committed, 0 pending of 9; images {34 - SHARD} ok" in o.out
    assert ("1 results file damaged (shard 1: not counted above); 1 results file for no shard of "
            "the job (shard-00099.parquet: not counted above)") in o.err
    assert main(["export", str(out), str(tmp_path / "e.csv")]) == 2
    err = capsys.readouterr().err
    assert "shard-00001.parquet is damaged (" in err and "--repair` sets it aside" in err
    assert "Could not open" not in err and "footer" in err  # Arrow's reason, whole, its path said once
    assert len(err.strip().splitlines()) == 1
    summ = tmp_path / "night.json"  # a plain rerun says it too, and its exit code and outcome
    assert main(["run", "-o", str(out), "-q", "--summary-json", str(summ)]) == 3
    o = capsys.readouterr().out
    assert (f"nothing to run without --repair: 1 results file of {out} is damaged (shard 1), the other "
            f"shards committed; colorize run -o {out} --repair colorizes its shard again") in o, o
    assert "nothing to do" not in o  # a trial read "nothing to do", then "but ... damaged"
    assert "recorded in commits.jsonl" not in o  # the stray is no late commit of the job's
    lost = (res / "shard-00002.parquet").read_bytes()
    (res / "shard-00002.parquet").unlink()  # a run with work to do says it too, after its own
    assert main(["run", "-o", str(out), "-q"]) == 3
    o = capsys.readouterr().out
    assert "but 1 results file of the job is damaged (shard 1: not counted above): colorize run -o" in o, o
    assert (res / "shard-00002.parquet").exists() and lost
    night = json.loads(summ.read_text())
    assert night["outcome"] == "damaged" and night["pid"] == os.getpid()  # and when, and by whom:
    # a monitor tells a stale file from tonight's
    assert abs(dt.datetime.fromisoformat(night["written"]) - dt.datetime.now(dt.timezone.utc)).total_seconds() < 600
    assert main(["review", str(out), "--no-browser"]) == 2  # before a server that would fail
    assert "shard-00001.parquet is damaged (" in capsys.readouterr().err
    # its dry run says what the repair would do, and does none of it (a trial's said "0 pending")
    report = (out / "audit.json").stat()
    assert main(run_args(man, out, ckpt, "--repair", "--dry-run")) == 0
    assert (out / "audit.json").stat().st_ino == report.st_ino  # not even the audit's report written
    o = capsys.readouterr().out
    assert "would move a damaged results file to quarantine/results/shard-00001.parquet; its shard runs again" in o, o
    assert "would move a stray results file to" in o and "dry run: 9 shards, 8 committed, 1 pending" in o, o
    assert not (out / "quarantine").exists() and (res / "shard-00001.parquet").read_bytes() == good[:300]
    assert main(run_args(man, out, ckpt, "--repair")) == 0
    o = capsys.readouterr().out
    assert "moved a damaged results file to" in o and "its shard runs again" in o
    assert "committed before is gone" not in o  # a trial's repair then said so of the file it moved
    assert "moved a stray results file to" in o
    assert f"done: {SHARD} ok" in o
    assert (out / "quarantine" / "results" / "shard-00001.parquet").read_bytes() == good[:300]
    assert "moved its 4 outputs to quarantine/" in o  # no record proves them unaltered: kept
    kept = out / "quarantine" / retouched.relative_to(out)
    assert kept.read_bytes().endswith(b"retouched") and not retouched.read_bytes().endswith(b"retouched")
    assert image_files(out) == image_files(clean_run)
    assert comparable(out) == comparable(clean_run)
    assert main(["audit", str(out), "-q"]) == 0
    # a file manager's copy: named, never read as the job's (no rows twice in the export)
    shutil.copy(res / "shard-00002.parquet", res / "shard-00002 (1).parquet")
    capsys.readouterr()
    assert main(["export", str(out), str(tmp_path / "e.csv")]) == 0
    assert "34 images" in capsys.readouterr().out
    assert main(["audit", str(out), "-q"]) == 1
    assert "extra_result: results/shard-00002 (1).parquet" in capsys.readouterr().err
    assert main(["run", "-o", str(out), "--repair", "-q"]) == 0 and main(["audit", str(out), "-q"]) == 0


def test_audit_of_changed_or_missing_originals_says_what_fixes_them(archive, clean_run, ckpt, tmp_path, capsys,
                                                                   monkeypatch):
    """--repair rewrites outputs; it cannot bring an original back, and a changed original is
    colorized again only on request (--redo): the advice says so, and never points in a circle."""
    import shlex
    import shutil

    from pipeline.client.manifest import resolve_path

    _, man = archive
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    rows = sorted(Outdir(out).read_results().to_pylist(), key=lambda r: r["source_path"])
    stored = [r["source_path"] for r in rows if r["status"] == "ok"][:3]
    paths = [resolve_path(str(man), p) for p in stored]
    originals = {p: Path(p).read_bytes() for p in paths[:2]}
    import pipeline.client.audit as audit_mod

    real_read = audit_mod.read_source

    def read(path):  # the third unreadable to this user (tests run as root: no chmod for it)
        if path == paths[2]:
            raise PermissionError(13, "Permission denied", path)
        return real_read(path)

    try:
        Path(paths[0]).write_bytes(originals[paths[0]] + b"\0")
        Path(paths[1]).unlink()
        capsys.readouterr()
        with monkeypatch.context() as m:
            m.setattr(audit_mod, "read_source", read)
            assert main(["audit", str(out), "-q", "--check-inputs"]) == 1  # all checked, a report
        err = capsys.readouterr().err
        assert f"input_unreadable: {stored[2]} (Permission denied)" in err
        assert "unreadable originals: give this user read permission" in err
        assert "--repair" not in err
        assert f"1 original changed since colorized: colour again from them with `colorize run -o {out} " \
               f"--redo {shlex.quote(stored[0])}`" in err
        assert "missing originals: put them back where the manifest says" in err
        Path(paths[1]).write_bytes(originals[paths[1]])
        assert main(["run", "-o", str(out), "--redo", stored[0], "-q"]) == 0  # the advice works
        assert main(["audit", str(out), "-q", "--check-inputs"]) == 0
    finally:
        for p, data in originals.items():
            Path(p).write_bytes(data)


def test_audit_html_escapes_file_names(tmp_path, ckpt):
    root = tmp_path / "a"
    root.mkdir()
    evil = root / "<script>alert(1)<script>.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(evil)
    (root / "&<broken>.png").write_bytes(b"")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(root), "-o", str(man), "-q"]) == 0
    assert main(run_args(man, tmp_path / "out", ckpt, "--workers", "1")) == 0
    assert main(["audit", str(tmp_path / "out"), "-q"]) == 0
    text = (tmp_path / "out" / "audit.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&<broken>" not in text and "&amp;&lt;broken&gt;" in text and "empty file" in text


def test_worker_killed_mid_run_loses_nothing(archive, clean_run, ckpt, tmp_path, users_cluster):
    """SIGKILL a worker process while shards are in flight: its shard is retried elsewhere."""
    import threading


    _, man = archive
    out = tmp_path / "out"
    with users_cluster(2) as (cluster, client):
        killed = []

        def killer():
            # the first worker seen running a shard is killed in the middle of it (the first
            # shard a worker runs also loads the model, so there is time to catch it)
            while not killed:
                for addr, keys in client.processing().items():
                    if any(str(k).startswith("shard-") for k in keys):
                        pid = client.run(worker_pid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.append((pid, list(keys)))
                        return
                time.sleep(0.005)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        assert main(run_args(man, out, ckpt, "--scheduler", cluster.scheduler_address,
                             "--window", "4")) == 0
        th.join(5)
    assert killed
    assert comparable(out) == comparable(clean_run)
    assert image_files(out) == image_files(clean_run)
    assert main(["audit", str(out), "-q"]) == 0


def test_a_local_worker_that_does_not_come_back_is_started_anew(archive, clean_run, ckpt, tmp_path, capsys):
    """The run's own local cluster: its only worker is killed mid-shard and its nanny's restart
    is given up at once (as dask does after 15 s, which a loaded machine reaches): a new worker
    is started, and the run ends as an undisturbed one does (it waited for ever on none)."""
    import threading

    import dask
    import psutil

    from pipeline.client.cluster import TRACKER

    _, man = archive
    out = tmp_path / "out"
    killed: list[int] = []
    done = threading.Event()

    def running() -> bool:
        # a worker killed while its nanny still starts it fails the cluster's start instead
        # (CI, under load, once): killed only once the run's cluster has it running
        from pipeline.client import cluster as cl

        return any(k.cluster.workers and all(n.process is not None and n.process.status.name == "running"
                                             for n in k.cluster.workers.values()) for k in list(cl._ACTIVE))

    def kill_the_first_at_work():
        # a worker of ours holding torch (some 300 MB; idle, 100) is running its first shard
        while not done.is_set() and not killed:
            if not running():
                time.sleep(0.01)
                continue
            for k in psutil.Process().children(recursive=True):
                try:
                    if TRACKER not in " ".join(k.cmdline()) and k.memory_info().rss > 250e6:
                        k.kill()
                        killed.append(k.pid)
                        break
                except psutil.Error:
                    continue
            time.sleep(0.01)

    th = threading.Thread(target=kill_the_first_at_work, daemon=True)
    th.start()
    try:
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
            assert main(run_args(man, out, ckpt, "--workers", "1", "--threads", "1")) == 0
    finally:
        done.set()
        th.join(5)
    assert killed
    assert "the local cluster's worker 0 did not come back after it died" in "".join(capsys.readouterr())
    assert comparable(out) == comparable(clean_run)
    assert image_files(out) == image_files(clean_run)


def test_random_sigkills_then_rerun_completes_identically(archive, clean_run, ckpt, tmp_path):
    import random

    _, man = archive
    out = tmp_path / "out"
    rng = random.Random(7)
    cmd = [sys.executable, "-m", "pipeline", *run_args(man, out, ckpt, "--window", "1")]
    for _ in range(3):
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main(run_args(man, out, ckpt)) == 0
    assert main(["audit", str(out), "-q"]) == 0
    assert comparable(out) == comparable(clean_run)
    assert image_files(out) == image_files(clean_run)


def test_unwritable_output_fails_loudly_and_keeps_committed_shards(archive, ckpt, tmp_path, capsys):
    _, man = archive
    out = tmp_path / "out"
    assert main(run_args(man, out, ckpt)) == 0  # a job; then its results gone, as if never run
    for f in (out / "results").glob("*.parquet"):
        f.unlink()
    shutil.rmtree(out / "images" / "box1")
    # A file where a folder must go: writing fails even for root (chmod would not stop root).
    (out / "images" / "box1").write_text("in the way")
    capsys.readouterr()
    assert main(run_args(man, out, ckpt, "--window", "1", "--retries", "0")) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "cannot write" in err and "committed shards are intact" in err
    committed = sorted((out / "results").glob("shard-*.parquet"))
    for f in committed:  # whatever committed before the failure is whole and readable
        assert pq.read_table(f).num_rows == SHARD
    (out / "images" / "box1").unlink()
    assert main(run_args(man, out, ckpt)) == 0
    assert main(["audit", str(out), "-q"]) == 0


def test_gpu_job_without_gpu_workers_fails_clearly(archive, ckpt, tmp_path, capsys):
    from distributed import LocalCluster

    _, man = archive
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit=0) as cluster:
        t0 = time.time()
        rc = main(run_args(man, tmp_path / "out", ckpt, "--scheduler", cluster.scheduler_address,
                           "--device", "cuda", "--resource-timeout", "2"))
        assert rc == 2 and time.time() - t0 < 60
        err = capsys.readouterr().err
        assert "no worker of the cluster offers the GPU resource after 2 s" in err
        assert "--resources GPU=1" in err and "or run with --device cpu" in err
        # the advice works: nothing ran, so the job was not fixed on cuda
        assert not (tmp_path / "out" / "job.json").exists()
        assert main(run_args(man, tmp_path / "out", ckpt, "--scheduler", cluster.scheduler_address,
                             "--device", "cpu")) == 0


def test_chaos_random_worker_kills(archive, clean_run, ckpt, tmp_path, users_cluster):
    """Workers SIGKILLed at random while the job runs; nannies restart them; nothing changes."""
    import random
    import threading


    _, man = archive
    out = tmp_path / "out"
    rng = random.Random(3)
    kills: list[int] = []
    done = threading.Event()
    with users_cluster(2, allowed_failures=20) as (cluster, client):

        def chaos():
            # the first kill as soon as a shard is running (so there always is one), then more
            # at random moments while the job lasts
            while not done.is_set() and not kills:
                busy = [a for a, keys in client.processing().items() if keys]
                if busy:
                    os.kill(client.run(worker_pid, workers=busy[:1])[busy[0]], signal.SIGKILL)
                    kills.append(busy[0])
                time.sleep(0.005)
            while not done.wait(rng.uniform(0.3, 1.0)) and len(kills) < 4:
                # a worker killed while its nanny still waits for it to start closes that nanny
                # for good (distributed's Nanny.instantiate): both lost, the run waits for ever
                if not all(n.process is not None and n.process.status.name == "running"
                           for n in cluster.workers.values()):
                    continue
                try:
                    pids = list(client.run(worker_pid, wait=True).values())
                except Exception:
                    continue  # a worker is restarting
                if not pids:
                    continue  # every worker is restarting (a loaded machine restarts slowly)
                pid = rng.choice(pids)
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)

        th = threading.Thread(target=chaos, daemon=True)
        th.start()
        try:
            assert main(run_args(man, out, ckpt, "--scheduler", cluster.scheduler_address,
                                 "--window", "4", "--batch-size", "4")) == 0
        finally:
            done.set()
            th.join(10)
    assert kills, "no worker was killed: the chaos never happened"
    assert main(["audit", str(out), "-q"]) == 0
    assert comparable(out) == comparable(clean_run)
    assert image_files(out) == image_files(clean_run)


def test_a_shard_whose_worker_died_each_try_is_tried_alone_in_the_same_bytes(archive, clean_run, ckpt,
                                                                              tmp_path, capsys, users_cluster):
    """dask gives up on a shard whose worker died each time it was tried (KilledWorker; here
    one try is allowed, and the worker is killed once): the shard is tried again with its images
    one at a time (tests/test_alone.py), and commits what an undisturbed run writes."""

    _, man = archive
    with users_cluster(1, allowed_failures=0) as (cluster, client):
        def kill_the_first():
            while True:
                busy = [a for a, keys in client.processing().items() if keys]
                if busy:
                    os.kill(client.run(worker_pid, workers=busy[:1])[busy[0]], signal.SIGKILL)
                    return
                time.sleep(0.005)

        import threading

        threading.Thread(target=kill_the_first, daemon=True).start()
        assert main(run_args(man, tmp_path / "out", ckpt, "--scheduler", cluster.scheduler_address,
                             "--retries", "0")) == 0
    assert "trying its images one at a time" in capsys.readouterr().out
    assert comparable(tmp_path / "out") == comparable(clean_run)
    assert image_files(tmp_path / "out") == image_files(clean_run)
    assert main(["audit", str(tmp_path / "out"), "-q"]) == 0


def test_outdir_alone_resumes_and_repairs(archive, clean_run, ckpt, capsys):
    """job.json holds the job: `colorize run -o OUTDIR` resumes it, `--repair` needs nothing more."""
    assert main(["run", "-o", str(clean_run), "-q"]) == 0
    cap = capsys.readouterr()
    assert "nothing to do" in cap.out and "reading the job recorded in" in cap.err
    assert main(["run", "-o", str(clean_run), "--restart", "--dry-run"]) == 0  # not "continuing"
    assert capsys.readouterr().err.startswith(f"starting over the job recorded in {clean_run}/job.json")
    victim = next((clean_run / "images").rglob("*.png"))
    victim.unlink()
    assert main(["run", "-o", str(clean_run), "--repair", "-q"]) == 0
    assert victim.exists()
    # the run's own count, then the whole job's
    assert "done: 1 ok, 0 error, 0 skipped in" in (o := capsys.readouterr().out), o
    assert re.search(r"images/s; ended \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+\)", o), o  # when, in the log
    assert "; the job: 34 ok, 0 error, 0 skipped of 34 images;" in o
    # a flag named on the line still counts, and a change is refused as ever
    summary = clean_run.parent / "sum.json"
    assert main(["run", "-o", str(clean_run), "--format", "tiff", "-q", "--summary-json", str(summary)]) == 2
    assert "format png -> tiff" in capsys.readouterr().err
    said = json.loads(summary.read_text())  # a monitor reads this run's end, not the last good one
    assert said["outcome"] == "refused" and "format png -> tiff" in said["reason"]
    assert said["job"]["ok"] == 34 and said["job"]["pending"] == 0
    assert main(["run", "-o", str(clean_run), "-q", "--summary-json", str(summary)]) == 0
    assert json.loads(summary.read_text())["outcome"] == "nothing_to_do"
    assert main(["run", "-o", str(clean_run), "-q", "--summary-json", "/no/such/dir/s.json"]) == 2
    assert "--summary-json /no/such/dir/s.json: name a file in a folder that exists" in capsys.readouterr().err
    # refused before the run begins (the night's share not mounted): said in the summary too
    assert main(["run", "-o", str(clean_run), "-q", "--manifest", "/mnt/gone/m.parquet",
                 "--summary-json", str(summary)]) == 2
    assert json.loads(summary.read_text())["outcome"] == "refused"
