import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from pipeline import color
from pipeline.engine import Colorizer, net_input


@pytest.fixture(scope="module")
def net(ckpt):
    return Colorizer(ckpt, device="cpu", size=64)


def L_of_gray(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float64) / (65535.0 if gray.dtype == np.uint16 else 255.0)
    return color.gray_to_L(torch.from_numpy(g)).numpy()


def L_of_rgb(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(rgb.astype(np.float64) / (65535.0 if rgb.dtype == np.uint16 else 255.0))[..., 0]


def test_output_has_input_size_for_odd_sizes(net):
    rng = np.random.default_rng(0)
    grays = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in ((97, 131), (5, 3), (40, 700))]
    outs = net.colorize(grays)
    assert [o.shape for o in outs] == [(97, 131, 3), (5, 3, 3), (40, 700, 3)]
    assert all(o.dtype == np.uint8 for o in outs)


def test_recombination_keeps_L_8bit(net, photo_gray):
    rgb = net.colorize([photo_gray])[0]
    assert np.abs(L_of_rgb(rgb) - L_of_gray(photo_gray)).mean() < 0.5
    # and it is colour, not gray: the fixture net predicts a* ~ 13, b* ~ 25
    lab = rgb2lab(rgb)
    assert np.hypot(lab[..., 1], lab[..., 2]).mean() > 5


def test_recombination_keeps_L_16bit(net, photo_gray):
    g16 = (photo_gray.astype(np.uint16) * 257) ^ np.uint16(0x5A)  # use the low byte too
    rgb = net.colorize([g16])[0]
    assert rgb.dtype == np.uint16
    assert np.abs(L_of_rgb(rgb) - L_of_gray(g16)).mean() < 0.05


def test_upsampling_equals_full_interpolate(net, photo_gray):
    """Strip-wise grid_sample must be exactly the bilinear upsampling of the whole."""
    import pipeline.engine as engine

    g = photo_gray[:90, :70]
    ab = net.predict_ab(net_input(g, 64)[None])[0]
    full = F.interpolate(ab[None], size=g.shape, mode="bilinear", align_corners=False)[0]
    lab = torch.cat([torch.from_numpy(L_of_gray(g)).float()[None], full])
    ref = (color.lab_to_rgb(lab, keep_L=True) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    old = engine.TILE_PIXELS
    engine.TILE_PIXELS = 70 * 7  # force many strips
    try:
        out = net.recombine(g, ab)
    finally:
        engine.TILE_PIXELS = old
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_bad_size_is_refused(ckpt):
    with pytest.raises(ValueError, match="multiple of 8"):
        Colorizer(ckpt, size=100)


@pytest.mark.gpu
def test_cuda_matches_cpu(ckpt, photo_gray):
    cpu = Colorizer(ckpt, device="cpu", size=64).colorize([photo_gray])[0]
    gpu = Colorizer(ckpt, device="cuda", size=64).colorize([photo_gray])[0]
    assert np.abs(cpu.astype(int) - gpu.astype(int)).mean() < 2  # bf16 autocast on the GPU


def test_compiled_strip_matches_eager(ckpt, photo_gray):
    eager = Colorizer(ckpt, device="cpu", size=64)
    fused = Colorizer(ckpt, device="cpu", size=64, compile=True)
    for g in (photo_gray[:77, :131], photo_gray.astype(np.uint16) * 257):
        ab = eager.predict_ab(net_input(g, 64)[None])[0]
        a, b = eager.recombine(g, ab), fused.recombine(g, ab)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # last-bit differences only
