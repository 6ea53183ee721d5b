import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline.model import traindata
from pipeline.model.traindata import (
    Source,
    build,
    cap_order,
    hamming,
    phash_variants,
    read_manifest,
    split_of,
)


def scene(seed: int, size=(300, 240)) -> Image.Image:
    """A colourful, structured photo-like image: blobs of colour on a gradient."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([x, y, 1 - x], axis=-1) * 0.5
    for _ in range(6):
        cx, cy, r = rng.random(), rng.random(), 0.1 + 0.2 * rng.random()
        m = ((x - cx) ** 2 + (y - cy) ** 2 < r * r)[..., None]
        img = np.where(m, rng.random(3) * 0.9 + 0.05, img)
    return Image.fromarray((img * 255).astype(np.uint8))


@pytest.fixture
def snapshot(tmp_path):
    """A real bare git repository holding photos, as the fetch tool brings them."""
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    base = scene(1)
    base.save(work / "photos/a.png")
    base.transpose(Image.ROTATE_90).save(work / "photos/a_rot90.png")  # the same photo, turned
    base.transpose(Image.FLIP_LEFT_RIGHT).save(work / "photos/a_flip.png")
    (work / "photos/a_copy.png").write_bytes((work / "photos/a.png").read_bytes())
    for i in range(2, 6):
        scene(i).save(work / f"photos/s{i}.jpg", quality=92)
    scene(9).convert("L").convert("RGB").save(work / "photos/gray.png")
    scene(10, size=(120, 90)).save(work / "photos/small.png")
    (work / "photos/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "photos"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    mirror = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirror / "me+photos" / "repo")],
                   check=True)
    return mirror, commit


def test_build_dedupes_filters_and_records_every_photo(snapshot, tmp_path, monkeypatch):
    mirror, commit = snapshot
    src = Source("mine", "me/photos", commit, ("photos",), "CC0 1.0", "test scenes")
    monkeypatch.setattr(traindata, "SOURCES", (src,))
    out = tmp_path / "coll"
    out.mkdir()
    summary = build(mirror, None, out, log=lambda *_: None)
    rows = read_manifest(out)
    names = sorted(r["path"].rsplit("/", 1)[1] for r in rows)
    # one of the four copies of scene 1 (byte copy, rotation, mirror image), the four others
    assert len(names) == 5
    assert sum(n.startswith("a") for n in names) == 1
    assert summary["rejected"] == {"byte duplicate": 1, "near duplicate": 2, "gray or nearly gray": 1,
                                   "too small": 1, "unreadable (OSError)": 1}
    for r in rows:
        assert r["source"] == "mine" and r["licence"] == "CC0 1.0"
        assert r["split"] == split_of(r["sha256"])
        cache = Image.open(out / r["cache"])
        assert min(cache.size) == traindata.CACHE_SHORT  # 240-px originals scaled down to 224
    # rebuilding gives the same manifest: the order and the split come from content hashes
    before = (out / "manifest.csv").read_text()
    build(mirror, None, out, log=lambda *_: None)
    assert (out / "manifest.csv").read_text() == before


def test_phash_finds_turned_copies_and_tells_photos_apart():
    g = np.asarray(scene(3).convert("L").resize((32, 32)), np.float32)
    other = np.asarray(scene(4).convert("L").resize((32, 32)), np.float32)
    h = phash_variants(g)
    turned = phash_variants(np.rot90(g).copy())[0]
    mirrored = phash_variants(g[:, ::-1].copy())[0]
    assert int(hamming(h, turned).min()) <= traindata.PHASH_DIST
    assert int(hamming(h, mirrored).min()) <= traindata.PHASH_DIST
    assert int(hamming(h, phash_variants(other)[0]).min()) > traindata.PHASH_DIST


def test_split_is_stable_and_about_the_stated_shares():
    import hashlib

    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    splits = [split_of(s) for s in shas]
    assert splits == [split_of(s) for s in shas]
    assert splits.count("eval") / len(splits) == pytest.approx(traindata.EVAL_FRACTION, abs=0.005)
    assert splits.count("val") / len(splits) == pytest.approx(traindata.VAL_FRACTION, abs=0.005)


def test_a_cap_keeps_each_split_in_its_share():
    import hashlib

    shas = sorted((hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)), key=cap_order)
    kept = [split_of(s) for s in shas[:3000]]  # a source capped at 3,000 of 20,000 photos
    assert kept.count("eval") / len(kept) == pytest.approx(traindata.EVAL_FRACTION, abs=0.01)
    assert kept.count("val") / len(kept) == pytest.approx(traindata.VAL_FRACTION, abs=0.01)
