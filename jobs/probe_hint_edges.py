"""Probe (issue 25): does one hint stay on its side of an edge as a scan has it, and what does
stopping it cost the simulated points? Three synthetic scenes, each with one red hint on a coat:
a hard edge drawn at the source's 512 px (one step of 34 L*, antialiased on the net's grid), a
soft one (a 22 L* step blurred as a scan is: session 20's trial), and a straight edge on the net's
grid itself (the test's). For each, how far the colour beyond the edge moved (mean |a*b*| change
against the net's own) and how much of the hint's chroma the coat took. Then, with --eval SRC,
`colorize evaluate SRC --hints 1,3,10` under the same settings.

    python -m jobs.probe_hint_edges --span 0,1.0,1.25,1.5 [--eval data/kphotoalbum]

(Session 21 also tried giving the whole picture a share n / (n + K) of the hints' fitted gain and
offset beyond their reach: it won back the points' PSNR, and the leak with it (3.7-19 units at
K = 3); the gain alone won nothing back.)
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageFilter

from pipeline.worker import hints


def scenes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (gray uint8 at 512, coat mask at 512)."""
    yy, xx = np.mgrid[:512, :512]
    coat = (abs(xx - 256) < 110) & (yy > 150) & (yy < 470)
    out = {}
    g = np.full((512, 512), 180, np.uint8)
    g[coat] = 90
    out["hard edge (34 L*)"] = (g, coat)
    g = np.full((512, 512), 127, np.uint8)
    g[coat] = 73
    g = np.asarray(Image.fromarray(g).filter(ImageFilter.GaussianBlur(2.0)))
    out["soft edge (22 L*, blurred)"] = (g, coat)
    g = np.full((512, 512), 190, np.uint8)
    half = xx >= 256
    g[half] = 60
    out["straight edge on the grid"] = (g, half)
    return out


def leak(net, g: np.ndarray, coat: np.ndarray, colour: str = "#b02020") -> tuple[float, float]:
    """(mean |a*b*| change beyond the edge, coat's mean chroma / the hint's)."""
    a, b = hints.hex_to_ab(colour)
    ys, xs = np.nonzero(coat)
    cy, cx = int(ys.mean()), int(xs.mean())
    small = np.array(Image.fromarray(g).resize((256, 256), Image.BILINEAR))
    cells = hints.on_grid([hints.Hint(cx, cy, a, b)], 512, 512, 256)
    ab = net.hinted_ab(small, cells).numpy()
    base = net.predict_ab([small])[0].numpy()
    inside = np.asarray(Image.fromarray(coat.astype(np.uint8) * 255).resize((256, 256))) > 200
    outside = np.asarray(Image.fromarray((~coat).astype(np.uint8) * 255).resize((256, 256))) > 200
    # a ring of 3 cells at the edge is the edge's own: judged beyond it
    from scipy.ndimage import binary_erosion

    far = binary_erosion(outside, iterations=3)
    moved = float(np.hypot(*(ab - base)[:, far]).mean())
    took = float(np.hypot(ab[0][inside].mean(), ab[1][inside].mean()) / np.hypot(a, b))
    return moved, took


def main() -> None:
    from pipeline.worker.engine import Colorizer

    p = argparse.ArgumentParser()
    p.add_argument("--span", default="0")
    p.add_argument("--eval", default=None)
    p.add_argument("--hints", default="1,3,10")
    a = p.parse_args()
    net = Colorizer(None, device="cpu", size=256)
    for span in map(float, a.span.split(",")):
        hints.SPAN = span
        said = "; ".join(f"{name}: beyond {m:.1f}, coat {100 * t:.0f} %"
                         for name, (g, c) in scenes().items() for m, t in [leak(net, g, c)])
        print(f"span {span}: {said}", flush=True)
        if a.eval:
            from pipeline.model.evaluate import evaluate

            counts = tuple(int(x) for x in a.hints.split(","))
            r = evaluate(None, a.eval, f"out/probe-edges/{span}", hints=counts, log=lambda m: None)
            over = [r[f"hints_{n}"]["psnr"] - r["gray"]["psnr"] for n in counts]
            print(f"  {a.eval}: PSNR over gray at {a.hints} points: "
                  + " / ".join(f"{x:+.2f}" for x in over), flush=True)


if __name__ == "__main__":
    main()
