"""The options of `colorize train`, written once (no torch): each field carries its flag's help
and check, so the CLI's flags and a train.toml's keys are derived from this class, as a run's
are from JobSpec."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.client.jobspec import (
    count_arg,
    fraction_arg,
    opt,
    positive_float,
    positive_int,
    share_arg,
    size_arg,
)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    src: str = opt("", "a folder or manifest of colour photos", flags=())  # the positional SRC
    out: str = opt("out/train", "checkpoints and metrics.csv go here")
    epochs: int = opt(10, "passes over the training photos", type=positive_int)
    size: int = opt(224, "crop size (multiple of 8)", type=size_arg)
    batch_size: int = opt(16, "crops per step", type=positive_int)
    lr: float = opt(2e-3, "peak learning rate of the one-cycle schedule (for a net started from "
                    "ImageNet's trunk; fine-tuning the shipped weights wants ~1e-4)", type=positive_float)
    weight_decay: float = opt(0.0, "weight decay", type=fraction_arg)
    val_fraction: float = opt(0.1, "validation share of a plain folder (a collection has its own split)",
                              type=fraction_arg)
    prescale: int = opt(512, "long side photos are scaled to before cropping (crops show whole "
                        "objects)", type=positive_int)
    min_scale: float = opt(0.25, "smallest crop area fraction", type=share_arg)
    repeats: int = opt(1, "crops per photo per epoch (small collections)", type=positive_int)
    seed: int = opt(0, "random seed", type=int)
    workers: int = opt(2, "DataLoader worker processes", type=count_arg)
    device: str = opt("auto", "where to train", choices=DEVICES)
    max_steps: int = opt(0, "stop after this many steps (0: none; smoke tests)", type=count_arg)
    resume: bool = opt(False, "continue from OUT/last.pt")
    init: str = opt("", "start from these weights: a checkpoint of ours (the shipped ones: "
                    "pipeline/weights/colorizer.pt), or the tutorial's .pth (fresh optimizer)")
    ema: float = opt(0.0, "EMA decay of the weights, validated and saved (0: off)", type=fraction_arg)
    l1_weight: float = opt(0.0, "loss = MSE + this x L1", type=fraction_arg)
    degrade: float = opt(0.0, "probability of each scan-like degradation of the input (grain, blur, "
                         "fading)", type=fraction_arg)
    film: float = opt(0.0, "share of inputs whose lightness is an orthochromatic or blue-sensitive "
                      "film's, not the photo's own L* (reds dark, blues pale, as in old scans)",
                      type=fraction_arg)
    damage: float = opt(0.0, "probability of each kind of old-print damage drawn on the input "
                        "(scratches, specks, foxing, vignetting, uneven exposure; the target stays "
                        "the clean colour)", type=fraction_arg)
    neutral: float = opt(0.0, "share of training samples that are featureless gray fields with no "
                         "colour (keeps blank areas and the frame neutral)", type=fraction_arg)
    rarity: float = opt(0.0, "weight each pixel's error by the rarity of its true a*b* (Zhang, "
                        "Isola, Efros 2016's rebalancing: 0 plain MSE, 0.5 theirs), so rare "
                        "saturated colours are not averaged to brown", type=fraction_arg)
    aux: float = opt(0.0, "weight of a training-only classifier over a*b* bins on the decoder's "
                     "features (Zhang et al. 2016's rebalanced objective as an auxiliary signal; "
                     "the shipped net stays the seed's)", type=fraction_arg)
    hints: int = opt(0, "train the hint-conditioned variant (L plus hint a*, b* and mask planes, "
                       "Zhang et al. 2017) with simulated points per crop, their number geometric "
                       "with this mean (0: the seed's net)", type=count_arg)
    optimizer: str = opt("adam", "adam (the seed's) or adamw", choices=("adam", "adamw"))
    bf16: bool = opt(False, "bfloat16 autocast on a CPU as well (a GPU always uses it): steps ~2x "
                     "faster where the CPU has AVX-512 BF16; the weights and validation stay float32")
