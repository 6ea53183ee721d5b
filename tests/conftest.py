"""Shared fixtures: tiny checkpoints and images made on the spot, nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.model.net import ColorizationNet, save_checkpoint


def mild_net(seed: int = 0) -> ColorizationNet:
    """An untrained net whose output is a moderate, varying colour (a* ~ 13, b* ~ 25):
    realistic chroma without needing the shipped weights."""
    torch.manual_seed(seed)
    net = ColorizationNet().eval()
    with torch.no_grad():
        net.layer6.weight.mul_(0.05)
        net.layer6.bias.copy_(torch.tensor([0.55, 0.6]))
    return net


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "mild.pt"
    save_checkpoint(path, mild_net(), {"note": "test fixture"})
    return str(path)


@pytest.fixture
def photo_gray() -> np.ndarray:
    from skimage import data

    return data.camera()[::2, ::2].copy()  # 256 x 256 uint8 photo


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
