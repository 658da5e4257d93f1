"""The three entry points end to end, as a user runs them, on a small stratified subset of the
shared CIFAR-10 copy (synthetic data when the copy is absent)."""

from __future__ import annotations

import csv
import json
import random
import signal
import time

import pytest
import torch

import tas
from tests.cli_helpers import QUIET, run_script, start_script
from tests.conftest import CIFAR_ARCHIVE


def data_args() -> list[str]:
    if CIFAR_ARCHIVE.exists():
        return [
            "--data.name=cifar10",
            f"--data.root={CIFAR_ARCHIVE}",
            "--data.train_subset=600",
            "--data.val_subset=200",
            "--data.test_subset=500",
        ]
    return [
        "--data.name=synthetic",
        "--data.synthetic_train_size=600",
        "--data.synthetic_test_size=200",
    ]


COMMON = [
    *QUIET,
    "--model.depth=20",
    "--data.batch_size=64",
    "--seed=3",
    "--trainer.log_every_n_steps=1",
]


def test_train_search_distill_end_to_end(tmp_path):
    teacher = run_script(
        "train.py",
        *COMMON,
        *data_args(),
        "--trainer.max_epochs=1",
        f"--out={tmp_path / 'teacher'}",
        "--logger=csv",
    )
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    ckpt = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()

    search = run_script(
        "train_search.py",
        *COMMON,
        *data_args(),
        "--trainer.max_epochs=2",
        "--model.ratio=0.5",
        f"--out={tmp_path / 'search'}",
    )
    assert search.returncode == 0, search.stderr[-3000:]
    out = tmp_path / "search"
    arch = tas.Arch.load(out / "found.json")
    full = tas.Arch.full(arch.space).macs
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["macs"] == arch.macs == tas.count_macs(tas.build_model(arch))
    if summary["in_band"]:
        assert 0.45 * full <= arch.macs <= 0.5 * full
    else:  # two epochs may not reach the band: then the summary says so
        assert "OUTSIDE" in search.stdout
    assert "found.json" in search.stdout and "MACs" in search.stdout
    assert (out / "checkpoints" / "last.ckpt").exists()
    # found.init.ckpt: the found network on the supernet's final shared weights, what
    # `train.py --init inherit --init_from` fine-tunes
    assert arch.search["init_ckpt"] == "found.init.ckpt"
    from lightning_modules.classify import ClassifyModule
    from lightning_modules.search import SearchModule

    supernet = SearchModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt").net
    expected = supernet.compact(arch).state_dict()
    module = ClassifyModule(arch=str(out / "found.json"), init="inherit",
                            init_from=str(out / "found.init.ckpt"))  # fmt: skip
    assert module.model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in module.model.state_dict().items())
    assert (out / "config.yaml").exists() and (out / "distributions.png").exists()
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run directory"
    with open(out / "logs" / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    for key in (
        "train/ce",
        "search/arch_ce",
        "search/cost_loss",
        "search/expected_macs",
        "search/argmax_macs",
        "search/target_macs",
        "search/tau",
        "val/acc",
        "lr",
    ):
        assert key in columns, key

    distill = run_script(
        "distill.py",
        *COMMON,
        *data_args(),
        "--trainer.max_epochs=1",
        f"--arch={out / 'found.json'}",
        f"--teacher={ckpt}",
        f"--out={tmp_path / 'distill'}",
        "--logger=csv",
    )
    assert distill.returncode == 0, distill.stderr[-3000:]
    results = json.loads((tmp_path / "distill" / "results.json").read_text())
    assert 0.0 <= results["test_acc"] <= 1.0
    assert results["macs"] == arch.macs and results["params"] == arch.params
    assert results["teacher_test_acc"] is not None
    assert results["device"] == tas.latency.device_name(torch.device("cpu"))
    assert "teacher test accuracy" in distill.stdout + distill.stderr


# SIGTERM by default (the preemption path, and the same byte-for-byte resume); SIGKILL under
# -m slow: the same resume path, another minute
@pytest.mark.parametrize("sig", [pytest.param("SIGKILL", marks=pytest.mark.slow), "SIGTERM"])
def test_search_killed_and_resumed_ends_with_the_same_found_json(tmp_path, sig):
    """SIGKILL (a crash) or SIGTERM (preemption) at a random moment after the first checkpoint;
    SIGTERM ends with exit code 143 and says how to resume; --resume must finish with the
    found.json of the uninterrupted run, byte for byte."""
    args = [
        *COMMON,
        "--data.name=synthetic",
        "--data.synthetic_train_size=256",  # 8 steps an epoch at batch 16: seconds an epoch
        "--data.batch_size=16",
        "--data.synthetic_test_size=128",
        "--logger=csv",
        "--model.ratio=0.5",
        "--trainer.max_epochs=4",
    ]
    whole = run_script("train_search.py", *args, f"--out={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "killed"
    proc = start_script("train_search.py", *args, f"--out={out}", capture=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.5))  # somewhere in the next epoch
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=120)
    if sig == "SIGTERM":
        assert proc.returncode == 143, stderr[-2000:]
        assert "Stopped by SIGTERM" in stderr and "--resume" in stderr
    assert last.exists() and not (out / "found.json").exists(), "the run was not cut short"
    assert not list(out.rglob("*.tmp")), "a half-written file was left behind"
    clocks = torch.load(last, weights_only=False)["callbacks"]
    before = next(v["seconds"] for k, v in clocks.items() if "WallClock" in k)

    resumed = run_script("train_search.py", *args, f"--out={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "found.json").read_bytes() == (tmp_path / "whole" / "found.json").read_bytes()
    # the reported wall time covers both sittings
    summary = json.loads((out / "search_summary.json").read_text())
    assert 0 < before < summary["wall_time_s"]


@pytest.mark.parametrize("script", ["train.py", "train_search.py", "distill.py"])
def test_help_works(script):
    result = run_script(script, "--help", timeout=120)
    assert result.returncode == 0 and "--out" in result.stdout


def test_export_writes_a_loadable_folder_and_onnx_matches(tmp_path, teacher):
    """export.py on a train.py checkpoint: found.json + tensors-only weights + ONNX whose
    outputs match PyTorch's (ONNX Runtime); tas.load_model rebuilds the same network; a
    checkpoint of another network is one line, exit 2, nothing written."""
    pytest.importorskip("onnxruntime")
    found = tmp_path / "found.json"
    tas.Arch.full(tas.SearchSpace.cifar_resnet(20)).save(found)
    out = tmp_path / "export"
    done = run_script("export.py", "--arch", str(found), "--ckpt", teacher, "--out", str(out),
                      "--torchscript")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "found.json", "model.onnx", "model.ts", "weights.pt"
    ]  # fmt: skip
    assert "ONNX Runtime matches PyTorch within" in done.stdout
    model = tas.load_model(out / "found.json", out / "weights.pt")
    from lightning_modules.teacher import load_teacher

    reference, _ = load_teacher(teacher)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        torch.testing.assert_close(torch.jit.load(str(out / "model.ts"))(x), reference(x))
    other = tmp_path / "other.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(20), 0.5).save(other)
    bad = run_script("export.py", "--arch", str(other), "--ckpt", teacher,
                     "--out", str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 2 and "holds another network" in bad.stderr
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))
