"""Per-layer sensitivity analysis (Li et al. 2017): prune one conv at a time by its filters' L1
norms, at ratios 0.1 ... 0.9, score each network without retraining, and pick per-layer pruning
ratios from the curves, for an accuracy drop or a MACs target.

    sens = layer_sensitivity(teacher, score)           # score(model) -> accuracy, caller's data
    arch, keep = prune_by_sensitivity(teacher, sens, macs_ratio=0.5)

Scoring needs data, which lives in the systems layer: ``score`` is passed in, so this module
imports nothing from it (sensitivity.py at the top level runs it on the search split's held-out
half).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import model_space, named_convs, prunable_convs
from tas.compact import CompactNet, build_model

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def l1_keep(model: CompactNet, ratios: Mapping[str, float]) -> tuple[Arch, dict[str, torch.Tensor]]:
    """The full network with each named conv pruned by ``ratios[name]`` of its filters, the
    smallest L1 norms first (at least one filter kept); ``keep`` as `tas.build_model` takes it."""
    full = Arch.full(model_space(model))
    convs = named_convs(model, full)
    widths, keep = dict(full.widths), {}
    for name, ratio in ratios.items():
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"pruning ratio of {name} must be in [0, 1), got {ratio}")
        weight = next(m for m in convs[name] if isinstance(m, nn.Conv2d)).weight.detach()
        norms = weight.abs().sum(dim=(1, 2, 3))
        width = max(1, len(norms) - round(ratio * len(norms)))
        widths[name] = width
        keep[name] = norms.topk(width).indices.sort().values
    return Arch(full.space, full.blocks, widths, {"method": "sensitivity"}), keep


@torch.no_grad()
def layer_sensitivity(
    model: CompactNet,
    score: Callable[[nn.Module], float],
    ratios: Sequence[float] = RATIOS,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """``{"baseline", "ratios", "curves": {conv: [score at each ratio]}, "macs": {conv: [...]}}``
    for every conv the filter baselines prune, each pruned alone and scored as it is (no
    fine-tuning; BatchNorm statistics inherited)."""
    baseline = float(score(model.eval()))
    curves, macs = {}, {}
    for name in prunable_convs(model_space(model)):
        curves[name], macs[name] = [], []
        for ratio in ratios:
            arch, keep = l1_keep(model, {name: ratio})
            pruned = build_model(arch, init_from=model, keep=keep).eval()
            curves[name].append(float(score(pruned)))
            macs[name].append(arch.macs)
        if progress is not None:
            progress(name)
    return {"baseline": baseline, "ratios": list(ratios), "curves": curves, "macs": macs}


def ratios_for_drop(sensitivity: Mapping, max_drop: float) -> dict[str, float]:
    """Per conv, the largest ratio whose score stays within ``max_drop`` of the baseline (0 when
    none does)."""
    floor = sensitivity["baseline"] - max_drop
    out = {}
    for name, curve in sensitivity["curves"].items():
        ok = [r for r, s in zip(sensitivity["ratios"], curve) if s >= floor]
        out[name] = max(ok, default=0.0)
    return out


def prune_by_sensitivity(
    model: CompactNet, sensitivity: Mapping, macs_ratio: float
) -> tuple[Arch, dict[str, torch.Tensor]]:
    """The per-layer ratios of the smallest accuracy-drop tolerance whose network fits
    ``macs_ratio`` x the full MACs (the tolerance searched over the drops the curves show)."""
    check_ratio(macs_ratio)
    budget = macs_ratio * Arch.full(model_space(model)).macs
    base = sensitivity["baseline"]
    drops = sorted({max(0.0, base - s) for c in sensitivity["curves"].values() for s in c})
    for drop in drops:  # ascending: the first that fits prunes the least sensitive layers only
        arch, keep = l1_keep(model, ratios_for_drop(sensitivity, drop))
        if arch.macs <= budget:
            arch.search.update({"macs_ratio": macs_ratio, "max_drop": drop})
            return arch, keep
    raise ValueError(
        f"even pruning every layer by {max(sensitivity['ratios'])} leaves more than "
        f"{macs_ratio} x the full MACs; analyse with higher ratios"
    )
