# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Sampling and training throughput (images/s) of the paper's networks, and the diffusers baseline.

Sampling is a full `EDMPipeline` call with EDM's Heun sampler at 18 steps (35 network evaluations per image);
training is one full `train_edm.py` optimizer step (`EDMTrainer.train_step`: data, augmentation, loss, backward,
optimizer, EMA). The networks have random weights (speed does not depend on them):

* `cifar10-ddpmpp`: the CIFAR-10 DDPM++ of `--preset cifar10-cond-ddpmpp` (55.7M parameters).
* `imagenet64-adm`: the ImageNet-64 ADM of `--preset imagenet64-cond-adm` (296M parameters).
* `ddpm-cifar10-32`: diffusers' `UNet2DModel` with the shape of `google/ddpm-cifar10-32` (35.7M parameters) driven
  by diffusers' `EDMEulerScheduler` in the loop a diffusers user writes (35 evaluations): the baseline.
* `edm2-img512-xs`, `edm2-img512-s`: EDM2's ImageNet-512 networks (125M, 280M parameters) on 4×64×64 latents, sampled
  as EDM2's generator does (32 Heun steps, 63 evaluations, float32 state) and decoded to 512×512 by a VAE of
  `stabilityai/sd-vae-ft-mse`'s architecture; "+guided" adds classifier-free guidance by the unconditional XS network
  (twice the evaluations), as the official `guid` presets. Training: EDM2-XS steps of `--preset edm2-img512-xs` (on
  4×64×64 latents, given directly: the per-step latent draw costs nothing next to the network) and of
  `--preset edm2-img64-xs` (`edm2-img64-xs`, 3×64×64 pixels), with EDM2's loss, lr schedule and post-hoc EMA.

Each configuration (precision fp32 / tf32 / bf16 / fp16, channels_last, torch.compile mode, CUDA graphs) prints one
JSON line (also appended to `--out DIR/throughput.jsonl`) and the markdown table `DIR/throughput.md` is rewritten
after each one, with the official code's reference numbers (H100) as reference rows and ratios.

    python benchmarks/throughput.py --device cuda --grid gpu-check --out results/   # ~7 min on an H100
    python benchmarks/throughput.py --device cuda --grid full --time_budget 0      # every combination (long)
    python benchmarks/throughput.py --device cpu --small --out /tmp/tp             # tiny networks, seconds

Equivalence (`--check_equivalence`, on by default in the gpu-check grid): every sampling configuration's first timed
call uses the same seed, class labels and weights, so its images are compared with those of the exact path (fp32,
TF32 off, the official attention, eager): the JSON line gets the fraction of pixels that differ by less than 1/255
(images in [0, 1]) and more.

Compile seconds are the first (warm-up) call's time minus a steady-state call's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

EVALUATIONS = 35  # 18 Heun steps (2N - 1 evaluations); the baseline runs 35 Euler steps
HEUN_STEPS = 18
EDM2_STEPS = 32  # EDM2's generator: 63 evaluations per image (126 with guidance)
EDM2_GUIDANCE = 1.4  # the XS and S classifier-free guidance weight of the official FID presets
GIB = 1024**3

EDM2_MODELS = ("edm2-img512-xs", "edm2-img512-s")  # sampled as EDM2's generator does
MODELS = ("cifar10-ddpmpp", "imagenet64-adm", "ddpm-cifar10-32", *EDM2_MODELS, "edm2-img64-xs")
PRESETS = {"cifar10-ddpmpp": "cifar10-cond-ddpmpp", "imagenet64-adm": "imagenet64-cond-adm",
           "edm2-img512-xs": "edm2-img512-xs", "edm2-img64-xs": "edm2-img64-xs"}
"""The models measured in training, with their train_edm.py preset."""
NUM_CLASSES = {"cifar10-ddpmpp": 10, "imagenet64-adm": 1000, "ddpm-cifar10-32": 0, "edm2-img512-xs": 1000,
               "edm2-img512-s": 1000, "edm2-img64-xs": 1000}
RESOLUTION = {"cifar10-ddpmpp": 32, "imagenet64-adm": 64, "ddpm-cifar10-32": 32, "edm2-img512-xs": 512,
              "edm2-img512-s": 512, "edm2-img64-xs": 64}
TRAIN_SHAPE = {"edm2-img512-xs": (4, 64)}
"""Channels and resolution of the training data when they are not the images' (3 channels, RESOLUTION): latents."""
# EDM2 networks (official presets' arguments: 64×64×4 latents, 1000 classes), keyed by model; "-uncond" is the guide.
EDM2_CHANNELS = {"edm2-img512-xs": 128, "edm2-img512-s": 192, "edm2-img512-xs-uncond": 128}
EDM2_SMALL = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=16)

