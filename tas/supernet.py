"""The searchable network: shared full-size weights, Gumbel-sampled widths mixed by channel-wise
interpolation, and a soft mixture over the depth of every stage.

One forward pass (``Supernet.forward``):
  * widths: for every conv, draw I distinct candidate widths from the Gumbel-perturbed
    distribution; run the conv once for the widest pick, normalise each pick's first c_i
    channels with that candidate's own BatchNorm, align them to the widest with CWI and mix
    them with the re-normalised weights of the picks;
  * depth: every block of a stage runs; the stage output mixes the outputs after each depth
    choice with Gumbel-softmax weights, aligned by CWI.
``forward_argmax`` runs the derived network (argmax widths and depths) on the shared weights.
A depthwise conv (MobileNetV2) has no width of its own: it runs on whatever width the mixture
before it has (`SearchDepthwise`).

Cost: a conv computes only the input channels present and the filters needed, never a
zero-padded full-width tensor. The sampled widths decide tensor shapes, so each forward moves
the (num_convs, I) pick indices to the host once; nothing else syncs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, ConvLayer
from tas.compact import CompactNet, _conv_bn, add_padded, build_model
from tas.cost import expected_macs
from tas.cwi import channel_interpolate, prescale
from tas.derive import Cost, Derived, log_prob, most_probable_within
from tas.gumbel import gumbel_softmax, sample_candidates
from tas.space import SearchSpace


class SearchConv(nn.Module):
    """[AvgPool | MaxPool] -> conv at full size whose candidate widths share its first filters ->
    one BN per candidate -> mixture of the picked widths [-> ReLU | ReLU6]."""

    def __init__(
        self,
        in_channels: int,
        candidates: Sequence[int],
        kernel: int,
        stride: int,
        relu: bool,
        pool: int = 1,
        max_pool: bool = False,
        relu6: bool = False,
    ) -> None:
        super().__init__()
        self.candidates = tuple(candidates)
        self.weight = nn.Parameter(torch.empty(self.candidates[-1], in_channels, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.candidates)
        self.stride, self.padding, self.relu, self.pool = stride, kernel // 2, relu, pool
        self.max_pool, self.relu6 = max_pool, relu6

    def forward(
        self, x: torch.Tensor, picks: Sequence[int], weights: torch.Tensor | None
    ) -> torch.Tensor:
        """x: (B, C_in, H, W) with C_in <= full input width; picks: candidate indices;
        weights: (len(picks),) mixing weights, or None for a single pick taken whole."""
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        if self.max_pool:
            x = F.max_pool2d(x, 2)
        widths = [self.candidates[i] for i in picks]
        widest = max(widths)
        y = F.conv2d(x, self.weight[:widest, : x.shape[1]], None, self.stride, self.padding)
        out = None
        for k, (i, c) in enumerate(zip(picks, widths)):
            # the mixing weight and CWI's 1/2 both ride on the BN's affine (no pass of their own)
            scale = None if weights is None else weights[k] * prescale(c, widest)
            part = _batch_norm(self.bns[i], y if c == widest else y[:, :c], scale)  # (B, c, H', W')
            part = channel_interpolate(part, widest, prescaled=scale is not None)
            out = part if out is None else out.add_(part)  # out is a fresh tensor nothing saved
        return _activate(out, self.relu, self.relu6)


class SearchDepthwise(nn.Module):
    """A depthwise conv (groups == channels) whose width is its input's: the first C filters
    run on the C channels it is given -> the BN of width C [-> ReLU | ReLU6].

    Its width is not a choice (no logits, no mixture of its own): the expansion conv feeding it
    has already mixed its picks into one tensor as wide as the widest pick. It keeps one BN per
    width that input can have (the candidates of the conv feeding it), picked by the input's
    width, as every other conv keeps one per candidate: the derived network, whose expansion
    has width c, runs this conv with the BN of width c, trained whenever c was the widest pick.
    One shared full-width BN sliced to c channels would instead pool the statistics of inputs
    of every width, and channel j of an input of width c is not the same feature at every c
    (CWI stretches the narrower pick over the widest), so its statistics would fit none of them.
    """

    def __init__(
        self, input_widths: Sequence[int], kernel: int, stride: int, relu: bool, relu6: bool
    ) -> None:
        super().__init__()
        self.candidates = tuple(input_widths)  # the widths of its BNs, ascending
        self.weight = nn.Parameter(torch.empty(self.candidates[-1], 1, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.candidates)
        self._bn_of = {c: i for i, c in enumerate(self.candidates)}
        self.stride, self.padding, self.relu, self.relu6 = stride, kernel // 2, relu, relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), C one of the input widths -> (B, C, H', W')."""
        c = x.shape[1]
        if c not in self._bn_of:
            raise ValueError(f"a depthwise conv built for widths {self.candidates} was given {c}")
        y = F.conv2d(x, self.weight[:c], None, self.stride, self.padding, groups=c)
        return _activate(self.bns[self._bn_of[c]](y), self.relu, self.relu6)


