"""``ImageFolderDataModule``: full-size images (ImageNet, or the user's own set) decoded on the
fly by DataLoader workers, with the usual ImageNet pipeline.

A data set this size does not fit a uint8 cache, so unlike ``CIFARDataModule`` nothing is
decoded ahead: torchvision's ``ImageFolder`` reads each image in a worker and ``transforms.v2``
augments it there (train: RandomResizedCrop + horizontal flip; evaluation: resize to
``resize_size`` then centre crop ``image_size``), normalised with the ImageNet statistics that
torchvision's trained weights expect.

Layout: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>`` (``test/`` is read when
there is no ``val/``). The search wraps the module in a ``SearchSplitDataModule``
(:mod:`.search`), which splits ``train/`` 50/50 per class, as for CIFAR; the arch half,
un-augmented, is the search's validation set.

The data order is a function of ``(seed, epoch)``; the random crops are drawn by the workers and
are not replayed exactly by a run resumed mid-way (the CIFAR module's are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from .common import DataNotFoundError, _local_generator, _mix_seed
from .loaders import EpochShuffleSampler, stratified_subset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transforms(image_size: int, resize_size: int, train: bool) -> v2.Compose:
    """torchvision's ImageNet pipeline for one PIL image -> normalised float (3, S, S)."""
    head = (
        [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        if train
        else [v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)]
    )
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose([*head, *tail, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageFolderDataModule(pl.LightningDataModule):
    """Full-size ImageFolder images, decoded and augmented per image in DataLoader workers.

    Same contract as ``CIFARDataModule``: trains on ``train/`` and validates and tests on
    ``val/``; the same methods serve a ``SearchSplitDataModule`` wrapped around it
    (:meth:`training_set`, :meth:`train_loader`, :meth:`train_eval_loader`,
    :meth:`prepare_batch`).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        resize_size: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        num_workers: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.image_size = image_size
        self.resize_size = resize_size or round(image_size * 256 / 224)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.train_subset, self.val_subset, self.test_subset = train_subset, val_subset, test_subset
        self.num_workers = num_workers
        self.seed = seed
        self.name = "imagefolder"
        self.train_dir = self.root / "train"
        self.val_dir = next(
            (self.root / d for d in ("val", "test") if (self.root / d).is_dir()), self.root / "val"
        )
        for folder in (self.train_dir, self.val_dir):
            if not folder.is_dir():
                raise DataNotFoundError(
                    f"image folder {self.root}: no {folder.name}/ folder (expected "
                    f"{self.root}/train/<class>/<image> and {self.root}/val/<class>/<image>)"
                )
        self.classes, _ = datasets.folder.find_classes(str(self.train_dir))
        val_classes, _ = datasets.folder.find_classes(str(self.val_dir))
        if val_classes != self.classes:
            raise DataNotFoundError(
                f"image folder {self.root}: {self.val_dir.name}/ has {len(val_classes)} classes, "
                f"train/ {len(self.classes)}; they must be the same folders"
            )
        self.train_set: datasets.ImageFolder | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_tf = imagenet_transforms(self.image_size, self.resize_size, True)
        eval_tf = imagenet_transforms(self.image_size, self.resize_size, False)
        self.train_set = datasets.ImageFolder(str(self.train_dir), train_tf)
        self.train_eval_set = datasets.ImageFolder(
            str(self.train_dir), eval_tf
        )  # a search arch half
        self.val_set = datasets.ImageFolder(str(self.val_dir), eval_tf)
        labels = torch.tensor(self.train_set.targets)
        idx = torch.arange(len(labels))
        if self.train_subset is not None:
            idx = stratified_subset(labels, self.train_subset, self.seed)
        self.train_labels = labels
        self.train_indices = idx
        self.val_labels = torch.tensor(self.val_set.targets)

    def _loader(self, dataset: Any, train: bool, seed_offset: int = 0) -> DataLoader:
        common: dict[str, Any] = {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        if train:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=EpochShuffleSampler(len(dataset), _mix_seed(self.seed, seed_offset)),
                drop_last=len(dataset) > self.batch_size,
                generator=_local_generator(_mix_seed(self.seed, seed_offset, 7)),
                **common,
            )
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, **common)

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images in use (after ``train_subset``): their indices into ``train/``
        and their labels, ``(N,)`` int64 each."""
        self.setup()
        return self.train_indices, self.train_labels[self.train_indices]

    def train_loader(self, indices: torch.Tensor | None = None, seed_offset: int = 0) -> DataLoader:
        """Shuffled, augmented batches of the ``train/`` images at ``indices`` (None: all in
        use), in an order that is a function of ``(seed, seed_offset, epoch)``."""
        self.setup()
        index = self.train_indices if indices is None else indices
        return self._loader(Subset(self.train_set, index), True, seed_offset)

    def train_eval_loader(self, indices: torch.Tensor) -> DataLoader:
        """Un-augmented batches (evaluation resize + centre crop) of the ``train/`` images at
        ``indices``, in that order."""
        self.setup()
        return self._loader(Subset(self.train_eval_set, indices), False)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader()

    def val_dataloader(self) -> DataLoader:
        """``val/`` (or its ``val_subset``), to report progress only."""
        self.setup()
        return self._loader(self._subset(self.val_set, self.val_labels, self.val_subset), False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._subset(self.val_set, self.val_labels, self.test_subset), False)

    def _subset(self, dataset: Any, labels: torch.Tensor, n: int | None) -> Any:
        return dataset if n is None else Subset(dataset, stratified_subset(labels, n, self.seed))

    def transform_batch(self, batch: Any, train: bool) -> Any:
        """Batches leave the workers transformed; nothing is left to do on the device."""
        return batch

    def prepare_batch(self, batch: Any, train: bool, epoch: int) -> Any:
        """As ``CIFARDataModule.prepare_batch``; here the batch is ready as it comes."""
        return self.transform_batch(batch, train)

    def describe(self, validation: bool = True) -> str:
        """One line: folder, classes, split sizes, crop and batch sizes (``validation`` is
        there for the same signature as ``CIFARDataModule.describe``: ``val/`` is also the
        test set, and is always named)."""
        if self.train_set is None:
            return f"imagefolder {self.root} ({self.num_classes} classes; not loaded yet)"
        parts = [f"imagefolder {self.root}: {self.num_classes} classes"]
        parts.append(f"train {len(self.train_indices)} of {len(self.train_set)}")
        parts.append(f"{self.val_dir.name} {len(self.val_set)}")
        parts.append(f"{self.image_size}px (eval resize {self.resize_size})")
        parts.append(f"batch {self.batch_size}/{self.eval_batch_size}")
        return ", ".join(parts)
