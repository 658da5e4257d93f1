"""Per-channel statistics of the data sets and batched augmentation on tensors (any device).

``normalize_batch`` and ``augment_batch`` (random crop with zero padding, horizontal flip,
normalisation) work on whole uint8 batches; :class:`GpuAugment` wraps them with a generator
reseeded from ``(seed, epoch)``.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .common import _check_name, _mix_seed

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# The synthetic set is centred on mid-grey with roughly this spread.
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)

_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "synthetic": (SYNTHETIC_MEAN, SYNTHETIC_STD),
}


def dataset_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of a data set's training images, in [0, 1] units."""
    return _STATS[_check_name(name)]


def _stat_tensor(values: Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)


def normalize_batch(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor = CIFAR10_MEAN,
    std: Sequence[float] | torch.Tensor = CIFAR10_STD,
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32 on ``x``'s device.

    ``x`` is a uint8 batch ``(B, 3, H, W)``; a floating batch is taken to be in [0, 1] already.
    """
    xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (B, 3, H, W) in [0, 1]
    return (xf - _stat_tensor(mean, x)) / _stat_tensor(std, x)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    mean: Sequence[float] | torch.Tensor = CIFAR10_MEAN,
    std: Sequence[float] | torch.Tensor = CIFAR10_STD,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """Standard CIFAR training augmentation of a whole batch, vectorised.

    Per image: random ``H x W`` crop of the image zero-padded by ``padding`` pixels on each side,
    random horizontal flip (p = 0.5), then :func:`normalize_batch`. The random offsets and flips
    are drawn on the CPU from ``generator`` (the global RNG when None), so the result depends only
    on the generator state, not on the device ``x`` lives on.

    Args:
        x: uint8 batch ``(B, C, H, W)`` on any device.
        generator: CPU generator for the random crops and flips.
        mean: per-channel mean in [0, 1] units.
        std: per-channel std in [0, 1] units.
        padding: zero padding on each side before cropping (0 disables cropping).
        flip: whether to flip horizontally at random.

    Returns:
        float32 batch ``(B, C, H, W)`` on ``x``'s device.
    """
    b, c, h, w = x.shape
    p = int(padding)
    # Random draws on the CPU: (B,) offsets in [0, 2p] and (B,) flip flags.
    oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    rows = oy[:, None] + torch.arange(h)  # (B, H) row indices into the padded image
    cols = ox[:, None] + torch.arange(w)  # (B, W) column indices into the padded image
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # flipped crops read right to left
    rows = rows.to(x.device, non_blocking=True)
    cols = cols.to(x.device, non_blocking=True)

    xp = F.pad(x, (p, p, p, p)) if p > 0 else x  # (B, C, H + 2p, W + 2p), zeros outside
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))  # (B, C, H, W + 2p)
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)
    return normalize_batch(out, mean, std)


class GpuAugment:
    """Batch augmentation with its own CPU generator, reseeded from ``(seed, epoch)``.

    ``aug(x, train=True)`` crops, flips and normalises; ``aug(x, train=False)`` only normalises.
    Call :meth:`set_epoch` at each epoch (the data module does) so that a run resumed at an epoch
    boundary draws the same augmentations as an uninterrupted one.
    """

    def __init__(
        self,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        padding: int = 4,
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.padding = padding
        self.flip = flip
        self.seed = seed
        self.generator = torch.Generator()
        self.epoch: int | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the generator from ``(seed, epoch)`` if the epoch changed."""
        if epoch != self.epoch:
            self.generator.manual_seed(_mix_seed(self.seed, epoch, 0xA06))
            self.epoch = epoch

    def __call__(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        if not train:
            return normalize_batch(x, self.mean, self.std)
        return augment_batch(x, self.generator, self.mean, self.std, self.padding, self.flip)
