"""Catalogues as people have them (issue 14, items 5-8 and 10): European Excel exports, Windows
encodings, other column names, mistakes between lists and manifests, and the results as a CSV."""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import on_cluster
from PIL import Image

from pipeline.client.outdir import Outdir

pytestmark = pytest.mark.usefixtures("warm")
CLUSTER = ""  # where the runs go: the test process's warm cluster (conftest.warm)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *on_cluster(args, CLUSTER)],
                          capture_output=True, text=True, timeout=600)


def main(args) -> int:
    from pipeline.cli import main

    return main(on_cluster(args, CLUSTER))


@pytest.fixture
def scans(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("Müller 1.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(d / name)
    return d


def test_semicolon_windows_1252_catalogue_with_a_filename_column(scans, tmp_path):
    cat = scans / "catalogue.csv"
    cat.write_bytes("Inventarnr;Datei;Titel\r\nA-1;Müller 1.png;Straße\r\nA-2;b.png;Hof\r\n"
                    .encode("cp1252"))
    r = run_cli("scan", cat, "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 2 and "no 'path' column (columns: Inventarnr, Datei, Titel;" in r.stderr
    assert "use --path-column 'Datei'" in r.stderr
    r = run_cli("scan", cat, "-o", tmp_path / "m.parquet", "-q", "--path-column", "Datei")
    assert r.returncode == 0, r.stderr
    assert "read as Windows-1252" in r.stderr
    t = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert [(Path(x["path"]).name, x["Inventarnr"], x["Titel"]) for x in t] == [
        ("Müller 1.png", "A-1", "Straße"), ("b.png", "A-2", "Hof")]
    assert all(x["scan_error"] is None for x in t)
    r = run_cli("scan", cat, "-o", tmp_path / "m.parquet", "--path-column", "Datei",
                "--encoding", "utf-8")
    assert r.returncode == 2 and "catalogue.csv, line 2: not utf-8 text" in r.stderr


def test_duplicates_empty_cells_and_unreadable_rows_are_reported(scans, tmp_path, ckpt):
    cat = scans / "list.csv"
    cat.write_text("path,accession\nb.png,A-1\n,A-2\nc.png,A-3\nb.png,B-9\n,\n")
    r = run_cli("scan", cat, "-o", tmp_path / "m.parquet", "-q", "--report", tmp_path / "rep.csv")
    assert r.returncode == 0, r.stderr
    assert ("1 catalogue row names no file (an empty path cell: nothing to colour; --report lists "
            "them): list.csv line 3") in r.stderr
    assert "1 file listed twice (the first row kept): " in r.stderr
    assert "b.png (list.csv line 2 and list.csv line 5, different details: path b.png, accession " \
           "A-1 / path b.png, accession B-9)" in r.stderr
    assert pq.read_table(tmp_path / "m.parquet").num_rows == 2  # no image for A-2; a blank line is no record
    report = (tmp_path / "rep.csv").read_text(encoding="utf-8-sig")
    assert f"no_file,,{cat},3," in report and report.count("no_file") == 1
    # the record with no file is in no row: the export says so (a database taking it for its
    # catalogue would lose it)
    assert run_cli("run", "--manifest", tmp_path / "m.parquet", "-o", tmp_path / "out", "--size", "32",
                   "-q", "--checkpoint", ckpt).returncode == 0
    r = run_cli("export", tmp_path / "out", tmp_path / "e.csv")
    assert r.returncode == 0 and ("note: 1 catalogue row names no file (an empty path cell) and so "
                                  "no image: not in the export") in r.stderr, r.stderr
    # and so is B-9's, whose file A-1's row names (a trial's export dropped it without a word)
    assert ("note: 1 catalogue row names a file an earlier row names, with other cells (scans/list.csv "
            "line 5): the file's row is the first's, and that record is not in the export") in r.stderr
    # a later delivery's catalogue, scanned alone, with a file twice: said beside May's
    june = scans / "june"
    june.mkdir()
    Image.new("L", (24, 16), 70).save(june / "j.png")
    (june / "list.csv").write_text("path,accession\nj.png,J-1\nj.png,J-2\n")
    assert run_cli("scan", june / "list.csv", "-o", tmp_path / "m.parquet", "-q").returncode == 0
    assert run_cli("run", "-o", tmp_path / "out", "-q").returncode == 0
    r = run_cli("export", tmp_path / "out", tmp_path / "e2.csv")
    assert ("2 catalogue rows name a file an earlier row names, with other cells (scans/list.csv line 5, "
            "june/list.csv line 3)") in r.stderr, r.stderr
    (tmp_path / "win.txt").write_text("C:\\archive\\a.png\nC:\\archive\\b.png\n")
    r = run_cli("scan", tmp_path / "win.txt", "-o", tmp_path / "w.parquet", "-q")
    assert r.returncode == 2 and "none of win.txt's 2 paths names a file" in r.stderr, r.stderr
    assert "(line 1: 'C:\\archive\\a.png'): they look written on another machine" in r.stderr
    assert not (tmp_path / "w.parquet").exists()


def test_the_scan_names_each_unreadable_file_and_why(scans, tmp_path):
    """A count alone ("2 unreadable") sends the operator through the manifest for which."""
    (scans / "empty.png").write_bytes(b"")
    (scans / "note.tif").write_bytes(b"not a picture at all")
    r = run_cli("scan", scans, "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 0, r.stderr
    assert "5 images in 1 shard, 2 unreadable (they will get error rows)" in r.stdout
    assert ("2 files could not be read (each gets an error row saying so): empty.png: empty file; "
            "note.tif: not an image (unrecognised format)") in r.stderr, r.stderr


def test_a_rescan_says_it_keeps_the_manifests_shard_size(scans, tmp_path):
    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans, "-o", man, "-q", "--shard-size", "2").returncode == 0
    for n in ("d.png", "e.png", "f.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / n)
    r = run_cli("scan", scans, "-o", man, "-q", "--shard-size", "5")
    assert r.returncode == 0, r.stderr
    assert (f"--shard-size 5 not taken: the new files go in shards of 2, as {man}'s (a manifest "
            "keeps its shard size; --fresh starts over with 5)") in r.stderr
    assert sorted(pq.read_table(man).column("shard").to_pylist()) == [0, 0, 1, 2, 2, 3]
    (scans / "g.png").write_bytes((scans / "d.png").read_bytes())
    r = run_cli("scan", scans, "-o", man, "-q")  # not given: nothing to say
    assert r.returncode == 0 and "--shard-size" not in r.stderr, r.stderr


def test_a_manifest_that_cannot_be_written_is_named_as_given(scans, tmp_path, monkeypatch, capsys):
    def refuse(self, data):  # a read-only folder (the tests run as root: no chmod for it)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    assert main(["scan", str(scans), "-o", str(tmp_path / "m.parquet"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"colorize: error: Permission denied: {tmp_path / 'm.parquet'}"), err
    assert ".tmp" not in err and not list(tmp_path.glob(".m.parquet*"))


def test_lists_and_manifests_are_not_confused(scans, tmp_path):
    (tmp_path / "list.csv").write_text("path\nb.png\n")
    for wrong, what in ((tmp_path / "list.csv", "a CSV list"), (scans, "a folder")):
        r = run_cli("run", "--manifest", wrong, "-o", tmp_path / "out")
        assert r.returncode == 2 and f"is {what}, not a manifest" in r.stderr
        assert "colorize scan" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("image", scans, tmp_path / "x.png")
    assert r.returncode == 2 and "is a folder" in r.stderr
    r = run_cli("scan", scans, "-o", tmp_path / "m.csv")
    assert r.returncode == 2 and "name it *.parquet" in r.stderr
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.slow
def test_export_writes_one_line_per_image_carried_columns_first(scans, tmp_path, ckpt):
    (scans / "list.csv").write_text("path,accession\nb.png,A-1\nc.png,A-2\nnope.png,A-3\n")
    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans / "list.csv", "-o", man, "-q", "--shard-size", "2").returncode == 0
    out = tmp_path / "out"
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    r = run_cli("export", out, tmp_path / "results.csv")
    assert r.returncode == 0 and "not done yet" not in r.stderr, r.stderr
    with open(tmp_path / "results.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["path", "accession", "status", "error"]  # the catalogue's first
    assert [r["path"] for r in rows] == ["b.png", "c.png", "nope.png"]  # its path cells as written
    assert [(r["accession"], r["status"]) for r in rows] == [("A-1", "ok"), ("A-2", "ok"),
                                                              ("A-3", "error")]
    t = Outdir(out).read_results().sort_by("image_id")
    secs = {r["image_id"]: r["seconds"] for r in t.to_pylist()}
    assert all(re.fullmatch(r"\d+\.\d{3}", r["seconds"]) for r in rows)  # to the millisecond
    assert sorted(float(r["seconds"]) for r in rows) == sorted(round(v, 3) for v in secs.values())
    assert re.fullmatch(r"\d+\.\d{3}", rows[0]["colorfulness"]) and rows[2]["colorfulness"] == ""
    r = run_cli("export", out, tmp_path / "semi.csv", "--delimiter", ";", "-q")
    assert (r.returncode, r.stdout) == (0, ""), r.stdout + r.stderr  # -q: no 'wrote' line
    with open(tmp_path / "semi.csv", newline="", encoding="utf-8-sig") as f:
        semi = list(csv.DictReader(f, delimiter=";"))
    # a decimal comma, as the Excel of the locales that write ';' reads a number
    assert [r["seconds"] for r in semi] == [r["seconds"].replace(".", ",") for r in rows]
    r = run_cli("export", out, tmp_path / "results.tsv")  # tab-separated by its name
    assert r.returncode == 0 and "CSV, tab-separated" in r.stdout + r.stderr, r.stdout + r.stderr
    with open(tmp_path / "results.tsv", newline="", encoding="utf-8-sig") as f:
        assert list(csv.DictReader(f, delimiter="\t")) == rows
    r = run_cli("export", out, tmp_path / "results.csv")
    assert r.returncode == 2 and "--force" in r.stderr
    # the job's own files are never replaced, --force or not (a slip replaced the manifest and
    # a results file, and the job's audit then failed with a traceback)
    kept = {p: p.read_bytes() for p in (man, out / "results" / "shard-00000.parquet")}
    for dest in kept:
        r = run_cli("export", out, dest.with_suffix(".parquet"), "--force")
        assert r.returncode == 2 and "never replaces it" in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in kept} == kept
    assert run_cli("export", out, out / "export.csv").returncode == 0  # a new name in OUTDIR: fine
    (out / "exports").mkdir()
    assert run_cli("export", out, out / "exports" / "x.csv").returncode == 0  # a folder of yours too
    r = run_cli("export", out, out / "Results" / "new.parquet")  # a case-blind disk's results/
    assert r.returncode == 2 and "never replaces it" in r.stderr
    (tmp_path / "m-link.parquet").symlink_to(man)  # the manifest by another name
    r = run_cli("export", out, tmp_path / "m-link.parquet", "--force")
    assert r.returncode == 2 and "the manifest of the job" in r.stderr and man.read_bytes() == kept[man]
    # a job not finished (a shard's results gone, as if the run had stopped before it): said
    (out / "results" / "shard-00001.parquet").rename(tmp_path / "away.parquet")
    r = run_cli("export", out, tmp_path / "part.csv")
    assert r.returncode == 0 and (f"note: 1 image of 3 not done yet (resume with: colorize run -o "
                                  f"{out} --scheduler {CLUSTER}); the export lists those done") in r.stderr, r.stderr


def test_a_corrected_catalogue_reaches_the_manifest_on_rescan_and_the_job_goes_on(scans, tmp_path, ckpt):
    """A curator fixes an accession number and a title, then rescans: the manifest takes the new
    cells (ids, shards and output names kept, so the job goes on), says which, and a redo of that
    file writes them into its output and result row. A list without the columns changes nothing."""
    cat = scans / "katalog.csv"
    cat.write_text("accession;path;title;box\nA-1;b.png;Hof;7\nA-2;c.png;Tor;7\n", encoding="utf-8")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", scans, cat, "-o", man, "-q").returncode == 0
    before = pq.read_table(man).to_pylist()
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    # corrected, and its rows put in another order: the export follows the catalogue as it is now
    # (b.png's box too, a cell no output holds in its XMP: its output stays current)
    cat.write_text("accession;path;title;box\nA-2b;c.png;Tor am Markt;7\nA-1;b.png;Hof;8\n", encoding="utf-8")
    r = run_cli("scan", scans, cat, "-o", man, "--report", tmp_path / "report.csv")
    assert r.returncode == 0, r.stderr
    assert ("the catalogue changed for 2 files scanned before (c.png: accession 'A-2' -> 'A-2b'; "
            "c.png: title 'Tor' -> 'Tor am Markt'; b.png: box '7' -> '8')") in r.stderr
    after = pq.read_table(man).to_pylist()
    keep = ("image_id", "shard", "out_stem")
    assert [tuple(x[k] for k in keep) for x in after] == [tuple(x[k] for k in keep) for x in before]
    by = {Path(x["path"]).name: x for x in after}
    assert (by["c.png"]["accession"], by["c.png"]["title"]) == ("A-2b", "Tor am Markt")
    assert (by["b.png"]["accession"], by["b.png"]["title"]) == ("A-1", "Hof")
    assert by["Müller 1.png"]["accession"] is None  # in no catalogue, then or now
    with open(tmp_path / "report.csv", newline="", encoding="utf-8-sig") as f:
        # in the catalogue's own separator, as Excel in its locale opens it
        report = [x for x in csv.DictReader(f, delimiter=";") if x["kind"] == "recatalogued"]
    assert [x["detail"] for x in report] == ["accession: 'A-2' -> 'A-2b'", "title: 'Tor' -> 'Tor am Markt'",
                                                "box: '7' -> '8'"]
    # the export gives the corrected record at once, and says which outputs still carry the old
    assert run_cli("export", out, tmp_path / "e1.csv").returncode == 0
    with open(tmp_path / "e1.csv", newline="", encoding="utf-8-sig") as f:
        exp = {Path(x["source_path"]).name: x for x in csv.DictReader(f, delimiter=";")}
    assert list(exp) == ["c.png", "b.png", "Müller 1.png"]  # the catalogue's order, then the rest
    assert (exp["c.png"]["accession"], exp["c.png"]["title"]) == ("A-2b", "Tor am Markt")
    assert exp["c.png"]["output_record"] == "outdated"
    assert exp["b.png"]["output_record"] == "current"
    r = run_cli("audit", out, "-q")
    assert r.returncode == 0 and "1 output carries older catalogue cells than the manifest" in r.stdout
    assert f"--redo {out}/audit-outdated.txt" in r.stdout
    assert (out / "audit-outdated.txt").read_text() == f"{scans / 'c.png'}\n"
    (scans / "list.txt").write_text("c.png\n")  # a list of paths has no cells to give
    assert run_cli("scan", scans / "list.txt", "-o", man, "-q").returncode == 0
    assert {Path(x["path"]).name: x["accession"] for x in pq.read_table(man).to_pylist()}["c.png"] == "A-2b"
    r = run_cli("run", "-o", out, "-q", "--redo", out / "audit-outdated.txt")
    assert r.returncode == 0, r.stderr
    rows = {Path(x["source_path"]).name: x for f in sorted((out / "results").glob("*.parquet"))
            for x in pq.read_table(f).to_pylist()}
    assert (rows["c.png"]["accession"], rows["c.png"]["redone"]) == ("A-2b", "redo")
    assert b"A-2b" in (out / "images" / "c.png").read_bytes()  # the output's own XMP record
    assert run_cli("export", out, tmp_path / "e2.csv").returncode == 0
    text = (tmp_path / "e2.csv").read_text(encoding="utf-8-sig")  # the catalogue's separator still
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
    assert {x["output_record"] for x in rows if x["status"] == "ok"} == {"current"}
    assert "older catalogue cells" not in run_cli("audit", out, "-q").stdout
    page = (out / "audit.html").read_text(encoding="utf-8")  # what was redone, on the page too
    assert "<h2>Redone inside the job (1)</h2>\n<p>1 with the job’s own options</p>" in page
    assert f"<td>{scans / 'c.png'}</td><td><a href='images/c.png'>images/c.png</a></td><td>redo</td>" in page
    assert not (out / "audit-outdated.txt").exists()  # none now: the old list is gone
    (scans / "b.png").rename(scans / "b2.png")  # renamed on disk; the catalogue still names b.png
    r = run_cli("scan", scans, cat, "-o", man, "--report", tmp_path / "rep.csv")
    assert "1 new, 0 changed, 1 gone" in r.stderr, r.stderr
    assert f"gone since: {scans / 'b.png'} (--report lists them" in r.stderr
    with open(tmp_path / "rep.csv", newline="", encoding="utf-8-sig") as f:  # once, at its record
        said = [x for x in csv.DictReader(f, delimiter=";") if x["path"] == str(scans / "b.png")]
    assert [(x["kind"], Path(x["catalogue"]).name, x["line"]) for x in said] == [("gone", cat.name, "3")], said
    (out / "images" / "c.png").unlink()  # an output deleted: the database must not link to it
    assert run_cli("export", out, tmp_path / "e3.csv").returncode == 0
    with open(tmp_path / "e3.csv", newline="", encoding="utf-8-sig") as f:
        e3 = {Path(x["source_path"]).name: x for x in csv.DictReader(f, delimiter=";")}
    assert e3["c.png"]["output_record"] == "missing" and e3["b.png"]["output_record"] == "current"
    # the renamed original's row says it is gone: a database keyed by accession number does not
    # take it for the current record beside the renamed file's, once that one is run
    assert (e3["b.png"]["source_state"], e3["c.png"]["source_state"]) == ("gone", "")
    r = run_cli("audit", out, "-q", "--check-inputs")  # counted apart in its report: its original
    assert r.returncode == 1  # is not a missing input (c.png's output, deleted above, is a problem)
    report = json.loads((out / "audit.json").read_text())
    assert [Path(x["source_path"]).name for x in report["gone"]] == ["b.png"]
    # one count of each everywhere: a trial's status said 15 ok where the audit said 14 and 1 gone
    assert report["counts"]["gone"] == 1 and sum(report["counts"].values()) == report["result_rows"]
    st = json.loads(run_cli("status", out, "--json").stdout)
    assert {k: st[k] for k in report["counts"]} == report["counts"], st
    assert f"images {st['ok']} ok, {st['error']} error, {st['skipped']} skipped, 1 gone of" in run_cli("status", out).stdout
    page = (out / "audit.html").read_text(encoding="utf-8")  # a trial's page showed broken images
    assert "<h2>Gone (1)</h2>" in page and f"<td>{scans / 'b.png'}</td>" in page and "src=''" not in page
    assert "before: the original is not there" in page and "after: the output is not there" in page
    assert report["problem_counts"] == {"missing_output": 1}, report["problem_counts"]
    r = run_cli("run", "-o", out, "--repair")  # its last line counts the job as status does
    assert r.returncode == 0 and ", 1 gone of " in r.stdout.splitlines()[-1], r.stdout
    r = run_cli("run", "-o", out, "--redo", "A-1", "--redo-column", "accession", "-q")  # nothing to redo it from
    assert r.returncode == 2 and "nothing to redo: " in r.stderr, r.stderr
    assert "b.png is gone since it was colorized (the last scan did not find it); put the original back" in r.stderr
    (scans / "b2.png").rename(scans / "b.png")  # back again: found again, and said (a trial's was not)
    r = run_cli("scan", scans, cat, "-o", man)
    assert r.returncode == 0 and ", 1 gone, 1 gone before found again (the rows" in r.stderr, r.stderr
    assert f"found again: {scans / 'b.png'} (no longer gone)" in r.stderr, r.stderr
    assert {Path(x["path"]).name: x["source_state"] for x in pq.read_table(man).to_pylist()}["b.png"] is None
    # moved away after the scan: a redo could only put an error row in place of its good output
    # (a trial's was disowned so, and the audit's repair moved the output to quarantine/)
    results = sorted((out / "results").glob("*.parquet"))
    before = {Path(x["source_path"]).name: x for f in results for x in pq.read_table(f).to_pylist()}
    made = (out / "images" / "b.png").read_bytes()
    (scans / "b.png").rename(tmp_path / "b.png")
    r = run_cli("run", "-o", out, "--redo", "A-1", "--redo-column", "accession", "-q")
    assert r.returncode == 2 and f"nothing to redo: {scans / 'b.png'} is not there now (moved or " \
        "deleted since the scan?)" in r.stderr, r.stderr
    r = run_cli("run", "-o", out, "--redo", "A-1", "--redo", "A-2b", "--redo-column", "accession", "-q")
    assert r.returncode == 0 and "1 image named left as it is, the original not there" in r.stderr, r.stderr
    rows = {Path(x["source_path"]).name: x for f in results for x in pq.read_table(f).to_pylist()}
    assert rows["b.png"] == before["b.png"] and (out / "images" / "b.png").read_bytes() == made
    assert rows["c.png"]["status"] == "ok" and "redoing 1 image" in r.stdout, r.stdout  # c.png's alone
    (tmp_path / "b.png").rename(scans / "b.png")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["png", "tiff", "jpeg", "webp"])
def test_every_output_says_it_was_machine_colorized(scans, tmp_path, ckpt, fmt):
    """Provenance in the file's own metadata (a copy taken out of OUTDIR still says it), read back
    with the readers a curator's tools use."""
    import hashlib
    import io

    import tifffile

    from pipeline.client.state import file_sha256

    man = tmp_path / "m.parquet"
    old = Image.Exif()
    old[0x8298], old[0x013B] = "(c) Sammlung Alt", "unbekannt"  # the scan's own, superseded
    with Image.open(scans / "b.png") as im:
        im.load()
        im.save(scans / "b.png", exif=old.tobytes())
    (scans / "katalog.csv").write_text("Objektnummer;Datei;Titel;Rechte;Fotograf\nA-7;b.png;Der "
                                       "\"Hof\" & Söhne;© Stadtmuseum, CC BY 4.0;Zofia Lecka\n",
                                       encoding="cp1252")
    assert run_cli("scan", scans, scans / "katalog.csv", "-o", man, "-q", "--path-column",
                   "Datei").returncode == 0
    out = tmp_path / "out"
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt,
                "--format", fmt, "--metadata-columns",
                "identifier=Objektnummer,title=Titel,rights=Rechte,creator=Fotograf")
    assert r.returncode == 0, r.stderr
    created = __import__("json").loads((out / "job.json").read_text())["created"]
    src = scans / "b.png"
    ext = {"png": "png", "tiff": "tif", "jpeg": "jpg", "webp": "webp"}[fmt]
    data = (out / "images" / f"b.{ext}").read_bytes()
    if fmt == "png":
        with Image.open(io.BytesIO(data)) as im:
            text = im.text["Comment"]
            assert im.text["Software"].startswith("archive-colorizer ")
    elif fmt == "tiff":
        with tifffile.TiffFile(io.BytesIO(data)) as t:
            text = t.pages[0].tags["Software"].value
    else:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == fmt.upper()
            text = im.getexif()[305] + " " + im.getexif()[270]
            assert fmt == "webp" or b"Machine-colorized" in im.info["comment"]
    assert "Machine-colorized by archive-colorizer" in text
    assert f"checkpoint sha256 {file_sha256(ckpt)}" in text
    assert f"source sha256 {hashlib.sha256(src.read_bytes()).hexdigest()}" in text
    assert created in text and len(created) == 10
    # and in XMP, as image databases and exiftool read it
    import shutil

    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (.ci/run installs it)")
    meta = __import__("json").loads(subprocess.run(
        ["exiftool", "-j", "-XMP:all", str(out / "images" / f"b.{ext}")], capture_output=True,
        text=True, check=True).stdout)[0]
    assert meta["DigitalSourceType"].endswith("/digitalsourcetype/compositeWithTrainedAlgorithmicMedia")
    assert meta["CreatorTool"].startswith("archive-colorizer ") and meta["Source"] == "b.png"
    assert meta["CheckpointSHA256"] == file_sha256(ckpt)
    assert meta["Identifier"] == "A-7" and meta["Title"] == 'Der "Hof" & Söhne'  # the record
    assert meta["Rights"] == "© Stadtmuseum, CC BY 4.0" and meta["Creator"] == "Zofia Lecka"
    assert "Machine-colorized" in meta["Description"]
    exif = __import__("json").loads(subprocess.run(  # one rights line in the file, not two
        ["exiftool", "-j", "-EXIF:Copyright", "-EXIF:Artist", str(out / "images" / f"b.{ext}")],
        capture_output=True, text=True, check=True).stdout)[0]
    assert (exif["Copyright"], exif["Artist"]) == ("© Stadtmuseum, CC BY 4.0", "Zofia Lecka")


def test_a_path_cell_in_another_unicode_form_or_with_backslashes_finds_its_file(tmp_path):
    """macOS names a file 'München' as 'Mu' + a combining diaeresis + 'nchen' (NFD); the catalogue,
    typed on Windows or exported from a database, holds one character (NFC), and a Windows
    catalogue separates folders with backslashes. The same file, with its record."""
    import unicodedata

    d = tmp_path / "scans"
    (d / "w" / "Unter").mkdir(parents=True)
    rng = np.random.default_rng(1)
    nfd = unicodedata.normalize("NFD", "München.png")
    for p in (d / "w" / nfd, d / "w" / "Unter" / "bild.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(p)
    cat = d / "catalogue.csv"
    Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(d / "w" / "scan_0003.tif")
    cat.write_text(f"Inventarnr;path\n0001;w/{unicodedata.normalize('NFC', 'München.png')}\n"
                   "0002;w\\Unter\\bild.png\n0003;W\\SCAN_0003.TIF\n", encoding="utf-8")
    r = run_cli("scan", d, cat, "-o", tmp_path / "m.parquet")
    assert r.returncode == 0, r.stderr
    assert "3 path cells matched to a file named in another Unicode form or case, or with Windows " \
           "backslashes" in r.stderr
    assert "not in the catalogue" not in r.stderr and "name a file that is not there" not in r.stderr
    rows = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert sorted((Path(x["path"]).name, x["Inventarnr"], x["scan_error"]) for x in rows) == [
        (nfd, "0001", None), ("bild.png", "0002", None), ("scan_0003.tif", "0003", None)]
    from pipeline.client import redo

    typed = str(d / "w" / unicodedata.normalize("NFC", "München.png"))  # as a person types it
    picked = redo.select(str(tmp_path / "m.parquet"), [typed])
    assert [len(v) for v in picked.values()] == [1]


def test_a_missing_file_another_row_names_in_another_case_keeps_its_record(tmp_path):
    """An operator's trial: IMG_0001.jpg on disk, the catalogue naming it and also a missing
    img_0001.jpg (Inv-006). The second was matched to the first's file by case and dropped as
    listed twice: Inv-006 was in no manifest, result or export."""
    d = tmp_path / "scans"
    d.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (24, 32), dtype=np.uint8)).save(d / "IMG_0001.jpg")
    cat = d / "catalogue.csv"
    cat.write_text("path;Inv\nIMG_0001.jpg;Inv-005\nimg_0001.jpg;Inv-006\nIMG_0002.JPG;Inv-007\n", encoding="utf-8")
    r = run_cli("scan", d, cat, "-o", tmp_path / "m.parquet")
    assert r.returncode == 0, r.stderr
    assert "listed twice" not in r.stderr and "matched to a file named in another" not in r.stderr
    rows = {x["Inv"]: x for x in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    assert sorted(rows) == ["Inv-005", "Inv-006", "Inv-007"]
    assert Path(rows["Inv-005"]["path"]).name == "IMG_0001.jpg" and rows["Inv-005"]["scan_error"] is None
    assert Path(rows["Inv-006"]["path"]).name == "img_0001.jpg" and rows["Inv-006"]["scan_error"]
    # the two rows in two catalogues, in either order, and one through a linked folder
    (d / "a.csv").write_text("path;Inv\nIMG_0001.jpg;Inv-001\n", encoding="utf-8")
    Image.new("L", (24, 16), 40).save(d / "other.jpg")  # (a catalogue naming no file is refused)
    (d / "b.csv").write_text("path;Inv\nimg_0001.jpg;Inv-006\nother.jpg;Inv-008\n", encoding="utf-8")
    (tmp_path / "link").symlink_to(d)
    (d / "c.csv").write_text(f"path;Inv\n{tmp_path / 'link' / 'IMG_0001.jpg'};Inv-001\nimg_0001.jpg;Inv-006\n",
                             encoding="utf-8")
    for k, cats in enumerate((("a.csv", "b.csv"), ("b.csv", "a.csv"), ("c.csv",))):
        r = run_cli("scan", *[d / c for c in cats], "-o", tmp_path / f"m{k}.parquet")
        assert r.returncode == 0 and "listed twice" not in r.stderr, (cats, r.stderr)
        rows = {x["Inv"]: x for x in pq.read_table(tmp_path / f"m{k}.parquet").to_pylist() if x["Inv"]}
        assert Path(rows["Inv-001"]["path"]).resolve() == (d / "IMG_0001.jpg").resolve(), cats
        assert rows["Inv-001"]["scan_error"] is None, cats
        assert Path(rows["Inv-006"]["path"]).name == "img_0001.jpg" and rows["Inv-006"]["scan_error"], cats


def test_extending_tells_a_file_still_missing_from_one_gone_since(scans, tmp_path):
    """A catalogue row whose file was never there is 'still missing' on the next scan, not
    'gone': 'gone' is kept for a file the earlier manifest found and this scan does not."""
    cat = scans / "catalogue.csv"
    cat.write_text("path;accession\nb.png;A-1\nc.png;A-2\nnever.png;A-3\n", encoding="utf-8")
    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans, cat, "-o", man, "-q").returncode == 0
    Image.new("L", (16, 16), 90).save(scans / "new.png")
    (scans / "c.png").unlink()
    r = run_cli("scan", scans, cat, "-o", man, "-q")
    assert r.returncode == 0, r.stderr
    assert "2 files scanned before, 1 new, 0 changed, 1 gone, 1 still missing" in r.stderr, r.stderr
    # the gone file's row and output stay as they were: it gets no error row (a trial was told so)
    assert "1 catalogue row names a file that is not there (kept: each gets an error row): catalogue.csv line 4" in r.stderr
    assert ("1 catalogue row names a file scanned before and gone since (its row and output are kept "
            "as they were): catalogue.csv line 3") in r.stderr, r.stderr
    rows = {Path(x["path"]).name: x["accession"] for x in pq.read_table(man).to_pylist()}
    assert rows == {"Müller 1.png": None, "b.png": "A-1", "c.png": "A-2", "never.png": "A-3",
                    "new.png": None}


def test_a_changed_original_is_said_once_then_again_only_if_it_changes_again(scans, tmp_path):
    """A trial redid a re-digitised scan, and every later rescan still said it 'changed since',
    with the --redo line: the rows keep the first scan's size (their shards are the job's), so
    the sizes seen are kept beside them."""
    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans, "-o", man, "-q").returncode == 0
    Image.new("L", (40, 30), 90).save(scans / "b.png")  # a better scan of the same photograph
    r = run_cli("scan", scans, "-o", man, "-q")
    assert "3 files scanned before, 0 new, 1 changed, 0 gone" in r.stderr, r.stderr
    assert f"changed since: {scans / 'b.png'}; to colorize them again" in r.stderr
    r = run_cli("scan", scans, "-o", man, "-q")  # nothing new: said as said before, not again
    assert "0 new, 0 changed (and 1 said at an earlier scan), 0 gone" in r.stderr, r.stderr
    assert "changed since:" not in r.stderr
    assert "earlier scan said" not in r.stderr  # a trial's redone file was noise at every scan
    Image.new("L", (60, 30), 90).save(scans / "b.png")  # and once more
    r = run_cli("scan", scans, "-o", man, "-q")
    assert "0 new, 1 changed, 0 gone" in r.stderr and f"changed since: {scans / 'b.png'}" in r.stderr
    assert pq.read_table(man).num_rows == 3


