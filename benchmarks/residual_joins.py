"""What a network's residual joins cost: each block's ``relu(branch + zero-padded shortcut)``
timed alone at its shapes, summed, against the whole network end to end (eager, inference
mode; interleaved repeats, median). A latency table leaves the joins out of its entries (its
fixed part and per-layer overhead absorb them), so this says how much a per-block join term
could change its predictions.

    python -m benchmarks.residual_joins --depth 20 --batch 256 --threads 2 --repeats 7
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table
from tas.compact import ResidualBlock, add_padded, build_model


def join_shapes(model: torch.nn.Module, image: torch.Tensor) -> list[tuple[tuple, tuple]]:
    """(block input shape, block output shape) of every residual block, in order."""
    shapes = []

    def record(module, inputs, output):
        shapes.append((tuple(inputs[0].shape), tuple(output.shape)))

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, ResidualBlock) and m.residual]  # fmt: skip
    try:
        model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def joins_fn(shapes: list[tuple[tuple, tuple]]):
    """One call runs every join of the network alone, on tensors of its shapes (the shortcut
    at the block's input width, the branch at its output width, both at the output size)."""
    pairs = []
    for (n, c_in, _, _), (_, c_out, h, w) in shapes:
        pairs.append((torch.randn(n, c_out, h, w), torch.randn(n, c_in, h, w)))

    def run() -> None:
        for branch, skip in pairs:
            F.relu(add_padded(branch, skip))

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.5, 0.25],
                    help="uniform networks at these MACs ratios, beside the full one")  # fmt: skip
    args = ap.parse_args(argv)
    print(setup(args.threads))
    space = tas.SearchSpace.cifar_resnet(args.depth)
    archs = {"full": tas.Arch.full(space)}
    archs.update({f"uniform {r:g}": tas.Arch.uniform(space, r) for r in args.ratios})
    image = torch.randn(args.batch, space.in_channels, space.input_size, space.input_size)
    rows = []
    with torch.inference_mode():
        fns = {}
        for name, arch in archs.items():
            model = build_model(arch).eval()
            fns[name] = lambda model=model: model(image)
            fns[f"{name} joins"] = joins_fn(join_shapes(model, image))
        seconds = interleaved(fns, args.repeats)
    for name, arch in archs.items():
        network, joins = 1e3 * seconds[name], 1e3 * seconds[f"{name} joins"]
        rows.append([name, f"{arch.macs / 1e6:.2f}", f"{network:.2f}", f"{joins:.2f}",
                     f"{100 * joins / network:.1f}%"])  # fmt: skip
    print(f"\nResNet-{args.depth}, eager, batch {args.batch}, {args.threads} threads\n")
    print(table(["network", "MACs (M)", "network ms", "its joins alone ms", "joins / network"],
                rows))  # fmt: skip


if __name__ == "__main__":
    main()
