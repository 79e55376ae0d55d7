"""Fine-tuning from a pretrained denoiser (EDM's --transfer): loading a saved pipeline, the new model's configuration
and the name-and-shape weight copy."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.model_config import native_model_config
from diffusers_edm.training.transfer import (
    PretrainedDenoiser,
    TransferReport,
    load_pretrained_denoiser,
    transfer_model_config,
    transfer_weights,
)

from .helpers import randomize_, tiny_unet_kwargs


def tiny_native(arch="ncsnpp", num_classes=0, augment_dim=0, seed=0, **kwargs):
    """A small paper backbone (8x8, one channel) with random weights (fresh EDM layers have zero output convs)."""
    torch.manual_seed(seed)
    config = native_model_config(arch, 16, [1, 2], 1, [4], 0.0, 8, 1, num_classes, augment_dim, **kwargs)
    return randomize_(EDMPreconditionedUNet2DModel(**config), seed, 0.2)


def snapshot(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


# --- transfer_weights ------------------------------------------------------------------------------------------------


def test_copies_exactly_the_tensors_with_matching_names_and_shapes():
    source = tiny_native(num_classes=3, augment_dim=0, seed=1)  # conditional, no augment labels
    target = tiny_native(num_classes=5, augment_dim=9, seed=2)  # other classes, with augment labels
    source_state, fresh = snapshot(source), snapshot(target)
    report = transfer_weights(source_state, target)

    after = target.state_dict()
    matching = {name for name in fresh if name in source_state and source_state[name].shape == fresh[name].shape}
    assert set(report.copied) == matching and len(report.copied) == len(matching)
    for name in matching:
        assert torch.equal(after[name], source_state[name]), name
    for name in set(fresh) - matching:
        assert torch.equal(after[name], fresh[name]), name
    assert report.shape_mismatched == {"backbone.map_label.weight": ((32, 3), (32, 5))}
    assert report.target_only == ["backbone.map_augment.weight"]
    assert report.source_only == []
    assert "backbone.map_noise.freqs" in report.copied  # NCSN++'s random Fourier buffer comes along
    assert report.total_values == sum(t.numel() for t in fresh.values())
    assert report.copied_values == sum(fresh[name].numel() for name in matching)
    assert source.state_dict().keys() == source_state.keys()  # the source is not modified
    assert all(torch.equal(source.state_dict()[n], source_state[n]) for n in source_state)


def test_report_names_source_only_and_summarises():
    source = tiny_native(num_classes=0, augment_dim=9, seed=1)
    target = tiny_native(num_classes=3, augment_dim=0, seed=2)
    report = transfer_weights(source.state_dict(), target)
    assert report.source_only == ["backbone.map_augment.weight"]
    assert report.target_only == ["backbone.map_label.weight", "backbone.map_label.bias"]
    assert report.shape_mismatched == {}
    summary = report.summary()
    total = len(target.state_dict())
    assert summary.splitlines()[0].startswith(f"Transferred {total - 2} of {total} tensors")
    assert "2 new (initialised): backbone.map_label.weight, backbone.map_label.bias" in summary
    assert "1 pretrained tensors unused: backbone.map_augment.weight" in summary
    assert str(report) == summary
    short = TransferReport(target_only=[f"t{i}" for i in range(12)]).summary(max_names=3)
    assert "12 new (initialised): t0, t1, t2, ... (9 more)" in short


def test_dtype_and_added_augment_input_keep_the_function():
    """A float16 pretrained state is cast to the target's float32; a model given an augment input (zero-initialised
    map, bias-free) computes the pretrained function when no augment labels are passed."""
    source = tiny_native("ddpmpp", seed=1)
    target = tiny_native("ddpmpp", augment_dim=9, seed=2)
    with torch.no_grad():
        target.backbone.map_augment.weight.normal_()
    half = {name: tensor.half() for name, tensor in source.state_dict().items()}
    transfer_weights(half, target)
    assert target.dtype == torch.float32
    for name in transfer_weights(source.state_dict(), target).copied:
        torch.testing.assert_close(target.state_dict()[name], source.state_dict()[name])
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 4.0])
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x, sigma).sample, source.eval()(x, sigma).sample)


def test_nothing_matching_is_an_error():
    target = tiny_native()
    with pytest.raises(TrainingError, match="No tensor of the pretrained model matches") as error:
        transfer_weights({"other.weight": torch.zeros(2)}, target)
    assert "\n" not in str(error.value)
    fresh = snapshot(target)
    report = transfer_weights({"other.weight": torch.zeros(2)}, target, require_match=False)
    assert report.copied == [] and report.source_only == ["other.weight"]
    assert all(torch.equal(target.state_dict()[n], fresh[n]) for n in fresh)


# --- Loading a saved pipeline ----------------------------------------------------------------------------------------


def save_pipeline(model, folder):
    EDMPipeline(unet=model, scheduler=EDMHeunScheduler()).save_pretrained(folder)
    return folder


def test_round_trip_through_a_saved_pipeline(tmp_path):
    pretrained = tiny_native(num_classes=0, augment_dim=0, seed=3, sigma_data=0.6)
    folder = save_pipeline(pretrained, tmp_path / "pipe")
    loaded = load_pretrained_denoiser(folder)
    assert isinstance(loaded, PretrainedDenoiser)
    expected = {k: v for k, v in pretrained.config.items() if not k.startswith("_")}
    assert loaded.config == json.loads(json.dumps(expected))  # as saved (tuples become lists)
    assert loaded.state_dict.keys() == pretrained.state_dict().keys()
    assert all(torch.equal(loaded.state_dict[n], t) for n, t in pretrained.state_dict().items())
    # the unet/ folder itself, and a string path, work too; weights=False reads only the configuration
    assert load_pretrained_denoiser(str(folder / "unet")).config == loaded.config
    assert load_pretrained_denoiser(folder, weights=False) == PretrainedDenoiser(loaded.config, None)

    # Fine-tune on labelled data with augmentation: σ_data and architecture from the pretrained model.
    config = transfer_model_config(loaded.config, num_class_labels=4, augment_dim=9, sample_size=8, in_channels=1)
    model = EDMPreconditionedUNet2DModel.from_config(config)
    assert model.config.sigma_data == 0.6 and model.precond.sigma_data == 0.6
    assert (model.config.num_class_labels, model.config.augment_dim) == (4, 9)
    report = transfer_weights(loaded.state_dict, model)
    assert set(report.target_only) == {"backbone.map_label.weight", "backbone.map_label.bias",
                                       "backbone.map_augment.weight"}
    assert not report.shape_mismatched and not report.source_only
    assert all(torch.equal(model.state_dict()[n], pretrained.state_dict()[n]) for n in report.copied)


def test_round_trip_unet_2d_backbone_and_vp(tmp_path):
    pretrained = randomize_(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(), preconditioning="vp",
                                                         preconditioning_config=dict(beta_d=18.0)))
    loaded = load_pretrained_denoiser(save_pipeline(pretrained, tmp_path / "pipe"))
    config = transfer_model_config(loaded.config, num_class_labels=0, augment_dim=0, sample_size=16, dropout=0.2)
    assert config["sample_size"] == 16 and config["dropout"] == 0.2  # UNet2DModel's weights do not depend on size
    assert config["preconditioning"] == "vp" and config["preconditioning_config"] == dict(beta_d=18.0)
    model = EDMPreconditionedUNet2DModel.from_config(config)
    report = transfer_weights(loaded.state_dict, model)
    assert len(report.copied) == len(model.state_dict()) and report.copied_values == report.total_values


def test_loading_errors(tmp_path):
    def error_of(path, **kwargs):
        with pytest.raises(TrainingError) as error:
            load_pretrained_denoiser(path, **kwargs)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "no such file or folder" in error_of(tmp_path / "missing")
    assert "no such file or folder" in error_of("./missing-run")
    pickle = tmp_path / "edm-cifar10-32x32-cond-vp.pkl"
    pickle.write_bytes(b"not really")
    assert "is a file" in error_of(pickle) and "convert_edm_checkpoint" in error_of(pickle)
    (tmp_path / "empty").mkdir()
    assert "neither model_index.json nor config.json" in error_of(tmp_path / "empty")
    index = tmp_path / "other_pipeline"
    index.mkdir()
    (index / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"]}))
    assert "has no EDMPreconditionedUNet2DModel 'unet'" in error_of(index)
    UNet2DModel(**tiny_unet_kwargs()).save_pretrained(tmp_path / "stock")
    assert "holds a UNet2DModel, not an EDMPreconditionedUNet2DModel" in error_of(tmp_path / "stock")
    model_folder = tmp_path / "no_weights"
    EDMPreconditionedUNet2DModel(**tiny_unet_kwargs()).save_pretrained(model_folder)
    (model_folder / "diffusion_pytorch_model.safetensors").unlink()
    assert "cannot load the weights" in error_of(model_folder)
    assert load_pretrained_denoiser(model_folder, weights=False).config["sample_size"] == 8
    message = error_of("nobody-here/edm-model-that-is-not-cached", local_files_only=True)
    assert message.startswith("--pretrained_model_name_or_path nobody-here/edm-model-that-is-not-cached: not found")


# --- transfer_model_config -------------------------------------------------------------------------------------------


def test_transfer_model_config_overrides_and_errors():
    pretrained = dict(tiny_native(num_classes=3, augment_dim=9).config)
    config = transfer_model_config(pretrained, num_class_labels=0, augment_dim=0, dropout=0.3, label_dropout=0.0)
    assert (config["num_class_labels"], config["augment_dim"]) == (0, 0)
    assert config["backbone_config"]["dropout"] == 0.3 and "label_dropout" not in config["backbone_config"]
    assert pretrained["num_class_labels"] == 3 and pretrained["backbone_config"]["dropout"] == 0.0  # not modified
    config = transfer_model_config(pretrained, num_class_labels=10, augment_dim=9, label_dropout=0.1)
    assert config["backbone_config"]["label_dropout"] == 0.1
    EDMPreconditionedUNet2DModel.from_config(config)  # a valid configuration

    def error_of(**kwargs):
        with pytest.raises(TrainingError) as error:
            transfer_model_config(**{"pretrained_config": pretrained, "num_class_labels": 3, "augment_dim": 9,
                                     **kwargs})
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "pass --resolution 8" in error_of(sample_size=16)
    assert "takes 1-channel images, the data has 3" in error_of(in_channels=3)
    assert "needs class labels" in error_of(num_class_labels=0, label_dropout=0.1)
    iddpm = dict(pretrained, preconditioning="iddpm", out_channels=2)
    assert "'iddpm' preconditioning has no training loss" in error_of(pretrained_config=iddpm)
    unet_2d = dict(EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3)).config)
    config = transfer_model_config(unet_2d, num_class_labels=3, augment_dim=0, label_dropout=0.1, dropout=0.2)
    assert (config["label_dropout"], config["dropout"]) == (0.1, 0.2)
