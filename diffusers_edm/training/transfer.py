"""Fine-tuning from a pretrained denoiser (`train_edm.py --pretrained_model_name_or_path`), EDM's `--transfer`.

As the official transfer does: the pretrained model's (EMA) weights are copied into the new network wherever a tensor
of the same name and shape exists; tensors added for the new data (a label input for other classes, the augment-label
input) keep their fresh initialisation. The new model keeps the pretrained architecture and preconditioning (and so
its σ_data), with the dataset-dependent inputs replaced ([`transfer_model_config`]). The learning-rate ramp-up starts
again and the EMA runs without its ramp-up (`ema_rampup_ratio=None`); both are up to the training loop.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import huggingface_hub.constants
import torch

from ..errors import TrainingError, first_line
from ..models.unet_edm import NATIVE_BACKBONES, EDMPreconditionedUNet2DModel
from .loss import check_trainable

MODEL_CLASS = EDMPreconditionedUNet2DModel.__name__
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
_PIPELINE_HINT = (
    "an EDMPipeline folder (model_index.json and unet/ with config.json and diffusion_pytorch_model.safetensors, as "
    "train_edm.py and `python -m diffusers_edm.convert_edm_checkpoint` write), its unet/ folder, or a Hub id"
)


class PretrainedDenoiser(NamedTuple):
    """A pretrained `EDMPreconditionedUNet2DModel`: its configuration (constructor arguments, without diffusers'
    `_` entries) and its `state_dict` (None when only the configuration was loaded)."""

    config: dict
    state_dict: dict[str, torch.Tensor] | None


def load_pretrained_denoiser(
    name_or_path: str | os.PathLike,
    *,
    weights: bool = True,
    local_files_only: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> PretrainedDenoiser:
    """The denoiser of a saved `EDMPipeline` (its `unet`), for fine-tuning.

    Args:
        name_or_path: a local pipeline folder (with `model_index.json`), a model folder (`config.json` and the
            weights, e.g. a pipeline's `unet/`), or a Hub id of either (loaded through diffusers' `from_pretrained`,
            which honours `local_files_only`, `revision`, `cache_dir`, `token` and `HF_HUB_OFFLINE`).
        weights (`bool`, defaults to True): also load the weights; False reads only the configuration (e.g. to
            rebuild the architecture of a transferred run that resumes from its own checkpoint).

    Raises:
        [`TrainingError`]: one line naming the problem (no such folder, not a pipeline or model folder, another
            model class, missing weights, not on the Hub or not in the offline cache).
    """
    hub = dict(local_files_only=local_files_only, revision=revision, cache_dir=cache_dir, token=token)
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        location = _local_model_folder(path)
        candidates = [(str(location), None, {})]
    elif _looks_like_a_path(text):
        raise TrainingError(f"--pretrained_model_name_or_path {text}: no such file or folder; pass {_PIPELINE_HINT}.")
    else:
        candidates = [(text, "unet", hub), (text, None, hub)]  # a pipeline repository, then a bare model repository
    errors = []
    for source, subfolder, kwargs in candidates:
        try:
            with warnings.catch_warnings():  # diffusers 0.42 passes an argument huggingface_hub deprecated
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                config = EDMPreconditionedUNet2DModel.load_config(source, subfolder=subfolder, **kwargs)
        except OSError as error:  # diffusers' EnvironmentError: missing file, not on the Hub, offline and not cached
            errors.append(first_line(error))
            continue
        _check_class(config, text)
        if not weights:
            return PretrainedDenoiser(_public_config(config), None)
        try:
            model = EDMPreconditionedUNet2DModel.from_pretrained(source, subfolder=subfolder, **kwargs)
        except (OSError, ValueError, RuntimeError) as error:  # missing or unreadable file, weights of other shapes
            raise TrainingError(f"--pretrained_model_name_or_path {text}: cannot load the weights of the model "
                                f"({first_line(error)}).") from error
        state_dict = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        return PretrainedDenoiser(_public_config(model.config), state_dict)
    offline = local_files_only or huggingface_hub.constants.HF_HUB_OFFLINE
    where = "; offline, so only the local Hub cache was searched" if offline else ""
    raise TrainingError(f"--pretrained_model_name_or_path {text}: not found as {_PIPELINE_HINT} ({errors[-1]}{where}).")


def _local_model_folder(path: Path) -> Path:
    """The folder holding the model's config.json: `path` itself or the `unet` of the pipeline at `path`."""
    if path.is_file():
        hint = " (convert an official .pkl first with `python -m diffusers_edm.convert_edm_checkpoint`)" \
            if path.suffix == ".pkl" else ""
        raise TrainingError(f"--pretrained_model_name_or_path {path} is a file; pass {_PIPELINE_HINT}{hint}.")
    index_file = path / "model_index.json"
    if index_file.is_file():
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TrainingError(f"{index_file} is not a readable JSON file ({first_line(error)}).") from error
        entry = index.get("unet")
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == MODEL_CLASS):
            raise TrainingError(f"{index_file} has no {MODEL_CLASS} 'unet' (found {entry!r}); pass {_PIPELINE_HINT}.")
        path = path / "unet"
    if not (path / EDMPreconditionedUNet2DModel.config_name).is_file():
        raise TrainingError(f"--pretrained_model_name_or_path {path} has neither model_index.json nor config.json; "
                            f"pass {_PIPELINE_HINT}.")
    return path


