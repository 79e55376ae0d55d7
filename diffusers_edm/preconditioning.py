"""Network preconditioning of EDM (Karras et al. 2022, Eq. 7 and Table 1).

The denoiser is D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)). This module is the single place where the
coefficients are defined; the model, the scheduler's raw-network mode and the training loss all import them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PreconditioningCoefficients(NamedTuple):
    """The four scalings of Table 1, each broadcastable against the sample."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float = 0.5) -> PreconditioningCoefficients:
    """EDM's preconditioning (Table 1, "ours"), evaluated in the dtype of `sigma`.

    c_skip = σ_data² / (σ² + σ_data²), c_out = σ σ_data / √(σ² + σ_data²), c_in = 1 / √(σ² + σ_data²) and
    c_noise = ¼ ln σ.

    Args:
        sigma (`torch.Tensor`): noise levels σ > 0, any shape; the coefficients have the same shape.
        sigma_data (`float`): standard deviation of the data distribution σ_data (0.5 in the paper).
    """
    sigma_sq_plus_data_sq = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / sigma_sq_plus_data_sq
    c_out = sigma * sigma_data / sigma_sq_plus_data_sq.sqrt()
    c_in = 1 / sigma_sq_plus_data_sq.sqrt()
    c_noise = sigma.log() / 4
    return PreconditioningCoefficients(c_skip, c_out, c_in, c_noise)
