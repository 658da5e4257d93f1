"""Data for TAS: CIFAR-sized sets (loading, caching, stratified splits, batched augmentation and
the Lightning ``CIFARDataModule``) and folders of full-size images (``ImageFolderDataModule``,
decoded on the fly by DataLoader workers; :mod:`.imagefolder`). The command line builds one of
the two with :func:`data_module` (``--data.name``); the TAS search gets it wrapped in a
``SearchSplitDataModule`` (:mod:`.search`), which splits its training images 50/50 per class.

Images are kept as one uint8 tensor ``(N, 3, 32, 32)`` per split. Loaders hand out whole uint8
batches by tensor indexing (no per-image Python work), and augmentation (random crop with 4-pixel
zero padding, horizontal flip, per-channel normalisation) runs on the batch after it reaches the
device, in :meth:`CIFARDataModule.on_after_batch_transfer`.

Sources ``load_split`` understands:

* a torchvision CIFAR root: a folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/``
  (the pickles are parsed directly; CIFAR-100 uses the fine labels);
* an ImageFolder directory holding ``train/<class>/<image>`` and ``test/<class>/<image>``;
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of such an ImageFolder (or of the torchvision
  pickles), read sequentially with :mod:`tarfile` without extracting anything to disk;
* ``name="synthetic"``: a small seeded, learnable data set generated in memory (for tests).

Decoded images are cached with ``torch.save`` under ``$TAS_CACHE_DIR`` (default
``~/.cache/tas-pruning``), keyed by the source's absolute path, size and mtime, so the ~10 s JPEG
decode of CIFAR-10 happens once; later loads read the cache in a fraction of a second.

Nothing here imports from ``tas``: this package is pure data code.

Modules: :mod:`.common` (names, errors, seeds), :mod:`.augment` (statistics, batch
augmentation), :mod:`.decode` (pickle / ImageFolder / tar decoding), :mod:`.cache` (the decode
cache), :mod:`.sources` (finding the data, ``load_split``, synthetic data), :mod:`.loaders`
(subsets, splits, datasets, samplers), :mod:`.module` (``CIFARDataModule``),
:mod:`.imagefolder` (``ImageFolderDataModule``), :mod:`.search` (``SearchSplitDataModule``, the
search's weight / arch halves of either), :mod:`.choose` (``data_module``) and :mod:`.samples`
(image batches outside a fit).
"""

from .augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    GpuAugment,
    augment_batch,
    dataset_stats,
    normalize_batch,
)
from .augment import SYNTHETIC_MEAN as SYNTHETIC_MEAN  # public, though not in __all__
from .augment import SYNTHETIC_STD as SYNTHETIC_STD
from .cache import default_cache_dir
from .choose import data_module
from .common import DATASET_NAMES, NUM_CLASSES, DataError, DataNotFoundError
from .imagefolder import ImageFolderDataModule
from .loaders import (
    EpochShuffleSampler,
    TensorBatchDataset,
    passthrough_collate,
    split_per_class,
    stratified_subset,
)
from .module import CIFARDataModule
from .search import SearchSplitDataModule
from .sources import load_split, make_synthetic

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASET_NAMES",
    "NUM_CLASSES",
    "CIFARDataModule",
    "DataError",
    "DataNotFoundError",
    "EpochShuffleSampler",
    "GpuAugment",
    "ImageFolderDataModule",
    "SearchSplitDataModule",
    "TensorBatchDataset",
    "augment_batch",
    "data_module",
    "dataset_stats",
    "default_cache_dir",
    "load_split",
    "make_synthetic",
    "normalize_batch",
    "passthrough_collate",
    "split_per_class",
    "stratified_subset",
]
