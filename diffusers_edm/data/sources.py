# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The image sources of a dataset: an image folder, an EDM dataset folder or zip, or a `datasets` dataset. Each is
read as `ImageRecords`: an image reader that names and reads image `i` as encoded bytes, and the raw labels."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PIL import Image

from ..environment import offline
from ..errors import DatasetError, first_line
from .config import DEFAULT_LABEL_COLUMN, DataConfig
from .labels import check_captions, edm_labels, labels_from_metadata

if TYPE_CHECKING:
    import datasets

METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")
EDM_LABELS_FILE_NAME = "dataset.json"

MAX_IMAGE_FILE_BYTES = 256 * 2**20
"""Largest size an image in a zip archive may unpack to (a 4096x4096 16-bit RGBA image is 128 MiB): a larger member
is refused before it is read, so a small archive cannot claim gigabytes of memory."""

T = TypeVar("T")


def unreadable_image_error(name: str, error: Exception) -> DatasetError:
    return DatasetError(
        f"Could not read image {name} ({type(error).__name__}: {error}). Remove the file from the dataset or replace "
        "it with a valid image."
    )


def read_zip_member(archive: zipfile.ZipFile, name: str, description: str) -> bytes:
    """The bytes of an image member of `archive`; a `DatasetError` naming it (as `description`) when it would unpack
    to more than [`MAX_IMAGE_FILE_BYTES`]."""
    size = archive.getinfo(name).file_size
    if size > MAX_IMAGE_FILE_BYTES:
        raise DatasetError(f"{description} unpacks to {size:,} bytes, more than any image may"
                           f" ({MAX_IMAGE_FILE_BYTES:,}); remove it from the archive.")
    return archive.read(name)


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
        """Digest of the file names and their bytes (not their times, which copies can keep while contents change);
        it reads every file once."""
        digest = hashlib.blake2b(digest_size=32)
        for index, name in enumerate(self.names):
            try:
                data = (self.root / name).read_bytes()
            except OSError as error:
                raise unreadable_image_error(self.describe(index), error) from error
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(hashlib.blake2b(data, digest_size=32).digest())
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
        return read_zip_member(self._archive, self.names[index], self.describe(index))

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


ImageReader = _FileImages | _ZipImages | _HubImages


@dataclass
class ImageRecords:
    """Encoded images of one source, before label resolution, subset selection and decoding.

    `reader` names image `i` in messages without reading it (`describe(i)`), returns its encoded bytes (`read(i)`) and
    is pickled into decoding worker processes. `labels` holds one raw label per image (`None` where an image has
    none), or is `None` when the source has no labels at all. `class_names`, when given, means the labels are indices
    into it. `label_source` names where the labels come from (e.g. the metadata file); `label_hint` tells users how
    to add labels. `captions` holds every image's caption for captioned data (`DataConfig.caption_column`).
    """

    reader: ImageReader
    labels: list[object] | None
    class_names: list[str] | None
    description: str
    label_source: str
    label_hint: str
    captions: list[str] | None = None

    @property
    def count(self) -> int:
        return len(self.reader)

    def describe(self, index: int) -> str:
        return self.reader.describe(index)


def records_of(config: DataConfig, action: Callable[[ImageRecords, DataConfig], T]) -> T:
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


def _imagefolder_records(root: Path, config: DataConfig) -> ImageRecords:
    """An image folder: labels from `metadata.jsonl`/`metadata.csv`, else from class sub-folders, else none."""
    names = list_image_files(root)
    metadata_path = next((root / name for name in METADATA_FILE_NAMES if (root / name).is_file()), None)
    labels, class_names = None, None
    if config.caption_column is not None:
        if metadata_path is None:
            raise DatasetError(f"--caption_column {config.caption_column}: image folder {root} has no metadata.jsonl"
                               " or metadata.csv; add one with 'file_name' and"
                               f" '{config.caption_column}' columns (one row per image).")
        captions = labels_from_metadata(root, metadata_path, names, config.caption_column, True, "--caption_column")
        return ImageRecords(reader=_FileImages(root, names), labels=None, class_names=None,
                            description=f"image folder {root}", label_source=str(metadata_path),
                            label_hint=f"give every image a '{config.caption_column}' value in {metadata_path.name}",
                            captions=check_captions(captions, lambda i: names[i], str(metadata_path)))
    if metadata_path is not None:
        labels = labels_from_metadata(root, metadata_path, names, config.label_column, config.conditional)
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
    return ImageRecords(
        reader=_FileImages(root, names),
        labels=labels,
        class_names=class_names,
        description=f"image folder {root}",
        label_source=str(metadata_path) if metadata_path is not None else f"the class sub-folders of {root}",
        label_hint=label_hint,
    )


