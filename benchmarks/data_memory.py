"""Peak memory of `build_dataset` and the training DataLoader on an image folder, from memory versus from the decoded-
image cache file.

Writes an image folder of `--images` 64x64 RGB PNGs in two class folders (or uses `--folder`), then measures, each in
a fresh process: building the dataset into the cache file (decoding every image), building it again (reusing the
cache), and building it in memory; each then draws `--batches` batches through a DataLoader with the trainer's batch
sampler and `--workers` worker processes. Prints one JSON line per measurement: the decoded size, the resident memory
after the imports, the peak resident memory of the process and of its largest worker, and the times.
Usage: `python benchmarks/data_memory.py [--images 50000] [--workers 2] [--batches 100]`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("cached", "cached_reuse", "in_memory")


def write_image_folder(folder: Path, count: int, size: int) -> None:
    """`count` PNGs of smooth random colour fields with noise (compressible like photographs, unlike pure noise)."""
    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
        path = folder / ("a" if index % 2 else "b") / f"{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, compress_level=1)


def resident_mib(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak) of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def measure(mode: str, folder: str, cache_dir: str, workers: int, batches: int, batch_size: int) -> dict:
    """Builds the dataset as `mode` says and draws `batches` batches; returns the measurements."""
    import torch

    from diffusers_edm.data import DataConfig, build_dataset
    from diffusers_edm.training.trainer import StreamBatchSampler

    torch.set_num_threads(1)
    after_imports = resident_mib("VmRSS")
    start = time.perf_counter()
    config = DataConfig(train_data_dir=folder, in_memory=mode == "in_memory", decoded_cache_dir=cache_dir,
                        num_workers=workers)
    dataset = build_dataset(config)
    build_seconds = time.perf_counter() - start
    after_build = resident_mib("VmHWM")
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StreamBatchSampler(len(dataset), batch_size, 0, 1, seed=0), num_workers=workers,
        generator=torch.Generator().manual_seed(0), prefetch_factor=2 if workers else None,
    )
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    load_seconds = time.perf_counter() - start
    del iterator
    decoded = dataset.num_images * dataset.num_channels * dataset.resolution**2
    return {
        "mode": mode, "images": dataset.num_images, "decoded_mib": round(decoded / 2**20, 1),
        "rss_after_imports_mib": round(after_imports, 1), "peak_rss_build_mib": round(after_build, 1),
        "peak_rss_mib": round(resident_mib("VmHWM"), 1),
        "peak_rss_largest_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "build_seconds": round(build_seconds, 2), "workers": workers,
        "loader_images_per_second": round(batches * batch_size / load_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000, help="images to generate (default 50,000)")
    parser.add_argument("--size", type=int, default=64, help="side of the generated images (default 64)")
    parser.add_argument("--folder", default=None, help="an existing image folder to measure instead")
    parser.add_argument("--workers", type=int, default=2, help="decoding and DataLoader worker processes")
    parser.add_argument("--batches", type=int, default=100, help="batches to draw after building")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--measure", choices=MODES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = measure(args.measure, args.folder, args.cache_dir, args.workers, args.batches, args.batch_size)
        print(json.dumps(result), flush=True)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder
        if folder is None:
            folder = os.path.join(scratch, "images")
            start = time.perf_counter()
            write_image_folder(Path(folder), args.images, args.size)
            print(f"Wrote {args.images} PNGs in {time.perf_counter() - start:.0f} s.", file=sys.stderr)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for mode in args.modes.split(","):
            command = [sys.executable, __file__, "--measure", mode, "--folder", folder, "--workers", str(args.workers),
                       "--batches", str(args.batches), "--batch_size", str(args.batch_size),
                       "--cache_dir", os.path.join(scratch, "decoded")]
            subprocess.run(command, check=True, env=env)


if __name__ == "__main__":
    main()
