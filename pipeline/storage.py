"""Where files live: a local folder or an fsspec URL (s3://, gs://, ...), behind one interface.

Commit semantics are kept on both: locally a temporary name and a rename; on an object store a
single PUT, which makes the object visible only once it is whole.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path, PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

# A run refuses to start on a disk with less free: a shard's outputs would not fit, and it would
# only fail at its first image (a scan of 20 MB writes a 16-bit TIFF of about as much).
MIN_FREE = 32 << 20


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """A local file written under a temporary name in its folder, fsynced, then renamed over
    the target: a reader, or a run killed halfway, never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, made new: in a folder others write (a team's OUTDIR), never through a link
    # planted under a name known in advance
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        # the file asked for, not our name for it (nor none: a full disk while writing)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (str(tmp), None):
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise


def readable_by_all(f) -> None:
    """Read (and a folder's search) bits for all who share OUTDIR, whatever this user's umask: a
    curator with umask 077 made journals, events.parquet or reviews/ itself that the others'
    review, audit and export could not read, and a run's lock that told no one who held it.
    Only where this user may (its own files; a share that refuses chmod keeps what it has)."""
    import stat

    try:
        mode = (os.fstat(f) if isinstance(f, int) else os.stat(f)).st_mode
        extra = 0o055 if stat.S_ISDIR(mode) else 0o044
        if mode & extra != extra:
            (os.fchmod if isinstance(f, int) else os.chmod)(f, mode & 0o777 | extra)
    except OSError:
        pass


def read_source(path: str) -> bytes:
    """A source image's bytes, from a local path or a URL."""
    if is_url(path):
        with fsspec.open(path, "rb") as f:
            return f.read()
    import stat

    try:  # a named pipe would block the read for ever: refused (a stat does not open it)
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # the read says why (not found, permission)
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ValueError("not a regular file (a pipe, a socket, a device)")
    return Path(path).read_bytes()


def not_a_file(path: str) -> str | None:
    """Why a name that is there is no file to read (a pipe, a socket, a device; a link that
    leads nowhere, or round in a loop), said as such: "not found" of a name `ls` shows sent a
    trial looking for a typo. None when it is a file or a folder, or is not there at all."""
    import errno

    if is_url(path) or not os.path.lexists(path) or os.path.isfile(path) or os.path.isdir(path):
        return None
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "a loop of symbolic links (each points on to another, none to a file)"
            return f"a broken symbolic link: it points to {os.readlink(path)}, which is not there"
    return "not a regular file (a pipe, a socket, a device)"


def as_store(outdir: str | os.PathLike | Store) -> Store:
    return outdir if isinstance(outdir, Store) else Store(outdir)


class Store:
    """A root folder; every path given to its methods is relative to it, with '/' separators."""

    def __init__(self, url: str | os.PathLike):
        url = str(url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.url = str(Path(url).resolve()) if self.local else url
        self.root = self.url if self.local else root.rstrip("/")

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __str__(self) -> str:
        return self.url

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def rel(self, full: str) -> str:
        return str(PurePosixPath(full).relative_to(self.root))

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.full(rel))

    def size(self, rel: str) -> int:
        return self.fs.size(self.full(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.full(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.full(rel), mode)

    def write_atomic(self, rel: str, data: bytes) -> None:
        full = self.full(rel)
        if self.local:
            write_atomic(full, data)
        else:
            self.fs.pipe_file(full, data)  # one PUT: all or nothing

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.full(rel))

    def move_aside(self, rel: str, folder: str) -> str:
        """Move rel to folder/rel (a numbered name if taken), never deleting; returns where."""
        dest = f"{folder}/{rel}"
        n = 1
        while self.exists(dest):
            stem, dot, ext = rel.rpartition(".")
            dest = f"{folder}/{stem}.{n}.{ext}" if dot else f"{folder}/{rel}.{n}"
            n += 1
        if self.local:
            Path(self.full(dest)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.full(rel), self.full(dest))
        else:
            self.fs.mv(self.full(rel), self.full(dest))
        return dest

    def check_writable(self, rels: tuple[str, ...] = ("", "images", "results"),
                       create: bool = True) -> None:
        """Raise OSError (PermissionError for permissions) naming the first of these folders
        that no file can be written in: found before a run, not as a retried failure in every
        shard. create=False (a dry run) writes nothing: it asks the nearest existing folder."""
        if not self.local:
            return  # object stores: the first write says it, with the store's own reason
        for rel in rels:
            d = Path(self.full(rel))
            if not create:
                while not d.exists() and d.parent != d:
                    d = d.parent
                if not d.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(d))
                if not os.access(d, os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "Permission denied", str(d))
                continue
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = d / f".write-test-{os.getpid()}.tmp"
                probe.write_bytes(b"")
                probe.unlink()
            except PermissionError as e:
                raise PermissionError(e.errno, e.strerror or "Permission denied", str(d)) from None
            except OSError as e:  # a read-only mount, a full disk: the folder, not our probe file
                if e.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                    raise PermissionError(e.errno, e.strerror, str(d)) from None
                raise
            # an empty probe fits on a full disk: room for an output or two is asked too
            if (free := shutil.disk_usage(d).free) < MIN_FREE:
                raise OSError(errno.ENOSPC, f"{free // 1024} KiB free, under {MIN_FREE >> 20} MiB", str(d))

    def rmtree(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.full(rel), recursive=True)

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.open(rel) as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    def remove_empty_dirs(self, rels: list[str], stop: str) -> None:
        """The folders rels (deepest first) and their parents up to `stop`, where now empty: a
        local disk's (an object store has no folders). A folder with anything in it stays."""
        if not self.local:
            return
        for rel in rels:
            while rel and rel != stop and rel.startswith(stop + "/"):
                try:
                    os.rmdir(self.full(rel))
                except OSError:  # not empty (or gone): something else is in it
                    break
                rel = os.path.dirname(rel)

    def find(self, rel: str) -> list[str]:
        """Every file under rel (recursive), as paths relative to the root."""
        if not self.exists(rel):
            return []
        return sorted(self.rel(p) for p in self.fs.find(self.full(rel)))

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.rel(p) for p in self.fs.glob(self.full(pattern)))

    def foreign(self, ours: tuple[str, ...]) -> list[str]:
        """Files under the root other than `ours` (names, or folders ending in /, that the tool
        itself makes), as relative paths: what a folder holds that is not ours."""
        found = []
        for rel in self.find(""):
            top = rel.split("/", 1)[0]
            if rel in ours or (top + "/") in ours or rel.rsplit("/", 1)[-1].startswith(".write-test-"):
                continue
            found.append(rel)
        return found

    def makedirs(self) -> None:
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)


