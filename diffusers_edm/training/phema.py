"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3 and
Appendix C): power-function EMAs tracked during training, stored as snapshots, and combined after training into the
EMA profile of any length σ_rel.

A power-function EMA at training time t (in images) averages the weights with the profile p(τ) ∝ τ^γ on [0, t]; its
relative standard deviation σ_rel (Eq. 123) names it. This module is the single place where σ_rel ↔ γ, the per-step
decay and the profile inner products are defined; the trainer tracks the EMAs with [`PowerFunctionEMA`] and
`python -m diffusers_edm.reconstruct_phema` combines the snapshots with [`reconstruction_coefficients`].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import first_line

MAX_STD = math.sqrt(1 / 12)
"""Supremum of σ_rel: the limit of Eq. 123 as γ → 0 (a uniform average over all of training), ≈ 0.2887."""

SNAPSHOT_FOLDER = "phema"
"""Folder of the run's output directory that holds the snapshots."""

SNAPSHOT_PREFIX = "network-snapshot"
"""File-name prefix of the snapshots, as EDM2 names them: `<prefix>-<kimg:07d>-<σ_rel:.3f>.safetensors`."""

_SNAPSHOT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<kimg>\d{7,})-(?P<std>\d+\.\d{3})\.safetensors$")


def std_to_gamma(std: float) -> float:
    """The exponent γ of the power-function profile with relative standard deviation `std` (Eq. 126): the largest real
    root of γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0."""
    check_std(std)
    inverse_sq = std**-2
    roots = np.roots([1.0, 7.0, 16.0 - inverse_sq, 12.0 - inverse_sq])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def gamma_to_std(gamma: float) -> float:
    """σ_rel of the profile p(τ) ∝ τ^γ (Eq. 123): √((γ+1) / ((γ+2)² (γ+3)))."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def check_std(std: float) -> None:
    """Raises a one-line ValueError for a σ_rel outside (0, √(1/12))."""
    if not 0 < std < MAX_STD:
        raise ValueError(f"σ_rel must lie in (0, {MAX_STD:.4f}) (the widest power-function EMA averages all of "
                         f"training uniformly), got {std:g}; EDM2 tracks 0.05 and 0.10.")


def std_list_argument(text: str) -> list[float]:
    """argparse type: "0.07" or "0.05,0.10" as σ_rel values, each checked."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a σ_rel or a comma-separated list of them (e.g. 0.05,0.10)"
                                         ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one σ_rel, e.g. 0.05,0.10")
    for value in values:
        try:
            check_std(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    names = [f"{value:.3f}" for value in values]
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r} lists σ_rel values that agree in their first 3 decimals, which name"
                                         " the files; list each value once.")
    return values


def power_ema_beta(cur_nimg: int, batch_size: int, gamma: float) -> float:
    """Per-step decay β = (1 − Δt/t)^(γ+1) (Eq. 127), with t the image count after the step and Δt the step's images;
    β = 0 at the first step, so the average starts at the network's weights."""
    return (1 - batch_size / cur_nimg) ** (gamma + 1)


