# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""What the process's environment says about the network: Hugging Face's offline mode."""

from __future__ import annotations

import os

from huggingface_hub import constants

_TRUE = ("1", "on", "yes", "true")


def offline(datasets: bool = False) -> bool:
    """Whether Hugging Face's offline mode is on (`HF_HUB_OFFLINE`; with `datasets`, also `HF_DATASETS_OFFLINE`)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return bool(constants.HF_HUB_OFFLINE) or any(os.environ.get(name, "").lower() in _TRUE for name in names)
