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

Every image is decoded once into a `uint8` tensor held in memory (converted to float on access), so every problem with
the data (unreadable files, mixed sizes, missing labels, ...) surfaces as a `DatasetError` before training starts.

Channels: the images are grayscale (1 channel) when every image used is grayscale (PIL modes `1`, `L`, `LA`, `I;16`),
else RGB (3 channels), whatever their order. When grayscale and colour images are mixed, each grayscale image is copied
to the three channels and a warning names one image of each kind. Alpha is dropped, palette images are expanded.

Labels: integer labels are class indices, giving K = largest label + 1 classes (as EDM). K may exceed the number of
images only up to `SMALL_CLASS_COUNT` (a few images that keep e.g. ImageNet's class indices) and never
`MAX_CLASSES`: a larger K is almost always a stray label, and would allocate K-long label vectors and a K-row class
embedding. Label files (`metadata.jsonl`/`.csv`, `dataset.json`) must be UTF-8 (a byte-order mark is allowed).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


logger = logging.getLogger(__name__)

DIGITS_DEFAULT_RESOLUTION = 16
DEFAULT_LABEL_COLUMN = "label"
METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")
EDM_LABELS_FILE_NAME = "dataset.json"
MAX_CLASSES = 100_000
"""Most classes integer labels may define (ImageNet-21k has 21,841)."""
SMALL_CLASS_COUNT = 1_000
"""Class counts up to this are accepted even when the dataset has fewer images than classes."""

_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N"})
_UNSUPPORTED_MODES = frozenset({"I", "F"})
_INTEGER_STRING = re.compile(r"^[+-]?\d+$")


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


class EDMImageDataset(torch.utils.data.Dataset):
    """Images held in memory, returned as `(image, label)` with EDM's scaling and optional x-flip duplication.

    Args:
        images (`torch.Tensor`):
            `[N, C, H, W]` images, either `uint8` in `[0, 255]` (mapped to `x / 127.5 - 1` on access) or float32
            already in `[-1, 1]`.
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
        images: torch.Tensor,
        class_indices: torch.Tensor | None,
        num_classes: int,
        class_names: list[str] | None,
        source_description: str,
        xflip: bool = False,
    ):
        if images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"`images` must be [N, C, H, H], got shape {tuple(images.shape)}.")
        if images.dtype not in (torch.uint8, torch.float32):
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


@dataclass
class _ImageRecords:
    """Encoded images of one source, before label resolution, subset selection and decoding.

    `describe(i)` names image `i` in messages without reading it; `read(i)` returns its encoded bytes. `labels` holds
    one raw label per image (`None` where an image has none), or is `None` when the source has no labels at all.
    `class_names`, when given, means the labels are indices into it. `label_source` names where the labels come from
    (e.g. the metadata file); `label_hint` tells users how to add labels.
    """

    count: int
    describe: Callable[[int], str]
    read: Callable[[int], bytes]
    labels: list[object] | None
    class_names: list[str] | None
    description: str
    label_source: str
    label_hint: str


def build_dataset(config: DataConfig) -> EDMImageDataset:
    """Load, validate and prepare the training images described by `config`.

    All validation happens here, before training starts: bad configuration, missing or empty folders, unreadable
    images, mixed or non-square sizes without `resolution`/`center_crop`, labels missing when `conditional=True`,
    label files that reference missing images, and unknown dataset columns raise `DatasetError` (a `ValueError`).

    Args:
        config (`DataConfig`): The data source and preparation options.

    Returns:
        `EDMImageDataset`: Images in `[-1, 1]` with one-hot labels (empty when unconditional).
    """
    _check_config(config)
    if config.dataset_name is not None:
        return _assemble(_hub_records(config), config)
    if config.train_data_dir is None:
        return _digits_dataset(config)
    path = Path(config.train_data_dir)
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DatasetError(
                f"--train_data_dir {path} is a file but not a .zip archive. Pass a folder of images or an EDM .zip."
            )
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path} is not a valid zip archive. Re-create it (e.g. with EDM's dataset_tool.py).")
        with zipfile.ZipFile(path) as archive:
            return _assemble(_edm_zip_records(path, archive, config), config)
    if not path.is_dir():
        raise DatasetError(f"--train_data_dir {path} does not exist. Pass an existing image folder or .zip file.")
    if (path / EDM_LABELS_FILE_NAME).is_file():
        return _assemble(_edm_folder_records(path, config), config)
    return _assemble(_imagefolder_records(path, config), config)


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
    images = _decode_images(records, selected, config)
    dataset = EDMImageDataset(
        images=torch.from_numpy(images),
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


def _decode_images(records: _ImageRecords, selected: np.ndarray, config: DataConfig) -> np.ndarray:
    """Decode the selected images into a `uint8` `[N, C, H, W]` array of one square size: grayscale when every image
    is, else RGB (grayscale images copied to the three channels, with a warning naming an image of each kind)."""
    images = None
    first_name = None
    examples: dict[bool, tuple[str, str]] = {}  # is_grayscale -> (name, mode) of the first such image
    counts = {True: 0, False: 0}
    reported_aspect_change = False
    for position, index in enumerate(selected.tolist()):
        name = records.describe(index)
        image = _open_image(records, index, name)
        is_grayscale = image.mode in _GRAYSCALE_MODES
        examples.setdefault(is_grayscale, (name, image.mode))
        counts[is_grayscale] += 1
        image = _convert_mode(image, "L" if is_grayscale else "RGB", name)
        if config.center_crop:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if config.resolution is not None:
            if image.width != image.height and not reported_aspect_change:
                logger.warning(
                    "%s is %dx%d and is stretched to %dx%d; pass --center_crop to keep the aspect ratio.",
                    name,
                    image.width,
                    image.height,
                    config.resolution,
                    config.resolution,
                )
                reported_aspect_change = True
            if image.size != (config.resolution, config.resolution):
                image = image.resize((config.resolution, config.resolution), Image.Resampling.LANCZOS)
        elif image.width != image.height:
            raise DatasetError(
                f"{name} is {image.width}x{image.height} but EDM trains on square images. Pass --center_crop to crop "
                "every image to a centred square (and --resolution to resize)."
            )
        elif images is not None and image.size != (images.shape[3], images.shape[2]):
            raise DatasetError(
                f"{name} is {image.width}x{image.height} but {first_name} is {images.shape[3]}x{images.shape[2]}; all "
                "images must have one size: pass --resolution to resize every image."
            )
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        if images is None:
            first_name = name
            images = np.empty((len(selected), array.shape[2], array.shape[0], array.shape[1]), dtype=np.uint8)
        elif array.shape[2] < images.shape[1]:
            array = np.repeat(array, 3, axis=2)
        elif array.shape[2] > images.shape[1]:  # the first colour image: the grayscale ones so far become RGB
            images = np.repeat(images, 3, axis=1)
        images[position] = array.transpose(2, 0, 1)
    if len(examples) == 2:
        (gray_name, gray_mode), (colour_name, colour_mode) = examples[True], examples[False]
        logger.warning(
            "Images mix grayscale and colour: %d are grayscale (e.g. %s, mode %s) and %d colour (e.g. %s, mode %s). "
            "Training on RGB with each grayscale image copied to the three channels; to train in grayscale, convert "
            "every image to grayscale first.",
            counts[True],
            gray_name,
            gray_mode,
            counts[False],
            colour_name,
            colour_mode,
        )
    return images


def _open_image(records: _ImageRecords, index: int, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(records.read(index)))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(
            f"Could not read image {name} ({type(error).__name__}: {error}). Remove the file from the dataset or "
            "replace it with a valid image."
        ) from error
    return image


def _convert_mode(image: Image.Image, target_mode: str, name: str) -> Image.Image:
    """Convert to `"L"` or `"RGB"`; alpha is dropped and 16-bit grayscale is scaled to 8 bits (`x / 257`)."""
    if image.mode == target_mode:
        return image
    if image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.round(array / 257).astype(np.uint8))
        return image if target_mode == "L" else image.convert(target_mode)
    if image.mode in _UNSUPPORTED_MODES:
        raise DatasetError(
            f"{name} has 32-bit pixel mode {image.mode!r}, whose value range is ambiguous. Convert it to an 8-bit "
            "grayscale or RGB image, or remove it."
        )
    try:
        return image.convert(target_mode)
    except ValueError as error:
        raise DatasetError(
            f"{name} has pixel mode {image.mode!r}, which cannot be converted to {target_mode}. Convert it to RGB or "
            "grayscale, or remove it."
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
        count=len(names),
        describe=lambda i: str(root / names[i]),
        read=lambda i: (root / names[i]).read_bytes(),
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
        count=len(names),
        describe=lambda i: str(root / names[i]),
        read=lambda i: (root / names[i]).read_bytes(),
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
        count=len(names),
        describe=lambda i: f"{names[i]} (in {path})",
        read=lambda i: archive.read(names[i]),
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

    def describe(index: int) -> str:
        path = images[index][config.image_column].get("path")
        return f"row {index} of {source}" + (f" ({path})" if path else "")

    def read(index: int) -> bytes:
        value = images[index][config.image_column]
        if value.get("bytes") is not None:
            return value["bytes"]
        with open(value["path"], "rb") as file:
            return file.read()

    return _ImageRecords(
        count=len(dataset),
        describe=describe,
        read=read,
        labels=labels,
        class_names=class_names,
        description=source,
        label_source=f"column '{label_column}'",
        label_hint=f"give every row a value in column '{label_column or DEFAULT_LABEL_COLUMN}'",
    )
