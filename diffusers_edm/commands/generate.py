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

Sampler settings (the scheduler, its settings, the step count and guidance) are resolved in layers: what the model
was saved with, then `--preset`, then the explicit flags; see `diffusers_edm.commands.sampling`.

Fast paths (the same flags in `python -m diffusers_edm.fid calc --model`; see
`diffusers_edm.pipelines.fast_sampling`): by default, on CUDA, TF32, channels_last weights and SDPA attention (eager;
images equivalent, last bits differ); on other devices the exact eager float32 sampler, bit for bit the official one.
`--fast` adds `torch.compile`, and CUDA graphs on CUDA. `--exact` gives the official numerics on every device.
`--dtype bf16|fp16` (reduced-precision networks; the preconditioning stays in float32 and the sampler state in
float64) is never implied. `--dtype`, `--channels_last`, `--compile`, `--cuda_graphs` override single settings.
Compiled graphs have static shapes: every batch size compiles (and with CUDA graphs records) its own, so runs whose
seed count is a multiple of `--batch` x processes compile once; the first batch's time, which includes compilation, is
reported. Seeds stay per image: an image depends on its seed and the settings, not on its batch.

Output: `{seed:06d}.png` in `--outdir`, or with `--subdirs` in the subfolder `{seed - seed % 1000:06d}`; pixels are
clip(127.5·x + 128, 0, 255) truncated to uint8 (the pipeline's "pil" output; a latent model's VAE-decoded pixels × 255
truncated, as EDM2's generator), mode "L" for one channel, else "RGB".

Mistakes (bad flags, an incomplete model folder, bad sampler settings) print one line, `<prog>: error: <what is wrong
and how to fix it>`, and exit with status 2; unexpected errors keep their traceback.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..pipelines.fast_sampling import measure_compilation
from .common import (
    MAX_SEEDS,
    OneLineErrorParser,
    device_argument,
    parse_seeds,
    positive_int,
    process_state,
    reported_errors,
    seeds_argument,
)
from .sampling import add_sampler_arguments, load_sampling_pipeline

DEFAULT_BATCH = 64
"""Maximum batch size per process without `--batch` (the official default)."""

PROG = "python -m diffusers_edm.generate"

_REPORTED_SETTINGS = ("discretization", "schedule", "scaling", "solver", "sigma_min", "sigma_max", "rho", "s_churn",
                      "s_tmin", "s_tmax", "s_noise")
_REPORTED_NAMES = {"s_churn": "S_churn", "s_tmin": "S_tmin", "s_tmax": "S_tmax", "s_noise": "S_noise"}


@dataclass
class GenerationSummary:
    """What [`main`] did.

    Attributes:
        num_images (`int`): images written by all processes together.
        num_processes (`int`): number of processes that shared the seeds.
        outdir (`str`): the output folder.
        num_inference_steps (`int`): sampler steps N.
        steps_source (`str`): where N came from (`--steps`, the preset, `sampler_settings.json` or the default).
        evaluations (`int`): network evaluations per image (without guidance).
        scheduler_config (`dict`): the config of the scheduler that was used.
        scheduler_class (`str`): its class name.
        changed_settings (`dict`): the settings that differ from the model's saved scheduler config.
        guidance (`str`): the guidance that was used ("none" without).
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
    evaluations: int
    scheduler_config: dict[str, Any]
    scheduler_class: str = "EDMHeunScheduler"
    changed_settings: dict[str, Any] = field(default_factory=dict)
    guidance: str = "none"
    seconds: float = 0.0
    fast_path: str = "exact"
    first_batch_seconds: float = 0.0
    compile_seconds: float = 0.0

    def describe(self) -> str:
        """A short human-readable report."""
        config = self.scheduler_config
        settings = []
        for key in _REPORTED_SETTINGS:
            if key in config:
                value = config[key]
                if value is None:
                    value = "inf" if key == "s_tmax" else "the discretization's"
                settings.append(f"{_REPORTED_NAMES.get(key, key)}={value}")
        changed = ", ".join(f"{key}={value}" for key, value in self.changed_settings.items()) or "none"
        return (
            f"Wrote {self.num_images} images to {self.outdir} with {self.num_processes} process(es) in"
            f" {self.seconds:.1f} s.\n"
            f"Sampler: {self.scheduler_class}, {self.num_inference_steps} steps (from {self.steps_source};"
            f" {self.evaluations} network evaluations per image), {', '.join(settings)}.\n"
            f"Guidance: {self.guidance}.\n"
            f"Changed from the model's saved scheduler config: {changed}.\n"
            f"{self.fast_path}; first batch {self.first_batch_seconds:.1f} s (compiling {self.compile_seconds:.1f} s)."
        )


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


def save_images(images: Sequence[Any], seeds: Sequence[int], outdir: str | os.PathLike, subdirs: bool) -> None:
    """Saves `images[i]` (PIL images) as the PNG of `seeds[i]` (see [`image_path`])."""
    for image, seed in zip(images, seeds):
        path = image_path(outdir, seed, subdirs)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def build_parser() -> OneLineErrorParser:
    """The command line. Flag names follow the official script where they exist (`--S_churn` etc. are aliases)."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Generate images with a saved EDMPipeline, seed for seed as EDM's generate.py. Launch with"
        " `accelerate launch -m diffusers_edm.generate ...` to split the seeds over processes.",
    )
    parser.add_argument("--model", "--network", required=True,
                        help="EDMPipeline folder or Hugging Face Hub id")
    parser.add_argument("--outdir", required=True, help="where to save the images")
    parser.add_argument("--seeds", type=seeds_argument, default=parse_seeds("0-63"),
                        help=f"seeds, e.g. '0-63' or '1,2,5-10' (default: 0-63; at most {MAX_SEEDS:,})")
    parser.add_argument("--subdirs", action="store_true", help="one subfolder per 1000 seeds")
    parser.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH,
                        help=f"maximum batch size per process (default: {DEFAULT_BATCH})")
    add_sampler_arguments(parser)
    parser.add_argument("--device", type=device_argument, default=None,
                        help="torch device (default: the process's accelerator, else the CPU); the seeds' generators"
                        " live on it, so CPU and CUDA give different images")
    return parser


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
    with reported_errors(parser.prog):
        setup = load_sampling_pipeline(args, state, device)
    pipe = setup.pipe

    batches = rank_batches(args.seeds, args.batch, state.num_processes, state.process_index)
    start = time.perf_counter()
    first_batch_seconds = 0.0
    with measure_compilation() as compilation, tqdm(
        total=sum(map(len, batches)), unit="img", disable=not state.is_main_process,
        desc=f"Generating (process 0 of {state.num_processes})",
    ) as progress:
        for index, batch_seeds in enumerate(batches):
            images = pipe(seeds=batch_seeds, output_type="pil", **setup.sample_kwargs()).images
            save_images(images, batch_seeds, args.outdir, args.subdirs)
            progress.update(len(batch_seeds))
            if index == 0:  # "pil" images are on the host: the batch has finished
                first_batch_seconds = time.perf_counter() - start
    state.wait_for_everyone()

    summary = GenerationSummary(
        num_images=len(args.seeds),
        num_processes=state.num_processes,
        outdir=str(args.outdir),
        num_inference_steps=setup.num_inference_steps,
        steps_source=setup.steps_source,
        evaluations=setup.evaluations_per_image,
        scheduler_config=dict(pipe.scheduler.config),
        scheduler_class=type(pipe.scheduler).__name__,
        changed_settings=setup.changed_settings,
        guidance=setup.describe_guidance(),
        seconds=time.perf_counter() - start,
        fast_path=setup.describe_fast_path(),
        first_batch_seconds=first_batch_seconds,
        compile_seconds=compilation.seconds,
    )
    if state.is_main_process:
        print(summary.describe())
    return summary


def cli() -> None:
    """The `edm-generate` console script (its exit status is what `main` returns or raises, not its result)."""
    main()


if __name__ == "__main__":
    main()
