"""The job's identity: the fingerprint of what decides the output bytes, job.json's check on a
rerun (the same job, a grown one, or a refusal saying what changed), and the checkpoint's
identity (no torch). OUTDIR's layout is outdir.py's."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from glob import escape as glob_escape
from pathlib import Path

from pipeline.client.jobspec import (
    FINGERPRINT_KEYS,  # what changes output bytes: changing any makes a new job
)
from pipeline.client.outdir import Outdir, output_stems, run_hint
from pipeline.errors import CheckpointError, JobError, plural
from pipeline.worker.writers import widens

# bump when outputs change for the same checkpoint (2: colour by table, own PNG; 3: reflect-padded
# net input, chroma gain; 4: XMP with the catalogue's record; 5: the source's XMP and PNG texts
# kept, EXIF text as written, no invented dpi; 6: read through the scan's ICC profile; 7: an
# IPTC-IIM block's record in the XMP, EXIF's pixel size the upright picture's, PNG texts in the XMP
# and an iTXt's language kept; 8: an IIM date with its time of day, a device-decoded JPEG's EXIF
# pixel size corrected, no PNG text in an XMP over its limit, a JPEG's source XMP too large for
# its segment carried in part, the record last)
OUTPUT_VERSION = 8
DEFAULT_CHECKPOINT = Path(__file__).parents[1] / "weights" / "colorizer.pt"
# The hint-conditioned variant (jobs/train-hints.toml): colours the images a curator gave hints.
# Without it, hints are propagated over the automatic net's colour alone.
HINT_CHECKPOINT = DEFAULT_CHECKPOINT.with_name("hints.pt")
# The hint head (worker/hinthead.py): a better guess of the colour from hints, over the shipped net's features; used only
# under the net it was trained on.
HINT_HEAD = DEFAULT_CHECKPOINT.with_name("hint_head.pt")


# Checkpoint identity lives here, not in model.py, so that the client of a run (which plans,
# fingerprints and watches, but never runs the net) needs no torch: ~1 GB and ~2 s less.
def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    p = Path(path) if path else DEFAULT_CHECKPOINT
    if not p.is_file():
        if path is None:
            raise CheckpointError(f"no shipped weights at {p}; pass --checkpoint")
        raise CheckpointError(f"checkpoint not found: {p}")
    if not _torch_archive(p):  # before a job is planned on it: a CSV given by mistake, junk
        raise CheckpointError(f"{p} is not a checkpoint (a .pt file that torch.save wrote)")
    return p


def job_checkpoint(spec: dict) -> str | None:
    """The job's checkpoint as this machine has it: where job.json says, or, where that file is
    gone (the shipped weights of an install since removed: a new checkout, another venv), these
    shipped weights when they are the same file. An upgrade trial's job could not run again
    without a flag nothing named."""
    p = spec.get("checkpoint")
    if (p and not os.path.isfile(p) and spec.get("checkpoint_sha256") and DEFAULT_CHECKPOINT.is_file()
            and file_sha256(DEFAULT_CHECKPOINT) == spec["checkpoint_sha256"]):
        return str(DEFAULT_CHECKPOINT)
    if p and not os.path.isfile(p):
        sha = f"; sha256 {spec['checkpoint_sha256'][:16]}..." if spec.get("checkpoint_sha256") else ""
        raise CheckpointError(f"the job's checkpoint {p} is not there (moved, or its install removed{sha}): "
                              "give the same weights with --checkpoint PATH")
    return p


def _torch_archive(p: Path) -> bool:
    """torch.save's format, a zip with a pickle inside, told without loading torch."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            return any(n.endswith("/data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()



