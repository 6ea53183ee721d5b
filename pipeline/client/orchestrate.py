"""Plan and run a job: pending shards = all - committed, repairs from an audit, a bounded window of
shards in flight on the cluster (cluster.py), the run's totals (metrics.py); and a job's status."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import secrets
import shlex
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice

import pyarrow.compute as pc

from pipeline.client import ledger, redo, results
from pipeline.client.alone import Deaths
from pipeline.client.cluster import (
    check_worker_memory,
    check_worker_versions,
    check_workers_see,
    external_client,
    make_client,
    shard_threads,
    wait_for_resource,
)
from pipeline.client.jobspec import IDENTITY_FIELDS, JobSpec
from pipeline.client.manifest import (
    gone_ids,
    manifest_digest,
    read_catalogue_info,
    read_manifest,
    shard_digests,
)
from pipeline.client.metrics import Tally
from pipeline.client.outdir import (
    Outdir,
    Problem,
    clear_stop,
    last_stop,
    output_stems,
    record_stop,
    release_reserve,
    run_hint,
)
from pipeline.client.state import (
    OUTPUT_VERSION,
    check_or_write_job,
    file_sha256,
    fingerprint,
    grown,
    job_altered,
    never_started,
    other_version,
    refusal,
    resolve_checkpoint,
    restart_plan,
)
from pipeline.errors import JobError, RunFailed, ScanError, plural
from pipeline.storage import Store, is_url
from pipeline.worker.device import device_type, peak_rss_mb
from pipeline.worker.writers import BY_QUALITY, alternatives, parse_columns, resolve_columns, widens


def shard_sizes(manifest: str) -> dict[int, int]:
    t = read_manifest(manifest, columns=["shard"])
    vc = pc.value_counts(t.column("shard")).to_pylist()
    return {int(d["values"]): int(d["counts"]) for d in vc}


def _another_archive(before: dict | None, shards: dict) -> bool:
    """A manifest none of whose shards is one of the job's (before: its spec)."""
    if not before or "metadata_columns" not in before:
        return False
    return not set(map(str, (before.get("shard_digests") or {}).values())) & set(map(str, shards.values()))


def resolve_spec(o: JobSpec, before: dict | None = None) -> dict:
    """The job as job.json records it: every identity field, with the device resolved, the
    manifest's and the checkpoint's paths made absolute and their digests. before: the spec
    OUTDIR's job.json holds (its metadata columns as an earlier version resolved them)."""
    ck = resolve_checkpoint(o.checkpoint)
    shards = shard_digests(o.manifest)
    try:
        info = read_catalogue_info(o.manifest)
        columns = resolve_columns(o.metadata_columns, info.get("columns", []),
                                  (before or {}).get("metadata_columns"), info.get("sets"))
    except ValueError as e:
        if not _another_archive(before, shards):
            raise JobError(f"--metadata-columns: {e}") from None
        # the job's own mapping, read against another archive's manifest (a run pointed at it
        # with this OUTDIR): the refusal says that, not this flag the user never gave
        columns = before["metadata_columns"]
    quality = o.quality
    if o.format not in BY_QUALITY and before and before.get("format") == o.format:
        quality = before.get("quality", quality)  # lossless outputs: no --quality makes another job
    return {
        **{k: getattr(o, k) for k in IDENTITY_FIELDS}, "quality": quality,
        # as given ('auto'), not identity: a resume guesses again, and a later delivery's own
        # name for the accession number is read too (writers.widens)
        "metadata_columns": columns, "metadata_columns_given": o.metadata_columns,
        "manifest": o.manifest if is_url(o.manifest) else os.path.abspath(o.manifest),
        "manifest_digest": manifest_digest(shards),
        "shard_digests": shards,  # not identity: lets a manifest grow
        "checkpoint": str(ck.resolve()), "checkpoint_sha256": file_sha256(ck),
        "output_version": OUTPUT_VERSION,
        # On a remote cluster the GPUs are the workers', not this client's: trust --device cuda.
        "device": "cuda" if (o.scheduler and o.device == "cuda") else device_type(o.device),
    }


def _note_scheduler(outdir: Outdir, scheduler: str | None) -> str | None:
    """The cluster the last run used (not the job's identity): status's and audit's resume
    hints name it, as the run's own do (pasted on the scheduler's host without it, the hint
    would start a local cluster there). Returns the one the run before used."""
    job = outdir.read_job()
    if job.get("scheduler") != scheduler:
        outdir.write_job({**job, "scheduler": scheduler})
    return job.get("scheduler")


def _say_unnamed(o: JobSpec, mapping: str, log, before: dict | None = None) -> None:
    """A catalogue none of whose column names says accession number (guessed in a dozen
    languages): its outputs would not name their objects, and nothing would say so. And a
    --quality that no output of the job's format takes. And a new catalogue's own name for a
    field, read from now on where the job's column has no cell."""
    _say_widened(o, mapping, log, before)
    if o.format not in BY_QUALITY and o.quality != JobSpec.quality:  # said here too: no other job
        log(f"--quality {o.quality}: not used by {o.format} outputs (lossless); it is for "
            "--format jpeg and webp")
    columns = read_catalogue_info(o.manifest).get("columns", [])
    # guessed (auto, or beside named rights and creator) and none found
    guessed = o.metadata_columns.strip().lower() != "none" and "identifier=" not in o.metadata_columns.lower()
    if columns and guessed and "identifier=" not in mapping:
        log(f"no catalogue column was taken for the accession number (columns: "
            f"{', '.join(columns[:8])}{' ...' if len(columns) > 8 else ''}): the outputs' XMP will "
            "not name their objects; say which with --metadata-columns identifier=COLUMN,title=COLUMN")
    elif (ident := parse_columns(mapping).get("identifier")) and (before or {}).get("metadata_columns") != mapping:
        _say_empty(o.manifest, ident, log)


def _say_empty(manifest: str, column: str, log) -> None:
    """An accession-number column with no cell at all (guessed by its name, or named): its
    outputs would name no object, as with no column, and nothing said so."""
    from pipeline.client.catalogue import stored_name

    try:
        t = read_manifest(manifest, columns=[stored_name(c) for c in alternatives(column)])
    except Exception:  # noqa: BLE001 - the run itself says what is wrong with the manifest
        return
    if t.num_rows and not any(v not in (None, "") and str(v).strip()
                              for c in t.column_names for v in t.column(c).to_pylist()):
        log(f"the accession-number column {' or '.join(map(repr, alternatives(column)))} has no cell "
            "in any row: the outputs' XMP will not name their objects; name another with "
            "--metadata-columns identifier=COLUMN")


