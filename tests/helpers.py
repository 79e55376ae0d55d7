"""Helpers shared by the tests: conformance vectors, tiny models and reference samplers written independently of the
package (they implement the paper's Algorithm 2 directly)."""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA_DIR = Path(__file__).parent / "data"
SHARED_CONFORMANCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"


def conformance(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The json and tensors of a conformance set copied into tests/data/conformance (e.g. "02_sampler_deterministic")."""
    folder = DATA_DIR / "conformance"
    with open(folder / f"{name}.json", encoding="utf-8") as f:
        meta = json.load(f)
    return meta, load_file(folder / f"{name}.safetensors")


def shared_conformance_file(name: str) -> Path:
    """A large conformance file read from ../shared/conformance; skipped locally when absent, an error in CI."""
    path = SHARED_CONFORMANCE_DIR / name
    if not path.exists():
        message = f"{path} is absent (the shared conformance folder is only present in CI and the dev checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def edm2_conformance_file(name: str) -> Path:
    """An EDM2 conformance file: the copy in tests/data/conformance/edm2 (the small ones), else the shared one (see
    [`shared_conformance_file`])."""
    copy = DATA_DIR / "conformance" / "edm2" / name
    return copy if copy.exists() else shared_conformance_file(f"edm2/{name}")


def edm2_case(name: str) -> dict:
    """The entry of an EDM2 conformance set in its index (configs, seeds, cases, tolerances)."""
    with open(edm2_conformance_file("edm2_index.json"), encoding="utf-8") as f:
        return json.load(f)[name]


def linear_denoiser(sigma_data: float = 0.5):
    """Exact denoiser of N(0, σ_data²) data: D(x; σ) = x σ_data² / (σ² + σ_data²)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        return x * sigma_data**2 / (sigma**2 + sigma_data**2)

    return denoise


def mixture_denoiser(dataset: torch.Tensor, tau: float = 0.0, labels: torch.Tensor | None = None,
                     dataset_labels: torch.Tensor | None = None):
    """Exact denoiser of the empirical distribution of `dataset` blurred by N(0, τ²) (conformance README, 02),
    restricted per sample to the images of its one-hot class when labels are given."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        variance = sigma**2 + tau**2
        flat_x = x.to(torch.float64).flatten(1)
        flat_y = dataset.to(torch.float64).flatten(1)
        d2 = ((flat_x[:, None, :] - flat_y[None, :, :]) ** 2).sum(-1)
        logits = -d2 / (2 * variance[:, None])
        if labels is not None:
            allowed = labels[:, dataset_labels] > 0
            logits = logits.masked_fill(~allowed, -math.inf)
        weights = torch.softmax(logits, dim=1)
        mean = (weights @ flat_y).reshape(x.shape)
        c = (tau**2 / variance).reshape(-1, *([1] * (x.ndim - 1)))
        return c * x.to(torch.float64) + (1 - c) * mean

    return denoise


def reference_edm_sampler(denoise, latents, num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0, s_churn=0.0,
                          s_tmin=0.0, s_tmax=math.inf, s_noise=1.0, noise_fn=None, solver="heun",
                          draw_every_step=False):
    """Algorithm 2 of the paper, written out directly (float64 state). `noise_fn(i, shape)` supplies ε_i for a churned
    step i (called only when γ_i > 0, or on every step with `draw_every_step`, as EDM's generate.py draws);
    `denoise(x, σ)` is D."""
    index = torch.arange(num_steps, dtype=torch.float64)
    if num_steps == 1:
        steps = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        steps = (sigma_max ** (1 / rho) + index / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([steps, torch.zeros(1, dtype=torch.float64)])
    x = latents.to(torch.float64) * t[0]
    evaluations = 0
    for i in range(num_steps):
        t_cur, t_next = t[i].item(), t[i + 1].item()
        gamma = min(s_churn / num_steps, math.sqrt(2) - 1) if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0 or draw_every_step:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * noise_fn(i, x.shape)
        d = (x - denoise(x, t_hat).to(torch.float64)) / t_hat
        evaluations += 1
        x_next = x + (t_next - t_hat) * d
        if i < num_steps - 1 and solver == "heun":
            d_prime = (x_next - denoise(x_next, t_next).to(torch.float64)) / t_next
            evaluations += 1
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x, evaluations


def run_scheduler_loop(scheduler, denoise, latents, num_steps, generator=None, dtype=torch.float64, net=None,
                       official_noise_stream=False):
    """The standard diffusers sampling loop around a D-model (`denoise(model_input, σ)`), with the σ range and
    round_sigma of the preconditioning `net` when given; returns the sample and the σ of every model call."""
    net_range = {} if net is None else dict(
        net_sigma_min=net.sigma_min, net_sigma_max=net.sigma_max, round_sigma=net.round_sigma)
    scheduler.set_timesteps(num_steps, official_noise_stream=official_noise_stream, **net_range)
    sample = latents.to(dtype) * scheduler.init_noise_sigma
    sample = scheduler.add_initial_churn(sample, generator)
    called_sigmas = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        called_sigmas.append(float(t))
        sample = scheduler.step(denoise(model_input, t), t, sample, generator=generator).prev_sample
    return sample, called_sigmas


BAD_SHARED_SETTINGS = [
    (dict(sigma_min=0.0), "sigma_min"),
    (dict(rho=0.0), "rho"),
    (dict(s_churn=-1.0), "s_churn"),
    (dict(s_noise=0.0), "s_noise"),
    (dict(s_tmin=2.0, s_tmax=1.0), "s_tmax"),
    (dict(solver="rk4"), "solver.*'heun', 'euler'"),
]
"""Settings both EDM schedulers reject (the ρ-schedule's, Algorithm 2's churn, the solver), with the text their
ValueError must contain."""

BAD_SET_TIMESTEPS_ARGUMENTS = [
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=None), "num_inference_steps"),
    (dict(sigmas=[1.0, 2.0]), "strictly decreasing"),
    (dict(sigmas=[1.0, -0.5]), "> 0"),
    (dict(sigmas=[5.0, 1.0], num_inference_steps=3), "disagrees"),
]
"""`set_timesteps` arguments every EDM scheduler rejects, with the text its ValueError must contain."""


def assert_config_round_trip(scheduler, folder: Path, num_inference_steps: int, **set_timesteps_kwargs):
    """Saves `scheduler` to `folder` and reloads it: the json holds no Infinity (not valid JSON), the configs agree
    and both lay out the same timesteps. Returns the saved json and the reloaded scheduler."""
    # A pipeline's model_index.json names the scheduler's module, where diffusers' loader looks up `SchedulerMixin`.
    module = importlib.import_module(type(scheduler).__module__)
    assert issubclass(type(scheduler), module.SchedulerMixin)
    scheduler.save_pretrained(folder)
    text = (folder / "scheduler_config.json").read_text()
    assert "Infinity" not in text
    loaded = type(scheduler).from_pretrained(folder)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    for s in (scheduler, loaded):
        s.set_timesteps(num_inference_steps, **set_timesteps_kwargs)
    assert torch.equal(loaded.timesteps, scheduler.timesteps)
    return json.loads(text), loaded


def assert_step_after_the_last_is_rejected(scheduler) -> None:
    """A `step` after the last evaluation of a one-step run raises a ValueError that points to `set_timesteps`."""
    scheduler.set_timesteps(1)
    sample = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    t = scheduler.timesteps[0]
    scheduler.step(sample, t, sample)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(sample, t, sample)


def tiny_unet_kwargs(**overrides) -> dict:
    """A UNet2DModel configuration small enough for CPU tests (8×8 images, two levels)."""
    kwargs = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    kwargs.update(overrides)
    return kwargs


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Gives every parameter random values (freshly initialised diffusers UNets have zero output layers, which would
    hide most of the network from the tests)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module


def tiny_vae(latent_channels: int = 4, seed: int = 0):
    """A tiny random diffusers `AutoencoderKL` (built as diffusers' own tests build theirs: two blocks, one 2×
    downsampling) with EDM2's latent statistics in its config: 16×16 pixels ↔ 8×8 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=latent_channels, norm_num_groups=4, sample_size=16)
    vae.register_to_config(latents_mean=[5.81, 3.25, 0.12, -2.15][:latent_channels],
                           latents_std=[4.17, 4.62, 3.71, 3.28][:latent_channels], scaling_factor=0.5)
    return vae.eval()


def reference_edm2_generator(net, seeds: list[int], num_steps: int = 32, guidance: float = 1.0, gnet=None,
                             s_churn: float = 0.0, s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0,
                             vae=None):
    """EDM2's generate_images.py flow written out directly: one CPU generator per seed (seed mod 2³²) draws the noise,
    then the class index, then the churn noise; Heun's method with a float32 state and σ grid (ρ = 7 on
    [0.002, 80]); guided D = D_guide.lerp(D, w), the guide not evaluated at w = 1 (`gnet=None`: classifier-free
    guidance by the net itself, unconditional). With a `vae` (EDM2 statistics in its config) the latents are decoded to
    uint8 pixels: (x − bias)/scale through the decoder, clamped to [0, 1], × 255 truncated.
    Returns (latents or pixels, noise, labels)."""
    config = net.config
    generators = [torch.Generator().manual_seed(seed % 2**32) for seed in seeds]
    shape = (config.in_channels, config.sample_size, config.sample_size)
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    labels = None
    if config.num_class_labels:
        index = torch.stack([torch.randint(config.num_class_labels, (1,), generator=g)[0] for g in generators])
        labels = torch.eye(config.num_class_labels)[index]

    def denoise(x, t):
        d = net(x, t, class_labels=labels).sample.to(torch.float32)
        if guidance == 1:
            return d
        reference = (gnet(x, t, class_labels=labels if gnet.config.num_class_labels else None) if gnet is not None
                     else net(x, t, class_labels=torch.zeros_like(labels))).sample.to(torch.float32)
        return reference.lerp(d, guidance)

    steps = torch.arange(num_steps, dtype=torch.float32)
    rho = 7.0
    t_steps = (80.0 ** (1 / rho) + steps / (num_steps - 1) * (0.002 ** (1 / rho) - 80.0 ** (1 / rho))) ** rho
    t_steps = torch.cat([t_steps, torch.zeros_like(t_steps[:1])])
    x_next = noise * t_steps[0]
    with torch.no_grad():
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            x_cur = x_next
            if s_churn > 0 and s_min <= t_cur <= s_max:
                gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
                t_hat = t_cur + gamma * t_cur
                eps = torch.stack([torch.randn(shape, generator=g) for g in generators])
                x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * s_noise * eps
            else:
                t_hat, x_hat = t_cur, x_cur
            d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
            x_next = x_hat + (t_next - t_hat) * d_cur
            if i < num_steps - 1:
                d_prime = (x_next - denoise(x_next, t_next)) / t_next
                x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        if vae is None:
            return x_next, noise, labels
        scale = 0.5 / torch.tensor(vae.config.latents_std, dtype=torch.float32).reshape(1, -1, 1, 1)
        bias = -torch.tensor(vae.config.latents_mean, dtype=torch.float32).reshape(1, -1, 1, 1) * scale
        pixels = vae.decode((x_next - bias) / scale).sample.clamp(0, 1)
        return (pixels * 255).to(torch.uint8), noise, labels


TINY_TEXT_WORDS = ("a", "thick", "thin", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven",
                   "eight", "nine", "left", "right", "red", "blue", "square", "circle")


def save_tiny_text_encoder(folder, words=TINY_TEXT_WORDS, hidden_size: int = 16, max_length: int = 8,
                           seed: int = 0, bag_of_words: bool = False):
    """A tiny random `CLIPTextModel` and a `CLIPTokenizer` over a small local vocabulary, saved as `text_encoder/`
    and `tokenizer/` under `folder` (see `save_word_level_clip`). Returns (text_encoder, tokenizer)."""
    from diffusers_edm.data.word_level_clip import save_word_level_clip

    return save_word_level_clip(folder, words, hidden_size, max_length, seed, bag_of_words)
