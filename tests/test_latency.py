"""Latency tables (tas.latency): every built layer has an entry, the expectation is exact at
one-hot distributions and differentiable, files round-trip and bad ones are refused."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

import tas
import tas.latency
from tas.latency import LatencyTable, shallowest, timed_convs
from tests.conftest import ROOT


def synthetic_table(space: tas.SearchSpace) -> LatencyTable:
    """A synthetic table of ``space`` (no timing): each entry a distinct number growing with
    the widths, so sums are checkable, narrower networks are faster and no two layers tie."""
    rng = random.Random(0)
    convs = {
        c.name: {
            (a, b): 0.01 + 1e-4 * a * b * rng.uniform(0.8, 1.2) for a in c.inputs for b in c.outputs
        }  # fmt: skip
        for c in timed_convs(space)
    }
    return LatencyTable(space, {"device": "none"}, convs, fixed_ms=0.25)


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return synthetic_table(tas.SearchSpace.cifar_resnet(20))


def one_hot(net: tas.Supernet, arch: tas.Arch) -> None:
    space = net.space
    with torch.no_grad():
        net.width_logits.fill_(-60.0)
        net.depth_logits.fill_(-60.0)
        for row, conv in enumerate(space.convs()):
            width = arch.widths.get(conv.name, conv.channels)
            net.width_logits[row, conv.candidates.index(width)] = 60.0
        for s, stage in enumerate(space.stages):
            net.depth_logits[s, stage.depth_choices.index(arch.blocks[s])] = 60.0


def test_every_layer_of_every_network_has_an_entry(table):
    space = table.space
    for seed in range(100):
        arch = tas.Arch.random(space, random.Random(seed))
        expected = table.fixed_ms + sum(
            table.convs[layer.name][(layer.in_channels, layer.out_channels)]
            for layer in arch.plan().layers()
        )
        assert table.predict_ms(arch) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_expected_latency_at_one_hot_distributions_is_the_networks(table, seed):
    net = tas.Supernet(table.space)
    arch = tas.Arch.random(table.space, random.Random(seed))
    one_hot(net, arch)
    assert net.derive() == arch
    got = table.expected_ms(net.width_probs(), net.depth_probs())
    assert got.item() == pytest.approx(table.predict_ms(arch), rel=1e-9)


def test_expected_latency_is_differentiable_and_between_the_extremes(table):
    net = tas.Supernet(table.space)
    value = table.expected_ms(net.width_probs(), net.depth_probs())
    value.backward()
    assert net.width_logits.grad.abs().sum() > 0 and net.depth_logits.grad.abs().sum() > 0
    low = tas.Arch(table.space, (1, 1, 1), {
        c.name: c.candidates[0] for c in table.space.kept_convs((1, 1, 1))
    })  # fmt: skip
    assert table.predict_ms(low) < value.item() < table.predict_ms(tas.Arch.full(table.space))


def test_round_trip_and_bad_files(table, tmp_path):
    path = tmp_path / "lat.json"
    table.save(path)
    again = LatencyTable.load(path)
    assert again.convs == table.convs and again.fixed_ms == table.fixed_ms
    arch = tas.Arch.random(table.space, random.Random(3))
    assert again.predict_ms(arch) == pytest.approx(table.predict_ms(arch))
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        LatencyTable.load(tmp_path / "garbage.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "tas-arch/1"}))
    with pytest.raises(ValueError, match="not a tas-latency/1 or tas-latency/2 file"):
        LatencyTable.load(tmp_path / "other.json")
    data = json.loads(path.read_text())
    del data["convs"]["stem"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no entries"):
        LatencyTable.load(tmp_path / "partial.json")
    other = tas.Arch.full(tas.SearchSpace.cifar_resnet(32))
    with pytest.raises(ValueError, match="the table is for"):
        table.predict_ms(other)


def test_the_overhead_term_by_hand(table):
    """predict_ms adds overhead_ms once per conv layer built; expected_ms weighs it by the
    probability that the conv's block is kept."""
    with_overhead = LatencyTable(table.space, {}, table.convs, table.fixed_ms, overhead_ms=0.03)
    for seed in range(10):
        arch = tas.Arch.random(table.space, random.Random(seed))
        layers = 1 + 2 * sum(arch.blocks) + 2  # stem, two convs a block, two projections
        assert len(arch.plan().layers()) == layers
        assert with_overhead.predict_ms(arch) == pytest.approx(
            table.predict_ms(arch) + 0.03 * layers, rel=1e-12
        )
    net = tas.Supernet(table.space)
    width = net.width_probs().detach()
    depth = torch.full((3, 3), 1 / 3, dtype=torch.float64)  # 1, 2 or 3 blocks a stage
    # kept with probability 1, 2/3, 1/3: 2 x (1 + 2/3 + 1/3) = 4 convs a stage, plus the stem
    # and the two stride-2 blocks' projections (their blocks are always kept)
    layers = 1 + 3 * 4 + 2
    got = with_overhead.expected_ms(width, depth) - table.expected_ms(width, depth)
    assert got.item() == pytest.approx(0.03 * layers, rel=1e-12)
    net = tas.Supernet(table.space)
    arch = tas.Arch.random(table.space, random.Random(7))
    one_hot(net, arch)
    got = with_overhead.expected_ms(net.width_probs(), net.depth_probs())
    assert got.item() == pytest.approx(with_overhead.predict_ms(arch), rel=1e-9)


