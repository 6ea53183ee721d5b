"""Probe (issue 23, item 4; measured and not kept): can a small CNN, trained on colour photos
and toned prints synthesised from them, tell the real old prints of data/historical-scans from
real colour photos better than the hand rules of pipeline.worker.imaging.classify_rgb?

Colour examples are the training split's photos as they are, some paled, some in a mount.
Toned examples are the same photos made into old prints: lightness through panchromatic,
orthochromatic or blue-sensitive film weights and a faded tone curve; a toning hue for the
lights and often another for the shadows, chroma varying with lightness; paper tint; a
low-frequency field, stains, foxing and scratches; a card mount; chroma grain, misregistered
chroma and JPEG. Hand-coloured prints (a toned print with painted regions) are colour. The
real files it is scored on are never trained on; only prints the faint rule leaves undecided
(99th-percentile chroma >= 10) are scored, as the net would only be asked about those.

    python -m jobs.probe_toned_net data/train --photos 8000 --epochs 8
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIDE = 96  # the net's input: the thumbnail's Lab, squeezed to SIDE x SIDE


LONG_SIDE = 256  # photos are made into prints at this size, then thumbnailed as decode does



def thumb_lab(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) L*a*b* of an 8-bit RGB image subsampled as classify_rgb does (~128 px)."""
    from skimage.color import rgb2lab

    step = max(1, max(rgb.shape[:2]) // 128)
    return rgb2lab(rgb[::step, ::step, :3].astype(np.float32) / 255.0).astype(np.float32)


def net_input(lab: np.ndarray) -> np.ndarray:
    """(3, SIDE, SIDE) float32: L*, a*, b* scaled to about unit range, resampled by area."""
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(lab[..., c])).resize(
        (SIDE, SIDE), Image.BOX), np.float32) for c in range(3)]
    x = np.stack(planes)
    x[0] = x[0] / 50.0 - 1.0
    x[1:] /= 30.0
    return x

def _smooth_field(rng, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: cells x cells noise, upsampled bicubically."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC), np.float32)


def _lightness(rgb: np.ndarray, rng) -> np.ndarray:
    """L* as a film of some spectral sensitivity saw the scene, through a faded tone curve."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    base = [(0.2126, 0.7152, 0.0722), (0.05, 0.45, 0.5), (0.0, 0.15, 0.85)][rng.choice(3, p=[.5, .3, .2])]
    w = np.asarray(base) + rng.dirichlet((1, 1, 1)) * 0.15
    Y = np.clip(lin @ (w / w.sum()), 0, 1)
    t = (116 * np.cbrt(Y) - 16).clip(0, 100) / 100
    t = t ** rng.uniform(0.7, 1.4)
    lo, hi = rng.uniform(0, 30), rng.uniform(70, 100)
    return (lo + (hi - lo) * t).astype(np.float32)


def _toning(L: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """a*, b* of a toned print: a hue and chroma for the lights, often another for the
    shadows (split toning, selenium's purple, a cool or neutral black), and the paper's tint."""
    family = rng.choice(5, p=[.6, .15, .1, .1, .05])
    hue_l = [rng.uniform(55, 100), rng.uniform(25, 60), rng.uniform(-40, 25), rng.uniform(200, 290),
             rng.uniform(95, 135)][family]
    r = rng.random()
    hue_d = (rng.uniform(200, 300) if r < 0.2 else rng.uniform(-70, 10) if r < 0.35
             else hue_l + rng.uniform(-25, 25))
    s = L / 100.0
    ramp = np.clip((s - rng.uniform(0.15, 0.6)) * rng.uniform(2, 10) + 0.5, 0, 1)
    c_l = math.exp(rng.uniform(math.log(3), math.log(32)))
    c_d = c_l * rng.uniform(0, 1.3)
    bump = np.sin(np.pi * s).clip(0) ** rng.uniform(0.3, 2)
    c = (c_d + (c_l - c_d) * ramp) * bump
    hue = np.deg2rad(hue_d + (hue_l - hue_d) * ramp)
    paper_c, paper_h = rng.uniform(0, 15), np.deg2rad(rng.uniform(65, 100))
    a = c * np.cos(hue) + paper_c * s**3 * math.cos(paper_h)
    b = c * np.sin(hue) + paper_c * s**3 * math.sin(paper_h)
    return a.astype(np.float32), b.astype(np.float32)


def _blobs(rng, h: int, w: int, n: int, r_lo: float, r_hi: float) -> np.ndarray:
    """Sum of n soft elliptical blobs, each in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(r_lo, r_hi, 2) * max(h, w)
        out += np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) ** rng.uniform(1, 3))
    return np.clip(out, 0, 1)


