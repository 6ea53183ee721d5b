"""The seed's colorization net, its config, and checkpoint save/load/identify."""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.client.state import resolve_checkpoint
from pipeline.errors import CheckpointError
from pipeline.storage import write_atomic

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class ModelConfig:
    trunk_classes: int = 365  # Places365, as the seed; only changes the (discarded) fc head
    cut_after: int = 6  # children of resnet18 kept: conv1, bn1, relu, maxpool, layer1, layer2
    widths: tuple[int, int, int, int] = (128, 64, 64, 32)  # decoder layers 2..5
    # 1: the seed's net, L alone. 4: its hint-conditioned variant (Zhang et al. 2017): L plus a
    # curator's hint a*, b* and their mask as input planes (worker/hints.py), the rest the same.
    in_channels: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, the same modules under the same names (so the same
    state_dict keys) and the same forward, op for op: the seed's trunk without importing
    torchvision, whose models package pulls in torch._dynamo (~1.7 s at every worker's start)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def resnet_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """One of ResNet-18's stages (two BasicBlocks), as torchvision builds it."""
    down = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            if stride != 1 or inplanes != planes else None)
    return nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes))


def resnet18_trunk(in_channels: int, classes: int = 365) -> nn.Sequential:
    """torchvision's resnet18(num_classes=classes) cut after layer2 (its first six children:
    conv1, bn1, relu, maxpool, layer1, layer2), taking `in_channels` planes. Built and
    initialised whole, in torchvision's order, so a seeded net starts from the very weights
    torchvision's would (layer3, layer4 and fc are then dropped, as the seed drops them); the
    seed's first conv sums the RGB filters, which is what a gray image sees."""
    full = nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1), resnet_layer(64, 64, 1), resnet_layer(64, 128, 2),
        resnet_layer(128, 256, 2), resnet_layer(256, 512, 2), nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(512, classes))
    for m in full.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1), nn.init.constant_(m.bias, 0)
    trunk = full[:6]
    w = trunk[0].weight.sum(dim=1, keepdim=True)
    # The hint planes start with zero weights: warm-started, the variant is the seed's net.
    extra = w.new_zeros((w.shape[0], in_channels - 1, *w.shape[2:]))
    trunk[0].weight = nn.Parameter(torch.cat([w, extra], dim=1))
    trunk[0].in_channels = in_channels
    return trunk


class ColorizationNet(nn.Module):
    """L*/100 (B, 1, H, W) -> (ab + 128) / 255 (B, 2, H, W); H and W multiples of 8. The
    hint-conditioned variant takes (B, 4, H, W): L*/100 and the hint planes."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        if config.cut_after != 6:
            raise ValueError(f"the seed's trunk is resnet18's first 6 children, not {config.cut_after}")
        self.trunk = resnet18_trunk(config.in_channels, config.trunk_classes)
        c_in = self.trunk[-1][-1].conv2.out_channels  # 128 after layer2
        w2, w3, w4, w5 = config.widths
        self.layer2 = nn.Sequential(nn.Conv2d(c_in, w2, 3, padding=1), nn.BatchNorm2d(w2), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(w2, w3, 3, padding=1), nn.BatchNorm2d(w3), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU())
        self.layer5 = nn.Sequential(nn.Conv2d(w4, w5, 3, padding=1), nn.Sigmoid())
        self.layer6 = nn.Conv2d(w5, 2, 3, padding=1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"expected (B, {c}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % 8 or W % 8:
            raise ValueError(f"input height and width must be multiples of 8, got {H}x{W}")
        return self.decode(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk and the decoder's first conv: (B, 128, H/8, W/8), what the hint head
        (worker/hinthead.py) reads."""
        return self.layer2(self.trunk(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        x = self._up(f)  # (B, 128, H/4, W/4)
        x = self.layer3(x)  # (B, 64, H/4, W/4)
        x = self._up(self.layer4(x))  # (B, 64, H/2, W/2)
        x = self.layer5(x)  # (B, 32, H/2, W/2)
        return self._up(self.layer6(x))  # (B, 2, H, W)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- checkpoints -------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    model: ColorizationNet
    config: ModelConfig
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # optimizer state etc. for --resume


def save_checkpoint(
    path: str | os.PathLike,
    model: ColorizationNet,
    meta: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    """Save config + state dict + metadata atomically; return the file's sha256."""
    meta = dict(meta or {})
    meta.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.config),
        "state_dict": state,
        "meta": meta,
        **extra,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def load_checkpoint(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Load safely (weights_only: plain tensors and containers, never code) onto any device."""
    p = resolve_checkpoint(path)
    data = p.read_bytes()
    try:
        payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing checkpoint {p}: it holds more than plain tensors ({first[:160]})"
        ) from None
    except Exception as e:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise CheckpointError(f"{p} is not an archive-colorizer checkpoint (no config/state_dict)")
    try:
        config = ModelConfig.from_dict(payload["config"])
        model = ColorizationNet(config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError) as e:
        raise CheckpointError(f"{p}: weights do not fit the model config: {e}") from None
    model.to(device).eval()
    extra = {k: v for k, v in payload.items() if k not in ("format", "config", "state_dict", "meta")}
    return Checkpoint(
        model=model,
        config=config,
        meta=payload.get("meta", {}),
        sha256=hashlib.sha256(data).hexdigest(),
        path=str(p),
        extra=extra,
    )
