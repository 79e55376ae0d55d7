# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The command-line tools, one module each (`train`, `generate`, `fid`, `convert`, `reconstruct_phema`,
`tune_sampler`), over the helpers they share (`common`: the one-line-error parser, argument types, processes;
`sampling`: the sampler, guidance and fast-path flags and loading the model they sample)."""
