"""Is there a confidence signal worth shrinking the colour by? (issue 11; the model card's answer)

On the validation split, at the net's own 256 x 256 grid: the ab-MSE ratio to gray's and the mean
PSNR gain (of a*b* alone) for the net's output, for a per-image *oracle* gain (the least-squares
scale of each photo's prediction against its truth: the most any per-image shrink could give),
and for shrinks that need no truth: a global gain, the mirrored average, and a per-pixel shrink by
how much the mirrored prediction disagrees. The correlations say whether anything the engine can
see predicts the oracle gain.

usage: python jobs/probe_confidence.py CHECKPOINT COLLECTION [--split val] [--limit N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2lab

from pipeline.model.evaluate import load_rgb
from pipeline.model.traindata import read_manifest
from pipeline.worker.engine import Colorizer
from pipeline.worker.imaging import luminance_gray, net_input

SIZE = 256


def predictions(ck: str, collection: str, split: str, limit: int | None):
    net = Colorizer(ck, device="cpu", size=SIZE)
    net.chroma_gain = 1.0  # the raw net; gains are probed below
    for r in read_manifest(Path(collection), split)[:limit]:
        ref = load_rgb(r["path"], 512)
        small = net_input(luminance_gray(ref), SIZE)
        P = net.predict_ab(small[None])[0].numpy()
        Pf = net.predict_ab(np.ascontiguousarray(small[None, :, ::-1]))[0].numpy()[:, :, ::-1]
        T = rgb2lab(np.asarray(Image.fromarray(ref).resize((SIZE, SIZE), Image.BILINEAR)))
        yield P, Pf, T[..., 1:].transpose(2, 0, 1), small


def ratio_and_psnr(items, fn) -> tuple[float, float]:
    err = gray = 0.0
    gains = []
    for P, Pf, T, L in items:
        e, g = float(((fn(P, Pf, T, L) - T) ** 2).mean()), float((T ** 2).mean())
        err, gray = err + e, gray + g
        gains.append(10 * np.log10((g + 1e-6) / (e + 1e-6)))
    return err / gray, float(np.mean(gains))


def oracle_gain(P, T) -> float:
    return max(0.0, float((P * T).sum() / max(float((P * P).sum()), 1e-9)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("collection")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int)
    a = ap.parse_args()
    items = list(predictions(a.checkpoint, a.collection, a.split, a.limit))

    def pixel_shrink(k):
        def fn(P, Pf, T, L):
            M = (P + Pf) / 2
            return M / (1 + k * ((P - Pf) ** 2).sum(0) / (((M ** 2).sum(0)) + 1e-3))
        return fn

    variants = {"net (gain 1)": lambda P, Pf, T, L: P,
                "gain 0.9": lambda P, Pf, T, L: 0.9 * P,
                "gain 1.1": lambda P, Pf, T, L: 1.1 * P,
                "mirrored average": lambda P, Pf, T, L: (P + Pf) / 2,
                **{f"per-pixel shrink by disagreement, k={k}": pixel_shrink(k) for k in (0.5, 1, 2, 4)},
                "ORACLE per-image gain": lambda P, Pf, T, L: oracle_gain(P, T) * P}
    print(f"{len(items)} photos of the {a.split} split, ab at {SIZE}x{SIZE}")
    print("| variant | ab-MSE / gray's | a*b* PSNR - gray's |\n|---|---|---|")
    for name, fn in variants.items():
        r, dp = ratio_and_psnr(items, fn)
        print(f"| {name} | {r:.3f} | {dp:+.2f} dB |")
    og = np.array([oracle_gain(P, T) for P, Pf, T, L in items])
    feats = {"mean predicted chroma": [float(np.hypot(*P).mean()) for P, *_ in items],
             "mirror disagreement": [float(((P - Pf) ** 2).mean() / max(float((P ** 2).mean()), 1e-9))
                                     for P, Pf, *_ in items],
             "mean gray level": [float(L.mean()) for *_, L in items],
             "gray contrast (std)": [float(L.std()) for *_, L in items]}
    print("\noracle gain quantiles 10/25/50/75/90 %:", np.round(np.quantile(og, [.1, .25, .5, .75, .9]), 2))
    for name, f in feats.items():
        print(f"correlation of the oracle gain with {name}: {np.corrcoef(f, og)[0, 1]:+.2f}")


if __name__ == "__main__":
    main()
