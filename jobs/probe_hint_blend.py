"""How much of the hint head's colour to take, by the number of hints (issue 25).

The first head (worker/hinthead.py, without the lookup) won with few points and lost with many,
where the edges carry exact pins further than its 1/8-grid colour. This scores `toward = ab + w * head's change` with
w = K / (K + points) for several K (inf: the head whole; 0: propagation alone), PSNR over gray,
on the validation split (never the evaluation sets), seeded points as `evaluate --hints`.

--head FILE scores another head (an exported one); --everywhere takes the head's colour as the
base everywhere, not only where the hints reach along edges (the shipped engine's way).

usage: python -m jobs.probe_hint_blend data/train [--photos 60] [--ks inf,10,5,2,0] [--head F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.color import rgb2lab

from pipeline.model.evaluate import load_rgb, score
from pipeline.model.traindata import read_manifest
from pipeline.worker import hints
from pipeline.worker.engine import Colorizer
from pipeline.worker.imaging import luminance_gray, net_input

SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--ks", default="inf,10,5,2,0")
    ap.add_argument("--split", default="val")
    ap.add_argument("--head", help="an exported head file in place of the shipped one")
    ap.add_argument("--everywhere", action="store_true")
    a = ap.parse_args()
    ks = [float(k) for k in a.ks.split(",")]
    rows = read_manifest(Path(a.src), a.split)
    picked = rows[:: max(1, len(rows) // a.photos)][: a.photos]
    net = Colorizer(None, device="cpu", size=SIZE)
    if a.head:
        net.hint_head_path = a.head
    head = net.hint_head()
    assert head is not None, "no head for the shipped net there"
    counts = (1, 3, 10, 30)
    gain = {k: {n: [] for n in counts} for k in ks}
    for i, r in enumerate(picked):
        ref = load_rgb(r["path"], 512)
        gray, lab = luminance_gray(ref), rgb2lab(ref)
        small = torch.from_numpy(net_input(gray, SIZE))
        base = score(net.recombine(gray, torch.zeros(2, SIZE, SIZE)), ref).psnr
        L = net._L8[small.long()].numpy()
        for n in counts:
            pts = hints.simulate(lab, n, np.random.default_rng((25, i, n)))
            cells = hints.on_grid(pts, gray.shape[1], gray.shape[0], SIZE)
            ab, toward = (t.numpy() for t in net._headed_ab(small, cells, head))  # the head's whole
            for k in ks:
                w = 1.0 if k == float("inf") else k / (k + n)
                mine = ab + w * (toward - ab)
                out = hints.propagate(L, mine, cells) if a.everywhere else hints.propagate(L, ab, cells, toward=mine)
                gain[k][n].append(score(net.recombine(gray, torch.from_numpy(out)), ref).psnr - base)
    print(f"{a.src} {a.split}: {len(picked)} photos, PSNR over gray; head {a.head or 'shipped'}"
          f"{', everywhere' if a.everywhere else ''}")
    for k in ks:
        print(f"  K={k:<4g} " + "  ".join(f"{n} points {np.mean(gain[k][n]):+.2f}" for n in counts))


if __name__ == "__main__":
    main()
