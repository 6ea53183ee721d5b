"""Catalogue in, catalogue out (issue 24): a museum's 104 scans in five collection folders, names
with spaces and umlauts, and the catalogue as German Excel exports it (semicolons, Windows-1252,
CRLF, quoted cells with quotes, separators and line breaks inside), which lists 97 of the files,
one file that is not there, and one file twice. Every record survives scan, run and export."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pyarrow.parquet as pq
import pytest
from conftest import on_cluster
from PIL import Image

COLLECTIONS = ["Sammlung Müller", "Fotos 1890er", "Glasplatten", "Nachlass Schäfer",
               "Postkarten & Drucke"]
# Cells as people type them into Excel; all of them Windows-1252.
HOSTILE = ['Das "Rote" Haus; Müller & Söhne', 'Lawrence & Söhne <Fassade>, "Hauptstraße"',
           "zwei\nZeilen", "drei\r\nZeilen; mit Semikolon", " führende Leerzeichen ", "=SUMME(A1:A2)",
           "007", "Tab\tim Text", '""', "", 'Ende mit "', "€ – „Anführung“", ";;;", "Apostroph's",
           "Straße (Köln)"]


MISJUDGED = (10, 56)  # two scans the classifier calls colour: skipped, until redone


CLUSTER = ""  # where the runs of a test asking for `warm` go (conftest.warm); else a local cluster


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline", *on_cluster(args, CLUSTER)],
                          capture_output=True, text=True, timeout=600, **kw)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def museum(tmp_path_factory):
    """104 scans, and katalog.csv: 97 of them listed, + 1 missing file, + 1 repeated row."""
    root = tmp_path_factory.mktemp("museum")
    scans = root / "scans"
    rng = np.random.default_rng(24)
    files = []
    for i in range(104):
        folder = scans / COLLECTIONS[i % 5]
        folder.mkdir(parents=True, exist_ok=True)
        ext = (".png", ".jpg", ".tif")[i % 3]
        p = folder / f"Bild {i:03d} Straße{ext}"
        px = rng.integers(40, 220, (24, 32, 3) if i in MISJUDGED else (24, 32), dtype=np.uint8)
        Image.fromarray(px).save(p, **({"quality": 90} if ext == ".jpg" else {}))
        files.append(p)
    listed = files[:97]
    records = [[f"INV-{1900 + i}", str(p.relative_to(scans)), HOSTILE[i % len(HOSTILE)]]
               for i, p in enumerate(listed)]
    records.append(["INV-9999", "Glasplatten/verschollen.tif", "nicht mehr da"])
    records.insert(40, [records[3][0] + "b", records[3][1], "doppelt erfasst"])
    with open(scans / "katalog.csv", "w", newline="", encoding="cp1252") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\r\n")  # as German Excel writes
        w.writerow(["Inventarnummer", "Datei", "Titel"])
        w.writerows(records)
    return dict(root=root, scans=scans, files=files, records=records,
                expected={str(scans / r[1]): r for r in records[:40] + records[41:97 + 1]})


def catalogue_cells(manifest: Path) -> dict[str, tuple]:
    t = pq.read_table(manifest).to_pylist()
    return {r["path"]: (r["Inventarnummer"], r["Datei"], r["Titel"]) for r in t}


@pytest.mark.slow
def test_scan_merges_in_either_order_and_names_every_mismatch(museum, tmp_path):
    scans = museum["scans"]
    kw = ["--path-column", "Datei", "-q", "--shard-size", "16"]
    a = run_cli("scan", scans, scans / "katalog.csv", "-o", tmp_path / "a.parquet", *kw,
                "--report", tmp_path / "mismatches.csv")
    b = run_cli("scan", scans / "katalog.csv", scans, "-o", tmp_path / "b.parquet", *kw)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    for r in (a, b):
        assert "7 files found but not in the catalogue" in r.stderr
        assert "1 catalogue row names a file that is not there" in r.stderr
        assert "1 file listed twice (the first row kept)" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 8
    cells_a, cells_b = catalogue_cells(tmp_path / "a.parquet"), catalogue_cells(tmp_path / "b.parquet")
    assert cells_a == cells_b  # the order of the sources changes nothing
    assert len(cells_a) == 105  # 104 files and the missing one, which gets its error row
    for path, rec in museum["expected"].items():
        assert cells_a[str(Path(path))] == tuple(rec), path  # every cell as written
    unlisted = [str(p) for p in museum["files"][97:]]
    assert all(cells_a[p] == (None, None, None) for p in unlisted)
    # in the catalogue's own separator, as Excel in its locale opens it
    with open(tmp_path / "mismatches.csv", newline="", encoding="utf-8-sig") as f:
        kinds = [r["kind"] for r in csv.DictReader(f, delimiter=";")]
    assert sorted(kinds) == ["duplicate"] + ["missing"] + ["uncatalogued"] * 7


@pytest.mark.slow
def test_records_survive_run_and_export_byte_exact(museum, tmp_path, ckpt, warm):
    scans = museum["scans"]
    man = tmp_path / "m.parquet"
    r = run_cli("scan", scans, scans / "katalog.csv", "-o", man, "--path-column", "Datei", "-q",
                "--shard-size", "16")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    res = {x["source_path"]: x for x in pq.read_table(out / "results").to_pylist()}
    for path, rec in museum["expected"].items():
        assert (res[path]["Inventarnummer"], res[path]["Datei"], res[path]["Titel"]) == tuple(rec)

    # CSV: UTF-8 with a BOM, the catalogue's own separator, its columns first and as written
    r = run_cli("export", out, tmp_path / "results.csv")
    assert r.returncode == 0, r.stderr
    raw = (tmp_path / "results.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfInventarnummer;Datei;Titel;status;")
    with open(tmp_path / "results.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, body = rows[0], rows[1:]
    got = {tuple(x[:3]) for x in body}
    assert {tuple(r) for r in museum["expected"].values()} <= got
    assert len(body) == 105
    # in the catalogue's own order (its repeated row left out), then the files it does not list
    in_order = [r[0] for k, r in enumerate(museum["records"]) if k != 40]
    assert [x[0] for x in body] == in_order + [""] * 7
    # the files it does not list named as its own cells name theirs: relative to its folder
    assert sorted(x[1] for x in body[-7:]) == sorted(str(p.relative_to(scans)) for p in museum["files"][97:])
    from pipeline.client.outdir import Outdir  # the review page's grid, unsorted, alike
    from pipeline.client.runview import RunView

    grid = RunView(Outdir(str(out))).page({})["rows"]
    assert [g["catalogue"]["Inventarnummer"] for g in grid] == (in_order + [None] * 7)[:100]
    out_col = header.index("output_path")
    assert all(not Path(x[out_col]).is_absolute() for x in body if x[out_col])

    # a real workbook, read by a real reader: the same cells
    r = run_cli("export", out, tmp_path / "results.xlsx")
    assert r.returncode == 0, r.stderr
    ws = openpyxl.load_workbook(tmp_path / "results.xlsx").active
    xrows = [[c.value for c in row] for row in ws.iter_rows()]
    assert xrows[0][:4] == ["Inventarnummer", "Datei", "Titel", "status"]
    xcells = {tuple("" if v is None else v for v in x[:3]) for x in xrows[1:]}
    assert {tuple(r) for r in museum["expected"].values()} <= xcells
    inv = xrows[0].index("Inventarnummer")
    assert all(ws.cell(i + 2, inv + 1).data_type == "s" for i in range(len(xrows) - 1)
               if xrows[i + 1][inv] is not None)  # text, never a number or a formula

    # the record in the file itself: XMP, read back by exiftool
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    some = [p for p in museum["expected"]][:6]
    outs = [str(out / res[p]["output_path"]) for p in some if res[p]["status"] == "ok"]
    meta = json.loads(subprocess.run(["exiftool", "-j", "-XMP:all", *outs], capture_output=True,
                                     text=True, check=True).stdout)
    for m, p in zip(meta, [p for p in some if res[p]["status"] == "ok"], strict=True):
        assert m["Identifier"] == museum["expected"][p][0]
        assert "compositeWithTrainedAlgorithmicMedia" in m["DigitalSourceType"]
        assert m["Source"] == res[p]["source_path"].split("/scans/", 1)[1]


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.slow
def test_the_users_folders_are_theirs(museum, tmp_path, ckpt, warm):
    man = tmp_path / "m.parquet"
    r = run_cli("scan", museum["scans"] / "Glasplatten", "-o", man, "-q", "--shard-size", "8")
    assert r.returncode == 0, r.stderr
    docs = tmp_path / "Dokumente"
    (docs / "images").mkdir(parents=True)
    (docs / "haushalt.txt").write_text("Miete\n")
    (docs / "images" / "notiz.txt").write_text("nicht löschen\n")
    before = listing(docs)
    r = run_cli("run", "--manifest", man, "-o", docs, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a colorize output folder" in r.stderr and "haushalt.txt" in r.stderr
    assert listing(docs) == before  # nothing written, not even a lock

    # A file of the user's inside a real OUTDIR: reported, never moved
    out = tmp_path / "out"
    assert run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q",
                   "--checkpoint", ckpt).returncode == 0
    (out / "images" / "notiz.txt").write_text("nicht löschen\n")
    r = run_cli("audit", out, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 file in images/ that colorize did not write (left alone): images/notiz.txt" in r.stdout
    # an output renamed by hand (a curator's save-as): colorize's by its provenance, said so
    first = next((out / "images").rglob("*.png"))
    shutil.copy(first, out / "images" / "Kopie.png")
    r = run_cli("audit", out, "-q")
    assert r.returncode == 0 and "1 file in images/ with colorize's provenance at names no row gives " \
        "(renamed, copied or retouched) (left alone): images/Kopie.png" in r.stdout, r.stdout
    (out / "images" / "Kopie.png").unlink()
    r = run_cli("run", "-o", out, "--repair", "-q")
    assert r.returncode == 0, r.stderr
    assert (out / "images" / "notiz.txt").read_text() == "nicht löschen\n"
    assert not (out / "quarantine").exists()
    assert not (out / ".lock").exists()  # a finished run leaves no lock behind


@pytest.mark.slow
def test_an_interruption_reads_as_one(museum, tmp_path, ckpt, warm):
    man = tmp_path / "m.parquet"
    assert run_cli("scan", museum["scans"] / "Glasplatten", "-o", man, "-q",
                   "--shard-size", "7").returncode == 0
    out = tmp_path / "out"
    assert run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q",
                   "--checkpoint", ckpt).returncode == 0
    (out / "results" / "shard-00001.parquet").unlink()  # as if killed before this commit
    (out / "results" / "shard-00002.parquet").unlink()
    ledger = out / "commits.jsonl"  # ... which a killed run never recorded (a deleted one: test_cli)
    ledger.write_text("".join(x + "\n" for x in ledger.read_text().splitlines()
                              if json.loads(x)["shard"] == 0))
    r = run_cli("status", out)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == (f"interrupted: 1 of 3 shards committed; resume with: "
                                        f"colorize run -o {out} --scheduler {CLUSTER}")
    r = run_cli("audit", out, "-q")
    assert r.returncode == 3, r.stdout + r.stderr
    first = (r.stdout + r.stderr).splitlines()[0]
    assert first.startswith("audit incomplete: interrupted: 1 of 3 shards committed; resume with:")
    assert "FAILED" not in r.stdout + r.stderr
    assert len((r.stdout + r.stderr).splitlines()) <= 4  # not a line per uncommitted image
    report = json.loads((out / "audit.json").read_text())  # nor an entry: 2 million would not do
    # the outputs the killed shards wrote before their commit are theirs, which the resume
    # writes: not strays (a trial's --repair moved them to quarantine/)
    assert report["problems"] == [] and not report["ok"]
    assert (report["pending_shards"], report["pending_images"]) == (2, report["manifest_rows"] - 7)
    assert run_cli("run", "-o", out, "-q", "--repair").returncode == 0  # as a repair does it too
    assert not (out / "quarantine").exists()
    assert run_cli("audit", out, "-q").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_twice_exits_at_once_and_says_what_is_on_disk(tmp_path, ckpt, how):
    """A terminal's Ctrl-C (twice), a batch system's SIGTERM to the run, or a closed terminal's
    SIGHUP; --summary-json says how it ended, not what the night before did."""
    import glob
    import json
    import os
    import signal
    import time

    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(6)
    for i in range(80):  # enough work that the run is mid-way when Ctrl-C comes
        Image.fromarray(rng.integers(0, 255, (480, 640), dtype=np.uint8)).save(src / f"{i:02d}.jpg")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", src, "-o", man, "-q", "--shard-size", "2").returncode == 0
    t0_wall = time.time()
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--manifest", str(man), "-o",
                          str(out), "-q", "--checkpoint", str(ckpt), "--size", "128",
                          "--summary-json", str(tmp_path / "sum.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True,  # its own process group, as a terminal's job
                         # a terminal's job hears these (under nohup or `&` the suite's may not)
                         preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in
                                             (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)],
                         env={**os.environ, "COLORIZE_TEST_RUN": str(tmp_path)})  # its workers inherit it
    t0 = time.monotonic()
    while not glob.glob(f"{out}/results/*.parquet") and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    import psutil

    workers = [k for k in psutil.Process(p.pid).children(recursive=True)
               if "spawn_main" in " ".join(k.cmdline())]  # the dask workers
    assert workers and all(mine(k, tmp_path) for k in workers)  # so the check below can see one
    t1 = time.monotonic()
    if how == "ctrl-c":
        os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        time.sleep(0.2)
        try:
            os.killpg(p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    else:
        p.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)  # Slurm's stop
    _, err = p.communicate(timeout=30)
    took = time.monotonic() - t1
    assert p.returncode == {"ctrl-c": 130, "sigterm": 143, "sighup": 129}[how] and took < 8.0, (took, err)  # was 10.5 s
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    word = "interrupted" if how == "ctrl-c" else "terminated"
    said = int(err.split(f"{word}; ", 1)[1].split(" of ")[0])
    assert err.strip().endswith(f"resume with: colorize run -o {out}"), err
    time.sleep(3)  # nothing commits after the exit: no worker outlives it, none was restarted
    assert said == len(glob.glob(f"{out}/results/*.parquet"))
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["outcome"] == word and summary["job"]["committed"] == said
    # this run's own counts until the signal, not null (a time-limited batch job's said nothing
    # of the shards it had done); those the client had heard of, so at most what is on disk
    assert summary["images"] == summary["ok"] + summary["error"] + summary["skipped"] <= 2 * said, summary
    assert summary["elapsed"] > 0 and summary["job"]["gone"] == 0
    assert summary["pending_shards"] == summary["job"]["pending"] == 40 - said  # what is left to run
    assert workers and not [k for k in workers if k.is_running() and k.status() != "zombie"]
    assert not [k for k in psutil.process_iter(["cmdline", "ppid"])
                if k.info["ppid"] in (1, p.pid) and "spawn_main" in " ".join(k.info["cmdline"] or [])
                and k.create_time() > t0_wall and mine(k, tmp_path)]
    assert 1 <= said < 40
    r = run_cli("status", out)
    assert r.stdout.startswith(f"interrupted: {said} of 40 shards committed")


def mine(proc, tmp_path) -> bool:
    """A process started by this test's run (the suite runs tests two at a time: another test's
    orphaned workers are not this one's)."""
    import psutil

    try:
        return proc.environ().get("COLORIZE_TEST_RUN") == str(tmp_path)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@pytest.mark.slow
