# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""EDMPipeline with any EDM-family scheduler (issue 10): every supported scheduler converges to the probability-flow ODE
solution EDM's Heun sampler converges to, evaluates the denoiser at the scheduler's own σ, receives an output that its
own preconditioning turns back into D, refuses what it cannot run; and the diffusers conventions `interrupt`,
`num_timesteps`, the check of the unet, and `torch.compile` without graph breaks or recompilation."""

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.pipelines.scheduler_families import SUPPORTED_SCHEDULERS

from .helpers import randomize_, tiny_unet_kwargs

DATA_STD = 0.7
"""Standard deviation s of the Gaussian data of `GaussianDenoiser` (deliberately not the schedulers' σ_data)."""


class GaussianDenoiser(ModelMixin, ConfigMixin):
    """The exact denoiser of N(0, s² I) data, D(x; σ) = x s² / (σ² + s²), with the interface of an EDM-preconditioned
    network (σ range [0, ∞), identity round_sigma). It records the input x, σ and output of every call."""

    sigma_min, sigma_max = 0.0, math.inf

    @register_to_config
    def __init__(self, sample_size: int = 4, in_channels: int = 1, num_class_labels: int = 0,
                 data_std: float = DATA_STD):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))  # gives the model a device
        self.calls = []

    def round_sigma(self, sigma):
        return sigma

    def forward(self, sample, sigma, class_labels=None, return_dict=True):
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        variance = self.config.data_std**2
        denoised = (sample.to(torch.float64) * variance / (sigma**2 + variance)).to(torch.float32)
        self.calls.append((sample.to(torch.float64), float(sigma), denoised))
        return (denoised,)


def ode_solution(x_start: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """x(0) of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ for N(0, s² I) data: x(σ) ∝ √(σ² + s²)."""
    return x_start.to(torch.float64) * DATA_STD / math.sqrt(sigma_start**2 + DATA_STD**2)


EDM_CONFIG = EDMHeunScheduler().config
"""The config a default EDMPipeline holds (prediction_type="sample"), from which the schedulers below are built."""

SCHEDULERS = [
    # (id, factory, order of the solver)
    ("edm-heun", lambda: EDMHeunScheduler.from_config(EDM_CONFIG), 2),
    ("edm-heun-epsilon", lambda: EDMHeunScheduler.from_config(EDM_CONFIG, prediction_type="epsilon"), 2),
    ("edm-heun-v", lambda: EDMHeunScheduler.from_config(EDM_CONFIG, prediction_type="v_prediction",
                                                        sigma_data=0.3), 2),
    ("edm-heun-c-noise", lambda: EDMHeunScheduler.from_config(EDM_CONFIG, timestep_type="c_noise"), 2),
    ("edm-ablation-vp", lambda: EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp"), 2),
    ("edm-euler", lambda: EDMEulerScheduler.from_config(EDM_CONFIG), 1),
    ("edm-euler-epsilon", lambda: EDMEulerScheduler.from_config(EDM_CONFIG, prediction_type="epsilon"), 1),
    ("edm-euler-v", lambda: EDMEulerScheduler.from_config(EDM_CONFIG, prediction_type="v_prediction",
                                                          sigma_data=0.3), 1),
    ("edm-dpm-epsilon", lambda: EDMDPMSolverMultistepScheduler.from_config(EDM_CONFIG, prediction_type="epsilon"), 2),
    ("edm-dpm-v", lambda: EDMDPMSolverMultistepScheduler.from_config(EDM_CONFIG, prediction_type="v_prediction"), 2),
    ("dpm", lambda: DPMSolverMultistepScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True), 2),
    ("dpm-epsilon", lambda: DPMSolverMultistepScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                                    prediction_type="epsilon"), 2),
    ("dpm-v", lambda: DPMSolverMultistepScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                              prediction_type="v_prediction"), 2),
    ("euler", lambda: EulerDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True), 1),
    ("euler-epsilon", lambda: EulerDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                                 prediction_type="epsilon"), 1),
    ("euler-v", lambda: EulerDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                           prediction_type="v_prediction"), 1),
    ("heun-discrete-epsilon", lambda: HeunDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                                        prediction_type="epsilon"), 2),
    ("heun-discrete-v", lambda: HeunDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                                  prediction_type="v_prediction"), 2),
]
SCHEDULER_PARAMS = [pytest.param(factory, order, id=name) for name, factory, order in SCHEDULERS]


