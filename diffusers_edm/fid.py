# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.fid ref|calc` (also `edm-fid`): see [`diffusers_edm.commands.fid`]."""

from diffusers_edm.commands.fid import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
