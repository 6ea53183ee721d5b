"""A curator's colour hints: "this coat was red" as points on the source image, and how they
become colour (issue 25). Torch-free, so the client (review server, journal, export) and the
worker share one reading of a hint.

A hint is a point in the source image's pixels and a colour whose a*, b* are meant there; the
lightness stays the scan's. It reaches the colour twice:
1. the hint-conditioned net (model/net.py, in_channels 4) sees it as input planes (`planes`):
   a*, b* / HINT_AB_SCALE and a mask, over a small patch at the net's grid;
2. the net's a*b* is corrected as a whole first (`global_fit`: one chroma gain and an a*b*
   offset fitted to the hints, each pulled toward "no change"): the net's colour is mostly too
   gray or cast, and a hint says by how much for the whole picture;
3. then pinned to each hint by propagating the remaining difference through an edge-aware
   affinity on the net's grid (`propagate`: Levin, Lischinski, Weiss 2004): near a hint the
   colour is the curator's, across a strong edge it stays the (corrected) net's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

import numpy as np

HINT_AB_SCALE = 110.0  # a*, b* of the hint planes are divided by this: about [-1, 1]
# A hint covers PATCH x PATCH cells of the net's grid (training draws 1..5; 5 cells are ~10 px of
# a 512-px photo): on kphotoalbum 5 scored +0.04 / +0.12 dB over 3 at 3 / 10 points, 1 cell less.
PATCH = 5
# Away from the hints the propagated difference decays back to the net's own colour: one point
# recolours its region, not the whole picture (probe_hints.py: unscreened, one point cost 0.5 dB).
# With the global correction and the capped variance, 3e-6 scored best of 1e-6..3e-5 (+2.25 /
# +4.02 dB at 3 / 10 points on kphotoalbum, against +2.18 / +3.76 at 1e-5).
SCREEN = 3e-6
# Levin's weight across neighbours is exp(-dL^2 / 2 var), var the local variance of L; at an edge
# that variance is large and the weight across it with it, so a region with no hint of its own
# took a neighbour's hint through a strong edge whole. Capping var (sigma <= 5 L*) shuts a strong
# edge (a 50 L* step: e^-50) and scored higher on kphotoalbum (3 points +2.06 dB, 10 +3.33).
VAR_CAP = 25.0
# global_fit's pulls toward no change: the gain's, in units of the hints' own squared chroma, and
# the offset's, in hints. Chosen on kphotoalbum's 23 photos (3 and 10 simulated points): with them
# +2.36 / +3.93 dB over gray against +2.06 / +3.33 for propagation alone; from 2 to 8 and 3 to 30
# the figures move by under 0.1 dB.
# A link's step is also the step across the two pixels beside it, over SPAN: an edge squeezed onto
# the net's grid is two or three steps of a third of its height each, and a gray ring between
# two regions let one hint through whole (a red coat reddened its wall by 46 a*b* units behind a
# blurred 22 L* edge, 6 behind a sharp 34 L* one; jobs/probe_hint_edges.py). 1.5 shuts both (4
# and 0.2 units) at kphotoalbum's simulated points' cost of 0.15-0.24 dB (+2.80 / +4.81 at 3 / 10
# points against +3.04 / +4.96: random points reward colour that leaks, since most regions of a
# photo share their neighbours'); 1.0 shut them further (0.9) at twice the cost. 0: off.
SPAN = 1.5
GAIN_PULL = 4.0
OFFSET_PULL = 3.0
SAMPLE = 5  # a simulated hint's colour: the true a*b* averaged over SAMPLE x SAMPLE source pixels


class HintError(ValueError):
    """A hint the user wrote that cannot be read: a one-line message."""


@dataclass(frozen=True)
class Hint:
    x: float  # source pixels, from the left
    y: float  # source pixels, from the top
    a: float  # CIE a*
    b: float  # CIE b*

    def key(self) -> tuple:
        return (round(self.x, 2), round(self.y, 2), round(self.a, 2), round(self.b, 2))


def hex_to_ab(colour: str) -> tuple[float, float]:
    """'#rrggbb' -> its a*, b* (sRGB, D65)."""
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", colour.strip())
    if not m:
        raise HintError(f"colour {colour!r} is not #rrggbb")
    from skimage.color import rgb2lab

    rgb = np.array([[[int(m[1][i:i + 2], 16) / 255 for i in (0, 2, 4)]]])
    lab = rgb2lab(rgb)[0, 0]
    return float(lab[1]), float(lab[2])


def parse(text: str) -> Hint:
    """`--hint X,Y,#rrggbb` -> a Hint."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise HintError(f"--hint {text!r}: expected X,Y,#rrggbb")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise HintError(f"--hint {text!r}: X and Y must be numbers (source pixels)") from None
    return Hint(x, y, *hex_to_ab(parts[2]))


