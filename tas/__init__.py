"""TAS: network pruning via transformable architecture search (Dong & Yang, NeurIPS 2019).

The method in pure PyTorch: the search space, the searchable network, the expected-MACs cost,
the derived architecture (found.json) and the compact network it builds. Latency tables and
expected latency: ``import tas.latency``.
"""

from tas.arch import Arch, ArchFormatError
from tas.backbones import from_torchvision
from tas.budget import LatencyBudget, MacsBudget
from tas.compact import build_model, count_macs, load_model
from tas.cost import cost_loss, expected_cost, expected_macs
from tas.cwi import channel_interpolate
from tas.derive import most_probable_within
from tas.gumbel import TauSchedule, sample_candidates
from tas.kd import kd_loss
from tas.search import StepLosses, search_step
from tas.space import SearchSpace
from tas.supernet import Supernet

__all__ = [
    "Arch",
    "LatencyBudget",
    "MacsBudget",
    "ArchFormatError",
    "SearchSpace",
    "Supernet",
    "TauSchedule",
    "build_model",
    "channel_interpolate",
    "cost_loss",
    "count_macs",
    "expected_cost",
    "expected_macs",
    "from_torchvision",
    "kd_loss",
    "load_model",
    "most_probable_within",
    "sample_candidates",
    "search_step",
    "StepLosses",
]
