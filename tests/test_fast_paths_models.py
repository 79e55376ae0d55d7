# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Fast paths of the models: SDPA attention against the official form, reduced-precision backbones with float32
preconditioning, torch.compile without graph breaks or recompilation (whole model and regional), and the CPU
resampling shortcuts (bit-identical to what they replace)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.models.edm_layers import EDMConv2d, FourierEmbedding, UNetBlock

from .helpers import DATA_DIR, randomize_, tiny_unet_kwargs
from .test_backbones import NETS, build_official_net, inner_inputs

ATTENTION_NETS = sorted(name for name, net in NETS.items() if any(net["attention_heads"].values()))


def tiny_model(backbone_type: str, **kwargs) -> EDMPreconditionedUNet2DModel:
    """A randomised 8×8 conditional model (3 classes, 9 augment labels) with attention, on each backbone."""
    conditioning = dict(num_class_labels=3, augment_dim=9, **kwargs)
    if backbone_type == "unet_2d":
        model = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(**conditioning))
    else:
        config = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
        if backbone_type == "ncsnpp":
            backbone_type = "song_unet"
            config.update(embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                          resample_filter=[1, 3, 3, 1])
        model = EDMPreconditionedUNet2DModel(sample_size=8, in_channels=1, out_channels=1, backbone_type=backbone_type,
                                             backbone_config=config, **conditioning)
    return randomize_(model, 0, 0.2).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Attention implementations
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTENTION_NETS)
def test_sdpa_attention_matches_the_official_form_on_the_conformance_networks(name):
    """float32 SDPA within 1e-5 relative (max |Δ| / max |F|) of the official form; "auto" on the CPU is the official
    form bit for bit; float64 SDPA agrees to 1e-12."""
    net = NETS[name]
    model, u_table = build_official_net(name)
    data = load_file(DATA_DIR / f"backbone_{name}.safetensors")
    outputs = {}
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        x, c_noise = inner_inputs(net["precond_class"], data["call0.sigma"], data["call0.x"], u_table, dtype)
        labels, augment = data.get("call0.class_labels"), data.get("call0.augment_labels")
        labels = None if labels is None else labels.to(dtype)
        augment = None if augment is None else augment.to(dtype)
        for implementation in ("auto", "official", "sdpa"):
            model.set_attention_implementation(implementation)
            assert model.attention_implementation == implementation
            with torch.no_grad():
                outputs[dtype, implementation] = model(x, c_noise, labels, augment)
    official = outputs[torch.float32, "official"]
    assert torch.equal(outputs[torch.float32, "auto"], official)
    assert torch.equal(outputs[torch.float64, "auto"], outputs[torch.float64, "official"])
    relative = (outputs[torch.float32, "sdpa"] - official).abs().max() / official.abs().max()
    assert relative <= 1e-5
    relative64 = (outputs[torch.float64, "sdpa"] - outputs[torch.float64, "official"]).abs().max()
    assert relative64 <= 1e-12 * outputs[torch.float64, "official"].abs().max()


def test_attention_implementation_is_a_runtime_setting_of_every_model():
    model = tiny_model("dhariwal_unet")
    assert model.attention_implementation == "auto"
    config_before, keys_before = dict(model.config), set(model.state_dict())
    model.set_attention_implementation("sdpa")
    blocks = [module for module in model.modules() if isinstance(module, UNetBlock)]
    assert blocks and all(block.attention_implementation == "sdpa" for block in blocks)
    assert model.backbone.attention_implementation == "sdpa"
    assert dict(model.config) == config_before and set(model.state_dict()) == keys_before
    with pytest.raises(ValueError, match="Unknown attention implementation"):
        model.set_attention_implementation("flash")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        sdpa = model(x, torch.tensor([0.5, 3.0]), class_labels=torch.tensor([0, 2])).sample
        model.set_attention_implementation("official")
        official = model(x, torch.tensor([0.5, 3.0]), class_labels=torch.tensor([0, 2])).sample
    torch.testing.assert_close(sdpa, official, rtol=0, atol=1e-5 * official.abs().max().item())

    unet_2d = tiny_model("unet_2d")  # diffusers' attention already runs through SDPA
    unet_2d.set_attention_implementation("auto")
    unet_2d.set_attention_implementation("sdpa")
    assert unet_2d.attention_implementation == "sdpa"
    with pytest.raises(ValueError, match="native backbones"):
        unet_2d.set_attention_implementation("official")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: 'auto' selects SDPA only on CUDA devices")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_auto_attention_on_cuda_uses_sdpa_in_reduced_precision(dtype):
    model = tiny_model("song_unet").cuda()
    x = torch.randn(2, 1, 8, 8, device="cuda")
    sigma = torch.tensor([0.5, 3.0], device="cuda")
    with torch.no_grad():
        reference = model(x, sigma).sample
        model.to(dtype)
        output = model(x, sigma).sample
        model.set_attention_implementation("official")
        official = model(x, sigma).sample
    assert output.dtype == torch.float32
    assert (output - reference).abs().max() <= 0.05 * reference.abs().max()
    assert (output - official).abs().max() <= 0.02 * reference.abs().max()


