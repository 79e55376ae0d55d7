# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The sampler flags that `generate` and `fid calc --model` share, and loading the model they sample: the pipeline
folder's checks, the scheduler built from the saved config, `--preset` and the flags, guidance, and the fast paths.

Sampler settings are resolved in layers (`diffusers_edm.sampler_presets` defines the presets, shared with the
checkpoint converter):

* Scheduler: `--scheduler heun|euler|dpmpp-2m` (EDM's Heun sampler, diffusers' `EDMEulerScheduler`,
  `EDMDPMSolverMultistepScheduler`), else the class saved with the model. Its settings: the saved scheduler config,
  then `--preset` (the official README's settings for each dataset, with the paper's σ range 0.002–80, ρ = 7 and Heun
  solver), then the explicit flags. The churn flags and `--solver` belong to EDM's sampler.
* `--disc`, `--schedule` or `--scaling` switch to the paper's ablation sampler ([`EDMAblationScheduler`]), as they
  switch the official script to `ablation_sampler`; see [`build_scheduler`].
* Step count N: `--steps`, else the preset's, else `num_inference_steps` from the model's `sampler_settings.json`
  (written by the converter), else the pipeline's saved `num_inference_steps` (written by the sampler tuner), else 18
  (the official default).
* Guidance: `--guidance_scale`, `--guidance_interval` and `--guide` (an autoguidance guide, replacing one saved with
  the model), else what the pipeline was saved with (a converted or trained model may store its guide and weight).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import EDMInputError, one_line
from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..pipelines.fast_sampling import COMPILE_MODES, DTYPES, FastSampling, accelerate_pipeline, resolve_fast_settings
from ..pipelines.pipeline_edm import DEFAULT_NUM_INFERENCE_STEPS, EDMPipeline
from ..pipelines.saved_folders import (
    MODEL_HINT,
    check_model_folder,
    check_weights,
    load_pipeline_quietly,
    read_json_file,
)
from ..pipelines.scheduler_families import SCHEDULERS_BY_NAME
from ..sampler_presets import (
    EDM2_PRESETS,
    SAMPLER_PRESETS,
    SAMPLER_SETTINGS_FILE,
    EDM2Preset,
    get_any_preset,
    read_num_inference_steps,
)
from ..schedulers.scheduling_edm_ablation import DISCRETIZATIONS, SCALINGS, SCHEDULES, EDMAblationScheduler
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .common import finite_float, positive_int, sigma_interval

_SCHEDULE_FLAGS = ("sigma_min", "sigma_max", "rho")
"""Flags of the σ schedule, which every EDM-family scheduler has."""

_EDM_SAMPLER_FLAGS = ("s_churn", "s_tmin", "s_tmax", "s_noise", "solver")
"""Flags of EDM's own samplers (Algorithm 2's churn and the solver)."""

_ABLATION_FLAGS = ("discretization", "schedule", "scaling")
"""Flags that select the paper's ablation sampler ([`EDMAblationScheduler`]), as they select `ablation_sampler` in
the official script."""

_CHURN_KEYS = ("s_churn", "s_tmin", "s_tmax", "s_noise")

