"""The model card (README.md) written next to a trained EDM pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from .evaluation import EvaluationScores

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An [EDM](https://arxiv.org/abs/2206.00364) diffusion model (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models") trained with diffusers-edm on
{{ dataset_description }}: {{ conditioning }}, {{ resolution }}x{{ resolution }} pixels, {{ channels }} channel(s).
The weights are the exponential moving average of the training weights.

{% if grid_path %}![Samples]({{ grid_path }})

*EMA samples after {{ kimg }} kimg ({{ steps }} steps){% if conditional %}, one row per class{% endif %}.*
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

```python
import torch
from diffusers_edm import EDMPipeline

pipe = EDMPipeline.from_pretrained("{{ repo_id }}")
images = pipe(batch_size=8,{% if conditional %} class_labels=0,{% endif %} num_inference_steps=18,
              generator=torch.Generator().manual_seed(0)).images
```

`pip install diffusers-edm` first. `DiffusionPipeline.from_pretrained("{{ repo_id }}", trust_remote_code=True)`
also works once the package is installed.

## Training

Trained for {{ kimg }} thousand images ({{ steps }} optimizer steps of {{ batch_size }} images) with EDM's loss
(ln σ ~ N({{ p_mean }}, {{ p_std }}²), λ(σ) = (σ² + σ_data²)/(σ σ_data)², σ_data = {{ sigma_data }}),
{% if augment_p > 0 %}non-leaky augmentation (p = {{ augment_p }}, the network is conditioned on the augment labels,
zero at sampling){% else %}no augmentation{% endif %}, Adam (lr {{ learning_rate }}, ramp-up {{ lr_rampup_kimg }} kimg)
and an EMA with a half-life of {{ ema_halflife_kimg }} kimg.

| setting | value |
|---|---|
{% for key, value in config %}| `{{ key }}` | `{{ value }}` |
{% endfor %}
"""

SECRET_KEYS = frozenset({"hub_token"})


def training_config_rows(config: dict) -> list[tuple[str, str]]:
    """The training settings shown in the card, without secrets."""
    return [(key, str(value)) for key, value in sorted(config.items()) if key not in SECRET_KEYS]


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
) -> Path:
    """Writes README.md with YAML metadata (library diffusers, unconditional-image-generation, tags edm and
    diffusers_edm; with `evaluation`, a model-index of the latest and best score), the training configuration, the
    latest sample grid, the evaluation and a usage snippet."""
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license=config.get("license", "apache-2.0"),
        tags=["edm", "diffusers_edm", "diffusers", "unconditional-image-generation"]
        + (["class-conditional"] if num_classes else []),
        datasets=[hub_dataset] if hub_dataset else None,
        eval_results=_eval_results(evaluation, dataset_description, hub_dataset) if evaluation else None,
        model_name=model_name if evaluation else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        dataset_description=dataset_description,
        conditioning=f"class-conditional ({num_classes} classes)" if num_classes else "unconditional",
        conditional=bool(num_classes),
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
        **{key: config[key] for key in ("p_mean", "p_std", "sigma_data", "augment_p", "learning_rate",
                                        "lr_rampup_kimg", "ema_halflife_kimg")},
    )
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path


def _eval_results(scores: EvaluationScores, dataset_description: str, hub_dataset: str | None) -> list[EvalResult]:
    """The model-index entries: the latest and the best value, e.g. "FID (latest, 10k samples)"."""
    common = dict(task_type="unconditional-image-generation", task_name="Image generation",
                  dataset_type=hub_dataset or "custom", dataset_name=hub_dataset or dataset_description,
                  metric_type=scores.metric, metric_config=_short_name(scores.detector))
    return [EvalResult(metric_value=value, metric_name=f"{scores.metric_label} ({which}, {scores.num_label} samples)",
                       **common) for which, value in (("latest", scores.latest), ("best", scores.best))]


def _short_name(source: str) -> str:
    """A URL or name as it is, a local path by its file name (the card must not show local folders)."""
    return source if "://" in source else Path(source).name
