# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Class labels of a dataset: read from `metadata.jsonl`/`.csv`, EDM's `dataset.json`, class sub-folders or a
`datasets` column, and resolved into class indices and names."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from .config import DEFAULT_LABEL_COLUMN, MAX_CLASSES, SMALL_CLASS_COUNT, DataConfig

if TYPE_CHECKING:
    from .sources import ImageRecords

logger = logging.getLogger(__name__)

_INTEGER_STRING = re.compile(r"^[+-]?\d+$")


def resolve_labels(records: ImageRecords, config: DataConfig) -> tuple[np.ndarray | None, int, list[str] | None]:
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


def labels_from_metadata(
    root: Path, metadata_path: Path, names: Sequence[str], label_column: str | None, conditional: bool | None,
    flag: str = "--label_column",
) -> list[object] | None:
    """Per-image labels (or, with `flag="--caption_column"`, captions) from an `imagefolder` metadata file (`file_name`
    relative to `root`), `None` if absent."""
    try:
        data = metadata_path.read_bytes()
    except OSError as error:
        raise DatasetError(f"Could not read {metadata_path} ({error}). Fix or remove the metadata file.") from error
    text = decode_text(data, str(metadata_path))
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
            what = "caption" if flag == "--caption_column" else "label"
            raise DatasetError(
                f"{metadata_path} has no {what} column '{label_column}'; its columns are {columns}. Pass "
                f"{flag} with one of them" + (", or --unconditional." if flag == "--label_column" else ".")
            )
        return None
    labels = [label_of.get(name) for name in names]
    if metadata_path.suffix == ".csv":
        labels = [None if label in (None, "") else label for label in labels]
        if all(label is None or _INTEGER_STRING.match(label) for label in labels):
            labels = [None if label is None else int(label) for label in labels]
    return labels


def check_captions(captions: Sequence[object], describe, source: str) -> list[str]:
    """The captions as strings; a `DatasetError` naming the first image without one (a missing or non-text value)."""
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise DatasetError(f"{describe(index)} has no caption in {source} (found {caption!r}); give every image a"
                               " text caption (an empty string is allowed) or remove it.")
    return list(captions)


def decode_text(data: bytes, source: str) -> str:
    """The UTF-8 text of a label file (a leading byte-order mark is dropped); a `DatasetError` naming it otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{source} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}). Re-save it with "
            "UTF-8 encoding."
        ) from error


def edm_labels(labels_data: bytes, source: str, names: Sequence[str]) -> list[object] | None:
    """Per-image labels from an EDM `dataset.json` (`{"labels": [[name, label], ...]}` or `{"labels": null}`)."""
    labels_text = decode_text(labels_data, source)
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