def _damage(L, a, b, rng) -> None:
    """Uneven toning, stains, foxing and scratches, in place."""
    h, w = L.shape
    amp = rng.uniform(0, 6)
    a += amp * _smooth_field(rng, h, w, rng.integers(2, 6))
    b += amp * _smooth_field(rng, h, w, rng.integers(2, 6))
    L += rng.uniform(0, 12) * _smooth_field(rng, h, w, 3)
    for n, (r_lo, r_hi), c_hi in ((rng.poisson(0.8), (0.05, 0.3), 25), (rng.poisson(2), (0.004, 0.015), 30)):
        if n:
            m = _blobs(rng, h, w, n, r_lo, r_hi)
            hue, c = np.deg2rad(rng.uniform(45, 95)), rng.uniform(3, c_hi)
            a += m * c * math.cos(hue)
            b += m * c * math.sin(hue)
            L -= m * rng.uniform(0, 15)
    for _ in range(rng.poisson(1.5) if rng.random() < 0.4 else 0):
        y0, x0, y1, x1 = rng.uniform(0, 1, 4) * [h, w, h, w]
        t = np.linspace(0, 1, 2 * max(h, w))
        ys, xs = (y0 + (y1 - y0) * t).astype(int).clip(0, h - 1), (x0 + (x1 - x0) * t).astype(int).clip(0, w - 1)
        L[ys, xs] += rng.uniform(-40, 40)


def _mount(L, a, b, rng) -> None:
    """A card mount or paper margin of its own colour around the picture, in place."""
    h, w = L.shape
    top, bottom, left, right = (rng.uniform(0, 0.18, 4) * [h, h, w, w]).astype(int)
    keep = np.zeros((h, w), bool)
    keep[top:h - bottom or h, left:w - right or w] = True
    ml, mc, mh = rng.uniform(35, 97), rng.uniform(0, 22), np.deg2rad(rng.uniform(40, 105))
    tex = _smooth_field(rng, h, w, 16) * rng.uniform(0, 3)
    L[~keep] = (ml + 2 * tex)[~keep]
    a[~keep] = (mc * math.cos(mh) + 0.3 * tex)[~keep]
    b[~keep] = (mc * math.sin(mh) + 0.3 * tex)[~keep]


