"""Criterion-based pruning baselines that TAS is compared against, as Arch + kept filters.

* L1-norm filter pruning (Li et al., ICLR 2017), per-layer scope: every conv keeps the same
  fraction of its filters (the `Arch.uniform` widths for the MACs budget), choosing the filters
  with the largest L1 norm in the trained full network.
* Network Slimming (Liu et al., ICCV 2017): one global threshold on |BN scale| over all
  searchable convs, the largest-MACs network under the budget; a conv keeps the channels whose
  |gamma| is above it (at least one).

Both keep full depth and return ``keep``: for every kept conv, the indices (ascending) of the
filters of the full network it keeps, for fine-tuning with inherited weights.
"""

from __future__ import annotations

import torch
from torch import nn

from tas.arch import Arch, check_ratio
from tas.compact import CompactNet, ConvBN


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


def l1_norm_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Per-layer L1-norm filter pruning of a trained full network to ``macs_ratio``."""
    full = Arch.full(model_space(model))
    arch = Arch.uniform(full.space, macs_ratio)
    arch.search["method"] = "l1_norm"
    keep = {}
    for name, module in named_convs(model, full).items():
        weight = _part(module, nn.Conv2d).weight.detach()  # (C_out, C_in, k, k)
        keep[name] = _top(weight.abs().sum(dim=(1, 2, 3)), arch.widths[name])
    return arch, keep


def slimming_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Network Slimming: a global |BN scale| threshold, the largest network within budget."""
    check_ratio(macs_ratio)
    full = Arch.full(model_space(model))
    budget = macs_ratio * full.macs
    gammas = {
        name: _part(m, nn.BatchNorm2d).weight.detach().abs()
        for name, m in named_convs(model, full).items()
    }
    thresholds = torch.cat(list(gammas.values())).unique().sort().values  # ascending

    def at(i: int) -> Arch:
        t = thresholds[i]
        widths = {n: max(1, int((g >= t).sum())) for n, g in gammas.items()}
        return Arch(full.space, full.blocks, widths, {"method": "slimming"})

    lo, hi = 0, len(thresholds) - 1  # a higher threshold index: a smaller network
    if at(hi).macs > budget:
        raise ValueError(f"macs_ratio {macs_ratio} is below what slimming can reach")
    while lo < hi:  # smallest index (largest network) whose MACs fit the budget
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if at(mid).macs <= budget else (mid + 1, hi)
    arch = at(lo)
    arch.search["macs_ratio"] = macs_ratio
    keep = {n: _top(g, arch.widths[n]) for n, g in gammas.items()}
    return arch, keep


def model_space(model: CompactNet):
    """The search space a built full network came from (recorded by `build_model`)."""
    space = getattr(model, "space", None)
    if space is None:
        raise ValueError("the model carries no search space: build it with tas.build_model")
    return space
