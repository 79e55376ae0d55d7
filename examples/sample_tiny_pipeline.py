"""Builds a tiny, untrained EDM pipeline, saves it, reloads it and samples a grid: a smoke test of the whole stack
that needs no data or download. Train a real model with `accelerate launch train_edm.py`."""

import argparse
from pathlib import Path

import torch
from diffusers.utils import make_image_grid

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="outputs/tiny-pipeline", help="where the pipeline and grid go")
    parser.add_argument("--num_inference_steps", type=int, default=18, help="sampler steps N (2N-1 evaluations)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights and the samples")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    unet = EDMPreconditionedUNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=8, num_class_labels=10,
    )
    EDMPipeline(unet=unet, scheduler=EDMHeunScheduler()).save_pretrained(args.output_dir)
    pipe = EDMPipeline.from_pretrained(args.output_dir)
    generators = [torch.Generator().manual_seed(args.seed * 1000 + i) for i in range(20)]
    images = pipe(batch_size=20, class_labels=[i // 2 for i in range(20)], generator=generators,
                  num_inference_steps=args.num_inference_steps).images
    grid_path = Path(args.output_dir) / "samples.png"
    make_image_grid(images, rows=10, cols=2).save(grid_path)
    print(f"Saved the pipeline to {args.output_dir} and a sample grid to {grid_path}")


if __name__ == "__main__":
    main()
