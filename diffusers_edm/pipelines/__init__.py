"""Pipelines: image generation with EDM."""

from .pipeline_edm import EDMPipeline

__all__ = ["EDMPipeline"]
