"""Redo some images inside a job (`colorize run -o OUT --redo LIST`): the one mechanism by which
a few images are colorized again without making the job another one (two scans misjudged as
colour, redone with --recolor; later, images a curator gave colour hints).

The request lives in OUTDIR/redo.json: per image, the options it is made with (`overrides`,
kept for good, so a later --repair of that image rewrites the same bytes), and per shard the
images still to do (`pending`, emptied as each shard commits, so a killed redo resumes with
the next `colorize run -o OUT`). The images' rows and files are replaced whole (the file by a
rename, the rows by the shard's atomic commit); every other image is left as it is."""

from __future__ import annotations

import contextlib
import json
import os
import unicodedata
from pathlib import Path

from pipeline.client.manifest import catalogue_info, read_manifest, resolve_path, source_states
from pipeline.client.outdir import Outdir
from pipeline.errors import UsageError, plural
from pipeline.storage import Store
from pipeline.worker.writers import OR

PER_IMAGE = ("recolor",)  # the job's flags that may apply to some images alone
# (and, per image, a curator's hints: `run --hinted`, from OUTDIR/reviews)


def load(outdir: Outdir | Store) -> dict:
    store = Outdir(outdir).store
    if not store.exists(Outdir.REDO):
        return {"overrides": {}, "pending": {}}
    return json.loads(store.read_text(Outdir.REDO))


def save(outdir: Outdir | Store, state: dict) -> None:
    Outdir(outdir).store.write_atomic(Outdir.REDO, json.dumps(state, indent=1, sort_keys=True).encode())


def request(store: Store, picked: dict[int, set[str]], options: dict,
            per_image: dict[str, dict] | None = None) -> dict:
    """Record a redo of `picked` (shard -> image ids) with `options` (and each image's own in
    per_image: its hints); returns the new state."""
    state = planned(load(store), picked, options, per_image)
    save(store, state)
    return state


def planned(state: dict, picked: dict[int, set[str]], options: dict,
            per_image: dict[str, dict] | None = None) -> dict:
    """The state once a redo is asked for (a copy: request saves it, a dry run shows it): the
    images pending, each with every option it is made with, those of earlier redos included."""
    state = json.loads(json.dumps(state))
    for shard, ids in picked.items():
        pend = set(state["pending"].get(str(shard), [])) | ids
        state["pending"][str(shard)] = sorted(pend)
        for iid in ids:  # a later redo adds to an image's options (its hints stay with --recolor)
            o = state["overrides"].setdefault(iid, {})
            o.update(options)
            if options.get("recolor"):
                o.pop("recolor_by", None)  # asked for on its own now: it stays when hints go
            own = dict((per_image or {}).get(iid, {}))
            if own.get("recolor_by") and o.get("recolor") and "recolor_by" not in o:
                del own["recolor_by"]  # --recolor asked for before the hints: it stays theirs
            o.update(own)
            if "hints" in o and not o["hints"]:
                del o["hints"]  # hints taken back: the image is as the job makes it again,
                if o.pop("recolor_by", None):  # skipped as colour too, where the hints coloured it
                    o.pop("recolor", None)
    return state


def done(store: Store, shard: int, ids) -> None:
    """A redo task's shard has committed: its images are no longer pending."""
    state = load(store)
    left = set(state["pending"].get(str(shard), [])) - set(ids)
    if left:
        state["pending"][str(shard)] = sorted(left)
    else:
        state["pending"].pop(str(shard), None)
    save(store, state)


def options_label(options: dict) -> str:
    """What a result row's `redone` says: 'redo', or the options it was redone with."""
    said = [f"--{k}" for k, v in sorted(options.items()) if v is True]
    if options.get("hints"):
        said.append(plural(len(options["hints"]), "hint"))
    return ", ".join(said) or "redo"


def said_label(label: str) -> str:
    """A row's `redone` as a count's breakdown says it: "--recolor and 1 hint", one group (a
    comma inside it read as two: "1 with --recolor, 1 hint, 3 with ..." for 5 images)."""
    return label.replace(", ", " and ")