# ---------------------------------------------------------------------------------------------------------------------
# Reduced precision
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone_type", ["song_unet", "ncsnpp", "dhariwal_unet", "unet_2d"])
def test_bfloat16_sampling_is_close_to_float32(backbone_type):
    """EDMPipeline + EDMHeunScheduler (8 steps, 4 samples) with the model cast to bfloat16 (the preconditioning stays
    float32, D comes out float32, the sampler keeps its own precision) against float32. Measured: mean |Δ| 0.0007 to
    0.0011 and max |Δ| 0.003 to 0.004 (samples of std ~0.7, max ~2.4); asserted: mean |Δ| ≤ 0.005, max |Δ| ≤ 0.02."""
    model = tiny_model(backbone_type)
    images = {}
    for dtype in (torch.float32, torch.bfloat16):
        pipe = EDMPipeline(unet=copy.deepcopy(model).to(dtype), scheduler=EDMHeunScheduler())
        pipe.set_progress_bar_config(disable=True)
        images[dtype] = pipe(seeds=[0, 1, 2, 3], class_labels=[0, 1, 2, 0], num_inference_steps=8,
                             output_type="latent").images.double()
    difference = (images[torch.bfloat16] - images[torch.float32]).abs()
    assert difference.mean() <= 0.005 and difference.max() <= 0.02
    assert images[torch.float32].std() > 0.3  # a non-trivial sample


@pytest.mark.parametrize("backbone_type", ["ncsnpp", "dhariwal_unet", "unet_2d"])
def test_bfloat16_model_keeps_float32_preconditioning_with_labels_and_augment_labels(backbone_type):
    model = tiny_model(backbone_type).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model._compute_dtype() == torch.bfloat16
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for labels in (torch.tensor([0, 2]), F.one_hot(torch.tensor([1, 2]), 3).float(), None):
            output = model(x, torch.tensor([0.3, 20.0]), class_labels=labels, augment_labels=torch.randn(2, 9)).sample
            assert output.dtype == torch.float32 and torch.isfinite(output).all()
    assert model.to(torch.float64)(x, 1.0).sample.dtype == torch.float64


def test_fourier_frequencies_stay_float32_under_reduced_precision():
    """Rounding NCSN++'s random frequencies (|f| ~ 16) to bfloat16 would shift the embedding phases by radians; like
    the official use_fp16 networks they keep their float32 values (float64 casts still apply)."""
    embedding = FourierEmbedding(64)
    original = embedding.freqs.clone()
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.to(dtype=torch.float16)):
        cast(embedding)
        assert embedding.freqs.dtype == torch.float32 and torch.equal(embedding.freqs, original)
    assert embedding.double().freqs.dtype == torch.float64
    model = tiny_model("ncsnpp").to(torch.bfloat16)
    assert model.backbone.map_noise.freqs.dtype == torch.float32
    assert model.backbone.map_layer0.weight.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone_type", ["ncsnpp", "dhariwal_unet", "unet_2d"])
