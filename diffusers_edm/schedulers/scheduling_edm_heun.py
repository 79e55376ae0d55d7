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
from diffusers.utils.torch_utils import randn_tensor

from ..preconditioning import edm_preconditioning
from .sigma_schedule import churn_gammas, karras_sigmas

SOLVERS = ("heun", "euler")
PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
TIMESTEP_TYPES = ("sigma", "c_noise")


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


class _Evaluation(NamedTuple):
    """One model evaluation of Algorithm 2: the step it belongs to and the noise levels it needs."""

    step: int  # i, the sampler step (0 … N-1)
    is_correction: bool  # False: Euler predictor at σ̂_i (line 8); True: Heun corrector at σ_{i+1} (line 11)
    sigma: float  # the level the model is evaluated at
    sigma_hat: float  # σ̂_i
    sigma_next: float  # σ_{i+1}
    finishes_step: bool  # whether this evaluation completes x_{i+1}
    churn_scale: float  # √(σ̂_{i+1}² − σ_{i+1}²) · S_noise, the noise added to x_{i+1}; 0 when γ_{i+1} = 0 or i = N-1
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
    """

    _compatibles = ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"]
    order = 2

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        rho: float = 7.0,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        solver: str = "heun",
        prediction_type: str = "sample",
        timestep_type: str | None = None,
        num_train_timesteps: int = 1000,
    ) -> None:
        _check_config(sigma_min, sigma_max, sigma_data, rho, s_churn, s_tmin, s_tmax, s_noise)
        _check_choice("solver", solver, SOLVERS)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        if timestep_type is not None:
            _check_choice("timestep_type", timestep_type, TIMESTEP_TYPES)
        self.order = 2 if solver == "heun" else 1
        self._official_noise_stream = False
        self.set_timesteps(num_train_timesteps)
        self.num_inference_steps = None

    @classmethod
    def from_config(cls, config: dict | None = None, return_unused_kwargs: bool = False, **kwargs):
        """Builds the scheduler from a config, as [`ConfigMixin.from_config`]. A config of another scheduler (e.g.
        diffusers' `EDMEulerScheduler`) keeps its values even where they were defaults there, so its raw-network
        `prediction_type="epsilon"` carries over instead of this class's "sample"."""
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
        one draw at this standard deviation is the same distribution.
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
            official_noise_stream (`bool`, defaults to `False`): draw the churn noise exactly as EDM's `generate.py`
                does, so per-image generators seeded like it reproduce its images: one float64 normal per step (also
                where γ_i = 0), with step 0's churn added by `add_initial_churn` instead of being folded into
                `init_noise_sigma` (which is then σ_0). [`EDMPipeline`] uses this mode.
        """
        if sigmas is not None:
            step_sigmas = _check_custom_sigmas(sigmas)
            if num_inference_steps is not None and num_inference_steps != len(step_sigmas):
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} disagrees with the {len(step_sigmas)} custom sigmas;"
                    " pass only one of them."
                )
        else:
            if num_inference_steps is None or int(num_inference_steps) != num_inference_steps or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
            config = self.config
            sigma_min, sigma_max = max(config.sigma_min, net_sigma_min), min(config.sigma_max, net_sigma_max)
            if not sigma_min < sigma_max:
                raise ValueError(
                    f"The schedule range [{config.sigma_min}, {config.sigma_max}] does not overlap the network's"
                    f" supported range [{net_sigma_min}, {net_sigma_max}]."
                )
            step_sigmas = karras_sigmas(int(num_inference_steps), sigma_min, sigma_max, config.rho)
        round_sigma = round_sigma or (lambda sigma: sigma)
        self.num_inference_steps = len(step_sigmas)
        self._official_noise_stream = official_noise_stream
        self._build_evaluations(round_sigma(step_sigmas), round_sigma)
        eval_sigmas = self.sigmas[:-1]
        if self.resolved_timestep_type == "sigma":
            timesteps = eval_sigmas
        else:
            timesteps = edm_preconditioning(eval_sigmas, self.config.sigma_data).c_noise.to(torch.float32)
        if device is not None and torch.device(device).type == "mps":
            timesteps = timesteps.to(torch.float32)  # MPS has no float64
        self.timesteps = timesteps.to(device)
        self._step_index = None
        self._begin_index = None
        self._corrector_state: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build_evaluations(self, step_sigmas: torch.Tensor, round_sigma: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Lays out the model evaluations of Algorithm 2 for the float64 step levels σ_0 … σ_{N-1}."""
        config = self.config
        s_tmax = math.inf if config.s_tmax is None else config.s_tmax
        gammas = churn_gammas(step_sigmas, config.s_churn, config.s_tmin, s_tmax)
        # σ̂_i = round_sigma(σ_i + γ_i σ_i), the same arithmetic as the official sampler.
        sigma_hat = round_sigma(step_sigmas + gammas * step_sigmas).tolist()
        gammas, sigma = gammas.tolist(), step_sigmas.tolist() + [0.0]
        churn = [
            math.sqrt(sh**2 - s**2) * config.s_noise if g > 0 else 0.0 for s, sh, g in zip(sigma, sigma_hat, gammas)
        ] + [0.0]
        num_steps = len(step_sigmas)
        evaluations = []
        for i in range(num_steps):
            last = i == num_steps - 1
            single = last or config.solver == "euler"
            draws = churn[i + 1] > 0 or (self._official_noise_stream and not last)
            evaluations.append(
                _Evaluation(i, False, sigma_hat[i], sigma_hat[i], sigma[i + 1], single, churn[i + 1], single and draws)
            )
            if not single:
                evaluations.append(
                    _Evaluation(i, True, sigma[i + 1], sigma_hat[i], sigma[i + 1], True, churn[i + 1], draws)
                )
        self._evaluations = evaluations
        self.sigmas = torch.tensor([e.sigma for e in evaluations] + [0.0], dtype=torch.float64)
        self._initial_churn_scale = churn[0]
        if self._official_noise_stream or gammas[0] == 0:
            self._init_noise_sigma = sigma[0]
        else:
            self._init_noise_sigma = math.sqrt(sigma[0] ** 2 + churn[0] ** 2)
        precond = edm_preconditioning(self.sigmas[:-1], config.sigma_data)
        c_out_sign = -1.0 if config.prediction_type == "v_prediction" else 1.0
        self._c_skip = precond.c_skip.tolist()
        self._c_out = (c_out_sign * precond.c_out).tolist()
        self._c_in = precond.c_in.tolist()

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Index of `timestep` in `timesteps`; when it occurs twice the second occurrence is taken, as diffusers'
        Heun scheduler does, so a run started part-way never skips a level."""
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.to(schedule_timesteps.device, schedule_timesteps.dtype)
        indices = (schedule_timesteps == timestep).nonzero()
        if len(indices) == 0:
            raise ValueError(
                f"timestep {timestep!r} is not one of the scheduler's timesteps; pass the values of"
                " `scheduler.timesteps` in order (after `set_timesteps`)."
            )
        return indices[1 if len(indices) > 1 else 0].item()

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
        denoised = self._denoised(model_output, sample)
        if not evaluation.is_correction:
            derivative = (sample - denoised) / evaluation.sigma_hat
            prev_sample = sample + (evaluation.sigma_next - evaluation.sigma_hat) * derivative
            if not evaluation.finishes_step:
                self._corrector_state = (sample, derivative)
        else:
            sample_hat, derivative = self._corrector_state
            self._corrector_state = None
            derivative_next = (sample - denoised) / evaluation.sigma_next
            prev_sample = sample_hat + (evaluation.sigma_next - evaluation.sigma_hat) * (
                0.5 * derivative + 0.5 * derivative_next
            )
        if evaluation.draws_noise:
            noise = self._churn_noise(prev_sample, generator)
            if evaluation.churn_scale > 0:
                prev_sample = prev_sample + evaluation.churn_scale * noise
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
        noise = self._churn_noise(sample, generator)
        if self._initial_churn_scale > 0:
            sample = sample + self._initial_churn_scale * noise
        return sample

    def _churn_noise(
        self, like: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """ε ~ N(0, I) shaped like the sample; the official stream draws it in float64, one tensor per image."""
        dtype = torch.float64 if self._official_noise_stream else like.dtype
        return randn_tensor(like.shape, generator=generator, device=like.device, dtype=dtype).to(like.dtype)

    def _denoised(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """D(x̂; σ) in the sample's dtype: the model output itself, or c_skip x̂ + c_out F for raw networks (Eq. 7)."""
        model_output = model_output.to(sample.dtype)
        if self.config.prediction_type == "sample":
            return model_output
        k = self._step_index
        return self._c_skip[k] * sample + self._c_out[k] * model_output

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, sigmas: float | torch.Tensor
    ) -> torch.Tensor:
        """
        Noisy samples y + σ n for training (Eq. 2): unlike diffusers' EDM schedulers, `sigmas` are continuous noise
        levels (not entries of `timesteps`), e.g. drawn from EDM's log-normal training distribution.

        Args:
            original_samples (`torch.Tensor`): clean samples y, shape (B, …).
            noise (`torch.Tensor`): unit Gaussian noise n, same shape.
            sigmas (`float` or `torch.Tensor`): σ ≥ 0, a scalar or one value per sample (shape (B,) or (B, 1, …)).
        """
        sigmas = torch.as_tensor(sigmas, dtype=original_samples.dtype, device=original_samples.device)
        if sigmas.ndim > 0:
            if sigmas.shape[0] != original_samples.shape[0] or sigmas.numel() != sigmas.shape[0]:
                raise ValueError(
                    f"sigmas must be a scalar or hold one value per sample ({original_samples.shape[0]}), got shape"
                    f" {tuple(sigmas.shape)}."
                )
            sigmas = sigmas.reshape(-1, *([1] * (original_samples.ndim - 1)))
        if sigmas.device.type == "cpu" and bool((sigmas < 0).any()):
            raise ValueError("sigmas must be >= 0 (noise standard deviations).")
        return original_samples + noise * sigmas

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}.")


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
    if not sigma_min > 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}.")
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be larger than sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
    if not math.isfinite(sigma_max):
        raise ValueError(f"sigma_max must be finite, got {sigma_max}.")
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}.")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}.")
    if not s_churn >= 0:
        raise ValueError(f"s_churn must be >= 0 (0 disables churn), got {s_churn}.")
    if not s_tmin >= 0:
        raise ValueError(f"s_tmin must be >= 0, got {s_tmin}.")
    if s_tmax is not None and not s_tmax >= s_tmin:
        raise ValueError(f"s_tmax must be >= s_tmin or None (meaning infinity), got s_tmin={s_tmin}, s_tmax={s_tmax}.")
    if not s_noise > 0:
        raise ValueError(f"s_noise must be > 0, got {s_noise}.")


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
