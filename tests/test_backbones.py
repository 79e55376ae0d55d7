# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Tests of EDM's raw networks F: `SongUNet2DModel` (DDPM++/NCSN++) and `DhariwalUNet2DModel` (ADM).

Reference data (all produced by the official NVlabs/edm code, see /work/shared/conformance/README.md):

* `tests/data/backbone_<name>.safetensors`: keys `call0.x`, `call0.sigma`, `call0.class_labels`,
  `call0.augment_labels`, `call0.F_fp32`, `call0.F_fp64`, `call1.sigma`, `call1.F_fp32`, copied unchanged from
  `07_net_<name>.safetensors` (`F_*` is the raw inner-network output captured by a hook).
* `tests/data/backbone_conformance_nets.json`: precond class, resolved model kwargs, parameter count, attention heads
  and recommended tolerances of every `07_net_<name>.json`.
* `tests/data/backbone_fullsize_configs.json`: parameter counts of the full-size train.py configs and the complete
  state_dict layouts of cifar10_cond_ddpmpp and imagenet64_cond_adm, from `08_fullsize_configs.json`.
* The random official weights `07_net_<name>.weights.safetensors` (~0.2-3 MB each) are read from
  `../shared/conformance` next to the repository.

The network inputs c_in(σ)·x and c_noise(σ) are computed here from the published formulas (EDM paper, Table 1),
with σ cast to float32 first as the official preconditioning does.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm.models.dhariwal_unet import DhariwalUNet2DModel
from diffusers_edm.models.edm_layers import EDMConv2d, EDMGroupNorm, PositionalEmbedding, UNetBlock
from diffusers_edm.models.song_unet import SongUNet2DModel

from .helpers import DATA_DIR, shared_conformance_file

NETS = json.loads((DATA_DIR / "backbone_conformance_nets.json").read_text())["nets"]
FULLSIZE = json.loads((DATA_DIR / "backbone_fullsize_configs.json").read_text())
MODEL_CLASSES = {"SongUNet": SongUNet2DModel, "DhariwalUNet": DhariwalUNet2DModel}


@lru_cache(maxsize=None)
def official_weights(name: str) -> dict[str, torch.Tensor]:
    return load_file(shared_conformance_file(NETS[name]["weights_file"]))


def build_official_net(name: str) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """The backbone of conformance net `name` with the official weights, and the iDDPM `u` table (or None)."""
    state_dict = dict(official_weights(name))
    u_table = state_dict.pop("u", None)  # iDDPMPrecond's buffer, not part of the inner model
    model = MODEL_CLASSES[NETS[name]["model_class"]](**NETS[name]["resolved_model_kwargs"]).eval()
    model.load_state_dict({key.removeprefix("model."): value for key, value in state_dict.items()}, strict=True)
    return model, u_table


