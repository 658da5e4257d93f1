"""Every user-caused failure of the entry points: one line on stderr naming the problem, exit code
2, no traceback, no partial output file. Run as a user would, in a subprocess."""

from __future__ import annotations

import json

import pytest
import torch

import tas
from tests.cli_helpers import QUIET, run_script

TINY = [
    *QUIET,
    "--logger=false",
    "--data.name=synthetic",
    "--data.synthetic_train_size=128",
    "--data.synthetic_test_size=64",
    "--data.batch_size=64",
    "--trainer.max_epochs=1",
]


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("arch") / "found.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(20), 0.5).save(path)
    return str(path)


def assert_user_error(result, *needles: str) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]


def write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_bad_found_json_files(tmp_path, teacher):
    full = tas.Arch.full(tas.SearchSpace.cifar_resnet(20)).to_dict()
    wrong_width = {**full, "widths": {**full["widths"], "stem": 99}}
    cases = {
        "missing.json": None,
        "truncated.json": json.dumps(full)[:40],
        "notjson.json": "this is not json",
        "format.json": json.dumps({**full, "format": "other/2"}),
        "range.json": json.dumps(wrong_width),
    }
    needles = {
        "missing.json": "no such file",
        "truncated.json": "not valid JSON",
        "notjson.json": "not valid JSON",
        "format.json": "unknown format",
        "range.json": "outside 1..16",
    }
    for name, content in cases.items():
        path = str(tmp_path / name) if content is None else write(tmp_path, name, content)
        out = tmp_path / f"run-{name}"
        result = run_script(
            "distill.py", *TINY, f"--arch={path}", f"--teacher={teacher}", f"--out={out}"
        )
        assert_user_error(result, name, needles[name])
        assert not out.exists(), "a failed run left files behind"


def test_found_json_for_another_network_than_the_teacher(tmp_path, teacher):
    other = tmp_path / "r32.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(32), 0.5).save(other)
    result = run_script(
        "distill.py", *TINY, f"--arch={other}", f"--teacher={teacher}", f"--out={tmp_path / 'o'}"
    )
    assert_user_error(result, "teacher", "cifar_resnet-20", "cifar_resnet-32")
    hundred = tmp_path / "c100.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(20, num_classes=100), 0.5).save(hundred)
    result = run_script(
        "distill.py", *TINY, f"--arch={hundred}", f"--teacher={teacher}", f"--out={tmp_path / 'o2'}"
    )
    assert_user_error(result, "100 classes", "10")


def test_bad_teacher_checkpoints(tmp_path, found):
    missing = str(tmp_path / "none.ckpt")
    corrupt = write(tmp_path, "corrupt.ckpt", b"\x00garbage" * 50)
    foreign = str(tmp_path / "foreign.ckpt")
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    for path, needle in (
        (missing, "no such file"),
        (corrupt, "cannot be read"),
        (foreign, "not a train.py checkpoint"),
    ):
        result = run_script(
            "distill.py", *TINY, f"--arch={found}", f"--teacher={path}", f"--out={tmp_path / 'o'}"
        )
        assert_user_error(result, needle)
    result = run_script("distill.py", *TINY, f"--arch={found}", f"--out={tmp_path / 'o'}")
    assert_user_error(result, "needs --teacher")


@pytest.mark.parametrize(
    "ratio,needle",
    [("0", "(0, 1]"), ("1.5", "(0, 1]"), ("-1", "(0, 1]"), ("0.01", "smallest network")],
)
def test_bad_ratios(tmp_path, ratio, needle):
    result = run_script(
        "train_search.py",
        *TINY,
        "--model.depth=20",
        f"--model.ratio={ratio}",
        f"--out={tmp_path / 'o'}",
    )
    assert_user_error(result, needle)


def test_missing_and_corrupt_dataset(tmp_path):
    corrupt = write(tmp_path, "data.tar.gz", b"\x1f\x8b" + b"\x00" * 2000)
    missing = str(tmp_path / "nowhere")
    for root in (corrupt, missing):
        result = run_script(
            "train.py",
            *QUIET,
            "--logger=false",
            "--data.name=cifar10",
            f"--data.root={root}",
            f"--out={tmp_path / 'o'}",
        )
        assert_user_error(result, root)
        assert not (tmp_path / "o" / "results.json").exists()


def test_unknown_config_key(tmp_path):
    result = run_script("train.py", "--model.no_such_key=3", f"--out={tmp_path / 'o'}")
    assert_user_error(result, "no_such_key")
    config = write(tmp_path, "c.yaml", "model:\n  depht: 20\n")
    result = run_script("train.py", f"--config={config}", f"--out={tmp_path / 'o'}")
    assert_user_error(result, "depht")


def test_finished_run_directory_is_refused_unless_asked(tmp_path, teacher):
    out = tmp_path / "done"
    out.mkdir()
    (out / "results.json").write_text("{}")
    result = run_script("train.py", *TINY, f"--out={out}")
    assert_user_error(result, "finished run", "--overwrite")
    result = run_script("train.py", *TINY, f"--out={out}", "--resume")
    assert_user_error(result, "--resume")
    result = run_script("train.py", *TINY, "--model.depth=20", f"--out={out}", "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["macs"] == 40_813_184


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    result = run_script(
        "train.py",
        *TINY,
        "--model.depth=20",
        "--model.lr=1e30",
        "--data.synthetic_train_size=512",
        f"--out={tmp_path / 'o'}",
    )
    assert_user_error(result, "nan")
