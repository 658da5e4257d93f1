"""The search space as data: which convs exist, their width candidates, the stages and their
depth candidates.

A space describes a residual CNN as a stem conv (optionally followed by a 3x3/2 max-pool),
stages of residual blocks, global average pooling (then dropout, where the network has it) and
a linear head. Every main-path conv has a distribution over its candidate widths; a conv with
one candidate is fixed (torchvision ResNets keep each block's last conv, the residual stream, at
full width); a block's projection shortcut takes the width of the block's last conv; a
depthwise conv (MobileNetV2) has no width of its own: it takes its input's. The supernet, the
cost model and the compact builder all read this description, so a new backbone is a new
`SearchSpace` constructor, not new supernet/cost/builder code.

Names are places in the network: ``stem``, ``stage1.block0.conv_a``, ... (stages count from 1,
blocks from 0, as in most CIFAR ResNet code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

# Width ratios r in {0.3, 0.4, ..., 1.0}, as tenths so floor(C * r) is exact integer arithmetic.
WIDTH_RATIO_TENTHS: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10)

SHORTCUT_MODES = ("zero_pad", "projection")
DOWNSAMPLE_MODES = ("avgpool", "strided")

# The CIFAR VGGs of Network Slimming (Liu et al. 2017) and "Rethinking the Value of Network
# Pruning" (Liu et al. 2019): conv widths, "M" a 2x2 max-pool; then a 2x2 average pool (global
# on the 2x2 map left) and one linear layer.
CIFAR_VGG_LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
    + (512, 512, 512, 512),
}

# torchvision's ImageNet ResNets: blocks per stage, and the block each depth uses
IMAGENET_RESNET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class InvertedResidualStage(NamedTuple):
    """One row of MobileNetV2's layer table (Sandler et al. 2018, Table 2)."""

    expansion: int  # t: hidden width = t x block input width (t == 1: no expansion conv)
    channels: int  # c: output width at width multiplier 1
    blocks: int  # n
    stride: int  # s: the stride of the stage's first block (the others: 1)


MOBILENET_V2_STAGES: tuple[InvertedResidualStage, ...] = (
    InvertedResidualStage(1, 16, 1, 1),
    InvertedResidualStage(6, 24, 2, 2),
    InvertedResidualStage(6, 32, 3, 2),
    InvertedResidualStage(6, 64, 4, 2),
    InvertedResidualStage(6, 96, 3, 1),
    InvertedResidualStage(6, 160, 3, 2),
    InvertedResidualStage(6, 320, 1, 1),
)


