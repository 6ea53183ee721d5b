"""Writing colour results: one registry of output formats (name, extension, the names a user may
give it, what `--format same` maps to it, its encoder and the metadata it carries). The CLI's
choices, the output extensions and the dispatch all derive from REGISTRY: a new format is one
entry (WebP was added that way). No torch.

And the record in every file: an XMP packet (what museum image databases and exiftool read)
saying which object the image shows (the catalogue's accession number and title, the source's
name) and that its colour is a trained model's (IPTC digital source type), by which checkpoint,
when."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image

from pipeline.worker.hints import made_with
from pipeline.worker.imaging import RDF_NS as RDF
from pipeline.worker.imaging import exif_text_as_written, overlay, parse_xmp, xmp_of


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _itxt(keyword: str, text: str, squeeze: bool = False, lang: tuple[str, str] = ("", "")) -> bytes:
    """lang: the text's language tag and its keyword in that language (a German Copyright
    line stays German to a reader that picks by language)."""
    data = text.encode("utf-8", "surrogateescape")
    # a source's long text compressed, as its writer most likely had it (never the XMP: its
    # spec wants it plain, and ours is read as bytes by audit and --repair)
    big = squeeze and len(data) > 1024
    said = (lang[0].encode("ascii", "ignore").replace(b"\x00", b"")[:79] + b"\x00"
            + lang[1].encode("utf-8", "surrogateescape").replace(b"\x00", b"") + b"\x00")
    return _png_chunk(b"iTXt", keyword.encode("latin-1", "replace")[:79] + b"\x00"
                      + (b"\x01\x00" + said + zlib.compress(data) if big else b"\x00\x00" + said + data))


def provenance(checkpoint_sha256: str, date: str, source_sha256: str | None,
               record: dict | None = None, hints: tuple | None = None) -> dict:
    """What encode() writes into an output's metadata (see provenance_text and packet);
    record: the catalogue's fields for this object (identifier, title, source); hints: how many
    curator's hints it was colorized with, their digest, and the hint model's sha256 (or
    "propagation")."""
    from pipeline import __version__

    p = dict(software=f"archive-colorizer {__version__}", checkpoint_sha256=checkpoint_sha256,
             date=date, source_sha256=source_sha256, record=record or {})
    if hints:
        p["hints"] = hints
    return p


def encode_output(rgb: np.ndarray, fmt: str, d, quality: int, prov: dict) -> tuple[bytes, list[str]]:
    """An output file's bytes and its image's notes: the source's metadata (d: imaging.Decoded)
    where the format carries it, our provenance and record; metadata a writer chokes on is
    dropped with a note, never fatal."""
    notes = list(d.notes)
    prov = {**prov, "source_xmp": d.xmp, "texts": d.texts, "text_langs": d.text_langs}
    at = len(notes)
    if d.bits == 16 and fmt in ("jpeg", "webp"):
        notes.append(f"16-bit scan written as an 8-bit {fmt.upper()} (--format png or tiff keeps 16)")
    try:
        data = encode(rgb, fmt, d.dpi, d.icc_profile, _with_record(d.exif, prov.get("record") or {}),
                      quality=quality, notes=notes, provenance=prov)
    except Exception as e:
        notes.append(f"metadata not carried ({type(e).__name__}: {e})"[:200])
        data = encode(rgb, fmt, quality=quality,  # ours alone: the source's choked the writer
                      provenance={k: v for k, v in prov.items() if k not in ("source_xmp", "texts", "text_langs")})
    # said once the writer has written: the source's XMP (with what was folded into it) may not be
    dropped = any(n.startswith(("source XMP not carried (", "metadata not carried (")) for n in notes[at:])
    if dropped and any(n.startswith("IPTC-IIM block carried in the XMP") for n in notes[:at]):
        notes.append("the IPTC-IIM block's record went with the source's XMP (not carried)")
    if d.texts and fmt != "png":  # the XMP properties the writer left out: all, or those it names
        part = next((n for n in notes[at:] if n.startswith("source XMP in part (")), None)
        gone = ({"*"} if dropped else set(part.rsplit("not carried: ", 1)[1].split(", ")) if part else set())
        notes.insert(at, _texts_said(d, fmt, gone))
    return data, notes


def _texts_said(d, fmt: str, gone: set[str]) -> str:
    """Where a PNG's texts went in an output of another format: the XMP (imaging._texts_in_xmp
    put a Title there, or says why not), unless its property is among those the writer left
    out (`gone`; "*": the source's XMP whole); or nowhere."""
    from pipeline.worker.iim import PNG_TEXT

    kept = sorted(k for k, v in d.text_xmp.items() if v == PNG_TEXT[k] and "*" not in gone and v not in gone)
    why = {k: ("the source's XMP that held it was not carried" if v == PNG_TEXT[k] else v)
           for k, v in sorted(d.text_xmp.items()) if k not in kept}
    left = sorted(k for k in d.texts if k not in d.text_xmp)
    return "PNG text " + "; ".join(
        ([f"{', '.join(kept)} in the XMP only ({', '.join(PNG_TEXT[k] for k in kept)})"] if kept else [])
        + [f"{k} not carried ({v})" for k, v in why.items()]
        + ([f"{', '.join(left)} not carried (a {fmt} has no place for it)"] if left else []))


# EXIF's tags for what the catalogue names in dc:rights and dc:creator: one file states one
# rights line (a source's old "(c) ..." beside the catalogue's "public domain" would say two)
_EXIF_OF_RECORD = {"rights": 0x8298, "creator": 0x013B}  # Copyright, Artist


def _with_record(exif: bytes | None, record: dict) -> bytes | None:
    """The source's EXIF with the catalogue's rights and creator (where the job names those
    columns) in place of its own, as written (UTF-8 bytes: Pillow would write '?')."""
    named = {tag: record[k] for k, tag in _EXIF_OF_RECORD.items() if record.get(k)}
    if not named:
        return exif
    ex = Image.Exif()
    if exif:
        try:
            ex = _loaded(exif)
        except Exception:  # noqa: BLE001 - malformed: the writer notes it; ours alone then
            return exif
    for tag, text in named.items():
        ex[tag] = str(text).encode("utf-8")
    return ex.tobytes()


def xmp_packet(p: dict) -> bytes:
    ours = packet(p, provenance_text(p))
    return merged(ours, p["source_xmp"]) if p.get("source_xmp") else ours


# What a source's XMP says of its own file that the output contradicts: its layout, its colour
# mode (gray), its instance (this is another file).
_SAYS_OF_ITS_FILE = {f"{{{ns}}}{n}" for ns, names in {
    "http://ns.adobe.com/tiff/1.0/": ("Orientation", "ImageWidth", "ImageLength", "BitsPerSample",
                                      "PhotometricInterpretation", "SamplesPerPixel", "Compression",
                                      "XResolution", "YResolution", "ResolutionUnit", "DateTime"),
    "http://ns.adobe.com/exif/1.0/": ("PixelXDimension", "PixelYDimension", "ColorSpace"),
    "http://ns.adobe.com/photoshop/1.0/": ("ColorMode", "ICCProfile", "History",
                                           "DocumentAncestors"),
    "http://ns.adobe.com/xap/1.0/mm/": ("InstanceID", "DocumentID", "History", "DerivedFrom"),
    "http://purl.org/dc/elements/1.1/": ("format",),
    "http://ns.adobe.com/xap/1.0/": ("ModifyDate", "CreateDate"),  # the source file's, not this one's
    "http://ns.adobe.com/xmp/note/": ("HasExtendedXMP",),  # its extension is not carried
}.items() for n in names}


def merged(ours: bytes, source: bytes) -> bytes:
    """The source's XMP with ours added: the archive's rights, creator, keywords and caption
    stay; where both say a thing (the identifier, the tool, the date) ours, the record, wins;
    the source's caption (dc:description) is kept over our line, which the file says elsewhere
    (DigitalSourceType, CreatorTool, its own EXIF/PNG/TIFF text). lxml keeps each namespace's
    own prefix, so the bytes depend on this image alone. Ours alone if it cannot be."""
    from lxml import etree

    try:
        rdf = parse_xmp(source)
        mine = parse_xmp(ours).find(f"{{{RDF}}}Description")
        descs = rdf.findall(f"{{{RDF}}}Description")  # the file's own: not one nested in a
        # property's value (Photoshop's xmpMM:Pantry holds whole Descriptions of placed files)
        said = {t for d in descs for t in [*d.attrib, *(c.tag for c in d)]}
        if "{http://purl.org/dc/elements/1.1/}description" in said:  # the archive's caption
            mine.remove(mine.find("{http://purl.org/dc/elements/1.1/}description"))
        overlay(rdf, mine, also=_of_its_file)
        body = etree.tostring(rdf, encoding="unicode")
    except Exception:  # noqa: BLE001 - imaging.source_xmp parsed it; anything else: ours alone
        return ours
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n' + body
            + '\n</x:xmpmeta>\n<?xpacket end="w"?>').encode("utf-8")