def _say_widened(o: JobSpec, mapping: str, log, before: dict | None) -> None:
    """A later delivery's catalogue names a field its own way ('Accession No.' beside the
    first's 'Inventarnummer'): said when the job reads it too from now on, and, where the job's
    mapping was given by name (or by an earlier version), how to have it read."""
    info = read_catalogue_info(o.manifest)
    first = set((info.get("sets") or [info.get("columns", [])])[0])

    def said(old: dict, now: dict) -> str:
        return "; ".join(
            f"the {k} from {' or '.join(map(repr, alternatives(now[k])[len(alternatives(old[k])):]))} "
            f"(another catalogue's name for it) where {' or '.join(map(repr, alternatives(old[k])))} "
            "has no cell" if k in old else
            # the first catalogue's own column: named now (as the run's advice says to)
            f"the {k} from {' or '.join(map(repr, alternatives(now[k])))} (as --metadata-columns "
            "names it now)" if set(alternatives(now[k])) <= first else
            f"the {k} from {' or '.join(map(repr, alternatives(now[k])))} (a later catalogue's; "
            "the job had no column for it)" for k in now if now[k] != old.get(k))

    was = (before or {}).get("metadata_columns")  # the job's spec as job.json held it
    if was and widens(was, mapping):
        log(f"reading {said(parse_columns(was), parse_columns(mapping))}: the same job; the "
            f"outputs written before keep what they say (colorize audit {shlex.quote(o.output)} "
            "lists those that lack it, with the --redo line that writes it into them)")
        return
    given, guess = parse_columns(mapping), parse_columns(resolve_columns("auto", info.get("columns", []), None, info.get("sets")))
    # of the fields the mapping names, those a later catalogue has a column of its own for
    wider = {k: guess[k] if alternatives(guess.get(k, ""))[:len(alternatives(v))] == alternatives(v) else v
             for k, v in given.items()}
    if wider != given:  # the outputs of the new catalogue's rows would not name their objects
        line = ",".join(f"{k}={v}" for k, v in wider.items())
        log(f"not reading {said(given, wider)}: to write it into the outputs' XMP too (the same "
            f"job): {run_hint(o.output, '--metadata-columns', line)}")


def _writable(outdir: Outdir, create: bool) -> list[str]:
    """OUTDIR can take the outputs (permissions, a read-only mount, room on its disk): asked
    before the run, one message, not a failure in every shard. Returns the folders it made."""
    made = _new_folders(outdir) if create else []
    try:
        outdir.store.check_writable(create=create)
    except OSError as e:
        raise _not_writable(e, outdir) from None
    return made


def _not_writable(e: OSError, outdir: Outdir) -> Exception:
    """What to do about a folder of OUTDIR no file can be written in: by why (a chmod is no
    answer to a read-only mount or a full disk, nor on a folder not there yet)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return JobError(f"{e.filename}: no room for the outputs ({e.strerror}); free some space on "
                        "its disk, or choose another OUTDIR, and run again (nothing was started)")
    if e.errno == errno.EROFS:
        return JobError(f"{e.filename} is on a read-only file system; choose an OUTDIR on a "
                        "writable disk (or mount this one read-write), and run again")
    if not isinstance(e, PermissionError):
        return e
    there = e.filename
    while there and not os.path.exists(there) and os.path.dirname(there) != there:
        there = os.path.dirname(there)
    if there != e.filename:  # the folder is not there yet: the one that would hold it is the matter
        return JobError(f"{e.filename} cannot be made: {there} is not writable ({e.strerror}); fix "
                        f"its permissions (e.g. chmod u+w {there}) or choose another OUTDIR")
    return JobError(f"{e.filename} is not writable ({e.strerror}); fix its permissions "
                    f"(e.g. chmod -R u+w {outdir.store.full('')}) or choose another OUTDIR")


def _new_folders(outdir: Outdir) -> list[str]:
    """The folders a run would make for OUTDIR (its own, and parents that are not there yet),
    deepest first."""
    if not outdir.store.local:
        return []
    top = os.path.abspath(outdir.store.full(""))
    made = [d for d in (os.path.join(top, Outdir.IMAGES), os.path.join(top, Outdir.RESULTS))
            if not os.path.lexists(d)]
    while not os.path.lexists(top):
        made.append(top)
        top = os.path.dirname(top)
    return made


@contextlib.contextmanager
def _unmade_if_refused(made: list[str], outdir: Outdir):
    """A run refused before its job was written (a scheduler that cannot be reached or is not
    one, no GPU worker joining) ran nothing: the folders it made for a new OUTDIR go again,
    where still empty (never anything else). Once job.json is written, OUTDIR is a job's."""
    try:
        yield
    except JobError:
        if not outdir.has_job():
            for d in made:
                with contextlib.suppress(OSError):  # not empty: something is in it, kept
                    os.rmdir(d)
        raise


def run_job(o: JobSpec, log=print, redo: tuple[dict[int, set[str]], dict] | None = None) -> dict:
    """Run (or resume) a job; returns the summary. Raises JobError for refusals. redo: images
    to colorize again inside the job (shard -> ids) and the options for them alone (redo.py)."""
    outdir = Outdir(o.output)
    spec = resolve_spec(o, (before := outdir.read_job()["spec"] if outdir.has_job() else None))
    sizes = shard_sizes(o.manifest)
    check_outdir_apart(outdir.store, o.manifest)
    outdir.check_ours()
    made = _writable(outdir, create=not o.dry_run)
    if o.dry_run:
        _say_unnamed(o, spec["metadata_columns"], log, before)
        planned = _dry_run(o, outdir, spec, sizes, log, redo)
        with external_client(o, release=False) as external:  # the night's cluster asked too
            if external is not None:
                _dry_run_cluster(external, o, spec, outdir, log)
        return planned
    with _unmade_if_refused(made, outdir), outdir.lock(), external_client(o) as external:
        if external is not None and o.device == "cuda":  # before the job is written: pins nothing
            wait_for_resource(external, "GPU", o.resource_timeout, log)
        # before job.json: a first run refused so leaves no OUTDIR (a cluster's workers see the
        # scans where this machine does: _check_cluster asks them)
        _originals_there(o.manifest, sorted(set(sizes) - (set() if o.restart else outdir.committed_shards())))
        fp = check_or_write_job(outdir, spec, o.restart, log)
        _say_unnamed(o, spec["metadata_columns"], log, before)  # of the job taken, not one refused
        clear_stop(outdir)  # the last run's failure is this run's to tell again, or not
        stale = outdir.remove_temporaries()
        if stale:
            log(f"removed {plural(stale, 'temporary file')} left by an interrupted run")
        _adopt(outdir, set(sizes), log)
        work = _plan(outdir, o, sizes, redo, fp, log)
        if not work.tasks:
            release_reserve(outdir)
            return _nothing_to_run(outdir, sizes, log)
        was = _note_scheduler(outdir, o.scheduler)  # once there is work: a rerun with none keeps it
        if was and not o.scheduler:
            log(f"the job's last run used the dask cluster at {was}; this one starts a local "
                f"cluster here (add --scheduler {was} to run on that one)")
        with make_client(o, spec["device"], external, log) as client:
            from pipeline.worker.shard import ShardJob  # imports torch: only where shards are made

            resolved = replace(o, manifest=spec["manifest"], checkpoint=spec["checkpoint"],
                               device=spec["device"], threads=shard_threads(o, spec["device"]),
                               metadata_columns=spec["metadata_columns"])
            job = ShardJob(resolved, outdir=outdir.url, checkpoint_sha256=spec["checkpoint_sha256"],
                           created=outdir.read_job().get("created", ""), output_version=OUTPUT_VERSION)
            if importlib.util.find_spec("bokeh"):  # without it the link opens to an error page
                log(f"dashboard: {client.dashboard_link}")
            if o.scheduler:
                _check_cluster(client, o, spec, outdir, log)
            failed = None
            try:
                totals = _drive(client, job, work, log, outdir)
            except RunFailed as e:
                failed = e
        # after the cluster is down: its workers no longer take the room the reason needs
        if failed is not None:
            record_stop(outdir, failed.cause)
            raise failed
        release_reserve(outdir)
        elapsed = time.perf_counter() - work.t_start
    n = totals["images"]
    totals.update(elapsed=elapsed, images_per_s=n / elapsed if elapsed else 0.0,
                  client_peak_rss_mb=peak_rss_mb())
    log(_done(totals, outdir, sizes, o.manifest))
    if totals.get("damaged"):  # done, but the job is not whole: a results file of before is
        log(f"but {plural(len(totals['damaged']), 'results file')} of the job "
            f"{'is' if len(totals['damaged']) == 1 else 'are'} damaged ({_shards(totals['damaged'])}: "
            f"not counted above): {run_hint(outdir, '--repair')}")
    return totals


