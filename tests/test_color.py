import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import lab2rgb, rgb2lab

from pipeline.worker import color

seeds = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_rgb_to_lab_matches_skimage(seed):
    rgb = np.random.default_rng(seed).random((2, 3, 9, 7))
    ours = color.rgb_to_lab(torch.from_numpy(rgb).float()).numpy()
    ref = np.stack([rgb2lab(im.transpose(1, 2, 0)).transpose(2, 0, 1) for im in rgb])
    assert np.abs(ours - ref).max() < 0.01


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_lab_to_rgb_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    lab = np.stack([rng.uniform(0, 100, (8, 8)), rng.uniform(-100, 100, (8, 8)),
                    rng.uniform(-100, 100, (8, 8))])
    ours = color.lab_to_rgb(torch.from_numpy(lab).float()).numpy()
    with warnings.catch_warnings():  # skimage warns about negative Z, which it (and we) zero
        warnings.simplefilter("ignore")
        ref = lab2rgb(lab.transpose(1, 2, 0)).transpose(2, 0, 1)
    assert np.abs(ours - ref).max() < 1e-4
    # and back: in-gamut colours survive the round trip within 0.01 in L, a, b
    rgb = rng.random((3, 8, 8))
    back = color.rgb_to_lab(color.lab_to_rgb(color.rgb_to_lab(torch.from_numpy(rgb).float())))
    assert np.abs(back.numpy() - rgb2lab(rgb.transpose(1, 2, 0)).transpose(2, 0, 1)).max() < 0.01


def test_batched_and_dtype():
    x = torch.rand(4, 3, 5, 6, dtype=torch.float64)
    assert color.rgb_to_lab(x).shape == (4, 3, 5, 6)
    assert color.rgb_to_lab(x).dtype == torch.float64


def test_gray_L_inverse_and_scaling():
    g = torch.linspace(0, 1, 101)
    assert torch.allclose(color.L_to_gray(color.gray_to_L(g)), g, atol=1e-5)
    lab = color.rgb_to_lab(g.view(1, 1, -1).expand(3, 1, -1))
    assert torch.allclose(lab[0, 0], color.gray_to_L(g), atol=1e-3)
    assert torch.allclose(color.decode_ab(color.encode_ab(torch.tensor([-128.0, 0.0, 127.0]))),
                          torch.tensor([-128.0, 0.0, 127.0]))
    assert torch.allclose(color.encode_ab(torch.tensor([-128.0, 127.0])), torch.tensor([0.0, 1.0]))


def test_keep_L_gamut_mapping_preserves_lightness():
    rng = np.random.default_rng(0)
    lab = torch.from_numpy(np.stack([rng.uniform(1, 99, (32, 32)), rng.uniform(-90, 90, (32, 32)),
                                     rng.uniform(-90, 90, (32, 32))])).double()
    clipped = color.rgb_to_lab(color.lab_to_rgb(lab))
    kept = color.rgb_to_lab(color.lab_to_rgb(lab, keep_L=True))
    assert (kept[0] - lab[0]).abs().max() < 1e-6
    assert (clipped[0] - lab[0]).abs().max() > 1.0  # plain clipping moves L*, which is why


@pytest.mark.gpu
def test_runs_on_cuda_too():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(color.rgb_to_lab(x.cuda()).cpu(), color.rgb_to_lab(x), atol=1e-3)
