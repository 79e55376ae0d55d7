# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The FID the EDM paper reports for each of its released models (Karras et al. 2022, Table 2 and the official
README), for the model cards of converted snapshots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult

PAPER_URL = "https://arxiv.org/abs/2206.00364"


@dataclass(frozen=True)
class PaperResult:
    """A reported result: FID over 50k images, the minimum over three seed sets (the paper's protocol).

    Attributes:
        fid (`float`): the reported FID.
        num_model_evaluations (`int`): network evaluations per image (NFE) of the sampler it was measured with.
        dataset (`str`): dataset name as the card shows it.
        dataset_id (`str`): short dataset identifier for the Hub's model-index.
        fid_reference (`str`): URL of the reference statistics the paper's FID uses.
        source (`str`): where the number comes from.
    """

    fid: float
    num_model_evaluations: int
    dataset: str
    dataset_id: str
    fid_reference: str
    source: str

    def eval_result(self) -> EvalResult:
        """The result as Hub `model-index` metadata."""
        task = "image-generation"
        return EvalResult(task_type=task, dataset_type=self.dataset_id, dataset_name=self.dataset, metric_type="fid",
                          metric_value=self.fid, metric_name=f"FID (50k samples, {self.num_model_evaluations} NFE)",
                          source_name=f"Karras et al. 2022 ({self.source})", source_url=PAPER_URL)


_REFS = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
_README = "official README"
_TABLE_2 = "Table 2, config F, recalled"
_CIFAR, _FFHQ, _AFHQ, _IMAGENET = (
    ("CIFAR-10 32x32", "cifar10", _REFS + "cifar10-32x32.npz"),
    ("FFHQ 64x64", "ffhq", _REFS + "ffhq-64x64.npz"),
    ("AFHQv2 64x64", "afhqv2", _REFS + "afhqv2-64x64.npz"),
    ("ImageNet 64x64", "imagenet-1k", _REFS + "imagenet-64x64.npz"),
)

PAPER_RESULTS: dict[str, PaperResult] = {
    "edm-cifar10-32x32-cond-vp": PaperResult(1.79, 35, *_CIFAR, _README),
    "edm-cifar10-32x32-cond-ve": PaperResult(1.79, 35, *_CIFAR, _TABLE_2),
    "edm-cifar10-32x32-uncond-vp": PaperResult(1.97, 35, *_CIFAR, _README),
    "edm-cifar10-32x32-uncond-ve": PaperResult(1.98, 35, *_CIFAR, _TABLE_2),
    "edm-ffhq-64x64-uncond-vp": PaperResult(2.39, 79, *_FFHQ, _README),
    "edm-ffhq-64x64-uncond-ve": PaperResult(2.53, 79, *_FFHQ, _TABLE_2),
    "edm-afhqv2-64x64-uncond-vp": PaperResult(1.96, 79, *_AFHQ, _README),
    "edm-afhqv2-64x64-uncond-ve": PaperResult(2.16, 79, *_AFHQ, _TABLE_2),
    "edm-imagenet-64x64-cond-adm": PaperResult(1.36, 511, *_IMAGENET, _README),
}
"""Reported FIDs of the released `edm-*.pkl` models by file stem. The README states the VP/ADM values; the VE values
are recalled from Table 2 and should be checked against the paper before being relied on."""


def paper_result(file_name: str | os.PathLike) -> PaperResult | None:
    """The reported result of a released model, recognised by its official file name; `None` for any other file."""
    return PAPER_RESULTS.get(Path(file_name).stem)