def test_a_rescan_of_the_same_size_is_said_changed_and_a_copy_with_a_new_time_is_not(tmp_path):
    """An uncompressed TIFF scanned again at the same resolution is the same size to the byte:
    the scan saw only sizes, so a re-digitised original went unsaid (only `audit
    --check-inputs`, which reads every original, found it)."""
    rng = np.random.default_rng(3)
    src = tmp_path / "scans"
    src.mkdir()
    for name in ("a.tif", "b.tif"):  # 300 x 300 x 8 bit: 90 kB, past the 64 KiB read at each end
        Image.fromarray(rng.integers(0, 255, (300, 300), np.uint8)).save(src / name)
    man = tmp_path / "m.parquet"
    assert run_cli("scan", src, "-o", man, "-q").returncode == 0
    size = (src / "b.tif").stat().st_size
    Image.fromarray(rng.integers(0, 255, (300, 300), np.uint8)).save(src / "b.tif")  # rescanned
    assert (src / "b.tif").stat().st_size == size
    data = (src / "a.tif").read_bytes()
    (src / "a.tif").unlink()
    (src / "a.tif").write_bytes(data)  # copied back, as `cp` does: a new time, the same bytes
    os.utime(src / "a.tif", ns=(1, 1))
    r = run_cli("scan", src, "-o", man, "-q")
    assert "2 files scanned before, 0 new, 1 changed, 0 gone" in r.stderr, r.stderr
    assert f"changed since: {src / 'b.tif'}; to colorize them again" in r.stderr
    rows = {Path(x["path"]).name: x for x in pq.read_table(man).to_pylist()}
    assert rows["a.tif"]["mtime_ns"] == 1  # the copy's time is taken: not read again next time
    r = run_cli("scan", src, "-o", man, "-q")
    assert "0 new, 0 changed (and 1 said at an earlier scan), 0 gone" in r.stderr, r.stderr


