# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Post-hoc EMA reconstruction (Karras et al. 2024, Sec. 3) written as pipelines: the EMA of any length σ_rel, after
training, from the power-function EMA snapshots that `train_edm.py --phema_stds ...` stored (see
[`diffusers_edm.training.phema`] for the snapshots and the least-squares solve).

With one σ_rel, `out` is the new pipeline folder; with several, `out` gets one `std-<σ_rel:.3f>` pipeline folder per
value. Each folder is the run's `EDMPipeline` with the reconstructed weights and a `phema_reconstruction.json` that
records the snapshots used and their coefficients. Folders are written under a temporary name and moved into place
when complete; `overwrite` never replaces the run, its snapshots, the current folder or a parent of any of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EDMInputError, ReconstructionError
from ..folders import check_output_dir, move_into_place, staging_folder
from ..pipelines.saved_folders import check_model_folder, load_pipeline_quietly
from .phema import SNAPSHOT_FOLDER, Snapshot, describe_reconstruction, list_snapshots, reconstruct_state_dict

RECORD_NAME = "phema_reconstruction.json"

RECOMMENDED_STD = 0.10
"""Default σ_rel: the best EMA length measured on the digits (FD_digits, two seed sets)."""

MAX_WEIGHT_RATIO = 1e3
"""A snapshot whose largest weight exceeds the run's largest by this factor is refused: it was written while training
diverged (such snapshots reconstruct to weights of 1e29)."""

EXTRAPOLATION_WARNING = 5.0
"""Reconstruction coefficients larger than this in magnitude mean the σ_rel lies far outside the tracked ones: with
0.05 and 0.10 tracked (16 snapshots each) they stay below 1 for σ_rel in [0.05, 0.25], reach 2.9 at 0.03 and 14 at
0.01. A warning says so."""

logger = logging.getLogger(__name__)


def select_snapshots(run: Path, at_kimg: int | None) -> tuple[list[Snapshot], int]:
    """The snapshots to combine and the target image count: those stored up to `at_kimg` (default: the latest)."""
    folder = run / SNAPSHOT_FOLDER
    try:
        snapshots = list_snapshots(folder) if folder.is_dir() else []
    except ValueError as error:
        raise ReconstructionError(f"{error}; remove or replace that file") from None
    if not snapshots:
        raise ReconstructionError(f"{folder} holds no post-hoc EMA snapshots: train with --phema_stds (e.g. "
                                  f"0.05,0.10) to store them.")
    times = sorted({s.nimg for s in snapshots})
    if at_kimg is None:
        target = times[-1]
    else:
        matching = [nimg for nimg in times if nimg // 1000 == at_kimg]
        if not matching:
            stored = ", ".join(str(nimg // 1000) for nimg in times)
            raise ReconstructionError(f"--at_kimg {at_kimg}: no snapshots were stored at that time; stored kimg: "
                                      f"{stored}.")
        target = matching[-1]
    return [s for s in snapshots if s.nimg <= target], target


def output_folders(run: Path, out: Path, stds: Sequence[float], overwrite: bool) -> list[Path]:
    """The pipeline folder of each σ_rel, checked before any work (see [`check_output_dir`])."""
    folders = [out] if len(stds) == 1 else [out / f"std-{std:.3f}" for std in stds]
    if len({folder.name for folder in folders}) < len(folders):
        raise ReconstructionError(f"--std {','.join(map(str, stds))} names σ_rel values that round to the same"
                                  " folder name (3 decimals); list each value once.")
    kept = [(run, "the run"), (run / SNAPSHOT_FOLDER, "the run's post-hoc EMA snapshots")]
    try:
        for folder in folders:
            check_output_dir(folder, overwrite, kept)
    except EDMInputError as error:
        raise ReconstructionError(str(error)) from None
    return folders


def reconstruct(run: Path, stds: Sequence[float], out: Path, at_kimg: int | None = None,
                overwrite: bool = False) -> list[Path]:
    """Writes one pipeline folder per σ_rel in `stds` (see the module docstring); returns their paths."""
    run, out = Path(run), Path(out)
    try:
        check_model_folder(run)
    except EDMInputError as error:
        raise ReconstructionError(f"--run {run}: {error}") from None
    snapshots, target = select_snapshots(run, at_kimg)
    folders = output_folders(run, out, stds, overwrite)
    pipeline = load_pipeline_quietly(run)
    expected = pipeline.unet.state_dict()
    largest = max((float(v.abs().max()) for v in expected.values() if v.is_floating_point() and v.numel()), default=1)
    for std, folder in zip(stds, folders):
        try:
            state, coefficients = reconstruct_state_dict(snapshots, target, std, expected,
                                                         max_abs=MAX_WEIGHT_RATIO * max(largest, 1.0))
        except ValueError as error:
            raise ReconstructionError(f"{error}; remove that file from {run / SNAPSHOT_FOLDER}, or keep only the"
                                      " snapshots of this run there") from None
        if float(np.abs(coefficients).max()) > EXTRAPOLATION_WARNING:
            logger.warning("σ_rel %.3g lies far outside the tracked σ_rel %s: the reconstruction extrapolates "
                           "(coefficients up to %.2g) and may be poor; track a σ_rel near it with --phema_stds.",
                           std, sorted({s.std for s in snapshots}), float(np.abs(coefficients).max()))
        pipeline.unet.load_state_dict(state)
        with staging_folder(folder) as staging:
            pipeline.save_pretrained(staging)
            record = describe_reconstruction(snapshots, coefficients, target, std)
            (staging / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            move_into_place(staging, folder)
        print(f"σ_rel {std:.3f} at {target / 1000:g} kimg from {len(snapshots)} snapshots -> {folder}")
    return folders
