# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The training data of latent-space training (`train_edm.py --vae`, EDM2's ImageNet-512 recipe).

The training images are encoded once, before training, into a cache of every item's posterior mean and standard
deviation (2C channels for a C-channel VAE: EDM2's dataset format; x-flipped items are encoded as they are, so both
orientations are). Every step then draws a latent (mean + n · std) and scales it to the model's working range
(`diffusers_edm.pipelines.latents`). The cache is the decoded-image cache's machinery with float32 items: written
under a staging name and moved into place when complete, keyed by the data's content and the VAE's weights (another
VAE or other data is another cache), checked by its SHA-256 on every use, read one item per access. The processes of
an `accelerate` run encode chunks of `ENCODE_CHUNK` items round-robin into part files that the main process joins in
order, so any number of processes writes the same file; its folder must be visible to all of them.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from diffusers.models import AutoencoderKL

from ..data import EDMImageDataset
from ..data.cache import DecodedCache, DecodedImageFile, default_decoded_cache_dir, digest
from ..errors import TrainingError, first_line, write_error_reason
from ..pipelines.latents import EDM2_FINAL_STD, EDM2_RAW_MEAN, EDM2_RAW_STD, encode_raw_latents

logger = logging.getLogger(__name__)

LATENT_FORMAT_VERSION = 1
"""Changes whenever the encoding changes, so that older latent caches are rebuilt."""

ENCODE_CHUNK = 8
"""Items per VAE call. Chunk k is encoded by process k mod W, always with the same items, so the cache does not depend
on the number of processes W."""

EDM2_VAE_NAMES = ("stabilityai/sd-vae-ft-mse",)
"""VAEs whose latent statistics are EDM2's published ones (its ImageNet-512 models); other VAEs get their data's."""


