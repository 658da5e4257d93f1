"""Latency tables: the measured time of every searchable conv at every (input width, output
width) pair of a search space on this device, and the latency of a network predicted from them,
exactly as a sum for one `Arch` and as a differentiable expectation under the search's width
and depth distributions (the latency counterpart of `tas.cost.expected_macs`).

    table = tas.latency.profile(space, batch=1, backend="eager")
    table.save("lat.json"); table = LatencyTable.load("lat.json")
    table.predict_ms(arch)                                   # one network
    table.expected_ms(width_probs, depth_probs)             # differentiable, for the search

    python -m tas.latency profile --depth 20 --batch 1 --backend eager --out lat.json

A conv is timed with its BatchNorm and ReLU (and the AvgPool of a stride-2 projection
shortcut), at its spatial size, in eval mode under ``torch.inference_mode``; every pair is
measured once per round and the rounds are interleaved, so a slow moment of the machine spreads
over all pairs instead of one; the median over rounds is kept. What the convs do not cover
(pooling, the head, residual adds, framework overhead) is ``fixed_ms``: the measured full
network minus the sum of its convs' entries. Supported: spaces with zero-padded identity
shortcuts (the default), the eager PyTorch backend on the device the tensors live on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tas.arch import Arch, write_text_atomic
from tas.compact import build_model
from tas.cost import expected_cost
from tas.space import SearchSpace, layer_out_size

FORMAT = "tas-latency/1"
BACKENDS = ("eager",)


@dataclass(frozen=True)
class TimedConv:
    """One conv of the space to time: its name, shape and the widths its input can have."""

    name: str
    kernel: int
    stride: int
    in_size: int
    relu: bool
    pool: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    max_pool: bool = False  # a 2x2 max-pool before the conv (VGG)


def timed_convs(space: SearchSpace) -> list[TimedConv]:
    """Every conv a network of ``space`` can build, with every input and output width it can
    see: a conv's input widths are those its producer can output (after a zero-padded
    identity block, the max of the block input and its last conv; after a stage, any of its
    depth choices' outputs)."""
    if space.shortcut != "zero_pad":
        raise ValueError("latency tables support shortcut='zero_pad' spaces only")
    size = space.input_size
    stem = space.stem
    out = [
        TimedConv("stem", stem.kernel, stem.stride, size, stem.relu, False,
                  (space.in_channels,), stem.candidates)
    ]  # fmt: skip
    size = space.stem_out_size()
    widths = set(stem.candidates)
    for stage in space.stages:
        after: set[int] = set()
        for p, block in enumerate(stage.blocks):
            block_in, block_size = set(widths), size
            for conv in block.convs:
                out.append(
                    TimedConv(conv.name, conv.kernel, conv.stride, size, conv.relu, False,
                              tuple(sorted(widths)), conv.candidates, conv.max_pool)
                )  # fmt: skip
                size = layer_out_size(size, conv)
                widths = set(conv.candidates)
            if block.projection:  # timed on the block's input: [AvgPool] + 1x1 conv
                pooled = block.stride != 1 and space.downsample == "avgpool"
                out.append(
                    TimedConv(f"{block.name}.shortcut", 1, 1 if pooled else block.stride,
                              block_size, False, pooled, tuple(sorted(block_in)),
                              block.last.candidates)
                )  # fmt: skip
            elif block.residual:  # zero-padded identity
                widths = {max(a, b) for a in block_in for b in widths}
            if p + 1 in stage.depth_choices:
                after |= widths
        widths = after
    return out


def _module(conv: TimedConv, cin: int, cout: int) -> nn.Module:
    mods: list[nn.Module] = [nn.AvgPool2d(2)] if conv.pool else []
    mods += [nn.MaxPool2d(2)] if conv.max_pool else []
    pad = conv.kernel // 2
    mods += [nn.Conv2d(cin, cout, conv.kernel, conv.stride, pad, bias=False), nn.BatchNorm2d(cout)]
    if conv.relu:
        mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods).eval()


def _time_ms(fn, warmup: int) -> Iterator[float]:
    for _ in range(warmup):
        fn()
    while True:
        start = time.perf_counter()
        fn()
        yield 1e3 * (time.perf_counter() - start)


