# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.reconstruct_phema` (also `edm-phema`): see [`diffusers_edm.commands.reconstruct_phema`]."""

from diffusers_edm.commands.reconstruct_phema import RECORD_NAME, build_parser, main, reconstruct

__all__ = ["RECORD_NAME", "build_parser", "main", "reconstruct"]

if __name__ == "__main__":
    main()
