"""Catalogue paths written on another machine, read where the scans are; and what to say when a
catalogue's paths name no file here.

A museum's catalogue often names its files as the machine that made it kept them
(C:\\Museum\\Scans\\portraits\\00123.tif, \\\\server\\share\\..., /Volumes/Archive/...). With
`scan --path-prefix 'C:\\Museum\\Scans\\'` a cell that begins with that prefix (its separators
either way, its letters in either case, as Windows reads a path) is read as the rest of it from
the catalogue's own folder: portraits/00123.tif. The user says which prefix: the scan never
guesses a record onto a file (a guess puts one photograph's record on another of the same name,
IMG_0001.jpg in another folder; an archive would rather have the row missing, said). What the
scan does do, where a catalogue's paths name no file, is look and say: the prefix that would
find them, or where its names alone are found, as advice in the message."""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path


def parts_of(cell: str) -> list[tuple[str, int]]:
    """A path cell's parts (a drive, folders, the name), each with where it starts in the cell,
    whichever separator wrote them."""
    return [(m.group(), m.start()) for m in re.finditer(r"[^\\/]+", cell.strip()) if m.group() != "."]


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _start(path: str) -> str:
    """How a path begins: a server share, a root, or as a relative path does (a drive is a part)."""
    p = path.strip()
    return "share" if p[:2] in ("\\\\", "//") else "root" if p[:1] in ("\\", "/") else ""


def stripped(cell: str, prefixes: list[str]) -> tuple[str, str] | None:
    """(the prefix, the rest of the cell after it as a relative path with /) for the longest of
    `prefixes` the cell begins with, begun alike (a relative cell Volumes/x.tif is no
    /Volumes/...); None where none fits or the rest would climb out of the folder (..)."""
    parts = [p for p, _ in parts_of(cell)]
    for prefix in sorted(prefixes, key=lambda x: -len(parts_of(x))):
        head = [_key(p) for p, _ in parts_of(prefix)]
        if head and _start(cell) == _start(prefix) and [_key(p) for p in parts[:len(head)]] == head \
                and len(parts) > len(head):
            rest = parts[len(head):]
            return None if ".." in rest else (prefix, "/".join(rest))
    return None


def disk_spelling(path: str, listing: dict[str, dict[str, str]]) -> str | None:
    """The file a catalogue means when its path cell names it differently from the disk: in
    another Unicode normal form (macOS writes a-umlaut as a and a combining mark, Windows and
    most catalogues as one character), with a Windows catalogue's backslashes, or in another
    case (Windows and macOS ignore it: SCAN_0002.TIF is scan_0002.tif there). Each folder is
    listed once (listing caches it); None when no single file matches."""
    parts = Path(path.replace("\\", "/") if os.sep == "/" else path).parts
    cur = parts[0]
    for part in parts[1:]:
        nxt = os.path.join(cur, part)
        if not os.path.lexists(nxt):
            if cur not in listing:
                try:
                    names = os.listdir(cur)
                except OSError:
                    return None
                listing[cur] = {}
                for n in names:  # a name two entries share in NFC and case matches neither
                    key = unicodedata.normalize("NFC", n).casefold()
                    listing[cur][key] = "" if key in listing[cur] else n
            name = listing[cur].get(unicodedata.normalize("NFC", part).casefold())
            if not name:
                return None
            nxt = os.path.join(cur, name)
        cur = nxt
    return cur


SAMPLE = 2000  # the catalogue cells the advice tries


def advice(cells: list[str], root: str, lister: Callable[[str], Iterable[str]]) -> str | None:
    """What would find the files of cells that name none here: the prefix to leave out (the one
    that finds most), or, for names alone, where files of those names are under `root` (listed
    by `lister`, the scan's own walk). None when neither finds any."""
    tally: Counter = Counter()
    written: dict[tuple, str] = {}
    listing: dict[str, dict[str, str]] = {}
    every, cells = len(cells), cells[:SAMPLE]  # advice: a million rows need not all be tried
    for cell in cells:
        parts = parts_of(cell)
        for j in range(1, len(parts)):
            rest = os.path.join(root, *(p for p, _ in parts[j:]))
            # found as the scan finds it: in another case or Unicode form too (a trial was told
            # 1 of 4 where the prefix found 3)
            if os.path.exists(rest) or disk_spelling(rest, listing):
                key = tuple(_key(p) for p, _ in parts[:j])
                tally[key] += 1
                written.setdefault(key, cell[:parts[j][1]])
    if tally:
        key, n = max(tally.items(), key=lambda kv: (kv[1], -len(kv[0])))
        of = f"{len(cells)}" if every == len(cells) else f"the first {len(cells):,} (of {every:,})"
        return (f"they look written on another machine: with --path-prefix "
                f"'{written[key]}', {n} of {of} are found under {root}")
    alone = {_key(c.strip()): c.strip() for c in cells if len(parts_of(c)) == 1}
    if not alone:
        return None
    where: dict[str, list[str]] = {}
    for path in lister(root):
        if (k := _key(os.path.basename(path))) in alone:
            where.setdefault(k, []).append(os.path.relpath(path, root))
    if not where:
        return None
    name, paths = next(iter(where.items()))
    return (f"{len(where)} of its names alone are files in folders under {root} ('{alone[name]}' is "
            f"'{Path(paths[0]).as_posix()}'{' and more' if len(paths) > 1 else ''}): write each "
            "one's folders in its path cell, as it is from the catalogue's folder")
