"""`train_edm.py --caption_column --text_encoder`: captions read from an image folder's metadata.jsonl, embedded once
into a reusable cache (the text encoder never in the training step), caption dropout to the empty prompt, a tiny run
that learns to follow a two-caption toy set on held-out seeds, exact resume, the text-to-image card, one-line
errors."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from diffusers_edm import EDMTextToImagePipeline
from diffusers_edm.commands.train import parse_args
from diffusers_edm.errors import DatasetError, TrainingError
from diffusers_edm.pipelines.text_encoding import encode_prompts
from diffusers_edm.training.text_conditioning import NULL_ROW, CaptionEmbeddings, prepare_caption_embeddings
from diffusers_edm.training.trainer import EDMTrainer

from .helpers import save_tiny_text_encoder
from .test_training import final_weights

SIDES = ("left", "right")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """64 noisy 8x8 images, half bright on the left ("a left square"), half on the right ("a right square"), with
    their captions in metadata.jsonl, and a tiny random bag-of-words CLIP over those words."""
    root = tmp_path_factory.mktemp("toy")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(64):
        side = SIDES[index % 2]
        pixels = np.full((8, 8), 30.0)
        pixels[:, slice(0, 4) if side == "left" else slice(4, 8)] = 220
        image = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(data / f"{index:03d}.png")
        rows.append({"file_name": f"{index:03d}.png", "text": f"a {side} square"})
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    save_tiny_text_encoder(root / "clip", words=("a", "left", "right", "square", "circle"), hidden_size=16,
                           bag_of_words=True)
    return {"data": str(data), "clip": str(root / "clip"), "cache": str(root / "cache")}


def text_args(toy, out, *extra):
    return parse_args(["--output_dir", str(out), "--train_data_dir", toy["data"], "--caption_column", "text",
                       "--text_encoder", toy["clip"], "--decoded_cache_dir", toy["cache"], "--report_to", "none",
                       "--model_channels", "16", "--channel_mult", "1,2", "--attn_resolutions", "4",
                       "--train_batch_size", "16", "--sample_every", "0", "--checkpointing_steps", "0",
                       "--samples_per_class", "2", "--num_inference_steps", "4", *extra])


def side_contrast(images: np.ndarray) -> np.ndarray:
    """Mean of the left half minus the right half, per image (B, H, W, 1) in [0, 1]."""
    return images[:, :, :4].mean(axis=(1, 2, 3)) - images[:, :, 4:].mean(axis=(1, 2, 3))


def test_a_tiny_text_run_follows_its_captions_on_held_out_seeds(toy, tmp_path):
    """An EDM2 text model (pooled embedding in the label path, cross-attention to the tokens) trained for 300 steps:
    images of held-out seeds are bright on the side their prompt names (the training seeds never reach them)."""
    EDMTrainer(text_args(toy, tmp_path / "run", "--arch", "edm2", "--max_train_steps", "300", "--lr_rampup_kimg",
                         "0.2")).train()
    pipe = EDMTextToImagePipeline.from_pretrained(tmp_path / "run")
    assert pipe.unet.config.cross_attention_dim == 16
    pipe.set_progress_bar_config(disable=True)
    for side, sign in (("left", 1), ("right", -1)):
        images = pipe(f"a {side} square", num_images_per_prompt=16, seeds=list(range(1000, 1016)),
                      guidance_scale=2.0, num_inference_steps=8, output_type="np").images
        assert (sign * side_contrast(images) > 0.1).mean() >= 0.8, side_contrast(images)


def test_the_card_grid_and_pipeline_of_a_text_run(toy, tmp_path):
    out = tmp_path / "run"
    EDMTrainer(text_args(toy, out, "--arch", "edm2", "--max_train_steps", "2", "--sample_every", "2")).train()
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-to-image" and "text-to-image" in card.data.tags
    assert 'pipe("a left square"' in card.text and '- "a right square"' in card.text
    assert "| text encoder | `clip` |" in card.text and "| caption dropout | `0.1` |" in card.text
    assert card.data.base_model is None  # a local text encoder is named in the text only
    assert (out / "samples.png").is_file() and (out / "text_encoder" / "config.json").is_file()


def test_caption_embeddings_are_computed_once_and_looked_up_exactly(toy, tmp_path):
    from accelerate import Accelerator

    from diffusers_edm.training.text_conditioning import load_text_components

    text_encoder, tokenizer = load_text_components(toy["clip"])
    captions = ["a left square", "a right square"]
    embeddings = prepare_caption_embeddings(captions, text_encoder, tokenizer, toy["clip"], str(tmp_path),
                                            Accelerator(cpu=True), cross_attention=True)
    written = (embeddings.folder / "tokens.npy").stat().st_mtime_ns
    again = prepare_caption_embeddings(captions, text_encoder, tokenizer, toy["clip"], str(tmp_path),
                                       Accelerator(cpu=True), cross_attention=True)
    assert again.folder == embeddings.folder and (again.folder / "tokens.npy").stat().st_mtime_ns == written
    other = prepare_caption_embeddings(["a circle"], text_encoder, tokenizer, toy["clip"], str(tmp_path),
                                       Accelerator(cpu=True), cross_attention=True)
    assert other.folder != embeddings.folder
    assert not list(tmp_path.glob("*.tmp-*"))

    expected = encode_prompts(text_encoder, tokenizer, ["a right square", "a left square", ""])
    kept = embeddings.condition(torch.tensor([1, 0]), 0.0, torch.device("cpu"))
    torch.testing.assert_close(kept["class_labels"], expected.pooled[:2], rtol=0, atol=0)
    torch.testing.assert_close(kept["encoder_hidden_states"], expected.tokens[:2], rtol=0, atol=0)
    assert torch.equal(kept["encoder_attention_mask"], expected.mask[:2])
    dropped = embeddings.condition(torch.tensor([1, 0, 1]), 0.999999, torch.device("cpu"))
    torch.testing.assert_close(dropped["class_labels"], expected.pooled[2:].expand(3, -1), rtol=0, atol=0)
    assert NULL_ROW == 0 and set(CaptionEmbeddings(embeddings.folder, False).condition(
        torch.tensor([0]), 0.0, torch.device("cpu"))) == {"class_labels"}


def test_a_text_run_resumes_exactly(toy, tmp_path):
    """Caption dropout draws from torch's CPU generator, which checkpoints restore: N + N steps equal 2N."""
    common = ["--arch", "edm2", "--caption_dropout", "0.5"]
    EDMTrainer(text_args(toy, tmp_path / "straight", *common, "--max_train_steps", "6")).train()
    EDMTrainer(text_args(toy, tmp_path / "split", *common, "--max_train_steps", "3")).train()
    EDMTrainer(text_args(toy, tmp_path / "split", *common, "--max_train_steps", "6",
                         "--resume_from_checkpoint", "latest")).train()
    for straight, split in zip(final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")):
        assert straight.keys() == split.keys()
        for name, value in straight.items():
            assert torch.equal(value, split[name]), name


def test_text_training_mistakes_are_one_line(toy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--caption_column", "text"])
    assert "--caption_column and --text_encoder go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--caption_column", "text", "--text_encoder", toy["clip"], "--label_dropout", "0.1"])
    assert "--caption_dropout" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="has no caption column 'caption'"):
        EDMTrainer(parse_args(["--output_dir", str(tmp_path / "a"), "--train_data_dir", toy["data"],
                               "--caption_column", "caption", "--text_encoder", toy["clip"]]))
    with pytest.raises(DatasetError, match="the built-in digits have class labels only"):
        EDMTrainer(parse_args(["--output_dir", str(tmp_path / "b"), "--caption_column", "text", "--text_encoder",
                               toy["clip"]]))
    with pytest.raises(TrainingError, match="no CLIP text model and tokenizer there"):
        EDMTrainer(text_args(dict(toy, clip=str(tmp_path)), tmp_path / "c"))
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"sample_size": 8, "in_channels": 1, "out_channels": 1, "num_class_labels": 8,
                                  "augment_dim": 0, "block_out_channels": [8, 16], "norm_num_groups": 4,
                                  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                                  "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1}))
    with pytest.raises(TrainingError, match="--model_config disagrees"):
        EDMTrainer(text_args(toy, tmp_path / "d", "--augment_p", "0", "--model_config", str(config)))