@pytest.mark.parametrize("label_kind", ["int", "one_hot", "none"])
def test_full_model_compile_has_one_graph_across_sigma_and_labels(backbone_type, label_kind):
    """fullgraph=True (no graph break) and a single graph across σ values and label/augment-label values of one form
    (σ as a tensor: a Python float σ is specialised by dynamo on its first value and costs one more graph)."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(backbone_type)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 1, 8, 8)

    def check(step: int, sigma: float) -> None:
        labels = {"int": torch.tensor([step % 3, 2]), "none": None,
                  "one_hot": F.one_hot(torch.tensor([step % 3, 1]), 3).float()}[label_kind]
        arguments = (x, torch.tensor(sigma, dtype=torch.float64))
        kwargs = dict(class_labels=labels, augment_labels=torch.randn(2, 9))
        assert torch.equal(compiled(*arguments, **kwargs).sample, model(*arguments, **kwargs).sample)

    with torch.no_grad():
        check(0, 80.0)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for step, sigma in enumerate((3.0, 0.5, 0.002), start=1):
                check(step, sigma)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("backbone_type", ["ncsnpp", "dhariwal_unet"])
def test_compiled_pipeline_of_a_conditional_model_with_augment_labels_never_recompiles(backbone_type):
    """A whole EDMPipeline call with churn (σ, steps, drawn labels) and a second call with other seeds and labels run
    on one compiled graph: zero recompilations."""
    torch._dynamo.reset()
    counters.clear()
    pipe = EDMPipeline(unet=tiny_model(backbone_type), scheduler=EDMHeunScheduler(s_churn=10))
    pipe.set_progress_bar_config(disable=True)
    eager = pipe(seeds=[1, 2], class_labels=[0, 2], num_inference_steps=3, output_type="latent").images
    pipe.unet = torch.compile(pipe.unet, fullgraph=True, backend="eager")
    compiled = pipe(seeds=[1, 2], class_labels=[0, 2], num_inference_steps=3, output_type="latent").images
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        pipe(seeds=[3, 4], class_labels=[1, 1], num_inference_steps=3, output_type="latent")
        pipe(seeds=[7, 8], num_inference_steps=4, output_type="latent")
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("backbone_type", ["song_unet", "dhariwal_unet", "unet_2d"])
def test_regional_compilation_of_the_repeated_blocks(backbone_type):
    """`compile_repeated_blocks()` (diffusers) finds the blocks through `_repeated_blocks`, compiles them with
    fullgraph=True despite their structural variants, matches eager, and a second call compiles nothing new."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(backbone_type)
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    with torch.no_grad():
        eager = model(x, torch.tensor([0.5, 3.0]), class_labels=labels).sample
        model.compile_repeated_blocks(fullgraph=True, backend="eager")
        assert torch.equal(model(x, torch.tensor([0.5, 3.0]), class_labels=labels).sample, eager)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 1
        with torch._dynamo.config.patch(error_on_recompile=True):
            model(x, torch.tensor([40.0, 0.01]), class_labels=torch.tensor([1, 1]), augment_labels=torch.randn(2, 9))
    assert counters["stats"]["unique_graphs"] == graphs
    if backbone_type != "unet_2d":
        model.backbone.compile_repeated_blocks(backend="eager")  # the bare backbones define it too


# ---------------------------------------------------------------------------------------------------------------------
# CPU shortcuts: bit-identical to what they replace
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_box_filter_resampling_is_bit_identical_to_pooling_and_interpolation(dtype):
    x = torch.randn(2, 8, 8, 8).to(dtype)
    up = EDMConv2d(8, 8, kernel=0, up=True)
    down = EDMConv2d(8, 8, kernel=0, down=True)
    with torch.no_grad():
        assert torch.equal(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))
        assert torch.equal(down(x), F.avg_pool2d(x, 2))
    # With autograd the official transposed convolution's gradient order is kept (F.interpolate's backward).
    leaf = x.detach().requires_grad_()
    gradient = torch.randn(2, 8, 16, 16).to(dtype)
    (ours,) = torch.autograd.grad(up(leaf), leaf, gradient)
    kernel = torch.ones(8, 1, 2, 2, dtype=dtype)
    (official,) = torch.autograd.grad(F.conv_transpose2d(leaf, kernel, groups=8, stride=2), leaf, gradient)
    assert torch.equal(ours, official)
