# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reading official EDM snapshot pickles safely and turning them into diffusers-edm pipelines (see
`diffusers_edm.convert_edm_checkpoint`)."""

from .edm_snapshot import EDMSnapshot, read_edm_snapshot
from .safe_unpickler import UnsafeCheckpointError, load_snapshot_pickle
from .sampler_presets import SAMPLER_PRESETS, SamplerPreset, select_sampler_preset

__all__ = [
    "SAMPLER_PRESETS",
    "EDMSnapshot",
    "SamplerPreset",
    "UnsafeCheckpointError",
    "load_snapshot_pickle",
    "read_edm_snapshot",
    "select_sampler_preset",
]
