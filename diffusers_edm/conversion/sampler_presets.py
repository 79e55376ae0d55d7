# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The sampler settings the EDM paper and its README recommend for each released model (Karras et al. 2022)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from .edm_snapshot import EDMSnapshot


@dataclass(frozen=True)
class SamplerPreset:
    """Recommended settings of EDM's sampler (Algorithm 2) for one kind of model.

    Attributes:
        name (`str`): preset name (the `--preset` value).
        dataset (`str`): what the model was trained on.
        num_inference_steps (`int`): sampler steps N (2N − 1 network evaluations).
        s_churn (`float`), s_tmin (`float`), s_tmax (`float` or `None` for ∞), s_noise (`float`): stochasticity
            (Algorithm 2); S_churn = 0 is the deterministic sampler.
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

    def to_json_dict(self) -> dict[str, Any]:
        """The preset's fields and its number of network evaluations (2N − 1), for `sampler_settings.json`."""
        return {**asdict(self), "num_model_evaluations": 2 * self.num_inference_steps - 1}


_README = "official EDM README and example.py"
_TABLE_5 = ("paper Table 5 stochastic settings, recalled (not re-checked against the PDF); the step count is not"
            " given there: 256 steps as in the README's ImageNet setting")

SAMPLER_PRESETS: dict[str, SamplerPreset] = {
    preset.name: preset
    for preset in (
        SamplerPreset("cifar10-32x32", "CIFAR-10 32x32", 18, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("ffhq-64x64", "FFHQ 64x64", 40, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("afhqv2-64x64", "AFHQv2 64x64", 40, 0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("uncond-64x64", "FFHQ or AFHQv2 64x64 (the paper uses the same settings for both)", 40,
                      0.0, 0.0, None, 1.0, _README, False),
        SamplerPreset("imagenet-64x64", "ImageNet 64x64", 256, 40.0, 0.05, 50.0, 1.003, _README, False),
        SamplerPreset("baseline-cifar10-32x32-vp", "CIFAR-10 32x32 (VP baseline of Song et al.)", 256, 30.0, 0.01,
                      1.0, 1.007, _TABLE_5, True),
        SamplerPreset("baseline-cifar10-32x32-ve", "CIFAR-10 32x32 (VE baseline of Song et al.)", 256, 80.0, 0.05,
                      1.0, 1.007, _TABLE_5, True),
        SamplerPreset("baseline-imagenet-64x64", "ImageNet 64x64 (pretrained ADM of Dhariwal & Nichol)", 256, 80.0,
                      0.05, 50.0, 1.003, _TABLE_5, True),
        SamplerPreset("default", "unknown dataset (no paper setting applies)", 18, 0.0, 0.0, None, 1.0,
                      "EDM's deterministic sampler at the pipeline's default step count", False),
    )
}
"""All presets by name. The EDM models (`edm-*.pkl`) use the README settings; the baselines (`baseline-*.pkl`) the
recalled Table 5 settings."""

_DATASET_TOKENS = {"cifar10": "cifar10", "ffhq": "ffhq", "afhqv2": "afhqv2", "imagenet": "imagenet"}
_EDM_PRESETS = {"cifar10": "cifar10-32x32", "ffhq": "ffhq-64x64", "afhqv2": "afhqv2-64x64",
                "imagenet": "imagenet-64x64"}
_BASELINE_PRESETS = {("cifar10", "vp"): "baseline-cifar10-32x32-vp", ("cifar10", "ve"): "baseline-cifar10-32x32-ve",
                     ("imagenet", "iddpm"): "baseline-imagenet-64x64"}


def select_sampler_preset(
    snapshot: EDMSnapshot, file_name: str | os.PathLike, preset: str | None = None
) -> SamplerPreset:
    """The recommended sampler settings for a snapshot.

    The dataset is read from the file name (`edm-cifar10-32x32-cond-vp.pkl` → CIFAR-10) or, failing that, from the
    image size and label count (32×32 with 0 or 10 classes: CIFAR-10; 64×64 with 1000 classes: ImageNet; 64×64
    unconditional: FFHQ/AFHQv2). EDM-preconditioned models get the README settings, VP/VE/iDDPM baselines the
    recalled Table 5 settings; anything else gets the "default" preset.

    Args:
        snapshot (`EDMSnapshot`): the network read from the pickle.
        file_name (`str` or `os.PathLike`): the snapshot's path (only its name is used).
        preset (`str`, *optional*): a name from [`SAMPLER_PRESETS`] that overrides the inference.
    """
    if preset is not None:
        if preset not in SAMPLER_PRESETS:
            raise ValueError(f"Unknown sampler preset {preset!r}; use one of {sorted(SAMPLER_PRESETS)}.")
        return SAMPLER_PRESETS[preset]
    dataset = _dataset_from_file_name(os.path.basename(os.fspath(file_name))) or _dataset_from_shape(snapshot)
    if snapshot.preconditioning == "edm":
        return SAMPLER_PRESETS[_EDM_PRESETS.get(dataset, "uncond-64x64" if dataset == "64x64" else "default")]
    return SAMPLER_PRESETS[_BASELINE_PRESETS.get((dataset, snapshot.preconditioning), "default")]


def _dataset_from_file_name(file_name: str) -> str | None:
    tokens = re.split(r"[^a-z0-9]+", file_name.lower())
    found = {_DATASET_TOKENS[token] for token in tokens if token in _DATASET_TOKENS}
    return found.pop() if len(found) == 1 else None


def _dataset_from_shape(snapshot: EDMSnapshot) -> str | None:
    shape = (snapshot.img_resolution, snapshot.img_channels)
    if shape == (32, 3) and snapshot.label_dim in (0, 10):
        return "cifar10"
    if shape == (64, 3) and snapshot.label_dim == 1000:
        return "imagenet"
    if shape == (64, 3) and snapshot.label_dim == 0:
        return "64x64"
    return None