def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--class`, `--preset`, the scheduler, guidance and fast-path flags (shared by `generate` and `fid calc`)."""
    parser.add_argument("--class", dest="class_label", default=None, metavar="K",
                        help="class of every image, an index or a class name (conditional models; default: drawn per"
                        " seed)")
    parser.add_argument("--preset", choices=sorted([*SAMPLER_PRESETS, *EDM2_PRESETS]), default=None,
                        metavar="PRESET",
                        help="recommended sampler settings (steps, churn, σ range 0.002-80, ρ 7, Heun), one of"
                        f" {', '.join(SAMPLER_PRESETS)}: the official README's for the datasets, the paper's Table 5"
                        " (recalled) for baseline-*; or a preset of EDM2's generator (edm2-img512-xxl-autog-fid, ...:"
                        " 32 steps and its guidance weight; the model must hold its guide); explicit flags override"
                        " them")
    sampler = parser.add_argument_group("sampler (default: the model's saved scheduler and its config)")
    sampler.add_argument("--scheduler", choices=list(SCHEDULERS_BY_NAME), default=None,
                         help="heun: EDM's sampler (N steps = 2N-1 evaluations); euler, dpmpp-2m: diffusers'"
                         " EDMEulerScheduler and EDMDPMSolverMultistepScheduler (N evaluations; DPM-Solver++ 2M matches"
                         " Heun's quality at about half the evaluations on the digits)")
    sampler.add_argument("--steps", type=positive_int, default=None,
                         help="sampler steps N (default: the preset's, else num_inference_steps from the model's"
                         f" {SAMPLER_SETTINGS_FILE} written by the converter, else the pipeline's saved"
                         f" num_inference_steps, else {DEFAULT_NUM_INFERENCE_STEPS})")
    sampler.add_argument("--churn", "--S_churn", dest="s_churn", type=float, default=None,
                         help="S_churn, total stochasticity (0: deterministic; heun only)")
    sampler.add_argument("--s_tmin", "--S_min", dest="s_tmin", type=float, default=None,
                         help="S_tmin, smallest noise level that is churned")
    sampler.add_argument("--s_tmax", "--S_max", dest="s_tmax", type=float, default=None,
                         help="S_tmax, largest noise level that is churned ('inf' for no limit)")
    sampler.add_argument("--s_noise", "--S_noise", dest="s_noise", type=float, default=None,
                         help="S_noise, scale of the churn noise")
    sampler.add_argument("--sigma_min", type=float, default=None, help="smallest step noise level")
    sampler.add_argument("--sigma_max", type=float, default=None, help="largest step noise level")
    sampler.add_argument("--rho", type=float, default=None, help="exponent of the time-step schedule (Eq. 5)")
    sampler.add_argument("--solver", choices=["euler", "heun"], default=None, help="ODE solver of EDM's sampler")
    guidance = parser.add_argument_group("guidance (default: what the model was saved with, else none)")
    guidance.add_argument("--guidance_scale", type=finite_float, default=None, metavar="W",
                          help="guidance weight w > 0 (1: none): classifier-free guidance of a conditional model, or"
                          " autoguidance with the model's guide or --guide")
    guidance.add_argument("--guide", default=None, metavar="PATH",
                          help="guide network for autoguidance: a pipeline folder (its unet), a model folder or a Hub"
                          " id; replaces a guide saved with the model")
    guidance.add_argument("--guidance_interval", type=sigma_interval, default=None, metavar="LO,HI",
                          help="guide only at noise levels LO < σ <= HI (e.g. 0.28,5.42; HI may be inf)")
    ablation = parser.add_argument_group(
        "ablation sampler (Table 1, Fig. 2-4; any of these switches to EDMAblationScheduler, as in the official script)"
    )
    ablation.add_argument("--disc", dest="discretization", choices=DISCRETIZATIONS, default=None,
                          help="time step discretization {t_i} (default with the ablation sampler: edm)")
    ablation.add_argument("--schedule", choices=SCHEDULES, default=None,
                          help="noise schedule σ(t) (default with the ablation sampler: linear)")
    ablation.add_argument("--scaling", choices=SCALINGS, default=None,
                          help="signal scaling s(t) (default with the ablation sampler: none)")
    _add_fast_path_arguments(parser)


def _add_fast_path_arguments(parser: argparse.ArgumentParser) -> None:
    fast = parser.add_argument_group(
        "fast paths (default: TF32 and channels_last on CUDA, the exact eager float32 sampler elsewhere; see "
        "diffusers_edm.pipelines.fast_sampling)"
    )
    level = fast.add_mutually_exclusive_group()
    level.add_argument("--fast", action="store_true",
                       help="also torch.compile the networks, and run them as CUDA graphs on CUDA (images stay"
                       " equivalent; worth the compile time for long runs). Never reduced precision")
    level.add_argument("--exact", action="store_true",
                       help="the official numerics on every device: strict float32 (no TF32), NCHW, EDM's own"
                       " attention, eager (bit for bit the official sampler)")
    fast.add_argument("--dtype", choices=list(DTYPES), default=None,
                      help="network precision: fp32 (strict, TF32 off), tf32, bf16, fp16 (preconditioning stays"
                      " float32, sampler state float64); tf32/fp32 set global torch flags (default: unchanged)")
    fast.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None,
                      help="channels_last (NHWC) network weights (default: on on CUDA unless --exact)")
    fast.add_argument("--compile", choices=["none", *COMPILE_MODES], default=None,
                      help="torch.compile the networks with static shapes (default: 'default' with --fast, else none)")
    fast.add_argument("--cuda_graphs", action=argparse.BooleanOptionalAction, default=None,
                      help="run the networks as CUDA graphs (compile mode reduce-overhead; default: on with --fast"
                      " on CUDA); use one batch size")
    fast.add_argument("--compile_backend", default="inductor",
                      help="torch.compile backend (default: inductor; 'eager' traces without code generation)")


@dataclass
class SamplingSetup:
    """A pipeline ready to sample as the command line asks ([`load_sampling_pipeline`]).

    Attributes:
        pipe (`EDMPipeline`): the pipeline, on its device, with the resolved scheduler and no progress bar.
        num_inference_steps (`int`): sampler steps N.
        steps_source (`str`): where N came from.
        changed_settings (`dict`): the scheduler settings that differ from the model's saved config.
        class_label (`int`, *optional*): the `--class` index.
        guidance_scale (`float`): the guidance weight of every call (the pipeline's saved one unless given).
        guidance_interval (`tuple[float, float]`, *optional*): the guidance interval of every call.
        fast_sampling (`FastSampling`, *optional*): the fast paths applied; `None`: the exact path.
    """

    pipe: EDMPipeline
    num_inference_steps: int
    steps_source: str
    changed_settings: dict[str, Any]
    class_label: int | None = None
    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    fast_sampling: FastSampling | None = None

    def sample_kwargs(self) -> dict[str, Any]:
        """The pipeline-call arguments every batch shares."""
        return dict(class_labels=self.class_label, num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale, guidance_interval=self.guidance_interval)

    @property
    def evaluations_per_image(self) -> int:
        """Network evaluations per image: 2N − 1 for EDM's Heun solver, N otherwise (twice with guidance, inside its
        interval)."""
        scheduler = self.pipe.scheduler
        if isinstance(scheduler, (EDMHeunScheduler, EDMAblationScheduler)) and scheduler.config.solver == "heun":
            return 2 * self.num_inference_steps - 1
        return self.num_inference_steps

    def describe_guidance(self) -> str:
        """The guidance of the run in a few words."""
        if self.guidance_scale == 1:
            return "none"
        kind = "autoguidance" if self.pipe.guide_unet is not None else "classifier-free guidance"
        interval = "" if self.guidance_interval is None else f", interval {tuple(self.guidance_interval)}"
        return f"{kind}, w = {self.guidance_scale:g}{interval}"

    def describe_fast_path(self) -> str:
        """The fast-path settings in one line, "exact" without any."""
        return "Fast path: none (exact eager float32 sampler)" if self.fast_sampling is None else (
            self.fast_sampling.describe().rstrip("."))


def load_sampling_pipeline(args: argparse.Namespace, state: PartialState, device: torch.device) -> SamplingSetup:
    """
    Loads `args.model` (and `--guide`) and sets its sampler from `--preset`, the sampler flags and the model's saved
    settings (see the module docstring), checking `--class` and the guidance against the model.

    Raises:
        EDMInputError: a missing or incomplete model, invalid sampler or guidance settings, a bad
        `sampler_settings.json` or a `--class` the model cannot take.
    """
    check_model_argument(args.model, "--model")
    with state.main_process_first():  # the main process downloads a Hub model first; the others then read its cache
        pipe = load_pipeline(args.model)
        guide = None if args.guide is None else load_denoiser(args.guide, "--guide")
        needs_saved_steps = args.steps is None and args.preset is None
        settings_file = sampler_settings_file(args.model) if needs_saved_steps else None
    try:
        saved_steps = None if settings_file is None else read_num_inference_steps(settings_file)
        pipe.scheduler, overrides = build_scheduler(args, dict(pipe.scheduler.config), type(pipe.scheduler))
        if guide is not None:
            pipe.guide_unet = guide
    except (ValueError, TypeError) as error:
        raise EDMInputError(one_line(error)) from None
    class_label = resolve_class_label(args.class_label, pipe)
    edm2_preset = EDM2_PRESETS.get(args.preset) if args.preset is not None else None
    if edm2_preset is not None:
        check_edm2_preset(pipe, edm2_preset)
    guidance_scale = args.guidance_scale
    if guidance_scale is None:
        guidance_scale = edm2_preset.guidance if edm2_preset is not None else pipe.config.guidance_scale
    guidance_interval = args.guidance_interval or pipe.config.guidance_interval
    _check_guidance(pipe, guidance_scale, args)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    try:
        fast_sampling = apply_fast_paths(pipe, args, device)
    except ValueError as error:  # a fast path the device cannot run
        raise EDMInputError(one_line(error)) from None
    steps, steps_source = resolve_num_inference_steps(args, saved_steps, pipe.config.get("num_inference_steps"))
    return SamplingSetup(pipe, steps, steps_source, overrides, class_label, guidance_scale,
                         None if guidance_interval is None else tuple(guidance_interval), fast_sampling)


def _check_guidance(pipe: EDMPipeline, guidance_scale: float, args: argparse.Namespace) -> None:
    """Checks the run's guidance against the model before any image is made (the pipeline's own checks, in one line),
    and refuses a guide or interval that would go unused."""
    if guidance_scale == 1 and (args.guide is not None or args.guidance_interval is not None):
        flag = "--guide" if args.guide is not None else "--guidance_interval"
        raise EDMInputError(f"{flag} has no effect without guidance: pass --guidance_scale W with W != 1 (e.g. 1.5).")
    try:
        pipe.check_inputs(1, None, None, None, "latent", [], None, guidance_scale, args.guidance_interval)
    except (ValueError, TypeError) as error:
        raise EDMInputError(one_line(error)) from None


def check_edm2_preset(pipe: EDMPipeline, preset: EDM2Preset) -> None:
    """An `EDMInputError` unless the model can run the EDM2 generator preset: an EDM2 network, holding a guide when the
    preset guides."""
    if pipe.unet.config.backbone_type != "edm2_unet":
        raise EDMInputError(f"--preset {preset.name} is a preset of EDM2's generator but the model is not an EDM2"
                            f" network; use one of {', '.join(SAMPLER_PRESETS)}.")
    if preset.guide is not None and pipe.guide_unet is None:
        raise EDMInputError(f"--preset {preset.name} guides with {preset.guide}, but the model has no guide; convert it"
                            f" with --guide {preset.guide}, or pass --guide FOLDER (a converted guide).")


def resolve_class_label(class_label: str | None, pipe: EDMPipeline) -> int | None:
    """The `--class` value as a class index: an integer in [0, num_classes) or a class name of the pipeline's
    `id2label`."""
    if class_label is None:
        return None
    num_classes = pipe.unet.config.num_class_labels
    if not num_classes:
        raise EDMInputError(f"--class {class_label} was given but the model is unconditional (num_class_labels=0);"
                            " omit --class.")
    if class_label.lstrip("-").isdigit():
        index = int(class_label)
        if not 0 <= index < num_classes:
            raise EDMInputError(f"--class must lie in [0, {num_classes}) for this model, got {index}.")
        return index
    try:
        return pipe.get_label_ids(class_label)[0]
    except ValueError as error:
        raise EDMInputError(f"--class {class_label}: {error}") from None


def build_scheduler(
    args: argparse.Namespace, config: Mapping[str, Any], saved_class: type = EDMHeunScheduler
) -> tuple[Any, dict[str, Any]]:
    """
    The scheduler to sample with, and the settings that differ from the model's saved scheduler config.

    Without `--disc`, `--schedule` or `--scaling`: the `--scheduler` class (default: the saved one) built from the saved
    config with [`scheduler_overrides`]. With any of them (as the official script then switches to its ablation
    sampler): a new [`EDMAblationScheduler`] with those flags (defaults edm / linear / none), `--solver` (default heun),
    and `--sigma_min`, `--sigma_max`, `--rho` only when given (otherwise the discretization's own σ range, as the
    official script); the churn settings are layered as for the Heun scheduler (saved config, `--preset`, flags).

    Raises:
        ValueError: invalid settings, or settings the chosen scheduler does not have (e.g. `--churn` with dpmpp-2m).
    """
    if all(getattr(args, key) is None for key in _ABLATION_FLAGS):
        scheduler_class = SCHEDULERS_BY_NAME[args.scheduler] if args.scheduler is not None else saved_class
        is_edm_sampler = issubclass(scheduler_class, (EDMHeunScheduler, EDMAblationScheduler))
        overrides = scheduler_overrides(args, config, is_edm_sampler)
        changed = dict(overrides)
        if scheduler_class is not saved_class:
            changed = {"scheduler": scheduler_class.__name__, **changed}
        return scheduler_class.from_config(config, **overrides), changed
    if args.scheduler not in (None, "heun"):
        raise ValueError(f"--disc, --schedule and --scaling select EDM's ablation sampler; they cannot be combined with"
                         f" --scheduler {args.scheduler}.")
    overrides = scheduler_overrides(args, config, True)
    churn = {key: overrides.get(key, config.get(key)) for key in _CHURN_KEYS if key in overrides or key in config}
    explicit = {key: getattr(args, key) for key in (*_ABLATION_FLAGS, "solver", "sigma_min", "sigma_max", "rho")
                if getattr(args, key) is not None}
    changed = {"scheduler": EDMAblationScheduler.__name__, **explicit,
               **{key: value for key, value in overrides.items() if key in _CHURN_KEYS}}
    return EDMAblationScheduler(**churn, **explicit), changed


def scheduler_overrides(args: argparse.Namespace, config: Mapping[str, Any], edm_sampler: bool = True) -> dict:
    """
    The scheduler settings to change: the preset's (if `--preset` is given), then the explicit flags on top.

    Args:
        args (`argparse.Namespace`): parsed arguments with the flags of [`add_sampler_arguments`].
        config (`Mapping[str, Any]`): the model's saved scheduler config.
        edm_sampler (`bool`): whether the scheduler is one of EDM's (which have the churn settings and the solver).

    Returns:
        `dict[str, Any]`: the config values that differ from `config`. `--s_tmax inf` becomes `None` (the config's ∞).

    Raises:
        ValueError: a churn flag or `--solver` for a scheduler that is not EDM's, or a preset with churn for one.
    """
    settings: dict[str, Any] = {}
    if args.preset is not None:
        preset = get_any_preset(args.preset)
        if not edm_sampler and preset.s_churn:
            raise ValueError(f"--preset {args.preset} churns (S_churn {preset.s_churn:g}), which only EDM's sampler"
                             f" does; use --scheduler heun with it, or leave out the preset.")
        preset_settings = preset.scheduler_settings()
        settings.update({key: value for key, value in preset_settings.items()
                         if edm_sampler or key in _SCHEDULE_FLAGS})
    for key in (*_SCHEDULE_FLAGS, *_EDM_SAMPLER_FLAGS):
        value = getattr(args, key)
        if value is None:
            continue
        if not edm_sampler and key in _EDM_SAMPLER_FLAGS:
            flag = "--churn" if key == "s_churn" else f"--{key}"
            raise ValueError(f"{flag} is a setting of EDM's sampler; with --scheduler {args.scheduler} pass only"
                             " --sigma_min, --sigma_max and --rho (or use --scheduler heun).")
        settings[key] = value
    if settings.get("s_tmax") == math.inf:
        settings["s_tmax"] = None
    return {key: value for key, value in settings.items() if key not in config or config[key] != value}


def resolve_num_inference_steps(
    args: argparse.Namespace, saved_steps: int | None = None, pipeline_steps: int | None = None
) -> tuple[int, str]:
    """
    Sampler steps N and where they come from, in this order of precedence: `--steps`, the `--preset`'s,
    `saved_steps` (from the model's `sampler_settings.json`, see [`sampler_settings_file`]), `pipeline_steps` (the
    pipeline config's `num_inference_steps`, e.g. saved by the sampler tuner), 18 (the official default).
    """
    if args.steps is not None:
        return args.steps, "--steps"
    if args.preset is not None:
        return get_any_preset(args.preset).num_inference_steps, f"--preset {args.preset}"
    if saved_steps is not None:
        return saved_steps, f"the model's {SAMPLER_SETTINGS_FILE}"
    if pipeline_steps is not None:
        return pipeline_steps, "the pipeline's saved num_inference_steps"
    return DEFAULT_NUM_INFERENCE_STEPS, "the default"


def sampler_settings_file(model: str) -> Path | None:
    """
    The `sampler_settings.json` the checkpoint converter stored with a model (it holds the recommended
    `num_inference_steps`; read it with `diffusers_edm.sampler_presets.read_num_inference_steps`).

    Args:
        model (`str`): the `--model` value, a pipeline folder or a Hub id (whose file is downloaded).

    Returns:
        `Path` or `None`: the file; `None` when the model has none (or, for a Hub model, when it cannot be fetched).
    """
    if os.path.isdir(model):
        path = Path(model) / SAMPLER_SETTINGS_FILE
        return path if path.is_file() else None
    try:
        return Path(hf_hub_download(model, SAMPLER_SETTINGS_FILE))
    except EntryNotFoundError:  # not in the repository, or not cached while offline
        return None


def apply_fast_paths(pipe: EDMPipeline, args: argparse.Namespace, device: torch.device) -> FastSampling | None:
    """
    Applies the fast-path flags of [`add_sampler_arguments`] (`--fast`, `--dtype`, `--channels_last`, `--compile`,
    `--cuda_graphs`, `--compile_backend`) to `pipe` with [`accelerate_pipeline`]; `None` when none is on (the exact
    path).

    Raises:
        ValueError: a setting the device cannot run (e.g. `--cuda_graphs` off CUDA).
    """
    settings = resolve_fast_settings(
        getattr(args, "fast", False), device, getattr(args, "dtype", None), getattr(args, "channels_last", None),
        getattr(args, "compile", None), getattr(args, "cuda_graphs", None), exact=getattr(args, "exact", False),
    )
    if not any(settings.values()):
        return None
    return accelerate_pipeline(pipe, **settings, compile_backend=getattr(args, "compile_backend", "inductor"))


# --- models given on the command line --------------------------------------------------------------------------


def check_model_argument(model: str, flag: str) -> None:
    """Checks a local folder given as `flag` with [`check_model_folder`]; an `EDMInputError` when `model` is neither a
    folder nor a Hugging Face Hub id."""
    if os.path.isdir(model):
        check_model_folder(model)
        return
    if os.path.exists(model):
        raise EDMInputError(f"{flag} {model} is a file, not a pipeline folder. {MODEL_HINT}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise EDMInputError(f"{flag} {model} does not exist (and is not a Hugging Face Hub id). {MODEL_HINT}") from None


def load_pipeline(model: str) -> EDMPipeline:
    """The pipeline of `--model`, loaded without diffusers' progress bar (the tool's output is its own)."""
    try:
        pipe = load_pipeline_quietly(model)
    except (OSError, ValueError, TypeError) as error:
        raise EDMInputError(f"Could not load --model {model}: {one_line(error)}") from None
    if type(pipe) is not EDMPipeline:
        raise EDMInputError(f"--model {model} is an {type(pipe).__name__}: the command-line tools sample class-"
                            "conditional and unconditional models; sample it from Python with its prompts.")
    return pipe


def load_denoiser(path: str, flag: str) -> EDMPreconditionedUNet2DModel:
    """The denoiser of a pipeline folder (its `unet`), of a model folder, or of a Hub pipeline (its `unet`), checked
    first; one line naming `flag` when it cannot be loaded."""
    local = Path(path)
    subfolder = None
    if local.is_dir():
        if (local / EDMPipeline.config_name).is_file():
            check_model_folder(local)
            subfolder = "unet"
        else:
            read_json_file(local, EDMPreconditionedUNet2DModel.config_name, MODEL_HINT)
            check_weights(local, MODEL_HINT)
    else:
        check_model_argument(path, flag)
        subfolder = "unet"
    try:
        return EDMPreconditionedUNet2DModel.from_pretrained(path, subfolder=subfolder).eval()
    except (OSError, ValueError, TypeError) as error:
        raise EDMInputError(f"Could not load {flag} {path}: {one_line(error)}") from None
