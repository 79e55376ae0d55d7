# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Checks of saved pipeline and model folders before diffusers loads them: a missing, garbled or truncated file is
one line naming the folder and the file, not a traceback from deep inside diffusers or safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from diffusers.utils import logging as diffusers_logging
from safetensors import SafetensorError, safe_open

from ..errors import EDMInputError
from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .pipeline_edm import EDMPipeline

MODEL_HINT = ("Pass a folder written by EDMPipeline.save_pretrained, train_edm.py or the converter (python -m"
              " diffusers_edm.convert_edm_checkpoint, which converts EDM's .pkl files), or a Hub id.")


def check_model_folder(folder: str | os.PathLike) -> None:
    """
    Checks that a local pipeline folder is complete before diffusers loads it: `model_index.json`, the configs of
    the unet and the scheduler, and the unet's weights (a `.safetensors` file must be whole).

    Raises:
        `EDMInputError`: naming the folder and the file that is missing, unreadable or truncated.
    """
    root = Path(folder)
    if not (root / EDMPipeline.config_name).is_file():
        raise EDMInputError(f"{root} is not a pipeline folder: it has no {EDMPipeline.config_name}. {MODEL_HINT}")
    refetch = "Copy or download the whole model folder again, or re-save it with EDMPipeline.save_pretrained."
    index = read_json_file(root, EDMPipeline.config_name, refetch)
    for component, config_name in (("unet", EDMPreconditionedUNet2DModel.config_name),
                                   ("scheduler", EDMHeunScheduler.config_name)):
        if component not in index:
            raise EDMInputError(f"{root / EDMPipeline.config_name} lists no {component!r}: {root} is not an"
                                f" EDMPipeline folder. {refetch}")
        read_json_file(root, f"{component}/{config_name}", refetch)
    check_weights(root / "unet", refetch)


def check_weights(folder: Path, fix: str) -> None:
    """An `EDMInputError` when a model folder's weights are missing, or its `.safetensors` file is not whole."""
    safetensors_file = folder / SAFETENSORS_WEIGHTS_NAME
    if safetensors_file.is_file():
        try:
            with safe_open(safetensors_file, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise EDMInputError(f"Model folder {folder.parent}: {folder.name}/{SAFETENSORS_WEIGHTS_NAME} is truncated"
                                f" or corrupt ({error}). {fix}") from None
    elif not any((folder / name).is_file() for name in (WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME)):
        raise EDMInputError(f"Model folder {folder.parent} is incomplete: the {folder.name}'s weights"
                            f" ({folder.name}/{SAFETENSORS_WEIGHTS_NAME}) are missing. {fix}")


def read_json_file(folder: Path, name: str, fix: str) -> dict[str, Any]:
    """The JSON object in `folder/name`; an `EDMInputError` naming the folder and file when it is missing or garbled."""
    path = folder / name
    if not path.is_file():
        raise EDMInputError(f"Model folder {folder} is incomplete: {name} is missing. {fix}")
    try:
        content = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, or not JSON
        raise EDMInputError(f"Model folder {folder}: {name} is not valid JSON ({error}). {fix}") from None
    if not isinstance(content, dict):
        raise EDMInputError(f"Model folder {folder}: {name} holds a {type(content).__name__}, not a JSON object. {fix}")
    return content


def load_pipeline_quietly(model: str | os.PathLike) -> EDMPipeline:
    """`EDMPipeline.from_pretrained(model)` without diffusers' and transformers' loading progress bars (for tools
    whose output is their own, such as a one-line error)."""
    from transformers.utils import logging as transformers_logging

    shown = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        return EDMPipeline.from_pretrained(model)
    finally:
        if shown[0]:
            diffusers_logging.enable_progress_bar()
        if shown[1]:
            transformers_logging.enable_progress_bar()
