"""Throughput benchmark: net only, I/O only, the pipeline, and the naive loop, on the same scans."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.storage import write_atomic
from pipeline.worker.imaging import decode
from pipeline.worker.writers import encode, output_format


def make_archive(root: Path, count: int, width: int, height: int, seed: int = 0) -> list[Path]:
    """Gray JPEG 'scans': crops of scikit-image's photos with grain, each one different."""
    from skimage import data

    rng = np.random.default_rng(seed)
    bases = [data.camera(), np.asarray(Image.fromarray(data.astronaut()).convert("L")),
             np.asarray(Image.fromarray(data.coffee()).convert("L")),
             np.asarray(Image.fromarray(data.chelsea()).convert("L"))]
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        b = bases[i % len(bases)]
        h, w = b.shape
        ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        im = Image.fromarray(b[y : y + ch, x : x + cw]).resize((width, height), Image.BICUBIC)
        a = np.asarray(im, np.float32) + rng.normal(0, 4, (height, width))
        p = root / f"box{i // 100:03d}" / f"scan{i:06d}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def bench_net(checkpoint, size: int, batch: int, device: str, seconds: float = 8.0,
              compile: bool = False) -> float:
    from pipeline.worker.engine import Colorizer

    net = Colorizer(checkpoint, device=device, size=size, compile=compile)
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8)
    net.predict_ab(x)  # warm-up (and, compiled, the compile)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ab = net.predict_ab(x)
        n += batch
    ab.cpu()  # wait for the device
    return n / (time.perf_counter() - t0)


def bench_io(paths: list[Path], out: Path, fmt: str, threads: int) -> float:
    """Read + decode + encode + write, in threads as the pipeline does: the I/O floor."""
    def one(p: Path):
        d = decode(p)
        g = Image.fromarray(d.gray)
        # the 4-byte layout the pipeline's colour lookup writes, which encode takes unrepacked
        rgb = np.asarray(Image.merge("RGBX", (g, g, g, g)))[..., :3]
        data = encode(rgb, output_format(fmt, d.format), d.dpi, d.icc_profile, d.exif)
        write_atomic(out / p.name, data)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, paths))
    return len(paths) / (time.perf_counter() - t0)


def bench_naive(paths: list[Path], out: Path, checkpoint, size: int) -> float:
    """The loop a user would write from the seed: float64 skimage colour at full size."""
    import skimage.io
    import torch
    from skimage.color import gray2rgb, lab2rgb, rgb2lab
    from skimage.transform import resize

    from pipeline.model.net import load_checkpoint

    model = load_checkpoint(checkpoint, "cpu").model
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for p in paths:
        img = skimage.io.imread(p)
        lab = rgb2lab(gray2rgb(img))
        L = lab[..., 0]
        x = torch.from_numpy(resize(L, (size, size)) / 100.0).float()[None, None]
        with torch.no_grad():
            ab = model(x)[0].numpy().transpose(1, 2, 0) * 255.0 - 128.0
        ab_full = resize(ab, L.shape)
        with warnings.catch_warnings():  # "negative Z values clipped": the naive loop's business
            warnings.simplefilter("ignore")
            rgb = lab2rgb(np.concatenate([L[..., None], ab_full], axis=2))
        skimage.io.imsave(out / (p.stem + ".jpg"), (rgb * 255).round().astype(np.uint8),
                          check_contrast=False)
    return len(paths) / (time.perf_counter() - t0)


