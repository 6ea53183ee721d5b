"""Scan sources (folders, globs, CSV/TXT lists) into a sorted, sharded manifest Parquet file."""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.client.catalogue import (
    DELIMITER_NAMES,
    Catalogue,
    at,
    read_catalogue,
    shared_identifiers,
    shared_said,
    stored_name,
)
from pipeline.client.elsewhere import advice
from pipeline.client.outdir import Outdir
from pipeline.client.results import CORE_COLUMNS, PROBED
from pipeline.errors import ScanError, plural
from pipeline.storage import is_url, not_a_file, read_source
from pipeline.worker.imaging import (
    DEFAULT_MAX_PIXELS,
    NOT_READ_EXTS,
    XMP_LIMIT,
    DecodeError,
    not_read_here,
    read_header,
)
from pipeline.worker.writers import OR, alternatives, first_cell, parse_columns, resolve_columns

SHARD_SIZE = 64  # images per shard unless told: a shard is what commits at once

IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif",
              ".jp2", ".j2k", ".pgm", ".pbm", ".ppm", ".pnm"}
LIST_EXTS = {".csv", ".txt", ".tsv"}
# A catalogue kept as a workbook: its cells are typed (an accession number 007 stored as 7, a
# date as a serial number), and only the spreadsheet knows how it shows them. Its CSV is exact.
WORKBOOK_EXTS = {".xlsx", ".xlsm", ".xls", ".ods", ".numbers"}
# what a folder holds that is not a picture, nor the archive's: never counted as left out
SYSTEM_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"}
SYSTEM_DIRS = {"@eadir", "__macosx", "$recycle.bin", "#recycle", "system volume information",
               "#snapshot", ".snapshot"}


def _unusable(path: str) -> str | None:
    """Why a file found in a folder cannot be a row: a name that is not UTF-8 (an old Windows
    or Samba share's Latin-1 bytes: a manifest, Parquet, holds text), or not a regular file (a
    named pipe would hang the scan that opens it)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return ("its name (or a folder's above it) is not UTF-8 text: rename it (e.g. convmv -f "
                "latin1 -t utf8)")
    try:
        st = os.stat(path)
    except OSError:
        return None  # a broken link: its row says so
    import stat

    return None if stat.S_ISREG(st.st_mode) else "not a regular file (a pipe, a socket, a device)"


def shown(path: str) -> str:
    """A path as it can be printed and stored, whatever bytes its name holds."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _kind_of(name: str) -> str:
    """'image', 'not_read' (a picture no reader here opens: a row with the reason), 'system'
    (hidden or the OS's own: left out silently), or 'other' (left out, counted and named)."""
    ext = os.path.splitext(name)[1].lower()
    if name.startswith(".") or name.lower() in SYSTEM_FILES:
        return "system"
    return "image" if ext in IMAGE_EXTS else "not_read" if ext in NOT_READ_EXTS else "other"
ROW_GROUP = 8192


def image_id(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def read_path_list(path: str | os.PathLike, path_column: str = "path", encoding: str | None = None,
                   log=lambda msg: None) -> list[dict]:
    """The rows of a catalogue or path list: each with "path" (resolved) and "_cells"."""
    return read_catalogue(path, path_column=path_column, encoding=encoding, log=log).rows


def _expand_url(src: str) -> Iterator[dict]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(src)
    if any(c in root for c in "*?["):
        found = fs.glob(root)
    elif fs.isdir(root):
        found = fs.find(root)
    elif fs.exists(root):
        found = [root]
    else:
        raise ScanError(f"source not found: {src}")
    for f in sorted(found):
        parts = f[len(root):].strip("/").split("/")[:-1] if f.startswith(root) else []
        if any(d.startswith(".") or d.lower() in SYSTEM_DIRS for d in parts):
            continue  # a hidden folder, a NAS's or an OS's own, as in a local folder
        kind = _kind_of(Path(f).name)
        if kind in ("image", "not_read"):
            yield {"path": fs.unstrip_protocol(f)}
        elif kind == "other":
            yield {"_other": fs.unstrip_protocol(f)}


def _expand(src: str, list_options: dict | None = None) -> Iterator[dict]:
    if is_url(src):
        yield from _expand_url(src)
        return
    p = Path(src)
    if p.is_dir():
        unread: list[OSError] = []  # a folder it cannot list: its pictures would vanish unsaid
        for root, dirs, files in os.walk(p, onerror=unread.append):
            if Outdir.JOB in files and Outdir.RESULTS in dirs:  # a colorize OUTDIR: outputs, not scans
                dirs[:] = []
                yield {"_outdir": root}
                continue
            # hidden folders and a NAS's or an OS's own (@eaDir thumbnails): not the archive's
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() not in SYSTEM_DIRS)
            for d in dirs:  # os.walk does not follow them (a loop, or the archive's root moved)
                if os.path.islink(os.path.join(root, d)):
                    link = os.path.join(root, d)
                    yield {"_link": (link, f"a link to a folder ({os.readlink(link)}): not followed; "
                                           "scan that folder by its own name to add its pictures")}
            for name in sorted(files):
                kind, path = _kind_of(name), os.path.join(root, name)
                if kind in ("image", "not_read"):
                    why = _unusable(path)
                    yield {"_unusable": (path, why)} if why else {"path": path}
                elif kind == "other":
                    yield {"_other": path}
        for e in unread:
            yield {"_unread_folder": (e.filename, e.strerror or type(e).__name__)}
    elif p.is_file() and p.suffix.lower() in LIST_EXTS:
        cat = read_catalogue(p, **(list_options or {}))
        yield {"_catalogue": cat}
        for r in cat.rows:
            yield {**r, "_from": cat}
    elif p.is_file() and p.suffix.lower() in WORKBOOK_EXTS:
        raise ScanError(f"{src} is a spreadsheet workbook, which colorize does not read as a "
                        "catalogue: save it as CSV UTF-8 (Excel: File > Save As) and name the .csv")
    elif p.is_file():
        yield {"path": str(p), "_named": True}
    elif any(c in src for c in "*?["):
        matches = sorted(glob.glob(src, recursive=True))
        if not matches:
            raise ScanError(f"no files match {src!r}")
        for m in matches:
            if os.path.isfile(m):
                yield {"path": m, "_named": True}
    elif why := not_a_file(src):
        raise ScanError(f"source {src} is {why}")
    else:
        raise ScanError(f"source not found: {src}")


def _details(row: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in row["_cells"].items()) or "no columns"


def _real(path: str) -> str:
    """A file's real path (the same file named twice is one row); a broken symbolic link keeps
    its own name, the one the archive shows, not that of the file it no longer reaches."""
    if os.path.islink(path) and not os.path.exists(path):  # its folder real, as its siblings'
        return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                            os.path.basename(path))
    return os.path.realpath(path)


def _sighted(entry: dict, path: str) -> None:
    """How the scan came on a file: through a symbolic link to it, or as itself."""
    if os.path.islink(path) and os.path.exists(path):
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))  # as its siblings'
        entry.setdefault("_links", []).append(os.path.join(folder, os.path.basename(path)))
    else:
        entry["_itself"] = True
        if os.path.islink(entry["path"]):  # seen through a link first: read as itself (its sidecar)
            entry["path"] = path


def _name_links(by_path: dict[str, dict], report: ScanReport) -> None:
    """A file is one row however often it is reached, named as itself where the scan found it
    so; one reached through links alone is named by the first link, where the archive shows it
    (its target outside the folder scanned moved the job's root and named it after the target).
    Every other link to it is said, not lost unsaid."""
    for key, e in by_path.items():
        links = list(dict.fromkeys(e.pop("_links", [])))
        if links and not e.pop("_itself", False):
            e["_name"], links = links[0], links[1:]
        e.pop("_itself", None)
        report.links += [(shown(x), f"a link to {shown(e.get('_name', key))}, which is in the job "
                                    "under that name (one row)") for x in links]


def _named(by_path: dict[str, dict], key: str) -> str:
    """The name a file found as `key` is in the manifest by (_name_links)."""
    return by_path[key].get("_name", key)


def _sidecar_names(path: str) -> tuple[str, ...]:
    stem = os.path.splitext(path)[0]
    return (path + ".xmp", path + ".XMP", stem + ".xmp", stem + ".XMP")


def sidecar_where(manifest: str, path: str, sidecar: str) -> str:
    """Where a row's sidecar is. A manifest an earlier version wrote kept it relative to the
    folder the scan ran in (its picture's path whole): read from the manifest's folder, that
    named another file or none, and its rights were lost; it is the file of its name beside
    its picture."""
    was = resolve_path(manifest, sidecar)
    if "://" in was or os.path.isabs(sidecar) or not os.path.isabs(path):
        return was
    beside = os.path.join(os.path.dirname(path), os.path.basename(sidecar))
    return beside if os.path.isfile(beside) else was


def sidecar_of(path: str) -> str | None:
    """The XMP sidecar beside a picture, where a workflow keeps its rights, caption and keywords:
    darktable's and digiKam's NAME.EXT.xmp first, then Lightroom's and Capture One's NAME.xmp."""
    if is_url(path):
        return None
    names = _sidecar_names(path)
    # then one that is no file (a pipe, a device, a broken or looping link): its picture's, not
    # "a sidecar with no picture"; the run notes on the picture's row why it was not read
    return (next((c for c in names if os.path.isfile(c)), None)
            or next((c for c in names if os.path.lexists(c) and not os.path.isdir(c)), None))