def _edm_folder_records(root: Path, config: DataConfig) -> ImageRecords:
    """An EDM dataset folder (PNGs plus `dataset.json`, as written by EDM's `dataset_tool.py`)."""
    _refuse_captions(config, f"EDM dataset {root}")
    names = list_image_files(root)
    labels_path = root / EDM_LABELS_FILE_NAME
    labels = None
    if config.label_column is not None:
        labels = edm_labels(labels_path.read_bytes(), str(labels_path), names)
    return ImageRecords(
        reader=_FileImages(root, names),
        labels=labels,
        class_names=None,
        description=f"EDM dataset {root}",
        label_source=str(labels_path),
        label_hint=f"list every image with its class index in {labels_path}",
    )


def _edm_zip_records(path: Path, archive: zipfile.ZipFile, config: DataConfig) -> ImageRecords:
    """An EDM dataset zip (PNGs and an optional `dataset.json` at the archive root)."""
    _refuse_captions(config, f"EDM dataset {path}")
    extensions = image_extensions()
    members = set(archive.namelist())
    names = sorted(name for name in members if not name.endswith("/") and is_image_name(name, extensions))
    labels = None
    if config.label_column is not None and EDM_LABELS_FILE_NAME in members:
        labels = edm_labels(archive.read(EDM_LABELS_FILE_NAME), f"{EDM_LABELS_FILE_NAME} in {path}", names)
    return ImageRecords(
        reader=_ZipImages(path, names, archive),
        labels=labels,
        class_names=None,
        description=f"EDM dataset {path}",
        label_source=f"{EDM_LABELS_FILE_NAME} in {path}",
        label_hint=f"add a {EDM_LABELS_FILE_NAME} listing every image with its class index to {path}",
    )


def _refuse_captions(config: DataConfig, description: str) -> None:
    if config.caption_column is not None:
        raise DatasetError(f"{description} has class labels, not captions; for --caption_column use an image folder"
                           " with a metadata.jsonl or a datasets dataset with a caption column.")


def _hub_records(config: DataConfig) -> ImageRecords:
    """The `"train"` split of a Hugging Face dataset, its images left encoded until `decode_images`."""
    import datasets

    source = config.dataset_name + (f" ({config.dataset_config_name})" if config.dataset_config_name else "")
    try:
        dataset = datasets.load_dataset(
            config.dataset_name, config.dataset_config_name, cache_dir=config.cache_dir, split="train"
        )
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:  # unreachable, offline, absent
        why = " (offline mode is on: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline(datasets=True) else ""
        raise DatasetError(
            f"--dataset_name {source}: could not load its train split{why}: {first_line(error)}. Check the name, "
            "download it once while online (it is then cached), or pass a local path or --train_data_dir."
        ) from None
    columns = list(dataset.column_names)
    if config.image_column not in columns:
        raise DatasetError(
            f"Dataset {source} has no image column '{config.image_column}'; its columns are {columns}. Pass "
            "--image_column with one of them."
        )
    labels, class_names, captions = None, None, None
    label_column = config.label_column
    if config.caption_column is not None:
        if config.caption_column not in columns:
            raise DatasetError(f"Dataset {source} has no caption column '{config.caption_column}'; its columns are"
                               f" {columns}. Pass --caption_column with one of them.")
        captions = check_captions(list(dataset[config.caption_column]), lambda i: f"row {i} of {source}",
                                  f"column '{config.caption_column}'")
        label_column = None
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
    return ImageRecords(
        # `datasets` names its caches by this fingerprint, which changes with the data files and the processing.
        reader=_HubImages(images, config.image_column, source, dataset._fingerprint),
        labels=labels,
        class_names=class_names,
        description=source,
        label_source=f"column '{label_column}'",
        label_hint=f"give every row a value in column '{label_column or DEFAULT_LABEL_COLUMN}'",
        captions=captions,
    )
