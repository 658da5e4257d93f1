"""Data-parallel search on Lightning's DDP engine.

A TAS iteration makes two backward passes (weight step, architecture step) inside one
``training_step``, each over a different set of parameters. PyTorch's DDP wrapper expects one
backward per forward over every parameter, so the search uses `SearchDDPStrategy`: Lightning's
DDP strategy (process launch, process groups, distributed samplers, metric sync) without the
wrapper; `average_gradients` all-reduces each step's gradients before its optimiser step.
Every rank starts from rank 0's weights and draws the same Gumbel noise, so the architecture
parameters stay identical on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


class SearchDDPStrategy(DDPStrategy):
    """``--trainer.strategy ddp`` for the search: DDP processes, no DistributedDataParallel."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        broadcast_state(model)
        return model


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce the gradients of ``params`` to their mean over ranks, in one flat buffer."""
    if not distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def same_on_all_ranks(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is bitwise equal on every rank (a check for tests and logs)."""
    if not distributed():
        return True
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return all(torch.equal(gathered[0], t) for t in gathered[1:])
