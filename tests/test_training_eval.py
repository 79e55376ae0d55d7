# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Evaluation during training (`train_edm.py --eval_every`): the logged distances against an independent
recomputation, the cached reference, the model card's model-index, resume, an unavailable detector and the flags."""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from huggingface_hub import ModelCard

from diffusers_edm import EDMPipeline
from diffusers_edm.commands.train import parse_args
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.training.evaluation import EvaluationScores
from diffusers_edm.training.loss import EDMLoss
from diffusers_edm.training.model_card import write_model_card
from diffusers_edm.training.trainer import EDMTrainer, find_checkpoint

from .test_training import TINY, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

EVAL = ["--eval_every", "2", "--eval_num", "24"]
BATCH = 8  # --train_batch_size of TINY: the evaluation generates and scores 8 images at a time


class TinyDetector(torch.nn.Module):
    """A seeded strided convolution on x/127.5 − 1; features: the spatial mean and max of its 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = self.conv(images.float() / 127.5 - 1)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.jit.script(TinyDetector().eval())
    path = tmp_path_factory.mktemp("detector") / "tiny.pt"
    torch.jit.save(net, str(path))
    return path


@pytest.fixture(scope="module")
def launched_run(tmp_path_factory, detector_file) -> tuple[Path, str]:
    """One accelerate launch: 4 steps, evaluated at steps 2 and 4."""
    out = tmp_path_factory.mktemp("eval") / "run"
    result = run_cli(["--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "0",
                      "--sample_every", "0", *EVAL, "--eval_detector", str(detector_file), *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout + result.stderr


def eval_records(out: Path) -> list[dict]:
    lines = (out / "logs" / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "eval_num" in record]


def card_values(out: Path) -> dict:
    results = ModelCard.load(out / "README.md").data.eval_results
    return {result.metric_name: result for result in results}


def test_launched_run_logs_caches_the_reference_and_fills_the_card(launched_run):
    out, log = launched_run
    records = eval_records(out)
    assert [record["step"] for record in records] == [2, 4]  # the end of training is not evaluated twice
    for record in records:
        assert set(record) == {"step", "kimg", "fd", "eval_num", "eval_seconds"} and record["eval_num"] == 24
        assert record["fd"] > 0 and record["eval_seconds"] >= 0
    assert (out / "eval-ref-fd.npz").is_file() and not list(out.glob("*.tmp"))
    assert log.count("Computed the") == 1 and log.count("statistics of the 1797 training images") == 1
    values = card_values(out)
    assert set(values) == {"FD (latest, 24 samples)", "FD (best, 24 samples)"}
    assert values["FD (latest, 24 samples)"].metric_value == records[-1]["fd"]
    assert values["FD (best, 24 samples)"].metric_value == min(record["fd"] for record in records)
    result = values["FD (latest, 24 samples)"]
    assert result.metric_type == "fd" and result.task_type == "image-generation"  # conditional
    assert result.dataset_name.startswith("scikit-learn digits")
    section = ModelCard.load(out / "README.md").text.split("## Evaluation")[1].split("## Usage")[0]
    assert "from 24 samples" in section and "`tiny.pt`" in section and "/" not in section.replace("0-23", "")


def quantize(x: torch.Tensor) -> np.ndarray:
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8).numpy()


def features(detector: torch.jit.ScriptModule, images: np.ndarray) -> np.ndarray:
    """Features of uint8 (N, 1, H, W) images, 8 at a time as in the run."""
    batches = [torch.from_numpy(images[i:i + BATCH]).repeat(1, 3, 1, 1) for i in range(0, len(images), BATCH)]
    with torch.no_grad():
        return np.concatenate([detector(batch, return_features=True).double().numpy() for batch in batches])


def fd(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(np.real(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * root)))


def recomputed_fd(out: Path, detector_file: Path) -> float:
    """The distance of the saved pipeline's samples of seeds 0-23 to the digits, with numpy and scipy."""
    detector = torch.jit.load(str(detector_file))
    dataset = build_dataset(DataConfig())
    real = quantize(torch.stack([dataset[i][0] for i in range(dataset.num_images)]))
    pipe = EDMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    samples = []
    for start in range(0, 24, BATCH):
        images = pipe(seeds=list(range(start, start + BATCH)), num_inference_steps=2, output_type="pil").images
        samples += [np.asarray(image)[None] for image in images]
    return fd(features(detector, np.stack(samples)), features(detector, real))


def test_logged_value_matches_an_independent_recomputation(launched_run, detector_file):
    out, _ = launched_run
    assert eval_records(out)[-1]["fd"] == pytest.approx(recomputed_fd(out, detector_file), rel=1e-6)


