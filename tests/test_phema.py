"""Post-hoc EMA (EDM2 Sec. 3): power-function EMA against its closed form, profile inner products against numerical
integration, reconstruction of tracked and untracked σ_rel, and the training/CLI integration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from diffusers_edm.pipelines.pipeline_edm import EDMPipeline
from diffusers_edm.reconstruct_phema import RECORD_NAME
from diffusers_edm.reconstruct_phema import main as reconstruct_main
from diffusers_edm.errors import TrainingError
from diffusers_edm.training.phema import (
    MAX_STD,
    PowerFunctionEMA,
    gamma_to_std,
    list_snapshots,
    profile_inner_products,
    reconstruct_state_dict,
    std_to_gamma,
)
from diffusers_edm.training.trainer import EDMTrainer, find_checkpoint

from .test_training import make_args


def test_std_gamma_round_trip_and_edm2_values():
    # EDM2's tracked profiles: σ_rel 0.05 ↔ γ ≈ 16.97, σ_rel 0.10 ↔ γ ≈ 6.94.
    assert std_to_gamma(0.05) == pytest.approx(16.9722, abs=1e-4)
    assert std_to_gamma(0.10) == pytest.approx(6.9372, abs=1e-4)
    for std in (0.01, 0.05, 0.13, 0.25, 0.288):
        assert gamma_to_std(std_to_gamma(std)) == pytest.approx(std, rel=1e-10)
    # γ = 0 is the uniform average, σ_rel = √(1/12).
    assert gamma_to_std(0.0) == pytest.approx(MAX_STD)
    for bad in (0.0, -0.1, 0.3):
        with pytest.raises(ValueError, match="σ_rel must lie in"):
            std_to_gamma(bad)


def _linear(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 2).to(dtype)


def test_power_function_ema_matches_closed_form():
    """With constant batch Δ and t_k = kΔ, Eq. 127 gives the average Σ_k w_k θ_k with
    w_k = (k^(γ+1) − (k−1)^(γ+1)) / n^(γ+1) after n steps (a telescoping product)."""
    model = _linear()
    stds = (0.05, 0.2)
    ema = PowerFunctionEMA(model, stds)
    batch, steps = 4, 200
    generator = torch.Generator().manual_seed(1)
    trajectory = []
    for k in range(1, steps + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.1)
        trajectory.append([p.detach().clone() for p in model.parameters()])
        ema.update(model, cur_nimg=k * batch, batch_size=batch)
    k = np.arange(1, steps + 1, dtype=np.float64)
    for index, std in enumerate(stds):
        g1 = std_to_gamma(std) + 1
        weights = (k**g1 - (k - 1) ** g1) / steps**g1
        assert weights.sum() == pytest.approx(1.0)
        for p_index, average in enumerate(ema.averages[index]):
            expected = sum(float(w) * theta[p_index] for w, theta in zip(weights, trajectory))
            torch.testing.assert_close(average, expected, rtol=1e-12, atol=1e-12)


def test_first_update_copies_the_network():
    model = _linear()
    ema = PowerFunctionEMA(model, [0.1])
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, cur_nimg=8, batch_size=8)
    assert torch.equal(ema.averages[0][0], model.weight)


def test_profile_inner_product_matches_numerical_integration():
    """⟨p_a, p_b⟩ = ∫ p_a p_b dτ with p(τ) = (γ+1) τ^γ / t^(γ+1) on [0, t] (Eq. 151)."""
    for t_a, g_a, t_b, g_b in [(100.0, 6.9, 100.0, 16.97), (60.0, 6.9, 100.0, 3.0), (100.0, 2.0, 40.0, 16.97)]:
        tau = np.linspace(0, min(t_a, t_b), 2_000_001)
        p_a = (g_a + 1) * tau**g_a / t_a ** (g_a + 1)
        p_b = (g_b + 1) * tau**g_b / t_b ** (g_b + 1)
        numeric = np.trapezoid(p_a * p_b, tau)
        assert float(profile_inner_products(t_a, g_a, t_b, g_b)) == pytest.approx(numeric, rel=1e-6)


def _train_synthetic(folder, stds, snapshot_every, steps=1600, batch=125):
    """Tracks `stds` on a smooth-plus-noise weight trajectory, storing snapshots every `snapshot_every` steps;
    returns the final averages and the model."""
    model = _linear(torch.float32)
    ema = PowerFunctionEMA(model, stds)
    generator = torch.Generator().manual_seed(2)
    start = [p.detach().clone() for p in model.parameters()]
    directions = [torch.randn(p.shape, generator=generator) for p in model.parameters()]
    for k in range(1, steps + 1):
        phase = k / steps
        with torch.no_grad():
            for p, p0, d in zip(model.parameters(), start, directions):
                noise = torch.randn(p.shape, generator=generator) * 0.05
                p.copy_(p0 + d * (math.sin(3 * phase) + phase**2) + noise)
        ema.update(model, k * batch, batch)
        if folder is not None and k % snapshot_every == 0:
            ema.save_snapshots(model, folder, k * batch)
    return ema, model


def test_reconstruction_returns_a_tracked_profile(tmp_path):
    ema, model = _train_synthetic(tmp_path, (0.05, 0.10), snapshot_every=100)
    snapshots = list_snapshots(tmp_path)
    assert len(snapshots) == 32 and snapshots[-1].nimg == 200_000
    for index, std in enumerate((0.05, 0.10)):
        state, coefficients = reconstruct_state_dict(snapshots, 200_000, std)
        for name, average in zip(ema.names, ema.averages[index]):
            torch.testing.assert_close(state[name], average, rtol=1e-5, atol=1e-6)
        assert coefficients.sum() == pytest.approx(1.0)


RECONSTRUCTION_TOLERANCE = 0.01
"""Stated bound: the reconstructed untracked EMA differs from one tracked directly by less than 1% of the distance
between the two tracked profiles (σ_rel 0.05 and 0.10), here on a smooth trajectory with noise, 16 snapshot times."""


def test_reconstruction_of_an_untracked_profile(tmp_path):
    tracked, _ = _train_synthetic(tmp_path, (0.05, 0.10), snapshot_every=100)
    direct, _ = _train_synthetic(None, (0.07, 0.15), snapshot_every=100)
    snapshots = list_snapshots(tmp_path)
    spread = sum(float((a - b).norm() ** 2) for a, b in zip(*tracked.averages)) ** 0.5
    for index, std in enumerate((0.07, 0.15)):
        state, _ = reconstruct_state_dict(snapshots, 200_000, std)
        error = sum(float((state[name] - average).norm() ** 2)
                    for name, average in zip(direct.names, direct.averages[index])) ** 0.5
        assert error < RECONSTRUCTION_TOLERANCE * spread, (std, error / spread)


def test_state_dict_round_trip_and_mismatch():
    model = _linear()
    ema = PowerFunctionEMA(model, (0.05, 0.1))
    ema.update(model, 4, 4)
    other = PowerFunctionEMA(_linear(), (0.05, 0.1))
    other.load_state_dict(ema.state_dict())
    for a, b in zip(ema.averages, other.averages):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="differ from this run's"):
        PowerFunctionEMA(_linear(), (0.05,)).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="first 3 decimals"):
        PowerFunctionEMA(model, (0.05, 0.0501))


PHEMA = ["--phema_stds", "0.05,0.10", "--phema_every", "1kimg"]


def test_training_with_phema_resumes_exactly_and_reconstructs(tmp_path):
    straight = tmp_path / "straight"
    EDMTrainer(make_args(straight, "--max_train_steps", "6", "--checkpointing_steps", "0", *PHEMA)).train()
    interrupted = tmp_path / "interrupted"
    EDMTrainer(make_args(interrupted, "--max_train_steps", "3", "--checkpointing_steps", "0", *PHEMA)).train()
    EDMTrainer(make_args(interrupted, "--max_train_steps", "6", "--checkpointing_steps", "0", *PHEMA,
                         "--resume_from_checkpoint", "latest")).train()
    names = sorted(path.name for path in (straight / "phema").iterdir())
    # 6 steps of 8 images: only the final snapshots (48 images, kimg 0).
    assert names == ["network-snapshot-0000000-0.050.safetensors", "network-snapshot-0000000-0.100.safetensors"]
    for name in ["phema.safetensors"]:
        a = load_file(find_checkpoint(str(straight), "latest") / name)
        b = load_file(find_checkpoint(str(interrupted), "latest") / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in names:
        a, b = load_file(straight / "phema" / name), load_file(interrupted / "phema" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)

    out = tmp_path / "recon"
    reconstruct_main(["--run", str(straight), "--std", "0.05", "--out", str(out)])
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["nimg"] == 48 and record["std"] == 0.05
    pipe = EDMPipeline.from_pretrained(out)
    tracked = load_file(straight / "phema" / "network-snapshot-0000000-0.050.safetensors")
    for name, value in pipe.unet.state_dict().items():
        torch.testing.assert_close(value, tracked[name], rtol=1e-5, atol=1e-6)


def test_phema_snapshot_times_and_sweep(tmp_path):
    run = tmp_path / "run"
    EDMTrainer(make_args(run, "--max_train_steps", "30", "--checkpointing_steps", "0", "--train_batch_size", "100",
                         "--model_channels", "4", "--phema_stds", "0.05,0.10", "--phema_every", "1kimg")).train()
    snapshots = list_snapshots(run / "phema")
    assert sorted({s.nimg for s in snapshots}) == [1000, 2000, 3000]  # every kimg (10 steps of 100 images), the end
    out = tmp_path / "sweep"
    folders = reconstruct_main(["--run", str(run), "--std", "0.03,0.2", "--out", str(out), "--at_kimg", "2"])
    assert [f.name for f in folders] == ["std-0.030", "std-0.200"]
    assert all((f / "unet" / "diffusion_pytorch_model.safetensors").is_file() for f in folders)


def test_snapshots_of_another_model_are_a_one_line_error(tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    EDMTrainer(make_args(run, "--max_train_steps", "1", "--checkpointing_steps", "0", *PHEMA)).train()
    EDMTrainer(make_args(other, "--max_train_steps", "1", "--checkpointing_steps", "0", "--model_channels", "4",
                         *PHEMA)).train()
    for path in (run / "phema").iterdir():
        path.unlink()
    for path in (other / "phema").iterdir():
        path.rename(run / "phema" / path.name)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        reconstruct_main(["--run", str(run), "--out", str(tmp_path / "o")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "do not fit the model" in errors[0]


def test_snapshots_less_than_a_kimg_apart_are_refused(tmp_path):
    with pytest.raises(TrainingError, match="at least 1kimg"):
        EDMTrainer(make_args(tmp_path, "--phema_stds", "0.05", "--phema_every", "100"))


def test_reconstruct_errors_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    EDMTrainer(make_args(run, "--max_train_steps", "1", "--checkpointing_steps", "0")).train()
    capsys.readouterr()
    cases = [
        (["--run", str(run), "--std", "0.05", "--out", str(tmp_path / "o")], "holds no post-hoc EMA snapshots"),
        (["--run", str(tmp_path / "missing"), "--std", "0.05", "--out", str(tmp_path / "o")], "not a pipeline folder"),
        (["--run", str(run), "--std", "0.4", "--out", str(tmp_path / "o")], "σ_rel must lie in"),
        (["--run", str(run), "--std", "0.05", "--out", str(run)], "holds no post-hoc EMA snapshots"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            reconstruct_main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
