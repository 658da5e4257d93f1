"""Index-level data plumbing: stratified subsets and splits, batch datasets, samplers.

Everything here is deterministic in its seed and independent of the global torch RNG.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from .common import _local_generator, _mix_seed

# --------------------------------------------------------------------------------------------
# Splits and subsets (deterministic, independent of the global torch RNG)
# --------------------------------------------------------------------------------------------


def _class_ranks(labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rank of every sample inside its class, and the class of every sample.

    Returns ``(order, rank)``: ``order`` is a permutation of ``0..N-1`` grouped by class (each
    class in a random order), ``rank[i]`` the position of ``order[i]`` within its class.
    """
    labels = torch.as_tensor(labels).long().cpu()  # (N,)
    n = labels.numel()
    perm = torch.randperm(n, generator=gen)  # (N,) random order ...
    order = perm[torch.argsort(labels[perm], stable=True)]  # ... grouped by class: (N,)
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
    rank = torch.arange(n) - starts[sorted_labels]  # (N,) position within the class
    return order, rank


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` samples with the classes as equally represented as possible.

    Every class gets ``n // C`` samples (the remainder goes to randomly chosen classes); a class
    with too few samples gives all it has and the others make up the difference. Deterministic
    in ``seed`` and independent of the global RNG. Returns a sorted LongTensor; all indices when
    ``n >= len(labels)``.
    """
    labels = torch.as_tensor(labels).long().cpu()
    total = labels.numel()
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    if n >= total:
        return torch.arange(total)
    gen = _local_generator(seed)
    order, rank = _class_ranks(labels, gen)
    num_classes = int(labels.max()) + 1
    class_pos = torch.randperm(num_classes, generator=gen)  # tie-break among classes
    # Take round-robin: all rank-0 samples first (in random class order), then rank 1, ...
    key = rank * num_classes + class_pos[labels[order]]
    chosen = order[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


def split_per_class(
    labels: torch.Tensor, fraction: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the indices of every class into two disjoint parts, ``fraction`` going to the first.

    Each class is split on its own (``floor(fraction * count)`` samples to ``idx_a``, the rest to
    ``idx_b``), so both halves keep the class balance. Fixed by ``seed``, independent of the
    global RNG. Returns two sorted LongTensors whose union is ``0..N-1``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    labels = torch.as_tensor(labels).long().cpu()
    order, rank = _class_ranks(labels, _local_generator(seed))
    counts = torch.bincount(labels)  # (C,)
    take = torch.floor(counts.double() * fraction).long()  # (C,) samples per class in part A
    in_a = rank < take[labels[order]]
    return torch.sort(order[in_a]).values, torch.sort(order[~in_a]).values


# --------------------------------------------------------------------------------------------
# Datasets, samplers, data module
# --------------------------------------------------------------------------------------------


class TensorBatchDataset(Dataset):
    """uint8 images and labels in two tensors, optionally viewed through an index map.

    ``__getitems__`` returns a whole batch ``(x (B, 3, 32, 32) uint8, y (B,))`` by one tensor
    index, which ``DataLoader`` uses instead of fetching and collating items one by one (pair it
    with :func:`passthrough_collate`).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ) -> None:
        self.images = images  # (N, 3, 32, 32) uint8
        self.labels = labels  # (N,) int64
        self.indices = None if indices is None else torch.as_tensor(indices).long()

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.labels)

    def _map(self, idx: torch.Tensor) -> torch.Tensor:
        return idx if self.indices is None else self.indices[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self._map(torch.tensor(i))
        return self.images[j], self.labels[j]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._map(torch.as_tensor(indices, dtype=torch.long))  # (B,)
        return self.images[idx], self.labels[idx]  # (B, 3, 32, 32) uint8, (B,) int64


def passthrough_collate(batch: Any) -> Any:
    """``collate_fn`` for :class:`TensorBatchDataset`: the batch is already stacked."""
    return batch


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that is a pure function of ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed at epoch ``e`` sees
    the same order as an uninterrupted run did at epoch ``e``.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """The permutation of the current epoch, ``(n,)`` int64."""
        gen = torch.Generator()
        gen.manual_seed(_mix_seed(self.seed, self.epoch, 0x5A3))
        return torch.randperm(self.n, generator=gen)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n
