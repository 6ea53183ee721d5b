"""Measure inference variants of one checkpoint on a collection's validation split (never its
evaluation split): reflect padding of the net's input, averaging with the mirrored image's
prediction, and the chroma gain. Prints one row per variant with ab-MSE and PSNR beside gray's,
colourfulness, the flat-field border deviation, and the net's cost per image.

    .venv/bin/python jobs/ablate_inference.py out/train/best.pt data/train [--limit 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.engine import Colorizer
from pipeline.evaluate import flat_fields, load_rgb, score
from pipeline.imaging import colorfulness, luminance_gray, net_input
from pipeline.traindata import read_manifest


class Mirrored(Colorizer):
    """Averages the prediction with that of the left-right mirrored input."""

    def predict_ab(self, smalls, pad_to=None):
        a = super().predict_ab(smalls, pad_to)
        flipped = np.ascontiguousarray(np.asarray(smalls)[..., ::-1])
        b = super().predict_ab(flipped, pad_to).flip(-1)
        return (a + b) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("collection")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    rows = read_manifest(Path(a.collection), "val")[: a.limit]
    photos = [load_rgb(Path(a.collection) / r["cache"], 512) for r in rows]
    grays = [luminance_gray(p) for p in photos]
    original_colour = np.mean([colorfulness(p) for p in photos])
    variants = [("pad 0", Colorizer, 0, 1.0), ("pad 16", Colorizer, 16, 1.0),
                ("pad 16 + mirror", Mirrored, 16, 1.0)]
    print(f"{len(photos)} validation photos of {a.collection}, net at {a.size}")
    print("| variant | ab-MSE / gray's | PSNR - gray's dB | colourfulness % | flat border dev (60/128/200) "
          "| flat chroma | net ms/img |")
    print("|---|---|---|---|---|---|---|")
    for name, cls, pad, gain in variants:
        net = cls(a.checkpoint, device="cpu", size=a.size)
        net.pad = pad
        if gain != 1.0:
            net.chroma_gain = gain
        s, g, t = [], [], 0.0
        for ref, gray in zip(photos, grays, strict=True):
            t0 = time.perf_counter()
            ab = net.predict_ab(net_input(gray, a.size)[None])[0]
            t += time.perf_counter() - t0
            out = net.recombine(gray, ab)
            s.append(score(out, ref))
            g.append(score(net.recombine(gray, torch.zeros_like(ab)), ref))
        mse = np.mean([x.ab_mse for x in s]) / np.mean([x.ab_mse for x in g])
        dpsnr = np.mean([x.psnr for x in s]) - np.mean([x.psnr for x in g])
        col = np.mean([x.colorfulness for x in s]) / original_colour
        ff = flat_fields(net, a.size)
        print(f"| {name} (gain {net.chroma_gain:.1f}) | {mse:.3f} | {dpsnr:+.2f} | {100 * col:.0f} | "
              + "/".join(f"{f['border_deviation']:.1f}" for f in ff) + " | "
              + "/".join(f"{f['median_chroma']:.1f}" for f in ff)
              + f" | {1000 * t / len(photos):.1f} |", flush=True)


if __name__ == "__main__":
    main()
