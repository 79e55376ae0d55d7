# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Sampler tuning: the searched settings and budgets (`space`), scoring settings by a Fréchet distance (`scoring`),
the Optuna study per budget (`study`) and its outputs (`report`). `python -m diffusers_edm.tune_sampler` is its
command line."""

from .scoring import SettingsScorer
from .space import FAMILIES, SamplerSettings, SearchContext, SearchRanges, families_for_budget, steps_for_budget

__all__ = ["FAMILIES", "SamplerSettings", "SearchContext", "SearchRanges", "SettingsScorer", "families_for_budget",
           "steps_for_budget"]
