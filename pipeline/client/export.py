"""The results as the archive's database takes them back: the catalogue's columns first, in its
order and under its own names (its path column as written), then ours; CSV as Excel opens it
(UTF-8 with a BOM, the catalogue's own separator), a real .xlsx workbook, or one Parquet table."""

from __future__ import annotations

import csv
import io
import ntpath
import os
import re

from pipeline.client.catalogue import carried_columns, export_names, stored_name
from pipeline.client.manifest import job_results, read_catalogue_info, resolve_path, source_states
from pipeline.client.outdir import Outdir
from pipeline.client.results import SCHEMA
from pipeline.client.reviews import COLOURED_BY, earlier, state_of
from pipeline.errors import UsageError
from pipeline.worker.writers import record_columns, record_missing

# Ours, in the order a person reads them; the rest of SCHEMA follows.
OURS_FIRST = ["status", "error", "output_path", "source_path", "input_kind", "notes", "width",
              "height", "bits", "colorfulness", "redone"]
# verdict_given_to: a verdict stays with its image when a rerun colours it anew; this says
# whether it was given to the colouring the output has (reviews.colouring) or an earlier one
REVIEW_COLUMNS = [("verdict", lambda s, r: s["verdict"]),
                  ("verdict_given_to", lambda s, r: None if not s["verdict"] else "an earlier colouring"
                   if earlier(s, r) else "this colouring"),
                  ("verdict_by", lambda s, r: s["by"]["verdict"][0] if s["verdict"] else None),
                  ("verdict_at", lambda s, r: s["by"]["verdict"][1] if s["verdict"] else None),
                  ("review_note", lambda s, r: s["note"]),
                  ("curator_hints", lambda s, r: len(s["hints"] or [])),
                  ("reviewed_by", lambda s, r: s["who"] if _reviewed(s) else None),
                  ("reviewed_at", lambda s, r: s["t"] if _reviewed(s) else None)]


def _reviewed(s: dict) -> bool:
    """Whether a review says anything: a verdict, a note or hints (an undone one says nothing,
    and names no reviewer)."""
    return bool(s["verdict"] or (s["note"] or "").strip() or s["hints"])


# A workbook is XML 1.0, which cannot hold these control characters even as references: OOXML
# escapes them as _xHHHH_ (Excel shows the character again), and so it escapes the underscore of
# a literal "_xHHHH_" in a cell, which Excel would otherwise decode. \r is kept by lxml (&#13;).
_OOXML_ESCAPE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|_(?=x[0-9A-Fa-f]{4}_)")


def ooxml_escape(text: str) -> str:
    return _OOXML_ESCAPE.sub(lambda m: f"_x{ord(m.group(0)):04X}_", text)


def export_table(out: Outdir, info: dict, as_written: bool = True) -> tuple[list[str], list[list]]:
    """(header, rows): catalogue columns as written (info: the manifest's catalogue_info; not
    as_written: an empty or repeated header cell by the name the scan gave it, "column 4",
    "Titel (2)"), then ours (renamed colorize_NAME where the catalogue has a column of that
    name); rows in the catalogue's order (manifest.job_results)."""
    spec = out.read_job()["spec"]
    manifest = spec["manifest"]
    t = job_results(out, manifest)
    # every column of the catalogue, one it gained since these rows were written too (its cells
    # come from the manifest, below)
    cat_cols = list(info.get("columns", []))
    # a column an older manifest's catalogue had (its cells carried by the rows it made); not a
    # manifest's own column (a file's size, time, digest), which an older version that did not
    # know it as ours carried as a catalogue cell into the rows of a newer manifest
    legacy = [n for n in carried_columns(t.column_names) if n not in {stored_name(c) for c in cat_cols}]
    ours = [n for n in OURS_FIRST if n in t.column_names]
    ours += [n for n in SCHEMA.names if n not in ours]
    written = info.get("written", {}) if as_written else {}  # an empty or repeated header cell, as it was
    taken = set(cat_cols) | set(legacy) | set(written.values())
    header = [written.get(c, c) for c in cat_cols] + legacy + _own_names(ours, taken)
    ids = t.column("image_id").to_pylist()
    carried = [t.column(stored_name(c)).to_pylist() if stored_name(c) in t.column_names
               else [None] * len(ids) for c in cat_cols]
    current = _current_cells(out, cat_cols, ids, carried)
    # 'gone' where the last scan did not find the original (renamed, moved, deleted, a catalogue
    # row corrected to another file): its row and output stay, and a database keyed by accession
    # number must not take it for the current record beside the renamed file's
    states = source_states(manifest)
    # whether each output's own metadata (XMP) holds the cells it carries of these (the job's
    # metadata columns), or older ones; or whether the file is gone (one listing of images/: the
    # database must not link to a file not there). One word each, for a script to compare.
    held = set(record_columns(spec.get("metadata_columns") or "none"))
    pairs = [(c, o) for col, c, o in zip(cat_cols, current, carried, strict=True) if col in held]
    present = set(out.outputs())
    mapping, before = spec.get("metadata_columns") or "none", spec.get("metadata_columns_before") or []
    at = {c: j for j, c in enumerate(cat_cols)}

    def late(k: int, p: str) -> bool:  # a field the widened mapping gives that its XMP lacks
        return bool(before) and record_missing(mapping, before, lambda c: carried[at[c]][k] if c in at else None,
                                               lambda: out.store.read_bytes(p))

    record = [None if st != "ok" else "missing" if p not in present
              else "current" if all((c[k] or "") == (o[k] or "") for c, o in pairs) and not late(k, p) else "outdated"
              for k, (st, p) in enumerate(zip(t.column("status").to_pylist(),
                                              t.column("output_path").to_pylist(), strict=True))]
    # A file no catalogue row names (found in a folder) gets its path in the path column: a
    # registrar who fills in its record here and brings the export back as the catalogue
    # attaches the record to the file (an empty path cell attached it to nothing)
    if (pc := info.get("path_column")) in cat_cols:
        k, src = cat_cols.index(pc), t.column("source_path").to_pylist()
        spell = _as_the_catalogue_writes(current[k], info.get("folder"), manifest)
        current[k] = [v if v is not None or any(c[j] is not None for c in current)
                      or states.get(ids[j]) == "gone" else spell(src[j])  # a gone one names nothing
                      for j, v in enumerate(current[k])]
    _sidecar_outdated(out, t, record)
    columns = current + [t.column(n).to_pylist() for n in legacy + ours] + [record, [states.get(i) for i in ids]]
    header += _own_names(["output_record", "source_state"], taken)
    # the curator's review (colorize review): verdict, note, how many hints, by whom, when
    state = state_of(out)
    header += _own_names([name for name, _ in REVIEW_COLUMNS], taken)
    by = {c: t.column(c).to_pylist() for c in COLOURED_BY}  # the reviewed rows', read once
    rows = {i: {c: by[c][j] for c in COLOURED_BY} for j, i in enumerate(ids) if i in state}
    for _, get in REVIEW_COLUMNS:
        columns.append([get(state[i], rows[i]) if i in state else None for i in ids])
    return header, [list(r) for r in zip(*columns, strict=True)] if columns else []


