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


# --- EDM2 (Karras et al. 2024) ---------------------------------------------------------------------------------------

EDM2_NUM_STEPS = 32
"""Sampler steps of EDM2's generator (63 network evaluations; Heun, σ 0.002–80, ρ = 7, no churn)."""

EDM2_SCHEDULE: dict[str, Any] = {**PAPER_SCHEDULE, "s_churn": 0.0, "reference_sampler": "edm2"}
"""The scheduler settings of EDM2's generator: EDM's deterministic Heun sampler on the paper's schedule, with a float32
state ([`EDMHeunScheduler`]'s `reference_sampler="edm2"`)."""

EDM2_MODEL_ROOT = "https://nvlabs-fi-cdn.nvidia.com/edm2/posthoc-reconstructions"
"""Where NVIDIA publishes the EDM2 models (post-hoc EMA reconstructions, one `.pkl` per model and EMA length)."""


@dataclass(frozen=True)
class EDM2Preset:
    """A preset of EDM2's generator (`generate_images.py --preset`): the main network, the guide and the guidance
    weight, and the result the papers report for it.

    Attributes:
        name (`str`): e.g. "edm2-img512-xxl-autog-fid".
        net (`str`): file name of the main network (under [`EDM2_MODEL_ROOT`]).
        guide (`str`, *optional*): file name of the guide (an unconditional XS model for classifier-free guidance,
            a smaller or shorter-trained one for autoguidance); `None` without guidance.
        guidance (`float`): the guidance weight w.
        metric (`str`): "fid" or "fd_dinov2".
        value (`float`): the reported result (50,000 images).
    """

    name: str
    net: str
    guide: str | None
    guidance: float
    metric: str
    value: float

    @property
    def resolution(self) -> int:
        """Image resolution of the preset's models (512 or 64)."""
        return 512 if "-img512-" in self.name else 64

    @property
    def num_inference_steps(self) -> int:
        """Sampler steps N of the generator ([`EDM2_NUM_STEPS`])."""
        return EDM2_NUM_STEPS

    @property
    def num_model_evaluations(self) -> int:
        """Evaluations of the main network per image: 2N − 1 (the guide's as many again, when there is one)."""
        return 2 * EDM2_NUM_STEPS - 1

    @property
    def s_churn(self) -> float:
        """EDM2's generator is deterministic."""
        return 0.0

    def scheduler_settings(self) -> dict[str, Any]:
        """The [`EDMHeunScheduler`] config values of the generator ([`EDM2_SCHEDULE`])."""
        return dict(EDM2_SCHEDULE)


