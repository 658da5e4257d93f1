"""torchvision's MobileNetV2 as a search space: exact MACs and parameters, exact outputs from the
user's weights, the supernet with depthwise convs tied to their expansion, the exact expected
MACs, found.json, inherited weights and the baselines on it."""

import itertools
import json
import math
import random

import pytest
import torch
import torchvision
from torch import nn

import tas
from tas import Arch, SearchSpace, Supernet
from tas.baselines import (
    l1_norm_prune,
    named_convs,
    prunable_convs,
    random_within,
    slimming_prune,
)
from tests.test_backbones import flop_counter_macs
from tests.test_cost import peak

# torchvision 0.29's mobilenet_v2() at 224x224, 1000 classes: FlopCounterMode total / 2
TORCHVISION_MACS = 300_774_272
TORCHVISION_PARAMS = 3_504_872


def torchvision_mobilenet(width_mult: float, num_classes: int = 10) -> nn.Module:
    """A torchvision MobileNetV2 in eval mode with random BN statistics and affines, so that an
    output check cannot pass by BN being the identity."""
    torch.manual_seed(int(width_mult * 100))
    model = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    randomise_bns(model)
    return model.eval()


def randomise_bns(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def full_supernet_logits(net: Supernet) -> None:
    """Put all the mass on the full network: the widest candidate and the deepest stage."""
    with torch.no_grad():
        net.width_logits.fill_(-30.0)
        net.depth_logits.fill_(-30.0)
        for r, conv in enumerate(net.space.convs()):
            net.width_logits[r, len(conv.candidates) - 1] = 30.0
        for s, stage in enumerate(net.space.stages):
            net.depth_logits[s, len(stage.depth_choices) - 1] = 30.0


# ---------------------------------------------------------------- the space and its counts
def test_full_network_counts_are_torchvision_s():
    arch = Arch.full(SearchSpace.mobilenet_v2())
    model = torchvision.models.mobilenet_v2()
    assert arch.macs == TORCHVISION_MACS == flop_counter_macs(model, 224)
    assert arch.params == TORCHVISION_PARAMS == sum(p.numel() for p in model.parameters())
    built = tas.build_model(arch)
    assert tas.count_macs(built, (1, 3, 224, 224)) == TORCHVISION_MACS
    assert sum(p.numel() for p in built.parameters()) == TORCHVISION_PARAMS


@pytest.mark.parametrize("width_mult", [0.25, 0.35, 0.5, 1.4])
def test_other_width_multipliers_count_as_torchvision(width_mult):
    arch = Arch.full(SearchSpace.mobilenet_v2(10, 64, width_mult))
    model = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=10)
    assert arch.macs == flop_counter_macs(model, 64)
    assert arch.params == sum(p.numel() for p in model.parameters())


def test_searchable_convs_and_depths():
    """Expansions, the stem (block 0's expansion) and the last 1x1 conv are searched; the
    projections (the residual stream) are fixed; depthwise convs have no width of their own."""
    space = SearchSpace.mobilenet_v2()
    names = [c.name for c in space.convs()]
    searched = [c.name for c in space.convs() if space.searchable(c)]
    assert searched == ["stem"] + [n for n in names if n.endswith(".expand")] + [
        "stage8.block0.conv"
    ]
    assert len(searched) == 1 + 16 + 1 and len(names) == len(searched) + 17  # + projections
    assert not any("depthwise" in n for n in names)
    assert [s.depth_choices for s in space.stages] == [
        (1,), (1, 2), (1, 2, 3), (1, 3, 4), (1, 2, 3), (1, 2, 3), (1,), (1,)
    ]  # fmt: skip
    blocks = [b for stage in space.stages[:-1] for b in stage.blocks]
    assert [b.residual for b in blocks] == [
        b > 0 for row in tas.spaces.mobilenet.MOBILENET_V2_STAGES for b in range(row.blocks)
    ]
    assert space.block_kind == "inverted_residual" and space.head_in == 1280
    # at width 0.25 stage 1's block adds the stem (8 == 8 channels): the stem is fixed
    small = SearchSpace.mobilenet_v2(width_mult=0.25)
    assert small.stages[0].blocks[0].residual and not small.searchable(small.stem)
    assert prunable_convs(space) == searched


