import pytest

from tas.space import SearchSpace, depth_candidates, width_candidates


def test_width_candidates_match_the_method():
    assert width_candidates(16) == (4, 6, 8, 9, 11, 12, 14, 16)
    assert width_candidates(32) == (9, 12, 16, 19, 22, 25, 28, 32)
    assert width_candidates(64) == (19, 25, 32, 38, 44, 51, 57, 64)


@pytest.mark.parametrize(
    "depth,choices",
    [
        (20, (1, 2, 3)),
        (32, (1, 3, 5)),
        (56, (1, 3, 5, 7, 9)),
        (110, tuple(range(1, 18, 2)) + (18,)),
        (164, tuple(range(1, 18, 2)) + (18,)),
    ],
)
def test_depth_choices(depth, choices):
    space = SearchSpace.cifar_resnet(depth)
    assert all(stage.depth_choices == choices for stage in space.stages)


def test_depth_candidates_small_stages():
    assert depth_candidates(1) == (1,)
    assert depth_candidates(2) == (1, 2)
    assert depth_candidates(4) == (1, 3, 4)
    with pytest.raises(ValueError):
        depth_candidates(0)


def test_basic_and_bottleneck_layout():
    basic = SearchSpace.cifar_resnet(20)
    assert basic.block_kind == "basic" and basic.max_blocks == (3, 3, 3)
    assert len(basic.convs()) == 1 + 9 * 2
    assert [c.name for c in basic.convs()[:3]] == [
        "stem",
        "stage1.block0.conv_a",
        "stage1.block0.conv_b",
    ]
    assert [b.projection for s in basic.stages for b in s.blocks] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        False,
    ]
    bottleneck = SearchSpace.cifar_resnet(164)
    assert bottleneck.block_kind == "bottleneck" and bottleneck.max_blocks == (18, 18, 18)
    assert len(bottleneck.convs()) == 1 + 54 * 3
    first = bottleneck.stages[0].blocks[0]
    assert first.projection and first.stride == 1 and first.last.channels == 64
    assert bottleneck.head_in == 256
    # the stride sits on the 3x3 conv of a bottleneck
    assert [c.stride for c in bottleneck.stages[1].blocks[0].convs] == [1, 2, 1]


def test_bad_depths_and_modes():
    for depth in (21, 0, 2):
        with pytest.raises(ValueError):
            SearchSpace.cifar_resnet(depth)
    with pytest.raises(ValueError):
        SearchSpace.cifar_resnet(20, shortcut="option_b")
    with pytest.raises(ValueError):
        SearchSpace.from_name("mobilenet", 20, 10)
    assert SearchSpace.cifar_resnet(110, block="bottleneck").max_blocks == (12, 12, 12)


def test_width_candidates_rounded_to_multiples():
    assert width_candidates(16, multiple=8) == (8, 16)
    assert width_candidates(32, multiple=8) == (8, 16, 24, 32)
    assert width_candidates(64, multiple=8) == (16, 24, 32, 40, 48, 56, 64)
    space = SearchSpace.cifar_resnet(20, width_multiple=8)
    assert all(w % 8 == 0 for c in space.convs() for w in c.candidates)
