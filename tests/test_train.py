import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.model.evaluate import evaluate
from pipeline.model.net import load_checkpoint
from pipeline.model.train import TrainConfig, train
from pipeline.worker.engine import Colorizer


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


@pytest.mark.parametrize("bf16", [False, True])
def test_tiny_run_loss_falls_and_checkpoint_colorizes(photos, tmp_path, bf16):
    summary = train(cfg(photos, tmp_path, bf16=bf16), log=lambda *_: None)
    rows = metrics(tmp_path)
    assert len(rows) == 4
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck.meta["val_loss"] == pytest.approx(summary["best_val_loss"])
    assert ck.meta["recipe"]["bf16"] is bf16
    assert all(p.dtype == torch.float32 for p in ck.model.parameters())  # autocast, not a bf16 net
    assert len(ck.meta["train_mean_ab"]) == 2
    gray = np.asarray(Image.open(next(photos.glob("*.png"))).convert("L"))
    out = Colorizer(tmp_path / "best.pt", size=32).colorize([gray])[0]
    assert out.shape == (48, 48, 3)


def test_resume_continues_from_saved_step(photos, tmp_path, monkeypatch):
    steps_per_epoch = (9 * 2) // 4  # 9 train photos (1 held out), 2 crops each, full batches
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg(photos, full), log=lambda *_: None)
    train(cfg(photos, part, max_steps=2 * steps_per_epoch), log=lambda *_: None)
    assert load_checkpoint(part / "last.pt").meta["step"] == 2 * steps_per_epoch
    said = []
    s = train(cfg(photos, part, resume=True), log=said.append)
    assert any(f"at epoch 2, step {2 * steps_per_epoch}" in m for m in said)
    # which photo was held out, listed for `colorize evaluate` (a trial scored its training photos)
    held = (part / "val.txt").read_text().splitlines()
    assert len(held) == 1 and Path(held[0]).parent == photos and said[0].startswith(
        f"9 photos to train on, 1 held out for validation (listed in {part / 'val.txt'}")
    assert s["step"] == 4 * steps_per_epoch
    # the list is of whole paths: a relative SRC's held-out photos are found from OUT's folder too
    from pipeline.model.evaluate import eval_photos
    from pipeline.model.train import _said_split

    monkeypatch.chdir(photos.parent)
    _said_split(part / "rel", [], [f"{photos.name}/p3.png"], log=said.append)
    assert [p for p, _ in eval_photos(str(part / "rel" / "val.txt"), str(tmp_path))] == [str(photos / "p3.png")]
    assert [r["epoch"] for r in metrics(part)] == ["1", "2", "3", "4"]
    # same seed, same data order: the resumed run ends where the uninterrupted one did
    a = load_checkpoint(full / "last.pt").model.state_dict()
    b = load_checkpoint(part / "last.pt").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_evaluate_on_gray_photos_alone_is_a_mistake_said_in_one_line(tmp_path, ckpt):
    """A folder of gray photos has no true colour to score against (a trial's traceback)."""
    from pipeline.errors import UsageError

    (tmp_path / "g").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)).save(tmp_path / "g" / "a.png")
    with pytest.raises(UsageError, match="every photo in .* is gray: evaluate scores the colour"):
        evaluate(ckpt, str(tmp_path / "g"), str(tmp_path / "ev"), size=32, log=lambda *_: None)
    # beside a colour photo, the gray one and a file that does not read are left out, each named
    # (a trial's unreadable file ended the whole evaluation with Pillow's words)
    Image.new("RGB", (64, 48), (200, 40, 30)).save(tmp_path / "g" / "red.png")
    (tmp_path / "g" / "bad.jpg").write_bytes(b"not a jpeg")
    said = []
    assert evaluate(ckpt, str(tmp_path / "g"), str(tmp_path / "ev"), size=32, log=said.append)["n"] == 1
    assert f"1 file left out, not read as a photo: {tmp_path / 'g' / 'bad.jpg'} (cannot identify image file" in said[0], said
    assert said[1] == "1 gray photo left out (a.png): no true colour to score against", said