def _values(item: str, column: str | None, path_column: str | None = None) -> list[str]:
    """An entry of --redo: a list file (TXT: one per line; CSV: the column --redo-column names,
    else the job's catalogue's path column where it has one (a list cut from the catalogue),
    else its first) or a single id or path."""
    from pipeline.storage import read_source
    from pipeline.worker.writers import alternatives

    p = Path(item)
    if p.suffix.lower() == ".txt":  # here, or beside an object-store OUTDIR (a URL)
        try:
            text = read_source(item).decode("utf-8-sig")
        except (FileNotFoundError, IsADirectoryError):
            return [item]
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    if p.suffix.lower() in (".csv", ".tsv") and p.is_file():
        from pipeline.client.catalogue import read_catalogue
        from pipeline.errors import ScanError

        cat = None
        if column is None and path_column:
            with contextlib.suppress(ScanError):  # no such column: its first
                cat = read_catalogue(p, path_column=path_column)
        for c in ([] if cat else alternatives(column or "")[:-1]):  # 'A||B': the first it has
            with contextlib.suppress(ScanError):
                cat = read_catalogue(p, path_column=c)
                break
        cat = cat or read_catalogue(p, path_column=alternatives(column)[-1] if column else None)
        return [r["_cells"][cat.path_column].strip() for r in cat.rows]
    return [item]


def _same_field(column: str | None, table) -> list[str]:
    """The catalogue columns --redo-column reads values from: the one it names (or each of
    'A||B'), and, where it is one delivery's name for the accession number or title, the other
    deliveries' names for it (Inventarnummer and Accession No.: a number is found in either)."""
    if not column:
        return []
    from pipeline.worker.writers import alternatives, parse_columns, resolve_columns

    named = alternatives(column)
    info = catalogue_info(table)
    with contextlib.suppress(ValueError):
        for cols in parse_columns(resolve_columns("auto", info.get("columns", []), sets=info.get("sets"))).values():
            if set(named) & set(alternatives(cols)):
                named += [c for c in alternatives(cols) if c not in named]
    return named


def select(manifest: str, items: list[str], column: str | None = None, log=lambda m: None) -> dict[int, set[str]]:
    """The images named by --redo: by image id, by path (as scanned, relative to the archive,
    or as found from here), by output name, or by a catalogue value (an accession number) when
    --redo-column names a catalogue column. A name that matches nothing is a mistake, said. An
    image whose original is gone (source_state) is left as it is, said: redone, it could only
    become an error row (and an accession number names both a renamed file's rows)."""
    table = read_manifest(manifest)
    t = table.to_pylist()
    index: dict[str, set[int]] = {}

    def nfc(v) -> str:  # a name typed on one system, stored from another (macOS's NFD)
        return unicodedata.normalize("NFC", str(v))

    def add(key, i):
        if key:
            index.setdefault(nfc(key), set()).add(i)

    from pipeline.client.catalogue import stored_name
    # its catalogue's path cell as written (another machine's C:\\Museum\\..., read with
    # --path-prefix): the catalogue itself, or a list cut from it, names its rows so
    path_column = catalogue_info(table).get("path_column")
    # each delivery's name for it (--path-column 'Datei||File'): June's rows hold theirs in File
    named = json.loads((table.schema.metadata or {}).get(b"path_columns", b"[]"))
    names = [c for c in dict.fromkeys([path_column, *named]) if c]
    cells = [stored_name(c) for c in names]
    for i, r in enumerate(t):
        for key in (r["image_id"], r["path"], r["rel_path"], r["out_stem"],
                    *((r.get(c) or "").strip() for c in cells)):
            add(key, i)
        add(os.path.realpath(resolve_path(manifest, r["path"])) if "://" not in r["path"] else "", i)
        for c in _same_field(column, table):
            if stored_name(c) in r:
                add((r[stored_name(c)] or "").strip(), i)
    picked: dict[int, set[str]] = {}
    unknown = []
    for item in items:
        for v in _values(item, column, OR.join(names) or None):
            hits = index.get(nfc(v)) or index.get(nfc(os.path.realpath(v)) if v else "")
            if not hits:
                unknown.append(v)
                continue
            for i in hits:
                picked.setdefault(int(t[i]["shard"]), set()).add(t[i]["image_id"])
    picked = _with_originals(manifest, t, picked, refuse=not unknown, log=log)
    lists = [v for v in unknown if Path(v).suffix.lower() in (".txt", ".csv", ".tsv")]
    if lists:  # meant as a list of images, and there is no such file
        raise UsageError(f"--redo: list not found: {lists[0]} (a .txt of paths or ids, or a "
                         ".csv with --redo-column)")
    if unknown:
        raise UsageError(f"--redo: {len(unknown)} not in the job's manifest: "
                         + ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
                         + (f" (ids, source paths or the catalogue's {column!r} column)" if column
                            else " (give image ids, source paths, or --redo-column COLUMN)"))
    return picked


