"""Evaluate a checkpoint on colour photos: remove colour, colorize, compare, beside two baselines.

SRC is 'wheels' (photos inside installed wheels), a folder, or a training collection built by
pipeline.model.traindata, whose eval split (never trained on) is scored per source. Every report also
measures flat gray fields: the net's edge artefacts and colour cast show there undisguised.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

from pipeline.errors import UsageError, plural
from pipeline.model.train import NOT_A_PICTURE, named, not_read, said_not_read
from pipeline.worker.imaging import colorfulness, luminance_gray

# Natural photos shipped inside the wheels of scikit-image, scikit-learn and matplotlib.
# (hubble_deep_field, ihc, retina are scientific images, not photographs of the world.)
WHEEL_PHOTOS = {
    "skimage": ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"],
    "sklearn": ["china.jpg", "flower.jpg"],
    "matplotlib": ["grace_hopper.jpg"],
}


def wheel_photos(dest: str | os.PathLike, log=lambda m: None) -> Path:
    """Copy the evaluation photos out of the installed wheels into dest; returns dest. A wheel
    not installed is said: its photos are not in the figures (the model card's are all 8)."""
    import importlib

    where = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets/images"),
             "matplotlib": ("matplotlib", "mpl-data/sample_data")}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg, names in WHEEL_PHOTOS.items():
        mod, sub = where[pkg]
        try:
            root = Path(importlib.import_module(mod).__file__).parent / sub
        except ImportError:  # scikit-learn and matplotlib are optional
            log(f"{pkg} is not installed: its {plural(len(names), 'photo')} left out, so this is not "
                "the whole set (pip install -e .[eval])")
            continue
        for n in names:
            if (root / n).is_file():
                shutil.copyfile(root / n, dest / f"{pkg}_{n}")
    return dest


def load_rgb(path: str | os.PathLike, max_side: int) -> np.ndarray:
    """A reference photo in sRGB, as a colour-managed viewer shows it: one tagged Adobe RGB read
    as sRGB numbers scored its true colour wrong (duller, and the model's nearer to it)."""
    from pipeline.worker import icc

    with Image.open(path) as im:
        profile = im.info.get("icc_profile")
        im = ImageOps.exif_transpose(im).convert("RGB")
    prof, _ = icc.read(profile, 3, [])  # None where it reads as sRGB (most photos): untouched
    if prof is not None:
        im = Image.fromarray(prof.to_srgb8(np.asarray(im)))
    s = max_side / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return np.asarray(im)


SHADOW_L = 30.0  # L* below this is a shadow: where a magenta or cold cast shows (issue 23)


@dataclass
class Scores:
    psnr: float
    ssim: float
    ab_mse: float
    colorfulness: float
    shadow_px: int = 0  # pixels of the original with L* < SHADOW_L
    shadow_da: float = 0.0  # mean a* there, ours minus the original's
    shadow_db: float = 0.0


def score(out: np.ndarray, ref: np.ndarray) -> Scores:
    from skimage.color import rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lab_o, lab_r = rgb2lab(out), rgb2lab(ref)
    ab_o = (lab_o[..., 1:] + 128) / 255
    ab_r = (lab_r[..., 1:] + 128) / 255
    dark = lab_r[..., 0] < SHADOW_L
    d = (lab_o[..., 1:] - lab_r[..., 1:])[dark]
    return Scores(
        psnr=float(peak_signal_noise_ratio(ref, out, data_range=255)),
        ssim=float(structural_similarity(ref, out, channel_axis=-1, data_range=255)),
        ab_mse=float(np.mean((ab_o - ab_r) ** 2)),
        colorfulness=colorfulness(out),
        shadow_px=int(dark.sum()),
        shadow_da=float(d[:, 0].mean()) if len(d) else 0.0,
        shadow_db=float(d[:, 1].mean()) if len(d) else 0.0,
    )


SHEET_PHOTOS = 24
FILM_WORDS = {"ortho": "orthochromatic: blind to red", "blue": "blue-sensitive"}
FLAT_LEVELS = (60, 128, 200)


def eval_photos(src: str, out: str, log=lambda m: None) -> list[tuple[str, str]]:
    """(path, source) of the photos to score."""
    from pipeline.model.train import list_images

    if src == "wheels":
        d = wheel_photos(Path(out) / "photos", log)
        return [(p, Path(p).name.split("_", 1)[0]) for p in list_images(d)]
    if (Path(src) / "manifest.csv").is_file():
        from pipeline.model.traindata import read_manifest

        return [(r["path"], r["source"]) for r in read_manifest(Path(src), "eval")]
    return [(p, Path(src).name) for p in list_images(src)]


