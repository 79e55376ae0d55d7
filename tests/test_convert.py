# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""Tests of `diffusers_edm.convert_edm_checkpoint`: official EDM snapshot pickle → saved `EDMPipeline` folder.

The snapshots are synthetic pickles in the official format, written by `tests/edm_pickle_writer.py` from the format
description in the spec report (§0, §3.5). References:

* a network built directly from the native backbone with the same weights and EDM's preconditioning written out here
  from Table 1 of the paper (c_skip = σd²/(σ²+σd²), c_out = σ σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ¼ ln σ);
* the official networks' outputs: `tests/data/convert_conformance_07.{json,safetensors}` hold `call0` inputs and
  `D_fp32` sliced from `/work/shared/conformance/07_net_<name>.safetensors` and the constructor kwargs / tolerances of
  `07_net_<name>.json`; the official random weights `07_net_<name>.weights.safetensors` are read from
  `../shared/conformance` (skipped when absent, an error on CI);
* the recommended sampler settings of the spec report §1.4 (README / example.py, and recalled Table 5 values).
"""

from __future__ import annotations

import builtins
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline
from diffusers_edm.conversion.edm_snapshot import read_edm_snapshot
from diffusers_edm.conversion.preset_selection import select_sampler_preset
from diffusers_edm.conversion.safe_unpickler import load_snapshot_pickle
from diffusers_edm.conversion.verify import verify_conversion
from diffusers_edm.convert_edm_checkpoint import UnsafeCheckpointError, convert_edm_checkpoint, main
from diffusers_edm.generate import main as generate_main
from diffusers_edm.models.dhariwal_unet import DhariwalUNet2DModel
from diffusers_edm.models.song_unet import SongUNet2DModel

from .edm_pickle_writer import random_official_state_dict, snapshot_object, write_edm_snapshot, write_pickle
from .helpers import shared_conformance_file

DATA_DIR = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = json.loads((DATA_DIR / "convert_conformance_07.json").read_text())["nets"]

# A DDPM++-like conditional SongUNet with augmentation conditioning (augment_dim 9), and an unconditional ADM.
SONG_KWARGS = dict(img_resolution=16, img_channels=3, label_dim=10, model_type="SongUNet", embedding_type="positional",
                   encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                   model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], dropout=0.13,
                   augment_dim=9)
ADM_KWARGS = dict(img_resolution=16, img_channels=3, label_dim=0, model_type="DhariwalUNet", model_channels=32,
                  channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.1)
NATIVE = {"SongUNet": SongUNet2DModel, "DhariwalUNet": DhariwalUNet2DModel}
TOP_LEVEL = ("img_resolution", "img_channels", "label_dim", "model_type", "augment_dim")


def edm_reference_denoiser(network: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, class_labels, augment_labels,
                           sigma_data: float = 0.5) -> torch.Tensor:
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise) with EDM's coefficients (Table 1), written out independently."""
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1 / (s**2 + sigma_data**2).sqrt()
    c_noise = s.log() / 4
    with torch.no_grad():
        raw = network(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels)
    return c_skip * x + c_out * raw


def random_inputs(kwargs: dict, batch_size: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, kwargs["img_channels"], kwargs["img_resolution"], kwargs["img_resolution"])
    x = torch.randn(shape, generator=generator) * 2
    sigma = torch.tensor([0.01, 0.7, 40.0])[:batch_size]
    labels = None
    if kwargs["label_dim"]:
        classes = torch.randint(kwargs["label_dim"], (batch_size,), generator=generator)
        labels = torch.nn.functional.one_hot(classes, kwargs["label_dim"]).float()
    augment = torch.randn(batch_size, kwargs["augment_dim"], generator=generator) if kwargs.get("augment_dim") else None
    return x, sigma, labels, augment