def _scan(L, a, b, rng) -> np.ndarray:
    """8-bit sRGB as a scanner and an encoder leave it: chroma noise, misregistration, JPEG."""
    from skimage.color import lab2rgb

    h, w = L.shape
    sigma, coarse = rng.uniform(0, 6) ** 1.5 / 2.5, rng.choice([1, 2, 4])
    for ch in (a, b):  # sensor and film grain in the chroma, often coarse as JPEG leaves it
        n = rng.standard_normal((-(-h // coarse), -(-w // coarse))).astype(np.float32)
        ch += sigma * np.kron(n, np.ones((coarse, coarse), np.float32))[:h, :w]
    a = np.roll(a, rng.integers(-1, 2), axis=int(rng.integers(2)))
    b = np.roll(b, rng.integers(-1, 2), axis=int(rng.integers(2)))
    rgb = lab2rgb(np.dstack([np.clip(L, 0, 100), a, b]).astype(np.float64))
    return _jpeg((rgb * 255).round().astype(np.uint8), rng)


def _jpeg(rgb: np.ndarray, rng) -> np.ndarray:
    if rng.random() > 0.7:
        return rgb
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(rng.integers(40, 96)))
    return np.asarray(Image.open(buf).convert("RGB"))


def toned_print(rgb: np.ndarray, rng) -> np.ndarray:
    """A colour photo (8-bit) made into a scanned toned print (8-bit)."""
    L = _lightness(rgb.astype(np.float32) / 255.0, rng)
    a, b = _toning(L, rng)
    _damage(L, a, b, rng)
    if rng.random() < 0.4:
        _mount(L, a, b, rng)
    return _scan(L, a, b, rng)


def hand_coloured(rgb: np.ndarray, rng) -> np.ndarray:
    """A toned print with some regions painted: colour, as the archive means it."""
    from skimage.color import rgb2lab

    lab = rgb2lab(toned_print(rgb, rng))
    h, w = lab.shape[:2]
    for _ in range(rng.integers(1, 5)):
        m = np.clip((_smooth_field(rng, h, w, rng.integers(3, 8)) - rng.uniform(0.2, 1.0)) * 3, 0, 1)
        hue, c = rng.uniform(0, 2 * np.pi), rng.uniform(12, 45)
        lab[..., 1] += m * (c * math.cos(hue) - lab[..., 1])
        lab[..., 2] += m * (c * math.sin(hue) - lab[..., 2])
    return _scan(lab[..., 0], lab[..., 1], lab[..., 2], rng)


def colour_photo(rgb: np.ndarray, rng) -> np.ndarray:
    """A colour photo as archives hold them: sometimes paled, sometimes in a light margin."""
    from skimage.color import lab2rgb, rgb2lab

    if rng.random() < 0.4:
        lab = rgb2lab(rgb)
        lab[..., 1:] *= rng.uniform(0.35, 1.0)
        if rng.random() < 0.4:
            L, a, b = (np.ascontiguousarray(lab[..., i], dtype=np.float32) for i in range(3))
            _mount(L, a, b, rng)
            lab = np.dstack([L, a, b])
        rgb = (lab2rgb(lab) * 255).round().astype(np.uint8)
    return _jpeg(rgb, rng)


def _example(job: tuple[str, int, int]) -> tuple[np.ndarray, int] | None:
    """(net input as float16, label 1 = toned) for one photo and kind, or None if unusable."""
    from pipeline.model.train import load_prescaled

    path, kind, seed = job
    rng = np.random.default_rng(seed)
    try:
        rgb = np.asarray(load_prescaled(path, LONG_SIDE))
    except (OSError, ValueError):
        return None
    made = (colour_photo, toned_print, hand_coloured)[kind](rgb, rng)
    lab = thumb_lab(made)
    if np.percentile(np.hypot(lab[..., 1], lab[..., 2]), 99) < 8:
        return None  # the faint rule decides these before the net is asked
    return net_input(lab).astype(np.float16), int(kind == 1)


def make_set(paths: list[str], seed: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One toned print and one colour example per photo, a hand-coloured one for every 6th."""
    jobs = []
    for i, p in enumerate(paths):
        jobs += [(p, 1, seed * 10**7 + 3 * i), (p, 0, seed * 10**7 + 3 * i + 1)]
        if i % 6 == 0:
            jobs.append((p, 2, seed * 10**7 + 3 * i + 2))
    with Pool(workers) as pool:
        got = [r for r in pool.imap(_example, jobs, chunksize=16) if r is not None]
    return np.stack([g[0] for g in got]), np.array([g[1] for g in got], np.float32)


class ToneNet(torch.nn.Module):
    """Four strided 3 x 3 convolutions (batch-normed while training), mean and max pooled."""

    def __init__(self, width=(16, 32, 64, 64)):
        super().__init__()
        layers, c = [], 3
        for o in width:
            layers += [torch.nn.Conv2d(c, o, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(o), torch.nn.ReLU()]
            c = o
        self.body = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(2 * c, 1)

    def forward(self, x):
        f = self.body(x)
        return self.fc(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)).squeeze(1)


def fit(X: np.ndarray, y: np.ndarray, epochs: int, log=print, seed: int = 0) -> ToneNet:
    torch.manual_seed(seed)
    net = ToneNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(X) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for ep in range(epochs):
        net.train()
        order, total = torch.randperm(len(X)), 0.0
        for k in range(0, len(X), 128):
            i = order[k:k + 128]
            x = Xt[i].float()
            flip = torch.rand(len(i)) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(i)
        log(f"epoch {ep + 1}: loss {total / len(X):.4f}")
    return net.eval()


def real_logits(net: ToneNet, specs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The net's logits for real files the faint rule leaves undecided, and whether the
    rules (classify_rgb) call each toned."""
    from jobs.classifier_rates import files
    from pipeline.worker.imaging import classify_rgb

    xs, rules = [], []
    for spec in specs:
        for p in files(spec):
            rgb = np.asarray(Image.open(p).convert("RGB"))
            lab = thumb_lab(rgb)
            if np.percentile(np.hypot(lab[..., 1], lab[..., 2]), 99) >= 10:
                xs.append(net_input(lab))
                rules.append(classify_rgb(rgb) == "toned")
    with torch.no_grad():
        return net(torch.from_numpy(np.stack(xs))).numpy(), np.array(rules)


def main(argv: list[str] | None = None) -> int:
    from pipeline.model.traindata import read_manifest

    ap = argparse.ArgumentParser(prog="python -m jobs.probe_toned_net")
    ap.add_argument("collection", type=Path)
    ap.add_argument("--photos", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args(argv)
    paths = [r["path"] for r in read_manifest(a.collection, "train")][: a.photos + a.photos // 5]
    Xt, yt = make_set(paths[:a.photos], seed=1)
    Xh, yh = make_set(paths[a.photos:], seed=2)
    print(f"{len(Xt)} training examples ({int(yt.sum())} toned), {len(Xh)} held out", flush=True)
    net = fit(Xt, yt, a.epochs)
    with torch.no_grad():
        z = net(torch.from_numpy(Xh).float()).numpy()
    old, old_rules = real_logits(net, ["data/historical-scans"])
    colour, colour_rules = real_logits(net, ["data/kphotoalbum", "data/historical", f"{a.collection}:eval",
                               f"{a.collection}:val"])
    print(f"real: {len(old)} old prints, {len(colour)} colour photos past the faint rule")
    for q in (0.99, 0.995, 0.999):
        t = float(np.quantile(z[yh == 0], q))
        print(f"threshold {t:+.2f} (held-out synthetic colour {1 - q:.1%} toned): synthetic toned "
              f"caught {(z[yh == 1] > t).mean():.1%}; real old prints called colour "
              f"{int((old <= t).sum())}, real colour photos called toned {int((colour > t).sum())}")
    t = float(np.sort(colour)[-int(colour_rules.sum()) - 1])  # as many colour photos called toned as the rules
    print(f"at the rules' {int(colour_rules.sum())} colour photos called toned: real old prints called colour "
          f"{int((old <= t).sum())} (the rules: {int((~old_rules).sum())})")
    t1 = float(np.quantile(z[yh == 0], 0.99))
    for d in (0.0, -2.0, -4.0):
        t = t1 + d
        print(f"toned if the rules or the net (logit > {t:+.2f}) say so: real old prints called colour "
              f"{int((~old_rules & (old <= t)).sum())}, real colour photos called toned "
              f"{int((colour_rules | (colour > t)).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
