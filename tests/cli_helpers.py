"""Run the entry scripts as a user does: a subprocess from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }


def run_script(
    script: str,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=script_env(env),
    )


def start_script(
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    capture: bool = False,
    niceness: int = 0,
) -> subprocess.Popen:
    """Start a script in the background; ``capture`` keeps its stderr (text) for the test;
    ``niceness`` lowers its priority (a run that only has to be alive yields the cores to the
    test's other processes and to the suite's other workers)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
        env=script_env(env),
    )
    if niceness:  # set from here, not in preexec_fn (unsafe in a process with threads)
        os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
    return proc


QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
