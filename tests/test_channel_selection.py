"""ThiNet and LASSO channel selection (tas/baselines/channel_selection.py): who consumes what, the sampled
moments, the two selection rules against their definitions, the MACs band, the rebuilt weights
on held-out images, and prune.py writing a network train.py fine-tunes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tas
from tas.baselines import prunable_convs
from tas.baselines.channel_selection import (
    _layers,
    _sample,
    consumer_errors,
    consumers,
    error_ladder,
    lasso_order,
    lasso_path,
    lasso_prune,
    sample_stats,
    thinet_order,
    thinet_prune,
)
from tests.cli_helpers import QUIET, run_script

METHODS = {"thinet": thinet_prune, "lasso": lasso_prune}


def trained_like(space: tas.SearchSpace) -> nn.Module:
    """A full network with random BN scales and shifts whose running statistics are those of a
    batch of random images (every channel normalised, as after training)."""
    torch.manual_seed(0)
    model = tas.build_model(tas.Arch.full(space))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.2)
            m.momentum = None  # running statistics = the average over the batches seen
    with torch.no_grad():
        model.train()(torch.randn(32, 3, 32, 32))
    return model.eval().requires_grad_(False)


def images(count: int, seed: int, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, 32, 32, generator=g), torch.zeros(batch, dtype=torch.long))
        for _ in range(count // batch)
    ]


@pytest.fixture(scope="module")
def resnet8():
    return trained_like(tas.SearchSpace.cifar_resnet(8))


def test_consumers_of_each_backbone():
    basic = tas.SearchSpace.cifar_resnet(20)
    readers = consumers(basic)
    assert list(readers) == prunable_convs(basic)
    assert readers["stage2.block0.conv_a"] == ["stage2.block0.conv_b"]
    bottleneck = tas.SearchSpace.cifar_resnet(11, block="bottleneck")
    readers = consumers(bottleneck)
    assert readers["stem"] == ["stage1.block0.conv_a", "stage1.block0.shortcut"]
    assert readers["stage2.block0.conv_a"] == ["stage2.block0.conv_b"]
    assert readers["stage2.block0.conv_b"] == ["stage2.block0.conv_c"]
    vgg = tas.SearchSpace.cifar_vgg(11)
    readers = consumers(vgg)
    assert readers["stem"] == ["stage1.block0.conv"]  # through a max-pool
    assert readers["stage3.block0.conv"] == ["stage3.block1.conv"]
    assert readers["stage3.block1.conv"] == ["stage4.block0.conv"]
    assert readers["stage4.block1.conv"] == ["head"]  # the last conv
    resnet50 = tas.SearchSpace.imagenet_resnet(50)
    assert consumers(resnet50)["stem"] == ["stage1.block0.conv_a", "stage1.block0.shortcut"]


def test_sampled_moments_are_those_of_the_layers():
    """A W^T = B holds exactly when every sampled patch is the input the conv multiplied to
    give the sampled output: padding, stride 2, the stem read by two consumers."""
    model = trained_like(tas.SearchSpace.cifar_resnet(11, block="bottleneck"))
    full = tas.Arch.full(model.space)
    stats = sample_stats(model, images(8, seed=1, batch=4), samples_per_image=10)
    layers = _layers(model, full)
    assert set(stats) == {c for cs in consumers(model.space).values() for c in cs}
    assert "stage3.block0.conv_b" in stats and layers["stage3.block0.conv_b"].stride == (2, 2)
    for name, s in stats.items():
        w = layers[name].weight.double().flatten(1)
        torch.testing.assert_close(
            s.inputs @ w.T, s.cross, rtol=1e-6, atol=1e-6 * s.cross.abs().max()
        )
        assert s.samples == 8 * 10 and s.taps == layers[name].weight[0, 0].numel()
    # the head reads one pooled vector per image, its bias is not part of y
    head = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    p, y = _sample(head, x, head(x), 10, torch.Generator())
    torch.testing.assert_close(y, x @ head.weight.T)
    assert p is x


def test_thinet_order_removes_greedily():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 7, generator=g, dtype=torch.float64)
    gram = z.T @ z
    keep_order = thinet_order(gram)
    assert sorted(keep_order.tolist()) == list(range(7))

    def cost(removed: list[int]) -> float:  # |sum of the removed contributions|^2
        v = torch.zeros(7, dtype=torch.float64)
        v[removed] = 1
        return float(v @ gram @ v)

    removed: list[int] = []
    for i in reversed(keep_order.tolist()[1:]):  # removal order
        left = [j for j in range(7) if j not in removed]
        assert cost([*removed, i]) == pytest.approx(min(cost([*removed, j]) for j in left))
        removed.append(i)


def test_lasso_on_orthogonal_contributions_is_soft_thresholding():
    """With G diagonal, beta_j = soft(b_j, lambda) / G_jj: channels leave in order of |b_j|."""
    b = torch.tensor([0.5, -4.0, 1.0, 0.0, 2.0, -0.25], dtype=torch.float64)
    diag = torch.tensor([1.0, 3.0, 0.5, 2.0, 1.5, 1.0], dtype=torch.float64)
    lam, beta = lasso_path(torch.diag(diag), b)
    expected = b.sign()[:, None] * (b.abs()[:, None] - lam).clamp_min(0) / diag[:, None]
    torch.testing.assert_close(beta, expected, rtol=1e-6, atol=1e-9)
    assert lasso_order(torch.diag(diag), b).tolist() == [1, 4, 2, 0, 5, 3]


def test_error_ladder_is_the_scaled_least_squares_error():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = z.sum(dim=1)
    gram, b, total = z.T @ z / y.pow(2).sum(), z.T @ y / y.pow(2).sum(), 1.0
    order = torch.tensor([2, 0, 5, 1, 4, 3])
    ladder = error_ladder(gram, b, order, total)
    for k in range(1, 7):
        s = order[:k]
        w = torch.linalg.lstsq(z[:, s], y[:, None]).solution
        direct = (y[:, None] - z[:, s] @ w).pow(2).sum() / y.pow(2).sum()
        assert float(ladder[k - 1]) == pytest.approx(float(direct), abs=1e-4)
    assert float(ladder[-1]) == pytest.approx(0.0, abs=1e-3)  # the ridge's bias


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("depth", [20, 56])
def test_each_method_lands_in_the_band(method, depth):
    model = trained_like(tas.SearchSpace.cifar_resnet(depth))
    full = tas.Arch.full(model.space)
    arch, keep, pruned = METHODS[method](model, 0.5, images(8, seed=1, batch=8))
    assert 0.98 * 0.5 * full.macs <= arch.macs <= 0.5 * full.macs
    assert tas.count_macs(pruned) == arch.macs
    assert arch.search["method"] == method and arch.blocks == full.blocks
    assert set(keep) == set(prunable_convs(full.space))
    for name, width in arch.widths.items():
        if name not in keep:
            assert width == full.widths[name]
            continue
        idx = keep[name].tolist()
        assert len(idx) == width and idx == sorted(set(idx))
        assert idx[0] >= 0 and idx[-1] < full.widths[name]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_rebuild_lowers_the_held_out_error(resnet8, method):
    # 30 positions per image: at 10, 640 samples fit stage 3's 288 weights per filter so
    # closely that LASSO's full least squares is worse on held-out images than no rebuild
    arch, keep, pruned = METHODS[method](resnet8, 0.5, images(64, seed=1), samples_per_image=30)
    errors = consumer_errors(resnet8, arch, keep, pruned, images(32, seed=2))
    assert set(errors) == {"stage1.block0.conv_b", "stage2.block0.conv_b", "stage3.block0.conv_b"}
    for name, (removed, rebuilt) in errors.items():
        assert 0 < rebuilt < removed, name
    sampled = arch.search["sampled_error"]
    assert sampled["rebuilt"] < sampled["removed"]
    # the rebuild is in the network: with the inherited weights the output differs
    plain = tas.build_model(arch, init_from=resnet8, keep=keep).eval()
    x = images(16, seed=3)[0][0]
    assert not torch.allclose(plain(x), pruned.eval()(x))


def test_deterministic_for_a_seed(resnet8):
    batches = images(32, seed=1)
    runs = [thinet_prune(resnet8, 0.5, batches, seed=s) for s in (7, 7, 8)]
    (a1, k1, p1), (a2, k2, p2), (_, _, p3) = runs
    assert a1 == a2 and all(torch.equal(k1[n], k2[n]) for n in k1)
    for key, value in p1.state_dict().items():
        assert torch.equal(value, p2.state_dict()[key]), key
    conv_b = "stages.0.0.main.1.0.weight"
    assert not torch.equal(p1.state_dict()[conv_b], p3.state_dict()[conv_b])  # other samples


def test_a_stem_with_two_consumers_rebuilds_both():
    model = trained_like(tas.SearchSpace.cifar_resnet(11, block="bottleneck"))
    arch, keep, pruned = lasso_prune(model, 0.4, images(32, seed=1))
    assert arch.macs <= 0.4 * tas.Arch.full(model.space).macs
    assert tas.count_macs(pruned) == arch.macs
    assert arch.widths["stem"] < 16
    errors = consumer_errors(model, arch, keep, pruned, images(16, seed=2))
    for name in ("stage1.block0.conv_a", "stage1.block0.shortcut"):
        removed, rebuilt = errors[name]
        assert rebuilt < removed, name


def test_bad_input_is_a_value_error(resnet8):
    with pytest.raises(ValueError, match="ratio"):
        thinet_prune(resnet8, 0.0, images(16, seed=1))
    with pytest.raises(ValueError, match="needs images"):
        lasso_prune(resnet8, 0.5, [])
    with pytest.raises(ValueError, match="below the smallest network"):
        thinet_prune(resnet8, 0.05, images(16, seed=1))


# ---------------------------------------------------------------- prune.py, train.py
@pytest.fixture
def teacher_ckpt(tmp_path, resnet8):
    """A checkpoint in train.py's format (what load_teacher reads)."""
    path = tmp_path / "teacher.ckpt"
    arch = tas.Arch.full(resnet8.space)
    state = {f"model.{k}": v for k, v in resnet8.state_dict().items()}
    torch.save({"tas_arch": arch.to_dict(), "state_dict": state}, path)
    return path


