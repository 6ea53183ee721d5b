"""Colour hints on top of the net's prediction: how much do N points help, and how fast? (issue 25)

Levin, Lischinski and Weiss (2004)'s edge-aware affinity propagates the *difference* between each
hint and the net's colour (so without hints the output is the net's): minimise
sum_r (U(r) - sum_s w_rs U(s))^2 over a 3 x 3 neighbourhood, w_rs ~ exp(-(L_r - L_s)^2 / 2 var_r),
U fixed at the hinted pixels. Simulated points as the issue says: seeded random places, the true
a*b* averaged over 5 x 5 px. At the net's 256 x 256 grid, scored as mean PSNR of a*b* over gray's
and ab-MSE against gray's, with two solvers timed: a direct sparse solve (SuperLU, one
factorisation for both channels) and algebraic multigrid (pyamg, smoothed aggregation, tol 1e-6;
`pip install pyamg`, not a dependency: it was the slower of the two here).

usage: python -m jobs.probe_hints CHECKPOINT COLLECTION|FOLDER [--limit 60] [--points 0,1,3,10,30]
       [--solver direct|amg]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla
from PIL import Image
from skimage.color import rgb2lab

from pipeline.model.evaluate import load_rgb
from pipeline.model.train import list_images
from pipeline.model.traindata import read_manifest
from pipeline.worker.engine import Colorizer
from pipeline.worker.hints import affinity_system
from pipeline.worker.imaging import luminance_gray, net_input

SIZE = 256


def propagate(L, P, points, solver: str, screen: float = 0.0) -> np.ndarray:
    """P (2, H, W) the net's a*b*; points [(y, x, a, b)]: returns the hinted a*b*."""
    if not points:
        return P
    fixed = np.zeros(L.shape, bool)
    rhs = np.zeros((2,) + L.shape)
    for y, x, a, b in points:
        fixed[y, x] = True
        rhs[:, y, x] = (a - P[0, y, x], b - P[1, y, x])
    A = affinity_system(L, fixed, screen, var_cap=1e9)  # as first measured: the variance uncapped
    out = P.copy()
    if solver == "amg":
        import pyamg

        ml = pyamg.smoothed_aggregation_solver(A, symmetry="nonsymmetric")
    else:
        lu = spla.splu(A.tocsc())
    for c in range(2):
        r = ml.solve(rhs[c].ravel(), tol=1e-6) if solver == "amg" else lu.solve(rhs[c].ravel())
        out[c] += r.reshape(L.shape)
    return out


def photos(src: str, limit: int) -> list[str]:
    if (Path(src) / "manifest.csv").is_file():
        return [r["path"] for r in read_manifest(Path(src), "eval")][:limit]
    return list_images(src)[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("src")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--points", default="0,1,3,10,30")
    ap.add_argument("--solver", choices=("direct", "amg"), default="direct")
    ap.add_argument("--screen", type=float, default=1e-5,
                    help="pull the difference back to the net's colour away from the hints")
    a = ap.parse_args()
    counts = [int(x) for x in a.points.split(",")]
    net = Colorizer(a.checkpoint, device="cpu", size=SIZE)
    rng = np.random.default_rng(25)
    gains = {n: [] for n in counts}
    err = {n: 0.0 for n in counts}
    gray_err, secs = 0.0, []
    for p in photos(a.src, a.limit):
        ref = load_rgb(p, 512)
        lab = rgb2lab(np.asarray(Image.fromarray(ref).resize((SIZE, SIZE), Image.BILINEAR)))
        L, T = lab[..., 0], lab[..., 1:].transpose(2, 0, 1)
        P = net.predict_ab(net_input(luminance_gray(ref), SIZE)[None])[0].numpy().astype(float)
        g = float((T ** 2).mean())
        gray_err += g
        for n in counts:
            ys, xs = rng.integers(2, SIZE - 2, n), rng.integers(2, SIZE - 2, n)
            pts = [(y, x, *T[:, y - 2:y + 3, x - 2:x + 3].mean((1, 2))) for y, x in zip(ys, xs, strict=True)]
            t0 = time.perf_counter()
            U = propagate(L, P, pts, a.solver, a.screen)
            if n:
                secs.append(time.perf_counter() - t0)
            e = float(((U - T) ** 2).mean())
            err[n] += e
            gains[n].append(10 * np.log10((g + 1e-6) / (e + 1e-6)))
    for n in counts:
        print(f"{n:3d} points: a*b* PSNR {np.mean(gains[n]):+.2f} dB over gray, "
              f"ab-MSE {err[n] / gray_err:.3f} x gray's")
    print(f"solver {a.solver}: {np.mean(secs):.2f} s per hinted image at {SIZE} x {SIZE} "
          f"(both channels), {len(gains[counts[0]])} photos")


if __name__ == "__main__":
    main()
