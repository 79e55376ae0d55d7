# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Guidance in EDMPipeline (issue 10): classifier-free guidance and autoguidance against independent computations, the
guidance interval (which evaluations it skips), w = 1 being bit-identical to no guidance, the guide as a saved and
loaded pipeline component, and the errors for guides and arguments that cannot work."""

import json
import math

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel

from .helpers import randomize_, reference_edm_sampler, tiny_unet_kwargs
from .test_pipeline_schedulers import EDM_CONFIG, GaussianDenoiser


def tiny_unet(seed: int, **overrides) -> EDMPreconditionedUNet2DModel:
    return randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(**overrides)), seed, 0.2).eval()


def make_pipeline(num_class_labels: int = 3, guide: bool = False, **scheduler_kwargs) -> EDMPipeline:
    pipe = EDMPipeline(unet=tiny_unet(0, num_class_labels=num_class_labels),
                       scheduler=EDMHeunScheduler(**scheduler_kwargs),
                       guide_unet=tiny_unet(1, num_class_labels=num_class_labels) if guide else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_calls(module: torch.nn.Module) -> list[tuple[int, torch.Tensor | None]]:
    """Records (batch size, class_labels) of every forward call of `module`."""
    calls = []
    module.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append((args[0].shape[0], kwargs.get("class_labels"))), with_kwargs=True)
    return calls


LATENTS = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([2, 0])
NUM_STEPS = 6


def guided_reference(unet, guide, w: float, interval=(0.0, math.inf), labels=LABELS):
    """EDM's Algorithm 1 written out (tests/helpers.py) with the guided denoiser computed branch by branch:
    D_guide + w (D − D_guide) inside the interval, D outside; `guide(x, σ)` is the guide's D."""

    def denoise(x, sigma):
        with torch.no_grad():
            denoised = unet(x, torch.tensor(sigma), class_labels=labels).sample
            if not interval[0] < sigma <= interval[1]:
                return denoised
            guided = guide(x, sigma)
            return guided + w * (denoised - guided)

    return reference_edm_sampler(denoise, LATENTS, NUM_STEPS)[0]


def final_sample(pipe, **kwargs) -> torch.Tensor:
    return pipe(batch_size=2, latents=LATENTS, num_inference_steps=NUM_STEPS, output_type="latent", **kwargs).images


# --- w = 1 ------------------------------------------------------------------------------------------------------------


def test_guidance_scale_one_is_bit_identical_to_no_guidance_and_never_evaluates_a_guide():
    pipe = make_pipeline(guide=True, s_churn=10)
    guide_calls = count_calls(pipe.guide_unet)
    kwargs = dict(seeds=[3, 4], num_inference_steps=NUM_STEPS, output_type="latent")
    unguided = pipe(**kwargs).images
    assert torch.equal(pipe(guidance_scale=1.0, **kwargs).images, unguided)
    assert torch.equal(pipe(guidance_scale=1, guidance_interval=(0.1, 5.0), **kwargs).images, unguided)
    pipe.guide_unet = None
    assert torch.equal(pipe(guidance_scale=1.0, **kwargs).images, unguided)
    assert guide_calls == []


# --- classifier-free guidance and autoguidance ------------------------------------------------------------------------


def test_classifier_free_guidance_matches_an_independent_computation():
    """D = D(x; σ, ∅) + w (D(x; σ, c) − D(x; σ, ∅)) with ∅ the all-zero label vector, evaluated in one batch."""
    pipe = make_pipeline()
    unet_calls = count_calls(pipe.unet)
    sample = final_sample(pipe, class_labels=LABELS, guidance_scale=2.5)

    def unconditional(x, sigma):
        return pipe.unet(x, torch.tensor(sigma), class_labels=torch.zeros(2, 3)).sample

    expected = guided_reference(pipe.unet, unconditional, 2.5)
    torch.testing.assert_close(sample, expected, rtol=1e-5, atol=1e-5)
    batch_sizes, labels = zip(*unet_calls[: 2 * NUM_STEPS - 1])
    assert set(batch_sizes) == {4}  # both branches in one forward
    assert torch.equal(labels[0], torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float32))


