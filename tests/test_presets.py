"""`--preset` tables against the paper's training configurations (spec §6.3 / §3.4, written out here independently of
the package), and the full-size parameter counts against the official networks' (conformance set 08)."""

import json

import pytest

from diffusers_edm.models.unet_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.commands.train import build_parser
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.model_config import (
    count_parameters,
    edm_augment_dim,
    native_model_config,
    preset_model_config,
)
from diffusers_edm.training.presets import PRESETS, get_preset, preset_defaults

from .helpers import DATA_DIR

# The README's training commands (spec §6.3) with train.py's fixed values (§6.1) and the network classes' defaults
# for num_blocks / attn_resolutions (§3.4). Durations and EMA half-lives in kimg (Mimg x 1000).
SONG = dict(model_channels=128, layers_per_block=4, attn_resolutions=[16])
ADM = dict(arch="adm", model_channels=192, channel_mult=[1, 2, 3, 4], layers_per_block=3, attn_resolutions=[32, 16, 8])
RAMPS = dict(lr_rampup_kimg=10000, ema_rampup_ratio=0.05)
CIFAR = dict(channel_mult=[2, 2, 2], total_batch_size=512, learning_rate=0.001, dropout=0.13, augment_p=0.12,
             duration_kimg=200000, ema_halflife_kimg=500, mixed_precision="no", **SONG, **RAMPS)
FFHQ = dict(channel_mult=[1, 2, 2, 2], total_batch_size=256, learning_rate=0.0002, dropout=0.05, augment_p=0.15,
            duration_kimg=200000, ema_halflife_kimg=500, mixed_precision="no", **SONG, **RAMPS)
AFHQ = {**FFHQ, "dropout": 0.25}
IMAGENET = dict(total_batch_size=4096, learning_rate=0.0001, dropout=0.1, augment_p=0.0, duration_kimg=2500000,
                ema_halflife_kimg=50000, mixed_precision="fp16", **ADM, **RAMPS)

EXPECTED = {
    "cifar10-cond-ddpmpp": {**CIFAR, "arch": "ddpmpp", "conditional": True, "precond": "edm"},
    "cifar10-uncond-ddpmpp": {**CIFAR, "arch": "ddpmpp", "conditional": False, "precond": "edm"},
    "cifar10-cond-ncsnpp": {**CIFAR, "arch": "ncsnpp", "conditional": True, "precond": "edm"},
    "cifar10-uncond-ncsnpp": {**CIFAR, "arch": "ncsnpp", "conditional": False, "precond": "edm"},
    "ffhq64-uncond-ddpmpp": {**FFHQ, "arch": "ddpmpp", "conditional": False, "precond": "edm"},
    "ffhq64-uncond-ncsnpp": {**FFHQ, "arch": "ncsnpp", "conditional": False, "precond": "edm"},
    "afhqv2-64-uncond-ddpmpp": {**AFHQ, "arch": "ddpmpp", "conditional": False, "precond": "edm"},
    "afhqv2-64-uncond-ncsnpp": {**AFHQ, "arch": "ncsnpp", "conditional": False, "precond": "edm"},
    "imagenet64-cond-adm": {**IMAGENET, "conditional": True, "precond": "edm"},
    "cifar10-cond-ddpmpp-vp": {**CIFAR, "arch": "ddpmpp", "conditional": True, "precond": "vp"},
    "cifar10-uncond-ddpmpp-vp": {**CIFAR, "arch": "ddpmpp", "conditional": False, "precond": "vp"},
    "cifar10-cond-ncsnpp-ve": {**CIFAR, "arch": "ncsnpp", "conditional": True, "precond": "ve"},
    "cifar10-uncond-ncsnpp-ve": {**CIFAR, "arch": "ncsnpp", "conditional": False, "precond": "ve"},
    "ffhq64-uncond-ddpmpp-vp": {**FFHQ, "arch": "ddpmpp", "conditional": False, "precond": "vp"},
    "ffhq64-uncond-ncsnpp-ve": {**FFHQ, "arch": "ncsnpp", "conditional": False, "precond": "ve"},
    "afhqv2-64-uncond-ddpmpp-vp": {**AFHQ, "arch": "ddpmpp", "conditional": False, "precond": "vp"},
    "afhqv2-64-uncond-ncsnpp-ve": {**AFHQ, "arch": "ncsnpp", "conditional": False, "precond": "ve"},
}

