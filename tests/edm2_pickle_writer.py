# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Test-only writer of synthetic pickles in the format of the official EDM2 model files.

Written from the format description of the EDM2 conformance README ("Official files"), not from NVlabs code: a plain
`pickle.dump` of an `EasyDict(ema=..., encoder=..., dataset_kwargs=..., loss_fn=...)`; every network class is a
persistent object (`torch_utils.persistence._reconstruct_persistent_obj(meta)`, see `edm_pickle_writer`) recording its
`__dict__` with `_init_args`/`_init_kwargs`; the encoder/decoder containers are real `torch.nn.ModuleDict`s; the
network's parameters and buffers are float16; a latent model's `encoder` is a `StabilityVAEEncoder` recording the VAE
name and holding its scale and bias as numpy float32 arrays.

The module tree comes from the native `EDM2UNet2DModel`, whose module names equal the official ones (its uncertainty
head `logvar_fourier`/`logvar_linear` lives in the official `Precond`, next to `unet`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffusers_edm.models.edm2_layers import EDM2Block, MPConv, MPFourier
from diffusers_edm.models.edm2_unet import EDM2UNet2DModel
from tests.edm_pickle_writer import HARMLESS_MODULE_SRC, EasyDict, PersistentObject, module_state, write_pickle

OFFICIAL_CLASS_NAMES = {EDM2UNet2DModel: "UNet", EDM2Block: "Block", MPConv: "MPConv", MPFourier: "MPFourier"}
PRECOND_ARGUMENTS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_data", "logvar_channels")
HEAD_MODULES = ("logvar_fourier", "logvar_linear")
# Native attributes that are not the official module's (runtime settings of this package).
NATIVE_ONLY_ATTRIBUTES = {"attention_implementation", "gradient_checkpointing"}
RAW_MEAN, RAW_STD, FINAL_STD = [5.81, 3.25, 0.12, -2.15], [4.17, 4.62, 3.71, 3.28], 0.5


def _attributes(module: nn.Module) -> dict:
    """The plain attributes of a native module, recorded in its pickled state (for realism)."""
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and name != "training" and name not in NATIVE_ONLY_ATTRIBUTES
            and isinstance(value, (int, float, bool, str, list))}


def _tree(module: nn.Module, weights: dict[str, torch.Tensor], prefix: str, module_src: str,
          skip: tuple[str, ...] = ()) -> Any:
    """The pickled form of a native EDM2 module holding `weights` (official keys below `prefix`)."""
    children = OrderedDict((name, None if child is None else _tree(child, weights, f"{prefix}{name}.", module_src))
                           for name, child in module._modules.items() if name not in skip)
    if type(module) is nn.ModuleDict:
        container = nn.ModuleDict()
        container.eval()
        container._modules = children
        return container
    parameters = {name: nn.Parameter(weights[prefix + name].clone(), requires_grad=False)
                  for name, value in module._parameters.items() if value is not None}
    buffers = {name: weights[prefix + name].clone() for name, value in module._buffers.items() if value is not None}
    attributes = _attributes(module)
    return PersistentObject(OFFICIAL_CLASS_NAMES[type(module)],
                            module_state(parameters, buffers, children, attributes, attributes), module_src)


def vae_encoder(vae_name: str = "stabilityai/sd-vae-ft-mse", raw_mean: list[float] = RAW_MEAN,
                raw_std: list[float] = RAW_STD, final_std: float = FINAL_STD, record_kwargs: bool = False,
                module_src: str = HARMLESS_MODULE_SRC) -> PersistentObject:
    """A `StabilityVAEEncoder` record: scale = float32(final_std)/float32(raw_std), bias = −raw_mean·scale as numpy
    arrays in its state; the constructor arguments are recorded only with `record_kwargs` (the official training
    builds it with its defaults)."""
    scale = np.float32(final_std) / np.asarray(raw_std, dtype=np.float32)
    bias = -np.asarray(raw_mean, dtype=np.float32) * scale
    kwargs = dict(vae_name=vae_name, raw_mean=raw_mean, raw_std=raw_std, final_mean=0, final_std=final_std,
                  batch_size=8) if record_kwargs else dict(vae_name=vae_name)
    state = dict(vae_name=vae_name, scale=scale, bias=bias, batch_size=8, _vae=None, _init_args=(),
                 _init_kwargs=kwargs)
    return PersistentObject("StabilityVAEEncoder", state, module_src)


