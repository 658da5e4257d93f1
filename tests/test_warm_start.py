"""Warm start (the supernet's shared weights from a trained full network) and the convergence
record of the search: library behaviour and the train_search.py command line."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
from torch import nn

import tas
from tests.cli_helpers import QUIET, run_script
from tests.test_cli_errors import TINY, assert_user_error


def trained_like(space: tas.SearchSpace, seed: int = 0) -> nn.Module:
    """A full network with non-trivial weights and BN statistics, as a trained one has."""
    torch.manual_seed(seed)
    full = tas.build_model(tas.Arch.full(space))
    with torch.no_grad():
        for m in full.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return full.eval()


def set_argmax(net: tas.Supernet, arch: tas.Arch) -> None:
    """Logits whose argmax is ``arch``: its widths, its blocks per stage."""
    space = net.space
    with torch.no_grad():
        net.width_logits.zero_()
        net.depth_logits.zero_()
        for row, conv in enumerate(space.convs()):
            width = arch.widths.get(conv.name, conv.channels)
            net.width_logits[row, conv.candidates.index(width)] = 5.0
        for s, stage in enumerate(space.stages):
            net.depth_logits[s, stage.depth_choices.index(arch.blocks[s])] = 5.0


def uniform_supernet(space: tas.SearchSpace) -> tas.Supernet:
    """A supernet whose width and depth distributions are all uniform (zero logits)."""
    net = tas.Supernet(space)
    with torch.no_grad():
        net.width_logits.zero_()
        net.depth_logits.zero_()
    return net


@pytest.mark.parametrize("depth", [20, 164])
def test_warm_started_supernet_at_full_width_is_the_full_network(depth):
    space = tas.SearchSpace.cifar_resnet(depth)
    full = trained_like(space)
    net = tas.Supernet(space)
    net.load_full_weights(full.state_dict())
    set_argmax(net, tas.Arch.full(space))
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_argmax(x), full(x), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_warm_started_narrow_widths_are_the_first_filters_of_the_full_network(seed):
    """At any argmax architecture, the supernet runs what inheriting each conv's first c
    filters (and the first c channels of its BN) from the full network builds."""
    space = tas.SearchSpace.cifar_resnet(20)
    full = trained_like(space, seed)
    net = tas.Supernet(space)
    net.load_full_weights(full.state_dict())
    arch = tas.Arch.random(space, random.Random(seed))
    set_argmax(net, arch)
    assert net.derive() == arch
    compact = tas.build_model(arch, init_from=full).eval()
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_argmax(x), compact(x), rtol=1e-5, atol=1e-5)


def test_warm_start_leaves_the_architecture_logits_alone():
    space = tas.SearchSpace.cifar_resnet(20)
    net = tas.Supernet(space)
    before = [p.detach().clone() for p in net.arch_parameters()]
    net.load_full_weights(trained_like(space).state_dict())
    for b, p in zip(before, net.arch_parameters()):
        assert torch.equal(b, p)


@pytest.mark.parametrize(
    "other, needle",
    [
        (tas.SearchSpace.cifar_resnet(32), "unexpected"),
        (tas.SearchSpace.cifar_resnet(20, num_classes=100), "another shape"),
        (tas.SearchSpace.cifar_resnet(164), "another shape"),
    ],
)
def test_weights_of_another_network_are_refused_in_one_line(other, needle):
    net = tas.Supernet(tas.SearchSpace.cifar_resnet(20))
    state = tas.build_model(tas.Arch.full(other)).state_dict()
    with pytest.raises(ValueError, match=needle) as err:
        net.load_full_weights(state)
    assert "\n" not in str(err.value)
    assert "cifar_resnet-20" in str(err.value)


def test_distribution_stats_of_uniform_and_settled_distributions():
    space = tas.SearchSpace.cifar_resnet(20)
    net = uniform_supernet(space)
    stats = net.distribution_stats()
    assert stats["width_maxprob"] == pytest.approx(1 / 8)  # 8 candidates per conv
    assert stats["depth_maxprob"] == pytest.approx(1 / 3)  # ResNet-20: {1, 2, 3}
    assert stats["width_entropy"] == pytest.approx(torch.log(torch.tensor(8.0)).item(), rel=1e-6)
    set_argmax(net, tas.Arch.full(space))
    with torch.no_grad():
        net.width_logits.mul_(4)  # logit gap 20: one candidate holds all the mass
        net.depth_logits.mul_(4)
        net.width_logits[0, 0] = 20.0  # the stem: two candidates share it
    stats = net.distribution_stats()
    assert stats["width_maxprob_min"] == pytest.approx(0.5, abs=1e-6)
    assert stats["depth_maxprob_min"] == pytest.approx(1.0, abs=1e-6)
    assert stats["width_maxprob"] == pytest.approx(1 - 0.5 / len(space.convs()), abs=1e-6)


# ---------------------------------------------------------------- the command line
SEARCH = [*TINY, "--model.depth=20", "--model.ratio=0.5", "--trainer.log_every_n_steps=50"]


def test_search_warm_started_from_a_train_checkpoint_records_it(tmp_path, teacher):
    out = tmp_path / "search"
    result = run_script(
        "train_search.py", *SEARCH, "--logger=csv", f"--teacher={teacher}", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    search = json.loads((out / "found.json").read_text())["search"]
    assert search["warm_start"]["teacher"] == teacher
    assert len(search["warm_start"]["sha256"]) == 64
    summary = json.loads((out / "search_summary.json").read_text())
    assert set(summary["settling"]) >= {"width_maxprob", "depth_maxprob_min", "unchanged_epochs"}
    # 1 epoch of 1 step: fewer steps than log_every_n_steps, and still every epoch curve
    with open(out / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in (
        "search/width_maxprob",
        "search/width_maxprob_min",
        "search/depth_maxprob",
        "search/width_entropy",
        "search/argmax_changes",
        "search/epoch_expected_macs",
        "search/derived_macs",
    ):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert len(values) == 1, key
    maxprob = next(float(r["search/width_maxprob"]) for r in rows if r.get("search/width_maxprob"))
    assert 1 / 8 <= maxprob < 0.2  # one step from N(0, 0.01^2) logits: still near uniform


def test_search_warm_started_from_a_plain_state_dict(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(trained_like(tas.SearchSpace.cifar_resnet(20)).state_dict(), path)
    out = tmp_path / "search"
    result = run_script(
        "train_search.py", *SEARCH, f"--teacher={path}", "--model.cost=hysteresis", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    search = json.loads((out / "found.json").read_text())["search"]
    assert search["warm_start"]["teacher"] == str(path)
    assert search["settings"]["cost"] == "hysteresis"
    # the push under way is part of the checkpoint, so a resumed search goes on with it
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state["cost_loss.sign"].item() in (-1.0, 0.0, 1.0)


def test_weight_warmup_epochs_train_the_weights_only(teacher):
    import pytorch_lightning as pl

    from lightning_modules.data import data_module
    from lightning_modules.search import SearchModule

    def fit(warmup: int) -> tuple[SearchModule, list[torch.Tensor], list[torch.Tensor]]:
        pl.seed_everything(0)
        module = SearchModule(depth=20, ratio=0.5, teacher=teacher, weight_warmup_epochs=warmup)
        data = data_module(
            name="synthetic", batch_size=32, search_split=True, synthetic_train_size=128
        )
        logits = [p.detach().clone() for p in module.net.arch_parameters()]
        weights = [p.detach().clone() for p in module.net.weight_parameters()]
        trainer = pl.Trainer(
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=1,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=data)
        return module, logits, weights

    module, logits, weights = fit(warmup=1)
    assert all(torch.equal(a, p) for a, p in zip(logits, module.net.arch_parameters()))
    assert not all(torch.equal(a, p) for a, p in zip(weights, module.net.weight_parameters()))
    assert module.net.tau == module.hparams.tau_start
    module, logits, _ = fit(warmup=0)
    assert not all(torch.equal(a, p) for a, p in zip(logits, module.net.arch_parameters()))


@pytest.mark.slow  # ~45 s; test_cli_errors covers bad teachers by default
def test_teacher_of_another_network_is_one_line(tmp_path, teacher):
    wrong = tmp_path / "wrong.pt"
    torch.save(tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(32))).state_dict(), wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = {
        str(wrong): ("not those of the full cifar_resnet-20",),
        str(garbage): ("cannot be read",),
        str(tmp_path / "missing.ckpt"): ("no such file",),
        teacher: ("cifar_resnet-20", "not the full cifar_resnet-56"),
    }
    for path, needles in cases.items():
        depth = "--model.depth=56" if path == teacher else "--model.depth=20"
        out = tmp_path / f"out{len(needles)}{depth[-2:]}"
        result = run_script(
            "train_search.py", *QUIET, *TINY, depth, f"--teacher={path}", f"--out={out}"
        )
        assert_user_error(result, *needles)
        assert not (out / "found.json").exists()


def test_arch_lr_cosine_schedule_ends_at_zero_and_waits_for_the_warmup():
    import pytorch_lightning as pl

    from lightning_modules.data import data_module
    from lightning_modules.search import SearchModule

    def fit(schedule: str, warmup: int) -> list[float]:
        pl.seed_everything(0)
        module = SearchModule(
            depth=8, ratio=0.5, arch_lr=0.05, arch_lr_schedule=schedule,
            weight_warmup_epochs=warmup,
        )  # fmt: skip
        data = data_module(
            name="synthetic", batch_size=32, search_split=True, synthetic_train_size=128
        )
        lrs: list[float] = []

        class Record(pl.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                lrs.append(pl_module.optimizers()[1].param_groups[0]["lr"])

        pl.Trainer(
            max_epochs=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[Record()],
        ).fit(module, datamodule=data)  # fmt: skip
        return lrs

    assert fit("constant", 0) == [0.05] * 3
    cosine = fit("cosine", 0)
    assert cosine[0] < 0.05 and cosine[1] < cosine[0] and cosine[2] == pytest.approx(0, abs=1e-12)
    warm = fit("cosine", 1)  # two search epochs after one of weights alone
    assert warm[0] == 0.05 and warm[1] == pytest.approx(0.025) and warm[2] == pytest.approx(0)
    with pytest.raises(ValueError, match="arch_lr_schedule"):
        SearchModule(depth=8, arch_lr_schedule="step")


def test_entropy_is_the_distributions_total_and_pushes_each_toward_its_favourite():
    space = tas.SearchSpace.cifar_resnet(20)
    net = uniform_supernet(space)
    rows = net.width_mask.sum(-1).tolist()
    stages = net.depth_mask.sum(-1).tolist()
    by_hand = sum(torch.log(torch.tensor(float(n))).item() for n in rows + stages)
    assert net.entropy().item() == pytest.approx(by_hand, rel=1e-6)  # uniform: sum of log K
    # a near-tie between two widths of one conv: the entropy's descent favours the leader
    row = next(r for r, n in enumerate(rows) if n == 8)
    with torch.no_grad():
        net.width_logits[row].fill_(-30.0)
        net.width_logits[row, 6], net.width_logits[row, 7] = 0.08, 0.0  # 0.52 / 0.48
    net.entropy().backward()
    grad = net.width_logits.grad[row]
    assert grad[6] < 0 < grad[7]  # a descent step raises the leader, lowers the runner-up
    set_argmax(net, tas.Arch.full(space))
    with torch.no_grad():
        net.width_logits.mul_(10)
        net.depth_logits.mul_(10)
    assert net.entropy().item() == pytest.approx(0.0, abs=1e-6)  # every distribution chosen


def test_entropy_weight_ramps_from_zero_over_the_search_after_the_warmup():
    import pytorch_lightning as pl

    from lightning_modules.data import data_module
    from lightning_modules.search import SearchModule

    pl.seed_everything(0)
    module = SearchModule(depth=8, ratio=0.5, entropy_weight=0.1, weight_warmup_epochs=1)
    data = data_module(name="synthetic", batch_size=32, search_split=True, synthetic_train_size=128)
    weights: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            weights.append(pl_module.entropy_weight(batch_idx))

    pl.Trainer(
        max_epochs=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Record()],
    ).fit(module, datamodule=data)  # fmt: skip
    per_epoch = len(weights) // 3  # 2 batches an epoch: warm-up, then 2 search epochs
    assert weights[:per_epoch] == [0.0] * per_epoch
    search = weights[per_epoch:]
    assert search[0] == 0.0 and all(b > a for a, b in zip(search, search[1:]))
    assert search[-1] == pytest.approx(0.1 * (len(search) - 1) / len(search))
    assert module.search_record(module.history[-1], "last")["settings"]["entropy_weight"] == 0.1
    with pytest.raises(ValueError, match="entropy_weight"):
        SearchModule(depth=8, entropy_weight=-1.0)