def from_json(obj) -> list[Hint]:
    """A hints file: a list of {"x", "y", and "color": "#rrggbb" or "a", "b"} (or {"hints": [...]},
    as the review journal writes them)."""
    if isinstance(obj, dict):
        obj = obj.get("hints")
    if not isinstance(obj, list):
        raise HintError("a hints file holds a list of {x, y, color} (or {\"hints\": [...]})")
    out = []
    for i, h in enumerate(obj):
        if not isinstance(h, dict) or not {"x", "y"} <= h.keys() or not ("color" in h or {"a", "b"} <= h.keys()):
            raise HintError(f"hint {i + 1}: needs x, y and a color \"#rrggbb\" (or a, b), got {h!r}")
        try:
            if "color" in h:
                a, b = hex_to_ab(h["color"])
            else:
                a, b = float(h["a"]), float(h["b"])
            hint = Hint(float(h["x"]), float(h["y"]), a, b)
        except (TypeError, ValueError) as e:
            raise HintError(f"hint {i + 1}: {e}") from None
        if not all(map(math.isfinite, (hint.x, hint.y, hint.a, hint.b))):  # NaN passes float()
            raise HintError(f"hint {i + 1}: x, y, a, b must be finite numbers, got {h!r}")
        out.append(hint)
    return out


def inside(h: Hint, width: int, height: int) -> bool:
    return 0 <= h.x < width and 0 <= h.y < height


def outside(hints: list[Hint], width: int, height: int) -> list[str]:
    """'x,y' of each hint that falls outside a width x height image (hints are in its pixels)."""
    return [f"{h.x:g},{h.y:g}" for h in hints if not inside(h, width, height)]


def to_json(hints: list[Hint]) -> list[dict]:
    return [dict(x=h.x, y=h.y, a=h.a, b=h.b) for h in hints]


def digest(hints: list[Hint]) -> str | None:
    """What a hinted output was made from: the same hints in any order, the same digest."""
    if not hints:
        return None
    return hashlib.sha256(json.dumps(sorted(h.key() for h in hints)).encode()).hexdigest()[:16]


def digest_of(stored: list | None) -> str | None:
    """digest() of hints as stored (JSON: a redo's options, the review journal)."""
    return digest(from_json(stored or []))


def made_with(digest: str, model: str | None = None) -> str:
    """How a hinted output's own metadata names what made it: the hints' digest and the hint
    model (a file's sha256, or "propagation"); audit looks for exactly this."""
    if not model:  # outputs written before the hint model was recorded
        return f"(digest {digest})"
    return f"(digest {digest}; hint model {model if model == 'propagation' else 'sha256 ' + model})"


def on_grid(hints: list[Hint], width: int, height: int, size: int) -> list[tuple[int, int, float, float]]:
    """Hints in source pixels -> (row, col, a, b) cells of the net's size x size grid (the net sees
    the whole image squeezed to a square). Points outside the image are dropped."""
    out = []
    for h in hints:
        if not inside(h, width, height):
            continue
        r = min(size - 1, int(h.y * size / height))
        c = min(size - 1, int(h.x * size / width))
        out.append((r, c, h.a, h.b))
    return out


def planes(cells: list[tuple[int, int, float, float]], size: int, patch: int = PATCH) -> np.ndarray:
    """The hint-conditioned net's extra input: (3, size, size) float32 a*/S, b*/S and mask."""
    p = np.zeros((3, size, size), np.float32)
    lo = patch // 2
    for r, c, a, b in cells:
        r0, c0 = max(0, r - lo), max(0, c - lo)
        r1, c1 = min(size, r - lo + patch), min(size, c - lo + patch)
        p[0, r0:r1, c0:c1] = a / HINT_AB_SCALE
        p[1, r0:r1, c0:c1] = b / HINT_AB_SCALE
        p[2, r0:r1, c0:c1] = 1.0
    return p


