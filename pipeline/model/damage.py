"""Physical damage of old prints and negatives, drawn onto a batch of L*/100 inputs (issue 23,
item 2): what `train.degrade` does not make (it fades, curves, softens and adds grain).

An archive's scans carry scratches in the emulsion (thin, long, often near-vertical on film,
any way on a print), dust and specks, foxing (rust-brown spots: darker blotches in the
lightness), vignetting of an old lens, and uneven exposure or toning across the sheet. The net
sees them only in the lightness, and the target stays the photo's clean colour: it should learn
that a white line across a coat is no reason to change the coat's colour.

Everything is drawn on the batch's own device from one generator, so the GPU trainer damages a
batch where it lies and a seed gives the same damage on resume.
"""

from __future__ import annotations

import math

import torch

SCRATCHES = 4  # most per sample; each is kept with probability 1/2
SPECKS = 24
BLOTCHES = 3


def damage(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """x: (B, 1, H, W) L*/100. Each kind of damage befalls a sample with probability p."""
    if p <= 0:
        return x
    B, _, H, W = x.shape
    dev, dt = x.device, x.dtype

    def pick() -> torch.Tensor:
        return (torch.rand(B, 1, 1, 1, generator=g, device=dev) < p).to(dt)

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, *shape, generator=g, dtype=dt, device=dev)

    yy = torch.linspace(-1.0, 1.0, H, dtype=dt, device=dev).view(1, 1, H, 1)
    xx = torch.linspace(-1.0, 1.0, W, dtype=dt, device=dev).view(1, 1, 1, W)
    px = 2.0 / max(H, W)  # one pixel in these coordinates

    m = pick()  # vignetting: corners darker by up to a third
    x = x * (1 - m * u(0.05, 0.35, 1, 1, 1) * (xx**2 + yy**2) / 2)
    m = pick()  # uneven exposure or toning across the sheet: a gentle ramp
    ang = u(0, 2 * math.pi, 1, 1, 1)
    x = x + m * u(-0.08, 0.08, 1, 1, 1) * (torch.cos(ang) * xx + torch.sin(ang) * yy)
    m = pick()  # foxing and stains: soft darker blotches
    for _ in range(BLOTCHES):
        cy, cx, r = u(-1, 1, 1, 1, 1), u(-1, 1, 1, 1, 1), u(0.04, 0.2, 1, 1, 1)
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        x = x - m * u(0.0, 0.15, 1, 1, 1) * blob
    x = _lines(x, pick(), u, yy, xx, px, dev)
    m = pick()  # dust and specks: tiny dots, white (on the negative) or black (on the print)
    for _ in range(SPECKS):
        cy, cx, r = u(-1, 1, 1, 1, 1), u(-1, 1, 1, 1, 1), u(0.6, 2.0, 1, 1, 1) * px
        dot = (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2).to(dt) * (u(0, 1, 1, 1, 1) < 0.5).to(dt)
        x = torch.lerp(x, (u(0, 1, 1, 1, 1) < 0.6).to(dt), m * dot)
    return x.clamp(0.0, 1.0)


def _lines(x, m, u, yy, xx, px, dev):
    """Scratches: straight lines 1-2 px wide across part or all of the picture, mostly
    near-vertical (film running through a camera or projector), light or dark."""
    dt = x.dtype
    for _ in range(SCRATCHES):
        vertical = (u(0, 1, 1, 1, 1) < 0.6).to(dt)
        ang = vertical * u(-0.08, 0.08, 1, 1, 1) + (1 - vertical) * u(-math.pi / 2, math.pi / 2, 1, 1, 1)
        cy, cx = u(-1, 1, 1, 1, 1), u(-1, 1, 1, 1, 1)
        across = torch.cos(ang) * (xx - cx) - torch.sin(ang) * (yy - cy)  # distance from the line
        along = torch.sin(ang) * (xx - cx) + torch.cos(ang) * (yy - cy)
        half = u(0.3, 1.0, 1, 1, 1) * px
        length = u(0.3, 2.0, 1, 1, 1)
        line = ((across.abs() < half) & (along.abs() < length)).to(dt)
        on = (u(0, 1, 1, 1, 1) < 0.5).to(dt)
        tone = (u(0, 1, 1, 1, 1) < 0.7).to(dt)  # most scratches lift the emulsion: light
        x = torch.lerp(x, tone, m * on * line * u(0.5, 1.0, 1, 1, 1))
    return x
