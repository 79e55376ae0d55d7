# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Converts an official EDM snapshot pickle (NVlabs/edm, Karras et al. 2022) into a saved `EDMPipeline` folder,
without executing the code embedded in the pickle.

The folder holds the EMA weights as safetensors (`unet/`), the model config (native DDPM++/NCSN++/ADM backbone and
the snapshot's preconditioning), an `EDMHeunScheduler` config with the paper's churn settings for the dataset,
`sampler_settings.json` with the recommended number of steps (which is not a scheduler setting; `python -m
diffusers_edm.generate` reads it) and a model card (`README.md`, license CC BY-NC-SA 4.0 like the official weights).
The presets are those of `diffusers_edm.sampler_presets`, shared with the generation CLI.

The folder is written under a temporary name next to the target and renamed into place only once it is complete (and,
with `verify=True`, verified), so a failed conversion leaves nothing behind. An existing non-empty folder is
replaced, as a whole, only with `overwrite=True`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import VerificationFailedError
from ..folders import check_output_dir, move_into_place, staging_folder
from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..pipelines.pipeline_edm import EDMPipeline
from ..preconditioning import iddpm_sigma_table
from ..sampler_presets import SAMPLER_SETTINGS_FILE, EDM2Preset, SamplerPreset, write_sampler_settings
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .edm2_convert import (
    check_guide_fits,
    edm2_pipeline,
    edm2_sampler_settings,
    load_vae,
    select_edm2_preset,
    verify_edm2_conversion,
)
from .edm2_model_card import write_edm2_model_card
from .edm2_snapshot import EDM2Snapshot, edm2_snapshot_from_contents, is_edm2_pickle
from .edm_snapshot import EDMSnapshot, edm_snapshot_from_contents
from .model_card import write_conversion_model_card
from .preset_selection import select_sampler_preset
from .safe_unpickler import load_snapshot_pickle
from .verify import VerificationReport, verify_conversion

logger = logging.getLogger(__name__)

IDDPM_ROUNDING_TOLERANCE = 1e-5
"""Relative difference between a snapshot's iDDPM levels and the recomputed ones up to which they differ only by the
float32 rounding of the processor that computed them (about 1e-7 is seen between CPUs); larger differences are
reported, and the snapshot's levels are used either way."""


@dataclass
class ConversionResult:
    """What [`convert_edm_checkpoint`] produced.

    Attributes:
        pipeline (`EDMPipeline`): the converted pipeline (also saved to `output_dir`).
        snapshot (`EDMSnapshot` or `EDM2Snapshot`): the network as read from the pickle.
        preset (`SamplerPreset` or `EDM2Preset`): the recommended sampler settings written to the folder (for an
            EDM2 model, the official generator's preset the files belong to; `None` when none does).
        output_dir (`Path`): the pipeline folder.
        verification (`VerificationReport`, *optional*): the checks run with `verify=True`.
        guide (`EDM2Snapshot`, *optional*): the guide network of an EDM2 model.
    """

    pipeline: EDMPipeline
    snapshot: EDMSnapshot | EDM2Snapshot
    preset: SamplerPreset | EDM2Preset | None
    output_dir: Path
    verification: VerificationReport | None = None
    guide: EDM2Snapshot | None = None


def unet_config_from_snapshot(snapshot: EDMSnapshot) -> dict:
    """Constructor arguments of [`EDMPreconditionedUNet2DModel`] for the snapshot's network: its image size,
    channels and label/augment sizes at the top level, the remaining network arguments in `backbone_config`, and the
    preconditioning with its parameters (σ_data at the top level for EDM; for iDDPM, the snapshot's own noise levels
    `u` when they differ from the recomputed table, see [`iddpm_levels`])."""
    precond_kwargs = snapshot.preconditioning_kwargs
    sigma_data = precond_kwargs.pop("sigma_data", 0.5) if snapshot.preconditioning == "edm" else 0.5
    if snapshot.preconditioning == "iddpm":
        levels = iddpm_levels(snapshot)
        if levels is not None:
            precond_kwargs["levels"] = levels
    return dict(
        sample_size=snapshot.img_resolution,
        in_channels=snapshot.img_channels,
        out_channels=snapshot.out_channels,
        num_class_labels=snapshot.label_dim,
        augment_dim=snapshot.augment_dim,
        backbone_type=snapshot.backbone_type,
        backbone_config=snapshot.backbone_config,
        preconditioning=snapshot.preconditioning,
        preconditioning_config=precond_kwargs or None,
        sigma_data=sigma_data,
    )


def iddpm_levels(snapshot: EDMSnapshot) -> list[float] | None:
    """The iDDPM snapshot's own noise levels u_0 … u_M (its `u` buffer) when they differ from the table recomputed
    from C_1, C_2, M, else `None` (the recomputed table is the same).

    The official code computes `u` in float32 on the machine that built the network, so a snapshot's table can differ
    from the recomputed one in the last bits; the snapshot's table is the network's truth, and the converted model
    samples at exactly its levels. A difference beyond rounding ([`IDDPM_ROUNDING_TOLERANCE`]) is logged.

    Raises:
        ValueError: the snapshot lacks `u`, or it is not a table of M + 1 finite, decreasing levels ending at 0.
    """
    stored = snapshot.state_dict.get("u")
    parameters = snapshot.precond_parameters
    if stored is None:
        raise ValueError("The iDDPMPrecond snapshot lacks its noise-level table 'u'.")
    M = int(parameters.get("M", 1000))
    stored = stored.to(torch.float32)
    if stored.shape != (M + 1,) or not bool(torch.isfinite(stored).all()) or float(stored[-1]) != 0:
        raise ValueError(f"The snapshot's iDDPM table 'u' must hold M + 1 = {M + 1} finite levels ending at 0, got"
                         f" shape {tuple(stored.shape)}.")
    if not bool((stored[1:] < stored[:-1]).all()):
        raise ValueError("The snapshot's iDDPM table 'u' is not strictly decreasing; the pickle is corrupt.")
    recomputed = iddpm_sigma_table(M, parameters.get("C_1", 0.001), parameters.get("C_2", 0.008), torch.float32)
    if torch.equal(stored, recomputed):
        return None
    difference = ((stored[:-1] - recomputed[:-1]).abs() / recomputed[:-1]).max().item()
    if difference > IDDPM_ROUNDING_TOLERANCE:
        logger.warning("The snapshot's iDDPM levels differ from those recomputed from %s by up to %.2g (relative),"
                       " more than float32 rounding; the converted model samples at the snapshot's levels.",
                       parameters, difference)
    return stored.tolist()


def unet_from_snapshot(snapshot: EDMSnapshot) -> EDMPreconditionedUNet2DModel:
    """The converted denoiser holding the snapshot's weights (`load_state_dict(strict=True)`), in eval mode.

    The official keys `model.<name>` become `backbone.<name>`; iDDPM's `u` table goes into the model's config (see
    [`iddpm_levels`]).

    Raises:
        ValueError: a tensor the network needs is missing from the snapshot, the snapshot holds unexpected tensors or
            tensors of the wrong shape, or iDDPM's `u` is not a valid table.
    """
    model = EDMPreconditionedUNet2DModel(**unet_config_from_snapshot(snapshot))
    official_prefix, prefix = "model.", "backbone."
    weights = {}
    for key, tensor in snapshot.state_dict.items():
        if key.startswith(official_prefix):
            weights[prefix + key[len(official_prefix):]] = tensor
        elif not (key == "u" and snapshot.preconditioning == "iddpm"):
            raise ValueError(f"The snapshot holds the unexpected tensor {key!r}; it is not an EDM network.")
    expected = model.state_dict()
    missing = [official_prefix + key[len(prefix):] for key in expected if key not in weights]
    if missing:
        raise ValueError(
            f"The snapshot lacks {len(missing)} tensor(s) its {snapshot.model_class} needs, e.g. {missing[:5]}; the"
            " pickle is incomplete or its recorded constructor arguments do not match its weights."
        )
    for key, tensor in weights.items():
        if key not in expected:
            raise ValueError(
                f"The snapshot holds {official_prefix + key[len(prefix):]!r}, which the {snapshot.model_class} built"
                " from its recorded arguments does not have."
            )
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{official_prefix + key[len(prefix):]!r} has shape {tuple(tensor.shape)} in the snapshot but"
                f" {tuple(expected[key].shape)} in the network built from its recorded arguments."
            )
    model.load_state_dict(weights, strict=True)
    return model.eval()


