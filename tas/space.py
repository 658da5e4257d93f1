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

from dataclasses import dataclass, field

# Width ratios r in {0.3, 0.4, ..., 1.0}, as tenths so floor(C * r) is exact integer arithmetic.
WIDTH_RATIO_TENTHS: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10)

SHORTCUT_MODES = ("zero_pad", "projection")
DOWNSAMPLE_MODES = ("avgpool", "strided")


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

    # ------------------------------------------ constructors (the families: tas/spaces/)
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


BACKBONES = ("cifar_resnet", "imagenet_resnet", "cifar_vgg", "mobilenet_v2")
"""The backbones `SearchSpace.from_name` knows."""


# The constructors live with their families of networks (tas/spaces/, a file each) and are
# reached as SearchSpace.cifar_resnet(...), SearchSpace.mobilenet_v2(...), ...; they import this
# module's classes, so they are attached once those exist.
from tas.spaces import mobilenet, resnet, vgg  # noqa: E402

SearchSpace.cifar_resnet = staticmethod(resnet.cifar_resnet)
SearchSpace.imagenet_resnet = staticmethod(resnet.imagenet_resnet)
SearchSpace.cifar_vgg = staticmethod(vgg.cifar_vgg)
SearchSpace.mobilenet_v2 = staticmethod(mobilenet.mobilenet_v2)
