"""Arch: a concrete (compact) topology inside a search space, its exact MAC and parameter counts,
and the found.json format.

An `Arch` says how many blocks each stage keeps and how wide every kept conv is. `Arch.plan()`
turns it into the exact layer list of the network `tas.build_model` builds; `macs` and `params`
are counted on that plan, so they are exact, not estimates (tests check them against
`torch.utils.flop_counter` and a hook counter on the built module).

found.json, format "tas-arch/1" (all keys required unless marked optional)::

    {
      "format": "tas-arch/1",
      "backbone": "cifar_resnet", "depth": 56, "block": "basic", "num_classes": 10,
      "shortcut": "zero_pad",             # or "projection": how identity blocks join widths
      "input_size": 32,                   # optional: square input resolution (backbone default)
      "width_mult": 0.5,                  # optional: MobileNetV2's width multiplier (absent: 1)
      "blocks": [5, 5, 5],                # blocks kept per stage
      "widths": {"stem": 16, "stage1.block0.conv_a": 16, ...},   # every kept conv, by place
      "macs": 58890368,                   # multiply-accumulates of convs + linear, one image
      "params": 520000,                   # trainable parameters of the built network
      "full_macs": 125747840,             # optional: MACs of the unpruned network
      "search": {...}                     # optional: target, ratio and settings of the search
    }
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from tas.space import SHORTCUT_MODES, SearchSpace, layer_out_size

FORMAT = "tas-arch/1"


class ArchFormatError(ValueError):
    """A found.json (or an Arch) that is missing, malformed or does not fit its search space."""


# ---------------------------------------------------------------------------- the layer plan
@dataclass(frozen=True)
class ConvLayer:
    """One conv (+ BN) of a compact network, with everything needed to count or build it."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    out_size: int  # spatial output size (square)
    relu: bool
    pool: bool = False  # AvgPool(2) before the conv (stride-2 "avgpool" projection shortcuts)
    max_pool: bool = False  # MaxPool(2) before the conv (VGG)
    depthwise: bool = False  # groups == channels: each filter reads one input channel
    relu6: bool = False  # the ReLU clamps at 6

    @property
    def fan_in(self) -> int:
        """Input channels each filter reads."""
        return 1 if self.depthwise else self.in_channels

    @property
    def macs(self) -> int:
        return self.kernel**2 * self.fan_in * self.out_channels * self.out_size**2

    @property
    def params(self) -> int:
        # conv weight (no bias) + BN affine weight and bias
        return self.kernel**2 * self.fan_in * self.out_channels + 2 * self.out_channels


@dataclass(frozen=True)
class BlockPlan:
    """A residual block: ``relu(convs(x) + shortcut(x))`` (no ReLU with ``sum_relu=False``),
    or, with ``residual=False``, the convs alone.

    ``shortcut`` is None for identity (zero-padded to the wider of the two when widths differ).
    """

    name: str
    in_channels: int
    convs: tuple[ConvLayer, ...]
    shortcut: ConvLayer | None
    residual: bool = True
    sum_relu: bool = True

    @property
    def out_channels(self) -> int:
        last = self.convs[-1].out_channels
        if self.shortcut is not None or not self.residual:
            return last
        return max(last, self.in_channels)

    @property
    def layers(self) -> tuple[ConvLayer, ...]:
        return self.convs + ((self.shortcut,) if self.shortcut is not None else ())


@dataclass(frozen=True)
class NetPlan:
    stem: ConvLayer
    stages: tuple[tuple[BlockPlan, ...], ...]
    num_classes: int

    @property
    def head_in(self) -> int:
        return self.stages[-1][-1].out_channels

    def layers(self) -> list[ConvLayer]:
        out = [self.stem]
        for stage in self.stages:
            for block in stage:
                out.extend(block.layers)
        return out

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers()) + self.head_in * self.num_classes

    @property
    def params(self) -> int:
        head = self.head_in * self.num_classes + self.num_classes
        return sum(layer.params for layer in self.layers()) + head


