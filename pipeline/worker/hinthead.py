"""The hint head: a better guess of the whole picture's colour from a curator's few points (issue 25).

Edge-aware propagation (worker/hints.propagate) corrects the net's colour where the hints reach
with one gain and offset, and with 3 or 10 points most of a photo is far from any hint
(jobs/probe_hint_ceiling.py: even true-colour edges cannot reach the issue's targets). What
helps there is knowing what goes with what: which parts share the hinted coat's colour, what a
red coat says about the rest. The seed's net knows that in its features; this small head
learns to use them. It sees, on the net's 1/8 grid,
the frozen net's features after the decoder's first conv, the net's own a*b*, the hints
(their a*b*, their difference from the net's, a mask) and L*, and predicts the corrected a*b*
there. Dilated convolutions reach across the picture; each block also hears the features
pooled over the hint cells, and every second one looks the hinted cells up by likeness and
distance (`Lookup`): the coat's hint goes to the parts that look like the coat, not to the
picture's mean. The engine upsamples its correction onto the net's grid; the
propagation takes it where the hints reach along edges (a strong edge still stops a hint) and
then pins each hint.

The shipped head also has a branch of its own (`branch`): a copy of the net's last trunk stage
and decoder conv, trained with the hints from the net's layer1 output, so that the features it
reads are tuned to what goes with what; the automatic colour is still the frozen net's.

Trained by model/train_hinthead.py with the net frozen. The head belongs to the net it was
trained on: the engine uses it only under that net (its sha256 is in the head's meta).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.client.state import HINT_HEAD
from pipeline.worker.hints import (
    HINT_AB_SCALE as S,  # a*, b* / S: about [-1, 1], as the hint planes
)

GRID = 8  # the head works on the net's 1/8 grid, where the trunk's features are
FEATURES = 128  # channels of the net's decoder's first conv
# The head's colour is taken whole, with any number of hints: the head that looks its hints up
# scores higher whole than blended with the net's at every count (jobs/probe_hint_blend.py, 60
# validation photos, PSNR over gray at 1/3/10/30 points: whole +0.99/+1.94/+2.82/+4.13 dB,
# K / (K + N) of it for K = 10 +0.99/+1.90/+2.67/+3.91, K = 5 +0.98/+1.84/+2.60/+3.92, none
# +0.82/+1.51/+2.52/+3.93). The first head, without the lookup, lost to the edges' pins at 30.


class HintHead(nn.Module):
    """attend: every second block also looks up the hint cells by feature likeness and
    distance (attention over the hinted cells, plus a learned "none of them" that lets a cell take
    nothing): which distant parts share the hinted coat's colour, rather than the hints' mean."""

    def __init__(self, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1, 2, 4),
                 attend: bool = False, heads: int = 4, branch: bool = False):
        super().__init__()
        self.inp = nn.Conv2d(FEATURES + 8, width, 1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.pooled = nn.ModuleList(nn.Linear(2 * width, width) for _ in dilations)
        self.att = nn.ModuleList(Lookup(width, heads) for _ in dilations[1::2]) if attend else None
        self.out = nn.Conv2d(width, 2, 1)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)  # untrained: no change
        # branch: its own copy of the net's last trunk stage and the decoder's first conv, trained
        # with the hints (from the net's layer1 output): features for what goes with what rather
        # than for the automatic colour. The automatic colour stays the net's own.
        self.branch = nn.Sequential(_resnet_layer2(), nn.Sequential(
            nn.Conv2d(128, FEATURES, 3, padding=1), nn.BatchNorm2d(FEATURES), nn.ReLU())) if branch else None

    @classmethod
    def from_arch(cls, arch: dict | None) -> HintHead:
        """The head arch() describes (as saved in JSON or a checkpoint); none: the first head's."""
        return cls(**{**arch, "dilations": tuple(arch["dilations"])}) if arch else cls()

    def arch(self) -> dict:
        return {"width": self.inp.out_channels, "dilations": [c.dilation[0] for c in self.blocks],
                "attend": self.att is not None, "heads": self.att[0].heads if self.att else 4,
                "branch": self.branch is not None}

    def train(self, mode: bool = True) -> HintHead:
        super().train(mode)
        if self.branch is not None:
            self.branch.eval()  # its BatchNorm keeps the net's statistics: no batch's own
        return self

    def own_features(self, low: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The branch's features from the net's padded layer1 output, cropped to the h x w grid."""
        y = self.branch(low.float())
        t, le = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        return y[:, :, t:t + h, le:le + w]

    def forward(self, f, ab, hint_ab, mask, L):
        """All on the 1/8 grid: f (B, 128), ab and hint_ab (B, 2) a*b* / S, mask (B, 1), L (B, 1)
        L*/100 -> (B, 2) corrected a*b* / S."""
        diff = (hint_ab - ab) * mask
        x = F.relu(self.inp(torch.cat([f, ab, hint_ab, diff, mask, L], 1)))
        msum = mask.sum((2, 3)).clamp(min=1.0)
        for i, (conv, lin) in enumerate(zip(self.blocks, self.pooled, strict=True)):
            g = torch.cat([x.mean((2, 3)), (x * mask).sum((2, 3)) / msum], 1)
            x = x + F.relu(conv(x) + lin(g)[:, :, None, None])
            if self.att is not None and i % 2 == 1:
                x = x + self.att[i // 2](x, mask)
        return ab + self.out(x)


def _resnet_layer2() -> nn.Sequential:
    """ResNet-18's layer2 as torchvision builds it (the same state_dict keys), without building
    (and initialising) the whole ResNet each time a head is loaded."""
    from pipeline.model.net import resnet_layer

    return resnet_layer(64, 128, 2)


class Lookup(nn.Module):
    """Attention from every cell to the hinted cells (keys and values there), scored by feature
    likeness less a learned per-head cost of distance; a learned sink key with a zero value is
    always there, so with no hint (or none alike) a cell takes nothing."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.d = heads, width // heads
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.sink = nn.Parameter(torch.zeros(heads, self.d))
        self.reach = nn.Parameter(torch.zeros(heads))
        self.proj = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.proj.weight), nn.init.zeros_(self.proj.bias)

    def forward(self, x, mask):
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.heads, self.d, H * W).unbind(1)
        m = mask.view(B, H * W)
        n = max(1, int(m.sum(1).max()))
        on, at = m.topk(n, 1)  # the hinted cells first: keys and values only there
        k, v = (t.gather(3, at[:, None, None].expand(-1, self.heads, self.d, -1)) for t in (k, v))
        s = torch.einsum("bhdi,bhdj->bhij", q, k) / self.d ** 0.5
        ys, xs = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
        dist = torch.cdist(pos[None].expand(B, -1, -1), pos[at]) / max(H, W)  # (B, HW, n)
        s = s - F.softplus(self.reach)[None, :, None, None] * 4.0 * dist[:, None]
        s = s.masked_fill(on[:, None, None] == 0, float("-inf"))
        sink = torch.einsum("bhdi,hd->bhi", q, self.sink)[..., None] / self.d ** 0.5
        a = torch.softmax(torch.cat([s, sink], -1), -1)[..., :-1]
        out = torch.einsum("bhij,bhdj->bhdi", a, v).reshape(B, C, H, W)
        return self.proj(out)


