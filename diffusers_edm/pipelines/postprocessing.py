# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Turning samples in [-1, 1] into images: EDM's 8-bit quantisation and diffusers' `output_type`s."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from .latents import quantize_vae_pixels

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def quantize_edm_images(sample: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, C, H, W) of samples in [-1, 1], as EDM's generate.py saves them: clip(127.5 x + 128, 0, 255)
    truncated. Images that were read from 8-bit files (x = u / 127.5 − 1) come back as exactly u."""
    return (sample * 127.5 + 128).clip(0, 255).to(torch.uint8)


def postprocess_edm_images(
    sample: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Converts samples in [-1, 1] to "pil" images quantised by [`quantize_edm_images`], to float32 "np"
    (B, H, W, C) / "pt" (B, C, H, W) arrays in [0, 1] as diffusers does, or leaves them as they are ("latent")."""
    if output_type == "latent":
        return sample
    if output_type == "pil":
        pixels = quantize_edm_images(sample).permute(0, 2, 3, 1).cpu().numpy()
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        return [PIL.Image.fromarray(image) for image in pixels]
    images = (sample / 2 + 0.5).clamp(0, 1).to(torch.float32)
    if output_type == "pt":
        return images
    return images.permute(0, 2, 3, 1).cpu().numpy()


def postprocess_vae_pixels(
    pixels: torch.Tensor, output_type: str
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Converts a VAE's decoded pixels in [0, 1] to "pil" images (× 255 truncated to uint8, as EDM2's generator saves
    them) or float32 "np" (B, H, W, C) / "pt" (B, C, H, W) arrays."""
    if output_type == "pil":
        array = quantize_vae_pixels(pixels).permute(0, 2, 3, 1).cpu().numpy()
        return [PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in array]
    if output_type == "pt":
        return pixels
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
