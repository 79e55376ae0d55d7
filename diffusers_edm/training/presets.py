"""The paper's training configurations as `train_edm.py` defaults (`--preset NAME`).

Each preset is the official README's exact training command for one model of the paper (spec §6.3, with the network
settings train.py derives from it, §3.4), written as values of `train_edm.py`'s argparse destinations. Flags given on
the command line override them.

Names: `<dataset>-<cond|uncond>-<arch>[-<precond>]`, e.g. `cifar10-cond-ddpmpp` or `ffhq64-uncond-ncsnpp-ve`:

* dataset: `cifar10` (32×32, 10 classes), `ffhq64`, `afhqv2-64` (64×64, unconditional), `imagenet64` (64×64, 1000
  classes);
* arch: `ddpmpp` (DDPM++, EDM's "vp" checkpoints), `ncsnpp` (NCSN++, the "ve" checkpoints), `adm` (ADM);
* no suffix: EDM's preconditioning and loss (`--precond edm`), the paper's models (Table 2, config F, and the
  ImageNet-64 retraining). Suffix `-vp` / `-ve`: the same command with train.py's `--precond=vp|ve`, i.e. the
  original preconditioning and loss of Song et al.; as Table 2 does, VP goes with DDPM++ and VE with NCSN++. These
  baseline presets are train.py's ablation runs, not a row of Table 2: they correspond to config C (original
  preconditioning and loss with the adjusted hyperparameters and architecture) plus config F's non-leaky augmentation.

Shared by all (training_loop defaults): learning-rate ramp-up over 10 Mimg, EMA ramp-up ratio 0.05, Adam (0.9, 0.999,
1e-8) (`train_edm.py`'s defaults), P_mean −1.2, P_std 1.2, σ_data 0.5 (also its defaults), no label dropout and no
dataset x-flips. `total_batch_size` is train.py's global `--batch`; the per-device batch and the gradient
accumulation follow from it and the number of processes.

fp16 (ImageNet-64): the official run uses the network's fp16 mode with a static loss scale of 100 (`--ls=100`);
accelerate's `mixed_precision="fp16"` uses autocast and a dynamic gradient scaler instead, so no loss scale is set here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import TrainingError


@dataclass(frozen=True)
class Preset:
    """One training configuration of the paper.

    Attributes:
        name (`str`): the `--preset` name.
        doc (`str`): which model of the paper it trains (paper table row and README command).
        args (`Mapping`): `train_edm.py` argparse destination → value.
        dataset (`str`): the official dataset it was made for (prepared by EDM's dataset_tool.py).
        resolution (`int`), channels (`int`), num_classes (`int`): that dataset's images and classes (0:
            unlabelled); used for parameter counts without data.
    """

    name: str
    doc: str
    args: Mapping[str, object] = field(repr=False)
    dataset: str
    resolution: int
    channels: int
    num_classes: int


# --- The table (spec §6.3 and §3.4) ----------------------------------------------------------------------------------

_ARCHITECTURES = {
    # --arch: train.py's model_channels and channel_mult, and the network classes' num_blocks / attn_resolutions
    # defaults (train.py never sets them, §3.4).
    "ddpmpp": dict(arch="ddpmpp", model_channels=128, channel_mult=[2, 2, 2], layers_per_block=4,
                   attn_resolutions=[16]),
    "ncsnpp": dict(arch="ncsnpp", model_channels=128, channel_mult=[2, 2, 2], layers_per_block=4,
                   attn_resolutions=[16]),
    "adm": dict(arch="adm", model_channels=192, channel_mult=[1, 2, 3, 4], layers_per_block=3,
                attn_resolutions=[32, 16, 8]),
}

_SCHEDULE = dict(lr_rampup_kimg=10000.0, ema_rampup_ratio=0.05)

_DATASETS = {
    # dataset: (official dataset, resolution, channels, classes, hyperparameters of its README command)
    "cifar10": ("cifar10-32x32", 32, 3, 10, dict(
        total_batch_size=512, learning_rate=1e-3, dropout=0.13, augment_p=0.12, duration_kimg=200000.0,
        ema_halflife_kimg=500.0, mixed_precision="no")),
    "ffhq64": ("ffhq-64x64", 64, 3, 0, dict(
        channel_mult=[1, 2, 2, 2], total_batch_size=256, learning_rate=2e-4, dropout=0.05, augment_p=0.15,
        duration_kimg=200000.0, ema_halflife_kimg=500.0, mixed_precision="no")),
    "afhqv2-64": ("afhqv2-64x64", 64, 3, 0, dict(
        channel_mult=[1, 2, 2, 2], total_batch_size=256, learning_rate=2e-4, dropout=0.25, augment_p=0.15,
        duration_kimg=200000.0, ema_halflife_kimg=500.0, mixed_precision="no")),
    "imagenet64": ("imagenet-64x64", 64, 3, 1000, dict(
        total_batch_size=4096, learning_rate=1e-4, dropout=0.10, augment_p=0.0, duration_kimg=2500000.0,
        ema_halflife_kimg=50000.0, mixed_precision="fp16")),
}

_TABLE2 = "Table 2, config F"
_TABLE2_BASELINE = "train.py --precond={precond} ablation (Table 2 config C + non-leaky augmentation)"

_PRESET_ROWS = [
    # (name, dataset, conditional, arch, precond, doc)
    ("cifar10-cond-ddpmpp", "cifar10", True, "ddpmpp", "edm",
     f"CIFAR-10 32×32 class-conditional, DDPM++ with EDM ({_TABLE2}, column 'VP', FID 1.79; pretrained "
     "edm-cifar10-32x32-cond-vp). README: --cond=1 --arch=ddpmpp."),
    ("cifar10-uncond-ddpmpp", "cifar10", False, "ddpmpp", "edm",
     f"CIFAR-10 32×32 unconditional, DDPM++ with EDM ({_TABLE2}, column 'VP', FID 1.97; pretrained "
     "edm-cifar10-32x32-uncond-vp). README: --cond=0 --arch=ddpmpp."),
    ("cifar10-cond-ncsnpp", "cifar10", True, "ncsnpp", "edm",
     f"CIFAR-10 32×32 class-conditional, NCSN++ with EDM ({_TABLE2}, column 'VE'; pretrained "
     "edm-cifar10-32x32-cond-ve). README: --cond=1 --arch=ncsnpp."),
    ("cifar10-uncond-ncsnpp", "cifar10", False, "ncsnpp", "edm",
     f"CIFAR-10 32×32 unconditional, NCSN++ with EDM ({_TABLE2}, column 'VE'; pretrained "
     "edm-cifar10-32x32-uncond-ve). README: --cond=0 --arch=ncsnpp."),
    ("ffhq64-uncond-ddpmpp", "ffhq64", False, "ddpmpp", "edm",
     f"FFHQ 64×64 unconditional, DDPM++ with EDM ({_TABLE2}, column 'VP', FID 2.39; pretrained "
     "edm-ffhq-64x64-uncond-vp). README: --cond=0 --arch=ddpmpp --batch=256 --cres=1,2,2,2 --lr=2e-4 "
     "--dropout=0.05 --augment=0.15."),
    ("ffhq64-uncond-ncsnpp", "ffhq64", False, "ncsnpp", "edm",
     f"FFHQ 64×64 unconditional, NCSN++ with EDM ({_TABLE2}, column 'VE'; pretrained "
     "edm-ffhq-64x64-uncond-ve). README: --cond=0 --arch=ncsnpp --batch=256 --cres=1,2,2,2 --lr=2e-4 "
     "--dropout=0.05 --augment=0.15."),
    ("afhqv2-64-uncond-ddpmpp", "afhqv2-64", False, "ddpmpp", "edm",
     f"AFHQv2 64×64 unconditional, DDPM++ with EDM ({_TABLE2}, column 'VP', FID 1.96; pretrained "
     "edm-afhqv2-64x64-uncond-vp). README: as FFHQ with --dropout=0.25."),
    ("afhqv2-64-uncond-ncsnpp", "afhqv2-64", False, "ncsnpp", "edm",
     f"AFHQv2 64×64 unconditional, NCSN++ with EDM ({_TABLE2}, column 'VE'; pretrained "
     "edm-afhqv2-64x64-uncond-ve). README: as FFHQ with --dropout=0.25."),
    ("imagenet64-cond-adm", "imagenet64", True, "adm", "edm",
     "ImageNet 64×64 class-conditional, ADM retrained with EDM (FID 1.36 with the stochastic sampler; pretrained "
     "edm-imagenet-64x64-cond-adm). README: --cond=1 --arch=adm --duration=2500 --batch=4096 --lr=1e-4 --ema=50 "
     "--dropout=0.10 --augment=0 --fp16=1 --ls=100 (static loss scale 100 not reproduced, see the module notes)."),
    ("cifar10-cond-ddpmpp-vp", "cifar10", True, "ddpmpp", "vp",
     "CIFAR-10 32×32 class-conditional, DDPM++ with the VP preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="vp") + ", column 'VP'."),
    ("cifar10-uncond-ddpmpp-vp", "cifar10", False, "ddpmpp", "vp",
     "CIFAR-10 32×32 unconditional, DDPM++ with the VP preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="vp") + ", column 'VP'."),
    ("cifar10-cond-ncsnpp-ve", "cifar10", True, "ncsnpp", "ve",
     "CIFAR-10 32×32 class-conditional, NCSN++ with the VE preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="ve") + ", column 'VE'."),
    ("cifar10-uncond-ncsnpp-ve", "cifar10", False, "ncsnpp", "ve",
     "CIFAR-10 32×32 unconditional, NCSN++ with the VE preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="ve") + ", column 'VE'."),
    ("ffhq64-uncond-ddpmpp-vp", "ffhq64", False, "ddpmpp", "vp",
     "FFHQ 64×64 unconditional, DDPM++ with the VP preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="vp") + ", column 'VP'."),
    ("ffhq64-uncond-ncsnpp-ve", "ffhq64", False, "ncsnpp", "ve",
     "FFHQ 64×64 unconditional, NCSN++ with the VE preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="ve") + ", column 'VE'."),
    ("afhqv2-64-uncond-ddpmpp-vp", "afhqv2-64", False, "ddpmpp", "vp",
     "AFHQv2 64×64 unconditional, DDPM++ with the VP preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="vp") + ", column 'VP'."),
    ("afhqv2-64-uncond-ncsnpp-ve", "afhqv2-64", False, "ncsnpp", "ve",
     "AFHQv2 64×64 unconditional, NCSN++ with the VE preconditioning and loss: "
     + _TABLE2_BASELINE.format(precond="ve") + ", column 'VE'."),
]


def _build(name: str, dataset: str, conditional: bool, arch: str, precond: str, doc: str) -> Preset:
    official, resolution, channels, num_classes, hyperparameters = _DATASETS[dataset]
    args = {**_ARCHITECTURES[arch], **_SCHEDULE, **hyperparameters, "conditional": conditional, "precond": precond}
    return Preset(name=name, doc=doc, args=args, dataset=official, resolution=resolution, channels=channels,
                  num_classes=num_classes)


# --- EDM2 (Karras et al. 2024): its training configurations, and its recipe as defaults of --arch edm2 --------------

EDM2_VAE = "stabilityai/sd-vae-ft-mse"
"""The VAE of EDM2's ImageNet-512 models."""

