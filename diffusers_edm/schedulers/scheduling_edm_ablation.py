# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The design-space sampler of EDM's Sec. 3 ablations (the official "ablation sampler") as a diffusers scheduler."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..preconditioning import (
    VP_BETA_D,
    VP_BETA_MIN,
    iddpm_sigma_table,
    vp_sigma,
    vp_sigma_derivative,
    vp_sigma_inverse,
)
from .sigma_schedule import (
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
__all__ = ["EDMAblationScheduler", "EDMAblationSchedulerOutput", "SchedulerMixin"]

DISCRETIZATIONS = ("vp", "ve", "iddpm", "edm")
SCHEDULES = ("vp", "ve", "linear")
SCALINGS = ("vp", "none")
PREDICTION_TYPES = ("sample",)
TIMESTEP_TYPES = ("sigma",)

DEFAULT_SIGMA_RANGES = {"ve": (0.02, 100.0), "iddpm": (0.002, 81.0), "edm": (0.002, 80.0)}
"""Default (σ_min, σ_max) of the other discretisations."""

TensorFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EDMAblationSchedulerOutput(BaseOutput):
    """
    Output of [`EDMAblationScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample to feed to the model at the next timestep (already rescaled and churned when the next step
            does so), or the final sample after the last step.
        pred_original_sample (`torch.Tensor` of the same shape):
            The denoised estimate D(x / s(t); σ(t)) of this model evaluation.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _TimeFunctions(NamedTuple):
    """σ(t), σ'(t), σ⁻¹(σ) of the noise schedule and s(t), s'(t) of the scaling (Eq. 4), on float64 tensors."""

    sigma: TensorFunction
    sigma_derivative: TensorFunction
    sigma_inverse: TensorFunction
    scale: TensorFunction
    scale_derivative: TensorFunction


class _AblationStage(NamedTuple):
    """One model evaluation (of step i) and the coefficients it needs (Python floats)."""

    is_correction: bool  # False: Euler predictor at t̂_i; True: 2nd-order correction at t'_i = t̂_i + α h_i
    sigma: float  # σ(t) at the evaluation time t, the level passed to the model
    scale: float  # s(t); the model sees x / s(t)
    slope_sample: float  # σ'(t)/σ(t) + s'(t)/s(t), the factor of x in dx/dt
    slope_denoised: float  # σ'(t) s(t)/σ(t), the factor of D in dx/dt
    step_size: float  # h_i = t_{i+1} − t̂_i
    finishes_step: bool  # whether this evaluation completes x_{i+1}
    next_rescale: float  # s(t̂_{i+1}) / s(t_{i+1}), applied to x_{i+1}; 1 after the last step
    next_churn_scale: float  # √max(σ(t̂_{i+1})² − σ(t_{i+1})², 0) s(t̂_{i+1}) S_noise; 0 after the last step
    draws_noise: bool  # whether a noise tensor is drawn when this evaluation completes x_{i+1}


class EDMAblationScheduler(SchedulerMixin, ConfigMixin):
    """
    The sampler EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") uses for
    its Sec. 3 ablations: Algorithms 1 and 2 generalised to any noise schedule σ(t), scaling s(t) and time-step
    discretisation of Table 1, solving the probability-flow ODE (Eq. 4)

        dx/dt = [σ'(t)/σ(t) + s'(t)/s(t)] x − [σ'(t) s(t)/σ(t)] D(x / s(t); σ(t))

    with Euler's method or a 2nd-order Runge–Kutta method (α = 1: Heun; the last step is always Euler), optionally
    with stochastic churn (Algorithm 2). The numbers equal those of the official `ablation_sampler` up to round-off.

    One deliberate difference: where γ_i = 0 the official code still computes t̂_i = σ⁻¹(σ(t_i)) in floating point,
    which with the "vp" and "ve" schedules can land an ulp above t_i; it then adds √(σ(t̂_i)² − σ(t_i)²) s ε, noise
    of order 1e-8 that makes S_churn = 0 runs depend on the random state (by ~6e-8 for euler/vp/vp/vp with 512
    steps). Here t̂_i = t_i exactly, so S_churn = 0 is deterministic and draws no noise (except in the
    `official_noise_stream` mode, which keeps the official random stream aligned).

    It runs in the standard diffusers loop like [`EDMHeunScheduler`] (`x = randn * init_noise_sigma`; for each `t`
    in `timesteps`: `scale_model_input`, model, `step(...).prev_sample`). Every evaluation is laid out in advance:
    `timesteps` holds the levels σ(t) at which the model is evaluated (2N − 1 for "heun", N for "euler"), the model
    input is x / s(t), and `step` rescales by s(t̂_{i+1})/s(t_{i+1}) and adds the churn noise of step i + 1 when it
    finishes step i (step 0's is folded into `init_noise_sigma`). The model is a D-model: it returns the denoised
    image, e.g. [`EDMPreconditionedUNet2DModel`] with any of the preconditionings of Table 1.

    Args:
        num_train_timesteps (`int`, defaults to 1000): number of steps of the schedule held before `set_timesteps`
            is called, and the value of `len(scheduler)`.
        sigma_min (`float`, *optional*), sigma_max (`float`, *optional*): noise range of the discretisation; `None`
            picks the discretisation's default: "vp" σ_VP(ε_s) = 0.0104860 … σ_VP(1) = 152.16697 (β_d 19.9, β_min
            0.1), "ve" 0.02 … 100, "iddpm" 0.002 … 81, "edm" 0.002 … 80. The range is then clamped to the network's.
        rho (`float`, defaults to 7.0): exponent ρ of the "edm" discretisation (Eq. 5).
        solver (`str`, defaults to "heun"): "heun" (2nd order, 2N − 1 evaluations) or "euler" (N evaluations).
        discretization (`str`, defaults to "edm"): the step levels σ_0 > … > σ_{N−1} (Table 1, "time steps"): "vp"
            (uniform t from 1 to ε_s), "ve" (geometric in σ²), "iddpm" (every k-th level of the iDDPM table) or
            "edm" (Eq. 5).
        schedule (`str`, defaults to "linear"): noise schedule σ(t): "vp" (the VP schedule with β_d, β_min derived
            from the noise range so that σ(ε_s) = σ_min and σ(1) = σ_max), "ve" (σ = √t) or "linear" (σ = t).
        scaling (`str`, defaults to "none"): signal scaling s(t): "vp" (1/√(1 + σ(t)²)) or "none" (1).
        epsilon_s (`float`, defaults to 1e-3): the smallest time ε_s of the "vp" discretisation and schedule.
        C_1 (`float`, defaults to 0.001), C_2 (`float`, defaults to 0.008), M (`int`, defaults to 1000): the
            iDDPM level table of the "iddpm" discretisation.
        alpha (`float`, defaults to 1.0): α ∈ (0, 1] of the 2nd-order method: the correction is evaluated at
            t̂ + α h and x_{i+1} = x̂ + h ((1 − 1/(2α)) d + 1/(2α) d'); 1 is Heun's method, 0.5 the midpoint method.
        s_churn (`float`, defaults to 0.0): S_churn; γ_i = min(S_churn / N, √2 − 1).
        s_tmin (`float`, defaults to 0.0), s_tmax (`float`, *optional*): the σ(t_i) window (inclusive) in which
            steps are churned; `None` means ∞.
        s_noise (`float`, defaults to 1.0): S_noise, scale of the churn noise.
        prediction_type (`str`, defaults to "sample"): what the model returns; only "sample" (D) is supported.
        timestep_type (`str`, defaults to "sigma"): what `timesteps` holds; only "sigma" (the levels σ(t)). `None`
            (as in an [`EDMHeunScheduler`] config in "sample" mode) means "sigma".
    """

    # The schedulers EDMPipeline runs in this one's place (diffusers resolves only its own names in `compatibles`).
    _compatibles = [
        "EDMHeunScheduler",
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
        num_train_timesteps: int = 1000,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
        solver: str = "heun",
        discretization: str = "edm",
        schedule: str = "linear",
        scaling: str = "none",
        epsilon_s: float = 1e-3,
        C_1: float = 0.001,
        C_2: float = 0.008,
        M: int = 1000,
        alpha: float = 1.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        prediction_type: str = "sample",
        timestep_type: str | None = "sigma",
    ) -> None:
        check_choice("solver", solver, SOLVERS)
        check_choice("discretization", discretization, DISCRETIZATIONS)
        check_choice("schedule", schedule, SCHEDULES)
        check_choice("scaling", scaling, SCALINGS)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        if timestep_type is not None:
            check_choice("timestep_type", timestep_type, TIMESTEP_TYPES)
        _check_config(self.config)
        self.register_to_config(_class_name=type(self).__name__)  # as EDMHeunScheduler: quiet `from_config` swaps
        self.order = 2 if solver == "heun" else 1
        self.set_timesteps(num_train_timesteps)
        self.num_inference_steps = None

    @property
    def resolved_timestep_type(self) -> str:
        """What `timesteps` holds: "sigma", the noise levels σ(t) themselves (as [`EDMHeunScheduler`] reports it)."""
        return self.config.timestep_type or "sigma"

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial sample x̂_0: σ(t_0) s(t_0), i.e. σ_max s(σ_max) without churn.

        With churn at step 0, x̂_0 = s(t̂_0)/s(t_0) · σ(t_0) s(t_0) n + √(σ(t̂_0)² − σ(t_0)²) s(t̂_0) S_noise ε is one
        Gaussian, drawn at once with this standard deviation (unless `official_noise_stream` is set).
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

    # Copied from diffusers_edm.schedulers.scheduling_edm_heun.EDMHeunScheduler.set_begin_index
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
        Lays out the model evaluations of an N-step run (call before the sampling loop).

        Args:
            num_inference_steps (`int`, *optional*): number of sampler steps N ≥ 1 (N = 1, where the official
                discretisations divide by zero, is one Euler step from σ_max).
            device (`str` or `torch.device`, *optional*): device of `timesteps`; `sigmas` stay on the CPU.
            sigmas (`list[float]` or `torch.Tensor`, *optional*): step levels σ_0 > … > σ_{N−1} > 0 to use instead of
                the discretisation (a final 0 may be included); they are rounded and mapped to times t_i = σ⁻¹(σ_i)
                like the discretisation's levels.
            net_sigma_min (`float`), net_sigma_max (`float`): the noise range the network supports (its
                preconditioning's `sigma_min` / `sigma_max`, e.g. of [`VPPreconditioning`]); the discretisation's
                range is clamped to it as the official sampler does.
            round_sigma (`Callable`, *optional*): the network's `round_sigma` (iDDPM networks snap σ to their
                discrete levels), applied to the step levels and to the churned levels.
            official_noise_stream (`bool`, defaults to `False`): draw the churn noise as the official sampler does,
                so that the same random source reproduces its numbers: one float64 normal per step (also where
                γ_i = 0, never for the correction), with step 0's rescaling and churn applied by `add_initial_churn`
                instead of being folded into `init_noise_sigma` (which is then σ(t_0) s(t_0)).
        """
        config = self.config
        round_sigma = round_sigma or unrounded
        # 1. The noise range of the discretisation within the network's, and σ(t), s(t) of the run (the VP schedule
        # passes through that range).
        sigma_min, sigma_max = clamp_to_network_range(*_default_sigma_range(config), net_sigma_min, net_sigma_max)
        beta_d, beta_min = _vp_betas(config, sigma_min, sigma_max)
        functions = _time_functions(config.schedule, config.scaling, beta_d, beta_min)
        sigma, scale = functions.sigma, functions.scale

        # 2. Step levels σ_0 > … > σ_{N−1} (the user's or the discretisation's), rounded and mapped to the float64
        # step times t_0 > … > t_{N−1}.
        if sigmas is not None:
            step_sigmas = custom_step_sigmas(sigmas, num_inference_steps)
        else:
            num_steps = check_num_inference_steps(num_inference_steps)
            step_sigmas = _discretization(config, num_steps, sigma_min, sigma_max, beta_d, beta_min)
        step_times = functions.sigma_inverse(torch.as_tensor(round_sigma(step_sigmas)).to(torch.float64))
        num_steps = len(step_times)
        step_sigmas = sigma(step_times)

        # 3. Churned times t̂_i = σ⁻¹(round_sigma(σ(t_i) + γ_i σ(t_i))) (Algorithm 2, line 5). Where γ_i = 0 this is
        # t_i itself; it is taken exactly, since the floating-point round trip σ⁻¹(σ(t)) could leave spurious noise of
        # order 1e-8 (see the class docstring).
        gammas = churn_gammas(step_sigmas, config.s_churn, config.s_tmin, config.s_tmax)
        churned = gammas > 0
        time_hat = step_times.clone()
        if bool(churned.any()):
            raised = step_sigmas[churned] + gammas[churned] * step_sigmas[churned]
            rounded = torch.as_tensor(round_sigma(raised)).to(torch.float64)
            time_hat[churned] = functions.sigma_inverse(rounded)

        # 4. Per step: the step size h_i = t_{i+1} − t̂_i (t_N = 0), the rescaling s(t̂_i)/s(t_i) and the churn noise
        # scale √max(σ(t̂_i)² − σ(t_i)², 0) s(t̂_i) S_noise (line 6 with scaling), and the ODE coefficients at the
        # predictor times t̂_i and the correction times t̂_i + α h_i.
        next_times = torch.cat([step_times[1:], torch.zeros(1, dtype=torch.float64)])
        step_sizes = next_times - time_hat
        rescales = scale(time_hat) / scale(step_times)
        churn_scales = (sigma(time_hat) ** 2 - step_sigmas**2).clamp(min=0).sqrt() * scale(time_hat) * config.s_noise
        corrected = num_steps - 1 if config.solver == "heun" else 0  # steps 0 … corrected−1 have a correction
        correction_times = time_hat[:corrected] + config.alpha * step_sizes[:corrected]
        predictor = _evaluation_coefficients(time_hat, functions)
        corrector = _evaluation_coefficients(correction_times, functions)

        # 5. The model evaluations; the one that completes x_{i+1} rescales and churns it for step i + 1.
        step_sizes = step_sizes.tolist()
        rescales, churn_scales = rescales.tolist() + [1.0], churn_scales.tolist() + [0.0]
        evaluations = []
        for i in range(num_steps):
            draws = churn_scales[i + 1] > 0 or (official_noise_stream and i < num_steps - 1)
            common = {"step_size": step_sizes[i], "next_rescale": rescales[i + 1],
                      "next_churn_scale": churn_scales[i + 1]}
            single = i >= corrected
            evaluations.append(
                _AblationStage(False, *predictor[i], finishes_step=single, draws_noise=single and draws, **common)
            )
            if not single:
                evaluations.append(_AblationStage(True, *corrector[i], finishes_step=True, draws_noise=draws, **common))
        self._evaluations = evaluations
        self.sigmas = torch.tensor([e.sigma for e in evaluations] + [0.0], dtype=torch.float64)

        # 6. Step 0's rescaling and churn: folded into init_noise_sigma, or applied by `add_initial_churn` in the
        # official stream.
        self._initial_rescale, self._initial_churn_scale = rescales[0], churn_scales[0]
        start = (sigma(step_times[:1]) * scale(step_times[:1])).item()  # σ(t_0) s(t_0)
        if official_noise_stream:
            self._init_noise_sigma = start
        else:
            self._init_noise_sigma = math.hypot(rescales[0] * start, churn_scales[0])

        self.num_inference_steps = num_steps
        self._official_noise_stream = official_noise_stream
        timesteps = self.sigmas[:-1]
        if device is not None and torch.device(device).type == "mps":
            timesteps = timesteps.to(torch.float32)  # MPS has no float64
        self.timesteps = timesteps.to(device)
        self._step_index = None
        self._begin_index = None
        self._corrector_state: tuple[torch.Tensor, torch.Tensor] | None = None

    # Copied from diffusers_edm.schedulers.scheduling_edm_heun.EDMHeunScheduler.index_for_timestep
    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Index in `timesteps` (or in `schedule_timesteps`, a copy of them) of the first step that starts at
        `timestep`, where a run started part-way (e.g. image-to-image) begins; see [`first_predictor_index`]."""
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        return first_predictor_index(timestep, schedule_timesteps, [e.is_correction for e in self._evaluations])

    # Copied from diffusers_edm.schedulers.scheduling_edm_heun.EDMHeunScheduler._init_step_index
    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """
        The model input x / s(t) of the current evaluation (the official sampler calls D(x / s(t); σ(t))); the
        sample itself for `scaling="none"`.

        Args:
            sample (`torch.Tensor`): the current (rescaled, churned) sample x.
            timestep (`float` or `torch.Tensor`): the current entry of `timesteps`.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        scale = self._evaluations[self._step_index].scale
        return sample if scale == 1.0 else sample / scale

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> EDMAblationSchedulerOutput | tuple:
        """
        Advances the sampler by one model evaluation.

        With d = [σ'/σ + s'/s] x̂ − [σ' s/σ] D at t̂_i, the last step and the "euler" solver take x_{i+1} = x̂ + h d
        (h = t_{i+1} − t̂_i); otherwise this returns x' = x̂ + α h d for the correction at t̂_i + α h, whose `step`
        sets x_{i+1} = x̂ + h ((1 − 1/(2α)) d + 1/(2α) d'). Once x_{i+1} is complete it is rescaled by
        s(t̂_{i+1})/s(t_{i+1}) and churned, so the returned sample is x̂_{i+1}, the next evaluation's input.

        Args:
            model_output (`torch.Tensor`): the denoised estimate D(x / s(t); σ(t)) returned by the model.
            timestep (`float` or `torch.Tensor`): the current entry of `timesteps`.
            sample (`torch.Tensor`): the sample the model input was made from (the previous `prev_sample`).
            generator (`torch.Generator` or a list of them, *optional*): random source for the churn noise; a list
                gives one generator per batch element.
            return_dict (`bool`, defaults to `True`): return an [`EDMAblationSchedulerOutput`] instead of a tuple.

        Returns:
            [`EDMAblationSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)`; the arithmetic is done
            in the dtype of `sample`.
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        if self._step_index >= len(self._evaluations):
            raise ValueError(
                f"step() was called {self._step_index + 1} times but the schedule has only {len(self._evaluations)}"
                " evaluations; call set_timesteps() before starting a new run."
            )
        evaluation = self._evaluations[self._step_index]

        denoised = model_output.to(sample.dtype)
        derivative = evaluation.slope_sample * sample - evaluation.slope_denoised * denoised  # dx/dt (Eq. 4)
        alpha, h = self.config.alpha, evaluation.step_size
        if evaluation.is_correction:
            sample_hat, first_derivative = self._corrector_state
            self._corrector_state = None
            weight = 1 / (2 * alpha)
            prev_sample = sample_hat + h * ((1 - weight) * first_derivative + weight * derivative)
        elif evaluation.finishes_step:
            prev_sample = sample + h * derivative
        else:
            self._corrector_state = (sample, derivative)
            prev_sample = sample + (alpha * h) * derivative
        if evaluation.finishes_step:  # rescaling and churn of step i + 1
            prev_sample = rescale_and_churn(
                prev_sample, evaluation.next_rescale, evaluation.next_churn_scale, evaluation.draws_noise, generator,
                self._official_noise_stream,
            )

        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return EDMAblationSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)

    def add_initial_churn(
        self, sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """
        Rescales and churns the initial sample x_0 = σ(t_0) s(t_0) n into x̂_0 (step 0 of the loop) when the
        official noise stream is in use (`set_timesteps(..., official_noise_stream=True)`), drawing step 0's noise;
        otherwise this is already part of `init_noise_sigma` and the sample is returned unchanged. Call it once,
        before the first evaluation.
        """
        if not self._official_noise_stream:
            return sample
        return rescale_and_churn(sample, self._initial_rescale, self._initial_churn_scale, True, generator, True)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor | None = None,
        *,
        sigmas: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Noisy samples in the sampler's coordinates, s(t) (y + σ(t) n) (Eq. 4: x = s(t) x̂ with x̂ ~ p(x; σ(t))), e.g.
        the start of an image-to-image run: y + σ n for `scaling="none"`, (y + σ n) / √(1 + σ²) for "vp".

        Args:
            original_samples (`torch.Tensor`): clean samples y, shape (B, …).
            noise (`torch.Tensor`): unit Gaussian noise n, same shape.
            timesteps (`float` or `torch.Tensor`, *optional*): entries of `timesteps`, i.e. the noise levels σ(t)
                themselves (any σ >= 0 may be given): a scalar, one value for the whole batch (e.g. `timesteps[:1]`)
                or one per sample.
            sigmas (`float` or `torch.Tensor`, *optional*, keyword-only): the same noise levels under the name
                [`EDMHeunScheduler.add_noise`] uses for continuous levels; pass one of `timesteps` and `sigmas`.
        """
        if (timesteps is None) == (sigmas is None):
            raise ValueError(
                "Pass either timesteps (entries of `scheduler.timesteps`) or sigmas (noise levels), exactly one of them."
            )
        name = "sigmas" if sigmas is not None else "timesteps"
        sigmas = noise_levels_for(timesteps if sigmas is None else sigmas, original_samples, name)
        noisy_samples = original_samples + noise * sigmas
        if self.config.scaling == "vp":
            noisy_samples = noisy_samples / (1 + sigmas**2).sqrt()  # s(t) = 1/√(1 + σ(t)²)
        return noisy_samples

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _default_sigma_range(config: FrozenDict) -> tuple[float, float]:
    """The noise range (σ_min, σ_max) of the configured discretisation: the configured values, or where they are
    `None` the discretisation's defaults (for "vp": σ_VP(ε_s) and σ_VP(1) with the paper's β_d, β_min)."""
    if config.discretization == "vp":
        ends = vp_sigma(torch.tensor([config.epsilon_s, 1.0], dtype=torch.float64), VP_BETA_D, VP_BETA_MIN)
        default_min, default_max = ends.tolist()
    else:
        default_min, default_max = DEFAULT_SIGMA_RANGES[config.discretization]
    sigma_min = default_min if config.sigma_min is None else config.sigma_min
    sigma_max = default_max if config.sigma_max is None else config.sigma_max
    return sigma_min, sigma_max


def _vp_betas(config: FrozenDict, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """β_d, β_min of the VP schedule through σ(ε_s) = σ_min and σ(1) = σ_max (used by the "vp" discretisation and
    schedule): β_d = 2 (ln(σ_min² + 1)/ε_s − ln(σ_max² + 1)) / (ε_s − 1), β_min = ln(σ_max² + 1) − β_d/2."""
    epsilon_s = config.epsilon_s
    beta_d = 2 * (math.log(sigma_min**2 + 1) / epsilon_s - math.log(sigma_max**2 + 1)) / (epsilon_s - 1)
    beta_min = math.log(sigma_max**2 + 1) - 0.5 * beta_d
    if "vp" in (config.discretization, config.schedule) and not beta_d > 0:
        raise ValueError(
            f"No VP schedule has σ(epsilon_s={epsilon_s}) = {sigma_min} and σ(1) = {sigma_max} (β_d would be"
            f" {beta_d:.4g} <= 0); lower sigma_min or epsilon_s, or raise sigma_max."
        )
    return beta_d, beta_min


def _discretization(
    config: FrozenDict, num_steps: int, sigma_min: float, sigma_max: float, beta_d: float, beta_min: float
) -> torch.Tensor:
    """The step levels σ_0 > … > σ_{N−1} of the configured discretisation (Table 1, "time steps"; float64, before
    round_sigma)."""
    indices = torch.arange(num_steps, dtype=torch.float64)
    ramp = indices / (num_steps - 1) if num_steps > 1 else indices  # i/(N−1); 0 for N = 1
    if config.discretization == "vp":
        return vp_sigma(1 + ramp * (config.epsilon_s - 1), beta_d, beta_min)
    if config.discretization == "ve":
        return (sigma_max**2 * (sigma_min**2 / sigma_max**2) ** ramp).sqrt()
    if config.discretization == "iddpm":
        levels = iddpm_sigma_table(config.M, config.C_1, config.C_2, torch.float64)
        levels = levels[(levels >= sigma_min) & (levels <= sigma_max)]
        if len(levels) == 0:
            raise ValueError(
                f"No iDDPM level lies in [{sigma_min}, {sigma_max}]; widen the range or change C_1, C_2, M."
            )
        stride = (len(levels) - 1) / (num_steps - 1) if num_steps > 1 else 0.0
        return levels[(stride * indices).round().to(torch.int64)]
    return karras_sigmas(num_steps, sigma_min, sigma_max, config.rho)


def _time_functions(schedule: str, scaling: str, beta_d: float, beta_min: float) -> _TimeFunctions:
    """σ(t), σ'(t), σ⁻¹ of `schedule` and s(t), s'(t) of `scaling` (Table 1, "schedule" and "scaling")."""
    if schedule == "vp":
        sigma = partial(vp_sigma, beta_d=beta_d, beta_min=beta_min)
        sigma_derivative = partial(vp_sigma_derivative, beta_d=beta_d, beta_min=beta_min)
        sigma_inverse = partial(vp_sigma_inverse, beta_d=beta_d, beta_min=beta_min)
    elif schedule == "ve":
        sigma, sigma_inverse = torch.sqrt, torch.square

        def sigma_derivative(t: torch.Tensor) -> torch.Tensor:
            return 0.5 / t.sqrt()

    else:
        sigma = sigma_inverse = torch.as_tensor
        sigma_derivative = torch.ones_like
    if scaling == "vp":

        def scale(t: torch.Tensor) -> torch.Tensor:
            return 1 / (1 + sigma(t) ** 2).sqrt()

        def scale_derivative(t: torch.Tensor) -> torch.Tensor:
            return -sigma(t) * sigma_derivative(t) * scale(t) ** 3

    else:
        scale, scale_derivative = torch.ones_like, torch.zeros_like
    return _TimeFunctions(sigma, sigma_derivative, sigma_inverse, scale, scale_derivative)


def _evaluation_coefficients(times: torch.Tensor, functions: _TimeFunctions) -> list[tuple[float, ...]]:
    """(σ(t), s(t), σ'/σ + s'/s, σ' s/σ) at each time t, the evaluation's level, input scale and ODE coefficients."""
    sigma, sigma_derivative = functions.sigma(times), functions.sigma_derivative(times)
    scale, scale_derivative = functions.scale(times), functions.scale_derivative(times)
    slope_sample = sigma_derivative / sigma + scale_derivative / scale
    slope_denoised = sigma_derivative * scale / sigma
    return list(zip(sigma.tolist(), scale.tolist(), slope_sample.tolist(), slope_denoised.tolist()))


def _check_config(config: FrozenDict) -> None:
    """Validates the numeric settings of [`EDMAblationScheduler`]."""
    if isinstance(config.num_train_timesteps, bool) or not isinstance(config.num_train_timesteps, int) or (
        config.num_train_timesteps < 1
    ):
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {config.num_train_timesteps!r}.")
    for name in ("sigma_min", "sigma_max"):
        value = getattr(config, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number > 0 or None (the discretisation's default), got {value}")
    if config.sigma_min is not None and config.sigma_max is not None:
        check_sigma_order(config.sigma_min, config.sigma_max)
    check_positive("rho", config.rho)
    if not 0 < config.epsilon_s < 1:
        raise ValueError(f"epsilon_s must lie in (0, 1), got {config.epsilon_s}.")
    check_positive("C_1", config.C_1)
    if not config.C_2 >= 0:
        raise ValueError(f"C_2 must be >= 0, got {config.C_2}.")
    if isinstance(config.M, bool) or not isinstance(config.M, int) or config.M < 2:
        raise ValueError(f"M must be an integer >= 2, got {config.M!r}.")
    if not 0 < config.alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1] (1: Heun's method, 0.5: midpoint method), got {config.alpha}.")
    check_churn(config.s_churn, config.s_tmin, config.s_tmax, config.s_noise)