def test_a_quick_look_saved_among_the_scans_is_not_counted_new(scans, tmp_path):
    """A trial's rescan said "1 new" for a `colorize image` output saved among the scans, then
    left it out: the manifest did not change."""
    from pipeline.worker.writers import encode, provenance

    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans, "-o", man, "-q").returncode == 0
    (scans / "look.png").write_bytes(encode(np.full((16, 24, 3), 120, np.uint8), "png",
                                            provenance=provenance("c" * 64, "2026-12-04", None)))
    r = run_cli("scan", scans, "-o", man, "-q")
    assert "3 files scanned before, 0 new, 0 changed, 0 gone" in r.stderr, r.stderr
    assert "left out 1 file that colorize wrote" in r.stderr


def test_export_writes_the_header_back_as_written_and_refuses_to_cut_a_cell(scans, tmp_path, ckpt):
    """An empty header cell over cells, and a repeated name, are named for the manifest
    ('column 3', 'Titel (2)') and written back as they were; Excel's trailing ';' (no header,
    no cells) is no column (named by its place, it became another when a column was inserted);
    a cell longer than a workbook cell holds is refused for .xlsx rather than cut."""
    cat = scans / "cat.csv"
    cat.write_text("path;Titel;;Titel;\nb.png;Hof;x;" + "lang " * 8000 + ";\nc.png;Tor;;;\n",
                   encoding="utf-8")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    r = run_cli("scan", cat, "-o", man, "-q")
    assert r.returncode == 0 and "header cell 3 '' named 'column 3'" in r.stderr, r.stderr
    assert "header cell 4 'Titel' named 'Titel (2)'" in r.stderr
    assert "header cell 5 is empty and so is every cell under it (a trailing separator): not a column" in r.stderr
    assert "column 5" not in pq.read_table(man).column_names
    assert run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint",
                   ckpt).returncode == 0
    assert run_cli("export", out, tmp_path / "e.csv").returncode == 0
    with open(tmp_path / "e.csv", newline="", encoding="utf-8-sig") as f:
        head, *rows = list(csv.reader(f, delimiter=";"))
    assert head[:4] == ["path", "Titel", "", "Titel"] and head[4] == "status"
    assert [x[:3] for x in rows] == [["b.png", "Hof", "x"], ["c.png", "Tor", ""]]
    assert rows[0][3] == "lang " * 8000  # whole in CSV
    r = run_cli("export", out, tmp_path / "e.xlsx")
    assert r.returncode == 2 and "row 2's 'Titel' holds 40,000 characters" in r.stderr, r.stderr
    assert "export to .csv" in r.stderr and not (tmp_path / "e.xlsx").exists()


