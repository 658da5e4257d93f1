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


def copy_supernet_weights(net: Supernet, model: nn.Module, arch: tas.Arch) -> None:
    """Load the derived arch's slice of the shared weights into the compact model."""

    def load(conv: tas.supernet.SearchConv, dest: nn.Sequential, width: int) -> None:
        c, bn = (
            [m for m in dest if isinstance(m, nn.Conv2d)][0],
            [m for m in dest if isinstance(m, nn.BatchNorm2d)][0],
        )
        c.weight.data = conv.weight.data[:width, : c.in_channels].clone()
        src = conv.bns[conv.candidates.index(width)]
        bn.load_state_dict(src.state_dict())

    load(net.stem, model.stem, arch.widths["stem"])
    for s, kept in enumerate(arch.blocks):
        for b in range(kept):
            sblock, cblock = net.stages[s][b], model.stages[s][b]
            spec = net.space.stages[s].blocks[b]
            for conv, dest, cs in zip(sblock.convs, cblock.main, spec.convs):
                load(conv, dest, arch.widths[cs.name])
            if cblock.shortcut is not None:
                load(sblock.shortcut, cblock.shortcut, arch.widths[spec.last.name])
    model.head.weight.data = net.head.weight.data[:, : model.head.in_features].clone()
    model.head.bias.data = net.head.bias.data.clone()


@pytest.mark.parametrize("depth", [20, 164])
def test_argmax_forward_is_the_derived_compact_network(depth):
    net = Supernet(SearchSpace.cifar_resnet(depth))
    with torch.no_grad():
        net.width_logits.uniform_(-3, 3)
        net.depth_logits.uniform_(-3, 3)
        for m in net.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    arch = net.derive()
    model = tas.build_model(arch)
    copy_supernet_weights(net, model, arch)
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
