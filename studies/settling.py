"""Is a search's network better than chance? Fine-tune it, the uniform network and random networks
of the same MACs band from the trained full network's weights, the same short schedule for all,
and score each on the architecture half of the search split (never the test set).

    python -m studies.settling --teacher runs/teacher/checkpoints/last.ckpt \
        --found runs/search_warm/found.json --random 5 --out runs/settling_check
    python -m studies.settling --out runs/settling_check --report
    python -m studies.settling --searches runs/search_warm runs/search_scratch   # knob table

Every network keeps each conv's first c filters and each stage's first blocks of the full
network, as the supernet's weight sharing does (``tas.build_model(arch, init_from=teacher)``),
then trains ``--epochs`` epochs on the weight half (SGD, Nesterov, cosine from ``--lr``, the
data module's crop + flip). Each network's result is its own JSON file in ``--out``: a rerun skips
the networks that are done, so two processes (``--only``) can share the work.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import tas
from lightning_modules.data import CIFARDataModule, SearchSplitDataModule
from lightning_modules.teacher import load_teacher
from tas.arch import write_text_atomic
from tas.baselines import random_within
from tas.evaluate import evaluate


def candidates(found: list[str], space: tas.SearchSpace, band: tuple[float, float], n: int):
    """name -> Arch: the found networks, the uniform network and ``n`` random in-band ones."""
    nets = {}
    for path in found:
        arch = tas.Arch.load(path)
        if arch.space != space:
            raise ValueError(f"{path} is a {arch.space.describe()}, not a {space.describe()}")
        nets[f"found:{Path(path).parent.name}"] = arch
    full = tas.Arch.full(space).macs
    low, high = band
    nets["uniform"] = tas.Arch.uniform(space, high / full)
    centre, half = (low + high) / 2 / full, (high - low) / (low + high)
    for seed in range(n):
        nets[f"random:{seed}"] = random_within(space, centre, random.Random(seed), tolerance=half)
    return nets


def data_module(
    space: tas.SearchSpace,
    name: str | None = None,
    root: str | None = None,
    batch_size: int = 128,
    train_subset: int | None = None,
    seed: int = 0,
) -> SearchSplitDataModule:
    """The search split `fine_tune` trains on (weight half) and scores on (architecture half),
    set up: ``name`` None is cifar10 or cifar100 by the space's classes; ``root`` None finds the
    data set as the data module does ($TAS_DATA_ROOT, ./data, ../shared/datasets)."""
    dm = SearchSplitDataModule(
        CIFARDataModule(
            name=name or ("cifar10" if space.num_classes == 10 else "cifar100"),
            root=root,
            batch_size=batch_size,
            eval_batch_size=500,
            train_subset=train_subset,
            seed=seed,
        )
    )
    dm.setup()
    return dm


def fine_tune(
    arch: tas.Arch,
    teacher: torch.nn.Module,
    dm: SearchSplitDataModule,
    epochs: int,
    lr: float,
    seed: int,
) -> dict:
    torch.manual_seed(seed)
    model = tas.build_model(arch, init_from=teacher)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    weights = dm.train_dataloader()["weights"]
    total = epochs * len(weights)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    start = time.time()
    bar = tqdm(total=total, desc=arch.summary()[:60], file=sys.stdout, mininterval=10)
    for epoch in range(epochs):
        weights.sampler.set_epoch(epoch)  # a new order every epoch, a function of (seed, epoch)
        model.train()
        for x, y in weights:
            x, y = dm.prepare_batch((x, y), train=True, epoch=epoch)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    # scored on the whole architecture half
    score = evaluate(model, (dm.transform_batch(b, train=False) for b in dm.val_dataloader()))
    return {
        "arch_half_acc": score.accuracy,
        "images": score.images,
        "seconds": round(time.time() - start),
    }


def report(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "plan.json"]
    if not rows:
        return "no results yet"
    randoms = [r["arch_half_acc"] for r in rows if r["name"].startswith("random:")]
    median = statistics.median(randoms) if randoms else float("nan")
    lines = [
        "| network | MACs (M) | blocks | arch-half top-1 % | vs median random |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["arch_half_acc"]):
        lines.append(
            f"| {r['name']} | {r['macs'] / 1e6:.2f} | {r['blocks']} | "
            f"{100 * r['arch_half_acc']:.2f} | {100 * (r['arch_half_acc'] - median):+.2f} |"
        )
    if randoms:
        lines.append(
            f"\nrandom in-band networks: n={len(randoms)}, median {100 * median:.2f}%, "
            f"range {100 * min(randoms):.2f}-{100 * max(randoms):.2f}%"
        )
    return "\n".join(lines)


def settling_row(run: Path) -> str:
    """One row of the knob table from a finished search's directory."""
    import yaml

    summary = json.loads((run / "search_summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())["model"]
    settle = summary["settling"]
    last = summary["last_epoch_macs"]
    low, high = summary["band_macs"]
    return (
        f"| {run.name} | {'warm' if cfg.get('teacher') else 'scratch'} | {cfg['lr']} | "
        f"{cfg['arch_lr']}{' cosine' if cfg.get('arch_lr_schedule') == 'cosine' else ''} | "
        f"{cfg['arch_weight_decay']} | {cfg['tau_end']} | "
        f"{cfg['num_samples']} | {cfg.get('cost', 'band')} | {summary['epochs']} | "
        f"{settle['width_maxprob']:.3f} / {settle['width_maxprob_min']:.3f} | "
        f"{settle['depth_maxprob']:.3f} / {settle['depth_maxprob_min']:.3f} | "
        f"{settle['argmax_changes']} | {settle['unchanged_epochs']} | {last / 1e6:.2f}M "
        f"({'in' if low <= last <= high else 'out'}) | {100 * summary['val_acc']:.1f} |"
    )


SETTLING_HEAD = (
    "| run | start | weight lr | arch lr | arch wd | tau end | I | cost | epochs "
    "| width maxprob mean / min | depth maxprob mean / min | argmax changes, last epoch "
    "| epochs unchanged at the end | last network MACs (band) | found, arch-half % |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path)
    p.add_argument("--searches", nargs="*", type=Path, help="search runs: print the knob table")
    p.add_argument("--report", action="store_true", help="print the table of what is done")
    p.add_argument("--teacher", help="train.py checkpoint of the full network")
    p.add_argument("--found", nargs="*", default=[], help="found.json files to rank")
    p.add_argument("--random", type=int, default=5, help="random in-band networks")
    p.add_argument("--ratio", type=float, default=0.5, help="the search's target MACs ratio")
    p.add_argument("--tolerance", type=float, default=0.05, help="the search's band width")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_root", default=None)
    p.add_argument("--data_name", default=None, help="default: cifar10/cifar100 by classes")
    p.add_argument("--train_subset", type=int, default=None, help="stratified subset (tests)")
    p.add_argument("--only", nargs="*", help="run only these network names")
    args = p.parse_args(argv)
    if args.searches:
        print("\n".join([SETTLING_HEAD, *(settling_row(r) for r in args.searches)]))
        return
    if args.out is None:
        p.error("--out is required")
    if args.report:
        print(report(args.out))
        return
    if not args.teacher:
        p.error("--teacher is required unless --report")
    try:
        teacher, teacher_arch = load_teacher(args.teacher)
        space = teacher_arch.space
        if teacher_arch != tas.Arch.full(space):
            raise ValueError(f"{args.teacher} is a pruned network, not the full one")
        full = teacher_arch.macs
        band = ((args.ratio - args.tolerance) * full, args.ratio * full)
        nets = candidates(args.found, space, band, args.random)
    except (ValueError, OSError) as err:
        print(f"studies.settling: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    dm = data_module(space, args.data_name, args.data_root, args.batch_size, args.train_subset,
                     args.seed)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for name, arch in nets.items():
        path = args.out / f"{name.replace(':', '_')}.json"
        if path.exists() or (args.only and name not in args.only):
            continue
        result = fine_tune(arch, teacher.train(), dm, args.epochs, args.lr, args.seed)
        row = {
            "name": name,
            "macs": arch.macs,
            "blocks": list(arch.blocks),
            **result,
            "epochs": args.epochs,
            "lr": args.lr,
            "teacher": args.teacher,
            "arch": arch.to_dict(),
        }
        write_text_atomic(path, json.dumps(row, indent=2) + "\n")
        print(f"{name}: {100 * row['arch_half_acc']:.2f}% ({arch.macs / 1e6:.2f}M MACs)")
    print(report(args.out))


if __name__ == "__main__":
    main()
