"""benchmarks/: search_step.py's profile op categories and its --official error without the
authors' code, and short smoke runs of the benchmarks (they, not these tests, are the
measurement)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import tas
import tas.compact
from benchmarks import search_step as bench
from tests.conftest import ROOT

SMOKE = ["--depths", "14", "--batches", "2", "--repeats", "1", "--threads", "1"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.search_step", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_op_categories_from_names_and_call_chains():
    ops = [
        ("aten::mkldnn_convolution", 10.0),
        (("aten::empty", "aten::mkldnn_convolution", "aten::convolution"), 1.0),
        ("aten::convolution_backward", 20.0),
        ("autograd::engine::evaluate_function: ConvolutionBackward0", 0.5),
        ("aten::native_batch_norm", 3.0),
        ("aten::native_batch_norm_backward", 4.0),
        ("aten::index_select", 2.0),
        (("aten::index_add_", "aten::index_select_backward", "IndexSelectBackward0"), 1.0),
        ("aten::adaptive_avg_pool3d", 5.0),
        ("aten::mul", 6.0, True),  # mixing a batch of feature maps
        ("aten::mul", 0.25, False),  # the cost model's small tensors
        (("aten::sum", "MulBackward0"), 1.5, True),  # the mix's backward
        (("aten::fill_", "aten::zero_", "aten::zeros", "aten::slice_backward"), 0.75),
        ("aten::constant_pad_nd", 0.25),
        ("aten::relu_", 0.5),
        (("aten::threshold_backward", "ReluBackward0"), 0.5),
        ("aten::_softmax", 0.125, False),
        ("aten::multinomial", 0.125),
        (("aten::_log_softmax", "aten::log_softmax", "aten::cross_entropy_loss"), 0.1, True),
        (("aten::_foreach_add_", "Optimizer.step#SGD.step"), 2.0),
        (("aten::mul", "Optimizer.step#Adam.step"), 1.0, True),  # in a step: optimizer
        (("aten::add_", "torch::autograd::AccumulateGrad"), 0.4, False),
        ("aten::addmm", 0.3),
        ("aten::bitwise_not", 0.2, False),  # no pattern, no batch: arch-side bookkeeping
        ("aten::avg_pool2d", 0.7, True),  # no pattern: other
        (bench.ITERATION, 7.0),
    ]
    got = bench.group_times(ops)
    assert set(got) == set(bench.CATEGORIES)
    assert got == pytest.approx(
        {
            bench.CONV_FWD: 11.0,
            bench.CONV_BWD: 20.5,
            bench.BN: 7.0,
            bench.CWI: 8.0,
            bench.MIX: 7.5,
            bench.SLICE: 1.0,
            bench.RELU: 1.0,
            bench.ARCH: 0.25 + 0.125 + 0.125 + 0.2,
            bench.OPTIM: 3.0,
            bench.OTHER: 0.1 + 0.4 + 0.3 + 0.7,
            bench.PYTHON: 7.0,
        }
    )
    assert sum(got.values()) == pytest.approx(sum(op[1] for op in ops))
    assert bench.categorize("some::unknown_op") == bench.OTHER
    # the iteration range is Python time only where it is the op itself, never as a caller
    assert bench.categorize(("aten::empty", bench.ITERATION)) == bench.OTHER


def test_profile_table_lists_search_minus_twice_plain():
    zero = dict.fromkeys(bench.CATEGORIES, 0.0)
    text = bench.profile_table(
        {
            "search": {**zero, bench.CONV_FWD: 0.030, bench.CWI: 0.010},
            "plain": {**zero, bench.CONV_FWD: 0.010},
        }
    )
    assert "| conv forward | 30.00 | 75.0 | 10.00 | 100.0 | +10.00 |" in text
    assert "| CWI gather / adaptive pool | 10.00 | 25.0 | 0.00 | 0.0 | +10.00 |" in text
    assert "| total | 40.00 | 100.0 | 10.00 | 100.0 | +20.00 |" in text


@pytest.mark.parametrize("src", [None, "empty", "hidden"])
def test_official_without_xautodl_says_so_and_exits_2(src, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts --official-src first
    monkeypatch.setitem(sys.modules, "xautodl", None)  # hides an installed copy
    argv = ["--official", *SMOKE]
    if src is not None:
        if src == "hidden":  # a folder that holds xautodl/, whose import then fails
            (tmp_path / "xautodl").mkdir()
            (tmp_path / "xautodl" / "__init__.py").write_text("")
        argv += ["--official-src", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing timed, not even the machine line
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "xautodl" in lines[0] and "not importable" in lines[0]
    assert "pip install --no-deps xautodl" in lines[0]
    if src == "empty":  # an installed copy would otherwise be timed in its place
        assert f"{tmp_path} holds no xautodl/" in lines[0]
    if src == "hidden":
        assert f"--official-src {tmp_path} first on sys.path" in lines[0]


def test_official_src_needs_official(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--official-src", "somewhere"])
    assert exit_info.value.code == 2
    assert "--official-src goes with --official" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("xautodl") is None, reason="xautodl (the authors' code) absent"
)
def test_official_smoke():
    done = _run("--official", *SMOKE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "official: xautodl" in done.stdout
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("| ResNet-14 | 2 | fp32 |")]
    assert len(rows) == 2  # the search/plain table and the official table
    assert "official / ours" in done.stdout


def test_profile_smoke():
    done = _run("--profile", "--profile-iters", "1", *SMOKE)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [ln for ln in done.stdout.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| category | search ms/it | search % | plain ms/it | plain % |")
    names = [ln.split("|")[1].strip() for ln in table[1:]]
    assert names == [*bench.CATEGORIES, "total"]


def test_train_step_layouts_smoke(capsys):
    from benchmarks import train_step

    train_step.main(["--depth", "8", "--batch", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    for name in ("| full |", "| uniform 0.5 |", "| uniform 0.5 + KD |"):
        assert name in out


def test_residual_joins_smoke(capsys):
    from benchmarks import residual_joins

    residual_joins.main(["--depth", "8", "--batch", "2", "--repeats", "1", "--ratios", "0.5"])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| full |") or "| uniform 0.5 |" in ln]
    assert len(rows) == 2
    space = tas.SearchSpace.cifar_resnet(8)
    model = tas.compact.build_model(tas.Arch.full(space)).eval()
    with torch.inference_mode():
        shapes = residual_joins.join_shapes(model, torch.randn(2, 3, 32, 32))
    assert len(shapes) == 3  # one block per stage, each a residual join
    assert [out[1] for _, out in shapes] == [16, 32, 64]
