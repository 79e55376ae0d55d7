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
(`diffusers_edm.training.data_cache`) that is read one image per access, so memory use does not grow with the dataset,
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

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..write_errors import write_error_reason
from .data_cache import (
    CACHE_FORMAT_VERSION,
    DecodedCache,
    DecodedImageFile,
    DecodedImageWriter,
    default_decoded_cache_dir,
    digest,
)

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

DIGITS_DEFAULT_RESOLUTION = 16
DEFAULT_LABEL_COLUMN = "label"
METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")
EDM_LABELS_FILE_NAME = "dataset.json"
MAX_CLASSES = 100_000
"""Most classes integer labels may define (ImageNet-21k has 21,841)."""
SMALL_CLASS_COUNT = 1_000
"""Class counts up to this are accepted even when the dataset has fewer images than classes."""
IN_MEMORY_MAX_BYTES = 256 * 2**20
"""Decoded images up to this size are held in memory unless `DataConfig.in_memory` says otherwise."""
DECODE_BATCH_SIZE = 64
"""Images a decoding worker process hands over at a time."""

_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N"})
_UNSUPPORTED_MODES = frozenset({"I", "F"})
_INTEGER_STRING = re.compile(r"^[+-]?\d+$")


T = TypeVar("T")


class DatasetError(ValueError):
    """The training data cannot be used as configured; the message names the offending file and the fix."""


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
        resolution (`int`, *optional*):
            Side of the square training images; images of another size are resized with PIL's LANCZOS filter like
            EDM's `dataset_tool.py` (the digits are upsampled bilinearly instead). `None` keeps the native size, which
            must then be square and shared by every image. For the digits `None` means 16
            (`DIGITS_DEFAULT_RESOLUTION`).
        center_crop (`bool`, defaults to `False`):
            Crop every image to a centred square of its shorter side before resizing.
        random_flip (`bool`, defaults to `False`):
            EDM's `--xflip`: append a horizontally mirrored copy of every image, doubling the dataset length. Item
            `i + N` is the mirror of item `i` (same label). This is deterministic, unlike diffusers' `--random_flip`
            which flips each access with probability 1/2; under uniform sampling both show every image mirrored half
            of the time.
        max_train_samples (`int`, *optional*):
            Keep a random subset of this many images, drawn with `np.random.RandomState(seed)` before the x-flip
            duplication (so the dataset length is `2 * max_train_samples` with `random_flip`), as EDM's `max_size`.
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
            (`~/.cache/huggingface/diffusers_edm/decoded`). A cache file is reused while the image files (names,
            sizes, modification times; the CRCs of zip members; the fingerprint of a `datasets` source, which does not
            cover image files that a column names by path), `resolution`, `center_crop` and the subset are unchanged,
            and replaced otherwise.
        num_workers (`int`, defaults to 0):
            Processes that decode and check the images; 0 decodes them in the calling process.
    """

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | None = None
    image_column: str = "image"
    label_column: str | None = DEFAULT_LABEL_COLUMN
    resolution: int | None = None
    center_crop: bool = False
    random_flip: bool = False
    max_train_samples: int | None = None
    conditional: bool | None = None
    seed: int = 0
    cache_dir: str | None = None
    in_memory: bool | None = None
    decoded_cache_dir: str | None = None
    num_workers: int = 0


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
    """

    def __init__(
        self,
        images: torch.Tensor | DecodedImageFile,
        class_indices: torch.Tensor | None,
        num_classes: int,
        class_names: list[str] | None,
        source_description: str,
        xflip: bool = False,
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
        label = torch.zeros(self.num_classes, dtype=torch.float32)
        if self._class_indices is not None:
            label[self._class_indices[image_index]] = 1.0
        return image, label


class _FileImages:
    """Image files below `root` (`names` are relative to it): an image folder or an EDM dataset folder."""

    def __init__(self, root: Path, names: list[str]):
        self.root, self.names = root, names
        self.identity = f"folder {root.resolve()}"
        self.label = root.resolve().name

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, index: int) -> str:
        return str(self.root / self.names[index])

    def read(self, index: int) -> bytes:
        return (self.root / self.names[index]).read_bytes()

    def content_digest(self) -> str:
        """Digest of the file names, sizes and modification times."""
        digest = hashlib.sha256()
        for index, name in enumerate(self.names):
            try:
                stat = (self.root / name).stat()
            except OSError as error:
                raise _unreadable_image_error(self.describe(index), error) from error
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class _ZipImages:
    """The image members `names` of an EDM dataset zip; each process reads through an archive it opened itself."""

    def __init__(self, path: Path, names: list[str], archive: zipfile.ZipFile):
        self.path, self.names = path, names
        self._archive, self._pid = archive, os.getpid()
        self.identity = f"zip {path.resolve()}"
        self.label = path.stem

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, index: int) -> str:
        return f"{self.names[index]} (in {self.path})"

    def read(self, index: int) -> bytes:
        if self._archive is None or self._pid != os.getpid():
            self._archive, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._archive.read(self.names[index])

    def content_digest(self) -> str:
        """Digest of the member names, CRCs and sizes."""
        digest = hashlib.sha256()
        with zipfile.ZipFile(self.path) as archive:
            for name in self.names:
                info = archive.getinfo(name)
                digest.update(f"{name}\0{info.CRC}\0{info.file_size}\n".encode())
        return digest.hexdigest()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_archive": None}


