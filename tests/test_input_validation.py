# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""User mistakes give one clear error (or, for a decision the data leaves open, one clear warning): bad training data,
bad `EDMPipeline` inputs, non-finite samples, and corrupt model folders or huge seed lists on the command line (one
stderr line, exit status 2, no traceback)."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.commands import common as command_common
from diffusers_edm.commands.common import parse_seeds
from diffusers_edm.commands.generate import main
from diffusers_edm.pipelines.saved_folders import check_model_folder
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.errors import DatasetError

from .helpers import randomize_, tiny_unet_kwargs
from .test_generate import save_tiny_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(module, *args):
    """Runs `python -m module args` as a user would and returns its single stderr line, asserting exit status 2, no
    traceback and nothing else on stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=REPO_ROOT)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr
    return lines[0]


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def gray(seed):
    return np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)


def colour(seed):
    return np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)


def as_tensor(array):
    """An image as the dataset returns it: [C, H, W] in [-1, 1]."""
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.tensor(array).permute(2, 0, 1).float() / 127.5 - 1


# Training data ----------------------------------------------------------------------------------------------------


def edm_folder(folder, labels_bytes, count=3):
    for i in range(count):
        save_png(folder / "00000" / f"img{i:08d}.png", gray(i))
    (folder / "dataset.json").write_bytes(labels_bytes)
    return folder


def test_dataset_json_that_is_not_utf8_names_the_file(tmp_path):
    labels = json.dumps({"labels": [[f"00000/img{i:08d}.png", i] for i in range(3)]}).encode("utf-16")
    folder = edm_folder(tmp_path / "edm", labels)
    with pytest.raises(DatasetError, match=r"dataset\.json is not UTF-8 text \(byte 0xff at offset 0\)\. Re-save"):
        build_dataset(DataConfig(train_data_dir=str(folder)))
    archive_path = tmp_path / "edm.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.write(folder / "00000" / "img00000000.png", "00000/img00000000.png")
        archive.writestr("dataset.json", b'{"labels": [["00000/img00000000.png", "\xe9"]]}')
    with pytest.raises(DatasetError, match=r"dataset\.json in .*edm\.zip is not UTF-8 text \(byte 0xe9"):
        build_dataset(DataConfig(train_data_dir=str(archive_path)))


def test_label_files_with_a_byte_order_mark_are_read(tmp_path):
    labels = json.dumps({"labels": [[f"00000/img{i:08d}.png", 2 - i] for i in range(3)]}).encode("utf-8-sig")
    dataset = build_dataset(DataConfig(train_data_dir=str(edm_folder(tmp_path, labels))))
    assert dataset.num_classes == 3 and [int(dataset[i][1].argmax()) for i in range(3)] == [2, 1, 0]


def test_metadata_that_is_not_utf8_names_the_file(tmp_path):
    save_png(tmp_path / "a.png", gray(0))
    (tmp_path / "metadata.csv").write_bytes("file_name,label\na.png,café\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"metadata\.csv is not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        build_dataset(DataConfig(train_data_dir=str(tmp_path)))


def metadata_folder(folder, labels):
    for i in range(len(labels)):
        save_png(folder / f"img{i}.png", gray(i))
    rows = [{"file_name": f"img{i}.png", "label": label} for i, label in enumerate(labels)]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return folder


@pytest.mark.parametrize(
    "labels,message",
    [([0, 10**9, 1], r"img1\.png has label 1000000000 in .*metadata\.jsonl, which makes 1,000,000,001 classes for 3"
                     r" images \(above the limit of 100,000;"),
     ([0, 1, 10**30], r"img2\.png has label 10{30} .* \(above the limit"),  # would overflow int64
     ([2, 5000, 1], r"img1\.png has label 5000 .*5,001 classes for 3 images \(more than there are images;")],
)
def test_a_stray_label_that_makes_the_class_count_absurd_is_refused(labels, message, tmp_path):
    with pytest.raises(DatasetError, match=message) as error:
        build_dataset(DataConfig(train_data_dir=str(metadata_folder(tmp_path, labels))))
    assert "Fix that label or renumber the classes 0, 1, 2, ..., or pass --unconditional." in str(error.value)


def test_class_counts_that_may_be_real_are_kept(tmp_path):
    # A few images keeping e.g. ImageNet's class indices: more classes than images, but not absurdly many.
    folder = metadata_folder(tmp_path / "few", [999, 3])
    assert build_dataset(DataConfig(train_data_dir=str(folder))).num_classes == 1000
    # Unconditional use never looks at the labels.
    folder = metadata_folder(tmp_path / "stray", [0, 10**9])
    assert build_dataset(DataConfig(train_data_dir=str(folder), conditional=False)).num_classes == 0


def test_grayscale_and_colour_mix_is_rgb_in_any_order_with_one_warning(tmp_path, caplog):
    # Colour first, grayscale later (sort order): the grayscale images are copied to three channels.
    rgb = save_png(tmp_path / "a.png", colour(0))
    mono = [save_png(tmp_path / f"b{i}.png", gray(i)) for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        dataset = build_dataset(DataConfig(train_data_dir=str(tmp_path)))
    assert dataset.num_channels == 3
    assert torch.equal(dataset[0][0], as_tensor(rgb))
    for i, array in enumerate(mono, start=1):
        assert torch.equal(dataset[i][0], as_tensor(np.asarray(Image.fromarray(array).convert("RGB"))))
    assert caplog.text.count("mix grayscale and colour") == 1
    assert "2 are grayscale (e.g. " in caplog.text and "b0.png, mode L) and 1 colour (e.g. " in caplog.text
    assert "a.png, mode RGB). Training on RGB" in caplog.text and "convert every image to grayscale" in caplog.text

    caplog.clear()
    only_gray = tmp_path / "gray"
    for i in range(2):
        save_png(only_gray / f"{i}.png", gray(i))
    with caplog.at_level(logging.WARNING, logger="diffusers_edm.data"):
        assert build_dataset(DataConfig(train_data_dir=str(only_gray))).num_channels == 1
    assert "mix grayscale" not in caplog.text


def test_fid_ref_reports_bad_data_in_one_line(tmp_path):
    labels = json.dumps({"labels": None}).encode("utf-16")
    folder = edm_folder(tmp_path / "edm", labels)
    line = run_cli("diffusers_edm.fid", "ref", "--data", folder, "--dest", tmp_path / "ref.npz", "--detector",
                   "digits", "--device", "cpu")
    assert line.startswith("python -m diffusers_edm.fid ref: error: ")
    assert "dataset.json is not UTF-8 text (byte 0xff at offset 0). Re-save it with UTF-8 encoding." in line


# EDMPipeline inputs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    unet = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3)), 0, 0.2).eval()
    pipeline = EDMPipeline(unet=unet, scheduler=EDMHeunScheduler())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


NAN_IMAGE = torch.full((1, 1, 8, 8), float("nan"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), r"batch_size must be a positive integer, got 0\."),
        (dict(batch_size=-2), r"batch_size must be a positive integer, got -2\."),
        (dict(batch_size=2.0), r"batch_size must be a positive integer, got 2\.0\."),
        (dict(batch_size=True), r"batch_size must be a positive integer, got True\."),
        (dict(batch_size="2"), r"batch_size must be a positive integer, got '2'\."),
        (dict(latents=np.zeros((1, 1, 8, 8))), r"latents must be a torch\.Tensor, got ndarray; .*torch\.from_numpy"),
        (dict(latents=torch.zeros(1, 1, 8, 8, dtype=torch.long)), r"latents must be floating point .*torch\.int64"),
        (dict(latents=NAN_IMAGE), r"latents contain NaN or infinite values"),
        (dict(latents=torch.full((1, 1, 8, 8), float("inf"))), r"latents contain NaN or infinite values"),
        (dict(class_labels="1"), r"class_labels must be a class index, a list of class indices .*got '1'\."),
        (dict(class_labels=True), r"class_labels must be a class index, .*got True\."),
        (dict(class_labels=1.0), r"class_labels must be a class index, .*got 1\.0\."),
        (dict(class_labels=10**30), r"class_labels must lie in \[0, 3\), got 10{30} \(image 0\)\."),
        (dict(batch_size=2, class_labels=[1, 2**70]), rf"class_labels must lie in \[0, 3\), got {2**70} \(image 1\)\."),
        (dict(batch_size=2, class_labels=torch.tensor([0, 3])), r"class_labels must lie in \[0, 3\), got 3 \(image 1"),
        (dict(batch_size=2, class_labels=[True, False]), r"class_labels must be class indices .*torch\.bool"),
        (dict(batch_size=2, class_labels=["a", "b"]), r"class_labels must hold class indices or label vectors"),
        (dict(batch_size=2, class_labels=[0.0, 1.0]), r"must be integer class indices, got torch\.float32; label"
                                                      r" vectors have shape \(2, 3\)"),
        (dict(class_labels=torch.tensor([[0, 1]])), r"label vectors must have shape \(1, 3\), got \(1, 2\)"),
        (dict(class_labels=torch.tensor([[0.0, float("nan"), 1.0]])), r"label vectors contain NaN or infinite"),
        (dict(seeds=[]), r"seeds is empty; pass at least one seed"),
        (dict(seeds=[1.5]), r"seeds must be integers, but seeds\[0\] is 1\.5\."),
        (dict(seeds=[3, True]), r"seeds must be integers, but seeds\[1\] is True\."),
        (dict(seeds="12"), r"seeds must be a list of integers, got '12'\."),
        (dict(seeds=7), r"seeds must be a list of integers, got 7\."),
    ],
)
def test_bad_pipeline_inputs_are_a_value_error_naming_the_argument(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=2, **kwargs)


def test_integer_one_hot_rows_are_label_vectors(pipe):
    kwargs = dict(batch_size=2, num_inference_steps=2, output_type="latent")
    one_hot = torch.tensor([[0, 0, 1], [1, 0, 0]])
    from_int = pipe(class_labels=one_hot, generator=torch.Generator().manual_seed(0), **kwargs).images
    from_float = pipe(class_labels=one_hot.float(), generator=torch.Generator().manual_seed(0), **kwargs).images
    from_index = pipe(class_labels=[2, 0], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(from_int, from_float)
    torch.testing.assert_close(from_int, from_index)


def test_numpy_integers_are_accepted(pipe):
    kwargs = dict(num_inference_steps=2, output_type="latent")
    expected = pipe(seeds=[4, 5], class_labels=1, **kwargs).images
    assert torch.equal(pipe(seeds=np.array([4, 5]), class_labels=np.int64(1), **kwargs).images, expected)
    assert torch.equal(pipe(seeds=[4, 5], batch_size=np.int64(2), class_labels=[1, 1], **kwargs).images, expected)


def test_overflowing_sigma_warns_with_the_cause(pipe):
    with pytest.warns(RuntimeWarning) as record:
        images = pipe(seeds=[0, 1], sigmas=[1e20, 1.0], output_type="np").images
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    message = str(record[0].message)
    assert message.startswith("2 of 2 samples contain NaN or infinite values and give one-colour images")
    assert "the largest noise level σ = 1e+20 is too large for the unet's torch.float32 (σ² overflows)" in message
    assert images.shape == (2, 8, 8, 1)


def test_non_finite_weights_warn_with_the_cause():
    broken = EDMPipeline(unet=EDMPreconditionedUNet2DModel(**tiny_unet_kwargs()).eval(), scheduler=EDMHeunScheduler())
    broken.set_progress_bar_config(disable=True)
    with torch.no_grad():
        next(broken.unet.parameters()).fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="the unet's weights contain NaN or infinite values"):
        broken(seeds=[0], num_inference_steps=2)


def test_finite_runs_do_not_warn_and_check_the_output_once(pipe, monkeypatch):
    calls = []
    original = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda tensor: calls.append(tensor.shape) or original(tensor))
    counts = {}
    for steps in (2, 6):
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe(seeds=[1, 2], num_inference_steps=steps, latents=torch.zeros(2, 1, 8, 8), output_type="latent")
        counts[steps] = len(calls)
    # One check of the latents before the loop and one of the final sample after it, whatever the step count.
    assert counts == {2: 2, 6: 2}


# Command line: model folders and seed lists -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"), channels=1, num_class_labels=0)


def broken_copy(model, folder, change):
    shutil.copytree(model, folder)
    change(folder)
    return folder


WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda f: (f / "model_index.json").unlink(), r"is not a pipeline folder: it has no model_index\.json\. Pass a"
                                                      r" folder written by EDMPipeline\.save_pretrained"),
        (lambda f: (f / "model_index.json").write_text("{garbled"), r"model_index\.json is not valid JSON"),
        (lambda f: (f / WEIGHTS).unlink(), r"is incomplete: the unet's weights \(unet/diffusion_pytorch_model"
                                           r"\.safetensors\) are missing\. Copy or download the whole model folder"),
        (lambda f: truncate(f / WEIGHTS), r"unet/diffusion_pytorch_model\.safetensors is truncated or corrupt"),
    ],
    ids=["no_model_index", "garbled_model_index", "no_unet_weights", "truncated_weights"],
)
def test_generate_reports_a_corrupt_model_folder_in_one_line(change, message, model, tmp_path):
    folder = broken_copy(model, tmp_path / "model", change)
    line = run_cli("diffusers_edm.generate", "--model", folder, "--outdir", tmp_path / "out", "--device", "cpu")
    assert line.startswith("python -m diffusers_edm.generate: error: ") and str(folder) in line
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda f: shutil.rmtree(f / "unet"), r"is incomplete: unet/config\.json is missing"),
        (lambda f: (f / "scheduler" / "scheduler_config.json").write_bytes(b"\xff"),
         r"scheduler/scheduler_config\.json is not valid JSON \('utf-8' codec"),
        (lambda f: (f / "model_index.json").write_text("[1]"), r"model_index\.json holds a list, not a JSON object"),
        (lambda f: (f / "model_index.json").write_text('{"unet": ["a", "b"]}'), r"lists no 'scheduler'"),
        (lambda f: (f / WEIGHTS).write_bytes(b""), r"is truncated or corrupt"),
    ],
    ids=["no_unet_folder", "scheduler_config_not_utf8", "model_index_a_list", "model_index_without_scheduler",
         "empty_weights"],
)
def test_other_incomplete_model_folders_name_the_file(change, message, model, tmp_path):
    folder = broken_copy(model, tmp_path / "model", change)
    with pytest.raises(ValueError, match=message):
        check_model_folder(folder)
    check_model_folder(model)  # the intact folder passes


@pytest.mark.parametrize("target,message", [("missing", "does not exist (and is not a Hugging Face Hub id)"),
                                            ("file", "is a file, not a pipeline folder")])
def test_model_that_is_not_a_folder_is_one_line(target, message, model, tmp_path, capsys):
    path = tmp_path / "nowhere" / "model" if target == "missing" else model / WEIGHTS
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(path), "--outdir", str(tmp_path / "out"), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0]


def test_huge_seed_ranges_are_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(command_common, "MAX_SEEDS", 10)
    assert parse_seeds("5-14") == list(range(5, 15))
    with pytest.raises(ValueError, match=r"The seed list '0,2-11' holds 11 seeds, more than the limit of 10 per run"):
        parse_seeds("0,2-11")
    line = run_cli("diffusers_edm.generate", "--model", "m", "--outdir", tmp_path, "--seeds", "0-99999999999")
    assert line == ("python -m diffusers_edm.generate: error: argument --seeds: The seed list '0-99999999999' holds"
                    " 100,000,000,000 seeds, more than the limit of 10,000,000 per run; split the seeds over several"
                    " runs.")