def not_there(manifest: str, rows) -> dict[str, str]:
    """Of `rows` (manifest rows), those whose original is not there now, id -> why: the last
    scan did not find it ('gone'), or it has been moved or deleted since (a local file; an
    object store's are not asked, one request each)."""
    out = {}
    for r in rows:
        if r.get("source_state") == "gone":
            out[r["image_id"]] = "gone since it was colorized (the last scan did not find it)"
        elif "://" not in r["path"] and not os.path.exists(resolve_path(manifest, r["path"])):
            out[r["image_id"]] = "not there now (moved or deleted since the scan?)"
    return out


def _with_originals(manifest: str, t: list[dict], picked: dict[int, set[str]], refuse: bool,
                    log) -> dict[int, set[str]]:
    """An image whose original is not there is left as it is, said: redone, it could only
    become an error row in place of its output (a trial's good output was disowned so, and the
    audit's repair then moved it to quarantine/). None left (and nothing else asked): refused."""
    ids = {i for s in picked.values() for i in s}
    absent = not_there(manifest, (r for r in t if r["image_id"] in ids))
    if not absent:
        return picked
    path = {r["image_id"]: r["path"] for r in t if r["image_id"] in absent}
    first = min(absent, key=path.get)
    left = {sh: s - absent.keys() for sh, s in picked.items()}
    left = {sh: s for sh, s in left.items() if s}
    what = f"{path[first]} is {absent[first]}{' ...' if len(absent) > 1 else ''}"
    if not left and refuse:
        raise UsageError(f"--redo: nothing to redo: {what}; put the original back (or rescan "
                         "the archive where it moved), then redo it")
    log(f"--redo: {plural(len(absent), 'image')} named left as {'it is' if len(absent) == 1 else 'they are'}, "
        f"the original not there: {what}")
    return left


def hinted(outdir: Outdir, keep: bool = True, log=lambda m: None) -> tuple[dict[int, set[str]], dict[str, dict]]:
    """`run --hinted`: the images whose curator's hints (OUTDIR/reviews) differ from those their
    output was made with, (shard -> ids, id -> {"hints": [...]}). An automatic output about to
    be replaced by a hinted one is first copied to OUTDIR/automatic/, so the curator can compare
    and go back (taking the hints away colours the image as the job does again); keep=False (a
    dry run) copies nothing. One whose original is not there waits, said."""
    from pipeline.client.reviews import state_of
    from pipeline.worker.hints import digest_of

    state = state_of(outdir)
    manifest = outdir.read_job()["spec"]["manifest"]
    t = outdir.read_results(columns=None)
    changed = {}
    for r in t.select([c for c in ("image_id", "shard", "status", "output_path", "hints_digest")
                       if c in t.column_names]).to_pylist():
        want = (state.get(r["image_id"]) or {}).get("hints") or []
        if digest_of(want) != r.get("hints_digest"):
            changed[r["image_id"]] = (r, want)
    rows = manifest_rows(manifest, changed) if changed else []
    absent = not_there(manifest, rows)
    if absent:
        first = min((r for r in rows if r["image_id"] in absent), key=lambda r: r["path"])
        log(f"--hinted: {plural(len(absent), 'image')} with new hints left to wait, the original "
            f"not there: {first['path']} is {absent[first['image_id']]}")
    picked: dict[int, set[str]] = {}
    per_image: dict[str, dict] = {}
    for iid, (r, want) in changed.items():
        if iid in absent:
            continue
        picked.setdefault(int(r["shard"]), set()).add(iid)
        # hints on an image skipped as colour (a toned print misjudged): the curator wants it coloured
        per_image[iid] = {"hints": want, **({"recolor": True, "recolor_by": "hints"}
                                            if want and r["status"] == "skipped" else {})}
        if keep and r["status"] == "ok" and not r.get("hints_digest"):
            outdir.keep_automatic(r["output_path"])
    return picked, per_image


def manifest_rows(manifest: str, ids) -> list[dict]:
    states = source_states(manifest)
    t = read_manifest(manifest, columns=["image_id", "path"]).to_pylist()
    return [{**r, "source_state": states.get(r["image_id"])} for r in t if r["image_id"] in ids]


def describe(manifest: str, state: dict, show: int = 10) -> list[str]:
    """A dry run's lines for the images a redo state has pending: each source path and all it
    would be redone with (the first `show`, in the manifest's order)."""
    ids = {i for pend in state["pending"].values() for i in pend}
    t = read_manifest(manifest, columns=["image_id", "path"])
    lines = []
    for iid, path in zip(t.column("image_id").to_pylist(), t.column("path").to_pylist(), strict=True):
        if iid in ids:
            how = options_label(state["overrides"].get(iid, {}))
            lines.append(f"  {path} ({'as the job makes it' if how == 'redo' else how})")
    return lines[:show] + ([f"  ... and {len(lines) - show} more"] if len(lines) > show else [])
