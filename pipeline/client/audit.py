"""Audit a run: every manifest row accounted for once, every output present and intact."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from pipeline import __version__
from pipeline.client import ledger, redo, results
from pipeline.client.catalogue import carried_columns, shared_identifiers, stored_name
from pipeline.client.manifest import (
    SIDECAR_MISSING,
    read_manifest,
    resolve_path,
    sidecar_digest,
    sidecar_where,
    source_states,
)
from pipeline.client.outdir import Outdir, Problem, last_stop, output_stems, run_hint, temporaries
from pipeline.client.state import job_altered, never_started
from pipeline.errors import plural
from pipeline.storage import Store, read_source
from pipeline.worker.imaging import DEFAULT_MAX_PIXELS, open_within
from pipeline.worker.writers import alternatives, first_cell, parse_columns, record_missing

GRAY_COLORFULNESS = 3.0  # an output below this looks gray: listed for review, not a failure


def _record_problems(od: Outdir, job: dict, files: dict, shards: set[int], damaged: list[int],
                     quick: bool) -> list[dict]:
    """The job's records themselves: job.json as the run wrote it, each results file readable,
    of a shard of the job, and the file its commit recorded (ledger.py)."""
    problems = [dict(kind=Problem.DAMAGED_RESULT, shard=n, path=od.shard_rel(n)) for n in sorted(damaged)]
    if why := job_altered(job):
        problems.append(dict(kind=Problem.JOB_ALTERED, path=Outdir.JOB, reason=why))
    problems += [dict(kind=Problem.EXTRA_RESULT, shard=n, path=f) for f, n in sorted(files.items())
                 if n is None or n not in shards]
    return problems + ledger.problems(od, shards, set(files.values()), damaged, quick)


def _row_problems(man: list[dict], res: list[dict], begun: set[int]) -> tuple[list[dict], Counter]:
    """One result per manifest row, none for anything else; errors say why. The rows of a shard
    with no results file yet are not discrepancies but work to do: counted per shard (an
    unfinished job of two million scans would otherwise list every one of them)."""
    manifest_ids = {r["image_id"]: r for r in man}
    counts = Counter(r["image_id"] for r in res)
    problems: list[dict] = []
    pending: Counter = Counter()
    for iid, r in manifest_ids.items():
        if counts[iid] == 0 and r["shard"] not in begun:
            pending[r["shard"]] += 1
        elif counts[iid] == 0:
            problems.append(dict(kind=Problem.NO_RESULT, image_id=iid, source_path=r["path"],
                                 shard=r["shard"]))
        elif counts[iid] > 1:
            problems.append(dict(kind=Problem.DUPLICATE_RESULT, image_id=iid, source_path=r["path"],
                                 rows=counts[iid]))
    problems += [dict(kind=Problem.NOT_IN_MANIFEST, image_id=iid)
                 for iid in counts.keys() - manifest_ids.keys()]
    for r in res:
        if r["status"] == "error" and not (r["error"] or "").strip():
            problems.append(dict(kind=Problem.ERROR_WITHOUT_REASON, image_id=r["image_id"]))
        if r["status"] not in results.STATUSES:
            problems.append(dict(kind=Problem.BAD_STATUS, image_id=r["image_id"], status=r["status"]))
    return problems, pending


def _output_problems(od: Outdir, ok_rows: list[dict], quick: bool, progress: bool,
                     foreign: list[str], ours: set[str], renamed: list[str]) -> list[dict]:
    """Every output a row claims is there and unaltered; every output of ours in images/ is
    claimed. Ours means a name a manifest row gives its output and this tool's provenance
    inside: a curator's retouched copy keeps the provenance but not the name (appended to
    `renamed`). Everything else there is appended to `foreign`."""
    problems: list[dict] = []
    out = od.store
    present = set(od.outputs())  # one listing, not a stat per image (object stores)
    claimed = set()
    for r in tqdm(ok_rows, desc="audit", unit="img", disable=None if progress else True):
        rel = r["output_path"] or ""
        claimed.add(rel)
        where = dict(image_id=r["image_id"], output_path=r["output_path"], shard=r["shard"])
        if not rel or rel not in present:
            problems.append(dict(kind=Problem.MISSING_OUTPUT, **where))
        elif quick and out.size(rel) != r["output_bytes"]:
            problems.append(dict(kind=Problem.CORRUPT_OUTPUT, **where, reason="size differs"))
        elif not quick and out.sha256(rel) != r["output_sha256"]:
            problems.append(dict(kind=Problem.CORRUPT_OUTPUT, **where, reason="sha256 differs"))
    for rel in sorted(present - claimed):
        mine = od.wrote(rel)
        if os.path.splitext(rel)[0] in ours and mine:  # a run killed before its commit
            problems.append(dict(kind=Problem.STRAY_OUTPUT, output_path=rel))
        elif mine:  # ours by its provenance, at a name no row gives: renamed or copied
            renamed.append(rel)
        else:  # the user's: noted, never a discrepancy of ours, never moved
            foreign.append(rel)
    return problems


def _outdated_records(t, ok_rows: list[dict], carried: list[str], spec: dict, out: Store) -> list[str]:
    """Source paths of outputs written with other catalogue cells than the manifest holds now
    (a corrected catalogue scanned again), of those their XMP holds (`mapping`, the job's
    metadata columns): their XMP keeps the old record until redone. And those whose field
    comes from a later catalogue's column (Inventarnummer||Accession No.) that their XMP does
    not hold: written before the job read that column."""
    from pipeline.worker.writers import record_columns

    mapping, before = spec.get("metadata_columns") or "none", spec.get("metadata_columns_before") or []
    held = {stored_name(c) for c in record_columns(mapping)}
    if not carried or not ok_rows:
        return []
    # a column the catalogue has since dropped is not compared, nor one no output carries
    names = [c for c in carried if c in t.column_names and c in held]
    now = {r["image_id"]: r for r in t.select(["image_id", *names]).to_pylist()}
    return [r["source_path"] for r in ok_rows
            if r["image_id"] in now and (any((now[r["image_id"]][c] or "") != (r[c] or "") for c in names)
                                         or _record_missing(r, mapping, before, out))]


def _sidecars_edited(man_t, manifest: str, ok_rows: list[dict]) -> list[str]:
    """Source paths of outputs whose XMP sidecar (a workflow's rights and caption, read into the
    output) was edited or removed since, or put right since it could not be read: their XMP
    keeps the old record until redone (a trial withdrew a licence in a sidecar; the audit passed
    and the output still granted it). Read under --check-inputs, as the originals are."""
    if "xmp_sidecar" not in man_t.column_names:
        return []
    where = {i: (p, x) for i, p, x in zip(man_t.column("image_id").to_pylist(), man_t.column("path").to_pylist(),
                                          man_t.column("xmp_sidecar").to_pylist(), strict=True)}
    edited = []
    for r in ok_rows:
        if (was := r.get("sidecar_sha256")) is None or r["image_id"] not in where:
            continue
        path, sidecar = where[r["image_id"]]
        # none paired now (a fresh scan) is as missing as one paired and gone: nothing changed
        now = sidecar_digest(sidecar_where(manifest, path, sidecar)) if sidecar else SIDECAR_MISSING
        if now != was:
            edited.append(r["source_path"])
    return edited


def found_outdated_sidecars(out: Store, held: dict[str, str | None]) -> dict[str, str]:
    """{source path: its sidecar_sha256} of the outputs whose sidecar the last audit
    --check-inputs found edited since, of those `held` ({source path: its row's
    sidecar_sha256}) still as they were then (one redone since has another)."""
    try:
        was = json.loads(out.read_bytes(Outdir.AUDIT_JSON)).get("sidecar_outdated_as") or {}
    except Exception:  # noqa: BLE001 - no audit yet, or one of an earlier version
        return {}
    return {p: s for p, s in was.items() if p in held and held[p] == s}


def _sidecars_outdated(man_t, manifest: str, ok_rows: list[dict], out: Store, check_inputs: bool) -> dict:
    """The outputs whose sidecar's record is outdated: read now (--check-inputs), or, by a plain
    audit, as the last one that read them found (audit-outdated.txt, which a plain audit writes
    anew, lost them, and `run --redo` it missed them), less those redone since."""
    if check_inputs:
        edited = _sidecars_edited(man_t, manifest, ok_rows)
        held = {r["source_path"]: r.get("sidecar_sha256") for r in ok_rows}
        return {"sidecar_outdated": edited, "sidecar_outdated_as": {p: held[p] for p in edited}}
    still = found_outdated_sidecars(out, {r["source_path"]: r.get("sidecar_sha256") for r in ok_rows})
    return {"sidecar_outdated": list(still), "sidecar_outdated_as": still, "sidecar_outdated_known": bool(still)}


def _record_missing(r: dict, mapping: str, before: list[str], out: Store) -> bool:
    """An output whose record the job's widened mapping changes (a later catalogue's column) and
    whose own XMP does not say it: only such rows' files are read."""
    return bool(before) and record_missing(mapping, before, lambda c: r.get(stored_name(c)),
                                           lambda: out.read_bytes(r["output_path"]))