def _shards(numbers: list[int]) -> str:
    return f"shard{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"


def _nothing_to_run(outdir: Outdir, sizes: dict[int, int], log) -> dict:
    """Every shard committed: said so, or, where a results file committed by name does not
    read, what mends it (a rerun alone would never see it)."""
    damaged: list[int] = []
    outdir.read_results(columns=["status"], damaged=damaged, shards=set(sizes))
    if damaged:  # committed by name, but unreadable: a rerun alone would never see it
        log(f"nothing to run without --repair: {plural(len(damaged), 'results file')} of "
            f"{outdir} {'is' if len(damaged) == 1 else 'are'} damaged ({_shards(damaged)}), "
            f"the other shards committed; {run_hint(outdir, '--repair')} colorizes "
            f"{'its shard' if len(damaged) == 1 else 'their shards'} again")
    else:
        log(f"nothing to do: {'all ' + str(len(sizes)) + ' shards' if len(sizes) > 1 else 'its one shard'} of {outdir} {'are' if len(sizes) > 1 else 'is'} committed "
            f"({sum(sizes.values())} images); see `colorize status {outdir}`")
    return {"pending_shards": 0, "ok": 0, "error": 0, "skipped": 0, "images": 0,
            "damaged": damaged}


def _adopt(outdir: Outdir, shards: set[int], log) -> None:
    """Shards a cluster went on committing after the last run's client stopped: on record."""
    if late := ledger.adopt(outdir, shards):
        shown = ", ".join(map(str, late[:10])) + (" ..." if len(late) > 10 else "")
        log(f"recorded in {ledger.LEDGER} {plural(len(late), 'shard')} ({shown}) that the "
            "cluster's workers committed after the last run's client had stopped")


def clock() -> str:
    """The time on a run's first and last lines, the machine's own, with its zone: a log read in
    the morning says when the night's job began and ended, not only how long it took."""
    import datetime as dt

    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _done(totals: dict, outdir: Outdir, sizes: dict[int, int], manifest: str) -> str:
    """The run's last line: its counts, where it wrote, and where the reasons are."""
    return (f"done: {totals['ok']} ok, {totals['error']} error, {totals['skipped']} skipped in "
            f"{totals['elapsed']:.1f} s ({totals['images_per_s']:.2f} images/s; ended {clock()})"
            f"{_job_so_far(outdir, sizes, totals, manifest)}; images in "
            f"{outdir.store.full(Outdir.IMAGES)}, results in {outdir.store.full(Outdir.RESULTS)}"
            + (f"; each error's and skip's reason: colorize audit {shlex.quote(outdir.url)}"
               if totals["error"] or totals["skipped"] else ""))


def _job_so_far(outdir: Outdir, sizes: dict[int, int], totals: dict, manifest: str) -> str:
    """A resumed run's counts are its own: the whole job's, when there is more to it (and the
    results files of before that do not read: totals["damaged"])."""
    if totals["images"] == sum(sizes.values()):
        return ""
    try:
        totals["damaged"] = []
        c = _counts(outdir, manifest, totals["damaged"], set(sizes))
    except Exception:  # noqa: BLE001 - a summary line: the run itself is done and committed
        return ""
    return (f"; the job: {c['ok']} ok, {c['error']} error, {c['skipped']} skipped"
            + (f", {c['gone']} gone" if c["gone"] else "") + f" of {plural(sum(sizes.values()), 'image')}")


def _counts(outdir: Outdir, manifest: str | None, damaged: list[int], shards: set[int] | None) -> Counter:
    """The job's result rows by status, a row whose original the last scan did not find counted
    'gone' instead, as audit and export count it (None: the manifest unknown, so none is)."""
    gone = gone_ids(manifest) if manifest else set()
    t = outdir.read_results(columns=["status", "image_id"] if gone else ["status"], damaged=damaged,
                            shards=shards)
    ids = t.column("image_id").to_pylist() if gone else [None] * t.num_rows
    return Counter("gone" if i in gone else st for st, i in zip(t.column("status").to_pylist(), ids, strict=True))


