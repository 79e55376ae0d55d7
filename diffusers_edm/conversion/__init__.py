# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reading official EDM snapshot pickles safely and turning them into diffusers-edm pipelines (see
`diffusers_edm.convert_edm_checkpoint`)."""

from .edm_snapshot import EDMSnapshot, read_edm_snapshot
from .preset_selection import select_sampler_preset
from .safe_unpickler import UnsafeCheckpointError, load_snapshot_pickle

__all__ = [
    "EDMSnapshot",
    "UnsafeCheckpointError",
    "load_snapshot_pickle",
    "read_edm_snapshot",
    "select_sampler_preset",
]
