# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Sample quality of the fast sampling paths on the digits, against the exact path (docs/performance.md).

Each configuration samples the same 1000 seeds (100 per class, 18 Heun steps = 35 model evaluations) of one digits
model through `diffusers_edm.pipelines.fast_sampling.accelerate_pipeline` and scores them with the project's digits feature
network (FD_digits against all real digits, class accuracy), as `benchmarks/sampling_quality.py` does; it also
reports how many pixels of the 8-bit images differ from the exact path's and by how much.

    python benchmarks/fast_path_quality.py --model outputs/digits --out docs/results/fast_paths.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sampling_quality import DigitsScorer, load

from diffusers_edm.pipelines.fast_sampling import accelerate_pipeline

CONFIGURATIONS = {
    "exact": {},  # float32, eager, the official attention (the CPU default)
    "bf16": {"dtype": "bf16"},
    "bf16+channels_last": {"dtype": "bf16", "channels_last": True},
    "compile": {"compile": "default"},  # inductor
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="EDMPipeline folder of a conditional digits model")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help="comma-separated subset of: " + ", ".join(CONFIGURATIONS))
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    torch.manual_seed(0)
    score = DigitsScorer()
    results, reference = [], None
    for name in args.configurations.split(","):
        pipe = load(args.model)
        if CONFIGURATIONS[name]:
            accelerate_pipeline(pipe, **CONFIGURATIONS[name])
        result = {"configuration": name, **score(pipe, num_inference_steps=18)}
        pixels = score.last_pixels.to(torch.int16)
        reference = pixels if reference is None else reference
        difference = (pixels - reference).abs()
        result.update(pixels_equal=float((difference == 0).float().mean()),
                      pixels_within_1=float((difference <= 1).float().mean()), max_pixel_difference=int(difference.max()))
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
