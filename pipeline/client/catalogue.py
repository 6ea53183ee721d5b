"""An archive's catalogue as Excel and databases export it, read without altering a cell.

A catalogue is a CSV/TSV (or a TXT of one path per line). Its separator is decided by parsing,
not by guessing from a few lines: each candidate (; , tab |) is tried with the CSV rules Excel
writes (quotes, doubled quotes, separators and newlines inside quotes) and the one that gives
the header a path column and every record the header's width wins. Excel's `sep=;` first line is
honoured. Cells are kept exactly as written (the path cell too, beside the resolved path), and
the header's order is kept, so an export gives the database back its own records.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count, islice, takewhile
from pathlib import Path

from pipeline.client.elsewhere import disk_spelling, stripped
from pipeline.client.results import CORE_COLUMNS, SCHEMA
from pipeline.errors import ScanError
from pipeline.worker.writers import alternatives

DELIMITERS = (";", ",", "\t", "|")
DELIMITER_NAMES = {";": "semicolon", ",": "comma", "\t": "tab", "|": "bar"}
# Column names the tool itself uses in a manifest or a result row; a catalogue column of the
# same name is stored as "NAME (catalogue)" rather than lost or overwritten.
RESERVED = set(CORE_COLUMNS) | set(SCHEMA.names)


def carried_columns(names) -> list[str]:
    """The catalogue's cells among a results file's columns: neither ours (results.SCHEMA) nor
    a manifest's own (a file's time, digest, state, order), which an older version that did not
    know them as ours carried into the results as catalogue cells."""
    return [n for n in names if n not in RESERVED]
# What `colorize export` writes after the catalogue's columns: results.SCHEMA's, then these; each
# under the first of export_names(NAME) that the catalogue does not use.
EXPORT_EXTRA = ("output_record", "source_state", "verdict", "verdict_given_to", "verdict_by", "verdict_at",
                "review_note", "curator_hints", "reviewed_by", "reviewed_at")
PATHLIKE = ("path", "file", "filename", "file name", "filepath", "image", "scan", "datei",
            "dateiname", "bild", "fichier")


def at(r: dict) -> str:
    """Where a catalogue record is, as a text editor shows it and, where that differs (a
    note over several lines before it), as a spreadsheet does."""
    row = r.get("_row")
    return f"line {r['_line']}" + (f" (row {row} in a spreadsheet)" if row and row != r["_line"] else "")


def stored_name(column: str) -> str:
    """The manifest/result column that holds a catalogue column."""
    return f"{column} (catalogue)" if column in RESERVED else column


def delimiter_arg(s: str) -> str:
    """--delimiter: the character, or its name (tab is hard to type)."""
    names = {v: k for k, v in DELIMITER_NAMES.items()} | {"\\t": "\t", "comma": ",", "tab": "\t"}
    d = names.get(s.lower(), s)
    if len(d) != 1 or d in "\"\r\n":
        import argparse

        raise argparse.ArgumentTypeError(f"a delimiter is one character (or tab, semicolon, "
                                         f"comma), got {s!r}")
    return d


@dataclass
class Catalogue:
    path: str
    columns: list[str]  # the header as written, in order, the path column included
    path_column: str
    delimiter: str
    encoding: str
    # per record: "path" (resolved), "_line" (where it starts), "_cells" (column -> cell as written)
    rows: list[dict] = field(default_factory=list)
    nofile: list[dict] = field(default_factory=list)  # records whose path cell is empty
    # a header cell that was empty or repeated, by the name it was given ("column 4", "Titel (2)"):
    # the export writes the cell back as it was
    written: dict[str, str] = field(default_factory=dict)
    from_source: int = 0  # an export brought back: rows read from its source_path, not the path cell


def decode_text(p: Path, encoding: str | None, log) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 (with or without BOM), else Windows-1252, as
    Excel writes it in Western Europe; with `encoding`, that one, and a failure names the line."""
    data = p.read_bytes()
    if not encoding and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # Excel's "Unicode Text": UTF-16 with its byte-order mark
    elif not encoding and b"\x00" in data[:4096]:  # no text in an 8-bit encoding holds NUL
        raise ScanError(f"{p}: not text as UTF-8 or Windows-1252 read it (it holds NUL bytes: "
                        "UTF-16 without a byte-order mark?); name the file's encoding with "
                        "--encoding (utf-16-le, as Windows writes it)")
    for enc in ([encoding] if encoding else ["utf-8-sig", "cp1252"]):
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as e:
            if encoding or enc != "utf-8-sig":
                line = data.count(b"\n", 0, e.start) + 1
                raise ScanError(f"{p}, line {line}: not {enc} text (byte {data[e.start]:#x}); "
                                "name the file's encoding with --encoding") from None
            continue
        except LookupError:
            raise ScanError(f"unknown encoding {encoding!r}") from None
        if enc == "cp1252" and not encoding:
            log(f"{p}: not UTF-8; read as Windows-1252 ({_as_read(text, data)})")
        if enc == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf"):
            enc = "utf-8"  # what the file is: it has no BOM
        if "\x00" in text:  # a path or a cell cannot hold it: the encoding named is not the file's
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise ScanError(f"{p}, line {line}: a NUL character read as {enc}; name the file's "
                            "encoding with --encoding (utf-16, say)")
        return text.removeprefix("\ufeff"), enc
    raise AssertionError("unreachable")


