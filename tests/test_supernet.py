import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tas
from tas import SearchSpace, Supernet


@pytest.mark.parametrize("depth", [20, 164])
def test_forward_shapes(depth):
    net = Supernet(SearchSpace.cifar_resnet(depth, num_classes=100))
    x = torch.randn(4, 3, 32, 32)
    assert net(x).shape == (4, 100)
    assert net.forward_argmax(x).shape == (4, 100)


def test_parameter_groups_are_disjoint_and_complete():
    net = Supernet(SearchSpace.cifar_resnet(20))
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert net.width_logits.shape == (19, 8) and net.depth_logits.shape == (3, 3)
    assert net.width_logits.std().item() == pytest.approx(0.01, rel=0.3)  # N(0, 0.01^2)


def test_cross_entropy_reaches_weights_and_architecture():
    net = Supernet(SearchSpace.cifar_resnet(20))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    F.cross_entropy(net(x), y).backward()
    assert net.width_logits.grad.abs().sum() > 0
    assert net.depth_logits.grad.abs().sum() > 0
    assert net.stem.weight.grad.abs().sum() > 0 and net.head.weight.grad.abs().sum() > 0


def test_cost_loss_reaches_only_architecture():
    net = Supernet(SearchSpace.cifar_resnet(20))
    target = 0.5 * tas.Arch.full(net.space).macs
    loss = tas.cost_loss(net.expected_macs(), net.argmax_macs(), target, 0.05 * target / 0.5)
    loss.backward()
    assert loss.item() != 0.0
    assert net.width_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.weight_parameters())


def test_temperature_and_sample_count_are_validated():
    space = SearchSpace.cifar_resnet(20)
    with pytest.raises(ValueError):
        Supernet(space, num_samples=9)
    with pytest.raises(ValueError):
        Supernet(space).set_tau(0.0)
    net = Supernet(space, num_samples=3)
    net.set_tau(0.5)
    assert net.tau == 0.5 and net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convs_see_only_the_channels_present(monkeypatch):
    """Each conv runs on the sampled input width and the widest picked filters: no padding."""
    net = Supernet(SearchSpace.cifar_resnet(20))
    shapes = []
    real_conv = F.conv2d

    def spy(x, w, *args):
        shapes.append((x.shape[1], tuple(w.shape[:2])))
        return real_conv(x, w, *args)

    monkeypatch.setattr(F, "conv2d", spy)
    net(torch.randn(2, 3, 32, 32))
    assert all(cin == w_in for cin, (_, w_in) in shapes)
    assert any(cout < 16 for _, (cout, _) in shapes[:7])  # some stage-1 conv is not full width


def _randomise(net: Supernet, seed: int) -> None:
    """Random architecture logits and non-trivial BN statistics and affines."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (net.width_logits, net.depth_logits):
            p.copy_(torch.rand(p.shape, generator=gen) * 6 - 3)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                for name, lo, hi in (("running_mean", -0.1, 0.1), ("running_var", 0.5, 1.5),
                                     ("weight", 0.5, 1.5), ("bias", -0.1, 0.1)):  # fmt: skip
                    t = getattr(m, name)
                    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))


@pytest.mark.parametrize("depth", [20, 164])
def test_argmax_forward_is_the_derived_compact_network(depth):
    net = Supernet(SearchSpace.cifar_resnet(depth))
    _randomise(net, depth)
    arch = net.derive()
    model = net.compact(arch)
    net.eval()
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_argmax(x), model(x), rtol=1e-4, atol=1e-4)


def test_derive_picks_the_argmax():
    space = SearchSpace.cifar_resnet(56)
    net = Supernet(space)
    with torch.no_grad():
        net.width_logits.zero_()
        net.width_logits[:, 2] = 1.0  # third candidate everywhere
        net.depth_logits.zero_()
        net.depth_logits[:, 1] = 1.0  # 3 blocks per stage
    arch = net.derive()
    assert arch.blocks == (3, 3, 3)
    assert arch.widths["stem"] == 8 and arch.widths["stage3.block2.conv_b"] == 32
    assert len(arch.widths) == 1 + 9 * 2


def test_batch_statistics_leaves_running_stats_alone():
    net = Supernet(SearchSpace.cifar_resnet(20))
    net.eval()
    bn = net.stem.bns[-1]
    before = bn.running_mean.clone()
    x = torch.randn(16, 3, 32, 32) * 3 + 1
    with tas.supernet.batch_statistics(net):
        out = net.forward_argmax(x)
        assert bn.training
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert not torch.allclose(out, net.forward_argmax(x))  # eval mode uses running stats


def test_folded_mixing_weight_equals_scaling_the_bn_output():
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    twin = nn.BatchNorm2d(8)
    twin.load_state_dict(bn.state_dict())
    x, w = torch.randn(4, 8, 5, 5), torch.tensor(0.3)
    folded = tas.supernet._batch_norm(bn, x, w)
    torch.testing.assert_close(folded, twin(x) * w)
    torch.testing.assert_close(bn.running_mean, twin.running_mean)
    assert bn.num_batches_tracked == twin.num_batches_tracked == 1


@pytest.mark.parametrize(
    "space",
    [
        SearchSpace.cifar_resnet(20),
        SearchSpace.cifar_resnet(164),  # bottlenecks, projection shortcuts
        SearchSpace.from_name("cifar_vgg", 11, 10),
        SearchSpace.from_name("imagenet_resnet", 18, 10, input_size=64),
        SearchSpace.from_name("mobilenet_v2", 0, 10, input_size=32, width_mult=0.5),
    ],
    ids=lambda s: f"{s.backbone}-{s.depth}",
)
def test_compact_network_is_the_found_network_on_the_shared_weights(space):
    """`Supernet.compact` hands the weights the search trained to the plain network: for the
    argmax network and for another one of the space, in eval mode, the same logits as running
    that network on the supernet (`forward_arch`), in every backbone."""
    net = Supernet(space)
    for seed in (0, 1):
        _randomise(net, seed)
        arch = net.derive()
        model = net.compact(arch).eval()
        net.eval()
        x = torch.randn(2, 3, space.input_size, space.input_size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), net.forward_arch(x, arch), rtol=1e-4, atol=1e-4)
        assert model.training is False and all(p.requires_grad for p in model.parameters())
    other = tas.Arch.full(SearchSpace.cifar_resnet(32))
    with pytest.raises(ValueError, match="not one of"):
        net.compact(other)
