"""diffusers-edm: EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") as a
diffusers plugin: EDM's sampler as a scheduler, its preconditioned denoiser (with the paper's own networks and EDM2's)
as a model, and pipelines (with EDM2's latent space through a VAE, and text-to-image through a text encoder)."""

from .models import DhariwalUNet2DModel, EDM2UNet2DModel, EDMPreconditionedUNet2DModel, SongUNet2DModel
from .pipelines import EDMPipeline, EDMTextToImagePipeline
from .preconditioning import (
    EDMPreconditioning,
    IDDPMPreconditioning,
    VEPreconditioning,
    VPPreconditioning,
    edm_preconditioning,
    make_preconditioning,
)
from .schedulers import EDMAblationScheduler, EDMHeunScheduler

__version__ = "0.1.0"

__all__ = [
    "DhariwalUNet2DModel",
    "EDM2UNet2DModel",
    "EDMAblationScheduler",
    "EDMHeunScheduler",
    "EDMPipeline",
    "EDMPreconditionedUNet2DModel",
    "EDMPreconditioning",
    "EDMTextToImagePipeline",
    "IDDPMPreconditioning",
    "SongUNet2DModel",
    "VEPreconditioning",
    "VPPreconditioning",
    "edm_preconditioning",
    "make_preconditioning",
]
