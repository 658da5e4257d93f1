"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network to a latency budget one layer at
a time, choosing each step by the accuracy of short-fine-tuned proposals.

    arch, keep, net = netadapt_prune(teacher, table, target_ms=1.5, train_batches=stream,
                                     val_batches=held_out, short_steps=20)
    arch, keep, net = netadapt_prune_macs(teacher, 0.5, stream, held_out)   # MACs in its place

Iteration i asks for ``cost(previous network) - decrement``, a constant schedule (the same
decrement every iteration; the last step asks for the target itself; an iteration where no single
layer can cut that much halves its decrement until one can). For each prunable conv
(`tas.baselines.prunable_convs`: inside residual blocks, every conv of a plain chain) it proposes
the largest width that meets that step, drops the filters of smallest L1 norm, fine-tunes the
proposal for ``short_steps`` SGD steps on the iteration's training batches (the same batches for
every proposal) and scores it on the held-out batches; the best proposal, with its fine-tuned
weights, is the next network. Layers that cannot meet the step are skipped. It stops when the
cost meets the target: each iteration narrows one conv, so it is bounded by the prunable
filters, and by ceil((full cost - target) / decrement) while no decrement is halved.

Cost is a `tas.budget` budget: a `LatencyBudget` (the latency table's prediction; widths are the
space's candidates, the widths the table holds) or a `MacsBudget` (exact MACs; any width, so a
filter is the step and the network lands in the budget's band [target - tolerance, target]).
The method draws no random numbers of its own; ``seed`` fixes torch's generator while it runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import model_space, named_convs, prunable_convs
from tas.budget import Budget, LatencyBudget, MacsBudget
from tas.compact import CompactNet, build_model
from tas.evaluate import evaluate
from tas.space import SearchSpace

if TYPE_CHECKING:  # tas.latency is imported by who profiles or loads a table
    from tas.latency import LatencyTable

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # the SGD of train.py (Nesterov), for the short fine-tunes
MAX_HALVINGS = 30  # of an iteration's decrement: 2^-30 of it is below any one filter's cost


@dataclass(frozen=True)
class Iteration:
    """One NetAdapt step: what it asked for and the proposal it kept."""

    iteration: int  # 1-based
    decrement: float  # the cut asked: the schedule's, halved until some layer could meet it
    target: float  # the step's cost target, in the budget's unit
    conv: str  # the layer it shrank
    width: int  # that layer's new width
    cost: float  # the new network's cost (ms predicted by the table, or MACs)
    accuracy: float  # held-out top-1 of the kept proposal after its fine-tune
    loss: float  # its held-out cross-entropy (breaks accuracy ties)
    proposals: int  # layers that could meet the step (the others were skipped)
    seconds: float  # wall time of the iteration


def netadapt_prune(
    model: CompactNet,
    table: LatencyTable,
    target_ms: float,
    train_batches: Batches,
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decrement_ms: float | None = None,
    short_steps: int = 20,
    lr: float = 0.01,
    progress: Callable[[Iteration], None] | None = None,
    seed: int = 0,
) -> tuple[Arch, dict[str, torch.Tensor], CompactNet]:
    """NetAdapt of the trained full ``model`` down to ``target_ms`` milliseconds predicted by
    ``table`` (profiled for the model's space); ``decrement_ms`` per iteration (default 5% of the
    full network's predicted latency). See `netadapt` for the rest."""
    space = model_space(model)
    if table.space != space:
        raise ValueError(
            f"the latency table is for {table.space.describe()}, the network is {space.describe()}"
        )
    if not target_ms > 0:
        raise ValueError(f"target_ms must be > 0, got {target_ms}")
    budget = LatencyBudget(table, target_ms, tolerance=target_ms)  # any latency <= target
    if decrement_ms is None:
        decrement_ms = 0.05 * table.predict_ms(Arch.full(space))
    arch, keep, net = netadapt(
        model, budget, train_batches, val_batches, decrement_ms, short_steps, lr, progress, seed
    )
    arch.search["target_ms"] = target_ms
    return arch, keep, net


def netadapt_prune_macs(
    model: CompactNet,
    macs_ratio: float,
    train_batches: Batches,
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decrement: float = 0.05,
    short_steps: int = 20,
    lr: float = 0.01,
    progress: Callable[[Iteration], None] | None = None,
    seed: int = 0,
) -> tuple[Arch, dict[str, torch.Tensor], CompactNet]:
    """NetAdapt with MACs for latency: lands in [0.98, 1] x ``macs_ratio`` x the full MACs (the
    MACs study's band); ``decrement`` per iteration as a fraction of the full MACs."""
    check_ratio(macs_ratio)
    budget = MacsBudget.of_ratio(model_space(model), macs_ratio, tolerance=0.02 * macs_ratio)
    full = Arch.full(model_space(model)).macs
    arch, keep, net = netadapt(
        model, budget, train_batches, val_batches, decrement * full, short_steps, lr, progress, seed
    )
    arch.search["macs_ratio"] = macs_ratio
    return arch, keep, net


def netadapt(
    model: CompactNet,
    budget: Budget,
    train_batches: Batches,
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decrement: float,
    short_steps: int = 20,
    lr: float = 0.01,
    progress: Callable[[Iteration], None] | None = None,
    seed: int = 0,
) -> tuple[Arch, dict[str, torch.Tensor], CompactNet]:
    """Shrink the trained full ``model`` (left unchanged) until ``budget.of(network) <=
    budget.target``; every network on the way costs at least ``budget.target -
    budget.tolerance``.

    ``train_batches``: ``(x, y)`` training batches (a list is cycled; an endless stream, e.g.
    augmented ones, is drawn from), ``short_steps`` of them per iteration. ``val_batches``:
    held-out batches that score the proposals (never the test set). ``decrement``: the cost cut
    asked of each iteration, in the budget's unit. ``progress`` gets each `Iteration`.

    Returns the Arch (``search["netadapt"]`` records every iteration), ``keep`` (for every
    prunable conv, the indices of the full network's filters it keeps, ascending) and the pruned
    network with its fine-tuned weights, in eval mode.
    """
    if not decrement > 0:
        raise ValueError(f"the decrement must be > 0, got {decrement}")
    if short_steps < 0:
        raise ValueError(f"short_steps must be >= 0, got {short_steps}")
    space = model_space(model)
    arch = Arch.full(space)
    names = prunable_convs(space)
    smallest = narrowest(space, budget)
    if budget.of(smallest) > budget.target:
        raise ValueError(
            f"the target {budget.target:.6g} {budget.unit} is below the smallest network NetAdapt "
            f"reaches on {space.describe()} ({budget.of(smallest):.6g} {budget.unit}: every "
            "prunable conv at its narrowest)"
        )
    keep = {n: torch.arange(arch.widths[n]) for n in names}
    stream = _endless(train_batches)
    start = cost = budget.of(arch)
    history: list[Iteration] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while cost > budget.target:
            began = time.perf_counter()
            cut, step, widths = _step(budget, arch, names, cost, decrement)
            batches = [next(stream) for _ in range(short_steps)]
            best = None  # (accuracy, -loss), name, kept, arch, network
            for name, width in widths.items():
                kept = _l1_top(model, arch, name, width)
                new_arch, net = narrow_conv(model, arch, name, kept)
                _fine_tune(net, batches, lr)
                score = evaluate(net, val_batches)
                accuracy, loss = score.accuracy, score.loss
                if best is None or (accuracy, -loss) > best[0]:
                    best = ((accuracy, -loss), name, kept, new_arch, net)
            (accuracy, neg_loss), name, kept, arch, model = best
            keep[name] = keep[name][kept]
            cost = budget.of(arch)
            record = Iteration(len(history) + 1, cut, step, name, arch.widths[name], cost,
                               accuracy, -neg_loss, len(widths),
                               time.perf_counter() - began)  # fmt: skip
            history.append(record)
            if progress is not None:
                progress(record)
    arch.search = {
        "method": "netadapt",
        "budget": budget.unit,
        "netadapt": {
            "full_cost": start,
            "cost": cost,
            "decrement": decrement,
            "schedule": "constant (halved in an iteration no layer can meet)",
            "short_steps": short_steps,
            "lr": lr,
            "seed": seed,
            "iterations": [asdict(r) for r in history],
        },
    }
    if isinstance(budget, LatencyBudget):
        arch.search["predicted_ms"] = cost
    if not history:  # already within budget: a copy, never the caller's network
        model = copy.deepcopy(model).requires_grad_(True)
    return arch, keep, model.eval()


def narrowest(space: SearchSpace, budget: Budget) -> Arch:
    """The smallest network NetAdapt can reach: the full depth, every prunable conv at the
    narrowest width ``budget`` allows (NetAdapt removes filters, never blocks)."""
    full = Arch.full(space)
    narrow = {n: _widths(budget, full, n)[0] for n in prunable_convs(space)}
    return Arch(space, full.blocks, {**full.widths, **narrow})


@torch.no_grad()
def narrow_conv(
    model: CompactNet, arch: Arch, name: str, kept: torch.Tensor
) -> tuple[Arch, CompactNet]:
    """A new network: ``model`` (built from ``arch``) with conv ``name`` keeping only its filters
    ``kept`` (indices into its current filters), every other weight copied as it is.

    Exactly the tensors that touch the conv change shape: its own weight and BatchNorm lose the
    dropped filters (axis 0), the layers reading its output (the next conv; in a plain chain the
    head or a projection shortcut) the matching input channels (axis 1). ``name`` must be a
    prunable conv: one that feeds no residual sum.
    """
    if name not in prunable_convs(arch.space):
        raise ValueError(f"{name} is not a prunable conv of {arch.space.describe()}")
    new_arch = Arch(arch.space, arch.blocks, {**arch.widths, name: len(kept)})
    device = next(model.parameters()).device
    out = build_model(new_arch).to(device)
    kept = torch.as_tensor(kept, dtype=torch.long, device=device)
    shapes = {key: value.shape for key, value in out.state_dict().items()}
    state = {}
    for key, value in model.state_dict().items():
        if value.shape != shapes[key]:
            (axis,) = [d for d, (a, b) in enumerate(zip(value.shape, shapes[key])) if a != b]
            value = value.index_select(axis, kept)
        state[key] = value
    out.load_state_dict(state)
    return new_arch, out.train(model.training)


def _widths(budget: Budget, arch: Arch, name: str) -> list[int]:
    """Widths ``name`` may take, ascending: the space's candidates where the table prices them,
    any width where MACs are counted."""
    conv = arch.space.conv(name)
    if isinstance(budget, LatencyBudget):
        return list(conv.candidates)
    return list(range(1, conv.channels + 1))


def _step(
    budget: Budget, arch: Arch, names: list[str], cost: float, decrement: float
) -> tuple[float, float, dict[str, int]]:
    """The iteration's cut, its cost target and each layer's proposed width (the layers that
    can meet it): ``cost - decrement`` (at least the budget's target), the decrement halved
    while no single layer can meet it (late on, every layer may have less than it left)."""
    floor = budget.target - budget.tolerance
    for _ in range(MAX_HALVINGS + 1):
        step = max(cost - decrement, budget.target)
        widths = {n: _largest_width(budget, arch, n, step, floor) for n in names}
        widths = {n: w for n, w in widths.items() if w is not None}
        if widths:
            return decrement, step, widths
        decrement /= 2
    raise ValueError(
        f"no single layer can bring {cost:.6g} {budget.unit} down into [{floor:.6g}, "
        f"{budget.target:.6g}] {budget.unit}"
    )


def _largest_width(budget: Budget, arch: Arch, name: str, step: float, floor: float) -> int | None:
    """The largest width below ``name``'s current one whose network costs at most ``step``, or
    None when there is none or it costs less than ``floor``."""
    current = arch.widths[name]
    for width in reversed([w for w in _widths(budget, arch, name) if w < current]):
        cost = budget.of(Arch(arch.space, arch.blocks, {**arch.widths, name: width}))
        if cost <= step:
            return width if cost >= floor else None
    return None


def _l1_top(model: CompactNet, arch: Arch, name: str, width: int) -> torch.Tensor:
    """Indices (ascending) of the ``width`` filters of conv ``name`` with the largest L1 norms."""
    conv = next(m for m in named_convs(model, arch)[name] if isinstance(m, nn.Conv2d))
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    return norms.topk(width).indices.sort().values.cpu()


def _endless(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A list cycled without end, or the iterator itself."""
    if not isinstance(batches, Sequence):
        yield from batches
        return
    if not batches:
        raise ValueError("no training batches")
    while True:
        yield from batches


def _fine_tune(model: nn.Module, batches: list, lr: float) -> None:
    """One SGD step per batch (momentum, Nesterov, weight decay as train.py), in train mode."""
    if not batches:
        return
    device = next(model.parameters()).device
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
