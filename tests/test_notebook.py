"""notebooks/walkthrough.ipynb runs end to end in a kernel on this interpreter (about 45 s on
one core)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
# jupyter_client starts a kernel whose argv[0] is one of these with sys.executable instead
_BARE_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}


def _python3_runs_this_interpreter() -> bool:
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return False
    cmd = spec.argv[0]
    return cmd in _BARE_PYTHON or os.path.abspath(cmd) == os.path.abspath(sys.executable)


def _use_temp_kernelspec(tmp_path, monkeypatch) -> None:
    """A python3 kernelspec starting sys.executable, first on JUPYTER_PATH (nothing installed)."""
    data = tmp_path / "jupyter"
    spec = data / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(data))


def test_walkthrough_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), (
        "commit the notebook without outputs"
    )

    # the kernel inherits this environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    if not _python3_runs_this_interpreter():
        _use_temp_kernelspec(tmp_path, monkeypatch)
        assert _python3_runs_this_interpreter()
    work = tmp_path / "work"
    work.mkdir()

    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError at the first cell that raises

    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "full arch.macs 40,813,184" in text  # the full ResNet-20, as in the README's table
    assert "test accuracy" in text  # reached the last cell
