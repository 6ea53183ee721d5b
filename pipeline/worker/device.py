"""Where torch work runs, decided in one place: the device, its autocast, host -> device copies
and the CPU's thread count. torch is imported only when a question needs it: a run's client
asks which device its workers will use without loading it (~1 GB and ~2 s)."""

from __future__ import annotations

import contextlib
import os

GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")


def device_type(name: str) -> str:
    """"cpu" or "cuda": what `name` (auto, cpu, cuda, cuda:N) means on this machine. Without a
    GPU driver, "auto" is the CPU, known without importing torch."""
    if name == "cpu" or (name == "auto" and not any(map(os.path.exists, GPU_DRIVER_FILES))):
        return "cpu"
    return pick_device(name).type


def pick_device(name: str = "auto"):
    """The torch.device for `name`; a device this machine lacks is the user's mistake."""
    import torch

    from pipeline.errors import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def autocast(device, cpu_bf16: bool = False):
    """The net's precision on `device`: bfloat16 autocast on a GPU (tensor cores; a/b need no
    more), full float32 on the CPU: its bf16 inference is slower here, and its outputs are part of
    a job's identity. cpu_bf16: training's choice, where bf16 halves a step on AVX-512 BF16 CPUs."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(a, device):
    """numpy -> a tensor on `device`; on CUDA through pinned memory so the copy overlaps work."""
    import torch

    t = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch refuses read-only arrays
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def use_threads(device, n: int) -> None:
    """A CPU worker's share of the cores. OpenMP keeps the setting per calling thread, so it is
    made on every shard, in the thread that runs it."""
    if device.type == "cpu":
        import torch

        torch.set_num_threads(n)


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
