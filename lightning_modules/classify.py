"""ClassifyModule: train a network built from an Arch, from scratch, optionally distilling from a
teacher checkpoint (train.py trains the teacher; distill.py trains the found network with KD).

The architecture is stored in the checkpoint (hyperparameter ``arch_record`` and the
``tas_arch`` entry), so a checkpoint rebuilds its own network, and serves as a teacher, without
the found.json it came from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import tas
from lightning_modules.archs import resolve_arch
from lightning_modules.errors import check_finite
from lightning_modules.optim import sgd_with_cosine
from lightning_modules.teacher import TeacherError, load_teacher, test_accuracy
from tas.baselines.schedules import inherit_from
from tas.baselines.sparsity import (
    SCOPES,
    agp_sparsity,
    agp_update_due,
    apply_masks,
    load_masks,
    magnitude_masks,
    mask_sparsity,
)
from tas.kd import rkd_loss

DISTILL = ("hinton", "rkd", "hinton+rkd")


class ClassifyModule(pl.LightningModule):
    """Train ``tas.build_model(arch)`` from scratch with cross-entropy, or with Hinton KD.

    Args:
        arch: ``full``, ``uniform:R``, ``random:SEED`` or a found.json path.
        depth: network depth for ``full`` / ``uniform`` / ``random`` (a found.json brings its own).
        num_classes: classes of the data set (linked from the data module by the CLI).
        backbone: "cifar_resnet", "imagenet_resnet" (torchvision's ResNets), "mobilenet_v2" or
            "cifar_vgg", for ``full`` / ``uniform`` / ``random``.
        input_size: image side the MACs are counted at (linked from the data module).
        shortcut: how identity blocks of different widths are joined ("zero_pad"/"projection").
        teacher: a train.py checkpoint to distil from; None trains with cross-entropy only.
        init: ``random`` (fresh weights) or ``inherit``: copy the kept filters' weights from
            ``init_from`` (fine-tuning a pruned network); the filters kept are the found.json's
            ``search.keep`` (written by prune.py), the first ``width`` of each conv otherwise.
        init_from: a train.py checkpoint of the full network, for ``init: inherit``; for a
            round of iterative structured pruning (prune.py ``--round``), the previous round's
            checkpoint (the network ``search.keep`` indexes); or one of this same network (its
            weights are taken as they are: prune.py's ``NAME.init.ckpt``
            of the methods that change the kept weights, ThiNet's and LASSO's).
        alpha, temperature: KD loss weight of the teacher term and softmax temperature.
        distill: with a teacher, "hinton" (softened logits), "rkd" (cross-entropy + relational
            KD on the penultimate features: distances and angles within the batch, Park et al.
            2019) or "hinton+rkd" (both).
        rkd_distance_weight, rkd_angle_weight: RKD's weights (the paper's 25 and 50).
        lr, momentum, nesterov, weight_decay: SGD, cosine to 0 over the run.
        channels_last: run convs in the channels-last memory layout.
        bn_l1: weight of an L1 penalty on every BatchNorm scale (Network Slimming's sparsity
            training, Liu et al. 2017, who use 1e-4); 0 trains without it.
        agp_sparsity: gradual magnitude pruning (AGP, Zhu & Gupta 2017) to this final fraction
            of conv and linear weights zeroed; 0 trains without it. The masks grow to the cubic
            schedule's sparsity (`tas.baselines.sparsity.agp_sparsity`, from the mask file's sparsity or
            0) every ``agp_every_n_steps`` optimiser steps from the start of epoch
            ``agp_start_epoch`` to the start of ``agp_end_epoch`` (None: the end of training),
            then stay applied; a weight once pruned stays pruned.
        agp_scope: "layer" (each layer to the schedule's sparsity) or "global" (one threshold).
        agp_start_epoch, agp_end_epoch, agp_every_n_steps: the schedule's window and step.
        width_mult: MobileNetV2's width multiplier (torchvision's ``width_mult``), for ``full`` /
            ``uniform`` / ``random``; a found.json records its own.
        arch_record: the resolved architecture (filled in automatically; read from checkpoints).
    """

    def __init__(
        self,
        arch: str = "full",
        depth: int = 56,
        num_classes: int = 10,
        backbone: str = "cifar_resnet",
        input_size: int | None = None,
        shortcut: str = "zero_pad",
        teacher: str | None = None,
        init: str = "random",
        init_from: str | None = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        distill: str = "hinton",
        rkd_distance_weight: float = 25.0,
        rkd_angle_weight: float = 50.0,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        channels_last: bool = False,
        bn_l1: float = 0.0,
        agp_sparsity: float = 0.0,
        agp_scope: str = "layer",
        agp_start_epoch: int = 0,
        agp_end_epoch: int | None = None,
        agp_every_n_steps: int = 100,
        width_mult: float = 1.0,
        arch_record: dict | None = None,
    ) -> None:
        super().__init__()
        if distill not in DISTILL:
            raise ValueError(f"distill must be one of {', '.join(DISTILL)}, got {distill!r}")
        if agp_scope not in SCOPES:
            raise ValueError(f"agp_scope must be one of {', '.join(SCOPES)}, got {agp_scope!r}")
        if agp_every_n_steps < 1 or agp_start_epoch < 0:
            raise ValueError("agp_every_n_steps must be >= 1 and agp_start_epoch >= 0")
        if arch_record is not None:
            resolved = tas.Arch.from_dict(arch_record)
        else:
            resolved = resolve_arch(
                arch, depth, num_classes, shortcut, backbone, input_size, width_mult
            )
        self.save_hyperparameters()
        self.hparams["arch_record"] = resolved.to_dict()
        self.arch = resolved
        self.model = self._build(resolved, init, init_from, arch_record is not None)
        # weight masks (prune.py --method magnitude): kept applied after every step; a
        # checkpoint carries them, a found.json names their file
        self.masks: dict[str, torch.Tensor] | None = None
        if resolved.search.get("masks") and arch_record is None:
            self.masks = load_masks(Path(arch).parent / resolved.search["masks"], self.model)
            apply_masks(self.model, self.masks)
        # AGP starts from the mask file's sparsity (a checkpoint carries it, for a resumed run)
        self.agp_initial = mask_sparsity(self.model, self.masks) if self.masks else 0.0
        if agp_sparsity and not self.agp_initial < agp_sparsity < 1:
            raise ValueError(
                f"agp_sparsity must lie in ({self.agp_initial:g}, 1) (above the mask file's "
                f"sparsity), got {agp_sparsity!r}"
            )
        self.sparsity = self.agp_initial  # the masks' sparsity now, logged as train/sparsity
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher_arch: tas.Arch | None = None
        self._teacher: nn.Module | None = None  # not a submodule: not saved, not trained
        if teacher:
            self._teacher, self.teacher_arch = load_teacher(teacher, resolved.space.input_size)
            self._check_teacher(teacher)
        classes = resolved.space.num_classes
        self.train_acc = MulticlassAccuracy(classes, average="micro")
        self.val_acc = MulticlassAccuracy(classes, average="micro")
        self.test_acc = MulticlassAccuracy(classes, average="micro")
        self.teacher_test_acc: float | None = None

    @staticmethod
    def _build(arch: tas.Arch, init: str, init_from: str | None, restoring: bool) -> nn.Module:
        if init not in ("random", "inherit"):
            raise ValueError(f"init must be 'random' or 'inherit', got {init!r}")
        if init == "random" or restoring:  # a checkpoint brings its own weights
            return tas.build_model(arch)
        if not init_from:
            raise ValueError(
                "init: inherit needs init_from, a train.py checkpoint of the full network"
            )
        source, source_arch = load_teacher(init_from, arch.space.input_size)
        if source_arch == arch:  # this very network (e.g. prune.py's reconstructed weights)
            return source.train().requires_grad_(True)
        # keep indexes the filters of the network pruned: the full one, or a round's network
        pruned_from = arch.search.get("pruned_from_widths")
        if source_arch.space != arch.space or source_arch.widths != (
            pruned_from or tas.Arch.full(arch.space).widths
        ):
            what = "the pruned network" if pruned_from else f"the full {arch.space.describe()}"
            raise TeacherError(
                f"init_from {init_from} is not {what} the architecture was pruned from"
            )
        return inherit_from(arch, source, source_arch, arch.search.get("keep", {}))

    def _check_teacher(self, path: str) -> None:
        t, s = self.teacher_arch.space, self.arch.space
        if t.num_classes != s.num_classes:
            raise TeacherError(
                f"teacher {path} predicts {t.num_classes} classes, the student {s.num_classes}"
            )
        if (t.backbone, t.depth) != (s.backbone, s.depth):
            raise TeacherError(
                f"teacher {path} is {t.describe()} but the architecture is a pruned "
                f"{s.describe()}: distil from the network that was searched"
            )

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._inputs(x))

    # ------------------------------------------------------------ training
    def configure_optimizers(self) -> dict[str, Any]:
        opt, cosine = sgd_with_cosine(self.model.parameters(), self.hparams, self.trainer)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    def on_fit_start(self) -> None:
        if self._teacher is None:
            return
        self._teacher.to(self.device)
        if self.hparams.channels_last:
            self._teacher.to(memory_format=torch.channels_last)
        if self.teacher_test_acc is None:
            self.teacher_test_acc = test_accuracy(
                self._teacher, self.trainer.datamodule, self.device, self._inputs
            )  # fmt: skip
            pl.utilities.rank_zero_info(
                f"teacher test accuracy: {100 * self.teacher_test_acc:.2f}%"
            )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        hp = self.hparams
        if self._teacher is None:
            logits = self(x)
            loss = F.cross_entropy(logits, y)
        else:
            features = self.model.features(self._inputs(x))
            logits = self.model.head(features)
            with torch.no_grad():
                teacher_features = self._teacher.features(self._inputs(x))
                teacher_logits = self._teacher.head(teacher_features)
            if "hinton" in hp.distill:
                loss = tas.kd_loss(logits, teacher_logits, y, hp.alpha, hp.temperature)
            else:
                loss = F.cross_entropy(logits, y)
            if "rkd" in hp.distill:
                rkd = rkd_loss(
                    features, teacher_features, hp.rkd_distance_weight, hp.rkd_angle_weight
                )
                self.log("train/rkd", rkd)
                loss = loss + rkd
        if self.hparams.bn_l1:
            scales = [m.weight for m in self.model.modules() if isinstance(m, nn.BatchNorm2d)]
            penalty = torch.stack([w.abs().sum() for w in scales]).sum()
            self.log("train/bn_l1_penalty", penalty)
            loss = loss + self.hparams.bn_l1 * penalty
        check_finite(loss, "the training loss", self.current_epoch, batch_idx)
        self.train_acc.update(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_acc.update(self(x), y)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_acc.update(self(x), y)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    # ---------------------------------------------------- weight masks, gradual pruning (AGP)
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hparams.agp_sparsity:
            self._agp_step(self.global_step)
        if self.masks is not None:  # the step moved no pruned weight off zero, but make sure
            apply_masks(self.model, self.masks)

    def on_train_start(self) -> None:
        hp, trainer = self.hparams, self.trainer
        if not hp.agp_sparsity:
            return
        end_epoch = trainer.max_epochs if hp.agp_end_epoch is None else hp.agp_end_epoch
        if end_epoch is None or end_epoch <= hp.agp_start_epoch:
            raise ValueError(
                f"agp_end_epoch ({end_epoch}) must come after agp_start_epoch "
                f"({hp.agp_start_epoch}); with no max_epochs, set agp_end_epoch"
            )
        # the schedule counts optimiser steps (what global_step counts)
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        self.agp_steps = (hp.agp_start_epoch * steps_per_epoch, end_epoch * steps_per_epoch)

    def _agp_step(self, step: int) -> None:
        """After optimiser step ``step``: grow the masks if the AGP schedule says so."""
        hp, (start, end) = self.hparams, self.agp_steps
        if agp_update_due(step, start, end, hp.agp_every_n_steps):
            target = agp_sparsity(step, start, end, hp.agp_sparsity, self.agp_initial)
            self.masks = magnitude_masks(self.model, target, hp.agp_scope, prior=self.masks)
            self.sparsity = mask_sparsity(self.model, self.masks)
        self.log("train/sparsity", self.sparsity)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tas_arch"] = self.arch.to_dict()
        checkpoint["tas_teacher_test_acc"] = self.teacher_test_acc
        if self.masks is not None:
            checkpoint["tas_masks"] = self.masks
        checkpoint["tas_agp_initial"] = self.agp_initial

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.teacher_test_acc = checkpoint.get("tas_teacher_test_acc")
        self.masks = checkpoint.get("tas_masks", self.masks)
        self.agp_initial = checkpoint.get("tas_agp_initial", self.agp_initial)
        if self.masks is not None:
            self.sparsity = mask_sparsity(self.model, self.masks)
