# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Text conditioning of a training run (`--caption_column`, `--text_encoder`): the frozen text encoder runs once over
the distinct captions and the empty prompt (the null condition that caption dropout teaches) before training; the
embeddings go to a cache file that later runs reuse and that each step reads row by row, so the encoder is never part
of a training step and memory does not grow with the number of captions."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from ..data.cache import default_decoded_cache_dir, digest
from ..errors import TrainingError, first_line
from ..pipelines.text_encoding import encode_prompts, text_width

logger = logging.getLogger(__name__)

ENCODE_BATCH = 256
"""Captions per text-encoder call while filling the cache."""

NULL_ROW = 0
"""Row of the empty prompt in the cache; caption i of the dataset is row i + 1."""


TEXT_LAYOUTS = (("text_encoder", "tokenizer"), ("", ""))
"""Where a text model and its tokenizer lie in a folder or repository: a pipeline's subfolders, or a CLIP
repository's root."""


def load_text_components(location: str, cache_dir: str | None = None, token: str | None = None):
    """The CLIP text model and tokenizer of `location` (Hub id or folder): a CLIP repository (the model and tokenizer
    at its root) or a pipeline holding `text_encoder/` and `tokenizer/`. A one-line `TrainingError` when neither
    loads."""
    from transformers import AutoTokenizer, CLIPTextModel

    return _first_layout(location, lambda text_folder, tokenizer_folder: (
        CLIPTextModel.from_pretrained(location, subfolder=text_folder, cache_dir=cache_dir, token=token).eval()
        .requires_grad_(False),
        AutoTokenizer.from_pretrained(location, subfolder=tokenizer_folder, cache_dir=cache_dir, token=token)))


def read_text_width(location: str, cache_dir: str | None = None, token: str | None = None) -> int:
    """The width of the text model of `location` from its configuration alone (for `--dry_run`; no weights)."""
    from transformers import CLIPTextConfig

    return _first_layout(location, lambda text_folder, _: CLIPTextConfig.from_pretrained(
        location, subfolder=text_folder, cache_dir=cache_dir, token=token).hidden_size)


def _first_layout(location: str, load):
    """`load(text_folder, tokenizer_folder)` for the first layout of [`TEXT_LAYOUTS`] that loads."""
    errors = []
    for layout in TEXT_LAYOUTS:
        try:
            return load(*layout)
        except (OSError, ValueError) as error:
            errors.append(first_line(error))
    raise TrainingError(f"--text_encoder {location}: no CLIP text model and tokenizer there ({errors[-1]}); pass a"
                        " CLIP repository or folder (e.g. openai/clip-vit-base-patch32) or a pipeline with"
                        " text_encoder/ and tokenizer/.")


class CaptionEmbeddings:
    """
    The text encoder's output for the empty prompt (row 0) and every distinct caption (row i + 1 for caption i):
    token states, token mask and unit-length pooled embeddings, memory-mapped from their cache folder.

    Args:
        folder (`Path`): the cache folder (`tokens.npy`, `mask.npy`, `pooled.npy`, `captions.json`).
        cross_attention (`bool`): the model attends to tokens (otherwise only the pooled embedding is looked up).
    """

    def __init__(self, folder: Path, cross_attention: bool) -> None:
        self.folder = folder
        self.tokens = np.load(folder / "tokens.npy", mmap_mode="r")
        self.mask = np.load(folder / "mask.npy", mmap_mode="r")
        self.pooled = np.load(folder / "pooled.npy", mmap_mode="r")
        self.cross_attention = cross_attention

    @property
    def width(self) -> int:
        return self.pooled.shape[1]

    def condition(self, caption_ids: torch.Tensor, dropout: float, device: torch.device) -> dict[str, torch.Tensor]:
        """The unet's conditioning arguments for a batch of caption indices (B,): each caption replaced by the empty
        prompt with probability `dropout` (drawn from torch's CPU generator, which checkpoints restore)."""
        rows = caption_ids.to("cpu", torch.int64) + 1
        if dropout:
            rows = torch.where(torch.rand(rows.shape) < dropout, torch.full_like(rows, NULL_ROW), rows)
        index = rows.numpy()
        condition = {"class_labels": torch.from_numpy(np.ascontiguousarray(self.pooled[index])).to(device)}
        if self.cross_attention:
            condition["encoder_hidden_states"] = torch.from_numpy(np.ascontiguousarray(self.tokens[index])).to(device)
            condition["encoder_attention_mask"] = torch.from_numpy(np.ascontiguousarray(self.mask[index])).to(device)
        return condition


def prepare_caption_embeddings(captions: list[str], text_encoder, tokenizer, location: str, cache_dir: str | None,
                               accelerator: Accelerator, cross_attention: bool) -> CaptionEmbeddings:
    """The cache of `captions` for this text encoder: reused when one is up to date (same captions, same encoder
    weights and tokenizer), else written by the first process of each node (atomically: a folder renamed into place
    when complete) while the others wait."""
    root = Path(cache_dir) if cache_dir else default_decoded_cache_dir()
    folder = root / f"text-{_fingerprint(captions, text_encoder, tokenizer)[:24]}"
    with accelerator.local_main_process_first():
        if accelerator.is_local_main_process and not (folder / "captions.json").is_file():
            logger.info("Encoding %d distinct captions with %s into %s; later runs reuse them.", len(captions),
                        location, folder)
            _write_cache(folder, ["", *captions], text_encoder, tokenizer, accelerator.device)
        return CaptionEmbeddings(folder, cross_attention)


def _fingerprint(captions: list[str], text_encoder, tokenizer) -> str:
    weights = digest({name: digest(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
                      for name, tensor in text_encoder.state_dict().items()})
    vocabulary = digest(json.dumps(tokenizer.get_vocab(), sort_keys=True))
    return digest({"captions": digest(json.dumps(captions)), "weights": weights, "vocabulary": vocabulary,
                   "max_length": tokenizer.model_max_length, "format": 1})


def _write_cache(folder: Path, texts: list[str], text_encoder, tokenizer, device: torch.device) -> None:
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        length, width = tokenizer.model_max_length, text_width(text_encoder)
        tokens = np.lib.format.open_memmap(staging / "tokens.npy", "w+", np.float32, (len(texts), length, width))
        mask = np.lib.format.open_memmap(staging / "mask.npy", "w+", np.int64, (len(texts), length))
        pooled = np.lib.format.open_memmap(staging / "pooled.npy", "w+", np.float32, (len(texts), width))
        encoder = text_encoder.to(device)
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = encode_prompts(encoder, tokenizer, texts[start:start + ENCODE_BATCH], device)
            end = start + len(batch)
            tokens[start:end] = batch.tokens.cpu().numpy()
            mask[start:end] = batch.mask.cpu().numpy()
            pooled[start:end] = batch.pooled.cpu().numpy()
        text_encoder.to("cpu")
        for array in (tokens, mask, pooled):
            array.flush()
        (staging / "captions.json").write_text(json.dumps(texts), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise TrainingError(f"Could not write the caption embeddings to {folder.parent} ({first_line(error)}); free"
                            " space there or pass --decoded_cache_dir with another folder.") from None
