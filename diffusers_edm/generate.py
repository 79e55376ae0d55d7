# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Generates PNG images with a saved `EDMPipeline`: the counterpart of EDM's `generate.py` (Karras et al. 2022).

Usage:

    python -m diffusers_edm.generate --model ./edm-cifar10-32x32-cond-vp --seeds 0-49999 --outdir out --subdirs \\
        --preset cifar10
    accelerate launch --num_processes 8 -m diffusers_edm.generate --model ... --seeds 0-49999 --outdir out
    accelerate launch diffusers_edm/generate.py --model ...   # the same, with the script path

Each image is made by `EDMPipeline(seeds=[...])`, which draws its random numbers from a generator of its own seeded
with the image's seed, in the order of the official script (initial noise, class index, one normal per step). An
image therefore depends only on its seed and the sampler settings, not on the batch or the process that made it,
and the same seeds give the official script's images.

Seeds, batches and processes (as the official script):

* `--seeds` is a comma-separated list of non-negative integers and inclusive ranges: "0-63", "1,2,5-10"; at most
  `MAX_SEEDS` seeds per run.
* With W processes and `--batch B`, the seeds (in the given order) are cut into K = ceil(len(seeds) / (B·W))·W
  consecutive chunks of near-equal size, as `torch.tensor_split(seeds, K)` does: with n seeds, the first n mod K
  chunks hold ⌊n/K⌋ + 1 seeds and the others ⌊n/K⌋. Every chunk holds at most B seeds.
* Process r (0 … W−1) generates chunks r, r + W, r + 2W, …, one batch each; empty chunks (fewer seeds than K) are
  skipped. E.g. 10 seeds, B = 2, W = 2: K = 6 chunks [0,1] [2,3] [4,5] [6,7] [8] [9]; process 0 makes [0,1] [4,5]
  [8] and process 1 makes [2,3] [6,7] [9].

Processes are started by `accelerate launch` (or `torchrun`); rank, world size and device come from
`accelerate.PartialState`, which also works in a plain single process.

Sampler settings are resolved in layers (`diffusers_edm.sampler_presets` defines the presets, shared with the
checkpoint converter):