def _plan(outdir: Outdir, o: JobSpec, sizes: dict[int, int], redo_req, fp: str, log) -> _Work:
    """What this run does: the uncommitted shards whole, and in committed shards the images a
    repair or a redo (this one's, or one a stop left unfinished) names."""
    had = outdir.committed_shards()
    fixes = plan_repair(outdir, log)[0] if o.repair else {}  # first: it may set results aside
    pending = sorted(set(sizes) - outdir.committed_shards())
    set_aside = had - outdir.committed_shards()  # by the repair, just now, and said so
    said = (f"; repairing {plural(sum(map(len, fixes.values())), 'image')} in "
            f"{plural(len(fixes), 'shard')}") if fixes else ""
    on_record = ledger.recorded(outdir)  # read once, not once a pending shard
    if lost := [n for n in pending if n in on_record and n not in set_aside]:  # not an interruption's
        log(f"{plural(len(lost), 'results file')} committed before {'is' if len(lost) == 1 else 'are'} "
            f"gone ({_shards(lost)}; deleted or moved since?): {'its shard runs' if len(lost) == 1 else 'their shards run'} "
            f"again (commits.jsonl keeps the record of the {'one' if len(lost) == 1 else 'ones'} committed)")
    state = redo.request(outdir, *redo_req) if redo_req else redo.load(outdir)
    redone = {int(s): set(ids) for s, ids in state["pending"].items()}
    if redone:
        said += f"; redoing {plural(sum(map(len, redone.values())), 'image')}"
    for s, ids in redone.items():
        if s not in pending:  # an uncommitted shard is run whole, with its redo options
            fixes.setdefault(s, set()).update(ids)
    if pending or fixes:
        log(f"{len(pending)} of {plural(len(sizes), 'shard')} pending "
            f"({plural(sum(sizes[s] for s in pending), 'image')}){said}; started {clock()}")
    tasks = [(s, None) for s in pending] + [(s, frozenset(ids)) for s, ids in sorted(fixes.items())]
    options: dict[int, dict[str, dict]] = {}
    if state["overrides"]:
        t = read_manifest(o.manifest, columns=["image_id", "shard"])
        for iid, s in zip(t.column("image_id").to_pylist(), t.column("shard").to_pylist(),
                          strict=True):
            if iid in state["overrides"]:
                options.setdefault(int(s), {})[iid] = state["overrides"][iid]

    def committed(shard: int) -> None:
        if shard in redone:
            redo.done(outdir, shard, redone[shard])

    return _Work(tasks, sum(sizes[s] if ids is None else len(ids) for s, ids in tasks),
                 f"{fp[:12]}-{secrets.token_hex(4)}",
                 time.perf_counter(), options, committed)


def _originals_there(manifest: str, shards: list[int], sample: int = 20) -> None:
    """Refuse a run none of whose pending originals is where the manifest says, of up to 20
    looked at across the pending shards: an unmounted disk or an archive moved away turned a
    migration trial's resume into 18 committed "file not found" error rows, exit 0, and an audit
    that passed. A few files missing from folders that are there are their own error rows; so is
    an original the last scan marked gone (a rescan is the way past this refusal)."""
    from pipeline.client.manifest import resolve_path

    if not shards or is_url(manifest):
        return
    want = shards[:sample]
    try:
        t = read_manifest(manifest, columns=["path", "shard", "size_bytes", "source_state"],
                          filters=[("shard", "in", want)]).to_pydict()
    except ScanError:  # a manifest from before source_state
        t = read_manifest(manifest, columns=["path", "shard", "size_bytes"],
                          filters=[("shard", "in", want)]).to_pydict()
    per: dict[int, list[str]] = {}
    for p, n, size, state in zip(t["path"], t["shard"], t["size_bytes"],
                                 t.get("source_state") or [None] * len(t["path"]), strict=True):
        # found at the scan (a catalogue row whose file was missing then is no sign), not gone since
        if size is not None and state != "gone" and not is_url(p):
            per.setdefault(n, []).append(resolve_path(manifest, p))
    looked: list[str] = []
    for k in range(sample):  # across the shards: the first row of each, then the second...
        looked += [ps[k] for ps in per.values() if k < len(ps)]
    looked = looked[:sample]
    if not looked or any(os.path.exists(q) for q in looked):
        return
    # every one missing: a disk's or a move's where their folders are gone too, or where many are
    if len(looked) < 5 and any(os.path.isdir(os.path.dirname(q)) for q in looked):
        return
    more = f" and {len(looked) - 1} more looked at" if len(looked) > 1 else ""
    raise JobError(f"none of the pending images' originals is where the manifest says ({looked[0]}{more}): "
                   "is their disk mounted, or did the archive move? Nothing was run. A manifest made "
                   "with --relative moves with its scans (name it where it is now with --manifest); "
                   "one without names them where they were scanned. Gone for good: scan the archive "
                   "again (their rows are marked gone, and run as error rows)")


def _dry_run(o: JobSpec, outdir: Outdir, spec: dict, sizes: dict[int, int], log, redo_req=None) -> dict:
    """What a run would do, and whether it would be refused; changes nothing."""
    committed = outdir.committed_shards()
    note = ""
    if o.restart and (committed or outdir.has_job()):
        committed = set()
        plan = restart_plan(outdir, spec.get("manifest"))
        note = (f" (--restart: the earlier job's results would be discarded first, and "
                f"{plural(len(plan['remove']), 'output')} it wrote removed; "
                f"{len(plan['quarantine'])} moved to quarantine/ (altered since, or ours where "
                f"the new job writes); {len(plan['leave'])} that colorize did not write left)")
    elif outdir.has_job() and (job := outdir.read_job())["fingerprint"] != fingerprint(spec):
        # a refusal is the dry run's answer too, exit code and all (a script checks it first)
        try:
            more = grown(outdir, job["spec"], spec)
        except JobError as e:
            raise JobError(f"dry run: a real run would be refused: {e}") from None
        if not more:
            raise JobError(f"dry run: a real run would be refused: {refusal(outdir, job['spec'], spec)}")
        note = " (the manifest grew: the job goes on with its new shards)"
    fixes, aside = plan_repair(outdir, log, dry=True) if o.repair and outdir.has_job() else ({}, set())
    committed -= aside  # set aside by the repair: run whole
    pend = sorted(set(sizes) - committed)
    try:
        _originals_there(o.manifest, pend)
    except JobError as e:  # the dry run's answer too (a script checks it first)
        raise JobError(f"dry run: a real run would be refused: {e}") from None
    if fixes:  # what --repair would do, not only what is pending (a trial's dry run said nothing)
        note += (f" (--repair: {plural(sum(map(len, fixes.values())), 'image')} in "
                 f"{plural(len(fixes), 'committed shard')} colorized again)")
    log(f"dry run: {plural(len(sizes), 'shard')}, {len(sizes) - len(pend)} committed, {len(pend)} pending "
        f"({sum(sizes[s] for s in pend)} of {sum(sizes.values())} images){note}")
    state = redo.planned(redo.load(outdir), *redo_req) if redo_req else redo.load(outdir)
    n_redo = sum(map(len, state["pending"].values()))  # an interrupted redo's images too
    if n_redo:
        log(f"would redo {plural(n_redo, 'image')} inside the job:")
        for line in redo.describe(o.manifest, state):
            log(line)
    return {"pending_shards": len(pend), "pending_images": sum(sizes[s] for s in pend),
            "redo_images": n_redo}


