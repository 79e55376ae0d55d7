# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Sample quality on the digits against the number of model evaluations and the guidance weight, measured with the
project's digits feature network (`--detector digits` of `python -m diffusers_edm.fid`): FD_digits of 1000 samples
(seeds 0-999, classes drawn per seed) against all real digits, and the class accuracy of the samples.

    python benchmarks/sampling_quality.py nfe --model outputs/digits-320kimg --out docs/results/nfe.json
    python benchmarks/sampling_quality.py cfg --model outputs/digits-cfg --out docs/results/cfg.json
    python benchmarks/sampling_quality.py autoguidance --model outputs/digits-320kimg --guide outputs/digits-guide \\
        --out docs/results/autoguidance.json
    python benchmarks/sampling_quality.py cfg --model outputs/digits-cfg --weights 1.2 --out docs/results/cfg-w1.2.json
    python benchmarks/sampling_quality.py plot --results docs/results --out docs/images

`nfe` compares EDM's Heun sampler (the paper's) with diffusers' `EDMEulerScheduler` and
`EDMDPMSolverMultistepScheduler` (DPM-Solver++ 2M) inside `EDMPipeline` (the paper's Fig. 2 in miniature); `cfg` and
`autoguidance` sweep the guidance weight w at 18 Heun steps, without and with a guidance interval.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.evaluation import compute_statistics, frechet_distance, load_detector
from diffusers_edm.evaluation.sources import dataset_images
from diffusers_edm.pipelines.postprocessing import quantize_edm_images
from diffusers_edm.data import DataConfig, build_dataset

NUM_SAMPLES = 1000
GUIDANCE_WEIGHTS = (1.0, 1.5, 2.0, 3.0)
GUIDANCE_INTERVAL = (0.28, 5.42)
"""σ range (σ_lo, σ_hi] of the guidance interval: the one Kynkäänniemi et al. (2024) report for EDM2 on ImageNet-512
(recalled, not re-checked against the paper); guidance is off at high σ, where it mostly costs diversity, and at low
σ, where it does little."""

SCHEDULERS: dict[str, tuple[Callable, Callable[[int], int]]] = {
    # name: (scheduler from the pipeline's config, steps N for an evaluation budget)
    "Heun (EDM)": (lambda config: EDMHeunScheduler.from_config(config), lambda nfe: (nfe + 1) // 2),
    "Euler (diffusers EDMEuler)": (
        lambda config: EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=config["sigma_data"],
                                         rho=7.0, prediction_type="epsilon"), lambda nfe: nfe),
    "DPM-Solver++ 2M (diffusers EDMDPMSolverMultistep)": (
        lambda config: EDMDPMSolverMultistepScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=config["sigma_data"],
                                                      rho=7.0, prediction_type="epsilon"), lambda nfe: nfe),
}
NFE_BUDGETS = (7, 11, 19, 35)


class DigitsScorer:
    """FD_digits against the real digits and the class accuracy of generated samples."""

    def __init__(self) -> None:
        self.detector = load_detector("digits")
        dataset = build_dataset(DataConfig(conditional=False))
        reference = compute_statistics(lambda idx: dataset_images(dataset, idx), len(dataset), self.detector,
                                       batch_size=500, description="reference")
        self.reference = reference.mean_and_covariance()

    def __call__(self, pipe: EDMPipeline, first_seed: int = 0, **call_kwargs) -> dict:
        """Samples seeds first_seed … first_seed + 999 with `pipe(**call_kwargs)` and scores them."""
        start = time.perf_counter()
        images, labels = [], []
        for first in range(first_seed, first_seed + NUM_SAMPLES, 250):
            seeds = list(range(first, first + 250))
            classes = [seed % 10 for seed in seeds]  # 100 per class
            sample = pipe(seeds=seeds, class_labels=classes, output_type="latent", **call_kwargs).images
            images.append(quantize_edm_images(sample))
            labels += classes
        pixels = torch.cat(images)
        self.last_pixels = pixels  # the 8-bit samples of this call, for comparisons between configurations
        statistics = compute_statistics(lambda idx: pixels[idx.start:idx.stop], len(pixels), self.detector,
                                        batch_size=500, description="samples")
        with torch.no_grad():
            predicted = self.detector.net(pixels).argmax(1)
        return {"fd_digits": frechet_distance(*statistics.mean_and_covariance(), *self.reference),
                "accuracy": float((predicted == torch.tensor(labels)).float().mean()),
                "seconds": round(time.perf_counter() - start, 1)}


