# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Pipelines: image generation with EDM ([`EDMPipeline`], from prompts [`EDMTextToImagePipeline`]), the scheduler
families it runs, its fast paths and its output conversion."""

from .pipeline_edm import EDMPipeline
from .pipeline_edm_text_to_image import EDMTextToImagePipeline
from .scheduler_families import SCHEDULERS_BY_NAME, SUPPORTED_SCHEDULERS

__all__ = ["SCHEDULERS_BY_NAME", "SUPPORTED_SCHEDULERS", "EDMPipeline", "EDMTextToImagePipeline"]
