"""Models: EDM's preconditioned denoiser and its backbones."""

from .unet_edm import EDMPreconditionedUNet2DModel, EDMPreconditionedUNet2DOutput

__all__ = ["EDMPreconditionedUNet2DModel", "EDMPreconditionedUNet2DOutput"]