_EDM2_NETWORK = dict(arch="edm2", channel_mult=[1, 2, 3, 4], layers_per_block=3, attn_resolutions=[16, 8])
_EDM2_TRAINING = dict(loss="edm2", lr_schedule="edm2", total_batch_size=2048, lr_rampup_kimg=10000.0,
                      adam_beta1=0.9, adam_beta2=0.99, augment_p=0.0, mixed_precision="fp16", conditional=True,
                      phema_stds=[0.05, 0.10], phema_every="8388.608kimg")
_EDM2_SIZES = {
    # name: (model_channels, dropout, ref_lr, training images); the official training presets
    "edm2-img512-xxs": (64, 0.0, 0.017, 2147483648), "edm2-img512-xs": (128, 0.0, 0.012, 2147483648),
    "edm2-img512-s": (192, 0.0, 0.010, 2147483648), "edm2-img512-m": (256, 0.1, 0.009, 2147483648),
    "edm2-img512-l": (320, 0.1, 0.008, 1879048192), "edm2-img512-xl": (384, 0.1, 0.007, 1342177280),
    "edm2-img512-xxl": (448, 0.1, 0.0065, 939524096),
    "edm2-img64-xs": (128, 0.0, 0.012, 1073741824), "edm2-img64-s": (192, 0.0, 0.010, 1073741824),
    "edm2-img64-m": (256, 0.1, 0.009, 2147483648), "edm2-img64-l": (320, 0.1, 0.008, 1073741824),
    "edm2-img64-xl": (384, 0.1, 0.007, 671088640),
}


