"""The colour step: the net's small a/b map upsampled and joined with the full-resolution gray
in CIE Lab, to sRGB. One entry point, Recombiner.start, picks the kernel for an image once:

- 8-bit on the CPU: a/b upsampled in torch, then one lookup per pixel in lut8() (numpy: it
  releases the GIL, so the caller may run it in a pool thread beside the net);
- 8-bit on a GPU: the same table in device memory;
- 16-bit: the exact curves in float strips (a table of 65536 gray levels times a/b would not fit).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.worker import color
from pipeline.worker.device import to_device

TILE_PIXELS = 1 << 22  # full-resolution work is done in row strips of about this many pixels


def _strip16(g, A, i0, i1, w, Ylut, fylut):
    """One strip of a 16-bit output: gray levels g (th, W); a*, b* interpolated between rows
    i0 and i1 (weights w) of A, the small a/b map already upsampled along W."""
    a = torch.lerp(A[0, i0], A[0, i1], w)
    b = torch.lerp(A[1, i0], A[1, i1], w)
    lin = color.compose_linear(Ylut[g], fylut[g], a, b)
    return (color.linear_to_srgb(lin).clamp(0, 1) * 65535.0).round().to(torch.int32)


_LUT8: np.ndarray | None = None
_LUT8_LOCK = threading.Lock()  # pool threads ask for it at once; build it only once


def lut8() -> np.ndarray:
    """The whole 8-bit colour step as one table: index (a*+128) << 16 | (b*+128) << 8 | gray
    -> the sRGB pixel packed as RGBX in a uint32 (64 MiB, ~1.5 s to build: kept in a cache).

    Exact Lab -> sRGB with the luminance-keeping gamut mapping, evaluated in float64 at every
    whole a*, b* and gray level; a pixel then costs one lookup instead of ~20 float passes.
    a/b-major so that neighbouring pixels, whose a/b barely differ, hit nearby entries."""
    global _LUT8
    with _LUT8_LOCK:
        if _LUT8 is None:
            _LUT8 = _cached_lut8()
    return _LUT8


def _code_key() -> str | None:
    """What computes the table (this module's and color's source, torch's and numpy's versions),
    read once at import: the code running, not what a later upgrade put on disk."""
    try:
        code = inspect.getsource(color) + inspect.getsource(sys.modules[__name__])
    except (OSError, TypeError):
        return None
    return hashlib.sha256(f"{code}{torch.__version__}{np.__version__}".encode()).hexdigest()[:16]


_LUT8_KEY = _code_key()


def _lut8_path() -> Path | None:
    """Where the table is kept for the next process: $COLORIZE_CACHE, else the user's cache
    folder; None where COLORIZE_CACHE is "off", there is no home, or the source is not readable."""
    where = os.environ.get("COLORIZE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "archive-colorizer")
    if where == "off" or where.startswith("~") or _LUT8_KEY is None:
        return None
    return Path(where) / f"lut8-{_LUT8_KEY}.npy"


def _cached_lut8() -> np.ndarray:
    """lut8's table from the cache (memory-mapped: ~1.5 s saved per worker, and the pages
    shared by every worker of a machine), else built and left there. The cache is a
    convenience: one that cannot be read or written is built past, never an error."""
    path = _lut8_path()
    torn = False
    if path is not None and os.path.isfile(path):
        try:
            lut = np.load(path, mmap_mode="r")
            if lut.dtype == np.uint32 and lut.shape == (1 << 24,):
                return lut
        except Exception:  # torn (an empty file is an EOFError), foreign, unreadable
            pass
        torn = True
    lut = _build_lut8()
    if path is not None:
        _keep(path, lut, torn)
    return lut


def _keep(path: Path, lut: np.ndarray, torn: bool) -> None:
    """Written whole under a temp name, then published: linked (a good table another worker put
    there first stays, as workers may have it mapped, over NFS too), or renamed over a torn one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(".lut8-*"):  # a worker killed while writing left it
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 3600:
                    old.unlink()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lut8-", suffix=".npy")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, lut)
            f.flush()
            os.fsync(f.fileno())  # a crash after publishing must not leave it empty
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep it from a worker run as another user
        if torn:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _build_lut8() -> np.ndarray:
    g = torch.arange(256, dtype=torch.float64) / 255.0
    Y = color.srgb_to_linear(g)
    fy = color._f(Y)
    ab = torch.arange(256, dtype=torch.float64) - color.AB_OFFSET
    lut = np.empty((256, 256, 256, 4), np.uint8)
    lut[..., 3] = 255
    for a0 in range(0, 256, 16):  # in slabs: the float64 temporaries of all of it are GBs
        a = ab[a0 : a0 + 16].view(-1, 1, 1)
        b = ab.view(1, -1, 1)
        lin = color.compose_linear(Y.expand(16, 256, 256), fy.expand(16, 256, 256),
                                   a.expand(16, 256, 256), b.expand(16, 256, 256))
        rgb = (color.linear_to_srgb(lin).clamp(0, 1) * 255.0).round().to(torch.uint8)
        lut[a0 : a0 + 16, ..., :3] = rgb.numpy()
    return lut.view(np.uint32).reshape(-1)


