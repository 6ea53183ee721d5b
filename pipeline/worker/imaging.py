"""Decode any archive scan to a monochrome lightness image, and the net's input (no torch). The
outputs are written by writers.py.

Decoding never pads or guesses: truncated, oversized or unreadable files raise DecodeError
with a reason that ends up in the result row.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.worker import icc, iim

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated scan is an error, never silently padded
DEFAULT_MAX_PIXELS = 200_000_000  # ~14,000 x 14,000; above this a file is treated as a bomb
MIN_DPI, MAX_DPI = 1.0, 1_000_000.0  # outside this a DPI is a broken header, not a resolution

# Chroma (a*, b* distance) below which a pixel counts as neutral, and the spread of a/b
# at equal lightness below which an RGB scan counts as toned (sepia, cyanotype) not colour.
NEUTRAL_CHROMA = 4.0
TONED_SPREAD = 3.0
# Below this 99th-percentile chroma a print is nearly neutral: a faint cast (split toning, a
# cool or warm tinge, colour fringes at edges) whose hues scatter. Measured (jobs/
# classifier_rates.py): 8 of 281 real old prints were called colour for it; none of 1,025
# colour photos is this pale.
FAINT_CHROMA = 10.0
# Toned prints (sepia, cyanotype, selenium, platinum) have one hue family: the mean resultant
# length of the hue angles of their chromatic pixels is near 1. Below this, several distinct
# hues: colour (0.85 is a circular spread of about 32 degrees).
TONED_HUE_COHERENCE = 0.85


class DecodeError(Exception):
    """The file cannot be decoded into an image we can colorize; str(e) is the reason."""


@dataclass
class Decoded:
    # (H, W) uint8 or uint16, sRGB-encoded lightness, orientation applied. None while the
    # pixels wait in `encoded` for the device's JPEG decoder (gray_jpeg_header), which puts
    # its tensor in the shard's Item, not here: this module knows no torch.
    gray: np.ndarray | None
    mode: str  # the source's Pillow mode
    format: str  # the source's Pillow format (JPEG, PNG, TIFF, ...)
    kind: str  # "gray" | "toned" | "color"
    dpi: tuple[float, float] | None = None
    icc_profile: bytes | None = None  # the output's: the source's if sRGB, else sRGB (icc.read)
    exif: bytes | None = None  # orientation reset: pixels are already upright
    xmp: bytes | None = None  # the source's XMP packet, checked to parse (writers merge ours in)
    texts: dict[str, str] = field(default_factory=dict)  # a PNG's text chunks (Title, Author...)
    text_langs: dict[str, tuple[str, str]] = field(default_factory=dict)  # an iTXt's language, keyword in it
    text_xmp: dict[str, str] = field(default_factory=dict)  # a Title's XMP property, or why not there
    notes: list[str] = field(default_factory=list)
    encoded: bytes | None = None  # the file, while gray is None
    size: tuple[int, int] | None = None  # (width, height), while gray is None

    @property
    def bits(self) -> int:
        return 16 if self.gray is not None and self.gray.dtype == np.uint16 else 8

    @property
    def height(self) -> int:
        return self.size[1] if self.gray is None else int(self.gray.shape[0])

    @property
    def width(self) -> int:
        return self.size[0] if self.gray is None else int(self.gray.shape[1])

    def describe(self) -> dict:
        """What a result row says of the source."""
        return dict(width=self.width, height=self.height, input_mode=self.mode, input_kind=self.kind,
                    bits=self.bits, notes="; ".join(self.notes) or None)


def _record_warnings() -> None:
    """Inside catch_warnings(record=True): every warning recorded (each becomes a note), except
    Pillow's of an IPTC or other TIFF tag longer than it expects: that block is not carried
    anyway (a note says so)."""
    warnings.simplefilter("always")
    warnings.filterwarnings("ignore", message="Metadata Warning", category=UserWarning)


warnings.filterwarnings("ignore", message="Metadata Warning", category=UserWarning)


DIGITAL_SOURCE = b"compositeWithTrainedAlgorithmicMedia"  # in every output's XMP (writers)


# Files an archive holds beside its scans that no reader here opens: what each is, and what makes
# it one we do (scan lists them by extension, so that none of them vanishes from the count).
NOT_READ_HERE = {
    "heic": "an HEIC photo (iPhones' format): convert it to JPEG or TIFF (e.g. heif-convert) first",
    "pdf": "a PDF document, not an image: export its pages as TIFF first",
    "appledouble": ("a macOS AppleDouble file ('._' and the name of the picture it belongs to: "
                    "Finder metadata, copied off a Mac), not a scan: remove it from the catalogue"),
    "system": "an operating system's folder file (.DS_Store, Thumbs.db), not a scan: remove it from the catalogue",
    "raw": "a camera RAW file: develop it to TIFF first",
    "jxl": "a JPEG XL image: convert it to PNG or TIFF first",
    "djvu": "a DjVu document: export its pages as TIFF first",
}
NOT_READ_EXTS = {".heic": "heic", ".heif": "heic", ".pdf": "pdf", ".jxl": "jxl", ".djvu": "djvu",
                 **{e: "raw" for e in (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw",
                                       ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw",
                                       ".x3f", ".3fr", ".iiq", ".erf", ".mos", ".kdc", ".rwl")}}


def not_read_here(name: str) -> str | None:
    """Why a file of this name is not colorized (a DNG would open as its TIFF preview, not the
    picture), or None."""
    kind = NOT_READ_EXTS.get(os.path.splitext(name)[1].lower())
    return NOT_READ_HERE[kind] if kind else None


def _what_it_is(head: bytes, name: str) -> str:
    """Why an unidentified file is not colorized, by its first bytes, else its extension."""
    if head.startswith(b"%PDF"):
        kind = "pdf"
    elif head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
        kind = "heic"
    elif head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        kind = "jxl"
    elif head.startswith(b"\x00\x05\x16\x07") or os.path.basename(name).startswith("._"):
        kind = "appledouble"
    elif head[4:8] == b"Bud1" or os.path.basename(name).lower() in (".ds_store", "thumbs.db", "desktop.ini"):
        kind = "system"
    else:
        kind = NOT_READ_EXTS.get(os.path.splitext(name)[1].lower())
    return NOT_READ_HERE[kind] if kind else "not an image (unrecognised format)"


def _tiff_unread(data: bytes) -> str:
    """Why a file that starts as a TIFF does not open: what its first page holds (tifffile reads
    what Pillow does not), or that it is damaged."""
    import logging

    import tifffile

    # its complaints ("invalid offset to first page") went to the run's log as bare lines naming
    # no file, twice per damaged TIFF; what it found becomes the error row's reason instead
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as t:
            if not len(t.pages):
                return ("damaged or truncated TIFF: it holds no readable image directory (cut "
                        "short? compare with a backup)")
            p = t.pages[0]
            fmt = tifffile.SAMPLEFORMAT(p.sampleformat).name.lower()
            what = (f"{p.samplesperpixel} samples of {p.bitspersample}-bit {fmt} "
                    f"({tifffile.PHOTOMETRIC(p.photometric).name.lower()}"
                    + (", with alpha" if p.extrasamples else "") + ")")
    except Exception as e:  # noqa: BLE001 - tifffile's own errors: a TIFF no reader can follow
        return f"damaged or truncated TIFF ({type(e).__name__}: {e})"[:200]
    return (f"a TIFF of {what} that this reader does not open: save it as 8- or 16-bit gray or "
            "RGB (flatten its alpha) first")


@dataclass
class Header:
    width: int
    height: int
    mode: str
    format: str
    frames: int
    ours: bool = False  # its metadata says this tool colorized it: an output, not an original


# Pillow's bomb check reads one global at open time: held while set and used, as the review
# server opens sources and its own outputs from several threads.
_PIXELS = threading.Lock()


def open_within(data: bytes, max_pixels: int | None) -> Image.Image:
    """An image file's bytes opened lazily under the job's --max-pixels (None: a file this tool
    wrote, its size checked when its source was read). Pillow's own default would warn above 89 M
    pixels and refuse above 179 M, which the job's default (200 M) lets through."""
    with _PIXELS:
        before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            return Image.open(io.BytesIO(data))
        finally:  # checked at open: the process's other opens keep their limit
            Image.MAX_IMAGE_PIXELS = before


