# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Feature networks ("detectors") for Fréchet distances. Every detector takes uint8 images (B, 3, H, W) at their
native size on its device and returns float32 features (B, D):

* `inception`: the network of EDM's `fid.py` — NVIDIA's TorchScript translation of TF Inception
  `inception-2015-12-05` (StyleGAN2-ADA's metric detector), 2048 pool features; it resizes to 299x299 inside the
  network. FID with it is comparable to the papers.
* `dinov2`: FD-DINOv2 as EDM2 computes it — DINOv2 ViT-L/14 (`facebook/dinov2-large` through `transformers`), the CLS
  token after the final layer norm (1024 features) of images resized to 224x224 (bicubic, antialiased), scaled to
  [0, 1] and normalised with ImageNet's mean and standard deviation.
* `digits`: this package's own small feature network for scikit-learn's 8x8 digits (128 features), shipped with the
  package, for the digits demo and its write-ups.
* a path to any TorchScript file called like Inception: `net(images_uint8, return_features=True)` → (B, D).

TorchScript files are loaded with `torch.jit.load`, which never unpickles Python objects; but TorchScript code can reach
the user's files (`torch.from_file`), so a file that is not pinned (by checksum or its official URL) must pass the
checks of [`diffusers_edm.evaluation.torchscript_check`] (tensor arithmetic only) or be trusted explicitly
(`trust=True`, `--trust_detector`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DetectorError, DownloadError, first_line
from .downloads import cached_download, check_sha256, sha256_of
from .torchscript_check import check_torchscript_archive, check_torchscript_operators

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
"""NVIDIA's TorchScript Inception: the same translation of TF `inception-2015-12-05` that EDM's `fid.py` loads from
its pickle form (`.../stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl`, which would run code when
unpickled)."""

INCEPTION_SHA256: str | None = None
"""Published SHA-256 of the file at [`INCEPTION_URL`]. `None`: not recorded yet, so the checksum of the first download
is recorded in the cache and every later use is checked against it (see `cached_download`)."""

DINOV2_MODEL_ID = "facebook/dinov2-large"
"""The `transformers` checkpoint of DINOv2 ViT-L/14, the network of EDM2's FD-DINOv2."""

DIGITS_DETECTOR_FILE = Path(__file__).with_name("digits_features.pt")
"""The package's digits feature network (made by `benchmarks/digits_detector.py`)."""

DIGITS_DETECTOR_SHA256 = "c08d979c0b265551cc331e6722462c2fce5b3dc1b12f830377e2c720bfac69b2"
"""SHA-256 of [`DIGITS_DETECTOR_FILE`], checked before it is loaded."""

DETECTOR_METRICS = {"inception": "fid", "dinov2": "fd_dinov2", "digits": "fd_digits"}
"""The detectors known by name and the name of their distance; anything else is read as the path of a TorchScript
file, whose distance is "fd"."""

DETECTOR_NAMES = tuple(DETECTOR_METRICS)


def detector_metric(detector: str) -> str:
    """The distance's name for a `--detector` value: "fid", "fd_dinov2", "fd_digits", or "fd" for a TorchScript file
    (also the key of an EDM2 statistics file)."""
    return DETECTOR_METRICS.get(detector, "fd")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DINOV2_RESOLUTION = 224


class FeatureDetector:
    """A feature network for Fréchet distances.

    Attributes:
        name (`str`): "inception", "dinov2", "digits" or the TorchScript file's path.
        metric (`str`): the distance's name in results: "fid", "fd_dinov2", "fd_digits" or "fd".
    """

    name: str
    metric: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features (B, D) float32 of uint8 images (B, 3, H, W) on the detector's device."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> FeatureDetector:
        """Moves the network to `device`; returns the detector."""
        raise NotImplementedError


class TorchScriptDetector(FeatureDetector):
    """A TorchScript network called as `net(images_uint8, return_features=True)` (the Inception convention).

    Args:
        path (`str` or `os.PathLike`): the TorchScript file.
        name (`str`, *optional*): the detector's name (default: the path).
        metric (`str`, defaults to "fd"): the distance's name in results.
        trusted (`bool`, defaults to `False`): skip the checks of [`check_torchscript_archive`] and
            [`check_torchscript_operators`] (for pinned files, or files the user vouches for).
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None, metric: str = "fd",
                 trusted: bool = False) -> None:
        self.name, self.metric = name or str(path), metric
        if not trusted:
            check_torchscript_archive(path)
        try:
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; NVIDIA's detector is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as error:
            raise DetectorError(f"Could not load the detector {path} as TorchScript ({first_line(error)}); pass a file"
                                " written by torch.jit.save (e.g. NVIDIA's inception-2015-12-05.pt).") from error
        if not trusted:
            check_torchscript_operators(self.net, path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, return_features=True).to(torch.float32)

    def to(self, device: torch.device | str) -> TorchScriptDetector:
        self.net.to(device)
        return self


class DINOv2Detector(FeatureDetector):
    """FD-DINOv2's feature network as EDM2 runs it, through `transformers`.

    Args:
        model_name_or_path (`str`, defaults to "facebook/dinov2-large"): a Hub id or a local folder of a
            `Dinov2Model` (loaded with `from_pretrained`, so the Hub cache and `HF_HUB_OFFLINE` apply).
    """

    name, metric = "dinov2", DETECTOR_METRICS["dinov2"]

    def __init__(self, model_name_or_path: str = DINOV2_MODEL_ID) -> None:
        from transformers import Dinov2Model

        try:
            self.model = Dinov2Model.from_pretrained(model_name_or_path).eval()
        except (OSError, ValueError) as error:
            raise DetectorError(f"Could not load the DINOv2 model {model_name_or_path!r} ({first_line(error)});"
                                " without internet, save it on another machine with Dinov2Model.from_pretrained("
                                f"'{DINOV2_MODEL_ID}').save_pretrained(DIR) and pass --detector_path DIR.") from error
        self._mean = torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1)

    @staticmethod
    def preprocess(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → bicubic antialiased resize to 224x224 in float32 → ÷255 → (x − mean) / std."""
        x = F.interpolate(images.to(torch.float32), size=(_DINOV2_RESOLUTION, _DINOV2_RESOLUTION), mode="bicubic",
                          align_corners=False, antialias=True)
        return (x / 255 - mean.to(x.device)) / std.to(x.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images, self._mean, self._std).to(self.model.dtype)
        return self.model(pixel_values=pixels).pooler_output.to(torch.float32)

    def to(self, device: torch.device | str) -> DINOv2Detector:
        self.model.to(device)
        return self


def load_detector(
    detector: str = "inception", detector_path: str | os.PathLike | None = None, trust: bool = False
) -> FeatureDetector:
    """
    A detector by name or TorchScript path (see the module docstring).

    Args:
        detector (`str`, defaults to "inception"): "inception", "dinov2", "digits", or the path of a TorchScript file.
        detector_path (`str` or `os.PathLike`, *optional*): a local copy of the named detector: the Inception `.pt`
            file (otherwise downloaded once into the Hugging Face cache folder) or a folder holding the DINOv2 model
            (otherwise `facebook/dinov2-large` from the Hub or its cache).
        trust (`bool`, defaults to `False`): run a TorchScript file that is not pinned without checking its
            operators (see [`diffusers_edm.evaluation.torchscript_check`]).

    Raises:
        DetectorError: unknown name, missing or unreadable file, no network offline (the message names the URL and
            `--detector_path`).
    """
    if detector not in DETECTOR_NAMES:
        if detector_path is not None:
            raise DetectorError(f"--detector_path is for the named detectors {DETECTOR_NAMES}; pass the TorchScript"
                                f" file {detector!r} with --detector alone.")
        if not os.path.isfile(detector):
            raise DetectorError(f"Unknown detector {detector!r}: use one of {', '.join(DETECTOR_NAMES)} or the path"
                                " of a TorchScript file called as net(images_uint8, return_features=True).")
        return TorchScriptDetector(detector, trusted=trust)
    if detector == "dinov2":
        return DINOv2Detector(str(detector_path) if detector_path is not None else DINOV2_MODEL_ID)
    if detector == "digits":
        if detector_path is not None:
            raise DetectorError("--detector_path does not apply to the digits detector, which ships with the package.")
        if sha256_of(DIGITS_DETECTOR_FILE) != DIGITS_DETECTOR_SHA256:
            raise DetectorError(f"{DIGITS_DETECTOR_FILE} is not the digits detector diffusers-edm ships (its SHA-256"
                                " differs); reinstall diffusers-edm.")
        return TorchScriptDetector(DIGITS_DETECTOR_FILE, name="digits", metric=DETECTOR_METRICS["digits"],
                                   trusted=True)
    path, pinned = _inception_file(detector_path)
    return TorchScriptDetector(path, name="inception", metric=DETECTOR_METRICS["inception"], trusted=pinned or trust)


def _inception_file(detector_path: str | os.PathLike | None) -> tuple[Path, bool]:
    """The Inception file, and whether it is pinned: downloaded from its official URL (checked against the checksum
    recorded at that download), or a local copy matching a published checksum."""
    if detector_path is None:
        try:
            return cached_download(INCEPTION_URL, "detectors", flag="--detector_path", sha256=INCEPTION_SHA256), True
        except DownloadError as error:
            raise DetectorError(str(error)) from error
    path = Path(detector_path)
    if not path.is_file():
        raise DetectorError(f"--detector_path {path} does not exist; download {INCEPTION_URL} and pass that file.")
    if INCEPTION_SHA256 is not None:
        try:
            check_sha256(path, INCEPTION_SHA256, f"--detector_path {path}", "--detector_path")
        except DownloadError as error:
            raise DetectorError(f"{error} For another feature network use --detector {path}.") from error
    return path, INCEPTION_SHA256 is not None
