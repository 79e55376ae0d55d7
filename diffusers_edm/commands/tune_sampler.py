# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.tune_sampler` (`edm-tune`): the sampler settings that give a model its lowest FID (or
FD-DINOv2, FD_digits) under a budget of network evaluations per image, found with Optuna's TPE search.

    python -m diffusers_edm.tune_sampler --model edm-digits --ref digits-ref.npz --detector digits \\
        --nfe 11,19,35 --num 2000 --trials 60 --out edm-digits-tuned
    accelerate launch -m diffusers_edm.tune_sampler --model ... --ref ... --nfe 35 --num 10000 --out tuned

Per budget it searches the scheduler family (EDM's Heun, Euler, DPM-Solver++ 2M, each with the steps that fit the
budget), ρ, σ_min, σ_max, Heun's churn, for a model that can be guided (a guide saved with it or `--guide`, or a
conditional model trained with label dropout) the guidance weight and interval, and for a training run that stored
post-hoc EMA snapshots (`train_edm.py --phema_stds`) the σ_rel of its EMA (of the model, and of a `--guide` run). A
trial scores the images of the tuning seeds 0 … num − 1; one worse than the median after `--prune_at` images stops
there. The best settings, the model's own and the paper's (Heun, ρ = 7 on [0.002, 80]) are then scored on validation
seed sets the search never saw (num … 2·num − 1, and so on).

Output in `--out`: `nfe-N/` per budget (a pipeline that samples with the tuned settings by default, with a card),
`tuning.json` (every trial), `fd_vs_nfe.png` and `importance-nfe-N.png`, and `study.journal`, the Optuna study: run
the same command again to continue an interrupted tuning, or with a larger `--trials` to search further.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelerate.utils import broadcast_object_list

from ..errors import EDMInputError, one_line
from ..evaluation.detectors import DETECTOR_NAMES, detector_metric, load_detector
from ..evaluation.reference import load_reference
from ..evaluation.statistics import FD_METHODS
from ..pipelines.pipeline_edm import EDMPipeline
from ..pipelines.scheduler_families import SCHEDULERS_BY_NAME
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from ..tuning.posthoc import PosthocWeights, has_snapshots
from ..tuning.report import (
    COMPARED,
    BudgetResult,
    model_card,
    save_tuned_pipeline,
    setting_importance,
    trial_records,
    write_plots,
    write_record,
)
from ..tuning.scoring import SettingsScorer
from ..tuning.space import (
    FAMILIES,
    SamplerSettings,
    SearchContext,
    current_settings,
    families_for_budget,
    paper_settings,
)
from ..tuning.study import best_settings, open_study, run_trials
from .common import (
    OneLineErrorParser,
    device_argument,
    leave_process_group,
    non_negative_int,
    positive_int,
    process_state,
    reported_errors,
)
from .sampling import check_model_argument, load_denoiser, load_pipeline, resolve_class_label

PROG = "python -m diffusers_edm.tune_sampler"

JOURNAL = "study.journal"
"""The Optuna journal of a tuning in its output folder."""


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Find the sampler settings with the lowest Fréchet distance for a model under budgets of network"
        " evaluations (Optuna TPE with pruning, resumable), validated on seeds the search never saw. Launch with"
        " `accelerate launch -m diffusers_edm.tune_sampler ...` to split the images over processes.",
    )
    parser.add_argument("--model", required=True, help="EDMPipeline folder or Hub id")
    parser.add_argument("--ref", required=True, help="reference statistics (.npz, or EDM2 .pkl) path or URL, as fid"
                        " calc --ref")
    parser.add_argument("--detector", default="inception",
                        help=f"feature network: {', '.join(DETECTOR_NAMES)} or a TorchScript path (default: inception)")
    parser.add_argument("--detector_path", default=None, help="local copy of the named detector (offline machines)")
    parser.add_argument("--trust_detector", action="store_true", help="run an unpinned TorchScript detector")
    parser.add_argument("--nfe", type=_nfe_list, default=[35], metavar="N[,N...]",
                        help="budgets of network evaluations per image, e.g. 11,19,35,63 (default 35)")
    parser.add_argument("--families", type=_family_list, default=list(FAMILIES), metavar="NAME[,NAME...]",
                        help=f"scheduler families to search (default: {','.join(FAMILIES)})")
    parser.add_argument("--stochastic", action=argparse.BooleanOptionalAction, default=True,
                        help="also search Heun's churn (S_churn, S_tmin, S_tmax, S_noise); --no-stochastic keeps the"
                        " sampler deterministic (default: search it)")
    parser.add_argument("--num", type=_at_least_two, default=10_000,
                        help="images per trial: the tuning seeds 0 … num-1; each validation set has as many (default"
                        " 10000)")
    parser.add_argument("--trials", type=positive_int, default=100, help="trials per budget (default 100)")
    parser.add_argument("--prune_at", type=non_negative_int, default=None,
                        help="images scored before a trial may be pruned (default: min(500, num/4); 0: never prune)")
    parser.add_argument("--validation_sets", type=positive_int, default=2,
                        help="validation seed sets of --num images each (default 2: seeds num … 3·num-1)")
    parser.add_argument("--guide", default=None, help="guide network for autoguidance (pipeline or model folder; for a"
                        " training run with post-hoc EMA snapshots its σ_rel is searched too)")
    parser.add_argument("--class", dest="class_label", default=None, metavar="K",
                        help="class of every image (default: drawn per seed)")
    parser.add_argument("--study_seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--out", required=True, help="output folder (run again with the same --out to continue)")
    parser.add_argument("--batch", type=positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument("--fd_method", choices=FD_METHODS, default="sqrtm", help="matrix square root (default sqrtm)")
    parser.add_argument("--device", type=device_argument, default=None,
                        help="torch device (default: the process's accelerator, else the CPU)")
    return parser


def _nfe_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 11,19,35)"
                                         ) from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r} lists a budget twice")
    return sorted(values)


