"""Seed parity with EDM's generate.py (conformance set 03): the same seeds give the official images, deterministic
and stochastic, through EDMPipeline(seeds=...)."""

import numpy as np
import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler, EDMPipeline

from .helpers import conformance, mixture_denoiser


class MixtureDenoiserModel(ModelMixin, ConfigMixin):
    """The conformance stand-in network as a pipeline component: the exact denoiser of a finite (blurred) dataset,
    class-restricted, with the network range (0, ∞) and identity round_sigma of an EDM-preconditioned net."""

    sigma_min, sigma_max = 0.0, float("inf")

    @register_to_config
    def __init__(self, sample_size: int = 4, in_channels: int = 3, num_class_labels: int = 4, tau: float = 0.0):
        super().__init__()
        self.register_buffer("dataset", torch.zeros(8, in_channels, sample_size, sample_size, dtype=torch.float64))
        self.register_buffer("dataset_labels", torch.zeros(8, dtype=torch.long))
        self.calls = []

    def round_sigma(self, sigma):
        return sigma

    def forward(self, sample, sigma, class_labels=None, return_dict=True):
        self.calls.append(float(sigma))
        one_hot = None
        if self.config.num_class_labels:
            one_hot = torch.nn.functional.one_hot(class_labels, self.config.num_class_labels).double()
        denoise = mixture_denoiser(self.dataset, self.config.tau, one_hot, self.dataset_labels if one_hot is not None
                                   else None)
        return (denoise(sample, sigma),)


def make_pipeline(tensors, tau, conditional, **scheduler_kwargs):
    model = MixtureDenoiserModel(num_class_labels=4 if conditional else 0, tau=tau)
    model.dataset.copy_(tensors["dataset"])
    model.dataset_labels.copy_(tensors["dataset_labels"])
    pipe = EDMPipeline(unet=model, scheduler=EDMHeunScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("tag", ["cond.edm_N18", "uncond.edm_N18", "cond.edm_N10", "cond.edm_N128"])
@pytest.mark.parametrize("variant,tau", [("ideal", 0.0), ("gmm", 0.1)])
def test_seeds_reproduce_generate_py(tag, variant, tau):
    meta, tensors = conformance("03_sampler_stochastic")
    run = next(r for r in meta["runs"] if r["tag"] == tag)
    kwargs = run["kwargs"]
    pipe = make_pipeline(tensors, tau, conditional=tag.startswith("cond"), s_churn=kwargs["S_churn"],
                         s_tmin=kwargs["S_min"], s_tmax=kwargs["S_max"], s_noise=kwargs["S_noise"])
    seeds = tensors["seeds"].tolist()
    raw = {}

    def capture(pipeline, i, t, callback_kwargs):
        raw["sample"] = callback_kwargs["latents"]
        return callback_kwargs

    images = pipe(seeds=seeds, num_inference_steps=kwargs["num_steps"], callback_on_step_end=capture).images
    torch.testing.assert_close(raw["sample"], tensors[f"{tag}.images_{variant}"], rtol=1e-10, atol=1e-9)
    assert np.array_equal(np.stack([np.asarray(im) for im in images]),
                          tensors[f"{tag}.images_{variant}_u8_nhwc"].numpy())
    torch.testing.assert_close(torch.tensor(pipe.unet.calls, dtype=torch.float64), tensors[f"{tag}.denoiser_sigmas"],
                               rtol=1e-12, atol=0)


def test_seeds_draw_latents_class_and_noise_in_the_official_order():
    _, tensors = conformance("03_sampler_stochastic")
    generator = torch.Generator().manual_seed(2)
    assert torch.equal(torch.randn([3, 4, 4], generator=generator), tensors["cond.edm_N18.latents"][2])
    assert torch.randint(4, size=[], generator=generator).item() == tensors["cond.edm_N18.class_idx"][2].item()
    for step in range(18):
        assert torch.equal(torch.randn([3, 4, 4], generator=generator, dtype=torch.float64),
                           tensors["cond.edm_N18.eps"][2, step])


def test_given_class_labels_keep_the_random_stream():
    """generate.py draws the class index even with --class, so the noise of an image does not depend on it."""
    _, tensors = conformance("03_sampler_stochastic")
    pipe = make_pipeline(tensors, 0.1, conditional=True, s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003)
    forced = pipe(seeds=[0, 1], class_labels=2, num_inference_steps=6, output_type="pt").images
    drawn = pipe(batch_size=2, generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)],
                 class_labels=[2, 2], num_inference_steps=6, output_type="pt").images
    assert torch.equal(forced, drawn)


def test_seeds_and_generator_are_exclusive():
    _, tensors = conformance("03_sampler_stochastic")
    pipe = make_pipeline(tensors, 0.0, conditional=False)
    with pytest.raises(ValueError, match="either seeds or generator"):
        pipe(seeds=[0], generator=torch.Generator())
    with pytest.raises(ValueError, match="disagrees"):
        pipe(seeds=[0, 1], batch_size=3)


@pytest.mark.parametrize("variant,tau", [("ideal", 0.0), ("gmm", 0.1)])
def test_seeds_reproduce_generate_py_with_the_ablation_sampler(variant, tau):
    meta, tensors = conformance("03_sampler_stochastic")
    tag = "cond.ablation_heun_edm_linear_none_N10_netedm_S_churn40"
    kwargs = next(r for r in meta["runs"] if r["tag"] == tag)["kwargs"]
    pipe = make_pipeline(tensors, tau, conditional=True)
    pipe.scheduler = EDMAblationScheduler(
        solver=kwargs["solver"], discretization=kwargs["discretization"], schedule=kwargs["schedule"],
        scaling=kwargs["scaling"], s_churn=kwargs["S_churn"], s_tmin=kwargs["S_min"], s_tmax=kwargs["S_max"],
        s_noise=kwargs["S_noise"])
    images = pipe(seeds=tensors["seeds"].tolist(), num_inference_steps=kwargs["num_steps"]).images
    assert np.array_equal(np.stack([np.asarray(im) for im in images]), tensors[f"{tag}.images_{variant}_u8_nhwc"].numpy())
    torch.testing.assert_close(torch.tensor(pipe.unet.calls, dtype=torch.float64), tensors[f"{tag}.denoiser_sigmas"],
                               rtol=1e-12, atol=0)
