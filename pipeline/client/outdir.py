"""OUTDIR, one type: every path a run writes (job.json, results/, images/, the lock, redo.json,
quarantine/, the audit's report, sheets and previews), the shard commit and reading it back,
the run lock, and the audit's problem kinds. No other module spells a path inside OUTDIR."""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shlex
from enum import Enum
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.client.results import SCHEMA
from pipeline.errors import Busy, JobError
from pipeline.storage import ObjectLock, Store, as_store, readable_by_all

MARK = b"archive-colorizer"  # in every output's own metadata (provenance), near its start


def carries_mark(f, head: int = 1 << 20, also: bytes = b"") -> bool:
    """Whether an open file carries this tool's provenance (and `also`) near its start."""
    data = f.read(head)
    return MARK in data and also in data


class Problem(str, Enum):
    """What an audit can find wrong (its JSON and messages carry the value)."""

    NO_RESULT = "no_result"  # a manifest row without a result row
    DUPLICATE_RESULT = "duplicate_result"
    NOT_IN_MANIFEST = "not_in_manifest"  # a result row for no manifest row
    ERROR_WITHOUT_REASON = "error_without_reason"
    BAD_STATUS = "bad_status"
    MISSING_OUTPUT = "missing_output"  # an ok row's file is not there
    CORRUPT_OUTPUT = "corrupt_output"  # ... or not as written (sha256 or size)
    STRAY_OUTPUT = "stray_output"  # an output of ours that no row claims
    REDO_NOT_RECORDED = "redo_not_recorded"  # a redone image whose row does not say so
    INPUT_MISSING = "input_missing"  # --check-inputs: the original is gone
    INPUT_CHANGED = "input_changed"  # ... or changed since it was colorized
    INPUT_UNREADABLE = "input_unreadable"  # ... or cannot be read (permissions, an I/O error)
    HINTS_MISMATCH = "hints_mismatch"  # a hinted output not made from the hints its redo recorded
    DAMAGED_RESULT = "damaged_result"  # a shard's results file that does not read as Parquet
    EXTRA_RESULT = "extra_result"  # a results file for a shard the manifest does not have
    JOB_ALTERED = "job_altered"  # job.json edited since the run wrote it (state.job_altered)
    MISSING_RESULT = "missing_result"  # a shard committed on record whose results file is gone
    ALTERED_RESULT = "altered_result"  # ... or is not the file committed (ledger.py)

    def __str__(self) -> str:
        return self.value


def _job(store: Store, rel: str) -> dict:
    """job.json as the run wrote it; emptied or cut short (a copy to a full disk), said."""
    data = store.read_bytes(rel)
    try:
        job = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        job = None
    if not isinstance(job, dict) or not isinstance(job.get("spec"), dict):
        what = "empty" if not data.strip() else "cut short or not what a run writes"
        raise JobError(f"{store.full(rel)} is damaged ({what}): it records the job every other "
                       "file here belongs to; put back the one the run wrote (a backup, or the "
                       "folder this one was copied from), or start the job anew in another OUTDIR")
    return job


def _not_an_outdir(store: Store) -> JobError:
    """What a folder named as a run's OUTDIR is instead."""
    if store.local and not Path(store.root).exists():
        return JobError(f"{store} not found: name a run's output folder (its -o OUTDIR)")
    if store.local and Path(store.root).is_file():
        what = "a manifest" if str(store.root).endswith(".parquet") else "a file"
        return JobError(f"{store} is {what}; name the run's output folder (its -o OUTDIR)")
    if store.local:  # a colleague's folder made under umask 077: it is a job, not readable
        job = Path(store.root) / Outdir.JOB
        try:
            job.stat()
        except PermissionError:
            return JobError(f"{store}: permission denied reading it (its owner's umask?); ask "
                            "for read access to the folder (the group's, on a share)")
        except OSError:
            pass
        else:
            if not os.access(job, os.R_OK):
                return JobError(f"{job}: permission denied reading it; ask for read access")
    return JobError(f"{store} is not a run's output folder (no {Outdir.JOB})")


class DamagedResults(JobError):
    """A committed results file that does not read as Parquet."""


_SHARD_FILE = re.compile(r"shard-(\d+)\.parquet")


def _shard_of(path: str) -> int | None:
    """A results file's shard, or None for a name a run never writes ('shard-00000 - Copy',
    'shard-00000 (1)': a copy a file manager made), which holds no commit."""
    name = path.rsplit("/", 1)[-1]
    m = _SHARD_FILE.fullmatch(name)
    # exactly the name a run writes: 'shard-0.parquet' beside 'shard-00000.parquet' is a copy
    return int(m.group(1)) if m and name == f"shard-{int(m.group(1)):05d}.parquet" else None