def _as_read(text: str, data: bytes) -> str:
    """Some words with non-ASCII letters as Windows-1252 reads them, for a person to judge; and
    where its words hold symbols inside them (Tytu³, £ódŸ) that Central European Windows-1250
    reads as letters (Tytuł, Łódź), that suggestion."""
    def words(t: str) -> list[str]:
        cell = r'[^\s;,|"]'
        return list(dict.fromkeys(re.findall(rf"{cell}*[^\x00-\x7f]{cell}*", t)))[:3]

    def odd(t: str) -> int:  # a non-letter, non-ASCII character with a letter beside it
        return sum(1 for i, c in enumerate(t) if ord(c) > 127 and not c.isalpha()
                   and any(0 <= j < len(t) and t[j].isalpha() for j in (i - 1, i + 1)))

    seen = words(text)
    said = "e.g. " + ", ".join(f'"{w}"' for w in seen) if seen else "no character outside ASCII"
    try:
        central = data.decode("cp1250")
    except UnicodeDecodeError:
        central = None
    if central is not None and odd(text) and not odd(central):
        return (f"{said}; if these should read " + ", ".join(f'"{w}"' for w in words(central))
                + ", give --encoding cp1250")
    return f"{said}; say --encoding otherwise"


def _records(text: str, delimiter: str):
    """(first line, cells) per record: Excel's CSV rules, a record may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"',
                        doublequote=True, strict=False)
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


def choose_delimiter(text: str, path_column: str, suffix: str) -> str:
    """The separator under which the header names the path column and the records are as wide
    as the header; a catalogue of one column falls back on its extension."""
    best, best_score = None, None
    for d in DELIMITERS:
        recs = [c for _, c in islice(_records(text, d), 500) if c]
        if not recs:
            continue
        width = len(recs[0])
        body = recs[1:] or recs
        regular = sum(len(c) == width for c in body) / len(body)
        has = any(c in recs[0] for c in alternatives(path_column))
        named = has or any(h.strip().lower() in PATHLIKE for h in recs[0])
        score = (has, width > 1 and regular == 1.0, named and width > 1,
                 regular, width)
        if best_score is None or score > best_score:
            best, best_score = d, score
    if best is None or best_score[4] == 1:  # one column: no separator to find
        return "\t" if suffix == ".tsv" else ","
    return best


def _path_column(given: str | None, cols: list[str], p: Path, d: str) -> str:
    """The column a catalogue's paths are in: the first of --path-column's names it has (each
    delivery may name it its own way: 'Datei||File'); with none, its first column."""
    if not given:
        return cols[0] if cols else ""
    if found := next((c for c in alternatives(given) if c in cols), None):
        return found
    like = [c for c in cols if c.strip().lower() in PATHLIKE]
    # with several catalogues, each may name its paths its own way: all of them, in one option
    hint = (f"; use --path-column {like[0]!r}" if like and given == "path" else
            f"; use --path-column '{given}||{like[0]}' (each catalogue takes the first it has)"
            if like else "")
    names = " or ".join(map(repr, alternatives(given)))
    raise ScanError(f"{p}: no {names} column (columns: {', '.join(cols) or 'none'}; "
                    f"read with {DELIMITER_NAMES.get(d, repr(d))} as the separator){hint}")


def read_catalogue(path: str | os.PathLike, path_column: str | None = "path",
                   encoding: str | None = None, delimiter: str | None = None,
                   log=lambda msg: None, path_prefix: list[str] | None = None) -> Catalogue:
    """Every record of a catalogue with its cells as written (path_column None: the first column
    holds the paths). Relative paths are relative to the catalogue's own folder. Empty path cells are named and left out (there is no file to
    colorize); extra cells beyond the header are named too, never silently dropped."""
    p = Path(path)
    text, enc = decode_text(p, encoding, log)
    # a .txt is a list of paths, one a line; unless it is a table: Excel's "Text (Tab
    # delimited)" and "Unicode Text" are .txt files whose lines hold tabs (or --delimiter says)
    first_line = text.partition("\n")[0]
    if p.suffix.lower() == ".txt" and (delimiter or "\t") not in first_line:
        rows = [{"path": ln.strip(), "_line": i, "_cells": {}}
                for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
        cat = Catalogue(str(p), [], path_column, "\n", enc)
        return _resolved(cat, rows, p, log, path_prefix)
    first, _, rest = text.partition("\n")
    skip = 0
    if first.rstrip("\r").lower().startswith("sep=") and len(first.rstrip("\r")) == 5:
        delimiter = delimiter or first.rstrip("\r")[4]  # Excel's own hint line
        text, skip = rest, 1
    d = delimiter or choose_delimiter(text, path_column or "", p.suffix.lower())
    # (line, spreadsheet row, cells): a quoted cell over several lines parts the two; the row is
    # what a curator finds in Excel (the header its row 1; Excel hides a "sep=" line)
    recs = ((line + skip, n, cells) for n, (line, cells) in enumerate(_records(text, d), 1))
    header = next(recs, (0, 0, []))[2]
    cols = _header(header)
    written = {c: h for c, h in zip(cols, header, strict=True) if c != h}
    path_column = _path_column(path_column, cols, p, d)
    rows = []
    for line, row, cells in recs:
        if not cells or cells == [""]:
            continue  # a blank line
        if len(cells) > len(cols):
            extra = [c for c in cells[len(cols):] if c != ""]
            if extra:
                log(f"{p}, line {line}: {len(cells)} cells under a header of {len(cols)}; the "
                    f"extra {extra!r} are not carried (quote cells that hold the separator)")
        r = {c: (cells[i] if i < len(cells) else None) for i, c in enumerate(cols)}
        rows.append({"path": (r[path_column] or "").strip(), "_line": line, "_row": row, "_cells": r})
    # a last column without a header and without a cell is a trailing separator (Excel writes
    # one after a row's last cell): nothing to carry, and a name by its place ("column 8") would
    # move to "column 9" when a column is inserted before it
    while cols and not header[len(cols) - 1].strip() and cols[-1] != path_column \
            and not any(r["_cells"].get(cols[-1]) for r in rows):
        gone = cols.pop()
        written.pop(gone, None)
        for r in rows:
            r["_cells"].pop(gone, None)
        log(f"{p}: header cell {len(cols) + 1} is empty and so is every cell under it (a "
            "trailing separator): not a column")
    cols = _without_results(cols, [c for c in exported_columns(cols) if c != path_column], rows, p, log)
    for i, c in enumerate(cols, 1):
        if c in written:
            log(f"{p}: header cell {i} {written[c]!r} named {c!r}")
    return _resolved(Catalogue(str(p), cols, path_column, d, enc, written=written), rows, p, log,
                     path_prefix)


def shared_identifiers(values, paths) -> list[dict]:
    """Accession numbers that name more than one file, each with its files: a number typed twice
    or a record copied down for the next photograph puts one object's record on two (an archive
    keys its database on them), where one object's several scans (front and back) share it
    rightly; which it is takes a person. Cells compared as written, spaces around them aside."""
    by: dict[str, list[str]] = {}
    for v, path in zip(values, paths, strict=True):
        if v is not None and (v := str(v).strip()):
            by.setdefault(v, []).append(path)
    return [{"identifier": v, "paths": sorted(ps)} for v, ps in sorted(by.items()) if len(ps) > 1]


def shared_said(shared: list[dict], column: str, limit: int = 3) -> str:
    """The line a scan and an audit give to shared_identifiers' finding."""
    some = "; ".join(f"{g['identifier']!r}: {', '.join(g['paths'][:3])}" + (" ..." if len(g["paths"]) > 3 else "")
                     for g in shared[:limit]) + (f"; ... ({len(shared) - limit} more)" if len(shared) > limit else "")
    n = len(shared)
    return (f"{n} value{'' if n == 1 else 's'} of {' or '.join(map(repr, alternatives(column)))} (the accession number) "
            f"{'names' if n == 1 else 'name'} more than one file: {some} (a number typed twice, "
            "or one object's several scans: each file keeps its row; check them in the catalogue)")


