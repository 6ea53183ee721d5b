"""Catalogue paths written on another machine or from another folder, found where the scans are.

A museum's catalogue often names its files as the machine that made it kept them
(C:\\Museum\\Scans\\portraits\\00123.tif, /Volumes/Archive/..., \\\\server\\share\\...), or by
name alone (00123.tif), while the catalogue now lies in the scans' folder on this machine. A row
not found as written is looked for under the catalogue's own folder:

- with a leading part of its path left out: the same part for every row it is left out of, and
  only a part that finds at least half of the catalogue's rows that carry it (a prefix that finds
  one row in fifty found it by chance: another folder's file of that name, the row's own file
  gone). Where two parts find a row, the shorter one left out wins: more of the path kept says
  more about which file it is.
- a cell that is a name alone: the one file of that name in the folder's tree, where that finds
  at least half of the catalogue's names alone (a catalogue of names; not a few files gone from
  beside it); a name that several files carry stays unmatched, said (which one is meant, the
  catalogue does not say).

A file some row names exactly is that row's and never another's. The cells are kept as written;
the scan says how many rows were found so, with an example."""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.client.catalogue import at


def parts_of(cell: str) -> list[str]:
    """A path cell's folders and name, whichever system wrote it: a drive (C:) and the leading
    separators of an absolute or server path say where it was, not what it names."""
    s = re.sub(r"^[A-Za-z]:", "", cell.strip().replace("\\", "/"))
    return [p for p in s.split("/") if p not in ("", ".")]


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def find_elsewhere(cat, lister: Callable[[str], Iterable[str]], log) -> None:
    """Rows of `cat` (catalogue.Catalogue) whose file is not where their cell says, looked for
    under the catalogue's folder; lister(folder) gives the picture files a scan of it would."""
    from pipeline.client.catalogue import disk_spelling

    root = str(Path(cat.path).parent)
    lost = [r for r in cat.rows if r["path"] and "://" not in r["path"] and not os.path.lexists(r["path"])]
    if not lost:
        return
    taken = {os.path.realpath(r["path"]) for r in cat.rows
             if r["path"] and "://" not in r["path"] and os.path.lexists(r["path"])}
    listing: dict[str, dict[str, str]] = {}

    def there(parts: list[str]) -> str | None:
        cand = os.path.join(root, *parts)
        return cand if os.path.lexists(cand) else disk_spelling(cand, listing)

    local = [r for r in cat.rows if r["path"] and "://" not in r["path"]]
    cells = {id(r): parts_of(r["_cells"].get(cat.path_column) or r["_as_written"]) for r in local}
    found = _by_prefix(local, lost, cells, there) | _by_name(local, lost, cells, root, lister, log, cat)
    done = []
    for r in lost:
        f = found.get(id(r))
        if f and os.path.realpath(f) not in taken:
            taken.add(os.path.realpath(f))
            r["_respelt"] = r.get("_respelt") or r["path"]  # given back if another catalogue names it exactly
            r["path"] = f
            done.append(r)
    if done:
        r = done[0]
        log(f"{cat.path}: {len(done)} of {len(lost)} path cells not found as written were found under "
            f"its folder ({at(r)}: '{r['_cells'].get(cat.path_column) or r['_as_written']}' is "
            f"'{os.path.relpath(r['path'], root)}'; a path of another machine or folder, or a name "
            "alone); the cells are kept as written")


def _by_prefix(local: list[dict], lost: list[dict], cells: dict, there) -> dict[int, str]:
    """Rows found with a leading part of their path left out (the module's first rule)."""
    carried: Counter = Counter()
    for r in local:
        parts = cells[id(r)]
        carried.update(tuple(map(_key, parts[:j])) for j in range(1, len(parts)))
    finds: dict[tuple, dict[int, tuple[int, str]]] = defaultdict(dict)
    for r in lost:
        parts = cells[id(r)]
        for j in range(1, len(parts)):
            if f := there(parts[j:]):
                finds[tuple(map(_key, parts[:j]))][id(r)] = (j, f)
    best: dict[int, tuple[int, str]] = {}
    for pre, hits in finds.items():
        if 2 * len(hits) < carried[pre]:
            continue
        for rid, (j, f) in hits.items():
            if rid not in best or j < best[rid][0]:
                best[rid] = (j, f)
    return {rid: f for rid, (_, f) in best.items()}


def _by_name(local: list[dict], lost: list[dict], cells: dict, root: str, lister, log, cat) -> dict[int, str]:
    """Rows that name a file alone, found as the one file of that name in the folder's tree."""
    alone = [r for r in lost if len(cells[id(r)]) == 1]
    if not alone:
        return {}
    wanted = {_key(cells[id(r)][0]) for r in alone}
    files: dict[str, list[str]] = defaultdict(list)
    for path in lister(root):
        if (k := _key(os.path.basename(path))) in wanted:
            files[k].append(path)
    out, several = {}, []
    for r in alone:
        hits = files.get(_key(cells[id(r)][0]), [])
        if len(hits) == 1:
            out[id(r)] = hits[0]
        elif hits:
            several.append((r, hits))
    if 2 * len(out) < sum(len(cells[id(r)]) == 1 for r in local):
        return {}  # the catalogue's names are mostly where it says: these few are gone
    if several:
        r, hits = several[0]
        log(f"{cat.path}: {len(several)} path cells name a file alone that several files in its "
            f"folder carry, and stay unmatched ({at(r)}: '{cells[id(r)][0]}' is "
            + " and ".join(f"'{os.path.relpath(h, root)}'" for h in hits[:3])
            + "); write their folders in the cells")
    return out
