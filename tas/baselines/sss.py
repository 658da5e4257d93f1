"""Sparse Structure Selection (Huang & Wang, ECCV 2018) as a depth-pruning baseline: a scaling
factor on the residual branch of every removable block, trained with a sparsity penalty, and the
blocks with the smallest factors removed.

    arch, keep, pruned = sss_prune(teacher, 0.5, stream, steps=200)   # stream: (x, y) batches

What is removable: a block of index >= 1 in a stage whose depth is searchable, with an identity
shortcut (block 0 changes resolution or width and always stays). Its branch becomes
``lambda * main(x)``; with lambda = 0 the block is ``relu(x) = x`` (x is post-ReLU), so removing it
changes nothing.

Training (`train_block_scales`) starts from the trained full network: the weights by SGD with
momentum 0.9 and weight decay 5e-4 (train.py's) at a small learning rate (0.01), the lambdas
(initially 1) by the paper's optimiser, accelerated proximal gradient (APG): a momentum step on
the cross-entropy at the same lr and momentum, then soft-thresholding by lr * penalty, the
proximal step of ``penalty * sum |lambda|``. Why APG and not L1 + SGD: the soft-threshold sets a
lambda to exactly 0 once the loss gradient no longer holds it up, and a block at 0 is removed
without changing the network; an L1 subgradient leaves it oscillating around 0 with the step
size, so the removed blocks still carry (noisy) signal that the rest was trained with. After
training each lambda is folded into its block's last BatchNorm (that conv has no ReLU), so the
trained network is a plain `CompactNet` computing exactly what the scaled one does.
The penalty is larger than the paper's (which trains from scratch for the whole schedule): a
lambda can shrink by about lr x penalty x steps / (1 - momentum) through a short run. Measured on
the 4-epoch ResNet-20 (77.9% held-out), 200 steps of 64 images at lr 0.01: penalty 0.05 leaves
every lambda in 0.49-0.96; 0.5 sets the 4 weakest (stages 1-2) to exactly 0, and the pruned
network at 0.5 x MACs scores 57.2% held-out before fine-tuning, against 35.4% with penalty 0.2 and
19.5% with 0.05.

Selection (`select_blocks`), the "SSS depth + uniform width fill" rule:
1. Blocks ranked by |lambda| (ties, e.g. several at 0, by |z|, the value before the last
   soft-threshold, whose threshold lambda is: the same order where lambda != 0), removed from the
   smallest while the network's MACs stay >= the band's bottom, 0.98 x ratio x full; the first
   block whose removal would go below it stops the removal.
2. A block moves MACs in steps of a whole block (11.6% of ResNet-20, 3.7% of ResNet-56), so
   if the network is still above ratio x full, a uniform width reduction of the convs the filter
   baselines prune (`tas.baselines.prunable_convs`, in the kept blocks) closes the gap: filters
   are taken one at a time, always from the conv keeping the largest fraction of its filters
   (ties in network order), each conv losing its filters of smallest L1 norm, and the fewest
   drops that fit the budget win (bisected). Every such conv then keeps the same fraction of its
   filters to within one filter. (One exact fraction floor(C f) for all convs moves in steps of
   one filter from every conv at once, 2-3% of ResNet-20, and misses the 2% band at 0.5.)
   ResNet-20/32/56/110 land in the band at ratios 0.2-0.9 whatever the ranking, ImageNet
   ResNet-18/50 and MobileNetV2 at 0.5 too; a tiny ResNet-14 can miss it (0.292 at 0.3: one
   stage-1 filter is 1.1% of its MACs).
found.json's ``search`` records ``block_lambdas`` (every removable block), ``removed_blocks`` (in
removal order), ``block_sources`` (pruned position -> the full block it came from, where they
differ) and ``width_fill`` (None, or the fraction of those filters kept and the narrowed widths).

An `Arch` keeps the first k blocks of a stage, so after a middle block is removed the blocks
behind it move down: the returned network holds, at each position, the SSS-trained weights of the
block it came from (and the filters ``keep`` names, indices into that block's filters). Fine-tune
that network (prune.py writes it as NAME.init.ckpt), not the teacher: ``keep`` indexes the source
blocks, which are not the teacher's blocks at the same positions once blocks moved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import largest_within, model_space, named_convs, prunable_convs
from tas.compact import CompactNet, build_model
from tas.space import SearchSpace

BAND = 0.98  # the bottom of the MACs band, as a fraction of the target: [0.98 r, r] x full MACs


@dataclass(frozen=True)
class BlockRef:
    """A removable block: its place in the full network."""

    stage: int
    index: int
    name: str  # e.g. "stage2.block3"


@dataclass
class ScaledBlocks:
    """What `train_block_scales` returns."""

    model: CompactNet  # the SSS-trained full network, each lambda folded into its block
    lambdas: dict[str, float]  # removable block name -> lambda after the last proximal step
    scores: dict[str, float]  # removable block name -> |z| before that step (ranks the blocks)
    losses: list[float]  # cross-entropy at every step


def removable_blocks(space: SearchSpace) -> list[BlockRef]:
    """The blocks SSS may remove, in network order: index >= 1 of a depth-searchable stage,
    residual, with an identity shortcut and no ReLU after the branch's last BN (where lambda is
    folded)."""
    out = []
    for s, stage in enumerate(space.stages):
        if not space.searchable_stage(stage):
            continue
        for b, block in enumerate(stage.blocks[1:], start=1):
            if block.residual and not block.projection and not block.last.relu:
                out.append(BlockRef(s, b, block.name))
    return out


def _soft_threshold(z: torch.Tensor, t: float) -> torch.Tensor:
    return z.sign() * (z.abs() - t).clamp(min=0)


def train_block_scales(
    model: CompactNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 0.01,
    penalty: float = 0.5,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: Callable[[int, float], None] | None = None,
    seed: int = 0,
) -> ScaledBlocks:
    """Train a copy of ``model`` (the trained full network; left unchanged) with a factor lambda
    on each removable block's branch, ``steps`` steps of one batch each from ``batches`` (an
    endless stream, or a list that is cycled). Weights: SGD (``lr``, ``momentum``,
    ``weight_decay``); lambdas: APG at the same ``lr`` and ``momentum`` with the penalty
    ``penalty * sum |lambda|``. ``progress(step, loss)`` after every step (1-based). ``seed``
    seeds torch's RNG for the steps (forked: the caller's RNG is left as it was); the batches'
    order is the stream's own."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lr <= 0 or penalty < 0:
        raise ValueError(f"lr must be > 0 and penalty >= 0, got lr {lr}, penalty {penalty}")
    space = model_space(model)
    refs = removable_blocks(space)
    if not refs:
        raise ValueError(f"{space.describe()} has no removable blocks (no searchable depth)")
    net = copy.deepcopy(model).requires_grad_(True).train()
    device = next(net.parameters()).device
    weights = list(net.parameters())
    # the look-ahead point y = lambda + momentum * (lambda - previous lambda): where the loss
    # gradient is taken (what the network uses); `lam` is the proximal iterate
    point = torch.ones(len(refs), device=device, requires_grad=True)
    lam = torch.ones(len(refs), device=device)
    z = lam.clone()
    hooks = [
        net.stages[r.stage][r.index].main.register_forward_hook(
            lambda mod, inputs, out, i=i: out * point[i]
        )
        for i, r in enumerate(refs)
    ]
    opt = torch.optim.SGD(weights, lr=lr, momentum=momentum, weight_decay=weight_decay)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            for step, (x, y) in enumerate(_take(batches, steps), start=1):
                loss = F.cross_entropy(net(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                point.grad = None
                loss.backward()
                opt.step()
                with torch.no_grad():
                    z = point - lr * point.grad
                    new = _soft_threshold(z, lr * penalty)
                    point.copy_(new + momentum * (new - lam))
                    lam = new
                losses.append(loss.item())
                if progress is not None:
                    progress(step, losses[-1])
        finally:
            for h in hooks:
                h.remove()
    _fold(net, refs, lam)
    net.requires_grad_(False).eval()
    names = [r.name for r in refs]
    return ScaledBlocks(
        net,
        dict(zip(names, (v + 0.0 for v in lam.tolist()))),  # + 0.0: no -0.0
        dict(zip(names, z.abs().tolist())),
        losses,
    )


def _take(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches: from an endless stream as they come, from a list cycled."""
    taken = 0
    while taken < steps:
        before = taken
        for batch in batches:
            yield batch
            taken += 1
            if taken == steps:
                return
        if taken == before:  # an exhausted iterator: nothing on a second pass
            raise ValueError(f"the batches ran out after {taken} of {steps} steps")


@torch.no_grad()
def _fold(net: CompactNet, refs: list[BlockRef], lam: torch.Tensor) -> None:
    """``lambda * BN(conv(x))`` as one BN: scale its affine weight and bias by lambda."""
    for r, scale in zip(refs, lam.tolist()):
        bn = next(m for m in net.stages[r.stage][r.index].main[-1] if isinstance(m, nn.BatchNorm2d))
        bn.weight.mul_(scale)
        bn.bias.mul_(scale)


# ---------------------------------------------------------------------------- selection
def _kept_indices(space: SearchSpace, removed: list[BlockRef]) -> list[list[int]]:
    """Per stage, the full network's block indices that stay, in order."""
    gone = {(r.stage, r.index) for r in removed}
    return [
        [b for b in range(len(stage.blocks)) if (s, b) not in gone]
        for s, stage in enumerate(space.stages)
    ]


def _sources(space: SearchSpace, kept: list[list[int]]) -> dict[str, str]:
    """Conv name at each position of the pruned network -> the full network's conv it came
    from (the same name unless blocks moved down); the convs an Arch gives a width, so no
    depthwise conv (its width is its input's)."""
    out = {space.stem.name: space.stem.name}
    for stage, indices in zip(space.stages, kept):
        for position, source in enumerate(indices):
            for here, there in zip(stage.blocks[position].convs, stage.blocks[source].convs):
                if not here.depthwise:
                    out[here.name] = there.name
    return out


def _arch(space: SearchSpace, kept: list[list[int]], narrow: dict[str, int] | None = None) -> Arch:
    """The pruned network keeping the ``kept`` blocks, every conv at full width but those
    ``narrow`` names (their widths)."""
    widths = {name: space.conv(name).channels for name in _sources(space, kept)}
    widths.update(narrow or {})
    return Arch(space, tuple(len(k) for k in kept), widths)


def _drop_order(space: SearchSpace, names: list[str]) -> list[str]:
    """The convs the width fill takes a filter from, one after another: always the conv that
    keeps the largest fraction w / C of its filters (ties in network order), down to one filter
    each. After any number of drops every conv keeps the same fraction of its filters to within
    one filter, and the network shrinks one filter at a time."""
    drops = [
        (Fraction(w, space.conv(n).channels), i, n)
        for i, n in enumerate(names)
        for w in range(space.conv(n).channels, 1, -1)
    ]
    return [n for _, _, n in sorted(drops, key=lambda d: (-d[0], d[1]))]


def _narrowed(space: SearchSpace, order: list[str], drops: int) -> dict[str, int]:
    """Widths of the convs that lost filters after the first ``drops`` of ``order``."""
    widths: dict[str, int] = {}
    for name in order[:drops]:
        widths[name] = widths.get(name, space.conv(name).channels) - 1
    return widths


def _fill_convs(space: SearchSpace, kept: list[list[int]]) -> list[str]:
    """The convs the width fill narrows: the prunable ones (`prunable_convs`) in kept blocks."""
    here = _sources(space, kept)
    return [n for n in prunable_convs(space) if n in here]


def _check_reachable(space: SearchSpace, macs_ratio: float) -> None:
    """Raise before training when even every removable block removed and every prunable conv
    at one filter is above the budget."""
    check_ratio(macs_ratio)
    kept = _kept_indices(space, removable_blocks(space))
    smallest = _arch(space, kept, dict.fromkeys(_fill_convs(space, kept), 1))
    full = Arch.full(space).macs
    if smallest.macs > macs_ratio * full:
        raise ValueError(
            f"macs_ratio {macs_ratio} is below the smallest network SSS can reach on "
            f"{space.describe()} ({smallest.macs / full:.3f} x full MACs)"
        )


def select_blocks(
    trained: ScaledBlocks, macs_ratio: float
) -> tuple[Arch, dict[str, torch.Tensor], CompactNet]:
    """The pruned network of ``trained`` at ``macs_ratio`` x full MACs by the "SSS depth +
    uniform width fill" rule (module docstring): its Arch, ``keep`` (for each narrowed conv, the
    indices of the source block's filters it keeps) and the network itself with the trained
    weights of the blocks it keeps, moved to their new positions."""
    model = trained.model
    space = model_space(model)
    _check_reachable(space, macs_ratio)
    full = Arch.full(space)
    order = sorted(
        removable_blocks(space),
        key=lambda r: (abs(trained.lambdas[r.name]), trained.scores[r.name]),
    )
    removed: list[BlockRef] = []
    for ref in order:
        if _arch(space, _kept_indices(space, [*removed, ref])).macs < BAND * macs_ratio * full.macs:
            break
        removed.append(ref)
    kept = _kept_indices(space, removed)
    arch, fill = _arch(space, kept), None
    if arch.macs > macs_ratio * full.macs:
        drop = _drop_order(space, _fill_convs(space, kept))
        # fewer drops, a larger network: bisect for the fewest that fit
        arch = largest_within(
            range(len(drop), -1, -1),
            lambda d: _arch(space, kept, _narrowed(space, drop, d)),
            macs_ratio * full.macs,
            "SSS's width fill",
        )
        names = _fill_convs(space, kept)
        fill = {
            "filters_kept": sum(arch.widths[n] for n in names)
            / sum(space.conv(n).channels for n in names),
            "widths": {n: arch.widths[n] for n in names if arch.widths[n] < space.conv(n).channels},
        }
    sources = _sources(space, kept)
    convs = named_convs(model, full)
    keep = {}
    for name in fill["widths"] if fill else {}:
        conv = next(m for m in convs[sources[name]] if isinstance(m, nn.Conv2d))
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        keep[name] = norms.topk(arch.widths[name]).indices.sort().values.cpu()
    arch.search.update(
        {
            "method": "sss",
            "rule": "SSS depth + uniform width fill",
            "macs_ratio": macs_ratio,
            "block_lambdas": dict(trained.lambdas),
            "removed_blocks": [r.name for r in removed],
            "block_sources": _moved_blocks(space, kept),
            "width_fill": fill,
        }
    )
    return arch, keep, _pruned_network(model, arch, kept, keep)


def _moved_blocks(space: SearchSpace, kept: list[list[int]]) -> dict[str, str]:
    """Block name at a position of the pruned network -> the full network's block it came from,
    where they differ."""
    return {
        stage.blocks[position].name: stage.blocks[source].name
        for stage, indices in zip(space.stages, kept)
        for position, source in enumerate(indices)
        if position != source
    }


def _pruned_network(
    model: CompactNet, arch: Arch, kept: list[list[int]], keep: dict[str, torch.Tensor]
) -> CompactNet:
    """The network of ``arch`` with the weights of ``model`` (full, SSS-trained): each stage's
    kept blocks moved to its first positions, then the kept filters inherited. Removable blocks
    of a stage all have the same shapes, so the reordered network is still the full one."""
    reordered = copy.deepcopy(model)
    for s, indices in enumerate(kept):
        stage = reordered.stages[s]
        rest = [b for b in range(len(stage)) if b not in indices]
        reordered.stages[s] = nn.Sequential(*(stage[b] for b in [*indices, *rest]))
    return build_model(arch, init_from=reordered, keep=keep).eval()


def sss_prune(
    model: CompactNet,
    macs_ratio: float,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 0.01,
    penalty: float = 0.5,
    progress: Callable[[int, float], None] | None = None,
    seed: int = 0,
) -> tuple[Arch, dict[str, torch.Tensor], CompactNet]:
    """Sparse Structure Selection of ``model`` (a trained full network; left unchanged) to
    ``macs_ratio`` x full MACs: `train_block_scales` for ``steps`` batches, then
    `select_blocks`. Returns the Arch (its ``search`` records the lambdas, the removed blocks,
    the width fill and the training settings), ``keep`` and the pruned network to fine-tune."""
    _check_reachable(model_space(model), macs_ratio)  # before spending the training steps
    trained = train_block_scales(
        model, batches, steps, lr=lr, penalty=penalty, progress=progress, seed=seed
    )
    arch, keep, pruned = select_blocks(trained, macs_ratio)
    tail = trained.losses[-10:]
    arch.search.update(
        {
            "optimizer": "sgd (weights) + apg (lambdas)",
            "steps": steps,
            "lr": lr,
            "penalty": penalty,
            "seed": seed,
            "final_loss": sum(tail) / len(tail) if tail else None,  # mean of the last 10 steps
        }
    )
    return arch, keep, pruned