def _sidecar_outdated(out: Outdir, t, record: list) -> None:
    """An output whose XMP sidecar the last audit --check-inputs found edited since (a licence
    withdrawn) is 'outdated' too, until redone: the export read no sidecar, and said 'current'."""
    from pipeline.client.audit import found_outdated_sidecars

    if "sidecar_sha256" not in t.column_names:
        return
    paths = t.column("source_path").to_pylist()
    stale = found_outdated_sidecars(out.store, dict(zip(paths, t.column("sidecar_sha256").to_pylist(), strict=True)))
    for k, p in enumerate(paths):
        if record[k] == "current" and p in stale:
            record[k] = "outdated"


def _as_the_catalogue_writes(cells: list, folder: str | None, manifest: str):
    """A path as the catalogue's own cells write theirs: relative to its folder, with its
    separator, where every cell is so (an export that mixed the registrar's Kasten 1/a.tif with
    our /srv/archive/Kasten 2/b.tif read as two kinds of record); else the file's full path."""
    written = [c for c in cells if c]
    relative = folder and written and not any("://" in c or ntpath.isabs(c) for c in written)
    sep = "\\" if sum("\\" in c for c in written) > sum("/" in c for c in written) else "/"

    def spell(src: str) -> str:
        full = resolve_path(manifest, src)
        if not relative or "://" in full:
            return full
        rel = os.path.relpath(os.path.join(os.path.realpath(os.path.dirname(full)),
                                           os.path.basename(full)), folder)  # (the folder is real)
        return full if rel.startswith("..") else rel.replace(os.sep, sep)
    return spell


def _own_names(names: list[str], taken: set[str]) -> list[str]:
    """Our columns' names beside the catalogue's: each the first of catalogue.export_names not
    taken (a header read back needs names of its own), then taken."""
    out = [next(x for x in export_names(n) if x not in taken) for n in names]
    taken.update(out)
    return out


def _current_cells(out: Outdir, cat_cols: list[str], ids: list[str], carried: list[list]) -> list[list]:
    """The catalogue's cells now (manifest.cells_now), as lists beside `carried`."""
    from pipeline.client.manifest import cells_now

    now = cells_now(out.read_job()["spec"]["manifest"], ids,
                    {stored_name(c): v for c, v in zip(cat_cols, carried, strict=True)})
    return [now[stored_name(c)].to_pylist() for c in cat_cols]


def write_csv(path: str, header: list[str], rows: list[list], delimiter: str, encoding: str) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")  # as Excel writes
    w.writerow(header)
    w.writerows([[_csv_cell(v, delimiter) for v in r] for r in rows])
    data = buf.getvalue().encode(encoding)
    _write_new(path, data)


def _csv_cell(v, delimiter: str):
    """Our numbers as people read them (0.046 s, not 0.04612837701290846); in a ';' file with a
    decimal comma, as the locales whose Excel writes ';' read it (a '0.046' there became text,
    and some such cells dates). The catalogue's cells are text, written as they are."""
    if v is None:
        return ""
    if isinstance(v, float):
        text = f"{v:.3f}"
        return text.replace(".", ",") if delimiter == ";" else text
    return v


