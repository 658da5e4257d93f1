"""One TAS search iteration: a weight step then an architecture step (first-order alternation);
each step is also available alone (a weights-only warm-up runs `weight_step`).

Shared by the Lightning system and the benchmarks, so that what is measured is what is run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tas.budget import Budget
from tas.cost import COST_LOSSES
from tas.supernet import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, 3, H, W) float inputs, (B,) labels


@dataclass
class StepLosses:
    ce: torch.Tensor  # weight step cross-entropy
    arch_ce: torch.Tensor  # architecture step cross-entropy
    cost: torch.Tensor  # the cost loss (float64)
    expected: torch.Tensor  # the budget's expectation, e.g. E[MACs] (float64)
    argmax: torch.Tensor  # the budget's value for the current argmax network (float64)


def _requires_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def weight_step(
    net: Supernet,
    weight_opt: torch.optim.Optimizer,
    batch: Batch,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    reduce_grads: Callable[[list[torch.nn.Parameter]], None] | None = None,
) -> torch.Tensor:
    """One SGD step of the shared weights on cross-entropy, with fresh Gumbel draws and the
    architecture logits frozen (no logit gradients computed). Returns the detached loss."""
    arch_params = net.arch_parameters()
    _requires_grad(arch_params, False)
    x, y = batch
    ce = F.cross_entropy(net(x), y)
    weight_opt.zero_grad(set_to_none=True)
    backward(ce)
    if reduce_grads is not None:
        reduce_grads(net.weight_parameters())
    weight_opt.step()
    _requires_grad(arch_params, True)
    return ce.detach()


def arch_step(
    net: Supernet,
    arch_opt: torch.optim.Optimizer,
    batch: Batch,
    budget: Budget,
    cost_weight: float = 2.0,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    reduce_grads: Callable[[list[torch.nn.Parameter]], None] | None = None,
    cost: str | Callable[..., torch.Tensor] = "band",
    entropy_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step of the architecture logits on cross-entropy + ``cost_weight`` * the cost
    loss of ``budget`` (``cost``: "band", the paper's, "centred", or a loss from
    `tas.cost.make_cost`, e.g. the stateful band with hysteresis) + ``entropy_weight`` * the
    distributions' entropy (`tas.Supernet.entropy`; 0, the paper's, leaves it out), with fresh
    Gumbel draws and the weights frozen. Returns the detached (cross-entropy, cost, expected
    budget value, argmax network's value), in the budget's unit."""
    weight_params = net.weight_parameters()
    _requires_grad(weight_params, False)
    x, y = batch
    arch_ce = F.cross_entropy(net(x), y)
    expected = budget.expected(net)
    argmax = budget.argmax(net)
    if isinstance(cost, str):
        if cost not in COST_LOSSES:
            raise ValueError(
                f"cost {cost!r}: pass one of {sorted(COST_LOSSES)} by name, or a loss made by "
                "tas.cost.make_cost (a stateful one must live as long as the search)"
            )
        cost = COST_LOSSES[cost]
    loss = cost(expected, argmax, budget.target, budget.tolerance)
    total = arch_ce + cost_weight * loss.to(arch_ce.dtype)
    if entropy_weight:
        total = total + entropy_weight * net.entropy()
    arch_opt.zero_grad(set_to_none=True)
    backward(total)
    if reduce_grads is not None:
        reduce_grads(net.arch_parameters())
    arch_opt.step()
    _requires_grad(weight_params, True)
    return arch_ce.detach(), loss.detach(), expected.detach(), argmax


def search_step(
    net: Supernet,
    weight_opt: torch.optim.Optimizer,
    arch_opt: torch.optim.Optimizer,
    weight_batch: Batch,
    arch_batch: Batch,
    budget: Budget,
    cost_weight: float = 2.0,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    reduce_grads: Callable[[list[torch.nn.Parameter]], None] | None = None,
    cost: str | Callable[..., torch.Tensor] = "band",
    entropy_weight: float = 0.0,
) -> StepLosses:
    """Weight step (cross-entropy on ``weight_batch``; logits frozen), then architecture step
    (cross-entropy on ``arch_batch`` + ``cost_weight`` * the cost loss of ``budget``, e.g.
    `tas.MacsBudget`, + ``entropy_weight`` * the distributions' entropy; weights frozen), each with fresh Gumbel draws. Freezing the other group skips its gradient computation entirely.

    ``backward`` runs a loss's backward pass (Lightning passes ``manual_backward``);
    ``reduce_grads`` averages gradients across processes before each optimiser step.
    """
    ce = weight_step(net, weight_opt, weight_batch, backward, reduce_grads)
    arch = arch_step(
        net,
        arch_opt,
        arch_batch,
        budget,
        cost_weight,
        backward,
        reduce_grads,
        cost,
        entropy_weight,
    )
    return StepLosses(ce, *arch)
