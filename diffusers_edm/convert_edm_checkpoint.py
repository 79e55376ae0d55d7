# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Converts an official EDM snapshot pickle (NVlabs/edm, Karras et al. 2022) into a saved `EDMPipeline` folder,
without executing the code embedded in the pickle.

Usage:

    python -m diffusers_edm.convert_edm_checkpoint edm-cifar10-32x32-cond-vp.pkl ./edm-cifar10-32x32-cond-vp [--verify]

The folder holds the EMA weights as safetensors (`unet/`), the model config (native DDPM++/NCSN++/ADM backbone and
the snapshot's preconditioning), an `EDMHeunScheduler` config with the paper's churn settings for the dataset,
`sampler_settings.json` with the recommended number of steps (which is not a scheduler setting; `python -m
diffusers_edm.generate` reads it) and a model card (`README.md`, license CC BY-NC-SA 4.0 like the official weights).
The presets are those of `diffusers_edm.sampler_presets`, shared with the generation CLI.

The folder is written under a temporary name next to the target and renamed into place only once it is complete (and,
with `--verify`, verified), so a failed conversion leaves nothing behind. An existing non-empty folder is replaced,
as a whole, only with `--overwrite`.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from .conversion.edm_snapshot import EDMSnapshot, read_edm_snapshot
from .conversion.model_card import write_conversion_model_card
from .conversion.preset_selection import select_sampler_preset
from .conversion.safe_unpickler import UnsafeCheckpointError
from .conversion.verify import VerificationReport, verify_conversion
from .models.unet_edm import EDMPreconditionedUNet2DModel
from .pipelines.pipeline_edm import EDMPipeline
from .sampler_presets import SAMPLER_PRESETS, SAMPLER_SETTINGS_FILE, SamplerPreset, write_sampler_settings
from .schedulers.scheduling_edm_heun import EDMHeunScheduler
from .write_errors import OUT_OF_SPACE, WRITE_ERRORS

__all__ = [
    "SAMPLER_SETTINGS_FILE",
    "ConversionResult",
    "OutputFolderError",
    "UnsafeCheckpointError",
    "VerificationFailedError",
    "convert_edm_checkpoint",
    "main",
    "pipeline_from_snapshot",
    "read_edm_snapshot",
    "unet_config_from_snapshot",
    "unet_from_snapshot",
]


class OutputFolderError(ValueError):
    """The pipeline folder cannot be written where asked (the path is a file, a non-empty folder without `overwrite`,
    or the disk refused the write); nothing was left at the target."""


class VerificationFailedError(ValueError):
    """`verify=True` found a problem; nothing was written to the target. `report` holds the checks."""

    def __init__(self, message: str, report: VerificationReport) -> None:
        super().__init__(message)
        self.report = report




@dataclass
class ConversionResult:
    """What [`convert_edm_checkpoint`] produced.

    Attributes:
        pipeline (`EDMPipeline`): the converted pipeline (also saved to `output_dir`).
        snapshot (`EDMSnapshot`): the network as read from the pickle.
        preset (`SamplerPreset`): the recommended sampler settings written to the folder.
        output_dir (`Path`): the pipeline folder.
        verification (`VerificationReport`, *optional*): the checks run with `verify=True`.
    """

    pipeline: EDMPipeline
    snapshot: EDMSnapshot
    preset: SamplerPreset
    output_dir: Path
    verification: VerificationReport | None = None


def unet_config_from_snapshot(snapshot: EDMSnapshot) -> dict:
    """Constructor arguments of [`EDMPreconditionedUNet2DModel`] for the snapshot's network: its image size,
    channels and label/augment sizes at the top level, the remaining network arguments in `backbone_config`, and the
    preconditioning with its parameters (σ_data at the top level for EDM)."""
    precond_kwargs = snapshot.preconditioning_kwargs
    sigma_data = precond_kwargs.pop("sigma_data", 0.5) if snapshot.preconditioning == "edm" else 0.5
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


def unet_from_snapshot(snapshot: EDMSnapshot) -> EDMPreconditionedUNet2DModel:
    """The converted denoiser holding the snapshot's weights (`load_state_dict(strict=True)`), in eval mode.

    The official keys `model.<name>` become `backbone.<name>`. iDDPM's `u` table is not a weight of the converted
    model (it recomputes it from C_1, C_2, M); the snapshot's copy must equal it exactly.

    Raises:
        ValueError: a tensor the network needs is missing from the snapshot, the snapshot holds unexpected tensors or
            tensors of the wrong shape, or iDDPM's `u` differs from the recomputed table.
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
    if snapshot.preconditioning == "iddpm":
        _check_iddpm_table(snapshot, model)
    return model.eval()


def _check_iddpm_table(snapshot: EDMSnapshot, model: EDMPreconditionedUNet2DModel) -> None:
    """iDDPM's discrete noise levels u_j (spec §1.2) are recomputed by the model; they must equal the snapshot's."""
    stored = snapshot.state_dict.get("u")
    if stored is None:
        raise ValueError("The iDDPMPrecond snapshot lacks its noise-level table 'u'.")
    recomputed = model.precond.u
    if stored.shape != recomputed.shape or not torch.equal(stored.to(recomputed.dtype), recomputed.cpu()):
        difference = (
            (stored.double() - recomputed.cpu().double()).abs().max().item()
            if stored.shape == recomputed.shape
            else f"shapes {tuple(stored.shape)} vs {tuple(recomputed.shape)}"
        )
        raise ValueError(
            f"The snapshot's iDDPM table 'u' differs from the one recomputed from {snapshot.precond_parameters}"
            f" (max |diff| = {difference}); the converted model would sample at other noise levels."
        )


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
) -> ConversionResult:
    """Converts an official EDM snapshot pickle into a saved [`EDMPipeline`] folder, never executing code from it.

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
            new folder is complete).

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
    _check_output_dir(output_dir, checkpoint_path, overwrite)
    snapshot = read_edm_snapshot(checkpoint_path)
    sampler_preset = select_sampler_preset(snapshot, checkpoint_path, preset)
    pipeline = pipeline_from_snapshot(snapshot, sampler_preset)
    result = ConversionResult(pipeline=pipeline, snapshot=snapshot, preset=sampler_preset, output_dir=output_dir)
    source_sha256 = _sha256(checkpoint_path)

    with _staging_folder(output_dir) as staging:
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
        _move_into_place(staging, output_dir)
    return result