def width_candidates(
    channels: int, tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS, multiple: int = 1
) -> tuple[int, ...]:
    """Candidate widths floor(C * r) for the ratios r = tenths / 10, sorted, duplicates removed.

    ``multiple`` > 1 rounds every candidate to the nearest multiple of it (at least ``multiple``,
    at most C): channel counts that are multiples of 8 run faster per MAC on oneDNN and cuDNN.
    """
    widths = {max(1, channels * t // 10) for t in tenths}
    if multiple > 1:
        widths = {
            min(channels, max(multiple, (w + multiple // 2) // multiple * multiple)) for w in widths
        }
    return tuple(sorted(widths))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's MobileNet channel rounding: ``value`` to the nearest multiple of
    ``divisor`` (at least ``divisor``), one multiple more where that lost over 10% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def depth_candidates(num_blocks: int) -> tuple[int, ...]:
    """Depth choices of a stage with ``num_blocks`` blocks.

    n <= 3: every count 1..n; n > 3: the odd counts 1, 3, 5, ... up to n, plus n when n is even.
    """
    if num_blocks < 1:
        raise ValueError(f"a stage needs at least one block, got {num_blocks}")
    if num_blocks <= 3:
        return tuple(range(1, num_blocks + 1))
    odd = list(range(1, num_blocks + 1, 2))
    if num_blocks % 2 == 0:
        odd.append(num_blocks)
    return tuple(odd)


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a conv with 'same' padding kernel // 2."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def layer_out_size(size: int, conv: ConvSpec) -> int:
    """Spatial output size of a searchable conv, its max-pool (if any) included."""
    return conv_out_size(size // 2 if conv.max_pool else size, conv.kernel, conv.stride)


@dataclass(frozen=True)
class ConvSpec:
    """One searchable conv (followed by its BatchNorm, and ReLU when ``relu``).

    A ``depthwise`` conv (groups == channels, MobileNetV2) filters each of its input channels
    alone, so its width is its input's: it has no distribution, is not one of
    `SearchSpace.convs` and has no entry in an Arch's widths (``candidates`` is its full width).
    """

    name: str
    channels: int  # full width C of this conv's output
    candidates: tuple[int, ...]  # searchable output widths, ascending, the last equal to C
    kernel: int
    stride: int
    relu: bool
    max_pool: bool = False  # a 2x2 stride-2 max-pool before the conv (VGG)
    depthwise: bool = False  # groups == channels; its width is its input's (MobileNetV2)
    relu6: bool = False  # the ReLU clamps at 6, min(max(x, 0), 6) (MobileNetV2)


@dataclass(frozen=True)
class BlockSpec:
    """A residual block: convs in sequence, then ``relu(convs(x) + shortcut(x))``.

    ``projection`` is True where the *full* network needs a 1x1 conv + BN on the shortcut
    (stride 2, or input width != output width); a stride-2 shortcut pools with AvgPool(2) first
    (``SearchSpace.downsample == "avgpool"``) or strides its 1x1 conv (``"strided"``).
    A block with ``residual=False`` is its convs alone (their own BN and ReLU); one with
    ``sum_relu=False`` is ``convs(x) + shortcut(x)``, no ReLU after the sum (MobileNetV2's
    linear bottleneck).
    """

    name: str
    convs: tuple[ConvSpec, ...]
    stride: int
    projection: bool
    residual: bool = True  # False: a plain chain of convs, no shortcut and no sum (VGG)
    sum_relu: bool = True  # a ReLU after the residual sum

    @property
    def last(self) -> ConvSpec:
        return self.convs[-1]


@dataclass(frozen=True)
class StageSpec:
    name: str
    blocks: tuple[BlockSpec, ...]
    depth_choices: tuple[int, ...]  # allowed numbers of kept blocks, ascending


@dataclass(frozen=True)
class SearchSpace:
    """A searchable residual network. Build one with a constructor such as `cifar_resnet`."""

    backbone: str  # registry name, e.g. "cifar_resnet"
    depth: int
    num_classes: int
    input_size: int  # square input resolution in pixels
    in_channels: int
    stem: ConvSpec
    stages: tuple[StageSpec, ...]
    shortcut: str = "zero_pad"  # how compact identity blocks join mismatched widths
    stem_pool: bool = False  # a 3x3 stride-2 max-pool (padding 1) after the stem
    downsample: str = "avgpool"  # how a stride-2 projection shortcut reduces: see BlockSpec
    width_mult: float = 1.0  # MobileNetV2's width multiplier (the full network's widths)
    dropout: float = 0.0  # dropout probability on the pooled features, before the head
    _index: dict[str, ConvSpec] = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if self.shortcut not in SHORTCUT_MODES:
            raise ValueError(f"shortcut must be one of {SHORTCUT_MODES}, got {self.shortcut!r}")
        if self.downsample not in DOWNSAMPLE_MODES:
            raise ValueError(
                f"downsample must be one of {DOWNSAMPLE_MODES}, got {self.downsample!r}"
            )
        object.__setattr__(self, "_index", {c.name: c for c in self.convs()})

    # ---------------------------------------------------------------- constructors
    @staticmethod
    def cifar_resnet(
        depth: int = 56,
        num_classes: int = 10,
        block: str | None = None,
        shortcut: str = "zero_pad",
        width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
        width_multiple: int = 1,
    ) -> SearchSpace:
        """CIFAR ResNet (He et al. 2016): ``block="basic"`` for depth 6n+2 (20/32/56/110),
        ``"bottleneck"`` for depth 9n+2 (164). ``block=None`` picks bottleneck for 164 and 1001,
        as the ResNet papers do, basic otherwise. Stem 3->16; stage widths 16/32/64 (bottleneck
        outputs 64/128/256); stride 2 at the first block of stages 2 and 3.
        """
        kind = block or ("bottleneck" if depth in (164, 1001) else "basic")
        per_block = {"basic": 6, "bottleneck": 9}
        if kind not in per_block:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {kind!r}")
        n, rest = divmod(depth - 2, per_block[kind])
        if rest or n < 1:
            raise ValueError(
                f"a CIFAR ResNet with {kind} blocks needs depth {per_block[kind]}n+2 (n >= 1), "
                f"got {depth}"
            )

        def conv(name: str, channels: int, kernel: int, stride: int, relu: bool, last: bool):
            candidates = width_candidates(channels, width_tenths, width_multiple)
            return ConvSpec(name, channels, candidates, kernel, stride, relu)

        stem = conv("stem", 16, 3, 1, True, False)
        stages = _resnet_stages(kind, (16, 32, 64), (n, n, n), 16, conv)
        return SearchSpace("cifar_resnet", depth, num_classes, 32, 3, stem, stages, shortcut)

    @staticmethod
    def imagenet_resnet(
        depth: int = 50,
        num_classes: int = 1000,
        input_size: int = 224,
        width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
        width_multiple: int = 1,
    ) -> SearchSpace:
        """torchvision's ResNet-18/34/50/101/152 exactly: a 7x7/2 stem (64) and a 3x3/2
        max-pool; stages of 64/128/256/512 (bottleneck outputs 4x); BasicBlock (3x3, 3x3) or
        Bottleneck (1x1, 3x3, 1x1) with the stride on the 3x3 (ResNet v1.5); a 1x1 strided conv
        + BN downsample where the stride or the width changes; average pool and a linear head.

        Searchable: every conv inside a block but its last, whose output is the residual
        stream that identity shortcuts add into (kept at full width, so the compact network is
        a plain torchvision-shaped ResNet with no zero-padding); the stem too when it feeds a
        projection (bottleneck nets), not when it feeds stage 1's identity shortcuts (basic).
        Depth per stage as in `depth_candidates`.
        """
        if depth not in IMAGENET_RESNET_LAYERS:
            raise ValueError(
                f"an ImageNet ResNet has depth in {sorted(IMAGENET_RESNET_LAYERS)}, got {depth}"
            )
        if input_size < 32:
            raise ValueError(f"input_size must be >= 32 (five stride-2 steps), got {input_size}")
        kind, layers = IMAGENET_RESNET_LAYERS[depth]

        def conv(name: str, channels: int, kernel: int, stride: int, relu: bool, last: bool):
            search = not last  # a block's last conv: the residual stream, kept whole
            candidates = (
                width_candidates(channels, width_tenths, width_multiple) if search else (channels,)
            )
            return ConvSpec(name, channels, candidates, kernel, stride, relu)

        # the stem is searched where it feeds a projection, not stage 1's identity shortcuts
        stem = conv("stem", 64, 7, 2, True, last=kind == "basic")
        stages = _resnet_stages(kind, (64, 128, 256, 512), layers, 64, conv)
        return SearchSpace(
            "imagenet_resnet",
            depth,
            num_classes,
            input_size,
            3,
            stem,
            stages,
            stem_pool=True,
            downsample="strided",
        )

    @staticmethod
    def cifar_vgg(
        depth: int = 16,
        num_classes: int = 10,
        width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
        width_multiple: int = 1,
    ) -> SearchSpace:
        """The CIFAR VGG-11/13/16/19 with BatchNorm of Network Slimming and "Rethinking the
        Value of Network Pruning": 3x3 conv + BN + ReLU layers with 2x2 max-pools between the
        groups (`CIFAR_VGG_LAYERS`), then a global average pool (their AvgPool(2) on the 2x2
        map) and a single linear classifier. Every conv's width is searched; depth is not (a
        stage is one group between two pools; its depth choice is its full length)."""
        if depth not in CIFAR_VGG_LAYERS:
            raise ValueError(f"a CIFAR VGG has depth in {sorted(CIFAR_VGG_LAYERS)}, got {depth}")

        def conv(name: str, channels: int, pooled: bool) -> ConvSpec:
            candidates = width_candidates(channels, width_tenths, width_multiple)
            return ConvSpec(name, channels, candidates, 3, 1, True, pooled)

        layers = CIFAR_VGG_LAYERS[depth]
        stem = conv("stem", int(layers[0]), False)
        groups: list[list[ConvSpec]] = [[]]
        pooled = False
        for width in layers[1:]:
            if width == "M":
                pooled = True
                if groups[-1]:
                    groups.append([])
                continue
            s, b = len(groups), len(groups[-1])
            groups[-1].append(conv(f"stage{s}.block{b}.conv", int(width), pooled))
            pooled = False
        stages = tuple(
            StageSpec(
                f"stage{s + 1}",
                tuple(BlockSpec(c.name.rsplit(".", 1)[0], (c,), 1, False, False) for c in group),
                (len(group),),
            )
            for s, group in enumerate(groups)
        )
        return SearchSpace("cifar_vgg", depth, num_classes, 32, 3, stem, stages)

    @staticmethod
    def mobilenet_v2(
        num_classes: int = 1000,
        input_size: int = 224,
        width_mult: float = 1.0,
        width_tenths: tuple[int, ...] = WIDTH_RATIO_TENTHS,
        width_multiple: int = 1,
    ) -> SearchSpace:
        """torchvision's MobileNetV2 exactly (Sandler et al. 2018): a 3x3/2 stem conv
        (conv-BN-ReLU6); the inverted-residual blocks of `MOBILENET_V2_STAGES`, each a 1x1
        expansion to t x its input width (conv-BN-ReLU6; absent when t == 1), a 3x3 depthwise
        conv with the block's stride (conv-BN-ReLU6) and a linear 1x1 projection (conv-BN), its
        input added where the stride is 1 and the widths are equal (no ReLU after the sum); a
        1x1 conv-BN-ReLU6 to 1280; global average pool, dropout 0.2, linear head. Widths are
        ``width_mult`` x torchvision's, rounded by `make_divisible`, as torchvision rounds them.
        Any ``input_size`` keeps torchvision's strides (32x32 inputs end on a 1x1 map).

        Searchable: each block's expansion width (its depthwise conv takes the same width: one
        choice, not two); the stem, which is block 0's expansion (t == 1), unless that block
        adds it to its output (small multipliers: 0.25); the last 1x1 conv; the depth of every stage
        of more than one block (its first block changes width or stride and is always kept).
        Each block's projection, the residual stream, stays at full width. ``depth`` is 53, the
        network's 52 convs and linear layer: a name, not a choice.
        """
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")

        def conv(name: str, channels: int, kernel: int, stride: int, search: bool) -> ConvSpec:
            candidates = (
                width_candidates(channels, width_tenths, width_multiple) if search else (channels,)
            )
            return ConvSpec(name, channels, candidates, kernel, stride, True, relu6=True)

        in_width = make_divisible(32 * width_mult)
        first = MOBILENET_V2_STAGES[0]
        stem_in_sum = first.stride == 1 and make_divisible(first.channels * width_mult) == in_width
        stem = conv("stem", in_width, 3, 2, not stem_in_sum)
        stages = []
        for s, row in enumerate(MOBILENET_V2_STAGES):
            out = make_divisible(row.channels * width_mult)
            blocks = []
            for b in range(row.blocks):
                stride = row.stride if b == 0 else 1
                prefix = f"stage{s + 1}.block{b}"
                hidden = in_width * row.expansion
                convs = [conv(f"{prefix}.expand", hidden, 1, 1, True)] if row.expansion > 1 else []
                convs.append(
                    ConvSpec(
                        f"{prefix}.depthwise", hidden, (hidden,), 3, stride, True,
                        depthwise=True, relu6=True,
                    )
                )  # fmt: skip
                convs.append(ConvSpec(f"{prefix}.project", out, (out,), 1, 1, False))  # linear
                residual = stride == 1 and in_width == out
                blocks.append(
                    BlockSpec(prefix, tuple(convs), stride, False, residual, sum_relu=False)
                )
                in_width = out
            stages.append(StageSpec(f"stage{s + 1}", tuple(blocks), depth_candidates(row.blocks)))
        # the last 1x1 conv: a stage of one plain block, as a VGG layer is
        name = f"stage{len(stages) + 1}"
        last = conv(f"{name}.block0.conv", make_divisible(1280 * max(1.0, width_mult)), 1, 1, True)
        last_block = BlockSpec(f"{name}.block0", (last,), 1, False, residual=False)
        stages.append(StageSpec(name, (last_block,), (1,)))
        return SearchSpace(
            "mobilenet_v2",
            53,
            num_classes,
            input_size,
            3,
            stem,
            tuple(stages),
            width_mult=float(width_mult),
            dropout=0.2,
        )

    @staticmethod
    def from_name(
        backbone: str,
        depth: int,
        num_classes: int,
        block: str | None = None,
        shortcut: str = "zero_pad",
        input_size: int | None = None,
        width_multiple: int = 1,
        width_mult: float = 1.0,
    ) -> SearchSpace:
        """A space by its identifiers: those stored in found.json, or the command line's
        ``--model.backbone`` (``input_size`` None: the backbone's own, 32 for CIFAR and 224 for
        ImageNet networks; ``width_multiple``: see `width_candidates`). ``mobilenet_v2`` has
        one depth and does not read ``depth``; ``width_mult`` is its width multiplier."""
        if backbone == "mobilenet_v2":
            if block not in (None, "inverted_residual") or shortcut != "zero_pad":
                raise ValueError(
                    f"a MobileNetV2 has inverted_residual blocks and zero_pad shortcuts, got "
                    f"block {block!r}, shortcut {shortcut!r}"
                )
            return SearchSpace.mobilenet_v2(
                num_classes, input_size or 224, width_mult, width_multiple=width_multiple
            )
        if width_mult != 1.0:
            raise ValueError(f"width_mult is a mobilenet_v2 setting, not one of {backbone!r}")
        if backbone == "cifar_resnet":
            if input_size not in (None, 32):
                raise ValueError(f"a CIFAR ResNet takes 32x32 inputs, got input_size {input_size}")
            return SearchSpace.cifar_resnet(
                depth=depth,
                num_classes=num_classes,
                block=block,
                shortcut=shortcut,
                width_multiple=width_multiple,
            )
        if backbone == "imagenet_resnet":
            space = SearchSpace.imagenet_resnet(
                depth, num_classes, input_size or 224, width_multiple=width_multiple
            )
            if block not in (None, space.block_kind) or shortcut != space.shortcut:
                raise ValueError(
                    f"an ImageNet ResNet-{depth} has {space.block_kind} blocks and "
                    f"{space.shortcut} shortcuts, got block {block!r}, shortcut {shortcut!r}"
                )
            return space
        if backbone == "cifar_vgg":
            if input_size not in (None, 32) or block not in (None, "plain"):
                raise ValueError(
                    f"a CIFAR VGG takes 32x32 inputs and has plain layers, got input_size "
                    f"{input_size}, block {block!r}"
                )
            return SearchSpace.cifar_vgg(depth, num_classes, width_multiple=width_multiple)
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")

    # ---------------------------------------------------------------- queries
    def convs(self) -> list[ConvSpec]:
        """Every conv with a width of its own, in network order: the stem, then each block's
        convs (depthwise convs take their input's width and are not listed)."""
        return self.kept_convs(self.max_blocks)

    def kept_convs(self, blocks: tuple[int, ...]) -> list[ConvSpec]:
        """The convs of a network keeping ``blocks[s]`` blocks of stage s, in network order;
        depthwise convs, whose width is their input's, are not listed."""
        out = [self.stem]
        for stage, kept in zip(self.stages, blocks):
            for block in stage.blocks[:kept]:
                out.extend(c for c in block.convs if not c.depthwise)
        return out

    def conv(self, name: str) -> ConvSpec:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no conv named {name!r} in {self.describe()}") from None

    def searchable(self, conv: ConvSpec) -> bool:
        """Whether ``conv`` has a width to choose (more than one candidate)."""
        return len(conv.candidates) > 1

    def searchable_stage(self, stage: StageSpec) -> bool:
        """Whether ``stage`` has a depth to choose (more than one choice)."""
        return len(stage.depth_choices) > 1

    def stem_conv_size(self) -> int:
        """Spatial size out of the stem conv itself."""
        return conv_out_size(self.input_size, self.stem.kernel, self.stem.stride)

    def stem_out_size(self) -> int:
        """Spatial size after the stem (and its max-pool, if any): what stage 1 sees."""
        size = self.stem_conv_size()
        return conv_out_size(size, 3, 2) if self.stem_pool else size

    def shortcut_out_size(self, block: BlockSpec, in_size: int) -> int:
        """Spatial size out of ``block``'s projection shortcut for an input of ``in_size``."""
        if self.downsample == "strided":
            return conv_out_size(in_size, 1, block.stride)
        return in_size // block.stride

    @property
    def max_blocks(self) -> tuple[int, ...]:
        return tuple(len(stage.blocks) for stage in self.stages)

    @property
    def head_in(self) -> int:
        """Full width of the last stage's output (the head's input)."""
        return self.stages[-1].blocks[-1].last.channels

    @property
    def block_kind(self) -> str:
        first = self.stages[0].blocks[0]
        if any(c.depthwise for c in first.convs):
            return "inverted_residual"
        if not first.residual:
            return "plain"
        return "bottleneck" if len(first.convs) == 3 else "basic"

    def describe(self) -> str:
        size = "" if self.input_size == 32 else f", {self.input_size}x{self.input_size}"
        if self.backbone == "mobilenet_v2":
            return f"mobilenet_v2 x{self.width_mult:g} ({self.num_classes} classes{size})"
        return f"{self.backbone}-{self.depth} ({self.block_kind}, {self.num_classes} classes{size})"


def _resnet_stages(
    kind: str,
    widths: tuple[int, ...],
    layers: tuple[int, ...],
    in_width: int,
    conv: Callable[[str, int, int, int, bool, bool], ConvSpec],
) -> tuple[StageSpec, ...]:
    """Stages of basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 at 4x) blocks, ``layers[s]``
    blocks of inner width ``widths[s]``, stride 2 on the first block of every stage but the
    first (on the 3x3), a projection where the stride or the width changes. ``conv(name,
    channels, kernel, stride, relu, last)`` makes each conv (``last``: the block's last)."""
    stages = []
    for s, (mid, n) in enumerate(zip(widths, layers)):
        blocks = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            prefix = f"stage{s + 1}.block{b}"
            if kind == "basic":
                out = mid
                convs = (
                    conv(f"{prefix}.conv_a", mid, 3, stride, True, False),
                    conv(f"{prefix}.conv_b", mid, 3, 1, False, True),
                )
            else:
                out = 4 * mid
                convs = (
                    conv(f"{prefix}.conv_a", mid, 1, 1, True, False),
                    conv(f"{prefix}.conv_b", mid, 3, stride, True, False),
                    conv(f"{prefix}.conv_c", out, 1, 1, False, True),
                )
            blocks.append(BlockSpec(prefix, convs, stride, stride != 1 or in_width != out))
            in_width = out
        stages.append(StageSpec(f"stage{s + 1}", tuple(blocks), depth_candidates(n)))
    return tuple(stages)


BACKBONES = ("cifar_resnet", "imagenet_resnet", "cifar_vgg", "mobilenet_v2")
"""The backbones `SearchSpace.from_name` knows."""