DATASETS = {"cifar10": (32, 3, 10), "ffhq64": (64, 3, 0), "afhqv2-64": (64, 3, 0), "imagenet64": (64, 3, 1000)}


EDM2_NAMES = [f"edm2-img512-{size}" for size in ("xxs", "xs", "s", "m", "l", "xl", "xxl")] + [
    f"edm2-img64-{size}" for size in ("xs", "s", "m", "l", "xl")
]  # their settings are checked against the official vectors in test_edm2_training.py


def test_the_preset_names():
    assert list(PRESETS) == list(EXPECTED) + EDM2_NAMES


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_matches_the_paper(name):
    defaults = preset_defaults(name)
    assert defaults == EXPECTED[name]
    for key, value in defaults.items():  # same types as argparse produces (lists, not tuples; floats where floats)
        assert type(value) in (type(EXPECTED[name][key]), float), key
    preset = get_preset(name)
    assert preset.name == name and preset.doc
    dataset = next(d for d in DATASETS if name.startswith(d + "-"))
    assert (preset.resolution, preset.channels, preset.num_classes) == DATASETS[dataset]


def test_presets_name_argparse_destinations():
    """Every key is a train_edm.py destination (precond and total_batch_size are added by args.py's integration)."""
    destinations = set(vars(build_parser().parse_args([])))
    keys = set().union(*(preset_defaults(name) for name in PRESETS))
    assert keys - destinations <= {"precond", "total_batch_size"}


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(TrainingError) as error:
        get_preset("cifar10")
    message = str(error.value)
    assert "\n" not in message and "'cifar10'" in message
    assert all(name in message for name in EXPECTED)
    with pytest.raises(TrainingError):
        preset_defaults("imagenet64-cond-ddpmpp")


def test_defaults_are_a_fresh_copy():
    defaults = preset_defaults("cifar10-cond-ddpmpp")
    defaults["channel_mult"].append(4)
    defaults["learning_rate"] = 1.0
    assert preset_defaults("cifar10-cond-ddpmpp") == EXPECTED["cifar10-cond-ddpmpp"]


# --- Parameter counts (conformance 08: official networks built as train.py builds them, on the meta device) ----------

OFFICIAL_COUNTS = {entry["name"]: entry["param_count"] for entry in
                   json.loads((DATA_DIR / "backbone_fullsize_configs.json").read_text())["param_counts"]}

SONG_CIFAR = dict(model_channels=128, channel_mult=[2, 2, 2], layers_per_block=4, attn_resolutions=[16], dropout=0.13,
                  resolution=32, channels=3)
SONG_64 = {**SONG_CIFAR, "channel_mult": [1, 2, 2, 2], "dropout": 0.05, "resolution": 64}
FULLSIZE = {
    "cifar10_cond_ddpmpp": dict(arch="ddpmpp", num_classes=10, augment_dim=9, **SONG_CIFAR),
    "cifar10_uncond_ddpmpp": dict(arch="ddpmpp", num_classes=0, augment_dim=9, **SONG_CIFAR),
    "cifar10_cond_ncsnpp": dict(arch="ncsnpp", num_classes=10, augment_dim=9, **SONG_CIFAR),
    "cifar10_uncond_ncsnpp": dict(arch="ncsnpp", num_classes=0, augment_dim=9, **SONG_CIFAR),
    "ffhq64_uncond_ddpmpp": dict(arch="ddpmpp", num_classes=0, augment_dim=9, **SONG_64),
    "ffhq64_uncond_ncsnpp": dict(arch="ncsnpp", num_classes=0, augment_dim=9, **SONG_64),
    "imagenet64_cond_adm": dict(arch="adm", model_channels=192, channel_mult=[1, 2, 3, 4], layers_per_block=3,
                                attn_resolutions=[32, 16, 8], dropout=0.1, resolution=64, channels=3, num_classes=1000,
                                augment_dim=0),
    "cifar10_uncond_vp_precond_ddpmpp": dict(arch="ddpmpp", num_classes=0, augment_dim=9, precond="vp", **SONG_CIFAR),
}