# Small variants for CPU runs: the same backbones, far fewer channels and levels.
SMALL_OVERRIDES = {
    "cifar10-ddpmpp": dict(model_channels=16, channel_mult=[1, 2], layers_per_block=1, attn_resolutions=[16]),
    "imagenet64-adm": dict(model_channels=16, channel_mult=[1, 2], layers_per_block=1, attn_resolutions=[32],
                           resolution=32),
    "edm2-img512-xs": dict(model_channels=16, channel_mult=[1, 2], layers_per_block=1, attn_resolutions=[8],
                           resolution=16),
    "edm2-img64-xs": dict(model_channels=16, channel_mult=[1, 2], layers_per_block=1, attn_resolutions=[8],
                          resolution=16),
}

REFERENCES = [
    # The official code (NVlabs' EDM) on an H100, random init, 35 evaluations per image.
    dict(task="sample", model="cifar10-ddpmpp", dtype="fp32", compiled=False, img_per_s=83.0, batch=None),
    dict(task="sample", model="cifar10-ddpmpp", dtype="fp16", compiled=False, img_per_s=122.0, batch=None),
    dict(task="sample", model="cifar10-ddpmpp", dtype="fp16", compiled=True, img_per_s=226.0, batch=None),
    dict(task="train", model="cifar10-ddpmpp", dtype="fp32", compiled=False, img_per_s=918.0, batch=256),
    dict(task="train", model="cifar10-ddpmpp", dtype="fp16", compiled=False, img_per_s=1534.0, batch=256),
    dict(task="sample", model="imagenet64-adm", dtype="fp16", compiled=False, img_per_s=19.6, batch=None),
    dict(task="train", model="imagenet64-adm", dtype="fp16", compiled=False, img_per_s=191.0, batch=64),
]
GOALS = {("sample", "cifar10-ddpmpp"): 400.0, ("train", "cifar10-ddpmpp"): 3000.0,
         ("sample", "imagenet64-adm"): 60.0, ("train", "imagenet64-adm"): 500.0}
"""Goals on an H100 (img/s)."""


@dataclasses.dataclass
class Config:
    """One measurement: a task on a model with one set of speed switches."""

    task: str  # "sample" or "train"
    model: str  # one of MODELS
    dtype: str  # "fp32" (TF32 off), "tf32", "bf16", "fp16"
    channels_last: bool = False
    compile: str | None = None  # None (eager), "default", "max-autotune-no-cudagraphs", "reduce-overhead"
    batch: int = 1
    guided: bool = False  # EDM2: classifier-free guidance by the unconditional XS network

    @property
    def evaluations_per_image(self) -> int | None:
        if self.task != "sample":
            return None
        if self.model in EDM2_MODELS:
            return (2 * EDM2_STEPS - 1) * (2 if self.guided else 1)
        return EVALUATIONS

    @property
    def cuda_graphs(self) -> bool:
        return self.compile == "reduce-overhead"

    @property
    def exact(self) -> bool:
        """The exact path: fp32 without TF32, eager, official attention."""
        return self.dtype == "fp32" and not self.channels_last and self.compile is None

    @property
    def name(self) -> str:
        parts = [self.dtype] + (["channels_last"] if self.channels_last else []) + (["guided"] if self.guided else [])
        if self.compile == "reduce-overhead":
            parts.append("compile+cuda_graphs")
        elif self.compile is not None:
            parts.append(f"compile({self.compile})")
        return "+".join(parts)


# --- the speed switches: the package's fast paths (`diffusers_edm.pipelines.fast_sampling`), and plain torch for the diffusers
# baseline ------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def numerics(config: Config, device: torch.device):
    """TF32 on for every setting but fp32 (the package's switch, global), cuDNN autotuning on; TF32 off again
    afterwards."""
    from diffusers_edm.pipelines.fast_sampling import set_tf32

    benchmark = torch.backends.cudnn.benchmark
    set_tf32(config.dtype != "fp32")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        set_tf32(False)
        torch.backends.cudnn.benchmark = benchmark


def set_precision(model: torch.nn.Module, dtype: str) -> None:
    """The backbone's dtype: `.to(bf16/fp16)`; the EDM model keeps its preconditioning in float32 and the pipeline
    its sampler state in float64."""
    if dtype in ("bf16", "fp16"):
        model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


def set_channels_last(model: torch.nn.Module, enabled: bool) -> None:
    if enabled:
        model.to(memory_format=torch.channels_last)


def set_attention(model: torch.nn.Module, exact: bool, device: torch.device) -> str:
    """EDM's own attention for the exact path, SDPA otherwise on CUDA (the package's "auto"); diffusers' UNet2DModel
    always uses its SDPA processor."""
    if hasattr(model, "set_attention_implementation"):
        choice = "official" if exact or device.type != "cuda" else "sdpa"
        model.set_attention_implementation(choice)
        return choice
    return "sdpa"


def compile_model(model: torch.nn.Module, mode: str | None) -> None:
    """`torch.compile` in place with static shapes; "reduce-overhead" records CUDA graphs (cudagraph trees)."""
    if mode is not None:
        model.compile(mode=None if mode == "default" else mode, dynamic=False)


# --- models ----------------------------------------------------------------------------------------------------------