@dataclass(frozen=True)
class _Work:
    tasks: list[tuple[int, frozenset[str] | None]]  # (shard, None) or (shard, images to repair)
    images: int  # what the progress bar counts to
    # the fingerprint's head and this run's own token: tasks of different jobs never share a dask
    # key, nor do two runs of one job into two OUTDIRs on a shared cluster (a task of the same key
    # is one task to dask: the second run's shards were written into the first's OUTDIR)
    key: str
    t_start: float  # perf_counter at the start, cluster start included
    options: dict = field(default_factory=dict)  # shard -> image id -> a redo's options
    committed: Callable[[int], None] = lambda shard: None  # told after each task's commit


class _Watch:
    """Says so, once, when a run has had no worker for a while (every worker of a cluster the
    user runs gone), or a worker has been paused by dask for its memory: the run waits, and
    would otherwise wait in silence."""

    def __init__(self, client, scheduler: str | None, log, after: float = 60.0, every: float = 5.0,
                 tick: Callable[[], None] = lambda: None):
        import threading

        self.client, self.scheduler, self.log, self.after, self.every = client, scheduler, log, after, every
        self.tick = tick  # asked each look: a log that says when nothing has committed for a while
        self.done = threading.Event()
        try:  # the workers at the start: one lost before the first look is said too
            self.seen = dict(client.scheduler_info()["workers"])
        except Exception:  # noqa: BLE001 - a scheduler gone: the run itself says so
            self.seen = {}
        threading.Thread(target=self._watch, daemon=True, name="no-workers").start()

    def _watch(self) -> None:
        since, paused, seen, said = None, {}, self.seen, False
        while not self.done.wait(self.every):
            self.tick()
            try:
                workers = self.client.scheduler_info()["workers"]
            except Exception:  # noqa: BLE001 - a scheduler gone: the run itself says so
                return
            n = len(workers)
            for addr in set(seen or {}) - set(workers):  # an operator's log says when, and who
                self.log(f"colorize: worker {seen[addr].get('name') or addr} left the cluster "
                         f"({plural(n, 'worker')} now); a shard it held runs again elsewhere")
            seen = dict(workers)
            self._paused(workers, paused)
            since, said = (None, False) if n else (since or time.monotonic(), said)
            if since is not None and time.monotonic() - since > self.after and not said and not self.done.is_set():
                start = (f"start one: dask worker {self.scheduler}" if self.scheduler else
                         "the local cluster starts them again")
                self.log(f"colorize: no dask worker connected to {self.scheduler or 'the local cluster'} "
                         f"for {self.after:.0f} s: the run waits for one ({start}), or Ctrl-C "
                         "(committed shards stay)")
                said = True  # once, till one comes: the watch goes on (the idle lines, a worker paused)

    def _paused(self, workers: dict, paused: dict) -> None:
        """A worker paused (dask stops giving it tasks at 80 % of its memory limit) for as long
        as `after`: named once, with its memory and what to do."""
        now = time.monotonic()
        for addr, w in workers.items():
            if w.get("status") != "paused":
                paused.pop(addr, None)
            elif now - paused.setdefault(addr, now) > self.after and paused[addr] > 0:
                paused[addr] = -1.0  # said
                self.log(f"colorize: worker {w.get('name') or addr} has been paused by dask for "
                         f"{self.after:.0f} s: its memory ({w['metrics']['memory'] / 1e9:.2f} GB) "
                         f"is near its limit ({(w.get('memory_limit') or 0) / 1e9:.2f} GB), and "
                         "it takes no shard until that falls; give it more (dask worker "
                         "--memory-limit)")

    def stop(self) -> None:
        self.done.set()


def _check_cluster(client, o: JobSpec, spec: dict, outdir: Outdir, log) -> None:
    """What a cluster the user runs must be for this job, asked before any shard: its workers
    see OUTDIR and the scans, run this version, and have the memory. OUTDIR not made yet (a dry
    run makes nothing): the folder it will be made in."""
    where = None
    if outdir.store.local:
        where = outdir.store.full("")
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
    check_workers_see(client, where, _a_source(spec["manifest"]))
    check_worker_versions(client)
    check_worker_memory(client, spec["manifest"], log, o.batch_size, shard_threads(o, spec["device"]),
                        gpu=spec["device"] == "cuda")


def _dry_run_cluster(client, o: JobSpec, spec: dict, outdir: Outdir, log) -> None:
    """--dry-run --scheduler: the checks a real run makes of the cluster before any shard (a
    misspelt address, a worker that cannot see the scans), said or refused now, not at night."""
    workers = client.scheduler_info()["workers"]
    gpus = sum("GPU" in (w.get("resources") or {}) for w in workers.values())
    log(f"dry run: the dask scheduler at {o.scheduler} answers, with {plural(len(workers), 'worker')}"
        + (f" ({gpus} with the GPU resource)" if spec["device"] == "cuda" else ""))
    if not workers:
        log(f"  a real run waits for one: start it with dask worker {o.scheduler}")
        return
    if spec["device"] == "cuda" and not gpus:
        log(f"  none offers the GPU resource now: a real run waits {o.resource_timeout:.0f} s for one, "
            "then is refused (dask worker ... --resources GPU=1, or run with --device cpu)")
    _check_cluster(client, o, spec, outdir, log)


def _a_source(manifest: str) -> str | None:
    """A scan this machine can read (the workers are asked whether they can too)."""
    from pipeline.client.manifest import resolve_path

    for p in read_manifest(manifest, columns=["path"]).column("path").to_pylist()[:50]:
        if "://" in p:
            return None
        if os.path.isfile(full := resolve_path(manifest, p)):
            return full
    return None


UNSTARTED = 3  # a shard's tries alone sent again though none had started: then it fails


