# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The magnitude-preserving layers of EDM2 (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Sec. 2 and Appendix B): every operation keeps unit-magnitude activations unit-magnitude, weights are
normalised (and, in training, forced back to unit norm), and there are no biases or normalisation layers but a pixel
norm. Module and parameter names follow the official networks (`conv_res0`, `emb_linear`, `attn_qkv`, ...)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .edm_layers import ATTENTION_IMPLEMENTATIONS

NORMALIZE_EPS = 1e-4
"""ε of [`normalize`]."""

SILU_GAIN = 0.596
"""Standard deviation of silu(x) for x ~ N(0, 1): `mp_silu` divides by it (Eq. 81)."""


def normalize(x: torch.Tensor, dim: int | Sequence[int] | None = None, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """x scaled to unit RMS along `dim` (default: all dimensions but the first, i.e. per output channel of a weight):
    x / (ε + ‖x‖ / √n), with the norm taken in float32 over the n elements of `dim` (Eq. 47)."""
    dims = list(range(1, x.ndim)) if dim is None else dim
    norm = torch.linalg.vector_norm(x, dim=dims, keepdim=True, dtype=torch.float32)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """Magnitude-preserving SiLU: silu(x) / 0.596."""
    return F.silu(x) / SILU_GAIN


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving weighted sum: ((1 − t) a + t b) / √((1 − t)² + t²) (Eq. 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving concatenation of `a` and `b` along `dim`, weighting them (1 − t) : t (Eq. 103)."""
    channels_a, channels_b = a.shape[dim], b.shape[dim]
    scale = math.sqrt((channels_a + channels_b) / ((1 - t) ** 2 + t**2))
    weight_a = scale / math.sqrt(channels_a) * (1 - t)
    weight_b = scale / math.sqrt(channels_b) * t
    return torch.cat([weight_a * a, weight_b * b], dim=dim)


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features of a scalar per sample: √2 cos(2π (f x + φ)) with fixed random frequencies
    f ~ N(0, bandwidth²) and phases φ ~ U(0, 1), computed in float32. The buffers `freqs` and `phases` hold 2π f and
    2π φ.

    Args:
        num_channels (`int`): number of features.
        bandwidth (`float`, defaults to 1): standard deviation of the frequencies.
    """

    def __init__(self, num_channels: int, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, num_channels) of x (N,), in x's dtype."""
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """A magnitude-preserving convolution (`kernel` of two sizes) or fully connected layer (empty `kernel`) without
    bias: its weight is normalised to unit norm per output channel and scaled by gain / √fan_in at every call (Eq. 66).
    In training mode it first overwrites the stored weight with its normalised self (forced weight normalisation,
    Sec. 2.3), so the weights never grow.

    Args:
        in_channels (`int`), out_channels (`int`): channels.
        kernel (`Sequence[int]`): `[]` for a linear layer, `[k, k]` for a k×k convolution ("same" padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1) -> torch.Tensor:
        w = self.weight.to(torch.float32)
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))  # for a float32 weight, `w` is the stored tensor itself
        w = normalize(w)
        w = w * (gain / math.sqrt(w[0].numel()))
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


def resample(x: torch.Tensor, mode: str, taps: Sequence[int] = (1, 1)) -> torch.Tensor:
    """x down- or upsampled by 2 with the separable filter `taps` normalised to unit sum (box [1, 1]: 2×2 averaging,
    or nearest upsampling), as a depthwise (transposed) convolution; "keep" returns x."""
    if mode == "keep":
        return x
    filter_1d = torch.tensor(list(taps), dtype=torch.float32, device=x.device)
    kernel = (filter_1d.ger(filter_1d) / filter_1d.sum() ** 2).to(x.dtype)
    channels = x.shape[1]
    padding = (len(taps) - 1) // 2
    if mode == "down":
        return F.conv2d(x, kernel.tile([channels, 1, 1, 1]), groups=channels, stride=2, padding=padding)
    return F.conv_transpose2d(x, (kernel * 4).tile([channels, 1, 1, 1]), groups=channels, stride=2, padding=padding)


class EDM2Block(nn.Module):
    """One residual block of the EDM2 U-Net (Fig. 21): optional resampling, an encoder (`flavor="enc"`: 1×1 skip
    projection and pixel norm before the residual branch) or decoder (`"dec"`: projection of the skip after it)
    flavour, the residual branch conv → (embedding-modulated) mp_silu → dropout → conv, a magnitude-preserving sum,
    optional cosine self-attention, and clipping of the activations.

    Args:
        in_channels (`int`), out_channels (`int`): channels.
        emb_channels (`int`): width of the embedding.
        flavor (`str`): "enc" or "dec".
        resample_mode (`str`, defaults to "keep"): "keep", "down" or "up".
        resample_filter (`Sequence[int]`, defaults to [1, 1]): taps of the resampling filter.
        attention (`bool`, defaults to `False`): self-attention after the residual sum, with
            `out_channels // channels_per_head` heads (none when that is 0).
        cross_attention_dim (`int`, defaults to 0): width of the text tokens a block with attention also attends to
            (cosine cross-attention after the self-attention, magnitude-preserving in the same way; 0: none).
        channels_per_head (`int`, defaults to 64): channels of one attention head.
        dropout (`float`, defaults to 0): dropout in the residual branch (training).
        res_balance (`float`, defaults to 0.3), attn_balance (`float`, defaults to 0.3): t of the two `mp_sum`s.
        clip_act (`float`, defaults to 256): activations are clipped to ±clip_act (0: no clipping).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        flavor: str = "enc",
        resample_mode: str = "keep",
        resample_filter: Sequence[int] = (1, 1),
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float = 256,
        cross_attention_dim: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.flavor, self.resample_mode, self.resample_filter = flavor, resample_mode, list(resample_filter)
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.attention_implementation = "auto"  # a runtime setting (see EDM2UNet2DModel.set_attention_implementation)
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, [3, 3])
        self.emb_linear = MPConv(emb_channels, out_channels, [])
        self.conv_res1 = MPConv(out_channels, out_channels, [3, 3])
        self.conv_skip = MPConv(in_channels, out_channels, [1, 1]) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, [1, 1]) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, [1, 1]) if self.num_heads else None
        cross = bool(self.num_heads and cross_attention_dim)
        self.cross_q = MPConv(out_channels, out_channels, [1, 1]) if cross else None
        self.cross_kv = MPConv(cross_attention_dim, out_channels * 2, []) if cross else None
        self.cross_proj = MPConv(out_channels, out_channels, [1, 1]) if cross else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The block on x (N, C, H, W) with embedding `emb` (N, emb_channels); `context` (N, T, cross_attention_dim)
        are the text tokens of a cross-attending block, `context_mask` (N, T) marks the real (not padding) ones."""
        x = resample(x, self.resample_mode, self.resample_filter)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self.attn_proj(self._attention(self.attn_qkv(x))), t=self.attn_balance)
        if self.cross_q is not None:
            attended = self._cross_attention(self.cross_q(x), self.cross_kv(context.to(x.dtype)), context_mask)
            x = mp_sum(x, self.cross_proj(attended), t=self.attn_balance)
        if self.clip_act:
            x = x.clip(-self.clip_act, self.clip_act)
        return x

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """Cosine self-attention over the H·W positions: q, k, v pixel-normalised per head, softmax(qᵀk / √C_h)."""
        batch, _, height, width = qkv.shape
        head_channels = self.out_channels // self.num_heads
        q, k, v = normalize(qkv.reshape(batch, self.num_heads, head_channels, 3, height * width), dim=2).unbind(3)
        implementation = self.attention_implementation
        if implementation == "sdpa" or (implementation == "auto" and qkv.device.type == "cuda"):
            attended = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
            return attended.transpose(2, 3).reshape(batch, self.out_channels, height, width)
        weights = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(head_channels)).softmax(dim=3)
        attended = torch.einsum("nhqk,nhck->nhcq", weights, v)
        return attended.reshape(batch, self.out_channels, height, width)


    def _cross_attention(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Cosine cross-attention of the H·W positions (queries q, (N, C, H, W)) over the T tokens (keys and values
        kv, (N, T, 2C)): q, k, v normalised per head as in the self-attention; padding tokens (`mask` False) get no
        weight."""
        batch, _, height, width = q.shape
        head_channels = self.out_channels // self.num_heads
        q = normalize(q.reshape(batch, self.num_heads, head_channels, height * width), dim=2)
        k, v = normalize(kv.reshape(batch, -1, self.num_heads, head_channels, 2), dim=3).permute(4, 0, 2, 3, 1)
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask.bool(), -math.inf)
            bias = bias[:, None, None, :]
        implementation = self.attention_implementation
        if implementation == "sdpa" or (implementation == "auto" and q.device.type == "cuda"):
            attended = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3),
                                                      attn_mask=bias)
            return attended.transpose(2, 3).reshape(batch, self.out_channels, height, width)
        logits = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(head_channels))
        weights = (logits if bias is None else logits + bias).softmax(dim=3)
        return torch.einsum("nhqk,nhck->nhcq", weights, v).reshape(batch, self.out_channels, height, width)


def check_attention_implementation(implementation: str) -> None:
    """A `ValueError` for an attention implementation other than "auto", "official" or "sdpa"."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention implementation {implementation!r}; use one of"
                         f" {ATTENTION_IMPLEMENTATIONS}.")
