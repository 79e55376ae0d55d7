# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The U-Net of EDM2 (Karras et al. 2024, Appendix B, Fig. 21): magnitude-preserving throughout, with the uncertainty
head of its training loss (Sec. 2.4: u(σ), returned as `logvar`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .edm2_layers import EDM2Block, MPConv, MPFourier, check_attention_implementation, mp_cat, mp_silu, mp_sum
from .edm_layers import check_unet_architecture, check_unet_inputs


class EDM2UNet2DModel(ModelMixin, ConfigMixin):
    r"""
    The raw network F of EDM2 and its uncertainty head. Module names equal the official state_dict keys without the
    `unet.` prefix (`emb_fourier`, `emb_noise`, `emb_label`, `enc.{R}x{R}_conv`, `enc.{R}x{R}_down`,
    `enc.{R}x{R}_block{i}`, `dec.{R}x{R}_in0/in1/up/block{i}`, `out_conv`, `out_gain`), and the head's equal the
    official preconditioning's (`logvar_fourier`, `logvar_linear`), so official weights load with
    `load_state_dict(strict=True)`.

    Embedding: e = emb_noise(emb_fourier(c_noise)), with labels e = mp_sum(e, emb_label(labels·√L), label_balance);
    then mp_silu. The input gets a constant-one channel. Encoder level ℓ (resolution R = img_resolution / 2^ℓ): a 3×3
    conv at ℓ = 0, a downsampling block otherwise, then `num_blocks` blocks (attention at `attn_resolutions`). Decoder,
    from the lowest resolution up: `in0` (attention requested) and `in1` there, an upsampling block elsewhere, then
    `num_blocks + 1` blocks, each after an `mp_cat` with the matching encoder output. The output conv is scaled by the
    learned `out_gain` (0 at initialisation).

    Args:
        img_resolution (`int`): image (or latent) height and width.
        in_channels (`int`): channels of the image; the output has as many (`out_channels`, if given, must agree).
        label_dim (`int`, defaults to 0): length of the label vectors (0: unconditional): the number of classes, or the
            width of a pooled text embedding (unit norm, like a one-hot label).
        augment_dim (`int`, defaults to 0): must be 0 (EDM2 trains without augmentation conditioning).
        model_channels (`int`, defaults to 192): channels of the first level.
        channel_mult (`Sequence[int]`, defaults to (1, 2, 3, 4)): channel multipliers per level.
        channel_mult_noise (`int`, *optional*): noise-embedding width / model_channels (default: the first level's).
        channel_mult_emb (`int`, *optional*): embedding width / model_channels (default: the widest level's).
        num_blocks (`int`, defaults to 3): blocks per encoder level.
        attn_resolutions (`Sequence[int]`, defaults to (16, 8)): resolutions with self-attention.
        label_balance (`float`, defaults to 0.5), concat_balance (`float`, defaults to 0.5): t of the label `mp_sum`
            and of the skip `mp_cat`s.
        logvar_channels (`int`, defaults to 128): Fourier features of the uncertainty head.
        cross_attention_dim (`int`, defaults to 0): width of the text tokens the attention blocks also attend to (0:
            none); see [`EDM2Block`].
        channels_per_head, dropout, res_balance, attn_balance, clip_act, resample_filter: every block's (see
            [`EDM2Block`]).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int | None = None,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_noise: int | None = None,
        channel_mult_emb: int | None = None,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        logvar_channels: int = 128,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float = 256,
        resample_filter: Sequence[int] = (1, 1),
        cross_attention_dim: int = 0,
    ) -> None:
        super().__init__()
        if out_channels not in (None, in_channels):
            raise ValueError(f"An EDM2 network outputs its {in_channels} input channels, not {out_channels}.")
        if augment_dim:
            raise ValueError("EDM2 networks have no augmentation conditioning; use augment_dim=0 (no --augment_p).")
        check_unet_architecture(img_resolution, list(channel_mult), num_blocks, label_dim, augment_dim)
        levels = len(channel_mult)
        block_channels = [model_channels * multiplier for multiplier in channel_mult]
        noise_channels = model_channels * channel_mult_noise if channel_mult_noise is not None else block_channels[0]
        emb_channels = model_channels * channel_mult_emb if channel_mult_emb is not None else max(block_channels)
        self.label_dim, self.label_balance, self.concat_balance = label_dim, label_balance, concat_balance
        block = dict(emb_channels=emb_channels, channels_per_head=channels_per_head, dropout=dropout,
                     res_balance=res_balance, attn_balance=attn_balance, clip_act=clip_act,
                     resample_filter=resample_filter, cross_attention_dim=cross_attention_dim)

        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(noise_channels)
        self.emb_noise = MPConv(noise_channels, emb_channels, [])
        self.emb_label = MPConv(label_dim, emb_channels, []) if label_dim else None

        self.enc = nn.ModuleDict()
        channels = in_channels + 1  # the constant-one channel
        for level, width in enumerate(block_channels):
            resolution = img_resolution >> level
            if level == 0:
                self.enc[f"{resolution}x{resolution}_conv"] = MPConv(channels, width, [3, 3])
                channels = width
            else:
                self.enc[f"{resolution}x{resolution}_down"] = EDM2Block(channels, channels, flavor="enc",
                                                                        resample_mode="down", **block)
            for index in range(num_blocks):
                self.enc[f"{resolution}x{resolution}_block{index}"] = EDM2Block(
                    channels, width, flavor="enc", attention=resolution in attn_resolutions, **block)
                channels = width

        skips = [module.out_channels for module in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, width in reversed(list(enumerate(block_channels))):
            resolution = img_resolution >> level
            if level == levels - 1:
                self.dec[f"{resolution}x{resolution}_in0"] = EDM2Block(channels, channels, flavor="dec",
                                                                       attention=True, **block)
                self.dec[f"{resolution}x{resolution}_in1"] = EDM2Block(channels, channels, flavor="dec", **block)
            else:
                self.dec[f"{resolution}x{resolution}_up"] = EDM2Block(channels, channels, flavor="dec",
                                                                      resample_mode="up", **block)
            for index in range(num_blocks + 1):
                self.dec[f"{resolution}x{resolution}_block{index}"] = EDM2Block(
                    channels + skips.pop(), width, flavor="dec", attention=resolution in attn_resolutions, **block)
                channels = width
        self.out_conv = MPConv(channels, in_channels, [3, 3])

        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, [])
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """F(x; c_noise, labels): x (N, in_channels, R, R), `noise_labels` c_noise (N,), `class_labels` label vectors
        (N or 1, label_dim) of a conditional network, `encoder_hidden_states` (N, T, cross_attention_dim) the text
        tokens of a cross-attending one with `encoder_attention_mask` (N, T) marking the real tokens. EDM2 has no
        augmentation conditioning."""
        check_unet_inputs(type(self).__name__, x, noise_labels, class_labels, augment_labels,
                          in_channels=self.config.in_channels, img_resolution=self.config.img_resolution,
                          label_dim=self.config.label_dim, augment_dim=0)
        if self.config.cross_attention_dim and encoder_hidden_states is None:
            raise ValueError("This network attends to text tokens: pass encoder_hidden_states (N, T,"
                             f" {self.config.cross_attention_dim}).")
        context = (encoder_hidden_states, encoder_attention_mask)
        emb = self.emb_noise(self.emb_fourier(noise_labels))
        if self.emb_label is not None:
            emb = mp_sum(emb, self.emb_label(class_labels * math.sqrt(self.label_dim)), t=self.label_balance)
        emb = mp_silu(emb)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, module in self.enc.items():
            x = module(x) if name.endswith("_conv") else self._run(module, x, emb, *context)
            skips.append(x)
        for name, module in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = self._run(module, x, emb, *context)
        return self.out_conv(x, gain=self.out_gain)

    def logvar(self, noise_labels: torch.Tensor) -> torch.Tensor:
        """The uncertainty u(σ) of the loss (N,) at c_noise (N,): logvar_linear(logvar_fourier(c_noise))."""
        return self.logvar_linear(self.logvar_fourier(noise_labels)).flatten()

    def _run(self, block: EDM2Block, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
             context_mask: torch.Tensor | None) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, x, emb, context, context_mask)
        return block(x, emb, context, context_mask)

    def set_attention_implementation(self, implementation: str) -> None:
        """How the blocks' cosine attention computes: "official" (einsum and softmax, as the official network),
        "sdpa" (`scaled_dot_product_attention`, equal up to rounding) or "auto" (SDPA on CUDA, official elsewhere)."""
        check_attention_implementation(implementation)
        for module in self.modules():
            if isinstance(module, EDM2Block):
                module.attention_implementation = implementation

    @property
    def attention_implementation(self) -> str:
        """The blocks' attention implementation ("mixed" if they differ)."""
        found = {module.attention_implementation for module in self.modules() if isinstance(module, EDM2Block)}
        return found.pop() if len(found) == 1 else ("auto" if not found else "mixed")
