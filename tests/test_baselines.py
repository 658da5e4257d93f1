"""The comparison baselines: L1-norm and Network Slimming pruning, random networks in the MACs
band, and fine-tuning with inherited weights (build_model(init_from=..., keep=...))."""

import json
import random

import pytest
import torch
from torch import nn

import tas
from tas.baselines import (
    l1_norm_prune,
    named_convs,
    prunable_convs,
    random_within,
    slimming_prune,
)


@pytest.fixture
def trained_like():
    """A full ResNet-20 with random, distinct filter norms, BN scales and BN statistics."""
    torch.manual_seed(0)
    arch = tas.Arch.full(tas.SearchSpace.cifar_resnet(20))
    model = tas.build_model(arch)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, -1.0, 1.0)
            nn.init.normal_(m.bias, std=0.1)
            nn.init.normal_(m.running_mean, std=0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval(), arch


def _one_threshold(scores, keep, arch, full, ratio):
    """Every kept score >= every dropped score (one global threshold), and one more channel
    (the next threshold down) would break the budget."""
    threshold = min(s[keep[n]].min() for n, s in scores.items())
    for name, s in scores.items():
        assert len(keep[name]) == arch.widths[name]
        dropped = torch.ones(len(s), dtype=torch.bool)
        dropped[keep[name]] = False
        if dropped.any():
            assert s[dropped].max() < threshold or arch.widths[name] == 1
    lower = max(s[s < threshold].max() for s in scores.values() if (s < threshold).any())
    widths = dict(arch.widths)
    widths.update({n: max(1, int((s >= lower).sum())) for n, s in scores.items()})
    assert tas.Arch(full.space, full.blocks, widths).macs > ratio * full.macs


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_l1_norm_global_threshold_on_relative_filter_norms(trained_like, ratio):
    model, full = trained_like
    arch, keep = l1_norm_prune(model, ratio)
    assert set(keep) == set(prunable_convs(full.space))
    assert arch.blocks == full.blocks
    assert 0.98 * ratio * full.macs <= arch.macs <= ratio * full.macs  # inside the 2% band
    convs = named_convs(model, full)
    scores = {}
    for name in keep:
        norms = convs[name][0].weight.detach().abs().sum(dim=(1, 2, 3))
        scores[name] = norms / norms.mean()
    _one_threshold(scores, keep, arch, full, ratio)


def test_slimming_global_threshold_on_bn_scales(trained_like):
    model, full = trained_like
    arch, keep = slimming_prune(model, 0.5)
    assert 0.98 * 0.5 * full.macs <= arch.macs <= 0.5 * full.macs
    gammas = {n: named_convs(model, full)[n][1].weight.detach().abs() for n in keep}
    _one_threshold(gammas, keep, arch, full, 0.5)


def test_baselines_prune_inside_blocks_only(trained_like):
    model, full = trained_like
    for prune in (l1_norm_prune, slimming_prune):
        arch, _ = prune(model, 0.5)
        for name in ("stem", "stage1.block0.conv_b", "stage3.block2.conv_b"):
            assert arch.widths[name] == full.widths[name]


def test_slimming_of_an_untrained_network_says_it_cannot_reach_the_budget():
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(20)))  # every gamma is 1
    with pytest.raises(ValueError, match="below the smallest network"):
        slimming_prune(model, 0.5)


def test_bad_ratio_is_rejected(trained_like):
    model, _ = trained_like
    for ratio in (0, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            l1_norm_prune(model, ratio)


def test_random_within_the_band_is_seeded():
    space = tas.SearchSpace.cifar_resnet(20)
    target = 0.5 * tas.Arch.full(space).macs
    archs = [random_within(space, 0.5, random.Random(seed)) for seed in (0, 1, 0)]
    for arch in archs:
        assert abs(arch.macs - target) <= 0.02 * target
    assert archs[0] == archs[2] and archs[0] != archs[1]
    with pytest.raises(ValueError, match="no random network"):
        random_within(space, 0.5, random.Random(0), tolerance=0.0, max_draws=5)


# ---------------------------------------------------------------- inherited weights
def _masked_full(model, keep, blocks):
    """The full network computing what the pruned one should: dropped conv_a channels give 0
    (BN scale and shift 0, so ReLU(0) = 0), dropped blocks give identity (the last BN's scale
    and shift 0: relu(0 + x) = x for the post-ReLU x)."""
    masked = type(model)(tas.Arch.full(model.space))
    masked.load_state_dict(model.state_dict())
    convs = named_convs(masked, tas.Arch.full(model.space))
    with torch.no_grad():
        for name, idx in keep.items():
            bn = convs[name][1]
            drop = torch.ones(bn.num_features, dtype=torch.bool)
            drop[idx] = False
            bn.weight[drop] = 0
            bn.bias[drop] = 0
        for stage, kept in zip(masked.stages, blocks):
            for block in list(stage)[kept:]:
                block.main[-1][1].weight.zero_()
                block.main[-1][1].bias.zero_()
    return masked.eval()


@pytest.mark.parametrize("prune", [l1_norm_prune, slimming_prune])
def test_inherited_network_computes_the_masked_full_network(trained_like, prune):
    model, _ = trained_like
    arch, keep = prune(model, 0.5)
    pruned = tas.build_model(arch, init_from=model, keep=keep).eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pruned(x), _masked_full(model, keep, arch.blocks)(x))


