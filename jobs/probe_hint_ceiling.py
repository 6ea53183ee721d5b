"""How far can edge-aware propagation of hints go? (issue 25)

Scores the shipped method (worker/hints.propagate) against two of its own variants on every k-th
photo of a set, with the evaluation's simulated points (3 and 10, seeded as `evaluate --hints`):
- `true_edges`: the same solve, its affinity computed from the *true* colour (lightness plus
  twice the chroma), which no real method has: a ceiling for better edges;
- `screen=X`: the hints' reach fading sooner.
PSNR over gray, as `colorize evaluate`.

usage: python -m jobs.probe_hint_ceiling data/train [--photos 60] [--screens 3e-5,3e-4]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage.color import rgb2lab
from skimage.transform import resize

from pipeline.model.evaluate import eval_photos, load_rgb, score
from pipeline.worker import hints
from pipeline.worker.engine import Colorizer
from pipeline.worker.imaging import luminance_gray, net_input

SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--screens", default="3e-5")
    a = ap.parse_args()
    photos = eval_photos(a.src, "/tmp/probe_hint_ceiling")
    picked = list(range(0, len(photos), max(1, len(photos) // a.photos)))[:a.photos]
    net = Colorizer(None, device="cpu", size=SIZE)
    methods = ["shipped", "true_edges", *(f"screen={s}" for s in a.screens.split(","))]
    gain = {m: {3: [], 10: []} for m in methods}
    for i in picked:
        ref = load_rgb(photos[i][0], 512)
        gray, lab = luminance_gray(ref), rgb2lab(ref)
        small = net_input(gray, SIZE)
        base = score(net.recombine(gray, torch.zeros(2, SIZE, SIZE)), ref).psnr
        ab = net.predict_ab(small[None])[0].float().numpy()
        L = net._L8[torch.from_numpy(small).long()].numpy()
        t = resize(lab, (SIZE, SIZE), order=1, anti_aliasing=True)
        true_L = np.sqrt(t[..., 0] ** 2 + 4 * (t[..., 1] ** 2 + t[..., 2] ** 2)).astype(np.float32)
        for n in (3, 10):
            pts = hints.simulate(lab, n, np.random.default_rng((25, i, n)))
            cells = hints.on_grid(pts, gray.shape[1], gray.shape[0], SIZE)
            for m in methods:
                if m == "shipped":
                    out = hints.propagate(L, ab, cells)
                elif m == "true_edges":
                    out = hints.propagate(true_L, ab, cells)
                else:
                    out = hints.propagate(L, ab, cells, screen=float(m.split("=")[1]))
                gain[m][n].append(score(net.recombine(gray, torch.from_numpy(out)), ref).psnr - base)
    print(f"{a.src}: {len(picked)} photos, PSNR over gray")
    for m, g in gain.items():
        print(f"  {m:14s} 3 points {np.mean(g[3]):+.2f} dB   10 points {np.mean(g[10]):+.2f} dB")


if __name__ == "__main__":
    main()