def _looks_like_a_path(text: str) -> bool:
    """Whether `text` names a local path rather than a Hub id ("owner/name" or "name")."""
    return (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
            or os.path.splitext(text)[1].lower() in (".pkl", ".pt", ".safetensors", ".json"))


def _check_class(config: dict, text: str) -> None:
    class_name = config.get("_class_name")
    if class_name != MODEL_CLASS:
        raise TrainingError(f"--pretrained_model_name_or_path {text} holds a {class_name}, not an {MODEL_CLASS}; "
                            f"pass {_PIPELINE_HINT}.")


def _public_config(config) -> dict:
    return copy.deepcopy({key: value for key, value in dict(config).items() if not key.startswith("_")})


# --- The new model's configuration -----------------------------------------------------------------------------------


def transfer_model_config(
    pretrained_config: dict,
    *,
    num_class_labels: int,
    augment_dim: int,
    sample_size: int | None = None,
    in_channels: int | None = None,
    dropout: float | None = None,
    label_dropout: float | None = None,
) -> dict:
    """The configuration of the model to fine-tune: the pretrained one (architecture, preconditioning, σ_data) with
    the inputs of the new data and augmentation.

    Args:
        pretrained_config (`dict`): [`PretrainedDenoiser.config`].
        num_class_labels (`int`), augment_dim (`int`): of the new run (0: unconditional / no augment labels); the
            label and augment-label inputs are rebuilt when they change and start from their initialisation.
        sample_size (`int`, *optional*): the new resolution. Allowed to differ only for the `unet_2d` backbone (its
            weights do not depend on it); the paper's backbones name and place their blocks by resolution.
        in_channels (`int`, *optional*): the new image channels; must equal the pretrained model's.
        dropout (`float`, *optional*), label_dropout (`float`, *optional*): replace the pretrained values (None:
            keep them).

    Raises:
        [`TrainingError`]: iDDPM models (no training loss), other channels, another resolution for a paper backbone,
            label dropout without classes.
    """
    config = copy.deepcopy(dict(pretrained_config))
    check_trainable(config.get("preconditioning", "edm"))
    native = config.get("backbone_type", "unet_2d") in NATIVE_BACKBONES
    if in_channels is not None and in_channels != config["in_channels"]:
        raise TrainingError(f"The pretrained model takes {config['in_channels']}-channel images, the data has "
                            f"{in_channels}; fine-tune on {config['in_channels']}-channel images.")
    if sample_size is not None and sample_size != config["sample_size"]:
        if native:
            raise TrainingError(
                f"The pretrained {config['backbone_type']} model is for {config['sample_size']}x{config['sample_size']}"
                f" images and its blocks depend on the resolution; pass --resolution {config['sample_size']}.")
        config["sample_size"] = sample_size
    config["num_class_labels"] = num_class_labels
    config["augment_dim"] = augment_dim
    if native:
        config["backbone_config"] = dict(config.get("backbone_config") or {})
    target = config["backbone_config"] if native else config  # where dropout and label_dropout live
    if dropout is not None:
        target["dropout"] = dropout
    if label_dropout is not None:
        if label_dropout:
            target["label_dropout"] = label_dropout
        elif native:
            target.pop("label_dropout", None)  # the backbone's default, 0, as train_edm.py writes it
        else:
            target["label_dropout"] = 0.0
    if target.get("label_dropout") and not num_class_labels:
        raise TrainingError(f"label_dropout {target['label_dropout']} needs class labels, but the new model is "
                            "unconditional; pass --label_dropout 0 or labelled data.")
    return config


