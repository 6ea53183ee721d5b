"""The unit of distributed work: one shard in, committed results out, a small summary back.

Per-image problems become error rows; only problems with OUTDIR itself (disk full, no
permission) raise, so that the shard is retried or the run stops loudly, uncommitted.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import results
from .imaging import (
    FORMATS,
    Decoded,
    DecodeError,
    colorfulness,
    decode,
    encode,
    gray_jpeg_header,
    net_input,
    output_format,
    provenance,
)
from .jobspec import JobSpec
from .manifest import CORE_COLUMNS, read_manifest, resolve_path
from .state import safe_output_path
from .storage import Store, read_source

_COLORIZERS: dict = {}  # one loaded net per worker process, reused by every shard it runs


class OutputError(RuntimeError):
    """Writing to OUTDIR failed: not the image's fault, so the shard must not commit."""


@dataclass(frozen=True)
class ShardJob:
    """What every shard of a job is given: the job's spec, resolved by the client (the device,
    threads per worker, and the manifest's and checkpoint's paths as the workers see them)."""

    spec: JobSpec
    outdir: str
    checkpoint_sha256: str
    created: str = ""  # the job's date (job.json), written into every output's provenance

    def colorizer(self):
        from .engine import Colorizer, lut8

        if self.spec.device == "cpu":
            import torch

            # This worker's share of the cores. OpenMP keeps the setting per calling thread, so
            # it is made on every call, in the thread that runs the shard.
            torch.set_num_threads(self.spec.threads)
        o = self.spec
        key = (o.checkpoint, self.checkpoint_sha256, o.device, o.size, o.compile)
        if key not in _COLORIZERS:
            c = Colorizer(o.checkpoint, device=o.device, size=o.size, compile=o.compile)
            if c.sha256 != self.checkpoint_sha256:
                raise RuntimeError(f"checkpoint {c.ck.path} changed since the job was planned")
            _COLORIZERS.clear()
            _COLORIZERS[key] = c
            # The 8-bit colour table takes ~1 s: build it while the first batch is decoded.
            threading.Thread(target=lut8, name="lut8", daemon=True).start()
        return _COLORIZERS[key]

    # -- per image ------------------------------------------------------------------------------

    def _prepare(self, row: dict) -> tuple[dict, Decoded | None, np.ndarray | None]:
        t0 = time.perf_counter()
        res = {"image_id": row["image_id"], "shard": row["shard"], "source_path": row["path"],
               "status": "error", "checkpoint_sha256": self.checkpoint_sha256,
               "_stem": row["out_stem"]}
        try:
            safe_output_path(row["out_stem"], "")  # a hostile manifest row fails here, alone
            data = read_source(resolve_path(self.spec.manifest, row["path"]))
            res["source_sha256"] = hashlib.sha256(data).hexdigest()
        except FileNotFoundError:
            res["error"] = "file not found (deleted since the scan?)"
            return self._done(res, t0), None, None
        except PermissionError:
            res["error"] = "permission denied reading the source"
            return self._done(res, t0), None, None
        except Exception as e:  # whatever one source does, it is that image's row, not the shard's
            res["error"] = f"cannot read: {type(e).__name__}: {e}"
            return self._done(res, t0), None, None
        if self.spec.jpeg_decode == "device":
            d = gray_jpeg_header(data, self.spec.max_pixels)
            if d is not None:  # pixels decoded with the batch, on the net's device
                self._describe(res, d)
                return self._done(res, t0), d, None
        return self._decode_host(res, data, t0)

    @staticmethod
    def _describe(res: dict, d: Decoded) -> None:
        res.update(width=d.width, height=d.height, input_mode=d.mode, input_kind=d.kind,
                   bits=d.bits, notes="; ".join(d.notes) or None)

    def _decode_host(self, res: dict, data: bytes, t0: float):
        """Pillow: every format, EXIF orientation, colour classification; the net's input."""
        try:
            d = decode(io.BytesIO(data), max_pixels=self.spec.max_pixels)
        except DecodeError as e:
            res["error"] = str(e)
            return self._done(res, t0), None, None
        except Exception as e:  # any library's surprise on one odd file: its row, not the shard
            res["error"] = f"cannot decode: {type(e).__name__}: {e}"
            return self._done(res, t0), None, None
        self._describe(res, d)
        if d.kind == "color" and not self.spec.recolor:
            res["status"], res["error"] = "skipped", "colour image (use --recolor to recolorize)"
            return self._done(res, t0), None, None
        try:
            small = net_input(d.gray, self.spec.size)  # the net's input, made here in the pool
        except Exception as e:
            res["error"] = f"cannot prepare the net's input: {type(e).__name__}: {e}"
            return self._done(res, t0), None, None
        res["seconds"] = time.perf_counter() - t0
        return res, d, small

    def _decode_on_device(self, net, batch: list, out: dict) -> None:
        """Decode the batch's deferred JPEGs in one call on the net's device and make their
        net inputs there; a file the device refuses goes through Pillow instead."""
        waiting = [k for k, (_, d, _) in enumerate(batch) if d.gray is None]
        if not waiting:
            return
        grays = net.decode_jpegs([batch[k][1].encoded for k in waiting])
        dropped = set()
        for k, g in zip(waiting, grays, strict=True):
            res, d, _ = batch[k]
            if g is not None and (g.shape[1], g.shape[0]) == d.size:
                d.gray, d.encoded = g, None
                batch[k] = (res, d, net.net_input(g))
                continue
            res, d2, small = self._decode_host(res, d.encoded, time.perf_counter())
            if d2 is None:  # the CPU could not decode it either: an error row with its reason
                out[res["image_id"]] = res
                dropped.add(k)
            else:
                batch[k] = (res, d2, small)
        batch[:] = [b for k, b in enumerate(batch) if k not in dropped]

    def _colour(self, net, res: dict, d: Decoded, ab16: np.ndarray, net_seconds: float) -> dict:
        """Full-resolution colour from upsampled a/b, then _finish (a pool thread)."""
        t0 = time.perf_counter()
        try:
            rgb = net.lookup(d.gray, ab16)
        except Exception as e:
            res["error"] = f"cannot colorize: {type(e).__name__}: {e}"
            return self._done(res, t0)
        return self._finish(res, d, rgb, net_seconds + time.perf_counter() - t0)

    def _finish(self, res: dict, d: Decoded, rgb: np.ndarray, torch_seconds: float) -> dict:
        """Encode and write (a pool thread: Pillow and zlib release the GIL)."""
        t0 = time.perf_counter()
        notes = list(d.notes)
        try:
            fmt = output_format(self.spec.format, d.format)
            rel = safe_output_path(res["_stem"], FORMATS[fmt])
            prov = provenance(self.checkpoint_sha256, self.created, res.get("source_sha256"))
            try:
                data = encode(rgb, fmt, d.dpi, d.icc_profile, d.exif, quality=self.spec.quality,
                              notes=notes, provenance=prov)
            except Exception as e:  # metadata a writer chokes on is dropped, never fatal
                notes.append(f"metadata not carried ({type(e).__name__}: {e})"[:200])
                data = encode(rgb, fmt, quality=self.spec.quality, provenance=prov)
        except Exception as e:
            res["error"] = f"cannot encode: {type(e).__name__}: {e}"
            return self._done(res, t0)
        res["notes"] = "; ".join(notes) or None
        store = Store(self.outdir)
        try:
            store.write_atomic(rel, data)
        except OSError as e:
            raise OutputError(f"cannot write {store.full(rel)}: {e.strerror or e}") from None
        res.update(status="ok", error=None, output_path=rel, output_bytes=len(data),
                   output_sha256=hashlib.sha256(data).hexdigest(), colorfulness=colorfulness(rgb))
        res["seconds"] = res.get("seconds", 0.0) + torch_seconds
        return self._done(res, t0)

    @staticmethod
    def _done(res: dict, t0: float) -> dict:
        res["seconds"] = res.get("seconds", 0.0) + time.perf_counter() - t0
        return res

    # -- the shard ------------------------------------------------------------------------------

    def __call__(self, shard: int, only: frozenset[str] | None = None) -> dict:
        """Colorize the shard and commit its results. With `only` (repair), redo just those
        images and keep the shard's other committed rows as they are."""
        t0 = time.perf_counter()
        table = read_manifest(self.spec.manifest, shard=shard)
        rows = table.to_pylist()
        wanted = (lambda iid: True) if only is None else only.__contains__
        carried = [f for f in table.schema if f.name not in CORE_COLUMNS]
        out: dict[str, dict] = {}
        window = max(2, 2 * self.spec.batch_size)
        with ThreadPoolExecutor(self.spec.threads) as pool:
            # Decode ahead of the net and encode behind it, in threads; bounded so that
            # a shard of huge scans never holds more than a couple of batches in memory.
            pending: deque[Future] = deque()
            finishing: deque[Future] = deque()
            batch: list[tuple[dict, Decoded, np.ndarray]] = []
            it = iter(rows)

            def refill():
                for row in it:
                    pending.append(pool.submit(self._prepare, row))
                    if len(pending) >= window:
                        break

            def flush():
                if not batch:
                    return
                # Torch work (net, full-resolution colour) stays on this thread: torch already
                # uses every core, and more threads calling it only oversubscribe them.
                self._decode_on_device(net, batch, out)
                if not batch:
                    return
                tn = time.perf_counter()
                ab = net.predict_ab([small for _, _, small in batch], pad_to=self.spec.batch_size)
                abq = net.quantise_ab(ab)  # 8-bit outputs need no more of the net's precision
                per = (time.perf_counter() - tn) / len(batch)
                for i, (res, d, _) in enumerate(batch):
                    # A repair decodes and batches the whole shard as the first run did, so
                    # the net sees identical batches and the rewritten bytes are identical.
                    if not wanted(res["image_id"]):
                        continue
                    if net.host_colour(d.gray):  # the lookup in the pool, beside the net
                        try:
                            ab16 = net.upsample_ab(abq[i], d.gray.shape)
                        except Exception as e:
                            res["error"] = f"cannot colorize: {type(e).__name__}: {e}"
                            out[res["image_id"]] = res
                            continue
                        finishing.append(pool.submit(self._colour, net, res, d, ab16, per))
                        continue
                    tr = time.perf_counter()
                    try:
                        rgb = net.recombine(d.gray, ab[i] if d.bits == 16 else abq[i])
                    except Exception as e:
                        res["error"] = f"cannot colorize: {type(e).__name__}: {e}"
                        out[res["image_id"]] = res
                        continue
                    spent = per + time.perf_counter() - tr
                    finishing.append(pool.submit(self._finish, res, d, rgb, spent))
                batch.clear()
                while len(finishing) > window:
                    collect(finishing.popleft())

            def collect(f: Future):
                r = f.result()  # OutputError propagates: the shard fails uncommitted
                out[r["image_id"]] = r

            refill()
            # Loading torch and the weights (the first shard of a worker: seconds) overlaps
            # the first decodes.
            ts = time.perf_counter()
            net = self.colorizer()
            setup = time.perf_counter() - ts
            while pending:
                res, d, small = pending.popleft().result()
                refill()
                if d is None:
                    if wanted(res["image_id"]):
                        out[res["image_id"]] = res
                else:
                    batch.append((res, d, small))
                    if len(batch) >= self.spec.batch_size:
                        flush()
            flush()
            while finishing:
                collect(finishing.popleft())
        if only is not None:
            kept = results.read_shard(self.outdir, shard).to_pylist()
            for r in kept:
                out.setdefault(r["image_id"], r)  # first row wins: duplicates collapse
        final = []
        for row in rows:  # manifest order, exactly one result per row
            r = out[row["image_id"]]
            r.pop("_stem", None)
            for f in carried:
                r[f.name] = row[f.name]
            final.append(r)
        processed = {r["image_id"] for r in rows if wanted(r["image_id"])}
        results.write_shard(self.outdir, shard, results.to_table(final, carried))
        done = [r for r in final if r["image_id"] in processed]
        counts = {s: sum(r["status"] == s for r in done) for s in results.STATUSES}
        return {"shard": shard, "images": len(done), **counts,
                "seconds": time.perf_counter() - t0, "setup_s": setup, "finished": time.time(),
                "worker": f"{socket.gethostname()}:{os.getpid()}", "worker_pid": os.getpid(),
                "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss survives exec, so a `colorize run` started
    by a process holding torch would report that process's peak: VmHWM belongs to this image."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