def test_autoguidance_matches_an_independent_computation_and_the_guide_sees_the_labels():
    """D = D_guide + w (D − D_guide), the guide being a second EDM denoiser given the same class labels."""
    pipe = make_pipeline(guide=True)
    guide_calls = count_calls(pipe.guide_unet)
    sample = final_sample(pipe, class_labels=LABELS, guidance_scale=1.7)
    assert len(guide_calls) == 2 * NUM_STEPS - 1
    assert all(batch == 2 and torch.equal(labels, LABELS) for batch, labels in guide_calls)

    def guide(x, sigma):
        return pipe.guide_unet(x, torch.tensor(sigma), class_labels=LABELS).sample

    torch.testing.assert_close(sample, guided_reference(pipe.unet, guide, 1.7), rtol=1e-5, atol=1e-5)


def test_autoguidance_of_an_unconditional_model():
    pipe = make_pipeline(num_class_labels=0, guide=True)
    sample = final_sample(pipe, guidance_scale=2.0)

    def guide(x, sigma):
        return pipe.guide_unet(x, torch.tensor(sigma)).sample

    torch.testing.assert_close(sample, guided_reference(pipe.unet, guide, 2.0, labels=None), rtol=1e-5, atol=1e-5)


# --- guidance interval ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("autoguidance", [False, True], ids=["cfg", "autoguidance"])
def test_the_guidance_interval_skips_exactly_the_evaluations_outside_it(autoguidance):
    """Guided exactly where σ_lo < σ ≤ σ_hi (the bounds here are levels of the schedule, testing both ends); elsewhere
    the guide or unconditional branch is not evaluated at all."""
    pipe = make_pipeline(guide=autoguidance)
    scheduler = EDMHeunScheduler()
    scheduler.set_timesteps(NUM_STEPS)
    sigmas = scheduler.sigmas[: 2 * NUM_STEPS - 1].tolist()  # σ of each evaluation: 80, 29.5, 29.5, 9.9, 9.9, …
    interval = (sigmas[7], sigmas[1])
    guided = [interval[0] < sigma <= interval[1] for sigma in sigmas]
    assert guided == [False, True, True, True, True, True, True, False, False, False, False]
    unet_calls = count_calls(pipe.unet)
    guide_calls = count_calls(pipe.guide_unet) if autoguidance else []
    sample = final_sample(pipe, class_labels=LABELS, guidance_scale=3.0, guidance_interval=interval)

    if autoguidance:
        assert len(guide_calls) == sum(guided) and [batch for batch, _ in unet_calls] == [2] * len(sigmas)

        def guide(x, sigma):
            return pipe.guide_unet(x, torch.tensor(sigma), class_labels=LABELS).sample
    else:
        assert [batch for batch, _ in unet_calls] == [4 if g else 2 for g in guided]

        def guide(x, sigma):
            return pipe.unet(x, torch.tensor(sigma), class_labels=torch.zeros(2, 3)).sample

    torch.testing.assert_close(sample, guided_reference(pipe.unet, guide, 3.0, interval), rtol=1e-5, atol=1e-5)


# --- every scheduler --------------------------------------------------------------------------------------------------


class ClassMeanDenoiser(GaussianDenoiser):
    """The exact denoiser of N(m_c, s² I) data whose mean m_c = v · means depends on the label vector v (integer labels
    are one-hot; the all-zero "no label" gives mean 0): D = m + (x − m) s² / (σ² + s²)."""

    def __init__(self, data_std: float = 0.7):
        super().__init__(num_class_labels=3, data_std=data_std)
        self.register_buffer("means", torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64))

    def forward(self, sample, sigma, class_labels=None, return_dict=True):
        if not class_labels.is_floating_point():
            class_labels = torch.nn.functional.one_hot(class_labels, 3)
        mean = (class_labels.to(torch.float64) @ self.means).reshape(-1, 1, 1, 1)
        return ((mean + super().forward(sample - mean, sigma)[0]).to(torch.float32),)