class _HubImages:
    """The image column of a `datasets.Dataset`, cast to undecoded images (`{"bytes", "path"}` values)."""

    def __init__(self, images: datasets.Dataset, column: str, source: str, fingerprint: str):
        self.images, self.column, self.source, self.fingerprint = images, column, source, fingerprint
        self.identity = f"datasets {source} column {column}"
        self.label = source.rstrip("/").split("/")[-1]

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        path = self.images[index][self.column].get("path")
        return f"row {index} of {self.source}" + (f" ({path})" if path else "")

    def read(self, index: int) -> bytes:
        value = self.images[index][self.column]
        if value.get("bytes") is not None:
            return value["bytes"]
        with open(value["path"], "rb") as file:
            return file.read()

    def content_digest(self) -> str:
        """The dataset's own fingerprint, which changes with its files and processing."""
        return self.fingerprint


_ImageReader = _FileImages | _ZipImages | _HubImages


@dataclass
class _ImageRecords:
    """Encoded images of one source, before label resolution, subset selection and decoding.

    `reader` names image `i` in messages without reading it (`describe(i)`), returns its encoded bytes (`read(i)`) and
    is pickled into decoding worker processes. `labels` holds one raw label per image (`None` where an image has
    none), or is `None` when the source has no labels at all. `class_names`, when given, means the labels are indices
    into it. `label_source` names where the labels come from (e.g. the metadata file); `label_hint` tells users how
    to add labels.
    """

    reader: _ImageReader
    labels: list[object] | None
    class_names: list[str] | None
    description: str
    label_source: str
    label_hint: str

    @property
    def count(self) -> int:
        return len(self.reader)

    def describe(self, index: int) -> str:
        return self.reader.describe(index)


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
    _check_config(config)
    if config.dataset_name is None and config.train_data_dir is None:
        return _digits_dataset(config)
    return _from_source(config, _assemble)


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
    _check_config(config)
    if config.dataset_name is None and config.train_data_dir is None:
        digits = _digits_dataset(config)
        return DatasetShape(digits.resolution, digits.num_channels, digits.num_classes, digits.source_description)
    return _from_source(config, _shape)


def _shape(records: _ImageRecords, config: DataConfig) -> DatasetShape:
    if records.count == 0:
        raise DatasetError(f"{records.description} contains no images. Point --train_data_dir or --dataset_name at a "
                           "dataset with images.")
    _, num_classes, _ = _resolve_labels(records, config)
    first = _decode_image(records.reader, int(select_subset(records.count, config.max_train_samples, config.seed)[0]),
                          config.resolution, config.center_crop)
    if isinstance(first, str):
        raise DatasetError(first)
    channels, height, width = first.pixels.shape
    if height != width:
        raise DatasetError(f"{records.description}: the first image is {width}x{height}, not square; pass "
                           "--resolution (and --center_crop) to train on square images.")
    return DatasetShape(height, channels, num_classes, records.description)


