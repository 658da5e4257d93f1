"""The weights' optimiser of every system here: SGD (Nesterov) with a per-step cosine to 0."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch


def sgd_with_cosine(
    params: Iterable[torch.nn.Parameter], hp: Any, trainer: pl.Trainer
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with ``hp.lr``, ``hp.momentum``, ``hp.nesterov``, ``hp.weight_decay``; the learning
    rate follows a cosine from ``hp.lr`` to 0 over the run, stepped every iteration."""
    opt = torch.optim.SGD(
        params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
    )
    return opt, cosine_to_zero(opt, trainer.estimated_stepping_batches)


def cosine_to_zero(
    opt: torch.optim.Optimizer, steps: int | float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Every learning rate of ``opt`` follows a cosine from its value to 0 over ``steps``
    scheduler steps (then stays at 0; an unbounded run, ``steps`` inf, keeps its rate)."""
    total = steps if math.isinf(steps) else max(1, round(steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
