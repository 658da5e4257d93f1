"""What every pruning baseline shares: which convs a baseline may prune (`prunable_convs`), a
built network's convs by name (`named_convs`), the space a built network came from
(`model_space`), the largest network of a family that fits a MACs budget (`largest_within`), and
random networks within a band of a budget (`random_within`, the random baseline).

The baselines prune *inside* residual blocks only (every conv of a block but its last), as their
papers do for ResNets: the channels of the residual stream (stem, each block's last conv,
shortcuts) are added position by position, so pruning them by a per-conv criterion would
misalign the sums. In a plain network (VGG) they prune every conv.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from torch import nn

from tas.arch import Arch, check_ratio
from tas.compact import CompactNet, ConvBN
from tas.space import SearchSpace


def prunable_convs(space: SearchSpace) -> list[str]:
    """Names of the convs the baselines prune: every conv of a residual block but its last,
    every conv of a plain chain (VGG), and the stem unless an identity shortcut adds it; of
    those, the searchable ones (a MobileNetV2 keeps its residual stream, every block's
    projection, whole; a depthwise conv has no width of its own and follows its input)."""
    first = space.stages[0].blocks[0]
    stem = [] if first.residual and not first.projection else [space.stem]
    inner = [
        c
        for stage in space.stages
        for b in stage.blocks
        for c in (b.convs[:-1] if b.residual else b.convs)
    ]
    return [c.name for c in stem + inner if not c.depthwise and space.searchable(c)]


def named_convs(model: CompactNet, arch: Arch) -> dict[str, ConvBN]:
    """The ConvBN of every searchable conv of a built network, by its place name."""
    out = {"stem": model.stem}
    for stage_spec, stage, kept in zip(arch.space.stages, model.stages, arch.blocks):
        for spec, block in zip(stage_spec.blocks[:kept], stage):
            for conv_spec, module in zip(spec.convs, block.main):
                out[conv_spec.name] = module
    return out


def conv_part(module: ConvBN, kind: type[nn.Module]) -> nn.Module:
    return next(m for m in module if isinstance(m, kind))


def largest_within(points: list, build: Callable[[object], Arch], budget: float, what: str) -> Arch:
    """``build(points[i])`` for the largest i whose network fits ``budget``; points ascending in
    network size."""
    if build(points[0]).macs > budget:
        raise ValueError(f"the MACs budget is below the smallest network {what} can reach")
    lo, hi = 0, len(points) - 1
    while lo < hi:  # invariant: points[lo] fits the budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if build(points[mid]).macs <= budget else (lo, mid - 1)
    return build(points[lo])


def model_space(model: CompactNet) -> SearchSpace:
    """The search space a built full network came from (recorded by `build_model`)."""
    space = getattr(model, "space", None)
    if space is None:
        raise ValueError("the model carries no search space: build it with tas.build_model")
    return space


def random_within(
    space: SearchSpace,
    macs_ratio: float,
    generator: random.Random,
    tolerance: float = 0.02,
    max_draws: int = 100_000,
) -> Arch:
    """The first `Arch.random` draw whose MACs lie within ``tolerance`` (relative) of
    ``macs_ratio`` x full MACs: the random-architecture baseline at a given budget."""
    check_ratio(macs_ratio)
    target = macs_ratio * Arch.full(space).macs
    for draw in range(1, max_draws + 1):
        arch = Arch.random(space, generator)
        if abs(arch.macs - target) <= tolerance * target:
            arch.search.update({"macs_ratio": macs_ratio, "draws": draw})
            return arch
    raise ValueError(
        f"no random network within {tolerance:.0%} of {macs_ratio} x full MACs in {max_draws} draws"
    )
