# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""A CLIP text encoder over a fixed word list, built locally: for captioned data whose captions combine a few known
words (e.g. "a thick seven") on machines that cannot download a pretrained encoder, and for tests. The tokenizer
maps each word to one token (BPE merges written for it); the text model is a `transformers` `CLIPTextModel` with
random word embeddings, which the diffusion model learns to read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch


def save_word_level_clip(folder: str | Path, words: Sequence[str], hidden_size: int = 32, max_length: int = 16,
                         seed: int = 0, bag_of_words: bool = True):
    """
    Builds and saves `text_encoder/` and `tokenizer/` under `folder` (the layout `train_edm.py --text_encoder` and
    `EDMTextToImagePipeline` read); returns (text_encoder, tokenizer).

    Args:
        folder (`str` or `Path`): where to save.
        words (`Sequence[str]`): the vocabulary (lower-case words without spaces); other words are split into letters
            the vocabulary may lack.
        hidden_size (`int`, defaults to 32): width of the token states and the pooled embedding.
        max_length (`int`, defaults to 16): tokens per prompt, with the start and end tokens.
        seed (`int`, defaults to 0): seed of the random weights.
        bag_of_words (`bool`, defaults to `True`): every token attends uniformly to those before it (zero query and
            key weights, identity values) over N(0, 1) word embeddings without positions, so that the pooled output
            is mostly the mean of the prompt's words: prompts that differ in one word of three have pooled cosine
            ≈ 0.88. A freshly initialised CLIP (`False`) barely separates prompts of equal length (cosine ≈ 0.99).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    merges: list[str] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for special in ("<|startoftext|>", "<|endoftext|>"):
        add(special)
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        for piece in pieces:
            add(piece)
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{merged} {piece}")
            merged += piece
            add(merged)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n",
                                                     encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                              model_max_length=max_length)
    tokenizer.save_pretrained(folder / "tokenizer")
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=max_length,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text_encoder = CLIPTextModel(config).eval()
    if bag_of_words:
        with torch.no_grad():
            for name, parameter in text_encoder.named_parameters():
                if name.endswith("token_embedding.weight"):
                    parameter.normal_(0, 1)
                elif name.endswith("position_embedding.weight") or "q_proj" in name or "k_proj" in name:
                    parameter.zero_()
                elif name.endswith(("v_proj.weight", "out_proj.weight")):
                    parameter.copy_(torch.eye(hidden_size) * (5 if "out_proj" in name else 1))
    text_encoder.save_pretrained(folder / "text_encoder")
    return text_encoder, tokenizer