def _from_source(config: DataConfig, action: Callable[[_ImageRecords, DataConfig], T]) -> T:
    """`action(records, config)` on the image records of `config`'s Hub dataset, EDM zip or folder, or image folder."""
    if config.dataset_name is not None:
        return action(_hub_records(config), config)
    path = Path(config.train_data_dir)
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DatasetError(
                f"--train_data_dir {path} is a file but not a .zip archive. Pass a folder of images or an EDM .zip."
            )
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path} is not a valid zip archive. Re-create it (e.g. with EDM's dataset_tool.py).")
        with zipfile.ZipFile(path) as archive:
            return action(_edm_zip_records(path, archive, config), config)
    if not path.is_dir():
        raise DatasetError(f"--train_data_dir {path} does not exist. Pass an existing image folder or .zip file.")
    if (path / EDM_LABELS_FILE_NAME).is_file():
        return action(_edm_folder_records(path, config), config)
    return action(_imagefolder_records(path, config), config)


def _check_config(config: DataConfig) -> None:
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
    if config.num_workers < 0:
        raise DatasetError(f"--dataloader_num_workers must be 0 or more, got {config.num_workers}.")


def _digits_dataset(config: DataConfig) -> EDMImageDataset:
    """scikit-learn's 8x8 digits: pixel values 0..16 scaled by `x / 8 - 1`, bilinearly upsampled to `resolution`."""
    from sklearn.datasets import load_digits

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
        xflip=config.random_flip,
    )


def _assemble(records: _ImageRecords, config: DataConfig) -> EDMImageDataset:
    """Resolve labels, pick the `max_train_samples` subset and decode it into an `EDMImageDataset`."""
    if records.count == 0:
        raise DatasetError(
            f"{records.description} contains no images (image files are recognised by extension, e.g. .png, .jpg). "
            "Point --train_data_dir or --dataset_name at a dataset with images."
        )
    class_indices, num_classes, class_names = _resolve_labels(records, config)
    selected = select_subset(records.count, config.max_train_samples, config.seed)
    dataset = EDMImageDataset(
        images=_load_images(records, selected, config),
        class_indices=None if class_indices is None else torch.from_numpy(class_indices[selected]),
        num_classes=num_classes,
        class_names=class_names,
        source_description=records.description,
        xflip=config.random_flip,
    )
    logger.info(
        "Loaded %d images of %dx%dx%d from %s (%d classes%s).",
        dataset.num_images,
        dataset.num_channels,
        dataset.resolution,
        dataset.resolution,
        records.description,
        num_classes,
        ", x-flip doubles the length" if config.random_flip else "",
    )
    return dataset


def _load_images(records: _ImageRecords, selected: np.ndarray, config: DataConfig) -> torch.Tensor | DecodedImageFile:
    """The selected images decoded into memory or into a decoded-image cache file, as `config.in_memory` says (when
    `None`, by the decoded size of the first image times the number of images)."""
    in_memory = config.in_memory
    if in_memory is None:
        first = _decode_image(records.reader, int(selected[0]), config.resolution, config.center_crop)
        if isinstance(first, str):
            raise DatasetError(first)
        in_memory = len(selected) * first.pixels.nbytes <= IN_MEMORY_MAX_BYTES
    if not in_memory:
        return _cached_images(records, selected, config)
    images = _ArraySink(len(selected))
    _decode_images(records, selected, config, images)
    return torch.from_numpy(images.images)


def _cached_images(records: _ImageRecords, selected: np.ndarray, config: DataConfig) -> DecodedImageFile:
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
            warnings = _decode_images(records, selected, config, writer)
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


