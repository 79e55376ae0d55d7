# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Text-to-image generation with an EDM denoiser conditioned on a `transformers` text encoder: EDMPipeline's sampler
and guidance, with prompts instead of class labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import PreTrainedModel

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from .pipeline_edm import EDMPipeline
from .text_encoding import PromptEmbeddings, encode_prompts, normalize_pooled, text_width


class EDMTextToImagePipeline(EDMPipeline):
    r"""
    Text-to-image generation with an EDM denoiser whose conditioning is a text encoder's output: the pooled embedding
    (unit length) enters the unet's label path, and a unet with `cross_attention_dim` also attends to the token states
    (padding masked). Sampling, schedulers, guidance interval, autoguidance and the latent `vae` are those of
    [`EDMPipeline`]; classifier-free guidance contrasts the prompt with the negative prompt, by default the empty
    prompt, which is the null condition the training's caption dropout teaches (`train_edm.py --caption_dropout`).

    Args:
        unet ([`EDMPreconditionedUNet2DModel`]): the denoiser; `num_class_labels` is the text encoder's width, as is
            `cross_attention_dim` when it attends to tokens.
        scheduler ([`SchedulerMixin`]): the sampler (see [`EDMPipeline`]).
        text_encoder ([`~transformers.PreTrainedModel`], *optional*): e.g. a `CLIPTextModel`; frozen. Without it (and
            the tokenizer), calls pass `prompt_embeds` and `pooled_prompt_embeds`.
        tokenizer (*optional*): the text encoder's tokenizer.
        guide_unet ([`EDMPreconditionedUNet2DModel`], *optional*): a guide for autoguidance, given the same text.
        vae ([`AutoencoderKL`], *optional*): the decoder of a latent-space model.
        guidance_scale (`float`, defaults to 1.0), guidance_interval (*optional*), num_inference_steps (*optional*):
            the defaults of a call that gives none.
    """

    model_cpu_offload_seq = "text_encoder->unet->guide_unet->vae"
    _optional_components = ["guide_unet", "vae", "text_encoder", "tokenizer"]

    def __init__(
        self,
        unet: EDMPreconditionedUNet2DModel,
        scheduler: SchedulerMixin,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: Any = None,
        guide_unet: EDMPreconditionedUNet2DModel | None = None,
        vae: AutoencoderKL | None = None,
        guidance_scale: float = 1.0,
        guidance_interval: list[float] | None = None,
        num_inference_steps: int | None = None,
    ) -> None:
        DiffusionPipeline.__init__(self)
        if not unet.config.num_class_labels:
            raise ValueError("The unet takes no conditioning (num_class_labels=0): a text-to-image unet takes the"
                             " pooled text embedding as its label vector; use EDMPipeline for this model.")
        if text_encoder is not None:
            check_text_encoder(unet, text_encoder)
        self._register_sampler_parts(unet, scheduler, guide_unet, vae, guidance_scale, guidance_interval,
                                     num_inference_steps)
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
        self.labels = {}

    @property
    def guidable(self) -> bool:
        """Text models can always be guided: by the negative (empty) prompt, or a `guide_unet`."""
        return True

    @property
    def cross_attention(self) -> bool:
        """Whether the unet attends to the text tokens."""
        return bool(self.unet.config.get("cross_attention_dim", 0))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "text_encoder" and value is not None and "unet" in self.config:
            check_text_encoder(self.unet, value)
        super().__setattr__(name, value)

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = False,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
    ) -> tuple[PromptEmbeddings, PromptEmbeddings | None]:
        """The conditioning of the prompts (or of the given embeddings) and, for classifier-free guidance, of the
        negative prompts (default: the empty prompt), each repeated `num_images_per_prompt` times. Pooled embeddings
        given directly are normalised as the encoder's are."""
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            positive = encode_prompts(self.text_encoder, self.tokenizer, prompts, device)
        else:
            positive = _given_embeddings(prompt_embeds, pooled_prompt_embeds, prompt_attention_mask, device)
        negative = None
        if do_classifier_free_guidance:
            if negative_prompt_embeds is not None:
                negative = _given_embeddings(negative_prompt_embeds, negative_pooled_prompt_embeds,
                                             negative_prompt_attention_mask, device)
            else:
                negatives = negative_prompt if negative_prompt is not None else ""
                negatives = [negatives] * len(positive) if isinstance(negatives, str) else list(negatives)
                negative = encode_prompts(self.text_encoder, self.tokenizer, negatives, device)
            if len(negative) != len(positive):
                raise ValueError(f"Got {len(negative)} negative prompts for {len(positive)} prompts; pass one per"
                                 " prompt, or one string for all.")
            if negative.tokens.shape[1] != positive.tokens.shape[1]:
                raise ValueError(f"The negative prompt embeddings have {negative.tokens.shape[1]} tokens, the prompt's"
                                 f" {positive.tokens.shape[1]}; pad both to the same length.")
            negative = negative.repeat(num_images_per_prompt)
        return positive.repeat(num_images_per_prompt), negative

    def check_prompt_inputs(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        guided: bool,
    ) -> int:
        """Checks the text arguments (a `ValueError` naming them); returns the number of prompts."""
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass either prompt or prompt_embeds (with pooled_prompt_embeds), not both.")
        if prompt is None and prompt_embeds is None:
            raise ValueError("Pass a prompt (or prompt_embeds and pooled_prompt_embeds from encode_prompt).")
        if prompt is not None and not (isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and prompt
                                                                   and all(isinstance(p, str) for p in prompt))):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass either negative_prompt or negative_prompt_embeds, not both.")
        for name, value in (("prompt_embeds", prompt_embeds), ("pooled_prompt_embeds", pooled_prompt_embeds),
                            ("negative_prompt_embeds", negative_prompt_embeds)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor (from encode_prompt), got {type(value).__name__}.")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds need their pooled_prompt_embeds (both come from encode_prompt).")
        needs_encoder = prompt is not None or (guided and negative_prompt_embeds is None)
        if needs_encoder and (self.text_encoder is None or self.tokenizer is None):
            what = "a prompt" if prompt is not None else "the negative (empty) prompt of classifier-free guidance"
            raise ValueError(f"Encoding {what} needs the pipeline's text_encoder and tokenizer, which it lacks; load"
                             " the pipeline with them (pipe.text_encoder = ..., pipe.tokenizer = ...) or pass"
                             " prompt_embeds / negative_prompt_embeds from encode_prompt.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}.")
        if prompt is not None:
            return 1 if isinstance(prompt, str) else len(prompt)
        return prompt_embeds.shape[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        seeds: list[int] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        sigmas: list[float] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images from prompts.

        Args:
            prompt (`str` or `list[str]`, *optional*): the prompt(s); or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): what classifier-free guidance steers away from
                (default: the empty prompt, the model's null condition). Ignored without guidance.
            num_images_per_prompt (`int`, defaults to 1): images per prompt (images of one prompt are consecutive).
            num_inference_steps (`int`, *optional*), guidance_interval (*optional*), generator (*optional*), seeds
                (*optional*), latents (*optional*), output_type (`str`), return_dict (`bool`),
                callback_on_step_end (*optional*), callback_on_step_end_tensor_inputs, sigmas (*optional*): as in
                [`EDMPipeline.__call__`] (`seeds`: one per image).
            guidance_scale (`float`, *optional*): w of D_neg + w (D_prompt − D_neg) (classifier-free guidance, one
                batched forward), or autoguidance with a `guide_unet`. Default: the pipeline's (1: no guidance).
            prompt_embeds (`torch.Tensor`, *optional*): token states (B, T, C), with `pooled_prompt_embeds` (B, D)
                and `prompt_attention_mask` (B, T) (default: every token real), e.g. from [`encode_prompt`].
            negative_prompt_embeds, negative_pooled_prompt_embeds, negative_prompt_attention_mask (*optional*): the
                same for the negative prompt.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images.
        """
        family = self._check_components()
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        num_prompts = self.check_prompt_inputs(prompt, negative_prompt, num_images_per_prompt, prompt_embeds,
                                               pooled_prompt_embeds, negative_prompt_embeds,
                                               guided=scale != 1 and self.guide_unet is None)
        batch_size = num_prompts * num_images_per_prompt
        if seeds is not None and len(seeds) != batch_size:
            raise ValueError(f"Got {len(seeds)} seeds for {batch_size} images ({num_prompts} prompts x"
                             f" {num_images_per_prompt}); pass one seed per image.")
        batch_size, guidance_scale, interval = self.check_inputs(batch_size, seeds, generator, latents, output_type,
                                                                 callback_on_step_end_tensor_inputs, sigmas,
                                                                 guidance_scale, guidance_interval)
        device = self._execution_device
        if seeds is not None:
            generator = [torch.Generator(device).manual_seed(int(seed) % 2**32) for seed in seeds]
        classifier_free = interval is not None and self.guide_unet is None
        positive, negative = self.encode_prompt(
            prompt, device, num_images_per_prompt, classifier_free, negative_prompt, prompt_embeds,
            pooled_prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_pooled_prompt_embeds,
            negative_prompt_attention_mask)
        self._check_embeddings(positive)

        def conditioning() -> tuple[dict[str, Any], dict[str, Any] | None]:
            return (positive.unet_kwargs(self.cross_attention),
                    None if negative is None else negative.unet_kwargs(self.cross_attention))

        return self._generate(family, batch_size, conditioning, num_inference_steps, generator, latents, output_type,
                              return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, sigmas,
                              guidance_scale, interval)

    def _untrained_unconditional_branch(self) -> bool:
        return False  # caption dropout (the empty prompt) is not recorded in the unet's config

    def _check_embeddings(self, embeddings: PromptEmbeddings) -> None:
        """A `ValueError` when the conditioning does not fit the unet (given embeddings of another encoder)."""
        width = self.unet.config.num_class_labels
        if embeddings.pooled.shape[1] != width:
            raise ValueError(f"The pooled prompt embeddings have width {embeddings.pooled.shape[1]} but the unet takes"
                             f" {width}; use the text encoder the model was trained with.")
        tokens = self.unet.config.get("cross_attention_dim", 0)
        if tokens and embeddings.tokens.shape[2] != tokens:
            raise ValueError(f"The prompt embeddings have width {embeddings.tokens.shape[2]} but the unet attends to"
                             f" {tokens}-wide tokens; use the text encoder the model was trained with.")


def check_text_encoder(unet: EDMPreconditionedUNet2DModel, text_encoder: PreTrainedModel) -> None:
    """A `ValueError` unless the text encoder's width is the unet's pooled-embedding width (and token width)."""
    if not hasattr(text_encoder, "config") or not hasattr(text_encoder.config, "hidden_size"):
        raise TypeError(f"text_encoder must be a transformers text model (e.g. CLIPTextModel), got"
                        f" {type(text_encoder).__name__}.")
    width = text_width(text_encoder)
    tokens = unet.config.get("cross_attention_dim", 0)
    if width != unet.config.num_class_labels or (tokens and tokens != width):
        raise ValueError(f"The text encoder's width ({width}) does not fit the unet, which takes"
                         f" {unet.config.num_class_labels}-wide pooled embeddings"
                         + (f" and {tokens}-wide tokens" if tokens else "") + "; pass the text encoder the model was"
                         " trained with.")


def _given_embeddings(tokens: torch.Tensor, pooled: torch.Tensor | None, mask: torch.Tensor | None,
                      device: torch.device) -> PromptEmbeddings:
    """Embeddings passed to a call, checked and on the device (pooled ones normalised; no mask: all tokens real)."""
    if tokens.ndim != 3 or pooled is None or pooled.ndim != 2 or pooled.shape[0] != tokens.shape[0]:
        raise ValueError(f"prompt embeddings must be token states (B, T, C) with pooled embeddings (B, D), got"
                         f" {tuple(tokens.shape)} and {None if pooled is None else tuple(pooled.shape)}.")
    if mask is None:
        mask = torch.ones(tokens.shape[:2], dtype=torch.long)
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"The attention mask must have shape {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}.")
    if not bool(mask.bool().any(dim=1).all()):
        raise ValueError("Every prompt's attention mask must mark at least one real token.")
    return PromptEmbeddings(tokens.to(device, torch.float32), mask.to(device), normalize_pooled(pooled.to(device)))
