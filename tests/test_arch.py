import json
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tas
from tas import Arch, ArchFormatError, SearchSpace

FULL_MACS = {20: 40_813_184, 32: 69_124_736, 56: 125_747_840, 110: 253_149_824, 164: 247_646_720}

# The authors' released ResNet-56 CIFAR-10 architecture: (conv_a, conv_b) per kept block.
AUTHORS_R56 = [
    [(16, 16), (14, 14), (14, 16), (12, 16), (6, 16)],
    [(32, 32), (32, 32), (32, 32), (22, 25), (16, 32)],
    [(64, 64), (64, 64), (64, 64), (64, 64), (64, 51)],
]


def flop_counter_macs(model: torch.nn.Module) -> int:
    counter = FlopCounterMode(display=False)
    model.eval()
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC


def authors_r56(shortcut: str) -> Arch:
    widths = {"stem": 16}
    for s, stage in enumerate(AUTHORS_R56):
        for b, (a, c) in enumerate(stage):
            widths[f"stage{s + 1}.block{b}.conv_a"] = a
            widths[f"stage{s + 1}.block{b}.conv_b"] = c
    return Arch(SearchSpace.cifar_resnet(56, shortcut=shortcut), (5, 5, 5), widths)


def any_width_arch(space: SearchSpace, rng: random.Random) -> Arch:
    """Random depths and *arbitrary* widths 1..C (what criterion-based pruning produces)."""
    blocks = tuple(rng.randint(1, n) for n in space.max_blocks)
    widths = {c.name: rng.randint(1, c.channels) for c in space.kept_convs(blocks)}
    return Arch(space, blocks, widths)


@pytest.mark.parametrize("depth", sorted(FULL_MACS))
def test_full_network_macs(depth):
    arch = Arch.full(SearchSpace.cifar_resnet(depth))
    model = tas.build_model(arch)
    assert arch.macs == FULL_MACS[depth]
    assert tas.count_macs(model) == FULL_MACS[depth]
    assert flop_counter_macs(model) == FULL_MACS[depth]
    assert arch.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shortcut,macs", [("projection", 59_451_390), ("zero_pad", 58_890_368)])
def test_authors_released_r56(shortcut, macs):
    arch = authors_r56(shortcut)
    model = tas.build_model(arch)
    assert arch.macs == macs == tas.count_macs(model) == flop_counter_macs(model)
    assert arch.params == sum(p.numel() for p in model.parameters())
    assert round(100 * (1 - 59_451_390 / FULL_MACS[56]), 1) == 52.7  # the paper's figure


@pytest.mark.parametrize("depth", sorted(FULL_MACS))
@pytest.mark.parametrize("shortcut", ["zero_pad", "projection"])
def test_random_archs_count_exactly(depth, shortcut):
    """At least 100 random architectures over all depths (10 per case here, 100 in all)."""
    space = SearchSpace.cifar_resnet(depth, shortcut=shortcut)
    rng = random.Random(depth * 7 + len(shortcut))
    for i in range(10):
        arch = Arch.random(space, rng) if i % 2 else any_width_arch(space, rng)
        model = tas.build_model(arch)
        assert arch.macs == tas.count_macs(model) == flop_counter_macs(model), arch.blocks
        assert arch.params == sum(p.numel() for p in model.parameters())
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_count_macs_counts_batch_and_leaves_mode_alone():
    model = tas.build_model(Arch.full(SearchSpace.cifar_resnet(20)))
    model.train()
    assert tas.count_macs(model, (4, 3, 32, 32)) == 4 * FULL_MACS[20]
    assert model.training


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_uniform_is_the_largest_multiplier_under_budget(ratio):
    space = SearchSpace.cifar_resnet(56)
    arch = Arch.uniform(space, macs_ratio=ratio)
    assert arch.blocks == space.max_blocks
    assert arch.macs <= ratio * FULL_MACS[56]
    m = arch.search["width_multiplier"]
    assert all(w == max(1, int(space.conv(n).channels * m + 1e-9)) for n, w in arch.widths.items())
    # the next width step up is over budget
    bigger = {n: min(space.conv(n).channels, w + 1) for n, w in arch.widths.items()}
    assert Arch(space, arch.blocks, bigger).macs > ratio * FULL_MACS[56]
    assert arch.macs > 0.9 * ratio * FULL_MACS[56]


