"""Per-layer sensitivity of a trained network (Li et al. 2017): prune each conv alone by its
filters' L1 norms at ratios 0.1 ... 0.9 and score it, unretrained, on held-out images (the
architecture half of the search split: never the test set).

    python sensitivity.py --teacher runs/teacher20/checkpoints/last.ckpt --out runs/sens20
    python prune.py --method sensitivity --sensitivity runs/sens20/sensitivity.json \
        --teacher runs/teacher20/checkpoints/last.ckpt --ratio 0.5 --out runs/sens20/found.json

Writes OUT/sensitivity.json (the curves, and the MACs of each pruned network) and
OUT/sensitivity.png (one curve per layer). prune.py --method sensitivity picks per-layer ratios
from the curves for a MACs target (the smallest accuracy-drop tolerance that fits it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from lightning_modules.data import DataError
from lightning_modules.data.samples import add_data_arguments, sample_batches
from lightning_modules.teacher import TeacherError, load_teacher
from tas.arch import write_text_atomic
from tas.baselines import prunable_convs
from tas.baselines.sensitivity import RATIOS, layer_sensitivity
from tas.evaluate import evaluate


def plot(sensitivity: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ratios = [0.0, *sensitivity["ratios"]]
    for name, curve in sensitivity["curves"].items():
        ax.plot(ratios, [100 * sensitivity["baseline"], *(100 * s for s in curve)], label=name)
    ax.set_xlabel("fraction of the layer's filters pruned (smallest L1 norm first)")
    ax.set_ylabel("held-out accuracy, no retraining (%)")
    ax.set_title("Per-layer sensitivity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sensitivity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="train.py or torchvision checkpoint")
    parser.add_argument("--out", required=True, help="folder for sensitivity.json and .png")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    add_data_arguments(parser)  # --images: held-out (arch-half) images scored
    parser.add_argument("--input_size", type=int, default=None, help="a torchvision teacher's")
    args = parser.parse_args(argv)
    try:
        model, arch = load_teacher(args.teacher, args.input_size)
        if arch != type(arch).full(arch.space):
            raise TeacherError(f"{args.teacher} is a pruned network; analyse the full one")
        batches = sample_batches(
            args.data_name, args.root, arch.space.input_size, args.images, "arch", args.batch
        )
    except (ValueError, TeacherError, DataError, OSError) as err:
        print(f"sensitivity.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)

    def score(net: torch.nn.Module) -> float:
        return evaluate(net, batches).accuracy

    bar = tqdm(total=len(prunable_convs(arch.space)), desc="layers", unit="layer")
    sens = layer_sensitivity(model, score, args.ratios, progress=lambda name: bar.update())
    bar.close()
    sens["teacher"] = args.teacher
    sens["images"] = sum(len(y) for _, y in batches)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sensitivity.json", json.dumps(sens, indent=1) + "\n")
    plot(sens, out / "sensitivity.png")
    worst = min(sens["curves"], key=lambda n: sens["curves"][n][len(args.ratios) // 2])
    print(
        f"{out / 'sensitivity.json'}: {len(sens['curves'])} layers x {len(args.ratios)} ratios on "
        f"{sens['images']} held-out images; baseline {100 * sens['baseline']:.2f}%; most "
        f"sensitive at ratio {args.ratios[len(args.ratios) // 2]}: {worst}"
    )


if __name__ == "__main__":
    main()
