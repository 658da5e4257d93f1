"""The user's own trained network as a search space and a full-network state dict.

    space, state = tas.from_torchvision(torchvision.models.resnet50(weights=...))  # or mobilenet_v2
    net = tas.Supernet(space); net.load_full_weights(state)      # warm-start the search
    teacher = tas.build_model(tas.Arch.full(space)); teacher.load_state_dict(state)

``state`` is the state_dict of ``tas.build_model(tas.Arch.full(space))``, the network this
library builds, searches and prunes; in eval mode its outputs equal the torchvision model's.
A torchvision checkpoint file (a plain state_dict) is read the same way by
`torchvision_state`, which `train_search.py --teacher` and `distill.py --teacher` use.

Supported: torchvision's ResNet-18/34/50/101/152 and MobileNetV2 (any width multiplier) with
any number of classes (ResNeXt and wide ResNets, whose inner widths differ, are refused in one
line, as is a MobileNetV2 of another layer table: its tensors do not fit).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from tas.arch import Arch
from tas.compact import build_model
from tas.space import SearchSpace
from tas.spaces.mobilenet import MOBILENET_V2_STAGES
from tas.spaces.resnet import IMAGENET_RESNET_LAYERS

_BLOCKS = {"BasicBlock": "basic", "Bottleneck": "bottleneck"}


def from_torchvision(
    model: nn.Module, input_size: int = 224
) -> tuple[SearchSpace, dict[str, torch.Tensor]]:
    """The search space of a torchvision ResNet or MobileNetV2 instance and the state_dict of
    the full network of that space holding its weights (BN statistics included). ``input_size``
    is the square resolution the MACs are counted at (torchvision's ImageNet models: 224)."""
    kind = type(model).__name__
    if kind == "MobileNetV2":
        state = model.state_dict()
        space = torchvision_space(state, input_size)
        return space, torchvision_state(state, space)
    if kind != "ResNet":
        raise ValueError(
            "from_torchvision reads torchvision ResNets (18/34/50/101/152) and MobileNetV2, "
            f"got a {kind}"
        )
    if getattr(model, "groups", 1) != 1 or getattr(model, "base_width", 64) != 64:
        raise ValueError(
            "from_torchvision reads plain ResNets; ResNeXt and wide ResNets (groups "
            f"{model.groups}, width per group {model.base_width}) are not supported"
        )
    if _BLOCKS.get(type(model.layer1[0]).__name__) is None:
        raise ValueError(f"unknown ResNet block {type(model.layer1[0]).__name__}")
    state = model.state_dict()
    space = torchvision_space(state, input_size)
    return space, torchvision_state(state, space)


def is_torchvision_resnet_state(state: object) -> bool:
    """Whether ``state`` is a state dict named as torchvision's ResNets name theirs."""
    keys = {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"}
    return isinstance(state, Mapping) and keys <= set(state)


def is_torchvision_mobilenet_v2_state(state: object) -> bool:
    """Whether ``state`` is a state dict named as torchvision's MobileNetV2 names its own."""
    keys = {"features.0.0.weight", "features.0.1.weight", "features.1.conv.0.0.weight"}
    return isinstance(state, Mapping) and keys | {"classifier.1.weight"} <= set(state)


def is_torchvision_state(state: object) -> bool:
    """Whether ``state`` is the state dict of a network `torchvision_space` reads."""
    return is_torchvision_resnet_state(state) or is_torchvision_mobilenet_v2_state(state)


def torchvision_space(state: Mapping[str, torch.Tensor], input_size: int = 224) -> SearchSpace:
    """The search space of the torchvision ResNet or MobileNetV2 whose state dict is ``state``:
    a ResNet's depth from its blocks per stage and block type, a MobileNetV2's width multiplier
    from its last block's output width (320 x width_mult); the classes from its last layer."""
    if is_torchvision_mobilenet_v2_state(state):
        last = sum(row.blocks for row in MOBILENET_V2_STAGES)  # features.17: the last block
        key = f"features.{last}.conv.2.weight"  # its projection: (320 x width_mult, hidden, 1, 1)
        if key not in state:
            raise ValueError(f"a MobileNetV2 state dict without {key}: not torchvision's layers")
        width_mult = state[key].shape[0] / MOBILENET_V2_STAGES[-1].channels
        classes = state["classifier.1.weight"].shape[0]
        return SearchSpace.mobilenet_v2(classes, input_size, width_mult)
    layers = tuple(
        len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)
    )
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    depth = next(
        (d for d, (b, n) in IMAGENET_RESNET_LAYERS.items() if (b, n) == (block, layers)), None
    )
    if depth is None:
        raise ValueError(
            f"a ResNet of {block} blocks {list(layers)} per stage is none of torchvision's "
            f"ResNet-{'/'.join(map(str, IMAGENET_RESNET_LAYERS))}"
        )
    return SearchSpace.imagenet_resnet(depth, state["fc.weight"].shape[0], input_size)


def torchvision_state(
    state: Mapping[str, torch.Tensor], space: SearchSpace
) -> dict[str, torch.Tensor]:
    """A torchvision ResNet's or MobileNetV2's state_dict renamed as the full network of
    ``space`` names it. Raises ValueError, in one line, when the tensors are not that
    network's."""
    if space.backbone == "imagenet_resnet":
        torchvision_name = _torchvision_name
    elif space.backbone == "mobilenet_v2":
        torchvision_name = _mobilenet_v2_namer(space)
    else:
        raise ValueError(
            f"torchvision weights fit an imagenet_resnet or mobilenet_v2 space, not "
            f"{space.describe()}"
        )
    own = build_model(Arch.full(space)).state_dict()
    out, missing = {}, []
    for key, ref in own.items():
        name = torchvision_name(key)
        if name not in state:
            missing.append(name)
            continue
        if tuple(state[name].shape) != tuple(ref.shape):
            raise ValueError(
                f"torchvision weights do not fit the full {space.describe()}: {name} has shape "
                f"{tuple(state[name].shape)}, expected {tuple(ref.shape)}"
            )
        out[key] = state[name]
    unexpected = sorted(set(state) - {torchvision_name(k) for k in own})
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise ValueError(
            f"torchvision weights do not fit the full {space.describe()}: {len(missing)} "
            f"tensors missing, {len(unexpected)} unexpected (e.g. {first})"
        )
    return out


def _torchvision_name(key: str) -> str:
    """Our full ResNet's state-dict key -> torchvision's (stem.0 -> conv1, stages.1.0.main.2.1
    -> layer2.0.bn3, stages.1.0.shortcut.0 -> layer2.0.downsample.0, head -> fc)."""
    m = re.fullmatch(r"stem\.([01])\.(.+)", key)
    if m:
        return f"{('conv1', 'bn1')[int(m[1])]}.{m[2]}"
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.main\.(\d+)\.([01])\.(.+)", key)
    if m:
        layer = ("conv", "bn")[int(m[4])]
        return f"layer{int(m[1]) + 1}.{m[2]}.{layer}{int(m[3]) + 1}.{m[5]}"
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.shortcut\.([01])\.(.+)", key)
    if m:
        return f"layer{int(m[1]) + 1}.{m[2]}.downsample.{m[3]}.{m[4]}"
    m = re.fullmatch(r"head\.(.+)", key)
    if m:
        return f"fc.{m[1]}"
    raise ValueError(f"no torchvision name for {key}")


def _mobilenet_v2_namer(space: SearchSpace) -> Callable[[str], str]:
    """Our full MobileNetV2's state-dict key -> torchvision's. Blocks are numbered through the
    network, features.1 to features.17 (features.0 the stem, features.18 the last 1x1 conv); in
    a block, conv j is ``conv.j`` (conv + BN), but the projection is a bare conv and BN, so the
    last conv of n is ``conv.{n-1}`` and its BN ``conv.{n}``."""
    where = {}  # (stage, block) -> (feature index, convs in the block, inverted residual?)
    for s, stage in enumerate(space.stages):
        for b, block in enumerate(stage.blocks):
            inverted = any(c.depthwise for c in block.convs)
            where[s, b] = (len(where) + 1, len(block.convs), inverted)

    def name(key: str) -> str:
        m = re.fullmatch(r"stem\.([01])\.(.+)", key)
        if m:
            return f"features.0.{m[1]}.{m[2]}"
        m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.main\.(\d+)\.([01])\.(.+)", key)
        if m:
            feature, n, inverted = where[int(m[1]), int(m[2])]
            j, part = int(m[3]), int(m[4])
            if not inverted:  # the last 1x1 conv: conv + BN + ReLU6
                return f"features.{feature}.{part}.{m[5]}"
            if j < n - 1:
                return f"features.{feature}.conv.{j}.{part}.{m[5]}"
            return f"features.{feature}.conv.{j + part}.{m[5]}"
        m = re.fullmatch(r"head\.(.+)", key)
        if m:
            return f"classifier.1.{m[1]}"
        raise ValueError(f"no torchvision name for {key}")

    return name
