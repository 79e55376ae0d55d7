"""The surfaces added after the converter and the checkpoints, tried as a careful user and as an attacker would:
detector files, post-hoc EMA output and snapshots, run folders and resumes, evaluation inputs, the decoded-data cache
and the Hub. Every case of docs/reliability.md's "new surfaces" table is a test here; crafted files are built in the
tests, nothing touches the network."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers_edm import EDMPipeline
from diffusers_edm.commands.fid import main as fid_main
from diffusers_edm.commands.reconstruct_phema import main as reconstruct_main
from diffusers_edm.commands.train import parse_args
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.data import sources as data_sources
from diffusers_edm.data.cache import DecodedImageWriter
from diffusers_edm.errors import (
    CheckpointError,
    DatasetError,
    DetectorError,
    ImageSourceError,
    ReferenceStatisticsError,
    TrainingError,
)
from diffusers_edm.evaluation import downloads
from diffusers_edm.evaluation.detectors import DIGITS_DETECTOR_FILE, DIGITS_DETECTOR_SHA256, load_detector
from diffusers_edm.evaluation.downloads import sha256_of
from diffusers_edm.evaluation.reference import load_reference
from diffusers_edm.evaluation.sources import ImageFiles
from diffusers_edm.training import trainer as trainer_module
from diffusers_edm.training.checkpoint import PROGRESS
from diffusers_edm.training.hub import read_token_file
from diffusers_edm.training.phema_reconstruction import reconstruct
from diffusers_edm.training.trainer import EDMTrainer, find_checkpoint

from .evaluation_helpers import random_images, write_detector
from .test_training import make_args

PHEMA = ["--phema_stds", "0.05,0.10", "--phema_every", "1kimg"]


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


# --- 1: detector files ----------------------------------------------------------------------------------------------


class FileWriter(torch.nn.Module):
    """What an attacker's detector does: maps a file of the user's into a tensor and overwrites it."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        mapped = torch.from_file(self.victim, shared=True, size=4, dtype=torch.uint8)
        mapped.fill_(65)
        return images.float().flatten(1) + mapped.sum() * 0


