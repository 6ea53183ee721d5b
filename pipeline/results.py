"""The results table: its schema, the atomic per-shard commit, and reading it back."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Store, as_store

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
    ("redone", pa.string()),  # set when `run --redo` remade it: "redo", or the options (--recolor)
])


def shard_rel(shard: int) -> str:
    return f"results/shard-{shard:05d}.parquet"


def shard_file(outdir: str | os.PathLike | Store, shard: int) -> str:
    return as_store(outdir).full(shard_rel(shard))


def committed_shards(outdir: str | os.PathLike | Store) -> set[int]:
    return {int(p.rsplit("-", 1)[1].split(".")[0])
            for p in as_store(outdir).glob("results/shard-*.parquet")}


def to_table(rows: list[dict], carried: pa.Schema | None = None) -> pa.Table:
    fields = list(SCHEMA) + [f for f in (carried or []) if f.name not in SCHEMA.names]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def write_shard(outdir: str | os.PathLike | Store, shard: int, table: pa.Table) -> str:
    """The commit: written last and whole (rename or single PUT). Done iff this file exists."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store = as_store(outdir)
    store.write_atomic(shard_rel(shard), buf.getvalue())
    return store.full(shard_rel(shard))


def read_shard(outdir: str | os.PathLike | Store, shard: int) -> pa.Table:
    store = as_store(outdir)
    return pq.read_table(io.BytesIO(store.read_bytes(shard_rel(shard))))


def read_results(outdir: str | os.PathLike | Store, columns: list[str] | None = None) -> pa.Table:
    store = as_store(outdir)
    files = store.glob("results/shard-*.parquet")
    if not files:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    tables = [pq.read_table(store.full(f), columns=columns, filesystem=store.fs) for f in files]
    return pa.concat_tables(tables, promote_options="default")
