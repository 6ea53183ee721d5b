"""Probe (issue 23, item 4): toned print or colour photo by asking the net. A colour photo's
colour varies with what is in it (a green tree, a red coat, a blue sky on one gray); the net,
trained on colour photos, predicts that variation from the lightness alone. A toned print's
colour varies with its toning curve, its stains, its mount and its scanner's grain, none of
which the net can see in the lightness. So: take away from the scan's a*b* and from the net's
its mean at each lightness (the toning curve, and the net's own colour-of-lightness), smooth
away grain, and ask how well the net's remaining colour points where the scan's does (the
cosine of the two fields of 2-vectors, chroma-weighted by both).

Fitted on the training side (real old prints of other collections than the test's,
data/old-prints-train, against training-split colour photos), among the scans the rules call
colour; then, once, on the test of jobs/classifier_rates.py.

    python -m jobs.probe_net_agreement fit data/old-prints-train data/train:train
    python -m jobs.probe_net_agreement test data/historical-scans data/kphotoalbum data/train:eval ...
"""

from __future__ import annotations

import sys

import numpy as np

from jobs.classifier_rates import files
from pipeline.model.evaluate import load_rgb
from pipeline.worker.imaging import classify_rgb, luminance_gray, net_input

SIZE = 256


def _detoned(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """ab minus its mean within each 5-unit L* bin: what colour does beyond the toning curve."""
    bins = np.clip((L // 5).astype(int), 0, 19)
    out = ab.copy()
    for k in np.unique(bins):
        m = bins == k
        out[m] -= ab[m].mean(axis=0)
    return out


def agreement(rgb8: np.ndarray, net) -> tuple[float, float]:
    """(cosine, scan's residual chroma) of an (h, w, 3) uint8 sRGB photo."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2lab

    sq = np.asarray(Image.fromarray(rgb8).resize((SIZE, SIZE), Image.BILINEAR, reducing_gap=3.0))
    lab = rgb2lab(sq.astype(np.float32) / 255.0)
    gray = net_input(luminance_gray(sq), SIZE)
    pred = net.predict_ab(gray[None])[0].float().cpu().numpy().transpose(1, 2, 0)
    L = lab[..., 0]
    ab = np.stack([gaussian_filter(lab[..., c], 2.0) for c in (1, 2)], -1)
    ra = _detoned(L.reshape(-1), ab.reshape(-1, 2))
    rp = _detoned(L.reshape(-1), pred.reshape(-1, 2))
    num = float((ra * rp).sum())
    den = float(np.sqrt((ra ** 2).sum() * (rp ** 2).sum())) + 1e-9
    return num / den, float(np.sqrt((ra ** 2).sum(axis=1).mean()))


def measure(specs: list[str], net, only_colour: bool = True) -> list[tuple[str, float, float]]:
    rows = []
    for spec in specs:
        for p in files(spec):
            try:
                rgb = load_rgb(p, 512)
            except Exception as e:  # noqa: BLE001 - a probe over real files: note and go on
                print(f"  unread {p}: {e}", file=sys.stderr)
                continue
            if only_colour and classify_rgb(rgb) != "color":
                continue
            c, r = agreement(rgb, net)
            rows.append((p, c, r))
    return rows


def main(argv: list[str]) -> None:
    from pipeline.worker.engine import Colorizer

    net = Colorizer(None, device="cpu", size=SIZE)
    net.chroma_gain = 1.0
    for spec in argv[1:]:
        rows = measure([spec], net)
        cs = np.array([c for _, c, _ in rows]) if rows else np.zeros(0)
        qs = np.percentile(cs, [1, 5, 10, 25, 50, 75, 90]).round(3).tolist() if len(cs) else []
        print(f"{spec}: {len(rows)} called colour by the rules; cosine percentiles 1/5/10/25/50/75/90: {qs}")
        for p, c, r in sorted(rows, key=lambda t: t[1]):
            print(f"  {c:+.3f} resid {r:5.2f} {p}")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
