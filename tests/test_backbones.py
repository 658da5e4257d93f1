"""torchvision's ResNets as search spaces: exact MACs, exact outputs from the user's weights,
the supernet, the cost model and found.json on them."""

import json
import random

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import tas
from tas import Arch, SearchSpace
from tas.backbones import is_torchvision_resnet_state, torchvision_state
from tests.test_cost import peak

# torchvision's own count at 224x224, 1000 classes (FlopCounterMode / 2 on torchvision 0.29)
TORCHVISION_MACS = {18: 1_814_073_344, 34: 3_663_761_408, 50: 4_089_184_256, 101: 7_801_405_440}


def torchvision_resnet(depth: int, num_classes: int = 1000) -> torch.nn.Module:
    """A torchvision ResNet in eval mode with random BN statistics and affines, so that an
    output check cannot pass by BN being the identity."""
    torch.manual_seed(depth)
    model = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def flop_counter_macs(model: torch.nn.Module, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("depth", sorted(TORCHVISION_MACS))
def test_full_macs_and_params_are_torchvision_s(depth):
    arch = Arch.full(SearchSpace.imagenet_resnet(depth))
    assert arch.macs == TORCHVISION_MACS[depth]
    model = getattr(torchvision.models, f"resnet{depth}")()
    assert arch.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [18, 50])
def test_built_network_macs_equal_the_flop_counter(depth):
    space = SearchSpace.imagenet_resnet(depth, num_classes=10, input_size=64)
    for arch in (Arch.full(space), Arch.random(space, random.Random(depth))):
        model = tas.build_model(arch)
        assert arch.macs == flop_counter_macs(model, 64) == tas.count_macs(model, (1, 3, 64, 64))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_from_torchvision_reproduces_the_model_outputs(depth):
    model = torchvision_resnet(depth, num_classes=7)
    space, state = tas.from_torchvision(model, input_size=64)
    assert (space.backbone, space.depth, space.num_classes) == ("imagenet_resnet", depth, 7)
    ours = tas.build_model(Arch.full(space)).eval()
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(ours(x), expected, atol=1e-5)
        # the warm-started supernet's full-width network is the same function
        net = tas.Supernet(space)
        net.load_full_weights(state)
        full = Arch.full(space)
        net.width_logits.fill_(-30.0)
        net.depth_logits.fill_(-30.0)
        for r, conv in enumerate(space.convs()):
            net.width_logits[r, len(conv.candidates) - 1] = 30.0
        for s, stage in enumerate(space.stages):
            net.depth_logits[s, len(stage.depth_choices) - 1] = 30.0
        assert net.derive() == full
        assert torch.allclose(net.eval().forward_argmax(x), expected, atol=1e-5)


def test_other_torchvision_models_are_refused_in_one_line():
    with pytest.raises(ValueError, match="reads torchvision ResNets"):
        tas.from_torchvision(torchvision.models.mobilenet_v3_small())
    with pytest.raises(ValueError, match="ResNeXt and wide ResNets"):
        tas.from_torchvision(torchvision.models.wide_resnet50_2())


def test_torchvision_state_dict_of_another_network_is_refused():
    state = torchvision.models.resnet18().state_dict()
    assert is_torchvision_resnet_state(state)
    with pytest.raises(ValueError, match="fc.weight has shape"):  # 1000 classes, not 10
        torchvision_state(state, SearchSpace.imagenet_resnet(18, num_classes=10))
    with pytest.raises(ValueError, match="96 tensors missing"):  # ResNet-18 weights, ResNet-34
        torchvision_state(state, SearchSpace.imagenet_resnet(34))
    with pytest.raises(ValueError, match="missing"):
        torchvision_state(
            {k: v for k, v in state.items() if "layer4" not in k}, SearchSpace.imagenet_resnet(18)
        )


