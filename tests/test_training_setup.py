"""`train_edm.py` at the paper's scale: presets through the command line, --dry_run's parameter counts against the
official ones, the batch split, VP/VE training, fine-tuning from a saved pipeline, σ_data/preconditioning conflicts,
trackers and gradient checkpointing in the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline
from diffusers_edm.training import trainer as trainer_module
from diffusers_edm.commands.train import parse_args
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.settings import resolve_batch_sizes
from diffusers_edm.training.loss import EDMLoss, VELoss, VPLoss
from diffusers_edm.training.run_setup import dry_run
from diffusers_edm.commands.train import train
from diffusers_edm.training.trainer import EDMTrainer

from .test_training import TINY, final_weights, make_args

OFFICIAL_COUNTS = {
    row["name"]: row["param_count"]
    for row in json.loads((Path(__file__).parent / "data" / "backbone_fullsize_configs.json").read_text())[
        "param_counts"]
}
DRY_RUNS = {  # official configuration -> train_edm.py command line
    "cifar10_cond_ddpmpp": ["--preset", "cifar10-cond-ddpmpp"],
    "cifar10_uncond_ddpmpp": ["--preset", "cifar10-uncond-ddpmpp"],
    "cifar10_cond_ncsnpp": ["--preset", "cifar10-cond-ncsnpp"],
    "cifar10_uncond_ncsnpp": ["--preset", "cifar10-uncond-ncsnpp"],
    "ffhq64_uncond_ddpmpp": ["--preset", "ffhq64-uncond-ddpmpp"],
    "ffhq64_uncond_ncsnpp": ["--preset", "ffhq64-uncond-ncsnpp"],
    "imagenet64_cond_adm": ["--preset", "imagenet64-cond-adm"],
    "cifar10_uncond_vp_precond_ddpmpp": ["--preset", "cifar10-uncond-ddpmpp-vp"],
}
OFFICIAL_STEPS = {"cifar10_cond_ddpmpp": (390_625, 512), "ffhq64_uncond_ddpmpp": (781_250, 256),
                  "imagenet64_cond_adm": (610_352, 4096)}
"""Optimizer steps and images per step of the official runs (200 Mimg at 512 and 256, 2500 Mimg at 4096)."""


@pytest.mark.parametrize("name", sorted(DRY_RUNS))
def test_dry_run_counts_the_official_parameters(name, capsys):
    summary = dry_run(parse_args([*DRY_RUNS[name], "--dry_run"]))
    assert summary["parameters"] == OFFICIAL_COUNTS[name]
    if name in OFFICIAL_STEPS:
        assert (summary["steps"], summary["images_per_step"]) == OFFICIAL_STEPS[name]
    out = capsys.readouterr().out
    assert f"{OFFICIAL_COUNTS[name]:,} parameters" in out


def test_dry_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    train(parse_args(["--preset", "cifar10-cond-ddpmpp", "--dry_run", "--output_dir", str(out)]))
    assert not out.exists() and "55,735,299 parameters" in capsys.readouterr().out


def test_preset_values_and_explicit_flags_win():
    args = parse_args(["--preset", "imagenet64-cond-adm", "--learning_rate", "2e-4", "--dropout", "0"])
    assert (args.arch, args.model_channels, args.channel_mult, args.layers_per_block) == ("adm", 192, [1, 2, 3, 4], 3)
    assert (args.attn_resolutions, args.augment_p, args.total_batch_size, args.duration_kimg) == (
        [32, 16, 8], 0.0, 4096, 2_500_000)
    assert (args.ema_halflife_kimg, args.lr_rampup_kimg, args.mixed_precision) == (50_000, 10_000, "fp16")
    assert (args.learning_rate, args.dropout) == (2e-4, 0.0)  # explicit flags override the preset
    ve = parse_args(["--preset", "cifar10-cond-ncsnpp-ve"])
    assert (ve.arch, ve.precond, ve.conditional, ve.learning_rate, ve.dropout, ve.augment_p) == (
        "ncsnpp", "ve", True, 1e-3, 0.13, 0.12)


@pytest.mark.parametrize("flags, processes, expected", [
    (["--total_batch_size", "512"], 8, (64, 1)),  # EDM's --batch split over 8 GPUs
    (["--total_batch_size", "512", "--train_batch_size", "32"], 8, (32, 2)),  # --batch-gpu: accumulation follows
    (["--total_batch_size", "4096", "--gradient_accumulation_steps", "4"], 32, (32, 4)),
    ([], 4, (64, 1)),
    (["--train_batch_size", "16", "--gradient_accumulation_steps", "3"], 2, (16, 3)),
])
def test_batch_sizes(flags, processes, expected):
    args = parse_args(flags)
    resolve_batch_sizes(args, processes)
    assert (args.train_batch_size, args.gradient_accumulation_steps) == expected


def test_batch_that_does_not_split_is_an_error():
    args = parse_args(["--total_batch_size", "500", "--train_batch_size", "64"])
    with pytest.raises(TrainingError, match="--total_batch_size 500 is not 2 process"):
        resolve_batch_sizes(args, 2)


@pytest.mark.parametrize("precond, loss_class", [("vp", VPLoss), ("ve", VELoss), ("edm", EDMLoss)])
def test_vp_ve_training_saves_the_matching_model(tmp_path, precond, loss_class):
    trainer = EDMTrainer(make_args(tmp_path, "--precond", precond, "--max_train_steps", "2",
                                   "--checkpointing_steps", "0"))
    assert type(trainer.loss_fn) is loss_class
    trainer.train()
    pipe = EDMPipeline.from_pretrained(tmp_path)
    assert pipe.unet.config.preconditioning == precond
    assert pipe(batch_size=1, class_labels=0, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 1)
    card = (tmp_path / "README.md").read_text()
    assert trainer.loss_fn.description in card and ("λ(σ) = 1/σ²" in card) == (precond != "edm")
    assert (pipe.unet.sigma_min, pipe.unet.sigma_max) == (trainer.ema.model.sigma_min, trainer.ema.model.sigma_max)
    # The loss draws σ from the model's own range.
    sigma = trainer.loss_fn.sample_sigma(1000, "cpu")
    if precond != "edm":
        assert sigma.min() >= pipe.unet.sigma_min * (1 - 1e-6) and sigma.max() <= pipe.unet.sigma_max * (1 + 1e-6)


def _model_config(tmp_path, **overrides):
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    config.update(overrides)
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_sigma_data_and_precond_come_from_the_model_and_conflicts_raise(tmp_path):
    base = tmp_path / "base"
    EDMTrainer(make_args(base, "--sigma_data", "0.4", "--max_train_steps", "1", "--checkpointing_steps", "0")).train()
    assert json.loads((base / "scheduler" / "scheduler_config.json").read_text())["sigma_data"] == 0.4
    config = _model_config(base)
    trainer = EDMTrainer(make_args(tmp_path / "a", "--model_config", config))
    assert trainer.loss_fn.sigma_data == 0.4  # the model's σ_data, not the flag's default
    with pytest.raises(TrainingError, match=r"--sigma_data 0.5 disagrees with --model_config .* σ_data 0.4"):
        EDMTrainer(make_args(tmp_path / "b", "--model_config", config, "--sigma_data", "0.5"))
    with pytest.raises(TrainingError, match="--precond vp disagrees with --model_config .* 'edm'"):
        EDMTrainer(make_args(tmp_path / "c", "--model_config", config, "--precond", "vp"))
    with pytest.raises(TrainingError, match="--sigma_data 0.5 disagrees with the pretrained model"):
        EDMTrainer(make_args(tmp_path / "d", "--pretrained_model_name_or_path", str(base), "--sigma_data", "0.5"))
    with pytest.raises(TrainingError, match="--precond vp has none"):
        EDMTrainer(make_args(tmp_path / "e", "--precond", "vp", "--sigma_data", "0.4"))


def test_fine_tuning_copies_the_pretrained_weights_and_restarts_the_ramps(tmp_path):
    base = tmp_path / "base"
    # An unconditional model without augmentation, fine-tuned on labelled data with augmentation: the label and
    # augment-label inputs are new.
    EDMTrainer(make_args(base, "--unconditional", "--augment_p", "0", "--max_train_steps", "2",
                         "--checkpointing_steps", "0")).train()
    pretrained = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    tuned = EDMTrainer(make_args(tmp_path / "tuned", "--pretrained_model_name_or_path", str(base),
                                 "--max_train_steps", "1", "--checkpointing_steps", "0"))
    state = tuned.accelerator.unwrap_model(tuned.model).state_dict()
    copied = [name for name, value in pretrained.items() if state[name].shape == value.shape]
    assert copied and all(torch.equal(state[name], pretrained[name]) for name in copied)
    new = set(state) - set(pretrained)
    assert new and all("map_label" in name or "map_augment" in name for name in new)
    assert tuned.ema.rampup_ratio is None and tuned.progress.cur_nimg == 0
    assert tuned.loss_fn.sigma_data == 0.5
    tuned.train()  # the learning rate starts at 0 again: the first step leaves the weights unchanged
    model, _ = final_weights(tmp_path / "tuned")
    assert all(torch.equal(model[name], pretrained[name]) for name in copied)
    card = (tmp_path / "tuned" / "README.md").read_text()
    assert "Fine-tuned from `base`" in card and str(tmp_path) not in card


def test_missing_tracker_is_a_one_line_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrainingError, match="--report_to wandb: the wandb package is not installed"):
        EDMTrainer(parse_args(["--output_dir", str(tmp_path), *TINY, "--report_to", "wandb"]))


def test_gradient_checkpointing_trains_identically(tmp_path):
    for name, extra in (("plain", []), ("checkpointed", ["--gradient_checkpointing"])):
        EDMTrainer(make_args(tmp_path / name, "--max_train_steps", "3", "--checkpointing_steps", "0", *extra)).train()
    (plain, plain_ema), (checkpointed, checkpointed_ema) = (final_weights(tmp_path / n)
                                                            for n in ("plain", "checkpointed"))
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(checkpointed_ema[key], plain_ema[key], rtol=1e-6, atol=1e-7)


def test_fast_numerics_train_like_the_exact_ones(tmp_path, monkeypatch):
    """The GPU default (fused Adam; TF32) against --exact_numerics (torch's default Adam, the official code's backend
    settings): the same training to float tolerance. The fused kernel is forced on the CPU here, where it is not the
    default."""
    assert trainer_module.fused_adam(torch.device("cpu"), False) is None
    assert trainer_module.fused_adam(torch.device("cuda"), False) is True
    assert trainer_module.fused_adam(torch.device("cuda"), True) is None
    monkeypatch.setattr(trainer_module, "fused_adam", lambda device, exact: None if exact else True)
    for name, extra in (("fast", []), ("exact", ["--exact_numerics"])):
        trainer = EDMTrainer(make_args(tmp_path / name, "--max_train_steps", "4", "--checkpointing_steps", "0",
                                       *extra))
        assert trainer.optimizer.optimizer.defaults["fused"] is (None if extra else True)
        trainer.train()
    (fast, fast_ema), (exact, exact_ema) = (final_weights(tmp_path / n) for n in ("fast", "exact"))
    for key in fast:
        torch.testing.assert_close(fast[key], exact[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast_ema[key], exact_ema[key], rtol=1e-5, atol=1e-6)


def test_dry_run_with_data_reads_only_its_shape(tmp_path, capsys):
    """With an image folder, the dry run takes the shape from the first image and the labels, and decodes nothing
    else (no cache file)."""
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(tmp_path / "images" / label / f"{i}.png")
    summary = dry_run(parse_args(["--preset", "cifar10-cond-ddpmpp", "--train_data_dir", str(tmp_path / "images"),
                                  "--decoded_cache_dir", str(tmp_path / "cache"), "--dry_run"]))
    assert summary["image_shape"] == [3, 32, 32] and summary["num_classes"] == 2
    assert summary["model"]["num_class_labels"] == 2 and summary["model"]["augment_dim"] == 9
    assert not (tmp_path / "cache").exists()


def test_missing_or_broken_model_config_is_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    for path, message in ((tmp_path / "missing.json", "no such file"), (tmp_path / "bad.json", "not a readable JSON")):
        with pytest.raises(TrainingError, match=f"--model_config .*{message}"):
            dry_run(parse_args(["--model_config", str(path), "--dry_run"]))
