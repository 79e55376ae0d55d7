"""Sample quality of a digits model, measured with a digits classifier of our own.

Trains a small CNN on the real 8x8 digits (upsampled like the training data, 80/20 split, fixed seed), then reports for
conditional samples (100 per class by default):

* FD: the Fréchet distance between the classifier's 128-d penultimate features of the samples and of all real images
  (the FID recipe with a domain-specific feature extractor; lower is better);
* accuracy: how often the classifier recognises the requested class (higher is better);
* the same numbers for held-out real images, as the floor/ceiling a perfect generator would reach.

Usage:
    python benchmarks/digits_quality.py --pipeline edm-digits                 # an EDMPipeline folder
    python benchmarks/digits_quality.py --samples samples.npz                 # images [N,1,R,R] in [-1,1] + labels
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy import linalg
from torch import nn

from diffusers_edm import EDMPipeline
from diffusers_edm.training.data import DataConfig, build_dataset


class DigitsClassifier(nn.Module):
    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * (resolution // 4) ** 2, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def real_digits(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = build_dataset(DataConfig(resolution=resolution))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))]).argmax(1)
    return images, labels


def train_classifier(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, epochs: int = 40) -> DigitsClassifier:
    torch.manual_seed(seed)
    model = DigitsClassifier(images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            index = order[start:start + 64]
            # Light noise so the features do not key on the exact pixel grid of the training images.
            batch = images[index] + 0.05 * torch.randn_like(images[index])
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def features_and_predictions(model: DigitsClassifier, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    features = model.features(images.float())
    return features.double().numpy(), model.head(features).argmax(1).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with unbiased covariances (as EDM's fid.py). ReLU features
    have dead units, so both covariances get 1e-6·I to keep the square root well defined."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    offset = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + offset, np.cov(b, rowvar=False) + offset
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


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
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--num_inference_steps", type=int, default=18)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds first_seed, first_seed + 1, ... (pipeline)")
    parser.add_argument("--output", help="write the numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    images, labels = real_digits(args.resolution)
    images = ((images + 1) * 127.5).round() / 127.5 - 1  # 8-bit, like the samples below
    split = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, held_out = split[: int(0.8 * len(split))], split[int(0.8 * len(split)):]
    classifier = train_classifier(images[train], labels[train])
    real_features, _ = features_and_predictions(classifier, images)
    held_features, held_predictions = features_and_predictions(classifier, images[held_out])

    if args.pipeline:
        samples, sample_labels = pipeline_samples(args.pipeline, args.per_class, args.num_inference_steps,
                                                  args.first_seed)
    else:
        data = np.load(args.samples)
        samples, sample_labels = torch.from_numpy(data["images"]).float(), torch.from_numpy(data["labels"]).long()
    # Quantise like saved images (EDM's generate.py) so every source is compared as 8-bit images.
    samples = ((samples * 127.5 + 128).clamp(0, 255).floor() - 127.5) / 127.5
    sample_features, sample_predictions = features_and_predictions(classifier, samples)

    results = {
        "samples_fd": frechet_distance(sample_features, real_features),
        "samples_accuracy": float((sample_predictions == sample_labels.numpy()).mean()),
        "held_out_real_fd": frechet_distance(held_features, real_features),
        "held_out_real_accuracy": float((held_predictions == labels[held_out].numpy()).mean()),
        "num_samples": len(samples),
    }
    print(json.dumps(results, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
