"""Prune a trained full network with a criterion-based method, for comparison with TAS.

    python prune.py --method l1_norm  --teacher runs/teacher/checkpoints/last.ckpt --ratio 0.5 \
        --out runs/l1/found.json
    python prune.py --method slimming --teacher runs/slim/checkpoints/last.ckpt --ratio 0.5 \
        --out runs/slim/found.json      # a network trained with --model.bn_l1 1e-4

Writes a found.json (same format as train_search.py's) whose ``search.keep`` lists, per pruned
conv, the filters of the full network it keeps. Train it from scratch (train.py/distill.py
--arch FOUND) or fine-tune it with inherited weights (train.py --arch FOUND --init inherit
--init_from CKPT). Methods: see tas/baselines/.

``--method magnitude --sparsity 0.9 [--scope global]`` prunes weights instead (Han et al.
2015, tas/baselines/sparsity.py): found.json is the full network and ``NAME.masks.pt`` beside it holds
the masks, which train.py and distill.py keep applied (pruned weights stay exactly zero).
``--method sensitivity --sensitivity DIR/sensitivity.json --ratio 0.5`` reads per-layer L1
ratios off sensitivity.py's curves (tas/baselines/sensitivity.py).
``--method sss --ratio 0.5 --steps 200 --batch 64`` trains block scaling factors with a
sparsity penalty and removes the blocks with the smallest (Huang & Wang 2018, tas/baselines/sss.py).
``--method amc --ratio 0.5 --episodes 400`` lets a DDPG agent choose per-layer L1 pruning
ratios, rewarded by held-out accuracy without fine-tuning (He et al. 2018, tas/baselines/amc.py).
``--method netadapt --latency_table lat.json --target_ms 1.5`` shrinks the network one layer
per iteration, short fine-tunes choosing the layer (tas/baselines/netadapt.py); ``--ratio`` instead of
the two aims it at MACs.

Iterative pruning (tas/baselines/schedules.py): ``--round R/K`` prunes round R of a K-round schedule to
the final ``--sparsity`` (magnitude; give the last round's ``--masks`` so its pruned weights stay
pruned) or ``--ratio`` (l1_norm; ``--teacher`` may then be the last round's pruned network, and
``search.keep`` indexes its filters), from the last round's fine-tuned checkpoint.

Methods that look at images (``DATA_METHODS``) sample them from the search split of the
training set (``--data_name``, ``--root``, ``--images``, ``--batch``; never the test set).
A method that changes the kept weights (a reconstruction of the next layer) also writes
``NAME.init.ckpt``, the pruned network with those weights, named in found.json's
``search.init_ckpt``: fine-tune it with ``train.py --arch FOUND --init inherit --init_from
NAME.init.ckpt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_modules.data import DataError
from lightning_modules.data.samples import add_data_arguments, sample_batches, training_stream
from lightning_modules.teacher import TeacherError, load_teacher, save_network
from tas.arch import Arch, ArchFormatError, check_ratio
from tas.baselines import l1_norm_prune, slimming_prune
from tas.baselines.amc import Episode, amc_prune
from tas.baselines.channel_selection import lasso_prune, thinet_prune
from tas.baselines.netadapt import Iteration, netadapt_prune, netadapt_prune_macs
from tas.baselines.schedules import parse_round, prune_further, round_macs_ratio, round_sparsity
from tas.baselines.sensitivity import prune_by_sensitivity
from tas.baselines.sparsity import (
    SCOPES,
    apply_masks,
    load_masks,
    magnitude_masks,
    masked_macs,
    save_masks,
    sparsity_of,
    storage_bytes,
)
from tas.baselines.sss import sss_prune
from tas.latency import LatencyTable

METHODS = {"l1_norm": l1_norm_prune, "slimming": slimming_prune}  # (model, ratio) -> arch, keep
WEIGHT_METHODS = ("magnitude",)  # weight-level: the network keeps its shape, a mask file goes along
ITERATIVE_METHODS = ("magnitude", "l1_norm")  # --round R/K
CURVE_METHODS = ("sensitivity",)  # per-layer ratios read off sensitivity.py's curves

# Methods that need images: (full model, ratio, args) -> (arch, keep, the pruned network when the
# method changed its kept weights, else None). Images come from `batches`.
DataMethod = Callable[
    [torch.nn.Module, float, argparse.Namespace],
    tuple[Arch, dict[str, torch.Tensor], torch.nn.Module | None],
]
DATA_METHODS: dict[str, DataMethod] = {}


def batches(args: argparse.Namespace, model: torch.nn.Module, half: str) -> list:
    """``args.images`` images of the search split's ``half`` ("weights": samples and training;
    "arch": held-out scores) as normalised ``(x, y)`` batches."""
    size = model.space.input_size
    return sample_batches(args.data_name, args.root, size, args.images, half, args.batch)


def channel_selection(prune: Callable) -> DataMethod:
    """ThiNet or LASSO (tas/baselines/channel_selection.py): activations sampled at 10 positions of each of
    ``--images`` images of the weights half; the rebuilt next layers go to NAME.init.ckpt."""
    return lambda model, ratio, args: prune(model, ratio, batches(args, model, "weights"))


DATA_METHODS["thinet"] = channel_selection(thinet_prune)
DATA_METHODS["lasso"] = channel_selection(lasso_prune)


def amc(model: torch.nn.Module, ratio: float, args: argparse.Namespace) -> tuple:
    """AMC (tas/baselines/amc.py): ``--episodes`` episodes of its DDPG agent (the first quarter random),
    each pruned network scored, unretrained, on ``--images`` held-out images, after its BN
    statistics are recomputed on ``--calibration_images`` training-half images (0: inherited)."""
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if args.calibration_images < 0:
        raise ValueError(f"--calibration_images must be >= 0, got {args.calibration_images}")
    held_out = batches(args, model, "arch")
    calibration = None
    if args.calibration_images:
        size, n = model.space.input_size, args.calibration_images
        calibration = sample_batches(args.data_name, args.root, size, n, "weights", args.batch)
    every = max(1, args.episodes // 20)

    def report(e: Episode) -> None:
        if e.episode % every == 0 or e.episode == args.episodes:
            print(f"amc episode {e.episode}/{args.episodes}: held-out top-1 {e.reward:.3f}, "
                  f"{e.macs / 1e6:.2f}M MACs ({e.seconds:.1f} s)", flush=True)  # fmt: skip

    arch, keep = amc_prune(
        model, ratio, held_out, args.episodes, progress=report, calibration=calibration
    )
    return arch, keep, None


DATA_METHODS["amc"] = amc


def netadapt(model: torch.nn.Module, ratio: float | None, args: argparse.Namespace) -> tuple:
    """NetAdapt to ``--target_ms`` on ``--latency_table``, or to ``--ratio`` x full MACs: each
    proposal fine-tuned ``--short_steps`` steps on augmented training batches of ``--batch``,
    scored on ``--images`` held-out images."""
    if not 0 < args.decrement < 1:
        raise ValueError(f"--decrement must be in (0, 1), got {args.decrement}")
    if (args.target_ms is None) != (args.latency_table is None):
        raise ValueError("--target_ms and --latency_table go together (or neither: --ratio)")
    if args.target_ms is not None and ratio is not None:
        raise ValueError("--method netadapt aims at --target_ms or at --ratio, not both")
    table = None if args.latency_table is None else LatencyTable.load(args.latency_table)
    size = model.space.input_size
    train = training_stream(args.data_name, args.root, size, args.batch)
    held_out = batches(args, model, "arch")

    def report(r: Iteration) -> None:
        unit = "MACs" if table is None else "ms"
        print(f"iteration {r.iteration}: {r.conv} to {r.width} filters, {r.cost:.4g} {unit}, "
              f"held-out top-1 {r.accuracy:.3f} ({r.seconds:.0f} s)", flush=True)  # fmt: skip

    common = {"short_steps": args.short_steps, "progress": report}
    if table is None:
        return netadapt_prune_macs(model, ratio, train, held_out, args.decrement, **common)
    step = args.decrement * table.predict_ms(Arch.full(table.space))
    return netadapt_prune(model, table, args.target_ms, train, held_out, step, **common)


DATA_METHODS["netadapt"] = netadapt


def sss(model: torch.nn.Module, ratio: float, args: argparse.Namespace) -> tuple:
    """Sparse Structure Selection (tas/baselines/sss.py): ``--steps`` steps of ``--batch`` augmented
    training images, weights and block factors together, then the blocks with the smallest
    factors removed (a uniform width fill closes the gap to the budget)."""
    if args.steps is None or args.steps < 1:
        raise ValueError("--method sss needs --steps N >= 1, the training steps")
    stream = training_stream(args.data_name, args.root, model.space.input_size, args.batch)
    every = max(1, args.steps // 10)

    def report(step: int, loss: float) -> None:
        if step % every == 0 or step == args.steps:
            print(f"sss step {step}/{args.steps}: loss {loss:.4f}", flush=True)

    return sss_prune(
        model, ratio, stream, args.steps, lr=args.sss_lr, penalty=args.sss_penalty,
        progress=report,
    )  # fmt: skip


DATA_METHODS["sss"] = sss


def magnitude(model: torch.nn.Module, full: Arch, args: argparse.Namespace) -> Arch:
    """Magnitude masks of the full network: its found.json (the full shape) and, beside it,
    ``NAME.masks.pt``, named in found.json's ``search.masks``."""
    prior = load_masks(args.masks, model) if args.masks else None  # they stay pruned
    masks = magnitude_masks(model, args.sparsity, args.scope, prior)
    out = Path(args.out)
    mask_file = out.with_name(f"{out.stem}.masks.pt")
    meta = {"method": "magnitude", "sparsity": args.sparsity, "scope": args.scope}
    save_masks(mask_file, masks, meta)
    apply_masks(model, masks)
    size, kept_macs = storage_bytes(model), masked_macs(model, masks)
    print(
        f"{mask_file}: {100 * sparsity_of(model):.1f}% of conv and linear weights zeroed; the "
        f"weights take {size['dense'] / 1e6:.2f} MB dense, "
        f"{size['values_and_bitmask'] / 1e6:.2f} MB as nonzero values + a bitmask; "
        f"{kept_macs / 1e6:.2f}M MACs on the kept weights of {full.macs / 1e6:.2f}M"
    )
    arch = Arch(full.space, full.blocks, dict(full.widths))
    arch.search.update(
        {**meta, "masks": mask_file.name, "storage_bytes": size, "masked_macs": kept_macs}
    )
    return arch


