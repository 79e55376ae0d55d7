# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""EDM2's latent space (Karras et al. 2024, Sec. 5; its `StabilityVAEEncoder`): images become latents through a
diffusers `AutoencoderKL` that sees pixels in [0, 1], and the latents are scaled per channel to the diffusion model's
working range. The VAE's own config holds the transform, as diffusers' convention for latent statistics:
`latents_mean` and `latents_std` are the raw latents' per-channel mean and standard deviation (EDM2's `raw_mean`,
`raw_std`), `scaling_factor` the standard deviation wanted for the model (EDM2's `final_std`, 0.5). With
scale = scaling_factor / latents_std and bias = −latents_mean · scale (float32, as EDM2 computes them):

* encode: raw = [posterior mean, posterior std] of `vae.encode(pixels / 255)` (8 channels for a 4-channel VAE, the
  format EDM2 stores datasets in); a latent is (mean + n · std) · scale + bias with n ~ N(0, I);
* decode: pixels = uint8(clamp(vae.decode((latent − bias) / scale), 0, 1) · 255), truncated.
"""

from __future__ import annotations

import torch

from ..errors import EDMInputError

EDM2_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
"""Per-channel mean of the raw latents of `stabilityai/sd-vae-ft-mse` on ImageNet-512 (EDM2's `raw_mean`)."""

EDM2_RAW_STD = (4.17, 4.62, 3.71, 3.28)
"""Their standard deviation (EDM2's `raw_std`)."""

EDM2_FINAL_STD = 0.5
"""Standard deviation of the latents the diffusion model works on (EDM2's `final_std`; σ_data is 0.5)."""


def latent_scale_and_bias(vae_config, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel scale and bias (1, C, 1, 1) float32 of a VAE's latent transform (see the module docstring).

    Raises:
        EDMInputError: the config lacks `latents_mean` / `latents_std`, or their lengths are not the latent channels.
    """
    mean, std = vae_config.get("latents_mean"), vae_config.get("latents_std")
    channels = vae_config.get("latent_channels")
    if mean is None or std is None or len(mean) != channels or len(std) != channels:
        raise EDMInputError(
            f"The VAE config needs latents_mean and latents_std with one value per latent channel ({channels}): the"
            " statistics of its raw latents (EDM2's raw_mean and raw_std; for stabilityai/sd-vae-ft-mse"
            f" {list(EDM2_RAW_MEAN)} and {list(EDM2_RAW_STD)}). Set them with vae.register_to_config(...)."
        )
    scale = torch.tensor(vae_config.get("scaling_factor", EDM2_FINAL_STD), dtype=torch.float32) / torch.tensor(
        std, dtype=torch.float32)
    bias = -torch.tensor(mean, dtype=torch.float32) * scale
    return scale.reshape(1, -1, 1, 1).to(device), bias.reshape(1, -1, 1, 1).to(device)


@torch.no_grad()
def encode_raw_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """[posterior mean, posterior std] (B, 2C, h, w) float32 of uint8 pixels (B, 3, H, W), as EDM2 stores datasets."""
    images = pixels.to(device=vae.device, dtype=torch.float32) / 255
    distribution = vae.encode(images.to(vae.dtype)).latent_dist
    return torch.cat([distribution.mean, distribution.std], dim=1).to(torch.float32)


def sample_latents(raw: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A latent draw (mean + n · std) · scale + bias from raw latents (B, 2C, h, w), n ~ N(0, I) from `generator`."""
    mean, std = raw.to(torch.float32).chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + noise * std) * scale.to(mean.device) + bias.to(mean.device)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (B, 3, H, W) float32 of latents the diffusion model produced: vae.decode((x − bias) / scale),
    clamped."""
    scale, bias = latent_scale_and_bias(vae.config, latents.device)
    raw = (latents.to(torch.float32) - bias) / scale
    return vae.decode(raw.to(vae.dtype)).sample.to(torch.float32).clamp(0, 1)


def quantize_vae_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 of pixels in [0, 1], truncated as EDM2's generator saves them."""
    return (pixels * 255).to(torch.uint8)