def _unread_folders(man_t) -> list[str]:
    """Folders the scan could not list (permissions): their pictures are in no row, and a job
    that is otherwise whole must not pass for the whole archive without saying so."""
    return json.loads((man_t.schema.metadata or {}).get(b"unread_folders", b"[]"))


def _input_problems(manifest: str, res: list[dict], progress: bool) -> list[dict]:
    """The originals are still there and unchanged since they were colorized."""
    problems: list[dict] = []
    for r in tqdm(res, desc="inputs", unit="img", disable=None if progress else True):
        if r["source_sha256"]:
            try:
                data = read_source(resolve_path(manifest, r["source_path"]))
            except FileNotFoundError:
                problems.append(dict(kind=Problem.INPUT_MISSING, image_id=r["image_id"],
                                     source_path=r["source_path"]))
                continue
            except OSError as e:  # one unreadable original is its own problem: the rest are checked
                problems.append(dict(kind=Problem.INPUT_UNREADABLE, image_id=r["image_id"],
                                     source_path=r["source_path"], reason=e.strerror or type(e).__name__))
                continue
            if (now := hashlib.sha256(data).hexdigest()) != r["source_sha256"]:
                problems.append(dict(kind=Problem.INPUT_CHANGED, image_id=r["image_id"],
                                     source_path=r["source_path"], recorded_sha256=r["source_sha256"],
                                     current_sha256=now))
    return problems


