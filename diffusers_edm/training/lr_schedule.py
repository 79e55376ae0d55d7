# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Learning-rate schedules, as functions of the images seen before the step: EDM's constant rate after a linear
ramp-up (Karras et al. 2022, Appendix F.1), and EDM2's inverse square root decay (Karras et al. 2024, Eq. 18) with the
same kind of ramp-up."""

from __future__ import annotations

import math


def edm_learning_rate(cur_nimg: int, learning_rate: float, rampup_nimg: float) -> float:
    """EDM: `learning_rate` · min(cur_nimg / rampup_nimg, 1), so the first step has rate 0 (no ramp-up when
    `rampup_nimg` is 0)."""
    return learning_rate * min(cur_nimg / max(rampup_nimg, 1e-8), 1.0)


def edm2_learning_rate(cur_nimg: int, batch_size: int, ref_lr: float, ref_batches: float, rampup_nimg: float) -> float:
    """EDM2: α_ref / √max(t / t_ref, 1) with t = cur_nimg / batch_size steps and t_ref = `ref_batches` (no decay when
    it is 0), times min(cur_nimg / rampup_nimg, 1) when `rampup_nimg` > 0."""
    lr = ref_lr
    if ref_batches > 0:
        lr /= math.sqrt(max(cur_nimg / (ref_batches * batch_size), 1.0))
    if rampup_nimg > 0:
        lr *= min(cur_nimg / rampup_nimg, 1.0)
    return lr
