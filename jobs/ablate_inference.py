"""Measure inference variants of one checkpoint on a collection's validation split (never its
evaluation split): reflect padding of the net's input, averaging with the mirrored image's
prediction, edge-aware (guided-filter) upsampling of a/b by the full-resolution L*, and the
chroma gain. Prints one row per variant with ab-MSE and PSNR beside gray's,
colourfulness, the flat-field border deviation, and the net's cost per image.

    .venv/bin/python jobs/ablate_inference.py out/train/best.pt data/train [--limit 300]
    # guided upsampling needs photos larger than the net's input: the originals at 1024 px
    .venv/bin/python jobs/ablate_inference.py CKPT data/train --originals --max-side 1024
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.model.evaluate import flat_fields, load_rgb, score
from pipeline.model.traindata import read_manifest
from pipeline.worker.engine import Colorizer
from pipeline.worker.imaging import colorfulness, luminance_gray, net_input


class Mirrored(Colorizer):
    """Averages the prediction with that of the left-right mirrored input."""

    def predict_ab(self, smalls, pad_to=None):
        a = super().predict_ab(smalls, pad_to)
        flipped = np.ascontiguousarray(np.asarray(smalls)[..., ::-1])
        b = super().predict_ab(flipped, pad_to).flip(-1)
        return (a + b) / 2


def _box(x, r):
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


class Guided(Colorizer):
    """Upsamples a/b bilinearly, then a fast guided filter (He et al.) with L* as the guide, so
    colour edges follow the full-resolution tonal edges. radius in pixels of a 1024-px photo."""

    radius, eps = 16, 1e-3

    def recombine(self, gray, ab_small):
        H, W = gray.shape
        s = max(1, round(self.radius * max(H, W) / 1024 / 4))  # the filter runs at 1/s scale
        r = max(1, round(self.radius * max(H, W) / 1024 / s))
        L = self._L8[torch.from_numpy(gray).long()][None, None] / 100  # the engine's exact L* table
        p = F.interpolate(ab_small[None], (H, W), mode="bilinear", antialias=True, align_corners=False)
        small = (H // s, W // s)
        Il, pl = (F.interpolate(t, small, mode="bilinear", antialias=True) for t in (L, p))
        mI, mp = _box(Il, r), _box(pl, r)
        a = (_box(Il * pl, r) - mI * mp) / (_box(Il * Il, r) - mI * mI + self.eps)
        b = mp - a * mI
        a, b = (F.interpolate(_box(t, r), (H, W), mode="bilinear") for t in (a, b))
        return super().recombine(gray, (a * L + b)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("collection")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--originals", action="store_true", help="the original files, not the 224-px cache")
    a = ap.parse_args()
    rows = read_manifest(Path(a.collection), "val")[: a.limit]
    photos = [load_rgb(r["path"] if a.originals else Path(a.collection) / r["cache"], a.max_side)
              for r in rows]
    grays = [luminance_gray(p) for p in photos]
    original_colour = np.mean([colorfulness(p) for p in photos])
    variants = [("pad 0", Colorizer, 0, 1.0), ("pad 16", Colorizer, 16, 1.0),
                ("pad 16 + mirror", Mirrored, 16, 1.0), ("pad 16 + guided", Guided, 16, 1.0)]
    print(f"{len(photos)} validation photos of {a.collection}, net at {a.size}")
    print("| variant | ab-MSE / gray's | PSNR - gray's dB | colourfulness % | flat border dev (60/128/200) "
          "| flat chroma | net ms/img | recombine ms/img |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cls, pad, gain in variants:
        net = cls(a.checkpoint, device="cpu", size=a.size)
        net.pad = pad
        if gain != 1.0:
            net.chroma_gain = gain
        s, g, t, t_rec = [], [], 0.0, 0.0
        for ref, gray in zip(photos, grays, strict=True):
            t0 = time.perf_counter()
            ab = net.predict_ab(net_input(gray, a.size)[None])[0]
            t += time.perf_counter() - t0
            t0 = time.perf_counter()
            out = net.recombine(gray, ab)
            t_rec += time.perf_counter() - t0
            s.append(score(out, ref))
            g.append(score(net.recombine(gray, torch.zeros_like(ab)), ref))
        mse = np.mean([x.ab_mse for x in s]) / np.mean([x.ab_mse for x in g])
        dpsnr = np.mean([x.psnr for x in s]) - np.mean([x.psnr for x in g])
        col = np.mean([x.colorfulness for x in s]) / original_colour
        ff = flat_fields(net, a.size)
        print(f"| {name} (gain {net.chroma_gain:.1f}) | {mse:.3f} | {dpsnr:+.2f} | {100 * col:.0f} | "
              + "/".join(f"{f['border_deviation']:.1f}" for f in ff) + " | "
              + "/".join(f"{f['median_chroma']:.1f}" for f in ff)
              + f" | {1000 * t / len(photos):.1f} | {1000 * t_rec / len(photos):.1f} |", flush=True)


if __name__ == "__main__":
    main()
