"""EDM2's magnitude-preserving U-Net as a backbone of `EDMPreconditionedUNet2DModel`, against the official network's
numbers (`10_edm2_net_*`: eval mode, labels=None, training mode with forced weight normalisation) and parameter counts
(`15_edm2_fullsize_configs.json`)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.models.edm2_layers import mp_cat, mp_silu, mp_sum, normalize
from tests.helpers import edm2_case, edm2_conformance_file

NETS = ("10_edm2_net_latent_cond", "10_edm2_net_pixel_uncond")
PRECOND_ARGUMENTS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_data")


def edm2_model(config: dict) -> EDMPreconditionedUNet2DModel:
    """The model for `Precond(**config)` of the official code."""
    backbone = {key: value for key, value in config.items() if key not in PRECOND_ARGUMENTS}
    return EDMPreconditionedUNet2DModel(
        sample_size=config["img_resolution"], in_channels=config["img_channels"], out_channels=config["img_channels"],
        num_class_labels=config["label_dim"], backbone_type="edm2_unet", backbone_config=backbone,
        sigma_data=config.get("sigma_data", 0.5))


def native_keys(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `Precond` keys (`unet.*`, `logvar_*`) as the model's (`backbone.*`)."""
    return {"backbone." + key.removeprefix("unet."): value for key, value in official.items()}


def conformance_model(name: str) -> EDMPreconditionedUNet2DModel:
    model = edm2_model(edm2_case(name)["config"])
    model.load_state_dict(native_keys(load_file(edm2_conformance_file(f"{name}.weights.safetensors"))), strict=True)
    return model.eval()


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return (output - reference).abs().max().item() / reference.abs().max().item()


def tolerance(name: str) -> float:
    return max(edm2_case(name).get("recommended_tolerance_rel", 0.0), 1e-5)


@pytest.mark.parametrize("name", NETS)
def test_eval_mode_matches_official_network(name: str) -> None:
    """D(x; σ) and the uncertainty u(σ) at σ from 0.002 to 80, one-hot and soft labels; labels=None on the
    conditional net uses a zero row, as the official Precond."""
    model = conformance_model(name)
    data = load_file(edm2_conformance_file(f"{name}.safetensors"))
    assert sum(p.numel() for p in model.parameters()) == edm2_case(name)["num_parameters"]
    with torch.no_grad():
        output = model(data["x"], data["sigma"], class_labels=data.get("labels"), return_logvar=True)
    assert relative_error(output.sample, data["D"]) <= tolerance(name)
    assert relative_error(output.logvar.flatten(), data["logvar"].flatten()) <= tolerance(name)
    assert output.sample.dtype == torch.float32 and output.logvar.shape == (5, 1, 1, 1)
    if "D_labels_none" in data:
        with torch.no_grad():
            unlabelled = model(data["x"], data["sigma"]).sample
        assert relative_error(unlabelled, data["D_labels_none"]) <= tolerance(name)


@pytest.mark.parametrize("name", NETS)
def test_training_mode_normalises_the_stored_weights(name: str) -> None:
    """In training mode every MPConv first overwrites its weight with normalize(weight) (forced weight normalisation),
    then computes with it: same output as the official call, same state_dict afterwards."""
    model = conformance_model(name).train()
    data = load_file(edm2_conformance_file(f"{name}.safetensors"))
    output = model(data["x"], data["sigma"], class_labels=data.get("labels")).sample
    assert relative_error(output, data["D_train_mode"]) <= tolerance(name)
    after = native_keys(load_file(edm2_conformance_file(f"{name}.weights_after_train_forward.safetensors")))
    state = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in after.items():
        assert torch.allclose(state[key], value, rtol=1e-6, atol=1e-7), key