def profile_inner_products(
    t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray
) -> np.ndarray:
    """⟨p_a, p_b⟩ of normalised power-function profiles ending at t_a and t_b (Eq. 151, Algorithm 3), broadcast over the
    inputs: (γ_a+1)(γ_b+1) (t_a/t_b)^e / ((γ_a+γ_b+1) max(t_a, t_b)), with e = γ_b if t_a < t_b else −γ_a."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    exponent = np.where(t_a < t_b, gamma_b, -gamma_a)
    numerator = (gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** exponent
    return numerator / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


def reconstruction_coefficients(
    snapshot_nimg: Sequence[float], snapshot_gammas: Sequence[float], target_nimg: float, target_gamma: float
) -> np.ndarray:
    """Weights x of the snapshots whose combination Σ x_i θ_i best approximates (in L2 over profiles) the power-function
    EMA with exponent `target_gamma` at time `target_nimg` (Appendix C.3): solves A x = B with A_ij = ⟨p_i, p_j⟩ and
    B_i = ⟨p_i, p_target⟩ in float64 (least squares, so nearly dependent snapshots are harmless), then normalises x to
    sum to one."""
    t = np.asarray(snapshot_nimg, dtype=np.float64)
    gamma = np.asarray(snapshot_gammas, dtype=np.float64)
    gram = profile_inner_products(t[:, None], gamma[:, None], t[None, :], gamma[None, :])
    target = profile_inner_products(t, gamma, np.float64(target_nimg), np.float64(target_gamma))
    x = np.linalg.lstsq(gram, target, rcond=None)[0]
    return x / x.sum()


def snapshot_name(nimg: int, std: float) -> str:
    """`network-snapshot-<kimg:07d>-<σ_rel:.3f>.safetensors` (EDM2's naming, kimg = images // 1000)."""
    return f"{SNAPSHOT_PREFIX}-{nimg // 1000:07d}-{std:.3f}.safetensors"


def check_snapshot_interval(interval, images_per_step: int) -> None:
    """Raises a one-line ValueError when snapshots `interval` apart (an `Interval` of steps or kimg) would be less than
    1 kimg apart: their names, which hold the kimg, would collide."""
    images = interval.value * (images_per_step if interval.unit == "steps" else 1000)
    if images < 1000:
        raise ValueError(f"--phema_every {interval} stores snapshots {images:g} images apart ({images_per_step} images "
                         f"per step), but their file names count whole kimg and would overwrite each other; pass an "
                         f"interval of at least 1kimg.")


class PowerFunctionEMA:
    """Power-function EMAs of a model's parameters for several σ_rel, updated after every optimizer step (Eq. 127) and
    written as snapshots that `reconstruct_phema` combines into any other σ_rel.

    Buffers are not averaged: snapshots take them from the network. `state_dict`/`load_state_dict` (the averages, as
    tensors named "<σ_rel>.<parameter>") make the EMAs part of the resumable training state.

    Args:
        model (`nn.Module`): the (unwrapped) model; its current weights initialise every average.
        stds (`Sequence[float]`): the σ_rel to track, each in (0, 0.2887); EDM2 uses (0.05, 0.10).
    """

    def __init__(self, model: nn.Module, stds: Sequence[float]) -> None:
        if not stds:
            raise ValueError("pass at least one σ_rel to track.")
        if len({f"{std:.3f}" for std in stds}) != len(stds):
            raise ValueError(f"σ_rel values must differ in their first 3 decimals (they name the files), got {stds}.")
        self.stds = tuple(float(std) for std in stds)
        self.gammas = tuple(std_to_gamma(std) for std in self.stds)
        self.names = [name for name, _ in model.named_parameters()]
        self.averages = [[p.detach().clone() for p in model.parameters()] for _ in self.stds]

    @torch.no_grad()
    def update(self, model: nn.Module, cur_nimg: int, batch_size: int) -> None:
        """Moves every average towards `model` after a step of `batch_size` images that brought the count to
        `cur_nimg`: average ← average + (1 − β)(θ − average)."""
        params = [p.detach() for p in model.parameters()]
        for average, gamma in zip(self.averages, self.gammas):
            torch._foreach_lerp_(average, params, 1 - power_ema_beta(cur_nimg, batch_size, gamma))

    def averaged_state_dict(self, model: nn.Module, index: int) -> dict[str, torch.Tensor]:
        """The full state dict of `model` with its parameters replaced by average `index` (buffers from `model`)."""
        state = model.state_dict()
        state.update(zip(self.names, self.averages[index]))
        return state

    def state_dict_for(self, model: nn.Module, std: float, cur_nimg: int) -> dict[str, torch.Tensor]:
        """The full state dict of `model` with the parameters of the power-function EMA of σ_rel `std` at `cur_nimg`
        images: a tracked average exactly, another σ_rel as the least-squares combination of the tracked averages'
        profiles at that time (the full reconstruction from the stored snapshots is `reconstruct_phema`'s)."""
        for index, tracked in enumerate(self.stds):
            if f"{tracked:.3f}" == f"{std:.3f}":
                return self.averaged_state_dict(model, index)
        weights = reconstruction_coefficients([cur_nimg] * len(self.stds), self.gammas, cur_nimg, std_to_gamma(std))
        state = model.state_dict()
        for position, name in enumerate(self.names):
            combined = torch.zeros_like(self.averages[0][position], dtype=torch.float32)
            for weight, average in zip(weights, self.averages):
                combined.add_(average[position].float(), alpha=float(weight))
            state[name] = combined.to(self.averages[0][position].dtype)
        return state

    def save_snapshots(self, model: nn.Module, folder: Path, cur_nimg: int) -> list[Path]:
        """Writes one snapshot per σ_rel into `folder` (atomically: a staging file renamed when complete), with the
        exact image count, σ_rel and γ in the safetensors metadata. Returns the paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, (std, gamma) in enumerate(zip(self.stds, self.gammas)):
            path = folder / snapshot_name(cur_nimg, std)
            staging = path.with_name(path.name + ".tmp")
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.averaged_state_dict(model, index).items()}
            buffers = sorted(set(tensors) - set(self.names))
            metadata = {"nimg": str(cur_nimg), "std": repr(std), "gamma": repr(gamma), "buffers": json.dumps(buffers)}
            save_file(tensors, staging, metadata=metadata)
            os.replace(staging, path)
            paths.append(path)
        return paths

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{std:.3f}/{name}": tensor for std, average in zip(self.stds, self.averages)
                for name, tensor in zip(self.names, average)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.state_dict()):
            stored = sorted({key.split("/", 1)[0] for key in state})
            raise ValueError(f"the stored post-hoc EMAs (σ_rel {', '.join(stored) or 'none'}) differ from this run's "
                             f"(σ_rel {', '.join(f'{std:.3f}' for std in self.stds)}) or its architecture.")
        for std, average in zip(self.stds, self.averages):
            for name, tensor in zip(self.names, average):
                tensor.copy_(state[f"{std:.3f}/{name}"])


@dataclass(frozen=True)
class Snapshot:
    """A stored power-function EMA: its file, image count, σ_rel and γ."""

    path: Path
    nimg: int
    std: float
    gamma: float
    buffers: frozenset[str]

    @property
    def kimg(self) -> int:
        return self.nimg // 1000


def read_snapshot(path: Path) -> Snapshot:
    """The metadata of one snapshot file, checked: a regular file (not a link), readable as safetensors, with an image
    count ≥ 1, σ_rel and γ that agree with each other and with the file name. A `ValueError` naming the file
    otherwise."""
    match = _SNAPSHOT_NAME.match(path.name)
    if not match:
        raise ValueError(f"{path} is not named <prefix>-<kimg:07d>-<σ_rel:.3f>.safetensors")
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{path} is {'a symbolic link' if path.is_symlink() else 'not a regular file'}, not a snapshot"
                         " this run wrote")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        snapshot = Snapshot(path, int(metadata["nimg"]), float(metadata["std"]), float(metadata["gamma"]),
                            frozenset(json.loads(metadata["buffers"])))
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as error:
        raise ValueError(f"{path} is not a readable post-hoc EMA snapshot ({first_line(error)})") from None
    if not (snapshot.nimg >= 1 and snapshot.kimg == int(match["kimg"])):
        raise ValueError(f"{path} records {snapshot.nimg} images, which does not match the {match['kimg']} kimg of its"
                         " name")
    if not (0 < snapshot.std < MAX_STD and f"{snapshot.std:.3f}" == match["std"]):
        raise ValueError(f"{path} records σ_rel {snapshot.std}, which does not match the {match['std']} of its name")
    if not (math.isfinite(snapshot.gamma) and abs(snapshot.gamma - std_to_gamma(snapshot.std)) <= 1e-6 * (
            1 + abs(snapshot.gamma))):
        raise ValueError(f"{path} records γ {snapshot.gamma}, which is not the γ of its σ_rel {snapshot.std}")
    return snapshot


def list_snapshots(folder: Path) -> list[Snapshot]:
    """The snapshots in `folder` (not half-written ones), by image count then σ_rel."""
    found = [read_snapshot(path) for path in folder.glob("*.safetensors") if _SNAPSHOT_NAME.match(path.name)]
    return sorted(found, key=lambda s: (s.nimg, s.std))


def reconstruct_state_dict(snapshots: Sequence[Snapshot], target_nimg: int, target_std: float,
                           expected: Mapping[str, torch.Tensor] | None = None, max_abs: float = math.inf,
                           ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The weights of the power-function EMA with σ_rel `target_std` at `target_nimg` images, as Σ x_i θ_i over
    `snapshots` (all taken at or before `target_nimg`), accumulated in float32; buffers (not averaged) come from the
    latest snapshot. Every snapshot is checked as it is read (see [`check_snapshot_tensors`]) against `expected`
    (the run's model state dict) and `max_abs`.
    Returns the state dict and the coefficients x."""
    coefficients = reconstruction_coefficients([s.nimg for s in snapshots], [s.gamma for s in snapshots],
                                               target_nimg, std_to_gamma(target_std))
    result: dict[str, torch.Tensor] = {}
    latest = max(snapshots, key=lambda s: s.nimg)
    with safe_open(latest.path, framework="pt") as f:
        reference = {key: f.get_tensor(key) for key in f.keys()}
    expected = reference if expected is None else expected
    for snapshot, weight in zip(snapshots, coefficients):
        with safe_open(snapshot.path, framework="pt") as f:
            check_snapshot_tensors(snapshot, f, expected, max_abs)
            for key in f.keys():
                if key in latest.buffers:
                    continue
                accumulated = result.setdefault(key, torch.zeros_like(reference[key], dtype=torch.float32))
                accumulated.add_(f.get_tensor(key).float(), alpha=float(weight))
    state = {key: result[key].to(value.dtype) if key in result else value for key, value in reference.items()}
    return state, coefficients


def check_snapshot_tensors(snapshot: Snapshot, handle, expected: Mapping[str, torch.Tensor], max_abs: float) -> None:
    """A `ValueError` naming the snapshot's file unless its tensors (open in `handle`, a `safe_open`) have exactly the
    names and shapes of `expected`, and every value is finite and at most `max_abs` in magnitude (snapshots written
    while training diverged hold weights of 1e29)."""
    keys = set(handle.keys())
    missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
    if missing or extra:
        what = f"it lacks {missing[0]!r}" if missing else f"it holds {extra[0]!r}, which the run's model does not have"
        raise ValueError(f"{snapshot.path}: the snapshots do not fit the model of this run ({what}; {len(missing)}"
                         f" missing, {len(extra)} unexpected tensors)")
    for key in sorted(keys):
        tensor = handle.get_tensor(key)
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{snapshot.path}: the snapshots do not fit the model of this run ({key!r} has shape"
                             f" {tuple(tensor.shape)}, the model's {tuple(expected[key].shape)})")
        if tensor.is_floating_point() and tensor.numel():
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{snapshot.path}: {key!r} holds NaN or infinite values")
            if float(tensor.abs().max()) > max_abs:
                raise ValueError(f"{snapshot.path}: {key!r} holds values up to {float(tensor.abs().max()):.3g}, far"
                                 " beyond the run's weights (a snapshot written while training diverged)")


def describe_reconstruction(snapshots: Sequence[Snapshot], coefficients: np.ndarray, target_nimg: int,
                            target_std: float) -> dict:
    """A JSON record of a reconstruction: the target and each snapshot's weight."""
    return {"std": target_std, "gamma": std_to_gamma(target_std), "nimg": target_nimg,
            "snapshots": [{"file": s.path.name, "nimg": s.nimg, "std": s.std, "coefficient": float(c)}
                          for s, c in zip(snapshots, coefficients)]}