@pytest.mark.parametrize("depth", [18, 50])
def test_searchable_convs(depth):
    """Each block's last conv (the residual stream) is fixed at full width; the stem is
    searched only where it feeds a projection (bottleneck nets)."""
    space = SearchSpace.imagenet_resnet(depth)
    for stage in space.stages:
        for block in stage.blocks:
            assert not space.searchable(block.last)
            assert all(space.searchable(c) for c in block.convs[:-1])
    assert space.searchable(space.stem) == (depth == 50)
    assert [len(s.depth_choices) for s in space.stages] == (
        [2, 2, 2, 2] if depth == 18 else [3, 3, 4, 3]
    )


@pytest.mark.parametrize("depth", [18, 50])
def test_supernet_cost_is_exact_on_imagenet_resnets(depth):
    space = SearchSpace.imagenet_resnet(depth, num_classes=10, input_size=64)
    net = tas.Supernet(space)
    rng = random.Random(depth)
    for _ in range(3):
        arch = peak(net, rng)
        assert net.expected_macs().item() == pytest.approx(arch.macs, rel=1e-9)
        assert net.argmax_macs().item() == arch.macs
        assert arch.macs == tas.count_macs(tas.build_model(arch), (1, 3, 64, 64))


def test_supernet_samples_only_searchable_convs():
    space = SearchSpace.imagenet_resnet(18, num_classes=10, input_size=64)
    net = tas.Supernet(space, num_samples=2)
    choice = net._sample()
    for r, conv in enumerate(space.convs()):
        assert len(choice.width_picks[r]) == (2 if space.searchable(conv) else 1)
    loss = net(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean() + net.expected_macs().float()
    loss.backward()
    fixed = [r for r, c in enumerate(space.convs()) if not space.searchable(c)]
    assert net.width_logits.grad[fixed].abs().sum() == 0
    # settling is measured over the convs that have a choice: uniform logits read as uniform
    with torch.no_grad():
        net.width_logits.zero_()
    assert net.distribution_stats()["width_maxprob"] == pytest.approx(1 / 8)


def test_found_json_round_trip_keeps_the_input_size(tmp_path):
    space = SearchSpace.imagenet_resnet(50, num_classes=100, input_size=160)
    arch = Arch.random(space, random.Random(0))
    arch.save(tmp_path / "found.json")
    back = Arch.load(tmp_path / "found.json")
    assert back == arch and back.space == space and back.macs == arch.macs
    with pytest.raises(tas.ArchFormatError, match="32x32"):
        data = Arch.full(SearchSpace.cifar_resnet(20)).to_dict()
        Arch.from_dict({**data, "input_size": 64})


# ---------------------------------------------------------------- the command line
@pytest.mark.slow  # three commands each (tests/test_imagefolder.py runs ResNet-18 there too)
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_torchvision_checkpoint_searches_prunes_and_teaches(tmp_path, backbone):
    """A torchvision checkpoint (as torchvision's reference scripts save it) is the warm start of
    a one-epoch search on synthetic data, the network prune.py prunes and distill.py's teacher."""
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY

    if backbone == "resnet18":
        model = torchvision_resnet(18, num_classes=10)
        args = ["--model.backbone=imagenet_resnet", "--model.depth=18"]
        space = SearchSpace.imagenet_resnet(18, num_classes=10, input_size=32)
    else:
        model = torchvision.models.mobilenet_v2(num_classes=10)
        args = ["--model.backbone=mobilenet_v2"]
        space = SearchSpace.mobilenet_v2(10, 32)
    ckpt = tmp_path / f"{backbone}.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    search = tmp_path / "search"
    result = run_script(
        "train_search.py", *TINY, *args, "--model.ratio=0.5", f"--teacher={ckpt}",
        f"--out={search}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = Arch.load(search / "found.json")
    assert found.space == space
    assert found.search["warm_start"]["teacher"] == str(ckpt)

    pruned = tmp_path / "l1.json"
    result = run_script(
        "prune.py", "--method=l1_norm", f"--teacher={ckpt}", "--ratio=0.5", "--input_size=32",
        f"--out={pruned}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert Arch.load(pruned).space == found.space

    out = tmp_path / "distill"
    result = run_script(
        "distill.py", *TINY, f"--arch={search / 'found.json'}", f"--teacher={ckpt}", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.json").exists()


def test_torchvision_checkpoint_of_another_depth_is_one_line(tmp_path):
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY, assert_user_error

    ckpt = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), ckpt)
    args = [*TINY, "--model.backbone=imagenet_resnet", "--model.depth=34", f"--teacher={ckpt}"]
    result = run_script("train_search.py", *args, f"--out={tmp_path / 'x'}")
    assert_user_error(result, "tensors missing")
    assert not (tmp_path / "x" / "found.json").exists()


# ---------------------------------------------------------------- the CIFAR VGGs
# Network Slimming's VGG-19 on CIFAR: 20.04M parameters and 7.97E8 FLOPs (= 2 x MACs)
VGG_MACS = {11: 152_769_536, 13: 228_267_008, 16: 313_201_664, 19: 398_136_320}


@pytest.mark.parametrize("depth", sorted(VGG_MACS))
def test_cifar_vgg_counts(depth):
    space = SearchSpace.cifar_vgg(depth)
    arch = Arch.full(space)
    model = tas.build_model(arch)
    assert arch.macs == VGG_MACS[depth] == flop_counter_macs(model, 32)
    assert arch.params == sum(p.numel() for p in model.parameters())
    assert len(space.convs()) == depth - 3  # all but the three linear layers of ImageNet VGG
    assert all(space.searchable(c) for c in space.convs())
    assert all(len(s.depth_choices) == 1 for s in space.stages)
    if depth == 19:
        assert arch.params == 20_035_018


@pytest.mark.parametrize("depth", [11, 16])
def test_cifar_vgg_supernet_cost_is_exact(depth):
    net = tas.Supernet(SearchSpace.cifar_vgg(depth))
    rng = random.Random(depth)
    for _ in range(3):
        arch = peak(net, rng)
        assert net.expected_macs().item() == pytest.approx(arch.macs, rel=1e-9)
        assert net.argmax_macs().item() == arch.macs == tas.count_macs(tas.build_model(arch))
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    stats = net.distribution_stats()
    assert stats["depth_maxprob_min"] == 1.0  # no depth to settle


def test_cifar_vgg_inherits_any_filters():
    """A plain chain may keep any filters: keeping them all, permuted, is the same function
    (each conv reads the channels its producer kept, in that order)."""
    space = SearchSpace.cifar_vgg(11)
    full_arch = Arch.full(space)
    torch.manual_seed(0)
    full = tas.build_model(full_arch)
    for m in full.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(1)
    keep = {c.name: torch.randperm(c.channels, generator=gen) for c in space.convs()}
    model = tas.build_model(full_arch, init_from=full, keep=keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), full.eval()(x), atol=1e-5)


def test_cifar_vgg_found_json_round_trip(tmp_path):
    arch = Arch.random(SearchSpace.cifar_vgg(16, num_classes=100), random.Random(0))
    arch.save(tmp_path / "found.json")
    assert Arch.load(tmp_path / "found.json") == arch
    assert json.loads((tmp_path / "found.json").read_text())["block"] == "plain"


@pytest.mark.slow  # four commands; the library tests above cover the VGG space
def test_cifar_vgg_from_the_command_line(tmp_path):
    """Train the full VGG-11, search it from its weights, prune it with L1-norm, distil the
    found network: the four commands on --model.backbone cifar_vgg."""
    from tests.cli_helpers import run_script
    from tests.test_cli_errors import TINY

    net = ["--model.backbone=cifar_vgg", "--model.depth=11"]
    teacher = tmp_path / "teacher"
    result = run_script("train.py", *TINY, *net, f"--out={teacher}")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = teacher / "checkpoints" / "last.ckpt"
    search = tmp_path / "search"
    result = run_script(
        "train_search.py", *TINY, *net, "--model.ratio=0.5", f"--teacher={ckpt}", f"--out={search}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = Arch.load(search / "found.json")
    assert found.space == SearchSpace.cifar_vgg(11)
    pruned = tmp_path / "l1.json"
    result = run_script(
        "prune.py", "--method=l1_norm", f"--teacher={ckpt}", "--ratio=0.5", f"--out={pruned}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "distill"
    result = run_script(
        "distill.py", *TINY, f"--arch={search / 'found.json'}", f"--teacher={ckpt}", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