# What a row keeps of the XMP sidecar its output was made with (results' sidecar_sha256), and
# what audit --check-inputs compares it with: the sha256 of its bytes, or one of these (a
# sidecar gone or unreadable at the run, put right since, is an outdated record too)
SIDECAR_MISSING, SIDECAR_UNREADABLE = "missing", "unreadable"


def sidecar_digest(path: str) -> str:
    """The sha256 of a sidecar's bytes, read a block at a time; SIDECAR_MISSING or
    SIDECAR_UNREADABLE (a pipe is never opened); for one over the XMP limit, which is never
    read, its size and modification time."""
    import stat

    try:
        if is_url(path):
            return hashlib.sha256(read_source(path)).hexdigest()
        if not stat.S_ISREG((st := os.stat(path)).st_mode):
            return SIDECAR_UNREADABLE
        if st.st_size > XMP_LIMIT:  # never read: known by its size and time (a sparse 100 GB one took a minute)
            return f"too large: {st.st_size} bytes, modified {st.st_mtime_ns}"
        h = hashlib.sha256()  # (hashlib.file_digest is 3.11's; 3.10 is supported)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    except FileNotFoundError:
        return SIDECAR_MISSING
    except (OSError, ValueError):
        return SIDECAR_UNREADABLE


HEAD = 1 << 16


def head_digest(path: str) -> str | None:
    """A digest of the file's first and last 64 KiB: a rescan at the same resolution is often
    the same size to the byte (an uncompressed TIFF), and its pixels differ from the first rows
    on, so this tells it from the file scanned without reading a whole archive again. None
    where the file cannot be read."""
    try:
        with open(path, "rb") as f:
            h = hashlib.sha256(f.read(HEAD))
            size = os.fstat(f.fileno()).st_size
            if size > HEAD:
                f.seek(max(HEAD, size - HEAD))
                h.update(f.read(HEAD))
        return h.hexdigest()[:32]
    except OSError:
        return None


def _probe(row: dict, max_pixels: int) -> dict:
    path = row["path"]
    out = {"size_bytes": None, "width": None, "height": None, "mode": None, "format": None,
           "frames": None, "scan_error": None, "xmp_sidecar": sidecar_of(path), "mtime_ns": None,
           "head_digest": None}
    if why := not_read_here(path):
        out["scan_error"] = why
        out["size_bytes"] = None if is_url(path) or not os.path.exists(path) else os.path.getsize(path)
        return out
    if not is_url(path) and os.path.exists(path) and not os.path.isfile(path):  # a catalogue's pipe
        out["scan_error"] = "not a regular file (a pipe, a socket, a device, a folder)"
        return out
    if not is_url(path) and os.path.islink(path) and not os.path.exists(path):
        out["scan_error"] = not_a_file(path).removeprefix("a ")  # "broken symbolic link: ..."
        return out
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as f:
                out["size_bytes"] = f.size
                h = read_header(f, max_pixels)
        else:
            st = os.stat(path)
            out.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, head_digest=head_digest(path))
            h = read_header(path, max_pixels)
        out.update(width=h.width, height=h.height, mode=h.mode, format=h.format, frames=h.frames,
                   ours=h.ours)
    except DecodeError as e:
        out["scan_error"] = str(e)
    except FileNotFoundError as e:  # a catalogue row's file: not there, which is not unreadable
        out["scan_error"] = f"missing: {e.strerror or e}"
    except (OSError, ValueError) as e:
        out["scan_error"] = f"unreadable: {getattr(e, 'strerror', None) or e}"
    except Exception as e:  # a malformed header may raise anything: that file's row, not the scan
        out["scan_error"] = f"unreadable header: {type(e).__name__}: {e}"
    return out


def _safe_rel(rel: str) -> str:
    """A source's relative path as an output may be named: a backslash, legal in a Linux or
    macOS file name, is a folder separator to Windows and to the tools that copy OUTDIR on."""
    return rel.replace("\\", "_")


def _fold(name: str) -> str:
    """A name as a Mac's or Windows' disk compares it: case aside, and Café in either Unicode
    form (NFC, NFD) the same."""
    import unicodedata

    return unicodedata.normalize("NFC", name).casefold()


def _out_stems(rels: list[str]) -> list[str]:
    """Output name without extension: the source's, unless two sources share a stem
    (scan.jpg and scan.tif in one folder), which then keep their extension to stay apart; a
    name that still meets another (a\\b.png beside a_b.png) is numbered. Names are told apart
    as a Mac's or Windows' disk does, case aside: Photo.jpg and photo.tif would both write
    photo.png there, one over the other."""
    safe = [_safe_rel(r) for r in rels]
    stems = [str(PurePosixPath(r).with_suffix("")) for r in safe]
    seen: dict[str, int] = {}
    for s in stems:
        seen[_fold(s)] = seen.get(_fold(s), 0) + 1
    out, taken = [], set()
    for r, s in zip(safe, stems, strict=True):
        n, cand = 1, r if seen[_fold(s)] > 1 else s
        while _fold(cand) in taken:
            cand, n = f"{s}~{n}", n + 1
        out.append(cand)
        taken.add(_fold(cand))
    return out


def scan(sources: Iterable[str], output: str | os.PathLike, shard_size: int | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS, relative: bool = False, threads: int = 8,
         progress: bool = True, log=lambda msg: None, path_column: list[str] | None = None,
         encoding: str | None = None, extend: str | None = None, delimiter: str | None = None,
         report: str | os.PathLike | None = None, path_prefix: list[str] | None = None) -> pa.Table:
    """Write the manifest; returns it. Unreadable entries stay, with scan_error set. Folders
    that are a colorize OUTDIR (job.json beside results/) are left out, and said so.

    extend: an earlier manifest of the same archive. Its rows are kept exactly (same ids, shards
    and output names, so a job's committed shards stay valid) and only files it does not hold
    are added, in new shards after its last: this month's scans.

    Folders and catalogues together: every file found, with its catalogue row's cells where it
    has one; what does not match (files no catalogue lists, rows whose file is missing, files
    listed twice) is summarised through `log`, and listed in the CSV `report` if given."""
    if shard_size is not None and shard_size < 1:
        raise ScanError("--shard-size must be >= 1")
    old = read_manifest(extend) if extend else None  # once: its rows and what it was read with
    meta = (old.schema.metadata or {}) if old is not None else {}
    given, path_prefix = path_prefix or [], _prefixes(path_prefix, meta, extend, log)
    given_columns, path_column = path_column or [], _path_columns(path_column, meta, log)
    by_path, found = _collect(sources, dict(path_column=path_column, encoding=encoding, delimiter=delimiter,
                                            log=log, path_prefix=path_prefix), log)
    _unused_path_columns(given_columns, found, log, json.loads(meta.get(b"path_columns", b"[]")))
    _unused_prefixes(given, found, log)  # (one kept from the manifest may be for another catalogue)
    if not by_path:
        raise ScanError("no image files found in " + ", ".join(map(str, sources)))
    real = sorted(by_path)
    rels = _relative_paths([_named(by_path, k) for k in real], [os.path.realpath(str(x)) for x in sources
                                  if not is_url(str(x)) and Path(x).is_dir()])
    order = sorted(range(len(real)), key=lambda i: rels[i])
    real, rels = [real[i] for i in order], [rels[i] for i in order]
    if old is not None:
        relative = _kept_relative(old, extend, output, relative, log)
        real, rels, old = _extend(old, extend, real, rels, found, log, _looked_at(sources, by_path), max_pixels)
        kept = int((old.schema.metadata or {}).get(b"shard_size", shard_size or SHARD_SIZE))
        if shard_size not in (None, kept):  # the job's done shards keep theirs: so do the new
            log(f"--shard-size {shard_size} not taken: the new files go in shards of {kept}, as "
                f"{extend}'s (a manifest keeps its shard size; --fresh starts over with {shard_size})")
        shard_size = kept
    shard_size = shard_size or SHARD_SIZE
    columns = _catalogue_columns(found.catalogues, old)
    if old is not None and found.catalogues:
        old = _recatalogue(old, extend, by_path, columns, found, log)
    with ThreadPoolExecutor(threads) as ex:  # header reads are I/O bound
        it = ex.map(lambda r: _probe(by_path[r], max_pixels), real)
        probes = list(tqdm(it, total=len(real), desc="scan", unit="file",
                           disable=None if progress else True))
    real, rels, probes = _without_ours(real, rels, probes, found, log, extending=old is not None)
    if old is not None:
        _say_extended(found, len(real), log)
    old = _sidecars_read(probes, found, old, (extend, output) if old is not None else None)
    table = _new_rows(real, rels, probes, by_path, found, old, (output, relative), shard_size, columns)
    if old is not None:
        table = pa.concat_tables([old.replace_schema_metadata(None), table],
                                 promote_options="permissive")
    table = table.replace_schema_metadata(_metadata(sources, shard_size, columns, found, old, path_prefix,
                                                         path_column))
    _summarise(table, columns, found, report, log)
    _write(table, output)
    return table


