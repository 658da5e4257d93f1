import math

import pytest
import torch
import torch.nn.functional as F

from tas import kd_loss


def test_kd_loss_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    alpha, temp = 0.9, 4.0
    ce = 0.0
    kl = 0.0
    for i in range(2):
        ps = [math.exp(v) for v in s[i].tolist()]
        ce += -math.log(ps[y[i]] / sum(ps)) / 2
        qs = [math.exp(v / temp) for v in s[i].tolist()]
        qt = [math.exp(v / temp) for v in t[i].tolist()]
        qs = [v / sum(qs) for v in qs]
        qt = [v / sum(qt) for v in qt]
        kl += sum(a * math.log(a / b) for a, b in zip(qt, qs)) / 2
    expected = (1 - alpha) * ce + alpha * temp**2 * kl
    assert kd_loss(s, t, y, alpha, temp).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_and_identical_logits_leave_only_ce():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert kd_loss(s, t, y, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    expected = 0.1 * F.cross_entropy(s, y).item()
    assert kd_loss(s, s.clone(), y, alpha=0.9).item() == pytest.approx(expected, abs=1e-6)


def test_teacher_gets_no_gradient_and_bad_arguments_raise():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_loss(s, t, torch.zeros(4, dtype=torch.long)).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError):
        kd_loss(s, t, torch.zeros(4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError):
        kd_loss(s, t, torch.zeros(4, dtype=torch.long), temperature=0)
