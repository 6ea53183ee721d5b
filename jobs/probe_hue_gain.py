"""Does a chroma gain per predicted hue move the ab-MSE / colourfulness curve? (issue 23)

A regression net's a*b* are conditional means, grayer than the truth; some hues (skies, foliage,
robes) may be shrunk more than others. On the validation split at the net's 256 x 256 grid:
fit, on half the photos, the least-squares gain of each predicted-hue sector (the projection of
the true a*b* onto the predicted), then on the other half compare the curve of a global gain
(times 0.8 .. 2.0) with that of the per-hue gains (times the same factors): ab-MSE as a ratio
to gray's, and the chroma kept (mean predicted chroma over the truth's, a colourfulness proxy).

usage: python -m jobs.probe_hue_gain CHECKPOINT COLLECTION [--sectors 12] [--limit N]
"""

from __future__ import annotations

import argparse

import numpy as np

from jobs.probe_confidence import predictions  # the raw net on the split, with the truth


def sector(P: np.ndarray, n: int) -> np.ndarray:
    return (((np.arctan2(P[1], P[0]) + np.pi) / (2 * np.pi) * n).astype(int)) % n


def fit(items, n: int) -> np.ndarray:
    num, den = np.zeros(n), np.zeros(n)
    for P, T in items:
        s = sector(P, n)
        np.add.at(num, s.ravel(), (P * T).sum(0).ravel())
        np.add.at(den, s.ravel(), (P * P).sum(0).ravel())
    return np.where(den > 0, num / np.maximum(den, 1e-9), 1.0)


def curve(items, gains_of, factors) -> list[tuple[float, float, float]]:
    out = []
    for f in factors:
        err = gray = c_out = c_true = 0.0
        for P, T in items:
            G = f * gains_of(P)
            err += float(((G * P - T) ** 2).mean())
            gray += float((T ** 2).mean())
            c_out += float(np.hypot(*(G * P)).mean())
            c_true += float(np.hypot(*T).mean())
        out.append((f, err / gray, c_out / c_true))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("collection")
    ap.add_argument("--sectors", type=int, default=12)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    items = [(P, T) for P, _, T, _ in predictions(a.checkpoint, a.collection, "val", a.limit)]
    fitset, test = items[::2], items[1::2]
    g = fit(fitset, a.sectors)
    print("per-sector gains (hue from -180 deg):", " ".join(f"{x:.2f}" for x in g))
    factors = (0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)
    glob = curve(test, lambda P: 1.0, factors)
    hue = curve(test, lambda P: g[sector(P, a.sectors)], factors)
    print("factor | global: ab-MSE/gray, chroma kept | per-hue: ab-MSE/gray, chroma kept")
    for (f, e1, c1), (_, e2, c2) in zip(glob, hue, strict=True):
        print(f"{f:.1f} | {e1:.3f} {100 * c1:.0f} % | {e2:.3f} {100 * c2:.0f} %")


if __name__ == "__main__":
    main()
