# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Fast sampling paths for [`EDMPipeline`]: backbone precision, TF32, channels_last, `torch.compile` and CUDA graphs.

    from diffusers_edm.pipelines.fast_sampling import accelerate_pipeline

    pipe = EDMPipeline.from_pretrained(...).to("cuda")
    fast = accelerate_pipeline(pipe, dtype="bf16", channels_last=True, compile="default", cuda_graphs=True)
    fast.warmup(batch_size=64, num_inference_steps=18)   # compiles and records the graphs; times it
    print(fast.describe())                               # settings, compile seconds, whether bits change
    images = pipe(seeds=range(64), num_inference_steps=18).images

What each setting does, and whether it changes the images' bits compared with the exact path (fp32 eager):

* `dtype`: the precision of the denoisers' networks (the backbones). "bf16"/"fp16" convert `pipe.unet` (and
  `pipe.guide_unet`) with `.to(dtype)`; [`EDMPreconditionedUNet2DModel`] keeps its preconditioning (c_skip, c_out,
  c_in, c_noise, the skip connection) in float32 whatever its parameters' dtype, and the pipeline keeps the sampler
  state of EDM's schedulers in float64 (diffusers' schedulers: float32), so only the network evaluation is reduced.
  Changes bits (about 1e-2 relative in the network output). "tf32" keeps float32 weights and lets matmuls and
  convolutions use TF32 on Ampere and newer GPUs; "fp32" keeps float32 weights and turns TF32 off for both (strict
  IEEE float32). These two set *global* `torch.backends` flags (`torch.backends.cuda.matmul.fp32_precision`,
  `torch.backends.cudnn.conv.fp32_precision`; the legacy `allow_tf32` flags on older torch): they affect every model
  of the process, not only this pipeline. `None` leaves the flags as they are (PyTorch's defaults: TF32 off for
  matmuls, on for cuDNN convolutions).
* `channels_last`: NHWC weights (`.to(memory_format=torch.channels_last)`), which cuDNN's convolution kernels prefer
  on tensor-core GPUs. May change bits (another convolution algorithm, another summation order).
