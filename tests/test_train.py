import csv

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Colorizer
from pipeline.evaluate import evaluate
from pipeline.model import load_checkpoint
from pipeline.train import TrainConfig, train


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Tiny colour photos whose colour follows lightness (dark blue, bright orange): learnable."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(10):
        t = np.clip(rng.random((1, 1)) + np.linspace(0, 1, 48)[None, :, None] * 0.8, 0, 1)
        t = np.repeat(t, 48, axis=0)
        rgb = np.concatenate([t, t * 0.6 + 0.1, 1 - t * 0.9], axis=-1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(d / f"p{i}.png")
    return d


def cfg(photos, out, **kw):
    base = dict(src=str(photos), out=str(out), epochs=4, size=32, batch_size=4, lr=5e-3,
                prescale=48, repeats=2, workers=0, seed=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def metrics(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_tiny_run_loss_falls_and_checkpoint_colorizes(photos, tmp_path):
    summary = train(cfg(photos, tmp_path), log=lambda *_: None)
    rows = metrics(tmp_path)
    assert len(rows) == 4
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck.meta["val_loss"] == pytest.approx(summary["best_val_loss"])
    assert len(ck.meta["train_mean_ab"]) == 2
    gray = np.asarray(Image.open(next(photos.glob("*.png"))).convert("L"))
    out = Colorizer(tmp_path / "best.pt", size=32).colorize([gray])[0]
    assert out.shape == (48, 48, 3)


def test_resume_continues_from_saved_step(photos, tmp_path):
    steps_per_epoch = (9 * 2) // 4  # 9 train photos (1 held out), 2 crops each, full batches
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg(photos, full), log=lambda *_: None)
    train(cfg(photos, part, max_steps=2 * steps_per_epoch), log=lambda *_: None)
    assert load_checkpoint(part / "last.pt").meta["step"] == 2 * steps_per_epoch
    said = []
    s = train(cfg(photos, part, resume=True), log=said.append)
    assert any(f"at epoch 2, step {2 * steps_per_epoch}" in m for m in said)
    assert s["step"] == 4 * steps_per_epoch
    assert [r["epoch"] for r in metrics(part)] == ["1", "2", "3", "4"]
    # same seed, same data order: the resumed run ends where the uninterrupted one did
    a = load_checkpoint(full / "last.pt").model.state_dict()
    b = load_checkpoint(part / "last.pt").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_evaluate_writes_report_with_baselines(photos, tmp_path, ckpt):
    s = evaluate(ckpt, str(photos), str(tmp_path / "ev"), size=32, log=lambda *_: None)
    assert set(s) == {"model", "gray", "mean_ab"}
    assert s["gray"]["colorfulness"] == pytest.approx(0.0, abs=0.5)
    assert s["model"]["original_colorfulness"] > 20
    assert (tmp_path / "ev" / "eval.md").read_text().count("| **mean** |") == 3
    assert Image.open(tmp_path / "ev" / "contact_sheet.png").size[1] == 10 * 164
