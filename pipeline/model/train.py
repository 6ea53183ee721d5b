"""Training: the seed's targets (L*/100 -> (ab+128)/255) with resumable, atomic checkpoints.

The recipe on top of the seed's: AdamW with a one-cycle schedule, an EMA of the weights (what is
validated and shipped), an L1 term beside MSE (MSE alone regresses to the mean and greys the
colour out), scan-like degradations of the input L only (grain, blur, fading, gamma: archive
scans are not clean photos, and the target colour stays the clean one), and an optional warm start
from the Apache-2.0 tutorial checkpoint of the same architecture. SRC may be a folder of photos, a
path list, or a collection built by `python -m pipeline.model.traindata` (its manifest's train/val split).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.errors import UsageError, plural
from pipeline.model.damage import damage
from pipeline.model.net import ColorizationNet, ModelConfig, load_checkpoint, save_checkpoint
from pipeline.model.trainspec import TrainConfig
from pipeline.worker import color
from pipeline.worker.device import autocast, pick_device
from pipeline.worker.hints import HINT_AB_SCALE


def collection_split(src: str | os.PathLike) -> tuple[list[str], list[str]] | None:
    """(train, val) cache paths of a collection built by pipeline.model.traindata, else None."""
    p = Path(src)
    if not (p / "manifest.csv").is_file():
        return None
    from pipeline.model.traindata import read_manifest

    rows = read_manifest(p)
    return ([str(p / r["cache"]) for r in rows if r["split"] == "train"],
            [str(p / r["cache"]) for r in rows if r["split"] == "val"])


def list_images(src: str | os.PathLike) -> list[str]:
    """Colour photos for training: a folder (recursive), one photo, or a manifest (Parquet/CSV/TXT)
    of paths."""
    from pipeline.client.manifest import IMAGE_EXTS

    p = Path(src)
    if p.is_dir():
        return sorted(str(q) for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file())
    if p.is_file() and p.suffix.lower() in IMAGE_EXTS:  # a trial's photo was read as a list of paths
        return [str(p)]
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return sorted(pq.read_table(p, columns=["path"]).column("path").to_pylist())
    if p.is_file():
        from pipeline.client.manifest import read_path_list

        return sorted(r["path"] for r in read_path_list(p))
    raise FileNotFoundError(f"training source not found: {src}")


def split(paths: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split by path hash, so adding photos does not reshuffle the held-out set."""
    def h(s: str) -> float:
        return int(hashlib.sha1(Path(s).name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    val = [q for q in paths if h(q) < val_fraction]
    if not val and paths and val_fraction > 0:
        val = [min(paths, key=h)]
    train = [q for q in paths if q not in set(val)]
    return train, val


def load_prescaled(path: str, long_side: int) -> Image.Image:
    with Image.open(path) as im:
        im.draft("RGB", (long_side, long_side))  # JPEG: decode at reduced scale, much faster
        im = ImageOps.exif_transpose(im).convert("RGB")
    s = long_side / max(im.size)
    if s < 1:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
    return im


class CropDataset(Dataset):
    """Random resized crops (train) or centre crops (val) as (L*/100, (ab+128)/255)."""

    def __init__(self, paths: list[str], cfg: TrainConfig, train: bool):
        self.paths, self.cfg, self.train = paths, cfg, train
        self.epoch = 0
        self._cache: dict[int, Image.Image] = {}  # per worker: photos are decoded once

    def __len__(self) -> int:
        return len(self.paths) * (self.cfg.repeats if self.train else 1)

    def _photo(self, i: int) -> Image.Image:
        if i not in self._cache:
            self._cache[i] = load_prescaled(self.paths[i], self.cfg.prescale)
        return self._cache[i]

    def __getitem__(self, idx: int):
        if self.train and self.cfg.neutral:
            # Own stream, so the photos' crops are the same with or without neutral fields.
            rng = random.Random(hash((self.cfg.seed, self.epoch, idx, 1)))  # ints: hash() of a str varies per process
            if rng.random() < self.cfg.neutral:
                return neutral_field(self.cfg.size, rng)
        i = idx % len(self.paths)
        im = self._photo(i)
        s = self.cfg.size
        if self.train:
            # Randomness from (seed, epoch, idx): identical on resume, whatever the worker count.
            rng = random.Random(hash((self.cfg.seed, self.epoch, idx)))
            W, H = im.size
            area = W * H
            for _ in range(10):
                a = area * rng.uniform(self.cfg.min_scale, 1.0)
                r = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                w, h = round(math.sqrt(a * r)), round(math.sqrt(a / r))
                if 0 < w <= W and 0 < h <= H:
                    break
            else:
                w = h = min(W, H)
            x, y = rng.randint(0, W - w), rng.randint(0, H - h)
            crop = im.resize((s, s), Image.BILINEAR, box=(x, y, x + w, y + h))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            crop = ImageOps.fit(im, (s, s), Image.BILINEAR)
        rgb = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        lab = color.rgb_to_lab(rgb)
        L = lab[:1] / 100.0
        if self.train and self.cfg.film:
            g = torch.Generator().manual_seed(hash((self.cfg.seed, self.epoch, idx, 2)) & (2**63 - 1))
            L = film_lightness(rgb[None], L[None], self.cfg.film, g)[0]
        return L, color.encode_ab(lab[1:])


def neutral_field(size: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """A featureless gray field (a level, a gentle ramp) whose right colour is none.

    Photos alone teach the net that gray areas lean to the collection's average (a mauve cast on
    blank paper and walls) and nothing about its zero-padded border; these samples teach both.
    """
    level, ramp, angle = rng.uniform(0.05, 0.95), rng.uniform(0.0, 0.15), rng.uniform(0, 2 * math.pi)
    t = torch.linspace(-0.5, 0.5, size)
    L = level + ramp * (math.cos(angle) * t.view(1, -1) + math.sin(angle) * t.view(-1, 1))
    ab = torch.zeros(2, size, size)
    return L.clamp(0.0, 1.0).unsqueeze(0), color.encode_ab(ab)


def mean_ab(paths: list[str], long_side: int = 128) -> tuple[float, float]:
    """The training set's mean a*, b*: the 'mean colour' baseline that evaluation compares to."""
    return mean_ab_of(np.asarray(load_prescaled(p, long_side)) for p in paths)


def mean_ab_of(images) -> tuple[float, float]:
    """The mean a*, b* over every pixel of some 8-bit RGB images (H, W, 3)."""
    acc, n = torch.zeros(2, dtype=torch.float64), 0
    for im in images:
        rgb = np.asarray(im, dtype=np.float32) / 255.0
        lab = color.rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).double())
        acc += lab[1:].sum(dim=(1, 2))
        n += lab[0].numel()
    return (float(acc[0] / n), float(acc[1] / n))


def film_lightness(rgb: torch.Tensor, lab_L: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """L*/100 of a batch (B, 3, H, W) as old film saw it: with probability p a sample's lightness
    is an orthochromatic (2 in 3) or blue-sensitive film's, each film's weights jittered; the
    others keep lab_L, the photo's own L*/100. The target stays the photo's colour."""
    if p <= 0:
        return lab_L
    B, dev = rgb.shape[0], rgb.device
    pick = torch.rand(B, generator=g, device=dev) < p
    ortho = torch.rand(B, generator=g, device=dev) < 2 / 3
    films = torch.tensor([color.FILMS["ortho"], color.FILMS["blue"]], dtype=rgb.dtype, device=dev)
    w = torch.where(ortho[:, None], films[0], films[1])
    w = w + 0.08 * torch.rand(B, 3, generator=g, dtype=rgb.dtype, device=dev)
    w = w / w.sum(1, keepdim=True)
    Y = torch.einsum("bc,bchw->bhw", w, color.srgb_to_linear(rgb)).clamp(0.0, 1.0)
    return torch.where(pick.view(B, 1, 1, 1), color.Y_to_L(Y).unsqueeze(1) / 100.0, lab_L)


def degrade(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Make a batch of L*/100 inputs look like old scans, each degradation with probability p."""
    if p <= 0:
        return x
    B = x.shape[0]

    dev = x.device  # g is a generator there: a GPU batch is degraded where it is

    def pick() -> torch.Tensor:
        return (torch.rand(B, 1, 1, 1, generator=g, device=dev) < p).to(x.dtype)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, 1, 1, 1, generator=g, dtype=x.dtype, device=dev)

    m = pick()  # fading / low contrast: black lifts, white drops
    lo, hi = u(0.0, 0.18), u(0.78, 1.0)
    x = m * (lo + (hi - lo) * x) + (1 - m) * x
    m = pick()  # tone curve
    x = m * x.clamp_min(1e-4) ** u(0.7, 1.4) + (1 - m) * x
    m = pick()  # softness of an old lens or a low-resolution scan
    sigma = 0.4 + 0.8 * torch.rand(1, generator=g, dtype=x.dtype, device=dev)  # a tensor: no GPU sync
    k = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=x.dtype, device=dev) / sigma) ** 2)
    k = k / k.sum()
    xb = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
    xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))
    x = m * xb + (1 - m) * x
    m = pick()  # film grain
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype, device=dev) * u(0.005, 0.04)
    x = x + m * noise
    return x.clamp(0.0, 1.0)


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for q in self.model.parameters():
            q.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm-up: early weights are noise
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(), strict=True))
        floats = [(e, m.detach()) for e, m in pairs if e.dtype.is_floating_point]
        # one fused kernel for all the weights, not two per tensor: on a GPU the per-tensor
        # launches took longer than the net's step
        torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1 - d)
        for e, m in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(m)


def warm_start(model: torch.nn.Module, path: str, device) -> int:
    """Load our checkpoint, or the tutorial's state dict (keys ResNet18.*, conv1..5, bn1..4),
    whose decoder has one more BatchNorm (bn3) than the seed's: every tensor whose name maps and
    whose shape fits is loaded. Returns how many tensors were loaded."""
    if not path.endswith(".pth"):
        sd = load_checkpoint(path, device).model.state_dict()
        own = model.state_dict()
        w = sd["trunk.0.weight"]
        if own["trunk.0.weight"].shape[1] > w.shape[1]:  # the hint variant from the seed's net:
            sd["trunk.0.weight"] = torch.cat(  # its hint planes start at zero weight
                [w, w.new_zeros((w.shape[0], own["trunk.0.weight"].shape[1] - w.shape[1], *w.shape[2:]))], 1)
        model.load_state_dict(sd)
        return len(sd)
    sd = torch.load(path, map_location=device, weights_only=True)
    rename = {"ResNet18.": "trunk.", "conv1.": "layer2.0.", "bn1.": "layer2.1.", "conv2.": "layer3.0.",
              "bn2.": "layer3.1.", "conv3.": "layer4.0.", "conv4.": "layer5.0.", "conv5.": "layer6."}
    own = model.state_dict()
    n = 0
    for k, v in sd.items():
        for a, b in rename.items():
            if k.startswith(a):
                k2 = b + k[len(a):]
                if k2 in own and own[k2].shape == v.shape:
                    own[k2].copy_(v)
                    n += 1
                break
    return n


AB_BINS = 22  # a*, b* in 10-unit bins over [-110, 110): what "rare colour" means below


def ab_bin(y: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) targets on the net's scale -> (B, H, W) bin index of each pixel's a*b*."""
    i = ((color.decode_ab(y) + 110.0) / 10.0).floor().clamp(0, AB_BINS - 1).long()
    return i[:, 0] * AB_BINS + i[:, 1]


def ab_prior(paths: list[str], n: int = 400, size: int = 64) -> torch.Tensor:
    """How often each a*b* bin occurs: centre crops of n training photos (an even sample)."""
    counts = torch.zeros(AB_BINS * AB_BINS, dtype=torch.float64)
    for p in paths[:: max(1, len(paths) // n)][:n]:
        crop = ImageOps.fit(load_prescaled(p, 4 * size), (size, size), Image.BILINEAR)
        rgb = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        lab = color.rgb_to_lab(rgb)
        counts += torch.bincount(ab_bin(color.encode_ab(lab[1:])[None]).flatten(),
                                 minlength=AB_BINS * AB_BINS).double()
    return counts


def rarity_weights(counts: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-bin loss weights 1 / (s p + (1 - s) / Q) with p the prior smoothed by a Gaussian of
    5 a*b* units (Zhang et al.'s recipe, their lambda = 1 - s), normalised so that the expected
    weight over the prior is 1; s = 0 gives plain MSE. Bins never seen weigh as the rarest seen."""
    p = counts.view(1, 1, AB_BINS, AB_BINS).float()
    k = torch.exp(-0.5 * torch.arange(-2, 3, dtype=torch.float32) ** 2 / 0.5 ** 2)
    k = (k / k.sum()).view(1, 1, 5, 1)
    p = F.conv2d(F.conv2d(p, k, padding=(2, 0)), k.transpose(2, 3), padding=(0, 2)).flatten()
    p = p / p.sum()
    seen = p > 0
    q = int(seen.sum())
    w = torch.zeros_like(p)
    w[seen] = 1.0 / (strength * p[seen] + (1 - strength) / q)
    w[~seen] = w[seen].max()
    return w / (p * w).sum()


def pixel_loss(pred: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """MSE, each pixel weighted by its true colour's rarity when weights are given."""
    if weights is None:
        return F.mse_loss(pred, y)
    w = weights.to(y.device)[ab_bin(y)]
    return ((pred - y) ** 2 * w[:, None]).mean()


class AuxHead(torch.nn.Module):
    """Training only: a classifier over a*b* bins on the decoder's quarter-resolution features,
    class-rebalanced (Zhang et al. 2016's objective), whose gradient teaches the trunk which
    colours are possible where. It is not part of the net that ships (the seed's, unchanged)."""

    def __init__(self, model: torch.nn.Module, class_weights: torch.Tensor):
        super().__init__()
        self.conv = torch.nn.Conv2d(model.layer3[0].out_channels, AB_BINS * AB_BINS, 1)
        self.register_buffer("w", class_weights.float())
        self.feats: torch.Tensor | None = None
        model.layer3.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.feats = output

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        logits = self.conv(self.feats.float())
        target = ab_bin(F.interpolate(y, size=logits.shape[-2:], mode="area"))
        return F.cross_entropy(logits, target, weight=self.w)


def hint_planes(y: torch.Tensor, mean_points: float, g: torch.Generator, cap: int = 32) -> torch.Tensor:
    """Simulated curator's hints for a batch of targets y (B, 2, H, W), as the hint-conditioned
    net's extra planes (B, 3, H, W) (worker/hints.planes' encoding): per crop a geometric number
    of points with that mean (so some crops get none, at most `cap`), each a square of 1..5
    cells holding the true a*b* averaged over it (Zhang et al. 2017's simulation); a later point
    covers an earlier one. Whole-batch tensor work on y's device (g a generator there): no
    per-point loop, so it keeps up with a GPU."""
    B, _, H, W = y.shape
    dev = y.device
    ab = color.decode_ab(y.float())

    def rand(*shape):
        return torch.rand(shape, generator=g, device=dev)

    p = 1.0 / (mean_points + 1.0)
    counts = ((rand(B).clamp_min(1e-9).log() / math.log(1.0 - p)).floor().clamp(0, cap)
              if p < 1 else torch.zeros(B, device=dev))
    s = (rand(B, cap) * 5).long() + 1  # 1..5
    r = (rand(B, cap) * (H - s + 1)).long()
    c = (rand(B, cap) * (W - s + 1)).long()
    # each square's mean from the integral image: four lookups, whatever its size
    ii = F.pad(ab.cumsum(2).cumsum(3), (1, 0, 1, 0))  # (B, 2, H + 1, W + 1)

    def at(rr, cc):
        return ii.flatten(2).gather(2, (rr * (W + 1) + cc).unsqueeze(1).expand(B, 2, cap))

    means = (at(r + s, c + s) - at(r, c + s) - at(r + s, c) + at(r, c)) / (s * s).unsqueeze(1)
    rows = torch.arange(H, device=dev).view(1, 1, H, 1)
    cols = torch.arange(W, device=dev).view(1, 1, 1, W)
    live = (torch.arange(cap, device=dev).view(1, cap) < counts.view(B, 1)).view(B, cap, 1, 1)
    cover = (live & (rows >= r[..., None, None]) & (rows < (r + s)[..., None, None])
             & (cols >= c[..., None, None]) & (cols < (c + s)[..., None, None]))
    k = torch.arange(1, cap + 1, device=dev).view(1, cap, 1, 1)
    last = (cover * k).amax(1)  # (B, H, W): 1 + the last point covering each cell, 0 none
    pick = (last - 1).clamp_min(0).flatten(1).unsqueeze(1).expand(B, 2, H * W)
    hinted = (last > 0).unsqueeze(1)
    ab_planes = means.gather(2, pick).view(B, 2, H, W) / HINT_AB_SCALE * hinted
    return torch.cat([ab_planes, hinted.float()], 1)


def with_hints(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """The net's input: L alone, or L and simulated hint planes for the hint-conditioned variant."""
    if not cfg.hints:
        return x
    return torch.cat([x, hint_planes(y, cfg.hints, g).to(x.dtype)], 1)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def evaluate_loss(model, loader, device, weights: torch.Tensor | None = None,
                  cfg: TrainConfig | None = None) -> float:
    """The training objective on the validation split (per image, averaged); the hint variant's
    with the same simulated hints every time."""
    model.eval()
    total, n = 0.0, 0
    g = torch.Generator().manual_seed(25)
    with torch.no_grad():
        for x, y in loader:
            if cfg is not None:
                x = with_hints(x, y, cfg, g)
            x, y = x.to(device), y.to(device)
            with autocast(device):
                out = model(x)
            total += pixel_loss(out.float(), y, weights).item() * x.shape[0]
            n += x.shape[0]
    model.train()
    return total / max(n, 1)


def training_photos(cfg: TrainConfig, log=lambda m: None) -> tuple[list[str], list[str]]:
    """(train, validation) paths: a collection's own split (make train-data), else by name hash."""
    coll = collection_split(cfg.src)
    if coll is not None:
        return coll
    paths = colour_photos(list_images(cfg.src), log)
    if len(paths) < 2:
        raise UsageError(f"need at least 2 training photos in {cfg.src}, found {len(paths)}")
    return split(paths, cfg.val_fraction)


# what a file that is no picture raises (Pillow's, an empty file, a bomb): one file, not the run
NOT_A_PICTURE = (OSError, ValueError, Image.DecompressionBombError)


def named(xs: list[str]) -> str:
    return ", ".join(xs[:5]) + (" ..." if len(xs) > 5 else "")


def not_read(p: str, e: Exception) -> str:
    return f"{p} ({getattr(e, 'strerror', None) or e})"


def said_not_read(bad: list[str], log) -> None:
    if bad:
        log(f"{plural(len(bad), 'file')} left out, not read as a photo: {named(bad)}")


def colour_photos(paths: list[str], log) -> list[str]:
    """The files that decode as colour photos, read once at a small size: one that does not (a
    note named .jpg, an empty file; a truncated one, which failed later in a loader's worker
    and ended the training) is left out and named, and so is a gray or nearly gray one (a
    family's scans among its colour photos: it teaches the net that the answer is gray).
    make train-data's collections are examined when made (traindata.examine)."""
    from skimage.color import rgb2lab

    from pipeline.model.traindata import MIN_CHROMA

    ok, bad, grays = [], [], []
    for p in paths:
        try:
            small = load_prescaled(p, 64)
        except NOT_A_PICTURE as e:
            bad.append(not_read(p, e))
            continue
        lab = rgb2lab(np.asarray(small, dtype=np.float32) / 255.0)
        (ok if float(np.hypot(lab[..., 1], lab[..., 2]).mean()) >= MIN_CHROMA else grays).append(p)
    said_not_read(bad, log)
    if grays:
        log(f"{plural(len(grays), 'gray photo')} left out ({named([Path(p).name for p in grays])}): "
            "no colour to learn from")
    return ok


def _said_split(out: Path, train_paths: list[str], val_paths: list[str], log) -> None:
    """Which photos are held out, listed: a trial scored a checkpoint on the photos it was
    trained on (and "best" was chosen on one photo) without a way to know which were not."""
    out.mkdir(parents=True, exist_ok=True)
    if not val_paths:
        log(f"{plural(len(train_paths), 'photo')} to train on, none held out for validation")
        return
    # whole: a list's relative paths are read from its own folder (OUT), not from where it ran
    (out / "val.txt").write_text("".join(f"{os.path.abspath(p)}\n" for p in val_paths), encoding="utf-8")
    log(f"{plural(len(train_paths), 'photo')} to train on, {len(val_paths)} held out for validation "
        f"(listed in {out / 'val.txt'}: `colorize evaluate {out / 'val.txt'}` scores a checkpoint "
        "on them alone)")


def _one_cycle(opt, cfg: TrainConfig, total_steps: int, last_step: int = -1):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                               pct_start=0.1, last_epoch=last_step)


def _resume(path: Path, cfg: TrainConfig, model, opt, sched, ema, total_steps: int, device, log,
            aux=None):
    """Loads OUT/last.pt into the model, optimizer, schedule, EMA and the auxiliary head;
    (epoch, step, best, sched)."""
    ck = load_checkpoint(path, device)
    model.load_state_dict(ck.model.state_dict())
    if aux is not None:
        aux.load_state_dict(ck.extra["aux"])
    opt.load_state_dict(ck.extra["optimizer"])
    if ck.extra["scheduler"].get("total_steps") == total_steps:
        sched.load_state_dict(ck.extra["scheduler"])
    else:  # --epochs changed since: the one cycle is re-laid over the new total from here
        sched = _one_cycle(opt, cfg, total_steps, last_step=ck.meta["step"] - 1)
        log(f"schedule re-laid: {ck.extra['scheduler'].get('total_steps')} -> {total_steps} steps")
    if ema is not None:
        ema.model.load_state_dict(ck.extra["ema"])
    log(f"resumed from {path} at epoch {ck.meta['epochs']}, step {ck.meta['step']}")
    return ck.meta["epochs"], ck.meta["step"], ck.meta.get("best_val_loss", float("inf")), sched


def _train_epoch(model, opt, sched, ema, loader, cfg: TrainConfig, epoch: int, step: int,
                 total_steps: int, device, weights=None, aux=None) -> tuple[int, int, float, bool]:
    """One pass; returns (step, images seen, summed loss, whether max_steps was reached)."""
    seen, run_loss, t0 = 0, 0.0, time.time()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
    gd = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    for x, y in bar:
        x = with_hints(damage(degrade(x, cfg.degrade, gd), cfg.damage, gd), y, cfg, gd)
        x = x.contiguous(memory_format=torch.channels_last)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, cpu_bf16=cfg.bf16):
            pred = model(x).float()
        loss = pixel_loss(pred, y, weights)
        if cfg.l1_weight:
            loss = loss + cfg.l1_weight * F.l1_loss(pred, y)
        if aux is not None:
            loss = loss + cfg.aux * aux.loss(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model, step)
        if step < total_steps:
            sched.step()
        step += 1
        seen += x.shape[0]
        run_loss += loss.item() * x.shape[0]
        bar.set_postfix(loss=f"{loss.item():.5f}", img_s=f"{seen / (time.time() - t0):.1f}")
        if cfg.max_steps and step >= cfg.max_steps:
            return step, seen, run_loss, True
    return step, seen, run_loss, False


def _prior(train_paths: list[str], out: Path) -> torch.Tensor:
    """The a*b* prior, kept in OUT (a resumed run weighs as it began)."""
    path = out / "ab_prior.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    counts = ab_prior(train_paths)
    torch.save(counts, path)
    return counts


def _rarity(cfg: TrainConfig, train_paths: list[str], out: Path, log) -> torch.Tensor | None:
    """The rarity weights of the regression loss (--rarity), or None."""
    if not cfg.rarity:
        return None
    counts = _prior(train_paths, out)
    w = rarity_weights(counts, cfg.rarity)
    log(f"rarity {cfg.rarity}: per-pixel weights {w[counts > 0].min():.2f} .. "
        f"{w[counts > 0].max():.1f} over {int((counts > 0).sum())} a*b* bins seen")
    return w


def _optimizer(cfg: TrainConfig, model, train_paths: list[str], out: Path, device):
    """The optimizer over the net's weights, and the auxiliary head's when --aux asks for one."""
    aux = (AuxHead(model, rarity_weights(_prior(train_paths, out), 0.5)).to(device)
           if cfg.aux else None)
    Opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    return Opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay), aux


METRICS = ["epoch", "step", "train_loss", "val_loss", "images_per_s", "lr", "seconds"]


def train(cfg: TrainConfig, log=print) -> dict:
    """Train; returns a summary. Checkpoints: OUT/last.pt every epoch, OUT/best.pt by val loss."""
    if cfg.size % 8:
        raise UsageError(f"--size must be a multiple of 8, got {cfg.size}")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_paths, val_paths = training_photos(cfg, log)
    _said_split(out := Path(cfg.out), train_paths, val_paths, log)
    train_mean_ab = mean_ab(train_paths)
    # channels_last: 1.8x faster training on the CPU (13.7 vs 7.6 img/s at 160 px, 2 cores)
    model = ColorizationNet(ModelConfig(in_channels=4 if cfg.hints else 1)).to(device, memory_format=torch.channels_last)
    if cfg.init:
        log(f"warm start: {warm_start(model, cfg.init, device)} tensors from {cfg.init}")
    opt, aux = _optimizer(cfg, model, train_paths, out, device)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    n_train = len(train_paths) * cfg.repeats
    drop_last = n_train > cfg.batch_size  # no ragged last batch, unless that is all there is
    total_steps = (n_train // cfg.batch_size if drop_last else 1) * cfg.epochs
    sched = _one_cycle(opt, cfg, total_steps)
    start_epoch, step, best = 0, 0, float("inf")
    if cfg.resume and (out / "last.pt").is_file():
        start_epoch, step, best, sched = _resume(out / "last.pt", cfg, model, opt, sched, ema,
                                                 total_steps, device, log, aux)
    weights = _rarity(cfg, train_paths, out, log)
    train_ds = CropDataset(train_paths, cfg, train=True)
    kw = dict(num_workers=cfg.workers, worker_init_fn=_worker_init, pin_memory=device.type == "cuda")
    val_loader = DataLoader(CropDataset(val_paths, cfg, train=False), batch_size=cfg.batch_size, **kw)
    metrics_path = out / "metrics.csv"
    if not metrics_path.exists() or not cfg.resume:
        with open(metrics_path, "w", newline="") as f:
            csv.DictWriter(f, METRICS).writeheader()
    t_start = time.time()
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        train_ds.epoch = epoch
        g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=g,
                            drop_last=drop_last, **kw)
        t0 = time.time()
        step, seen, run_loss, done = _train_epoch(model, opt, sched, ema, loader, cfg, epoch, step,
                                                  total_steps, device, weights, aux)
        shipped = ema.model if ema is not None else model
        val_loss = evaluate_loss(shipped, val_loader, device, weights, cfg)
        row = dict(epoch=epoch + 1, step=step, train_loss=run_loss / max(seen, 1), val_loss=val_loss,
                   images_per_s=seen / (time.time() - t0), lr=opt.param_groups[0]["lr"],
                   seconds=time.time() - t_start)
        with open(metrics_path, "a", newline="") as f:
            csv.DictWriter(f, METRICS).writerow(row)
        meta = dict(
            epochs=epoch + 1, step=step, val_loss=val_loss, train_loss=row["train_loss"],
            best_val_loss=min(best, val_loss), train_images=len(train_paths),
            val_images=len(val_paths), source=str(cfg.src), train_mean_ab=list(train_mean_ab),
            recipe=asdict(cfg), device=str(device), torch=str(torch.__version__),
        )
        extra = dict(optimizer=opt.state_dict(), scheduler=sched.state_dict())
        if ema is not None:
            extra["ema"] = ema.model.state_dict()
        if aux is not None:
            extra["aux"] = aux.state_dict()
        save_checkpoint(out / "last.pt", model, meta, **extra)
        if val_loss < best:
            best = val_loss
            save_checkpoint(out / "best.pt", shipped, meta)
        log(f"epoch {epoch + 1}: train {row['train_loss']:.5f} val {val_loss:.5f} "
            f"({row['images_per_s']:.1f} img/s)")
        if done:
            break
    return dict(step=step, best_val_loss=best, out=str(out), train=len(train_paths),
                val=len(val_paths))
