"""Models: EDM's preconditioned denoiser and the paper's backbones."""

from .dhariwal_unet import DhariwalUNet2DModel
from .song_unet import SongUNet2DModel
from .unet_edm import EDMPreconditionedUNet2DModel, EDMPreconditionedUNet2DOutput

__all__ = ["DhariwalUNet2DModel", "EDMPreconditionedUNet2DModel", "EDMPreconditionedUNet2DOutput", "SongUNet2DModel"]
