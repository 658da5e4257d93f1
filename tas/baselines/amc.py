"""AMC (He et al., ECCV 2018, "AutoML for Model Compression"): a reinforcement-learning agent
chooses, layer by layer, the fraction of filters each conv prunes, under a MACs budget.

    arch, keep = amc_prune(teacher, 0.5, held_out, episodes=400, calibration=train_batches)
    net = tas.build_model(arch, init_from=teacher, keep=keep)       # fine-tune from here

One episode walks the prunable convs (`tas.baselines.prunable_convs`: inside residual blocks,
every conv of a plain chain) in forward order. At conv t the agent sees the paper's layer
embedding (index; out and in channels; output size; stride; kernel; the conv's MACs; MACs already
removed; MACs of the layers after it; previous action), each feature scaled to [0, 1], and answers
a_t in [0, ``max_ratio``]: the fraction of the conv's filters to drop, the smallest L1 norms first.
Resource-constrained clipping (the paper's Algorithm 1, on exact MACs): a_t is raised to the
least pruning from which the budget can still be met if every later conv is pruned by
``max_ratio``, so every episode's network fits the budget. The reward is the top-1 accuracy of the
pruned network on the caller's held-out batches (the search split's arch half, never the test
set), without fine-tuning. Its BatchNorm statistics are inherited from the full network (the
paper's way), or, given ``calibration`` batches (the weights half), recomputed on them first
(`recalibrate_bn`; weights untouched). prune.py recalibrates on 500 images by default: on the
CIFAR ResNet-20 at runs/teacher20_4ep (77.3% held-out top-1), networks at 0.5-0.6 x its MACs
scored 10-18% with inherited statistics and 43-62% recalibrated, and the two rankings disagreed
(12 random clipped networks, 1,000 held-out images): inherited, the reward is near chance and
cannot rank networks.

The agent is DDPG, as the paper's: actor and critic are MLPs with two hidden layers of 300 units,
the actor's sigmoid output is the action; the first ``warmup`` episodes act uniformly at random,
then the actor's action plus truncated-normal noise (sigma 0.5 decaying exponentially, as the
paper's; here x0.95 an episode); transitions go to a replay buffer of 2,000, and each episode after the
warm-up makes one update (batch of 64) per conv. The reward comes only at the episode's end and
the paper takes no discount, so every step's return is the episode's reward: the critic regresses
directly onto it (minus the paper's baseline, a moving average of past rewards), which needs no
bootstrapped target and so no target networks. DDPG rather than a simpler policy gradient: it is
what the paper ran, and its replay buffer re-uses every episode's costly network evaluation.

Landing in the band: the best episode's network fits the budget but may fall short of it (the
agent pruned more than it had to). Its widths are then grown back, keeping the agent's allocation:
every conv's kept count is scaled by one common factor s >= 1 (floor(s x kept), capped at full),
the largest s that fits; then, one filter at a time, the conv with the smallest kept fraction
whose one more filter still fits grows, until none does. On CIFAR ResNets a filter is < 1% of the
full MACs, so the network ends in [0.98 ratio, ratio] x full MACs.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from tas.arch import Arch, check_ratio
from tas.baselines.common import largest_within, model_space, prunable_convs
from tas.baselines.sensitivity import l1_keep
from tas.compact import CompactNet, build_model
from tas.evaluate import evaluate

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]

HIDDEN = 300  # the paper's actor and critic: two hidden layers of 300 units
ACTOR_LR, CRITIC_LR = 1e-4, 1e-3  # the paper's learning rates (Adam)
REPLAY, BATCH = 2000, 64  # replay buffer (transitions) and update batch, as the paper
SIGMA, SIGMA_DECAY = 0.5, 0.95  # exploration noise on the [0, 1] action, decayed per episode
BASELINE_MOMENTUM = 0.95  # reward baseline: b <- 0.95 b + 0.05 r


@dataclass(frozen=True)
class Episode:
    """One AMC episode: what the agent chose and what the pruned network scored."""

    episode: int  # 1-based
    reward: float  # held-out top-1 accuracy of the pruned network, no fine-tuning
    macs: int  # its MACs (always <= the budget: the clipping)
    ratios: dict[str, float]  # fraction of each conv's filters pruned, after clipping
    sigma: float | None  # exploration noise; None in the warm-up (uniform random actions)
    seconds: float  # wall time of the episode, scoring included


class PruningEnv:
    """The layer-by-layer pruning environment of one full network and one MACs budget: states,
    the resource-constrained clipping, and the MACs of any choice of widths (exact, `Arch`)."""

    FEATURES = 10  # the paper's 11 (t, n, c, h, w, stride, k, MACs, rest, reduced, a_{t-1}), h = w

    def __init__(self, model: CompactNet, macs_ratio: float, max_ratio: float = 0.8) -> None:
        check_ratio(macs_ratio)
        if not 0.0 < max_ratio < 1.0:
            raise ValueError(f"max_ratio must be in (0, 1), got {max_ratio}")
        space = model_space(model)
        self.full = Arch.full(space)
        self.budget = macs_ratio * self.full.macs
        self.max_ratio = max_ratio
        self.layers = prunable_convs(space)
        self.channels = {n: self.full.widths[n] for n in self.layers}
        # the narrowest a conv may get: at most max_ratio of its filters pruned, one kept
        self.min_width = {
            n: max(1, c - math.floor(max_ratio * c + 1e-9)) for n, c in self.channels.items()
        }
        if self.macs(self.min_width) > self.budget:
            raise ValueError(
                f"the MACs budget ({macs_ratio} x full) is below the smallest network AMC can "
                f"reach (every pruned conv at {max_ratio:.0%} of its filters pruned)"
            )
        self._static = self._static_features()

    def macs(self, widths: Mapping[str, int]) -> int:
        """MACs of the full network with the named convs at ``widths``."""
        return Arch(self.full.space, self.full.blocks, {**self.full.widths, **widths}).macs

    def _static_features(self) -> torch.Tensor:
        """(T, 8): per conv t, n, c, size, stride, kernel, MACs, MACs of the layers after it;
        each column scaled to [0, 1] over the convs (a constant column is 0)."""
        plan = self.full.plan().layers()
        order = [layer.name for layer in plan]
        rows = []
        for t, name in enumerate(self.layers):
            at = order.index(name)
            layer = plan[at]
            rest = sum(later.macs for later in plan[at + 1 :])
            rows.append(
                [t, layer.out_channels, layer.in_channels, layer.out_size, layer.stride,
                 layer.kernel, layer.macs, rest]
            )  # fmt: skip
        table = torch.tensor(rows, dtype=torch.float32)
        low, high = table.min(0).values, table.max(0).values
        return (table - low) / (high - low).clamp_min(1e-12)

    def state(self, t: int, widths: Mapping[str, int], previous: float) -> torch.Tensor:
        """(FEATURES,) embedding of conv t, given the widths chosen for the convs before it and
        the previous (clipped) action."""
        reduced = 1.0 - self.macs(widths) / self.full.macs  # share of MACs removed so far
        return torch.cat([self._static[t], torch.tensor([reduced, previous])])

    def clip(self, t: int, widths: Mapping[str, int], width: int) -> int:
        """The largest width <= ``width`` for conv t from which the budget can still be met when
        every later conv is at its minimum width (the resource-constrained clipping)."""
        later = {n: self.min_width[n] for n in self.layers[t + 1 :]}
        name = self.layers[t]
        fits = lambda w: self.macs({**widths, name: w, **later}) <= self.budget
        lo, hi = self.min_width[name], max(self.min_width[name], width)
        if fits(hi):
            return hi
        while lo < hi - 1:  # invariant: lo fits (the previous steps kept it so), hi does not
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    def width(self, t: int, action: float) -> int:
        """Conv t's width when ``action`` (a fraction in [0, max_ratio]) of its filters go."""
        n = self.channels[self.layers[t]]
        return max(self.min_width[self.layers[t]], n - round(action * n))

    def pruned(self, model: CompactNet, widths: Mapping[str, int]) -> tuple[Arch, dict]:
        """Arch and L1-largest ``keep`` of the network with the named convs at ``widths``."""
        ratios = {n: (self.channels[n] - w) / self.channels[n] for n, w in widths.items()}
        arch, keep = l1_keep(model, ratios)
        assert all(arch.widths[n] == w for n, w in widths.items())
        return arch, keep


