# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The diffusers scheduler contract: diffusers' generic scheduler tests (`SchedulerCommonTest`, adapted as diffusers
adapts them for `EDMEulerScheduler`: timesteps taken from `scheduler.timesteps`), `add_noise` (one timestep for a
batch, timesteps in each prediction mode against `EDMEulerScheduler.add_noise`, explicit continuous σ), `from_config`
round trips through diffusers' EDM schedulers, and where a run started with `scale_model_input` begins."""

import inspect
import json
import warnings

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler
from diffusers_edm.preconditioning import make_preconditioning

from .helpers import linear_denoiser, run_scheduler_loop

# --- fixtures of diffusers' SchedulerCommonTest ----------------------------------------------------------------------

HEUN_CONFIG = {"num_train_timesteps": 256, "sigma_min": 0.002, "sigma_max": 80.0}  # as diffusers' EDMEuler test

SCHEDULERS = [
    pytest.param(EDMHeunScheduler, HEUN_CONFIG, id="heun"),
    pytest.param(EDMHeunScheduler, {**HEUN_CONFIG, "prediction_type": "epsilon"}, id="heun-epsilon"),
    pytest.param(EDMHeunScheduler, {**HEUN_CONFIG, "solver": "euler", "s_churn": 10.0}, id="heun-euler-churn"),
    pytest.param(EDMAblationScheduler, {"num_train_timesteps": 256}, id="ablation"),
    pytest.param(EDMAblationScheduler, {"num_train_timesteps": 256, "discretization": "vp", "schedule": "vp",
                                        "scaling": "vp", "s_churn": 10.0}, id="ablation-vp-churn"),
]


def dummy_sample() -> torch.Tensor:
    return torch.rand((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))


def dummy_sample_deter() -> torch.Tensor:
    num_elements = 4 * 3 * 8 * 8
    return (torch.arange(num_elements).reshape(3, 8, 8, 4) / num_elements).permute(3, 0, 1, 2)


