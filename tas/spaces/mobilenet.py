"""torchvision's MobileNetV2 as a search space (`tas.SearchSpace.mobilenet_v2`)."""

from __future__ import annotations

from typing import NamedTuple

from tas.space import (
    WIDTH_RATIO_TENTHS,
    BlockSpec,
    ConvSpec,
    SearchSpace,
    StageSpec,
    depth_candidates,
    width_candidates,
)


class InvertedResidualStage(NamedTuple):
    """One row of MobileNetV2's layer table (Sandler et al. 2018, Table 2)."""

    expansion: int  # t: hidden width = t x block input width (t == 1: no expansion conv)
    channels: int  # c: output width at width multiplier 1
    blocks: int  # n
    stride: int  # s: the stride of the stage's first block (the others: 1)


MOBILENET_V2_STAGES: tuple[InvertedResidualStage, ...] = (
    InvertedResidualStage(1, 16, 1, 1),
    InvertedResidualStage(6, 24, 2, 2),
    InvertedResidualStage(6, 32, 3, 2),
    InvertedResidualStage(6, 64, 4, 2),
    InvertedResidualStage(6, 96, 3, 1),
    InvertedResidualStage(6, 160, 3, 2),
    InvertedResidualStage(6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's MobileNet channel rounding: ``value`` to the nearest multiple of
    ``divisor`` (at least ``divisor``), one multiple more where that lost over 10% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v2(
    num_classes: int = 1000,
    input_size: int = 224,
    width_mult: float = 1.0,
    width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
    width_multiple: int = 1,
) -> SearchSpace:
    """torchvision's MobileNetV2 exactly (Sandler et al. 2018): a 3x3/2 stem conv
    (conv-BN-ReLU6); the inverted-residual blocks of `MOBILENET_V2_STAGES`, each a 1x1
    expansion to t x its input width (conv-BN-ReLU6; absent when t == 1), a 3x3 depthwise
    conv with the block's stride (conv-BN-ReLU6) and a linear 1x1 projection (conv-BN), its
    input added where the stride is 1 and the widths are equal (no ReLU after the sum); a
    1x1 conv-BN-ReLU6 to 1280; global average pool, dropout 0.2, linear head. Widths are
    ``width_mult`` x torchvision's, rounded by `make_divisible`, as torchvision rounds them.
    Any ``input_size`` keeps torchvision's strides (32x32 inputs end on a 1x1 map).

    Searchable: each block's expansion width (its depthwise conv takes the same width: one
    choice, not two); the stem, which is block 0's expansion (t == 1), unless that block
    adds it to its output (small multipliers: 0.25); the last 1x1 conv; the depth of every stage
    of more than one block (its first block changes width or stride and is always kept).
    Each block's projection, the residual stream, stays at full width. ``depth`` is 53, the
    network's 52 convs and linear layer: a name, not a choice.
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    if input_size < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")

    def conv(name: str, channels: int, kernel: int, stride: int, search: bool) -> ConvSpec:
        candidates = (
            width_candidates(channels, width_tenths, width_multiple) if search else (channels,)
        )
        return ConvSpec(name, channels, candidates, kernel, stride, True, relu6=True)

    in_width = make_divisible(32 * width_mult)
    first = MOBILENET_V2_STAGES[0]
    stem_in_sum = first.stride == 1 and make_divisible(first.channels * width_mult) == in_width
    stem = conv("stem", in_width, 3, 2, not stem_in_sum)
    stages = []
    for s, row in enumerate(MOBILENET_V2_STAGES):
        out = make_divisible(row.channels * width_mult)
        blocks = []
        for b in range(row.blocks):
            stride = row.stride if b == 0 else 1
            prefix = f"stage{s + 1}.block{b}"
            hidden = in_width * row.expansion
            convs = [conv(f"{prefix}.expand", hidden, 1, 1, True)] if row.expansion > 1 else []
            convs.append(
                ConvSpec(
                    f"{prefix}.depthwise", hidden, (hidden,), 3, stride, True,
                    depthwise=True, relu6=True,
                )
            )  # fmt: skip
            convs.append(ConvSpec(f"{prefix}.project", out, (out,), 1, 1, False))  # linear
            residual = stride == 1 and in_width == out
            blocks.append(BlockSpec(prefix, tuple(convs), stride, False, residual, sum_relu=False))
            in_width = out
        stages.append(StageSpec(f"stage{s + 1}", tuple(blocks), depth_candidates(row.blocks)))
    # the last 1x1 conv: a stage of one plain block, as a VGG layer is
    name = f"stage{len(stages) + 1}"
    last = conv(f"{name}.block0.conv", make_divisible(1280 * max(1.0, width_mult)), 1, 1, True)
    last_block = BlockSpec(f"{name}.block0", (last,), 1, False, residual=False)
    stages.append(StageSpec(name, (last_block,), (1,)))
    return SearchSpace(
        "mobilenet_v2",
        53,
        num_classes,
        input_size,
        3,
        stem,
        tuple(stages),
        width_mult=float(width_mult),
        dropout=0.2,
    )
