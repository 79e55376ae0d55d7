# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Sample quality of a digits model, measured with the package's digits feature network.

The network (`diffusers_edm/evaluation/digits_features.pt`, made by `benchmarks/digits_detector.py`) is a small CNN
trained on 80% of the real digits and called like NVIDIA's TorchScript Inception. For conditional samples (100 per
class by default) this reports

* FD: the Fréchet distance between the network's 128-d features of the samples and of all real images (the FID recipe
  with a domain-specific feature extractor: float64 means and unbiased covariances as in EDM's `fid.py`; lower is
  better);
* accuracy: how often the network recognises the requested class (higher is better);
* the same numbers for the 20% of the real images held out from its training, as the floor/ceiling a perfect
  generator would reach.

Every source is fed as 8-bit images, quantised as EDM's `generate.py` saves samples: `(x * 127.5 + 128).clip(0, 255)`,
truncated, for x in [-1, 1].

Usage:
    python benchmarks/digits_quality.py --pipeline edm-digits                 # an EDMPipeline folder
    python benchmarks/digits_quality.py --samples samples.npz                 # images [N,1,R,R] in [-1,1] + labels
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from diffusers_edm import EDMPipeline
from diffusers_edm.evaluation.detectors import DIGITS_DETECTOR_FILE
from diffusers_edm.evaluation.statistics import frechet_distance
from diffusers_edm.data import DataConfig, build_dataset


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → uint8, as EDM's `generate.py` saves samples."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def real_digits(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All real digits as uint8 (N, 1, R, R), and their class indices (N,)."""
    dataset = build_dataset(DataConfig(resolution=resolution))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))]).argmax(1)
    return to_uint8(images), labels


def held_out_indices(count: int) -> torch.Tensor:
    """The 20% of the real digits held out from the network's training (the split of `digits_detector.py`)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    return order[int(0.8 * count):]


@torch.no_grad()
def features_and_predictions(net: torch.jit.ScriptModule, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """float64 features (N, 128) and predicted classes (N,) of uint8 images."""
    features = net(images, return_features=True)
    return features.double().numpy(), net(images).argmax(1).numpy()


def fd(features: np.ndarray, reference: np.ndarray) -> float:
    """The Fréchet distance between two sets of features, from their means and unbiased covariances."""
    return frechet_distance(features.mean(0), np.cov(features, rowvar=False),
                            reference.mean(0), np.cov(reference, rowvar=False))


def pipeline_samples(folder: str, per_class: int, steps: int, first_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    pipe = EDMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(10).repeat_interleave(per_class)
    chunks = []
    for start in range(0, len(labels), 250):
        chunk = labels[start:start + 250]
        seeds = list(range(first_seed + start, first_seed + start + len(chunk)))
        chunks.append(pipe(seeds=seeds, class_labels=chunk.tolist(),
                           num_inference_steps=steps, output_type="pt").images * 2 - 1)
    return torch.cat(chunks), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="EDMPipeline folder of a conditional digits model")
    source.add_argument("--samples", help=".npz with 'images' [N,1,R,R] in [-1,1] and 'labels' [N]")
    parser.add_argument("--resolution", type=int, default=16,
                        help="resolution of the real digits (the network resizes every input to 16x16)")
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--num_inference_steps", type=int, default=18)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds first_seed, first_seed + 1, ... (pipeline)")
    parser.add_argument("--output", help="write the numbers to this JSON file")
    args = parser.parse_args()

    net = torch.jit.load(str(DIGITS_DETECTOR_FILE), map_location="cpu").eval()
    images, labels = real_digits(args.resolution)
    held_out = held_out_indices(len(images))
    real_features, _ = features_and_predictions(net, images)
    held_features, held_predictions = features_and_predictions(net, images[held_out])

    if args.pipeline:
        samples, sample_labels = pipeline_samples(args.pipeline, args.per_class, args.num_inference_steps,
                                                  args.first_seed)
    else:
        data = np.load(args.samples)
        samples, sample_labels = torch.from_numpy(data["images"]).float(), torch.from_numpy(data["labels"]).long()
    sample_features, sample_predictions = features_and_predictions(net, to_uint8(samples))

    results = {
        "samples_fd": fd(sample_features, real_features),
        "samples_accuracy": float((sample_predictions == sample_labels.numpy()).mean()),
        "held_out_real_fd": fd(held_features, real_features),
        "held_out_real_accuracy": float((held_predictions == labels[held_out].numpy()).mean()),
        "num_samples": len(samples),
    }
    print(json.dumps(results, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
