# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Converting official EDM2 pickles (Karras et al. 2024) into `EDMPipeline` folders: the network (and a guide for
autoguidance or classifier-free guidance) as `EDMPreconditionedUNet2DModel`s with the `edm2_unet` backbone, the VAE of
a latent model with EDM2's latent statistics in its config, and EDM's sampler set up as EDM2's generator runs it
(float32 state, 32 steps, the preset's guidance weight). Called by [`convert_edm_checkpoint`] for EDM2 files."""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers.models import AutoencoderKL
from diffusers.utils import logging as diffusers_logging

from ..errors import EDMInputError, first_line
from ..models.edm2_unet import EDM2UNet2DModel
from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..pipelines.pipeline_edm import EDMPipeline
from ..sampler_presets import EDM2_NUM_STEPS, EDM2_PRESETS, EDM2_SCHEDULE, EDM2Preset, find_edm2_preset
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .edm2_snapshot import EDM2Snapshot
from .verify import VerificationReport

_OFFICIAL_PREFIXES = {"unet.": "backbone.", "logvar_fourier.": "backbone.logvar_fourier.",
                      "logvar_linear.": "backbone.logvar_linear."}


def edm2_unet_from_snapshot(snapshot: EDM2Snapshot) -> EDMPreconditionedUNet2DModel:
    """The converted denoiser: an `edm2_unet` model holding the snapshot's weights exactly (float16 values stored as
    float32), in eval mode.

    Raises:
        ValueError: a tensor is missing, unexpected, of another shape, or not finite.
    """
    model = EDMPreconditionedUNet2DModel(
        sample_size=snapshot.img_resolution, in_channels=snapshot.img_channels, out_channels=snapshot.img_channels,
        num_class_labels=snapshot.label_dim, backbone_type="edm2_unet", backbone_config=snapshot.backbone_config,
        sigma_data=snapshot.sigma_data,
    )
    expected = model.state_dict()
    weights = {}
    for key, tensor in snapshot.state_dict.items():
        prefix = next((p for p in _OFFICIAL_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"{snapshot.name}: unexpected tensor {key!r}; it is not an EDM2 network.")
        target = _OFFICIAL_PREFIXES[prefix] + key[len(prefix):]
        if target not in expected:
            raise ValueError(f"{snapshot.name}: {key!r} is not a tensor of the EDM2 network its arguments describe.")
        if tensor.shape != expected[target].shape:
            raise ValueError(f"{snapshot.name}: {key!r} has shape {tuple(tensor.shape)}, the network"
                             f" {tuple(expected[target].shape)}.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{snapshot.name}: {key!r} holds NaN or infinite weights; the file is damaged.")
        weights[target] = tensor.to(expected[target].dtype)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ValueError(f"{snapshot.name} lacks {len(missing)} tensor(s) of its network, e.g. {missing[:3]}.")
    model.load_state_dict(weights, strict=True)
    return model.eval()


def check_guide_fits(main: EDM2Snapshot, guide: EDM2Snapshot) -> None:
    """A `ValueError` unless the guide denoises the main model's images (resolution, channels, latent space) with its
    classes, or unconditionally (classifier-free guidance by a separate network)."""
    for what, mine, its in (("resolution", main.img_resolution, guide.img_resolution),
                            ("channels", main.img_channels, guide.img_channels)):
        if mine != its:
            raise ValueError(f"the guide {Path(guide.name).name} has {what} {its} but the model {mine}; pass a guide of"
                             " the same data.")
    if guide.label_dim not in (0, main.label_dim):
        raise ValueError(f"the guide {Path(guide.name).name} has {guide.label_dim} classes but the model"
                         f" {main.label_dim}; pass a guide with the model's classes, or an unconditional one.")
    if (main.encoding is None) != (guide.encoding is None):
        raise ValueError("the guide and the model work in different spaces (pixels and latents); pass a guide of the"
                         " same kind.")


def load_vae(snapshot: EDM2Snapshot, vae: str | os.PathLike | None) -> AutoencoderKL | None:
    """The VAE of a latent model (`vae`, or the one its encoder records), with EDM2's latent statistics written into
    its config; `None` for a pixel model.

    Raises:
        EDMInputError: a `vae` for a pixel model, a VAE that cannot be loaded (offline: naming `--vae`), or one whose
            latent channels differ from the network's.
    """
    if snapshot.encoding is None:
        if vae is not None:
            raise EDMInputError(f"{Path(snapshot.name).name} is a pixel-space model; drop --vae.")
        return None
    source = os.fspath(vae) if vae is not None else snapshot.encoding.vae_name
    shown = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # diffusers' deprecation notices would precede the one error line
            warnings.simplefilter("ignore")
            model = AutoencoderKL.from_pretrained(source).eval()
    except (OSError, ValueError) as error:
        raise EDMInputError(f"could not load the VAE {source} ({first_line(error)}); without internet, save it on"
                            f" another machine (AutoencoderKL.from_pretrained('{snapshot.encoding.vae_name}')"
                            ".save_pretrained(DIR)) and pass --vae DIR.") from None
    finally:
        if shown:
            diffusers_logging.enable_progress_bar()
    if model.config.latent_channels != snapshot.img_channels:
        raise EDMInputError(f"the VAE {source} has {model.config.latent_channels} latent channels but the model"
                            f" denoises {snapshot.img_channels}; pass the VAE the model was trained with.")
    encoding = snapshot.encoding
    model.register_to_config(latents_mean=encoding.raw_mean, latents_std=encoding.raw_std,
                             scaling_factor=encoding.final_std)
    return model


def select_edm2_preset(snapshot: EDM2Snapshot, guide: EDM2Snapshot | None, name: str | None) -> EDM2Preset | None:
    """The generator preset: `name` if given (an EDM2 preset), else the one whose files these are."""
    if name is not None:
        if name not in EDM2_PRESETS:
            raise EDMInputError(f"--preset {name} is not an EDM2 preset; use one of {', '.join(EDM2_PRESETS)}.")
        return EDM2_PRESETS[name]
    return find_edm2_preset(snapshot.name, guide.name if guide is not None else None)


def edm2_pipeline(snapshot: EDM2Snapshot, guide: EDM2Snapshot | None, vae: AutoencoderKL | None,
                  preset: EDM2Preset | None) -> EDMPipeline:
    """The converted pipeline: EDM's sampler as EDM2's generator runs it, the guide and the preset's guidance weight
    (1 without a preset)."""
    unet = edm2_unet_from_snapshot(snapshot)
    guide_unet = edm2_unet_from_snapshot(guide) if guide is not None else None
    scheduler = EDMHeunScheduler(sigma_data=snapshot.sigma_data, **EDM2_SCHEDULE)
    guidance = preset.guidance if preset is not None and guide is not None else 1.0
    return EDMPipeline(unet=unet, scheduler=scheduler, guide_unet=guide_unet, vae=vae, guidance_scale=guidance)


def edm2_sampler_settings(preset: EDM2Preset | None) -> dict[str, Any]:
    """The `sampler_settings.json` of a converted EDM2 model: EDM2's step count and the preset."""
    return {"name": preset.name if preset else "edm2", "num_inference_steps": EDM2_NUM_STEPS,
            "num_model_evaluations": 2 * EDM2_NUM_STEPS - 1, "guidance_scale": preset.guidance if preset else 1.0,
            "source": "EDM2's generate_images.py", "recalled": False, **EDM2_SCHEDULE}


@torch.no_grad()
def verify_edm2_conversion(snapshot: EDM2Snapshot, pipeline: EDMPipeline, output_dir: str | os.PathLike,
                           seed: int = 0) -> VerificationReport:
    """Checks a converted EDM2 pipeline: finite D at σ from 0.002 to 80; the reloaded folder gives identical D; D equals
    a reference computed directly from the pickle's raw tensors (EDM2's preconditioning written out, a fresh U-Net);
    the official `training.networks_edm2` when it is importable; and a 2-step run gives finite images."""
    report = VerificationReport()
    generator = torch.Generator().manual_seed(seed)
    shape = (3, snapshot.img_channels, snapshot.img_resolution, snapshot.img_resolution)
    sigma = torch.tensor([0.002, 0.4, 80.0])
    x = torch.randn(shape, generator=generator) * (0.25 + sigma.reshape(-1, 1, 1, 1) ** 2).sqrt()
    labels = None
    if snapshot.label_dim:
        labels = torch.nn.functional.one_hot(torch.randint(snapshot.label_dim, (3,), generator=generator),
                                             snapshot.label_dim).to(torch.float32)
    converted = pipeline.unet(x, sigma, class_labels=labels).sample
    report.add(bool(torch.isfinite(converted).all()), "converted denoiser gives finite D(x; σ) at σ = 0.002, 0.4, 80")
    reloaded = EDMPipeline.from_pretrained(output_dir)
    reloaded.set_progress_bar_config(disable=True)
    report.add(torch.equal(reloaded.unet(x, sigma, class_labels=labels).sample, converted),
               "the saved folder, reloaded with from_pretrained, gives identical D")
    reference = _reference_denoiser(snapshot, x, sigma, labels)
    difference = (converted - reference).abs().max().item()
    report.add(difference <= 1e-6 * max(1.0, reference.abs().max().item()),
               f"matches D computed from the raw tensors: max |diff| = {difference:.3g}")
    official = _official_denoiser(snapshot, x, sigma, labels)
    if official is None:
        report.note("official code not importable (training.networks_edm2 not on sys.path): skipped the comparison"
                    " with the original network")
    else:
        difference = (converted - official).abs().max().item()
        report.add(difference <= 1e-4 * max(1.0, official.abs().max().item()),
                   f"matches the official Precond: max |diff| = {difference:.3g}")
    images = reloaded(seeds=[seed], num_inference_steps=2, output_type="np").images
    report.add(bool(torch.isfinite(torch.as_tensor(images)).all()), "a 2-step sampling run gives finite images")
    return report


def _reference_denoiser(snapshot: EDM2Snapshot, x: torch.Tensor, sigma: torch.Tensor,
                        labels: torch.Tensor | None) -> torch.Tensor:
    """D = c_skip x + c_out F(c_in x; ¼ ln σ) with EDM2's σ_data, F a fresh U-Net holding the raw `unet.*` tensors."""
    network = EDM2UNet2DModel(img_resolution=snapshot.img_resolution, in_channels=snapshot.img_channels,
                              label_dim=snapshot.label_dim, **snapshot.backbone_config)
    state = {key.removeprefix("unet."): value.to(torch.float32)
             for key, value in snapshot.state_dict.items()}
    network.load_state_dict(state, strict=True)
    network.eval()
    data = snapshot.sigma_data
    s = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
    c_skip, c_out = data**2 / (s**2 + data**2), s * data / (s**2 + data**2).sqrt()
    c_in, c_noise = 1 / (data**2 + s**2).sqrt(), s.flatten().log() / 4
    class_labels = labels if snapshot.label_dim else None
    if snapshot.label_dim and class_labels is None:
        class_labels = torch.zeros(1, snapshot.label_dim)
    return c_skip * x + c_out * network(c_in * x, c_noise, class_labels).to(torch.float32)


def _official_denoiser(snapshot: EDM2Snapshot, x: torch.Tensor, sigma: torch.Tensor,
                       labels: torch.Tensor | None) -> torch.Tensor | None:
    """D of the official implementation when `training.networks_edm2` is importable (the pickle's own code is never
    used); `None` otherwise."""
    try:
        networks = importlib.import_module("training.networks_edm2")
    except ImportError:
        return None
    network = networks.Precond(snapshot.img_resolution, snapshot.img_channels, snapshot.label_dim, use_fp16=False,
                               sigma_data=snapshot.sigma_data, **snapshot.backbone_config)
    network.load_state_dict({key: value.to(torch.float32) for key, value in snapshot.state_dict.items()})
    return network.eval()(x, sigma, labels).to(torch.float32)
