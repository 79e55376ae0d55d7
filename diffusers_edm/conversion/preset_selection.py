# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Which of the recommended sampler presets ([`SAMPLER_PRESETS`]) fits an official EDM snapshot."""

from __future__ import annotations

import os
import re

from ..sampler_presets import SAMPLER_PRESETS, SamplerPreset, get_sampler_preset
from .edm_snapshot import EDMSnapshot

_DATASET_TOKENS = {"cifar10": "cifar10", "ffhq": "ffhq", "afhqv2": "afhqv2", "imagenet": "imagenet"}
_EDM_PRESETS = {"cifar10": "cifar10", "ffhq": "ffhq", "afhqv2": "afhqv2", "imagenet": "imagenet64",
                "64x64": "uncond-64x64"}
_BASELINE_PRESETS = {("cifar10", "vp"): "baseline-cifar10-vp", ("cifar10", "ve"): "baseline-cifar10-ve",
                     ("imagenet", "iddpm"): "baseline-imagenet64"}


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

    Raises:
        ValueError: `preset` is not a name from [`SAMPLER_PRESETS`].
    """
    if preset is not None:
        return get_sampler_preset(preset)
    dataset = _dataset_from_file_name(os.path.basename(os.fspath(file_name))) or _dataset_from_shape(snapshot)
    if snapshot.preconditioning == "edm":
        return SAMPLER_PRESETS[_EDM_PRESETS.get(dataset, "default")]
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