def _of_its_file(tag) -> bool:
    """What a source's XMP says of its own file that the output contradicts: its layout, colour
    mode (gray), identity and history as a document, format, and a raw converter's settings
    (Camera Raw or darktable, from a sidecar, would apply a grayscale conversion or a crop to
    the colour again)."""
    return isinstance(tag, str) and (tag in _SAYS_OF_ITS_FILE or tag.startswith(
        ("{http://ns.adobe.com/camera-raw-settings/1.0/}", "{http://darktable.sf.net/}")))


def provenance_text(p: dict) -> str:
    """One line saying what made this file, for the file's own metadata: a copy taken out of
    OUTDIR still says it was machine-colorized, by what, from which original."""
    return (f"Machine-colorized by {p['software']} (colours are the model's guess, not a record); "
            f"checkpoint sha256 {p['checkpoint_sha256']}; {p['date']}; "
            f"source sha256 {p.get('source_sha256') or 'unknown'}"
            + (f"; colorized with {p['hints'][0]} curator's hints {made_with(*p['hints'][1:])}"
               if p.get("hints") else ""))


def _png(rgb: np.ndarray, dpi, icc, exif, level: int, provenance: dict | None = None) -> bytes:
    """8- or 16-bit RGB PNG, with iCCP/pHYs/eXIf. Written here rather than by Pillow (which
    cannot write 16-bit RGB, and takes ~170 ms for a grainy 1.9-megapixel scan): the Sub filter
    in numpy and libdeflate (imagecodecs) make it ~55 ms, and a file about as large."""
    import imagecodecs

    h, w, _ = rgb.shape
    px = rgb.astype(">u2").view(np.uint8).reshape(h, w, 6) if rgb.dtype == np.uint16 else rgb
    bpp = px.shape[2]
    rows = np.empty((h, 1 + w * bpp), np.uint8)
    rows[:, 0] = 1  # filter type Sub: each byte minus the same byte of the pixel to its left
    body = rows[:, 1:].reshape(h, w, bpp)
    body[:, 0] = px[:, 0]
    np.subtract(px[:, 1:], px[:, :-1], out=body[:, 1:])  # uint8: wraps mod 256, as PNG wants
    depth = 16 if rgb.dtype == np.uint16 else 8
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [round(d / 0.0254) for d in dpi]
        out.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif and provenance:  # the EXIF's Software is ours too (it said Photoshop made this)
        ex = _loaded(exif)
        exif_text_as_written(ex)
        ex[305] = provenance["software"]
        exif = ex.tobytes()
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if provenance:  # ours first, near the start where --repair looks for our mark
        texts = dict(provenance.get("texts") or {})
        said = texts.pop("Comment", None)  # one Comment, the source's and then ours: readers
        out.append(_itxt("Software", provenance["software"]))  # show one of two, the wrong one
        out.append(_itxt("Comment", (f"{said}\n\n" if said else "") + provenance_text(provenance)))
        out.append(_itxt("XML:com.adobe.xmp", xmp_packet(provenance).decode()))
        # then the source's own texts (a Title, an Author); the Software is ours now
        langs = provenance.get("text_langs") or {}
        out += [_itxt(k, v, squeeze=True, lang=langs.get(k, ("", ""))) for k, v in texts.items() if k != "Software"]
    out.append(_png_chunk(b"IDAT", imagecodecs.deflate_encode(rows, level=level)))  # zlib format
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