def ddpm_cifar10_32_config(small: bool) -> dict:
    """`UNet2DModel` arguments of google/ddpm-cifar10-32 (written out here; no download)."""
    return dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1 if small else 2,
        block_out_channels=(32, 32, 32, 32) if small else (128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32,
        time_embedding_type="positional",
    )


def edm_model_config(model: str, small: bool) -> dict:
    from diffusers_edm.training.model_config import preset_model_config

    if model.startswith("edm2-"):
        backbone = EDM2_SMALL if small else {"model_channels": EDM2_CHANNELS[model]}
        return dict(sample_size=16 if small else 64, in_channels=4, out_channels=4, backbone_type="edm2_unet",
                    num_class_labels=0 if model.endswith("-uncond") else (10 if small else 1000),
                    backbone_config=dict(backbone))
    return preset_model_config(PRESETS[model], **(SMALL_OVERRIDES[model] if small else {}))


def build_vae(small: bool, seed: int = 0) -> torch.nn.Module:
    """An `AutoencoderKL` of `stabilityai/sd-vae-ft-mse`'s architecture (83.7M parameters; random weights, written
    out here, no download) with EDM2's latent statistics; tiny on the CPU."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    blocks = (8, 16) if small else (128, 256, 512, 512)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(blocks),
                        up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=blocks,
                        layers_per_block=1 if small else 2, latent_channels=4, norm_num_groups=4 if small else 32,
                        sample_size=32 if small else 512)
    vae.register_to_config(latents_mean=[5.81, 3.25, 0.12, -2.15], latents_std=[4.17, 4.62, 3.71, 3.28],
                           scaling_factor=0.5)
    return vae.eval()


_BUILT: dict[tuple, torch.nn.Module] = {}


def build_model(model: str, small: bool, seed: int = 0, redraw: bool = True) -> torch.nn.Module:
    """The network with random weights, the same for every configuration (seeded, built once on the CPU and copied).
    With `redraw`, every weight matrix and kernel is drawn again (see `redraw_weights`)."""
    key = (model, small, seed, redraw)
    if key not in _BUILT:
        _BUILT[key] = _build_model(model, small, seed, redraw)
    return copy.deepcopy(_BUILT[key])


def _build_model(model: str, small: bool, seed: int, redraw: bool) -> torch.nn.Module:
    torch.manual_seed(seed)
    if model == "ddpm-cifar10-32":
        from diffusers import UNet2DModel

        network = UNet2DModel(**ddpm_cifar10_32_config(small))
    else:
        from diffusers_edm import EDMPreconditionedUNet2DModel

        network = EDMPreconditionedUNet2DModel(**edm_model_config(model, small))
    if redraw:
        redraw_weights(network, seed)
    return network.eval()


@torch.no_grad()
def redraw_weights(network: torch.nn.Module, seed: int) -> None:
    """N(0, 1/fan_in) for every weight of two or more dimensions, biases N(0, 0.02²). The paper's initialisation
    zeroes (1e-5) the last layer of every residual branch and of the output, so a freshly built EDM network outputs
    almost nothing and every precision would give the same images: the equivalence check would be vacuous. Speed
    does not depend on the values."""
    generator = torch.Generator().manual_seed(seed + 1)
    for name, parameter in network.named_parameters():
        if parameter.dim() >= 2:
            fan_in = parameter[0].numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
        elif name.endswith("bias"):
            parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
        elif name.endswith("gain"):  # EDM2's learned gains start at 0 (silent branches and output)
            parameter.copy_(1 + 0.5 * torch.randn(parameter.shape, generator=generator))


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- measurements ----------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / GIB, 3) if device.type == "cuda" else None


def cleanup(device: torch.device) -> None:
    """Forgets compiled graphs (and their CUDA graph memory pools) and frees memory between configurations."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_calls(run, count: int, device: torch.device) -> list[float]:
    """Seconds of each of `count` calls of `run(i)`, each ended by a device synchronisation."""
    seconds = []
    for i in range(count):
        synchronize(device)
        start = time.perf_counter()
        run(i)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def images_01(sample: torch.Tensor) -> torch.Tensor:
    """A final sample (nominally [-1, 1]) as float64 images in [0, 1]."""
    return ((sample.double() + 1) / 2).clamp(0, 1).cpu()


