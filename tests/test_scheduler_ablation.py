"""EDMAblationScheduler: the official ablation sampler's numbers (conformance sets 02 and 03), an independent
transcription of the sampler (edm_spec.md 1.2), closed-form ODE solutions, equality with EDMHeunScheduler,
configuration and bad input."""

import math

import numpy as np
import pytest
import torch

from diffusers_edm.preconditioning import VPPreconditioning, make_preconditioning
from diffusers_edm.schedulers.scheduling_edm_ablation import EDMAblationScheduler
from diffusers_edm.schedulers.scheduling_edm_heun import EDMHeunScheduler

from .helpers import (
    BAD_SET_TIMESTEPS_ARGUMENTS,
    BAD_SHARED_SETTINGS,
    assert_config_round_trip,
    assert_step_after_the_last_is_rejected,
    conformance,
    linear_denoiser,
    mixture_denoiser,
    run_scheduler_loop,
)

ABLATION_RUNS = [run["id"] for run in conformance("02_sampler_deterministic")[0]["ablation"]["runs"]]


def _scheduler_from_official_kwargs(kwargs: dict) -> tuple[EDMAblationScheduler, int]:
    """The scheduler for the official `ablation_sampler(**kwargs)` (json spelling), and its number of steps."""
    s_tmax = kwargs["S_max"]
    scheduler = EDMAblationScheduler(
        sigma_min=kwargs["sigma_min"], sigma_max=kwargs["sigma_max"], rho=kwargs["rho"], solver=kwargs["solver"],
        discretization=kwargs["discretization"], schedule=kwargs["schedule"], scaling=kwargs["scaling"],
        epsilon_s=kwargs["epsilon_s"], C_1=kwargs["C_1"], C_2=kwargs["C_2"], M=kwargs["M"], alpha=kwargs["alpha"],
        s_churn=kwargs["S_churn"], s_tmin=kwargs["S_min"], s_tmax=None if s_tmax == "inf" else s_tmax,
        s_noise=kwargs["S_noise"],
    )
    return scheduler, kwargs["num_steps"]


def float32_denoiser(x, sigma):
    """The linear denoiser of N(0, 0.5²) data evaluated in float32, as in the spec's cross-check (edm_spec.md 1.5)."""
    sigma = torch.as_tensor(sigma).to(torch.float32)
    return x.to(torch.float32) * (0.25 / (sigma**2 + 0.25))