# Baseline TIFF tags that an EXIF block's IFD0 may hold, carried as themselves in a TIFF.
_TIFF_ASCII_TAGS = {269: "DocumentName", 270: "ImageDescription", 271: "Make", 272: "Model",
                    285: "PageName", 305: "Software", 306: "DateTime", 315: "Artist",
                    316: "HostComputer", 33432: "Copyright"}
# IFD0 tags a TIFF output states of itself (its orientation, resolution, layout) or whose
# sub-IFD the note names: not "left behind"
_TIFF_OWN = {274, 282, 283, 296, 531, 0x8769, 0x8825}


def _tiff(rgb: np.ndarray, dpi, icc, exif, notes: list[str] | None,
          provenance: dict | None = None) -> bytes:
    """8- or 16-bit RGB TIFF by tifffile, deflate by libdeflate (imagecodecs) with the
    horizontal predictor: ~4x faster than Pillow's TIFF writer, which also cannot write EXIF
    that has sub-IFDs (most camera JPEGs: libtiff "Bad LONG8 or IFD8 value"). EXIF's baseline
    tags (Make, Model, DateTime, Artist, Copyright...) become TIFF tags; what lives only in its
    Exif and GPS sub-IFDs is dropped with a note."""
    import tifffile

    extratags = [(34675, 7, len(icc), icc, True)] if icc else []
    kw = dict(resolution=dpi, resolutionunit="INCH") if dpi else {}
    ex = None
    if exif:  # read once for the tags, the date and the unit
        try:
            ex = _loaded(exif)
        except Exception as e:  # malformed EXIF: drop it, never fail the image for it
            if notes is not None:
                notes.append(f"EXIF not carried (malformed: {type(e).__name__})")
    if ex is not None:
        extratags += _exif_as_tiff_tags(ex, notes)
        if provenance and (taken := _date_original(ex)):
            provenance = {**provenance, "date_original": taken}  # the sub-IFD stays behind
        if dpi and ex.get(296) == 3:  # stated per centimetre: a capture spec says so
            kw = dict(resolution=(dpi[0] / 2.54, dpi[1] / 2.54), resolutionunit="CENTIMETER")
    # Software is ours (tifffile would write its own name); ImageDescription too, unless the
    # source had one (a caption is the archive's, not ours to replace).
    extratags = [t for t in extratags if t[0] != 305]
    kw["software"] = (f"{provenance['software']}; {provenance_text(provenance)}" if provenance
                      else False)
    if provenance and not any(t[0] == 270 for t in extratags):
        kw["description"] = provenance_text(provenance)
    if provenance:
        xmp = xmp_packet(provenance)
        extratags.append((700, 1, len(xmp), xmp, True))  # XMLPacket, BYTE as the XMP spec says
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(rgb), photometric="rgb", compression="zlib",
                     compressionargs={"level": 3}, predictor=True, extratags=extratags,
                     metadata=None, **kw)
    return buf.getvalue()


