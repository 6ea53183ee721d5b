"""A scan's ICC profile is applied as a colour-managed viewer applies it: the same print scanned
in sRGB, Adobe RGB or ProPhoto, or a gray master tagged Gray Gamma 1.8 or 2.2, gives the same
lightness, and the output is tagged with the space its colour is in."""

import io

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from pipeline.worker import icc
from pipeline.worker.imaging import decode


def _to(profile: bytes, srgb01: np.ndarray, space: str = "rgb") -> np.ndarray:
    """sRGB values (0-1 float) as another profile encodes the same colours."""
    return imagecodecs.cms_transform(srgb01.astype(np.float32), icc.srgb(), profile, colorspace="rgb",
                                     outcolorspace=space, planar=False, outplanar=False)


@pytest.fixture
def sepia(photo_gray) -> np.ndarray:
    """A toned print in sRGB, 0-1: one hue family, warmer in the lights."""
    v = photo_gray[:96, :128].astype(np.float32) / 255
    return np.clip(np.dstack([v * 1.0 + 0.04, v * 0.9 + 0.02, v * 0.72]), 0, 1)


def _tiff(tmp_path, name, a, profile=None):
    p = tmp_path / name
    tifffile.imwrite(p, a, photometric="rgb" if a.ndim == 3 else "minisblack", iccprofile=profile)
    return p


@pytest.mark.parametrize("which", ["adobergb", "prophoto"])
def test_a_wide_gamut_scan_reads_as_its_srgb_twin(tmp_path, sepia, which):
    if which == "prophoto":  # ProPhoto: D50, gamma 1.8 (the gamma alone moves L* by ~5 units)
        prof = bytes(imagecodecs.cms_profile("rgb", whitepoint=[0.3457, 0.3585],
                                             primaries=[0.7347, 0.2653, 0.1596, 0.8404, 0.0366, 0.0001],
                                             gamma=1.8))
    else:
        prof = bytes(imagecodecs.cms_profile(which))
    twin16 = np.rint(sepia * 65535).astype(np.uint16)
    wide16 = np.rint(np.clip(_to(prof, sepia), 0, 1) * 65535).astype(np.uint16)
    assert np.abs(wide16.astype(int) - twin16).max() > 1000  # the numbers differ...
    ref = decode(_tiff(tmp_path, "srgb.tif", twin16))
    d = decode(_tiff(tmp_path, "wide.tif", wide16, prof))
    # ...the picture does not: the same lightness (within a few 16-bit levels), the same kind
    assert d.gray.dtype == np.uint16 and np.abs(d.gray.astype(int) - ref.gray).max() <= 8
    assert ref.kind == d.kind == "toned"
    assert d.icc_profile == icc.srgb() and ref.icc_profile is None  # its colour is sRGB's now
    assert any("read through its ICC profile" in n and "written as sRGB" in n for n in d.notes)
    # read as sRGB numbers (what it was before), a gamma-1.8 scan would be far off
    naive = decode(_tiff(tmp_path, "bare.tif", wide16))
    if which == "prophoto":
        assert np.abs(naive.gray.astype(int) - ref.gray).mean() > 1500


def test_an_8_bit_adobe_rgb_png_too(tmp_path, sepia):
    prof = bytes(imagecodecs.cms_profile("adobergb"))
    wide = np.rint(np.clip(_to(prof, sepia), 0, 1) * 255).astype(np.uint8)
    ref = decode(io.BytesIO(_png(np.rint(sepia * 255).astype(np.uint8))))
    p = tmp_path / "a.png"
    Image.fromarray(wide).save(p, icc_profile=prof)
    d = decode(p)
    assert np.abs(d.gray.astype(int) - ref.gray).max() <= 2 and d.kind == ref.kind == "toned"


