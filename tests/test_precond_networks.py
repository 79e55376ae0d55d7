"""The paper's networks end to end: EDMPreconditionedUNet2DModel with a native backbone and each preconditioning of
Table 1, loaded with the official weights (state_dict keys `model.*` → `backbone.*`), against the official D outputs
of every network case in the conformance set (07), in float32 and float64."""

import json

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm import EDMPreconditionedUNet2DModel

from .helpers import DATA_DIR, shared_conformance_file

PRECONDITIONING = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}
BACKBONE = {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}
CASES = json.loads((DATA_DIR / "precond_net_cases.json").read_text())["nets"]
NETS = json.loads((DATA_DIR / "backbone_conformance_nets.json").read_text())["nets"]


def build_official(name: str, dtype: torch.dtype) -> EDMPreconditionedUNet2DModel:
    net = NETS[name]
    kwargs = dict(net["resolved_model_kwargs"])
    resolution, channels = kwargs.pop("img_resolution"), kwargs.pop("in_channels")
    out_channels = kwargs.pop("out_channels")
    model = EDMPreconditionedUNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=out_channels,
        num_class_labels=kwargs.pop("label_dim"), augment_dim=kwargs.pop("augment_dim"),
        backbone_type=BACKBONE[net["model_class"]], backbone_config=kwargs,
        preconditioning=PRECONDITIONING[net["precond_class"]],
    )
    weights = load_file(shared_conformance_file(net["weights_file"]))
    state = {"backbone." + key.removeprefix("model."): value for key, value in weights.items() if key != "u"}
    model.load_state_dict(state, strict=True)
    if "u" in weights:  # iDDPM: the model rebuilds the official u table itself
        assert torch.equal(model.precond.u, weights["u"])
    return model.to(dtype).eval()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_official_network_outputs(name, dtype):
    inputs = load_file(DATA_DIR / f"backbone_{name}.safetensors")
    expected = load_file(DATA_DIR / "precond_net_outputs.safetensors")
    model = build_official(name, dtype)
    suffix = "fp32" if dtype == torch.float32 else "fp64"
    x = inputs["call0.x"].to(dtype)
    reference0, reference1 = expected[f"{name}.call0.D_{suffix}"], expected[f"{name}.call1.D_{suffix}"]
    scale = max(1.0, reference0.abs().max().item())
    atol = CASES[name]["fp32_D_atol"] if dtype == torch.float32 else 1e-9 * scale
    with torch.no_grad():
        call0 = model(x, inputs["call0.sigma"], class_labels=inputs.get("call0.class_labels"),
                      augment_labels=inputs.get("call0.augment_labels")).sample
        call1 = model(x, inputs["call1.sigma"]).sample
    assert call0.dtype == dtype
    torch.testing.assert_close(call0, reference0, rtol=0, atol=atol)
    torch.testing.assert_close(call1, reference1, rtol=0, atol=atol)


def test_network_range_follows_the_preconditioning():
    expectations = {"edm": (0.0, float("inf")), "vp": (0.0009765625, 152.16697692871094), "ve": (0.02, 100.0),
                    "iddpm": (0.006422337144613266, 20291.169921875)}
    for preconditioning, (low, high) in expectations.items():
        model = EDMPreconditionedUNet2DModel(
            sample_size=8, in_channels=1, out_channels=2 if preconditioning == "iddpm" else 1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, preconditioning=preconditioning)
        assert (model.sigma_min, model.sigma_max) == pytest.approx((low, high), rel=1e-7)
    with pytest.raises(ValueError, match="2 x in_channels"):
        EDMPreconditionedUNet2DModel(sample_size=8, in_channels=1, out_channels=1, preconditioning="iddpm")
    with pytest.raises(ValueError, match="backbone_type"):
        EDMPreconditionedUNet2DModel(backbone_type="transformer")


def test_native_backbone_save_load_round_trip(tmp_path):
    model = build_official("edm_ncsnpp_cond_aug", torch.float32)
    model.save_pretrained(tmp_path)
    loaded = EDMPreconditionedUNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone_type == "song_unet" and loaded.config.backbone_config["embedding_type"] == "fourier"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, 1.5).sample, model(x, 1.5).sample)
