"""The unit of distributed work: one shard in, committed results out, a small summary back.

Reads as the data flow: manifest rows -> read and decode (pool threads, ahead of the net) ->
batches -> the net -> colour -> encode and write (pool threads, behind the net) -> one commit.
The per-image stages are in stages.py. Per-image problems become error rows; only problems
with OUTDIR itself (disk full, no permission) raise, so that the shard is retried or the run
stops loudly, uncommitted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.client import results
from pipeline.client.alone import TRIES, Deaths, WorkerDies
from pipeline.client.jobspec import AHEAD_PIXELS, read_ahead
from pipeline.client.manifest import shard_rows
from pipeline.client.outdir import Outdir
from pipeline.client.results import CORE_COLUMNS
from pipeline.worker.device import peak_rss_mb
from pipeline.worker.stages import ImageStages, Item, OutputError

__all__ = ["OutputError", "ShardJob", "WorkerDies"]

_COLORIZERS: dict = {}  # one loaded net per worker process, reused by every shard it runs


def _same_version(theirs: int | None) -> None:
    """A worker that joined a cluster running another version of this package (an upgrade
    under a running worker) would write other bytes into the job: it refuses the shard."""
    from pipeline.client.state import OUTPUT_VERSION

    if theirs is not None and theirs != OUTPUT_VERSION:
        import pipeline

        raise RuntimeError(f"this worker runs archive-colorizer {pipeline.__version__} with output "
                           f"version {OUTPUT_VERSION}, the job {theirs}: restart the worker with "
                           "the version the run uses")


@dataclass(frozen=True)
class ShardJob(ImageStages):
    """What every shard of a job is given (the spec resolved by the client: the device, threads
    per worker, the manifest's and checkpoint's paths as the workers see them), and the shard."""

    def colorizer(self):
        from pipeline.worker.device import use_threads
        from pipeline.worker.engine import Colorizer
        from pipeline.worker.recombine import lut8

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
        use_threads(_COLORIZERS[key].device, o.threads)
        return _COLORIZERS[key]

    def __call__(self, shard: int, only: frozenset[str] | None = None,
                 options: dict[str, dict] | None = None, alone: bool = False) -> dict:
        """Colorize the shard and commit its results. With `only` (a repair or a redo), redo
        just those images and keep the shard's other committed rows as they are. options: per
        image id, the options a redo gave that image alone (redo.py). alone: its images one at a
        time, a worker having died each time the shard was tried (client/alone.py)."""
        t0 = time.perf_counter()
        _same_version(self.output_version)
        table, rows = shard_rows(self.spec.manifest, shard)
        wanted = (lambda iid: True) if only is None else only.__contains__
        with ThreadPoolExecutor(self.spec.threads) as pool:
            flow = (_Alone if alone else _Flow)(self, pool, wanted, options or {})
            setup = flow.run(rows)
        out = flow.out
        before: dict[str, dict] = {}
        if only is not None:
            for r in Outdir(self.outdir).read_shard(shard).to_pylist():
                before.setdefault(r["image_id"], r)  # first row wins: duplicates collapse
                out.setdefault(r["image_id"], r)
        carried = [f for f in table.schema if f.name not in CORE_COLUMNS]
        final = []
        for row in rows:  # manifest order, exactly one result per row
            r = out[row["image_id"]]
            for f in carried:
                r[f.name] = row[f.name]
            final.append(r)
        od = Outdir(self.outdir)
        sealed = od.write_shard(shard, final, carried)
        done = [r for r in final if wanted(r["image_id"])]
        if before:  # a redo or a repair: an earlier output its new row no longer claims
            _aside_unclaimed(od, before, done)
        if alone:
            Deaths.forget(od.store, shard)  # committed: a later death is a new story
        counts = {s: sum(r["status"] == s for r in done) for s in results.STATUSES}
        return {"shard": shard, "images": len(done), **counts, "results_sha256": sealed,
                "seconds": time.perf_counter() - t0, "setup_s": setup, "finished": time.time(),
                "worker": f"{socket.gethostname()}:{os.getpid()}", "peak_rss_mb": peak_rss_mb()}


def _aside_unclaimed(outdir: Outdir, before: dict[str, dict], done: list[dict]) -> None:
    """A redone image skipped now (hints taken from a print skipped as colour) leaves its
    earlier output claimed by no row: moved aside to quarantine/ (ours, never deleted), after
    the commit; a kill before leaves it for --repair. One that failed now (its original gone
    or unreadable) keeps it in place: the audit names it, as it names the error."""
    for r in done:
        old = (before.get(r["image_id"]) or {}).get("output_path")
        if old and r["status"] == "skipped" and outdir.store.exists(old):
            outdir.quarantine(old)


class _Flow:
    """One shard's images through the stages: decoded ahead of the net and encoded behind it in
    pool threads, bounded so that a shard of huge scans never holds more than a couple of
    batches in memory. Torch work (the net, the colour step's torch part) stays on the calling
    thread: torch already uses every core, and more threads calling it only oversubscribe them."""

    def __init__(self, job: ShardJob, pool: ThreadPoolExecutor, wanted: Callable[[str], bool],
                 options: dict[str, dict]):
        self.job, self.pool, self.wanted, self.options = job, pool, wanted, options
        self.aside: list[Item] = []  # images only a redo's options colorize: their own batches
        self.window, self.busy = read_ahead(job.spec.batch_size, job.spec.threads)
        self.decoding: deque[Future] = deque()
        self.ahead: deque[int] = deque()  # the pixels of each image in `decoding`, by its header
        self.writing: deque[Future] = deque()
        self.written: deque[int] = deque()  # the pixels of each image in `writing`
        self.batch: list[Item] = []
        self.out: dict[str, dict] = {}  # image_id -> its final row
        self.net = None  # loaded in run(), while the first images decode

    def run(self, rows: list[dict]) -> float:
        """Every row through; returns the seconds spent loading the net (a worker's first shard)."""
        it = iter(rows)
        self._read_ahead(it)
        # Loading torch and the weights overlaps the first decodes.
        ts = time.perf_counter()
        self.net = self.job.colorizer()
        setup = time.perf_counter() - ts
        while self.decoding:
            item = self.decoding.popleft().result()
            self.ahead.popleft()
            self._read_ahead(it)
            if item.finished:
                self._record(item)
            elif item.aside:  # the job's batches (and so every other image's bytes) stay as first run
                self.aside.append(item)
            else:
                self.batch.append(item)
                if len(self.batch) >= self.job.spec.batch_size:
                    self._colorize_batch()
        self._colorize_batch()
        for i in range(0, len(self.aside), self.job.spec.batch_size):
            self.batch = self.aside[i:i + self.job.spec.batch_size]
            self._colorize_batch()
        while self.writing:
            self._record(self.writing.popleft().result())
            self.written.popleft()
        return setup

    def _read_ahead(self, it) -> None:
        # Ahead by count for small scans, by pixels for masters: 16 decoded 100-MP scans would
        # hold 1.6-3.2 GB beside the batch. The batches are the same either way (they are
        # filled in manifest order), so a repair's bytes are too.
        for row in it:
            self.decoding.append(self.pool.submit(self.job.read, row,
                                                  self.options.get(row["image_id"])))
            self.ahead.append((row.get("width") or 0) * (row.get("height") or 0))
            if len(self.decoding) >= self.window or (len(self.decoding) >= self.busy
                                                     and sum(self.ahead) >= AHEAD_PIXELS):
                break

    def _record(self, item: Item) -> None:
        # A repair decodes and batches the whole shard as the first run did (so the net sees
        # identical batches and rewrites identical bytes), but records only the images it redoes.
        if self.wanted(item.id):
            self.out[item.id] = item.row

    def _colorize_batch(self) -> None:
        batch, self.batch = self.batch, []
        if self.job.spec.jpeg_decode == "device":
            self.job.decode_on_device(self.net.jpeg, batch)
            for item in (it for it in batch if it.finished):
                self._record(item)
            batch = [it for it in batch if not it.finished]
        if not batch:
            return
        tn = time.perf_counter()
        ab = self.net.predict_ab([it.small for it in batch], pad_to=self.job.spec.batch_size)
        if any(it.cells is not None for it in batch):  # a curator's hints: that image's own colour
            ab = self.net.with_hints(ab, [(it.small, it.cells) for it in batch])
            for it in (it for it in batch if it.cells):  # none inside the image: the net's own colour
                it.row["hint_model"] = self.net.hint_model()
        abq = self.net.quantise_ab(ab)  # 8-bit outputs need no more of the net's precision
        share = (time.perf_counter() - tn) / len(batch)
        for i, item in enumerate(batch):
            if not self.wanted(item.id):
                continue
            t0 = time.perf_counter()
            try:
                rgb_of = self.net.colors.start(item.gray, ab[i], abq[i])
            except Exception as e:
                self._record(item.fail(f"cannot colorize: {type(e).__name__}: {e}"))
                continue
            finally:
                item.spend(t0 - share)
            self.writing.append(self.pool.submit(self.job.finish, item, rgb_of))
            self.written.append((item.row.get("width") or 0) * (item.row.get("height") or 0))
        while len(self.writing) > self.window or (len(self.writing) > self.busy
                                                  and sum(self.written) > AHEAD_PIXELS):
            self._record(self.writing.popleft().result())  # OutputError: the shard fails uncommitted
            self.written.popleft()


class _Alone(_Flow):
    """The shard's images one at a time, each begun only once the last is written, and named in
    OUTDIR before it is begun: a death is on that image (client/alone.py). Images a death was on
    go last, so that the others show first whether the worker can colorize at all. On the CPU an
    image colorized alone comes out in the same bytes as in its batch (measured: the net's output
    for one image does not depend on the others in the batch)."""

    def run(self, rows: list[dict]) -> float:
        mine = [r for r in rows if self.wanted(r["image_id"])]
        ids = [r["image_id"] for r in mine]
        if not mine:
            return 0.0
        said = Deaths.load(self.job.outdir, mine[0]["shard"])  # this try has started
        if said.hopeless(ids):
            died = [r["path"] for r in mine if said.deaths.get(r["image_id"])]
            raise WorkerDies(f"tried one image at a time, the worker died on {len(died)} of them "
                             f"and colorized none ({', '.join(died[:3])}): it is the worker "
                             "(too little memory for any of them, or broken), not the scans")
        ts = time.perf_counter()
        self.net = self.job.colorizer()  # before anything is begun: a death here blames no image
        setup = time.perf_counter() - ts
        starved: list[str] = []  # images it could not allocate the memory for
        for row in sorted(mine, key=lambda r: said.deaths.get(r["image_id"], 0)):
            options = self.options.get(row["image_id"])
            if said.blamed(row["image_id"], ids):
                self._record(self.job.start(row, options).fail(_blame(row, self.job.outdir)))
                _aside_earlier_output(self.job, row)
                continue
            said.begin(row["image_id"], shared=_worker_shared())
            try:
                colorized, netted = self._one(row, options)
            except Exception as e:  # a bug, or OUTDIR failing: raised as such, never counted a death
                with contextlib.suppress(Exception):
                    said.begin(None)
                if not _out_of_memory(e):
                    raise
                # memory the process could not have, said as an exception: that image's, as a death is
                self.batch, self.writing, self.written = [], deque(), deque()
                self._record(self.job.start(row, options).fail(_blame(row, self.job.outdir, e)))
                _aside_earlier_output(self.job, row)
                starved.append(row["path"])
                colorized, netted = False, True
            said.lived_through(row["image_id"], colorized, netted)
        if len(starved) >= 2 and not said.lived:  # none had memory enough: the worker's, not theirs
            raise WorkerDies(f"tried one image at a time, the worker could not allocate the memory for "
                             f"any of them ({', '.join(starved[:3])}): it is the worker (too little "
                             "memory, or a device another process holds), not the scans")
        return setup

    def _one(self, row: dict, options: dict | None) -> tuple[bool, bool]:
        """One image's turn: (colorized, whether it reached the net). Nothing of it is held
        once its turn is over: the next image is begun with the worker's memory to itself."""
        item = self.job.read(row, options)
        if item.finished:
            self._record(item)
            return False, False
        self.batch = [item]
        self._colorize_batch()
        while self.writing:
            self._record(self.writing.popleft().result())
            self.written.popleft()
        return item.row["status"] == "ok", True


def _out_of_memory(e: BaseException) -> bool:
    """An allocation the process could not make (Python's, torch's on the CPU or a GPU, the
    kernel's: ENOMEM from an mmap or a decoder's buffer)."""
    text = str(e)
    return isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text \
        or type(e).__name__ == "OutOfMemoryError" or (isinstance(e, OSError) and e.errno == errno.ENOMEM)


def _worker_shared() -> bool:
    """Whether the worker runs other tasks beside this one now (a worker of several threads):
    a death then may be theirs."""
    try:
        from distributed import get_worker

        return get_worker().state.executing_count > 1
    except Exception:  # noqa: BLE001 - not in a dask worker (a test, a local call): alone
        return False


def _aside_earlier_output(job: ShardJob, row: dict) -> None:
    """A blamed image that an earlier try colorized (it lived once, then died twice) left its
    output, which its error row does not claim: moved to quarantine/ (never deleted), as the
    audit would otherwise find it stray. A redo's earlier output stays with its committed row
    until the commit, as any redo's does."""
    from pipeline.worker.imaging import read_header
    from pipeline.worker.writers import extension, output_format

    od = Outdir(job.outdir)
    try:  # where the job writes it (--format same: by the format the scan read)
        rel = Outdir.output_rel(row["out_stem"], extension(output_format(job.spec.format, row.get("format") or "")))
    except ValueError:  # a hostile manifest row: it has written nothing
        return
    if not od.store.exists(rel) or rel in _claimed(od, row):
        return
    try:  # ours only (its metadata says so): a file someone put there is theirs, left alone
        with od.store.open(rel) as f:  # its header alone: a master's output is large
            ours = read_header(f, job.spec.max_pixels).ours
    except Exception:  # noqa: BLE001 - unreadable: not provably ours
        return
    if ours:
        od.quarantine(rel)


def _claimed(od: Outdir, row: dict) -> set[str]:
    """The outputs the shard's committed rows claim (a redo's, a repair's)."""
    try:
        return {r["output_path"] for r in od.read_shard(row["shard"]).to_pylist() if r.get("output_path")}
    except Exception:  # noqa: BLE001 - no committed shard yet
        return set()


def _blame(row: dict, outdir: str, e: BaseException | None = None) -> str:
    from pipeline.client.jobspec import GB, alone_bytes
    from pipeline.client.outdir import run_hint

    w, h = row.get("width"), row.get("height")
    size = (f": a {w}x{h} scan needs about {alone_bytes(w, h, row.get('mode')) / GB:.1f} GB with "
            "the model" if w and h else "")
    what = (f"the worker ran out of memory colorizing this image alone ({type(e).__name__}{size})"
            if e is not None else f"the worker died each time it colorized this image, {TRIES} times "
            f"with nothing else in hand (most often its memory{size})")
    return (f"{what}; the rest of its shard is done: give the workers more memory, then "
            f"{run_hint(outdir, '--redo', row['image_id'])}")
