# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The text-to-image demonstration on the embedded digits (docs/text_to_image.md): captions that name the digit and
its stroke thickness ("a thick seven"), a model trained on them with train_edm.py, and how well it follows them.

    python benchmarks/captioned_digits.py make --out outputs/captioned-digits
    accelerate launch train_edm.py --train_data_dir outputs/captioned-digits/data --caption_column text \\
        --text_encoder outputs/captioned-digits/encoder --duration_kimg 100 --output_dir outputs/t2i-digits
    python benchmarks/captioned_digits.py evaluate --model outputs/t2i-digits --data outputs/captioned-digits \\
        --weights 1,1.5,2,3 --out docs/results/text_to_image.json --plot docs/images/text-to-image.png \\
        --grid docs/images/text-to-image-grid.png

`make` writes the digits at 16x16 (as the default job trains on them) into an image folder with a metadata.jsonl of
captions "a {thin|thick} {digit}": thick when the image holds more ink (mean pixel value) than the median of its
class, so each class is half thin, half thick. The text encoder is a word-level CLIP over the caption words, built
locally (`diffusers_edm.data.word_level_clip`): no pretrained encoder can be downloaded here.

`evaluate` generates, per guidance weight, `--per_caption` images of every one of the 20 captions (held-out seeds
from 100000 on, the same for every weight) and reports: how often the digits network classifies the image as the
requested digit, how often its ink falls on the requested side of that class's median, and FD_digits of all the
images to the training images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "thick")
HELD_OUT_SEED = 100_000
"""First seed of the evaluation's images (far from any seed the training or the sample grids use)."""


def caption(digit: int, thick: bool) -> str:
    return f"a {THICKNESS[int(thick)]} {DIGIT_NAMES[digit]}"


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The digits as the default job sees them (16x16, quantised as generated images are) and their classes."""
    from diffusers_edm.data import DataConfig, build_dataset

    dataset = build_dataset(DataConfig())
    images = torch.stack([dataset[i][0] for i in range(dataset.num_images)])
    pixels = (images * 127.5 + 128).clip(0, 255).to(torch.uint8)[:, 0].numpy()
    labels = np.array([int(dataset.label(i).argmax()) for i in range(dataset.num_images)])
    return pixels, labels


def ink(pixels: np.ndarray) -> np.ndarray:
    """Mean pixel value of each uint8 image (N, H, W)."""
    return pixels.reshape(len(pixels), -1).mean(axis=1)


def make(out: Path) -> None:
    from diffusers_edm.data.word_level_clip import save_word_level_clip

    pixels, labels = digits_uint8()
    amount = ink(pixels)
    medians = [float(np.median(amount[labels == digit])) for digit in range(10)]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (image, digit) in enumerate(zip(pixels, labels)):
        name = f"{index:04d}.png"
        Image.fromarray(image).save(data / name)
        rows.append({"file_name": name, "text": caption(int(digit), amount[index] > medians[digit])})
    (data / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (out / "thickness.json").write_text(json.dumps({"median_ink": medians}), encoding="utf-8")
    save_word_level_clip(out / "encoder", ["a", *THICKNESS, *DIGIT_NAMES])
    print(f"{len(rows)} captioned digits in {data}, the text encoder in {out / 'encoder'}")


def evaluate(args: argparse.Namespace) -> None:
    from diffusers_edm import EDMTextToImagePipeline
    from diffusers_edm.evaluation.detectors import load_detector
    from diffusers_edm.evaluation.statistics import frechet_distance

    medians = json.loads((Path(args.data) / "thickness.json").read_text())["median_ink"]
    pipe = EDMTextToImagePipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    detector = load_detector("digits")
    real, _ = digits_uint8()
    reference = features_of(detector, real)
    captions = [(digit, thick) for digit in range(10) for thick in (False, True)]
    seeds = list(range(HELD_OUT_SEED, HELD_OUT_SEED + args.per_caption))
    results = []
    for weight in args.weights:
        pixels, digits, thicks = [], [], []
        for digit, thick in captions:
            images = pipe(caption(digit, thick), num_images_per_prompt=len(seeds), seeds=seeds, guidance_scale=weight,
                          num_inference_steps=args.steps, output_type="np").images
            pixels.append((images[..., 0] * 255).astype(np.uint8))
            digits += [digit] * len(seeds)
            thicks += [thick] * len(seeds)
        pixels = np.concatenate(pixels)
        with torch.no_grad():
            predicted = detector.net(torch.from_numpy(pixels)[:, None]).argmax(dim=1).numpy()
        thick_seen = ink(pixels) > np.array(medians)[np.array(digits)]
        fd = frechet_distance(*features_of(detector, pixels), *reference)
        results.append({"guidance_scale": weight, "digit_accuracy": float((predicted == np.array(digits)).mean()),
                        "thickness_accuracy": float((thick_seen == np.array(thicks)).mean()), "fd_digits": fd,
                        "images": len(pixels)})
        print(json.dumps(results[-1]), flush=True)
    record = {"model": Path(args.model).name, "steps": args.steps, "per_caption": args.per_caption,
              "seeds": f"{seeds[0]}-{seeds[-1]} per caption", "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if args.plot:
        plot(results, args.plot)
    if args.grid:
        grid(pipe, args.grid, args.grid_weight, args.steps)


def features_of(detector, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the digits network's features of uint8 images (N, H, W)."""
    with torch.no_grad():
        features = detector.net(torch.from_numpy(pixels)[:, None], return_features=True).double().numpy()
    return features.mean(axis=0), np.cov(features, rowvar=False)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = [r["guidance_scale"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(weights, [r["digit_accuracy"] for r in results], "o-", label="requested digit")
    left.plot(weights, [r["thickness_accuracy"] for r in results], "s-", label="requested thickness")
    left.set(xlabel="guidance weight w", ylabel="share of images", ylim=(0, 1.02), title="Prompt following")
    left.axhline(0.5, color="gray", lw=0.5, ls=":")
    left.legend()
    right.plot(weights, [r["fd_digits"] for r in results], "o-", color="C3")
    right.set(xlabel="guidance weight w", ylabel="FD_digits", title="Distance to the digits")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def grid(pipe, path: str, weight: float, steps: int) -> None:
    """One row per prompt (every digit, thin then thick), eight seeds each."""
    from diffusers_edm.training.sample_grid import sample_grid

    prompts = [caption(digit, thick) for thick in (False, True) for digit in range(10)]
    images = pipe(prompts, num_images_per_prompt=8, seeds=list(range(HELD_OUT_SEED, HELD_OUT_SEED + 8)) * 20,
                  guidance_scale=weight, num_inference_steps=steps).images
    sample_grid(images, len(prompts), row_labels=prompts).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    making = commands.add_parser("make", help="write the captioned digits and the word-level text encoder")
    making.add_argument("--out", required=True)
    scoring = commands.add_parser("evaluate", help="prompt following and FD_digits per guidance weight")
    scoring.add_argument("--model", required=True)
    scoring.add_argument("--data", required=True, help="the folder `make` wrote")
    scoring.add_argument("--weights", type=lambda text: [float(w) for w in text.split(",")], default=[1, 1.5, 2, 3])
    scoring.add_argument("--per_caption", type=int, default=25)
    scoring.add_argument("--steps", type=int, default=18)
    scoring.add_argument("--out", required=True)
    scoring.add_argument("--plot", default=None)
    scoring.add_argument("--grid", default=None)
    scoring.add_argument("--grid_weight", type=float, default=2.0)
    args = parser.parse_args()
    if args.command == "make":
        make(Path(args.out))
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
