"""OUTDIR/commits.jsonl: each shard's commit as the run saw it (its results file's sha256, and
when), appended by the run's client alone. A results file deleted since then reads to audit as
what it is (missing), not as an interrupted run; one edited since (a row forged, an error made
an ok) as altered. Evidence of an accident or an edit, not proof against a forger, who can edit
this file too. Local OUTDIRs only: an object store has no append (audit then checks without it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

from pipeline.client.outdir import Outdir, Problem

LEDGER = "commits.jsonl"


def record(outdir: Outdir, shard: int, sha256: str | None, seen: str | None = None) -> None:
    """One line per commit, fsynced: a commit the run reported is on record before the next.
    seen: when the commit was recorded, where not as it was made (adopt)."""
    if not sha256 or not outdir.store.local:
        return
    line = json.dumps({"shard": shard, "sha256": sha256,
                       "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
                      | ({"seen": seen} if seen else {}))
    path = outdir.store.full(LEDGER)
    _own(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _own(path: str) -> None:
    """A ledger shared by hard links (an OUTDIR copied with `cp -al`, a snapshot tool's links)
    is made this OUTDIR's own before it is appended to: a migration trial's copy wrote its
    commits into the original's record, whose audit then called its own results missing or
    altered. Replaced whole, atomically, as it is."""
    try:
        if os.stat(path).st_nlink < 2:
            return
    except FileNotFoundError:
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    finally:  # a full disk or a signal mid-copy leaves no litter beside the record
        if os.path.lexists(tmp):
            os.unlink(tmp)


def adopt(outdir: Outdir, shards: set[int]) -> list[int]:
    """Record the job's shards committed with no line: a worker's commit after the run's client
    had stopped (a SIGINT, a killed client on a cluster that went on) never reached the client
    that writes the lines. Recorded as this run first sees them, so an edit from now on is told.
    A results file for no shard of the job (a copy, a stray) is no commit of it."""
    if not outdir.store.local:
        return []
    on_record = recorded(outdir)
    late = sorted(n for n in outdir.committed_shards() if n not in on_record and n in shards)
    for n in late:
        record(outdir, n, hashlib.sha256(outdir.store.read_bytes(outdir.shard_rel(n))).hexdigest(),
               seen="after its run's client had stopped")
    return late


def unrecorded(outdir: Outdir, present: set[int]) -> list[int]:
    """Committed shards with no line in a ledger that exists (none: a job older than the ledger,
    or an object store): an edit to them cannot be told until a run records them (adopt)."""
    if not outdir.store.local or not outdir.store.exists(LEDGER):
        return []
    return sorted(present - set(recorded(outdir)))


def recorded(outdir: Outdir) -> dict[int, dict]:
    """Each shard's last commit on record (a redo or a repair commits a shard again); a torn
    last line (a killed run) is skipped."""
    if not outdir.store.local or not outdir.store.exists(LEDGER):
        return {}
    out = {}
    for line in outdir.store.read_text(LEDGER).splitlines():
        try:
            c = json.loads(line)
            out[int(c["shard"])] = c
        except (ValueError, KeyError, TypeError):
            continue
    return out


def problems(outdir: Outdir, shards: set[int], present: set[int], damaged: list[int],
             quick: bool) -> list[dict]:
    """Shards committed on record whose results file is gone (MISSING_RESULT) or is not the
    file committed (ALTERED_RESULT; a --quick audit does not read them)."""
    found = []
    for n, c in sorted(recorded(outdir).items()):
        if n not in shards or n in damaged:
            continue
        rel = outdir.shard_rel(n)
        if n not in present:
            found.append(dict(kind=Problem.MISSING_RESULT, shard=n, path=rel, committed=c.get("at")))
        elif not quick and hashlib.sha256(outdir.store.read_bytes(rel)).hexdigest() != c["sha256"]:
            found.append(dict(kind=Problem.ALTERED_RESULT, shard=n, path=rel, committed=c.get("at")))
    return found
