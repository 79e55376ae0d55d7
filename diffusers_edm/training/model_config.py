"""The configuration of a denoiser built from `train_edm.py`'s flags (the paper's DDPM++, NCSN++, ADM, EDM2's U-Net or
diffusers' UNet2DModel), and its parameter count without allocating it (`--dry_run`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..preconditioning import EDM_SIGMA_DATA, make_preconditioning
from .augment import AugmentPipe
from .latent_data import EDM2_VAE_CONFIG, vae_scale_factor
from .loss import check_trainable
from .presets import get_preset
from .settings import NATIVE_ARCHITECTURES


def native_model_config(
    arch: str,
    model_channels: int,
    channel_mult: Sequence[int],
    layers_per_block: int,
    attn_resolutions: Sequence[int],
    dropout: float,
    resolution: int,
    channels: int,
    num_classes: int,
    augment_dim: int,
    precond: str = "edm",
    sigma_data: float = EDM_SIGMA_DATA,
    label_dropout: float = 0.0,
) -> dict:
    """The `EDMPreconditionedUNet2DModel` constructor arguments of a paper backbone, as EDM's train.py builds it
    (§3.4 of the spec): `EDMPreconditionedUNet2DModel(**native_model_config(...))`.

    Args:
        arch (`str`): "ddpmpp", "ncsnpp" or "adm" (see `NATIVE_ARCHITECTURES`).
        model_channels, channel_mult, layers_per_block (num_blocks), attn_resolutions, dropout: the backbone.
        resolution (`int`), channels (`int`): image size and channels (from the data).
        num_classes (`int`): number of classes, 0 for an unconditional model.
        augment_dim (`int`): augment-label length (9 with EDM's augmentation, 0 without).
        precond (`str`): "edm", "vp" or "ve" (with their default parameters; iDDPM cannot be trained).
        sigma_data (`float`): σ_data of the EDM preconditioning (stored, unused, for "vp"/"ve").
        label_dropout (`float`): the backbone's label dropout (in `backbone_config` only when non-zero).
    """
    if arch not in NATIVE_ARCHITECTURES:
        raise ValueError(f"native_model_config builds {', '.join(NATIVE_ARCHITECTURES)}, not {arch!r}.")
    check_trainable(precond)
    backbone_type, fixed = NATIVE_ARCHITECTURES[arch]
    backbone_config = dict(model_channels=model_channels, channel_mult=list(channel_mult),
                           num_blocks=layers_per_block, attn_resolutions=list(attn_resolutions), dropout=dropout,
                           **fixed)
    if label_dropout:  # the official networks' own label dropout
        backbone_config["label_dropout"] = label_dropout
    return dict(sample_size=resolution, in_channels=channels, out_channels=channels, sigma_data=sigma_data,
                num_class_labels=num_classes, augment_dim=augment_dim, backbone_type=backbone_type,
                backbone_config=backbone_config, preconditioning=precond)


def edm2_model_config(
    model_channels: int,
    channel_mult: Sequence[int],
    layers_per_block: int,
    attn_resolutions: Sequence[int],
    dropout: float,
    resolution: int,
    channels: int,
    num_classes: int,
    sigma_data: float = EDM_SIGMA_DATA,
) -> dict:
    """The `EDMPreconditionedUNet2DModel` constructor arguments of EDM2's magnitude-preserving U-Net (`--arch edm2`),
    as EDM2's training builds its `Precond`: EDM's preconditioning, no augmentation conditioning, the U-Net's other
    arguments at the official defaults."""
    backbone_config = dict(model_channels=model_channels, channel_mult=list(channel_mult),
                           num_blocks=layers_per_block, attn_resolutions=list(attn_resolutions), dropout=dropout)
    return dict(sample_size=resolution, in_channels=channels, out_channels=channels, sigma_data=sigma_data,
                num_class_labels=num_classes, augment_dim=0, backbone_type="edm2_unet",
                backbone_config=backbone_config, preconditioning="edm")


def count_parameters(config_kwargs: dict) -> int:
    """The number of parameters of `EDMPreconditionedUNet2DModel(**config_kwargs)`, built on the meta device (no
    memory; about a second even for ImageNet's 296M-parameter ADM).

    The preconditioning holds no parameters, and the VP and iDDPM ones evaluate their σ range as Python numbers at
    construction, which meta tensors cannot give: it is built (and so validated) on the CPU, and the network is
    counted with the EDM preconditioning, which has the same backbone and parameters.
    """
    config = {key: value for key, value in dict(config_kwargs).items() if not key.startswith("_")}
    preconditioning = config.pop("preconditioning", "edm")
    preconditioning_config = config.pop("preconditioning_config", None)
    if preconditioning != "edm":
        make_preconditioning(preconditioning, **(preconditioning_config or {}))
        if preconditioning == "iddpm" and config.get("out_channels", 3) != 2 * config.get("in_channels", 3):
            raise ValueError("iDDPM networks output 2 x in_channels channels; set out_channels accordingly.")
    else:
        config["preconditioning_config"] = preconditioning_config
    with torch.device("meta"):
        model = EDMPreconditionedUNet2DModel(**config)
    return sum(parameter.numel() for parameter in model.parameters())


def edm_augment_dim(augment_p: float, augment_colors: bool = False) -> int:
    """The augment-label length of EDM's augmentation at probability `augment_p` (9, or 15 with the colour
    augmentations; 0 when `augment_p` is 0, as train.py sets augment_dim only for `--augment` > 0)."""
    return AugmentPipe.edm_default(augment_p, colors=augment_colors).label_dim if augment_p > 0 else 0


def preset_model_config(name: str, **overrides) -> dict:
    """The model configuration of `--preset name` on its official dataset (resolution, channels and classes from the
    preset), e.g. for a parameter count without data: `count_parameters(preset_model_config("imagenet64-cond-adm"))`.
    `overrides` replace arguments of [`native_model_config`] (e.g. `resolution=`, `num_classes=`)."""
    preset = get_preset(name)
    args = preset.args
    if args["arch"] == "edm2":  # on the latents of EDM2's VAE for the ImageNet-512 presets
        latent = args.get("vae") is not None
        factor = vae_scale_factor(EDM2_VAE_CONFIG) if latent else 1
        kwargs = dict(model_channels=args["model_channels"], channel_mult=args["channel_mult"],
                      layers_per_block=args["layers_per_block"], attn_resolutions=args["attn_resolutions"],
                      dropout=args["dropout"], resolution=preset.resolution // factor,
                      channels=EDM2_VAE_CONFIG["latent_channels"] if latent else preset.channels,
                      num_classes=preset.num_classes)
        kwargs.update(overrides)
        return edm2_model_config(**kwargs)
    kwargs = dict(
        arch=args["arch"], model_channels=args["model_channels"], channel_mult=args["channel_mult"],
        layers_per_block=args["layers_per_block"], attn_resolutions=args["attn_resolutions"], dropout=args["dropout"],
        resolution=preset.resolution, channels=preset.channels,
        num_classes=preset.num_classes if args["conditional"] else 0,
        augment_dim=edm_augment_dim(args["augment_p"]), precond=args["precond"],
    )
    kwargs.update(overrides)
    return native_model_config(**kwargs)


def unet2d_model_config(
    model_channels: int,
    channel_mult: Sequence[int],
    layers_per_block: int,
    attn_resolutions: Sequence[int],
    dropout: float,
    resolution: int,
    channels: int,
    num_classes: int,
    augment_dim: int,
    precond: str = "edm",
    sigma_data: float = EDM_SIGMA_DATA,
    label_dropout: float = 0.0,
) -> dict:
    """The `EDMPreconditionedUNet2DModel` arguments of a diffusers `UNet2DModel` backbone (`--arch unet_2d`) with the
    same level layout as the paper's backbones: `model_channels · channel_mult` channels, attention at
    `attn_resolutions`, the largest GroupNorm group count (≤ 32) that divides every level into groups of ≥ 4."""
    check_trainable(precond)
    block_channels = [model_channels * m for m in channel_mult]
    attention = [resolution >> level in attn_resolutions for level in range(len(block_channels))]
    groups = 32
    while groups > 1 and any(c % groups or c // groups < 4 for c in block_channels):
        groups //= 2
    return dict(
        sample_size=resolution, in_channels=channels, out_channels=channels, sigma_data=sigma_data,
        num_class_labels=num_classes, augment_dim=augment_dim, preconditioning=precond,
        block_out_channels=block_channels,
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        layers_per_block=layers_per_block, norm_num_groups=groups, attention_head_dim=math.gcd(*block_channels, 32),
        dropout=dropout, label_dropout=label_dropout,
    )
