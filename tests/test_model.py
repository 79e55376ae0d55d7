"""EDMPreconditionedUNet2DModel: the preconditioning of Eq. 7 / Table 1 against the official coefficients, the
conditioning inputs, precision, save/load, torch.compile and bad input."""

import pytest
import torch
from diffusers import UNet2DModel

from diffusers_edm import EDMPreconditionedUNet2DModel, edm_preconditioning

from .helpers import conformance, randomize_, tiny_unet_kwargs


def make_model(seed=0, **overrides):
    return randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(**overrides)), seed).eval()


def test_coefficients_match_official():
    _, tensors = conformance("04_precond")
    c_skip, c_out, c_in, c_noise = edm_preconditioning(tensors["sigma_f32"], 0.5)
    torch.testing.assert_close(c_skip, tensors["EDMPrecond.c_skip"], rtol=2e-6, atol=0)
    torch.testing.assert_close(c_out, tensors["EDMPrecond.c_out"], rtol=2e-6, atol=0)
    torch.testing.assert_close(c_in, tensors["EDMPrecond.c_in"], rtol=2e-6, atol=0)
    torch.testing.assert_close(c_noise, tensors["EDMPrecond.c_noise"], rtol=0, atol=2e-6)


def test_coefficient_identities():
    """Closed-form properties of Table 1: c_skip² σ_data²… the effective target has unit variance, c_skip(σ_data) = ½."""
    sigma = torch.logspace(-3, 2, 50, dtype=torch.float64)
    c_skip, c_out, c_in, _ = edm_preconditioning(sigma, 0.5)
    # Var of the effective training target (y − c_skip(y + σn))/c_out is 1 for Var(y) = σ_data² (paper Eq. 8 / App. B.6).
    target_variance = ((1 - c_skip) ** 2 * 0.25 + c_skip**2 * sigma**2) / c_out**2
    torch.testing.assert_close(target_variance, torch.ones_like(sigma))
    torch.testing.assert_close(c_in**2 * (sigma**2 + 0.25), torch.ones_like(sigma))  # unit-variance network input


def test_forward_is_eq_7_around_the_backbone():
    model = make_model()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.01, 1.0, 60.0])
    s = sigma.reshape(-1, 1, 1, 1)
    raw = model.backbone(x / (s**2 + 0.25).sqrt(), sigma.log() / 4).sample
    expected = 0.25 / (s**2 + 0.25) * x + s * 0.5 / (s**2 + 0.25).sqrt() * raw
    output = model(x, sigma).sample
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)


def test_sigma_forms_agree():
    model = make_model()
    x = torch.randn(2, 1, 8, 8)
    reference = model(x, torch.tensor([0.7, 0.7])).sample
    for sigma in (0.7, torch.tensor(0.7), torch.tensor([[[[0.7]]], [[[0.7]]]]), torch.tensor(0.7, dtype=torch.float64)):
        assert torch.equal(model(x, sigma).sample, reference)


def test_class_labels_integer_one_hot_soft_and_none():
    model = make_model(num_class_labels=3)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    by_index = model(x, 1.0, class_labels=torch.tensor([0, 2])).sample
    one_hot = model(x, 1.0, class_labels=torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])).sample
    torch.testing.assert_close(by_index, one_hot)
    assert not torch.allclose(by_index[0], model(x, 1.0, class_labels=torch.tensor([1, 2])).sample[0])
    # EDM's conditional networks given no labels see all-zero label vectors.
    torch.testing.assert_close(model(x, 1.0).sample, model(x, 1.0, class_labels=torch.zeros(2, 3)).sample)
    # A soft label embeds as the same mixture of the class embeddings (the embedding is linear in the vector).
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    embedding = model.backbone.class_embedding
    torch.testing.assert_close(embedding(soft)[0], 0.5 * (embedding.weight[0] + embedding.weight[1]))