class WrittenOutGuidance(GaussianDenoiser):
    """The guided denoiser written out for comparison: D_guide + w (D − D_guide) where σ_lo < σ ≤ σ_hi, else D; D_guide
    is `guide`'s or, for `guide=None`, `main`'s given all-zero label vectors."""

    def __init__(self, main, guide, scale: float, interval: tuple[float, float]):
        super().__init__(num_class_labels=3)
        self.main, self.guide, self.scale, self.interval = main, guide, scale, interval

    def forward(self, sample, sigma, class_labels=None, return_dict=True):
        denoised = self.main(sample, sigma, class_labels=class_labels)[0].to(torch.float64)
        if not self.interval[0] < float(sigma) <= self.interval[1]:
            return (denoised.to(torch.float32),)
        if self.guide is None:
            guide = self.main(sample, sigma, class_labels=torch.zeros(sample.shape[0], 3))[0]
        else:
            guide = self.guide(sample, sigma, class_labels=class_labels)[0]
        guide = guide.to(torch.float64)
        return ((guide + self.scale * (denoised - guide)).to(torch.float32),)


GUIDED_SCHEDULERS = [
    pytest.param(lambda: EDMHeunScheduler(), id="edm-heun"),
    pytest.param(lambda: EDMHeunScheduler(prediction_type="epsilon"), id="edm-heun-epsilon"),
    pytest.param(lambda: EDMAblationScheduler(discretization="ve", schedule="ve"), id="edm-ablation-ve"),
    pytest.param(lambda: EDMEulerScheduler.from_config(EDM_CONFIG), id="edm-euler"),
    pytest.param(lambda: EDMDPMSolverMultistepScheduler(), id="edm-dpm"),
    pytest.param(lambda: EulerDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                            prediction_type="epsilon"), id="euler"),
    pytest.param(lambda: HeunDiscreteScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True,
                                                           prediction_type="v_prediction"), id="heun-discrete"),
    pytest.param(lambda: DPMSolverMultistepScheduler.from_config(EDM_CONFIG, use_karras_sigmas=True), id="dpm"),
]


@pytest.mark.parametrize("make_scheduler", GUIDED_SCHEDULERS)
@pytest.mark.parametrize("autoguidance", [False, True], ids=["cfg", "autoguidance"])
def test_guidance_works_with_every_scheduler(make_scheduler, autoguidance):
    """Guided sampling (with an interval, seeds and labels) with each scheduler equals unguided sampling of the guided
    denoiser written out."""
    main = ClassMeanDenoiser()
    guide = ClassMeanDenoiser(data_std=0.4) if autoguidance else None
    pipe = EDMPipeline(unet=main, scheduler=make_scheduler(), guide_unet=guide)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(seeds=[1, 2], class_labels=[0, 1], num_inference_steps=12, output_type="latent")
    interval = (0.05, 20.0)
    sample = pipe(guidance_scale=2.0, guidance_interval=interval, **kwargs).images
    assert not torch.allclose(sample, pipe(**kwargs).images, rtol=1e-3, atol=1e-3)  # guidance changes the result

    reference = EDMPipeline(unet=WrittenOutGuidance(main, guide, 2.0, interval), scheduler=make_scheduler())
    reference.set_progress_bar_config(disable=True)
    # Up to float32 round-off: the pipeline combines the branches with torch.lerp in float32.
    torch.testing.assert_close(sample, reference(**kwargs).images, rtol=1e-5, atol=1e-5)


# --- the guide as a pipeline component --------------------------------------------------------------------------------


