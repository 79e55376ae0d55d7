# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Image generation with an EDM denoiser and EDM's sampler (Karras et al. 2022, Algorithm 2)."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler

LOADER_MODULE = "pipeline_diffusers_edm"
"""Name of the loader file written next to `model_index.json` (see `EDMPipeline.save_pretrained`)."""

_LOADER_SOURCE = '''"""Written by diffusers-edm: lets `DiffusionPipeline.from_pretrained(<this repo>, trust_remote_code=True)` load
this pipeline. It only imports the installed package (`pip install diffusers-edm`)."""

from diffusers_edm import EDMPipeline  # noqa: F401
'''

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class EDMPipeline(DiffusionPipeline):
    r"""
    Unconditional or class-conditional image generation with an EDM denoiser (Karras et al. 2022).

    Args:
        unet ([`EDMPreconditionedUNet2DModel`]): the denoiser D(x; σ).
        scheduler ([`EDMHeunScheduler`]): EDM's sampler, in `prediction_type="sample"` mode (the model returns D).

    Saved pipelines record the component classes by module path in `model_index.json`
    (`diffusers_edm.models.unet_edm` and `diffusers_edm.schedulers.scheduling_edm_heun`); these paths are a stable
    on-disk format. `EDMPipeline.from_pretrained(path)` loads them; `DiffusionPipeline.from_pretrained(path,
    trust_remote_code=True)` works too, through the small loader file `pipeline_diffusers_edm.py` that
    `save_pretrained` writes (it only imports this package).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: EDMPreconditionedUNet2DModel, scheduler: EDMHeunScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int = 18,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        sigmas: list[float] | None = None,
        seeds: list[int] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generates images with EDM's sampler.

        Args:
            batch_size (`int`, defaults to 1): number of images.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): classes of a conditional model: one int
                for all images, one per image, or label vectors (batch_size, num_classes), e.g. one-hot rows (integer
                rows are converted to float32). `None` draws them uniformly with `generator` (after the initial
                noise, per image when `generator` is a list).
            num_inference_steps (`int`, defaults to 18): sampler steps N; the model is evaluated 2N − 1 times
                (Heun). 18 steps (35 evaluations) is the paper's CIFAR-10 setting.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random source; a list gives one
                generator per image, making each image independent of the batch it is in.
            latents (`torch.Tensor`, *optional*): unscaled N(0, I) initial noise (batch_size, C, H, W), floating point
                and finite; the pipeline multiplies it by `scheduler.init_noise_sigma`.
            output_type (`str`, defaults to "pil"): "pil" (quantised as EDM's generate.py does: clip(127.5 x + 128)
                truncated to uint8), "np" (float32 (B, H, W, C) in [0, 1]), "pt" (float32 (B, C, H, W) in [0, 1]) or
                "latent" (the raw final sample (B, C, H, W) in the sampler's dtype, nominally in [-1, 1]).
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called after every model evaluation as
                `callback_on_step_end(pipe, i, t, callback_kwargs)`; it may return `{"latents": ...}` to replace the
                sample.
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed in `callback_kwargs` (only "latents").
            sigmas (`list[float]`, *optional*): custom step noise levels σ_0 > … > σ_{N-1} instead of the ρ-schedule.
            seeds (`list[int]`, *optional*): one seed per image, used as EDM's `generate.py` uses them: image i gets
                its own generator seeded with `seeds[i] % 2**32` on the pipeline's device, which draws the initial
                noise, then the class index (for conditional models, even when `class_labels` is given), then one
                float64 normal per sampler step. The same seeds give the official script's images (CPU generators
                reproduce its CPU runs). Equivalent to `generator=[torch.Generator(device).manual_seed(s % 2**32) for
                s in seeds]`; `batch_size` is then `len(seeds)`.

        The sampler follows the official random stream in every case (a list of generators is the per-image form of
        it) and clamps its noise range to the range the network supports (e.g. σ ≥ 0.02 for VE networks).

        The arguments are checked before sampling starts (a `ValueError` naming the argument); a final sample that is
        not finite (e.g. NaN weights, or a σ so large that σ² overflows the network's dtype) gives a `RuntimeWarning`
        naming the likely cause instead of silently becoming one-colour images.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images.
        """
        self._check_components()
        if not _is_integer(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if seeds is not None:
            _check_seeds(seeds)
            if generator is not None:
                raise ValueError("Pass either seeds or generator, not both.")
            if batch_size not in (1, len(seeds)):
                raise ValueError(f"batch_size={batch_size} disagrees with the {len(seeds)} seeds; omit batch_size.")
            batch_size = len(seeds)
            generator = [torch.Generator(self._execution_device).manual_seed(int(seed) % 2**32) for seed in seeds]
        batch_size = int(batch_size)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not supported; use one of {OUTPUT_TYPES}.")
        unknown_inputs = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown_inputs:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only contain {self._callback_tensor_inputs}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for batch_size={batch_size}; pass one per image.")
        device = self._execution_device
        # Algorithm 2 keeps its state in float64 (as the official sampler); MPS has no float64.
        state_dtype = torch.float32 if device.type == "mps" else torch.float64

        shape = (batch_size, self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        _check_latents(latents, shape)
        given_labels = self._check_class_labels(class_labels, batch_size)
        self.scheduler.set_timesteps(
            num_inference_steps if sigmas is None else None, device=device, sigmas=sigmas,
            net_sigma_min=self.unet.sigma_min, net_sigma_max=self.unet.sigma_max, round_sigma=self.unet.round_sigma,
            official_noise_stream=True,
        )

        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        labels = self._class_labels(given_labels, batch_size, generator, device)
        sample = latents.to(device=device, dtype=state_dtype) * self.scheduler.init_noise_sigma
        sample = self.scheduler.add_initial_churn(sample, generator)

        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = self.scheduler.scale_model_input(sample, t)
                denoised = self.unet(model_input, t, class_labels=labels, return_dict=False)[0]
                sample = self.scheduler.step(denoised, t, sample, generator=generator, return_dict=False)[0]
                if callback_on_step_end is not None:
                    callback_kwargs = {}
                    for name in callback_on_step_end_tensor_inputs:
                        callback_kwargs[name] = sample
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    sample = callback_outputs.pop("latents", sample)
                progress_bar.update()

        if not bool(torch.isfinite(sample).all()):  # the one host synchronisation, after the loop
            warnings.warn(self._non_finite_message(sample), RuntimeWarning, stacklevel=3)
        images = postprocess_edm_images(sample, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _check_components(self) -> None:
        scheduler_config = self.scheduler.config
        timestep_type = getattr(self.scheduler, "resolved_timestep_type", None)
        if scheduler_config.get("prediction_type") != "sample" or timestep_type != "sigma":
            raise ValueError(
                "EDMPipeline's unet returns the denoised image D(x; σ) and takes σ itself as its timestep; use an"
                " EDMHeunScheduler with prediction_type='sample' and timestep_type='sigma' (its defaults), e.g."
                " EDMHeunScheduler.from_config(pipe.scheduler.config, prediction_type='sample', timestep_type=None)."
            )

    def _check_class_labels(
        self, class_labels: int | list[int] | torch.Tensor | None, batch_size: int
    ) -> torch.Tensor | None:
        """The given labels as a tensor: class indices (B,) in [0, num_classes) or finite label vectors (B, num_classes)
        (integer rows become float32); a `ValueError` naming `class_labels` when they cannot be used."""
        if class_labels is None:
            return None
        num_classes = self.unet.config.num_class_labels
        if not num_classes:
            raise ValueError("class_labels were given but the unet is unconditional (num_class_labels=0).")
        if _is_integer(class_labels):
            class_labels = [class_labels] * batch_size
        if not isinstance(class_labels, (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(
                "class_labels must be a class index, a list of class indices or a tensor of label vectors, got"
                f" {class_labels!r}."
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

    def _class_labels(
        self,
        given_labels: torch.Tensor | None,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor | None:
        """The checked labels (see [`_check_class_labels`]) of a conditional model, drawn uniformly when not given."""
        num_classes = self.unet.config.num_class_labels
        if not num_classes:
            return None
        drawn = None
        if given_labels is None or generator is not None:
            # Drawn even when labels are given, so an image's random stream does not depend on them (as generate.py).
            if isinstance(generator, list):
                drawn = torch.stack([_randint(num_classes, (), g) for g in generator]).to(device)
            else:
                drawn = _randint(num_classes, (batch_size,), generator).to(device)
        return drawn if given_labels is None else given_labels.to(device)

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
        push_to_hub = kwargs.pop("push_to_hub", False)
        if push_to_hub:
            raise ValueError(
                "EDMPipeline.save_pretrained(push_to_hub=True) is not supported: save locally, then upload the folder"
                " with huggingface_hub.upload_folder (train_edm.py --push_to_hub does this)."
            )
        super().save_pretrained(save_directory, **kwargs)
        with open(os.path.join(save_directory, f"{LOADER_MODULE}.py"), "w", encoding="utf-8") as f:
            f.write(_LOADER_SOURCE)
        index_path = os.path.join(save_directory, self.config_name)
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = [LOADER_MODULE, type(self).__name__]
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> Any:
        """Reads `model_index.json`; the `[loader, class]` form written by `save_pretrained` resolves to this class
        without executing the loader file."""
        result = super().load_config(*args, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        class_name = config.get("_class_name")
        if isinstance(class_name, list) and class_name[0] == LOADER_MODULE:
            config["_class_name"] = class_name[1]
        return result


def _is_integer(value: object) -> bool:
    """An `int` or NumPy integer, not a `bool`."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


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


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.randint(high, size, generator=generator, device=device)


def quantize_edm_images(sample: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, C, H, W) of samples in [-1, 1], as EDM's generate.py saves them: clip(127.5 x + 128, 0, 255)
    truncated. Images that were read from 8-bit files (x = u / 127.5 − 1) come back as exactly u."""
    return (sample * 127.5 + 128).clip(0, 255).to(torch.uint8)


def postprocess_edm_images(
    sample: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Converts samples in [-1, 1] to "pil" images quantised by [`quantize_edm_images`], to float32 "np"
    (B, H, W, C) / "pt" (B, C, H, W) arrays in [0, 1] as diffusers does, or leaves them as they are ("latent")."""
    if output_type == "latent":
        return sample
    if output_type == "pil":
        pixels = quantize_edm_images(sample).permute(0, 2, 3, 1).cpu().numpy()
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        return [PIL.Image.fromarray(image) for image in pixels]
    images = (sample / 2 + 0.5).clamp(0, 1).to(torch.float32)
    if output_type == "pt":
        return images
    return images.permute(0, 2, 3, 1).cpu().numpy()
