"""Gray JPEGs decoded on the net's device, a batch per call (nvJPEG on a GPU, libjpeg-turbo on
the CPU), and the net's input made there from them: for GPU boxes whose CPUs cannot decode as
fast as the net colorizes. imaging.decode (Pillow) remains the path for everything else."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F


def jpeg_decoder(backend: str = "auto"):
    """decode(list of 1-D uint8 tensors, device) -> list of (1, H, W) gray tensors: TorchCodec
    (torchvision.io's successor) where installed, else torchvision.io, deprecated since 0.29."""
    if backend in ("auto", "torchcodec"):
        try:
            from torchcodec.decoders import decode_jpeg as tc_decode

            return lambda data, device: tc_decode(list(data), mode="GRAY", device=device)
        except ImportError:
            if backend == "torchcodec":
                raise
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode

    def decode(data, device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return tv_decode(list(data), mode=ImageReadMode.GRAY, device=device)

    return decode


class DeviceJpeg:
    """Decodes gray JPEG files on `device` and scales them to the net's size x size there."""

    def __init__(self, device: torch.device, size: int, backend: str = "auto"):
        self.device, self.size = device, size
        self._decode = jpeg_decoder(backend)

    @torch.inference_mode()
    def decode(self, files: list[bytes]) -> list[torch.Tensor | None]:
        """Gray JPEG files -> (H, W) uint8 tensors on the device, in one batched call. None for
        a file the decoder refuses; one bad file fails a batched call, so then each is tried
        alone."""
        data = [torch.from_numpy(np.frombuffer(f, np.uint8).copy()) for f in files]
        try:
            return [t[0] for t in self._decode(data, device=self.device)]
        except (RuntimeError, ValueError):
            out: list[torch.Tensor | None] = []
            for t in data:
                try:
                    out.append(self._decode([t], device=self.device)[0][0])
                except (RuntimeError, ValueError):
                    out.append(None)
            return out

    @torch.inference_mode()
    def small(self, gray: torch.Tensor) -> torch.Tensor:
        """The net's input from a gray image on the device: imaging.net_input's twin."""
        x = gray[None, None].float()
        if tuple(gray.shape) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x[0, 0].round_().clamp_(0, 255).to(torch.uint8)