def fingerprint(spec: dict) -> str:
    ident = {k: spec.get(k) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


_SEALED = ("fingerprint", "created", "started", "tool")  # what nothing rewrites in a job.json


def job_seal(job: dict) -> str:
    """A digest of what job.json says of the job once and for all: its fingerprint (the options
    that decide every byte), when and by what it was made."""
    return hashlib.sha256(json.dumps({k: job.get(k) for k in _SEALED}, sort_keys=True)
                          .encode()).hexdigest()[:32]


def job_altered(job: dict) -> str | None:
    """Why a job.json does not read as the run wrote it (edited by hand), or None. Not proof
    against a forger, who can compute digests too: evidence of an edit, as audit's are."""
    if fingerprint(job.get("spec") or {}) != job.get("fingerprint"):
        return "its options no longer match its fingerprint"
    if "seal" in job and job_seal(job) != job["seal"]:  # a job.json from before seals: unchecked
        return "its date, tool or fingerprint is not what the run wrote"
    return None


def restart_plan(outdir: Outdir, new_manifest: str | None = None) -> dict[str, list[str]]:
    """What --restart does with each file under images/ (discard's rules; a dry run's count):
    {"remove": outputs as written that a result row claims, "quarantine": altered since, ours
    that no row claims, or where the new job writes, "leave": the rest}."""
    st = outdir.store
    claimed: dict[str, str] = {}
    for shard in sorted(outdir.committed_shards()):
        try:
            t = outdir.read_shard(shard).select(["output_path", "output_sha256"]).to_pydict()
        except Exception:  # noqa: BLE001 - a damaged shard claims nothing: its files are kept aside
            continue
        claimed.update((p, s) for p, s in zip(t["output_path"], t["output_sha256"], strict=True) if p)
    taken = _stems(new_manifest)  # where the new job writes
    # where the old job wrote (a first run with --restart has none)
    old = _stems(outdir.read_job().get("spec", {}).get("manifest")) if outdir.has_job() else set()
    plan: dict[str, list[str]] = {"remove": [], "quarantine": [], "leave": []}
    for rel in outdir.outputs():
        if rel in claimed and st.sha256(rel) == claimed[rel]:
            plan["remove"].append(rel)
        elif (rel in claimed or os.path.splitext(rel)[0] in taken
              or (os.path.splitext(rel)[0] in old and outdir.wrote(rel))):
            plan["quarantine"].append(rel)
        else:
            plan["leave"].append(rel)
    return plan


def discard(outdir: Outdir, new_manifest: str | None = None) -> tuple[int, int, int]:
    """--restart: what this tool wrote goes (results, reports, previews, and each output a result
    row claims, as written). Nothing else is deleted: an output altered since (a retouch saved
    over it), a file with our provenance at an old output's name that no row claims (a killed
    run's, or a curator's save-as), and any file where the new job will write are moved to
    quarantine/; every other file stays where it is. Returns (outputs removed, files left, files
    moved)."""
    st = outdir.store
    plan = restart_plan(outdir, new_manifest)
    for rel in plan["remove"]:
        st.remove(rel)
    for rel in plan["quarantine"]:
        outdir.quarantine(rel)
    emptied = {os.path.dirname(rel) for rel in plan["remove"]}
    removed, left, moved = len(plan["remove"]), len(plan["leave"]), len(plan["quarantine"])
    st.remove_empty_dirs(sorted(emptied, key=len, reverse=True), stop=Outdir.IMAGES)
    # automatic/: the old job's automatic outputs that hinted ones replaced; kept, they would be
    # taken for the new job's (a hinted redo keeps the first copy only)
    for sub in (Outdir.RESULTS, Outdir.PREVIEWS, Outdir.AUTOMATIC):
        st.rmtree(sub)
    from pipeline.client.ledger import LEDGER

    for f in (Outdir.AUDIT_JSON, Outdir.AUDIT_HTML, Outdir.AUDIT_SKIPPED, Outdir.AUDIT_ERRORS,
              Outdir.AUDIT_OUTDATED, Outdir.REDO, LEDGER, *st.glob("audit-sheet-*.html")):
        st.remove(f)
    return removed, left, moved


def _stems(manifest: str | None) -> set[str]:
    """images/<stem> of every row of a manifest: where its job writes (empty if unreadable)."""
    from pipeline.client.manifest import read_manifest

    try:
        t = read_manifest(manifest, columns=["out_stem"]) if manifest else None
    except Exception:  # noqa: BLE001 - the run itself will say what is wrong with it
        return set()
    return output_stems(t.column("out_stem").to_pylist()) if t is not None else set()


def check_or_write_job(outdir: Outdir, spec: dict, restart: bool, log=print) -> str:
    """Write job.json for a new OUTDIR; for an existing one, refuse a different job."""
    fp = fingerprint(spec)
    created = job_date()  # before anything is written or removed: its value may be a mistake
    if outdir.has_job() and not restart:
        old = outdir.read_job()
        if why := job_altered(old):
            raise JobError(f"{outdir.store.full(Outdir.JOB)} was edited: {why}; undo the edit (from "
                           "a backup of OUTDIR, where there is one: colorize keeps none), or start "
                           "over with --restart")
        if old.get("fingerprint") != fp:
            if not grown(outdir, old.get("spec", {}), spec):
                raise JobError(refusal(outdir, old.get("spec", {}), spec))
            was = old.get("spec", {})
            if was.get("metadata_columns") != spec.get("metadata_columns"):  # widened: what it
                # was, for the audit to find the outputs written before that lack what it reads now
                spec = {**spec, "metadata_columns_before": [*was.get("metadata_columns_before", []),
                                                            was.get("metadata_columns") or "none"]}
            old.update(fingerprint=fp, spec=spec)  # the same job, with more scans
            old["seal"] = job_seal(old)
            outdir.write_job(old)
        elif moved := {k: spec.get(k) for k in ("manifest", "checkpoint") if old.get("spec", {}).get(k) != spec.get(k)}:
            # the same manifest (its digest), moved with its scans; the same weights (theirs),
            # elsewhere: the job now finds them there
            for k, now in moved.items():
                log(f"the job's {k} is now {now} (was {old.get('spec', {}).get(k)}; "
                    f"{'the same rows' if k == 'manifest' else 'the same weights'})")
            old["spec"] = {**old.get("spec", {}), **moved}
            outdir.write_job(old)
        return fp
    if restart:
        from pipeline.client.reviews import state_of

        if hinted := sum(1 for v in state_of(outdir).values() if v.get("hints")):
            log(f"--restart: {plural(hinted, 'image')} {'has' if hinted == 1 else 'have'} a curator's "
                "hints (kept in reviews/): this run colours them as the job does; colour them "
                f"with their hints again after it: {run_hint(outdir.url, '--hinted')}")
        removed, left, moved = discard(outdir, spec.get("manifest"))
        if removed:  # said: a trial's restart deleted 36 outputs without a count
            log(f"--restart: removed the earlier job's {plural(removed, 'output')} as it wrote "
                f"{'it' if removed == 1 else 'them'}, its results, reports and commits.jsonl")
        if left or moved:
            log(f"--restart: {plural(left, 'file')} in images/ that colorize did not write left "
                f"where {'it is' if left == 1 else 'they are'}; {plural(moved, 'file')} (outputs "
                f"altered since written, copies of ours, yours where the job writes) moved to "
                f"{Outdir.QUARANTINE}/")
    outdir.store.makedirs()
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    from pipeline import __version__

    # what made the job, and exactly when: an audit trail's first questions
    job = {"fingerprint": fp, "spec": spec, "created": created,
           "started": now.isoformat(timespec="seconds"), "tool": f"archive-colorizer {__version__}"}
    outdir.write_job({**job, "seal": job_seal(job)})
    return fp


def job_date() -> str:
    """The job's day, written into every output's provenance: fixed per job, so reruns and
    repairs write identical bytes. SOURCE_DATE_EPOCH (the reproducible-builds convention) fixes
    it across jobs too: two jobs of one archive started either side of midnight then write the
    same bytes, which is how a rerun is checked against the first."""
    import datetime as dt

    if (epoch := os.environ.get("SOURCE_DATE_EPOCH")) is None:
        return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    try:
        return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).strftime("%Y-%m-%d")
    except (ValueError, OverflowError, OSError):
        raise JobError(f"SOURCE_DATE_EPOCH={epoch!r} is not a time in seconds since 1970 "
                       "(date +%s gives one); unset it for today's date") from None


