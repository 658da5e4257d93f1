"""Target 1 (and 2, 5): one search iteration (weight step + architecture step, exactly
`tas.search_step`, the code the Lightning system runs) against one plain training step of the
full network (forward, loss, backward, SGD), same batch size, measured interleaved.

    python benchmarks/search_step.py                       # ResNet-20/56, batch 64/256, fp32
    python benchmarks/search_step.py --depths 20 56 110 --batches 256 --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table


def make_fns(depth: int, batch: int, precision: str, channels_last: bool):
    torch.manual_seed(0)
    space = tas.SearchSpace.cifar_resnet(depth)
    net = tas.Supernet(space)
    net.set_tau(1.0)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9, nesterov=True)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3, betas=(0.5, 0.999))
    full = tas.build_model(tas.Arch.full(space))
    p_opt = torch.optim.SGD(full.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        full = full.to(memory_format=fmt)

    def batch_():
        return (
            torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt),
            torch.randint(0, 10, (batch,)),
        )

    xw, xa = batch_(), batch_()
    target = 0.5 * tas.Arch.full(space).macs
    amp = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )

    def search() -> None:
        with amp():
            tas.search_step(net, w_opt, a_opt, xw, xa, tas.MacsBudget(target, 0.1 * target))

    def plain() -> None:
        with amp():
            loss = F.cross_entropy(full(xw[0]), xw[1])
        p_opt.zero_grad(set_to_none=True)
        loss.backward()
        p_opt.step()

    return {"search": search, "plain": plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(setup(args.threads))
    rows = []
    for depth in args.depths:
        for batch in args.batches:
            for precision in args.precisions:
                t = interleaved(make_fns(depth, batch, precision, args.channels_last), args.repeats)
                rows.append(
                    [
                        f"ResNet-{depth}",
                        batch,
                        precision,
                        f"{t['plain']:.3f}",
                        f"{t['search']:.3f}",
                        f"**{t['search'] / t['plain']:.2f}**",
                    ]
                )
                print(rows[-1], flush=True)
    print(
        table(
            [
                "network",
                "batch",
                "precision",
                "plain step s",
                "search iteration s",
                "search / plain",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
