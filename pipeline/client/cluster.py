"""Where a run's shards execute: a dask client on a local cluster (one worker process per GPU,
or one using every core) or on a scheduler the user runs, with the workers' environment, their
count and threads, and the wait for a GPU worker to join."""

from __future__ import annotations

import contextlib
import logging
import os
import time

from pipeline.client.jobspec import GB, HELD_BYTES, MODEL_BYTES, PIXEL_BYTES, JobSpec
from pipeline.errors import JobError, Unavailable, plural

# dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which (as glibc then also
# stops adapting its mmap threshold) turns every full-resolution buffer into fresh mmap'd pages:
# the benchmark ran 3x slower, mostly in the kernel. Keep freed buffers for reuse instead; a
# shard's working set is bounded, so memory stays flat.
# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads otherwise spin for a while after each
# parallel region, taking the cores from the decode/encode threads beside them (+15 % images/s).
# DASK_LOGGING__DISTRIBUTED: a worker's own chatter as it is torn down after a failed shard
# ("Batched Comm Closed" and its traceback) is not the run's one-line message
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
              "OMP_WAIT_POLICY": "PASSIVE", "DASK_LOGGING__DISTRIBUTED": "critical"}


_ACTIVE: list = []  # the _Kept local cluster of the run in progress (Ctrl-C stops its nannies)
# multiprocessing's resource tracker, by what it runs (every child's command line names the
# module in the -W option the CLI gives them, so the name alone does not tell it apart)
TRACKER = "from multiprocessing.resource_tracker import main"


def scheduler_address(addr: str) -> str:
    """--scheduler as dask takes it, or a one-line mistake (dask's own: a traceback)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    if not addr.strip():
        raise JobError("--scheduler is empty; give the scheduler's address, e.g. tcp://host:8786")
    try:
        scheme, loc = parse_address(addr.strip())
        if scheme in ("tcp", "tls"):
            _, port = parse_host_port(loc)
            if port is not None and not 0 < int(port) < 65536:
                raise ValueError(f"port {port} is not a port (1-65535)")
        from distributed.comm.registry import get_backend

        get_backend(scheme)
    except (ValueError, TypeError) as e:
        raise JobError(f"--scheduler {addr!r} is not a dask scheduler's address ({e}); "
                       "e.g. tcp://host:8786") from None
    return addr.strip()


def check_workers_see(client, outdir: str | None, source: str | None) -> None:
    """On a cluster the user runs, every worker must see OUTDIR and the scans at the paths this
    machine sees them; a worker that does not would commit its shards elsewhere (the run saying
    done) or turn every scan into "file not found". Asked of the workers there before any shard."""
    paths = [p for p in (outdir, source) if p and "://" not in p]
    if not paths:
        return

    def missing(paths=paths):
        return [p for p in paths if not os.path.exists(p)]

    blind = {w: m for w, m in client.run(missing).items() if m}
    if blind:
        w, m = next(iter(blind.items()))
        what = " and ".join("OUTDIR " + p if p == outdir else "the scans (" + p + ")" for p in m)
        raise JobError(f"{plural(len(blind), 'worker')} (e.g. {w}) cannot see {what}, which this "
                       "machine sees: mount them at the same paths on every worker")


def check_worker_versions(client) -> None:
    """Workers of a cluster the user runs use the package installed where they run: one left
    running an older version (an upgrade on a shared install, a worker not restarted) would
    write other bytes into the same job. Their output version must be this machine's."""
    import pipeline
    from pipeline.client.state import OUTPUT_VERSION

    def version():  # defined here: sent by value, so it runs the worker's own package
        import pipeline
        from pipeline.client import state

        return pipeline.__version__, state.OUTPUT_VERSION

    odd = {w: v for w, v in client.run(version).items() if v[1] != OUTPUT_VERSION}
    if odd:
        names = [client.scheduler_info()["workers"].get(w, {}).get("name") or w for w in odd]
        pkg, out = next(iter(odd.values()))
        raise JobError(f"{plural(len(odd), 'worker')} ({', '.join(map(str, names[:3]))}"
                       f"{' ...' if len(names) > 3 else ''}) run archive-colorizer {pkg} with "
                       f"output version {out}, this machine {pipeline.__version__} with "
                       f"{OUTPUT_VERSION}: their outputs would differ; restart them with this "
                       "machine's version")