def _build_edm2(name: str) -> Preset:
    channels, dropout, ref_lr, nimg = _EDM2_SIZES[name]
    latent = "-img512-" in name
    args = {**_EDM2_NETWORK, **_EDM2_TRAINING, "model_channels": channels, "dropout": dropout, "learning_rate": ref_lr,
            "duration_kimg": nimg / 1000, "ref_batches": 70000 if latent else 35000,
            "p_mean": -0.4 if latent else -0.8, "p_std": 1.0 if latent else 1.6,
            "vae": EDM2_VAE if latent else None}
    space = f"latents of {EDM2_VAE} (4x64x64)" if latent else "pixels"
    doc = (f"EDM2 {name.split('-')[-1].upper()} on ImageNet {'512' if latent else '64'}x{'512' if latent else '64'}"
           f" class-conditional, on {space}: the official training configuration ({nimg / 2**20:g} Mi images of"
           f" 2048, ref_lr {ref_lr:g}).")
    return Preset(name=name, doc=doc, args=args, dataset=f"imagenet-{'512x512' if latent else '64x64'}",
                  resolution=512 if latent else 64, channels=3, num_classes=1000)


EDM2_RECIPE: dict[str, object] = dict(
    loss="edm2", lr_schedule="edm2", learning_rate=0.01, ref_batches=800, lr_rampup_kimg=10.0, adam_beta2=0.99,
    augment_p=0.0, dropout=0.0, p_mean=-0.8, p_std=1.6, phema_stds=[0.05, 0.10], phema_export_std=0.15,
)
"""Defaults that `--arch edm2` brings (EDM2's recipe: its loss and lr schedule, Adam β₂ 0.99, no augmentation or
dropout, post-hoc EMA; the pixel-space σ distribution of its ImageNet-64 models), sized for the embedded digits; a
--preset and explicit flags override them. The exported σ_rel 0.15 is the one held-out seeds chose on the digits for
both training seeds (of 0.05, 0.10, 0.15)."""

PRESETS: dict[str, Preset] = {row[0]: _build(*row) for row in _PRESET_ROWS}
PRESETS.update((name, _build_edm2(name)) for name in _EDM2_SIZES)
"""All presets by name, in the order of the tables above."""


def get_preset(name: str) -> Preset:
    """The preset `name`; a one-line [`TrainingError`] listing the valid names otherwise."""
    if name not in PRESETS:
        raise TrainingError(f"Unknown --preset {name!r}; valid presets: {', '.join(PRESETS)}.")
    return PRESETS[name]


def preset_defaults(name: str) -> dict:
    """The `train_edm.py` argument values of preset `name` (argparse destination → value; a fresh copy to modify)."""
    return copy.deepcopy(dict(get_preset(name).args))
