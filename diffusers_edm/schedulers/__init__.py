# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Schedulers: EDM's sampler (Algorithm 2), the design-space sampler of its ablations, and the noise-level schedule."""

import diffusers

from .scheduling_edm_ablation import EDMAblationScheduler, EDMAblationSchedulerOutput
from .scheduling_edm_heun import EDMHeunScheduler, EDMHeunSchedulerOutput

EDM_SCHEDULERS = (EDMHeunScheduler, EDMAblationScheduler)


def _register_with_diffusers() -> None:
    """Makes diffusers treat EDM's schedulers as it treats its own, which is what a plugin's schedulers need and
    diffusers offers no API for: `X.from_config(config)` drops the settings of a scheduler it knows (by name in its
    namespace, or as a compatible of X) silently, and warns about each of them otherwise. So the documented swaps,
    `pipe.scheduler = EDMEulerScheduler.from_config(pipe.scheduler.config)` and on to the next one, are quiet, and
    `compatibles` lists every scheduler `EDMPipeline` runs. Nothing else reads these names."""
    names = [scheduler.__name__ for scheduler in EDM_SCHEDULERS]
    for scheduler in EDM_SCHEDULERS:
        if not hasattr(diffusers, scheduler.__name__):
            setattr(diffusers, scheduler.__name__, scheduler)
    for name in EDMHeunScheduler._compatibles:
        compatible = getattr(diffusers, name)
        if compatible not in EDM_SCHEDULERS:
            missing = [name for name in names if name not in compatible._compatibles]
            compatible._compatibles = [*compatible._compatibles, *missing]


_register_with_diffusers()

__all__ = ["EDMAblationScheduler", "EDMAblationSchedulerOutput", "EDMHeunScheduler", "EDMHeunSchedulerOutput"]
