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

from pipeline.model.evaluate import hint_edge_scenes as scenes
from pipeline.model.evaluate import hint_leak as leak
from pipeline.worker import hints


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
