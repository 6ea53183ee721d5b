"""Rebuild pipeline/samples/, the bundled sample archive, from photos inside scikit-image.

The scikit-image sample photos are public domain or CC0 (skimage/data/README.txt).
Run: .venv/bin/python jobs/make_samples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "pipeline" / "samples"


def small(a: np.ndarray, long_side: int = 320) -> Image.Image:
    im = Image.fromarray(a)
    s = long_side / max(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS) if s < 1 else im


def gray(a: np.ndarray) -> Image.Image:
    return small(a).convert("L")


def main() -> None:
    for d in ("1890s/portraits", "1890s/street", "1920s", "misc"):
        (OUT / d).mkdir(parents=True, exist_ok=True)
    gray(data.astronaut()).save(OUT / "1890s/portraits/astronaut.jpg", quality=90, dpi=(300, 300))
    g = np.asarray(gray(data.chelsea()), np.float32)[..., None]
    sepia = np.clip(g * np.array([1.0, 0.86, 0.68]) + np.array([12, 6, 0]), 0, 255).astype(np.uint8)
    Image.fromarray(sepia).save(OUT / "1890s/portraits/chelsea sepia.jpg", quality=90)
    gray(data.camera()).save(OUT / "1890s/street/camera.png")
    # A scanner that stored the page sideways with an EXIF orientation tag (6: rotate 90 CW).
    side = gray(data.coffee()).transpose(Image.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    side.save(OUT / "1890s/street/café rotated.jpg", quality=90, exif=exif.tobytes())
    g16 = (np.asarray(gray(data.rocket()), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(g16).save(OUT / "1920s/rocket 16bit.tif", dpi=(600, 600))
    Image.fromarray(np.asarray(gray(data.moon()), np.uint16) * 257).save(OUT / "1920s/moon16.png")
    gray(data.coins()).save(OUT / "1920s/coins.bmp")
    small(data.horse().astype(np.uint8) * 255).convert("1").save(OUT / "misc/horse 1bit.png")
    small(data.motorcycle_left() if hasattr(data, "motorcycle_left") else data.coffee()).save(
        OUT / "misc/colour motorcycle.jpg", quality=90)
    print(sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*") if p.is_file()))


if __name__ == "__main__":
    main()
