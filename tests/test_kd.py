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


def test_rkd_losses_are_zero_for_the_teacher_itself_and_scale_free():
    from tas.kd import rkd_angle, rkd_distance, rkd_loss

    torch.manual_seed(0)
    f = torch.randn(16, 32)
    assert rkd_loss(f, f).item() == pytest.approx(0.0, abs=1e-6)
    # distances are divided by the batch's mean distance; angles ignore scale and shift
    assert rkd_distance(3.0 * f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle(2.0 * f + 5.0, f).item() == pytest.approx(0.0, abs=1e-6)
    # another relation is penalised, whatever the widths; only the student gets a gradient
    student = torch.randn(16, 8, requires_grad=True)
    teacher = torch.randn(16, 64, requires_grad=True)
    loss = rkd_loss(student, teacher)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0 and teacher.grad is None


def test_distill_with_rkd_from_the_command_line(tmp_path, teacher):
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY, assert_user_error

    out = tmp_path / "rkd"  # "rkd" alone differs only in dropping the Hinton term
    result = run_script(
        "distill.py", *TINY, "--arch=uniform:0.5", "--model.depth=20", f"--teacher={teacher}",
        "--model.distill=hinton+rkd", f"--out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.json").exists()
    result = run_script(
        "distill.py", *TINY, "--arch=uniform:0.5", "--model.depth=20", f"--teacher={teacher}",
        "--model.distill=fitnets", f"--out={tmp_path / 'x'}",
    )  # fmt: skip
    assert_user_error(result, "distill must be one of")
