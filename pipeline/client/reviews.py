"""A curator's verdicts, notes and colour hints, kept so that nothing acknowledged is ever lost
(OUTDIR/reviews/).

Every edit is an event: who, when, which image, what (`verdict`: accepted | retouch | rejected |
None, with the colouring it was given to and the hint model, see colouring(); `note`: text;
`hints`: the image's whole list of hints, source pixels and Lab). An image's state is its latest
event of each kind; the history stays. Events are appended to a journal of
this process's own (`journal-*.jsonl`, one JSON line each, fsynced before the edit is
acknowledged), so two servers, two tabs or two curators never write the same file, and a kill
can only tear the line that was never acknowledged (a torn line is skipped on reading).
`compact()` folds the journals of servers no longer running (each holds a flock on its own,
taken before the journal has a name a compaction lists) into `events.parquet`, written beside
and renamed over, one compaction at a time (`.compact.lock`); an event folded twice (a kill
between the rename and the journal's removal) is read once, by its id. A write that fails
part-way is cut off before it is answered. An event's time is after the latest one of its image
and kind already recorded, so the last edit a curator made wins whatever the clocks of two
curators' machines say; `exclusive()` makes an edit's check of what it was made on and its
record one step across servers (`.save.lock`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import hashlib
import json
import math
import os
import threading
import uuid
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import readable_by_all

DIR = "reviews"
EVENTS = "events.parquet"
VERDICTS = ("accepted", "retouch", "rejected")
KINDS = ("verdict", "note", "hints")
_TRIES = 5  # reads begun again when a compaction elsewhere changed the files under them
SCHEMA = pa.schema([("id", pa.string()), ("t", pa.string()), ("who", pa.string()),
                    ("image_id", pa.string()), ("kind", pa.string()), ("value", pa.string())])



class ReviewError(ValueError):
    """An edit that cannot be recorded as asked (an unknown kind or verdict, a malformed hint)."""


def reviewer(name: str | None = None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container: still somebody
        return f"uid {os.getuid()}"


COLOURED_BY = ["status", "source_sha256", "checkpoint_sha256", "hints_digest", "hint_model"]  # a row's, for colouring()


def colouring(row: dict, hints_digest: str | None) -> str:
    """What a verdict is given to: the picture the curator saw, named by what makes it (the
    scan's bytes, the weights, the hints it is coloured with, and whether it is coloured at all:
    a photo skipped as colour is shown as it is). A rerun that writes the same picture again (a
    catalogue's cells corrected) keeps the verdict; one that colours the image anew (other hints
    or weights, --recolor, the scan replaced) leaves it a verdict on an earlier colouring.
    A verdict given to a preview of hints not yet run is one on the colouring their run makes.
    The hint model that turned the hints into colour is kept beside it (see earlier())."""
    coloured = row.get("status") == "ok" or hints_digest is not None
    made = [row.get("source_sha256") or "", (row.get("checkpoint_sha256") or "") if coloured else "",
            hints_digest or "", "coloured" if coloured else "as it is"]
    return hashlib.sha256("\0".join(made).encode()).hexdigest()[:16]


def earlier(state: dict, row: dict) -> bool:
    """Whether an image's verdict was given to an earlier colouring than the one its output now
    has (one given before verdicts were bound to their colouring is taken as given to this):
    another colouring, or its hints made colour by another hint model than the one the curator
    saw (a new hint head, then --recolor; a verdict says which only where the server knew: the
    run's own, or the preview's it made)."""
    from pipeline.worker.hints import digest_of

    of = state.get("verdict_of")
    if not (state.get("verdict") and of):
        return False
    made = row.get("hints_digest")
    if of == colouring(row, made):
        # (a row that names no model: run by a version that recorded none, which says nothing)
        model, now = state.get("verdict_model"), row.get("hint_model")
        return bool(model and made and now and model != now)
    # (one given to the preview of hints saved since the output, which their run makes: not yet)
    return of != colouring(row, digest_of(state.get("hints")))


UNREADABLE = object()  # value_of an event whose value no edit could have


def value_of(ev: dict):
    """An event's value as the state holds it, or UNREADABLE: a journal is a file anyone who
    reviews OUTDIR can write, so its values are checked as an edit's are (a verdict of HTML)."""
    try:
        return check_value(ev["kind"], json.loads(ev["value"]))
    except (ValueError, TypeError, AttributeError):  # (ReviewError is a ValueError)
        return UNREADABLE


