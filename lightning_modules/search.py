"""SearchModule: how the TAS search is trained (the method itself lives in `tas`).

Every iteration takes one batch from each half of the training set: a weight step (SGD on
cross-entropy, architecture logits frozen) on the first half, then an architecture step (Adam on
cross-entropy + lambda * cost loss, weights frozen) on the second, each with fresh Gumbel draws,
both in train mode. The temperature follows a per-epoch schedule. After every epoch the argmax
architecture is derived and scored on the held-out architecture half; the module keeps the last
one and the best one inside the MACs band [target - tolerance, target].
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torchmetrics.classification import MulticlassAccuracy

import tas
import tas.latency
from lightning_modules.distributed import average_gradients, same_on_all_ranks
from lightning_modules.errors import check_finite
from lightning_modules.optim import cosine_to_zero, sgd_with_cosine
from lightning_modules.teacher import TeacherError, load_full_state
from tas.arch import check_ratio
from tas.search import search_step, weight_step
from tas.supernet import batch_statistics


@dataclass
class EpochRecord:
    """Where the search stood at the end of one epoch: its argmax network and how settled the
    distributions were. Kept in the checkpoint (as a dict) and read by found.json's selection,
    search_summary.json and the settling report."""

    epoch: int
    val_acc: float  # the argmax network on the arch half (shared weights, batch statistics)
    macs: int  # the argmax network's
    expected_macs: float  # E[MACs] under the plain softmax distributions
    in_band: bool  # the argmax network inside the budget's band
    tau: float
    argmax_changes: int  # convs and stages whose argmax moved since the last epoch
    width_maxprob: float
    width_maxprob_min: float
    width_entropy: float
    depth_maxprob: float
    depth_maxprob_min: float
    depth_entropy: float
    picks: list[list[int]]  # [argmax candidate of every conv, of every stage]
    arch: dict[str, Any]  # the argmax network as found.json holds it
    latency_ms: float | None = None  # its predicted latency, under a latency budget

    SETTLING = (
        "width_maxprob",
        "width_maxprob_min",
        "depth_maxprob",
        "depth_maxprob_min",
        "argmax_changes",
    )

    def settling(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.SETTLING}


class SearchModule(pl.LightningModule):
    """TAS search of a CIFAR ResNet, a torchvision ResNet or MobileNetV2, or a CIFAR VGG under a
    MACs (or latency) budget.

    Args:
        depth: network depth (cifar_resnet: 20/32/56/110 basic, 164 bottleneck;
            imagenet_resnet: 18/34/50/101/152; cifar_vgg: 11/13/16/19; mobilenet_v2: unused).
        num_classes: classes of the data set (linked from the data module by the CLI).
        backbone: the search space, "cifar_resnet", "imagenet_resnet" (torchvision's ResNets;
            a torchvision checkpoint is a ``teacher``), "mobilenet_v2" (torchvision's, width 1.0;
            its checkpoints too) or "cifar_vgg"; see `tas.SearchSpace`.
        input_size: image side the MACs are counted at (linked from the data module).
        ratio: target MACs as a fraction of the full network's, in (0, 1].
        tolerance: width of the MACs band below the target, as a fraction of full MACs.
        cost_weight: lambda, the weight of the cost loss in the architecture loss.
        num_samples: I, distinct widths drawn per conv in each forward.
        shortcut: "zero_pad" or "projection" for identity blocks whose widths differ.
        tau_schedule / tau_start / tau_end: Gumbel temperature per epoch ("cosine" or "linear").
        lr, momentum, nesterov, weight_decay: SGD for the weights (cosine to 0 over the run).
        arch_lr, arch_beta1, arch_beta2, arch_weight_decay: Adam for the architecture logits.
        arch_lr_schedule: "constant" (the paper's) or "cosine": the architecture learning rate
            follows a cosine from ``arch_lr`` to 0 over the search's steps (after any weight
            warm-up), so the logits' noisy walk dies down and the argmax network stays put at
            the end (docs/search_settling.md).
        select: which architecture found.json holds: "best" (best validation accuracy inside the
            MACs band; see ``fallback`` when no epoch was inside) or "last" (the authors' choice).
        fallback: what "best" holds when no epoch's argmax network landed inside the band:
            "in_band" the most probable network inside it under the last epoch's distributions
            (`tas.Supernet.derive_within`; scored on the architecture half like the epochs'),
            "last" the last epoch's argmax network, outside the band.
        channels_last: run convs in the channels-last memory layout (faster on CPU and GPU).
        width_multiple: round every width candidate to a multiple of this (8: faster compact
            networks per MAC on oneDNN/cuDNN; 1: the paper's candidates).
        teacher: warm start: a train.py checkpoint of the full network (or a plain state_dict
            of it) whose weights initialise every shared weight of the supernet (see
            `tas.Supernet.load_full_weights`); None searches from scratch, as the paper does.
        weight_warmup_epochs: epochs of weight steps only (logits frozen, temperature at
            ``tau_start``) before the search proper; the temperature schedule then runs over
            the remaining epochs.
        cost: the cost loss, "band" (the paper's: -log E / +log E when the argmax network is
            under / over the band), "hysteresis" (the band loss, but a push once started goes
            on to the band's centre: no toggling at an edge) or "centred" ((log E - log
            centre)^2); see `tas.cost`.
        budget: what the cost loss measures: "macs" (the paper's) or "latency" (milliseconds
            predicted by ``latency_table``, written by ``python -m tas.latency profile``).
        latency_table: the latency table of this space on the target device.
        target_ms: the latency target; None: ``ratio`` x the full network's table latency.
            The band is [target - tolerance x full latency, target].
        entropy_weight: weight of the distributions' entropy in the architecture loss
            (`tas.Supernet.entropy`), ramped linearly from 0 at the search's start to this at
            its end: late in the search it pushes every distribution toward its favourite, so a
            near-tie between two widths is decided instead of flipping when the noise says so
            (docs/search_settling.md). 0 (the paper's) leaves it out.
        width_mult: MobileNetV2's width multiplier (torchvision's ``width_mult``: the full
            network's widths); 1.0 for the other backbones.
    """

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 10,
        backbone: str = "cifar_resnet",
        input_size: int | None = None,
        ratio: float = 0.47,
        tolerance: float = 0.05,
        cost_weight: float = 2.0,
        num_samples: int = 2,
        shortcut: str = "zero_pad",
        tau_schedule: str = "cosine",
        tau_start: float = 5.0,
        tau_end: float = 0.1,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        arch_lr: float = 1e-3,
        arch_beta1: float = 0.5,
        arch_beta2: float = 0.999,
        arch_weight_decay: float = 1e-3,
        arch_lr_schedule: str = "constant",
        select: str = "best",
        fallback: str = "in_band",
        channels_last: bool = False,
        width_multiple: int = 1,
        teacher: str | None = None,
        weight_warmup_epochs: int = 0,
        cost: str = "band",
        budget: str = "macs",
        latency_table: str | None = None,
        target_ms: float | None = None,
        entropy_weight: float = 0.0,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        check_ratio(ratio)
        if select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {select!r}")
        if fallback not in ("in_band", "last"):
            raise ValueError(f"fallback must be 'in_band' or 'last', got {fallback!r}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if arch_lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"arch_lr_schedule must be 'constant' or 'cosine', got {arch_lr_schedule!r}"
            )
        if weight_warmup_epochs < 0:
            raise ValueError(f"weight_warmup_epochs must be >= 0, got {weight_warmup_epochs}")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.cost_loss = tas.cost.make_cost(cost)  # a module (saved with the net) if stateful
        self.space = tas.SearchSpace.from_name(
            backbone,
            depth,
            num_classes,
            shortcut=shortcut,
            input_size=input_size,
            width_multiple=width_multiple,
            width_mult=width_mult,
        )
        self.net = tas.Supernet(self.space, num_samples=num_samples, tau=tau_start)
        self.warm_start: dict[str, str] | None = None
        if teacher:
            try:
                self.net.load_full_weights(load_full_state(teacher, self.space))
                self.warm_start = {"teacher": str(teacher), "sha256": file_sha256(teacher)}
            except TeacherError:
                raise
            except ValueError as err:
                raise TeacherError(f"teacher {teacher}: {err}") from None
        self.tau_schedule = tas.TauSchedule(tau_schedule, tau_start, tau_end)
        self.full_macs = tas.Arch.full(self.space).macs
        self.target_macs = ratio * self.full_macs
        self.tolerance_macs = tolerance * self.full_macs
        self.budget: tas.MacsBudget | tas.LatencyBudget = tas.MacsBudget(
            self.target_macs, self.tolerance_macs
        )
        if budget == "latency":
            self.budget = latency_budget(self.space, latency_table, target_ms, ratio, tolerance)
        elif budget != "macs":
            raise ValueError(f"budget must be 'macs' or 'latency', got {budget!r}")
        smallest = min_macs(self.space)
        if budget == "macs" and smallest > self.target_macs:
            raise ValueError(
                f"ratio {ratio} asks for {self.target_macs / 1e6:.2f}M MACs but the smallest network "
                f"in the search space has {smallest / 1e6:.2f}M ({smallest / self.full_macs:.3f})"
            )
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.history: list[EpochRecord] = []
        self.best: dict[str, Any] | None = None  # the best in-band row so far
        self._start_picks: list[list[int]] | None = None  # argmax before the first epoch

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> tuple[list, list]:
        hp = self.hparams
        weights, cosine = sgd_with_cosine(self.net.weight_parameters(), hp, self.trainer)
        arch = torch.optim.Adam(
            self.net.arch_parameters(),
            lr=hp.arch_lr,
            betas=(hp.arch_beta1, hp.arch_beta2),
            weight_decay=hp.arch_weight_decay,
        )
        schedulers = [{"scheduler": cosine, "interval": "step"}]
        if hp.arch_lr_schedule == "cosine":
            epochs = self.trainer.max_epochs
            search = (epochs - hp.weight_warmup_epochs) / epochs if epochs else 1.0
            arch_cosine = cosine_to_zero(arch, self.trainer.estimated_stepping_batches * search)
            schedulers.append({"scheduler": arch_cosine, "interval": "step"})
        return [weights, arch], schedulers

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def on_fit_start(self) -> None:
        self._start_picks = [list(p) for p in self.net.argmax_indices()]

    @property
    def unit(self) -> str:
        """The budget's name in log keys: "macs" or "latency_ms"."""
        return "macs" if self.budget.unit == "macs" else "latency_ms"

    def warming_up(self) -> bool:
        """True during the weights-only warm-up epochs."""
        return self.current_epoch < self.hparams.weight_warmup_epochs

    def on_train_epoch_start(self) -> None:
        warmup = self.hparams.weight_warmup_epochs
        if self.warming_up():
            self.net.set_tau(self.hparams.tau_start)
        else:
            epoch, search_epochs = self.current_epoch - warmup, self.trainer.max_epochs - warmup
            self.net.set_tau(self.tau_schedule(epoch, search_epochs))
        # The Gumbel draws get their own generator, reseeded from (seed, epoch): a run resumed at
        # an epoch boundary then draws exactly what the uninterrupted run drew, whatever else
        # (data loader start-up, for one) takes numbers from the global generator.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.net.generator = torch.Generator(self.device).manual_seed(
            seed * 1_000_003 + self.current_epoch
        )

    def entropy_weight(self, batch_idx: int) -> float:
        """The entropy term's weight at this step: ``entropy_weight`` x the fraction of the
        search (after any warm-up) done."""
        final = self.hparams.entropy_weight
        if not final:
            return 0.0
        warmup, epochs = self.hparams.weight_warmup_epochs, self.trainer.max_epochs
        batches = max(1, int(self.trainer.num_training_batches))
        done = (self.current_epoch - warmup + batch_idx / batches) / max(1, epochs - warmup)
        return final * min(1.0, max(0.0, done))

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_step(
        self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_idx: int
    ) -> None:
        w_opt, a_opt = self.optimizers()
        (xw, yw), (xa, ya) = batch["weights"], batch["arch"]
        if self.warming_up():
            ce = weight_step(
                self.net, w_opt, (self._inputs(xw), yw), self.manual_backward, average_gradients
            )
            check_finite(ce, "the weight step's loss", self.current_epoch, batch_idx)
            self._schedulers()[0].step()  # the logits' schedule starts with the search
            self.log("train/ce", ce, prog_bar=True)
            self.log_dict({"search/tau": self.net.tau, "lr": w_opt.param_groups[0]["lr"]})
            return
        losses = search_step(
            self.net,
            w_opt,
            a_opt,
            (self._inputs(xw), yw),
            (self._inputs(xa), ya),
            self.budget,
            self.hparams.cost_weight,
            backward=self.manual_backward,
            reduce_grads=average_gradients,
            cost=self.cost_loss,
            entropy_weight=self.entropy_weight(batch_idx),
        )
        check_finite(losses.ce, "the weight step's loss", self.current_epoch, batch_idx)
        check_finite(losses.arch_ce, "the architecture step's loss", self.current_epoch, batch_idx)
        for scheduler in self._schedulers():  # the weights' and, if any, the logits'
            scheduler.step()
        self.log_dict({"train/ce": losses.ce, "search/arch_ce": losses.arch_ce}, prog_bar=True)
        self.log_dict(
            {
                "search/cost_loss": losses.cost.float(),
                f"search/expected_{self.unit}": losses.expected.float(),
                f"search/argmax_{self.unit}": losses.argmax.float(),
                f"search/target_{self.unit}": float(self.budget.target),
                "search/tau": self.net.tau,
                "search/entropy_weight": self.entropy_weight(batch_idx),
                "lr": w_opt.param_groups[0]["lr"],
            }
        )

    # ------------------------------------------------------------ evaluation
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        with batch_statistics(self.net):  # see tas.supernet.batch_statistics
            self.val_acc.update(self.net.forward_argmax(self._inputs(x)), y)

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        self.val_acc.reset()
        self.log("val/acc", acc, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        arch = self.net.derive()
        low = self.budget.target - self.budget.tolerance
        widths, depths = self.net.argmax_indices()
        before = self.history[-1].picks if self.history else self._start_picks
        width_changes = depth_changes = 0
        if before is not None:
            width_changes = sum(a != b for a, b in zip(widths, before[0]))
            depth_changes = sum(a != b for a, b in zip(depths, before[1]))
        stats = self.net.distribution_stats()
        expected = float(self.net.expected_macs())
        cost = self.budget.of(arch)  # in the budget's unit
        row = EpochRecord(
            epoch=self.current_epoch,
            val_acc=acc,
            macs=arch.macs,
            expected_macs=expected,
            in_band=low <= cost <= self.budget.target,
            tau=self.net.tau,
            argmax_changes=width_changes + depth_changes,
            latency_ms=cost if self.budget.unit == "ms" else None,
            picks=[widths, depths],
            arch=arch.to_dict(),
            **stats,
        )
        self.history.append(row)
        if row.in_band and (self.best is None or acc >= self.best.val_acc):
            self.best = row
        arch_logits = torch.cat([p.detach().flatten() for p in self.net.arch_parameters()])
        if not same_on_all_ranks(arch_logits):
            raise RuntimeError("architecture parameters differ between ranks")
        self.log("search/arch_synced", 1.0)
        # epoch-level curves: logged at every epoch's end, whatever log_every_n_steps says
        self.log_dict(
            {
                "search/derived_macs": float(arch.macs),
                "search/epoch_expected_macs": expected,
                "search/in_band": float(row.in_band),
                "search/argmax_changes": float(row.argmax_changes),
                "search/width_argmax_changes": float(width_changes),
                "search/depth_argmax_changes": float(depth_changes),
                **{f"search/{k}": v for k, v in stats.items()},
            }
        )
        for s, blocks in enumerate(arch.blocks):
            self.log(f"search/blocks_stage{s + 1}", float(blocks))

    def settled_epochs(self) -> int:
        """How many of the last epochs ended on the same argmax network as the last one."""
        if not self.history:
            return 0
        last, count = self.history[-1].picks, 0
        for row in reversed(self.history):
            if row.picks != last:
                break
            count += 1
        return count

    # ------------------------------------------------------------ results
    def chosen(self) -> tuple[tas.Arch, EpochRecord]:
        """The architecture for found.json and the epoch it came from."""
        if not self.history:
            raise RuntimeError("no epoch has finished: nothing to derive")
        hp = self.hparams
        if hp.select == "best" and self.best is None and hp.fallback == "in_band":
            chosen = self.most_probable_in_band()
            if chosen is not None:
                return chosen
        selected = "best" if hp.select == "best" and self.best is not None else "last"
        row = self.best if selected == "best" else self.history[-1]
        arch = tas.Arch.from_dict(row.arch)
        arch.search.update(self.search_record(row, selected))
        return arch, row

    def most_probable_in_band(self) -> tuple[tas.Arch, EpochRecord] | None:
        """The most probable network inside the band under the current (last epoch's)
        distributions, and its record, not yet scored (``val_acc`` None: see `score`); None
        when the space has no network inside the band."""
        low = self.budget.target - self.budget.tolerance

        def latency(blocks: tuple[int, ...], widths: dict[str, int]) -> float:
            return self.budget.of(tas.Arch(self.space, blocks, widths))

        cost = latency if self.budget.unit == "ms" else None  # None: MACs
        try:
            derived = self.net.derive_within(low, self.budget.target, cost)
        except RuntimeError as err:  # no network inside the band found within the node budget
            rank_zero_warn(f"{err}: found.json keeps the last epoch's argmax network")
            return None
        if derived is None:
            return None
        arch, last = derived.arch, self.history[-1]
        row = replace(
            last,
            val_acc=None,
            macs=arch.macs,
            in_band=True,
            latency_ms=self.budget.of(arch) if self.budget.unit == "ms" else None,
            arch=arch.to_dict(),
        )
        arch.search.update(self.search_record(row, "in_band"))
        arch.search["derivation"] = {
            "log_prob": derived.log_prob,
            "argmax_log_prob": self.net.log_prob(tas.Arch.from_dict(last.arch)),
            "argmax_macs": last.macs,
            "exact": derived.exact,
        }
        return arch, row

    @torch.no_grad()
    def score(self, arch: tas.Arch, datamodule: Any) -> float:
        """Top-1 accuracy of ``arch`` run on the supernet's shared weights over the validation
        images, as the epochs' argmax networks are scored (batch statistics)."""
        correct = total = 0
        with batch_statistics(self.net):
            for x, y in datamodule.val_dataloader():
                batch = (x.to(self.device), y.to(self.device))
                x, y = datamodule.transform_batch(batch, train=False)
                correct += int((self.net.forward_arch(self._inputs(x), arch).argmax(-1) == y).sum())
                total += len(y)
        return correct / total

    def search_record(self, row: EpochRecord, selected: str) -> dict[str, Any]:
        hp = self.hparams
        return {
            "method": "tas",
            "ratio": hp.ratio,
            "target_macs": int(self.target_macs),
            "tolerance_macs": int(self.tolerance_macs),
            "in_band": row.in_band,
            "selected": selected,
            "epoch": row.epoch,
            "epochs": self.trainer.max_epochs if self._trainer is not None else None,
            "val_acc": row.val_acc,
            "warm_start": self.warm_start,
            **(
                {
                    "budget": {
                        "unit": "ms",
                        "latency_table": hp.latency_table,
                        "target_ms": self.budget.target,
                        "tolerance_ms": self.budget.tolerance,
                        "predicted_ms": row.latency_ms,
                        "table": self.budget.table.meta,
                    }
                }
                if self.budget.unit == "ms"
                else {}
            ),
            "settings": {
                k: hp[k]
                for k in (
                    "cost_weight",
                    "num_samples",
                    "tau_schedule",
                    "tau_start",
                    "tau_end",
                    "lr",
                    "arch_lr",
                    "arch_weight_decay",
                    "arch_lr_schedule",
                    "weight_warmup_epochs",
                    "cost",
                    "entropy_weight",
                    "fallback",
                )
            },
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tas_search"] = {
            "history": [asdict(r) for r in self.history],
            "best": None if self.best is None else asdict(self.best),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("tas_search", {})
        self.history = [EpochRecord(**r) for r in state.get("history", [])]
        best = state.get("best")
        self.best = None if best is None else EpochRecord(**best)


def smallest_arch(space: tas.SearchSpace) -> tas.Arch:
    """The smallest network the search can reach: fewest blocks, narrowest widths."""
    blocks = tuple(stage.depth_choices[0] for stage in space.stages)
    return tas.Arch(space, blocks, {c.name: c.candidates[0] for c in space.kept_convs(blocks)})


def min_macs(space: tas.SearchSpace) -> int:
    """MACs of the smallest network the search can reach."""
    return smallest_arch(space).macs


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 (hex), so a record names the exact teacher it started from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def latency_budget(
    space: tas.SearchSpace,
    table_path: str | None,
    target_ms: float | None,
    ratio: float,
    tolerance: float,
) -> tas.LatencyBudget:
    """The latency budget of a search: the table read and checked against the space, the target
    (``target_ms``, or ``ratio`` x the full network's latency) reachable in the space."""
    if not table_path:
        raise ValueError(
            "budget 'latency' needs --model.latency_table FILE (python -m tas.latency)"
        )
    table = tas.latency.LatencyTable.load(table_path)
    if table.space != space:
        raise ValueError(
            f"latency table {table_path} is for {table.space.describe()}, not {space.describe()}"
        )
    full_ms = table.predict_ms(tas.Arch.full(space))
    target = ratio * full_ms if target_ms is None else float(target_ms)
    smallest = smallest_arch(space)
    if table.predict_ms(smallest) > target:
        raise ValueError(
            f"target {target:.3f} ms is below the fastest network of the space "
            f"({table.predict_ms(smallest):.3f} ms on {table_path})"
        )
    return tas.LatencyBudget(table, target, tolerance * full_ms)
