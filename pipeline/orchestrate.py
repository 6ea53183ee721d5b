"""Plan and run a job on dask.distributed: pending shards = all - committed, a bounded window."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections import Counter
from dataclasses import replace
from itertools import islice

import pyarrow.compute as pc

from . import results
from .errors import RunFailed
from .jobspec import IDENTITY_FIELDS, JobSpec
from .manifest import manifest_digest, read_manifest, shard_digests
from .state import (
    OUTPUT_VERSION,
    JobError,
    RunLock,
    check_or_write_job,
    file_sha256,
    fingerprint,
    grown,
    read_job,
    remove_temporaries,
    resolve_checkpoint,
)
from .storage import Store, is_url


def shard_sizes(manifest: str) -> dict[int, int]:
    t = read_manifest(manifest, columns=["shard"])
    vc = pc.value_counts(t.column("shard")).to_pylist()
    return {int(d["values"]): int(d["counts"]) for d in vc}


def client_device(name: str) -> str:
    """The device type a local run uses. Without a GPU driver on this machine, "auto" is the
    CPU: known without importing torch (for the client alone, ~1 GB and ~2 s)."""
    driver = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
    if name == "cpu" or (name == "auto" and not driver):
        return "cpu"
    from .engine import pick_device

    return pick_device(name).type


def resolve_spec(o: JobSpec) -> dict:
    """The job as job.json records it: every identity field, with the device resolved, the
    manifest's and the checkpoint's paths made absolute and their digests."""
    ck = resolve_checkpoint(o.checkpoint)
    shards = shard_digests(o.manifest)
    return {
        **{k: getattr(o, k) for k in IDENTITY_FIELDS},
        "manifest": o.manifest if is_url(o.manifest) else os.path.abspath(o.manifest),
        "manifest_digest": manifest_digest(shards),
        "shard_digests": shards,  # not identity: lets a manifest grow
        "checkpoint": str(ck.resolve()), "checkpoint_sha256": file_sha256(ck),
        "output_version": OUTPUT_VERSION,
        # On a remote cluster the GPUs are the workers', not this client's: trust --device cuda.
        "device": "cuda" if (o.scheduler and o.device == "cuda") else client_device(o.device),
    }


# dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which (as glibc then also
# stops adapting its mmap threshold) turns every full-resolution buffer into fresh mmap'd pages:
# the benchmark ran 3x slower, mostly in the kernel. Keep freed buffers for reuse instead; a
# shard's working set is bounded, so memory stays flat.
# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads otherwise spin for a while after each
# parallel region, taking the cores from the decode/encode threads beside them (+15 % images/s).
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
              "OMP_WAIT_POLICY": "PASSIVE"}


@contextlib.contextmanager
def make_client(o: JobSpec, device: str):
    import dask
    from distributed import Client, LocalCluster

    if o.scheduler:
        with Client(o.scheduler, timeout="30s") as client:
            yield client
        return
    n = local_workers(o, device)
    kw = dict(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
              silence_logs=logging.CRITICAL, memory_limit=0)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        if device == "cuda":
            # One process per GPU, each pinned to its device before CUDA initialises.
            from distributed import Nanny, Scheduler, SpecCluster

            workers = {i: {"cls": Nanny, "options": {"nthreads": 1, "memory_limit": 0,
                                                     "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                       for i in range(n)}
            cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler,
                                  "options": {"dashboard_address": ":0"}}, silence_logs=logging.CRITICAL)
        else:
            cluster = LocalCluster(**kw)
    with cluster, Client(cluster) as client:
        try:
            yield client
        finally:
            _kill_local_workers(client)


def _kill_local_workers(client) -> None:
    """Our own local workers hold nothing once the run is over (every shard commits before its
    task returns, and writes are complete files), but their interpreters take ~1 s to tear
    torch down: end them at once instead."""
    import signal

    try:
        pids = client.run(os.getpid, wait=True)
    except Exception:  # already gone, or the cluster broke: closing handles the rest
        return
    for pid in pids.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def local_workers(o: JobSpec, device: str) -> int:
    """One process per GPU, or on a CPU machine one process that uses every core."""
    if o.workers:
        return o.workers
    if device == "cuda":
        import torch

        return torch.cuda.device_count()
    return 1


def shard_threads(o: JobSpec, device: str) -> int:
    """Decode/encode (and CPU torch) threads per shard: the worker's share of this machine's
    cores; on a remote cluster its cores are unknown here, so 2 unless --threads says."""
    if o.threads:
        return o.threads
    if o.scheduler:
        return 2
    return max(1, (os.cpu_count() or 1) // local_workers(o, device))


def run_job(o: JobSpec, log=print) -> dict:
    """Run (or resume) a job; returns the summary. Raises JobError for refusals."""
    from tqdm import tqdm

    outdir = Store(o.output)
    spec = resolve_spec(o)
    sizes = shard_sizes(o.manifest)
    total_images = sum(sizes.values())
    check_outdir_apart(outdir, o.manifest)
    try:
        outdir.check_writable(create=not o.dry_run)
    except PermissionError as e:
        raise JobError(f"{e.filename} is not writable ({e.strerror}); fix its permissions "
                       f"(e.g. chmod -R u+w {outdir.full('')}) or choose another OUTDIR") from None
    if o.dry_run:
        committed = results.committed_shards(outdir)
        note = ""
        if o.restart and (committed or outdir.exists("job.json")):
            committed = set()
            note = " (--restart: OUTDIR's results and images would be discarded first)"
        elif outdir.exists("job.json") and (job := read_job(outdir))["fingerprint"] != fingerprint(spec):
            try:
                more = grown(outdir, job["spec"], spec)
            except JobError as e:
                more, note = False, f" (a real run would be refused: {e})"
            if more:
                note = " (the manifest grew: the job goes on with its new shards)"
            elif not note:
                note = " (OUTDIR holds a different job: a real run would be refused; see its message)"
        pend = sorted(set(sizes) - committed)
        log(f"dry run: {len(sizes)} shards, {len(sizes) - len(pend)} committed, {len(pend)} pending "
            f"({sum(sizes[s] for s in pend)} of {total_images} images){note}")
        return {"pending_shards": len(pend), "pending_images": sum(sizes[s] for s in pend)}
    with RunLock(outdir):
        fp = check_or_write_job(outdir, spec, o.restart)
        stale = remove_temporaries(outdir)
        if stale:
            log(f"removed {stale} temporary files left by an interrupted run")
        committed = results.committed_shards(outdir)
        pending = sorted(set(sizes) - committed)
        fixes = plan_repair(outdir, log) if o.repair else {}
        if not pending and not fixes:
            log(f"nothing to do: all {len(sizes)} shards of {outdir} are committed "
                f"({total_images} images); see `colorize status {outdir}`")
            return {"pending_shards": 0, "ok": 0, "error": 0, "skipped": 0, "images": 0}
        pending_images = sum(sizes[s] for s in pending)
        log(f"{len(pending)} of {len(sizes)} shards pending ({pending_images} images)"
            + (f"; repairing {sum(map(len, fixes.values()))} images in {len(fixes)} shards"
               if fixes else ""))
        tasks = [(s, None) for s in pending] + [(s, frozenset(ids)) for s, ids in sorted(fixes.items())]
        t0 = time.perf_counter()
        with make_client(o, spec["device"]) as client:
            from .shard import ShardJob  # imports torch: only where shards are made

            resolved = replace(o, manifest=spec["manifest"], checkpoint=spec["checkpoint"],
                               device=spec["device"], threads=shard_threads(o, spec["device"]))
            job = ShardJob(resolved, outdir=outdir.url, checkpoint_sha256=spec["checkpoint_sha256"],
                           created=read_job(outdir).get("created", ""))
            if importlib.util.find_spec("bokeh"):  # without it the link opens to an error page
                log(f"dashboard: {client.dashboard_link}")
            totals = _drive(client, job, tasks, sizes, fp, o, tqdm, log, t0)
        elapsed = time.perf_counter() - t0
    from .shard import peak_rss_mb
    n = totals["images"]
    totals.update(elapsed=elapsed, images_per_s=n / elapsed if elapsed else 0.0,
                  client_peak_rss_mb=peak_rss_mb())
    log(f"done: {totals['ok']} ok, {totals['error']} error, {totals['skipped']} skipped in "
        f"{elapsed:.1f} s ({totals['images_per_s']:.2f} images/s); images in {outdir.full('images')}, "
        f"results in {outdir.full('results')}")
    return totals


QUARANTINE = "quarantine"  # OUTDIR/quarantine/<path>: files --repair found but did not write


def check_outdir_apart(outdir: Store, manifest: str) -> None:
    """Refuse an OUTDIR inside the sources' folder (a later scan would take the outputs for
    new scans, and an output could land on a source) or holding the sources."""
    if not outdir.local:
        return
    from .manifest import resolve_path

    paths = read_manifest(manifest, columns=["path"]).column("path").to_pylist()
    # folders, not files: a million scans live in a few thousand folders (realpath is a syscall)
    local = {os.path.dirname(p) for p in paths if "://" not in p}
    if not local:
        return
    out = os.path.realpath(outdir.root)
    folders = {os.path.realpath(resolve_path(manifest, d or ".")) for d in local}
    root = os.path.commonpath(list(folders))
    if root != os.path.dirname(root):  # not "/": sources spread over the disk say nothing
        folders.add(root)
    if not is_url(manifest):
        import json

        import pyarrow.parquet as pq

        meta = pq.read_schema(manifest).metadata or {}
        folders.update(json.loads(meta.get(b"source_folders", b"[]")))
    up = out
    while True:
        if up in folders:
            raise JobError(f"OUTDIR {out} is inside the source folder {up}: a later scan would "
                           "take the outputs for new scans; choose an OUTDIR outside it")
        if os.path.dirname(up) == up:
            break
        up = os.path.dirname(up)
    inside = next((d for d in folders if d == out or d.startswith(out + os.sep)), None)
    if inside:
        raise JobError(f"OUTDIR {out} holds sources (in {inside}): outputs could overwrite them; "
                       "choose an OUTDIR apart from them")


def plan_repair(outdir: Store, log) -> dict[int, set[str]]:
    """From a full audit: images to redo per committed shard. Files this job did not write, and
    outputs altered since, are moved to OUTDIR/quarantine/ (same paths), never deleted."""
    from .audit import audit

    report = audit(outdir, progress=False)
    fixes: dict[int, set[str]] = {}
    shard_of = {}
    for p in report["problems"]:
        kind = p["kind"]
        if kind in ("missing_output", "corrupt_output"):
            if kind == "corrupt_output":  # altered since we wrote it (a retouch?): kept aside
                dest = outdir.move_aside(p["output_path"], QUARANTINE)
                log(f"moved an altered output to {dest}; it will be written again")
            fixes.setdefault(p["shard"], set()).add(p["image_id"])
        elif kind == "duplicate_result":
            if not shard_of:
                t = read_manifest(read_job(outdir)["spec"]["manifest"], columns=["image_id", "shard"])
                shard_of = dict(zip(t.column("image_id").to_pylist(), t.column("shard").to_pylist(),
                                    strict=True))
            fixes.setdefault(shard_of[p["image_id"]], set()).add(p["image_id"])
        elif kind == "unclaimed_file":  # not ours: kept, out of the way
            dest = outdir.move_aside(p["output_path"], QUARANTINE)
            log(f"moved a file this job did not write to {dest}")
        elif kind == "no_result" and p["shard"] in results.committed_shards(outdir):
            fixes.setdefault(p["shard"], set()).add(p["image_id"])
    return fixes


def _drive(client, job, tasks, sizes, fp, o: JobSpec, tqdm, log, t_start: float) -> dict:
    from distributed import as_completed

    resources = {"GPU": 1} if (o.scheduler and job.spec.device == "cuda") else None
    if resources:
        _wait_for_resource(client, "GPU", o.resource_timeout, log)
    window = o.window or 2 * max(1, len(client.scheduler_info()["workers"]))
    bar = tqdm(total=sum(sizes[s] if ids is None else len(ids) for s, ids in tasks), unit="img",
               desc="colorize",
               disable=not o.progress, smoothing=0.1)
    totals: Counter = Counter()
    spans: list[tuple] = []  # (worker, started, finished, images) of each shard, worker clocks

    def submit(task):
        s, ids = task
        key = f"shard-{s:05d}-{fp[:12]}" + ("-repair" if ids else "")
        return client.submit(job, s, ids, key=key, retries=o.retries, pure=False,
                             resources=resources)

    it = iter(tasks)
    ac = as_completed([submit(t) for t in islice(it, window)], with_results=False)
    failure, tb = None, ""
    try:
        for fut in ac:
            try:
                summary = fut.result()
            except Exception as e:  # after retries, or a worker that kept dying
                failure = f"shard {fut.key.split('-')[1]} failed: {type(e).__name__}: {e}"
                if type(e).__name__ not in ("OutputError", "KilledWorker"):  # a bug: show where
                    import traceback

                    tb = "".join(traceback.format_exception(type(e), e, fut.traceback()))
                break
            for k in ("images", "ok", "error", "skipped"):
                totals[k] += summary[k]
            totals["worker_peak_rss_mb"] = max(totals["worker_peak_rss_mb"], summary["peak_rss_mb"])
            bar.update(summary["images"])
            if "startup_s" not in totals:
                # cluster start, imports and weights: what a longer job amortises
                totals["startup_s"] = (time.perf_counter() - t_start - summary["seconds"]
                                       + summary["setup_s"])
            spans.append((summary["worker"], summary["finished"] - summary["seconds"],
                          summary["finished"], summary["images"]))
            nxt = next(it, None)
            if nxt is not None:
                ac.add(submit(nxt))
    finally:
        bar.close()
    if failure:
        for f in list(ac.futures):  # a copy: completions still arrive and change the dict
            f.cancel()
        raise RunFailed(f"{failure}; committed shards are intact, rerun to resume", traceback=tb)
    steady = steady_rate(spans)
    if steady:
        totals["steady_images_per_s"] = steady
    return dict(totals)


def steady_rate(spans: list[tuple]) -> float | None:
    """Images/s once every worker has finished its first shard (startup excluded): each shard
    counts with the part of it that falls in that window, as if its images went at an even pace.
    None when the window is empty (a single shard per worker, say)."""
    first: dict = {}
    for w, _, s1, _ in spans:
        first[w] = min(first.get(w, s1), s1)
    if not first:
        return None
    t0 = max(first.values())
    t1 = max(s1 for _, _, s1, _ in spans)
    if t1 <= t0:
        return None
    done = sum(n * (min(s1, t1) - max(s0, t0)) / (s1 - s0)
               for _, s0, s1, n in spans if s1 > t0 and s1 > s0)
    return done / (t1 - t0) if done else None


def _wait_for_resource(client, resource: str, timeout: float, log) -> None:
    """Tasks that ask for a resource no worker has would wait forever; say so instead."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        workers = client.scheduler_info()["workers"].values()
        if any(resource in w.get("resources", {}) for w in workers):
            return
        if time.monotonic() >= deadline:
            raise JobError(
                f"no worker of the cluster offers the {resource} resource after {timeout:.0f} s; "
                f"start one per GPU with `CUDA_VISIBLE_DEVICES=N dask worker ADDR --nworkers 1 "
                f"--nthreads 1 --resources {resource}=1`, or run with --device cpu")
        if not said:
            log(f"waiting up to {timeout:.0f} s for a worker with the {resource} resource ...")
            said = True
        time.sleep(1.0)


def status(outdir: str | os.PathLike) -> dict:
    """From job.json and the results alone; never opens images."""
    outdir = Store(outdir)
    job = read_job(outdir)
    spec = job["spec"]
    sizes = shard_sizes(spec["manifest"])
    committed = results.committed_shards(outdir)
    t = results.read_results(outdir, columns=["status"])
    counts = Counter(t.column("status").to_pylist())
    s = {"shards": len(sizes), "committed": len(committed),
         "pending": len(set(sizes) - committed), "images": sum(sizes.values()),
         **{s: counts.get(s, 0) for s in results.STATUSES}}
    from .state import lock_holder

    s["running"] = lock_holder(outdir)
    if s["running"] and outdir.local and len(committed) >= 2:
        # the pace of the shards committed so far, from their commit times
        times = sorted((os.path.getmtime(outdir.full(results.shard_rel(k))), k) for k in committed)
        span = times[-1][0] - times[0][0]
        done = sum(sizes.get(k, 0) for _, k in times[1:])
        if span > 0 and done:
            s["images_per_s"] = done / span
            s["eta_s"] = sum(sizes[k] for k in set(sizes) - committed) / s["images_per_s"]
    return s