def test_evaluate_writes_report_with_baselines(photos, tmp_path, ckpt):
    s = evaluate(ckpt, str(photos), str(tmp_path / "ev"), size=32, log=lambda *_: None)
    assert set(s) == {"model", "gray", "mean_ab", "n", "sources", "flat"}
    assert s["n"] == 10
    assert s["gray"]["colorfulness"] == pytest.approx(0.0, abs=0.5)
    assert s["model"]["original_colorfulness"] > 20
    assert [f["level"] for f in s["flat"]] == [60, 128, 200]
    assert (tmp_path / "ev" / "eval.md").read_text().count("| **all** |") == 3
    assert Image.open(tmp_path / "ev" / "contact_sheet.png").size[1] == 10 * 164
    o = evaluate(ckpt, str(photos), str(tmp_path / "ortho"), size=32, log=lambda *_: None, film="ortho")
    assert "as ortho film saw each photo" in (tmp_path / "ortho" / "eval.md").read_text()
    assert o["gray"]["psnr"] != s["gray"]["psnr"]  # another lightness, compared with the same photos
    d = evaluate(ckpt, str(photos), str(tmp_path / "dmg"), size=32, log=lambda *_: None, damage=1.0)
    assert "Old-print damage" in (tmp_path / "dmg" / "eval.md").read_text()
    # gray's colour is none either way; its lightness is scratched, so it is further from the photo
    assert d["gray"]["ab_mse"] == pytest.approx(s["gray"]["ab_mse"], rel=1e-3)
    assert d["gray"]["psnr"] < s["gray"]["psnr"]
    again = evaluate(ckpt, str(photos), str(tmp_path / "dmg2"), size=32, log=lambda *_: None, damage=1.0)
    assert again["model"]["ab_mse"] == d["model"]["ab_mse"]  # seeded: every checkpoint sees the same
    # one photo is scored as one (a trial's was read as a text list of paths: "holds NUL bytes")
    one = evaluate(ckpt, str(photos / "p3.png"), str(tmp_path / "one"), size=32, log=lambda *_: None)
    assert one["n"] == 1
    from pipeline.cli import build_parser  # and every scan damaged is a share the option takes

    assert build_parser().parse_args(["evaluate", str(photos), "--damage", "1"]).damage == 1.0


def test_evaluate_reports_a_collections_eval_split_per_source(photos, tmp_path, ckpt):
    """A collection (pipeline.model.traindata's manifest): only its eval rows are scored, by source."""
    import csv as _csv

    files = sorted(photos.glob("*.png"))
    coll = tmp_path / "coll"
    coll.mkdir()
    with open(coll / "manifest.csv", "w", newline="") as f:
        w = _csv.DictWriter(f, ["sha256", "source", "split", "path", "cache"])
        w.writeheader()
        for i, p in enumerate(files):
            w.writerow(dict(sha256=str(i), source="odd" if i % 2 else "even",
                            split="eval" if i < 7 else "train", path=str(p), cache=""))
    s = evaluate(ckpt, str(coll), str(tmp_path / "ev"), size=32, log=lambda *_: None)
    assert s["n"] == 7
    assert {k: v["n"] for k, v in s["sources"].items()} == {"even": 4, "odd": 3}
    assert s["sources"]["odd"]["gray"]["ab_mse"] != s["sources"]["even"]["gray"]["ab_mse"]
    sheet = Image.open(tmp_path / "ev" / "contact_sheet.png")
    assert sheet.size[1] == 7 * 164  # under 24 photos: all of them


def test_degrade_keeps_range_and_changes_inputs():
    from pipeline.model.train import degrade

    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 32 * 32).view(1, 1, 32, 32).repeat(16, 1, 1, 1)
    y = degrade(x, 0.5, g)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3
    assert 4 <= int(changed.sum()) <= 16  # p = 0.5 for each of four: most, not necessarily all
    assert torch.equal(degrade(x, 0.0, g), x)


def test_damage_scratches_specks_and_darkens_a_print_but_leaves_most_of_it():
    """Old-print damage drawn on the input (issue 23, item 2): light scratches and specks,
    vignetted corners, foxing; most of the picture as it was; seeded; p = 0 is the input."""
    from pipeline.model.damage import damage

    x = torch.full((64, 1, 48, 64), 0.5)
    y = damage(x, 1.0, torch.Generator().manual_seed(3))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, damage(x, 1.0, torch.Generator().manual_seed(3)))
    assert torch.equal(damage(x, 0.0, torch.Generator()), x)
    corners = y[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].mean()
    assert float(corners) < float(y[:, :, 20:28, 28:36].median()) - 0.02  # vignetting, on average
    marked = (y - x).abs() > 0.25  # scratches and specks: far from the print's tone
    assert 0.001 < float(marked.float().mean()) < 0.05
    assert float(y[marked].max()) > 0.9 and float(y[marked].min()) < 0.1  # light and dark ones
    some = damage(x, 0.2, torch.Generator().manual_seed(4))
    untouched = ((some - x).abs().flatten(1).amax(1) < 1e-6).float().mean()
    assert 0.1 < float(untouched) < 0.6  # five kinds at p = 0.2: about a third escape all