def native_network(kwargs: dict, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The native backbone built directly from the official constructor kwargs and `model.*` tensors."""
    network_kwargs = {k: v for k, v in kwargs.items() if k not in ("img_channels", "model_type")}
    network = NATIVE[kwargs["model_type"]](in_channels=kwargs["img_channels"], out_channels=kwargs["img_channels"],
                                           **network_kwargs)
    network.load_state_dict({k.removeprefix("model."): v for k, v in state_dict.items()}, strict=True)
    return network.eval()


@pytest.fixture(scope="module")
def song_snapshot(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state_dict = random_official_state_dict("EDMPrecond", SONG_KWARGS, seed=0)
    path = tmp_path_factory.mktemp("song") / "network-snapshot-000100.pkl"
    return write_edm_snapshot(path, "EDMPrecond", SONG_KWARGS, state_dict, augment_p=0.12), state_dict


@pytest.fixture(scope="module")
def adm_snapshot(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state_dict = random_official_state_dict("EDMPrecond", ADM_KWARGS, seed=1)
    path = tmp_path_factory.mktemp("adm") / "network-snapshot-000200.pkl"
    return write_edm_snapshot(path, "EDMPrecond", ADM_KWARGS, state_dict), state_dict


# --- conversion of synthetic snapshots -----------------------------------------------------------------------------


@pytest.mark.parametrize("which, kwargs", [("song_snapshot", SONG_KWARGS), ("adm_snapshot", ADM_KWARGS)])
def test_converted_pipeline_loads_and_equals_native_network_with_edm_preconditioning(which, kwargs, request, tmp_path):
    path, state_dict = request.getfixturevalue(which)
    convert_edm_checkpoint(path, tmp_path / "pipe")

    pipe = EDMPipeline.from_pretrained(tmp_path / "pipe")
    config = pipe.unet.config
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert config.backbone_type == {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}[kwargs["model_type"]]
    assert config.backbone_config == {k: v for k, v in kwargs.items() if k not in TOP_LEVEL}
    assert (config.sample_size, config.in_channels, config.out_channels) == (16, 3, 3)
    assert (config.num_class_labels, config.augment_dim) == (kwargs["label_dim"], kwargs.get("augment_dim", 0))
    assert (config.preconditioning, config.sigma_data) == ("edm", 0.5)
    saved = load_file(tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(saved) == {"backbone." + k.removeprefix("model.") for k in state_dict}
    assert all(torch.equal(saved["backbone." + k.removeprefix("model.")], v) for k, v in state_dict.items())

    x, sigma, labels, augment = random_inputs(kwargs)
    with torch.no_grad():
        converted = pipe.unet(x, sigma, class_labels=labels, augment_labels=augment).sample
    reference = edm_reference_denoiser(native_network(kwargs, state_dict), x, sigma, labels, augment)
    assert (converted - reference).abs().max().item() <= 1e-6


def test_snapshot_reader_recovers_constructor_arguments_and_state_dict(song_snapshot):
    path, state_dict = song_snapshot
    snapshot = read_edm_snapshot(path)
    assert (snapshot.precond_class, snapshot.model_class) == ("EDMPrecond", "SongUNet")
    assert (snapshot.img_resolution, snapshot.img_channels, snapshot.label_dim, snapshot.use_fp16) == (16, 3, 10, False)
    assert snapshot.precond_parameters == {"sigma_min": 0.0, "sigma_max": math.inf, "sigma_data": 0.5}
    expected_model_kwargs = {k: v for k, v in SONG_KWARGS.items() if k not in ("img_channels", "model_type")}
    assert snapshot.model_kwargs == dict(expected_model_kwargs, in_channels=3, out_channels=3)
    assert list(snapshot.state_dict) == list(state_dict)  # state_dict() order: parameters, buffers, submodules
    assert all(torch.equal(snapshot.state_dict[k], v) for k, v in state_dict.items())
    assert snapshot.dataset_kwargs["resolution"] == 16 and snapshot.dataset_kwargs["use_labels"] is True


def test_recorded_edm_sigma_range_narrows_the_scheduler_range(tmp_path):
    kwargs = dict(ADM_KWARGS, model_channels=16, attn_resolutions=[])
    state_dict = random_official_state_dict("EDMPrecond", kwargs, seed=2)
    path = write_edm_snapshot(tmp_path / "net.pkl", "EDMPrecond", kwargs, state_dict,
                              precond_parameters={"sigma_min": 0.01, "sigma_max": 50.0, "sigma_data": 0.6})
    result = convert_edm_checkpoint(path, tmp_path / "pipe")
    scheduler_config = result.pipeline.scheduler.config
    assert (scheduler_config.sigma_min, scheduler_config.sigma_max) == (0.01, 50.0)  # max(0.002, ·), min(80, ·)
    assert result.pipeline.unet.config.sigma_data == 0.6


# --- sampler settings and model card ---------------------------------------------------------------------------------


def test_sampler_settings_and_model_card_for_a_cifar10_file_name(song_snapshot, tmp_path):
    path, _ = song_snapshot
    named = tmp_path / "edm-cifar10-32x32-cond-vp.pkl"
    named.write_bytes(path.read_bytes())
    convert_edm_checkpoint(named, tmp_path / "pipe")

    settings = json.loads((tmp_path / "pipe" / "sampler_settings.json").read_text())
    assert settings["name"] == "cifar10" and settings["recalled"] is False
    assert settings["num_inference_steps"] == 18 and settings["num_model_evaluations"] == 35  # spec §1.4
    # Spec §1.4: deterministic, σ range 0.002–80, ρ = 7 (Heun, the README's solver); the json repeats the scheduler's.
    churn_and_range = ("s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_min", "sigma_max", "rho", "solver")
    expected = (0.0, 0.0, None, 1.0, 0.002, 80.0, 7.0, "heun")
    assert tuple(settings[key] for key in churn_and_range) == expected
    scheduler_config = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    assert tuple(scheduler_config[key] for key in churn_and_range) == expected

    card = ModelCard.load(tmp_path / "pipe" / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.library_name == "diffusers"
    assert {"edm", "diffusers_edm"} <= set(card.data.tags)
    assert "edm-cifar10-32x32-cond-vp.pkl" in card.text and "CC BY-NC-SA 4.0" in card.text
    assert "18 steps" in card.text and "num_inference_steps=steps" in card.text
    # The paper's FID for this model (README: CIFAR-10 conditional 1.79 at 35 NFE) as Hub model-index metadata, with
    # the command that reproduces it.
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("fid", 1.79, "cifar10")
    assert "35 NFE" in result.metric_name and result.source_url == "https://arxiv.org/abs/2206.00364"
    assert "diffusers_edm.fid calc" in card.text and "--repeats 3" in card.text and "--preset cifar10" in card.text
    assert "fid-refs/cifar10-32x32.npz" in card.text


def test_only_the_released_models_get_a_reported_result(song_snapshot, tmp_path):
    path, _ = song_snapshot
    convert_edm_checkpoint(path, tmp_path / "pipe")
    card = ModelCard.load(tmp_path / "pipe" / "README.md")
    assert not card.data.eval_results and "Reported results" not in card.text


def test_baseline_vp_snapshot_gets_recalled_stochastic_settings(tmp_path):
    kwargs = dict(SONG_KWARGS, label_dim=0, augment_dim=0, model_channels=8, channel_mult=[1, 2])
    state_dict = random_official_state_dict("VPPrecond", kwargs, seed=3)
    path = write_edm_snapshot(tmp_path / "baseline-cifar10-32x32-uncond-vp.pkl", "VPPrecond", kwargs, state_dict)
    result = convert_edm_checkpoint(path, tmp_path / "pipe")

    config = result.pipeline.unet.config
    assert (config.preconditioning, config.preconditioning_config) == (
        "vp", {"beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5})
    scheduler_config = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    assert [scheduler_config[key] for key in ("s_churn", "s_tmin", "s_tmax", "s_noise")] == [30, 0.01, 1, 1.007]
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "recalled from the paper (Table 5)" in card and "VPPrecond" in card


@pytest.mark.parametrize(
    "file_name, precond_class, overrides, expected",
    [
        # (preset, steps, S_churn, S_tmin, S_tmax, S_noise, recalled) from the spec report §1.4.
        ("edm-cifar10-32x32-uncond-vp.pkl", "EDMPrecond", {}, ("cifar10", 18, 0, 0, None, 1, False)),
        ("edm-ffhq-64x64-uncond-vp.pkl", "EDMPrecond", {}, ("ffhq", 40, 0, 0, None, 1, False)),
        ("edm-afhqv2-64x64-uncond-ve.pkl", "EDMPrecond", {}, ("afhqv2", 40, 0, 0, None, 1, False)),
        ("edm-imagenet-64x64-cond-adm.pkl", "EDMPrecond", {}, ("imagenet64", 256, 40, 0.05, 50, 1.003, False)),
        ("snapshot.pkl", "EDMPrecond", dict(img_resolution=64, label_dim=1000),
         ("imagenet64", 256, 40, 0.05, 50, 1.003, False)),
        ("snapshot.pkl", "EDMPrecond", dict(img_resolution=32, label_dim=10), ("cifar10", 18, 0, 0, None, 1, False)),
        ("snapshot.pkl", "EDMPrecond", dict(img_resolution=64, label_dim=0),
         ("uncond-64x64", 40, 0, 0, None, 1, False)),
        ("baseline-cifar10-32x32-uncond-vp.pkl", "VPPrecond", {},
         ("baseline-cifar10-vp", 256, 30, 0.01, 1, 1.007, True)),
        ("baseline-cifar10-32x32-uncond-ve.pkl", "VEPrecond", {},
         ("baseline-cifar10-ve", 256, 80, 0.05, 1, 1.007, True)),
        ("baseline-imagenet-64x64-cond-adm.pkl", "iDDPMPrecond", {},
         ("baseline-imagenet64", 256, 80, 0.05, 50, 1.003, True)),
    ],
)
def test_sampler_preset_inferred_from_file_name_or_shape(file_name, precond_class, overrides, expected):
    snapshot = _fake_snapshot(precond_class, **overrides)
    preset = select_sampler_preset(snapshot, file_name)
    assert (preset.name, preset.num_inference_steps, preset.s_churn, preset.s_tmin, preset.s_tmax, preset.s_noise,
            preset.recalled) == expected


def test_sampler_preset_override_and_unknown_name():
    snapshot = _fake_snapshot("EDMPrecond")
    overridden = select_sampler_preset(snapshot, "edm-cifar10-32x32-cond-vp.pkl", preset="ffhq")
    assert overridden.num_inference_steps == 40
    assert select_sampler_preset(snapshot, "my-run.pkl").name == "default"  # 16x16: no paper setting
    with pytest.raises(ValueError, match="Unknown sampler preset"):
        select_sampler_preset(snapshot, "x.pkl", preset="cifar100")


def _fake_snapshot(precond_class: str, **overrides):
    from diffusers_edm.conversion.edm_snapshot import EDMSnapshot

    fields = dict(precond_class=precond_class, img_resolution=16, img_channels=3, label_dim=0, use_fp16=False,
                  precond_parameters={}, precond_kwargs={}, model_class="SongUNet",
                  model_kwargs=dict(img_resolution=16, in_channels=3, out_channels=3, label_dim=0), state_dict={},
                  dataset_kwargs=None)
    fields.update(overrides)
    return EDMSnapshot(**fields)


# --- safety: nothing from the pickle is executed -----------------------------------------------------------------


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _EvalPayload(_SystemPayload):
    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


class _PopenPayload(_SystemPayload):
    def __reduce__(self):
        return subprocess.Popen, (["touch", str(self.marker)],)


PAYLOADS = {"os.system": (_SystemPayload, os.system.__module__ + ".system"),
            "builtins.eval": (_EvalPayload, "builtins.eval"),
            "subprocess.Popen": (_PopenPayload, "subprocess.Popen")}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("where", ["top_level", "inside_network_state"])
def test_malicious_global_is_refused_and_never_executed(payload, where, song_snapshot, tmp_path):
    payload_class, global_name = PAYLOADS[payload]
    _, state_dict = song_snapshot
    snapshot = snapshot_object("EDMPrecond", SONG_KWARGS, state_dict)
    marker = tmp_path / "pwned"
    if where == "top_level":
        snapshot = {"payload": payload_class(marker), **snapshot}
    else:  # deep inside the EMA network: an attribute of the first encoder block
        encoder = snapshot["ema"].meta["state"]["_modules"]["model"].meta["state"]["_modules"]["enc"]
        next(iter(encoder._modules.values())).meta["state"]["in_channels"] = payload_class(marker)
    path = write_pickle(tmp_path / "evil.pkl", snapshot)

    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")) as error:
        convert_edm_checkpoint(path, tmp_path / "pipe")
    assert "not an official EDM snapshot or it is unsafe" in str(error.value)
    assert not marker.exists()
    assert not (tmp_path / "pipe").exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_control_payloads_do_execute_under_plain_pickle(payload, tmp_path):
    """The payloads above are live: a plain pickle.load runs them (so the absent marker above is meaningful)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"payload": PAYLOADS[payload][0](marker)}))
    assert marker.exists()


