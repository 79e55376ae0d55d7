"""EDMPipeline: Algorithm 2 end to end with a real network, outputs, labels, generators, save/load and the on-disk
format, and drop-in use of the scheduler in diffusers' own pipelines."""

import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    ConsistencyModelPipeline,
    DDIMScheduler,
    DiffusionPipeline,
    EDMEulerScheduler,
    UNet2DModel,
)

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel

from .helpers import randomize_, reference_edm_sampler, tiny_unet_kwargs


def make_pipeline(num_class_labels=0, seed=0, **scheduler_kwargs):
    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=num_class_labels)), seed, 0.2)
    pipe = EDMPipeline(unet=unet.eval(), scheduler=EDMHeunScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def final_sample(pipe, **kwargs):
    """Runs the pipeline and returns the raw final sample (before conversion to images)."""
    captured = {}

    def capture(pipeline, i, t, callback_kwargs):
        captured["latents"] = callback_kwargs["latents"]
        return callback_kwargs

    pipe(callback_on_step_end=capture, output_type="pt", **kwargs)
    return captured["latents"]


def test_pipeline_equals_plain_algorithm_2_with_a_real_network():
    pipe = make_pipeline(num_class_labels=3)
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([2, 0])
    sample = final_sample(pipe, batch_size=2, latents=latents, class_labels=[2, 0], num_inference_steps=10)

    def denoise(x, sigma):
        with torch.no_grad():
            return pipe.unet(x.float(), torch.tensor(sigma), class_labels=labels).sample

    expected, evaluations = reference_edm_sampler(denoise, latents, 10)
    assert evaluations == 19 and sample.dtype == torch.float64
    torch.testing.assert_close(sample, expected, rtol=1e-5, atol=1e-5)


def test_stochastic_pipeline_equals_algorithm_2_with_the_same_noise():
    settings = dict(s_churn=30, s_tmin=0.01, s_tmax=50, s_noise=1.007)
    pipe = make_pipeline(**settings)
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sample = final_sample(pipe, batch_size=2, latents=latents, num_inference_steps=8,
                          generator=torch.Generator().manual_seed(9))
    reference_generator = torch.Generator().manual_seed(9)

    def denoise(x, sigma):
        with torch.no_grad():
            return pipe.unet(x.float(), torch.tensor(sigma)).sample

    expected, _ = reference_edm_sampler(
        denoise, latents, 8, **settings, draw_every_step=True,
        noise_fn=lambda i, shape: torch.randn(shape, generator=reference_generator, dtype=torch.float64))
    torch.testing.assert_close(sample, expected, rtol=1e-5, atol=1e-5)


def test_output_types_and_edm_quantisation():
    pipe = make_pipeline()
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    raw = final_sample(pipe, batch_size=2, generator=generator(), num_inference_steps=4)
    images = pipe(batch_size=2, generator=generator(), num_inference_steps=4).images
    assert len(images) == 2 and isinstance(images[0], PIL.Image.Image) and images[0].mode == "L"
    expected_u8 = (raw * 127.5 + 128).clip(0, 255).to(torch.uint8)[:, 0].numpy()
    assert np.array_equal(np.stack([np.asarray(im) for im in images]), expected_u8)
    as_np = pipe(batch_size=2, generator=generator(), num_inference_steps=4, output_type="np").images
    assert as_np.shape == (2, 8, 8, 1) and as_np.dtype == np.float32
    np.testing.assert_allclose(as_np, (raw / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-7)
    as_pt = pipe(batch_size=2, generator=generator(), num_inference_steps=4, output_type="pt").images
    assert as_pt.shape == (2, 1, 8, 8) and as_pt.dtype == torch.float32
    as_tuple = pipe(batch_size=2, generator=generator(), num_inference_steps=4, output_type="pt", return_dict=False)
    assert torch.equal(as_tuple[0], as_pt)


def test_rgb_images():
    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(in_channels=3, out_channels=3)), 0, 0.2)
    pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler())
    pipe.set_progress_bar_config(disable=True)
    image = pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.mode == "RGB" and image.size == (8, 8)


def test_generator_list_makes_images_independent_of_the_batch():
    pipe = make_pipeline(num_class_labels=5, s_churn=20)
    batch = pipe(batch_size=2, num_inference_steps=5, output_type="pt",
                 generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]).images
    single = pipe(batch_size=1, num_inference_steps=5, output_type="pt",
                  generator=[torch.Generator().manual_seed(2)]).images
    # Same noise, labels and churn per image; only batch-size-dependent kernel rounding may differ.
    torch.testing.assert_close(batch[1:], single, rtol=1e-5, atol=1e-5)


