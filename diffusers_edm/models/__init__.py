"""Models: EDM's preconditioned denoiser, the paper's backbones and EDM2's."""

from .dhariwal_unet import DhariwalUNet2DModel
from .edm2_unet import EDM2UNet2DModel
from .song_unet import SongUNet2DModel
from .unet_edm import EDMPreconditionedUNet2DModel, EDMPreconditionedUNet2DOutput

__all__ = ["DhariwalUNet2DModel", "EDM2UNet2DModel", "EDMPreconditionedUNet2DModel", "EDMPreconditionedUNet2DOutput",
           "SongUNet2DModel"]
