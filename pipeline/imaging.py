"""Decode any archive scan to a monochrome lightness image, and encode colour results (no torch).

Decoding never pads or guesses: truncated, oversized or unreadable files raise DecodeError
with a reason that ends up in the result row.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated scan is an error, never silently padded
DEFAULT_MAX_PIXELS = 200_000_000  # ~14,000 x 14,000; above this a file is treated as a bomb

# Chroma (a*, b* distance) below which a pixel counts as neutral, and the spread of a/b
# at equal lightness below which an RGB scan counts as toned (sepia, cyanotype) not colour.
NEUTRAL_CHROMA = 4.0
TONED_SPREAD = 3.0


class DecodeError(Exception):
    """The file cannot be decoded into an image we can colorize; str(e) is the reason."""


@dataclass
class Decoded:
    # (H, W) uint8 or uint16, sRGB-encoded lightness, orientation applied. None while the
    # pixels wait in `encoded` for the GPU's JPEG decoder (gray_jpeg_header); then a tensor.
    gray: np.ndarray | None
    mode: str  # the source's Pillow mode
    format: str  # the source's Pillow format (JPEG, PNG, TIFF, ...)
    kind: str  # "gray" | "toned" | "color"
    dpi: tuple[float, float] | None = None
    icc_profile: bytes | None = None  # kept only when it describes RGB (a gray profile would lie)
    exif: bytes | None = None  # orientation reset: pixels are already upright
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


@dataclass
class Header:
    width: int
    height: int
    mode: str
    format: str
    frames: int


def _open(path: str | os.PathLike | io.BytesIO, max_pixels: int) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check uses the same limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:
        raise DecodeError("is a directory, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"decompression bomb refused: {e}") from None
    except UnidentifiedImageError:
        if isinstance(path, (str, os.PathLike)):
            size = os.path.getsize(path)
        else:  # a file object (BytesIO, fsspec): its length, without reading it
            size = path.seek(0, 2)
        raise DecodeError("empty file" if size == 0 else "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        kind = "truncated file" if "runcated" in str(e) else "unreadable header"
        raise DecodeError(f"{kind}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise DecodeError(f"decompression bomb refused: {w}x{h} exceeds the {max_pixels}-pixel limit")
    if w < 1 or h < 1:
        im.close()
        raise DecodeError(f"degenerate size {w}x{h}")
    return im


def read_header(path: str | os.PathLike | io.IOBase, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Size, mode and format from the header alone (no pixel decoding)."""
    im = _open(path, max_pixels)
    with im:
        return Header(im.width, im.height, im.mode, im.format or "", getattr(im, "n_frames", 1))


_SRGB_TO_LIN_8 = np.where(
    (v := np.arange(256) / 255.0) > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92
).astype(np.float32)


