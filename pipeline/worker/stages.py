"""What happens to each image of a shard, stage by stage: read -> decode -> (batch, net: see
shard.py) -> colour -> encode -> write. An Item carries one image through them; its `row` is the
image's result row from the start, so whatever goes wrong is written down where it happened and
the image is finished there (status "error" or "skipped", with the reason)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.client.catalogue import stored_name
from pipeline.client.jobspec import JobSpec
from pipeline.client.manifest import (
    SIDECAR_MISSING,
    SIDECAR_UNREADABLE,
    missing_at_scan,
    resolve_path,
    sidecar_digest,
    sidecar_of,
    sidecar_where,
)
from pipeline.client.outdir import Outdir
from pipeline.client.redo import options_label
from pipeline.errors import plural
from pipeline.storage import Store, read_source
from pipeline.worker import hints as hintlib
from pipeline.worker.imaging import (
    XMP_LIMIT,
    Decoded,
    DecodeError,
    add_sidecar,
    colorfulness,
    decode,
    gray_jpeg_header,
    net_input,
    not_read_here,
    xmp_too_large,
)
from pipeline.worker.writers import encode_output, extension, output_format, provenance, record


def _hints(item: Item, options: dict) -> list:
    """A curator's hints for this image (a redo's options), noted in its row."""
    hinted = hintlib.from_json(options["hints"])
    if hinted:
        item.row.update(hints=len(hinted), hints_digest=hintlib.digest(hinted))
    return hinted


def _on_grid(hinted: list, d: Decoded, size: int) -> list:
    """Hints are in the image's pixels as shown (after its EXIF orientation)."""
    return hintlib.on_grid(hinted, d.width, d.height, size)


class OutputError(RuntimeError):
    """Writing to OUTDIR failed: not the image's fault, so the shard must not commit."""