def _open(path: str | os.PathLike | io.BytesIO, max_pixels: int, preview: int = 0) -> Image.Image:
    try:
        with _PIXELS, warnings.catch_warnings(record=True) as caught:  # a run's log is for users:
            _record_warnings()  # Pillow's warnings name no file; they become notes (decode)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check uses the same limit
            im = Image.open(path)
        im.colorize_warnings = [str(w.message) for w in caught]
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:
        raise DecodeError("is a directory, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own message cites its error threshold (twice the limit): cite ours.
        raise DecodeError(f"decompression bomb refused: more than the {max_pixels:,}-pixel limit "
                          "(--max-pixels)") from None
    except UnidentifiedImageError:
        if isinstance(path, (str, os.PathLike)):
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        else:  # a file object (BytesIO, fsspec): its length, and its first bytes
            size = path.seek(0, 2)
            path.seek(0)
            head = path.read(1 << 16)
        if size == 0:
            raise DecodeError("empty file") from None
        bits = _jpeg_precision(head)
        if bits and bits != 8:
            raise DecodeError(f"{bits}-bit JPEG: not supported (only 8-bit JPEGs are; "
                              "convert it to a 16-bit TIFF or PNG)") from None
        if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            raise DecodeError(_tiff_unread(_raw_bytes(path))) from None
        raise DecodeError(_what_it_is(head, str(getattr(path, "name", path)))) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        kind = "truncated file" if "runcated" in str(e) else "unreadable header"
        raise DecodeError(f"{kind}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise DecodeError(f"decompression bomb refused: {w}x{h} is more than the {max_pixels:,}-pixel "
                          "limit (--max-pixels)")
    if w < 1 or h < 1:
        im.close()
        raise DecodeError(f"degenerate size {w}x{h}")
    if preview and im.format == "JPEG":  # a thumbnail's: 1/2-1/8 of its size, still this large
        im.draft(im.mode, (preview, preview))
    return im


def _jpeg_precision(head: bytes) -> int | None:
    """The sample precision in a JPEG's start-of-frame marker (8, or 12 for medical/raw-ish
    scans Pillow cannot read); None if head is not a JPEG or has no SOF in it."""
    if not head.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return head[i + 4] if i + 4 < len(head) else None
        i += 2 + length
    return None


def read_header(path: str | os.PathLike | io.IOBase, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Size, mode and format from the header alone (no pixel decoding)."""
    try:
        im = _open(path, max_pixels)
    except DecodeError as e:  # a caption too large for Pillow: the picture is still one
        im = _open(io.BytesIO(_without_big_texts(path, e)[0]), max_pixels)
    with im:
        xmp = im.info.get("xmp") or b""
        said = xmp if isinstance(xmp, bytes) else str(xmp).encode()
        ours = DIGITAL_SOURCE in said and b"archive-colorizer" in said  # read with the header
        return Header(im.width, im.height, im.mode, im.format or "", getattr(im, "n_frames", 1), ours)


_SRGB_TO_LIN_8 = np.where(
    (v := np.arange(256) / 255.0) > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92
).astype(np.float32)


def _lin_to_srgb(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0.0031308, 1.055 * np.maximum(y, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * y)


_SRGB_TO_LIN_16: np.ndarray | None = None


def luminance_gray(rgb: np.ndarray, rows: int = 512,
                   weights: tuple[float, float, float] = (0.212671, 0.715160, 0.072169),
                   profile: icc.Profile | None = None) -> np.ndarray:
    """uint8 or uint16 (H, W, 3) -> (H, W) of the same depth: the neutral gray with the same Y,
    so L* is preserved (16 bits for 48-bit flatbed scans). weights: another film's sensitivity
    (color.FILMS) instead of Y, as evaluation's historical inputs. profile: the scan's own ICC
    profile (icc.read) where its pixels are not sRGB."""
    global _SRGB_TO_LIN_16
    if profile is not None:
        return _encode_y(rgb, profile.luminance, rows)
    if rgb.dtype == np.uint16:
        if _SRGB_TO_LIN_16 is None:
            v = np.arange(65536) / 65535.0
            _SRGB_TO_LIN_16 = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4,
                                       v / 12.92).astype(np.float32)
        lut = _SRGB_TO_LIN_16
    else:
        lut = _SRGB_TO_LIN_8
    w = np.array(weights, np.float32)  # by default the Y row of skimage's xyz_from_rgb
    return _encode_y(rgb, lambda part: lut[part[..., :3]] @ w, rows)


def _encode_y(pixels: np.ndarray, y_of, rows: int = 512) -> np.ndarray:
    """(H, W[, C]) -> (H, W) sRGB-encoded gray of the same depth, from y_of(rows of pixels): their
    luminance. In strips: a 10,000 x 8,000 scan stays affordable."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    out = np.empty(pixels.shape[:2], pixels.dtype)
    for r in range(0, pixels.shape[0], rows):
        out[r : r + rows] = np.clip(np.rint(_lin_to_srgb(y_of(pixels[r : r + rows])) * top), 0, top)
    return out


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF/TIFF orientation (1-8) applied to an (H, W, ...) array, as exif_transpose does."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: np.swapaxes(x, 0, 1), 6: lambda x: np.rot90(x, -1),
           7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1], 8: lambda x: np.rot90(x, 1)}
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _png16(raw: bytes) -> np.ndarray | None:
    """A 16-bit PNG's full samples (Pillow keeps 8 of them); None where the codec refuses a file
    Pillow read (a damaged one: its 8 bits stand, with the checksum note)."""
    import imagecodecs

    try:
        return imagecodecs.png_decode(raw)
    except Exception:  # noqa: BLE001 - imagecodecs' own error types
        return None


