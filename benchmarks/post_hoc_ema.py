# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""FD_digits against the EMA length σ_rel, reconstructed post hoc from one digits training run (EDM2's post-hoc EMA),
next to the half-life EMA that the same run used (docs/post_hoc_ema.md).

    accelerate launch --cpu --num_processes 1 train_edm.py --output_dir outputs/digits-phema --arch ddpmpp \
        --phema_stds 0.05,0.10
    python benchmarks/post_hoc_ema.py sweep --run outputs/digits-phema --out docs/results/post_hoc_ema.json
    python benchmarks/post_hoc_ema.py plot --results docs/results/post_hoc_ema.json --out docs/images

Every point samples the same 1000 seeds (100 per class, 18 Heun steps = 35 model evaluations) and scores them with
the project's digits feature network against all real digits, as `benchmarks/sampling_quality.py` does; the same seeds
for every σ_rel make the differences between points less noisy than each point's own seed noise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from sampling_quality import DigitsScorer, load

from diffusers_edm.reconstruct_phema import reconstruct

STDS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.10, 0.13, 0.17, 0.22, 0.28)


def sweep(run: Path, stds: list[float], first_seed: int) -> list[dict]:
    score = DigitsScorer()
    config = json.loads((run / "training_config.json").read_text())
    common = {"first_seed": first_seed, "num_inference_steps": 18}
    results = [{"ema": "half-life", "halflife_kimg": config["ema_halflife_kimg"], "first_seed": first_seed,
                **score(load(str(run)), **common)}]
    print(json.dumps(results[-1]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for std, pipeline in zip(stds, reconstruct(run, stds, Path(folder) / "sweep")):
            results.append({"ema": "post-hoc", "std": std, "first_seed": first_seed,
                            **score(load(str(pipeline)), **common)})
            print(json.dumps(results[-1]), flush=True)
    return results


def averaged(results: list[dict]) -> list[dict]:
    """Per EMA (the half-life one, then each σ_rel): the mean, minimum and maximum of each score over seed sets."""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault((row["ema"], row.get("std")), []).append(row)
    rows = []
    for (ema, std), members in groups.items():
        row = {"ema": ema, "std": std, "halflife_kimg": members[0].get("halflife_kimg"), "seed_sets": len(members)}
        for key in ("fd_digits", "accuracy"):
            values = [m[key] for m in members]
            row.update({key: sum(values) / len(values), f"{key}_min": min(values), f"{key}_max": max(values)})
        rows.append(row)
    return rows


def plot(results: list[dict], out_folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_folder.mkdir(parents=True, exist_ok=True)
    rows = averaged(results)
    posthoc = sorted((r for r in rows if r["ema"] == "post-hoc"), key=lambda r: r["std"])
    baseline = next(r for r in rows if r["ema"] == "half-life")
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, label in zip(axes, ("fd_digits", "accuracy"),
                                ("FD_digits (lower is better)", "class accuracy (higher is better)")):
        stds = [r["std"] for r in posthoc]
        axis.plot(stds, [r[key] for r in posthoc], marker="o",
                  label=f"post-hoc EMA (mean of {posthoc[0]['seed_sets']} seed sets, band: min-max)")
        axis.fill_between(stds, [r[f"{key}_min"] for r in posthoc], [r[f"{key}_max"] for r in posthoc], alpha=0.2)
        axis.axhline(baseline[key], color="gray", linestyle="--",
                     label=f"half-life EMA ({baseline['halflife_kimg']:g} kimg)")
        axis.set_xlabel("EMA length σ_rel")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_folder / "post-hoc-ema.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sweep", "plot"])
    parser.add_argument("--run", type=Path, help="sweep: output folder of a train_edm.py run with --phema_stds")
    parser.add_argument("--stds", type=lambda text: [float(v) for v in text.split(",")], default=list(STDS),
                        help="sweep: σ_rel values, comma-separated")
    parser.add_argument("--first_seed", type=int, default=0, help="sweep: seeds first_seed … first_seed + 999")
    parser.add_argument("--results", type=lambda text: [Path(p) for p in text.split(",")],
                        help="plot: the sweeps' JSON files (comma-separated; one per seed set)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file (sweep) or image folder (plot)")
    args = parser.parse_args()
    if args.command == "plot":
        plot([row for path in args.results for row in json.loads(path.read_text())], args.out)
        return
    torch.manual_seed(0)
    results = sweep(args.run, args.stds, args.first_seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    best = min((r for r in results if r["ema"] == "post-hoc"), key=lambda r: r["fd_digits"])
    print(f"wrote {args.out}; best σ_rel {best['std']} (FD_digits {best['fd_digits']:.2f}), half-life EMA "
          f"{results[0]['fd_digits']:.2f}")


if __name__ == "__main__":
    main()
