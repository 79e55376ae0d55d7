# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation with the protocol of EDM's `fid.py` and EDM2's FD-DINOv2: feature detectors, float64 feature statistics
summed over processes, reference `.npz` files and the Fréchet distance. `python -m diffusers_edm.fid` is its command
line."""

from ..errors import EvaluationError
from .detectors import DETECTOR_NAMES, DetectorError, FeatureDetector, load_detector
from .features import compute_statistics
from .reference import ReferenceStatisticsError, load_reference, save_reference
from .sources import ImageFiles, ImageSourceError, dataset_images, generated_images
from .statistics import FeatureStatistics, frechet_distance

__all__ = [
    "DETECTOR_NAMES",
    "DetectorError",
    "EvaluationError",
    "FeatureDetector",
    "FeatureStatistics",
    "ImageFiles",
    "ImageSourceError",
    "ReferenceStatisticsError",
    "compute_statistics",
    "dataset_images",
    "frechet_distance",
    "generated_images",
    "load_detector",
    "load_reference",
    "save_reference",
]