def flat_fields(net, size: int, shape: tuple[int, int] = (384, 512), border: int = 16) -> list[dict]:
    """Colorize featureless gray fields: per level, the median chroma and the largest deviation
    of a 16-px border strip's mean a*b* from the image's median a*b*."""
    from skimage.color import rgb2lab

    from pipeline.worker.imaging import net_input

    rows = []
    for level in FLAT_LEVELS:
        gray = np.full(shape, level, np.uint8)
        rgb = net.recombine(gray, net.predict_ab(net_input(gray, size)[None])[0])
        ab = rgb2lab(rgb)[..., 1:]
        med = np.median(ab.reshape(-1, 2), axis=0)
        strips = [ab[:border], ab[-border:], ab[:, :border], ab[:, -border:]]
        dev = max(float(np.hypot(*(s.reshape(-1, 2).mean(axis=0) - med))) for s in strips)
        rows.append({"level": level, "median_chroma": float(np.hypot(*med)), "border_deviation": dev})
    return rows


def hint_edge_scenes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Issue 25's edge scenes (jobs/probe_hint_edges.py, tests): a coat drawn at a source's 512 px
    behind a sharp 34-L* edge and a blurred 22-L* one, and two halves split on the net's grid.
    name -> (gray uint8 at 512, the coat's mask at 512)."""
    from PIL import ImageFilter

    yy, xx = np.mgrid[:512, :512]
    coat = (abs(xx - 256) < 110) & (yy > 150) & (yy < 470)
    out = {}
    g = np.full((512, 512), 180, np.uint8)
    g[coat] = 90
    out["hard edge (34 L*)"] = (g, coat)
    g = np.full((512, 512), 127, np.uint8)
    g[coat] = 73
    g = np.asarray(Image.fromarray(g).filter(ImageFilter.GaussianBlur(2.0)))
    out["soft edge (22 L*, blurred)"] = (g, coat)
    g = np.full((512, 512), 190, np.uint8)
    half = xx >= 256
    g[half] = 60
    out["straight edge on the grid"] = (g, half)
    return out


def hint_leak(net, g: np.ndarray, coat: np.ndarray, colour: str = "#b02020") -> tuple[float, float]:
    """One red hint at the coat's middle: (the mean |a*b*| change beyond its edge against the
    net's own colour, the coat's mean chroma / the hint's)."""
    from scipy.ndimage import binary_erosion

    from pipeline.worker import hints

    a, b = hints.hex_to_ab(colour)
    ys, xs = np.nonzero(coat)
    cy, cx = int(ys.mean()), int(xs.mean())
    small = np.array(Image.fromarray(g).resize((256, 256), Image.BILINEAR))
    cells = hints.on_grid([hints.Hint(cx, cy, a, b)], 512, 512, 256)
    ab = net.hinted_ab(small, cells).numpy()
    base = net.predict_ab([small])[0].numpy()
    inside = np.asarray(Image.fromarray(coat.astype(np.uint8) * 255).resize((256, 256))) > 200
    outside = np.asarray(Image.fromarray((~coat).astype(np.uint8) * 255).resize((256, 256))) > 200
    # a ring of 3 cells at the edge is the edge's own: judged beyond it
    far = binary_erosion(outside, iterations=3)
    moved = float(np.hypot(*(ab - base)[:, far]).mean())
    took = float(np.hypot(ab[0][inside].mean(), ab[1][inside].mean()) / np.hypot(a, b))
    return moved, took


def hinted_outputs(net, gray: np.ndarray, ref: np.ndarray, counts: tuple[int, ...], seed: int,
                   size: int) -> dict[str, np.ndarray]:
    """`hints_N`: the output with N seeded simulated points (hints.simulate: the true a*b*
    averaged over 5 x 5 px) for each N of counts; N = 0 is the automatic colour."""
    from skimage.color import rgb2lab

    from pipeline.worker import hints
    from pipeline.worker.imaging import net_input

    lab, small = rgb2lab(ref), net_input(gray, size)
    out = {}
    for n in counts:
        pts = hints.simulate(lab, n, np.random.default_rng((25, seed, n)))
        cells = hints.on_grid(pts, gray.shape[1], gray.shape[0], size)
        out[f"hints_{n}"] = net.recombine(gray, net.hinted_ab(small, cells))
    return out


def scan_of(ref: np.ndarray, weights, damage: float, seed: int) -> np.ndarray:
    """The gray scan the net is given for an 8-bit colour photo: its lightness as a film with
    these weights saw it, with old-print damage on a share `damage` of the photos (seeded, so
    every checkpoint scored sees the same scratches)."""
    gray = luminance_gray(ref, weights=weights)
    if not damage:
        return gray
    from pipeline.model.damage import damage as draw

    g = torch.Generator().manual_seed(7001 + seed)
    x = torch.from_numpy(gray.astype(np.float32) / 255.0)[None, None]
    return np.rint(draw(x, damage, g)[0, 0].numpy() * 255.0).astype(np.uint8)


def evaluate(checkpoint: str | None, src: str, out: str, size: int = 256, max_side: int = 512,
             mean_ab: tuple[float, float] | None = None, device: str = "cpu", log=print,
             pad: int | None = None, hints: tuple[int, ...] = (), hint_checkpoint: str | None = None,
             hint_head: str | None = None,
             film: str = "pan", damage: float = 0.0) -> dict:
    """Writes OUT/eval.md, OUT/eval.parquet, OUT/contact_sheet.png; returns the mean scores
    (overall, per method) with the per-source means under "sources" and the flat-field check
    under "flat". hints: also score the colour with that many simulated curator's hints
    (methods hints_N). film: the input's lightness as that film (color.FILMS) saw the scene;
    the scores still compare with the photo itself. damage: each kind of old-print damage
    (model.damage) drawn on that share of the scans, seeded per photo."""
    from tqdm import tqdm

    from pipeline.worker.color import FILMS
    from pipeline.worker.engine import Colorizer
    from pipeline.worker.imaging import net_input

    photos = eval_photos(src, out, log)
    if not photos:
        raise FileNotFoundError(f"no photos to evaluate in {src}")
    net = Colorizer(checkpoint, device=device, size=size)
    if pad is not None:  # e.g. 0: as the engine ran before reflect padding (output version 2)
        net.pad = pad
    if hint_checkpoint is not None:  # "": none
        net.hint_checkpoint = hint_checkpoint
    if hint_head is not None:  # "": none, propagation alone
        net.hint_head_path = hint_head
    if mean_ab is None:
        mean_ab = tuple(net.ck.meta.get("train_mean_ab") or (0.0, 0.0))
    on_sheet = _sheet_choice(photos)
    rows, sheet, grays, unread = [], [], [], []
    for i, (p, source) in enumerate(tqdm(photos, desc="evaluate", unit="photo", leave=False)):
        if (ref := _reference(p, max_side, grays, unread)) is None:
            continue
        gray = scan_of(ref, FILMS[film], damage, i)
        ab_net = net.predict_ab(net_input(gray, size)[None])[0]
        outs = {
            "model": net.recombine(gray, ab_net),
            "gray": net.recombine(gray, torch.zeros_like(ab_net)),
            "mean_ab": net.recombine(gray, torch.tensor(mean_ab).view(2, 1, 1).expand_as(ab_net).float()),
            **hinted_outputs(net, gray, ref, hints, i, size),
        }
        for method, img in outs.items():
            s = score(img, ref)
            rows.append({"image": Path(p).name, "source": source, "method": method,
                         "psnr": s.psnr, "ssim": s.ssim, "ab_mse": s.ab_mse,
                         "colorfulness": s.colorfulness, "original_colorfulness": colorfulness(ref),
                         "shadow_px": s.shadow_px, "shadow_da": s.shadow_da,
                         "shadow_db": s.shadow_db})
        if i in on_sheet:
            sheet.append((ref, outs["gray"], outs["model"]))
    _said_left_out(rows, grays, unread, src, log)
    table = pa.Table.from_pylist(rows)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, outdir / "eval.parquet")
    methods = (*METHODS, *(f"hints_{n}" for n in hints))
    summary = {**_summarise(rows, methods), "flat": flat_fields(net, size),
               "sources": {src_: _summarise([r for r in rows if r["source"] == src_], methods)
                           for src_ in sorted({r["source"] for r in rows})}}
    seen = "" if film == "pan" else f" Input lightness as {film} film saw each photo ({FILM_WORDS[film]})."
    if damage:
        seen += f" Old-print damage (scratches, specks, foxing, vignetting, uneven exposure) on a share {damage:g} of the scans."
    (outdir / "eval.md").write_text(_markdown(rows, summary, net.sha256, size, methods, net, seen))
    _contact_sheet(sheet).save(outdir / "contact_sheet.png")
    log((outdir / "eval.md").read_text())
    return summary