def _edm2_presets() -> dict[str, EDM2Preset]:
    """The official generator's presets: (net σ_rel, guide file, guidance, result) per model size and metric."""
    steps = {"xs": "2147483", "s": "2147483", "m": "2147483", "l": "1879048", "xl": "1342177", "xxl": "0939524"}
    unguided = {  # size: (σ_rel for FID, FID, σ_rel for FD-DINOv2, FD-DINOv2)
        "xs": ("0.135", 3.53, "0.200", 103.39), "s": ("0.130", 2.56, "0.190", 68.64),
        "m": ("0.100", 2.25, "0.155", 58.44), "l": ("0.085", 2.06, "0.155", 52.25),
        "xl": ("0.085", 1.96, "0.155", 45.96), "xxl": ("0.070", 1.91, "0.150", 42.84),
    }
    cfg = {  # size: (σ_rel, guidance, FID), (σ_rel, guidance, FD-DINOv2); the guide is the unconditional XS model
        "xs": (("0.045", 1.40, 2.91), ("0.150", 1.70, 79.94)), "s": (("0.025", 1.40, 2.23), ("0.085", 1.90, 52.32)),
        "m": (("0.030", 1.20, 2.01), ("0.015", 2.00, 41.98)), "l": (("0.015", 1.20, 1.88), ("0.035", 1.70, 38.20)),
        "xl": (("0.020", 1.20, 1.85), ("0.030", 1.70, 35.67)), "xxl": (("0.015", 1.20, 1.81), ("0.015", 1.70, 33.09)),
    }
    presets = []
    for size, (fid_std, fid, dino_std, dino) in unguided.items():
        net = f"edm2-img512-{size}-{steps[size]}"
        presets += [EDM2Preset(f"edm2-img512-{size}-fid", f"{net}-{fid_std}.pkl", None, 1.0, "fid", fid),
                    EDM2Preset(f"edm2-img512-{size}-dino", f"{net}-{dino_std}.pkl", None, 1.0, "fd_dinov2", dino)]
    for size, ((fid_std, fid_w, fid), (dino_std, dino_w, dino)) in cfg.items():
        net = f"edm2-img512-{size}-{steps[size]}"
        presets += [
            EDM2Preset(f"edm2-img512-{size}-guid-fid", f"{net}-{fid_std}.pkl",
                       f"edm2-img512-xs-uncond-2147483-{fid_std}.pkl", fid_w, "fid", fid),
            EDM2Preset(f"edm2-img512-{size}-guid-dino", f"{net}-{dino_std}.pkl",
                       f"edm2-img512-xs-uncond-2147483-{dino_std}.pkl", dino_w, "fd_dinov2", dino),
        ]
    presets += [
        EDM2Preset("edm2-img64-s-fid", "edm2-img64-s-1073741-0.075.pkl", None, 1.0, "fid", 1.58),
        EDM2Preset("edm2-img64-m-fid", "edm2-img64-m-2147483-0.060.pkl", None, 1.0, "fid", 1.43),
        EDM2Preset("edm2-img64-l-fid", "edm2-img64-l-1073741-0.040.pkl", None, 1.0, "fid", 1.33),
        EDM2Preset("edm2-img64-xl-fid", "edm2-img64-xl-0671088-0.040.pkl", None, 1.0, "fid", 1.33),
        # Autoguidance (Karras et al. 2024b): the guide is a smaller, shorter-trained model of the same data.
        EDM2Preset("edm2-img512-s-autog-fid", "edm2-img512-s-2147483-0.070.pkl", "edm2-img512-xs-0134217-0.125.pkl",
                   2.10, "fid", 1.34),
        EDM2Preset("edm2-img512-s-autog-dino", "edm2-img512-s-2147483-0.120.pkl", "edm2-img512-xs-0134217-0.165.pkl",
                   2.45, "fd_dinov2", 36.67),
        EDM2Preset("edm2-img512-xxl-autog-fid", "edm2-img512-xxl-0939524-0.075.pkl",
                   "edm2-img512-m-0268435-0.155.pkl", 2.05, "fid", 1.25),
        EDM2Preset("edm2-img512-xxl-autog-dino", "edm2-img512-xxl-0939524-0.130.pkl",
                   "edm2-img512-m-0268435-0.205.pkl", 2.30, "fd_dinov2", 24.18),
        EDM2Preset("edm2-img512-s-uncond-autog-fid", "edm2-img512-s-uncond-2147483-0.070.pkl",
                   "edm2-img512-xs-uncond-0134217-0.110.pkl", 2.85, "fid", 3.86),
        EDM2Preset("edm2-img512-s-uncond-autog-dino", "edm2-img512-s-uncond-2147483-0.090.pkl",
                   "edm2-img512-xs-uncond-0134217-0.125.pkl", 2.90, "fd_dinov2", 90.39),
        EDM2Preset("edm2-img64-s-autog-fid", "edm2-img64-s-1073741-0.045.pkl", "edm2-img64-xs-0134217-0.110.pkl",
                   1.70, "fid", 1.01),
        EDM2Preset("edm2-img64-s-autog-dino", "edm2-img64-s-1073741-0.105.pkl", "edm2-img64-xs-0134217-0.175.pkl",
                   2.20, "fd_dinov2", 31.85),
    ]
    return {preset.name: preset for preset in presets}


EDM2_PRESETS: dict[str, EDM2Preset] = _edm2_presets()
"""Every preset of EDM2's official generator by name (the values its `generate_images.py` lists)."""


def get_any_preset(name: str) -> SamplerPreset | EDM2Preset:
    """The EDM preset ([`SAMPLER_PRESETS`]) or EDM2 generator preset ([`EDM2_PRESETS`]) called `name`.

    Raises:
        ValueError: no preset has that name.
    """
    if name in EDM2_PRESETS:
        return EDM2_PRESETS[name]
    return get_sampler_preset(name)


def find_edm2_preset(net: str, guide: str | None) -> EDM2Preset | None:
    """The preset whose main network (and guide) have these file names, preferring FID presets; `None` if none."""
    matches = [p for p in EDM2_PRESETS.values()
               if p.net == os.path.basename(net) and (p.guide or None) == (os.path.basename(guide) if guide else None)]
    return min(matches, key=lambda p: p.metric != "fid") if matches else None
