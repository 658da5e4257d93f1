"""Repeatability and interruption: same seed, same results; Ctrl-C says how to resume."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from tests.cli_helpers import QUIET, run_script, start_script

TINY = [
    *QUIET,
    "--logger=csv",
    "--data.name=synthetic",
    "--data.synthetic_train_size=256",
    "--data.synthetic_test_size=128",
    "--data.batch_size=64",
    "--model.depth=20",
]


def final_weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow  # ~50 s; the resume tests compare found.json byte for byte by default
def test_two_training_runs_with_one_seed_agree_bitwise(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run = run_script(
            "train.py",
            *TINY,
            "--trainer.max_epochs=2",
            f"--seed={seed}",
            f"--out={tmp_path / name}",
        )
        assert run.returncode == 0, run.stderr[-2000:]
    a, b, c = (final_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters
    acc = [json.loads((tmp_path / n / "results.json").read_text())["test_acc"] for n in "ab"]
    assert acc[0] == acc[1]


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_resume_finishes(tmp_path):
    args = [*TINY, "--data.synthetic_train_size=1024", "--trainer.max_epochs=4"]
    out = tmp_path / "run"
    proc = start_script("train_search.py", *args, f"--out={out}", capture=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Resume with" in stderr and "--resume" in stderr
    assert not (out / "found.json").exists()
    resumed = run_script("train_search.py", *args, f"--out={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "found.json").exists()


def test_one_run_per_directory(tmp_path):
    """A second process on a running run's --out is refused at once, in one line; a killed
    run leaves no stuck lock; another --out runs alongside."""
    args = [*TINY, "--data.synthetic_train_size=1024", "--trainer.max_epochs=50"]
    out = tmp_path / "run"
    # this run only holds the lock: niced, it leaves the cores to the runs under test
    proc = start_script("train_search.py", *args, f"--out={out}", niceness=19)
    try:
        deadline = time.time() + 120
        while not (out / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.05)
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = run_script("train_search.py", *args, f"--out={out}", *extra)
            assert second.returncode == 2, second.stderr[-2000:]
            errors = [ln for ln in second.stderr.splitlines() if ": error: " in ln]
            assert len(errors) == 1 and "in use by another run" in errors[0], second.stderr
            assert f"pid {proc.pid}" in errors[0]
        one = [*TINY, "--trainer.max_epochs=1"]
        other = run_script("train_search.py", *one, f"--out={tmp_path / 'other'}")
        assert other.returncode == 0, other.stderr[-2000:]
    finally:
        proc.kill()
        proc.wait()
    one = [*TINY, "--trainer.max_epochs=1"]
    again = run_script("train_search.py", *one, f"--out={out}", "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]  # the killed run's lock died with it


def test_resume_skips_a_truncated_last_checkpoint(tmp_path):
    """A last.ckpt cut short by a crash: --resume warns and continues from the epoch checkpoint
    beside it; with no intact checkpoint it stops in one line (exit 2)."""
    out = tmp_path / "run"
    first = run_script("train.py", *TINY, "--trainer.max_epochs=1", f"--out={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "results.json").unlink()  # as if the run had been stopped after its first epoch
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    resumed = run_script("train.py", *TINY, "--trainer.max_epochs=2", f"--out={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "last.ckpt" in resumed.stderr and "resuming from epoch000.ckpt" in resumed.stderr
    assert json.loads((out / "results.json").read_text())["epochs"] == 2
    (out / "results.json").unlink()
    for path in (out / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"garbage")
    broken = run_script("train.py", *TINY, "--trainer.max_epochs=3", f"--out={out}", "--resume")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    errors = [ln for ln in broken.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0], broken.stderr


def test_full_disk_at_a_checkpoint_write_keeps_the_last_one_and_resumes(
    tmp_path, monkeypatch, capsys
):
    """ENOSPC injected at the first checkpoint write of epoch 1: one line naming the file and
    the cause, exit 2, epoch 0's checkpoint intact, no temp file; --resume after "space is
    freed" finishes the run."""
    import errno

    import train
    from lightning_modules import cli
    from lightning_modules.classify import ClassifyModule

    out = tmp_path / "run"
    args = [a for a in TINY if a != "--logger=csv"] + ["--logger=false", f"--out={out}"]
    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(f)
        if len(calls) >= 3:  # epoch 0 wrote epoch000.ckpt and last.ckpt
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    def run(*extra: str) -> int:
        try:
            cli.main(train.TrainCLI, ClassifyModule, "train.py", "runs/train", train.finish,
                     argv=[*args, *extra])  # fmt: skip
        except SystemExit as exit:
            return exit.code
        return 0

    monkeypatch.setattr(torch, "save", full_disk)
    assert run("--trainer.max_epochs=3") == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln]
    assert len(errors) == 1, errors
    assert "last.ckpt" in errors[0] or "epoch001.ckpt" in errors[0]
    assert "No space left on device" in errors[0]
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 0 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    assert run("--trainer.max_epochs=3", "--resume") == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 3