def _new_rows(real: list[str], rels: list[str], probes: list[dict], by_path: dict, found: ScanReport,
              old: pa.Table | None, where: tuple[str, bool], shard_size: int, columns: list[str]) -> pa.Table:
    """The rows of the files this scan adds, in shards after an earlier manifest's last."""
    output, relative = where
    stored = [_stored(_named(by_path, r), output, relative) for r in real]
    first_shard, stems = _after(old, _out_stems(rels), [_safe_rel(r) for r in rels])
    cols: dict[str, list] = {"image_id": [image_id(s) for s in stored],
                             "shard": [first_shard + i // shard_size for i in range(len(real))],
                             "path": stored, "rel_path": rels, "out_stem": stems}
    for k in PROBED:
        cols[k] = [p[k] for p in probes]
    # whole, as `path` is (found under a folder named relative to where the scan ran, it was
    # kept so, and read from the manifest's folder by the run: another file, or none)
    cols["xmp_sidecar"] = pa.array([_stored(_whole(p["xmp_sidecar"]), output, relative) for p in probes],
                                   pa.string())
    cols["source_state"] = pa.array([None] * len(real), pa.string())
    cols["catalogue_order"] = pa.array([None if by_path[r].get("_order") is None
                                        else by_path[r]["_order"] + found.order_offset
                                        for r in real], pa.int64())
    for c in columns:
        cols[stored_name(c)] = pa.array([by_path[r]["_cells"].get(c) for r in real], pa.string())
    return pa.table(cols)


def _kept_relative(old: pa.Table, extend: str, output, relative: bool, log) -> bool:
    """Whether the new rows' paths are relative: as the manifest's are (one whose new rows were
    absolute would no longer move with its scans; one with a few relative rows could not be
    moved at all, nor left where it is and the scans moved)."""
    paths = [p for p in old.column("path").to_pylist() if not is_url(p)]
    was = bool(paths) and not any(os.path.isabs(p) for p in paths)

    def folder(p):
        return os.path.dirname(str(p) if is_url(str(p)) else os.path.realpath(str(p)))
    if any(not os.path.isabs(p) for p in paths) and folder(extend) != folder(output):
        # its rows kept as they are would name files from another folder: every one not found
        raise ScanError(f"{extend} holds paths relative to its own folder ({folder(extend)}): "
                        f"extended into another folder, they would name no file; write it "
                        f"beside it (-o {os.path.join(os.path.dirname(str(extend)), os.path.basename(str(output)))})")
    if relative and paths and not was:
        log(f"--relative not taken: {extend} stores its paths whole, and keeps them so (--fresh "
            "starts it over with paths relative to it)")
    return was or (relative and not paths)


def _path_columns(given: list[str] | None, meta: dict[bytes, bytes], log) -> str:
    """The names --path-column gives, as 'A||B' (each catalogue takes the first it has): those
    given, then those the manifest it extends was read with (a rescan without them would be
    refused for want of a 'path' column); 'path' where there are none."""
    names = [n for g in given or [] for n in alternatives(g) if n]
    was = json.loads(meta.get(b"path_columns", b"[]"))
    if b"path_columns" not in meta:  # a manifest from before they were kept: its catalogue's
        first = json.loads(meta.get(b"catalogue", b"{}")).get("path_column")
        was = [first] if first and first != "path" else []
    if kept := [x for x in was if x not in names]:
        if names:
            log(f"catalogue paths read from {' or '.join(map(repr, kept))} too, as the manifest was")
        names += kept
    return OR.join(dict.fromkeys(names)) or "path"


def _prefixes(given: list[str] | None, meta: dict[bytes, bytes], extend: str | None, log) -> list[str]:
    """The --path-prefix the scan reads catalogues with: those given, and those the manifest it
    extends was read with (a rescan without them would find none of those files, and add their
    records again as missing beside the rows that hold them)."""
    given = list(given or [])
    was = json.loads(meta.get(b"path_prefix", b"[]"))
    if kept := [x for x in was if x not in given]:
        log(f"catalogue paths read with --path-prefix {', '.join(map(repr, kept))} too, as {extend} was")
    return given + kept


def _unused_path_columns(given: list[str], found: ScanReport, log, before: list[str]) -> None:
    """A --path-column name no catalogue read here has, nor any the manifest was read with
    (mistyped: it reads nothing): said. May's 'Datei' given again with June's catalogue alone
    is no mistake (the refusal's own advice names both)."""
    used = {c.path_column for c in found.catalogues if c.columns}
    if used and (idle := [n for g in given for n in alternatives(g) if n not in used and n not in before]):
        log(f"--path-column {' or '.join(map(repr, idle))}: no catalogue read here has it "
            f"(their paths are read from {' and '.join(map(repr, sorted(used)))})")


def _unused_prefixes(prefixes: list[str], found: ScanReport, log) -> None:
    """A --path-prefix no path cell begins with (mistyped?): said, as it changes nothing."""
    used = {r.get("_prefix") for c in found.catalogues for r in c.rows}
    for x in prefixes:
        if x not in used:
            log(f"--path-prefix {x!r}: no catalogue path read here begins with it")


def _whole(path: str | None) -> str | None:
    return path if not path or is_url(path) else os.path.abspath(path)


def _stored(path: str | None, manifest, relative: bool) -> str | None:
    """A path as the manifest keeps it: relative to the manifest's folder with --relative."""
    if path is None or not relative or is_url(path) or is_url(str(manifest)):
        return path
    return os.path.relpath(path, Path(manifest).resolve().parent)


def _without_ours(real: list[str], rels: list[str], probes: list[dict], found: ScanReport,
                  log, extending: bool = False) -> tuple[list[str], list[str], list[dict]]:
    """Files this tool wrote (their metadata says machine-colorized: a quick look saved among
    the scans, a copy of an OUTDIR) are not originals: left out, and said."""
    keep = [i for i, p in enumerate(probes) if not p.get("ours")]
    if len(keep) == len(real):
        return real, rels, probes
    found.ours = [real[i] for i, p in enumerate(probes) if p.get("ours")]
    log(f"left out {_n(len(found.ours), 'file')} that colorize wrote (machine-colorized, their "
        f"metadata says; not originals): {'; '.join(found.ours[:5])}"
        + (" ..." if len(found.ours) > 5 else ""))
    ours = set(found.ours)
    found.uncatalogued = [p for p in found.uncatalogued if _real(p) not in ours]  # said once
    if not keep and not extending:
        raise ScanError("no originals found: every image found is one that colorize wrote")
    return [real[i] for i in keep], [rels[i] for i in keep], [probes[i] for i in keep]


def _sidecars_read(probes: list[dict], found: ScanReport, old: pa.Table | None = None,
                   where: tuple[str, str] | None = None) -> pa.Table | None:
    """XMP sidecars found beside their pictures are read with them (the worker merges each into
    its picture's metadata): not files left out. Extending (old, and where: the manifest it
    extends and the one written), those of the files done before too (a rescan called them
    "not pictures"); and an .xmp with no picture of its name (its picture renamed without it:
    its rights reach no output) is said apart. Returns old, with any sidecar put since."""
    found.sidecars = {_real(p["xmp_sidecar"]) for p in probes if p.get("xmp_sidecar")}
    if old is not None and where is not None:
        old = _old_sidecars(old, where, found)
    found.others = [p for p in found.others if is_url(p) or _real(p) not in found.sidecars]
    found.orphan_xmp = [p for p in found.others if p.lower().endswith(".xmp")]
    found.others = [p for p in found.others if not p.lower().endswith(".xmp")]
    return old


def _old_sidecars(old: pa.Table, where: tuple[str, str], found: ScanReport) -> pa.Table:
    """The sidecars of the rows done before: those recorded, and one put beside its picture
    since (taken into the row, so that a redo reads it; said, as the output lacks it)."""
    manifest, output = where
    paths, col = old.column("path").to_pylist(), _cells(old, "xmp_sidecar")
    gone = set(found.gone)
    xmps = {_real(p) for p in found.others if p.lower().endswith(".xmp")}
    names = {os.path.basename(p) for p in xmps}  # which rows can matter, before any system call
    mended = False
    for i, (p, x) in enumerate(zip(paths, col, strict=True)):
        if not (os.path.basename(x) in names if x else xmps):  # (a million rows: none made real for nothing)
            continue
        real = _key(manifest, p)
        if is_url(real) or real in gone:
            continue
        if x:  # one an earlier version kept relative to where its scan ran: kept whole now
            if (where := sidecar_where(manifest, p, x)) != resolve_path(manifest, x):
                col[i], mended = where, True
            found.sidecars.add(_real(where))
            continue
        if xmps & set(_sidecar_names(real)) and (now := sidecar_of(real)):
            col[i] = _stored(_whole(now), output, not os.path.isabs(p))
            found.sidecars.add(_real(now))
            found.sidecars_since.append(real)
    return _put(old, "xmp_sidecar", pa.array(col, pa.string())) if found.sidecars_since or mended else old


def _metadata(sources, shard_size: int, columns: list[str], found: ScanReport,
              old: pa.Table | None, path_prefix: list[str] | None = None,
              path_column: str = "path") -> dict:
    """The manifest's own record: its shard size, the folders scanned (a run refuses an OUTDIR
    inside them: the next scan would take the outputs for scans), and its catalogue's shape."""
    folders = [os.path.realpath(str(x)) for x in sources if not is_url(str(x)) and Path(x).is_dir()]
    # an extended manifest keeps the folders its earlier scans read: its files are still there
    # (a later scan of another folder alone let an OUTDIR into the first one)
    was = json.loads(((old.schema.metadata or {}) if old is not None else {}).get(b"source_folders", b"[]"))
    folders = [*was, *(f for f in folders if f not in was)]
    meta = {"shard_size": str(shard_size), "source_folders": json.dumps(folders),
            "unread_folders": json.dumps([p for p, _ in found.unread_folders]),
            "path_prefix": json.dumps(path_prefix or [], ensure_ascii=False),  # a rescan reads with it
            "path_columns": json.dumps([] if path_column == "path" else alternatives(path_column),
                                       ensure_ascii=False)}
    if found.changed_seen:
        meta["changed_seen"] = json.dumps(found.changed_seen, ensure_ascii=False)
    if columns:
        # the shape of the first catalogue with columns: a plain list of paths scanned into the
        # manifest later has none, and must not make the export comma-separated
        first = next((c for c in found.catalogues if c.columns), None)
        was = catalogue_info(old)
        info = {k: v for k, v in was.items() if k != "columns"}
        # each catalogue's own columns, in the order read (a manifest from before kept their
        # union: one): a later delivery's name for the accession number is read where the
        # first's is empty (writers.resolve_columns)
        sets = info.get("sets") or ([was["columns"]] if was.get("columns") else [])
        for c in found.catalogues:
            if c.columns and list(c.columns) not in sets:
                sets = [*sets, list(c.columns)]
        info["sets"] = sets
        if first is not None and _same_catalogue(info, first):
            # a later delivery's catalogue (its own separator, its own path column) leaves the
            # export in the shape the database takes it in: the first catalogue's
            info.update(path_column=first.path_column, delimiter=first.delimiter, encoding=first.encoding,
                        folder=os.path.dirname(os.path.realpath(first.path)), file=os.path.realpath(first.path))
            if first.written:
                info["written"] = first.written
            # its records with no file (an empty path cell): in no row, so the export says so
            info["no_file"] = sum(len(c.nofile) for c in found.catalogues)
        info["listed_twice"] = _listed_twice(info.get("listed_twice"), found)
        meta["catalogue"] = json.dumps({"columns": columns, **info}, ensure_ascii=False)
    return meta


def _listed_twice(was, found: ScanReport) -> dict[str, list[int]]:
    """Per catalogue (its real path), the lines of its rows that name a file an earlier row
    names, with other cells (another accession number): the file's row is the first's, so
    theirs is in no row, and the export says so. Those of each catalogue read now replace its
    own; another delivery's, not read this time, stay (a trial's June duplicate went unsaid)."""
    out = dict(was) if isinstance(was, dict) else {}
    for c in found.catalogues:
        out.pop(os.path.realpath(c.path), None)
    for a, b in found.duplicates:
        if a["_cells"] != b["_cells"]:
            out.setdefault(os.path.realpath(b["_from"].path), []).append(b["_line"])
    return out


def _same_catalogue(info: dict, c: Catalogue) -> bool:
    """Whether a catalogue read now is the one whose shape the manifest keeps (or none is kept
    yet): by its file, or, for a manifest from before that was recorded, by its folder and path
    column."""
    if "delimiter" not in info:
        return True
    if "file" in info:
        return info["file"] == os.path.realpath(c.path)
    return (info.get("folder") == os.path.dirname(os.path.realpath(c.path))
            and info.get("path_column") == c.path_column and info.get("delimiter") == c.delimiter
            and info.get("encoding") == c.encoding)


def _summarise(table: pa.Table, columns: list[str], found: ScanReport, report, log) -> None:
    """What the scan says, once the whole manifest is known (the probes find the sidecars):
    with accession numbers that name several files, over the whole manifest (this delivery's
    record beside an earlier one's), by the column a run takes for them unless told another."""
    sets = catalogue_info(table).get("sets")
    column = parse_columns(resolve_columns("auto", columns, sets=sets)).get("identifier")
    if column and all(stored_name(c) in table.column_names for c in alternatives(column)):
        found.shared_column = column
        cells = table.select([stored_name(c) for c in alternatives(column)]).to_pylist()
        found.shared = shared_identifiers([first_cell(column, lambda c: r[stored_name(c)]) for r in cells],  # noqa: B023
                                          table.column("path").to_pylist())  # each delivery's own folder
    for line in found.lines():
        log(line)
    if report:
        log(f"wrote {report}: {found.write_csv(report)} lines (files left out, mismatches "
            "between files and catalogue, accession numbers that name several files)")


@dataclass
class ScanReport:
    """What a scan found beside the rows: the catalogues read, and every file or record that
    did not match one to one (none of them dropped silently)."""

    catalogues: list[Catalogue] = field(default_factory=list)
    uncatalogued: list[str] = field(default_factory=list)  # in a folder, in no catalogue
    # extending: of those, files done before: their rows keep the cells an earlier catalogue gave
    unlisted_before: list[str] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # catalogue rows whose file is not there
    duplicates: list[tuple[dict, dict]] = field(default_factory=list)  # (kept, repeated) rows
    changed: list[str] = field(default_factory=list)  # extending: in the old manifest, size differs
    gone: list[str] = field(default_factory=list)  # extending: in the old manifest, not found now
    # extending: files done before whose catalogue row says something else now: (path, column,
    # was, now), one per changed cell; the manifest takes the catalogue's
    recatalogued: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # in a folder: not pictures (notes, sidecars)
    ours: list[str] = field(default_factory=list)  # images this tool wrote: not originals
    order_offset: int = 0  # extending with a month's catalogue alone: its records come after
    unusable: list[tuple[str, str]] = field(default_factory=list)  # (path, why) found, not a row
    unread_folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, why) not listed
    sidecars: set[str] = field(default_factory=set)  # XMP sidecars beside pictures: read with them
    orphan_xmp: list[str] = field(default_factory=list)  # .xmp files with no picture of their name
    sidecars_since: list[str] = field(default_factory=list)  # extending: done before, a sidecar since
    links: list[tuple[str, str]] = field(default_factory=list)  # (link, what it is) not a row itself
    changed_before: int = 0  # extending: changed, as an earlier scan said (changed_seen)
    extended: dict = field(default_factory=dict)  # extending: what _say_extended says
    # extending: stored path -> its size now, or "size:head digest" (changed at the same size)
    changed_seen: dict[str, object] = field(default_factory=dict)
    shared: list[dict] = field(default_factory=list)  # shared_identifiers: one number, several files
    shared_column: str = ""

    def lines(self, limit: int = 5) -> list[str]:
        """The short summary a scan prints."""
        out = []
        for c in self.catalogues:
            sep = DELIMITER_NAMES.get(c.delimiter, repr(c.delimiter))
            blank = f" ({len(c.nofile)} naming no file)" if c.nofile else ""
            # a list of paths alone has no columns to speak of ("2 rows, 0 columns" puzzled)
            n = len(c.rows) + len(c.nofile)
            out.append(f"{c.path}: {plural(n, 'row')}{blank}, {plural(len(c.columns), 'column')} "
                       f"({sep}-separated, {c.encoding})" if c.columns else
                       f"{c.path}: a list of {plural(n, 'path')}{blank}")

        def some(items):
            return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)"
                                               if len(items) > limit else "")
        out += _sidecars_said(self.sidecars, limit)
        if self.orphan_xmp:  # a picture renamed without its sidecar: its rights reach no output
            out.append(f"{_n(len(self.orphan_xmp), 'XMP sidecar')} with no picture of "
                       f"{'its' if len(self.orphan_xmp) == 1 else 'their'} name (a picture renamed "
                       "without it? name it as its picture, NAME.xmp or NAME.EXT.xmp, and scan "
                       "again; --report lists them: orphan_xmp): " + some(self.orphan_xmp))
        if self.sidecars_since:
            out.append(f"{_n(len(self.sidecars_since), 'file')} scanned before now "
                       f"{'has an XMP sidecar' if len(self.sidecars_since) == 1 else 'have XMP sidecars'}"
                       ": taken into the manifest; the outputs made before lack "
                       "its rights and caption until redone (colorize run -o OUTDIR --redo FILE): "
                       + some(self.sidecars_since))
        if self.unusable:
            out.append(f"{_n(len(self.unusable), 'file')} left out: " + some(
                [f"{p}: {why}" for p, why in self.unusable]))
        if self.unread_folders:
            out.append(f"{_n(len(self.unread_folders), 'folder')} could not be read, so none of "
                       "its pictures is in the manifest (make it readable and scan again; the "
                       "audit says so until then): " + some([f"{p}: {why}" for p, why in self.unread_folders]))
        if self.links:
            out.append(f"{_n(len(self.links), 'symbolic link')} not a row of {'its' if len(self.links) == 1 else 'their'} own: "
                       + some([f"{p}: {why}" for p, why in self.links]))
        if self.others:
            exts = Counter(os.path.splitext(p)[1].lower() or "no extension" for p in self.others)
            out.append(f"{_n(len(self.others), 'file')} left out: not pictures ("
                       + ", ".join(f"{n} {e}" for e, n in exts.most_common()) + "; --report "
                       f"lists them): {some([Path(p).name for p in self.others])}")
        if self.uncatalogued:
            out.append(f"{_n(len(self.uncatalogued), 'file')} found but not in the catalogue "
                       f"(in the job, with no catalogue columns): {some(self.uncatalogued)}")
        if self.unlisted_before:
            out.append(f"{_n(len(self.unlisted_before), 'file')} scanned before {'is' if len(self.unlisted_before) == 1 else 'are'} "
                       "in no catalogue read now: each keeps the cells an earlier catalogue gave it "
                       "(a catalogue of new records alone leaves the earlier ones as they were; "
                       f"--report lists them: 'unlisted'): {some(self.unlisted_before)}")
        out += _missing_lines(self, some)
        nofile = [(c, r) for c in self.catalogues for r in c.nofile]
        if nofile:
            out.append(f"{_n(len(nofile), 'catalogue row')} {'names' if len(nofile) == 1 else 'name'}"
                       " no file (an empty path cell: nothing to colour; --report lists them): "
                       + some([f"{Path(c.path).name} {at(r)}" for c, r in nofile]))
        if self.duplicates:
            out.append(f"{_n(len(self.duplicates), 'file')} listed twice (the first row kept): "
                       + some([f"{b['path']} ({_where(a)} and {_where(b)}"
                               + (", the same details)" if a["_cells"] == b["_cells"] else
                                  f", different details: {_details(a)} / {_details(b)})")
                               for a, b in self.duplicates]))
        if self.shared:
            out.append(shared_said(self.shared, self.shared_column, limit))
        return out

    def write_csv(self, path: str | os.PathLike) -> int:
        """One line per mismatch (kind, path, catalogue, line, other line, detail: why a file was left
        out, the cell that changed); returns the count."""
        rows = [("uncatalogued", p, "", "", "", "") for p in self.uncatalogued]
        rows += [("unlisted", p, "", "", "", "") for p in self.unlisted_before]
        rows += [("not_a_picture", p, "", "", "", "") for p in self.others]
        rows += [("orphan_xmp", p, "", "", "", "") for p in self.orphan_xmp]
        rows += [("unusable", p, "", "", "", why) for p, why in self.unusable]
        rows += [("unread_folder", p, "", "", "", why) for p, why in self.unread_folders]
        rows += [("link", p, "", "", "", why) for p, why in self.links]
        rows += [("colorize_output", p, "", "", "", "") for p in self.ours]
        # a catalogued file scanned before and gone since is one line, "gone", at its record
        gone = {_whole(p) for p in self.gone}
        listed = {_whole(r["path"]): (_whole(r["_from"].path), r["_line"]) for r in self.missing}
        rows += [("missing", r["path"], _whole(r["_from"].path), r["_line"], "", "") for r in self.missing
                 if _whole(r["path"]) not in gone]
        rows += [("no_file", "", _whole(c.path), r["_line"], "", "") for c in self.catalogues for r in c.nofile]
        rows += [("duplicate", b["path"], _whole(b["_from"].path), b["_line"],
                  f"{_whole(a['_from'].path)}:{a['_line']}", "") for a, b in self.duplicates]
        rows += [("changed", p, "", "", "", "") for p in self.changed]
        rows += [("gone", p, *listed.get(_whole(p), ("", "")), "", "") for p in self.gone]
        rows += [("same_identifier", p, "", "", "", f"{self.shared_column}: {g['identifier']}")
                 for g in self.shared for p in g["paths"]]
        rows += [("recatalogued", p, "", "", "", f"{c}: {was!r} -> {now!r}") for p, c, was, now in self.recatalogued]
        # every path whole: as walked from a folder named relative, as the manifest holds it, or
        # real, the report mixed them (a sort or a join on the column found half)
        rows = [(k, _whole(p), *rest) for k, p, *rest in rows]
        # the catalogue's own separator: a ';' locale's Excel opens a ',' file as one column
        sep = next((c.delimiter for c in self.catalogues if c.delimiter in ",;\t"), ",")
        with open(path, "w", newline="", encoding="utf-8-sig") as f:
            w = csv.writer(f, delimiter=sep)
            w.writerow(["kind", "path", "catalogue", "line", "first listed at", "detail"])
            w.writerows(rows)
        return len(rows)


