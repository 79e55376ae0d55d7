# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""EDM's stochastic 2nd-order sampler (Karras et al. 2022, Algorithm 2) as a diffusers scheduler."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..preconditioning import EDM_SIGMA_DATA, edm_preconditioning
from .sigma_schedule import (
    REFERENCE_SAMPLERS,
    SOLVERS,
    check_choice,
    check_churn,
    check_num_inference_steps,
    check_positive,
    check_sigma_order,
    churn_gammas,
    clamp_to_network_range,
    custom_step_sigmas,
    first_predictor_index,
    karras_sigmas,
    noise_levels_for,
    rescale_and_churn,
    unrounded,
)

# Pipelines saved with this scheduler name this module in model_index.json, and diffusers finds how to load it by
# looking `SchedulerMixin` up here: it belongs to this module's public names.
__all__ = ["EDMHeunScheduler", "EDMHeunSchedulerOutput", "SchedulerMixin"]

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
TIMESTEP_TYPES = ("sigma", "c_noise")

C_NOISE_MATCH_TOLERANCE = 1e-6
"""How far a c_noise timestep given to `add_noise` may lie from an entry of `timesteps` and still name it: float32
c_noise values of the same σ computed in another order (e.g. by `EDMEulerScheduler`) differ by about 1e-7, while
distinct levels of a schedule lie much further apart (the exact entry is taken where several are this close)."""


