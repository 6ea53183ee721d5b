"""OUTDIR layout and the job's identity: job.json, fingerprint, lock, safe output paths."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path, PurePosixPath

from .errors import CheckpointError, JobError
from .jobspec import FINGERPRINT_KEYS  # what changes output bytes: changing any makes a new job
from .storage import ObjectLock, Store, as_store

JOB_FILE = "job.json"
LOCK_FILE = ".lock"
OUTPUT_VERSION = 4  # bump when outputs change for the same checkpoint (2: colour by table, own PNG; 3: reflect-padded net input, chroma gain; 4: XMP with the catalogue's record)
DEFAULT_CHECKPOINT = Path(__file__).with_name("weights") / "colorizer.pt"


# Checkpoint identity lives here, not in model.py, so that the client of a run (which plans,
# fingerprints and watches, but never runs the net) needs no torch: ~1 GB and ~2 s less.
def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    p = Path(path) if path else DEFAULT_CHECKPOINT
    if not p.is_file():
        if path is None:
            raise CheckpointError(f"no shipped weights at {p}; pass --checkpoint")
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()



def fingerprint(spec: dict) -> str:
    ident = {k: spec.get(k) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def check_or_write_job(store: Store, spec: dict, restart: bool) -> str:
    """Write job.json for a new OUTDIR; for an existing one, refuse a different job."""
    fp = fingerprint(spec)
    if store.exists(JOB_FILE) and not restart:
        old = json.loads(store.read_text(JOB_FILE))
        if old.get("fingerprint") != fp:
            if not grown(store, old.get("spec", {}), spec):
                raise JobError(refusal(store, old.get("spec", {}), spec))
            old.update(fingerprint=fp, spec=spec)  # the same job, with more scans
            store.write_atomic(JOB_FILE, json.dumps(old, indent=2, sort_keys=True).encode())
        return fp
    if restart:
        for sub in ("results", "images"):
            store.rmtree(sub)
        for f in ("audit.json", "audit.html", *store.glob("audit-sheet-*.html")):
            store.remove(f)
        store.rmtree("audit-previews")
    store.makedirs()
    import datetime as dt

    # The job's date goes into every output's provenance: fixed per job, so reruns and repairs
    # still write identical bytes.
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    store.write_atomic(JOB_FILE, json.dumps({"fingerprint": fp, "spec": spec, "created": created},
                                            indent=2, sort_keys=True).encode())
    return fp


def grown(store, old: dict, new: dict) -> bool:
    """True when only the manifest changed and every shard of the old one is in the new one
    unchanged: new scans in new shards. Raises JobError naming the shards whose rows changed
    (a source moved, renamed or removed) when that is all that stands in the way."""
    if any(old.get(k) != new.get(k) for k in FINGERPRINT_KEYS if k != "manifest_digest"):
        return False
    before, after = old.get("shard_digests"), new.get("shard_digests")
    if not before or not after:
        return False
    changed = sorted((s for s in before if after.get(s) != before[s]), key=int)
    if changed:
        raise JobError(f"{store}: the new manifest changes shards the job already has "
                       f"({', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}): sources "
                       "were moved, renamed or removed. Extend the old manifest instead "
                       "(colorize scan ... --extend OLD.parquet), or --restart to start over")
    return True


def refusal(store, old: dict, new: dict) -> str:
    """Why a rerun is refused: each changed key as old -> new, the flags that continue the job
    as it was, and only then the way out that discards it."""
    changed, keep = [], []
    for k in FINGERPRINT_KEYS:
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "manifest_digest":
            changed.append("the manifest's contents")
            keep.append(f"--manifest {old.get('manifest')} (as it was)")
        elif k == "checkpoint_sha256":
            changed.append(f"checkpoint {str(a)[:12]} -> {str(b)[:12]}")
            keep.append(f"--checkpoint {old.get('checkpoint')}")
        elif k == "output_version":
            changed.append(f"output version {a} -> {b} (this version of colorize writes other bytes)")
        else:
            changed.append(f"{k} {a} -> {b}")
            flag = "--" + k.replace("_", "-")
            keep.append((flag if a else f"no {flag}") if isinstance(a, bool) else f"{flag} {a}")
    how = f"; to continue it, add {' '.join(keep)}" if keep else ""
    return (f"{store} holds a different job (changed: {', '.join(changed) or 'fingerprint'}){how}; "
            "or use another OUTDIR, or --restart to discard its results and start over")


# What the tool itself writes at an OUTDIR's top level before job.json exists (the lock, the
# folders a write check makes): a folder holding only these is still new.
FRESH = (LOCK_FILE, "images/", "results/")
MARK = b"archive-colorizer"  # in every output's own metadata (provenance), near its start


def check_outdir_ours(outdir: str | os.PathLike | Store) -> None:
    """An OUTDIR is new, empty, or one of ours (it has job.json): a folder of the user's is
    refused, saying what is in it, before anything is written there."""
    store = as_store(outdir)
    if store.exists(JOB_FILE) or not store.exists(""):
        return
    if store.local and not Path(store.root).is_dir():
        return  # not a folder: the write check names that
    theirs = store.foreign(FRESH)
    if theirs:
        shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise JobError(f"{store} is not a colorize output folder (no {JOB_FILE}) and is not "
                       f"empty: it holds {shown}. Name a new or empty folder for the outputs")


def written_by_us(store: Store, rel: str, head: int = 1 << 20) -> bool:
    """Whether a file carries this tool's provenance in its metadata: the proof --repair needs
    before it moves anything (a user's note in images/ is theirs, and stays)."""
    try:
        with store.open(rel) as f:
            return MARK in f.read(head)
    except OSError:
        return False


def read_job(outdir: str | os.PathLike | Store) -> dict:
    store = as_store(outdir)
    if not store.exists(JOB_FILE):
        raise JobError(f"{store} is not a run's output folder (no {JOB_FILE})")
    return json.loads(store.read_text(JOB_FILE))


def lock_holder(outdir) -> str | None:
    """Who holds OUTDIR's run lock (a local OUTDIR), or None: asked without taking it for long."""
    store = as_store(outdir)
    if not store.local or not store.exists(LOCK_FILE):
        return None
    fd = os.open(store.full(LOCK_FILE), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "pid unknown"
    finally:
        os.close(fd)


class RunLock:
    """One run per OUTDIR. Locally flock on OUTDIR/.lock: the kernel drops it when the holder
    dies, even by SIGKILL. On an object store, a lock object with a heartbeat."""

    def __init__(self, outdir: str | os.PathLike | Store):
        self.store = as_store(outdir)
        self.fd: int | None = None
        self.obj: ObjectLock | None = None

    def __enter__(self) -> RunLock:
        self.store.makedirs()
        if not self.store.local:
            self.obj = ObjectLock(self.store, LOCK_FILE)
            holder = self.obj.acquire()
            if holder:
                raise JobError(f"another run is using {self.store} ({holder}); wait for it to finish")
            return self
        path = Path(self.store.full(LOCK_FILE))
        while True:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
                os.close(self.fd)
                raise JobError(f"another run is using {self.store} ({holder or 'pid unknown'}); "
                               "wait for it to finish") from None
            # The holder before us removes the file as it lets go (a finished OUTDIR keeps no
            # stale lock): a lock on a file no longer at the path guards nothing, so try again.
            try:
                if os.stat(path).st_ino == os.fstat(self.fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(self.fd)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.obj is not None:
            self.obj.release()
        if self.fd is not None:
            Path(self.store.full(LOCK_FILE)).unlink(missing_ok=True)  # while still holding it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def safe_output_path(out_stem: str, ext: str) -> str:
    """images/<stem><ext>, relative to OUTDIR; refuses anything that could leave OUTDIR."""
    if not out_stem or "\x00" in out_stem or "\\" in out_stem:
        raise ValueError(f"unsafe output path {out_stem!r}")
    p = PurePosixPath(out_stem)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or out_stem.startswith("~"):
        raise ValueError(f"unsafe output path {out_stem!r}: it would leave OUTDIR")
    return str(PurePosixPath("images") / (out_stem + ext))


def remove_temporaries(store: Store) -> int:
    """Left by a killed run (local disks only: object stores have no half-written objects);
    safe to delete while we hold the lock."""
    if not store.local:
        return 0
    n = 0
    for sub in ("images", "results"):
        d = Path(store.full(sub))
        if d.is_dir():
            for p in d.rglob(".*.tmp-*"):
                p.unlink(missing_ok=True)
                n += 1
    return n
