# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""One Optuna study per budget of network evaluations: TPE proposes sampler settings, each trial is scored on the
tuning seeds, and a trial whose distance on the first images is worse than the median of the earlier trials at that
point is pruned before the rest are generated. The study lives in a journal file, so an interrupted tuning continues
where it stopped.

With several processes, only the main process talks to Optuna: it asks for a trial and broadcasts the settings, all
processes generate and score their share of the images (the statistics are summed exactly, so W processes give the
numbers of one), and the main process reports the distance and broadcasts whether to prune.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from ..errors import EDMInputError
from .scoring import SettingsScorer
from .space import SamplerSettings, SearchContext, suggest, trial_params

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

PRUNER_STARTUP_TRIALS = 5
"""Trials scored in full before pruning starts (the median needs a few to mean something)."""


def open_study(journal: Path, name: str, settings: dict[str, Any], seed: int) -> optuna.Study:
    """
    The study `name` of the journal file (created, or loaded to continue), with a seeded TPE sampler and a median
    pruner. A running trial left by an interrupted process is marked failed (it is proposed again).

    Args:
        journal (`Path`): the journal file.
        name (`str`): the study's name (one per budget).
        settings (`dict`): what the study's numbers depend on (model, reference, detector, seeds, ...): recorded
            when it is created and compared when it continues.
        seed (`int`): seed of the TPE sampler.

    Raises:
        EDMInputError: the journal holds this study with other settings.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # `group` (TPE over the settings that exist together) is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(
        study_name=name, storage=storage, direction="minimize", load_if_exists=True, sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
    )
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", settings)
    elif recorded != settings:
        changed = sorted(key for key in {*recorded, *settings} if recorded.get(key) != settings.get(key))
        raise EDMInputError(f"{journal} holds a tuning of {name} with other {', '.join(changed)}; continue it with the"
                            " same flags, or choose another --out.")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study


def finished_trials(study: optuna.Study) -> int:
    """Trials that ended: complete, pruned, or failed on their settings (which records an "error"); a trial left
    running by an interrupted tuning is failed without one and does not count."""
    return sum(trial.state != optuna.trial.TrialState.FAIL or "error" in trial.user_attrs
               for trial in study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: optuna.Study | None, scorer: SettingsScorer, context: SearchContext, seeds: Sequence[int],
               prune_at: int, trials: int, state: PartialState, starts: Sequence[SamplerSettings] = ()) -> None:
    """
    Runs trials until `trials` have finished.

    Args:
        study (`optuna.Study`, *optional*): the study (main process; `None` elsewhere).
        scorer (`SettingsScorer`): scores settings on images.
        context (`SearchContext`): what may be searched.
        seeds (`Sequence[int]`): the tuning seeds, the objective's image set.
        prune_at (`int`): images scored before the pruning decision (0: never prune).
        trials (`int`): total trials of the study.
        state (`PartialState`): the processes.
        starts (`Sequence[SamplerSettings]`): settings tried first (e.g. the paper's and the model's), when the study
            is new and they lie inside the search.
    """
    done = [finished_trials(study) if study is not None else 0]
    broadcast_object_list(done)
    if study is not None and done[0] == 0 and not study.get_trials(deepcopy=False):
        for settings in starts:
            params = trial_params(settings, context)
            if params is not None:
                study.enqueue_trial(params, skip_if_exists=True)
    progress = tqdm(total=trials, initial=min(done[0], trials), unit="trial", desc=f"Tuning {context.nfe} NFE",
                    dynamic_ncols=True, disable=not state.is_main_process)
    _show_best(progress, study)
    for _ in range(max(trials - done[0], 0)):
        trial = study.ask() if study is not None else None
        proposal = [suggest(trial, context).as_dict() if trial is not None else None]
        broadcast_object_list(proposal)
        settings = SamplerSettings.from_dict(proposal[0])
        if trial is not None:
            trial.set_user_attr("settings", proposal[0])
        outcome = _score_trial(trial, scorer, settings, list(seeds), prune_at, state)
        if study is not None:
            if outcome[0] == "complete":
                study.tell(trial, outcome[1])
            else:
                if outcome[0] == "fail":
                    trial.set_user_attr("error", outcome[1])
                study.tell(trial, state=optuna.trial.TrialState.PRUNED if outcome[0] == "pruned"
                           else optuna.trial.TrialState.FAIL)
        progress.update(1)
        _show_best(progress, study)
    progress.close()


def _score_trial(trial: optuna.Trial | None, scorer: SettingsScorer, settings: SamplerSettings, seeds: list[int],
                 prune_at: int, state: PartialState) -> tuple[str, Any]:
    """("complete", distance), ("pruned", None) or ("fail", reason), the same in every process."""
    try:
        if 0 < prune_at < len(seeds):
            statistics = scorer.statistics(settings, seeds[:prune_at])
            early = scorer.distance(statistics)
            decision = [None]
            if trial is not None:
                trial.report(early if math.isfinite(early) else math.inf, step=prune_at)
                decision = [trial.should_prune()]
            broadcast_object_list(decision)
            if decision[0]:
                return "pruned", None
            statistics.absorb(scorer.statistics(settings, seeds[prune_at:]))
        else:
            statistics = scorer.statistics(settings, seeds)
        value = scorer.distance(statistics)
    except EDMInputError:  # a mistake in the inputs (e.g. the detector), not in the trial's settings
        raise
    except ValueError as error:  # settings the model cannot sample with (e.g. σ outside its range)
        return "fail", str(error).splitlines()[0]
    if not math.isfinite(value):
        return "fail", "the images were not finite"
    return "complete", value


def _show_best(progress: tqdm, study: optuna.Study | None) -> None:
    if study is None:
        return
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        progress.set_postfix(best=f"{min(t.value for t in complete):.4g}")


def best_settings(study: optuna.Study | None) -> SamplerSettings | None:
    """The settings of the study's best complete trial (`None` on other processes)."""
    if study is None:
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise EDMInputError("No trial of the tuning completed (every one failed or was pruned); see tuning.json for"
                            " the errors, and widen the search or check the model.")
    return SamplerSettings.from_dict(min(complete, key=lambda t: t.value).user_attrs["settings"])
