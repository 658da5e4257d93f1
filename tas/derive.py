"""The most probable network inside a budget band, from the search's distributions.

The paper derives the argmax of every distribution (`Supernet.derive`) and keeps the best epoch
whose argmax network lies inside the band. When no epoch's does (a depth choice that toggles
across the band, its two sides several MACs apart), the budget is still what the user asked
for: `most_probable_within` returns the network of largest probability under the final
distributions,

    log P(net) = sum over searched stages of log pi_s(depth_s)
               + sum over the kept searched convs of log p_c(width_c),

among those whose cost lies in [low, high]: the probability of drawing that network from the
distributions (a removed block's convs do not count, whatever their widths). Once a search has
settled (every distribution near one-hot) the argmax network is the most probable one, and the
answer whenever it lies in the band; while distributions are still spread, a network keeping
fewer blocks can be more probable than the argmax, having fewer uncertain widths.

The search is an exact branch and bound: depth choices in order of their best possible
log-probability, then each kept conv's candidates in order of probability, a branch cut when
its log-probability cannot beat the best network found or when no completion can land in the
band. The second cut needs a cost that never falls when a width grows: MACs (conv MACs are
products of widths, a zero-padded join is a max) and a latency table's prediction when its
per-layer times do not fall with width. ``max_nodes`` bounds the work (about 0.2-0.3 ms a node
for CIFAR ResNets on one CPU thread); a search cut short returns the best network it found with
``exact`` False. A settled search's distributions take a few thousand nodes (ResNet-20 from the
full-data study: about 3,000, under a second); near-uniform ones can run out of nodes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tas.arch import Arch, make_plan
from tas.space import SearchSpace

Cost = Callable[[tuple[int, ...], dict[str, int]], float]


@dataclass
class Derived:
    arch: Arch
    log_prob: float  # log P of this network under the distributions, in nats
    exact: bool  # the search finished: no network inside the band is more probable
    nodes: int  # partial networks the search visited


def macs_cost(space: SearchSpace) -> Cost:
    """The MACs of the network keeping ``blocks`` with ``widths``."""
    return lambda blocks, widths: make_plan(space, blocks, widths).macs


def most_probable_within(
    space: SearchSpace,
    width_log_probs: torch.Tensor,
    depth_log_probs: torch.Tensor,
    low: float,
    high: float,
    cost: Cost | None = None,
    max_nodes: int = 50_000,
) -> Derived | None:
    """The most probable network whose ``cost(blocks, widths)`` (MACs by default) lies in
    [low, high]; None when the space has none.

    width_log_probs: (num_convs, M) log-probabilities of each conv's candidates, rows in
    ``space.convs()`` order; depth_log_probs: (num_stages, D) of each stage's depth choices
    (what `Supernet.width_probs` / `depth_probs` give, logged). Stages and convs with one
    choice add nothing to the log-probability.
    """
    if not low <= high:
        raise ValueError(f"the band [{low}, {high}] is empty")
    cost = cost or macs_cost(space)
    rows = {c.name: r for r, c in enumerate(space.convs())}
    wlp = width_log_probs.detach().double().cpu().tolist()
    dlp = depth_log_probs.detach().double().cpu().tolist()

    def conv_options(name: str) -> list[tuple[float, int]]:
        """(log-probability, width) of a conv's candidates, most probable first."""
        cands = space.conv(name).candidates
        if len(cands) == 1:
            return [(0.0, cands[0])]
        return sorted(((wlp[rows[name]][k], w) for k, w in enumerate(cands)), reverse=True)

    options = {c.name: conv_options(c.name) for c in space.convs()}
    depth_options = []  # per stage: (log-probability, blocks kept)
    for s, stage in enumerate(space.stages):
        if len(stage.depth_choices) == 1:
            depth_options.append([(0.0, stage.depth_choices[0])])
        else:
            depth_options.append([(dlp[s][k], d) for k, d in enumerate(stage.depth_choices)])

    combos = []
    for picks in itertools.product(*depth_options):
        blocks = tuple(d for _, d in picks)
        convs = [c.name for c in space.kept_convs(blocks)]
        depth_lp = sum(lp for lp, _ in picks)
        combos.append((depth_lp + sum(options[n][0][0] for n in convs), depth_lp, blocks, convs))
    combos.sort(key=lambda c: c[0], reverse=True)

    best: list = [-math.inf, None]  # log-probability, (blocks, widths)
    nodes = 0

    def visit(blocks, convs, i, widths, lp, rest_best) -> bool:
        """Extend ``widths`` (the first i convs of ``convs`` chosen, log-probability ``lp``);
        False once the node budget is spent."""
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            return False
        if i == len(convs):
            c = cost(blocks, widths)
            if low <= c <= high and lp > best[0]:
                best[0], best[1] = lp, (blocks, dict(widths))
            return True
        rest = {n: options[n] for n in convs[i:]}
        smallest = cost(blocks, widths | {n: min(w for _, w in o) for n, o in rest.items()})
        largest = cost(blocks, widths | {n: max(w for _, w in o) for n, o in rest.items()})
        if smallest > high or largest < low:
            return True
        name = convs[i]
        rest_best -= options[name][0][0]
        for option_lp, width in options[name]:
            if lp + option_lp + rest_best <= best[0]:
                break  # the options are in falling probability: no later one can do better
            widths[name] = width
            if not visit(blocks, convs, i + 1, widths, lp + option_lp, rest_best):
                return False
            del widths[name]
        return True

    finished = True
    for bound, depth_lp, blocks, convs in combos:
        if bound <= best[0]:
            break
        rest_best = sum(options[n][0][0] for n in convs)
        if not visit(blocks, convs, 0, {}, depth_lp, rest_best):
            finished = False
            break
    if best[1] is None:
        if finished:
            return None
        raise RuntimeError(
            f"no network inside [{low:g}, {high:g}] found within {max_nodes} search nodes"
        )
    blocks, widths = best[1]
    return Derived(Arch(space, blocks, widths), best[0], finished, nodes)


def log_prob(arch: Arch, width_log_probs: torch.Tensor, depth_log_probs: torch.Tensor) -> float:
    """log P of ``arch`` under the distributions (the objective `most_probable_within` maximises)."""
    space = arch.space
    rows = {c.name: r for r, c in enumerate(space.convs())}
    total = 0.0
    for s, (stage, kept) in enumerate(zip(space.stages, arch.blocks)):
        if len(stage.depth_choices) > 1:
            total += float(depth_log_probs[s, stage.depth_choices.index(kept)])
    for conv in space.kept_convs(arch.blocks):
        if len(conv.candidates) > 1:
            k = conv.candidates.index(arch.widths[conv.name])
            total += float(width_log_probs[rows[conv.name], k])
    return total
