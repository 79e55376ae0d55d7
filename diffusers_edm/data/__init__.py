# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Datasets of images for training and evaluation: the data settings ([`DataConfig`]), the sources (image folders,
EDM dataset folders and zips, `datasets` datasets, the embedded digits), their labels, decoding, and the decoded-image
cache of data larger than memory. [`build_dataset`] turns a config into an [`EDMImageDataset`]."""

from .config import DIGITS_DEFAULT_RESOLUTION, DataConfig
from .dataset import DatasetShape, EDMImageDataset, build_dataset, inspect_dataset, select_subset
from .sources import image_extensions, is_image_name, list_image_files

__all__ = [
    "DIGITS_DEFAULT_RESOLUTION",
    "DataConfig",
    "DatasetShape",
    "EDMImageDataset",
    "build_dataset",
    "image_extensions",
    "inspect_dataset",
    "is_image_name",
    "list_image_files",
    "select_subset",
]
