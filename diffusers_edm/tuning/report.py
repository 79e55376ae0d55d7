# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""What a tuning leaves behind: per budget a pipeline folder sampling with the tuned settings by default (with a card
stating the numbers and the command), `tuning.json` with every trial, and the plots (distance against NFE for the
tuned, current and paper settings; the importance of each setting)."""

from __future__ import annotations

import json
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import optuna

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

from ..pipelines.pipeline_edm import EDMPipeline
from .space import SamplerSettings

TUNING_RECORD = "tuning.json"
"""The record of a tuning in its output folder."""

COMPARED = ("tuned", "current", "paper")
"""The settings every budget reports on the validation seeds: the search's best, the model's own and the paper's."""


@dataclass
class BudgetResult:
    """The outcome of one budget.

    Attributes:
        nfe (`int`): the budget of network evaluations per image.
        settings (`dict[str, SamplerSettings]`): the compared settings by name ([`COMPARED`]; "current" is absent
            when the model's scheduler is not one the tuner can set).
        tuning_value (`float`): the best trial's distance on the tuning seeds.
        validation (`dict[str, list[float]]`): the distances of each compared setting on each validation seed set.
        trials (`list[dict]`): every trial of the study.
        importance (`dict[str, float]`): the importance of each searched setting (empty with too few trials).
    """

    nfe: int
    settings: dict[str, SamplerSettings]
    tuning_value: float
    validation: dict[str, list[float]] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    importance: dict[str, float] = field(default_factory=dict)

    def summary(self, name: str) -> str:
        """The distances of a compared setting on the validation sets as "mean ± standard deviation"."""
        values = self.validation[name]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4g} ± {spread:.2g}"

    def as_dict(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "settings": {name: s.as_dict() for name, s in self.settings.items()},
                "tuning_value": self.tuning_value, "validation": self.validation, "importance": self.importance,
                "trials": self.trials}


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial: number, state, distance (complete trials), the distance at the pruning point, settings, error."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        records.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                        "intermediate": {str(step): value for step, value in trial.intermediate_values.items()},
                        "settings": trial.user_attrs.get("settings"),
                        "error": trial.user_attrs.get("error", "interrupted" if trial.state.name == "FAIL" else None),
                        "seconds": None if trial.duration is None else round(trial.duration.total_seconds(), 2)})
    return records


def setting_importance(study: optuna.Study) -> dict[str, float]:
    """The importance of each setting for the distance (Optuna's default evaluator over the complete trials; empty
    when there are too few)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 4:
        return {}
    try:
        with warnings.catch_warnings():  # its warnings about settings seen in few trials
            warnings.simplefilter("ignore")
            return {name: float(value) for name, value in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # e.g. a single distinct value of every setting
        return {}


def save_tuned_pipeline(pipe: EDMPipeline, settings: SamplerSettings, folder: Path, card: str) -> None:
    """Saves `pipe` (whose scheduler the scorer set to `settings`) with the settings' guidance and step count as its
    defaults, and the card as README.md; the pipeline's own defaults are left neutral for the next scoring."""
    pipe.register_to_config(guidance_scale=float(settings.guidance_scale),
                            guidance_interval=list(settings.guidance_interval) if settings.guidance_interval else None,
                            num_inference_steps=settings.num_inference_steps)
    pipe.save_pretrained(folder, safe_serialization=True)
    pipe.register_to_config(guidance_scale=1.0, guidance_interval=None, num_inference_steps=None)
    (folder / "README.md").write_text(card, encoding="utf-8")


def model_card(result: BudgetResult, model: str, metric: str, command: str, num_tuning: int,
               validation_sets: list[str]) -> str:
    """The card of a tuned pipeline: the settings, the numbers on the validation seeds, the command."""
    rows = "\n".join(f"| {name} | {result.settings[name].describe()} | {result.summary(name)} |"
                     for name in COMPARED if name in result.validation)
    return f"""---
library_name: diffusers
tags:
- edm
- diffusers-edm
- sampler-tuning
---

# {Path(model).name or model}, sampler tuned for {result.nfe} network evaluations

The model of `{model}` with the sampler settings that gave the lowest {metric} on its tuning seeds at {result.nfe}
evaluations per image; `EDMPipeline.from_pretrained` samples with them by default.

Tuned: {result.settings["tuned"].describe()} ({metric} {result.tuning_value:.4g} on the {num_tuning} tuning seeds).

{metric} on the validation seeds ({", ".join(validation_sets)}; mean ± standard deviation over the seed sets), which
the search never saw:

| | settings | {metric} |
|---|---|---|
{rows}

("current": the settings the model was saved with; "paper": EDM's deterministic Heun sampler, ρ = 7 on
[0.002, 80].)

Made with:

```bash
{command}
```
"""


def write_record(out: Path, results: list[BudgetResult], header: dict[str, Any]) -> Path:
    """`tuning.json`: the run's settings and every budget's result with all its trials."""
    path = out / TUNING_RECORD
    record = {**header, "budgets": [result.as_dict() for result in results]}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def write_plots(out: Path, results: list[BudgetResult], metric: str) -> list[Path]:
    """`fd_vs_nfe.png` (the compared settings on the validation seeds against the budget) and
    `importance-nfe-N.png` per budget."""
    written = []
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for name in COMPARED:
        points = [(r.nfe, statistics.fmean(r.validation[name]),
                   statistics.stdev(r.validation[name]) if len(r.validation[name]) > 1 else 0.0)
                  for r in results if name in r.validation]
        if points:
            nfe, mean, spread = zip(*points)
            axes.errorbar(nfe, mean, yerr=spread, marker="o", capsize=3, label=name)
    axes.set_xlabel("network evaluations per image (NFE)")
    axes.set_ylabel(f"{metric} (validation seeds)")
    axes.set_xscale("log")
    axes.legend()
    figure.tight_layout()
    written.append(out / "fd_vs_nfe.png")
    figure.savefig(written[-1], dpi=120)
    plt.close(figure)
    for result in results:
        if not result.importance:
            continue
        names = list(result.importance)[::-1]
        figure, axes = plt.subplots(figsize=(5, 0.35 * len(names) + 1))
        axes.barh(names, [result.importance[name] for name in names])
        axes.set_xlabel("importance for the distance")
        axes.set_title(f"{result.nfe} NFE")
        figure.tight_layout()
        written.append(out / f"importance-nfe-{result.nfe}.png")
        figure.savefig(written[-1], dpi=120)
        plt.close(figure)
    return written
