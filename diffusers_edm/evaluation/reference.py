# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reference statistics files in the format of EDM's `fid.py`: an `.npz` with `mu` (D,) and `sigma` (D, D), float64.

The official files (`https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz` etc.) load unchanged, and
files written by [`save_reference`] load in `fid.py`. They are read with `allow_pickle=False`: nothing in them runs.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

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


def load_reference(source: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """
    Reads reference statistics from an `.npz` file or URL (downloaded once into the Hugging Face cache folder).

    Args:
        source (`str` or `os.PathLike`): a path, or an `http(s)://` URL such as
            `https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz`.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: μ (D,) and Σ (D, D) in float64.

    Raises:
        ReferenceStatisticsError: the file cannot be read, lacks `mu`/`sigma`, or holds arrays of the wrong shape or
            non-finite values.
    """
    name = str(source)
    path = cached_download(name, "refs", flag="--ref") if is_url(name) else Path(source)
    if not path.is_file():
        raise ReferenceStatisticsError(
            f"Reference statistics {name} not found; create them with `python -m diffusers_edm.fid ref --data ..."
            " --dest REF.npz` or pass the path or URL of an existing .npz."
        )
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
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, ReferenceStatisticsError):
            raise
        raise ReferenceStatisticsError(
            f"Could not read reference statistics {name} ({type(error).__name__}: {error}); pass an .npz file with"
            " 'mu' and 'sigma' arrays."
        ) from error
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ReferenceStatisticsError(
            f"{name} holds mu of shape {mu.shape} and sigma of shape {sigma.shape}; expected (D,) and (D, D)."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ReferenceStatisticsError(f"{name} holds non-finite statistics; recompute them with `python -m"
                                       " diffusers_edm.fid ref`.")
    _check_covariance(sigma, name)
    return mu, sigma


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
