# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Test-only writer of synthetic snapshots in the format of the official EDM pickles.

Written from the format description in the EDM spec report (§0 and §3.5), not from NVlabs code: the snapshot is a
plain `pickle.dump` of `dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)`; every network module is a
persistent object, pickled as the call `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type="class", version=6, module_src=<source>, class_name=<name>, state=<the module __dict__>)`; the
encoder/decoder containers are real `torch.nn.ModuleDict`s; tensors are `torch.nn.Parameter`s / tensors pickled by
torch's own `__reduce_ex__`; `dataset_kwargs` is a `dnnlib.util.EasyDict`. Attributes that the official networks
compute with numpy (SongUNet's `skip_scale = sqrt(0.5)`) are numpy float64 scalars, as in snapshots the official
training loop writes.

The module tree (names, nesting, parameters, buffers) is taken from the native backbones, whose module names equal
the official ones.
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffusers_edm.models.dhariwal_unet import DhariwalUNet2DModel
from diffusers_edm.models.edm_layers import (
    EDMConv2d,
    EDMGroupNorm,
    EDMLinear,
    FourierEmbedding,
    PositionalEmbedding,
    UNetBlock,
)
from diffusers_edm.models.song_unet import SongUNet2DModel

HARMLESS_MODULE_SRC = "# Stand-in for the source of training/networks.py that real snapshots embed.\n"

NATIVE_NETWORKS = {"SongUNet": SongUNet2DModel, "DhariwalUNet": DhariwalUNet2DModel}
OFFICIAL_CLASS_NAMES = {
    EDMLinear: "Linear",
    EDMConv2d: "Conv2d",
    EDMGroupNorm: "GroupNorm",
    UNetBlock: "UNetBlock",
    PositionalEmbedding: "PositionalEmbedding",
    FourierEmbedding: "FourierEmbedding",
    SongUNet2DModel: "SongUNet",
    DhariwalUNet2DModel: "DhariwalUNet",
}
# Plain attributes copied into the recorded state of layers (when the native module has them), for realism only.
LAYER_ATTRIBUTES = ("in_features", "out_features", "in_channels", "out_channels", "up", "down", "fused_resample",
                    "num_groups", "eps", "emb_channels", "num_heads", "dropout", "skip_scale", "adaptive_scale",
                    "label_dropout")
PRECOND_DEFAULTS = {
    "EDMPrecond": {"sigma_min": 0.0, "sigma_max": math.inf, "sigma_data": 0.5},
    "VPPrecond": {"beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5},
    "VEPrecond": {"sigma_min": 0.02, "sigma_max": 100.0},
    "iDDPMPrecond": {"C_1": 0.001, "C_2": 0.008, "M": 1000},
}


def _reconstruct_persistent_obj(meta: dict) -> Any:
    raise RuntimeError("writer-side stand-in of torch_utils.persistence._reconstruct_persistent_obj; never called")


class EasyDict(dict):
    """Writer-side stand-in of dnnlib.util.EasyDict (pickled under that name)."""


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"


@contextmanager
def official_global_names() -> Iterator[None]:
    """Temporarily registers modules `torch_utils.persistence` and `dnnlib.util` holding the writer's stand-ins, so
    that `pickle` records them under the official global names."""
    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                          "dnnlib.util")}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["torch_utils"].persistence = modules["torch_utils.persistence"]
    modules["dnnlib"].util = modules["dnnlib.util"]
    previous = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class PersistentObject:
    """A persistent object as the official pickles store it: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, class_name: str, state: dict, module_src: str = HARMLESS_MODULE_SRC) -> None:
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self) -> tuple:
        return _reconstruct_persistent_obj, (self.meta,)


class CraftedTensor:
    """A tensor pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`
    with any view over any storage, as a corrupt or crafted file may hold it; `values` become the storage (pickled by
    torch, with `torch.storage._load_from_bytes`)."""

    def __init__(self, values: torch.Tensor, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> None:
        self.values, self.size, self.stride, self.offset = values, tuple(size), tuple(stride), offset

    def __reduce__(self) -> tuple:
        storage = torch.storage.TypedStorage(wrap_storage=self.values.untyped_storage(), dtype=self.values.dtype,
                                             _internal=True)
        return torch._utils._rebuild_tensor_v2, (storage, self.offset, self.size, self.stride, False, OrderedDict())


def replace_tensor(snapshot: dict, key: str, tensor: Any) -> None:
    """Puts `tensor` (e.g. a [`CraftedTensor`]) in place of the tensor `key` (official name, e.g.
    "model.map_layer0.weight") of a [`snapshot_object`]."""
    *path, leaf = key.split(".")
    module = snapshot["ema"]
    for name in path:
        children = module._modules if isinstance(module, nn.ModuleDict) else module.meta["state"]["_modules"]
        module = children[name]
    state = module.meta["state"]
    entries = state["_parameters"] if leaf in state["_parameters"] else state["_buffers"]
    if leaf not in entries:
        raise KeyError(f"the snapshot has no tensor {key!r}")
    entries[leaf] = tensor


def module_state(parameters: dict, buffers: dict, modules: dict, attributes: dict, init_kwargs: dict) -> dict:
    """The `__dict__` of an eval-mode `torch.nn.Module` with the given contents, plus the persistence fields."""
    state = {key: (OrderedDict() if isinstance(value, OrderedDict) else value)
             for key, value in nn.Module().__dict__.items()}
    state["_non_persistent_buffers_set"] = set()
    state.update(training=False, _parameters=OrderedDict(parameters), _buffers=OrderedDict(buffers),
                 _modules=OrderedDict(modules))
    state.update(attributes)
    state.update(_init_args=(), _init_kwargs=dict(init_kwargs))
    return state


def network_tree(module: nn.Module, weights: dict[str, torch.Tensor], prefix: str, module_src: str,
                 init_kwargs: dict | None = None) -> Any:
    """The pickled form of a native module holding `weights` (official keys below `prefix`)."""
    children = OrderedDict(
        (name, None if child is None else network_tree(child, weights, f"{prefix}{name}.", module_src))
        for name, child in module._modules.items()
    )
    if type(module) is nn.ModuleDict:
        container = nn.ModuleDict()
        container.eval()
        container._modules = children  # persistent objects stand in for the official submodules
        return container

    parameters = {name: None if value is None else nn.Parameter(weights[prefix + name].clone(), requires_grad=False)
                  for name, value in module._parameters.items()}
    buffers = {name: None if value is None else weights[prefix + name].clone()
               for name, value in module._buffers.items()}
    attributes = {name: value for name, value in vars(module).items()
                  if name in LAYER_ATTRIBUTES and isinstance(value, (int, float, bool))}
    if attributes.get("skip_scale", 1) != 1:  # official: skip_scale=np.sqrt(0.5), a numpy scalar in the pickle
        attributes["skip_scale"] = np.float64(attributes["skip_scale"])
    kwargs = init_kwargs if init_kwargs is not None else attributes
    return PersistentObject(OFFICIAL_CLASS_NAMES[type(module)],
                            module_state(parameters, buffers, children, attributes, kwargs), module_src)


def snapshot_object(
    precond_class: str,
    constructor_kwargs: dict,
    state_dict: dict[str, torch.Tensor],
    *,
    use_fp16: bool = False,
    precond_parameters: dict | None = None,
    module_src: str = HARMLESS_MODULE_SRC,
    augment_p: float = 0.0,
) -> dict:
    """The snapshot dict of an official training run (before pickling).

    Args:
        precond_class (`str`): "EDMPrecond", "VPPrecond", "VEPrecond" or "iDDPMPrecond".
        constructor_kwargs (`dict`): the preconditioning's constructor kwargs as train.py passes them
            (img_resolution, img_channels, label_dim, model_type and the network kwargs), e.g. the conformance json's
            `constructor_kwargs`.
        state_dict (`dict`): the official `state_dict()` (keys `model.*`, plus `u` for iDDPM).
        use_fp16 (`bool`): the recorded `use_fp16` flag.
        precond_parameters (`dict`, *optional*): class-specific parameters overriding the defaults.
        module_src (`str`): text stored as every persistent object's `module_src`.
        augment_p (`float`): augmentation probability of the recorded AugmentPipe (0: `augment_pipe` is None).
    """
    kwargs = dict(constructor_kwargs)
    resolution, channels, label_dim = kwargs.pop("img_resolution"), kwargs.pop("img_channels"), kwargs.pop("label_dim")
    model_type = kwargs.pop("model_type")
    out_channels = 2 * channels if precond_class == "iDDPMPrecond" else channels
    network_kwargs = dict(img_resolution=resolution, in_channels=channels, out_channels=out_channels,
                          label_dim=label_dim, **kwargs)
    native = NATIVE_NETWORKS[model_type](**network_kwargs)
    network = network_tree(native, state_dict, "model.", module_src, init_kwargs=network_kwargs)

    parameters = {**PRECOND_DEFAULTS[precond_class], **(precond_parameters or {})}
    attributes = dict(img_resolution=resolution, img_channels=channels, label_dim=label_dim, use_fp16=use_fp16,
                      **parameters)
    if precond_class == "VPPrecond":
        attributes.update(sigma_min=0.0009765625, sigma_max=152.16698)
    buffers = {"u": state_dict["u"].clone()} if precond_class == "iDDPMPrecond" else {}
    init_kwargs = dict(constructor_kwargs, use_fp16=use_fp16, **(precond_parameters or {}))
    ema = PersistentObject(precond_class, module_state({}, buffers, {"model": network}, attributes, init_kwargs),
                           module_src)
    loss_fn = PersistentObject("EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5, _init_args=(),
                                               _init_kwargs={}), module_src)
    augment_pipe = None
    if augment_p:
        augment_pipe = PersistentObject("AugmentPipe", dict(p=augment_p, xflip=1e8, yflip=1.0, scale=1.0,
                                                            rotate_frac=1.0, aniso=1.0, translate_frac=1.0,
                                                            _init_args=(), _init_kwargs=dict(p=augment_p)),
                                        module_src)
    dataset_kwargs = EasyDict(class_name="training.dataset.ImageFolderDataset", path="datasets/synthetic.zip",
                              use_labels=label_dim > 0, xflip=False, cache=True, resolution=resolution, max_size=64)
    return dict(ema=ema, loss_fn=loss_fn, augment_pipe=augment_pipe, dataset_kwargs=dataset_kwargs)


def write_pickle(path: str | Path, obj: Any) -> Path:
    """`pickle.dump(obj)` (default protocol, as the official training loop) with the official global names."""
    path = Path(path)
    with official_global_names(), open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def write_edm_snapshot(path: str | Path, precond_class: str, constructor_kwargs: dict,
                       state_dict: dict[str, torch.Tensor], **options: Any) -> Path:
    """Writes a synthetic official-format snapshot pickle (see [`snapshot_object`] for the arguments)."""
    return write_pickle(path, snapshot_object(precond_class, constructor_kwargs, state_dict, **options))


def random_official_state_dict(precond_class: str, constructor_kwargs: dict, seed: int = 0,
                               u_table: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A random official `state_dict` (keys `model.*`) for the given constructor kwargs: the native network's layout
    with every parameter redrawn (weights ~ N(0, 1/fan_in), biases and GroupNorm offsets ~ N(0, 0.2²), GroupNorm
    scales ~ 1 + N(0, 0.25²)), buffers as built. iDDPM snapshots also need `u_table`."""
    kwargs = dict(constructor_kwargs)
    channels, model_type = kwargs.pop("img_channels"), kwargs.pop("model_type")
    out_channels = 2 * channels if precond_class == "iDDPMPrecond" else channels
    native = NATIVE_NETWORKS[model_type](in_channels=channels, out_channels=out_channels, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    parameter_names = {name for name, _ in native.named_parameters()}
    state = {}
    for name, value in native.state_dict().items():
        if name in parameter_names:
            if name.endswith("weight") and value.ndim > 1:
                value = torch.randn(value.shape, generator=generator) / math.sqrt(value[0].numel())
            elif name.endswith("weight"):
                value = 1 + 0.25 * torch.randn(value.shape, generator=generator)
            else:
                value = 0.2 * torch.randn(value.shape, generator=generator)
        state["model." + name] = value.clone()
    if precond_class == "iDDPMPrecond":
        if u_table is None:
            raise ValueError("iDDPM snapshots need the u table.")
        state["u"] = u_table.clone()
    return state
