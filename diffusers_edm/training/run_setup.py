"""Everything `train_edm.py` resolves before training starts: the model's configuration (from the flags,
--model_config or a pretrained model, with σ_data and the preconditioning taken from the model), the data settings,
the numerics and trackers, and `--dry_run`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os

import torch
from accelerate import Accelerator, PartialState

from ..data import DataConfig, DatasetShape, EDMImageDataset, inspect_dataset
from ..errors import TrainingError, first_line
from ..models.unet_edm import EDMPreconditionedUNet2DModel, preconditioning_of
from ..pipelines.fast_sampling import set_tf32
from ..preconditioning import EDM_SIGMA_DATA
from .hub import read_token_file
from .latent_data import check_vae_fits, read_vae_config
from .model_card import SECRET_KEYS
from .model_config import (
    count_parameters,
    edm2_model_config,
    edm_augment_dim,
    native_model_config,
    unet2d_model_config,
)
from .presets import get_preset
from .settings import Interval, resolve_batch_sizes
from .text_conditioning import read_text_width
from .transfer import PretrainedDenoiser, load_pretrained_denoiser, transfer_model_config


def run_model_config(args: argparse.Namespace, dataset: EDMImageDataset, augment_dim: int,
                     pretrained: PretrainedDenoiser | None = None, text_width: int = 0) -> dict:
    """The configuration of the run's denoiser: the pretrained model's architecture with the data's label and augment
    inputs (fine-tuning), --model_config, or the --arch backbone built from the architecture flags. With the first
    two, σ_data and the preconditioning are the model's own: a --sigma_data or --precond that differs is an error.
    A text model (`text_width`, the text encoder's) takes the pooled embedding as its label vector, and attends to
    the tokens where the backbone can (edm2, unet_2d)."""
    config = _run_model_config(args, dataset, augment_dim, pretrained, text_width)
    tokens = config.get("cross_attention_dim", 0)
    if text_width and tokens not in (0, text_width):
        raise TrainingError(f"The model attends to {tokens}-wide text tokens but --text_encoder {args.text_encoder}"
                            f" is {text_width} wide; pass the text encoder the model was built for.")
    return config


def _run_model_config(args: argparse.Namespace, dataset: EDMImageDataset, augment_dim: int,
                      pretrained: PretrainedDenoiser | None, text_width: int) -> dict:
    num_classes = text_width or dataset.num_classes
    if pretrained is not None:
        config = transfer_model_config(pretrained.config, num_class_labels=num_classes,
                                       augment_dim=augment_dim, sample_size=dataset.resolution,
                                       in_channels=dataset.num_channels, label_dropout=args.label_dropout)
        check_model_settings(config, args, f"the pretrained model {args.pretrained_model_name_or_path}")
        return config
    if args.model_config:
        config = {k: v for k, v in read_model_config(args.model_config).items() if not k.startswith("_")}
        expected = dict(sample_size=dataset.resolution, in_channels=dataset.num_channels,
                        num_class_labels=num_classes, augment_dim=augment_dim)
        mismatched = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
        if mismatched:
            raise TrainingError(f"--model_config disagrees with the data/augmentation (config, needed): {mismatched}.")
        check_model_settings(config, args, f"--model_config {args.model_config}")
        return config
    levels = len(args.channel_mult)
    factor = 2 ** (levels - 1)
    if dataset.resolution % factor:
        lower, upper = dataset.resolution // factor * factor, (dataset.resolution // factor + 1) * factor
        raise TrainingError(
            f"--resolution {dataset.resolution} does not fit --channel_mult {','.join(map(str, args.channel_mult))}: "
            f"its {levels} levels halve the image {levels - 1} time(s), so the resolution must be divisible by "
            f"2^{levels - 1} = {factor}; pass e.g. --resolution {f'{lower} or {upper}' if lower >= 4 else upper}, "
            f"or fewer --channel_mult levels.")
    if args.label_dropout and not dataset.num_classes:
        raise TrainingError(f"--label_dropout {args.label_dropout} needs class labels, but the data is unconditional;"
                            " drop the flag or pass labelled data.")
    precond = args.precond or "edm"
    if args.sigma_data is not None and precond != "edm":
        raise TrainingError(f"--sigma_data belongs to the EDM preconditioning; --precond {precond} has none, drop it.")
    network = dict(model_channels=args.model_channels, channel_mult=args.channel_mult,
                   layers_per_block=args.layers_per_block, attn_resolutions=args.attn_resolutions,
                   dropout=args.dropout, resolution=dataset.resolution, channels=dataset.num_channels,
                   num_classes=num_classes, augment_dim=augment_dim, precond=precond,
                   sigma_data=args.sigma_data if args.sigma_data is not None else EDM_SIGMA_DATA,
                   label_dropout=args.label_dropout)
    tokens = {"cross_attention_dim": text_width} if text_width and args.arch in ("unet_2d", "edm2") else {}
    if tokens and not args.attn_resolutions and args.arch == "unet_2d":
        raise TrainingError("A unet_2d text model cross-attends in its attention levels: pass --attn_resolutions (e.g."
                            f" {dataset.resolution // 2}).")
    if args.arch == "unet_2d":
        return {**unet2d_model_config(**network), **tokens}
    if args.arch == "edm2":
        if precond != "edm":
            raise TrainingError(f"--arch edm2 uses EDM's preconditioning; drop --precond {precond}.")
        for key in ("augment_dim", "precond", "label_dropout"):  # refused by the command line for EDM2
            network.pop(key)
        return {**edm2_model_config(**network), **tokens}
    return native_model_config(args.arch, **network)


def check_preset_resolution(args: argparse.Namespace, resolution: int) -> None:
    """A TrainingError when an EDM2 `--preset` meets images of another size than its official data's."""
    if args.preset is None or not args.preset.startswith("edm2-"):
        return
    expected = get_preset(args.preset).resolution
    if resolution != expected:
        raise TrainingError(f"--preset {args.preset} trains on {expected}x{expected} images but the data is"
                            f" {resolution}x{resolution}; pass --resolution {expected} (images are resized) or a preset"
                            " of your data's size.")


def check_loss_fits(config: dict, loss: str) -> None:
    """A TrainingError unless the model of `config` can be trained with `--loss` (EDM2's needs the uncertainty head
    of EDM2's U-Net)."""
    backbone = config.get("backbone_type", "unet_2d")
    if loss == "edm2" and backbone != "edm2_unet":
        raise TrainingError(f"--loss edm2 weights the loss by the learned uncertainty u(σ) of EDM2's U-Net, which the"
                            f" {backbone} backbone does not have; use --arch edm2 or --loss edm.")


def data_config(args: argparse.Namespace) -> DataConfig:
    """The data settings of the command line."""
    return DataConfig(
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir, image_column=args.image_column,
        label_column=None if args.caption_column else args.label_column, caption_column=args.caption_column,
        resolution=args.resolution, center_crop=args.center_crop, xflip=args.xflip,
        max_train_samples=args.max_train_samples, seed=args.seed,
        conditional=None if args.caption_column else args.conditional,  # a preset's classes give way to captions
        cache_dir=args.cache_dir, in_memory=args.data_in_memory, decoded_cache_dir=args.decoded_cache_dir,
        num_workers=args.dataloader_num_workers,
    )


def load_pretrained(args: argparse.Namespace, weights: bool = True) -> PretrainedDenoiser | None:
    """The model of --pretrained_model_name_or_path (None without it)."""
    if args.pretrained_model_name_or_path is None:
        return None
    token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
    return load_pretrained_denoiser(args.pretrained_model_name_or_path, weights=weights, cache_dir=args.cache_dir,
                                    token=token)


def build_model(args: argparse.Namespace, dataset: EDMImageDataset, augment_dim: int,
                pretrained: PretrainedDenoiser | None = None, text_width: int = 0) -> EDMPreconditionedUNet2DModel:
    """The run's denoiser, freshly initialised, from [`run_model_config`]; its backbone must fit `--loss`."""
    config = run_model_config(args, dataset, augment_dim, pretrained, text_width)
    check_loss_fits(config, args.loss)
    return EDMPreconditionedUNet2DModel.from_config(config)


def read_model_config(path: str) -> dict:
    """The JSON model configuration of --model_config; a missing or unreadable file is a one-line TrainingError."""
    if not os.path.isfile(path):
        raise TrainingError(f"--model_config {path}: no such file; pass the JSON configuration of an "
                            f"EDMPreconditionedUNet2DModel (e.g. a pipeline's unet/config.json).")
    try:
        return EDMPreconditionedUNet2DModel.load_config(path)
    except (OSError, ValueError) as error:
        raise TrainingError(f"--model_config {path} is not a readable JSON model configuration "
                            f"({first_line(error)}).") from None


def check_model_settings(config: dict, args: argparse.Namespace, source: str) -> None:
    """A TrainingError when --precond or --sigma_data disagree with the preconditioning of the model `config` (from
    `source`), naming both values."""
    name = config.get("preconditioning", "edm")
    if args.precond is not None and args.precond != name:
        raise TrainingError(f"--precond {args.precond} disagrees with {source}, which uses the {name!r} "
                            f"preconditioning; drop --precond (the model's is used).")
    precond = preconditioning_of(name, config.get("preconditioning_config"),
                                 config.get("sigma_data", EDM_SIGMA_DATA))
    own = getattr(precond, "sigma_data", None)
    if args.sigma_data is not None and args.sigma_data != own:
        has = f"σ_data {own:g}" if own is not None else f"no σ_data (its preconditioning is {name!r})"
        raise TrainingError(f"--sigma_data {args.sigma_data:g} disagrees with {source}, which has {has}; drop "
                            f"--sigma_data (the model's is used).")


def configure_numerics(exact: bool) -> None:
    """torch.backends for speed: TF32 matmuls and convolutions and fp16 reduced-precision reductions on Ampere and
    later GPUs (a 10-bit mantissa inside matmuls); with `exact`, the official code's settings (all three off). cuDNN
    picks its fastest algorithms in both (as the official --bench). These settings are global to the process."""
    set_tf32(not exact)
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = not exact
    torch.backends.cudnn.benchmark = True


def fused_adam(device: torch.device, exact: bool) -> bool | None:
    """Adam's `fused` argument: the fused kernel (every parameter updated in one launch) on GPUs; `None` (torch's
    default, as the official code) with `exact` and on other devices, where the fused kernel was 5% slower on the
    digits model."""
    return True if device.type == "cuda" and not exact else None


def trackers(report_to: str | None) -> str | None:
    """accelerate's `log_with` for --report_to: None (default) takes TensorBoard when it is installed; a named tracker
    that is not installed is a TrainingError saying what to install."""
    if report_to is None:
        return "tensorboard" if importlib.util.find_spec("tensorboard") is not None else None
    if report_to == "none":
        return None
    for name in ("tensorboard", "wandb"):
        if report_to == name and importlib.util.find_spec(name) is None:
            raise TrainingError(f"--report_to {name}: the {name} package is not installed; `pip install {name}` or "
                                f"pass --report_to none.")
    return report_to


def public_config(args: argparse.Namespace) -> dict:
    """The run's settings as JSON-friendly values, without secrets (token)."""
    return {key: (str(value) if isinstance(value, Interval) else value)
            for key, value in vars(args).items() if key not in SECRET_KEYS}


def dry_run(args: argparse.Namespace) -> dict:
    """--dry_run: the resolved settings, the model's configuration and parameter count, and the length of the run,
    printed and returned; nothing is written, no weights are allocated and only the data's first image is decoded.
    Without data flags and with a --preset, the preset's own dataset shape stands in for the data."""
    num_processes = Accelerator().num_processes  # (PartialState() alone misses accelerate's multi-CPU launches)
    resolve_batch_sizes(args, num_processes)
    if args.preset is not None and args.dataset_name is None and args.train_data_dir is None:
        preset = get_preset(args.preset)
        conditional = args.conditional is not False
        data = DatasetShape(args.resolution or preset.resolution, preset.channels,
                         preset.num_classes if conditional else 0, f"the shape of {preset.dataset} (no data given)")
    else:
        data = inspect_dataset(data_config(args))
    check_preset_resolution(args, data.resolution)
    if args.vae is not None:  # the latents' shape from the VAE's config; no weights are loaded
        token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
        channels, resolution = check_vae_fits(read_vae_config(args.vae, args.cache_dir, token), data.resolution,
                                              data.num_channels, args.vae)
        data = DatasetShape(resolution, channels, data.num_classes,
                            f"{data.source_description}, as {channels}x{resolution}x{resolution} latents of {args.vae}")
    augment_dim = edm_augment_dim(args.augment_p, args.augment_colors)
    width = 0
    if args.text_encoder is not None:
        token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
        width = read_text_width(args.text_encoder, args.cache_dir, token)
    config = run_model_config(args, data, augment_dim, load_pretrained(args, weights=False), width)
    check_loss_fits(config, args.loss)
    global_batch = args.train_batch_size * num_processes * args.gradient_accumulation_steps
    steps = math.ceil(args.duration_kimg * 1000 / global_batch)
    if args.max_train_steps is not None:
        steps = min(steps, args.max_train_steps)
    summary = {
        "settings": public_config(args), "data": data.source_description,
        "image_shape": [data.num_channels, data.resolution, data.resolution], "num_classes": data.num_classes,
        "model": config, "parameters": count_parameters(config), "processes": num_processes,
        "images_per_step": global_batch, "steps": steps, "images": steps * global_batch,
    }
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=1, default=str))
        print(f"{summary['parameters']:,} parameters; {steps:,} steps of {global_batch} images = "
              f"{steps * global_batch / 1e6:g} Mimg.")
    return summary