def inner_inputs(
    precond: str, sigma: torch.Tensor, x: torch.Tensor, u_table: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """c_in(σ)·x and the flattened c_noise(σ) of EDM Table 1, in `dtype`, from σ rounded to float32.

    VP: c_noise = (M−1)·σ⁻¹(σ) with σ⁻¹(σ) = (√(β_min² + 2β_d ln(σ²+1)) − β_min)/β_d, β_d = 19.9, β_min = 0.1,
    M = 1000. iDDPM: c_noise = M − 1 − argmin_j |σ − u_j|.
    """
    sigma = sigma.to(torch.float32).to(dtype).reshape(-1, 1, 1, 1)
    if precond == "EDMPrecond":
        c_in, c_noise = 1 / (0.5**2 + sigma**2).sqrt(), sigma.log() / 4
    elif precond == "VEPrecond":
        c_in, c_noise = torch.ones_like(sigma), (0.5 * sigma).log()
    elif precond == "VPPrecond":
        beta_d, beta_min = 19.9, 0.1
        t = ((beta_min**2 + 2 * beta_d * (1 + sigma**2).log()).sqrt() - beta_min) / beta_d
        c_in, c_noise = 1 / (sigma**2 + 1).sqrt(), (1000 - 1) * t
    elif precond == "iDDPMPrecond":
        index = (sigma.reshape(-1, 1) - u_table.to(dtype).reshape(1, -1)).abs().argmin(dim=1)
        c_in, c_noise = 1 / (sigma**2 + 1).sqrt(), (1000 - 1 - index).to(dtype)
    else:
        raise AssertionError(f"unknown precond {precond}")
    return c_in * x.to(dtype), c_noise.flatten()


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------------
# Official numbers (07_net_*)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETS))
def test_structure_matches_official(name: str) -> None:
    """Parameter count and attention heads per block equal the official construction (no weights needed)."""
    net = NETS[name]
    model = MODEL_CLASSES[net["model_class"]](**net["resolved_model_kwargs"])
    assert sum(p.numel() for p in model.parameters()) == net["param_count"]
    heads = {
        f"{part}.{key}": block.num_heads
        for part, blocks in (("enc", model.enc), ("dec", model.dec))
        for key, block in blocks.items()
        if isinstance(block, UNetBlock)
    }
    assert heads == net["attention_heads"]


@pytest.mark.parametrize("name", sorted(NETS))
def test_official_outputs_float64(name: str) -> None:
    """F of call0 in float64 equals the official float64 run within 1e-9·max(1, max|ref|)."""
    net = NETS[name]
    model, u_table = build_official_net(name)
    model = model.double()
    data = load_file(DATA_DIR / f"backbone_{name}.safetensors")
    x_in, c_noise = inner_inputs(net["precond_class"], data["call0.sigma"], data["call0.x"], u_table, torch.float64)
    class_labels = data["call0.class_labels"].double() if "call0.class_labels" in data else None
    augment_labels = data["call0.augment_labels"].double() if "call0.augment_labels" in data else None
    with torch.no_grad():
        output = model(x_in, c_noise, class_labels=class_labels, augment_labels=augment_labels)
    reference = data["call0.F_fp64"]
    assert output.dtype == torch.float64 and output.shape == reference.shape
    # The json's fp64_atol is sized for D (which reaches ~100 for VP/VE/iDDPM); F gets the same rule with its own max.
    assert max_abs_diff(output, reference) <= 1e-9 * max(1.0, reference.abs().max().item())


@pytest.mark.parametrize("name", sorted(NETS))
def test_official_outputs_float32(name: str) -> None:
    """F in float32 equals the official float32 run within the recommended tolerance, for call0 (per-sample σ,
    one-hot labels, augment labels) and call1 (scalar σ, all-zero label row for conditional nets, no augment)."""
    net = NETS[name]
    model, u_table = build_official_net(name)
    data = load_file(DATA_DIR / f"backbone_{name}.safetensors")
    label_dim = net["resolved_model_kwargs"]["label_dim"]
    x_in, c_noise = inner_inputs(net["precond_class"], data["call0.sigma"], data["call0.x"], u_table, torch.float32)
    with torch.no_grad():
        output = model(x_in, c_noise, data.get("call0.class_labels"), data.get("call0.augment_labels"))
    assert output.dtype == torch.float32
    assert max_abs_diff(output, data["call0.F_fp32"]) <= net["fp32_F_atol"]

    x_in, c_noise = inner_inputs(net["precond_class"], data["call1.sigma"], data["call0.x"], u_table, torch.float32)
    assert c_noise.shape == (1,)  # a 0-dim σ gives one noise label, broadcast over the batch
    class_labels = torch.zeros(1, label_dim) if label_dim else None
    with torch.no_grad():
        output = model(x_in, c_noise, class_labels)
    assert max_abs_diff(output, data["call1.F_fp32"]) <= net["fp32_F_atol"]


# ---------------------------------------------------------------------------------------------------------------------
# Full-size configurations (08_fullsize_configs)
# ---------------------------------------------------------------------------------------------------------------------


def train_py_model_kwargs(arch: str, resolution: int, label_dim: int, augment: bool, cres: list[int] | None) -> dict:
    """Model kwargs that the official train.py derives from --arch/--cres/--augment (spec section 3.4)."""
    if arch == "adm":
        kwargs = dict(model_channels=192, channel_mult=[1, 2, 3, 4])
    else:
        kwargs = dict(model_channels=128, channel_mult=[2, 2, 2])
        if arch == "ddpmpp":
            kwargs.update(embedding_type="positional", encoder_type="standard", channel_mult_noise=1)
            kwargs.update(resample_filter=[1, 1])
        else:
            kwargs.update(embedding_type="fourier", encoder_type="residual", channel_mult_noise=2)
            kwargs.update(resample_filter=[1, 3, 3, 1])
        kwargs.update(decoder_type="standard")
    if cres is not None:
        kwargs["channel_mult"] = cres
    if augment:
        kwargs["augment_dim"] = 9
    return dict(img_resolution=resolution, in_channels=3, out_channels=3, label_dim=label_dim, **kwargs)


FULLSIZE_KWARGS = {
    "cifar10_cond_ddpmpp": ("SongUNet", train_py_model_kwargs("ddpmpp", 32, 10, True, None)),
    "cifar10_uncond_ddpmpp": ("SongUNet", train_py_model_kwargs("ddpmpp", 32, 0, True, None)),
    "cifar10_cond_ncsnpp": ("SongUNet", train_py_model_kwargs("ncsnpp", 32, 10, True, None)),
    "cifar10_uncond_ncsnpp": ("SongUNet", train_py_model_kwargs("ncsnpp", 32, 0, True, None)),
    "ffhq64_uncond_ddpmpp": ("SongUNet", train_py_model_kwargs("ddpmpp", 64, 0, True, [1, 2, 2, 2])),
    "ffhq64_uncond_ncsnpp": ("SongUNet", train_py_model_kwargs("ncsnpp", 64, 0, True, [1, 2, 2, 2])),
    "imagenet64_cond_adm": ("DhariwalUNet", train_py_model_kwargs("adm", 64, 1000, False, None)),
    "cifar10_uncond_vp_precond_ddpmpp": ("SongUNet", train_py_model_kwargs("ddpmpp", 32, 0, True, None)),
}


def test_fullsize_kwargs_cover_reference_configs() -> None:
    """The kwargs table below is train.py's derivation: it reproduces the two configs whose kwargs the json lists."""
    assert sorted(FULLSIZE_KWARGS) == sorted(entry["name"] for entry in FULLSIZE["param_counts"])
    for config in FULLSIZE["configs"]:
        model_class, kwargs = FULLSIZE_KWARGS[config["name"]]
        assert model_class == config["constructor_kwargs"]["model_type"]
        resolved = config["resolved_model_kwargs"]
        assert {key: resolved[key] for key in kwargs} == kwargs


@pytest.mark.parametrize("entry", FULLSIZE["param_counts"], ids=lambda entry: entry["name"])
def test_fullsize_param_counts(entry: dict) -> None:
    model_class, kwargs = FULLSIZE_KWARGS[entry["name"]]
    with torch.device("meta"):
        model = MODEL_CLASSES[model_class](**kwargs)
    assert sum(p.numel() for p in model.parameters()) == entry["param_count"]


@pytest.mark.parametrize("config", FULLSIZE["configs"], ids=lambda config: config["name"])
def test_fullsize_state_dict_layout(config: dict) -> None:
    """Keys (in order), shapes and dtypes of the state_dict equal the official one without the `model.` prefix."""
    model_class = MODEL_CLASSES[config["constructor_kwargs"]["model_type"]]
    with torch.device("meta"):
        model = model_class(**config["resolved_model_kwargs"])
    layout = [
        [key, list(value.shape), str(value.dtype).removeprefix("torch.")] for key, value in model.state_dict().items()
    ]
    expected = [[key.removeprefix("model."), shape, dtype] for key, shape, dtype in config["state_dict"]]
    assert layout == expected
    assert sum(p.numel() for p in model.parameters()) == config["param_count"]


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


def test_positional_embedding_endpoint_vector() -> None:
    """Verified vector of spec section 3.1: C = 8, endpoint=True, x = 1 → [cos(ω), sin(ω)], ω = 10000^(−k/3)."""
    output = PositionalEmbedding(8, endpoint=True)(torch.tensor([1.0], dtype=torch.float64))[0]
    expected = [0.5403023, 0.9989229, 0.9999977, 1.0, 0.8414710, 0.0463992, 0.0021544, 0.0001]
    assert output.tolist() == pytest.approx(expected, abs=1e-7)
    no_endpoint = PositionalEmbedding(8)(torch.tensor([2.0], dtype=torch.float64))[0]
    frequencies = [10000 ** (-k / 4) for k in range(4)]
    assert no_endpoint.tolist() == pytest.approx(
        [math.cos(2 * f) for f in frequencies] + [math.sin(2 * f) for f in frequencies], abs=1e-15
    )


def test_box_filter_resampling_is_nearest_and_average() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    up = EDMConv2d(3, 3, kernel=0, up=True)(x)
    assert torch.equal(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    down = EDMConv2d(3, 3, kernel=0, down=True)(x)
    expected = (x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]) / 4
    torch.testing.assert_close(down, expected, rtol=0, atol=1e-15)


def test_binomial_filter_resampling() -> None:
    """[1, 3, 3, 1]: f2 = f fᵀ/64; interior of a downsampled constant stays constant; upsampling of a delta spreads
    4·f2 (the filter scaled to preserve the mean)."""
    down = EDMConv2d(1, 1, kernel=0, down=True, resample_filter=[1, 3, 3, 1])
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.equal(down.resample_filter, (torch.outer(taps, taps) / 64).reshape(1, 1, 4, 4))
    constant = down(torch.full((1, 1, 8, 8), 2.0))
    assert constant.shape == (1, 1, 4, 4)
    torch.testing.assert_close(constant[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 2.0))
    delta = torch.zeros(1, 1, 4, 4)
    delta[0, 0, 1, 1] = 1.0
    up = EDMConv2d(1, 1, kernel=0, up=True, resample_filter=[1, 3, 3, 1])(delta)
    assert up.shape == (1, 1, 8, 8)
    assert up.sum().item() == pytest.approx(4.0)
    torch.testing.assert_close(up[0, 0, 1:5, 1:5], torch.outer(taps, taps) / 16)


def test_fused_down_conv_equals_conv_then_filter() -> None:
    """Fused down (NCSN++ aux_residual) = k×k conv with extra padding (L−1)//2, then the stride-2 filter, then bias."""
    torch.manual_seed(0)
    layer = EDMConv2d(2, 5, kernel=3, down=True, resample_filter=[1, 3, 3, 1], fused_resample=True)
    layer.bias.data.normal_()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    output = layer.double()(x)
    conv = torch.nn.functional.conv2d(x, layer.weight, padding=2)
    filtered = torch.nn.functional.conv2d(conv, layer.resample_filter.expand(5, 1, 4, 4), stride=2, groups=5)
    torch.testing.assert_close(output, filtered + layer.bias.reshape(1, -1, 1, 1), rtol=0, atol=1e-13)
    assert output.shape == (1, 5, 4, 4)


@pytest.mark.parametrize(("channels", "groups"), [(8, 2), (64, 16), (128, 32), (768, 32)])
def test_group_norm_group_count(channels: int, groups: int) -> None:
    assert EDMGroupNorm(channels).num_groups == groups


def test_resample_filter_buffer_only_on_resampling_layers() -> None:
    assert "resample_filter" not in EDMConv2d(3, 4, kernel=3).state_dict()
    assert EDMConv2d(3, 4, kernel=3, down=True).state_dict()["resample_filter"].shape == (1, 1, 2, 2)
    assert list(EDMConv2d(3, 3, kernel=0, up=True).state_dict()) == ["resample_filter"]


# ---------------------------------------------------------------------------------------------------------------------
# Model behaviour
# ---------------------------------------------------------------------------------------------------------------------


def tiny_song(**overrides) -> SongUNet2DModel:
    kwargs = dict(
        img_resolution=8,
        in_channels=3,
        out_channels=3,
        label_dim=4,
        augment_dim=2,
        model_channels=8,
        channel_mult=[1, 2],
        num_blocks=1,
        attn_resolutions=[4],
        dropout=0.0,
        embedding_type="fourier",
        channel_mult_noise=2,
        encoder_type="residual",
        resample_filter=[1, 3, 3, 1],
    )
    kwargs.update(overrides)
    return SongUNet2DModel(**kwargs)


def tiny_adm(**overrides) -> DhariwalUNet2DModel:
    kwargs = dict(
        img_resolution=8,
        in_channels=3,
        out_channels=6,
        label_dim=4,
        augment_dim=2,
        model_channels=64,
        channel_mult=[1, 2],
        num_blocks=1,
        attn_resolutions=[4],
        dropout=0.0,
    )
    kwargs.update(overrides)
    return DhariwalUNet2DModel(**kwargs)


def tiny_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return dict(
        x=torch.randn(batch, 3, 8, 8, generator=generator),
        noise_labels=torch.randn(batch, generator=generator),
        class_labels=torch.eye(4)[:batch],
        augment_labels=torch.randn(batch, 2, generator=generator),
    )


def randomize_parameters(model: torch.nn.Module) -> None:
    """Replace the (partly zero) initial parameters by random values so that every path affects the output."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_save_load_round_trip_is_bit_exact(factory, tmp_path) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    randomize_parameters(model)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    public_config = {key: value for key, value in model.config.items() if not key.startswith("_")}
    assert {key: value for key, value in loaded.config.items() if not key.startswith("_")} == public_config
    assert isinstance(loaded.config["channel_mult"], list)
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(original_state)
    assert all(torch.equal(loaded_state[key], original_state[key]) for key in original_state)
    inputs = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))


def test_song_variants_build_and_run() -> None:
    """DDPM++ (positional, standard) and the 'skip' encoder/decoder variant produce finite outputs of the right
    shape; the NCSN++-style tiny model is exercised by the other tests."""
    inputs = tiny_inputs()
    for overrides in (
        dict(embedding_type="positional", channel_mult_noise=1, encoder_type="standard", resample_filter=[1, 1]),
        dict(encoder_type="skip", decoder_type="skip"),
    ):
        model = tiny_song(**overrides).eval()
        with torch.no_grad():
            output = model(**inputs)
        assert output.shape == (2, 3, 8, 8) and torch.isfinite(output).all()


def test_fresh_initialisation() -> None:
    """ADM zero-initialises out_conv (so F ≡ 0 at init); Song's 'zero' layers are xavier_uniform × 1e-5 (tiny, not
    zero) and its other layers xavier_uniform within ±√(6/(fan_in+fan_out))."""
    torch.manual_seed(0)
    inputs = tiny_inputs()
    adm = tiny_adm().eval()
    with torch.no_grad():
        assert torch.equal(adm(**inputs), torch.zeros(2, 6, 8, 8))
    assert torch.equal(adm.map_augment.weight, torch.zeros_like(adm.map_augment.weight))
    assert adm.map_label.weight.std().item() == pytest.approx(1.0, rel=0.2)  # kaiming_normal × √label_dim = N(0, 1)

    song = tiny_song().eval()
    with torch.no_grad():
        output = song(**inputs)
    assert 0 < output.abs().max().item() < 1e-3
    weight = song.enc["8x8_block0"].conv0.weight  # 8 → 8 channels, 3×3
    bound = math.sqrt(6 / (8 * 9 + 8 * 9))
    assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.8 * bound
    conv1 = song.enc["8x8_block0"].conv1.weight
    assert 0 < conv1.abs().max().item() <= 1e-5 * bound
    assert torch.equal(song.enc["8x8_block0"].conv0.bias, torch.zeros(8))


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_label_dropout_only_in_training(factory) -> None:
    """With label_dropout = 1 every label is dropped in training (= all-zero labels) and none in eval."""
    torch.manual_seed(0)
    model = factory(label_dropout=1.0)
    randomize_parameters(model)
    inputs = tiny_inputs()
    with torch.no_grad():
        eval_output = model.eval()(**inputs)
        train_output = model.train()(**inputs)
        zero_labels = model.eval()(**{**inputs, "class_labels": torch.zeros(2, 4)})
    assert torch.equal(train_output, zero_labels)
    assert not torch.allclose(eval_output, zero_labels)


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_broadcast_rows_and_missing_augment_labels(factory) -> None:
    """A single noise-label/class-label row broadcasts over the batch; augment_labels=None equals all-zero labels."""
    torch.manual_seed(0)
    model = factory().eval()
    randomize_parameters(model)
    inputs = tiny_inputs()
    with torch.no_grad():
        broadcast = model(inputs["x"], inputs["noise_labels"][:1], inputs["class_labels"][:1])
        repeated = model(inputs["x"], inputs["noise_labels"][:1].repeat(2), inputs["class_labels"][:1].repeat(2, 1))
        no_augment = model(inputs["x"], inputs["noise_labels"], inputs["class_labels"])
        zero_augment = model(inputs["x"], inputs["noise_labels"], inputs["class_labels"], torch.zeros(2, 2))
        augmented = model(**inputs)
    # Equal up to float32 rounding (a batch-1 and a batch-2 matrix product may round differently).
    assert max_abs_diff(broadcast, repeated) <= 1e-5 * repeated.abs().max().item()
    assert torch.equal(no_augment, zero_augment)
    assert not torch.allclose(augmented, no_augment)


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_low_precision_activations_keep_float32_weights(factory) -> None:
    """bfloat16 activations with float32 weights (EDM's use_fp16 pattern): output in the input's dtype and close to
    the float32 result; the weights are not modified."""
    torch.manual_seed(0)
    model = factory().eval()
    randomize_parameters(model)
    inputs = tiny_inputs()
    with torch.no_grad():
        reference = model(**inputs)
        output = model(**{**inputs, "x": inputs["x"].bfloat16()})
    assert output.dtype == torch.bfloat16
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert max_abs_diff(output, reference) <= 0.05 * reference.abs().max().item()


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_compiles_without_graph_breaks(factory) -> None:
    """No data-dependent Python control flow in forward: torch.compile(fullgraph=True) traces it in one graph."""
    torch.manual_seed(0)
    model = factory(encoder_type="skip", decoder_type="skip") if factory is tiny_song else factory()
    model.eval()
    randomize_parameters(model)
    inputs = tiny_inputs()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(compiled(**inputs), model(**inputs))


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_gradients_reach_all_parameters(factory) -> None:
    torch.manual_seed(0)
    model = factory().train()
    randomize_parameters(model)
    model(**tiny_inputs()).square().mean().backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.parameters())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(x=torch.zeros(2, 4, 8, 8)), "expects x of shape"),
        (dict(x=torch.zeros(2, 3, 16, 16)), "expects x of shape"),
        (dict(x=torch.zeros(3, 8, 8)), "expects x of shape"),
        (dict(noise_labels=torch.zeros(2, 1)), "noise_labels"),
        (dict(noise_labels=torch.zeros(3)), "noise_labels"),
        (dict(class_labels=None), "is class-conditional"),
        (dict(class_labels=torch.zeros(2, 5)), "class_labels of shape"),
        (dict(class_labels=torch.zeros(3, 4)), "class_labels of shape"),
        (dict(class_labels=torch.zeros(2)), "class_labels of shape"),
        (dict(class_labels=torch.eye(4, dtype=torch.long)[:2]), "floating-point class_labels"),
        (dict(noise_labels=torch.zeros(2, dtype=torch.long)), "floating-point noise_labels"),
        (dict(augment_labels=torch.zeros(2, 9)), "augment_labels of shape"),
        (dict(augment_labels=torch.zeros(2, 2, dtype=torch.int32)), "floating-point augment_labels"),
    ],
)
@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_bad_inputs_raise(factory, change: dict, message: str) -> None:
    model = factory().eval()
    with pytest.raises(ValueError, match=message):
        model(**{**tiny_inputs(), **change})


@pytest.mark.parametrize("factory", [tiny_song, tiny_adm], ids=["song", "adm"])
def test_unconditional_model_rejects_labels(factory) -> None:
    model = factory(label_dim=0, augment_dim=0).eval()
    inputs = tiny_inputs()
    with pytest.raises(ValueError, match="unconditional"):
        model(inputs["x"], inputs["noise_labels"], inputs["class_labels"])
    with pytest.raises(ValueError, match="augment_dim=0"):
        model(inputs["x"], inputs["noise_labels"], augment_labels=inputs["augment_labels"])


@pytest.mark.parametrize(
    ("factory", "overrides", "message"),
    [
        (tiny_song, dict(img_resolution=7), "divisible by 2"),
        (tiny_song, dict(embedding_type="sinusoidal"), "embedding_type"),
        (tiny_song, dict(encoder_type="progressive"), "encoder_type"),
        (tiny_song, dict(decoder_type="residual"), "decoder_type"),
        (tiny_adm, dict(channel_mult=[]), "at least one level"),
        (tiny_adm, dict(num_blocks=-1), "must be >= 0"),
    ],
)
def test_bad_configs_raise(factory, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory(**overrides)