def grown(store, old: dict, new: dict) -> bool:
    """True when only the manifest changed and every shard of the old one is in the new one
    unchanged: new scans in new shards. Raises JobError naming the shards whose rows changed
    (a source moved, renamed or removed) when that is all that stands in the way."""
    if any(old.get(k) != new.get(k) for k in FINGERPRINT_KEYS if k not in ("manifest_digest", "metadata_columns")):
        return False
    # a new delivery's catalogue names a field its own way: read from it too, as before elsewhere
    if old.get("metadata_columns") != new.get("metadata_columns") and not widens(
            old.get("metadata_columns") or "none", new.get("metadata_columns") or "none"):
        return False
    before, after = old.get("shard_digests"), new.get("shard_digests")
    if not before or not after:
        return False
    changed = sorted((s for s in before if after.get(s) != before[s]), key=int)
    if changed:
        raise JobError(_made_anew(store, old, new, changed) or _why_shards_changed(store, old, new) or (
            f"{store}: the new manifest changes shards the job already has "
            f"({', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}): sources "
            "were moved, renamed or removed. Extend the old manifest instead "
            "(colorize scan ... --extend OLD.parquet), or --restart to start over"))
    return True


def made_anew_said(store, manifest: str, changed: list[str], known: dict[str, str]) -> str:
    """The job's own manifest, made anew in its place (scan --fresh): the images in other
    shards. Its way back: the copy --fresh kept beside it (cli._kept_before_fresh) that holds
    the job's shards as they were (known: the job's shard digests), not merely the newest."""
    from pipeline.client.manifest import shard_digests

    p = Path(str(manifest))
    kept = sorted(p.parent.glob(f"{glob_escape(p.stem)}.before-fresh-*{p.suffix}"), reverse=True) \
        if "://" not in str(manifest) else []

    def the_jobs(k: Path) -> bool:
        try:
            now = shard_digests(k)
        except Exception:  # noqa: BLE001 - not a manifest that reads: not the job's
            return False
        return all(now.get(x) == known.get(x) for x in changed)

    found = next((k for k in kept if the_jobs(k)), None)
    back = (f"the one the job ran on was kept as {found}: put it back (mv {shlex.quote(str(found))} "
            f"{shlex.quote(str(p))}), then add new scans with colorize scan ... -o "
            f"{shlex.quote(str(p))}, which extends it" if found else
            "a rescan without --fresh extends a manifest and keeps its shards; without the one the job "
            "ran on" + (f" (none of the {len(kept)} kept beside it by --fresh is)" if kept else "")
            + ", go on with a new OUTDIR, or --restart to colour every image again")
    return (f"{store}: its manifest {manifest} was made anew since the job ran (scan --fresh, or "
            f"another manifest written there), and the job's shards "
            f"({', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}) hold other images "
            f"in it now; {back}")