class Outdir:
    """A run's output folder (a local path or an object-store URL)."""

    JOB = "job.json"
    LOCK = ".lock"
    RESULTS = "results"
    IMAGES = "images"
    REDO = "redo.json"
    QUARANTINE = "quarantine"  # outputs --repair moved aside (ours, altered or unclaimed)
    AUDIT_JSON, AUDIT_HTML = "audit.json", "audit.html"
    # --redo lists, a source a line: skipped; errors (once mended); XMP older than the manifest
    AUDIT_SKIPPED, AUDIT_ERRORS, AUDIT_OUTDATED = "audit-skipped.txt", "audit-errors.txt", "audit-outdated.txt"
    PREVIEWS = "audit-previews"  # JPEG views of TIFF outputs: a browser shows no TIFF
    AUTOMATIC = "automatic"  # the automatic outputs a curator's hinted ones replaced (run --hinted)
    REVIEWS = "reviews"  # the curator's journal (client/reviews.py) and the review page's cache
    # What the tool writes at the top before job.json exists: a folder holding only these is new.
    FRESH = (LOCK,)  # what a new folder may hold: files in images/ with no job.json are not ours

    def __init__(self, where: str | os.PathLike | Store | Outdir):
        self.store = where.store if isinstance(where, Outdir) else as_store(where)

    def __str__(self) -> str:
        return str(self.store)

    @property
    def url(self) -> str:
        return self.store.url

    # --- the job ---------------------------------------------------------------------------

    def has_job(self) -> bool:
        return self.store.exists(self.JOB)

    def read_job(self) -> dict:
        if not self.has_job():
            raise _not_an_outdir(self.store)
        return _job(self.store, self.JOB)

    def write_job(self, job: dict) -> None:
        self.store.write_atomic(self.JOB, json.dumps(job, indent=2, sort_keys=True).encode())

    def check_ours(self) -> None:
        """New, empty, or one of ours (it has job.json): a folder of the user's is refused, saying
        what is in it, before anything is written there."""
        if self.has_job() or not self.store.exists(""):
            return
        if self.store.local and not Path(self.store.root).is_dir():
            return  # not a folder: the write check names that
        theirs = _users_files(self.store, self.FRESH, self.IMAGES)
        if theirs:
            shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
            raise JobError(f"{self.store} is not a colorize output folder (no {self.JOB}) and is not "
                           f"empty: it holds {shown}. Name a new or empty folder for the outputs")

    # --- results: the per-shard commit -------------------------------------------------------

    @classmethod
    def shard_rel(cls, shard: int) -> str:
        return f"{cls.RESULTS}/shard-{shard:05d}.parquet"

    def shard_file(self, shard: int) -> str:
        return self.store.full(self.shard_rel(shard))

    def committed_shards(self) -> set[int]:
        return {n for n in self.results_files().values() if n is not None}

    def results_files(self) -> dict[str, int | None]:
        """results/'s Parquet files (relative paths) and the shard each commits (None: not a
        name a run writes)."""
        # shard-*: listed by prefix (an object store's listing of all results/ would be cached,
        # and a shard a worker commits later not seen); a copy ('shard-00000 (1)') matches too
        return {p: _shard_of(p) for p in self.store.glob(f"{self.RESULTS}/shard-*.parquet")}

    def write_shard(self, shard: int, rows: list[dict], carried: list | None = None) -> str:
        """The commit of a shard's result rows (with the manifest's `carried` catalogue fields):
        written last and whole (rename or single PUT). Done iff this file exists."""
        fields = list(SCHEMA) + [f for f in (carried or []) if f.name not in SCHEMA.names]
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), buf)
        self.store.write_atomic(self.shard_rel(shard), buf.getvalue())
        return hashlib.sha256(buf.getvalue()).hexdigest()  # for the ledger (ledger.py)

    def read_shard(self, shard: int) -> pa.Table:
        return pq.read_table(io.BytesIO(self.store.read_bytes(self.shard_rel(shard))))

    def read_results(self, columns: list[str] | None = None, damaged: list[int] | None = None,
                     shards: set[int] | None = None) -> pa.Table:
        """The committed rows (of `shards` only, if given). A results file that does not read
        (a disk's or a copy's damage) raises DamagedResults, saying how to mend it; or, given
        `damaged`, its shard goes there and the rest are read (what audit reports)."""
        return _read_results(self, columns, damaged, shards)

    # --- outputs -----------------------------------------------------------------------------

    @classmethod
    def output_rel(cls, out_stem: str, ext: str) -> str:
        """images/<stem><ext>, relative to OUTDIR; refuses anything that could leave OUTDIR."""
        if not out_stem or "\x00" in out_stem or "\\" in out_stem:
            raise ValueError(f"unsafe output path {out_stem!r}")
        p = PurePosixPath(out_stem)
        if p.is_absolute() or any(part in ("..", "") for part in p.parts) or out_stem.startswith("~"):
            raise ValueError(f"unsafe output path {out_stem!r}: it would leave OUTDIR")
        return str(PurePosixPath(cls.IMAGES) / (out_stem + ext))

    def outputs(self) -> list[str]:  # less a killed write's temporaries (temporaries(): the audit's)
        return [rel for rel in self.store.find(self.IMAGES) if not TEMPORARY.match(rel.rsplit("/", 1)[-1])]

    def wrote(self, rel: str, head: int = 1 << 20, also: bytes = b"") -> bool:
        """Whether a file carries this tool's provenance (and `also`, e.g. a hints digest) in its
        metadata: the proof --repair needs before it moves anything (a user's file stays)."""
        try:
            with self.store.open(rel) as f:
                return carries_mark(f, head, also)
        except OSError:
            return False

    def keep_automatic(self, rel: str) -> None:
        """Copies an output to automatic/ (once: the first, automatic one is what is kept)."""
        dest = automatic_of(rel)
        if not self.store.exists(dest) and self.store.exists(rel):
            self.store.write_atomic(dest, self.store.read_bytes(rel))

    def quarantine(self, rel: str) -> str:
        """Move one of our files aside (never deleted); returns where it went."""
        return self.store.move_aside(rel, self.QUARANTINE)

    def remove_temporaries(self) -> int:
        """Left by a killed run; safe to delete while we hold the lock."""
        return _remove_temporaries(self.store, (self.IMAGES, self.RESULTS))

    # --- the report --------------------------------------------------------------------------

    @staticmethod
    def sheet(page: int) -> str:
        return f"audit-sheet-{page:03d}.html"

    @classmethod
    def preview_rel(cls, rel: str) -> str:
        return f"{cls.PREVIEWS}/{rel}.jpg"

    # --- the lock ----------------------------------------------------------------------------

    def lock(self) -> RunLock:
        return RunLock(self)

    def lock_holder(self) -> str | None:
        """Who holds the run lock (a local OUTDIR), or None: asked without taking it for long."""
        return _lock_holder(self.store, self.LOCK)


