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


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


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
                 device: str = "auto", size: int = 256):
        if size % 8 or size < 8:
            raise ValueError(f"--size must be a positive multiple of 8, got {size}")
        self.device = pick_device(device)
        self.ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, self.device)
        self.model = self.ck.model.to(self.device).eval()
        self.size = size
        cuda = self.device.type == "cuda"
        self._amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
        self._luts: dict[int, torch.Tensor] = {}

    @property
    def sha256(self) -> str:
        return self.ck.sha256

    def _lut(self, levels: int) -> torch.Tensor:
        """L* for every gray level (256 or 65536): cheaper than the curve per pixel."""
        if levels not in self._luts:
            g = torch.arange(levels, dtype=torch.float64) / (levels - 1)
            self._luts[levels] = color.gray_to_L(g).float().to(self.device)
        return self._luts[levels]

    @torch.inference_mode()
    def predict_ab(self, smalls: np.ndarray) -> torch.Tensor:
        """(B, s, s) uint8 gray -> (B, 2, s, s) float32 a*, b* on the device."""
        g = torch.from_numpy(np.ascontiguousarray(smalls)).to(self.device, non_blocking=True)
        x = self._lut(256)[g.long()].unsqueeze(1) / 100.0  # (B, 1, s, s) L*/100
        with self._amp():
            y = self.model(x)
        return color.decode_ab(y.float())

    @torch.inference_mode()
    def recombine(self, gray: np.ndarray, ab_small: torch.Tensor) -> np.ndarray:
        """Full-resolution RGB from the source's own L* and bilinearly upsampled a/b."""
        H, W = gray.shape
        levels = 65536 if gray.dtype == np.uint16 else 256
        maxv = float(levels - 1)
        lut = self._lut(levels)
        out = np.empty((H, W, 3), gray.dtype)
        rows = max(1, TILE_PIXELS // W)
        # grid_sample on each strip with these pixel-centre coordinates is exactly
        # F.interpolate(size=(H, W), mode="bilinear") of the whole, without holding it.
        xs = (torch.arange(W, device=self.device, dtype=torch.float32) + 0.5) * (2.0 / W) - 1.0
        src = ab_small[None].float()
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            ys = (torch.arange(r0, r1, device=self.device, dtype=torch.float32) + 0.5) * (2.0 / H) - 1.0
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx, gy], dim=-1)[None]  # (1, th, W, 2), x first
            ab = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
            g = torch.from_numpy(gray[r0:r1].astype(np.int32, copy=False)).to(self.device)
            lab = torch.cat([lut[g][None], ab], dim=0)  # (3, th, W)
            rgb = (color.lab_to_rgb(lab, keep_L=True) * maxv).round_()
            rgb = rgb.to(torch.int32 if levels == 65536 else torch.uint8).permute(1, 2, 0)
            out[r0:r1] = rgb.cpu().numpy()
        return out

    def colorize(self, grays: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of gray scans (any sizes) -> full-resolution RGB arrays of the same sizes."""
        if not grays:
            return []
        ab = self.predict_ab(np.stack([net_input(g, self.size) for g in grays]))
        return [self.recombine(g, ab[i]) for i, g in enumerate(grays)]
