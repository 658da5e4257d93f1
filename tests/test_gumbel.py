import pytest
import torch

from tas import TauSchedule, sample_candidates


@pytest.mark.parametrize("num", [1, 2, 3])
def test_draws_are_distinct_and_weights_normalised(num):
    logits = torch.randn(50, 8, requires_grad=True)
    index, weights = sample_candidates(logits, tau=1.0, num_samples=num)
    assert index.shape == weights.shape == (50, num)
    assert all(len(set(row)) == num for row in index.tolist())
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))
    (weights[:, 0] * torch.arange(50)).sum().backward()
    # one draw has weight 1 whatever the logits: no gradient then (as in the authors' code)
    assert (logits.grad.abs().sum() > 0) == (num > 1)


def test_mask_excludes_missing_candidates():
    logits = torch.randn(200, 8)
    mask = torch.zeros(200, 8, dtype=torch.bool)
    mask[:, :3] = True
    index, _ = sample_candidates(logits, tau=0.5, num_samples=2, mask=mask)
    assert index.max().item() <= 2


def test_draw_follows_the_distribution():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]]).repeat(20000, 1)
    index, _ = sample_candidates(logits, tau=1.0, num_samples=1)
    share = (index == 0).float().mean().item()
    # the draw is from p = softmax(log_softmax(a) + g): P(first) = E_g[p_0], estimated here
    # with independent Gumbel noise
    g = -torch.log(-torch.log(torch.rand(200000, 4)))
    expected = (logits[0].log_softmax(-1) + g).softmax(-1)[:, 0].mean().item()
    assert share == pytest.approx(expected, abs=0.015)


def test_lower_tau_gives_sharper_weights():
    logits = torch.randn(2000, 8)
    torch.manual_seed(0)
    _, hot = sample_candidates(logits, tau=5.0, num_samples=2)
    _, cold = sample_candidates(logits, tau=0.1, num_samples=2)
    assert cold.max(-1).values.mean() > 0.95 > 0.6 > hot.max(-1).values.mean()


def test_tau_schedules():
    cos = TauSchedule()
    assert cos(0, 600) == pytest.approx(5.0) and cos(599, 600) == pytest.approx(0.1)
    assert cos(299.5, 600) == pytest.approx(2.55)
    lin = TauSchedule("linear", 10.0, 0.1)
    assert (
        lin(0, 11) == 10.0
        and lin(10, 11) == pytest.approx(0.1)
        and lin(5, 11) == pytest.approx(5.05)
    )
    assert TauSchedule()(0, 1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TauSchedule("step")
    with pytest.raises(ValueError):
        TauSchedule(start=0.0)