def _reference(p: str, max_side: int, grays: list[str], unread: list[str]) -> np.ndarray | None:
    """A photo to score against, or None where it is gray (no colour to compare with: its gray
    baseline is exact) or does not read (one file, not the evaluation): noted by name."""
    try:
        ref = load_rgb(p, max_side)
    except NOT_A_PICTURE as e:
        unread.append(not_read(p, e))
        return None
    if (ref[..., :1] == ref).all():
        grays.append(Path(p).name)
        return None
    return ref


def _said_left_out(rows: list[dict], grays: list[str], unread: list[str], src: str, log) -> None:
    """Gray reference photos have no true colour to score against, and a file that does not
    read is one file (a trial's ended the whole evaluation): each left out, and named."""
    said_not_read(unread, log)
    if not rows:
        raise UsageError(f"every photo in {src} is gray" + (" or unreadable" if unread else "")
                         + ": evaluate scores the colour against each photo's own true colour (it "
                         "makes the gray input itself); give it colour photos")
    if grays:
        log(f"{plural(len(grays), 'gray photo')} left out ({named(grays)}): no true colour to score against")


def _sheet_choice(photos: list[tuple[str, str]]) -> set[int]:
    """Indices of the contact sheet's photos: round-robin over sources, so every source shows."""
    by_source: dict[str, list[int]] = {}
    for i, (_, s) in enumerate(photos):
        by_source.setdefault(s, []).append(i)
    queues = [list(v) for _, v in sorted(by_source.items())]
    chosen: set[int] = set()
    while len(chosen) < min(SHEET_PHOTOS, len(photos)):
        for q in queues:
            if q and len(chosen) < SHEET_PHOTOS:
                chosen.add(q.pop(0))
    return chosen


