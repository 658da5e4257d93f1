"""ResNets as search spaces: the CIFAR ResNets of He et al. (2016) and torchvision's ImageNet
ResNet-18/34/50/101/152 (`tas.SearchSpace.cifar_resnet`, `tas.SearchSpace.imagenet_resnet`)."""

from __future__ import annotations

from collections.abc import Callable

from tas.space import (
    WIDTH_RATIO_TENTHS,
    BlockSpec,
    ConvSpec,
    SearchSpace,
    StageSpec,
    depth_candidates,
    width_candidates,
)

# torchvision's ImageNet ResNets: blocks per stage, and the block each depth uses
IMAGENET_RESNET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def cifar_resnet(
    depth: int = 56,
    num_classes: int = 10,
    block: str | None = None,
    shortcut: str = "zero_pad",
    width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
    width_multiple: int = 1,
) -> SearchSpace:
    """CIFAR ResNet (He et al. 2016): ``block="basic"`` for depth 6n+2 (20/32/56/110),
    ``"bottleneck"`` for depth 9n+2 (164). ``block=None`` picks bottleneck for 164 and 1001,
    as the ResNet papers do, basic otherwise. Stem 3->16; stage widths 16/32/64 (bottleneck
    outputs 64/128/256); stride 2 at the first block of stages 2 and 3.
    """
    kind = block or ("bottleneck" if depth in (164, 1001) else "basic")
    per_block = {"basic": 6, "bottleneck": 9}
    if kind not in per_block:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {kind!r}")
    n, rest = divmod(depth - 2, per_block[kind])
    if rest or n < 1:
        raise ValueError(
            f"a CIFAR ResNet with {kind} blocks needs depth {per_block[kind]}n+2 (n >= 1), "
            f"got {depth}"
        )

    def conv(name: str, channels: int, kernel: int, stride: int, relu: bool, last: bool):
        candidates = width_candidates(channels, width_tenths, width_multiple)
        return ConvSpec(name, channels, candidates, kernel, stride, relu)

    stem = conv("stem", 16, 3, 1, True, False)
    stages = _resnet_stages(kind, (16, 32, 64), (n, n, n), 16, conv)
    return SearchSpace("cifar_resnet", depth, num_classes, 32, 3, stem, stages, shortcut)


def imagenet_resnet(
    depth: int = 50,
    num_classes: int = 1000,
    input_size: int = 224,
    width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
    width_multiple: int = 1,
) -> SearchSpace:
    """torchvision's ResNet-18/34/50/101/152 exactly: a 7x7/2 stem (64) and a 3x3/2
    max-pool; stages of 64/128/256/512 (bottleneck outputs 4x); BasicBlock (3x3, 3x3) or
    Bottleneck (1x1, 3x3, 1x1) with the stride on the 3x3 (ResNet v1.5); a 1x1 strided conv
    + BN downsample where the stride or the width changes; average pool and a linear head.

    Searchable: every conv inside a block but its last, whose output is the residual
    stream that identity shortcuts add into (kept at full width, so the compact network is
    a plain torchvision-shaped ResNet with no zero-padding); the stem too when it feeds a
    projection (bottleneck nets), not when it feeds stage 1's identity shortcuts (basic).
    Depth per stage as in `depth_candidates`.
    """
    if depth not in IMAGENET_RESNET_LAYERS:
        raise ValueError(
            f"an ImageNet ResNet has depth in {sorted(IMAGENET_RESNET_LAYERS)}, got {depth}"
        )
    if input_size < 32:
        raise ValueError(f"input_size must be >= 32 (five stride-2 steps), got {input_size}")
    kind, layers = IMAGENET_RESNET_LAYERS[depth]

    def conv(name: str, channels: int, kernel: int, stride: int, relu: bool, last: bool):
        search = not last  # a block's last conv: the residual stream, kept whole
        candidates = (
            width_candidates(channels, width_tenths, width_multiple) if search else (channels,)
        )
        return ConvSpec(name, channels, candidates, kernel, stride, relu)

    # the stem is searched where it feeds a projection, not stage 1's identity shortcuts
    stem = conv("stem", 64, 7, 2, True, last=kind == "basic")
    stages = _resnet_stages(kind, (64, 128, 256, 512), layers, 64, conv)
    return SearchSpace(
        "imagenet_resnet",
        depth,
        num_classes,
        input_size,
        3,
        stem,
        stages,
        stem_pool=True,
        downsample="strided",
    )


def _resnet_stages(
    kind: str,
    widths: tuple[int, ...],
    layers: tuple[int, ...],
    in_width: int,
    conv: Callable[[str, int, int, int, bool, bool], ConvSpec],
) -> tuple[StageSpec, ...]:
    """Stages of basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 at 4x) blocks, ``layers[s]``
    blocks of inner width ``widths[s]``, stride 2 on the first block of every stage but the
    first (on the 3x3), a projection where the stride or the width changes. ``conv(name,
    channels, kernel, stride, relu, last)`` makes each conv (``last``: the block's last)."""
    stages = []
    for s, (mid, n) in enumerate(zip(widths, layers)):
        blocks = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            prefix = f"stage{s + 1}.block{b}"
            if kind == "basic":
                out = mid
                convs = (
                    conv(f"{prefix}.conv_a", mid, 3, stride, True, False),
                    conv(f"{prefix}.conv_b", mid, 3, 1, False, True),
                )
            else:
                out = 4 * mid
                convs = (
                    conv(f"{prefix}.conv_a", mid, 1, 1, True, False),
                    conv(f"{prefix}.conv_b", mid, 3, stride, True, False),
                    conv(f"{prefix}.conv_c", out, 1, 1, False, True),
                )
            blocks.append(BlockSpec(prefix, convs, stride, stride != 1 or in_width != out))
            in_width = out
        stages.append(StageSpec(f"stage{s + 1}", tuple(blocks), depth_candidates(n)))
    return tuple(stages)
