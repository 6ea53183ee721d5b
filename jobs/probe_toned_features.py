"""Probe (issue 23, item 4; measured and not kept): toned print or colour photo by a logistic
regression over a dozen statistics of the thumbnail's L*a*b*: how much chroma, how many hue
families (in the lights and in the darks apart), how far a*b* wander at one lightness (raw, and
with the grain filtered out), how much colour changes where lightness does not (a colour
photo's red coat against a green wall of the same gray; a toned print has no such edge), the
mount's chroma against the picture's, and where the hues lie.

Positives are real old prints from other collections than the test's (jobs/fetch_old_prints.sh
-> data/old-prints-train; each file's repository, commit and rights in jobs/old_prints_train.txt),
negatives the training split's colour photos. Only warm scans (mean hue 20-120 degrees, the
prints' hues) that the faint rule leaves undecided are fitted and decided by the model; the
rest keep the rules. The threshold lets 1 % of all training colour photos through as toned.
Leave-one-collection-out cross-validation picks the regularisation. Then, once, the test of
jobs/classifier_rates.py: the real prints of data/historical-scans and the colour photos.

    python -m jobs.probe_toned_features data/train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.classifier_rates import files
from pipeline.model.train import list_images
from pipeline.worker.imaging import FAINT_CHROMA, classify_rgb

FALSE_TONED = 0.01


NAMES = ["log p99 chroma", "log p50 chroma", "hue coherence", "coherence lights", "coherence darks",
         "log spread", "log spread denoised", "log isoluminant edges", "log flat-L chroma edges",
         "mount chroma - inside", "share hue 40-110", "mean hue cos", "mean hue sin"]


def coherence(a: np.ndarray, b: np.ndarray, sel: np.ndarray) -> float:
    """Mean resultant length of the selected pixels' hues, chroma-weighted: 1 is one hue."""
    c = np.hypot(a[sel], b[sel]).sum()
    return 1.0 if c < 1e-6 else float(np.hypot(a[sel].sum(), b[sel].sum()) / c)


