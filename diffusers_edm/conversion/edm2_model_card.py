# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) of a pipeline converted from an official EDM2 pickle."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from ..pipelines.remote_code import INSTALL_HINT
from ..sampler_presets import EDM2_MODEL_ROOT, EDM2_NUM_STEPS, EDM2Preset
from .edm2_snapshot import EDM2Snapshot

PAPER_URL = "https://arxiv.org/abs/2312.02696"
AUTOGUIDANCE_URL = "https://arxiv.org/abs/2406.02507"
_METRICS = {"fid": ("FID", "inception"), "fd_dinov2": ("FD-DINOv2", "dinov2")}
_REFS = "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/"

_CITATION = """@inproceedings{Karras2024edm2,
  author    = {Tero Karras and Miika Aittala and Jaakko Lehtinen and Janne Hellsten and Timo Aila and Samuli Laine},
  title     = {Analyzing and Improving the Training Dynamics of Diffusion Models},
  booktitle = {Proc. CVPR},
  year      = {2024}
}"""


def reference_statistics_url(preset: EDM2Preset) -> str:
    """The URL of the ImageNet statistics the preset's result is measured against (EDM2's dataset references)."""
    return f"{_REFS}img{preset.resolution}.pkl"


def write_edm2_model_card(output_dir: str | Path, *, snapshot: EDM2Snapshot, guide: EDM2Snapshot | None,
                          preset: EDM2Preset | None, source_sha256: str, num_parameters: int) -> Path:
    """Writes `README.md`: YAML metadata (license cc-by-nc-sa-4.0, the preset's reported result as `model-index`),
    the source files, the license, the latent space, the sampler and guidance, and a usage example."""
    source, conditional = Path(snapshot.name).name, snapshot.label_dim > 0
    eval_results = None
    if preset is not None:
        label, detector = _METRICS[preset.metric]
        eval_results = [EvalResult(task_type="image-generation", dataset_type="imagenet-1k",
                                   dataset_name=f"ImageNet {preset.resolution}x{preset.resolution}",
                                   metric_type=preset.metric, metric_value=preset.value,
                                   metric_name=f"{label} (50k samples, {2 * EDM2_NUM_STEPS - 1} NFE)",
                                   source_name=f"Karras et al. 2024 (generate_images.py --preset {preset.name})",
                                   source_url=AUTOGUIDANCE_URL if "autog" in preset.name else PAPER_URL)]
    card_data = ModelCardData(
        license="cc-by-nc-sa-4.0", library_name="diffusers", pipeline_tag=None if conditional else
        "unconditional-image-generation", tags=["edm2", "edm", "diffusers_edm", "diffusion",
                                                "class-conditional" if conditional else "unconditional"],
        model_name=Path(source).stem if preset else None, eval_results=eval_results,
    )
    space = "pixels"
    if snapshot.encoding is not None:
        space = (f"latents of `{snapshot.encoding.vae_name}` (the `vae` component; its config holds EDM2's latent"
                 " statistics)")
    guidance = "none (guidance_scale 1)"
    if guide is not None:
        kind = ("classifier-free guidance by an unconditional model" if guide.label_dim == 0 and conditional
                else "autoguidance by a smaller, shorter-trained model")
        weight = (f"w = {preset.guidance}" if preset
                  else "set `guidance_scale` (no preset of the official generator matches these files)")
        guidance = f"{kind} (`guide_unet`, from `{Path(guide.name).name}`), {weight}"
    result = ""
    if preset is not None:
        label, detector = _METRICS[preset.metric]
        result = (
            f"## Reported result\n\n{label} {preset.value} on ImageNet {preset.resolution}x{preset.resolution}"
            f" (`generate_images.py --preset {preset.name}` of the official code; 50,000 images, {EDM2_NUM_STEPS}"
            f" steps). Reproduce it on a GPU:\n\n```bash\naccelerate launch -m diffusers_edm.fid calc --model"
            f" path/to/this/folder --detector {detector} \\\n    --ref REF.npz --seeds 0-49999\n```\n\n"
            "with `REF.npz` the statistics of the ImageNet training images made by `python -m diffusers_edm.fid ref"
            f" --detector {detector}` (EDM2 measures against {reference_statistics_url(preset)}).\n\n"
        )
    labels = " class_labels=0," if conditional else ""
    title_guide = ', with the guide of "Guiding a Diffusion Model with a Bad Version of Itself"' if guide else ""
    sources = f"{EDM2_MODEL_ROOT}/{source} (SHA-256 `{source_sha256}`)"
    if guide is not None:
        sources += f"; guide: {EDM2_MODEL_ROOT}/{Path(guide.name).name}"
    shape = f"{snapshot.img_resolution}x{snapshot.img_resolution}x{snapshot.img_channels}"
    classes = snapshot.label_dim or "no"
    network = f"EDM2's magnitude-preserving U-Net ({num_parameters:,} parameters), {shape}, {classes} classes"
    network += f", on {space}"
    card = f"""---
{card_data.to_yaml()}
---

# {Path(source).stem} (EDM2)

The official EDM2 model `{source}` (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models"{title_guide}),
converted to a diffusers `EDMPipeline` with diffusers-edm without executing code from the pickle. The weights are
those of the file (float16, stored exactly).

* Source: {sources}
* License: **CC BY-NC-SA 4.0**, as the official weights (non-commercial use only).
* Network: {network}.
* Sampler: EDM's Heun sampler as EDM2's generator runs it: {EDM2_NUM_STEPS} steps
  ({2 * EDM2_NUM_STEPS - 1} evaluations), σ 0.002–80, ρ = 7, a float32 state.
* Guidance: {guidance}.

{result}## Usage

```python
import torch
from diffusers_edm import EDMPipeline

pipe = EDMPipeline.from_pretrained("path/to/this/folder").to("cuda")
images = pipe(seeds=range(8),{labels} num_inference_steps={EDM2_NUM_STEPS}).images  # the official generator's images
```

{INSTALL_HINT}. `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` also works once it is installed.

## Citation

```bibtex
{_CITATION}
```
"""
    path = Path(output_dir) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