def test_two_processes_share_the_evaluation(tmp_path, detector_file):
    out = tmp_path / "ddp"
    result = run_cli(["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "0",
                      "--sample_every", "0", "--eval_every", "5", "--eval_num", "24", "--eval_detector",
                      str(detector_file), *TINY], num_processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("Computed the") == 1 and log.count("FD of 24 samples at step 2") == 1
    records = eval_records(out)
    assert [record["step"] for record in records] == [2]
    assert records[0]["fd"] == pytest.approx(recomputed_fd(out, detector_file), rel=1e-6)


def make_args(out: Path, detector_file: Path, *extra: str) -> argparse.Namespace:
    return parse_args(["--output_dir", str(out), "--seed", "3", "--augment_p", "0.5", "--dropout", "0.2",
                       "--lr_rampup_kimg", "0.05", "--ema_halflife_kimg", "0.02", "--sample_every", "0",
                       "--eval_detector", str(detector_file), *TINY, *extra])


def test_resume_keeps_the_best_value_and_the_cached_reference(tmp_path, detector_file):
    out = tmp_path / "run"
    flags = ["--checkpointing_steps", "2", "--eval_every", "3", "--eval_num", "24"]
    EDMTrainer(make_args(out, detector_file, "--max_train_steps", "4", *flags)).train()
    assert [record["step"] for record in eval_records(out)] == [3, 4]  # when due, and at the end
    reference = out / "eval-ref-fd.npz"
    mtime = reference.stat().st_mtime_ns
    # The last checkpoint holds the final scores. Mark its best value: the resumed run can only show it if it was
    # carried over (and update the manifest, against which resume checks every file).
    checkpoint = find_checkpoint(str(out), "latest")
    state = json.loads((checkpoint / "progress.json").read_text())
    assert state["step"] == 4 and state["scores"]["latest_step"] == 4
    assert state["scores"]["latest"] == eval_records(out)[-1]["fd"]
    state["scores"].update(best=1e-3, best_step=3, best_kimg=0.024)
    data = json.dumps(state).encode()
    (checkpoint / "progress.json").write_bytes(data)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["progress.json"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    resumed = EDMTrainer(make_args(out, detector_file, "--max_train_steps", "6", "--resume_from_checkpoint", "latest",
                                   *flags))
    resumed.train()
    assert reference.stat().st_mtime_ns == mtime
    records = eval_records(out)
    assert [record["step"] for record in records] == [3, 4, 6]
    assert resumed.progress.scores.best == 1e-3 and resumed.progress.scores.latest == records[-1]["fd"]
    values = card_values(out)
    assert values["FD (best, 24 samples)"].metric_value == 1e-3
    assert values["FD (latest, 24 samples)"].metric_value == records[-1]["fd"]


def test_evaluation_leaves_the_training_random_stream_alone(tmp_path, detector_file):
    """Dropout and augmentation draw from torch's global RNG: the weights match a run without evaluation."""
    weights = []
    for name, extra in (("plain", []), ("evaluated", ["--eval_every", "1", "--eval_num", "16"])):
        trainer = EDMTrainer(make_args(tmp_path / name, detector_file, "--max_train_steps", "3",
                                       "--checkpointing_steps", "0", *extra))
        trainer.train()
        weights.append(trainer.accelerator.unwrap_model(trainer.model).state_dict())
    assert len(eval_records(tmp_path / "evaluated")) == 3
    for key, value in weights[0].items():
        assert torch.equal(weights[1][key], value), key


def test_unavailable_inception_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    out = tmp_path / "run"
    result = run_cli(["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "0",
                      "--sample_every", "0", *EVAL, "--eval_detector", "inception", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if "Evaluation failed" in line]
    assert len(warnings) == 1
    assert "inception-2015-12-05.pt" in warnings[0] and "HF_HUB_OFFLINE" in warnings[0]
    assert "--detector_path" in warnings[0] and "--eval_detector_path" in warnings[0]
    assert eval_records(out) == [] and not list(out.glob("eval-ref-*"))
    EDMPipeline.from_pretrained(out)
    assert ModelCard.load(out / "README.md").data.eval_results is None


def test_card_without_evaluation_has_no_model_index(tmp_path):
    common = dict(repo_id="me/edm", config={"p_mean": -1.2, "p_std": 1.2, "sigma_data": 0.5, "augment_p": 0.0,
                                            "learning_rate": 1e-3, "lr_rampup_kimg": 1, "ema_halflife_kimg": 1},
                  dataset_description="an image folder", hub_dataset=None, resolution=16, channels=1, num_classes=0,
                  steps=10, kimg=1.0, batch_size=8, grid_path=None, loss_description=EDMLoss().description)
    text = write_model_card(tmp_path, **common).read_text()
    assert "model-index" not in text and "## Evaluation" not in text and "model_name" not in text
    scores = EvaluationScores(metric="fid", detector="inception", num_images=50000, num_inference_steps=18,
                              reference="https://example.com/refs/cifar10-32x32.npz", latest=2.5, latest_step=100,
                              latest_kimg=51.2, best=2.25, best_step=80, best_kimg=40.96)
    card = ModelCard.load(write_model_card(tmp_path, **common, evaluation=scores))
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        "FID (latest, 50k samples)": 2.5, "FID (best, 50k samples)": 2.25}
    assert card.data.eval_results[0].dataset_name == "an image folder"
    assert "https://example.com/refs/cifar10-32x32.npz" in card.text and "`inception`" in card.text


def test_evaluation_flags(capsys):
    assert parse_args([]).eval_every is None
    assert parse_args([]).eval_detector == "digits"
    assert parse_args(["--train_data_dir", "images"]).eval_detector == "inception"
    assert parse_args(["--eval_every", "50kimg"]).eval_every.unit == "kimg"
    with pytest.raises(SystemExit):
        parse_args(["--eval_every", "2", "--eval_num", "1"])
    assert "--eval_num must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--eval_every", "often"])
    assert "is not an interval" in capsys.readouterr().err
