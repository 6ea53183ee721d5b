"""Training the hint head (worker/hinthead.py) with the seed's net frozen: its features are
computed once per training photo (`extract`), so two cores train the head in an hour:
`python -m pipeline.model.train_hinthead extract PACK DIR`, `train DIR`, `export DIR`
(-> pipeline/weights/hint_head.pt); `make train-hint-head` runs them all."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.client.state import HINT_HEAD
from pipeline.worker.engine import NET_PAD
from pipeline.worker.hinthead import FEATURES, GRID, HintHead, S, net_parts


def _frozen(checkpoint: str | None):
    from pipeline.model.net import load_checkpoint
    from pipeline.worker import color

    ck = load_checkpoint(checkpoint, "cpu")
    L8 = color.gray_to_L(torch.arange(256, dtype=torch.float64) / 255).float()
    return ck, L8


def extract(pack: str, out: str, checkpoint: str | None = None, batch: int = 32, log=print,
            low: bool = False) -> None:
    """Each pack photo's frozen features (out/feats.npy, float16; low: the net's layer1 output
    instead, out/low.npy, for a head with its own branch) and, on the 1/8 grid, the net's a*b*,
    the true a*b* and L* (out/small.npy)."""
    from PIL import Image
    from skimage.color import rgb2lab

    from pipeline.worker.imaging import luminance_gray

    os.makedirs(out, exist_ok=True)
    with np.load(pack) as z:
        data, offsets = z["jpeg"].tobytes(), z["offsets"]
        meta = json.loads(z["meta"].tobytes())
    n, g = len(offsets) - 1, meta["side"] // GRID
    ck, L8 = _frozen(checkpoint)
    gain = float(ck.meta.get("chroma_gain", 1.0))
    q = (meta["side"] + 2 * NET_PAD) // 4  # the padded input's 1/4 grid, where layer1 is
    shape = (n, 64, q, q) if low else (n, FEATURES, g, g)
    feats = np.lib.format.open_memmap(f"{out}/{'low' if low else 'feats'}.npy", "w+", np.float16, shape)
    small = np.zeros((n, 5, g, g), np.float32)
    for i0 in range(0, n, batch):
        rgbs = []
        for i in range(i0, min(n, i0 + batch)):
            with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
                rgbs.append(np.asarray(im.convert("RGB")))
        grays = torch.from_numpy(np.stack([luminance_gray(r) for r in rgbs]))
        f, ab, lo = net_parts(ck.model, L8, gain, grays, NET_PAD)
        labs = torch.from_numpy(np.stack([rgb2lab(r) for r in rgbs])).permute(0, 3, 1, 2).float()
        j = slice(i0, i0 + len(rgbs))
        feats[j] = (lo if low else f).numpy().astype(np.float16)
        small[j, 0:2] = F.avg_pool2d(ab, GRID).numpy()
        small[j, 2:5] = F.avg_pool2d(labs[:, [1, 2, 0]], GRID).numpy()
        if i0 % (batch * 50) == 0:
            log(f"extract: {i0 + len(rgbs)}/{n}")
    feats.flush()
    np.save(f"{out}/small.npy", small)
    with open(f"{out}/meta.json", "w") as fh:
        json.dump({"n": n, "train": meta["train"], "side": meta["side"], "net_sha256": ck.sha256,
                   "checkpoint": checkpoint}, fh)


def draw_hints(true_ab: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated points on the 1/8 grid, each its cell's true colour: 0 to 30 a photo, few more
    often (Zhang et al. 2017 draw them geometrically)."""
    B, _, H, W = true_ab.shape
    # geometric (p = 0.1, from 0) by its inverse CDF, from gen: torch.distributions draws from the
    # global generator, which left the "seeded" validation points' counts to chance
    u = 1.0 - torch.rand(B, generator=gen, dtype=torch.float64)  # (0, 1]
    k = torch.clamp(torch.floor(torch.log(u) / math.log(0.9)), max=30).long()
    mask = torch.zeros(B, 1, H, W)
    for i in range(B):
        mask.view(B, -1)[i, torch.randperm(H * W, generator=gen)[: int(k[i])]] = 1.0
    return true_ab * mask, mask


