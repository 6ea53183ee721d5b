"""What a run measures of itself: its pace once every worker is warm, and the workers' peak memory
(each process's own: worker/device.peak_rss_mb)."""

from __future__ import annotations

import time
from collections import Counter


def steady_rate(spans: list[tuple]) -> float | None:
    """Images/s once every worker has finished its first shard (startup excluded): each shard
    counts with the part of it that falls in that window, as if its images went at an even pace.
    spans: (worker, started, finished, images) per shard, on the workers' clocks. None when the
    window is empty (a single shard per worker, say)."""
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


def rate_words(rate: float) -> str:
    """A rate as a person reads it: big masters go at a few a minute, and "0.0 images/s" said
    nothing of it."""
    return f"{rate:.1f} images/s" if rate >= 1 else f"{rate * 60:.1f} images/min"


class Tally:
    """A run's totals, from the summaries its shards send back as they commit."""

    def __init__(self, t_start: float, say=None, of: tuple[int, int] = (0, 0), every: float = 300.0):
        self.t_start = t_start  # perf_counter when the run began, cluster start included
        self.totals: Counter = Counter()
        self.spans: list[tuple] = []  # (worker, started, finished, images) per shard
        # a run's log with no progress bar (cron, a service, a file) gets a line every `every`
        # seconds: (shards, images) this run does
        self.say, self.of, self.every = say, of, every
        # the last progress line, the last commit, the last idle line (a commit after an idle
        # line is said at once: the log's last word is not "no shard committed" once one has)
        self.said = self.last = self.idled = time.perf_counter()

    def add(self, s: dict) -> None:
        for k in ("images", "ok", "error", "skipped"):
            self.totals[k] += s[k]
        self.totals["worker_peak_rss_mb"] = max(self.totals["worker_peak_rss_mb"], s["peak_rss_mb"])
        if "startup_s" not in self.totals:
            # cluster start, imports and weights: what a longer job amortises
            self.totals["startup_s"] = time.perf_counter() - self.t_start - s["seconds"] + s["setup_s"]
        self.spans.append((s["worker"], s["finished"] - s["seconds"], s["finished"], s["images"]))
        now = self.last = time.perf_counter()
        if self.say and (now - self.said >= self.every or self.idled > self.said):
            self.said = now
            n, rate = self.totals["images"], self.totals["images"] / (now - self.t_start)
            left = (self.of[1] - n) / rate if rate else 0
            self._say(f"progress: {len(self.spans)} of {self.of[0]} shards committed ({n:,} of "
                     f"{self.of[1]:,} images: {self.totals['ok']:,} ok, {self.totals['error']:,} "
                     f"error, {self.totals['skipped']:,} skipped); {rate_words(rate)}, "
                     + ("less than a minute" if left < 60 else f"about {round(left / 60)} min") + " to go")

    def idle(self) -> None:
        """Asked every few seconds (the run's watch): a log that stops at a commit, the night's
        last line, left the operator to guess whether the run hung or its shards are slow."""
        now = time.perf_counter()
        if self.say and len(self.spans) < self.of[0] and now - max(self.idled, self.last) >= self.every:
            self.idled = now
            self._say(f"progress: no shard committed for {round((now - self.last) / 60)} min "
                      f"({len(self.spans)} of {self.of[0]} so far); the run goes on")

    def _say(self, line: str) -> None:
        """When, on each line: a log read in the morning tells when the run slowed or stopped."""
        self.say(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")

    def so_far(self) -> dict:
        """What this run has committed until now: a run a signal or a failure ends says so in its
        summary (a time-limited batch job's said null while its job had shards more)."""
        elapsed = time.perf_counter() - self.t_start
        done = {k: self.totals[k] for k in ("ok", "error", "skipped")}
        n = sum(done.values())  # (not totals["images"]: a signal may land while add() counts)
        return {"images": n, **done,
                "elapsed": elapsed, "images_per_s": n / elapsed if elapsed else 0.0}

    def summary(self) -> dict:
        out = dict(self.totals)
        steady = steady_rate(self.spans)
        if steady:
            out["steady_images_per_s"] = steady
        return out
