"""EDMHeunScheduler: Algorithm 2 against the official sampler's numbers, closed-form results and an independent
reimplementation; configuration, drop-in use with diffusers, and bad input."""

import math

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from diffusers_edm import EDMHeunScheduler
from diffusers_edm.preconditioning import IDDPMPreconditioning, VEPreconditioning, VPPreconditioning
from diffusers_edm.schedulers.sigma_schedule import karras_sigmas

from .helpers import (
    BAD_SET_TIMESTEPS_ARGUMENTS,
    BAD_SHARED_SETTINGS,
    assert_config_round_trip,
    assert_step_after_the_last_is_rejected,
    conformance,
    linear_denoiser,
    mixture_denoiser,
    reference_edm_sampler,
    run_scheduler_loop,
)

# --- σ grid (Eq. 5) -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", [
    "edm_N2_smin0.002_smax80_rho7", "edm_N18_smin0.002_smax80_rho7", "edm_N40_smin0.002_smax80_rho7",
    "edm_N256_smin0.002_smax80_rho7", "edm_N18_smin0.002_smax80_rho3", "edm_N10_smin0.002_smax80_rho1",
    "edm_N18_smin0.01_smax50_rho7",
])
def test_sigma_grid_matches_official(case_id):
    meta, tensors = conformance("01_sigma_grids")
    case = next(c for c in meta["cases"] if c["id"] == case_id)
    scheduler = EDMHeunScheduler(sigma_min=case["sigma_min_arg"], sigma_max=case["sigma_max_arg"], rho=case["rho"],
                                 solver="euler")
    scheduler.set_timesteps(case["num_steps"])
    expected = tensors[case_id]
    # Euler layout: one evaluation per step, at σ_i (no churn), then the final 0.
    torch.testing.assert_close(scheduler.sigmas, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(karras_sigmas(case["num_steps"], case["sigma_min_arg"], case["sigma_max_arg"],
                                             case["rho"]), expected[:-1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("case_id,preconditioning", [
    ("ve_N18_smin0.002_smax80_rho7", VEPreconditioning()),
    ("vp_N18_smin0.0001_smax200_rho7", VPPreconditioning()),
    ("iddpm_N18_smin0.002_smax80_rho7", IDDPMPreconditioning()),
    ("iddpm_N256_smin0.002_smax80_rho7", IDDPMPreconditioning()),
])
def test_grid_is_clamped_and_snapped_to_the_network(case_id, preconditioning):
    """The official sampler clamps the schedule to the network's σ range and applies its round_sigma."""
    meta, tensors = conformance("01_sigma_grids")
    case = next(c for c in meta["cases"] if c["id"] == case_id)
    scheduler = EDMHeunScheduler(sigma_min=case["sigma_min_arg"], sigma_max=case["sigma_max_arg"], rho=case["rho"],
                                 solver="euler")
    scheduler.set_timesteps(case["num_steps"], net_sigma_min=preconditioning.sigma_min,
                            net_sigma_max=preconditioning.sigma_max, round_sigma=preconditioning.round_sigma)
    tolerance = 0 if case_id.startswith("iddpm") else 1e-12
    torch.testing.assert_close(scheduler.sigmas, tensors[case_id], rtol=tolerance, atol=0)


def test_heun_layout_and_timesteps_expose_evaluation_levels():
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(18)
    grid = karras_sigmas(18)
    assert len(scheduler.timesteps) == 35 and len(scheduler.sigmas) == 36
    expected = [grid[0]] + [s for s in grid[1:] for _ in range(2)] + [0.0]
    torch.testing.assert_close(scheduler.sigmas, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(scheduler.timesteps, scheduler.sigmas[:-1], rtol=0, atol=0)
    assert scheduler.timesteps.dtype == torch.float64 and scheduler.init_noise_sigma == 80.0


def test_churned_levels_are_known_up_front():
    scheduler = EDMHeunScheduler(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)
    scheduler.set_timesteps(10)
    grid = karras_sigmas(10).tolist()
    gamma = min(40 / 10, math.sqrt(2) - 1)
    hat = [s + gamma * s if 0.05 <= s <= 50 else s for s in grid]
    expected = []
    for i in range(10):
        expected.append(hat[i])
        if i < 9:
            expected.append(grid[i + 1])
    torch.testing.assert_close(scheduler.timesteps, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=0)
    assert scheduler.init_noise_sigma == grid[0]  # σ_0 = 80 lies outside [S_tmin, S_tmax]


def test_c_noise_timesteps_for_raw_networks():
    scheduler = EDMHeunScheduler(prediction_type="epsilon")
    scheduler.set_timesteps(5)
    assert scheduler.resolved_timestep_type == "c_noise"
    torch.testing.assert_close(scheduler.timesteps, (scheduler.sigmas[:-1].log() / 4).float())


# --- deterministic sampling against the official sampler (conformance set 02) ----------------------------------------


@pytest.mark.parametrize("num_steps", [2, 5, 18, 40, 256])
def test_linear_denoiser_matches_official(num_steps):
    meta, tensors = conformance("02_sampler_deterministic")
    sample, called = run_scheduler_loop(EDMHeunScheduler(), linear_denoiser(0.5), tensors["linear.latents"], num_steps)
    expected = tensors[f"linear.edm_sampler.N{num_steps}"]
    assert sample.dtype == torch.float64 and len(called) == 2 * num_steps - 1
    torch.testing.assert_close(sample, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("variant,tau", [("ideal", 0.0), ("gmm", 0.1)])
@pytest.mark.parametrize("num_steps", [2, 5, 18, 40])
def test_mixture_denoisers_match_official(variant, tau, num_steps):
    _, tensors = conformance("02_sampler_deterministic")
    denoise = mixture_denoiser(tensors["ideal.dataset"], tau)
    sample, _ = run_scheduler_loop(EDMHeunScheduler(), denoise, tensors["ideal.latents"], num_steps)
    torch.testing.assert_close(sample, tensors[f"{variant}.edm_sampler.N{num_steps}"], rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("variant,tau", [("ideal", 0.0), ("gmm", 0.1)])
def test_conditional_mixture_matches_official(variant, tau):
    _, tensors = conformance("02_sampler_deterministic")
    denoise = mixture_denoiser(tensors["ideal.dataset"], tau, tensors["ideal.cond.class_labels"],
                               tensors["ideal.dataset_labels"])
    sample, _ = run_scheduler_loop(EDMHeunScheduler(), denoise, tensors["ideal.latents"], 18)
    torch.testing.assert_close(sample, tensors[f"{variant}.cond.edm_sampler.N18"], rtol=1e-10, atol=1e-9)


def test_every_model_call_matches_official_trajectory():
    _, tensors = conformance("02_sampler_deterministic")
    denoise = mixture_denoiser(tensors["ideal.dataset"], 0.1)
    inputs, sigmas = [], []

    def recording(x, sigma):
        inputs.append(x.clone())
        sigmas.append(float(sigma))
        return denoise(x, sigma)

    run_scheduler_loop(EDMHeunScheduler(), recording, tensors["ideal.latents"], 5)
    torch.testing.assert_close(torch.tensor(sigmas, dtype=torch.float64), tensors["gmm.traj_N5.sigma"], rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.stack(inputs), tensors["gmm.traj_N5.x_in"], rtol=1e-10, atol=1e-9)


def test_float32_sample_keeps_float32():
    scheduler = EDMHeunScheduler()
    sample, _ = run_scheduler_loop(scheduler, linear_denoiser(), torch.ones(2, 1, 2, 2), 18, dtype=torch.float32)
    assert sample.dtype == torch.float32
    torch.testing.assert_close(sample, torch.full_like(sample, 0.52762467), rtol=1e-6, atol=0)


def test_single_step_is_one_euler_step_to_zero():
    latents = torch.tensor([1.0, -2.0]).reshape(2, 1, 1, 1)
    sample, called = run_scheduler_loop(EDMHeunScheduler(), linear_denoiser(), latents, 1)
    assert called == [80.0]
    torch.testing.assert_close(sample, latents.double() * 80 * 0.25 / (80**2 + 0.25), rtol=1e-12, atol=0)


def test_euler_solver_uses_one_evaluation_per_step():
    latents = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sample, called = run_scheduler_loop(EDMHeunScheduler(solver="euler"), linear_denoiser(), latents, 18)
    expected, evaluations = reference_edm_sampler(linear_denoiser(), latents, 18, solver="euler")
    assert len(called) == evaluations == 18
    torch.testing.assert_close(sample, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("solver,order", [("heun", 2), ("euler", 1)])
def test_convergence_order_against_closed_form_ode_solution(solver, order):
    """Gaussian data N(0, σ_data²): the probability-flow ODE is solved by x(σ) = x(σ_max) √(σ² + σ_data²)/√(σ_max² +
    σ_data²), so x(0) is known in closed form; the global error must fall as N^-2 (Heun) and N^-1 (Euler)."""
    sigma_data, latents = 0.5, torch.tensor([1.0]).reshape(1, 1, 1, 1)
    exact = 80.0 * sigma_data / math.sqrt(80.0**2 + sigma_data**2)
    steps = [20, 40, 80, 160]
    errors = []
    for n in steps:
        sample, _ = run_scheduler_loop(EDMHeunScheduler(solver=solver), linear_denoiser(sigma_data), latents, n)
        errors.append(abs(sample.item() - exact))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope == pytest.approx(-order, abs=0.25), (errors, slope)


# --- stochastic sampling -------------------------------------------------------------------------------------------


def test_churn_pathwise_equals_algorithm_2_with_the_same_noise():
    """With σ_0 outside the churn window, the scheduler draws the same ε_i from the generator as Algorithm 2."""
    settings = dict(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)
    latents = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    _, tensors = conformance("02_sampler_deterministic")
    denoise = mixture_denoiser(tensors["ideal.dataset"], 0.1)
    scheduler = EDMHeunScheduler(**settings)
    sample, _ = run_scheduler_loop(scheduler, denoise, latents, 18, generator=torch.Generator().manual_seed(7))
    reference_generator = torch.Generator().manual_seed(7)
    churned_steps = []

    def noise_fn(i, shape):
        churned_steps.append(i)
        return torch.randn(shape, generator=reference_generator, dtype=torch.float64)

    expected, _ = reference_edm_sampler(denoise, latents, 18, s_tmax=50, s_churn=40, s_tmin=0.05, s_noise=1.003,
                                        noise_fn=noise_fn)
    assert 0 not in churned_steps and len(churned_steps) > 5
    torch.testing.assert_close(sample, expected, rtol=1e-10, atol=1e-10)


def test_no_noise_where_gamma_is_zero():
    """A churn window that contains no σ_i gives exactly the deterministic result and consumes no random numbers."""
    latents = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    churned, _ = run_scheduler_loop(EDMHeunScheduler(s_churn=40, s_tmin=81, s_tmax=90), linear_denoiser(), latents, 18,
                                    generator=generator)
    deterministic, _ = run_scheduler_loop(EDMHeunScheduler(), linear_denoiser(), latents, 18)
    assert torch.equal(churned, deterministic)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("s_churn", [3.0, 40.0])  # γ = S_churn/N = 1/6 below the √2−1 cap; 40/18 above it
def test_stochastic_distribution_matches_algorithm_2(s_churn):
    """Mean and variance of 100k samples of Gaussian data through the scheduler equal those of an independent
    Algorithm 2 with its own noise (at N = 18 both differ from the data variance: discretisation error)."""
    n, num_steps, sigma_data = 100_000, 18, 0.5
    settings = dict(s_churn=s_churn, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
    latents = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(10))
    ours, _ = run_scheduler_loop(EDMHeunScheduler(**settings), linear_denoiser(sigma_data), latents, num_steps,
                                 generator=torch.Generator().manual_seed(11))
    reference_generator = torch.Generator().manual_seed(12)
    reference_latents = torch.randn(n, 1, 1, 1, generator=reference_generator)
    reference, _ = reference_edm_sampler(
        linear_denoiser(sigma_data), reference_latents, num_steps, **settings,
        noise_fn=lambda i, shape: torch.randn(shape, generator=reference_generator, dtype=torch.float64))
    deterministic, _ = reference_edm_sampler(linear_denoiser(sigma_data), torch.ones(1, 1, 1, 1), num_steps)
    ours, reference = ours.flatten(), reference.flatten()
    mean_se = math.sqrt(2 * reference.var().item() / n)
    var_se = reference.var().item() * math.sqrt(2 * 2 / n)
    assert abs(ours.mean() - reference.mean()) < 5 * mean_se
    assert abs(ours.var() - reference.var()) < 5 * var_se
    # The churn visibly changes the result: the deterministic sampler's variance is (0.5276 σ_data/0.5)² ≈ 0.278.
    assert abs(reference.var() - deterministic.item() ** 2) > 5 * var_se


def test_generator_list_gives_per_sample_streams():
    latents = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    settings = dict(s_churn=10)
    batch, _ = run_scheduler_loop(EDMHeunScheduler(**settings), linear_denoiser(), latents, 10,
                                  generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    single, _ = run_scheduler_loop(EDMHeunScheduler(**settings), linear_denoiser(), latents[1:], 10,
                                   generator=[torch.Generator().manual_seed(6)])
    assert torch.equal(batch[1:], single)


# --- configuration, drop-in use and errors -------------------------------------------------------------------------


def test_config_round_trip_has_no_infinity(tmp_path):
    saved, _ = assert_config_round_trip(EDMHeunScheduler(s_churn=40, s_tmin=0.05, s_noise=1.003), tmp_path, 12)
    assert saved["s_tmax"] is None


def test_from_config_with_edm_euler_both_ways():
    euler = EDMEulerScheduler(sigma_min=0.01, sigma_max=50.0)
    heun = EDMHeunScheduler.from_config(euler.config)
    assert heun.config.sigma_min == 0.01 and heun.config.sigma_max == 50.0
    assert heun.config.prediction_type == "epsilon" and heun.resolved_timestep_type == "c_noise"
    back = EDMEulerScheduler.from_config(heun.config)
    assert back.config.sigma_max == 50.0 and back.config.prediction_type == "epsilon"
    for scheduler in (heun, back):
        scheduler.set_timesteps(10)
    # Both place their evaluations on the same ρ-schedule and give the same c_noise timesteps.
    torch.testing.assert_close(heun.timesteps[::2], back.timesteps.to(heun.timesteps.dtype), rtol=1e-6, atol=1e-6)
    assert EDMHeunScheduler.from_config(EDMDPMSolverMultistepScheduler().config).config.rho == 7.0


def test_raw_network_mode_equals_preconditioned_denoiser():
    """prediction_type="epsilon" wraps a raw F with c_in / c_skip / c_out exactly as EDM's preconditioning (Eq. 7)."""
    weight = torch.tensor(0.7, dtype=torch.float64)

    def raw_network(scaled_x, c_noise):  # some F(c_in x; c_noise)
        return torch.tanh(weight * scaled_x + c_noise.to(torch.float64))

    def denoiser(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        c_skip = 0.25 / (sigma**2 + 0.25)
        c_out = sigma * 0.5 / (sigma**2 + 0.25).sqrt()
        c_in = 1 / (sigma**2 + 0.25).sqrt()
        return c_skip * x + c_out * raw_network(c_in * x, sigma.log() / 4)

    latents = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    expected, _ = reference_edm_sampler(denoiser, latents, 12)
    scheduler = EDMHeunScheduler(prediction_type="epsilon", timestep_type="c_noise")
    scheduler.set_timesteps(12)
    sample = latents.double() * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = raw_network(scheduler.scale_model_input(sample, t), t)
        sample = scheduler.step(output, t, sample).prev_sample
    torch.testing.assert_close(sample, expected, rtol=1e-6, atol=1e-7)


def test_step_returns_tuple_and_denoised_estimate():
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(3)
    sample = torch.ones(1, 1, 2, 2, dtype=torch.float64) * 80
    t = scheduler.timesteps[0]
    denoised = linear_denoiser()(sample, t)
    prev, pred = scheduler.step(denoised, t, sample, return_dict=False)
    assert torch.equal(pred, denoised)
    torch.testing.assert_close(prev, sample + (scheduler.sigmas[1] - 80) * (sample - denoised) / 80)


def test_add_noise_takes_continuous_sigmas():
    scheduler = EDMHeunScheduler()
    x, noise = torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 2.0)
    sigmas = torch.tensor([0.0123, 1.5, 77.7])
    noisy = scheduler.add_noise(x, noise, sigmas)
    torch.testing.assert_close(noisy, x + noise * sigmas.reshape(3, 1, 1, 1))
    torch.testing.assert_close(scheduler.add_noise(x, noise, 0.3), x + 0.6)
    with pytest.raises(ValueError, match="one value per sample"):
        scheduler.add_noise(x, noise, torch.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        scheduler.add_noise(x, noise, torch.tensor([-1.0, 1.0, 1.0]))


def test_begin_index_and_len():
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(5)
    scheduler.set_begin_index(2)
    sample = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    scheduler.scale_model_input(sample, scheduler.timesteps[2])
    assert scheduler.step_index == 2 and len(scheduler) == 1000


@pytest.mark.parametrize("kwargs,match", BAD_SHARED_SETTINGS + [
    (dict(sigma_min=-1.0), "sigma_min"),
    (dict(sigma_min=80.0, sigma_max=80.0), "sigma_max"),
    (dict(sigma_data=0.0), "sigma_data"),
    (dict(prediction_type="flow"), "prediction_type.*'sample', 'epsilon', 'v_prediction'"),
    (dict(timestep_type="t"), "timestep_type.*'sigma', 'c_noise'"),
])
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EDMHeunScheduler(**kwargs)


@pytest.mark.parametrize("kwargs,match", BAD_SET_TIMESTEPS_ARGUMENTS + [
    (dict(sigmas=[3.0, 1.0, 1.0]), "strictly decreasing"),
])
def test_bad_set_timesteps_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EDMHeunScheduler().set_timesteps(**kwargs)


def test_custom_sigmas_are_noise_levels():
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(sigmas=[10.0, 1.0, 0.1, 0.0])
    assert scheduler.num_inference_steps == 3
    assert scheduler.timesteps.tolist() == [10.0, 1.0, 1.0, 0.1, 0.1]


def test_too_many_steps_is_an_error():
    assert_step_after_the_last_is_rejected(EDMHeunScheduler())