def test_embedded_module_source_is_never_executed(song_snapshot, tmp_path):
    _, state_dict = song_snapshot
    marker = tmp_path / "module_src_ran"
    module_src = f"open({str(marker)!r}, 'w').close()\n"
    path = write_edm_snapshot(tmp_path / "net.pkl", "EDMPrecond", SONG_KWARGS, state_dict, module_src=module_src)
    convert_edm_checkpoint(path, tmp_path / "pipe")
    assert not marker.exists()


def test_numpy_scalars_of_official_snapshots_become_python_numbers(song_snapshot):
    """Official SongUNet snapshots hold numpy float64 scalars (skip_scale = np.sqrt(0.5)); they are read as floats."""
    path, _ = song_snapshot
    assert b"multiarray" in path.read_bytes() and b"scalar" in path.read_bytes()
    snapshot = load_snapshot_pickle(path)
    encoder = snapshot["ema"].state["_modules"]["model"].state["_modules"]["enc"]
    skip_scales = [block.state["skip_scale"] for block in encoder.state["_modules"].values()
                   if "skip_scale" in block.state]
    assert skip_scales and all(type(value) is float and value == math.sqrt(0.5) for value in skip_scales)


def _numpy_scalar_pickle(value: np.generic, module: str) -> bytes:
    """`pickle.dumps(value)` (protocol 3: text GLOBAL opcodes) with the scalar constructor under `module`."""
    data = pickle.dumps(value, protocol=3)
    for written in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        data = data.replace(written, module.encode() + b"\n")
    return data


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])  # numpy 1.x, 2.x writers
def test_numpy_scalar_records_accept_only_numeric_dtypes(module, tmp_path):
    path = tmp_path / "scalar.pkl"
    for value in (np.float32(1.5), np.float64(-0.25), np.int64(7), np.bool_(True)):
        path.write_bytes(_numpy_scalar_pickle(value, module))
        loaded = load_snapshot_pickle(path)
        assert loaded == value.item() and type(loaded) is type(value.item())
    object_dtype = _numpy_scalar_pickle(np.float64(0.0), module).replace(b"X\x02\x00\x00\x00f8", b"X\x02\x00\x00\x00O8")
    path.write_bytes(object_dtype)
    with pytest.raises(UnsafeCheckpointError, match="numeric scalars"):
        load_snapshot_pickle(path)


