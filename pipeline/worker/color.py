"""Colour math in torch: sRGB (D65) <-> CIE L*a*b*, batched, on any device.

Matches scikit-image's rgb2lab/lab2rgb (same constants, same piecewise curves) so
that training, inference and evaluation agree with the reference implementation.
Tensors are channel-first: (..., 3, H, W).
"""

from __future__ import annotations

import torch

# skimage.color.colorconv: xyz_from_rgb and the D65 2-degree white point.
_XYZ_FROM_RGB = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
# The same constants as plain floats, so that torch.compile sees no tensor-to-Python calls.
_WX, _WZ = 0.95047, 1.08883
_M = _RGB_FROM_XYZ.tolist()

# What a film saw, as weights of linear sRGB, normalised so that white stays white. Archives'
# scans were mostly not taken on panchromatic film: orthochromatic emulsions (c. 1880-1930) are
# blind to red, so lips and red cloth print dark and skies pale; blue-sensitive plates (wet
# collodion, early dry plates) see little but blue (issue 23, item 2).
FILMS = {
    "pan": (0.212671, 0.715160, 0.072169),  # panchromatic, as CIE Y: the photo's own L*
    "ortho": (0.05, 0.50, 0.45),
    "blue": (0.0, 0.10, 0.90),
}

AB_SCALE = 255.0  # the seed's target scaling: (ab + 128) / 255
AB_OFFSET = 128.0


def _mix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix over the channel axis (-3) of x."""
    return torch.einsum("ij,...jhw->...ihw", m.to(device=x.device, dtype=x.dtype), x)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0.04045, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4, x / 12.92)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0.0031308, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, x * 12.92)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 0.008856, t.clamp_min(0.008856) ** (1 / 3), 7.787 * t + 16.0 / 116.0)


def _finv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 0.2068966, t**3, (t - 16.0 / 116.0) / 7.787)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> (..., 3, H, W) L* in [0, 100], a*, b*."""
    xyz = _mix(_XYZ_FROM_RGB, srgb_to_linear(rgb))
    white = _WHITE.to(device=rgb.device, dtype=rgb.dtype).view(3, 1, 1)
    fx, fy, fz = _f(xyz / white).unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor, keep_L: bool = False) -> torch.Tensor:
    """(..., 3, H, W) L*a*b* -> sRGB in [0, 1], clipped to the gamut as scikit-image does.

    keep_L: bring out-of-gamut colours in by mixing them toward the gray of equal luminance
    in linear light instead of clipping channels. Luminance is linear in linear RGB, so
    the mix keeps Y, hence L*, exactly: the output keeps the scan's own lightness.
    """
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp_min(0)  # skimage sets negative z to 0 (with a warning)
    white = _WHITE.to(device=lab.device, dtype=lab.dtype).view(3, 1, 1)
    xyz = _finv(torch.stack([fx, fy, fz], dim=-3)) * white
    lin = _mix(_RGB_FROM_XYZ, xyz)
    if keep_L:
        lin = into_gamut_keep_Y(lin, xyz[..., 1:2, :, :].clamp(0.0, 1.0), dim=-3)
    return linear_to_srgb(lin).clamp(0.0, 1.0)


def into_gamut_keep_Y(lin: torch.Tensor, Y: torch.Tensor, dim: int) -> torch.Tensor:
    """Mix linear RGB toward the gray of luminance Y just enough to fit in [0, 1]."""
    hi = lin.amax(dim=dim, keepdim=True)
    lo = lin.amin(dim=dim, keepdim=True)
    t = torch.minimum((1.0 - Y) / (hi - Y).clamp_min(1e-12), Y / (Y - lo).clamp_min(1e-12))
    return torch.addcmul(Y, t.clamp(max=1.0), lin - Y)


def compose_linear(Y: torch.Tensor, fy: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear RGB (..., 3), in gamut, from a gray pixel's luminance Y (and f(Y)) and a*, b*.

    The same Lab -> XYZ -> RGB as lab_to_rgb(keep_L=True), but channel-last and written for
    full-resolution strips: Y and f(Y) come from lookup tables of the gray level, only
    X and Z need the inverse curve, and nothing is computed that Y already gives.
    """
    def finv(t):
        return torch.where(t > 0.2068966, t * t * t, (t - 16.0 / 116.0) * (1.0 / 7.787))

    X = finv(fy + a * (1.0 / 500.0)) * _WX
    Z = finv((fy - b * (1.0 / 200.0)).clamp_min(0.0)) * _WZ
    lin = torch.stack([_M[i][0] * X + _M[i][1] * Y + _M[i][2] * Z for i in range(3)], dim=-1)
    return into_gamut_keep_Y(lin, Y.unsqueeze(-1), dim=-1)


def Y_to_L(Y: torch.Tensor) -> torch.Tensor:
    """Relative luminance (white 1) -> L*."""
    return 116.0 * _f(Y) - 16.0


def gray_to_L(gray: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded gray in [0, 1] (R = G = B) -> L*; Y of a neutral pixel is its linear value."""
    return 116.0 * _f(srgb_to_linear(gray)) - 16.0


def L_to_gray(L: torch.Tensor) -> torch.Tensor:
    """Inverse of gray_to_L: the sRGB gray with lightness L*."""
    return linear_to_srgb(_finv((L + 16.0) / 116.0)).clamp(0.0, 1.0)


def encode_ab(ab: torch.Tensor) -> torch.Tensor:
    """a*, b* -> the net's target scale (ab + 128) / 255."""
    return (ab + AB_OFFSET) / AB_SCALE


def decode_ab(y: torch.Tensor) -> torch.Tensor:
    """The net's output scale -> a*, b*."""
    return y * AB_SCALE - AB_OFFSET
