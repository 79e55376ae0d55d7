# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Feature statistics of many images, split over processes.

The images 0 … N−1 of a source are cut into consecutive batches of `batch_size`; process r of W handles batches
r, r + W, r + 2W, …; each batch goes through the detector whole and adds its sums to the statistics, which are then
summed over processes (see [`FeatureStatistics.merge`]). A batch holds the same images whatever W is, so W processes
give the same statistics as one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..errors import EvaluationError
from .detectors import DetectorError, FeatureDetector
from .statistics import FeatureStatistics

BatchLoader = Callable[[Sequence[int]], torch.Tensor]
"""Returns the uint8 images (B, C, H, W) of the given item indices (C = 1 or 3)."""


class _Batches(torch.utils.data.Dataset):
    """A DataLoader-friendly view of a [`BatchLoader`]: item k is the image batch of `batches[k]`."""

    def __init__(self, load: BatchLoader, batches: Sequence[Sequence[int]]) -> None:
        self.load, self.batches = load, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> torch.Tensor | EvaluationError:
        try:
            return self.load(self.batches[index])
        except EvaluationError as error:  # handed to the main process whole: a worker would wrap it in its traceback
            return error


def process_batches(num_items: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[range]:
    """The batches of items process `rank` of `world_size` handles: consecutive batches of `batch_size` (the last may
    be shorter), every `world_size`-th one starting at `rank`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    starts = range(rank * batch_size, num_items, batch_size * world_size)
    return [range(start, min(start + batch_size, num_items)) for start in starts]


def compute_statistics(
    load: BatchLoader,
    num_items: int,
    detector: FeatureDetector,
    batch_size: int = 64,
    state: PartialState | None = None,
    num_workers: int = 0,
    expected_features: int | None = None,
    description: str = "Features",
    progress_bar: bool = True,
) -> FeatureStatistics:
    """
    Feature statistics of the items 0 … `num_items` − 1, summed over all processes of `state`.

    Args:
        load ([`BatchLoader`]): the uint8 images of a batch of item indices.
        num_items (`int`): number of items.
        detector ([`FeatureDetector`]): the feature network, already on `state.device`.
        batch_size (`int`, defaults to 64): images per detector call (as `fid.py`'s `--batch`).
        state (`accelerate.PartialState`, *optional*): the processes sharing the work; `None` is one process on the
            CPU.
        num_workers (`int`, defaults to 0): DataLoader worker processes that call `load` (for decoding files; 0 calls
            it in this process, which a generating `load` needs).
        expected_features (`int`, *optional*): feature width the detector must produce (that of the reference
            statistics); checked on the first batch.
        description (`str`): label of the progress bar.
        progress_bar (`bool`, defaults to `True`): show it (on the main process).

    Raises:
        DetectorError: the detector fails on the images or produces another feature width than `expected_features`.
    """
    rank, world_size = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = state.device if state is not None else torch.device("cpu")
    batches = process_batches(num_items, batch_size, rank, world_size)
    # Its own generator: starting the loader must not draw from torch's global RNG (a training run's stream).
    loader = torch.utils.data.DataLoader(_Batches(load, batches), batch_size=None, num_workers=num_workers,
                                         pin_memory=device.type == "cuda" and num_workers > 0,
                                         generator=torch.Generator())
    statistics, progress, failure = None, None, None
    try:
        for images in loader:
            if isinstance(images, EvaluationError):
                raise images
            images = images.to(device, non_blocking=True)
            if images.shape[1] == 1:
                images = images.repeat(1, 3, 1, 1)
            features = _detect(detector, images)
            if statistics is None:
                _check_width(detector, features.shape[1], expected_features)
                statistics = FeatureStatistics(features.shape[1], device)
                # Shown once the first batch went through, so that a bad input ends in its message alone.
                progress = tqdm(total=num_items, unit="img", desc=description, dynamic_ncols=True,
                                disable=not progress_bar or (state is not None and not state.is_main_process))
            statistics.update(features)
            progress.update(min(len(images) * world_size, num_items - progress.n))
    except EvaluationError as error:
        failure = error
    finally:
        if progress is not None:
            progress.close()
    if _any_process(failure is not None, device):  # all processes stop together instead of waiting in a collective
        raise failure or EvaluationError("The evaluation failed in another process; see its message.")
    width = _agreed_width(statistics.num_features if statistics is not None else 0, device)
    if statistics is None:  # this process had no batch; it still takes part in the merge
        statistics = FeatureStatistics(width, device)
    statistics.merge()
    return statistics


def _detect(detector: FeatureDetector, images: torch.Tensor) -> torch.Tensor:
    try:
        features = detector(images)
    except (RuntimeError, TypeError, ValueError) as error:
        text = str(error).strip()
        raise DetectorError(
            f"The detector {detector.name} failed on uint8 images of shape {tuple(images.shape)}"
            f" ({text.splitlines()[-1] if text else type(error).__name__}); a detector must accept"
            " net(images_uint8, return_features=True)."
        ) from error
    if features.ndim != 2 or features.shape[0] != images.shape[0]:
        raise DetectorError(f"The detector {detector.name} returned shape {tuple(features.shape)} for"
                            f" {images.shape[0]} images; expected (batch, features).")
    return features


def _check_width(detector: FeatureDetector, width: int, expected: int | None) -> None:
    if expected is not None and width != expected:
        raise DetectorError(f"The detector {detector.name} gives {width} features per image but the reference"
                            f" statistics have {expected}; compute the reference with the same --detector.")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _any_process(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true in any process."""
    if not _distributed():
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _agreed_width(local_width: int, device: torch.device) -> int:
    """The feature width seen by any process (a process without batches has seen none)."""
    if not _distributed():
        return local_width
    width = torch.tensor([local_width], device=device)
    torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)
    return int(width.item())