def make_plan(space: SearchSpace, blocks: tuple[int, ...], widths: dict[str, int]) -> NetPlan:
    """The exact layers of the compact network: kept blocks in order, each conv reading the
    width its predecessor actually outputs (a depthwise conv outputs that width too)."""
    stem = ConvLayer(
        "stem",
        space.in_channels,
        widths["stem"],
        space.stem.kernel,
        space.stem.stride,
        space.stem_conv_size(),
        space.stem.relu,
        relu6=space.stem.relu6,
    )
    size = space.stem_out_size()
    width = stem.out_channels
    stages = []
    for stage, kept in zip(space.stages, blocks):
        planned = []
        for spec in stage.blocks[:kept]:
            in_width, in_size = width, size
            convs = []
            for conv in spec.convs:
                size = layer_out_size(size, conv)
                out_width = width if conv.depthwise else widths[conv.name]
                convs.append(
                    ConvLayer(
                        conv.name,
                        width,
                        out_width,
                        conv.kernel,
                        conv.stride,
                        size,
                        conv.relu,
                        max_pool=conv.max_pool,
                        depthwise=conv.depthwise,
                        relu6=conv.relu6,
                    )
                )
                width = out_width
            shortcut = None
            needs_projection = spec.projection or (
                spec.residual and space.shortcut == "projection" and in_width != width
            )
            if needs_projection:
                pooled = spec.stride != 1 and space.downsample == "avgpool"
                shortcut = ConvLayer(
                    f"{spec.name}.shortcut",
                    in_width,
                    width,
                    1,
                    1 if pooled else spec.stride,
                    space.shortcut_out_size(spec, in_size),
                    False,
                    pooled,
                )
            block = BlockPlan(
                spec.name, in_width, tuple(convs), shortcut, spec.residual, spec.sum_relu
            )
            width = block.out_channels
            planned.append(block)
        stages.append(tuple(planned))
    return NetPlan(stem, tuple(stages), space.num_classes)