def equivalence(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """How far `images` are from the exact path's `reference` (both in [0, 1])."""
    difference = (images - reference).abs()
    quantized = lambda x: (x * 255 + 0.5).floor().clamp(0, 255)  # noqa: E731
    saturated = ((reference <= 0) | (reference >= 1)).double().mean().item()
    return {"equiv_frac_within_1_255": difference.lt(1 / 255).double().mean().item(),
            "equiv_frac_uint8_equal": quantized(images).eq(quantized(reference)).double().mean().item(),
            "equiv_max_abs_diff": difference.max().item(), "equiv_mean_abs_diff": difference.mean().item(),
            "equiv_reference_saturated_frac": saturated}


def sample_edm(config: Config, device: torch.device, small: bool, iterations: int,
               redraw: bool = True) -> tuple[dict, torch.Tensor]:
    from diffusers_edm import EDMHeunScheduler, EDMPipeline
    from diffusers_edm.pipelines.fast_sampling import accelerate_pipeline

    unet = build_model(config.model, small, redraw=redraw).to(device)
    params = count_params(unet)
    attention = set_attention(unet, config.exact, device)
    pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler())
    pipe.set_progress_bar_config(disable=True)
    # TF32 is set by `numerics` around the whole measurement; the dtype here is the backbone's.
    accelerate_pipeline(pipe, dtype=config.dtype if config.dtype in ("bf16", "fp16") else None,
                        channels_last=config.channels_last, compile=config.compile, cuda_graphs=config.cuda_graphs)
    num_classes = unet.config.num_class_labels
    labels = (torch.arange(config.batch) % num_classes).tolist() if num_classes else None
    outputs = {}

    def run(seed: int) -> None:
        generator = torch.Generator(device).manual_seed(seed)
        outputs[seed] = pipe(batch_size=config.batch, class_labels=labels, num_inference_steps=HEUN_STEPS,
                             output_type="latent", generator=generator).images

    result = _time_sampling(run, device, iterations)
    images = images_01(outputs[0])
    return dict(result, params=params, attention=attention, scheduler="EDMHeunScheduler(18 steps)"), images


def sample_edm2(config: Config, device: torch.device, small: bool, iterations: int,
                redraw: bool = True) -> tuple[dict, torch.Tensor]:
    """EDM2's generator flow: 32 Heun steps on latents (float32 state), optional classifier-free guidance by the
    unconditional XS network, VAE decode to pixels (float32 VAE, as the official generator)."""
    from diffusers_edm import EDMHeunScheduler, EDMPipeline
    from diffusers_edm.pipelines.fast_sampling import accelerate_pipeline
    from diffusers_edm.sampler_presets import EDM2_SCHEDULE

    unet = build_model(config.model, small, redraw=redraw).to(device)
    params = count_params(unet)
    guide = build_model("edm2-img512-xs-uncond", small, seed=1, redraw=redraw).to(device) if config.guided else None
    attention = set_attention(unet, config.exact, device)
    if guide is not None:
        set_attention(guide, config.exact, device)
    pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler(**EDM2_SCHEDULE), guide_unet=guide,
                       vae=build_vae(small).to(device), guidance_scale=EDM2_GUIDANCE if config.guided else 1.0)
    pipe.set_progress_bar_config(disable=True)
    accelerate_pipeline(pipe, dtype=config.dtype if config.dtype in ("bf16", "fp16") else None,
                        channels_last=config.channels_last, compile=config.compile, cuda_graphs=config.cuda_graphs)
    labels = (torch.arange(config.batch) % unet.config.num_class_labels).tolist()
    outputs = {}

    def run(seed: int) -> None:
        generator = torch.Generator(device).manual_seed(seed)
        outputs[seed] = pipe(batch_size=config.batch, class_labels=labels, num_inference_steps=EDM2_STEPS,
                             output_type="pt", generator=generator).images

    result = _time_sampling(run, device, iterations)
    scheduler = f"EDMHeunScheduler(32 steps, float32 state{', CFG w=1.4' if config.guided else ''}) + VAE decode"
    return dict(result, params=params, attention=attention, scheduler=scheduler), outputs[0].double().cpu()