def _loaded(exif: bytes) -> Image.Exif:
    """EXIF bytes (with or without the JPEG segment's 'Exif' header) as Pillow reads them;
    raises what Pillow raises on a malformed block."""
    ex = Image.Exif()
    ex.load(exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    return ex


def _exif_as_tiff_tags(ex: Image.Exif, notes: list[str] | None) -> list[tuple]:
    tags = []
    for tag in _TIFF_ASCII_TAGS:
        v = ex.get(tag)
        if isinstance(v, str):  # as Pillow read it (latin-1): the bytes the source holds
            v = v.encode("latin-1", "replace")
        if isinstance(v, bytes) and v.strip(b"\0 "):
            tags.append((tag, "s", 0, v.strip(b"\0"), True))
    # (the Exif sub-IFD's DateTimeOriginal is the picture's date, not this file's: TIFF's
    # DateTime would say the output was made in 1923; the XMP keeps it, see packet)
    dropped = [n for t, n in ((0x8769, "Exif"), (0x8825, "GPS")) if t in ex]
    if dropped and notes is not None:
        notes.append(f"TIFF output: EXIF {' and '.join(dropped)} sub-IFD not carried "
                     "(baseline tags and the date kept)")
    if (other := sorted(set(ex) - set(_TIFF_ASCII_TAGS) - _TIFF_OWN)) and notes is not None:
        from PIL import ExifTags

        notes.append(f"TIFF output: EXIF {', '.join(ExifTags.TAGS.get(t, str(t)) for t in other)} not carried")
    return tags


def _date_original(ex: Image.Exif) -> str | None:
    """EXIF's DateTimeOriginal as XMP writes it (1961-07-14T09:30:00), or None."""
    try:
        v = str(ex.get_ifd(0x8769).get(36867) or "").strip("\0 ")
    except Exception:  # noqa: BLE001 - a malformed sub-IFD: no date
        return None
    if len(v) < 19 or v[4] != ":" or v[7] != ":":
        return None
    return f"{v[:4]}-{v[5:7]}-{v[8:10]}T{v[11:19]}"


def _pil_rgb(rgb: np.ndarray) -> Image.Image:
    """uint8 (H, W, 3) -> Pillow RGB. Pillow holds RGB as 4 bytes a pixel, so an RGB view of
    an RGBX buffer (what the engine's table lookup writes) goes in as it is, unrepacked."""
    base = rgb.base
    if (isinstance(base, np.ndarray) and base.dtype == np.uint8 and base.ndim == 3
            and base.shape == rgb.shape[:2] + (4,) and base.flags.c_contiguous
            and rgb.strides == base.strides
            and rgb.__array_interface__["data"][0] == base.__array_interface__["data"][0]):
        h, w = rgb.shape[:2]
        return Image.frombytes("RGB", (w, h), base, "raw", "RGBX")
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _jpeg(rgb, dpi, icc, exif, quality, png_level, notes, provenance) -> bytes:
    return _pil(rgb, "JPEG", dpi, icc, exif, provenance, notes,
                dict(quality=quality, subsampling=0 if quality >= 90 else 2))


def _webp(rgb, dpi, icc, exif, quality, png_level, notes, provenance) -> bytes:
    # quality 100 means lossless here: an access copy as exact as a PNG, a third smaller
    return _pil(rgb, "WEBP", None, icc, exif, provenance, notes,
                dict(lossless=True, quality=100, method=4) if quality >= 100 else
                dict(quality=quality, method=4))


@dataclass(frozen=True)
class OutputFormat:
    name: str  # what --format and job.json say
    ext: str  # the output's extension
    names: tuple[str, ...]  # what a user may call it (--format, an output file's extension)
    same_for: tuple[str, ...]  # source formats (Pillow's names) `--format same` writes as this
    bits16: bool  # 16-bit sources stay 16-bit
    carries: str  # the metadata it carries (README, help)
    write: Callable[..., bytes]


REGISTRY = (
    OutputFormat("png", ".png", ("png",), ("PNG",), True,
                 "ICC, DPI, EXIF (eXIf), provenance (iTXt), XMP",
                 lambda rgb, dpi, icc, exif, quality, png_level, notes, provenance:
                 _png(rgb, dpi, icc, exif, png_level, provenance)),
    OutputFormat("jpeg", ".jpg", ("jpeg", "jpg", "jpe"), ("JPEG", "MPO"), False,
                 "ICC, DPI, EXIF, provenance (EXIF, COM), XMP", _jpeg),
    OutputFormat("tiff", ".tif", ("tiff", "tif"), ("TIFF",), True,
                 "ICC, DPI, EXIF's baseline tags, provenance (Software, ImageDescription), XMP",
                 lambda rgb, dpi, icc, exif, quality, png_level, notes, provenance:
                 _tiff(rgb, dpi, icc, exif, notes, provenance)),
    OutputFormat("webp", ".webp", ("webp",), ("WEBP",), False,
                 "ICC, EXIF, provenance (EXIF), XMP; lossless at --quality 100", _webp),
)
BY_NAME = {n: f for f in REGISTRY for n in f.names}
CHOICES = (*(f.name for f in REGISTRY), "same")
# the formats --quality changes (same: a JPEG source's output is a JPEG); PNG and TIFF are lossless
BY_QUALITY = ("jpeg", "webp", "same")


def format_arg(s: str) -> str:
    """--format: a format's name or alias (jpg, tif), or same."""
    f = BY_NAME.get(s.lower().lstrip("."))
    return f.name if f else s.lower()


def by_extension(path: str) -> OutputFormat | None:
    """The format an output file's name asks for (`colorize image IN OUT.webp`)."""
    return BY_NAME.get(path.rsplit(".", 1)[-1].lower()) if "." in path else None


def output_format(fmt: str, source_format: str) -> str:
    """Resolve --format same: the source's format where we can write it, else PNG."""
    if fmt == "same":
        return next((f.name for f in REGISTRY if source_format.upper() in f.same_for), "png")
    if fmt not in {f.name for f in REGISTRY}:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(CHOICES)}")
    return fmt


