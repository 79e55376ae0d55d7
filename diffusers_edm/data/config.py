# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Where the training images come from and how they are prepared: the data settings of `train_edm.py` and the
`fid ref` command, checked before any file is read."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DatasetError

DIGITS_DEFAULT_RESOLUTION = 16
DEFAULT_LABEL_COLUMN = "label"
MAX_CLASSES = 100_000
"""Most classes integer labels may define (ImageNet-21k has 21,841)."""
SMALL_CLASS_COUNT = 1_000
"""Class counts up to this are accepted even when the dataset has fewer images than classes."""
IN_MEMORY_MAX_BYTES = 256 * 2**20
"""Decoded images up to this size are held in memory unless `DataConfig.in_memory` says otherwise."""
DECODE_BATCH_SIZE = 64
"""Images a decoding worker process hands over at a time."""


@dataclass
class DataConfig:
    """Where the training images come from and how they are prepared (the data flags of `train_edm.py`).

    Args:
        dataset_name (`str`, *optional*):
            A Hugging Face dataset id or a local path accepted by `datasets.load_dataset`; its `"train"` split is used.
        dataset_config_name (`str`, *optional*):
            The configuration of `dataset_name`, if it has several.
        train_data_dir (`str`, *optional*):
            An image folder (class sub-folders, flat, or with `metadata.jsonl`/`metadata.csv`) or an EDM dataset (a
            `.zip` file, or a folder containing `dataset.json`). With neither this nor `dataset_name`, scikit-learn's
            8x8 digits are used.
        image_column (`str`, defaults to `"image"`):
            The image column of a Hugging Face dataset.
        label_column (`str`, *optional*, defaults to `"label"`):
            The class-label column of a Hugging Face dataset or of an image folder's metadata file. `None` disables
            labels for every source. When the default `"label"` column does not exist, the data are treated as
            unlabelled; any other missing column name is an error.
        caption_column (`str`, *optional*):
            The caption column of a Hugging Face dataset or of an image folder's metadata file: the data are then
            captioned image-text pairs (text-to-image training) and class labels are not used.
        resolution (`int`, *optional*):
            Side of the square training images; images of another size are resized with PIL's LANCZOS filter like
            EDM's `dataset_tool.py` (the digits are upsampled bilinearly instead). `None` keeps the native size, which
            must then be square and shared by every image. For the digits `None` means 16
            (`DIGITS_DEFAULT_RESOLUTION`).
        center_crop (`bool`, defaults to `False`):
            Crop every image to a centred square of its shorter side before resizing.
        xflip (`bool`, defaults to `False`):
            EDM's `--xflip`: append a horizontally mirrored copy of every image, doubling the dataset length. Item
            `i + N` is the mirror of item `i` (same label). This is deterministic, unlike diffusers' `--random_flip`
            (also a flag of `train_edm.py`), which flips each image with probability 1/2 every time it is drawn;
            under uniform sampling both show every image mirrored half of the time.
        max_train_samples (`int`, *optional*):
            Keep a random subset of this many images, drawn with `np.random.RandomState(seed)` before the x-flip
            duplication (so the dataset length is `2 * max_train_samples` with `xflip`), as EDM's `max_size`.
        conditional (`bool`, *optional*):
            `None` uses class labels when every image has one; `True` requires labels (an error names an image
            without one); `False` ignores labels.
        seed (`int`, defaults to 0):
            Seed of the `max_train_samples` subset.
        cache_dir (`str`, *optional*):
            Cache directory passed to `datasets.load_dataset`.
        in_memory (`bool`, *optional*):
            `True` holds the decoded images in memory; `False` writes them to a decoded-image cache file that is read
            one image per access, so memory use does not grow with the dataset; `None` holds them in memory when they
            take at most `IN_MEMORY_MAX_BYTES` (256 MiB). The items are the same either way. The scikit-learn digits
            are always held in memory.
        decoded_cache_dir (`str`, *optional*):
            Folder of the decoded-image cache files, by default `$HF_HOME/diffusers_edm/decoded`
            (`~/.cache/huggingface/diffusers_edm/decoded`). A cache file is reused while the image files (names and
            contents; the CRCs of zip members; the fingerprint of a `datasets` source, which does not cover image files
            that a column names by path), `resolution`, `center_crop` and the subset are unchanged, and its own
            checksum holds; it is replaced otherwise.
        num_workers (`int`, defaults to 0):
            Processes that decode and check the images; 0 decodes them in the calling process.
    """

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | None = None
    image_column: str = "image"
    label_column: str | None = DEFAULT_LABEL_COLUMN
    caption_column: str | None = None
    resolution: int | None = None
    center_crop: bool = False
    xflip: bool = False
    max_train_samples: int | None = None
    conditional: bool | None = None
    seed: int = 0
    cache_dir: str | None = None
    in_memory: bool | None = None
    decoded_cache_dir: str | None = None
    num_workers: int = 0


def check_config(config: DataConfig) -> None:
    if config.dataset_name is not None and config.train_data_dir is not None:
        raise DatasetError("Pass either --dataset_name or --train_data_dir, not both.")
    if config.dataset_config_name is not None and config.dataset_name is None:
        raise DatasetError("--dataset_config_name needs --dataset_name.")
    if config.resolution is not None and config.resolution < 1:
        raise DatasetError(f"--resolution must be a positive integer, got {config.resolution}.")
    if config.max_train_samples is not None and config.max_train_samples < 1:
        raise DatasetError(
            f"--max_train_samples must be at least 1, got {config.max_train_samples}. Omit it to use every image."
        )
    if config.conditional is True and config.label_column is None:
        raise DatasetError("Class-conditional training needs labels, but label_column is None. Name a label column.")
    if config.caption_column is not None and config.conditional:
        raise DatasetError("--caption_column trains on captions, not class labels; drop --conditional.")
    if config.num_workers < 0:
        raise DatasetError(f"--dataloader_num_workers must be 0 or more, got {config.num_workers}.")
