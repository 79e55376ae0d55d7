# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The table and plot of the EDM-vs-EDM2 comparison on the digits (docs/digits_quality.md), from the run folders of
`benchmarks/digits_recipe_run.sh`.

    python benchmarks/digits_recipes_report.py --run edm:0=outputs/edm-s0 --run edm:1=outputs/edm-s1 \\
        --run edm2:0=outputs/edm2-s0 --run edm2:1=outputs/edm2-s1 --plot docs/images/digits-edm-vs-edm2.png

Prints a markdown table (FD_digits per seed set, mean, the EDM2 σ_rel chosen on held-out seeds, training time and
s/step) and the mean and spread per recipe; writes a plot of FD_digits per run and seed set (`--plot`) and the
numbers as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SEED_SETS = ("0–999", "1000–1999", "2000–2999")


def read_run(folder: Path) -> dict:
    """FD_digits per seed set, the post-hoc EMA choice (EDM2), training seconds and steps of one run folder."""
    fd = json.loads((folder / "fd_digits.json").read_text())
    steps = json.loads((folder / "training_config.json").read_text())
    log = [json.loads(line) for line in (folder / "logs" / "log.jsonl").read_text().splitlines()]
    choice = folder / "phema_choice.json"
    std = None
    if choice.is_file():
        name = Path(json.loads(choice.read_text())["folder"]).name  # std-0.100
        std = float(name.removeprefix("std-"))
    seconds = int((folder / "train_seconds").read_text())
    return {"values": fd["values"], "mean": statistics.mean(fd["values"]), "std": std, "seconds": seconds,
            "steps": log[-1]["step"], "duration_kimg": steps["duration_kimg"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="RECIPE:SEED=FOLDER")
    parser.add_argument("--plot", default=None, help="PNG to write")
    parser.add_argument("--json", default=None, help="JSON file to write")
    args = parser.parse_args()
    runs = []
    for spec in args.run:
        label, folder = spec.split("=", 1)
        recipe, seed = label.split(":")
        runs.append((recipe, int(seed), read_run(Path(folder))))
    print("| recipe | training seed | " + " | ".join(f"seeds {s}" for s in SEED_SETS)
          + " | mean | EMA | training time | s/step |")
    print("|---|---|" + "---|" * (len(SEED_SETS) + 4))
    for recipe, seed, run in runs:
        ema = f"post-hoc σ_rel {run['std']:.3f}" if run["std"] is not None else "half-life 10 kimg"
        print(f"| {recipe} | {seed} | " + " | ".join(f"{v:.1f}" for v in run["values"])
              + f" | {run['mean']:.1f} | {ema} | {run['seconds'] / 60:.0f} min | {run['seconds'] / run['steps']:.2f} |")
    summary = {}
    for recipe in dict.fromkeys(r for r, _, _ in runs):
        values = [v for r, _, run in runs if r == recipe for v in run["values"]]
        means = [run["mean"] for r, _, run in runs if r == recipe]
        summary[recipe] = {"mean": statistics.mean(values), "sd_over_seed_sets_and_runs": statistics.stdev(values),
                           "run_means": means}
        print(f"{recipe}: mean {statistics.mean(values):.2f}, sd {statistics.stdev(values):.2f} over {len(values)}")
    if args.json:
        record = {"seed_sets": list(SEED_SETS), "summary": summary,
                  "runs": [{"recipe": r, "training_seed": s, **run} for r, s, run in runs]}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.5))
        colors = {"edm": "tab:blue", "edm2": "tab:orange"}
        for index, (recipe, seed, run) in enumerate(runs):
            axis.scatter([index] * len(run["values"]), run["values"], color=colors.get(recipe, "gray"), s=18)
            axis.hlines(run["mean"], index - 0.3, index + 0.3, color=colors.get(recipe, "gray"))
        axis.set_xticks(range(len(runs)), [f"{r}\nseed {s}" for r, s, _ in runs])
        axis.set_ylabel("FD_digits (1000 samples) ↓")
        axis.set_title("Digits, same wall-clock budget: EDM vs EDM2 recipe")
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
