# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The sampler settings the tuner searches (the paper's Table 5 knobs, the scheduler family, guidance), the step count
each family can take under a budget of network evaluations, and the reference settings every tuning is compared with.

A budget counts evaluations of the main network per image (as the papers' NFE): EDM's Heun sampler takes N steps for
2N − 1 evaluations, diffusers' Euler and DPM-Solver++ 2M one per step. Guidance adds the guide's evaluations on top
(inside its interval), as the papers count them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EDMInputError
from ..sampler_presets import PAPER_SCHEDULE

FAMILIES = ("heun", "euler", "dpmpp-2m")
"""Scheduler families the tuner chooses from (`diffusers_edm.pipelines.scheduler_families.SCHEDULERS_BY_NAME`)."""



@dataclass(frozen=True)
class SearchRanges:
    """Bounds of the search (log-uniform where the quantity is a scale).

    Attributes:
        rho (`tuple`), sigma_min (`tuple`), sigma_max (`tuple`): the schedule (Eq. 5).
        s_churn (`tuple`), s_tmin (`tuple`), s_tmax (`tuple`), s_noise (`tuple`): Algorithm 2's stochasticity (Heun).
        guidance_scale (`tuple`): the guidance weight w when the model can be guided.
        interval (`tuple`): where a guidance interval's ends may lie.
        std (`tuple`): σ_rel of a post-hoc EMA, the model's or the guide's (runs with snapshots; log-uniform).
    """

    rho: tuple[float, float] = (2.0, 12.0)
    sigma_min: tuple[float, float] = (0.0005, 0.05)
    sigma_max: tuple[float, float] = (10.0, 200.0)
    s_churn: tuple[float, float] = (0.5, 80.0)
    s_tmin: tuple[float, float] = (0.005, 1.0)
    s_tmax: tuple[float, float] = (1.0, 80.0)
    s_noise: tuple[float, float] = (1.0, 1.01)
    guidance_scale: tuple[float, float] = (1.0, 4.0)
    interval: tuple[float, float] = (0.01, 80.0)
    std: tuple[float, float] = (0.03, 0.25)


@dataclass(frozen=True)
class SamplerSettings:
    """One point of the search: what the pipeline is called with.

    Attributes:
        scheduler (`str`): one of [`FAMILIES`].
        num_inference_steps (`int`): steps N (from the budget).
        rho (`float`), sigma_min (`float`), sigma_max (`float`): the schedule.
        s_churn (`float`), s_tmin (`float`), s_tmax (`float`, *optional*), s_noise (`float`): Heun's churn (S_churn 0:
            deterministic; `s_tmax` None is ∞).
        guidance_scale (`float`): w (1: no guidance).
        guidance_interval (`tuple`, *optional*): (σ_lo, σ_hi) of guidance.
        std (`float`, *optional*): σ_rel of the post-hoc EMA weights (`None`: the weights the model was saved with).
        guide_std (`float`, *optional*): the same for the guide network.
    """

    scheduler: str
    num_inference_steps: int
    rho: float
    sigma_min: float
    sigma_max: float
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float | None = None
    s_noise: float = 1.0
    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    std: float | None = None
    guide_std: float | None = None

    def scheduler_overrides(self) -> dict[str, Any]:
        """The scheduler config values of these settings (churn only for EDM's Heun sampler)."""
        overrides = {"rho": self.rho, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
        if self.scheduler == "heun":
            overrides.update(s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise)
        return overrides

    def call_kwargs(self) -> dict[str, Any]:
        """The pipeline-call arguments of these settings."""
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "guidance_interval": self.guidance_interval}

    @property
    def evaluations(self) -> int:
        """Evaluations of the main network per image."""
        return evaluations(self.scheduler, self.num_inference_steps)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON values (the inverse of [`from_dict`])."""
        values = asdict(self)
        values["guidance_interval"] = list(self.guidance_interval) if self.guidance_interval else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplerSettings:
        interval = values.get("guidance_interval")
        return cls(**{**values, "guidance_interval": None if interval is None else tuple(interval)})

    def describe(self) -> str:
        """The settings in one line."""
        text = (f"{self.scheduler} {self.num_inference_steps} steps ({self.evaluations} NFE), ρ {self.rho:.3g}, σ"
                f" {self.sigma_min:.3g}–{self.sigma_max:.4g}")
        if self.s_churn:
            tmax = "∞" if self.s_tmax is None else f"{self.s_tmax:.3g}"
            text += f", S_churn {self.s_churn:.3g} on [{self.s_tmin:.3g}, {tmax}], S_noise {self.s_noise:.4g}"
        if self.guidance_scale != 1:
            text += f", guidance w {self.guidance_scale:.3g}"
            if self.guidance_interval:
                text += f" on ({self.guidance_interval[0]:.3g}, {self.guidance_interval[1]:.3g}]"
        if self.std is not None:
            text += f", post-hoc EMA σ_rel {self.std:.3f}"
        if self.guide_std is not None:
            text += f", guide's σ_rel {self.guide_std:.3f}"
        return text


def evaluations(scheduler: str, steps: int) -> int:
    """Network evaluations of N steps: 2N − 1 for EDM's Heun sampler, N for the one-evaluation-per-step samplers."""
    return 2 * steps - 1 if scheduler == "heun" else steps


def steps_for_budget(scheduler: str, nfe: int) -> int:
    """The most steps a family can take within `nfe` evaluations (at least one)."""
    return (nfe + 1) // 2 if scheduler == "heun" else nfe


def families_for_budget(nfe: int, families: tuple[str, ...] = FAMILIES) -> tuple[str, ...]:
    """The families that can use the budget: a multistep solver needs 2 steps, Heun 2 steps (3 evaluations) to be
    more than Euler.

    Raises:
        EDMInputError: no family can run `nfe` evaluations.
    """
    if nfe < 1:
        raise EDMInputError(f"--nfe {nfe}: every sampler needs at least 1 network evaluation per image.")
    usable = tuple(f for f in families if not (f == "dpmpp-2m" and nfe < 2) and not (f == "heun" and nfe < 3))
    if not usable:
        raise EDMInputError(f"--nfe {nfe} is below what the samplers {', '.join(families)} can use; allow euler or"
                            " raise --nfe.")
    return usable


@dataclass(frozen=True)
class SearchContext:
    """What the model allows to search.

    Attributes:
        nfe (`int`): the budget.
        families (`tuple[str, ...]`): the scheduler families to try.
        guidable (`bool`): the model can be guided (a guide network, or classifier-free guidance of a conditional
            model).
        stochastic (`bool`): also search Heun's churn (otherwise only deterministic samplers).
        phema (`bool`): the model is a run with post-hoc EMA snapshots: also search σ_rel.
        guide_phema (`bool`): the same for the guide (autoguidance's guide EMA length, Karras et al. 2024b).
        ranges (`SearchRanges`): the bounds.
    """

    nfe: int
    families: tuple[str, ...]
    guidable: bool = False
    stochastic: bool = True
    phema: bool = False
    guide_phema: bool = False
    ranges: SearchRanges = field(default_factory=SearchRanges)


def suggest(trial, context: SearchContext) -> SamplerSettings:
    """The settings an Optuna `trial` proposes within `context` (TPE samples them; conditional parameters only exist
    when they apply, e.g. churn for Heun, the interval with guidance)."""
    r = context.ranges
    scheduler = trial.suggest_categorical("scheduler", list(context.families))
    values: dict[str, Any] = {
        "scheduler": scheduler, "num_inference_steps": steps_for_budget(scheduler, context.nfe),
        "rho": trial.suggest_float("rho", *r.rho),
        "sigma_min": trial.suggest_float("sigma_min", *r.sigma_min, log=True),
        "sigma_max": trial.suggest_float("sigma_max", *r.sigma_max, log=True),
    }
    if scheduler == "heun" and context.stochastic and trial.suggest_categorical("stochastic", [False, True]):
        values["s_churn"] = trial.suggest_float("s_churn", *r.s_churn, log=True)
        values["s_tmin"] = trial.suggest_float("s_tmin", *r.s_tmin, log=True)
        values["s_tmax"] = trial.suggest_float("s_tmax", *r.s_tmax, log=True)
        values["s_noise"] = trial.suggest_float("s_noise", *r.s_noise)
    if context.guidable:
        values["guidance_scale"] = trial.suggest_float("guidance_scale", *r.guidance_scale)
        if trial.suggest_categorical("interval", [False, True]):  # two fixed ranges, so that TPE can model them
            ends = (trial.suggest_float("interval_low", r.interval[0], r.interval[1], log=True),
                    trial.suggest_float("interval_high", r.interval[0], r.interval[1], log=True))
            if ends[0] != ends[1]:
                values["guidance_interval"] = (min(ends), max(ends))
    if context.phema:  # three decimals, as snapshot names (and consecutive trials may share a reconstruction)
        values["std"] = round(trial.suggest_float("std", *r.std, log=True), 3)
    if context.guide_phema:
        values["guide_std"] = round(trial.suggest_float("guide_std", *r.std, log=True), 3)
    return SamplerSettings(**values)


def trial_params(settings: SamplerSettings, context: SearchContext) -> dict[str, Any] | None:
    """The Optuna parameters under which [`suggest`] proposes `settings` (to enqueue them as trials), or `None` when
    they lie outside the search (another family, a value beyond the ranges)."""
    r = context.ranges
    params: dict[str, Any] = {"scheduler": settings.scheduler, "rho": settings.rho, "sigma_min": settings.sigma_min,
                              "sigma_max": settings.sigma_max}
    if settings.s_churn and not context.stochastic:
        return None
    if settings.scheduler == "heun" and context.stochastic:
        params["stochastic"] = bool(settings.s_churn)
        if settings.s_churn:
            tmax = r.s_tmax[1] if settings.s_tmax is None else settings.s_tmax
            params.update(s_churn=settings.s_churn, s_tmin=settings.s_tmin, s_tmax=tmax, s_noise=settings.s_noise)
    if context.guidable:
        params["guidance_scale"] = settings.guidance_scale
        params["interval"] = settings.guidance_interval is not None
        if settings.guidance_interval is not None:
            params["interval_low"], params["interval_high"] = settings.guidance_interval
    elif settings.guidance_scale != 1:
        return None
    for name in ("std", "guide_std"):
        if getattr(settings, name) is not None:
            params[name] = getattr(settings, name)
    bounds = {"rho": r.rho, "sigma_min": r.sigma_min, "sigma_max": r.sigma_max, "s_churn": r.s_churn,
              "s_tmin": r.s_tmin, "s_tmax": r.s_tmax, "s_noise": r.s_noise, "guidance_scale": r.guidance_scale,
              "interval_low": r.interval, "interval_high": r.interval, "std": r.std, "guide_std": r.std}
    inside = all(bounds[key][0] <= value <= bounds[key][1] for key, value in params.items() if key in bounds)
    fits = (inside and settings.scheduler in context.families and (settings.std is None or context.phema)
            and (settings.guide_std is None or context.guide_phema))
    return params if fits else None


def paper_settings(nfe: int) -> SamplerSettings:
    """The paper's deterministic sampler at the budget: Heun, ρ 7 on [0.002, 80] (EDM's README settings for
    CIFAR-10, FFHQ and AFHQ)."""
    return SamplerSettings("heun", steps_for_budget("heun", nfe), rho=PAPER_SCHEDULE["rho"],
                           sigma_min=PAPER_SCHEDULE["sigma_min"], sigma_max=PAPER_SCHEDULE["sigma_max"])


def current_settings(scheduler_name: str, scheduler_config: dict, nfe: int, guidance_scale: float = 1.0,
                     guidance_interval: tuple[float, float] | None = None) -> SamplerSettings:
    """The model's own saved settings (scheduler, its config, the pipeline's guidance) at the budget."""
    tmax = scheduler_config.get("s_tmax")
    return SamplerSettings(
        scheduler=scheduler_name, num_inference_steps=steps_for_budget(scheduler_name, nfe),
        rho=float(scheduler_config["rho"]), sigma_min=float(scheduler_config["sigma_min"]),
        sigma_max=float(scheduler_config["sigma_max"]),
        s_churn=float(scheduler_config.get("s_churn", 0.0) or 0.0) if scheduler_name == "heun" else 0.0,
        s_tmin=float(scheduler_config.get("s_tmin", 0.0) or 0.0) if scheduler_name == "heun" else 0.0,
        s_tmax=None if tmax is None or (isinstance(tmax, float) and math.isinf(tmax)) else float(tmax),
        s_noise=float(scheduler_config.get("s_noise", 1.0) or 1.0) if scheduler_name == "heun" else 1.0,
        guidance_scale=float(guidance_scale),
        guidance_interval=tuple(guidance_interval) if guidance_interval else None,
    )