def _missing_lines(report: ScanReport, some) -> list[str]:
    """What the scan says of catalogue rows whose file is not there."""
    out = []
    # a file in a folder this user cannot search is not "not there": say which is which
    hidden = [r for r in report.missing if "://" not in r["path"] and _unsearchable(r["path"])]
    # a file done before and gone since keeps its row and output (said as "gone since");
    # told apart by identity, not by a list's `in` (a million rows renamed: quadratic)
    since, apart = set(report.gone), {id(r) for r in hidden}
    done = [r for r in report.missing if id(r) not in apart
            and (r["path"] if "://" in r["path"] else _real(r["path"])) in since]
    apart |= {id(r) for r in done}
    gone = [r for r in report.missing if id(r) not in apart]
    if gone:
        out.append(f"{_n(len(gone), 'catalogue row')} "
                   f"{'names' if len(gone) == 1 else 'name'} a file that is not there "
                   "(kept: each gets an error row): "
                   + some([f"{_where(r)} {r['path']}" for r in gone]))
    if done:
        out.append(f"{_n(len(done), 'catalogue row')} {'names' if len(done) == 1 else 'name'} a "
                   "file scanned before and gone since (its row and output are kept as they "
                   "were): " + some([f"{_where(r)} {r['path']}" for r in done]))
    if hidden:
        out.append(f"{_n(len(hidden), 'catalogue row')} {'names' if len(hidden) == 1 else 'name'} "
                   "a file in a folder this user cannot read (permission denied; kept: each "
                   "gets an error row): " + some([f"{_where(r)} {r['path']}" for r in hidden]))
    return out


