# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Training data for EDM (Karras et al. 2022, arXiv 2206.00364): loading, validation and x-flip duplication.

`build_dataset` turns a `DataConfig` into an `EDMImageDataset` whose items are `(image, label)` pairs: `image` is a
float32 `[C, H, W]` tensor in `[-1, 1]` (EDM's `uint8 / 127.5 - 1`), `label` a float32 one-hot `[num_classes]` vector,
or an empty `[0]` tensor when training unconditionally. Four sources are understood:

* nothing given: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), an offline default that
  needs no download;
* `dataset_name`: a Hugging Face dataset (Hub id or local path), the `"train"` split of `datasets.load_dataset`;
* `train_data_dir` pointing at an image folder: class sub-folders (labels = sorted folder names), a flat folder
  (unlabelled), or a top-level `metadata.jsonl` / `metadata.csv` with a `file_name` column (the `imagefolder`
  convention); hidden files and folders are skipped;
* `train_data_dir` pointing at an EDM dataset: a `.zip` of PNGs or a folder holding a `dataset.json` whose `"labels"`
  is `[["00000/img00000000.png", 6], ...]` or `null` (the format written by EDM's `dataset_tool.py`).

Every image is decoded and checked once, before training starts (in `DataConfig.num_workers` processes), so every
problem with the data (unreadable files, mixed sizes, missing labels, ...) surfaces as a `DatasetError` then. The
decoded `uint8` images are held in memory when they are small; larger ones are written to a decoded-image cache file
(`diffusers_edm.data.cache`) that is read one image per access, so memory use does not grow with the dataset,
and that later runs reuse while the data are unchanged. Both give the same items.

Channels: the images are grayscale (1 channel) when every image used is grayscale (PIL modes `1`, `L`, `LA`, `I;16`),
else RGB (3 channels), whatever their order. When grayscale and colour images are mixed, each grayscale image is copied
to the three channels and a warning names one image of each kind. Alpha is dropped, palette images are expanded.

Labels: integer labels are class indices, giving K = largest label + 1 classes (as EDM). K may exceed the number of
images only up to `SMALL_CLASS_COUNT` (a few images that keep e.g. ImageNet's class indices) and never
`MAX_CLASSES`: a larger K is almost always a stray label, and would allocate K-long label vectors and a K-row class
embedding. Label files (`metadata.jsonl`/`.csv`, `dataset.json`) must be UTF-8 (a byte-order mark is allowed).
"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError, write_error_reason
from .cache import (
    CACHE_FORMAT_VERSION,
    DecodedCache,
    DecodedImageFile,
    default_decoded_cache_dir,
    digest,
    file_sha256,
)
from .config import DIGITS_DEFAULT_RESOLUTION, IN_MEMORY_MAX_BYTES, DataConfig, check_config
from .decoding import ArraySink, decode_image, decode_images
from .labels import resolve_labels
from .sources import ImageRecords, records_of

logger = logging.getLogger(__name__)


class EDMImageDataset(torch.utils.data.Dataset):
    """Decoded images returned as `(image, label)` with EDM's scaling and optional x-flip duplication.

    Args:
        images (`torch.Tensor` or `DecodedImageFile`):
            `[N, C, H, W]` images: a tensor, either `uint8` in `[0, 255]` (mapped to `x / 127.5 - 1` on access) or
            float32 already in `[-1, 1]`, or a decoded-image cache file of `uint8` images, read one image per access.
        class_indices (`torch.Tensor`, *optional*):
            `[N]` int64 class index of every image; `None` for unconditional data.
        num_classes (`int`):
            Length of the one-hot label vectors; 0 for unconditional data.
        class_names (`list[str]`, *optional*):
            Name of every class, when the source names them.
        source_description (`str`):
            A short human-readable description of the data, e.g. for a model card.
        xflip (`bool`, defaults to `False`):
            Append mirrored copies: items `N..2N-1` are items `0..N-1` flipped along the width axis.
        captions (`list[str]`, *optional*):
            The caption of every image (captioned data): the label of an item is then the int64 index of its caption
            in `caption_texts` (the distinct captions, sorted).
    """

    def __init__(
        self,
        images: torch.Tensor | DecodedImageFile,
        class_indices: torch.Tensor | None,
        num_classes: int,
        class_names: list[str] | None,
        source_description: str,
        xflip: bool = False,
        captions: list[str] | None = None,
    ):
        if len(images.shape) != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"`images` must be [N, C, H, H], got shape {tuple(images.shape)}.")
        if isinstance(images, torch.Tensor) and images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"`images` must be uint8 or float32, got {images.dtype}.")
        if (class_indices is None) != (num_classes == 0):
            raise ValueError("Pass `class_indices` exactly when `num_classes` > 0.")
        if class_indices is not None and class_indices.shape != (images.shape[0],):
            raise ValueError(f"`class_indices` must have shape [{images.shape[0]}], got {tuple(class_indices.shape)}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"Got {len(class_names)} class names for {num_classes} classes.")
        if captions is not None and (num_classes or len(captions) != images.shape[0]):
            raise ValueError(f"Pass one caption per image ({images.shape[0]}) and no class labels with captions.")
        self.caption_texts = sorted(set(captions)) if captions is not None else None
        self._caption_indices = None
        if captions is not None:
            index_of = {caption: index for index, caption in enumerate(self.caption_texts)}
            self._caption_indices = torch.tensor([index_of[caption] for caption in captions], dtype=torch.int64)
        self._images = images
        self._class_indices = class_indices
        self.num_classes = num_classes
        self.class_names = class_names
        self.source_description = source_description
        self.xflip = xflip

    @property
    def num_channels(self) -> int:
        """Channels per image: 1 (grayscale) or 3 (RGB)."""
        return self._images.shape[1]

    @property
    def resolution(self) -> int:
        """Side length of the square images."""
        return self._images.shape[2]

    @property
    def num_images(self) -> int:
        """Number of distinct images, before the x-flip duplication."""
        return self._images.shape[0]

    def __len__(self) -> int:
        return self.num_images * (2 if self.xflip else 1)

    def label(self, index: int) -> torch.Tensor:
        """The one-hot label of item `index` (empty for unconditional data; its caption index for captioned data),
        without reading its image."""
        if self._caption_indices is not None:
            return self._caption_indices[index % len(self) % self.num_images].clone()
        label = torch.zeros(self.num_classes, dtype=torch.float32)
        if self._class_indices is not None:
            label[self._class_indices[index % len(self) % self.num_images]] = 1.0
        return label

    def content_digest(self) -> str:
        """SHA-256 of what the dataset yields: its decoded images (a cache file's recorded checksum, or the bytes held
        in memory), labels, class names and x-flip duplication; e.g. to key a cache derived from it."""
        images = self._images
        if isinstance(images, DecodedImageFile):
            pixels = images.sha256 or file_sha256(Path(images.path))
        else:
            pixels = digest(images.contiguous().numpy().tobytes())
        labels = None if self._class_indices is None else digest(self._class_indices.numpy().tobytes())
        captions = None if self._caption_indices is None else digest(
            {"texts": self.caption_texts, "indices": digest(self._caption_indices.numpy().tobytes())})
        return digest({"images": pixels, "dtype": str(images.dtype), "labels": labels,
                       "classes": [self.num_classes, self.class_names], "xflip": self.xflip,
                       **({"captions": captions} if captions is not None else {})})

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"Index {index} is out of range for a dataset of {length} items.")
        index %= length
        image_index = index % self.num_images
        image = self._images[image_index]
        image = image.to(torch.float32) / 127.5 - 1 if image.dtype == torch.uint8 else image.clone()
        if index >= self.num_images:
            image = torch.flip(image, dims=[2])
        return image, self.label(index)


