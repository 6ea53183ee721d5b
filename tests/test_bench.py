"""`colorize bench` at toy size: every measure runs, and the table says what was measured."""

import re

import pytest

from pipeline.bench.bench import bench, floor_of
from pipeline.client.metrics import steady_rate


def test_steady_rate_starts_when_every_worker_is_warm():
    # one worker: shards after its first, exactly
    assert steady_rate([("a", 0, 10, 10), ("a", 10, 12, 10), ("a", 12, 14, 10)]) == 5.0
    # two workers: b warms up slower (first shard ends at 12); a's shard 10..14 counts half
    spans = [("a", 0, 10, 10), ("b", 0, 12, 10), ("a", 10, 14, 20), ("b", 12, 16, 20)]
    assert steady_rate(spans) == pytest.approx((20 * 2 / 4 + 20) / (16 - 12))
    assert steady_rate([("a", 0, 10, 10)]) is None  # nothing after the first shard
    assert steady_rate([]) is None


def test_a_run_of_one_shard_is_measured_without_a_steady_rate():
    """A trial's bench of 8 scans (one shard: no steady rate, None in the run's summary) ended in
    a TypeError."""
    from math import isnan

    from pipeline.bench.bench import against_floors

    got = against_floors({"images_per_s": 4.0, "steady_images_per_s": None, "elapsed": 2.0}, 8.0, 2.0)
    assert (got["wall_over_floor"], got["wall_over_naive"]) == (0.5, 2.0) and isnan(got["steady_over_floor"])


def test_floor_is_the_shared_or_parallel_limit():
    assert floor_of(60.0, 30.0, "cpu") == pytest.approx(20.0)  # 1/(1/60 + 1/30)
    assert floor_of(60.0, 30.0, "cuda") == 30.0


@pytest.mark.slow
def test_bench_measures_everything_and_appends_the_table(ckpt, tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# old\n")
    said = []
    r = bench(count=6, width=96, height=64, size=32, batch=2, device="cpu", checkpoint=ckpt,
              naive_count=2, memory=None, append=str(md), log=said.append, net_seconds=0.3,
              shard_size=2, formats=("tiff",), compiled=False)
    # each figure is said as soon as it is measured: a run cut off by a time limit keeps them
    assert f"net only: {r['net']:.2f} images/s; I/O only ..." in said
    assert f"I/O only: {r['io']:.2f} images/s; pipeline (colorize run on a LocalCluster) ..." in said
    assert r["net"] > 0 and r["io"] > 0 and r["naive"] > 0
    d = r["runs"]["default"]
    assert d["wall"] > 0 and d["steady"] > 0 and d["startup_s"] >= 0
    assert d["floor"] == pytest.approx(1 / (1 / r["net"] + 1 / r["io"]))
    assert d["steady_over_floor"] == pytest.approx(d["steady"] / d["floor"])
    assert d["wall_over_naive"] == pytest.approx(d["wall"] / r["naive"])
    text = md.read_text()
    assert text.startswith("# old\n")  # appended, not overwritten
    assert "6 gray JPEG scans of 96x64, net at 32, batch 2, device cpu" in text
    assert f"| net only | {r['net']:.2f} |" in text
    assert "`colorize run`, steady" in text and "naive loop" in text
    for fmt in ("tiff",):  # each output format against its own I/O floor
        x = r["runs"][f"format-{fmt}"]
        assert x["floor"] == pytest.approx(1 / (1 / r["net"] + 1 / r["io_by_format"][fmt]))
        assert f"`colorize run --format {fmt}`, steady" in text
        assert f"| I/O only, `--format {fmt}` | {r['io_by_format'][fmt]:.2f} |" in text
    # the compiled rows were not asked for (tests/test_engine.py compiles the net): said, not faked
    assert "| net only, `torch.compile` | nan |" in text and "compiled" not in r["runs"]


def test_a_run_without_a_progress_bar_says_its_progress_every_few_minutes():
    """A cron job's or a service's log has no bar (not a terminal): a line every `every`
    seconds with the shards and images done, their rate and the time left."""
    import time

    from pipeline.client.metrics import Tally

    said = []
    t = Tally(time.perf_counter() - 10, said.append, (4, 40), every=3600)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # when: a log read in the morning

    def shard(n):
        return dict(images=n, ok=n - 1, error=1, skipped=0, peak_rss_mb=1, seconds=1, setup_s=0,
                    worker="a", finished=5)

    t.add(shard(10))
    assert said == []  # not an hour yet
    t.every = 0
    t.add(shard(10))
    assert len(said) == 1 and re.match(stamp + re.escape("progress: 2 of 4 shards committed (20 of 40 "
                                                         "images: 18 ok, 2 error, 0 skipped); "), said[0])
    rate = float(said[0].split("; ")[1].split(" images/s")[0])
    assert 1.5 < rate < 2.1 and said[0].endswith("less than a minute to go")
    # no commit for a while: said, on the watch's look, once per `every` (a hang, or slow shards)
    t.every, t.last = 300, time.perf_counter() - 610
    t.said = t.idled = t.last
    t.idle()
    t.idle()
    assert len(said) == 2 and re.fullmatch(
        stamp + re.escape("progress: no shard committed for 10 min (2 of 4 so far); the run goes on"), said[1])
    t.idled -= 300
    t.idle()
    assert len(said) == 3
    t.add(shard(10))  # the first commit after an idle line: said at once, not five minutes on
    assert len(said) == 4 and "progress: 3 of 4 shards committed" in said[3]
    t.add(shard(10))
    n = len(said)
    t.last = t.said = t.idled = time.perf_counter() - 1000
    t.idle()  # every shard in: nothing is awaited
    assert len(said) == n


def test_the_runs_watch_asks_for_its_idle_line_while_it_waits_for_a_worker():
    """The watch said "no worker" once and stopped looking: a run waiting for hours for its
    cluster logged nothing more."""
    import time

    from pipeline.client.orchestrate import _Watch

    said, ticks = [], []

    class Cluster:
        def scheduler_info(self):
            return {"workers": {}}

    w = _Watch(Cluster(), "tcp://10.0.0.1:8786", said.append, after=0.1, every=0.02,
               tick=lambda: ticks.append(time.monotonic()))
    deadline = time.monotonic() + 20  # a busy machine runs the thread late
    while not said and time.monotonic() < deadline:
        time.sleep(0.02)
    n = len(ticks)
    while len(ticks) <= n and time.monotonic() < deadline + 20:
        time.sleep(0.02)
    w.stop()
    assert len(said) == 1 and "no dask worker connected" in said[0]  # said once
    assert len(ticks) > n  # and the watch goes on
