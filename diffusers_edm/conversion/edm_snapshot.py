# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The contents of an official EDM snapshot: the preconditioned network's constructor arguments and its weights.

A snapshot is a dict with keys `ema` (the EMA network: a preconditioning module `EDMPrecond`, `VPPrecond`, `VEPrecond`
or `iDDPMPrecond` of Karras et al. 2022, Table 1, around a `SongUNet` or `DhariwalUNet`), `loss_fn`, `augment_pipe`
and `dataset_kwargs`. Every persistent module records the arguments it was built with (`_init_args`,
`_init_kwargs`), and its tensors sit in `_parameters` / `_buffers` with submodules in `_modules`, so both the
configuration and the `state_dict` can be read without the official code.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..models.dhariwal_unet import DhariwalUNet2DModel
from ..models.song_unet import SongUNet2DModel
from .safe_unpickler import (
    EasyDictRecord,
    NumpyArrayRecord,
    PersistentObjectRecord,
    TorchModuleDictRecord,
    load_snapshot_pickle,
)

PRECONDITIONINGS = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}
"""Official preconditioning classes and the `preconditioning` names of `EDMPreconditionedUNet2DModel`."""

BACKBONES = {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}
"""Official network classes and the `backbone_type` names of `EDMPreconditionedUNet2DModel`."""

NATIVE_BACKBONE_CLASSES = {"SongUNet": SongUNet2DModel, "DhariwalUNet": DhariwalUNet2DModel}

