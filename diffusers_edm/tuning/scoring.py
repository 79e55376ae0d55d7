# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Scoring sampler settings by the Fréchet distance of their images, generated and scored in memory as `fid calc
--model` does (the work of each image set split over the processes of an `accelerate` launch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from accelerate import PartialState

from ..evaluation.detectors import FeatureDetector
from ..evaluation.features import compute_statistics
from ..evaluation.sources import generated_images
from ..evaluation.statistics import FeatureStatistics, frechet_distance
from ..pipelines.pipeline_edm import EDMPipeline
from ..pipelines.scheduler_families import SCHEDULERS_BY_NAME
from .posthoc import PosthocWeights
from .space import SamplerSettings


class SettingsScorer:
    """
    Generates the images of given seeds with given sampler settings and measures their distance to reference
    statistics. The pipeline's saved guidance defaults are cleared (every call passes the settings' own).

    Args:
        pipe (`EDMPipeline`): the model, on its device; its scheduler config is the base every setting changes.
        detector (`FeatureDetector`): the feature network.
        reference (`tuple[np.ndarray, np.ndarray]`): μ and Σ of the reference.
        state (`PartialState`): the processes sharing the work.
        batch (`int`): images per detector call.
        class_label (`int`, *optional*): the class of every image (default: drawn per seed).
        fd_method (`str`): the matrix square root of [`frechet_distance`].
        weights ([`PosthocWeights`], *optional*): the post-hoc EMA of a run, for settings with a σ_rel.
        guide_weights ([`PosthocWeights`], *optional*): the same for the guide network.
    """

    def __init__(self, pipe: EDMPipeline, detector: FeatureDetector, reference: tuple[np.ndarray, np.ndarray],
                 state: PartialState, batch: int, class_label: int | None = None, fd_method: str = "sqrtm",
                 weights: PosthocWeights | None = None, guide_weights: PosthocWeights | None = None) -> None:
        pipe.register_to_config(guidance_scale=1.0, guidance_interval=None)
        self.pipe = pipe
        self.base_config = dict(pipe.scheduler.config)
        self.detector = detector
        self.reference = reference
        self.state = state
        self.batch = batch
        self.class_label = class_label
        self.fd_method = fd_method
        self.weights = weights
        self.guide_weights = guide_weights

    def apply(self, settings: SamplerSettings) -> None:
        """Sets the pipeline's scheduler to the settings' family and schedule, and its weights (and the guide's) to
        their σ_rel."""
        scheduler_class = SCHEDULERS_BY_NAME[settings.scheduler]
        self.pipe.scheduler = scheduler_class.from_config(self.base_config, **settings.scheduler_overrides())
        if self.weights is not None:
            self.weights.load(settings.std)
        if self.guide_weights is not None:
            self.guide_weights.load(settings.guide_std)

    def statistics(self, settings: SamplerSettings, seeds: Sequence[int]) -> FeatureStatistics:
        """Feature statistics of the images of `seeds` sampled with `settings` (summed over all processes)."""
        self.apply(settings)
        kwargs = {"class_labels": self.class_label, **settings.call_kwargs()}
        seeds = list(seeds)
        return compute_statistics(
            lambda indices: generated_images(self.pipe, [seeds[i] for i in indices], **kwargs), len(seeds),
            self.detector, self.batch, self.state, expected_features=self.reference[0].shape[0], progress_bar=False)

    def distance(self, statistics: FeatureStatistics) -> float:
        """The Fréchet distance of `statistics` to the reference."""
        mu, sigma = statistics.mean_and_covariance()
        return frechet_distance(mu, sigma, *self.reference, method=self.fd_method)

    def score(self, settings: SamplerSettings, seeds: Sequence[int]) -> float:
        """The Fréchet distance of the images of `seeds` sampled with `settings`."""
        return self.distance(self.statistics(settings, seeds))
