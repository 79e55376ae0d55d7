# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""What EDM's samplers (Karras et al. 2022, Algorithms 1 and 2) share as diffusers schedulers: the sampling loop over
a precomputed list of model evaluations, the churn noise of Algorithm 2 (lines 5–6) with EDM's official random
stream, and the validation of settings and custom noise levels."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .sigma_schedule import churn_gammas

SOLVERS = ("heun", "euler")

TensorFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EDMSchedulerOutput(BaseOutput):
    """
    Output of the `step` of EDM's schedulers ([`EDMHeunScheduler`], [`EDMAblationScheduler`]).

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample to feed to the model at the next timestep, or the final sample after the last step.
        pred_original_sample (`torch.Tensor` of the same shape):
            The denoised estimate of this model evaluation.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class EDMSchedulerBase(SchedulerMixin, ConfigMixin):
    """
    The diffusers sampling loop of EDM's schedulers (`x = randn * init_noise_sigma`; for each `t` in `timesteps`:
    `scale_model_input`, model, `step(...).prev_sample`), for samplers whose model evaluations are all known in
    advance.

    A subclass gives the step levels of its schedule (`_schedule`), lays out the evaluations of a run on them
    (`_build_evaluations`, which stores them with `_store_evaluations`) and does one evaluation's solver arithmetic
    (`_solver_step`); it provides `index_for_timestep`, `scale_model_input` and its own `register_to_config`
    `__init__`, which ends with `_start_schedule`. Each evaluation is a `NamedTuple` with at least the fields
    `sigma` (the level the model is evaluated at), `is_correction`, `finishes_step` (whether it completes x_{i+1}),
    `next_rescale` (s(t̂_{i+1}) / s(t_{i+1}), 1 without scaling), `next_churn_scale` and `draws_noise`. This class
    keeps the step index, adds the churn noise of step i + 1 once x_{i+1} is complete (so the model sees the churned
    sample x̂ as in Algorithm 2), and draws that noise as EDM's `generate.py` does when
    `set_timesteps(..., official_noise_stream=True)`.
    """

    order = 2
    _output_class: type[EDMSchedulerOutput] = EDMSchedulerOutput

    def _start_schedule(self, num_train_timesteps: int) -> None:
        """Ends a subclass's `__init__`: the `order` of the configured solver (2 for "heun", 1 for "euler") and the
        schedule of `num_train_timesteps` steps held until `set_timesteps` is called."""
        self.order = 2 if self.config.solver == "heun" else 1
        self.set_timesteps(num_train_timesteps)
        self.num_inference_steps = None

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial sample x̂_0 of the loop (`x = randn * init_noise_sigma`)."""
        return self._init_noise_sigma

    @property
    def step_index(self) -> int | None:
        """Index of the current model evaluation in `timesteps`; increases by one after each `step`."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Index of the first evaluation, set by pipelines with `set_begin_index` (e.g. image-to-image)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Sets the index of the first evaluation; call it before the loop to start part-way through the schedule."""
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | torch.Tensor | None = None,
        net_sigma_min: float = 0.0,
        net_sigma_max: float = math.inf,
        round_sigma: Callable[[torch.Tensor], torch.Tensor] | None = None,
        official_noise_stream: bool = False,
    ) -> None:
        """
        Lays out the model evaluations of an N-step run (call before the sampling loop); each scheduler documents
        the arguments.
        """
        schedule = self._schedule(net_sigma_min, net_sigma_max)
        step_sigmas = _step_sigmas(num_inference_steps, sigmas, schedule)
        self._build_evaluations(step_sigmas, round_sigma or _unrounded, official_noise_stream)
        self.num_inference_steps = len(step_sigmas)
        self._official_noise_stream = official_noise_stream
        timesteps = self._timesteps_for(self.sigmas[:-1])
        if device is not None and torch.device(device).type == "mps":
            timesteps = timesteps.to(torch.float32)  # MPS has no float64
        self.timesteps = timesteps.to(device)
        self._step_index = None
        self._begin_index = None
        self._corrector_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def _schedule(self, net_sigma_min: float, net_sigma_max: float) -> Callable[[int], torch.Tensor]:
        """The step levels N ↦ σ_0 > … > σ_{N−1} (float64, before `round_sigma`) of the configured schedule, within
        the noise range the network supports."""
        raise NotImplementedError

    def _build_evaluations(
        self, step_sigmas: torch.Tensor, round_sigma: TensorFunction, official_noise_stream: bool
    ) -> None:
        """Lays out the evaluations of a run on the step levels σ_0 … σ_{N−1}: calls `_store_evaluations` and sets
        `_init_noise_sigma`, `_initial_rescale` and `_initial_churn_scale` (step 0's rescaling and churn, applied by
        `add_initial_churn` in the official noise stream)."""
        raise NotImplementedError

    def _timesteps_for(self, levels: torch.Tensor) -> torch.Tensor:
        """`timesteps` for the evaluation levels σ: the levels themselves."""
        return levels

    def _store_evaluations(self, evaluations: list[Any]) -> None:
        """Keeps the run's evaluations and exposes their levels as `sigmas` (float64, with a final 0)."""
        self._evaluations = evaluations
        self.sigmas = torch.tensor([e.sigma for e in evaluations] + [0.0], dtype=torch.float64)

    def _churn_gammas(self, step_sigmas: torch.Tensor) -> torch.Tensor:
        """γ_i = min(S_churn / N, √2 − 1) for σ_i in [S_tmin, S_tmax], else 0 (Algorithm 2), from the config."""
        config = self.config
        s_tmax = math.inf if config.s_tmax is None else config.s_tmax
        return churn_gammas(step_sigmas, config.s_churn, config.s_tmin, s_tmax)

    def index_for_timestep(self, timestep: float | torch.Tensor) -> int:
        """Index in `timesteps` of the evaluation a run reaching `timestep` continues with."""
        raise NotImplementedError

    def _timestep_positions(
        self,
        timestep: float | torch.Tensor,
        schedule_timesteps: torch.Tensor,
        described_as: str,
        usable: Callable[[int], bool] | None = None,
    ) -> list[int]:
        """The positions of `timestep` in `schedule_timesteps` (those for which `usable` holds); a `ValueError` that
        says the timestep is not `described_as` when there is none."""
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(schedule_timesteps.device, schedule_timesteps.dtype)
        positions = (schedule_timesteps == timestep).nonzero().flatten().tolist()
        if usable is not None:
            positions = [k for k in positions if usable(k)]
        if not positions:
            raise ValueError(
                f"timestep {timestep!r} is not {described_as}; pass the values of `scheduler.timesteps` in order"
                " (after `set_timesteps`)."
            )
        return positions

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> EDMSchedulerOutput | tuple:
        """
        Advances the sampler by one model evaluation; each scheduler documents its arithmetic and the arguments.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        if self._step_index >= len(self._evaluations):
            raise ValueError(
                f"step() was called {self._step_index + 1} times but the schedule has only {len(self._evaluations)}"
                " evaluations; call set_timesteps() before starting a new run."
            )
        evaluation = self._evaluations[self._step_index]
        prev_sample, denoised = self._solver_step(evaluation, model_output, sample)
        if evaluation.finishes_step:
            prev_sample = self._rescale_and_churn(
                prev_sample, evaluation.next_rescale, evaluation.next_churn_scale, evaluation.draws_noise, generator
            )
        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return self._output_class(prev_sample=prev_sample, pred_original_sample=denoised)

    def _solver_step(
        self, evaluation: Any, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The solver arithmetic of `evaluation` (the current one): `(x, D)`, where x is x_{i+1} before its rescaling
        and churn when the evaluation finishes step i, else the point of the next (correction) evaluation, and D is
        the denoised estimate in the dtype of `sample`."""
        raise NotImplementedError

    def add_initial_churn(
        self, sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """
        Rescales and churns the initial sample x_0 into x̂_0 (step 0 of Algorithm 2) when the official noise stream
        is in use; otherwise this is already part of `init_noise_sigma` and the sample is returned unchanged.
        """
        if not self._official_noise_stream:
            return sample
        return self._rescale_and_churn(sample, self._initial_rescale, self._initial_churn_scale, True, generator)

    def _rescale_and_churn(
        self,
        sample: torch.Tensor,
        rescale: float,
        churn_scale: float,
        draws_noise: bool,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """x̂ = s(t̂)/s(t) · x + √max(σ(t̂)² − σ(t)², 0) s(t̂) S_noise ε (Algorithm 2, lines 5–6, with scaling).

        ε ~ N(0, I) is drawn when `draws_noise`, shaped like the sample; the official stream draws it in float64, one
        tensor per image (with a list of generators), also where `churn_scale` is 0.
        """
        if rescale != 1.0:
            sample = rescale * sample
        if draws_noise:
            dtype = torch.float64 if self._official_noise_stream else sample.dtype
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=dtype)
            if churn_scale > 0:
                sample = sample + churn_scale * noise.to(sample.dtype)
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def documented(member: Callable | property, docstring: str) -> Callable | property:
    """`member` (a method or property of [`EDMSchedulerBase`]) with a scheduler's own docstring: the same code and
    signature, documented with the arithmetic and arguments of that scheduler."""
    if isinstance(member, property):
        return property(member.fget, member.fset, member.fdel, docstring)

    @functools.wraps(member)
    def method(*args, **kwargs):
        return member(*args, **kwargs)

    method.__doc__ = docstring
    return method


def _step_sigmas(
    num_inference_steps: int | None,
    sigmas: list[float] | torch.Tensor | None,
    schedule: Callable[[int], torch.Tensor],
) -> torch.Tensor:
    """The step levels σ_0 > … > σ_{N−1} of a run (float64): the validated custom `sigmas` (a trailing 0 dropped),
    or else `schedule(N)` for N = `num_inference_steps`, an integer >= 1."""
    if sigmas is not None:
        step_sigmas = _check_custom_sigmas(sigmas)
        if num_inference_steps is not None and num_inference_steps != len(step_sigmas):
            raise ValueError(
                f"num_inference_steps={num_inference_steps} disagrees with the {len(step_sigmas)} custom sigmas;"
                " pass only one of them."
            )
        return step_sigmas
    if num_inference_steps is None or int(num_inference_steps) != num_inference_steps or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
    return schedule(int(num_inference_steps))


def _check_custom_sigmas(sigmas: list[float] | torch.Tensor) -> torch.Tensor:
    """Validates user noise levels and returns σ_0 … σ_{N-1} as float64 (a trailing 0 is dropped)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sigmas.ndim != 1 or len(sigmas) == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D list of noise levels, got shape {tuple(sigmas.shape)}.")
    if len(sigmas) > 1 and sigmas[-1] == 0:
        sigmas = sigmas[:-1]
    if not bool(torch.isfinite(sigmas).all()) or not bool((sigmas > 0).all()):
        raise ValueError(f"sigmas must be finite and > 0 (a final 0 may be appended), got {sigmas.tolist()}.")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must be strictly decreasing (σ_0 > σ_1 > …), got {sigmas.tolist()}.")
    return sigmas


def _unrounded(sigma: torch.Tensor) -> torch.Tensor:
    """The `round_sigma` of a network with continuous noise levels: the identity."""
    return sigma


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """A `ValueError` naming the allowed values when the setting `name` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}.")


def check_positive(name: str, value: float) -> None:
    """A `ValueError` when the setting `name` is not > 0."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def check_sigma_order(sigma_min: float, sigma_max: float) -> None:
    """A `ValueError` when the noise range is empty (σ_max <= σ_min)."""
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be larger than sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}.")


def check_churn(s_churn: float, s_tmin: float, s_tmax: float | None, s_noise: float) -> None:
    """Validates the churn settings of Algorithm 2: S_churn >= 0, 0 <= S_tmin <= S_tmax (None: ∞), S_noise > 0."""
    if not s_churn >= 0:
        raise ValueError(f"s_churn must be >= 0 (0 disables churn), got {s_churn}.")
    if not s_tmin >= 0:
        raise ValueError(f"s_tmin must be >= 0, got {s_tmin}.")
    if s_tmax is not None and not s_tmax >= s_tmin:
        raise ValueError(f"s_tmax must be >= s_tmin or None (meaning infinity), got s_tmin={s_tmin}, s_tmax={s_tmax}.")
    check_positive("s_noise", s_noise)