def test_uniform_rejects_bad_ratios():
    space = SearchSpace.cifar_resnet(20)
    for ratio in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            Arch.uniform(space, ratio)
    with pytest.raises(ValueError, match="smallest"):
        Arch.uniform(space, 1e-6)


def test_found_json_round_trip(tmp_path):
    arch = authors_r56("projection")
    arch.search.update({"target_macs": 62_873_920, "ratio": 0.5})
    path = tmp_path / "found.json"
    arch.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "tas-arch/1"
    assert data["widths"]["stage3.block4.conv_b"] == 51
    assert data["macs"] == 59_451_390 and data["blocks"] == [5, 5, 5]
    loaded = Arch.load(path)
    assert loaded == arch and loaded.macs == arch.macs and loaded.search == arch.search
    assert loaded.space.shortcut == "projection"
    assert [p.name for p in tmp_path.iterdir()] == ["found.json"]  # no temp file left


def good_dict() -> dict:
    return Arch.full(SearchSpace.cifar_resnet(20)).to_dict()


def corrupt(**changes):
    data = good_dict()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    "data,message",
    [
        (corrupt(format="tas-arch/9"), "unknown format"),
        (corrupt(blocks=None), "missing field 'blocks'"),
        (corrupt(depth="20"), "field 'depth' must be int"),
        (corrupt(depth=21), "6n\\+2"),
        (corrupt(blocks=[3, 3, 4]), "stage3 keeps 4 blocks"),
        (corrupt(blocks=[3, 3]), "3 stages"),
        (corrupt(backbone="vgg"), "unknown backbone"),
        (corrupt(shortcut="option_b"), "shortcut"),
        (corrupt(macs=123), "'macs' says 123"),
        ([1, 2, 3], "JSON object"),
    ],
)
def test_malformed_dicts_are_rejected(data, message):
    with pytest.raises(ArchFormatError, match=message):
        Arch.from_dict(data)


def test_bad_widths_are_rejected():
    data = good_dict()
    data["widths"]["stage2.block1.conv_a"] = 33
    with pytest.raises(ArchFormatError, match="stage2.block1.conv_a is 33, outside 1..32"):
        Arch.from_dict(data)
    data = good_dict()
    data["widths"]["stage2.block1.conv_a"] = 12.5
    with pytest.raises(ArchFormatError, match="must be an integer"):
        Arch.from_dict(data)
    data = good_dict()
    del data["widths"]["stem"]
    with pytest.raises(ArchFormatError, match="missing 1 kept conv"):
        Arch.from_dict(data)
    data = good_dict()
    data["blocks"] = [2, 3, 3]  # drops stage1.block2 but its widths are still listed
    with pytest.raises(ArchFormatError, match="not kept"):
        Arch.from_dict(data)


def test_malformed_files_are_rejected_with_the_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ArchFormatError, match="no such file"):
        Arch.load(missing)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(good_dict())[:50])
    with pytest.raises(ArchFormatError, match="truncated.json: not valid JSON"):
        Arch.load(truncated)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ArchFormatError, match="not valid JSON"):
        Arch.load(empty)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ArchFormatError, match="cannot read|not valid JSON"):
        Arch.load(binary)
    assert issubclass(ArchFormatError, ValueError)


def test_random_arch_is_inside_the_search_space():
    space = SearchSpace.cifar_resnet(56)
    arch = Arch.random(space, random.Random(3))
    assert all(b in s.depth_choices for b, s in zip(arch.blocks, space.stages))
    assert all(w in space.conv(n).candidates for n, w in arch.widths.items())