def _sidecars_said(sidecars: set[str], limit: int) -> list[str]:
    """The scan's lines on the sidecars beside pictures: read with them, or, a pipe or a broken
    link of a sidecar's name (its picture's), no record to read."""
    out = []
    odd = sorted(p for p in sidecars if not is_url(p) and not os.path.isfile(p))
    why = {p: not_a_file(p) or "gone since the scan that paired it" for p in odd}
    if n := len(sidecars) - len(odd):
        out.append(f"{_n(n, 'XMP sidecar')} beside "
                   + ("its picture: read with it (its rights, caption and keywords go into "
                      "the output's XMP)" if n == 1 else "their pictures: read "
                      "with them (their rights, captions and keywords go into the outputs' XMP)"))
    if odd:
        out.append(f"{_n(len(odd), 'XMP sidecar')} beside {'its picture' if len(odd) == 1 else 'their pictures'} "
                   f"{'is' if len(odd) == 1 else 'are'} no file to read ({'; '.join(f'{p}: {why[p]}' for p in odd[:limit])}"
                   f"{f'; ... ({len(odd) - limit} more)' if len(odd) > limit else ''}): the "
                   f"output{'' if len(odd) == 1 else 's'} will lack {'its' if len(odd) == 1 else 'their'} "
                   "record (the rows say so) unless each is made a file before the run reads it")
    return out