def check_value(kind: str, value):
    """The value of an edit as stored, or ReviewError. A verdict is stored with the colouring it
    was given to and, where hints made it, the hint model that did ({"verdict": v, "of":
    colouring(), "hint_model": sha256 or "propagation"}), or bare (a journal from before, or none)."""
    if kind == "verdict":
        v, of, model = ((value.get("verdict"), value.get("of"), value.get("hint_model"))
                        if isinstance(value, dict) else (value, None, None))
        if v not in (*VERDICTS, None) or not all(isinstance(x, (str, type(None))) for x in (of, model)):
            raise ReviewError(f"verdict must be one of {', '.join(VERDICTS)} or null, got {value!r}")
        return ({"verdict": v, "of": of} | ({"hint_model": model} if model else {})) if of and v else v
    if kind == "note":
        if value is not None and not isinstance(value, str):
            raise ReviewError("a note is text")
        return value or None
    if kind == "hints":
        if not isinstance(value, list):
            raise ReviewError("hints are a list of {x, y, L, a, b}")
        out = []
        for h in value:
            try:
                hint = {k: float(h[k]) for k in ("x", "y", "a", "b")} | {"L": float(h.get("L", 50.0))}
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ReviewError(f"a hint needs numbers x, y, a, b (and L): {h!r}") from None
            # NaN and infinities pass float() and JSON's parsers, and would colour an output
            if not all(map(math.isfinite, hint.values())) or max(abs(hint["a"]), abs(hint["b"])) > 128 \
                    or not 0 <= hint["L"] <= 100:
                raise ReviewError(f"a hint's numbers must be finite, L* within 0..100, a* and b* "
                                  f"within -128..128: {h!r}")
            if hint not in out:  # the same point twice says no more than once
                out.append(hint)
        return out
    raise ReviewError(f"unknown kind of edit {kind!r} (one of {', '.join(KINDS)})")


