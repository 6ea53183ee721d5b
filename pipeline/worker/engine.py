"""The net on its device: batched gray scans at size x size in, a/b out. The colour step that
follows lives in recombine.py, device JPEG decoding in jpegdev.py; a Colorizer holds one of each
for its device, so a worker loads the weights and decides the device once."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.client.state import HINT_CHECKPOINT, HINT_HEAD
from pipeline.errors import UsageError
from pipeline.model.net import Checkpoint, load_checkpoint
from pipeline.worker import color, hints
from pipeline.worker.device import autocast, pick_device, to_device
from pipeline.worker.imaging import net_input
from pipeline.worker.jpegdev import DeviceJpeg
from pipeline.worker.recombine import Recombiner, quantise_ab

# The net's input is reflect-padded by this many pixels a side and its output cropped back: the
# convolutions' zero padding otherwise paints a colour cast along the frame (the "cyan block"
# in every corner). A multiple of 8, as the net's input must be.
NET_PAD = 16


class Colorizer:
    """Holds one loaded net on one device; reused for every image a worker sees."""

    quantise_ab = staticmethod(quantise_ab)

    def __init__(self, checkpoint: str | os.PathLike | Checkpoint | None = None,
                 device: str = "auto", size: int = 256, compile: bool = False):
        if size % 8 or size < 8:
            raise UsageError(f"--size must be a positive multiple of 8, got {size}")
        self.device = pick_device(device)
        self.ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, self.device)
        # channels_last: oneDNN's (and cuDNN's) fast layout; the net runs 1.7x faster on a CPU.
        self.model = self.ck.model.to(self.device, memory_format=torch.channels_last).eval()
        self.size = size
        # torch.compile: the net ~1.4x faster on a CPU (after ~4 s of compiling per worker). Its
        # arithmetic differs from eager in the last bit, so it is part of a job's identity.
        self.compiled = compile
        self._net = torch.compile(self.model) if compile else self.model
        self.pad = NET_PAD
        # A regression net's a/b are the conditional mean: grayer than photos are. The gain,
        # chosen on the validation split after training, is part of the checkpoint.
        self.chroma_gain = float(self.ck.meta.get("chroma_gain", 1.0))
        # L* of each 8-bit gray level: the net's input by lookup, exact
        self._L8 = color.gray_to_L(torch.arange(256, dtype=torch.float64) / 255).float().to(self.device)
        self.colors = Recombiner(self.device, compile=compile)
        self.jpeg = DeviceJpeg(self.device, size)
        self._hint_net: Checkpoint | None | bool = False  # False: not looked for yet
        self.hint_checkpoint = HINT_CHECKPOINT
        self._hint_head = False  # False: not looked for yet
        self.hint_head_path = HINT_HEAD

    def hint_net(self) -> Checkpoint | None:
        """The hint-conditioned variant, loaded the first time an image has hints; None where
        it is not installed (hints are then propagated over this net's colour alone)."""
        if self._hint_net is False:
            p = self.hint_checkpoint
            self._hint_net = load_checkpoint(p, self.device) if p and os.path.isfile(p) else None
            if self._hint_net is not None:
                self._hint_net.model.to(memory_format=torch.channels_last).eval()
        return self._hint_net

    def with_hints(self, ab: torch.Tensor, images: list[tuple]) -> torch.Tensor:
        """A batch's a*b* with each hinted image's (small, cells) colour in place of the net's."""
        return torch.stack([a if cells is None else self.hinted_ab(small, cells)
                            for a, (small, cells) in zip(ab, images, strict=True)])

    @torch.inference_mode()
    def hinted_ab(self, small, cells: list[tuple[int, int, float, float]]) -> torch.Tensor:
        """One image's (2, s, s) a*, b* with hints (cells of the net's grid, hints.on_grid): the
        hint-conditioned net's colour where installed, else the net's with the hint head's guess
        where the hints reach, then pinned to each hint along the image's edges."""
        hn = self.hint_net() if cells else None
        head = self.hint_head() if cells and hn is None else None
        g = small if isinstance(small, torch.Tensor) else to_device(small, self.device)
        toward = None
        if head is not None:
            ab, toward = self._headed_ab(g, cells, head)
        elif hn is None:
            ab = self.predict_ab([g])[0]
        else:
            P, s = self.pad, g.shape[-1]
            x = F.pad((self._L8[g.long()] / 100.0)[None, None], (P, P, P, P), mode="reflect")
            # the hint planes are zero-padded: a mirrored hint would be a second, false one
            h = F.pad(torch.from_numpy(hints.planes(cells, s)).to(self.device)[None], (P, P, P, P))
            with autocast(self.device):
                y = hn.model(torch.cat([x, h], 1).contiguous(memory_format=torch.channels_last))
            ab = color.decode_ab(y.float()[0, :, P:P + s, P:P + s])
            ab = ab * float(hn.meta.get("chroma_gain", 1.0))
        out = hints.propagate(self._L8[g.long()].cpu().numpy(), ab.float().cpu().numpy(), cells,
                              toward=None if toward is None else toward.float().cpu().numpy())
        return torch.from_numpy(out).to(self.device)

    def hint_head(self):
        """The hint head (worker/hinthead.py) trained under this net, loaded the first time an
        image has hints; None under any other net (then hints are propagated alone)."""
        if self._hint_head is False:
            from pipeline.worker.hinthead import load_head

            self._hint_head = load_head(self.ck.sha256, self.hint_head_path, self.device)
        return self._hint_head

    def hint_model(self, words: bool = False) -> str:
        """What turns hints into colour under this net: the sha256 of the hint model's file, or
        "propagation" where there is none (hinted rows and files); words: said for a report."""
        hn = self.hint_net()
        m = hn if hn is not None else self.hint_head()
        if m is None:
            return "propagation along edges over the net's colour" if words else "propagation"
        if not words:
            return m.sha256
        what = "the hint-conditioned net" if hn is not None else "the hint head over the net's features"
        return f"{what} `{m.sha256[:12]}`, then propagation along edges"

    @torch.inference_mode()
    def _headed_ab(self, g: torch.Tensor, cells, head) -> tuple[torch.Tensor, torch.Tensor]:
        """The net's a*b*, and with the hint head's correction: its guess of the colour from the
        hints and the net's features. The propagation takes the second only where
        the hints reach along edges: on flat, unlike fields the head can move the far side of a
        strong edge by more than the hint itself."""
        from pipeline.worker.hinthead import correction, net_parts

        f, ab, low = net_parts(self.model, self._L8, self.chroma_gain, g[None], self.pad)
        return ab[0], ab[0] + correction(head, f, ab[0], self._L8[g.long()], cells, low)

    @property
    def sha256(self) -> str:
        return self.ck.sha256

    @torch.inference_mode()
    def predict_ab(self, smalls: np.ndarray | list, pad_to: int | None = None) -> torch.Tensor:
        """(B, s, s) uint8 gray (an array, or a list of arrays and device tensors) -> (B, 2, s, s)
        float32 a*, b* on the device. pad_to: the job's batch size, which a compiled net is
        given every time (see below)."""
        if isinstance(smalls, np.ndarray):
            g = to_device(np.ascontiguousarray(smalls), self.device)
        else:
            g = torch.stack([s if isinstance(s, torch.Tensor) else to_device(s, self.device)
                             for s in smalls])
        x = self._L8[g.long()].unsqueeze(1) / 100.0  # (B, 1, s, s) L*/100
        P = self.pad
        if P:
            x = F.pad(x, (P, P, P, P), mode="reflect")
        B = x.shape[0]
        if self.compiled and pad_to and B < pad_to:
            # A shard's last, short batch is padded: a new shape would cost a recompile (~4 s
            # each, and there are batch_size of them), dynamic shapes run the net 20 % slower,
            # and one shape for the whole job keeps its arithmetic (and so its bytes) the same
            # whichever shards a worker happened to see first.
            x = torch.cat([x, x.new_zeros((pad_to - B, *x.shape[1:]))])
        with autocast(self.device):
            y = self._net(x.contiguous(memory_format=torch.channels_last))[:B]
        if P:
            y = y[..., P:-P, P:-P]
        ab = color.decode_ab(y.float())
        if self.chroma_gain != 1.0:
            ab = ab * self.chroma_gain
        return ab.contiguous()

    def recombine(self, gray: np.ndarray | torch.Tensor, ab_small: torch.Tensor | np.ndarray
                  ) -> np.ndarray:
        """Full-resolution RGB from the gray's own L* and the upsampled a/b (recombine.py)."""
        return self.colors.recombine(gray, ab_small)

    def colorize(self, grays: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of gray scans (any sizes) -> full-resolution RGB arrays of the same sizes."""
        if not grays:
            return []
        ab = self.predict_ab(np.stack([net_input(g, self.size) for g in grays]))
        return [self.recombine(g, ab[i]) for i, g in enumerate(grays)]
