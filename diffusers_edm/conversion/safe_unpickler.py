# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reads official EDM snapshot pickles without executing any code they contain.

An official snapshot (`network-snapshot-*.pkl`, `edm-*.pkl`) is a plain `pickle` of a dict. Its networks are
"persistent" objects: each is pickled as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` where
`meta` holds the full source code of the defining module (`module_src`), which a normal `pickle.load` executes. This
module's unpickler maps that call, `dnnlib.util.EasyDict` and `torch.nn.ModuleDict` to inert records and numpy scalars
to Python numbers, rebuilds tensors with torch's own functions (the storage bytes are read with
`torch.load(weights_only=True)`), and refuses every other global, so no code from the file ever runs.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """Raised when a pickle references code that an EDM snapshot never needs (e.g. `os.system`), or a tensor storage
    that `torch.load(weights_only=True)` refuses. Nothing from the file has been executed when it is raised."""


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
            f"a tensor storage could not be read with torch.load(weights_only=True): {error}"
        ) from error
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafeCheckpointError(f"tensor storage bytes decoded to a {type(storage).__name__}, not a storage.")
    return storage


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
) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2` after checking that its arguments are plain tensor data."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafeCheckpointError(f"a tensor was rebuilt from a {type(storage).__name__}, not a storage.")
    integer_tuples = all(isinstance(shape, tuple) and all(isinstance(n, int) for n in shape)
                         for shape in (size, stride))
    if not isinstance(storage_offset, int) or not integer_tuples or not isinstance(requires_grad, bool):
        raise UnsafeCheckpointError("a tensor was rebuilt with malformed offset, size or stride.")
    _check_no_hooks(backward_hooks)
    if metadata:
        raise UnsafeCheckpointError("a pickled tensor carries metadata; EDM snapshots never do.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    """`torch._utils._rebuild_parameter`, returning the plain tensor (only the values are needed)."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
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
        raise UnsafeCheckpointError("a numpy scalar was pickled with something other than a numeric dtype and its bytes.")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


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
        UnsafeCheckpointError: the pickle references a global outside [`SAFE_GLOBALS`].
        ValueError: the file is not a pickle (e.g. a `torch.save` zip archive or a safetensors file) or is corrupt.
    """
    with open(path, "rb") as f:
        header = f.read(2)
        if header[:2] == _ZIP_MAGIC[:2]:
            raise ValueError(
                f"{os.fspath(path)} is a zip archive (a torch.save checkpoint?), not an EDM snapshot pickle; pass the"
                " .pkl written by EDM's training loop or downloaded from the EDM release."
            )
        if len(header) < 2 or header[0] != pickle.PROTO[0] or not 2 <= header[1] <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"{os.fspath(path)} is not a pickle file (it starts with {header!r}); pass an EDM snapshot .pkl."
            )
        f.seek(0)
        try:
            return EDMSnapshotUnpickler(f).load()
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # corrupt pickles raise many different errors; report them as bad input
            raise ValueError(
                f"{os.fspath(path)} could not be read as an EDM snapshot pickle ({type(error).__name__}: {error})."
            ) from error
