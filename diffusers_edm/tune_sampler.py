# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.tune_sampler` (also `edm-tune`): see [`diffusers_edm.commands.tune_sampler`]."""

from diffusers_edm.commands.tune_sampler import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