def coarse_planes(cells: list[tuple[int, int, float, float]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hint cells of the net's size x size grid -> (1, 2, g, g) a*b* / S and (1, 1, g, g) mask on
    the 1/8 grid; two hints in one coarse cell give it their mean."""
    g = size // GRID
    ab, n = torch.zeros(1, 2, g, g), torch.zeros(1, 1, g, g)
    for r, c, a, b in cells:
        ab[0, :, r // GRID, c // GRID] += torch.tensor([a, b]) / S
        n[0, 0, r // GRID, c // GRID] += 1.0
    return ab / n.clamp(min=1.0), (n > 0).float()


def correction(head: HintHead, f: torch.Tensor, ab: torch.Tensor, L: torch.Tensor,
               cells: list[tuple[int, int, float, float]], low: torch.Tensor | None = None) -> torch.Tensor:
    """One image: f (1, 128, s/8, s/8) the net's features, ab (2, s, s) its a*b*, L (s, s) L*,
    low the net's layer1 output (net_parts; read by a head with a branch) -> the head's change
    to ab, (2, s, s), upsampled from the 1/8 grid."""
    if head.branch is not None:
        f = head.own_features(low, *f.shape[-2:])
    hab, mask = (t.to(ab.device) for t in coarse_planes(cells, ab.shape[-1]))
    ab8 = F.avg_pool2d(ab[None].float(), GRID) / S
    L8 = F.avg_pool2d(L[None, None].float(), GRID) / 100.0
    pred = head(f.float(), ab8, hab, mask, L8)
    return F.interpolate((pred - ab8) * S, scale_factor=GRID, mode="bilinear")[0]


def load_head(net_sha256: str, path: str | os.PathLike = HINT_HEAD, device="cpu") -> HintHead | None:
    """The shipped head, or None where it is missing or was trained under another net (its
    features would be another net's)."""
    p = Path(path)
    if not p.is_file():
        return None
    data = p.read_bytes()  # once: the sha256 a hinted row records is of the weights loaded
    payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    if payload.get("meta", {}).get("net_sha256") != net_sha256:
        return None
    head = HintHead.from_arch(payload.get("meta", {}).get("arch"))
    head.load_state_dict(payload["state_dict"])
    head.sha256 = hashlib.sha256(data).hexdigest()  # what a hinted row says made it
    return head.to(device).eval()


@torch.inference_mode()
def net_parts(model, L8, gain: float, grays: torch.Tensor, pad: int):
    """(B, s, s) uint8 gray -> the net's features (B, 128, s/8, s/8), a*b* (B, 2, s, s), as the
    engine computes them (reflect-padded input, chroma gain), and its trunk's layer1 output on
    the padded 1/4 grid (B, 64, (s + 2 pad)/4, ...), from which a head with its own branch reads."""
    from pipeline.worker import color

    x = F.pad((L8[grays.long()] / 100.0)[:, None], (pad,) * 4, mode="reflect")
    low = model.trunk[:5](x)
    f = model.layer2(model.trunk[5](low))
    y = model.decode(f)
    s, c = grays.shape[-1], pad // GRID
    return f[:, :, c:c + s // GRID, c:c + s // GRID], color.decode_ab(y[:, :, pad:pad + s, pad:pad + s]) * gain, low
