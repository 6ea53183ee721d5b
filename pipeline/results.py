"""The results table: its schema, the atomic per-shard commit, and reading it back."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("ok", "error", "skipped")
SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("shard", pa.int64()),
    ("source_path", pa.string()),
    ("output_path", pa.string()),  # relative to OUTDIR; null unless ok
    ("status", pa.string()),
    ("error", pa.string()),  # the reason, for error and skipped rows
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("input_mode", pa.string()),
    ("input_kind", pa.string()),  # gray | toned | color
    ("bits", pa.int64()),
    ("notes", pa.string()),
    ("source_sha256", pa.string()),
    ("output_sha256", pa.string()),
    ("output_bytes", pa.int64()),
    ("colorfulness", pa.float64()),  # Hasler-Suesstrunk of the output; near 0 = came out gray
    ("checkpoint_sha256", pa.string()),
    ("seconds", pa.float64()),
])


def shard_file(outdir: str | os.PathLike, shard: int) -> Path:
    return Path(outdir) / "results" / f"shard-{shard:05d}.parquet"


def committed_shards(outdir: str | os.PathLike) -> set[int]:
    d = Path(outdir) / "results"
    if not d.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in d.glob("shard-*.parquet")}


def to_table(rows: list[dict], carried: pa.Schema | None = None) -> pa.Table:
    fields = list(SCHEMA) + [f for f in (carried or []) if f.name not in SCHEMA.names]
    schema = pa.schema(fields)
    return pa.Table.from_pylist(rows, schema=schema)


def write_shard(outdir: str | os.PathLike, shard: int, table: pa.Table) -> Path:
    """The commit: written last, fsynced, renamed into place. A shard is done iff this exists."""
    final = shard_file(outdir, shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_results(outdir: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    files = sorted((Path(outdir) / "results").glob("shard-*.parquet"))
    if not files:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="default")
