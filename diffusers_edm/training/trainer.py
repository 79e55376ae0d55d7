"""EDM's training loop on accelerate (Karras et al. 2022, Sec. 5 and Appendix F; the loop semantics of the official
`training_loop.py`), from one CPU to many GPUs and nodes."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from ..models.unet_edm import EDMPreconditionedUNet2DModel
from ..pipelines.pipeline_edm import EDMPipeline
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .args import NATIVE_ARCHITECTURES, Interval
from .augment import AugmentPipe
from .data import DataConfig, DatasetError, EDMImageDataset, build_dataset
from .ema import EDMEma
from .evaluation import EvaluationScores, TrainingEvaluator
from .hub import HubPublisher
from .loss import EDMLoss
from .model_card import SECRET_KEYS, write_model_card

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
SIGMA_BUCKETS = (0.0, 0.05, 0.2, 0.8, 3.0, math.inf)
"""Edges of the σ ranges whose losses are logged separately (the training σ has its median at 0.3)."""


class TrainingProgress:
    """Optimizer steps and training images so far, and the latest and best evaluation scores; checkpointed with the
    model (the lr and EMA ramps follow it, the model card shows the scores)."""

    def __init__(self) -> None:
        self.step = 0
        self.cur_nimg = 0
        self.scores: EvaluationScores | None = None

    def state_dict(self) -> dict:
        scores = dataclasses.asdict(self.scores) if self.scores is not None else None
        return {"step": self.step, "cur_nimg": self.cur_nimg, "scores": scores}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.cur_nimg = int(state["step"]), int(state["cur_nimg"])
        # Checkpoints written before evaluation existed have no scores.
        self.scores = EvaluationScores(**state["scores"]) if state.get("scores") else None


class StreamBatchSampler(torch.utils.data.Sampler):
    """Yields this process's index batches from an endless stream of per-epoch permutations of the dataset.

    Batch k of the run is a function of (seed, k) only, so a resumed run continues with exactly the batches the
    uninterrupted run would have used. Process `rank` takes its slice of every global batch.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int, start_batch: int = 0):
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.start_batch = seed, start_batch
        self._epoch, self._permutation = None, None

    def _item(self, position: int) -> int:
        epoch = position // self.num_items
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.num_items, generator=generator).tolist()
        return self._permutation[position % self.num_items]

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        batch_index = self.start_batch
        while True:
            start = batch_index * global_batch + self.rank * self.batch_size
            yield [self._item(position) for position in range(start, start + self.batch_size)]
            batch_index += 1


