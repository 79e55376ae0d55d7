"""The training objectives of Table 1 (Karras et al. 2022, Eq. 2 and 8): EDM's own loss and the VP and VE baselines,
and EDM2's uncertainty-weighted form of EDM's loss (Karras et al. 2024, Eq. 21).

The single place where the training noise distributions and loss weights are defined: EDM's ln σ ~ N(P_mean, P_std²)
with λ(σ) = (σ² + σ_data²) / (σ σ_data)², VP's σ = σ_VP(t) with t ~ U(ε_t, 1) and VE's log-uniform σ ∈ [σ_min, σ_max],
both with λ(σ) = 1/σ². The parameters of a model's loss come from its preconditioning ([`loss_for_model`]).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from ..errors import TrainingError
from ..preconditioning import (
    EDM_SIGMA_DATA,
    EDMPreconditioning,
    Preconditioning,
    VEPreconditioning,
    VPPreconditioning,
    vp_sigma,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]
"""D(x; σ, class_labels, augment_labels) -> denoised images."""

AugmentPipe = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def _default(cls: type, name: str):
    """The default of a preconditioning's constructor argument: the loss shares its parameters' defaults."""
    return inspect.signature(cls).parameters[name].default


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = EDM_SIGMA_DATA) -> torch.Tensor:
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


class TrainingLoss(ABC):
    """
    The per-pixel loss λ(σ) ‖D(y + n; σ) − y‖² with n ~ N(0, σ² I) and y the (augmented) training images; subclasses
    define the σ distribution ([`sample_sigma`]) and the weight λ(σ) ([`weight`]).

    Call order, as in the official implementation (it fixes the random stream): draw σ, compute λ(σ), augment the
    images, draw n, evaluate the denoiser. It returns the unreduced elementwise loss (B, C, H, W); EDM's objective
    sums it over pixels and averages over images (`loss.sum() / batch_size`), which sets the effective learning rate.
    """

    @abstractmethod
    def sample_sigma(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Training noise levels (B, 1, 1, 1), drawn with one call of the global torch generator, as the official
        loss draws them."""

    @abstractmethod
    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """The loss weight λ(σ), in the shape and dtype of `sigma`."""

    @property
    @abstractmethod
    def description(self) -> str:
        """The loss in words and formulas, for model cards."""

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
            sigma = self.sample_sigma(images.shape[0], device=images.device)
        weight = self.weight(sigma)
        augment_labels = None
        if augment_pipe is not None:
            images, augment_labels = augment_pipe(images)
        if noise is None:
            noise = torch.randn_like(images)
        denoised = denoiser(images + noise * sigma, sigma, class_labels, augment_labels)
        return weight * (denoised - images) ** 2, sigma

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in inspect.signature(type(self)).parameters)
        return f"{type(self).__name__}({arguments})"


