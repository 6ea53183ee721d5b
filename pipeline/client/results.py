"""The results table's schema (its rows are committed and read by outdir.Outdir)."""

from __future__ import annotations

import pyarrow as pa

# A manifest's own columns (client/manifest.py writes them); any other column is the catalogue's.
# PROBED: what the scan reads from each file's header. catalogue_order: the row's place among
# the catalogues' records as read (1, 2, ...; null for a file no catalogue lists), so that the
# export and the review page give the rows in the archive's own order, not the disk's.
# xmp_sidecar: the XMP file beside the picture (stored as `path` is), merged into its outputs.
# mtime_ns and head_digest (a digest of the file's first and last 64 KiB): what tells a later
# scan that an original of the same size was scanned again (null in a manifest from before).
PROBED = ["size_bytes", "width", "height", "mode", "format", "frames", "scan_error", "mtime_ns",
          "head_digest"]
CORE_COLUMNS = ["image_id", "shard", "path", "rel_path", "out_stem", *PROBED, "catalogue_order",
                "xmp_sidecar", "source_state"]
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
    ("hints", pa.int64()),  # how many curator's hints it was colorized with (null: none)
    ("hints_digest", pa.string()),  # worker/hints.digest of those hints: what audit checks
    # what turned them into colour: the sha256 of the hint model's file (the hint head, or the
    # hint-conditioned net), or "propagation" where none was used; a new head, a new colour
    ("hint_model", pa.string()),
    # the sha256 of the XMP sidecar read with the picture (null: it has none), or "missing" or
    # "unreadable", or one too large's size and time (manifest.sidecar_digest): a sidecar is where a workflow corrects rights and
    # captions, and `audit --check-inputs` tells one edited, or put right, since
    ("sidecar_sha256", pa.string()),
])
