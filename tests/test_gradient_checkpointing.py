"""Gradient checkpointing of EDMPreconditionedUNet2DModel (`enable_gradient_checkpointing()`, diffusers' ModelMixin
API) for the three backbones: per-block recomputation that leaves outputs, gradients (dropout masks included) and
state_dict names unchanged and does nothing at inference."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from diffusers_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.models.dhariwal_unet import DhariwalUNet2DModel
from diffusers_edm.models.song_unet import SongUNet2DModel

from .helpers import randomize_, tiny_unet_kwargs

BACKBONES = ("song_unet", "dhariwal_unet", "unet_2d")
NATIVE_CONFIGS = {
    "song_unet": dict(
        model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.3, label_dropout=0.25,
        embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", decoder_type="skip",
        resample_filter=[1, 3, 3, 1],
    ),
    "dhariwal_unet": dict(
        model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.3, label_dropout=0.25
    ),
}


def make_model(backbone_type: str) -> EDMPreconditionedUNet2DModel:
    """A tiny conditional model (4 classes, 2 augment labels) with dropout and label dropout, in train mode."""
    common = dict(sample_size=8, in_channels=3, out_channels=3, num_class_labels=4, augment_dim=2)
    if backbone_type == "unet_2d":
        kwargs = tiny_unet_kwargs(**common, dropout=0.3, label_dropout=0.25)
    else:
        kwargs = dict(common, backbone_type=backbone_type, backbone_config=NATIVE_CONFIGS[backbone_type])
    torch.manual_seed(0)
    return randomize_(EDMPreconditionedUNet2DModel(**kwargs), seed=1, scale=0.2).train()


def make_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return dict(
        sample=torch.randn(3, 3, 8, 8, generator=generator),
        sigma=torch.tensor([0.3, 1.5, 20.0]),
        class_labels=torch.eye(4)[[0, 2, 3]],
        augment_labels=torch.randn(3, 2, generator=generator),
    )


def forward_backward(model: EDMPreconditionedUNet2DModel, seed: int = 5) -> tuple[torch.Tensor, dict]:
    """The denoised output and the gradients of a fixed linear loss w.r.t. the input and every parameter."""
    inputs = make_inputs()
    sample = inputs.pop("sample").requires_grad_(True)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    output = model(sample, **inputs).sample
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(7))
    (output * weights).sum().backward()
    grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    grads["<sample>"] = sample.grad.clone()
    return output.detach(), grads


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts the calls of torch.utils.checkpoint.checkpoint (diffusers' default checkpointing function uses it)."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    return calls


@pytest.mark.parametrize("backbone_type", BACKBONES)
def test_outputs_and_gradients_are_bit_identical(backbone_type: str, checkpoint_calls: list[int]) -> None:
    model = make_model(backbone_type)
    reference_output, reference_grads = forward_backward(model)
    other_seed_output, _ = forward_backward(model, seed=6)
    assert not torch.equal(other_seed_output, reference_output), "dropout should be active in this test"
    assert not checkpoint_calls

    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    output, grads = forward_backward(model)
    assert checkpoint_calls, "no block was checkpointed"
    assert torch.equal(output, reference_output)
    assert grads.keys() == reference_grads.keys()
    mismatched = [name for name in grads if not torch.equal(grads[name], reference_grads[name])]
    assert not mismatched, f"gradients differ for {mismatched}"


@pytest.mark.parametrize("backbone_type", ("song_unet", "dhariwal_unet"))
def test_native_backbones_checkpoint_every_block(backbone_type: str, checkpoint_calls: list[int]) -> None:
    model = make_model(backbone_type)
    model.enable_gradient_checkpointing()
    forward_backward(model)
    num_blocks = sum(type(module).__name__ == "UNetBlock" for module in model.backbone.modules())
    assert len(checkpoint_calls) == num_blocks


@pytest.mark.parametrize("backbone_type", BACKBONES)
def test_no_effect_at_inference(backbone_type: str, checkpoint_calls: list[int]) -> None:
    model = make_model(backbone_type).eval()
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs).sample
    model.enable_gradient_checkpointing()
    with torch.no_grad():
        assert torch.equal(model(**inputs).sample, reference)
    if backbone_type != "unet_2d":  # diffusers' own blocks also checkpoint in eval mode when autograd records
        assert torch.equal(model(**inputs).sample.detach(), reference)
    assert not checkpoint_calls
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        model(**inputs)
    assert not checkpoint_calls


@pytest.mark.parametrize("backbone_type", BACKBONES)
def test_disable_and_state_dict_names(backbone_type: str, checkpoint_calls: list[int]) -> None:
    model = make_model(backbone_type)
    keys = list(model.state_dict())
    model.enable_gradient_checkpointing()
    assert list(model.state_dict()) == keys
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing
    forward_backward(model)
    assert not checkpoint_calls
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("model_class", (SongUNet2DModel, DhariwalUNet2DModel))
def test_custom_checkpointing_function_on_the_bare_backbone(model_class: type) -> None:
    channels = 8 if model_class is SongUNet2DModel else 64
    model = model_class(img_resolution=8, in_channels=3, out_channels=3, model_channels=channels, channel_mult=[1, 2],
                        num_blocks=1, attn_resolutions=[4]).train()
    seen = []

    def checkpoint_func(module, *args):
        seen.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    model.enable_gradient_checkpointing(checkpoint_func)
    x = torch.randn(2, 3, 8, 8)
    model(x, torch.randn(2)).sum().backward()
    assert seen and set(seen) == {"UNetBlock"}
