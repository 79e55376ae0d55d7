# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Schedulers: EDM's sampler (Algorithm 2), the design-space sampler of its ablations, and the noise-level schedule."""

from .scheduling_edm_ablation import EDMAblationScheduler, EDMAblationSchedulerOutput
from .scheduling_edm_heun import EDMHeunScheduler, EDMHeunSchedulerOutput

__all__ = ["EDMAblationScheduler", "EDMAblationSchedulerOutput", "EDMHeunScheduler", "EDMHeunSchedulerOutput"]
