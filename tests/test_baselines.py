import pytest
import torch
from torch import nn

import tas
from tas.baselines import l1_norm_prune, named_convs, slimming_prune


@pytest.fixture
def trained_like():
    """A full ResNet-20 with random, distinct filter norms and BN scales."""
    torch.manual_seed(0)
    arch = tas.Arch.full(tas.SearchSpace.cifar_resnet(20))
    model = tas.build_model(arch)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, -1.0, 1.0)
    return model, arch


def test_l1_norm_keeps_the_largest_filters_at_uniform_widths(trained_like):
    model, full = trained_like
    arch, keep = l1_norm_prune(model, 0.5)
    assert arch == tas.Arch.uniform(full.space, 0.5)
    conv = named_convs(model, full)["stage2.block1.conv_a"][0]
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    kept = keep["stage2.block1.conv_a"]
    assert len(kept) == arch.widths["stage2.block1.conv_a"]
    dropped = torch.ones(len(norms), dtype=torch.bool)
    dropped[kept] = False
    assert norms[kept].min() >= norms[dropped].max()


def test_slimming_is_the_largest_network_under_the_budget(trained_like):
    model, full = trained_like
    arch, keep = slimming_prune(model, 0.5)
    assert arch.macs <= 0.5 * full.macs
    assert arch.blocks == full.blocks
    gammas = {n: m[1].weight.detach().abs() for n, m in named_convs(model, full).items()}
    threshold = min(g[keep[n]].min() for n, g in gammas.items())
    # every channel at or above the threshold is kept (one global threshold)
    for name, g in gammas.items():
        assert int((g >= threshold).sum()) <= arch.widths[name]
        assert set(keep[name].tolist()) == set(g.topk(arch.widths[name]).indices.tolist())
    # the next lower threshold would break the budget
    lower = max(g[g < threshold].max() for g in gammas.values() if (g < threshold).any())
    widths = {n: max(1, int((g >= lower).sum())) for n, g in gammas.items()}
    assert tas.Arch(full.space, full.blocks, widths).macs > 0.5 * full.macs


def test_bad_ratio_is_rejected(trained_like):
    model, _ = trained_like
    with pytest.raises(ValueError):
        slimming_prune(model, 1.5)