def pipeline_from_snapshot(snapshot: EDMSnapshot, preset: SamplerPreset) -> EDMPipeline:
    """An [`EDMPipeline`] with the converted denoiser and an [`EDMHeunScheduler`] holding the preset's
    [`SamplerPreset.scheduler_settings`]: the churn settings (S_churn, S_tmin, S_tmax, S_noise of Algorithm 2) and
    the paper's σ ∈ [0.002, 80], ρ = 7, Heun solver. The σ range is narrowed to the one an `EDMPrecond` records, as
    the official sampler does; other networks' ranges are applied by the pipeline."""
    unet = unet_from_snapshot(snapshot)
    settings = preset.scheduler_settings()
    if snapshot.precond_class == "EDMPrecond":  # the official sampler clamps its range to the network's
        network_min, network_max = snapshot.edm_sigma_range
        sigma_min, sigma_max = max(settings["sigma_min"], network_min), min(settings["sigma_max"], network_max)
        if not sigma_min < sigma_max:
            raise ValueError(
                f"The network's recorded σ range [{network_min}, {network_max}] leaves no room for the sampler's"
                f" [{settings['sigma_min']}, {settings['sigma_max']}]."
            )
        settings.update(sigma_min=sigma_min, sigma_max=sigma_max)
    scheduler = EDMHeunScheduler(sigma_data=unet.config.sigma_data, **settings)
    return EDMPipeline(unet=unet, scheduler=scheduler)