def test_a_thin_scratch_between_two_pixel_centres_still_marks_them():
    """A 1-px scratch drawn by its coverage of each pixel: never lost between pixel centres."""
    import pipeline.model.damage as dmg

    # per scratch: vertical?, its two angles, centre y, x, half width, length, on, light, strength
    draws = iter([0.0, 0.0, 0.0, 15.5, 10.5, 0.5, 100.0, 0.0, 0.0, 1.0] + [0.0, 0, 0, 0, 0, 0, 0, 1.0, 0, 0] * 3)

    def u(lo, hi, *shape):
        return torch.full((1, *shape), float(next(draws)))

    x = torch.full((1, 1, 32, 24), 0.5)
    y = dmg._lines(x, torch.ones(1, 1, 1, 1), u, torch.arange(32.0).view(1, 1, 32, 1),
                   torch.arange(24.0).view(1, 1, 1, 24))
    assert torch.allclose(y[0, 0, :, 10], torch.full((32,), 0.75)) and torch.equal(y[0, 0, :, 10], y[0, 0, :, 11])
    assert torch.equal(y[0, 0, :, :10], x[0, 0, :, :10]) and torch.equal(y[0, 0, :, 12:], x[0, 0, :, 12:])


def test_warm_start_maps_the_tutorials_keys(tmp_path):
    """The tutorial's state dict (ResNet18.*, conv1..5, bn1..4 with an extra bn3) loads into the
    seed's net wherever names map and shapes fit."""
    from pipeline.model.net import ColorizationNet
    from pipeline.model.train import warm_start

    ours = ColorizationNet()
    sd = {}
    for k, v in ours.state_dict().items():
        for a, b in {"trunk.": "ResNet18.", "layer2.0.": "conv1.", "layer2.1.": "bn1.",
                     "layer3.0.": "conv2.", "layer3.1.": "bn2.", "layer4.0.": "conv3.",
                     "layer5.0.": "conv4.", "layer6.": "conv5."}.items():
            if k.startswith(a):
                sd[b + k[len(a):]] = torch.full_like(v, 0.25) if v.dtype.is_floating_point else v
    sd["bn3.weight"] = torch.ones(64)  # the tutorial's extra BatchNorm: nowhere to go
    torch.save(sd, tmp_path / "tutorial.pth")
    fresh = ColorizationNet()
    assert warm_start(fresh, str(tmp_path / "tutorial.pth"), "cpu") == len(sd) - 1
    assert torch.all(fresh.layer6.weight == 0.25) and torch.all(fresh.trunk[0].weight == 0.25)


def test_resume_with_other_epochs_relays_the_schedule(photos, tmp_path):
    """A run stopped early and resumed with fewer epochs anneals to the end of the new total."""
    steps_per_epoch = (9 * 2) // 4
    train(cfg(photos, tmp_path, epochs=6, max_steps=2 * steps_per_epoch), log=lambda *_: None)
    said = []
    s = train(cfg(photos, tmp_path, epochs=3, resume=True), log=said.append)
    assert any("schedule re-laid" in m for m in said)
    assert s["step"] == 3 * steps_per_epoch
    rows = metrics(tmp_path)
    assert float(rows[-1]["lr"]) < 0.05 * 5e-3  # annealed; the 6-epoch cycle would be near its peak


def test_neutral_fields_replace_the_chosen_share_and_leave_the_photo_crops_alone(tmp_path):
    """--neutral swaps about that share of samples for gray fields whose target is no colour;
    every other sample is the very crop it would be without the option."""
    from pipeline.model.train import CropDataset, TrainConfig
    from pipeline.worker.color import encode_ab

    photos = []
    for i in range(4):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), np.uint8)).save(p)
        photos.append(str(p))
    plain = CropDataset(photos, TrainConfig(size=16, repeats=50, prescale=48), train=True)
    mixed = CropDataset(photos, TrainConfig(size=16, repeats=50, prescale=48, neutral=0.3), train=True)
    neutral_target = encode_ab(torch.zeros(2, 16, 16))
    n_neutral = 0
    for idx in range(len(mixed)):
        L, ab = mixed[idx]
        if torch.equal(ab, neutral_target):
            n_neutral += 1
            assert float(L.std()) < 0.1 and 0 <= float(L.min()) <= float(L.max()) <= 1
        else:
            L0, ab0 = plain[idx]
            assert torch.equal(L, L0) and torch.equal(ab, ab0)
    assert 0.2 * len(mixed) < n_neutral < 0.4 * len(mixed)


