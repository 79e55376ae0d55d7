"""Measures what EDMHeunScheduler adds on top of the network evaluations of a sampling run.

Runs the full `EDMPipeline` loop and, separately, the same 2N-1 model calls alone, and reports the difference.
Usage: `python benchmarks/sampler_overhead.py [--device cuda] [--resolution 32] [--batch_size 64]`.
"""

import argparse
import time

import torch

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_inference_steps", type=int, default=18)
    parser.add_argument("--s_churn", type=float, default=40.0, help="churn on, so the noise draws are measured too")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)

    unet = EDMPreconditionedUNet2DModel(
        sample_size=args.resolution, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_labels=10,
    ).to(device).eval()
    pipe = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler(s_churn=args.s_churn, s_tmin=0.05, s_tmax=50))
    pipe.set_progress_bar_config(disable=True)
    labels = torch.arange(args.batch_size, device=device) % 10
    shape = (args.batch_size, 3, args.resolution, args.resolution)
    pipe.scheduler.set_timesteps(args.num_inference_steps, device=device)
    timesteps = pipe.scheduler.timesteps
    x = torch.randn(shape, device=device, dtype=torch.float64)

    @torch.no_grad()
    def network_only():
        for t in timesteps:
            unet(x, t, class_labels=labels)

    def full_pipeline():
        pipe(batch_size=args.batch_size, class_labels=labels, num_inference_steps=args.num_inference_steps,
             output_type="pt", generator=torch.Generator(device).manual_seed(0))

    network = timed(network_only, args.repeats, device)
    full = timed(full_pipeline, args.repeats, device)
    print(f"device={device} batch={args.batch_size} res={args.resolution} NFE={len(timesteps)}")
    print(f"network evaluations alone: {network * 1000:.1f} ms")
    print(f"full EDMPipeline run:      {full * 1000:.1f} ms")
    print(f"sampler + pipeline overhead: {(full - network) * 1000:.1f} ms ({(full / network - 1) * 100:.1f}%)")


if __name__ == "__main__":
    main()
