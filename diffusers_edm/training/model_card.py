"""The model card (README.md) written next to a trained EDM pipeline.

The generated text sits between two HTML comments (`GENERATED_BEGIN`, `GENERATED_END`); rewriting a card replaces
only that section and merges the YAML metadata, so text and metadata keys that the user added are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..pipelines.remote_code import INSTALL_HINT

if TYPE_CHECKING:
    from .evaluation import EvaluationScores

GENERATED_BEGIN = "<!-- diffusers-edm: generated section, rewritten at every save; edit outside these markers -->"
GENERATED_END = "<!-- diffusers-edm: end of generated section -->"

CARD_TEMPLATE = """---
{{ card_data }}
---

""" + GENERATED_BEGIN + """

# {{ model_name }}

{% if edm2 %}An [EDM2](https://arxiv.org/abs/2312.02696) diffusion model (Karras et al. 2024, "Analyzing and Improving
the Training Dynamics of Diffusion Models"; EDM's framework with a magnitude-preserving network){% else %}An
[EDM](https://arxiv.org/abs/2206.00364) diffusion model (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models"){% endif %} trained with diffusers-edm on
{{ dataset_description }}: {{ conditioning }}, {{ resolution }}x{{ resolution }} pixels, {{ channels }} channel(s)
{%- if vae %}, denoised in the latent space of `{{ vae }}` (the pipeline's `vae` decodes the samples){% endif %}.
{% if phema_export_std %}The weights are the post-hoc EMA with σ_rel {{ phema_export_std }} (EDM2's power-function
average of the training weights).
{% else %}The weights are the exponential moving average of the training weights.
{% endif %}
{% if grid_path %}![Samples]({{ grid_path }})

*EMA samples after {{ kimg }} kimg ({{ steps }} steps){% if prompts %}, one row per prompt{% elif conditional %},
one row per class{% endif %}.*
{% endif %}
{% if evaluation %}
## Evaluation

{{ evaluation.metric_label }} of the EMA weights after {{ "%g" | format(evaluation.latest_kimg) }} kimg:
**{{ "%.4g" | format(evaluation.latest) }}** (best: {{ "%.4g" | format(evaluation.best) }}, after
{{ "%g" | format(evaluation.best_kimg) }} kimg), from {{ evaluation.num_images }} samples (seeds
0-{{ evaluation.num_images - 1 }}, {{ evaluation.num_inference_steps }} sampler steps) against the statistics of
{{ reference }}, with the `{{ detector }}` feature network.
{% endif %}

## Usage

{% if prompts %}```python
import torch
from diffusers_edm import EDMTextToImagePipeline

pipe = EDMTextToImagePipeline.from_pretrained("{{ repo_id }}")
images = pipe({{ prompts[0] | tojson }}, num_images_per_prompt=8, guidance_scale=2.0, num_inference_steps=18,
              generator=torch.Generator().manual_seed(0)).images
```

The prompts are encoded by `{{ text_encoder }}` (the pipeline's `text_encoder` and `tokenizer`); classifier-free
guidance contrasts them with the empty prompt, which the training showed in place of
{{ "%g" | format(caption_dropout * 100) }}% of the captions. Example prompts from the training captions:
{% for prompt in prompts %}
- "{{ prompt }}"
{%- endfor %}
{% else %}```python
import torch
from diffusers_edm import EDMPipeline

pipe = EDMPipeline.from_pretrained("{{ repo_id }}")
images = pipe(batch_size=8,{% if conditional %} class_labels={{ example_label }},{% endif %} num_inference_steps=18,
              generator=torch.Generator().manual_seed(0)).images
```
{% endif %}

{{ install_hint }}. `DiffusionPipeline.from_pretrained("{{ repo_id }}",
trust_remote_code=True)` also works once it is installed: the repository's `pipeline_diffusers_edm.py` only imports it.

## Training

{% if base_model %}Fine-tuned from `{{ base_model }}`.
{% endif %}Trained for {{ kimg }} thousand images ({{ steps }} optimizer steps of {{ batch_size }} images) with
{{ loss_description }},
{% if augment_p > 0 %}non-leaky augmentation (p = {{ augment_p }}, the network is conditioned on the augment labels,
zero at sampling){% else %}no augmentation{% endif %}, Adam (lr {{ learning_rate }}, ramp-up {{ lr_rampup_kimg }}
kimg{% if lr_schedule == "edm2" %}, then EDM2's decay as 1/√(steps / {{ ref_batches }}){% endif %})
{% if phema_export_std %}and post-hoc EMAs (σ_rel {{ phema_stds }} tracked; the weights are σ_rel
{{ phema_export_std }}).
{% else %}and an EMA with a half-life of {{ ema_halflife_kimg }} kimg.{% endif %}

| setting | value |
|---|---|
{% for key, value in config %}| {{ key }} | `{{ value }}` |
{% endfor %}
""" + GENERATED_END + """
"""

SECRET_KEYS = frozenset({"hub_token"})
HIDDEN_KEYS = SECRET_KEYS | {"hub_token_file"}
"""Settings never shown in the card."""
PATH_KEYS = frozenset({"output_dir", "train_data_dir", "model_config", "cache_dir", "resume_from_checkpoint",
                       "eval_ref", "eval_detector", "eval_detector_path", "logging_dir", "decoded_cache_dir"})
"""Settings holding local paths, shown by their file or folder name only."""
TAGS = ["edm", "diffusers_edm", "diffusers", "diffusers-training"]

CARD_SETTINGS = {
    "preset": "preset", "dataset_name": "dataset", "train_data_dir": "image folder", "resolution": "resolution",
    "center_crop": "center crop", "xflip": "dataset x-flip", "random_flip": "random flip",
    "max_train_samples": "images used", "arch": "architecture", "model_channels": "model channels",
    "channel_mult": "channel multipliers", "layers_per_block": "blocks per level",
    "attn_resolutions": "attention resolutions", "dropout": "dropout", "label_dropout": "label dropout",
    "model_config": "model config", "pretrained_model_name_or_path": "fine-tuned from", "precond": "preconditioning",
    "sigma_data": "σ_data", "p_mean": "P_mean", "p_std": "P_std", "augment_p": "augmentation probability",
    "vae": "VAE (latent space)", "caption_column": "caption column", "text_encoder": "text encoder",
    "caption_dropout": "caption dropout", "loss": "loss", "duration_kimg": "duration (kimg)",
    "learning_rate": "learning rate",
    "lr_schedule": "lr schedule", "ref_batches": "lr decay after (steps)", "lr_rampup_kimg": "lr ramp-up (kimg)",
    "adam_beta2": "Adam β₂", "ema_halflife_kimg": "EMA half-life (kimg)", "phema_stds": "post-hoc EMA σ_rel",
    "phema_export_std": "exported post-hoc EMA σ_rel",
    "mixed_precision": "mixed precision", "seed": "seed",
}
"""The training settings the card shows, by argument name, with their labels: what a reader needs to understand and
repeat the run. Settings left unset (None, False) are not shown; the run folder's `training_config.json` has them
all."""

_SECTION = re.compile(re.escape(GENERATED_BEGIN.split(",")[0]) + r".*?-->.*?" + re.escape(GENERATED_END), re.DOTALL)
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)^---[ \t]*$\r?\n?", re.DOTALL | re.MULTILINE)
_ABSOLUTE_PATH = re.compile(r"(?<!\S)(?:~|[A-Za-z]:)?[\\/]\S*")
_LEGACY_SIGNATURE = "trained with diffusers-edm on"  # cards written before the markers existed


def training_config_rows(config: dict) -> list[tuple[str, str]]:
    """The training settings shown in the card ([`CARD_SETTINGS`] that are set), local paths reduced to their file or
    folder name; never a secret."""
    return [(label, _public_value(key, config[key])) for key, label in CARD_SETTINGS.items()
            if key in config and key not in HIDDEN_KEYS and config[key] not in (None, False, [])]


def _public_value(key: str, value: object) -> str:
    """A setting as shown in the card: paths by their file or folder name, URLs and everything else as they are."""
    if not isinstance(value, str) or "://" in value:
        return str(value)
    hub_or_path = key in ("dataset_name", "pretrained_model_name_or_path", "vae", "text_encoder")
    if key in PATH_KEYS or _is_absolute(value) or (hub_or_path and _is_local_path(value)):
        return _file_name(value)
    return value


def _is_absolute(value: str) -> bool:
    """Whether `value` is an absolute, home-relative (~) or Windows drive path."""
    return value.startswith("~") or os.path.isabs(value) or re.match(r"[A-Za-z]:[\\/]", value) is not None


def _is_local_path(value: str) -> bool:
    """Whether a --dataset_name is a local path rather than a Hub id ("name" or "owner/name")."""
    return _is_absolute(value) or value.startswith(".") or "\\" in value or value.count("/") > 1 or \
        os.path.exists(value)


def _file_name(value: str) -> str:
    """The last component of a POSIX or Windows path ("" stays "")."""
    parts = re.split(r"[\\/]", value.rstrip("\\/"))
    return parts[-1] or value


def strip_local_paths(text: str) -> str:
    """`text` with every absolute or home-relative path replaced by its file or folder name."""

    def name(match: re.Match) -> str:
        token = match.group(0)
        core = token.rstrip(").,;:")
        return _file_name(core) + token[len(core):]

    return _ABSOLUTE_PATH.sub(name, text)


def write_model_card(
    output_dir: str | Path,
    *,
    repo_id: str,
    config: dict,
    dataset_description: str,
    hub_dataset: str | None,
    resolution: int,
    channels: int,
    num_classes: int,
    steps: int,
    kimg: float,
    batch_size: int,
    grid_path: str | None,
    evaluation: EvaluationScores | None = None,
    loss_description: str,
    base_model: str | None = None,
    class_names: list[str] | None = None,
    prompts: list[str] | None = None,
) -> Path:
    """Writes README.md with YAML metadata (library diffusers, unconditional-image-generation, tags edm,
    diffusers_edm and diffusers-training; with `evaluation`, a model-index of the latest and best score), the training
    configuration, the latest sample grid, the evaluation and a usage snippet. `loss_description` states the training
    loss; `base_model` is the fine-tuned model (a Hub id becomes the `base_model` metadata). An existing README.md
    keeps its text outside the generated section and its own metadata keys (see `merge_model_card`). No local path
    is shown. `class_names` (a conditional model's) make the usage example ask for a class by name; `prompts` (a
    text-to-image model's example captions) make it a text-to-image card, with the text encoder as a base model."""
    text_encoder = config.get("text_encoder") if prompts else None
    if base_model is None and text_encoder is not None:
        base_model = text_encoder
    hub_base_model = base_model if base_model is not None and not _is_local_path(base_model) else None
    if hub_dataset is not None and _is_local_path(hub_dataset):
        dataset_description = f"{dataset_description} ({_file_name(hub_dataset)})"
        hub_dataset = None
    dataset_description = strip_local_paths(dataset_description)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="diffusers",
        # The Hub has no class-conditional task: a conditional model gets no pipeline_tag, and the tag instead.
        pipeline_tag="text-to-image" if prompts else None if num_classes else "unconditional-image-generation",
        license=config.get("license", "apache-2.0"),
        tags=TAGS + (["text-to-image"] if prompts else ["class-conditional", "image-generation"] if num_classes
                     else ["unconditional-image-generation"]),
        datasets=[hub_dataset] if hub_dataset else None,
        eval_results=(_eval_results(evaluation, dataset_description, hub_dataset, bool(num_classes)) if evaluation
                      else None),
        model_name=model_name if evaluation else None,
        base_model=hub_base_model,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        dataset_description=dataset_description,
        conditioning=("text-to-image (captions)" if prompts else f"class-conditional ({num_classes} classes)"
                      if num_classes else "unconditional"),
        prompts=prompts, text_encoder=_public_value("text_encoder", text_encoder) if text_encoder else None,
        caption_dropout=config.get("caption_dropout") or 0,
        conditional=bool(num_classes),
        example_label=repr(class_names[0]) if class_names else 0,
        install_hint=INSTALL_HINT,
        resolution=resolution,
        channels=channels,
        grid_path=grid_path,
        steps=steps,
        kimg=f"{kimg:g}",
        batch_size=batch_size,
        config=training_config_rows(config),
        evaluation=evaluation,
        reference=_short_name(evaluation.reference) if evaluation else None,
        detector=_short_name(evaluation.detector) if evaluation else None,
        loss_description=loss_description,
        base_model=hub_base_model or (_file_name(base_model) if base_model else None),
        edm2=config.get("arch") == "edm2", vae=_public_value("vae", config["vae"]) if config.get("vae") else None,
        **{key: config.get(key) for key in ("augment_p", "learning_rate", "lr_rampup_kimg", "ema_halflife_kimg",
                                            "lr_schedule", "ref_batches", "phema_stds", "phema_export_std")},
    )
    path = Path(output_dir) / "README.md"
    text = merge_model_card(_read_text(path), card.content)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    os.replace(partial, path)
    return path


def merge_model_card(existing: str | None, generated: str) -> str:
    """The card `generated` merged into the `existing` README text.

    The YAML metadata is merged (the user's keys are kept, the generated ones updated, `tags` united) and the
    generated section replaces the one between the markers of `existing`; text outside the markers is kept. A
    README without markers keeps its text after the generated section, unless it is a card of an earlier version
    of diffusers-edm, which is replaced.
    """
    if not existing or not existing.strip():
        return generated
    old_metadata, old_body = split_front_matter(existing)
    new_metadata, new_body = split_front_matter(generated)
    section = _SECTION.search(new_body)
    if section is None:
        raise ValueError("The generated model card lacks its section markers.")
    if _SECTION.search(old_body):
        body = _SECTION.sub(lambda _: section.group(0), old_body, count=1)
    elif _LEGACY_SIGNATURE in old_body or not old_body.strip():
        body = new_body
    else:
        body = new_body.rstrip("\n") + "\n\n" + old_body.lstrip("\n")
    return _join_front_matter(_merge_metadata(old_metadata, new_metadata), body)


def split_front_matter(text: str) -> tuple[dict, str]:
    """The YAML metadata (empty when absent or invalid) and the Markdown body of a README."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        metadata = None
    return (metadata if isinstance(metadata, dict) else {}), text[match.end():]


def _merge_metadata(existing: dict, generated: dict) -> dict:
    """The existing metadata updated with the generated keys, tags united (existing first)."""
    merged = dict(existing)
    merged.update(generated)
    old_tags = existing.get("tags")
    old_tags = [old_tags] if isinstance(old_tags, str) else old_tags
    if isinstance(old_tags, list):
        merged["tags"] = list(dict.fromkeys([*old_tags, *generated.get("tags", [])]))
    return merged


def _join_front_matter(metadata: dict, body: str) -> str:
    """A README from its metadata (as a YAML front matter block) and body."""
    if not metadata:
        return body
    dumped = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{dumped}---\n{body}"


def _read_text(path: Path) -> str | None:
    """The text of `path`, or None when it is absent or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _eval_results(scores: EvaluationScores, dataset_description: str, hub_dataset: str | None,
                  conditional: bool) -> list[EvalResult]:
    """The model-index entries: the latest and the best value, e.g. "FID (latest, 10k samples)"."""
    task = "image-generation" if conditional else "unconditional-image-generation"
    common = dict(task_type=task, task_name="Image generation",
                  dataset_type=hub_dataset or "custom", dataset_name=hub_dataset or dataset_description,
                  metric_type=scores.metric, metric_config=_short_name(scores.detector))
    return [EvalResult(metric_value=value, metric_name=f"{scores.metric_label} ({which}, {scores.num_label} samples)",
                       **common) for which, value in (("latest", scores.latest), ("best", scores.best))]


def _short_name(source: str) -> str:
    """A URL or name as it is, a local path by its file name (the card must not show local folders)."""
    return source if "://" in source else Path(source).name