def iterative_targets(args: argparse.Namespace) -> None:
    """``--round R/K``: replace the final --sparsity / --ratio by round R's target."""
    if args.masks and args.method not in WEIGHT_METHODS:
        raise ValueError("--masks goes with --method magnitude")
    if not args.round:
        return
    r, k = parse_round(args.round)
    if args.method not in ITERATIVE_METHODS:
        raise ValueError(f"--round works with --method {' or '.join(ITERATIVE_METHODS)}")
    if args.method in WEIGHT_METHODS:
        args.sparsity = round_sparsity(args.sparsity, r, k)
    else:
        args.ratio = round_macs_ratio(args.ratio, r, k)


def read_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict) or not {"baseline", "ratios", "curves"} <= set(data):
        raise ValueError(f"{path}: not a sensitivity.json written by sensitivity.py")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prune.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--method",
        choices=sorted((*METHODS, *WEIGHT_METHODS, *CURVE_METHODS, *DATA_METHODS)),
        required=True,
    )
    parser.add_argument(
        "--sensitivity", help="sensitivity: the sensitivity.json sensitivity.py wrote"
    )
    parser.add_argument(
        "--teacher",
        required=True,
        help="train.py checkpoint of the full network, or a torchvision ResNet checkpoint",
    )
    parser.add_argument("--ratio", type=float, help="target MACs / full MACs (filter methods)")
    parser.add_argument(
        "--sparsity", type=float, help="magnitude: fraction of conv and linear weights zeroed"
    )
    parser.add_argument(
        "--scope", choices=SCOPES, default="layer", help="magnitude: per layer or one threshold"
    )
    parser.add_argument(
        "--round",
        help="R/K: round R of K to the final --sparsity / --ratio, geometric steps "
        "(tas/baselines/schedules.py); --teacher is round R-1's fine-tuned checkpoint",
    )
    parser.add_argument(
        "--masks", help="magnitude: round R-1's NAME.masks.pt (its pruned weights stay pruned)"
    )
    parser.add_argument("--out", default="found.json", help="found.json to write")
    parser.add_argument(
        "--input_size",
        type=int,
        default=None,
        help="a torchvision teacher: image side its MACs are counted at (default 224)",
    )
    group = parser.add_argument_group("netadapt")
    group.add_argument(
        "--latency_table",
        help="latency table of the teacher's space (python -m tas.latency profile)",
    )
    group.add_argument(
        "--target_ms", type=float, help="predicted latency to reach, ms (else --ratio: MACs)"
    )
    group.add_argument(
        "--decrement",
        type=float,
        default=0.05,
        help="cost cut asked of each iteration, a fraction of the full latency (or MACs)",
    )
    group.add_argument(
        "--short_steps", type=int, default=20, help="SGD steps fine-tuning each proposal"
    )
    group = parser.add_argument_group("sss")
    group.add_argument(
        "--steps",
        type=int,
        help="sss: training steps (one --batch of images each) before selecting",
    )
    group.add_argument(
        "--sss_lr",
        type=float,
        default=0.01,
        help="sss: SGD lr of the weights and APG lr of the factors",
    )
    group.add_argument(
        "--sss_penalty",
        type=float,
        default=0.5,
        help="sss: L1 penalty on the block factors; each step soft-thresholds them by "
        "sss_lr x penalty (0.5 at lr 0.01: the 4 weakest of ResNet-20's 6 at 0 in 200 steps)",
    )
    group = parser.add_argument_group("amc")
    group.add_argument(
        "--episodes",
        type=int,
        default=400,
        help="amc: agent episodes, the first quarter random warm-up (the paper: 400); each "
        "scores one pruned network on --images held-out images",
    )
    group.add_argument(
        "--calibration_images",
        type=int,
        default=500,
        help="amc: training-half images each pruned network's BN statistics are recomputed on "
        "before it is scored (0: inherited from the teacher, the paper's way)",
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.method in WEIGHT_METHODS:
            if args.sparsity is None:
                raise ValueError(f"--method {args.method} needs --sparsity S in [0, 1)")
        elif args.method != "netadapt" or args.target_ms is None:
            check_ratio(args.ratio)
        model, arch = load_teacher(args.teacher, args.input_size)
        iterative_targets(args)
        if (
            arch.widths != type(arch).full(arch.space).widths
            or arch.blocks != arch.space.max_blocks
        ) and not (args.round and args.method == "l1_norm"):
            raise TeacherError(f"{args.teacher} is a pruned network; prune the full one")
        if args.method in WEIGHT_METHODS:
            pruned = magnitude(model, arch, args)
        elif args.method in CURVE_METHODS:
            if not args.sensitivity:
                raise ValueError("--method sensitivity needs --sensitivity DIR/sensitivity.json")
            pruned, keep = prune_by_sensitivity(model, read_json(args.sensitivity), args.ratio)
            pruned.search["keep"] = {name: idx.tolist() for name, idx in keep.items()}
            pruned.search["sensitivity"] = args.sensitivity
        elif args.method in DATA_METHODS:
            pruned, keep, network = DATA_METHODS[args.method](model, args.ratio, args)
            pruned.search["keep"] = {name: idx.tolist() for name, idx in keep.items()}
            if network is not None:
                out = Path(args.out)
                init = out.with_name(f"{out.stem}.init.ckpt")
                save_network(init, network, pruned)
                pruned.search["init_ckpt"] = init.name
        else:
            prune = METHODS[args.method]
            pruned, keep = (
                prune_further(prune, model, arch, args.ratio)  # keep: --teacher's filters
                if args.round
                else prune(model, args.ratio)
            )
            pruned.search["keep"] = {name: idx.tolist() for name, idx in keep.items()}
        pruned.search["pruned_from"] = args.teacher
        if args.round:
            pruned.search["round"] = args.round
        pruned.save(args.out)
    except (ValueError, TeacherError, ArchFormatError, DataError, OSError) as err:
        print(f"prune.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.out}: {pruned.summary()}")


if __name__ == "__main__":
    main()