def _quiet() -> None:
    """dask's loggers below the run's one-line messages: "distributed" and the ones dask's own
    config gives a level of their own (distributed.client logs a scheduler lost mid-run as 25
    lines of ERROR and traceback)."""
    import distributed  # noqa: F401 - its config sets those levels as it loads

    for name in ["distributed", *(n for n in logging.root.manager.loggerDict
                                  if n.startswith("distributed."))]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _release_nets() -> int:
    """Run on each worker of a cluster the user runs, after the run: its loaded net (about 1 GB)
    is freed, as a shared cluster's workers are not ours to keep memory in. A shard of another
    run still holds its own reference; that run's next shard loads it again (a second or two)."""
    import gc
    import sys

    shard = sys.modules.get("pipeline.worker.shard")
    n = len(shard._COLORIZERS) if shard else 0
    if n:
        shard._COLORIZERS.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return n


HELLO_WAIT = 10.0  # seconds a dask scheduler takes at most to send its greeting


def _speaks_dask(addr: str, timeout: float) -> None:
    """Whether what listens at a tcp:// address greets as a dask scheduler does: at once, with a
    message's length. dask's client waits for that greeting without a limit, so a dashboard's
    port (8787 for 8786, an easy slip) hung a nightly run for ever; and it reads any first bytes
    as a length, so an SSH banner became a traceback allocating exbibytes. OSError and
    TimeoutError where nothing listens (the caller's: try again later)."""
    import socket
    import struct

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, loc = parse_address(addr)
    if scheme != "tcp":
        return  # tls: the greeting comes after a handshake dask's own client makes
    host, port = parse_host_port(loc, 8786)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(HELLO_WAIT)
        head = b""
        try:
            while len(head) < 8:
                more = sock.recv(8 - len(head))
                if not more:
                    break
                head += more
        except TimeoutError:
            pass
    size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    if size is None or not 0 < size < 1 << 26:
        what = (f"says nothing within {HELLO_WAIT:.0f} s" if not head else
                f"answers {head[:8]!r}, not as a dask scheduler")
        raise JobError(f"--scheduler {addr}: something listens there but {what} (a dashboard's "
                       "port? a scheduler listens on 8786 unless told otherwise); nothing ran")


