# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reference statistics files in the format of EDM's `fid.py`: an `.npz` with `mu` (D,) and `sigma` (D, D), float64;
and EDM2's `.pkl` files, a dict with one `{"mu", "sigma"}` entry per metric (`fid`, `fd_dinov2`).

The official files (`https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz`,
`https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl`, ...) load unchanged, and files written by
[`save_reference`] load in `fid.py`. Nothing in them runs: `.npz` files are read with `allow_pickle=False`, `.pkl` files
with an unpickler that knows only numpy's array reconstruction and plain containers.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

try:  # numpy 2 (files written with numpy 1 name `numpy.core.multiarray`, with numpy 2 `numpy._core.multiarray`)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as _multiarray

from ..errors import ReferenceStatisticsError
from .downloads import cached_download, is_url

MAX_FEATURES = 100_000
"""Most features a reference file may hold (Inception has 2048, DINOv2 ViT-L 1024): a file declaring more is refused
before its arrays are read."""


def save_reference(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Writes `np.savez(path, mu=mu, sigma=sigma)` atomically (a temporary file renamed when complete).

    Args:
        path (`str` or `os.PathLike`): destination, conventionally ending in `.npz` (written as given).
        mu (`np.ndarray`): feature mean (D,).
        sigma (`np.ndarray`): feature covariance (D, D).
    """
    path = Path(path)
    if path.parent != Path("."):
        path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    try:
        with open(staging, "wb") as f:
            np.savez(f, mu=np.asarray(mu, dtype=np.float64), sigma=np.asarray(sigma, dtype=np.float64))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def load_reference(source: str | os.PathLike, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    Reads reference statistics from an `.npz` or EDM2 `.pkl` file or URL (downloaded once into the Hugging Face cache
    folder).

    Args:
        source (`str` or `os.PathLike`): a path, or an `http(s)://` URL such as
            `https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz`.
        metric (`str`, *optional*): the entry of an EDM2 `.pkl` file to read ("fid", "fd_dinov2"); the detector's
            metric.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: μ (D,) and Σ (D, D) in float64.

    Raises:
        ReferenceStatisticsError: the file cannot be read, lacks `mu`/`sigma` (or the metric's entry), or holds arrays
            of the wrong shape or non-finite values.
    """
    name = str(source)
    path = cached_download(name, "refs", flag="--ref") if is_url(name) else Path(source)
    if not path.is_file():
        raise ReferenceStatisticsError(
            f"Reference statistics {name} not found; create them with `python -m diffusers_edm.fid ref --data ..."
            " --dest REF.npz` or pass the path or URL of an existing .npz."
        )
    with open(path, "rb") as f:
        is_pickle = f.read(1) == pickle.PROTO
    if is_pickle:
        mu, sigma = _read_edm2_statistics(path, name, metric)
    else:
        mu, sigma = _read_npz_statistics(path, name)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ReferenceStatisticsError(
            f"{name} holds mu of shape {mu.shape} and sigma of shape {sigma.shape}; expected (D,) and (D, D)."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ReferenceStatisticsError(f"{name} holds non-finite statistics; recompute them with `python -m"
                                       " diffusers_edm.fid ref`.")
    _check_covariance(sigma, name)
    return mu, sigma


class _StatisticsUnpickler(pickle.Unpickler):
    """Resolves only numpy's array and scalar reconstruction (and its dtype), refusing every other global: an EDM2
    statistics file holds dicts of float arrays and nothing else."""

    _GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        _GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
        _GLOBALS[(_module, "scalar")] = _multiarray.scalar

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise ReferenceStatisticsError(f"refusing the global '{module}.{name}': statistics files hold only numpy"
                                           " arrays, so this one is not one (nothing in it was run).") from None

    def persistent_load(self, pid: object) -> object:
        raise ReferenceStatisticsError("the pickle uses persistent ids; statistics files never do.")


def _read_edm2_statistics(path: Path, name: str, metric: str | None) -> tuple[np.ndarray, np.ndarray]:
    """μ and Σ of `metric` from an EDM2 statistics pickle ({metric: {"mu", "sigma"}}), read without running code."""
    if os.path.getsize(path) > (MAX_FEATURES + 1) ** 2 * 8 * 2:
        raise ReferenceStatisticsError(f"{name} is larger than any statistics file; it is not one.")
    try:
        contents = _StatisticsUnpickler(io.BytesIO(path.read_bytes())).load()
    except ReferenceStatisticsError as error:
        raise ReferenceStatisticsError(f"{name}: {error}") from None
    except Exception as error:  # a corrupt pickle raises many kinds of errors; all are bad input
        raise ReferenceStatisticsError(f"Could not read reference statistics {name} ({type(error).__name__}:"
                                       f" {error}); pass an .npz or EDM2 .pkl statistics file.") from None
    entry = contents.get(metric) if isinstance(contents, dict) else None
    if not isinstance(entry, dict):
        found = sorted(contents) if isinstance(contents, dict) else type(contents).__name__
        raise ReferenceStatisticsError(f"{name} holds no '{metric}' statistics (it holds {found}); pass the"
                                       " statistics of this detector's metric.")
    arrays = [entry.get(key) for key in ("mu", "sigma")]
    if not all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays):
        raise ReferenceStatisticsError(f"{name}: its '{metric}' entry lacks float 'mu' and 'sigma' arrays.")
    return arrays[0].astype(np.float64), arrays[1].astype(np.float64)


def _read_npz_statistics(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """μ and Σ from an `.npz` with `mu` and `sigma` (EDM's `fid.py` format)."""
    try:
        _check_declared_shapes(path, name)
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("mu", "sigma") if key not in data.files]
            if missing:
                raise ReferenceStatisticsError(
                    f"{name} has no {' or '.join(repr(k) for k in missing)} array (it holds {sorted(data.files)});"
                    " reference files are .npz files with 'mu' and 'sigma', as written by `python -m"
                    " diffusers_edm.fid ref`."
                )
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, ReferenceStatisticsError):
            raise
        raise ReferenceStatisticsError(
            f"Could not read reference statistics {name} ({type(error).__name__}: {error}); pass an .npz file with"
            " 'mu' and 'sigma' arrays."
        ) from error


def _check_declared_shapes(path: Path, name: str) -> None:
    """Reads the `.npy` headers of the archive's arrays before any array: more than `MAX_FEATURES` features, or an
    array larger than its stored bytes allow, is refused before memory is allocated for it."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            if any(size > MAX_FEATURES for size in shape):
                raise ReferenceStatisticsError(f"{name}: {info.filename} declares shape {shape}, more than"
                                               f" {MAX_FEATURES:,} features; it is not a statistics file.")
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise ReferenceStatisticsError(f"{name}: {info.filename} declares shape {shape} but holds only"
                                               f" {info.file_size:,} bytes; the file is truncated or crafted.")


def _check_covariance(sigma: np.ndarray, name: str) -> None:
    """A covariance must be symmetric and positive semidefinite (up to rounding): otherwise the Fréchet distance is
    meaningless (a negative 'FID')."""
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if float(np.abs(sigma - sigma.T).max()) > 1e-6 * scale:
        raise ReferenceStatisticsError(f"{name}: sigma is not symmetric, so it is not a covariance; recompute the"
                                       " statistics with `python -m diffusers_edm.fid ref`.")
    smallest = float(np.linalg.eigvalsh(sigma).min())
    if smallest < -1e-6 * scale:
        raise ReferenceStatisticsError(f"{name}: sigma has the negative eigenvalue {smallest:.3g}, so it is not a"
                                       " covariance; recompute the statistics with `python -m diffusers_edm.fid ref`.")
