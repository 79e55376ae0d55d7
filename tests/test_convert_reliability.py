# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reliability and security of `diffusers_edm.convert_edm_checkpoint`: crafted tensors are refused before anything is
allocated or written, the output folder appears only complete (and verified, with `--verify`), an existing folder is
replaced only with `--overwrite` and as a whole, and user mistakes end in one `error: ...` line with exit status 2.

The snapshots are synthetic pickles in the official format (`tests/edm_pickle_writer.py`); crafted tensors are pickled
as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls with the view under test.
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

import diffusers_edm.conversion.convert as converter
from diffusers_edm.commands.convert import PROG as CONVERT_PROG
from diffusers_edm.conversion.edm_snapshot import MAX_NESTING, read_edm_snapshot
from diffusers_edm.conversion.safe_unpickler import view_problem
from diffusers_edm.convert_edm_checkpoint import (
    OutputFolderError,
    UnsafeCheckpointError,
    VerificationFailedError,
    convert_edm_checkpoint,
    main,
)

from .edm_pickle_writer import CraftedTensor, random_official_state_dict, replace_tensor, snapshot_object, write_pickle

REPO_ROOT = Path(__file__).resolve().parents[1]
# A small unconditional ADM: converts in well under a second.
KWARGS = dict(img_resolution=16, img_channels=3, label_dim=0, model_type="DhariwalUNet", model_channels=16,
              channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0.1)
TARGET = "model.map_layer0.weight"  # shape (64, 16)
TARGET_NAME = "ema." + TARGET  # where the unpickled snapshot holds it


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return random_official_state_dict("EDMPrecond", KWARGS, seed=0)


@pytest.fixture(scope="module")
def snapshot_path(state_dict, tmp_path_factory) -> Path:
    return write_pickle(tmp_path_factory.mktemp("source") / "network-snapshot-000100.pkl",
                        snapshot_object("EDMPrecond", KWARGS, state_dict))


def crafted_snapshot(path: Path, state_dict: dict[str, torch.Tensor], tensor: object, key: str = TARGET) -> Path:
    """Writes the snapshot with `tensor` in place of `key`."""
    snapshot = snapshot_object("EDMPrecond", KWARGS, state_dict)
    replace_tensor(snapshot, key, tensor)
    return write_pickle(path, snapshot)


