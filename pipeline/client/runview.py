"""A run's images as the review page lists them: the results (with the catalogue's columns they
carry) and the curator's state, filtered, sorted, searched and paged in pyarrow (a run of 100,000
images pages in milliseconds). Re-read when a run commits another shard."""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.client.catalogue import stored_name
from pipeline.client.manifest import (
    cells_now,
    job_results,
    read_catalogue_info,
    resolve_path,
)
from pipeline.client.outdir import Outdir
from pipeline.client.reviews import COLOURED_BY, earlier

PAGE = 100
NEARLY_GRAY = 3.0  # an output's colourfulness under this looks gray (Hasler-Suesstrunk)
FILTERS = ("all", "not_reviewed", "accepted", "retouch", "rejected", "judged_earlier", "hinted",
           "hints_pending", "errors", "skipped", "nearly_gray")
ROW_COLUMNS = ["image_id", "shard", "source_path", "output_path", "status", "error", "width",
               "height", "input_kind", "bits", "notes", "colorfulness", "hints", "hints_digest",
               "hint_model", "redone", "output_sha256", "source_sha256", "checkpoint_sha256"]



def _scope(t: pa.Table, cols: list[str], column: str | None, value: str | None, q: str | None, folded):
    """The rows a column's value and a search keep (folded: a column without accents)."""
    scope = pa.repeat(True, t.num_rows)
    value, q = (value or "").strip(), (q or "").strip()  # a space typed or pasted around it
    if column and value and column in cols:  # no value yet: the column alone filters nothing
        # in one Unicode form: a Mac's catalogue writes é as e and its accent (NFD), a value
        # typed or picked is one character (NFC); "Crèche" found nothing
        import unicodedata

        cells = pc.utf8_lower(pc.utf8_normalize(pc.utf8_trim_whitespace(
            t.column(stored_name(column)).cast(pa.string())), "NFC"))
        scope = pc.and_(scope, pc.fill_null(pc.equal(cells, unicodedata.normalize("NFC", value).lower()), False))
    if q:
        q = _fold(q)
        hit = pa.repeat(False, t.num_rows)
        for name in ["source_path", *(stored_name(c) for c in cols)]:
            # a file the catalogue does not list has null cells: they match nothing
            hit = pc.or_(hit, pc.fill_null(pc.match_substring(folded(name), q, ignore_case=True), False))
        scope = pc.and_(scope, hit)
    return scope

