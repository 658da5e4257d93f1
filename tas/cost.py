"""Expected MACs of the searchable network under its width/depth distributions, and the
paper's band cost loss (and two alternatives: centred, and the band with hysteresis).

Widths are carried as distributions over channel counts (a probability vector indexed by the
count), not just their means. That makes the model the *exact* expectation of the MACs of the
network `tas.build_model` would build, zero-padded shortcuts included: a zero-padded identity
block outputs max(input width, last conv width), and the max of two independent widths has
CDF F_x * F_y. With one-hot distributions the same code returns the exact MACs of that one
network, so the cost loss's "argmax MACs" and `Arch.macs` cannot disagree.

The paper's model takes E[C_in] of a conv as E[C_out] of the conv feeding it; ours agrees with it
wherever no max is involved and is exact where one is (see tas-method.md, "Expected FLOPs"). A
depthwise conv (MobileNetV2) has its input's width, and its MACs are linear in it: k^2 H W E[C].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tas.space import SearchSpace, layer_out_size


def _mean(dist: torch.Tensor) -> torch.Tensor:
    return dist @ torch.arange(dist.shape[-1], dtype=dist.dtype, device=dist.device)


def _max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distribution of max(X, Y) for independent X ~ a, Y ~ b."""
    cdf = a.cumsum(-1) * b.cumsum(-1)
    return torch.diff(cdf, prepend=cdf.new_zeros(1))


ConvCost = Callable[[str, int, int, torch.Tensor, torch.Tensor], torch.Tensor]


def expected_macs(
    space: SearchSpace,
    width_probs: torch.Tensor,
    depth_probs: torch.Tensor,
) -> torch.Tensor:
    """E[MACs] of one image through the network drawn from the given distributions.

    width_probs: (num_convs, M) probabilities over each conv's candidates, rows in
    ``space.convs()`` order (padding columns beyond a conv's candidates must be 0).
    depth_probs: (num_stages, D) probabilities over each stage's depth choices.
    Returns a float64 scalar, differentiable in both inputs.
    """

    def conv_macs(name: str, kernel: int, size: int, cin: torch.Tensor, cout: torch.Tensor):
        return kernel**2 * size**2 * _mean(cin) * _mean(cout)

    def projection_macs(name: str, size: int, cin: torch.Tensor, cout: torch.Tensor):
        # a 1x1 conv only where the widths differ: E[cin cout] minus the equal-width terms
        counts = torch.arange(len(cin), device=cin.device)
        same = (cin * cout * counts**2).sum()
        return size**2 * (_mean(cin) * _mean(cout) - same)

    def depthwise_macs(name: str, kernel: int, size: int, width: torch.Tensor):
        return kernel**2 * size**2 * _mean(width)

    return expected_cost(
        space,
        width_probs,
        depth_probs,
        conv_macs,
        lambda w: _mean(w) * space.num_classes,
        projection_macs,
        depthwise_macs,
    )


