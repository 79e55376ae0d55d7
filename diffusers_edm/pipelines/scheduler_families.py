# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""How [`EDMPipeline`] drives each family of schedulers: which noise levels it evaluates its denoiser at, what it hands
the scheduler (D itself, EDM's raw network output F, or a σ-space ε / v), and the evaluation plan of a run, laid out
before the loop so that the loop never synchronises with the device."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from diffusers.schedulers import (
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..preconditioning import edm_preconditioning
from ..schedulers.scheduling_edm_ablation import EDMAblationScheduler
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler


class SchedulerFamily(NamedTuple):
    """How [`EDMPipeline`] drives the schedulers of one family: what it feeds its denoiser and hands to `step`."""

    schedulers: tuple[type[SchedulerMixin], ...]
    edm_sampler: bool
    """EDM's own samplers: the official noise stream, the network's σ range and `round_sigma`, custom `sigmas`, a
    float64 state."""
    preconditioned: bool
    """The model outputs it takes are EDM's (the raw network F of Eq. 7, with the scheduler's σ_data); otherwise those
    of diffusers' σ-space schedulers (ε, v of x = y + σ n)."""
    variance_preserving: bool
    """Its sample is x / √(σ² + 1) (DPM-Solver's state) instead of x itself."""
    prediction_types: tuple[str, ...]
    """The `prediction_type`s it can run."""
    takes_denoised: bool = False
    """Its `step` accepts the denoised estimate itself (`pred_original_sample`), so it runs `prediction_type="sample"`
    although its own preconditioning does not implement it."""


SCHEDULER_FAMILIES = (
    SchedulerFamily((EDMHeunScheduler, EDMAblationScheduler), edm_sampler=True, preconditioned=True,
                    variance_preserving=False, prediction_types=("sample", "epsilon", "v_prediction")),
    SchedulerFamily((EDMEulerScheduler,), edm_sampler=False, preconditioned=True, variance_preserving=False,
                    prediction_types=("sample", "epsilon", "v_prediction"), takes_denoised=True),
    SchedulerFamily((EDMDPMSolverMultistepScheduler,), edm_sampler=False, preconditioned=True,
                    variance_preserving=False, prediction_types=("epsilon", "v_prediction")),
    SchedulerFamily((EulerDiscreteScheduler, HeunDiscreteScheduler), edm_sampler=False, preconditioned=False,
                    variance_preserving=False, prediction_types=("sample", "epsilon", "v_prediction")),
    SchedulerFamily((DPMSolverMultistepScheduler,), edm_sampler=False, preconditioned=False, variance_preserving=True,
                    prediction_types=("sample", "epsilon", "v_prediction")),
)
"""The schedulers [`EDMPipeline`] runs (the `_compatibles` of [`EDMHeunScheduler`] and [`EDMAblationScheduler`])."""

SUPPORTED_SCHEDULERS = tuple(cls.__name__ for family in SCHEDULER_FAMILIES for cls in family.schedulers)

SCHEDULERS_BY_NAME: dict[str, type[SchedulerMixin]] = {
    "heun": EDMHeunScheduler,
    "euler": EDMEulerScheduler,
    "dpmpp-2m": EDMDPMSolverMultistepScheduler,
}
"""Short names of the EDM-family schedulers for the command lines (`--scheduler`): EDM's sampler (Algorithm 2; N steps
are 2N − 1 evaluations, or N with its `solver="euler"`), and diffusers' Euler and DPM-Solver++ 2M on EDM's schedule
(one evaluation per step)."""

SIGMA_RANGE_TOLERANCE = 1e-6
"""Relative slack of the check that a scheduler's σ lie in the network's range: diffusers' schedulers hold σ in float32,
so a range end configured exactly (e.g. sigma_min=0.02 for a VE network) may be off by an ulp."""


class PlannedEvaluation(NamedTuple):
    """One model evaluation of a run, laid out before the loop starts (so the loop needs no host synchronisation)."""

    sigma: float  # the scheduler's noise level σ of this evaluation
    input_scale: float  # the denoiser's input is x = input_scale · sample (√(σ² + 1) for a variance-preserving state)
    output_coefficients: tuple[float, float] | None  # the scheduler's model output is a D + b x; None: D itself
    guided: bool  # whether guidance applies at this σ (inside the guidance interval)


def scheduler_family(scheduler: SchedulerMixin) -> SchedulerFamily:
    """The family of a scheduler that [`EDMPipeline`] runs; a `ValueError` naming the schedulers it runs when it
    cannot run this one (another class, a `prediction_type` the scheduler cannot execute, flow-matching sigmas)."""
    name = type(scheduler).__name__
    family = next((f for f in SCHEDULER_FAMILIES if isinstance(scheduler, f.schedulers)), None)
    if family is None:
        raise ValueError(
            f"EDMPipeline cannot run a {name}: it needs a scheduler that works on noise levels σ of x = y + σ n, one"
            f" of {', '.join(SUPPORTED_SCHEDULERS)}; e.g. pipe.scheduler ="
            " EDMHeunScheduler.from_config(pipe.scheduler.config)."
        )
    prediction_type = scheduler.config.get("prediction_type")
    if prediction_type not in family.prediction_types:
        running_it = [cls.__name__ for f in SCHEDULER_FAMILIES if prediction_type in f.prediction_types
                      for cls in f.schedulers]
        raise ValueError(
            f"The {name} cannot run prediction_type={prediction_type!r}; EDMPipeline converts its denoiser's output to"
            f" any of {', '.join(map(repr, family.prediction_types))} for it, e.g. pipe.scheduler ="
            f" {name}.from_config(pipe.scheduler.config, prediction_type='epsilon')."
            + (f" Schedulers that run prediction_type={prediction_type!r}: {', '.join(running_it)}." if running_it
               else "")
        )
    if scheduler.config.get("use_flow_sigmas"):
        raise ValueError(
            f"The {name} uses flow-matching sigmas (use_flow_sigmas=True), which are not noise levels of x = y + σ n;"
            " use use_flow_sigmas=False (e.g. with use_karras_sigmas=True)."
        )
    return family


def model_output_coefficients(
    sigma: torch.Tensor, prediction_type: str, preconditioned: bool, sigma_data: float | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """
    The coefficients (a, b) with which the model output a scheduler expects is a D + b x, given the denoised
    estimate D = D(x; σ) of the noisy image x = y + σ n; `None` for "sample", which is D itself.

    With EDM's parameterisation (`preconditioned`, Eq. 7 with the scheduler's σ_data) "epsilon" is the raw network
    output F = (D − c_skip x) / c_out and "v_prediction" is −F, so that the scheduler's c_skip x + c_out F is D. In the
    σ-space parameterisation of diffusers' discrete schedulers "epsilon" is ε = (x − D) / σ and "v_prediction" is
    v = (x / (σ² + 1) − D) √(σ² + 1) / σ (the v of the variance-preserving x / √(σ² + 1)).

    Args:
        sigma (`torch.Tensor`): noise levels σ > 0 (float64); a and b have their shape.
        prediction_type (`str`): "sample", "epsilon" or "v_prediction".
        preconditioned (`bool`): EDM's parameterisation (else the σ-space one).
        sigma_data (`float`, *optional*): the scheduler's σ_data (EDM's parameterisation).
    """
    if prediction_type == "sample":
        return None
    if preconditioned:
        precond = edm_preconditioning(sigma, sigma_data)
        sign = -1.0 if prediction_type == "v_prediction" else 1.0
        return sign / precond.c_out, -sign * precond.c_skip / precond.c_out
    if prediction_type == "epsilon":
        return -1 / sigma, 1 / sigma
    root = (sigma**2 + 1).sqrt()
    return -root / sigma, 1 / (sigma * root)


def plan_evaluations(
    family: SchedulerFamily, scheduler: SchedulerMixin, sigmas: torch.Tensor, interval: tuple[float, float] | None
) -> list[PlannedEvaluation]:
    """The model evaluations of a run at the scheduler's noise levels `sigmas` (one per timestep): the denoiser's
    input scale, the output conversion (see [`model_output_coefficients`]) and whether guidance applies (σ in the
    guidance `interval`, `None` when guidance is off)."""
    sigmas = sigmas.to(torch.float64)
    config = scheduler.config
    coefficients = model_output_coefficients(sigmas, config.prediction_type, family.preconditioned,
                                             config.get("sigma_data"))
    coefficients = [None] * len(sigmas) if coefficients is None else list(zip(*(c.tolist() for c in coefficients)))
    scales = (sigmas**2 + 1).sqrt().tolist() if family.variance_preserving else [1.0] * len(sigmas)
    low, high = interval or (math.inf, math.inf)
    return [
        PlannedEvaluation(sigma, scale, output, low < sigma <= high)
        for sigma, scale, output in zip(sigmas.tolist(), scales, coefficients)
    ]