def _loss(head: HintHead, f, sm, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(the head's MSE, the net's alone), a*b* / S on the 1/8 grid, with simulated points."""
    ab, true_ab, L = sm[:, 0:2] / S, sm[:, 2:4] / S, sm[:, 4:5] / 100.0
    hint_ab, mask = draw_hints(true_ab, gen)
    if head.branch is not None:  # f is the net's layer1 output: the head's own features from it
        f = head.own_features(f, *ab.shape[-2:])
    return F.mse_loss(head(f.float(), ab, hint_ab, mask, L), true_ab), F.mse_loss(ab, true_ab)


def _arrays(root: str, low: bool = False) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """extract's arrays in root: features (low: the net's layer1 output), the 1/8-grid colours,
    how many are training photos, the net."""
    with open(f"{root}/meta.json") as fh:
        meta = json.load(fh)
    return (torch.from_numpy(np.load(f"{root}/{'low' if low else 'feats'}.npy")),
            torch.from_numpy(np.load(f"{root}/small.npy")), meta["train"], meta["net_sha256"])


def _with_branch(head: HintHead, root: str) -> HintHead:
    """The same head with a branch of its own, a copy of the layers of the net root's arrays came
    from: at first it reads exactly the features it was trained on."""
    with open(f"{root}/meta.json") as fh:
        meta = json.load(fh)
    new = HintHead.from_arch({**head.arch(), "branch": True})
    missing, unexpected = new.load_state_dict(head.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("branch.") for k in missing), (missing, unexpected)
    ck, _ = _frozen(meta.get("checkpoint"))
    if ck.sha256 != meta["net_sha256"]:
        raise SystemExit(f"{root}'s arrays were extracted under another net than {meta.get('checkpoint') or 'the shipped one'}")
    new.branch[0].load_state_dict(ck.model.trunk[5].state_dict())
    new.branch[1].load_state_dict(ck.model.layer2.state_dict())
    return new


def _validate(head, sets) -> tuple[float, float, list[float]]:
    """The head's and the net's own loss on the validation photos (seeded points), averaged over
    the sets (each view of the photos counts once), and the head's on each set."""
    per = []
    with torch.no_grad():
        for feats, small, ntrain, _ in sets:
            val, vg = torch.arange(ntrain, feats.shape[0])[:800], torch.Generator().manual_seed(7)
            per.append(np.mean([[p.item() for p in _loss(head, feats[val[i:i + 200]], small[val[i:i + 200]], vg)]
                                for i in range(0, len(val), 200)], axis=0))
    return float(np.mean([p[0] for p in per])), float(np.mean([p[1] for p in per])), [float(p[0]) for p in per]


def _head_of(saved: dict) -> HintHead:
    """The head a best.pt or head.pt holds (its own weights, not their average)."""
    head = HintHead.from_arch(saved.get("arch"))
    head.load_state_dict(saved["head"])
    return head


def _rescore(path: str, sets) -> float:
    """A kept best head's loss on these sets now: the one it was kept with may have been drawn
    otherwise (before the validation was seeded) or on other folders."""
    if not os.path.exists(path):
        return float("inf")
    return _validate(_head_of(torch.load(path, weights_only=True)).eval(), sets)[0]


def _ema(avg: torch.Tensor, new: torch.Tensor, n) -> torch.Tensor:
    """The weights' moving average over ~500 steps (sooner at first: an average that starts at an
    untrained head would lag it for a thousand steps)."""
    d = min(0.998, (1 + int(n)) / (10 + int(n)))
    return d * avg + (1 - d) * new