* `compile`: `torch.compile` of the denoisers with static shapes (`dynamic=False`): "default", "reduce-overhead"
  (CUDA graphs through inductor's cudagraph trees), "max-autotune" (also CUDA graphs on CUDA), or "regional"
  (`unet.compile_repeated_blocks()`, diffusers' regional compilation: only the model's repeated blocks, much less
  compile time; needs the model class to list `_repeated_blocks`). The pipeline hands the networks σ as a device
  tensor (never a Python float) and labels as tensors of fixed dtype and shape, so one graph serves every σ, step
  count, seed, class label and (zero) augment label of a batch size: there is no recompilation between evaluations
  or calls. A new batch size compiles a new graph (static shapes); so do classifier-free guidance (a doubled batch
  with label vectors) and, with a guidance interval, its unguided evaluations (a second graph). Inductor reorders
  floating-point operations and fuses them, so compiled images differ from the eager ones in the last bits.
* `cuda_graphs`: replays the networks' kernels as CUDA graphs, which removes the per-kernel launch overhead that
  dominates small networks (CIFAR-10 at 32x32): the denoisers are compiled with `mode="reduce-overhead"`. Static
  shapes: use the same batch size on every call (each batch size records its own graphs; a last, smaller batch costs
  one more recording). The pipeline marks each model evaluation as a new cudagraph step and copies the network's
  output out of the graph's memory before the next replay. CUDA only. The whole sampling loop is not captured as one
  graph: EDM's sampler draws its churn noise from per-image generators inside the loop (the official random stream),
  and the scheduler arithmetic between evaluations is a few element-wise kernels per step.

The loop itself never synchronises with the device (no `.item()`, no tensor in a Python condition, σ read from a
table prepared before the loop), so the host runs ahead and queues the evaluations; see `EDMPipeline.__call__`.

Compile time is reported: [`FastSampling.warmup`] times a first call and reads dynamo's compile timers
([`compile_statistics`]).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The `dtype` choices of [`accelerate_pipeline`] and the dtype each gives the backbones."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "regional")
"""The `compile` choices of [`accelerate_pipeline`] (`None`: no compilation)."""

_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
"""`torch.compile` modes that record CUDA graphs (on CUDA)."""


@dataclass
class CompileStatistics:
    """dynamo's compile counters at one moment (see [`compile_statistics`]); subtract two for what happened between.

    Attributes:
        frames (`int`): frames dynamo compiled (a recompilation is one more).
        graphs (`int`): graphs it produced (graph breaks make several per frame).
        seconds (`float`): time spent compiling (dynamo tracing plus the backend, e.g. inductor's code generation).
    """

    frames: int = 0
    graphs: int = 0
    seconds: float = 0.0

    def __sub__(self, other: CompileStatistics) -> CompileStatistics:
        return CompileStatistics(self.frames - other.frames, self.graphs - other.graphs, self.seconds - other.seconds)


def compile_statistics() -> CompileStatistics:
    """The process's dynamo compile counters now: frames compiled, graphs produced and seconds spent compiling."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    compilations = compilation_time_metrics.get("_compile.compile_inner", ())  # one entry per frame compiled
    return CompileStatistics(len(compilations), counters["stats"]["unique_graphs"], float(sum(compilations)))


@dataclass
class FastSampling:
    """What [`accelerate_pipeline`] applied to a pipeline, and (after [`warmup`]) what compiling cost.

    Attributes:
        dtype (`str` or `None`): backbone precision ("fp32", "tf32", "bf16", "fp16"; `None`: unchanged).
        channels_last (`bool`): NHWC weights.
        compile (`str` or `None`): the compile mode (`None`: eager).
        compile_backend (`str` or callable): the `torch.compile` backend.
        cuda_graphs (`bool`): the networks run as CUDA graphs.
        attention (`str` or `None`): the native backbones' attention ("official", "sdpa"; `None`: the model's own
            setting, "auto" unless changed: SDPA on CUDA, the official form elsewhere).
        bit_exact (`bool`): whether the images equal the exact path's bit for bit (nothing that reorders arithmetic
            was applied).
        compile_seconds (`float` or `None`): dynamo's compile time during [`warmup`] (tracing and code generation).
        warmup_seconds (`float` or `None`): wall time of the warm-up call (compilation, graph recording, sampling).
        steady_seconds (`float` or `None`): wall time of the second warm-up call (already compiled).
        recompilations (`int` or `None`): frames compiled during the second warm-up call (0 expected).
    """

    pipe: Any = field(repr=False)
    dtype: str | None = None
    channels_last: bool = False
    compile: str | None = None
    compile_backend: str | Callable = "inductor"
    cuda_graphs: bool = False
    attention: str | None = None
    compile_seconds: float | None = None
    warmup_seconds: float | None = None
    steady_seconds: float | None = None
    recompilations: int | None = None

    @property
    def bit_exact(self) -> bool:
        on_cuda = next(self.pipe.unet.parameters()).device.type == "cuda"
        official_attention = self.attention == "official" or (self.attention is None and not on_cuda)
        strict_float32 = self.dtype == "fp32" or (self.dtype is None and not on_cuda)
        return strict_float32 and official_attention and not self.channels_last and self.compile is None

    def warmup(self, batch_size: int, num_inference_steps: int = 18, repeats: int = 2, **call_kwargs: Any) -> None:
        """Runs the pipeline `repeats` times on a batch of `batch_size` seeds (the batch size of the real run: graphs
        are per shape) and records the first call's wall time and compile time, and the second call's time and
        recompilations. `call_kwargs` go to the pipeline (e.g. `guidance_scale`, `class_labels`)."""
        timings, statistics = [], []
        for repeat in range(repeats):
            before = compile_statistics()
            start = time.perf_counter()
            self.pipe(seeds=list(range(repeat * batch_size, (repeat + 1) * batch_size)),
                      num_inference_steps=num_inference_steps, output_type="latent", **call_kwargs)
            _synchronize(self.pipe.unet)
            timings.append(time.perf_counter() - start)
            statistics.append(compile_statistics() - before)
        self.warmup_seconds, self.compile_seconds = timings[0], statistics[0].seconds
        if repeats > 1:
            self.steady_seconds, self.recompilations = timings[1], statistics[1].frames

    def describe(self) -> str:
        """One line: the settings, whether bits change, and the measured compile time."""
        compile_text = "eager" if self.compile is None else f"compile={self.compile} ({_backend_name(self)})"
        parts = [f"dtype={self.dtype or 'unchanged'}", f"attention={self.attention or 'auto'}",
                 f"channels_last={self.channels_last}", compile_text,
                 f"cuda_graphs={self.cuda_graphs}",
                 "bit-exact" if self.bit_exact else "not bit-exact (equivalent within rounding)"]
        if self.compile_seconds is not None:
            parts.append(f"compile {self.compile_seconds:.1f} s, first call {self.warmup_seconds:.1f} s")
        if self.steady_seconds is not None:
            parts.append(f"then {self.steady_seconds:.2f} s per call, {self.recompilations} recompilation(s)")
        return "Fast path: " + ", ".join(parts) + "."


def accelerate_pipeline(
    pipe: Any,
    dtype: str | None = None,
    channels_last: bool = False,
    compile: str | None = None,
    cuda_graphs: bool = False,
    compile_backend: str | Callable = "inductor",
    fullgraph: bool = False,
    attention: str | None = None,
) -> FastSampling:
    """
    Applies the fast sampling paths to an [`EDMPipeline`] in place (its `unet` and `guide_unet`), after it has been
    moved to its device. See the module docstring for what each setting does and which change bits.

    Args:
        pipe ([`EDMPipeline`]): the pipeline.
        dtype (`str`, *optional*): "fp32" (strict float32: TF32 off), "tf32" (float32 weights, TF32 on), "bf16",
            "fp16" (backbone weights in that dtype; preconditioning float32, sampler state float64); `None` leaves
            the weights and the global TF32 flags as they are.
        channels_last (`bool`, defaults to `False`): NHWC network weights.
        compile (`str`, *optional*): "default", "reduce-overhead", "max-autotune" or "regional"; `None` runs eagerly.
        cuda_graphs (`bool`, defaults to `False`): run the networks as CUDA graphs (compiles with
            `mode="reduce-overhead"`; CUDA only; same batch size every call).
        compile_backend (`str` or callable, defaults to "inductor"): the `torch.compile` backend ("eager" and
            "aot_eager" trace without generating code: the same graphs, guards and recompilations, for tests).
        fullgraph (`bool`, defaults to `False`): make a graph break an error.
        attention (`str`, *optional*): "official" (EDM's attention, bit parity with the official networks) or
            "sdpa" for the native backbones (`set_attention_implementation`); `None` keeps the models' setting.

    Returns:
        [`FastSampling`]: the applied settings; call its `warmup` to compile before timing and to read the compile
        time.

    Raises:
        ValueError: an unknown choice, CUDA graphs off CUDA, or a pipeline that was already accelerated.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)} or None.")
    if compile is not None and compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} is not supported; use one of {', '.join(COMPILE_MODES)} or None.")
    denoisers = [module for module in (pipe.unet, getattr(pipe, "guide_unet", None)) if module is not None]
    device = next(pipe.unet.parameters()).device
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs needs the pipeline on a CUDA device; it is on {device}.")
    if any(getattr(module, "_compiled_call_impl", None) is not None or isinstance(module, torch._dynamo.OptimizedModule)
           for module in denoisers) or getattr(pipe, "_fast_sampling", None) is not None:
        raise ValueError("The pipeline's denoisers are already compiled or accelerated; load a fresh pipeline.")
    if cuda_graphs and compile_backend != "inductor":
        raise ValueError(f"cuda_graphs records inductor's graphs (mode='reduce-overhead'); compile_backend"
                         f" {compile_backend!r} cannot, use 'inductor' or cuda_graphs=False.")
    mode = compile
    if cuda_graphs:
        mode = compile if compile in _CUDA_GRAPH_MODES else "reduce-overhead"
        if compile is None:
            compile = "reduce-overhead"
    elif compile in _CUDA_GRAPH_MODES and device.type == "cuda":
        cuda_graphs = True  # these modes record CUDA graphs on CUDA

    if attention is not None:
        for module in denoisers:
            if hasattr(getattr(module, "backbone", None), "set_attention_implementation"):  # native backbones
                module.set_attention_implementation(attention)
    if dtype is not None:
        set_tf32(dtype == "tf32")
        for module in denoisers:
            _convert_weights(module, DTYPES[dtype])
    if channels_last:
        for module in denoisers:
            module.to(memory_format=torch.channels_last)
    if compile is not None:
        options: dict[str, Any] = {"dynamic": False, "fullgraph": fullgraph, "backend": compile_backend}
        if compile_backend == "inductor" and mode not in (None, "default", "regional"):
            options["mode"] = mode  # other backends take no mode
        elif compile == "regional" and cuda_graphs and compile_backend == "inductor":
            options["mode"] = "reduce-overhead"
        for module in denoisers:
            if compile == "regional":
                if not getattr(module, "_repeated_blocks", None):
                    raise ValueError(
                        f"compile='regional' needs the {type(module).__name__} to list its repeated blocks"
                        " (`_repeated_blocks`) for diffusers' compile_repeated_blocks; use compile='default'."
                    )
                module.compile_repeated_blocks(**options)
            else:
                module.compile(**options)
    pipe._cuda_graph_steps = cuda_graphs
    result = FastSampling(pipe, dtype, channels_last, compile, compile_backend, cuda_graphs, attention)
    pipe._fast_sampling = result
    return result


