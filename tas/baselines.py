"""Criterion-based pruning baselines that TAS is compared against, as Arch + kept filters.

Both prune *inside* residual blocks only (every conv of a block but its last), as the papers do
for ResNets: the channels of the residual stream (stem, each block's last conv, shortcuts) are
added position by position, so pruning them by a per-conv criterion would misalign the sums. In
a plain network (VGG) they prune every conv.
Both keep full depth and return ``keep``: for every pruned conv, the indices (ascending) of the
full network's filters it keeps, for fine-tuning with inherited weights
(``tas.build_model(arch, init_from=full_model, keep=keep)``).

* L1-norm filter pruning (Li et al., ICLR 2017), global scope: filters ranked across layers by
  L1 norm relative to the mean norm of their layer (raw norms scale with fan-in), one threshold,
  the lowest whose network fits the MACs budget. (One per-layer ratio cannot reach a budget
  within 2% on CIFAR ResNets: a step of the ratio moves every 16-filter conv at once, 4-6% of the
  MACs.)
* Network Slimming (Liu et al., ICCV 2017): one global threshold on |BN scale| over the pruned
  convs, the lowest whose network fits the budget; a conv keeps the channels whose |gamma| is
  at or above it (at least one). Train the network with ``bn_l1`` (sparsity) first.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
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


def _part(module: ConvBN, kind: type[nn.Module]) -> nn.Module:
    return next(m for m in module if isinstance(m, kind))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


def _largest_within(
    points: list, build: Callable[[object], Arch], budget: float, what: str
) -> Arch:
    """``build(points[i])`` for the largest i whose network fits ``budget``; points ascending in
    network size."""
    if build(points[0]).macs > budget:
        raise ValueError(f"the MACs budget is below the smallest network {what} can reach")
    lo, hi = 0, len(points) - 1
    while lo < hi:  # invariant: points[lo] fits the budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if build(points[mid]).macs <= budget else (lo, mid - 1)
    return build(points[lo])


def _scores(model: CompactNet, full: Arch, score: Callable[[ConvBN], torch.Tensor]) -> dict:
    convs = named_convs(model, full)
    return {name: score(convs[name]) for name in prunable_convs(full.space)}


def _global_threshold(
    model: CompactNet, macs_ratio: float, method: str, score: Callable[[ConvBN], torch.Tensor]
) -> tuple[Arch, dict[str, torch.Tensor]]:
    """One threshold on ``score`` over the channels of every prunable conv: the lowest (largest
    network) whose MACs fit ``macs_ratio`` x full; each conv keeps its channels at or above it."""
    check_ratio(macs_ratio)
    full = Arch.full(model_space(model))
    scores = _scores(model, full, score)
    # descending thresholds: a lower threshold keeps more channels, a larger network
    thresholds = torch.cat(list(scores.values())).unique().sort(descending=True).values.tolist()

    def at(t: float) -> Arch:
        widths = dict(full.widths)
        widths.update({n: max(1, int((v >= t).sum())) for n, v in scores.items()})
        return Arch(full.space, full.blocks, widths, {"method": method, "threshold": t})

    arch = _largest_within(thresholds, at, macs_ratio * full.macs, method)
    arch.search["macs_ratio"] = macs_ratio
    return arch, {n: _top(v, arch.widths[n]) for n, v in scores.items()}


def l1_norm_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """L1-norm filter pruning of a trained full network to ``macs_ratio``, global scope: a
    filter's score is its L1 norm over the mean L1 norm of its layer's filters."""

    def score(m: ConvBN) -> torch.Tensor:
        norms = _part(m, nn.Conv2d).weight.detach().abs().sum(dim=(1, 2, 3))
        return norms / norms.mean()

    return _global_threshold(model, macs_ratio, "l1_norm", score)


def slimming_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Network Slimming: a global |BN scale| threshold, the largest network within budget."""
    return _global_threshold(
        model, macs_ratio, "slimming", lambda m: _part(m, nn.BatchNorm2d).weight.detach().abs()
    )


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