def audit(outdir: str | Store | Outdir, quick: bool = False, check_inputs: bool = False,
          sample: int = 12, progress: bool = True, sheet: str = "sample", write: bool = True) -> dict:
    """Check OUTDIR against its manifest; writes audit.json and audit.html (unless `write` is
    false: a dry run's, which changes nothing); returns the report."""
    od = Outdir(outdir)
    out = od.store
    spec = (job := od.read_job())["spec"]
    man_t = read_manifest(spec["manifest"])  # once: the rows' keys here, the catalogue's cells below
    man = man_t.select(["image_id", "path", "shard", "out_stem"]).to_pylist()
    shards = {r["shard"] for r in man}
    damaged: list[int] = []
    res = od.read_results(damaged=damaged, shards=shards).to_pylist()
    # a results file that does not read, or for no shard of the job (a copy, a stray): named,
    # and its rows not taken as the job's (--repair moves both aside)
    files = od.results_files()
    ok_rows = [r for r in res if r["status"] == "ok"]
    foreign, renamed = [], []  # in images/ at names no row gives: the user's; ours by provenance
    problems = _record_problems(od, job, files, shards, damaged, quick)
    committed = {n for n in files.values() if n is not None} & shards
    rows, pending = _row_problems(man, res, committed)
    problems += rows + _outputs_checked(od, man, ok_rows, committed - set(damaged), (quick, progress),
                                        foreign, renamed)
    # originals the last scan did not find: counted apart (nothing to mend; the export: 'gone')
    gone_ids = set(source_states(man_t))
    if check_inputs:
        problems += _input_problems(spec["manifest"], [r for r in res if r["image_id"] not in gone_ids], progress)
    status_counts = Counter(r["status"] for r in res if r["image_id"] not in gone_ids)
    committed = ({n for n in files.values() if n is not None} & shards) - set(damaged)
    redo_state = redo.load(out)
    redo_pending, redo_problems, redone = _redo_check(redo_state, res)
    problems += redo_problems + _hint_problems(od, res, redo_state)
    grayish = [{"image_id": r["image_id"], "output_path": r["output_path"],
                "colorfulness": r["colorfulness"]}
               for r in ok_rows if r["colorfulness"] is not None and r["colorfulness"] < GRAY_COLORFULNESS]
    carried = carried_columns(res[0] if res else {})

    def listed(r):  # the catalogue's own columns (accession numbers...) go along
        return {"image_id": r["image_id"], "source_path": r["source_path"], "error": r["error"],
                **{k: r[k] for k in carried}}

    gone = [listed(r) for r in res if r["image_id"] in gone_ids]
    errors = [listed(r) for r in res if r["status"] == "error" and r["image_id"] not in gone_ids]
    skipped = [listed(r) for r in res if r["status"] == "skipped" and r["image_id"] not in gone_ids]
    report = {
        "outdir": out.url, "ok": not problems and not pending, "quick": quick,
        "check_inputs": check_inputs, "manifest_rows": len(man), "result_rows": len(res),
        "pending_images": sum(pending.values()), "pending_shards": len(pending),
        # every result row once: a row of an original gone is counted there, not as its status
        "counts": {**{s: status_counts.get(s, 0) for s in results.STATUSES}, "gone": len(gone)},
        "problems": problems, "problem_counts": dict(Counter(p["kind"] for p in problems)),
        "errors": errors, "skipped": skipped, "gone": gone, "nearly_gray": grayish, "carried": carried,
        "foreign_files": foreign, "renamed_outputs": renamed, "redone": redone, "redo_pending": sorted(redo_pending),
        "committed_shards": len(committed), "unrecorded_shards": ledger.unrecorded(od, committed),
        "review": review_counts(od, res),
        "shards": len(shards), "stopped": last_stop(od),
        "record_outdated": _outdated_records(man_t, ok_rows, carried, spec, out),
        **_sidecars_outdated(man_t, spec["manifest"], ok_rows, out, check_inputs),
        **_same_bytes(res, gone_ids), "shared_identifiers": _shared_ids(res, spec, man_t),
        "pages_left": _pages_left(ok_rows, listed), "temporaries": temporaries(od),
        "unread_folders": _unread_folders(man_t), **_what_was_audited(job, quick, check_inputs),
    }
    report["grown"] = never_started(spec, shards - committed - set(damaged)) and not redo_pending
    report["incomplete"] = incomplete(report)
    report["verdict"] = verdict(report)
    try:  # a read-only replica (or a full disk) is audited all the same: the verdict stands
        if write:
            _write_reports(out, report, ok_rows, carried, spec, sample, sheet)
    except OSError as e:
        report["report_error"] = f"{e.strerror or e} in {out.url}"
    return report


def record_refusal(outdir: str, reason: str) -> None:
    """An audit that could not check the job (its manifest gone, made anew or unreadable;
    job.json damaged) says so in audit.json and audit.html, in place of the last audit's
    verdict: a monitor reading the file took the night before's "passed" for tonight's (a batch
    operator's trial). The lists' record stays, for the next audit to tell a list edited since
    from its own."""
    import datetime as dt

    out = Outdir(outdir).store
    try:
        was = json.loads(out.read_bytes(Outdir.AUDIT_JSON))
        # a refusal's own "previous" is the last audit that checked the job
        previous = was["previous"] if "refused" in was else {"at": was["audited"]["at"], "verdict": was["verdict"]}
        lists, sidecars = was.get("lists"), was.get("sidecar_outdated_as")
    except Exception:  # noqa: BLE001 - none, or not one that reads as ours: nothing of it to keep
        previous, lists, sidecars = {"at": None, "verdict": None}, None, None
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report = {"outdir": out.url, "ok": False, "verdict": "not audited", "refused": reason,
              "audited": {"at": at, "by": f"archive-colorizer {__version__}"},
              "previous": previous, "lists": lists, "sidecar_outdated_as": sidecars}
    e = html.escape
    page = ("<!doctype html><meta charset='utf-8'><title>audit</title>"
            f"<h1>Audit of {e(out.url)}</h1><p>{e(at)}: <b>not audited</b>: {e(reason)}</p>"
            + (f"<p>The last audit that checked the job, {e(str(previous['at']))}: "
               f"{e(str(previous['verdict']))}; its report is replaced by this one: audit again once "
               "the job can be checked.</p>" if previous["verdict"] else ""))
    try:  # a read-only replica: the refusal itself is the answer
        out.write_atomic(Outdir.AUDIT_JSON, json.dumps(report, indent=2).encode())
        out.write_atomic(Outdir.AUDIT_HTML, page.encode("utf-8"))
    except OSError:
        pass


