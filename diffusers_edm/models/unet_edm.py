# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""EDM's preconditioned denoiser D(x; σ) (Karras et al. 2022, Eq. 7) around a diffusers `UNet2DModel`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.models import UNet2DConditionModel, UNet2DModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..preconditioning import EDM_SIGMA_DATA, Preconditioning, make_preconditioning
from .dhariwal_unet import DhariwalUNet2DModel
from .edm2_unet import EDM2UNet2DModel
from .edm_layers import allow_block_recompiles
from .song_unet import SongUNet2DModel

NATIVE_BACKBONES = {"song_unet": SongUNet2DModel, "dhariwal_unet": DhariwalUNet2DModel, "edm2_unet": EDM2UNet2DModel}
BACKBONE_TYPES = ("unet_2d", *NATIVE_BACKBONES)
UNET_2D_ARGUMENTS = (
    "block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "mid_block_type",
    "time_embedding_dim", "freq_shift", "flip_sin_to_cos", "mid_block_scale_factor", "downsample_padding",
    "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim", "norm_num_groups",
    "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention", "label_dropout",
)
"""The constructor arguments that configure the `unet_2d` backbone only; a native backbone's config omits them (its
network arguments are in `backbone_config`), and configs saved with them still load."""
_COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CROSS_ATTENTION_BACKBONES = ("unet_2d", "edm2_unet")
"""The backbones that can attend to text tokens (`cross_attention_dim`); every backbone takes a pooled text embedding
through its label path."""
_CROSS_ATTENTION_BLOCKS = {"AttnDownBlock2D": "CrossAttnDownBlock2D", "AttnUpBlock2D": "CrossAttnUpBlock2D",
                           "UNetMidBlock2D": "UNetMidBlock2DCrossAttn"}
"""The `UNet2DModel` attention blocks and the `UNet2DConditionModel` blocks that replace them with cross-attention."""


@dataclass
class EDMPreconditionedUNet2DOutput(BaseOutput):
    """
    Output of [`EDMPreconditionedUNet2DModel`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The denoised estimate D(x; σ), in float32 (float64 for a float64 model).
        logvar (`torch.Tensor` of shape `(batch_size, 1, 1, 1)`, *optional*):
            The uncertainty u(σ) of EDM2's loss, with `return_logvar=True` (EDM2 backbones).
    """

    sample: torch.Tensor
    logvar: torch.Tensor | None = None


class ConditioningEmbedding(nn.Embedding):
    """Class embedding of the backbone that accepts integer labels, one-hot/soft label vectors and augment labels.

    The weight is an `nn.Embedding` table (so the backbone stays a stock `UNet2DModel` that loads elsewhere and takes
    integer labels); a label vector v is embedded as vᵀW, which equals the table lookup for one-hot v. Augmentation
    labels (EDM's non-leaky augmentation, 9 values with the paper's pipeline) go through a bias-free linear map, so
    all-zero augment labels, as used at sampling, contribute nothing.

    Its input is an integer tensor (B,) or a float tensor (B, num_class_labels + augment_dim) holding the label vector
    followed by the augment labels. In training mode, `label_dropout` zeroes the class part of a random fraction of
    the rows (the all-zero label vector is EDM's "no label"), as the official networks' label dropout does, so that
    one model learns the conditional and the unconditional denoiser for classifier-free guidance.
    """

    def __init__(self, num_class_labels: int, augment_dim: int, embedding_dim: int, label_dropout: float = 0.0) -> None:
        super().__init__(num_class_labels, embedding_dim)
        self.num_class_labels = num_class_labels
        self.label_dropout = label_dropout
        self.augment_proj = nn.Linear(augment_dim, embedding_dim, bias=False) if augment_dim else None
        if self.augment_proj is not None:
            nn.init.zeros_(self.augment_proj.weight)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if not labels.is_floating_point():
            return self._drop_labels(super().forward(labels))
        sizes = [self.num_class_labels, labels.shape[1] - self.num_class_labels]
        class_vectors, augment_labels = labels.split(sizes, 1)
        embedding = self._drop_labels(class_vectors.to(self.weight.dtype) @ self.weight)
        if self.augment_proj is not None:
            embedding = embedding + self.augment_proj(augment_labels.to(self.augment_proj.weight.dtype))
        return embedding

    def _drop_labels(self, class_embedding: torch.Tensor) -> torch.Tensor:
        """The class embedding with the rows of a `label_dropout` fraction of the batch zeroed (training mode only)."""
        if not (self.training and self.label_dropout):
            return class_embedding
        keep = torch.rand([class_embedding.shape[0], 1], device=class_embedding.device) >= self.label_dropout
        return class_embedding * keep.to(class_embedding.dtype)


