"""Small feature networks written by the tests, in the calling convention of NVIDIA's TorchScript Inception
(`net(images_uint8, return_features=True)`), and image folders to score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import torch


class TinyDetector(torch.nn.Module):
    """A seeded convolution on x/127.5 − 1; features: per-channel spatial mean and max (16 per image)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        h = torch.tanh(self.conv(images.to(torch.float32) / 127.5 - 1))
        features = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return features if return_features else features.sum(dim=1, keepdim=True)


def write_detector(path: Path, seed: int = 0) -> Path:
    """Scripts a [`TinyDetector`] into `path`."""
    torch.jit.save(torch.jit.script(TinyDetector(seed).eval()), str(path))
    return path


def tiny_features(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The 16 features of uint8 images (N, 3, H, W), straight from the module (float64 numpy)."""
    with torch.no_grad():
        return TinyDetector(seed).eval()(torch.from_numpy(images), return_features=True).double().numpy()


def random_images(count: int, channels: int = 3, size: int = 12, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) images with smooth structure and noise."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size)
    base = np.sin(6 * grid * rng.uniform(0.5, 2, (count, channels, 1, 1)))
    images = 127 + 100 * base * np.cos(4 * grid[:, None]) + rng.normal(0, 20, (count, channels, size, size))
    return np.clip(images, 0, 255).astype(np.uint8)


def write_images(folder: Path, images: np.ndarray, names: list[str] | None = None) -> Path:
    """PNG files of uint8 (N, C, H, W) images, mode L for one channel."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        name = names[index] if names else f"{index:06d}.png"
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(pixels).save(folder / name)
    return folder


def mean_and_covariance(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ and the unbiased covariance, with numpy."""
    return features.mean(axis=0), np.cov(features, rowvar=False)
