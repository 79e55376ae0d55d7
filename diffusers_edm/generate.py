# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.generate` (also `edm-generate`, and `accelerate launch diffusers_edm/generate.py`): see
[`diffusers_edm.commands.generate`]."""

from diffusers_edm.commands.common import parse_seeds
from diffusers_edm.commands.generate import GenerationSummary, build_parser, main, rank_batches, split_seeds
from diffusers_edm.pipelines.saved_folders import check_model_folder

__all__ = ["GenerationSummary", "build_parser", "check_model_folder", "main", "parse_seeds", "rank_batches",
           "split_seeds"]

if __name__ == "__main__":
    main()
