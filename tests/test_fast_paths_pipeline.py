"""The fast sampling paths of `EDMPipeline` (`diffusers_edm.pipelines.fast_sampling`): a sampling loop without host
synchronisation, compiled sampling without recompilation, reduced-precision backbones with the preconditioning and
the sampler state kept in full precision, and the `--fast`/`--dtype`/`--compile`/... flags of the generation and FID
command lines."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from diffusers_edm import (
    EDMAblationScheduler,
    EDMHeunScheduler,
    EDMPipeline,
    EDMPreconditionedUNet2DModel,
)
from diffusers_edm.pipelines.fast_sampling import (
    accelerate_pipeline,
    measure_compilation,
    resolve_fast_settings,
)
from diffusers_edm.fid import build_parser as fid_parser
from diffusers_edm.fid import main as fid_main
from diffusers_edm.generate import build_parser as generate_parser
from diffusers_edm.generate import main as generate_main

from .evaluation_helpers import random_images, write_detector, write_images
from .helpers import randomize_, tiny_unet_kwargs
from .test_generate import save_tiny_pipeline

SYNCING_METHODS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
"""Tensor methods that make the host wait for the device when the tensor lives there."""

BF16_TOLERANCE = 0.05
"""Largest |bf16 − fp32| of a final sample (values in about [-1.5, 1.5]) of the tiny random conditional models at 4
Heun steps; measured 0.027-0.029 (mean 0.005-0.006; bf16 keeps 8 mantissa bits). At 18 steps (the CIFAR-10 setting)
the last steps, at small σ, leave less of the network's error in the sample: measured max 0.004, every pixel within
half an 8-bit level (1/127.5 in [-1, 1] units)."""


def tiny_pipeline(num_class_labels=3, augment_dim=0, scheduler=None, seed=1, guide=False):
    def unet(weights_seed):
        model = EDMPreconditionedUNet2DModel(
            **tiny_unet_kwargs(num_class_labels=num_class_labels, augment_dim=augment_dim))
        return randomize_(model, seed=weights_seed, scale=0.2).eval()

    pipe = EDMPipeline(unet=unet(seed), scheduler=scheduler or EDMHeunScheduler(),
                       guide_unet=unet(seed + 1) if guide else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class HostSyncRecorder:
    """Records every call of a syncing tensor method (`SYNCING_METHODS`) made while the sampling loop body runs:
    from the first `scheduler.scale_model_input` of a call to the `callback_on_step_end` of its last evaluation. Calls
    made inside the denoisers' forward are kept apart (`in_network`): the model's own argument checks run only on the
    CPU (on CUDA it uses `torch._assert_async`), and the CUDA test below covers the whole loop."""

    def __init__(self, pipe: EDMPipeline) -> None:
        self.pipe = pipe
        self.calls: list[str] = []
        self.in_network: list[str] = []
        self.active = False
        self._network_depth = 0

    def callback(self, pipe, i, t, callback_kwargs):
        if i == pipe.num_timesteps - 1:
            self.active = False
        return {}

    @contextlib.contextmanager
    def installed(self):
        pipe, recorder = self.pipe, self
        originals = {name: torch.Tensor.__dict__.get(name) for name in SYNCING_METHODS}
        inherited = {name: getattr(torch.Tensor, name) for name in SYNCING_METHODS}

        def recording(name, method):
            def wrapper(tensor, *args, **kwargs):
                if recorder.active:
                    frame = sys._getframe(1)
                    where = f"{name} at {frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})"
                    (recorder.in_network if recorder._network_depth else recorder.calls).append(where)
                return method(tensor, *args, **kwargs)

            return wrapper

        def starts_loop(method):
            def wrapper(*args, **kwargs):
                recorder.active = True
                return method(*args, **kwargs)

            return wrapper

        def network(module):
            forward = module.forward

            def wrapper(*args, **kwargs):
                recorder._network_depth += 1
                try:
                    return forward(*args, **kwargs)
                finally:
                    recorder._network_depth -= 1

            module.forward = wrapper

        for name, method in inherited.items():
            setattr(torch.Tensor, name, recording(name, method))
        scale_model_input = pipe.scheduler.scale_model_input
        pipe.scheduler.scale_model_input = starts_loop(scale_model_input)
        for module in (pipe.unet, pipe.guide_unet):
            if module is not None:
                network(module)
        try:
            yield self
        finally:
            self.active = False
            for name, method in originals.items():
                if method is None:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, method)
            del pipe.scheduler.scale_model_input
            for module in (pipe.unet, pipe.guide_unet):
                if module is not None:
                    del module.forward


def sample_recording_syncs(pipe, **call_kwargs):
    recorder = HostSyncRecorder(pipe)
    with recorder.installed():
        pipe(output_type="latent", callback_on_step_end=recorder.callback, **call_kwargs)
    assert pipe.num_timesteps > 1
    return recorder


# No host synchronisation inside the loop --------------------------------------------------------------------------

EDM_CASES = {
    "heun deterministic": (dict(), dict(seeds=[0, 1])),
    "heun stochastic (S_churn > 0)": (dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0), dict(seeds=[0, 1])),
    "heun stochastic, one generator": (dict(s_churn=40.0), dict(batch_size=2, generator=torch.Generator())),
    "euler solver": (dict(solver="euler", s_churn=10.0), dict(seeds=[0, 1])),
    "raw-network outputs (epsilon)": (dict(prediction_type="epsilon", s_churn=10.0), dict(seeds=[0, 1])),
    "classifier-free guidance with an interval": (
        dict(s_churn=10.0), dict(seeds=[0, 1], guidance_scale=2.0, guidance_interval=(0.3, 20.0))),
    "classifier-free guidance, label vectors": (
        dict(), dict(seeds=[0, 1], guidance_scale=1.5, class_labels=torch.eye(3)[[0, 2]])),
}


@pytest.mark.parametrize("case", list(EDM_CASES))
def test_edm_sampling_loop_never_synchronises_the_host(case):
    settings, call_kwargs = EDM_CASES[case]
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(**settings))
    recorder = sample_recording_syncs(pipe, num_inference_steps=4, **call_kwargs)
    assert recorder.calls == []


def test_autoguided_sampling_loop_never_synchronises_the_host():
    pipe = tiny_pipeline(guide=True, scheduler=EDMHeunScheduler(s_churn=10.0))
    recorder = sample_recording_syncs(pipe, seeds=[3, 4], num_inference_steps=4, guidance_scale=2.0,
                                      guidance_interval=(0.5, 30.0))
    assert recorder.calls == []


@pytest.mark.parametrize("settings", [
    dict(s_churn=20.0),
    dict(discretization="vp", schedule="vp", scaling="vp", s_churn=20.0),
    dict(discretization="iddpm", schedule="linear", scaling="none", solver="euler"),
], ids=["edm", "vp", "iddpm-euler"])
def test_ablation_sampling_loop_never_synchronises_the_host(settings):
    pipe = tiny_pipeline(scheduler=EDMAblationScheduler(**settings))
    recorder = sample_recording_syncs(pipe, seeds=[5, 6], num_inference_steps=4)
    assert recorder.calls == []


@pytest.mark.parametrize("scheduler_class, overrides", [
    (EDMEulerScheduler, dict(prediction_type="epsilon")),
    (EDMDPMSolverMultistepScheduler, dict(prediction_type="epsilon")),
    (EulerDiscreteScheduler, dict(use_karras_sigmas=True, prediction_type="epsilon")),
    (HeunDiscreteScheduler, dict(use_karras_sigmas=True, prediction_type="epsilon")),
    (DPMSolverMultistepScheduler, dict(use_karras_sigmas=True, prediction_type="epsilon")),
])
def test_diffusers_schedulers_only_read_their_cpu_sigmas(scheduler_class, overrides):
    """diffusers' schedulers keep `sigmas` on the CPU and compare its entries in Python (e.g. S_tmin ≤ σ ≤ S_tmax in
    the Euler schedulers): host-side reads, not device synchronisations. The pipeline adds none of its own."""
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **overrides)
    recorder = sample_recording_syncs(pipe, seeds=[0, 1], num_inference_steps=4, guidance_scale=2.0)
    assert [call for call in recorder.calls if "diffusers_edm" in call] == []
    assert all("diffusers/schedulers" in call.replace("\\", "/") for call in recorder.calls), recorder.calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: torch.cuda.set_sync_debug_mode needs a CUDA"
                    " device (the CPU tests above record the syncing tensor methods instead)")
@pytest.mark.parametrize("call_kwargs", [
    dict(),
    dict(guidance_scale=2.0, guidance_interval=(0.3, 20.0)),
], ids=["plain", "guided"])
def test_cuda_sampling_loop_runs_under_sync_debug_mode_error(call_kwargs):
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=40.0)).to("cuda")
    scale_model_input = pipe.scheduler.scale_model_input

    def start(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        return scale_model_input(*args, **kwargs)

    def stop(pipe, i, t, callback_kwargs):
        if i == pipe.num_timesteps - 1:
            torch.cuda.set_sync_debug_mode("default")
        return {}

    pipe.scheduler.scale_model_input = start
    try:
        pipe(seeds=[0, 1, 2], num_inference_steps=5, output_type="latent", callback_on_step_end=stop, **call_kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# Compilation without recompilation --------------------------------------------------------------------------------


def test_compiled_sampling_with_augment_labels_never_recompiles():
    """One graph for every σ, step count, seed and class label of a batch size: a whole call compiles the unet once and
    a second call with other seeds, another step count and given labels compiles nothing. The "eager" backend traces
    and guards exactly as inductor does, without generating code."""
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=20.0))
    exact = [pipe(seeds=[0, 1, 2], num_inference_steps=5, output_type="latent").images,
             pipe(seeds=[7, 8, 9], num_inference_steps=7, class_labels=[2, 0, 1], output_type="latent").images]
    torch._dynamo.reset()
    fast = accelerate_pipeline(pipe, compile="default", compile_backend="eager", fullgraph=True)
    with measure_compilation() as first:
        compiled = [pipe(seeds=[0, 1, 2], num_inference_steps=5, output_type="latent").images]
    with measure_compilation() as second:
        compiled.append(pipe(seeds=[7, 8, 9], num_inference_steps=7, class_labels=[2, 0, 1],
                             output_type="latent").images)
    assert (first.frames, first.graphs) == (1, 1) and first.seconds > 0
    assert (second.frames, second.graphs) == (0, 0)
    for compiled_images, exact_images in zip(compiled, exact):  # the eager backend runs the same kernels
        torch.testing.assert_close(compiled_images, exact_images, rtol=0, atol=1e-12)
    assert not fast.bit_exact and "compile=default (eager)" in fast.describe()


def test_guided_compiled_sampling_compiles_one_graph_per_batch_layout():
    """Classifier-free guidance evaluates a doubled batch with label vectors (one graph); with a guidance interval the
    unguided evaluations use the plain batch (a second graph). Neither recompiles on the next call."""
    pipe = tiny_pipeline(augment_dim=9)
    torch._dynamo.reset()
    accelerate_pipeline(pipe, compile="default", compile_backend="eager")
    kwargs = dict(num_inference_steps=4, guidance_scale=2.0, guidance_interval=(0.5, 20.0), output_type="latent")
    with measure_compilation() as first:
        pipe(seeds=[0, 1], **kwargs)
    with measure_compilation() as second:
        pipe(seeds=[4, 5], **{**kwargs, "guidance_scale": 3.0, "guidance_interval": (0.1, 5.0)})
    assert first.frames == 2 and second.frames == 0


def test_warmup_reports_compile_time_and_no_recompilation():
    pipe = tiny_pipeline(augment_dim=9)
    torch._dynamo.reset()
    fast = pipe.enable_fast_sampling(compile="default", compile_backend="eager")
    fast.warmup(batch_size=2, num_inference_steps=3)
    assert fast.compile_seconds > 0 and fast.warmup_seconds >= fast.compile_seconds
    assert fast.recompilations == 0 and fast.steady_seconds > 0
    assert "0 recompilation(s)" in fast.describe()
    with pytest.raises(ValueError, match="already"):
        accelerate_pipeline(pipe, compile="default", compile_backend="eager")


def test_bad_fast_settings_are_value_errors():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="dtype"):
        accelerate_pipeline(pipe, dtype="int8")
    with pytest.raises(ValueError, match="compile"):
        accelerate_pipeline(pipe, compile="fastest")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            accelerate_pipeline(pipe, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: CUDA graphs (compile mode reduce-overhead)")
def test_cuda_graphs_match_the_exact_path_within_a_quantisation_step():
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=20.0)).to("cuda")
    seeds = list(range(16))
    exact = pipe(seeds=seeds, num_inference_steps=6, output_type="np").images
    flags = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        fast = accelerate_pipeline(pipe, dtype="tf32", channels_last=True, compile="default", cuda_graphs=True)
        fast.warmup(batch_size=16, num_inference_steps=6)
        images = pipe(seeds=seeds, num_inference_steps=6, output_type="np").images
    finally:  # TF32 is a global setting
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = flags
    assert fast.recompilations == 0
    assert (np.abs(images - exact) < 1 / 255).mean() >= 0.99


# Reduced precision --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convert", ["accelerate_pipeline", "unet.to"])
def test_bf16_backbone_keeps_float32_preconditioning_and_a_float64_sampler_state(convert):
    call = dict(seeds=[0, 1, 2], num_inference_steps=4, output_type="latent")
    reference = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=10.0))
    exact = reference(**call).images
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=10.0))
    if convert == "accelerate_pipeline":
        assert not accelerate_pipeline(pipe, dtype="bf16").bit_exact
    else:
        pipe.unet.to(torch.bfloat16)
    seen = {"backbone input": set(), "denoised": set(), "sampler state": set()}
    pipe.unet.backbone.register_forward_pre_hook(lambda module, args: seen["backbone input"].add(args[0].dtype))
    pipe.unet.register_forward_hook(lambda module, args, output: seen["denoised"].add(output[0].dtype))

    def state(pipe, i, t, callback_kwargs):
        seen["sampler state"].add(callback_kwargs["latents"].dtype)
        return {}

    images = pipe(**call, callback_on_step_end=state).images
    assert seen == {"backbone input": {torch.bfloat16}, "denoised": {torch.float32}, "sampler state": {torch.float64}}
    assert images.dtype == torch.float64
    difference = (images - exact).abs().max().item()
    assert 0 < difference < BF16_TOLERANCE


def test_bf16_images_are_within_an_8_bit_level_at_18_steps():
    call = dict(seeds=list(range(8)), num_inference_steps=18, output_type="latent")
    exact = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=10.0))(**call).images
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=10.0))
    accelerate_pipeline(pipe, dtype="bf16")
    difference = (pipe(**call).images - exact).abs()
    assert ((difference * 127.5) < 1).double().mean() >= 0.99  # the criterion (1/255 of [0, 1] pixels)


# Command lines ------------------------------------------------------------------------------------------------------


def test_fast_settings_resolve_from_the_switch_and_the_overrides():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # Default: TF32 and channels_last on CUDA (eager, the models' auto attention), nothing elsewhere.
    assert resolve_fast_settings(False, cuda) == dict(dtype="tf32", channels_last=True, compile=None,
                                                      cuda_graphs=False, attention=None)
    assert resolve_fast_settings(False, cpu) == dict(dtype=None, channels_last=False, compile=None,
                                                     cuda_graphs=False, attention=None)
    assert resolve_fast_settings(True, cuda) == dict(dtype="tf32", channels_last=True, compile="default",
                                                     cuda_graphs=True, attention=None)
    assert resolve_fast_settings(True, cpu) == dict(dtype=None, channels_last=False, compile="default",
                                                    cuda_graphs=False, attention=None)
    assert resolve_fast_settings(True, cuda, dtype="bf16", compile="none", cuda_graphs=False) == dict(
        dtype="bf16", channels_last=True, compile=None, cuda_graphs=False, attention=None)
    for device in (cpu, cuda):  # --exact: the official numerics everywhere
        assert resolve_fast_settings(False, device, exact=True) == dict(
            dtype="fp32", channels_last=False, compile=None, cuda_graphs=False, attention="official")


@pytest.mark.parametrize("parser, prefix", [
    (generate_parser, ["--model", "m", "--outdir", "o"]),
    (fid_parser, ["calc", "--model", "m", "--ref", "r.npz"]),
], ids=["generate", "fid calc"])
def test_both_command_lines_take_the_fast_path_flags(parser, prefix):
    args = parser().parse_args([*prefix, "--fast", "--dtype", "bf16", "--no-channels_last", "--compile",
                                "reduce-overhead", "--cuda_graphs", "--compile_backend", "eager"])
    assert (args.fast, args.dtype, args.channels_last, args.compile, args.cuda_graphs, args.compile_backend) == (
        True, "bf16", False, "reduce-overhead", True, "eager")
    defaults = parser().parse_args(prefix)
    assert (defaults.fast, defaults.exact, defaults.dtype, defaults.channels_last, defaults.compile,
            defaults.cuda_graphs) == (False, False, None, None, None, None)
    assert parser().parse_args([*prefix, "--exact"]).exact
    with pytest.raises(SystemExit):
        parser().parse_args([*prefix, "--exact", "--fast"])


@pytest.fixture(scope="module")
def cond_model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("cond_model"), channels=3, num_class_labels=3)


def read_images(folder):
    return {path.name: np.asarray(PIL.Image.open(path)) for path in sorted(folder.rglob("*.png"))}


def test_generate_runs_the_fast_paths_and_keeps_seeds_per_image(cond_model, tmp_path, capsys):
    torch._dynamo.reset()  # graphs of earlier tests with the same shapes would be reused (no compile time to see)
    common = ["--model", str(cond_model), "--seeds", "0-4", "--steps", "3", "--device", "cpu", "--churn", "5"]
    generate_main([*common, "--outdir", str(tmp_path / "exact")])
    compiled = generate_main([*common, "--outdir", str(tmp_path / "compiled"), "--batch", "3", "--fast",
                              "--compile_backend", "eager"])
    assert "compile=default (eager)" in compiled.fast_path and compiled.compile_seconds > 0
    assert "first batch" in capsys.readouterr().out
    exact, fast = read_images(tmp_path / "exact"), read_images(tmp_path / "compiled")
    assert list(exact) == list(fast) and len(exact) == 5
    for name in exact:  # batches of 3 and 2 (two graphs) give each seed its image
        assert np.array_equal(fast[name], exact[name])


def test_generate_with_a_bf16_network_stays_within_an_8_bit_level(cond_model, tmp_path):
    common = ["--model", str(cond_model), "--seeds", "0-3", "--steps", "18", "--device", "cpu"]
    generate_main([*common, "--outdir", str(tmp_path / "exact")])
    bf16 = generate_main([*common, "--outdir", str(tmp_path / "bf16"), "--dtype", "bf16"])
    assert "dtype=bf16" in bf16.fast_path and "not bit-exact" in bf16.fast_path
    exact, reduced = read_images(tmp_path / "exact"), read_images(tmp_path / "bf16")
    assert list(exact) == list(reduced)
    for name in exact:
        assert (np.abs(reduced[name].astype(int) - exact[name].astype(int)) <= 1).mean() >= 0.99


def test_generate_rejects_cuda_graphs_off_cuda(cond_model, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the machine has CUDA")
    with pytest.raises(SystemExit):
        generate_main(["--model", str(cond_model), "--outdir", str(tmp_path), "--device", "cpu", "--cuda_graphs"])
    assert "cuda_graphs needs the pipeline on a CUDA device" in capsys.readouterr().err


def test_fid_calc_model_uses_the_same_fast_paths(cond_model, tmp_path, capsys):
    torch._dynamo.reset()
    detector = str(write_detector(tmp_path / "tiny.pt"))
    run = lambda *args: fid_main([*args, "--device", "cpu", "--workers", "0"])
    run("ref", "--data", str(write_images(tmp_path / "real", random_images(20, size=8))), "--dest",
        str(tmp_path / "ref.npz"), "--detector", detector)
    common = ["calc", "--model", str(cond_model), "--ref", str(tmp_path / "ref.npz"), "--seeds", "0-5", "--steps", "2",
              "--detector", detector, "--batch", "3"]
    exact = run(*common)
    compiled = run(*common, "--compile", "default", "--compile_backend", "eager")
    assert compiled["value"] == exact["value"] and compiled["compile_seconds"] > 0
    assert "compile=default (eager)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run("calc", "--images", str(tmp_path / "real"), "--ref", str(tmp_path / "ref.npz"), "--num", "5",
            "--detector", detector, "--dtype", "bf16")
    assert "apply to --model" in capsys.readouterr().err


@pytest.mark.skipif(not getattr(EDMPreconditionedUNet2DModel, "_repeated_blocks", None),
                    reason="the model class lists no _repeated_blocks (regional compilation not available)")
def test_regional_compilation_compiles_the_blocks_once():
    pipe = tiny_pipeline(augment_dim=9, scheduler=EDMHeunScheduler(s_churn=20.0))
    exact = pipe(seeds=[0, 1], num_inference_steps=4, output_type="latent").images
    torch._dynamo.reset()
    accelerate_pipeline(pipe, compile="regional", compile_backend="eager")
    with measure_compilation() as first:
        images = pipe(seeds=[0, 1], num_inference_steps=4, output_type="latent").images
    with measure_compilation() as second:
        pipe(seeds=[2, 3], num_inference_steps=5, output_type="latent")
    assert first.frames >= 1 and second.frames == 0
    torch.testing.assert_close(images, exact, rtol=0, atol=1e-12)