def build_model(args: argparse.Namespace, dataset: EDMImageDataset, augment_dim: int) -> EDMPreconditionedUNet2DModel:
    """The denoiser for the dataset: from --model_config, or the --arch backbone from the architecture flags."""
    if args.model_config:
        config = EDMPreconditionedUNet2DModel.load_config(args.model_config)
        model = EDMPreconditionedUNet2DModel.from_config(config)
        expected = dict(sample_size=dataset.resolution, in_channels=dataset.num_channels,
                        num_class_labels=dataset.num_classes, augment_dim=augment_dim)
        mismatched = {k: (model.config[k], v) for k, v in expected.items() if model.config[k] != v}
        if mismatched:
            raise ValueError(f"--model_config disagrees with the data/augmentation (config, needed): {mismatched}.")
        return model
    channels = [args.model_channels * m for m in args.channel_mult]
    resolutions = [dataset.resolution >> level for level in range(len(channels))]
    if dataset.resolution % 2 ** (len(channels) - 1):
        raise ValueError(f"--resolution {dataset.resolution} must be divisible by 2^{len(channels) - 1} for "
                         f"{len(channels)} levels (--channel_mult {args.channel_mult}).")
    common = dict(sample_size=dataset.resolution, in_channels=dataset.num_channels,
                  out_channels=dataset.num_channels, sigma_data=args.sigma_data,
                  num_class_labels=dataset.num_classes, augment_dim=augment_dim)
    if args.arch != "unet_2d":
        backbone_config = dict(model_channels=args.model_channels, channel_mult=list(args.channel_mult),
                               num_blocks=args.layers_per_block, attn_resolutions=list(args.attn_resolutions),
                               dropout=args.dropout, **NATIVE_ARCHITECTURES[args.arch][1])
        return EDMPreconditionedUNet2DModel(backbone_type=NATIVE_ARCHITECTURES[args.arch][0],
                                            backbone_config=backbone_config, **common)
    attention = [res in args.attn_resolutions for res in resolutions]
    groups = 32
    while groups > 1 and any(c % groups or c // groups < 4 for c in channels):
        groups //= 2
    head_dim = math.gcd(*channels, 32)
    return EDMPreconditionedUNet2DModel(
        block_out_channels=channels,
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        layers_per_block=args.layers_per_block,
        norm_num_groups=groups,
        attention_head_dim=head_dim,
        dropout=args.dropout,
        **common,
    )


def public_config(args: argparse.Namespace) -> dict:
    """The run's settings as JSON-friendly values, without secrets (token)."""
    return {key: (str(value) if isinstance(value, Interval) else value)
            for key, value in vars(args).items() if key not in SECRET_KEYS}


def find_checkpoint(output_dir: str, which: str) -> Path | None:
    """Resolves --resume_from_checkpoint: 'latest' (None when there is none yet) or a checkpoint folder."""
    if which != "latest":
        path = Path(which)
        if not path.is_dir():
            raise ValueError(f"--resume_from_checkpoint {which}: no such checkpoint folder.")
        return path
    steps = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
             if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(steps)[1] if steps else None


def sanitize_gradients(parameters) -> None:
    """Replaces non-finite gradients in place (NaN → 0, ±inf → ±1e5), as the official loop does; no clipping."""
    for parameter in parameters:
        if parameter.grad is not None:
            torch.nan_to_num(parameter.grad, nan=0, posinf=1e5, neginf=-1e5, out=parameter.grad)


class EDMTrainer:
    """One training run: `EDMTrainer(args).train()`. See `train_edm.py --help` for the arguments."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        log_with = None
        if args.report_to == "tensorboard":
            if importlib.util.find_spec("tensorboard") is not None:
                log_with = "tensorboard"
            else:
                logger.info("tensorboard is not installed; logging to the console and logs/log.jsonl only.")
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=args.output_dir,
                                                logging_dir=os.path.join(args.output_dir, "logs")),
            dynamo_backend="inductor" if args.torch_compile else None,
        )
        set_seed(args.seed, device_specific=True)
        self.dataset = build_dataset(DataConfig(
            dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir, image_column=args.image_column, label_column=args.label_column,
            resolution=args.resolution, center_crop=args.center_crop, random_flip=args.random_flip,
            max_train_samples=args.max_train_samples, conditional=args.conditional, seed=args.seed,
            cache_dir=args.cache_dir,
        ))
        self.augment_pipe = (AugmentPipe.edm_default(args.augment_p, colors=args.augment_colors)
                             if args.augment_p > 0 else None)
        augment_dim = self.augment_pipe.label_dim if self.augment_pipe is not None else 0
        model = build_model(args, self.dataset, augment_dim)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ema = EDMEma(model, args.ema_halflife_kimg, args.ema_rampup_ratio or None)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema.model.to(self.accelerator.device)
        self.progress = TrainingProgress()
        self.accelerator.register_for_checkpointing(self.ema, self.progress)
        self.loss_fn = EDMLoss(args.p_mean, args.p_std, args.sigma_data)
        self.global_batch = args.train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps
        self.total_steps = math.ceil(args.duration_kimg * 1000 / self.global_batch)
        if args.max_train_steps is not None:
            self.total_steps = min(self.total_steps, args.max_train_steps)
        self._sampled_step = self._checkpointed_step = None
        self.evaluator = (TrainingEvaluator(args, self.dataset, self.accelerator, self._append_log)
                          if args.eval_every is not None else None)
        self.publisher = None
        if args.push_to_hub and self.accelerator.is_main_process:
            repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
            self.publisher = HubPublisher(repo_id, token=args.hub_token, private=args.hub_private_repo)

    # --- the loop ------------------------------------------------------------------------------------------------

    def train(self) -> None:
        args, accelerator = self.args, self.accelerator
        if accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "training_config.json"), "w", encoding="utf-8") as f:
                json.dump(public_config(args), f, indent=2)
        if accelerator.trackers:
            accelerator.init_trackers("edm", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                     for k, v in public_config(args).items()})
        self._maybe_resume()
        logger.info(
            "Training on %s (%d images, %s, %dx%d, %d channel(s)) for %d steps = %.1f kimg at %d images per step "
            "(%d per device x %d processes x %d accumulation).",
            self.dataset.source_description, len(self.dataset),
            f"{self.dataset.num_classes} classes" if self.dataset.num_classes else "unconditional",
            self.dataset.resolution, self.dataset.resolution, self.dataset.num_channels, self.total_steps,
            self.total_steps * self.global_batch / 1000, self.global_batch, args.train_batch_size,
            accelerator.num_processes, args.gradient_accumulation_steps,
        )
        batches = iter(torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=StreamBatchSampler(len(self.dataset), args.train_batch_size, accelerator.process_index,
                                             accelerator.num_processes, args.seed,
                                             start_batch=self.progress.step * args.gradient_accumulation_steps),
            num_workers=args.dataloader_num_workers,
            # Its own generator: creating the iterator must not consume the global RNG (exact resume).
            generator=torch.Generator().manual_seed(args.seed),
        ))
        bar = tqdm(total=self.total_steps, initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=not accelerator.is_local_main_process)
        window = _LogWindow()
        while self.progress.step < self.total_steps:
            prev_nimg = self.progress.cur_nimg
            window.add(*self._train_step(batches))
            self.progress.step += 1
            self.progress.cur_nimg += self.global_batch
            bar.update(1)
            step, cur_nimg = self.progress.step, self.progress.cur_nimg
            if step % args.logging_steps == 0 or step == self.total_steps:
                logs = window.flush(self.optimizer.param_groups[0]["lr"])
                bar.set_postfix(kimg=f"{cur_nimg / 1000:.1f}", loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}",
                                img_s=f"{logs['img_per_sec']:.0f}")
                accelerator.log(logs, step=step)
                self._append_log({"step": step, "kimg": cur_nimg / 1000, **logs})
            if args.sample_every is not None and args.sample_every.due(step, cur_nimg, prev_nimg):
                self._sample_grid()
            # The last step is always evaluated, before its checkpoint so that it holds the final scores.
            if self.evaluator is not None and (args.eval_every.due(step, cur_nimg, prev_nimg)
                                               or step == self.total_steps):
                self._evaluate()
            if args.checkpointing_steps is not None and args.checkpointing_steps.due(step, cur_nimg, prev_nimg):
                self._save()
        bar.close()
        if args.sample_every is not None and self._sampled_step != self.progress.step:
            self._sample_grid()
        self._save(final=True)
        accelerator.end_training()

    def _train_step(self, batches) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step over `gradient_accumulation_steps` batches; returns per-image losses and σ (all
        processes) and the number of images."""
        args, accelerator = self.args, self.accelerator
        # Linear lr ramp-up measured in images seen before this step (the official schedule: the first step has lr 0).
        lr = args.learning_rate * min(self.progress.cur_nimg / max(args.lr_rampup_kimg * 1000, 1e-8), 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, sigmas = [], []
        for _ in range(args.gradient_accumulation_steps):
            images, labels = next(batches)
            images = images.to(accelerator.device)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(accelerator.device) if self.dataset.num_classes else None
            with accelerator.accumulate(self.model):
                loss, sigma = self.loss_fn(self._denoise, images, labels, self.augment_pipe)
                # EDM's objective: sum over pixels, mean over images (accelerate divides by the accumulation steps).
                accelerator.backward(loss.sum() / images.shape[0])
                if accelerator.sync_gradients and accelerator.mixed_precision != "fp16":
                    # fp16 runs use accelerate's gradient scaler, which skips steps with non-finite gradients itself.
                    sanitize_gradients(self.model.parameters())
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().mean(dim=(1, 2, 3)))
            sigmas.append(sigma.detach().float().flatten())
        self.ema.update(accelerator.unwrap_model(self.model), self.progress.cur_nimg, self.global_batch)
        return (accelerator.gather(torch.cat(losses)), accelerator.gather(torch.cat(sigmas)), self.global_batch)

    def _denoise(self, x, sigma, class_labels, augment_labels):
        return self.model(x, sigma, class_labels=class_labels, augment_labels=augment_labels).sample

    def _append_log(self, record: dict) -> None:
        """Appends a log line to output_dir/logs/log.jsonl (main process), next to the TensorBoard events."""
        if self.accelerator.is_main_process:
            path = Path(self.args.output_dir) / "logs" / "log.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # --- resume, samples, saving -----------------------------------------------------------------------------------

    def _maybe_resume(self) -> None:
        args = self.args
        if not args.resume_from_checkpoint:
            return
        path = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
        if path is None:
            logger.info("No checkpoint in %s yet; starting a new run.", args.output_dir)
            return
        try:
            self.accelerator.load_state(str(path))
        except Exception as error:
            raise ValueError(f"Could not resume from {path}: the checkpoint is incomplete or corrupt ({error}). "
                             f"Resume from an older checkpoint-* folder or start a new run.") from error
        logger.info("Resumed from %s at step %d (%.1f kimg).", path, self.progress.step,
                    self.progress.cur_nimg / 1000)

    def _pipeline(self) -> EDMPipeline:
        pipe = EDMPipeline(unet=self.ema.model, scheduler=EDMHeunScheduler(sigma_data=self.args.sigma_data))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _sample_grid(self) -> None:
        """Writes samples/grid-<kimg>.png and samples.png (the latest): EMA samples, one row per class."""
        self._sampled_step = self.progress.step
        if not self.accelerator.is_main_process:
            return
        args = self.args
        rows = self.dataset.num_classes or 4
        count = rows * args.samples_per_class
        generators = [torch.Generator().manual_seed(args.seed * 100_000 + i) for i in range(count)]
        labels = [i // args.samples_per_class for i in range(count)] if self.dataset.num_classes else None
        images = self._pipeline()(batch_size=count, class_labels=labels, generator=generators,
                                  num_inference_steps=args.num_inference_steps).images
        grid = make_image_grid(images, rows=rows, cols=args.samples_per_class)
        folder = Path(args.output_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"grid-{self.progress.cur_nimg // 1000:06d}kimg.png")
        grid.save(Path(args.output_dir) / "samples.png")
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                array = torch.from_numpy(np.asarray(grid.convert("RGB"))).permute(2, 0, 1)
                tracker.writer.add_image("samples", array, self.progress.step)

    def _evaluate(self) -> None:
        """Scores the EMA pipeline (all processes) and keeps the latest and best values in the progress state."""
        self.progress.scores = self.evaluator.evaluate(self._pipeline(), self.progress.step, self.progress.cur_nimg,
                                                       self.progress.scores)

    def _save(self, final: bool = False) -> None:
        """Checkpoints (atomically) and rewrites the pipeline folder and model card; uploads them when asked."""
        self._checkpoint()
        if not self.accelerator.is_main_process:
            return
        args = self.args
        self._pipeline().save_pretrained(args.output_dir)
        grid = Path(args.output_dir) / "samples.png"
        repo_id = self.publisher.repo_id if self.publisher else (args.hub_model_id or Path(args.output_dir).name)
        write_model_card(
            args.output_dir, repo_id=repo_id, config=public_config(args),
            dataset_description=self.dataset.source_description, hub_dataset=args.dataset_name,
            resolution=self.dataset.resolution, channels=self.dataset.num_channels,
            num_classes=self.dataset.num_classes, steps=self.progress.step, kimg=self.progress.cur_nimg / 1000,
            batch_size=self.global_batch, grid_path=grid.name if grid.exists() else None,
            evaluation=self.progress.scores,
        )
        logger.info("Saved the EMA pipeline and model card to %s at step %d.", args.output_dir, self.progress.step)
        if self.publisher is not None:
            message = "End of training" if final else f"Step {self.progress.step} ({self.progress.cur_nimg / 1000:g} kimg)"
            self.publisher.upload(args.output_dir, message)

    def _checkpoint(self) -> None:
        """accelerate state (model, optimizer, RNG, EMA, progress) into checkpoint-<step>.tmp, renamed when
        complete, so resume never picks up a half-written checkpoint; older ones beyond the limit are removed."""
        args, accelerator = self.args, self.accelerator
        if self._checkpointed_step == self.progress.step:
            return
        self._checkpointed_step = self.progress.step
        final = Path(args.output_dir) / f"checkpoint-{self.progress.step}"
        staging = final.with_name(final.name + ".tmp")
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            existing = sorted((int(m.group(1)), p) for p in Path(args.output_dir).glob("checkpoint-*")
                              if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name)))
            for _, old in existing[: max(len(existing) - args.checkpoints_total_limit, 0)]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()


