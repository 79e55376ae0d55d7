# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The settings of a training run that the training code reads: architecture choices, intervals, trackers and the
batch-size arithmetic (the command line itself is `diffusers_edm.commands.train`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..errors import TrainingError

NATIVE_ARCHITECTURES = {
    "ddpmpp": ("song_unet", dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                                 channel_mult_noise=1, resample_filter=[1, 1])),
    "ncsnpp": ("song_unet", dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                                 channel_mult_noise=2, resample_filter=[1, 3, 3, 1])),
    "adm": ("dhariwal_unet", {}),
}
"""--arch choices of the paper's backbones: (backbone_type, fixed backbone_config) of EDM train.py's DDPM++, NCSN++
and ADM settings."""

ARCHITECTURES = (*NATIVE_ARCHITECTURES, "edm2", "unet_2d")
"""--arch choices: the paper's backbones, EDM2's magnitude-preserving U-Net (`edm2_unet`) and diffusers' UNet2DModel."""

LOSSES = ("edm", "edm2")
"""--loss choices: EDM's λ(σ)-weighted loss (or the VP/VE baselines' with --precond), EDM2's uncertainty-weighted
one."""

LR_SCHEDULES = ("edm", "edm2")
"""--lr_schedule choices: EDM's constant rate after a linear ramp-up, EDM2's inverse square root decay after it."""

TRACKERS = ("tensorboard", "wandb", "all", "none")
"""--report_to choices: accelerate trackers (`all` = every installed one)."""

DEFAULT_BATCH_SIZE = 64
"""Per-device batch when neither --train_batch_size nor --total_batch_size gives one."""


@dataclass(frozen=True)
class Interval:
    """How often something happens: every `value` optimizer steps, or every `value` thousand images ("kimg")."""

    value: float
    unit: str  # "steps" or "kimg"

    def due(self, step: int, cur_nimg: int, prev_nimg: int) -> bool:
        """Whether the interval elapsed with the step that took the image count from `prev_nimg` to `cur_nimg`."""
        if self.unit == "steps":
            return step % int(self.value) == 0
        period = self.value * 1000
        return int(cur_nimg // period) > int(prev_nimg // period)

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


def parse_interval(text: str) -> Interval | None:
    """Parses "500" (steps), "500steps" or "20kimg"; "0" or "none" disables."""
    cleaned = text.strip().lower()
    if cleaned in ("0", "none", "off"):
        return None
    unit = "kimg" if cleaned.endswith("kimg") else "steps"
    number = cleaned.removesuffix("kimg").removesuffix("steps")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval: use e.g. 500 (steps) or 20kimg (images)")
    if value <= 0 or (unit == "steps" and value != int(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be a positive number (whole for steps)")
    return Interval(value, unit)


def resolve_batch_sizes(args: argparse.Namespace, num_processes: int) -> None:
    """Sets `args.train_batch_size` and `args.gradient_accumulation_steps` to numbers: from --total_batch_size when
    given (EDM's --batch; the per-device batch, or with --train_batch_size the accumulation, follows), else the
    defaults. A total that does not split evenly is a TrainingError naming the numbers."""
    total, per_device, accumulation = args.total_batch_size, args.train_batch_size, args.gradient_accumulation_steps
    if total is None:
        args.train_batch_size = per_device or DEFAULT_BATCH_SIZE
        args.gradient_accumulation_steps = accumulation or 1
        return
    if per_device is None:
        accumulation = accumulation or 1
        per_device = total // (num_processes * accumulation)
    elif accumulation is None:
        accumulation = max(total // (num_processes * per_device), 1)
    if per_device * num_processes * accumulation != total:
        raise TrainingError(
            f"--total_batch_size {total} is not {num_processes} process(es) x --train_batch_size {per_device} x "
            f"--gradient_accumulation_steps {accumulation}: pass a --train_batch_size that divides "
            f"{total // num_processes if total % num_processes == 0 else total} evenly (or a total divisible by the "
            f"number of processes).")
    args.train_batch_size, args.gradient_accumulation_steps = per_device, accumulation
