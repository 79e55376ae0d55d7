# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Reliability and security of training: checkpoints are data (a tampered file never runs code and is refused), every
file is verified on resume with the fallback named, fp16 on a CPU and a diverged loss stop the run, the Hub token stays
off the command line, and user mistakes end with one line (exit status != 0, no traceback) under accelerate launch."""

import errno
import hashlib
import json
import logging
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm.commands.train import parse_args
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.checkpoint import (
    CONFIG,
    EMA,
    MANIFEST,
    MODEL,
    OPTIMIZER,
    PROGRESS,
    CheckpointError,
    check_checkpoint,
    prune_checkpoints,
)
from diffusers_edm.training.hub import COMMAND_LINE_TOKEN_WARNING
from diffusers_edm.commands.train import train
from diffusers_edm.training.trainer import EDMTrainer

from .test_training import REPO_ROOT, TINY, make_args

RNG = "random_states_0.safetensors"
PIECES = [MODEL, EMA, OPTIMIZER, PROGRESS, RNG]


class Payload:
    """Unpickling it runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two steps with a checkpoint after each: checkpoint-1 and checkpoint-2 (the latest)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    EDMTrainer(make_args(out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--logging_steps", "1")).train()
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained output folder to tamper with."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def resume(out: Path, which: str = "latest", steps: int = 3) -> EDMTrainer:
    trainer = EDMTrainer(make_args(out, "--max_train_steps", str(steps), "--checkpointing_steps", "1",
                                   "--logging_steps", "1", "--resume_from_checkpoint", which))
    trainer.train()
    return trainer


def reseal(checkpoint: Path, name: str) -> None:
    """What an attacker who replaces a file also does: rewrites its manifest entry."""
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    data = (checkpoint / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


# --- checkpoints are data ----------------------------------------------------------------------------------------

def test_checkpoint_is_safetensors_and_json_listed_in_the_manifest(trained):
    checkpoint = trained / "checkpoint-2"
    manifest = check_checkpoint(checkpoint)
    assert sorted(manifest["files"]) == sorted([*PIECES, CONFIG])
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted([*PIECES, CONFIG, MANIFEST])
    for name, entry in manifest["files"].items():
        data = (checkpoint / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if name.endswith(".safetensors"):
            assert load_file(checkpoint / name)
    assert json.loads((checkpoint / PROGRESS).read_text())["step"] == 2
    config = json.loads((checkpoint / CONFIG).read_text())
    assert config["max_train_steps"] == 2 and "hub_token" not in config
    assert not list(trained.glob("*.tmp")) and not list(trained.rglob("*.pkl"))


def test_the_payload_runs_when_unpickled(tmp_path):
    """The attack of the next tests is real: plain unpickling runs the command."""
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", PIECES)
def test_tampered_checkpoint_file_never_runs_code(run, tmp_path, name, kind):
    marker = tmp_path / "executed"
    target = run / "checkpoint-2" / name
    if kind == "pickle":
        target.write_bytes(pickle.dumps({"state": Payload(marker)}))
    else:
        torch.save({"state": Payload(marker)}, target)
    reseal(run / "checkpoint-2", name)
    with pytest.raises(CheckpointError) as error:
        resume(run)
    assert not marker.exists()
    message = str(error.value)
    assert f"{target} cannot be loaded into this run" in message and "\n" not in message
    assert f"pass --resume_from_checkpoint {run / 'checkpoint-1'}" in message


def test_pickled_checkpoint_of_older_versions_is_refused_unread(run, tmp_path):
    marker = tmp_path / "executed"
    legacy = run / "checkpoint-5"
    legacy.mkdir()
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (legacy / name).write_bytes(pickle.dumps(Payload(marker)))
    refused = "it holds pickles .* never loaded because a pickle can run code"
    with pytest.raises(CheckpointError, match=refused) as error:
        resume(run)
    assert not marker.exists()
    assert f"pass --resume_from_checkpoint {run / 'checkpoint-2'}" in str(error.value)


# --- every file is verified on resume ----------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, problem", [
    (RNG, _truncate, "is truncated or altered"),
    (OPTIMIZER, Path.unlink, "is missing"),
    (MODEL, _flip_a_byte, "is altered or corrupt"),
    (MANIFEST, Path.unlink, "is missing: the checkpoint is incomplete"),
    (MANIFEST, _truncate, "is unreadable"),
])
def test_damaged_checkpoint_is_refused_naming_the_file_and_the_fallback(run, name, damage, problem):
    damage(run / "checkpoint-2" / name)
    with pytest.raises(CheckpointError) as error:
        resume(run)
    message = str(error.value)
    assert f"cannot resume from {run / 'checkpoint-2'}: {run / 'checkpoint-2' / name} {problem}" in message
    assert message.endswith(f"The previous complete checkpoint is {run / 'checkpoint-1'}: pass "
                            f"--resume_from_checkpoint {run / 'checkpoint-1'}.")
    # The named fallback works, and the resumed run replaces the damaged checkpoint when it reaches its step.
    trainer = resume(run, str(run / "checkpoint-1"))
    assert trainer.progress.step == 3
    assert [p.name for p in sorted(run.glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-3"]
    check_checkpoint(run / "checkpoint-2")


def test_without_a_complete_checkpoint_the_error_says_to_start_again(run):
    _truncate(run / "checkpoint-1" / MODEL)
    _truncate(run / "checkpoint-2" / EMA)
    with pytest.raises(CheckpointError, match="There is no other complete checkpoint in .*: start a new run"):
        resume(run)


def test_resume_with_other_settings_points_to_the_checkpoint_settings(run):
    with pytest.raises(CheckpointError) as error:
        EDMTrainer(make_args(run, "--max_train_steps", "3", "--resume_from_checkpoint", "latest",
                             "--model_channels", "16")).train()
    message = str(error.value)
    assert f"cannot resume from {run / 'checkpoint-2'} with other settings: --model_channels 16 (the checkpoint's:" \
        " 8)" in message and "\n" not in message
    assert f"Resume with the checkpoint's settings (in {run / 'checkpoint-2' / CONFIG})" in message
    assert json.loads((run / "checkpoint-2" / CONFIG).read_text())["model_channels"] == 8


def test_log_does_not_repeat_steps_after_a_resume(run):
    """A crash after step 2 was logged but before its checkpoint: the resumed run logs step 2 once."""
    shutil.rmtree(run / "checkpoint-2")
    with open(run / "logs" / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo')  # a line cut short by the crash
    resume(run, steps=3)
    steps = [json.loads(line)["step"] for line in (run / "logs" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_pruning_keeps_checkpoints_after_the_current_step(tmp_path):
    for step in range(1, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    prune_checkpoints(tmp_path, keep=2, up_to_step=3)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-3", "checkpoint-4", "checkpoint-5"]


# --- write failures ----------------------------------------------------------------------------------------------

def fail_fsync_of(fragment: str, code: int):
    """An os.fsync that fails with `code` for the files whose path contains `fragment` (a disk that fills up)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    return fsync


def test_disk_full_during_a_checkpoint_removes_the_partial_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(os, "fsync", fail_fsync_of(f"checkpoint-2.tmp{os.sep}{OPTIMIZER}", errno.ENOSPC))
    with pytest.raises(CheckpointError) as error:
        EDMTrainer(make_args(out, "--max_train_steps", "3", "--checkpointing_steps", "1")).train()
    assert str(error.value) == (
        f"could not write the checkpoint {out / 'checkpoint-2'}: {out / 'checkpoint-2.tmp' / OPTIMIZER}: no space left "
        f"on device. The partial checkpoint-2.tmp folder was removed; free some space or pass an --output_dir on a "
        f"disk with room; the last complete checkpoint is {out / 'checkpoint-1'} (resume with "
        f"--resume_from_checkpoint {out / 'checkpoint-1'}).")
    assert not list(out.glob("*.tmp")) and [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]
    check_checkpoint(out / "checkpoint-1")


@pytest.mark.parametrize("error, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/logs/log.jsonl"),
     ("train_edm.py: error: /data/run/logs/log.jsonl: no space left on device; free some space or pass an "
      "--output_dir on a disk with room, then continue with --resume_from_checkpoint latest.")),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run/samples.png"),
     ("train_edm.py: error: /data/run/samples.png: permission denied; check its permissions, or pass an "
      "--output_dir you can write to.")),
])
def test_write_errors_anywhere_end_with_one_line(tmp_path, monkeypatch, capsys, error, expected):
    monkeypatch.setattr(EDMTrainer, "train", mock.Mock(side_effect=error))
    with pytest.raises(SystemExit) as exit_info:
        train(make_args(tmp_path / "run"))
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines() == [expected]


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), RuntimeError("a bug")])
def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch, error):
    monkeypatch.setattr(EDMTrainer, "train", mock.Mock(side_effect=error))
    with pytest.raises(type(error)):
        train(make_args(tmp_path / "run"))


# --- divergence --------------------------------------------------------------------------------------------------

def test_non_finite_loss_stops_the_run_naming_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    args = make_args(out, "--learning_rate", "1e30", "--max_train_steps", "20", "--checkpointing_steps", "1",
                     "--checkpoints_total_limit", "20")
    with pytest.raises(SystemExit) as exit_info:
        train(args)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("train_edm.py: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert "the loss has not been finite since step 3 (nan at step 4): training diverged and stops without saving. " \
           f"The last good checkpoint is {out / 'checkpoint-1'}: resume from it with --resume_from_checkpoint " \
           f"{out / 'checkpoint-1'} and a lower --learning_rate (now 1e+30)." in lines[0]
    # No checkpoint once the loss is non-finite, and nothing after the stop.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    logged = [json.loads(line)["step"] for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    assert logged == [2, 4]


# --- the Hub token -----------------------------------------------------------------------------------------------

def push(out: Path, *flags: str) -> mock.Mock:
    """A two-step run with --push_to_hub, the Hub patched out; returns the patched create_repo."""
    with mock.patch("diffusers_edm.training.hub.create_repo", return_value=mock.Mock(repo_id="me/edm")) as create, \
            mock.patch("diffusers_edm.training.hub.upload_folder"):
        EDMTrainer(make_args(out, "--max_train_steps", "1", "--checkpointing_steps", "0", "--push_to_hub",
                             *flags)).train()
    return create


def test_token_on_the_command_line_warns_once(tmp_path, caplog):
    token = "hf_COMMANDlineTOKEN"
    with caplog.at_level(logging.WARNING):
        create = push(tmp_path / "run", "--hub_token", token)
    assert create.call_args.kwargs["token"] == token
    assert [r.getMessage() for r in caplog.records].count(COMMAND_LINE_TOKEN_WARNING) == 1
    assert token not in caplog.text


def test_token_file_is_read_stripped_and_never_written(tmp_path, caplog):
    token, out = "hf_FILEtoken123", tmp_path / "run"
    token_file = tmp_path / "token"
    token_file.write_text(f"  {token}\n")
    with caplog.at_level(logging.INFO):
        create = push(out, "--hub_token_file", str(token_file))
    assert create.call_args.kwargs["token"] == token
    assert COMMAND_LINE_TOKEN_WARNING not in caplog.text and token not in caplog.text
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_without_token_flags_huggingface_hub_resolves_the_token(tmp_path):
    """token=None: huggingface_hub reads HF_TOKEN or the cached login."""
    assert push(tmp_path / "run").call_args.kwargs["token"] is None


def test_bad_token_file_and_both_token_flags_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(TrainingError, match=f"--hub_token_file {empty} is empty"):
        push(tmp_path / "run", "--hub_token_file", str(empty))
    with pytest.raises(TrainingError, match="--hub_token_file .*missing: cannot read it"):
        push(tmp_path / "run", "--hub_token_file", str(tmp_path / "missing"))
    with pytest.raises(SystemExit):
        parse_args(["--hub_token", "hf_x", "--hub_token_file", str(empty)])
    assert "not allowed with argument" in capsys.readouterr().err


# --- one-line errors under accelerate launch ---------------------------------------------------------------------

DISK_FULL = f"""
import errno, os
real_fsync = os.fsync
def fsync(fd):
    if "checkpoint-2.tmp{os.sep}{OPTIMIZER}" in os.readlink(f"/proc/self/fd/{{fd}}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_fsync(fd)
os.fsync = fsync
"""

READ_ONLY = """
import builtins, errno, os, sys
real_open = builtins.open
out = sys.argv[sys.argv.index("--output_dir") + 1]
def read_only_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and str(file).startswith(out):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
    return real_open(file, mode, *args, **kwargs)
builtins.open = read_only_open
"""


def launch(args: list[str], tmp_path: Path, emulation: str | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --quiet train_edm.py ARGS` (quiet: the launcher does not add its own traceback, which shows
    the whole command line), optionally after `emulation` code that patches the process."""
    script = REPO_ROOT / "train_edm.py"
    if emulation is not None:
        wrapper = tmp_path / "emulated_train_edm.py"
        wrapper.write_text(f"{emulation}\nimport runpy, sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
                           f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
        script = wrapper
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT, check=False)


@pytest.mark.parametrize("case", ["resolution", "missing_checkpoint", "output_dir_is_a_file", "fp16_on_cpu",
                                  "disk_full", "read_only"])
def test_mistakes_end_with_one_line_under_accelerate_launch(tmp_path, case):
    out = tmp_path / "run"
    flags = ["--output_dir", str(out), "--sample_every", "0", *TINY]
    emulation = None
    if case == "resolution":
        flags += ["--resolution", "7"]
        expected = ("--resolution 7 does not fit --channel_mult 1,2: its 2 levels halve the image 1 time(s), so the "
                    "resolution must be divisible by 2^1 = 2; pass e.g. --resolution 6 or 8, or fewer --channel_mult "
                    "levels.")
    elif case == "missing_checkpoint":
        flags += ["--resume_from_checkpoint", str(out / "checkpoint-100")]
        expected = (f"--resume_from_checkpoint {out / 'checkpoint-100'}: no such checkpoint folder; pass 'latest' or "
                    f"a checkpoint-<step> folder ({out} has none yet).")
    elif case == "output_dir_is_a_file":
        out.write_text("not a folder")
        expected = f"--output_dir {out}: {out} is a file, not a folder"
    elif case == "fp16_on_cpu":
        flags += ["--mixed_precision", "fp16"]
        expected = "--mixed_precision fp16 needs a GPU: on a CPU accelerate has neither fp16 autocast nor a gradient"
    elif case == "disk_full":
        flags += ["--max_train_steps", "2", "--checkpointing_steps", "1"]
        emulation = DISK_FULL
        expected = (f"could not write the checkpoint {out / 'checkpoint-2'}: {out / 'checkpoint-2.tmp' / OPTIMIZER}: "
                    f"no space left on device. The partial checkpoint-2.tmp folder was removed;")
    else:
        out.mkdir()
        emulation = READ_ONLY
        expected = (f"{out / 'training_config.json'}: read-only file system; check its permissions, or pass an "
                    f"--output_dir you can write to.")
    result = launch(flags, tmp_path, emulation)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("train_edm.py: error: ")]
    assert len(lines) == 1, output[-3000:]
    assert expected in lines[0]
    if case == "disk_full":
        assert not list(out.glob("*.tmp")) and [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-1"]