def spread(L: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """How far a*b* wander at one lightness: the std within 10-unit L* bins, pixel-weighted."""
    bins = np.clip((L // 10).astype(int), 0, 9)
    num = den = 0.0
    for k in np.unique(bins):
        m = bins == k
        if m.sum() >= 4:
            num += max(float(a[m].std()), float(b[m].std())) * m.sum()
            den += m.sum()
    return num / max(den, 1.0)


def features(lab: np.ndarray) -> np.ndarray:
    """The statistics NAMES of an (h, w, 3) L*a*b* thumbnail."""
    from scipy.ndimage import median_filter, uniform_filter

    L, a, b = (np.asarray(lab[..., i], np.float64) for i in range(3))
    chroma = np.hypot(a, b)
    chromatic = chroma >= 4.0
    am, bm = median_filter(a, 3), median_filter(b, 3)  # grain out, edges kept
    gL = np.hypot(*np.gradient(uniform_filter(L, 3)))
    gab = np.hypot(np.hypot(*np.gradient(uniform_filter(am, 3))), np.hypot(*np.gradient(uniform_filter(bm, 3))))
    hue = np.degrees(np.arctan2(b, a))
    h, w = L.shape
    ring = np.ones((h, w), bool)
    ring[h // 8:h - h // 8, w // 8:w - w // 8] = False
    wsum = chroma[chromatic].sum() + 1e-6
    return np.array([
        np.log(np.percentile(chroma, 99)), np.log(np.percentile(chroma, 50) + 1),
        coherence(a, b, chromatic), coherence(a, b, chromatic & (L >= 50)), coherence(a, b, chromatic & (L < 50)),
        np.log(spread(L, a, b) + 0.5), np.log(spread(L, am, bm) + 0.5),
        np.log(np.percentile(gab / (gL + 1.0), 99) + 0.05),
        np.log(np.percentile(gab[gL <= np.percentile(gL, 50)], 95) + 0.05),
        float(chroma[ring].mean() - chroma[~ring].mean()) / 10,
        float(((hue >= 40) & (hue <= 110) & chromatic).mean() / max(chromatic.mean(), 1e-6)),
        float((a * chromatic).sum() / wsum), float((b * chromatic).sum() / wsum),
    ])


def warm(lab: np.ndarray) -> bool:
    """The chroma-weighted mean hue lies between red-orange and yellow-green (20-120 degrees):
    the hues of the prints the model was fitted on. Other casts (cyanotype, selenium purple,
    a cool split tone) are left to the rules."""
    a, b = lab[..., 1], lab[..., 2]
    sel = np.hypot(a, b) >= 4.0
    return bool(sel.any()) and 20.0 <= np.degrees(np.arctan2(b[sel].sum(), a[sel].sum())) <= 120.0


def undecided(path: str) -> np.ndarray | None:
    """The features of a warm scan the faint rule leaves undecided, else None."""
    from skimage.color import rgb2lab

    try:
        rgb = np.asarray(Image.open(path).convert("RGB"))
    except OSError:
        return None
    step = max(1, max(rgb.shape[:2]) // 128)  # the thumbnail classify_rgb judges
    lab = rgb2lab(rgb[::step, ::step].astype(np.float32) / 255.0)
    if np.percentile(np.hypot(lab[..., 1], lab[..., 2]), 99) < FAINT_CHROMA or not warm(lab):
        return None
    return features(lab)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """Newton's method on the class-balanced mean log-loss plus l2 |w|^2 / 2; last entry the bias."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(Xb.shape[1])
    sw = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    reg = np.full(Xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Xb @ w))
        g = Xb.T @ (sw * (p - y)) / len(y) + reg * w
        H = (Xb * (sw * p * (1 - p))[:, None]).T @ Xb / len(y) + np.diag(reg)
        w -= np.linalg.solve(H, g)
    return w


def fit(Xp: np.ndarray, Xc: np.ndarray, n_colour: int, l2: float) -> dict:
    X = np.vstack([Xp, Xc])
    mu, sd = X.mean(0), X.std(0) + 1e-9
    w = fit_logistic((X - mu) / sd, np.r_[np.ones(len(Xp)), np.zeros(len(Xc))], l2)
    s = np.sort((Xc - mu) / sd @ w[:-1] + w[-1])[::-1]
    k = int(FALSE_TONED * n_colour)  # this many colour photos may score above the threshold
    t = float(s[k]) if k < len(s) else float(s[-1]) - 1e-6
    return {"mean": mu.tolist(), "scale": sd.tolist(), "weights": w[:-1].tolist(), "bias": float(w[-1]),
            "threshold": t}


def score(m: dict, X: np.ndarray) -> np.ndarray:
    return (X - np.asarray(m["mean"])) / np.asarray(m["scale"]) @ np.asarray(m["weights"]) + m["bias"] - m["threshold"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.fit_toned")
    ap.add_argument("collection")
    ap.add_argument("--prints", default="data/old-prints-train")
    ap.add_argument("--colour", type=int, default=3000, help="training colour photos used (every 4th)")
    a = ap.parse_args(argv)
    prints = [p for p in list_images(a.prints) if "DDColor" not in p]  # may share pictures with the test
    got = [(p, undecided(p)) for p in prints]
    Xp = np.array([f for _, f in got if f is not None])
    src = np.array([Path(p).relative_to(a.prints).parts[0] for p, f in got if f is not None])
    colour = files(f"{a.collection}:train")[::4][:a.colour]
    Xc = np.array([f for f in map(undecided, colour) if f is not None])
    n = len(colour)
    print(f"{len(prints)} real prints, {len(Xp)} warm and undecided, from {len(set(src))} collections; "
          f"{n} training colour photos, {len(Xc)} warm and undecided")
    rules_p = sum(classify_rgb(np.asarray(Image.open(p).convert("RGB"))) != "color" for p, f in got if f is not None)
    rules_c = sum(classify_rgb(np.asarray(Image.open(p).convert("RGB"))) != "color" for p in colour)
    print(f"the rules alone: prints caught {rules_p} of {len(Xp)}; training colour photos called toned "
          f"{rules_c / n:.1%}")
    half_a, half_b = Xc[0::2], Xc[1::2]
    best = None
    for l2 in (1e-3, 1e-2, 1e-1, 1.0):
        caught = sum(int((score(fit(Xp[src != s], half_a, n // 2, l2), Xp[src == s]) > 0).sum())
                     for s in sorted(set(src)))
        false = (score(fit(Xp, half_a, n // 2, l2), half_b) > 0).sum() / (n - n // 2)
        print(f"l2 {l2:g}: leave-one-collection-out, prints caught {caught} of {len(Xp)}; "
              f"held-out colour photos called toned {false:.1%}")
        best = max(best or (caught, l2), (caught, l2))
    m = fit(Xp, Xc, n, best[1])
    m.update(features=NAMES, l2=best[1], fitted_on=f"{len(Xp)} real prints ({a.prints}), "
             f"{len(Xc)} of {n} training colour photos ({a.collection})")
    print("standardised weights: " + ", ".join(f"{k} {v:+.2f}" for k, v in zip(NAMES, m["weights"], strict=True)))
    test(m, a.collection)
    return 0


def test(m: dict, collection: str) -> None:
    """The rules, with the model deciding the warm undecided scans, on the test's real files."""
    for expect, specs in (("old", ["data/historical-scans"]),
                          ("colour", ["data/kphotoalbum", "data/historical", f"{collection}:eval",
                                      f"{collection}:val"])):
        wrong = {"old": 0, "colour": 0}
        paths = [p for s in specs for p in files(s)]
        for p in paths:
            f = undecided(p)
            kind = classify_rgb(np.asarray(Image.open(p).convert("RGB")))
            if f is not None:
                kind = "toned" if score(m, f[None])[0] > 0 else "color"
            wrong[expect] += (kind == "color") if expect == "old" else (kind != "color")
        what = "called colour" if expect == "old" else "called toned or gray"
        print(f"test: {len(paths)} {expect} files, {what} {wrong[expect]}")


if __name__ == "__main__":
    sys.exit(main())
