"""Timing helpers shared by the benchmarks: pinned threads, warm-up, interleaved repeats,
medians, and a header naming the machine."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

import tas
import tas.latency


def setup(threads: int) -> str:
    """Pin intra-op threads and return a one-line description of the machine."""
    torch.set_num_threads(threads)
    cpu = tas.latency.cpu_model()  # model name and the vector flags that pick oneDNN's kernels
    load = load_average()
    return (
        f"{datetime.date.today()}  {platform.node() or 'host'}: {cpu}, "
        f"{threads} threads, torch {torch.__version__}, load avg {load:.2f} at start"
    )


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def measure_networks(
    archs: dict, batch: int, backend: str, threads: int, rounds: int, warmup: int, device="cpu"
) -> dict[str, float]:
    """Milliseconds per forward of each ``tas.Arch``'s built network (eval mode, seed-0
    weights) on one random batch, through ``tas.latency.runner``, interleaved in one run."""
    space = next(iter(archs.values())).space
    x = torch.randn(batch, space.in_channels, space.input_size, space.input_size, device=device)
    fns = {}
    for name, arch in archs.items():
        torch.manual_seed(0)
        model = tas.build_model(arch).to(device).eval()
        fns[name] = tas.latency.runner(model, x, backend, threads)
    return {name: 1e3 * s for name, s in interleaved(fns, rounds, warmup).items()}


def interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin so that machine noise
    hits every side alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
