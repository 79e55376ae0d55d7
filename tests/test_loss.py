"""The training losses of Table 1 (EDM's, Eq. 2/8, and the VP/VE baselines) against the official losses' numbers
(conformance set 05)."""

import math

import pytest
import torch

from diffusers_edm import edm_preconditioning
from diffusers_edm.models.unet_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.preconditioning import make_preconditioning
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.augment import AugmentPipe
from diffusers_edm.training.loss import (
    EDMLoss,
    VELoss,
    VPLoss,
    edm_loss_weight,
    loss_for_model,
    sample_training_sigmas,
)

from .helpers import conformance, tiny_unet_kwargs


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


# --- VP and VE baselines (Table 1) -----------------------------------------------------------------------------------

BASELINES = {"VPLoss": VPLoss, "VELoss": VELoss}


@pytest.mark.parametrize("case", list(BASELINES))
def test_baseline_forced_draws_match_official(case):
    meta, tensors = conformance("05_loss")
    variant = next(v for v in meta["variants"] if v["id"] == case)
    loss_fn = BASELINES[case](**variant["params"])
    sigma = loss_fn.sigma_from_uniform(tensors[f"{case}.U"])
    torch.testing.assert_close(sigma, tensors[f"{case}.sigma"], rtol=1e-6, atol=0)
    torch.testing.assert_close(loss_fn.weight(sigma), tensors[f"{case}.weight"], rtol=1e-5, atol=1e-6)
    seen = {}

    def recording(x, s, c, a):
        seen["input"], seen["sigma"], seen["augment_labels"] = x, s, a
        return stub_denoiser(x, s, c, a)

    loss, used_sigma = loss_fn(recording, tensors["images"], sigma=sigma, noise=tensors["noise_unit"])
    torch.testing.assert_close(seen["input"], tensors[f"{case}.net_input"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, tensors[f"{case}.loss"], rtol=1e-5, atol=1e-6)
    assert torch.equal(used_sigma, sigma) and seen["sigma"] is sigma and seen["augment_labels"] is None


def test_baseline_weights_by_formula():
    """λ = 1/σ² for both baselines (Table 1), and σ(u) at the ends of the draw: VP σ(1) and σ(ε_t), VE σ_min."""
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    for loss_fn in (VPLoss(), VELoss()):
        torch.testing.assert_close(loss_fn.weight(sigma), torch.tensor([250000.0, 4.0, 1 / 6400], dtype=torch.float64))
    u = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # σ_VP(t) = sqrt(exp(β_d t²/2 + β_min t) − 1): t = 1 at u = 0, t = ε_t at u = 1.
    expected_vp = [math.sqrt(math.exp(19.9 / 2 + 0.1) - 1), math.sqrt(math.exp(19.9 / 2 * 1e-10 + 0.1 * 1e-5) - 1)]
    torch.testing.assert_close(VPLoss().sigma_from_uniform(u), torch.tensor(expected_vp, dtype=torch.float64))
    torch.testing.assert_close(VELoss().sigma_from_uniform(u), torch.tensor([0.02, 100.0], dtype=torch.float64))


@pytest.mark.parametrize("case", list(BASELINES))
def test_baseline_random_stream_matches_official(case):
    """With the same global seed, one `torch.rand([B,1,1,1])` for σ, then the noise, in the official order."""
    _, tensors = conformance("05_loss")
    torch.manual_seed(7)
    loss, sigma = BASELINES[case]()(stub_denoiser, tensors["rng_parity.images"])
    torch.testing.assert_close(sigma, tensors[f"rng_parity.{case}.sigma"], rtol=1e-6, atol=0)
    torch.testing.assert_close(loss, tensors[f"rng_parity.{case}.loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(BASELINES))
def test_baseline_sigma_distribution(case):
    meta, _ = conformance("05_loss")
    stats = next(s for s in meta["sigma_stats"] if s["id"] == case)
    torch.manual_seed(stats["torch_manual_seed"])
    sigma = BASELINES[case]().sample_sigma(stats["n"])
    assert sigma.shape == (stats["n"], 1, 1, 1)
    torch.testing.assert_close(sigma.flatten()[:8], torch.tensor(stats["first8_sigma"]), rtol=1e-6, atol=0)
    log_sigma = sigma.log().double().flatten()
    standard_error = stats["analytic_std_log_sigma"] / math.sqrt(stats["n"])
    assert abs(log_sigma.mean().item() - stats["analytic_mean_log_sigma"]) < 5 * standard_error
    assert log_sigma.mean().item() == pytest.approx(stats["mean_log_sigma"], abs=1e-6)


def test_baseline_bad_parameters():
    with pytest.raises(ValueError, match="epsilon_t"):
        VPLoss(epsilon_t=0)
    with pytest.raises(ValueError, match="beta_d"):
        VPLoss(beta_d=-1)
    with pytest.raises(ValueError, match="sigma_max"):
        VELoss(sigma_min=1.0, sigma_max=0.5)


# --- The loss of a model comes from its preconditioning --------------------------------------------------------------


def tiny_model(preconditioning="edm", preconditioning_config=None, **kwargs):
    return EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(**kwargs), preconditioning=preconditioning,
                                        preconditioning_config=preconditioning_config)


def test_loss_for_model_reads_the_preconditioning():
    loss_fn = loss_for_model(tiny_model(sigma_data=0.7), p_mean=-1.0, p_std=1.5)
    assert type(loss_fn) is EDMLoss
    assert (loss_fn.p_mean, loss_fn.p_std, loss_fn.sigma_data) == (-1.0, 1.5, 0.7)

    loss_fn = loss_for_model(tiny_model("vp", dict(beta_d=18.0, beta_min=0.2, epsilon_t=1e-3)), p_mean=5.0)
    assert type(loss_fn) is VPLoss
    assert (loss_fn.beta_d, loss_fn.beta_min, loss_fn.epsilon_t) == (18.0, 0.2, 1e-3)
    assert vars(loss_for_model(tiny_model("vp"))) == vars(VPLoss())  # the defaults agree with the preconditioning's

    loss_fn = loss_for_model(tiny_model("ve", dict(sigma_min=0.01, sigma_max=50.0)))
    assert type(loss_fn) is VELoss
    assert (loss_fn.sigma_min, loss_fn.sigma_max) == (0.01, 50.0)
    assert vars(loss_for_model(tiny_model("ve"))) == vars(VELoss())

    assert type(loss_for_model(make_preconditioning("ve"))) is VELoss  # a Preconditioning works too


def test_loss_for_model_unwraps_and_rejects():
    model = tiny_model("vp")
    wrapper = torch.nn.Module()
    wrapper.module = model  # as DistributedDataParallel holds it
    assert type(loss_for_model(wrapper)) is VPLoss
    iddpm = tiny_model("iddpm", out_channels=2)
    with pytest.raises(TrainingError, match="'iddpm' preconditioning has no training loss") as error:
        loss_for_model(iddpm)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="EDMPreconditionedUNet2DModel"):
        loss_for_model(torch.nn.Linear(1, 1))


def test_vp_loss_trains_a_vp_model():
    """End to end on a tiny VP model: finite loss and gradients over the whole σ range (λ = 1/σ² up to ~1e6)."""
    torch.manual_seed(0)
    model = tiny_model("vp")
    loss_fn = loss_for_model(model)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    sigma = loss_fn.sigma_from_uniform(torch.tensor([0.0, 0.5, 0.9, 0.999999]).reshape(-1, 1, 1, 1))
    loss, _ = loss_fn(lambda x, s, c, a: model(x, s.flatten()).sample, images, sigma=sigma)
    (loss.sum() / images.shape[0]).backward()
    assert torch.isfinite(loss).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