def extension(fmt: str) -> str:
    return BY_NAME[fmt].ext


def encode(rgb: np.ndarray, fmt: str, dpi=None, icc=None, exif=None, quality: int = 95,
           png_level: int = 3, notes: list[str] | None = None, provenance: dict | None = None) -> bytes:
    """(H, W, 3) uint8 or uint16 RGB -> file bytes in a format of REGISTRY. 16-bit stays 16-bit
    where the format can hold it. Metadata that this format cannot carry is dropped with a note
    in `notes`. provenance (software, checkpoint_sha256, date, source_sha256, record) is written
    into the file's own metadata (see each format's `carries`)."""
    f = BY_NAME.get(fmt)
    if f is None:
        raise ValueError(f"unknown format {fmt!r}")
    if rgb.dtype == np.uint16 and not f.bits16:
        rgb = ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return f.write(rgb, dpi, icc, exif, quality, png_level, notes, provenance)


JPEG_XMP_MAX = 65502  # one APP1 segment, less its namespace header: more needs Extended XMP


def _pil(rgb: np.ndarray, kind: str, dpi, icc, exif, provenance: dict | None, notes: list[str] | None,
         opts: dict) -> bytes:
    """8-bit RGB by Pillow (JPEG, WebP), with its metadata and our provenance."""
    im = _pil_rgb(rgb)
    kw: dict = dict(opts)
    if dpi:
        kw["dpi"] = dpi
    if icc:
        kw["icc_profile"] = icc
    if provenance:
        ex = _loaded(exif) if exif else Image.Exif()
        if exif:
            exif_text_as_written(ex)
        ex[305] = provenance["software"]
        ex.setdefault(270, provenance_text(provenance))
        exif = ex.tobytes()
        if kind == "JPEG":
            kw["comment"] = provenance_text(provenance).encode()
        kw["xmp"] = xmp_packet(provenance) if kind != "JPEG" else _jpeg_xmp(provenance, notes)
    if exif:
        kw["exif"] = exif
    buf = io.BytesIO()
    im.save(buf, kind, **kw)
    return buf.getvalue()