def quantise_ab(ab: torch.Tensor) -> np.ndarray:
    """(..., 2, s, s) float a*, b* -> uint8 a* + 128, b* + 128: the net's 8-bit output,
    within half a unit of a* (just-noticeable differences are ~2 units)."""
    return (ab.float() + color.AB_OFFSET).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


@torch.inference_mode()
def upsample_ab(abq: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(2, s, s) quantised a/b -> (H, W) uint16 holding (a + 128) << 8 | (b + 128).

    torch's uint8 bilinear kernel (vectorised, the Pillow-SIMD algorithm; for upsampling
    antialias changes nothing): 2.7 ms for 1.9 megapixels on one core, Pillow 8 ms. With the
    channels interleaved b, a, each pixel's two bytes are already half a lookup index."""
    x = torch.from_numpy(np.ascontiguousarray(abq[::-1]))[None]
    x = x.contiguous(memory_format=torch.channels_last)
    up = F.interpolate(x, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    return up.permute(0, 2, 3, 1).contiguous().numpy()[0].view(np.uint16)[..., 0]


def lookup(gray: np.ndarray, ab16: np.ndarray) -> np.ndarray:
    """8-bit output: one lut8() lookup per pixel, in row strips (the index is 4 bytes a
    pixel). About 3 ms for 1.9 megapixels on one core, against ~150 ms for the float
    math in eager torch."""
    H, W = gray.shape
    lut = lut8()
    out = np.empty((H, W, 4), np.uint8)
    packed = out.view(np.uint32)[..., 0]
    rows = max(1, TILE_PIXELS // W)
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        idx = ab16[r0:r1].astype(np.uint32)
        idx <<= 8
        idx |= gray[r0:r1]
        np.take(lut, idx, out=packed[r0:r1], mode="clip")  # indices < 2**24 by construction
    # An RGB view of RGBX: writers.encode hands the 4-byte layout to Pillow as it is.
    return out[..., :3]


class Recombiner:
    """The colour step on one device. compile: the ~20 elementwise passes of a 16-bit strip
    fused into one loop by torch.compile (4x); its last bit differs from eager's."""

    def __init__(self, device: torch.device, compile: bool = False):
        self.device = device
        self._strip16 = torch.compile(_strip16, dynamic=True) if compile else _strip16
        self._tables16: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lut_dev: torch.Tensor | None = None

    def start(self, gray: np.ndarray | torch.Tensor, ab: torch.Tensor | None,
              abq: np.ndarray | None = None) -> Callable[[], np.ndarray]:
        """Choose this image's kernel, do its torch part now (on the caller's thread: torch
        already uses every core) and return the rest, which gives the RGB array.

        gray: (H, W) uint8/uint16 array, or a uint8 tensor on the device (device JPEG decode).
        ab: (2, s, s) the net's float a*, b*; abq: the same quantised (made here if None).
        16-bit output needs ab; 8-bit output uses abq alone."""
        if isinstance(gray, np.ndarray) and gray.dtype == np.uint16:
            if ab is None:
                raise ValueError("16-bit output needs the net's float a/b, not quantised ones")
            rgb = self._recombine16(gray, ab)
            return lambda: rgb
        if abq is None:
            abq = quantise_ab(ab)
        if self.device.type == "cpu" and isinstance(gray, np.ndarray):
            return partial(lookup, gray, upsample_ab(abq, gray.shape))
        rgb = self._recombine8_device(gray, abq)
        return lambda: rgb

    def recombine(self, gray: np.ndarray | torch.Tensor, ab_small: torch.Tensor | np.ndarray
                  ) -> np.ndarray:
        """Full-resolution RGB at once. ab_small: the net's float a/b, or already quantised."""
        if isinstance(ab_small, np.ndarray):
            return self.start(gray, None, ab_small)()
        return self.start(gray, ab_small)()

    @torch.inference_mode()
    def _recombine8_device(self, gray: np.ndarray | torch.Tensor, abq: np.ndarray) -> np.ndarray:
        """The 8-bit lookup on the device: upsampling in torch, the table in its memory."""
        H, W = gray.shape
        sh = abq.shape[-2]
        if self._lut_dev is None:  # np.array: a copy, as the cached table is read-only
            self._lut_dev = torch.from_numpy(np.array(lut8().view(np.int32))).to(self.device)
        A = F.interpolate(to_device(abq, self.device)[None].float(), size=(sh, W), mode="bilinear",
                          align_corners=False)[0]
        y0, y1, wy = self._rows(H, sh)
        out = np.empty((H, W, 4), np.uint8)
        packed = out.view(np.int32)[..., 0]
        rows = max(1, TILE_PIXELS // W)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            i0, i1, w = y0[r0:r1], y1[r0:r1], wy[r0:r1]
            a = torch.lerp(A[0, i0], A[0, i1], w).round_().long()
            b = torch.lerp(A[1, i0], A[1, i1], w).round_().long()
            g = gray[r0:r1] if isinstance(gray, torch.Tensor) else to_device(gray[r0:r1], self.device)
            idx = (a << 16) | (b << 8) | g.long()
            packed[r0:r1] = self._lut_dev[idx].cpu().numpy()
        return out[..., :3]

    def _rows(self, H: int, sh: int):
        """Bilinear (half-pixel) source rows and weights for upsampling sh rows to H."""
        ys = ((torch.arange(H, device=self.device, dtype=torch.float32) + 0.5) * (sh / H) - 0.5)
        ys = ys.clamp_(0, sh - 1)
        y0 = ys.floor().long()
        y1 = (y0 + 1).clamp_(max=sh - 1)
        return y0, y1, (ys - y0).unsqueeze(1)

    def _luts16(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per 16-bit gray level: linear luminance Y and f(Y); a lookup is far cheaper than the
        curves per pixel, and exact."""
        if self._tables16 is None:
            Y = color.srgb_to_linear(torch.arange(65536, dtype=torch.float64) / 65535)
            self._tables16 = (Y.float().to(self.device), color._f(Y).float().to(self.device))
        return self._tables16

    @torch.inference_mode()
    def _recombine16(self, gray: np.ndarray, ab_small: torch.Tensor) -> np.ndarray:
        H, W = gray.shape
        Ylut, fylut = self._luts16()
        out = np.empty((H, W, 3), np.uint16)
        rows = max(1, (1 << 20) // W)  # float strips: ~100 MB of temporaries each
        # Bilinear upsampling is separable: along W once for all rows of the small map, then
        # along H per strip. Equal to F.interpolate(size=(H, W)) without holding all of it.
        sh = ab_small.shape[-2]
        A = F.interpolate(ab_small[None].float(), size=(sh, W), mode="bilinear",
                          align_corners=False)[0]  # (2, sh, W)
        y0, y1, wy = self._rows(H, sh)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            strip = (to_device(gray[r0:r1], self.device).long(), A, y0[r0:r1], y1[r0:r1],
                     wy[r0:r1], Ylut, fylut)
            out[r0:r1] = self._strip16(*strip).cpu().numpy()
        return out