def test_a_text_run_in_a_vae_latent_space(toy, tmp_path):
    """Captions and latents together: the pipeline holds the text encoder and the VAE, and decodes prompted samples."""
    from .helpers import tiny_vae

    vae = tiny_vae()
    vae.register_to_config(latents_mean=None, latents_std=None)  # statistics from the data
    vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "run"
    EDMTrainer(text_args(toy, out, "--arch", "edm2", "--vae", str(tmp_path / "vae"), "--resolution", "16",
                         "--max_train_steps", "2")).train()
    pipe = EDMTextToImagePipeline.from_pretrained(out)
    assert pipe.vae is not None and pipe.text_encoder is not None and pipe.unet.config.in_channels == 4
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a left square", "a right square"], seeds=[0, 1], guidance_scale=2.0, num_inference_steps=2,
                  output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()


def test_dry_run_sizes_a_text_model_from_the_encoder_config(toy, capsys):
    from diffusers_edm.training.run_setup import dry_run

    summary = dry_run(text_args(toy, "unused", "--arch", "edm2"))
    assert summary["model"]["num_class_labels"] == 16 and summary["model"]["cross_attention_dim"] == 16
    pooled_only = dry_run(text_args(toy, "unused", "--arch", "ddpmpp"))["model"]
    assert pooled_only["num_class_labels"] == 16 and not pooled_only.get("cross_attention_dim")