PRECOND_PARAMETER_DEFAULTS: dict[str, dict[str, float]] = {
    "EDMPrecond": {"sigma_min": 0.0, "sigma_max": math.inf, "sigma_data": 0.5},
    "VPPrecond": {"beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5},
    "VEPrecond": {"sigma_min": 0.02, "sigma_max": 100.0},
    "iDDPMPrecond": {"C_1": 0.001, "C_2": 0.008, "M": 1000},
}
"""Class-specific constructor parameters of each preconditioning with the official defaults (spec §2, Table 1), in
constructor order."""

DEFAULT_MODEL_CLASS = {"EDMPrecond": "DhariwalUNet", "VPPrecond": "SongUNet", "VEPrecond": "SongUNet",
                       "iDDPMPrecond": "DhariwalUNet"}

MAX_NESTING = 32
"""Deepest nesting of modules or configuration values accepted (the official networks nest a few levels)."""

MAX_CONFIG_ITEMS = 100_000
"""Most values one recorded configuration (constructor arguments, `dataset_kwargs`) may hold."""

_COMMON_PRECOND_ARGS = ("img_resolution", "img_channels", "label_dim", "use_fp16")
IMAGE_MODEL_ARGS = ("img_resolution", "in_channels", "out_channels", "label_dim", "augment_dim")
"""Network constructor arguments that `EDMPreconditionedUNet2DModel` takes at its top level (`sample_size`,
`in_channels`, `out_channels`, `num_class_labels`, `augment_dim`) rather than in `backbone_config`."""


@dataclass(frozen=True)
class EDMSnapshot:
    """The EMA network of an official EDM snapshot, as data.

    Attributes:
        precond_class (`str`): "EDMPrecond", "VPPrecond", "VEPrecond" or "iDDPMPrecond".
        img_resolution (`int`), img_channels (`int`), label_dim (`int`): image size, channels and classes.
        use_fp16 (`bool`): whether the network ran its backbone in float16 (informational; weights are float32).
        precond_parameters (`dict`): the class-specific parameters (EDM: sigma_min, sigma_max, sigma_data; VP:
            beta_d, beta_min, M, epsilon_t; VE: sigma_min, sigma_max; iDDPM: C_1, C_2, M).
        precond_kwargs (`dict`): every recorded constructor argument of the preconditioning module, by name.
        model_class (`str`): "SongUNet" or "DhariwalUNet".
        model_kwargs (`dict`): every recorded constructor argument of the network, by name (including
            img_resolution, in_channels, out_channels and label_dim).
        state_dict (`dict[str, torch.Tensor]`): the network's `state_dict()` under the official key names (`model.*`,
            plus `u` for iDDPM).
        dataset_kwargs (`dict`, *optional*): the snapshot's `dataset_kwargs` (training data path, labels, ...).
    """

    precond_class: str
    img_resolution: int
    img_channels: int
    label_dim: int
    use_fp16: bool
    precond_parameters: dict[str, float]
    precond_kwargs: dict[str, Any]
    model_class: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dataset_kwargs: dict[str, Any] | None

    @property
    def preconditioning(self) -> str:
        """The `preconditioning` name of `EDMPreconditionedUNet2DModel` ("edm", "vp", "ve" or "iddpm")."""
        return PRECONDITIONINGS[self.precond_class]

    @property
    def backbone_type(self) -> str:
        """The `backbone_type` name of `EDMPreconditionedUNet2DModel` ("song_unet" or "dhariwal_unet")."""
        return BACKBONES[self.model_class]

    @property
    def out_channels(self) -> int:
        """Output channels of the network (2 × img_channels for iDDPM)."""
        return self.model_kwargs["out_channels"]

    @property
    def augment_dim(self) -> int:
        """Length of the augment-label vector the network is conditioned on (0: none)."""
        return self.model_kwargs.get("augment_dim", 0)

    @property
    def preconditioning_kwargs(self) -> dict[str, float]:
        """Arguments of `make_preconditioning(self.preconditioning, ...)`: the class-specific parameters (for EDM only
        sigma_data; its recorded σ range does not enter D, see [`edm_sigma_range`])."""
        if self.precond_class == "EDMPrecond":
            return {"sigma_data": self.precond_parameters["sigma_data"]}
        return dict(self.precond_parameters)

    @property
    def edm_sigma_range(self) -> tuple[float, float]:
        """The σ range an `EDMPrecond` network records (0 … ∞ unless set at construction). It only clamps the
        official sampler's schedule, to [max(σ_min, 0.002), min(σ_max, 80)] (Algorithm 2's defaults)."""
        if self.precond_class != "EDMPrecond":
            raise ValueError(f"edm_sigma_range applies to EDMPrecond snapshots, not {self.precond_class}.")
        return self.precond_parameters["sigma_min"], self.precond_parameters["sigma_max"]

    @property
    def backbone_config(self) -> dict[str, Any]:
        """The network's constructor arguments other than [`IMAGE_MODEL_ARGS`]."""
        return {key: value for key, value in self.model_kwargs.items() if key not in IMAGE_MODEL_ARGS}


def read_edm_snapshot(path: str | os.PathLike) -> EDMSnapshot:
    """Reads the EMA network of an official EDM snapshot pickle without executing any code from it.

    Args:
        path (`str` or `os.PathLike`): the snapshot `.pkl` (e.g. `edm-cifar10-32x32-cond-vp.pkl`).

    Raises:
        UnsafeCheckpointError: the pickle references code outside the few globals an EDM snapshot needs.
        ValueError: the file is not a pickle, has no `ema` entry, or its network is not one this converter knows.
    """
    return edm_snapshot_from_contents(load_snapshot_pickle(path), os.fspath(path))


def edm_snapshot_from_contents(contents: Any, name: str) -> EDMSnapshot:
    """Interprets an unpickled EDM snapshot (see [`read_edm_snapshot`]); `name` is used in messages."""
    if not isinstance(contents, dict) or "ema" not in contents:
        found = sorted(map(str, contents)) if isinstance(contents, dict) else type(contents).__name__
        raise ValueError(
            f"{name} is not an EDM snapshot: expected a dict with an 'ema' network (keys 'ema', 'loss_fn',"
            f" 'augment_pipe', 'dataset_kwargs'), found {found}."
        )
    dataset_kwargs = contents.get("dataset_kwargs")
    return snapshot_from_records(
        contents["ema"], dict(dataset_kwargs) if isinstance(dataset_kwargs, dict) else None, name
    )


def snapshot_from_records(ema: Any, dataset_kwargs: dict[str, Any] | None, name: str) -> EDMSnapshot:
    """Interprets the unpickled `ema` record (see [`read_edm_snapshot`]); `name` is used in error messages."""
    if not isinstance(ema, PersistentObjectRecord) or bare_class_name(ema.class_name) not in PRECONDITIONINGS:
        found = bare_class_name(ema.class_name) if isinstance(ema, PersistentObjectRecord) else type(ema).__name__
        raise ValueError(
            f"{name}: 'ema' is a {found}; expected one of the EDM preconditioning classes {sorted(PRECONDITIONINGS)}."
        )
    precond_class = bare_class_name(ema.class_name)
    precond_kwargs = recorded_kwargs(ema, _precond_arg_order(precond_class), f"{name}: {precond_class}")
    attributes = ema.state

    def precond_value(key: str, default: Any = None) -> Any:
        value = attributes.get(key, precond_kwargs.get(key, default))
        if value is None:
            raise ValueError(f"{name}: {precond_class} records no '{key}'; the snapshot is incomplete.")
        return value

    img_resolution, img_channels, label_dim = (
        _integer(precond_value(key, default), f"{name}: {precond_class}.{key}")
        for key, default in (("img_resolution", None), ("img_channels", None), ("label_dim", 0))
    )
    use_fp16 = bool(precond_value("use_fp16", False))
    precond_parameters = {
        key: _number(precond_value(key, default), f"{name}: {precond_class}.{key}")
        for key, default in PRECOND_PARAMETER_DEFAULTS[precond_class].items()
    }

    network = ema.state.get("_modules", {}).get("model") if isinstance(ema.state.get("_modules"), dict) else None
    if not isinstance(network, PersistentObjectRecord):
        raise ValueError(f"{name}: {precond_class} has no 'model' network; the snapshot is incomplete.")
    model_class = bare_class_name(network.class_name)
    requested = precond_kwargs.get("model_type", DEFAULT_MODEL_CLASS[precond_class])
    if model_class not in BACKBONES:
        raise ValueError(f"{name}: unknown network {model_class!r}; this converter supports {sorted(BACKBONES)}.")
    if requested != model_class:
        raise ValueError(f"{name}: {precond_class} records model_type={requested!r} but holds a {model_class}.")
    native_class = NATIVE_BACKBONE_CLASSES[model_class]
    model_kwargs = recorded_kwargs(network, _signature_order(native_class), f"{name}: {model_class}")
    _check_model_kwargs(model_kwargs, native_class, precond_class, img_resolution, img_channels, label_dim, name)

    state_dict: dict[str, torch.Tensor] = {}
    collect_state_dict(ema, "", state_dict, name, set())
    return EDMSnapshot(
        precond_class=precond_class,
        img_resolution=img_resolution,
        img_channels=img_channels,
        label_dim=label_dim,
        use_fp16=use_fp16,
        precond_parameters=precond_parameters,
        precond_kwargs=precond_kwargs,
        model_class=model_class,
        model_kwargs=model_kwargs,
        state_dict=state_dict,
        dataset_kwargs=optional_plain(dataset_kwargs),
    )


def bare_class_name(class_name: str) -> str:
    """"EDMPrecond" for "EDMPrecond" or "training.networks.EDMPrecond"."""
    return class_name.rsplit(".", 1)[-1]


def _precond_arg_order(precond_class: str) -> tuple[str, ...]:
    """Positional order of a preconditioning constructor: (img_resolution, img_channels, label_dim, use_fp16,
    <class-specific parameters>, model_type)."""
    return (*_COMMON_PRECOND_ARGS, *PRECOND_PARAMETER_DEFAULTS[precond_class], "model_type")


def _signature_order(cls: type) -> tuple[str, ...]:
    """Names of the explicit constructor parameters of a native backbone (the official order)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD)


def recorded_kwargs(record: PersistentObjectRecord, arg_order: tuple[str, ...], what: str) -> dict[str, Any]:
    """The constructor arguments a persistent module recorded (`_init_args` mapped to names, then `_init_kwargs`)."""
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs")
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise ValueError(f"{what} records no constructor arguments (_init_args/_init_kwargs); the snapshot is"
                         " incomplete.")
    if len(args) > len(arg_order):
        raise ValueError(f"{what} was built with {len(args)} positional arguments; at most {len(arg_order)} exist.")
    recorded = dict(zip(arg_order, args))
    for key, value in kwargs.items():
        if key in recorded:
            raise ValueError(f"{what} records argument {key!r} both positionally and by name.")
        recorded[key] = value
    return plain(recorded, what)


def _check_model_kwargs(
    model_kwargs: dict[str, Any],
    native_class: type,
    precond_class: str,
    img_resolution: int,
    img_channels: int,
    label_dim: int,
    name: str,
) -> None:
    """Checks the network's recorded arguments against the preconditioning's and the native backbone's signature."""
    what = f"{name}: {native_class.__name__}"
    unknown = sorted(set(model_kwargs) - set(_signature_order(native_class)))
    if unknown:
        raise ValueError(f"{what} does not accept the recorded network argument(s) {unknown}.")
    expected_out = 2 * img_channels if precond_class == "iDDPMPrecond" else img_channels
    expected = dict(img_resolution=img_resolution, in_channels=img_channels, out_channels=expected_out,
                    label_dim=label_dim)
    for key, value in expected.items():
        if model_kwargs.get(key) != value:
            raise ValueError(
                f"{what}: the network records {key}={model_kwargs.get(key)!r} but {precond_class} implies {value!r};"
                " the snapshot is inconsistent."
            )


def collect_state_dict(record: Any, prefix: str, out: dict[str, torch.Tensor], name: str, visited: set[int]) -> None:
    """Adds the tensors of a module record under the keys `torch.nn.Module.state_dict()` gives them: its parameters,
    its persistent buffers, then those of its submodules, dotted. `visited` holds the ids of the records seen: a
    module met twice (shared, or nested in itself) is refused, so a crafted pickle cannot make the walk exponential
    or endless."""
    where = prefix.rstrip(".") or "ema"
    if not isinstance(record, (PersistentObjectRecord, TorchModuleDictRecord)):
        raise ValueError(f"{name}: '{where}' is a {type(record).__name__}, not a network module.")
    if id(record) in visited or prefix.count(".") > MAX_NESTING:
        raise ValueError(f"{name}: '{where}' repeats a module or nests modules over {MAX_NESTING} levels deep; EDM"
                         " networks do neither, so the file is corrupt or crafted.")
    visited.add(id(record))
    state = record.state
    parameters, buffers, modules = (state.get(key) for key in ("_parameters", "_buffers", "_modules"))
    if not all(isinstance(entry, dict) for entry in (parameters, buffers, modules)):
        raise ValueError(f"{name}: '{where}' ({record.class_name}) lacks _parameters/_buffers/_modules.")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    tensors = list(parameters.items()) + [(k, v) for k, v in buffers.items() if k not in non_persistent]
    for key, tensor in tensors:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name}: '{prefix}{key}' is a {type(tensor).__name__}, not a tensor.")
        out[prefix + key] = tensor.detach()
    for key, child in modules.items():
        if child is not None:
            collect_state_dict(child, f"{prefix}{key}.", out, name, visited)


