# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""What a resumed run may change: the settings that define the model, its loss, its data and the meaning of a step
must equal the checkpoint's (a difference is an error naming both values, before anything is loaded); the others (the
learning rate, the duration, logging, ...) may change, and each change is logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import CheckpointError
from .checkpoint import CONFIG, MANIFEST, find_checkpoint

logger = logging.getLogger(__name__)

FIXED_SETTINGS = (
    "arch", "model_channels", "channel_mult", "layers_per_block", "attn_resolutions", "dropout", "label_dropout",
    "model_config", "pretrained_model_name_or_path", "precond", "sigma_data", "p_mean", "p_std", "augment_p",
    "augment_colors", "resolution", "center_crop", "xflip", "random_flip", "max_train_samples", "conditional",
    "label_column", "seed", "phema_stds",
)
"""Settings a resumed run must share with its checkpoint: the model (architecture, preconditioning), the loss, the
augmentation, the data's preparation and order, and the tracked post-hoc EMAs."""

UNLOGGED_SETTINGS = frozenset({"resume_from_checkpoint", "output_dir", "hub_token", "hub_token_file", "dry_run",
                               "overwrite_output_dir", "train_batch_size", "gradient_accumulation_steps",
                               "total_batch_size"})
"""Settings whose change is not worth a log line (where the run is, how it was started, secrets), or that are compared
as the images per step instead."""

LEGACY_NAMES = {"random_flip": "xflip"}
"""Settings renamed since a checkpoint may have been written: EDM's dataset x-flip was `random_flip` before it became
`xflip` (and `random_flip` took diffusers' meaning)."""


def check_resumed_settings(checkpoint: Path, current: dict, images_per_step: int) -> list[str]:
    """Compares the run's settings (`current`, the JSON form of its arguments) with those saved in `checkpoint`.

    Args:
        checkpoint (`Path`): the `checkpoint-<step>` folder.
        current (`dict`): the resumed run's settings.
        images_per_step (`int`): the resumed run's images per optimizer step (all processes, with accumulation).

    Returns:
        `list[str]`: the settings that changed and may change, as "name: old -> new" (also logged).

    Raises:
        CheckpointError: a setting of [`FIXED_SETTINGS`] or the images per step differ, naming each with both values.
    """
    saved = _saved_settings(checkpoint)
    if saved is None:  # no readable settings: the checkpoint's own verification reports it when it loads
        return []
    problems = [f"--{key} {_show(current.get(key))} (the checkpoint's: {_show(saved.get(key))})"
                for key in FIXED_SETTINGS if key in saved and saved.get(key) != current.get(key)]
    saved_batch = _saved_images_per_step(checkpoint, saved)
    if saved_batch is not None and saved_batch != images_per_step:
        problems.append(f"{images_per_step} images per step (the checkpoint's: {saved_batch}; the step count would"
                        " change meaning)")
    if problems:
        raise CheckpointError(
            f"cannot resume from {checkpoint} with other settings: {'; '.join(problems)}. Resume with the checkpoint's"
            f" settings (in {checkpoint / CONFIG}), or start a new run in another --output_dir."
        )
    changes = [f"{key}: {_show(saved[key])} -> {_show(current.get(key))}" for key in sorted(saved)
               if key not in FIXED_SETTINGS and key not in UNLOGGED_SETTINGS and saved[key] != current.get(key)]
    for change in changes:
        logger.info("Resuming with a changed setting, %s.", change)
    return changes


def resumed_arch(output_dir: str, which: str | None) -> str | None:
    """The `--arch` of the checkpoint that `--resume_from_checkpoint which` names (None: no resume, no checkpoint yet,
    or no readable settings; a missing folder is reported when the run starts), so that a run resumes with its own
    backbone when `--arch` is not given."""
    if which is None:
        return None
    try:
        checkpoint = find_checkpoint(output_dir, which)
    except CheckpointError:
        return None
    saved = _saved_settings(checkpoint) if checkpoint is not None else None
    return saved.get("arch") if saved else None


def _saved_settings(checkpoint: Path) -> dict | None:
    """The checkpoint's settings with legacy names translated; `None` when absent or unreadable."""
    try:
        saved = json.loads((checkpoint / CONFIG).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    for old, new in LEGACY_NAMES.items():
        if old in saved and new not in saved:
            saved[new] = saved.pop(old)
            saved[old] = False
    return saved


def _saved_images_per_step(checkpoint: Path, saved: dict) -> int | None:
    """Images per optimizer step of the run that wrote `checkpoint`, from its settings and process count."""
    try:
        processes = int(json.loads((checkpoint / MANIFEST).read_bytes())["num_processes"])
        return int(saved["train_batch_size"]) * int(saved.get("gradient_accumulation_steps") or 1) * processes
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _show(value: object) -> str:
    """A setting's value as the command line writes it (lists comma-separated)."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
