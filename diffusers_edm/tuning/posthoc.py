# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The σ_rel of a post-hoc EMA as a sampler setting: the weights of a training run that stored power-function EMA
snapshots (`train_edm.py --phema_stds ...`), reconstructed for the σ_rel a trial asks for (Karras et al. 2024,
Sec. 3)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ReconstructionError
from ..training.checkpoint import CONFIG
from ..training.phema import SNAPSHOT_FOLDER, reconstruct_state_dict
from ..training.phema_reconstruction import MAX_WEIGHT_RATIO, select_snapshots


def has_snapshots(model: str) -> bool:
    """Whether `model` is a local run folder with post-hoc EMA snapshots."""
    folder = Path(model) / SNAPSHOT_FOLDER
    return folder.is_dir() and any(folder.glob("*.safetensors"))


def exported_std(run: Path) -> float | None:
    """The σ_rel at which the run wrote its pipeline (`train_edm.py --phema_export_std`); `None` for a half-life EMA or
    a run without readable settings."""
    try:
        value = json.loads((run / CONFIG).read_text(encoding="utf-8")).get("phema_export_std")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class PosthocWeights:
    """
    Loads the weights of any σ_rel into a denoiser: reconstructed from the run's latest snapshots, or the weights the
    run saved (σ_rel `None`; `saved_std` says which σ_rel they are, when the run wrote them with
    `--phema_export_std`). The last reconstruction is kept, so consecutive trials of one σ_rel reconstruct once.

    Args:
        run (`Path`): the run folder (holding `phema/`).
        unet (`torch.nn.Module`): the run's denoiser, holding the saved weights.

    Raises:
        ReconstructionError: the run has no usable snapshots.
    """

    def __init__(self, run: Path, unet: torch.nn.Module) -> None:
        self.snapshots, self.target_nimg = select_snapshots(Path(run), None)
        self.saved_std = exported_std(Path(run))
        self.unet = unet
        self.saved = {key: value.detach().cpu().clone() for key, value in unet.state_dict().items()}
        largest = max((float(v.abs().max()) for v in self.saved.values() if v.is_floating_point() and v.numel()),
                      default=1.0)
        self.max_abs = MAX_WEIGHT_RATIO * max(largest, 1.0)
        self.loaded: float | None = None

    def load(self, std: float | None) -> None:
        """Puts the weights of σ_rel `std` (`None`: the saved ones) into the denoiser."""
        if std == self.loaded:
            return
        if std is None:
            state = self.saved
        else:
            try:
                state, _ = reconstruct_state_dict(self.snapshots, self.target_nimg, std, self.saved, self.max_abs)
            except ValueError as error:
                raise ReconstructionError(f"{error}; remove that file from the run's {SNAPSHOT_FOLDER}/") from None
        self.unet.load_state_dict(state)
        self.loaded = std