def _users_files(store, ours: tuple[str, ...], images: str) -> list[str]:
    """What a folder with no job holds that is the user's work: not a Finder's or Explorer's own
    file in a folder just made, nor images/ as a link to a bigger disk made before the first run
    (as the README allows; a trial's was refused as a file), but what the folder it names holds."""
    theirs = [f for f in store.foreign(ours)
              if f.rsplit("/", 1)[-1].lower() not in (".ds_store", "thumbs.db", "desktop.ini")]
    linked = store.full(images) if store.local else ""
    if images not in theirs or not (os.path.islink(linked) and os.path.isdir(linked)):
        return theirs
    # a disk's own (a Mac's .Spotlight-V100 and .Trashes, Windows' $RECYCLE.BIN) are not the user's
    return [f for f in theirs if f != images] + [
        f"{images}/{f}" for f in sorted(os.listdir(linked))
        if not f.startswith(".") and f.lower() not in ("thumbs.db", "desktop.ini", "$recycle.bin",
                                                         "system volume information")]


def run_hint(outdir, *more: str) -> str:
    """`colorize run -o OUTDIR MORE...` with the --scheduler the job's last run used: advice
    pasted without it would start a local cluster, and the next run's hints would forget it."""
    try:
        scheduler = Outdir(str(outdir)).read_job().get("scheduler")
    except Exception:  # noqa: BLE001 - a hint: the plain command
        scheduler = None
    # quoted as a shell reads it: an OUTDIR named "out dir 'ä" pasted as printed ran elsewhere
    return "colorize run -o " + " ".join(map(shlex.quote, [str(outdir), *more,
                                                            *(["--scheduler", scheduler] if scheduler else [])]))