def _without_results(cols: list[str], ours: list[str], rows: list[dict], p, log) -> list[str]:
    """A colorize export brought back as the catalogue: its columns of results (ours) would
    become catalogue cells, each "changed" at every rescan, so they go; each row keeps where its
    image is (source_path): a path cell of another delivery's is relative to that one's folder."""
    if not ours:
        return cols
    named = list(takewhile(set(ours).__contains__, export_names("source_path")))
    for r in rows:
        if named:
            r["_source"] = (r["_cells"].get(named[-1]) or "").strip()
        for c in ours:
            r["_cells"].pop(c, None)
    log(f"{p}: a colorize export brought back as the catalogue: its {len(ours)} columns of "
        f"results ({', '.join(ours[:3])}, ...) are not the catalogue's and are left out")
    return [c for c in cols if c not in ours]


def export_names(name: str) -> Iterator[str]:
    """An export's name for one of our columns, in the order it takes the first free one: NAME,
    colorize_NAME, then colorize_NAME (2)... (an export brought back as the catalogue has both)."""
    yield name
    yield f"colorize_{name}"
    yield from (f"colorize_{name} ({k})" for k in count(2))


def exported_columns(cols: list[str]) -> list[str]:
    """Our columns in a catalogue that is a colorize export brought back (edited and named as the
    catalogue, as a collection database round-trips): [] for any other catalogue."""
    has = set(cols)

    def ours(n: str) -> str | None:
        names = list(takewhile(has.__contains__, export_names(n)))
        return names[-1] if names else None  # the catalogue's own come first

    if ours("image_id") is None or ours("output_record") is None:
        return []
    return [o for n in (*SCHEMA.names, *EXPORT_EXTRA) if (o := ours(n))]