def set_tf32(enabled: bool) -> None:
    """Turns TF32 for float32 matmuls and cuDNN convolutions on or off. Global: it applies to every model of the
    process."""
    matmul, cudnn_conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        precision = "tf32" if enabled else "ieee"
        matmul.fp32_precision = precision
        cudnn_conv.fp32_precision = precision
    else:  # torch < 2.9
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def resolve_fast_settings(
    fast: bool,
    device: torch.device,
    dtype: str | None = None,
    channels_last: bool | None = None,
    compile: str | None = None,
    cuda_graphs: bool | None = None,
    exact: bool = False,
) -> dict[str, Any]:
    """The [`accelerate_pipeline`] settings of the command lines.

    By default, on CUDA: TF32 and channels_last, eager (with the models' "auto" attention, SDPA): what speeds up any
    network at no compile cost and keeps the images equivalent; elsewhere nothing (the eager float32 sampler, bit for
    bit the official one). `fast` (`--fast`) adds `torch.compile`, and CUDA graphs on CUDA: worth its compile time for
    long runs (e.g. 50k images for FID). `exact` (`--exact`) is the official numerics on every device: strict float32
    (TF32 off), NCHW, the official attention, eager. Explicit values (the individual flags) override any of these;
    `compile="none"` means no compilation. Reduced precision (bf16/fp16) is never implied: it is opt-in."""
    on_cuda = torch.device(device).type == "cuda"
    if exact:
        settings = {"dtype": "fp32", "channels_last": False, "compile": None, "cuda_graphs": False,
                    "attention": "official"}
    else:
        settings = {"dtype": "tf32" if on_cuda else None, "channels_last": on_cuda,
                    "compile": "default" if fast else None, "cuda_graphs": fast and on_cuda, "attention": None}
    if dtype is not None:
        settings["dtype"] = dtype
    if channels_last is not None:
        settings["channels_last"] = channels_last
    if compile is not None:
        settings["compile"] = None if compile == "none" else compile
    if cuda_graphs is not None:
        settings["cuda_graphs"] = cuda_graphs
    return settings


@contextlib.contextmanager
def measure_compilation() -> Iterator[CompileStatistics]:
    """`with measure_compilation() as cost:` fills `cost` with the frames, graphs and seconds compiled inside."""
    cost = CompileStatistics()
    before = compile_statistics()
    try:
        yield cost
    finally:
        delta = compile_statistics() - before
        cost.frames, cost.graphs, cost.seconds = delta.frames, delta.graphs, delta.seconds


def _convert_weights(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """`module.to(dtype)`, keeping the submodules the model lists in `_keep_in_fp32_modules` in float32 as diffusers'
    `from_pretrained(torch_dtype=...)` does (and without the warning `ModelMixin.to` gives for a cast)."""
    torch.nn.Module.to(module, dtype)
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    if dtype != torch.float32 and keep:
        for name, submodule in module.named_modules():
            if any(part in name.split(".") for part in keep):
                submodule.to(torch.float32)


def _synchronize(module: torch.nn.Module) -> None:
    device = next(module.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _backend_name(settings: FastSampling) -> str:
    backend = settings.compile_backend
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)