def convert_edm_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    preset: str | None = None,
    verify: bool = False,
    overwrite: bool = False,
    guide: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
) -> ConversionResult:
    """Converts an official EDM or EDM2 pickle into a saved [`EDMPipeline`] folder, never executing code from it.

    The folder is written under a temporary name next to `output_dir` and renamed into place once it is complete (and
    verified, with `verify=True`); on any error the temporary folder is removed and `output_dir` is left as it was.

    Args:
        checkpoint_path (`str` or `os.PathLike`): the snapshot `.pkl` (e.g. `edm-cifar10-32x32-cond-vp.pkl`, or a
            `network-snapshot-*.pkl` of the official training loop).
        output_dir (`str` or `os.PathLike`): folder to write; it must not exist or be empty unless `overwrite`.
        preset (`str`, *optional*): sampler preset from [`SAMPLER_PRESETS`]; inferred from the file name, resolution
            and label count when omitted.
        verify (`bool`, defaults to `False`): check the saved pipeline (see [`verify_conversion`]) before it is moved
            into place.
        overwrite (`bool`, defaults to `False`): replace an existing non-empty `output_dir` as a whole (only after the
            new folder is complete; never a folder holding the snapshot or the current directory).
        guide (`str` or `os.PathLike`, *optional*): an EDM2 guide pickle (autoguidance: a smaller, shorter-trained
            model; classifier-free guidance: the unconditional XS model), stored as the pipeline's `guide_unet`.
        vae (`str` or `os.PathLike`, *optional*): the VAE of an EDM2 latent model (a Hub id or a local
            `AutoencoderKL` folder) instead of the one its pickle records (for machines without internet).

    Returns:
        [`ConversionResult`]: the pipeline, the snapshot, the preset and the verification report.

    Raises:
        UnsafeCheckpointError: the pickle references code that an EDM snapshot never needs, or a tensor that does not
            fit its storage.
        FileNotFoundError: `checkpoint_path` does not exist.
        OutputFolderError: `output_dir` is a file or a non-empty folder (without `overwrite`), or the disk refused the
            write (full, read-only, permission denied).
        VerificationFailedError: `verify=True` and a check failed.
        ValueError: the file is not an EDM snapshot, or its network cannot be converted.
    """
    checkpoint_path, output_dir = Path(checkpoint_path), Path(output_dir)
    kept = [(checkpoint_path, "the snapshot")] + ([(Path(guide), "the guide")] if guide is not None else [])
    check_output_dir(output_dir, overwrite, kept=kept)
    contents = load_snapshot_pickle(checkpoint_path)
    if is_edm2_pickle(contents):
        return _convert_edm2(edm2_snapshot_from_contents(contents, os.fspath(checkpoint_path)), output_dir, preset,
                             verify, guide, vae)
    if guide is not None or vae is not None:
        raise ValueError(f"{checkpoint_path.name} is an EDM snapshot; --guide and --vae apply to EDM2 models only.")
    snapshot = edm_snapshot_from_contents(contents, os.fspath(checkpoint_path))
    sampler_preset = select_sampler_preset(snapshot, checkpoint_path, preset)
    pipeline = pipeline_from_snapshot(snapshot, sampler_preset)
    result = ConversionResult(pipeline=pipeline, snapshot=snapshot, preset=sampler_preset, output_dir=output_dir)
    source_sha256 = _sha256(checkpoint_path)

    with staging_folder(output_dir) as staging:
        pipeline.save_pretrained(staging)
        write_sampler_settings(staging, sampler_preset, pipeline.scheduler.config)
        write_conversion_model_card(
            staging,
            snapshot=snapshot,
            preset=sampler_preset,
            source_name=checkpoint_path.name,
            source_sha256=source_sha256,
            num_parameters=sum(p.numel() for p in pipeline.unet.parameters()),
        )
        if verify:
            result.verification = verify_conversion(snapshot, pipeline, staging)
            if not result.verification.passed:
                failed = sum(line.startswith("[FAIL]") for line in result.verification.lines)
                raise VerificationFailedError(
                    f"verification failed ({failed} check(s) marked FAIL); nothing was written to {output_dir}.",
                    result.verification,
                )
        move_into_place(staging, output_dir)
    return result