def train(root: str, minutes: float, lr: float = 1e-3, batch: int = 64, every: int = 500,
          log=print, steps: int | None = None, attend: bool | None = None, also: tuple[str, ...] = (),
          init: str | None = None, decay: bool = False, branch: bool = False) -> tuple[float, float]:
    """Train (or resume: root/head.pt) the head on extract's arrays in root and in each of `also`
    (the same photos extracted at other sizes: more views of each) for `minutes` (or `steps`).
    init: a new head starts from that head's best.pt. decay: the rate falls along a cosine to
    1/20 over the run. branch: a new head (from init's) also trains its own copy of the net's
    last layers, from extract --low's arrays. The weights are averaged as they go (EMA);
    root/best.pt keeps the average with the best validation loss. Returns it and the net's own
    loss there."""
    torch.manual_seed(0)
    resume = torch.load(f"{root}/head.pt", weights_only=True) if os.path.exists(f"{root}/head.pt") else None
    if resume and branch and not resume["arch"].get("branch"):  # not silently another kind of head
        raise SystemExit(f"{root}/head.pt is a head without a branch: go on without --branch, or train in a new folder")
    branch = bool(resume["arch"].get("branch")) if resume else branch
    sets = [_arrays(r, branch) for r in (root, *also)]
    if len({s[3] for s in sets}) > 1:
        raise SystemExit("the feature folders were extracted under different nets")
    start = resume or (torch.load(init, weights_only=True) if init else None)
    # attend: a new head with the lookup or without; None: as the resumed one is (a new: without)
    head = _head_of(start) if start else HintHead(attend=bool(attend))
    if attend is not None and head.arch()["attend"] != attend:
        raise SystemExit(f"{f'{root}/head.pt' if resume else init} is a head {'with' if not attend else 'without'} "
                         "the lookup: go on without --attend, or train in a new folder")
    grown = branch and head.branch is None
    head = _with_branch(head, root) if grown else head
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    ema = torch.optim.swa_utils.AveragedModel(head, avg_fn=_ema)  # a copy of head as it starts
    step, best, v0 = 0, float("inf"), float("nan")
    if start and "ema" in start and not grown:
        ema.module.load_state_dict(start["ema"])
    if resume:
        opt.load_state_dict(resume["opt"])
        step, best = resume["step"], _rescore(f"{root}/best.pt", sets)
    gen = torch.Generator().manual_seed(step)
    t0, first = time.time(), step
    end, last = t0 + minutes * 60, step + (steps or 0)
    while (time.time() < end) if steps is None else step < last:
        done = (time.time() - t0) / (minutes * 60) if steps is None else (step - first) / steps
        for grp in opt.param_groups:  # this run's rate (a resumed one's too: a lower one to settle)
            grp["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))) if decay else lr
        feats, small, ntrain, _ = sets[int(torch.randint(0, len(sets), (1,), generator=gen))]
        idx = torch.randint(0, ntrain, (batch,), generator=gen)
        f, sm = feats[idx], small[idx]
        if torch.rand(1, generator=gen).item() < 0.5:  # a mirrored photo: its features nearly so
            f, sm = f.flip(-1), sm.flip(-1)
        loss, _ = _loss(head, f, sm, gen)
        opt.zero_grad(), loss.backward(), opt.step(), ema.update_parameters(head)
        step += 1
        if step % every == 0 or time.time() >= end or step == last:
            v, v0, per = _validate(ema.module, sets)
            log(f"step {step}: train {loss.item():.5f}, validation {v:.5f} (the net alone {v0:.5f})"
                + (f"; by folder {', '.join(f'{p:.5f}' for p in per)}" if len(per) > 1 else ""))
            if v < best:
                best = v
                torch.save({"head": ema.module.state_dict(), "step": step, "val": v, "arch": head.arch()},
                           f"{root}/best.pt")
            torch.save({"head": head.state_dict(), "ema": ema.module.state_dict(), "opt": opt.state_dict(),
                        "step": step, "arch": head.arch()}, f"{root}/head.pt")  # best: rescored on resume
    return best, v0


def export(root: str, dest: str | os.PathLike = HINT_HEAD, note: str = "") -> str:
    """root/best.pt -> the file the engine loads, with the net it belongs to; returns its sha256."""
    from pipeline.storage import write_atomic

    with open(f"{root}/meta.json") as fh:
        meta = json.load(fh)
    best = torch.load(f"{root}/best.pt", weights_only=True)
    payload = {"format": 1, "state_dict": best["head"],
               "meta": {"net_sha256": meta["net_sha256"], "steps": best.get("step"), "arch": best.get("arch"),
                        "val_mse": best.get("val"), "photos": meta["train"], "note": note}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(dest, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.model.train_hinthead", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="the frozen net's features of a training pack (gputrain pack)")
    e.add_argument("pack"), e.add_argument("dir"), e.add_argument("--checkpoint")
    e.add_argument("--low", action="store_true", help="the net's layer1 output, for a head with its own branch")
    t = sub.add_parser("train", help="train or resume the head in DIR")
    t.add_argument("dir"), t.add_argument("--minutes", type=float, default=45)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--attend", action="store_const", const=True,
                   help="a new head that looks its hints up (HintHead); a resumed head stays as it is")
    t.add_argument("--also", action="append", default=[],
                   help="another extract folder of the same photos (another size): trained on too")
    t.add_argument("--init", help="a new head starts from this head's best.pt")
    t.add_argument("--decay", action="store_true", help="the rate falls along a cosine over the run")
    t.add_argument("--branch", action="store_true",
                   help="a new head (from --init's) with its own copy of the net's last layers (extract --low)")
    x = sub.add_parser("export", help="DIR/best.pt -> the shipped head")
    x.add_argument("dir"), x.add_argument("--to", default=str(HINT_HEAD)), x.add_argument("--note", default="")
    a = ap.parse_args(argv)
    if a.cmd == "extract":
        extract(a.pack, a.dir, a.checkpoint, low=a.low)
    elif a.cmd == "train":
        train(a.dir, a.minutes, a.lr, attend=a.attend, also=tuple(a.also), init=a.init, decay=a.decay, branch=a.branch)
    else:
        print(export(a.dir, a.to, a.note))


if __name__ == "__main__":
    main()
