"""Noise-level discretisation of EDM's sampler (Karras et al. 2022, Eq. 5 and Algorithm 2).

This module is the single place where the ρ-schedule and the churn levels are defined.
"""

from __future__ import annotations

import math

import torch

MAX_CHURN_GAMMA = math.sqrt(2) - 1
"""Upper bound on γ_i (Algorithm 2): beyond it the churn would add more noise than the step already holds."""


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


def churn_gammas(
    sigmas: torch.Tensor, s_churn: float, s_tmin: float = 0.0, s_tmax: float = math.inf
) -> torch.Tensor:
    """The churn factors γ_i of Algorithm 2 (line 5) for the step levels `sigmas` (σ_0 … σ_{N-1}).

    γ_i = min(S_churn / N, √2 − 1) when S_tmin ≤ σ_i ≤ S_tmax (both ends inclusive), else 0. They depend only on σ_i,
    so the churned levels σ̂_i = σ_i (1 + γ_i) are known before sampling starts.
    """
    gamma = min(s_churn / len(sigmas), MAX_CHURN_GAMMA)
    in_window = (sigmas >= s_tmin) & (sigmas <= s_tmax)
    return torch.where(in_window, torch.full_like(sigmas, gamma), torch.zeros_like(sigmas))