def test_unknown_torch_utils_global_is_refused(tmp_path):
    path = tmp_path / "unknown.pkl"
    path.write_bytes(b"\x80\x04ctorch_utils.misc\nconstant\n)R.")  # GLOBAL torch_utils.misc.constant, call it
    with pytest.raises(UnsafeCheckpointError, match=r"torch_utils\.misc\.constant"):
        read_edm_snapshot(path)


def test_malicious_tensor_storage_bytes_are_refused(tmp_path):
    """Storage bytes are read with torch.load(weights_only=True), which refuses the payload inside them."""
    marker = tmp_path / "storage_ran"

    class EvilStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(_SystemPayload(marker), protocol=2),)

    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps({"ema": EvilStorage()}))
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True"):
        read_edm_snapshot(path)
    assert not marker.exists()


# --- clear errors for other bad input -------------------------------------------------------------------------------


def test_non_pickle_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.pkl"
    text.write_text("this is not a pickle")
    with pytest.raises(ValueError, match="is not a pickle file"):
        convert_edm_checkpoint(text, tmp_path / "out")
    archive = tmp_path / "model.pt"
    with zipfile.ZipFile(archive, "w") as f:
        f.writestr("data.pkl", b"")
    with pytest.raises(ValueError, match="zip archive"):
        convert_edm_checkpoint(archive, tmp_path / "out")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"ema": list(range(100))})[:40])
    with pytest.raises(ValueError, match="could not be read as an EDM snapshot pickle"):
        convert_edm_checkpoint(truncated, tmp_path / "out")