def automatic_of(rel: str) -> str:
    """Where automatic/ keeps the automatic output that a hinted one at rel (images/...) replaced."""
    return Outdir.AUTOMATIC + "/" + rel.split("/", 1)[1]


def _why_damaged(e: Exception) -> str:
    """Arrow's reason, less its "Could not open Parquet input source '<the path>': " (the path
    is said already), whole: a reason cut at a length ended mid-word."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first.split("': ", 1)[1] if first.startswith("Could not open") and "': " in first else first


TEMPORARY = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{12}$")  # storage.write_atomic's names


def temporaries(od: Outdir) -> list[str]:
    """Files in images/ of writes a kill interrupted: no output (the next run removes them)."""
    return [rel for rel in od.store.find(od.IMAGES) if TEMPORARY.match(rel.rsplit("/", 1)[-1])]


def _remove_temporaries(store: Store, subs: tuple[str, ...]) -> int:
    """Temporary files of interrupted atomic writes (local disks only: object stores have no
    half-written objects), and a killed run's record of the images it tried alone (alone.py)."""
    if not store.local:
        return 0
    n = 0
    for sub in subs:
        d = Path(store.full(sub))
        if d.is_dir():
            for p in [*d.rglob(".*.tmp-*"), *d.glob(".shard-*.alone.json")]:
                p.unlink(missing_ok=True)
                n += 1
    return n


def _lock_holder(store: Store, lock: str) -> str | None:
    if not store.local or not store.exists(lock):
        return None
    try:
        fd = os.open(store.full(lock), os.O_RDONLY)
    except FileNotFoundError:  # let go of (and removed) just now
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "pid unknown"
    finally:
        os.close(fd)


def _read_results(od: Outdir, columns, damaged: list[int] | None, shards: set[int] | None) -> pa.Table:
    tables = []
    for f, n in od.results_files().items():
        if n is None or (shards is not None and n not in shards):
            continue
        try:
            tables.append(pq.read_table(od.store.full(f), columns=columns, filesystem=od.store.fs))
        except (pa.ArrowInvalid, OSError) as e:
            if isinstance(e, OSError) and not isinstance(e, pa.ArrowInvalid) and e.errno is not None:
                raise  # the disk's or the network's error (errno): not the file's damage
            # cut short, not Parquet (ArrowInvalid), or a page that does not decode (Arrow's
            # OSError without an errno)
            if damaged is None:
                raise DamagedResults(
                    f"{od.store.full(f)} is damaged ({_why_damaged(e)}); "
                    f"`{run_hint(od, '--repair')}` sets it aside in {od.QUARANTINE}/ "
                    "and colorizes its shard again") from None
            damaged.append(n)
    if not tables:
        t = SCHEMA.empty_table()
        return t if columns is None else t.select(columns)
    t = pa.concat_tables(tables, promote_options="default")
    for name in SCHEMA.names if columns is None else ():  # shards written before a column existed
        if name not in t.column_names:
            t = t.append_column(name, pa.nulls(len(t), SCHEMA.field(name).type))
    return t


def output_stems(stems) -> set[str]:
    """images/<stem> for each manifest out_stem: the only names a run writes (any extension); a
    hostile stem that would leave OUTDIR names nothing."""
    names = set()
    for stem in stems:
        try:
            names.add(Outdir.output_rel(stem, ""))
        except ValueError:
            pass
    return names


