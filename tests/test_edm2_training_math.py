"""EDM2's training objective and learning-rate schedule against the official code's numbers (`11_edm2_loss`,
`12_edm2_lr`)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm.training.loss import EDM2Loss
from diffusers_edm.training.lr_schedule import edm2_learning_rate, edm_learning_rate
from tests.helpers import edm2_case, edm2_conformance_file
from tests.test_edm2_network import conformance_model


@pytest.mark.parametrize("case", edm2_case("11_edm2_loss")["cases"], ids=lambda case: case["key"])
def test_uncertainty_weighted_loss_matches_official(case: dict) -> None:
    """The official draw order (σ from one randn, then the noise) under the same global seed, on a fresh copy of the
    conformance network in training mode."""
    data = load_file(edm2_conformance_file("11_edm2_loss.safetensors"))
    index = case["key"].split("_")[1]
    model = conformance_model("10_edm2_net_latent_cond").train()
    loss_fn = EDM2Loss(case["P_mean"], case["P_std"], case["sigma_data"])
    torch.manual_seed(case["torch_manual_seed"])
    loss, sigma = loss_fn(model, data["images"], data["labels"])
    expected_sigma = (data[f"rnd_normal_{index}"] * case["P_std"] + case["P_mean"]).exp().reshape(-1, 1, 1, 1)
    assert torch.allclose(sigma, expected_sigma, rtol=1e-6)
    reference = data[case["key"]]
    assert (loss - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()


def test_loss_closed_form_with_forced_draws() -> None:
    """λ(σ)/e^u ‖D − y‖² + u with D and u the model's own outputs, written out."""
    model = conformance_model("10_edm2_net_latent_cond")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 4, 8, 8, generator=generator) * 0.5
    sigma, noise = torch.tensor([0.3, 2.0]).reshape(-1, 1, 1, 1), torch.randn(2, 4, 8, 8, generator=generator)
    labels = torch.eye(10)[:2]
    loss, _ = EDM2Loss()(model, images, labels, sigma=sigma, noise=noise)
    with torch.no_grad():
        output = model(images + noise * sigma, sigma, class_labels=labels, return_logvar=True)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    assert torch.allclose(loss, weight / output.logvar.exp() * (output.sample - images) ** 2 + output.logvar)


@pytest.mark.parametrize("case", edm2_case("12_edm2_lr")["cases"],
                         ids=lambda case: f"{case['cur_nimg']}-{case['batch_size']}")
def test_edm2_learning_rate_matches_official(case: dict) -> None:
    lr = edm2_learning_rate(case["cur_nimg"], case["batch_size"], case["ref_lr"], case["ref_batches"],
                            case["rampup_Mimg"] * 1e6)
    assert lr == pytest.approx(case["lr"], rel=1e-12, abs=1e-15)


def test_edm_learning_rate_ramps_linearly_from_zero() -> None:
    assert edm_learning_rate(0, 1e-3, 1e7) == 0
    assert edm_learning_rate(5_000_000, 1e-3, 1e7) == pytest.approx(5e-4)
    assert edm_learning_rate(10**9, 1e-3, 1e7) == 1e-3
    assert edm_learning_rate(0, 1e-3, 0) == 0 and edm_learning_rate(1, 1e-3, 0) == 1e-3
    assert math.isclose(edm2_learning_rate(4 * 70000 * 2048, 2048, 0.012, 70000, 1e7), 0.006)
