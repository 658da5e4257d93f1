"""Scoring a network on labelled batches: top-1 accuracy and mean cross-entropy, the one loop
behind every place that scores a network outside a Lightning system (a teacher's test accuracy,
the settling check's fine-tuned networks, the sensitivity curves, NetAdapt's proposals, AMC's
rewards)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Score:
    accuracy: float  # top-1, a fraction
    loss: float  # mean cross-entropy (nats per image)
    images: int


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Score:
    """``model`` in eval mode over ``batches`` of (inputs, labels), each batch moved to the
    device of the model's first parameter. An empty ``batches`` is an error, not a 0%."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss, seen = 0, 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)  # (B, classes)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        seen += len(y)
    if not seen:
        raise ValueError("no labelled images to score the network on")
    return Score(correct / seen, loss / seen, seen)