# The namespaces of an archive's record in XMP: rights, creator, title, caption, keywords,
# credit, location; kept in a JPEG whose whole XMP would not fit, where the rest goes first
_RECORD_NS = {"http://purl.org/dc/elements/1.1/", "http://ns.adobe.com/xap/1.0/rights/",
              "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/", "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
              "http://ns.adobe.com/photoshop/1.0/", "http://ns.useplus.org/ldf/xmp/1.0/"}


def _jpeg_xmp(provenance: dict, notes: list[str] | None) -> bytes:
    """Ours and the source's XMP in one JPEG segment: where it would not fit (a placed-files
    pantry, a long caption), the source's properties go, largest first, those of no record
    before any of the record, until it fits (all of them had gone, the rights with them); the
    note names what went."""
    from lxml import etree

    xmp = xmp_packet(provenance)
    if (n := len(xmp)) <= JPEG_XMP_MAX or not provenance.get("source_xmp"):
        return xmp  # (ours alone too large: the writer refuses it, and encode_output says so)
    rdf = parse_xmp(provenance["source_xmp"])  # merged() parsed it: it parses
    props = [(d, c) for d in rdf.findall(f"{{{RDF}}}Description") for c in d if isinstance(c.tag, str)]
    props.sort(key=lambda dc: (etree.QName(dc[1]).namespace in _RECORD_NS, -len(etree.tostring(dc[1]))))
    gone = []
    for d, c in props:
        d.remove(c)
        gone.append(f"{c.prefix}:{etree.QName(c).localname}" if c.prefix else etree.QName(c).localname)
        if len(xmp := xmp_packet({**provenance, "source_xmp": xmp_of(rdf)})) <= JPEG_XMP_MAX:
            break
    else:
        xmp = xmp_packet({**provenance, "source_xmp": None})
    if notes is not None:
        notes.append((f"source XMP in part ({n // 1024 + 1} KB with ours, more than a JPEG's XMP segment "
                      f"holds; a TIFF or PNG output keeps it all): not carried: {', '.join(gone)}")
                     if len(gone) < len(props) else
                     f"source XMP not carried ({n // 1024 + 1} KB with ours, more than a JPEG's XMP "
                     "segment holds; a TIFF or PNG output keeps it)")
    return xmp


# --- the XMP record ------------------------------------------------------------------------------

# Colour made by a trained model, joined with the scan's own lightness: a composite with trained
# algorithmic media, in IPTC's vocabulary (trainedAlgorithmicMedia alone would say the whole
# picture was generated).
DIGITAL_SOURCE_TYPE = ("http://cv.iptc.org/newscodes/digitalsourcetype/"
                       "compositeWithTrainedAlgorithmicMedia")
NS_COLORIZE = "https://github.com/archive-colorizer/ns/1.0/"
# Which catalogue column fills which XMP field when --metadata-columns says nothing: the first
# column whose name (case and spaces aside) is one of these.
GUESSES = {
    "identifier": ("accession", "accession number", "accession no", "accessionnumber",
                   "accession_number", "inventory number", "inventory no", "inventarnummer",
                   "inventarnr", "inventar-nr", "inv-nr", "inv.-nr.", "objektnummer",
                   "object number", "objectnumber", "object id", "signatur", "shelfmark",
                   "call number",
                   # fr, pl, es/cs/it, nl, sv, cs, pt, el
                   "cote", "numéro d'inventaire", "n° d'inventaire", "numero d'inventaire",
                   "sygnatura", "numer inwentarzowy", "nr inw.", "nr inwentarzowy", "signatura",
                   "número de inventario", "numero di inventario", "segnatura", "objectnummer",
                   "inventarisnummer", "inventarienummer", "inventární číslo", "número de inventário",
                   "αριθμός ευρετηρίου", "identifier", "identifiant", "id"),
    "title": ("title", "titel", "caption", "bildtitel", "objekttitel", "object title",
              "titre", "légende", "tytuł", "título", "titolo", "název", "τίτλος", "name",
              "description", "beschreibung"),
}
# Abbreviations a collection system's export writes that earlier versions did not guess
# ("Acc. No.", "Inv.", "Object No."): a job one of them began goes on as it began (GENERATIONS).
GUESSES_BEFORE = GUESSES
GUESSES = {**GUESSES, "identifier": (*GUESSES["identifier"], "acc no", "acc nr", "accession nr",
                                     "inv", "inv no", "inv nr", "inventory nr", "inventar nr",
                                     "object no", "object nr", "obj no", "objektnr", "objekt nr")}
# How versions guessed, oldest first: a column name's spelling (case and spaces aside; then the
# dots and dashes of abbreviations aside too, and rights and creator named came "also"), and
# the names guessed.
GENERATIONS = ((lambda n: n.strip().lower(), False, GUESSES_BEFORE), (None, True, GUESSES_BEFORE),
               (None, True, GUESSES))