def gaussian_pipeline(scheduler) -> EDMPipeline:
    pipe = EDMPipeline(unet=GaussianDenoiser(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


LATENTS = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make_scheduler,order", SCHEDULER_PARAMS)
def test_every_scheduler_converges_to_the_ode_solution_of_edm_heun(make_scheduler, order):
    """With growing N each scheduler's result approaches x(0) = x_T s / √(σ_max² + s²), the exact solution EDM's Heun
    sampler converges to (x_T = 80 n), at the rate of its order. The diffusers schedulers start from
    n · init_noise_sigma (e.g. √(80² + 1) n), 8e-5 away in relative terms, which bounds their agreement."""
    heun_limit = ode_solution(LATENTS * 80.0, 80.0)
    errors = []
    for num_steps in (32, 128, 512):
        pipe = gaussian_pipeline(make_scheduler())
        sample = pipe(batch_size=2, latents=LATENTS, num_inference_steps=num_steps, output_type="latent").images
        x_start, sigma_start, _ = pipe.unet.calls[0]
        own_limit = ode_solution(x_start, sigma_start)  # the solution from where this scheduler starts
        errors.append(((sample.to(torch.float64) - own_limit).abs().max() / own_limit.abs().max()).item())
        distance_to_heun = ((sample.to(torch.float64) - heun_limit).abs().max() / heun_limit.abs().max()).item()
    assert errors[0] > errors[1] > errors[2]
    # Euler's error falls ~4x per 4x steps, 2nd-order solvers' ~16x (the ρ = 7 schedule is not uniform in σ).
    assert errors[2] / errors[1] < (0.3 if order == 1 else 0.1)
    assert distance_to_heun < (6e-3 if order == 1 else 2e-4)


@pytest.mark.parametrize("make_scheduler,order", SCHEDULER_PARAMS)
def test_the_denoiser_runs_at_the_schedulers_sigma_and_its_output_converts_back_exactly(make_scheduler, order):
    """D is evaluated at scheduler.sigmas[i] for evaluation i, and the scheduler's own preconditioning of the output
    the pipeline converted D into returns D (up to the rounding of its float32 arithmetic)."""
    scheduler = make_scheduler()
    pipe = gaussian_pipeline(scheduler)
    recovered = []  # the scheduler's own denoised estimate at each evaluation
    # Multistep DPM-Solver++ computes it in convert_model_output, the others return it from step().
    method = "convert_model_output" if hasattr(scheduler, "convert_model_output") else "step"
    original = getattr(scheduler, method)

    def record(*args, **kwargs):
        result = original(*args, **kwargs)
        recovered.append(result if method == "convert_model_output" else result[1])
        return result

    setattr(scheduler, method, record)
    pipe(batch_size=2, latents=LATENTS, num_inference_steps=7, output_type="latent")
    calls = pipe.unet.calls
    assert pipe.num_timesteps == len(scheduler.timesteps) == len(calls) == len(recovered)
    assert [sigma for _, sigma, _ in calls] == scheduler.sigmas[: len(calls)].tolist()
    for (x, sigma, denoised), own in zip(calls, recovered):
        tolerance = 8 * torch.finfo(torch.float32).eps * max(x.abs().max().item(), 1.0)
        torch.testing.assert_close(own.to(torch.float64), denoised.to(torch.float64), rtol=0, atol=tolerance)


def test_raw_network_modes_of_edm_heun_keep_the_official_noise_stream():
    """EDM's sampler in "epsilon" and "v_prediction" modes (the pipeline converts D to ±F in float64) samples what it
    samples in "sample" mode, churn and seeds included, up to float64 round-off."""
    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3)), 0, 0.2).eval()
    results = []
    for prediction_type in ("sample", "epsilon", "v_prediction"):
        pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler(prediction_type=prediction_type, s_churn=20))
        pipe.set_progress_bar_config(disable=True)
        results.append(pipe(seeds=[3, 4], num_inference_steps=6, output_type="latent").images)
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=1e-12)