def test_magnitude_preserving_operations_closed_forms() -> None:
    """normalize, mp_silu, mp_sum and mp_cat against their definitions (EDM2 Appendix B), written out here."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, 3, 3, generator=generator)
    norms = w.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    assert torch.allclose(normalize(w), w / (1e-4 + norms / 27**0.5), rtol=1e-6)
    x = torch.randn(4, 6, generator=generator)
    assert torch.allclose(mp_silu(x), torch.nn.functional.silu(x) / 0.596)
    a, b = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    assert torch.allclose(mp_sum(a, b, 0.3), (0.7 * a + 0.3 * b) / (0.7**2 + 0.3**2) ** 0.5)
    c = torch.randn(4, 2, generator=generator)
    scale = ((6 + 2) / (0.7**2 + 0.3**2)) ** 0.5
    expected = torch.cat([a * scale * 0.7 / 6**0.5, c * scale * 0.3 / 2**0.5], dim=1)
    assert torch.allclose(mp_cat(a, c, t=0.3), expected, rtol=1e-6)


with open(edm2_conformance_file("15_edm2_fullsize_configs.json"), encoding="utf-8") as _f:
    FULLSIZE = json.load(_f)


@pytest.mark.parametrize("preset", sorted(FULLSIZE))
def test_fullsize_parameter_counts(preset: str) -> None:
    """Every official training preset, built on the meta device, has the official parameter and buffer counts."""
    entry = FULLSIZE[preset]
    with torch.device("meta"):
        model = edm2_model(dict(entry["network_kwargs"]))
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    assert sum(b.numel() for b in model.buffers()) == entry["num_buffers_elements"]


def test_low_precision_backbone_keeps_float32_preconditioning() -> None:
    """A bfloat16 backbone (the use_fp16 pattern): D in float32, close to the float32 result."""
    model = conformance_model(NETS[0])
    data = load_file(edm2_conformance_file(f"{NETS[0]}.safetensors"))
    model.backbone.to(torch.bfloat16)
    with torch.no_grad():
        output = model(data["x"], data["sigma"], class_labels=data["labels"], return_logvar=True)
    assert output.sample.dtype == torch.float32 and output.logvar.dtype == torch.float32
    assert relative_error(output.sample, data["D"]) <= 0.05


def test_sdpa_attention_equals_the_official_formulation() -> None:
    model = conformance_model(NETS[0])
    data = load_file(edm2_conformance_file(f"{NETS[0]}.safetensors"))
    with torch.no_grad():
        model.set_attention_implementation("sdpa")
        sdpa = model(data["x"], data["sigma"], class_labels=data["labels"]).sample
    assert model.backbone.attention_implementation == "sdpa"
    assert relative_error(sdpa, data["D"]) <= tolerance(NETS[0])


def test_save_load_round_trip_is_bit_exact(tmp_path) -> None:
    model = conformance_model(NETS[0])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backbone_type"] == "edm2_unet" and config["backbone_config"]["channels_per_head"] == 16
    loaded = EDMPreconditionedUNet2DModel.from_pretrained(tmp_path).eval()
    data = load_file(edm2_conformance_file(f"{NETS[0]}.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(data["x"], data["sigma"], class_labels=data["labels"]).sample,
                           model(data["x"], data["sigma"], class_labels=data["labels"]).sample)


def test_gradients_reach_every_parameter() -> None:
    model = conformance_model(NETS[0]).train()
    data = load_file(edm2_conformance_file(f"{NETS[0]}.safetensors"))
    output = model(data["x"], data["sigma"], class_labels=data["labels"], return_logvar=True)
    (output.sample.square().mean() + output.logvar.mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(("change", "message"), [
    (dict(augment_dim=2), "no augmentation conditioning"),
    (dict(out_channels=8), "outputs its 4 input channels"),
    (dict(backbone_config={"channel_mult": [1, 2, 2, 2]}), "divisible by 2"),
    (dict(backbone_config={"attention": True}), "unexpected keyword|attention"),
])
def test_bad_configs_are_one_line_errors(change: dict, message: str) -> None:
    kwargs = dict(sample_size=4, in_channels=4, out_channels=4, num_class_labels=3, backbone_type="edm2_unet",
                  backbone_config={"model_channels": 8, "channel_mult": [1, 2]})
    with pytest.raises((ValueError, TypeError), match=message):
        EDMPreconditionedUNet2DModel(**{**kwargs, **change})


def test_bad_inputs_and_logvar_requests_raise() -> None:
    model = conformance_model(NETS[0])
    x, sigma = torch.zeros(2, 4, 8, 8), torch.ones(2)
    with pytest.raises(ValueError, match=r"shape \(2, 10\)"):
        model(x, sigma, class_labels=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="augment_dim=0"):
        model(x, sigma, class_labels=torch.eye(10)[:2], augment_labels=torch.zeros(2, 2))
    other = EDMPreconditionedUNet2DModel(sample_size=8, in_channels=1, out_channels=1, backbone_type="song_unet",
                                         backbone_config={"model_channels": 8, "channel_mult": [1]})
    with pytest.raises(ValueError, match="no uncertainty head"):
        other(torch.zeros(1, 1, 8, 8), torch.ones(1), return_logvar=True)