def leftovers(folder: Path) -> list[str]:
    """Temporary folders the converter left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".previous-" in p.name)


def run_cli(*arguments: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m diffusers_edm.convert_edm_checkpoint ARGUMENTS`, or `code` (which calls `main`) with them."""
    command = ["-c", code] if code else ["-m", "diffusers_edm.convert_edm_checkpoint"]
    return subprocess.run([sys.executable, *command, *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def assert_one_line_error(process: subprocess.CompletedProcess, text: str, status: int = 2) -> None:
    assert process.returncode == status, process.stderr
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{CONVERT_PROG}: error: ") and text in lines[0], process.stderr


# --- 1: tensors are checked against their storage before anything is allocated or written --------------------------

CRAFTED = {
    # case: (tensor, text of the error)
    "storage_too_short": (CraftedTensor(torch.zeros(1), (64, 16), (16, 1)),
                          "declares 1024 elements (size (64, 16), stride (16, 1), offset 0) but its storage holds 1"),
    "huge_view_over_4_elements": (CraftedTensor(torch.zeros(4), (500_000_000,), (1,)),
                                  "declares 500000000 elements (size (500000000,), stride (1,), offset 0) but its "
                                  + "storage holds 4"),
    "offset_past_the_end": (CraftedTensor(torch.zeros(1024), (64, 16), (16, 1), offset=1),
                            "declares 1024 elements (size (64, 16), stride (16, 1), offset 1) but its storage holds "
                            + "1024"),
    "zero_stride_repeats_4_elements": (CraftedTensor(torch.zeros(4), (10**9,), (0,)),
                                       "declares 1000000000 elements"),
    "negative_stride": (CraftedTensor(torch.zeros(1024), (64, 16), (16, -1), offset=15),
                        "has a negative size, stride or offset (size (64, 16), stride (16, -1), offset 15)"),
    "negative_offset": (CraftedTensor(torch.zeros(1024), (64, 16), (16, 1), offset=-1), "has a negative size"),
    "negative_size": (CraftedTensor(torch.zeros(1024), (-64, 16), (16, 1)), "has a negative size"),
    "more_sizes_than_strides": (CraftedTensor(torch.zeros(1024), (64, 16), (16,)), "has 2 sizes but 1 strides"),
    "unknown_dtype": (CraftedTensor(torch.zeros(1024, dtype=torch.complex64), (64, 16), (16, 1)),
                      "has element type torch.complex64"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_tensor_inconsistent_with_its_storage_is_refused_before_allocation(case, state_dict, tmp_path, monkeypatch):
    tensor, message = CRAFTED[case]
    path = crafted_snapshot(tmp_path / "crafted.pkl", state_dict, tensor)
    built = []  # every view torch is asked to build: all but the crafted one
    rebuild = torch._utils._rebuild_tensor_v2
    monkeypatch.setattr(torch._utils, "_rebuild_tensor_v2", lambda storage, offset, size, *rest: (
        built.append(size), rebuild(storage, offset, size, *rest))[1])

    start = time.perf_counter()
    with pytest.raises(UnsafeCheckpointError) as error:
        convert_edm_checkpoint(path, tmp_path / "pipe")
    assert time.perf_counter() - start < 10
    assert f"tensor '{TARGET_NAME}' {message}" in str(error.value) and "\n" not in str(error.value)
    assert len(built) == len(state_dict) - 1
    assert not (tmp_path / "pipe").exists() and leftovers(tmp_path) == []


def test_views_inside_their_storage_are_accepted(state_dict, tmp_path):
    """A view at an offset of a larger storage (as a slice of a shared storage pickles) reads the right values."""
    values = torch.arange(2 + 64 * 16, dtype=torch.float32)
    path = crafted_snapshot(tmp_path / "view.pkl", state_dict, CraftedTensor(values, (64, 16), (16, 1), offset=2))
    assert torch.equal(read_edm_snapshot(path).state_dict[TARGET], values[2:].reshape(64, 16))
    transposed = CraftedTensor(torch.arange(1024.0), (64, 16), (1, 64))
    loaded = read_edm_snapshot(crafted_snapshot(tmp_path / "t.pkl", state_dict, transposed)).state_dict[TARGET]
    assert torch.equal(loaded, torch.arange(1024.0).reshape(16, 64).T)


def test_crafted_tensor_outside_the_network_is_refused(state_dict, tmp_path):
    short = CraftedTensor(torch.zeros(1), (64, 16), (16, 1))
    snapshot = snapshot_object("EDMPrecond", KWARGS, state_dict)
    snapshot["loss_fn"].meta["state"]["extra"] = [short]
    with pytest.raises(UnsafeCheckpointError, match="tensor 'loss_fn.extra.0' declares 1024 elements"):
        read_edm_snapshot(write_pickle(tmp_path / "list.pkl", snapshot))
    snapshot["loss_fn"].meta["state"]["extra"] = {short}  # a set member cannot be named: refused as unreadable
    with pytest.raises(ValueError, match="unhashable type: 'RefusedTensor'"):
        read_edm_snapshot(write_pickle(tmp_path / "set.pkl", snapshot))


def test_view_check_compares_integers_only():
    storage = torch.zeros(4).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    assert view_problem(typed, 0, (2, 2), (2, 1)) is None
    assert view_problem(typed, 3, (), ()) is None  # a scalar at the last element
    assert view_problem(typed, 4, (0,), (1,)) is None  # an empty view at the end
    assert "storage holds 4" in view_problem(typed, 0, (2**62, 2**62), (2**62, 1))
    assert "storage holds 4" in view_problem(typed, 4, (), ())


def test_malicious_storage_bytes_error_is_one_line_without_unsafe_advice(tmp_path):
    """torch.load(weights_only=True) wraps its refusal in advice to load with weights_only=False; only the reason is
    passed on."""
    class SystemCall:
        def __reduce__(self):
            return os.system, ("true",)

    class EvilStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(SystemCall(), protocol=2),)

    path = write_pickle(tmp_path / "storage.pkl", {"ema": EvilStorage()})
    with pytest.raises(UnsafeCheckpointError) as error:
        read_edm_snapshot(path)
    message = str(error.value)
    assert "\n" not in message and "GLOBAL" in message and "weights_only` set to `False`" not in message


# --- crafted structure: shared or deeply nested modules and configuration -------------------------------------------


def test_shared_module_is_refused(state_dict, tmp_path):
    """A module referenced twice (the pickle memo makes both one object) could make the state_dict walk exponential."""
    snapshot = snapshot_object("EDMPrecond", KWARGS, state_dict)
    modules = snapshot["ema"].meta["state"]["_modules"]["model"].meta["state"]["_modules"]
    modules["copy"] = modules["map_layer0"]
    with pytest.raises(ValueError, match="'model.copy' repeats a module"):
        read_edm_snapshot(write_pickle(tmp_path / "shared.pkl", snapshot))


def test_deeply_nested_configuration_is_refused(state_dict, tmp_path):
    deep: list = []
    for _ in range(MAX_NESTING + 10):
        deep = [deep]
    snapshot = snapshot_object("EDMPrecond", KWARGS, state_dict)
    snapshot["dataset_kwargs"]["deep"] = deep  # informational only: dropped
    assert read_edm_snapshot(write_pickle(tmp_path / "dataset.pkl", snapshot)).dataset_kwargs is None
    snapshot["ema"].meta["state"]["_init_kwargs"]["deep"] = deep
    with pytest.raises(ValueError, match=f"nests deeper than {MAX_NESTING} levels"):
        read_edm_snapshot(write_pickle(tmp_path / "kwargs.pkl", snapshot))


# --- 6: the output folder: written completely or not at all, replaced only as a whole -------------------------------


def test_non_empty_output_folder_is_refused_and_left_alone(snapshot_path, tmp_path):
    output = tmp_path / "pipe"
    output.mkdir()
    (output / "README.md").write_text("my notes")
    with pytest.raises(OutputFolderError, match="already exists and is not empty; pass --overwrite"):
        convert_edm_checkpoint(snapshot_path, output)
    assert [p.name for p in output.iterdir()] == ["README.md"] and (output / "README.md").read_text() == "my notes"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_the_folder_as_a_whole(snapshot_path, tmp_path):
    output = tmp_path / "pipe"
    (output / "unet").mkdir(parents=True)
    (output / "README.md").write_text("my notes")
    (output / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"stale weights")
    convert_edm_checkpoint(snapshot_path, output, overwrite=True)
    assert not (output / "unet" / "diffusion_pytorch_model.bin").exists()
    assert "my notes" not in (output / "README.md").read_text()
    assert (output / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert leftovers(tmp_path) == []


def test_empty_output_folder_is_used(snapshot_path, tmp_path):
    (tmp_path / "pipe").mkdir()
    convert_edm_checkpoint(snapshot_path, tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file() and leftovers(tmp_path) == []


def test_overwrite_refuses_a_folder_holding_the_snapshot_or_the_current_directory(snapshot_path, tmp_path,
                                                                                   monkeypatch):
    source = tmp_path / "run" / "network-snapshot-000100.pkl"
    source.parent.mkdir()
    source.write_bytes(snapshot_path.read_bytes())
    with pytest.raises(OutputFolderError, match="is or holds the snapshot .* which --overwrite would delete"):
        convert_edm_checkpoint(source, tmp_path / "run", overwrite=True)
    monkeypatch.chdir(source.parent)
    with pytest.raises(OutputFolderError, match="is or holds the current directory"):
        convert_edm_checkpoint(snapshot_path, tmp_path, overwrite=True)
    assert source.is_file()


@pytest.mark.filterwarnings("ignore:1 of 1 samples contain NaN:RuntimeWarning")
def test_failed_verification_leaves_nothing(state_dict, tmp_path, capsys):
    path = crafted_snapshot(tmp_path / "nan.pkl", state_dict, torch.full((64, 16), float("nan")))
    with pytest.raises(VerificationFailedError, match="nothing was written to") as error:
        convert_edm_checkpoint(path, tmp_path / "pipe", verify=True)
    assert "[FAIL] converted denoiser gives finite D" in error.value.report.summary()
    assert not (tmp_path / "pipe").exists() and leftovers(tmp_path) == []

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "README.md").write_text("previous conversion")
    assert main([str(path), str(tmp_path / "old"), "--verify", "--overwrite"]) == 1
    captured = capsys.readouterr()
    assert "VERIFICATION FAILED" in captured.out
    assert captured.err.splitlines()[-1].startswith(f"{CONVERT_PROG}: error: verification failed") and "Traceback" not in captured.err
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["README.md"] and leftovers(tmp_path) == []


def _refuse_mkdir_in(folder: Path, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes creating folders in `folder` fail with `code`: EACCES with chmod where that has an effect (not as root),
    otherwise (and for EROFS, which needs a read-only mount) os.mkdir raises as the kernel would."""
    if code == errno.EACCES:
        folder.chmod(0o555)
        try:
            (folder / "probe").mkdir()
        except PermissionError:
            return
        (folder / "probe").rmdir()
    mkdir = os.mkdir

    def refusing_mkdir(path, *args, **kwargs):
        if Path(path).parent == folder:
            raise OSError(code, os.strerror(code), str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refusing_mkdir)


@pytest.mark.parametrize("code, cause", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only")])
def test_unwritable_output_parent_is_one_line_error(code, cause, snapshot_path, tmp_path, monkeypatch, capsys):
    parent = tmp_path / "readonly"
    parent.mkdir()
    _refuse_mkdir_in(parent, code, monkeypatch)
    try:
        assert main([str(snapshot_path), str(parent / "pipe")]) == 2
    finally:
        parent.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: cannot write {parent / 'pipe'}: " in err and cause in err
    assert list(parent.iterdir()) == []


def test_disk_full_while_writing_leaves_no_temporary_folder(snapshot_path, tmp_path, monkeypatch):
    written = []

    def disk_full(folder, *args):  # called once the weights are written
        written.extend(p.name for p in Path(folder).rglob("*.safetensors"))
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / "sampler_settings.json"))

    monkeypatch.setattr(converter, "write_sampler_settings", disk_full)
    with pytest.raises(OutputFolderError, match=r"cannot write .*pipe: no space left on device; free some space .*\(ENOSPC\)"):
        convert_edm_checkpoint(snapshot_path, tmp_path / "pipe")
    assert written and not (tmp_path / "pipe").exists() and leftovers(tmp_path) == []


def test_disk_full_in_the_safetensors_writer_is_recognised(snapshot_path, tmp_path, monkeypatch):
    """safetensors reports a full disk as a SafetensorError (not an OSError) with the errno in its message; this is
    its text on a full tmpfs."""
    def disk_full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OutputFolderError, match=r"no space left on device; .*\(ENOSPC\); nothing was left there"):
        convert_edm_checkpoint(snapshot_path, tmp_path / "pipe")
    assert list(tmp_path.iterdir()) == []


def test_unexpected_os_error_keeps_its_traceback_and_cleans_up(snapshot_path, tmp_path, monkeypatch):
    def failing(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(converter, "write_sampler_settings", failing)
    with pytest.raises(OSError, match="Input/output error"):
        main([str(snapshot_path), str(tmp_path / "pipe")])
    assert list(tmp_path.iterdir()) == []


# --- user mistakes: one line that says what is wrong and how to fix it --------------------------------------------


def test_source_and_output_path_mistakes(snapshot_path, tmp_path):
    with pytest.raises(ValueError, match="is a directory; pass the snapshot .pkl file in it"):
        convert_edm_checkpoint(snapshot_path.parent, tmp_path / "pipe")
    with pytest.raises(FileNotFoundError, match="does not exist; pass the path of an EDM snapshot .pkl"):
        convert_edm_checkpoint(tmp_path / "missing.pkl", tmp_path / "pipe")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputFolderError, match="file is a file; pass a folder path"):
        convert_edm_checkpoint(snapshot_path, tmp_path / "file")
    with pytest.raises(OutputFolderError, match=r"file is a file, so .*sub cannot be created"):
        convert_edm_checkpoint(snapshot_path, tmp_path / "file" / "sub")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    with pytest.raises(OutputFolderError, match=r"link is a symbolic link; pass the folder it points to \("):
        convert_edm_checkpoint(snapshot_path, tmp_path / "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "link"]
    assert list((tmp_path / "folder").iterdir()) == []


CLI_CASES = {
    # case: (arguments given the snapshot, the tmp folder and a crafted snapshot, expected text)
    "source_is_a_directory": (lambda src, tmp, bad: [str(src.parent), str(tmp / "out")], "is a directory"),
    "source_missing": (lambda src, tmp, bad: [str(tmp / "missing.pkl"), str(tmp / "out")], "does not exist"),
    "output_is_a_file": (lambda src, tmp, bad: [str(src), str(src)], "is a file; pass a folder path"),
    "output_not_empty": (lambda src, tmp, bad: [str(src), str(src.parent)], "is not empty; pass --overwrite"),
    "storage_too_short": (lambda src, tmp, bad: [str(bad), str(tmp / "out")], "but its storage holds 1;"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_command_line_mistakes_are_one_line_errors(case, snapshot_path, state_dict, tmp_path):
    arguments, text = CLI_CASES[case]
    crafted = crafted_snapshot(tmp_path / "crafted.pkl", state_dict, CraftedTensor(torch.zeros(1), (64, 16), (16, 1)))
    assert_one_line_error(run_cli(*arguments(snapshot_path, tmp_path, crafted)), text)
    assert not (tmp_path / "out").exists()


def test_command_line_disk_full_is_a_one_line_error(snapshot_path, tmp_path):
    code = ("import errno, sys\n"
            "import diffusers_edm.conversion.convert as converter\n"
            "from diffusers_edm.commands.convert import main\n"
            "def disk_full(*args):\n"
            "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "converter.write_sampler_settings = disk_full\n"
            "sys.exit(main(sys.argv[1:]))\n")
    assert_one_line_error(run_cli(str(snapshot_path), str(tmp_path / "pipe"), code=code), "no space left on device")
    assert list(tmp_path.iterdir()) == []


def test_crafted_tensor_in_a_parameter_is_named(state_dict, tmp_path):
    """Tensors inside torch.nn.Parameter (as official snapshots pickle weights) are checked too."""
    class CraftedParameter:
        def __reduce__(self):
            return torch._utils._rebuild_parameter, (CraftedTensor(torch.zeros(1), (64, 16), (16, 1)), False,
                                                     OrderedDict())

    path = crafted_snapshot(tmp_path / "parameter.pkl", state_dict, CraftedParameter())
    with pytest.raises(UnsafeCheckpointError, match=f"tensor '{TARGET_NAME}' declares 1024 elements"):
        read_edm_snapshot(path)
