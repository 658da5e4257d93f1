"""The data module the command line builds: CIFAR-sized sets (``CIFARDataModule``, decoded
once into a uint8 cache) or a folder of full-size images (``ImageFolderDataModule``), wrapped in
a ``SearchSplitDataModule`` for the TAS search."""

from __future__ import annotations

import pytorch_lightning as pl

from .common import DATASET_NAMES
from .imagefolder import ImageFolderDataModule
from .module import CIFARDataModule
from .search import SearchSplitDataModule


def data_module(
    name: str = "cifar10",
    root: str | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    train_subset: int | None = None,
    val_subset: int | None = None,
    test_subset: int | None = None,
    search_split: bool = False,
    num_workers: int | None = None,
    seed: int = 0,
    synthetic_train_size: int = 2000,
    synthetic_test_size: int = 500,
    skip_bad_images: bool = False,
    image_size: int = 224,
    resize_size: int | None = None,
) -> pl.LightningDataModule:
    """
    Args:
        name: ``cifar10``, ``cifar100``, ``synthetic`` (CIFARDataModule) or ``imagefolder``
            (full-size images, ``root`` holding ``train/`` and ``val/``).
        root: where the data is (CIFAR: see CIFARDataModule; imagefolder: required).
        batch_size, eval_batch_size: training and evaluation batch sizes.
        train_subset, val_subset, test_subset: class-stratified subsets (None: all).
        search_split: split the training set 50/50 per class for the TAS search: the plain
            module comes wrapped in a :class:`SearchSplitDataModule`.
        num_workers: DataLoader workers (None: 0 for CIFAR, whose batches are tensor slices;
            8 for imagefolder, which decodes every image).
        seed: subsets, the search split and the data order.
        synthetic_train_size, synthetic_test_size, skip_bad_images: CIFAR-sized sets only.
        image_size, resize_size: imagefolder only: the crop side the network sees (and its
            MACs are counted at) and the evaluation resize (None: image_size x 256 / 224).
    """
    common = {
        "batch_size": batch_size,
        "eval_batch_size": eval_batch_size,
        "train_subset": train_subset,
        "val_subset": val_subset,
        "test_subset": test_subset,
        "seed": seed,
    }
    base: pl.LightningDataModule
    if name == "imagefolder":
        if root is None:
            raise ValueError("--data.name imagefolder needs --data.root, a folder with train/ val/")
        workers = 8 if num_workers is None else num_workers
        base = ImageFolderDataModule(root, image_size, resize_size, num_workers=workers, **common)
    elif name.lower().replace("-", "") not in DATASET_NAMES:
        known = ", ".join((*DATASET_NAMES, "imagefolder"))
        raise ValueError(f"unknown data set {name!r}; expected one of {known}")
    else:
        base = CIFARDataModule(
            name,
            root,
            num_workers=num_workers or 0,
            synthetic_train_size=synthetic_train_size,
            synthetic_test_size=synthetic_test_size,
            skip_bad_images=skip_bad_images,
            **common,
        )
    return SearchSplitDataModule(base) if search_split else base