def rgb_encoder(module_src: str = HARMLESS_MODULE_SRC) -> PersistentObject:
    """A `StandardRGBEncoder` record (pixel-space models)."""
    return PersistentObject("StandardRGBEncoder", dict(_init_args=(), _init_kwargs={}), module_src)


def edm2_snapshot_object(config: dict, state_dict: dict[str, torch.Tensor], encoder: Any = "vae", *,
                         dtype: torch.dtype = torch.float16, module_src: str = HARMLESS_MODULE_SRC) -> EasyDict:
    """The contents of an official EDM2 model pickle (before pickling).

    Args:
        config (`dict`): `Precond(**config)` arguments, e.g. a conformance case's `config` (img_resolution,
            img_channels, label_dim, use_fp16, the U-Net's arguments, logvar_channels).
        state_dict (`dict`): the official `Precond.state_dict()` (keys `unet.*`, `logvar_fourier.*`,
            `logvar_linear.*`).
        encoder: "vae" (a default `StabilityVAEEncoder`), "rgb" (`StandardRGBEncoder`), `None` or a record.
        dtype (`torch.dtype`): the stored dtype of every tensor (the official files cast the network to float16).
        module_src (`str`): text stored as every persistent object's `module_src`.
    """
    precond_kwargs = {key: config[key] for key in PRECOND_ARGUMENTS if key in config}
    unet_kwargs = {key: value for key, value in config.items() if key not in PRECOND_ARGUMENTS}
    native = EDM2UNet2DModel(img_resolution=config["img_resolution"], in_channels=config["img_channels"],
                             label_dim=config["label_dim"], logvar_channels=config.get("logvar_channels", 128),
                             **unet_kwargs)
    weights = {key: value.to(dtype) for key, value in state_dict.items()}
    unet_weights = {key[len("unet."):]: value for key, value in weights.items() if key.startswith("unet.")}
    modules = {"unet": _tree(native, unet_weights, "", module_src, skip=HEAD_MODULES)}
    modules.update((name, _tree(getattr(native, name), weights, f"{name}.", module_src)) for name in HEAD_MODULES)
    attributes = dict(img_resolution=config["img_resolution"], img_channels=config["img_channels"],
                      label_dim=config["label_dim"], use_fp16=config.get("use_fp16", False),
                      sigma_data=config.get("sigma_data", 0.5))
    ema = PersistentObject("Precond", module_state({}, {}, modules, attributes, {**precond_kwargs, **unet_kwargs}),
                           module_src)
    if isinstance(encoder, str):
        encoder = vae_encoder(module_src=module_src) if encoder == "vae" else rgb_encoder(module_src)
    loss_fn = PersistentObject("EDM2Loss", dict(P_mean=-0.4, P_std=1.0, sigma_data=0.5, _init_args=(),
                                                _init_kwargs=dict(P_mean=-0.4, P_std=1.0)), module_src)
    dataset_kwargs = EasyDict(class_name="training.dataset.ImageFolderDataset", path="datasets/synthetic.zip",
                              use_labels=config["label_dim"] > 0, xflip=False, cache=True)
    return EasyDict(ema=ema, encoder=encoder, dataset_kwargs=dataset_kwargs, loss_fn=loss_fn)


def write_edm2_snapshot(path: str | Path, config: dict, state_dict: dict[str, torch.Tensor], **options: Any) -> Path:
    """Writes a synthetic official-format EDM2 pickle (see [`edm2_snapshot_object`] for the arguments)."""
    return write_pickle(path, edm2_snapshot_object(config, state_dict, **options))


def official_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official EDM2 state_dict for `config`: the native layout under the official keys, every weight and
    gain redrawn (gains ~ N(1, 0.5²) so that no path is silent), the Fourier buffers as built."""
    kwargs = {key: value for key, value in config.items() if key not in PRECOND_ARGUMENTS or key == "logvar_channels"}
    native = EDM2UNet2DModel(img_resolution=config["img_resolution"], in_channels=config["img_channels"],
                             label_dim=config["label_dim"], **kwargs)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in native.state_dict().items():
        if name.endswith("gain"):
            value = 1 + 0.5 * torch.randn(value.shape, generator=generator)
        elif name.endswith("weight"):
            value = torch.randn(value.shape, generator=generator)
        key = name if name.startswith(HEAD_MODULES) else "unet." + name
        state[key] = value.clone()
    return state