def load(folder: str) -> EDMPipeline:
    pipe = EDMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def nfe_sweep(args: argparse.Namespace, score: DigitsScorer) -> list[dict]:
    pipe, results = load(args.model), []
    config = dict(pipe.unet.config)
    for name, (make, steps_for) in SCHEDULERS.items():
        pipe.scheduler = make(config) if "Heun" not in name else make(pipe.scheduler.config)
        for nfe in NFE_BUDGETS:
            result = {"sampler": name, "nfe": nfe, "steps": steps_for(nfe),
                      **score(pipe, num_inference_steps=steps_for(nfe))}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def guidance_sweep(args: argparse.Namespace, score: DigitsScorer) -> list[dict]:
    pipe, results = load(args.model), []
    if args.guide:
        pipe.guide_unet = EDMPreconditionedUNet2DModel.from_pretrained(args.guide, subfolder="unet")
    for interval in (None, GUIDANCE_INTERVAL):
        for weight in args.weights:
            if weight == 1.0 and interval is not None:
                continue  # w = 1 is unguided whatever the interval
            result = {"method": args.command, "guidance_scale": weight, "interval": interval,
                      **score(pipe, num_inference_steps=18, guidance_scale=weight, guidance_interval=interval)}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def plot(results_folder: Path, out_folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_folder.mkdir(parents=True, exist_ok=True)
    nfe = json.loads((results_folder / "nfe.json").read_text())
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for sampler in dict.fromkeys(r["sampler"] for r in nfe):
        rows = [r for r in nfe if r["sampler"] == sampler]
        for axis, key in zip(axes, ("fd_digits", "accuracy")):
            axis.plot([r["nfe"] for r in rows], [r[key] for r in rows], marker="o", label=sampler)
    for axis in axes:
        axis.set_xticks(NFE_BUDGETS, [str(n) for n in NFE_BUDGETS])
    _finish(figure, axes, "model evaluations per image (NFE)", axes[0], out_folder / "sampling-nfe.png")

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("cfg", "autoguidance"):
        rows = [row for path in sorted(results_folder.glob(f"{name}*.json")) for row in json.loads(path.read_text())]
        if not rows:
            continue
        rows.sort(key=lambda row: row["guidance_scale"])
        unguided = [r for r in rows if r["guidance_scale"] == 1.0]
        for interval in (None, GUIDANCE_INTERVAL):
            selected = unguided + [r for r in rows if r["guidance_scale"] != 1.0
                                   and (r["interval"] is None) == (interval is None)]
            label = f"{'CFG' if name == 'cfg' else 'autoguidance'}{', interval' if interval else ''}"
            for axis, key in zip(axes, ("fd_digits", "accuracy")):
                axis.plot([r["guidance_scale"] for r in selected], [r[key] for r in selected], marker="o",
                          linestyle="--" if interval else "-", label=label)
    _finish(figure, axes, "guidance weight w (1 = unguided)", axes[1], out_folder / "sampling-guidance.png")


def _finish(figure, axes, xlabel: str, legend_axis, path: Path) -> None:
    """Labels the FD_digits (log scale) and accuracy panels, adds the legend and writes the PNG."""
    for axis, label in zip(axes, ("FD_digits (lower is better)", "class accuracy (higher is better)")):
        axis.set_xlabel(xlabel)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")
    legend_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["nfe", "cfg", "autoguidance", "plot"])
    parser.add_argument("--model", help="EDMPipeline folder of a conditional digits model")
    parser.add_argument("--guide", help="autoguidance: EDMPipeline folder of the guide model")
    parser.add_argument("--results", type=Path, help="plot: folder with nfe.json, cfg.json, autoguidance.json")
    parser.add_argument("--weights", type=lambda text: [float(w) for w in text.split(",")],
                        default=list(GUIDANCE_WEIGHTS), help="cfg/autoguidance: guidance weights, comma-separated")
    parser.add_argument("--out", type=Path, required=True, help="JSON file (sweeps) or image folder (plot)")
    args = parser.parse_args()
    if args.command == "plot":
        plot(args.results, args.out)
        return
    torch.manual_seed(0)
    score = DigitsScorer()
    results = nfe_sweep(args, score) if args.command == "nfe" else guidance_sweep(args, score)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}; lowest FD_digits {min(r['fd_digits'] for r in results):.2f}")


if __name__ == "__main__":
    main()
