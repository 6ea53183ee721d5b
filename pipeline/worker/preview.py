"""The review page's live preview: one image with a curator's hints, colorized by the same
engine as a run (its reader and its Colorizer), in a process of its own so that the review
server (client side) never loads torch.

Protocol, one request per line on stdin: {"path": source, "hints": [...], "max_side": N}; the
answer on stdout is a JSON line {"ok": true, "bytes": n, "hint_model": m} followed by n bytes
of JPEG (m: what made the hints colour, Colorizer.hint_model(); null where no hint lies inside
the image), or {"ok": false, "error": "..."}.

usage: python -m pipeline.worker.preview [CHECKPOINT [SIZE]]  (the job's: what a hinted run makes)
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
from PIL import Image

from pipeline.storage import read_source
from pipeline.worker import hints
from pipeline.worker.imaging import decode, net_input


def preview(net, path: str, hint_list: list, max_side: int = 1024) -> tuple[bytes, str | None]:
    """The source's colour with these hints, at most max_side pixels a side, as JPEG bytes, and
    the hint model that made the hints colour (None where none lies inside the image: the net's
    own colour, as a run then makes it)."""
    d = decode(io.BytesIO(read_source(path)))
    gray = d.gray if d.gray.dtype == np.uint8 else (d.gray >> 8).astype(np.uint8)
    scale = max_side / max(d.width, d.height)
    if scale < 1:  # the preview is seen at screen size: colour it there
        im = Image.fromarray(gray, "L")
        gray = np.array(im.resize((max(1, round(d.width * scale)), max(1, round(d.height * scale))),
                                  Image.BILINEAR, reducing_gap=3.0))
    cells = hints.on_grid(hints.from_json(hint_list), d.width, d.height, net.size)
    ab = net.hinted_ab(net_input(gray, net.size), cells)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(net.recombine(gray, ab))).save(buf, "JPEG", quality=90)
    return buf.getvalue(), net.hint_model() if cells else None


def _warm(net) -> None:
    """One small hinted image through every step first (the hint head, the colour table, the
    first calls' set-up): the curator's first preview then takes what the others take."""
    gray = np.full((64, 64), 128, np.uint8)
    cells = hints.on_grid(hints.from_json([{"x": 32, "y": 32, "a": 20.0, "b": 10.0}]), 64, 64, net.size)
    net.recombine(gray, net.hinted_ab(net_input(gray, net.size), cells))


def main() -> None:
    from pipeline.worker.engine import Colorizer

    # the job's net input size: a job run with --size 64 was previewed at 256, its colour another
    # than the hinted run then made (a curator's trial)
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    net = Colorizer(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, device="auto", size=size)
    _warm(net)
    out = sys.stdout.buffer
    for line in sys.stdin:
        try:
            req = json.loads(line)
            data, model = preview(net, req["path"], req.get("hints") or [], int(req.get("max_side", 1024)))
        except Exception as e:  # one image's trouble is that request's answer, not the process's
            out.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}).encode() + b"\n")
        else:
            out.write(json.dumps({"ok": True, "bytes": len(data), "hint_model": model}).encode() + b"\n" + data)
        out.flush()


if __name__ == "__main__":
    main()
