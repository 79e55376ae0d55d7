"""benchmarks/throughput.py in its smallest CPU configuration: JSON lines with the required fields and the table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"

REQUIRED = ("kind", "task", "model", "config", "batch", "dtype", "channels_last", "compile", "cuda_graphs", "device",
            "device_name", "torch", "status")
MEASURED = ("img_per_s", "peak_memory_gib", "compile_s", "warmup_s", "steady_s", "params")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("throughput")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--small", "--models", "cifar10-ddpmpp,ddpm-cifar10-32",
         "--sample_batch", "1", "--train_batch", "2",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return out, process


def test_json_lines(run):
    out, process = run
    stdout_records = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    file_records = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert stdout_records == file_records and file_records
    for record in file_records:
        assert all(key in record for key in REQUIRED), record
        assert record["device"] == "cpu" and record["status"] in ("ok", "skipped"), record
    measured = [r for r in file_records if r["status"] == "ok"]
    # sampling and training of the EDM network, sampling of the diffusers baseline, each in fp32 and bf16 at least
    kinds = {(r["task"], r["model"], r["dtype"]) for r in measured}
    assert {("sample", "cifar10-ddpmpp", "fp32"), ("sample", "cifar10-ddpmpp", "bf16"),
            ("train", "cifar10-ddpmpp", "fp32"), ("train", "cifar10-ddpmpp", "bf16"),
            ("sample", "ddpm-cifar10-32", "fp32")} <= kinds
    for record in measured:
        assert all(key in record for key in MEASURED), record
        assert record["img_per_s"] > 0 and record["peak_memory_gib"] is None  # no CUDA memory on the CPU
        if record["task"] == "sample":
            assert record["evaluations_per_image"] == 35
    # CUDA-only settings are reported as skipped, with the reason
    skipped = [r for r in file_records if r["status"] == "skipped"]
    assert any(r["cuda_graphs"] for r in skipped) and all(r["reason"] for r in skipped)
    # the non-exact configurations are compared with the exact path's images
    compared = [r for r in measured if r["task"] == "sample" and r["dtype"] == "bf16"]
    assert compared and all(0 <= r["equiv_frac_within_1_255"] <= 1 for r in compared)
    exact_layout = [r for r in measured if r["task"] == "sample" and r["config"] == "fp32+channels_last"]
    assert exact_layout and all(r["equiv_frac_within_1_255"] > 0.99 for r in exact_layout)


def test_table(run):
    out, process = run
    table = (out / "throughput.md").read_text()
    assert "| task | model | configuration | batch | img/s |" in table
    assert "official EDM code, H100" in table and "| 1534 |" in table  # the reference rows
    assert "cifar10-ddpmpp | bf16 |" in table and "ddpm-cifar10-32 | fp32 |" in table
    assert "within 1/255" in table and "# equivalence:" in process.stderr
