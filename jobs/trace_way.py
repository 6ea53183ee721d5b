"""How many modules one image's way passes, and how often it climbs back (issue 21).

Runs `colorize run` on a one-image manifest with every process profiled (jobs/trace/
sitecustomize.py), keeps the dask worker's calls (the process that ran the shard: manifest row
-> read -> decode -> net -> colour -> encode -> write -> commit), drops module-level code, and
reads the sequence of modules called. "Modules passed": how many distinct modules of the package
it calls. "Climbs back": how many times it calls again into a module it had already left (a
later stage reaching back into an earlier one, or into the client's planning code).

usage: python -m jobs.trace_way [CHECKOUT]   (default: this one; e.g. a worktree of an old commit)

The first of two one-image shards loads the net; the second's calls are the image's way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def trace(checkout: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="colorize-trace-") as tmp:
        t = Path(tmp)
        (t / "scans").mkdir()
        rng = np.random.default_rng(21)
        for name in ("a.png", "b.png"):  # two shards of one: the second's way is the image's alone
            Image.fromarray(rng.integers(30, 220, (240, 320), dtype=np.uint8)).save(t / "scans" / name)
        env = dict(os.environ, PYTHONPATH=f"{HERE / 'trace'}:{checkout}",
                   COLORIZE_TRACE=str(t / "trace.txt"), COLORIZE_TRACE_ROOT=str(checkout))
        run = [sys.executable, "-m", "pipeline"]
        subprocess.run(run + ["scan", str(t / "scans"), "-o", str(t / "m.parquet"), "--shard-size", "1"], check=True,
                       capture_output=True, cwd=checkout, env=dict(env, COLORIZE_TRACE=""))
        subprocess.run(run + ["run", "--manifest", str(t / "m.parquet"), "-o", str(t / "out"),
                              "--workers", "1"], check=True, capture_output=True, cwd=checkout, env=env)
        lines = [ln.split() for ln in (t / "trace.txt").read_text().splitlines()]
    worker = {pid for pid, mod, _ in lines if mod.endswith("shard")}
    calls = [(mod, fn) for pid, mod, fn in lines if pid in worker]
    # from the second shard's start: loading the net and the worker's start-up are done then
    start = [i for i, (m, fn) in enumerate(calls) if m.endswith("shard") and fn == "__call__"][1]
    seq = [m for m, _ in calls]
    way = []
    for m in seq[start:]:
        if not way or way[-1] != m:
            way.append(m)
    return way


def main() -> None:
    checkout = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent).resolve()
    way = trace(checkout)
    seen, climbs = set(), 0
    for m in way:
        if m in seen:
            climbs += 1
        seen.add(m)
    print(f"{checkout}: the image's way passes {len(seen)} modules, climbs back {climbs} times "
          f"({len(way)} module changes)")
    print("modules:", ", ".join(sorted(seen)))


if __name__ == "__main__":
    main()