def test_augment_labels_condition_the_network_and_none_means_zeros():
    model = make_model(num_class_labels=2, augment_dim=9)
    assert torch.count_nonzero(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(augment_dim=9))
                               .backbone.class_embedding.augment_proj.weight) == 0
    x = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([0, 1])
    none = model(x, 0.5, class_labels=labels).sample
    zeros = model(x, 0.5, class_labels=labels, augment_labels=torch.zeros(2, 9)).sample
    flipped = model(x, 0.5, class_labels=labels, augment_labels=torch.eye(9)[:2]).sample
    assert torch.equal(none, zeros)
    assert not torch.allclose(none, flipped)
    unconditional_augmented = make_model(augment_dim=9)
    assert unconditional_augmented(x, 0.5).sample.shape == x.shape


def test_reduced_precision_backbone_keeps_float32_preconditioning():
    model = make_model().to(torch.bfloat16)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.002, 80.0])
    output = model(x, sigma).sample
    assert output.dtype == torch.float32
    s = sigma.reshape(-1, 1, 1, 1)
    c_in = 1 / (s**2 + 0.25).sqrt()
    raw = model.backbone((c_in * x).to(torch.bfloat16), sigma.log() / 4).sample
    expected = 0.25 / (s**2 + 0.25) * x + s * 0.5 / (s**2 + 0.25).sqrt() * raw.float()
    # Only F carries bfloat16 rounding; the skip path c_skip·x (which dominates at small σ) is exact float32.
    torch.testing.assert_close(output, expected, rtol=1e-6, atol=1e-7)


def test_float64_model_computes_in_float64():
    model = make_model().double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    assert model(x, 2.0).sample.dtype == torch.float64


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = make_model(num_class_labels=4, augment_dim=9, sigma_data=0.6)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = EDMPreconditionedUNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.sigma_data == 0.6 and loaded.config.block_out_channels == [8, 16]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([1, 3])
    assert torch.equal(loaded(x, 3.0, class_labels=labels).sample, model(x, 3.0, class_labels=labels).sample)


def test_backbone_is_a_stock_unet_2d_model(tmp_path):
    """The raw F saves and reloads as a plain `UNet2DModel` that takes integer class labels."""
    model = make_model(num_class_labels=3)
    model.backbone.save_pretrained(tmp_path)
    plain = UNet2DModel.from_pretrained(tmp_path).eval()
    x, c_noise, labels = torch.randn(2, 1, 8, 8), torch.tensor([0.1, -0.4]), torch.tensor([2, 0])
    assert torch.equal(plain(x, c_noise, class_labels=labels).sample, model.backbone(x, c_noise, labels).sample)


def test_compiled_model_does_not_recompile_per_sigma():
    model = make_model()
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        for sigma in (80.0, 12.5, 1.0, 0.3, 0.002):
            output = compiled(x, torch.tensor(sigma, dtype=torch.float64)).sample
            torch.testing.assert_close(output, model(x, torch.tensor(sigma)).sample)
    assert len(graphs) == 1


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.randn(2, 3, 8, 8), 1.0), r"shape \(batch, 1, height, width\)"),
    (lambda m: m(torch.randn(2, 8, 8), 1.0), r"shape \(batch, 1, height, width\)"),
    (lambda m: m(torch.randn(2, 1, 7, 7), 1.0), "divisible by 2"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 0.0), "sigma must be > 0"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.tensor([1.0, -1.0])), "sigma must be > 0"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.ones(3)), "one noise level per sample"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 1.0, class_labels=torch.tensor([0, 3])), r"\[0, 3\)"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 1.0, class_labels=torch.ones(2, 4)), r"\(2, 3\)"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 1.0, class_labels=torch.tensor([0])), r"shape \(2,\)"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 1.0, augment_labels=torch.zeros(2, 9)), "augment_dim=0"),
])
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_model(num_class_labels=3))


def test_labels_on_unconditional_model_are_rejected():
    with pytest.raises(ValueError, match="unconditional"):
        make_model()(torch.randn(1, 1, 8, 8), 1.0, class_labels=torch.tensor([0]))