def _header(header: list[str]) -> list[str]:
    """Column names as written; an empty or repeated name gets a number (read_catalogue says so)."""
    cols: list[str] = []
    for i, h in enumerate(header, 1):
        name = h if h.strip() else f"column {i}"
        n = 2
        while name in cols:
            name, n = f"{h} ({n})", n + 1
        cols.append(name)
    return cols


def _resolved(cat: Catalogue, rows: list[dict], p: Path, log, prefixes: list[str] | None = None) -> Catalogue:
    respelt = []
    listing: dict[str, dict[str, str]] = {}
    for r in rows:
        r["_as_written"] = r["path"]  # a list's line (a table's is its path cell)
        if prefixes and r["path"] and (cut := stripped(r["path"], prefixes)) is not None:
            r["_prefix"], rest = cut  # another machine's path, read from here (--path-prefix)
            r["path"] = str(p.parent / rest)
        elif r["path"] and "://" not in r["path"] and not os.path.isabs(r["path"]):
            r["path"] = str(p.parent / r["path"])
        if (r.get("_source") and "://" not in r["path"] and (not r["path"] or not os.path.lexists(r["path"]))
                and os.path.isabs(r["_source"]) and os.path.lexists(r["_source"])):
            # an export brought back: its path cells are each written from its own catalogue's
            # folder (several deliveries'), not this file's; its source_path says where it is
            r["path"] = r["_source"]
            cat.from_source += 1
    # A file that a row names exactly is that row's: another row's other spelling of it (a
    # missing img_0001.jpg beside IMG_0001.jpg) stays missing, an error row of its own, rather
    # than be taken for it and dropped as listed twice (its record lost)
    taken = {os.path.realpath(r["path"]) for r in rows
             if r["path"] and "://" not in r["path"] and os.path.lexists(r["path"])}
    for r in rows:
        if not r["path"]:
            if any((v or "").strip() for v in r["_cells"].values()):  # not a blank line
                cat.nofile.append(r)  # no image to colour: the scan's summary and report say so
            continue
        if "://" not in r["path"] and not os.path.lexists(r["path"]):
            found = disk_spelling(r["path"], listing)
            if found and os.path.realpath(found) not in taken:
                taken.add(os.path.realpath(found))
                respelt.append((r, found))
                r["_respelt"], r["path"] = r["path"], found  # given back if another catalogue
                # names the file exactly (manifest._spelt_exactly)
        cat.rows.append(r)
    if cat.from_source:
        log(f"{p}: a colorize export brought back: {cat.from_source} row{'s' if cat.from_source > 1 else ''} "
            "read from its source_path (its path cell is written from another catalogue's folder, "
            "an earlier delivery's); the cells are kept as written")
    if respelt:
        r, found = respelt[0]
        log(f"{p}: {len(respelt)} path cell{'s' if len(respelt) > 1 else ''} matched to a file "
            f"named in another Unicode form or case, or with Windows backslashes ({at(r)}: "
            f"{r['_cells'].get(cat.path_column, r['path'])!r} is {found!r} on disk); the cells "
            "are kept as written")
    return cat
