import pytest
import torch
import torch.nn.functional as F

from tas.cwi import channel_interpolate, prescale


def channels(values):
    """(1, C, 1, 1) tensor holding ``values`` along the channel axis."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_4_to_8_repeats_every_channel_twice():
    out = channel_interpolate(channels([1.0, 2.0, 3.0, 4.0]), 8)
    assert out.flatten().tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


def test_5_to_8_by_hand():
    # windows: [0] [0,1] [1] [1,2] [2,3] [3] [3,4] [4]
    out = channel_interpolate(channels([0.0, 10.0, 20.0, 30.0, 40.0]), 8)
    assert out.flatten().tolist() == [0, 5, 10, 15, 25, 30, 35, 40]


def test_3_to_7_by_hand():
    # windows: [0] [0] [0,1] [1] [1,2] [2] [2]
    out = channel_interpolate(channels([2.0, 4.0, 8.0]), 7)
    assert out.flatten().tolist() == [2, 2, 3, 4, 6, 8, 8]


def test_8_to_8_is_identity():
    x = torch.randn(2, 8, 3, 3)
    assert channel_interpolate(x, 8) is x


@pytest.mark.parametrize("c,target", [(4, 8), (5, 8), (3, 7), (9, 16), (19, 64), (57, 64), (12, 5)])
def test_matches_adaptive_avg_pool3d(c, target):
    x = torch.randn(3, c, 4, 5)
    expected = F.adaptive_avg_pool3d(x, (target, 4, 5))
    torch.testing.assert_close(channel_interpolate(x, target), expected, rtol=0, atol=1e-6)


def test_gradient_flows_back_to_every_input_channel():
    x = torch.randn(2, 5, 3, 3, requires_grad=True)
    channel_interpolate(x, 8).sum().backward()
    # windows [0] [0,1] [1] [1,2] [2,3] [3] [3,4] [4]: shares 1.5, 2, 1, 2, 1.5 per element,
    # times 2 images x 9 pixels
    expected = torch.tensor([1.5, 2.0, 1.0, 2.0, 1.5]) * 18
    torch.testing.assert_close(x.grad.sum(dim=(0, 2, 3)), expected)


@pytest.mark.parametrize("c, target", [(3, 8), (5, 7), (16, 32), (8, 8), (9, 4)])
def test_prescaled_input_gives_the_same_numbers(c, target):
    # the supernet folds CWI's 1/2 into the BatchNorm affine or the mixing weight it multiplies by
    # anyway; the result must be the very numbers of the plain interpolation (halving is exact)
    torch.manual_seed(c)
    x = torch.randn(2, c, 3, 3)
    factor = prescale(c, target)
    assert factor == (0.5 if c < target else 1.0)
    assert torch.equal(
        channel_interpolate(x * factor, target, prescaled=True), channel_interpolate(x, target)
    )