# A cell Excel takes for a formula when it opens a CSV: written as it is (the record as the
# catalogue has it), and said (a "-2" or "- untitled" is text to Excel too, and not said).
FORMULA = re.compile(r"[=+@\t\r]|-[^\d\s.]")
XLSX_CELL = 32767  # the most characters an Excel cell holds
XLSX_ROWS = 1_048_576  # the most rows a worksheet holds, the header's included


def write_xlsx(path: str, header: list[str], rows: list[list], text_columns: int) -> None:
    """A workbook: catalogue cells as text (an accession number 007 stays 007, a title "=1+1"
    stays words), our numbers as numbers; every cell reads back as written."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    if len(rows) + 1 > XLSX_ROWS:  # Excel would open it cut short, saying only "not loaded completely"
        raise UsageError(f"{len(rows):,} images are more rows than a workbook's sheet holds "
                         f"({XLSX_ROWS - 1:,} below the header); export to .csv or .parquet")
    long = next(((k, i) for k, r in enumerate(rows) for i, v in enumerate(r)
                 if isinstance(v, str) and len(v) > XLSX_CELL), None)
    if long:  # openpyxl would cut it without a word
        k, i = long
        # the row a spreadsheet shows it in: the header is its row 1
        raise UsageError(f"row {k + 2}'s {header[i]!r} holds {len(rows[k][i]):,} characters, more "
                         f"than a workbook cell holds ({XLSX_CELL:,}); export to .csv, which keeps "
                         "every cell whole")
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("results")
    ws.append([ooxml_escape(h) for h in header])
    for r in rows:
        out = []
        for i, v in enumerate(r):
            if i < text_columns and v is not None:
                v = str(v)
            if isinstance(v, str):
                v = WriteOnlyCell(ws, value=ooxml_escape(v))
                v.data_type = "s"  # text: never a formula (a title "=1+1" stays words)
            out.append(v)
        ws.append(out)
    buf = io.BytesIO()
    wb.save(buf)
    _write_new(path, buf.getvalue())


def write_parquet(path: str, header: list[str], rows: list[list], text_columns: int) -> None:
    """One table for pandas, pyarrow or a database: every image's row with the catalogue's cells
    as the manifest holds them now (results/ files differ in columns once a job has grown with a
    catalogue that gained one, and a reader of the folder takes the first file's), catalogue
    cells as text, ours typed as results/ has them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    # typed before the first review too: a nightly load's schema does not change with it
    typed = {f.name: f.type for f in SCHEMA} | {n: pa.string() for n, _ in REVIEW_COLUMNS} | {
        "output_record": pa.string(), "source_state": pa.string(), "curator_hints": pa.int64()}
    ours = {f"colorize_{n}": t for n, t in typed.items()} | typed
    arrays = [pa.array(list(c), pa.string() if i < text_columns else ours.get(header[i]))
              for i, c in enumerate(cols)]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays, names=header), buf, compression="zstd")
    _write_new(path, buf.getvalue().to_pybytes())


def _write_new(path: str, data: bytes) -> None:
    """Whole or not at all (a temporary file and a rename)."""
    from pipeline.storage import write_atomic

    write_atomic(path, data)


def export(outdir: str, dest: str, excel: bool | None = None, delimiter: str | None = None,
           encoding: str = "utf-8-sig") -> dict:
    """Write the results to dest; returns what was written (rows, columns, format)."""
    out = Outdir(outdir)
    info = read_catalogue_info(out.read_job()["spec"]["manifest"])
    # a table's columns need names of their own (pyarrow and pandas refuse a repeated one)
    parquet = dest.lower().endswith(".parquet")
    header, rows = export_table(out, info, as_written=not parquet)
    n_text = len(info.get("columns", []))
    said = dict(rows=len(rows), header=header, no_file=info.get("no_file", 0),
                listed_twice=[f"{os.path.join(os.path.basename(os.path.dirname(c)), os.path.basename(c))} line {n}"
                              for c, lines in (info.get("listed_twice") or {}).items() for n in lines]
                if isinstance(info.get("listed_twice"), dict) else [])
    if parquet:
        write_parquet(dest, header, rows, n_text)
        return dict(said, format="parquet")
    xlsx = excel if excel is not None else dest.lower().endswith((".xlsx", ".xlsm"))
    if xlsx:
        write_xlsx(dest, header, rows, n_text)
        return dict(said, format="xlsx")
    # a .tsv is tab-separated by its name (written with the catalogue's commas, it was not)
    d = delimiter or ("\t" if dest.lower().endswith(".tsv") else info.get("delimiter")) or ","
    if d == "\n":  # a TXT path list has no separator of its own
        d = ","
    write_csv(dest, header, rows, d, encoding)
    return dict(said, format="csv", delimiter=d, encoding=encoding,
                formulas=[(k, header[i], v) for k, r in enumerate(rows) for i, v in enumerate(r[:n_text])
                          if isinstance(v, str) and FORMULA.match(v)])

