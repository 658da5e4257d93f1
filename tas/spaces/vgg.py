"""The CIFAR VGGs with BatchNorm of Network Slimming and "Rethinking the Value of Network
Pruning" as search spaces (`tas.SearchSpace.cifar_vgg`)."""

from __future__ import annotations

from tas.space import (
    WIDTH_RATIO_TENTHS,
    BlockSpec,
    ConvSpec,
    SearchSpace,
    StageSpec,
    width_candidates,
)

# The CIFAR VGGs of Network Slimming (Liu et al. 2017) and "Rethinking the Value of Network
# Pruning" (Liu et al. 2019): conv widths, "M" a 2x2 max-pool; then a 2x2 average pool (global
# on the 2x2 map left) and one linear layer.
CIFAR_VGG_LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
    + (512, 512, 512, 512),
}


def cifar_vgg(
    depth: int = 16,
    num_classes: int = 10,
    width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
    width_multiple: int = 1,
) -> SearchSpace:
    """The CIFAR VGG-11/13/16/19 with BatchNorm of Network Slimming and "Rethinking the
    Value of Network Pruning": 3x3 conv + BN + ReLU layers with 2x2 max-pools between the
    groups (`CIFAR_VGG_LAYERS`), then a global average pool (their AvgPool(2) on the 2x2
    map) and a single linear classifier. Every conv's width is searched; depth is not (a
    stage is one group between two pools; its depth choice is its full length)."""
    if depth not in CIFAR_VGG_LAYERS:
        raise ValueError(f"a CIFAR VGG has depth in {sorted(CIFAR_VGG_LAYERS)}, got {depth}")

    def conv(name: str, channels: int, pooled: bool) -> ConvSpec:
        candidates = width_candidates(channels, width_tenths, width_multiple)
        return ConvSpec(name, channels, candidates, 3, 1, True, pooled)

    layers = CIFAR_VGG_LAYERS[depth]
    stem = conv("stem", int(layers[0]), False)
    groups: list[list[ConvSpec]] = [[]]
    pooled = False
    for width in layers[1:]:
        if width == "M":
            pooled = True
            if groups[-1]:
                groups.append([])
            continue
        s, b = len(groups), len(groups[-1])
        groups[-1].append(conv(f"stage{s}.block{b}.conv", int(width), pooled))
        pooled = False
    stages = tuple(
        StageSpec(
            f"stage{s + 1}",
            tuple(BlockSpec(c.name.rsplit(".", 1)[0], (c,), 1, False, False) for c in group),
            (len(group),),
        )
        for s, group in enumerate(groups)
    )
    return SearchSpace("cifar_vgg", depth, num_classes, 32, 3, stem, stages)
