"""EDM2 sampling: the guided float32 sampler of the official generator (`13_edm2_sampler`), the latent path through a
VAE (`14_edm2_vae`), and `EDMPipeline` with `vae` and `guide_unet` against the generator's flow written out in the
tests (`reference_edm2_generator`)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from diffusers_edm import EDMHeunScheduler, EDMPipeline
from diffusers_edm.pipelines.latents import (
    decode_latents,
    encode_raw_latents,
    latent_scale_and_bias,
    quantize_vae_pixels,
    sample_latents,
)
from tests.helpers import edm2_case, edm2_conformance_file, reference_edm2_generator, tiny_vae
from tests.test_edm2_network import conformance_model, edm2_model, native_keys

CASES = edm2_case("13_edm2_sampler")["cases"]
SEEDS = edm2_case("13_edm2_sampler")["seeds"]


def guide_model():
    model = edm2_model(edm2_case("13_edm2_sampler")["guide_config"])
    weights = load_file(edm2_conformance_file("13_edm2_sampler.guide_weights.safetensors"))
    model.load_state_dict(native_keys(weights), strict=True)
    return model.eval()


def edm2_scheduler(**churn) -> EDMHeunScheduler:
    return EDMHeunScheduler(reference_sampler="edm2", **churn)


@pytest.fixture(scope="module")
def nets():
    return conformance_model("10_edm2_net_latent_cond"), guide_model()


def churn_settings(kwargs: dict) -> dict:
    return dict(s_churn=kwargs.get("S_churn", 0.0), s_tmin=kwargs.get("S_min", 0.0),
                s_tmax=kwargs.get("S_max", float("inf")), s_noise=kwargs.get("S_noise", 1.0))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["id"])
def test_guided_sampler_matches_official_generator(nets, case: dict) -> None:
    """pipe(seeds=...) gives the official generator's latents: float32 state, D_guide.lerp(D, w), churn noise from
    the per-seed generators (one seed ≥ 2³²)."""
    net, guide = nets
    data = load_file(edm2_conformance_file("13_edm2_sampler.safetensors"))
    kwargs = case["sampler_kwargs"]
    pipe = EDMPipeline(unet=net, scheduler=edm2_scheduler(**churn_settings(kwargs)), guide_unet=guide)
    pipe.set_progress_bar_config(disable=True)
    latents = pipe(seeds=SEEDS, num_inference_steps=kwargs["num_steps"], guidance_scale=kwargs["guidance"],
                   output_type="latent").images
    reference = data[f"{case['id']}_latents"]
    assert latents.dtype == torch.float32
    assert (latents - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()


def test_noise_and_labels_are_the_official_draws(nets) -> None:
    """Per-seed generators draw the noise, then the class index, exactly as the generator (and the test's reference
    flow) does."""
    net, guide = nets
    data = load_file(edm2_conformance_file("13_edm2_sampler.safetensors"))
    pipe = EDMPipeline(unet=net, scheduler=edm2_scheduler())
    pipe.scheduler.set_timesteps(8)
    generators = [torch.Generator().manual_seed(seed % 2**32) for seed in SEEDS]
    initial = pipe.prepare_latents(3, generators, None, torch.float32, torch.device("cpu"))
    labels = pipe.prepare_class_labels(None, 3, generators, torch.device("cpu"))
    assert torch.equal(initial, data["case0_noise"] * pipe.scheduler.init_noise_sigma)
    assert torch.equal(torch.nn.functional.one_hot(labels, 10).float(), data["case0_labels"])
    _, reference_noise, reference_labels = reference_edm2_generator(net, SEEDS, num_steps=2)
    assert torch.equal(reference_noise, data["case0_noise"]) and torch.equal(reference_labels, data["case0_labels"])


def test_state_precision_is_part_of_the_scheduler_config(tmp_path) -> None:
    scheduler = edm2_scheduler()
    scheduler.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["reference_sampler"] == "edm2"
    assert EDMHeunScheduler.from_pretrained(tmp_path).config.reference_sampler == "edm2"
    assert EDMHeunScheduler().config.reference_sampler == "edm"  # EDM models keep float64
    with pytest.raises(ValueError, match="reference_sampler"):
        EDMHeunScheduler(reference_sampler="edm3")


@pytest.fixture(scope="module")
def official_vae():
    folder = edm2_conformance_file("14_edm2_vae_tiny")
    case = edm2_case("14_edm2_vae")
    vae = AutoencoderKL.from_pretrained(folder).eval()
    vae.register_to_config(latents_mean=case["raw_mean"], latents_std=case["raw_std"], scaling_factor=case["final_std"])
    return vae


def test_latent_transform_matches_official_encoder(official_vae) -> None:
    case, data = edm2_case("14_edm2_vae"), load_file(edm2_conformance_file("14_edm2_vae.safetensors"))
    scale, bias = latent_scale_and_bias(official_vae.config)
    assert torch.equal(scale.flatten(), torch.tensor(case["scale"]))
    assert torch.equal(bias.flatten(), torch.tensor(case["bias"]))
    raw = torch.cat([encode_raw_latents(official_vae, data["pixels"][i:i + 3]) for i in range(0, 4, 3)])
    assert torch.allclose(raw, data["raw_latents"], rtol=1e-5, atol=1e-5 * data["raw_latents"].abs().max().item())
    torch.manual_seed(case["encode_latents_torch_manual_seed"])
    final = sample_latents(data["raw_latents"], scale, bias)
    assert (final - data["final_latents"]).abs().max() <= 1e-5 * data["final_latents"].abs().max()


def test_decoding_matches_official_encoder(official_vae) -> None:
    """Pixels in [0, 1] at the VAE, clamped, × 255 truncated: exact on ≥ 99.9 % of values, never one level more off."""
    data = load_file(edm2_conformance_file("14_edm2_vae.safetensors"))
    pixels = quantize_vae_pixels(decode_latents(official_vae, data["final_latents"]))
    difference = (pixels.int() - data["decoded"].int()).abs()
    assert pixels.dtype == torch.uint8 and difference.max() <= 1 and (difference == 0).float().mean() >= 0.999


@pytest.fixture(scope="module")
def latent_pipe(nets):
    net, guide = nets
    pipe = EDMPipeline(unet=net, scheduler=edm2_scheduler(), guide_unet=guide, vae=tiny_vae(), guidance_scale=1.8)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_images_equal_the_generator_flow(latent_pipe) -> None:
    """Noise, labels, guided float32 Heun and the VAE decode, bit for bit on the CPU against the flow written out."""
    net, guide, vae = latent_pipe.unet, latent_pipe.guide_unet, latent_pipe.vae
    images = latent_pipe(seeds=SEEDS, num_inference_steps=6, output_type="pil").images
    reference, _, _ = reference_edm2_generator(net, SEEDS, num_steps=6, guidance=1.8, gnet=guide, vae=vae)
    assert all(image.size == (16, 16) for image in images)
    assert np.array_equal(np.stack([np.asarray(image) for image in images]), reference.permute(0, 2, 3, 1).numpy())
    floats = latent_pipe(seeds=SEEDS, num_inference_steps=6, output_type="pt").images
    assert floats.shape == (3, 3, 16, 16) and torch.equal((floats * 255).to(torch.uint8), reference)
    latents = latent_pipe(seeds=SEEDS, num_inference_steps=6, output_type="latent").images
    assert latents.shape == (3, 4, 8, 8)


def test_vae_slicing_and_tiling_keep_the_images(latent_pipe) -> None:
    expected = latent_pipe(seeds=SEEDS, num_inference_steps=2, output_type="pt").images
    latent_pipe.enable_vae_slicing()
    try:
        sliced = latent_pipe(seeds=SEEDS, num_inference_steps=2, output_type="pt").images
    finally:
        latent_pipe.disable_vae_slicing()
    assert torch.allclose(sliced, expected, atol=1e-5)


def test_save_load_round_trip_with_vae_and_guide(latent_pipe, tmp_path) -> None:
    latent_pipe.save_pretrained(tmp_path)
    vae_config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert vae_config["latents_mean"] == [5.81, 3.25, 0.12, -2.15] and vae_config["scaling_factor"] == 0.5
    assert json.loads((tmp_path / "model_index.json").read_text())["guide_unet"][1] == "EDMPreconditionedUNet2DModel"
    loaded = EDMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.guidance_scale == 1.8 and isinstance(loaded.vae, AutoencoderKL)
    expected = latent_pipe(seeds=SEEDS[:2], num_inference_steps=3, output_type="np").images
    assert np.array_equal(loaded(seeds=SEEDS[:2], num_inference_steps=3, output_type="np").images, expected)


def test_pipeline_without_optional_components_loads(nets, tmp_path) -> None:
    pipe = EDMPipeline(unet=nets[0], scheduler=edm2_scheduler())
    pipe.save_pretrained(tmp_path)
    loaded = EDMPipeline.from_pretrained(tmp_path)
    assert loaded.vae is None and loaded.guide_unet is None


def test_float16_vae_on_cpu_is_refused_with_a_fix(nets) -> None:
    pipe = EDMPipeline(unet=nets[0], scheduler=edm2_scheduler(), vae=tiny_vae().to(torch.float16))
    with pytest.raises(ValueError, match="float16.*CPU.*float32"):
        pipe(seeds=[0], num_inference_steps=2)
    latents = pipe(seeds=[0], num_inference_steps=2, output_type="latent").images  # no decoding: no VAE use
    assert latents.shape == (1, 4, 8, 8)


@pytest.mark.parametrize(("vae", "message"), [
    (lambda: tiny_vae(latent_channels=3), "3 channels but the unet denoises 4"),
    (lambda: torch.nn.Identity(), "AutoencoderKL"),
])
def test_mismatched_vaes_are_refused(nets, vae, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        EDMPipeline(unet=nets[0], scheduler=edm2_scheduler(), vae=vae())


def test_vae_without_latent_statistics_names_the_fix(nets) -> None:
    vae = tiny_vae()
    vae.register_to_config(latents_mean=None, latents_std=None)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="latents_mean and latents_std"):
        EDMPipeline(unet=nets[0], scheduler=edm2_scheduler(), vae=vae)
