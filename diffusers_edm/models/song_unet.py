# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The "Song" U-Net of EDM: DDPM++ and NCSN++ (Karras et al. 2022, Appendix F.2, Table 7; Song et al. 2021)."""

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
    FourierEmbedding,
    PositionalEmbedding,
    UNetBlock,
    WeightInit,
    check_unet_architecture,
    check_unet_inputs,
    run_block,
)

_EMBEDDING_TYPES = ("positional", "fourier")
_ENCODER_TYPES = ("standard", "skip", "residual")
_DECODER_TYPES = ("standard", "skip")


class SongUNet2DModel(AttentionImplementationMixin, ModelMixin, ConfigMixin):
    r"""
    The raw network F of EDM's DDPM++ and NCSN++ models (the U-Net of Song et al. 2021 as configured in EDM, Table 7).

    DDPM++ (EDM's "vp" checkpoints): `embedding_type="positional"`, `channel_mult_noise=1`, `encoder_type="standard"`,
    `resample_filter=[1, 1]`. NCSN++ ("ve" checkpoints): `embedding_type="fourier"`, `channel_mult_noise=2`,
    `encoder_type="residual"`, `resample_filter=[1, 3, 3, 1]`. Both use `model_channels=128`,
    `channel_mult=[2, 2, 2]` at 32×32 and `[1, 2, 2, 2]` at 64×64.

    Module names equal the official state_dict keys without the `model.` prefix (`map_noise`, `map_label`,
    `map_augment`, `map_layer0/1`, `enc.{R}x{R}_*`, `dec.{R}x{R}_*`), so official weights load with
    `load_state_dict(strict=True)`.

    Mapping network: e = noise embedding of c_noise with its halves in the order [sin, cos]; + map_label(labels·√L);
    + map_augment(augment_labels) (no bias); e = silu(map_layer1(silu(map_layer0(e)))). Encoder levels start with a
    3×3 conv (level 0) or a downsampling block, followed by `num_blocks` blocks; decoder levels start with `in0`
    (always with attention) and `in1` at the lowest resolution or an upsampling block elsewhere, followed by
    `num_blocks + 1` blocks that each take [x, skip] concatenated; only the last block of a level in
    `attn_resolutions` has attention. Blocks use one attention head, skip_scale √½, GroupNorm eps 1e-6, additive
    embedding and 1×1 projections on resampling skips.

    Args:
        img_resolution (`int`): image height and width (divisible by 2^(len(channel_mult) − 1)).
        in_channels (`int`): channels of the input image.
        out_channels (`int`): channels of the output.
        label_dim (`int`, defaults to 0): number of classes (0: unconditional).
        augment_dim (`int`, defaults to 0): length of the augmentation label vector (0: no augmentation conditioning).
        model_channels (`int`, defaults to 128): base channel count (also the width of the first conv).
        channel_mult (`Sequence[int]`, defaults to `(1, 2, 2, 2)`): per-level channel multipliers.
        channel_mult_emb (`int`, defaults to 4): embedding width = model_channels · channel_mult_emb.
        num_blocks (`int`, defaults to 4): residual blocks per encoder level.
        attn_resolutions (`Sequence[int]`, defaults to `(16,)`): resolutions with self-attention.
        dropout (`float`, defaults to 0.10): dropout probability inside the blocks.
        label_dropout (`float`, defaults to 0): probability of zeroing a sample's class labels during training.
        embedding_type (`str`, defaults to `"positional"`): `"positional"` (DDPM++) or `"fourier"` (NCSN++).
        channel_mult_noise (`int`, defaults to 1): noise-embedding width = model_channels · channel_mult_noise.
        encoder_type (`str`, defaults to `"standard"`): `"standard"`, `"skip"` (progressive input skips) or
            `"residual"` (NCSN++'s progressive residual input path).
        decoder_type (`str`, defaults to `"standard"`): `"standard"` or `"skip"` (progressive output heads).
        resample_filter (`Sequence[int]`, defaults to `(1, 1)`): FIR taps for up/downsampling.
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
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[int] = (1, 1),
    ):
        super().__init__()
        # Store sequences as lists so that the config is identical before and after a JSON round trip.
        channel_mult, attn_resolutions = list(channel_mult), list(attn_resolutions)
        resample_filter = list(resample_filter)
        self.register_to_config(
            channel_mult=channel_mult, attn_resolutions=attn_resolutions, resample_filter=resample_filter
        )
        if embedding_type not in _EMBEDDING_TYPES:
            raise ValueError(f"embedding_type must be one of {_EMBEDDING_TYPES}, got {embedding_type!r}.")
        if encoder_type not in _ENCODER_TYPES:
            raise ValueError(f"encoder_type must be one of {_ENCODER_TYPES}, got {encoder_type!r}.")
        if decoder_type not in _DECODER_TYPES:
            raise ValueError(f"decoder_type must be one of {_DECODER_TYPES}, got {decoder_type!r}.")
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
        noise_channels = model_channels * channel_mult_noise
        init = WeightInit("xavier_uniform")
        init_zero = WeightInit("xavier_uniform", weight_scale=1e-5)
        init_attn = WeightInit("xavier_uniform", weight_scale=math.sqrt(0.2))
        block_kwargs = dict(
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
            init=init,
            init_zero=init_zero,
            init_attn=init_attn,
        )

        # Mapping network.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = EDMLinear(label_dim, noise_channels, init=init) if label_dim else None
        self.map_augment = EDMLinear(augment_dim, noise_channels, bias=False, init=init) if augment_dim else None
        self.map_layer0 = EDMLinear(noise_channels, emb_channels, init=init)
        self.map_layer1 = EDMLinear(emb_channels, emb_channels, init=init)

        # Encoder. `roles` records what each entry does in forward, in ModuleDict order.
        self.enc = nn.ModuleDict()
        encoder_roles = []
        channels = in_channels
        aux_channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                channels = model_channels
                self.enc[f"{res}x{res}_conv"] = EDMConv2d(in_channels, channels, kernel=3, init=init)
                encoder_roles.append("conv")
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block_kwargs)
                encoder_roles.append("block")
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = EDMConv2d(
                        aux_channels, aux_channels, kernel=0, down=True, resample_filter=resample_filter
                    )
                    self.enc[f"{res}x{res}_aux_skip"] = EDMConv2d(aux_channels, channels, kernel=1, init=init)
                    encoder_roles += ["aux_down", "aux_skip"]
                elif encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = EDMConv2d(
                        aux_channels,
                        channels,
                        kernel=3,
                        down=True,
                        resample_filter=resample_filter,
                        fused_resample=True,
                        init=init,
                    )
                    encoder_roles.append("aux_residual")
                    aux_channels = channels
            for index in range(num_blocks):
                block_out = model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = UNetBlock(
                    channels, block_out, attention=res in attn_resolutions, **block_kwargs
                )
                encoder_roles.append("block")
                channels = block_out
        skip_channels = [
            module.out_channels for module, role in zip(self.enc.values(), encoder_roles) if role in ("conv", "block")
        ]

        # Decoder.
        self.dec = nn.ModuleDict()
        decoder_roles = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block_kwargs)
                decoder_roles += ["block", "block"]
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block_kwargs)
                decoder_roles.append("block")
            for index in range(num_blocks + 1):
                block_out = model_channels * mult
                self.dec[f"{res}x{res}_block{index}"] = UNetBlock(
                    channels + skip_channels.pop(),
                    block_out,
                    attention=index == num_blocks and res in attn_resolutions,
                    **block_kwargs,
                )
                decoder_roles.append("skip_block")
                channels = block_out
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = EDMConv2d(
                        out_channels, out_channels, kernel=0, up=True, resample_filter=resample_filter
                    )
                    decoder_roles.append("aux_up")
                self.dec[f"{res}x{res}_aux_norm"] = EDMGroupNorm(channels, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = EDMConv2d(channels, out_channels, kernel=3, init=init_zero)
                decoder_roles += ["aux_norm", "aux_conv"]
        self._encoder_roles = tuple(encoder_roles)
        self._decoder_roles = tuple(decoder_roles)

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
        cos_half, sin_half = emb.chunk(2, dim=1)
        emb = torch.cat([sin_half, cos_half], dim=1)
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))

        skips = []
        aux = x
        for role, module in zip(self._encoder_roles, self.enc.values()):
            if role == "block":
                x = run_block(self, module, x, emb)
                skips.append(x)
            elif role == "conv":
                x = module(x)
                skips.append(x)
            elif role == "aux_down":
                aux = module(aux)
            elif role == "aux_skip":
                x = skips[-1] = x + module(aux)
            else:  # aux_residual
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)

        aux = None
        head = None
        for role, module in zip(self._decoder_roles, self.dec.values()):
            if role == "skip_block":
                x = run_block(self, module, x, emb, skips.pop())
            elif role == "block":
                x = run_block(self, module, x, emb)
            elif role == "aux_up":
                aux = module(aux)
            elif role == "aux_norm":
                head = module(x)
            else:  # aux_conv
                head = module(F.silu(head))
                aux = head if aux is None else head + aux
        return aux