@contextlib.contextmanager
def external_client(o: JobSpec, release: bool = True):
    """A client of the scheduler the user runs (--scheduler), connected before the job is
    written: one that cannot be reached pins nothing (exit 75: try again when it is up). None
    for a local cluster, which make_client starts only when there is work. release: the workers
    let go of the net this run loaded (not a dry run's: it loaded none, and another run may be
    using the workers' now)."""
    if not o.scheduler:
        yield None
        return
    import dask
    from distributed import Client

    _quiet()  # the client's own chatter when a scheduler goes away mid-run is not the run's message
    addr = scheduler_address(o.scheduler)
    # 30 s unless dask's config says (a default too: a dask.config.set made before distributed
    # was imported takes distributed's defaults away with it when it ends)
    timeout = dask.config.get("distributed.comm.timeouts.connect", "30s")
    try:
        _speaks_dask(addr, dask.utils.parse_timedelta(timeout))
        client = Client(addr, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise Unavailable(f"cannot reach the dask scheduler at {o.scheduler} ({e}); nothing ran: "
                          "start it (dask scheduler) or check the address, then run again; or leave "
                          "--scheduler out to run on a local cluster here") from None
    with client:
        try:
            yield client
        finally:
            # a scheduler gone: nothing held there to free (asked anyway, the run waited 30 s,
            # in silence, for the client to give up reconnecting before it said so)
            with contextlib.suppress(Exception):
                if release and client.status == "running":
                    client.run(_release_nets)


@contextlib.contextmanager
def make_client(o: JobSpec, device: str, external=None, log=print):
    """The run's client: `external` (external_client's) as it is, else a local cluster's, whose
    workers are kept (_Kept)."""
    import dask
    from distributed import Client, LocalCluster

    if external is not None:
        if o.workers:  # the cluster's own workers run it: said, not dropped without a word
            log(f"--workers {o.workers} not used: the run goes on the workers of the cluster at "
                f"{o.scheduler} (start more there)")
        yield external
        return
    n = local_workers(o, device)
    if device != "cuda" and n > (os.cpu_count() or 1):  # each loads the model and its batch
        log(f"--workers {n} on {plural(os.cpu_count() or 1, 'core')}: more processes than cores (each holds the "
            "model and a batch in memory) make no more images an hour; 0 chooses for this machine")
    # silence_logs holds only while the cluster is up; a comm that fails after it closes (a
    # failed run's teardown) would still log a traceback under the run's one-line message
    _quiet()
    kw = dict(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
              silence_logs=logging.CRITICAL, memory_limit=0)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _workers_ignore_ctrl_c():
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
        kept = _Kept(cluster, log)
        _ACTIVE.append(kept)
        try:
            yield client
        finally:
            kept.stop.set()
            _ACTIVE.remove(kept)
            _kill_local_workers(client)


class _Kept:
    """A local cluster keeps its workers. A nanny restarts a worker that died (dask's memory
    limit, a crash), but the cluster closes that nanny for good when the new worker has not
    joined within distributed.deploy.lost-worker-timeout (15 s: a restart on a loaded machine
    can take longer), as it does a nanny whose restart failed; the run then waited for a worker
    that never came. The lost one is started anew, under its own name and so its own GPU."""

    def __init__(self, cluster, log, every: float = 2.0):
        import threading

        self.cluster, self.log, self.every = cluster, log, every
        self.stop = threading.Event()
        self.said: set = set()
        threading.Thread(target=self._keep, daemon=True, name="keep-workers").start()

    def _keep(self) -> None:
        c = self.cluster
        while not self.stop.wait(self.every):
            try:
                lost = set(c.worker_spec) - set(c.workers)
                if c.status.name != "running":
                    return
            except Exception:  # noqa: BLE001 - a cluster closing under us: nothing to keep
                return
            for name in lost - self.said:
                self.log(f"colorize: the local cluster's worker {name} did not come back after it "
                         "died (its restart too slow, or failed): starting a new one")
            self.said = lost  # one back in the cluster may be lost, and said, again
            if lost:
                c.scale(len(c.worker_spec))  # opens the names in its spec that have no worker


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Ctrl-C in a terminal reaches every process of the group: the worker processes are to
    leave it to the client (the CLI stops the workers itself) and print no traceback. So the
    main thread blocks SIGINT while the cluster starts: the threads dask starts meanwhile (its
    event loop, which spawns the workers, and restarts a lost one later) inherit the block, and
    a process keeps its parent thread's blocked signals across exec. The client's own handler
    stays in place: a Ctrl-C meanwhile reaches it through another thread (an action of
    "ignore", as before, dropped it, and a trial's run went on to the end)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    # started here, not by the thread that spawns the first worker: starting it unblocks
    # SIGINT in the thread that does (multiprocessing's own block and unblock around it)
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def kill_local_processes() -> int:
    """End this process's children (a local cluster's nannies and workers) at once: what Ctrl-C
    does, so that nothing commits after the CLI has said what is committed. Returns how many."""
    import psutil

    for kept in _ACTIVE:  # a nanny would start a new worker, which could commit after we exit
        kept.stop.set()  # and nor is a closed one replaced
        for nanny in list(getattr(kept.cluster, "workers", {}).values()):
            with contextlib.suppress(Exception):
                nanny.close_gracefully(reason="ctrl-c")
    killed = 0
    for _ in range(3):  # again, should one have been started all the same
        kids = []
        for k in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                # multiprocessing's resource tracker stays: it unlinks the semaphores of the
                # killed workers once this process has gone (killed, it would be relaunched)
                if TRACKER not in " ".join(k.cmdline()):
                    kids.append(k)
        if not kids:
            break
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.kill()
        psutil.wait_procs(kids, timeout=1.0)
        killed += len(kids)
    return killed


def worker_pid() -> int:
    """os.getpid, for client.run: the worker reads a builtin's signature by parsing its text
    (ast.parse) at each call, and CPython 3.11's ast.parse beside another thread's, as torch's
    import parses, can raise SystemError "AST constructor recursion depth mismatch"
    (python/cpython#106905): a test asking for the pids every 10 ms failed a shard so. A Python
    function's signature is read from its code."""
    return os.getpid()


def _kill_local_workers(client) -> None:
    """Our own local workers hold nothing once the run is over (every shard commits before its
    task returns, and writes are complete files), but their interpreters take ~1 s to tear
    torch down: end them at once instead."""
    import signal

    try:
        pids = client.run(worker_pid, wait=True)
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


def wait_for_resource(client, resource: str, timeout: float, log) -> None:
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



def largest_scan(manifest: str, shard: int | None = None, batch_size: int = 8,
                 threads: int = 1, shards: int = 1) -> tuple[str, int, int, float] | None:
    """(path, width, height of the scan that needs most; the bytes a worker needs beside the
    model when its largest scans are in hand at once) for the manifest or one shard; None when
    no header was read."""
    from pipeline.client.jobspec import scans_held
    from pipeline.client.manifest import read_manifest

    t = read_manifest(manifest, columns=["path", "width", "height", "mode"], shard=shard).to_pylist()
    sized = sorted(((r["width"] * r["height"], 16 if (r["mode"] or "").startswith("I") else 8, r)
                    for r in t if r["width"] and r["height"]),
                   key=lambda x: x[0] * PIXEL_BYTES[x[1]], reverse=True)
    if not sized:
        return None
    px, _, r = sized[0]
    busy = max(1, threads) * shards  # a CPU worker runs a shard per dask thread at once
    held = sized[busy:busy + scans_held(batch_size, threads, px) * shards]
    need = sum(p * PIXEL_BYTES[b] for p, b, _ in sized[:busy]) + sum(p * HELD_BYTES[b] for p, b, _ in held)
    return r["path"], r["width"], r["height"], float(need)


def check_worker_memory(client, manifest: str, log, batch_size: int = 8, threads: int | None = None,
                        gpu: bool = False) -> None:
    """A worker whose --memory-limit cannot hold the model is paused by dask at once and the run
    would wait for ever (refused when every worker is so); one that cannot also hold the largest
    scan would be killed on it, and the shard fail after its retries: said before any shard."""
    import dask

    def frac(key: str) -> float:  # dask's defaults: pause at 80 %, terminate at 95 %
        return float(dask.config.get(f"distributed.worker.memory.{key}",
                                     {"pause": 0.8, "terminate": 0.95}[key]) or 1.0)

    every = client.scheduler_info()["workers"]
    workers = [w for w in every.values() if w.get("memory_limit")]
    small = [w for w in workers if MODEL_BYTES > frac("pause") * w["memory_limit"]]
    fix = "dask worker --memory-limit"
    if small:
        what = (f"{_names(small)} {'has a memory limit of' if len(small) == 1 else 'have memory limits up to'} "
                f"{max(w['memory_limit'] for w in small) / GB:.2f} GB: with the model loaded (about "
                f"{MODEL_BYTES / GB:.1f} GB) dask pauses {'it' if len(small) == 1 else 'them'} "
                f"at {frac('pause'):.0%} and {'it takes' if len(small) == 1 else 'they take'} no "
                f"shard; give each at least {(MODEL_BYTES / frac('pause') + 0.5 * GB) / GB:.0f} GB ({fix})")
        if len(small) == len(every):
            raise JobError(f"every worker is too small for the model: {what}")
        log(f"colorize: {what}")
    # the threads a shard runs with (shard_threads), not dask's: `dask worker --nthreads 1`
    # still colours a shard with two
    most = max((w.get("nthreads") or 1 for w in workers), default=1)
    big = largest_scan(manifest, batch_size=batch_size, threads=threads or most,
                       shards=1 if gpu or not threads else most)  # a GPU task holds the GPU alone
    short = [w for w in workers if w not in small and big
             and MODEL_BYTES + big[3] > frac("terminate") * w["memory_limit"]]
    if short:
        want = (MODEL_BYTES + big[3]) / frac("terminate") / GB
        log(f"colorize: {_names(short)} may run out of memory on the largest scans ({big[0]}, "
            f"{big[1]}x{big[2]}, and those held with it: about {(MODEL_BYTES + big[3]) / GB:.1f} GB "
            "with the model): dask "
            f"would restart {'it' if len(short) == 1 else 'them'}, the shard go one scan at a "
            "time (slower), and a scan too large alone end as its error row; give "
            f"{'it' if len(short) == 1 else 'them'} {want:.0f} GB or more ({fix})")


def _names(workers: list[dict]) -> str:
    """Workers as their operator named them (dask worker --name), else by address."""
    names = [str(w.get("name") or w.get("id")) for w in workers]
    return (f"worker {names[0]}" if len(names) == 1 else
            f"{len(names)} workers ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})")