* Scheduler settings: the scheduler config saved with the model, then `--preset` (the official README's settings for
  each dataset, with the paper's σ range 0.002–80, ρ = 7 and Heun solver), then the explicit flags.
* `--disc`, `--schedule` or `--scaling` switch to the paper's ablation sampler ([`EDMAblationScheduler`]), as they
  switch the official script to `ablation_sampler`; see [`build_scheduler`].
* Step count N: `--steps`, else the preset's, else `num_inference_steps` from the model's `sampler_settings.json`
  (written by `diffusers_edm.convert_edm_checkpoint`), else 18 (the official default).

Fast paths (the same flags in `python -m diffusers_edm.fid calc --model`; see `diffusers_edm.acceleration`): by
default, on CUDA, TF32, channels_last weights and SDPA attention (eager; images equivalent, last bits differ); on
other devices the exact eager float32 sampler, bit for bit the official one. `--fast` adds `torch.compile`, and CUDA
graphs on CUDA. `--exact` gives the official numerics on every device. `--dtype bf16|fp16` (reduced-precision
networks; the preconditioning stays in float32 and the sampler state in float64) is never implied. `--dtype`, `--channels_last`, `--compile`, `--cuda_graphs`
override single settings. Compiled graphs have static shapes: every batch size compiles (and with CUDA graphs
records) its own, so runs whose seed count is a multiple of `--batch` x processes compile once; the first batch's
time, which includes compilation, is reported. Seeds stay per image: an image depends on its seed and the settings,
not on its batch.

Output: `{seed:06d}.png` in `--outdir`, or with `--subdirs` in the subfolder `{seed - seed % 1000:06d}`; pixels are
clip(127.5·x + 128, 0, 255) truncated to uint8 (the pipeline's "pil" output), mode "L" for one channel, else "RGB".

Mistakes (bad flags, an incomplete model folder, bad sampler settings) print one line, `<prog>: error: <what is wrong
and how to fix it>`, and exit with status 2; unexpected errors keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from accelerate import PartialState
from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

# Absolute imports: the module also runs as a script (`accelerate launch diffusers_edm/generate.py`).
from diffusers_edm.acceleration import (
    COMPILE_MODES,
    DTYPES,
    FastSampling,
    accelerate_pipeline,
    measure_compilation,
    resolve_fast_settings,
)
from diffusers_edm.models.unet_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.pipelines.pipeline_edm import EDMPipeline
from diffusers_edm.sampler_presets import SAMPLER_PRESETS, SAMPLER_SETTINGS_FILE, read_num_inference_steps
from diffusers_edm.schedulers.scheduling_edm_ablation import (
    DISCRETIZATIONS,
    SCALINGS,
    SCHEDULES,
    EDMAblationScheduler,
)
from diffusers_edm.schedulers.scheduling_edm_heun import EDMHeunScheduler

DEFAULT_STEPS = 18
"""Sampler steps N without `--steps`, `--preset` or a `sampler_settings.json` next to the model (the official
default)."""

DEFAULT_BATCH = 64
"""Maximum batch size per process without `--batch` (the official default)."""

MAX_SEEDS = 10_000_000
"""Most seeds one seed list may hold: [`parse_seeds`] refuses longer lists before expanding them."""

_SCHEDULER_FLAGS = ("s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho", "solver")
"""Flags that override the scheduler; each is stored under its `EDMHeunScheduler` config key."""

_ABLATION_FLAGS = ("discretization", "schedule", "scaling")
"""Flags that select the paper's ablation sampler ([`EDMAblationScheduler`]), as they select `ablation_sampler` in
the official script."""

_CHURN_KEYS = ("s_churn", "s_tmin", "s_tmax", "s_noise")

_SEED_ITEM = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)

_MODEL_HINT = ("Pass a folder written by EDMPipeline.save_pretrained, train_edm.py or python -m"
               " diffusers_edm.convert_edm_checkpoint (which converts EDM's .pkl files), or a Hub id.")


@dataclass
class GenerationSummary:
    """What [`main`] did.

    Attributes:
        num_images (`int`): images written by all processes together.
        num_processes (`int`): number of processes that shared the seeds.
        outdir (`str`): the output folder.
        num_inference_steps (`int`): sampler steps N.
        steps_source (`str`): where N came from (`--steps`, the preset, `sampler_settings.json` or the default).
        scheduler_config (`dict`): the config of the scheduler that was used.
        scheduler_class (`str`): its class name.
        changed_settings (`dict`): the settings that differ from the model's saved scheduler config.
        seconds (`float`): wall-clock time of the generation on this process.
        fast_path (`str`): the fast-path settings (see [`FastSampling.describe`]); "exact" for the eager float32 path.
        first_batch_seconds (`float`): wall-clock time of this process's first batch (includes any compilation).
        compile_seconds (`float`): time dynamo and its backend spent compiling on this process.
    """

    num_images: int
    num_processes: int
    outdir: str
    num_inference_steps: int
    steps_source: str
    scheduler_config: dict[str, Any]
    scheduler_class: str = EDMHeunScheduler.__name__
    changed_settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    fast_path: str = "exact"
    first_batch_seconds: float = 0.0
    compile_seconds: float = 0.0

    def describe(self) -> str:
        """A short human-readable report."""
        config = self.scheduler_config
        evaluations = 2 * self.num_inference_steps - 1 if config["solver"] == "heun" else self.num_inference_steps
        s_tmax = "inf" if config["s_tmax"] is None else config["s_tmax"]
        changed = ", ".join(f"{key}={value}" for key, value in self.changed_settings.items()) or "none"
        sigma_min, sigma_max = (
            ("the discretization's" if config[key] is None else config[key]) for key in ("sigma_min", "sigma_max")
        )
        ablation = "".join(f" {key}={config[key]}," for key in _ABLATION_FLAGS if key in config)
        return (
            f"Wrote {self.num_images} images to {self.outdir} with {self.num_processes} process(es) in"
            f" {self.seconds:.1f} s.\n"
            f"Sampler: {self.scheduler_class}, {self.num_inference_steps} steps (from {self.steps_source};"
            f" {evaluations} network evaluations per image),{ablation}"
            f" solver={config['solver']}, sigma_min={sigma_min}, sigma_max={sigma_max},"
            f" rho={config['rho']}, S_churn={config['s_churn']}, S_tmin={config['s_tmin']}, S_tmax={s_tmax},"
            f" S_noise={config['s_noise']}.\n"
            f"Changed from the model's saved scheduler config: {changed}.\n"
            f"{self.fast_path}; first batch {self.first_batch_seconds:.1f} s (compiling {self.compile_seconds:.1f} s)."
        )


def parse_seeds(text: str) -> list[int]:
    """
    Parses a seed list as the official script does: comma-separated non-negative integers and inclusive ranges.

    Args:
        text (`str`): e.g. "0-63" or "1,2,5-10".

    Returns:
        `list[int]`: the seeds in the given order, e.g. [1, 2, 5, 6, 7, 8, 9, 10].

    Raises:
        `ValueError`: for an empty list, an item that is not an integer or range, a descending range, more than
        `MAX_SEEDS` seeds, or a seed given twice (its image would be generated and written twice).
    """
    ranges: list[range] = []
    for item in text.split(","):
        match = _SEED_ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(
                f"Invalid seed {item.strip()!r} in --seeds {text!r}: use non-negative integers and inclusive ranges"
                " separated by commas, e.g. '0-63' or '1,2,5-10'."
            )
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if last < first:
            raise ValueError(f"Seed range {item.strip()!r} is descending; write it as '{last}-{first}'.")
        ranges.append(range(first, last + 1))
    count = sum(map(len, ranges))
    if count > MAX_SEEDS:
        raise ValueError(
            f"The seed list {text!r} holds {count:,} seeds, more than the limit of {MAX_SEEDS:,} per run; split the"
            " seeds over several runs."
        )
    seeds = [seed for seed_range in ranges for seed in seed_range]
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"Seed {seed} appears more than once in --seeds {text!r}; list every seed once.")
        seen.add(seed)
    return seeds