def _what_was_audited(job: dict, quick: bool, check_inputs: bool) -> dict:
    """When, by what and how the audit ran, and the job it audited: a report is read by someone
    who was not there."""
    import datetime as dt

    spec = job["spec"]
    return {"audited": {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "by": f"archive-colorizer {__version__}", "quick": quick,
                        "check_inputs": check_inputs},
            "job": {k: job.get(k) for k in ("created", "started", "tool", "fingerprint")}
            | {k: spec.get(k) for k in ("manifest", "manifest_digest", "checkpoint",
                                        "checkpoint_sha256", "format", "size", "output_version")}}


def _shared_ids(res: list[dict], spec: dict, man_t) -> dict:
    """Accession numbers (the job's identifier column) that name more than one of its images,
    as the catalogue has them now (one corrected since is not one to check again):
    {"column": its name, "groups": shared_identifiers'}."""
    column = parse_columns(spec.get("metadata_columns") or "none").get("identifier")
    names = [stored_name(c) for c in alternatives(column or "")]
    if not column or not res or any(n not in man_t.column_names for n in names):
        return {"column": column, "groups": []}
    now = {r.pop("image_id"): r for r in man_t.select(["image_id", *names]).to_pylist()}
    values = [first_cell(column, lambda c: now.get(r["image_id"], {}).get(stored_name(c))) for r in res]  # noqa: B023
    return {"column": column, "groups": shared_identifiers(values, [r["source_path"] for r in res])}


def _same_bytes(res: list[dict], gone_ids: set[str]) -> dict:
    return {"copies": _copies([r for r in res if r["image_id"] not in gone_ids]),
            "moved": _moved(res, gone_ids)}


def _moved(res: list[dict], gone_ids: set[str]) -> list[dict]:
    """Gone originals whose bytes the job holds under another name now (renamed or moved, and
    scanned again there; or a copy that stayed): [{"was": path, "now": [paths]}]. Not "copies"
    of each other: a rename is one file, and the audit said it so (a trial's rename was a copy)."""
    now: dict[str, list[str]] = {}
    for r in res:
        if r.get("source_sha256") and r["image_id"] not in gone_ids:
            now.setdefault(r["source_sha256"], []).append(r["source_path"])
    return [{"was": r["source_path"], "now": sorted(now[r["source_sha256"]])} for r in res
            if r["image_id"] in gone_ids and r.get("source_sha256") in now]


def _copies(res: list[dict]) -> list[list[str]]:
    """Sources that are the same bytes under other names (a print scanned once, filed in two
    albums): each was colorized; which they are is worth a person's look."""
    by: dict[str, list[str]] = {}
    for r in res:
        if r.get("source_sha256"):
            by.setdefault(r["source_sha256"], []).append(r["source_path"])
    return sorted(sorted(v) for v in by.values() if len(v) > 1)


def _write_reports(out: Store, report: dict, ok_rows, carried, spec, sample, sheet) -> None:
    if sheet == "all":
        report["sheet_pages"] = write_sheet(out, ok_rows, carried, spec)
    _write_lists(out, report, ok_rows)
    out.write_atomic(Outdir.AUDIT_JSON, json.dumps(report, indent=2).encode())
    out.write_atomic(Outdir.AUDIT_HTML, _html(report, ok_rows, spec, sample, out).encode("utf-8"))


def _write_lists(out: Store, report: dict, ok_rows) -> None:
    """Lists for `--redo LIST`: the toned prints the classifier called colour (with --recolor),
    the files that could not be read (once they are mended), the outputs with older catalogue
    cells. A list edited since the audit wrote it (the README says to keep the toned prints'
    lines in audit-skipped.txt) is the curator's: kept as edited (report["lists_kept"]), where
    the next audit overwrote it; the sha256 of each list written is kept in audit.json to tell."""
    try:
        was = json.loads(out.read_bytes(Outdir.AUDIT_JSON)).get("lists")
    except Exception:  # noqa: BLE001 - no audit yet
        was = None
    # A path a line cannot hold (a newline in a file name, spaces at its ends) is listed by its
    # image id, which --redo takes as well: split in two, it named two files that are not there.
    ids = {r["source_path"]: r["image_id"] for r in ok_rows}
    report["lists"], report["lists_kept"] = {}, []
    for name, rows in ((Outdir.AUDIT_SKIPPED, report["skipped"]), (Outdir.AUDIT_ERRORS, report["errors"]),
                       (Outdir.AUDIT_OUTDATED, [{"source_path": p, "image_id": ids.get(p)} for p in
                                                dict.fromkeys(report["record_outdated"] + report["sidecar_outdated"])])):
        paths = [r["source_path"] if _one_line(r["source_path"]) or not r.get("image_id") else r["image_id"]
                 for r in rows]
        data = "".join(f"{p}\n" for p in paths).encode()
        mine = hashlib.sha256(data).hexdigest() if paths else None
        if out.exists(name) and _edited(out, name, (was or {}).get(name) if was is not None else None, mine):
            report["lists_kept"].append({"list": name, "would_hold": len(paths)})
            if was and name in was:  # still the audit's last: an edit is told again
                report["lists"][name] = was[name]
            continue
        if paths:
            out.write_atomic(name, data)
            report["lists"][name] = mine
        elif out.exists(name):  # an earlier audit's list, all of them since redone
            out.remove(name)


