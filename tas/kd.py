"""Knowledge distillation losses: Hinton's (softened logits) and relational KD (Park et al.
2019, RKD: the distances and angles between the samples of a batch, on penultimate features)."""

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


def _huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(a, b, reduction="mean")


def _normalised_distances(f: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(f, f)  # (B, B) Euclidean
    off = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
    return d[off] / d[off].mean().clamp_min(1e-12)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance loss: Huber between the students' and the teachers' pairwise distances, each
    divided by its batch's mean distance (so a feature scale does not matter). Features may
    have different widths. (B, Ds), (B, Dt) -> scalar."""
    with torch.no_grad():
        target = _normalised_distances(teacher.float())
    return _huber(_normalised_distances(student.float()), target)


def _angles(f: torch.Tensor) -> torch.Tensor:
    e = F.normalize(f.unsqueeze(0) - f.unsqueeze(1), dim=2)  # (B, B, D): unit e_ij = f_i - f_j
    return torch.bmm(e, e.transpose(1, 2)).flatten()  # cos of the angle at every j: (B^3,)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle loss: Huber between the cosines of the angles every triplet of samples forms,
    student against teacher. (B, Ds), (B, Dt) -> scalar."""
    with torch.no_grad():
        target = _angles(teacher.float())
    return _huber(_angles(student.float()), target)


def rkd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """The RKD paper's combination: 25 x distance + 50 x angle (Park et al. 2019, CIFAR)."""
    return distance_weight * rkd_distance(student, teacher) + angle_weight * rkd_angle(
        student, teacher
    )
