"""Turn Prokudin-Gorsky glass-plate scans into registered colour photos (the historical eval set).

Each plate is one grayscale image holding three exposures stacked vertically: blue filter on top,
then green, then red. The plate is cut into thirds, green and red are aligned to blue by an integer
translation found with an image pyramid (exhaustive search at the coarsest level, +-2 px at every
finer one) that maximises the normalised cross-correlation of gradient magnitudes, computed on the
centre of the frame only (the plate edges are left out). Gradients rather than intensities make the
match robust to plates whose channels differ strongly in brightness (the emir plate). The stacked
image is cropped to the part all three channels cover, minus a fixed border (the plate's edges).
Intensities are kept as scanned: no contrast stretch or white balance, so the colour is the plate's.

Run: .venv/bin/python jobs/make_historical.py data/historical-plates [--out data/historical]
(jobs/fetch_historical.sh extracts the plates and runs this). Writes OUT/NAME.png (8-bit RGB) and
OUT/offsets.tsv (the (dy, dx) of green and red relative to blue, at full resolution, and the NCC).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.filters import gaussian, sobel

Image.MAX_IMAGE_PIXELS = None  # full-resolution plates are ~36 Mpx


def load(path: Path) -> np.ndarray:
    """Plate as float32 in [0, 1]; 8- and 16-bit grayscale (and RGB, averaged) scans."""
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, np.float32)
        return a / (65535.0 if a.max() > 255 else 255.0)
    return np.asarray(im.convert("L"), np.float32) / 255.0


def features(ch: np.ndarray) -> np.ndarray:
    return sobel(gaussian(ch, sigma=1.0))


def downsample(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def ncc_search(ref, mov, centre, radius, frac):
    """Best (dy, dx) within centre +- radius: mov shifted by (dy, dx) matches ref (mov[y-dy] ~ ref[y])."""
    h, w = ref.shape
    my = int(frac * h) + abs(centre[0]) + radius + 1
    mx = int(frac * w) + abs(centre[1]) + radius + 1
    if 2 * my >= h - 8 or 2 * mx >= w - 8:  # shift too large for this level: nothing sensible to do
        my, mx = min(my, h // 2 - 4), min(mx, w // 2 - 4)
    r = ref[my:h - my, mx:w - mx]
    r = (r - r.mean()) / (r.std() + 1e-8)
    best, best_d = -np.inf, centre
    for dy in range(centre[0] - radius, centre[0] + radius + 1):
        for dx in range(centre[1] - radius, centre[1] + radius + 1):
            m = mov[my - dy:h - my - dy, mx - dx:w - mx - dx]
            if m.shape != r.shape:
                continue
            score = float(np.mean(r * (m - m.mean()))) / (m.std() + 1e-8)
            if score > best:
                best, best_d = score, (dy, dx)
    return best_d, best


def align(ref, mov, frac=0.1, coarse_side=300, coarse_radius=20):
    """Integer (dy, dx) aligning mov to ref, and the full-resolution NCC of the gradient magnitudes."""
    pyr = [(features(ref), features(mov))]
    while min(pyr[-1][0].shape) > coarse_side:
        pyr.append((downsample(pyr[-1][0]), downsample(pyr[-1][1])))
    d = (0, 0)
    for level in range(len(pyr) - 1, -1, -1):
        r, m = pyr[level]
        radius = coarse_radius if level == len(pyr) - 1 else 2
        d, score = ncc_search(r, m, d, radius, frac)
        if level:
            d = (2 * d[0], 2 * d[1])
    return d, score


def shifted_crop(ch: np.ndarray, d, y0, y1, x0, x1) -> np.ndarray:
    """Rows y0:y1, cols x0:x1 of ch shifted by d (in blue's coordinates)."""
    return ch[y0 - d[0]:y1 - d[0], x0 - d[1]:x1 - d[1]]


def colorize(plate: np.ndarray, trim: float, edge: float):
    h = plate.shape[0] // 3
    b, g, r = plate[:h], plate[h:2 * h], plate[2 * h:3 * h]
    dg, sg = align(b, g, frac=trim + 0.02)
    dr, sr = align(b, r, frac=trim + 0.02)
    H, W = b.shape
    ds = [(0, 0), dg, dr]
    y0 = max(d[0] for d in ds) + int((trim + edge) * H)
    y1 = min(H + d[0] for d in ds) - int((trim + edge) * H)
    x0 = max(d[1] for d in ds) + int((trim + edge) * W)
    x1 = min(W + d[1] for d in ds) - int((trim + edge) * W)
    rgb = np.dstack([shifted_crop(r, dr, y0, y1, x0, x1), shifted_crop(g, dg, y0, y1, x0, x1),
                     b[y0:y1, x0:x1]])
    return rgb, dg, dr, sg, sr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("plates", type=Path, help="folder of plate images (.jpg/.png/.tif)")
    p.add_argument("--out", type=Path, default=Path("data/historical"))
    p.add_argument("--trim", type=float, default=0.07, help="plate border cut from each side of a third")
    p.add_argument("--edge", type=float, default=0.01, help="extra border clipped after alignment")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = ["name\twidth\theight\tg_dy\tg_dx\tr_dy\tr_dx\tg_ncc\tr_ncc"]
    paths = sorted(f for f in a.plates.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    for f in paths:
        rgb, dg, dr, sg, sr = colorize(load(f), a.trim, a.edge)
        Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), "RGB").save(a.out / f"{f.stem}.png")
        h, w = rgb.shape[:2]
        rows.append(f"{f.stem}\t{w}\t{h}\t{dg[0]}\t{dg[1]}\t{dr[0]}\t{dr[1]}\t{sg:.3f}\t{sr:.3f}")
        print(rows[-1], flush=True)
    (a.out / "offsets.tsv").write_text("\n".join(rows) + "\n")
    print(f"{len(paths)} colour photos in {a.out}")


if __name__ == "__main__":
    main()
