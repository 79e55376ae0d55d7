# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) written next to a pipeline converted from an official EDM snapshot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import ModelCardData

from ..pipelines.remote_code import INSTALL_HINT
from ..sampler_presets import SamplerPreset
from .edm_snapshot import EDMSnapshot
from .paper_results import PaperResult, paper_result

_PRECONDITIONING_NAMES = {
    "EDMPrecond": "EDM (Karras et al. 2022, Table 1)",
    "VPPrecond": "VP (Song et al. 2021, Table 1 of Karras et al.)",
    "VEPrecond": "VE (Song et al. 2021, Table 1 of Karras et al.)",
    "iDDPMPrecond": "iDDPM (Nichol & Dhariwal 2021, Table 1 of Karras et al.)",
}
_NETWORK_NAMES = {
    ("SongUNet", "positional"): "DDPM++ (SongUNet with positional noise embedding)",
    ("SongUNet", "fourier"): "NCSN++ (SongUNet with Fourier noise embedding)",
    ("DhariwalUNet", None): "ADM (DhariwalUNet of Dhariwal & Nichol 2021)",
}

_CITATION = """@inproceedings{Karras2022edm,
  author    = {Tero Karras and Miika Aittala and Timo Aila and Samuli Laine},
  title     = {Elucidating the Design Space of Diffusion-Based Generative Models},
  booktitle = {Proc. NeurIPS},
  year      = {2022}
}"""


def network_description(snapshot: EDMSnapshot) -> str:
    """"DDPM++ (…)", "NCSN++ (…)" or "ADM (…)" for the snapshot's network."""
    embedding = None
    if snapshot.model_class == "SongUNet":
        embedding = snapshot.model_kwargs.get("embedding_type", "positional")
    return _NETWORK_NAMES.get((snapshot.model_class, embedding), snapshot.model_class)


def _results_section(reported: PaperResult | None, preset: SamplerPreset) -> str:
    """The card's "Reported results" section, with the command that reproduces the number (empty for other files)."""
    if reported is None:
        return ""
    recalled = ": check it against the paper" if "recalled" in reported.source else ""
    return (
        "## Reported results\n\n"
        f"FID {reported.fid} on {reported.dataset} with {reported.num_model_evaluations} network evaluations per image"
        f" (Karras et al. 2022, {reported.source}{recalled}): 50,000 images, the minimum over the seed sets 0–49999,"
        " 50000–99999 and 100000–149999. Reproduce it with the same detector and protocol (on a GPU):\n\n"
        "```bash\n"
        f"accelerate launch -m diffusers_edm.fid calc --model path/to/this/folder --preset {preset.name} \\\n"
        f"    --ref {reported.fid_reference} --seeds 0-49999 --repeats 3\n"
        "```\n\n"
    )