def test_compatibles_are_the_schedulers_the_pipeline_runs():
    """`_compatibles` names exactly the schedulers EDMPipeline runs (diffusers resolves them all, EDM's own included,
    as the package names them in diffusers' namespace), and each runs in the pipeline when built from the pipeline's
    config, except
    EDMDPMSolverMultistepScheduler, which does not implement the "sample" mode the config names and is refused with
    the fix (see test_what_cannot_run_is_refused_naming_what_can)."""
    for scheduler_class in (EDMHeunScheduler, EDMAblationScheduler):
        assert set(scheduler_class._compatibles) == set(SUPPORTED_SCHEDULERS) - {scheduler_class.__name__}
    assert {cls.__name__ for cls in EDMHeunScheduler().compatibles} == set(SUPPORTED_SCHEDULERS)
    for scheduler_class in EDMHeunScheduler().compatibles:
        config = EDM_CONFIG if scheduler_class is not EDMDPMSolverMultistepScheduler else {**EDM_CONFIG,
                                                                                          "prediction_type": "epsilon"}
        pipe = gaussian_pipeline(scheduler_class.from_config(config))
        assert pipe(batch_size=2, num_inference_steps=3, output_type="latent").images.shape == (2, 1, 4, 4)


def test_what_cannot_run_is_refused_naming_what_can():
    pipe = gaussian_pipeline(DDIMScheduler())
    with pytest.raises(ValueError, match=r"cannot run a DDIMScheduler.*one of EDMHeunScheduler, EDMAblationScheduler,"
                                         r" EDMEulerScheduler, .*HeunDiscreteScheduler, DPMSolverMultistepScheduler"):
        pipe(num_inference_steps=2)
    pipe.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    with pytest.raises(ValueError, match="cannot run prediction_type='flow_prediction'"):
        pipe(num_inference_steps=2)
    pipe.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True)
    with pytest.raises(ValueError, match="flow-matching sigmas"):
        pipe(num_inference_steps=2)
    pipe.scheduler = EulerDiscreteScheduler()
    with pytest.raises(ValueError, match="sigmas \\(custom noise levels\\) need EDMHeunScheduler"):
        pipe(sigmas=[10.0, 1.0])
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        pipe(num_inference_steps=0)


def test_sigma_outside_the_network_range_is_refused_and_edm_heun_clamps():
    """A VE network supports σ in [0.02, 100]: EDM's sampler clamps its schedule to it, a diffusers scheduler whose σ
    leaves it is refused with the fix, and one configured inside it runs."""
    pipe = gaussian_pipeline(EDMHeunScheduler())
    pipe.unet.sigma_min, pipe.unet.sigma_max = 0.02, 100.0
    pipe(num_inference_steps=4, output_type="latent")
    assert min(sigma for _, sigma, _ in pipe.unet.calls) == pytest.approx(0.02)
    pipe.scheduler = EDMEulerScheduler.from_config(EDM_CONFIG)
    with pytest.raises(ValueError, match=r"The EDMEulerScheduler evaluates the unet at σ = 0.002, outside the range"
                                         r" \[0.02, 100\] it supports.*sigma_min=.*EDMHeunScheduler"):
        pipe(num_inference_steps=4)
    pipe.scheduler = EulerDiscreteScheduler.from_config(EDM_CONFIG)  # the linear betas' σ reach 157
    with pytest.raises(ValueError, match=r"at σ = 157.*use_karras_sigmas=True"):
        pipe(num_inference_steps=4)
    pipe.scheduler = EDMEulerScheduler.from_config(EDM_CONFIG, sigma_min=0.02)
    pipe(num_inference_steps=4, output_type="latent")


def test_seeds_and_callbacks_work_with_diffusers_schedulers():
    """seeds= gives per-image generators (an image does not depend on its batch), also for the stochastic
    SDE-DPM-Solver++, whose noise comes from them; the callback sees and may replace the scheduler's sample."""
    pipe = gaussian_pipeline(DPMSolverMultistepScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                                     algorithm_type="sde-dpmsolver++"))
    batch = pipe(seeds=[5, 6], num_inference_steps=6, output_type="latent").images
    single = pipe(seeds=[6], num_inference_steps=6, output_type="latent").images
    torch.testing.assert_close(batch[1:], single)
    steps = []
    pipe(seeds=[5], num_inference_steps=6, callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw)
    assert steps == list(range(6))
    zeroed = pipe(seeds=[5], num_inference_steps=6, output_type="latent",
                  callback_on_step_end=lambda p, i, t, kw: {"latents": torch.zeros_like(kw["latents"])}).images
    assert torch.equal(zeroed, torch.zeros_like(zeroed))