def reference_ablation_sampler(denoise, latents, num_steps, discretization, schedule, scaling, solver="heun",
                               alpha=1.0, sigma_min=None, sigma_max=None, rho=7.0, epsilon_s=1e-3, s_churn=0.0,
                               s_tmin=0.0, s_tmax=math.inf, s_noise=1.0, net=None, noise_fn=None):
    """edm_spec.md 1.2 transcribed with Python floats ("edm", "vp" and "ve" discretisations). `noise_fn(shape)` is
    called once per step, as the official sampler draws ε; where γ_i = 0 the step is not churned (t̂_i = t_i)."""
    net_min, net_max = (0.0, math.inf) if net is None else (net.sigma_min, net.sigma_max)

    def round_sigma(value):
        return value if net is None else net.round_sigma(torch.tensor(value, dtype=torch.float64)).item()

    def vp(beta_d, beta_min):
        sigma = lambda t: math.sqrt(math.expm1(0.5 * beta_d * t**2 + beta_min * t))  # noqa: E731
        derivative = lambda t: 0.5 * (beta_min + beta_d * t) * (sigma(t) + 1 / sigma(t))  # noqa: E731
        inverse = lambda s: (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(s**2)) - beta_min) / beta_d  # noqa: E731
        return sigma, derivative, inverse

    defaults = {"vp": (vp(19.9, 0.1)[0](epsilon_s), vp(19.9, 0.1)[0](1.0)), "ve": (0.02, 100.0), "edm": (0.002, 80.0)}
    sigma_min = max(defaults[discretization][0] if sigma_min is None else sigma_min, net_min)
    sigma_max = min(defaults[discretization][1] if sigma_max is None else sigma_max, net_max)
    beta_d = 2 * (math.log1p(sigma_min**2) / epsilon_s - math.log1p(sigma_max**2)) / (epsilon_s - 1)
    beta_min = math.log1p(sigma_max**2) - 0.5 * beta_d
    ramp = [i / (num_steps - 1) for i in range(num_steps)]
    if discretization == "vp":
        levels = [vp(beta_d, beta_min)[0](1 + r * (epsilon_s - 1)) for r in ramp]
    elif discretization == "ve":
        levels = [math.sqrt(sigma_max**2 * (sigma_min**2 / sigma_max**2) ** r) for r in ramp]
    else:
        max_root, min_root = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = [(max_root + r * (min_root - max_root)) ** rho for r in ramp]
    if schedule == "vp":
        sigma, sigma_derivative, sigma_inverse = vp(beta_d, beta_min)
    elif schedule == "ve":
        sigma, sigma_derivative, sigma_inverse = math.sqrt, (lambda t: 0.5 / math.sqrt(t)), (lambda s: s**2)
    else:
        sigma, sigma_derivative, sigma_inverse = (lambda t: t), (lambda t: 1.0), (lambda s: s)
    if scaling == "vp":
        scale = lambda t: 1 / math.sqrt(1 + sigma(t) ** 2)  # noqa: E731
        scale_derivative = lambda t: -sigma(t) * sigma_derivative(t) * scale(t) ** 3  # noqa: E731
    else:
        scale, scale_derivative = (lambda t: 1.0), (lambda t: 0.0)

    def slope(x, t):  # dx/dt of Eq. 4
        denoised = denoise(x / scale(t), sigma(t)).to(torch.float64)
        return (sigma_derivative(t) / sigma(t) + scale_derivative(t) / scale(t)) * x - (
            sigma_derivative(t) * scale(t) / sigma(t)) * denoised

    times = [sigma_inverse(round_sigma(level)) for level in levels] + [0.0]
    x = latents.to(torch.float64) * (sigma(times[0]) * scale(times[0]))
    evaluations = 0
    for i in range(num_steps):
        t_cur, t_next = times[i], times[i + 1]
        gamma = min(s_churn / num_steps, math.sqrt(2) - 1) if s_tmin <= sigma(t_cur) <= s_tmax else 0.0
        t_hat = sigma_inverse(round_sigma(sigma(t_cur) * (1 + gamma))) if gamma > 0 else t_cur
        eps = noise_fn(x.shape) if noise_fn is not None else torch.zeros_like(x)
        churn = math.sqrt(max(sigma(t_hat) ** 2 - sigma(t_cur) ** 2, 0.0)) * scale(t_hat) * s_noise
        x_hat = scale(t_hat) / scale(t_cur) * x + churn * eps
        h = t_next - t_hat
        d = slope(x_hat, t_hat)
        evaluations += 1
        if solver == "euler" or i == num_steps - 1:
            x = x_hat + h * d
        else:
            d_prime = slope(x_hat + alpha * h * d, t_hat + alpha * h)
            evaluations += 1
            x = x_hat + h * ((1 - 1 / (2 * alpha)) * d + 1 / (2 * alpha) * d_prime)
    return x, evaluations


# --- the official ablation sampler (conformance set 02 (c)) ---------------------------------------------------------