def _edited(out: Store, name: str, written: str | None, now: str | None) -> bool:
    """Whether a list is the curator's now: not as the last audit wrote it (its sha256 in
    audit.json); with no such record (an audit of an earlier version, or none), any list that
    is not what this audit writes (kept, and said: a stale one is removed by hand)."""
    there = out.sha256(name)
    return there != written if written is not None else there != now


def _outputs_checked(od: Outdir, man: list[dict], ok_rows, whole: set[int], how: tuple[bool, bool],
                     foreign: list[str], renamed: list[str]) -> list[dict]:
    """The outputs' problems. A damaged shard's outputs are its lost rows', not strays: run
    again, it rewrites them; so are those of a shard not yet committed (a run killed
    mid-shard): the resume writes them (a trial's --repair moved them to quarantine/, for a
    curator to look at for nothing)."""
    lost = output_stems(r["out_stem"] for r in man if r["shard"] not in whole)
    return [p for p in _output_problems(od, ok_rows, *how, foreign, output_stems(r["out_stem"] for r in man),
                                        renamed)
            if not (p["kind"] is Problem.STRAY_OUTPUT and os.path.splitext(p["output_path"])[0] in lost)]


def _one_line(path: str) -> bool:
    return path == path.strip() and len(path.splitlines()) == 1


def _redo_check(state: dict, res: list[dict]) -> tuple[set[str], list[dict], dict]:
    """Redos (redo.py): the images still pending, every redone image's row saying so with the
    options it was redone with, and how many were redone with what."""
    pending = {i for ids in state["pending"].values() for i in ids}
    rows = {r["image_id"]: r for r in res}
    problems = [dict(kind=Problem.REDO_NOT_RECORDED, image_id=iid, expected=redo.options_label(opts))
                for iid, opts in state["overrides"].items()
                if iid not in pending and iid in rows
                and rows[iid].get("redone") != redo.options_label(opts)]
    return pending, problems, dict(Counter(r["redone"] for r in res if r.get("redone")))


def _hint_problems(od: Outdir, res: list[dict], redo_state: dict) -> list[dict]:
    """Each hinted output was made from the hints its redo recorded: the row's digest is theirs,
    and so is the one in the file's own provenance."""
    from pipeline.worker.hints import digest_of, made_with

    overrides = redo_state["overrides"]
    pending = {i for ids in redo_state["pending"].values() for i in ids}
    problems = []
    for r in res:
        if r["status"] != "ok" or r["image_id"] in pending:
            continue
        want = digest_of(overrides.get(r["image_id"], {}).get("hints"))
        if r.get("hints_digest") != want:
            problems.append(dict(kind=Problem.HINTS_MISMATCH, image_id=r["image_id"],
                                 expected=want, found=r.get("hints_digest")))
        elif (want and r.get("hints")  # every hint outside the image: its file names none
              and not od.wrote(r["output_path"], also=made_with(want, r.get("hint_model")).encode())):
            problems.append(dict(kind=Problem.HINTS_MISMATCH, image_id=r["image_id"], expected=want,
                                 found="not in the file's provenance"))
    return problems


def review_counts(od: Outdir, res: list[dict]) -> dict:
    """What the curator has done (OUTDIR/reviews): verdicts, notes, hinted images, and the
    images whose hints changed since their output was written (`run --hinted` colours them)."""
    from pipeline.client.reviews import VERDICTS, earlier, state_of
    from pipeline.worker.hints import digest_of

    state = state_of(od)
    ids = {r["image_id"]: r for r in res}
    v = Counter(s["verdict"] for i, s in state.items() if i in ids)
    pending = sorted(i for i, s in state.items() if i in ids
                     and digest_of(s["hints"]) != ids[i].get("hints_digest"))
    return {**{k: v.get(k, 0) for k in VERDICTS},
            "not_reviewed": len(ids) - sum(v.get(k, 0) for k in VERDICTS),
            "notes": sum(1 for i, s in state.items() if i in ids and s["note"]),
            "hinted": sum(1 for i, s in state.items() if i in ids and s["hints"]),
            # a verdict given to a colouring a rerun has since replaced: to be judged again
            "judged_earlier": sorted(i for i, s in state.items() if i in ids and earlier(s, ids[i])),
            "hints_pending": pending,
            "hints_pending_sources": [ids[i]["source_path"] for i in pending]}  # for people


def incomplete(report: dict) -> bool:
    """A run that stopped before the end, and nothing else: there are images to do (shards with
    no results file yet, a redo not yet finished), and every problem is an output such a
    shard's run wrote before its commit, or an image of that redo."""
    pending = set(report["redo_pending"])
    if not pending and not report["pending_images"]:
        return False  # (a redo stopped half-way leaves no discrepancy, only images to do)
    return all(p["kind"] is Problem.STRAY_OUTPUT or p.get("image_id") in pending
               for p in report["problems"])


