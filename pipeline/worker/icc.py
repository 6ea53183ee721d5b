"""A scan's ICC profile, applied as a colour-managed viewer applies it. Imaging labs scan toned
prints in Adobe RGB or ProPhoto and tag gray masters Gray Gamma 2.2 or Dot Gain 20 %: read as
if sRGB, their lightness is wrong (ProPhoto's gamma is 1.8; dot gain darkens the mid-tones) and
a profile carried onto our sRGB colour makes it oversaturated. So the lightness is taken through
the profile, and an output whose source was converted is tagged sRGB, which is what it is.

LittleCMS through imagecodecs (already a dependency for 16-bit PNGs): its float transforms keep
16-bit precision, which Pillow's ImageCms (8-bit modes) does not.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
from dataclasses import dataclass

import numpy as np

# How far from sRGB (in encoded 0-1 units, on ramps of each channel and some colours) a profile
# may read and still be sRGB: vendors' sRGB profiles (v2 tables, v4 curves) agree within ~0.001.
SAME_AS_SRGB = 1.5 / 255
_SPACES = {b"RGB ": "RGB", b"GRAY": "gray", b"CMYK": "CMYK", b"Lab ": "Lab"}


# the Y row of skimage's xyz_from_rgb, as imaging.luminance_gray weighs linear sRGB
Y_WEIGHTS = np.array([0.212671, 0.715160, 0.072169], np.float32)


@functools.cache
def _linear_srgb() -> bytes:
    import imagecodecs

    return bytes(imagecodecs.cms_profile("rgb", whitepoint=[0.3127, 0.3290], gamma=1.0,
                                         primaries=[0.64, 0.33, 0.30, 0.60, 0.15, 0.06]))


# LittleCMS stamps a profile with the time it made it: the one our outputs carry is dated once,
# so that an output's bytes do not depend on the clock (a resumed or repaired job is byte-identical).
PROFILE_DATE = (2026, 1, 1, 0, 0, 0)


@functools.cache
def srgb() -> bytes:
    """The profile an output converted from another space is tagged with (LittleCMS's sRGB)."""
    import imagecodecs

    b = bytearray(imagecodecs.cms_profile("srgb"))
    b[24:36] = struct.pack(">6H", *PROFILE_DATE)
    if any(b[84:100]):  # a profile ID is the MD5 of the profile, flags, intent and ID zeroed
        z = bytearray(b)
        z[44:48] = z[64:68] = bytes(4)
        z[84:100] = bytes(16)
        b[84:100] = hashlib.md5(z).digest()  # noqa: S324 - ICC's own checksum, not security
    return bytes(b)


@dataclass(frozen=True)
class Profile:
    """A source's profile that does not read as sRGB: how its pixels become luminance."""

    name: str  # its description, for the notes: "Adobe RGB (1998)"
    space: str  # "RGB" | "gray"
    icc: bytes
    separable: bool  # a matrix/TRC profile: Y is a sum of one lookup per channel

    def _linear(self, x: np.ndarray) -> np.ndarray:
        """Pixels (0-1 float) -> linear sRGB, unbounded (a wide-gamut colour keeps its Y)."""
        import imagecodecs

        return imagecodecs.cms_transform(
            np.ascontiguousarray(x, np.float32), self.icc, _linear_srgb(),
            colorspace="gray" if self.space == "gray" else "rgb", outcolorspace="rgb",
            planar=False, outplanar=False)

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a few profiles a process, each kept for good
    def luts(self, levels: int) -> np.ndarray:
        """(channels, levels) float32: each channel's share of the luminance its sRGB twin has
        (imaging.luminance_gray's Y), the black's share split between them."""
        v = np.arange(levels, dtype=np.float32) / (levels - 1)
        if self.space == "gray":
            return (self._linear(v[None, :])[0] @ Y_WEIGHTS)[None].astype(np.float32)
        ramps = np.zeros((3, levels, 3), np.float32)
        for c in range(3):
            ramps[c, :, c] = v
        y = self._linear(ramps) @ Y_WEIGHTS
        black = float((self._linear(np.zeros((1, 1, 3))) @ Y_WEIGHTS)[0, 0])
        return (y - black * 2 / 3).astype(np.float32)  # summed over three: the black once

    def luminance(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) gray or (H, W, 3) RGB, uint8/uint16 -> (H, W) float32 luminance Y."""
        top = 65535 if pixels.dtype == np.uint16 else 255
        if self.separable:
            lut = self.luts(top + 1)
            if self.space == "gray":
                return lut[0][pixels]
            return lut[0][pixels[..., 0]] + lut[1][pixels[..., 1]] + lut[2][pixels[..., 2]]
        x = pixels if self.space == "gray" else pixels[..., :3]
        return self._linear(x.astype(np.float32) / top) @ Y_WEIGHTS

    def to_srgb8(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB thumbnail in sRGB, 8-bit (out-of-gamut colours clipped): what it looks like."""
        import imagecodecs

        top = 65535 if rgb.dtype == np.uint16 else 255
        x = imagecodecs.cms_transform(np.ascontiguousarray(rgb[..., :3], np.float32) / top, self.icc,
                                      srgb(), colorspace="rgb", outcolorspace="rgb",
                                      planar=False, outplanar=False)
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def read(icc: bytes | None, channels: int, notes: list[str]) -> tuple[Profile | None, bytes | None]:
    """(the profile to read this image's pixels through, or None where they are sRGB as they
    stand; the profile its output carries). channels: 1 (gray) or 3 (RGB). A profile that reads
    as sRGB is carried as it is onto an RGB image's output; one that cannot apply is noted."""
    if not icc:
        return None, None
    found = _read(bytes(icc))
    if isinstance(found, str):
        notes.append(found)
        return None, None
    if found is None:  # sRGB by another name: a gray one's output is plain (untagged) sRGB
        return None, bytes(icc) if icc[16:20] == b"RGB " else None
    if (found.space == "gray") != (channels == 1):
        notes.append(f"{found.space} ICC profile ({found.name}) on a "
                     f"{'gray' if channels == 1 else 'colour'} image: not applied")
        return None, None
    notes.append(f"read through its ICC profile ({found.name}); written as sRGB")
    return found, srgb()


@functools.lru_cache(maxsize=32)
def _read(icc: bytes) -> Profile | None | str:
    """Profile, None (reads as sRGB), or why it is not applied (a note)."""
    import imagecodecs

    space = _SPACES.get(icc[16:20]) if len(icc) >= 128 else None
    if space not in ("RGB", "gray"):
        return f"{space or 'unknown'} ICC profile not applied"
    try:
        imagecodecs.cms_profile_validate(icc)  # raises for one LittleCMS cannot open
        p = Profile(_name(icc), space, icc, separable=True)
        test = _test_colours(space)
        full = imagecodecs.cms_transform(test, icc, srgb(), colorspace="gray" if space == "gray" else "rgb",
                                         outcolorspace="rgb", planar=False, outplanar=False)
    except Exception as e:  # noqa: BLE001 - LittleCMS's and imagecodecs' own errors
        return f"ICC profile unreadable ({type(e).__name__}: {e}), not applied"[:200]
    want = test if space == "RGB" else np.repeat(test[..., None], 3, axis=-1)
    if float(np.abs(full - want).max()) <= SAME_AS_SRGB:
        return None
    if space == "RGB":  # a table (A2B) profile mixes the channels: then the whole transform
        lut = p.luts(256)
        q = np.rint(test * 255).astype(np.uint8)
        summed = lut[0][q[..., 0]] + lut[1][q[..., 1]] + lut[2][q[..., 2]]
        exact = p._linear(q.astype(np.float32) / 255) @ Y_WEIGHTS
        if float(np.abs(summed - exact).max()) > 1e-3:
            p = Profile(p.name, space, icc, separable=False)
    return p


def _test_colours(space: str) -> np.ndarray:
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    if space == "gray":
        return ramp[None, :]
    rows = [np.stack([ramp * (c == k) for k in range(3)], -1) for c in range(3)]
    rows.append(np.stack([ramp] * 3, -1))
    rows.append(np.random.default_rng(0).random((64, 3), dtype=np.float32))
    return np.stack(rows)


def _name(icc: bytes) -> str:
    from PIL import ImageCms

    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip() or "unnamed"
    except Exception:  # noqa: BLE001 - a name is for the note only
        return "unnamed"
