"""Data-parallel search on Lightning's DDP engine.

A TAS iteration makes two backward passes (weight step, architecture step) inside one
``training_step``, each over a different set of parameters. PyTorch's DDP wrapper expects one
backward per forward over every parameter, so the search uses `SearchDDPStrategy`: Lightning's
DDP strategy (process launch, process groups, distributed samplers, metric sync) without the
wrapper; `average_gradients` all-reduces each step's gradients before its optimiser step.
Every rank starts from rank 0's weights and draws the same Gumbel noise, so the architecture
parameters stay identical on every rank.

When a process dies, Lightning's launcher SIGKILLs the first process within 5 s, silently,
whatever it was doing; `WatchedDDPStrategy` watches the processes itself instead and ends the
run with the one-line error that says how to go on (`report_peer_failure`), exit code 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

_reported = threading.Lock()  # one error line per process, whichever thread sees the failure first


def report_peer_failure(detail: str, script: str | None = None) -> bool:
    """Print the one-line error of a multi-process run that lost a process, unless this process
    has printed it already; returns whether it printed."""
    if not _reported.acquire(blocking=False):
        return False
    script = script or Path(sys.argv[0]).name
    print(
        f"{script}: error: another process of this multi-process run failed or stopped "
        f"answering ({detail[:200]}); the last checkpoint holds every finished epoch: --resume "
        "continues the run",
        file=sys.stderr,
        flush=True,
    )
    return True


class PeerWatch(threading.Thread):
    """Polls the processes this one started; when one ends with a non-zero code, reports it
    (`report_peer_failure`), kills the others and ends this process with exit code 1: without
    it, a process waits for the dead one in its next collective until the timeout."""

    def __init__(self, procs: list[subprocess.Popen], period_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="peer-watch")
        self.procs, self.period_s = procs, period_s

    def run(self) -> None:
        while True:
            time.sleep(self.period_s)
            codes = [p.poll() for p in self.procs]
            if all(code == 0 for code in codes):
                return
            failed = [(rank, code) for rank, code in enumerate(codes, 1) if code]
            if failed:
                rank, code = failed[0]
                report_peer_failure(f"the process of rank {rank} ended with exit code {code}")
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                os._exit(1)


class WatchedLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of the other processes, with `PeerWatch` instead of its observer."""

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            PeerWatch(self.procs).start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


class WatchedDDPStrategy(DDPStrategy):
    """``--trainer.strategy ddp``: Lightning's DDP, its processes watched by `PeerWatch`."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = WatchedLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )


class SearchDDPStrategy(WatchedDDPStrategy):
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
