"""The review server's memory and time when a grid asks for every thumbnail of big masters at
once (BENCHMARKS.md, 2026-12-02 session 22): python jobs/probe_review_memory.py CODE_ROOT OUTDIR,
where CODE_ROOT is a checkout (a worktree of an older commit compares) and OUTDIR a run over big
scans. Prints the wall time of all thumbnails and the server's peak RSS (its previewer included)."""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import psutil


def main(code_root: str, outdir: str) -> None:
    env = {**os.environ, "PYTHONPATH": code_root}
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "review", outdir, "--no-browser"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=code_root)
    url = re.search(r"(http://\S+)", p.stdout.readline()).group(1)
    base, tok = url.split("/?t=")
    rows = json.loads(urllib.request.urlopen(f"{base}/api/images?t={tok}").read())["rows"]
    peak, stop = [0], threading.Event()

    def watch():  # the server and its preview process, every 50 ms
        proc = psutil.Process(p.pid)
        while not stop.is_set():
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def get(iid: str, which: str) -> None:
        urllib.request.urlopen(f"{base}/img/{iid}/{which}?w=240&t={tok}").read()

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.time()
    asks = [threading.Thread(target=get, args=(r["image_id"], w)) for r in rows for w in ("source", "output")]
    for t in asks:
        t.start()
    for t in asks:
        t.join()
    took = time.time() - t0
    stop.set()
    p.terminate()
    p.wait()
    print(f"{code_root}: {len(asks)} thumbnails at once in {took:.1f} s, server peak RSS {peak[0] / 1e9:.2f} GB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
