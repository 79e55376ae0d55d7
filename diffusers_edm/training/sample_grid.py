# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The sample grid of a training run, made to be read on a model card: the images enlarged without blurring (nearest
neighbour) to at least `MIN_SIDE` pixels on the grid's shorter side, a gutter between them, and for a conditional
model one row per class headed by the class name."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256
"""Smallest size, in pixels, of the grid's shorter side."""

GUTTER = 2
"""Space between images, in pixels of the enlarged grid."""

BACKGROUND = (200, 200, 200)
"""Colour of the gutters and the label column: light grey, which sets off both dark and light images."""

FONT_SIZE = 14


def sample_grid(images: Sequence[Image.Image], rows: int, row_labels: Sequence[str] | None = None) -> Image.Image:
    """
    The images laid out in `rows` rows (filled row by row), enlarged by the smallest whole factor that makes the
    grid's shorter side at least [`MIN_SIDE`] pixels, with [`GUTTER`]-pixel gutters and, when `row_labels` are
    given, each row's label to its left.

    Args:
        images (`Sequence[PIL.Image.Image]`): equally sized images; `len(images)` must be a multiple of `rows`.
        rows (`int`): number of rows.
        row_labels (`Sequence[str]`, *optional*): one label per row (e.g. the class names).

    Returns:
        `PIL.Image.Image`: an RGB image.
    """
    if rows < 1 or len(images) % rows:
        raise ValueError(f"{len(images)} images do not fill {rows} rows.")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"Got {len(row_labels)} row labels for {rows} rows.")
    cols = len(images) // rows
    width, height = images[0].size
    font = ImageFont.load_default(size=FONT_SIZE)
    label_width = 0
    if row_labels is not None:
        label_width = max(math.ceil(font.getlength(label)) for label in row_labels) + 2 * GUTTER + 4
    scale = 1
    while min(cols * width * scale + (cols + 1) * GUTTER + label_width,
              rows * height * scale + (rows + 1) * GUTTER) < MIN_SIDE:
        scale += 1
    cell_w, cell_h = width * scale, height * scale
    grid = Image.new("RGB", (label_width + cols * cell_w + (cols + 1) * GUTTER, rows * cell_h + (rows + 1) * GUTTER),
                     BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for row in range(rows):
        top = GUTTER + row * (cell_h + GUTTER)
        if row_labels is not None:
            draw.text((GUTTER + 2, top + cell_h / 2), row_labels[row], fill=(0, 0, 0), font=font, anchor="lm")
        for col in range(cols):
            image = images[row * cols + col].convert("RGB").resize((cell_w, cell_h), Image.Resampling.NEAREST)
            grid.paste(image, (label_width + GUTTER + col * (cell_w + GUTTER), top))
    return grid


def grid_file_name(cur_nimg: int, step: int) -> str:
    """The file of the grid made after `step` optimizer steps and `cur_nimg` images: unique per step, and sorted by
    training time, e.g. `grid-000320kimg-step005000.png`."""
    return f"grid-{cur_nimg // 1000:06d}kimg-step{step:06d}.png"
