"""How well a latency table predicts end-to-end latency: random networks of a search space and
the full one, each predicted by the table (`tas.latency`) and measured end to end with the same
backend, batch and threads (interleaved repeats, median, after warm-up).

    python -m benchmarks.latency_prediction --depth 20 --backend onnxruntime --batch 1 \\
        --threads 1 [--table lat.json | --save-table lat.json] [--networks 20] [--rounds 15]

Without --table the table is profiled first (same backend, batch, threads, --rounds rounds);
a --table must have been profiled with them. The random networks are spread over
--ratios LO HI of the full network's MACs (`benchmarks.compact_latency.random_in_band`: random
widths and depths around a size level). Two models are reported: the plain sum of the table
entries with the fixed part calibrated on the full network ("sum"), and the same with the
table's per-layer overhead fitted on the full and the shallowest network ("+overhead").
error = predicted / measured - 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tas
import tas.latency
from benchmarks.common import measure_networks, setup, table
from benchmarks.compact_latency import random_in_band


def networks(space: tas.SearchSpace, count: int, lo: float, hi: float) -> dict[str, tas.Arch]:
    """``count`` random networks at MACs ratios spread evenly over [lo, hi] (raised above the
    smallest network of the space), and the full network."""
    full = tas.Arch.full(space)
    blocks = tuple(stage.depth_choices[0] for stage in space.stages)
    smallest = tas.Arch(space, blocks, {c.name: c.candidates[0] for c in space.kept_convs(blocks)})
    lo = max(lo, smallest.macs / full.macs + 0.03)
    out = {}
    for i in range(count):
        ratio = lo if count == 1 else lo + (hi - lo) * i / (count - 1)
        out[f"random {ratio:.2f} #{i}"] = random_in_band(space, ratio, seed=i)
    out["full"] = full
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument(
        "--width_multiple", type=int, default=1,
        help="width candidates rounded to multiples of this (the search's --model.width_multiple)",
    )  # fmt: skip
    ap.add_argument("--backend", default="eager", choices=tas.latency.BACKENDS)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (eager backend)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", help="a profiled table to check instead of profiling one")
    ap.add_argument("--save-table", help="where to write the profiled table")
    ap.add_argument("--networks", type=int, default=20, help="random networks (plus the full)")
    ap.add_argument("--ratios", type=float, nargs=2, default=[0.1, 0.9], metavar=("LO", "HI"))
    ap.add_argument("--rounds", type=int, default=15, help="profile rounds and timed repeats")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        device = tas.latency.check_device(args.backend, args.device)
    except ValueError as err:
        ap.error(str(err))
    print(setup(args.threads))
    space = tas.SearchSpace.cifar_resnet(args.depth, width_multiple=args.width_multiple)
    if args.table:
        lat = tas.latency.LatencyTable.load(args.table)
        if lat.space != space:
            ap.error(f"{args.table} is for {lat.space.describe()}, not {space.describe()}")
        expected = {"backend": args.backend, "batch": args.batch, "threads": args.threads}
        try:
            lat.check(args.table, **expected)
        except ValueError as err:
            ap.error(str(err))
    else:
        start = time.time()
        lat = tas.latency.profile(space, args.batch, args.backend, args.threads, args.rounds,
                                  args.warmup, str(device))  # fmt: skip
        print(f"profiled {sum(len(p) for p in lat.convs.values())} (conv, widths) entries in "
              f"{time.time() - start:.0f} s")  # fmt: skip
        if args.save_table:
            lat.save(args.save_table)
    meta = lat.meta
    print(f"table: {meta.get('backend')} on {meta.get('device')}, batch {meta.get('batch')}, "
          f"{meta.get('threads')} threads, torch {meta.get('torch')}"
          + (f", onnxruntime {meta['onnxruntime']}" if "onnxruntime" in meta else "")
          + f"; fixed {lat.fixed_ms:.4f} ms, overhead {lat.overhead_ms:.4f} ms per conv layer")  # fmt: skip
    plain = lat.without_overhead()

    archs = networks(space, args.networks, *args.ratios)
    torch.set_num_threads(args.threads)
    ms = measure_networks(archs, args.batch, args.backend, args.threads, args.rounds,
                          args.warmup, device)  # fmt: skip

    rows, errors = [], {"sum": [], "+overhead": []}
    for name, arch in archs.items():
        measured = ms[name]
        row = [name, f"{arch.macs / 1e6:.2f}", len(arch.plan().layers())]
        for model, key in ((plain, "sum"), (lat, "+overhead")):
            predicted = model.predict_ms(arch)
            error = 100 * (predicted / measured - 1)
            errors[key].append(abs(error))
            row += [f"{predicted:.3f}", f"{error:+.1f}%"]
        rows.append([*row, f"{measured:.3f}"])
    print()
    multiple = f", widths multiples of {args.width_multiple}" if args.width_multiple > 1 else ""
    print(f"{args.backend}, batch {args.batch}, {args.threads} threads, ResNet-{args.depth} space"
          f"{multiple}")  # fmt: skip
    print()
    print(
        table(
            [
                "network",
                "MACs (M)",
                "conv layers",
                "sum ms",
                "sum error",
                "+overhead ms",
                "+overhead error",
                "measured ms",
            ],
            rows,
        )  # fmt: skip
    )
    print()
    for key, values in errors.items():
        within = sum(e <= 10 for e in values)
        print(f"{key}: mean |error| {statistics.fmean(values):.1f}%, max {max(values):.1f}%, "
              f"{within}/{len(values)} networks within 10%")  # fmt: skip


if __name__ == "__main__":
    main()