METHODS = ("model", "gray", "mean_ab")


def _summarise(rows: list[dict], methods: tuple[str, ...] = METHODS) -> dict:
    out = {}
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        out[m] = {k: float(np.mean([r[k] for r in sel]))
                  for k in ("psnr", "ssim", "ab_mse", "colorfulness", "original_colorfulness")}
        px = sum(r["shadow_px"] for r in sel)  # over every shadow pixel of the set
        out[m]["shadow_px"] = px
        for k in ("shadow_da", "shadow_db"):
            out[m][k] = float(sum(r[k] * r["shadow_px"] for r in sel) / px) if px else 0.0
    out["n"] = len(rows) // len(methods)
    return out


def _hint_lines(summary: dict, methods: tuple[str, ...], net) -> list[str]:
    hinted = [m for m in methods if m.startswith("hints_")]
    if not hinted:
        return []
    how = net.hint_model(words=True)
    g = summary["gray"]
    return ["", f"Simulated curator's hints ({how}): PSNR over gray for "
            + ", ".join(f"{plural(int(m[6:]), 'point')} {summary[m]['psnr'] - g['psnr']:+.2f} dB" for m in hinted)
            + "; ab-MSE x gray's " + ", ".join(f"{summary[m]['ab_mse'] / g['ab_mse']:.3f}" for m in hinted)
            + "."]


def _markdown(rows, summary, sha, size, methods: tuple[str, ...] = METHODS, net=None, seen: str = "") -> str:
    m, g = summary["model"], summary["gray"]
    lines = [f"Checkpoint `{sha[:12]}`, net at {size}x{size}, {summary['n']} photos.{seen}", "",
             f"Model vs gray: ab-MSE {m['ab_mse'] / g['ab_mse']:.3f} x gray's, PSNR "
             f"{m['psnr'] - g['psnr']:+.2f} dB, colourfulness "
             f"{100 * m['colorfulness'] / max(m['original_colorfulness'], 1e-9):.0f} % of the originals'.",
             "", f"Shadows (L* < {SHADOW_L:.0f}, {m['shadow_px']:,} px): mean a* {m['shadow_da']:+.1f}, "
             f"b* {m['shadow_db']:+.1f} from the originals' (gray: {g['shadow_da']:+.1f}, "
             f"{g['shadow_db']:+.1f}).", *_hint_lines(summary, methods, net),
             "", "| source | photos | method | PSNR dB | SSIM | ab-MSE | colourfulness (original) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in [*summary["sources"].items(), ("**all**", summary)]:
        for meth in methods:
            x = s[meth]
            lines.append(f"| {name} | {s['n']} | {meth} | {x['psnr']:.2f} | {x['ssim']:.4f} | "
                         f"{x['ab_mse']:.5f} | {x['colorfulness']:.1f} ({x['original_colorfulness']:.1f}) |")
    lines += ["", "Flat gray fields (512x384): median chroma, and the largest deviation of a 16-px "
              "border strip's mean a*b* from the median.", "",
              "| gray level | median chroma | border deviation |", "|---|---|---|"]
    lines += [f"| {f['level']} | {f['median_chroma']:.1f} | {f['border_deviation']:.1f} |"
              for f in summary["flat"]]
    lines += ["", "Per photo:", "", "| image | source | method | PSNR dB | SSIM | ab-MSE | colourfulness |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['source']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
              f"{r['ab_mse']:.5f} | {r['colorfulness']:.1f} ({r['original_colorfulness']:.1f}) |"
              for r in rows]
    return "\n".join(lines) + "\n"


def _contact_sheet(triples, h: int = 160) -> Image.Image:
    """One row per photo: the original, the gray input, our output."""
    tiles = []
    for trio in triples:
        ims = [Image.fromarray(x) for x in trio]
        ims = [im.resize((max(1, round(im.width * h / im.height)), h)) for im in ims]
        tiles.append(ims)
    width = max(sum(im.width for im in row) + 4 * len(row) for row in tiles)
    sheet = Image.new("RGB", (width, len(tiles) * (h + 4)), "white")
    for i, row in enumerate(tiles):
        x = 0
        for im in row:
            sheet.paste(im, (x, i * (h + 4)))
            x += im.width + 4
    return sheet


GAINS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)