def test_film_lightness_darkens_reds_and_lightens_blues_and_keeps_the_target(tmp_path):
    """--film: some inputs' lightness is an orthochromatic or blue-sensitive film's (reds dark,
    blues pale, as in old scans); the others, and every target, are the photo's own."""
    from pipeline.model.train import CropDataset, TrainConfig, film_lightness
    from pipeline.worker import color

    rgb = torch.zeros(8, 3, 4, 4)
    rgb[:4, 0] = 1.0  # pure red
    rgb[4:, 2] = 1.0  # pure blue
    L0 = color.rgb_to_lab(rgb)[:, :1] / 100
    L = film_lightness(rgb, L0, 1.0, torch.Generator().manual_seed(0))
    assert (L[:4] < L0[:4] - 0.15).all() and (L[4:] > L0[4:] + 0.3).all()
    white = torch.ones(2, 3, 4, 4)
    assert torch.allclose(film_lightness(white, torch.ones(2, 1, 4, 4), 1.0, torch.Generator()), torch.ones(1))
    assert torch.equal(film_lightness(rgb, L0, 0.0, torch.Generator()), L0)

    p = tmp_path / "red-blue.png"
    a = np.zeros((40, 48, 3), np.uint8)
    a[:, :24, 0], a[:, 24:, 2] = 230, 230
    Image.fromarray(a).save(p)
    plain = CropDataset([str(p)], TrainConfig(size=16, repeats=40, prescale=48), train=True)
    film = CropDataset([str(p)], TrainConfig(size=16, repeats=40, prescale=48, film=0.5), train=True)
    changed = 0
    for idx in range(len(film)):
        (L, ab), (L_, ab_) = film[idx], plain[idx]
        assert torch.equal(ab, ab_)  # the clean colour stays the target
        changed += not torch.equal(L, L_)
    assert 0.3 * len(film) < changed < 0.7 * len(film)


def test_luminance_gray_as_another_film_saw_it():
    from pipeline.worker.color import FILMS
    from pipeline.worker.imaging import luminance_gray

    a = np.zeros((2, 4, 3), np.uint8)
    a[0, :, 0] = 200  # red
    a[1, :, 2] = 200  # blue
    pan, ortho = luminance_gray(a), luminance_gray(a, weights=FILMS["ortho"])
    assert np.array_equal(pan, luminance_gray(a, weights=FILMS["pan"]))
    assert ortho[0, 0] < pan[0, 0] - 40 and ortho[1, 0] > pan[1, 0] + 60


def test_cpu_bf16_is_trainings_choice_only():
    from pipeline.worker.device import autocast

    conv, x = torch.nn.Conv2d(1, 2, 3), torch.rand(1, 1, 8, 8)
    with autocast(torch.device("cpu")):
        assert conv(x).dtype == torch.float32  # inference on a CPU: float32, a job's bytes
    with autocast(torch.device("cpu"), cpu_bf16=True):
        assert conv(x).dtype == torch.bfloat16


def test_simulated_hints_hold_the_true_colour_of_a_square_around_each_point():
    """train.hint_planes (whole-batch tensor work, so it runs on a GPU as fast as the net): each
    hinted cell holds the mean true a*b* of a 1..5 cell square that covers it; some crops get
    no hint at all, as often as the geometric count says."""
    import torch

    from pipeline.model.train import hint_planes
    from pipeline.worker import color
    from pipeline.worker.hints import HINT_AB_SCALE

    B, H, W = 900, 24, 24
    a = torch.arange(W, dtype=torch.float32).view(1, 1, W).expand(B, H, W) * 2.0 - 20.0  # a ramp
    b = torch.full((B, H, W), 35.0)
    y = color.encode_ab(torch.stack([a, b], 1))
    p = hint_planes(y, 8.0, torch.Generator().manual_seed(3))
    assert p.shape == (B, 3, H, W) and set(p[:, 2].unique().tolist()) == {0.0, 1.0}
    m = p[:, 2] == 1
    assert torch.allclose(p[:, 1][m] * HINT_AB_SCALE, torch.tensor(35.0), atol=1e-3)
    assert (p[:, :2][~m.unsqueeze(1).expand(B, 2, H, W)] == 0).all()
    # a square of at most 5 columns around a cell: its mean a* is within 2 columns' step of the cell's
    got = p[:, 0] * HINT_AB_SCALE
    assert ((got - a)[m].abs() <= 2 * 2.0 + 1e-3).all()
    assert ((got - a)[m].abs() > 1e-3).any()  # and not always the cell's own value
    empty = int((~m.flatten(1).any(1)).sum())
    assert 60 <= empty <= 140, empty  # P(no point) = 1 / (8 + 1): about 100 of 900