# Named only (`rights=Rechte,creator=Fotograf`), never guessed: 'auto' names what it named before,
# so a job made by an earlier version resumes as the same job.
NAMED_ONLY = ("rights", "creator")
FIELDS = (*GUESSES, *NAMED_ONLY)


# One field from several columns, the first with a cell: `identifier=Inventarnummer||Accession No.`,
# where each delivery's catalogue named the accession number its own way (each row has one).
OR = "||"  # two: a catalogue column may have a bar in its name (Inv|Nr)


def alternatives(columns: str) -> list[str]:
    return columns.split(OR)


def first_cell(columns: str, cell):
    """A field's value for one row: the first of its columns with a cell (cell(column) gives it)."""
    return next((v for c in alternatives(columns) if (v := cell(c)) not in (None, "")), None)


def widens(before: str, now: str) -> bool:
    """Whether mapping `now` is `before` with more columns to fall back on for its fields, or
    fields it had no column for (a new delivery's catalogue): the outputs `before` wrote keep
    their record, and those whose record `now` would change (few: a new catalogue's rows) are
    found by the audit (record_missing), so the job goes on."""
    try:
        b, n = parse_columns(before), parse_columns(now)
    except ValueError:
        return False
    return b.keys() <= n.keys() and b != n and all(
        alternatives(n[k])[:len(alternatives(b[k]))] == alternatives(b[k]) for k in b)


def parse_columns(spec: str) -> dict[str, str]:
    """'identifier=Inventarnummer,title=Titel' -> {field: column}; 'auto' and 'none' -> {}.
    A column may be several, 'Inventarnummer||Accession No.' (first_cell)."""
    if spec.strip().lower() in ("auto", "none", ""):
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in FIELDS or not col.strip():
            raise ValueError(f"{part!r}: say FIELD=COLUMN, FIELD one of {', '.join(FIELDS)}")
        out[key] = col.strip()
    return out


def _spelled(name: str) -> str:
    """A column name as GUESSES compares it: case, and the dots, dashes, underscores, colons
    and number signs of abbreviations aside ("Accession No." is "accession no", "Inv.-Nr." is
    "inv nr", "Object_ID" is "object id")."""
    return " ".join(re.sub(r"[._\-:#°/]+", " ", name.lower()).split())


def record_columns(mapping: str) -> list[str]:
    """The catalogue columns an output's own metadata holds (XMP, and EXIF's rights and
    creator), as a job's mapping names them: a change to any other cell leaves the file right."""
    return list(dict.fromkeys(c for v in parse_columns(mapping).values() for c in alternatives(v)))


def resolve_columns(spec: str, columns: list[str], before: str | None = None,
                    sets: list[list[str]] | None = None) -> str:
    """The job's mapping as written into job.json: the user's, checked against the catalogue's
    columns, with the identifier and title guessed by name ('auto', or a spec that names only
    rights and creator: they come "also"); 'none': no catalogue fields. sets: each catalogue's
    own columns (the manifest's, in the order read): a field is guessed in the first, and a
    later catalogue's own name for it is the next column to read it from (first_cell).
    before: the mapping an existing job recorded; where an earlier version resolved this spec
    so (it guessed without an abbreviation's dots, and not beside rights and creator), the job
    goes on as it was, with a new catalogue's columns to fall back on (widens)."""
    now = _resolve(spec, columns, GENERATIONS[-1], sets)
    if before is None or before == now:
        return now
    earlier = [_resolve(spec, columns, g, sets) for g in GENERATIONS[-2::-1]]  # newest first
    if before in earlier:  # as an earlier version guessed it, from the same catalogue
        return before
    if sets:  # the version that began the job, by how it read the first catalogue: it widens it
        # (a newer version's guess in May's own columns, 'Inv', would have every output done
        # before wanting a redo for it)
        for g in GENERATIONS[::-1]:
            with contextlib.suppress(ValueError):
                if _resolve(spec, sets[0], g, sets[:1]) == before:
                    wide = _resolve(spec, columns, g, sets)
                    return wide if widens(before, wide) else before
    if widens(before, now):
        return now
    return next((legacy for legacy in earlier if widens(before, legacy)), now)