def _resolve_labels(records: _ImageRecords, config: DataConfig) -> tuple[np.ndarray | None, int, list[str] | None]:
    """Turn raw labels into `(class_indices, num_classes, class_names)` following `config.conditional`.

    Integer labels give `num_classes = max + 1` (as EDM); labels with known class names give `len(class_names)`;
    string labels become classes named by the sorted distinct strings.
    """
    if config.conditional is False:
        return None, 0, None
    labels = records.labels
    if labels is None:
        if config.conditional:
            raise DatasetError(
                f"Class-conditional training needs a label for every image, but {records.description} has no labels "
                f"(e.g. {records.describe(0)}). Pass --unconditional, or {records.label_hint}."
            )
        return None, 0, None
    missing = [index for index, label in enumerate(labels) if label is None]
    if missing:
        first = records.describe(missing[0])
        if config.conditional:
            raise DatasetError(
                f"Class-conditional training needs a label for every image, but {first} has none ({len(missing)} of "
                f"{len(labels)} images are unlabelled). Pass --unconditional, or {records.label_hint}."
            )
        logger.warning(
            "%d of %d images have no label (e.g. %s); training unconditionally. To use labels, %s.",
            len(missing),
            len(labels),
            first,
            records.label_hint,
        )
        return None, 0, None
    if records.class_names is not None:
        return np.asarray(labels, dtype=np.int64), len(records.class_names), list(records.class_names)
    for index, label in enumerate(labels):
        is_integer = isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))
        if not (is_integer or isinstance(label, str)) or (is_integer and label < 0):
            raise DatasetError(
                f"{records.describe(index)} has label {label!r} in {records.label_source}; labels must be non-negative "
                "integer class indices or class-name strings. Fix the label, or pass --unconditional."
            )
    if all(isinstance(label, str) for label in labels):
        class_names = sorted(set(labels))
        index_of = {name: index for index, name in enumerate(class_names)}
        return np.asarray([index_of[label] for label in labels], dtype=np.int64), len(class_names), class_names
    if any(isinstance(label, str) for label in labels):
        index = next(i for i, label in enumerate(labels) if isinstance(label, str))
        raise DatasetError(
            f"{records.describe(index)} has the string label {labels[index]!r} but other images have integer labels. "
            "Use one kind of label for every image."
        )
    largest = max(labels)
    num_classes = int(largest) + 1
    if num_classes > min(MAX_CLASSES, max(records.count, SMALL_CLASS_COUNT)):
        reason = f"above the limit of {MAX_CLASSES:,}" if num_classes > MAX_CLASSES else "more than there are images"
        raise DatasetError(
            f"{records.describe(labels.index(largest))} has label {largest} in {records.label_source}, which makes "
            f"{num_classes:,} classes for {records.count:,} images ({reason}; integer labels are class indices 0 to "
            "K-1). Fix that label or renumber the classes 0, 1, 2, ..., or pass --unconditional."
        )
    return np.asarray(labels, dtype=np.int64), num_classes, None


class _ArraySink:
    """Decoded images in memory, appended in order (the in-memory counterpart of `DecodedImageWriter`)."""

    def __init__(self, count: int):
        self.count, self.written = count, 0
        self.images: np.ndarray | None = None

    def allocate(self, channels: int, height: int, width: int) -> None:
        self.images = np.empty((self.count, channels, height, width), dtype=np.uint8)

    def append(self, image: np.ndarray) -> None:
        self.images[self.written] = image
        self.written += 1

    def widen_to_rgb(self) -> None:
        self.images = np.repeat(self.images, 3, axis=1)


@dataclass
class _DecodedImage:
    """One image after mode conversion, center crop and resize.

    `pixels` is `[C, H, W]` uint8 (C = 1 for grayscale files, else 3), `mode` the file's PIL mode and `size` its
    `(width, height)` before the resize to `resolution`.
    """

    pixels: np.ndarray
    mode: str
    size: tuple[int, int]