def _n(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _where(r: dict) -> str:
    return f"{Path(r['_from'].path).name} {at(r)}"


def _collect(sources: Iterable[str], opts: dict, log) -> tuple[dict[str, dict], ScanReport]:
    """Every entry of the sources by real path (the same file named twice is one row), less the
    folders that are a colorize OUTDIR. Folders and catalogues merge in any order: a file a
    catalogue lists has the catalogue's cells, however it was also found."""
    by_path: dict[str, dict] = {}
    listed: dict[str, dict] = {}  # key -> the catalogue row kept
    on_disk: list[str] = []  # keys found by walking a folder
    report = ScanReport()
    for src in sources:
        for row in _expand(str(src), opts):
            if "_outdir" in row:
                log(f"left out {row['_outdir']}: it is a colorize OUTDIR (outputs, not scans)")
                continue
            if "_catalogue" in row:
                report.catalogues.append(row["_catalogue"])
                continue
            if "_other" in row:
                report.others.append(shown(row["_other"]))
                continue
            if "_unusable" in row:
                report.unusable.append((shown(row["_unusable"][0]), row["_unusable"][1]))
                continue
            if "_unread_folder" in row:
                report.unread_folders.append((shown(row["_unread_folder"][0]), row["_unread_folder"][1]))
                continue
            if "_link" in row:
                report.links.append((shown(row["_link"][0]), row["_link"][1]))
                continue
            key = row["path"] if is_url(row["path"]) else _real(row["path"])
            entry = by_path.setdefault(key, {"path": row["path"], "_cells": {}})
            if not is_url(key):
                _sighted(entry, row["path"])
            if "_from" not in row:
                if not row.get("_named"):
                    on_disk.append(key)
                continue
            if key in listed and bool(row.get("_respelt")) != bool(listed[key].get("_respelt")):
                row, key, entry = _spelt_exactly(row, key, by_path, listed, report)
            if key in listed:
                report.duplicates.append((listed[key], row))
                continue
            listed[key] = row
            entry["_order"] = len(listed)  # the catalogues' own order: the export's
            entry["_cells"] = row["_cells"]
            entry["_columns"] = row["_from"].columns  # a list of paths has none
            if not is_url(key) and not os.path.exists(key):
                report.missing.append(row)
    _name_links(by_path, report)
    for c in report.catalogues:
        _some_found(c, [r for r in report.missing if r["_from"] is c])
    if report.catalogues:
        report.uncatalogued = sorted(by_path[k]["path"] for k in set(on_disk) - listed.keys())
        read = {_real(str(c.path)) for c in report.catalogues}  # a catalogue beside its scans
        report.others = [p for p in report.others if is_url(p) or _real(p) not in read]
    return by_path, report


def _spelt_exactly(row: dict, key: str, by_path: dict, listed: dict, report: ScanReport):
    """Two catalogue rows on one file, one naming it exactly and one in another case or form
    (elsewhere.disk_spelling): the file is the exact row's, and the other names a file that is
    not there (a missing img_0001.jpg beside IMG_0001.jpg: its record kept as an error row, not
    dropped as listed twice, nor put on the other's file). (row, key, entry) to go on with."""
    if not row.get("_respelt"):  # the earlier row took the file by another spelling: given back
        other = listed.pop(key)
        other["path"] = other.pop("_respelt")
        okey = _real(other["path"])
        by_path[okey] = {"path": other["path"], "_cells": other["_cells"],
                         "_order": by_path[key].get("_order"), "_columns": by_path[key].get("_columns")}
        by_path[key]["_cells"] = {}
        listed[okey] = other
        report.missing.append(other)
        return row, key, by_path[key]
    row["path"] = row.pop("_respelt")
    key = _real(row["path"])
    return row, key, by_path.setdefault(key, {"path": row["path"], "_cells": {}})


def _some_found(c: Catalogue, missing: list[dict]) -> None:
    """Refuses a catalogue none of whose paths names a file: its paths are read from the wrong
    folder (or another machine's), and every record would become an error row beside the
    records done before, with the manifest overwritten (under --extend, no way back)."""
    if not c.rows or len(missing) < len(c.rows) or any(is_url(r["path"]) or _unsearchable(r["path"])
                                                       for r in c.rows):
        return  # a folder this user cannot search is said as such, its rows kept
    cells = [r["_cells"].get(c.path_column) or r.get("_as_written") or r["path"] for r in missing]
    where = Path(c.path).parent
    how = advice(cells, str(where), lambda root: (r["path"] for r in _expand(root) if "path" in r)) or (
        f"they look written on another machine, and no leading part of them left out finds them "
        f"under the catalogue's folder ({where}): is it in the scans' top folder"
        + (", or their disk not mounted here?" if any(x.startswith("/") for x in cells) else "?")
        if any(re.match(r"[A-Za-z]:|\\\\|/", x) for x in cells) else
        "the paths use backslashes (a Windows catalogue): write them with / on this system"
        if any("\\" in x for x in cells) else
        f"a relative path is read from the catalogue's own folder ({where}); keep it beside the "
        "scans or write paths from its folder")
    # the cell as the catalogue shows it (repr doubled a Windows path's backslashes)
    raise ScanError(f"none of {Path(c.path).name}'s {_n(len(c.rows), 'path')} names a file (line "
                    f"{at(missing[0]).removeprefix('line ')}: '{cells[0]}'): {how}; nothing written")


def catalogue_info(manifest: pa.Table | pa.Schema | None) -> dict:
    """What a manifest records of its catalogue: its columns as written, in order (stored under
    catalogue.stored_name), the path column's name, the separator and encoding it was read with."""
    if manifest is None:
        return {}
    meta = manifest.metadata or {} if isinstance(manifest, pa.Schema) else manifest.schema.metadata or {}
    return json.loads(meta.get(b"catalogue", b"{}"))


def _looked_at(sources, by_path: dict[str, dict]):
    """Whether this scan looked where a URL is: one it found or a catalogue row named, or one
    under a URL prefix it listed or a glob it matched. A URL of an earlier manifest that it did
    not look for (this month's catalogue alone) is not gone; a local file is asked the disk
    (_gone_now), which says more than where the scan looked."""
    import fnmatch

    folders, globs = [], []  # URL sources alone: a local file is asked the disk (_gone_now)
    for src in map(str, sources):
        if is_url(src) and Path(src).suffix.lower() not in LIST_EXTS:
            (globs if any(c in src for c in "*?[") else folders).append(src.rstrip("/") + "/")

    def matched(key: str, g: str) -> bool:  # glob's * stops at a folder (fnmatch's does not)
        return fnmatch.fnmatch(key, g) and ("**" in g or key.count("/") == g.count("/"))

    return lambda key: (key in by_path or any(key.startswith(f) for f in folders)
                        or any(matched(key, g.rstrip("/")) for g in globs))


def _extend(old: pa.Table, extend: str, real: list[str], rels: list[str], found: ScanReport,
            log, looked=lambda key: True, max_pixels: int = DEFAULT_MAX_PIXELS,
            ) -> tuple[list[str], list[str], pa.Table]:
    """The files an earlier manifest does not hold (its rows stay as they are); what changed
    and what is gone is noted in `found` and said, and the gone rows say so in the manifest
    (source_state, for the export and the audit)."""
    known = {_key(extend, p) for p in old.column("path").to_pylist()}
    # gone: not found now, or named by the catalogue but no longer on disk (renamed, deleted)
    absent = {r["path"] if is_url(r["path"]) else _real(r["path"]) for r in found.missing}
    # a catalogue row whose file was not there at the earlier scan either is not "gone": it is
    # still missing (its error row says so), and telling it apart keeps "gone" meaning a loss
    before = old.select(["path", "size_bytes"]).to_pydict()
    # (named by a catalogue read now, or by one read then: this month's catalogue alone does
    # not make last month's missing file "gone")
    never = {_key(extend, p) for p, n in zip(before["path"], before["size_bytes"], strict=True)
             if n is None} - (set(real) - absent)  # (real: a missing file's catalogue row too)
    found.gone = sorted(_gone_now(known, set(real), absent, never, looked))
    if found.catalogues:  # files done before, with an earlier catalogue's row, that no catalogue
        # read now lists: they keep its cells (not "no columns")
        if "catalogue_order" in old.column_names:
            order = old.column("catalogue_order").to_pylist()
        else:  # a manifest from before the column: a row had a record where it has a cell (a
            # file found in a folder alone was said to keep "the cells an earlier catalogue gave")
            any_cell = pa.array([False] * old.num_rows)
            for n in (stored_name(c) for c in read_catalogue_info(extend).get("columns", [])):
                if n in old.column_names:
                    any_cell = pc.or_(any_cell, pc.is_valid(old.column(n)))
            order = [0 if has else None for has in any_cell.to_pylist()]
        had = {_key(extend, p) for p, o in zip(old.column("path").to_pylist(), order, strict=True)
               if o is not None}
        found.unlisted_before = [p for p in found.uncatalogued if _key_of(p) in had]
        found.uncatalogued = [p for p in found.uncatalogued if _key_of(p) not in had]
    old = _note_changed(old, extend, set(real), found, log)
    keep = [i for i, r in enumerate(real) if r not in known]
    found.extended = {"manifest": extend, "done": len(known) - len(found.gone) - len(never),
                      "still": len(never)}
    states = _states(old, extend, found, looked)
    if "source_state" in old.column_names:  # gone at an earlier scan, there again now: said
        found.extended["back"] = [_key(extend, p) for p, w, n in zip(old.column("path").to_pylist(),
                                                        old.column("source_state").to_pylist(),
                                                        states.to_pylist(), strict=True)
                                  if w == "gone" and n is None]
    old = _put(old, "source_state", states)
    return [real[i] for i in keep], [rels[i] for i in keep], _found_again(old, extend, max_pixels, log)


def _say_extended(found: ScanReport, new: int, log) -> None:
    """What extending found, once the new files are known to be originals (a quick look saved
    among the scans was counted "1 new", then left out)."""
    e = found.extended
    still = f", {e['still']} still missing" if e["still"] else ""
    # each is said once (one redone since would be "changed" for ever): counted after, not named
    before = f" (and {found.changed_before} said at an earlier scan)" if found.changed_before else ""
    back = e.get("back") or []
    again = f", {len(back)} gone before found again" if back else ""
    log(f"extending {e['manifest']}: {plural(e['done'], 'file')} scanned before, "
        f"{new} new, {len(found.changed)} changed{before}, {len(found.gone)} gone{still}{again} (the "
        "rows of the changed and the gone are kept as they were)")
    if back:  # a trial's came back unsaid: its row and output are the job's again, as before
        log(f"found again: {', '.join(back[:5])}{' ...' if len(back) > 5 else ''} (no longer gone)")
    if found.changed:
        log(f"changed since: {', '.join(found.changed[:5])}{' ...' if len(found.changed) > 5 else ''}"
            "; to colorize them again: colorize run -o OUTDIR --redo FILE (one redone from its "
            "new bytes already needs nothing: `colorize audit OUTDIR --check-inputs` names the "
            "outputs still made from an original as it was)")
    if found.gone:  # renamed, moved or deleted: their outputs and rows stay as they were
        log(f"gone since: {', '.join(found.gone[:5])}{' ...' if len(found.gone) > 5 else ''} "
            "(--report lists them; a renamed file is also among the new)")


def missing_at_scan(scan_error: str | None) -> bool:
    """Whether a row's scan found no file there (a catalogue named it): missing, not unreadable
    (the probe's FileNotFoundError, as this and earlier versions wrote it)."""
    return bool(scan_error) and "No such file" in scan_error


def _found_again(old: pa.Table, manifest: str, max_pixels: int, log) -> pa.Table:
    """Rows whose file was missing at the earlier scan (a catalogue named it) and is there now
    (put back, copied in): read again, so that the manifest says what the file is. A job that
    ran keeps their error rows until they are redone, as the scan says."""
    t = old.select(["path", "size_bytes", "scan_error"]).to_pydict()
    back = [i for i, (p, n, e) in enumerate(zip(t["path"], t["size_bytes"], t["scan_error"], strict=True))
            if n is None and missing_at_scan(e) and not is_url(p)
            and os.path.isfile(resolve_path(manifest, p))]
    if not back:
        return old
    probes = {i: _probe({"path": resolve_path(manifest, t["path"][i])}, max_pixels) for i in back}
    for k in PROBED:
        col = _cells(old, k)
        for i, probe in probes.items():
            col[i] = probe[k]
        old = _put(old, k, pa.array(col, old.schema.field(k).type if k in old.column_names
                                    else pa.int64() if k == "mtime_ns" else pa.string()))
    # its sidecar, put back with it, carries the rights and caption its outputs are to keep;
    # kept as the row's path is (relative to the manifest with --relative)
    col = old.column("xmp_sidecar").to_pylist()
    for i, probe in probes.items():
        col[i] = _stored(probe["xmp_sidecar"], manifest, not os.path.isabs(t["path"][i]))
    old = _put(old, "xmp_sidecar", pa.array(col, pa.string()))
    names = [os.path.basename(t["path"][i]) for i in back]
    log(f"{_n(len(back), 'file')} missing at the earlier scan {'is' if len(back) == 1 else 'are'} "
        f"there now ({', '.join(names[:5])}{' ...' if len(back) > 5 else ''}): read again; a job "
        "that ran has error rows for them until redone: colorize run -o OUTDIR --redo FILE")
    return old


def _gone_now(known: set[str], real: set[str], absent: set[str], never: set[str], looked) -> set[str]:
    """Files of an earlier manifest gone now: a catalogue row read now names one that is not
    there; a local file no longer exists (this month's catalogue alone still finds a rename);
    a URL under a prefix this scan listed was not found. One still missing since the earlier
    scan (`never`) is not gone: its error row says so, and "gone" keeps meaning a loss."""
    out = known & absent
    for k in known - real - absent:
        if (looked(k) if is_url(k) else not os.path.lexists(k)):
            out.add(k)
    # a file in a folder this user cannot search may well be there: not a loss to record
    return {k for k in out - never if is_url(k) or not _unsearchable(k)}


def _key_of(path: str) -> str:
    """A path this scan found as by_path keys it: a URL as it is, a local path real."""
    return path if is_url(path) else _real(path)


def _states(old: pa.Table, manifest: str, found: ScanReport, looked) -> pa.Array:
    """An earlier manifest's source_state as this scan finds it: 'gone', None (there), or as it
    was for a URL this scan did not list (this month's catalogue alone)."""
    gone = set(found.gone)
    was = (old.column("source_state").to_pylist() if "source_state" in old.column_names
           else [None] * old.num_rows)
    keys = [_key(manifest, p) for p in old.column("path").to_pylist()]
    return pa.array(["gone" if k in gone else None if not is_url(k) or looked(k) else w
                     for k, w in zip(keys, was, strict=True)], pa.string())


def _unsearchable(path: str) -> bool:
    """Whether a path that does not resolve lies under a folder that exists but that this user
    may not search (no execute or read permission): its file may well be there."""
    d = os.path.dirname(path)
    while d and not os.path.isdir(d):
        parent = os.path.dirname(d)
        if parent == d:
            return False
        d = parent
    try:
        os.stat(os.path.join(d, os.path.relpath(path, d).split(os.sep)[0]))
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _key(manifest: str, stored: str) -> str:
    """An earlier manifest's path as this scan names its files (by_path's keys): real, or a URL."""
    return stored if is_url(stored) else _real(resolve_path(manifest, stored))


def _recatalogue(old: pa.Table, manifest: str, by_path: dict[str, dict], columns: list[str],
                 found: ScanReport, log) -> pa.Table:
    """An earlier manifest's rows with the cells their catalogue rows hold now: a corrected title
    or accession number reaches the export and the next outputs' XMP. Ids, shards and output
    names stay (the job goes on); a cell no catalogue gives this time (the file is not listed, or
    its catalogue has no such column) stays as it was; so does their catalogue_order, unless the
    whole catalogue was read again."""
    paths = old.column("path").to_pylist()
    rows = [by_path.get(_key(manifest, p)) for p in paths]
    for c in columns:
        name = stored_name(c)
        was = old.column(name).to_pylist() if name in old.column_names else [None] * len(paths)
        now = [r["_cells"].get(c) if r is not None and c in r.get("_columns", ()) else w
               for r, w in zip(rows, was, strict=True)]
        # an empty cell where there was none (an export brought back writes every column for
        # every row) is kept as written, but is no change: 30 'None -> ""' a trial was told of
        # and a path cell where there was none is the file listed now (a file the catalogue
        # lacked, its path filled in by an export brought back), not its record corrected
        listed = c in {k.path_column for k in found.catalogues}
        changed = [(resolve_path(manifest, p), c, w, n) for p, w, n in zip(paths, was, now, strict=True)
                   if (w or "") != (n or "") and not (listed and not w)]
        if not changed and was == now:
            continue
        found.recatalogued += changed
        col = pa.array([None if v is None else str(v) for v in now], pa.string())
        old = _put(old, name, col)
    # their place in the catalogues: as read now when the whole catalogue was read again (every
    # row that had a place is listed); else (this month's catalogue alone) the old rows keep
    # theirs and the new records come after them
    was = (old.column("catalogue_order").to_pylist() if "catalogue_order" in old.column_names
           else [None] * len(paths))
    now = [None if r is None else r.get("_order") for r in rows]
    if any(w is not None and n is None for w, n in zip(was, now, strict=True)):
        found.order_offset = max((w for w in was if w is not None), default=0)
    else:
        old = _put(old, "catalogue_order", pa.array(now, pa.int64()))
    if found.recatalogued:
        files = sorted({p for p, *_ in found.recatalogued})
        shown = "; ".join(f"{Path(p).name}: {c} {w!r} -> {n!r}" for p, c, w, n in found.recatalogued[:3])
        log(f"the catalogue changed for {_n(len(files), 'file')} scanned before ({shown}"
            f"{' ...' if len(found.recatalogued) > 3 else ''}): the manifest takes the new cells "
            "(export gives them at once); an output whose XMP holds a changed cell (a column the "
            "job writes there: its accession number, title...) keeps the old one until redone: "
            "`colorize audit OUTDIR` lists those, with the --redo line that mends them")
    return old


def _cells(t: pa.Table, name: str) -> list:
    """A column's cells, or nulls for a column a manifest from before does not have."""
    return t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows


def _put(t: pa.Table, name: str, col: pa.Array) -> pa.Table:
    return (t.set_column(t.column_names.index(name), name, col) if name in t.column_names
            else t.append_column(name, col))


def _note_changed(old: pa.Table, manifest: str, present: set[str], found: ScanReport, log) -> pa.Table:
    """Files of an earlier manifest that are still there but not as they were scanned: their
    size differs, or, the same size with a new time, their first and last bytes do (a rescan
    of a damaged or re-digitised original). Said once: what was seen is kept (the manifest's
    metadata, changed_seen) and a later scan says a file again only where it changed again;
    the rows keep the first scan's (their shards are the job's), but for the time of a file
    that is as it was (copied with a new time), so that the next scan need not read it again."""
    seen = json.loads((old.schema.metadata or {}).get(b"changed_seen", b"{}"))
    paths, sizes = old.column("path").to_pylist(), old.column("size_bytes").to_pylist()
    times, heads = _cells(old, "mtime_ns"), _cells(old, "head_digest")
    now: dict[int, object] = {}  # row -> what it is now (its size; or size:digest, the same size)
    recheck: dict[int, tuple[str, int]] = {}  # row -> (file, its time now)
    for i, p in enumerate(paths):
        real = _key(manifest, p)
        if real in present and not is_url(real) and sizes[i] is not None:
            try:
                st = os.stat(real)
            except OSError:
                continue
            if st.st_size != sizes[i]:
                now[i] = st.st_size
            elif heads[i] and times[i] is not None and st.st_mtime_ns != times[i]:
                recheck[i] = (real, st.st_mtime_ns)
    if len(recheck) >= 1000:  # an archive copied without its files' times: once, and said
        log(f"reading the first and last 64 KiB of {len(recheck):,} files whose time changed since "
            "the last scan (copied without their times?), to tell a rescanned original from the "
            "same bytes; the next scan need not")
    with ThreadPoolExecutor(8) as ex:  # reads, I/O bound: the same threads as the scan's probes
        digests = dict(zip(recheck, ex.map(head_digest, [r for r, _ in recheck.values()]), strict=True))
    for i, d in digests.items():
        if d is not None and d != heads[i]:
            now[i] = f"{sizes[i]}:{d}"
        elif d is not None:  # the same bytes with a new time: a copy, or touched
            times[i] = recheck[i][1]
    for i, was in sorted(now.items()):
        found.changed_seen[paths[i]] = was
        if seen.get(paths[i]) == was:
            found.changed_before += 1
        else:
            found.changed.append(_key(manifest, paths[i]))
    found.changed.sort()
    return _put(old, "mtime_ns", pa.array(times, pa.int64())) if recheck else old


def cells_now(manifest: str, image_ids, carried: dict[str, object]) -> dict[str, pa.ChunkedArray]:
    """The catalogue's cells for these images as the manifest holds them now (stored column name
    -> cells, in image_ids' order): a catalogue corrected and scanned again (--extend) is the
    record, though the results, and the outputs' XMP, keep the cells they were written with
    (`carried`, the fallback for an image the manifest no longer holds, or a manifest gone)."""
    import pyarrow.compute as pc

    carried = {n: pa.chunked_array([pa.array(v, pa.string())]) if isinstance(v, list)
               else v.cast(pa.string()) for n, v in carried.items()}
    if not carried:
        return {}
    try:
        m = read_manifest(manifest, columns=["image_id", *carried])
    except Exception:  # noqa: BLE001 - the manifest moved or is gone: the rows' cells are all there is
        return carried
    idx = pc.index_in(pa.array(image_ids, pa.string()) if isinstance(image_ids, list) else image_ids,
                      value_set=m.column("image_id"))
    return {n: pc.if_else(pc.is_null(idx), was, m.column(n).cast(pa.string()).take(idx))
            for n, was in carried.items()}


def source_states(manifest: str | pa.Table) -> dict[str, str]:
    """Per image id, its source_state where it has one ('gone': the last scan did not find its
    original); {} for a manifest made before the column was, or one that cannot be read (the
    caller that needs the manifest says so itself). A table already read is not read again."""
    try:
        m = manifest if isinstance(manifest, pa.Table) else read_manifest(manifest, columns=["image_id", "source_state"])
    except ScanError:
        return {}
    if "source_state" not in m.column_names:
        return {}
    return {i: s for i, s in zip(m.column("image_id").to_pylist(), m.column("source_state").to_pylist(),
                                 strict=True) if s}


def gone_ids(manifest: str) -> set[str]:
    """The ids of the rows whose original the last scan did not find, read where the column's
    statistics say they are (a status polled on a million-row manifest: most row groups hold
    none); none for a manifest made before the column was."""
    try:
        t = read_manifest(manifest, columns=["image_id"], filters=[("source_state", "=", "gone")])
    except ScanError:
        return set()
    return set(t.column("image_id").to_pylist())


def job_results(od, manifest: str) -> pa.Table:
    """A job's result rows as the export and the review page give them: of the manifest's
    shards only (a results file for another is not the job's: a copy), in the archive's own
    order (the catalogues' records as they were read, then the files no catalogue lists, by
    path: a later delivery's among the earlier, as the README says, not after them by shard).
    The manifest is read once; one that moved, or from before catalogue_order, gives every
    results file, by path."""
    import pyarrow.compute as pc

    m = None
    for cols in (["image_id", "shard", "catalogue_order"], ["image_id", "shard"]):
        try:
            m = read_manifest(manifest, columns=cols)
            break
        except ScanError:
            continue
    t = od.read_results(shards=None if m is None else set(pc.unique(m.column("shard")).to_pylist()))
    order = (m.column("catalogue_order").take(pc.index_in(t.column("image_id"),
                                                           value_set=m.column("image_id")))
             if m is not None and "catalogue_order" in m.column_names
             else pa.nulls(t.num_rows, pa.int64()))
    keys = [("catalogue_order", "ascending"), ("source_path", "ascending"), ("shard", "ascending")]
    return t.take(pc.sort_indices(t.select(["shard", "source_path"]).append_column(
        "catalogue_order", order), keys))  # nulls last: arrow's default


def read_catalogue_info(path: str | os.PathLike) -> dict:
    """catalogue_info of a manifest file, from its schema alone."""
    try:
        if is_url(path):
            import fsspec

            fs, p = fsspec.core.url_to_fs(str(path))
            return catalogue_info(pq.read_schema(p, filesystem=fs))
        return catalogue_info(pq.read_schema(path))
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as e:
        raise _unreadable(path, e) from None


def _unreadable(path, e: Exception) -> ScanError:
    """Why a manifest cannot be read, as its user reads it: not there, not a manifest at all
    (a photo, a CSV named .parquet), or damaged."""
    text = str(e)
    if isinstance(e, FileNotFoundError) or "No such file or directory" in text or "[Errno 2]" in text:
        return ScanError(f"manifest not found: {path}")
    if "magic bytes not found" in text:
        return ScanError(f"{path} is not a manifest: not a Parquet file, or one cut short (make one "
                         "with colorize scan SOURCES -o manifest.parquet; a job's damaged manifest "
                         "is made again by the same scan)")
    if (m := re.search(r"No match for FieldRef\.Name\((\w+)\)", text)) and not _has_columns(path, "image_id", "path"):
        return ScanError(f"{path} is not a manifest: it has no {m[1]!r} column ({_what_parquet(path)}); "
                         "make one with colorize scan SOURCES -o manifest.parquet")
    return ScanError(f"cannot read manifest {path}: {text.splitlines()[0] if text else type(e).__name__}")


def _names(path) -> set[str]:
    """A local Parquet file's column names, for a message about it; none where unreadable."""
    try:
        return set(pq.read_schema(path).names) if not is_url(path) else set()
    except Exception:  # noqa: BLE001 - only for a message
        return set()


def _has_columns(path, *names: str) -> bool:
    """Whether a Parquet file has a manifest's own columns (a manifest lacking an optional one
    is still one); a URL's is taken as yes (not read again for a message)."""
    return is_url(path) or set(names) <= _names(path)


def _what_parquet(path) -> str:
    """What a Parquet file that is not a manifest looks like it is, for the message saying so."""
    if {"output_path", "status", "image_id"} <= _names(path):
        return ("a run's results, or their export: the manifest a run was made from is the one "
                "its OUTDIR/job.json names")
    return "another table"


def _catalogue_columns(catalogues: list[Catalogue], old: pa.Table | None) -> list[str]:
    """Every catalogue's columns in their order (the first catalogue's first), and those of an
    extended manifest: a column inserted since takes its place in the catalogue's order, not
    the end."""
    info = catalogue_info(old)
    was = list(info.get("columns", [])) if info or old is None else [
        c for c in old.column_names if c not in CORE_COLUMNS]  # a manifest from before 0.4
    now: list[str] = []
    for c in catalogues:
        now += [k for k in c.columns if k not in now]
    if set(was) <= set(now):  # the whole catalogue read again: its order as it is now
        return now
    # this month's catalogue (fewer columns, some new): the earlier order stays, as a database
    # that maps columns by place reads it; a new column goes after its neighbour in the new one,
    # or before the next; one with neither (a catalogue of its own names) after the earlier
    # columns, not before them (a trial's export began with June's columns)
    out = list(was)
    # a path column the earlier catalogues have too (every one's "path") places nothing by it
    shared = {c.path_column for c in catalogues} & set(was)
    for i, k in enumerate(now):
        if k not in out:
            prev = next((now[j] for j in range(i - 1, -1, -1) if now[j] in out and now[j] not in shared), None)
            after = next((now[j] for j in range(i + 1, len(now)) if now[j] in out and now[j] not in shared), None)
            out.insert(out.index(prev) + 1 if prev is not None else
                       out.index(after) if after is not None else len(out), k)
    return out


def _after(old: pa.Table | None, stems: list[str], rels: list[str]) -> tuple[int, list[str]]:
    """Where new rows go after an earlier manifest: the first new shard, and output names that
    never take an old output's."""
    if old is None or not old.num_rows:
        return 0, stems
    taken = {_fold(t) for t in old.column("out_stem").to_pylist()}  # case aside, as above
    for i, (s, r) in enumerate(zip(stems, rels, strict=True)):
        n, cand = 1, s if _fold(s) not in taken else r
        while _fold(cand) in taken:
            cand, n = f"{s}~{n}", n + 1
        stems[i] = cand
        taken.add(_fold(cand))
    return max(old.column("shard").to_pylist()) + 1, stems


def _write(table: pa.Table, output: str | os.PathLike) -> None:
    """Whole or not at all: a local manifest via a temporary file and a rename."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP)
    if is_url(output):
        import fsspec

        fs, p = fsspec.core.url_to_fs(str(output))
        fs.pipe_file(p, buf.getvalue())
    else:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, out)
        except OSError as e:  # named as the user named it: the temporary name is ours alone
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(e.errno, e.strerror, str(out)) from None


def _relative_paths(paths: list[str], folders: list[str] = ()) -> list[str]:
    """Each path relative to the folder all of them share (URLs: to their common prefix), and
    no deeper than the folders scanned: the outputs mirror the tree under the folder the user
    named (a box of one subfolder keeps it, as the next month's second subfolder will)."""
    keys = [r.split("://", 1)[1] if is_url(r) else r for r in paths]
    try:
        root = os.path.commonpath([os.path.dirname(k) for k in keys] + list(folders))
    except ValueError:  # local and remote together: keep their full paths
        root = ""
    return [PurePosixPath(os.path.relpath(k, root) if root else k.lstrip("/")).as_posix()
            for k in keys]


def resolve_path(manifest: str | os.PathLike, stored: str) -> str:
    """A manifest's relative paths are relative to the manifest's folder (a URL is as it is)."""
    if "://" in stored or os.path.isabs(stored):
        return stored
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest)), stored))