def _check_output_dir(output_dir: Path, checkpoint_path: Path, overwrite: bool) -> None:
    """Refuses, before any work, an output path that is a file (or lies below one) or a symbolic link, a non-empty
    folder without `overwrite`, and with `overwrite` a folder holding the snapshot or the current directory."""
    if output_dir.is_symlink():
        raise OutputFolderError(
            f"{output_dir} is a symbolic link; pass the folder it points to ({output_dir.resolve()}) or a new folder."
        )
    existing = next((path for path in (output_dir, *output_dir.parents) if path.exists()), output_dir)
    if existing.exists() and not existing.is_dir():
        where = "" if existing == output_dir else f", so {output_dir} cannot be created"
        raise OutputFolderError(f"{existing} is a file{where}; pass a folder path for the converted pipeline.")
    if existing != output_dir or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise OutputFolderError(
            f"{output_dir} already exists and is not empty; pass --overwrite (overwrite=True) to replace it as a whole,"
            " or choose a new folder."
        )
    target = output_dir.resolve()
    for kept, what in ((checkpoint_path, "the snapshot"), (Path.cwd(), "the current directory")):
        resolved = kept.resolve()
        if resolved == target or target in resolved.parents:
            raise OutputFolderError(
                f"{output_dir} is or holds {what} ({kept}), which --overwrite would delete; choose another output"
                " folder."
            )