class Reviews:
    """OUTDIR/reviews as it is read: every event ever recorded, each image's state now, and
    the compaction of journals no server holds."""

    def __init__(self, outdir: str | os.PathLike):
        self.dir = Path(outdir) / DIR
        self._lock = threading.RLock()
        self.path: Path | None = None  # a Journal's own, which no compaction takes
        # state(): what has been read of each file, and the state it made
        self._seen: dict = {}
        self._offsets: dict[str, int] = {}
        self._latest: dict[tuple[str, str], tuple[str, str]] = {}
        self._state: dict[str, dict] = {}

    def journals(self) -> list[Path]:
        return sorted(self.dir.glob("journal-*.jsonl")) if self.dir.is_dir() else []

    def events(self) -> list[dict]:
        """Every event, folded and journalled, each once, in time order."""
        for _ in range(_TRIES):
            seen: dict[str, dict] = {}
            stamp = _stamp(self.dir / EVENTS)
            try:
                if stamp is not None:
                    for ev in pq.read_table(self.dir / EVENTS).to_pylist():
                        seen.setdefault(ev["id"], ev)
                for p in self.journals():
                    for ev in read_journal(p):
                        seen.setdefault(ev["id"], ev)
            except FileNotFoundError:  # folded by a compaction meanwhile: read again
                continue
            if _stamp(self.dir / EVENTS) == stamp:
                break
        return sorted(seen.values(), key=lambda e: (e["t"], e["id"]))

    def state(self) -> dict[str, dict]:
        """Per image: its verdict, note and hints now, with who set each last and when. Read
        incrementally: the journals are append-only, so only their new lines are parsed (the
        review page asks on every request); a compaction elsewhere starts it over (one that
        folds a journal while it is read too: its events are then in events.parquet)."""
        with self._lock:
            for _ in range(_TRIES):
                try:
                    if self._read_new():
                        break
                except FileNotFoundError:
                    pass
                self._seen = {}  # read again from the start
            return {k: dict(v) for k, v in self._state.items()}

    def _read_new(self) -> bool:
        """What was recorded since the last read; False when a compaction replaced
        events.parquet meanwhile (the journals it folded may have been missed)."""
        base = self.dir / EVENTS
        stamp = _stamp(base)
        if stamp != self._seen.get(EVENTS):
            self._seen, self._offsets, self._latest, self._state = {EVENTS: stamp}, {}, {}, {}
            if stamp is not None:
                for ev in pq.read_table(base).to_pylist():
                    self._apply(ev)
        for p in self.journals():
            off = self._offsets.get(p.name, 0)
            if p.stat().st_size > off:
                with open(p, "rb") as f:
                    f.seek(off)
                    data = f.read()
                whole = data[:data.rfind(b"\n") + 1]  # a line still being written waits
                for ev in _events(whole.splitlines()):
                    self._apply(ev)
                self._offsets[p.name] = off + len(whole)
        return _stamp(base) == stamp

    def _apply(self, ev: dict) -> None:
        """One event into the state: per image and kind, the latest (by time, then id) wins."""
        key = (ev["image_id"], ev["kind"])
        order = (ev["t"], ev["id"])
        if key in self._latest and self._latest[key] >= order:
            return
        if (v := value_of(ev)) is UNREADABLE:
            return
        self._latest[key] = order
        s = self._state.setdefault(ev["image_id"], {"verdict": None, "note": None, "hints": [],
                                                     "who": None, "t": None, "rev": {}, "verdict_of": None,
                                                     "verdict_model": None, "by": {}})
        if ev["kind"] == "verdict":
            s["verdict"], s["verdict_of"], s["verdict_model"] = (
                (v["verdict"], v["of"], v.get("hint_model")) if isinstance(v, dict) else (v, None, None))
        else:
            s[ev["kind"]] = v if ev["kind"] != "hints" else (v or [])
        # which edit each kind is now: a page saves "on top of" the one it showed, or is told
        s["rev"] = {**s["rev"], ev["kind"]: ev["id"]}
        # who made it, and when: a verdict is signed by whoever gave it, not by who noted last
        s["by"] = {**s["by"], ev["kind"]: (ev["who"], ev["t"])}
        if s["t"] is None or ev["t"] >= s["t"]:
            s["who"], s["t"] = ev["who"], ev["t"]

    def compact(self) -> int:
        """Folds the journals no server holds into events.parquet; returns how many events it
        folded. Safe beside running servers: their journals are left to them."""
        if not self.dir.is_dir() or self.dir.is_symlink():  # nothing written through a link
            return 0
        # one compaction at a time: two, each folding other journals into the same old file,
        # would each rename theirs over it, and the first one's journals (deleted) were lost
        with _held(self.dir / ".compact.lock"):
            return self._fold()

    def _fold(self) -> int:
        free = []
        for p in self.journals():
            if p == self.path:
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:  # its server closed an empty one, or a compaction before
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            free.append((p, fd))
        try:
            if not free:
                return 0
            old = pq.read_table(self.dir / EVENTS).to_pylist() if (self.dir / EVENTS).is_file() else []
            ids = {e["id"] for e in old}
            new = [e for p, _ in free for e in read_journal(p) if e["id"] not in ids]
            rows = sorted(old + new, key=lambda e: (e["t"], e["id"]))
            tmp = self.dir / f".{EVENTS}.{os.getpid()}.tmp"
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
            readable_by_all(tmp)  # it replaces journals every curator read
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / EVENTS)
            _fsync_dir(self.dir)
            for p, _ in free:
                p.unlink()
            _fsync_dir(self.dir)
            return len(new)
        finally:
            for _, fd in free:
                os.close(fd)