def _family_list(text: str) -> list[str]:
    names = [item.strip() for item in text.split(",")]
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scheduler family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    return names


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("a Fréchet distance needs at least 2 images")
    return value


def seed_sets(num: int, validation_sets: int) -> tuple[list[int], list[list[int]]]:
    """The tuning seeds 0 … num − 1 and the validation sets that follow them, num seeds each (disjoint by
    construction, checked)."""
    tuning = list(range(num))
    validation = [list(range(num * k, num * (k + 1))) for k in range(1, validation_sets + 1)]
    assert not set(tuning).intersection(*validation), "validation seeds overlap the tuning seeds"
    return tuning, validation


def saved_scheduler_name(pipe: EDMPipeline) -> str | None:
    """The family name of the pipeline's scheduler, `None` when the tuner cannot set it (another class, or EDM's
    sampler with its Euler solver)."""
    name = next((key for key, cls in SCHEDULERS_BY_NAME.items() if type(pipe.scheduler) is cls), None)
    if isinstance(pipe.scheduler, EDMHeunScheduler) and pipe.scheduler.config.solver != "heun":
        return None
    return name


def run(args: argparse.Namespace, argv: Sequence[str]) -> list[BudgetResult]:
    """Tunes every budget of `args.nfe`; returns the results (complete on the main process)."""
    state = process_state(args.device)
    contexts = {nfe: families_for_budget(nfe, tuple(args.families)) for nfe in args.nfe}
    prune_at = min(500, args.num // 4) if args.prune_at is None else args.prune_at
    if prune_at >= args.num:
        raise EDMInputError(f"--prune_at {prune_at} must be below --num {args.num} (or 0 to never prune).")
    out = Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / JOURNAL).is_file()):
        raise EDMInputError(f"--out {out} exists and is not a tuning folder; choose a new folder (or that of the"
                            " tuning to continue).")
    tuning_seeds, validation_seeds = seed_sets(args.num, args.validation_sets)
    metric = detector_metric(args.detector)
    reference = load_reference(args.ref, metric)
    detector = load_detector(args.detector, args.detector_path, args.trust_detector).to(state.device)
    pipe = _load_model(args, state)
    class_label = resolve_class_label(args.class_label, pipe)
    current_name = saved_scheduler_name(pipe)
    current_guidance = (pipe.config.guidance_scale, pipe.config.guidance_interval)
    weights = PosthocWeights(Path(args.model), pipe.unet) if has_snapshots(args.model) else None
    guide_weights = PosthocWeights(Path(args.guide), pipe.guide_unet) \
        if args.guide is not None and has_snapshots(args.guide) else None
    scorer = SettingsScorer(pipe, detector, reference, state, args.batch, class_label, args.fd_method, weights,
                            guide_weights)
    scorer.statistics(paper_settings(3), tuning_seeds[:2])  # a detector that does not fit the reference fails here
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    record = {"model": args.model, "ref": str(args.ref), "detector": args.detector, "num": args.num,
              "prune_at": prune_at, "families": list(args.families), "stochastic": args.stochastic,
              "guide": args.guide, "class_label": class_label, "guidable": pipe.guidable, "phema": weights is not None,
              "guide_phema": guide_weights is not None}
    command = f"{PROG} {shlex.join(argv)}"
    results = []
    for nfe, families in contexts.items():
        baselines = {"paper": paper_settings(nfe)}
        if current_name is not None:
            baselines["current"] = current_settings(current_name, scorer.base_config, nfe, *current_guidance)
        context = SearchContext(nfe, families, guidable=pipe.guidable, stochastic=args.stochastic,
                                phema=weights is not None, guide_phema=guide_weights is not None)
        study = open_study(out / JOURNAL, f"nfe-{nfe}", {**record, "nfe": nfe}, args.study_seed) \
            if state.is_main_process else None
        # The first trials: the baselines, with the σ_rel of the weights the run saved where the search needs one
        # (drawn by the search when unknown or outside its range).
        saved_std = weights.saved_std if weights is not None else None
        low, high = context.ranges.std
        starts = [replace(s, std=saved_std) if saved_std is not None and low <= saved_std <= high else s
                  for s in baselines.values()]
        run_trials(study, scorer, context, tuning_seeds, prune_at, args.trials, state, starts=starts)
        result = _validate(study, scorer, nfe, baselines, validation_seeds)
        if state.is_main_process:
            result.trials, result.importance = trial_records(study), setting_importance(study)
            tuned = result.settings["tuned"]
            scorer.apply(tuned)
            card = model_card(result, args.model, metric, command, args.num,
                              [f"seeds {s[0]}-{s[-1]}" for s in validation_seeds])
            save_tuned_pipeline(pipe, tuned, out / f"nfe-{nfe}", card)
            print(f"{nfe} NFE: " + "; ".join(f"{name} {metric} {result.summary(name)}" for name in COMPARED
                                              if name in result.validation) + f"\n  tuned: {tuned.describe()}")
        results.append(result)
    if state.is_main_process:
        write_record(out, results, {**record, "metric": metric, "command": command,
                                    "tuning_seeds": f"0-{args.num - 1}",
                                    "validation_seeds": [f"{s[0]}-{s[-1]}" for s in validation_seeds]})
        write_plots(out, results, metric)
    return results