def _prune_py(tmp_path, teacher_ckpt, method):
    out = tmp_path / method / "found.json"
    proc = run_script(
        "prune.py", "--method", method, "--teacher", str(teacher_ckpt), "--ratio", "0.5",
        "--out", str(out), "--data_name", "synthetic", "--images", "64", "--batch", "32",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize(
    "method", ["thinet", pytest.param("lasso", marks=pytest.mark.slow)]
)  # the same adapter: one command in the fast suite
def test_prune_py_writes_the_rebuilt_network(tmp_path, teacher_ckpt, method):
    from lightning_modules.classify import ClassifyModule

    out = _prune_py(tmp_path, teacher_ckpt, method)
    data = json.loads(out.read_text())
    search = data["search"]
    assert search["method"] == method and search["init_ckpt"] == "found.init.ckpt"
    assert search["images"] == 64 and set(search["keep"]) == set(
        prunable_convs(tas.SearchSpace.cifar_resnet(8))
    )
    init = out.with_name(search["init_ckpt"])
    saved = torch.load(init, weights_only=True)["state_dict"]
    module = ClassifyModule(arch=str(out), init="inherit", init_from=str(init))
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(value, saved[f"model.{key}"])


@pytest.mark.slow  # a Lightning fit
def test_train_py_fine_tunes_the_rebuilt_network(tmp_path, teacher_ckpt):
    out = _prune_py(tmp_path, teacher_ckpt, "thinet")
    init = out.with_name("found.init.ckpt")
    proc = run_script(
        "train.py", *QUIET, "--logger=false", "--data.name=synthetic",
        "--data.synthetic_train_size=128", "--data.synthetic_test_size=64",
        "--data.batch_size=64", "--trainer.max_epochs=1", f"--arch={out}", "--init=inherit",
        f"--init_from={init}", f"--out={tmp_path / 'tuned'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "tuned" / "checkpoints" / "last.ckpt").exists()
