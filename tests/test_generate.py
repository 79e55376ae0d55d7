"""The generation CLI (`python -m diffusers_edm.generate`): seed lists, the official seed/batch/process split, file
names, batch-independence, class labels, the shared sampler presets, and how presets, flags and a converted model's
`sampler_settings.json` set the sampler."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_edm import EDMAblationScheduler, EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel
from diffusers_edm.commands.common import parse_seeds
from diffusers_edm.commands.generate import build_parser, image_path, main, rank_batches, split_seeds
from diffusers_edm.commands.sampling import build_scheduler, resolve_num_inference_steps, scheduler_overrides
from diffusers_edm.sampler_presets import SAMPLER_PRESETS

from .helpers import randomize_, tiny_unet_kwargs

# A saved scheduler config that differs from the paper's defaults, to see which layer each setting comes from.
SAVED_SCHEDULER = dict(sigma_max=60.0, rho=5.0, s_noise=1.01)


def save_tiny_pipeline(folder, channels, num_class_labels):
    unet = EDMPreconditionedUNet2DModel(
        **tiny_unet_kwargs(in_channels=channels, out_channels=channels, num_class_labels=num_class_labels)
    )
    pipe = EDMPipeline(unet=randomize_(unet, seed=1, scale=0.2).eval(), scheduler=EDMHeunScheduler(**SAVED_SCHEDULER))
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cond_model(tmp_path_factory):
    """RGB, 3 classes."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("cond_model"), channels=3, num_class_labels=3)