@pytest.mark.parametrize("name", list(FULLSIZE))
def test_fullsize_parameter_counts(name):
    assert count_parameters(native_model_config(**FULLSIZE[name])) == OFFICIAL_COUNTS[name]


@pytest.mark.parametrize("preset,official", [
    ("cifar10-cond-ddpmpp", "cifar10_cond_ddpmpp"), ("cifar10-uncond-ncsnpp", "cifar10_uncond_ncsnpp"),
    ("ffhq64-uncond-ncsnpp", "ffhq64_uncond_ncsnpp"), ("afhqv2-64-uncond-ddpmpp", "ffhq64_uncond_ddpmpp"),
    ("imagenet64-cond-adm", "imagenet64_cond_adm"), ("cifar10-uncond-ddpmpp-vp", "cifar10_uncond_vp_precond_ddpmpp"),
])
def test_preset_parameter_counts(preset, official):
    assert count_parameters(preset_model_config(preset)) == OFFICIAL_COUNTS[official]


@pytest.mark.parametrize("config", [
    native_model_config("ddpmpp", 16, [1, 2], 1, [4], 0.1, 8, 1, 3, 9, precond="vp"),
    native_model_config("ncsnpp", 16, [1, 2], 1, [4], 0.1, 8, 3, 0, 0, precond="ve", label_dropout=0.0),
    native_model_config("adm", 64, [1, 2], 1, [4], 0.1, 8, 1, 3, 9, label_dropout=0.1),
    dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
         down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
         layers_per_block=1, attention_head_dim=4, num_class_labels=3, augment_dim=9),
], ids=["ddpmpp-vp", "ncsnpp-ve", "adm-label-dropout", "unet_2d"])
def test_meta_count_equals_the_real_model(config):
    """The meta-device count equals that of the model built for real, which the config builds as given."""
    model = EDMPreconditionedUNet2DModel(**config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    assert count_parameters(dict(model.config)) == count_parameters(config)  # a saved config (with _ keys) works too
    assert model.precond.name == config.get("preconditioning", "edm")


def test_native_model_config_layout():
    config = native_model_config("ncsnpp", 128, (2, 2, 2), 4, (16,), 0.13, 32, 3, 10, 9, precond="ve",
                                 sigma_data=0.5, label_dropout=0.1)
    assert config == dict(
        sample_size=32, in_channels=3, out_channels=3, sigma_data=0.5, num_class_labels=10, augment_dim=9,
        backbone_type="song_unet", preconditioning="ve",
        backbone_config=dict(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16],
                             dropout=0.13, embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                             channel_mult_noise=2, resample_filter=[1, 3, 3, 1], label_dropout=0.1))
    assert "label_dropout" not in native_model_config("adm", 8, [1], 1, [], 0.0, 8, 1, 0, 0)["backbone_config"]
    with pytest.raises(ValueError, match="unet_2d"):
        native_model_config("unet_2d", 8, [1], 1, [], 0.0, 8, 1, 0, 0)
    with pytest.raises(TrainingError, match="iddpm"):
        native_model_config("adm", 8, [1], 1, [], 0.0, 8, 1, 0, 0, precond="iddpm")


def test_edm_augment_dim():
    assert edm_augment_dim(0.12) == 9 and edm_augment_dim(0.0) == 0 and edm_augment_dim(0.5, True) == 15