def build_dataset(config: DataConfig) -> EDMImageDataset:
    """Load, validate and prepare the training images described by `config`.

    All validation happens here, before training starts: bad configuration, missing or empty folders, unreadable
    images, mixed or non-square sizes without `resolution`/`center_crop`, labels missing when `conditional=True`,
    label files that reference missing images, and unknown dataset columns raise `DatasetError` (a `ValueError`).
    A decoded-image cache file that is up to date is reused without decoding again (its images were checked when it
    was written); a half-written one is never used. Call it on one process first (e.g. in accelerate's
    `main_process_first()`) so that the other processes reuse the cache it writes.

    Args:
        config (`DataConfig`): The data source and preparation options.

    Returns:
        `EDMImageDataset`: Images in `[-1, 1]` with one-hot labels (empty when unconditional).
    """
    check_config(config)
    if config.dataset_name is None and config.train_data_dir is None:
        return _digits_dataset(config)
    return records_of(config, _assemble)


@dataclass(frozen=True)
class DatasetShape:
    """What a model's configuration needs to know about a dataset, found without decoding it (`inspect_dataset`)."""

    resolution: int
    num_channels: int
    num_classes: int
    source_description: str


def inspect_dataset(config: DataConfig) -> DatasetShape:
    """The resolution, channels and classes of the data `config` describes, from its file list, its labels and its
    first image only (for `train_edm.py --dry_run`); the full validation happens in `build_dataset`."""
    check_config(config)
    if config.dataset_name is None and config.train_data_dir is None:
        digits = _digits_dataset(config)
        return DatasetShape(digits.resolution, digits.num_channels, digits.num_classes, digits.source_description)
    return records_of(config, _shape)


