"""Probe (issue 23, item 4; measured and not kept): does a second hue family separate toned
prints from colour photos? For each file: the 90th percentile of chroma among the thumbnail's
pixels more than 50 degrees of hue from its chroma-weighted mean hue (a*, b* 3 x 3
median-filtered, chroma >= 4), and that share of the chroma, beside the shipped rules' call.
Run on the training side only (the test of jobs/classifier_rates.py is not touched):

    python -m jobs.probe_offhue old data/old-prints-train > old.tsv
    N=1500 python -m jobs.probe_offhue colour data/train:train > colour.tsv

Prints: expected kind, the rules' call, mean hue, off-hue chroma p90, off-hue share, path."""

import os
import random
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import median_filter
from skimage.color import rgb2lab

from jobs.classifier_rates import files
from pipeline.worker.imaging import classify_rgb


def feats(path: str) -> tuple[str, float, float, float]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    kind = classify_rgb(rgb)
    step = max(1, max(rgb.shape[:2]) // 128)
    lab = rgb2lab(rgb[::step, ::step].astype(np.float32) / 255.0)
    a, b = median_filter(lab[..., 1], 3).ravel(), median_filter(lab[..., 2], 3).ravel()
    c = np.hypot(a, b)
    ch = c >= 4
    if ch.sum() < 10:
        return kind, 0.0, 0.0, 0.0
    h, w = np.arctan2(b[ch], a[ch]), c[ch]
    dom = np.arctan2((w * np.sin(h)).sum(), (w * np.cos(h)).sum())
    off = np.abs(np.angle(np.exp(1j * (h - dom)))) > np.deg2rad(50)
    offc = np.sort(w[off])
    p90 = float(offc[int(0.9 * len(offc))]) if len(offc) > 20 else 0.0
    return kind, float(np.degrees(dom)), p90, float(w[off].sum() / c.sum())


def main(expect: str, specs: list[str]) -> None:
    ps = [p for s in specs for p in files(s)]
    random.Random(0).shuffle(ps)
    for p in ps[: int(os.environ.get("N", "100000"))]:
        try:
            k, dom, p90, share = feats(p)
        except Exception:  # noqa: BLE001 - an unreadable file is no evidence either way
            continue
        print(f"{expect}\t{k}\t{dom:.0f}\t{p90:.2f}\t{share:.4f}\t{p}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
