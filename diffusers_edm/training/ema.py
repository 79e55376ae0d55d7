"""EDM's exponential moving average of the weights, with its half-life measured in training images (Karras et al.
2022, Appendix F.2; the EMA is what gets sampled and saved)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, cur_nimg: int, halflife_kimg: float, rampup_ratio: float | None = 0.05) -> float:
    """Per-step decay β = 0.5^(batch_size / half-life in images).

    The half-life is `halflife_kimg` thousand images, capped during ramp-up at `rampup_ratio · cur_nimg` (the images
    seen so far, counted before this step), so early weights are forgotten quickly; at the first step β = 0.
    """
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


class EDMEma:
    """An averaged copy of a model: p_ema ← p + β (p_ema − p) after every optimizer step (parameters only; buffers are
    copied). `state_dict`/`load_state_dict` (the averaged weights) are what checkpoints store, as safetensors.

    Args:
        model (`nn.Module`): the (unwrapped) model; its current weights initialise the average.
        halflife_kimg (`float`): half-life in thousands of images.
        rampup_ratio (`float`, *optional*, defaults to 0.05): half-life cap as a fraction of the images seen; `None`
            disables the ramp-up.
    """

    def __init__(self, model: nn.Module, halflife_kimg: float, rampup_ratio: float | None = 0.05) -> None:
        if not halflife_kimg > 0:
            raise ValueError(f"the EMA half-life must be > 0 kimg, got {halflife_kimg}.")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.halflife_kimg, self.rampup_ratio = halflife_kimg, rampup_ratio

    @torch.no_grad()
    def update(self, model: nn.Module, cur_nimg: int, batch_size: int) -> float:
        """Moves the average towards `model` after a step of `batch_size` images; returns the β used."""
        beta = ema_beta(batch_size, cur_nimg, self.halflife_kimg, self.rampup_ratio)
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - beta)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
        return beta

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict)