def test_the_guide_round_trips_through_save_and_load(tmp_path):
    pipe = make_pipeline(guide=True)
    pipe.save_pretrained(tmp_path / "with_guide")
    index = json.loads((tmp_path / "with_guide" / "model_index.json").read_text())
    assert index["guide_unet"] == ["diffusers_edm.models.unet_edm", "EDMPreconditionedUNet2DModel"]
    loaded = EDMPipeline.from_pretrained(tmp_path / "with_guide")
    loaded.set_progress_bar_config(disable=True)
    for name, parameter in pipe.guide_unet.state_dict().items():
        assert torch.equal(loaded.guide_unet.state_dict()[name], parameter)
    kwargs = dict(seeds=[1, 2], class_labels=[0, 2], num_inference_steps=4, guidance_scale=2.0, output_type="latent")
    assert torch.equal(loaded(**kwargs).images, pipe(**kwargs).images)

    # Set after construction, from its own folder, and saved with the pipeline.
    later = make_pipeline()
    assert later.guide_unet is None
    later.save_pretrained(tmp_path / "without_guide")
    assert EDMPipeline.from_pretrained(tmp_path / "without_guide").guide_unet is None
    later.guide_unet = EDMPreconditionedUNet2DModel.from_pretrained(tmp_path / "with_guide" / "guide_unet")
    assert torch.equal(later(**kwargs).images, pipe(**kwargs).images)
    later.save_pretrained(tmp_path / "guide_set_later")
    reloaded = EDMPipeline.from_pretrained(tmp_path / "guide_set_later")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(reloaded(**kwargs).images, pipe(**kwargs).images)


@pytest.mark.parametrize("overrides,message", [
    (dict(sample_size=16), r"its sample_size is 16 where the unet's is 8"),
    (dict(in_channels=3, out_channels=3), r"its in_channels is 3 where the unet's is 1"),
    (dict(num_class_labels=5), r"its num_class_labels is 5 where the unet's is 3"),  # an unconditional guide is CFG
])
def test_a_guide_that_does_not_fit_the_unet_is_a_clear_error(overrides, message):
    pattern = r"guide_unet must denoise the unet's images with its class labels, but " + message
    with pytest.raises(ValueError, match=pattern):
        EDMPipeline(unet=tiny_unet(0, num_class_labels=3), scheduler=EDMHeunScheduler(),
                    guide_unet=tiny_unet(1, **{"num_class_labels": 3, **overrides}))
    pipe = make_pipeline()
    pipe.guide_unet = tiny_unet(1, **{"num_class_labels": 3, **overrides})
    with pytest.raises(ValueError, match=pattern):
        pipe(num_inference_steps=2, guidance_scale=2.0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(guidance_scale=float("nan")), r"guidance_scale must be a finite number \(1.0: no guidance\), got nan"),
    (dict(guidance_scale="2"), r"guidance_scale must be a finite number .*got '2'"),
    (dict(guidance_scale=True), r"guidance_scale must be a finite number .*got True"),
    (dict(guidance_scale=2.0, guidance_interval=(5.0, 1.0)), r"guidance_interval must satisfy 0 <= sigma_lo <"),
    (dict(guidance_scale=2.0, guidance_interval=(-1.0, 1.0)), r"guidance_interval must satisfy"),
    (dict(guidance_scale=2.0, guidance_interval=(1.0,)), r"guidance_interval must be a pair"),
    (dict(guidance_scale=2.0, guidance_interval="ab"), r"guidance_interval must be a pair"),
])
def test_bad_guidance_arguments_are_a_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pipeline()(num_inference_steps=2, **kwargs)


def test_guidance_of_an_unconditional_model_needs_a_guide():
    with pytest.raises(ValueError, match=r"guidance_scale=2.0 needs a guide: the unet is unconditional.*guide_unet"):
        make_pipeline(num_class_labels=0)(num_inference_steps=2, guidance_scale=2.0)


def test_guidance_with_a_compiled_unet_recompiles_nothing_on_the_next_call():
    """Classifier-free guidance limited to an interval alternates batches of B and 2B; once both are compiled, another
    call with other seeds and labels reuses them, without graph breaks."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    pipe = make_pipeline()
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0, guidance_interval=(0.5, 30.0), output_type="latent")
    eager = pipe(seeds=[1, 2], class_labels=[0, 2], **kwargs).images
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    torch.testing.assert_close(pipe(seeds=[1, 2], class_labels=[0, 2], **kwargs).images, eager)
    with torch._dynamo.config.patch(error_on_recompile=True):
        pipe(seeds=[5, 6], class_labels=[1, 1], **kwargs)
    assert not torch._dynamo.utils.counters["graph_break"]
