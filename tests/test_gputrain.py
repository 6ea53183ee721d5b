"""Training on a lent GPU (issue 22), proven here on the CPU: the pack, and jobs/gpu_session.sh's
dry run with tiny limits (the check says there is no CUDA; the training runs, checkpoints,
resumes)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_a_pack_holds_every_photo_small_and_fits_its_size(photos, tmp_path):
    from pipeline.model import gputrain

    dest = tmp_path / "pack.npz"
    meta = gputrain.pack(str(photos), str(dest), side=32, max_mb=0.05, log=lambda m: None)
    assert meta["train"] + meta["val"] == 24 and meta["val"] >= 1
    assert os.path.getsize(dest) <= 0.05 * 2**20 and meta["quality"] in gputrain.QUALITIES
    train, val, got = gputrain.load_pack(str(dest), torch.device("cpu"))
    assert train.shape == (meta["train"], 3, 32, 32) and val.shape == (meta["val"], 3, 32, 32)
    assert train.dtype == torch.uint8 and got["train_mean_ab"] == meta["train_mean_ab"]
    # the first photo back, close to the source's centre square
    src = np.asarray(Image.open(sorted(photos.iterdir())[0]).convert("RGB").resize((43, 32)))[:, 5:37]
    assert np.abs(train[0].permute(1, 2, 0).numpy().astype(int) - src.astype(int)).mean() < 12
    # crops keep the colour where it is: a uniform photo stays that colour
    flat = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    c = gputrain.crops(flat, 16, torch.Generator().manual_seed(0))
    assert c.shape == (4, 3, 16, 16) and torch.allclose(c, torch.tensor(200 / 255))
    # featureless gray fields: a share of the batch, their target no colour, their ramp gentle
    x, y = torch.rand(400, 1, 16, 16), torch.rand(400, 2, 16, 16)
    gputrain.neutral_fields(x, y, 0.25, torch.Generator().manual_seed(1))
    flat = y.flatten(1).std(1) == 0
    assert 60 < int(flat.sum()) < 140 and torch.allclose(y[flat], torch.tensor(128 / 255))
    span = x[flat].flatten(1).amax(1) - x[flat].flatten(1).amin(1)
    assert float(span.max()) <= 0.15 * 2**0.5 + 1e-6  # the ramp across a diagonal


def test_minutes_spent_decoding_the_pack_still_train_one_step(photos, tmp_path, ckpt):
    """A loaded machine's dry run spent its 6 s decoding the pack and showed no step: the
    session's check that training runs and resumes saw only the checkpoint it began from."""
    from pipeline.model import gputrain

    pack = tmp_path / "pack.npz"
    gputrain.pack(str(photos), str(pack), side=32, max_mb=1, log=lambda m: None)
    for n in (1, 2):  # and again, resumed: one more
        r = gputrain.train_on_pack(str(pack), str(tmp_path / "t"), minutes=0, every=1, log=lambda m: None,
                                   init=ckpt, batch=4, size=24)
        assert r["step"] == n and r["images"] == 4 * n
    with open(tmp_path / "t" / "metrics.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)][-1] == 2


def test_the_gpu_session_dry_run_trains_checkpoints_and_resumes(photos, tmp_path, ckpt):
    from pipeline.model import gputrain
    from pipeline.model.net import load_checkpoint, save_checkpoint

    pack = tmp_path / "pack.npz"
    gputrain.pack(str(photos), str(pack), side=32, max_mb=1, log=lambda m: None)
    out = tmp_path / "session"
    init = load_checkpoint(ckpt)  # shipped weights carry their tuned chroma gain
    save_checkpoint(tmp_path / "gained.pt", init.model, {**init.meta, "chroma_gain": 1.3})
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "PACK": str(pack), "CHECK_S": "60",
           "TRAIN_MIN": "0.1", "TRAIN_ARGS": f"--init {tmp_path / 'gained.pt'} --batch 8 --size 24 "
                                             "--every 1 --film 0.5 --damage 0.3"}
    r = subprocess.run(["bash", "jobs/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr + (out / "train.log").read_text()
    log = (out / "log.txt").read_text()
    assert "check exit 0" in log and "training exit 0" in log
    assert "dry run" in (out / "check" / "log.txt").read_text()
    best = load_checkpoint(out / "train" / "best.pt")
    assert best.meta["trained_on"] == "gputrain" and best.meta["pack"]["side"] == 32
    assert best.meta["recipe"]["film"] == 0.5 and best.meta["recipe"]["damage"] == 0.3
    assert best.meta["chroma_gain"] == 1.3  # the init's goes along: never scored at gain 1 beside it
    with open(out / "train" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 2 and int(rows[-1]["step"]) > 0
    first_steps = int(rows[-1]["step"])
    # a second session goes on from the first (given 12 s: the pack's decoding counts in its
    # minutes, and on a loaded machine took all of 6 s, leaving no step to see)
    r = subprocess.run(["bash", "jobs/gpu_session.sh"], cwd=ROOT, env={**env, "TRAIN_MIN": "0.2"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in (out / "train.log").read_text()
    with open(out / "train" / "metrics.csv") as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) > first_steps
