"""Weight-level (unstructured) magnitude pruning (Han et al. 2015): masks over the weights of
every conv and the linear head, kept applied through training, saved beside found.json.

    masks = magnitude_masks(model, sparsity=0.9, scope="global")
    save_masks("found.masks.pt", masks, {"sparsity": 0.9, "scope": "global"})
    masks = load_masks("found.masks.pt", model)          # checked against the network
    apply_masks(model, masks)                            # zero the pruned weights

Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the masks grow during training,
at every N-th step, to `agp_sparsity`'s cubic schedule; ``magnitude_masks(..., prior=masks)``
keeps every weight already pruned pruned (masks only grow). ClassifyModule's ``agp_*`` options
run it; prune.py ``--masks`` is the same for k rounds of prune-and-fine-tune (tas/baselines/schedules.py).

The network's shape does not change (found.json is the full network); what a masked network
saves is storage when its weights are kept sparse (`storage_bytes`), not MACs on dense kernels
(`masked_macs` counts what a kernel that skips zeros would do).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tas.arch import save_atomic
from tas.compact import count_macs

MASKS_FORMAT = "tas-masks/1"
SCOPES = ("layer", "global")


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every ``nn.Conv2d`` and ``nn.Linear``, by state-dict name."""
    return {
        f"{name}.weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def magnitude_masks(
    model: nn.Module,
    sparsity: float,
    scope: str = "layer",
    prior: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks pruning the ``sparsity`` fraction of smallest-|w| weights: of each
    layer (``scope="layer"``, exactly round(sparsity x n) per layer) or of all layers together
    under one threshold (``"global"``, exactly round(sparsity x total)).

    ``prior``: masks from an earlier round; the weights they prune rank below every other
    weight and stay pruned whatever their value (the new masks keep a subset of what ``prior``
    keeps). Where ``prior`` already prunes more than asked, it stays as it is.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    scores = {k: w.detach().abs() for k, w in prunable_weights(model).items()}
    prior = prior or {}
    for k, keep in prior.items():  # below every |w| >= 0: what prior pruned goes first
        scores[k] = scores[k].masked_fill(~keep.to(scores[k].device), -1.0)
    masks = _smallest_pruned(scores, sparsity, scope)
    return {k: m & prior[k].to(m.device) if k in prior else m for k, m in masks.items()}


def _smallest_pruned(
    weights: dict[str, torch.Tensor], sparsity: float, scope: str
) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the ``sparsity`` fraction of smallest scores, per layer or globally."""
    if scope == "layer":
        return {k: _keep_largest(w.flatten(), w.numel() - round(sparsity * w.numel())).view_as(w)
                for k, w in weights.items()}  # fmt: skip
    flat = torch.cat([w.flatten() for w in weights.values()])
    keep = _keep_largest(flat, flat.numel() - round(sparsity * flat.numel()))
    out, start = {}, 0
    for k, w in weights.items():
        out[k] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return out


def _keep_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """A mask keeping exactly the ``k`` largest of ``values`` (ties broken by position)."""
    mask = torch.zeros_like(values, dtype=torch.bool)
    mask[values.topk(k, sorted=False).indices] = True
    return mask


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every pruned weight (call after each optimiser step to keep them at zero)."""
    params = prunable_weights(model)
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def masked_macs(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> int:
    """MACs of ``model`` (a compact network, on its space's input size) counting only the
    weights ``masks`` keep: the compute a kernel that skips zeros would do. Rethinking's
    Scratch-B gives a masked network the epochs that bring this up to the full network's."""
    size = model.space.input_size
    return count_macs(model, (1, 3, size, size), masks)


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exact zeros among the prunable weights."""
    weights = list(prunable_weights(model).values())
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def mask_sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the prunable weights that ``masks`` prune (a weight without a mask is kept)."""
    pruned = sum(int((~m).sum()) for m in masks.values())
    return pruned / sum(w.numel() for w in prunable_weights(model).values())


def agp_sparsity(step: int, start: int, end: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's (2017) gradual pruning schedule: the sparsity at training step ``step``,
    ``initial`` up to ``start``, then s_f + (s_i - s_f) (1 - (step - start) / (end - start))^3,
    ``final`` from ``end`` on. The cubic prunes fastest at first, while many weights are
    redundant, and slows as the network gets sparse."""
    if not 0.0 <= initial <= final < 1.0:
        raise ValueError(
            f"sparsities must satisfy 0 <= initial <= final < 1, got {initial}, {final}"
        )
    if not 0 <= start < end:
        raise ValueError(f"the pruning steps must satisfy 0 <= start < end, got {start}, {end}")
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def agp_update_due(step: int, start: int, end: int, every: int) -> bool:
    """Whether the masks grow after training step ``step``: every ``every`` steps after
    ``start``, and at ``end`` (so the schedule ends exactly at its final sparsity)."""
    return start < step <= end and ((step - start) % every == 0 or step == end)


def save_masks(path: str | os.PathLike, masks: Mapping[str, torch.Tensor], meta: dict) -> None:
    """Write the masks (bit-packed as bool tensors) with their format version, atomically."""
    save_atomic({"format": MASKS_FORMAT, "meta": dict(meta), "masks": dict(masks)}, path)


def load_masks(path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """Read masks written by `save_masks` and check them against ``model``; any problem is a
    one-line ValueError naming the file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"weight masks {path}: no such file") from None
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"weight masks {path} cannot be read ({type(err).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MASKS_FORMAT:
        raise ValueError(f"weight masks {path}: not a {MASKS_FORMAT} file")
    masks, params = data["masks"], prunable_weights(model)
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"weight masks {path}: the network has no weight {unknown[0]}")
    for name, mask in masks.items():
        if mask.dtype != torch.bool or mask.shape != params[name].shape:
            raise ValueError(
                f"weight masks {path}: {name} is a {tuple(mask.shape)} {mask.dtype} mask, "
                f"the network's weight is {tuple(params[name].shape)}"
            )
    return masks


def storage_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the state dict's tensors stored dense, and with every prunable weight stored as
    its nonzero values plus a bitmask of where they are (1 bit per weight)."""
    state = model.state_dict()
    names = set(prunable_weights(model))
    dense = sum(v.numel() * v.element_size() for v in state.values())
    packed = sum(
        int((v != 0).sum()) * v.element_size() + (v.numel() + 7) // 8
        if k in names
        else v.numel() * v.element_size()
        for k, v in state.items()
    )
    return {"dense": dense, "values_and_bitmask": packed}


__all__ = [
    "MASKS_FORMAT",
    "SCOPES",
    "agp_sparsity",
    "agp_update_due",
    "apply_masks",
    "load_masks",
    "magnitude_masks",
    "mask_sparsity",
    "prunable_weights",
    "save_masks",
    "sparsity_of",
    "storage_bytes",
]
