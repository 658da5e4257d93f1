"""The pruning methods TAS is compared with, a file each, all on any `tas.SearchSpace` and all
returning an `Arch` (found.json) plus ``keep``, the full network's filters each pruned conv
keeps (``tas.build_model(arch, init_from=full, keep=keep)`` builds the pruned network):

* `filters`: L1-norm filter pruning (Li et al. 2017) and Network Slimming (Liu et al. 2017);
* `sensitivity`: per-layer sensitivity curves and ratios read off them (Li et al. 2017);
* `channel_selection`: ThiNet (Luo et al. 2017) and LASSO channel selection (He et al. 2017),
  with least-squares rebuilds of the next layer;
* `sss`: Sparse Structure Selection (Huang & Wang 2018), block removal;
* `amc`: AMC (He et al. 2018), a DDPG agent choosing per-layer ratios;
* `netadapt`: NetAdapt (Yang et al. 2018), latency- (or MACs-) driven greedy shrinking;
* `sparsity`: weight-level magnitude pruning (Han et al. 2015), masks, AGP's schedule;
* `schedules`: k-round prune-and-fine-tune targets and pruning a pruned network further;
* `common`: what they share (prunable convs, the largest network within a budget, random
  networks within a band).
"""

from tas.baselines.common import (
    largest_within,
    model_space,
    named_convs,
    prunable_convs,
    random_within,
)
from tas.baselines.filters import l1_norm_prune, slimming_prune

__all__ = [
    "l1_norm_prune",
    "largest_within",
    "model_space",
    "named_convs",
    "prunable_convs",
    "random_within",
    "slimming_prune",
]