def test_the_wheels_set_says_which_photos_a_missing_package_leaves_out(tmp_path, monkeypatch):
    """Without the [eval] extra the wheels set is 5 photos, not the model card's 8: said."""
    import importlib

    from pipeline.model.evaluate import wheel_photos

    real = importlib.import_module

    def without_sklearn(name, *a, **k):
        if name == "sklearn":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", without_sklearn)
    said = []
    d = wheel_photos(tmp_path / "w", said.append)
    assert "sklearn is not installed: its 2 photos left out, so this is not the whole set (pip install -e .[eval])" in said
    assert all(m.split()[0] in ("sklearn", "matplotlib") for m in said)  # matplotlib too, without [eval]
    assert not any(p.name.startswith("sklearn_") for p in d.iterdir())
    assert any(p.name.startswith("skimage_") for p in d.iterdir())


def test_a_training_stopped_by_sigterm_says_how_to_resume(photos, tmp_path):
    """A batch system's SIGTERM ended a trial's training without a word (Ctrl-C said only
    "interrupted"): now both say where the last epoch's checkpoint is and how to go on."""
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(photos), "--out", str(tmp_path),
                          "--epochs", "200", "--size", "32", "--batch-size", "4", "--workers", "0",
                          "--prescale", "48", "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (tmp_path / "last.pt").exists() and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "Traceback" not in err, err  # as run's: 128 + SIGTERM
    assert (f"colorize: terminated; resume from the last epoch's checkpoint ({tmp_path / 'last.pt'}) "
            "with the same command and --resume") in err, err


def test_a_file_that_is_no_photo_is_left_out_of_training_and_named(photos, tmp_path):
    """One unreadable file among a trial's photos ended its training with Pillow's words."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(photos, src)
    (src / "notes.jpg").write_bytes(b"not a jpeg")
    data = io.BytesIO()  # cut short: it failed in a loader's worker, ending the training
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(data, "JPEG")
    (src / "cut.jpg").write_bytes(data.getvalue()[:len(data.getvalue()) * 4 // 5])
    Image.fromarray(np.full((48, 48, 3), 120, np.uint8)).save(src / "gray.png")  # teaches gray
    said = []
    s = train(cfg(src, tmp_path / "out", epochs=1), log=said.append)
    assert s["step"] > 0
    assert said[0].startswith(f"2 files left out, not read as a photo: {src / 'cut.jpg'} ("), said
    assert "truncated" in said[0].split("notes.jpg")[0].lower(), said  # Pillow's words for it
    assert f"{src / 'notes.jpg'} (cannot identify" in said[0], said
    assert said[1] == "1 gray photo left out (gray.png): no colour to learn from", said
    assert said[2].startswith("9 photos to train on, 1 held out for validation"), said


def test_a_checkpoint_trained_on_a_folder_gets_its_gain_chosen_on_the_photos_held_out(photos, tmp_path, capsys):
    """tune-gain took only a make train-data collection: a curator who fine-tuned on a folder
    had no way to choose the gain (a trained checkpoint says 1.0, grayer than the shipped 1.1).
    It takes the val.txt train wrote; a list with no colour photo is a one-line mistake."""
    from pipeline.cli import main
    from pipeline.model.evaluate import GAINS

    train(cfg(photos, tmp_path / "out", epochs=1), log=lambda *_: None)
    assert main(["tune-gain", str(tmp_path / "out" / "last.pt"), str(tmp_path / "out" / "val.txt"),
                 "--out", str(tmp_path / "tuned.pt"), "--size", "32"]) == 0
    assert "chosen on 1 validation photo)" in capsys.readouterr().out
    meta = load_checkpoint(tmp_path / "tuned.pt").meta
    assert meta["chroma_gain"] in GAINS and set(meta["chroma_gain_curve"]) == {str(g) for g in GAINS}
    Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "grays.txt").write_text(f"{tmp_path / 'gray.png'}\n")
    assert main(["tune-gain", str(tmp_path / "out" / "last.pt"), str(tmp_path / "grays.txt"),
                 "--out", str(tmp_path / "no.pt")]) == 2
    err = capsys.readouterr().err
    assert "1 gray photo left out (gray.png)" in err and "no colour photo to choose a gain on in" in err, err
    assert not (tmp_path / "no.pt").exists()
