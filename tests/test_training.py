"""train_edm.py and the training loop: a real accelerate run on the digits, exact resume, multi-process saving, Hub
publishing with the Hub patched out, the EMA schedule, the CLI and bad data."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline
from diffusers_edm.commands.train import parse_args
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.checkpoint import CheckpointError
from diffusers_edm.training.ema import EDMEma, ema_beta
from diffusers_edm.training.settings import Interval, parse_interval
from diffusers_edm.training.trainer import EDMTrainer, StreamBatchSampler, find_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "ddpmpp", "--model_channels", "8", "--channel_mult", "1,2", "--attn_resolutions", "8",
        "--train_batch_size", "8", "--samples_per_class", "2", "--num_inference_steps", "2", "--logging_steps", "2",
        "--report_to", "none"]


def run_cli(args, num_processes=1, timeout=600):
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if num_processes > 1:
        command += ["--multi_gpu", "--num_processes", str(num_processes)]
        env["ACCELERATE_USE_CPU"] = "true"  # a multi-process run on CPUs (gloo)
    else:
        command += ["--cpu", "--num_processes", "1"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                str(REPO_ROOT / "train_edm.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


def test_accelerate_launch_on_digits_writes_pipeline_grid_and_card(tmp_path):
    out = tmp_path / "run"
    result = run_cli(["--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "2",
                      "--checkpoints_total_limit", "1", "--sample_every", "2", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    pipe = EDMPipeline.from_pretrained(out)
    assert pipe.unet.config.num_class_labels == 10 and pipe.unet.config.augment_dim == 9
    pipe.set_progress_bar_config(disable=True)
    assert pipe(class_labels=3, num_inference_steps=2).images[0].size == (16, 16)
    grid = (out / "samples.png")
    from PIL import Image

    assert min(Image.open(grid).size) >= 256  # one row per class, enlarged to be readable on the card
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag is None and "class-conditional" in card.data.tags  # the Hub has no such task
    assert {"edm", "diffusers_edm"} <= set(card.data.tags)
    assert "from diffusers_edm import EDMPipeline" in card.text and "samples.png" in card.text
    assert "| duration (kimg) |" in card.text
    config = json.loads((out / "training_config.json").read_text())
    assert config["max_train_steps"] == 4 and "hub_token" not in config


def test_two_processes_train_and_save_once(tmp_path):
    out = tmp_path / "ddp"
    result = run_cli(["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "0",
                      "--sample_every", "0", *TINY], num_processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "x 2 processes" in log
    assert log.count("Saved the EMA pipeline and model card") == 1
    assert log.count("Training on ") == 1  # every message of the package prints once
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert len(list((out / "checkpoint-2").glob("random_states_*.safetensors"))) == 2
    EDMPipeline.from_pretrained(out)


def make_args(out, *extra):
    return parse_args(["--output_dir", str(out), "--seed", "3", "--augment_p", "0.5", "--dropout", "0.2",
                       "--lr_rampup_kimg", "0.05", "--ema_halflife_kimg", "0.02", "--sample_every", "0", *TINY,
                       *extra])


def final_weights(out):
    checkpoint = find_checkpoint(str(out), "latest")
    return load_file(checkpoint / "model.safetensors"), load_file(checkpoint / "ema.safetensors")


def test_resume_continues_exactly(tmp_path):
    """N steps + resume + N steps gives bit-identical weights, EMA and optimizer-driven results to 2N steps."""
    EDMTrainer(make_args(tmp_path / "straight", "--max_train_steps", "6", "--checkpointing_steps", "0")).train()
    interrupted = tmp_path / "interrupted"
    EDMTrainer(make_args(interrupted, "--max_train_steps", "3", "--checkpointing_steps", "0")).train()
    resumed = EDMTrainer(make_args(interrupted, "--max_train_steps", "6", "--checkpointing_steps", "0",
                                   "--resume_from_checkpoint", "latest"))
    resumed.train()
    assert resumed.progress.step == 6 and resumed.progress.cur_nimg == 48
    straight_model, straight_ema = final_weights(tmp_path / "straight")
    resumed_model, resumed_ema = final_weights(interrupted)
    for key, value in straight_model.items():
        assert torch.equal(resumed_model[key], value), key
    for key, value in straight_ema.items():
        assert torch.equal(resumed_ema[key], value), key


def test_half_written_checkpoint_is_never_resumed(tmp_path):
    out = tmp_path / "run"
    EDMTrainer(make_args(out, "--max_train_steps", "2", "--checkpointing_steps", "1")).train()
    (out / "checkpoint-9.tmp").mkdir()  # what a crash during a save leaves behind
    assert find_checkpoint(str(out), "latest").name == "checkpoint-2"
    (out / "checkpoint-2" / "optimizer.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="optimizer.safetensors is truncated or altered"):
        EDMTrainer(make_args(out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")).train()


def test_push_uploads_the_pipeline_folder_without_checkpoints_or_token(tmp_path):
    out, token = tmp_path / "push", "hf_SECRETtoken123"
    repo = mock.Mock(repo_id="me/edm-test")
    with mock.patch("diffusers_edm.training.hub.create_repo", return_value=repo) as create_repo, \
            mock.patch("diffusers_edm.training.hub.upload_folder") as upload_folder:
        EDMTrainer(make_args(out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--push_to_hub",
                             "--hub_model_id", "me/edm-test", "--hub_token", token)).train()
    assert create_repo.call_args.args[0] == "me/edm-test" and create_repo.call_args.kwargs["token"] == token
    calls = upload_folder.call_args_list
    # Two checkpoints and the end of training, in the background: a snapshot still queued when a newer one comes is
    # replaced by it, and training waits for the last one.
    assert 1 <= len(calls) <= 3
    for call in calls:
        assert call.kwargs["repo_id"] == "me/edm-test"
        assert Path(call.kwargs["folder_path"]).parent == out / ".hub-staging"
        assert {"checkpoint-*", "logs/**"} <= set(call.kwargs["ignore_patterns"])
    assert calls[-1].kwargs["commit_message"] == "End of training"
    assert not (out / ".hub-staging").exists()
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_failed_upload_warns_and_training_goes_on(tmp_path, caplog):
    out = tmp_path / "push"
    with mock.patch("diffusers_edm.training.hub.create_repo", return_value=mock.Mock(repo_id="me/x")), \
            mock.patch("diffusers_edm.training.hub.upload_folder", side_effect=OSError("network down")), \
            caplog.at_level(logging.WARNING):
        trainer = EDMTrainer(make_args(out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--push_to_hub"))
        with pytest.raises(TrainingError, match="the final upload to me/x failed"):  # the exit status says so
            trainer.train()
    assert trainer.progress.step == 2 and (out / "unet").is_dir() and (out / "checkpoint-2").is_dir()
    assert "network down" in caplog.text


def test_bad_data_fails_before_training(tmp_path):
    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    from PIL import Image

    Image.new("L", (16, 16)).save(folder / "cats" / "a.png")
    (folder / "dogs" / "broken.png").write_bytes(b"not a png")
    result = run_cli(["--output_dir", str(tmp_path / "out"), "--train_data_dir", str(folder), *TINY])
    assert result.returncode != 0
    error_line = next(line for line in result.stderr.splitlines() if line.startswith("train_edm.py: error:"))
    assert "broken.png" in error_line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))


def test_ema_schedule_matches_the_paper_examples():
    # Spec section 6.2: batch 512, half-life 0.5 Mimg → 0.99929047; batch 4096, 50 Mimg → 0.99994322;
    # during the ramp at 1 Mimg (half-life capped at 50k images), batch 512 → 0.99292730.
    assert ema_beta(512, 10**8, 500) == pytest.approx(0.99929047, abs=1e-8)
    assert ema_beta(4096, 10**10, 50_000) == pytest.approx(0.99994322, abs=1e-8)
    assert ema_beta(512, 10**6, 500) == pytest.approx(0.99292730, abs=1e-8)
    assert ema_beta(512, 0, 500) == 0.0
    assert ema_beta(512, 0, 500, rampup_ratio=None) == pytest.approx(0.99929047, abs=1e-8)


def test_ema_update_is_the_exponential_average():
    model = torch.nn.Linear(3, 2)
    ema = EDMEma(model, halflife_kimg=0.001, rampup_ratio=None)  # 1-image half-life
    initial = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    beta = ema.update(model, cur_nimg=100, batch_size=2)
    assert beta == pytest.approx(0.25)
    torch.testing.assert_close(ema.model.weight, model.weight + 0.25 * (initial["weight"] - model.weight))
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_batch_stream_is_stateless_and_sharded():
    full = StreamBatchSampler(10, 4, rank=0, world_size=1, seed=1)
    stream = [i for batch, _ in zip(full, range(10)) for i in batch]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    resumed = StreamBatchSampler(10, 4, rank=0, world_size=1, seed=1, start_batch=3)
    assert next(iter(resumed)) == stream[12:16]
    ranks = [next(iter(StreamBatchSampler(10, 2, rank=r, world_size=2, seed=1))) for r in range(2)]
    assert ranks[0] + ranks[1] == stream[:4]


def test_intervals_and_cli_validation():
    assert parse_interval("500") == Interval(500, "steps")
    assert parse_interval("20kimg") == Interval(20, "kimg")
    assert parse_interval("0") is None
    kimg = Interval(1, "kimg")
    assert kimg.due(step=3, cur_nimg=1024, prev_nimg=768) and not kimg.due(step=2, cur_nimg=768, prev_nimg=512)
    with pytest.raises(SystemExit):
        parse_args(["--augment_p", "1.5"])
    with pytest.raises(SystemExit):
        parse_args(["--checkpointing_steps", "often"])


def test_help_documents_every_flag():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train_edm.py"), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ["--output_dir", "--seed", "--train_batch_size", "--gradient_accumulation_steps", "--max_train_steps",
                 "--duration_kimg", "--learning_rate", "--lr_rampup_kimg", "--ema_halflife_kimg", "--dropout",
                 "--augment_p", "--resolution", "--mixed_precision", "--checkpointing_steps",
                 "--checkpoints_total_limit", "--resume_from_checkpoint", "--sample_every", "--push_to_hub",
                 "--hub_model_id", "--hub_token", "--dataset_name", "--train_data_dir", "--conditional",
                 "--unconditional", "--p_mean", "--p_std", "--center_crop", "--max_train_samples", "--torch_compile",
                 "--channels_last", "--xflip", "--random_flip", "--overwrite_output_dir", "--trust_detector"]:
        assert flag in text, flag
    assert "thousands of images" in text and "(default: 0.12)" in text


def test_colour_augmentation_adds_its_labels(tmp_path):
    trainer = EDMTrainer(make_args(tmp_path / "colors", "--augment_colors", "--max_train_steps", "1",
                                   "--checkpointing_steps", "0"))
    assert trainer.augment_pipe.label_dim == 15
    assert trainer.accelerator.unwrap_model(trainer.model).config.augment_dim == 15
    trainer.train()
