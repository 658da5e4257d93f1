"""Budgets: what the search's cost loss measures. A budget prices the network drawn from the
distributions (a differentiable expectation), the current argmax network and any `Arch`, in one
unit, and carries the target and the tolerance band [target - tolerance, target] in that unit.

    MacsBudget.of_ratio(space, 0.5)                      # the paper's: MACs
    LatencyBudget(table, target=2.0, tolerance=0.2)     # milliseconds on a profiled device
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tas.arch import Arch
from tas.space import SearchSpace
from tas.supernet import Supernet

if TYPE_CHECKING:  # tas.latency is imported by who profiles or loads a table
    from tas.latency import LatencyTable


@dataclass(frozen=True)
class MacsBudget:
    """MACs of convs and the linear head for one image (the paper's FLOPs)."""

    target: float
    tolerance: float
    unit = "macs"

    @classmethod
    def of_ratio(cls, space: SearchSpace, ratio: float, tolerance: float = 0.05) -> MacsBudget:
        """``ratio`` and ``tolerance`` as fractions of the full network's MACs."""
        full = Arch.full(space).macs
        return cls(ratio * full, tolerance * full)

    def expected(self, net: Supernet) -> torch.Tensor:
        return net.expected_macs()

    def argmax(self, net: Supernet) -> torch.Tensor:
        return net.argmax_macs()

    def of(self, arch: Arch) -> float:
        return float(arch.macs)


@dataclass(frozen=True)
class LatencyBudget:
    """Milliseconds predicted by a `LatencyTable` profiled on the target device."""

    table: LatencyTable
    target: float
    tolerance: float
    unit = "ms"

    def expected(self, net: Supernet) -> torch.Tensor:
        return self.table.expected_ms(net.width_probs(), net.depth_probs())

    def argmax(self, net: Supernet) -> torch.Tensor:
        with torch.no_grad():
            w = F.one_hot(net.width_probs().argmax(-1), net.width_mask.shape[1])
            d = F.one_hot(net.depth_probs().argmax(-1), net.depth_mask.shape[1])
            return self.table.expected_ms(w.double(), d.double())

    def of(self, arch: Arch) -> float:
        return self.table.predict_ms(arch)


Budget = MacsBudget | LatencyBudget
