"""Converting official EDM2 pickles (synthetic ones in the official format, `tests/edm2_pickle_writer.py`): exact
float16 weights, the official network's numbers, the guide and the VAE, the generator's images from the saved folder,
`generate --preset edm2-*`, crafted files refused, and user mistakes as one-line errors with nothing written."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from diffusers_edm import EDMPipeline
from diffusers_edm.commands.convert import main as convert_main
from diffusers_edm.commands.generate import main as generate_main
from diffusers_edm.conversion.edm2_snapshot import read_edm2_snapshot
from diffusers_edm.convert_edm_checkpoint import UnsafeCheckpointError, convert_edm_checkpoint
from tests.edm2_pickle_writer import edm2_snapshot_object, official_state_dict, vae_encoder, write_edm2_snapshot
from tests.edm_pickle_writer import CraftedTensor, random_official_state_dict, write_edm_snapshot, write_pickle
from tests.helpers import edm2_case, edm2_conformance_file, reference_edm2_generator, tiny_vae
from tests.test_edm2_network import native_keys

NET_NAME, GUIDE_NAME = "edm2-img512-s-2147483-0.070.pkl", "edm2-img512-xs-0134217-0.125.pkl"  # the s-autog-fid files
NET_CONFIG = edm2_case("10_edm2_net_latent_cond")["config"]
GUIDE_CONFIG = edm2_case("13_edm2_sampler")["guide_config"]


def net_weights() -> dict[str, torch.Tensor]:
    return load_file(edm2_conformance_file("10_edm2_net_latent_cond.weights.safetensors"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("edm2")
    guide_weights = load_file(edm2_conformance_file("13_edm2_sampler.guide_weights.safetensors"))
    vae = tiny_vae()
    vae.save_pretrained(folder / "vae")
    return dict(
        net=write_edm2_snapshot(folder / NET_NAME, NET_CONFIG, net_weights()),
        guide=write_edm2_snapshot(folder / GUIDE_NAME, GUIDE_CONFIG, guide_weights),
        net32=write_edm2_snapshot(folder / "float32.pkl", NET_CONFIG, net_weights(), dtype=torch.float32),
        vae=folder / "vae",
    )


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted") / "pipe"
    return convert_edm_checkpoint(files["net"], output, guide=files["guide"], vae=files["vae"])


def test_float16_weights_are_kept_exactly(converted) -> None:
    official = native_keys(net_weights())
    state = converted.pipeline.unet.state_dict()
    assert state.keys() == official.keys()
    for key, value in official.items():
        assert torch.equal(state[key], value.half().float()), key
    guide_state = converted.pipeline.guide_unet.state_dict()
    guide = native_keys(load_file(edm2_conformance_file("13_edm2_sampler.guide_weights.safetensors")))
    assert all(torch.equal(guide_state[key], value.half().float()) for key, value in guide.items())


def test_converted_network_gives_the_official_numbers(files, tmp_path) -> None:
    """A float32 pickle of the conformance weights converts into the network of the `10_` vectors."""
    result = convert_edm_checkpoint(files["net32"], tmp_path / "pipe", vae=files["vae"])
    data = load_file(edm2_conformance_file("10_edm2_net_latent_cond.safetensors"))
    with torch.no_grad():
        output = result.pipeline.unet(data["x"], data["sigma"], class_labels=data["labels"], return_logvar=True)
    scale = data["D"].abs().max().item()
    assert (output.sample - data["D"]).abs().max().item() <= 1e-5 * scale
    assert torch.allclose(output.logvar.flatten(), data["logvar"].flatten(), atol=1e-5)


def test_folder_holds_the_preset_guide_vae_and_card(converted) -> None:
    folder = converted.output_dir
    assert converted.preset.name == "edm2-img512-s-autog-fid" and converted.pipeline.config.guidance_scale == 2.1
    settings = json.loads((folder / "sampler_settings.json").read_text())
    assert settings["num_inference_steps"] == 32 and settings["guidance_scale"] == 2.1
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["reference_sampler"] == "edm2" and scheduler["s_churn"] == 0
    vae = json.loads((folder / "vae" / "config.json").read_text())
    assert vae["latents_mean"] == [5.81, 3.25, 0.12, -2.15] and vae["latents_std"] == [4.17, 4.62, 3.71, 3.28]
    card = (folder / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "value: 1.34" in card and "autoguidance" in card
    assert NET_NAME in card and GUIDE_NAME in card and "w = 2.1" in card


def test_saved_folder_makes_the_generator_images(converted) -> None:
    pipe = EDMPipeline.from_pretrained(converted.output_dir)
    pipe.set_progress_bar_config(disable=True)
    seeds = [3, 2**32 + 5]
    images = pipe(seeds=seeds, num_inference_steps=4).images  # the saved guidance weight, 2.1
    reference, _, _ = reference_edm2_generator(pipe.unet, seeds, num_steps=4, guidance=2.1, gnet=pipe.guide_unet,
                                               vae=pipe.vae)
    assert np.array_equal(np.stack([np.asarray(image) for image in images]), reference.permute(0, 2, 3, 1).numpy())


def test_verify_checks_against_the_raw_tensors(files, tmp_path) -> None:
    result = convert_edm_checkpoint(files["net"], tmp_path / "pipe", vae=files["vae"], verify=True)
    assert result.verification.passed
    assert any("raw tensors" in line for line in result.verification.lines)


def test_pixel_model_converts_without_a_vae(tmp_path) -> None:
    config = edm2_case("10_edm2_net_pixel_uncond")["config"]
    path = write_edm2_snapshot(tmp_path / "edm2-img64-s-1073741-0.075.pkl", config, official_state_dict(config),
                               encoder="rgb")
    result = convert_edm_checkpoint(path, tmp_path / "pipe")
    assert result.pipeline.vae is None and result.preset.name == "edm2-img64-s-fid"
    images = EDMPipeline.from_pretrained(tmp_path / "pipe")(seeds=[0], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_recorded_encoder_arguments_are_read(tmp_path) -> None:
    contents = edm2_snapshot_object(NET_CONFIG, net_weights(),
                                    encoder=vae_encoder("my/vae", raw_mean=[1, 2, 3, 4], raw_std=[2, 2, 2, 2],
                                                        record_kwargs=True))
    snapshot = read_edm2_snapshot(write_pickle(tmp_path / "net.pkl", contents))
    assert snapshot.encoding.vae_name == "my/vae" and snapshot.encoding.raw_mean == [1, 2, 3, 4]
    assert snapshot.label_dim == 10 and snapshot.backbone_config["channels_per_head"] == 16


class _CodePayload:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_crafted_pickles_are_refused_and_nothing_is_written(tmp_path) -> None:
    contents = edm2_snapshot_object(NET_CONFIG, net_weights())
    contents["ema"].meta["state"]["_modules"]["unet"].meta["state"]["payload"] = _CodePayload()
    with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system"):
        convert_edm_checkpoint(write_pickle(tmp_path / "code.pkl", contents), tmp_path / "out")
    contents = edm2_snapshot_object(NET_CONFIG, net_weights())
    out_conv = contents["ema"].meta["state"]["_modules"]["unet"].meta["state"]["_modules"]["out_conv"]
    out_conv.meta["state"]["_parameters"]["weight"] = CraftedTensor(torch.zeros(1, dtype=torch.float16),
                                                                    (4, 16, 3, 3), (144, 9, 3, 1))
    with pytest.raises(UnsafeCheckpointError, match="unet.out_conv.weight"):
        convert_edm_checkpoint(write_pickle(tmp_path / "oversize.pkl", contents), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _nan_weights(tmp_path: Path) -> Path:
    weights = net_weights()
    weights["unet.out_conv.weight"][0, 0, 0, 0] = float("nan")
    return write_edm2_snapshot(tmp_path / "nan.pkl", NET_CONFIG, weights)


def _training_state(tmp_path: Path) -> Path:
    torch.save({"net": net_weights(), "optimizer_state": {}}, tmp_path / "training-state-0001.pt")
    return tmp_path / "training-state-0001.pt"


def _edm_snapshot(tmp_path: Path) -> Path:
    kwargs = dict(img_resolution=8, img_channels=4, label_dim=0, model_type="DhariwalUNet", model_channels=16,
                  channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0.0)
    return write_edm_snapshot(tmp_path / "edm.pkl", "EDMPrecond", kwargs,
                              random_official_state_dict("EDMPrecond", kwargs))


def _guide(tmp_path: Path, encoder: str = "vae", **changes) -> Path:
    config = {**GUIDE_CONFIG, **changes}
    return write_edm2_snapshot(tmp_path / "guide.pkl", config, official_state_dict(config), encoder=encoder)


def _three_channel_vae(tmp_path: Path) -> Path:
    tiny_vae(latent_channels=3).save_pretrained(tmp_path / "vae3")
    return tmp_path / "vae3"


def _absent_vae(tmp_path: Path) -> Path:
    contents = edm2_snapshot_object(NET_CONFIG, net_weights(), encoder=vae_encoder("diffusers-edm-tests/absent-vae"))
    return write_pickle(tmp_path / "net.pkl", contents)


MISTAKES = {
    # case: (arguments from the files and the tmp folder, expected text of the one error line)
    "training_state": (lambda f, t: [_training_state(t), "--vae", f["vae"]], "zip archive .*training-state"),
    "edm_pickle_with_guide": (lambda f, t: [_edm_snapshot(t), "--guide", f["guide"]], "--guide and --vae apply to"
                              " EDM2 models only"),
    "edm_guide": (lambda f, t: [f["net"], "--guide", _edm_snapshot(t), "--vae", f["vae"]], "not an EDM2 model"),
    "guide_resolution": (lambda f, t: [f["net"], "--guide", _guide(t, img_resolution=16), "--vae", f["vae"]],
                         "resolution 16 but the model 8"),
    "guide_classes": (lambda f, t: [f["net"], "--guide", _guide(t, label_dim=5), "--vae", f["vae"]],
                      "5 classes but the model 10"),
    "guide_space": (lambda f, t: [f["net"], "--guide", _guide(t, encoder="rgb"), "--vae", f["vae"]],
                    "different spaces"),
    "vae_channels": (lambda f, t: [f["net"], "--vae", _three_channel_vae(t)], "3 latent channels but the model"),
    "vae_offline": (lambda f, t: [_absent_vae(t)], "could not load the VAE .*--vae DIR"),
    "nan_weights": (lambda f, t: [_nan_weights(t), "--vae", f["vae"]], "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_mistakes_are_one_line_errors_and_nothing_is_written(case, files, tmp_path, capsys) -> None:
    arguments, text = MISTAKES[case]
    given = [str(argument) for argument in arguments(files, tmp_path)]
    assert convert_main([given[0], str(tmp_path / "out"), *given[1:]]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert error.startswith("python -m diffusers_edm.convert_edm_checkpoint: error:")
    assert __import__("re").search(text, error), error
    assert not (tmp_path / "out").exists()


def test_generate_preset_runs_the_generator_settings(converted, tmp_path, capsys) -> None:
    summary = generate_main(["--model", str(converted.output_dir), "--preset", "edm2-img512-s-autog-fid",
                             "--seeds", "0-1", "--outdir", str(tmp_path / "images")])
    assert summary.num_inference_steps == 32
    pipe = EDMPipeline.from_pretrained(converted.output_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(seeds=[0, 1], num_inference_steps=32, guidance_scale=2.1).images
    for seed, image in zip((0, 1), expected):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / f"{seed:06d}.png")), np.asarray(image))


def test_generate_preset_needs_the_guide(files, tmp_path, capsys) -> None:
    convert_edm_checkpoint(files["net"], tmp_path / "unguided", vae=files["vae"])
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--model", str(tmp_path / "unguided"), "--preset", "edm2-img512-s-autog-fid", "--seeds", "0",
                       "--outdir", str(tmp_path / "images")])
    assert exit_.value.code == 2
    assert "guides with edm2-img512-xs-0134217-0.125.pkl" in capsys.readouterr().err


def test_pickle_protocol_of_the_writer_is_the_default(files) -> None:
    assert files["net"].read_bytes()[:2] == pickle.dumps(None)[:2]


def test_fid_scores_the_decoded_images(converted) -> None:
    """`fid calc --model` scores what `generate` writes: for a latent model, the VAE's decoded pixels."""
    from diffusers_edm.evaluation.sources import generated_images

    pipe = EDMPipeline.from_pretrained(converted.output_dir)
    pipe.set_progress_bar_config(disable=True)
    scored = generated_images(pipe, [0, 1], num_inference_steps=2)
    expected = pipe(seeds=[0, 1], num_inference_steps=2).images
    assert scored.dtype == torch.uint8 and scored.shape == (2, 3, 16, 16)
    assert np.array_equal(scored.permute(0, 2, 3, 1).numpy(), np.stack([np.asarray(image) for image in expected]))
