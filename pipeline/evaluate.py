"""Evaluate a checkpoint on colour photos: remove colour, colorize, compare, beside two baselines."""

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

from .imaging import colorfulness, luminance_gray

# Natural photos shipped inside the wheels of scikit-image, scikit-learn and matplotlib.
# (hubble_deep_field, ihc, retina are scientific images, not photographs of the world.)
WHEEL_PHOTOS = {
    "skimage": ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"],
    "sklearn": ["china.jpg", "flower.jpg"],
    "matplotlib": ["grace_hopper.jpg"],
}


def wheel_photos(dest: str | os.PathLike) -> Path:
    """Copy the evaluation photos out of the installed wheels into dest; returns dest."""
    import importlib

    where = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets/images"),
             "matplotlib": ("matplotlib", "mpl-data/sample_data")}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg, names in WHEEL_PHOTOS.items():
        mod, sub = where[pkg]
        try:
            root = Path(importlib.import_module(mod).__file__).parent / sub
        except ImportError:
            continue  # scikit-learn and matplotlib are optional (`pip install -e .[eval]`)
        for n in names:
            if (root / n).is_file():
                shutil.copyfile(root / n, dest / f"{pkg}_{n}")
    return dest


def load_rgb(path: str | os.PathLike, max_side: int) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    s = max_side / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return np.asarray(im)


@dataclass
class Scores:
    psnr: float
    ssim: float
    ab_mse: float
    colorfulness: float


def score(out: np.ndarray, ref: np.ndarray) -> Scores:
    from skimage.color import rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ab_o = (rgb2lab(out)[..., 1:] + 128) / 255
    ab_r = (rgb2lab(ref)[..., 1:] + 128) / 255
    return Scores(
        psnr=float(peak_signal_noise_ratio(ref, out, data_range=255)),
        ssim=float(structural_similarity(ref, out, channel_axis=-1, data_range=255)),
        ab_mse=float(np.mean((ab_o - ab_r) ** 2)),
        colorfulness=colorfulness(out),
    )


def evaluate(checkpoint: str | None, src: str, out: str, size: int = 256, max_side: int = 512,
             mean_ab: tuple[float, float] | None = None, device: str = "cpu", log=print) -> dict:
    """Writes OUT/eval.md, OUT/eval.parquet, OUT/contact_sheet.png; returns the mean scores."""
    from .engine import Colorizer, net_input
    from .train import list_images

    src_dir = wheel_photos(Path(out) / "photos") if src == "wheels" else Path(src)
    paths = list_images(src_dir)
    if not paths:
        raise FileNotFoundError(f"no photos to evaluate in {src}")
    net = Colorizer(checkpoint, device=device, size=size)
    if mean_ab is None:
        mean_ab = tuple(net.ck.meta.get("train_mean_ab") or (0.0, 0.0))
    rows, sheet = [], []
    for p in paths:
        ref = load_rgb(p, max_side)
        gray = luminance_gray(ref)
        ab_net = net.predict_ab(net_input(gray, size)[None])[0]
        outs = {
            "model": net.recombine(gray, ab_net),
            "gray": net.recombine(gray, torch.zeros_like(ab_net)),
            "mean_ab": net.recombine(gray, torch.tensor(mean_ab).view(2, 1, 1).expand_as(ab_net).float()),
        }
        for method, img in outs.items():
            s = score(img, ref)
            rows.append({"image": Path(p).name, "method": method, "psnr": s.psnr, "ssim": s.ssim,
                         "ab_mse": s.ab_mse, "colorfulness": s.colorfulness,
                         "original_colorfulness": colorfulness(ref)})
        sheet.append((outs["gray"], outs["model"], ref))
    table = pa.Table.from_pylist(rows)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, outdir / "eval.parquet")
    summary = _summarise(rows)
    (outdir / "eval.md").write_text(_markdown(rows, summary, net.sha256, size))
    _contact_sheet(sheet).save(outdir / "contact_sheet.png")
    log((outdir / "eval.md").read_text())
    return summary


def _summarise(rows: list[dict]) -> dict:
    out = {}
    for m in ("model", "gray", "mean_ab"):
        sel = [r for r in rows if r["method"] == m]
        out[m] = {k: float(np.mean([r[k] for r in sel]))
                  for k in ("psnr", "ssim", "ab_mse", "colorfulness", "original_colorfulness")}
    return out


def _markdown(rows, summary, sha, size) -> str:
    lines = [f"Checkpoint `{sha[:12]}`, net at {size}x{size}, {len(rows) // 3} photos.", "",
             "| image | method | PSNR dB | SSIM | ab-MSE | colourfulness (original) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['ab_mse']:.5f} | {r['colorfulness']:.1f} ({r['original_colorfulness']:.1f}) |")
    for m, s in summary.items():
        lines.append(f"| **mean** | **{m}** | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['ab_mse']:.5f} | "
                     f"{s['colorfulness']:.1f} ({s['original_colorfulness']:.1f}) |")
    return "\n".join(lines) + "\n"


def _contact_sheet(triples, h: int = 160) -> Image.Image:
    """One row per photo: gray input, our output, the original."""
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