def sample_diffusers(config: Config, device: torch.device, small: bool, iterations: int,
                     redraw: bool = True) -> tuple[dict, torch.Tensor]:
    """The diffusers baseline: UNet2DModel + EDMEulerScheduler in a plain loop (35 evaluations)."""
    from diffusers import EDMEulerScheduler

    unet = build_model(config.model, small, redraw=redraw).to(device)
    params = count_params(unet)
    set_precision(unet, config.dtype)
    set_channels_last(unet, config.channels_last)
    compile_model(unet, config.compile)
    scheduler = EDMEulerScheduler()
    dtype = unet.dtype
    shape = (config.batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    outputs = {}

    @torch.no_grad()
    def run(seed: int) -> None:
        generator = torch.Generator(device).manual_seed(seed)
        scheduler.set_timesteps(EVALUATIONS, device=device)
        sample = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(sample, t)
            if config.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            noise_pred = unet(model_input.to(dtype), t).sample.float()
            sample = scheduler.step(noise_pred, t, sample).prev_sample
        outputs[seed] = sample

    result = _time_sampling(run, device, iterations)
    images = images_01(outputs[0])
    return dict(result, params=params, attention="sdpa", scheduler="diffusers EDMEulerScheduler(35 steps)"), images


def _time_sampling(run, device: torch.device, iterations: int) -> dict:
    warmup = timed_calls(lambda i: run(1000 + i), 1, device)[0]
    reset_peak(device)
    seconds = timed_calls(run, iterations, device)
    steady = min(seconds)
    return dict(warmup_s=round(warmup, 3), steady_s=round(steady, 4), timed_s=round(sum(seconds), 3),
                iterations=iterations, compile_s=round(max(warmup - steady, 0.0), 2), peak_memory_gib=peak_gib(device))


def train_edm(config: Config, device: torch.device, small: bool, iterations: int, output_dir: str) -> dict:
    """`iterations` timed `EDMTrainer.train_step`s (after 2 warm-up steps) with the trainer's own flags."""
    from accelerate.state import AcceleratorState, GradientState

    from diffusers_edm.commands.train import parse_args
    from diffusers_edm.data import EDMImageDataset
    from diffusers_edm.training.trainer import EDMTrainer

    AcceleratorState._reset_state()  # each configuration has its own mixed precision
    GradientState._reset_state()
    channels, resolution = TRAIN_SHAPE.get(config.model, (3, RESOLUTION[config.model]))
    num_classes = NUM_CLASSES[config.model]
    argv = ["--preset", PRESETS[config.model], "--output_dir", output_dir, "--overwrite_output_dir",
            "--total_batch_size", str(config.batch), "--report_to", "none", "--sample_every", "0",
            "--checkpointing_steps", "0", "--logging_steps", "1000000",
            "--mixed_precision", {"bf16": "bf16", "fp16": "fp16"}.get(config.dtype, "no")]
    if config.dtype == "fp32":
        argv.append("--exact_numerics")  # TF32 off (the official code's numerics)
    if config.channels_last:
        argv.append("--channels_last")
    if config.compile == "default":
        argv.append("--torch_compile")  # train_edm.py's own compilation (accelerate's inductor backend)
    if small:
        overrides = SMALL_OVERRIDES[config.model]
        resolution = overrides.get("resolution", resolution)
        argv += ["--model_channels", str(overrides["model_channels"]),
                 "--channel_mult", ",".join(map(str, overrides["channel_mult"])),
                 "--layers_per_block", str(overrides["layers_per_block"]),
                 "--attn_resolutions", ",".join(map(str, overrides["attn_resolutions"]))]
    args = parse_args(argv)
    args.vae = args.preset = None  # the preset's settings are applied; its data (and VAE) replaced by random items
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    count = max(4 * config.batch, 64)
    generator = torch.Generator().manual_seed(0)
    dataset = EDMImageDataset(
        images=torch.randint(0, 256, (count, channels, resolution, resolution), dtype=torch.uint8, generator=generator),
        class_indices=torch.randint(0, num_classes, (count,), generator=generator), num_classes=num_classes,
        class_names=None, source_description="random")
    torch.manual_seed(0)
    trainer = EDMTrainer(args, dataset=dataset)
    if config.compile not in (None, "default"):
        compile_model(trainer.model, config.compile)  # other modes: compiled in place, after accelerate's prepare
    params = count_params(trainer.accelerator.unwrap_model(trainer.model))
    batches = trainer.batches()

    def step(_: int) -> None:
        if config.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        trainer.train_step(batches)
        trainer.progress.step += 1
        trainer.progress.cur_nimg += trainer.global_batch

    warmup = timed_calls(step, 1, device)[0]
    second = timed_calls(step, 1, device)[0]  # fp16's loss scaler and cudnn settle; graphs recorded
    reset_peak(device)
    seconds = timed_calls(step, iterations, device)
    steady = min(seconds)
    # img/s over the whole timed window (host and device overlap across steps only within a step here)
    result = dict(warmup_s=round(warmup + second, 3), steady_s=round(steady, 4), timed_s=round(sum(seconds), 3),
                  iterations=iterations, compile_s=round(max(warmup + second - 2 * steady, 0.0), 2),
                  peak_memory_gib=peak_gib(device), params=params,
                  attention=getattr(trainer.accelerator.unwrap_model(trainer.model), "attention_implementation", "-"),
                  mixed_precision=args.mixed_precision)
    return result


# --- grids -----------------------------------------------------------------------------------------------------------

def gpu_check_grid(sample_batch: dict, train_batch: dict) -> list[Config]:
    """The prioritised grid of `gpu_check.sh` (later entries are dropped first by the time budget)."""
    C = Config
    c, i, d = "cifar10-ddpmpp", "imagenet64-adm", "ddpm-cifar10-32"
    x, s2 = EDM2_MODELS
    sc, si, sd, se = sample_batch[c], sample_batch[i], sample_batch[d], sample_batch[x]
    te = train_batch["edm2-img512-xs"]
    tc, ti = train_batch[c], train_batch[i]
    return [
        C("sample", c, "fp32", batch=sc),  # the exact path (equivalence reference)
        C("sample", c, "tf32", batch=sc),
        C("sample", c, "bf16", batch=sc),
        C("sample", c, "fp16", batch=sc),
        C("sample", c, "fp16", True, batch=sc),
        C("sample", c, "fp16", True, "default", batch=sc),
        C("sample", c, "tf32", True, "reduce-overhead", batch=sc),  # --fast: the equivalence claim
        C("sample", c, "fp16", True, "reduce-overhead", batch=sc),
        C("sample", x, "fp32", batch=se),  # EDM2's generator: exact path, then the fast eager path, then guided
        C("sample", x, "fp16", True, batch=se),
        C("sample", x, "fp16", True, batch=se, guided=True),
        C("sample", s2, "fp16", True, batch=se),
        C("sample", s2, "fp16", True, batch=se, guided=True),
        C("train", c, "fp32", batch=tc),
        C("train", "edm2-img512-xs", "bf16", batch=te),  # EDM2-XS training: ImageNet-512 latents and ImageNet-64
        C("train", "edm2-img64-xs", "bf16", batch=te),
        C("train", c, "bf16", batch=tc),
        C("train", c, "fp16", batch=tc),
        C("train", c, "bf16", True, batch=tc),
        C("train", c, "bf16", True, "default", batch=tc),
        C("sample", i, "tf32", batch=si),
        C("sample", i, "fp16", batch=si),
        C("sample", i, "fp16", True, batch=si),
        C("train", i, "fp16", batch=ti),
        C("train", i, "bf16", True, batch=ti),
        C("sample", d, "fp32", batch=sd),
        C("sample", d, "fp16", batch=sd),
        C("sample", i, "fp16", True, "default", batch=si),
        C("sample", d, "fp16", True, "default", batch=sd),
        C("train", i, "bf16", True, "default", batch=ti),
        C("train", c, "bf16", True, "reduce-overhead", batch=tc),
    ]


def full_grid(models, tasks, sample_batch, train_batch, compile_modes) -> list[Config]:
    """Every combination of precision, channels_last and compile mode (the exact path first for each model)."""
    grid = []
    for model in models:
        for task in tasks:
            if task == "train" and model not in PRESETS:
                continue
            batch = (sample_batch if task == "sample" else train_batch)[model]
            for mode in compile_modes:
                for dtype in ("fp32", "tf32", "bf16", "fp16"):
                    for channels_last in (False, True):
                        grid.append(Config(task, model, dtype, channels_last, mode, batch))
    return grid


def small_grid(models, tasks, sample_batch, train_batch) -> list[Config]:
    """CPU: the exact path, bf16, channels_last, and the CUDA-only settings (reported as skipped)."""
    grid = []
    for model in models:
        for task in tasks:
            if task == "train" and model not in PRESETS:
                continue
            batch = (sample_batch if task == "sample" else train_batch)[model]
            if model in EDM2_MODELS and task == "sample":
                grid += [Config(task, model, "fp32", batch=batch), Config(task, model, "bf16", batch=batch),
                         Config(task, model, "fp32", batch=batch, guided=True)]
                continue
            if model.startswith("edm2-"):
                grid += [Config(task, model, "fp32", batch=batch), Config(task, model, "bf16", batch=batch)]
                continue
            grid += [Config(task, model, "fp32", batch=batch), Config(task, model, "bf16", batch=batch),
                     Config(task, model, "fp32", True, batch=batch), Config(task, model, "tf32", batch=batch),
                     Config(task, model, "fp16", batch=batch),
                     Config(task, model, "fp32", False, "default", batch=batch),
                     Config(task, model, "fp16", True, "reduce-overhead", batch=batch)]
    return grid


def skip_reason(config: Config, device: torch.device, compile_on_cpu: bool) -> str | None:
    if device.type != "cuda":
        if config.cuda_graphs:
            return "CUDA graphs need a CUDA device"
        if config.dtype == "tf32":
            return "TF32 is a CUDA (Ampere+) setting; on the CPU it equals fp32"
        if config.dtype == "fp16" and config.task == "train":
            return "the trainer refuses fp16 mixed precision on the CPU"
        if config.dtype == "fp16":
            return "fp16 on the CPU is not a fast path (slow kernels); measured on CUDA only"
        if config.compile is not None and not compile_on_cpu:
            return "compilation on the CPU is off (pass --compile_on_cpu)"
    if config.task == "train" and config.model not in PRESETS:
        return "measured for sampling only"
    if config.task == "sample" and config.model == "edm2-img64-xs":
        return "measured for training only"
    return None


def estimated_seconds(config: Config, measured: dict) -> float:
    """A rough cost of a configuration on an H100, for the time budget (measured compile times update it)."""
    if config.model.startswith("edm2-"):
        return 30.0 if config.compile is None else 150.0
    if config.compile is None:
        return 12.0 if config.model == "imagenet64-adm" else 8.0
    key = (config.task, config.model)
    default = {"sample": 70.0, "train": 120.0}[config.task] * (1.5 if config.model == "imagenet64-adm" else 1.0)
    return measured.get(key, default) + 10.0


# --- reporting -------------------------------------------------------------------------------------------------------

def reference_for(config: Config) -> dict | None:
    for ref in REFERENCES:
        if (ref["task"], ref["model"], ref["dtype"], ref["compiled"]) == (
                config.task, config.model, config.dtype, config.compile is not None):
            return ref
    return None


def best_reference(task: str, model: str) -> float | None:
    values = [ref["img_per_s"] for ref in REFERENCES if ref["task"] == task and ref["model"] == model]
    return max(values) if values else None


def environment(device: torch.device) -> dict:
    import diffusers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads()}


