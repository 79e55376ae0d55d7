"""Schedulers: EDM's sampler (Algorithm 2) and its noise-level schedule."""

from .scheduling_edm_heun import EDMHeunScheduler, EDMHeunSchedulerOutput

__all__ = ["EDMHeunScheduler", "EDMHeunSchedulerOutput"]