def gain_photos(src: str, log=lambda m: None) -> list[str]:
    """The photos a gain is chosen on: a make train-data collection's validation split, or
    colour photos named as train's are (the val.txt that `colorize train` writes of a folder:
    held out, never trained on)."""
    from pipeline.model.train import collection_split, colour_photos, list_images

    split = collection_split(src)
    photos = split[1] if split is not None else colour_photos(list_images(src), log)
    if not photos:
        raise ValueError(f"no colour photo to choose a gain on in {src}")
    return photos


def tune_gain(checkpoint: str, photos: list[str], out: str, size: int = 256, tolerance: float = 0.02,
              device: str = "cpu", log=print) -> dict:
    """Choose the checkpoint's chroma gain on photos held out of its training (gain_photos;
    never the evaluation split): the largest gain in GAINS whose ab-MSE is within `tolerance`
    of the best gain's. A regression net's a/b are conditional means, grayer than photos; a gain buys back
    colour where it costs (almost) no accuracy. Writes the checkpoint with meta["chroma_gain"]
    (and the curve) to `out`; returns the curve."""
    from skimage.color import rgb2lab

    from pipeline.model.net import load_checkpoint, save_checkpoint
    from pipeline.worker.engine import Colorizer
    from pipeline.worker.imaging import net_input

    ck = load_checkpoint(checkpoint)
    net = Colorizer(ck, device=device, size=size)
    net.chroma_gain = 1.0
    acc = {g: [0.0, 0.0, 0.0] for g in GAINS}  # ab-MSE sum, colourfulness sum, original's sum
    for p in photos:
        ref = load_rgb(p, 512)
        gray = luminance_gray(ref)
        ab = net.predict_ab(net_input(gray, size)[None])[0]
        ab_ref = (rgb2lab(ref)[..., 1:] + 128) / 255
        c_ref = colorfulness(ref)
        for g in GAINS:
            rgb = net.recombine(gray, ab * g)
            acc[g][0] += float(np.mean(((rgb2lab(rgb)[..., 1:] + 128) / 255 - ab_ref) ** 2))
            acc[g][1] += colorfulness(rgb)
            acc[g][2] += c_ref
    n = len(photos)
    curve = {g: {"ab_mse": a / n, "colorfulness_share": c / o} for g, (a, c, o) in acc.items()}
    best = min(v["ab_mse"] for v in curve.values())
    gain = max(g for g, v in curve.items() if v["ab_mse"] <= best * (1 + tolerance))
    for g, v in curve.items():
        log(f"gain {g:.1f}: val ab-MSE {v['ab_mse']:.5f}, colourfulness "
            f"{100 * v['colorfulness_share']:.0f} % of the originals'" + (" <- chosen" if g == gain else ""))
    meta = dict(ck.meta, chroma_gain=gain, chroma_gain_curve={str(g): v for g, v in curve.items()},
                chroma_gain_rule=f"largest gain within {tolerance:.0%} of the best val ab-MSE "
                                 f"({n} validation photos)")
    save_checkpoint(out, ck.model, meta)
    return {"gain": gain, "curve": curve, "photos": n}
