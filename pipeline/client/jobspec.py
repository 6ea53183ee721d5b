"""The job spec: every option of `colorize run`, written once (no torch).

Each field carries its flag's help, its type check and choices, and whether it is part of the
job's identity (it changes the output bytes, so a rerun with it changed is another job). The
CLI's flags, the TOML keys and their checks, the fingerprint and what a shard is given are all
derived from this one class: adding a run option is adding a field here (and using it).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from pipeline.worker.imaging import DEFAULT_MAX_PIXELS
from pipeline.worker.writers import CHOICES, format_arg

# --- value checks shared by flags and TOML keys --------------------------------------------------


def whole_number(s) -> int:
    """int(s), with a message a person reads (argparse would name this function)."""
    try:
        return int(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None


def _number(s) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None


def positive_int(s: str) -> int:
    v = whole_number(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def count_arg(s: str) -> int:
    """0 or more: 0 means "choose for me" where the option says so."""
    v = whole_number(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def quality_arg(s: str) -> int:
    v = whole_number(s)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be 1 to 100, got {v}")
    return v


def fraction_arg(s: str) -> float:
    v = _number(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def unit_arg(s: str) -> float:
    v = _number(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {s}")
    return v


def share_arg(s: str) -> float:
    v = _number(s)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {s}")
    return v


def positive_float(s: str) -> float:
    v = _number(s)
    if not v > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def size_arg(s: str) -> int:
    v = whole_number(s)
    if v < 8 or v % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8, got {v}")
    return v


def opt(default, help: str, *, identity: bool = False, type=None, choices=None, flags=None,
        metavar=None):
    """A JobSpec (or TrainConfig) field. identity: part of the fingerprint. flags: the CLI's
    names (default --the-field-name; () for none); a bool field is a store_true flag."""
    return field(default=default, metadata=dict(help=help, identity=identity, type=type,
                                                choices=choices, flags=flags, metavar=metavar))


@dataclass(frozen=True)
class JobSpec:
    manifest: str = opt("", "the manifest Parquet written by `colorize scan`")
    output: str = opt("", "where images, results and job.json go", flags=("-o", "--output"),
                      metavar="OUTDIR")
    checkpoint: str | None = opt(None, "weights (.pt); default: the shipped weights")
    size: int = opt(256, "net resolution (multiple of 8)", identity=True, type=size_arg)
    batch_size: int = opt(8, "images per net call", identity=True, type=positive_int)
    format: str = opt("png", "output format (jpg and tif are accepted; same: the source's where "
                      "it can be written, else png)", identity=True, type=format_arg,
                      choices=CHOICES)
    quality: int = opt(95, "JPEG quality (1-100)", identity=True, type=quality_arg)
    device: str = opt("auto", "where the net runs", identity=True, choices=("auto", "cpu", "cuda"))
    recolor: bool = opt(False, "colorize colour inputs too", identity=True)
    compile: bool = opt(False, "torch.compile the net and the 16-bit colour step (needs a C++ "
                        "compiler; the net ~1.4x faster alone, no faster end to end on 2 cores)",
                        identity=True)
    jpeg_decode: str = opt("cpu", "decode gray JPEGs with Pillow (cpu) or in one call per batch on "
                           "the net's device (nvJPEG on a GPU)", identity=True, choices=("cpu", "device"))
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse larger images as decompression bombs",
                          identity=True, type=positive_int)
    metadata_columns: str = opt("auto", "catalogue columns written into every output's XMP, as "
                                "identifier=COLUMN,title=COLUMN,rights=COLUMN,creator=COLUMN "
                                "('auto': identifier and title guessed from the column names, e.g. "
                                "Inventarnummer, Titel; 'none'; a field from several columns, the first "
                                "with a cell: identifier='Inventarnummer||Accession No.')", identity=True,
                                metavar="FIELD=COLUMN,...")
    workers: int = opt(0, "local worker processes (0: auto)", type=count_arg)
    threads: int = opt(0, "threads per worker (0: auto)", type=count_arg)
    scheduler: str | None = opt(None, "use this dask cluster", metavar="ADDR")
    window: int = opt(0, "shards in flight (0: 2 per worker)", type=count_arg)
    retries: int = opt(2, "retries of a failed shard", type=count_arg)
    resource_timeout: float = opt(300.0, "seconds to wait for a GPU worker on --scheduler",
                                  type=positive_float)
    dry_run: bool = opt(False, "say what would run, run nothing")
    restart: bool = opt(False, "discard OUTDIR's results and start over")
    repair: bool = opt(False, "after an audit: redo missing/altered outputs, quarantine strays")
    quiet: bool = opt(False, "no progress bar, and no progress: lines in a log", flags=("-q", "--quiet"))

    @property
    def progress(self) -> bool:
        return not self.quiet


# batch_size and device are identity too: the net's arithmetic (and so the last bit of a colour)
# depends on the batch a photo shares and on the device it runs on.
IDENTITY_FIELDS = tuple(f.name for f in fields(JobSpec) if f.metadata["identity"])
# What else makes a job's identity: its inputs' digests and the output encoding's version.
FINGERPRINT_KEYS = ("manifest_digest", "checkpoint_sha256", "output_version", *IDENTITY_FIELDS)


def add_flags(parser: argparse.ArgumentParser, spec=None) -> None:
    """One flag per field of the spec class (JobSpec by default), with its default, type,
    choices and help."""
    for f in fields(spec or JobSpec):
        m = f.metadata
        if m["flags"] == ():
            continue
        names = m["flags"] or ("--" + f.name.replace("_", "-"),)
        default = f.default if f.default is not MISSING else None
        if f.type in ("bool", bool):
            parser.add_argument(*names, dest=f.name, action="store_true", help=m["help"])
            continue
        help_ = m["help"] + (f" (default: {default})" if default not in (None, "") else "")
        kw = dict(dest=f.name, default=default, help=help_)
        for k in ("type", "choices", "metavar"):
            if m[k] is not None:
                kw[k] = m[k]
        parser.add_argument(*names, **kw)


def from_args(a: argparse.Namespace) -> JobSpec:
    return JobSpec(**{f.name: getattr(a, f.name) for f in fields(JobSpec)})


# How far a worker decodes ahead of the net, in pixels, beyond one scan per decoding thread
# (about 256 MB of 8-bit gray, 512 MB of 16-bit).
AHEAD_PIXELS = 256_000_000


def read_ahead(batch_size: int, threads: int) -> tuple[int, int]:
    """(window, busy): a worker decodes and writes up to `window` scans ahead of the net, and
    at least `busy` (every decoding thread at work) however large (worker/shard.py _Flow)."""
    return max(2, 2 * batch_size), max(2, threads)


def scans_held(batch_size: int, threads: int, pixels: int) -> int:
    """How many scans of this size a worker holds decoded besides those it colours: a batch,
    and those read ahead: what the memory check counts."""
    window, busy = read_ahead(batch_size, threads)
    return batch_size + min(window, max(busy, -(-AHEAD_PIXELS // max(1, pixels))))


# A worker's memory: torch and the model loaded (about 1.0-1.1 GB on a CPU worker, measured),
# per pixel of each scan it colours at once (one per thread) about 14 bytes at 8 bits, 28 at
# 16 (its decode, the colour, the encoded output), and about 3 (6) per pixel of each scan it
# holds decoded meanwhile (a batch, those read ahead: scans_held). Measured on
# 28.8-MP gray PNGs, 2 threads: one scan 1.37 GB in all, twelve 2.32 GB at --batch-size 2 and
# 2.71 at 8 (estimated 1.5, 2.4, 2.8); a 121-MP gray PNG alone peaked at 2.6 GB.
MODEL_BYTES = 1.1e9
PIXEL_BYTES = {8: 14, 16: 28}
HELD_BYTES = {8: 3, 16: 6}
GB = 1e9


def alone_bytes(width: int, height: int, mode: str | None = None) -> float:
    """What a worker holds with one scan alone in hand, the model included."""
    return MODEL_BYTES + width * height * PIXEL_BYTES[16 if (mode or "").startswith("I") else 8]