def expected_cost(
    space: SearchSpace,
    width_probs: torch.Tensor,
    depth_probs: torch.Tensor,
    conv_cost: ConvCost,
    head_cost: Callable[[torch.Tensor], torch.Tensor],
    projection_cost: Callable[[str, int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    depthwise_cost: Callable[[str, int, int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The expectation of a cost that sums over the built network's convs, under the width and
    depth distributions (see `expected_macs` for the arguments). ``conv_cost(name, kernel,
    out_size, cin, cout)`` is the expected cost of one conv given its input and output width
    distributions (vectors over channel counts, independent); a stride-2 block's projection
    shortcut is named ``BLOCK.shortcut``. ``head_cost(width)`` prices the head's input width.
    ``projection_cost(name, out_size, cin, cout)`` prices the 1x1 projections that a
    ``shortcut="projection"`` space builds where an identity block's widths differ.
    ``depthwise_cost(name, kernel, out_size, width)`` prices a depthwise conv, whose input and
    output width are one and the same.
    """
    convs = space.convs()
    length = max(c.channels for c in convs) + 1
    probs = width_probs.double()
    dists = {}  # conv name -> (length,) distribution over its output width
    for row, conv in enumerate(convs):
        index = torch.tensor(conv.candidates, device=probs.device)
        dists[conv.name] = probs.new_zeros(length).index_add(0, index, probs[row, : len(index)])

    stem_size = space.stem_conv_size()
    const_in = probs.new_zeros(length)
    const_in[space.in_channels] = 1.0
    width = dists["stem"]
    total = conv_cost("stem", space.stem.kernel, stem_size, const_in, width)
    size = space.stem_out_size()
    depth = depth_probs.double()
    for s, stage in enumerate(space.stages):
        choices = stage.depth_choices
        pi = depth[s, : len(choices)]
        at_least = pi.flip(0).cumsum(0).flip(0)  # P(depth >= choices[k])
        # block p is kept when depth >= p + 1, i.e. depth >= the first choice above p
        keep = [
            at_least[next(k for k, d in enumerate(choices) if d > p)]
            for p in range(len(stage.blocks))
        ]
        outputs = []
        for p, block in enumerate(stage.blocks):
            block_in, block_in_size = width, size
            cost = 0.0
            for conv in block.convs:
                size = layer_out_size(size, conv)
                if conv.depthwise:  # its width is its input's: width goes on unchanged
                    if depthwise_cost is None:
                        raise ValueError("this cost does not price depthwise convs")
                    cost = cost + depthwise_cost(conv.name, conv.kernel, size, width)
                    continue
                cost = cost + conv_cost(conv.name, conv.kernel, size, width, dists[conv.name])
                width = dists[conv.name]
            if block.projection:  # the full network's projection: [AvgPool(stride)] + 1x1 conv
                shortcut = f"{block.name}.shortcut"
                out_size = space.shortcut_out_size(block, block_in_size)
                cost = cost + conv_cost(shortcut, 1, out_size, block_in, width)
            elif block.residual and space.shortcut == "projection":  # 1x1 only where widths differ
                if projection_cost is None:
                    raise ValueError(
                        "this cost does not price the projections of a shortcut='projection' "
                        "space; use shortcut='zero_pad'"
                    )
                cost = cost + projection_cost(f"{block.name}.shortcut", size, block_in, width)
            elif block.residual:  # zero-padded identity: the wider of the two tensors goes on
                width = _max(block_in, width)
            # a plain block (VGG): its last conv's width goes on
            total = total + keep[p] * cost
            outputs.append(width)
        width = sum(pi[k] * outputs[d - 1] for k, d in enumerate(choices))
    return total + head_cost(width)


def cost_loss(
    expected_macs: torch.Tensor,
    arch_macs: torch.Tensor | float,
    target_macs: float,
    tolerance_macs: float,
) -> torch.Tensor:
    """The paper's band loss: -log E if the argmax network is under R - t (grow), +log E if it is
    over R (shrink), 0 inside [R - t, R]. Only ``expected_macs`` carries a gradient."""
    arch_macs = torch.as_tensor(arch_macs, dtype=expected_macs.dtype, device=expected_macs.device)
    log_e = torch.log(expected_macs)
    sign = torch.where(arch_macs > target_macs, 1.0, 0.0) - torch.where(
        arch_macs < target_macs - tolerance_macs, 1.0, 0.0
    )
    return sign.to(log_e.dtype) * log_e


def centred_cost_loss(
    expected_macs: torch.Tensor,
    arch_macs: torch.Tensor | float,
    target_macs: float,
    tolerance_macs: float,
) -> torch.Tensor:
    """An alternative to the paper's band loss: (log E - log c)^2 with c the band's centre,
    R - t/2. Smooth, zero at the centre, pulling harder the further E[MACs] is from it, and
    never switching sign on a band crossing of the argmax network (``arch_macs`` is unused:
    the same signature as `cost_loss`). When the distributions settle, E[MACs] becomes the
    argmax network's MACs, so the argmax network ends near the centre of the band."""
    del arch_macs
    centre = target_macs - tolerance_macs / 2
    return (torch.log(expected_macs) - math.log(centre)) ** 2


class BandHysteresis(torch.nn.Module):
    """The paper's band loss with hysteresis (a Schmitt trigger on the argmax network's MACs).

    The paper's loss is zero inside [R - t, R] and +log E above R: the data's pull (wider is
    more accurate) walks the argmax network up to R, one conv steps over it, the loss pushes it
    back under, and the same conv toggles across the edge for as long as the search runs
    (docs/search_settling.md measures it). Here a push, once started, goes on until the argmax
    network reaches the band's centre R - t/2 (a shrink) or rises to it (a grow), so the network
    comes to rest with half a band of margin instead of on the edge. Outside the band it is the
    paper's loss; inside, it is the paper's loss or the push still under way.

    Its state (the sign of the push under way) is a buffer: a Lightning checkpoint keeps it, and
    every process of a data-parallel search computes the same one from the same argmax network.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("sign", torch.zeros((), dtype=torch.float64))

    def forward(
        self,
        expected_macs: torch.Tensor,
        arch_macs: torch.Tensor | float,
        target_macs: float,
        tolerance_macs: float,
    ) -> torch.Tensor:
        arch = torch.as_tensor(arch_macs, dtype=torch.float64, device=self.sign.device)
        centre = target_macs - tolerance_macs / 2
        shrink = (arch > target_macs) | ((self.sign > 0) & (arch > centre))
        grow = (arch < target_macs - tolerance_macs) | ((self.sign < 0) & (arch < centre))
        self.sign.copy_(shrink.double() - grow.double())
        return self.sign.to(expected_macs.dtype) * torch.log(expected_macs)


COST_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "band": cost_loss,
    "centred": centred_cost_loss,
}
"""The stateless cost losses, by name: ``loss(expected, argmax, target, tolerance)``."""

COSTS = (*COST_LOSSES, "hysteresis")
"""Every cost loss a search can use (``hysteresis`` keeps state: see `make_cost`)."""


def make_cost(name: str) -> Callable[..., torch.Tensor]:
    """The cost loss called ``name`` (one of `COSTS`), ready for `tas.search.arch_step`: the
    function itself, or for ``hysteresis`` a new `BandHysteresis` (keep it for the whole search:
    its state is the push under way)."""
    if name == "hysteresis":
        return BandHysteresis()
    if name not in COST_LOSSES:
        raise ValueError(f"cost must be one of {list(COSTS)}, got {name!r}")
    return COST_LOSSES[name]
