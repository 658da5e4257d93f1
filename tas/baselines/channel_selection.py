"""ThiNet (Luo, Wu & Lin, ICCV 2017) and LASSO channel pruning (He, Zhang & Sun, ICCV 2017):
a conv keeps the channels from which the *next* layer's output can best be rebuilt, and that
layer's weights are then refitted on them by least squares.

    arch, keep, pruned = thinet_prune(teacher, 0.5, batches)   # batches: [(x, y), ...] images
    arch, keep, pruned = lasso_prune(teacher, 0.5, batches)

Which convs: those `prunable_convs` names (inside residual blocks; every conv of a plain chain).
A conv's *consumers* are the layers reading its output (after its BN and ReLU): the next conv of
its residual block; in a plain chain (VGG) the next conv, a 2x2 max-pool between being
per-channel, or the linear head after the last conv (its input is the pooled feature); the stem
of a bottleneck ResNet feeds block 0's first conv *and* its projection shortcut, both consumers,
both rebuilt. Removing filter j of a conv removes input channel j of each of its consumers.

Samples. One pass of the full network over the caller's images (its eval-mode BN); at
min(10, H*W) distinct output positions per image (``samples_per_image``, drawn by a seeded
``torch.Generator``) each consumer's input patch p (C_in * k * k values, padding included) and
output y (all its output channels, before its BN) are summed into second moments
A = sum p p^T, B = sum p y^T and E = sum y^2 per output channel (float64: (C_in k^2)^2 +
C_in k^2 * C_out values a consumer, 3 MB for a 64-channel 3x3 conv; 1.7 GB at the peak for
VGG-11). Everything below is a function of them and the consumer's weights. Channel j's
*contribution* z_j to a sampled output is its slice of the weights times its slice of the
patch; y is the sum over channels. The channel Gram G_ij = sum <z_i, z_j> and
b_j = sum <z_j, y>, each consumer's divided by its E, so that every consumer's output weighs 1
and layers compare on relative error. Least squares needs well more samples than unknowns
(C_kept * k * k per filter): with 640 samples for 288 unknowns the full refit was worse than
none on held-out images (tests/test_channel_selection.py).

* ThiNet: greedily *remove* the channel that least increases |sum of the removed z|^2 (the
  paper's objective, over every output channel at a position instead of one sampled channel),
  which gives a removal order; each consumer's input weights of the kept channels are then
  scaled by the least-squares w minimising |y - sum_kept w_j z_j|^2 (ThiNet's "w" step).
* LASSO: beta = argmin 1/2 |y - sum_j beta_j z_j|^2 + lambda |beta|_1 by FISTA (bounded
  iterations), for 100 values of lambda from lambda_max = max |b| (all beta zero) down to
  1e-4 lambda_max, solved side by side; a channel ranks by the largest lambda at which it is
  still non-zero, then by |beta_j| |z_j| there. Keeping the first k is raising lambda until at
  most k channels are non-zero, topped up by the next to leave when one step of lambda drops
  several. Each consumer's whole weight tensor is then refitted on the kept channels by least
  squares (He et al.'s second step).

Solves add a ridge of 1e-4 x the mean diagonal: dead (always zero) channels and fewer samples
than unknowns would leave them singular.

Widths (both methods): a uniform keep fraction f over the pruned convs (width floor(C f), at
least 1), the largest whose network fits ``macs_ratio`` x full MACs (bisection over the
fractions k / C), as both papers prune every layer by one ratio; then, while one still fits,
one channel at a time goes back to the conv whose next channel lowers its relative error most
per MAC it adds, which lands within one channel's MACs of the budget (one ratio alone cannot:
see tas/baselines/). A conv's error when it keeps the first k channels of its order is the
consumers' relative error after the least-squares scaling of those k.

Every consumer is rebuilt against the *full* network's inputs and outputs, all sampled in one
pass (no re-sampling of the pruned network between layers; in a bottleneck block conv_b is
refitted on conv_a's kept channels as the full network computes them).

Measured (ResNet-20 of runs/teacher20_4ep, 77.3% top-1 on 1,000 held-out images of the search
split; 1,000 images of the weights half; ratio 0.5; one thread of a busy 2-core machine):
ThiNet 12.2 s, LASSO 10.4 s, of which the forward pass is about 7.5 s. Top-1 of the pruned
network before any fine-tuning: L1-norm 15.6%, ThiNet 36.9% (20.8% without its scaling),
LASSO 67.1% (28.5% without its refit); mean held-out relative error of the consumers' outputs
0.220 -> 0.182 (ThiNet), 0.232 -> 0.069 (LASSO). ResNet-56 (random weights): 29 s and 31 s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import conv_part, largest_within, model_space, named_convs, prunable_convs
from tas.compact import CompactNet, build_model
from tas.space import SearchSpace

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
Keep = dict[str, torch.Tensor]

RIDGE = 1e-4  # x the mean diagonal of a system: solvable with dead channels or few samples
LASSO_LAMBDAS = 100  # values of lambda, geometric from lambda_max down 4 decades
LASSO_ITERS = 500  # FISTA iterations at most (all lambdas at once)


# ---------------------------------------------------------------------------- who reads what
def consumers(space: SearchSpace) -> dict[str, list[str]]:
    """For every conv `prunable_convs` names, the layers that read its output, in network order:
    conv names, ``BLOCK.shortcut`` for a projection shortcut, ``head`` for the classifier."""
    blocks = [b for stage in space.stages for b in stage.blocks]

    def entry(i: int) -> list[str]:  # the layers that read block i's input
        if i == len(blocks):
            return ["head"]
        block = blocks[i]
        shortcut = [f"{block.name}.shortcut"] if block.residual and block.projection else []
        return [block.convs[0].name, *shortcut]

    readers = {"stem": entry(0)}
    for i, block in enumerate(blocks):
        for j, conv in enumerate(block.convs):
            readers[conv.name] = (
                [block.convs[j + 1].name] if j + 1 < len(block.convs) else entry(i + 1)
            )
    return {name: readers[name] for name in prunable_convs(space)}


def _layers(model: CompactNet, arch: Arch) -> dict[str, nn.Conv2d | nn.Linear]:
    """The weight layer of every conv, projection shortcut and the head of a built network."""
    out: dict[str, nn.Conv2d | nn.Linear] = {
        name: conv_part(module, nn.Conv2d) for name, module in named_convs(model, arch).items()
    }
    for stage_spec, stage in zip(arch.space.stages, model.stages):
        for spec, block in zip(stage_spec.blocks, stage):
            if block.shortcut is not None:
                out[f"{spec.name}.shortcut"] = conv_part(block.shortcut, nn.Conv2d)
    out["head"] = model.head
    return out


# ---------------------------------------------------------------------------- samples
@dataclass
class LayerStats:
    """Second moments of one consumer's sampled input patches p and outputs y."""

    inputs: torch.Tensor  # sum p p^T, (D, D), D = C_in * taps, channel-major
    cross: torch.Tensor  # sum p y^T, (D, C_out)
    energy: torch.Tensor  # sum y^2 per output channel, (C_out,)
    samples: int  # sampled positions, all images together
    taps: int  # values per input channel in a patch: k * k (1 for the head)


