# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Prompts to the conditioning of a text-to-image EDM model: the token states of a `transformers` text encoder (for
cross-attention, with the mask of the real tokens) and its pooled embedding, normalised to unit length so that it
enters the network's label path as a one-hot class label does (EDM2's label embedding scales it to unit RMS)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PromptEmbeddings:
    """The conditioning of a batch of prompts.

    Attributes:
        tokens (`torch.Tensor`): token states (B, T, C) of the text encoder's last layer.
        mask (`torch.Tensor`): (B, T), 1 for the real tokens, 0 for padding.
        pooled (`torch.Tensor`): the pooled embedding (B, D), unit length.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def repeat(self, times: int) -> PromptEmbeddings:
        """Each prompt's rows `times` times in a row (`num_images_per_prompt`)."""
        return PromptEmbeddings(*(value.repeat_interleave(times, dim=0) for value in self.as_tuple()))

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.tokens, self.mask, self.pooled

    def unet_kwargs(self, cross_attention: bool) -> dict[str, torch.Tensor]:
        """The unet's conditioning arguments: the pooled embedding as label vector, the tokens when it attends to
        them."""
        kwargs = {"class_labels": self.pooled}
        if cross_attention:
            kwargs.update(encoder_hidden_states=self.tokens, encoder_attention_mask=self.mask)
        return kwargs


UNIT_LENGTH_TOLERANCE = 1e-4
"""Pooled embeddings whose length is within this of 1 are taken as normalised already (kept bit for bit)."""


def normalize_pooled(pooled: torch.Tensor) -> torch.Tensor:
    """The pooled text embedding (B, D) scaled to unit length (a one-hot label's), in float32; rows that already
    have unit length (e.g. from `encode_prompt`) are kept as they are."""
    pooled = pooled.to(torch.float32)
    lengths = torch.linalg.vector_norm(pooled, dim=1, keepdim=True)
    unit = (lengths - 1).abs() <= UNIT_LENGTH_TOLERANCE
    return torch.where(unit, pooled, F.normalize(pooled, dim=1))


def text_width(text_encoder: torch.nn.Module) -> int:
    """Width of a `transformers` text encoder's token states and pooled output (its `hidden_size`)."""
    return int(text_encoder.config.hidden_size)


@torch.no_grad()
def encode_prompts(text_encoder: torch.nn.Module, tokenizer, prompts: list[str],
                   device: torch.device | str | None = None) -> PromptEmbeddings:
    """Tokenises `prompts` to the tokenizer's `model_max_length` (padded, truncated) and runs the text encoder (a
    `transformers` CLIP text model or any encoder returning `last_hidden_state` and `pooler_output`)."""
    device = device if device is not None else text_encoder.device
    inputs = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    output = text_encoder(input_ids=ids, attention_mask=mask)
    return PromptEmbeddings(output.last_hidden_state.to(torch.float32), mask, normalize_pooled(output.pooler_output))