def _resolve(spec: str, columns: list[str], generation: tuple, sets: list[list[str]] | None) -> str:
    if spec.strip().lower() == "none":
        return "none"
    chosen = parse_columns(spec)
    missing = [c for v in chosen.values() for c in alternatives(v) if c not in columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r} in the catalogue (columns: "
                         f"{', '.join(columns) or 'none'})")
    spelled, also, guesses = generation
    spelled = spelled or _spelled
    guess = spec.strip().lower() == "auto" or (also and not {"identifier", "title"} & chosen.keys())
    if guess:
        named = {c for v in chosen.values() for c in alternatives(v)}
        for key, names in guesses.items():
            hits, read = [], set()
            for cols in [c for c in (sets or []) if set(c) <= set(columns)] or [columns]:
                earlier, read = read, read | set(cols)
                if any(h in cols for h in hits):  # a catalogue that has the column read already
                    continue
                norm = {spelled(c): c for c in reversed(cols)}  # the first of equals wins
                hit = next((norm[spelled(n)] for n in names if spelled(n) in norm), None)
                # a later catalogue's column that an earlier one has too means something else
                # there (May's shelfmark beside its accession number): not read as this field
                if hit is not None and hit not in named and hit not in hits and (not hits or hit not in earlier):
                    hits.append(hit)
            if hits:
                chosen[key] = OR.join(hits)
    return ",".join(f"{k}={v}" for k, v in chosen.items()) or "none"


def record(mapping: str, cell, source_name: str) -> dict:
    """What an output says about its object: each mapped field's cell (cell(column) gives it),
    and the source's name."""
    out = {k: v for k, col in parse_columns(mapping).items() if (v := first_cell(col, cell)) is not None}
    out["source"] = source_name
    return out


def _alt(text: str) -> str:
    return (f"<rdf:Alt><rdf:li xml:lang=\"x-default\">{_xml(text)}</rdf:li></rdf:Alt>")


def _clean(text: str) -> str:
    # XML 1.0 cannot hold most control characters, even escaped; a catalogue cell rarely has them
    return "".join(ch for ch in str(text) if ch >= " " or ch in "\t\n\r")


def _xml(text: str) -> str:
    return escape(_clean(text))


def record_xml(rec: dict) -> list[str]:
    """The catalogue's fields of an XMP packet, as packet() writes them (the audit looks for
    them in an output's own bytes)."""
    body = []
    if rec.get("identifier"):
        body.append(f"<dc:identifier>{_xml(rec['identifier'])}</dc:identifier>")
    if rec.get("title"):
        body.append(f"<dc:title>{_alt(rec['title'])}</dc:title>")
    if rec.get("creator"):
        body.append(f"<dc:creator><rdf:Seq><rdf:li>{_xml(rec['creator'])}</rdf:li></rdf:Seq></dc:creator>")
    if rec.get("rights"):
        body.append(f"<dc:rights>{_alt(rec['rights'])}</dc:rights>")
    return body


def record_missing(mapping: str, before: list[str], cell, data) -> bool:
    """Whether an output lacks a field of its record that the job's mapping gives now and an
    earlier mapping of the job (before: what it was widened from) did not: written before the
    job read that column. cell(column) gives the row's cells; data() the output's bytes, read
    only for such a row (its XMP is never compressed); an output not there is another matter."""
    now = record(mapping, cell, "")
    late = {k: v for k, v in now.items() if k != "source"
            and any(record(b, cell, "").get(k) != v for b in before)}
    if not late:
        return False
    try:
        got = data()
    except OSError:
        return False
    return not all(x.encode() in got for x in record_xml(late))


def packet(provenance: dict, description: str) -> bytes:
    """The XMP packet (UTF-8) for one output. provenance: software, checkpoint_sha256, date,
    source_sha256 and, when the job has a catalogue, record (identifier, title, source)."""
    rec = provenance.get("record") or {}
    attrs = {
        "xmp:CreatorTool": provenance["software"],
        "Iptc4xmpExt:DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "colorize:CheckpointSHA256": provenance["checkpoint_sha256"],
        # the line in words, always: dc:description yields to the archive's caption
        "colorize:Statement": description,
    }
    if provenance.get("date"):
        attrs["xmp:MetadataDate"] = provenance["date"]
    if provenance.get("source_sha256"):
        attrs["colorize:SourceSHA256"] = provenance["source_sha256"]
    if provenance.get("date_original"):
        attrs["exif:DateTimeOriginal"] = provenance["date_original"]
    body = record_xml(rec)
    if rec.get("source"):
        body.append(f"<dc:source>{_xml(rec['source'])}</dc:source>")
    body.append(f"<dc:description>{_alt(description)}</dc:description>")
    attr_text = "".join(f"\n    {k}={quoteattr(_clean(v))}" for k, v in attrs.items())
    xml = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        + ('    xmlns:exif="http://ns.adobe.com/exif/1.0/"\n' if "exif:DateTimeOriginal" in attrs else "")
        + f'    xmlns:colorize="{NS_COLORIZE}"{attr_text}>\n   '
        + "\n   ".join(body)
        + "\n  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>"
    )
    return xml.encode("utf-8")
