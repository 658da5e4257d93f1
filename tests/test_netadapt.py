"""NetAdapt (tas.baselines.netadapt): each iteration meets its step, the result meets the target, kept
filters index the full network, MACs targets land in the band, and the prune.py command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import tas
from lightning_modules.teacher import load_teacher, save_network
from tas.baselines import named_convs
from tas.baselines.netadapt import narrow_conv, netadapt_prune, netadapt_prune_macs
from tas.compact import count_macs, count_params
from tas.latency import LatencyTable
from tests.cli_helpers import run_script
from tests.test_cli_errors import assert_user_error
from tests.test_latency import synthetic_table


@pytest.fixture(scope="module")
def space() -> tas.SearchSpace:
    return tas.SearchSpace.cifar_resnet(8)


@pytest.fixture(scope="module")
def table(space) -> LatencyTable:
    return synthetic_table(space)


@pytest.fixture
def model(space) -> tas.compact.CompactNet:
    torch.manual_seed(0)
    return tas.build_model(tas.Arch.full(space)).eval()


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    g = torch.Generator().manual_seed(0)
    train = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
             for _ in range(3)]  # fmt: skip
    val = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    return train, val


def test_every_iteration_meets_its_step_with_the_widest_layer_and_the_result_meets_the_target(
    table, model, data
):
    full = table.predict_ms(tas.Arch.full(table.space))
    target, decrement = 0.7 * full, 0.05 * full
    seen = []
    arch, keep, net = netadapt_prune(model, table, target, *data, decrement_ms=decrement,
                                     short_steps=1, progress=seen.append)  # fmt: skip
    iterations = arch.search["netadapt"]["iterations"]
    assert [r.__dict__ for r in seen] == iterations and arch.search["method"] == "netadapt"
    assert 1 <= len(iterations) <= math.ceil((full - target) / decrement) + 1

    def with_width(arch: tas.Arch, name: str, width: int) -> tas.Arch:
        return tas.Arch(arch.space, arch.blocks, {**arch.widths, name: width})

    def narrower(arch: tas.Arch, name: str) -> list[int]:
        return [w for w in table.space.conv(name).candidates if w < arch.widths[name]]

    # replay: each step asks prev - decrement (the last: the target; halved only when no layer
    # meets the full step), the chosen layer takes the widest candidate meeting it, and the
    # predicted latency falls every iteration
    current, prev = tas.Arch.full(table.space), full
    for r in iterations:
        halvings = math.log2(decrement / r["decrement"])
        assert halvings == round(halvings) >= 0
        assert r["target"] == pytest.approx(max(prev - r["decrement"], target))
        if halvings:  # no conv could meet twice the cut
            twice = max(prev - 2 * r["decrement"], target)
            assert all(table.predict_ms(with_width(current, n, w)) > twice
                       for n in keep for w in narrower(current, n))  # fmt: skip
        wider = [w for w in narrower(current, r["conv"]) if w > r["width"]]
        for w in wider:  # a wider one would have met the step too: not the largest
            assert table.predict_ms(with_width(current, r["conv"], w)) > r["target"]
        current = with_width(current, r["conv"], r["width"])
        assert r["cost"] == pytest.approx(table.predict_ms(current)) and r["cost"] <= r["target"]
        assert r["cost"] < prev
        prev = r["cost"]
    assert current == arch and table.predict_ms(arch) <= target
    assert arch.search["predicted_ms"] == pytest.approx(table.predict_ms(arch))
    assert arch.search["target_ms"] == target
    assert count_params(net) == arch.params and not net.training
    assert {n: len(k) for n, k in keep.items()} == {n: arch.widths[n] for n in keep}


def test_kept_filters_index_the_full_network_across_iterations(space, model, data):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arch, keep, net = netadapt_prune_macs(model, 0.6, *data, decrement=0.03, short_steps=0)
    chosen = [r["conv"] for r in arch.search["netadapt"]["iterations"]]
    assert len(chosen) > len(keep), "some conv must be pruned twice (keep composed)"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    # without fine-tuning, the pruned network is the full one's kept rows, exactly
    rebuilt = tas.build_model(arch, init_from=model, keep=keep).state_dict()
    assert all(torch.equal(v, rebuilt[k]) for k, v in net.state_dict().items())
    full_convs, convs = named_convs(model, tas.Arch.full(space)), named_convs(net, arch)

    def weight(module) -> torch.Tensor:
        return next(m for m in module if isinstance(m, nn.Conv2d)).weight

    for name, idx in keep.items():
        assert torch.all(idx[1:] > idx[:-1]) and len(idx) == arch.widths[name]
        assert torch.equal(weight(convs[name]), weight(full_convs[name])[idx])
        reader = name.replace("conv_a", "conv_b")
        assert torch.equal(weight(convs[reader]), weight(full_convs[reader])[:, idx])


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_a_macs_target_lands_in_the_band(space, model, data, ratio):
    full = tas.Arch.full(space).macs
    arch, keep, net = netadapt_prune_macs(model, ratio, *data, decrement=0.1, short_steps=1)
    assert 0.98 * ratio * full <= arch.macs <= ratio * full
    assert count_macs(net) == arch.macs and arch.search["macs_ratio"] == ratio
    costs = [r["cost"] for r in arch.search["netadapt"]["iterations"]]
    assert costs == sorted(costs, reverse=True) and costs[-1] == arch.macs


def test_narrowing_a_conv_equals_silencing_its_dropped_filters():
    """The narrowed network computes what the wide one computes when the dropped filters
    output zero (BN scale and shift zeroed before their ReLU), in a ResNet and a VGG, where
    the last conv feeds the head."""
    for space, name in [
        (tas.SearchSpace.cifar_resnet(8), "stage2.block0.conv_a"),
        (tas.SearchSpace.cifar_vgg(11), tas.SearchSpace.cifar_vgg(11).convs()[-1].name),
    ]:
        arch = tas.Arch.full(space)
        model = tas.build_model(arch).eval()
        width = arch.widths[name]
        bn = next(m for m in named_convs(model, arch)[name] if isinstance(m, nn.BatchNorm2d))
        with torch.no_grad():
            bn.running_var += torch.rand(width)  # statistics that are not all the same
        kept = torch.randperm(width)[: width // 3].sort().values
        narrow_arch, narrow = narrow_conv(model, arch, name, kept)
        assert narrow_arch.widths[name] == len(kept) and count_params(narrow) == narrow_arch.params
        dropped = torch.ones(width, dtype=torch.bool)
        dropped[kept] = False
        with torch.no_grad():
            bn.weight[dropped] = 0.0
            bn.bias[dropped] = 0.0
            x = torch.randn(2, 3, 32, 32)
            torch.testing.assert_close(narrow(x), model(x))
    resnet = tas.Arch.full(tas.SearchSpace.cifar_resnet(8))
    with pytest.raises(ValueError, match="not a prunable conv"):
        narrow_conv(tas.build_model(resnet), resnet, "stem", torch.arange(4))


def test_unreachable_targets_and_tables_of_another_space(space, table, model, data):
    smallest = tas.Arch(space, space.max_blocks, {
        c.name: (c.candidates[0] if c.name.endswith("conv_a") else c.channels)
        for c in space.convs()
    })  # fmt: skip
    reach = table.predict_ms(smallest)
    with pytest.raises(ValueError, match="below the smallest network"):
        netadapt_prune(model, table, 0.99 * reach, *data)
    arch, _, _ = netadapt_prune(model, table, reach, *data, short_steps=0)
    assert arch == smallest
    other = synthetic_table(tas.SearchSpace.cifar_resnet(14))
    with pytest.raises(ValueError, match="latency table is for cifar_resnet-14"):
        netadapt_prune(model, other, 1.0, *data)
    with pytest.raises(ValueError, match="decrement must be > 0"):
        netadapt_prune(model, table, reach, *data, decrement_ms=0.0)
    arch, keep, net = netadapt_prune_macs(model, 1.0, *data)  # already there: no iteration
    assert arch == tas.Arch.full(space) and net is not model


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, space, table) -> tuple[str, str, float]:
    """A full ResNet-8 checkpoint (random weights), its latency table and a target."""
    folder = tmp_path_factory.mktemp("netadapt")
    torch.manual_seed(1)
    teacher = folder / "teacher.ckpt"
    save_network(teacher, tas.build_model(tas.Arch.full(space)), tas.Arch.full(space))
    table.save(folder / "lat.json")
    return str(teacher), str(folder / "lat.json"), 0.8 * table.predict_ms(tas.Arch.full(space))


def test_netadapt_from_the_command_line(tmp_path, cli_files, table):
    teacher, lat, target = cli_files
    out = tmp_path / "na" / "found.json"
    out.parent.mkdir()
    result = run_script(
        "prune.py", "--method=netadapt", f"--teacher={teacher}", "--data_name=synthetic",
        f"--latency_table={lat}", f"--target_ms={target}", "--images=32", "--batch=16",
        "--short_steps=2", "--decrement=0.1", f"--out={out}",
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = tas.Arch.load(out)
    assert found.search["method"] == "netadapt" and table.predict_ms(found) <= target
    assert "iteration 1:" in result.stdout
    init = out.with_name("found.init.ckpt")
    assert found.search["init_ckpt"] == init.name
    network, arch = load_teacher(init)
    assert arch == found and count_params(network) == found.params
    raw = json.loads(out.read_text())["search"]
    assert set(raw["keep"]) == set(found.search["keep"]) and raw["pruned_from"] == teacher


def test_command_line_errors_are_one_line(tmp_path, cli_files):
    teacher, lat, target = cli_files
    common = ["--method=netadapt", f"--teacher={teacher}", "--data_name=synthetic"]
    out = tmp_path / "found.json"
    result = run_script("prune.py", *common, f"--latency_table={tmp_path / 'no.json'}",
                        f"--target_ms={target}", f"--out={out}")  # fmt: skip
    assert_user_error(result, "latency table", "no.json", "cannot be read")
    result = run_script("prune.py", *common, f"--target_ms={target}", f"--out={out}")
    assert_user_error(result, "--target_ms and --latency_table go together")
    assert not out.exists()
