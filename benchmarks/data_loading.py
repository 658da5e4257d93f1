"""Target 3: loading + augmenting one training epoch (decode-once cache, batched augmentation)
against that epoch's training-step time on ResNet-20, measured in one run.

    python benchmarks/data_loading.py [--root ../shared/datasets/cifar10-jpg.tar.gz]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import tas
from benchmarks.common import interleaved, setup, table
from lightning_modules.data import CIFARDataModule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="training steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(setup(args.threads))
    start = time.perf_counter()
    dm = CIFARDataModule("cifar10", root=args.root, batch_size=args.batch)
    dm.setup("fit")
    print(
        f"setup (cache read or first decode): {time.perf_counter() - start:.2f} s; {dm.describe()}"
    )
    batches = len(dm.train_dataloader())

    def data_epoch() -> None:
        for x, y in dm.train_dataloader():
            dm.transform_batch((x, y), train=True)

    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(20)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = dm.transform_batch(next(iter(dm.train_dataloader())), train=True)

    def train_steps() -> None:
        for _ in range(args.steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = interleaved({"data": data_epoch, "train": train_steps}, args.repeats, warmup=1)
    train_epoch = t["train"] / args.steps * batches
    rows = [
        [
            batches,
            args.batch,
            f"{t['data']:.2f}",
            f"{train_epoch:.1f}",
            f"**{100 * t['data'] / train_epoch:.2f}%**",
        ]
    ]
    print(
        table(
            [
                "batches/epoch",
                "batch",
                "load+augment epoch s",
                "ResNet-20 train epoch s",
                "data / train",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
