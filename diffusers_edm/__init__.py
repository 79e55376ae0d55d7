"""diffusers-edm: EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") as a
diffusers plugin: EDM's sampler as a scheduler, its preconditioned denoiser as a model, and a pipeline."""

from .models import EDMPreconditionedUNet2DModel
from .pipelines import EDMPipeline
from .preconditioning import edm_preconditioning
from .schedulers import EDMHeunScheduler

__version__ = "0.1.0"

__all__ = ["EDMHeunScheduler", "EDMPipeline", "EDMPreconditionedUNet2DModel", "edm_preconditioning"]