def _convert_edm2(snapshot: EDM2Snapshot, output_dir: Path, preset: str | None, verify: bool,
                  guide: str | os.PathLike | None, vae: str | os.PathLike | None) -> ConversionResult:
    """The EDM2 branch of [`convert_edm_checkpoint`]."""
    guide_snapshot = None
    if guide is not None:
        contents = load_snapshot_pickle(guide)
        if not is_edm2_pickle(contents):
            raise ValueError(f"the guide {Path(guide).name} is not an EDM2 model pickle; pass an EDM2 guide network.")
        guide_snapshot = edm2_snapshot_from_contents(contents, os.fspath(guide))
        check_guide_fits(snapshot, guide_snapshot)
    edm2_preset = select_edm2_preset(snapshot, guide_snapshot, preset)
    pipeline = edm2_pipeline(snapshot, guide_snapshot, load_vae(snapshot, vae), edm2_preset)
    result = ConversionResult(pipeline=pipeline, snapshot=snapshot, preset=edm2_preset, output_dir=output_dir,
                              guide=guide_snapshot)
    with staging_folder(output_dir) as staging:
        pipeline.save_pretrained(staging)
        (staging / SAMPLER_SETTINGS_FILE).write_text(json.dumps(edm2_sampler_settings(edm2_preset), indent=2) + "\n",
                                                     encoding="utf-8")
        write_edm2_model_card(staging, snapshot=snapshot, guide=guide_snapshot, preset=edm2_preset,
                              source_sha256=_sha256(Path(snapshot.name)),
                              num_parameters=sum(p.numel() for p in pipeline.unet.parameters()))
        if verify:
            result.verification = verify_edm2_conversion(snapshot, pipeline, staging)
            if not result.verification.passed:
                raise VerificationFailedError(f"verification failed; nothing was written to {output_dir}.",
                                              result.verification)
        move_into_place(staging, output_dir)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