def _tiff_orientation(src: Image.Image) -> int:
    """A TIFF's orientation tag, read before its pixels load: Pillow turns a TIFF upright as it
    loads it and takes the tag out of its own tags. (Not a PNG's: its getexif() would load the
    pixels to look for an eXIf chunk after them, and a damaged file's error be lost here.)"""
    tags = getattr(src, "tag_v2", None)
    try:
        o = int(tags.get(274, 1)) if tags is not None else 1
    except (TypeError, ValueError):
        return 1
    return o if o in range(1, 9) else 1


def _rgb16(src: Image.Image, raw: bytes, tiff_orientation: int) -> np.ndarray | None:
    """The full 16 bits of a 48/64-bit RGB(A) PNG or TIFF (Pillow reads them as 8-bit RGB),
    alpha flattened on white, turned upright; None for anything else."""
    fmt = src.format or ""
    if fmt == "PNG" and raw[24:25] == b"\x10" and raw[25:26] in (b"\x02", b"\x06"):
        a = _png16(raw)
        if a is None:
            return None
        orientation = src.getexif().get(0x0112, 1)
    elif fmt == "TIFF" and tuple(getattr(src, "tag_v2", {}).get(258, ())) in ((16, 16, 16), (16, 16, 16, 16)):
        import tifffile

        a = tifffile.imread(io.BytesIO(raw), key=0)
        orientation = tiff_orientation
    else:
        return None
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
        return None
    if a.shape[2] == 4:
        al = a[..., 3:].astype(np.float32) / 65535.0
        a = np.rint(a[..., :3] * al + 65535.0 * (1 - al)).astype(np.uint16)
    return _orient(a, int(orientation))


def _gray16_alpha(src: Image.Image, raw: bytes, orientation: int, notes: list[str]) -> np.ndarray | None:
    """A 16-bit gray+alpha PNG's full 16 bits, alpha flattened on white, turned upright; None
    where the codec refuses what Pillow read (a damaged file: its 8 bits, with the note)."""
    a = _png16(raw)
    if a is None:
        return None
    al = a[..., 1].astype(np.float32) / 65535.0
    if al.min() < 1:
        notes.append("alpha flattened on white")
    g = np.rint(a[..., 0] * al + 65535.0 * (1 - al)).astype(np.uint16)
    return _orient(g, orientation)