@pytest.mark.parametrize("run_id", ABLATION_RUNS)
def test_ablation_run_matches_official(run_id):
    """Every `ablation.<id>` run with the net range and round_sigma of the named preconditioning. README 02
    tolerances: linear denoiser rtol 1e-10; ideal / gmm atol 1e-9 + rtol 1e-10 (+0 for the RNG: every run has
    max_abs_diff_vs_zero_eps = 0, and this scheduler adds no noise where γ = 0); levels as the grids, rtol 1e-12."""
    meta, tensors = conformance("02_sampler_deterministic")
    run = next(r for r in meta["ablation"]["runs"] if r["id"] == run_id)
    net = make_preconditioning(run["net_range"])
    assert (net.sigma_min, net.sigma_max) == (run["net_sigma_min"], float(run["net_sigma_max"]))
    scheduler, num_steps = _scheduler_from_official_kwargs(run["kwargs"])
    dataset = tensors["ideal.dataset"]
    cases = [("linear", linear_denoiser(0.5), "linear.latents", 0.0), ("ideal", mixture_denoiser(dataset, 0.0),
             "ideal.latents", 1e-9), ("gmm", mixture_denoiser(dataset, 0.1), "ideal.latents", 1e-9)]
    for variant, denoise, latents_key, atol in cases:
        sample, called = run_scheduler_loop(scheduler, denoise, tensors[latents_key], num_steps, net=net)
        assert sample.dtype == torch.float64 and len(called) == run["nfe"]
        torch.testing.assert_close(sample, tensors[f"ablation.{run_id}.{variant}"], rtol=1e-10, atol=atol)
        torch.testing.assert_close(torch.tensor(called, dtype=torch.float64),
                                   tensors[f"ablation.{run_id}.denoiser_sigmas"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("variant,tau", [("ideal", 0.0), ("gmm", 0.1)])
def test_stochastic_run_reproduces_official_random_stream(variant, tau):
    """03_sampler_stochastic, run cond.ablation_heun_edm_linear_none_N10_netedm_S_churn40: per-image generators seeded
    like generate.py draw the latents, the class, then one float64 ε per step (`official_noise_stream`)."""
    _, tensors = conformance("03_sampler_stochastic")
    prefix = "cond.ablation_heun_edm_linear_none_N10_netedm_S_churn40."
    generators = [torch.Generator().manual_seed(seed % 2**32) for seed in tensors["seeds"].tolist()]
    latents = torch.stack([torch.randn([3, 4, 4], generator=g) for g in generators])
    classes = torch.stack([torch.randint(4, size=[], generator=g) for g in generators])
    assert torch.equal(latents, tensors[prefix + "latents"]) and torch.equal(classes, tensors[prefix + "class_idx"])
    denoise = mixture_denoiser(tensors["dataset"], tau, torch.eye(4)[classes], tensors["dataset_labels"])
    scheduler = EDMAblationScheduler(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)
    sample, called = run_scheduler_loop(scheduler, denoise, latents, 10, generator=generators,
                                        official_noise_stream=True)
    torch.testing.assert_close(sample, tensors[prefix + f"images_{variant}"], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(torch.tensor(called, dtype=torch.float64), tensors[prefix + "denoiser_sigmas"],
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("settings,expected", [
    (dict(solver="heun", discretization="edm", schedule="linear", scaling="none", num_steps=18), 0.5276246666908264),
    (dict(solver="heun", discretization="ve", schedule="ve", scaling="none", num_steps=18), 0.2025478116842728),
    (dict(solver="heun", discretization="iddpm", schedule="linear", scaling="none", num_steps=18), 0.5081859230995178),
])
def test_spec_numbers_with_float32_denoiser(settings, expected):
    """edm_spec.md 1.5 / 02 json `spec_crosscheck_float32_denoiser` ("official"): float32 linear denoiser, latent 1,
    net range (0, ∞) with identity round_sigma."""
    num_steps = settings.pop("num_steps")
    sample, _ = run_scheduler_loop(EDMAblationScheduler(**settings), float32_denoiser, torch.ones(1, 1, 1, 1),
                                   num_steps)
    assert sample.item() == pytest.approx(expected, rel=1e-10)


def test_euler_vp_512_steps_matches_official_up_to_its_round_off_noise():
    """The official euler/vp/vp/vp run with 512 steps gives 0.49954762185 (after torch.manual_seed(0)): there its
    σ⁻¹(σ(t)) round trip leaves a positive churn coefficient on a few unchurned steps, and that noise moves the result
    by ~6e-8 (02 rng_note). This scheduler takes t̂ = t exactly where γ = 0, so it gives the noise-free value, which is
    the spec's 0.49954756."""
    meta, _ = conformance("02_sampler_deterministic")
    official = meta["spec_crosscheck_float32_denoiser"]["results"]["ablation_euler_vp_vp_vp_512"]
    scheduler = EDMAblationScheduler(solver="euler", discretization="vp", schedule="vp", scaling="vp")
    sample, called = run_scheduler_loop(scheduler, float32_denoiser, torch.ones(1, 1, 1, 1), 512)
    assert len(called) == 512
    assert sample.item() == pytest.approx(official["official"], abs=1.2e-7)
    assert sample.item() == pytest.approx(official["spec_report"], abs=1e-8)


# --- an independent transcription, closed forms and EDMHeunScheduler ------------------------------------------------


@pytest.mark.parametrize("settings,net_name", [
    (dict(discretization="vp", schedule="vp", scaling="vp", s_churn=30, s_noise=1.007), "vp"),  # γ > 0 everywhere
    (dict(discretization="edm", schedule="linear", scaling="vp", s_churn=40, s_tmin=0.05, s_tmax=50), "edm"),
    (dict(discretization="ve", schedule="ve", scaling="none", solver="euler", s_churn=80, s_tmin=0.05), "ve"),
    (dict(discretization="edm", schedule="linear", scaling="none", s_churn=40, s_tmin=0.05, s_tmax=50), "iddpm"),
    (dict(discretization="edm", schedule="vp", scaling="vp", alpha=0.5, s_churn=10), "vp"),
])
def test_churned_sampling_equals_transcribed_sampler(settings, net_name):
    """Pathwise: the official random stream (one float64 ε per step) through the scheduler and through spec 1.2
    written out with Python floats give the same samples."""
    _, tensors = conformance("02_sampler_deterministic")
    denoise = mixture_denoiser(tensors["ideal.dataset"], 0.1)
    latents, net, num_steps = tensors["ideal.latents"], make_preconditioning(net_name), 12
    sample, called = run_scheduler_loop(EDMAblationScheduler(**settings), denoise, latents, num_steps, net=net,
                                        generator=torch.Generator().manual_seed(3), official_noise_stream=True)
    reference_generator = torch.Generator().manual_seed(3)
    expected, evaluations = reference_ablation_sampler(
        denoise, latents, num_steps, net=net, **settings,
        noise_fn=lambda shape: torch.randn(shape, generator=reference_generator, dtype=torch.float64))
    assert len(called) == evaluations
    torch.testing.assert_close(sample, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("settings,order", [
    (dict(schedule="linear", scaling="vp"), 2),
    (dict(schedule="vp", scaling="vp", sigma_min=1e-4), 2),
    (dict(schedule="vp", scaling="vp", sigma_min=1e-4, alpha=0.5), 2),
    (dict(schedule="vp", scaling="vp", sigma_min=1e-4, solver="euler"), 1),
    (dict(schedule="ve", scaling="none", sigma_min=1e-4), 2),
])
def test_convergence_to_closed_form_ode_solution(settings, order):
    """For N(0, σ_d²) data every σ(t), s(t) gives the same ODE map: x(0) = x̂ σ_d / √(σ_max² + σ_d²) per unit latent,
    σ_max = σ(t_0). The error must fall as N^-order (a wrong σ'/σ, s'/s or α term breaks this). σ_min = 1e-4 keeps
    the error of the final step from σ_min to 0 (where σ ∝ √t makes Euler inexact) below the discretisation error."""
    latents = torch.ones(1, 1, 1, 1)
    steps, errors = [16, 32, 64, 128], []
    for num_steps in steps:
        scheduler = EDMAblationScheduler(**settings)
        sample, _ = run_scheduler_loop(scheduler, linear_denoiser(0.5), latents, num_steps)
        sigma_max = scheduler.timesteps[0].item()
        errors.append(abs(sample.item() - sigma_max * 0.5 / math.sqrt(sigma_max**2 + 0.25)))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope == pytest.approx(-order, abs=0.3), (errors, slope)


@pytest.mark.parametrize("heun_settings", [
    dict(), dict(solver="euler"), dict(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003), dict(s_churn=5),
    dict(sigma_min=0.01, sigma_max=40.0, rho=5.0),
])
@pytest.mark.parametrize("official_noise_stream", [False, True])
@pytest.mark.parametrize("net_name", ["edm", "iddpm"])
def test_edm_settings_equal_edm_heun_scheduler(heun_settings, official_noise_stream, net_name):
    """solver heun/euler, discretization edm, schedule linear, scaling none, alpha 1 is Algorithm 2: same levels,
    same random draws and the same samples as EDMHeunScheduler (the correction level t̂ + α h equals t_{i+1} up to
    round-off, as in the official ablation sampler)."""
    latents = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise, net = linear_denoiser(0.5), make_preconditioning(net_name)
    results = []
    for scheduler in (EDMAblationScheduler(**heun_settings), EDMHeunScheduler(**heun_settings)):
        results.append(run_scheduler_loop(scheduler, denoise, latents, 10, net=net,
                                          generator=torch.Generator().manual_seed(1),
                                          official_noise_stream=official_noise_stream))
    (ours, our_levels), (heun, heun_levels) = results
    torch.testing.assert_close(torch.tensor(our_levels), torch.tensor(heun_levels), rtol=1e-14, atol=0)
    torch.testing.assert_close(ours, heun, rtol=1e-12, atol=1e-12)


# --- layout of the evaluations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver,evaluations", [("heun", lambda n: 2 * n - 1), ("euler", lambda n: n)])
@pytest.mark.parametrize("discretization,schedule,scaling", [
    ("edm", "linear", "none"), ("vp", "vp", "vp"), ("ve", "ve", "none"), ("iddpm", "linear", "none")])
def test_number_of_evaluations(solver, evaluations, discretization, schedule, scaling):
    scheduler = EDMAblationScheduler(solver=solver, discretization=discretization, schedule=schedule, scaling=scaling)
    assert scheduler.order == (2 if solver == "heun" else 1)
    for num_steps in (1, 2, 7):
        scheduler.set_timesteps(num_steps)
        assert len(scheduler.timesteps) == evaluations(num_steps) and scheduler.timesteps.dtype == torch.float64
        assert len(scheduler.sigmas) == len(scheduler.timesteps) + 1 and scheduler.sigmas[-1].item() == 0.0


@pytest.mark.parametrize("discretization,first_level", [
    ("edm", 80.0), ("ve", 100.0), ("vp", 152.16697028394637), ("iddpm", 80.2037)])
def test_single_step_starts_at_the_largest_level(discretization, first_level):
    schedule = {"vp": "vp", "ve": "ve"}.get(discretization, "linear")
    scheduler = EDMAblationScheduler(discretization=discretization, schedule=schedule)
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == pytest.approx([first_level], rel=1e-6)


def test_model_input_is_divided_by_the_scaling():
    """scale_model_input gives x / s(t) = x √(1 + σ(t)²) for the VP scaling at the evaluated σ(t)."""
    scheduler = EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp")
    scheduler.set_timesteps(5)
    sample = torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64)
    for t in scheduler.timesteps:
        expected = sample * math.sqrt(1 + t.item() ** 2)
        torch.testing.assert_close(scheduler.scale_model_input(sample, t), expected, rtol=1e-14, atol=0)
        sample = scheduler.step(torch.zeros_like(sample), t, sample).prev_sample


def test_init_noise_sigma_includes_step_zero_churn():
    """With S_noise = 1, x̂_0 = s(t̂_0)/s(t_0) x_0 + √(σ(t̂_0)² − σ(t_0)²) s(t̂_0) ε has standard deviation
    σ(t̂_0) s(t̂_0); without churn it is σ(t_0) s(t_0)."""
    settings = dict(discretization="vp", schedule="vp", scaling="vp")
    plain = EDMAblationScheduler(**settings)
    plain.set_timesteps(10)
    sigma_0 = plain.timesteps[0].item()
    assert plain.init_noise_sigma == pytest.approx(sigma_0 / math.sqrt(1 + sigma_0**2), rel=1e-14)
    churned = EDMAblationScheduler(**settings, s_churn=2.0)  # γ = 0.2 on every step
    churned.set_timesteps(10)
    sigma_hat = churned.timesteps[0].item()
    assert sigma_hat == pytest.approx(1.2 * sigma_0, rel=1e-12)
    assert churned.init_noise_sigma == pytest.approx(sigma_hat / math.sqrt(1 + sigma_hat**2), rel=1e-12)
    churned.set_timesteps(10, official_noise_stream=True)
    assert churned.init_noise_sigma == plain.init_noise_sigma


def test_no_noise_without_churn():
    """S_churn = 0 is deterministic and consumes no random numbers, even with the VP schedule."""
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    scheduler = EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp")
    latents = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    first, _ = run_scheduler_loop(scheduler, linear_denoiser(), latents, 12, generator=generator)
    second, _ = run_scheduler_loop(scheduler, linear_denoiser(), latents, 12)
    assert torch.equal(first, second) and torch.equal(generator.get_state(), state)


def test_float32_sample_stays_float32():
    scheduler = EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp")
    scheduler.set_timesteps(18)
    sample = torch.ones(1, 1, 2, 2) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        sample = scheduler.step(linear_denoiser()(scheduler.scale_model_input(sample, t), t), t, sample).prev_sample
    assert sample.dtype == torch.float32


def test_custom_sigmas_replace_the_discretization():
    scheduler = EDMAblationScheduler(solver="euler", schedule="vp", scaling="vp")
    scheduler.set_timesteps(sigmas=[50.0, 5.0, 0.5, 0.05, 0.0])
    assert scheduler.num_inference_steps == 4
    torch.testing.assert_close(scheduler.timesteps, torch.tensor([50.0, 5.0, 0.5, 0.05], dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_index_for_timestep_starts_at_a_predictor():
    """Heun layout [pred_0, corr_0, pred_1, …]: a run may start at a predictor, never at a correction (it needs the
    predictor's state); where levels repeat (iDDPM snapping: t_0 = t_1 at N = 256) the first predictor is taken."""
    scheduler = EDMAblationScheduler()
    scheduler.set_timesteps(5)
    levels = scheduler.timesteps
    for k in range(0, len(levels), 2):
        assert scheduler.index_for_timestep(levels[k]) == k
    for k in range(1, len(levels), 2):
        if levels[k] == levels[k + 1]:  # t̂_k + h_k landed exactly on t_{k+1}
            assert scheduler.index_for_timestep(levels[k]) == k + 1
        else:
            with pytest.raises(ValueError, match="not the level of a step"):
                scheduler.index_for_timestep(levels[k])
    with pytest.raises(ValueError, match="not the level of a step"):
        scheduler.index_for_timestep(1234.5)
    euler = EDMAblationScheduler(solver="euler")
    net = make_preconditioning("iddpm")
    euler.set_timesteps(256, net_sigma_min=net.sigma_min, net_sigma_max=net.sigma_max, round_sigma=net.round_sigma)
    assert euler.timesteps[0] == euler.timesteps[1] and euler.index_for_timestep(euler.timesteps[0]) == 0


def test_begin_index_and_return_tuple():
    scheduler = EDMAblationScheduler()
    scheduler.set_timesteps(4)
    scheduler.set_begin_index(2)
    sample = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    t = scheduler.timesteps[2]
    prev, denoised = scheduler.step(0.5 * sample, t, sample, return_dict=False)
    assert scheduler.step_index == 3 and torch.equal(denoised, 0.5 * sample)
    assert len(scheduler) == 1000


def test_too_many_steps_is_an_error():
    assert_step_after_the_last_is_rejected(EDMAblationScheduler(solver="euler"))


# --- configuration and bad input ----------------------------------------------------------------------------------


def test_config_round_trip_has_no_infinity(tmp_path):
    scheduler = EDMAblationScheduler(solver="euler", discretization="vp", schedule="vp", scaling="vp", s_churn=30,
                                     s_tmin=0.01, s_noise=1.007)
    saved, loaded = assert_config_round_trip(scheduler, tmp_path, 12, net_sigma_min=VPPreconditioning().sigma_min)
    assert saved["s_tmax"] is None and saved["sigma_min"] is None and saved["sigma_max"] is None
    assert loaded.order == 1


@pytest.mark.parametrize("kwargs,match", BAD_SHARED_SETTINGS + [
    (dict(discretization="karras"), "discretization.*'vp', 've', 'iddpm', 'edm'"),
    (dict(schedule="cosine"), "schedule.*'vp', 've', 'linear'"),
    (dict(scaling="ve"), "scaling.*'vp', 'none'"),
    (dict(prediction_type="epsilon"), "prediction_type.*'sample'"),
    (dict(timestep_type="c_noise"), "timestep_type.*'sigma'"),
    (dict(num_train_timesteps=0), "num_train_timesteps"),
    (dict(sigma_max=math.inf), "sigma_max"),
    (dict(sigma_min=5.0, sigma_max=1.0), "sigma_max must be larger"),
    (dict(epsilon_s=1.0), "epsilon_s"),
    (dict(C_1=0.0), "C_1"),
    (dict(C_2=-1.0), "C_2"),
    (dict(M=1), "M must be an integer"),
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=1.5), "alpha"),
    (dict(s_tmin=-1.0), "s_tmin"),
    (dict(schedule="vp", sigma_min=0.1, sigma_max=100.0), "No VP schedule"),
])
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EDMAblationScheduler(**kwargs)


@pytest.mark.parametrize("kwargs,match", BAD_SET_TIMESTEPS_ARGUMENTS + [
    (dict(num_inference_steps=5, net_sigma_min=100.0), "noise range"),
])
def test_bad_set_timesteps_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EDMAblationScheduler().set_timesteps(**kwargs)


def test_iddpm_discretization_needs_a_level_in_range():
    with pytest.raises(ValueError, match="No iDDPM level"):
        EDMAblationScheduler(discretization="iddpm", sigma_min=1.0001, sigma_max=1.0002)
