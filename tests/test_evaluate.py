import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tas.evaluate import evaluate


class Fixed(nn.Module):
    """Returns the logits it is given as input (the 'images' are logits), and records its mode."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * self.p


def test_accuracy_and_loss_by_hand_over_uneven_batches():
    torch.manual_seed(0)
    logits = torch.randn(7, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    batches = [(logits[:3], labels[:3]), (logits[3:], labels[3:])]
    model = Fixed().train()
    score = evaluate(model, batches)
    assert not model.training  # scored in eval mode
    assert score.images == 7
    assert score.accuracy == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert score.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


def test_a_generator_works_and_no_images_is_an_error():
    batches = ((torch.eye(3)[i : i + 1], torch.tensor([i])) for i in range(3))
    assert evaluate(Fixed(), batches).accuracy == 1.0
    with pytest.raises(ValueError, match="no labelled images"):
        evaluate(Fixed(), [])
