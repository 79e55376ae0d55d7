# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The fast sampling paths, at their earlier import path; they live in [`diffusers_edm.pipelines.fast_sampling`]."""

from .pipelines.fast_sampling import (  # noqa: F401
    COMPILE_MODES,
    DTYPES,
    CompileStatistics,
    FastSampling,
    accelerate_pipeline,
    compile_statistics,
    measure_compilation,
    resolve_fast_settings,
    set_tf32,
)