def how_stopped(report: dict) -> str:
    """Why an incomplete run is incomplete: a failure it recorded (outdir.record_stop), else an
    interruption."""
    stop = report.get("stopped")
    if stop:
        return f"stopped by a failure ({stop['reason']})"
    return "the manifest grew (new scans not yet run)" if report.get("grown") else "interrupted"



def _pages_left(ok_rows: list[dict], listed) -> list[dict]:
    """Files of several pages whose first alone was colorized, each with its note ("first of 3
    pages (the other 2 not colorized)"): a proof of what happened to every file says so."""
    out = []
    for r in ok_rows:
        if note := next((n.strip() for n in (r.get("notes") or "").split(";") if " pages (the other " in n), None):
            out.append({**listed(r), "error": None, "note": note})
    return out


PAGES = ("Files of several pages (a multi-page TIFF): the first page is colorized, the others are "
         "not (the output holds one page). To colour each page, split the file into one file a "
         "page (e.g. tiffsplit, or ImageMagick's convert), scan those and run them.")
SHARED = ("One number on several images: typed twice, or a record copied down for the next "
          "photograph (then one object's record is on another's output), or one object's several "
          "scans (front and back), rightly. Each image kept its row and its cells; correct the "
          "catalogue, scan it again, and `colorize run --redo` what changed.")
GONE = ("Their originals the last scan did not find (renamed, moved, removed, or a catalogue row "
        "corrected): their outputs and rows are kept, counted apart, 'gone' in the export's "
        "source_state. A file put back is found again by the next scan.")


def redo_skipped_advice(outdir: str) -> str:
    """What to do about images skipped as colour that are toned prints after all."""
    return (f"Any that are toned or stained prints can be colorized anyway: keep their lines in "
            f"{outdir}/{Outdir.AUDIT_SKIPPED}, then "
            + run_hint(outdir, "--redo", f"{outdir}/{Outdir.AUDIT_SKIPPED}", "--recolor"))


def redo_errors_advice(outdir: str) -> str:
    """What to do about images that could not be read, once their files are mended."""
    return ("Once their files are mended (copied back, made readable), colorize them with: "
            + run_hint(outdir, "--redo", f"{outdir}/{Outdir.AUDIT_ERRORS}"))


def verdict(report: dict) -> str:
    """One line a person reads first: passed or not, and what else deserves a look."""
    if report.get("incomplete"):
        return (f"incomplete: {how_stopped(report)}, {report['committed_shards']} of "
                f"{plural(report['shards'], 'shard')} committed (rerun to resume)")
    if not report["ok"]:
        return f"FAILED: {plural(len(report['problems']), 'discrepancy', 'discrepancies')} (listed below)"
    extra = [plural(n, what, many) for n, what, many in (
        (len(report["errors"]), "error", None), (len(report["skipped"]), "skipped", "skipped")) if n]
    return "passed" + (f", with {' and '.join(extra)} (each one's reason: {Outdir.AUDIT_HTML})" if extra else "")


def thumbnail(data: bytes, h: int = 120, gray: bool = False, max_pixels: int | None = None) -> Image.Image:
    """An image file's bytes -> an 8-bit thumbnail h px high (at most 4 h wide), upright; 16-bit
    scans shown at 8 bits. max_pixels: a source's limit (imaging.open_within; None for ours).
    Raises what PIL raises on a file it cannot read."""
    with open_within(data, max_pixels) as im:
        im.draft("L" if gray else "RGB", (h, h))  # a JPEG decodes at 1/2..1/8 size (DCT)
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):  # 16-bit: convert("L") would clip it to white
            a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
            im = Image.fromarray((a >> 8).astype(np.uint8))
        im = im.convert("L" if gray else "RGB")
        im.thumbnail((h * 4, h))
        return im


def _thumb_uri(data_fn, h: int = 120, gray: bool = False, max_pixels: int | None = None) -> str:
    try:
        buf = io.BytesIO()
        thumbnail(data_fn(), h, gray, max_pixels).save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # a thumbnail is a nicety; a missing or hostile file must not stop the audit
        return ""


def reviewed_said(rv: dict) -> str:
    """The curators' verdicts, notes and hints in a line ("" before any review)."""
    if not rv or not (rv["hinted"] or sum(rv[k] for k in ("accepted", "retouch", "rejected", "notes"))):
        return ""
    again = len(rv.get("judged_earlier") or [])
    return (f"reviewed: {rv['accepted']} accepted, {rv['retouch']} to retouch, {rv['rejected']} "
            f"rejected, {rv['not_reviewed']} not yet, {plural(rv['notes'], 'note')}, {rv['hinted']} hinted"
            + (f"; {again} of the verdicts given to an earlier colouring (a rerun coloured "
               f"{'it' if again == 1 else 'them'} anew since): judge {'it' if again == 1 else 'them'} "
               "again (the review page's \"judged earlier\")" if again else ""))