@dataclass
class EDMHeunSchedulerOutput(BaseOutput):
    """
    Output of [`EDMHeunScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample to feed to the model at the next timestep (already churned when the next step adds noise), or
            the final sample after the last step.
        pred_original_sample (`torch.Tensor` of the same shape):
            The denoised estimate D(x; σ) of this model evaluation.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _HeunStage(NamedTuple):
    """One model evaluation of Algorithm 2 (of step i) and the noise levels it needs."""

    is_correction: bool  # False: Euler predictor at σ̂_i (line 8); True: Heun corrector at σ_{i+1} (line 11)
    sigma: float  # the level the model is evaluated at
    sigma_hat: float  # σ̂_i
    sigma_next: float  # σ_{i+1}
    finishes_step: bool  # whether this evaluation completes x_{i+1}
    next_churn_scale: float  # √(σ̂_{i+1}² − σ_{i+1}²) · S_noise, added to x_{i+1}; 0 when γ_{i+1} = 0 or i = N-1
    draws_noise: bool  # whether a noise tensor is drawn when this evaluation completes x_{i+1}


class EDMHeunScheduler(SchedulerMixin, ConfigMixin):
    """
    EDM's sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
    Algorithm 2): Heun's 2nd-order method on the probability-flow ODE with σ(t) = t and s(t) = 1, the ρ-schedule of
    Eq. 5, optional stochastic churn, and a final Euler step to σ = 0.

    It runs in the standard diffusers loop (`x = randn * init_noise_sigma`; for each `t` in `timesteps`:
    `scale_model_input`, model, `step(...).prev_sample`). As in [`HeunDiscreteScheduler`], every step but the last
    needs two model evaluations, so `timesteps` holds the 2N − 1 evaluations of N steps. Because γ_i depends only on
    σ_i, the churned levels σ̂_i are known in advance: `timesteps` and `sigmas` list the exact noise levels at which
    the model is evaluated, and `step` adds the churn noise of step i + 1 when it finishes step i, so the model sees
    the churned sample x̂ exactly as in Algorithm 2 (step 0's churn is folded into `init_noise_sigma`).

    Every setting is recorded as given (none is marked as a default in `config`), so a scheduler built from this
    config, e.g. `EDMEulerScheduler.from_config(scheduler.config)`, receives the paper's values rather than its own
    defaults (such as `prediction_type="epsilon"`), exactly as when the config is saved and loaded.

    Args:
        sigma_min (`float`, defaults to 0.002): smallest step level σ_{N-1} of the ρ-schedule.
        sigma_max (`float`, defaults to 80.0): largest step level σ_0.
        sigma_data (`float`, defaults to 0.5): data standard deviation σ_data, used for the preconditioning of raw
            networks (`prediction_type` "epsilon" or "v_prediction").
        rho (`float`, defaults to 7.0): exponent ρ of the schedule (Eq. 5).
        s_churn (`float`, defaults to 0.0): S_churn, total stochasticity; γ_i = min(S_churn / N, √2 − 1).
        s_tmin (`float`, defaults to 0.0): S_tmin, smallest σ_i that is churned (inclusive).
        s_tmax (`float`, *optional*): S_tmax, largest σ_i that is churned (inclusive); `None` means ∞.
        s_noise (`float`, defaults to 1.0): S_noise, scale of the churn noise.
        solver (`str`, defaults to "heun"): "heun" (2N − 1 evaluations) or "euler" (N evaluations).
        prediction_type (`str`, defaults to "sample"): what the model returns. "sample": the denoised D(x; σ), as
            [`EDMPreconditionedUNet2DModel`] does; then `scale_model_input` is the identity. "epsilon": EDM's raw
            network F (the meaning diffusers' [`EDMEulerScheduler`] gives it), preconditioned here with c_in in
            `scale_model_input` and c_skip, c_out in `step`. "v_prediction": the same with c_out negated.
        timestep_type (`str`, *optional*): what `timesteps` holds. "sigma": the noise levels themselves; "c_noise":
            ¼ ln σ, as [`EDMEulerScheduler`]. `None` picks "sigma" for `prediction_type="sample"`, else "c_noise".
        num_train_timesteps (`int`, defaults to 1000): number of steps of the schedule held before
            `set_timesteps` is called, and the value of `len(scheduler)`.
        reference_sampler (`str`, defaults to "edm"): the official generator whose random stream and precision
            [`EDMPipeline`] reproduces: "edm" (EDM's `generate.py`: a float64 state, one normal drawn at every step)
            or "edm2" (EDM2's `generate_images.py`: a float32 state, normals drawn at churned steps only).
    """

    # The schedulers EDMPipeline runs in this one's place (diffusers resolves only its own names in `compatibles`).
    _compatibles = [
        "EDMAblationScheduler",
        "EDMEulerScheduler",
        "EDMDPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "DPMSolverMultistepScheduler",
    ]
    order = 2

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = EDM_SIGMA_DATA,
        rho: float = 7.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        solver: str = "heun",
        prediction_type: str = "sample",
        timestep_type: str | None = None,
        num_train_timesteps: int = 1000,
        reference_sampler: str = "edm",
    ) -> None:
        _check_config(sigma_min, sigma_max, sigma_data, rho, s_churn, s_tmin, s_tmax, s_noise)
        check_choice("solver", solver, SOLVERS)
        check_choice("reference_sampler", reference_sampler, REFERENCE_SAMPLERS)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        if timestep_type is not None:
            check_choice("timestep_type", timestep_type, TIMESTEP_TYPES)
        if self.config.get("_use_default_values"):
            # diffusers lists the arguments left at their defaults here, and `from_config` of another class drops
            # them (so `EDMEulerScheduler.from_config(config)` would take its own "epsilon"). This scheduler's defaults
            # are the paper's settings: they travel with the config, as they do through the saved file.
            self.register_to_config(_use_default_values=[])
        # The class name travels with the live config, as it does through the saved file, so that another scheduler's
        # `from_config(scheduler.config)` knows where the EDM-only settings (s_churn, ...) come from and drops them
        # quietly (see `diffusers_edm.schedulers`).
        self.register_to_config(_class_name=type(self).__name__)
        self.order = 2 if solver == "heun" else 1
        self.set_timesteps(num_train_timesteps)
        self.num_inference_steps = None

    @classmethod
    def from_config(
        cls, config: dict | None = None, return_unused_kwargs: bool = False, **kwargs
    ) -> EDMHeunScheduler | tuple[EDMHeunScheduler, dict]:
        """Builds the scheduler from a config, as [`ConfigMixin.from_config`]. A config of another scheduler (e.g.
        diffusers' `EDMEulerScheduler`) keeps its values even where they were defaults there, so its raw-network
        `prediction_type="epsilon"` carries over instead of this class's "sample". A config that another scheduler
        was built from this one's holds this class's settings (diffusers keeps them, e.g. `s_churn`) and is read as
        usual, so the round trip gives the same scheduler back."""
        if config is not None and "s_churn" not in config:  # another scheduler's config
            config = {key: value for key, value in config.items() if key != "_use_default_values"}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @property
    def resolved_timestep_type(self) -> str:
        """The effective `timestep_type` ("sigma" or "c_noise") after resolving `None`."""
        if self.config.timestep_type is not None:
            return self.config.timestep_type
        return "sigma" if self.config.prediction_type == "sample" else "c_noise"

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial sample x̂_0: √(σ_0² + S_noise² (σ̂_0² − σ_0²)), i.e. σ_max without churn.

        Algorithm 2 draws x_0 ~ N(0, σ_0² I) and churns it to σ̂_0 with noise of scale S_noise; both are Gaussian, so
        one draw at this standard deviation is the same distribution. With `official_noise_stream` it is σ_0 and
        `add_initial_churn` adds step 0's churn.
        """
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
        Builds the noise levels of an N-step run (call before the sampling loop).

        Args:
            num_inference_steps (`int`, *optional*): number of sampler steps N ≥ 1 of the ρ-schedule (Eq. 5). The
                model is evaluated 2N − 1 times with "heun" and N times with "euler".
            device (`str` or `torch.device`, *optional*): device of `timesteps`; `sigmas` stay on the CPU.
            sigmas (`list[float]` or `torch.Tensor`, *optional*): the step levels σ_0 > … > σ_{N-1} > 0 to use
                instead of the ρ-schedule (noise levels, not ramp positions as in `EDMEulerScheduler`); a final 0 may
                be included. Churn is applied on top of them.
            net_sigma_min (`float`), net_sigma_max (`float`): the noise range the network supports (its
                preconditioning's); the ρ-schedule is clamped to it as the official sampler does (e.g. σ_min = 0.02
                for VE networks).
            round_sigma (`Callable`, *optional*): the network's `round_sigma` (iDDPM networks snap σ to their discrete
                levels); applied to the step levels and to the churned levels σ̂_i.
            official_noise_stream (`bool`, defaults to `False`): draw the churn noise exactly as the official generator
                of `reference_sampler` does, so per-image generators seeded like it reproduce its images (EDM: one
                normal per step, also where γ_i = 0; EDM2: one per churned step), with step 0's churn added by
                `add_initial_churn` instead of being folded into `init_noise_sigma` (which is then σ_0).
                [`EDMPipeline`] uses this mode.
        """
        config = self.config
        round_sigma = round_sigma or unrounded
        # 1. Step levels σ_0 > … > σ_{N−1}: the user's, or the ρ-schedule (Eq. 5) within the network's range.
        if sigmas is not None:
            step_sigmas = custom_step_sigmas(sigmas, num_inference_steps)
        else:
            num_steps = check_num_inference_steps(num_inference_steps)
            sigma_min, sigma_max = clamp_to_network_range(config.sigma_min, config.sigma_max, net_sigma_min,
                                                          net_sigma_max)
            step_sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, config.rho)
        num_steps = len(step_sigmas)
        step_sigmas = round_sigma(step_sigmas)

        # 2. Churned levels σ̂_i = round_sigma(σ_i + γ_i σ_i) (line 5, the same arithmetic as the official sampler) and
        # the scale √(σ̂_i² − σ_i²) S_noise of the noise that takes x_i to x̂_i (line 6).
        gammas = churn_gammas(step_sigmas, config.s_churn, config.s_tmin, config.s_tmax)
        sigma_hat = round_sigma(step_sigmas + gammas * step_sigmas).tolist()
        gammas, sigma = gammas.tolist(), step_sigmas.tolist() + [0.0]
        churn = [
            math.sqrt(sh**2 - s**2) * config.s_noise if g > 0 else 0.0 for s, sh, g in zip(sigma, sigma_hat, gammas)
        ] + [0.0]

        # 3. The model evaluations: step i's Euler predictor at σ̂_i (line 8) and, except for the last step or with the
        # "euler" solver, its correction at σ_{i+1} (line 11); the evaluation that completes x_{i+1} adds its churn.
        draws_every_step = official_noise_stream and REFERENCE_SAMPLERS[config.reference_sampler].noise_every_step
        evaluations = []
        for i in range(num_steps):
            last = i == num_steps - 1
            single = last or config.solver == "euler"
            draws = churn[i + 1] > 0 or (draws_every_step and not last)
            evaluations.append(
                _HeunStage(False, sigma_hat[i], sigma_hat[i], sigma[i + 1], single, churn[i + 1], single and draws)
            )
            if not single:
                evaluations.append(
                    _HeunStage(True, sigma[i + 1], sigma_hat[i], sigma[i + 1], True, churn[i + 1], draws)
                )
        self._evaluations = evaluations
        self.sigmas = torch.tensor([e.sigma for e in evaluations] + [0.0], dtype=torch.float64)

        # 4. Step 0's churn: folded into init_noise_sigma, or added by `add_initial_churn` in the official stream.
        self._initial_churn_scale = churn[0]
        if official_noise_stream or gammas[0] == 0:
            self._init_noise_sigma = sigma[0]
        else:
            self._init_noise_sigma = math.sqrt(sigma[0] ** 2 + churn[0] ** 2)

        # 5. Preconditioning of raw networks (Eq. 7) at each evaluation level, and the timesteps of the evaluations.
        precond = edm_preconditioning(self.sigmas[:-1], config.sigma_data)
        c_out_sign = -1.0 if config.prediction_type == "v_prediction" else 1.0
        self._c_skip = precond.c_skip.tolist()
        self._c_out = (c_out_sign * precond.c_out).tolist()
        self._c_in = precond.c_in.tolist()
        self.num_inference_steps = num_steps
        self._official_noise_stream = official_noise_stream
        self._initial_draw = draws_every_step or churn[0] > 0
        timesteps = self.sigmas[:-1]
        if self.resolved_timestep_type == "c_noise":
            timesteps = precond.c_noise.to(torch.float32)
        if device is not None and torch.device(device).type == "mps":
            timesteps = timesteps.to(torch.float32)  # MPS has no float64
        self.timesteps = timesteps.to(device)
        self._step_index = None
        self._begin_index = None
        self._corrector_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Index in `timesteps` (or in `schedule_timesteps`, a copy of them) of the first step that starts at
        `timestep`, where a run started part-way (e.g. image-to-image) begins; see [`first_predictor_index`]."""
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        return first_predictor_index(timestep, schedule_timesteps, [e.is_correction for e in self._evaluations])

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """
        Model input for the current evaluation: the sample itself for D-models (`prediction_type="sample"`, whose
        network preconditions internally), c_in(σ)·sample for raw networks F (Eq. 7).

        Args:
            sample (`torch.Tensor`): the current (churned) sample x̂.
            timestep (`float` or `torch.Tensor`): the current entry of `timesteps`.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        if self.config.prediction_type == "sample":
            return sample
        return sample * self._c_in[self._step_index]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> EDMHeunSchedulerOutput | tuple:
        """
        Advances Algorithm 2 by one model evaluation.

        On a predictor evaluation at σ̂_i it takes the Euler step to σ_{i+1} (line 8); unless this is the last step
        (or the solver is "euler") it returns that point for the corrector evaluation at σ_{i+1}, whose `step`
        applies the trapezoidal rule (line 11). Once x_{i+1} is complete, the churn noise of step i + 1 is added
        (lines 5–6), so the returned sample is x̂_{i+1}, the input of the next evaluation.

        Args:
            model_output (`torch.Tensor`): output of the model for this evaluation (see `prediction_type`).
            timestep (`float` or `torch.Tensor`): the current entry of `timesteps`.
            sample (`torch.Tensor`): the sample the model was evaluated on (the previous `prev_sample`).
            generator (`torch.Generator` or a list of them, *optional*): random source for the churn noise; a list
                gives one generator per batch element.
            return_dict (`bool`, defaults to `True`): return an [`EDMHeunSchedulerOutput`] instead of a tuple.

        Returns:
            [`EDMHeunSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)`; the arithmetic is done in
            the dtype of `sample`.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        if self._step_index >= len(self._evaluations):
            raise ValueError(
                f"step() was called {self._step_index + 1} times but the schedule has only {len(self._evaluations)}"
                " evaluations; call set_timesteps() before starting a new run."
            )
        evaluation = self._evaluations[self._step_index]

        # D(x̂; σ): the model output itself, or c_skip x̂ + c_out F for raw networks (Eq. 7).
        denoised = model_output.to(sample.dtype)
        if self.config.prediction_type != "sample":
            denoised = self._c_skip[self._step_index] * sample + self._c_out[self._step_index] * denoised

        if not evaluation.is_correction:  # Euler step from σ̂_i to σ_{i+1} (lines 7–8)
            derivative = (sample - denoised) / evaluation.sigma_hat
            prev_sample = sample + (evaluation.sigma_next - evaluation.sigma_hat) * derivative
            if not evaluation.finishes_step:
                self._corrector_state = (sample, derivative)
        else:  # 2nd-order correction (lines 10–11)
            sample_hat, derivative = self._corrector_state
            self._corrector_state = None
            derivative_next = (sample - denoised) / evaluation.sigma_next
            prev_sample = sample_hat + (evaluation.sigma_next - evaluation.sigma_hat) * (
                0.5 * derivative + 0.5 * derivative_next
            )
        if evaluation.finishes_step:  # churn of step i + 1 (lines 5–6)
            prev_sample = rescale_and_churn(
                prev_sample, 1.0, evaluation.next_churn_scale, evaluation.draws_noise, generator,
                self._official_noise_stream,
            )

        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return EDMHeunSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)

    def add_initial_churn(
        self, sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """
        Churns the initial sample x_0 = σ_0 n into x̂_0 (Algorithm 2, lines 5–6 of step 0) when the official noise
        stream is in use (`set_timesteps(..., official_noise_stream=True)`); otherwise step 0's churn is already part
        of `init_noise_sigma` and the sample is returned unchanged. Call it once, before the first evaluation.
        """
        if not self._official_noise_stream:
            return sample
        return rescale_and_churn(sample, 1.0, self._initial_churn_scale, self._initial_draw, generator, True)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor | None = None,
        *,
        sigmas: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Noisy samples y + σ n (the perturbation of the data in Eq. 2), e.g. the start of an image-to-image run or a
        training input. The noise levels σ are given either as `timesteps` or as `sigmas`.

        Args:
            original_samples (`torch.Tensor`): clean samples y, shape (B, …).
            noise (`torch.Tensor`): unit Gaussian noise n, same shape.
            timesteps (`float` or `torch.Tensor`, *optional*): timesteps in the units of `scheduler.timesteps`, as
                in diffusers' schedulers: a scalar, one value for the whole batch (e.g. `timesteps[:1]`) or one per
                sample. With `timestep_type="sigma"` a timestep is its noise level, so any σ >= 0 may be given; with
                "c_noise" each must be an entry of `timesteps` (up to float32 rounding, so those of an
                `EDMEulerScheduler` with the same schedule work too) and noises at that evaluation's σ, as
                [`EDMEulerScheduler.add_noise`] does.
            sigmas (`float` or `torch.Tensor`, *optional*, keyword-only): continuous noise levels σ >= 0 instead of
                `timesteps` (same shapes), e.g. drawn from EDM's log-normal training distribution, whatever the
                `timestep_type`.
        """
        if (timesteps is None) == (sigmas is None):
            raise ValueError(
                "Pass either timesteps (entries of `scheduler.timesteps`) or sigmas (noise levels), exactly one of them."
            )
        name = "sigmas" if sigmas is not None else "timesteps"
        if sigmas is None and self.resolved_timestep_type == "c_noise":
            sigmas = self._evaluation_sigmas(timesteps)
        elif sigmas is None:
            sigmas = timesteps
        return original_samples + noise * noise_levels_for(sigmas, original_samples, name)

    def _evaluation_sigmas(self, timesteps: float | torch.Tensor) -> torch.Tensor:
        """The levels σ (float64, on the CPU, in the shape of `timesteps`) of the evaluations whose entries of
        `timesteps` are the given c_noise values, matched up to `C_NOISE_MATCH_TOLERANCE`; a `ValueError` naming the
        values that match none."""
        schedule_timesteps = self.timesteps.cpu().to(torch.float64)
        timesteps = torch.as_tensor(timesteps).detach().cpu().to(torch.float64)
        distances = (timesteps.reshape(-1, 1) - schedule_timesteps).abs()
        nearest = distances.argmin(dim=1)
        unmatched = distances[torch.arange(len(nearest)), nearest] > C_NOISE_MATCH_TOLERANCE
        if bool(unmatched.any()):
            raise ValueError(
                f"timesteps {timesteps.reshape(-1)[unmatched].tolist()} are not entries of `scheduler.timesteps`"
                " (c_noise values); pass those, or continuous noise levels as add_noise(..., sigmas=...)."
            )
        return self.sigmas[nearest].reshape(timesteps.shape)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _check_config(
    sigma_min: float,
    sigma_max: float,
    sigma_data: float,
    rho: float,
    s_churn: float,
    s_tmin: float,
    s_tmax: float | None,
    s_noise: float,
) -> None:
    """Validates the numeric settings of [`EDMHeunScheduler`]."""
    check_positive("sigma_min", sigma_min)
    check_sigma_order(sigma_min, sigma_max)
    if not math.isfinite(sigma_max):
        raise ValueError(f"sigma_max must be finite, got {sigma_max}.")
    check_positive("sigma_data", sigma_data)
    check_positive("rho", rho)
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
