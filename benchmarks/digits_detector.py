# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The digits feature network: a small CNN trained on scikit-learn's 8x8 digits, exported as TorchScript with the
calling convention of NVIDIA's TorchScript Inception (the FID detector of EDM's `fid.py`).

    net(images_uint8)                        # (B, 10) float32 class logits
    net(images_uint8, return_features=True)  # (B, 128) float32 features, for Fréchet distances

`images_uint8` is a uint8 tensor (B, C, H, W) with C = 1 or 3 (3 channels are averaged) and any square size; the
network maps it to [-1, 1] by `x / 127.5 - 1` and resizes it to 16x16 (bilinear, antialiased) inside. The features are
the pre-activation output of the 128-unit hidden layer, so no unit is dead and their covariance is well conditioned.

Training is deterministic (single-threaded CPU, fixed seeds): the real digits at 16x16, quantised to uint8 as generated
images are (`(x * 127.5 + 128).clip(0, 255)`, truncated), 80% of them (the split of `benchmarks/digits_quality.py`),
Adam with lr 1e-3 for 40 epochs of batches of 64, with light Gaussian input noise. Rerunning the script in the same
checkout and environment rewrites the file byte for byte (TorchScript's debug information records source paths). Usage:

    OMP_NUM_THREADS=1 python benchmarks/digits_detector.py   # writes diffusers_edm/evaluation/digits_features.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffusers_edm.data import DataConfig, build_dataset

RESOLUTION = 16
"""Side of the images the float core sees; other sizes are resized to it inside the network."""

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "diffusers_edm" / "evaluation" / "digits_features.pt"


class DigitsCore(nn.Module):
    """The float network: images (B, 1, 16, 16) in [-1, 1] → 128 pre-activation features → 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * (RESOLUTION // 4) ** 2, 128),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = self.features(x)
        return features if return_features else self.head(features)


class DigitsFeatureNetwork(nn.Module):
    """The uint8 wrapper around [`DigitsCore`], called like NVIDIA's TorchScript Inception."""

    def __init__(self, core: DigitsCore) -> None:
        super().__init__()
        self.core = core
        self.resolution = RESOLUTION

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 1 or 3, H, H) → float32 (B, 1, 16, 16) in [-1, 1]: channel mean, `x / 127.5 - 1`, resize."""
        if images.dtype != torch.uint8:
            raise ValueError("the digits network takes uint8 images; quantise images x in [-1, 1] with"
                             " (x * 127.5 + 128).clamp(0, 255).to(torch.uint8).")
        if images.dim() != 4 or (images.shape[1] != 1 and images.shape[1] != 3) or images.shape[2] != images.shape[3]:
            raise ValueError(f"the digits network takes images (B, 1 or 3, H, H), got {list(images.shape)}.")
        # Averaging the integer values first is exact, so a grayscale image repeated to 3 channels gives the same
        # features as the grayscale image itself.
        x = images.to(torch.float32).mean(dim=1, keepdim=True) / 127.5 - 1
        if x.shape[-1] != self.resolution:
            size = (self.resolution, self.resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.core(self.preprocess(images), return_features)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → uint8 as EDM's `generate.py` saves samples: `(x * 127.5 + 128).clip(0, 255)`, truncated."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All real digits at 16x16 as uint8 (N, 1, 16, 16), and their class indices (N,)."""
    dataset = build_dataset(DataConfig(resolution=RESOLUTION))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))]).argmax(1)
    return to_uint8(images), labels


def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the 80% training and 20% held-out images (fixed seed 0, as `benchmarks/digits_quality.py`)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    return order[: int(0.8 * count)], order[int(0.8 * count):]


def train(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, epochs: int = 40) -> DigitsFeatureNetwork:
    """Trains the network on uint8 images with their class indices; returns it in eval mode."""
    torch.manual_seed(seed)
    network = DigitsFeatureNetwork(DigitsCore())
    inputs = network.preprocess(images)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 64):
            index = order[start:start + 64]
            # Light noise so the features do not key on the exact pixel grid of the training images.
            batch = inputs[index] + 0.05 * torch.randn_like(inputs[index])
            loss = F.cross_entropy(network.core(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return network.eval()


@torch.no_grad()
def accuracy(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of uint8 images whose largest logit is their class."""
    return (network(images).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="TorchScript file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batch order and noise")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        # TorchScript writes a module's constants in the iteration order of a Python set of their names, which varies
        # with string hashing; a fixed hash seed makes the file byte-for-byte reproducible.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    torch.set_num_threads(1)

    images, labels = real_digits()
    train_index, held_out = split(len(images))
    scripted = torch.jit.script(train(images[train_index], labels[train_index], seed=args.seed))
    torch.jit.save(scripted, str(args.output))
    print(f"held-out accuracy {accuracy(scripted, images[held_out], labels[held_out]):.4f} "
          f"({len(held_out)} images); wrote {args.output}")


if __name__ == "__main__":
    main()
