"""The morning after (issue 14, items 11-13): a report that says what happened, and advice that
fits the state OUTDIR is in."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import on_cluster
from PIL import Image

import pipeline.cli
from pipeline.client.outdir import RunLock

CLUSTER = ""  # where the runs of a test asking for `warm` go (conftest.warm); else a local cluster


def main(args) -> int:
    return pipeline.cli.main(on_cluster(args, CLUSTER))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *on_cluster(args, CLUSTER)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def night(tmp_path_factory, ckpt):
    root = tmp_path_factory.mktemp("night")
    src = root / "scans"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(src / f"g{i}.png")
    g16 = (rng.integers(0, 65535, (30, 40))).astype(np.uint16)
    Image.fromarray(g16).save(src / "deep16.png")
    (src / "g4.png").rename(src / "g4 #1 ?x%.png")  # an archive's name, not a fragment or a query
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(src / "colour.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "list.csv").write_text("path,accession\n" + "".join(
        f"{n},ACC-{i}\n" for i, n in enumerate(sorted(p.name for p in src.glob("*.png")))))
    man = root / "m.parquet"
    assert run_cli("scan", src / "list.csv", "-o", man, "--shard-size", "2", "-q").returncode == 0
    return root, man


@pytest.mark.slow
def test_report_verdict_lists_errors_skipped_and_shows_16bit(night, ckpt, capsys, warm):
    root, man = night
    out = root / "out"
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q",
                 "--checkpoint", ckpt]) == 0
    assert f"; each error's and skip's reason: colorize audit {out}\n" in capsys.readouterr().out
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    assert "audit passed, with 1 error and 1 skipped (each one's reason: audit.html)" in said
    page = (out / "audit.html").read_text()
    assert "passed, with 1 error and 1 skipped" in page and "PASS" not in page
    assert "<h2>Skipped (1)</h2>" in page and "colour.png" in page
    assert "<th>accession</th>" in page and "ACC-" in page
    assert "href='images/g0.png'" in page
    from pipeline.client.audit import _thumb_uri

    thumb = _thumb_uri(lambda: (root / "scans" / "deep16.png").read_bytes(), gray=True)
    import base64
    import io

    im = Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1])))
    assert np.asarray(im).std() > 20  # the 16-bit scan's thumbnail is a picture, not blank white


@pytest.mark.slow
def test_full_contact_sheet_pages_every_image(night, ckpt, capsys, tmp_path, monkeypatch, warm):
    import pipeline.client.audit as audit_mod

    root, man = night
    out = tmp_path / "out"
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q",
                 "--checkpoint", ckpt]) == 0
    monkeypatch.setattr(audit_mod, "SHEET_PAGE", 4)
    assert main(["audit", str(out), "-q", "--sheet", "all"]) == 0
    pages = sorted(out.glob("audit-sheet-*.html"))
    assert [p.name for p in pages] == ["audit-sheet-001.html", "audit-sheet-002.html"]  # 6 ok
    text = "".join(p.read_text() for p in pages)
    assert text.count("alt='after'") == 6 and text.count("ACC-") == 6
    assert "href='images/deep16.png'" in text and "href='audit-sheet-002.html'" in text
    assert "href='images/g4%20%231%20%3Fx%25.png'" in text
    assert "the full contact sheet</a>, 2 pages" in (out / "audit.html").read_text()
    # a curator's retouched copy (our metadata and all), a note, and a retouch saved over an output
    outs = sorted((out / "images").rglob("*.png"))
    (out / "images" / "Retusche").mkdir()
    copy = out / "images" / "Retusche" / "deep16 final.png"
    copy.write_bytes(mine := outs[0].read_bytes())
    (out / "images" / "notiz.txt").write_text("Abzug 3 ist verblasst", encoding="utf-8")
    over = outs[1]
    over.write_bytes(over.read_bytes() + b"retouched")
    retouch = over.read_bytes()
    saveas = outs[2].with_suffix(".tif")  # a curator's "save as" beside our output, our metadata in it
    saveas.write_bytes(outs[2].read_bytes())
    (out / "images" / "leer").mkdir()  # a folder of the user's, empty
    (out / "automatic").mkdir()  # an old automatic output a hinted one replaced: the old job's
    (out / "automatic" / "deep16.png").write_bytes(mine)
    capsys.readouterr()
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q",
                 "--checkpoint", ckpt, "--restart"]) == 0
    assert not list(out.glob("audit-sheet-*.html"))  # --restart discards the old report too
    said = capsys.readouterr().out
    assert (f"--restart: removed the earlier job's {len(outs) - 1} outputs as it wrote them, its results, "
            "reports and commits.jsonl") in said, said  # all but the retouched one, moved aside
    assert "2 files in images/ that colorize did not write left where they are" in said
    assert ("2 files (outputs altered since written, copies of ours, yours where the job writes) "
            "moved to quarantine/") in said
    assert (out / "quarantine" / saveas.relative_to(out)).read_bytes() == outs[2].read_bytes()
    assert (out / "images" / "leer").is_dir() and not (out / "automatic").exists()
    assert copy.read_bytes() == mine  # theirs, though it carries our metadata: never deleted
    assert (out / "images" / "notiz.txt").read_text(encoding="utf-8") == "Abzug 3 ist verblasst"
    kept = out / "quarantine" / over.relative_to(out)
    assert kept.read_bytes() == retouch  # the retouch kept; the output made again in its place
    assert over.exists() and over.read_bytes() != retouch


@pytest.mark.slow
def test_advice_fits_a_running_or_interrupted_run(night, ckpt, capsys, tmp_path):
    root, man = night
    out = tmp_path / "out"
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q",
                 "--checkpoint", ckpt]) == 0
    capsys.readouterr()
    with RunLock(out):
        import os

        began = min(p.stat().st_mtime for p in (out / "results").glob("*.parquet")) - 1
        os.utime(out / ".lock", (began, began))  # the lock's run made these commits: its pace
        assert main(["audit", str(out), "-q"]) == 3  # unfinished, not failed
        assert "a run is writing" in capsys.readouterr().err
        assert main(["status", str(out)]) == 0
        said = capsys.readouterr().out
        assert "a run is active (pid" in said
        assert "images/s, less than a minute to go" in said  # pace from the commits so far
    shards = sorted((out / "results").glob("shard-*.parquet"))
    shards[-1].unlink()  # as if the run had stopped before its last commit (never recorded)
    ledger = out / "commits.jsonl"
    last = int(shards[-1].stem.split("-")[1])
    ledger.write_text("".join(x + "\n" for x in ledger.read_text().splitlines()
                              if json.loads(x)["shard"] != last))
    assert main(["audit", str(out), "-q"]) == 3  # incomplete, not failed
    said = capsys.readouterr()
    assert said.out.startswith(f"audit incomplete: interrupted: {len(shards) - 1} of "
                               f"{len(shards)} shards committed; resume with: colorize run -o {out}")
    assert "--repair" not in said.out + said.err and "FAILED" not in said.out + said.err


@pytest.mark.slow
def test_this_months_scans_continue_the_job(tmp_path, ckpt, capsys, warm):
    """An archive grows: scan --extend keeps the old rows, the job goes on with new shards only,
    and a manifest that changes old shards is refused with the way forward."""
    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(2)

    def add(name):
        Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(src / name)

    for n in ("a.png", "b.png", "c.png"):
        add(n)
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "--shard-size", "2", "-q"]) == 0
    args = ["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q", "--checkpoint", ckpt]
    assert main(args) == 0
    committed = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    add("d.png")
    add("a2.png")  # sorts among the old ones: a plain rescan would reshuffle every shard
    capsys.readouterr()
    assert main(["scan", str(src), "-o", str(man), "--extend", str(man), "-q"]) == 0
    assert "extending" in capsys.readouterr().err
    assert main(args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert {k: after[k] for k in committed} == committed  # old shards untouched
    assert len(after) == len(committed) + 1
    assert (out / "images" / "d.png").exists() and (out / "images" / "a2.png").exists()
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0
    # a rescan from scratch reshuffles the old shards: refused, with what to do instead
    assert main(["scan", str(src), "-o", str(tmp_path / "fresh.parquet"), "--shard-size", "2",
                 "-q"]) == 0
    capsys.readouterr()
    fresh = ["run", "--manifest", str(tmp_path / "fresh.parquet"), "-o", str(out), "--size", "32",
             "-q", "--checkpoint", ckpt]
    assert main(fresh) == 2
    assert "changes shards the job already has" in capsys.readouterr().err
    # the same scans sharded otherwise, and another archive: said as such, never --restart
    assert main(["scan", str(src), "-o", str(tmp_path / "ones.parquet"), "--shard-size", "1", "-q"]) == 0
    other = tmp_path / "other archive"
    other.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(other / "z.png")
    assert main(["scan", str(other), "-o", str(tmp_path / "other.parquet"), "-q"]) == 0
    capsys.readouterr()
    fresh[fresh.index("--manifest") + 1] = str(tmp_path / "ones.parquet")
    assert main(fresh) == 2
    err = capsys.readouterr().err
    assert f"{out} holds the job of {man} (5 images); " in err and "--restart" not in err
    assert "lists them in other shards (--shard-size 1; the job's: 2), and a job keeps its shards" in err
    fresh[fresh.index("--manifest") + 1] = str(tmp_path / "other.parquet")
    assert main(fresh) == 2
    err = capsys.readouterr().err
    assert f"other.parquet lists none of them: give it an OUTDIR of its own (to go on with this job: colorize run -o {out} --scheduler {CLUSTER})" in err
    assert "--restart" not in err
    # the same scans at another path (moved, scanned anew without --relative): said as such
    import shutil

    shutil.copytree(src, tmp_path / "moved")
    assert main(["scan", str(tmp_path / "moved"), "-o", str(tmp_path / "moved.parquet"), "--shard-size", "2", "-q"]) == 0
    capsys.readouterr()
    fresh[fresh.index("--manifest") + 1] = str(tmp_path / "moved.parquet")
    assert main(fresh) == 2
    err = capsys.readouterr().err
    assert "moved.parquet lists 5 of them by their place in the archive, but at another path" in err, err


def test_ctrl_c_says_what_is_committed_and_how_to_resume(night, ckpt, capsys, tmp_path,
                                                        monkeypatch):
    import pipeline.client.orchestrate as orch

    root, man = night

    def interrupted(spec, log=print, redo=None):  # raised in code: the handler's fallback
        raise KeyboardInterrupt

    monkeypatch.setattr(orch, "run_job", interrupted)
    (tmp_path / "out").mkdir()
    from pipeline.client.outdir import Outdir
    from pipeline.client.state import check_or_write_job

    check_or_write_job(Outdir(tmp_path / "out"), {"manifest": str(man)}, restart=False)
    assert main(["run", "--manifest", str(man), "-o", str(tmp_path / "out"), "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "0 of 4 shards committed" in err
    assert f"resume with: colorize run -o {tmp_path / 'out'}" in err
    # a redo stopped half-way is said as status says it (a trial's said only the shards)
    (tmp_path / "out" / "redo.json").write_text(json.dumps({"overrides": {}, "pending": {"0": ["a", "b"]}}))
    assert main(["run", "-o", str(tmp_path / "out"), "-q"]) == 130
    assert "0 of 4 shards committed, a redo of 2 images unfinished; resume with" in capsys.readouterr().err


@pytest.mark.slow
def test_no_dashboard_link_that_leads_nowhere(night, ckpt, capsys, tmp_path):
    import importlib.util

    root, man = night
    assert main(["run", "--manifest", str(man), "-o", str(tmp_path / "o"), "--size", "32",
                 "--checkpoint", ckpt]) == 0
    said = capsys.readouterr().out
    assert ("dashboard:" in said) == (importlib.util.find_spec("bokeh") is not None)


def test_a_slow_pace_is_said_per_minute():
    """Big masters go at a few a minute: the unattended progress line said '0.0 images/s'."""
    from pipeline.client.metrics import rate_words

    assert rate_words(0.04) == "2.4 images/min" and rate_words(200.18) == "200.2 images/s"


def test_another_archives_manifest_without_a_catalogue_is_told_as_another_archive(tmp_path, ckpt, capsys, warm):
    """A trial pointed the run of a catalogued job at another folder's manifest (no catalogue)
    and was told "--metadata-columns: no column 'Inventarnummer'", a flag it never gave."""
    rng = np.random.default_rng(3)
    src, other = tmp_path / "scans", tmp_path / "other"
    for d in (src, other):
        d.mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(d / f"{d.name}{i}.png")
    (src / "katalog.csv").write_text("Datei;Inventarnummer\nscans0.png;0001\nscans1.png;0002\n", encoding="utf-8")
    man = tmp_path / "m.parquet"
    assert main(["scan", str(src), str(src / "katalog.csv"), "-o", str(man), "-q", "--path-column", "Datei"]) == 0
    out = tmp_path / "out"
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q", "--checkpoint", ckpt,
                 "--metadata-columns", "identifier=Inventarnummer"]) == 0
    assert main(["scan", str(other), "-o", str(tmp_path / "other.parquet"), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", "-o", str(out), "--manifest", str(tmp_path / "other.parquet"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "other.parquet lists none of them: give it an OUTDIR of its own" in err, err
    assert "--metadata-columns" not in err
    capsys.readouterr()
    assert main(["run", "-o", str(out), "-q"]) == 0  # the job itself goes on as it was


@pytest.mark.slow
def test_an_accession_number_on_two_files_is_said_by_the_scan_and_the_audit(tmp_path, ckpt, capsys, warm):
    """A number copied down for the next photograph, in this month's catalogue, puts one object's
    record on another's output: the scan says so over the whole manifest (last month's record
    beside this month's), --report lists it, and the audit says it, row by row, after the run."""
    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(3)
    for n in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(src / n)
    (src / "may.csv").write_text("path;Inventarnummer;Titel\na.png;F-1;Hof\nb.png; F-2 ;Kirche\n")
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src / "may.csv"), "-o", str(man), "-q"]) == 0
    assert "accession number" not in capsys.readouterr().err  # ' F-2 ' is F-2 once
    (src / "june.csv").write_text("path;Inventarnummer;Titel\nc.png;F-2;Markt\n")
    assert main(["scan", str(src / "june.csv"), "-o", str(man), "--extend", str(man), "-q",
                 "--report", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert ("1 value of 'Inventarnummer' (the accession number) names more than one file: "
            f"'F-2': {src / 'b.png'}, {src / 'c.png'} (a number typed twice") in err, err
    lines = (tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()
    assert [x for x in lines if x.startswith("same_identifier")] == [
        f"same_identifier;{src / n};;;;Inventarnummer: F-2" for n in ("b.png", "c.png")]
    assert main(["run", "--manifest", str(man), "-o", str(out), "--size", "32", "-q", "--checkpoint", ckpt]) == 0
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0  # a note, not a failure: front and back share one
    said = capsys.readouterr().out
    assert f"'F-2': {src / 'b.png'}, {src / 'c.png'}" in said and "audit.html lists them" in said
    report = json.loads((out / "audit.json").read_text())
    assert report["shared_identifiers"] == {"column": "Inventarnummer", "groups": [
        {"identifier": "F-2", "paths": [str(src / "b.png"), str(src / "c.png")]}]}
    assert "<h2>Accession numbers that name several images (1)</h2>" in (out / "audit.html").read_text()
    # corrected in the catalogue and scanned again: not one to check any more, redone or not
    (src / "june.csv").write_text("path;Inventarnummer;Titel\nc.png;F-3;Markt\n")
    assert main(["scan", str(src / "june.csv"), "-o", str(man), "--extend", str(man), "-q"]) == 0
    assert main(["audit", str(out), "-q"]) == 0
    assert json.loads((out / "audit.json").read_text())["shared_identifiers"]["groups"] == []
    assert "older catalogue cells" in capsys.readouterr().out  # c.png's XMP still says F-2


@pytest.mark.slow
def test_a_renamed_original_is_said_as_such_not_as_a_copy(tmp_path, ckpt, capsys, warm):
    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(4)
    for n in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8)).save(src / n)
    man, out = tmp_path / "m.parquet", tmp_path / "out"
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    run = ["run", "-o", str(out), "--size", "32", "-q", "--checkpoint", ckpt]
    assert main([*run, "--manifest", str(man)]) == 0
    (src / "b.png").rename(src / "b 1923.png")
    assert main(["scan", str(src), "-o", str(man), "-q"]) == 0
    assert main(run) == 0
    capsys.readouterr()
    assert main(["audit", str(out), "-q"]) == 0
    said = capsys.readouterr().out
    report = json.loads((out / "audit.json").read_text())
    assert report["copies"] == [] and "copies of another" not in said
    assert report["moved"] == [{"was": str(src / "b.png"), "now": [str(src / "b 1923.png")]}]
    assert (f"1 of them is in the job under another name, the same bytes (renamed or moved, or a copy "
            f"that stayed; colorized there too; audit.json: moved), e.g. '{src / 'b.png'}' -> "
            f"'{src / 'b 1923.png'}'") in said, said
