"""Criterion-based pruning baselines that TAS is compared against, as Arch + kept filters.

Both prune inside residual blocks only (`tas.baselines.common.prunable_convs`).
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

from collections.abc import Callable

import torch
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import conv_part, largest_within, model_space, named_convs, prunable_convs
from tas.compact import CompactNet, ConvBN


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


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

    arch = largest_within(thresholds, at, macs_ratio * full.macs, method)
    arch.search["macs_ratio"] = macs_ratio
    return arch, {n: _top(v, arch.widths[n]) for n, v in scores.items()}


def l1_norm_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """L1-norm filter pruning of a trained full network to ``macs_ratio``, global scope: a
    filter's score is its L1 norm over the mean L1 norm of its layer's filters."""

    def score(m: ConvBN) -> torch.Tensor:
        norms = conv_part(m, nn.Conv2d).weight.detach().abs().sum(dim=(1, 2, 3))
        return norms / norms.mean()

    return _global_threshold(model, macs_ratio, "l1_norm", score)


def slimming_prune(model: CompactNet, macs_ratio: float) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Network Slimming: a global |BN scale| threshold, the largest network within budget."""
    return _global_threshold(
        model, macs_ratio, "slimming", lambda m: conv_part(m, nn.BatchNorm2d).weight.detach().abs()
    )
