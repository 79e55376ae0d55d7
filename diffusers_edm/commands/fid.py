# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""FID and other Fréchet distances with the protocol of EDM's `fid.py` (Karras et al. 2022) and EDM2's FD-DINOv2.

Usage:

    # Reference statistics of a dataset (every image, no x-flip copies): image folder, EDM zip, Hub dataset, or the
    # embedded digits when no source is given
    python -m diffusers_edm.fid ref --data cifar10-32x32.zip --dest cifar10-32x32.npz

    # Score a folder or zip of images, as fid.py calc (--num images, the seeded subset when there are more)
    python -m diffusers_edm.fid calc --images fid-images \\
        --ref https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz

    # Generate and score without writing images; the paper's protocol: three seed sets, report the minimum
    accelerate launch -m diffusers_edm.fid calc --model edm-cifar10-32x32-cond-vp --preset cifar10 \\
        --ref https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz --seeds 0-49999 --repeats 3

Detectors (`--detector`): `inception` (FID, the network of `fid.py`), `dinov2` (FD-DINOv2 as EDM2), `digits` (this
package's digits feature network) or the path of a TorchScript file called as `net(images_uint8,
return_features=True)`. Statistics are float64 sums over all processes of `accelerate launch`; W processes give the
same numbers as one. The last line printed is the result; `--out metrics.json` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DataConfig, build_dataset
from ..errors import EvaluationError
from ..evaluation.detectors import DETECTOR_NAMES, detector_metric, load_detector
from ..evaluation.features import compute_statistics
from ..evaluation.reference import load_reference, save_reference
from ..evaluation.sources import ImageFiles, dataset_images, generated_images
from ..evaluation.statistics import FD_METHODS, frechet_distance
from ..pipelines.fast_sampling import measure_compilation
from .common import (
    OneLineErrorParser,
    check_output_file,
    device_argument,
    leave_process_group,
    non_negative_int,
    parse_seeds,
    positive_int,
    process_state,
    reported_errors,
    seeds_argument,
)
from .sampling import add_sampler_arguments, load_sampling_pipeline

PROG = "python -m diffusers_edm.fid"

DEFAULT_NUM_IMAGES = 50_000
"""Images scored by `calc --images` without `--num`, and seeds of `calc --model` without `--seeds` (the papers' 50k)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: subcommands `ref` and `calc`."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Fréchet distances (FID as EDM's fid.py, FD-DINOv2 as EDM2) of images, datasets and models. Launch"
        " with `accelerate launch -m diffusers_edm.fid ...` to split the work over processes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ref = commands.add_parser("ref", help="reference statistics of a dataset (every image, no x-flip copies)")
    ref.add_argument("--data", default=None,
                     help="image folder or EDM dataset (folder or zip) as train_edm.py --train_data_dir; without it"
                     " and --dataset_name: the embedded digits")
    ref.add_argument("--dataset_name", default=None, help="Hugging Face dataset id or local datasets path")
    ref.add_argument("--dataset_config_name", default=None, help="configuration of --dataset_name")
    ref.add_argument("--image_column", default="image", help="image column of --dataset_name")
    ref.add_argument("--resolution", type=positive_int, default=None,
                     help="resize to this resolution as train_edm.py does (default: the data's own; 16 for the"
                     " digits)")
    ref.add_argument("--center_crop", action="store_true", help="crop to a centred square first, as train_edm.py")
    ref.add_argument("--dest", required=True, help="the .npz file to write (keys mu, sigma)")
    _add_common_arguments(ref)

    calc = commands.add_parser("calc", help="score images or a model against reference statistics")
    source = calc.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder or zip of generated images")
    source.add_argument("--model", "--network", help="EDMPipeline folder or Hub id: generate and score in memory")
    calc.add_argument("--ref", required=True, help="reference statistics: .npz (EDM) or .pkl (EDM2: the entry of the"
                      " detector's metric) path or URL")
    calc.add_argument("--num", type=positive_int, default=None,
                      help=f"--images: number of images to score (default {DEFAULT_NUM_IMAGES}); fewer is an error,"
                      " more selects the seeded subset of fid.py")
    calc.add_argument("--seed", type=int, default=0, help="--images: seed of the subset (default 0)")
    calc.add_argument("--seeds", type=seeds_argument, default=None,
                      help=f"--model: seeds of the images (default 0-{DEFAULT_NUM_IMAGES - 1})")
    calc.add_argument("--repeats", type=positive_int, default=1,
                      help="--model: score this many seed sets, each shifted by the span of --seeds (3: seeds 0-49999,"
                      " 50000-99999, 100000-149999, the paper's protocol), and report the minimum")
    calc.add_argument("--out", default=None, help="also write the result to this JSON file")
    add_sampler_arguments(calc)
    _add_common_arguments(calc)
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", default="inception",
                        help=f"feature network: {', '.join(DETECTOR_NAMES)} or the path of a TorchScript file"
                        " (default: inception, i.e. FID)")
    parser.add_argument("--detector_path", default=None,
                        help="local copy of the named detector: the inception-2015-12-05.pt file, or a folder with"
                        " the DINOv2 model (for offline machines)")
    parser.add_argument("--trust_detector", action="store_true",
                        help="run a TorchScript detector that is not pinned even if it uses more than tensor"
                        " arithmetic (TorchScript can read and write your files: only for files you trust)")
    parser.add_argument("--batch", type=positive_int, default=64, help="images per detector call (default 64)")
    parser.add_argument("--workers", type=non_negative_int, default=min(3, os.cpu_count() or 1),
                        help="DataLoader workers reading image files (default: 3 as fid.py, at most the CPU count)")
    parser.add_argument("--fd_method", choices=FD_METHODS, default="sqrtm",
                        help="matrix square root: sqrtm (scipy, exactly as fid.py; default) or eigh (faster)")
    parser.add_argument("--device", type=device_argument, default=None,
                        help="torch device (default: the process's accelerator, else the CPU)")


def run_ref(args: argparse.Namespace) -> Path:
    """`ref`: statistics of every image of a training source, written to `--dest`."""
    state = process_state(args.device)
    check_output_file(args.dest, "--dest")
    detector = load_detector(args.detector, args.detector_path, args.trust_detector).to(state.device)
    dataset = build_dataset(DataConfig(
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name, train_data_dir=args.data,
        image_column=args.image_column, resolution=args.resolution, center_crop=args.center_crop, conditional=False,
    ))
    statistics = compute_statistics(lambda indices: dataset_images(dataset, indices), len(dataset), detector,
                                    args.batch, state, description=f"Reference features ({detector.name})")
    mu, sigma = statistics.mean_and_covariance()
    if state.is_main_process:
        save_reference(args.dest, mu, sigma)
        print(f"Wrote the {detector.name} statistics of {statistics.count} images of {dataset.source_description}"
              f" ({len(mu)} features) to {args.dest}.")
    return Path(args.dest)


def run_calc(args: argparse.Namespace) -> dict[str, Any]:
    """`calc`: the distance of `--images` or of `--model`'s samples to `--ref`; returns the result record."""
    state = process_state(args.device)
    if args.out:
        check_output_file(args.out, "--out")
    mu_ref, sigma_ref = load_reference(args.ref, detector_metric(args.detector))
    detector = load_detector(args.detector, args.detector_path, args.trust_detector).to(state.device)
    score = _image_scorer(args, state, detector, mu_ref, sigma_ref)
    start = time.perf_counter()
    values, sets = [], []
    with measure_compilation() as compilation:  # the model's compile time (generation shares the fast paths)
        for label, num_images, statistics_of in score:
            mu, sigma = statistics_of().mean_and_covariance()
            values.append(frechet_distance(mu, sigma, mu_ref, sigma_ref, method=args.fd_method))
            sets.append(label)
            if state.is_main_process and (args.repeats > 1 or args.model is None):
                print(f"{label}: {detector.metric} = {values[-1]:g}")
    result = {"metric": detector.metric, "value": min(values), "num_images": num_images, "values": values,
              "detector": detector.name, "ref": str(args.ref), "sets": sets,
              "seconds": round(time.perf_counter() - start, 1)}
    if args.model is not None:
        result["compile_seconds"] = round(compilation.seconds, 1)
    if state.is_main_process:
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"{result['value']:g}")
    return result


def _image_scorer(args, state, detector, mu_ref, sigma_ref):
    """Yields (label, number of images, function computing their statistics) per scored image set."""
    expected = mu_ref.shape[0]
    if args.images is not None:
        model_flags = (args.preset, args.scheduler, args.guidance_scale, args.guide, args.guidance_interval)
        if args.seeds is not None or args.repeats != 1 or any(flag is not None for flag in model_flags):
            raise EvaluationError("--seeds, --repeats, --preset, --scheduler and the guidance flags apply to --model;"
                                  " with --images use --num and --seed.")
        fast_flags = (args.dtype, args.channels_last, args.compile, args.cuda_graphs)
        if args.fast or args.exact or any(flag is not None for flag in fast_flags):
            raise EvaluationError("--fast, --exact, --dtype, --channels_last, --compile and --cuda_graphs apply to"
                                  " --model (the sampler); with --images nothing is generated.")
        files = ImageFiles(args.images)
        names = files.subset(args.num or DEFAULT_NUM_IMAGES, args.seed)
        shape = tuple(files.read(names[0]).shape)
        yield (f"{len(names)} images of {args.images}", len(names), lambda: compute_statistics(
            lambda indices: files.read_batch([names[i] for i in indices], shape), len(names), detector, args.batch,
            state, num_workers=args.workers, expected_features=expected, description=f"Features ({detector.name})"))
        return
    if args.num is not None:
        raise EvaluationError("--num applies to --images; with --model the number of images is the number of"
                              " --seeds.")
    seeds = args.seeds if args.seeds is not None else parse_seeds(f"0-{DEFAULT_NUM_IMAGES - 1}")
    setup = load_sampling_pipeline(args, state, state.device)
    if state.is_main_process:
        print(setup.describe_fast_path() + ".")
    span = max(seeds) - min(seeds) + 1
    for repeat in range(args.repeats):
        shifted = [seed + repeat * span for seed in seeds]
        label = f"seeds {_describe_seeds(shifted)}"
        yield (label, len(shifted), lambda shifted=shifted: compute_statistics(
            lambda indices: generated_images(setup.pipe, [shifted[i] for i in indices], **setup.sample_kwargs()),
            len(shifted), detector, args.batch, state, expected_features=expected,
            description=f"Generating and scoring {label}"))


def _describe_seeds(seeds: Sequence[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) else f"{len(seeds)} seeds"


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | Path:
    """Command line entry point. A mistake in the arguments or the inputs prints one line and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with reported_errors(f"{parser.prog} {args.command}"):
        result = run_ref(args) if args.command == "ref" else run_calc(args)
    leave_process_group()
    return result


def cli() -> None:
    """The `edm-fid` console script (its exit status is what `main` returns or raises, not its result)."""
    main()


if __name__ == "__main__":
    main()