def _sample(
    layer: nn.Conv2d | nn.Linear,
    x: torch.Tensor,
    out: torch.Tensor,
    per_image: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input patches (N, C_in * k * k) and outputs without bias (N, C_out) of ``layer`` at
    min(per_image, H*W) distinct random output positions of every image (all for the head)."""
    if isinstance(layer, nn.Linear):
        p, y = x, out
    else:
        k, s, pad = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        batch, _, h, w = out.shape
        n = min(per_image, h * w)
        pos = torch.rand(batch, h * w, generator=generator).argsort(dim=1)[:, :n]
        pos = pos.flatten().to(x.device)
        img = torch.arange(batch, device=x.device).repeat_interleave(n)
        row, col = pos // w, pos % w
        y = out[img, :, row, col]  # (N, C_out)
        taps = torch.arange(k, device=x.device)
        rows = (row * s)[:, None, None] + taps[None, :, None]  # (N, k, 1)
        cols = (col * s)[:, None, None] + taps[None, None, :]  # (N, 1, k)
        patch = F.pad(x, (pad, pad, pad, pad))[img[:, None, None], :, rows, cols]  # (N, k, k, C)
        p = patch.permute(0, 3, 1, 2).flatten(1)  # (N, C * k * k), as the weight flattens
    if layer.bias is not None:
        y = y - layer.bias
    return p, y


@torch.no_grad()
def sample_stats(
    model: CompactNet, batches: Batches, samples_per_image: int = 10, seed: int = 0
) -> dict[str, LayerStats]:
    """`LayerStats` of every consumer (see `consumers`) of the full ``model``, over the images
    of ``batches``, by consumer name."""
    if samples_per_image < 1:
        raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
    if not batches:
        raise ValueError("channel selection needs images: batches is empty")
    space = model_space(model)
    layers = _layers(model, Arch.full(space))
    names = list(dict.fromkeys(c for cs in consumers(space).values() for c in cs))
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, LayerStats] = {}

    def hook(name: str) -> Callable:
        def record(layer: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            p, y = _sample(layer, inputs[0], out, samples_per_image, generator)
            p, y = p.double(), y.double()
            taps = layer.weight[0, 0].numel()
            add = LayerStats(p.T @ p, p.T @ y, y.pow(2).sum(dim=0), len(y), taps)
            if name not in stats:
                stats[name] = add
                return
            s = stats[name]
            s.inputs += add.inputs
            s.cross += add.cross
            s.energy += add.energy
            s.samples += add.samples

        return record

    _run_hooked(model, batches, [layers[n].register_forward_hook(hook(n)) for n in names])
    return stats


def _run_hooked(model: nn.Module, batches: Batches, handles: list) -> None:
    """Run ``model`` in eval mode over ``batches`` for its forward hooks, then remove them."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for x, _ in batches:
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


# ---------------------------------------------------------------------------- per-conv algebra
def _rows(stats: LayerStats, rows: torch.Tensor | None) -> torch.Tensor:
    return torch.arange(len(stats.energy)) if rows is None else rows


def channel_gram(
    stats: LayerStats, weight: torch.Tensor, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, b)`` over the consumer's input channels, divided by the energy of its output:
    G_ij = sum <z_i, z_j>, b_j = sum <z_j, y>, for the output channels ``rows`` (all by default)
    of a consumer with ``weight`` (C_out, C_in, k, k) or (C_out, C_in)."""
    rows = _rows(stats, rows)
    w = weight.detach().to(stats.inputs).flatten(1)[rows]  # (R, D)
    c, t = weight.shape[1], stats.taps
    # G_ij = sum_ab A[(i,a),(j,b)] * sum_o w[o,(i,a)] w[o,(j,b)]
    gram = (stats.inputs * (w.T @ w)).reshape(c, t, c, t).sum(dim=(1, 3))
    b = (w.T * stats.cross[:, rows]).reshape(c, t, -1).sum(dim=(1, 2))
    energy = stats.energy[rows].sum().clamp_min(torch.finfo(gram.dtype).tiny)
    return gram / energy, b / energy


def _solve(a: torch.Tensor, rhs: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """(a + ridge * mean(diag a) * I)^-1 rhs, for a symmetric positive semi-definite ``a``."""
    reg = (ridge * a.diagonal().mean()).clamp_min(torch.finfo(a.dtype).tiny)
    return torch.linalg.solve(a + reg * torch.eye(len(a), dtype=a.dtype, device=a.device), rhs)


def thinet_order(gram: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy removal: each step removes the channel that least increases
    |sum of the removed contributions|^2 = 1^T G_TT 1 over the removed set T. Returns the
    channels in the reverse order, most important (the last left) first."""
    c = len(gram)
    removed = torch.zeros(c, dtype=torch.bool, device=gram.device)
    with_removed = torch.zeros(c, dtype=gram.dtype, device=gram.device)  # sum_{j in T} G_ij
    order = []
    for _ in range(c - 1):
        # adding i to T adds G_ii + 2 sum_{j in T} G_ij
        increase = (gram.diagonal() + 2 * with_removed).masked_fill(removed, float("inf"))
        i = int(increase.argmin())
        removed[i] = True
        with_removed += gram[:, i]
        order.append(i)
    order.append(int((~removed).nonzero()))
    return torch.tensor(order[::-1], device=gram.device)


def lasso_path(
    gram: torch.Tensor, b: torch.Tensor, lambdas: int = LASSO_LAMBDAS, iters: int = LASSO_ITERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda (L,), beta (C, L))``: argmin 1/2 beta^T G beta - b^T beta + lambda |beta|_1
    (= 1/2 |y - sum beta_j z_j|^2 + lambda |beta|_1 up to a constant) by FISTA, all lambdas
    side by side, at most ``iters`` iterations; lambda ascending from 1e-4 lambda_max."""
    lam = b.abs().max() * torch.logspace(-4, 0, lambdas, dtype=gram.dtype, device=gram.device)
    step = 1 / torch.linalg.eigvalsh(gram)[-1].clamp_min(torch.finfo(gram.dtype).tiny)
    beta = torch.zeros(len(b), lambdas, dtype=gram.dtype, device=gram.device)
    z, t = beta, 1.0
    for _ in range(iters):
        moved = z - step * (gram @ z - b[:, None])
        new = moved.sign() * (moved.abs() - step * lam).clamp_min(0)  # soft threshold
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = new + (t - 1) / t_next * (new - beta)
        change = float((new - beta).abs().max())
        beta, t = new, t_next
        if change <= 1e-9 * (1 + float(beta.abs().max())):
            break
    return lam, beta


def lasso_order(
    gram: torch.Tensor, b: torch.Tensor, lambdas: int = LASSO_LAMBDAS, iters: int = LASSO_ITERS
) -> torch.Tensor:
    """Channels by the largest lambda of `lasso_path` at which their beta is non-zero, then by
    |beta_j| * sqrt(G_jj) (the size of beta_j z_j) there, then by index: the first k are those
    kept when lambda rises until at most k are non-zero (topped up in this order)."""
    _, beta = lasso_path(gram, b, lambdas, iters)
    steps = torch.arange(lambdas, device=beta.device)
    last = torch.where(beta != 0, steps, -1).max(dim=1).values  # -1: zero at every lambda
    at_last = beta.gather(1, last.clamp_min(0)[:, None]).squeeze(1)
    size = torch.where(last >= 0, at_last.abs() * gram.diagonal().clamp_min(0).sqrt(), 0)
    by_size = size.argsort(descending=True, stable=True)
    return by_size[last[by_size].argsort(descending=True, stable=True)]


def error_ladder(
    gram: torch.Tensor, b: torch.Tensor, order: torch.Tensor, total: float
) -> torch.Tensor:
    """Relative error (total - b_S^T G_SS^-1 b_S) / total of keeping S = the first k channels
    of ``order``, least-squares scaled, for k = 1..C: one Cholesky row per k, O(C^3) in all.
    ``total``: the summed normalised energy of the consumers (their number)."""
    c = len(order)
    reg = (RIDGE * gram.diagonal().mean()).clamp_min(torch.finfo(gram.dtype).tiny)
    chol = torch.zeros(c, c, dtype=gram.dtype, device=gram.device)
    coef = torch.zeros(c, dtype=gram.dtype, device=gram.device)  # chol^-1 b_S
    errors = torch.empty(c, dtype=gram.dtype, device=gram.device)
    explained = 0.0
    for k in range(c):
        j = order[k]
        col = gram[order[:k], j]
        row = torch.linalg.solve_triangular(chol[:k, :k], col[:, None], upper=False).squeeze(1)
        diag = (gram[j, j] + reg - row @ row).clamp_min(reg).sqrt()
        chol[k, :k], chol[k, k] = row, diag
        coef[k] = (b[j] - row @ coef[:k]) / diag
        explained += float(coef[k] ** 2)
        errors[k] = (total - explained) / total
    return errors.clamp_min(0)


# ---------------------------------------------------------------------------- the widths
def allocate(
    space: SearchSpace, ladders: dict[str, torch.Tensor], macs_ratio: float, method: str
) -> Arch:
    """The widths of the convs in ``ladders`` (``ladders[n][k-1]``: conv n's relative error
    keeping k channels): the largest uniform keep fraction that fits, then the fill by error
    per MAC (module docstring)."""
    full = Arch.full(space)
    budget = macs_ratio * full.macs
    channels = {name: full.widths[name] for name in ladders}

    def uniform(f: Fraction) -> Arch:
        widths = {**full.widths, **{n: max(1, int(c * f)) for n, c in channels.items()}}
        return Arch(space, full.blocks, widths, {"keep_fraction": float(f)})

    fractions = sorted({Fraction(k, c) for c in channels.values() for k in range(1, c + 1)})
    start = largest_within(fractions, uniform, budget, method)
    widths, macs, filled = dict(start.widths), start.macs, 0
    while True:
        best, best_score, best_macs = None, -1.0, 0
        for name, c in channels.items():
            k = widths[name]
            if k == c:
                continue
            grown = Arch(space, full.blocks, {**widths, name: k + 1}).macs
            if grown > budget:
                continue
            score = float(ladders[name][k - 1] - ladders[name][k]) / (grown - macs)
            if score > best_score:
                best, best_score, best_macs = name, score, grown
        if best is None:
            break
        widths[best] += 1
        macs = best_macs
        filled += 1
    search = {"method": method, "macs_ratio": macs_ratio, **start.search, "filled": filled}
    return Arch(space, full.blocks, widths, search)


# ---------------------------------------------------------------------------- rebuilding
Rebuild = Callable[[LayerStats, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _dims(kept: torch.Tensor, taps: int) -> torch.Tensor:
    """Indices into a flattened patch of the kept input channels' values."""
    return (kept[:, None] * taps + torch.arange(taps)).flatten()


def scale_rebuild(
    stats: LayerStats, weight: torch.Tensor, kept: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """ThiNet's "w" step: the consumer's weights (rows ``rows``) on the ``kept`` input channels,
    each channel's slice scaled by the least-squares w of |y - sum_kept w_j z_j|^2."""
    gram, b = channel_gram(stats, weight, rows)
    w = _solve(gram[kept][:, kept], b[kept])
    old = weight.detach()[rows][:, kept].to(w)
    return old * w.reshape(1, -1, *[1] * (old.dim() - 2))


def least_squares_rebuild(
    stats: LayerStats, weight: torch.Tensor, kept: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """He et al.'s reconstruction: the consumer's whole weight tensor (rows ``rows``) on the
    ``kept`` input channels, argmin |y - W' p_kept|^2 (ridge `RIDGE`)."""
    dims = _dims(kept, stats.taps)
    solution = _solve(stats.inputs[dims][:, dims], stats.cross[dims][:, rows])  # (D_kept, R)
    return solution.T.reshape(len(rows), len(kept), *weight.shape[2:])


def _sampled_error(
    stats: LayerStats, new: torch.Tensor, kept: torch.Tensor, rows: torch.Tensor
) -> float:
    """|y - W' p_kept|^2 / |y|^2 over the samples, from the moments alone."""
    dims = _dims(kept, stats.taps)
    v = new.to(stats.inputs).flatten(1)  # (R, D_kept)
    a, cross = stats.inputs[dims][:, dims], stats.cross[dims][:, rows]
    energy = stats.energy[rows].sum()
    err = energy - 2 * (v * cross.T).sum() + ((v @ a) * v).sum()
    return float(err / energy.clamp_min(torch.finfo(err.dtype).tiny))


# ---------------------------------------------------------------------------- the methods
def _channel_prune(
    model: CompactNet,
    macs_ratio: float,
    batches: Batches,
    samples_per_image: int,
    seed: int,
    method: str,
    order: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rebuild: Rebuild,
) -> tuple[Arch, Keep, CompactNet]:
    check_ratio(macs_ratio)
    space = model_space(model)
    full = Arch.full(space)
    stats = sample_stats(model, batches, samples_per_image, seed)
    layers = _layers(model, full)
    readers = consumers(space)
    orders, ladders = {}, {}
    for name, names in readers.items():
        grams = [channel_gram(stats[c], layers[c].weight) for c in names]
        gram, b = sum(g for g, _ in grams), sum(v for _, v in grams)
        orders[name] = order(gram, b).cpu()
        ladders[name] = error_ladder(gram, b, orders[name], float(len(names))).cpu()
    arch = allocate(space, ladders, macs_ratio, method)
    keep = {name: orders[name][: arch.widths[name]].sort().values for name in readers}

    pruned = build_model(arch, init_from=model, keep=keep).to(next(model.parameters()).device)
    targets = _layers(pruned, arch)
    removed, rebuilt = [], []
    with torch.no_grad():
        for name, names in readers.items():
            for c in names:
                s, weight = stats[c], layers[c].weight
                rows = keep.get(c, torch.arange(weight.shape[0]))
                new = rebuild(s, weight, keep[name], rows)
                removed.append(
                    _sampled_error(s, weight.detach()[rows][:, keep[name]], keep[name], rows)
                )
                rebuilt.append(_sampled_error(s, new, keep[name], rows))
                targets[c].weight.copy_(new)
    arch.search.update(
        {
            "images": sum(len(x) for x, _ in batches),
            "samples_per_image": samples_per_image,
            "seed": seed,
            # relative error of the consumers' outputs at the sampled positions, mean over them
            "sampled_error": {
                "removed": sum(removed) / len(removed),
                "rebuilt": sum(rebuilt) / len(rebuilt),
            },
        }
    )
    return arch, keep, pruned


def thinet_prune(
    model: CompactNet,
    macs_ratio: float,
    batches: Batches,
    samples_per_image: int = 10,
    seed: int = 0,
) -> tuple[Arch, Keep, CompactNet]:
    """ThiNet on a trained full network to ``macs_ratio`` x its MACs: ``(arch, keep, pruned)``,
    ``keep`` as `tas.build_model` takes it and ``pruned`` the compact network with the kept
    filters' weights and each consumer's input weights scaled (module docstring)."""
    return _channel_prune(
        model, macs_ratio, batches, samples_per_image, seed, "thinet",
        lambda gram, b: thinet_order(gram), scale_rebuild,
    )  # fmt: skip


def lasso_prune(
    model: CompactNet,
    macs_ratio: float,
    batches: Batches,
    samples_per_image: int = 10,
    seed: int = 0,
) -> tuple[Arch, Keep, CompactNet]:
    """LASSO channel selection and least-squares reconstruction (He et al. 2017) on a trained
    full network to ``macs_ratio`` x its MACs: ``(arch, keep, pruned)`` as `thinet_prune`."""
    return _channel_prune(
        model, macs_ratio, batches, samples_per_image, seed, "lasso",
        lasso_order, least_squares_rebuild,
    )  # fmt: skip


@torch.no_grad()
def consumer_errors(
    model: CompactNet, arch: Arch, keep: Keep, pruned: CompactNet, batches: Batches
) -> dict[str, tuple[float, float]]:
    """For every consumer, the relative error |y - y'|^2 / |y|^2 of its output at every
    position, fed the full network's own input on the kept channels: ``(with the weights
    build_model inherits (the channels just removed), with pruned's weights)``, on the images of
    ``batches`` (give images the samples did not see, to check that a rebuild generalises)."""
    space = model_space(model)
    device = next(model.parameters()).device
    plain = _layers(build_model(arch, init_from=model, keep=keep).to(device), arch)
    rebuilt = _layers(pruned, arch)
    sources = _layers(model, Arch.full(space))
    sums: dict[str, list[float]] = {}

    def hook(name: str, kept: torch.Tensor, rows: torch.Tensor | None) -> Callable:
        def record(layer: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            x = inputs[0][:, kept.to(device)]
            y = out if rows is None else out[:, rows.to(device)]
            s = sums.setdefault(name, [0.0, 0.0, 0.0])
            s[0] += float((y - plain[name](x)).pow(2).sum())
            s[1] += float((y - rebuilt[name](x)).pow(2).sum())
            s[2] += float(y.pow(2).sum())

        return record

    handles = [
        sources[c].register_forward_hook(hook(c, keep[name], keep.get(c)))
        for name, names in consumers(space).items()
        for c in names
    ]
    _run_hooked(model, batches, handles)
    return {name: (s[0] / s[2], s[1] / s[2]) for name, s in sums.items()}
