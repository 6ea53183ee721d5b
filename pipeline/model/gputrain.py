"""Training on a lent GPU in the minutes a session gets (issue 22).

A lent machine reaches nothing outside it and takes at most 64 MiB a call, so the training split
travels as a *pack*: every photo as a small square JPEG in one .npz (`pack`, built here from the
collection `make train-data` built). There the whole pack is decoded once onto the GPU and stays
there: each step cuts random resized crops with flips out of it (one affine grid for the batch),
converts them to Lab, swaps a few for featureless gray fields (whose right colour is none),
degrades the lightness as old scans are, and trains in bf16, channels_last,
with large batches, for a set number of minutes: the learning rate warms up and then follows a
cosine over the *time* left, since steps per second are only known there. Every `--every` seconds
the EMA weights are scored on the pack's validation photos and the checkpoints written
(OUT/last.pt resumes, OUT/best.pt is the one to evaluate here), so a kill keeps what was done.
The same code runs on the CPU: the dry run of jobs/gpu_session.sh, and its test.

    python -m pipeline.model.gputrain pack data/train out/gpu-pack.npz [--side 112 --max-mb 28]
    python -m pipeline.model.gputrain train out/gpu-pack.npz OUT --minutes 4 [--hints 8]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from pipeline.model.damage import damage
from pipeline.model.net import ColorizationNet, ModelConfig, load_checkpoint, save_checkpoint
from pipeline.model.train import (
    EMA,
    collection_split,
    degrade,
    film_lightness,
    hint_planes,
    list_images,
    load_prescaled,
    mean_ab_of,
    pixel_loss,
    split,
    warm_start,
)
from pipeline.worker import color
from pipeline.worker.device import autocast, pick_device

PACK_FORMAT = 1
QUALITIES = (90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40)
METRICS = ["seconds", "step", "images", "train_loss", "val_loss", "lr", "images_per_s"]


# --- the pack ----------------------------------------------------------------------------------


def _square(path: str, side: int, whole: bool = False) -> Image.Image:
    """The centre square; whole: the whole photo squeezed to a square, as the engine sees it."""
    im = load_prescaled(path, 2 * side)
    return im.resize((side, side), Image.BICUBIC) if whole else ImageOps.fit(im, (side, side), Image.BICUBIC)


def _jpeg(im: Image.Image, quality: int) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality, optimize=True)
    return b.getvalue()


def pack(src: str, dest: str, side: int = 112, max_mb: float = 28.0, log=print, whole: bool = False) -> dict:
    """Writes DEST (.npz): the training and validation photos of SRC (a collection's own split,
    else 5 % by name) as side x side centre squares, JPEG at the best quality (down to 40) that
    fits max_mb (whole: each photo squeezed to the square instead). Returns its meta."""
    coll = collection_split(src)
    train, val = coll if coll is not None else split(list_images(src), 0.05)
    if not train or not val:
        raise ValueError(f"{src}: need training and validation photos, found {len(train)} and {len(val)}")
    paths = train + val
    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        squares = list(ex.map(lambda p: _square(p, side, whole), paths))
    sample = squares[:: max(1, len(squares) // 256)]
    start = next((i for i, q in enumerate(QUALITIES) if sum(len(_jpeg(im, q)) for im in sample)
                  / len(sample) * len(squares) / 2**20 <= max_mb), len(QUALITIES) - 1)
    for quality in QUALITIES[start:]:  # the estimate starts; the real size decides
        with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
            blobs = list(ex.map(lambda im, q=quality: _jpeg(im, q), squares))
        if sum(map(len, blobs)) / 2**20 <= max_mb * 0.99:  # the npz's own few kB beside
            break
    meta = {"format": PACK_FORMAT, "source": str(src), "side": side, "quality": quality, "whole": whole,
            "train": len(train), "val": len(val),
            # evaluate's mean-colour baseline, of the squares in hand (the photos are not read again)
            "train_mean_ab": list(mean_ab_of(squares[:len(train)])),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dest}.tmp.npz"
    np.savez(tmp, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
             meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    os.replace(tmp, dest)
    mb = os.path.getsize(dest) / 2**20
    log(f"wrote {dest}: {len(train)} training and {len(val)} validation photos, {side} px, JPEG "
        f"quality {quality}, {mb:.1f} MiB" + (f" (over the {max_mb:g} MiB asked: fewer or smaller photos)"
                                               if mb > max_mb else ""))
    return {**meta, "mib": mb}


def load_pack(path: str, device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train, val) as uint8 (N, 3, side, side) tensors on device, and the pack's meta."""
    with np.load(path) as z:
        data, offsets = z["jpeg"].tobytes(), z["offsets"]
        meta = json.loads(z["meta"].tobytes())
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"{path}: not a training pack of format {PACK_FORMAT}")

    def decode(i: int) -> np.ndarray:
        with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
            return np.asarray(im.convert("RGB"))

    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        arr = np.stack(list(ex.map(decode, range(len(offsets) - 1))))
    t = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)
    return t[:meta["train"]], t[meta["train"]:], meta


