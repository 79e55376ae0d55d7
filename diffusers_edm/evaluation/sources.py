# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Where the uint8 images (B, C, H, W) of an evaluation come from: a folder or zip of image files, a training dataset,
or an [`EDMPipeline`] generating them per seed. Each source hands out images by index, so that a batch of indices gives
the same pixels whichever process asks for it."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import EDMImageDataset, image_extensions, is_image_name, list_image_files, select_subset
from ..data.decoding import image_pixels, open_image, to_grayscale_or_rgb
from ..data.sources import read_zip_member
from ..errors import DatasetError, ImageSourceError
from ..pipelines.latents import quantize_vae_pixels
from ..pipelines.pipeline_edm import EDMPipeline
from ..pipelines.postprocessing import quantize_edm_images


class ImageFiles:
    """The image files of a folder (recursively) or a zip archive, in sorted order of their relative paths as EDM's
    dataset class lists them (listed as `train_edm.py` lists them), optionally reduced to `fid.py`'s seeded subset.
    Hidden files and folders (e.g. macOS `._*` files) are skipped; the official class would fail on them.

    Args:
        path (`str` or `os.PathLike`): the folder or `.zip` file (e.g. the `--outdir` of `diffusers_edm.generate`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self._zip_member = False
            self.names = list_image_files(self.path)
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip_member = True
            extensions = image_extensions()
            with zipfile.ZipFile(self.path) as archive:
                self.names = sorted(name for name in archive.namelist()
                                    if not name.endswith("/") and is_image_name(name, extensions))
        elif self.path.exists():
            raise ImageSourceError(f"--images {self.path} is neither a folder nor a zip archive of images.")
        else:
            raise ImageSourceError(f"--images {self.path} does not exist; pass a folder or zip of images.")
        self._archive: zipfile.ZipFile | None = None
        self._archive_pid: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, num: int, seed: int = 0) -> list[str]:
        """The names `fid.py calc --num num --seed seed` scores: all of them when there are exactly `num`, otherwise
        the seeded subset (`np.random.RandomState(seed)` shuffle of the indices, first `num`, sorted).

        Raises:
            ImageSourceError: fewer than `num` images.
        """
        if not self.names:
            raise ImageSourceError(f"{self.path} holds no images (image files are recognised by their extension, e.g."
                                   " .png or .jpg; hidden files are skipped); point --images at the generated images.")
        if len(self.names) < num:
            raise ImageSourceError(f"Found {len(self.names)} images in {self.path}, fewer than --num {num}; generate"
                                   f" more images or pass --num {len(self.names)} (FID depends on the number of"
                                   " images, so compare only scores with the same --num).")
        return [self.names[i] for i in select_subset(len(self.names), num, seed)]

    def read(self, name: str) -> np.ndarray:
        """The uint8 pixels (C, H, W) of one file, read as `train_edm.py` reads it (see
        [`~diffusers_edm.data.decoding.to_grayscale_or_rgb`]): 1 channel for grayscale images (16-bit ones scaled to 8
        bits), 3 for colour (alpha dropped); 32-bit images are refused."""
        where = self._describe(name)
        try:
            data = read_zip_member(self._zip(), name, where) if self._zip_member else (self.path / name).read_bytes()
            return image_pixels(to_grayscale_or_rgb(open_image(data, where), where))
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise ImageSourceError(f"Could not read image {self._describe(name)} ({type(error).__name__}: {error});"
                                   " remove or replace the file.") from None
        except DatasetError as error:
            raise ImageSourceError(str(error)) from None

    def read_batch(self, names: Sequence[str], shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) of the files; every image must have the `shape` (C, H, W) of the first one."""
        images = []
        for name in names:
            pixels = self.read(name)
            shape = shape or pixels.shape
            if pixels.shape != shape:
                raise ImageSourceError(f"{self._describe(name)} has shape {pixels.shape} (C, H, W) but other images"
                                       f" have {shape}; every image must have the same size and channel count.")
            images.append(torch.from_numpy(pixels.copy()))
        return torch.stack(images)

    def _zip(self) -> zipfile.ZipFile:
        # One handle per process: DataLoader workers must not share the parent's file position.
        if self._archive is None or self._archive_pid != os.getpid():
            self._archive, self._archive_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._archive

    def _describe(self, name: str) -> str:
        return f"{name} (in {self.path})" if self._zip_member else str(self.path / name)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_archive": None, "_archive_pid": None}


def dataset_images(dataset: EDMImageDataset, indices: Sequence[int]) -> torch.Tensor:
    """uint8 (B, C, H, W) of training-dataset items, quantised as saved images are ([`quantize_edm_images`]): images
    that came from 8-bit files come back unchanged."""
    return quantize_edm_images(torch.stack([dataset[i][0] for i in indices]))


def generated_images(pipe: EDMPipeline, seeds: Sequence[int], **sample_kwargs) -> torch.Tensor:
    """uint8 (B, C, H, W) images of `pipe(seeds=seeds, **sample_kwargs)` (e.g. `num_inference_steps`,
    `class_labels`, `guidance_scale`), the pixels `diffusers_edm.generate` writes to its PNGs (a latent model's decoded
    by its `vae`)."""
    if pipe.vae is not None:
        return quantize_vae_pixels(pipe(seeds=list(seeds), output_type="pt", **sample_kwargs).images)
    sample = pipe(seeds=list(seeds), output_type="latent", **sample_kwargs).images
    return quantize_edm_images(sample)
