"""Batched inference: gray scans -> net at size x size -> a/b upsampled -> full-resolution RGB."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import color
from .errors import UsageError
from .imaging import net_input
from .model import Checkpoint, load_checkpoint

TILE_PIXELS = 1 << 22  # full-resolution work is done in row strips of about this many pixels
# The net's input is reflect-padded by this many pixels a side and its output cropped back: the
# convolutions' zero padding otherwise paints a colour cast along the frame (the "cyan block"
# in every corner). A multiple of 8, as the net's input must be.
NET_PAD = 16


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def _strip16(g, A, i0, i1, w, Ylut, fylut):
    """One strip of a 16-bit output: gray levels g (th, W); a*, b* interpolated between rows
    i0 and i1 (weights w) of A, the small a/b map already upsampled along W. The exact curve
    throughout: a table of 65536 gray levels times a/b would not fit."""
    a = torch.lerp(A[0, i0], A[0, i1], w)
    b = torch.lerp(A[1, i0], A[1, i1], w)
    lin = color.compose_linear(Ylut[g], fylut[g], a, b)
    return (color.linear_to_srgb(lin).clamp(0, 1) * 65535.0).round().to(torch.int32)


_LUT8: np.ndarray | None = None
_LUT8_LOCK = threading.Lock()  # pool threads ask for it at once; build it only once


def lut8() -> np.ndarray:
    """The whole 8-bit colour step as one table: index (a*+128) << 16 | (b*+128) << 8 | gray
    -> the sRGB pixel packed as RGBX in a uint32 (64 MiB, built once per process in ~1 s).

    Exact Lab -> sRGB with the luminance-keeping gamut mapping, evaluated in float64 at every
    whole a*, b* and gray level; a pixel then costs one lookup instead of ~20 float passes.
    a/b-major so that neighbouring pixels, whose a/b barely differ, hit nearby entries."""
    global _LUT8
    with _LUT8_LOCK:
        if _LUT8 is None:
            _LUT8 = _build_lut8()
    return _LUT8


def jpeg_decoder(backend: str = "auto"):
    """decode(list of 1-D uint8 tensors, device) -> list of (1, H, W) gray tensors: TorchCodec
    (torchvision.io's successor) where installed, else torchvision.io, deprecated since 0.29."""
    if backend in ("auto", "torchcodec"):
        try:
            from torchcodec.decoders import decode_jpeg as tc_decode

            return lambda data, device: tc_decode(list(data), mode="GRAY", device=device)
        except ImportError:
            if backend == "torchcodec":
                raise
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode

    def decode(data, device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return tv_decode(list(data), mode=ImageReadMode.GRAY, device=device)

    return decode


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


class Colorizer:
    """Holds one loaded net on one device; reused for every image a worker sees."""

    def __init__(self, checkpoint: str | os.PathLike | Checkpoint | None = None,
                 device: str = "auto", size: int = 256, compile: bool = False):
        if size % 8 or size < 8:
            raise UsageError(f"--size must be a positive multiple of 8, got {size}")
        self.device = pick_device(device)
        self.ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, self.device)
        # channels_last: oneDNN's (and cuDNN's) fast layout; the net runs 1.7x faster on a CPU.
        self.model = self.ck.model.to(self.device, memory_format=torch.channels_last).eval()
        self.size = size
        cuda = self.device.type == "cuda"
        self._amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
        self._tables: dict[int, tuple[torch.Tensor, ...]] = {}
        # torch.compile: the net ~1.4x faster on a CPU (after ~4 s of compiling per worker), and
        # the ~20 elementwise passes of a 16-bit strip fused into one loop (4x). Its arithmetic
        # differs from eager in the last bit, so it is part of a job's identity.
        self.compiled = compile
        self._net = torch.compile(self.model) if compile else self.model
        self._strip16 = torch.compile(_strip16, dynamic=True) if compile else _strip16
        self._lut_dev: torch.Tensor | None = None
        self.jpeg_backend = "auto"  # decode_jpegs: see jpeg_decoder
        self.pad = NET_PAD
        # A regression net's a/b are the conditional mean: grayer than photos are. The gain,
        # chosen on the validation split after training, is part of the checkpoint.
        self.chroma_gain = float(self.ck.meta.get("chroma_gain", 1.0))

    @property
    def sha256(self) -> str:
        return self.ck.sha256

    def _luts(self, levels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per gray level (256 or 65536): L*, linear luminance Y and f(Y). A lookup is far
        cheaper than the curves per pixel, and exact."""
        if levels not in self._tables:
            g = torch.arange(levels, dtype=torch.float64) / (levels - 1)
            Y = color.srgb_to_linear(g)
            self._tables[levels] = tuple(
                t.float().to(self.device) for t in (color.gray_to_L(g), Y, color._f(Y)))
        return self._tables[levels]

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """Host -> device; on CUDA through pinned memory so the copy overlaps other work."""
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch refuses read-only
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    @torch.inference_mode()
    def decode_jpegs(self, files: list[bytes]) -> list[torch.Tensor | None]:
        """Gray JPEG files -> (H, W) uint8 tensors on the device, in one batched call (nvJPEG on
        CUDA, libjpeg-turbo on the CPU). None for a file the decoder refuses; one bad file
        fails a batched call, so then each is tried alone."""
        decode = jpeg_decoder(self.jpeg_backend)
        data = [torch.from_numpy(np.frombuffer(f, np.uint8).copy()) for f in files]
        try:
            return [t[0] for t in decode(data, device=self.device)]
        except (RuntimeError, ValueError):
            out: list[torch.Tensor | None] = []
            for t in data:
                try:
                    out.append(decode([t], device=self.device)[0][0])
                except (RuntimeError, ValueError):
                    out.append(None)
            return out

    @torch.inference_mode()
    def net_input(self, gray: torch.Tensor) -> torch.Tensor:
        """The net's input from a gray image already on the device (imaging.net_input's twin)."""
        x = gray[None, None].float()
        if tuple(gray.shape) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x[0, 0].round_().clamp_(0, 255).to(torch.uint8)

    @torch.inference_mode()
    def predict_ab(self, smalls: np.ndarray | list, pad_to: int | None = None) -> torch.Tensor:
        """(B, s, s) uint8 gray (an array, or a list of arrays and device tensors) -> (B, 2, s, s)
        float32 a*, b* on the device. pad_to: the job's batch size, which a compiled net is
        given every time (see below)."""
        if isinstance(smalls, np.ndarray):
            g = self._to_device(np.ascontiguousarray(smalls))
        else:
            g = torch.stack([s if isinstance(s, torch.Tensor) else self._to_device(s)
                             for s in smalls])
        x = self._luts(256)[0][g.long()].unsqueeze(1) / 100.0  # (B, 1, s, s) L*/100
        P = self.pad
        if P:
            x = F.pad(x, (P, P, P, P), mode="reflect")
        B = x.shape[0]
        if self.compiled and pad_to and B < pad_to:
            # A shard's last, short batch is padded: a new shape would cost a recompile (~4 s
            # each, and there are batch_size of them), dynamic shapes run the net 20 % slower,
            # and one shape for the whole job keeps its arithmetic (and so its bytes) the same
            # whichever shards a worker happened to see first.
            x = torch.cat([x, x.new_zeros((pad_to - B, *x.shape[1:]))])
        with self._amp():
            y = self._net(x.contiguous(memory_format=torch.channels_last))[:B]
        if P:
            y = y[..., P:-P, P:-P]
        ab = color.decode_ab(y.float())
        if self.chroma_gain != 1.0:
            ab = ab * self.chroma_gain
        return ab.contiguous()

    def host_colour(self, gray: np.ndarray | torch.Tensor) -> bool:
        """Whether this image's colour step splits into upsample_ab (torch, the caller's thread)
        and lookup (numpy; releases the GIL, so it may run in a pool thread beside the net)."""
        return self.device.type == "cpu" and isinstance(gray, np.ndarray) and gray.dtype == np.uint8

    @staticmethod
    def quantise_ab(ab: torch.Tensor) -> np.ndarray:
        """(..., 2, s, s) float a*, b* -> uint8 a* + 128, b* + 128: the net's 8-bit output,
        within half a unit of a* (just-noticeable differences are ~2 units)."""
        return (ab.float() + color.AB_OFFSET).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()

    def recombine(self, gray: np.ndarray | torch.Tensor, ab_small: torch.Tensor | np.ndarray
                  ) -> np.ndarray:
        """Full-resolution RGB from the source's own L* and bilinearly upsampled a/b.

        gray: (H, W) uint8/uint16 array, or a uint8 tensor on the device (decode_jpegs).
        ab_small: (2, s, s) a*, b* as the net's float tensor, or already quantise_ab'd."""
        if isinstance(gray, np.ndarray) and gray.dtype == np.uint16:
            if isinstance(ab_small, np.ndarray):
                raise ValueError("16-bit output needs the net's float a/b, not quantised ones")
            return self._recombine16(gray, ab_small)
        if isinstance(ab_small, torch.Tensor):
            ab_small = self.quantise_ab(ab_small)
        if self.host_colour(gray):
            return self.lookup(gray, self.upsample_ab(ab_small, gray.shape))
        return self._recombine8_device(gray, ab_small)

    @staticmethod
    @torch.inference_mode()
    def upsample_ab(abq: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """(2, s, s) quantised a/b -> (H, W) uint16 holding (a + 128) << 8 | (b + 128).

        torch's uint8 bilinear kernel (vectorised, the Pillow-SIMD algorithm; for upsampling
        antialias changes nothing): 2.7 ms for 1.9 megapixels on one core, Pillow 8 ms. With the
        channels interleaved b, a, each pixel's two bytes are already half a lookup index."""
        x = torch.from_numpy(np.ascontiguousarray(abq[::-1]))[None]
        x = x.contiguous(memory_format=torch.channels_last)
        up = F.interpolate(x, size=tuple(shape), mode="bilinear", antialias=True,
                           align_corners=False)
        return up.permute(0, 2, 3, 1).contiguous().numpy()[0].view(np.uint16)[..., 0]

    @staticmethod
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
        # An RGB view of RGBX: imaging.encode hands the 4-byte layout to Pillow as it is.
        return out[..., :3]

    @torch.inference_mode()
    def _recombine8_device(self, gray: np.ndarray | torch.Tensor, abq: np.ndarray) -> np.ndarray:
        """The same lookup on the device (CUDA): upsampling in torch, the table in its memory."""
        H, W = gray.shape
        sh = abq.shape[-2]
        if self._lut_dev is None:
            self._lut_dev = torch.from_numpy(lut8().view(np.int32)).to(self.device)
        A = F.interpolate(self._to_device(abq)[None].float(), size=(sh, W), mode="bilinear",
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
            g = gray[r0:r1] if isinstance(gray, torch.Tensor) else self._to_device(gray[r0:r1])
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

    @torch.inference_mode()
    def _recombine16(self, gray: np.ndarray, ab_small: torch.Tensor) -> np.ndarray:
        H, W = gray.shape
        _, Ylut, fylut = self._luts(65536)
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
            strip = (self._to_device(gray[r0:r1]).long(), A, y0[r0:r1], y1[r0:r1], wy[r0:r1],
                     Ylut, fylut)
            out[r0:r1] = self._strip16(*strip).cpu().numpy()
        return out

    def colorize(self, grays: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of gray scans (any sizes) -> full-resolution RGB arrays of the same sizes."""
        if not grays:
            return []
        ab = self.predict_ab(np.stack([net_input(g, self.size) for g in grays]))
        return [self.recombine(g, ab[i]) for i, g in enumerate(grays)]