def classify_rgb(rgb: np.ndarray, profile: icc.Profile | None = None) -> str:
    """'gray', 'toned' or 'color' for an 8- or 16-bit RGB image, judged on a thumbnail (as it
    looks through its ICC profile, where it has one that is not sRGB)."""
    from skimage.color import rgb2lab

    step = max(1, max(rgb.shape[:2]) // 128)
    thumb = rgb[::step, ::step, :3]
    if profile is not None:
        thumb = profile.to_srgb8(thumb)
    elif thumb.dtype == np.uint16:
        thumb = (thumb >> 8).astype(np.uint8)
    thumb = thumb.astype(np.float32) / 255.0
    lab = rgb2lab(thumb).reshape(-1, 3)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    p99 = np.percentile(chroma, 99)
    if p99 < NEUTRAL_CHROMA:
        return "gray"
    if p99 < FAINT_CHROMA:  # a faint cast: its hues are noise, and no colour photo is this pale
        return "toned"
    chromatic = chroma >= NEUTRAL_CHROMA
    hue = np.arctan2(lab[chromatic, 2], lab[chromatic, 1])
    w = chroma[chromatic]
    coherence = float(np.hypot((w * np.cos(hue)).sum(), (w * np.sin(hue)).sum()) / w.sum())
    if coherence < TONED_HUE_COHERENCE:  # several hue families: red, green and blue stripes...
        return "color"
    # Toned prints have one hue per lightness: a/b are a function of L*. Colour photos are not.
    bins = np.clip((lab[:, 0] // 10).astype(int), 0, 9)
    spread, n = 0.0, 0
    for b in np.unique(bins):
        sel = lab[bins == b, 1:]
        if len(sel) >= 4:
            spread += float(sel.std(axis=0).max()) * len(sel)
            n += len(sel)
    return "toned" if n and spread / n < TONED_SPREAD else "color"


def _flatten_alpha(im: Image.Image, notes: list[str]) -> Image.Image:
    base = "L" if im.mode in ("LA", "La") else "RGB"
    alpha = im.getchannel("A")
    if alpha.getextrema()[0] < 255:
        notes.append("alpha flattened on white")
    bg = Image.new(base, im.size, (255, 255, 255) if base == "RGB" else 255)  # 255 alone is red
    bg.paste(im.convert(base), mask=alpha)
    return bg


def _oriented(src: Image.Image, notes: list[str]):
    """(EXIF, upright image). A malformed EXIF block costs the metadata and the orientation it
    may hold, never the picture (real scans carry such blocks; the pixels decode fine)."""
    try:
        exif_obj = src.getexif()
        return exif_obj, ImageOps.exif_transpose(src) or src
    except (SyntaxError, ValueError, struct.error, OSError) as e:
        notes.append(f"EXIF unreadable, ignored ({type(e).__name__}: {e})"[:200])
        src.info.pop("exif", None)
        return Image.Exif(), src


def _iim_blocks(src: Image.Image) -> dict:
    """What iim.block reads beside Pillow's info: a TIFF's IPTC-IIM and Photoshop tags as the
    file's bytes (Pillow's value of the first, typed LONG as Photoshop writes it, is its first
    four bytes as a number); a JPEG's APP13 as written (Pillow parses none it finds damaged)."""
    if src.format == "TIFF":
        data = getattr(getattr(src, "tag_v2", None), "_tagdata", {})
        return {key: bytes(data[tag]) for tag, key in ((33723, "iptc"), (34377, "photoshop_irb"))
                if data.get(tag) is not None}
    if src.format in ("JPEG", "MPO"):
        return {"app13": b"".join(seg for name, seg in getattr(src, "applist", []) if name == "APP13")}
    return {}


def _stated(src: Image.Image) -> dict:
    """The file's info as the file states it: Pillow fills in a resolution the scan never gave
    (1 dpi for a TIFF without XResolution; 72 for a JPEG whose JFIF gives only an aspect ratio
    and whose EXIF no resolution), and an output must not carry an invented one."""
    info = {**src.info, **_iim_blocks(src)}
    if src.format == "TIFF":  # ResolutionUnit 1 is "no absolute unit": an aspect ratio
        tags = getattr(src, "tag_v2", {})
        stated = 282 in tags and tags.get(296, 2) in (2, 3)
    elif src.format in ("JPEG", "MPO") and info.get("jfif_unit") not in (1, 2):
        try:  # EXIF's unit is inches unless it says otherwise (Pillow says 72 then)
            ex = src.getexif()
            stated = 0x011A in ex and ex.get(0x0128, 2) in (2, 3)
            if stated and 0x0128 not in ex:
                x, y = float(ex[0x011A]), float(ex.get(0x011B, ex[0x011A]))
                info["dpi"] = (x, y)
        except Exception:  # noqa: BLE001 - malformed EXIF states nothing (decode notes it)
            stated = False
    else:
        stated = True
    if not stated:
        info.pop("dpi", None)
    return info


def decode(path: str | os.PathLike | io.BytesIO, max_pixels: int = DEFAULT_MAX_PIXELS,
           preview: int = 0) -> Decoded:
    """Decode to lightness with orientation applied (DecodeError: a clear reason). preview: a
    thumbnail's size: a JPEG decodes reduced, its sizes then the reduced picture's (no output)."""
    try:
        return _decode(path, max_pixels, preview)
    except DecodeError as e:
        data, left = _without_big_texts(path, e)
    d = _decode(io.BytesIO(data), max_pixels, preview)
    d.notes.append(f"PNG {'; '.join(left)} not read")
    return d


def _without_big_texts(path, e: DecodeError) -> tuple[bytes, list[str]]:
    """After Pillow refused a PNG's text or profile chunk as too large (a limit against memory
    bombs, which made a whole picture an error row for one caption): the file without the
    chunks it refuses, and what they were, each with why (png_without_big_texts). Raises e
    again for any other refusal."""
    if "MAX_TEXT_CHUNK" in str(e) or "MAX_TEXT_MEMORY" in str(e):
        data, left = png_without_big_texts(_raw_bytes(path))
        if left:
            return data, left
    raise e


def png_without_big_texts(data: bytes) -> tuple[bytes, list[str]]:
    """A PNG's bytes without the chunks Pillow refuses to read: a compressed text or profile
    over MAX_TEXT_CHUNK decompressed, or texts past MAX_TEXT_MEMORY in all (a plain one Pillow
    reads at any size); and what was left out ("text 'Comment' (why)"). The data as it was,
    and [], for anything else."""
    from PIL import PngImagePlugin as P

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data, []
    out, left, total, i = [data[:8]], [], 0, 8
    while i + 12 <= len(data):
        n, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        chunk, body, i = data[i:i + 12 + n], data[i + 8:i + 8 + n], i + 12 + n
        if kind in (b"tEXt", b"zTXt", b"iTXt", b"iCCP"):
            key, _, rest = body.partition(b"\0")
            size, packed = _text_size(kind, rest)
            name = "ICC profile" if kind == b"iCCP" else f"text {key.decode('latin-1')!r}"
            if packed and size > P.MAX_TEXT_CHUNK:
                left.append(f"{name} (over the {P.MAX_TEXT_CHUNK >> 20} MB a compressed PNG text or "
                            "profile may hold here)")
                continue
            if kind != b"iCCP" and total + size > P.MAX_TEXT_MEMORY:
                left.append(f"{name} (past the {P.MAX_TEXT_MEMORY >> 20} MB of text a PNG may hold here)")
                continue
            total += 0 if kind == b"iCCP" else size
        out.append(chunk)
    return b"".join(out) + data[i:], left


def _text_size(kind: bytes, rest: bytes) -> tuple[int, bool]:
    """How large a text chunk's text is once read (bounded: a bomb is counted to the limit),
    and whether it is compressed."""
    from PIL import PngImagePlugin as P

    if kind == b"tEXt":
        return len(rest), False
    if kind == b"iTXt":
        if rest[:1] != b"\x01":  # not compressed
            return len(rest), False
        rest = rest[2:].split(b"\0", 2)[-1]  # past the method, the language and its keyword
    else:
        rest = rest[1:]  # past the method
    try:
        return len(zlib.decompressobj().decompress(rest, P.MAX_TEXT_CHUNK + 1)), True
    except zlib.error:
        return 0, True  # Pillow says what is wrong with it


def _decode(path: str | os.PathLike | io.BytesIO, max_pixels: int, preview: int) -> Decoded:
    if isinstance(path, (str, os.PathLike)) and (why := not_read_here(str(path))):
        raise DecodeError(why)
    with _open(path, max_pixels, preview) as src:  # multi-page TIFFs keep their file open until closed
        notes: list[str] = []
        try:
            fmt, src_mode = src.format or "", src.mode
            n = getattr(src, "n_frames", 1)
            if n > 1:
                notes.append(f"first of {n} pages (the other {n - 1} not colorized)")
                src.seek(0)
            info = _stated(src)
            if fmt == "JPEG2000" and not info.get("xmp"):  # Pillow reads no JP2 box of XMP
                info["xmp"] = jp2_xmp(_raw_bytes(path))
            tiff_orientation = _tiff_orientation(src)
            with warnings.catch_warnings(record=True) as caught:
                _record_warnings()
                src.load()
                exif_obj, im = _oriented(src, notes)
            notes += [f"read with a warning: {w}"[:200] for w in
                      dict.fromkeys([*src.colorize_warnings, *(str(w.message) for w in caught)])]
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error) as e:
            msg = str(e) or type(e).__name__
            if "truncated" in msg or "broken data stream" in msg or isinstance(e, EOFError):
                msg = f"truncated file ({msg})"
            elif msg.startswith("decoder error"):  # Pillow's bare codec status
                msg = f"the {fmt or 'image'} data is corrupt ({msg})"
            raise DecodeError(f"cannot decode: {msg}") from None
        except Image.DecompressionBombError:
            raise DecodeError(f"decompression bomb refused: more than the {max_pixels:,}-pixel "
                              "limit (--max-pixels)") from None
        mode = im.mode
        # The file's bytes again only where Pillow leaves something out: PNG checksums, and the
        # low 8 bits of 48/64-bit RGB (a gray TIFF, the common scan, is not read twice).
        rgbish = mode in ("RGB", "RGBA")
        raw = _raw_bytes(path) if fmt == "PNG" or (fmt == "TIFF" and rgbish) else None
        if fmt == "PNG":
            bad = _png_bad_crcs(raw)
            if bad:  # Pillow checks no IDAT CRC: the pixels decoded, but the file is damaged
                notes.append(f"damaged file: PNG checksum mismatch in {', '.join(bad)} "
                             "(decoded anyway; compare with a backup)")
        rgb16 = _rgb16(src, raw, tiff_orientation) if raw and rgbish else None
        if rgb16 is not None:
            if src.mode == "RGBA":
                notes.append("alpha flattened on white")
            return _from_rgb(rgb16, src_mode, fmt, info, exif_obj, notes)
        turn = exif_obj.get(0x0112, 1)
        la16 = (_gray16_alpha(src, raw, turn if turn in range(1, 9) else 1, notes)
                if fmt == "PNG" and raw[24:26] == b"\x10\x04" else None)  # Pillow: 8-bit RGBA
        if la16 is not None:
            gray = la16
        elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            gray = np.asarray(im).astype(np.uint16, copy=False)
        elif mode == "I":
            gray = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        elif mode == "L":
            gray = np.asarray(im)
        elif mode == "1":
            gray = np.asarray(im.convert("L"))
        elif mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info):
            im = _flatten_alpha(im.convert("RGBA") if mode.startswith("P") else im, notes)
            return _from_image(im, src_mode, fmt, info, exif_obj, notes)
        elif mode in ("P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
            return _from_image(im.convert("RGB"), src_mode, fmt, info, exif_obj, notes)
        else:
            raise DecodeError(f"unsupported pixel mode {mode}")
        return _from_gray(np.ascontiguousarray(gray), src_mode, fmt, info, exif_obj, notes)


def _png_bad_crcs(data: bytes) -> list[str]:
    """Names of the PNG chunks whose CRC does not match (each named once)."""
    bad: list[str] = []
    i = 8
    while i + 12 <= len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        end = i + 8 + n
        if end + 4 > len(data):
            break
        if zlib.crc32(data[i + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            name = kind.decode("latin-1")
            if name not in bad:
                bad.append(name)
        if kind == b"IEND":
            break
        i = end + 4
    return bad


def _raw_bytes(path) -> bytes:
    if isinstance(path, io.BytesIO):
        return path.getvalue()
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            return f.read()
    path.seek(0)
    return path.read()


def gray_jpeg_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded | None:
    """An upright single-channel JPEG (most scans): its metadata, its pixels left in `encoded`
    for a GPU decoder. None for anything else, which decode() handles (and explains)."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\0")[-2:] == b"\xff\xd9":
        return None  # no end-of-image marker: truncated, and libjpeg would pad it silently
    try:
        with _open(io.BytesIO(data), max_pixels) as im:
            if im.format != "JPEG" or im.mode != "L" or getattr(im, "n_frames", 1) != 1:
                return None
            exif_obj = im.getexif()
            if exif_obj.get(0x0112, 1) != 1:
                return None  # rotated or mirrored: Pillow applies EXIF orientation, on the CPU
            info, notes = _stated(im), []
            if _colour_managed(info, 1, notes) is not None:
                return None  # its lightness is read through its profile, on the CPU
            d = _decoded(None, im.mode, im.format, "gray", info, exif_obj, notes, im.size[::-1])
            d.encoded, d.size = data, im.size
            return d
    except (DecodeError, OSError, SyntaxError, ValueError, struct.error, EOFError):
        return None


def _from_image(im, src_mode, fmt, info, exif_obj, notes) -> Decoded:
    """An L or RGB image (alpha already flattened) -> Decoded, its colour classified."""
    if im.mode == "L":
        return _from_gray(np.asarray(im), src_mode, fmt, info, exif_obj, notes)
    return _from_rgb(np.asarray(im), src_mode, fmt, info, exif_obj, notes)


def _from_gray(gray, src_mode, fmt, info, exif_obj, notes) -> Decoded:
    """One channel, 8 or 16 bits, read through the scan's gray ICC profile where it has one."""
    profile = _colour_managed(info, 1, notes)
    if profile is not None:
        gray = _encode_y(gray, profile.luminance)
    return _decoded(gray, src_mode, fmt, "gray", info, exif_obj, notes)


def _from_rgb(rgb, src_mode, fmt, info, exif_obj, notes) -> Decoded:
    profile = _colour_managed(info, 3, notes)
    kind = classify_rgb(rgb, profile)
    return _decoded(luminance_gray(rgb, profile=profile), src_mode, fmt, kind, info, exif_obj, notes)


def _colour_managed(info: dict, channels: int, notes: list[str]) -> icc.Profile | None:
    """The profile the pixels are read through (icc.read); info's profile becomes the one the
    output carries."""
    profile, carried = icc.read(info.get("icc_profile"), channels, notes)
    info["icc_profile"] = carried
    return profile


# How the source's pixels are laid out in its file (a TIFF's strips, bits, compression...): in an
# output of another size, depth and format they would be false, so they are never carried.
_LAYOUT_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323,
    324, 325, 338, 339, 340, 341, 513, 514, 529, 530, 531, 532, 34675,
    700, 33723, 34377})  # and its XMP, IPTC and Photoshop blocks: not EXIF (XMP: d.xmp)


RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def parse_xmp(data: bytes):
    """An XMP packet as an lxml tree's rdf:RDF element. Raises ValueError for one that does not
    parse, has no rdf:RDF, or declares a DOCTYPE (no XMP needs one; entity tricks do): parsed by
    lxml, which reads UTF-16 packets as such, never resolves an entity and never fetches."""
    from lxml import etree

    if not (data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:2] in (b"\x00<", b"<\x00")):
        data = data.strip(b"\0 \t\r\n")  # a JPEG's or TIFF's padding (not within UTF-16)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_blank_text=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise ValueError(str(e)) from None
    if root.getroottree().docinfo.doctype or root.getroottree().docinfo.internalDTD is not None:
        raise ValueError("it declares a DOCTYPE")
    rdf = root if root.tag == f"{{{RDF_NS}}}RDF" else root.find(f".//{{{RDF_NS}}}RDF")
    if rdf is None:
        raise ValueError("no rdf:RDF in it")
    return rdf


JP2_XMP_UUID = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")


def jp2_xmp(data: bytes) -> bytes | None:
    """The XMP a JPEG 2000 file holds in its top-level uuid box (or, as some writers put it, an
    xml box): a library's JP2 master keeps its rights and caption there."""
    i = 0
    while i + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if n == 1:  # a 64-bit length follows
            if i + 16 > len(data):
                return None
            n, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif n == 0:  # to the end of the file
            n = len(data) - i
        if n < head:
            return None
        body = data[i + head:i + n]
        if kind == b"uuid" and body[:16] == JP2_XMP_UUID:
            return body[16:]
        if kind == b"xml " and b"x:xmpmeta" in body[:4096]:
            return body
        i += n
    return None


def source_xmp(data, notes: list[str]) -> bytes | None:
    """The source's XMP packet when it parses (parse_xmp; the writers add ours to it); one that
    does not is left out, noted."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data or not data.strip(b"\0 \t\r\n"):
        return None
    if len(data) > XMP_LIMIT:
        notes.append(f"source XMP not carried ({xmp_too_large(len(data))})")
        return None
    try:
        parse_xmp(bytes(data))
    except ValueError as e:
        notes.append(f"source XMP not carried (unreadable: {e})"[:200])
        return None
    return bytes(data)


# An XMP larger than this is not read: parsed and merged it costs ~20 times its size, in every
# worker, and is copied into each output (a trial's 54 MB sidecar: 1.9 GB, 53 MB outputs of a
# 64 px scan). Photoshop's own, with a long history, runs to a few hundred kB.
XMP_LIMIT = 8 << 20


def xmp_too_large(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB, more than the {XMP_LIMIT >> 20} MB an XMP may have here"


def xmp_of(rdf) -> bytes:
    """An rdf:RDF element (parse_xmp's) as an XMP packet's bytes."""
    from lxml import etree

    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/">' + etree.tostring(rdf, encoding="unicode")
            + "</x:xmpmeta>").encode("utf-8")


def overlay(rdf, top, also=lambda tag: False) -> None:
    """Description `top` into rdf:RDF `rdf` over its own top-level Descriptions (not one nested
    in a property's value): what `top` says, and what `also(tag)` names, is taken out of them;
    `top` takes their subject (rdf:about), as XMP has one per packet."""
    descs = rdf.findall(f"{{{RDF_NS}}}Description")
    says = {*top.attrib, *(c.tag for c in top)} - {f"{{{RDF_NS}}}about"}
    for d in descs:
        for a in [a for a in d.attrib if a in says or also(a)]:
            del d.attrib[a]
        for c in [c for c in d if c.tag in says or also(c.tag)]:
            d.remove(c)
    if descs and descs[0].get(f"{{{RDF_NS}}}about") is not None:
        top.set(f"{{{RDF_NS}}}about", descs[0].get(f"{{{RDF_NS}}}about"))
    rdf.append(top)


def add_sidecar(d: Decoded, data: bytes, name: str) -> bool:
    """An XMP sidecar's properties over the file's own XMP, where both say a thing the sidecar's
    (a workflow edits the sidecar: Lightroom's NAME.xmp, darktable's NAME.EXT.xmp). False where
    it does not parse (noted)."""

    if len(data) > XMP_LIMIT:
        d.notes.append(f"XMP sidecar {name} not read ({xmp_too_large(len(data))})")
        return False
    try:
        side = parse_xmp(data)
        own = parse_xmp(d.xmp) if d.xmp else None
    except ValueError as e:
        d.notes.append(f"XMP sidecar {name} not read (unreadable: {e})"[:200])
        return False
    d.notes.append(f"XMP sidecar {name} read")
    if own is None:
        d.xmp = data
        return True
    for sd in side.findall(f"{{{RDF_NS}}}Description"):
        overlay(own, sd)
    d.xmp = xmp_of(own)
    return True


def _with_iim(d: Decoded, block: bytes, newer: bool) -> None:
    """An IPTC-IIM block's caption, by-line, rights, keywords... into d.xmp (iim.py), under what
    the source's own XMP says (it wins where both say a thing) unless the block is `newer`
    (iim.edited_since_xmp); the block itself is not carried (an output's XMP is where every
    format keeps it), which the row's note says."""
    if not iim.datasets(block):
        d.notes.append("IPTC-IIM block not carried (unreadable: no dataset in it)")
        return
    props, left = iim.read(block)
    tail = f"; its datasets {', '.join(left)} not carried" if left else ""
    if not props:  # a block of its version and charset alone holds no record: nothing lost
        if left:
            d.notes.append(f"IPTC-IIM block not carried (nothing in it has a place in XMP){tail}")
        return
    newer = newer and bool(d.xmp)
    try:
        carried = _folded(d, props, newer)
    except ValueError as e:  # too large for an XMP
        d.notes.append(f"IPTC-IIM block not carried in the XMP ({e}){tail}"[:300])
        return
    there = [t for t in iim.tags(props) if t not in carried]
    d.notes.append("IPTC-IIM block " + (f"carried in the XMP ({iim.said(carried)})" if carried else
                                        "not carried") + (f"; the source's XMP's own {iim.said(there)} "
                                        "kept over the block's" if there else "")
                   + ("; the block was edited after the source's XMP (the digest in the file "
                      "says), so its values are kept over the XMP's" if newer else "") + tail)


def _folded(d: Decoded, props: dict[str, list[str]], over: bool) -> list[str]:
    """XMP properties (iim.packet's) into d.xmp: under what its own Descriptions say, or `over`
    them. Returns the properties of `props` that the XMP now holds as given (lxml's names).
    ValueError, d.xmp unchanged, where the XMP would be larger than XMP_LIMIT (a PNG's 3 MB
    texts, an IIM block's long caption over a large XMP)."""

    if (n := len(d.xmp or b"") + sum(len(v) for vs in props.values() for v in vs)) > XMP_LIMIT:
        raise ValueError(f"the XMP would be {xmp_too_large(n)}")  # not parsed to be refused
    rdf = parse_xmp(iim.packet(props))
    ours = rdf.find(f"{{{RDF_NS}}}Description")
    if over and d.xmp:
        rdf = parse_xmp(d.xmp)
        overlay(rdf, ours)
    elif d.xmp:
        for sd in parse_xmp(d.xmp).findall(f"{{{RDF_NS}}}Description"):
            overlay(rdf, sd)
    xmp = xmp_of(rdf)
    if len(xmp) > XMP_LIMIT:
        raise ValueError(f"the XMP would be {xmp_too_large(len(xmp))}")
    d.xmp = xmp
    return [c.tag for c in ours]


def _texts_in_xmp(d: Decoded) -> None:
    """A PNG's Title, Author, Description and Copyright into its XMP too, under what the XMP
    says (a TIFF, JPEG or WebP output has no place for a PNG text); d.text_xmp says where each
    went, or why it did not (the writers' note)."""
    said = {k: v.strip() for k, v in d.texts.items() if k in iim.PNG_TEXT and v.strip()}
    if not said:
        return
    together = None
    try:
        together, groups = _folded(d, {iim.PNG_TEXT[k]: [v] for k, v in said.items()}, False), [said]
    except ValueError:  # too large together: the rights first, then the creator, title, caption
        groups = [{k: said[k]} for k in ("Copyright", "Author", "Title", "Description") if k in said]
    for group in groups:
        props = {iim.PNG_TEXT[k]: [v] for k, v in group.items()}
        try:
            placed = together if together is not None else _folded(d, props, False)
        except ValueError as e:
            d.text_xmp.update(dict.fromkeys(group, str(e)[:200]))
            continue
        for k, tag in zip(group, iim.tags(props), strict=True):
            d.text_xmp[k] = iim.PNG_TEXT[k] if tag in placed else f"the source's XMP's own {iim.PNG_TEXT[k]} kept over it"


def _decoded(gray, src_mode, fmt, kind, info, exif_obj, notes, shape=None) -> Decoded:
    """shape: (rows, columns) of an upright picture whose pixels wait in `encoded`."""
    d = Decoded(gray=gray, mode=src_mode, format=fmt, kind=kind, notes=notes)
    dpi = info.get("dpi")
    try:
        dpi = (float(dpi[0]), float(dpi[1])) if dpi else None
        if dpi and fmt == "PNG":  # pixels a metre, whole: 600 dpi is stored as 23622 (599.9988)
            dpi = (round(dpi[0], 1), round(dpi[1], 1))
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        notes.append("unreadable DPI not carried")
        dpi = None
    if dpi and all(MIN_DPI <= x <= MAX_DPI for x in dpi):
        d.dpi = dpi
    elif dpi and any(x != 0 for x in dpi):
        notes.append(f"implausible DPI {dpi[0]:g}x{dpi[1]:g} not carried")
    d.icc_profile = info.get("icc_profile")  # _colour_managed's: what the output carries
    d.xmp = source_xmp(info.get("xmp"), notes)
    d.texts = {k: str(v) for k, v in info.items() if fmt == "PNG" and isinstance(v, str)
               and k != "XML:com.adobe.xmp" and not k.startswith("Raw profile type")}
    d.text_langs = {k: (info[k].lang or "", info[k].tkey or "") for k in d.texts
                    if getattr(info[k], "lang", None) or getattr(info[k], "tkey", None)}
    try:  # metadata that will not go into XML costs a note, never the picture
        if (block := iim.block(info)) is not None:
            _with_iim(d, block, iim.edited_since_xmp(info, block))
        elif 33723 in exif_obj:
            notes.append("IPTC-IIM block not carried (not read)")
    except ValueError as e:
        notes.append(f"IPTC-IIM block not carried in the XMP ({e})"[:200])
    _texts_in_xmp(d)
    # a TIFF's IFD is its EXIF: not the output's layout; nor is the source file's DateTime
    # (when it was saved) this file's
    for tag in (_LAYOUT_TAGS | {306}) & set(exif_obj):
        del exif_obj[tag]
    if _layout_description(exif_obj.get(270)):
        del exif_obj[270]
    if getattr(exif_obj, "bigtiff", False):  # a BigTIFF master's IFD: EXIF is classic TIFF
        exif_obj = _classic(exif_obj)
    if set(exif_obj) - {0x0112}:  # an orientation alone (read from a PNG's XMP) says nothing now
        _srgb_said(exif_obj, shape if gray is None else gray.shape)
        exif_text_as_written(exif_obj, notes)
        try:
            exif_obj[0x0112] = 1  # pixels are upright now
            d.exif = exif_obj.tobytes()
        except Exception as e:  # a string where a rational belongs, and worse: drop it
            notes.append(f"EXIF not carried (malformed: {type(e).__name__}: {e})"[:200])
    return d


def _srgb_said(exif_obj, shape) -> None:
    """EXIF's ColorSpace says sRGB: every output is (an Adobe RGB camera's 'Uncalibrated' would
    be false of it). Its PixelX/YDimension say the upright picture's size (`shape`, rows and
    columns): a turned scan's said the file's, a trial's thumbnailer laid the output out wrong."""
    from PIL import ExifTags

    if ExifTags.IFD.Exif in exif_obj:
        ifd = exif_obj.get_ifd(ExifTags.IFD.Exif)
        if 0xA001 in ifd:
            ifd[0xA001] = 1
        for tag, n in ((0xA002, 1), (0xA003, 0)):
            if tag in ifd and shape is not None:
                ifd[tag] = int(shape[n])


def _layout_description(text) -> bool:
    """An ImageDescription that a library wrote about the file's layout, not a caption:
    tifffile's shape JSON, ImageJ's header. It would be false of the output (another shape)."""
    return isinstance(text, str) and text.lstrip().startswith(('{"shape":', "ImageJ="))


def _classic(exif_obj):
    """The same tags in an EXIF that tobytes() writes as classic TIFF (a BigTIFF's would be
    written as BigTIFF, which no EXIF reader takes: a PNG's eXIf, a JPEG's APP1)."""
    from PIL import ExifTags

    fresh = Image.Exif()
    for tag, v in exif_obj.items():
        if tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
            if sub := dict(exif_obj.get_ifd(tag)):
                fresh[tag] = sub
        else:
            fresh[tag] = v
    return fresh


def exif_text_as_written(exif_obj, notes: list[str] | None = None) -> None:
    """Pillow reads an EXIF text as latin-1 and writes it back as ASCII with '?' for every other
    character: a creator's name in UTF-8 (Zofia Łęcka) or a © in a rights statement would come
    out damaged. The main IFD's texts go back as the bytes they were; in the Exif and GPS
    sub-IFDs Pillow's writer would call such bytes a number list, not text, so a non-ASCII text
    there is left out, and said, rather than written wrong."""
    from PIL import ExifTags, TiffTags

    for tag, v in list(exif_obj.items()):
        if isinstance(v, str) and not v.isascii() and TiffTags.lookup(tag).type == TiffTags.ASCII:
            exif_obj[tag] = v.encode("latin-1", "replace")
    left = []
    for sub in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        ifd = exif_obj.get_ifd(sub) if sub in exif_obj else {}
        for tag, v in list(ifd.items()):
            if isinstance(v, str) and not v.isascii():
                del ifd[tag]
                left.append(ExifTags.TAGS.get(tag, ExifTags.GPSTAGS.get(tag, hex(tag))))
    if left and notes is not None:
        notes.append(f"EXIF {', '.join(left)} not carried (non-ASCII text in a sub-IFD)")


def colorfulness(rgb: np.ndarray, max_side: int = 256) -> float:
    """Hasler and Suesstrunk (2003) colourfulness on the 0-255 scale, on a strided thumbnail."""
    step = max(1, max(rgb.shape[:2]) // max_side)
    x = rgb[::step, ::step].astype(np.float64)
    if rgb.dtype == np.uint16:
        x /= 257.0
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def net_input(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8/uint16 gray -> (size, size) uint8 gray, antialiased (the net needs no 16 bits)."""
    g8 = gray if gray.dtype == np.uint8 else (gray >> 8).astype(np.uint8)
    im = Image.fromarray(g8, "L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.array(im)  # writable: torch.from_numpy refuses read-only buffers
