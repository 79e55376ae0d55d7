# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The Dhariwal & Nichol U-Net (ADM) as used by EDM for ImageNet-64 (Karras et al. 2022, Appendix F.2, Table 7)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .edm_layers import (
    AttentionImplementationMixin,
    EDMConv2d,
    EDMGroupNorm,
    EDMLinear,
    PositionalEmbedding,
    UNetBlock,
    WeightInit,
    check_unet_architecture,
    check_unet_inputs,
    run_block,
)


class DhariwalUNet2DModel(AttentionImplementationMixin, ModelMixin, ConfigMixin):
    r"""
    The raw network F of EDM's ADM models (the "ablated diffusion model" U-Net of Dhariwal & Nichol 2021).

    EDM's ImageNet-64 model uses the defaults with `label_dim=1000`; the iDDPM baseline has
    `out_channels = 2 · in_channels` (only the first half is used by its preconditioning).

    Module names equal the official state_dict keys without the `model.` prefix (`map_noise`, `map_augment`,
    `map_layer0/1`, `map_label`, `enc.{R}x{R}_*`, `dec.{R}x{R}_*`, `out_norm`, `out_conv`), so official weights load
    with `load_state_dict(strict=True)`.

    Mapping network: e = [cos, sin] positional embedding of c_noise (no endpoint) + map_augment(augment_labels);
    e = map_layer1(silu(map_layer0(e))) + map_label(labels) (no bias); e = silu(e). Encoder levels start with a 3×3
    conv (level 0) or a downsampling block, followed by `num_blocks` blocks; decoder levels start with `in0` (always
    with attention) and `in1` at the lowest resolution or an upsampling block elsewhere, followed by `num_blocks + 1`
    blocks that each take [x, skip] concatenated. Every block at a resolution in `attn_resolutions` has attention with
    out_channels // 64 heads (none if that is 0). Blocks use adaptive scale/shift conditioning, skip_scale 1 and
    weightless resampling skips when the channel count is unchanged. Output: out_conv(silu(out_norm(x))).

    Args:
        img_resolution (`int`): image height and width (divisible by 2^(len(channel_mult) − 1)).
        in_channels (`int`): channels of the input image.
        out_channels (`int`): channels of the output.
        label_dim (`int`, defaults to 0): number of classes (0: unconditional).
        augment_dim (`int`, defaults to 0): length of the augmentation label vector (0: no augmentation conditioning).
        model_channels (`int`, defaults to 192): base channel count.
        channel_mult (`Sequence[int]`, defaults to `(1, 2, 3, 4)`): per-level channel multipliers.
        channel_mult_emb (`int`, defaults to 4): embedding width = model_channels · channel_mult_emb.
        num_blocks (`int`, defaults to 3): residual blocks per encoder level.
        attn_resolutions (`Sequence[int]`, defaults to `(32, 16, 8)`): resolutions with self-attention.
        dropout (`float`, defaults to 0.10): dropout probability inside the blocks.
        label_dropout (`float`, defaults to 0): probability of zeroing a sample's class labels during training.
    """

    _supports_gradient_checkpointing = True
    # Regional compilation (`compile_repeated_blocks()`) compiles each residual block.
    _repeated_blocks = ["UNetBlock"]

    @register_to_config
    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ):
        super().__init__()
        # Store sequences as lists so that the config is identical before and after a JSON round trip.
        channel_mult, attn_resolutions = list(channel_mult), list(attn_resolutions)
        self.register_to_config(channel_mult=channel_mult, attn_resolutions=attn_resolutions)
        check_unet_architecture(img_resolution, channel_mult, num_blocks, label_dim, augment_dim)

        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        # Set by `enable_gradient_checkpointing()`: recompute each UNetBlock in the backward pass while training.
        self.gradient_checkpointing = False
        emb_channels = model_channels * channel_mult_emb
        init = WeightInit("kaiming_uniform", weight_scale=math.sqrt(1 / 3), bias_scale=math.sqrt(1 / 3))
        init_zero = WeightInit("kaiming_uniform", weight_scale=0.0, bias_scale=0.0)
        block_kwargs = dict(
            emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero
        )

        # Mapping network.
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = (
            EDMLinear(augment_dim, model_channels, bias=False, init=init_zero) if augment_dim else None
        )
        self.map_layer0 = EDMLinear(model_channels, emb_channels, init=init)
        self.map_layer1 = EDMLinear(emb_channels, emb_channels, init=init)
        # kaiming_normal × √label_dim gives N(0, 1) entries: an embedding table applied to one-hot/soft label vectors.
        label_init = WeightInit("kaiming_normal", weight_scale=math.sqrt(label_dim))
        self.map_label = EDMLinear(label_dim, emb_channels, bias=False, init=label_init) if label_dim else None

        # Encoder.
        self.enc = nn.ModuleDict()
        channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = EDMConv2d(channels, model_channels * mult, kernel=3, init=init)
                channels = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block_kwargs)
            for index in range(num_blocks):
                block_out = model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = UNetBlock(
                    channels, block_out, attention=res in attn_resolutions, **block_kwargs
                )
                channels = block_out
        skip_channels = [module.out_channels for module in self.enc.values()]

        # Decoder. Only the `_block{i}` entries concatenate a skip; `in0`, `in1` and `up` do not.
        self.dec = nn.ModuleDict()
        takes_skip = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block_kwargs)
                takes_skip += [False, False]
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block_kwargs)
                takes_skip.append(False)
            for index in range(num_blocks + 1):
                block_out = model_channels * mult
                self.dec[f"{res}x{res}_block{index}"] = UNetBlock(
                    channels + skip_channels.pop(), block_out, attention=res in attn_resolutions, **block_kwargs
                )
                takes_skip.append(True)
                channels = block_out
        self._decoder_takes_skip = tuple(takes_skip)
        self.out_norm = EDMGroupNorm(channels)
        self.out_conv = EDMConv2d(channels, out_channels, kernel=3, init=init_zero)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Evaluate the raw network F (the output that EDM's preconditioning scales by c_out, Eq. 7).

        Args:
            x (`torch.Tensor`): network input c_in(σ)·x of shape (B, in_channels, img_resolution, img_resolution);
                the network runs in its dtype.
            noise_labels (`torch.Tensor`): c_noise(σ), flattened to shape (B,) or (1,).
            class_labels (`torch.Tensor`, *optional*): float label vectors (B, label_dim) or one broadcast row
                (1, label_dim), one-hot or soft; required iff label_dim > 0 (an all-zero row means "no class").
            augment_labels (`torch.Tensor`, *optional*): augmentation labels (B, augment_dim); `None` equals zeros.

        Returns:
            `torch.Tensor`: F of shape (B, out_channels, img_resolution, img_resolution) in x's dtype.
        """
        check_unet_inputs(
            type(self).__name__,
            x,
            noise_labels,
            class_labels,
            augment_labels,
            in_channels=self.in_channels,
            img_resolution=self.img_resolution,
            label_dim=self.label_dim,
            augment_dim=self.augment_dim,
        )
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels)
        emb = F.silu(emb)

        skips = []
        for module in self.enc.values():
            x = run_block(self, module, x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for takes_skip, module in zip(self._decoder_takes_skip, self.dec.values()):
            x = run_block(self, module, x, emb, skips.pop() if takes_skip else None)
        return self.out_conv(F.silu(self.out_norm(x)))