class _Shards:
    """Sends the shards to the cluster, and a shard whose worker died each time it was tried
    back once more with its images one at a time, while each such try ends on an image
    (client/alone.py): the scan no worker can colorize becomes its error row."""

    def __init__(self, client, job, work: _Work, resources, outdir: Outdir, log):
        self.client, self.job, self.work, self.resources = client, job, work, resources
        self.outdir, self.log = outdir, log
        self.alone: Counter = Counter()  # shard -> times sent back with its images one at a time
        self.started: dict[int, int] = {}  # shard -> its tries started when it was last sent
        self.unstarted: Counter = Counter()  # shard -> tries sent again that had never started
        self.tasks: dict = {}  # a future's key -> its task
        self.ac = None  # the as_completed the run waits on

    def submit(self, task, one_at_a_time: bool = False):
        s, ids = task
        key = f"shard-{s:05d}-{self.work.key}" + ("-repair" if ids else "")
        if one_at_a_time:
            self.alone[s] += 1
            key += f"-alone{self.alone[s]}"
        self.tasks[key] = task
        return self.client.submit(self.job, s, ids, self.work.options.get(s), one_at_a_time,
                                  key=key, retries=self.job.spec.retries, pure=False,
                                  resources=self.resources)

    def again_alone(self, fut) -> bool:
        """False: the last try alone died with no image begun (no image to blame: it failed)."""
        s = int(fut.key.split("-")[1])
        if not self.alone[s]:
            Deaths.forget(self.outdir.store, s)  # this run's record: a killed run's is no evidence
            self.log(f"colorize: a worker died each time shard {s:05d} was tried; trying its "
                     "images one at a time, to find any that a worker cannot colorize")
        else:
            tries, began = Deaths.said(self.outdir.store, s)
            # a try that never started died queued on a worker another shard's scan killed:
            # not its failure; one that started and died with no image begun has failed
            if tries != self.started.get(s) and not began:
                return False
            if tries != self.started.get(s):
                self.unstarted[s] = 0  # a try started: the count is of tries in a row that did not
            else:
                self.unstarted[s] += 1
                # ...but a worker that dies before any try starts (it cannot load the job, or
                # sees OUTDIR elsewhere) would be sent it for ever: the shard fails as before
                if self.unstarted[s] > UNSTARTED:
                    return False
        self.started[s] = Deaths.said(self.outdir.store, s)[0]
        self.ac.add(self.submit(self.tasks[fut.key], one_at_a_time=True))
        return True


_RUNNING: dict = {}  # this process's run, for a signal's handler, which has no other way to it


def so_far(since: float) -> dict:
    """The counts until now of this process's run begun after `since` (perf_counter): {} before
    its first shard is sent (an earlier run's, in a process that ran several, are not its)."""
    t = _RUNNING.get("tally")
    return t.so_far() if t is not None and t.t_start >= since else {}


def _drive(client, job, work: _Work, log, outdir: Outdir) -> dict:
    """Keeps a bounded window of shards in flight until all are committed, or one fails."""
    from distributed import as_completed
    from tqdm import tqdm

    o = job.spec
    resources = {"GPU": 1} if (o.scheduler and o.device == "cuda") else None  # waited for (run_job)
    window = o.window or 2 * max(1, len(client.scheduler_info()["workers"]))
    # disable=None: a bar on a terminal only; a cron job's mailed log gets none
    bar = tqdm(total=work.images, unit="img", desc="colorize", disable=None if o.progress else True,
               smoothing=0.1)
    tally = _RUNNING["tally"] = Tally(work.t_start, log if o.progress and bar.disable else None,
                                      (len(work.tasks), work.images))

    it = iter(work.tasks)
    shards = _Shards(client, job, work, resources, outdir, log)
    ac = shards.ac = as_completed([shards.submit(t) for t in islice(it, window)], with_results=False)
    failure, tb, killed = None, "", []
    watch = _Watch(client, o.scheduler, log, tick=tally.idle)
    try:
        for fut in ac:
            try:
                summary = fut.result()
            except Exception as e:  # after retries, or a worker that kept dying
                if type(e).__name__ == "KilledWorker" and shards.again_alone(fut):
                    continue
                why, trace = _failed(e, fut, o)
                if type(e).__name__ not in ("KilledWorker", "WorkerDies"):
                    failure, tb = why, trace
                    break
                # that shard's scans (most often too large for a worker), not the run's: a night's
                # other shards go on, and the run fails at its end, naming it
                killed.append(why)
                summary = None
            finally:
                # Let go of it: a result the scheduler still held, on a worker killed later
                # (another shard's scan), was computed again, and its shard committed anew
                # behind the ledger's back (audit: altered).
                fut.release()
            if summary is not None:
                if not outdir.store.exists(outdir.shard_rel(summary["shard"])):
                    # a worker that writes OUTDIR elsewhere (another mount): its "done" is not ours
                    failure = (f"shard {summary['shard']:05d} was committed by a worker, but "
                               f"{outdir.shard_rel(summary['shard'])} is not in {outdir.url} as "
                               "this machine sees it: the workers write OUTDIR somewhere else "
                               "(mount it at the same path on every worker)")
                    break
                tally.add(summary)
                ledger.record(outdir, summary["shard"], summary.get("results_sha256"))
                work.committed(summary["shard"])
                bar.update(summary["images"])
            nxt = next(it, None)
            if nxt is not None:
                ac.add(shards.submit(nxt))
    finally:
        watch.stop()
        bar.close()
    if killed and not failure:
        more = len(killed) - 1
        failure = killed[0] + (f" (and {plural(more, 'other shard')} so)" if more else "") + \
            "; every other shard went on"
    if failure:
        for f in list(ac.futures):  # a copy: completions still arrive and change the dict
            f.cancel()
        raise RunFailed(f"{failure}; committed shards are intact; resume with: {run_hint(o.output)}",
                        traceback=tb, cause=failure)
    return tally.summary()


# the cluster's failures, not bugs of ours: no traceback under the run's message
_NOT_BUGS = ("OutputError", "KilledWorker", "WorkerDies")
_SCHEDULER_LOST = ("CommClosedError", "FutureCancelledError", "CancelledError", "StreamClosedError")


def _failed(e: Exception, fut, o) -> tuple[str, str]:
    """(what failed, the traceback where it is a bug) for a shard's future that raised."""
    name, shard = type(e).__name__, fut.key.split("-")[1]
    if name in _SCHEDULER_LOST:
        # (not dask's words: "shard-00001-... cancelled" named a shard a worker went on to commit)
        return (f"the connection to the dask scheduler was lost ({name}); shards its workers still "
                "held may commit meanwhile: the next run records them"), ""
    failure = f"shard {shard} failed: {name}: " + " ".join(str(e).split())
    if name == "KilledWorker" and "-alone" in str(fut.key):  # one image at a time: no batch to shrink
        failure += (" (tried with its images one at a time, a worker died with none of them in hand: "
                    "before the first, between two, or at the commit - its memory for the model, or "
                    "its environment; see its log)")
    elif name in ("KilledWorker", "WorkerDies"):
        failure += _killed(o, int(shard), alone=name == "WorkerDies")
    if name in _NOT_BUGS:
        return failure, ""
    try:
        return failure, "".join(traceback.format_exception(type(e), e, fut.traceback()))
    except Exception:  # noqa: BLE001 - the scheduler gone with it: the failure alone
        return failure, ""


