"""What a new user met trying the package, each fixed: readable sample grids and class names, a model card that says
what the model is and where the package comes from, sampler and guidance choices on the command line, clear guidance
checks, train_edm.py's flags, and quiet scheduler swaps."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler
from huggingface_hub import ModelCard
from PIL import Image

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.commands.generate import main as generate_main
from diffusers_edm.commands.train import parse_args
from diffusers_edm.data import DataConfig, build_dataset
from diffusers_edm.errors import DatasetError, ImageSourceError
from diffusers_edm.evaluation.sources import ImageFiles
from diffusers_edm.pipelines.remote_code import INSTALL_HINT, LOADER_MODULE
from diffusers_edm.training.augment import random_flip
from diffusers_edm.training.model_card import write_model_card
from diffusers_edm.training.sample_grid import BACKGROUND, GUTTER, MIN_SIDE, grid_file_name, sample_grid
from diffusers_edm.training.trainer import EDMTrainer

from .helpers import randomize_, tiny_unet_kwargs

TINY = ["--arch", "ddpmpp", "--model_channels", "8", "--channel_mult", "1,2", "--attn_resolutions", "8",
        "--train_batch_size", "8", "--samples_per_class", "2", "--num_inference_steps", "2", "--logging_steps", "2",
        "--report_to", "none"]


def tiny_pipeline(num_class_labels=3, **pipeline_kwargs) -> EDMPipeline:
    unet = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=num_class_labels, label_dropout=0.1))
    pipe = EDMPipeline(unet=randomize_(unet, seed=1, scale=0.2).eval(), scheduler=EDMHeunScheduler(),
                       **pipeline_kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_guide(num_class_labels=3) -> EDMPreconditionedUNet2DModel:
    unet = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=num_class_labels))
    return randomize_(unet, seed=2, scale=0.2).eval()


# --- the sample grid ------------------------------------------------------------------------------------------------


def test_grid_is_enlarged_with_gutters_and_class_names():
    images = [Image.fromarray(np.full((16, 16), 10 * i, dtype=np.uint8)) for i in range(20)]
    grid = sample_grid(images, rows=10, row_labels=[f"class {i}" for i in range(10)])
    assert min(grid.size) >= MIN_SIDE
    pixels = np.asarray(grid)
    assert (pixels[:GUTTER] == BACKGROUND).all()  # the gutter above the first row
    scale = (grid.height - 11 * GUTTER) // (10 * 16)
    assert scale >= 2 and (grid.height - 11 * GUTTER) % (10 * 16) == 0  # whole-number nearest-neighbour enlargement
    label_column = pixels[:, : grid.width - 2 * (16 * scale + GUTTER) - GUTTER]
    assert (label_column != BACKGROUND).any()  # the class names are drawn left of the rows
    plain = sample_grid(images[:4], rows=2)
    assert min(plain.size) >= MIN_SIDE and plain.width == plain.height


def test_grid_names_never_collide():
    names = {grid_file_name(nimg, step) for step, nimg in enumerate(range(0, 10_000, 16))}
    assert len(names) == len(range(0, 10_000, 16))
    assert sorted(names) == [grid_file_name(nimg, step) for step, nimg in enumerate(range(0, 10_000, 16))]


def test_short_run_writes_readable_grids_that_do_not_overwrite_each_other(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="diffusers_edm"):
        EDMTrainer(parse_args(["--output_dir", str(tmp_path), "--max_train_steps", "2", "--sample_every", "1",
                               "--checkpointing_steps", "2", *TINY])).train()
    grids = sorted((tmp_path / "samples").glob("grid-*.png"))
    assert len(grids) == 2
    assert min(Image.open(grids[-1]).size) >= MIN_SIDE
    assert caplog.text.count("Saved the EMA pipeline and model card") == 1  # a checkpoint at the end saves once
    pipe = EDMPipeline.from_pretrained(tmp_path)
    assert pipe.labels == {str(digit): digit for digit in range(10)}  # the digits' class names
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag is None and "class-conditional" in card.data.tags
    assert "unconditional-image-generation" not in card.data.tags
    assert "dry_run" not in card.text and "cache_dir" not in card.text and "| learning rate |" in card.text
    assert INSTALL_HINT in " ".join(card.text.split())


# --- class names ----------------------------------------------------------------------------------------------------


def test_class_names_are_kept_and_accepted(tmp_path):
    pipe = tiny_pipeline(id2label={0: "cat, kitty", 1: "dog", 2: "bird"})
    assert pipe.get_label_ids(["kitty", "bird"]) == [0, 2]
    with pytest.raises(ValueError, match="'horse' is not a class name"):
        pipe.get_label_ids("horse")
    by_name = pipe(class_labels=["dog", "cat"], batch_size=2, seeds=[0, 1], num_inference_steps=2,
                   output_type="latent").images
    by_index = pipe(class_labels=[1, 0], seeds=[0, 1], num_inference_steps=2, output_type="latent").images
    assert torch.equal(by_name, by_index)
    pipe.save_pretrained(tmp_path)
    assert EDMPipeline.from_pretrained(tmp_path).get_label_ids("dog") == [1]


def test_image_folder_class_names_reach_the_dataset(tmp_path):
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8), 40).save(tmp_path / name / "a.png")
    assert build_dataset(DataConfig(train_data_dir=str(tmp_path))).class_names == ["cats", "dogs"]


# --- model card and the package's source ----------------------------------------------------------------------------


def test_card_says_where_the_package_comes_from(tmp_path):
    config = vars(parse_args(["--output_dir", str(tmp_path)])) | {"hub_token": None}
    config = {key: (str(value) if not isinstance(value, (int, float, str, bool, list, type(None))) else value)
              for key, value in config.items()}
    write_model_card(tmp_path, repo_id="me/edm", config=config, dataset_description="digits", hub_dataset=None,
                     resolution=16, channels=1, num_classes=0, steps=1, kimg=0.1, batch_size=8, grid_path=None,
                     loss_description="EDM's loss")
    card = ModelCard.load(tmp_path / "README.md")
    text = " ".join(card.text.split())
    assert "pip install diffusers-edm" not in text and "not on the Python package index" in text
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert "| dry_run |" not in card.text and "decoded_cache_dir" not in card.text


def test_loader_file_names_the_install_when_the_package_is_missing(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path)
    code = ("import sys; sys.modules['diffusers_edm'] = None\n"
            f"exec(open({str(tmp_path / (LOADER_MODULE + '.py'))!r}).read())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "needs the diffusers-edm package" in result.stderr
    assert "not on the Python package index" in result.stderr


# --- generate: scheduler and guidance flags, a saved guide --------------------------------------------------------


@pytest.fixture(scope="module")
def guided_model(tmp_path_factory):
    """A conditional model saved with a guide and a guidance weight."""
    folder = tmp_path_factory.mktemp("guided")
    pipe = tiny_pipeline(guidance_scale=2.0)
    pipe.guide_unet = tiny_guide()
    pipe.save_pretrained(folder)
    return folder


def _generate(model, out, *flags):
    return generate_main(["--model", str(model), "--outdir", str(out), "--seeds", "0-1", "--steps", "3",
                          "--device", "cpu", "--class", "1", *flags])


def _pixels(folder):
    return [np.asarray(Image.open(folder / f"{seed:06d}.png")) for seed in (0, 1)]


def test_generate_uses_the_saved_guide_and_its_weight(guided_model, tmp_path):
    summary = _generate(guided_model, tmp_path / "saved")
    assert summary.guidance == "autoguidance, w = 2"
    pipe = EDMPipeline.from_pretrained(guided_model)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(seeds=[0, 1], class_labels=1, num_inference_steps=3, guidance_scale=2.0).images
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(_pixels(tmp_path / "saved"), expected))
    unguided = _generate(guided_model, tmp_path / "none", "--guidance_scale", "1")
    assert unguided.guidance == "none"


def test_generate_scheduler_guide_and_interval_flags(guided_model, tmp_path):
    guide_folder = tmp_path / "guide"
    tiny_guide().save_pretrained(guide_folder)
    summary = _generate(guided_model, tmp_path / "out", "--scheduler", "dpmpp-2m", "--guidance_scale", "1.5",
                        "--guide", str(guide_folder), "--guidance_interval", "0.5,inf")
    assert summary.scheduler_class == "EDMDPMSolverMultistepScheduler" and summary.evaluations == 3
    assert summary.guidance == "autoguidance, w = 1.5, interval (0.5, inf)"
    pipe = EDMPipeline.from_pretrained(guided_model)
    pipe.guide_unet = EDMPreconditionedUNet2DModel.from_pretrained(guide_folder)
    pipe.scheduler = EDMDPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(seeds=[0, 1], class_labels=1, num_inference_steps=3, guidance_scale=1.5,
                    guidance_interval=(0.5, math.inf)).images
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(_pixels(tmp_path / "out"), expected))


@pytest.mark.parametrize("flags,message", [
    (["--scheduler", "dpmpp-2m", "--churn", "10"], "--churn is a setting of EDM's sampler"),
    (["--guidance_scale", "0"], "guidance_scale must lie in (0, 100]"),
    (["--guidance_interval", "1,0.5"], "0 <= LO < HI"),
    (["--guidance_scale", "1", "--guidance_interval", "0.1,1"], "--guidance_interval has no effect"),
    (["--guide", "nowhere/at/all"], "--guide nowhere/at/all does not exist"),
])
def test_generate_guidance_mistakes_are_one_line(guided_model, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        _generate(guided_model, tmp_path / "out", *flags)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0], lines


# --- guidance inputs of the pipeline --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf, 1e308, True])
def test_unusable_guidance_scales_are_value_errors(scale):
    with pytest.raises(ValueError, match="guidance_scale must (be a finite number|lie in)"):
        tiny_pipeline()(num_inference_steps=2, guidance_scale=scale)


def test_interval_without_guidance_warns():
    with pytest.warns(UserWarning, match="guidance_interval=.* has no effect without guidance"):
        tiny_pipeline()(num_inference_steps=2, guidance_interval=(0.1, 1.0), output_type="latent")


def test_cfg_on_a_model_trained_without_label_dropout_warns():
    unet = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=3))  # label_dropout 0
    pipe = EDMPipeline(unet=randomize_(unet).eval(), scheduler=EDMHeunScheduler())
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="trained without label dropout"):
        pipe(num_inference_steps=2, guidance_scale=1.5, output_type="latent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_pipeline()(num_inference_steps=2, guidance_scale=1.5, output_type="latent")  # label_dropout 0.1


@pytest.mark.parametrize("guide", ["not a model", torch.nn.Linear(2, 2)])
def test_guide_of_the_wrong_type_is_a_type_error(guide):
    pipe = tiny_pipeline()
    with pytest.raises(TypeError, match="guide_unet must be an EDMPreconditionedUNet2DModel"):
        pipe.guide_unet = guide
    with pytest.raises(TypeError, match="guide_unet must be an EDMPreconditionedUNet2DModel"):
        EDMPipeline(unet=pipe.unet, scheduler=pipe.scheduler, guide_unet=guide)


# --- train_edm.py's flags -------------------------------------------------------------------------------------------


def test_xflip_doubles_the_data_and_random_flip_flips_per_draw(tmp_path):
    assert parse_args(["--xflip"]).xflip and not parse_args(["--xflip"]).random_flip
    with pytest.raises(SystemExit):
        parse_args(["--xflip", "--random_flip"])
    assert len(build_dataset(DataConfig(resolution=8, xflip=True))) == 2 * 1797
    images = torch.arange(4 * 8, dtype=torch.float32).reshape(4, 1, 1, 8).expand(4, 1, 8, 8).contiguous()
    torch.manual_seed(0)
    flipped = random_flip(images.repeat(50, 1, 1, 1))
    mirrored = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(flipped, images.repeat(50, 1, 1, 1))])
    unchanged = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, images.repeat(50, 1, 1, 1))])
    assert bool((mirrored | unchanged).all()) and 70 <= int(mirrored.sum()) <= 130


def test_unknown_flag_suggests_the_closest_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--learing_rate", "1e-3"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0 and "did you mean --learning_rate?" in err


def test_unreachable_hub_dataset_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError) as error:
        build_dataset(DataConfig(dataset_name="someone/surely-not-cached-dataset"))
    message = str(error.value)
    assert "\n" not in message and "offline mode is on" in message and "--train_data_dir" in message


def test_empty_image_folder_does_not_suggest_num_zero(tmp_path):
    with pytest.raises(ImageSourceError) as error:
        ImageFiles(tmp_path).subset(50_000)
    assert "holds no images" in str(error.value) and "--num 0" not in str(error.value)


# --- quiet scheduler swaps ------------------------------------------------------------------------------------------


def test_documented_scheduler_swaps_are_quiet(caplog):
    pipe = tiny_pipeline()
    with caplog.at_level(logging.WARNING):
        for scheduler_class in (EDMEulerScheduler, EDMDPMSolverMultistepScheduler, EDMHeunScheduler):
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        pipe(num_inference_steps=2, output_type="latent")
    assert "will be ignored" not in caplog.text and pipe.scheduler.config.s_churn == 0