@contextmanager
def _staging_folder(output_dir: Path) -> Iterator[Path]:
    """A new temporary folder next to `output_dir` (on the same file system, so that it can be renamed into place),
    removed when the block fails. A full, read-only or forbidden disk becomes an [`OutputFolderError`]."""
    staging = None
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
        yield staging
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        code = _write_errno(error)
        if code in WRITE_ERRORS:
            advice = ("free some space or choose a folder on another disk" if code in OUT_OF_SPACE
                      else "choose a folder you can write to")
            raise OutputFolderError(f"cannot write {output_dir}: {WRITE_ERRORS[code]}; {advice}"
                                    f" ({errno.errorcode[code]}); nothing was left there.") from error
        raise


def _write_errno(error: BaseException) -> int | None:
    """The errno of a failed write: an OSError's, or the one safetensors' writer (whose errors are not OSErrors) puts
    in its message, e.g. "I/O error: No space left on device (os error 28)"."""
    if isinstance(error, OSError):
        return error.errno
    match = re.search(r"\(os error (\d+)\)", str(error)) if isinstance(error, SafetensorError) else None
    return int(match.group(1)) if match else None


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Renames the complete `staging` folder to `output_dir`. An existing `output_dir` ([`_check_output_dir`] allowed
    it) is first renamed aside and deleted only once the new folder is in place, so no old file is mixed in."""
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    previous = staging.with_name(staging.name.replace(".partial-", ".previous-", 1))
    os.replace(output_dir, previous)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(previous, output_dir)
        raise
    shutil.rmtree(previous)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(result: ConversionResult) -> str:
    snapshot, preset = result.snapshot, result.preset
    churn = "deterministic" if preset.s_churn == 0 else (
        f"S_churn={preset.s_churn}, S_tmin={preset.s_tmin}, S_tmax={preset.s_tmax}, S_noise={preset.s_noise}"
    )
    recalled = " (recalled values: verify against the paper)" if preset.recalled else ""
    return (
        f"Converted {snapshot.precond_class} + {snapshot.model_class} ({snapshot.img_resolution}x"
        f"{snapshot.img_resolution}, {snapshot.img_channels} channels, {snapshot.label_dim} classes, augment_dim"
        f" {snapshot.augment_dim}, {len(snapshot.state_dict)} tensors) to {result.output_dir}\n"
        f"Sampler preset '{preset.name}' ({preset.dataset}): {preset.num_inference_steps} steps, {churn}{recalled};"
        f" the step count is stored in {SAMPLER_SETTINGS_FILE}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when `--verify` finds a problem, 2 for bad input, which is
    reported as one `error: ...` line on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_edm.convert_edm_checkpoint",
        description="Convert an official EDM snapshot pickle into a diffusers-edm EDMPipeline folder without"
        " executing code from the pickle.",
    )
    parser.add_argument("checkpoint", help="official snapshot .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl)")
    parser.add_argument("output_dir", help="folder to write the pipeline to (new or empty unless --overwrite)")
    parser.add_argument("--preset", choices=sorted(SAMPLER_PRESETS), default=None,
                        help="recommended sampler settings to store, named as for `generate --preset` (default:"
                        " inferred from the file name and shape)")
    parser.add_argument("--verify", action="store_true",
                        help="run the converted denoiser on random inputs and check it (and the reloaded folder) before"
                        " the folder is moved into place")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output folder as a whole, once the new one is complete")
    args = parser.parse_args(argv)
    try:
        result = convert_edm_checkpoint(args.checkpoint, args.output_dir, preset=args.preset, verify=args.verify,
                                        overwrite=args.overwrite)
    except VerificationFailedError as error:
        print(error.report.summary())
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:  # UnsafeCheckpointError and OutputFolderError are ValueErrors
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(_describe(result))
    if result.verification is not None:
        print(result.verification.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
