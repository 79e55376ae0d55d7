"""Shared test setup: offline Hub, deterministic threads, and access to the conformance vectors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_cpu_thread():
    """The networks and tensors in the tests are tiny: one intra-op thread is faster, deterministic, and does not
    stall when another process shares the CPU (two OpenMP threads made tiny forward passes ~100x slower then)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
