# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Image generation with an EDM denoiser (Karras et al. 2022): EDM's sampler or any EDM-family scheduler, with
classifier-free guidance, autoguidance and a guidance interval."""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Union

import numpy as np
import torch
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import EDMDPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor, unwrap_module

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..schedulers.sigma_schedule import REFERENCE_SAMPLERS, check_num_inference_steps
from .latents import decode_latents, latent_scale_and_bias
from .postprocessing import OUTPUT_TYPES, postprocess_edm_images, postprocess_vae_pixels
from .remote_code import resolve_loader_class_name, write_loader
from .scheduler_families import (
    SIGMA_RANGE_TOLERANCE,
    PlannedEvaluation,
    SchedulerFamily,
    plan_evaluations,
    scheduler_family,
)

DENOISER_INTERFACE = ("sigma_min", "sigma_max", "round_sigma")
"""What the pipeline uses of its denoisers besides `forward` and `config`: the σ range and `round_sigma` of their
preconditioning (see [`EDMPreconditionedUNet2DModel`])."""

DEFAULT_NUM_INFERENCE_STEPS = 18
"""Sampler steps N of a call that gives none, for a pipeline saved without `num_inference_steps` (the official
default: 35 evaluations with EDM's Heun sampler)."""

MAX_GUIDANCE_SCALE = 100.0
"""Largest guidance weight accepted: far beyond any useful one (the papers use w ≤ 10), and small enough that the
guided D = D_guide + w (D − D_guide) cannot overflow float32."""


class _Guidance(NamedTuple):
    """The guidance of a run: D = D_guide + w (D − D_guide)."""

    scale: float  # w
    guide_unet: EDMPreconditionedUNet2DModel | None  # autoguidance; None: classifier-free guidance
    conditions: dict[str, torch.Tensor] | None  # classifier-free guidance: the unet's conditioning arguments for the
    # conditional rows followed by as many unconditional ones (all-zero labels, or the negative prompt's embeddings)


class EDMPipeline(DiffusionPipeline):
    r"""
    Unconditional or class-conditional image generation with an EDM denoiser (Karras et al. 2022), with optional
    guidance (classifier-free guidance, autoguidance, a guidance interval).

    Args:
        unet ([`EDMPreconditionedUNet2DModel`]): the denoiser D(x; σ).
        scheduler ([`SchedulerMixin`]): the sampler; [`EDMHeunScheduler`] (EDM's sampler, by default in
            `prediction_type="sample"` mode) or any scheduler of `SUPPORTED_SCHEDULERS`.
        guide_unet ([`EDMPreconditionedUNet2DModel`], *optional*): a second denoiser for autoguidance (Karras et al.
            2024), typically a smaller or less trained version of `unet` with the same image shape and classes. It is
            saved and loaded with the pipeline; `pipe.guide_unet = ...` sets it later.
        vae ([`AutoencoderKL`], *optional*): for a latent-space model (EDM2's ImageNet-512): the unet denoises latents
            and the VAE decodes them to images, exactly as EDM2's generator (see `diffusers_edm.pipelines.latents`:
            the VAE sees pixels in [0, 1], and its config's `latents_mean`, `latents_std` and `scaling_factor` hold
            the latent scaling).
        id2label (`dict[int, str]`, *optional*): class names of a conditional unet, by class index (several names may
            be separated by commas, as in diffusers' DiT pipeline); `class_labels` then also takes names.
        guidance_scale (`float`, defaults to 1.0): the guidance weight w of a call that gives none (1: no guidance).
        guidance_interval (`tuple[float, float]`, *optional*): the guidance interval of a call that gives none.
        num_inference_steps (`int`, *optional*): the sampler steps N of a call that gives none (default 18).

    Schedulers. `pipe.scheduler = X.from_config(pipe.scheduler.config)` swaps in any of these; the pipeline evaluates
    D at the noise level σ the scheduler holds for each evaluation (`scheduler.sigmas[i]`, read before sampling) and
    hands the scheduler the output its `prediction_type` asks for:

    - [`EDMHeunScheduler`], [`EDMAblationScheduler`]: EDM's samplers, run on the official random stream, with their
      noise range clamped to the network's and σ snapped by its `round_sigma` (iDDPM networks). "sample": D;
      "epsilon": the raw network output F = (D − c_skip x) / c_out of Eq. 7 with the scheduler's σ_data;
      "v_prediction": −F.
    - diffusers' `EDMEulerScheduler` ("epsilon", "v_prediction" as above; "sample" by handing it D as its
      `pred_original_sample`) and `EDMDPMSolverMultistepScheduler` ("epsilon", "v_prediction").
    - diffusers' σ-space schedulers `EulerDiscreteScheduler`, `HeunDiscreteScheduler` and
      `DPMSolverMultistepScheduler` (whose sample is x / √(σ² + 1)): "epsilon": ε = (x − D) / σ; "v_prediction":
      v = (x / (σ² + 1) − D) √(σ² + 1) / σ; "sample": D, with x the noisy image y + σ n. Their noise levels come from
      their beta schedule (e.g. 0.01 … 157 for the default linear betas) unless `use_karras_sigmas=True`, with which
      they take `sigma_min` and `sigma_max` from the config (EDM's 0.002 and 80 when built from an EDM scheduler's
      config) and space them by EDM's ρ = 7 schedule. Flow-matching sigmas are not supported.

    The schedulers other than EDM's own start from `latents * scheduler.init_noise_sigma` as in diffusers (e.g.
    √(σ_max² + 1) for `EDMEulerScheduler`), keep a float32 state and are not clamped: σ outside the range the network
    supports is a `ValueError`. σ is not snapped to an iDDPM network's discrete levels.

    Guidance (`guidance_scale` w ≠ 1): D = D_guide + w (D − D_guide). With a `guide_unet` this is autoguidance
    (D_guide is the guide's, given the same class labels); otherwise, for a class-conditional unet, classifier-free
    guidance (D_guide is the unet given all-zero label vectors, EDM's "no label", evaluated in one batch with the
    conditional branch). `guidance_interval=(σ_lo, σ_hi)` limits guidance to σ_lo < σ ≤ σ_hi (Kynkäänniemi et al.
    2024); elsewhere the guide is not evaluated.

    Saved pipelines record the component classes by module path in `model_index.json`
    (`diffusers_edm.models.unet_edm` and `diffusers_edm.schedulers.scheduling_edm_heun`); these paths are a stable
    on-disk format. `EDMPipeline.from_pretrained(path)` loads them; `DiffusionPipeline.from_pretrained(path,
    trust_remote_code=True)` works too, through the small loader file `pipeline_diffusers_edm.py` that
    `save_pretrained` writes (it only imports this package).
    """

    model_cpu_offload_seq = "unet->guide_unet->vae"
    _optional_components = ["guide_unet", "vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: EDMPreconditionedUNet2DModel,
        scheduler: SchedulerMixin,
        guide_unet: EDMPreconditionedUNet2DModel | None = None,
        vae: AutoencoderKL | None = None,
        id2label: Mapping[Union[int, str], str] | None = None,  # Union: diffusers type-checks loaded values with it
        guidance_scale: float = 1.0,
        guidance_interval: Sequence[float] | None = None,
        num_inference_steps: int | None = None,
    ) -> None:
        super().__init__()
        self._register_sampler_parts(unet, scheduler, guide_unet, vae, guidance_scale, guidance_interval,
                                     num_inference_steps)
        id2label = None if id2label is None else {str(int(key)): str(name) for key, name in id2label.items()}
        self.register_to_config(id2label=id2label)
        self.labels = _label_ids(id2label)

    def _register_sampler_parts(
        self,
        unet: EDMPreconditionedUNet2DModel,
        scheduler: SchedulerMixin,
        guide_unet: EDMPreconditionedUNet2DModel | None,
        vae: AutoencoderKL | None,
        guidance_scale: float,
        guidance_interval: Sequence[float] | None,
        num_inference_steps: int | None,
    ) -> None:
        """Checks and registers the components and sampling defaults every EDM pipeline has."""
        _check_denoiser(unet, "unet")
        if guide_unet is not None:
            _check_guide(unet, guide_unet)
        if vae is not None:
            _check_vae(unet, vae)
        self.register_modules(unet=unet, scheduler=scheduler, guide_unet=guide_unet, vae=vae)
        _check_guidance_scale(guidance_scale)
        guidance_interval = None if guidance_interval is None else list(_check_interval(guidance_interval))
        if num_inference_steps is not None:
            num_inference_steps = check_num_inference_steps(num_inference_steps)
        self.register_to_config(guidance_scale=float(guidance_scale), guidance_interval=guidance_interval,
                                num_inference_steps=num_inference_steps)
        self._interrupt = False
        self._num_timesteps = None
        self._cuda_graph_steps = False  # the denoisers replay CUDA graphs (set by `enable_fast_sampling`)
        self._fast_sampling = None

    @property
    def guidable(self) -> bool:
        """Whether guidance can help: the pipeline holds a `guide_unet` (autoguidance), or its unet is
        class-conditional and was trained with label dropout (classifier-free guidance)."""
        if self.guide_unet is not None:
            return True
        return bool(self.unet.config.num_class_labels) and _trained_label_dropout(self.unet.config) > 0

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side: 2^(VAE levels − 1) (8 for `stabilityai/sd-vae-ft-mse`), 1 without a
        `vae`."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    def enable_vae_slicing(self) -> None:
        """Decode the images one at a time (less memory for large batches; the same images)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode each image in overlapping tiles (for images larger than memory allows at once; tiles are blended,
        so the pixels differ slightly from a whole decode)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """The class indices of class names (see `id2label`), e.g. `pipe.get_label_ids(["cat", "dog"])`; a `ValueError`
        naming the known names for an unknown one."""
        names = [label] if isinstance(label, str) else list(label)
        if not self.labels:
            raise ValueError(f"{names[0]!r} is not a class name of this pipeline: it has no class names (id2label);"
                             " pass class indices.")
        for name in names:
            if name not in self.labels:
                known = ", ".join(list(self.labels)[:20]) + (", ..." if len(self.labels) > 20 else "")
                raise ValueError(f"{name!r} is not a class name of this pipeline; known names: {known}.")
        return [self.labels[name] for name in names]

    def enable_fast_sampling(
        self,
        dtype: str | None = None,
        channels_last: bool = False,
        compile: str | None = None,
        cuda_graphs: bool = False,
        compile_backend: str | Callable = "inductor",
        fullgraph: bool = False,
        attention: str | None = None,
    ) -> Any:
        """Applies the fast sampling paths to this pipeline's denoisers in place: backbone `dtype` ("fp32", "tf32",
        "bf16", "fp16"; preconditioning and sampler state keep their precision), `channels_last` weights,
        `torch.compile` (`compile`: "default", "reduce-overhead", "max-autotune" or "regional", static shapes) and
        `cuda_graphs`, and the native backbones' `attention` ("official" or "sdpa"). Call it after moving the pipeline
        to its device. Returns the [`~diffusers_edm.pipelines.fast_sampling.FastSampling`] record (its `warmup`
        compiles and times the first call). See [`~diffusers_edm.pipelines.fast_sampling.accelerate_pipeline`], which
        this calls, for what changes bits."""
        from .fast_sampling import accelerate_pipeline

        return accelerate_pipeline(self, dtype=dtype, channels_last=channels_last, compile=compile,
                                   cuda_graphs=cuda_graphs, compile_backend=compile_backend, fullgraph=fullgraph,
                                   attention=attention)

    def __setattr__(self, name: str, value: Any) -> None:
        """As [`DiffusionPipeline.__setattr__`]; an optional component that was `None` and is set now (e.g.
        `pipe.guide_unet = EDMPreconditionedUNet2DModel.from_pretrained(...)`; a `TypeError` if it is not an EDM
        denoiser) is also recorded in the config, which diffusers leaves empty, so that `save_pretrained` saves it."""
        if name == "guide_unet" and value is not None:
            _check_denoiser(value, "guide_unet")  # whether it fits the unet is checked when guidance uses it
        if name == "vae" and value is not None:
            _check_vae(self.unet, value)
        if name in self._optional_components and value is not None and self.config.get(name, (None,))[0] is None:
            self.register_modules(**{name: value})
            return
        super().__setattr__(name, value)

    @property
    def interrupt(self) -> bool:
        """Whether the running call stops before its next model evaluation; set it (or `_interrupt`, as diffusers'
        pipelines do) from `callback_on_step_end`. The call then returns the current sample. Reset by each call."""
        return self._interrupt

    @interrupt.setter
    def interrupt(self, value: bool) -> None:
        self._interrupt = value

    @property
    def num_timesteps(self) -> int | None:
        """Number of model evaluations (`len(scheduler.timesteps)`) of the last call; `None` before the first."""
        return self._num_timesteps

    def check_inputs(
        self,
        batch_size: int,
        seeds: Sequence[int] | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
        sigmas: list[float] | None,
        guidance_scale: float | None,
        guidance_interval: Sequence[float] | None,
    ) -> tuple[int, float, tuple[float, float] | None]:
        """Checks the arguments of a call before any work (a `ValueError` naming the argument, a `TypeError` for a
        guide of the wrong type); returns the batch size (`len(seeds)` when seeds are given), the guidance weight
        (the pipeline's when `None`) and the guidance interval of a guided call (`None` when unguided)."""
        if not _is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if seeds is not None:
            _check_seeds(seeds)
            if generator is not None:
                raise ValueError("Pass either seeds or generator, not both.")
            if batch_size not in (1, len(seeds)):
                raise ValueError(f"batch_size={batch_size} disagrees with the {len(seeds)} seeds; omit batch_size.")
            batch_size = len(seeds)
        batch_size = int(batch_size)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not supported; use one of {OUTPUT_TYPES}.")
        if set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs):
            raise ValueError(f"callback_on_step_end_tensor_inputs may only contain {self._callback_tensor_inputs}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for batch_size={batch_size}; pass one per image.")
        if sigmas is not None and not scheduler_family(self.scheduler).edm_sampler:
            raise ValueError(
                f"sigmas (custom noise levels) need EDMHeunScheduler or EDMAblationScheduler; the"
                f" {type(self.scheduler).__name__} sets its own noise levels from its config."
            )
        _check_latents(latents, self._sample_shape(batch_size))
        if self.vae is not None and output_type != "latent":
            _check_vae(self.unet, self.vae, self._execution_device)
        if guidance_scale is None:
            guidance_scale = self.config.guidance_scale
        if guidance_scale == 1 and guidance_interval is not None:
            warnings.warn(f"guidance_interval={tuple(guidance_interval)} has no effect without guidance"
                          " (guidance_scale=1); pass a guidance_scale other than 1.", UserWarning, stacklevel=3)
        if guidance_interval is None:
            guidance_interval = self.config.guidance_interval
        return batch_size, guidance_scale, self._check_guidance(guidance_scale, guidance_interval)

    def prepare_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """The initial sample: `latents` (or N(0, I) noise drawn with `generator`) times the scheduler's
        `init_noise_sigma`, in the sampler's `dtype`."""
        if latents is None:
            latents = randn_tensor(self._sample_shape(batch_size), generator=generator, device=device,
                                   dtype=torch.float32)
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    def prepare_class_labels(
        self,
        class_labels: int | str | Sequence[int | str] | torch.Tensor | None,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """The class labels of a conditional unet (`None` for an unconditional one): the given ones, checked (class
        indices (B,) in [0, num_classes), class names, or finite label vectors (B, num_classes)), else drawn uniformly
        with `generator`. The draw happens whenever a generator is given, so that an image's random stream does not
        depend on its labels (as in EDM's generate.py)."""
        given = self._check_class_labels(class_labels, batch_size)
        num_classes = self.unet.config.num_class_labels
        if not num_classes:
            return None
        drawn = None
        if given is None or generator is not None:
            if isinstance(generator, list):
                drawn = torch.stack([_randint(num_classes, (), g) for g in generator]).to(device)
            else:
                drawn = _randint(num_classes, (batch_size,), generator).to(device)
        return drawn if given is None else given.to(device)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        sigmas: list[float] | None = None,
        seeds: list[int] | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images.

        Args:
            batch_size (`int`, defaults to 1): number of images.
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*): classes of a conditional model: one
                class for all images or one per image, as indices or names (see `id2label`), or label vectors
                (batch_size, num_classes), e.g. one-hot rows (integer rows are converted to float32). `None` draws
                them uniformly with `generator` (after the initial noise, per image when `generator` is a list).
            num_inference_steps (`int`, *optional*): sampler steps N; EDM's Heun sampler evaluates the model 2N − 1
                times. Default: the pipeline's `num_inference_steps` (saved e.g. by the sampler tuner), else 18 (35
                evaluations, the paper's CIFAR-10 setting).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random source; a list gives one
                generator per image, making each image independent of the batch it is in.
            latents (`torch.Tensor`, *optional*): unscaled N(0, I) initial noise (batch_size, C, H, W), floating point
                and finite; the pipeline multiplies it by `scheduler.init_noise_sigma`.
            output_type (`str`, defaults to "pil"): "pil" (quantised as EDM's generate.py does: clip(127.5 x + 128)
                truncated to uint8; with a `vae`, its decoded pixels clamped to [0, 1] × 255, truncated, as EDM2's),
                "np" (float32 (B, H, W, C) in [0, 1]), "pt" (float32 (B, C, H, W) in [0, 1]) or "latent" (the raw
                final sample (B, C, H, W) in the sampler's dtype: nominally in [-1, 1], or the model's latents).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called after every model evaluation as
                `callback_on_step_end(pipe, i, t, callback_kwargs)`; it may return `{"latents": ...}` to replace the
                scheduler's sample, and may set `pipe.interrupt = True` to stop sampling.
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed in `callback_kwargs` (only "latents").
            sigmas (`list[float]`, *optional*): custom step noise levels σ_0 > … > σ_{N-1} instead of the schedule
                (EDM's own schedulers only).
            seeds (`list[int]`, *optional*): one seed per image, used as EDM's `generate.py` uses them: image i gets
                its own generator seeded with `seeds[i] % 2**32` on the pipeline's device, which draws the initial
                noise, then the class index (for conditional models, even when `class_labels` is given), then (EDM's
                own schedulers) one float64 normal per sampler step. The same seeds give the official script's images
                (CPU generators reproduce its CPU runs). Equivalent to `generator=[torch.Generator(device).manual_seed(
                s % 2**32) for s in seeds]`; `batch_size` is then `len(seeds)`.
            guidance_scale (`float`, *optional*): guidance weight w > 0; D = D_guide + w (D − D_guide). 1 is no
                guidance (the guide is never evaluated). With a `guide_unet` it is autoguidance, otherwise
                classifier-free guidance of a class-conditional unet (an unconditional unet needs a guide). Default:
                the pipeline's `guidance_scale` (1.0 unless it was saved with another).
            guidance_interval (`tuple[float, float]`, *optional*): (σ_lo, σ_hi), 0 ≤ σ_lo < σ_hi (σ_hi may be
                `math.inf`): guide only the evaluations at σ_lo < σ ≤ σ_hi. Default: the pipeline's
                `guidance_interval` (none unless it was saved with one: every evaluation is guided).

        EDM's own schedulers follow the official random stream in every case (a list of generators is the per-image
        form of it) and clamp their noise range to the range the network supports (e.g. σ ≥ 0.02 for VE networks).

        The arguments are checked before sampling starts ([`check_inputs`]); a final sample that is not finite (e.g.
        NaN weights, or a σ so large that σ² overflows the network's dtype) gives a `RuntimeWarning` naming the likely
        cause instead of silently becoming one-colour images.

        The sampling loop does not synchronise the host with the device, for every scheduler family and with or
        without guidance: σ, the output conversions and the guidance decisions are laid out before it starts, the
        scheduler is started at index 0 (no timestep lookup), and EDM's schedulers step with Python numbers. diffusers'
        schedulers compare entries of their `sigmas` in Python (e.g. S_tmin ≤ σ ≤ S_tmax), but they keep `sigmas` on
        the CPU, so these are host reads. What still synchronises, by the caller's choice: CPU generators with a
        pipeline on a GPU (each step's churn noise is drawn on the CPU and copied; `seeds` draws on the device) and a
        `callback_on_step_end` that reads tensors. The only synchronisation of the call is the finiteness check after
        the loop. See `enable_fast_sampling` for reduced precision, `torch.compile` and CUDA graphs.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images.
        """
        family = self._check_components()
        batch_size, guidance_scale, interval = self.check_inputs(batch_size, seeds, generator, latents, output_type,
                                                 callback_on_step_end_tensor_inputs, sigmas, guidance_scale,
                                                 guidance_interval)
        if seeds is not None:
            generator = [torch.Generator(self._execution_device).manual_seed(int(seed) % 2**32) for seed in seeds]

        def conditioning() -> tuple[dict[str, Any], dict[str, Any] | None]:
            labels = self.prepare_class_labels(class_labels, batch_size, generator, self._execution_device)
            classifier_free = interval is not None and self.guide_unet is None
            return {"class_labels": labels}, self._unconditional_labels(labels) if classifier_free else None

        return self._generate(family, batch_size, conditioning, num_inference_steps, generator, latents, output_type,
                              return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, sigmas,
                              guidance_scale, interval)

    def _generate(
        self,
        family: SchedulerFamily,
        batch_size: int,
        conditioning: Callable[[], tuple[dict[str, Any], dict[str, Any] | None]],
        num_inference_steps: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        output_type: str,
        return_dict: bool,
        callback_on_step_end: Callable | None,
        callback_on_step_end_tensor_inputs: list[str],
        sigmas: list[float] | None,
        guidance_scale: float,
        interval: tuple[float, float] | None,
    ) -> ImagePipelineOutput | tuple:
        """The sampling of a checked call. `conditioning()` (called after the initial noise is drawn) returns the unet's
        conditioning arguments and, for classifier-free guidance, those of the unconditional branch."""
        device = self._execution_device
        state_dtype = self._state_dtype(family, device)
        if num_inference_steps is None:
            num_inference_steps = self.config.get("num_inference_steps") or DEFAULT_NUM_INFERENCE_STEPS
        self._set_timesteps(family, num_inference_steps, sigmas, device)
        timesteps = self.scheduler.timesteps
        evaluation_sigmas = self.scheduler.sigmas[: len(timesteps)].detach().cpu()
        evaluations = plan_evaluations(family, self.scheduler, evaluation_sigmas, interval)
        self._check_noise_levels(family, evaluations)

        sample = self.prepare_latents(batch_size, generator, latents, state_dtype, device)
        condition, unconditional = conditioning()
        if family.edm_sampler:
            sample = self.scheduler.add_initial_churn(sample, generator)
        guidance = None if interval is None else self._guidance(guidance_scale, condition, unconditional)

        # Everything the loop needs is laid out here, so that the loop never synchronises with the device: σ of each
        # evaluation as its own device tensor (a compiled network sees a tensor, not a Python float it would
        # specialise on, and no per-step host-to-device copy is made), the output conversions and the guidance
        # decisions as Python numbers (`evaluations`), the scheduler started at index 0 (no timestep lookup).
        model_sigmas = [sigma.clone() for sigma in evaluation_sigmas.to(device=device, dtype=state_dtype).unbind()]
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        prediction_type = self.scheduler.config.prediction_type
        # EDM's samplers in "sample" mode hand the denoiser its input (x / s(t) in the ablation sampler).
        denoiser_takes_model_input = family.edm_sampler and prediction_type == "sample"
        hands_denoised = family.takes_denoised and prediction_type == "sample"
        self._num_timesteps = len(timesteps)
        self._interrupt = False
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                evaluation = evaluations[i]
                model_input = self.scheduler.scale_model_input(sample, t)
                x = model_input if denoiser_takes_model_input else sample
                if evaluation.input_scale != 1.0:
                    x = x * evaluation.input_scale
                if self._cuda_graph_steps:
                    torch.compiler.cudagraph_mark_step_begin()  # each evaluation is a new cudagraph-trees step
                denoised = self._denoise(x, model_sigmas[i], condition, guidance if evaluation.guided else None)
                if self._cuda_graph_steps:
                    denoised = denoised.clone()  # out of the graph's output memory, which the next replay reuses
                model_output = denoised
                if evaluation.output_coefficients is not None:
                    a, b = evaluation.output_coefficients
                    model_output = a * denoised.to(x.dtype) + b * x
                if hands_denoised:
                    step_kwargs["pred_original_sample"] = denoised
                sample = self.scheduler.step(model_output, t, sample, **step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    callback_kwargs = {name: sample for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    sample = callback_outputs.pop("latents", sample)
                progress_bar.update()

        if not bool(torch.isfinite(sample).all()):  # the one host synchronisation, after the loop
            # stacklevel 4: past _generate, __call__ and its no_grad wrapper, to the caller
            warnings.warn(self._non_finite_message(sample), RuntimeWarning, stacklevel=4)
        if self.vae is not None and output_type != "latent":
            images = postprocess_vae_pixels(decode_latents(self.vae, sample), output_type)
        else:
            images = postprocess_edm_images(sample, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _state_dtype(self, family: SchedulerFamily, device: torch.device) -> torch.dtype:
        """The sampler state's precision: that of the reference sampler of EDM's schedulers (float64 as EDM's sampler,
        by default; float32 as EDM2's), float32 on MPS (no float64) and for diffusers' schedulers."""
        if not family.edm_sampler or device.type == "mps":
            return torch.float32
        return REFERENCE_SAMPLERS[self.scheduler.config.get("reference_sampler", "edm")].state_dtype

    def _sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        config = self.unet.config
        return (batch_size, config.in_channels, config.sample_size, config.sample_size)

    def _check_components(self) -> SchedulerFamily:
        """Checks that the unet is an EDM denoiser and the scheduler one the pipeline runs; returns its family."""
        _check_denoiser(self.unet, "unet")
        scheduler = self.scheduler
        if isinstance(scheduler, EDMDPMSolverMultistepScheduler) and scheduler.config.prediction_type == "sample":
            # `EDMDPMSolverMultistepScheduler.from_config(pipe.scheduler.config)` inherits EDM's "sample", which that
            # scheduler does not implement; the pipeline hands it the exactly equivalent raw-network output instead.
            scheduler.register_to_config(prediction_type="epsilon")
        return scheduler_family(scheduler)

    def _set_timesteps(
        self, family: SchedulerFamily, num_inference_steps: int | None, sigmas: list[float] | None,
        device: torch.device,
    ) -> None:
        """Lays out the scheduler's run from evaluation 0 (`set_begin_index(0)`, so no scheduler has to find its
        first timestep: diffusers' discrete schedulers can repeat one where their table ends). EDM's samplers take the
        network's noise range, its `round_sigma` and the official noise stream."""
        if family.edm_sampler:
            self.scheduler.set_timesteps(
                num_inference_steps if sigmas is None else None, device=device, sigmas=sigmas,
                net_sigma_min=self.unet.sigma_min, net_sigma_max=self.unet.sigma_max,
                round_sigma=self.unet.round_sigma, official_noise_stream=True,
            )
        else:
            self.scheduler.set_timesteps(check_num_inference_steps(num_inference_steps), device=device)
        self.scheduler.set_begin_index(0)

    def _check_guidance(
        self, guidance_scale: float, guidance_interval: Sequence[float] | None
    ) -> tuple[float, float] | None:
        """The guidance interval (σ_lo, σ_hi) when guidance is on, `None` when it is off (w = 1); a `ValueError`
        naming the argument for an unusable scale or interval, or an unconditional unet without a guide. Warns when
        classifier-free guidance meets a unet trained without label dropout (its unconditional branch is untrained)."""
        _check_guidance_scale(guidance_scale)
        interval = (0.0, math.inf) if guidance_interval is None else _check_interval(guidance_interval)
        if guidance_scale == 1:
            return None
        if self.guide_unet is not None:
            _check_guide(self.unet, self.guide_unet)
        elif not self.unet.config.num_class_labels:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a guide: the unet is unconditional, so classifier-free guidance"
                " is not possible; set pipe.guide_unet (autoguidance) or use guidance_scale=1.0."
            )
        elif self._untrained_unconditional_branch():
            warnings.warn(
                "Classifier-free guidance with a unet trained without label dropout (its config records"
                " label_dropout 0): its unconditional branch never saw the all-zero label, so guidance may hurt. Train"
                " with --label_dropout (e.g. 0.1), or set pipe.guide_unet for autoguidance.", UserWarning,
                stacklevel=3)
        return interval

    def _untrained_unconditional_branch(self) -> bool:
        """Whether the unet's config says it never learned the unconditional branch of classifier-free guidance."""
        return _trained_label_dropout(self.unet.config) == 0

    def _check_noise_levels(self, family: SchedulerFamily, evaluations: list[PlannedEvaluation]) -> None:
        """A `ValueError` when the scheduler evaluates the unet (or the guide) at a σ outside the range it supports
        (EDM's own schedulers clamp their schedule to the unet's range instead)."""
        checks = []
        if not family.edm_sampler:
            checks.append((self.unet, "unet", [e.sigma for e in evaluations]))
        if self.guide_unet is not None:
            checks.append((self.guide_unet, "guide_unet", [e.sigma for e in evaluations if e.guided]))
        for network, name, levels in checks:
            low, high = network.sigma_min * (1 - SIGMA_RANGE_TOLERANCE), network.sigma_max * (1 + SIGMA_RANGE_TOLERANCE)
            outside = [sigma for sigma in levels if not low <= sigma <= high]
            if outside:
                scheduler_name = type(self.scheduler).__name__
                raise ValueError(
                    f"The {scheduler_name} evaluates the {name} at σ = {outside[0]:g}, outside the range"
                    f" [{network.sigma_min:g}, {network.sigma_max:g}] it supports. Set the scheduler's noise range"
                    f" inside it (e.g. {scheduler_name}.from_config(pipe.scheduler.config, sigma_min=...,"
                    " sigma_max=...), for diffusers' discrete schedulers with use_karras_sigmas=True), or use"
                    " EDMHeunScheduler, which clamps its schedule to the unet's range."
                )

    def _unconditional_labels(self, labels: torch.Tensor | None) -> dict[str, Any] | None:
        """The conditioning of classifier-free guidance's unconditional branch: all-zero label vectors (EDM's "no
        label"); `None` for an unconditional unet."""
        if labels is None:
            return None
        return {"class_labels": torch.zeros(labels.shape[0], self.unet.config.num_class_labels, device=labels.device)}

    def _guidance(self, guidance_scale: float, condition: dict[str, Any],
                  unconditional: dict[str, Any] | None) -> _Guidance:
        """The run's guidance: autoguidance by the guide_unet, else classifier-free guidance with the conditional
        arguments followed by the unconditional ones, in one batch."""
        if self.guide_unet is not None:
            return _Guidance(float(guidance_scale), self.guide_unet, None)
        conditions = {}
        for name, value in condition.items():
            if name == "class_labels" and not value.is_floating_point():
                value = torch.nn.functional.one_hot(value, self.unet.config.num_class_labels).to(torch.float32)
            conditions[name] = torch.cat([value, unconditional[name].to(value.dtype)])
        return _Guidance(float(guidance_scale), None, conditions)

    def _denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: dict[str, Any], guidance: _Guidance | None
    ) -> torch.Tensor:
        """D(x; σ), guided when `guidance` is given: D_guide + w (D − D_guide) (EDM2's `lerp`), D_guide being the
        guide_unet's (autoguidance; given the conditioning it takes) or the unet's unconditional branch, evaluated in
        one batch with the conditional one (classifier-free guidance)."""
        if guidance is None:
            return self.unet(x, sigma, **condition, return_dict=False)[0]
        if guidance.guide_unet is not None:
            denoised = self.unet(x, sigma, **condition, return_dict=False)[0]
            guide_condition = _condition_for(guidance.guide_unet, condition)
            guide = guidance.guide_unet(x, sigma, **guide_condition, return_dict=False)[0].to(denoised.dtype)
        else:
            both = self.unet(torch.cat([x, x]), sigma, **guidance.conditions, return_dict=False)[0]
            denoised, guide = both.chunk(2)
        return torch.lerp(guide, denoised, guidance.scale)

    def _check_class_labels(
        self, class_labels: int | str | Sequence[int | str] | torch.Tensor | None, batch_size: int
    ) -> torch.Tensor | None:
        """The given labels as a tensor: class indices (B,) in [0, num_classes) (names are looked up in `id2label`) or
        finite label vectors (B, num_classes) (integer rows become float32); a `ValueError` naming `class_labels` when
        they cannot be used."""
        if class_labels is None:
            return None
        num_classes = self.unet.config.num_class_labels
        if not num_classes:
            raise ValueError("class_labels were given but the unet is unconditional (num_class_labels=0).")
        if _is_integer(class_labels) or (self.labels and isinstance(class_labels, str)):
            class_labels = [class_labels] * batch_size
        if self.labels and isinstance(class_labels, (list, tuple)) and any(isinstance(x, str) for x in class_labels):
            class_labels = [self.get_label_ids(label)[0] if isinstance(label, str) else label
                            for label in class_labels]
        if not isinstance(class_labels, (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(
                "class_labels must be a class index, a list of class indices or a tensor of label vectors (or class"
                f" names, see id2label), got {class_labels!r}."
            )
        if isinstance(class_labels, (list, tuple)) and all(_is_integer(label) for label in class_labels):
            _check_class_range(list(class_labels), num_classes)  # before int64 could overflow
        try:
            labels = torch.as_tensor(class_labels)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"class_labels must hold class indices or label vectors, got {class_labels!r}.") from error
        if labels.dtype == torch.bool or labels.is_complex() or labels.ndim not in (1, 2):
            raise ValueError(
                f"class_labels must be class indices (batch_size,) or label vectors (batch_size, {num_classes}), got"
                f" a {labels.dtype} tensor of shape {tuple(labels.shape)}."
            )
        if labels.ndim == 2:
            if labels.shape != (batch_size, num_classes):
                raise ValueError(
                    f"class_labels label vectors must have shape ({batch_size}, {num_classes}), got"
                    f" {tuple(labels.shape)}."
                )
            labels = labels if labels.is_floating_point() else labels.to(torch.float32)
            if not bool(torch.isfinite(labels).all()):
                raise ValueError("class_labels label vectors contain NaN or infinite values.")
            return labels
        if labels.is_floating_point():
            raise ValueError(
                f"class_labels of shape ({labels.shape[0]},) must be integer class indices, got {labels.dtype}; label"
                f" vectors have shape ({batch_size}, {num_classes})."
            )
        if labels.shape != (batch_size,):
            raise ValueError(f"Got {labels.numel()} class labels for batch_size={batch_size}; pass one per image.")
        if not bool(((labels >= 0) & (labels < num_classes)).all()):
            _check_class_range(labels.tolist(), num_classes)
        return labels

    def _non_finite_message(self, sample: torch.Tensor) -> str:
        """Why the final `sample` holds NaN or ±inf: the likely cause, found after sampling (no cost when finite)."""
        bad = int((~torch.isfinite(sample)).flatten(1).any(1).sum())
        dtype = self.unet.dtype
        sigma_max = float(self.scheduler.sigmas.max())
        if not all(bool(torch.isfinite(parameter).all()) for parameter in self.unet.parameters()):
            cause = "the unet's weights contain NaN or infinite values (a diverged training run or corrupt checkpoint)"
        elif sigma_max > math.sqrt(torch.finfo(dtype).max):
            cause = (
                f"the largest noise level σ = {sigma_max:g} is too large for the unet's {dtype} (σ² overflows); lower"
                " sigma_max or the custom sigmas"
            )
        else:
            cause = (
                f"likely the model weights (e.g. a diverged training run) or the σ range (largest σ = {sigma_max:g}) of"
                " the scheduler"
            )
        return f"{bad} of {sample.shape[0]} samples contain NaN or infinite values and give one-colour images: {cause}."

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Saves the pipeline like [`DiffusionPipeline.save_pretrained`] and adds the loader file that lets
        `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` resolve `EDMPipeline`."""
        if kwargs.pop("push_to_hub", False):
            raise ValueError(
                "EDMPipeline.save_pretrained(push_to_hub=True) is not supported: save locally, then upload the folder"
                " with huggingface_hub.upload_folder (train_edm.py --push_to_hub does this)."
            )
        super().save_pretrained(save_directory, **kwargs)
        write_loader(save_directory, self.config_name, type(self).__name__)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> EDMPipeline:
        """As [`DiffusionPipeline.from_pretrained`]; a folder saved by a subclass of this pipeline (e.g.
        `EDMTextToImagePipeline`) loads as that subclass, with its own components."""
        target = cls
        try:
            config = cls.load_config(pretrained_model_name_or_path, cache_dir=kwargs.get("cache_dir"),
                                     token=kwargs.get("token"), revision=kwargs.get("revision"))
            saved = config.get("_class_name")
            target = next((sub for sub in _subclasses(cls) if sub.__name__ == saved), cls)
        except (OSError, ValueError):
            pass  # diffusers' own loading reports what is wrong with the folder
        if target is not cls:
            return target.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> Any:
        """Reads `model_index.json`; the `[loader, class]` form written by `save_pretrained` resolves to this class
        without executing the loader file."""
        result = super().load_config(*args, **kwargs)
        resolve_loader_class_name(result[0] if isinstance(result, tuple) else result)
        return result


def _subclasses(cls: type) -> list[type]:
    """Every subclass of `cls`, at any depth."""
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _condition_for(denoiser: EDMPreconditionedUNet2DModel, condition: dict[str, Any]) -> dict[str, Any]:
    """The part of the unet's conditioning arguments a guide takes: none for an unconditional guide, no text tokens
    for one without cross-attention."""
    if not denoiser.config.num_class_labels:
        return {}
    if not denoiser.config.get("cross_attention_dim", 0):
        return {name: value for name, value in condition.items() if not name.startswith("encoder_")}
    return condition


def _label_ids(id2label: Mapping[str, str] | None) -> dict[str, int]:
    """Class name → index, each comma-separated name of an `id2label` entry on its own (as diffusers' DiT pipeline)."""
    labels: dict[str, int] = {}
    for key, value in (id2label or {}).items():
        for name in value.split(","):
            labels[name.strip()] = int(key)
    return dict(sorted(labels.items()))


def _trained_label_dropout(config: Mapping[str, Any]) -> float:
    """The label dropout a denoiser's config records (top level for `unet_2d`, in `backbone_config` for the native
    backbones; 0 when absent)."""
    return float(config.get("label_dropout") or (config.get("backbone_config") or {}).get("label_dropout") or 0)


def _is_integer(value: object) -> bool:
    """An `int` or NumPy integer, not a `bool`."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_guidance_scale(guidance_scale: object) -> None:
    """A `ValueError` unless the guidance weight is a number in (0, `MAX_GUIDANCE_SCALE`]."""
    is_real = isinstance(guidance_scale, (int, float, np.integer, np.floating)) and not isinstance(guidance_scale, bool)
    if not is_real or not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number (1.0: no guidance), got {guidance_scale!r}.")
    if not 0 < guidance_scale <= MAX_GUIDANCE_SCALE:
        raise ValueError(f"guidance_scale must lie in (0, {MAX_GUIDANCE_SCALE:g}] (1.0: no guidance; the papers use at"
                         f" most 10), got {guidance_scale!r}.")


def _check_interval(guidance_interval: Sequence[float]) -> tuple[float, float]:
    """The interval as two floats; a `ValueError` unless 0 ≤ σ_lo < σ_hi."""
    try:
        low, high = (float(bound) for bound in guidance_interval)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"guidance_interval must be a pair (sigma_lo, sigma_hi) of noise levels, got {guidance_interval!r}."
        ) from error
    if not 0 <= low < high:
        raise ValueError(
            f"guidance_interval must satisfy 0 <= sigma_lo < sigma_hi (sigma_hi may be math.inf), got"
            f" {guidance_interval!r}."
        )
    return low, high


def _check_seeds(seeds: Sequence[int]) -> None:
    """A `ValueError` naming `seeds` unless it is a non-empty sequence of integers."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)):
        raise ValueError(f"seeds must be a list of integers, got {seeds!r}.")
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one seed (one image per seed).")
    for index, seed in enumerate(seeds):
        if not _is_integer(seed):
            raise ValueError(f"seeds must be integers, but seeds[{index}] is {seed!r}.")


def _check_class_range(labels: list[int], num_classes: int) -> None:
    """A `ValueError` naming the first class index outside [0, num_classes)."""
    for index, label in enumerate(labels):
        if not 0 <= label < num_classes:
            raise ValueError(f"class_labels must lie in [0, {num_classes}), got {label} (image {index}).")


def _check_latents(latents: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    """A `ValueError` naming `latents` unless they are a finite floating-point tensor of `shape` (or `None`)."""
    if latents is None:
        return
    if not isinstance(latents, torch.Tensor):
        raise ValueError(
            f"latents must be a torch.Tensor, got {type(latents).__name__}; convert it, e.g. torch.from_numpy(latents)."
        )
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape} (unscaled N(0, I) noise), got {tuple(latents.shape)}.")
    if not latents.is_floating_point():
        raise ValueError(f"latents must be floating point (unscaled N(0, I) noise), got {latents.dtype}.")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contain NaN or infinite values; pass finite N(0, I) noise.")


def _check_denoiser(module: object, name: str) -> None:
    """A `TypeError` naming the argument `name` unless `module` (compiled or not) is an EDM denoiser: an
    [`EDMPreconditionedUNet2DModel`] or a model with its interface (`forward(sample, sigma, class_labels=None,
    return_dict=True)` returning D(x; σ), the supported range `sigma_min`, `sigma_max` and `round_sigma`)."""
    if not all(hasattr(unwrap_module(module), attribute) for attribute in DENOISER_INTERFACE):
        raise TypeError(
            f"{name} must be an EDMPreconditionedUNet2DModel (EDM's denoiser D(x; σ)), got {type(module).__name__}."
            " To sample a UNet2DModel trained as EDM's raw network F, load its weights into the `backbone` of an"
            " EDMPreconditionedUNet2DModel built with the same arguments."
        )


def _check_guide(unet: EDMPreconditionedUNet2DModel, guide_unet: EDMPreconditionedUNet2DModel) -> None:
    """A `TypeError` unless `guide_unet` is an EDM denoiser, a `ValueError` unless it denoises the unet's images with
    its class labels, or unconditionally (classifier-free guidance by a separate network, as EDM2's presets do)."""
    _check_denoiser(guide_unet, "guide_unet")
    for key in ("in_channels", "sample_size", "num_class_labels"):  # D has in_channels whatever out_channels is
        guide_value, unet_value = guide_unet.config.get(key), unet.config.get(key)
        if key == "num_class_labels" and guide_value == 0:
            continue
        if guide_value != unet_value:
            raise ValueError(
                f"guide_unet must denoise the unet's images with its class labels, but its {key} is {guide_value}"
                f" where the unet's is {unet_value}."
            )


def _check_vae(unet: EDMPreconditionedUNet2DModel, vae: AutoencoderKL, device: torch.device | None = None) -> None:
    """A `TypeError` unless `vae` is an `AutoencoderKL`, a `ValueError` unless its latents are the unet's images and its
    config holds the latent scaling, or when a float16 VAE would decode on the CPU."""
    if not isinstance(unwrap_module(vae), AutoencoderKL):
        raise TypeError(f"vae must be a diffusers AutoencoderKL, got {type(vae).__name__}.")
    if vae.config.latent_channels != unet.config.in_channels:
        raise ValueError(f"The VAE's latents have {vae.config.latent_channels} channels but the unet denoises"
                         f" {unet.config.in_channels}; pass the VAE the model was trained with.")
    latent_scale_and_bias(vae.config)
    if device is not None and device.type == "cpu" and vae.dtype == torch.float16:
        raise ValueError("The VAE is float16 on the CPU, where half-precision convolutions are not supported; load it"
                         " with torch_dtype=torch.float32 (or bfloat16), or move the pipeline to a GPU.")


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randint(high, size, generator=generator, device=device)
