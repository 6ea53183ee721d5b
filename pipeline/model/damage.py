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
    # pixel units for what is a pixel or two wide: the lines and specks are drawn with their
    # coverage of each pixel, so a thin one is never lost between two pixel centres
    py = torch.arange(H, dtype=dt, device=dev).view(1, 1, H, 1)
    px = torch.arange(W, dtype=dt, device=dev).view(1, 1, 1, W)

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
    x = _lines(x, pick(), u, py, px)
    m = pick()  # dust and specks: tiny dots, white (on the negative) or black (on the print)
    for _ in range(SPECKS):
        cy, cx, r = u(0, H - 1, 1, 1, 1), u(0, W - 1, 1, 1, 1), u(0.6, 2.0, 1, 1, 1)
        cover = (r + 0.5 - torch.sqrt((py - cy) ** 2 + (px - cx) ** 2)).clamp(0.0, 1.0)
        dot = cover * (u(0, 1, 1, 1, 1) < 0.5).to(dt)
        x = torch.lerp(x, (u(0, 1, 1, 1, 1) < 0.6).to(dt).expand_as(x), m * dot)
    return x.clamp(0.0, 1.0)


def _lines(x, m, u, py, px):
    """Scratches: straight lines 1-2 px wide across part or all of the picture, mostly
    near-vertical (film running through a camera or projector), light or dark; py, px: pixel
    coordinates."""
    dt = x.dtype
    H, W = x.shape[-2:]
    for _ in range(SCRATCHES):
        vertical = (u(0, 1, 1, 1, 1) < 0.6).to(dt)
        ang = vertical * u(-0.08, 0.08, 1, 1, 1) + (1 - vertical) * u(-math.pi / 2, math.pi / 2, 1, 1, 1)
        cy, cx = u(0, H - 1, 1, 1, 1), u(0, W - 1, 1, 1, 1)
        across = torch.cos(ang) * (px - cx) - torch.sin(ang) * (py - cy)  # pixels from the line
        along = torch.sin(ang) * (px - cx) + torch.cos(ang) * (py - cy)
        half = u(0.5, 1.0, 1, 1, 1)  # half the width: 1-2 px
        length = u(0.15, 1.0, 1, 1, 1) * max(H, W)
        line = (half + 0.5 - across.abs()).clamp(0.0, 1.0) * (along.abs() < length).to(dt)
        on = (u(0, 1, 1, 1, 1) < 0.5).to(dt)
        tone = (u(0, 1, 1, 1, 1) < 0.7).to(dt).expand_as(x)  # most scratches lift the emulsion: light
        x = torch.lerp(x, tone, m * on * line * u(0.5, 1.0, 1, 1, 1))
    return x
