# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Throughput of the evaluation: detector feature extraction in images/s (the whole `compute_statistics` loop: uint8
batches to the device, grayscale repetition, the detector, the float64 statistics), and the time of the Fréchet
distance for each `--fd_method`.

    python benchmarks/fid_throughput.py                          # CPU: digits network, DINOv2 ViT-L shape
    python benchmarks/fid_throughput.py --device cuda --inception_path inception-2015-12-05.pt

DINOv2 runs with randomly initialised weights of `facebook/dinov2-large`'s shape (speed does not depend on the
weights), so it needs no download; Inception needs its file (`--inception_path`). One JSON line per measurement, then
a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import Dinov2Config, Dinov2Model

from diffusers_edm.evaluation.detectors import DINOv2Detector, TorchScriptDetector, load_detector
from diffusers_edm.evaluation.features import compute_statistics
from diffusers_edm.evaluation.statistics import FD_METHODS, frechet_distance


def dinov2_large_shape() -> DINOv2Detector:
    """A DINOv2 detector with ViT-L/14's configuration and random weights."""
    detector = DINOv2Detector.__new__(DINOv2Detector)
    detector.model = Dinov2Model(Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                              intermediate_size=4096, image_size=518, patch_size=14)).eval()
    detector._mean = torch.tensor((0.485, 0.456, 0.406)).reshape(1, 3, 1, 1)
    detector._std = torch.tensor((0.229, 0.224, 0.225)).reshape(1, 3, 1, 1)
    return detector


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def feature_throughput(name: str, detector, device: torch.device, images: torch.Tensor, batch: int) -> dict:
    """Images/s of `compute_statistics` over `images` (after one warm-up batch)."""
    detector.to(device)
    load = lambda indices: images[indices.start:indices.stop]  # noqa: E731
    compute_statistics(load, batch, detector, batch, description="warm-up")
    synchronize(device)
    start = time.perf_counter()
    statistics = compute_statistics(load, len(images), detector, batch, description=name)
    statistics.mean_and_covariance()
    seconds = time.perf_counter() - start
    return {"measure": "features", "detector": name, "device": str(device), "resolution": images.shape[-1],
            "channels": images.shape[1], "batch": batch, "images": len(images),
            "img_per_s": round(len(images) / seconds, 1), "seconds": round(seconds, 2)}


def fd_time(dim: int, method: str) -> dict:
    """Seconds of one Fréchet distance between two random covariances of width `dim`."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(dim + 500, dim)), rng.normal(0.1, 1.1, size=(dim + 500, dim))
    mu1, sigma1, mu2, sigma2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    start = time.perf_counter()
    value = frechet_distance(mu1, sigma1, mu2, sigma2, method=method)
    return {"measure": "frechet_distance", "features": dim, "method": method, "value": value,
            "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512, help="images per measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32, help="resolution of the Inception/DINOv2 inputs")
    parser.add_argument("--inception_path", default=None, help="NVIDIA's inception-2015-12-05.pt (optional)")
    parser.add_argument("--dinov2_images", type=int, default=32,
                        help="images for the DINOv2 measurement (ViT-L at 224x224 runs at about 1 img/s per CPU core)")
    parser.add_argument("--skip_dinov2", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (args.images, 3, args.resolution, args.resolution), dtype=torch.uint8,
                        generator=generator)
    digits = torch.randint(0, 256, (args.images, 1, 16, 16), dtype=torch.uint8, generator=generator)

    results = [feature_throughput("digits", load_detector("digits"), device, digits, args.batch)]
    if args.inception_path:
        inception = TorchScriptDetector(args.inception_path, name="inception", metric="fid")
        results.append(feature_throughput("inception", inception, device, rgb, args.batch))
    if not args.skip_dinov2:
        results.append(feature_throughput("dinov2 (ViT-L shape)", dinov2_large_shape(), device,
                                          rgb[:args.dinov2_images], min(args.batch, args.dinov2_images)))
    results += [fd_time(dim, method) for dim in (1024, 2048) for method in FD_METHODS]
    for result in results:
        print(json.dumps(result))
    print("\n| detector | device | input | batch | img/s |\n|---|---|---|---|---|")
    for r in results:
        if r["measure"] == "features":
            print(f"| {r['detector']} | {r['device']} | {r['channels']}x{r['resolution']}² | {r['batch']} |"
                  f" {r['img_per_s']} |")
    print("\n| features | method | seconds |\n|---|---|---|")
    for r in results:
        if r["measure"] == "frechet_distance":
            print(f"| {r['features']} | {r['method']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