def _killed(o, shard: int, alone: bool = False) -> str:
    """What most often kills a worker each time a shard is tried: its memory, on the shard's
    largest scans (named, with what they need; alone: each was tried alone, no batch to shrink)."""
    from pipeline.client.cluster import GB, MODEL_BYTES, largest_scan
    from pipeline.client.jobspec import alone_bytes

    big = largest_scan(o.manifest, shard, o.batch_size, o.threads or 1)
    if big is not None and alone:
        return (f" (the shard's largest scan is {big[0]}, {big[1]}x{big[2]}: about "
                f"{alone_bytes(big[1], big[2], None) / GB:.1f} GB with the model, alone)")
    return ("" if big is None else
            f" (a worker died each time: most often its memory; the shard's largest scan is "
            f"{big[0]}, {big[1]}x{big[2]}, and a worker holds it with others (a batch of "
            f"--batch-size {o.batch_size}, those read ahead): about {(MODEL_BYTES + big[3]) / GB:.1f} GB "
            "with the model: give the workers more memory and run again; a job started with a "
            "smaller --batch-size holds fewer)")


def check_outdir_apart(outdir: Store, manifest: str) -> None:
    """Refuse an OUTDIR inside the sources' folder (a later scan would take the outputs for
    new scans, and an output could land on a source) or holding the sources."""
    if not outdir.local:
        return
    from pipeline.client.manifest import resolve_path

    paths = read_manifest(manifest, columns=["path"]).column("path").to_pylist()
    # folders, not files: a million scans live in a few thousand folders (realpath is a syscall)
    local = {os.path.dirname(p) for p in paths if "://" not in p}
    if not local:
        return
    out = os.path.realpath(outdir.root)
    folders = {os.path.realpath(resolve_path(manifest, d or ".")) for d in local}
    scanned = []
    if not is_url(manifest):
        import json

        import pyarrow.parquet as pq

        scanned = json.loads((pq.read_schema(manifest).metadata or {}).get(b"source_folders", b"[]"))
    root = os.path.commonpath(list(folders))
    # the folders scanned, where the manifest says (`scan a b`: out/ beside them was refused as
    # "inside the source folder" their parent, never scanned); else the files' common folder
    if not scanned and root != os.path.dirname(root):  # not "/": spread over the disk says nothing
        folders.add(root)
    folders.update(scanned)
    _apart(out, folders, f"OUTDIR {out}")
    images = os.path.join(outdir.root, Outdir.IMAGES)
    if os.path.realpath(images) != os.path.join(out, Outdir.IMAGES):  # a link: to a bigger disk?
        _apart(os.path.realpath(images), folders, f"OUTDIR's {Outdir.IMAGES}/ (a link to "
               f"{os.path.realpath(images)})")


def _apart(out: str, folders: set[str], what: str) -> None:
    """Refuse a real folder `out` inside the sources' folders or holding them."""
    up, holds = out, []
    while True:
        if up in folders:
            holds.append(up)
        if os.path.dirname(up) == up:
            break
        up = os.path.dirname(up)
    if holds:  # named by the outermost: the folder that was scanned, not a box inside it
        where = "holds source images" if holds[-1] == out else f"is inside the source folder {holds[-1]}"
        raise JobError(f"{what} {where}: a later scan would take the outputs for new scans, and an "
                       "output could replace a source; choose a folder outside it")
    inside = next((d for d in folders if d == out or d.startswith(out + os.sep)), None)
    if inside:
        raise JobError(f"{what} holds sources (in {inside}): outputs could overwrite them; "
                       "choose a folder apart from them")


def plan_repair(outdir: Outdir, log, dry: bool = False) -> tuple[dict[int, set[str]], set[int]]:
    """From a full audit: images to redo per committed shard, and the shards whose results it
    sets aside (they run whole). Outputs of ours altered since, or claimed by no row, are moved
    to OUTDIR/quarantine/ (same paths), never deleted; files the tool did not write are left
    where they are. dry: said as what a repair would do, nothing moved."""
    from pipeline.client.audit import audit

    moved, aside = ("would move", lambda rel: f"{Outdir.QUARANTINE}/{rel}") if dry else ("moved", outdir.quarantine)
    report = audit(outdir, progress=False, write=not dry)
    fixes: dict[int, set[str]] = {}
    whole: set[int] = set()
    shard_of = {}
    committed = outdir.committed_shards()
    absent = _unmakeable(outdir, report["problems"], log)
    for p in report["problems"]:
        kind = Problem(p["kind"])
        if kind in (Problem.MISSING_OUTPUT, Problem.CORRUPT_OUTPUT) and p["image_id"] in absent:
            continue  # its row and what is left of its output stay until the original is back
        if kind in (Problem.MISSING_OUTPUT, Problem.CORRUPT_OUTPUT):
            if kind is Problem.CORRUPT_OUTPUT:  # altered since we wrote it (a retouch?): kept aside
                log(f"{moved} an altered output to {aside(p['output_path'])}; it will be "
                    "written again")
            fixes.setdefault(p["shard"], set()).add(p["image_id"])
        elif kind is Problem.DUPLICATE_RESULT:
            if not shard_of:
                t = read_manifest(outdir.read_job()["spec"]["manifest"], columns=["image_id", "shard"])
                shard_of = dict(zip(t.column("image_id").to_pylist(), t.column("shard").to_pylist(),
                                    strict=True))
            fixes.setdefault(shard_of[p["image_id"]], set()).add(p["image_id"])
        elif kind is Problem.STRAY_OUTPUT:  # ours (its metadata says so), but no row claims it
            log(f"{moved} an output no result row claims to {aside(p['output_path'])}")
        elif kind is Problem.NO_RESULT and p["shard"] in committed:
            fixes.setdefault(p["shard"], set()).add(p["image_id"])
        elif kind in (Problem.DAMAGED_RESULT, Problem.EXTRA_RESULT, Problem.ALTERED_RESULT):
            what = {Problem.DAMAGED_RESULT: "a damaged", Problem.EXTRA_RESULT: "a stray",
                    Problem.ALTERED_RESULT: "an altered"}[kind]
            log(f"{moved} {what} results file to {aside(p['path'])}"
                + ("" if kind is Problem.EXTRA_RESULT else "; its shard runs again"))
            whole.add(p["shard"])
            if kind is not Problem.EXTRA_RESULT:  # no record proves its outputs unaltered now
                if outs := [aside(rel) for rel in _outputs_of(outdir, p["shard"])]:
                    log(f"{moved} its {plural(len(outs), 'output')} to {Outdir.QUARANTINE}/ (with no "
                        "record of their bytes, an output retouched since could be among them: "
                        "kept there, to compare); the run writes them again")
    return {s: ids for s, ids in fixes.items() if s not in whole}, whole  # a whole shard: pending now