# --- training ----------------------------------------------------------------------------------


def crops(u8: torch.Tensor, out: int, g: torch.Generator, min_scale: float = 0.35) -> torch.Tensor:
    """Random resized crops (area min_scale..1 of the square, aspect 3/4..4/3) with random
    horizontal flips of a uint8 batch, as float RGB in [0, 1], out x out: one affine grid."""
    B, dev = u8.shape[0], u8.device

    def rand(n):
        return torch.rand(n, generator=g, device=dev)

    area = min_scale + (1 - min_scale) * rand(B)
    aspect = torch.exp((rand(B) * 2 - 1) * math.log(4 / 3))
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    cx, cy = (rand(B) * 2 - 1) * (1 - w), (rand(B) * 2 - 1) * (1 - h)
    flip = torch.where(rand(B) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, (B, 3, out, out), align_corners=False)
    return F.grid_sample(u8.float() / 255, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def centre(u8: torch.Tensor, out: int) -> torch.Tensor:
    """The validation view: the square scaled to out x out."""
    return F.interpolate(u8.float() / 255, size=(out, out), mode="bilinear", antialias=True,
                         align_corners=False)


def neutral_fields(x: torch.Tensor, y: torch.Tensor, p: float, g: torch.Generator) -> None:
    """In place: a fraction p of the batch becomes featureless gray fields (a level, a gentle
    ramp) whose right colour is none, as train.neutral_field makes them one at a time."""
    if p <= 0:
        return
    B, _, H, W = x.shape
    dev = x.device
    # drawn for the whole batch and kept where picked: no count read back from the GPU
    pick = (torch.rand(B, generator=g, device=dev) < p).view(B, 1, 1, 1)
    level = 0.05 + 0.9 * torch.rand(B, 1, 1, generator=g, device=dev)
    ramp = 0.15 * torch.rand(B, 1, 1, generator=g, device=dev)
    angle = 2 * math.pi * torch.rand(B, 1, 1, generator=g, device=dev)
    t = torch.linspace(-0.5, 0.5, W, device=dev)
    field = level + ramp * (angle.cos() * t.view(1, 1, W) + angle.sin() * torch.linspace(-0.5, 0.5, H, device=dev).view(1, H, 1))
    x.copy_(torch.where(pick, field.clamp(0.0, 1.0).unsqueeze(1).to(x.dtype), x))
    y.copy_(torch.where(pick, color.encode_ab(torch.zeros(2, device=dev)).view(1, 2, 1, 1).to(y.dtype), y))


def lab_pair(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L*/100, (ab + 128) / 255): the net's input and target, as train.CropDataset gives them."""
    lab = color.rgb_to_lab(rgb)
    return lab[:, :1] / 100.0, color.encode_ab(lab[:, 1:])


def val_loss(model, val: torch.Tensor, size: int, hints: float, batch: int, device) -> float:
    """The objective on the validation photos (the hint variant with the same hints each time)."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(25)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(val), batch):
            x, y = lab_pair(centre(val[i:i + batch], size))
            if hints:
                x = torch.cat([x, hint_planes(y, hints, g)], 1)
            with autocast(device):
                out = model(x.contiguous(memory_format=torch.channels_last))
            total += pixel_loss(out.float(), y, None).item() * len(x)
    model.train()
    return total / max(len(val), 1)


class PackTrainer:
    """One training run on a pack: the photos on the device, the net (warm-started, or resumed
    from OUT/last.pt), its optimizer and EMA, and what has been done so far."""

    def __init__(self, pack_path: str, out: str, init: str | None = None, batch: int = 256,
                 size: int = 96, lr: float = 1e-3, hints: float = 0.0, l1_weight: float = 0.02,
                 degrade_p: float = 0.3, neutral: float = 0.03, film: float = 0.0, damage_p: float = 0.0, ema_decay: float = 0.999,
                 device: str = "auto", seed: int = 25, resume: bool = True, log=print):
        if size % 8:
            raise ValueError(f"--size must be a multiple of 8, got {size}")
        t0 = time.time()
        self.dev, self.log, self.out = pick_device(device), log, Path(out)
        torch.manual_seed(seed)
        self.train, self.val, self.pack = load_pack(pack_path, self.dev)
        log(f"pack: {len(self.train)} training, {len(self.val)} validation photos of "
            f"{self.pack['side']} px on {self.dev} ({time.time() - t0:.1f} s)")
        self.out.mkdir(parents=True, exist_ok=True)
        self.recipe = dict(pack=str(pack_path), init=init, batch=batch, size=size, lr=lr, hints=hints,
                           l1_weight=l1_weight, degrade=degrade_p, neutral=neutral, film=film, damage=damage_p, ema=ema_decay,
                           seed=seed)
        self.model = ColorizationNet(ModelConfig(in_channels=4 if hints else 1)).to(
            self.dev, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-2)
        self.step, self.images, self.best, self.spent = 0, 0, float("inf"), 0.0
        last = self.out / "last.pt"
        if resume and last.is_file():
            ck = load_checkpoint(last, self.dev)
            self.model.load_state_dict(ck.model.state_dict())
            self.opt.load_state_dict(ck.extra["optimizer"])
            self.ema = EMA(self.model, ema_decay)
            self.ema.model.load_state_dict(ck.extra["ema"])
            self.step, self.images = ck.meta["step"], ck.meta["images"]
            self.best, self.spent = ck.meta.get("best_val_loss", self.best), ck.meta.get("train_seconds", 0.0)
            self.gain = ck.meta.get("chroma_gain")
            log(f"resumed from {last}: step {self.step}, {self.images} images, {self.spent:.0f} s trained")
        else:
            # The init's chroma gain goes along (untuned for these weights: `colorize tune-gain`
            # tunes it), so that a checkpoint is never scored at gain 1 beside one at its own.
            self.gain = load_checkpoint(init, "cpu").meta.get("chroma_gain") if init and not init.endswith(".pth") else None
            if init:
                log(f"warm start: {warm_start(self.model, init, self.dev)} tensors from {init}")
            self.ema = EMA(self.model, ema_decay)
        self.metrics = self.out / "metrics.csv"
        if not self.metrics.exists():
            with open(self.metrics, "w", newline="") as f:
                csv.DictWriter(f, METRICS).writeheader()
        # a resumed run draws anew, not the first session's crops again
        self.g = torch.Generator(device=self.dev).manual_seed(seed * 1000003 + self.step)

    def one_step(self, lr: float) -> float:
        r = self.recipe
        self.opt.param_groups[0]["lr"] = lr
        idx = torch.randint(0, len(self.train), (r["batch"],), generator=self.g, device=self.dev)
        rgb = crops(self.train[idx], r["size"], self.g)
        x, y = lab_pair(rgb)
        x = film_lightness(rgb, x, r["film"], self.g)
        neutral_fields(x, y, r["neutral"], self.g)
        x = damage(degrade(x, r["degrade"], self.g), r.get("damage", 0.0), self.g)
        if r["hints"]:
            x = torch.cat([x, hint_planes(y, r["hints"], self.g)], 1)
        with autocast(self.dev, cpu_bf16=True):
            pred = self.model(x.contiguous(memory_format=torch.channels_last)).float()
        loss = pixel_loss(pred, y, None) + r["l1_weight"] * F.l1_loss(pred, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        self.images += r["batch"]
        return loss.detach()  # read back at the next save, not every step (a GPU sync)

    def save(self, seconds: float, train_loss: float, images_per_s: float) -> float:
        """Scores the EMA weights on the validation photos, appends to OUT/metrics.csv, writes
        OUT/last.pt (to resume) and OUT/best.pt (when better); the validation loss."""
        r = self.recipe
        v = val_loss(self.ema.model, self.val, r["size"], r["hints"], r["batch"], self.dev)
        row = dict(seconds=round(seconds, 1), step=self.step, images=self.images, train_loss=train_loss,
                   val_loss=v, lr=self.opt.param_groups[0]["lr"], images_per_s=images_per_s)
        with open(self.metrics, "a", newline="") as f:
            csv.DictWriter(f, METRICS).writerow(row)
        info = dict(step=self.step, images=self.images, val_loss=v, best_val_loss=min(self.best, v),
                    train_seconds=seconds, train_images=len(self.train), val_images=len(self.val),
                    train_mean_ab=self.pack["train_mean_ab"], recipe=r, trained_on="gputrain",
                    pack={k: self.pack[k] for k in ("source", "side", "quality", "built")},
                    device=torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu",
                    torch=str(torch.__version__))
        if self.gain is not None:
            info.update(chroma_gain=self.gain, chroma_gain_rule="the init checkpoint's, not tuned "
                        "for these weights (colorize tune-gain)")
        save_checkpoint(self.out / "last.pt", self.model, info, optimizer=self.opt.state_dict(),
                        ema=self.ema.model.state_dict())
        if v < self.best:
            self.best = v
            save_checkpoint(self.out / "best.pt", self.ema.model, info)
        self.log(f"{seconds:.0f} s, step {self.step}: train {train_loss:.5f} val {v:.5f} ({images_per_s:.0f} img/s)")
        return v

    def run(self, seconds: float, every: float = 30.0) -> dict:
        """Trains for `seconds` of wall time: the learning rate warms up over the first 3 %, then
        follows a cosine down to 5 % over the time left; saves every `every` seconds and at the end
        (one step at least, however little time is left)."""
        lr, t0 = self.recipe["lr"], time.time()
        last, losses, seen = t0, [], self.images
        self.model.train()
        warm, first = 0.03 * seconds, self.step
        # one step at least: minutes that all went in decoding the pack (a loaded machine's dry
        # run) still show that training runs and resumes, not only the checkpoint it began from
        while (elapsed := time.time() - t0) < seconds or self.step == first:
            losses.append(self.one_step(lr * elapsed / warm if elapsed < warm else lr * 0.05 if elapsed >= seconds
                                        else lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * elapsed / seconds)))))
            if time.time() - last >= every:
                now = time.time()
                self.save(self.spent + now - t0, float(torch.stack(losses).mean()), (self.images - seen) / (now - last))
                last, losses, seen = time.time(), [], self.images
        now = time.time()
        self.save(self.spent + now - t0, float(torch.stack(losses).mean()) if losses else float("nan"),
                  (self.images - seen) / max(now - last, 1e-9))
        return dict(step=self.step, images=self.images, best_val_loss=self.best, out=str(self.out))


def train_on_pack(pack_path: str, out: str, minutes: float = 4.0, every: float = 30.0, log=print,
                  **kw) -> dict:
    """Train for `minutes` of wall time, decoding the pack included (PackTrainer's keywords)."""
    t0 = time.time()
    trainer = PackTrainer(pack_path, out, log=log, **kw)
    return trainer.run(max(0.0, minutes * 60 - (time.time() - t0)), every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.model.gputrain", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="the training split as one small file for a lent GPU")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--side", type=int, default=112)
    p.add_argument("--max-mb", type=float, default=28.0)
    p.add_argument("--whole", action="store_true", help="each photo squeezed to the square, not its centre")
    t = sub.add_parser("train", help="train on a pack for a set number of minutes")
    t.add_argument("pack")
    t.add_argument("out")
    t.add_argument("--init", default="pipeline/weights/colorizer.pt")
    t.add_argument("--minutes", type=float, default=4.0)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--size", type=int, default=96)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--hints", type=float, default=0.0, help="train the hint-conditioned variant (mean points)")
    t.add_argument("--neutral", type=float, default=0.03, help="the share of featureless gray fields")
    t.add_argument("--film", type=float, default=0.0,
                   help="the share of inputs with an orthochromatic or blue-sensitive film's lightness")
    t.add_argument("--damage", type=float, default=0.0,
                   help="the probability of each kind of old-print damage on an input")
    t.add_argument("--every", type=float, default=30.0)
    t.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        pack(a.src, a.dest, a.side, a.max_mb, whole=a.whole)
    else:
        train_on_pack(a.pack, a.out, a.minutes, a.every, init=a.init or None, batch=a.batch,
                      size=a.size, lr=a.lr, hints=a.hints, neutral=a.neutral, film=a.film, damage_p=a.damage, device=a.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