def test_pickle_without_ema_is_refused(tmp_path):
    path = tmp_path / "no_ema.pkl"
    path.write_bytes(pickle.dumps({"loss_fn": None, "dataset_kwargs": {}}))
    with pytest.raises(ValueError, match="expected a dict with an 'ema' network"):
        convert_edm_checkpoint(path, tmp_path / "out")


def test_unknown_precond_class_and_model_type_are_refused(adm_snapshot, tmp_path):
    _, state_dict = adm_snapshot
    snapshot = snapshot_object("EDMPrecond", ADM_KWARGS, state_dict)
    snapshot["ema"].meta["class_name"] = "RectifiedFlowPrecond"
    with pytest.raises(ValueError, match="'ema' is a RectifiedFlowPrecond"):
        read_edm_snapshot(write_pickle(tmp_path / "precond.pkl", snapshot))

    snapshot = snapshot_object("EDMPrecond", ADM_KWARGS, state_dict)
    snapshot["ema"].meta["state"]["_modules"]["model"].meta["class_name"] = "UNetXL"
    with pytest.raises(ValueError, match="unknown network 'UNetXL'"):
        read_edm_snapshot(write_pickle(tmp_path / "model.pkl", snapshot))


def test_missing_tensor_is_reported_with_its_key(adm_snapshot, tmp_path):
    _, state_dict = adm_snapshot
    snapshot = snapshot_object("EDMPrecond", ADM_KWARGS, state_dict)
    network = snapshot["ema"].meta["state"]["_modules"]["model"]
    del network.meta["state"]["_modules"]["map_layer0"].meta["state"]["_parameters"]["weight"]
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\).*'model\.map_layer0\.weight'"):
        convert_edm_checkpoint(write_pickle(tmp_path / "missing.pkl", snapshot), tmp_path / "out")


