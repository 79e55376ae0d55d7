"""Training with EDM2's recipe (`--arch edm2`), its official presets, and latent-space training through a VAE
(`--vae`): the recipe's defaults, the presets' numbers (`15_edm2_fullsize_configs.json`), a tiny latent run end to end,
exact resume with the latent cache and post-hoc EMA, the cache shared by processes, and mistakes as one-line
errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline
from diffusers_edm.commands.train import main as train_main
from diffusers_edm.commands.train import parse_args
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.data.cache import file_sha256
from diffusers_edm.training.latent_data import encode_dataset
from diffusers_edm.training.presets import EDM2_RECIPE, PRESETS
from diffusers_edm.training.run_setup import dry_run
from diffusers_edm.training.trainer import EDMTrainer, find_checkpoint
from tests.helpers import edm2_conformance_file, tiny_vae

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_EDM2 = ["--arch", "edm2", "--model_channels", "16", "--channel_mult", "1,2", "--attn_resolutions", "4",
             "--train_batch_size", "8", "--max_train_samples", "48", "--samples_per_class", "1",
             "--num_inference_steps", "2", "--logging_steps", "2", "--report_to", "none", "--sample_every", "0",
             "--lr_rampup_kimg", "0.02", "--ref_batches", "2"]

with open(edm2_conformance_file("15_edm2_fullsize_configs.json"), encoding="utf-8") as _f:
    FULLSIZE = json.load(_f)


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vae")
    vae = tiny_vae()
    vae.register_to_config(latents_mean=None, latents_std=None)  # a plain VAE: statistics from the data
    vae.save_pretrained(folder)
    return folder


def test_arch_edm2_brings_the_recipe_and_flags_override() -> None:
    args = parse_args(["--arch", "edm2"])
    assert {key: getattr(args, key) for key in EDM2_RECIPE} == EDM2_RECIPE
    assert (args.loss, args.lr_schedule, args.adam_beta2, args.augment_p) == ("edm2", "edm2", 0.99, 0.0)
    args = parse_args(["--arch", "edm2", "--learning_rate", "0.02", "--loss", "edm", "--phema_export_std", "0.07"])
    assert (args.learning_rate, args.loss, args.phema_export_std) == (0.02, "edm", 0.07)


def test_edm2_is_the_default_recipe_of_a_new_model_only() -> None:
    assert parse_args([]).arch == "edm2" and parse_args([]).phema_export_std == 0.15
    for flags in (["--pretrained_model_name_or_path", "run"], ["--model_config", "unet.json"], ["--arch", "ddpmpp"]):
        args = parse_args(flags)  # fine-tuning or a given config keeps EDM's recipe unless --arch edm2 asks for EDM2's
        assert (args.arch, args.loss, args.lr_schedule, args.phema_stds) == ("ddpmpp", "edm", "edm", None)
    assert parse_args(["--preset", "cifar10-cond-ddpmpp"]).arch == "ddpmpp"
    assert parse_args(["--pretrained_model_name_or_path", "run", "--arch", "edm2"]).loss == "edm2"


@pytest.mark.parametrize("preset", sorted(FULLSIZE))
def test_edm2_presets_are_the_official_configurations(preset: str, capsys) -> None:
    """Hyper-parameters and parameter count (dry run: no data read, no VAE weights loaded, offline)."""
    facts = FULLSIZE[preset]["training"]
    args = parse_args(["--preset", preset, "--dry_run"])
    assert args.learning_rate == facts["ref_lr"] and args.ref_batches == facts["ref_batches"]
    assert (args.p_mean, args.p_std, args.total_batch_size) == (facts["P_mean"], facts["P_std"], facts["batch"])
    assert args.duration_kimg * 1000 == facts["duration_nimg"] and args.lr_rampup_kimg == facts["rampup_Mimg"] * 1000
    assert args.dropout == FULLSIZE[preset]["network_kwargs"]["dropout"] and args.lr_schedule == "edm2"
    assert (args.vae is not None) == preset.startswith("edm2-img512")
    summary = dry_run(args)
    assert summary["parameters"] == FULLSIZE[preset]["num_parameters"]
    assert summary["images"] == facts["duration_nimg"] and summary["images_per_step"] == 2048
    kwargs = FULLSIZE[preset]["network_kwargs"]
    assert summary["image_shape"] == [kwargs["img_channels"], kwargs["img_resolution"], kwargs["img_resolution"]]
    capsys.readouterr()


MISTAKES = {
    # case: (arguments, expected text of the one error line)
    "edm2_loss_without_head": (["--arch", "ddpmpp", "--loss", "edm2", "--max_train_steps", "1"],
                               "--loss edm2 weights the loss by"),
    "edm2_with_augmentation": (["--arch", "edm2", "--augment_p", "0.12"], "no augmentation conditioning"),
    "edm2_with_label_dropout": (["--arch", "edm2", "--label_dropout", "0.1"], "no label dropout"),
    "preset_of_another_size": (["--preset", "edm2-img64-xs", "--mixed_precision", "no", "--max_train_steps", "1"],
                               "trains on 64x64 images"),
    "vae_random_flip": (["--arch", "edm2", "--vae", "x", "--random_flip"], "--random_flip mirrors images"),
    "vae_with_augmentation": (["--arch", "ddpmpp", "--vae", "x", "--augment_p", "0.1"], "--vae trains on latents"),
    "vae_resolution": (["--arch", "edm2", "--vae", "{vae}", "--resolution", "15", "--max_train_steps", "1"],
                       "downsamples 2x, which does not divide --resolution 15"),
    "vae_missing": (["--arch", "edm2", "--vae", "{tmp}/absent", "--max_train_steps", "1"], "could not be loaded"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_mistakes_are_one_line_errors_before_training(case: str, vae_folder, tmp_path, capsys) -> None:
    arguments, text = MISTAKES[case]
    argv = [a.format(vae=vae_folder, tmp=tmp_path) for a in arguments]
    with pytest.raises(SystemExit) as exit_:
        train_main(["--output_dir", str(tmp_path / "run"), *argv])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error and text in error[-1] and error[-1].startswith("train_edm.py: error:"), error
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_tiny_latent_run_end_to_end(vae_folder, tmp_path) -> None:
    """Encode cache → EDM2 training on latents with x-flips and an evaluation → a pipeline with the VAE → images."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    trainer = EDMTrainer(parse_args(["--output_dir", str(out), "--vae", str(vae_folder), "--xflip",
                                     "--decoded_cache_dir", str(cache), "--max_train_steps", "4",
                                     "--checkpointing_steps", "0", "--eval_every", "4", "--eval_num", "16",
                                     *TINY_EDM2]))
    assert (trainer.dataset.num_channels, trainer.dataset.resolution, len(trainer.dataset)) == (4, 8, 96)
    trainer.train()
    (latents,) = cache.glob("latents-*.npy")
    assert np.load(latents, mmap_mode="r").shape == (96, 8, 8, 8)  # both orientations, mean and std
    info = json.loads(latents.with_suffix(".json").read_text())["info"]
    pipe = EDMPipeline.from_pretrained(out)
    assert pipe.vae is not None and pipe.vae.config.latents_mean == pytest.approx(info["mean"])
    assert pipe.vae.config.scaling_factor == 0.5 and pipe.scheduler.config.reference_sampler == "edm2"
    pipe.set_progress_bar_config(disable=True)
    images = pipe(seeds=[0, 1], class_labels=[3, 4], num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    log = [json.loads(line) for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    assert any("fd_digits" in json.dumps(record) for record in log)  # the latent model was scored on its pixels


def test_latent_resume_is_exact_with_post_hoc_ema(vae_folder, tmp_path) -> None:
    """4 steps straight = 2 steps, stop, resume for 2: model, EMA, post-hoc EMAs and the exported pipeline weights
    (σ_rel 0.08, combined from the tracked 0.05 and 0.10) bit for bit; the latent cache is reused."""
    common = ["--vae", str(vae_folder), "--decoded_cache_dir", str(tmp_path / "cache"), "--checkpointing_steps", "0",
              "--phema_export_std", "0.08", *TINY_EDM2]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    EDMTrainer(parse_args(["--output_dir", str(straight), "--max_train_steps", "4", *common])).train()
    EDMTrainer(parse_args(["--output_dir", str(interrupted), "--max_train_steps", "2", *common])).train()
    EDMTrainer(parse_args(["--output_dir", str(interrupted), "--max_train_steps", "4", "--resume_from_checkpoint",
                           "latest", *common])).train()
    for name in ("model.safetensors", "ema.safetensors", "phema.safetensors"):
        expected = load_file(find_checkpoint(str(straight), "latest") / name)
        resumed = load_file(find_checkpoint(str(interrupted), "latest") / name)
        assert expected.keys() == resumed.keys() and all(torch.equal(resumed[k], v) for k, v in expected.items())
    exported = [load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
                for folder in (straight, interrupted)]
    assert all(torch.equal(exported[1][k], v) for k, v in exported[0].items())
    tracked = load_file(find_checkpoint(str(straight), "latest") / "phema.safetensors")
    name = "backbone.out_gain"
    assert not torch.equal(exported[0][name], tracked[f"0.100/{name}"])  # σ_rel 0.08 is combined, not a copy
    assert len(list((tmp_path / "cache").glob("latents-*.npy"))) == 1


ENCODE_SCRIPT = """
import sys
from accelerate import Accelerator
from diffusers import AutoencoderKL
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.training.latent_data import encode_dataset
accelerator = Accelerator(cpu=True)
pixels = build_dataset(DataConfig(max_train_samples=40, xflip=True))
vae = AutoencoderKL.from_pretrained(sys.argv[1]).eval()
latents = encode_dataset(pixels, vae, "tiny", sys.argv[2], accelerator)
if accelerator.is_main_process:
    print(latents.raw.path)
"""


def test_two_processes_build_the_same_latent_cache_as_one(vae_folder, tmp_path) -> None:
    script = tmp_path / "encode.py"
    script.write_text(ENCODE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               str(vae_folder), str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (two,) = (tmp_path / "two").glob("latents-*.npy")
    from diffusers import AutoencoderKL

    pixels = build_dataset(DataConfig(max_train_samples=40, xflip=True))
    one = encode_dataset(pixels, AutoencoderKL.from_pretrained(vae_folder).eval(), "tiny", str(tmp_path / "one"),
                         Accelerator(cpu=True))
    assert file_sha256(Path(one.raw.path)) == file_sha256(two)
    assert not list((tmp_path / "two").glob(".*parts*"))  # the part files are gone


def test_another_vae_gets_another_cache(vae_folder, tmp_path) -> None:
    from diffusers import AutoencoderKL

    pixels = build_dataset(DataConfig(max_train_samples=16))
    first = encode_dataset(pixels, AutoencoderKL.from_pretrained(vae_folder).eval(), "vae", str(tmp_path),
                           Accelerator(cpu=True))
    other = tiny_vae(seed=1)
    second = encode_dataset(pixels, other, "vae", str(tmp_path), Accelerator(cpu=True))
    assert first.raw.path != second.raw.path
    assert not torch.equal(first[0][0], second[0][0])


def test_presets_list_edm2() -> None:
    assert {name for name in PRESETS if name.startswith("edm2-")} == set(FULLSIZE)


def test_fine_tuning_a_converted_edm2_model_keeps_its_vae(tmp_path) -> None:
    """An official-format EDM2 pickle, converted with its VAE, fine-tuned on the digits: every weight is transferred,
    the VAE and its latent statistics come along, and the result samples through them."""
    from diffusers_edm.convert_edm_checkpoint import convert_edm_checkpoint
    from tests.edm2_pickle_writer import write_edm2_snapshot
    from tests.helpers import edm2_case

    tiny_vae().save_pretrained(tmp_path / "vae")
    weights = load_file(edm2_conformance_file("10_edm2_net_latent_cond.weights.safetensors"))
    pickle_path = write_edm2_snapshot(tmp_path / "net.pkl", edm2_case("10_edm2_net_latent_cond")["config"], weights)
    convert_edm_checkpoint(pickle_path, tmp_path / "converted", vae=tmp_path / "vae")
    out = tmp_path / "finetuned"
    trainer = EDMTrainer(parse_args(["--output_dir", str(out), "--arch", "edm2", "--pretrained_model_name_or_path",
                                     str(tmp_path / "converted"), "--decoded_cache_dir", str(tmp_path / "cache"),
                                     "--max_train_steps", "2", "--train_batch_size", "4", "--max_train_samples", "8",
                                     "--sample_every", "0", "--checkpointing_steps", "0", "--report_to", "none"]))
    assert trainer.args.vae == str(tmp_path / "converted")
    before = {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
    for key, value in weights.items():  # the float16 weights of the file, all transferred
        assert torch.equal(before["backbone." + key.removeprefix("unet.")], value.half().float()), key
    trainer.train()
    pipe = EDMPipeline.from_pretrained(out)
    assert pipe.vae.config.latents_mean == [5.81, 3.25, 0.12, -2.15]  # the converted model's latent space
    pipe.set_progress_bar_config(disable=True)
    assert pipe(seeds=[0], num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)