def test_fit_recovers_the_fixed_part_and_the_overhead(table):
    truth = LatencyTable(table.space, {}, table.convs, fixed_ms=0.4, overhead_ms=-0.02)
    full, shallow = tas.Arch.full(table.space), shallowest(table.space)
    fitted = LatencyTable(table.space, {}, table.convs)
    fitted.fit([(full, truth.predict_ms(full)), (shallow, truth.predict_ms(shallow))])
    assert fitted.fixed_ms == pytest.approx(0.4) and fitted.overhead_ms == pytest.approx(-0.02)
    # least squares over more networks, all on the model: the same answer
    archs = [full, shallow] + [tas.Arch.random(table.space, random.Random(s)) for s in range(5)]
    fitted.fit([(a, truth.predict_ms(a)) for a in archs])
    assert fitted.fixed_ms == pytest.approx(0.4) and fitted.overhead_ms == pytest.approx(-0.02)
    # the plain model: no overhead, the same prediction of the full network
    plain = fitted.without_overhead()
    assert plain.overhead_ms == 0
    assert plain.predict_ms(full) == pytest.approx(truth.predict_ms(full))
    fitted.fit([(full, 5.0), (shallow, 3.0)], overhead=False)
    assert fitted.overhead_ms == 0
    assert fitted.fixed_ms == pytest.approx(4.0 - (table.entries_ms(full)[0]
                                                   + table.entries_ms(shallow)[0]) / 2)  # fmt: skip


def test_overhead_round_trips_and_version_1_files_load(table, tmp_path):
    path = tmp_path / "lat.json"
    with_overhead = LatencyTable(table.space, {"backend": "eager"}, table.convs, 0.1, -0.01)
    with_overhead.save(path)
    again = LatencyTable.load(path)
    assert again.overhead_ms == -0.01 and again.fixed_ms == 0.1
    data = json.loads(path.read_text())
    data["format"] = "tas-latency/1"
    del data["overhead_ms"]
    (tmp_path / "v1.json").write_text(json.dumps(data))
    old = LatencyTable.load(tmp_path / "v1.json")
    assert old.overhead_ms == 0 and old.fixed_ms == 0.1
    again.check(backend="eager")
    with pytest.raises(ValueError, match="profiled with backend 'eager' \\(not 'onnxruntime'\\)"):
        again.check("lat.json", backend="onnxruntime", batch=1)


