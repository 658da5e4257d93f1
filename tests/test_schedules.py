"""Iterative pruning schedules: AGP's cubic (Zhu & Gupta 2017) run during training, masks that
only grow, a resumed run that continues exactly; the k-round targets and one round of prune.py
--round for magnitude and structured L1-norm pruning, fine-tuned from the last round."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

import prune
import tas
from lightning_modules.classify import ClassifyModule
from lightning_modules.data import CIFARDataModule
from lightning_modules.teacher import TeacherError, load_teacher, save_network
from tas.baselines import l1_norm_prune, named_convs
from tas.baselines.schedules import (
    inherit_from,
    narrowed_space,
    parse_round,
    prune_further,
    round_macs_ratio,
    round_sparsity,
)
from tas.baselines.sparsity import (
    agp_sparsity,
    agp_update_due,
    load_masks,
    magnitude_masks,
    prunable_weights,
    sparsity_of,
)

SPACE = tas.SearchSpace.cifar_resnet(8)


# ---------------------------------------------------------------- the schedules' arithmetic
def test_agp_sparsity_endpoints_cubic_and_monotone():
    assert agp_sparsity(0, 10, 50, 0.9) == 0.0
    assert agp_sparsity(10, 10, 50, 0.9, initial=0.5) == 0.5  # the mask file's sparsity
    assert agp_sparsity(50, 10, 50, 0.9) == pytest.approx(0.9)
    assert agp_sparsity(80, 10, 50, 0.9) == pytest.approx(0.9)  # held after the end
    assert agp_sparsity(30, 10, 50, 0.8) == pytest.approx(0.8 - 0.8 * 0.5**3)  # by hand: 0.7
    values = [agp_sparsity(t, 10, 50, 0.9, 0.2) for t in range(60)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    steps = [b - a for a, b in zip(values[10:50], values[11:51])]
    assert steps[0] > steps[-1] > 0  # fast first, slow last
    with pytest.raises(ValueError, match="initial <= final"):
        agp_sparsity(0, 0, 10, 0.5, initial=0.6)
    with pytest.raises(ValueError, match="start < end"):
        agp_sparsity(0, 5, 5, 0.5)


def test_agp_updates_every_n_steps_and_at_the_end():
    due = [t for t in range(30) if agp_update_due(t, start=4, end=14, every=4)]
    assert due == [8, 12, 14]


def test_k_round_targets_are_geometric():
    rounds = [round_sparsity(0.9, r, 3) for r in (1, 2, 3)]
    assert rounds[-1] == pytest.approx(0.9)
    kept = [1.0] + [1 - s for s in rounds]
    fractions = [b / a for a, b in zip(kept, kept[1:])]  # each round keeps the same fraction
    assert fractions == pytest.approx([0.1 ** (1 / 3)] * 3)
    assert round_sparsity(0.75, 1, 2) == pytest.approx(0.5)
    assert [round_macs_ratio(0.25, r, 2) for r in (1, 2)] == pytest.approx([0.5, 0.25])
    assert parse_round("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "2", "a/b"):
        with pytest.raises(ValueError, match="R/K"):
            parse_round(bad)


def network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tas.build_model(tas.Arch.full(SPACE))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_only_grow_even_where_the_pruned_weights_grew(scope):
    model = network()
    first = magnitude_masks(model, 0.5, scope)
    with torch.no_grad():  # a pruned weight that would be the largest now
        for name, w in prunable_weights(model).items():
            w[~first[name]] = 100.0
    second = magnitude_masks(model, 0.7, scope, prior=first)
    for name, mask in second.items():
        assert not (mask & ~first[name]).any(), name  # nothing pruned comes back
    total = sum(m.numel() for m in second.values())
    assert sum(int((~m).sum()) for m in second.values()) == round(0.7 * total) or scope == "layer"
    if scope == "layer":
        assert all(int((~m).sum()) == round(0.7 * m.numel()) for m in second.values())
    # a prior already sparser than asked stays as it is
    assert all(
        torch.equal(m, first[k]) for k, m in magnitude_masks(model, 0.2, scope, first).items()
    )


# ---------------------------------------------------------------- AGP during training
def data() -> CIFARDataModule:
    return CIFARDataModule(
        name="synthetic", batch_size=16, synthetic_train_size=128, synthetic_test_size=32
    )  # 8 steps an epoch


class MaskLog(pl.Callback):
    """The module's sparsity and masks between steps, by the number of steps done."""

    def __init__(self) -> None:
        self.sparsity: dict[int, float] = {}
        self.masks: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.sparsity[trainer.global_step] = module.sparsity
        if module.masks is not None:
            self.masks.append({k: m.clone() for k, m in module.masks.items()})


def fit(module: ClassifyModule, epochs: int, callbacks=(), ckpt_path=None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, datamodule=data(), ckpt_path=ckpt_path)
    return trainer