def run_pipeline(paths_root: Path, work: Path, checkpoint, size: int, batch: int, device: str,
                 shard_size: int, fmt: str = "same", extra: tuple[str, ...] = ()) -> dict:
    """`colorize scan` + `colorize run` in a fresh process, as a user runs them."""
    man, out, summ = work / "m.parquet", work / "out", work / "summary.json"
    cli = [sys.executable, "-m", "pipeline"]
    subprocess.run(cli + ["scan", str(paths_root), "-o", str(man), "--shard-size", str(shard_size),
                          "-q"], check=True)
    cmd = cli + ["run", "--manifest", str(man), "-o", str(out), "--size", str(size),
                 "--batch-size", str(batch), "--device", device, "--format", fmt, "-q",
                 "--summary-json", str(summ), *extra]
    if checkpoint:
        cmd += ["--checkpoint", str(checkpoint)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(summ.read_text())


def bench_plan(rows: int, shard_size: int = 256, log=print) -> dict:
    """Plan a job over a synthetic manifest of `rows` paths: `colorize run --dry-run` in a fresh
    process, timed, with its peak RSS (the client's, which must not grow with the archive)."""
    import resource

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.client.manifest import ROW_GROUP

    with tempfile.TemporaryDirectory(prefix="colorize-plan-") as tmp:
        man = Path(tmp) / "m.parquet"
        paths = [f"/archive/box{i // 1000:05d}/scan{i:08d}.tif" for i in range(rows)]
        stems = [p[len("/archive/"):-4] for p in paths]
        table = pa.table({
            "image_id": [f"{i:016x}" for i in range(rows)],
            "shard": pa.array(np.arange(rows) // shard_size), "path": paths,
            "rel_path": [s + ".tif" for s in stems], "out_stem": stems,
            "size_bytes": pa.array(np.full(rows, 40_000_000)),
            "width": pa.array(np.full(rows, 6000)), "height": pa.array(np.full(rows, 4000)),
            "mode": ["I;16"] * rows, "format": ["TIFF"] * rows,
            "frames": pa.array(np.ones(rows, np.int64)), "scan_error": pa.nulls(rows, pa.string()),
        })
        pq.write_table(table, man, row_group_size=ROW_GROUP)
        del table, paths, stems
        log(f"planning {rows:,} rows (dry run) ...")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pipeline", "run", "--manifest", str(man), "-o",
                            str(Path(tmp) / "out"), "--dry-run"], check=True, capture_output=True,
                           text=True)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far; earlier children were smaller runs
    rss = max(peak, before) / 1024.0
    return {"rows": rows, "seconds": seconds, "client_peak_rss_mb": rss, "said": r.stdout.strip()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", GPU " + torch.cuda.get_device_name(0)
    except Exception:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB{gpu}, Python {platform.python_version()}"


def floor_of(net: float, io: float, device: str) -> float:
    """On a GPU the net and the I/O run side by side; on a CPU they share the cores."""
    return min(net, io) if device == "cuda" else 1.0 / (1.0 / net + 1.0 / io)


def bench_memory(tmp: Path, counts, checkpoint, size, batch, dev, log) -> dict:
    """Peak RSS (client, worker) of the pipeline on archives of each count of small scans."""
    mem = {}
    for n in counts:
        log(f"memory: pipeline on {n} scans of 320x240 ...")
        make_archive(tmp / f"mem{n}", n, 320, 240, seed=1)
        s = run_pipeline(tmp / f"mem{n}", tmp / f"memrun{n}", checkpoint, size, batch, dev,
                         shard_size=32)
        mem[n] = (s["client_peak_rss_mb"], s["worker_peak_rss_mb"])
    return mem


def against_floors(run: dict, floor: float, naive: float) -> dict:
    """A pipeline run's rates as fractions of its floor and multiples of the naive loop."""
    nan = float("nan")
    # a run of one shard has no steady rate (None in its summary: a trial's tiny bench crashed)
    wall, steady = run["images_per_s"], run.get("steady_images_per_s") or nan
    return {"floor": floor, "wall": wall, "steady": steady, "startup_s": run.get("startup_s", nan),
            "elapsed": run["elapsed"], "wall_over_floor": wall / floor,
            "steady_over_floor": steady / floor, "wall_over_naive": wall / naive,
            "steady_over_naive": steady / naive}


def bench(count: int = 200, width: int = 1600, height: int = 1200, size: int = 256,
          batch: int = 8, device: str = "auto", checkpoint=None, naive_count: int = 20,
          memory: tuple[int, int] | None = (200, 2000), append: str | None = None,
          log=print, net_seconds: float = 8.0, shard_size: int = 32,
          formats: tuple[str, ...] = ("png", "tiff"), compiled: bool = True) -> dict:
    from pipeline.worker.device import pick_device

    dev = pick_device(device).type
    threads = os.cpu_count() or 1
    nan = float("nan")
    with tempfile.TemporaryDirectory(prefix="colorize-bench-") as tmp:
        tmp = Path(tmp)
        log(f"making {count} gray JPEG scans of {width}x{height} ...")
        paths = make_archive(tmp / "scans", count, width, height)
        log("net only ...")
        net = bench_net(checkpoint, size, batch, dev, net_seconds)
        log(f"net only: {net:.2f} images/s; net only, compiled ..." if compiled  # each figure as it comes
            else f"net only: {net:.2f} images/s; I/O only ...")  # a cut-off run keeps them
        net_c = nan  # --no-compile: both compiled rows say nan (a compile alone takes minutes on some machines)
        if compiled:
            try:
                net_c = bench_net(checkpoint, size, batch, dev, net_seconds, compile=True)
            except Exception as e:  # no C++ compiler here, say: the row says n/a
                log(f"  torch.compile failed: {type(e).__name__}: {e}")
            log(f"net compiled: {net_c:.2f} images/s; I/O only ...")
        io = bench_io(paths, tmp / "io", "same", threads)
        log(f"I/O only: {io:.2f} images/s; pipeline (colorize run on a LocalCluster) ...")
        pipe = run_pipeline(tmp / "scans", tmp / "run", checkpoint, size, batch, dev, shard_size)
        comp = {}
        log(f"pipeline: {pipe['images_per_s']:.2f} images/s")
        if not math.isnan(net_c):
            log("pipeline with --compile ...")
            try:
                comp = run_pipeline(tmp / "scans", tmp / "run-compiled", checkpoint, size, batch,
                                    dev, shard_size, extra=("--compile",))
            except subprocess.CalledProcessError:
                pass
        nvjpeg = {}
        if dev == "cuda":  # decide --jpeg-decode's default from this row
            log("pipeline with --jpeg-decode device (nvJPEG) ...")
            nvjpeg = run_pipeline(tmp / "scans", tmp / "run-nvjpeg", checkpoint, size, batch, dev,
                                  shard_size, extra=("--jpeg-decode", "device"))
        by_format = {}
        for fmt in formats:  # each output format against its own I/O floor
            log(f"(last: {json.dumps({k: v.get('images_per_s') for k, v in (('compiled', comp), ('nvjpeg', nvjpeg)) if v})}); "
                f"I/O only and pipeline, --format {fmt} ...")
            io_f = bench_io(paths, tmp / f"io-{fmt}", fmt, threads)
            by_format[fmt] = (io_f, run_pipeline(tmp / "scans", tmp / f"run-{fmt}", checkpoint,
                                                 size, batch, dev, shard_size, fmt=fmt))
        log(f"by format: {json.dumps({f: [round(x[0], 2), round(x[1]['images_per_s'], 2)] for f, x in by_format.items()})}; "
            f"naive loop on {min(naive_count, count)} scans ...")
        naive = bench_naive(paths[:naive_count], tmp / "naive", checkpoint, size)
        mem = bench_memory(tmp, memory or (), checkpoint, size, batch, dev, log)
    res = {"device": dev, "count": count, "net": net, "net_compiled": net_c, "io": io,
           "naive": naive, "memory": mem, "client_peak_rss_mb": pipe["client_peak_rss_mb"],
           "worker_peak_rss_mb": pipe["worker_peak_rss_mb"],
           "io_by_format": {f: x[0] for f, x in by_format.items()}}
    runs = [("default", pipe, net, io), ("compiled", comp, net_c, io), ("nvjpeg", nvjpeg, net, io)]
    runs += [(f"format-{f}", run, net, io_f) for f, (io_f, run) in by_format.items()]
    res["runs"] = {name: against_floors(run, floor_of(n, io_run, dev), naive)
                   for name, run, n, io_run in runs if run}
    cmd = "colorize bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "colorize bench"
    text = report(res, count, width, height, size, batch, cmd)
    log(text)
    if append:
        with open(append, "a") as f:
            f.write("\n" + text)
    return res


def report(r: dict, count, width, height, size, batch, cmd) -> str:
    floor_kind = "min(net, I/O)" if r["device"] == "cuda" else "1/(1/net + 1/I/O)"
    lines = [
        f"### {dt.date.today().isoformat()}: {count} gray JPEG scans of {width}x{height}, "
        f"net at {size}, batch {batch}, device {r['device']}",
        f"Machine: {machine()}. Command: `{cmd}`.", "",
        "| measure | images/s | / floor | / naive |", "|---|---|---|---|",
        f"| net only | {r['net']:.2f} | | |",
        f"| net only, `torch.compile` | {r['net_compiled']:.2f} | | |",
        f"| I/O only (read, decode, encode, write) | {r['io']:.2f} | | |",
    ]
    lines += [f"| I/O only, `--format {f}` | {v:.2f} | | |" for f, v in r.get("io_by_format", {}).items()]
    labels = {"default": "`colorize run`", "compiled": "`colorize run --compile`",
              "nvjpeg": "`colorize run --jpeg-decode device`",
              **{f"format-{f}": f"`colorize run --format {f}`" for f in r.get("io_by_format", {})}}
    for name, x in r["runs"].items():
        lines += [
            f"| floor for {labels[name]} = {floor_kind} | {x['floor']:.2f} | | |",
            f"| **{labels[name]}, steady** (after its first shard) | **{x['steady']:.2f}** | "
            f"**{x['steady_over_floor']:.0%}** | **{x['steady_over_naive']:.1f}x** |",
            f"| {labels[name]}, wall clock of all {count} (startup included) | {x['wall']:.2f} | "
            f"{x['wall_over_floor']:.0%} | {x['wall_over_naive']:.1f}x |",
        ]
    lines.append(f"| naive loop (skimage, float64, batch of one) | {r['naive']:.2f} | | 1.0x |")
    lines.append("")
    lines.append("Startup (cluster, worker imports, weights; a longer archive amortises it): "
                 + ", ".join(f"{labels[k]} {x['startup_s']:.1f} s of {x['elapsed']:.1f} s"
                             for k, x in r["runs"].items())
                 + f". Peak RSS of `colorize run`: client {r['client_peak_rss_mb']:.0f} MB, "
                 f"worker {r['worker_peak_rss_mb']:.0f} MB.")
    if r["memory"]:
        (n1, (c1, w1)), (n2, (c2, w2)) = sorted(r["memory"].items())
        lines += ["", f"Flat memory (320x240 scans, shards of 32): {n1} images: client {c1:.0f} MB, "
                  f"worker {w1:.0f} MB; {n2} images: client {c2:.0f} MB ({c2 / c1:.2f}x), "
                  f"worker {w2:.0f} MB ({w2 / w1:.2f}x)."]
    return "\n".join(lines) + "\n"
