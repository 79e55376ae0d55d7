# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Building blocks of EDM's raw networks F (Karras et al. 2022, Appendix F.2 and Table 7).

The layers keep the parameter layouts of `torch.nn` (Linear weight (out, in), Conv2d weight (out, in, k, k)), so
the official checkpoints load 1:1, and they cast their float32 weights to the dtype of the activations on the fly.
That lets a float32 model run float16/bfloat16 activations (EDM's `use_fp16`) while the embedding path stays in the
dtype of the noise labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

InitMode = Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
AttentionImplementation = Literal["auto", "official", "sdpa"]
ATTENTION_IMPLEMENTATIONS = ("auto", "official", "sdpa")
_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor.to(dtype)` without the call when the dtype already matches (the common float32 case)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def weight_init(shape: Sequence[int], mode: InitMode, fan_in: int, fan_out: int) -> torch.Tensor:
    """Random initial values of a weight or bias tensor.

    xavier_uniform: √(6/(fan_in+fan_out))·U(−1, 1); xavier_normal: √(2/(fan_in+fan_out))·N(0, 1);
    kaiming_uniform: √(3/fan_in)·U(−1, 1); kaiming_normal: √(1/fan_in)·N(0, 1). For convolutions the fans include
    the k·k kernel taps.
    """
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(
        f"Unknown init mode {mode!r}; use one of 'xavier_uniform', 'xavier_normal', 'kaiming_uniform', "
        "'kaiming_normal'."
    )


@dataclass(frozen=True)
class WeightInit:
    """How a layer initialises its parameters: `weight_init(mode)` scaled by `weight_scale` (weight) and `bias_scale`
    (bias). A scale of 0 gives exact zeros."""

    mode: InitMode = "kaiming_normal"
    weight_scale: float = 1.0
    bias_scale: float = 0.0


class EDMLinear(nn.Module):
    """Fully connected layer y = x Wᵀ + b with the weight cast to the input dtype.

    Args:
        in_features (`int`): input width.
        out_features (`int`): output width.
        bias (`bool`, defaults to `True`): whether the layer has a bias.
        init (`WeightInit`): initialisation of weight and bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: WeightInit = WeightInit()):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init.mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(weight_init([out_features, in_features], **fans) * init.weight_scale)
        self.bias = nn.Parameter(weight_init([out_features], **fans) * init.bias_scale) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Matrix product and bias addition are separate ops (not F.linear) so that the rounding, and hence the float32
        # output on CPU, is bit-identical to the official implementation.
        dtype = x.dtype
        x = x @ _cast(self.weight, dtype).t()
        bias = self.bias
        return x if bias is None else x + _cast(bias, dtype)


class EDMConv2d(nn.Module):
    """2-D convolution with optional 2× FIR up- or downsampling.

    The resampling filter f (1-D taps) becomes the separable 2-D filter f2 = f fᵀ / (Σf)², stored as the persistent
    buffer `resample_filter` of shape (1, 1, L, L) only for resampling layers. `[1, 1]` gives nearest-neighbour
    upsampling and 2×2 average pooling; `[1, 3, 3, 1]` is the binomial filter of NCSN++.

    Non-fused order: resample (upsampling is a depthwise transposed convolution with 4·f2, downsampling a depthwise
    convolution with f2, both with stride 2 and padding (L−1)//2), then the k×k convolution with padding k//2, then
    the bias. Fused downsampling convolves first (padding k//2 + (L−1)//2) and filters afterwards (stride 2, no
    padding); fused upsampling filters first (padding max((L−1)//2 − k//2, 0)) and convolves afterwards (padding
    max(k//2 − (L−1)//2, 0)).

    Args:
        in_channels (`int`): input channels.
        out_channels (`int`): output channels (must equal `in_channels` when `kernel` is 0).
        kernel (`int`): kernel size k; 0 means no weight and no bias, i.e. a pure resampler.
        bias (`bool`, defaults to `True`): whether the layer has a bias (ignored when `kernel` is 0).
        up (`bool`): upsample by 2.
        down (`bool`): downsample by 2.
        resample_filter (`Sequence[int]`, defaults to `(1, 1)`): 1-D FIR taps of the resampling filter.
        fused_resample (`bool`): use the fused order described above.
        init (`WeightInit`): initialisation of weight and bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[int] = (1, 1),
        fused_resample: bool = False,
        init: WeightInit = WeightInit(),
    ):
        super().__init__()
        if up and down:
            raise ValueError("EDMConv2d cannot upsample and downsample at once; set at most one of `up` and `down`.")
        if not kernel and in_channels != out_channels:
            raise ValueError(
                f"A pure resampler (kernel=0) keeps the channel count; got in_channels={in_channels}, "
                f"out_channels={out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init.mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = (
            nn.Parameter(weight_init([out_channels, in_channels, kernel, kernel], **fans) * init.weight_scale)
            if kernel
            else None
        )
        self.bias = nn.Parameter(weight_init([out_channels], **fans) * init.bias_scale) if kernel and bias else None
        taps = torch.as_tensor(list(resample_filter), dtype=torch.float32)
        filter_2d = torch.outer(taps, taps).unsqueeze(0).unsqueeze(1) / taps.sum().square()
        self.register_buffer("resample_filter", filter_2d if up or down else None)
        self.weight_pad = kernel // 2
        self.filter_pad = (len(resample_filter) - 1) // 2
        # With the [1, 1] filter the resampling is exactly nearest-neighbour repetition / 2x2 averaging. Upsampling
        # then is a broadcast copy without autograd (exact, and faster than both a transposed convolution and
        # F.interpolate), F.interpolate with autograd, and
        # downsampling the official depthwise convolution with the 0.25 taps (faster than F.avg_pool2d on the CPU and
        # bit-identical to it).
        self.box_filter = list(resample_filter) == [1, 1]
        # The forward path, resolved once: "up"/"down" (resample, then convolve), "fused_up"/"fused_down", "plain".
        if fused_resample and kernel and (up or down):
            self._mode = "fused_up" if up else "fused_down"
        else:
            self._mode = "up" if up else "down" if down else "plain"
        self._up_padding = max(self.filter_pad - self.weight_pad, 0) if self._mode == "fused_up" else self.filter_pad
        self._conv_padding = {
            "fused_down": self.weight_pad + self.filter_pad,
            "fused_up": max(self.weight_pad - self.filter_pad, 0),
        }.get(self._mode, self.weight_pad)

    def _filter_kernel(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        """The depthwise kernel gain·f2 for x's channels, in x's dtype (gain is 4 for upsampling, a power of two, so
        the product is exact)."""
        kernel = self.resample_filter
        if gain != 1:
            kernel = kernel * gain
        return _cast(kernel, x.dtype).expand(x.shape[1], -1, -1, -1)

    def _upsample(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        if self.box_filter and padding == 0:
            if x.requires_grad and torch.is_grad_enabled():
                # The broadcast copy's backward sums the four gradients in another order than the official
                # transposed convolution's; F.interpolate's backward matches it bit for bit.
                return F.interpolate(x, scale_factor=2, mode="nearest")
            batch, channels, height, width = x.shape
            repeated = x[:, :, :, None, :, None].expand(batch, channels, height, 2, width, 2)
            return repeated.reshape(batch, channels, 2 * height, 2 * width)
        return F.conv_transpose2d(x, self._filter_kernel(x, 4), groups=x.shape[1], stride=2, padding=padding)

    def _downsample(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        return F.conv2d(x, self._filter_kernel(x, 1), groups=x.shape[1], stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self._mode
        weight = self.weight
        if weight is not None:
            weight = _cast(weight, x.dtype)
        if mode == "fused_down":
            x = self._downsample(F.conv2d(x, weight, padding=self._conv_padding), padding=0)
        else:
            if mode == "up" or mode == "fused_up":
                x = self._upsample(x, padding=self._up_padding)
            elif mode == "down":
                x = self._downsample(x, padding=self.filter_pad)
            if weight is not None:
                x = F.conv2d(x, weight, padding=self._conv_padding)
        # The bias is added separately (as the official implementation does) to keep float32 outputs bit-identical.
        bias = self.bias
        if bias is not None:
            x = x + _cast(bias, x.dtype).reshape(1, -1, 1, 1)
        return x


class EDMGroupNorm(nn.Module):
    """Group normalisation with min(num_groups, C // min_channels_per_group) groups and an affine (weight, bias).

    Args:
        num_channels (`int`): channels C.
        num_groups (`int`, defaults to 32): maximum number of groups.
        min_channels_per_group (`int`, defaults to 4): fewest channels a group may hold.
        eps (`float`, defaults to 1e-5): variance epsilon.
    """

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1 or num_channels % self.num_groups:
            raise ValueError(
                f"EDMGroupNorm needs at least {min_channels_per_group} channels and a channel count divisible by its "
                f"{self.num_groups} groups; got num_channels={num_channels}."
            )
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return F.group_norm(x, self.num_groups, _cast(self.weight, dtype), _cast(self.bias, dtype), self.eps)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding [cos(x·ω), sin(x·ω)] (cos half first) with ω_k = (1/max_positions)^(k / (C/2 − e)),
    k = 0..C/2−1, where e = 1 with `endpoint=True` (DDPM++) and 0 otherwise (ADM).

    The frequencies are computed in the dtype of the input, so a float64 input gets float64 frequencies.

    Args:
        num_channels (`int`): output width C (even).
        max_positions (`int`, defaults to 10000): inverse of the lowest frequency.
        endpoint (`bool`): whether the last frequency is exactly 1/max_positions.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        if num_channels % 2 or num_channels < 2 + 2 * endpoint:
            raise ValueError(f"PositionalEmbedding needs an even width >= {2 + 2 * endpoint}, got {num_channels}.")
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed x of shape (N,) into (N, num_channels)."""
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=x.dtype, device=x.device) / (half - int(self.endpoint))
        freqs = (1 / self.max_positions) ** exponents
        phases = torch.outer(x, freqs)
        return torch.cat([phases.cos(), phases.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2π·x·f), sin(2π·x·f)] with f ~ N(0, scale²) (NCSN++).

    The frequencies are the persistent buffer `freqs` (num_channels // 2 values); they are random, so a pretrained
    model must load them from its checkpoint.

    Args:
        num_channels (`int`): output width (even).
        scale (`float`, defaults to 16): standard deviation of the frequencies.
    """

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        if num_channels % 2 or num_channels < 2:
            raise ValueError(f"FourierEmbedding needs an even width >= 2, got {num_channels}.")
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def _apply(self, fn, recurse=True):
        # The frequencies (|f| up to ~50) multiply c_noise before the cos/sin, so rounding them to float16/bfloat16
        # would shift the phases by up to radians. Like the official use_fp16 networks, which keep every parameter in
        # float32, they stay float32 when the model is cast to a reduced precision (moves to a device still apply).
        freqs = self.freqs
        module = super()._apply(fn, recurse)
        if self.freqs is not None and self.freqs.dtype in _REDUCED_PRECISION and freqs.dtype not in _REDUCED_PRECISION:
            self.freqs = freqs.to(self.freqs.device)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed x of shape (N,) into (N, num_channels)."""
        phases = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([phases.cos(), phases.sin()], dim=1)


class UNetBlock(nn.Module):
    """Residual block of EDM's U-Nets with optional resampling and self-attention.

    h = conv0(silu(norm0(x))); the embedding enters through `affine`: either h = silu(shift + norm1(h)·(scale + 1))
    with (scale, shift) = affine(emb) (adaptive scale, ADM) or h = silu(norm1(h + affine(emb))) (DDPM++/NCSN++);
    h = conv1(dropout(h)); x = (h + skip(x)) · skip_scale, where `skip` exists iff the channels change or the block
    resamples (a 1×1 convolution when `resample_proj` or the channels change, otherwise a weightless resampler).
    With attention heads: qkv = qkv(norm2(x)) with q, k, v interleaved per channel (q = rows 0::3, k = 1::3,
    v = 2::3), heads are contiguous channel groups of size C_h, weights = softmax(qᵀk / √C_h) over the keys computed
    in float32 (float64 for float64 inputs), and x = (proj(attention) + x) · skip_scale.

    Args:
        in_channels (`int`): input channels.
        out_channels (`int`): output channels.
        emb_channels (`int`): width of the embedding vector.
        up (`bool`): upsample by 2 (in conv0 and skip).
        down (`bool`): downsample by 2 (in conv0 and skip).
        attention (`bool`): add self-attention after the residual path.
        num_heads (`int`, *optional*): number of heads; `None` means out_channels // channels_per_head, which may be 0
            (then no attention modules are built).
        channels_per_head (`int`, defaults to 64): channels per head when `num_heads` is `None`.
        dropout (`float`): dropout probability before conv1 (training only).
        skip_scale (`float`, defaults to 1): factor applied after each residual sum.
        eps (`float`, defaults to 1e-5): epsilon of the group norms.
        resample_filter (`Sequence[int]`, defaults to `(1, 1)`): FIR taps for up/downsampling.
        resample_proj (`bool`): give resampling blocks a 1×1 convolution on the skip path even if the channels match.
        adaptive_scale (`bool`, defaults to `True`): scale-and-shift conditioning instead of an additive one.
        init (`WeightInit`): initialisation of conv0, affine and skip.
        init_zero (`WeightInit`): initialisation of conv1 and proj.
        init_attn (`WeightInit`, *optional*): initialisation of qkv (defaults to `init`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[int] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
        init: WeightInit = WeightInit(),
        init_zero: WeightInit = WeightInit(weight_scale=0.0),
        init_attn: WeightInit | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        if self.num_heads and out_channels % self.num_heads:
            raise ValueError(f"out_channels={out_channels} is not divisible by num_heads={self.num_heads}.")
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = EDMGroupNorm(in_channels, eps=eps)
        self.conv0 = EDMConv2d(
            in_channels, out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter, init=init
        )
        self.affine = EDMLinear(emb_channels, out_channels * (2 if adaptive_scale else 1), init=init)
        self.norm1 = EDMGroupNorm(out_channels, eps=eps)
        self.conv1 = EDMConv2d(out_channels, out_channels, kernel=3, init=init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = EDMConv2d(
                in_channels, out_channels, kernel=kernel, up=up, down=down, resample_filter=resample_filter, init=init
            )
        # How `_attention` computes (see `AttentionImplementationMixin.set_attention_implementation`); a runtime
        # setting, not part of any config or state_dict.
        self.attention_implementation: AttentionImplementation = "auto"
        if self.num_heads:
            self.norm2 = EDMGroupNorm(out_channels, eps=eps)
            self.qkv = EDMConv2d(out_channels, out_channels * 3, kernel=1, init=init_attn or init)
            self.proj = EDMConv2d(out_channels, out_channels, kernel=1, init=init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to x (B, in_channels, H, W), or to [x, skip] concatenated along the channels when the
        decoder passes an encoder `skip`, with the embedding emb (B or 1, emb_channels)."""
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        residual = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = _cast(self.affine(emb), x.dtype)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (residual if self.skip is None else self.skip(residual))) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attention(self.qkv(self.norm2(x)))) + x) * self.skip_scale
        return x

    def _attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over the H·W positions of an interleaved qkv tensor (B, 3C, H, W)."""
        implementation = self.attention_implementation
        if implementation == "sdpa" or (implementation == "auto" and qkv.device.type == "cuda"):
            return self._sdpa_attention(qkv)
        batch, _, height, width = qkv.shape
        channels = self.out_channels
        head_channels = channels // self.num_heads
        q, k, v = qkv.reshape(batch * self.num_heads, head_channels, 3, height * width).unbind(2)
        softmax_dtype = torch.promote_types(qkv.dtype, torch.float32)  # at least float32, float64 stays float64
        logits = torch.bmm(q.transpose(1, 2).to(softmax_dtype), (k / math.sqrt(head_channels)).to(softmax_dtype))
        weights = logits.softmax(dim=2).to(qkv.dtype)  # (batch·heads, queries, keys)
        attended = torch.bmm(v, weights.transpose(1, 2))  # (batch·heads, head_channels, queries)
        return attended.reshape(batch, channels, height, width)

    def _sdpa_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """The same attention through `F.scaled_dot_product_attention` (same interleaved layout, heads and 1/√C_h
        scale). SDPA's kernels accumulate the logits and the softmax in float32 for float16/bfloat16 inputs (flash /
        memory-efficient / CPU flash kernels) or run in the input dtype (float32, float64), so the official float32
        softmax is kept in substance; the results agree with the official form to rounding, not bit for bit."""
        batch, _, height, width = qkv.shape
        heads = self.num_heads
        head_channels = self.out_channels // heads
        # (B, heads, C_h, 3, HW) -> (3, B, heads, HW, C_h): one copy gives the contiguous (…, L, E) layout SDPA wants.
        q, k, v = qkv.reshape(batch, heads, head_channels, 3, height * width).permute(3, 0, 1, 4, 2).contiguous()
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C_h)
        return attended.transpose(2, 3).reshape(batch, self.out_channels, height, width)


def allow_block_recompiles(model: nn.Module) -> int:
    """Raise `torch._dynamo.config.recompile_limit` to the number of `model._repeated_blocks` modules (+1) if it is
    lower, and return that number.

    Regional compilation compiles every repeated block through one code object (the block class's `forward`). A
    transformer's blocks are alike, but a U-Net's differ in structure (attention or not, up/down-sampling, skip
    projection, encoder-skip input) and shape, and each variant is one more compiled entry of that code object;
    DDPM++ at CIFAR-10 needs about 15, more than dynamo's default limit of 8, beyond which it would fall back to
    eager (or fail with `fullgraph=True`). The limit is global and only raised, never lowered.
    """
    names = set(getattr(model, "_repeated_blocks", None) or ())
    count = sum(type(module).__name__ in names for module in model.modules())
    config = torch._dynamo.config
    if count + 1 > config.recompile_limit:
        config.recompile_limit = count + 1
    return count


class AttentionImplementationMixin:
    """`set_attention_implementation` for models made of [`UNetBlock`]s (a runtime setting, not saved in the config).

    diffusers' `ModelMixin.set_attention_backend` selects among diffusers' attention-dispatch backends for its own
    `Attention` modules ("native", "flash", …); EDM's blocks have their own attention, hence the separate name.
    """

    def set_attention_implementation(self, implementation: AttentionImplementation) -> None:
        """Select how the self-attention of every UNetBlock is computed.

        Args:
            implementation (`str`): "official" — EDM's own form (bmm, logits and softmax in float32/float64),
                bit-identical to the official networks; "sdpa" — `torch.nn.functional.scaled_dot_product_attention`
                (flash / memory-efficient kernels on GPUs; equal to the official form up to rounding, about 1e-6
                relative in float32); "auto" (the default) — SDPA on CUDA tensors, the official form elsewhere.
        """
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"Unknown attention implementation {implementation!r}; use one of {ATTENTION_IMPLEMENTATIONS}."
            )
        for module in self.modules():
            if isinstance(module, UNetBlock):
                module.attention_implementation = implementation

    def compile_repeated_blocks(self, *args, **kwargs) -> None:
        """Regional compilation: `torch.compile(*args, **kwargs)` on every [`UNetBlock`] (diffusers' method), with
        dynamo's recompile limit raised to the number of blocks (see `allow_block_recompiles`), since a U-Net's
        blocks come in many structural variants."""
        allow_block_recompiles(self)
        super().compile_repeated_blocks(*args, **kwargs)

    @property
    def attention_implementation(self) -> str:
        """The attention implementation of the blocks ("auto", "official" or "sdpa"; "mixed" if they differ)."""
        found = {module.attention_implementation for module in self.modules() if isinstance(module, UNetBlock)}
        return found.pop() if len(found) == 1 else ("auto" if not found else "mixed")


def run_block(
    model: nn.Module, block: UNetBlock, x: torch.Tensor, emb: torch.Tensor, skip: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply `block` to (x, emb, skip), through `model._gradient_checkpointing_func` when the model has gradient
    checkpointing enabled, is training and autograd records (so evaluation and `no_grad` never recompute)."""
    if getattr(model, "gradient_checkpointing", False) and block.training and torch.is_grad_enabled():
        return model._gradient_checkpointing_func(block, x, emb, skip)
    return block(x, emb, skip)


def _check_rows(
    model_name: str, argument: str, value: torch.Tensor, batch: int, width: int, hint: str = ""
) -> None:
    """Check that `value` is a floating-point (batch, width) or (1, width) tensor."""
    if value.ndim != 2 or value.shape[1] != width or value.shape[0] not in (1, batch):
        raise ValueError(
            f"{model_name} expects {argument} of shape ({batch}, {width}) or (1, {width}), got {tuple(value.shape)}."
        )
    if not value.is_floating_point():
        raise ValueError(f"{model_name} expects floating-point {argument}, got {value.dtype}.{hint}")


def check_unet_inputs(
    model_name: str,
    x: torch.Tensor,
    noise_labels: torch.Tensor,
    class_labels: torch.Tensor | None,
    augment_labels: torch.Tensor | None,
    *,
    in_channels: int,
    img_resolution: int,
    label_dim: int,
    augment_dim: int,
) -> None:
    """Raise a ValueError when the inputs of an EDM U-Net have the wrong shapes or non-float dtypes (metadata checks
    only, no data access, so they cost nothing on accelerators and do not break `torch.compile`).

    Per-sample inputs may hold one row per sample or a single row that is broadcast over the batch.
    """
    expected = (in_channels, img_resolution, img_resolution)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{model_name} expects x of shape (batch, {in_channels}, {img_resolution}, {img_resolution}) "
            f"(in_channels, img_resolution of its config), got {tuple(x.shape)}."
        )
    batch = x.shape[0]
    if noise_labels.ndim != 1 or noise_labels.shape[0] not in (1, batch) or not noise_labels.is_floating_point():
        raise ValueError(
            f"{model_name} expects floating-point noise_labels (the flattened c_noise) of shape ({batch},) or (1,), "
            f"got {tuple(noise_labels.shape)} {noise_labels.dtype}."
        )
    if label_dim:
        if class_labels is None:
            raise ValueError(
                f"{model_name} is class-conditional (label_dim={label_dim}); pass class_labels of shape "
                f"({batch}, {label_dim}), e.g. one-hot rows, or an all-zero (1, {label_dim}) row for no class."
            )
        hint = " Convert class indices with torch.nn.functional.one_hot(indices, label_dim).float()."
        _check_rows(model_name, "class_labels", class_labels, batch, label_dim, hint)
    elif class_labels is not None:
        raise ValueError(f"{model_name} is unconditional (label_dim=0); pass class_labels=None.")
    if augment_labels is not None:
        if not augment_dim:
            raise ValueError(
                f"{model_name} has no augmentation conditioning (augment_dim=0); pass augment_labels=None or build "
                "the model with augment_dim matching the augmentation pipeline."
            )
        _check_rows(model_name, "augment_labels", augment_labels, batch, augment_dim)


def check_unet_architecture(
    img_resolution: int, channel_mult: list[int], num_blocks: int, label_dim: int, augment_dim: int
) -> None:
    """Raise a ValueError for U-Net configurations that cannot be built."""
    if not channel_mult:
        raise ValueError("channel_mult must list at least one level.")
    levels = len(channel_mult) - 1
    if img_resolution < 1 or img_resolution % 2**levels:
        raise ValueError(
            f"img_resolution={img_resolution} must be divisible by 2^{levels} for {len(channel_mult)} levels."
        )
    if num_blocks < 0 or label_dim < 0 or augment_dim < 0:
        raise ValueError(
            f"num_blocks, label_dim and augment_dim must be >= 0, got {num_blocks}, {label_dim}, {augment_dim}."
        )
