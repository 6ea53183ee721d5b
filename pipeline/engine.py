"""Batched inference: gray scans -> net at size x size -> a/b upsampled -> full-resolution RGB."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import color
from .model import Checkpoint, load_checkpoint

TILE_PIXELS = 1 << 20  # full-resolution work is done in row strips of about this many pixels
ENC_STEPS = 1 << 16  # linear-light steps of the 8-bit sRGB encoding table


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def _strip_linear(g, A, i0, i1, w, Ylut, fylut):
    """Linear RGB (th, W, 3) of one strip: gray levels g (th, W); a*, b* interpolated between
    rows i0 and i1 (weights w) of A, the small a/b map already upsampled along W."""
    a = torch.lerp(A[0, i0], A[0, i1], w)
    b = torch.lerp(A[1, i0], A[1, i1], w)
    return color.compose_linear(Ylut[g], fylut[g], a, b)


def _strip8(g, A, i0, i1, w, Ylut, fylut, enc):
    """One strip of an 8-bit output -> (th, W, 3) uint8."""
    lin = _strip_linear(g, A, i0, i1, w, Ylut, fylut)
    return enc[(lin * ENC_STEPS).round().clamp(0, ENC_STEPS).long()]


def _strip16(g, A, i0, i1, w, Ylut, fylut):
    """The same for 16-bit output, with the exact curve (a table would cost precision)."""
    lin = _strip_linear(g, A, i0, i1, w, Ylut, fylut)
    return (color.linear_to_srgb(lin).clamp(0, 1) * 65535.0).round().to(torch.int32)


def net_input(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8/uint16 gray -> (size, size) uint8 gray, antialiased (the net needs no 16 bits)."""
    g8 = gray if gray.dtype == np.uint8 else (gray >> 8).astype(np.uint8)
    im = Image.fromarray(g8, "L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.array(im)  # writable: torch.from_numpy refuses read-only buffers


class Colorizer:
    """Holds one loaded net on one device; reused for every image a worker sees."""

    def __init__(self, checkpoint: str | os.PathLike | Checkpoint | None = None,
                 device: str = "auto", size: int = 256, compile: bool = False):
        if size % 8 or size < 8:
            raise ValueError(f"--size must be a positive multiple of 8, got {size}")
        self.device = pick_device(device)
        self.ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, self.device)
        self.model = self.ck.model.to(self.device).eval()
        self.size = size
        cuda = self.device.type == "cuda"
        self._amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
        self._tables: dict[int, tuple[torch.Tensor, ...]] = {}
        # torch.compile fuses the ~20 elementwise passes of a strip into one loop (4x on a CPU).
        # Its arithmetic differs from eager in the last bit, so it is part of a job's identity.
        self._strip8 = torch.compile(_strip8, dynamic=True) if compile else _strip8
        self._strip16 = torch.compile(_strip16, dynamic=True) if compile else _strip16
        self._enc: torch.Tensor | None = None

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

    def _encoder(self) -> torch.Tensor:
        """Linear light quantised to 1/65536 -> 8-bit sRGB: replaces a pow per channel."""
        if self._enc is None:
            x = torch.arange(ENC_STEPS + 1, dtype=torch.float64) / ENC_STEPS
            self._enc = (color.linear_to_srgb(x) * 255).round().to(torch.uint8).to(self.device)
        return self._enc

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """Host -> device; on CUDA through pinned memory so the copy overlaps other work."""
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch refuses read-only
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    @torch.inference_mode()
    def predict_ab(self, smalls: np.ndarray) -> torch.Tensor:
        """(B, s, s) uint8 gray -> (B, 2, s, s) float32 a*, b* on the device."""
        g = self._to_device(np.ascontiguousarray(smalls))
        x = self._luts(256)[0][g.long()].unsqueeze(1) / 100.0  # (B, 1, s, s) L*/100
        with self._amp():
            y = self.model(x)
        return color.decode_ab(y.float())

    @torch.inference_mode()
    def recombine(self, gray: np.ndarray, ab_small: torch.Tensor) -> np.ndarray:
        """Full-resolution RGB from the source's own L* and bilinearly upsampled a/b."""
        H, W = gray.shape
        sixteen = gray.dtype == np.uint16
        _, Ylut, fylut = self._luts(65536 if sixteen else 256)
        out = np.empty((H, W, 3), gray.dtype)
        rows = max(1, TILE_PIXELS // W)
        # Bilinear upsampling is separable: along W once for all rows of the small map, then
        # along H per strip. Equal to F.interpolate(size=(H, W)) without holding all of it.
        sh = ab_small.shape[-2]
        A = F.interpolate(ab_small[None].float(), size=(sh, W), mode="bilinear",
                          align_corners=False)[0]  # (2, sh, W)
        ys = ((torch.arange(H, device=self.device, dtype=torch.float32) + 0.5) * (sh / H) - 0.5)
        ys = ys.clamp_(0, sh - 1)
        y0 = ys.floor().long()
        y1 = (y0 + 1).clamp_(max=sh - 1)
        wy = (ys - y0).unsqueeze(1)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            strip = (self._to_device(gray[r0:r1]).long(), A, y0[r0:r1], y1[r0:r1], wy[r0:r1],
                     Ylut, fylut)
            rgb = self._strip16(*strip) if sixteen else self._strip8(*strip, self._encoder())
            out[r0:r1] = rgb.cpu().numpy()
        return out

    def colorize(self, grays: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of gray scans (any sizes) -> full-resolution RGB arrays of the same sizes."""
        if not grays:
            return []
        ab = self.predict_ab(np.stack([net_input(g, self.size) for g in grays]))
        return [self.recombine(g, ab[i]) for i, g in enumerate(grays)]