def _decode_image(reader: _ImageReader, index: int, resolution: int | None, center_crop: bool) -> _DecodedImage | str:
    """Decode image `index`, or return the message of the `DatasetError` that makes it unusable (a one-line message
    crosses from a worker process intact, where a raised error would carry the worker's traceback)."""
    try:
        image = _open_image(reader, index)
        mode = image.mode
        image = _convert_mode(image, "L" if mode in _GRAYSCALE_MODES else "RGB", reader, index)
    except DatasetError as error:
        return str(error)
    if center_crop:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    size = image.size
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    pixels = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return _DecodedImage(np.ascontiguousarray(pixels), mode, size)


class _DecodeJobs(torch.utils.data.Dataset):
    """Item `position` is the `position`-th selected image through `_decode_image` (for decoding worker processes)."""

    def __init__(
        self,
        reader: _ImageReader,
        selected: np.ndarray,
        resolution: int | None,
        center_crop: bool,
    ):
        self.reader, self.selected, self.resolution, self.center_crop = reader, selected, resolution, center_crop

    def __len__(self) -> int:
        return len(self.selected)

    def __getitem__(self, position: int) -> _DecodedImage | str:
        return _decode_image(self.reader, int(self.selected[position]), self.resolution, self.center_crop)


def _keep_list(batch: list) -> list:
    return batch


def _decoded_in_order(
    records: _ImageRecords, selected: np.ndarray, config: DataConfig
) -> Iterator[_DecodedImage | str]:
    """`_decode_image` of every selected image, in order, from `config.num_workers` processes (a few batches ahead)."""
    loader = torch.utils.data.DataLoader(
        _DecodeJobs(records.reader, selected, config.resolution, config.center_crop),
        batch_size=DECODE_BATCH_SIZE,
        num_workers=config.num_workers,
        collate_fn=_keep_list,
        generator=torch.Generator(),  # starting the workers must not consume the global RNG
    )
    for batch in loader:
        yield from batch


def _decode_images(
    records: _ImageRecords, selected: np.ndarray, config: DataConfig, sink: _ArraySink | DecodedImageWriter
) -> list[str]:
    """Decode the selected images, in order, into `sink` (memory or a cache file), all of one square size: grayscale
    when every image is, else RGB (grayscale images copied to the three channels, with a warning naming an image of
    each kind). Returns the warnings it logged."""
    warnings: list[str] = []
    first_size, channels = None, 0
    reported_aspect_change = False
    examples: dict[bool, tuple[str, str]] = {}  # is_grayscale -> (name, mode) of the first such image
    counts = {True: 0, False: 0}
    with contextlib.closing(_decoded_in_order(records, selected, config)) as decoded_images:
        for index, decoded in zip(selected.tolist(), decoded_images):
            if isinstance(decoded, str):
                raise DatasetError(decoded)
            is_grayscale = decoded.mode in _GRAYSCALE_MODES
            if is_grayscale not in examples:
                examples[is_grayscale] = (records.describe(index), decoded.mode)
            counts[is_grayscale] += 1
            width, height = decoded.size
            if config.resolution is None:
                _check_native_size(records, index, decoded.size, int(selected[0]), first_size)
            elif width != height and not reported_aspect_change:
                side = config.resolution
                _warn(
                    warnings,
                    f"{records.describe(index)} is {width}x{height} and is stretched to {side}x{side}; pass "
                    "--center_crop to keep the aspect ratio.",
                )
                reported_aspect_change = True
            pixels = decoded.pixels
            if first_size is None:
                first_size, channels = decoded.size, pixels.shape[0]
                sink.allocate(*pixels.shape)
            elif pixels.shape[0] < channels:
                pixels = np.repeat(pixels, 3, axis=0)
            elif pixels.shape[0] > channels:  # the first colour image: the grayscale ones so far become RGB
                sink.widen_to_rgb()
                channels = 3
            sink.append(pixels)
    if len(examples) == 2:
        (gray_name, gray_mode), (colour_name, colour_mode) = examples[True], examples[False]
        _warn(
            warnings,
            f"Images mix grayscale and colour: {counts[True]} are grayscale (e.g. {gray_name}, mode {gray_mode}) and "
            f"{counts[False]} colour (e.g. {colour_name}, mode {colour_mode}). Training on RGB with each grayscale "
            "image copied to the three channels; to train in grayscale, convert every image to grayscale first.",
        )
    return warnings


