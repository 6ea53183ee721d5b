"""A before/after contact sheet of a run as one JPEG, for the model card (issue 23: real
historical scans as the pipeline left them, beside what they were).

Each tile is a scan and its output side by side at one height; a scan the run skipped (judged
a colour image) or failed on is shown with its reason in place of an output, so the sheet says
what the run did, not only what went well. Every k-th row of the run's results, in id order.

usage: python -m jobs.before_after_sheet OUTDIR DEST.jpg [--tiles 24] [--cols 3] [--height 150]
"""

from __future__ import annotations

import argparse
import glob
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.client.audit import thumbnail


def _thumb(path: str, h: int) -> Image.Image:
    """As the audit's (16-bit scans at 8 bits), in the scan's own tone: a toned print stays toned."""
    with open(path, "rb") as fh:
        return thumbnail(fh.read(), h)


def _label(tile: Image.Image, text: str) -> Image.Image:
    lines = textwrap.wrap(text, max(8, tile.width // 7))
    ImageDraw.Draw(tile).multiline_text((4, 4), "\n".join(lines), fill=(255, 255, 255))
    return tile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir"), ap.add_argument("dest")
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--cols", type=int, default=3)
    ap.add_argument("--height", type=int, default=150)
    a = ap.parse_args()
    rows = sorted((r for f in sorted(glob.glob(f"{a.outdir}/results/*.parquet"))
                   for r in pq.read_table(f).to_pylist()), key=lambda r: r["image_id"])
    step = max(1, len(rows) // a.tiles)
    tiles = []
    for r in rows[::step][: a.tiles]:
        before = _thumb(r["source_path"], a.height)
        if r["status"] == "ok":
            after = _thumb(str(Path(a.outdir) / r["output_path"]), a.height)
        else:
            after = _label(Image.new("RGB", before.size, (40, 40, 40)), f"{r['status']}: {r.get('error') or ''}"[:60])
        pair = Image.new("RGB", (before.width + after.width + 4, a.height), (255, 255, 255))
        pair.paste(before, (0, 0)), pair.paste(after, (before.width + 4, 0))
        tiles.append(pair)
    width = max(t.width for t in tiles)
    cols = a.cols
    nrows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (width + 8), nrows * (a.height + 8)), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (width + 8) + (width - t.width) // 2, (i // cols) * (a.height + 8)))
    sheet.save(a.dest, quality=85, optimize=True)
    print(f"{a.dest}: {len(tiles)} of {len(rows)} images, {sheet.width} x {sheet.height}")


if __name__ == "__main__":
    main()