# ---------------------------------------------------------------- the user's own weights
@pytest.mark.parametrize(("width_mult", "size"), [(0.5, 64), (0.25, 32)])
def test_from_torchvision_reproduces_the_model_outputs(width_mult, size):
    model = torchvision_mobilenet(width_mult, num_classes=7)
    space, state = tas.from_torchvision(model, input_size=size)
    assert space == SearchSpace.mobilenet_v2(7, size, width_mult)
    ours = tas.build_model(Arch.full(space)).eval()
    ours.load_state_dict(state)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        assert (ours(x) - expected).abs().max() <= 1e-5
        # the warm-started supernet's full-width network is the same function
        net = Supernet(space)
        net.load_full_weights(state)
        full_supernet_logits(net)
        assert net.derive() == Arch.full(space)
        assert (net.eval().forward_argmax(x) - expected).abs().max() <= 1e-5


def test_torchvision_checkpoint_is_a_teacher(tmp_path):
    """lightning_modules.teacher reads a torchvision MobileNetV2 checkpoint, plain or as
    torchvision's reference scripts save it (under "model")."""
    from lightning_modules.teacher import load_full_state, load_teacher

    model = torchvision_mobilenet(0.5)
    x = torch.randn(2, 3, 32, 32)
    for i, ckpt in enumerate((model.state_dict(), {"model": model.state_dict()})):
        path = tmp_path / f"mobilenet{i}.pth"
        torch.save(ckpt, path)
        teacher, arch = load_teacher(path, input_size=32)
        assert arch == Arch.full(SearchSpace.mobilenet_v2(10, 32, 0.5))
        with torch.no_grad():
            assert (teacher(x) - model(x)).abs().max() <= 1e-5
        assert load_full_state(path, arch.space).keys() == teacher.state_dict().keys()


# ---------------------------------------------------------------- supernet and cost
def test_supernet_forward_backward_derive_build():
    space = SearchSpace.mobilenet_v2(10, 32, 0.5)
    net = Supernet(space)
    loss = net(torch.randn(4, 3, 32, 32)).logsumexp(-1).mean() + 1e-7 * net.expected_macs()
    loss.backward()
    searched = [space.searchable(c) for c in space.convs()]
    grads = net.width_logits.grad.abs().sum(-1)
    assert all((g > 0) == s for g, s in zip(grads.tolist(), searched))
    stages = [space.searchable_stage(s) for s in space.stages]
    assert all((g > 0) == s for g, s in zip(net.depth_logits.grad.abs().sum(-1).tolist(), stages))
    rng = random.Random(0)
    for _ in range(3):
        arch = peak(net, rng)
        assert arch.macs == tas.count_macs(tas.build_model(arch), (1, 3, 32, 32))


def test_argmax_forward_is_the_derived_compact_network():
    """forward_argmax runs the derived network on the shared weights: loaded into the built
    compact network (a depthwise conv's BN picked by its input's width), the outputs agree."""
    net = Supernet(SearchSpace.mobilenet_v2(10, 32, 0.5))
    with torch.no_grad():
        net.width_logits.uniform_(-3, 3)
        net.depth_logits.uniform_(-3, 3)
    randomise_bns(net)
    arch = net.derive()
    model = tas.build_model(arch).eval()
    pairs = [(net.stem, model.stem)]
    for s, kept in enumerate(arch.blocks):
        for b in range(kept):
            pairs += zip(net.stages[s][b].convs, model.stages[s][b].main)
    with torch.no_grad():
        for conv, dest in pairs:
            c, bn = dest[0], dest[1]
            c.weight.copy_(conv.weight[: c.out_channels, : c.weight.shape[1]])
            bn.load_state_dict(conv.bns[conv.candidates.index(c.out_channels)].state_dict())
        model.head.weight.copy_(net.head.weight[:, : model.head.in_features])
        model.head.bias.copy_(net.head.bias)
        x = torch.randn(3, 3, 32, 32)
        torch.testing.assert_close(net.eval().forward_argmax(x), model(x), rtol=1e-4, atol=1e-4)


def test_peaked_distributions_cost_the_derived_network_exactly():
    space = SearchSpace.mobilenet_v2(10, 64, 0.5)
    net = Supernet(space)
    rng = random.Random(0)
    for _ in range(3):
        arch = peak(net, rng)
        assert net.expected_macs().item() == pytest.approx(arch.macs, rel=1e-9)
        assert net.argmax_macs().item() == arch.macs
        assert arch.macs == tas.count_macs(tas.build_model(arch), (1, 3, 64, 64))


