# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation during training (`train_edm.py --eval_every`): the Fréchet distance between the EMA model's samples
(seeds 0 … N−1, the same at every evaluation) and reference statistics — `--eval_ref`, or those of the training
images, computed once and cached in the output folder — with the latest and best values kept for the model card."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from ..data import EDMImageDataset
from ..evaluation import (
    EvaluationError,
    FeatureDetector,
    compute_statistics,
    dataset_images,
    frechet_distance,
    generated_images,
    load_detector,
    load_reference,
    save_reference,
)
from ..pipelines.pipeline_edm import EDMPipeline

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRAINING_IMAGES = "the training images"
"""The reference when `--eval_ref` is not given."""

METRIC_LABELS = {"fid": "FID", "fd_dinov2": "FD-DINOv2", "fd_digits": "FD-digits", "fd": "FD"}
"""Display names of the detectors' metrics."""


@dataclass(frozen=True)
class EvaluationScores:
    """The latest and best (lowest) value of a run's Fréchet distance, checkpointed with the training progress and
    shown in the model card. Values are comparable only under the same protocol: metric, detector, number of samples,
    sampler steps and reference."""

    metric: str
    detector: str
    num_images: int
    num_inference_steps: int
    reference: str
    latest: float
    latest_step: int
    latest_kimg: float
    best: float
    best_step: int
    best_kimg: float

    @property
    def protocol(self) -> tuple[str, str, int, int, str]:
        """What must match for two values to be comparable."""
        return self.metric, self.detector, self.num_images, self.num_inference_steps, self.reference

    @property
    def metric_label(self) -> str:
        """E.g. "FID"."""
        return METRIC_LABELS.get(self.metric, self.metric.upper())

    @property
    def num_label(self) -> str:
        """The number of samples as papers write it: "10k" for 10000."""
        return f"{self.num_images // 1000}k" if self.num_images % 1000 == 0 else str(self.num_images)


