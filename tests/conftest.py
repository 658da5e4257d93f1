"""Shared test fixtures: the repository root and the shared CIFAR-10 copy (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CIFAR_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"

# Under pytest-xdist (-n), the cores are shared among the workers: each worker and the scripts
# it starts get their share of threads instead of all of them (no oversubscription).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _threads = max(1, (_cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))


@pytest.fixture(autouse=True)
def _few_threads_and_seed():
    """Deterministic, two-core friendly tests."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def cifar_archive() -> Path:
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"shared CIFAR-10 copy not found at {CIFAR_ARCHIVE}")
    return CIFAR_ARCHIVE


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A train.py checkpoint of the full ResNet-20 after one epoch on 128 synthetic images."""
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY

    out = tmp_path_factory.mktemp("teacher")
    result = run_script("train.py", *TINY, "--model.depth=20", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    return str(out / "checkpoints" / "last.ckpt")