class RunView:
    """Read-only view of OUTDIR's results; the curator's state is passed in per request."""

    def __init__(self, outdir: Outdir, per_page: int = PAGE):
        self.outdir = outdir
        self.per_page = per_page
        self._lock = threading.Lock()
        self._stamp = None
        self.table: pa.Table | None = None
        self._fold_cache: dict = {}
        self._touched = Touched()
        job = outdir.read_job()
        self.manifest = job["spec"]["manifest"]
        self.max_pixels = job["spec"].get("max_pixels")  # the job's: its sources are read under it
        try:
            self.info = read_catalogue_info(self.manifest)
        except Exception:  # the manifest moved since the run: the results carry the cells anyway
            self.info = {}
        self.by_id: dict[str, int] = {}
        self._columns: list[str] = []

    def columns(self) -> list[str]:
        """The catalogue's columns as written, in its order (those the results carry)."""
        self.current()
        return self._columns

    def _shard_stamp(self):
        """What says the results changed: each shard file's name, size and time."""
        where = self.outdir.store.full(Outdir.RESULTS)
        if "://" not in self.outdir.url:  # a local folder: one listing, no call per file
            try:
                return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                                    for e in os.scandir(where) if e.name.startswith("shard-")))
            except FileNotFoundError:
                return ()
        return tuple((f["name"], f.get("size"), f.get("mtime") or f.get("LastModified"))
                     for f in self.outdir.store.fs.ls(where, detail=True))

    def _manifest_stamp(self):
        """A catalogue corrected and scanned in (scan --extend) changes the manifest, not the
        results: its cells are the record the page shows, as the export gives them."""
        try:
            st = os.stat(self.manifest) if "://" not in self.manifest else None
        except OSError:
            return None
        return st and (st.st_size, st.st_mtime_ns)

    def current(self) -> pa.Table:
        """The results, re-read only when the committed shard files or the manifest changed."""
        stamp = (self._shard_stamp(), self._manifest_stamp())
        with self._lock:
            if stamp != self._stamp:
                t = job_results(self.outdir, self.manifest)
                t, self.info = _with_manifest_cells(t, self.manifest, self.info)
                self.table, self._stamp, self._fold_cache = t, stamp, {}
                self.by_id = {iid: i for i, iid in enumerate(t.column("image_id").to_pylist())}
                self._columns = [c for c in self.info.get("columns", []) if stored_name(c) in t.column_names]
            return self.table

    def source(self, image_id: str) -> str | None:
        r = self.row(image_id)
        return None if r is None else resolve_path(self.manifest, r["source_path"])

    def row(self, image_id: str) -> dict | None:
        t = self.current()
        i = self.by_id.get(image_id)
        return None if i is None else t.slice(i, 1).to_pylist()[0]

    def catalogue(self, row: dict, columns: list[str] | None = None) -> dict:
        return {c: row.get(stored_name(c)) for c in (self.columns() if columns is None else columns)}

    def page(self, state: dict[str, dict], filter: str = "all", column: str | None = None,
             value: str | None = None, sort: str | None = None, desc: bool = False,
             q: str | None = None, page: int = 0) -> dict:
        """One page of rows (per_page a page) and how many match, with the counts of every filter."""
        t, cols = self.current(), self.columns()
        masks = _masks(t, state, self._touched.of(t))
        # the column's value and the search scope the filters and their counts alike: a curator
        # working through one collection sees how much of it is left, not of the whole run
        scope = _scope(t, cols, column, value, q, lambda name: self._folded(t, name))
        masks = {k: pc.and_(pc.fill_null(m, False), scope) for k, m in masks.items()}
        mask = masks.get(filter, masks["all"])
        idx = pc.indices_nonzero(pc.fill_null(mask, False))
        key = stored_name(sort) if sort and sort in cols else sort
        if key and key in t.column_names:  # sort the matching rows' indices by one column alone
            idx = idx.take(_order(t.column(key).take(idx), desc))
        total = len(idx)
        sel = t.select([c for c in ROW_COLUMNS if c in t.column_names] + [stored_name(c) for c in cols])
        rows = []
        for r in sel.take(idx.slice(page * self.per_page, self.per_page)).to_pylist():  # only the page's rows
            s = state.get(r["image_id"], {})
            rows.append({**{k: r.get(k) for k in ROW_COLUMNS}, "catalogue": self.catalogue(r, cols),
                         "verdict": s.get("verdict"), "note": s.get("note"), "rev": s.get("rev") or {},
                         "curator_hints": len(s.get("hints") or []), "verdict_earlier": earlier(s, r)})
        counts = {k: int(pc.sum(pc.fill_null(m, False).cast(pa.int64())).as_py() or 0)
                  for k, m in masks.items()}
        return {"rows": rows, "total": total, "page": page, "pages": max(1, -(-total // self.per_page)),
                "counts": counts}

    def _folded(self, t: pa.Table, name: str):
        """A column without accents (Müller as Muller: as a search types it); once per reload."""
        if name not in self._fold_cache:
            self._fold_cache[name] = _fold_column(t.column(name))
        return self._fold_cache[name]

    def values(self, column: str, limit: int = 500) -> list[str]:
        """A catalogue column's values, the commonest first: what the page offers to filter by."""
        t = self.current()
        if column not in self.columns():
            return []
        counts = pc.value_counts(t.column(stored_name(column)).cast(pa.string()).drop_null())
        order = pc.sort_indices(counts.field("counts"), sort_keys=[("", "descending")]) if len(counts) else []
        return [v for v in counts.field("values").take(order).to_pylist() if v][:limit]


def _masks(t: pa.Table, state: dict, touched) -> dict:
    """Every filter's rows, as boolean arrays (only the images the curator touched are
    looked at one by one: touched, a Touched's of())."""
    n = len(t)
    verdict, n_hints, judged_earlier = [None] * n, [0] * n, [False] * n
    made = t.column("hints_digest").to_pylist()
    pending = [d is not None for d in made]  # no curator's hints, yet made with some
    if state:
        for i, iid in enumerate(t.column("image_id").to_pylist()):
            s = state.get(iid)
            if s is not None:
                verdict[i], n_hints[i] = s["verdict"], len(s["hints"] or [])
                pending[i], judged_earlier[i] = touched(i, iid, s)
    verdict, n_hints = pa.array(verdict, pa.string()), pa.array(n_hints, pa.int64())
    ok = pc.equal(t.column("status"), "ok")
    return {
        "all": pa.array(np.ones(n, bool)),
        "not_reviewed": pc.is_null(verdict),
        "accepted": pc.equal(verdict, "accepted"),
        "retouch": pc.equal(verdict, "retouch"),
        "rejected": pc.equal(verdict, "rejected"),
        "hinted": pc.greater(n_hints, 0),
        "hints_pending": pa.array(pending, pa.bool_()),
        "judged_earlier": pa.array(judged_earlier, pa.bool_()),  # coloured anew since
        "errors": pc.equal(t.column("status"), "error"),
        "skipped": pc.equal(t.column("status"), "skipped"),  # colour images: --recolor, or hints
        "nearly_gray": pc.and_(ok, pc.less(pc.fill_null(t.column("colorfulness"), 0.0), NEARLY_GRAY)),
    }


class Touched:
    """What the images the curator touched are, per edit of their verdict and hints: computed
    once, and again when the results change (the page asks on every request: naming the
    colourings of 100,000 judged images took a third of a second)."""

    def __init__(self):
        self._memo: tuple = (None, {}, {})  # its table, per image, the columns it reads

    def of(self, t: pa.Table):
        """f(i, image_id, state) -> (hints pending, verdict on an earlier colouring)."""
        from pipeline.worker.hints import digest_of

        memo = self._memo
        if memo[0] is not t:  # per table: a request may still hold the one before a reload
            memo = self._memo = (t, {}, {})
        _, known, by = memo

        def touched(i: int, iid: str, s: dict) -> tuple[bool, bool]:
            revs = ((s.get("rev") or {}).get("verdict"), (s.get("rev") or {}).get("hints"))
            got = known.get(iid)
            if got is None or got[0] != revs:
                if not by:  # the columns a colouring is named by, read once (a slice per image is slow)
                    by.update({c: t.column(c).to_pylist() for c in COLOURED_BY})
                row = {c: by[c][i] for c in COLOURED_BY}
                got = known[iid] = (revs, (digest_of(s["hints"]) != row["hints_digest"],
                                           bool(s.get("verdict_of")) and earlier(s, row)))
            return got[1]
        return touched


def _order(col: pa.ChunkedArray, desc: bool) -> pa.Array:
    """Indices that sort a column as a curator reads it: a catalogue keeps its cells as text, but
    "Box 9" comes before "Box 10" and 1890 before 990 does not; numbers inside text compare as
    numbers. Empty cells go last either way."""
    import re

    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        return pc.sort_indices(col, sort_keys=[("x", "descending" if desc else "ascending")])
    vals = col.to_pylist()

    def key(i: int):  # by letters without their accents first ("Église" among the E's, not after Z)
        v = vals[i]
        parts = re.split(r"(\d+)", _fold(v).translate(_LETTERS).casefold()) if v else []
        return [(0, int(p), "") if p.isdecimal() else (1, 0, p) for p in parts if p], v

    filled = sorted((i for i, v in enumerate(vals) if v not in (None, "")), key=key, reverse=desc)
    return pa.array(filled + [i for i, v in enumerate(vals) if v in (None, "")], pa.int64())


def _with_manifest_cells(t: pa.Table, manifest: str, info: dict) -> tuple[pa.Table, dict]:
    """The results with the catalogue's cells as the manifest holds them now
    (manifest.cells_now), and the manifest's catalogue info."""
    try:
        info = read_catalogue_info(manifest)
    except Exception:  # noqa: BLE001 - the manifest moved since the run: the rows' cells are all there is
        return t, info
    names = [n for n in (stored_name(c) for c in info.get("columns", [])) if n in t.column_names]
    for n, cells in cells_now(manifest, t.column("image_id"), {n: t.column(n) for n in names}).items():
        t = t.set_column(t.column_names.index(n), n, cells)
    return t, info


# letters Unicode does not write as a base letter and an accent: sorted as the base letter
_LETTERS = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss",
                          "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ı": "i"})


def _fold(text: str) -> str:
    import unicodedata

    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")


def _fold_column(col):
    return pc.replace_substring_regex(pc.utf8_normalize(col.cast(pa.string()), "NFD"), r"\p{Mn}+", "")