def _entropies(probs: torch.Tensor) -> torch.Tensor:
    """(rows, K) distributions -> (rows,) entropies in nats (a probability of 0 adds 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def _activate(x: torch.Tensor, relu: bool, relu6: bool) -> torch.Tensor:
    if not relu:
        return x
    return F.relu6(x, inplace=True) if relu6 else F.relu(x, inplace=True)


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``bn(x) * scale`` with the scale folded into the affine parameters: the same numbers
    for one pass over the activation less (the mixing weight is a scalar)."""
    if scale is None:
        return bn(x)
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.training else 0.0
    use_batch = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean,
        bn.running_var,
        bn.weight * scale,
        bn.bias * scale,
        use_batch,
        momentum,
        bn.eps,
    )


class SearchBlock(nn.Module):
    """``relu(convs(x) + shortcut(x))``; the shortcut conv (where the full network has one)
    reuses the picks of the block's last conv, and an identity shortcut is zero-padded. With
    ``residual=False``, ``convs(x)`` alone; with ``sum_relu=False``, no ReLU after the sum."""

    def __init__(
        self,
        convs: list[SearchConv | SearchDepthwise],
        rows: list[int | None],
        shortcut: SearchConv | None,
        residual: bool = True,
        sum_relu: bool = True,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.rows = rows  # rows of the width logits, one per conv (None: a depthwise conv)
        self.shortcut = shortcut
        self.residual = residual
        self.sum_relu = sum_relu

    def forward(self, x: torch.Tensor, choice: _Choice) -> torch.Tensor:
        out = x
        for conv, row in zip(self.convs, self.rows):
            out = conv(out) if row is None else conv(out, *choice.width(row))
        if not self.residual:  # a plain chain (VGG)
            return out
        skip = x if self.shortcut is None else self.shortcut(x, *choice.width(self.rows[-1]))
        out = add_padded(out, skip)
        return F.relu(out) if self.sum_relu else out


@dataclass
class _Choice:
    """What one forward pass runs: picked width candidates and depth choices, with weights."""

    width_picks: list[list[int]]  # per conv row: candidate indices
    width_weights: Sequence[torch.Tensor | None]  # per conv row: (I,) weights or None
    depth_picks: list[list[int]]  # per stage: indices into its depth choices
    depth_weights: Sequence[torch.Tensor | None]  # per stage: (D,) weights or None

    def width(self, row: int) -> tuple[list[int], torch.Tensor | None]:
        return self.width_picks[row], self.width_weights[row]


class Supernet(nn.Module):
    """The TAS search network over a `SearchSpace`.

    Args:
        space: the search space.
        num_samples: I, the number of distinct widths drawn per conv in each forward (paper: 2).
        tau: initial Gumbel temperature (see `set_tau`).
    """

    def __init__(self, space: SearchSpace, num_samples: int = 2, tau: float = 5.0) -> None:
        super().__init__()
        self.space = space
        convs = space.convs()
        searched = [r for r, c in enumerate(convs) if space.searchable(c)]
        fewest = min((len(convs[r].candidates) for r in searched), default=1)
        if not 1 <= num_samples <= fewest:
            raise ValueError(f"num_samples must be in 1..{fewest} (fewest candidates of a conv)")
        # rows of the width logits that are drawn from; a conv with one candidate is fixed
        self._searched = searched
        self.register_buffer("searched_rows", torch.tensor(searched, dtype=torch.long), False)
        self.num_samples = num_samples
        self.tau = tau
        # Source of the Gumbel noise and the width draws; None: the global generator. A run
        # that must resume exactly gives the supernet its own, reseeded per epoch.
        self.generator: torch.Generator | None = None
        rows = {c.name: r for r, c in enumerate(convs)}

        width = max(len(c.candidates) for c in convs)
        self.width_logits = nn.Parameter(torch.randn(len(convs), width) * 0.01)
        mask = torch.zeros(len(convs), width, dtype=torch.bool)
        for r, c in enumerate(convs):
            mask[r, : len(c.candidates)] = True
        self.register_buffer("width_mask", mask, persistent=False)

        depth = max(len(s.depth_choices) for s in space.stages)
        self.depth_logits = nn.Parameter(torch.randn(len(space.stages), depth) * 0.01)
        mask = torch.zeros(len(space.stages), depth, dtype=torch.bool)
        for s, stage in enumerate(space.stages):
            mask[s, : len(stage.depth_choices)] = True
        self.register_buffer("depth_mask", mask, persistent=False)
        stages = [s for s, stage in enumerate(space.stages) if space.searchable_stage(stage)]
        self.register_buffer("searched_stages", torch.tensor(stages, dtype=torch.long), False)

        stem = space.stem
        self.stem = SearchConv(
            space.in_channels, stem.candidates, stem.kernel, stem.stride, stem.relu,
            relu6=stem.relu6,
        )  # fmt: skip
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if space.stem_pool else nn.Identity()
        in_width, in_widths = stem.channels, stem.candidates
        self.stages = nn.ModuleList()
        for stage in space.stages:
            blocks = nn.ModuleList()
            for block in stage.blocks:
                convs_, prev, widths = [], in_width, in_widths
                for c in block.convs:
                    if c.depthwise:  # its width follows the widths its input can have
                        convs_.append(SearchDepthwise(widths, c.kernel, c.stride, c.relu, c.relu6))
                        continue
                    convs_.append(
                        SearchConv(
                            prev, c.candidates, c.kernel, c.stride, c.relu, max_pool=c.max_pool,
                            relu6=c.relu6,
                        )
                    )  # fmt: skip
                    prev, widths = c.channels, c.candidates
                shortcut = None
                if block.projection and space.downsample == "strided":
                    shortcut = SearchConv(in_width, block.last.candidates, 1, block.stride, False)
                elif block.projection:
                    shortcut = SearchConv(
                        in_width, block.last.candidates, 1, 1, False, pool=block.stride
                    )
                rows_ = [None if c.depthwise else rows[c.name] for c in block.convs]
                blocks.append(SearchBlock(convs_, rows_, shortcut, block.residual, block.sum_relu))
                in_width, in_widths = block.last.channels, block.last.candidates
            self.stages.append(blocks)
        self.head = nn.Linear(space.head_in, space.num_classes)

    # ------------------------------------------------------------ parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """The width and depth logits: what the architecture optimiser trains."""
        return [self.width_logits, self.depth_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the architecture logits."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_tau(self, tau: float) -> None:
        if not tau > 0:
            raise ValueError(f"Gumbel temperature must be positive, got {tau}")
        self.tau = float(tau)

    # ------------------------------------------------------------ distributions
    def width_probs(self) -> torch.Tensor:
        """(num_convs, M) softmax of the width logits (0 beyond a conv's candidates)."""
        return self.width_logits.masked_fill(~self.width_mask, float("-inf")).softmax(-1)

    def depth_probs(self) -> torch.Tensor:
        """(num_stages, D) softmax of the depth logits (0 beyond a stage's choices)."""
        return self.depth_logits.masked_fill(~self.depth_mask, float("-inf")).softmax(-1)

    def expected_macs(self) -> torch.Tensor:
        """Differentiable E[MACs] (float64 scalar) of the network drawn from the plain softmax
        distributions: the cost the architecture step minimises."""
        return expected_macs(self.space, self.width_probs(), self.depth_probs())

    def argmax_macs(self) -> torch.Tensor:
        """Exact MACs of the derived (argmax) network, as a tensor, with no host sync."""
        with torch.no_grad():
            w = F.one_hot(self.width_probs().argmax(-1), self.width_mask.shape[1])
            d = F.one_hot(self.depth_probs().argmax(-1), self.depth_mask.shape[1])
            return expected_macs(self.space, w, d)

    def derive(self) -> Arch:
        """The compact architecture: the argmax width of every conv and depth of every stage."""
        picks = self.width_probs().argmax(-1).tolist()
        depths = self.depth_probs().argmax(-1).tolist()
        blocks = tuple(stage.depth_choices[d] for stage, d in zip(self.space.stages, depths))
        rows = {c.name: r for r, c in enumerate(self.space.convs())}
        widths = {c.name: c.candidates[picks[rows[c.name]]] for c in self.space.kept_convs(blocks)}
        return Arch(self.space, blocks, widths)

    def derive_within(
        self, low: float, high: float, cost: Cost | None = None, max_nodes: int = 50_000
    ) -> Derived | None:
        """The most probable network whose cost (MACs by default) lies in [low, high] under the
        current distributions: the argmax network when it does (see `tas.derive`)."""
        with torch.no_grad():
            return most_probable_within(
                self.space, self.width_probs().log(), self.depth_probs().log(), low, high, cost,
                max_nodes,
            )  # fmt: skip

    def log_prob(self, arch: Arch) -> float:
        """log P of ``arch`` under the current distributions, in nats."""
        with torch.no_grad():
            return log_prob(arch, self.width_probs().log(), self.depth_probs().log())

    def entropy(self) -> torch.Tensor:
        """Differentiable sum, in nats, of the entropies of every width and depth distribution
        (plain softmax): 0 once every distribution has chosen. Minimising it pushes each
        distribution toward its current favourite, which breaks the near-ties a search leaves."""
        return _entropies(self.width_probs()).sum() + _entropies(self.depth_probs()).sum()

    def distribution_stats(self) -> dict[str, float]:
        """How settled the distributions are: mean and minimum of the largest probability of
        each width / depth distribution (1 when it has chosen; 1/candidates when uniform), and
        their mean entropy in nats. Plain softmax, no Gumbel noise."""
        out = {}
        with torch.no_grad():
            # fixed convs and stages (one candidate) have nothing to settle
            width = self.width_probs()[self.searched_rows]
            depth = self.depth_probs()[self.searched_stages]
            for kind, probs in (("width", width), ("depth", depth)):
                if probs.numel() == 0:  # nothing of this kind is searched (VGG depth)
                    out.update({f"{kind}_maxprob": 1.0, f"{kind}_maxprob_min": 1.0})
                    out[f"{kind}_entropy"] = 0.0
                    continue
                top = probs.max(-1).values
                entropy = _entropies(probs)
                out[f"{kind}_maxprob"] = float(top.mean())
                out[f"{kind}_maxprob_min"] = float(top.min())
                out[f"{kind}_entropy"] = float(entropy.mean())
        return out

    def argmax_indices(self) -> tuple[list[int], list[int]]:
        """The argmax candidate of every conv and of every stage (what `derive` reads)."""
        return self.width_probs().argmax(-1).tolist(), self.depth_probs().argmax(-1).tolist()

    # ------------------------------------------------------------ warm start
    @torch.no_grad()
    def load_full_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Initialise every shared weight from the trained full network: ``state_dict`` is that
        of ``tas.build_model(tas.Arch.full(space))`` (a teacher). Each conv takes the full conv's
        weight; the BatchNorm of a candidate width c takes the full BN's first c channels
        (affine and running statistics), matching the first-c-filters weight sharing; the head
        is copied. The architecture logits are left alone.

        Raises ValueError, in one line, when the state dict is not the full network of this
        space (another depth, class count or shortcut mode).
        """
        full = build_model(Arch.full(self.space))
        own = full.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
        if missing or unexpected or shapes:
            what = []
            if shapes:
                k = shapes[0]
                what.append(
                    f"{len(shapes)} tensors of another shape (e.g. {k}: "
                    f"{tuple(state_dict[k].shape)}, expected {tuple(own[k].shape)})"
                )
            if missing:
                what.append(f"{len(missing)} missing (e.g. {missing[0]})")
            if unexpected:
                what.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
            raise ValueError(
                f"the weights are not those of the full {self.space.describe()}: " + "; ".join(what)
            )
        full.load_state_dict(state_dict)
        pairs = [(self.stem, full.stem)]
        for stage, full_stage in zip(self.stages, full.stages):
            for block, full_block in zip(stage, full_stage):
                pairs += list(zip(block.convs, full_block.main))
                if block.shortcut is not None:
                    pairs.append((block.shortcut, full_block.shortcut))
        for conv, source in pairs:
            weight = next(m for m in source if isinstance(m, nn.Conv2d)).weight
            bn = next(m for m in source if isinstance(m, nn.BatchNorm2d))
            conv.weight.copy_(weight)
            for cand, width in zip(conv.bns, conv.candidates):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(cand, name).copy_(getattr(bn, name)[:width])
                cand.num_batches_tracked.copy_(bn.num_batches_tracked)
        self.head.load_state_dict(full.head.state_dict())

    @torch.no_grad()
    def compact(self, arch: Arch) -> CompactNet:
        """``arch`` (a network of this space) as a plain network holding this supernet's shared
        weights at its widths: each conv its first filters over the input channels its producer
        kept, the BatchNorm of its candidate width (affine and running statistics), the head's
        first columns. The same function as `forward_arch` (exactly so in eval mode): the weights
        the search trained for the network it found, which fine-tuning can start from instead of
        the teacher's.

        Raises ValueError when a conv's width is not one of its candidates.
        """
        if arch.space != self.space:
            raise ValueError(f"the network is not one of {self.space.describe()}")
        model = build_model(arch)
        plan = arch.plan()

        def copy(dst: nn.Sequential, src: SearchConv | SearchDepthwise, layer: ConvLayer) -> None:
            if layer.out_channels not in src.candidates:
                raise ValueError(
                    f"{layer.name} is {layer.out_channels} wide, not one of its candidates "
                    f"{list(src.candidates)}"
                )
            conv, bn = _conv_bn(dst)
            conv.weight.copy_(src.weight[: layer.out_channels, : conv.weight.shape[1]])
            bn.load_state_dict(src.bns[src.candidates.index(layer.out_channels)].state_dict())

        copy(model.stem, self.stem, plan.stem)
        for stage_plan, stage, search_stage in zip(plan.stages, model.stages, self.stages):
            for block_plan, block, search_block in zip(stage_plan, stage, search_stage):
                for layer, dst, src in zip(block_plan.convs, block.main, search_block.convs):
                    copy(dst, src, layer)
                if block_plan.shortcut is not None:
                    copy(block.shortcut, search_block.shortcut, block_plan.shortcut)
        model.head.weight.copy_(self.head.weight[:, : plan.head_in])
        model.head.bias.copy_(self.head.bias)
        return model

    # ------------------------------------------------------------ forward passes
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, classes) logits with freshly sampled widths and depth mixtures."""
        return self._run(x, self._sample())

    def forward_argmax(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the derived network run on the shared weights (no sampling)."""
        widths, depths = self.argmax_indices()
        return self._forward_picks(x, widths, depths)

    def forward_arch(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """Logits of ``arch`` (a network of this space) run on the shared weights."""
        if arch.space != self.space:
            raise ValueError(f"the network is not one of {self.space.describe()}")
        widths, _ = self.argmax_indices()  # for the convs of removed blocks, which do not run
        for row, conv in enumerate(self.space.convs()):
            if conv.name not in arch.widths:
                continue
            if arch.widths[conv.name] not in conv.candidates:
                raise ValueError(
                    f"{conv.name} is {arch.widths[conv.name]} wide, not one of its candidates "
                    f"{list(conv.candidates)}"
                )
            widths[row] = conv.candidates.index(arch.widths[conv.name])
        depths = [s.depth_choices.index(b) for s, b in zip(self.space.stages, arch.blocks)]
        return self._forward_picks(x, widths, depths)

    def _forward_picks(self, x: torch.Tensor, widths: list[int], depths: list[int]) -> torch.Tensor:
        return self._run(
            x,
            _Choice(
                [[i] for i in widths],
                [None] * len(widths),
                [[d] for d in depths],
                [None] * len(depths),
            ),
        )

    def _sample(self) -> _Choice:
        rows = self.searched_rows
        index, weights = sample_candidates(
            self.width_logits[rows], self.tau, self.num_samples, self.width_mask[rows],
            self.generator,
        )  # fmt: skip
        q = gumbel_softmax(self.depth_logits, self.tau, self.depth_mask, self.generator)  # (S, D)
        depth_picks = [list(range(len(s.depth_choices))) for s in self.space.stages]
        # index.tolist(): the single host sync, since the picked widths decide tensor shapes
        picks: list[list[int]] = [[0]] * len(self.width_logits)  # a fixed conv: its one width
        mix: list[torch.Tensor | None] = [None] * len(self.width_logits)
        for row, pick, w in zip(self._searched, index.tolist(), weights.unbind(0)):
            picks[row], mix[row] = pick, w
        return _Choice(picks, mix, depth_picks, q.unbind(0))

    def _run(self, x: torch.Tensor, choice: _Choice) -> torch.Tensor:
        x = self.stem_pool(self.stem(x, *choice.width(0)))
        for s, (blocks, spec) in enumerate(zip(self.stages, self.space.stages)):
            picks = choice.depth_picks[s]
            depths = [spec.depth_choices[k] for k in picks]
            outputs = []
            for p in range(max(depths)):
                x = blocks[p](x, choice)
                if p + 1 in depths:
                    outputs.append(x)
            x = self._mix_depths(outputs, choice.depth_weights[s], picks)
        x = x.mean(dim=(2, 3))  # (B, C)
        if self.space.dropout:
            x = F.dropout(x, self.space.dropout, self.training)
        return F.linear(x, self.head.weight[:, : x.shape[1]], self.head.bias)

    @staticmethod
    def _mix_depths(
        outputs: list[torch.Tensor], weights: torch.Tensor | None, picks: list[int]
    ) -> torch.Tensor:
        if weights is None:
            return outputs[0]
        widest = max(h.shape[1] for h in outputs)
        mixed = None
        for h, k in zip(outputs, picks):
            scale = weights[k] * prescale(h.shape[1], widest)
            if h.shape[1] < widest:  # scale the narrower tensor, before CWI widens it
                part = channel_interpolate(h * scale, widest, prescaled=True)
            else:
                part = h * scale
            mixed = part if mixed is None else mixed.add_(part)
        return mixed

    def extra_repr(self) -> str:
        return f"space={self.space.describe()}, num_samples={self.num_samples}, tau={self.tau:.3g}"


@contextlib.contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Run ``net``'s BatchNorms on batch statistics without touching their running statistics.

    The per-candidate running statistics of a supernet are gathered while widths are mixed, so
    they describe the derived network poorly; scoring the derived network with the statistics
    of each batch (batches of 100+ images) is the usual remedy for weight-sharing evaluation.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in bns]
    for m in bns:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (training, momentum) in zip(bns, saved):
            m.train(training)
            m.momentum = momentum
