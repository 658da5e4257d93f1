"""The network a training run trains, from its command-line spelling (``--arch``): the full
network, the uniform-width one at a MACs ratio, a random draw, or a found.json."""

from __future__ import annotations

import random

import tas


def resolve_arch(
    spec: str,
    depth: int,
    num_classes: int,
    shortcut: str = "zero_pad",
    backbone: str = "cifar_resnet",
    input_size: int | None = None,
    width_mult: float = 1.0,
) -> tas.Arch:
    """``full``, ``uniform:R`` (width multiplier for R x full MACs), ``random:SEED`` or a path to
    a found.json. A found.json brings its own space; its classes must match the data's.
    ``width_mult``: MobileNetV2's width multiplier (its full network's widths)."""
    kind, _, value = spec.partition(":")
    if spec == "full" or kind in ("uniform", "random"):
        space = tas.SearchSpace.from_name(
            backbone, depth, num_classes, shortcut=shortcut, input_size=input_size,
            width_mult=width_mult,
        )  # fmt: skip
    if spec == "full":
        return tas.Arch.full(space)
    if kind == "uniform" and value:
        try:
            ratio = float(value)
        except ValueError:
            raise ValueError(
                f"--arch uniform:R needs a number R in (0, 1], got {value!r}"
            ) from None
        return tas.Arch.uniform(space, ratio)
    if kind == "random" and value.isdigit():
        return tas.Arch.random(space, random.Random(int(value)))
    arch = tas.Arch.load(spec)
    if arch.space.num_classes != num_classes:
        raise tas.ArchFormatError(
            f"{spec} is for {arch.space.num_classes} classes but the data set has {num_classes}"
        )
    if input_size is not None and arch.space.input_size != input_size:
        raise tas.ArchFormatError(
            f"{spec} counts its MACs at {arch.space.input_size}x{arch.space.input_size} inputs "
            f"but the data's images are {input_size}x{input_size}"
        )
    return arch
