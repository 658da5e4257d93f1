"""Gumbel-softmax draws over candidate widths and depths, and temperature schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """I.i.d. Gumbel(0, 1) noise with the shape, dtype and device of ``x``."""
    return -torch.empty_like(x).exponential_(generator=generator).log()


def noisy_logits(
    logits: torch.Tensor,
    tau: float,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z = (log_softmax(a) + g) / tau row-wise; entries outside ``mask`` get -inf."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return (logits.log_softmax(dim=-1) + gumbel_like(logits, generator)) / tau


def sample_candidates(
    logits: torch.Tensor,
    tau: float,
    num_samples: int = 2,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` distinct candidates per row and their mixing weights.

    logits: (R, M) architecture logits; mask: (R, M) bool, True where a candidate exists.
    Returns indices (R, I), drawn without replacement from p = softmax(z) with no gradient, and
    weights (R, I) = softmax of z over the drawn entries, which carry the gradient to ``logits``.
    """
    z = noisy_logits(logits, tau, mask, generator)  # (R, M)
    with torch.no_grad():
        probs = z.softmax(dim=-1) + 1e-7  # the floor keeps the draw valid when tau is tiny
        if mask is not None:
            probs = probs * mask
        index = torch.multinomial(probs, num_samples, replacement=False, generator=generator)
    weights = z.gather(-1, index).softmax(dim=-1)  # (R, I)
    return index, weights


def gumbel_softmax(
    logits: torch.Tensor,
    tau: float,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """q = softmax((log_softmax(b) + g) / tau) row-wise: soft, no sampling, no straight-through."""
    return noisy_logits(logits, tau, mask, generator).softmax(dim=-1)


@dataclass(frozen=True)
class TauSchedule:
    """Per-epoch Gumbel temperature from ``start`` (first epoch) to ``end`` (last epoch).

    kind "cosine" (the authors' code, our default: 5 -> 0.1) or "linear" (the paper: 10 -> 0.1).
    """

    kind: str = "cosine"
    start: float = 5.0
    end: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "linear"):
            raise ValueError(f"tau schedule must be 'cosine' or 'linear', got {self.kind!r}")
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"temperatures must be positive, got {self.start} -> {self.end}")

    def __call__(self, epoch: int, total_epochs: int) -> float:
        progress = epoch / (total_epochs - 1) if total_epochs > 1 else 1.0
        progress = min(max(progress, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        return self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * progress))
