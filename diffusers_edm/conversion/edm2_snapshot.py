# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reading official EDM2 model pickles (NVlabs/edm2: `edm2-img512-xs-2147483-0.135.pkl`, the guides, the raw post-hoc
EMA snapshots) as data, with the restricted unpickler of [`safe_unpickler`]: no code from the file runs.

An EDM2 pickle is a dict with `ema` (the `Precond` network, its weights in float16), `encoder` (a
`StabilityVAEEncoder` recording the VAE's name and the latent statistics, or a `StandardRGBEncoder` for pixel models),
`dataset_kwargs` and `loss_fn`. The network's constructor arguments are recorded (`_init_args`/`_init_kwargs`), and
its state_dict keys are `unet.*`, `logvar_fourier.*` and `logvar_linear.*`.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..models.edm2_unet import EDM2UNet2DModel
from ..pipelines.latents import EDM2_FINAL_STD, EDM2_RAW_MEAN, EDM2_RAW_STD
from .edm_snapshot import bare_class_name, collect_state_dict, optional_plain, plain, recorded_kwargs
from .safe_unpickler import PersistentObjectRecord, load_snapshot_pickle

PRECOND_CLASS = "Precond"
"""The class name of EDM2's preconditioned network (EDM's are `EDMPrecond`, `VPPrecond`, ...)."""

_PRECOND_ARGS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_data", "logvar_channels")
"""Positional order of `Precond`'s own arguments; the others go to its U-Net."""

VAE_ENCODER, RGB_ENCODER = "StabilityVAEEncoder", "StandardRGBEncoder"


@dataclass
class LatentEncoding:
    """A `StabilityVAEEncoder`'s record: the VAE (a diffusers `AutoencoderKL` id) and the latent statistics.

    Attributes:
        vae_name (`str`): e.g. "stabilityai/sd-vae-ft-mse".
        raw_mean (`list[float]`), raw_std (`list[float]`): per-channel statistics of the raw latents.
        final_std (`float`): standard deviation of the model's latents (0.5).
    """

    vae_name: str
    raw_mean: list[float]
    raw_std: list[float]
    final_std: float


@dataclass
class EDM2Snapshot:
    """The network of an official EDM2 pickle, as data.

    Attributes:
        name (`str`): the file's path (for messages and the card).
        img_resolution (`int`), img_channels (`int`), label_dim (`int`): the image (or latent) shape and classes.
        sigma_data (`float`): σ_data of the preconditioning (0.5).
        backbone_config (`dict`): constructor arguments of [`EDM2UNet2DModel`] besides shape and classes.
        state_dict (`dict[str, torch.Tensor]`): the weights under the official keys.
        encoding (`LatentEncoding`, *optional*): the latent space; `None` for a pixel-space model.
        dataset_kwargs (`dict`, *optional*): the recorded training data settings (informational).
    """

    name: str
    img_resolution: int
    img_channels: int
    label_dim: int
    sigma_data: float
    backbone_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    encoding: LatentEncoding | None
    dataset_kwargs: dict[str, Any] | None


def is_edm2_pickle(contents: Any) -> bool:
    """Whether an unpickled file holds an EDM2 network (its `ema` is a `Precond`)."""
    ema = contents.get("ema") if isinstance(contents, dict) else None
    return isinstance(ema, PersistentObjectRecord) and bare_class_name(ema.class_name) == PRECOND_CLASS


def read_edm2_snapshot(path: str | os.PathLike) -> EDM2Snapshot:
    """Reads the network of an official EDM2 pickle without executing any code from it.

    Raises:
        UnsafeCheckpointError: the pickle references code an EDM2 model never needs, or a tensor that does not fit its
            storage.
        ValueError: the file is not an EDM2 model pickle (e.g. an EDM one, or a training state), or its network is
            not the EDM2 U-Net.
    """
    return edm2_snapshot_from_contents(load_snapshot_pickle(path), os.fspath(path))


def edm2_snapshot_from_contents(contents: Any, name: str) -> EDM2Snapshot:
    """Interprets an unpickled EDM2 file (see [`read_edm2_snapshot`]); `name` is used in messages."""
    if not is_edm2_pickle(contents):
        found = type(contents.get("ema")).__name__ if isinstance(contents, dict) else type(contents).__name__
        if isinstance(contents, dict) and isinstance(contents.get("ema"), PersistentObjectRecord):
            found = bare_class_name(contents["ema"].class_name)
        raise ValueError(f"{name} is not an EDM2 model pickle: its 'ema' is a {found}, not EDM2's Precond network.")
    ema = contents["ema"]
    kwargs = recorded_kwargs(ema, _PRECOND_ARGS, f"{name}: {PRECOND_CLASS}")
    state = ema.state

    def value(key: str, default: Any = None) -> Any:
        found = state.get(key, kwargs.get(key, default))
        if found is None:
            raise ValueError(f"{name}: {PRECOND_CLASS} records no '{key}'; the pickle is incomplete.")
        return found

    img_resolution, img_channels, label_dim = (value(key) for key in ("img_resolution", "img_channels", "label_dim"))
    for key, number in (("img_resolution", img_resolution), ("img_channels", img_channels), ("label_dim", label_dim)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"{name}: {PRECOND_CLASS}.{key} must be a non-negative integer, got {number!r}.")
    unet = state.get("_modules", {}).get("unet") if isinstance(state.get("_modules"), dict) else None
    if not isinstance(unet, PersistentObjectRecord) or bare_class_name(unet.class_name) != "UNet":
        raise ValueError(f"{name}: {PRECOND_CLASS} has no 'unet' network; the pickle is incomplete.")
    backbone_config = {key: entry for key, entry in kwargs.items() if key not in _PRECOND_ARGS}
    backbone_config["logvar_channels"] = value("logvar_channels", 128)
    known = set(inspect.signature(EDM2UNet2DModel.__init__).parameters) - {
        "self", "img_resolution", "in_channels", "out_channels", "label_dim", "augment_dim"}
    unknown = sorted(set(backbone_config) - known)
    if unknown:
        raise ValueError(f"{name}: the network records argument(s) {unknown} that EDM2's U-Net does not take.")
    state_dict: dict[str, torch.Tensor] = {}
    collect_state_dict(ema, "", state_dict, name, set())
    return EDM2Snapshot(
        name=name, img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim,
        sigma_data=float(value("sigma_data", 0.5)), backbone_config=plain(backbone_config, name),
        state_dict=state_dict, encoding=_encoding(contents.get("encoder"), name),
        dataset_kwargs=optional_plain(contents.get("dataset_kwargs")),
    )


def _encoding(encoder: Any, name: str) -> LatentEncoding | None:
    """The latent encoding a pickle's `encoder` records; `None` for pixels (`StandardRGBEncoder`, or none)."""
    if encoder is None:
        return None
    if not isinstance(encoder, PersistentObjectRecord):
        raise ValueError(f"{name}: its 'encoder' is a {type(encoder).__name__}, not an EDM2 encoder.")
    kind = bare_class_name(encoder.class_name)
    if kind == RGB_ENCODER:
        return None
    if kind != VAE_ENCODER:
        raise ValueError(f"{name}: unknown encoder {kind!r}; EDM2 models use {VAE_ENCODER} or {RGB_ENCODER}.")
    kwargs = plain(recorded_kwargs(encoder, ("vae_name", "raw_mean", "raw_std", "final_mean", "final_std",
                                             "batch_size"), f"{name}: {kind}"), name)
    if float(kwargs.get("final_mean", 0)) != 0:
        raise ValueError(f"{name}: the encoder's final_mean is {kwargs['final_mean']}; only 0 (EDM2's) is supported.")
    encoding = LatentEncoding(str(kwargs.get("vae_name", "stabilityai/sd-vae-ft-mse")),
                              [float(v) for v in kwargs.get("raw_mean", EDM2_RAW_MEAN)],
                              [float(v) for v in kwargs.get("raw_std", EDM2_RAW_STD)],
                              float(kwargs.get("final_std", EDM2_FINAL_STD)))
    if len(encoding.raw_mean) != len(encoding.raw_std) or not encoding.raw_mean:
        raise ValueError(f"{name}: the encoder's raw_mean and raw_std differ in length.")
    return encoding
