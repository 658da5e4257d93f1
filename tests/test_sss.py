"""Sparse Structure Selection (tas/baselines/sss.py): block factors trained with an APG sparsity penalty,
whole blocks removed by |lambda|, the uniform width fill into the MACs band, the kept blocks'
trained weights moved to their new positions, and prune.py --method sss."""

import json

import pytest
import torch
from torch import nn

import tas
from tas.baselines import named_convs
from tas.baselines.sss import (
    ScaledBlocks,
    removable_blocks,
    select_blocks,
    sss_prune,
    train_block_scales,
)


def _trained_like(depth: int) -> nn.Module:
    """A full CIFAR ResNet with random weights and BN scales, shifts and statistics."""
    torch.manual_seed(0)
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(depth)))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
            nn.init.normal_(m.running_mean, std=0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batches(n: int = 2, size: int = 4) -> list:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def _ranked(trained: ScaledBlocks, order: list[str]) -> ScaledBlocks:
    """``trained`` with lambdas (and scores) that rank the blocks as ``order``, smallest first."""
    lambdas = {name: 0.1 * (1 + i) for i, name in enumerate(order)}
    return ScaledBlocks(trained.model, lambdas, dict(lambdas), trained.losses)


def _in_band(arch: tas.Arch, ratio: float) -> bool:
    full = tas.Arch.full(arch.space).macs
    return 0.98 * ratio * full <= arch.macs <= ratio * full


def test_removable_blocks_are_the_identity_blocks_of_searchable_stages():
    names = [r.name for r in removable_blocks(tas.SearchSpace.cifar_resnet(20))]
    assert names == [f"stage{s}.block{b}" for s in (1, 2, 3) for b in (1, 2)]
    assert removable_blocks(tas.SearchSpace.cifar_vgg(11)) == []  # no searchable depth


def test_whole_blocks_removed_in_band_widths_full_unless_filled():
    model = _trained_like(14)
    arch, keep, pruned = sss_prune(model, 0.5, _batches(), steps=2, lr=0.05, penalty=1.0)
    space, full = arch.space, tas.Arch.full(arch.space)
    assert arch.blocks != space.max_blocks and _in_band(arch, 0.5)
    removed = arch.search["removed_blocks"]
    assert sum(space.max_blocks) - sum(arch.blocks) == len(removed) == 2  # 17.7% per block
    fill = arch.search["width_fill"]
    assert set(fill["widths"]) == set(keep) and keep  # 2 blocks leave 0.646: the fill closes it
    for name, width in arch.widths.items():
        assert width == fill["widths"].get(name, full.widths[name])
        if name in keep:
            assert len(keep[name]) == width
    assert set(arch.search["block_lambdas"]) == {r.name for r in removable_blocks(space)}
    assert tas.count_macs(pruned) == arch.macs
    assert tas.Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("seed", [0, 1])
def test_resnet_20_and_56_land_in_the_band_at_half_the_macs(depth, seed):
    """Whatever the ranking (random lambdas, untrained network: selection only)."""
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(depth))).eval()
    names = [r.name for r in removable_blocks(model.space)]
    g = torch.Generator().manual_seed(seed)
    order = [names[i] for i in torch.randperm(len(names), generator=g)]
    arch, _, _ = select_blocks(_ranked(ScaledBlocks(model, {}, {}, []), order), 0.5)
    assert _in_band(arch, 0.5)
    assert arch.search["removed_blocks"] == order[: len(arch.search["removed_blocks"])]


def test_mobilenet_v2_depthwise_convs_follow_their_input():
    """Removable inverted-residual blocks (linear bottleneck: no ReLU to fold across); the
    depthwise convs have no width of their own, in the pruned Arch or the fill."""
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.mobilenet_v2())).eval()
    names = [r.name for r in removable_blocks(model.space)]
    order = [n for n in names if n.endswith("block1")] + [
        n for n in names if not n.endswith("block1")
    ]
    arch, _, pruned = select_blocks(_ranked(ScaledBlocks(model, {}, {}, []), order), 0.5)
    assert _in_band(arch, 0.5) and arch.search["block_sources"]  # later blocks moved down
    assert tas.count_macs(pruned, (1, 3, 224, 224)) == arch.macs


def test_kept_blocks_carry_the_trained_weights_of_the_block_they_came_from():
    """ResNet-20 at 0.89: exactly one block goes (11.6% of the MACs), no fill. Removing the
    middle block of stage 1 moves block 2 to position 1, with its SSS-trained weights."""
    trained = train_block_scales(_trained_like(20), _batches(), steps=2, lr=0.05, penalty=0.1)
    names = list(trained.lambdas)
    order = ["stage1.block1", *(n for n in names if n != "stage1.block1")]
    arch, keep, pruned = select_blocks(_ranked(trained, order), 0.89)
    assert arch.blocks == (2, 3, 3) and keep == {} and arch.search["width_fill"] is None
    assert arch.search["block_sources"] == {"stage1.block1": "stage1.block2"}
    source = trained.model
    pairs = [(0, 0, 0), (0, 1, 2)] + [(s, b, b) for s in (1, 2) for b in range(3)]
    for s, here, there in pairs:
        got, want = pruned.stages[s][here].state_dict(), source.stages[s][there].state_dict()
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), (s, here, key)
    # the pruned network computes the trained one with stage1.block1 an identity (branch 0)
    masked = type(source)(tas.Arch.full(source.space))
    masked.load_state_dict(source.state_dict())
    with torch.no_grad():
        masked.stages[0][1].main[-1][1].weight.zero_()
        masked.stages[0][1].main[-1][1].bias.zero_()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(pruned(x), masked.eval()(x))