def agp_module(**kwargs) -> ClassifyModule:
    pl.seed_everything(0)
    options = {"agp_sparsity": 0.8, "agp_every_n_steps": 3, "agp_end_epoch": 2, **kwargs}
    return ClassifyModule(depth=8, lr=0.05, **options)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_agp_run_reaches_the_schedule_and_keeps_pruned_weights_at_zero(scope):
    """One epoch (8 steps) of a schedule over two: updates after steps 3 and 6, the last at
    the cubic's value for step 6 of 16."""
    module, log = agp_module(agp_scope=scope), MaskLog()
    fit(module, epochs=1, callbacks=[log])
    expected = agp_sparsity(6, 0, 16, 0.8)
    weights = prunable_weights(module.model)
    total = sum(w.numel() for w in weights.values())
    assert abs(sparsity_of(module.model) * total - expected * total) <= len(weights)
    assert module.sparsity == pytest.approx(expected, abs=len(weights) / total)
    assert all(bool((weights[k][~m] == 0).all()) for k, m in module.masks.items())
    s3 = agp_sparsity(3, 0, 16, 0.8)
    assert list(log.sparsity.values()) == pytest.approx(
        [0, 0, 0, s3, s3, s3, expected, expected], abs=0.01
    )
    for a, b in zip(log.masks, log.masks[1:]):  # masks only grow
        assert all(not (b[k] & ~a[k]).any() for k in a)