def _unmakeable(outdir: Outdir, problems: list[dict], log) -> set[str]:
    """Images whose output --repair would make again, of which the original is not there now:
    remade, each could only become an error row in place of its record (and an altered output
    would go to quarantine for nothing). Said, and left for when it is back."""
    from pipeline.client.redo import manifest_rows, not_there

    ids = {p["image_id"] for p in problems
           if Problem(p["kind"]) in (Problem.MISSING_OUTPUT, Problem.CORRUPT_OUTPUT)}
    if not ids:
        return set()
    rows = manifest_rows(outdir.read_job()["spec"]["manifest"], ids)
    absent = not_there(outdir.read_job()["spec"]["manifest"], rows)
    if absent:
        first = min((r for r in rows if r["image_id"] in absent), key=lambda r: r["path"])
        one = len(absent) == 1
        log(f"left {plural(len(absent), 'image')} as {'it is' if one else 'they are'} (rows and outputs "
            f"untouched), no original to make {'it' if one else 'them'} again from: {first['path']} is "
            f"{absent[first['image_id']]}; put it back, then --repair again")
    return set(absent)


def _outputs_of(outdir: Outdir, shard: int) -> list[str]:
    """The files in images/ at the names a shard's rows write (any extension)."""
    t = read_manifest(outdir.read_job()["spec"]["manifest"], columns=["out_stem"], shard=shard)
    stems = output_stems(t.column("out_stem").to_pylist())
    return [rel for rel in outdir.outputs() if os.path.splitext(rel)[0] in stems]


def _pace(outdir: Outdir, sizes: dict[int, int], committed: set[int]) -> dict:
    """The running run's pace and time left, from the commit times of its own shards (not those
    of the runs before it: a resumed run has its own pace), and how long it has been since its
    last commit when that is far longer than its shards take (the pace is then history)."""
    try:
        began = os.path.getmtime(outdir.store.full(Outdir.LOCK))  # written as the lock is taken
    except OSError:
        return {}
    times = sorted(t for t in (os.path.getmtime(outdir.shard_file(k)) for k in committed) if t >= began)
    out, per = {}, None
    if len(times) >= 2 and times[-1] > times[0]:
        per = (times[-1] - times[0]) / (len(times) - 1)
        left = sum(sizes[k] for k in set(sizes) - committed)
        out["images_per_s"] = sum(sizes.values()) / len(sizes) / per
        out["eta_s"] = left / out["images_per_s"]
    since = time.time() - max([began, *times[-1:]])
    if since > (max(60.0, 5 * per) if per else 1800.0):
        out["stalled_s"] = since
    return out


def _changed_under(outdir: Outdir, spec: dict, committed: set[int]) -> list[str]:
    """The job's committed shards that its manifest now holds otherwise (scan --fresh into it).
    A manifest not written since job.json was (the run took it as it is) is not read again: a
    monitor polling a million-row job paid a second a call."""
    known = spec.get("shard_digests") or {}
    if not known:
        return []
    if outdir.store.local and not is_url(spec["manifest"]):
        with contextlib.suppress(OSError):
            if os.path.getmtime(spec["manifest"]) <= os.path.getmtime(outdir.store.full(Outdir.JOB)):
                return []
    now = shard_digests(spec["manifest"])
    return sorted((k for k, d in known.items() if int(k) in committed and now.get(k) != d), key=int)


def made_anew(outdir: str | os.PathLike) -> str | None:
    """What is said of a job whose manifest was made anew under it (scan --fresh), which a run
    refuses: its shards' results and outputs are of images the manifest no longer lists there,
    so nothing measured against it (pending, extra, stray) is to be mended; None otherwise."""
    from pipeline.client.state import made_anew_said

    od = Outdir(outdir)
    spec = od.read_job()["spec"]
    changed = _changed_under(od, spec, {n for n in od.results_files().values() if n is not None})
    return made_anew_said(str(outdir), spec["manifest"], changed, spec.get("shard_digests") or {}) if changed else None


def status(outdir: str | os.PathLike, check_manifest: bool = False, manifest_gone_ok: bool = False) -> dict:
    """From job.json and the results alone; never opens images. check_manifest: also whether
    the manifest still holds the job's committed shards as they were (manifest_changed: made
    anew in its place, which a run refuses); it reads the whole manifest. manifest_gone_ok: a
    manifest not where job.json says (moved with its scans) leaves what the results say
    (`manifest_missing` says why; the job's size and what is pending are None)."""
    outdir = Outdir(outdir)
    spec = (job := outdir.read_job())["spec"]
    sizes, missing = _sizes(spec["manifest"], manifest_gone_ok)
    damaged: list[int] = []
    counts = _counts(outdir, None if missing else spec["manifest"], damaged, None if missing else set(sizes))
    files = outdir.results_files()
    shards = {n for n in files.values() if n is not None}
    job_shards = shards if missing else set(sizes)  # unknown: every results file's
    committed = (shards & job_shards) - set(damaged)
    s = {"shards": None if missing else len(sizes), "committed": len(committed), "damaged": sorted(damaged),
         "extra": sorted(f.rsplit("/", 1)[-1] for f, n in files.items() if n is None or n not in job_shards),
         "pending": None if missing else len(set(sizes) - shards),
         "images": None if missing else sum(sizes.values()),  # what a run does
         **{s: counts.get(s, 0) for s in results.STATUSES}, "gone": None if missing else counts["gone"]}
    s["grown"] = never_started(spec, set(sizes) - shards)  # new scans, no run begun on them
    # committed on record, its results file gone since (deleted, moved): no interruption
    s["lost"] = sorted(n for n in ledger.recorded(outdir) if n in job_shards and n not in shards)
    s["running"] = outdir.lock_holder()
    s["stopped"] = None if s["running"] else last_stop(outdir)
    s["redo_pending"] = sum(len(ids) for ids in redo.load(outdir)["pending"].values())
    # every shard with results, in the manifest now or not (one sharded otherwise has fewer)
    s["manifest_changed"] = (_changed_under(outdir, spec, shards - set(damaged))
                             if check_manifest and not missing else [])
    s["manifest_missing"] = missing
    s["manifest"] = spec["manifest"]  # which one: a copied OUTDIR still reads its first owner's
    s["job_altered"] = job_altered(job)  # a run refuses it: said first
    # another colorize's job: not resumed here (of a finished one, no advice to start over)
    s["other_version"] = other_version(str(outdir), spec,
                                       finished=not (missing or s["pending"] or s["redo_pending"]))
    if s["running"] and outdir.store.local and not missing:
        s.update(_pace(outdir, sizes, committed))
    return s


def _sizes(manifest: str, gone_ok: bool) -> tuple[dict[int, int], str | None]:
    """The manifest's images per shard, or (gone_ok) none and why, where it is not there."""
    try:
        return shard_sizes(manifest), None
    except ScanError as e:
        if not gone_ok or "manifest not found" not in str(e):
            raise
        return {}, str(e)