def test_filled_widths_keep_the_source_filters_of_largest_l1_norm():
    trained = train_block_scales(_trained_like(20), _batches(1), steps=1, lr=0.01, penalty=0.1)
    names = list(trained.lambdas)
    order = ["stage1.block1", "stage2.block1", "stage3.block1", *names[3:]]
    order += [n for n in names if n not in order]
    arch, keep, pruned = select_blocks(_ranked(trained, order), 0.5)
    assert _in_band(arch, 0.5) and keep
    full = tas.Arch.full(arch.space)
    sources = arch.search["block_sources"]
    source_convs = named_convs(trained.model, full)
    pruned_convs = named_convs(pruned, arch)
    for name, idx in keep.items():
        block, conv = name.rsplit(".", 1)
        src = source_convs[f"{sources.get(block, block)}.{conv}"][0].weight
        norms = src.abs().sum(dim=(1, 2, 3))
        assert set(idx.tolist()) == set(norms.topk(len(idx)).indices.tolist())
        torch.testing.assert_close(pruned_convs[name][0].weight, src[idx])
        after = name.replace("conv_a", "conv_b")  # reads only the kept channels
        src_b = source_convs[f"{sources.get(block, block)}.conv_b"][0].weight
        torch.testing.assert_close(pruned_convs[after][0].weight, src_b[:, idx])


def test_the_penalty_drives_the_lambdas_down_to_exact_zeros():
    model, batches = _trained_like(14), _batches()
    free = train_block_scales(model, batches, steps=3, lr=0.05, penalty=0.0)
    pushed = train_block_scales(model, batches, steps=3, lr=0.05, penalty=10.0)
    assert sum(map(abs, pushed.lambdas.values())) < 0.5 * sum(map(abs, free.lambdas.values()))
    assert 0.0 in pushed.lambdas.values()
    assert all(v != 0 for v in free.lambdas.values())
    # a block at 0 is an identity: its folded branch's last BN gives exactly 0
    zero = next(n for n, v in pushed.lambdas.items() if v == 0.0)
    s, b = (int(part[-1]) for part in zero.split("."))
    bn = pushed.model.stages[s - 1][b].main[-1][1]
    assert not bn.weight.any() and not bn.bias.any()


def test_training_is_seeded_and_leaves_the_model_alone():
    model, batches = _trained_like(14), _batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = [train_block_scales(model, batches, steps=3, lr=0.05, penalty=1.0) for _ in range(2)]
    assert runs[0].lambdas == runs[1].lambdas and runs[0].losses == runs[1].losses
    assert len(runs[0].losses) == 3  # 2 batches, cycled
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="ran out"):
        train_block_scales(model, iter(batches), steps=3)
    with pytest.raises(ValueError, match="below the smallest network"):
        sss_prune(model, 0.03, batches, steps=1)  # 0.044 at least


# ---------------------------------------------------------------- prune.py
@pytest.fixture
def teacher_ckpt(tmp_path):
    model = _trained_like(14)
    path = tmp_path / "teacher.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"tas_arch": tas.Arch.full(model.space).to_dict(), "state_dict": state}, path)
    return path


def test_prune_py_sss_writes_found_json_and_the_network_to_fine_tune(tmp_path, teacher_ckpt):
    from cli_helpers import run_script

    from lightning_modules.classify import ClassifyModule
    from lightning_modules.teacher import load_teacher

    out = tmp_path / "sss" / "found.json"
    common = ["--method", "sss", "--teacher", str(teacher_ckpt), "--data_name", "synthetic"]
    proc = run_script(
        "prune.py", *common, "--ratio", "0.5", "--steps", "3", "--batch", "8", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "sss step 3/3" in proc.stdout
    data = json.loads(out.read_text())
    search = data["search"]
    assert search["method"] == "sss" and search["init_ckpt"] == "found.init.ckpt"
    assert len(search["removed_blocks"]) == 2 and search["width_fill"]["widths"]
    assert set(search["keep"]) == set(search["width_fill"]["widths"])
    saved, saved_arch = load_teacher(out.with_name("found.init.ckpt"))
    assert saved_arch == tas.Arch.load(out)
    module = ClassifyModule(arch=str(out), init="inherit", init_from=str(out.with_name(search["init_ckpt"])))  # fmt: skip
    for key, value in saved.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value)


def test_prune_py_sss_without_steps_is_a_one_line_error(tmp_path, teacher_ckpt, capsys):
    import prune

    out = tmp_path / "found.json"
    args = ["--method", "sss", "--teacher", str(teacher_ckpt), "--data_name", "synthetic"]
    with pytest.raises(SystemExit) as exit_:
        prune.main([*args, "--ratio", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--steps" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_train_py_fine_tunes_the_sss_network(tmp_path, teacher_ckpt):
    """train.py --arch FOUND --init inherit --init_from NAME.init.ckpt, one tiny epoch."""
    from cli_helpers import run_script
    from test_cli_errors import TINY

    out = tmp_path / "found.json"
    proc = run_script(
        "prune.py", "--method", "sss", "--teacher", str(teacher_ckpt), "--data_name",
        "synthetic", "--ratio", "0.5", "--steps", "2", "--batch", "8", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    init = tmp_path / "found.init.ckpt"
    proc = run_script(
        "train.py", *TINY, f"--arch={out}", "--init=inherit",
        f"--init_from={init}", f"--out={tmp_path / 'ft'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ft" / "checkpoints" / "last.ckpt").exists()
