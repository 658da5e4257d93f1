"""Channel-wise interpolation (CWI): resize a feature map along the channel axis only.

Output channel j averages input channels floor(j*C/C*) .. ceil((j+1)*C/C*) - 1, which is adaptive
average pooling over channels (what ``F.adaptive_avg_pool3d`` computes on a 4-D tensor). TAS
uses it to align the outputs of different sampled widths before mixing them.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=1024)
def _window_ends(
    channels: int, target: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last input channel of every output window when widening channels -> target."""
    j = torch.arange(target)
    first = (j * channels) // target  # floor(j * C / C*)
    last = -((-(j + 1) * channels) // target) - 1  # ceil((j + 1) * C / C*) - 1
    return first.to(device), last.to(device)


def prescale(channels_in: int, channels: int) -> float:
    """The factor a caller folds into x (e.g. into a BatchNorm's affine or a mixing weight, a
    scalar product it computes anyway) before ``channel_interpolate(x, channels,
    prescaled=True)``: 1/2 when widening, the average of the two gathered channels, else 1."""
    return 0.5 if channels_in < channels else 1.0


def channel_interpolate(x: torch.Tensor, channels: int, prescaled: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, channels, H, W) by adaptive average pooling over the channel axis.

    ``prescaled``: x has already been multiplied by ``prescale(C, channels)``, so the widening
    skips its own pass over the output (the same numbers: scaling by 1/2 is exact)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c < channels:
        # Widening: every window holds one or two input channels, so two gathers and an add do
        # it (a window of one averages a channel with itself: (a + a) * 0.5 == a exactly).
        first, last = _window_ends(c, channels, x.device)
        pair_sum = x.index_select(1, first) + x.index_select(1, last)
        return pair_sum if prescaled else pair_sum * 0.5
    return F.adaptive_avg_pool3d(x, (channels, x.shape[2], x.shape[3]))