def _made_anew(store, old: dict, new: dict, changed: list[str]) -> str | None:
    if str(old.get("manifest")) != str(new.get("manifest")):
        return None
    return made_anew_said(store, new["manifest"], changed, old.get("shard_digests") or {})


def _why_shards_changed(store, old: dict, new: dict) -> str | None:
    """Where the job's manifest can still be read, the likelier mistakes than moved sources: a
    manifest of other images (another archive, run into this OUTDIR), or the job's images
    sharded otherwise (scanned again with another --shard-size). Their way out is never
    --restart, which would discard this job's results."""
    from pipeline.client.manifest import read_manifest

    try:
        was, now = (read_manifest(s["manifest"], columns=["image_id", "shard", "rel_path"]) for s in (old, new))
    except Exception:  # noqa: BLE001 - the job's manifest moved or is gone: the shards are all there is
        return None
    a = dict(zip(*(was.column(c).to_pylist() for c in ("image_id", "shard")), strict=True))
    b = dict(zip(*(now.column(c).to_pylist() for c in ("image_id", "shard")), strict=True))
    mine = f"{store} holds the job of {old['manifest']} ({plural(len(a), 'image')})"
    if not a.keys() & b.keys():
        # an image's id is its path: the same files at another place (a moved archive scanned
        # anew, without --relative) share none; they are told apart by their place in the archive
        same = set(was.column("rel_path").to_pylist()) & set(now.column("rel_path").to_pylist())
        if 2 * len(same) >= len(a):
            return (f"{mine}; {new['manifest']} lists {len(same)} of them by their place in the "
                    "archive, but at another path: a moved archive scanned anew is a new job (an "
                    "image's id is its path), so give it an OUTDIR of its own; this job's outputs "
                    f"stay as they are (to go on with it where it was: {run_hint(store)})")
        return (f"{mine}; {new['manifest']} lists none of them: give it an OUTDIR of its own "
                f"(to go on with this job: {run_hint(store)})")
    sizes = [(t.schema.metadata or {}).get(b"shard_size", b"?").decode() for t in (was, now)]
    if a.keys() <= b.keys() and sizes[0] != sizes[1]:  # (the same size: new scans sorted among the old)
        return (f"{mine}; {new['manifest']} lists them in other shards (--shard-size {sizes[1]}; "
                f"the job's: {sizes[0]}), and a job keeps its shards: go on with it as it was "
                f"({run_hint(store)}), add new scans with colorize scan ... --extend "
                f"{shlex.quote(str(old['manifest']))}, or give the new manifest an OUTDIR of its own")
    return None