@pytest.fixture(scope="module")
def uncond_model(tmp_path_factory):
    """Grayscale, unconditional."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("uncond_model"), channels=1, num_class_labels=0)


def generate(model, outdir, *flags):
    return main(["--model", str(model), "--outdir", str(outdir), "--device", "cpu", *flags])


def png_files(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))


def reference_image(model, seed, steps, class_labels=None, **scheduler_settings):
    """The image of one seed straight from the pipeline, with optional scheduler settings set by hand."""
    pipe = EDMPipeline.from_pretrained(model)
    if scheduler_settings:
        pipe.scheduler = EDMHeunScheduler.from_config(pipe.scheduler.config, **scheduler_settings)
    pipe.set_progress_bar_config(disable=True)
    return pipe(seeds=[seed], class_labels=class_labels, num_inference_steps=steps, output_type="pil").images[0]


def parse(*flags):
    return build_parser().parse_args(["--model", "m", "--outdir", "o", *flags])


# Seed lists -------------------------------------------------------------------------------------------------------


def test_parse_seeds_accepts_the_official_forms():
    assert parse_seeds("0-63") == list(range(64))
    assert parse_seeds("1,2,5-10") == [1, 2, 5, 6, 7, 8, 9, 10]
    assert parse_seeds("7") == [7]
    assert parse_seeds("12, 3-4 ,0") == [12, 3, 4, 0]  # order is kept
    assert parse_seeds("4-4") == [4]


@pytest.mark.parametrize(
    "text,message",
    [("", "Invalid seed"), ("a", "Invalid seed"), ("1,,2", "Invalid seed"), ("-1", "Invalid seed"),
     ("1-2-3", "Invalid seed"), ("1.5", "Invalid seed"), ("٣", "Invalid seed"), ("9-3", "descending"),
     ("1,2,2-4", "more than once")],
)
def test_parse_seeds_rejects_bad_lists(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


@pytest.mark.parametrize("flag,value", [("--seeds", "5-1"), ("--batch", "0"), ("--steps", "two"), ("--device", "gpu"),
                                        ("--preset", "cifar100"), ("--solver", "rk4")])
def test_bad_arguments_are_argparse_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


# The official split (expected chunks written by hand from the rule in the module docstring) ------------------------


def test_split_seeds_follows_tensor_split_order():
    # 10 seeds, batch 4, 1 process: K = ceil(10/4) = 3 chunks of sizes 4, 3, 3 (not 4, 4, 2).
    assert split_seeds(list(range(10)), 4, 1) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # 10 seeds, batch 2, 2 processes: K = ceil(10/4)·2 = 6 chunks, the first 10 mod 6 = 4 of them with 2 seeds.
    assert split_seeds(list(range(10)), 2, 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8], [9]]
    # 3 seeds, batch 64, 4 processes: K = 4 chunks, the last one empty.
    assert split_seeds([5, 6, 7], 64, 4) == [[5], [6], [7], []]
    # 64 seeds fit one batch.
    assert split_seeds(list(range(64)), 64, 1) == [list(range(64))]
    # 100 seeds, batch 8, 3 processes: K = ceil(100/24)·3 = 15 chunks: 10 of 7 seeds, then 5 of 6.
    chunks = split_seeds(list(range(100, 200)), 8, 3)
    assert [len(chunk) for chunk in chunks] == [7] * 10 + [6] * 5
    assert sum(chunks, []) == list(range(100, 200))


def test_each_process_takes_every_world_th_chunk_and_skips_empty_ones():
    seeds = list(range(10))
    assert rank_batches(seeds, 2, 2, 0) == [[0, 1], [4, 5], [8]]
    assert rank_batches(seeds, 2, 2, 1) == [[2, 3], [6, 7], [9]]
    assert rank_batches([5, 6, 7], 64, 4, 3) == []
    assert rank_batches([5, 6, 7], 64, 4, 1) == [[6]]
    assert rank_batches(seeds, 4, 1, 0) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="rank"):
        rank_batches(seeds, 2, 2, 2)


def test_image_paths_use_the_official_names():
    assert image_path("out", 7).as_posix() == "out/000007.png"
    assert image_path("out", 1234567, subdirs=True).as_posix() == "out/1234000/1234567.png"
    assert image_path("out", 999, subdirs=True).as_posix() == "out/000000/000999.png"
    assert image_path("out", 1000, subdirs=True).as_posix() == "out/001000/001000.png"


# Sampler settings --------------------------------------------------------------------------------------------------


def test_readme_presets_hold_the_paper_settings():
    # Spec §1.4: (steps, NFE, S_churn, S_tmin, S_tmax, S_noise); S_tmax None is ∞, σ 0.002–80, ρ 7, Heun for all.
    expected = {"cifar10": (18, 35, 0, 0, None, 1), "ffhq": (40, 79, 0, 0, None, 1),
                "afhqv2": (40, 79, 0, 0, None, 1), "imagenet64": (256, 511, 40, 0.05, 50, 1.003)}
    for name, (steps, evaluations, s_churn, s_tmin, s_tmax, s_noise) in expected.items():
        preset = SAMPLER_PRESETS[name]
        assert (preset.num_inference_steps, preset.num_model_evaluations, preset.recalled) == (steps, evaluations,
                                                                                               False)
        assert preset.scheduler_settings() == {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "solver": "heun",
                                               "s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax,
                                               "s_noise": s_noise}
    # Spec §1.4, recalled Table 5 settings of the baselines.
    baselines = {"baseline-cifar10-vp": (30, 0.01, 1, 1.007), "baseline-cifar10-ve": (80, 0.05, 1, 1.007),
                 "baseline-imagenet64": (80, 0.05, 50, 1.003)}
    for name, churn in baselines.items():
        preset = SAMPLER_PRESETS[name]
        assert (preset.s_churn, preset.s_tmin, preset.s_tmax, preset.s_noise, preset.recalled) == (*churn, True)
    # The CLI offers every preset, under the names the converter uses too.
    assert set(SAMPLER_PRESETS) == {"cifar10", "ffhq", "afhqv2", "imagenet64", "uncond-64x64", "baseline-cifar10-vp",
                                    "baseline-cifar10-ve", "baseline-imagenet64", "default"}
    assert all(parse("--preset", name).preset == name for name in SAMPLER_PRESETS)


def test_step_count_precedence_is_steps_then_preset_then_saved_then_18():
    def steps(*flags, saved=None):
        return resolve_num_inference_steps(parse(*flags), saved)

    assert steps() == (18, "the default")
    assert steps("--preset", "cifar10") == (18, "--preset cifar10")
    assert steps("--preset", "ffhq")[0] == steps("--preset", "afhqv2")[0] == 40
    assert steps("--preset", "imagenet64") == (256, "--preset imagenet64")
    assert steps("--preset", "imagenet64", "--steps", "7") == (7, "--steps")
    assert steps(saved=5) == (5, "the model's sampler_settings.json")
    assert steps("--preset", "ffhq", saved=5) == (40, "--preset ffhq")
    assert steps("--steps", "3", saved=5) == (3, "--steps")


def test_scheduler_overrides_layer_preset_then_flags_over_the_saved_config():
    saved = dict(EDMHeunScheduler(**SAVED_SCHEDULER).config)
    assert scheduler_overrides(parse(), saved) == {}
    assert scheduler_overrides(parse("--rho", "6", "--solver", "euler"), saved) == {"rho": 6.0, "solver": "euler"}
    # Official spelling and '--s_tmax inf' (the config's None).
    assert scheduler_overrides(parse("--S_churn", "3", "--S_max", "inf"), saved) == {"s_churn": 3.0}
    # imagenet64 (README: S_churn 40, S_min 0.05, S_max 50, S_noise 1.003) with the paper's range 0.002–80, ρ 7;
    # sigma_min 0.002 and solver heun equal the saved config and are not listed.
    assert scheduler_overrides(parse("--preset", "imagenet64"), saved) == {
        "sigma_max": 80.0, "rho": 7.0, "s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
    assert scheduler_overrides(parse("--preset", "imagenet64", "--churn", "5", "--rho", "6"), saved) == {
        "sigma_max": 80.0, "rho": 6.0, "s_churn": 5.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
    # Deterministic presets reset the churn of a stochastic saved config.
    stochastic = dict(EDMHeunScheduler(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003).config)
    assert scheduler_overrides(parse("--preset", "ffhq"), stochastic) == {
        "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": None, "s_noise": 1.0}


def test_presets_and_flags_land_in_the_scheduler_used_for_sampling(cond_model, tmp_path):
    summary = generate(cond_model, tmp_path / "saved", "--seeds", "0", "--steps", "2", "--rho", "6")
    assert (summary.scheduler_config["sigma_max"], summary.scheduler_config["rho"]) == (60.0, 6.0)
    assert summary.scheduler_config["s_noise"] == 1.01 and summary.num_inference_steps == 2

    summary = generate(cond_model, tmp_path / "imagenet", "--seeds", "0", "--steps", "2", "--preset", "imagenet64")
    config = summary.scheduler_config
    assert (config["s_churn"], config["s_tmin"], config["s_tmax"], config["s_noise"]) == (40.0, 0.05, 50.0, 1.003)
    assert (config["sigma_min"], config["sigma_max"], config["rho"], config["solver"]) == (0.002, 80.0, 7.0, "heun")

    outdir = tmp_path / "churn5"
    summary = generate(cond_model, outdir, "--seeds", "4", "--steps", "3", "--preset", "imagenet64", "--churn", "5")
    assert summary.scheduler_config["s_churn"] == 5.0 and summary.scheduler_config["s_tmin"] == 0.05
    expected = reference_image(cond_model, 4, 3, s_churn=5.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003,
                               sigma_min=0.002, sigma_max=80.0, rho=7.0)
    deterministic = reference_image(cond_model, 4, 3, sigma_max=80.0, rho=7.0, s_noise=1.0)
    written = np.asarray(PIL.Image.open(outdir / "000004.png"))
    assert np.array_equal(written, np.asarray(expected))
    assert not np.array_equal(written, np.asarray(deterministic))  # the churn was really applied


def test_ablation_flags_switch_to_the_ablation_scheduler_like_the_official_script():
    saved = dict(EDMHeunScheduler(**{**SAVED_SCHEDULER, "s_churn": 40, "s_tmin": 0.05, "s_tmax": 50,
                                     "s_noise": 1.003}).config)
    scheduler, changed = build_scheduler(parse("--solver", "euler"), saved)
    assert type(scheduler) is EDMHeunScheduler and changed == {"solver": "euler"}

    scheduler, changed = build_scheduler(parse("--disc", "vp", "--churn", "5"), saved)
    assert type(scheduler) is EDMAblationScheduler
    config = scheduler.config
    assert (config.discretization, config.schedule, config.scaling, config.solver) == ("vp", "linear", "none", "heun")
    # The σ range and ρ are the discretization's own unless given (not the saved 60 / 5); churn is layered as usual.
    assert (config.sigma_min, config.sigma_max, config.rho) == (None, None, 7.0)
    assert (config.s_churn, config.s_tmin, config.s_tmax, config.s_noise) == (5.0, 0.05, 50.0, 1.003)
    assert changed == {"scheduler": "EDMAblationScheduler", "discretization": "vp", "s_churn": 5.0}

    scheduler, _ = build_scheduler(parse("--schedule", "ve", "--scaling", "vp", "--sigma_max", "70", "--rho", "3",
                                         "--solver", "euler", "--preset", "cifar10"), saved)
    config = scheduler.config
    assert (config.discretization, config.schedule, config.scaling, config.solver) == ("edm", "ve", "vp", "euler")
    assert (config.sigma_min, config.sigma_max, config.rho, config.s_churn) == (None, 70.0, 3.0, 0.0)

    with pytest.raises(SystemExit):
        parse("--disc", "karras")

    # A model saved with an ablation scheduler keeps it; the usual flags still apply.
    saved_ablation = dict(EDMAblationScheduler(discretization="ve", schedule="ve").config)
    scheduler, changed = build_scheduler(parse("--rho", "4"), saved_ablation, EDMAblationScheduler)
    assert type(scheduler) is EDMAblationScheduler and changed == {"rho": 4.0}
    assert (scheduler.config.discretization, scheduler.config.schedule) == ("ve", "ve")


def test_ablation_flags_generate_the_ablation_schedulers_images(uncond_model, tmp_path, capsys):
    flags = ("--disc", "vp", "--schedule", "vp", "--scaling", "vp", "--S_churn", "10", "--S_noise", "1.003")
    summary = generate(uncond_model, tmp_path, "--seeds", "2,9", "--steps", "4", *flags)
    assert summary.scheduler_class == "EDMAblationScheduler"
    assert "EDMAblationScheduler, 4 steps" in capsys.readouterr().out

    pipe = EDMPipeline.from_pretrained(uncond_model)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EDMAblationScheduler(discretization="vp", schedule="vp", scaling="vp", s_churn=10.0,
                                          s_noise=1.003)
    expected = pipe(seeds=[2, 9], num_inference_steps=4).images
    heun = reference_image(uncond_model, 9, 4, s_churn=10.0, s_noise=1.003)
    for seed, image in zip((2, 9), expected):
        written = np.asarray(PIL.Image.open(image_path(tmp_path, seed)))
        assert np.array_equal(written, np.asarray(image))
    assert not np.array_equal(np.asarray(PIL.Image.open(image_path(tmp_path, 9))), np.asarray(heun))


def with_sampler_settings(model, folder, settings_text):
    """A copy of a saved pipeline with a `sampler_settings.json` as the converter writes it."""
    shutil.copytree(model, folder)
    (folder / "sampler_settings.json").write_text(settings_text)
    return folder


def test_steps_default_to_the_model_sampler_settings(uncond_model, tmp_path):
    # The converter's format (top-level num_inference_steps among the preset's fields), written by hand.
    settings = {"name": "default", "dataset": "test", "num_inference_steps": 5, "num_model_evaluations": 9,
                "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "solver": "heun", "s_churn": 0.0, "s_tmin": 0.0,
                "s_tmax": None, "s_noise": 1.0, "source": "test", "recalled": False}
    model = with_sampler_settings(uncond_model, tmp_path / "model", json.dumps(settings))

    summary = generate(model, tmp_path / "saved", "--seeds", "3")
    assert (summary.num_inference_steps, summary.steps_source) == (5, "the model's sampler_settings.json")
    assert "5 steps (from the model's sampler_settings.json" in summary.describe()
    written = np.asarray(PIL.Image.open(tmp_path / "saved" / "000003.png"))
    assert np.array_equal(written, np.asarray(reference_image(uncond_model, 3, 5)))
    assert not np.array_equal(written, np.asarray(reference_image(uncond_model, 3, 18)))  # not the default 18

    assert generate(model, tmp_path / "steps", "--seeds", "3", "--steps", "2").num_inference_steps == 2
    assert generate(model, tmp_path / "preset", "--seeds", "3", "--preset", "cifar10").num_inference_steps == 18
    assert generate(uncond_model, tmp_path / "none", "--seeds", "3").num_inference_steps == 18  # no json


@pytest.mark.parametrize(
    "settings_text,message",
    [("{", "is not valid JSON"), ('{"num_inference_steps": 0}', "positive integer 'num_inference_steps'"),
     ('{"num_inference_steps": true}', "got True"), ('{"steps": 18}', "got None"), ("[18]", "got None")],
)
def test_bad_sampler_settings_are_a_clear_error(settings_text, message, uncond_model, tmp_path, capsys):
    model = with_sampler_settings(uncond_model, tmp_path / "model", settings_text)
    with pytest.raises(SystemExit) as exit_info:
        generate(model, tmp_path / "out", "--seeds", "0")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert generate(model, tmp_path / "out", "--seeds", "0", "--steps", "2").num_inference_steps == 2  # not read


# End to end --------------------------------------------------------------------------------------------------------


def test_files_are_named_and_grouped_like_the_official_script(cond_model, tmp_path, capsys):
    generate(cond_model, tmp_path / "sub", "--seeds", "998-1001", "--subdirs", "--steps", "3", "--batch", "2")
    assert png_files(tmp_path / "sub") == ["000000/000998.png", "000000/000999.png", "001000/001000.png",
                                           "001000/001001.png"]
    assert "Wrote 4 images" in capsys.readouterr().out
    generate(cond_model, tmp_path / "flat", "--seeds", "12,0,7", "--steps", "3")
    assert png_files(tmp_path / "flat") == ["000000.png", "000007.png", "000012.png"]


def test_images_do_not_depend_on_the_batch_size(cond_model, tmp_path):
    for batch in ("2", "5"):
        generate(cond_model, tmp_path / f"batch{batch}", "--seeds", "3-7", "--steps", "3", "--batch", batch)
    names = png_files(tmp_path / "batch2")
    assert names == png_files(tmp_path / "batch5") and len(names) == 5
    pixels = [np.asarray(PIL.Image.open(tmp_path / "batch2" / name)) for name in names]
    assert all(not np.array_equal(pixels[0], other) for other in pixels[1:])  # the seeds give different images
    assert len(np.unique(pixels[0])) > 20  # not a saturated image
    for name in names:
        assert (tmp_path / "batch2" / name).read_bytes() == (tmp_path / "batch5" / name).read_bytes()


def test_images_equal_the_pipeline_for_the_same_seed(cond_model, uncond_model, tmp_path):
    generate(cond_model, tmp_path / "cond", "--seeds", "1000,1001", "--steps", "3", "--subdirs")
    written = PIL.Image.open(tmp_path / "cond" / "001000" / "001001.png")
    assert written.mode == "RGB" and written.size == (8, 8)
    assert np.array_equal(np.asarray(written), np.asarray(reference_image(cond_model, 1001, 3)))

    generate(uncond_model, tmp_path / "uncond", "--seeds", "5", "--steps", "4")
    written = PIL.Image.open(tmp_path / "uncond" / "000005.png")
    assert written.mode == "L"
    assert np.array_equal(np.asarray(written), np.asarray(reference_image(uncond_model, 5, 4)))


def drawn_class(seed, shape=(3, 8, 8), num_classes=3):
    """The class the official script draws for a seed: the first randint after the latents (spec 1.3)."""
    generator = torch.Generator().manual_seed(seed)
    torch.randn(shape, generator=generator)
    return int(torch.randint(num_classes, size=[], generator=generator))


def test_class_flag_sets_every_label(cond_model, tmp_path):
    seed = next(s for s in range(100) if drawn_class(s) != 2)
    generate(cond_model, tmp_path, "--seeds", str(seed), "--steps", "3", "--class", "2")
    written = np.asarray(PIL.Image.open(image_path(tmp_path, seed)))
    assert np.array_equal(written, np.asarray(reference_image(cond_model, seed, 3, class_labels=2)))
    assert not np.array_equal(written, np.asarray(reference_image(cond_model, seed, 3)))


@pytest.mark.parametrize(
    "model,label,message",
    [("uncond", "0", "the model is unconditional"), ("cond", "3", r"must lie in \[0, 3\)"),
     ("cond", "-1", r"must lie in \[0, 3\)")],
)
def test_bad_class_is_a_clear_error(model, label, message, cond_model, uncond_model, tmp_path, capsys):
    folder = {"cond": cond_model, "uncond": uncond_model}[model]
    with pytest.raises(SystemExit) as exit_info:
        generate(folder, tmp_path / "out", "--seeds", "0", "--steps", "2", "--class", label)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_invalid_sampler_settings_are_a_clear_error(cond_model, tmp_path, capsys):
    with pytest.raises(SystemExit):
        generate(cond_model, tmp_path, "--seeds", "0", "--sigma_min", "90")
    assert "sigma_max must be larger than sigma_min" in capsys.readouterr().err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "diffusers_edm.generate", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--seeds" in result.stdout and "accelerate launch" in result.stdout
    help_text = " ".join(result.stdout.split())
    assert "the preset's, else num_inference_steps from the model's sampler_settings.json" in help_text
    assert all(name in help_text for name in ("cifar10", "ffhq", "afhqv2", "imagenet64"))
