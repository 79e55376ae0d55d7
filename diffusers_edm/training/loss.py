"""EDM's training objective (Karras et al. 2022, Eq. 2 and 8, Table 1 "ours").

The single place where the training noise distribution ln σ ~ N(P_mean, P_std²) and the loss weight
λ(σ) = (σ² + σ_data²) / (σ σ_data)² are defined.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]
"""D(x; σ, class_labels, augment_labels) -> denoised images."""

AugmentPipe = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """λ(σ) = (σ² + σ_data²) / (σ σ_data)² (Table 1): the weight that makes λ(σ) c_out(σ)² = 1, i.e. gives the
    network's effective target unit weight at every noise level."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_training_sigmas(
    batch_size: int,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training noise levels, shape (B, 1, 1, 1): ln σ ~ N(P_mean, P_std²) (Table 1), drawn as σ = exp(n P_std + P_mean)
    with n a unit normal (one `randn` call, as the official code, so the random stream matches it)."""
    unit_normal = torch.randn([batch_size, 1, 1, 1], device=device, generator=generator)
    return (unit_normal * p_std + p_mean).exp()


class EDMLoss:
    """
    The per-pixel EDM loss λ(σ) ‖D(y + n; σ) − y‖² with n ~ N(0, σ² I) and y the (augmented) training images.

    Call order, as in the official implementation (it fixes the random stream): draw σ, compute λ(σ), augment the
    images, draw n, evaluate the denoiser. It returns the unreduced elementwise loss (B, C, H, W); EDM's objective
    sums it over pixels and averages over images (`loss.sum() / batch_size`), which sets the effective learning rate.

    Args:
        p_mean (`float`, defaults to -1.2), p_std (`float`, defaults to 1.2): the log-normal σ distribution.
        sigma_data (`float`, defaults to 0.5): σ_data of the weight λ(σ) (and of the model's preconditioning).
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> None:
        if not p_std > 0:
            raise ValueError(f"p_std must be > 0, got {p_std}.")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}.")
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def __call__(
        self,
        denoiser: Denoiser,
        images: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        augment_pipe: AugmentPipe | None = None,
        sigma: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            denoiser: D(x, σ, class_labels, augment_labels), e.g. an `EDMPreconditionedUNet2DModel` call.
            images (`torch.Tensor`): clean images y in [-1, 1], (B, C, H, W).
            class_labels (`torch.Tensor`, *optional*): passed through to the denoiser.
            augment_pipe (*optional*): returns (augmented images, augment labels); `None` for no augmentation.
            sigma, noise (`torch.Tensor`, *optional*): force the σ (B, 1, 1, 1) and the unit noise draw (tests).

        Returns:
            `(loss, sigma)`: the elementwise loss (B, C, H, W) and the σ used, (B, 1, 1, 1).
        """
        if sigma is None:
            sigma = sample_training_sigmas(images.shape[0], self.p_mean, self.p_std, device=images.device)
        weight = edm_loss_weight(sigma, self.sigma_data)
        augment_labels = None
        if augment_pipe is not None:
            images, augment_labels = augment_pipe(images)
        if noise is None:
            noise = torch.randn_like(images)
        denoised = denoiser(images + noise * sigma, sigma, class_labels, augment_labels)
        return weight * (denoised - images) ** 2, sigma