def test_onnxruntime_backend_profiles_a_space():
    pytest.importorskip("onnxruntime")
    space = tas.SearchSpace.cifar_resnet(8)
    table = tas.latency.profile(space, batch=1, backend="onnxruntime", threads=1, rounds=1,
                                warmup=1)  # fmt: skip
    assert table.meta["backend"] == "onnxruntime" and "onnxruntime" in table.meta
    assert table.meta["threads"] == 1 and table.meta["batch"] == 1
    assert sum(len(p) for p in table.convs.values()) == 520
    full_ms = table.predict_ms(tas.Arch.full(space))
    assert math.isfinite(full_ms) and full_ms > 0
    assert full_ms == pytest.approx(table.meta["measured_ms"]["full"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    space = tas.SearchSpace.cifar_resnet(8)
    with pytest.raises(ValueError, match="no CUDA device is available"):
        tas.latency.profile(space, device="cuda")
    with pytest.raises(ValueError, match="times the CPU only"):
        tas.latency.check_device("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        tas.latency.profile(space, backend="tensorrt")
    done = subprocess.run(
        [sys.executable, "-m", "tas.latency", "profile", "--depth", "8", "--device", "cuda",
         "--out", str(tmp_path / "x.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no CUDA device is available" in done.stderr
    assert not (tmp_path / "x.json").exists()


def test_the_prediction_benchmark_runs():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency_prediction", "--depth", "8", "--rounds", "1",
         "--networks", "2", "--warmup", "1", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("| ")]
    assert len(rows) == 1 + 3 and rows[-1].startswith("| full |")  # header, 2 random, full
    assert "mean |error|" in done.stdout and "threads, torch" in done.stdout  # the machine line


def test_profile_from_the_command_line(tmp_path):
    out = tmp_path / "lat.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tas.latency",
            "profile",
            "--depth",
            "20",
            "--batch",
            "1",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = LatencyTable.load(out)
    assert table.meta["batch"] == 1 and table.meta["threads"] == 1
    assert table.meta["backend"] == "eager"
    assert all(ms > 0 for pairs in table.convs.values() for ms in pairs.values())
    assert sum(len(p) for p in table.convs.values()) == 1288  # ResNet-20's (conv, widths) pairs
    # fixed_ms and overhead_ms are fitted exactly on the two networks measured with the convs
    measured = table.meta["measured_ms"]
    full, shallow = tas.Arch.full(table.space), shallowest(table.space)
    assert table.predict_ms(full) == pytest.approx(measured["full"], rel=1e-9)
    assert table.predict_ms(shallow) == pytest.approx(measured["shallowest"], rel=1e-9)


def test_a_latency_budget_drives_the_search_step(table):
    """tas.search_step with a LatencyBudget: the argmax network is over the target, so the
    cost loss (+log E[ms]) pulls the expected latency down, as the MACs budget does."""
    torch.manual_seed(0)
    net = tas.Supernet(table.space)
    full_ms = table.predict_ms(tas.Arch.full(table.space))
    budget = tas.LatencyBudget(table, target=0.3 * full_ms, tolerance=0.05 * full_ms)
    assert budget.argmax(net).item() == pytest.approx(table.predict_ms(net.derive()), rel=1e-9)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    before = budget.expected(net).item()
    first = tas.search_step(net, w_opt, a_opt, batch, batch, budget, cost_weight=50.0)
    assert first.cost.item() > 0  # over the target: +log E[ms]
    for _ in range(10):
        losses = tas.search_step(net, w_opt, a_opt, batch, batch, budget, cost_weight=50.0)
    assert losses.expected.item() < before


def test_latency_budget_search_from_the_command_line(table, tmp_path):
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY, assert_user_error

    path = tmp_path / "lat.json"
    table.save(path)
    args = [*TINY, "--model.depth=20", "--model.budget=latency",
            f"--model.latency_table={path}", "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1"]  # fmt: skip
    out = tmp_path / "search"
    done = run_script("train_search.py", *args, "--logger=csv", f"--out={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    found = tas.Arch.load(out / "found.json")
    budget = found.search["budget"]
    assert budget["unit"] == "ms" and budget["predicted_ms"] == pytest.approx(
        table.predict_ms(found)
    )
    full = table.predict_ms(tas.Arch.full(table.space))
    assert budget["target_ms"] == pytest.approx(0.47 * full)  # the module's default ratio
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "search/expected_latency_ms" in header and "search/expected_macs" not in header
    other = tmp_path / "other.json"
    space32 = tas.SearchSpace.cifar_resnet(32)
    convs = {
        c.name: {(a, b): 1.0 for a in c.inputs for b in c.outputs} for c in timed_convs(space32)
    }
    LatencyTable(space32, {}, convs).save(other)
    for bad, needle in (
        (other, "is for cifar_resnet-32"),
        (tmp_path / "missing.json", "cannot be read"),
    ):
        args[-3] = f"--model.latency_table={bad}"
        assert_user_error(run_script("train_search.py", *args, f"--out={tmp_path / 'x'}"), needle)
    args[-3] = f"--model.latency_table={path}"
    fast = run_script(
        "train_search.py", *args, "--model.target_ms=0.001", f"--out={tmp_path / 'y'}"
    )
    assert_user_error(fast, "below the fastest network")
