# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""EDM's stochastic 2nd-order sampler (Karras et al. 2022, Algorithm 2) as a diffusers scheduler."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..preconditioning import edm_preconditioning
from .scheduling_edm_base import SOLVERS, EDMSchedulerBase, EDMSchedulerOutput, TensorFunction, documented
from .scheduling_edm_base import check_choice, check_churn, check_positive, check_sigma_order
from .sigma_schedule import karras_sigmas

# Pipelines saved with this scheduler name this module in model_index.json, and diffusers finds how to load it by
# looking `SchedulerMixin` up here: it belongs to this module's public names.
__all__ = ["EDMHeunScheduler", "EDMHeunSchedulerOutput", "SchedulerMixin"]

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
TIMESTEP_TYPES = ("sigma", "c_noise")


@dataclass
class EDMHeunSchedulerOutput(EDMSchedulerOutput):
    """
    Output of [`EDMHeunScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample to feed to the model at the next timestep (already churned when the next step adds noise), or
            the final sample after the last step.
        pred_original_sample (`torch.Tensor` of the same shape):
            The denoised estimate D(x; σ) of this model evaluation.
    """


class _Evaluation(NamedTuple):
    """One model evaluation of Algorithm 2 (of step i) and the noise levels it needs."""

    is_correction: bool  # False: Euler predictor at σ̂_i (line 8); True: Heun corrector at σ_{i+1} (line 11)
    sigma: float  # the level the model is evaluated at
    sigma_hat: float  # σ̂_i
    sigma_next: float  # σ_{i+1}
    finishes_step: bool  # whether this evaluation completes x_{i+1}
    next_churn_scale: float  # √(σ̂_{i+1}² − σ_{i+1}²) · S_noise, added to x_{i+1}; 0 when γ_{i+1} = 0 or i = N-1
    draws_noise: bool  # whether a noise tensor is drawn when this evaluation completes x_{i+1}
    next_rescale: float = 1.0  # s(t) = 1: x_{i+1} is never rescaled


class EDMHeunScheduler(EDMSchedulerBase):
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
    _output_class = EDMHeunSchedulerOutput

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
        check_choice("solver", solver, SOLVERS)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        if timestep_type is not None:
            check_choice("timestep_type", timestep_type, TIMESTEP_TYPES)
        self._start_schedule(num_train_timesteps)

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

    init_noise_sigma = documented(
        EDMSchedulerBase.init_noise_sigma,
        """Standard deviation of the initial sample x̂_0: √(σ_0² + S_noise² (σ̂_0² − σ_0²)), i.e. σ_max without churn.

        Algorithm 2 draws x_0 ~ N(0, σ_0² I) and churns it to σ̂_0 with noise of scale S_noise; both are Gaussian, so
        one draw at this standard deviation is the same distribution.
        """,
    )

    set_timesteps = documented(
        EDMSchedulerBase.set_timesteps,
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
        """,
    )

    def _schedule(self, net_sigma_min: float, net_sigma_max: float) -> Callable[[int], torch.Tensor]:
        """The ρ-schedule (Eq. 5) of the configured range clamped to the network's, as the official sampler does."""

        def rho_schedule(num_steps: int) -> torch.Tensor:
            config = self.config
            sigma_min, sigma_max = max(config.sigma_min, net_sigma_min), min(config.sigma_max, net_sigma_max)
            if not sigma_min < sigma_max:
                raise ValueError(
                    f"The schedule range [{config.sigma_min}, {config.sigma_max}] does not overlap the network's"
                    f" supported range [{net_sigma_min}, {net_sigma_max}]."
                )
            return karras_sigmas(num_steps, sigma_min, sigma_max, config.rho)

        return rho_schedule

    def _timesteps_for(self, levels: torch.Tensor) -> torch.Tensor:
        """The evaluation levels σ, or c_noise(σ) = ¼ ln σ in float32 for `timestep_type="c_noise"`."""
        if self.resolved_timestep_type == "sigma":
            return levels
        return edm_preconditioning(levels, self.config.sigma_data).c_noise.to(torch.float32)

    def _build_evaluations(
        self, step_sigmas: torch.Tensor, round_sigma: TensorFunction, official_noise_stream: bool
    ) -> None:
        """Lays out the model evaluations of Algorithm 2 for the float64 step levels σ_0 … σ_{N-1} (rounded first)."""
        config = self.config
        step_sigmas = round_sigma(step_sigmas)
        gammas = self._churn_gammas(step_sigmas)
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
            draws = churn[i + 1] > 0 or (official_noise_stream and not last)
            evaluations.append(
                _Evaluation(False, sigma_hat[i], sigma_hat[i], sigma[i + 1], single, churn[i + 1], single and draws)
            )
            if not single:
                evaluations.append(
                    _Evaluation(True, sigma[i + 1], sigma_hat[i], sigma[i + 1], True, churn[i + 1], draws)
                )
        self._store_evaluations(evaluations)
        self._initial_rescale, self._initial_churn_scale = 1.0, churn[0]
        if official_noise_stream or gammas[0] == 0:
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
        positions = self._timestep_positions(timestep, schedule_timesteps, "one of the scheduler's timesteps")
        return positions[1 if len(positions) > 1 else 0]

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

    step = documented(
        EDMSchedulerBase.step,
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
        """,
    )

    def _solver_step(
        self, evaluation: _Evaluation, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Euler step to σ_{i+1} at σ̂_i (Algorithm 2, line 8) or the trapezoidal correction (line 11)."""
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
        return prev_sample, denoised

    add_initial_churn = documented(
        EDMSchedulerBase.add_initial_churn,
        """
        Churns the initial sample x_0 = σ_0 n into x̂_0 (Algorithm 2, lines 5–6 of step 0) when the official noise
        stream is in use (`set_timesteps(..., official_noise_stream=True)`); otherwise step 0's churn is already part
        of `init_noise_sigma` and the sample is returned unchanged. Call it once, before the first evaluation.
        """,
    )

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
