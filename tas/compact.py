"""Build the plain compact network of an `Arch`, with fresh weights, and count MACs on any model.

The builder follows `Arch.plan()` layer by layer, so the module it returns is exactly the network
whose MACs and parameters `Arch` reports. Nothing from the search is inherited but the shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, BlockPlan, ConvLayer


class ConvBN(nn.Sequential):
    """[AvgPool(2) | MaxPool(2)] -> Conv (no bias; grouped per channel when depthwise) -> BN
    [-> ReLU | ReLU6], as planned by a `ConvLayer`."""

    def __init__(self, layer: ConvLayer) -> None:
        mods: list[nn.Module] = [nn.AvgPool2d(2)] if layer.pool else []
        mods += [nn.MaxPool2d(2)] if layer.max_pool else []
        mods += [
            nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel,
                layer.stride,
                padding=layer.kernel // 2,
                groups=layer.in_channels if layer.depthwise else 1,
                bias=False,
            ),
            nn.BatchNorm2d(layer.out_channels),
        ]
        if layer.relu:
            mods.append(nn.ReLU6(inplace=True) if layer.relu6 else nn.ReLU(inplace=True))
        super().__init__(*mods)


class ResidualBlock(nn.Module):
    """``relu(main(x) + shortcut(x))``; an identity shortcut of another width is zero-padded
    into the first channels of the wider tensor (the original CIFAR ResNet's option A). A plan
    with ``residual=False`` is ``main(x)`` alone; with ``sum_relu=False`` the sum is not
    rectified (MobileNetV2)."""

    def __init__(self, plan: BlockPlan) -> None:
        super().__init__()
        self.main = nn.Sequential(*(ConvBN(c) for c in plan.convs))
        self.shortcut = ConvBN(plan.shortcut) if plan.shortcut is not None else None
        self.residual = plan.residual
        self.sum_relu = plan.sum_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        if not self.residual:
            return out
        skip = self.shortcut(x) if self.shortcut is not None else x
        out = add_padded(out, skip)
        return F.relu(out) if self.sum_relu else out


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b over channels, the narrower tensor added into the first channels of the wider."""
    if a.shape[1] == b.shape[1]:
        return a + b
    if a.shape[1] < b.shape[1]:
        a, b = b, a
    # (B, Ca, H, W) + (B, Cb, H, W) with Cb < Ca: pad b with zero channels at the end
    return a + F.pad(b, (0, 0, 0, 0, 0, a.shape[1] - b.shape[1]))


class CompactNet(nn.Module):
    """Stem [-> max-pool] -> stages of residual blocks -> global average pool [-> dropout] ->
    linear head."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        plan = arch.plan()
        self.space = arch.space  # not a module: which search space this network belongs to
        self.stem = ConvBN(plan.stem)
        # torchvision's 3x3/2 max-pool after the stem (no parameters: state dicts unchanged)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if arch.space.stem_pool else nn.Identity()
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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features: the globally pooled last stage, (B, C_last)."""
        return self.stages(self.stem_pool(self.stem(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.space.dropout:  # functional: no module, so state dicts and module trees stay
            x = F.dropout(x, self.space.dropout, self.training)
        return self.head(x)  # (B, classes)


def build_model(
    arch: Arch,
    init_from: CompactNet | None = None,
    keep: Mapping[str, Sequence[int] | torch.Tensor] | None = None,
) -> CompactNet:
    """A plain compact network for ``arch``: freshly initialised weights, or, with ``init_from``
    (a full network of the same space, e.g. a trained teacher), the weights of the filters it
    keeps. See `inherit_weights` for ``keep``."""
    model = CompactNet(arch)
    if init_from is not None:
        inherit_weights(model, arch, init_from, keep or {})
    elif keep:
        raise ValueError("keep= needs init_from=, the network whose filters are kept")
    return model


def load_model(arch_path: str | Path, weights_path: str | Path) -> CompactNet:
    """The network an export folder holds (``python export.py``): built from its found.json,
    weights from its plain state_dict (read with ``weights_only=True``), in eval mode."""
    model = build_model(Arch.load(arch_path))
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return model.eval()


def _conv_bn(module: ConvBN) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = next(m for m in module if isinstance(m, nn.Conv2d))
    return conv, next(m for m in module if isinstance(m, nn.BatchNorm2d))


@torch.no_grad()
def _copy_conv_bn(dst: ConvBN, src: ConvBN, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
    (dconv, dbn), (sconv, sbn) = _conv_bn(dst), _conv_bn(src)
    dconv.weight.copy_(sconv.weight[out_idx][:, in_idx])
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dbn, name).copy_(getattr(sbn, name)[out_idx])
    dbn.num_batches_tracked.copy_(sbn.num_batches_tracked)


def inherit_weights(
    model: CompactNet,
    arch: Arch,
    source: CompactNet,
    keep: Mapping[str, Sequence[int] | torch.Tensor],
) -> None:
    """Copy into ``model`` (built from ``arch``) the weights of the filters it keeps from
    ``source``, the full network of the same space; a stage keeps its first ``arch.blocks``.

    ``keep[name]`` lists the source filters (output channels) a conv keeps, in order; a conv not
    in ``keep`` keeps its first ``width`` filters. Every conv reads the channels its input
    producer kept. Convs whose output joins a residual sum (each residual block's last conv, and
    the stem where the first block adds its input) must keep a prefix: compact residual sums
    align channels by position, so any other choice would add unrelated channels together.
    Pruning methods therefore prune inside residual blocks only, as Li et al. (2017) and Liu et
    al. (2017) do for ResNets; in a plain chain (VGG) every conv may keep any filters. A
    depthwise conv keeps the filters of the channels its input kept (it has no ``keep`` entry).
    """
    full = Arch.full(arch.space)
    if getattr(source, "space", None) != arch.space or count_params(source) != full.params:
        raise ValueError(
            f"init_from must be the full {arch.space.describe()} the architecture was pruned from"
        )
    unknown = set(keep) - set(arch.widths)
    if unknown:
        raise ValueError(f"keep names convs the architecture does not have: {sorted(unknown)}")

    def kept(name: str, width: int, stream: bool) -> torch.Tensor:
        idx = torch.as_tensor(keep.get(name, range(width)), dtype=torch.long)
        if len(idx) != width:
            raise ValueError(f"keep[{name!r}] lists {len(idx)} filters for a width of {width}")
        if stream and not torch.equal(idx, torch.arange(width)):
            raise ValueError(
                f"keep[{name!r}]: {name} feeds a residual sum, so it must keep its first "
                f"{width} filters"
            )
        return idx

    plan = arch.plan()
    blocks = [b for stage in plan.stages for b in stage]
    # the stem feeds a residual sum where the first block adds its input (an identity shortcut)
    stem_in_sum = bool(blocks) and blocks[0].residual and blocks[0].shortcut is None
    stream = kept("stem", plan.stem.out_channels, stem_in_sum)
    _copy_conv_bn(model.stem, source.stem, stream, torch.arange(plan.stem.in_channels))
    for stage_plan, stage, src_stage in zip(plan.stages, model.stages, source.stages):
        for block_plan, block, src_block in zip(stage_plan, stage, src_stage):
            # each conv reads the filters its producer kept: after a residual block a prefix
            block_in = in_idx = stream
            layers = list(zip(block_plan.convs, block.main, src_block.main))
            for i, (layer, dst, src) in enumerate(layers):
                if layer.depthwise:  # filter j reads channel j only: it follows its input
                    _copy_conv_bn(dst, src, in_idx, torch.zeros(1, dtype=torch.long))
                    continue
                in_sum = block_plan.residual and i == len(layers) - 1
                out_idx = kept(layer.name, layer.out_channels, in_sum)
                _copy_conv_bn(dst, src, out_idx, in_idx)
                in_idx = out_idx
            stream = in_idx if not block_plan.residual else torch.arange(block_plan.out_channels)
            if block.shortcut is not None:
                if src_block.shortcut is None:
                    raise ValueError(
                        f"{block_plan.name}: the compact block has a projection shortcut that "
                        "the full network lacks; nothing to inherit it from"
                    )
                out_idx = torch.arange(block_plan.shortcut.out_channels)
                _copy_conv_bn(block.shortcut, src_block.shortcut, out_idx, block_in)
    with torch.no_grad():
        model.head.weight.copy_(source.head.weight[:, stream])
        model.head.bias.copy_(source.head.bias)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(
    model: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 32, 32),
    masks: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """MACs of all ``nn.Conv2d`` and ``nn.Linear`` layers, counted by running ``model`` on a zero
    input of ``input_size`` (batch included). BN, activations, pooling and biases count 0.

    Each weight does one MAC per output position of its layer (a conv's output pixels, a linear
    layer's rows). With ``masks`` (state-dict weight name -> bool tensor, as
    `tas.baselines.sparsity` writes them) a pruned weight does none: the MACs of a kernel that
    skips zeros, where a dense kernel does all of them."""
    total = 0

    def hook(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def count(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            nonlocal total
            channels = out.shape[1] if isinstance(mod, nn.Conv2d) else mod.out_features
            mask = None if masks is None else masks.get(f"{name}.weight")
            weights = mod.weight.numel() if mask is None else int(mask.sum())
            total += out.numel() // channels * weights

        return count

    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook(name)))
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
