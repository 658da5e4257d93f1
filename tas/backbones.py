"""The user's own trained network as a search space and a full-network state dict.

    space, state = tas.from_torchvision(torchvision.models.resnet50(weights=...))
    net = tas.Supernet(space); net.load_full_weights(state)      # warm-start the search
    teacher = tas.build_model(tas.Arch.full(space)); teacher.load_state_dict(state)

``state`` is the state_dict of ``tas.build_model(tas.Arch.full(space))``, the network this
library builds, searches and prunes; in eval mode its outputs equal the torchvision model's.
A torchvision checkpoint file (a plain state_dict) is read the same way by
`torchvision_state`, which `train_search.py --teacher` and `distill.py --teacher` use.

Supported: torchvision's ResNet-18/34/50/101/152 with any number of classes (ResNeXt and wide
ResNets, whose inner widths differ, are refused in one line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from tas.arch import Arch
from tas.compact import build_model
from tas.space import IMAGENET_RESNET_LAYERS, SearchSpace

_BLOCKS = {"BasicBlock": "basic", "Bottleneck": "bottleneck"}


def from_torchvision(
    model: nn.Module, input_size: int = 224
) -> tuple[SearchSpace, dict[str, torch.Tensor]]:
    """The search space of a torchvision ResNet instance and the state_dict of the full network
    of that space holding its weights (BN statistics included). ``input_size`` is the square
    resolution the MACs are counted at (torchvision's ImageNet models: 224)."""
    kind = type(model).__name__
    if kind != "ResNet":
        raise ValueError(
            f"from_torchvision reads torchvision ResNets (18/34/50/101/152), got a {kind}"
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


def torchvision_space(state: Mapping[str, torch.Tensor], input_size: int = 224) -> SearchSpace:
    """The search space of the torchvision ResNet whose state dict is ``state``: the depth
    from its blocks per stage and block type, the classes from its last layer."""
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
    """A torchvision ResNet's state_dict renamed as the full network of ``space`` names it.
    Raises ValueError, in one line, when the tensors are not that network's."""
    if space.backbone != "imagenet_resnet":
        raise ValueError(
            f"torchvision weights fit an imagenet_resnet space, not {space.describe()}"
        )
    own = build_model(Arch.full(space)).state_dict()
    out, missing = {}, []
    for key, ref in own.items():
        name = _torchvision_name(key)
        if name not in state:
            missing.append(name)
            continue
        if tuple(state[name].shape) != tuple(ref.shape):
            raise ValueError(
                f"torchvision weights do not fit the full {space.describe()}: {name} has shape "
                f"{tuple(state[name].shape)}, expected {tuple(ref.shape)}"
            )
        out[key] = state[name]
    unexpected = sorted(set(state) - {_torchvision_name(k) for k in own})
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
