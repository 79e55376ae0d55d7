"""What a sampler tuning (`python -m diffusers_edm.tune_sampler`) costs: seconds to generate and score one trial's
images at each budget on this machine, trials per hour with and without pruning, and the estimate for CIFAR-10 on one
GPU from a sampling speed you give.

    python benchmarks/tuning_cost.py --model edm-digits --ref outputs/digits-ref.npz --detector digits \\
        --nfe 11,19,35 --num 1000 --out results/tuning_cost.json

A trial scores `--num` images; a pruned one stops after `--prune_at`. Each budget is timed once with the paper's
sampler at the steps that fit it (the scheduler family changes the cost little: it is the network evaluations).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffusers_edm.commands.common import process_state
from diffusers_edm.commands.sampling import load_pipeline
from diffusers_edm.evaluation.detectors import detector_metric, load_detector
from diffusers_edm.evaluation.reference import load_reference
from diffusers_edm.tuning.scoring import SettingsScorer
from diffusers_edm.tuning.space import paper_settings

CIFAR10_IMAGES_PER_SECOND_AT_35_NFE = 83.0
"""The official sampler on CIFAR-10 (DDPM++, fp32, 35 evaluations) on one H100; this package's eager path matches it
or betters it (see docs/performance.md)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--detector", default="digits")
    parser.add_argument("--nfe", default="11,19,35")
    parser.add_argument("--num", type=int, default=1000, help="images timed per budget")
    parser.add_argument("--trial_num", type=int, default=10_000, help="images of a full trial in the estimate")
    parser.add_argument("--prune_at", type=int, default=500, help="images of a pruned trial in the estimate")
    parser.add_argument("--gpu_img_per_s", type=float, default=CIFAR10_IMAGES_PER_SECOND_AT_35_NFE,
                        help="CIFAR-10 sampling speed at 35 NFE on the GPU of the estimate")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    state = process_state("cpu")
    pipe = load_pipeline(args.model).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    reference = load_reference(args.ref, detector_metric(args.detector))
    scorer = SettingsScorer(pipe, load_detector(args.detector), reference, state, batch=250)
    rows = []
    for nfe in (int(n) for n in args.nfe.split(",")):
        settings = paper_settings(nfe)
        scorer.score(settings, range(8))  # warm-up
        start = time.perf_counter()
        scorer.score(settings, range(args.num))
        per_image = (time.perf_counter() - start) / args.num
        full, pruned = per_image * args.trial_num, per_image * args.prune_at
        gpu_per_image = nfe / 35 / args.gpu_img_per_s
        rows.append({"nfe": settings.evaluations, "cpu_img_per_s": round(1 / per_image, 1),
                     "cpu_seconds_full_trial": round(full, 1), "cpu_seconds_pruned_trial": round(pruned, 1),
                     "cpu_trials_per_hour_none_pruned": round(3600 / full, 2),
                     "cpu_trials_per_hour_half_pruned": round(3600 / ((full + pruned) / 2), 2),
                     "cifar10_gpu_hours_100_trials_half_pruned": round(
                         100 * gpu_per_image * (args.trial_num + args.prune_at) / 2 / 3600, 2)})
        print(json.dumps(rows[-1]))
    print(f"\n| NFE | CPU img/s | s per trial ({args.trial_num} img) | s per pruned trial ({args.prune_at} img) |"
          " trials/h (none / half pruned) | CIFAR-10, 1 GPU, 100 trials half pruned |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['nfe']} | {row['cpu_img_per_s']} | {row['cpu_seconds_full_trial']} |"
              f" {row['cpu_seconds_pruned_trial']} | {row['cpu_trials_per_hour_none_pruned']} /"
              f" {row['cpu_trials_per_hour_half_pruned']} | {row['cifar10_gpu_hours_100_trials_half_pruned']} h |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