def read_manifest(path: str | os.PathLike, columns: list[str] | None = None,
                  shard: int | None = None, filters: list | None = None) -> pa.Table:
    try:
        filters = [("shard", "=", shard)] if shard is not None else filters
        if is_url(path):
            import fsspec

            fs, p = fsspec.core.url_to_fs(str(path))
            return pq.read_table(p, columns=columns, filters=filters, filesystem=fs)
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowInvalid, OSError) as e:  # FileNotFoundError too
        raise _unreadable(path, e) from None


def shard_rows(path: str | os.PathLike, shard: int) -> tuple[pa.Table, list[dict]]:
    """One shard of a manifest, as a table and as rows, each row's `source` its path resolved
    (what a worker opens)."""
    table = read_manifest(path, shard=shard)
    rows = table.to_pylist()
    for r in rows:
        r["source"] = resolve_path(path, r["path"])
    return table, rows


def shard_digests(path: str | os.PathLike) -> dict[str, str]:
    """Per shard, a digest of what decides its outputs (ids, paths, output names, and their order,
    which decides the batches): a grown manifest whose old shards all keep their digests
    continues the same job."""
    t = read_manifest(path, columns=["image_id", "path", "out_stem", "shard"])
    t = t.take(pc.sort_indices(t, [("shard", "ascending")]))  # stable: rows keep their order
    shards = t.column("shard").to_numpy()
    cols = [t.column(c).to_pylist() for c in ("image_id", "path", "out_stem")]
    starts = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(shards)]
    out = {}
    for a, b in zip(starts[:-1], starts[1:], strict=True):  # per shard, whole columns at once
        h = hashlib.sha256()
        for c in cols:
            h.update("\x00".join(c[a:b]).encode("utf-8", "surrogateescape") + b"\x01")
        out[str(int(shards[a]))] = h.hexdigest()[:32]
    return out


def manifest_digest(digests: dict[str, str]) -> str:
    """The whole manifest's digest (ids, paths, output names, order, shards), from its
    shard_digests: the manifest is read once for both."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