class ObjectLock:
    """A lock object for stores without flock: owner id plus a heartbeat; a holder that died
    stops beating and its lock goes stale. Written, then read back, so that of two runs
    starting together only the one whose write stands goes ahead."""

    STALE_S = 120.0
    BEAT_S = 30.0

    def __init__(self, store: Store, rel: str = ".lock"):
        self.store, self.rel = store, rel
        self.me = f"{uuid.uuid4().hex} pid {os.getpid()} on {os.uname().nodename}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.store.write_atomic(self.rel, json.dumps({"owner": self.me, "t": time.time()}).encode())

    def _read(self) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(self.rel))
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _dead_here(owner: str) -> bool:
        """A holder on this machine whose process is gone: stale at once, no need to wait."""
        try:
            _, _, pid, _, host = owner.split(" ", 4)
            if host != os.uname().nodename:
                return False
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (ValueError, PermissionError):
            return False
        return False

    def acquire(self) -> str | None:
        """None on success, else a description of the holder."""
        held = self._read()
        if (held and held["owner"] != self.me and time.time() - held.get("t", 0) < self.STALE_S
                and not self._dead_here(held["owner"])):
            return held["owner"].split(" ", 1)[-1]
        self._write()
        time.sleep(0.2)
        held = self._read()
        if not held or held["owner"] != self.me:
            return (held or {}).get("owner", "another run").split(" ", 1)[-1]
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.BEAT_S):
            self._write()

    def release(self) -> None:
        self._stop.set()
        held = self._read()
        if held and held["owner"] == self.me:
            self.store.remove(self.rel)
