"""Benchmarks of the review page (issue 25): the first page of a big run's review, and the preview
of one hinted image, each timed through the real server (werkzeug on loopback, urllib)."""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def _synthetic_run(root: Path, rows: int, shard_size: int = 256, reviewed: int = 1000) -> Path:
    """An OUTDIR whose results hold `rows` images with a catalogue (accession, title, box), and a
    journal with `reviewed` verdicts and notes: what the page reads, without the images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.client import reviews
    from pipeline.client.catalogue import stored_name
    from pipeline.client.outdir import Outdir
    from pipeline.client.results import SCHEMA

    out = root / "out"
    (out / "results").mkdir(parents=True)
    man = root / "m.parquet"
    cols = ["accession", "path", "title", "box"]
    meta = {b"catalogue": json.dumps({"columns": cols, "path_column": "path"}).encode()}
    ids = [f"{i:016x}" for i in range(rows)]
    r = range(rows)
    cells = {stored_name("accession"): [f"INV-{i:07d}" for i in r],
             stored_name("path"): [f"box{i // 1000:04d}/scan{i:07d}.tif" for i in r],
             stored_name("title"): [f"Photograph {i}" for i in r],
             stored_name("box"): [f"box {i // 1000}" for i in r]}
    # the manifest holds the catalogue's cells too: the page shows them as they are now
    pq.write_table(pa.table({"image_id": ids, **cells}).replace_schema_metadata(meta), man)
    (out / "job.json").write_text(json.dumps({"spec": {"manifest": str(man), "checkpoint": None},
                                              "fingerprint": "bench"}))
    rng = np.random.default_rng(25)
    for s0 in range(0, rows, shard_size):
        n = min(shard_size, rows - s0)
        r = range(s0, s0 + n)
        data = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
        data.update(image_id=pa.array(ids[s0:s0 + n]), shard=pa.array([s0 // shard_size] * n),
                    source_path=pa.array([f"/archive/box{i // 1000:04d}/scan{i:07d}.tif" for i in r]),
                    output_path=pa.array([f"images/box{i // 1000:04d}/scan{i:07d}.tif" for i in r]),
                    status=pa.array(["ok" if i % 97 else "error" for i in r]),
                    colorfulness=pa.array(rng.uniform(0, 40, n)))
        carried = {k: v[s0:s0 + n] for k, v in cells.items()}
        t = pa.table({**data, **carried})
        pq.write_table(t, out / Outdir.shard_rel(s0 // shard_size))  # the name a run writes
    j = reviews.Journal(out, "bench")
    for i in range(0, min(rows, reviewed * 7), 7):
        j.record(ids[i], "verdict", "accepted" if i % 3 else "rejected")
        if i % 5 == 0:
            j.record(ids[i], "note", "checked against the register")
    j.close()
    return out


def _serve(app):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_port}"


def _get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        data = r.read()
    return time.perf_counter() - t0, data


def bench_review(rows: int = 100_000, log=print) -> dict:
    """Seconds from starting the review server over a `rows`-image run to its first page (100
    rows, every filter's count), then a filtered, searched and sorted page, warm."""
    from pipeline.client.review import create_app

    with tempfile.TemporaryDirectory(prefix="colorize-review-") as tmp:
        log(f"writing a {rows:,}-image run ...")
        out = _synthetic_run(Path(tmp), rows)
        t0 = time.perf_counter()
        app = create_app(str(out), token="b")
        srv, base = _serve(app)
        try:
            t_first, data = _get(f"{base}/api/images?t=b")
            first = time.perf_counter() - t0
            page = json.loads(data)
            t_index, _ = _get(f"{base}/?t=b")
            warm = [_get(f"{base}/api/images?t=b&filter=not_reviewed&q=INV-00012&sort=title&desc=1")[0]
                    for _ in range(5)]
            nxt = [_get(f"{base}/api/images?t=b&page={p}")[0] for p in (1, 500, 999)]
        finally:
            srv.shutdown()
    return {"rows": rows, "first_page_s": first, "first_request_s": t_first, "index_s": t_index,
            "filtered_s": statistics.median(warm), "other_pages_s": statistics.median(nxt),
            "total": page["total"], "counts": page["counts"]}


def bench_preview(side: int = 1024, points: int = 10, repeats: int = 7, checkpoint=None,
                  log=print) -> dict:
    """Seconds for the review page's preview of one hinted side x side scan: POST to the server,
    through its preview worker, to the JPEG; the median of `repeats` after the first (the
    worker's start, loading torch and the weights, is timed apart)."""
    import io

    from PIL import Image
    from skimage import data as skdata

    from pipeline.client.review import Previewer
    from pipeline.worker.engine import Colorizer

    with tempfile.TemporaryDirectory(prefix="colorize-preview-") as tmp:
        gray = Image.fromarray(skdata.astronaut()).convert("L").resize((side, side), Image.BICUBIC)
        src = Path(tmp) / "scan.png"
        gray.save(src)
        rng = np.random.default_rng(25)
        pts = [{"x": float(x), "y": float(y), "a": float(a), "b": float(b)} for x, y, a, b in
               zip(rng.uniform(0, side, points), rng.uniform(0, side, points),
                   rng.uniform(-40, 60, points), rng.uniform(-40, 60, points), strict=True)]
        pv = Previewer(checkpoint)
        t0 = time.perf_counter()
        first = pv.render(str(src), pts)
        start = time.perf_counter() - t0
        times = []
        for k in range(repeats):
            moved = [dict(p, x=(p["x"] + 7 * k) % side) for p in pts]  # a hint moved each time
            t0 = time.perf_counter()
            jpeg = pv.render(str(src), moved)
            times.append(time.perf_counter() - t0)
        pv.close()
        shape = Image.open(io.BytesIO(jpeg)).size
    return {"side": side, "points": points, "first_s": start, "median_s": statistics.median(times),
            "max_s": max(times), "shape": shape, "bytes": len(first),
            "how": Colorizer(checkpoint, device="cpu").hint_model(words=True)}
