"""Weight-level magnitude pruning: exact sparsity per layer and globally, masks that stay
applied through training, the masks file and its checks."""

from __future__ import annotations

import json

import pytest
import torch

import tas
from lightning_modules.teacher import load_teacher
from tas.baselines.sparsity import (
    apply_masks,
    load_masks,
    magnitude_masks,
    masked_macs,
    prunable_weights,
    save_masks,
    sparsity_of,
    storage_bytes,
)
from tests.cli_helpers import run_script
from tests.test_cli_errors import TINY, assert_user_error


def network(depth: int = 20) -> torch.nn.Module:
    torch.manual_seed(depth)
    return tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(depth)))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_layer_scope_prunes_each_layer_exactly(sparsity):
    model = network()
    masks = magnitude_masks(model, sparsity, "layer")
    assert set(masks) == set(prunable_weights(model))  # every conv and the linear head
    for name, w in prunable_weights(model).items():
        mask = masks[name]
        assert int((~mask).sum()) == round(sparsity * w.numel())
        if sparsity > 0:  # what is kept is the largest in magnitude
            assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_global_scope_has_one_threshold():
    model = network()
    masks = magnitude_masks(model, 0.8, "global")
    weights = prunable_weights(model)
    kept = torch.cat([weights[k].detach().abs()[m] for k, m in masks.items()])
    pruned = torch.cat([weights[k].detach().abs()[~m] for k, m in masks.items()])
    total = sum(w.numel() for w in weights.values())
    assert len(pruned) == round(0.8 * total)
    assert kept.min() >= pruned.max()
    per_layer = [float((~m).float().mean()) for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.1  # layers end at different sparsities
    apply_masks(model, masks)
    assert sparsity_of(model) == pytest.approx(0.8, abs=1e-6)
    size = storage_bytes(model)
    assert size["values_and_bitmask"] < 0.25 * size["dense"]  # 0.2 x 4 + 1/8 of 4 bytes


def test_masked_macs_count_each_kept_weight_once_per_output_position():
    """A conv's weight does one MAC per output pixel, a linear layer's one per row; a pruned
    weight does none (the count Rethinking's Scratch-B budget uses for unstructured pruning)."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),  # 8x8 -> 4x4: 16 positions, 108 weights
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),  # one row: 640 weights
    )
    assert tas.count_macs(net, (1, 3, 8, 8)) == 16 * 108 + 640
    masks = {"0.weight": torch.zeros(4, 3, 3, 3, dtype=torch.bool),
             "2.weight": torch.zeros(10, 64, dtype=torch.bool)}  # fmt: skip
    masks["0.weight"].view(-1)[:10] = True
    masks["2.weight"].view(-1)[::100] = True  # 7 of 640
    assert tas.count_macs(net, (1, 3, 8, 8), masks) == 10 * 16 + 7
    assert tas.count_macs(net, (1, 3, 8, 8), {"2.weight": masks["2.weight"]}) == 16 * 108 + 7
    # a ResNet-20: all kept is the full network's MACs; one layer emptied loses exactly its own
    model = network()
    full = tas.Arch.full(model.space)
    ones = {k: torch.ones_like(w, dtype=torch.bool) for k, w in prunable_weights(model).items()}
    assert masked_macs(model, ones) == full.macs
    layer = "stages.2.1.main.0.0.weight"  # a 3x3 conv of stage 3 (8x8 outputs)
    conv = prunable_weights(model)[layer]
    emptied = {**ones, layer: torch.zeros_like(ones[layer])}
    assert masked_macs(model, emptied) == full.macs - 8 * 8 * conv.numel()  # stage 3: 8x8
    # global magnitude masks prune the late layers (many weights, few pixels) most, so MACs
    # fall less than the weight count
    masks = magnitude_masks(model, 0.5, "global")
    assert 0.5 < masked_macs(model, masks) / full.macs < 1.0


def test_masks_file_round_trip_and_checks(tmp_path):
    model = network()
    masks = magnitude_masks(model, 0.5)
    save_masks(tmp_path / "m.pt", masks, {"sparsity": 0.5})
    back = load_masks(tmp_path / "m.pt", model)
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    with pytest.raises(ValueError, match="the network's weight is"):
        load_masks(tmp_path / "m.pt", _other())
    with pytest.raises(ValueError, match="no such file"):
        load_masks(tmp_path / "none.pt", model)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_masks(tmp_path / "bad.pt", model)
    with pytest.raises(ValueError, match="sparsity must be"):
        magnitude_masks(model, 1.0)


def _other() -> torch.nn.Module:
    """A network whose weights have the same names as ResNet-20's but other shapes."""
    space = tas.SearchSpace.cifar_resnet(20)
    arch = tas.Arch(space, space.max_blocks, {c.name: c.channels // 2 for c in space.convs()})
    return tas.build_model(arch)


def prune_magnitude(tmp_path, teacher: str, *args: str):
    """``prune.py --method magnitude ARGS`` into tmp_path/found.json; (its path, the run)."""
    found = tmp_path / "found.json"
    result = run_script(
        "prune.py", "--method=magnitude", f"--teacher={teacher}", *args, f"--out={found}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return found, result


def test_magnitude_prune_then_fine_tune_keeps_the_zeros(tmp_path, teacher):
    found, result = prune_magnitude(tmp_path, teacher, "--sparsity=0.9", "--scope=global")
    assert "90.0% of conv and linear weights zeroed" in result.stdout
    search = json.loads(found.read_text())["search"]
    assert search["masks"] == "found.masks.pt" and (tmp_path / "found.masks.pt").exists()
    model, _ = load_teacher(teacher)
    kept_macs = masked_macs(model, load_masks(tmp_path / "found.masks.pt", model))
    assert search["masked_macs"] == kept_macs < tas.count_macs(model)
    assert f"{kept_macs / 1e6:.2f}M MACs on the kept weights" in result.stdout
    out = tmp_path / "fine_tune"
    result = run_script(
        "train.py", *TINY, f"--arch={found}", "--init=inherit", f"--init_from={teacher}",
        "--model.lr=0.05", f"--out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model, _ = load_teacher(out / "checkpoints" / "last.ckpt")
    masks = load_masks(tmp_path / "found.masks.pt", model)
    weights = prunable_weights(model)
    assert all(bool((weights[k][~m] == 0).all()) for k, m in masks.items())  # exactly zero
    assert any(bool((weights[k][m] != 0).any()) for k, m in masks.items())


def test_masks_of_another_network_are_one_line(tmp_path, teacher):
    found, _ = prune_magnitude(tmp_path, teacher, "--sparsity=0.5")
    save_masks(tmp_path / "found.masks.pt", magnitude_masks(_other(), 0.5), {})
    result = run_script("train.py", *TINY, f"--arch={found}", f"--out={tmp_path / 'run'}")
    assert_user_error(result, "weight masks", "found.masks.pt")
    assert not (tmp_path / "run" / "results.json").exists()
    result = run_script("prune.py", "--method=magnitude", f"--teacher={teacher}", "--out=x.json")
    assert_user_error(result, "needs --sparsity")


def test_lottery_ticket_rewinding_restores_the_saved_weights_exactly(tmp_path, teacher):
    """A lottery ticket with rewinding (Frankle et al.): the mask from the trained network's
    magnitudes, the weights of an earlier checkpoint (here epoch 0) under it, exactly."""
    from lightning_modules.classify import ClassifyModule

    found, _ = prune_magnitude(tmp_path, teacher, "--sparsity=0.8")
    rewind_to = str(tmp_path / "epoch000.ckpt")
    early = torch.load(teacher, weights_only=False)  # stands in for an epoch-k checkpoint
    early["state_dict"] = {k: v * 0.5 if v.is_floating_point() else v
                           for k, v in early["state_dict"].items()}  # fmt: skip
    torch.save(early, rewind_to)
    ticket = ClassifyModule(arch=str(found), init="inherit", init_from=rewind_to)
    masks = load_masks(tmp_path / "found.masks.pt", ticket.model)
    saved = {k[len("model.") :]: v for k, v in early["state_dict"].items()}
    for name, value in ticket.model.state_dict().items():
        expected = saved[name] * masks[name] if name in masks else saved[name]
        assert torch.equal(value, expected), name
    # the control: the same mask over a fresh random initialisation
    control = ClassifyModule(arch=str(found), init="random")
    weights = prunable_weights(control.model)
    assert all(bool((weights[k][~m] == 0).all()) for k, m in masks.items())


def test_keep_every_epoch_keeps_the_checkpoints_a_ticket_rewinds_to(tmp_path):
    args = [*TINY, "--model.depth=8", "--trainer.max_epochs=2", f"--out={tmp_path}"]
    result = run_script("train.py", *args, "--keep_every_epoch=true", "--overwrite=true")
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch000.ckpt", "epoch001.ckpt", "init.ckpt", "last.ckpt"]
    # init.ckpt: the weights before the first step (iteration 0, the original lottery ticket),
    # the seed's fresh weights: batch norm has seen no batch, and epoch 0 moved every conv
    init, _ = load_teacher(tmp_path / "checkpoints" / "init.ckpt")
    first, _ = load_teacher(tmp_path / "checkpoints" / "epoch000.ckpt")
    bns = [m for m in init.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(int(bn.num_batches_tracked) == 0 for bn in bns)
    assert all(bool((bn.running_var == 1).all() and (bn.running_mean == 0).all()) for bn in bns)
    convs = [(a, b) for a, b in zip(init.modules(), first.modules(), strict=True)
             if isinstance(a, torch.nn.Conv2d)]  # fmt: skip
    assert convs and not any(torch.equal(a.weight, b.weight) for a, b in convs)
