# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The run's `--output_dir`: a new run never mixes with an older one there. A folder that holds another run's outputs
needs `--resume_from_checkpoint` (to continue it) or `--overwrite_output_dir` (to replace it), which deletes the
outputs a run writes and nothing else: files of the user's stay, and links are removed as links, never followed."""

from __future__ import annotations

import fnmatch
import logging
import shutil
from pathlib import Path

from ..errors import TrainingError

logger = logging.getLogger(__name__)

RUN_MARKERS = ("training_config.json", "checkpoint-*", "phema", "model_index.json", "logs")
"""Entries whose presence means the folder holds a run (its settings, checkpoints, post-hoc EMA snapshots, pipeline or
logs)."""

RUN_OUTPUTS = (*RUN_MARKERS, "unet", "scheduler", "guide_unet", "pipeline_diffusers_edm.py", "samples", "samples.png",
               "eval-ref-*.npz", ".hub-staging", "checkpoint-*.tmp")
"""Everything a run writes into its folder but the model card (whose text outside the generated section is the
user's, and which the next save merges into): what `--overwrite_output_dir` deletes."""


def run_entries(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of `folder` whose names match one of `patterns`, sorted."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if any(fnmatch.fnmatch(path.name, p) for p in patterns))


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuses an `--output_dir` that is (or lies below) a file, and one that holds another run when the run neither
    resumes nor overwrites it. Writes nothing.

    Raises:
        TrainingError: naming the folder, what of a run it holds, and the flags that decide.
    """
    for folder in (output_dir, *output_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise TrainingError(f"--output_dir {output_dir}: {folder} is a file, not a folder; pass the path of a"
                                    " folder (it is created when missing).")
            break
    found = run_entries(output_dir, RUN_MARKERS)
    if found and not resuming and not overwrite:
        names = ", ".join(path.name for path in found[:4]) + (", ..." if len(found) > 4 else "")
        raise TrainingError(f"--output_dir {output_dir} holds another run ({names}); pass --resume_from_checkpoint"
                            " latest to continue it, --overwrite_output_dir to replace it, or another --output_dir.")


def clear_run_outputs(output_dir: Path) -> list[Path]:
    """Deletes the outputs of an earlier run in `output_dir` ([`RUN_OUTPUTS`]); returns what was deleted. A link is
    deleted as a link (what it points to stays)."""
    removed = run_entries(output_dir, RUN_OUTPUTS)
    for path in removed:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    if removed:
        logger.info("--overwrite_output_dir: removed the earlier run's %s from %s.",
                    ", ".join(path.name for path in removed), output_dir)
    return removed