def test_expected_macs_equals_enumeration():
    """E[MACs] against brute force over every network the distributions can draw: the stem
    (whose width block 0's depthwise conv takes), an expansion inside a block that depth may
    drop, the last conv, and the depths of stages 2 and 4 have random distributions; the rest
    are one-hot (exactly 0 and 1, so the enumeration may skip them)."""
    space = SearchSpace.mobilenet_v2(10, 32, 0.5)
    convs = space.convs()
    rows = {c.name: r for r, c in enumerate(convs)}
    random_rows = [rows[n] for n in ("stem", "stage2.block1.expand", "stage8.block0.conv")]
    gen = torch.Generator().manual_seed(0)
    width_p = torch.zeros(len(convs), 8, dtype=torch.float64)
    for r, conv in enumerate(convs):
        if r in random_rows:
            width_p[r, : len(conv.candidates)] = torch.rand(8, generator=gen, dtype=torch.float64)
            width_p[r] /= width_p[r].sum()
        else:
            width_p[r, torch.randint(len(conv.candidates), (), generator=gen)] = 1.0
    depth_p = torch.zeros(len(space.stages), 3, dtype=torch.float64)
    for s, stage in enumerate(space.stages):
        if s in (1, 3):
            depth_p[s, : len(stage.depth_choices)] = torch.rand(
                len(stage.depth_choices), generator=gen, dtype=torch.float64
            )
            depth_p[s] /= depth_p[s].sum()
        else:
            depth_p[s, torch.randint(len(stage.depth_choices), (), generator=gen)] = 1.0

    fixed = {c.name: c.candidates[int(width_p[r].argmax())] for r, c in enumerate(convs)}
    base = [stage.depth_choices[int(depth_p[s].argmax())] for s, stage in enumerate(space.stages)]
    brute = 0.0
    for d2, d4 in itertools.product(range(2), range(3)):
        blocks = list(base)
        blocks[1], blocks[3] = space.stages[1].depth_choices[d2], space.stages[3].depth_choices[d4]
        kept = {c.name for c in space.kept_convs(tuple(blocks))}
        for picks in itertools.product(range(8), repeat=3):
            p = depth_p[1, d2].item() * depth_p[3, d4].item()
            p *= math.prod(width_p[r, k].item() for r, k in zip(random_rows, picks))
            widths = dict(fixed)
            for r, k in zip(random_rows, picks):
                widths[convs[r].name] = convs[r].candidates[k]
            widths = {n: w for n, w in widths.items() if n in kept}
            brute += p * Arch(space, tuple(blocks), widths).macs
    assert tas.expected_macs(space, width_p, depth_p).item() == pytest.approx(brute, rel=1e-12)


# ---------------------------------------------------------------- found.json
def test_found_json_round_trip(tmp_path):
    space = SearchSpace.mobilenet_v2(100, 32, 0.5)
    arch = Arch.random(space, random.Random(0))
    arch.save(tmp_path / "found.json")
    data = json.loads((tmp_path / "found.json").read_text())
    assert (data["backbone"], data["depth"], data["block"]) == (
        "mobilenet_v2", 53, "inverted_residual"
    )  # fmt: skip
    assert data["width_mult"] == 0.5 and not any("depthwise" in n for n in data["widths"])
    back = Arch.load(tmp_path / "found.json")
    assert back == arch and back.space == space and back.macs == arch.macs
    # width 1: no width_mult key, as in the other spaces' files
    assert "width_mult" not in Arch.full(SearchSpace.mobilenet_v2()).to_dict()
    with pytest.raises(tas.ArchFormatError, match="depth"):
        Arch.from_dict({**data, "depth": 56})
    with pytest.raises(tas.ArchFormatError, match="mobilenet_v2 setting"):
        Arch.from_dict({**Arch.full(SearchSpace.cifar_resnet(20)).to_dict(), "width_mult": 0.5})


