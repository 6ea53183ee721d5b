import os
import pickle

import pytest
import torch

from pipeline.client.state import file_sha256
from pipeline.model.net import (
    CheckpointError,
    ColorizationNet,
    ModelConfig,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)


def test_parameter_count_is_the_seeds():
    assert count_parameters(ColorizationNet()) == 954_530
    assert count_parameters(ColorizationNet(ModelConfig(widths=(64, 32, 32, 16)))) < 954_530


def test_layer_shapes():
    net = ColorizationNet().eval()
    shapes = {}
    for name in ("trunk", "layer2", "layer3", "layer4", "layer5", "layer6"):
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape))
        )
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 96))
    assert shapes == {
        "trunk": (2, 128, 8, 12),
        "layer2": (2, 128, 8, 12),  # upsampled after the block
        "layer3": (2, 64, 16, 24),
        "layer4": (2, 64, 16, 24),
        "layer5": (2, 32, 32, 48),
        "layer6": (2, 2, 32, 48),
    }
    assert out.shape == (2, 2, 64, 96)
    assert isinstance(net.layer5[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("h,w", [(8, 8), (64, 64), (120, 200), (256, 256)])
def test_output_shape(h, w):
    with torch.no_grad():
        assert ColorizationNet().eval()(torch.rand(3, 1, h, w)).shape == (3, 2, h, w)


@pytest.mark.parametrize("h,w", [(63, 64), (64, 100), (7, 8)])
def test_sizes_not_multiple_of_8_are_refused(h, w):
    with pytest.raises(ValueError, match="multiples of 8"):
        ColorizationNet()(torch.rand(1, 1, h, w))


def test_checkpoint_roundtrip(tmp_path):
    net = ColorizationNet(ModelConfig(widths=(64, 32, 32, 16))).eval()
    sha = save_checkpoint(tmp_path / "c.pt", net, {"epochs": 3, "val_loss": 0.01})
    assert sha == file_sha256(tmp_path / "c.pt")
    ck = load_checkpoint(tmp_path / "c.pt", "cpu")
    assert ck.sha256 == sha and ck.config.widths == (64, 32, 32, 16)
    assert ck.meta["epochs"] == 3 and "date" in ck.meta
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), ck.model(x))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves nothing behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/colorizer-pwned",))


def test_malicious_checkpoint_is_refused(tmp_path):
    flag = "/tmp/colorizer-pwned"
    if os.path.exists(flag):
        os.unlink(flag)
    payload = {"config": {}, "state_dict": {}, "evil": _Evil()}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not os.path.exists(flag)
    # a raw pickle (not a torch zip) is refused too
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pt")
    assert not os.path.exists(flag)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an archive-colorizer checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_the_trunk_is_torchvisions_resnet18_weight_for_weight_and_output_for_output():
    """net.py builds the seed's trunk without importing torchvision (its models package pulls
    in torch._dynamo at every worker's start): the same modules, keys, seeded initial weights
    and, with the shipped weights, the same output to the bit."""
    import torch.nn as nn
    import torchvision

    from pipeline.model.net import ColorizationNet, ModelConfig, load_checkpoint

    def theirs(ch: int) -> nn.Sequential:
        resnet = torchvision.models.resnet18(num_classes=365)
        w = resnet.conv1.weight.sum(dim=1, keepdim=True)
        resnet.conv1.weight = nn.Parameter(torch.cat([w, w.new_zeros((64, ch - 1, 7, 7))], dim=1))
        return nn.Sequential(*list(resnet.children())[:6])

    for ch in (1, 4):  # the seed's net and the hint-conditioned variant
        torch.manual_seed(5)
        a = theirs(ch).state_dict()
        torch.manual_seed(5)
        b = ColorizationNet(ModelConfig(in_channels=ch)).trunk.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    from pathlib import Path

    shipped = load_checkpoint(Path(__file__).resolve().parents[1] / "pipeline" / "weights" / "colorizer.pt").model.eval()
    tv = ColorizationNet(ModelConfig())
    tv.trunk = theirs(1)
    tv.load_state_dict(shipped.state_dict())
    x = torch.rand(2, 1, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), shipped(x))