def test_inheriting_into_fewer_blocks(trained_like):
    model, full = trained_like
    arch = tas.Arch(full.space, (2, 3, 1), {
        n: w for n, w in full.widths.items() if n in {c.name for c in full.space.kept_convs((2, 3, 1))}
    })  # fmt: skip
    keep = {"stage2.block1.conv_a": [0, 5, 7], "stage1.block0.conv_a": list(range(3, 16))}
    arch = tas.Arch(arch.space, arch.blocks, {**arch.widths, "stage2.block1.conv_a": 3,
                                              "stage1.block0.conv_a": 13})  # fmt: skip
    pruned = tas.build_model(arch, init_from=model, keep=keep).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(pruned(x), _masked_full(model, keep, arch.blocks)(x))


def test_inheriting_rejects_what_would_misalign_residual_sums(trained_like):
    model, full = trained_like
    widths = {**full.widths, "stage1.block0.conv_b": 8}
    arch = tas.Arch(full.space, full.blocks, widths)
    with pytest.raises(ValueError, match="residual sum"):
        tas.build_model(arch, init_from=model, keep={"stage1.block0.conv_b": list(range(8, 16))})
    tas.build_model(arch, init_from=model)  # the first 8 filters: aligned, allowed
    with pytest.raises(ValueError, match="lists 3 filters"):
        tas.build_model(arch, init_from=model, keep={"stage1.block0.conv_a": [0, 1, 2]})
    with pytest.raises(ValueError, match="full"):
        tas.build_model(arch, init_from=tas.build_model(arch))
    with pytest.raises(ValueError, match="init_from"):
        tas.build_model(arch, keep={"stage1.block0.conv_a": [0]})


# ---------------------------------------------------------------- prune.py and --init inherit
@pytest.fixture
def teacher_ckpt(tmp_path, trained_like):
    """A checkpoint in train.py's format (what load_teacher reads)."""
    model, arch = trained_like
    path = tmp_path / "teacher.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"tas_arch": arch.to_dict(), "state_dict": state}, path)
    return path


def test_prune_py_writes_a_found_json_that_fine_tunes_from_the_teacher(tmp_path, teacher_ckpt):
    from cli_helpers import run_script

    from lightning_modules.classify import ClassifyModule

    out = tmp_path / "l1" / "found.json"
    proc = run_script(
        "prune.py", "--method", "l1_norm", "--teacher", str(teacher_ckpt),
        "--ratio", "0.5", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["search"]["method"] == "l1_norm" and set(data["search"]["keep"])
    module = ClassifyModule(arch=str(out), init="inherit", init_from=str(teacher_ckpt))
    name = "stage2.block1.conv_a"
    idx = data["search"]["keep"][name]
    teacher_w = torch.load(teacher_ckpt)["state_dict"]["model.stages.1.1.main.0.0.weight"]
    torch.testing.assert_close(module.model.stages[1][1].main[0][0].weight, teacher_w[idx])
    fresh = ClassifyModule(arch=str(out))
    assert not torch.equal(fresh.model.stages[1][1].main[0][0].weight, teacher_w[idx])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--teacher", "missing.ckpt", "--ratio", "0.5"], "no such file"),
        (["--ratio", "1.5"], "ratio"),
    ],
)
def test_prune_py_errors_are_one_line(tmp_path, teacher_ckpt, args, needle):
    from cli_helpers import run_script

    if "--teacher" not in args:
        args = ["--teacher", str(teacher_ckpt), *args]
    out = tmp_path / "found.json"
    proc = run_script("prune.py", "--method", "slimming", *args, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_init_inherit_needs_the_full_network(tmp_path, teacher_ckpt):
    from lightning_modules.classify import ClassifyModule, TeacherError

    with pytest.raises(ValueError, match="init_from"):
        ClassifyModule(arch="uniform:0.5", depth=20, init="inherit")
    with pytest.raises(ValueError, match="init must be"):
        ClassifyModule(arch="uniform:0.5", depth=20, init="pretrained")
    with pytest.raises(TeacherError, match="not the full"):
        ClassifyModule(arch="uniform:0.5", depth=32, init="inherit", init_from=str(teacher_ckpt))


def test_bn_l1_penalty_makes_the_bn_scales_sparser():
    """A few steps with a large penalty shrink |gamma| far more than without it."""
    from lightning_modules.classify import ClassifyModule

    def scales_after(bn_l1: float) -> float:
        torch.manual_seed(0)
        module = ClassifyModule(arch="full", depth=8, bn_l1=bn_l1, weight_decay=0.0)
        module.log = lambda *a, **k: None  # no trainer here
        module.optimizers = lambda: torch.optim.SGD(module.parameters(), lr=0.0)
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        for i in range(5):
            opt.zero_grad()
            module.training_step((x, y), i).backward()
            opt.step()
        return sum(
            m.weight.abs().sum().item() for m in module.model.modules()
            if isinstance(m, nn.BatchNorm2d)
        )  # fmt: skip

    assert scales_after(0.5) < 0.9 * scales_after(0.0)
