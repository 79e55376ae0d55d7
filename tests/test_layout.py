"""The package's layout: each package imports downward only, the command-line tools run from their console scripts and
their earlier `python -m` paths, and folders and checkpoints written before the layout changed still load."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.commands.train import parse_args
from diffusers_edm.errors import CheckpointError
from diffusers_edm.training.trainer import EDMTrainer

PACKAGE = Path(__file__).resolve().parents[1] / "diffusers_edm"
LEGACY = Path(__file__).parent / "data" / "legacy_layout"

LAYERS = [
    {"errors"},
    {"environment", "folders", "preconditioning", "sampler_presets"},
    {"models", "schedulers"},
    {"pipelines", "data"},
    {"evaluation", "conversion"},
    {"training"},
    {"tuning"},
    {"commands"},
    {"acceleration", "generate", "fid", "reconstruct_phema", "convert_edm_checkpoint", "tune_sampler", "__init__"},
]
"""The packages and top-level modules of `diffusers_edm`, lowest first: a module may import the modules of its own
package and of lower layers only."""

CONSOLE_SCRIPTS = ("edm-train", "edm-generate", "edm-fid", "edm-convert", "edm-phema", "edm-tune")


def _layer(part: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if part in names)


def _imported_parts(path: Path) -> set[str]:
    """The top-level parts of `diffusers_edm` that module `path` imports (relative or absolute, at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1]) + (node.module.split(".") if node.module else [])
                if len(base) == 1:  # `from . import x` / `from .. import x` at the top: the imported names
                    parts.update(alias.name for alias in node.names)
                else:
                    parts.add(base[1])
            elif node.module and node.module.startswith("diffusers_edm."):
                parts.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            parts.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("diffusers_edm."))
    return parts


def test_every_part_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" or (path / "__init__.py").is_file())}
    assert parts <= set().union(*LAYERS), parts - set().union(*LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_import_downward_only(path):
    relative = path.relative_to(PACKAGE)
    own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
    for part in _imported_parts(path) - {own}:
        assert _layer(part) < _layer(own), f"{relative} imports diffusers_edm.{part}, which is not below it"


def test_evaluation_and_training_do_not_depend_on_each_other_through_data():
    """The dataset readers live in `data/`, which both use; evaluation never imports training."""
    for path in (PACKAGE / "evaluation").rglob("*.py"):
        assert "training" not in _imported_parts(path), path


def test_console_scripts_are_declared_and_run():
    entries = {entry.name: entry for entry in importlib.metadata.entry_points(group="console_scripts")
               if entry.name.startswith("edm-")}
    assert set(entries) == set(CONSOLE_SCRIPTS), entries
    assert all(callable(entry.load()) for entry in entries.values())
    executable = shutil.which("edm-generate") or str(Path(sys.executable).parent / "edm-generate")
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]


def test_module_entry_points_keep_working():
    result = subprocess.run([sys.executable, "-m", "diffusers_edm.generate", "--help"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and "--guidance_scale" in result.stdout and "--scheduler" in result.stdout


def test_earlier_public_imports_still_resolve():
    from diffusers_edm.acceleration import accelerate_pipeline  # noqa: F401
    from diffusers_edm.convert_edm_checkpoint import convert_edm_checkpoint, unet_from_snapshot  # noqa: F401
    from diffusers_edm.fid import main as fid_main  # noqa: F401
    from diffusers_edm.generate import check_model_folder, parse_seeds  # noqa: F401
    from diffusers_edm.reconstruct_phema import RECORD_NAME, reconstruct  # noqa: F401


# --- folders and checkpoints of the previous layout (tests/data/legacy_layout, see its make_legacy_fixture.py.txt) --


@pytest.mark.parametrize("name", ["pipeline_song_unet", "pipeline_unet_2d"])
def test_legacy_pipeline_folders_load_and_sample_as_before(name):
    expected = load_file(LEGACY / "expected_latents.safetensors")[name]
    pipe = EDMPipeline.from_pretrained(LEGACY / name)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[0, 1, 2], guidance_scale=1.5) if name == "pipeline_song_unet" else {}
    latents = pipe(seeds=[0, 1, 2], num_inference_steps=4, output_type="latent", **kwargs).images
    torch.testing.assert_close(latents.float(), expected, rtol=0, atol=0)
    if name == "pipeline_song_unet":
        assert pipe.guide_unet is not None


def test_native_backbone_config_holds_only_its_keys(tmp_path):
    legacy = json.loads((LEGACY / "pipeline_song_unet" / "unet" / "config.json").read_text())
    assert "block_out_channels" in legacy and "down_block_types" in legacy  # written by the previous layout
    unet = EDMPreconditionedUNet2DModel.from_pretrained(LEGACY / "pipeline_song_unet" / "unet")
    unet.save_pretrained(tmp_path / "unet")
    saved = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert {key for key in saved if not key.startswith("_")} == {
        "sample_size", "in_channels", "out_channels", "num_class_labels", "augment_dim", "sigma_data",
        "backbone_type", "backbone_config", "preconditioning", "preconditioning_config", "cross_attention_dim"}
    reloaded = EDMPreconditionedUNet2DModel.from_pretrained(tmp_path / "unet")
    for key, value in unet.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value)
    unet_2d = json.loads((LEGACY / "pipeline_unet_2d" / "unet" / "config.json").read_text())
    EDMPreconditionedUNet2DModel.from_pretrained(LEGACY / "pipeline_unet_2d" / "unet").save_pretrained(tmp_path / "u2")
    assert json.loads((tmp_path / "u2" / "config.json").read_text())["block_out_channels"] == \
        unet_2d["block_out_channels"]


def _legacy_run_arguments(output_dir: Path, *extra: str) -> list[str]:
    """The settings of the legacy checkpoint's run (see make_legacy_fixture.py.txt)."""
    return ["--output_dir", str(output_dir), "--max_train_samples", "64", "--resolution", "8", "--model_channels", "4",
            "--channel_mult", "1,2", "--train_batch_size", "16", "--checkpointing_steps", "2", "--sample_every", "0",
            "--phema_stds", "0.05,0.10", "--phema_every", "1kimg", "--report_to", "none", "--duration_kimg", "1",
            "--augment_p", "0.12", "--resume_from_checkpoint", "latest", *extra]


def test_legacy_checkpoint_resumes(tmp_path):
    """Also: without --arch the run resumes with its checkpoint's DDPM++ (not the EDM2 default of a new run)."""
    shutil.copytree(LEGACY / "checkpoint-2", tmp_path / "checkpoint-2")
    trainer = EDMTrainer(parse_args(_legacy_run_arguments(tmp_path, "--max_train_steps", "3")))
    trainer.train()
    assert trainer.progress.step == 3 and trainer.progress.cur_nimg == 48
    assert (tmp_path / "checkpoint-3").is_dir()
    EDMPipeline.from_pretrained(tmp_path)


def test_resuming_with_another_architecture_names_the_settings(tmp_path):
    shutil.copytree(LEGACY / "checkpoint-2", tmp_path / "checkpoint-2")
    arguments = _legacy_run_arguments(tmp_path, "--max_train_steps", "3")
    arguments[arguments.index("--model_channels") + 1] = "8"
    with pytest.raises(CheckpointError) as error:
        EDMTrainer(parse_args(arguments))
    message = str(error.value)
    assert "--model_channels 8 (the checkpoint's: 4)" in message and "\n" not in message and len(message) < 400
    assert not (tmp_path / "training_config.json").exists()  # nothing written before the check