def _shape(records: ImageRecords, config: DataConfig) -> DatasetShape:
    if records.count == 0:
        raise DatasetError(f"{records.description} contains no images. Point --train_data_dir or --dataset_name at a "
                           "dataset with images.")
    num_classes = 0 if records.captions is not None else resolve_labels(records, config)[1]
    first = decode_image(records.reader, int(select_subset(records.count, config.max_train_samples, config.seed)[0]),
                          config.resolution, config.center_crop)
    if isinstance(first, str):
        raise DatasetError(first)
    channels, height, width = first.pixels.shape
    if height != width:
        raise DatasetError(f"{records.description}: the first image is {width}x{height}, not square; pass "
                           "--resolution (and --center_crop) to train on square images.")
    return DatasetShape(height, channels, num_classes, records.description)


def _digits_dataset(config: DataConfig) -> EDMImageDataset:
    """scikit-learn's 8x8 digits: pixel values 0..16 scaled by `x / 8 - 1`, bilinearly upsampled to `resolution`."""
    from sklearn.datasets import load_digits

    if config.caption_column is not None:
        raise DatasetError("--caption_column needs captioned data: the built-in digits have class labels only; pass"
                           " --train_data_dir with an image folder and a metadata.jsonl of captions.")
    digits = load_digits()
    resolution = config.resolution if config.resolution is not None else DIGITS_DEFAULT_RESOLUTION
    use_labels = config.conditional is not False and config.label_column is not None
    class_indices = digits.target.astype(np.int64) if use_labels else None
    selected = select_subset(len(digits.target), config.max_train_samples, config.seed)
    images = torch.from_numpy(digits.images[selected]).to(torch.float32).unsqueeze(1) / 8 - 1
    if images.shape[-1] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return EDMImageDataset(
        images=images.contiguous(),
        class_indices=None if class_indices is None else torch.from_numpy(class_indices[selected]),
        num_classes=len(digits.target_names) if use_labels else 0,
        class_names=[str(name) for name in digits.target_names] if use_labels else None,
        source_description=f"scikit-learn digits (8x8 handwritten digits, trained at {resolution}x{resolution})",
        xflip=config.xflip,
    )