def test_redo_of_two_images_leaves_the_other_102_as_they_were(museum, tmp_path, ckpt, warm):
    scans = museum["scans"]
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", scans, scans / "katalog.csv", "-o", man, "--path-column", "Datei",
                   "-q", "--shard-size", "16").returncode == 0
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    rows = {x["image_id"]: x for x in pq.read_table(out / "results").to_pylist()}
    skipped = [x for x in rows.values() if x["status"] == "skipped"]
    gone = [x["error"] for x in rows.values() if x["status"] == "error" and not Path(x["source_path"]).exists()]
    assert gone == ["file not found: the catalogue names it, but it was not there at the scan either"]
    assert sorted(x["Inventarnummer"] for x in skipped) == [f"INV-{1900 + i}" for i in MISJUDGED]
    r = run_cli("audit", out, "-q")  # says what to do about them, with a list ready for --redo
    assert r.returncode == 0 and "2 images skipped as colour. Any that are toned" in r.stdout
    assert f"--redo {out}/audit-skipped.txt --recolor" in r.stdout
    listed = (out / "audit-skipped.txt").read_text().splitlines()
    assert sorted(listed) == sorted(x["source_path"] for x in skipped)
    missing = [x["source_path"] for x in rows.values() if x["status"] == "error"]
    assert (out / "audit-errors.txt").read_text().splitlines() == missing
    assert "could not be colorized (reasons in the report). Once their files are mended" in r.stdout
    before = {p: (sha(p), p.stat().st_mtime_ns) for p in (out / "images").rglob("*.*")}
    assert len(before) == 102  # the 104 files less the two skipped (the missing 105th has none)
    (tmp_path / "redo.csv").write_text("Inventarnummer\n" + "".join(
        f"INV-{1900 + i}\n" for i in MISJUDGED))
    r = run_cli("run", "-o", out, "--redo", tmp_path / "redo.csv", "--redo-column",
                "Inventarnummer", "--recolor", "--dry-run")  # which, and how; nothing done
    assert r.returncode == 0 and "would redo 2 images inside the job:" in r.stdout
    assert r.stdout.count("(--recolor)") == 2 and not (out / "redo.json").exists()
    r = run_cli("run", "-o", out, "--redo", tmp_path / "redo.csv", "--redo-column",
                "Inventarnummer", "--recolor", "-q")
    assert r.returncode == 0, r.stderr
    assert "redoing 2 images" in r.stdout
    after = {p: (sha(p), p.stat().st_mtime_ns) for p in (out / "images").rglob("*.*")}
    assert {p: v for p, v in after.items() if p in before} == before  # not even rewritten
    assert len(after) == len(before) + 2
    new = {x["image_id"]: x for x in pq.read_table(out / "results").to_pylist()}
    for iid, x in new.items():
        if x["Inventarnummer"] in [f"INV-{1900 + i}" for i in MISJUDGED]:
            assert x["status"] == "ok" and x["redone"] == "--recolor"
        else:
            assert x == rows[iid]  # every other row as it was
    job = json.loads((out / "job.json").read_text())
    assert job["spec"]["recolor"] is False  # the job is the same job
    r = run_cli("audit", out, "-q")
    assert r.returncode == 0 and "redone: 2 (2 with --recolor)" in r.stdout
    assert not (out / "audit-skipped.txt").exists()  # none skipped now: the old list is gone
    # the missing scan found and copied back: the audit's list of errors redoes it
    Image.new("L", (40, 30), 120).save(missing[0])
    try:
        r = run_cli("run", "-o", out, "--redo", out / "audit-errors.txt", "-q")
    finally:
        os.remove(missing[0])  # the museum's other tests want it missing
    assert r.returncode == 0 and "redoing 1 image" in r.stdout, r.stderr
    assert {x["status"] for x in pq.read_table(out / "results").to_pylist()} == {"ok"}
    assert run_cli("audit", out, "-q").returncode == 0 and not (out / "audit-errors.txt").exists()
    r = run_cli("run", "-o", out, "--redo", "nicht-da.tif")
    assert r.returncode == 2 and "--redo: 1 not in the job's manifest: 'nicht-da.tif'" in r.stderr
    r = run_cli("run", "-o", out, "--redo", "INV-0000", "--redo-column", "Inventarnummer")
    assert r.returncode == 2 and "the catalogue's 'Inventarnummer' column)" in r.stderr, r.stderr
    r = run_cli("run", "-o", out, "--redo", tmp_path / "fehlt.csv")
    assert r.returncode == 2 and f"--redo: list not found: {tmp_path / 'fehlt.csv'}" in r.stderr