class TrainingEvaluator:
    """Scores EMA pipelines during training. Every process must make the same calls: the work is split over them and
    they stop evaluating together when anything fails with an [`EvaluationError`] (warned once; training goes on).

    Args:
        args (`argparse.Namespace`): `train_edm.py`'s arguments (the `eval_*` flags, `num_inference_steps`,
            `train_batch_size` — images generated and scored per process at a time — and `output_dir`).
        dataset ([`EDMImageDataset`]): the training data; the default reference is its images without x-flip copies.
        accelerator (`accelerate.Accelerator`): the run's processes.
        log (`Callable[[dict], None]`): appends a record to `logs/log.jsonl`.
    """

    def __init__(self, args: argparse.Namespace, dataset: EDMImageDataset, accelerator: Accelerator,
                 log: Callable[[dict], None]) -> None:
        self.args, self.dataset, self.accelerator, self._log = args, dataset, accelerator, log
        self.reference_name = args.eval_ref or TRAINING_IMAGES
        self.detector: FeatureDetector | None = None
        self._reference: tuple[np.ndarray, np.ndarray] | None = None  # on the main process
        self._width: int | None = None
        try:
            self.detector = self._load_detector()
        except EvaluationError as error:
            self._disable(error)

    @property
    def cache_path(self) -> Path:
        """Where the training images' statistics are cached: output_dir/eval-ref-<metric>.npz."""
        return Path(self.args.output_dir) / f"eval-ref-{self.detector.metric}.npz"

    def evaluate(self, pipe: EDMPipeline, step: int, cur_nimg: int,
                 scores: EvaluationScores | None) -> EvaluationScores | None:
        """Scores `pipe` after `step` steps, logs the value and returns the updated latest and best values (`scores`
        itself when evaluation is off or fails)."""
        if self.detector is None:
            return scores
        try:
            with self._rng_untouched():
                self._prepare_reference()
                start = time.perf_counter()
                steps = self.args.num_inference_steps
                statistics = compute_statistics(
                    lambda seeds: generated_images(pipe, seeds, num_inference_steps=steps), self.args.eval_num,
                    self.detector, self.args.train_batch_size, self.accelerator, expected_features=self._width,
                    description=f"Evaluating ({self.detector.metric})")
                value = self._on_main(lambda: frechet_distance(*statistics.mean_and_covariance(), *self._reference))
        except EvaluationError as error:
            self._disable(error)
            return scores
        seconds, kimg = time.perf_counter() - start, cur_nimg / 1000
        metric = self.detector.metric
        self._log({"step": step, "kimg": kimg, metric: value, "eval_num": self.args.eval_num,
                   "eval_seconds": round(seconds, 3)})
        self.accelerator.log({metric: value}, step=step)
        latest = dict(metric=metric, detector=self.detector.name, num_images=self.args.eval_num,
                      num_inference_steps=self.args.num_inference_steps, reference=self.reference_name, latest=value,
                      latest_step=step, latest_kimg=kimg)
        updated = EvaluationScores(**latest, best=value, best_step=step, best_kimg=kimg)
        if scores is not None and scores.protocol == updated.protocol and scores.best <= value:
            updated = EvaluationScores(**latest, best=scores.best, best_step=scores.best_step,
                                       best_kimg=scores.best_kimg)
        if self.accelerator.is_main_process:
            logger.info("%s of %d samples at step %d (%g kimg): %.6g (best %.6g at %g kimg), in %.1f s.",
                        updated.metric_label, self.args.eval_num, step, kimg, value, updated.best, updated.best_kimg,
                        seconds)
        return updated

    def _load_detector(self) -> FeatureDetector:
        """The detector on every process (the main process first: it downloads a missing file once)."""
        detector, error = None, None
        with self._rng_untouched(), self.accelerator.main_process_first():
            try:
                args = self.args
                detector = load_detector(args.eval_detector, args.eval_detector_path, args.trust_detector)
            except EvaluationError as failure:
                error = failure
        messages = [message for message in gather_object([str(error) if error else None]) if message]
        if messages:
            raise EvaluationError(messages[0])
        return detector.to(self.accelerator.device)

    def _prepare_reference(self) -> None:
        """Reference statistics on the main process: `--eval_ref`, the cache, or those of the training images,
        computed by all processes and cached."""
        if self._width is not None:
            return
        self._width = self._on_main(self._load_reference)
        if self._width is not None:
            return
        start = time.perf_counter()
        statistics = compute_statistics(
            lambda indices: dataset_images(self.dataset, indices), self.dataset.num_images, self.detector,
            self.args.train_batch_size, self.accelerator, description=f"Reference features ({self.detector.name})")

        def save() -> int:
            self._reference = statistics.mean_and_covariance()
            save_reference(self.cache_path, *self._reference)
            logger.info("Computed the %s statistics of the %d training images in %.1f s; cached in %s.",
                        self.detector.name, self.dataset.num_images, time.perf_counter() - start, self.cache_path)
            return self._reference[0].shape[0]

        self._width = self._on_main(save)

    def _load_reference(self) -> int | None:
        """Loads `--eval_ref` or the cached statistics; returns their feature width (`None`: nothing cached)."""
        source = self.args.eval_ref or (self.cache_path if self.cache_path.is_file() else None)
        if source is None:
            return None
        self._reference = load_reference(source, self.detector.metric)
        logger.info("Evaluating against the reference statistics %s.", source)
        return self._reference[0].shape[0]

    def _on_main(self, compute: Callable[[], T]) -> T:
        """`compute()` on the main process; its result, or its EvaluationError, reaches every process."""
        outcome = [None, None]
        if self.accelerator.is_main_process:
            try:
                outcome = [compute(), None]
            except EvaluationError as error:
                outcome = [None, str(error)]
        broadcast_object_list(outcome)
        if outcome[1] is not None:
            raise EvaluationError(outcome[1])
        return outcome[0]

    @contextlib.contextmanager
    def _rng_untouched(self) -> Iterator[None]:
        """Restores torch's global RNG afterwards: whatever evaluation draws, the training's random stream (and so
        exact resume) stays as without it."""
        device = self.accelerator.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield

    def _disable(self, error: EvaluationError) -> None:
        self.detector = None
        if self.accelerator.is_main_process:
            logger.warning("Evaluation failed: %s (train_edm.py's flags for --detector, --detector_path and --ref are"
                           " --eval_detector, --eval_detector_path and --eval_ref.) Evaluation is off for the rest of"
                           " this run; training goes on.", error)