def split_seeds(seeds: Sequence[int], batch_size: int, world_size: int) -> list[list[int]]:
    """
    Cuts the seeds into the chunks of the official script (see the module docstring).

    Args:
        seeds (`Sequence[int]`): all seeds, in order.
        batch_size (`int`): maximum number of images per batch (`--batch`).
        world_size (`int`): number of processes.

    Returns:
        `list[list[int]]`: K = ceil(len(seeds) / (batch_size · world_size)) · world_size consecutive chunks, the
        first len(seeds) mod K of them one seed longer than the others (`torch.tensor_split` order); some may be
        empty. Chunk k belongs to process k mod world_size.
    """
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size} and {world_size}.")
    num_chunks = math.ceil(len(seeds) / (batch_size * world_size)) * world_size
    if num_chunks == 0:
        return []
    base, num_longer = divmod(len(seeds), num_chunks)
    chunks, start = [], 0
    for index in range(num_chunks):
        stop = start + base + (1 if index < num_longer else 0)
        chunks.append(list(seeds[start:stop]))
        start = stop
    return chunks


def rank_batches(seeds: Sequence[int], batch_size: int, world_size: int, rank: int) -> list[list[int]]:
    """
    The batches process `rank` generates: chunks rank, rank + world_size, … of [`split_seeds`], without the empty
    ones.

    Args:
        seeds (`Sequence[int]`): all seeds, in order.
        batch_size (`int`): maximum number of images per batch.
        world_size (`int`): number of processes.
        rank (`int`): this process's index, 0 … world_size − 1.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}.")
    return [chunk for chunk in split_seeds(seeds, batch_size, world_size)[rank::world_size] if chunk]


def image_path(outdir: str | os.PathLike, seed: int, subdirs: bool = False) -> Path:
    """`outdir/{seed:06d}.png`, or with `subdirs` `outdir/{seed - seed % 1000:06d}/{seed:06d}.png` (official names)."""
    folder = Path(outdir)
    if subdirs:
        folder = folder / f"{seed - seed % 1000:06d}"
    return folder / f"{seed:06d}.png"


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


def resolve_num_inference_steps(args: argparse.Namespace, saved_steps: int | None = None) -> tuple[int, str]:
    """
    Sampler steps N and where they come from, in this order of precedence: `--steps`, the `--preset`'s,
    `saved_steps` (from the model's `sampler_settings.json`, see [`sampler_settings_file`]), 18 (the official
    default).

    Args:
        args (`argparse.Namespace`): parsed arguments of [`build_parser`].
        saved_steps (`int`, *optional*): the step count stored with the model.

    Returns:
        `tuple[int, str]`: N and a description of its source.
    """
    if args.steps is not None:
        return args.steps, "--steps"
    if args.preset is not None:
        return SAMPLER_PRESETS[args.preset].num_inference_steps, f"--preset {args.preset}"
    if saved_steps is not None:
        return saved_steps, f"the model's {SAMPLER_SETTINGS_FILE}"
    return DEFAULT_STEPS, "the default"


def scheduler_overrides(args: argparse.Namespace, config: Mapping[str, Any]) -> dict[str, Any]:
    """
    The scheduler settings to change: the preset's (if `--preset` is given), then the explicit flags on top.

    Args:
        args (`argparse.Namespace`): parsed arguments of [`build_parser`].
        config (`Mapping[str, Any]`): the model's saved scheduler config.

    Returns:
        `dict[str, Any]`: the `EDMHeunScheduler` config values that differ from `config`, to pass as
        `EDMHeunScheduler.from_config(config, **overrides)`. `--s_tmax inf` becomes `None` (the config's ∞).
    """
    settings: dict[str, Any] = {}
    if args.preset is not None:
        settings.update(SAMPLER_PRESETS[args.preset].scheduler_settings())
    for key in _SCHEDULER_FLAGS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if settings.get("s_tmax") == math.inf:
        settings["s_tmax"] = None
    return {key: value for key, value in settings.items() if key not in config or config[key] != value}


def build_scheduler(
    args: argparse.Namespace, config: Mapping[str, Any], saved_class: type = EDMHeunScheduler
) -> tuple[EDMHeunScheduler | EDMAblationScheduler, dict[str, Any]]:
    """
    The scheduler to sample with, and the settings that differ from the model's saved scheduler config.

    Without `--disc`, `--schedule` or `--scaling`: the saved scheduler (an [`EDMAblationScheduler`] stays one, anything
    else becomes an [`EDMHeunScheduler`]) with [`scheduler_overrides`]. With any of them (as the official script then
    switches to its ablation sampler): a new [`EDMAblationScheduler`] with those flags (defaults edm / linear / none),
    `--solver` (default heun), and `--sigma_min`, `--sigma_max`, `--rho` only when given (otherwise the
    discretization's own σ range, as the official script); the churn settings are layered as for the Heun scheduler
    (saved config, `--preset`, flags).

    Args:
        args (`argparse.Namespace`): parsed arguments of [`build_parser`].
        config (`Mapping[str, Any]`): the model's saved scheduler config.
        saved_class (`type`, defaults to [`EDMHeunScheduler`]): the class of the model's saved scheduler.

    Raises:
        ValueError: invalid settings (the schedulers' own messages).
    """
    overrides = scheduler_overrides(args, config)
    if all(getattr(args, key) is None for key in _ABLATION_FLAGS):
        scheduler_class = EDMAblationScheduler if issubclass(saved_class, EDMAblationScheduler) else EDMHeunScheduler
        return scheduler_class.from_config(config, **overrides), overrides
    churn = {key: overrides.get(key, config.get(key)) for key in _CHURN_KEYS if key in overrides or key in config}
    explicit = {key: getattr(args, key) for key in (*_ABLATION_FLAGS, "solver", "sigma_min", "sigma_max", "rho")
                if getattr(args, key) is not None}
    changed = {"scheduler": EDMAblationScheduler.__name__, **explicit,
               **{key: value for key, value in overrides.items() if key in _CHURN_KEYS}}
    return EDMAblationScheduler(**churn, **explicit), changed


def check_class_label(class_label: int | None, num_class_labels: int) -> None:
    """Raises a `ValueError` when `--class` is given for an unconditional model or lies outside [0, num_classes)."""
    if class_label is None:
        return
    if not num_class_labels:
        raise ValueError(
            f"--class {class_label} was given but the model is unconditional (num_class_labels=0); omit --class."
        )
    if not 0 <= class_label < num_class_labels:
        raise ValueError(f"--class must lie in [0, {num_class_labels}) for this model, got {class_label}.")


def seeds_argument(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def device_argument(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from error
    return text


class OneLineErrorParser(argparse.ArgumentParser):
    """An `ArgumentParser` that reports a bad argument in one line (no usage text; `--help` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line. Flag names follow the official script where they exist (`--S_churn` etc. are aliases)."""
    parser = OneLineErrorParser(
        prog="python -m diffusers_edm.generate",
        description="Generate images with a saved EDMPipeline, seed for seed as EDM's generate.py. Launch with"
        " `accelerate launch -m diffusers_edm.generate ...` to split the seeds over processes.",
    )
    parser.add_argument("--model", "--network", required=True,
                        help="EDMPipeline folder or Hugging Face Hub id")
    parser.add_argument("--outdir", required=True, help="where to save the images")
    parser.add_argument("--seeds", type=seeds_argument, default=parse_seeds("0-63"),
                        help="seeds, e.g. '0-63' or '1,2,5-10' (default: 0-63)")
    parser.add_argument("--subdirs", action="store_true", help="one subfolder per 1000 seeds")
    parser.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH,
                        help=f"maximum batch size per process (default: {DEFAULT_BATCH})")
    add_sampler_arguments(parser)
    parser.add_argument("--device", type=device_argument, default=None,
                        help="torch device (default: the process's accelerator, else the CPU); the seeds' generators"
                        " live on it, so CPU and CUDA give different images")
    return parser


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--class`, `--preset` and the sampler flags (shared with `python -m diffusers_edm.fid calc --model`)."""
    parser.add_argument("--class", dest="class_label", type=int, default=None, metavar="K",
                        help="class of every image (conditional models; default: drawn per seed)")
    parser.add_argument("--preset", choices=sorted(SAMPLER_PRESETS), default=None, metavar="PRESET",
                        help="recommended sampler settings (steps, churn, σ range 0.002-80, ρ 7, Heun), one of"
                        f" {', '.join(SAMPLER_PRESETS)}: the official README's for the datasets, the paper's Table 5"
                        " (recalled) for baseline-*; explicit flags override them")
    sampler = parser.add_argument_group("sampler (default: the model's saved scheduler config)")
    sampler.add_argument("--steps", type=positive_int, default=None,
                         help="sampler steps N (default: the preset's, else num_inference_steps from the model's"
                         f" {SAMPLER_SETTINGS_FILE} written by the converter, else {DEFAULT_STEPS})")
    sampler.add_argument("--churn", "--S_churn", dest="s_churn", type=float, default=None,
                         help="S_churn, total stochasticity (0: deterministic)")
    sampler.add_argument("--s_tmin", "--S_min", dest="s_tmin", type=float, default=None,
                         help="S_tmin, smallest noise level that is churned")
    sampler.add_argument("--s_tmax", "--S_max", dest="s_tmax", type=float, default=None,
                         help="S_tmax, largest noise level that is churned ('inf' for no limit)")
    sampler.add_argument("--s_noise", "--S_noise", dest="s_noise", type=float, default=None,
                         help="S_noise, scale of the churn noise")
    sampler.add_argument("--sigma_min", type=float, default=None, help="smallest step noise level")
    sampler.add_argument("--sigma_max", type=float, default=None, help="largest step noise level")
    sampler.add_argument("--rho", type=float, default=None, help="exponent of the time-step schedule (Eq. 5)")
    sampler.add_argument("--solver", choices=["euler", "heun"], default=None, help="ODE solver")
    ablation = parser.add_argument_group(
        "ablation sampler (Table 1, Fig. 2-4; any of these switches to EDMAblationScheduler, as in the official script)"
    )
    ablation.add_argument("--disc", dest="discretization", choices=DISCRETIZATIONS, default=None,
                          help="time step discretization {t_i} (default with the ablation sampler: edm)")
    ablation.add_argument("--schedule", choices=SCHEDULES, default=None,
                          help="noise schedule σ(t) (default with the ablation sampler: linear)")
    ablation.add_argument("--scaling", choices=SCALINGS, default=None,
                          help="signal scaling s(t) (default with the ablation sampler: none)")
    fast = parser.add_argument_group(
        "fast paths (default: TF32 and channels_last on CUDA, the exact eager float32 sampler elsewhere; see "
        "diffusers_edm.acceleration)"
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
    """

    pipe: EDMPipeline
    num_inference_steps: int
    steps_source: str
    changed_settings: dict[str, Any]
    fast_sampling: FastSampling | None = None
    """The fast paths applied ([`apply_fast_paths`]); `None`: the exact path."""

    def describe_fast_path(self) -> str:
        """The fast-path settings in one line, "exact" without any."""
        return "Fast path: none (exact eager float32 sampler)" if self.fast_sampling is None else (
            self.fast_sampling.describe().rstrip("."))


def check_model_folder(folder: str | os.PathLike) -> None:
    """
    Checks that a local pipeline folder is complete before diffusers loads it: `model_index.json`, the configs of
    the unet and the scheduler, and the unet's weights (a `.safetensors` file must be whole).

    Raises:
        `ValueError`: naming the folder and the file that is missing, unreadable or truncated.
    """
    root = Path(folder)
    if not (root / EDMPipeline.config_name).is_file():
        raise ValueError(f"{root} is not a pipeline folder: it has no {EDMPipeline.config_name}. {_MODEL_HINT}")
    refetch = "Copy or download the whole model folder again, or re-save it with EDMPipeline.save_pretrained."
    index = _read_json_file(root, EDMPipeline.config_name, refetch)
    for component, config_name in (("unet", EDMPreconditionedUNet2DModel.config_name),
                                   ("scheduler", EDMHeunScheduler.config_name)):
        if component not in index:
            raise ValueError(f"{root / EDMPipeline.config_name} lists no {component!r}: {root} is not an"
                             f" EDMPipeline folder. {refetch}")
        _read_json_file(root, f"{component}/{config_name}", refetch)
    safetensors_file = root / "unet" / SAFETENSORS_WEIGHTS_NAME
    if safetensors_file.is_file():
        try:
            with safe_open(safetensors_file, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ValueError(f"Model folder {root}: unet/{SAFETENSORS_WEIGHTS_NAME} is truncated or corrupt"
                             f" ({error}). {refetch}") from error
    elif not any((root / "unet" / name).is_file()
                 for name in (WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME)):
        raise ValueError(f"Model folder {root} is incomplete: the unet's weights (unet/{SAFETENSORS_WEIGHTS_NAME})"
                         f" are missing. {refetch}")


def _read_json_file(folder: Path, name: str, fix: str) -> dict[str, Any]:
    """The JSON object in `folder/name`; a `ValueError` naming the folder and file when it is missing or garbled."""
    path = folder / name
    if not path.is_file():
        raise ValueError(f"Model folder {folder} is incomplete: {name} is missing. {fix}")
    try:
        content = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, or not JSON
        raise ValueError(f"Model folder {folder}: {name} is not valid JSON ({error}). {fix}") from error
    if not isinstance(content, dict):
        raise ValueError(f"Model folder {folder}: {name} holds a {type(content).__name__}, not a JSON object. {fix}")
    return content


def _check_model_argument(model: str) -> None:
    """Checks a local `--model` folder with [`check_model_folder`]; a `ValueError` when `model` is neither a folder
    nor a Hugging Face Hub id."""
    if os.path.isdir(model):
        check_model_folder(model)
        return
    if os.path.exists(model):
        raise ValueError(f"--model {model} is a file, not a pipeline folder. {_MODEL_HINT}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(f"--model {model} does not exist (and is not a Hugging Face Hub id). {_MODEL_HINT}") from None


def load_sampling_pipeline(args: argparse.Namespace, state: PartialState, device: torch.device) -> SamplingSetup:
    """
    Loads `args.model` and sets its sampler from `--preset`, the sampler flags and the model's saved settings (see
    the module docstring), checking `--class` against the model.

    Args:
        args (`argparse.Namespace`): parsed arguments with the flags of [`add_sampler_arguments`] and `--model`.
        state (`accelerate.PartialState`): this process (the main process downloads a Hub model first).
        device (`torch.device`): where to sample.

    Raises:
        ValueError: a missing or incomplete model (see [`check_model_folder`]), invalid sampler settings, a bad
        `sampler_settings.json` or a `--class` the model cannot take.
    """
    _check_model_argument(args.model)
    with state.main_process_first():  # the main process downloads a Hub model first; the others then read its cache
        try:
            pipe = EDMPipeline.from_pretrained(args.model)
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not load --model {args.model}: {_one_line(error)}") from error
        needs_saved_steps = args.steps is None and args.preset is None
        settings_file = sampler_settings_file(args.model) if needs_saved_steps else None
    saved_steps = None if settings_file is None else read_num_inference_steps(settings_file)
    pipe.scheduler, overrides = build_scheduler(args, dict(pipe.scheduler.config), type(pipe.scheduler))
    check_class_label(args.class_label, pipe.unet.config.num_class_labels)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    fast_sampling = apply_fast_paths(pipe, args, device)
    steps, steps_source = resolve_num_inference_steps(args, saved_steps)
    return SamplingSetup(pipe, steps, steps_source, overrides, fast_sampling)


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


def process_state(device: str | None = None) -> PartialState:
    """
    Rank, world size and device of this process (`accelerate launch` or `torchrun` set them; a plain run is process
    0 of 1).

    `accelerate.PartialState` only joins a CPU process group when told the processes run on the CPU, so it is told
    when `device` is a CPU device, when `accelerate launch --cpu` ran this, or when there is no accelerator.

    Raises:
        `RuntimeError`: when the launcher started several processes but they did not form one group (each would
        generate every seed).
    """
    if device is not None:
        use_cpu = torch.device(device).type == "cpu"
    else:
        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not _has_accelerator()
    state = PartialState(cpu=use_cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise RuntimeError(
            f"The launcher started {launched} processes (WORLD_SIZE) but accelerate set up {state.num_processes};"
            " each would generate every seed. Launch with `accelerate launch` or `torchrun` and a --device matching"
            " the processes' devices."
        )
    return state


def _one_line(error: BaseException) -> str:
    """The message of `error` on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):  # torch >= 2.6
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def save_images(images: Sequence[Any], seeds: Sequence[int], outdir: str | os.PathLike, subdirs: bool) -> None:
    """Saves `images[i]` (PIL images) as the PNG of `seeds[i]` (see [`image_path`])."""
    for image, seed in zip(images, seeds):
        path = image_path(outdir, seed, subdirs)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def main(argv: Sequence[str] | None = None) -> GenerationSummary:
    """
    Command line entry point (see the module docstring). A mistake in the arguments or the model prints one line and
    exits with status 2.

    Args:
        argv (`Sequence[str]`, *optional*): the arguments; `None` reads `sys.argv`.

    Returns:
        [`GenerationSummary`]: what was generated (the main process also prints it).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    state = process_state(args.device)
    device = torch.device(args.device) if args.device is not None else state.device

    try:
        setup = load_sampling_pipeline(args, state, device)
    except ValueError as error:
        parser.error(_one_line(error))
    pipe, steps = setup.pipe, setup.num_inference_steps

    batches = rank_batches(args.seeds, args.batch, state.num_processes, state.process_index)
    start = time.perf_counter()
    first_batch_seconds = 0.0
    with measure_compilation() as compilation, tqdm(
        total=sum(map(len, batches)), unit="img", disable=not state.is_main_process,
        desc=f"Generating (process 0 of {state.num_processes})",
    ) as progress:
        for index, batch_seeds in enumerate(batches):
            images = pipe(seeds=batch_seeds, class_labels=args.class_label, num_inference_steps=steps,
                          output_type="pil").images
            save_images(images, batch_seeds, args.outdir, args.subdirs)
            progress.update(len(batch_seeds))
            if index == 0:  # "pil" images are on the host: the batch has finished
                first_batch_seconds = time.perf_counter() - start
    state.wait_for_everyone()

    summary = GenerationSummary(
        num_images=len(args.seeds),
        num_processes=state.num_processes,
        outdir=str(args.outdir),
        num_inference_steps=steps,
        steps_source=setup.steps_source,
        scheduler_config=dict(pipe.scheduler.config),
        scheduler_class=type(pipe.scheduler).__name__,
        changed_settings=setup.changed_settings,
        seconds=time.perf_counter() - start,
        fast_path=setup.describe_fast_path(),
        first_batch_seconds=first_batch_seconds,
        compile_seconds=compilation.seconds,
    )
    if state.is_main_process:
        print(summary.describe())
    return summary


if __name__ == "__main__":
    main()
