# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The sampler settings the EDM paper and its official README recommend for each released model (Karras et al. 2022),
shared by the checkpoint converter (`convert_edm_checkpoint`) and the generation CLI (`generate --preset`), and the
`sampler_settings.json` file in which the converter stores them next to a pipeline."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAPER_SCHEDULE: dict[str, Any] = {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "solver": "heun"}
"""Noise range σ ∈ [0.002, 80], ρ = 7 (Eq. 5) and the 2nd-order Heun solver (Algorithm 2) that every README command
uses; all presets share them."""

SAMPLER_SETTINGS_FILE = "sampler_settings.json"
"""File in a converted pipeline folder holding its preset (see [`write_sampler_settings`]), with the recommended
`num_inference_steps` as a top-level key."""


@dataclass(frozen=True)
class SamplerPreset:
    """Recommended settings of EDM's sampler (Algorithm 2) for one kind of model.

    Attributes:
        name (`str`): the preset's name (the `--preset` value of both command lines).
        dataset (`str`): what the model was trained on.
        num_inference_steps (`int`): sampler steps N (2N − 1 network evaluations with Heun).
        s_churn (`float`), s_tmin (`float`), s_tmax (`float` or `None` for ∞), s_noise (`float`): stochasticity
            of Algorithm 2; S_churn = 0 is the deterministic sampler.
        source (`str`): where the values come from.
        recalled (`bool`): whether the values are recalled from the paper rather than taken from the official README
            and example.py; recalled values should be checked against the paper before being relied on.
    """

    name: str
    dataset: str
    num_inference_steps: int
    s_churn: float
    s_tmin: float
    s_tmax: float | None
    s_noise: float
    source: str
    recalled: bool

    @property
    def num_model_evaluations(self) -> int:
        """Network evaluations per image with the Heun solver: 2N − 1 (the last step is an Euler step)."""
        return 2 * self.num_inference_steps - 1

    def scheduler_settings(self) -> dict[str, Any]:
        """The [`EDMHeunScheduler`] config values of the preset: the paper's σ range, ρ and solver
        ([`PAPER_SCHEDULE`]) and the preset's S_churn, S_tmin, S_tmax, S_noise. The step count is not among them
        (it is an argument of the pipeline call)."""
        churn = {"s_churn": self.s_churn, "s_tmin": self.s_tmin, "s_tmax": self.s_tmax, "s_noise": self.s_noise}
        return {**PAPER_SCHEDULE, **churn}


_README = "official EDM README and example.py"
_TABLE_5 = ("paper Table 5 stochastic settings, recalled (not re-checked against the PDF); the step count is not"
            " given there: 256 steps as in the README's ImageNet setting")

SAMPLER_PRESETS: dict[str, SamplerPreset] = {
    preset.name: preset
    for preset in (
        SamplerPreset("cifar10", "CIFAR-10 32x32", 18, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("ffhq", "FFHQ 64x64", 40, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("afhqv2", "AFHQv2 64x64", 40, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("imagenet64", "ImageNet 64x64", 256, 40.0, 0.05, 50.0, 1.003, _README, False),
        SamplerPreset("uncond-64x64", "FFHQ or AFHQv2 64x64 (the paper uses the same settings for both)", 40,
                      0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("baseline-cifar10-vp", "CIFAR-10 32x32 (VP baseline of Song et al.)", 256, 30.0, 0.01, 1.0,
                      1.007, _TABLE_5, True),
        SamplerPreset("baseline-cifar10-ve", "CIFAR-10 32x32 (VE baseline of Song et al.)", 256, 80.0, 0.05, 1.0,
                      1.007, _TABLE_5, True),
        SamplerPreset("baseline-imagenet64", "ImageNet 64x64 (pretrained ADM of Dhariwal & Nichol)", 256, 80.0,
                      0.05, 50.0, 1.003, _TABLE_5, True),
        SamplerPreset("default", "unknown dataset (no paper setting applies)", 18, 0.0, 0.0, None, 1.0,
                      "EDM's deterministic sampler at the official default step count", False),
    )
}
"""All presets by name. The EDM models (`edm-*.pkl`) use the README settings (spec §1.4): CIFAR-10 18 steps
deterministic (FID 1.79), FFHQ and AFHQv2 40 steps deterministic (2.39, 1.96), ImageNet 64 256 steps with S_churn 40,
S_tmin 0.05, S_tmax 50, S_noise 1.003 (1.36). The baselines (`baseline-*.pkl`) use the recalled Table 5 settings."""


def get_sampler_preset(name: str) -> SamplerPreset:
    """The preset called `name` in [`SAMPLER_PRESETS`].

    Raises:
        ValueError: no preset has that name (the message lists the names).
    """
    if name not in SAMPLER_PRESETS:
        raise ValueError(f"Unknown sampler preset {name!r}; use one of {sorted(SAMPLER_PRESETS)}.")
    return SAMPLER_PRESETS[name]


def write_sampler_settings(
    folder: str | os.PathLike, preset: SamplerPreset, scheduler_config: Mapping[str, Any]
) -> Path:
    """Writes `folder/sampler_settings.json`: the preset's name, dataset, source and `recalled` flag, the
    `num_inference_steps` to pass to the pipeline with its `num_model_evaluations` (2N − 1), and the scheduler
    settings of [`SamplerPreset.scheduler_settings`] as saved in `scheduler_config` (which may narrow the σ range to
    the network's), all as top-level keys.

    Args:
        folder (`str` or `os.PathLike`): the saved pipeline folder.
        preset (`SamplerPreset`): the preset the pipeline's scheduler was built from.
        scheduler_config (`Mapping[str, Any]`): the saved scheduler's config.
    """
    settings = {
        "name": preset.name,
        "dataset": preset.dataset,
        "num_inference_steps": preset.num_inference_steps,
        "num_model_evaluations": preset.num_model_evaluations,
        **{key: scheduler_config[key] for key in preset.scheduler_settings()},
        "source": preset.source,
        "recalled": preset.recalled,
    }
    path = Path(folder) / SAMPLER_SETTINGS_FILE
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def read_num_inference_steps(settings_file: str | os.PathLike) -> int:
    """The recommended `num_inference_steps` stored in a `sampler_settings.json` by [`write_sampler_settings`].

    Raises:
        ValueError: the file is not a JSON object with a positive integer `num_inference_steps`.
    """
    try:
        settings = json.loads(Path(settings_file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{settings_file} is not valid JSON ({error}); delete it or rewrite it with the"
                         " converter.") from error
    steps = settings.get("num_inference_steps") if isinstance(settings, dict) else None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{settings_file} needs a positive integer 'num_inference_steps', got {steps!r}; fix the"
                         " file or pass --steps.")
    return steps