def test_a_catalogue_kept_apart_from_its_scans_is_told_how_paths_are_read(scans, tmp_path):
    (tmp_path / "cats").mkdir()
    cat = tmp_path / "cats" / "c.csv"
    cat.write_text("path;acc\nb.png;1\nc.png;2\n", encoding="utf-8")
    r = run_cli("scan", scans, cat, "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 2, r.stderr
    assert (f"none of c.csv's 2 paths names a file (line 2: 'b.png'): a relative path is read from "
            f"the catalogue's own folder ({tmp_path / 'cats'})") in r.stderr
    assert "nothing written" in r.stderr and not (tmp_path / "m.parquet").exists()
    # under --extend the manifest is kept as it was: no error rows repeating the records done
    assert run_cli("scan", scans, "-o", tmp_path / "m.parquet", "-q").returncode == 0
    before = (tmp_path / "m.parquet").read_bytes()
    r = run_cli("scan", scans, cat, "-o", tmp_path / "m.parquet", "--extend", tmp_path / "m.parquet", "-q")
    assert r.returncode == 2 and (tmp_path / "m.parquet").read_bytes() == before, r.stderr
    (tmp_path / "cats" / "abs.csv").write_text("path;acc\n/elsewhere/b.png;1\n", encoding="utf-8")
    r = run_cli("scan", scans, tmp_path / "cats" / "abs.csv", "-o", tmp_path / "m3.parquet", "-q")
    assert r.returncode == 2 and "'/elsewhere/b.png'): they look written on another machine, and no leading" in r.stderr, r.stderr
    (scans / "c2.csv").write_text("path;acc\nb.png;1\nnope.png;2\n", encoding="utf-8")
    r = run_cli("scan", scans, scans / "c2.csv", "-o", tmp_path / "m2.parquet", "-q")
    assert "none of" not in r.stderr and "1 catalogue row names a file that is not there" in r.stderr


def test_another_machines_paths_are_read_with_the_prefix_the_user_names(tmp_path):
    """A catalogue made on the museum's Windows machine (C:\\Museum\\Scans\\...), laid in the
    scans' top folder: refused with the --path-prefix that finds its files (never guessed onto
    a file: another folder's IMG_0001.jpg is another photograph); given it, its rows find their
    files, the cells kept as written, and a rescan reads them so again. A catalogue of names
    alone is told where files of those names are."""
    d = tmp_path / "scans"
    rng = np.random.default_rng(3)
    for f in ["portraits/00123 Bürgermeister.tif", "1923/a.png", "1923/b.png", "x.png", "1923/dup.png",
              "misc/dup.png"]:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(d / f)
    win = "C:\\Museum\\Scans\\"
    (d / "win.csv").write_text("Inv;File\n" + "".join(
        f"{i};{win}{f.replace('/', chr(92))}\n" for i, f in enumerate(
            # B.PNG: in another case, found as Windows finds it (and counted so by the advice)
            ["portraits/00123 Bürgermeister.tif", "1923/a.png", "1923/B.PNG", "misc/gone.png", "1923/x.png"])),
        encoding="utf-8")
    man = tmp_path / "w.parquet"
    r = run_cli("scan", d / "win.csv", "-o", man, "--path-column", "File")
    assert r.returncode == 2 and not man.exists(), r.stderr
    assert (f"(line 2: '{win}portraits\\00123 Bürgermeister.tif'): they look written on another machine: "
            f"with --path-prefix '{win}', 3 of 5 are found under {d}; nothing written") in r.stderr, r.stderr
    r = run_cli("scan", d / "win.csv", "-o", man, "--path-column", "File", "--path-prefix", "c:/museum/scans")
    assert r.returncode == 0, r.stderr
    assert f"win.csv line 5 {d}/misc/gone.png" in r.stderr and "2 missing" in r.stdout, r.stderr

    def found():
        return {x["Inv"]: (Path(x["path"]).relative_to(d).as_posix() if x["scan_error"] is None else None)
                for x in pq.read_table(man).to_pylist()}

    # x.png at the top is not 1923\x.png: that row stays missing, its record kept
    assert found() == {"0": "portraits/00123 Bürgermeister.tif", "1": "1923/a.png", "2": "1923/b.png",
                       "3": None, "4": None}
    assert {x["Inv"]: x["File"] for x in pq.read_table(man).to_pylist()}["0"] == f"{win}portraits\\00123 Bürgermeister.tif"
    r = run_cli("scan", d / "win.csv", "-o", man, "--path-column", "File")  # a rescan: read as before
    assert r.returncode == 0 and f"catalogue paths read with --path-prefix 'c:/museum/scans' too, as {man} was" in r.stderr
    assert "3 files scanned before, 0 new, 0 changed, 0 gone, 2 still missing" in r.stderr and found()["1"] == "1923/a.png"
    # another prefix given (a Mac's catalogue beside): the manifest's is kept too; a cell that
    # merely holds the same folders, relative, is not one that begins there
    (d / "mac.txt").write_text("/Volumes/Archive/1923/b.png\nVolumes/Archive/x.png\n", encoding="utf-8")
    r = run_cli("scan", d / "win.csv", d / "mac.txt", "-o", man, "--path-column", "File",
                "--path-prefix", "/Volumes/Archive", "--path-prefix", "D:\\Fotos")
    assert r.returncode == 0, r.stderr
    assert f"catalogue paths read with --path-prefix 'c:/museum/scans' too, as {man} was" in r.stderr
    assert "--path-prefix 'D:\\\\Fotos': no catalogue path read here begins with it" in r.stderr, r.stderr
    assert found()["1"] == "1923/a.png" and "0 gone" in r.stderr
    rows = pq.read_table(man).to_pylist()
    assert {Path(x["path"]).relative_to(d).as_posix() for x in rows if x["Inv"] is None} == {"Volumes/Archive/x.png"}
    (d / "names.csv").write_text("Inv;File\n0;a.png\n1;b.png\n2;dup.png\n", encoding="utf-8")
    r = run_cli("scan", d / "names.csv", "-o", tmp_path / "n.parquet", "--path-column", "File")
    assert r.returncode == 2, r.stderr
    assert (f"3 of its names alone are files in folders under {d} ('a.png' is '1923/a.png'): write "
            "each one's folders in its path cell") in r.stderr, r.stderr
    # a redo names them as the catalogue does: a list cut from it, kept anywhere, or one cell
    from pipeline.client import redo

    ids = {x["Inv"]: (x["shard"], x["image_id"]) for x in pq.read_table(man).to_pylist()}
    cut = tmp_path / "elsewhere" / "redo.csv"
    cut.parent.mkdir()
    cut.write_text("Inv;File\n" + "".join(ln + "\n" for ln in (d / "win.csv").read_text().splitlines()[1:3]))
    want = {ids[k][0]: {ids[k][1]} for k in ("0",)}
    want.setdefault(ids["1"][0], set()).add(ids["1"][1])
    assert redo.select(str(man), [str(cut)]) == want  # its path column, as the job's catalogue's
    assert redo.select(str(man), [f"{win}1923\\a.png"]) == {ids["1"][0]: {ids["1"][1]}}


def test_a_file_missing_at_the_scan_and_put_back_is_read_again(scans, tmp_path):
    cat = scans / "catalogue.csv"
    cat.write_text('path;accession;note\nb.png;A-1;"framed,\nglass cracked"\nlater.png;A-2;\n', encoding="utf-8")
    man = tmp_path / "m.parquet"
    r = run_cli("scan", cat, "-o", man)
    assert r.returncode == 0 and "2 images in 1 shard, 1 missing (they will get error rows)" in r.stdout, r.stdout
    # where Excel shows the record, beside the text line (the note before it spans two)
    assert "catalogue.csv line 4 (row 3 in a spreadsheet) " in r.stderr, r.stderr
    Image.new("L", (40, 30), 90).save(scans / "later.png")
    (scans / "later.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")  # its sidecar with it
    r = run_cli("scan", cat, "-o", man)
    assert r.returncode == 0, r.stderr
    assert "1 file missing at the earlier scan is there now (later.png): read again" in r.stderr
    rows = {x["accession"]: x for x in pq.read_table(man).to_pylist()}
    assert rows["A-2"]["scan_error"] is None and (rows["A-2"]["width"], rows["A-2"]["height"]) == (40, 30)
    assert rows["A-2"]["xmp_sidecar"] == str(scans / "later.xmp")
    assert r.stdout.rstrip().endswith(": 2 images in 1 shard")


def test_this_months_catalogue_alone_puts_its_records_after_the_old(scans, tmp_path):
    """Extending with a catalogue of the new scans alone keeps the old rows' places (their
    catalogue is not read again) and puts the new records after them."""
    (scans / "jan.csv").write_text("path,acc\nc.png,A-3\nb.png,A-2\n")
    man = tmp_path / "m.parquet"
    assert run_cli("scan", scans / "jan.csv", "-o", man, "-q").returncode == 0
    Image.new("L", (20, 20), 9).save(scans / "d.png")
    (scans / "feb.csv").write_text("path,acc\nd.png,A-4\n")
    r = run_cli("scan", scans / "feb.csv", "-o", man)  # extended
    assert r.returncode == 0 and "2 files scanned before, 1 new, 0 changed, 0 gone" in r.stderr, r.stderr
    t = pq.read_table(man).to_pylist()
    assert {x["source_state"] for x in t} == {None}  # January's files were not looked for: not gone
    order = sorted((x["catalogue_order"], x["acc"]) for x in t)
    assert [a for _, a in order] == ["A-3", "A-2", "A-4"]
    # with the folder: January's files keep January's cells, and are not called uncatalogued
    r = run_cli("scan", scans, scans / "feb.csv", "-o", man, "--report", tmp_path / "r.csv")
    assert r.returncode == 0, r.stderr
    assert ("2 files scanned before are in no catalogue read now: each keeps the cells an earlier "
            "catalogue gave it") in r.stderr
    assert f"1 file found but not in the catalogue (in the job, with no catalogue columns): {scans / 'Müller 1.png'}" in r.stderr
    assert {Path(x["path"]).name: x["acc"] for x in pq.read_table(man).to_pylist()} == {
        "b.png": "A-2", "c.png": "A-3", "d.png": "A-4", "Müller 1.png": None}
    r = run_cli("scan", scans, scans / "feb.csv", "-o", man)  # Müller 1.png never had a row
    assert "1 file scanned before is in no catalogue read now" not in r.stderr
    assert "2 files scanned before are in no catalogue read now" in r.stderr, r.stderr
    # so too in a manifest an older version made, before catalogue_order (an upgrade trial's
    # never-catalogued file was said to keep "the cells an earlier catalogue gave it")
    t = pq.read_table(man)
    pq.write_table(t.drop_columns(["catalogue_order"]).replace_schema_metadata(t.schema.metadata), man)
    r = run_cli("scan", scans, scans / "feb.csv", "-o", man)
    assert "2 files scanned before are in no catalogue read now" in r.stderr, r.stderr
    assert "1 file found but not in the catalogue (in the job, with no catalogue columns)" in r.stderr
    # a rename in the catalogue alone (no folder scanned): the old name is gone from the disk
    (scans / "c.png").rename(scans / "c2.png")
    (scans / "feb.csv").write_text("path,acc\nd.png,A-4\nc2.png,A-3\n")
    r = run_cli("scan", scans / "feb.csv", "-o", man)
    assert "1 new, 0 changed, 1 gone" in r.stderr, r.stderr
    state = {Path(x["path"]).name: (x["acc"], x["source_state"]) for x in pq.read_table(man).to_pylist()}
    assert (state["c.png"], state["c2.png"], state["b.png"]) == (("A-3", "gone"), ("A-3", None), ("A-2", None))
    # a glob of the top folder did not look into a subfolder: its files are not gone
    (scans / "sub").mkdir()
    Image.new("L", (20, 20), 9).save(scans / "sub" / "e.png")
    assert run_cli("scan", scans, "-o", man, "-q").returncode == 0
    r = run_cli("scan", str(scans / "*.png"), "-o", man)
    assert "0 new, 0 changed, 1 gone" in r.stderr, r.stderr  # c.png, still
    assert {Path(x["path"]).name: x["source_state"] for x in pq.read_table(man).to_pylist()}["e.png"] is None


def test_a_polish_catalogues_columns_are_guessed_and_an_unknown_one_is_said(scans, tmp_path, ckpt):
    """'auto' knows the accession number and the title in the languages archives catalogue in;
    where it finds none, the run says so (the outputs' XMP would not name their objects)."""
    (scans / "katalog.csv").write_text("Sygnatura;Tytuł;path\nMS.1923/004a;Łódź, rynek;b.png\n",
                                       encoding="utf-8")
    (scans / "other.csv").write_text("Nummer;Bild;path\n7;Hof;b.png\n", encoding="utf-8")
    for cat, want in (("katalog.csv", "identifier=Sygnatura,title=Tytuł"), ("other.csv", "none")):
        man, out = tmp_path / f"{cat}.parquet", tmp_path / f"out-{cat}"
        assert run_cli("scan", scans / cat, "-o", man, "-q").returncode == 0
        r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
        assert r.returncode == 0, r.stderr
        assert json.loads((out / "job.json").read_text())["spec"]["metadata_columns"] == want
        said = "no catalogue column was taken for the accession number (columns: Nummer, Bild, path)"
        assert (said in r.stdout + r.stderr) == (want == "none")
    # guessed beside a named creator too, and said where none is found (a README trial: unsaid)
    r = run_cli("run", "--manifest", tmp_path / "other.csv.parquet", "-o", tmp_path / "out-creator", "--size", "32",
                "-q", "--checkpoint", ckpt, "--metadata-columns", "creator=Bild")
    assert r.returncode == 0 and said in r.stdout + r.stderr, r.stderr


def test_abbreviated_column_names_are_guessed_as_written_elsewhere():
    """A collection system's export writes "Accession No." or "Inv.-Nr.": the same columns as
    "accession no" and "inv-nr", the dots and dashes of an abbreviation aside."""
    from pipeline.worker.writers import resolve_columns

    for columns, want in ((["Accession No.", "path", "Title"], "identifier=Accession No.,title=Title"),
                          (["INV.-NR", "Bildtitel"], "identifier=INV.-NR,title=Bildtitel"),
                          (["Object_ID", "Caption:"], "identifier=Object_ID,title=Caption:"),
                          (["Accession #", "Remarks"], "identifier=Accession #"),
                          (["Nummer", "Bild"], "none"),
                          # a trial's "Inv" went unread, and so would "Acc. No." and "Object No."
                          (["path", "Inv"], "identifier=Inv"), (["Acc. No.", "Title"], "identifier=Acc. No.,title=Title"),
                          (["Object No.", "Remarks"], "identifier=Object No.")):
        assert resolve_columns("auto", columns) == want
    # a job begun before they were guessed goes on as it began (its outputs' XMP say no number)
    assert resolve_columns("auto", ["Acc. No.", "Title"], before="title=Title") == "title=Title"
    assert resolve_columns("auto", ["path", "Inv"], before="none") == "none"
    # and widened by a later delivery as that version would have: June's accession number, not
    # May's own 'Inv' (which would have every output done before wanting a redo for it)
    sets = [["Datei", "Inv", "Titel"], ["Datei", "Inventarnummer", "Title"]]
    assert resolve_columns("auto", ["Datei", "Inv", "Titel", "Inventarnummer", "Title"], before="title=Titel",
                           sets=sets) == "identifier=Inventarnummer,title=Titel||Title"
    assert resolve_columns("auto", ["Datei", "Inv", "Titel", "Inventarnummer", "Title"], sets=sets) == \
        "identifier=Inv||Inventarnummer,title=Titel||Title"  # a new job: today's guesses
    # a job an earlier version began (it took no accession number from "Accession No.") goes on
    # as that job; a new one takes it
    assert resolve_columns("auto", ["Accession No.", "Title"], before="title=Title") == "title=Title"
    assert resolve_columns("auto", ["Accession No.", "Title"], before="none") == "identifier=Accession No.,title=Title"
    # rights and creator named come "also": the identifier and the title are still guessed
    cols = ["path", "Inventarnummer", "Titel", "Fotograf", "Rechte"]
    assert resolve_columns("rights=Rechte,creator=Fotograf", cols) == \
        "rights=Rechte,creator=Fotograf,identifier=Inventarnummer,title=Titel"
    assert resolve_columns("rights=Rechte,creator=Fotograf", cols, before="rights=Rechte,creator=Fotograf") == \
        "rights=Rechte,creator=Fotograf"  # as an earlier version resolved it
    assert resolve_columns("identifier=Inventarnummer", cols) == "identifier=Inventarnummer"  # named: as named


def test_export_to_parquet_is_one_table_after_the_catalogue_gained_a_column(scans, tmp_path, ckpt):
    """A job grown with a catalogue that gained a column has results files that differ in
    columns (pyarrow and pandas, reading the folder, take the first file's and drop it without a
    word): `export OUT all.parquet` is one table, every row with the catalogue's cells now."""
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    (scans / "cat.csv").write_text("Inventarnr,path\nA-1,Müller 1.png\nA-2,b.png\nA-3,c.png\n")
    assert run_cli("scan", scans / "cat.csv", "-o", man, "-q", "--shard-size", "2").returncode == 0
    args = ("--size", "32", "-q", "--checkpoint", ckpt)
    assert run_cli("run", "--manifest", man, "-o", out, *args).returncode == 0
    Image.new("L", (24, 16), 90).save(scans / "d.png")
    (scans / "cat.csv").write_text("Inventarnr,path,Fotograf\nA-1,Müller 1.png,Łęcka\nA-2,b.png,\n"
                                   "A-3,c.png,Nowak\nA-4,d.png,Łęcka\n")
    assert run_cli("scan", scans / "cat.csv", "-o", man, "-q", "--extend", man).returncode == 0
    assert run_cli("run", "-o", out, "-q").returncode == 0
    r = run_cli("export", out, tmp_path / "all.parquet")
    assert r.returncode == 0 and "(Parquet): 4 images" in r.stdout, r.stdout + r.stderr
    t = pq.read_table(tmp_path / "all.parquet")
    assert t.column_names[:3] == ["Inventarnr", "path", "Fotograf"]
    assert t.column("Fotograf").to_pylist() == ["Łęcka", "", "Nowak", "Łęcka"]
    assert t.column("Inventarnr").to_pylist() == ["A-1", "A-2", "A-3", "A-4"]  # the catalogue's order
    assert str(t.schema.field("width").type) == "int64" and set(t.column("status").to_pylist()) == {"ok"}
    # typed before any review too: a nightly load's schema does not change with the first verdict
    types = {f.name: str(f.type) for f in t.schema}
    assert [types[c] for c in ("output_record", "verdict", "review_note", "curator_hints", "reviewed_by")] == \
        ["string", "string", "string", "int64", "string"]
    # a header cell repeated, or empty: a Parquet table's columns need names of their own (the
    # CSV writes the header back as written)
    # (and a column inserted: it takes its place in the catalogue's order, not the end)
    (scans / "cat.csv").write_text("Inventarnr,Box,path,Fotograf,Fotograf,\nA-1,1,Müller 1.png,Łęcka,Nowak,\n"
                                   "A-2,1,b.png,,,\nA-3,2,c.png,Nowak,,y\nA-4,2,d.png,Łęcka,,\n")
    assert run_cli("scan", scans / "cat.csv", "-o", man, "-q", "--extend", man).returncode == 0
    assert run_cli("export", out, tmp_path / "dup.parquet").returncode == 0
    t = pq.read_table(tmp_path / "dup.parquet")
    assert t.column_names[:6] == ["Inventarnr", "Box", "path", "Fotograf", "Fotograf (2)", "column 6"]
    assert t.column("Fotograf (2)").to_pylist() == ["Nowak", "", "", ""]
    assert t.column("Box").to_pylist() == ["1", "1", "2", "2"]  # gained after the run: exported all the same
    assert run_cli("export", out, tmp_path / "dup.csv").returncode == 0
    assert (tmp_path / "dup.csv").read_text(encoding="utf-8-sig").startswith(
        "Inventarnr,Box,path,Fotograf,Fotograf,,status,")


def test_a_central_european_catalogue_read_as_windows_1252_is_shown_and_1250_suggested(scans, tmp_path):
    """A Polish catalogue saved by Excel as Windows-1250 decodes as Windows-1252 without an
    error, into "Tytu³" and "£ódŸ": the scan shows what it read and names the encoding that
    reads them as letters (a German one's umlauts are letters either way: no suggestion)."""
    (scans / "pl.csv").write_bytes("Sygnatura;Tytuł;path\nMS.1;Łódź, rynek;b.png\n".encode("cp1250"))
    r = run_cli("scan", scans / "pl.csv", "-o", tmp_path / "pl.parquet", "-q")
    assert r.returncode == 0, r.stderr
    assert ('not UTF-8; read as Windows-1252 (e.g. "Tytu³", "£ódŸ"; if these should read "Tytuł", '
            '"Łódź", give --encoding cp1250)') in r.stderr
    r = run_cli("scan", scans / "pl.csv", "-o", tmp_path / "pl.parquet", "-q", "--encoding", "cp1250")
    assert r.returncode == 0 and pq.read_table(tmp_path / "pl.parquet").column("Tytuł").to_pylist() == ["Łódź, rynek"]
    (scans / "de.csv").write_bytes("Inventarnr;Titel;path\nA-1;Straße;b.png\n".encode("cp1252"))
    r = run_cli("scan", scans / "de.csv", "-o", tmp_path / "de.parquet", "-q")
    assert 'read as Windows-1252 (e.g. "Straße"; say --encoding otherwise)' in r.stderr


def test_excels_unicode_text_and_tab_delimited_txt_are_tables(scans, tmp_path):
    """Excel's "Unicode Text" is UTF-16 with a BOM, tab-separated, named .txt; its "Text (Tab
    delimited)" is a .txt too: both are read as tables, every cell as written (a .txt without a
    tab is a list of paths, one a line). UTF-16 without its BOM is refused in one line (its NUL
    bytes reached os.listdir: a traceback)."""
    table = "Datei\tPersonen\tJahr\r\nb.png\tOma Käthe; Opa\t\"ca. 1940\"\r\nc.png\t\"Jean-Luc\nà Lyon\"\t0042\r\n"
    (scans / "unicode.txt").write_bytes(b"\xff\xfe" + table.encode("utf-16-le"))
    (scans / "tabs.txt").write_bytes(table.encode("cp1252"))
    for name in ("unicode.txt", "tabs.txt"):
        man = tmp_path / f"{name}.parquet"
        r = run_cli("scan", scans / name, "-o", man, "--path-column", "Datei", "-q")
        assert r.returncode == 0, r.stderr
        rows = {Path(x["path"]).name: x for x in pq.read_table(man).to_pylist()}
        assert set(rows) == {"b.png", "c.png"}, rows
        assert (rows["b.png"]["Personen"], rows["b.png"]["Jahr"]) == ("Oma Käthe; Opa", "ca. 1940")
        assert (rows["c.png"]["Personen"], rows["c.png"]["Jahr"]) == ("Jean-Luc\nà Lyon", "0042")
    (scans / "list.txt").write_text("b.png\nc.png\n")  # a list stays a list, --delimiter or not
    for extra in ((), ("--delimiter", ";")):
        r = run_cli("scan", scans / "list.txt", "-o", tmp_path / "l.parquet", "-q", *extra)
        assert r.returncode == 0 and pq.read_table(tmp_path / "l.parquet").num_rows == 2, r.stderr
    (scans / "nobom.txt").write_bytes(table.encode("utf-16-le"))
    r = run_cli("scan", scans / "nobom.txt", "-o", tmp_path / "n.parquet", "--path-column", "Datei")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "NUL bytes: UTF-16 without a byte-order mark?" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_cli("scan", scans / "nobom.txt", "-o", tmp_path / "n.parquet", "--path-column", "Datei",
                "--encoding", "utf-16-le", "-q")
    assert r.returncode == 0 and pq.read_table(tmp_path / "n.parquet").num_rows == 2, r.stderr


def test_an_export_longer_than_a_worksheet_is_refused_for_xlsx(tmp_path, monkeypatch):
    """Excel opens a sheet past its last row cut short with only "file not loaded completely":
    a million-scan archive's records would be lost on the way into a database."""
    from pipeline.client import export
    from pipeline.errors import UsageError

    monkeypatch.setattr(export, "XLSX_ROWS", 4)  # 3 rows below the header
    export.write_xlsx(str(tmp_path / "ok.xlsx"), ["acc"], [["1"], ["2"], ["3"]], 1)
    assert (tmp_path / "ok.xlsx").exists()
    with pytest.raises(UsageError, match=r"4 images are more rows than a workbook's sheet holds \(3 below"):
        export.write_xlsx(str(tmp_path / "big.xlsx"), ["acc"], [["1"], ["2"], ["3"], ["4"]], 1)
    assert not (tmp_path / "big.xlsx").exists()


def test_a_workbook_named_as_a_catalogue_is_refused_not_taken_for_a_picture(scans, tmp_path):
    """It became one more unreadable 'image' row, and not one catalogue cell was read (exit 0)."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.append(["path", "accession"])
    wb.active.append(["b.png", "007"])
    wb.save(scans / "catalogue.xlsx")
    r = run_cli("scan", scans, scans / "catalogue.xlsx", "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 2 and "catalogue.xlsx is a spreadsheet workbook" in r.stderr, r.stderr
    assert "save it as CSV UTF-8" in r.stderr and not (tmp_path / "m.parquet").exists()
    # inside a folder it is one of the files left out, as any other non-picture
    r = run_cli("scan", scans, "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 0 and "catalogue.xlsx" in r.stderr and "left out" in r.stderr, r.stderr


def test_an_edited_export_brought_back_as_the_catalogue_changes_only_its_cells(scans, tmp_path, ckpt):
    """A collection database round-trips: the export, one title edited, saved as the catalogue and
    rescanned with --extend. Its 30 result columns were read as catalogue cells (every row
    'recatalogued', the next export with stale copies under our own names beside the live ones);
    and a catalogue with both status and colorize_status exported two columns of one name, which
    pyarrow cannot read."""
    cat = scans / "cat.csv"
    cat.write_text("path,accession,title,status,colorize_status\nb.png,0001,Hof,on loan,checked\n"
                   "c.png,0002,Tor,,\n", encoding="utf-8")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", scans, cat, "-o", man, "-q").returncode == 0
    assert run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint",
                   ckpt).returncode == 0
    assert run_cli("export", out, tmp_path / "e.parquet").returncode == 0
    t = pq.read_table(tmp_path / "e.parquet")  # readable: every column has a name of its own
    assert len(set(t.column_names)) == len(t.column_names)
    assert t.column("colorize_status").to_pylist() == ["checked", "", None]  # Müller 1.png: no row
    assert t.column("colorize_status (2)").to_pylist() == ["ok", "ok", "ok"]
    assert run_cli("export", out, scans / "back.csv").returncode == 0
    with open(scans / "back.csv", newline="", encoding="utf-8-sig") as f:
        head, *rows = list(csv.reader(f))
    rows[1][head.index("title")] = "Tor am Markt"
    # the file no row named comes with its path, as the catalogue's cells write theirs
    # (relative to its folder): its record, filled in here, reaches it
    assert rows[2][head.index("path")] == "Müller 1.png"
    rows[2][head.index("accession")] = "0003"
    with open(scans / "back.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows([head, *rows])
    r = run_cli("scan", scans, scans / "back.csv", "-o", man, "--extend", man, "--report", tmp_path / "rep.csv")
    assert r.returncode == 0, r.stderr
    assert "a colorize export brought back as the catalogue: its" in r.stderr
    # its record, and c.png's title (checked below); its path cell filled in is no change of
    # its record (a trial's export brought back said "path None -> ..." for 8 of 9 files)
    assert ("the catalogue changed for 2 files scanned before (Müller 1.png: accession None -> '0003'"
            in r.stderr), r.stderr
    assert "path None ->" not in r.stderr
    m = {Path(x["path"]).name: x for x in pq.read_table(man).to_pylist()}
    assert "output_record" not in m["b.png"] and "verdict" not in m["b.png"]
    assert (m["b.png"]["title"], m["c.png"]["title"]) == ("Hof", "Tor am Markt")
    assert m["Müller 1.png"]["accession"] == "0003"
    assert m["b.png"]["colorize_status"] == "checked"  # the catalogue's own, kept
    r = run_cli("export", out, tmp_path / "again.csv")
    assert r.returncode == 0 and "as a formula does" not in r.stderr
    cat.write_text("path,accession,title,status,colorize_status\nb.png,0001,=HYPERLINK(\"x\"),,\n"
                   "c.png,-2,- untitled -,,\n", encoding="utf-8")
    assert run_cli("scan", scans, cat, "-o", man, "--extend", man, "-q").returncode == 0
    r = run_cli("export", out, tmp_path / "f.csv")
    assert r.returncode == 0 and ("note: 1 catalogue cell begins as a formula does (row 2's 'title': "
                                  "'=HYPERLINK(\"x\")'): Excel runs such a cell") in r.stderr, r.stderr
    assert '"=HYPERLINK(""x"")"' in (tmp_path / "f.csv").read_text(encoding="utf-8-sig")  # as written
    with open(tmp_path / "again.csv", newline="", encoding="utf-8-sig") as f:
        again = list(csv.reader(f))
    assert again[0] == head  # the same columns as the first export: no stale copies
    rec = {r[head.index("accession")]: r[head.index("output_record")] for r in again[1:]}
    assert (rec["0001"], rec["0002"]) == ("current", "outdated")  # its XMP holds the old title


def test_a_cells_terminal_controls_are_written_as_escapes(scans, tmp_path):
    """A donor's title with escape sequences, quoted by the scan's summary, retitled the window,
    erased a line and wrote 'fake line' over it."""
    cat = scans / "cat.csv"
    cat.write_text("path,title\nb.png,ok\nb.png,\x1b]0;PWNED\x07\x1b[2K\rfake line\u202e\n", encoding="utf-8")
    r = run_cli("scan", cat, "-o", tmp_path / "m.parquet", "-q")
    assert r.returncode == 0 and "1 file listed twice" in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "\u202e" not in r.stderr
    assert "title \\x1b]0;PWNED\\x07\\x1b[2K" in r.stderr  # (the CR ended the record: Excel's rule)


@pytest.mark.slow
def test_a_later_catalogues_own_name_for_the_accession_number_reaches_the_outputs(tmp_path, ckpt, capsys):
    """A trial's second delivery came with a catalogue of 'Accession No.' where the first had
    'Inventarnummer': the job read the first alone, and the new outputs named no object, without
    a word (and the first delivery's missing file was called 'gone' by a scan of the second)."""
    rng = np.random.default_rng(5)
    d1, d2 = tmp_path / "archive" / "Lieferung 1", tmp_path / "archive" / "Ærø 1950"
    for d, names in ((d1, ("Hof.png", "Markt.png")), (d2, ("Hafen.png",))):
        d.mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(d / n)
    (d1 / "katalog.csv").write_bytes("Inventarnummer;Datei;Titel\nM-1;Hof.png;Bauernhof\nM-2;Markt.png;Markt\n"
                                     "M-3;fehlt.png;Verloren\n".encode("cp1252"))
    (d2 / "catalogue.csv").write_text("Accession No.,File,Title\nE-7,Hafen.png,Harbour\n", encoding="utf-8")

    def xmp_id(out, name):
        data = (out / "images" / name).read_bytes()
        return data.split(b"<dc:identifier>")[1].split(b"<")[0].decode() if b"<dc:identifier>" in data else None

    for how in ("auto", "identifier=Inventarnummer"):  # guessed, and named by the user (no title)
        man, out = tmp_path / f"m-{len(how)}.parquet", tmp_path / f"out-{len(how)}"
        assert main(["scan", str(d1 / "katalog.csv"), "-o", str(man), "-q", "--path-column", "Datei"]) == 0
        run = ["run", "-o", str(out), "--size", "32", "-q"]
        assert main([*run, "--manifest", str(man), "--checkpoint", ckpt, "--metadata-columns", how]) == 0
        first = (out / "images" / "Hof.png").read_bytes()
        capsys.readouterr()
        assert main(["scan", str(d2 / "catalogue.csv"), "-o", str(man), "-q", "--path-column", "File"]) == 0
        assert "2 files scanned before, 1 new, 0 changed, 0 gone, 1 still missing" in capsys.readouterr().err
        assert main(run) == 0
        said = capsys.readouterr().out
        if how == "auto":  # read from now on; what was written stays as it was
            assert ("reading the identifier from 'Accession No.' (another catalogue's name for it) where "
                    "'Inventarnummer' has no cell; the title from 'Title'") in said, said
            assert (xmp_id(out, "Hafen.png"), xmp_id(out, "Hof.png")) == ("E-7", "M-1")
            assert (out / "images" / "Hof.png").read_bytes() == first
            assert json.loads((out / "job.json").read_text())["spec"]["metadata_columns"] == \
                "identifier=Inventarnummer||Accession No.,title=Titel||Title"
            assert main(["audit", str(out), "-q"]) == 0 and "older catalogue cells" not in capsys.readouterr().out
            # a list of accession numbers of both deliveries, under the first one's column name
            (tmp_path / "redo.csv").write_text("Inventarnummer;Notiz\nM-1;x\nE-7;y\n")
            assert main([*run, "--redo", str(tmp_path / "redo.csv"), "--redo-column", "Inventarnummer", "--dry-run"]) == 0
            assert "would redo 2 images inside the job" in capsys.readouterr().out
            continue
        # named by the user: not read without being told, but said, with the line that reads it
        wider = "'identifier=Inventarnummer||Accession No.'"
        assert "not reading the identifier from 'Accession No.'" in said and f"--metadata-columns {wider}" in said, said
        assert xmp_id(out, "Hafen.png") is None
        assert main([*run, "--metadata-columns", wider.strip("'")]) == 0  # the same job, read wider
        assert main(["audit", str(out), "-q"]) == 0
        assert "1 output carries older catalogue cells" in capsys.readouterr().out
        assert (out / "audit-outdated.txt").read_text().splitlines() == [str(d2 / "Hafen.png")]

        def records(out=out):
            # in the first catalogue's shape (a trial's export turned comma-separated with June's)
            assert main(["export", str(out), str(tmp_path / "e.csv"), "--force"]) == 0
            with open(tmp_path / "e.csv", newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f, delimiter=";"))
            # May's columns first, June's after them (they came first: a database maps by place)
            assert list(rows[0])[:6] == ["Inventarnummer", "Datei", "Titel", "Accession No.", "File", "Title"]
            return {Path(x["source_path"]).name: x["output_record"] for x in rows}

        assert records() == {"Hof.png": "current", "Markt.png": "current", "Hafen.png": "outdated", "fehlt.png": ""}
        assert main([*run, "--redo", str(out / "audit-outdated.txt")]) == 0
        assert records()["Hafen.png"] == "current"
        assert (xmp_id(out, "Hafen.png"), xmp_id(out, "Hof.png")) == ("E-7", "M-1")
        capsys.readouterr()
        assert main(["audit", str(out), "-q"]) == 0 and "older catalogue cells" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_later_catalogue_with_the_first_accession_number_column_goes_on_as_the_same_job(tmp_path, ckpt, capsys):
    """May's catalogue had titles alone; June's has accession numbers: read from then on, the
    same job (refused as a different one, 'metadata_columns title=Titel -> identifier=...')."""
    d1, d2 = tmp_path / "archive" / "mai", tmp_path / "archive" / "juni"
    for d, n in ((d1, "a.png"), (d2, "b.png")):
        d.mkdir(parents=True)
        Image.new("L", (20, 16), 100).save(d / n)
    (d1 / "k.csv").write_text("path;Titel\na.png;Hof\n")
    (d2 / "k.csv").write_text("path;Inventarnummer;Titel\nb.png;J-1;Kirche\n")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(d1 / "k.csv"), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q", "--checkpoint", ckpt]) == 0
    first = (out / "images" / "a.png").read_bytes()
    assert main(["scan", str(d2 / "k.csv"), "-o", str(man), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", "-o", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "reading the identifier from 'Inventarnummer' (a later catalogue's; the job had no column for it)" in said, said
    spec = json.loads((out / "job.json").read_text())["spec"]
    assert (spec["metadata_columns"], spec["metadata_columns_before"]) == ("identifier=Inventarnummer,title=Titel", ["title=Titel"])
    assert b"<dc:identifier>J-1</dc:identifier>" in (out / "images" / "b.png").read_bytes()
    assert (out / "images" / "a.png").read_bytes() == first
    assert main(["audit", str(out), "-q"]) == 0 and "older catalogue cells" not in capsys.readouterr().out


@pytest.mark.slow
def test_an_export_of_two_deliveries_brought_back_as_the_catalogue_adds_no_phantom_records(tmp_path, ckpt):
    """Each path cell of the export is written from its own catalogue's folder: read back from
    the first delivery's folder, June's became files that do not exist, each with a real
    accession number (a trial's 29 phantoms), and every empty cell a 'None -> ""' change."""
    d1, d2 = tmp_path / "archive" / "mai", tmp_path / "archive" / "juni" / "Ærø"
    for d, n in ((d1, "a.png"), (d1, "b.png"), (d2, "c.png")):
        d.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 16), 100 + len(n)).save(d / n)
    (d1 / "k.csv").write_text("Inventarnummer;Datei;Titel\nM-1;a.png;Hof\n", encoding="utf-8")
    (d2 / "k.csv").write_text("Accession No.,File\nJ-1,c.png\n", encoding="utf-8")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", d1 / "k.csv", d2 / "k.csv", d1, "-o", man, "-q", "--path-column", "Datei").returncode == 2
    r = run_cli("scan", d1 / "k.csv", d1, "-o", man, "-q", "--path-column", "Datei")
    assert r.returncode == 0, r.stderr
    assert run_cli("scan", d2 / "k.csv", "-o", man, "-q", "--path-column", "File").returncode == 0
    assert run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt).returncode == 0
    assert run_cli("export", out, tmp_path / "e.csv").returncode == 0
    with open(tmp_path / "e.csv", newline="", encoding="utf-8-sig") as f:
        head, *rows = list(csv.reader(f, delimiter=";"))
    b = next(x for x in rows if x[head.index("Datei")] == "b.png")  # filled in by the export
    b[head.index("Inventarnummer")] = "M-2"  # the registrar's record for the unlisted file
    assert sorted(x[head.index("Datei")] for x in rows) == ["", "a.png", "b.png"]  # c: June's own column
    with open(d1 / "k.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f, delimiter=";").writerows([head, *rows])
    r = run_cli("scan", d1 / "k.csv", "-o", man, "-q", "--path-column", "Datei")
    assert r.returncode == 0, r.stderr
    t = {Path(x["path"]).name: x for x in pq.read_table(man).to_pylist()}
    assert sorted(t) == ["a.png", "b.png", "c.png"] and "missing" not in r.stdout, (sorted(t), r.stdout)
    assert (t["b.png"]["Inventarnummer"], t["c.png"]["Accession No."], t["a.png"]["Inventarnummer"]) == ("M-2", "J-1", "M-1")
    assert "-> ''" not in r.stderr and "names more than one file" not in r.stderr, r.stderr
    assert "1 row read from its source_path" in r.stderr, r.stderr
    r = run_cli("export", out, tmp_path / "e.xlsx", "--delimiter", ",")  # a CSV's flag: said unused
    assert r.returncode == 0 and "colorize: --delimiter not used: it is for a CSV, not a workbook" in r.stderr, r.stderr


def test_a_later_catalogues_columns_are_read_only_for_what_no_earlier_one_has(tmp_path):
    """A review's findings: May's shelfmark became a fallback accession number because June had
    only a Signatur column; a column named with a bar (Inv|Nr) was split in two; June's columns
    went before May's after the shared path column; a manifest from before took June's shape."""
    from pipeline.client.catalogue import Catalogue
    from pipeline.client.manifest import _same_catalogue, catalogue_info
    from pipeline.worker.writers import alternatives, record, resolve_columns

    may, june = ["path", "Inventarnummer", "Signatur", "Titel"], ["path", "Signatur", "Titel"]
    mapping = resolve_columns("auto", may, sets=[may, june])
    assert mapping == "identifier=Inventarnummer,title=Titel"
    assert "identifier" not in record(mapping, {"Signatur": "Regal 4/12", "Titel": "Kirche"}.get, "b.png")
    assert resolve_columns("auto", [*may, "Accession No."], sets=[may, ["path", "Accession No."]]) == \
        "identifier=Inventarnummer||Accession No.,title=Titel"
    assert alternatives("Inv|Nr") == ["Inv|Nr"]  # a job an earlier version began with it goes on
    assert resolve_columns("identifier=Inv|Nr,title=Titel", ["path", "Inv|Nr", "Titel"]) == "identifier=Inv|Nr,title=Titel"
    for d, text in (("mai", "path;Inventarnummer;Titel\na.png;M-1;Hof\n"), ("juni", "path,Accession No.,Title\nc.png,J-1,Hafen\n")):
        (tmp_path / d).mkdir()
        Image.new("L", (8, 8), 90).save(tmp_path / d / text.split("\n")[1].split(text[4])[0])
        (tmp_path / d / "k.csv").write_text(text)
    man = tmp_path / "m.parquet"
    for d in ("mai", "juni"):
        assert run_cli("scan", tmp_path / d / "k.csv", "-o", man, "-q").returncode == 0
    info = catalogue_info(pq.read_schema(man))
    assert info["columns"] == ["path", "Inventarnummer", "Titel", "Accession No.", "Title"]
    assert info["delimiter"] == ";"
    # a manifest from before kept no file: the folder and path column alone made June's "the same"
    old = {"delimiter": ";", "encoding": "utf-8", "path_column": "path", "folder": str(tmp_path / "juni")}
    assert not _same_catalogue(old, Catalogue(str(tmp_path / "juni" / "k.csv"), june, "path", ",", "utf-8"))


def test_catalogues_that_name_their_path_column_each_their_own_way_are_scanned_together(tmp_path, ckpt, capsys):
    """May's catalogue keeps its paths in 'Datei', June's in 'File': a repeated --path-column
    kept the last alone, without a word, and no one scan could read both."""
    rng = np.random.default_rng(8)
    may, june = tmp_path / "archive" / "Mai", tmp_path / "archive" / "June"
    for d, names in ((may, ("Hof.png",)), (june, ("Hafen.png",))):
        d.mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(d / n)
    (may / "katalog.csv").write_text("Inventarnummer;Datei\nM-1;Hof.png\n", encoding="utf-8")
    (june / "catalogue.csv").write_text("Accession No.,File\nE-7,Hafen.png\n", encoding="utf-8")
    cats = [str(may / "katalog.csv"), str(june / "catalogue.csv")]
    man = tmp_path / "m.parquet"
    assert main(["scan", *cats, "-o", str(man), "-q", "--path-column", "Datei"]) == 2
    err = capsys.readouterr().err
    assert "no 'Datei' column" in err and "use --path-column 'Datei||File'" in err, err
    for given in (["--path-column", "Datei", "--path-column", "File"], ["--path-column", "Datei||File"]):
        assert main(["scan", *cats, "-o", str(man), "-q", "--fresh", *given]) == 0
        rows = {Path(r["path"]).name: r for r in pq.read_table(man).to_pylist()}
        assert (rows["Hof.png"]["Inventarnummer"], rows["Hafen.png"]["Accession No."]) == ("M-1", "E-7")
        assert all(r["scan_error"] is None for r in rows.values())
    assert "katalog.csv: 1 row, 2 columns (semicolon-separated" in capsys.readouterr().err
    # a rescan reads them as the manifest was read; a name no catalogue has is said
    (june / "Kai.png").write_bytes((june / "Hafen.png").read_bytes())
    (june / "catalogue.csv").write_text("Accession No.,File\nE-7,Hafen.png\nE-8,Kai.png\n", encoding="utf-8")
    assert main(["scan", *cats, "-o", str(man), "-q"]) == 0
    assert "2 files scanned before, 1 new" in capsys.readouterr().err
    assert main(["scan", *cats, "-o", str(man), "-q", "--path-column", "Fiel"]) == 0
    err = capsys.readouterr().err
    assert "--path-column 'Fiel': no catalogue read here has it" in err, err
    assert "catalogue paths read from 'Datei' or 'File' too, as the manifest was" in err, err
    assert main(["scan", str(june / "catalogue.csv"), "-o", str(man), "-q", "--path-column", "Datei||File"]) == 0
    assert "no catalogue read here has it" not in capsys.readouterr().err  # May's, read before
    # June's path cell names its image for --redo, as May's does
    out = tmp_path / "out"
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    capsys.readouterr()
    assert main(["run", "-o", str(out), "--redo", "Kai.png", "--redo", "Hof.png", "--dry-run"]) == 0
    assert "would redo 2 images inside the job" in capsys.readouterr().out
    # a manifest from before the path columns were kept: its catalogue's is read again
    t = pq.read_table(man)
    pq.write_table(t.replace_schema_metadata({k: v for k, v in t.schema.metadata.items() if k != b"path_columns"}), man)
    assert main(["scan", str(may / "katalog.csv"), "-o", str(man), "-q"]) == 0


def _catalogued_job(tmp_path, ckpt, catalogue: str):
    """A small job of gray scans named by a catalogue (its text): scanned and run."""
    arch = tmp_path / "arch"
    arch.mkdir()
    for i in range(catalogue.count("\n") - 1):
        Image.new("L", (24, 16), 40 + 40 * i).save(arch / f"{i}.png")
    (arch / "k.csv").write_text(catalogue, encoding="utf-8")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(arch / "k.csv"), "-o", str(man), "-q"]) == 0
    assert main(["run", "--manifest", str(man), "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]) == 0
    return arch, out


def test_naming_the_accession_number_column_as_the_run_advised_goes_on_and_says_what_follows(tmp_path, ckpt, capsys):
    """The run says "say which with --metadata-columns identifier=COLUMN"; a trial did, with
    --redo of one image: it went on, saying the column was "a later catalogue's", and the other
    outputs' want of it went unsaid."""
    arch, out = _catalogued_job(tmp_path, ckpt, "path,Nummer,Title\n0.png,N0,T0\n1.png,N1,T1\n2.png,N2,T2\n")
    assert "say which with --metadata-columns identifier=COLUMN" in capsys.readouterr().out
    assert main(["run", "-o", str(out), "--metadata-columns", "identifier=Nummer,title=Title", "--redo", "0.png", "-q"]) == 0
    said = capsys.readouterr().out
    assert "reading the identifier from 'Nummer' (as --metadata-columns names it now): the same job" in said, said
    assert f"colorize audit {out} lists those that lack it" in said and "a later catalogue's" not in said
    assert main(["audit", str(out), "-q"]) == 0
    assert "2 outputs carry older catalogue cells" in capsys.readouterr().out
    # refused for another manifest: nothing said of reading it first
    assert main(["scan", str(arch / "0.png"), "-o", str(tmp_path / "other.parquet"), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", "-o", str(out), "--manifest", str(tmp_path / "other.parquet"),
                 "--metadata-columns", "identifier=Nummer,title=Title,creator=Title", "-q"]) == 2
    assert "reading" not in capsys.readouterr().out


def test_an_accession_number_column_with_no_cell_is_said(tmp_path, ckpt, capsys):
    """A trial's catalogue had an 'Accession No.' column left empty: guessed, it named no
    object in any output, and only a catalogue with no such column was said."""
    _, out = _catalogued_job(tmp_path, ckpt, "path,Accession No.,Title\n0.png,,T0\n1.png, ,T1\n")
    said = capsys.readouterr().out
    assert "the accession-number column 'Accession No.' has no cell in any row" in said, said
    assert main(["run", "-o", str(out), "-q"]) == 0  # said for the job taken, not at every resume
    assert "has no cell" not in capsys.readouterr().out


def test_files_no_catalogue_lists_are_exported_by_path_whichever_delivery_brought_them(tmp_path, ckpt):
    """The README says 'then the files no catalogue lists, by path'; a trial's later delivery's
    1950/w2.webp came after misc/truncated.jpg (ordered by shard first)."""
    arch = tmp_path / "arch"
    for name in ("b/1.png", "c/2.png"):
        (arch / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (24, 16), 90).save(arch / name)
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    run = ["run", "-o", str(out), "--checkpoint", ckpt, "--size", "32", "-q"]
    assert main(["scan", str(arch), "-o", str(man), "-q"]) == 0
    assert main([*run, "--manifest", str(man)]) == 0
    (arch / "a").mkdir()
    Image.new("L", (24, 16), 60).save(arch / "a" / "0.png")  # this month's, first by path
    assert main(["scan", str(arch), "-o", str(man), "-q"]) == 0 and main(run) == 0
    assert main(["export", str(out), str(tmp_path / "e.csv")]) == 0
    with open(tmp_path / "e.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["source_path"]).relative_to(arch).as_posix() for r in rows] == ["a/0.png", "b/1.png", "c/2.png"]


def test_a_manifests_own_columns_an_older_version_carried_are_not_exported_as_the_catalogues(scans, tmp_path, ckpt):
    """An upgrade trial: a machine not yet upgraded ran shards of a newer manifest, took its
    own columns (a file's time, digest, state) for catalogue cells and carried them into the
    results; the export put them among the catalogue's columns (brought back as the catalogue,
    they became catalogue columns) and renamed its own source_state to colorize_source_state."""
    (scans / "list.csv").write_text("path,accession\nb.png,A-1\nc.png,A-2\nnope.png,A-3\n")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert run_cli("scan", scans / "list.csv", "-o", man, "-q").returncode == 0
    r = run_cli("run", "--manifest", man, "-o", out, "--size", "32", "-q", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    shard = out / "results" / "shard-00000.parquet"
    t = pq.read_table(shard)
    for name in ("mtime_ns", "head_digest", "source_state", "catalogue_order", "xmp_sidecar"):
        t = t.append_column(name, pa.array(["1796372609177819594"] * t.num_rows))
    pq.write_table(t, shard)  # as that version wrote it
    assert run_cli("export", out, tmp_path / "e.csv").returncode == 0
    with open(tmp_path / "e.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["path", "accession", "status"]
    assert not {"mtime_ns", "head_digest", "catalogue_order", "xmp_sidecar", "colorize_source_state"} & set(rows[0])
    assert [r["source_state"] for r in rows] == ["", "", ""]  # the manifest's: all found
    run_cli("audit", out, "-q")  # (it finds the results file rewritten: as that version wrote it)
    errors = json.loads((out / "audit.json").read_text())["errors"]  # the catalogue's cells go along
    assert [set(e) - {"image_id", "source_path", "error"} for e in errors] == [{"path (catalogue)", "accession"}], errors