EDM2_VAE_CONFIG = {"in_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512]}
"""The shape-defining part of `stabilityai/sd-vae-ft-mse`'s config (4 latent channels, 8x downsampling), for
`--dry_run` on a machine that has not downloaded it."""


class LatentDataset(torch.utils.data.Dataset):
    """The encoded training set: item i is ([posterior mean, posterior std] (2C, h, w) float32, one-hot label) of item
    i of the pixel dataset.

    Args:
        raw (`DecodedImageFile`): the latent cache file, (N, 2C, h, w) float32.
        pixels (`EDMImageDataset`): the images it encodes (labels, class names and description come from it).
    """

    def __init__(self, raw: DecodedImageFile, pixels: EDMImageDataset) -> None:
        if raw.shape[0] != len(pixels):
            raise ValueError(f"the latent cache holds {raw.shape[0]} items for {len(pixels)} images.")
        self.raw, self.pixels = raw, pixels
        self.num_classes, self.class_names = pixels.num_classes, pixels.class_names
        self.source_description = pixels.source_description

    @property
    def num_channels(self) -> int:
        """Latent channels C (the items hold 2C: mean and standard deviation)."""
        return self.raw.shape[1] // 2

    @property
    def resolution(self) -> int:
        """Side length of the latents."""
        return self.raw.shape[2]

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.raw[index % len(self)], self.pixels.label(index)


def vae_location(name_or_path: str) -> tuple[str, str | None]:
    """(`name_or_path`, subfolder) of a `--vae` value: an `EDMPipeline` folder's `vae/` (e.g. a converted EDM2 model
    one fine-tunes), else the value itself (an `AutoencoderKL` folder or Hub id)."""
    folder = Path(name_or_path)
    if (folder / "model_index.json").is_file() and (folder / "vae" / "config.json").is_file():
        return name_or_path, "vae"
    return name_or_path, None


def load_vae(name_or_path: str, cache_dir: str | None = None, token: str | None = None) -> AutoencoderKL:
    """The `--vae` autoencoder in eval mode (float32); a one-line TrainingError when it cannot be loaded."""
    location, subfolder = vae_location(name_or_path)
    try:
        with warnings.catch_warnings():  # diffusers' deprecation notices would precede an error line
            warnings.simplefilter("ignore")
            return AutoencoderKL.from_pretrained(location, subfolder=subfolder, cache_dir=cache_dir,
                                                 token=token).eval()
    except (OSError, ValueError) as error:
        raise TrainingError(f"--vae {name_or_path} could not be loaded ({first_line(error)}); pass a diffusers"
                            " AutoencoderKL folder or Hub id (offline: a folder saved with save_pretrained).") from None


def read_vae_config(name_or_path: str, cache_dir: str | None = None, token: str | None = None) -> dict:
    """The `--vae` config only (no weights), for `--dry_run`; EDM2's VAE's known shape when it cannot be read."""
    location, subfolder = vae_location(name_or_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(AutoencoderKL.load_config(location, subfolder=subfolder, cache_dir=cache_dir, token=token))
    except (OSError, ValueError) as error:
        if name_or_path in EDM2_VAE_NAMES:
            return dict(EDM2_VAE_CONFIG)
        raise TrainingError(f"--vae {name_or_path} could not be read ({first_line(error)}); pass a diffusers"
                            " AutoencoderKL folder or Hub id (offline: a folder saved with save_pretrained).") from None


def vae_scale_factor(vae_config) -> int:
    """Pixels per latent along each side: 2^(levels − 1)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def check_vae_fits(vae_config, resolution: int, channels: int, name: str) -> tuple[int, int]:
    """The latent (channels, resolution) of `resolution`-pixel images with `channels` channels through the VAE; a
    TrainingError when the resolution is not a multiple of its downsampling or the channels do not fit (1-channel
    images are repeated to 3 for an RGB VAE)."""
    factor = vae_scale_factor(vae_config)
    if resolution % factor:
        lower, upper = resolution // factor * factor, (resolution // factor + 1) * factor
        raise TrainingError(f"--vae {name} downsamples {factor}x, which does not divide --resolution {resolution};"
                            f" pass --resolution {lower if lower else upper} or {upper}.")
    vae_channels = vae_config["in_channels"]
    if channels != vae_channels and not (channels == 1 and vae_channels == 3):
        raise TrainingError(f"--vae {name} encodes {vae_channels}-channel images but the data has {channels}; pass"
                            " data the VAE was made for.")
    return vae_config["latent_channels"], resolution // factor


def latent_statistics(vae: AutoencoderKL, name: str, info: dict) -> tuple[list[float], list[float]]:
    """The raw latents' per-channel mean and standard deviation: those in the VAE's config (a pipeline's VAE, e.g. a
    converted EDM2 model being fine-tuned), EDM2's published values for its VAE, otherwise those of the encoded
    training data (recorded in the cache's `info`)."""
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None and len(mean) == len(std) == vae.config.latent_channels:
        return list(mean), list(std)
    if name in EDM2_VAE_NAMES and vae.config.latent_channels == len(EDM2_RAW_MEAN):
        return list(EDM2_RAW_MEAN), list(EDM2_RAW_STD)
    return list(info["mean"]), list(info["std"])


def attach_latent_statistics(vae: AutoencoderKL, mean: list[float], std: list[float]) -> None:
    """Writes the latent transform into the VAE's config (the convention `EDMPipeline` decodes with): `latents_mean`,
    `latents_std` and `scaling_factor` = σ_data (EDM2's final_std)."""
    vae.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std],
                           scaling_factor=EDM2_FINAL_STD)


def vae_fingerprint(vae: AutoencoderKL) -> str:
    """A digest of the VAE's architecture and weights (not of the latent statistics in its config)."""
    config = {key: value for key, value in vae.config.items()
              if not key.startswith("_") and key not in ("latents_mean", "latents_std", "scaling_factor")}
    tensors = {key: digest(value.detach().cpu().contiguous().numpy().tobytes())
               for key, value in vae.state_dict().items()}
    return digest({"config": config, "tensors": tensors})


def encode_dataset(pixels: EDMImageDataset, vae: AutoencoderKL, vae_name: str, cache_dir: str | None,
                   accelerator: Accelerator) -> LatentDataset:
    """The latent dataset of `pixels` through `vae`, from its cache or encoded now (all processes together; call it on
    every process).

    Raises:
        TrainingError: the cache folder cannot be written.
    """
    folder = Path(cache_dir) if cache_dir else default_decoded_cache_dir()
    fingerprint = digest({"format": LATENT_FORMAT_VERSION, "data": pixels.content_digest(),
                          "vae": vae_fingerprint(vae)})
    cache = DecodedCache(folder, digest({"latents": pixels.source_description, "vae": vae_name}), f"latents-{vae_name}")
    cached = cache.load(fingerprint) if accelerator.is_main_process else None
    found = broadcast_object_list([cached is not None], from_process=0)[0]
    if not found:
        logger.info("Encoding %d images of %s with %s into %s; later runs reuse them.", len(pixels),
                    pixels.source_description, vae_name, folder)
        try:
            _encode_into_cache(pixels, vae, cache, fingerprint, accelerator)
        except OSError as error:
            raise TrainingError(f"could not write the latent cache to {folder} ({write_error_reason(error)}); free"
                                " space there or pass --decoded_cache_dir with another folder.") from None
    elif accelerator.is_main_process:
        logger.info("Reusing the latents of %s in %s.", pixels.source_description, cached[0].path)
    accelerator.wait_for_everyone()
    loaded = cached if cached is not None else cache.load(fingerprint)
    if loaded is None:
        raise TrainingError(f"the latent cache in {folder} is not readable by every process; --decoded_cache_dir must"
                            " be a folder all processes see.")
    return LatentDataset(loaded[0], pixels)


def _encode_into_cache(pixels: EDMImageDataset, vae: AutoencoderKL, cache: DecodedCache, fingerprint: str,
                       accelerator: Accelerator) -> None:
    """Each process encodes its chunks into a part file; the main process joins them in order into the cache, with
    the per-channel statistics of the raw latents."""
    rank, world = accelerator.process_index, accelerator.num_processes
    parts = cache.folder / f".{cache.name}-parts-{fingerprint[:16]}"
    if accelerator.is_main_process:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    accelerator.wait_for_everyone()
    chunks = math.ceil(len(pixels) / ENCODE_CHUNK)
    with open(parts / f"part-{rank}.bin", "wb") as part:
        for chunk in range(rank, chunks, world):
            part.write(_encode_chunk(pixels, vae, chunk).numpy().tobytes())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            _join_parts(pixels, vae, cache, fingerprint, parts, world, chunks)
        finally:
            shutil.rmtree(parts, ignore_errors=True)


def _encode_chunk(pixels: EDMImageDataset, vae: AutoencoderKL, chunk: int) -> torch.Tensor:
    """[posterior mean, posterior std] of the chunk's items (CPU float32)."""
    items = range(chunk * ENCODE_CHUNK, min((chunk + 1) * ENCODE_CHUNK, len(pixels)))
    images = torch.stack([pixels[index][0] for index in items])
    if images.shape[1] == 1 and vae.config.in_channels == 3:
        images = images.repeat(1, 3, 1, 1)
    uint8 = ((images + 1) * 127.5).round().clamp(0, 255)
    return encode_raw_latents(vae, uint8).cpu()


def _join_parts(pixels: EDMImageDataset, vae: AutoencoderKL, cache: DecodedCache, fingerprint: str, parts: Path,
                world: int, chunks: int) -> None:
    channels = 2 * vae.config.latent_channels
    side = pixels.resolution // vae_scale_factor(vae.config)
    item_floats = channels * side * side
    writer = cache.writer(fingerprint, len(pixels))
    try:
        writer.allocate(channels, side, side, dtype=np.float32)
        sums = np.zeros((3, channels // 2), dtype=np.float64)  # Σ mean, Σ mean², Σ std² per latent channel
        handles = [open(parts / f"part-{rank}.bin", "rb") for rank in range(world)]
        try:
            for chunk in range(chunks):
                count = min(ENCODE_CHUNK, len(pixels) - chunk * ENCODE_CHUNK)
                data = np.frombuffer(handles[chunk % world].read(count * item_floats * 4), dtype=np.float32)
                items = data.reshape(count, channels, side, side)
                mean, std = items[:, : channels // 2].astype(np.float64), items[:, channels // 2:].astype(np.float64)
                sums += np.stack([mean.sum((0, 2, 3)), (mean**2).sum((0, 2, 3)), (std**2).sum((0, 2, 3))])
                for item in items:
                    writer.append(item)
        finally:
            for handle in handles:
                handle.close()
        n = len(pixels) * side * side
        mean = sums[0] / n
        std = np.sqrt(np.maximum(sums[1] / n - mean**2 + sums[2] / n, 1e-12))  # total variance of the drawn latents
        cache.commit(writer, fingerprint, [], info={"mean": mean.tolist(), "std": std.tolist()})
    except BaseException:
        writer.discard()
        raise