def _validate(study, scorer: SettingsScorer, nfe: int, baselines: dict[str, SamplerSettings],
              validation_seeds: list[list[int]]) -> BudgetResult:
    """The study's best settings (broadcast from the main process) and the baselines, scored on every validation
    set."""
    best = [_best_or_error(study)]
    broadcast_object_list(best)
    if isinstance(best[0], str):
        raise EDMInputError(best[0])
    result = BudgetResult(nfe, {"tuned": SamplerSettings.from_dict(best[0]["settings"]), **baselines}, best[0]["value"])
    for name in COMPARED:
        if name in result.settings:
            result.validation[name] = [scorer.score(result.settings[name], seeds) for seeds in validation_seeds]
    return result


def _load_model(args: argparse.Namespace, state) -> EDMPipeline:
    """The pipeline of `--model` (with `--guide`), checked, on the device, without progress bars or saved guidance
    defaults (every trial passes its own)."""
    check_model_argument(args.model, "--model")
    with state.main_process_first():
        pipe = load_pipeline(args.model)
        if args.guide is not None:
            pipe.guide_unet = load_denoiser(args.guide, "--guide")
    if pipe.guide_unet is not None:
        try:
            pipe.check_inputs(1, None, None, None, "latent", [], None, 2.0, None)
        except (ValueError, TypeError) as error:
            raise EDMInputError(f"The guide does not fit the model: {one_line(error)}") from None
    pipe.to(state.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _best_or_error(study) -> dict[str, Any] | str | None:
    """The best trial's settings and distance (main process), or the error to raise in every process."""
    if study is None:
        return None
    try:
        settings = best_settings(study)
    except EDMInputError as error:
        return str(error)
    return {"settings": settings.as_dict(), "value": study.best_value}


def main(argv: Sequence[str] | None = None) -> list[BudgetResult]:
    """Command line entry point. A mistake in the arguments or the inputs prints one line and exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    with reported_errors(parser.prog, main_process_only=True):
        results = run(args, argv)
    leave_process_group()
    return results


def cli() -> None:
    """The `edm-tune` console script."""
    main()


if __name__ == "__main__":
    main()