def _html(report: dict, ok_rows: list[dict], spec: dict, sample: int, out: Store) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><meta name='viewport' "
             "content='width=device-width'><title>audit</title>",
             f"<style>{SHEET_CSS}th{{text-align:left;padding:2px 8px}}.bad{{color:#b00}}"
             ".good{color:#070}</style>",
             f"<h1>Audit of {e(report['outdir'])}</h1>",
             "<p>" + e(f"audited {report['audited']['at']} by {report['audited']['by']}"
                       + (" (--quick: sizes only, not sha256)" if report["quick"] else "")
                       + (" with --check-inputs" if report["check_inputs"] else "")
                       + f"; the job: made {report['job']['started'] or report['job']['created']} by "
                       f"{report['job']['tool'] or 'an earlier version'}, manifest "
                       f"{report['job']['manifest']}, checkpoint sha256 "
                       f"{(report['job']['checkpoint_sha256'] or '')[:12]}, format "
                       f"{report['job']['format']}, size {report['job']['size']}") + "</p>",
             f"<p class='{'good' if report['ok'] else 'bad'}'><b>{e(report['verdict'])}"
             f"</b>: {report['manifest_rows']} manifest rows, {report['result_rows']} result rows; "
             + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + "</p>"]
    if said := reviewed_said(report.get("review") or {}):  # what `audit` says on its line too
        parts.append(f"<p>{e(said)}</p>")
    if report["problems"]:
        parts.append("<h2>Discrepancies</h2><table><tr><th>kind</th><th>image</th><th>detail</th></tr>")
        for p in report["problems"]:
            detail = {k: v for k, v in p.items() if k not in ("kind", "image_id")}
            parts.append(f"<tr><td>{e(p['kind'])}</td><td>{e(str(p.get('image_id', '')))}</td>"
                         f"<td>{e(json.dumps(detail, ensure_ascii=False))}</td></tr>")
        parts.append("</table>")
    cols = report["carried"]
    for title, rows, advice in (("Errors", report["errors"], redo_errors_advice(report["outdir"])),
                                ("Skipped", report["skipped"], redo_skipped_advice(report["outdir"])),
                                ("Gone", report.get("gone") or [], GONE),
                                ("Pages not colorized", report.get("pages_left") or [], PAGES)):
        if title in ("Gone", "Pages not colorized") and not rows:
            continue
        parts.append(f"<h2>{title} ({len(rows)})</h2>")
        if rows:
            parts.append(f"<p>{e(advice)}</p>")
        parts.append("<table><tr>"
                     + "".join(f"<th>{e(c)}</th>" for c in cols) + "<th>source</th><th>reason</th></tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{e(str(r[c] or ''))}</td>" for c in cols)
                         + f"<td>{e(r['source_path'])}</td><td>{e(r['error'] or r.get('note') or '')}</td></tr>")
        parts.append("</table>")
    parts += _redo_html(report, ok_rows, cols)
    if (shared := report.get("shared_identifiers") or {}).get("groups"):
        parts.append(f"<h2>Accession numbers that name several images ({len(shared['groups'])})</h2>"
                     f"<p>{e(SHARED)}</p><table><tr><th>{e(shared['column'])}</th><th>sources</th></tr>")
        parts += [f"<tr><td>{e(g['identifier'])}</td><td>{'<br>'.join(map(e, g['paths']))}</td></tr>"
                  for g in shared["groups"]]
        parts.append("</table>")
    parts.append(f"<h2>Nearly gray outputs, for review ({len(report['nearly_gray'])})</h2><ul>")
    parts += [f"<li>{e(r['output_path'])} (colourfulness {r['colorfulness']:.1f})</li>"
              for r in report["nearly_gray"]]
    pages = report.get("sheet_pages", 0)
    more = (f" (all {len(ok_rows)}: <a href='{Outdir.sheet(1)}'>the full contact sheet</a>, "
            f"{plural(pages, 'page')})") if pages else " (all of them: `colorize audit --sheet all`)"
    theirs = report.get("foreign_files", [])
    if theirs:
        parts.append(f"</ul><h2>Files in images/ that colorize did not write ({len(theirs)}, left "
                     "alone)</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in theirs))
    parts.append(f"</ul><h2>Before and after: a sample{more}</h2><table class='sheet'>")
    if ok_rows:
        idx = np.unique(np.linspace(0, len(ok_rows) - 1, min(sample, len(ok_rows))).astype(int))
        parts += [_sheet_row(ok_rows[i], cols, spec, out) for i in idx]
    parts.append("</table>")
    return "\n".join(parts)


def _redo_html(report: dict, ok_rows: list[dict], cols: list[str]) -> list[str]:
    """What was redone inside the job, and with what (the job's own options, --recolor, a
    curator's hints), and what waits: the page a person reads says it, as `audit` does."""
    e = html.escape
    done = [r for r in ok_rows if r.get("redone")]
    waiting = report.get("redo_pending") or []
    if not report.get("redone") and not waiting:
        return []
    how = ", ".join(f"{n} {'with the job’s own options' if k == 'redo' else 'with ' + redo.said_label(k)}"
                    for k, n in sorted(report["redone"].items()))
    parts = [f"<h2>Redone inside the job ({sum(report['redone'].values())})</h2>",
             f"<p>{e(how or 'none yet')}"
             + (e(f"; {plural(len(waiting), 'image')} still to redo (a redo stopped half-way): "
                  + run_hint(report["outdir"]) + " finishes it") if waiting else "") + "</p>"]
    if done:
        parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols)
                     + "<th>source</th><th>output</th><th>redone with</th></tr>")
        parts += ["<tr>" + "".join(f"<td>{e(str(r.get(c) or ''))}</td>" for c in cols)
                  + f"<td>{e(r['source_path'])}</td><td><a href='{_href(r['output_path'])}'>"
                  f"{e(r['output_path'])}</a></td><td>{e(r['redone'])}</td></tr>" for r in done]
        parts.append("</table>")
    return parts


