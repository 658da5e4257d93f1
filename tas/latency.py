"""Latency tables: the measured time of every searchable conv at every (input width, output
width) pair of a search space on this device, and the latency of a network predicted from them,
exactly as a sum for one `Arch` and as a differentiable expectation under the search's width
and depth distributions (the latency counterpart of `tas.cost.expected_macs`).

    table = tas.latency.profile(space, batch=1, backend="eager")
    table.save("lat.json"); table = LatencyTable.load("lat.json")
    table.predict_ms(arch)                                   # one network
    table.expected_ms(width_probs, depth_probs)             # differentiable, for the search

    python -m tas.latency profile --depth 20 --batch 1 --backend eager --out lat.json
    python -m tas.latency profile --depth 20 --batch 1 --backend onnxruntime --out lat_ort.json
    python -m tas.latency profile --depth 20 --batch 1 --device cuda --out lat_cuda.json

Backends: ``eager`` (PyTorch in inference mode, on the CPU or, with ``device="cuda"``, on the
GPU with a ``torch.cuda.synchronize`` after each call) and ``onnxruntime`` (each timed module
exported to ONNX in memory and run by an ONNX Runtime CPU session with ``threads`` intra-op
threads). A conv is timed with its BatchNorm and ReLU (and the AvgPool of a stride-2 projection
shortcut), at its spatial size, in eval mode; every pair is measured once per round and the
rounds are interleaved, so a slow moment of the machine spreads over all pairs instead of one;
the median over rounds is kept.

The model of a network's latency is

    predict_ms(arch) = fixed_ms + sum over its conv layers of (table entry + overhead_ms)

``fixed_ms`` is what the convs do not cover (pooling, the head); ``overhead_ms`` is the
difference, per conv layer, between a conv timed alone and the same conv inside the network:
the per-call cost a lone entry pays and the network pays once (entering inference mode, a
session run), against the residual add and zero-padding a block adds; at batch 1 it is a
sizeable part of a layer's time and can be negative. Both are fitted exactly on two networks
measured in the same rounds as the convs: the full network and the shallowest one at full
widths (``fit``). Supported: spaces with zero-padded identity shortcuts (the default).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tas.arch import Arch, write_text_atomic
from tas.compact import build_model
from tas.cost import expected_cost
from tas.space import SearchSpace, layer_out_size

FORMAT = "tas-latency/2"
FORMATS = ("tas-latency/1", FORMAT)  # /1: no overhead_ms (read as 0)
BACKENDS = ("eager", "onnxruntime")


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


def check_device(backend: str, device: str | torch.device) -> torch.device:
    """The device a backend times on, or a ValueError saying why it cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if dev.type == "cuda":
        if backend != "eager":
            raise ValueError(f"backend {backend!r} times the CPU only; use --backend eager on CUDA")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: no CUDA device is available to torch {torch.__version__} "
                f"(built for CUDA {torch.version.cuda or 'none'})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    return dev


