"""Target 5 (memory): peak resident memory of search iterations at batch 256, measured in a
fresh process per network (ru_maxrss), beside that of plain full-network training steps.

    python benchmarks/search_memory.py [--depths 20 56 110] [--steps 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import setup, table

CHILD = """
import resource, sys, torch, torch.nn.functional as F, tas
torch.set_num_threads({threads})
depth, batch, kind, steps = {depth}, {batch}, "{kind}", {steps}
space = tas.SearchSpace.cifar_resnet(depth)
x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
if kind == "search":
    net = tas.Supernet(space)
    w = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    a = torch.optim.Adam(net.arch_parameters(), lr=1e-3)
    target = 0.5 * tas.Arch.full(space).macs
    for _ in range(steps):
        tas.search_step(net, w, a, (x, y), (x, y), tas.MacsBudget(target, 0.1 * target))
elif kind == "distill":  # a half-MACs student learning from the full network
    model = tas.build_model(tas.Arch.uniform(space, 0.5))
    teacher = tas.build_model(tas.Arch.full(space)).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        with torch.no_grad():
            t = teacher(x)
        loss = tas.kd_loss(model(x), t, y); opt.zero_grad(); loss.backward(); opt.step()
else:
    model = tas.build_model(tas.Arch.full(space))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)  # KiB -> GiB
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(setup(args.threads))
    rows = []
    for depth in args.depths:
        peak = {}
        for kind in ("plain", "search", "distill"):
            code = CHILD.format(
                threads=args.threads, depth=depth, batch=args.batch, kind=kind, steps=args.steps
            )
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            peak[kind] = float(out.stdout.strip().splitlines()[-1])
        rows.append(
            [
                f"ResNet-{depth}",
                args.batch,
                f"{peak['plain']:.2f}",
                f"{peak['search']:.2f}",
                f"{peak['distill']:.2f}",
                "yes" if max(peak.values()) < 6 else "**no**",
            ]
        )
        print(rows[-1], flush=True)
    print(
        table(
            [
                "network",
                "batch",
                "plain training peak RSS GiB",
                "search peak RSS GiB",
                "distillation peak RSS GiB",
                "all < 6 GB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