def write_table(path: Path, records: list[dict], env: dict, elapsed: float, small: bool) -> None:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"# Throughput: {env['device_name']} ({env['device']}), torch {env['torch']}, diffusers "
             f"{env['diffusers']}", "",
             f"{'Small CPU networks: not comparable with the references. ' if small else ''}Sampling: "
             f"{EVALUATIONS} network evaluations per image (EDM: Heun, 18 steps; baseline: EDMEulerScheduler, "
             f"35 steps); EDM2: 32 Heun steps (63 evaluations, 126 guided) and the VAE decode to 512x512, no"
             " official reference measured here (time NVlabs/edm2's generate_images.py on the same GPU for one)."
             f" Training: one full train_edm.py step. Random weights. Elapsed {elapsed:.0f} s.", "",
             "| task | model | configuration | batch | img/s | official ref (same setting) | × ref | × best official "
             "| goal | peak GiB | compile s | equiv <1/255 | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ref in REFERENCES:
        setting = ref["dtype"] + ("+compile" if ref["compiled"] else "")
        lines.append(f"| {ref['task']} | {ref['model']} | **official EDM code, H100** ({setting}) | "
                     f"{ref['batch'] or '-'} | {ref['img_per_s']:g} | reference | 1.00 | - | - | - | - | - | ref |")
    for r in records:
        goal = GOALS.get((r["task"], r["model"]))
        goal_text = "-" if goal is None or r.get("img_per_s") is None else (
            f"{goal:g} {'met' if r['img_per_s'] >= goal else 'not met'}")
        if small:
            goal_text = "-"
        equiv = r.get("equiv_frac_within_1_255")
        lines.append(
            f"| {r['task']} | {r['model']} | {r['config']} | {r['batch']} | {fmt(r.get('img_per_s'), '.1f')} | "
            f"{fmt(r.get('reference_img_per_s'), 'g')} | {fmt(r.get('ratio_to_reference'), '.2f')} | "
            f"{fmt(r.get('ratio_to_best_official'), '.2f')} | {goal_text} | {fmt(r.get('peak_memory_gib'), '.2f')} | "
            f"{fmt(r.get('compile_s') if r.get('compile') else None, '.1f')} | "
            f"{fmt(None if equiv is None else 100 * equiv, '.2f')}{'' if equiv is None else '%'} | "
            f"{r['status']}{': ' + r['reason'] if r.get('reason') else ''} |")
    lines += ["", "Equivalence with the exact path (fp32, TF32 off, official attention, eager; same seeds, labels and "
              "weights), pixels in [0, 1]; the claim for the fast path is >= 99% within 1/255:", ""]
    lines += [f"- {line}" for line in equivalence_summary(records)] or ["- (no comparison made)"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def equivalence_summary(records: list[dict]) -> list[str]:
    """One line per sampling configuration compared with the exact path."""
    lines = []
    for r in records:
        if r.get("equiv_frac_within_1_255") is not None:
            fraction = r["equiv_frac_within_1_255"]
            lines.append(
                f"{r['model']} {r['config']} (batch {r['batch']}): {100 * fraction:.3f}% of pixels within 1/255 "
                f"({'PASS' if fraction >= 0.99 else 'FAIL'} at 99%), "
                f"uint8-equal {100 * r['equiv_frac_uint8_equal']:.2f}%, "
                f"max |diff| {r['equiv_max_abs_diff']:.4f}, reference saturated "
                f"{100 * r['equiv_reference_saturated_frac']:.1f}%")
    return lines


# --- main ------------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny networks and batches (automatic on the CPU)")
    parser.add_argument("--full_size", action="store_true", help="the paper's networks even on the CPU (slow)")
    parser.add_argument("--grid", choices=("auto", "gpu-check", "full", "small"), default="auto",
                        help="auto: gpu-check on CUDA, small on the CPU")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--tasks", default="sample,train", help="comma-separated subset of sample,train")
    parser.add_argument("--compile_modes", default="none,default,max-autotune-no-cudagraphs,reduce-overhead",
                        help="compile modes of the full grid (none = eager)")
    parser.add_argument("--sample_batch", type=int, default=None,
                        help="sampling batch (256 CIFAR, 64 ImageNet, 16 EDM2)")
    parser.add_argument("--train_batch", type=int, default=None, help="training batch (256 CIFAR, 64 ImageNet)")
    parser.add_argument("--iterations", type=int, default=None, help="timed sampling calls (default 2; CPU 1)")
    parser.add_argument("--train_steps", type=int, default=None, help="timed training steps (default 10; CPU 2)")
    parser.add_argument("--check_equivalence", action=argparse.BooleanOptionalAction, default=True,
                        help="compare every sampling configuration's images with the exact path's")
    parser.add_argument("--weights", choices=("redrawn", "init"), default="redrawn",
                        help="sampling networks: every weight redrawn at random (default; see redraw_weights) or the "
                             "paper's initialisation (near-zero output layers)")
    parser.add_argument("--compile_on_cpu", action="store_true", help="also measure torch.compile on the CPU")
    parser.add_argument("--time_budget", type=float, default=None,
                        help="seconds: skip configurations that would not finish in time (default 420 for gpu-check, "
                             "0 = no limit)")
    parser.add_argument("--out", default=None, help="folder for throughput.jsonl and throughput.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device(args.device)
    small = (args.small or device.type == "cpu") and not args.full_size
    models = [m for m in args.models.split(",") if m]
    tasks = [t for t in args.tasks.split(",") if t]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if small:
        sample_batch = {m: args.sample_batch or 2 for m in MODELS}
        train_batch = {m: args.train_batch or 4 for m in MODELS}
    else:
        sample_batch = {m: args.sample_batch or {"imagenet64-adm": 64, **dict.fromkeys(EDM2_MODELS, 16)}.get(m, 256)
                        for m in MODELS}
        train_batch = {m: args.train_batch or (256 if m in ("cifar10-ddpmpp", "ddpm-cifar10-32") else 64)
                       for m in MODELS}
    iterations = args.iterations or (1 if small else 2)
    train_steps = args.train_steps or (2 if small else 10)
    grid_name = args.grid if args.grid != "auto" else ("small" if small else "gpu-check")
    if grid_name == "gpu-check":
        grid = [c for c in gpu_check_grid(sample_batch, train_batch) if c.model in models and c.task in tasks]
    elif grid_name == "full":
        modes = [None if m == "none" else m for m in args.compile_modes.split(",")]
        grid = full_grid(models, tasks, sample_batch, train_batch, modes)
    else:
        grid = small_grid(models, tasks, sample_batch, train_batch)
    budget = args.time_budget if args.time_budget is not None else (420.0 if grid_name == "gpu-check" else 0.0)

    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.jsonl").write_text("", encoding="utf-8")
    env = environment(device)
    print(f"# {env['device_name']}: torch {env['torch']}, grid {grid_name} ({len(grid)} configurations), "
          f"{'small networks' if small else 'paper networks'}, time budget {budget or 'none'} s", file=sys.stderr)
    records, references, measured_compile = [], {}, {}
    work_dir = tempfile.mkdtemp(prefix="edm-throughput-")
    for config in grid:
        record = dict(kind="throughput", task=config.task, model=config.model, config=config.name,
                      batch=config.batch, dtype=config.dtype, channels_last=config.channels_last,
                      compile=config.compile, cuda_graphs=config.cuda_graphs, small=small, guided=config.guided,
                      evaluations_per_image=config.evaluations_per_image, **env)
        ref = reference_for(config) if not small else None
        record["reference_img_per_s"] = ref["img_per_s"] if ref else None
        reason = skip_reason(config, device, args.compile_on_cpu)
        elapsed = time.perf_counter() - start
        if reason is None and budget and elapsed + estimated_seconds(config, measured_compile) > budget:
            reason = f"time budget ({elapsed:.0f} s used of {budget:.0f} s)"
        if reason is not None:
            record.update(status="skipped", reason=reason)
        else:
            try:
                with numerics(config, device):
                    if config.task == "sample":
                        sampler = (sample_diffusers if config.model == "ddpm-cifar10-32" else
                                   sample_edm2 if config.model in EDM2_MODELS else sample_edm)
                        result, images = sampler(config, device, small, iterations, args.weights == "redrawn")
                        result["img_per_s"] = round(config.batch * iterations / result["timed_s"], 2)
                        if args.check_equivalence:
                            key = (config.model, config.guided)
                            if config.exact:
                                references[key] = images
                            elif key in references and references[key].shape == images.shape:
                                result.update(equivalence(images, references[key]))
                    else:
                        result = train_edm(config, device, small, train_steps, os.path.join(work_dir, "run"))
                        result["img_per_s"] = round(config.batch * train_steps / result["timed_s"], 2)
                record.update(result, status="ok")
                if config.compile is not None:
                    measured_compile[(config.task, config.model)] = result["warmup_s"]
            except Exception as error:  # one failing configuration does not end the run
                record.update(status="error", reason=f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                              if str(error) else type(error).__name__)
            finally:
                cleanup(device)
        if record.get("img_per_s") and ref:
            record["ratio_to_reference"] = round(record["img_per_s"] / ref["img_per_s"], 3)
        best = best_reference(config.task, config.model)
        if record.get("img_per_s") and best and not small:
            record["ratio_to_best_official"] = round(record["img_per_s"] / best, 3)
        record["elapsed_s"] = round(time.perf_counter() - start, 1)
        records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        if out is not None:
            with open(out / "throughput.jsonl", "a", encoding="utf-8") as f:
                f.write(line + "\n")
            write_table(out / "throughput.md", records, env, time.perf_counter() - start, small)
    elapsed = time.perf_counter() - start
    if out is not None:
        write_table(out / "throughput.md", records, env, elapsed, small)
        print(f"# wrote {out / 'throughput.jsonl'} and {out / 'throughput.md'}", file=sys.stderr)
    for line in equivalence_summary(records):
        print(f"# equivalence: {line}", file=sys.stderr)
    print(f"# elapsed {elapsed:.1f} s", file=sys.stderr)
    return records


if __name__ == "__main__":
    main()
