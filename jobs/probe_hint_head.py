"""A learned spread of a curator's hints over the frozen net's own features (issue 25).

The ceiling probe showed that better edges cannot reach the issue's targets: with 3 or 10 points
most regions get no hint of their own, and only something that knows which regions belong
together (the same coat, the same sky, the same wall) can carry a hint there. A hand-made
kernel over the net's features did worse than the edges. This learns it instead, cheaply enough
for two cores: the seed's net stays frozen (its 1/8-grid features after the decoder's first
conv are computed once per training photo), and a small head of dilated convolutions over that
grid, the net's own colour and the hint planes predicts the a*b* correction. Its output is
upsampled onto the net's grid and the shipped propagation then pins each hint along edges.

usage:
  python -m jobs.probe_hint_head extract out/cpu-pack-192.npz out/hinthead
  python -m jobs.probe_hint_head train out/hinthead --minutes 40
  python -m jobs.probe_hint_head score out/hinthead data/kphotoalbum [--photos 23]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from skimage.color import rgb2lab

from pipeline.model.net import load_checkpoint
from pipeline.worker import color
from pipeline.worker.engine import NET_PAD
from pipeline.worker.imaging import luminance_gray

S = 110.0  # a*, b* / S: about [-1, 1]
GRID = 8  # the head works on the net's 1/8 grid


def frozen_net():
    ck = load_checkpoint(None, "cpu")
    m = ck.model.eval()
    L8 = color.gray_to_L(torch.arange(256, dtype=torch.float64) / 255).float()
    return m, L8, float(ck.meta.get("chroma_gain", 1.0))


@torch.inference_mode()
def features(m, L8, gain, grays: torch.Tensor):
    """(B, s, s) uint8 gray -> (features (B, 128, s/8, s/8), ab (B, 2, s, s) with the gain)."""
    x = F.pad((L8[grays.long()] / 100.0)[:, None], (NET_PAD,) * 4, mode="reflect")
    f = m.layer2(m.trunk(x))
    y = m._up(f)
    y = m.layer3(y)
    y = m._up(m.layer4(y))
    y = m._up(m.layer6(m.layer5(y)))
    c, P = NET_PAD // GRID, NET_PAD
    s = grays.shape[-1]
    return f[:, :, c:c + s // GRID, c:c + s // GRID], color.decode_ab(y[:, :, P:P + s, P:P + s]) * gain


def extract(pack: str, out: str, batch: int = 32) -> None:
    os.makedirs(out, exist_ok=True)
    with np.load(pack) as z:
        data, offsets = z["jpeg"].tobytes(), z["offsets"]
        meta = json.loads(z["meta"].tobytes())
    n, side = len(offsets) - 1, meta["side"]
    g = side // GRID
    m, L8, gain = frozen_net()
    feats = np.lib.format.open_memmap(f"{out}/feats.npy", "w+", np.float16, (n, 128, g, g))
    small = np.zeros((n, 7, g, g), np.float32)  # auto a, b; true a, b; L; (2 spare)
    t0 = time.time()
    for i0 in range(0, n, batch):
        rgbs = []
        for i in range(i0, min(n, i0 + batch)):
            with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
                rgbs.append(np.asarray(im.convert("RGB")))
        grays = torch.from_numpy(np.stack([luminance_gray(r) for r in rgbs]))
        f, ab = features(m, L8, gain, grays)
        feats[i0:i0 + len(rgbs)] = f.numpy().astype(np.float16)
        labs = torch.from_numpy(np.stack([rgb2lab(r) for r in rgbs])).permute(0, 3, 1, 2).float()
        small[i0:i0 + len(rgbs), 0:2] = F.avg_pool2d(ab, GRID).numpy()
        small[i0:i0 + len(rgbs), 2:4] = F.avg_pool2d(labs[:, 1:], GRID).numpy()
        small[i0:i0 + len(rgbs), 4] = F.avg_pool2d(labs[:, :1], GRID).numpy()[:, 0]
        if i0 % (batch * 20) == 0:
            print(f"{i0 + len(rgbs)}/{n} {time.time() - t0:.0f} s", flush=True)
    feats.flush()
    np.save(f"{out}/small.npy", small)
    json.dump({"n": n, "train": meta["train"], "side": side}, open(f"{out}/meta.json", "w"))


class HintHead(nn.Module):
    """Frozen features (128), the net's a*b*, the hint planes (a*, b*, their difference from the
    net's colour, mask) and L on the 1/8 grid -> a correction of the net's a*b* there."""

    def __init__(self, width: int = 64, dilations=(1, 2, 4, 8, 16, 1, 2, 4)):
        super().__init__()
        self.inp = nn.Conv2d(128 + 8, width, 1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        # where the hints are, what the picture holds there: pooled over the hints' cells, told
        # to every cell (a hint on one sleeve colours the other, wherever it is)
        self.pooled = nn.ModuleList(nn.Linear(2 * width, width) for _ in dilations)
        self.out = nn.Conv2d(width, 2, 1)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def forward(self, f, ab, hint_ab, mask, L):
        diff = (hint_ab - ab) * mask
        x = F.relu(self.inp(torch.cat([f, ab, hint_ab, diff, mask, L], 1)))
        msum = mask.sum((2, 3)).clamp(min=1.0)
        for conv, lin in zip(self.blocks, self.pooled, strict=True):
            g = torch.cat([x.mean((2, 3)), (x * mask).sum((2, 3)) / msum], 1)
            x = x + F.relu(conv(x) + lin(g)[:, :, None, None])
        return ab + self.out(x)


def draw_hints(true_ab: torch.Tensor, gen: torch.Generator):
    """Seeded simulated points on the 1/8 grid: counts from 0 to 30, few more often (Zhang et al.
    2017 draw them geometrically), each the true colour of its cell."""
    B, _, H, W = true_ab.shape
    k = torch.clamp(torch.distributions.Geometric(0.1).sample((B,)), max=30).long()
    mask = torch.zeros(B, 1, H, W)
    for i in range(B):
        idx = torch.randperm(H * W, generator=gen)[: int(k[i])]
        mask.view(B, -1)[i, idx] = 1.0
    return true_ab * mask, mask


def batches(root: str):
    meta = json.load(open(f"{root}/meta.json"))
    feats = torch.from_numpy(np.load(f"{root}/feats.npy"))
    small = torch.from_numpy(np.load(f"{root}/small.npy"))
    return feats, small, meta["train"]


def loss_on(head, f, sm, gen):
    ab, true_ab, L = sm[:, 0:2] / S, sm[:, 2:4] / S, sm[:, 4:5] / 100.0
    hint_ab, mask = draw_hints(true_ab, gen)
    pred = head(f.float(), ab, hint_ab, mask, L)
    return F.mse_loss(pred, true_ab), F.mse_loss(ab, true_ab)


def train(root: str, minutes: float, batch: int = 64, lr: float = 1e-3) -> None:
    torch.manual_seed(0)
    feats, small, ntrain = batches(root)
    head = HintHead()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    ck = f"{root}/head.pt"
    step, best = 0, float("inf")
    if os.path.exists(ck):
        st = torch.load(ck)
        head.load_state_dict(st["head"]), opt.load_state_dict(st["opt"])
        step, best = st["step"], st["best"]
        for grp in opt.param_groups:  # a resumed run at its own rate (a lower one to settle)
            grp["lr"] = lr
    gen = torch.Generator().manual_seed(step)
    val = torch.arange(ntrain, feats.shape[0])[:800]
    t0, end = time.time(), time.time() + minutes * 60
    while time.time() < end:
        idx = torch.randint(0, ntrain, (batch,), generator=gen)
        f, sm = feats[idx], small[idx]
        if torch.rand(1, generator=gen).item() < 0.5:  # a mirrored photo: its features nearly so
            f, sm = f.flip(-1), sm.flip(-1)
        loss, _ = loss_on(head, f, sm, gen)
        opt.zero_grad(), loss.backward(), opt.step()
        step += 1
        if step % 500 == 0:
            with torch.no_grad():
                vg = torch.Generator().manual_seed(7)
                vl = [loss_on(head, feats[val[i:i + 200]], small[val[i:i + 200]], vg)
                      for i in range(0, len(val), 200)]
            v, v0 = float(np.mean([a.item() for a, _ in vl])), float(np.mean([b.item() for _, b in vl]))
            print(f"step {step} train {loss.item():.5f} val {v:.5f} (net alone {v0:.5f}) "
                  f"{time.time() - t0:.0f} s", flush=True)
            if v < best:
                best = v
                torch.save({"head": head.state_dict()}, f"{root}/best.pt")
            torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "step": step, "best": best}, ck)


def score(root: str, src: str, photos: int, fit: bool) -> None:
    from skimage.transform import resize  # noqa: F401

    from pipeline.model.evaluate import eval_photos, load_rgb
    from pipeline.model.evaluate import score as score_rgb
    from pipeline.worker import hints
    from pipeline.worker.engine import Colorizer
    from pipeline.worker.imaging import net_input

    size = 256
    head = HintHead()
    head.load_state_dict(torch.load(f"{root}/best.pt")["head"])
    head.eval()
    m, L8, gain = frozen_net()
    net = Colorizer(None, device="cpu", size=size)
    ps = eval_photos(src, "/tmp/probe_hint_head")
    picked = list(range(0, len(ps), max(1, len(ps) // photos)))[:photos]
    res: dict[str, dict[int, list]] = {}
    for i in picked:
        ref = load_rgb(ps[i][0], 512)
        gray, lab = luminance_gray(ref), rgb2lab(ref)
        small = net_input(gray, size)
        base = score_rgb(net.recombine(gray, torch.zeros(2, size, size)), ref).psnr
        f, ab = features(m, L8, gain, torch.from_numpy(small)[None])
        L = L8[torch.from_numpy(small).long()].numpy()
        ab_np = ab[0].numpy()
        g = size // GRID
        for n in (3, 10):
            pts = hints.simulate(lab, n, np.random.default_rng((25, i, n)))
            cells = hints.on_grid(pts, gray.shape[1], gray.shape[0], size)
            hab, mask = torch.zeros(1, 2, g, g), torch.zeros(1, 1, g, g)
            for r, c, a, b in cells:
                hab[0, :, r // GRID, c // GRID] = torch.tensor([a, b]) / S
                mask[0, 0, r // GRID, c // GRID] = 1.0
            with torch.no_grad():
                ab8 = F.avg_pool2d(ab, GRID) / S
                pred = head(f, ab8, hab, mask, torch.from_numpy(
                    F.avg_pool2d(torch.from_numpy(L)[None, None], GRID).numpy()) / 100.0)
                delta = F.interpolate((pred - ab8) * S, scale_factor=GRID, mode="bilinear")[0].numpy()
            outs = {
                "shipped": hints.propagate(L, ab_np, cells),
                "head": ab_np + delta,
                "head+pin": propagate_nofit(L, ab_np + delta, cells),
                "head+fit+pin": hints.propagate(L, ab_np + delta, cells),
            }
            if fit:  # the head's correction only where the hints reach (edge-aware)
                outs["gated"] = propagate_gated(L, ab_np, delta, cells, True)
            for k, v in outs.items():
                p = score_rgb(net.recombine(gray, torch.from_numpy(v.astype(np.float32))), ref).psnr
                res.setdefault(k, {3: [], 10: []})[n].append(p - base)
    print(f"{src}: {len(picked)} photos, PSNR over gray")
    for k, v in res.items():
        print(f"  {k:10s} 3 points {np.mean(v[3]):+.2f} dB   10 points {np.mean(v[10]):+.2f} dB")


def propagate_nofit(L, ab, cells):
    """hints.propagate without its global fit: the head has corrected the picture as a whole."""
    from pipeline.worker import hints

    saved = hints.global_fit
    hints.global_fit = lambda ab, cells: ab
    try:
        return hints.propagate(L, ab, cells)
    finally:
        hints.global_fit = saved


def propagate_gated(L, ab, delta, cells, fit):
    """hints.propagate with the head's correction where the hints reach (edge-aware), as the
    shipped global fit is applied; fit: the global fit on top of it."""
    import scipy.sparse.linalg as spla

    from pipeline.worker import hints

    H, W = L.shape
    P, lo = hints.PATCH, hints.PATCH // 2
    fixed = np.zeros(L.shape, bool)
    for r, c, _, _ in cells:
        fixed[max(0, r - lo):min(H, r - lo + P), max(0, c - lo):min(W, c - lo + P)] = True
    lu = spla.splu(hints.affinity_system(L.astype(np.float64), fixed))
    reach = np.clip(lu.solve(fixed.ravel().astype(np.float64)).reshape(H, W), 0.0, 1.0)
    target = ab + delta
    if fit:
        target = hints.global_fit(target, cells)
    ab = ab + reach * (target - ab)
    rhs = np.zeros((2,) + L.shape)
    for r, c, a, b in cells:
        r0, r1, c0, c1 = max(0, r - lo), min(H, r - lo + P), max(0, c - lo), min(W, c - lo + P)
        rhs[0, r0:r1, c0:c1] = a - ab[0, r0:r1, c0:c1]
        rhs[1, r0:r1, c0:c1] = b - ab[1, r0:r1, c0:c1]
    out = ab.astype(np.float64)
    for ch in range(2):
        out[ch] += lu.solve(rhs[ch].ravel()).reshape(L.shape)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["extract", "train", "score"])
    ap.add_argument("a")
    ap.add_argument("b", nargs="?")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.cmd == "extract":
        extract(a.a, a.b)
    elif a.cmd == "train":
        train(a.a, a.minutes, lr=a.lr)
    else:
        score(a.a, a.b, a.photos, a.fit)


if __name__ == "__main__":
    main()