def _mlp(inputs: int) -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, 1),
    )  # fmt: skip
    nn.init.uniform_(net[-1].weight, -3e-3, 3e-3)  # the outputs start near 0: actions near 0.5
    nn.init.zeros_(net[-1].bias)
    return net


class DDPGAgent:
    """Actor mu(s) in [0, 1] (times max_ratio: the action) and critic Q(s, a); see the module
    docstring for the training rule. Seeded: its networks' initialisation, noise and replay
    sampling draw from its own generators."""

    def __init__(self, features: int, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = _mlp(features)
            self.critic = _mlp(features + 1)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=ACTOR_LR)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=CRITIC_LR)
        self.replay: deque[tuple[torch.Tensor, float, float]] = deque(maxlen=REPLAY)
        self.noise = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)

    @torch.no_grad()
    def act(self, state: torch.Tensor, sigma: float) -> float:
        """mu(state) plus normal noise of std ``sigma``, truncated to [0, 1] (inverse CDF)."""
        mu = torch.sigmoid(self.actor(state)).double().squeeze()
        if sigma < 1e-6:
            return float(mu)
        low, high = torch.special.ndtr(-mu / sigma), torch.special.ndtr((1 - mu) / sigma)
        u = torch.rand((), generator=self.noise, dtype=torch.float64)
        draw = mu + sigma * torch.special.ndtri((low + u * (high - low)).clamp(1e-12, 1 - 1e-12))
        return float(draw.clamp(0.0, 1.0))

    def remember(self, states: list[torch.Tensor], actions: list[float], reward: float) -> None:
        """An episode's transitions, each with the episode's (baselined) reward as its return."""
        self.replay.extend((s, a, reward) for s, a in zip(states, actions))

    def update(self) -> None:
        """One critic regression and one actor ascent step on a batch from the replay."""
        batch = self.rng.sample(list(self.replay), min(BATCH, len(self.replay)))
        states = torch.stack([s for s, _, _ in batch])  # (B, F)
        actions = torch.tensor([[a] for _, a, _ in batch])  # (B, 1)
        returns = torch.tensor([[r] for _, _, r in batch])  # (B, 1)
        critic_loss = F.mse_loss(self.critic(torch.cat([states, actions], 1)), returns)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        mu = torch.sigmoid(self.actor(states))
        actor_loss = -self.critic(torch.cat([states, mu], 1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()  # the critic's gradients from this are cleared before its step
        self.actor_opt.step()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Batches) -> nn.Module:
    """``model`` with every BatchNorm's running mean and variance recomputed as the average over
    ``batches`` of their batch statistics (train-mode forwards, no gradient); in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    model.train()
    for x, _ in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def fill_budget(env: PruningEnv, widths: Mapping[str, int]) -> dict[str, int]:
    """Grow ``widths`` (which fit the budget) back towards it: one common scale s >= 1 of the
    kept counts, the largest that fits, then single filters to the thinnest conv (smallest kept
    fraction, the earlier on a tie) whose one more filter still fits, until none does."""
    full = env.channels

    def at(s: Fraction) -> Arch:
        scaled = {n: min(full[n], math.floor(s * w)) for n, w in widths.items()}
        return Arch(env.full.space, env.full.blocks, {**env.full.widths, **scaled})

    # widths change only at s = m / w: search those exact fractions (ascending network size)
    steps = sorted({Fraction(m, w) for n, w in widths.items() for m in range(w, full[n] + 1)})
    arch = largest_within(steps, at, env.budget, "AMC")
    grown = {n: arch.widths[n] for n in widths}
    while True:
        fits = [
            n
            for n in env.layers
            if grown[n] < full[n] and env.macs({**grown, n: grown[n] + 1}) <= env.budget
        ]
        if not fits:
            return grown
        grown[min(fits, key=lambda n: (grown[n] / full[n], env.layers.index(n)))] += 1


def amc_prune(
    model: CompactNet,
    macs_ratio: float,
    batches: Batches,
    episodes: int = 400,
    warmup: int | None = None,
    max_ratio: float = 0.8,
    seed: int = 0,
    progress: Callable[[Episode], None] | None = None,
    calibration: Batches | None = None,
) -> tuple[Arch, dict[str, torch.Tensor]]:
    """AMC of the trained full ``model`` to ``macs_ratio`` x its MACs, rewarded by top-1 on
    ``batches`` (held-out ``(x, y)``; never the test set). ``episodes`` in all, the first
    ``warmup`` (default a quarter: the paper's 100 of 400) with uniform random actions; at most
    ``max_ratio`` of a conv's filters pruned; with ``calibration`` (training-half batches) each
    network's BatchNorm statistics are recomputed on them before it is scored. Returns the best episode's network grown into the
    budget band (`fill_budget`) and, per pruned conv, its kept filters (L1-largest, ascending);
    ``arch.search["amc"]`` records the search. ``progress`` gets every `Episode`."""
    if episodes < 1:
        raise ValueError(f"AMC needs at least one episode, got {episodes}")
    warmup = episodes // 4 if warmup is None else warmup
    if not 0 <= warmup <= episodes:
        raise ValueError(f"warmup must be in 0..episodes ({episodes}), got {warmup}")
    if not batches:
        raise ValueError("AMC needs held-out batches to score its networks")
    env = PruningEnv(model, macs_ratio, max_ratio)

    def score(arch: Arch, keep: dict[str, torch.Tensor]) -> float:
        net = build_model(arch, init_from=model, keep=keep)
        return evaluate(recalibrate_bn(net, calibration) if calibration else net, batches).accuracy

    agent = DDPGAgent(PruningEnv.FEATURES, seed)
    started = time.perf_counter()
    baseline, sigma = None, SIGMA
    best: tuple[float, int, dict[str, int]] | None = None
    rewards = []
    for episode in range(1, episodes + 1):
        tic = time.perf_counter()
        exploring = episode > warmup
        widths: dict[str, int] = {}
        states, actions, previous = [], [], 0.0
        for t, name in enumerate(env.layers):
            state = env.state(t, widths, previous)
            u = agent.act(state, sigma) if exploring else agent.rng.random()
            widths[name] = env.clip(t, widths, env.width(t, u * max_ratio))
            previous = 1.0 - widths[name] / env.channels[name]  # the action after clipping
            states.append(state)
            actions.append(previous / max_ratio)
        arch, keep = env.pruned(model, widths)
        reward = score(arch, keep)
        baseline = reward if baseline is None else baseline
        agent.remember(states, actions, reward - baseline)
        baseline = BASELINE_MOMENTUM * baseline + (1 - BASELINE_MOMENTUM) * reward
        if exploring:
            for _ in env.layers:
                agent.update()
        rewards.append(reward)
        if best is None or reward > best[0]:
            best = (reward, episode, dict(widths))
        if progress is not None:
            ratios = {n: 1.0 - w / env.channels[n] for n, w in widths.items()}
            noise = sigma if exploring else None
            progress(Episode(episode, reward, arch.macs, ratios, noise, time.perf_counter() - tic))
        if exploring:
            sigma *= SIGMA_DECAY
    best_reward, best_episode, best_widths = best
    arch, keep = env.pruned(model, fill_budget(env, best_widths))
    final = score(arch, keep)
    arch.search = {
        "method": "amc",
        "macs_ratio": macs_ratio,
        "amc": {
            "episodes": episodes,
            "warmup": warmup,
            "max_ratio": max_ratio,
            "seed": seed,
            "images": sum(len(y) for _, y in batches),
            "bn": (
                f"recalibrated on {sum(len(y) for _, y in calibration)} images"
                if calibration
                else "inherited"
            ),
            "best_episode": best_episode,
            "best_reward": best_reward,
            "ratios": {n: 1.0 - w / env.channels[n] for n, w in best_widths.items()},
            "final_reward": final,  # the grown network's held-out top-1, no fine-tuning
            "rewards": [round(r, 5) for r in rewards],
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    return arch, keep