def other_version(outdir, spec: dict, finished: bool = False) -> str | None:
    """A job another colorize began (its outputs of another output version): this one does not
    go on with it, nor redo in it (its outputs would not be the job's bytes). Said instead of a
    resume hint that is refused when pasted (an upgrade trial); of a finished job, without the
    way to start over (its night's outputs are not to be discarded on a note's advice)."""
    v = spec.get("output_version")
    if v is None or v == OUTPUT_VERSION:
        return None
    who = (f"this job was begun by {'an older' if v < OUTPUT_VERSION else 'a newer'} colorize "
           f"(output version {v}; this one writes output version {OUTPUT_VERSION}, other bytes)")
    if finished:
        return (f"{who}: a redo or a --hinted run in it needs that colorize (`colorize --version` "
                "says an install's output version)")
    return (f"{who}, which alone goes on with it, or redoes images in it (`colorize --version` says "
            f"an install's output version); or colour it anew with this one: {run_hint(outdir, '--restart')}")


def refusal(store, old: dict, new: dict) -> str:
    """Why a rerun is refused: each changed key as old -> new, the flags that continue the job
    as it was, and only then the way out that discards it."""
    if other := other_version(store, old):  # no flag of this version continues it
        return f"{store} holds a job this colorize cannot continue: {other}"
    changed, keep, drop = [], [], []
    for k in FINGERPRINT_KEYS:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "manifest_digest":
            changed.append("the manifest's contents")
            keep.append(f"--manifest {shlex.quote(str(old.get('manifest')))} (as it was)")
        elif k == "checkpoint_sha256":
            changed.append(f"checkpoint {str(a)[:12]} -> {str(b)[:12]}")
            try:  # where the job's weights are now (the shipped ones, its install gone)
                where = job_checkpoint(old)
            except CheckpointError:
                where = old.get("checkpoint")
            keep.append(f"--checkpoint {shlex.quote(str(where))}")
        else:
            changed.append(f"{k} {a} -> {b}")
            flag = "--" + k.replace("_", "-")
            # quoted as a shell reads it: "identifier=Accession No" pasted bare split in two
            (drop if isinstance(a, bool) and not a else keep).append(
                flag if isinstance(a, bool) else f"{flag} {shlex.quote(str(a))}")
    how = " and ".join(([f"add {' '.join(keep)}"] if keep else []) + ([f"leave out {' '.join(drop)}"] if drop else []))
    how = f"; to continue it, {how}" if how else ""
    if "--recolor" in drop:  # what a user adding it to a finished job meant: its colour images' redo
        how += (f" (the images this job skipped as colour are coloured by "
                f"{run_hint(store, '--redo', str(store).rstrip('/') + '/audit-skipped.txt', '--recolor')}"
                ", after colorize audit lists them)")
    return (f"{store} holds a different job (changed: {', '.join(changed) or 'fingerprint'}){how}; "
            "or use another OUTDIR, or --restart to discard its results and start over")


def never_started(spec: dict, pending) -> bool:
    """Whether every pending shard is one no run of the job has begun: the manifest grew (scan
    --extend) since the last run, which is this morning's normal, not an interruption."""
    known = spec.get("shard_digests")
    return bool(pending) and known is not None and all(str(k) not in known for k in pending)