def _check_native_size(
    records: _ImageRecords, index: int, size: tuple[int, int], first_index: int, first_size: tuple[int, int] | None
) -> None:
    """Without `resolution`, every image must be square and of the first image's size (`first_size`, `None` for the
    first image itself)."""
    width, height = size
    if width != height:
        raise DatasetError(
            f"{records.describe(index)} is {width}x{height} but EDM trains on square images. Pass --center_crop to "
            "crop every image to a centred square (and --resolution to resize)."
        )
    if first_size is not None and size != first_size:
        raise DatasetError(
            f"{records.describe(index)} is {width}x{height} but {records.describe(first_index)} is "
            f"{first_size[0]}x{first_size[1]}; all images must have one size: pass --resolution to resize every image."
        )


def _warn(warnings: list[str], message: str) -> None:
    """Log `message` as a warning and add it to `warnings` (kept with a cache file, to be logged again on reuse)."""
    logger.warning("%s", message)
    warnings.append(message)


def _unreadable_image_error(name: str, error: Exception) -> DatasetError:
    return DatasetError(
        f"Could not read image {name} ({type(error).__name__}: {error}). Remove the file from the dataset or replace "
        "it with a valid image."
    )


def _open_image(reader: _ImageReader, index: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(reader.read(index)))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise _unreadable_image_error(reader.describe(index), error) from error
    return image


def _convert_mode(image: Image.Image, target_mode: str, reader: _ImageReader, index: int) -> Image.Image:
    """Convert to `"L"` or `"RGB"`; alpha is dropped and 16-bit grayscale is scaled to 8 bits (`x / 257`)."""
    if image.mode == target_mode:
        return image
    if image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.round(array / 257).astype(np.uint8))
        return image if target_mode == "L" else image.convert(target_mode)
    if image.mode in _UNSUPPORTED_MODES:
        raise DatasetError(
            f"{reader.describe(index)} has 32-bit pixel mode {image.mode!r}, whose value range is ambiguous. Convert "
            "it to an 8-bit grayscale or RGB image, or remove it."
        )
    try:
        return image.convert(target_mode)
    except ValueError as error:
        raise DatasetError(
            f"{reader.describe(index)} has pixel mode {image.mode!r}, which cannot be converted to {target_mode}. "
            "Convert it to RGB or grayscale, or remove it."
        ) from error


def image_extensions() -> frozenset[str]:
    """File extensions of the image formats PIL can open, e.g. `.png`, `.jpg`."""
    Image.init()
    return frozenset(ext for ext, image_format in Image.registered_extensions().items() if image_format in Image.OPEN)


def is_image_name(relative_name: str, extensions: frozenset[str]) -> bool:
    parts = relative_name.split("/")
    return not any(part.startswith(".") for part in parts) and os.path.splitext(parts[-1])[1].lower() in extensions


def list_image_files(root: Path) -> list[str]:
    """Sorted POSIX paths, relative to `root`, of the image files below it (hidden files and folders skipped)."""
    extensions = image_extensions()
    names = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative_folder = Path(folder).relative_to(root)
        names.extend((relative_folder / name).as_posix() for name in files)
    return sorted(name for name in names if is_image_name(name, extensions))


