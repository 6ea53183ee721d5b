"""A shard whose worker died each time it was tried (dask's KilledWorker: most often its memory,
on a scan too large for it; sometimes a decoder's crash on one odd file) is tried again with its
images one at a time, each named in OUTDIR before it is begun, so that the next try knows which
image the worker died on. An image a worker died on twice with nothing else in hand, while others
of its shard lived, becomes its error row and the shard commits: one scan no longer holds a
night's job back, nor fails it again at every resume. A worker that dies on every image is the
worker's fault, not the scans': no image is blamed and the shard fails as before.

The record lives beside the shard's results (results/.shard-NNNNN.alone.json), for one run: the
client starts it afresh the first time it sends a shard back alone, the worker removes it once
the shard commits, and a run's start sweeps what a killed run left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.client.outdir import Outdir
from pipeline.storage import Store

TRIES = 2  # deaths with the image alone in hand that blame it (one may be the machine's doing)
SUSPECTS = 3  # images the worker died on while none of the shard's lived: the worker's fault
# A death while the worker ran other tasks beside the image (a worker of several threads) may be
# theirs: the image is blamed only with one death that had the worker to itself, or with this many.
SHARED_TRIES = 4


class WorkerDies(RuntimeError):
    """The worker died on several images of a shard, each alone, and none lived: not the scans'
    fault (raised by the shard's last try; the run goes on with its other shards)."""


def rel_of(shard: int) -> str:
    return f"{Outdir.RESULTS}/.shard-{shard:05d}.alone.json"


@dataclass
class Deaths:
    """Which image each try of a shard began last, how often the worker died on each, and
    whether any image of the shard lived through its turn."""

    store: Store
    shard: int
    trying: str | None = None
    deaths: dict[str, int] = field(default_factory=dict)
    lived: bool = False
    tries: int = 0  # tries that started (a queued try dies with a worker killed by another's)
    shared: bool = False  # the image begun shares the worker with other tasks
    solo: dict[str, int] = field(default_factory=dict)  # deaths with the worker to itself
    netless: list[str] = field(default_factory=list)  # ended before the net (an error, a skip)

    @classmethod
    def load(cls, outdir: str, shard: int) -> Deaths:
        """The record as the last try left it, the death it ended with counted, and this try
        counted as started (said at once: the client tells a try that never started from one
        that died)."""
        store = Store(outdir)
        d = cls(store, shard)
        if store.exists(rel_of(shard)):
            was = json.loads(store.read_text(rel_of(shard)))
            d.deaths, d.lived = dict(was.get("deaths") or {}), bool(was.get("lived"))
            d.solo, d.netless = dict(was.get("solo") or {}), list(was.get("netless") or [])
            d.tries = int(was.get("tries") or 0)
            if (t := was.get("trying")) is not None:  # it began that image and never said it ended
                d.deaths[t] = d.deaths.get(t, 0) + 1
                if not was.get("shared"):
                    d.solo[t] = d.solo.get(t, 0) + 1
        d.tries += 1
        d.begin(None)  # counted once, whatever this try dies of next
        return d

    def begin(self, image_id: str | None, shared: bool = False) -> None:
        """Said before an image is begun (None: between images, done, or a try that raised:
        an exception is no death): what the next try counts if this one dies now."""
        self.trying, self.shared = image_id, shared
        self.store.write_atomic(rel_of(self.shard), json.dumps(
            {"trying": image_id, "shared": shared, "deaths": self.deaths, "solo": self.solo,
             "lived": self.lived, "netless": self.netless, "tries": self.tries}).encode())

    def lived_through(self, image_id: str, colorized: bool, netted: bool = True) -> None:
        """Its turn ended (said at once: a death from here on is not its). Only a colorized
        image shows that the worker can colorize: an error or a skip never reached the net."""
        self.lived = self.lived or colorized
        self.deaths.pop(image_id, None)  # a death on it was another's doing
        self.solo.pop(image_id, None)
        if not netted and image_id not in self.netless:
            self.netless.append(image_id)
        self.begin(None)

    def blamed(self, image_id: str, ids: list[str]) -> bool:
        """Died on TRIES times (one of them with the worker to itself, or SHARED_TRIES times)
        while others of its shard lived, or while it is the only one of them that needs the net."""
        d = self.deaths.get(image_id, 0)
        enough = d >= TRIES and (self.solo.get(image_id, 0) >= 1 or d >= SHARED_TRIES)
        return enough and (self.lived or [i for i in ids if i not in self.netless] == [image_id])

    def hopeless(self, ids: list[str]) -> bool:
        """None of the shard's images was colorized, and the worker died on SUSPECTS of them or
        on one TRIES times: it is the worker (too little memory for any of them, or broken).
        Images that end before the net (errors, skips) say nothing of it either way."""
        ids = [i for i in ids if i not in self.netless]
        if self.lived or len(ids) < 2:
            return False
        died = [self.deaths[i] for i in ids if self.deaths.get(i)]
        return len(died) >= SUSPECTS or max(died, default=0) >= TRIES

    @staticmethod
    def forget(store: Store, shard: int) -> None:
        store.remove(rel_of(shard))

    @staticmethod
    def said(store: Store, shard: int) -> tuple[int, bool]:
        """(tries started, whether the last died with an image begun) as the record says."""
        try:
            was = json.loads(store.read_text(rel_of(shard)))
        except (OSError, ValueError):  # none yet: no try has started
            return 0, False
        return int(was.get("tries") or 0), was.get("trying") is not None
