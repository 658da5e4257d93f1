"""Target 1 (and 2, 5): one search iteration (weight step + architecture step, exactly
`tas.search_step`, the code the Lightning system runs) against one plain training step of the
full network (forward, loss, backward, SGD), same batch size, measured interleaved, each in the
NCHW and the channels-last layout; the ratio divides the faster search by the faster plain
step (what a user would otherwise run). Prints the CPU, its ISA flags and oneDNN's dispatch.

    python benchmarks/search_step.py                       # ResNet-20/56, batch 64/256, fp32
    python benchmarks/search_step.py --depths 20 56 110 --batches 256 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table


def make_fns(depth: int, batch: int, precision: str) -> dict[str, Callable[[], None]]:
    """The plain step and the search iteration, each in the NCHW and channels-last layouts."""
    torch.manual_seed(0)
    space = tas.SearchSpace.cifar_resnet(depth)
    target = 0.5 * tas.Arch.full(space).macs
    budget = tas.MacsBudget(target, 0.1 * target)
    amp = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )
    fns = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
        net = tas.Supernet(space)
        net.set_tau(1.0)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9, nesterov=True)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3, betas=(0.5, 0.999))
        full = tas.build_model(tas.Arch.full(space)).to(memory_format=fmt)
        p_opt = torch.optim.SGD(full.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        xw, xa = [
            (torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt),
             torch.randint(0, 10, (batch,)))
            for _ in range(2)
        ]  # fmt: skip

        def search(net=net, w_opt=w_opt, a_opt=a_opt, xw=xw, xa=xa) -> None:
            with amp():
                tas.search_step(net, w_opt, a_opt, xw, xa, budget)

        def plain(full=full, p_opt=p_opt, xw=xw) -> None:
            with amp():
                loss = F.cross_entropy(full(xw[0]), xw[1])
            p_opt.zero_grad(set_to_none=True)
            loss.backward()
            p_opt.step()

        fns[f"search_{layout}"], fns[f"plain_{layout}"] = search, plain
    return fns


def onednn() -> str:
    """What oneDNN / ATen dispatch to on this CPU."""
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"oneDNN (mkldnn) {'on' if torch.backends.mkldnn.is_available() else 'off'}, ATen CPU capability {cap}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(setup(args.threads))
    print(onednn())
    rows = []
    for depth in args.depths:
        for batch in args.batches:
            for precision in args.precisions:
                t = interleaved(make_fns(depth, batch, precision), args.repeats)
                plain, search = (
                    min(t["plain_nchw"], t["plain_cl"]),
                    min(t["search_nchw"], t["search_cl"]),
                )
                rows.append(
                    [
                        f"ResNet-{depth}",
                        batch,
                        precision,
                        f"{t['plain_nchw']:.3f}",
                        f"{t['plain_cl']:.3f}",
                        f"{t['search_nchw']:.3f}",
                        f"{t['search_cl']:.3f}",
                        f"**{search / plain:.2f}**",
                    ]
                )
                print(rows[-1], flush=True)
    print(
        table(
            [
                "network",
                "batch",
                "precision",
                "plain NCHW s",
                "plain channels-last s",
                "search NCHW s",
                "search channels-last s",
                "fastest search / fastest plain",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