def _png(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("bits", [8, 16])
def test_a_gray_master_is_read_through_its_gray_profile(tmp_path, bits):
    top = 255 if bits == 8 else 65535
    v = np.linspace(0, 1, 256)
    g = np.rint(np.tile(v, (4, 1)) * top).astype(np.uint8 if bits == 8 else np.uint16)
    prof = bytes(imagecodecs.cms_profile("gray", gamma=1.8))
    d = decode(_tiff(tmp_path, "g.tif", g, prof))
    y = (g / top) ** 1.8  # its luminance, as the profile says
    want = np.where(y > 0.0031308, 1.055 * y ** (1 / 2.4) - 0.055, 12.92 * y) * top
    assert d.gray.dtype == g.dtype and np.abs(d.gray - want).max() <= 1.0 + top / 2000
    assert np.abs(d.gray.astype(int) - g).max() > top / 20  # not the numbers as they stand
    assert d.icc_profile == icc.srgb() and d.kind == "gray"


def test_an_srgb_profile_changes_nothing_and_is_carried(tmp_path, sepia):
    prof = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a = np.rint(sepia * 255).astype(np.uint8)
    p = tmp_path / "s.png"
    Image.fromarray(a).save(p, icc_profile=prof)
    d, bare = decode(p), decode(io.BytesIO(_png(a)))
    assert np.array_equal(d.gray, bare.gray) and d.icc_profile == prof and d.notes == []


def test_a_broken_or_mismatched_profile_is_said_and_not_carried(tmp_path, photo_gray):
    g = photo_gray[:64, :64]
    broken = bytes(imagecodecs.cms_profile("adobergb"))[:128] + b"\0" * 64
    d = decode(_tiff(tmp_path, "b.tif", g, broken))
    assert np.array_equal(d.gray, g) and d.icc_profile is None
    assert any("ICC profile unreadable" in n for n in d.notes)
    rgb_on_gray = decode(_tiff(tmp_path, "m.tif", g, bytes(imagecodecs.cms_profile("adobergb"))))
    assert np.array_equal(rgb_on_gray.gray, g) and rgb_on_gray.icc_profile is None
    assert any("RGB ICC profile" in n and "gray image: not applied" in n for n in rgb_on_gray.notes)


def test_the_per_channel_lookup_is_the_whole_transform_for_a_matrix_profile():
    """A matrix/TRC profile's luminance is summed from one lookup per channel (fast); a table
    profile (a scanner's A2B) is transformed whole: both give the same Y where both apply."""
    prof = icc._read(bytes(imagecodecs.cms_profile("adobergb")))
    assert isinstance(prof, icc.Profile) and prof.separable
    px = (np.random.default_rng(1).random((8, 8, 3)) * 255).astype(np.uint8)
    summed = prof.luminance(px)
    whole = icc.Profile(prof.name, "RGB", prof.icc, separable=False).luminance(px)
    assert np.abs(summed - whole).max() < 1e-3


def test_the_srgb_profile_outputs_carry_does_not_depend_on_the_clock():
    """LittleCMS dates each profile it makes: undated, two runs' outputs of one tagged scan
    differed in those bytes (a repaired job was not byte-identical to its first run)."""
    import struct
    import subprocess
    import sys
    import time

    time.sleep(1.1)  # a second later than any profile this process made
    other = subprocess.run([sys.executable, "-c", "import sys; from pipeline.worker import icc; "
                            "sys.stdout.buffer.write(icc.srgb())"], capture_output=True, check=True)
    assert other.stdout == icc.srgb()
    assert struct.unpack(">6H", icc.srgb()[24:36]) == icc.PROFILE_DATE
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc.srgb()))).strip()


def test_evaluate_reads_a_reference_photo_through_its_profile(tmp_path, sepia):
    """A museum's reference photo tagged Adobe RGB is scored as the colours it shows (read as
    sRGB numbers it was duller than it is, and the model looked nearer to it)."""
    from pipeline.model.evaluate import load_rgb

    prof = bytes(imagecodecs.cms_profile("adobergb"))
    adobe = np.clip(np.rint(_to(prof, sepia) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(adobe).save(tmp_path / "ref.png", icc_profile=prof)
    srgb8 = np.clip(np.rint(sepia * 255), 0, 255).astype(np.uint8)
    Image.fromarray(srgb8).save(tmp_path / "plain.png")
    got = load_rgb(tmp_path / "ref.png", 512).astype(int)
    assert np.abs(got - srgb8).max() <= 2  # its sRGB twin
    assert np.abs(adobe.astype(int) - srgb8).max() > 8  # which its numbers as they stand are not
    assert (load_rgb(tmp_path / "plain.png", 512) == srgb8).all()  # untagged: as it stands
