"""The most probable network inside a budget band (tas.derive) and the search's fallback to it."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import tas
from tas.derive import log_prob, most_probable_within
from tas.spaces.resnet import cifar_resnet


def _logits(net: tas.Supernet, seed: int, scale: float = 3.0, settled: float = 0.0) -> None:
    """Random logits; ``settled`` > 0 adds it to one random candidate of every distribution,
    as a search that has chosen leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for logits in (net.width_logits, net.depth_logits):
            logits.copy_(scale * torch.randn(logits.shape, generator=g))
            pick = torch.randint(0, logits.shape[1], (len(logits),), generator=g)
            logits[torch.arange(len(logits)), pick] += settled


def _log_probs(net: tas.Supernet) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return net.width_probs().log(), net.depth_probs().log()


def _every_network(space: tas.SearchSpace):
    for blocks in itertools.product(*(s.depth_choices for s in space.stages)):
        convs = space.kept_convs(blocks)
        for widths in itertools.product(*(c.candidates for c in convs)):
            yield tas.Arch(space, blocks, {c.name: w for c, w in zip(convs, widths)})


def test_it_is_the_most_probable_network_in_the_band_by_enumeration():
    # ResNet-14 with two widths per conv and 1 or 2 blocks per stage: 16,000 networks in all
    space = cifar_resnet(14, width_tenths=(5, 10))
    networks = list(_every_network(space))
    full = tas.Arch.full(space).macs
    for seed in (0, 1):
        net = tas.Supernet(space)
        _logits(net, seed)
        wlp, dlp = _log_probs(net)
        scored = [(log_prob(a, wlp, dlp), a.macs) for a in networks]
        for low, high in [(0.45 * full, 0.5 * full), (0.3 * full, 0.31 * full), (0.7 * full, full)]:
            found = most_probable_within(space, wlp, dlp, low, high)
            assert found is not None and found.exact
            assert low <= found.arch.macs <= high
            best = max(lp for lp, macs in scored if low <= macs <= high)
            assert found.log_prob == pytest.approx(best, abs=1e-9)
            assert found.log_prob == pytest.approx(log_prob(found.arch, wlp, dlp), abs=1e-9)


def test_a_settled_argmax_network_inside_the_band_is_the_one_found():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    _logits(net, 3, scale=1.0, settled=8.0)
    argmax = net.derive()
    found = net.derive_within(argmax.macs - 1e5, argmax.macs + 1e5)
    assert found.arch == argmax and found.exact
    assert found.log_prob == pytest.approx(net.log_prob(argmax))


def test_out_of_band_argmax_moves_into_the_band_at_the_least_log_probability():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    _logits(net, 4, scale=1.0, settled=8.0)
    argmax = net.derive()
    low, high = 0.49 * argmax.macs, 0.51 * argmax.macs
    found = net.derive_within(low, high)
    assert low <= found.arch.macs <= high and found.exact
    assert found.log_prob < net.log_prob(argmax)  # the argmax is the unconstrained maximum
    # no network one width or one depth step from the found one is inside and more probable
    for conv in space.kept_convs(found.arch.blocks):
        for width in conv.candidates:
            other = tas.Arch(space, found.arch.blocks, found.arch.widths | {conv.name: width})
            if low <= other.macs <= high:
                assert net.log_prob(other) <= found.log_prob + 1e-9


def test_an_empty_band_has_no_network_and_a_cut_short_search_says_so():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    _logits(net, 5)
    full = tas.Arch.full(space).macs
    assert net.derive_within(full + 1, 2 * full) is None  # above the full network
    with pytest.raises(ValueError, match="empty"):
        net.derive_within(2.0, 1.0)
    with pytest.raises(RuntimeError, match="within 3 search nodes"):
        net.derive_within(0.3 * full, 0.31 * full, max_nodes=3)
    found = net.derive_within(0.3 * full, 0.31 * full, max_nodes=5_000)
    assert found is not None and 0.3 * full <= found.arch.macs <= 0.31 * full


def test_a_cost_other_than_macs_is_honoured():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    _logits(net, 6, scale=1.0, settled=8.0)

    def params(blocks, widths):
        return tas.Arch(space, blocks, widths).params

    full = tas.Arch.full(space).params
    found = net.derive_within(0.4 * full, 0.42 * full, cost=params)
    assert 0.4 * full <= found.arch.params <= 0.42 * full


def test_forward_arch_runs_the_given_network_on_the_shared_weights():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space).eval()
    _logits(net, 7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.forward_arch(x, net.derive()), net.forward_argmax(x))
        other = tas.Arch.random(space, random.Random(0))
        assert not torch.equal(net.forward_arch(x, other), net.forward_argmax(x))
    with pytest.raises(ValueError, match="not one of"):
        net.forward_arch(x, tas.Arch.full(tas.SearchSpace.cifar_resnet(32)))
    with pytest.raises(ValueError, match="not one of its candidates"):
        net.forward_arch(x, tas.Arch.uniform(space, 0.5))  # floor(C m) widths


def test_search_falls_back_to_the_most_probable_network_in_the_band():
    """No epoch's argmax network inside the band: found.json's network is the most probable
    one inside it, its record says how it was derived; --model.fallback last keeps the argmax."""
    from lightning_modules.search import EpochRecord, SearchModule

    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    _logits(net, 8, scale=1.0, settled=8.0)
    ratio = net.derive().macs / tas.Arch.full(space).macs - 0.03  # the argmax just over the band
    for fallback in ("in_band", "last"):
        module = SearchModule(depth=20, ratio=ratio, tolerance=0.02, fallback=fallback)
        module.net.load_state_dict(net.state_dict())
        argmax = module.net.derive()
        assert not module.target_macs - module.tolerance_macs <= argmax.macs <= module.target_macs
        module.history.append(
            EpochRecord(
                epoch=0, val_acc=0.5, macs=argmax.macs, expected_macs=float(argmax.macs),
                in_band=False, tau=1.0, argmax_changes=0, width_maxprob=1.0,
                width_maxprob_min=1.0, width_entropy=0.0, depth_maxprob=1.0,
                depth_maxprob_min=1.0, depth_entropy=0.0, picks=[[], []], arch=argmax.to_dict(),
            )
        )  # fmt: skip
        arch, row = module.chosen()
        if fallback == "last":
            assert arch == argmax and not row.in_band and arch.search["selected"] == "last"
            continue
        low, high = module.target_macs - module.tolerance_macs, module.target_macs
        assert low <= arch.macs <= high and row.in_band and row.val_acc is None
        assert arch.search["selected"] == "in_band"
        derivation = arch.search["derivation"]
        assert derivation["exact"] and derivation["argmax_macs"] == argmax.macs
        assert derivation["log_prob"] == pytest.approx(module.net.log_prob(arch))
        assert derivation["argmax_log_prob"] > derivation["log_prob"]
    with pytest.raises(ValueError, match="fallback"):
        SearchModule(depth=8, fallback="nearest")