# --- diffusers conventions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["interrupt", "_interrupt"])
def test_interrupt_from_a_callback_stops_before_the_next_evaluation(attribute):
    pipe = gaussian_pipeline(EDMHeunScheduler())
    assert pipe.num_timesteps is None and pipe.interrupt is False
    seen = {}

    def stop_after_three(pipeline, i, t, callback_kwargs):
        seen[i] = callback_kwargs["latents"]
        if i == 2:
            setattr(pipeline, attribute, True)
        return callback_kwargs

    sample = pipe(num_inference_steps=6, callback_on_step_end=stop_after_three, output_type="latent").images
    assert len(pipe.unet.calls) == 3 and list(seen) == [0, 1, 2] and torch.equal(sample, seen[2])
    assert pipe.interrupt is True and pipe.num_timesteps == 11
    pipe(num_inference_steps=6, output_type="latent")  # each call starts uninterrupted
    assert pipe.interrupt is False and len(pipe.unet.calls) == 3 + 11


def test_a_unet_that_is_not_an_edm_denoiser_is_a_type_error_naming_the_argument():
    raw = UNet2DModel(**tiny_unet_kwargs())
    with pytest.raises(TypeError, match=r"unet must be an EDMPreconditionedUNet2DModel .*got UNet2DModel.*backbone"):
        EDMPipeline(unet=raw, scheduler=EDMHeunScheduler())
    pipe = gaussian_pipeline(EDMHeunScheduler())
    pipe.unet = raw
    with pytest.raises(TypeError, match=r"unet must be an EDMPreconditionedUNet2DModel"):
        pipe(num_inference_steps=2)
    with pytest.raises(TypeError, match=r"guide_unet must be an EDMPreconditionedUNet2DModel"):
        EDMPipeline(unet=GaussianDenoiser(), scheduler=EDMHeunScheduler(), guide_unet=raw)


def test_compiled_unet_with_integer_labels_has_no_graph_break_and_no_recompilation():
    """torch.compile(pipe.unet): the pipeline checks the labels before sampling, so the model's own label checks are
    skipped while compiling; a second call with other seeds and labels reuses the compiled graph."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3)), 0, 0.2).eval()
    pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler(s_churn=10))
    pipe.set_progress_bar_config(disable=True)
    eager = pipe(seeds=[1, 2], class_labels=[0, 2], num_inference_steps=3, output_type="latent").images
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    compiled = pipe(seeds=[1, 2], class_labels=[0, 2], num_inference_steps=3, output_type="latent").images
    torch.testing.assert_close(compiled, eager)
    with torch._dynamo.config.patch(error_on_recompile=True):
        pipe(seeds=[3, 4], class_labels=[1, 1], num_inference_steps=3, output_type="latent")
        pipe(seeds=[7, 8], num_inference_steps=4, output_type="latent")  # drawn labels, another schedule
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_the_ablation_scheduler_takes_the_pipelines_saved_heun_config():
    from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler

    heun = EDMHeunScheduler(s_churn=10.0)
    ablation = EDMAblationScheduler.from_config(heun.config)
    assert ablation.resolved_timestep_type == "sigma" and ablation.config.s_churn == 10.0


def test_dpm_solver_from_the_pipelines_config_runs_as_epsilon_with_the_same_result():
    from diffusers import EDMDPMSolverMultistepScheduler

    from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel

    from .helpers import randomize_, tiny_unet_kwargs

    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs()), 0, 0.2).eval()
    results = []
    for extra in ({}, {"prediction_type": "epsilon"}):
        scheduler = EDMDPMSolverMultistepScheduler.from_config(EDMHeunScheduler().config, **extra)
        pipe = EDMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        results.append(pipe(seeds=[0, 1], num_inference_steps=6, output_type="latent").images)
        assert pipe.scheduler.config.prediction_type == "epsilon"
    assert torch.equal(results[0], results[1])
