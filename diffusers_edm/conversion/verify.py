# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Checks a converted EDM pipeline against the snapshot it came from."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import torch
from diffusers.utils import logging as diffusers_logging

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..pipelines.pipeline_edm import EDMPipeline
from ..preconditioning import make_preconditioning
from .edm_snapshot import NATIVE_BACKBONE_CLASSES, EDMSnapshot

REFERENCE_RTOL = 1e-6
"""Allowed max |D_converted − D_reference| / max(1, max |D_reference|) against the reference built from the raw
state_dict: both run the same float32 operations, so they agree to rounding."""

OFFICIAL_RTOL = {"edm": 1e-4, "vp": 5e-3, "ve": 5e-3, "iddpm": 5e-3}
"""Allowed max |D_converted − D_official| / max(1, max |D_official|) per preconditioning. VP, VE and iDDPM feed large
noise labels (up to ~1000) to the embedding, where float32 rounding of c_noise·freq alone reaches ~1e-4..1e-2
(conformance README, section 07)."""


@dataclass
class DenoiserInputs:
    """Random inputs of the denoiser D(x; σ) (one-hot labels and augment labels as EDM's networks take them)."""

    x: torch.Tensor
    sigma: torch.Tensor
    class_labels: torch.Tensor | None
    augment_labels: torch.Tensor | None


@dataclass
class VerificationReport:
    """The outcome of [`verify_conversion`]: one line per check, and whether all passed."""

    lines: list[str] = field(default_factory=list)
    passed: bool = True

    def add(self, ok: bool, message: str) -> None:
        self.lines.append(f"[{'ok' if ok else 'FAIL'}] {message}")
        self.passed = self.passed and ok

    def note(self, message: str) -> None:
        self.lines.append(f"[--] {message}")

    def summary(self) -> str:
        verdict = "verification passed" if self.passed else "VERIFICATION FAILED"
        return "\n".join([*self.lines, verdict])


def random_denoiser_inputs(snapshot: EDMSnapshot, unet: EDMPreconditionedUNet2DModel, batch_size: int = 3,
                           seed: int = 0) -> DenoiserInputs:
    """Noisy images at noise levels spread log-uniformly over [max(0.002, σ_min), min(80, σ_max)] of the network,
    with random one-hot class labels and augment labels (all zero for the first image, as at sampling)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = max(0.002, unet.sigma_min), min(80.0, unet.sigma_max)
    sigma = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), batch_size)
    shape = (batch_size, snapshot.img_channels, snapshot.img_resolution, snapshot.img_resolution)
    images = torch.rand(shape, generator=generator) * 2 - 1
    x = images + sigma.reshape(-1, 1, 1, 1) * torch.randn(shape, generator=generator)
    class_labels = None
    if snapshot.label_dim:
        classes = torch.randint(snapshot.label_dim, (batch_size,), generator=generator)
        class_labels = torch.nn.functional.one_hot(classes, snapshot.label_dim).to(torch.float32)
    augment_labels = None
    if snapshot.augment_dim:
        augment_labels = torch.randn(batch_size, snapshot.augment_dim, generator=generator) * 0.5
        augment_labels[0] = 0
    return DenoiserInputs(x, sigma.to(torch.float32), class_labels, augment_labels)


@torch.no_grad()
def converted_denoiser_output(unet: EDMPreconditionedUNet2DModel, inputs: DenoiserInputs) -> torch.Tensor:
    """D(x; σ) of the converted model."""
    return unet(inputs.x, inputs.sigma, class_labels=inputs.class_labels, augment_labels=inputs.augment_labels).sample


@torch.no_grad()
def reference_denoiser_output(snapshot: EDMSnapshot, inputs: DenoiserInputs) -> torch.Tensor:
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise)[:, :C] (Eq. 7) computed directly from the snapshot: a native
    network built from the recorded arguments holding the raw `model.*` tensors, and the recorded preconditioning."""
    network = NATIVE_BACKBONE_CLASSES[snapshot.model_class](**snapshot.model_kwargs)
    prefix = "model."
    network.load_state_dict(
        {key[len(prefix):]: value for key, value in snapshot.state_dict.items() if key.startswith(prefix)},
        strict=True,
    )
    network.eval()
    precond = make_preconditioning(snapshot.preconditioning, **snapshot.preconditioning_kwargs)
    sigma = inputs.sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)
    labels = inputs.class_labels if snapshot.label_dim else None
    raw = network(c_in * inputs.x, c_noise.flatten(), class_labels=labels, augment_labels=inputs.augment_labels)
    return c_skip * inputs.x + c_out * raw[:, : snapshot.img_channels].to(torch.float32)


