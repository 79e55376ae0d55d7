# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.convert_edm_checkpoint NET.pkl OUT [--verify]`: the converter's command line
([`diffusers_edm.commands.convert`]) and its library functions ([`diffusers_edm.conversion.convert`]) at their
earlier import path."""

import sys

from diffusers_edm.commands.convert import main
from diffusers_edm.conversion.convert import (
    ConversionResult,
    convert_edm_checkpoint,
    pipeline_from_snapshot,
    unet_config_from_snapshot,
    unet_from_snapshot,
)
from diffusers_edm.conversion.edm_snapshot import read_edm_snapshot
from diffusers_edm.errors import OutputFolderError, UnsafeCheckpointError, VerificationFailedError
from diffusers_edm.sampler_presets import SAMPLER_SETTINGS_FILE

__all__ = [
    "SAMPLER_SETTINGS_FILE",
    "ConversionResult",
    "OutputFolderError",
    "UnsafeCheckpointError",
    "VerificationFailedError",
    "convert_edm_checkpoint",
    "main",
    "pipeline_from_snapshot",
    "read_edm_snapshot",
    "unet_config_from_snapshot",
    "unet_from_snapshot",
]

if __name__ == "__main__":
    sys.exit(main())