@pytest.mark.slow
def test_the_report_shows_tiff_outputs_and_labels_each_record(museum, tmp_path, ckpt, warm):
    scans = museum["scans"]
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    cat = tmp_path / "glasplatten.csv"
    cat.write_text("Inventarnummer,Datei\n" + "".join(
        f"{r[0]},{scans / r[1]}\n" for r in museum["records"] if r[1].startswith("Glasplatten/")
        and (scans / r[1]).exists()), encoding="utf-8")
    assert run_cli("scan", scans / "Glasplatten", cat, "-o", man, "--path-column", "Datei",
                   "-q").returncode == 0
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt,
                "--format", "tiff")
    assert r.returncode == 0, r.stderr
    r = run_cli("audit", out, "-q", "--sheet", "all")
    page = (out / "audit-sheet-001.html").read_text()
    assert ", 1 page)" in (out / "audit.html").read_text()
    # a TIFF opens as a JPEG view in the browser (the TIFF itself linked beside it)
    views = sorted((out / "audit-previews" / "images").rglob("*.tif.jpg"))
    assert len(views) == len(list((out / "images").rglob("*.tif")))
    with Image.open(views[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 24)
    assert "href='audit-previews/images/" in page and "(TIFF file)" in page
    assert "<dt>Inventarnummer</dt><dd>INV-" in page and "<dt>source</dt>" in page
    assert "table-layout:fixed" in page and "max-width:100%" in page


@pytest.mark.slow
def test_a_run_stopped_by_a_full_disk_says_so_later_and_resumes(tmp_path, ckpt):
    """The disk fills under the outputs: the run ends (exit 1) and `status` and `audit` tell, long
    after the terminal is gone, why it stopped; the rerun on a freed disk clears that."""
    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(src / f"{i}.png")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", src, "-o", man, "-q", "--shard-size", "2").returncode == 0
    # every process of the run (client and dask workers) reads this at start-up: the outputs'
    # writes fail as on a full disk, job.json and the results' own writes do not
    full = tmp_path / "full"
    full.mkdir()
    (full / "sitecustomize.py").write_text(
        "import errno\n"
        "from pipeline import storage\n"
        "real = storage.Store.write_atomic\n"
        "def write_atomic(self, rel, data):\n"
        "    if rel.startswith('images/'):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(self, rel, data)\n"
        "storage.Store.write_atomic = write_atomic\n")
    env = {**os.environ, "PYTHONPATH": str(full)}
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt,
                "--workers", "1", "--summary-json", tmp_path / "s.json", env=env)
    assert r.returncode == 1, r.stderr
    assert "No space left on device" in r.stderr
    said = json.loads((tmp_path / "s.json").read_text())  # what this run did: nothing, not null
    assert (said["outcome"], said["images"], said["ok"], said["error"]) == ("failed", 0, 0, 0), said
    r = run_cli("status", out)
    first, second = r.stdout.splitlines()[:2]
    assert first.startswith("stopped at 20") and "by a failure: shard" in first, r.stdout
    assert "No space left on device" in first
    assert second == f"0 of 3 shards committed; resume with: colorize run -o {out}"
    r = run_cli("audit", out, "-q")
    assert r.returncode == 3
    assert r.stdout.startswith("audit incomplete: stopped by a failure (shard"), r.stdout
    assert run_cli("run", "-o", out, "-q").returncode == 0  # the disk freed: the job finishes
    r = run_cli("status", out)
    assert r.stdout.startswith(f"{out}: shards 3 committed, 0 pending"), r.stdout
    assert not (out / "stopped.json").exists()