def _still_at(path: Path, fd: int) -> bool:
    """Whether the file open as fd is still the one at path (a lock's holder removes it as it
    lets go; a taken-over one is replaced)."""
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class RunLock:
    """One run per OUTDIR. Locally flock on OUTDIR/.lock: the kernel drops it when the holder
    dies, even by SIGKILL. On an object store, a lock object with a heartbeat."""

    def __init__(self, outdir: str | os.PathLike | Store | Outdir):
        self.store = Outdir(outdir).store
        self.fd: int | None = None
        self.obj: ObjectLock | None = None

    def __enter__(self) -> RunLock:
        self.store.makedirs()
        if not self.store.local:
            self.obj = ObjectLock(self.store, Outdir.LOCK)
            holder = self.obj.acquire()
            if holder:
                raise Busy(f"another run is using {self.store} ({holder}); wait for it to finish")
            return self
        path = Path(self.store.full(Outdir.LOCK))
        while True:
            try:  # the umask decides who else may write it: a team's share shares it
                self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except PermissionError:
                self.fd = self._left_by_another_user(path)
                if self.fd is None:
                    continue  # it changed as we looked (its holder let go, or another took it)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise
                raise JobError(f"{path} is a link, not a lock this tool made (anyone who writes "
                               f"the folder could plant one to have a run overwrite its target): "
                               f"remove it and run again") from None
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
                os.close(self.fd)
                raise Busy(f"another run is using {self.store} ({holder or 'pid unknown'}); "
                           "wait for it to finish") from None
            # The holder before us removes the file as it lets go (a finished OUTDIR keeps no
            # stale lock): a lock on a file no longer at the path guards nothing, so try again.
            if _still_at(path, self.fd):
                break
            os.close(self.fd)
        readable_by_all(self.fd)  # who holds it is told to all who share the folder
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
        return self

    def _left_by_another_user(self, path: Path) -> int | None:
        """A lock file this user may not write: a colleague's run killed on a shared OUTDIR left
        it (the group's resume was refused). Locked by no one, it is replaced, atomically, by
        one of ours; held, the run is busy as with any lock; None when it changed as we looked."""
        try:
            old = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # flock needs no write access
        except FileNotFoundError:
            if not os.access(path.parent, os.W_OK):  # no lock to take, none to make: said once
                raise JobError(f"{path.parent}: permission denied writing it; ask for write "
                               "access (the group's, on a share)") from None
            return None
        except OSError as e:  # a lock kept private (made before the umask was honoured), or a link
            raise JobError(f"{path} was left by another user's run and cannot be read here "
                           f"({e.strerror}): ask them or the folder's owner to remove it, then run "
                           "again") from None
        try:
            try:
                fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(old, 64, 0).decode(errors="replace").strip()
                raise Busy(f"another run is using {self.store} ({holder or 'pid unknown'}); "
                           "wait for it to finish") from None
            except OSError as e:  # NFS grants no exclusive lock to a file opened read-only
                raise JobError(f"{path} was left by another user's run and cannot be taken over "
                               f"here ({e.strerror}): once no run uses {self.store}, remove it "
                               "and run again") from None
            if not _still_at(path, old):  # another run took it over first: look again
                return None
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            # O_EXCL: in a folder others write, never through a link planted under its name
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.replace(tmp, path)  # still holding the old one: no run slips in between
            except OSError as e:  # a sticky folder: only its owner may replace the file
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise JobError(f"{path} was left by another user's run, and this user may not "
                               f"replace it ({e.strerror}): ask them or the folder's owner to "
                               "remove it, then run again") from None
            return fd
        finally:
            os.close(old)

    def __exit__(self, *exc) -> None:
        if self.obj is not None:
            self.obj.release()
        if self.fd is not None:
            Path(self.store.full(Outdir.LOCK)).unlink(missing_ok=True)  # while still holding it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


# --- why the last run stopped ----------------------------------------------------------------

STOPPED = "stopped.json"  # in OUTDIR, from a failure until the next run starts (run_job clears it)


# Room kept while a run goes for what record_stop writes: on the full disk that stopped the run,
# letting this go frees the space its reason needs (status and audit tell it later)
RESERVE = ".stop-reserve"


def record_stop(outdir: Outdir, reason: str) -> None:
    """A run that failed says why, for `status` and `audit` to tell later (the terminal may be gone
    by then). On the full disk that stopped the run, the room reserved at its start is used."""
    stop = {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "reason": reason}
    data = json.dumps(stop, indent=1).encode()
    for _ in range(2):
        try:
            outdir.store.write_atomic(STOPPED, data)
            break
        except OSError:
            try:
                if not outdir.store.exists(RESERVE):
                    break  # nothing to free: the message printed stands
                outdir.store.remove(RESERVE)
            except OSError:
                break


def last_stop(outdir: Outdir) -> dict | None:
    """What record_stop() kept, until the next run starts; None when the last run did not fail."""
    try:
        return json.loads(outdir.store.read_text(STOPPED)) if outdir.store.exists(STOPPED) else None
    except (OSError, ValueError):
        return None


def clear_stop(outdir: Outdir) -> None:
    """A run starts: the last one's failure is its to tell again, or not; room for its own."""
    outdir.store.remove(STOPPED)
    try:
        outdir.store.write_atomic(RESERVE, os.urandom(16384))  # not compressible: real room
    except OSError:
        pass  # a disk already full: the run says so itself


def release_reserve(outdir: Outdir) -> None:
    """A run that ended without failing gives its room back."""
    try:
        outdir.store.remove(RESERVE)
    except OSError:
        pass
