"""Hinton knowledge distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
) -> torch.Tensor:
    """(1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).

    The KL term is averaged over the batch (``batchmean``); T^2 keeps its gradient scale
    independent of T (Hinton et al. 2015). ``teacher_logits`` should carry no gradient.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ce = F.cross_entropy(student_logits, targets)
    if alpha == 0.0:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.detach() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * ce + alpha * t * t * kl
