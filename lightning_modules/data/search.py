"""``SearchSplitDataModule``: the TAS search's data, a plain data module's training images split
50/50 per class into a half the weights learn on and a half the architecture learns on.

The wrapped module (``CIFARDataModule`` or ``ImageFolderDataModule``) keeps its images, loaders
and augmentation; this module only chooses which training images each loader covers, through
the base's small interface:

* ``training_set()``: indices and labels of the training images in use (after
  ``train_subset``);
* ``train_loader(indices, seed_offset)``: shuffled, augmented batches of those images, the order
  a function of ``(seed, seed_offset, epoch)``;
* ``train_eval_loader(indices)``: un-augmented batches of those images, in the order given;
* ``prepare_batch(batch, train, epoch)``: what the base does to a batch on the device (CIFAR
  crops and flips there, with the augmentation of ``epoch``), given this module's trainer's
  training flag and epoch, since the Trainer attaches the wrapper, not the base.

Seeds: the split is ``split_per_class(labels, 0.5, seed)``; the weight half is shuffled with
seed offset 1, the arch half with offset 2; the validation order is one fixed permutation drawn
from ``_mix_seed(seed, 3)``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .common import _local_generator, _mix_seed
from .loaders import split_per_class, stratified_subset


class SearchSplitDataModule(pl.LightningDataModule):
    """The search split of ``base``'s training images in use.

    ``train_dataloader`` returns ``{"weights": loader over half A, "arch": loader over half B}``
    (Lightning combines them in ``max_size_cycle`` mode, so a training batch is a dict of two
    ``(x, y)`` batches). ``val_dataloader`` covers half B (its class-stratified ``val_subset``
    of the base, when set), un-augmented, in a fixed shuffled order: the search chooses its
    architecture on this held-out half, never on the test set, and scores networks with batch
    statistics, which needs batches that mix the classes (an ImageFolder stores them sorted).
    ``test_dataloader`` is the base's.
    """

    def __init__(self, base: pl.LightningDataModule) -> None:
        """
        Args:
            base: a plain data module (``CIFARDataModule`` or ``ImageFolderDataModule``); its
                ``seed``, ``val_subset`` and batch sizes apply to the split.
        """
        super().__init__()
        # the base's settings, and the split, in the checkpoints' data hyper-parameters
        self.save_hyperparameters({**dict(base.hparams), "search_split": True})
        self.base = base
        self.seed: int = base.seed
        self.val_subset: int | None = base.val_subset
        self.epoch = 0  # used when no trainer is attached
        self.weight_indices: torch.Tensor | None = None  # half A, indices into the training split
        self.arch_indices: torch.Tensor | None = None  # half B
        self.arch_labels: torch.Tensor | None = None  # (len(arch_indices),)

    # ---- what the base says ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def image_size(self) -> int:
        """Side of the square images the networks see (what their MACs are counted at)."""
        return self.base.image_size

    # ---- setup -------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set the base up and split its training images in use 50/50 per class (once)."""
        self.base.setup(stage)
        if self.weight_indices is not None:
            return
        indices, labels = self.base.training_set()
        a, b = split_per_class(labels, 0.5, self.seed)
        self.weight_indices, self.arch_indices = indices[a], indices[b]
        self.arch_labels = labels[b]

    def teardown(self, stage: str | None = None) -> None:
        self.base.teardown(stage)

    def _require_setup(self) -> None:
        if self.weight_indices is None:
            self.setup()

    # ---- loaders -----------------------------------------------------------------------------

    def val_indices(self) -> torch.Tensor:
        """Indices into the training split of the validation images, in their loader's order:
        the arch half (or its ``val_subset``), shuffled once by the seed."""
        self._require_setup()
        index = self.arch_indices
        if self.val_subset is not None:
            index = index[stratified_subset(self.arch_labels, self.val_subset, self.seed)]
        order = torch.randperm(len(index), generator=_local_generator(_mix_seed(self.seed, 3)))
        return index[order]

    def train_dataloader(self) -> dict[str, DataLoader]:
        """``{"weights": ..., "arch": ...}``: shuffled, augmented batches of each half."""
        self._require_setup()
        return {
            "weights": self.base.train_loader(self.weight_indices, seed_offset=1),
            "arch": self.base.train_loader(self.arch_indices, seed_offset=2),
        }

    def val_dataloader(self) -> DataLoader:
        """The arch half, un-augmented, in a fixed class-mixed order (the search's selection
        data)."""
        return self.base.train_eval_loader(self.val_indices())

    def test_dataloader(self) -> DataLoader:
        """The base's test set."""
        return self.base.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()

    # ---- batches on the device ---------------------------------------------------------------

    def transform_batch(self, batch: Any, train: bool) -> Any:
        """The base's transform of a ``(x, y)`` batch, or a dict of them, at its current epoch."""
        return self.base.transform_batch(batch, train)

    def prepare_batch(self, batch: Any, train: bool, epoch: int) -> Any:
        """The base's :meth:`prepare_batch` (augmentation of ``epoch`` when ``train``)."""
        return self.base.prepare_batch(batch, train, epoch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The base's device-side transform, with this module's trainer's flag and epoch."""
        trainer = getattr(self, "trainer", None)
        train = bool(trainer is not None and trainer.training)
        epoch = int(trainer.current_epoch) if trainer is not None else self.epoch
        return self.prepare_batch(batch, train, epoch)

    # ---- description -------------------------------------------------------------------------

    def describe(self) -> str:
        """The base's line, with the sizes of the two halves and of the validation set."""
        if self.weight_indices is None:
            return self.base.describe(validation=False)
        return (
            f"{self.base.describe(validation=False)}, search split weights "
            f"{len(self.weight_indices)} / arch {len(self.arch_indices)} "
            f"(val {len(self.val_indices())} of the arch half)"
        )