class EDMLoss(TrainingLoss):
    """
    EDM's loss (Table 1, "ours"): ln σ ~ N(P_mean, P_std²), λ(σ) = (σ² + σ_data²) / (σ σ_data)². See
    [`TrainingLoss`] for the call.

    Args:
        p_mean (`float`, defaults to -1.2), p_std (`float`, defaults to 1.2): the log-normal σ distribution.
        sigma_data (`float`, defaults to 0.5): σ_data of the weight λ(σ) (and of the model's preconditioning).
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = EDM_SIGMA_DATA) -> None:
        if not p_std > 0:
            raise ValueError(f"p_std must be > 0, got {p_std}.")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}.")
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def sample_sigma(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return sample_training_sigmas(batch_size, self.p_mean, self.p_std, device=device)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_loss_weight(sigma, self.sigma_data)

    @property
    def description(self) -> str:
        return (f"EDM's loss (ln σ ~ N({self.p_mean:g}, {self.p_std:g}²), λ(σ) = (σ² + σ_data²)/(σ σ_data)², "
                f"σ_data = {self.sigma_data:g})")


class EDM2Loss(EDMLoss):
    """
    EDM2's uncertainty-weighted loss (Karras et al. 2024, Sec. 2.4 and Eq. 21): σ drawn and weighted as EDM's, and
    each σ's learned log-variance u(σ) of the model's uncertainty head (`return_logvar=True`, the `edm2_unet` backbone)
    divides the weighted error: λ(σ)/e^u(σ) ‖D(y + n; σ) − y‖² + u(σ). Call order as the official loss: draw σ, draw n,
    evaluate the model.

    Args:
        p_mean (`float`, defaults to -0.4), p_std (`float`, defaults to 1.0): the log-normal σ distribution (EDM2's
            ImageNet-512 values; its ImageNet-64 models use -0.8 and 1.6).
        sigma_data (`float`, defaults to 0.5): σ_data of λ(σ).
    """

    def __init__(self, p_mean: float = -0.4, p_std: float = 1.0, sigma_data: float = EDM_SIGMA_DATA) -> None:
        super().__init__(p_mean, p_std, sigma_data)

    def __call__(  # type: ignore[override]
        self,
        model,
        images: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            model: an `EDMPreconditionedUNet2DModel` with an uncertainty head (called with `return_logvar=True`).
            images (`torch.Tensor`): clean images (or latents) y, (B, C, H, W).
            class_labels (`torch.Tensor`, *optional*): passed through to the model.
            sigma, noise (`torch.Tensor`, *optional*): force the σ (B, 1, 1, 1) and the unit noise draw (tests).

        Returns:
            `(loss, sigma)`: the elementwise loss (B, C, H, W) and the σ used, (B, 1, 1, 1).
        """
        if sigma is None:
            sigma = self.sample_sigma(images.shape[0], device=images.device)
        weight = self.weight(sigma)
        if noise is None:
            noise = torch.randn_like(images)
        output = model(images + noise * sigma, sigma, class_labels=class_labels, return_logvar=True)
        return weight / output.logvar.exp() * (output.sample - images) ** 2 + output.logvar, sigma

    @property
    def description(self) -> str:
        return (f"EDM2's uncertainty-weighted loss (ln σ ~ N({self.p_mean:g}, {self.p_std:g}²), λ(σ)/e^u(σ) ‖D − y‖²"
                f" + u(σ), σ_data = {self.sigma_data:g})")


