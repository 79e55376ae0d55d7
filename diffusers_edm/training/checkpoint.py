# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Training checkpoints as data: `checkpoint-<step>` folders holding the weights, the EMA, the optimizer and every
process's RNG states as safetensors, the progress and the run's settings as JSON, and `manifest.json` with each file's
size and SHA-256.

Resume verifies every file against the manifest before loading anything, and nothing is ever unpickled, so a
checkpoint copied from another machine cannot run code. A checkpoint is written into `checkpoint-<step>.tmp` and
renamed when complete."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..errors import OUT_OF_SPACE, CheckpointError, one_line, write_error_reason

logger = logging.getLogger(__name__)

T = TypeVar("T")

FORMAT, VERSION = "diffusers-edm-training-checkpoint", 1
MANIFEST = "manifest.json"
MODEL, EMA, OPTIMIZER, PROGRESS = "model.safetensors", "ema.safetensors", "optimizer.safetensors", "progress.json"
PHEMA = "phema.safetensors"  # the post-hoc EMAs, when the run tracks them
CONFIG = "training_config.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")



class Stateful(Protocol):
    """An object with a state dict: the EMA (saved as safetensors) and the training progress (saved as JSON)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainingState:
    """The live objects a checkpoint saves and restores in place."""

    model: nn.Module  # unwrapped
    ema: Stateful
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # accelerate's fp16 gradient scaler
    progress: Stateful
    config: dict  # the run's settings (JSON values, no secrets): what a resume must repeat
    phema: Stateful | None = None  # power-function EMAs (--phema_stds)


def rng_file(rank: int) -> str:
    """The file of process `rank`'s RNG states."""
    return f"random_states_{rank}.safetensors"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-<step>` folders in `folder` (not half-written `.tmp` ones, not links: a checkpoint is a folder
    the run wrote), by step."""
    return sorted((int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                  if p.is_dir() and not p.is_symlink() and (m := CHECKPOINT_PATTERN.match(p.name)))


def find_checkpoint(output_dir: str, which: str) -> Path | None:
    """Resolves --resume_from_checkpoint: 'latest' (None when there is none yet) or a checkpoint folder."""
    found = list_checkpoints(Path(output_dir))
    if which == "latest":
        return found[-1][1] if found else None
    path = Path(which)
    if not path.is_dir():
        existing = (f"those in {output_dir}: {', '.join(str(p) for _, p in found)}" if found
                    else f"{output_dir} has none yet")
        raise CheckpointError(f"--resume_from_checkpoint {which}: no such checkpoint folder; pass 'latest' or a "
                              f"checkpoint-<step> folder ({existing}).")
    return path


def prune_checkpoints(output_dir: Path, keep: int, up_to_step: int) -> None:
    """Removes the oldest checkpoints beyond `keep` among those up to `up_to_step`. Later ones (left by a run resumed
    from an earlier checkpoint) are neither counted nor removed, so they never push out the resumed run's own; links
    are never followed or counted. A checkpoint that cannot be removed is reported, never fatal."""
    existing = [path for step, path in list_checkpoints(output_dir) if step <= up_to_step]
    for path in existing[: max(len(existing) - keep, 0)]:
        try:
            shutil.rmtree(path)
        except OSError as error:
            logger.warning("Could not remove the old checkpoint %s (%s); delete it by hand.", path,
                           write_error_reason(error))


# --- writing -------------------------------------------------------------------------------------------------------

def save_checkpoint(folder: Path, accelerator: Accelerator, state: TrainingState) -> None:
    """Writes `folder` on every process: weights, EMA, optimizer and progress by the main process, each process's RNG
    states, then the manifest, and renames the staging folder. An OSError on any process removes the partial folder
    and raises a CheckpointError on all of them."""
    staging = folder.with_name(folder.name + ".tmp")

    def prepare() -> None:
        if accelerator.is_main_process:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)

    def write() -> dict[str, dict]:
        entries = {}
        if accelerator.is_main_process:
            entries[MODEL] = _write(staging / MODEL, _tensor_bytes(state.model.state_dict()))
            entries[EMA] = _write(staging / EMA, _tensor_bytes(state.ema.state_dict()))
            if state.phema is not None:
                entries[PHEMA] = _write(staging / PHEMA, _tensor_bytes(state.phema.state_dict()))
            entries[OPTIMIZER] = _write(staging / OPTIMIZER, _optimizer_bytes(state.optimizer, state.scaler))
            entries[PROGRESS] = _write(staging / PROGRESS, json.dumps(state.progress.state_dict()).encode())
            entries[CONFIG] = _write(staging / CONFIG, json.dumps(state.config, indent=2).encode())
        name = rng_file(accelerator.process_index)
        entries[name] = _write(staging / name, _rng_bytes())
        return entries

    def publish(entries: list[dict[str, dict]]) -> None:
        if accelerator.is_main_process:
            files = {name: entry for part in entries for name, entry in part.items()}
            manifest = {"format": FORMAT, "version": VERSION, "num_processes": accelerator.num_processes,
                        "files": dict(sorted(files.items()))}
            _write(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)

    _together(accelerator, folder, staging, prepare)
    entries = _together(accelerator, folder, staging, write)
    _together(accelerator, folder, staging, lambda: publish(entries))


def _together(accelerator: Accelerator, folder: Path, staging: Path, action: Callable[[], T]) -> list[T]:
    """Runs `action` on every process and gathers the results; when it raised an OSError anywhere, removes the
    staging folder and raises a CheckpointError on every process."""
    result, failure = None, None
    try:
        result = action()
    except OSError as error:
        failure = (error.errno, f"{error.filename or staging}: {write_error_reason(error)}")
    outcomes = gather_object([(result, failure)])
    failures = [failure for _, failure in outcomes if failure is not None]
    if not failures:
        return [result for result, _ in outcomes]
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    code, reason = failures[0]
    if code in OUT_OF_SPACE:
        advice = "free some space or pass an --output_dir on a disk with room"
    else:
        advice = "pass an --output_dir you can write to"
    previous = latest_complete_checkpoint(folder.parent)
    last = (f"the last complete checkpoint is {previous} (resume with --resume_from_checkpoint {previous})"
            if previous is not None else "no complete checkpoint was written before")
    raise CheckpointError(f"could not write the checkpoint {folder}: {reason}. The partial {staging.name} folder was "
                          f"removed; {advice}; {last}.")


def _write(path: Path, data: bytes) -> dict:
    """Writes `data` to `path` and syncs it to disk; returns its manifest entry."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        if error.filename is None:  # write() and fsync() do not name the file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save({name: tensor.detach().contiguous() for name, tensor in tensors.items()}, metadata=metadata)


def _optimizer_bytes(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> bytes:
    """The optimizer's per-parameter tensors as "<index>.<name>", its other values and the scaler as JSON metadata."""
    state = optimizer.state_dict()
    tensors, values = {}, {}
    for index, per_parameter in state["state"].items():
        for name, value in per_parameter.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                values.setdefault(str(index), {})[name] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "values": json.dumps(values),
                "scaler": json.dumps(scaler.state_dict() if scaler is not None else None)}
    return _tensor_bytes(tensors, metadata)


def _rng_bytes() -> bytes:
    """This process's Python, NumPy, torch and CUDA RNG states."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "python": torch.tensor(python_state, dtype=torch.int64),
               "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    metadata = {"python": json.dumps([version, gauss]),
                "numpy": json.dumps([kind, int(position), int(has_gauss), float(cached_gaussian)])}
    return _tensor_bytes(tensors, metadata)


# --- verifying and loading -----------------------------------------------------------------------------------------

def check_checkpoint(folder: Path) -> dict:
    """Verifies every file of `folder` against its manifest (presence, size, SHA-256); returns the manifest or raises a
    CheckpointError naming the first bad file. Reads no file as anything but bytes and JSON."""
    path = folder / MANIFEST
    if not path.is_file():
        if any(folder.glob("*.pkl")):
            raise CheckpointError(f"{folder} has no {MANIFEST}: it holds pickles (accelerate's format of older "
                                  f"diffusers-edm versions), which are never loaded because a pickle can run code")
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete or not a diffusers-edm checkpoint")
    try:
        manifest = json.loads(path.read_bytes())
        if manifest["format"] != FORMAT:
            raise ValueError(f"format {manifest['format']!r}")
        files = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in manifest["files"].items()}
        if int(manifest["num_processes"]) < 1:
            raise ValueError("num_processes < 1")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} is unreadable or not a diffusers-edm manifest ({_brief(error)})") from None
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {manifest.get('version')!r}; this diffusers-edm reads "
                              f"version {VERSION}")
    for name in (MODEL, EMA, OPTIMIZER, PROGRESS, rng_file(0)):
        if name not in files:
            raise CheckpointError(f"{path} does not list {name}")
    for name, (size, sha256) in sorted(files.items()):
        if Path(name).name != name:
            raise CheckpointError(f"{path} lists {name!r}, which is not a file of the checkpoint folder")
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(f"{file} is truncated or altered ({actual} bytes, the manifest says {size})")
        if _sha256(file) != sha256:
            raise CheckpointError(f"{file} is altered or corrupt (its SHA-256 differs from the manifest's)")
    return manifest


def load_checkpoint(folder: Path, accelerator: Accelerator, state: TrainingState) -> None:
    """Restores `state` from `folder` on every process after the main process verified every file; any problem is a
    CheckpointError that names the file and the previous complete checkpoint to resume from instead."""
    problem = None
    if accelerator.is_main_process:
        try:
            check_checkpoint(folder)
        except CheckpointError as error:
            problem = f"cannot resume from {folder}: {error}. {_fallback(folder)}"
    problem = broadcast_object_list([problem])[0]
    if problem is not None:
        raise CheckpointError(problem)
    manifest = json.loads((folder / MANIFEST).read_bytes())
    with _loading(folder, PROGRESS):
        state.progress.load_state_dict(json.loads((folder / PROGRESS).read_bytes()))
    with _loading(folder, MODEL):
        state.model.load_state_dict(load_file(folder / MODEL))
    with _loading(folder, EMA):
        state.ema.load_state_dict(load_file(folder / EMA))
    if state.phema is not None:
        if PHEMA not in manifest["files"]:
            raise CheckpointError(f"cannot resume from {folder} with --phema_stds: it was written by a run without "
                                  f"post-hoc EMA tracking; resume without --phema_stds or start a new run.")
        with _loading(folder, PHEMA):
            state.phema.load_state_dict(load_file(folder / PHEMA))
    with _loading(folder, OPTIMIZER):
        _load_optimizer(folder / OPTIMIZER, state.optimizer, state.scaler)
    name = rng_file(accelerator.process_index)
    if name in manifest["files"]:
        with _loading(folder, name):
            _restore_rng(folder / name)
    if manifest["num_processes"] != accelerator.num_processes and accelerator.is_main_process:
        logger.warning("%s was written by %d process(es) and this run has %d: the data order and random streams differ "
                       "from those of an uninterrupted run (exact resume needs the same number of processes).", folder,
                       manifest["num_processes"], accelerator.num_processes)


@contextmanager
def _loading(folder: Path, name: str) -> Iterator[None]:
    """Turns any failure to load a verified file (a crafted file, or a run with other settings) into a CheckpointError
    naming it."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - whatever the parser or load_state_dict raise, name the file
        raise CheckpointError(
            f"cannot resume from {folder}: {folder / name} cannot be loaded into this run ({_brief(error)}). If the "
            f"run's settings changed, use those in {folder / CONFIG}. {_fallback(folder)}"
        ) from None


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in json.loads(metadata["values"]).items():
        state.setdefault(int(index), {}).update(values)
    # JSON has lists where the optimizer has tuples (Adam's betas): give them back their type.
    groups = [{key: tuple(value) if isinstance(current.get(key), tuple) else value for key, value in saved.items()}
              for saved, current in zip(json.loads(metadata["param_groups"]), optimizer.param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scaler_state = json.loads(metadata["scaler"])
    if scaler is not None and scaler_state:
        scaler.load_state_dict(scaler_state)


def _restore_rng(path: Path) -> None:
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    version, gauss = json.loads(metadata["python"])
    random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    kind, position, has_gauss, cached_gaussian = json.loads(metadata["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            if f"cuda.{device}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{device}"], device)


def latest_complete_checkpoint(folder: Path, before_step: int | None = None, exclude: Path | None = None
                               ) -> Path | None:
    """The newest checkpoint in `folder` (before `before_step`, other than `exclude`) whose files all verify."""
    for step, path in reversed(list_checkpoints(folder)):
        if path != exclude and (before_step is None or step < before_step):
            try:
                check_checkpoint(path)
            except CheckpointError:
                continue
            return path
    return None


def _fallback(folder: Path) -> str:
    """Which checkpoint to resume from instead of the bad `folder`."""
    match = CHECKPOINT_PATTERN.match(folder.name)
    previous = latest_complete_checkpoint(folder.parent, int(match.group(1)) if match else None, exclude=folder)
    if previous is not None:
        return f"The previous complete checkpoint is {previous}: pass --resume_from_checkpoint {previous}."
    return (f"There is no other complete checkpoint in {folder.parent}: start a new run (without "
            f"--resume_from_checkpoint, or in another --output_dir).")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _brief(error: BaseException, limit: int = 300) -> str:
    """The error's message on one line, shortened to `limit` characters."""
    text = one_line(error)
    return text if len(text) <= limit else text[: limit - 1] + "…"