def _lin_to_srgb(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0.0031308, 1.055 * np.maximum(y, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * y)


def luminance_gray(rgb: np.ndarray, rows: int = 512) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W): the neutral gray with the same Y, so L* is preserved."""
    out = np.empty(rgb.shape[:2], np.uint8)
    w = np.array([0.212671, 0.715160, 0.072169], np.float32)  # Y row of skimage's xyz_from_rgb
    for r in range(0, rgb.shape[0], rows):  # in strips: a 10,000 x 8,000 scan stays affordable
        y = _SRGB_TO_LIN_8[rgb[r : r + rows]] @ w
        out[r : r + rows] = np.clip(np.rint(_lin_to_srgb(y) * 255.0), 0, 255)
    return out


def classify_rgb(rgb: np.ndarray) -> str:
    """'gray', 'toned' or 'color' for an 8-bit RGB image, judged on a thumbnail."""
    from skimage.color import rgb2lab

    step = max(1, max(rgb.shape[:2]) // 128)
    thumb = rgb[::step, ::step].astype(np.float32) / 255.0
    lab = rgb2lab(thumb).reshape(-1, 3)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    if np.percentile(chroma, 99) < NEUTRAL_CHROMA:
        return "gray"
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
    bg = Image.new(base, im.size, 255)
    bg.paste(im.convert(base), mask=alpha)
    return bg


def decode(
    path: str | os.PathLike | io.BytesIO, max_pixels: int = DEFAULT_MAX_PIXELS, with_meta: bool = True
) -> Decoded:
    """Decode to lightness with orientation applied. Raises DecodeError with a clear reason."""
    with _open(path, max_pixels) as src:  # multi-page TIFFs keep their file open until closed
        notes: list[str] = []
        try:
            fmt, src_mode = src.format or "", src.mode
            n = getattr(src, "n_frames", 1)
            if n > 1:
                notes.append(f"first of {n} pages")
                src.seek(0)
            info = dict(src.info)
            src.load()
            exif_obj = src.getexif()
            im = ImageOps.exif_transpose(src) or src
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error) as e:
            msg = str(e) or type(e).__name__
            if "truncated" in msg or "broken data stream" in msg or isinstance(e, EOFError):
                msg = f"truncated file ({msg})"
            raise DecodeError(f"cannot decode: {msg}") from None
        except Image.DecompressionBombError as e:
            raise DecodeError(f"decompression bomb refused: {e}") from None
        mode = im.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            gray = np.asarray(im).astype(np.uint16, copy=False)
        elif mode == "I":
            gray = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        elif mode == "L":
            gray = np.asarray(im)
        elif mode == "1":
            gray = np.asarray(im.convert("L"))
        elif mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info):
            im = _flatten_alpha(im.convert("RGBA") if mode.startswith("P") else im, notes)
            return _finish(im, src_mode, fmt, info, exif_obj, notes, with_meta)
        elif mode in ("P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
            return _finish(im.convert("RGB"), src_mode, fmt, info, exif_obj, notes, with_meta)
        else:
            raise DecodeError(f"unsupported pixel mode {mode}")
        return _decoded(np.ascontiguousarray(gray), src_mode, fmt, "gray", info, exif_obj, notes,
                        with_meta)


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
            d = _decoded(None, im.mode, im.format, "gray", dict(im.info), exif_obj, [], True)
            d.encoded, d.size = data, im.size
            return d
    except (DecodeError, OSError, SyntaxError, ValueError, struct.error, EOFError):
        return None


def _finish(im, src_mode, fmt, info, exif_obj, notes, with_meta) -> Decoded:
    if im.mode == "L":
        return _decoded(np.asarray(im), src_mode, fmt, "gray", info, exif_obj, notes, with_meta)
    rgb = np.asarray(im)
    kind = classify_rgb(rgb)
    return _decoded(luminance_gray(rgb), src_mode, fmt, kind, info, exif_obj, notes, with_meta)


def _decoded(gray, src_mode, fmt, kind, info, exif_obj, notes, with_meta) -> Decoded:
    d = Decoded(gray=gray, mode=src_mode, format=fmt, kind=kind, notes=notes)
    if with_meta:
        dpi = info.get("dpi")
        if dpi and all(float(x) > 0 for x in dpi):
            d.dpi = (float(dpi[0]), float(dpi[1]))
        icc = info.get("icc_profile")
        if icc and len(icc) > 20 and icc[16:20] == b"RGB ":
            d.icc_profile = icc
        elif icc:
            notes.append("non-RGB ICC profile not carried")
        if len(exif_obj):
            exif_obj[0x0112] = 1  # pixels are upright now
            d.exif = exif_obj.tobytes()
    return d


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


# --- encoding ----------------------------------------------------------------------------------

FORMATS = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}
_SAME = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}


def output_format(fmt: str, source_format: str) -> str:
    """Resolve --format same: the source's format where we can write it, else PNG."""
    if fmt == "same":
        return _SAME.get(source_format.upper(), "png")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from png, jpeg, tiff, same")
    return fmt


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(rgb: np.ndarray, dpi, icc, exif, level: int) -> bytes:
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
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out.append(_png_chunk(b"IDAT", imagecodecs.deflate_encode(rows, level=level)))  # zlib format
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _tiff16(rgb: np.ndarray, dpi, icc) -> bytes:
    import tifffile

    buf = io.BytesIO()
    extratags = [(34675, 7, len(icc), icc, True)] if icc else []
    kw = dict(resolution=dpi, resolutionunit="INCH") if dpi else {}
    tifffile.imwrite(buf, rgb, photometric="rgb", compression="zlib", extratags=extratags,
                     metadata=None, **kw)
    return buf.getvalue()


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


def encode(rgb: np.ndarray, fmt: str, dpi=None, icc=None, exif=None, quality: int = 95,
           png_level: int = 3) -> bytes:
    """(H, W, 3) uint8 or uint16 RGB -> file bytes. 16-bit stays 16-bit in PNG and TIFF."""
    if fmt == "png":
        return _png(rgb, dpi, icc, exif, png_level)
    if rgb.dtype == np.uint16 and fmt == "tiff":
        return _tiff16(rgb, dpi, icc)
    if rgb.dtype == np.uint16:  # JPEG is 8-bit only
        rgb = ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    im = _pil_rgb(rgb)
    kw: dict = {}
    if dpi:
        kw["dpi"] = dpi
    if icc:
        kw["icc_profile"] = icc
    if exif:
        kw["exif"] = exif
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, **kw)
    elif fmt == "tiff":
        im.save(buf, "TIFF", compression="tiff_deflate", **kw)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()