@dataclass
class LatencyTable:
    """Measured milliseconds per (conv, input width, output width), plus the fixed part."""

    space: SearchSpace
    meta: dict
    convs: dict[str, dict[tuple[int, int], float]]
    fixed_ms: float = 0.0
    _matrices: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------ predictions
    def predict_ms(self, arch: Arch) -> float:
        """Predicted latency of ``arch``'s built network: its convs' entries plus fixed_ms."""
        if arch.space != self.space:
            raise ValueError(
                f"the table is for {self.space.describe()}, not {arch.space.describe()}"
            )
        total = self.fixed_ms
        for layer in arch.plan().layers():
            try:
                total += self.convs[layer.name][(layer.in_channels, layer.out_channels)]
            except KeyError:
                raise ValueError(
                    f"no entry for {layer.name} at {layer.in_channels}->{layer.out_channels} "
                    "channels: the table was profiled for other widths"
                ) from None
        return total

    def expected_ms(self, width_probs: torch.Tensor, depth_probs: torch.Tensor) -> torch.Tensor:
        """E[latency] (float64, differentiable) of the network drawn from the distributions:
        for each conv, sum over (input, output) widths of P(in) P(out) table[in, out]."""
        length = max(c.channels for c in self.space.convs()) + 1
        length = max(length, self.space.in_channels + 1)

        def conv_ms(name: str, kernel: int, size: int, cin: torch.Tensor, cout: torch.Tensor):
            matrix = self._matrix(name, length, cin.device)
            return cin @ matrix @ cout

        fixed = torch.tensor(self.fixed_ms, dtype=torch.float64, device=width_probs.device)
        return expected_cost(
            self.space, width_probs, depth_probs, conv_ms, lambda width: fixed, None
        )

    def _matrix(self, name: str, length: int, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._matrices:
            matrix = torch.zeros(length, length, dtype=torch.float64)
            for (cin, cout), ms in self.convs[name].items():
                matrix[cin, cout] = ms
            self._matrices[key] = matrix.to(device)
        return self._matrices[key]

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "space": {
                "backbone": self.space.backbone,
                "depth": self.space.depth,
                "num_classes": self.space.num_classes,
                "shortcut": self.space.shortcut,
            },  # fmt: skip
            "meta": self.meta,
            "fixed_ms": self.fixed_ms,
            "convs": {
                name: [[cin, cout, ms] for (cin, cout), ms in sorted(pairs.items())]
                for name, pairs in self.convs.items()
            },
        }

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table; a file that is not one, or names another space, is a ValueError."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"latency table {path}: cannot be read ({type(err).__name__})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"latency table {path}: not a {FORMAT} file")
        try:
            sp = data["space"]
            space = SearchSpace.from_name(
                sp["backbone"], sp["depth"], sp["num_classes"], shortcut=sp["shortcut"]
            )
            convs = {
                name: {(int(a), int(b)): float(ms) for a, b, ms in rows}
                for name, rows in data["convs"].items()
            }
            table = cls(space, dict(data["meta"]), convs, float(data["fixed_ms"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"latency table {path}: malformed ({' '.join(str(err).split())})"
            ) from None
        missing = {c.name for c in timed_convs(space)} - set(convs)
        if missing:
            raise ValueError(f"latency table {path}: no entries for {sorted(missing)[:3]}")
        return table


def cpu_model() -> str:
    """The CPU's model name and the vector flags that decide oneDNN's kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), platform.machine())  # fmt: skip
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return f"{name} ({' '.join(f for f in wanted if f in flags) or 'no avx2'})"


def profile(
    space: SearchSpace,
    batch: int = 1,
    backend: str = "eager",
    threads: int | None = None,
    rounds: int = 15,
    warmup: int = 3,
    device: str = "cpu",
    progress: bool = False,
) -> LatencyTable:
    """Time every (input width, output width) pair of every conv of ``space`` (see the module
    docstring) and the full network, on ``device`` with ``threads`` threads, fp32."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    runs = []  # (conv name, cin, cout, callable)
    for conv in timed_convs(space):
        for cin in conv.inputs:
            for cout in conv.outputs:
                module = _module(conv, cin, cout).to(device)
                x = torch.randn(batch, cin, conv.in_size, conv.in_size, device=device)

                def run(m=module, x=x) -> None:
                    with torch.inference_mode():
                        m(x)

                runs.append((conv.name, cin, cout, _time_ms(run, warmup)))
    times: dict[tuple[str, int, int], list[float]] = {(n, a, b): [] for n, a, b, _ in runs}
    full = build_model(Arch.full(space)).to(device).eval()
    image = torch.randn(batch, space.in_channels, space.input_size, space.input_size,
                        device=device)  # fmt: skip

    def run_full() -> None:
        with torch.inference_mode():
            full(image)

    full_timer, full_times = _time_ms(run_full, warmup), []
    for r in range(rounds):  # interleaved: every pair once per round
        for name, cin, cout, timer in runs:
            times[(name, cin, cout)].append(next(timer))
        full_times.append(next(full_timer))
        if progress:
            print(f"round {r + 1}/{rounds}: {len(runs)} conv shapes", flush=True)
    convs: dict[str, dict[tuple[int, int], float]] = {}
    for (name, cin, cout), values in times.items():
        convs.setdefault(name, {})[(cin, cout)] = statistics.median(values)
    meta = {
        "device": device if device != "cpu" else cpu_model(),
        "backend": backend,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "precision": "fp32",
        "torch": torch.__version__,
        "rounds": rounds,
    }
    table = LatencyTable(space, meta, convs)
    table.fixed_ms = max(0.0, statistics.median(full_times) - table.predict_ms(Arch.full(space)))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tas.latency", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="measure a search space's latency table")
    prof.add_argument("--depth", type=int, default=20)
    prof.add_argument("--num_classes", type=int, default=10)
    prof.add_argument("--batch", type=int, default=1)
    prof.add_argument("--backend", default="eager", choices=BACKENDS)
    prof.add_argument("--threads", type=int, default=None)
    prof.add_argument("--rounds", type=int, default=15)
    prof.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    space = SearchSpace.cifar_resnet(args.depth, args.num_classes)
    start = time.time()
    table = profile(space, args.batch, args.backend, args.threads, args.rounds, progress=True)
    table.save(args.out)
    pairs = sum(len(p) for p in table.convs.values())
    print(f"{args.out}: {pairs} (conv, widths) entries, fixed {table.fixed_ms:.3f} ms, "
          f"profiled in {time.time() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