def _imagefolder_records(root: Path, config: DataConfig) -> _ImageRecords:
    """An image folder: labels from `metadata.jsonl`/`metadata.csv`, else from class sub-folders, else none."""
    names = list_image_files(root)
    metadata_path = next((root / name for name in METADATA_FILE_NAMES if (root / name).is_file()), None)
    labels, class_names = None, None
    if metadata_path is not None:
        labels = _labels_from_metadata(root, metadata_path, names, config.label_column, config.conditional)
        label_hint = f"give every image a '{config.label_column}' value in {metadata_path.name}"
    else:
        label_hint = (
            "put each image in a sub-folder named after its class, or add a metadata.jsonl with 'file_name' and "
            f"'{config.label_column or DEFAULT_LABEL_COLUMN}' columns"
        )
        folders = [name.split("/")[0] if "/" in name else None for name in names]
        class_folders = sorted({folder for folder in folders if folder is not None})
        if config.label_column is not None and len(class_folders) > 1:
            class_names = class_folders
            index_of = {folder: index for index, folder in enumerate(class_folders)}
            labels = [None if folder is None else index_of[folder] for folder in folders]
    return _ImageRecords(
        reader=_FileImages(root, names),
        labels=labels,
        class_names=class_names,
        description=f"image folder {root}",
        label_source=str(metadata_path) if metadata_path is not None else f"the class sub-folders of {root}",
        label_hint=label_hint,
    )


def _labels_from_metadata(
    root: Path, metadata_path: Path, names: Sequence[str], label_column: str | None, conditional: bool | None
) -> list[object] | None:
    """Per-image labels from an `imagefolder` metadata file (`file_name` relative to `root`), `None` if absent."""
    try:
        data = metadata_path.read_bytes()
    except OSError as error:
        raise DatasetError(f"Could not read {metadata_path} ({error}). Fix or remove the metadata file.") from error
    text = _decode_text(data, str(metadata_path))
    try:
        if metadata_path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
    except ValueError as error:
        raise DatasetError(f"Could not parse {metadata_path} ({error}). Fix or remove the metadata file.") from error
    columns = sorted({column for row in rows if isinstance(row, dict) for column in row})
    if not rows or not all(isinstance(row, dict) and "file_name" in row for row in rows):
        raise DatasetError(
            f"{metadata_path} must have one row per image with a 'file_name' column; found columns {columns}."
        )
    known_names = set(names)
    label_of = {}
    for row in rows:
        file_name = Path(str(row["file_name"]).replace("\\", "/")).as_posix()
        if file_name not in known_names:
            raise DatasetError(
                f"{metadata_path} lists {file_name}, which is not an image file in {root}. Restore the file or "
                "remove its row."
            )
        label_of[file_name] = row.get(label_column) if label_column is not None else None
    if label_column is None:
        return None
    if label_column not in columns:
        if conditional or label_column != DEFAULT_LABEL_COLUMN:
            raise DatasetError(
                f"{metadata_path} has no label column '{label_column}'; its columns are {columns}. Pass "
                "--label_column with one of them, or --unconditional."
            )
        return None
    labels = [label_of.get(name) for name in names]
    if metadata_path.suffix == ".csv":
        labels = [None if label in (None, "") else label for label in labels]
        if all(label is None or _INTEGER_STRING.match(label) for label in labels):
            labels = [None if label is None else int(label) for label in labels]
    return labels


