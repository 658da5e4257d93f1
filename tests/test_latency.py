"""Latency tables (tas.latency): every built layer has an entry, the expectation is exact at
one-hot distributions and differentiable, files round-trip and bad ones are refused."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

import tas
from tas.latency import LatencyTable, timed_convs
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
    with pytest.raises(ValueError, match="not a tas-latency/1 file"):
        LatencyTable.load(tmp_path / "other.json")
    data = json.loads(path.read_text())
    del data["convs"]["stem"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no entries"):
        LatencyTable.load(tmp_path / "partial.json")
    other = tas.Arch.full(tas.SearchSpace.cifar_resnet(32))
    with pytest.raises(ValueError, match="the table is for"):
        table.predict_ms(other)


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
    assert all(ms > 0 for pairs in table.convs.values() for ms in pairs.values())
    assert table.fixed_ms >= 0
    assert sum(len(p) for p in table.convs.values()) == 1288  # ResNet-20's (conv, widths) pairs


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