def dummy_model(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """diffusers' test model: sample · t / (t + 1), with t broadcast over the sample."""
    t = torch.as_tensor(t).reshape(-1, *([1] * (sample.ndim - 1))).to(sample.device, sample.dtype)
    return sample * t / (t + 1)


def step_outputs(scheduler, sample: torch.Tensor, num_inference_steps: int, return_dict: bool = True):
    """One step at the first timestep after `set_timesteps`, with a seeded generator (as the common tests)."""
    scheduler.set_timesteps(num_inference_steps)
    timestep = scheduler.timesteps[0]
    residual = 0.1 * scheduler.scale_model_input(sample, timestep)
    return scheduler.step(residual, timestep, sample, generator=torch.manual_seed(0), return_dict=return_dict)


def saved_and_loaded(scheduler, folder):
    scheduler.save_config(folder)
    return type(scheduler).from_pretrained(folder)


# --- SchedulerCommonTest, adapted ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
@pytest.mark.parametrize("num_train_timesteps", [10, 50, 100, 1000])
def test_check_over_configs_num_train_timesteps(scheduler_class, config, num_train_timesteps, tmp_path):
    """check_over_configs (diffusers' test_timesteps): a saved and reloaded scheduler steps identically."""
    scheduler = scheduler_class(**{**config, "num_train_timesteps": num_train_timesteps})
    loaded = saved_and_loaded(scheduler, tmp_path)
    sample = dummy_sample()
    assert torch.equal(step_outputs(scheduler, sample, 10).prev_sample, step_outputs(loaded, sample, 10).prev_sample)
    assert len(scheduler) == len(loaded) == num_train_timesteps


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
@pytest.mark.parametrize("timestep_type", [None, "sigma", "c_noise"])
def test_check_over_configs_prediction_type(prediction_type, timestep_type, tmp_path):
    """check_over_configs (diffusers' test_prediction_type), for every prediction and timestep type."""
    scheduler = EDMHeunScheduler(**HEUN_CONFIG, prediction_type=prediction_type, timestep_type=timestep_type)
    loaded = saved_and_loaded(scheduler, tmp_path)
    sample = dummy_sample()
    assert torch.equal(step_outputs(scheduler, sample, 10).prev_sample, step_outputs(loaded, sample, 10).prev_sample)


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
@pytest.mark.parametrize("num_inference_steps", [1, 2, 10, 50])
def test_check_over_forward(scheduler_class, config, num_inference_steps, tmp_path):
    scheduler = scheduler_class(**config)
    loaded = saved_and_loaded(scheduler, tmp_path)
    sample = dummy_sample()
    output = step_outputs(scheduler, sample, num_inference_steps).prev_sample
    assert torch.equal(output, step_outputs(loaded, sample, num_inference_steps).prev_sample)


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_from_save_pretrained(scheduler_class, config, tmp_path):
    scheduler = scheduler_class(**config)
    loaded = saved_and_loaded(scheduler, tmp_path)
    sample = dummy_sample()
    output, new_output = (step_outputs(s, sample, 10).prev_sample for s in (scheduler, loaded))
    assert torch.sum(torch.abs(output - new_output)) < 1e-5


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_from_pretrained(scheduler_class, config, tmp_path):
    """As diffusers: the reloaded config equals the original without `_use_default_values`, which a scheduler built
    with some defaults holds and a just saved and loaded one does not."""
    scheduler = scheduler_class(**config)
    scheduler.save_pretrained(tmp_path)
    loaded = scheduler_class.from_pretrained(tmp_path)
    scheduler_config = dict(scheduler.config)
    del scheduler_config["_use_default_values"]
    assert scheduler_config == loaded.config
    assert "Infinity" not in (tmp_path / "scheduler_config.json").read_text()


@pytest.mark.parametrize("config", [HEUN_CONFIG, {}, {"prediction_type": "epsilon"}, {"prediction_type": "v_prediction",
                                    "timestep_type": "sigma", "s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0}])
def test_compatibles(config):
    """Every compatible diffusers scheduler built from the config gives it back unchanged (diffusers compares all
    the original's keys; `_use_default_values` is compared by content: none is marked on either side)."""
    scheduler = EDMHeunScheduler(**config)
    assert set(scheduler.compatibles) == {EDMHeunScheduler, EDMAblationScheduler, EDMEulerScheduler,
                                          EDMDPMSolverMultistepScheduler, EulerDiscreteScheduler,
                                          HeunDiscreteScheduler, DPMSolverMultistepScheduler}
    init_keys = set(inspect.signature(EDMHeunScheduler.__init__).parameters)
    for compatible_class in scheduler.compatibles:
        if compatible_class is EDMAblationScheduler and scheduler.config.prediction_type != "sample":
            continue  # the ablation sampler runs D-models only
        compatible = compatible_class.from_config(scheduler.config)
        new_scheduler = EDMHeunScheduler.from_config(compatible.config)
        public = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
        assert {k: v for k, v in new_scheduler.config.items() if k in public} == public
        assert not scheduler.config.get("_use_default_values") and not new_scheduler.config.get("_use_default_values")
        assert not ({k for k in new_scheduler.config if k not in scheduler.config} & init_keys)


def test_ablation_scheduler_has_the_compatibles_of_edm_heun():
    """Both list the schedulers EDMPipeline runs in their place (tests/test_pipeline_schedulers.py)."""
    assert set(EDMAblationScheduler().compatibles) == set(EDMHeunScheduler().compatibles)


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_step_shape(scheduler_class, config):
    scheduler = scheduler_class(**config)
    scheduler.set_timesteps(10)
    sample = dummy_sample()
    timestep_0, timestep_1 = scheduler.timesteps[0], scheduler.timesteps[1]
    residual = 0.1 * scheduler.scale_model_input(sample, timestep_0)
    output_0 = scheduler.step(residual, timestep_0, sample).prev_sample
    output_1 = scheduler.step(residual, timestep_1, sample).prev_sample
    assert output_0.shape == sample.shape == output_1.shape


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_scheduler_outputs_equivalence(scheduler_class, config):
    """The tuple of `step(..., return_dict=False)` holds the fields of the output, in order."""
    scheduler = scheduler_class(**config)
    sample = dummy_sample()
    outputs_dict = step_outputs(scheduler, sample, 50)
    outputs_tuple = step_outputs(scheduler, sample, 50, return_dict=False)
    assert isinstance(outputs_tuple, tuple) and len(outputs_tuple) == len(outputs_dict.values()) == 2
    for tuple_value, dict_value in zip(outputs_tuple, outputs_dict.values()):
        assert torch.equal(tuple_value, dict_value)


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_scheduler_public_api(scheduler_class, config):
    scheduler = scheduler_class(**config)
    assert isinstance(scheduler.init_noise_sigma, float) and scheduler.init_noise_sigma > 0
    sample = dummy_sample()
    scaled_sample = scheduler.scale_model_input(sample, scheduler.timesteps[-1])
    assert scaled_sample.shape == sample.shape
    assert "generator" in inspect.signature(scheduler.step).parameters  # pipelines pass it only when it is accepted


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_add_noise_device(scheduler_class, config, device):
    """diffusers' test: one timestep (`timesteps[5][None]`) noises a batch of 4 samples on the samples' device."""
    scheduler = scheduler_class(**config)
    scheduler.set_timesteps(100, device=device)
    sample = dummy_sample().to(device)
    scaled_sample = scheduler.scale_model_input(sample, scheduler.timesteps[-1])
    assert scaled_sample.shape == sample.shape
    noise = torch.randn_like(scaled_sample)
    noised = scheduler.add_noise(scaled_sample, noise, scheduler.timesteps[5][None])
    assert noised.shape == scaled_sample.shape and noised.device == scaled_sample.device


@pytest.mark.parametrize("scheduler_class", [EDMHeunScheduler, EDMAblationScheduler])
def test_deprecated_kwargs(scheduler_class):
    """No `**kwargs` in `__init__` and no deprecated arguments (diffusers requires both or neither)."""
    assert "kwargs" not in inspect.signature(scheduler_class.__init__).parameters
    assert len(scheduler_class._deprecated_kwargs) == 0


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
def test_getattr_is_correct(scheduler_class, config):
    scheduler = scheduler_class(**config)
    scheduler.dummy_attribute = 5
    scheduler.register_to_config(test_attribute=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scheduler.dummy_attribute == 5
        assert callable(scheduler.save_pretrained)
    with pytest.warns(FutureWarning):
        assert scheduler.test_attribute == 5
    with pytest.raises(AttributeError) as error:
        _ = scheduler.does_not_exist
    assert str(error.value) == f"'{scheduler_class.__name__}' object has no attribute 'does_not_exist'"


# --- timesteps: counts, dtype and device ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_class,config", SCHEDULERS)
@pytest.mark.parametrize("num_inference_steps", [1, 2, 10, 50, 1000])
def test_set_timesteps_with_different_counts(scheduler_class, config, num_inference_steps):
    scheduler = scheduler_class(**config)
    scheduler.set_timesteps(num_inference_steps)
    evaluations = num_inference_steps if scheduler.order == 1 else 2 * num_inference_steps - 1
    assert scheduler.num_inference_steps == num_inference_steps and len(scheduler.timesteps) == evaluations
    assert len(scheduler.sigmas) == evaluations + 1 and scheduler.sigmas[-1] == 0
    assert bool((scheduler.sigmas[:-1] > 0).all()) and scheduler.step_index is None and scheduler.begin_index is None
    # The pipelines' progress-bar / warm-up arithmetic: len(timesteps) − N · order is 0 or −1 (the final Euler step).
    assert len(scheduler.timesteps) - num_inference_steps * scheduler.order in (0, -1)


@pytest.mark.parametrize("config,dtype", [({}, torch.float64), ({"prediction_type": "epsilon"}, torch.float32),
                                          ({"timestep_type": "c_noise"}, torch.float32)])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_timesteps_dtype_and_device(config, dtype, device):
    """`timesteps` are σ (float64) or c_noise (float32, as EDMEulerScheduler's) on the requested device; `sigmas`
    stay on the CPU, as in diffusers' schedulers."""
    scheduler = EDMHeunScheduler(**config)
    scheduler.set_timesteps(10, device=device)
    assert scheduler.timesteps.dtype == dtype and scheduler.timesteps.device.type == device
    assert scheduler.sigmas.device.type == "cpu"
    ablation = EDMAblationScheduler()
    ablation.set_timesteps(10, device=device)
    assert ablation.timesteps.dtype == torch.float64 and ablation.timesteps.device.type == device


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_full_loop_no_noise_equals_edm_euler(prediction_type):
    """diffusers' full loop with the common test model: in Euler mode the scheduler is EDMEulerScheduler."""
    results = []
    for scheduler in (EDMEulerScheduler(**HEUN_CONFIG, prediction_type=prediction_type),
                      EDMHeunScheduler(**HEUN_CONFIG, prediction_type=prediction_type, solver="euler")):
        scheduler.set_timesteps(10)
        sample = dummy_sample_deter() * 80.0  # EDMEulerScheduler's init_noise_sigma is √(σ_max² + 1)
        for t in scheduler.timesteps:
            output = dummy_model(scheduler.scale_model_input(sample, t), t)
            sample = scheduler.step(output, t, sample).prev_sample
        results.append(sample)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)


# --- add_noise -------------------------------------------------------------------------------------------------------

ADD_NOISE_MODES = [
    pytest.param(EDMHeunScheduler, {}, id="heun-sample-sigma"),
    pytest.param(EDMHeunScheduler, {"prediction_type": "epsilon"}, id="heun-epsilon-c_noise"),
    pytest.param(EDMHeunScheduler, {"prediction_type": "v_prediction"}, id="heun-v_prediction-c_noise"),
    pytest.param(EDMHeunScheduler, {"timestep_type": "c_noise"}, id="heun-sample-c_noise"),
    pytest.param(EDMHeunScheduler, {"prediction_type": "epsilon", "timestep_type": "sigma"}, id="heun-epsilon-sigma"),
    pytest.param(EDMHeunScheduler, {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "prediction_type": "epsilon"},
                 id="heun-churn-c_noise"),
    pytest.param(EDMAblationScheduler, {}, id="ablation"),
]


def _clean_and_noise(batch_size: int = 4, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(batch_size, 3, 4, 4, generator=generator, dtype=dtype),
            torch.randn(batch_size, 3, 4, 4, generator=generator, dtype=dtype))


@pytest.mark.parametrize("scheduler_class,config", ADD_NOISE_MODES)
def test_add_noise_at_each_scheduler_timestep_uses_that_evaluations_sigma(scheduler_class, config):
    """Every entry k of `timesteps` (predictors and corrections alike) noises at `sigmas[k]`, the level the model is
    evaluated at there, whether the timesteps are σ or c_noise; one value for the batch, one per sample or a
    scalar."""
    scheduler = scheduler_class(**config)
    scheduler.set_timesteps(10)
    clean, noise = _clean_and_noise()
    for k, t in enumerate(scheduler.timesteps):
        expected = clean + noise * scheduler.sigmas[k].float()
        torch.testing.assert_close(scheduler.add_noise(clean, noise, scheduler.timesteps[k: k + 1]), expected)
        torch.testing.assert_close(scheduler.add_noise(clean, noise, t), expected)
        torch.testing.assert_close(scheduler.add_noise(clean, noise, t.repeat(4)), expected)


@pytest.mark.parametrize("scheduler_class,config", ADD_NOISE_MODES)
def test_add_noise_one_timestep_for_a_batch_as_image_to_image_pipelines(scheduler_class, config):
    """diffusers' image-to-image pattern: `timesteps[t_start * order:]`, `set_begin_index`, the first timestep
    repeated or not for the batch, then the loop; the samples are noised at the level of the first evaluation."""
    scheduler = scheduler_class(**config)
    scheduler.set_timesteps(10)
    begin = 4 * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    scheduler.set_begin_index(begin)
    clean, noise = _clean_and_noise()
    noisy = scheduler.add_noise(clean, noise, timesteps[:1])
    assert torch.equal(noisy, scheduler.add_noise(clean, noise, timesteps[:1].repeat(4)))
    torch.testing.assert_close(noisy, clean + noise * scheduler.sigmas[begin].float())
    sample = noisy.double()
    for t in timesteps:
        output = linear_denoiser()(scheduler.scale_model_input(sample, t), scheduler.sigmas[scheduler.step_index])
        sample = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    assert scheduler.step_index == len(scheduler.timesteps) and bool(torch.isfinite(sample).all())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_add_noise_with_c_noise_timesteps_equals_edm_euler(prediction_type, solver):
    """With c_noise timesteps the scheduler noises as `EDMEulerScheduler.add_noise` at the same steps, whether it is
    given its own timesteps or EDMEulerScheduler's (equal up to float32 rounding); e.g. step 5 of 10 at σ = 1.50."""
    heun = EDMHeunScheduler(prediction_type=prediction_type, solver=solver)
    euler = EDMEulerScheduler(prediction_type=prediction_type)
    heun.set_timesteps(10)
    euler.set_timesteps(10)
    clean, noise = _clean_and_noise()
    for i in range(10):  # step i starts at evaluation i (euler) or 2i (heun)
        own = heun.timesteps[i * heun.order: i * heun.order + 1]
        expected = euler.add_noise(clean, noise, euler.timesteps[i: i + 1])
        torch.testing.assert_close(heun.add_noise(clean, noise, own), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(heun.add_noise(clean, noise, euler.timesteps[i: i + 1]), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(heun.add_noise(clean, noise, euler.timesteps[i: i + 1].repeat(4)), expected,
                                   rtol=1e-6, atol=0)
    zero = torch.zeros(1, 1)
    assert heun.add_noise(zero, torch.ones(1, 1), heun.timesteps[5 * heun.order]).item() == pytest.approx(1.5017, 1e-4)


@pytest.mark.parametrize("scheduler_class,config", ADD_NOISE_MODES)
def test_add_noise_with_explicit_continuous_sigmas(scheduler_class, config):
    """`sigmas=` takes continuous noise levels in every mode (the training use): a scalar, one value or one per
    sample, in the samples' dtype; negative levels, wrong shapes and both or neither argument are errors."""
    scheduler = scheduler_class(**config)
    clean, noise = _clean_and_noise(dtype=torch.float64)
    sigmas = torch.tensor([0.0123, 1.5, 77.7, 0.0], dtype=torch.float64)
    assert torch.equal(scheduler.add_noise(clean, noise, sigmas=sigmas), clean + noise * sigmas.reshape(4, 1, 1, 1))
    assert torch.equal(scheduler.add_noise(clean, noise, sigmas=0.3), clean + noise * 0.3)
    one_value = torch.tensor([0.3], dtype=torch.float64)
    assert torch.equal(scheduler.add_noise(clean, noise, sigmas=one_value), clean + noise * 0.3)
    with pytest.raises(ValueError, match="one value per sample"):
        scheduler.add_noise(clean, noise, sigmas=torch.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        scheduler.add_noise(clean, noise, sigmas=torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.add_noise(clean, noise)
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.add_noise(clean, noise, scheduler.timesteps[0], sigmas=1.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_add_noise_rejects_values_that_are_not_c_noise_timesteps(prediction_type):
    """A c_noise scheduler does not read other numbers (e.g. noise levels, the former positional use) as timesteps:
    the error points to `sigmas=`."""
    scheduler = EDMHeunScheduler(prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    clean, noise = _clean_and_noise()
    with pytest.raises(ValueError, match=r"not entries of `scheduler.timesteps`.*sigmas="):
        scheduler.add_noise(clean, noise, torch.tensor([1.5]))


def test_add_noise_takes_any_sigma_as_a_timestep_in_sigma_mode():
    """With `timestep_type="sigma"` a timestep is its own noise level, so the positional argument keeps taking
    continuous σ (as before `sigmas=` existed)."""
    scheduler = EDMHeunScheduler()
    clean, noise = _clean_and_noise(dtype=torch.float64)
    sigmas = torch.tensor([0.0123, 1.5, 77.7, 3.0], dtype=torch.float64)
    assert torch.equal(scheduler.add_noise(clean, noise, sigmas), scheduler.add_noise(clean, noise, sigmas=sigmas))


def test_ablation_add_noise_is_in_the_scaled_coordinates():
    """With the VP scaling the sampler's state is x = s(t) (y + σ(t) n), s = 1/√(1 + σ²): noising zeros at the first
    timestep gives the initial sample `init_noise_sigma · n` of the loop."""
    scheduler = EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp")
    scheduler.set_timesteps(10)
    clean, noise = _clean_and_noise(dtype=torch.float64)
    sigma = scheduler.timesteps[3]
    torch.testing.assert_close(scheduler.add_noise(clean, noise, sigma),
                               (clean + sigma * noise) / (1 + sigma**2).sqrt(), rtol=1e-14, atol=0)
    torch.testing.assert_close(scheduler.add_noise(torch.zeros_like(noise), noise, scheduler.timesteps[:1]),
                               noise * scheduler.init_noise_sigma, rtol=1e-14, atol=0)


# --- from_config round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {}, HEUN_CONFIG, {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003},
    {"prediction_type": "sample", "timestep_type": "c_noise", "sigma_data": 0.6},
])
@pytest.mark.parametrize("via", [EDMEulerScheduler, EDMDPMSolverMultistepScheduler])
def test_from_config_round_trip_keeps_the_settings(config, via):
    """`EDMHeunScheduler.from_config(EDMEulerScheduler.from_config(heun.config).config)` is `heun` again, default
    settings included (`prediction_type="sample"` must not become diffusers' default "epsilon")."""
    heun = EDMHeunScheduler(**config)
    back = EDMHeunScheduler.from_config(via.from_config(heun.config).config)
    assert back.config.prediction_type == "sample" and back.resolved_timestep_type == heun.resolved_timestep_type
    public = {k: v for k, v in heun.config.items() if not k.startswith("_")}
    assert {k: v for k, v in back.config.items() if k in public} == public
    heun.set_timesteps(7)
    back.set_timesteps(7)
    assert torch.equal(heun.timesteps, back.timesteps)


def test_in_memory_conversion_equals_the_conversion_through_disk(tmp_path):
    """The values another scheduler receives from this config are those it reads from the saved file (where diffusers
    records no defaults): the paper's, including those that are defaults here."""
    heun = EDMHeunScheduler(sigma_data=0.6)
    heun.save_pretrained(tmp_path)
    from_memory = EDMEulerScheduler.from_config(heun.config)
    from_disk = EDMEulerScheduler.from_pretrained(tmp_path)
    init_keys = set(inspect.signature(EDMEulerScheduler.__init__).parameters) - {"self"}
    assert {k: from_memory.config[k] for k in init_keys} == {k: from_disk.config[k] for k in init_keys}
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert from_memory.config.prediction_type == saved["prediction_type"] == "sample"


def test_raw_network_config_converts_both_ways():
    """A raw-network (epsilon) configuration stays one in both directions, as before."""
    heun = EDMHeunScheduler(prediction_type="v_prediction")
    euler = EDMEulerScheduler.from_config(heun.config)
    assert euler.config.prediction_type == "v_prediction"
    assert EDMHeunScheduler.from_config(euler.config).config.prediction_type == "v_prediction"
    assert EDMHeunScheduler.from_config(EDMEulerScheduler().config).config.prediction_type == "epsilon"


# --- where a run begins ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_class", [EDMHeunScheduler, EDMAblationScheduler])
@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("s_churn", [0.0, 5.0])
def test_run_begins_at_the_first_evaluation_where_the_first_levels_repeat(scheduler_class, solver, s_churn):
    """iDDPM networks snap σ to their levels, so with 256 steps σ_0 = σ_1 = σ_2 (= 80.2037): the loop's first
    `scale_model_input(x, timesteps[0])` must start at evaluation 0, not at a correction or a later step."""
    net = make_preconditioning("iddpm")
    scheduler = scheduler_class(solver=solver, s_churn=s_churn)
    scheduler.set_timesteps(256, net_sigma_min=net.sigma_min, net_sigma_max=net.sigma_max,
                            round_sigma=net.round_sigma)
    assert scheduler.timesteps[0] == scheduler.timesteps[1]
    assert scheduler.index_for_timestep(scheduler.timesteps[0]) == 0
    latents = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sample, called = run_scheduler_loop(scheduler, linear_denoiser(), latents, 256, net=net,
                                        generator=torch.Generator().manual_seed(1))
    assert len(called) == len(scheduler.timesteps) == (511 if solver == "heun" else 256)
    scheduler.set_timesteps(256, net_sigma_min=net.sigma_min, net_sigma_max=net.sigma_max,
                            round_sigma=net.round_sigma)
    scheduler.set_begin_index(0)  # the same run without looking the first timestep up
    generator = torch.Generator().manual_seed(1)
    expected = latents.double() * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        expected = scheduler.step(linear_denoiser()(scheduler.scale_model_input(expected, t), t), t, expected,
                                  generator=generator).prev_sample
    assert torch.equal(sample, expected)


def test_a_correction_level_is_not_where_a_run_begins():
    """With churn, σ_{i+1} (the level of step i's correction) differs from σ̂_{i+1}: no step starts there."""
    scheduler = EDMHeunScheduler(s_churn=40.0)
    scheduler.set_timesteps(5)
    for k in range(0, len(scheduler.timesteps), 2):
        assert scheduler.index_for_timestep(scheduler.timesteps[k]) == k
    with pytest.raises(ValueError, match="not the level of a step"):
        scheduler.index_for_timestep(scheduler.timesteps[1])