def _decode_text(data: bytes, source: str) -> str:
    """The UTF-8 text of a label file (a leading byte-order mark is dropped); a `DatasetError` naming it otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{source} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}). Re-save it with "
            "UTF-8 encoding."
        ) from error


def _edm_labels(labels_data: bytes, source: str, names: Sequence[str]) -> list[object] | None:
    """Per-image labels from an EDM `dataset.json` (`{"labels": [[name, label], ...]}` or `{"labels": null}`)."""
    labels_text = _decode_text(labels_data, source)
    try:
        entries = json.loads(labels_text)["labels"]
        if entries is not None:
            entries = {str(name).replace("\\", "/"): label for name, label in entries}
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f'Could not parse {source}: expected {{"labels": [["00000/img00000000.png", 6], ...]}} or '
            f'{{"labels": null}} ({type(error).__name__}: {error}).'
        ) from error
    if entries is None:
        return None
    known_names = set(names)
    for name in entries:
        if name not in known_names:
            raise DatasetError(
                f"{source} labels {name}, which is not an image in the dataset. Restore the file or remove the entry."
            )
    return [entries.get(name) for name in names]


def _edm_folder_records(root: Path, config: DataConfig) -> _ImageRecords:
    """An EDM dataset folder (PNGs plus `dataset.json`, as written by EDM's `dataset_tool.py`)."""
    names = list_image_files(root)
    labels_path = root / EDM_LABELS_FILE_NAME
    labels = None
    if config.label_column is not None:
        labels = _edm_labels(labels_path.read_bytes(), str(labels_path), names)
    return _ImageRecords(
        reader=_FileImages(root, names),
        labels=labels,
        class_names=None,
        description=f"EDM dataset {root}",
        label_source=str(labels_path),
        label_hint=f"list every image with its class index in {labels_path}",
    )


def _edm_zip_records(path: Path, archive: zipfile.ZipFile, config: DataConfig) -> _ImageRecords:
    """An EDM dataset zip (PNGs and an optional `dataset.json` at the archive root)."""
    extensions = image_extensions()
    members = set(archive.namelist())
    names = sorted(name for name in members if not name.endswith("/") and is_image_name(name, extensions))
    labels = None
    if config.label_column is not None and EDM_LABELS_FILE_NAME in members:
        labels = _edm_labels(archive.read(EDM_LABELS_FILE_NAME), f"{EDM_LABELS_FILE_NAME} in {path}", names)
    return _ImageRecords(
        reader=_ZipImages(path, names, archive),
        labels=labels,
        class_names=None,
        description=f"EDM dataset {path}",
        label_source=f"{EDM_LABELS_FILE_NAME} in {path}",
        label_hint=f"add a {EDM_LABELS_FILE_NAME} listing every image with its class index to {path}",
    )


def _hub_records(config: DataConfig) -> _ImageRecords:
    """The `"train"` split of a Hugging Face dataset, its images left encoded until `_decode_images`."""
    import datasets

    dataset = datasets.load_dataset(
        config.dataset_name, config.dataset_config_name, cache_dir=config.cache_dir, split="train"
    )
    source = config.dataset_name + (f" ({config.dataset_config_name})" if config.dataset_config_name else "")
    columns = list(dataset.column_names)
    if config.image_column not in columns:
        raise DatasetError(
            f"Dataset {source} has no image column '{config.image_column}'; its columns are {columns}. Pass "
            "--image_column with one of them."
        )
    labels, class_names = None, None
    label_column = config.label_column
    if label_column is not None and label_column not in columns:
        if config.conditional or label_column != DEFAULT_LABEL_COLUMN:
            raise DatasetError(
                f"Dataset {source} has no label column '{label_column}'; its columns are {columns}. Pass "
                "--label_column with one of them, or --unconditional."
            )
        label_column = None
    if label_column is not None:
        feature = dataset.features[label_column]
        labels = list(dataset[label_column])
        if isinstance(feature, datasets.ClassLabel):
            class_names = list(feature.names)
            labels = [None if label is None or label < 0 else label for label in labels]
    image_feature = dataset.features[config.image_column]
    holds_paths = isinstance(image_feature, datasets.Value) and image_feature.dtype in ("string", "large_string")
    if not (isinstance(image_feature, datasets.Image) or holds_paths):
        raise DatasetError(
            f"Column '{config.image_column}' of dataset {source} does not hold images or image paths "
            f"({image_feature}). Pass --image_column with the image column."
        )
    images = dataset.select_columns([config.image_column]).cast_column(
        config.image_column, datasets.Image(decode=False)
    )
    return _ImageRecords(
        # `datasets` names its caches by this fingerprint, which changes with the data files and the processing.
        reader=_HubImages(images, config.image_column, source, dataset._fingerprint),
        labels=labels,
        class_names=class_names,
        description=source,
        label_source=f"column '{label_column}'",
        label_hint=f"give every row a value in column '{label_column or DEFAULT_LABEL_COLUMN}'",
    )