SHEET_PAGE = 100  # before/after pairs per page of the full contact sheet


PREVIEW_SIDE = 2048


def _preview(out: Store, rel: str) -> str:
    """What the report links for an output: the file itself, or for a TIFF a JPEG view of it
    (written once, next to the report; the TIFF stays linked beside it)."""
    if not rel.lower().endswith((".tif", ".tiff")):
        return rel
    view = Outdir.preview_rel(rel)
    if not out.exists(view):
        try:
            with open_within(out.read_bytes(rel), None) as im:
                if im.mode not in ("RGB", "L"):  # 16-bit and the rest: to 8 bits first
                    a = np.asarray(im)
                    im = Image.fromarray((a >> 8).astype(np.uint8) if a.dtype == np.uint16 else a)
                im = im.convert("RGB")
                im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=90)
            if out.local:
                Path(out.full(view)).parent.mkdir(parents=True, exist_ok=True)
            out.write_atomic(view, buf.getvalue())
        except Exception:  # a view is a nicety: the link then goes to the TIFF itself
            return rel
    return view


def _href(rel: str) -> str:
    """A relative link to a file as a browser reads it: a '#', '?', '%' or space in an archive's
    file name is part of the name, not a fragment, a query or an escape."""
    from urllib.parse import quote

    return html.escape(quote(rel, safe="/"), quote=True)


def _sheet_row(r: dict, cols: list[str], spec: dict, out: Store) -> str:
    """One image: before, after (linked to a view of the output), and its record, labelled."""
    e = html.escape
    src = resolve_path(spec["manifest"], r["source_path"])
    # a toned print before as it is: the tone the colour replaced is what the reader compares
    before = _thumb_uri(lambda src=src: read_source(src), gray=r.get("input_kind") not in ("toned", "color"),
                        max_pixels=spec.get("max_pixels", DEFAULT_MAX_PIXELS))
    after = _thumb_uri(lambda rel=r["output_path"]: out.read_bytes(rel))
    view = _preview(out, r["output_path"])
    label = [(c, r[c]) for c in cols if r.get(c) not in (None, "")]
    label += [("source", r["source_path"]), ("output", r["output_path"])]
    if r.get("redone"):
        label.append(("redone", r["redone"]))
    record = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in label)
    tiff = (f" <a href='{_href(r['output_path'])}'>(TIFF file)</a>" if view != r["output_path"]
            else "")
    if not before:  # said, not a broken image
        there = "://" in src or os.path.exists(src)
        before = None, ("the original could not be read here" if there else
                        "the original is not there (gone since the scan, or on a disk not mounted here)")
    if not after:
        after = None, ("the output could not be read" if out.exists(r["output_path"]) else
                       "the output is not there")
    return (f"<tr><td>{_shown('before', before)}</td>"
            f"<td><a href='{_href(view)}'>{_shown('after', after)}</a>{tiff}</td>"
            f"<td><dl>{record}</dl></td></tr>")


def _shown(alt: str, uri) -> str:
    """A thumbnail, or (None, why) there is none, said in its place."""
    if isinstance(uri, tuple):
        return f"<p class='bad'>{html.escape(alt)}: {html.escape(uri[1])}</p>"
    return f"<img src='{uri}' alt='{alt}'>"


# Pages fit the window: thumbnails shrink with it, long names wrap, each record is labelled.
SHEET_CSS = ("body{font-family:sans-serif;margin:1em;max-width:100%}"
             "table{border-collapse:collapse;max-width:100%}table.sheet{width:100%;table-layout:fixed}"
             # a narrow column still keeps a year or a short date whole ("191 / 2" was one)
             "td{padding:4px 8px;vertical-align:top;overflow-wrap:anywhere;border-top:1px solid #ddd;"
             "min-width:8ch}"
             ".sheet td:nth-child(1),.sheet td:nth-child(2){width:30%}"
             "img{max-width:100%;max-height:160px}"
             "dl{display:grid;grid-template-columns:max-content 1fr;gap:0 .8em;margin:0}"
             "dt{color:#555}dd{margin:0}.bad{color:#b00}")


def write_sheet(out: Store, ok_rows: list[dict], cols: list[str], spec: dict) -> int:
    """Every ok image, before and after, with the catalogue's columns and a link to the output:
    OUTDIR/audit-sheet-NNN.html, SHEET_PAGE pairs a page. Returns the number of pages."""
    rows = sorted(ok_rows, key=lambda r: r["source_path"])
    n = max(1, -(-len(rows) // SHEET_PAGE))
    for k in range(n):
        nav = " ".join(f"<a href='{Outdir.sheet(j + 1)}'>{j + 1}</a>" if j != k else
                       f"<b>{j + 1}</b>" for j in range(n))
        body = [_sheet_row(r, cols, spec, out) for r in rows[k * SHEET_PAGE:(k + 1) * SHEET_PAGE]]
        page = ("<!doctype html><meta charset='utf-8'><meta name='viewport' content="
                f"'width=device-width'><title>contact sheet</title><style>{SHEET_CSS}</style>"
                f"<p><a href='{Outdir.AUDIT_HTML}'>audit</a> | page {nav}</p><table class='sheet'>"
                + "\n".join(body) + "</table>")
        out.write_atomic(Outdir.sheet(k + 1), page.encode("utf-8"))
    return n
