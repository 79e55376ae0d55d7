"""`python -m diffusers_edm.fid`: reference statistics of every training source, `calc` on image folders (fid.py's
subset rule) and on models (bit-identical to generating PNGs first), the repeats protocol, two processes against one,
the JSON result, and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from diffusers_edm.fid import main
from diffusers_edm.generate import main as generate_main
from diffusers_edm.data import DataConfig, build_dataset

from .evaluation_helpers import mean_and_covariance, random_images, tiny_features, write_detector, write_images
from .test_generate import save_tiny_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return str(write_detector(tmp_path_factory.mktemp("detector") / "tiny.pt"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"), channels=3, num_class_labels=3)


def fd(mu1, sigma1, mu2, sigma2):
    """The Fréchet distance written out in the test (scipy's sqrtm, real part)."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root)))


def run(*args):
    return main([*args, "--device", "cpu", "--workers", "0"])


def launch(args, num_processes, env_extra=None):
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    if num_processes > 1:
        command += ["--multi_gpu", "--num_processes", str(num_processes)]
        env["ACCELERATE_USE_CPU"] = "true"
    else:
        command += ["--cpu", "--num_processes", "1"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffusers_edm.fid",
                *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)


def test_ref_of_an_image_folder_is_the_mean_and_covariance_of_its_features(detector, tmp_path):
    images = random_images(40)
    folder = write_images(tmp_path / "data", images)
    run("ref", "--data", str(folder), "--dest", str(tmp_path / "ref.npz"), "--detector", detector, "--batch", "16")
    with np.load(tmp_path / "ref.npz") as data:
        expected = mean_and_covariance(tiny_features(images))
        np.testing.assert_allclose(data["mu"], expected[0], rtol=1e-5)
        np.testing.assert_allclose(data["sigma"], expected[1], rtol=1e-4, atol=1e-8)


def test_ref_of_the_digits_uses_every_image_once_as_8_bit_pixels(detector, tmp_path):
    run("ref", "--dest", str(tmp_path / "digits.npz"), "--detector", detector, "--batch", "512")
    dataset = build_dataset(DataConfig(conditional=False))
    pixels = np.stack([dataset[i][0].numpy() for i in range(len(dataset))])
    assert pixels.shape == (1797, 1, 16, 16)
    uint8 = np.floor(np.clip(pixels * 127.5 + 128, 0, 255)).astype(np.uint8)
    expected = mean_and_covariance(tiny_features(np.repeat(uint8, 3, axis=1)))
    with np.load(tmp_path / "digits.npz") as data:
        np.testing.assert_allclose(data["mu"], expected[0], rtol=1e-5)


def test_calc_on_images_scores_the_seeded_subset_against_the_reference(detector, tmp_path):
    reference, images = random_images(30, seed=1), random_images(25, seed=2)
    write_images(tmp_path / "real", reference)
    write_images(tmp_path / "fake", images)
    run("ref", "--data", str(tmp_path / "real"), "--dest", str(tmp_path / "ref.npz"), "--detector", detector)
    result = run("calc", "--images", str(tmp_path / "fake"), "--ref", str(tmp_path / "ref.npz"), "--num", "20",
                 "--seed", "3", "--detector", detector, "--out", str(tmp_path / "metrics.json"))
    order = np.arange(25)
    np.random.RandomState(3).shuffle(order)
    chosen = images[np.sort(order[:20])]
    expected = fd(*mean_and_covariance(tiny_features(chosen)), *mean_and_covariance(tiny_features(reference)))
    assert result["value"] == pytest.approx(expected, rel=1e-4)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["metric"] == "fd" and written["num_images"] == 20
    assert written["value"] == result["value"] and written["values"] == [result["value"]]


def test_calc_model_equals_generating_pngs_then_scoring_them_bit_for_bit(detector, model, tmp_path, capsys):
    run("ref", "--data", str(write_images(tmp_path / "real", random_images(30, size=8))), "--dest",
        str(tmp_path / "ref.npz"), "--detector", detector)
    generate_main(["--model", str(model), "--outdir", str(tmp_path / "png"), "--seeds", "0-9", "--steps", "3",
                   "--device", "cpu", "--subdirs"])
    from_files = run("calc", "--images", str(tmp_path / "png"), "--ref", str(tmp_path / "ref.npz"), "--num", "10",
                     "--detector", detector, "--batch", "4")
    from_model = run("calc", "--model", str(model), "--ref", str(tmp_path / "ref.npz"), "--seeds", "0-9", "--steps",
                     "3", "--detector", detector, "--batch", "4")
    assert from_model["value"] == from_files["value"] and from_model["num_images"] == 10
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{from_model['value']:g}"  # the result comes last


def test_repeats_score_shifted_seed_sets_and_report_the_minimum(detector, model, tmp_path):
    run("ref", "--data", str(write_images(tmp_path / "real", random_images(30, size=8))), "--dest",
        str(tmp_path / "ref.npz"), "--detector", detector)
    common = ["--ref", str(tmp_path / "ref.npz"), "--steps", "2", "--detector", detector, "--model", str(model)]
    result = run("calc", *common, "--seeds", "0-5", "--repeats", "3")
    assert result["sets"] == ["seeds 0-5", "seeds 6-11", "seeds 12-17"]
    assert result["value"] == min(result["values"]) and len(set(result["values"])) == 3
    assert run("calc", *common, "--seeds", "12-17")["value"] == result["values"][2]


def test_two_processes_give_the_same_numbers_as_one(detector, model, tmp_path):
    folder = write_images(tmp_path / "data", random_images(22, channels=1, seed=4))
    outputs, scores = {}, {}
    for processes in (1, 2):
        result = launch(["ref", "--data", str(folder), "--dest", str(tmp_path / f"ref{processes}.npz"),
                         "--detector", detector, "--batch", "4", "--workers", "0"], processes)
        assert result.returncode == 0, result.stderr[-2000:]
        with np.load(tmp_path / f"ref{processes}.npz") as data:
            outputs[processes] = data["mu"], data["sigma"]
        result = launch(["calc", "--model", str(model), "--seeds", "0-10", "--steps", "2", "--batch", "3",
                         "--ref", str(tmp_path / "ref1.npz"), "--detector", detector, "--out",
                         str(tmp_path / f"metrics{processes}.json")], processes)
        assert result.returncode == 0, result.stderr[-2000:]
        scores[processes] = json.loads((tmp_path / f"metrics{processes}.json").read_text())["value"]
    assert np.array_equal(outputs[1][0], outputs[2][0]) and np.array_equal(outputs[1][1], outputs[2][1])
    assert scores[1] == scores[2]


def one_line_error(args, env_extra=None):
    """Runs the CLI as a user would; returns its error line (asserting exit status 2, no traceback, nothing else
    printed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "diffusers_edm.fid", *args, "--device", "cpu"], capture_output=True,
                            text=True, timeout=300, env=env, cwd=REPO_ROOT)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def scored_folder(tmp_path_factory, detector):
    folder = tmp_path_factory.mktemp("bad")
    write_images(folder / "fake", random_images(6))
    run("ref", "--data", str(write_images(folder / "real", random_images(20))), "--dest", str(folder / "ref.npz"),
        "--detector", detector)
    return folder


def test_bad_input_is_one_line_without_traceback(scored_folder, detector, tmp_path):
    folder = scored_folder
    calc = ["calc", "--images", str(folder / "fake"), "--detector", detector, "--num", "6"]
    np.savez(tmp_path / "mu_only.npz", mu=np.zeros(16))
    assert "no 'sigma'" in one_line_error([*calc, "--ref", str(tmp_path / "mu_only.npz")])
    np.savez(tmp_path / "wide.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    assert "gives 16 features" in one_line_error([*calc, "--ref", str(tmp_path / "wide.npz")])
    assert "fewer than --num 50000" in one_line_error(
        ["calc", "--images", str(folder / "fake"), "--detector", detector, "--ref", str(folder / "ref.npz")])
    (folder / "fake" / "000099.png").write_bytes(b"not an image")
    try:
        assert "000099.png" in one_line_error([*calc, "--num", "7", "--ref", str(folder / "ref.npz")])
    finally:
        (folder / "fake" / "000099.png").unlink()
    message = one_line_error([*calc[:3], "--ref", str(folder / "ref.npz")], {"HF_HOME": str(tmp_path / "hf")})
    assert "inception-2015-12-05.pt" in message and "--detector_path" in message