def _cross_attention_unet_2d(
    common: dict, down_block_types: tuple[str, ...], up_block_types: tuple[str, ...], mid_block_type: str | None,
    attention_head_dim: int | None, cross_attention_dim: int, downsample_type: str, upsample_type: str,
    attn_norm_num_groups: int | None,
) -> UNet2DConditionModel:
    """The `unet_2d` backbone with cross-attention to text tokens: a `UNet2DConditionModel` whose attention blocks are
    the cross-attending versions of the `UNet2DModel` blocks named, each with `attention_head_dim` channels per head
    (`UNet2DConditionModel` counts heads, so they are given as its per-block `attention_head_dim`)."""
    if downsample_type != "conv" or upsample_type != "conv" or attn_norm_num_groups is not None:
        raise ValueError("A cross-attending unet_2d backbone (UNet2DConditionModel) resamples with convolutions and"
                         " normalises attention like its ResNets: leave downsample_type, upsample_type and"
                         " attn_norm_num_groups at their defaults.")
    if not any(block in _CROSS_ATTENTION_BLOCKS for block in (*down_block_types, *up_block_types, mid_block_type)):
        raise ValueError("cross_attention_dim needs attention blocks to attend with: name AttnDownBlock2D /"
                         " AttnUpBlock2D in down_block_types / up_block_types, or keep the UNetMidBlock2D.")
    head_channels = attention_head_dim or 8
    return UNet2DConditionModel(
        **common,
        down_block_types=tuple(_CROSS_ATTENTION_BLOCKS.get(block, block) for block in down_block_types),
        up_block_types=tuple(_CROSS_ATTENTION_BLOCKS.get(block, block) for block in up_block_types),
        mid_block_type=_CROSS_ATTENTION_BLOCKS.get(mid_block_type, mid_block_type),
        attention_head_dim=tuple(max(1, channels // head_channels) for channels in common["block_out_channels"]),
        cross_attention_dim=cross_attention_dim,
    )


def preconditioning_of(
    preconditioning: str = "edm", preconditioning_config: dict | None = None, sigma_data: float = EDM_SIGMA_DATA
) -> Preconditioning:
    """The preconditioning an [`EDMPreconditionedUNet2DModel`] with these config values uses: `preconditioning_config`'s
    parameters, with the top-level `sigma_data` for EDM's unless that config names its own."""
    precond_kwargs = dict(preconditioning_config or {})
    if preconditioning == "edm":
        precond_kwargs.setdefault("sigma_data", sigma_data)
    return make_preconditioning(preconditioning, **precond_kwargs)


class EDMPreconditionedUNet2DModel(ModelMixin, ConfigMixin):
    """
    EDM's denoiser D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)) (Eq. 7, Table 1). It returns the denoised
    image, so it pairs with [`EDMHeunScheduler`] in its default `prediction_type="sample"`.

    The raw network F (`model.backbone`) is by default a diffusers [`UNet2DModel`], configured with the argument names
    of `UNet2DModel` (`sample_size`, `in_channels`, `block_out_channels`, `down_block_types`, …, see its
    documentation) given directly to this class; it is a stock `UNet2DModel` that runs with diffusers'
    `EDMEulerScheduler` (whose `prediction_type="epsilon"` means EDM's F) and can be saved on its own. The paper's own
    networks are available too (`backbone_type="song_unet"` for DDPM++/NCSN++, `"dhariwal_unet"` for ADM), as are the
    VP, VE and iDDPM preconditionings of Table 1 that the paper's baselines use.

    Args:
        backbone_type (`str`, defaults to "unet_2d"): "unet_2d", "song_unet", "dhariwal_unet" or "edm2_unet" (EDM2's
            magnitude-preserving U-Net with its uncertainty head, see `return_logvar`).
        backbone_config (`dict`, *optional*): constructor arguments of a native backbone other than its resolution,
            channels and label/augment sizes (which come from `sample_size`, `in_channels`, `out_channels`,
            `num_class_labels` and `augment_dim`), e.g. `{"model_channels": 128, "channel_mult": [2, 2, 2]}`.
        preconditioning (`str`, defaults to "edm"): "edm", "vp", "ve" or "iddpm" (Table 1).
        preconditioning_config (`dict`, *optional*): parameters of a non-EDM preconditioning (VP: beta_d, beta_min,
            M, epsilon_t; VE: sigma_min, sigma_max; iDDPM: C_1, C_2, M). An iDDPM backbone has
            `out_channels = 2 * in_channels` and D uses the first half.
        sigma_data (`float`, defaults to 0.5): data standard deviation σ_data of the preconditioning.
        num_class_labels (`int`, defaults to 0): number of classes (0: unconditional). Labels may be integers or
            one-hot/soft vectors, as EDM uses; they are embedded and added to the noise embedding. A text-to-image
            model takes its pooled text embedding (unit norm, like a one-hot label) the same way, with
            `num_class_labels` its width.
        cross_attention_dim (`int`, defaults to 0): width of the text tokens (`encoder_hidden_states`) the attention
            blocks also attend to (0: none). The `unet_2d` backbone is then a diffusers `UNet2DConditionModel` (its
            attention blocks become the cross-attention ones, with `attention_head_dim` channels per head); the
            `edm2_unet` backbone gets magnitude-preserving cosine cross-attention.
        augment_dim (`int`, defaults to 0): length of the augment-label vector of non-leaky augmentation (9 for EDM's
            pipeline; 0: none). Mapped linearly (no bias) onto the noise embedding; absent labels mean zeros.
        label_dropout (`float`, defaults to 0): for the `UNet2DModel` backbone, the probability of training a sample
            without its class label (classifier-free guidance); the native backbones take it in `backbone_config`,
            as the official networks do.
        Other arguments: those of `UNet2DModel` (its sinusoidal time embedding receives c_noise = ¼ ln σ).
    """

    _supports_gradient_checkpointing = True
    # Regional compilation: `compile_repeated_blocks()` compiles every module of these classes (the residual blocks of
    # the native backbones; UNet2DModel's ResNet blocks otherwise).
    _repeated_blocks = ["UNetBlock", "EDM2Block", "ResnetBlock2D"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 256, 256),
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block: int = 2,
        mid_block_type: str | None = "UNetMidBlock2D",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        sigma_data: float = EDM_SIGMA_DATA,
        num_class_labels: int = 0,
        augment_dim: int = 0,
        label_dropout: float = 0.0,
        backbone_type: str = "unet_2d",
        backbone_config: dict | None = None,
        preconditioning: str = "edm",
        preconditioning_config: dict | None = None,
        cross_attention_dim: int = 0,
    ) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}.")
        if num_class_labels < 0 or augment_dim < 0:
            raise ValueError(f"num_class_labels and augment_dim must be >= 0, got {num_class_labels}, {augment_dim}.")
        if backbone_type not in BACKBONE_TYPES:
            raise ValueError(f"backbone_type={backbone_type!r} is not supported; use one of {BACKBONE_TYPES}.")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}.")
        if label_dropout and backbone_type != "unet_2d":
            raise ValueError(f"The {backbone_type} backbone takes label_dropout in backbone_config, as the official"
                             " networks do; leave the top-level label_dropout at 0.")
        if cross_attention_dim < 0 or (cross_attention_dim and backbone_type not in CROSS_ATTENTION_BACKBONES):
            raise ValueError(f"cross_attention_dim={cross_attention_dim}: text-token cross-attention needs a backbone"
                             f" of {CROSS_ATTENTION_BACKBONES} and a positive width; the {backbone_type} backbone takes"
                             " the pooled text embedding only (cross_attention_dim=0).")
        self.precond = preconditioning_of(preconditioning, preconditioning_config, sigma_data)
        if preconditioning == "iddpm" and out_channels != 2 * in_channels:
            raise ValueError(f"iDDPM networks output 2 x in_channels = {2 * in_channels} channels, got {out_channels}.")
        if backbone_type in NATIVE_BACKBONES:
            text_tokens = {"cross_attention_dim": cross_attention_dim} if cross_attention_dim else {}
            self.backbone = NATIVE_BACKBONES[backbone_type](
                img_resolution=sample_size, in_channels=in_channels, out_channels=out_channels,
                label_dim=num_class_labels, augment_dim=augment_dim, **text_tokens, **(backbone_config or {}),
            )
            self._keep_native_config()
            return
        if backbone_config:
            raise ValueError("backbone_config is for native backbones; configure a UNet2DModel with the flat"
                             " arguments.")
        common = dict(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            time_embedding_dim=time_embedding_dim, freq_shift=freq_shift, flip_sin_to_cos=flip_sin_to_cos,
            mid_block_scale_factor=mid_block_scale_factor, downsample_padding=downsample_padding, dropout=dropout,
            act_fn=act_fn, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift, num_class_embeds=num_class_labels or None,
        )
        if cross_attention_dim:
            self.backbone = _cross_attention_unet_2d(
                common, tuple(down_block_types), tuple(up_block_types), mid_block_type if add_attention else None,
                attention_head_dim, cross_attention_dim, downsample_type, upsample_type, attn_norm_num_groups)
        else:
            self.backbone = UNet2DModel(
                **common, down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
                mid_block_type=mid_block_type, time_embedding_type="positional", downsample_type=downsample_type,
                upsample_type=upsample_type, attention_head_dim=attention_head_dim,
                attn_norm_num_groups=attn_norm_num_groups, add_attention=add_attention,
            )
        if num_class_labels or augment_dim:
            embedding_dim = time_embedding_dim or block_out_channels[0] * 4
            self.backbone.class_embedding = ConditioningEmbedding(num_class_labels, augment_dim, embedding_dim,
                                                                  label_dropout)

    def _keep_native_config(self) -> None:
        """Drops the `unet_2d`-only arguments from the registered config of a native-backbone model, so that its saved
        `config.json` holds only what configures it."""
        kept = {key: value for key, value in self._internal_dict.items() if key not in UNET_2D_ARGUMENTS}
        if "_use_default_values" in kept:
            kept["_use_default_values"] = [k for k in kept["_use_default_values"] if k not in UNET_2D_ARGUMENTS]
        self._internal_dict = FrozenDict(kept)

    def forward(
        self,
        sample: torch.Tensor,
        sigma: float | torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
        return_dict: bool = True,
        return_logvar: bool = False,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> EDMPreconditionedUNet2DOutput | tuple:
        """
        The denoised estimate D(x; σ) (Eq. 7).

        Args:
            sample (`torch.Tensor`): noisy images x of shape (B, in_channels, H, W).
            sigma (`float` or `torch.Tensor`): noise level σ > 0: a float, a 0-d tensor, or one per sample ((B,) or
                (B, 1, 1, 1)).
            class_labels (`torch.Tensor`, *optional*): integer labels (B,) or label vectors (B, num_class_labels).
                A conditional model given `None` sees all-zero label vectors, as in EDM.
            augment_labels (`torch.Tensor`, *optional*): augment labels (B, augment_dim); `None` means zeros (no
                augmentation), which is how the model is sampled.
            return_dict (`bool`, defaults to `True`): return an [`EDMPreconditionedUNet2DOutput`] or a tuple.
            return_logvar (`bool`, defaults to `False`): also return the uncertainty u(σ) of EDM2's loss (B, 1, 1, 1),
                in the preconditioning's precision (EDM2 backbones only); the tuple is then (D, u).
            encoder_hidden_states (`torch.Tensor`, *optional*): the text tokens (B, T, cross_attention_dim) of a model
                with `cross_attention_dim` (required there).
            encoder_attention_mask (`torch.Tensor`, *optional*): (B, T), 1 for the real tokens and 0 for padding,
                which gets no attention (default: every token attended).

        The preconditioning is computed in float32 (float64 for a float64 model) whatever dtype the backbone runs in.
        """
        if return_logvar and not hasattr(self.backbone, "logvar"):
            raise ValueError(f"The {self.config.backbone_type} backbone has no uncertainty head (logvar); only"
                             " backbone_type='edm2_unet' has one.")
        batch_size = self._check_sample(sample)
        dtype = self._compute_dtype()
        precision = torch.float64 if dtype == torch.float64 else torch.float32
        x = sample.to(precision)
        sigma = self._sigma_per_sample(sigma, batch_size, x)
        c_skip, c_out, c_in, c_noise = self.precond.coefficients(sigma)
        model_input = (c_in * x).to(dtype)
        tokens = self._text_tokens(encoder_hidden_states, encoder_attention_mask, batch_size, model_input)
        raw_output = self._raw_output(model_input, c_noise.flatten(), class_labels, augment_labels, batch_size, tokens)
        denoised = c_skip * x + c_out * raw_output[:, : self.config.in_channels].to(precision)
        logvar = None
        if return_logvar:
            logvar = self.backbone.logvar(c_noise.flatten().to(dtype)).to(precision).reshape(-1, 1, 1, 1)
        if not return_dict:
            return (denoised,) if logvar is None else (denoised, logvar)
        return EDMPreconditionedUNet2DOutput(sample=denoised, logvar=logvar)

    def set_attention_implementation(self, implementation: str) -> None:
        """Select how the self-attention of a native backbone is computed (a runtime setting, not saved).

        Args:
            implementation (`str`): "official" — EDM's own form, bit-identical to the official networks; "sdpa" —
                `torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels on GPUs, equal to
                the official form up to float rounding); "auto" (the default) — SDPA on CUDA, official elsewhere.

        The `unet_2d` backbone's diffusers attention already runs through SDPA: it accepts "auto" and "sdpa" (no
        change) and rejects "official". diffusers' own `set_attention_backend` (attention-dispatch backends of
        diffusers' `Attention` modules) keeps its meaning and applies to that backbone only.
        """
        backbone = self.backbone
        if hasattr(backbone, "set_attention_implementation"):
            backbone.set_attention_implementation(implementation)
        elif implementation not in ("auto", "sdpa"):
            raise ValueError(
                f"The unet_2d backbone computes attention with diffusers' processors (SDPA); attention implementation "
                f"{implementation!r} is for the native backbones. Use 'auto' or 'sdpa', or diffusers' "
                "set_attention_backend / set_attn_processor."
            )

    def compile_repeated_blocks(self, *args, **kwargs) -> None:
        """Regional compilation: `torch.compile(*args, **kwargs)` on every residual block of the backbone
        (`UNetBlock` of the native backbones, `ResnetBlock2D` of UNet2DModel), the rest of the model staying eager.
        Compiles far faster than `torch.compile(model)`. The blocks of a U-Net differ in structure and shape, so
        dynamo's global `recompile_limit` is raised to the number of blocks first (it is only ever raised)."""
        allow_block_recompiles(self)
        super().compile_repeated_blocks(*args, **kwargs)

    @property
    def attention_implementation(self) -> str:
        """The attention implementation of the native backbone's blocks ("sdpa" for the unet_2d backbone)."""
        return getattr(self.backbone, "attention_implementation", "sdpa")

    def _compute_dtype(self) -> torch.dtype:
        """The dtype the backbone runs in: `self.dtype`, read cheaply. diffusers' `dtype` walks every submodule
        looking for layerwise-casting hooks (about 1 ms per call for a CIFAR-10 U-Net on the CPU); the first
        parameter's dtype is the same answer unless its layer carries a diffusers hook (layerwise casting stores the
        weights in another dtype than it computes in) or holds a storage-only dtype (float8), where the full lookup
        runs."""
        if torch.compiler.is_compiling():
            return self.dtype
        layer = next((module for module in self.backbone.modules() if module._parameters), None)
        if layer is None or hasattr(layer, "_diffusers_hook"):
            return self.dtype
        parameter = next(iter(layer._parameters.values()))
        if parameter is not None and parameter.dtype in _COMPUTE_DTYPES:
            return parameter.dtype
        return self.dtype

    @property
    def sigma_min(self) -> float:
        """Smallest noise level the preconditioning supports (the sampler clamps its schedule to it)."""
        return self.precond.sigma_min

    @property
    def sigma_max(self) -> float:
        """Largest noise level the preconditioning supports."""
        return self.precond.sigma_max

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Snaps noise levels to those the network knows (iDDPM's discrete levels; the identity otherwise)."""
        return self.precond.round_sigma(sigma)

    def _raw_output(
        self,
        model_input: torch.Tensor,
        c_noise: torch.Tensor,
        class_labels: torch.Tensor | None,
        augment_labels: torch.Tensor | None,
        batch_size: int,
        tokens: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """F(c_in x; c_noise) with the conditioning in the form the backbone takes."""
        if self.config.backbone_type == "unet_2d":
            labels = self._conditioning(class_labels, augment_labels, batch_size, model_input.device)
            return self.backbone(model_input, c_noise, class_labels=labels, **tokens).sample
        num_classes, augment_dim = self.config.num_class_labels, self.config.augment_dim
        self._check_conditioning_sizes(class_labels, augment_labels)
        label_vectors = None
        if num_classes:
            # EDM's conditional networks given no labels see one all-zero label row.
            label_vectors = (torch.zeros(1, num_classes, device=model_input.device) if class_labels is None
                             else self._label_vectors(class_labels, batch_size, model_input.device))
            label_vectors = label_vectors.to(c_noise.dtype)
        if augment_labels is not None:
            if augment_labels.shape != (batch_size, augment_dim):
                raise ValueError(
                    f"augment_labels must have shape ({batch_size}, {augment_dim}), got {tuple(augment_labels.shape)}."
                )
            augment_labels = augment_labels.to(model_input.device, c_noise.dtype)
        return self.backbone(model_input, c_noise, class_labels=label_vectors, augment_labels=augment_labels, **tokens)

    def _text_tokens(self, encoder_hidden_states: torch.Tensor | None, encoder_attention_mask: torch.Tensor | None,
                     batch_size: int, model_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone's text-token arguments, checked: none for a model without cross-attention."""
        width = self.config.get("cross_attention_dim", 0)
        if not width:
            if encoder_hidden_states is not None or encoder_attention_mask is not None:
                raise ValueError("encoder_hidden_states were given but the model has no cross-attention"
                                 " (cross_attention_dim=0); pass the pooled text embedding as class_labels only.")
            return {}
        if encoder_hidden_states is None:
            raise ValueError(f"The model attends to text tokens: pass encoder_hidden_states ({batch_size}, T,"
                             f" {width}).")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch_size or \
                encoder_hidden_states.shape[2] != width:
            raise ValueError(f"encoder_hidden_states must have shape ({batch_size}, T, {width}), got"
                             f" {tuple(encoder_hidden_states.shape)}.")
        tokens = {"encoder_hidden_states": encoder_hidden_states.to(model_input.device, model_input.dtype)}
        if encoder_attention_mask is not None:
            if encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
                raise ValueError(f"encoder_attention_mask must have shape {tuple(encoder_hidden_states.shape[:2])}"
                                 f" (one entry per token), got {tuple(encoder_attention_mask.shape)}.")
            tokens["encoder_attention_mask"] = encoder_attention_mask.to(model_input.device)
        return tokens

    def _check_sample(self, sample: torch.Tensor) -> int:
        config = self.config
        if sample.ndim != 4 or sample.shape[1] != config.in_channels:
            raise ValueError(
                f"sample must have shape (batch, {config.in_channels}, height, width), got {tuple(sample.shape)}."
            )
        if config.backbone_type != "unet_2d":
            return sample.shape[0]  # native backbones check their resolution themselves
        num_levels = len(config.block_out_channels) - 1
        if sample.shape[2] % 2**num_levels or sample.shape[3] % 2**num_levels:
            raise ValueError(
                f"height and width must be divisible by {2**num_levels} ({num_levels} downsampling levels), got"
                f" {tuple(sample.shape[2:])}."
            )
        return sample.shape[0]

    @staticmethod
    def _sigma_per_sample(sigma: float | torch.Tensor, batch_size: int, x: torch.Tensor) -> torch.Tensor:
        """σ as a (B, 1, 1, 1) tensor in the preconditioning dtype; σ ≤ 0 is an error."""
        sigma = torch.as_tensor(sigma, device=x.device).to(x.dtype)
        if sigma.numel() not in (1, batch_size) or (sigma.ndim > 0 and sigma.shape[0] != sigma.numel()):
            raise ValueError(
                f"sigma must be a scalar or hold one noise level per sample ({batch_size}), got shape"
                f" {tuple(sigma.shape)}."
            )
        if not torch.compiler.is_compiling():
            if sigma.device.type == "cpu":
                if not bool((sigma > 0).all()):
                    raise ValueError(f"sigma must be > 0 (a noise standard deviation), got {sigma.flatten().tolist()}.")
            else:
                torch._assert_async((sigma > 0).all(), "sigma must be > 0 (a noise standard deviation)")
        return sigma.reshape(-1, 1, 1, 1).expand(batch_size, 1, 1, 1)

    def _conditioning(
        self,
        class_labels: torch.Tensor | None,
        augment_labels: torch.Tensor | None,
        batch_size: int,
        device: torch.device,
    ) -> torch.Tensor | None:
        """The input of the backbone's class embedding: label vectors followed by augment labels (or None)."""
        num_classes, augment_dim = self.config.num_class_labels, self.config.augment_dim
        self._check_conditioning_sizes(class_labels, augment_labels)
        if not (num_classes or augment_dim):
            return None
        if num_classes and augment_dim == 0 and class_labels is not None and not class_labels.is_floating_point():
            return self._check_integer_labels(class_labels, batch_size)
        parts = []
        if num_classes:
            parts.append(self._label_vectors(class_labels, batch_size, device))
        if augment_dim:
            if augment_labels is None:
                augment_labels = torch.zeros(batch_size, augment_dim, device=device)
            elif augment_labels.shape != (batch_size, augment_dim):
                raise ValueError(
                    f"augment_labels must have shape ({batch_size}, {augment_dim}), got {tuple(augment_labels.shape)}."
                )
            parts.append(augment_labels.to(device, torch.float32))
        return torch.cat(parts, dim=1)

    def _check_conditioning_sizes(self, class_labels: torch.Tensor | None, augment_labels: torch.Tensor | None) -> None:
        if class_labels is not None and not self.config.num_class_labels:
            raise ValueError("class_labels were given but the model is unconditional (num_class_labels=0).")
        if augment_labels is not None and not self.config.augment_dim:
            raise ValueError("augment_labels were given but the model has augment_dim=0.")

    def _check_integer_labels(self, class_labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        num_classes = self.config.num_class_labels
        if class_labels.shape != (batch_size,):
            raise ValueError(
                f"integer class_labels must have shape ({batch_size},), got {tuple(class_labels.shape)}; label vectors"
                f" must be floating point with shape ({batch_size}, {num_classes})."
            )
        # Not while compiling, where the data-dependent branch would break the graph (EDMPipeline checks its labels
        # before sampling).
        checked_here = class_labels.device.type == "cpu" and not torch.compiler.is_compiling()
        if checked_here and not bool(((class_labels >= 0) & (class_labels < num_classes)).all()):
            raise ValueError(f"class_labels must lie in [0, {num_classes}), got {class_labels.tolist()}.")
        return class_labels

    def _label_vectors(self, class_labels: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        """One-hot/soft label vectors (B, num_class_labels); zeros when None, as EDM's preconditioning does."""
        num_classes = self.config.num_class_labels
        if class_labels is None:
            return torch.zeros(batch_size, num_classes, device=device)
        if not class_labels.is_floating_point():
            labels = self._check_integer_labels(class_labels, batch_size)
            return nn.functional.one_hot(labels.to(device), num_classes).to(torch.float32)
        if class_labels.shape != (batch_size, num_classes):
            raise ValueError(
                f"class label vectors must have shape ({batch_size}, {num_classes}), got {tuple(class_labels.shape)}."
            )
        return class_labels.to(device, torch.float32)