def device_name(device: torch.device) -> str:
    """What a table records as its device: the CPU model and flags, or the GPU's name."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return cpu_model()


def runner(model: nn.Module, x: torch.Tensor, backend: str, threads: int) -> Callable[[], None]:
    """One inference call of ``model`` (in eval mode) on ``x`` with ``backend``: eager PyTorch
    in inference mode on x's device (CUDA calls synchronised, so a call's time is its
    latency), or an ONNX Runtime CPU session of the model exported in memory, with ``threads``
    intra-op threads. The latency table and the end-to-end measurements use this same call."""
    if backend == "onnxruntime":
        return _onnx_runner(model, x, threads)
    if backend != "eager":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    sync = x.device.type == "cuda"

    def run() -> None:
        with torch.inference_mode():
            model(x)
        if sync:
            torch.cuda.synchronize(x.device)

    return run


def onnxruntime_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError(
            "backend 'onnxruntime' needs the onnxruntime package (pip install -e '.[bench]')"
        ) from None
    return ort.__version__


_ONNX_ARENA: list = []


def _shared_onnx_arena(ort) -> None:
    if not _ONNX_ARENA:
        cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                ort.OrtMemType.DEFAULT)  # fmt: skip
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # defaults
        _ONNX_ARENA.append(cpu)


def _onnx_runner(model: nn.Module, x: torch.Tensor, threads: int) -> Callable[[], None]:
    onnxruntime_version()  # a clear error when it is not installed
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: fast, and needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.cpu(), (x.cpu(),), buffer, input_names=["x"], output_names=["y"], dynamo=False
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # one memory arena for all the sessions of the process: a session's own arena keeps its
    # peak (a few outputs' worth), and a table holds a session per (conv, widths) pair
    _shared_onnx_arena(ort)
    options.add_session_config_entry("session.use_env_allocators", "1")
    # idle workers must not spin: a session's spinning threads would take the cores from the
    # next session of the interleaved rounds (no effect at 1 thread: no worker threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.cpu().numpy()}
    return lambda: session.run(None, feed)


def _time_ms(fn, warmup: int) -> Iterator[float]:
    for _ in range(warmup):
        fn()
    while True:
        start = time.perf_counter()
        fn()
        yield 1e3 * (time.perf_counter() - start)


@dataclass
class LatencyTable:
    """Measured milliseconds per (conv, input width, output width), plus the fixed part and
    the per-layer overhead (see the module docstring)."""

    space: SearchSpace
    meta: dict
    convs: dict[str, dict[tuple[int, int], float]]
    fixed_ms: float = 0.0
    overhead_ms: float = 0.0  # per conv layer present (0: the plain sum of the entries)
    _matrices: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------ predictions
    def entries_ms(self, arch: Arch) -> tuple[float, int]:
        """The sum of the table entries of ``arch``'s built conv layers, and their number."""
        if arch.space != self.space:
            raise ValueError(
                f"the table is for {self.space.describe()}, not {arch.space.describe()}"
            )
        total, layers = 0.0, arch.plan().layers()
        for layer in layers:
            try:
                total += self.convs[layer.name][(layer.in_channels, layer.out_channels)]
            except KeyError:
                raise ValueError(
                    f"no entry for {layer.name} at {layer.in_channels}->{layer.out_channels} "
                    "channels: the table was profiled for other widths"
                ) from None
        return total, len(layers)

    def predict_ms(self, arch: Arch) -> float:
        """Predicted latency of ``arch``'s built network: fixed_ms plus, for each conv layer,
        its entry and the per-layer overhead."""
        total, layers = self.entries_ms(arch)
        return self.fixed_ms + total + layers * self.overhead_ms

    def expected_ms(self, width_probs: torch.Tensor, depth_probs: torch.Tensor) -> torch.Tensor:
        """E[latency] (float64, differentiable) of the network drawn from the distributions:
        for each conv, sum over (input, output) widths of P(in) P(out) table[in, out], plus the
        per-layer overhead, each weighed by the probability that the conv's block is kept."""
        length = max(c.channels for c in self.space.convs()) + 1
        length = max(length, self.space.in_channels + 1)
        dev = width_probs.device
        overhead = torch.tensor(self.overhead_ms, dtype=torch.float64, device=dev)

        def conv_ms(name: str, kernel: int, size: int, cin: torch.Tensor, cout: torch.Tensor):
            matrix = self._matrix(name, length, cin.device)
            return cin @ matrix @ cout + overhead  # cin, cout: distributions (sum 1)

        fixed = torch.tensor(self.fixed_ms, dtype=torch.float64, device=dev)
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

    # ------------------------------------------------------------ calibration
    def fit(self, measured: list[tuple[Arch, float]], overhead: bool = True) -> LatencyTable:
        """Set fixed_ms and overhead_ms (in place; returns the table) from networks measured
        end to end, ``[(arch, ms), ...]``: least squares of (measured - sum of entries) on
        the number of conv layers, exact for two networks. One network, networks that all
        have the same number of layers, or ``overhead=False``: no overhead term, fixed_ms is
        the mean of (measured - sum of entries)."""
        if not measured:
            raise ValueError("fit needs at least one measured network")
        points = []
        for arch, ms in measured:
            total, layers = self.entries_ms(arch)
            points.append((layers, ms - total))
        mean_n = statistics.fmean(n for n, _ in points)
        mean_r = statistics.fmean(r for _, r in points)
        spread = sum((n - mean_n) ** 2 for n, _ in points)
        if overhead and spread > 0:
            slope = sum((n - mean_n) * (r - mean_r) for n, r in points) / spread
        else:
            slope = 0.0
        self.overhead_ms = slope
        self.fixed_ms = mean_r - slope * mean_n
        return self

    def without_overhead(self) -> LatencyTable:
        """The plain model of the same entries: no per-layer overhead, fixed_ms calibrated on
        the full network (the table's prediction of the full network is unchanged)."""
        layers = len(Arch.full(self.space).plan().layers())
        return LatencyTable(
            self.space, dict(self.meta), self.convs, self.fixed_ms + layers * self.overhead_ms
        )

    def check(self, source: str = "the latency table", **expected) -> None:
        """A ValueError naming every metadata key (backend, batch, threads, device, ...) whose
        recorded value differs from the one expected, e.g. ``check(backend="onnxruntime")``."""
        wrong = [
            f"{key} {self.meta.get(key, 'unrecorded')!r} (not {value!r})"
            for key, value in expected.items()
            if self.meta.get(key) != value
        ]
        if wrong:
            raise ValueError(f"{source} was profiled with {', '.join(wrong)}")

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
            "overhead_ms": self.overhead_ms,
            "convs": {
                name: [[cin, cout, ms] for (cin, cout), ms in sorted(pairs.items())]
                for name, pairs in self.convs.items()
            },
        }

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table (this format, or tas-latency/1: no overhead term); a file that is not
        one, or names another space, is a ValueError. What it was profiled on (backend, batch,
        threads, device) is in ``meta``: see `check`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"latency table {path}: cannot be read ({type(err).__name__})"
            ) from None
        if not isinstance(data, dict) or data.get("format") not in FORMATS:
            raise ValueError(f"latency table {path}: not a {' or '.join(FORMATS)} file")
        try:
            sp = data["space"]
            space = SearchSpace.from_name(
                sp["backbone"], sp["depth"], sp["num_classes"], shortcut=sp["shortcut"]
            )
            convs = {
                name: {(int(a), int(b)): float(ms) for a, b, ms in rows}
                for name, rows in data["convs"].items()
            }
            table = cls(
                space,
                dict(data["meta"]),
                convs,
                float(data["fixed_ms"]),
                float(data.get("overhead_ms", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"latency table {path}: malformed ({' '.join(str(err).split())})"
            ) from None
        if not all(math.isfinite(v) for v in (table.fixed_ms, table.overhead_ms)):
            raise ValueError(f"latency table {path}: malformed (fixed_ms or overhead_ms)")
        missing = {c.name for c in timed_convs(space)} - set(convs)
        if missing:
            raise ValueError(f"latency table {path}: no entries for {sorted(missing)[:3]}")
        return table


def shallowest(space: SearchSpace) -> Arch:
    """The network with the fewest blocks the space allows, at full widths: with the full
    network, what `profile` fits the fixed part and the per-layer overhead on."""
    blocks = tuple(stage.depth_choices[0] for stage in space.stages)
    return Arch(space, blocks, {c.name: c.channels for c in space.kept_convs(blocks)})


def cpu_flags() -> list[str]:
    """The CPU's flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                 if ln.startswith("flags")), [])  # fmt: skip


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16-mixed training
    is faster than fp32; on AVX2 alone it is far slower."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def cpu_model() -> str:
    """The CPU's model name and the vector flags that decide oneDNN's kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), platform.machine())  # fmt: skip
    flags = cpu_flags()
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
    overhead: bool = True,
) -> LatencyTable:
    """Time every (input width, output width) pair of every conv of ``space`` and, in the
    same interleaved rounds, the full network and (with ``overhead``) the shallowest one, with
    ``backend`` on ``device`` with ``threads`` threads, fp32; fit fixed_ms and overhead_ms on
    the two networks (see the module docstring)."""
    dev = check_device(backend, device)
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    meta = {
        "device": device_name(dev),
        "backend": backend,
        "batch": batch,
        "threads": threads,
        "precision": "fp32",
        "torch": torch.__version__,
        "rounds": rounds,
    }
    if backend == "onnxruntime":
        meta["onnxruntime"] = onnxruntime_version()
    runs = []  # (conv name, cin, cout, timer)
    inputs: dict[tuple[int, ...], torch.Tensor] = {}  # one per shape: at batch 256 they add up
    for conv in timed_convs(space):
        for cin in conv.inputs:
            for cout in conv.outputs:
                module = _module(conv, cin, cout).to(dev)
                shape = (batch, cin, conv.in_size, conv.in_size)
                if shape not in inputs:
                    inputs[shape] = torch.randn(shape, device=dev)
                x = inputs[shape]
                timer = _time_ms(runner(module, x, backend, threads), warmup)
                runs.append((conv.name, cin, cout, timer))
    times: dict[tuple[str, int, int], list[float]] = {(n, a, b): [] for n, a, b, _ in runs}
    networks = {"full": Arch.full(space), "shallowest": shallowest(space)}
    if not overhead or networks["shallowest"].blocks == networks["full"].blocks:
        del networks["shallowest"]  # nothing to fit an overhead on
    image = torch.randn(batch, space.in_channels, space.input_size, space.input_size,
                        device=dev)  # fmt: skip
    net_timers = {
        name: _time_ms(runner(build_model(arch).to(dev).eval(), image, backend, threads), warmup)
        for name, arch in networks.items()
    }
    net_times: dict[str, list[float]] = {name: [] for name in networks}
    for r in range(rounds):  # interleaved: every pair and network once per round
        for name, cin, cout, timer in runs:
            times[(name, cin, cout)].append(next(timer))
        for name, timer in net_timers.items():
            net_times[name].append(next(timer))
        if progress:
            print(f"round {r + 1}/{rounds}: {len(runs)} conv shapes", flush=True)
    convs: dict[str, dict[tuple[int, int], float]] = {}
    for (name, cin, cout), values in times.items():
        convs.setdefault(name, {})[(cin, cout)] = statistics.median(values)
    measured = {name: statistics.median(values) for name, values in net_times.items()}
    meta["measured_ms"] = measured  # the networks fixed_ms and overhead_ms are fitted on
    table = LatencyTable(space, meta, convs)
    return table.fit([(networks[name], ms) for name, ms in measured.items()], overhead)


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
    prof.add_argument("--device", default="cpu", help="cpu, or cuda (eager backend)")
    prof.add_argument("--threads", type=int, default=None)
    prof.add_argument("--rounds", type=int, default=15)
    prof.add_argument(
        "--overhead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit a per-layer overhead on the full and the shallowest network (default)",
    )
    prof.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    space = SearchSpace.cifar_resnet(args.depth, args.num_classes)
    try:
        check_device(args.backend, args.device)
    except ValueError as err:
        parser.error(str(err))
    start = time.time()
    table = profile(space, args.batch, args.backend, args.threads, args.rounds,
                    device=args.device, progress=True, overhead=args.overhead)  # fmt: skip
    table.save(args.out)
    pairs = sum(len(p) for p in table.convs.values())
    print(f"{args.out}: {pairs} (conv, widths) entries, fixed {table.fixed_ms:.3f} ms, "
          f"overhead {table.overhead_ms:.4f} ms per conv layer, "
          f"profiled in {time.time() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