def test_class_labels_are_drawn_with_the_generator_after_the_noise():
    pipe = make_pipeline(num_class_labels=10)
    generator = torch.Generator().manual_seed(0)
    expected_noise = torch.randn(3, 1, 8, 8, generator=generator)
    expected_labels = torch.randint(10, (3,), generator=generator)
    drawn = final_sample(pipe, batch_size=3, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    given = final_sample(pipe, batch_size=3, num_inference_steps=3, latents=expected_noise,
                         class_labels=expected_labels.tolist())
    assert torch.equal(drawn, given)
    single_class = final_sample(pipe, batch_size=3, num_inference_steps=3, latents=expected_noise, class_labels=7)
    assert torch.equal(single_class, final_sample(pipe, batch_size=3, num_inference_steps=3, latents=expected_noise,
                                                  class_labels=[7, 7, 7]))


def test_callback_and_progress_run_over_every_evaluation():
    pipe = make_pipeline()
    steps = []
    pipe(num_inference_steps=6, callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw)
    assert steps == list(range(11))


def test_save_load_reproduces_images_and_model_index_is_stable(tmp_path):
    pipe = make_pipeline(num_class_labels=3, s_churn=10)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    # The component module paths are a public on-disk format: changing them breaks every saved repository.
    assert index["unet"] == ["diffusers_edm.models.unet_edm", "EDMPreconditionedUNet2DModel"]
    assert index["scheduler"] == ["diffusers_edm.schedulers.scheduling_edm_heun", "EDMHeunScheduler"]
    assert index["_class_name"] == ["pipeline_diffusers_edm", "EDMPipeline"]
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = EDMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=2, num_inference_steps=5, output_type="pt")
    first = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(loaded(generator=torch.Generator().manual_seed(0), **kwargs).images, first)
    generic = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(generic) is EDMPipeline
    generic.set_progress_bar_config(disable=True)
    assert torch.equal(generic(generator=torch.Generator().manual_seed(0), **kwargs).images, first)


def test_generic_loader_works_in_a_fresh_process(tmp_path):
    make_pipeline().save_pretrained(tmp_path)
    code = (
        "import sys, diffusers, torch\n"
        "assert 'diffusers_edm' not in sys.modules\n"
        f"pipe = diffusers.DiffusionPipeline.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert type(pipe).__name__ == 'EDMPipeline', type(pipe)\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "print(pipe(num_inference_steps=2, output_type='np').images.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 8, 8, 1)" in result.stdout


def test_scheduler_runs_in_diffusers_consistency_model_pipeline():
    """Drop-in: the stock ConsistencyModelPipeline with a raw UNet2DModel (EDM's F) and EDMHeunScheduler in raw-network
    mode samples exactly what EDMPipeline samples with the same F wrapped in the preconditioning."""
    pipe = make_pipeline(num_class_labels=3)
    stock = ConsistencyModelPipeline(unet=pipe.unet.backbone, scheduler=EDMHeunScheduler(prediction_type="epsilon"))
    stock.set_progress_bar_config(disable=True)
    stock_images = stock(batch_size=2, class_labels=[1, 2], num_inference_steps=6, output_type="pt",
                         generator=torch.Generator().manual_seed(0)).images
    ours = pipe(batch_size=2, class_labels=[1, 2], num_inference_steps=6, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(stock_images, ours, rtol=1e-4, atol=1e-4)


def test_edm_euler_style_loop_over_raw_unet():
    """The same weights run with diffusers' EDMEulerScheduler and with ours in Euler mode: identical solvers."""
    unet = randomize_(UNet2DModel(**tiny_unet_kwargs()), 0, 0.2).eval()
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for scheduler in (EDMEulerScheduler(), EDMHeunScheduler(solver="euler", prediction_type="epsilon")):
        scheduler.set_timesteps(12)
        sample = latents * 80.0  # EDMEuler's init_noise_sigma is √(σ_max² + 1); start both from x_0 = 80 n
        with torch.no_grad():
            for t in scheduler.timesteps:
                output = unet(scheduler.scale_model_input(sample, t), t).sample
                sample = scheduler.step(output, t, sample).prev_sample
        results.append(sample.float())
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)


def test_bad_calls_are_rejected():
    pipe = make_pipeline(num_class_labels=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        pipe(batch_size=2, class_labels=[0, 3])
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=2, class_labels=[0])
    with pytest.raises(ValueError, match="output_type"):
        pipe(output_type="jpeg")
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe(latents=torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="generators"):
        pipe(batch_size=2, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="unconditional"):
        make_pipeline()(class_labels=1)
    # A scheduler in raw-network mode now runs (the pipeline converts D; tests/test_pipeline_schedulers.py), one that
    # does not work on noise levels σ is refused with the list of those that do.
    with pytest.raises(ValueError, match="cannot run a DDIMScheduler.*EDMHeunScheduler, EDMAblationScheduler"):
        EDMPipeline(unet=pipe.unet, scheduler=DDIMScheduler())()


def test_latent_output_is_the_raw_final_sample_that_pil_quantises():
    pipe = make_pipeline(num_class_labels=3)
    raw = pipe(seeds=[4, 5], class_labels=1, num_inference_steps=3, output_type="latent").images
    images = pipe(seeds=[4, 5], class_labels=1, num_inference_steps=3, output_type="pil").images
    assert raw.dtype == torch.float64 and raw.shape == (2, 1, 8, 8)
    assert torch.equal(raw, final_sample(pipe, seeds=[4, 5], class_labels=1, num_inference_steps=3))
    expected = np.floor(np.clip(raw.numpy() * 127.5 + 128, 0, 255)).astype(np.uint8)  # generate.py's quantisation
    np.testing.assert_array_equal(np.stack([np.asarray(image) for image in images]), expected[:, 0])
