# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reads official EDM snapshot pickles without executing any code they contain.

An official snapshot (`network-snapshot-*.pkl`, `edm-*.pkl`) is a plain `pickle` of a dict. Its networks are
"persistent" objects: each is pickled as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` where
`meta` holds the full source code of the defining module (`module_src`), which a normal `pickle.load` executes. This
module's unpickler maps that call, `dnnlib.util.EasyDict` and `torch.nn.ModuleDict` to inert records and numpy scalars
to Python numbers, rebuilds tensors with torch's own functions (the storage bytes are read with
`torch.load(weights_only=True)`), and refuses every other global, so no code from the file ever runs. Every tensor's
view is checked against its storage before torch sees it, so a crafted view can neither make torch grow the storage
(uninitialised memory) nor read outside it.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UnsafeCheckpointError


@dataclass
class PersistentObjectRecord:
    """What a `torch_utils.persistence` object is made of, kept as data.

    Attributes:
        class_name (`str`): name of the class in the embedded source, e.g. "EDMPrecond", "SongUNet", "Linear".
        version (`int` or `None`): format version of the persistence module (6 for EDM).
        state (`dict`): the object's `__dict__`: for modules `_parameters`, `_buffers`, `_modules`, `_init_args`,
            `_init_kwargs` and plain attributes such as `sigma_data`.
    """

    class_name: str
    version: int | None
    state: dict


class TorchModuleDictRecord:
    """A plain `torch.nn.ModuleDict` (EDM's encoder and decoder containers), kept as data: the pickle creates it with
    NEWOBJ and hands it the module's `__dict__` (`_parameters`, `_buffers`, `_modules`, ...) with BUILD.

    Attributes:
        class_name (`str`): "torch.nn.ModuleDict".
        state (`dict`): the module's `__dict__`.
    """

    class_name = "torch.nn.ModuleDict"

    def __new__(cls) -> TorchModuleDictRecord:
        record = super().__new__(cls)
        record.state = {}
        return record

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"torch.nn.ModuleDict state must be a dict, got {type(state).__name__}.")
        self.state = state


class EasyDictRecord(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access); only the items are kept."""

    def __setstate__(self, state: Any) -> None:  # EasyDict instances carry no state besides their items
        if state:
            raise UnsafeCheckpointError("dnnlib.util.EasyDict carries unexpected instance state.")


def _reconstruct_persistent_obj(meta: Any) -> PersistentObjectRecord:
    """Stand-in for `torch_utils.persistence._reconstruct_persistent_obj`: records the class name and the state and
    ignores `module_src` (the source code that the real function would execute)."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafeCheckpointError("a torch_utils persistent object has no meta dict of type 'class'.")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafeCheckpointError("a torch_utils persistent object lacks its class_name or state.")
    version = meta.get("version")
    return PersistentObjectRecord(class_name=class_name, version=version if isinstance(version, int) else None,
                                  state=dict(state))


def _load_storage_from_bytes(data: Any) -> torch.storage.TypedStorage | torch.UntypedStorage:
    """Replacement for `torch.storage._load_from_bytes` (which calls `torch.load(weights_only=False)`): reads the
    legacy-format storage bytes with `torch.load(weights_only=True)` on the CPU."""
    if not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"tensor storage data must be bytes, got {type(data).__name__}.")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
        raise UnsafeCheckpointError(
            f"a tensor storage could not be read with torch.load(weights_only=True): {_specific_reason(error)}"
        ) from error
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafeCheckpointError(f"tensor storage bytes decoded to a {type(storage).__name__}, not a storage.")
    return storage


def _specific_reason(error: Exception) -> str:
    """The line of a `torch.load` error that says what is wrong (its weights_only errors surround it with advice to
    load the file unsafely, which must not reach the user)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return (specific or lines or [type(error).__name__])[0]


TENSOR_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
                           torch.bfloat16, torch.float32, torch.float64})
"""Element types a snapshot tensor may have."""


@dataclass
class RefusedTensor:
    """Stands in for a pickled tensor whose view does not fit its storage; [`load_snapshot_pickle`] refuses the file,
    naming where the tensor sits. Nothing was allocated for it. It is unhashable, so it can only sit where the search
    for it looks (values of dicts, lists, tuples and module records), never in a set or a dict key.

    Attributes:
        reason (`str`): what is inconsistent, e.g. "declares 64 elements but its storage holds 1".
    """

    reason: str


def view_problem(storage: torch.storage.TypedStorage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> str | None:
    """What is wrong with the strided view (offset, size, stride) of `storage`, or None when it lies inside it.

    The view must have a known element type, as many strides as sizes, no negative size, stride or offset, its
    last element (offset + Σ (size_i − 1) stride_i) inside the storage, and no more elements than the storage holds
    (a snapshot's tensors never repeat elements with zero strides). Only integers are compared: nothing is allocated.
    """
    if storage.dtype not in TENSOR_DTYPES:
        return f"has element type {storage.dtype}, which a snapshot never holds"
    if len(size) != len(stride):
        return f"has {len(size)} sizes but {len(stride)} strides"
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        return f"has a negative size, stride or offset (size {size}, stride {stride}, offset {offset})"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        available = storage.size()
    numel = math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else offset
    if end > available or numel > available:
        return (f"declares {numel} elements (size {size}, stride {stride}, offset {offset}) but its storage holds"
                f" {available}")
    return None


def _check_no_hooks(backward_hooks: Any) -> None:
    if backward_hooks is not None and (not isinstance(backward_hooks, dict) or backward_hooks):
        raise UnsafeCheckpointError("a pickled tensor carries backward hooks; EDM snapshots never do.")


def _rebuild_tensor(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor | RefusedTensor:
    """`torch._utils._rebuild_tensor_v2` after checking that its arguments are plain tensor data, or a
    [`RefusedTensor`] when the view does not fit its storage (see [`view_problem`])."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafeCheckpointError(f"a tensor was rebuilt from a {type(storage).__name__}, not a typed storage.")
    integer_tuples = all(isinstance(shape, tuple) and all(isinstance(n, int) for n in shape)
                         for shape in (size, stride))
    if not isinstance(storage_offset, int) or not integer_tuples or not isinstance(requires_grad, bool):
        raise UnsafeCheckpointError("a tensor was rebuilt with malformed offset, size or stride.")
    _check_no_hooks(backward_hooks)
    if metadata:
        raise UnsafeCheckpointError("a pickled tensor carries metadata; EDM snapshots never do.")
    problem = view_problem(storage, storage_offset, size, stride)
    if problem is not None:
        return RefusedTensor(problem)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor | RefusedTensor:
    """`torch._utils._rebuild_parameter`, returning the plain tensor (only the values are needed)."""
    if not isinstance(data, (torch.Tensor, RefusedTensor)) or not isinstance(requires_grad, bool):
        raise UnsafeCheckpointError("a torch.nn.Parameter was rebuilt from something other than a tensor.")
    _check_no_hooks(backward_hooks)
    return data


class NumpyDtypeRecord:
    """Stand-in for `numpy.dtype` as the pickle rebuilds it (`dtype("f8", False, True)` then BUILD with its state):
    only plain boolean, integer, float and complex dtypes are accepted, so no object dtype can smuggle a pickled object
    into [`_numpy_scalar`]."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        try:
            dtype = np.dtype(name) if isinstance(name, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biufc":
            raise UnsafeCheckpointError(f"a numpy dtype {name!r} was pickled; EDM snapshots only hold numeric scalars.")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        byte_order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if byte_order not in ("<", ">", "|", "="):
            raise UnsafeCheckpointError(f"a numpy dtype carries an unexpected state {state!r}.")
        self.dtype = self.dtype.newbyteorder(byte_order if byte_order != "|" else "=")


def _numpy_scalar(dtype: Any, data: Any) -> bool | int | float | complex:
    """Stand-in for `numpy.core.multiarray.scalar`: the official networks compute some attributes with numpy (e.g.
    SongUNet's `skip_scale = np.sqrt(0.5)`), so snapshots hold numpy scalars; they are returned as Python numbers."""
    if not isinstance(dtype, NumpyDtypeRecord) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise UnsafeCheckpointError("a numpy scalar was pickled with something other than a numeric dtype and its"
                                    " bytes.")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


MAX_ARRAY_ELEMENTS = 1 << 20
"""Most elements a pickled numpy array may hold (EDM2's encoders record 4-element latent statistics)."""


class NumpyArrayRecord:
    """Stand-in for a pickled numpy array: `_reconstruct(ndarray, (0,), b"b")` then BUILD with (version, shape, dtype,
    fortran order, raw bytes). Only numeric dtypes, bytes that match the shape, and up to `MAX_ARRAY_ELEMENTS` elements
    are accepted; the array itself is `value`."""

    value: np.ndarray

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafeCheckpointError("a numpy array carries an unexpected state.")
        _, shape, dtype, fortran, data = state
        valid_shape = isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)
        if not (valid_shape and isinstance(dtype, NumpyDtypeRecord) and isinstance(data, bytes)):
            raise UnsafeCheckpointError("a numpy array was pickled with something other than a shape, a numeric dtype"
                                        " and its bytes.")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > MAX_ARRAY_ELEMENTS or len(data) != count * dtype.dtype.itemsize:
            raise UnsafeCheckpointError(f"a numpy array declares shape {shape} but holds {len(data)} bytes.")
        self.value = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C").copy()


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> NumpyArrayRecord:
    """Stand-in for `numpy.core.multiarray._reconstruct`: an empty [`NumpyArrayRecord`] for the BUILD that follows."""
    if cls is not NumpyArrayRecord:
        raise UnsafeCheckpointError("numpy's array reconstruction was asked for another class than ndarray.")
    return NumpyArrayRecord()


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("torch.nn.modules.container", "ModuleDict"): TorchModuleDictRecord,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("numpy", "dtype"): NumpyDtypeRecord,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # written by numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # written by numpy 2.x
    ("numpy", "ndarray"): NumpyArrayRecord,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}
"""The only globals an EDM snapshot may reference, each mapped to what the unpickler uses instead."""


class EDMSnapshotUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only [`SAFE_GLOBALS`] and raises [`UnsafeCheckpointError`] for any other
    global (`os.system`, `builtins.eval`, `subprocess.Popen`, unknown `torch_utils` functions, ...) and for
    persistent ids (which EDM snapshots, written with plain `pickle.dump`, never contain)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"Refusing to load the global '{module}.{name}': an EDM snapshot never references it, so the file is"
                " not an official EDM snapshot or it is unsafe (it may try to run code on load). Nothing in it was"
                " executed."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(
            "The pickle uses persistent ids (as torch.save files do); EDM snapshots are plain pickles and never do."
        )


_ZIP_MAGIC = b"PK\x03\x04"


def load_snapshot_pickle(path: str | os.PathLike) -> Any:
    """Unpickles an official EDM snapshot with [`EDMSnapshotUnpickler`], never executing code from the file.

    Args:
        path (`str` or `os.PathLike`): the `.pkl` file.

    Returns:
        The unpickled object, with persistent objects as [`PersistentObjectRecord`], `torch.nn.ModuleDict` as
        [`TorchModuleDictRecord`], `EasyDict` as [`EasyDictRecord`] and tensors as CPU `torch.Tensor`s.

    Raises:
        UnsafeCheckpointError: the pickle references a global outside [`SAFE_GLOBALS`], or a tensor's view does not
            fit its storage (see [`view_problem`]).
        FileNotFoundError: there is no file at `path`.
        ValueError: `path` is a directory or unreadable, or the file is not a pickle (e.g. a `torch.save` zip archive
            or a safetensors file) or is corrupt.
    """
    name = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name} is a directory; pass the snapshot .pkl file in it (e.g. network-snapshot-*.pkl).")
    try:
        with open(path, "rb") as f:
            contents = _unpickle(f, name)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} does not exist; pass the path of an EDM snapshot .pkl.") from None
    except PermissionError:
        raise ValueError(f"{name} cannot be read (permission denied); make it readable or copy it.") from None
    refused = _find_refused_tensor(contents)
    if refused is not None:
        where, tensor = refused
        raise UnsafeCheckpointError(
            f"{name}: tensor '{where}' {tensor.reason}; the file is corrupt or crafted (download or export it again)."
        )
    return contents


def _unpickle(f: io.BufferedReader, name: str) -> Any:
    """Checks that `f` starts like a pickle, then unpickles it with [`EDMSnapshotUnpickler`]."""
    header = f.read(2)
    if header[:2] == _ZIP_MAGIC[:2]:
        raise ValueError(
            f"{name} is a zip archive (a torch.save checkpoint, e.g. a training-state-*.pt), not a model pickle; pass"
            " a network snapshot .pkl written by the EDM or EDM2 training loop or downloaded from their releases."
        )
    if len(header) < 2 or header[0] != pickle.PROTO[0] or not 2 <= header[1] <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"{name} is not a pickle file (it starts with {header!r}); pass an EDM snapshot .pkl.")
    f.seek(0)
    try:
        return EDMSnapshotUnpickler(f).load()
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # corrupt pickles raise many different errors; report them as bad input
        raise ValueError(
            f"{name} could not be read as an EDM snapshot pickle ({type(error).__name__}: {error})."
        ) from error


_MODULE_ENTRIES = ("_parameters", "_buffers", "_modules")


def _find_refused_tensor(contents: Any) -> tuple[str, RefusedTensor] | None:
    """The first [`RefusedTensor`] in the unpickled contents and its dotted location (module entries named as in a
    `state_dict`, e.g. "ema.model.enc.16x16_conv.weight"), or None. Iterative, so deep nesting cannot overflow."""
    pending: list[tuple[str, Any]] = [("", contents)]
    seen: set[int] = set()
    while pending:
        where, item = pending.pop()
        if isinstance(item, RefusedTensor):
            return where or "<top level>", item
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (PersistentObjectRecord, TorchModuleDictRecord)):
            children = []
            for entry, value in item.state.items():  # a module's tensors and submodules are named without the entry
                children += value.items() if entry in _MODULE_ENTRIES and isinstance(value, dict) else [(entry, value)]
        elif isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, (list, tuple)):
            children = list(enumerate(item))
        else:
            continue
        pending += [(f"{where}.{key}" if where else str(key), value) for key, value in reversed(children)]
    return None