def affinity_system(L: np.ndarray, fixed: np.ndarray, screen: float = SCREEN, var_cap: float = VAR_CAP,
                    span: float | None = None):
    """Levin et al.'s system on L (H, W) in [0, 100]: rows of fixed cells are the identity, the
    others (1 + screen) I - W, W the row-normalised 3 x 3 affinities exp(-dL^2 / 2 var), var the
    local variance of L within [2, var_cap], dL the larger of the step and the step over three
    pixels / span (SPAN unless given; 0: the step alone)."""
    span = SPAN if span is None else span
    import scipy.sparse as sp

    H, W = L.shape
    n = H * W
    idx = np.arange(n).reshape(H, W)
    pad = np.pad(L, 2, mode="edge")
    nb = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

    def at(k: int, dy: int, dx: int) -> np.ndarray:  # L k steps along (dy, dx), edge-padded
        return pad[2 + k * dy:2 + k * dy + H, 2 + k * dx:2 + k * dx + W]

    win = np.stack([at(1, dy, dx) for dy, dx in nb])
    var = np.clip(np.var(np.concatenate([win, L[None]]), axis=0) * 0.6, 2.0, var_cap)
    step = np.abs(win - L[None])
    if span:  # the step from the pixel behind to the one beyond: symmetric, so the link is too
        step = np.maximum(step, np.stack([np.abs(at(2, dy, dx) - at(-1, dy, dx)) for dy, dx in nb]) / span)
    w = np.exp(-(step ** 2) / (2 * var[None]))
    ys, xs = np.mgrid[0:H, 0:W]
    rows, cols, vals = [], [], []
    for k, (dy, dx) in enumerate(nb):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        rows.append(idx[ok]), cols.append(idx[yy[ok], xx[ok]]), vals.append(w[k][ok])
    Wm = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(n, n))
    Wm = sp.diags(1.0 / np.asarray(Wm.sum(1)).ravel()) @ Wm
    free = (~fixed.ravel()).astype(float)
    return (sp.identity(n) + sp.diags(screen * free) - sp.diags(free) @ Wm).tocsc()


def global_fit(ab: np.ndarray, cells: list[tuple[int, int, float, float]]) -> np.ndarray:
    """ab * g + o: the gain g and offset o (a*, b*) that bring the net's colour at the hints
    closest to theirs, ridge-pulled toward g = 1, o = 0 (one hint cannot recolour a picture)."""
    P = np.array([ab[:, r, c] for r, c, _, _ in cells], np.float64)
    T = np.array([(a, b) for _, _, a, b in cells], np.float64)
    n, sP = len(cells), float((P * P).sum())
    pull = GAIN_PULL * max(sP / n, 1.0)  # a gray net colour at the hints: the gain stays near 1
    g, o = 1.0, np.zeros(2)
    for _ in range(20):  # alternating least squares: g given o, o given g
        g = (float(((T - o) * P).sum()) + pull) / (sP + pull)
        o = (T - g * P).sum(0) / (n + OFFSET_PULL)
    return (ab * g + o[:, None, None]).astype(np.float32)


def propagate(L: np.ndarray, ab: np.ndarray, cells: list[tuple[int, int, float, float]],
              screen: float = SCREEN, toward: np.ndarray | None = None) -> np.ndarray:
    """ab (2, H, W) a*b* on the net's grid, L (H, W) its lightness: corrected as a whole
    (global_fit) where the hints reach along edges, then pinned to each hint cell, the rest of
    the difference spread along edges. toward: a better guess of the colour with these hints
    (the hint head's), fitted and taken in place of ab where they reach. No hints: ab unchanged."""
    if not cells:
        return ab
    import scipy.sparse.linalg as spla

    H, W = L.shape
    fixed = np.zeros(L.shape, bool)
    lo = PATCH // 2
    for r, c, _, _ in cells:
        fixed[max(0, r - lo):min(H, r - lo + PATCH), max(0, c - lo):min(W, c - lo + PATCH)] = True
    lu = spla.splu(affinity_system(L.astype(np.float64), fixed, screen))
    # where the hints reach: 1 at them, fading along edges (the same system, a third right side)
    reach = np.clip(lu.solve(fixed.ravel().astype(np.float64)).reshape(H, W), 0.0, 1.0)
    # across a strong edge: the net's own colour
    ab = ab + reach * (global_fit(ab if toward is None else toward, cells) - ab)
    rhs = np.zeros((2,) + L.shape)
    for r, c, a, b in cells:  # the hint's colour over its patch, as the net saw it
        r0, r1, c0, c1 = max(0, r - lo), min(H, r - lo + PATCH), max(0, c - lo), min(W, c - lo + PATCH)
        rhs[0, r0:r1, c0:c1] = a - ab[0, r0:r1, c0:c1]
        rhs[1, r0:r1, c0:c1] = b - ab[1, r0:r1, c0:c1]
    out = ab.astype(np.float64)
    for ch in range(2):
        out[ch] += lu.solve(rhs[ch].ravel()).reshape(L.shape)
    return out.astype(np.float32)


def simulate(lab: np.ndarray, n: int, rng: np.random.Generator) -> list[Hint]:
    """n seeded points on a true-colour image (H, W, 3 Lab, source pixels), each with the true
    a*b* averaged over SAMPLE x SAMPLE pixels: how `evaluate --hints N` plays the curator."""
    H, W = lab.shape[:2]
    h = SAMPLE // 2
    ys, xs = rng.integers(h, H - h, n), rng.integers(h, W - h, n)
    out = []
    for y, x in zip(ys, xs, strict=True):
        a, b = lab[y - h:y + h + 1, x - h:x + h + 1, 1:].reshape(-1, 2).mean(0)
        out.append(Hint(float(x) + 0.5, float(y) + 0.5, float(a), float(b)))
    return out