# --- verification and command line --------------------------------------------------------------------------------


def test_command_line_converts_and_verifies(song_snapshot, tmp_path):
    path, _ = song_snapshot
    process = subprocess.run(
        [sys.executable, "-m", "diffusers_edm.convert_edm_checkpoint", str(path), str(tmp_path / "pipe"), "--verify",
         "--preset", "cifar10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert process.returncode == 0, process.stderr
    assert "verification passed" in process.stdout
    assert "matches D computed from the raw state_dict" in process.stdout
    assert "official code not importable" in process.stdout
    assert json.loads((tmp_path / "pipe" / "sampler_settings.json").read_text())["name"] == "cifar10"


def test_generate_takes_the_step_count_the_converter_stored(song_snapshot, tmp_path):
    """Writer and reader of sampler_settings.json agree: the generation CLI samples a converted folder with the
    converted preset's steps (FFHQ: 40, spec §1.4) when neither --steps nor --preset is given."""
    path, _ = song_snapshot
    convert_edm_checkpoint(path, tmp_path / "pipe", preset="ffhq")
    arguments = ["--model", str(tmp_path / "pipe"), "--outdir", str(tmp_path / "images"), "--seeds", "0",
                 "--device", "cpu"]
    summary = generate_main(arguments)
    assert (summary.num_inference_steps, summary.steps_source) == (40, "the model's sampler_settings.json")
    assert (tmp_path / "images" / "000000.png").is_file()
    assert generate_main([*arguments, "--steps", "2"]).num_inference_steps == 2


def test_command_line_refuses_unsafe_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _SystemPayload(marker)}))
    assert main([str(path), str(tmp_path / "pipe")]) == 2
    assert "Refusing to load the global" in capsys.readouterr().err
    assert not marker.exists()


FAKE_OFFICIAL_NETWORKS = '''
import torch
from diffusers_edm.models.song_unet import SongUNet2DModel

SIGMA_DATA_ERROR = {error}


class EDMPrecond(torch.nn.Module):  # test stand-in for the official class: Table 1 coefficients, own code
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0, sigma_max=float("inf"),
                 sigma_data=0.5, model_type="SongUNet", **model_kwargs):
        super().__init__()
        self.sigma_data = sigma_data + SIGMA_DATA_ERROR
        self.model = SongUNet2DModel(img_resolution=img_resolution, in_channels=img_channels,
                                     out_channels=img_channels, label_dim=label_dim, **model_kwargs)

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        s, sd = sigma.reshape(-1, 1, 1, 1), self.sigma_data
        c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), s.log() / 4
        F = self.model(c_in * x, c_noise.flatten(), class_labels=class_labels, augment_labels=augment_labels)
        return sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * F
'''