# ---------------------------------------------------------------------------- Arch
@dataclass
class Arch:
    """A compact topology: blocks kept per stage and the width of every kept conv, by name."""

    space: SearchSpace
    blocks: tuple[int, ...]
    widths: dict[str, int]
    search: dict[str, Any] = field(default_factory=dict)  # metadata only; not part of equality

    def __post_init__(self) -> None:
        self.blocks = tuple(self.blocks)
        self.widths = dict(self.widths)
        self._validate()
        self._plan = make_plan(self.space, self.blocks, self.widths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return (self.space, self.blocks, self.widths) == (other.space, other.blocks, other.widths)

    # ------------------------------------------------------------ construction
    @classmethod
    def full(cls, space: SearchSpace) -> Arch:
        """The unpruned network: every block, every conv at full width."""
        return cls(space, space.max_blocks, {c.name: c.channels for c in space.convs()})

    @classmethod
    def uniform(cls, space: SearchSpace, macs_ratio: float) -> Arch:
        """One width multiplier m for every conv (width floor(C * m), at least 1), full depth:
        the largest m whose network has MACs <= macs_ratio * full MACs."""
        check_ratio(macs_ratio)
        budget = macs_ratio * cls.full(space).macs
        convs = space.convs()
        # Widths change only at m = k / C: search those exact fractions, largest feasible wins.
        steps = sorted({Fraction(k, c.channels) for c in convs for k in range(1, c.channels + 1)})

        def at(m: Fraction) -> Arch:
            return cls(
                space,
                space.max_blocks,
                {c.name: max(1, int(c.channels * m)) for c in convs},
                {"method": "uniform", "width_multiplier": float(m)},
            )

        lo, hi = 0, len(steps) - 1
        if at(steps[0]).macs > budget:
            raise ValueError(
                f"macs_ratio {macs_ratio} is below the smallest uniform network "
                f"of {space.describe()}"
            )
        while lo < hi:  # invariant: steps[lo] fits the budget
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if at(steps[mid]).macs <= budget else (lo, mid - 1)
        arch = at(steps[lo])
        arch.search["macs_ratio"] = macs_ratio
        return arch

    @classmethod
    def random(cls, space: SearchSpace, generator: random.Random | None = None) -> Arch:
        """A network drawn uniformly from the search space: each stage's depth from its depth
        choices, each kept conv's width from its candidates."""
        rng = generator or random.Random()
        blocks = tuple(rng.choice(stage.depth_choices) for stage in space.stages)
        widths = {c.name: rng.choice(c.candidates) for c in space.kept_convs(blocks)}
        return cls(space, blocks, widths, {"method": "random"})

    # ------------------------------------------------------------ counts
    def plan(self) -> NetPlan:
        return self._plan

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all convs and the linear head for one input image."""
        return self._plan.macs

    @property
    def params(self) -> int:
        """Trainable parameters of the built network (BN affine included, BN buffers not)."""
        return self._plan.params

    def summary(self) -> str:
        full = Arch.full(self.space)
        cut = 100.0 * (1 - self.macs / full.macs)
        return (
            f"{self.space.describe()}: blocks {list(self.blocks)} "
            f"of {list(self.space.max_blocks)}, "
            f"{self.macs / 1e6:.2f}M MACs ({cut:.1f}% fewer than full {full.macs / 1e6:.2f}M), "
            f"{self.params / 1e6:.3f}M params"
        )

    # ------------------------------------------------------------ validation
    def _validate(self) -> None:
        space = self.space
        if len(self.blocks) != len(space.stages):
            raise ArchFormatError(
                f"blocks has {len(self.blocks)} entries, "
                f"{space.describe()} has {len(space.stages)} stages"
            )
        for stage, kept in zip(space.stages, self.blocks):
            if (
                not isinstance(kept, int)
                or isinstance(kept, bool)
                or not 1 <= kept <= len(stage.blocks)
            ):
                raise ArchFormatError(
                    f"{stage.name} keeps {kept!r} blocks; "
                    f"it must be an integer in 1..{len(stage.blocks)}"
                )
        expected = [c.name for c in space.kept_convs(self.blocks)]
        missing = [n for n in expected if n not in self.widths]
        if missing:
            raise ArchFormatError(
                f"widths is missing {len(missing)} kept conv(s), first {missing[0]!r}"
            )
        extra = sorted(set(self.widths) - set(expected))
        if extra:
            raise ArchFormatError(
                f"widths names {len(extra)} conv(s) that are not kept in this network, "
                f"first {extra[0]!r}"
            )
        for name in expected:
            width, full = self.widths[name], space.conv(name).channels
            if not isinstance(width, int) or isinstance(width, bool):
                raise ArchFormatError(f"width of {name} must be an integer, got {width!r}")
            if not 1 <= width <= full:
                raise ArchFormatError(f"width of {name} is {width}, outside 1..{full}")

    # ------------------------------------------------------------ found.json
    def to_dict(self) -> dict[str, Any]:
        space = self.space
        out: dict[str, Any] = {
            "format": FORMAT,
            "backbone": space.backbone,
            "depth": space.depth,
            "block": space.block_kind,
            "num_classes": space.num_classes,
            "shortcut": space.shortcut,
            "input_size": space.input_size,
            **({"width_mult": space.width_mult} if space.width_mult != 1.0 else {}),
            "blocks": list(self.blocks),
            "widths": dict(self.widths),
            "macs": self.macs,
            "params": self.params,
            "full_macs": Arch.full(space).macs,
        }
        if self.search:
            out["search"] = self.search
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        if not isinstance(data, dict):
            raise ArchFormatError(f"expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ArchFormatError(f"unknown format {fmt!r}; this version reads {FORMAT!r}")
        kinds = {
            "backbone": str,
            "depth": int,
            "num_classes": int,
            "blocks": list,
            "widths": dict,
            "macs": int,
            "params": int,
        }
        for key, kind in kinds.items():
            if key not in data:
                raise ArchFormatError(f"missing field {key!r}")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ArchFormatError(
                    f"field {key!r} must be {kind.__name__}, got {type(data[key]).__name__}"
                )
        shortcut = data.get("shortcut", "zero_pad")
        if shortcut not in SHORTCUT_MODES:
            raise ArchFormatError(
                f"field 'shortcut' must be one of {SHORTCUT_MODES}, got {shortcut!r}"
            )
        input_size = data.get("input_size")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
            raise ArchFormatError(
                f"field 'input_size' must be a positive integer, got {input_size!r}"
            )
        width_mult = data.get("width_mult", 1.0)
        if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool):
            raise ArchFormatError(f"field 'width_mult' must be a number, got {width_mult!r}")
        try:
            space = SearchSpace.from_name(
                data["backbone"],
                data["depth"],
                data["num_classes"],
                block=data.get("block"),
                shortcut=shortcut,
                input_size=input_size,
                width_mult=width_mult,
            )
        except ValueError as err:
            raise ArchFormatError(str(err)) from None
        if space.depth != data["depth"]:  # a backbone of one depth (MobileNetV2)
            raise ArchFormatError(
                f"field 'depth' says {data['depth']} but {space.describe()} has depth {space.depth}"
            )
        search = data.get("search", {})
        if not isinstance(search, dict):
            raise ArchFormatError("field 'search' must be an object")
        arch = cls(space, tuple(data["blocks"]), data["widths"], search)
        for key in ("macs", "params"):
            if data[key] != getattr(arch, key):
                raise ArchFormatError(
                    f"field {key!r} says {data[key]} but the network it describes has "
                    f"{getattr(arch, key)}: the file was edited or written by another version"
                )
        return arch

    def save(self, path: str | os.PathLike) -> None:
        """Write found.json atomically (temp file in the same folder, then rename)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Arch:
        """Read and validate a found.json; any problem raises ArchFormatError (a ValueError)."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ArchFormatError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ArchFormatError(
                f"{path}: cannot read ({err.__class__.__name__}: {err})"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchFormatError(
                f"{path}: not valid JSON ({err.msg} at line {err.lineno})"
            ) from None
        try:
            return cls.from_dict(data)
        except ArchFormatError as err:
            raise ArchFormatError(f"{path}: {err}") from None


def check_ratio(ratio: float) -> None:
    if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"MACs ratio must be in (0, 1], got {ratio!r}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see the old file or the whole new one, never a part."""
    write_bytes_atomic(path, text.encode())


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see `write_bytes_atomic`)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # name the file being written, not the temp file or a descriptor
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
