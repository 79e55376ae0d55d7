# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Decoding image files for training and evaluation: one mode conversion (grayscale or RGB, 16-bit scaled to 8
bits), center crop and resize, the size checks, and decoding in worker processes in order."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from .cache import DecodedImageWriter
from .config import DECODE_BATCH_SIZE, DataConfig
from .sources import ImageReader, ImageRecords, unreadable_image_error

logger = logging.getLogger(__name__)

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N"})
_UNSUPPORTED_MODES = frozenset({"I", "F"})


class ArraySink:
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
class DecodedImage:
    """One image after mode conversion, center crop and resize.

    `pixels` is `[C, H, W]` uint8 (C = 1 for grayscale files, else 3), `mode` the file's PIL mode and `size` its
    `(width, height)` before the resize to `resolution`.
    """

    pixels: np.ndarray
    mode: str
    size: tuple[int, int]


def decode_image(reader: ImageReader, index: int, resolution: int | None, center_crop: bool) -> DecodedImage | str:
    """Decode image `index`, or return the message of the `DatasetError` that makes it unusable (a one-line message
    crosses from a worker process intact, where a raised error would carry the worker's traceback)."""
    name = reader.describe(index)
    try:
        try:
            data = reader.read(index)
        except OSError as error:
            raise unreadable_image_error(name, error) from None
        image = open_image(data, name)
        mode = image.mode
        image = to_grayscale_or_rgb(image, name)
    except DatasetError as error:
        return str(error)
    if center_crop:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    size = image.size
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return DecodedImage(image_pixels(image), mode, size)


class _DecodeJobs(torch.utils.data.Dataset):
    """Item `position` is the `position`-th selected image through `decode_image` (for decoding worker processes)."""

    def __init__(
        self,
        reader: ImageReader,
        selected: np.ndarray,
        resolution: int | None,
        center_crop: bool,
    ):
        self.reader, self.selected, self.resolution, self.center_crop = reader, selected, resolution, center_crop

    def __len__(self) -> int:
        return len(self.selected)

    def __getitem__(self, position: int) -> DecodedImage | str:
        return decode_image(self.reader, int(self.selected[position]), self.resolution, self.center_crop)


def _keep_list(batch: list) -> list:
    return batch


def _decoded_in_order(
    records: ImageRecords, selected: np.ndarray, config: DataConfig
) -> Iterator[DecodedImage | str]:
    """`decode_image` of every selected image, in order, from `config.num_workers` processes (a few batches ahead)."""
    loader = torch.utils.data.DataLoader(
        _DecodeJobs(records.reader, selected, config.resolution, config.center_crop),
        batch_size=DECODE_BATCH_SIZE,
        num_workers=config.num_workers,
        collate_fn=_keep_list,
        generator=torch.Generator(),  # starting the workers must not consume the global RNG
    )
    for batch in loader:
        yield from batch


def decode_images(
    records: ImageRecords, selected: np.ndarray, config: DataConfig, sink: ArraySink | DecodedImageWriter
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
            is_grayscale = decoded.mode in GRAYSCALE_MODES
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
    records: ImageRecords, index: int, size: tuple[int, int], first_index: int, first_size: tuple[int, int] | None
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


def open_image(data: bytes, name: str) -> Image.Image:
    """The decoded image of an encoded file's bytes; a one-line `DatasetError` naming the file (`name`) when it is not
    a readable image, including one whose pixel count is a decompression bomb."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise unreadable_image_error(name, error) from None
    return image


def to_grayscale_or_rgb(image: Image.Image, name: str) -> Image.Image:
    """`image` in mode "L" (every grayscale mode: "1", "L", "LA", 16-bit "I;16…", the last scaled to 8 bits as
    `x / 257`) or "RGB" (alpha dropped, palettes expanded); a `DatasetError` naming the file for 32-bit "I" and "F"
    modes, whose value range is ambiguous, and for modes that cannot be converted. Training and evaluation read every
    image through this one conversion."""
    target_mode = "L" if image.mode in GRAYSCALE_MODES else "RGB"
    if image.mode == target_mode:
        return image
    if image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.round(array / 257).astype(np.uint8))
    if image.mode in _UNSUPPORTED_MODES:
        raise DatasetError(
            f"{name} has 32-bit pixel mode {image.mode!r}, whose value range is ambiguous. Convert it to an 8-bit "
            "(or 16-bit) grayscale or RGB image, or remove it."
        )
    try:
        return image.convert(target_mode)
    except ValueError as error:
        raise DatasetError(
            f"{name} has pixel mode {image.mode!r}, which cannot be converted to {target_mode}. Convert it to RGB or "
            "grayscale, or remove it."
        ) from error


def image_pixels(image: Image.Image) -> np.ndarray:
    """uint8 (C, H, W) pixels of an "L" or "RGB" image."""
    array = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))