@pytest.fixture
def fake_official_package(tmp_path, monkeypatch):
    """Puts a stand-in `torch_utils` / `training.networks` on sys.path; returns a function writing networks.py."""
    root = tmp_path / "official"
    (root / "torch_utils").mkdir(parents=True)
    (root / "training").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "training" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    yield lambda error: (root / "training" / "networks.py").write_text(textwrap.dedent(
        FAKE_OFFICIAL_NETWORKS.format(error=error)))
    for name in ("torch_utils", "training", "training.networks"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("sigma_data_error, passes", [(0.0, True), (0.01, False)])
def test_verify_compares_with_importable_official_code(sigma_data_error, passes, song_snapshot, fake_official_package,
                                                       tmp_path):
    fake_official_package(sigma_data_error)
    path, _ = song_snapshot
    result = convert_edm_checkpoint(path, tmp_path / "pipe")
    report = verify_conversion(result.snapshot, result.pipeline, tmp_path / "pipe")
    official_line = next(line for line in report.lines if "official EDMPrecond" in line)
    assert official_line.startswith("[ok]" if passes else "[FAIL]"), report.summary()
    assert report.passed is passes


# --- official network outputs (conformance vectors) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_tensors() -> dict[str, torch.Tensor]:
    return load_file(DATA_DIR / "convert_conformance_07.safetensors")


@pytest.mark.parametrize("name", sorted(CONFORMANCE))
def test_converted_official_weights_reproduce_official_denoiser(name, conformance_tensors, tmp_path):
    net = CONFORMANCE[name]
    weights = load_file(shared_conformance_file(net["weights_file"]))
    path = write_edm_snapshot(tmp_path / f"{name}.pkl", net["precond_class"], net["constructor_kwargs"], weights)
    pipe = convert_edm_checkpoint(path, tmp_path / "pipe").pipeline

    inputs = {key.split(".", 2)[2]: value for key, value in conformance_tensors.items() if key.startswith(name + ".")}
    with torch.no_grad():
        denoised = pipe.unet(inputs["x"], inputs["sigma"], class_labels=inputs.get("class_labels"),
                             augment_labels=inputs.get("augment_labels")).sample
    difference = (denoised - inputs["D_fp32"]).abs().max().item()
    assert difference <= net["fp32_D_atol"], f"{name}: max |D - D_official| = {difference}"


def test_iddpm_table_of_the_snapshot_is_kept(tmp_path):
    """The official code computes iDDPM's `u` in float32 on the machine that built the network, so a snapshot from
    another processor differs from the recomputed table in the last bits: it converts, and samples at its own levels."""
    net = CONFORMANCE["iddpm_adm_cond"]
    weights = load_file(shared_conformance_file(net["weights_file"]))
    original = weights["u"].clone()
    levels = torch.nextafter(original, torch.full_like(original, math.inf))  # one ulp up, as another CPU's might be
    levels[-1] = 0
    weights["u"] = levels
    path = write_edm_snapshot(tmp_path / "iddpm.pkl", net["precond_class"], net["constructor_kwargs"], weights)
    convert_edm_checkpoint(path, tmp_path / "pipe")
    pipe = EDMPipeline.from_pretrained(tmp_path / "pipe")
    assert torch.equal(pipe.unet.precond.u, levels)
    pipe.scheduler.set_timesteps(18, net_sigma_min=pipe.unet.sigma_min, net_sigma_max=pipe.unet.sigma_max,
                                 round_sigma=pipe.unet.round_sigma)
    sampled = pipe.scheduler.sigmas[:-1].to(torch.float32)
    assert all(bool((levels == sigma).any()) for sigma in sampled)  # every step σ is one of the snapshot's levels
    assert not any(bool((original[:-1] == sigma).any()) for sigma in sampled)  # none of the recomputed table's


def test_iddpm_table_that_is_no_table_is_refused(tmp_path):
    net = CONFORMANCE["iddpm_adm_cond"]
    weights = load_file(shared_conformance_file(net["weights_file"]))
    weights["u"] = weights["u"].flip(0)
    path = write_edm_snapshot(tmp_path / "iddpm.pkl", net["precond_class"], net["constructor_kwargs"], weights)
    with pytest.raises(ValueError, match="iDDPM table 'u'"):
        convert_edm_checkpoint(path, tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()