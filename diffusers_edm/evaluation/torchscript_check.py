# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Which TorchScript feature networks may run without the user vouching for them.

Loading a TorchScript file runs no pickled Python, but its graphs can call any TorchScript operator, and some of them
reach outside the tensors: `torch.from_file(path, shared=True)` maps a file of the user's into a tensor that the
network may read (a token) or write (a Python module). So a detector file is refused unless:

* before loading, none of its classes defines `__setstate__` (TorchScript runs it while loading), and
* after loading, every operator of every method of every module, with calls inlined, is on [`ALLOWED_OPERATORS`]:
  tensor arithmetic, shapes, and control flow, nothing that opens files, sockets or processes;

or the user passes `--trust_detector` for a file they know. The named detectors are pinned instead: the digits
network by its SHA-256, NVIDIA's Inception by its official URL and the checksum recorded at its first download.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator

import torch

from ..errors import DetectorError

_ARITHMETIC = (
    "abs acos add addcdiv addcmul addmm all amax amin any arange argmax argmin asin atan atan2 avg_pool1d "
    "avg_pool2d avg_pool3d baddbmm batch_norm bitwise_and bitwise_not bitwise_or bmm cat ceil chunk clamp clamp_max "
    "clamp_min clip clone conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d _convolution "
    "contiguous cos cosh cumsum detach div dropout einsum elu embedding empty empty_like eq erf exp expand "
    "expand_as expm1 feature_dropout fill_ flatten flip floor floor_divide fmod full full_like gather ge gelu "
    "group_norm gt hardsigmoid hardswish hardtanh index index_select instance_norm layer_norm le leaky_relu lerp "
    "linear log log10 log1p log2 log_softmax logical_and logical_not logical_or logsumexp lt masked_fill matmul max "
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices maximum mean min minimum mish "
    "mm mul narrow ne neg new_empty new_full new_ones new_zeros norm ones ones_like pad permute pixel_shuffle "
    "pixel_unshuffle pow prod reciprocal reflection_pad1d reflection_pad2d relu relu6 remainder repeat "
    "repeat_interleave replication_pad1d replication_pad2d reshape reshape_as round rsqrt "
    "scaled_dot_product_attention select sigmoid sign silu sin sinh size slice softmax softplus split sqrt square "
    "squeeze stack std sub sum t tanh tensor tensor_split tile to topk transpose tril triu type_as unbind unflatten "
    "unsqueeze var view view_as where zeros zeros_like adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
    "adaptive_max_pool1d adaptive_max_pool2d upsample_nearest1d upsample_nearest2d upsample_nearest3d "
    "upsample_linear1d upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d "
    "_upsample_nearest_exact2d _upsample_nearest_exact3d _upsample_bilinear2d_aa _upsample_bicubic2d_aa "
    "_upsample_lanczos2d_aa grid_sampler affine_grid_generator constant_pad_nd numel dim"
).split()
"""Tensor operators: arithmetic, reductions, shapes, layers and resampling (each also with a trailing `_`, in place)."""

_SCALARS_AND_CONTAINERS = (
    "Bool Float Int ScalarImplicit __and__ __contains__ __derive_index __getitem__ __interpolate __is__ __isnot__ "
    "__not__ __or__ __range_length __round_to_zero_floordiv __upsample __upsample_bilinear _set_item append copy_ "
    "dict extend floordiv format insert items keys len list pop values warn"
).split()
"""Python-level operations on numbers, strings, lists and dicts that TorchScript lowers to `aten::`."""

ALLOWED_OPERATORS = frozenset(
    {f"aten::{name}" for name in (*_ARITHMETIC, *_SCALARS_AND_CONTAINERS)}
    | {f"aten::{name}_" for name in _ARITHMETIC}
)
"""The `aten::` operators a detector may use without `--trust_detector`. `prim::` nodes (constants, attributes,
control flow, tuples, lists, exceptions) are allowed too, except those that call out of the graph: Python functions
(`prim::PythonOp`), and calls that inlining left in place."""

FORBIDDEN_PRIM = frozenset({"prim::PythonOp", "prim::CallFunction", "prim::CallMethod"})

_SETSTATE = re.compile(rb"\bdef\s+__setstate__\b")


def check_torchscript_archive(path: str | os.PathLike) -> None:
    """Refuses, before loading, a TorchScript file whose code defines `__setstate__` (run while loading).

    Raises:
        DetectorError: the file is not a TorchScript archive, or defines `__setstate__` (naming `--trust_detector`).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            code = [name for name in archive.namelist() if "/code/" in name and name.endswith(".py")]
            if not code:
                raise DetectorError(f"{path} is not a TorchScript file (no code in the archive); pass a file written"
                                    " by torch.jit.save.")
            for name in code:
                if _SETSTATE.search(archive.read(name)):
                    raise DetectorError(_untrusted(path, f"its class in {name} defines __setstate__, which runs while"
                                                         " the file loads"))
    except (zipfile.BadZipFile, OSError) as error:
        raise DetectorError(f"{path} is not a TorchScript file ({error}); pass a file written by torch.jit.save.") \
            from None


def check_torchscript_operators(module: torch.jit.ScriptModule, path: str | os.PathLike) -> None:
    """Refuses a loaded TorchScript module any of whose methods uses an operator outside [`ALLOWED_OPERATORS`].

    Raises:
        DetectorError: naming the first such operator and `--trust_detector`.
    """
    for kind in sorted(_operators(module)):
        allowed = kind in ALLOWED_OPERATORS or (kind.startswith("prim::") and kind not in FORBIDDEN_PRIM)
        if not allowed:
            raise DetectorError(_untrusted(path, f"it uses the operator {kind}, which is not plain tensor arithmetic"))


def _operators(module: torch.jit.ScriptModule) -> set[str]:
    """The node kinds of every method of `module` and its submodules, with function and method calls inlined."""
    kinds: set[str] = set()
    for submodule in module.modules():
        for name in submodule._c._method_names():
            graph = submodule._c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            kinds.update(node.kind() for node in _nodes(graph.block()))
    return kinds


def _nodes(block) -> Iterator:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _untrusted(path: str | os.PathLike, reason: str) -> str:
    return (f"refusing the detector {path}: {reason}. A TorchScript file can read and write your files; if you trust"
            " this one (you made it, or know who did), pass --trust_detector.")