def test_agp_resumed_run_continues_exactly(tmp_path):
    class StopAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            trainer.should_stop = True

    # updates after steps 5, 10, 15, 16: the resumed run's first step (9) moves the pruned
    # weights unless the checkpoint's masks are back in place
    straight = agp_module(agp_every_n_steps=5)
    fit(straight, epochs=2)
    first = agp_module(agp_every_n_steps=5)
    trainer = fit(first, epochs=2, callbacks=[StopAfterFirstEpoch()])
    trainer.save_checkpoint(tmp_path / "epoch0.ckpt")
    assert trainer.global_step == 8 and first.sparsity < 0.8
    resumed = agp_module(agp_every_n_steps=5)
    fit(resumed, epochs=2, ckpt_path=str(tmp_path / "epoch0.ckpt"))
    assert resumed.sparsity == straight.sparsity == pytest.approx(0.8, abs=0.01)
    assert all(torch.equal(resumed.masks[k], m) for k, m in straight.masks.items())
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_agp_starts_from_the_mask_file_and_checks_its_options(tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    save_network(teacher, network(), tas.Arch.full(SPACE))
    found = tmp_path / "found.json"
    prune.main(["--method=magnitude", "--sparsity=0.5", f"--teacher={teacher}", f"--out={found}"])
    module = ClassifyModule(arch=str(found), agp_sparsity=0.8, agp_every_n_steps=4, agp_end_epoch=1)
    assert module.agp_initial == pytest.approx(0.5, abs=0.01)
    file_masks = {k: m.clone() for k, m in module.masks.items()}
    fit(module, epochs=1)  # updates after steps 4 and 8 (the end): 0.8 exactly
    assert sparsity_of(module.model) == pytest.approx(0.8, abs=0.005)
    assert all(not (module.masks[k] & ~m).any() for k, m in file_masks.items())
    with pytest.raises(ValueError, match="above the mask file's"):
        ClassifyModule(arch=str(found), agp_sparsity=0.4)
    with pytest.raises(ValueError, match="agp_scope"):
        ClassifyModule(depth=8, agp_sparsity=0.5, agp_scope="net")
    with pytest.raises(ValueError, match="must come after agp_start_epoch"):
        fit(ClassifyModule(depth=8, agp_sparsity=0.5, agp_start_epoch=1), epochs=1)


# ---------------------------------------------------------------- k rounds through prune.py
def test_one_magnitude_round_keeps_the_last_rounds_pruned_weights(tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    save_network(teacher, network(), tas.Arch.full(SPACE))
    round1 = tmp_path / "r1" / "found.json"
    round1.parent.mkdir()
    prune.main(["--method=magnitude", "--sparsity=0.9", "--round=1/3", f"--teacher={teacher}",
                f"--out={round1}"])  # fmt: skip
    fine_tuned = ClassifyModule(arch=str(round1), init="inherit", init_from=str(teacher))
    trainer = fit(fine_tuned, epochs=1)
    ckpt = tmp_path / "r1" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    round2 = tmp_path / "r2" / "found.json"
    round2.parent.mkdir()
    prune.main(["--method=magnitude", "--sparsity=0.9", "--round=2/3", f"--teacher={ckpt}",
                f"--masks={round1.with_name('found.masks.pt')}", f"--out={round2}"])  # fmt: skip
    model, _ = load_teacher(ckpt)
    first = load_masks(round1.with_name("found.masks.pt"), model)
    second = load_masks(round2.with_name("found.masks.pt"), model)
    search = json.loads(round2.read_text())["search"]
    assert search["round"] == "2/3" and search["sparsity"] == pytest.approx(
        round_sparsity(0.9, 2, 3)
    )
    for name, mask in second.items():
        assert not (mask & ~first[name]).any()
        assert int((~mask).sum()) == round(search["sparsity"] * mask.numel())
    # round 2 fine-tunes from round 1's checkpoint, its masks applied
    tuned = ClassifyModule(arch=str(round2), init="inherit", init_from=str(ckpt))
    state = tuned.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(state[name], value * second[name] if name in second else value), name


def test_structured_round_prunes_the_last_rounds_network(tmp_path, capsys):
    teacher = tmp_path / "teacher.ckpt"
    full = tas.Arch.full(SPACE)
    save_network(teacher, network(), full)
    round1 = tmp_path / "r1.json"
    prune.main(["--method=l1_norm", "--ratio=0.5", "--round=1/2", f"--teacher={teacher}",
                f"--out={round1}"])  # fmt: skip
    first = tas.Arch.load(round1)
    assert first.macs <= 0.5**0.5 * full.macs and "pruned_from_widths" not in first.search
    previous = ClassifyModule(arch=str(round1), init="inherit", init_from=str(teacher))
    ckpt = tmp_path / "r1.ckpt"
    save_network(ckpt, previous.model, first)  # stands in for round 1's fine-tuned checkpoint
    round2 = tmp_path / "r2.json"
    prune.main(["--method=l1_norm", "--ratio=0.5", "--round=2/2", f"--teacher={ckpt}",
                f"--out={round2}"])  # fmt: skip
    second = tas.Arch.load(round2)
    assert second.macs <= 0.5 * full.macs < first.macs
    assert second.search["pruned_from_widths"] == first.widths
    # keep indexes the round-1 network's filters; the fine-tune inherits them from its checkpoint
    tuned = ClassifyModule(arch=str(round2), init="inherit", init_from=str(ckpt))
    before, after = conv_weights(previous.model, first), conv_weights(tuned.model, second)
    keep = second.search["keep"]
    assert all(name.endswith("conv_a") for name in keep)  # ResNet-8 prunes inside blocks only
    for name, idx in keep.items():  # conv_a reads the unpruned stream, conv_b reads conv_a
        assert max(idx) < first.widths[name]
        assert torch.equal(after[name], before[name][idx])
        conv_b = name.replace("conv_a", "conv_b")
        assert torch.equal(after[conv_b], before[conv_b][:, idx])
    with pytest.raises(TeacherError, match="not the pruned network"):
        ClassifyModule(arch=str(round2), init="inherit", init_from=str(teacher))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # without --round a pruned teacher is refused
        prune.main(["--method=l1_norm", "--ratio=0.3", f"--teacher={ckpt}", "--out=x.json"])
    assert exit_info.value.code == 2 and "is a pruned network" in capsys.readouterr().err


def conv_weights(model: torch.nn.Module, arch: tas.Arch) -> dict[str, torch.Tensor]:
    return {name: m[0].weight for name, m in named_convs(model, arch).items()}


def test_prune_further_of_the_full_network_is_the_one_shot_criterion():
    model = network()
    full = tas.Arch.full(SPACE)
    assert narrowed_space(full) == SPACE
    arch, keep = prune_further(l1_norm_prune, model, full, 0.6)
    one_shot, one_keep = l1_norm_prune(model, 0.6)
    assert arch == one_shot and all(torch.equal(keep[k], v) for k, v in one_keep.items())
    a = inherit_from(arch, model, full, keep)
    b = tas.build_model(one_shot, init_from=model, keep=one_keep)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="already within"):
        prune_further(l1_norm_prune, a, arch, 0.9)


def test_a_second_structured_round_on_mobilenet_v2_follows_its_depthwise_convs():
    space = tas.SearchSpace.mobilenet_v2(10, 32, width_mult=0.5)
    torch.manual_seed(0)
    full = tas.build_model(tas.Arch.full(space)).eval()
    arch, keep = l1_norm_prune(full, 0.7)
    first = tas.build_model(arch, init_from=full, keep=keep).eval()
    assert (
        tas.Arch.full(narrowed_space(arch)).macs
        == arch.macs
        == tas.count_macs(first, (1, 3, 32, 32))
    )
    second, keep2 = prune_further(l1_norm_prune, first, arch, 0.5)
    net = inherit_from(second, first, arch, keep2)
    assert tas.count_macs(net, (1, 3, 32, 32)) == second.macs
    assert 0.98 * 0.5 <= second.macs / tas.Arch.full(space).macs <= 0.5


def test_bad_iterative_options_are_one_line(tmp_path, capsys):
    teacher = tmp_path / "teacher.ckpt"
    save_network(teacher, network(), tas.Arch.full(SPACE))
    other = tmp_path / "other.masks.pt"
    torch.save(b"", other)
    cases = {
        ("--method=magnitude", "--sparsity=0.9", "--round=4/3"): "1 <= R <= K",
        ("--method=slimming", "--ratio=0.5", "--round=1/2"): "--round works with",
        ("--method=l1_norm", "--ratio=0.5", f"--masks={other}"): "--masks goes with",
        ("--method=magnitude", "--sparsity=0.9", f"--masks={other}"): "cannot be read",
    }
    for args, needle in cases.items():
        out = tmp_path / "found.json"
        with pytest.raises(SystemExit) as exit_info:
            prune.main([*args, f"--teacher={teacher}", f"--out={out}"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and needle in err, err
        assert not out.exists()