class LoadTimeWriter(torch.nn.Module):
    """A detector whose `__setstate__` (run by torch.jit.load) would reach the user's files."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.zeros(1)

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return images.float().flatten(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.weight = state[0]
        self.training = state[1]


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "token.txt"
    path.write_bytes(b"hf_secret")
    return path


def test_detector_that_writes_files_is_refused_before_its_first_call(tmp_path, victim, capsys):
    path = tmp_path / "evil.pt"
    torch.jit.script(FileWriter(str(victim))).save(str(path))
    with pytest.raises(DetectorError, match=r"operator aten::from_file.*--trust_detector"):
        load_detector(str(path))
    assert victim.read_bytes() == b"hf_secret"
    with pytest.raises(SystemExit):
        fid_main(["ref", "--dest", str(tmp_path / "ref.npz"), "--detector", str(path), "--device", "cpu"])
    assert "--trust_detector" in _one_error_line(capsys) and victim.read_bytes() == b"hf_secret"
    trusted = load_detector(str(path), trust=True)  # the user vouches for it: it runs (and does what it does)
    trusted(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert victim.read_bytes() == b"AAAAecret"


def test_detector_with_load_time_code_is_refused_before_loading(tmp_path):
    path = tmp_path / "setstate.pt"
    torch.jit.script(LoadTimeWriter()).save(str(path))
    with mock.patch("torch.jit.load", side_effect=AssertionError("loaded")):
        with pytest.raises(DetectorError, match="defines __setstate__, which runs while the file loads"):
            load_detector(str(path))


def test_plain_and_pinned_detectors_load(tmp_path):
    assert load_detector(str(write_detector(tmp_path / "tiny.pt"))).name.endswith("tiny.pt")
    assert sha256_of(DIGITS_DETECTOR_FILE) == DIGITS_DETECTOR_SHA256
    assert load_detector("digits").metric == "fd_digits"
    (tmp_path / "not-torchscript.pt").write_bytes(b"garbage")
    with pytest.raises(DetectorError, match="is not a TorchScript file"):
        load_detector(str(tmp_path / "not-torchscript.pt"))


# --- 2, 5, 6: post-hoc EMA reconstruction ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("phema") / "run"
    EDMTrainer(make_args(run, "--max_train_steps", "2", "--checkpointing_steps", "0", *PHEMA)).train()
    return run


@pytest.fixture
def run_copy(phema_run, tmp_path) -> Path:
    return Path(shutil.copytree(phema_run, tmp_path / "run"))


@pytest.mark.parametrize("where", ["run", "snapshots", "cwd", "parent"])
def test_reconstruct_overwrite_never_deletes_the_run_or_the_current_folder(where, run_copy, monkeypatch, capsys):
    monkeypatch.chdir(run_copy.parent)
    out = {"run": run_copy, "snapshots": run_copy / "phema", "cwd": Path("."), "parent": run_copy.parent}[where]
    before = sorted(p.name for p in run_copy.rglob("*"))
    with pytest.raises(SystemExit):
        reconstruct_main(["--run", str(run_copy), "--out", str(out), "--overwrite"])
    assert "--overwrite would delete" in _one_error_line(capsys)
    assert sorted(p.name for p in run_copy.rglob("*")) == before


def test_reconstruct_replaces_a_folder_atomically(run_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with mock.patch.object(EDMPipeline, "save_pretrained", side_effect=OSError(errno.EIO, "I/O error")):
        with pytest.raises(OSError):
            reconstruct(run_copy, [0.1], out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no staging folder left
    assert (out / "old.txt").read_text() == "old"  # untouched
    reconstruct(run_copy, [0.1], out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model_index.json").is_file()


def _snapshot_file(run: Path) -> Path:
    return sorted((run / "phema").glob("*.safetensors"))[0]


def _rewrite(path: Path, change_tensors=None, change_metadata=None) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {key: f.get_tensor(key) for key in f.keys()}
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    save_file(tensors, str(path), metadata=metadata)


def _first_weight(tensors: dict) -> str:
    """The floating-point tensor with the largest values (a zero-initialised one would not show a scaling)."""
    return max((key for key, value in tensors.items() if value.is_floating_point() and value.numel() > 1),
               key=lambda key: float(tensors[key].abs().max()))


@pytest.mark.parametrize("case,message", [
    ("nan", "holds NaN or infinite values"),
    ("diverged", "far beyond the run's weights"),
    ("missing_tensor", "do not fit the model of this run (it lacks"),
    ("other_shape", "do not fit the model of this run"),
    ("gamma_nan", "which is not the γ of its σ_rel"),
    ("negative_nimg", "does not match the"),
    ("zero_nimg", "does not match the"),
    ("std_mismatch", "does not match the"),
    ("truncated", "is not a readable post-hoc EMA snapshot"),
    ("garbage", "is not a readable post-hoc EMA snapshot"),
    ("huge_header", "is not a readable post-hoc EMA snapshot"),
    ("symlink", "is a symbolic link"),
])
def test_bad_snapshots_are_refused_in_one_line_naming_the_file(case, message, run_copy, tmp_path, capsys):
    path = _snapshot_file(run_copy)
    if case == "nan":
        _rewrite(path, lambda t: t[_first_weight(t)].view(-1).__setitem__(0, float("nan")))
    elif case == "diverged":
        _rewrite(path, lambda t: t[_first_weight(t)].mul_(1e29))
    elif case == "missing_tensor":
        _rewrite(path, lambda t: t.pop(_first_weight(t)))
    elif case == "other_shape":
        _rewrite(path, lambda t: t.__setitem__(_first_weight(t), torch.zeros(3)))
    elif case == "gamma_nan":
        _rewrite(path, change_metadata=lambda m: m.__setitem__("gamma", "nan"))
    elif case == "negative_nimg":
        _rewrite(path, change_metadata=lambda m: m.__setitem__("nimg", "-16"))
    elif case == "zero_nimg":
        _rewrite(path, change_metadata=lambda m: m.__setitem__("nimg", "0"))
    elif case == "std_mismatch":
        _rewrite(path, change_metadata=lambda m: m.__setitem__("std", "0.2"))
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif case == "garbage":
        path.write_bytes(os.urandom(4096))
    elif case == "huge_header":
        path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    elif case == "symlink":
        target = tmp_path / "elsewhere.safetensors"
        shutil.move(path, target)
        path.symlink_to(target)
    with pytest.raises(SystemExit) as exit_info:
        reconstruct_main(["--run", str(run_copy), "--out", str(tmp_path / "out")])
    line = _one_error_line(capsys)
    assert exit_info.value.code == 2 and message in line and path.name in line, line
    assert not (tmp_path / "out").exists()


def test_sigma_rel_lists_that_name_one_folder_twice_and_extrapolation(run_copy, tmp_path, capsys, caplog):
    with pytest.raises(SystemExit):
        reconstruct_main(["--run", str(run_copy), "--std", "0.1,0.1004", "--out", str(tmp_path / "o")])
    assert "agree in their first 3 decimals" in _one_error_line(capsys)
    with caplog.at_level(logging.WARNING):
        reconstruct(run_copy, [1e-3], tmp_path / "far")
    assert "lies far outside the tracked σ_rel" in caplog.text


# --- 3, 4, 14: run folders and resumed settings ----------------------------------------------------------------------


def test_a_fresh_run_never_mixes_with_an_older_one(phema_run, tmp_path):
    out = Path(shutil.copytree(phema_run, tmp_path / "run"))
    (out / "notes.txt").write_text("mine")
    expected = "holds another run .*--resume_from_checkpoint latest.*--overwrite_output_dir"
    with pytest.raises(TrainingError, match=expected):
        EDMTrainer(make_args(out, "--max_train_steps", "1", "--checkpointing_steps", "0"))
    trainer = EDMTrainer(make_args(out, "--max_train_steps", "1", "--checkpointing_steps", "0",
                                   "--overwrite_output_dir"))
    assert not (out / "phema").exists() and not list(out.glob("checkpoint-*")) and not (out / "logs").exists()
    assert (out / "notes.txt").read_text() == "mine"  # the user's file stays
    trainer.train()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]


@pytest.mark.parametrize("flags,message", [
    (["--precond", "vp"], "--precond vp (the checkpoint's: None)"),
    (["--sigma_data", "0.9"], "--sigma_data 0.9 (the checkpoint's: None)"),
    (["--train_batch_size", "10"], "10 images per step (the checkpoint's: 8"),
])
def test_resuming_with_settings_that_cannot_change_names_both_values(flags, message, phema_run, tmp_path):
    out = Path(shutil.copytree(phema_run, tmp_path / "run"))
    config_before = (out / "training_config.json").read_bytes()
    with pytest.raises(CheckpointError) as error:
        EDMTrainer(make_args(out, "--max_train_steps", "3", "--checkpointing_steps", "0", *PHEMA,
                             "--resume_from_checkpoint", "latest", *flags))
    assert message in str(error.value), str(error.value)
    assert (out / "training_config.json").read_bytes() == config_before  # a failed start leaves it as it was


def test_resuming_with_settings_that_may_change_logs_them(phema_run, tmp_path, caplog):
    out = Path(shutil.copytree(phema_run, tmp_path / "run"))
    with caplog.at_level(logging.INFO, logger="diffusers_edm"):
        trainer = EDMTrainer(make_args(out, "--max_train_steps", "3", "--checkpointing_steps", "0", *PHEMA,
                                       "--resume_from_checkpoint", "latest", "--learning_rate", "0.002"))
    assert "Resuming with a changed setting, learning_rate: 0.001 -> 0.002." in caplog.text
    trainer.train()
    assert trainer.progress.step == 3


def test_negative_progress_in_a_checkpoint_is_refused(phema_run, tmp_path):
    out = Path(shutil.copytree(phema_run, tmp_path / "run"))
    checkpoint = find_checkpoint(str(out), "latest")
    progress = checkpoint / PROGRESS
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "step": -5}))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"][PROGRESS] = {"size": progress.stat().st_size, "sha256": sha256_of(progress)}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"{PROGRESS} cannot be loaded into this run .*not a training progress"):
        EDMTrainer(make_args(out, "--max_train_steps", "3", "--checkpointing_steps", "0", *PHEMA,
                             "--resume_from_checkpoint", "latest")).train()


@pytest.mark.parametrize("argv,message", [
    (["--phema_stds", "0.05,0.05"], "agree in their first 3 decimals"),
    (["--arch", "ddpmpp", "--phema_every", "2kimg"],
     "--phema_every sets how often post-hoc EMA snapshots are stored; it needs"),
])
def test_phema_flags_are_checked_before_any_setup(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in _one_error_line(capsys)


def test_non_finite_ema_leaves_the_saved_pipeline(tmp_path):
    trainer = EDMTrainer(make_args(tmp_path, "--max_train_steps", "1", "--checkpointing_steps", "0"))
    trainer.train()
    before = (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with torch.no_grad():
        next(trainer.ema.model.parameters()).fill_(float("nan"))
    trainer._saved_step = None
    with pytest.raises(TrainingError, match="EMA weights are not finite"):
        trainer._save()
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before


# --- 12: a symlinked checkpoint never costs the final save ------------------------------------------------------------


def test_symlinked_checkpoint_is_neither_followed_nor_fatal(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "checkpoint-0"
    elsewhere.mkdir(parents=True)
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint-0").symlink_to(elsewhere)
    EDMTrainer(make_args(out, "--max_train_steps", "2", "--checkpointing_steps", "1",
                         "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest")).train()
    assert (elsewhere / "keep.txt").read_text() == "keep"  # the link was neither followed, counted nor pruned
    assert (out / "model_index.json").is_file() and (out / "README.md").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-2"]


# --- 7, 9: evaluation inputs ----------------------------------------------------------------------------------------


def test_16_bit_images_score_as_their_8_bit_copies_and_32_bit_ones_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (3, 12, 12)).astype(np.uint16)
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    for folder in (wide, narrow):
        folder.mkdir()
    for index, image in enumerate(levels):
        Image.fromarray((image * 257).astype(np.uint16)).save(wide / f"{index}.png")  # mode "I;16"
        Image.fromarray(image.astype(np.uint8)).save(narrow / f"{index}.png")  # mode "L"
    wide_files, narrow_files = ImageFiles(wide), ImageFiles(narrow)
    assert all(np.array_equal(wide_files.read(name), narrow_files.read(name)) for name in wide_files.names)
    training = build_dataset(DataConfig(train_data_dir=str(wide), label_column=None))
    assert np.array_equal(((training[0][0] + 1) * 127.5).round().numpy().astype(np.uint8), narrow_files.read("0.png"))
    for mode, array in (("I", levels[0].astype(np.int32) * 1000), ("F", levels[0].astype(np.float32) / 255)):
        folder = tmp_path / mode
        folder.mkdir()
        Image.fromarray(array).save(folder / "x.tiff")
        with pytest.raises(ImageSourceError, match=f"32-bit pixel mode '{mode}'"):
            ImageFiles(folder).read("x.tiff")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND",
                                                                                                             b"")


def test_decompression_bomb_is_one_line(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(20_000, 20_000))
    with pytest.raises(ImageSourceError, match="bomb.png"):
        ImageFiles(tmp_path).read("bomb.png")


def test_zip_member_that_unpacks_to_more_than_an_image_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources, "MAX_IMAGE_FILE_BYTES", 2**20)
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.png", b"\0" * (4 * 2**20))  # 4 KiB compressed
    files = ImageFiles(path)
    with mock.patch.object(zipfile.ZipFile, "read", side_effect=AssertionError("read")):
        with pytest.raises(ImageSourceError, match="unpacks to 4,194,304 bytes"):
            files.read("big.png")


def _npz_declaring(path: Path, sigma_shape: tuple[int, int]) -> None:
    header = io.BytesIO()  # magic and header of a float64 array of `sigma_shape`, followed by 64 bytes only
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": sigma_shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mu.npy", _npy(np.zeros(2)))
        archive.writestr("sigma.npy", header.getvalue() + b"\0" * 64)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_reference_files_are_bounded_and_must_hold_a_covariance(tmp_path):
    _npz_declaring(tmp_path / "huge.npz", (10**6, 10**6))
    with pytest.raises(ReferenceStatisticsError, match="declares shape"):
        load_reference(tmp_path / "huge.npz")
    np.savez(tmp_path / "not_psd.npz", mu=np.zeros(2), sigma=np.array([[1.0, 0.0], [0.0, -3.0]]))
    with pytest.raises(ReferenceStatisticsError, match="negative eigenvalue"):
        load_reference(tmp_path / "not_psd.npz")


def test_reference_urls_are_cached_by_the_whole_url(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "cache_folder", lambda kind: tmp_path / kind)
    monkeypatch.setattr(downloads, "offline", lambda: False)

    def fake_download(url, path, flag, sha256):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(url)

    monkeypatch.setattr(downloads, "_download", fake_download)
    first = downloads.cached_download("https://a.example/refs/cifar10-32x32.npz", "refs", "--ref")
    second = downloads.cached_download("https://b.example/refs/cifar10-32x32.npz", "refs", "--ref")
    assert first != second and first.read_text() != second.read_text()


# --- 13: output paths are checked before the work ---------------------------------------------------------------------


@pytest.mark.parametrize("case,flag", [("ref_dest_dir", "--dest"), ("calc_out_dir", "--out"),
                                       ("dest_below_a_file", "--dest")])
def test_output_paths_are_checked_before_any_feature(case, flag, tmp_path, capsys):
    images = tmp_path / "images"
    from .evaluation_helpers import write_images

    write_images(images, random_images(4, size=8))
    (tmp_path / "file").write_text("x")
    detector = str(write_detector(tmp_path / "det.pt"))
    argv = {
        "ref_dest_dir": ["ref", "--data", str(images), "--dest", str(tmp_path)],
        "calc_out_dir": ["calc", "--images", str(images), "--ref", str(tmp_path / "r.npz"), "--num", "4",
                         "--out", str(tmp_path)],
        "dest_below_a_file": ["ref", "--data", str(images), "--dest", str(tmp_path / "file" / "x.npz")],
    }[case]
    with mock.patch("diffusers_edm.commands.fid.compute_statistics", side_effect=AssertionError("computed")):
        with pytest.raises(SystemExit):
            fid_main([*argv, "--detector", detector, "--device", "cpu"])
    assert f"error: {flag} " in _one_error_line(capsys)
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_destination_folders_are_created(tmp_path):
    images = tmp_path / "images"
    from .evaluation_helpers import write_images

    write_images(images, random_images(4, size=8))
    fid_main(["ref", "--data", str(images), "--dest", str(tmp_path / "new" / "ref.npz"), "--detector",
              str(write_detector(tmp_path / "det.pt")), "--device", "cpu", "--workers", "0"])
    assert (tmp_path / "new" / "ref.npz").is_file()


def test_negative_workers_are_a_parse_error(capsys):
    with pytest.raises(SystemExit):
        fid_main(["calc", "--images", "x", "--ref", "r.npz", "--workers", "-1"])
    assert "expected an integer >= 0" in _one_error_line(capsys)


# --- 10: the decoded-image cache -------------------------------------------------------------------------------------


def _image_folder(root: Path, count: int = 6) -> Path:
    for index in range(count):
        array = np.random.RandomState(index).randint(0, 256, (8, 8, 3), dtype=np.uint8)
        path = root / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return root


def _cached(folder: Path, cache: Path) -> DataConfig:
    return DataConfig(train_data_dir=str(folder), in_memory=False, decoded_cache_dir=str(cache), label_column=None)


def test_altered_cache_is_rebuilt_and_content_changes_are_seen(tmp_path, caplog):
    folder, cache = _image_folder(tmp_path / "images"), tmp_path / "cache"
    first = build_dataset(_cached(folder, cache))[0][0].clone()
    images_file = next(cache.glob("*.npy"))
    data = bytearray(images_file.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last pixel
    images_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset(_cached(folder, cache))
    assert "does not match its checksum" in caplog.text
    assert torch.equal(dataset[len(dataset) - 1][0], build_dataset(DataConfig(train_data_dir=str(folder),
                                                                               label_column=None))[5][0])
    # Same names, sizes and times, other content (as `cp -p` of another file would leave): decoded again.
    stat = os.stat(folder / "0.png")
    other = np.full((8, 8, 3), 7, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(other).save(buffer, format="PNG")
    (folder / "0.png").write_bytes(buffer.getvalue())
    os.utime(folder / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not torch.equal(build_dataset(_cached(folder, cache))[0][0], first)


def test_full_disk_leaves_no_hidden_file_in_the_cache(tmp_path, monkeypatch):
    folder, cache = _image_folder(tmp_path / "images"), tmp_path / "cache"
    class FullDisk:
        """The staging file of a full disk: its final flush, in `close`, fails."""

        def __init__(self, file):
            self.file = file

        def close(self):
            self.file.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(self):
        self._file = FullDisk(self._file)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DecodedImageWriter, "finish", full_disk)
    with pytest.raises(DatasetError, match="no space left on device"):
        build_dataset(_cached(folder, cache))
    assert list(cache.iterdir()) == []  # no hidden staging file


def test_fifo_at_the_cache_path_does_not_hang(tmp_path, monkeypatch):
    folder, cache = _image_folder(tmp_path / "images"), tmp_path / "cache"
    build_dataset(_cached(folder, cache))
    images_file = next(cache.glob("*.npy"))
    images_file.unlink()
    os.mkfifo(images_file)
    dataset = build_dataset(_cached(folder, cache))  # ignored and rebuilt, never opened
    assert len(dataset) == 6 and images_file.is_file()


# --- 11: the Hub and the token ---------------------------------------------------------------------------------------


def test_unreachable_hub_fails_in_one_line_before_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "build_dataset", mock.Mock(side_effect=AssertionError("data prepared")))
    with mock.patch("diffusers_edm.training.hub.create_repo", side_effect=OSError("hf_SECRET offline")):
        with pytest.raises(TrainingError) as error:
            EDMTrainer(make_args(tmp_path, "--push_to_hub", "--hub_token", "hf_SECRET"))
    message = str(error.value)
    assert "could not create or reach the Hub repository" in message and "hf_SECRET" not in message
    assert "\n" not in message


def test_token_files_are_bounded_and_checked(tmp_path, caplog):
    with pytest.raises(TrainingError, match="is not a regular file"):
        read_token_file("/dev/zero")
    big = tmp_path / "big"
    big.write_bytes(b"a" * 10_000)
    with pytest.raises(TrainingError, match="is larger than a token file"):
        read_token_file(str(big))
    token = tmp_path / "token"
    token.write_text("hf_abc\n")
    token.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_token_file(str(token)) == "hf_abc"
    assert "can be read by other users" in caplog.text
    token.chmod(0o600)


# --- weak cases of the pipeline ----------------------------------------------------------------------------------------


def _pipe() -> EDMPipeline:
    from .test_frictions import tiny_pipeline

    return tiny_pipeline()


@pytest.mark.parametrize("steps", [True, 10**6, 0, 2.5])
def test_step_counts_are_checked_before_allocating(steps):
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1 and <= 10000"):
        _pipe()(num_inference_steps=steps)


def test_a_guide_with_other_out_channels_guides(tmp_path):
    from diffusers_edm import EDMPreconditionedUNet2DModel

    from .helpers import randomize_, tiny_unet_kwargs

    pipe = _pipe()
    iddpm_like = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3, out_channels=2))
    pipe.guide_unet = randomize_(iddpm_like).eval()  # D has in_channels whatever the network outputs
    images = pipe(num_inference_steps=2, guidance_scale=1.5, output_type="latent").images
    assert images.shape == (1, 1, 8, 8) and bool(torch.isfinite(images).all())
