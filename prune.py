"""Prune a trained full network with a criterion-based method, for comparison with TAS.

    python prune.py --method l1_norm  --teacher runs/teacher/checkpoints/last.ckpt --ratio 0.5 \
        --out runs/l1/found.json
    python prune.py --method slimming --teacher runs/slim/checkpoints/last.ckpt --ratio 0.5 \
        --out runs/slim/found.json      # a network trained with --model.bn_l1 1e-4

Writes a found.json (same format as train_search.py's) whose ``search.keep`` lists, per pruned
conv, the filters of the full network it keeps. Train it from scratch (train.py/distill.py
--arch FOUND) or fine-tune it with inherited weights (train.py --arch FOUND --init inherit
--init_from CKPT). Methods: see tas/baselines.py.
"""

from __future__ import annotations

import argparse
import sys

from lightning_modules.teacher import TeacherError, load_teacher
from tas.arch import ArchFormatError, check_ratio
from tas.baselines import l1_norm_prune, slimming_prune

METHODS = {"l1_norm": l1_norm_prune, "slimming": slimming_prune}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prune.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument(
        "--teacher",
        required=True,
        help="train.py checkpoint of the full network, or a torchvision ResNet checkpoint",
    )
    parser.add_argument("--ratio", type=float, required=True, help="target MACs / full MACs")
    parser.add_argument("--out", default="found.json", help="found.json to write")
    parser.add_argument(
        "--input_size",
        type=int,
        default=None,
        help="a torchvision teacher: image side its MACs are counted at (default 224)",
    )
    args = parser.parse_args(argv)
    try:
        check_ratio(args.ratio)
        model, arch = load_teacher(args.teacher, args.input_size)
        if (
            arch.widths != type(arch).full(arch.space).widths
            or arch.blocks != arch.space.max_blocks
        ):
            raise TeacherError(f"{args.teacher} is a pruned network; prune the full one")
        pruned, keep = METHODS[args.method](model, args.ratio)
        pruned.search["keep"] = {name: idx.tolist() for name, idx in keep.items()}
        pruned.search["pruned_from"] = args.teacher
        pruned.save(args.out)
    except (ValueError, TeacherError, ArchFormatError, OSError) as err:
        print(f"prune.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.out}: {pruned.summary()}")


if __name__ == "__main__":
    main()
