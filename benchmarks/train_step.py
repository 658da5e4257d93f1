"""The memory layout and precision of a final training: one training step (forward, loss,
backward, SGD) of the networks a study trains, in NCHW and in channels-last, in fp32 and (with
``--bf16``) under bf16 autocast as Lightning's ``bf16-mixed`` runs it, interleaved in one run;
the ratios say which layout and precision a study's trainings should use on this CPU (bf16 pays
only where the CPU has native bf16: avx512_bf16 or AMX; on AVX2 it is far slower).

    python -m benchmarks.train_step --depth 20 --batch 128 --threads 1 [--bf16]

Networks: the full network (the Scratch rows and the reference row), the uniform network at
``--ratio`` of its MACs (a compact network of the study's size) trained alone and under
knowledge distillation from the full network (the KD rows: the teacher's forward is part of
the step, as in distill.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table

LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # bf16: autocast, fp32 weights (bf16-mixed)


def step_fn(
    space: tas.SearchSpace,
    arch: tas.Arch,
    batch: int,
    fmt: torch.memory_format,
    kd: bool,
    dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One SGD step of ``arch``'s network on a random batch in layout ``fmt`` (with a frozen
    full-network teacher's forward and the KD loss when ``kd``), under CPU autocast to ``dtype``
    when it is given."""
    torch.manual_seed(0)
    model = tas.build_model(arch).to(memory_format=fmt)
    teacher = tas.build_model(tas.Arch.full(space)).eval().to(memory_format=fmt) if kd else None
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, space.input_size, space.input_size).contiguous(memory_format=fmt)
    y = torch.randint(0, space.num_classes, (batch,))

    def run() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    soft = teacher(x)
                loss = tas.kd_loss(logits, soft, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--bf16", action="store_true", help="also time each case under bf16 autocast (bf16-mixed)"
    )
    args = ap.parse_args(argv)
    print(setup(args.threads))
    space = tas.SearchSpace.cifar_resnet(args.depth)
    cases = {
        "full": (tas.Arch.full(space), False),
        f"uniform {args.ratio:g}": (tas.Arch.uniform(space, args.ratio), False),
        f"uniform {args.ratio:g} + KD": (tas.Arch.uniform(space, args.ratio), True),
    }
    precisions = list(PRECISIONS) if args.bf16 else ["fp32"]
    fns = {
        f"{name} {layout} {prec}": step_fn(space, arch, args.batch, fmt, kd, PRECISIONS[prec])
        for name, (arch, kd) in cases.items()
        for layout, fmt in LAYOUTS.items()
        for prec in precisions
    }
    seconds = interleaved(fns, args.repeats)
    rows = []
    for name in cases:
        base = seconds[f"{name} nchw fp32"]
        for key in (f"{layout} {prec}" for layout in LAYOUTS for prec in precisions):
            rows.append([name, key, f"{seconds[f'{name} {key}']:.3f}",
                         f"**{base / seconds[f'{name} {key}']:.2f}**"])  # fmt: skip
    print(f"\nResNet-{args.depth}, batch {args.batch}, {args.threads} threads, "
          f"{args.repeats} repeats")  # fmt: skip
    print(table(["network", "layout, precision", "s/step", "speed-up over NCHW fp32"], rows))


if __name__ == "__main__":
    main()