class _LogWindow:
    """Accumulates per-image losses and σ between log lines; reports the mean loss, the loss per σ range and img/s."""

    def __init__(self) -> None:
        self.losses, self.sigmas, self.images, self.start = [], [], 0, time.perf_counter()

    def add(self, losses: torch.Tensor, sigmas: torch.Tensor, images: int) -> None:
        self.losses.append(losses.cpu())
        self.sigmas.append(sigmas.cpu())
        self.images += images

    def flush(self, lr: float) -> dict[str, float]:
        losses, sigmas = torch.cat(self.losses), torch.cat(self.sigmas)
        logs = {"loss": losses.mean().item(), "lr": lr,
                "img_per_sec": self.images / max(time.perf_counter() - self.start, 1e-9)}
        for low, high in zip(SIGMA_BUCKETS[:-1], SIGMA_BUCKETS[1:]):
            in_bucket = (sigmas >= low) & (sigmas < high)
            if in_bucket.any():
                logs[f"loss_sigma_{low:g}-{high:g}"] = losses[in_bucket].mean().item()
        self.__init__()
        return logs


def train(args: argparse.Namespace) -> None:
    """Runs `train_edm.py` with parsed arguments."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("accelerate", "diffusers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        trainer = EDMTrainer(args)
    except DatasetError as error:  # bad data is reported before training starts, without a traceback
        raise SystemExit(f"train_edm.py: error: {error}") from error
    trainer.train()