def write_conversion_model_card(
    output_dir: str | Path,
    *,
    snapshot: EDMSnapshot,
    preset: SamplerPreset,
    source_name: str,
    source_sha256: str,
    num_parameters: int,
) -> Path:
    """Writes `README.md`: YAML metadata (license cc-by-nc-sa-4.0, library diffusers, tags edm and diffusers_edm),
    the source file, the license, the architecture, the recommended sampler settings and a usage example.

    Args:
        output_dir (`str` or `Path`): the saved pipeline folder.
        snapshot (`EDMSnapshot`): the converted network.
        preset (`SamplerPreset`): the recommended sampler settings.
        source_name (`str`): file name of the snapshot pickle.
        source_sha256 (`str`): its SHA-256.
        num_parameters (`int`): parameter count of the network.
    """
    conditional = snapshot.label_dim > 0
    reported = paper_result(source_name)
    card_data = ModelCardData(
        license="cc-by-nc-sa-4.0",
        library_name="diffusers",
        pipeline_tag=None if conditional else "unconditional-image-generation",  # the Hub has no class-conditional task
        tags=["edm", "diffusers_edm", "diffusion", "class-conditional" if conditional else "unconditional"],
        model_name=Path(source_name).stem if reported else None,
        eval_results=[reported.eval_result()] if reported else None,
    )
    resolution = f"{snapshot.img_resolution}x{snapshot.img_resolution}"
    labels_argument = " class_labels=0," if conditional else ""
    churn = "deterministic (S_churn = 0)"
    if preset.s_churn:
        churn = (f"S_churn = {preset.s_churn}, S_tmin = {preset.s_tmin}, S_tmax = {preset.s_tmax},"
                 f" S_noise = {preset.s_noise}")
    recalled_note = (
        "\n**These values are recalled from the paper (Table 5) and were not re-checked against it; verify them before"
        " relying on them.**\n"
        if preset.recalled
        else ""
    )
    schedule = preset.scheduler_settings()
    edm_range = ""
    if snapshot.precond_class == "EDMPrecond" and snapshot.edm_sigma_range != (0, math.inf):
        edm_range = " (recorded σ range {} … {}, applied to the scheduler's σ range)".format(*snapshot.edm_sigma_range)
    architecture_rows = [
        ("preconditioning", f"{snapshot.precond_class}: {_PRECONDITIONING_NAMES[snapshot.precond_class]}"),
        ("preconditioning parameters", f"`{json.dumps(snapshot.preconditioning_kwargs)}`{edm_range}"),
        ("network", network_description(snapshot)),
        ("resolution / channels", f"{resolution}, {snapshot.img_channels} channel(s) in, {snapshot.out_channels} out"),
        ("classes", str(snapshot.label_dim) if conditional else "unconditional"),
        ("augment_dim", f"{snapshot.augment_dim} (augment labels are zero at sampling)" if snapshot.augment_dim
         else "0 (no augmentation conditioning)"),
        ("parameters", f"{num_parameters:,}"),
        ("network arguments", f"`{json.dumps(snapshot.backbone_config)}`"),
        ("trained with use_fp16", str(snapshot.use_fp16)),
    ]
    rows = "\n".join(f"| {key} | {value} |" for key, value in architecture_rows)
    card = f"""---
{card_data.to_yaml()}
---

# {Path(source_name).stem} (EDM, diffusers-edm)

An [EDM](https://arxiv.org/abs/2206.00364) diffusion model (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models"), {"class-conditional" if conditional else "unconditional"}, {resolution} pixels,
converted from an official EDM snapshot for use with [diffusers-edm](https://pypi.org/project/diffusers-edm/)'s
`EDMPipeline`. Dataset (as inferred for the sampler settings): {preset.dataset}. The weights are the snapshot's EMA
weights, stored as float32 safetensors.

## Source

* File: `{source_name}` (SHA-256 `{source_sha256}`), a snapshot of the official implementation (NVlabs/edm).
* Converted with `python -m diffusers_edm.convert_edm_checkpoint`, which reads the pickle with a restricted
  unpickler: the network source code embedded in the pickle was never executed.

## License

The official EDM weights are licensed by NVIDIA under **CC BY-NC-SA 4.0** (Creative Commons
Attribution-NonCommercial-ShareAlike 4.0), and so is this conversion: non-commercial use only, with attribution, and
derivatives under the same license.
The baseline models of the release derive from Song et al. (Apache-2.0) and Dhariwal & Nichol (MIT). The diffusers-edm
code is Apache-2.0 and contains no code of the official implementation.

## Architecture

| | |
|---|---|
{rows}

## Recommended sampler settings

{preset.num_inference_steps} steps of EDM's Heun sampler ({preset.num_model_evaluations} network evaluations),
{churn}, σ from {schedule["sigma_max"]:g} to {schedule["sigma_min"]:g} with ρ = {schedule["rho"]:g} (clamped to the
range the network supports).
Source: {preset.source} (preset `{preset.name}`).
{recalled_note}
The churn settings are in `scheduler/scheduler_config.json`; the step count is not a scheduler setting, so it is
stored with the others in `sampler_settings.json` — pass it as `num_inference_steps` (`python -m
diffusers_edm.generate --model path/to/this/folder` reads it from there).

{_results_section(reported, preset)}## Usage

```python
import json
import torch
from diffusers_edm import EDMPipeline

pipe = EDMPipeline.from_pretrained("path/to/this/folder")
with open("path/to/this/folder/sampler_settings.json") as f:
    steps = json.load(f)["num_inference_steps"]  # {preset.num_inference_steps}
images = pipe(batch_size=8,{labels_argument} num_inference_steps=steps,
              generator=torch.Generator().manual_seed(0)).images
```

{INSTALL_HINT}. `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` also works once it is installed:
the folder's `pipeline_diffusers_edm.py` only imports it. `pipe.unet(x, sigma, class_labels)` is the denoiser D(x; σ)
of the paper (Eq. 7).

## Citation

```bibtex
{_CITATION}
```
"""
    path = Path(output_dir) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