# --- Copying the weights ---------------------------------------------------------------------------------------------


@dataclass
class TransferReport:
    """What [`transfer_weights`] did.

    Attributes:
        copied (`list[str]`): target tensors overwritten with the pretrained ones (same name and shape).
        shape_mismatched (`dict[str, tuple]`): name -> (pretrained shape, new shape); left at their initialisation.
        target_only (`list[str]`): tensors of the new model absent from the pretrained one; left initialised.
        source_only (`list[str]`): pretrained tensors the new model does not have; unused.
        copied_values (`int`), total_values (`int`): elements copied, and in the new model's state_dict.
    """

    copied: list[str] = field(default_factory=list)
    shape_mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    target_only: list[str] = field(default_factory=list)
    source_only: list[str] = field(default_factory=list)
    copied_values: int = 0
    total_values: int = 0

    def summary(self, max_names: int = 8) -> str:
        """A few lines for the log: counts, and the names (up to `max_names` per group) that were not copied."""
        total = len(self.copied) + len(self.shape_mismatched) + len(self.target_only)
        lines = [f"Transferred {len(self.copied)} of {total} tensors ({self.copied_values:,} of {self.total_values:,}"
                 " values) from the pretrained model."]
        groups = [
            ("kept their initialisation (other shape, pretrained -> new)",
             [f"{name} {list(a)} -> {list(b)}" for name, (a, b) in self.shape_mismatched.items()]),
            ("new (initialised)", self.target_only),
            ("pretrained tensors unused", self.source_only),
        ]
        for title, names in groups:
            if names:
                shown = ", ".join(names[:max_names]) + (f", ... ({len(names) - max_names} more)"
                                                        if len(names) > max_names else "")
                lines.append(f"  {len(names)} {title}: {shown}")
        return "\n".join(lines)

    __str__ = summary


def transfer_weights(
    source_state_dict: dict[str, torch.Tensor], target_model: torch.nn.Module, require_match: bool = True
) -> TransferReport:
    """Copies, in place, every tensor of `source_state_dict` whose name and shape match a tensor of the target's
    `state_dict()` (parameters and persistent buffers, e.g. NCSN++'s Fourier frequencies), converting dtype and
    device to the target's; everything else in the target keeps its values. EDM's `--transfer` (require_all=False).

    Args:
        source_state_dict: the pretrained tensors ([`PretrainedDenoiser.state_dict`]).
        target_model: the new model (before the EMA copy is made and before it is wrapped for training).
        require_match (`bool`, defaults to True): raise a [`TrainingError`] when not a single tensor matches.
    """
    report = TransferReport()
    with torch.no_grad():
        for name, target in target_model.state_dict().items():
            report.total_values += target.numel()
            source = source_state_dict.get(name)
            if source is None:
                report.target_only.append(name)
            elif source.shape != target.shape:
                report.shape_mismatched[name] = (tuple(source.shape), tuple(target.shape))
            else:
                target.copy_(source)
                report.copied.append(name)
                report.copied_values += target.numel()
        target_names = set(target_model.state_dict())
    report.source_only = [name for name in source_state_dict if name not in target_names]
    if require_match and not report.copied:
        raise TrainingError(f"No tensor of the pretrained model matches the new model by name and shape "
                            f"({len(source_state_dict)} pretrained, {len(target_names)} new); is it the same "
                            "architecture?")
    return report