def official_denoiser_output(snapshot: EDMSnapshot, inputs: DenoiserInputs) -> torch.Tensor | None:
    """D(x; σ) of the official implementation when its `training.networks` module is importable (None otherwise).

    The official class named in the snapshot is built from the importable module with the recorded constructor
    arguments and given the snapshot's tensors (`load_state_dict(strict=True)`); the source code embedded in the
    pickle is not used.
    """
    try:
        importlib.import_module("torch_utils")
        networks = importlib.import_module("training.networks")
    except ImportError:
        return None
    network = getattr(networks, snapshot.precond_class)(**snapshot.precond_kwargs)
    network.load_state_dict(snapshot.state_dict, strict=True)
    network.eval()
    extra = {"augment_labels": inputs.augment_labels} if snapshot.augment_dim else {}
    with torch.no_grad():
        return network(inputs.x, inputs.sigma, inputs.class_labels, **extra).to(torch.float32)


def verify_conversion(snapshot: EDMSnapshot, pipeline: EDMPipeline, output_dir: str | os.PathLike,
                      seed: int = 0) -> VerificationReport:
    """Runs the converted denoiser on random inputs and checks it.

    Checks: the outputs are finite; the folder reloaded with `EDMPipeline.from_pretrained` gives bit-identical
    outputs; they match a reference computed directly from the snapshot's raw tensors (within [`REFERENCE_RTOL`]);
    they match the official implementation when it is importable (`torch_utils` and `training.networks` on
    `sys.path`; within [`OFFICIAL_RTOL`]); and a 2-step sampling run of the reloaded pipeline gives finite images.

    Args:
        snapshot (`EDMSnapshot`): the snapshot read from the pickle.
        pipeline (`EDMPipeline`): the converted pipeline.
        output_dir (`str` or `os.PathLike`): where it was saved.
        seed (`int`, defaults to 0): seed of the random inputs.
    """
    report = VerificationReport()
    unet = pipeline.unet.eval()
    inputs = random_denoiser_inputs(snapshot, unet, seed=seed)
    sigmas = ", ".join(f"{s:.4g}" for s in inputs.sigma.tolist())
    converted = converted_denoiser_output(unet, inputs)
    report.add(bool(torch.isfinite(converted).all()), f"converted denoiser gives finite D(x; σ) at σ = {sigmas}")

    bars_enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # the report is the output: no loading or sampling bars
    try:
        reloaded_pipeline = EDMPipeline.from_pretrained(output_dir)
        reloaded_pipeline.set_progress_bar_config(disable=True)
    finally:
        if bars_enabled:
            diffusers_logging.enable_progress_bar()
    reloaded = converted_denoiser_output(reloaded_pipeline.unet.eval(), inputs)
    report.add(torch.allclose(reloaded, converted, rtol=0.0, atol=0.0, equal_nan=True),
               "the saved folder, reloaded with from_pretrained, gives identical D")

    scale = max(1.0, converted.abs().max().item())
    reference = reference_denoiser_output(snapshot, inputs)
    difference = (converted - reference).abs().max().item()
    report.add(difference <= REFERENCE_RTOL * scale,
               f"matches D computed from the raw state_dict: max |diff| = {difference:.3g}")

    official = official_denoiser_output(snapshot, inputs)
    if official is None:
        report.note("official code not importable (torch_utils / training.networks not on sys.path): skipped the"
                    " comparison with the original network")
    else:
        difference = (converted - official).abs().max().item()
        tolerance = OFFICIAL_RTOL[snapshot.preconditioning] * max(1.0, official.abs().max().item())
        report.add(difference <= tolerance,
                   f"matches the official {snapshot.precond_class}: max |diff| = {difference:.3g} (tolerance"
                   f" {tolerance:.3g})")

    images = reloaded_pipeline(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                               output_type="np").images
    report.add(bool(torch.isfinite(torch.as_tensor(images)).all()), "a 2-step sampling run gives finite images")
    return report
