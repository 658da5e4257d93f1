"""Iterative pruning in k rounds: prune part of the way, fine-tune, prune the fine-tuned network
further, k times, to the final target (Han et al. 2015 for weights; Li et al. 2017 also prune
and retrain filters iteratively).

The targets are geometric: every round removes the same fraction of what the last round left,
so round r of k keeps (1 - s)^(r/k) of the weights for a final sparsity s (`round_sparsity`),
or r-th root steps of the MACs for a final MACs ratio rho: rho^(r/k) (`round_macs_ratio`).

A structured round prunes a network that is already pruned. A pruned network of a space is the
*full* network of a narrower space (`narrowed_space`: every conv's width capped at what the
network kept), so the one-shot criteria (`tas.baselines.l1_norm_prune`) and the weight
inheritance of `tas.build_model` work on it unchanged:

    arch, keep = prune_further(l1_norm_prune, model, model_arch, macs_ratio=0.3)
    pruned = inherit_from(arch, model, model_arch, keep)   # model's kept filters, its weights

``keep`` lists, per pruned conv, the filters *of the network pruned* (``model``), not of the
original full network; ``arch.search["pruned_from_widths"]`` records that network's widths so
that weights are never inherited from another one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch

from tas.arch import Arch, check_ratio
from tas.compact import CompactNet, build_model
from tas.space import ConvSpec, SearchSpace

# (a full network of a space, MACs ratio of that network) -> (Arch of that space, kept filters)
Criterion = Callable[[CompactNet, float], tuple[Arch, dict[str, torch.Tensor]]]


def parse_round(text: str) -> tuple[int, int]:
    """``"R/K"`` -> (R, K): round R of a K-round schedule, 1 <= R <= K."""
    try:
        r, k = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"a round is R/K (e.g. 2/3), got {text!r}") from None
    if not 1 <= r <= k:
        raise ValueError(f"round {text}: R/K needs 1 <= R <= K")
    return r, k


def round_sparsity(final: float, r: int, rounds: int) -> float:
    """Weight sparsity after round ``r`` of ``rounds`` to ``final``: 1 - (1 - final)^(r/k),
    each round pruning the same fraction of the weights the last one left."""
    if not 0.0 <= final < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {final!r}")
    return 1.0 - (1.0 - final) ** (r / rounds)


def round_macs_ratio(final: float, r: int, rounds: int) -> float:
    """MACs ratio (of the full network) after round ``r`` of ``rounds`` to ``final``:
    final^(r/k), each round removing the same fraction of the MACs the last one left."""
    check_ratio(final)
    return final ** (r / rounds)


def narrowed_space(arch: Arch) -> SearchSpace:
    """The space whose full network is ``arch``'s network: its kept blocks, every conv's
    channels capped at ``arch``'s width (candidates above it dropped). Shortcuts are planned
    from the same block specs, so the two networks have the same layers and state-dict names."""
    space = arch.space
    last = 0  # the width of the conv before: a depthwise conv (MobileNetV2) takes it

    def conv(c: ConvSpec) -> ConvSpec:
        nonlocal last
        width = last if c.depthwise else arch.widths[c.name]
        last = width
        return replace(
            c, channels=width, candidates=(*(w for w in c.candidates if w < width), width)
        )

    stem = conv(space.stem)  # in network order: each depthwise conv sees its producer's width
    stages = tuple(
        replace(
            stage,
            blocks=tuple(replace(b, convs=tuple(map(conv, b.convs))) for b in stage.blocks[:kept]),
            depth_choices=(*(d for d in stage.depth_choices if d < kept), kept),
        )
        for stage, kept in zip(space.stages, arch.blocks)
    )
    return replace(space, stem=stem, stages=stages)


def _as_full(model: CompactNet, arch: Arch) -> CompactNet:
    """``model`` (a built network of ``arch``) as the full network of `narrowed_space`."""
    full = build_model(Arch.full(narrowed_space(arch)))
    full.load_state_dict(model.state_dict())
    return full


def prune_further(
    prune: Criterion, model: CompactNet, arch: Arch, macs_ratio: float
) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Prune ``model``, a built network of ``arch`` (full or already pruned), with the one-shot
    criterion ``prune`` to ``macs_ratio`` x the MACs of the *full* network of ``arch.space``.

    Returns the pruned Arch (of ``arch.space``) and ``keep``: per pruned conv, the indices of
    ``model``'s filters it keeps. A pruned ``arch`` is recorded in the result's
    ``search["pruned_from_widths"]``."""
    check_ratio(macs_ratio)
    target = macs_ratio * Arch.full(arch.space).macs
    if target >= arch.macs:
        raise ValueError(
            f"the network has {arch.macs / 1e6:.2f}M MACs, already within the target "
            f"{target / 1e6:.2f}M ({macs_ratio:.4g} x full)"
        )
    narrow, keep = prune(_as_full(model, arch), target / arch.macs)
    search = {**narrow.search, "macs_ratio": macs_ratio}
    if arch != Arch.full(arch.space):
        search["pruned_from_widths"] = dict(arch.widths)
    return Arch(arch.space, narrow.blocks, narrow.widths, search), keep


def inherit_from(
    arch: Arch,
    source: CompactNet,
    source_arch: Arch,
    keep: Mapping[str, Sequence[int] | torch.Tensor],
) -> CompactNet:
    """The network of ``arch`` with the weights of the filters ``keep`` names in ``source``, a
    built network of ``source_arch`` (the full network of the same space, or a pruned one that
    ``arch`` was pruned from). See `tas.compact.inherit_weights` for ``keep``."""
    if source_arch.space != arch.space:
        raise ValueError(
            f"the source network is {source_arch.space.describe()}, the architecture "
            f"{arch.space.describe()}"
        )
    narrow = narrowed_space(source_arch)
    pruned = build_model(
        Arch(narrow, arch.blocks, arch.widths), _as_full(source, source_arch), keep
    )
    model = build_model(arch)
    model.load_state_dict(pruned.state_dict())
    return model


__all__ = [
    "inherit_from",
    "narrowed_space",
    "parse_round",
    "prune_further",
    "round_macs_ratio",
    "round_sparsity",
]
