"""Build the plain compact network of an `Arch`, with fresh weights, and count MACs on any model.

The builder follows `Arch.plan()` layer by layer, so the module it returns is exactly the network
whose MACs and parameters `Arch` reports. Nothing from the search is inherited but the shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, BlockPlan, ConvLayer


class ConvBN(nn.Sequential):
    """[AvgPool(2)] -> Conv (no bias) -> BN [-> ReLU], as planned by a `ConvLayer`."""

    def __init__(self, layer: ConvLayer) -> None:
        mods: list[nn.Module] = [nn.AvgPool2d(2)] if layer.pool else []
        mods += [
            nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel,
                layer.stride,
                padding=layer.kernel // 2,
                bias=False,
            ),
            nn.BatchNorm2d(layer.out_channels),
        ]
        if layer.relu:
            mods.append(nn.ReLU(inplace=True))
        super().__init__(*mods)


class ResidualBlock(nn.Module):
    """``relu(main(x) + shortcut(x))``; an identity shortcut of another width is zero-padded
    into the first channels of the wider tensor (the original CIFAR ResNet's option A)."""

    def __init__(self, plan: BlockPlan) -> None:
        super().__init__()
        self.main = nn.Sequential(*(ConvBN(c) for c in plan.convs))
        self.shortcut = ConvBN(plan.shortcut) if plan.shortcut is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        skip = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(add_padded(out, skip))


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b over channels, the narrower tensor added into the first channels of the wider."""
    if a.shape[1] == b.shape[1]:
        return a + b
    if a.shape[1] < b.shape[1]:
        a, b = b, a
    # (B, Ca, H, W) + (B, Cb, H, W) with Cb < Ca: pad b with zero channels at the end
    return a + F.pad(b, (0, 0, 0, 0, 0, a.shape[1] - b.shape[1]))


class CompactNet(nn.Module):
    """Stem -> stages of residual blocks -> global average pool -> linear head."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        plan = arch.plan()
        self.space = arch.space  # not a module: which search space this network belongs to
        self.stem = ConvBN(plan.stem)
        self.stages = nn.Sequential(
            *(nn.Sequential(*(ResidualBlock(b) for b in stage)) for stage in plan.stages)
        )
        self.head = nn.Linear(plan.head_in, plan.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, C_last, H/4, W/4)
        return self.head(x.mean(dim=(2, 3)))  # (B, classes)


def build_model(arch: Arch) -> CompactNet:
    """A plain compact network for ``arch`` with freshly initialised weights."""
    return CompactNet(arch)


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """MACs of all ``nn.Conv2d`` and ``nn.Linear`` layers, counted by running ``model`` on a zero
    input of ``input_size`` (batch included). BN, activations, pooling and biases count 0."""
    total = 0

    def conv_hook(mod: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