def test_from_name_is_the_command_line_s_space():
    """--model.backbone mobilenet_v2: the CLI's default depth is not read; CIFAR-sized input."""
    assert SearchSpace.from_name("mobilenet_v2", 56, 10, input_size=32) == (
        SearchSpace.mobilenet_v2(10, 32)
    )
    assert SearchSpace.from_name("mobilenet_v2", 53, 1000) == SearchSpace.mobilenet_v2()
    with pytest.raises(ValueError, match="zero_pad"):
        SearchSpace.from_name("mobilenet_v2", 53, 10, shortcut="projection")
    # torchvision's strides at 32x32: 16, 8, 4, 2, 1
    assert Arch.full(SearchSpace.mobilenet_v2(10, 32)).plan().stages[-1][0].convs[0].out_size == 1


# ---------------------------------------------------------------- inherited weights, baselines
def masked_full(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """The full network computing what the pruned one should: a dropped channel of a conv and
    of the depthwise conv after it gives 0 (BN scale and shift 0; ReLU6(0) = 0)."""
    full = Arch.full(model.space)
    masked = tas.build_model(full)
    masked.load_state_dict(model.state_dict())
    convs = named_convs(masked, full)
    after = {}  # conv -> the depthwise conv reading it
    names = [c.name for stage in full.space.stages for b in stage.blocks for c in b.convs]
    for prev, name in zip(["stem", *names], names):
        if name.endswith(".depthwise"):
            after[prev] = name
    with torch.no_grad():
        for name, idx in keep.items():
            for conv in filter(None, (name, after.get(name))):
                bn = convs[conv][1]
                drop = torch.ones(bn.num_features, dtype=torch.bool)
                drop[idx] = False
                bn.weight[drop] = 0
                bn.bias[drop] = 0
    return masked.eval()


@pytest.mark.parametrize("prune", [l1_norm_prune, slimming_prune])
def test_baselines_prune_and_inherit(prune):
    space = SearchSpace.mobilenet_v2(10, 32, 0.5)
    torch.manual_seed(0)
    model = tas.build_model(Arch.full(space))
    randomise_bns(model)
    model.eval()
    arch, keep = prune(model, 0.6)
    assert 0.55 * Arch.full(space).macs < arch.macs <= 0.6 * Arch.full(space).macs
    assert set(keep) == set(prunable_convs(space))
    pruned = tas.build_model(arch, init_from=model, keep=keep).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked_full(model, keep)(x))


def test_inheriting_permuted_filters_is_the_same_function():
    """Every searchable conv keeps all its filters, permuted: each depthwise conv follows its
    input's order, each projection reads it, so the network computes the same outputs."""
    space = SearchSpace.mobilenet_v2(10, 32, 0.5)
    model = tas.build_model(Arch.full(space))
    randomise_bns(model)
    gen = torch.Generator().manual_seed(1)
    keep = {n: torch.randperm(space.conv(n).channels, generator=gen) for n in prunable_convs(space)}
    permuted = tas.build_model(Arch.full(space), init_from=model, keep=keep).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model.eval()(x))


def test_uniform_and_random_baselines():
    space = SearchSpace.mobilenet_v2(10, 32, 0.5)
    full = Arch.full(space).macs
    uniform = Arch.uniform(space, 0.5)
    assert uniform.macs <= 0.5 * full
    assert uniform.macs == tas.count_macs(tas.build_model(uniform), (1, 3, 32, 32))
    drawn = random_within(space, 0.6, random.Random(0), tolerance=0.05)
    assert abs(drawn.macs - 0.6 * full) <= 0.05 * 0.6 * full


# The command line (a torchvision checkpoint -> search, prune, distill): the parametrized
# tests/test_backbones.py::test_torchvision_checkpoint_searches_prunes_and_teaches.


def test_width_mult_reaches_both_systems():
    """``--model.width_mult``: the search's space and the trained network are MobileNetV2 at
    that multiplier; found.json keeps it; the other backbones refuse it."""
    from lightning_modules.classify import ClassifyModule
    from lightning_modules.search import SearchModule

    space = tas.SearchSpace.mobilenet_v2(10, 32, 0.5)
    search = SearchModule(backbone="mobilenet_v2", num_classes=10, input_size=32, width_mult=0.5)
    assert search.space == space and search.full_macs == tas.Arch.full(space).macs
    train = ClassifyModule(arch="full", backbone="mobilenet_v2", num_classes=10, input_size=32,
                           width_mult=0.5)  # fmt: skip
    assert train.arch.space == space and train.arch.to_dict()["width_mult"] == 0.5
    with pytest.raises(ValueError, match="width_mult"):
        ClassifyModule(arch="full", depth=20, width_mult=0.5)