def _assemble(records: ImageRecords, config: DataConfig) -> EDMImageDataset:
    """Resolve labels, pick the `max_train_samples` subset and decode it into an `EDMImageDataset`."""
    if records.count == 0:
        raise DatasetError(
            f"{records.description} contains no images (image files are recognised by extension, e.g. .png, .jpg). "
            "Point --train_data_dir or --dataset_name at a dataset with images."
        )
    class_indices, num_classes, class_names = (None, 0, None) if records.captions is not None else \
        resolve_labels(records, config)
    selected = select_subset(records.count, config.max_train_samples, config.seed)
    dataset = EDMImageDataset(
        images=_load_images(records, selected, config),
        class_indices=None if class_indices is None else torch.from_numpy(class_indices[selected]),
        num_classes=num_classes,
        class_names=class_names,
        source_description=records.description,
        xflip=config.xflip,
        captions=None if records.captions is None else [records.captions[i] for i in selected],
    )
    logger.info(
        "Loaded %d images of %dx%dx%d from %s (%s%s).",
        dataset.num_images,
        dataset.num_channels,
        dataset.resolution,
        dataset.resolution,
        records.description,
        f"{len(dataset.caption_texts)} distinct captions" if dataset.caption_texts else f"{num_classes} classes",
        ", x-flip doubles the length" if config.xflip else "",
    )
    return dataset


def _load_images(records: ImageRecords, selected: np.ndarray, config: DataConfig) -> torch.Tensor | DecodedImageFile:
    """The selected images decoded into memory or into a decoded-image cache file, as `config.in_memory` says (when
    `None`, by the decoded size of the first image times the number of images)."""
    in_memory = config.in_memory
    if in_memory is None:
        first = decode_image(records.reader, int(selected[0]), config.resolution, config.center_crop)
        if isinstance(first, str):
            raise DatasetError(first)
        in_memory = len(selected) * first.pixels.nbytes <= IN_MEMORY_MAX_BYTES
    if not in_memory:
        return _cached_images(records, selected, config)
    images = ArraySink(len(selected))
    decode_images(records, selected, config, images)
    return torch.from_numpy(images.images)


def _cached_images(records: ImageRecords, selected: np.ndarray, config: DataConfig) -> DecodedImageFile:
    """The selected images from their decoded-image cache file, decoded into a new one when there is none up to date
    (their warnings are logged again when it is reused)."""
    folder = Path(config.decoded_cache_dir) if config.decoded_cache_dir else default_decoded_cache_dir()
    preparation = {
        "source": records.reader.identity,
        "resolution": config.resolution,
        "center_crop": config.center_crop,
        "subset": [config.max_train_samples, config.seed] if config.max_train_samples else None,
    }
    cache = DecodedCache(folder, digest(preparation), records.reader.label)
    fingerprint = digest(
        {
            **preparation,
            "format_version": CACHE_FORMAT_VERSION,
            "content": records.reader.content_digest(),
            "selected": digest(selected.astype(np.int64).tobytes()),
        }
    )
    cached = cache.load(fingerprint)
    if cached is not None:
        images, warnings = cached
        for message in warnings:
            logger.warning("%s", message)
        logger.info("Reusing the decoded images of %s in %s.", records.description, images.path)
        return images
    logger.info("Decoding %d images of %s into %s; later runs reuse them.", len(selected), records.description, folder)
    try:
        writer = cache.writer(fingerprint, len(selected))
        try:
            warnings = decode_images(records, selected, config, writer)
            return cache.commit(writer, fingerprint, warnings)
        except BaseException:
            writer.discard()
            raise
    except OSError as error:
        raise DatasetError(
            f"Could not write the decoded images of {records.description} to {folder} ({write_error_reason(error)}). "
            "Free space there, pass --decoded_cache_dir with another folder, or --data_in_memory to hold them in RAM."
        ) from error


def select_subset(count: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Indices of the images to keep: all of them, or a seeded random `max_samples` subset in ascending order (EDM's
    `max_size`: `np.random.RandomState(seed).shuffle` of the indices, the first `max_samples`, sorted)."""
    indices = np.arange(count)
    if max_samples is not None and count > max_samples:
        np.random.RandomState(seed % (1 << 31)).shuffle(indices)
        indices = np.sort(indices[:max_samples])
    return indices