class Journal(Reviews):
    """OUTDIR/reviews: this process's journal to append to, and every event ever recorded."""

    def __init__(self, outdir: str | os.PathLike, who: str | None = None):
        super().__init__(outdir)
        self.who = reviewer(who)
        self._saving = threading.Lock()
        self._fd: int | None = None

    def _folder(self) -> None:
        """reviews/, made if need be; one that is a link is refused (whoever may write OUTDIR
        could point it anywhere, and every edit would be written there, outside OUTDIR)."""
        if self.dir.is_symlink():
            raise OSError(errno.ELOOP, f"{self.dir} is a link (to {os.readlink(self.dir)}): edits are "
                          "written only inside OUTDIR; make it a folder of its own", str(self.dir))
        self.dir.mkdir(parents=True, exist_ok=True)

    def _open(self) -> int:
        if self._fd is None:
            self._folder()
            readable_by_all(self.dir)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            name = f"journal-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            # made and locked under a name no compaction lists, then named: a server starting
            # between the two would otherwise fold the empty file and delete it, and every edit
            # of this session would go to a file no longer in the folder
            fresh = self.dir / f".{name}.new"
            # the umask decides who else may write it; every curator, audit and export of the
            # OUTDIR reads it, so it is readable by all whatever the umask (as it always was)
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "a server is writing this one"
            readable_by_all(fd)
            os.rename(fresh, self.dir / name)
            self._fd, self.path = fd, self.dir / name
            _fsync_dir(self.dir)
        return self._fd

    @contextlib.contextmanager
    def exclusive(self):
        """Another edit's check of what it was made on and its record, as one: across this
        process's threads and every other process reviewing the OUTDIR (two curators' servers)."""
        with self._saving:
            self._folder()
            readable_by_all(self.dir)
            with _held(self.dir / ".save.lock"):
                yield

    def record(self, image_id: str, kind: str, value) -> dict:
        """Appends one edit; returns the event once it is on disk (fsynced). Its time is after
        every edit of that image and kind already recorded, whatever this machine's clock says
        (a colleague's clock ahead, a clock set back): the latest recorded is what the curator
        did last."""
        value = check_value(kind, value)
        self.state()  # what other servers have recorded since
        with self._lock:
            t = _now()
            if (latest := self._latest.get((str(image_id), kind))) and latest[0] >= t:
                t = _after(latest[0])
            ev = {"id": uuid.uuid4().hex, "t": t, "who": self.who, "image_id": str(image_id),
                  "kind": kind, "value": json.dumps(value, ensure_ascii=False)}
            body = json.dumps(ev, ensure_ascii=False, sort_keys=True)
            line = json.dumps({"e": ev, "crc": zlib.crc32(body.encode())}, ensure_ascii=False) + "\n"
            fd = self._open()
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                data = line.encode()
                while data:  # a short write (a signal) continues where it stopped
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except BaseException:
                self._abandon(fd, start)  # not acknowledged: nothing of it may stay
                raise
        return ev

    def _abandon(self, fd: int, start: int) -> None:
        """A write that failed part-way (a full disk) would leave a fragment the next edit's
        line is glued to, and that line skipped as torn: the fragment is cut off, and this
        journal ends (the next edit starts another)."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
            os.fsync(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        self._fd = None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def state_of(outdir) -> dict[str, dict]:
    """The curator's state of a run (outdir: client.outdir.Outdir); {} where nobody reviewed."""
    return Reviews(outdir.store.full("")).state() if outdir.store.exists(DIR) else {}


def read_journal(path: Path) -> list[dict]:
    """A journal's events; a line torn by a kill (never acknowledged) or damaged is skipped."""
    with open(path, "rb") as f:
        return _events(f)


def _stamp(p: Path):
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _events(lines) -> list[dict]:
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
            ev = rec["e"]
            body = json.dumps(ev, ensure_ascii=False, sort_keys=True)
            if zlib.crc32(body.encode()) == rec["crc"]:
                out.append(ev)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _after(t: str) -> str:
    """The time a microsecond after t (an event's; one not a time, from a hand-edited journal,
    is passed by now's)."""
    try:
        return (dt.datetime.fromisoformat(t) + dt.timedelta(microseconds=1)).isoformat(timespec="microseconds")
    except (ValueError, TypeError):
        return _now()


@contextlib.contextmanager
def _held(path: Path):
    """An exclusive flock on a lock file every curator can open (read-only: flock needs no
    more, and another curator's umask 077 made it theirs)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        readable_by_all(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