class _UniformDrawLoss(TrainingLoss):
    """The baselines' losses (Table 1, VP and VE): σ from one uniform draw u ~ U(0, 1) per image (one `torch.rand`
    call, as the official code) through `sigma_from_uniform`, and λ(σ) = 1/σ²."""

    @abstractmethod
    def sigma_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """σ for uniform draws u ∈ [0, 1), in the dtype of `u`."""

    def sample_sigma(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return self.sigma_from_uniform(torch.rand([batch_size, 1, 1, 1], device=device))

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / sigma**2


class VPLoss(_UniformDrawLoss):
    """
    The variance-preserving baseline's loss (Table 1, "VP"; Song et al. 2021): t ~ U(ε_t, 1), drawn as
    t = 1 + u (ε_t − 1) with u ~ U(0, 1) (one `torch.rand` call, as the official code), σ = σ_VP(t) (see
    [`vp_sigma`]) and λ(σ) = 1/σ². See [`TrainingLoss`] for the call.

    Args:
        beta_d (`float`, defaults to 19.9), beta_min (`float`, defaults to 0.1): the VP schedule.
        epsilon_t (`float`, defaults to 1e-5): smallest training time t.
    The defaults are those of [`VPPreconditioning`].
    """

    def __init__(
        self,
        beta_d: float = _default(VPPreconditioning, "beta_d"),
        beta_min: float = _default(VPPreconditioning, "beta_min"),
        epsilon_t: float = _default(VPPreconditioning, "epsilon_t"),
    ) -> None:
        if not beta_d > 0:
            raise ValueError(f"beta_d must be > 0, got {beta_d}.")
        if not beta_min >= 0:
            raise ValueError(f"beta_min must be >= 0, got {beta_min}.")
        if not 0 < epsilon_t < 1:
            raise ValueError(f"epsilon_t must lie in (0, 1), got {epsilon_t}.")
        self.beta_d, self.beta_min, self.epsilon_t = beta_d, beta_min, epsilon_t

    def sigma_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """σ for uniform draws u ∈ [0, 1): σ_VP(1 + u (ε_t − 1)), in the dtype of `u`."""
        return vp_sigma(1 + u * (self.epsilon_t - 1), self.beta_d, self.beta_min)

    @property
    def description(self) -> str:
        return (f"the VP baseline's loss (t ~ U({self.epsilon_t:g}, 1), σ = σ_VP(t) with β_d = {self.beta_d:g}, "
                f"β_min = {self.beta_min:g}, λ(σ) = 1/σ²)")


class VELoss(_UniformDrawLoss):
    """
    The variance-exploding baseline's loss (Table 1, "VE"; Song et al. 2021): log-uniform σ = σ_min (σ_max/σ_min)^u
    with u ~ U(0, 1) (one `torch.rand` call, as the official code) and λ(σ) = 1/σ². See [`TrainingLoss`] for the call.

    Args:
        sigma_min (`float`, defaults to 0.02), sigma_max (`float`, defaults to 100): the σ range; the defaults are
            those of [`VEPreconditioning`].
    """

    def __init__(
        self,
        sigma_min: float = _default(VEPreconditioning, "sigma_min"),
        sigma_max: float = _default(VEPreconditioning, "sigma_max"),
    ) -> None:
        if not 0 < sigma_min < sigma_max < float("inf"):
            raise ValueError(f"Need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """σ for uniform draws u ∈ [0, 1): σ_min (σ_max/σ_min)^u, in the dtype of `u`."""
        return self.sigma_min * ((self.sigma_max / self.sigma_min) ** u)

    @property
    def description(self) -> str:
        return (f"the VE baseline's loss (log-uniform σ in [{self.sigma_min:g}, {self.sigma_max:g}], "
                f"λ(σ) = 1/σ²)")


TRAINABLE_PRECONDITIONINGS = ("edm", "vp", "ve")
"""Preconditionings with a training loss (Table 1); the paper has none for iDDPM, whose models it only samples."""


def check_trainable(preconditioning: str) -> None:
    """A one-line [`TrainingError`] unless models with this preconditioning can be trained."""
    if preconditioning == "iddpm":
        raise TrainingError(
            "The 'iddpm' preconditioning has no training loss (the paper only samples the converted iDDPM models);"
            f" train with one of {', '.join(TRAINABLE_PRECONDITIONINGS)}."
        )
    if preconditioning not in TRAINABLE_PRECONDITIONINGS:
        raise TrainingError(
            f"Unknown preconditioning {preconditioning!r}; train with one of {', '.join(TRAINABLE_PRECONDITIONINGS)}."
        )


def loss_for_preconditioning(
    precond: Preconditioning, p_mean: float = -1.2, p_std: float = 1.2
) -> EDMLoss | VPLoss | VELoss:
    """The training loss that belongs to a preconditioning (Table 1), with its parameters (σ_data; β_d, β_min, ε_t;
    σ_min, σ_max) read from it. `p_mean` and `p_std` are EDM's σ distribution; the VP and VE losses ignore them."""
    check_trainable(precond.name)
    if isinstance(precond, EDMPreconditioning):
        return EDMLoss(p_mean=p_mean, p_std=p_std, sigma_data=precond.sigma_data)
    if isinstance(precond, VPPreconditioning):
        return VPLoss(beta_d=precond.beta_d, beta_min=precond.beta_min, epsilon_t=precond.epsilon_t)
    if isinstance(precond, VEPreconditioning):
        return VELoss(sigma_min=precond.sigma_min, sigma_max=precond.sigma_max)
    raise TrainingError(f"No training loss for the preconditioning {precond!r}.")


def loss_for_model(model, p_mean: float = -1.2, p_std: float = 1.2) -> EDMLoss | VPLoss | VELoss:
    """The training loss of an `EDMPreconditionedUNet2DModel`, with the parameters of its preconditioning
    (`model.precond`): [`EDMLoss`] (σ_data), [`VPLoss`] (β_d, β_min, ε_t) or [`VELoss`] (σ_min, σ_max). A model wrapped
    by DDP (`.module`) or `torch.compile` (`._orig_mod`) is unwrapped; an iDDPM model raises a [`TrainingError`].

    Args:
        model: the denoiser (or its `Preconditioning`).
        p_mean (`float`), p_std (`float`): EDM's σ distribution (ignored by the VP and VE losses).
    """
    if isinstance(model, Preconditioning):
        return loss_for_preconditioning(model, p_mean, p_std)
    while not hasattr(model, "precond") and (hasattr(model, "module") or hasattr(model, "_orig_mod")):
        model = model.module if hasattr(model, "module") else model._orig_mod
    precond = getattr(model, "precond", None)
    if not isinstance(precond, Preconditioning):
        raise TypeError(f"loss_for_model needs an EDMPreconditionedUNet2DModel, got {type(model).__name__}.")
    return loss_for_preconditioning(precond, p_mean, p_std)
