"""The Lightning ``CIFARDataModule``: splits as uint8 tensors, augmentation on the device."""

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .augment import GpuAugment, dataset_stats
from .common import NUM_CLASSES, _check_name, _mix_seed
from .loaders import (
    EpochShuffleSampler,
    TensorBatchDataset,
    passthrough_collate,
    stratified_subset,
)
from .sources import _load, make_synthetic


class CIFARDataModule(pl.LightningDataModule):
    """CIFAR-10/100 (or synthetic) as uint8 tensors, with batch augmentation on the device.

    ``train_dataloader`` covers the (optionally subsetted) training set, shuffled;
    ``val_dataloader`` and ``test_dataloader`` cover the test set. The test set serves as
    "validation" only to report progress of a plain training run; it must never be used to make
    choices (architecture, checkpoint, hyper-parameters). The TAS search wraps this module in a
    :class:`~.search.SearchSplitDataModule`, which splits the training images in use 50/50 per
    class and validates on the held-out half, through :meth:`training_set`,
    :meth:`train_loader`, :meth:`train_eval_loader` and :meth:`prepare_batch`.

    Batches leave the loaders as ``(x (B, 3, 32, 32) uint8, y (B,) int64)``;
    :meth:`on_after_batch_transfer` turns ``x`` into a normalised float batch on the device,
    with random crop + flip for training batches. Data order and augmentation are functions of
    ``(seed, epoch)``, so a run resumed at an epoch boundary continues exactly.
    """

    def __init__(
        self,
        name: str = "cifar10",
        root: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        train_subset: int | None = None,
        val_subset: int | None = None,
        test_subset: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        synthetic_train_size: int = 2000,
        synthetic_test_size: int = 500,
        skip_bad_images: bool = False,
    ) -> None:
        """
        Args:
            name: data set, ``cifar10``, ``cifar100`` or ``synthetic``.
            root: where the data is: a torchvision CIFAR root, an ImageFolder folder with
                ``train/`` and ``test/``, or a ``.tar.gz`` of one. None searches
                ``$TAS_DATA_ROOT``, ``./data`` and ``../shared/datasets/cifar10-jpg.tar.gz``.
            batch_size: training batch size.
            eval_batch_size: validation/test batch size (None: same as ``batch_size``).
            train_subset: use a class-stratified subset of this many training images
                (None: all).
            val_subset: validate on a class-stratified subset of this many images of the
                validation set (None: all).
            test_subset: test on a class-stratified subset of this many test images (None:
                all; for smoke runs only: reported accuracies use the whole test set).
            num_workers: ``DataLoader`` worker processes (indexing a tensor is cheap; 0 is
                usually fastest).
            seed: seed of the subsets, the data order and the augmentation (and of a search
                split made over this module).
            synthetic_train_size: training images of the ``synthetic`` data set.
            synthetic_test_size: test images of the ``synthetic`` data set.
            skip_bad_images: leave out images that cannot be decoded (one warning line with
                their count and the first one's path) instead of stopping with its path.
        """
        super().__init__()
        self.save_hyperparameters()
        self.name = _check_name(name)
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.train_subset = train_subset
        self.val_subset = val_subset
        self.test_subset = test_subset
        self.num_workers = num_workers
        self.seed = seed
        self.synthetic_train_size = synthetic_train_size
        self.synthetic_test_size = synthetic_test_size
        self.skip_bad_images = skip_bad_images

        mean, std = dataset_stats(self.name)
        self.augment = GpuAugment(mean, std, seed=seed)
        self.epoch = 0  # used when no trainer is attached
        self.source: str | None = None
        self.train_images: torch.Tensor | None = None  # (N, 3, 32, 32) uint8
        self.train_labels: torch.Tensor | None = None  # (N,) int64
        self.test_images: torch.Tensor | None = None
        self.test_labels: torch.Tensor | None = None
        self.train_indices: torch.Tensor | None = None  # training images in use (subset)

    # ---- properties --------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes of the data set (10 for cifar10/synthetic, 100 for cifar100)."""
        return NUM_CLASSES[self.name]

    @property
    def image_size(self) -> int:
        """Side of the square images the networks see (what their MACs are counted at)."""
        return 32

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean ``(3,)`` in [0, 1] units."""
        return torch.tensor(self.augment.mean)

    @property
    def std(self) -> torch.Tensor:
        """Per-channel std ``(3,)`` in [0, 1] units."""
        return torch.tensor(self.augment.std)

    # ---- setup -------------------------------------------------------------------------------

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.name == "synthetic":
            n = self.synthetic_train_size if train else self.synthetic_test_size
            self.source = "generated"
            return make_synthetic(n, train=train)
        images, labels, self.source = _load(
            self.name, self.root, train, None, True, self.skip_bad_images
        )
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        """Load both splits (once) and choose the training images in use."""
        if self.train_images is not None:
            return
        self.train_images, self.train_labels = self._load_split(True)
        self.test_images, self.test_labels = self._load_split(False)
        n = len(self.train_labels)
        if self.train_subset is not None:
            idx = stratified_subset(self.train_labels, self.train_subset, self.seed)
        else:
            idx = torch.arange(n)
        self.train_indices = idx

    def _require_setup(self) -> None:
        if self.train_images is None:
            self.setup()

    # ---- loaders -----------------------------------------------------------------------------

    def _loader(self, dataset: TensorBatchDataset, train: bool, seed_offset: int = 0) -> DataLoader:
        common: dict[str, Any] = {
            "collate_fn": passthrough_collate,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }
        if train:
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=EpochShuffleSampler(len(dataset), _mix_seed(self.seed, seed_offset)),
                drop_last=len(dataset) > self.batch_size,
                **common,
            )
        return DataLoader(
            dataset, batch_size=self.eval_batch_size, shuffle=False, drop_last=False, **common
        )

    def _val_indices(self) -> torch.Tensor | None:
        """Indices into the test set of the validation subset, or None (the whole test set)."""
        if self.val_subset is None:
            return None
        return stratified_subset(self.test_labels, self.val_subset, self.seed)

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images in use (after ``train_subset``): their indices into the training
        split and their labels, ``(N,)`` int64 each."""
        self._require_setup()
        return self.train_indices, self.train_labels[self.train_indices]

    def train_loader(self, indices: torch.Tensor | None = None, seed_offset: int = 0) -> DataLoader:
        """Shuffled training batches of the training images at ``indices`` (None: all in use),
        in an order that is a function of ``(seed, seed_offset, epoch)``."""
        self._require_setup()
        # Reseed the augmentation at the next batch, even if the epoch number did not change
        # (a second fit from epoch 0 must draw the same augmentations as the first).
        self.augment.epoch = None
        index = self.train_indices if indices is None else indices
        ds = TensorBatchDataset(self.train_images, self.train_labels, index)
        return self._loader(ds, train=True, seed_offset=seed_offset)

    def train_eval_loader(self, indices: torch.Tensor) -> DataLoader:
        """Unshuffled evaluation-size batches of the training images at ``indices``, in that
        order (normalised, not cropped or flipped, as every batch outside training is)."""
        self._require_setup()
        ds = TensorBatchDataset(self.train_images, self.train_labels, indices)
        return self._loader(ds, train=False)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training images in use."""
        return self.train_loader()

    def val_dataloader(self) -> DataLoader:
        """The test set (or its ``val_subset``), to report progress only."""
        self._require_setup()
        ds = TensorBatchDataset(self.test_images, self.test_labels, self._val_indices())
        return self._loader(ds, train=False)

    def test_dataloader(self) -> DataLoader:
        """The test set, unshuffled."""
        self._require_setup()
        index = None
        if self.test_subset is not None:
            index = stratified_subset(self.test_labels, self.test_subset, self.seed)
        dataset = TensorBatchDataset(self.test_images, self.test_labels, index)
        return self._loader(dataset, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()

    # ---- augmentation on the device ----------------------------------------------------------

    def _is_training(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return bool(trainer is not None and trainer.training)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else self.epoch

    def transform_batch(self, batch: Any, train: bool) -> Any:
        """Augment (``train``) or normalise a ``(x, y)`` batch, or a dict of them."""
        if isinstance(batch, dict):
            return {k: self.transform_batch(v, train) for k, v in batch.items()}
        if isinstance(batch, (tuple, list)) and len(batch) >= 1 and torch.is_tensor(batch[0]):
            x = batch[0]
            if x.dtype == torch.uint8:
                x = self.augment(x, train=train)  # (B, 3, 32, 32) float32
            return (x, *batch[1:]) if isinstance(batch, tuple) else [x, *batch[1:]]
        return batch

    def prepare_batch(self, batch: Any, train: bool, epoch: int) -> Any:
        """What :meth:`on_after_batch_transfer` does to a batch on its device, with the training
        flag and the epoch given (a wrapping module passes its trainer's; a loop without a
        trainer its own): crop + flip + normalise (``train``) or normalise, the crops and flips
        drawn from the augmentation generator of ``epoch``."""
        self.augment.set_epoch(epoch)
        return self.transform_batch(batch, train)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Crop + flip + normalise training batches; normalise evaluation batches."""
        return self.prepare_batch(batch, self._is_training(), self._current_epoch())

    # ---- description -------------------------------------------------------------------------

    def describe(self, validation: bool = True) -> str:
        """One line: data set, source, split sizes and batch sizes (``validation``: with the
        size of the validation subset of the test set, when there is one)."""
        if self.train_images is None:
            return f"{self.name} (root={self.root!r}; not loaded yet)"
        parts = [f"{self.name} from {self.source}"]
        n_all, n_used = len(self.train_labels), len(self.train_indices)
        parts.append(f"train {n_used}" + (f" of {n_all}" if n_used != n_all else ""))
        parts.append(f"test {len(self.test_labels)}")
        val = self._val_indices()
        if validation and val is not None:
            parts.append(f"val {len(val)}")
        parts.append(f"batch {self.batch_size}/{self.eval_batch_size}")
        return ", ".join(parts)
