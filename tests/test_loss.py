"""EDM's training loss (Eq. 2/8, Table 1) against the official loss's numbers (conformance set 05)."""

import math

import pytest
import torch

from diffusers_edm import edm_preconditioning
from diffusers_edm.training.augment import AugmentPipe
from diffusers_edm.training.loss import EDMLoss, edm_loss_weight, sample_training_sigmas

from .helpers import conformance


def stub_denoiser(x, sigma, class_labels, augment_labels):
    """The conformance stand-in network: D(x; σ) = 0.3 x."""
    return 0.3 * x


def test_forced_draws_match_official():
    meta, tensors = conformance("05_loss")
    variant = next(v for v in meta["variants"] if v["id"] == "EDMLoss")
    params = variant["params"]
    loss_fn = EDMLoss(p_mean=params["P_mean"], p_std=params["P_std"], sigma_data=params["sigma_data"])
    sigma = (tensors["EDMLoss.U"] * 1.2 - 1.2).exp()
    torch.testing.assert_close(sigma, tensors["EDMLoss.sigma"], rtol=1e-6, atol=0)
    seen = {}

    def recording(x, s, c, a):
        seen["input"], seen["sigma"] = x, s
        return stub_denoiser(x, s, c, a)

    loss, used_sigma = loss_fn(recording, tensors["images"], sigma=sigma, noise=tensors["noise_unit"])
    torch.testing.assert_close(edm_loss_weight(sigma), tensors["EDMLoss.weight"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["input"], tensors["EDMLoss.net_input"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, tensors["EDMLoss.loss"], rtol=1e-5, atol=1e-6)
    assert torch.equal(used_sigma, sigma)


def test_target_is_the_augmented_image_and_labels_pass_through():
    _, tensors = conformance("05_loss")
    sigma = (tensors["EDMLoss.U"] * 1.2 - 1.2).exp()
    augment_labels = tensors["EDMLoss_with_stub_augment.augment_labels"]
    class_labels = tensors["EDMLoss_with_stub_augment.class_labels"]
    seen = {}

    def recording(x, s, c, a):
        seen.update(input=x, class_labels=c, augment_labels=a)
        return 0.3 * x

    loss, _ = EDMLoss()(recording, tensors["images"], class_labels, lambda y: (y.flip(3), augment_labels),
                        sigma=sigma, noise=tensors["noise_unit"])
    torch.testing.assert_close(seen["input"], tensors["EDMLoss_with_stub_augment.net_input"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, tensors["EDMLoss_with_stub_augment.loss"], rtol=1e-5, atol=1e-6)
    assert seen["class_labels"] is class_labels and seen["augment_labels"] is augment_labels


@pytest.mark.parametrize("case,augment", [("EDMLoss", False), ("EDMLoss_trainaug", True)])
def test_random_stream_matches_official(case, augment):
    """With the same global seed, the σ draw, the augmentation draws and the noise come in the official order."""
    _, tensors = conformance("05_loss")
    torch.manual_seed(7)
    pipe = AugmentPipe.edm_default(0.12) if augment else None
    seen = {}

    def recording(x, s, c, a):
        seen["augment_labels"] = a
        return 0.3 * x

    labels = tensors.get(f"rng_parity.{case}.class_labels")
    loss, sigma = EDMLoss()(recording, tensors["rng_parity.images"], labels, pipe)
    torch.testing.assert_close(sigma, tensors[f"rng_parity.{case}.sigma"], rtol=1e-6, atol=0)
    torch.testing.assert_close(loss, tensors[f"rng_parity.{case}.loss"], rtol=1e-5, atol=1e-6)
    if augment:
        torch.testing.assert_close(seen["augment_labels"], tensors[f"rng_parity.{case}.augment_labels"], atol=1e-6,
                                   rtol=0)


def test_sigma_distribution():
    meta, _ = conformance("05_loss")
    stats = next(s for s in meta["sigma_stats"] if s["id"] == "EDMLoss")
    torch.manual_seed(stats["torch_manual_seed"])
    sigma = sample_training_sigmas(stats["n"])
    torch.testing.assert_close(sigma.flatten()[:8], torch.tensor(stats["first8_sigma"]), rtol=1e-6, atol=0)
    log_sigma = sigma.log().double().flatten()
    standard_error = 1.2 / math.sqrt(stats["n"])
    assert abs(log_sigma.mean().item() - (-1.2)) < 5 * standard_error
    assert abs(log_sigma.std().item() - 1.2) < 5 * 1.2 / math.sqrt(2 * stats["n"])
    assert log_sigma.mean().item() == pytest.approx(stats["mean_log_sigma"], abs=1e-6)


def test_weight_values_and_unit_effective_weight():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    torch.testing.assert_close(edm_loss_weight(sigma), torch.tensor([250004.0, 8.0, 4.00015625], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    sigma = torch.logspace(-3, 2.5, 100, dtype=torch.float64)
    for sigma_data in (0.5, 1.0, 0.2):
        c_out = edm_preconditioning(sigma, sigma_data).c_out
        torch.testing.assert_close(edm_loss_weight(sigma, sigma_data) * c_out**2, torch.ones_like(sigma))


def test_bad_parameters():
    with pytest.raises(ValueError, match="p_std"):
        EDMLoss(p_std=0)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMLoss(sigma_data=-1)