@dataclass
class Item:
    """One image on its way through a shard."""

    row: dict  # its result row, filled in as it goes
    stem: str  # its output path without the extension: the manifest's out_stem, then images/<it>
    record: dict | None = None  # the catalogue's fields for the output's XMP (xmp.record)
    options: dict | None = None  # a redo's options for this image alone (redo.py), else None
    aside: bool = False  # colorized only by its redo's options: batched apart from the rest
    cells: list | None = None  # a curator's hints on the net's grid (hints.on_grid), else None
    decoded: Decoded | None = None
    sidecar: str | None = None  # where its XMP sidecar is (read into `decoded`), if it has one
    gray: Any = None  # full-resolution gray: decoded.gray, or a device tensor (jpegdev)
    small: Any = None  # the net's input (size x size uint8): an array, or a device tensor
    finished: bool = False  # True once its row is final (an error, a skip, or written)

    @property
    def id(self) -> str:
        return self.row["image_id"]

    def fail(self, reason: str, status: str = "error") -> Item:
        self.row["status"], self.row["error"] = status, reason
        self.finished = True
        return self

    def spend(self, t0: float) -> None:
        """Adds the time since t0 to the image's seconds (time spent on it in every stage)."""
        self.row["seconds"] = self.row.get("seconds", 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class ImageStages:
    """The per-image stages, with what they need of the job: its spec, OUTDIR, the checkpoint's
    digest and the job's date (written into every output's provenance)."""

    spec: JobSpec
    outdir: str
    checkpoint_sha256: str
    created: str = ""
    output_version: int | None = None  # the client's: a worker of another version refuses

    def start(self, mrow: dict, options: dict | None = None) -> Item:
        """A manifest row -> its Item, nothing read yet."""
        return Item(row={"image_id": mrow["image_id"], "shard": mrow["shard"],
                         "source_path": mrow["path"], "status": "error",
                         "checkpoint_sha256": self.checkpoint_sha256,
                         "redone": None if options is None else options_label(options)},
                    stem=mrow["out_stem"], options=options,
                    record=record(self.spec.metadata_columns,
                                  lambda col: mrow.get(stored_name(col)), mrow["rel_path"]))

    def read(self, mrow: dict, options: dict | None = None) -> Item:
        """A manifest row -> an Item, decoded on the host or left for the device's decoder."""
        t0 = time.perf_counter()
        item = self.start(mrow, options)
        hinted = _hints(item, options) if options and options.get("hints") else []
        data = _source_bytes(item, mrow, self.spec.manifest)
        if not item.finished:
            d = (gray_jpeg_header(data, self.spec.max_pixels)
                 if self.spec.jpeg_decode == "device" and not hinted else None)
            if d is not None:  # pixels decoded with the batch, on the net's device
                item.decoded = d
                item.row.update(d.describe())
            else:
                self.decode_host(item, data)
        if mrow.get("xmp_sidecar"):  # read with it (scan pairs them)
            item.sidecar = sidecar_where(self.spec.manifest, mrow["path"], mrow["xmp_sidecar"])
            _read_sidecar(item)
        if hinted and not item.finished:  # its own batch: the job's batches stay as they were
            item.cells, item.aside = _on_grid(hinted, item.decoded, self.spec.size), True
            _outside_said(item, hinted)
        item.spend(t0)
        return item

    def decode_host(self, item: Item, data: bytes) -> None:
        """Pillow: every format, EXIF orientation, colour classification; the net's input."""
        try:
            item.decoded = d = decode(io.BytesIO(data), max_pixels=self.spec.max_pixels)
        except DecodeError as e:
            item.fail(str(e))
            return
        except Exception as e:  # any library's surprise on one odd file: its row, not the shard
            item.fail(f"cannot decode: {type(e).__name__}: {e}")
            return
        item.row.update(d.describe())
        if d.kind == "color" and not self.spec.recolor:
            if not (item.options or {}).get("recolor"):
                item.fail("colour image (use --recolor to recolorize)", status="skipped")
                return
            item.aside = True  # the job's own batches stay as they were (see _Flow)
        try:
            item.gray, item.small = d.gray, net_input(d.gray, self.spec.size)
        except Exception as e:
            item.fail(f"cannot prepare the net's input: {type(e).__name__}: {e}")

    def decode_on_device(self, jpeg, items: list[Item]) -> None:
        """Decodes the deferred JPEGs of a batch in one call on the net's device and makes their
        net inputs there; a file the device refuses goes through Pillow instead."""
        waiting = [it for it in items if it.gray is None]
        if not waiting:
            return
        t0 = time.perf_counter()
        grays = jpeg.decode([it.decoded.encoded for it in waiting])
        share = (time.perf_counter() - t0) / len(waiting)
        for it, g in zip(waiting, grays, strict=True):
            t1 = time.perf_counter()
            data, it.decoded.encoded = it.decoded.encoded, None
            if g is not None and (g.shape[1], g.shape[0]) == it.decoded.size:
                it.gray, it.small = g, jpeg.small(g)
            else:  # a new Decoded: the sidecar's record read into it again
                self.decode_host(it, data)
                _read_sidecar(it)
            it.spend(t1 - share)

    def finish(self, item: Item, rgb_of: Callable[[], Any]) -> Item:
        """The rest of the colour step (rgb_of), then encode and write (a pool thread: numpy,
        Pillow and zlib release the GIL)."""
        t0 = time.perf_counter()
        try:
            rgb = rgb_of()
        except Exception as e:
            item.fail(f"cannot colorize: {type(e).__name__}: {e}")
        else:
            self._write(item, rgb)
        item.spend(t0)
        return item

    def encoded(self, item: Item, rgb, fmt: str) -> tuple[bytes, list[str]]:
        """The output file's bytes and the image's notes (writers.encode_output)."""
        return encode_output(rgb, fmt, item.decoded, self.spec.quality, self._provenance(item))

    def _provenance(self, item: Item) -> dict:
        hinted = ((item.row["hints"], item.row["hints_digest"], item.row.get("hint_model"))
                  if item.row.get("hints") else None)
        return provenance(self.checkpoint_sha256, self.created, item.row.get("source_sha256"),
                          item.record, hinted)

    def _write(self, item: Item, rgb) -> None:
        try:  # writers' calls one after another: the image does not climb back between them
            prov = self._provenance(item)
            fmt = output_format(self.spec.format, item.decoded.format)
            rel = item.stem + extension(fmt)  # checked once, in read()
            data, notes = encode_output(rgb, fmt, item.decoded, self.spec.quality, prov)
        except Exception as e:
            item.fail(f"cannot encode: {type(e).__name__}: {e}")
            return
        store = Store(self.outdir)
        if store.local and (why := _leaves_images(store, rel)):
            item.fail(why)
            return
        try:
            store.write_atomic(rel, data)
        except OSError as e:
            raise _write_error(store, rel, e) from None
        item.row.update(status="ok", error=None, output_path=rel, output_bytes=len(data),
                        notes="; ".join(notes) or None,
                        output_sha256=hashlib.sha256(data).hexdigest(), colorfulness=colorfulness(rgb))
        item.finished = True

    def read_one(self, path: str, options: dict | None = None) -> Item:
        """One file read as a shard's images are (`colorize image`); no net needed yet."""
        name = os.path.basename(path)
        return self.read({"image_id": "", "shard": 0, "path": os.path.abspath(path), "rel_path": name,
                          "out_stem": os.path.splitext(name)[0] or "image",
                          "xmp_sidecar": sidecar_of(os.path.abspath(path))}, options)

    def colour_one(self, net, item: Item) -> bytes:
        """read_one's image, not finished there (an error or a skip): the net (with the hints,
        if any), the colour step, encode; the output's bytes."""
        item.row["checkpoint_sha256"] = self.checkpoint_sha256  # read_one's stages knew no net yet
        if not item.cells:  # none, or none inside the image: the net's own colour
            ab = net.predict_ab([item.small])
        else:
            ab, item.row["hint_model"] = net.hinted_ab(item.small, item.cells)[None], net.hint_model()
        rgb = net.colors.start(item.gray, ab[0], net.quantise_ab(ab)[0])()
        data, notes = self.encoded(item, rgb, output_format(self.spec.format, item.decoded.format))
        item.row.update(status="ok", error=None, notes="; ".join(notes) or None)
        return data


def _leaves_images(store: Store, rel: str) -> str | None:
    """Why an output must not be written where its name leads: a folder below images/ that is a
    symbolic link out of it (into the scans, it would replace an original). images/ itself may
    be a link (to a bigger disk: the run checked it is apart from the sources)."""
    images = os.path.realpath(store.full(Outdir.IMAGES))
    where = os.path.realpath(os.path.dirname(store.full(rel)))
    if where == images or where.startswith(images + os.sep):
        return None
    return (f"its output folder {os.path.dirname(rel)} leads out of {Outdir.IMAGES}/ through a "
            f"symbolic link (to {where}): nothing written there; make it a folder of its own")


def _write_error(store: Store, rel: str, e: OSError) -> OutputError:
    """Why an output cannot be written: a full disk says so itself; a file where a folder must
    be (EEXIST, ENOTDIR from its folders' making) is named, as no rerun gets past it."""
    import errno

    if store.local and e.errno in (errno.EEXIST, errno.ENOTDIR):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = store.full("/".join(parts[:i]))
            if os.path.exists(p) and not os.path.isdir(p):
                return OutputError(f"cannot write {store.full(rel)}: {p} is a file where a folder "
                                   "is needed; move it out of the way, then resume")
    return OutputError(f"cannot write {store.full(rel)}: {e.strerror or e}")


class _NotRead(Exception):
    """A file no reader here opens (imaging.not_read_here): its row says what to convert it to."""


def _source_bytes(item: Item, mrow: dict, manifest: str) -> bytes | None:
    """The source file's bytes (their sha256 into the row); whatever one source does, it is that
    image's row, not the shard's."""
    try:
        item.stem = Outdir.output_rel(item.stem, "")  # a hostile manifest row fails here, alone
        if why := not_read_here(mrow["path"]):  # never read: a camera RAW beside each TIFF
            raise _NotRead(why)
        data = read_source(mrow.get("source") or resolve_path(manifest, mrow["path"]))
        item.row["source_sha256"] = hashlib.sha256(data).hexdigest()
        return data
    except FileNotFoundError:
        item.fail(_not_found(mrow.get("scan_error")))
    except PermissionError:
        item.fail("permission denied reading the source")
    except Exception as e:  # noqa: BLE001
        item.fail(str(e) if isinstance(e, _NotRead) else f"cannot read: {type(e).__name__}: {e}")
    return None


def _outside_said(item: Item, hinted: list) -> None:
    """A row hinted outside its image says how many hints coloured it, and why the others did not."""
    d = item.decoded
    if outside := hintlib.outside(hinted, d.width, d.height):
        item.row["hints"] = len(hinted) - len(outside)
        d.notes.append(f"{plural(len(outside), 'hint')} outside the {d.width}x{d.height} image "
                       f"ignored (at {outside[0]})")


def _read_sidecar(item: Item) -> None:
    """The picture's XMP sidecar into its metadata (imaging.add_sidecar); one gone or unreadable
    since the scan costs that metadata, said, never the picture. The row keeps the sha256 of
    the sidecar's bytes, read into the output or not, or what kept them from being read
    (sidecar_digest): audit --check-inputs tells one edited, or put right, since."""
    if not (path := item.sidecar) or item.finished:
        return
    name = os.path.basename(path)
    try:
        if "://" not in path and (n := os.stat(path).st_size) > XMP_LIMIT:  # not read to be refused
            item.decoded.notes.append(f"XMP sidecar {name} not read ({xmp_too_large(n)})")
            item.row["sidecar_sha256"] = sidecar_digest(path)
            return
        data = read_source(path)
    except Exception as e:  # noqa: BLE001 - whatever the store says: a note
        item.decoded.notes.append(f"XMP sidecar {name} not read ({type(e).__name__}: {e})"[:200])
        item.row["sidecar_sha256"] = SIDECAR_MISSING if isinstance(e, FileNotFoundError) else SIDECAR_UNREADABLE
        return
    add_sidecar(item.decoded, data, name)  # one that does not parse is noted
    item.row["sidecar_sha256"] = hashlib.sha256(data).hexdigest()


def _not_found(scan_error: str | None) -> str:
    """Why a row has no file, as the scan saw it: already missing then, or deleted since."""
    if scan_error and scan_error.startswith("broken symbolic link"):
        return scan_error
    if missing_at_scan(scan_error):
        return "file not found: the catalogue names it, but it was not there at the scan either"
    return "file not found (deleted since the scan?)"
