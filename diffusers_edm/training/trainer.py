"""EDM's training loop on accelerate (Karras et al. 2022, Sec. 5 and Appendix F; the loop semantics of the official
`training_loop.py`), from one CPU to many GPUs and nodes; with EDM2's recipe (Karras et al. 2024: its network, loss,
learning-rate schedule and post-hoc EMA) and latent-space training through a VAE."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, set_seed
from diffusers.models import AutoencoderKL
from tqdm.auto import tqdm

from ..data import EDMImageDataset, build_dataset
from ..errors import TrainingError
from ..pipelines.latents import latent_scale_and_bias, sample_latents
from ..pipelines.pipeline_edm import EDMPipeline
from ..pipelines.pipeline_edm_text_to_image import EDMTextToImagePipeline
from ..pipelines.text_encoding import text_width
from ..preconditioning import EDM_SIGMA_DATA
from ..schedulers.scheduling_edm_heun import EDMHeunScheduler
from .augment import AugmentPipe, random_flip
from .checkpoint import (
    TrainingState,
    find_checkpoint,
    latest_complete_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .ema import EDMEma
from .evaluation import EvaluationScores, TrainingEvaluator
from .hub import COMMAND_LINE_TOKEN_WARNING, HubPublisher, read_token_file
from .latent_data import (
    LatentDataset,
    attach_latent_statistics,
    check_vae_fits,
    encode_dataset,
    latent_statistics,
    load_vae,
    vae_location,
)
from .loss import EDM2Loss, loss_for_model
from .lr_schedule import edm2_learning_rate, edm_learning_rate
from .model_card import write_model_card
from .model_config import edm_augment_dim
from .output_dir import check_output_dir, clear_run_outputs
from .phema import SNAPSHOT_FOLDER, PowerFunctionEMA, check_snapshot_interval, check_std
from .resume import check_resumed_settings
from .run_setup import (
    build_model,
    check_preset_resolution,
    configure_numerics,
    data_config,
    fused_adam,
    load_pretrained,
    public_config,
    trackers,
)
from .sample_grid import grid_file_name, sample_grid
from .settings import resolve_batch_sizes
from .text_conditioning import load_text_components, prepare_caption_embeddings
from .transfer import transfer_weights

logger = logging.getLogger(__name__)  # other processes log warnings only (see EDMTrainer.__init__)

DATA_PREPARATION_TIMEOUT = timedelta(hours=6)
"""How long processes wait for each other (NCCL/gloo timeout): enough for the first run's one-time decoding of an
ImageNet-sized dataset."""

SIGMA_BUCKETS = (0.0, 0.05, 0.2, 0.8, 3.0, math.inf)
"""Edges of the σ ranges whose losses are logged separately (the training σ has its median at 0.3)."""


class TrainingProgress:
    """Optimizer steps and training images so far, and the latest and best evaluation scores; checkpointed (as JSON)
    with the model (the lr and EMA ramps follow it, the model card shows the scores)."""

    def __init__(self) -> None:
        self.step = 0
        self.cur_nimg = 0
        self.scores: EvaluationScores | None = None

    def state_dict(self) -> dict:
        scores = dataclasses.asdict(self.scores) if self.scores is not None else None
        return {"step": self.step, "cur_nimg": self.cur_nimg, "scores": scores}

    def load_state_dict(self, state: dict) -> None:
        step, cur_nimg = state["step"], state["cur_nimg"]
        if not (isinstance(step, int) and isinstance(cur_nimg, int) and step >= 0 and cur_nimg >= 0
                and (cur_nimg > 0) == (step > 0)):
            raise ValueError(f"step {step!r} and images {cur_nimg!r} are not a training progress")
        self.step, self.cur_nimg = step, cur_nimg
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


def sanitize_gradients(parameters) -> None:
    """Replaces non-finite gradients in place (NaN → 0, ±inf → ±1e5), as the official loop does; no clipping."""
    for parameter in parameters:
        if parameter.grad is not None:
            torch.nan_to_num(parameter.grad, nan=0, posinf=1e5, neginf=-1e5, out=parameter.grad)


class EDMTrainer:
    """One training run: `EDMTrainer(args).train()`. See `train_edm.py --help` for the arguments."""

    def __init__(self, args: argparse.Namespace, dataset: EDMImageDataset | None = None) -> None:
        """`dataset` replaces the one the data flags describe (e.g. synthetic images for a benchmark)."""
        self.args = args
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            log_with=trackers(args.report_to),
            project_config=ProjectConfiguration(project_dir=args.output_dir,
                                                logging_dir=os.path.join(args.output_dir, "logs")),
            dynamo_backend="inductor" if args.torch_compile else None,
            # Processes wait at a barrier while the first one decodes a large dataset (once).
            kwargs_handlers=[InitProcessGroupKwargs(timeout=DATA_PREPARATION_TIMEOUT)],
        )
        if not self.accelerator.is_main_process:  # the package's messages (data, checkpoints, Hub) print once
            logging.getLogger(__package__.split(".")[0]).setLevel(logging.WARNING)
        resolve_batch_sizes(args, self.accelerator.num_processes)
        self.accelerator.gradient_accumulation_steps = args.gradient_accumulation_steps
        if args.hub_token is not None and self.accelerator.is_main_process:
            logger.warning(COMMAND_LINE_TOKEN_WARNING)
        if self.accelerator.mixed_precision == "fp16" and self.accelerator.device.type == "cpu":
            raise TrainingError(
                "--mixed_precision fp16 needs a GPU: on a CPU accelerate has neither fp16 autocast nor a gradient "
                "scaler, and the weights end up NaN. Use --mixed_precision bf16 or no (this also overrides an fp16 "
                "`accelerate config` or accelerate launch --mixed_precision fp16).")
        self.global_batch = args.train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps
        # Before anything is written or prepared: the output folder, the settings a resumed run cannot change, the Hub.
        output_dir = Path(args.output_dir)
        check_output_dir(output_dir, bool(args.resume_from_checkpoint), args.overwrite_output_dir)
        self._resume_path = None
        if args.resume_from_checkpoint:
            self._resume_path = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
            if self._resume_path is not None:
                check_resumed_settings(self._resume_path, public_config(args), self.global_batch)
        self.publisher = None
        if args.push_to_hub and self.accelerator.is_main_process:
            token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
            repo_id = args.hub_model_id or output_dir.resolve().name
            self.publisher = HubPublisher(repo_id, token=token, private=args.hub_private_repo)
        self.accelerator.wait_for_everyone()  # every process has seen the folder as it was
        if self.accelerator.is_main_process:
            if args.overwrite_output_dir and not args.resume_from_checkpoint:
                clear_run_outputs(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
        set_seed(args.seed, device_specific=True)
        # The first process of each node decodes the data into the cache; the others then reuse it.
        if dataset is None:
            with self.accelerator.local_main_process_first():
                dataset = build_dataset(data_config(args))
        if args.vae is None and args.pretrained_model_name_or_path and vae_location(
                args.pretrained_model_name_or_path)[1] is not None:  # fine-tuning a latent model: its VAE
            args.vae = args.pretrained_model_name_or_path
        self.pixels = dataset  # the images (for evaluation and the card); the model trains on `self.dataset`
        check_preset_resolution(args, dataset.resolution)
        self.dataset, self.vae = self._latent_dataset() if args.vae else (dataset, None)
        self.augment_pipe = (AugmentPipe.edm_default(args.augment_p, colors=args.augment_colors)
                             if args.augment_p > 0 else None)
        augment_dim = edm_augment_dim(args.augment_p, args.augment_colors)
        pretrained = load_pretrained(args)
        self.text_components, self.captions = None, None
        if args.caption_column is not None:
            token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
            self.text_components = load_text_components(args.text_encoder, args.cache_dir, token)
        width = text_width(self.text_components[0]) if self.text_components else 0
        model = build_model(args, self.dataset, augment_dim, pretrained, text_width=width)
        if self.text_components is not None:
            self.captions = prepare_caption_embeddings(
                self.pixels.caption_texts, *self.text_components, args.text_encoder, args.decoded_cache_dir,
                self.accelerator, cross_attention=bool(model.config.cross_attention_dim))
        if pretrained is not None:
            logger.info("Fine-tuning %s: %s", args.pretrained_model_name_or_path,
                        transfer_weights(pretrained.state_dict, model).summary())
        if args.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        # Fine-tuning averages from the start, without the EMA ramp-up (EDM's --transfer).
        self.ema = EDMEma(model, args.ema_halflife_kimg, None if pretrained else args.ema_rampup_ratio or None)
        sigma_data = getattr(model.precond, "sigma_data", EDM_SIGMA_DATA)
        self.loss_fn = (EDM2Loss(args.p_mean, args.p_std, sigma_data) if args.loss == "edm2"
                        else loss_for_model(model, args.p_mean, args.p_std))
        configure_numerics(args.exact_numerics)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                     fused=fused_adam(self.accelerator.device, args.exact_numerics))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema.model.to(self.accelerator.device)
        self._phema_saved_nimg: int | None = None
        self.progress = TrainingProgress()
        self.total_steps = math.ceil(args.duration_kimg * 1000 / self.global_batch)
        if args.max_train_steps is not None:
            self.total_steps = min(self.total_steps, args.max_train_steps)
        self.phema = None
        if args.phema_stds:
            try:
                check_snapshot_interval(args.phema_every, self.global_batch)
                if args.phema_export_std is not None:
                    check_std(args.phema_export_std)
            except ValueError as error:
                raise TrainingError(str(error)) from None
            self.phema = PowerFunctionEMA(self.accelerator.unwrap_model(self.model), args.phema_stds)
        self._export: tuple[int, torch.nn.Module] | None = None  # (step, model) of the post-hoc EMA export
        self._sampled_step = self._saved_step = None
        self._diverged_at: int | None = None  # the first step of the current run of non-finite losses
        self.evaluator = (TrainingEvaluator(args, self.pixels, self.accelerator, self._append_log)
                          if args.eval_every is not None else None)
        if self.accelerator.is_main_process:  # only once the whole setup worked: a failed start leaves it as it was
            with open(output_dir / "training_config.json", "w", encoding="utf-8") as f:
                json.dump(public_config(args), f, indent=2)

    def _latent_dataset(self) -> tuple[LatentDataset, AutoencoderKL]:
        """`--vae`: the training images encoded into latents, and the VAE (with the latent statistics in its
        config)."""
        args, accelerator = self.args, self.accelerator
        if args.augment_p > 0:
            raise TrainingError(f"--vae {args.vae} trains on latents, which EDM's geometric augmentation would distort:"
                                " pass --augment_p 0 (and --xflip for mirrored copies).")
        token = read_token_file(args.hub_token_file) if args.hub_token_file else args.hub_token
        vae = load_vae(args.vae, args.cache_dir, token).to(accelerator.device)
        check_vae_fits(vae.config, self.pixels.resolution, self.pixels.num_channels, args.vae)
        latents = encode_dataset(self.pixels, vae, args.vae, args.decoded_cache_dir, accelerator)
        attach_latent_statistics(vae, *latent_statistics(vae, args.vae, latents.raw.info))
        vae.requires_grad_(False)
        self._latent_transform = latent_scale_and_bias(vae.config, accelerator.device)
        return latents, vae

    # --- the loop ------------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Runs the loop to the end, then waits for the last Hub upload (also when the run fails). A failed final
        upload is an error (the exit status says so); the local outputs are complete either way."""
        try:
            self._run()
        except BaseException:
            if self.publisher is not None:
                self.publisher.close()
            raise
        if self.publisher is not None and not self.publisher.close():
            raise TrainingError(f"the final upload to {self.publisher.repo_id} failed (see the warning above); the"
                                f" outputs in {self.args.output_dir} are complete: upload them with `hf upload"
                                f" {self.publisher.repo_id} {self.args.output_dir}`.")

    def _run(self) -> None:
        args, accelerator = self.args, self.accelerator
        if accelerator.trackers:
            accelerator.init_trackers("edm", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                     for k, v in public_config(args).items()})
        self._maybe_resume()
        logger.info(
            "Training on %s (%d images, %s, %dx%d, %d channel(s)) for %d steps = %.1f kimg at %d images per step "
            "(%d per device x %d processes x %d accumulation).",
            self.dataset.source_description, len(self.dataset),
            (f"{len(self.pixels.caption_texts)} distinct captions" if self.captions is not None else
             f"{self.dataset.num_classes} classes" if self.dataset.num_classes else "unconditional"),
            self.dataset.resolution, self.dataset.resolution, self.dataset.num_channels, self.total_steps,
            self.total_steps * self.global_batch / 1000, self.global_batch, args.train_batch_size,
            accelerator.num_processes, args.gradient_accumulation_steps,
        )
        batches = self.batches()
        bar = tqdm(total=self.total_steps, initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=not accelerator.is_local_main_process)
        window = _LogWindow()
        with bar:  # closed (ending its line) before an error message is printed
            while self.progress.step < self.total_steps:
                prev_nimg = self.progress.cur_nimg
                window.add(self.progress.step + 1, *self.train_step(batches))
                self.progress.step += 1
                self.progress.cur_nimg += self.global_batch
                bar.update(1)
                step, cur_nimg = self.progress.step, self.progress.cur_nimg
                if step % args.logging_steps == 0 or step == self.total_steps:
                    self._track_divergence(window)
                    diverged = window.all_non_finite
                    logs = window.flush(self.optimizer.param_groups[0]["lr"])
                    bar.set_postfix(kimg=f"{cur_nimg / 1000:.1f}", loss=f"{logs['loss']:.4f}",
                                    lr=f"{logs['lr']:.2e}", img_s=f"{logs['img_per_sec']:.0f}")
                    accelerator.log(logs, step=step)
                    self._append_log({"step": step, "kimg": cur_nimg / 1000, **logs})
                    if diverged:
                        self._stop_diverged(logs["loss"])
                if args.sample_every is not None and args.sample_every.due(step, cur_nimg, prev_nimg):
                    self._sample_grid()
                # The last step is always evaluated, before its checkpoint so that it holds the final scores.
                if self.evaluator is not None and (args.eval_every.due(step, cur_nimg, prev_nimg)
                                                   or step == self.total_steps):
                    self._evaluate()
                if self.phema is not None and args.phema_every.due(step, cur_nimg, prev_nimg):
                    self._track_divergence(window)
                    if self._diverged_at is None:  # snapshots of diverging weights would spoil every reconstruction
                        self._save_phema_snapshots()
                    elif accelerator.is_main_process:
                        logger.warning("No post-hoc EMA snapshot at step %d: the loss has not been finite since step "
                                       "%d.", step, self._diverged_at)
                if args.checkpointing_steps is not None and args.checkpointing_steps.due(step, cur_nimg, prev_nimg):
                    self._track_divergence(window)
                    if self._diverged_at is None:
                        self._save()
                    elif accelerator.is_main_process:
                        logger.warning("No checkpoint at step %d: the loss has not been finite since step %d.", step,
                                       self._diverged_at)
        if args.sample_every is not None and self._sampled_step != self.progress.step:
            self._sample_grid()
        self._save(final=True)
        accelerator.end_training()

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's (images, labels) batches of the run from the current step on, as `train_step` takes them
        (a resumed run continues with the batches the uninterrupted run would have used)."""
        args, accelerator = self.args, self.accelerator
        return iter(torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=StreamBatchSampler(len(self.dataset), args.train_batch_size, accelerator.process_index,
                                             accelerator.num_processes, args.seed,
                                             start_batch=self.progress.step * args.gradient_accumulation_steps),
            num_workers=args.dataloader_num_workers,
            pin_memory=accelerator.device.type == "cuda",
            prefetch_factor=4 if args.dataloader_num_workers else None,
            # Its own generator: creating the iterator must not consume the global RNG (exact resume).
            generator=torch.Generator().manual_seed(args.seed),
        ))

    def _track_divergence(self, window: _LogWindow) -> None:
        """Updates the first step of the current run of non-finite losses from the steps `window` has not reported."""
        for step, finite in window.new_finiteness():
            self._diverged_at = None if finite else (self._diverged_at or step)

    def train_step(self, batches) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step over `gradient_accumulation_steps` batches; returns per-image losses and σ (all
        processes, on the device: nothing here waits for the device) and the number of images."""
        args, accelerator = self.args, self.accelerator
        if args.lr_schedule == "edm2":
            lr = edm2_learning_rate(self.progress.cur_nimg, self.global_batch, args.learning_rate, args.ref_batches,
                                    args.lr_rampup_kimg * 1000)
        else:
            lr = edm_learning_rate(self.progress.cur_nimg, args.learning_rate, args.lr_rampup_kimg * 1000)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, sigmas = [], []
        for _ in range(args.gradient_accumulation_steps):
            images, labels = next(batches)
            images = images.to(accelerator.device, non_blocking=True)
            if self.vae is not None:  # a latent drawn from each item's posterior, scaled as EDM2 does
                images = sample_latents(images, *self._latent_transform)
            if args.random_flip:
                images = random_flip(images)
            if args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            model = self.model
            if self.captions is not None:  # the pooled embedding is the label vector; the tokens go along
                condition = self.captions.condition(labels, args.caption_dropout, accelerator.device)
                labels = condition.pop("class_labels")
                model = functools.partial(self.model, **condition) if condition else self.model
            else:
                labels = labels.to(accelerator.device, non_blocking=True) if self.dataset.num_classes else None
            with accelerator.accumulate(self.model):
                if isinstance(self.loss_fn, EDM2Loss):  # needs the model's uncertainty head, not just D
                    loss, sigma = self.loss_fn(model, images, labels)
                else:
                    loss, sigma = self.loss_fn(_denoiser(model), images, labels, self.augment_pipe)
                # EDM's objective: sum over pixels, mean over images (accelerate divides by the accumulation steps).
                accelerator.backward(loss.sum() / images.shape[0])
                if accelerator.sync_gradients:
                    # With fp16 on a GPU, unscaling first lets accelerate's scaler see an overflow (and skip that
                    # step) before the non-finite values are replaced; otherwise it does nothing.
                    accelerator.unscale_gradients()
                    sanitize_gradients(self.model.parameters())
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().mean(dim=(1, 2, 3)))
            sigmas.append(sigma.detach().float().flatten())
        self.ema.update(accelerator.unwrap_model(self.model), self.progress.cur_nimg, self.global_batch)
        if self.phema is not None:  # Eq. 127 counts the images after the step
            self.phema.update(accelerator.unwrap_model(self.model), self.progress.cur_nimg + self.global_batch,
                              self.global_batch)
        return (accelerator.gather(torch.cat(losses)), accelerator.gather(torch.cat(sigmas)), self.global_batch)

    def _append_log(self, record: dict) -> None:
        """Appends a log line to output_dir/logs/log.jsonl (main process), next to the TensorBoard events."""
        if self.accelerator.is_main_process:
            path = Path(self.args.output_dir) / "logs" / "log.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # --- resume, samples, saving -----------------------------------------------------------------------------------

    def _state(self) -> TrainingState:
        return TrainingState(model=self.accelerator.unwrap_model(self.model), ema=self.ema, optimizer=self.optimizer,
                             scaler=self.accelerator.scaler, progress=self.progress, config=public_config(self.args),
                             phema=self.phema)

    def _maybe_resume(self) -> None:
        args = self.args
        if not args.resume_from_checkpoint:
            return
        path = self._resume_path
        if path is None:
            logger.info("No checkpoint in %s yet; starting a new run.", args.output_dir)
            return
        load_checkpoint(path, self.accelerator, self._state())
        self._forget_logs_after(self.progress.step)
        logger.info("Resumed from %s at step %d (%.1f kimg).", path, self.progress.step,
                    self.progress.cur_nimg / 1000)

    def _forget_logs_after(self, step: int) -> None:
        """Drops the log.jsonl records after `step` (and a line cut short by a crash): the resumed run writes those
        steps again."""
        path = Path(self.args.output_dir) / "logs" / "log.jsonl"
        if not self.accelerator.is_main_process or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _logged_step(line) <= step]
        if len(kept) < len(lines):
            staging = path.with_name(path.name + ".tmp")
            staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(staging, path)

    def _stop_diverged(self, loss: float) -> NoReturn:
        """Ends a run whose loss stayed non-finite for a whole logging window, naming the checkpoint to go back to."""
        args = self.args
        # The loss of step s is that of the weights saved at step s - 1: the last good checkpoint comes before.
        good = latest_complete_checkpoint(Path(args.output_dir), before_step=self._diverged_at - 1)
        fix = f"a lower --learning_rate (now {args.learning_rate:g})"
        if self.accelerator.mixed_precision == "fp16":
            fix += " or --mixed_precision bf16"
        where = (f"The last good checkpoint is {good}: resume from it with --resume_from_checkpoint {good} and {fix}"
                 if good is not None else f"No checkpoint was written before it: start again with {fix}")
        raise TrainingError(
            f"the loss has not been finite since step {self._diverged_at} ({loss} at step {self.progress.step}): "
            f"training diverged and stops without saving. {where}.")

    def _pipeline(self) -> EDMPipeline:
        """The exported weights ([`_exported_model`]) as a pipeline, with the VAE of a latent run and the dataset's
        class names, or the text encoder and tokenizer of a text-to-image run."""
        model = self._exported_model()
        sigma_data = getattr(model.precond, "sigma_data", EDM_SIGMA_DATA)  # used for raw networks only
        reference = "edm2" if model.config.backbone_type == "edm2_unet" else "edm"
        scheduler = EDMHeunScheduler(sigma_data=sigma_data, reference_sampler=reference)
        if self.text_components is not None:
            text_encoder, tokenizer = self.text_components
            pipe = EDMTextToImagePipeline(unet=model, scheduler=scheduler, text_encoder=text_encoder,
                                          tokenizer=tokenizer, vae=self.vae)
        else:
            class_names = self.dataset.class_names
            pipe = EDMPipeline(unet=model, scheduler=scheduler, vae=self.vae,
                               id2label=dict(enumerate(class_names)) if class_names else None)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _exported_model(self) -> torch.nn.Module:
        """The weights the pipeline holds: the half-life EMA, or the post-hoc EMA of `--phema_export_std` (a tracked
        σ_rel exactly, another one combined from the tracked averages; see `PowerFunctionEMA.state_dict_for`)."""
        std, step = self.args.phema_export_std, self.progress.step
        if std is None:
            return self.ema.model
        if self._export is None or self._export[0] != step:
            model = self._export[1] if self._export is not None else copy.deepcopy(self.ema.model)
            model.load_state_dict(self.phema.state_dict_for(self.accelerator.unwrap_model(self.model), std,
                                                            self.progress.cur_nimg))
            self._export = (step, model)
        return self._export[1]

    def _sample_grid(self) -> None:
        """Writes samples/grid-<kimg>kimg-step<step>.png and samples.png (the latest): EMA samples, one row per class
        headed by its name (see `sample_grid`)."""
        self._sampled_step = self.progress.step
        if not self.accelerator.is_main_process:
            return
        args = self.args
        num_classes = self.dataset.num_classes
        prompts = self._example_prompts()
        rows = len(prompts) if prompts else num_classes or 4
        count = rows * args.samples_per_class
        generators = [torch.Generator().manual_seed(args.seed * 100_000 + i) for i in range(count)]
        if prompts:
            images = self._pipeline()(prompts, num_images_per_prompt=args.samples_per_class, generator=generators,
                                      num_inference_steps=args.num_inference_steps).images
            row_labels = prompts
        else:
            labels = [i // args.samples_per_class for i in range(count)] if num_classes else None
            images = self._pipeline()(batch_size=count, class_labels=labels, generator=generators,
                                      num_inference_steps=args.num_inference_steps).images
            names = self.dataset.class_names or [str(index) for index in range(num_classes)]
            row_labels = names if num_classes else None
        grid = sample_grid(images, rows, row_labels=row_labels)
        folder = Path(args.output_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / grid_file_name(self.progress.cur_nimg, self.progress.step))
        grid.save(Path(args.output_dir) / "samples.png")
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                array = torch.from_numpy(np.asarray(grid.convert("RGB"))).permute(2, 0, 1)
                tracker.writer.add_image("samples", array, self.progress.step)
            elif tracker.name == "wandb":
                tracker.log_images({"samples": [grid]}, step=self.progress.step)

    def _example_prompts(self) -> list[str] | None:
        """The captions of a text-to-image run's sample grids and card: up to `SAMPLE_PROMPTS` of the training
        captions, spread over their sorted list."""
        if self.captions is None:
            return None
        texts = self.pixels.caption_texts
        step = max(1, len(texts) // SAMPLE_PROMPTS)
        return texts[::step][:SAMPLE_PROMPTS]

    def _evaluate(self) -> None:
        """Scores the EMA pipeline (all processes) and keeps the latest and best values in the progress state."""
        self.progress.scores = self.evaluator.evaluate(self._pipeline(), self.progress.step, self.progress.cur_nimg,
                                                       self.progress.scores)

    def _save_phema_snapshots(self) -> None:
        """Writes output_dir/phema/network-snapshot-<kimg>-<σ_rel>.safetensors for every tracked σ_rel (once per
        image count)."""
        if self._phema_saved_nimg == self.progress.cur_nimg:
            return
        self._phema_saved_nimg = self.progress.cur_nimg
        if self.accelerator.is_main_process:
            self.phema.save_snapshots(self.accelerator.unwrap_model(self.model),
                                      Path(self.args.output_dir) / SNAPSHOT_FOLDER, self.progress.cur_nimg)

    def _save(self, final: bool = False) -> None:
        """Checkpoints (atomically) and rewrites the pipeline folder and model card; uploads them when asked. Once per
        step: the end of a run that has just checkpointed saves nothing again."""
        if final and self.phema is not None:
            self._save_phema_snapshots()
        if self._saved_step == self.progress.step:
            if final and self.publisher is not None:
                self.publisher.upload(self.args.output_dir, "End of training")
            return
        self._saved_step = self.progress.step
        output_dir = Path(self.args.output_dir)
        save_checkpoint(output_dir / f"checkpoint-{self.progress.step}", self.accelerator, self._state())
        if self.accelerator.is_main_process:
            self._write_pipeline_and_card(final)
            # Housekeeping last, so that it can never cost the new checkpoint, pipeline or card.
            prune_checkpoints(output_dir, self.args.checkpoints_total_limit, self.progress.step)
        self.accelerator.wait_for_everyone()

    def _write_pipeline_and_card(self, final: bool) -> None:
        """Rewrites the pipeline folder and the model card (main process), and queues their upload; never with EMA
        weights that are not finite (the pipeline of an earlier save stays)."""
        args = self.args
        pipe = self._pipeline()
        if not all(bool(torch.isfinite(parameter).all()) for parameter in pipe.unet.parameters()):
            raise TrainingError(f"the EMA weights are not finite at step {self.progress.step}, so the pipeline in"
                                f" {args.output_dir} was left as it was; resume from an earlier checkpoint with a lower"
                                f" --learning_rate (now {args.learning_rate:g}).")
        pipe.save_pretrained(args.output_dir)
        grid = Path(args.output_dir) / "samples.png"
        repo_id = self.publisher.repo_id if self.publisher else (args.hub_model_id or Path(args.output_dir).name)
        write_model_card(
            args.output_dir, repo_id=repo_id, config=public_config(args),
            dataset_description=self.dataset.source_description, hub_dataset=args.dataset_name,
            resolution=self.pixels.resolution, channels=self.pixels.num_channels,
            num_classes=self.dataset.num_classes, steps=self.progress.step, kimg=self.progress.cur_nimg / 1000,
            batch_size=self.global_batch, grid_path=grid.name if grid.exists() else None,
            evaluation=self.progress.scores, loss_description=self.loss_fn.description,
            base_model=args.pretrained_model_name_or_path, class_names=self.dataset.class_names,
            prompts=self._example_prompts(),
        )
        logger.info("Saved the EMA pipeline and model card to %s at step %d.", args.output_dir, self.progress.step)
        if self.publisher is not None:
            kimg = self.progress.cur_nimg / 1000
            message = "End of training" if final else f"Step {self.progress.step} ({kimg:g} kimg)"
            self.publisher.upload(args.output_dir, message)



SAMPLE_PROMPTS = 8
"""Rows of a text-to-image run's sample grid (one training caption each)."""


def _denoiser(model: Callable) -> Callable:
    """D(x, σ, class_labels, augment_labels) of a model call, as EDM's loss takes it."""
    def denoise(x, sigma, class_labels, augment_labels):
        return model(x, sigma, class_labels=class_labels, augment_labels=augment_labels).sample
    return denoise


class _LogWindow:
    """Accumulates per-image losses and σ between log lines, on the training device (no host synchronisation per
    step); reports the mean loss, the loss per σ range and img/s, and which steps had non-finite losses."""

    def __init__(self) -> None:
        self.losses, self.sigmas, self.steps, self.finite = [], [], [], []
        self.images, self.start, self.resolved = 0, time.perf_counter(), 0

    def add(self, step: int, losses: torch.Tensor, sigmas: torch.Tensor, images: int) -> None:
        """Adds the per-image losses and σ of `step` (device tensors, kept there)."""
        self.losses.append(losses)
        self.sigmas.append(sigmas)
        self.finite.append(torch.isfinite(losses).all())
        self.steps.append(step)
        self.images += images

    def new_finiteness(self) -> list[tuple[int, bool]]:
        """(step, all losses finite) for the steps added since the last call: one host synchronisation."""
        flags = torch.stack(self.finite[self.resolved:]).tolist() if len(self.finite) > self.resolved else []
        steps = self.steps[self.resolved:]
        self.resolved = len(self.finite)
        return list(zip(steps, flags))

    @property
    def all_non_finite(self) -> bool:
        """Whether every step of the window had a non-finite loss (call after `new_finiteness`)."""
        return bool(self.finite) and not bool(torch.stack(self.finite).any())

    def flush(self, lr: float) -> dict[str, float]:
        losses, sigmas = torch.cat(self.losses).float().cpu(), torch.cat(self.sigmas).float().cpu()
        logs = {"loss": losses.mean().item(), "lr": lr,
                "img_per_sec": self.images / max(time.perf_counter() - self.start, 1e-9)}
        for low, high in zip(SIGMA_BUCKETS[:-1], SIGMA_BUCKETS[1:]):
            in_bucket = (sigmas >= low) & (sigmas < high)
            if in_bucket.any():
                logs[f"loss_sigma_{low:g}-{high:g}"] = losses[in_bucket].mean().item()
        self.__init__()
        return logs


def _logged_step(line: str) -> float:
    """The step of a log.jsonl line; infinite for a line that is not a record (cut short by a crash)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