def optional_plain(value: Any) -> Any:
    """The informational `dataset_kwargs` as plain data, or None when they hold anything else."""
    try:
        return plain(value, "dataset_kwargs")
    except ValueError:
        return None


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}.")
    return value


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}.")
    return value


def plain(value: Any, what: str) -> Any:
    """The value with tuples as lists and EasyDicts as dicts, so that it serializes to JSON; other objects (records,
    tensors), nesting deeper than [`MAX_NESTING`] (or cycles) and more than [`MAX_CONFIG_ITEMS`] values are an
    error."""
    count = 0

    def convert(item: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if depth > MAX_NESTING or count > MAX_CONFIG_ITEMS:
            raise ValueError(f"{what} nests deeper than {MAX_NESTING} levels or holds over {MAX_CONFIG_ITEMS} values,"
                             " which is not plain configuration data.")
        if isinstance(item, (EasyDictRecord, Mapping)):
            return {_plain_key(key, what): convert(entry, depth + 1) for key, entry in item.items()}
        if isinstance(item, (list, tuple)):
            return [convert(entry, depth + 1) for entry in item]
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        if isinstance(item, NumpyArrayRecord):
            return item.value.tolist()
        raise ValueError(f"{what} holds a {type(item).__name__}, which is not plain configuration data.")

    return convert(value, 0)


def _plain_key(key: Any, what: str) -> str:
    if key is not None and not isinstance(key, (bool, int, float, str)):
        raise ValueError(f"{what} has a {type(key).__name__} key, which is not plain configuration data.")
    return str(key)
