# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Pure functions of EDM's samplers (Karras et al. 2022) that both schedulers are built on.

This module is the single place where they are defined: the step levels of a run (the ρ-schedule of Eq. 5, clamped
to the network's noise range as the official sampler does, or the user's own levels), the churn of Algorithm 2 (the
factors γ_i of line 5 and the noise of line 6, drawn as EDM's `generate.py` draws it), the look-up of a timestep in a
run, the noise levels given to `add_noise`, and the checks of the settings the schedulers share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from diffusers.utils.torch_utils import randn_tensor

MAX_CHURN_GAMMA = math.sqrt(2) - 1
"""Upper bound on γ_i (Algorithm 2): beyond it the churn would add more noise than the step already holds."""

SOLVERS = ("heun", "euler")
"""The solvers of Algorithms 1 and 2: Heun's 2nd-order method (2N − 1 evaluations) or Euler's method (N)."""


# --- step levels σ_0 > … > σ_{N−1} of a run -------------------------------------------------------------------------


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The step noise levels σ_0 > … > σ_{N-1} of Eq. 5, without the final σ_N = 0.

    σ_i = (σ_max^(1/ρ) + i/(N−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, evaluated as the official sampler does (in `dtype`).
    For N = 1 (where Eq. 5 divides by zero) the single level is σ_max, so the sampler takes one Euler step to 0.

    Args:
        num_steps (`int`): number of sampling steps N ≥ 1.
        sigma_min (`float`), sigma_max (`float`): noise range, 0 < σ_min < σ_max.
        rho (`float`): schedule exponent ρ > 0 (7 in the paper).
        dtype (`torch.dtype`), device: where the levels are computed.
    """
    if num_steps == 1:
        return torch.full((1,), sigma_max, dtype=dtype, device=device)
    step_indices = torch.arange(num_steps, dtype=dtype, device=device)
    max_inv_rho = sigma_max ** (1 / rho)
    min_inv_rho = sigma_min ** (1 / rho)
    return (max_inv_rho + step_indices / (num_steps - 1) * (min_inv_rho - max_inv_rho)) ** rho


def clamp_to_network_range(
    sigma_min: float, sigma_max: float, net_sigma_min: float, net_sigma_max: float
) -> tuple[float, float]:
    """The noise range [σ_min, σ_max] of a schedule clamped to the range the network supports, as the official
    samplers do (`max(sigma_min, net.sigma_min)`, `min(sigma_max, net.sigma_max)`); a `ValueError` when it is empty."""
    clamped_min, clamped_max = max(sigma_min, net_sigma_min), min(sigma_max, net_sigma_max)
    if not clamped_min < clamped_max:
        raise ValueError(
            f"The noise range [{sigma_min}, {sigma_max}] does not overlap the network's supported range"
            f" [{net_sigma_min}, {net_sigma_max}]; set sigma_min / sigma_max inside the network's range."
        )
    return clamped_min, clamped_max


class ReferenceSampler(NamedTuple):
    """What an official generator does that its images depend on: the precision of its sampler state, and whether it
    draws a normal at every step (also where γ_i = 0) or only where it churns."""

    state_dtype: torch.dtype
    noise_every_step: bool


REFERENCE_SAMPLERS = {
    "edm": ReferenceSampler(torch.float64, noise_every_step=True),  # EDM's generate.py (Karras et al. 2022)
    "edm2": ReferenceSampler(torch.float32, noise_every_step=False),  # EDM2's generate_images.py (Karras et al. 2024)
}
"""The `reference_sampler` choices of [`EDMHeunScheduler`]."""

MAX_INFERENCE_STEPS = 10_000
"""Most sampler steps a run may take: far beyond the paper's largest (512 in the ablations) and small enough that laying
out the run cannot claim gigabytes before the first evaluation."""


def check_num_inference_steps(num_inference_steps: int | None) -> int:
    """The number of sampler steps N as an `int`; a `ValueError` unless it is an integer in [1, MAX_INFERENCE_STEPS]
    (not a `bool`)."""
    if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, float))
            or int(num_inference_steps) != num_inference_steps or not 1 <= num_inference_steps <= MAX_INFERENCE_STEPS):
        raise ValueError(f"num_inference_steps must be an integer >= 1 and <= {MAX_INFERENCE_STEPS}, got"
                         f" {num_inference_steps!r}.")
    return int(num_inference_steps)


def custom_step_sigmas(sigmas: list[float] | torch.Tensor, num_inference_steps: int | None = None) -> torch.Tensor:
    """The user's step levels σ_0 > … > σ_{N−1} > 0 as float64 on the CPU (a trailing 0 is dropped); a `ValueError`
    when they are not finite, positive and strictly decreasing, or disagree with `num_inference_steps`."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sigmas.ndim != 1 or len(sigmas) == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D list of noise levels, got shape {tuple(sigmas.shape)}.")
    if len(sigmas) > 1 and sigmas[-1] == 0:
        sigmas = sigmas[:-1]
    if not bool(torch.isfinite(sigmas).all()) or not bool((sigmas > 0).all()):
        raise ValueError(f"sigmas must be finite and > 0 (a final 0 may be appended), got {sigmas.tolist()}.")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must be strictly decreasing (σ_0 > σ_1 > …), got {sigmas.tolist()}.")
    if num_inference_steps is not None and num_inference_steps != len(sigmas):
        raise ValueError(
            f"num_inference_steps={num_inference_steps} disagrees with the {len(sigmas)} custom sigmas; pass only one"
            " of them."
        )
    return sigmas


def unrounded(sigma: torch.Tensor) -> torch.Tensor:
    """The `round_sigma` of a network with continuous noise levels: the identity."""
    return sigma


# --- churn (Algorithm 2, lines 5–6) ---------------------------------------------------------------------------------


def churn_gammas(
    sigmas: torch.Tensor, s_churn: float, s_tmin: float = 0.0, s_tmax: float | None = math.inf
) -> torch.Tensor:
    """The churn factors γ_i of Algorithm 2 (line 5) for the step levels `sigmas` (σ_0 … σ_{N-1}).

    γ_i = min(S_churn / N, √2 − 1) when S_tmin ≤ σ_i ≤ S_tmax (both ends inclusive; `s_tmax=None` means ∞), else 0.
    They depend only on σ_i, so the churned levels σ̂_i = σ_i (1 + γ_i) are known before sampling starts.
    """
    gamma = min(s_churn / len(sigmas), MAX_CHURN_GAMMA)
    in_window = (sigmas >= s_tmin) & (sigmas <= (math.inf if s_tmax is None else s_tmax))
    return torch.where(in_window, torch.full_like(sigmas, gamma), torch.zeros_like(sigmas))


def rescale_and_churn(
    sample: torch.Tensor,
    rescale: float,
    churn_scale: float,
    draws_noise: bool,
    generator: torch.Generator | list[torch.Generator] | None,
    official_noise_stream: bool,
) -> torch.Tensor:
    """x̂ = s(t̂)/s(t) · x + √max(σ(t̂)² − σ(t)², 0) s(t̂) S_noise ε (Algorithm 2, lines 5–6, with the scaling s(t) of
    Eq. 4; `rescale` is the first factor and `churn_scale` the second, both precomputed).

    ε ~ N(0, I), shaped like the sample and in its dtype, is drawn when `draws_noise`. With `official_noise_stream` it
    is drawn as EDM's and EDM2's generators draw it: in the sampler state's dtype (float64 for EDM, float32 for EDM2),
    one tensor per image with a list of generators, also where `churn_scale` is 0 (so the next step's noise comes from
    the same place in each image's random stream).
    """
    if rescale != 1.0:
        sample = rescale * sample
    if draws_noise:
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        if churn_scale > 0:
            sample = sample + churn_scale * noise.to(sample.dtype)
    return sample


# --- timesteps and noise levels given by the caller ----------------------------------------------------------------


def first_predictor_index(
    timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor, is_correction: Sequence[bool]
) -> int:
    """Index in `schedule_timesteps` of the first step that starts at `timestep`: the first evaluation at that level
    that is not a correction (which needs its step's first evaluation). In the Heun layout σ_{i+1} is the level of
    step i's correction and of step i + 1's first evaluation; the latter is taken, so a run started part-way (e.g.
    image-to-image) neither skips a level nor starts with a correction. A `ValueError` when no step starts there."""
    if isinstance(timestep, torch.Tensor):
        timestep = timestep.to(schedule_timesteps.device, schedule_timesteps.dtype)
    positions = (schedule_timesteps == timestep).nonzero().flatten().tolist()
    starts = [k for k in positions if not is_correction[k]]
    if not starts:
        raise ValueError(
            f"timestep {timestep!r} is not the level of a step of this schedule; pass the values of"
            " `scheduler.timesteps` in order (after `set_timesteps`)."
        )
    return starts[0]


def noise_levels_for(levels: float | torch.Tensor, samples: torch.Tensor, name: str) -> torch.Tensor:
    """The noise levels σ given to `add_noise` (a scalar, one value, or one value per sample) in the dtype and on the
    device of `samples` (B, …), shaped to broadcast over them; a `ValueError` naming the argument `name` when their
    shape does not fit or (checked only on the CPU, to avoid a device synchronisation) a level is negative."""
    levels = torch.as_tensor(levels, dtype=samples.dtype, device=samples.device)
    if levels.ndim > 0 and levels.numel() == 1:
        levels = levels.reshape([1] * samples.ndim)
    elif levels.ndim > 0:
        if levels.shape[0] != samples.shape[0] or levels.numel() != levels.shape[0]:
            raise ValueError(
                f"{name} must be a scalar, one value or hold one value per sample ({samples.shape[0]}), got shape"
                f" {tuple(levels.shape)}."
            )
        levels = levels.reshape(-1, *([1] * (samples.ndim - 1)))
    if levels.device.type == "cpu" and bool((levels < 0).any()):
        raise ValueError(f"{name} must be >= 0 (noise levels σ, the standard deviations of the added noise).")
    return levels


# --- checks of the shared settings ----------------------------------------------------------------------------------


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
