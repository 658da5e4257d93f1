"""Image batches as plain tensors, for the methods that look at data outside a Lightning fit
(sensitivity analysis, ThiNet and LASSO's activation samples, Sparse Structure Selection's
short training, AMC's reward). Both halves come from the search split of the *training* set
(the test set never makes a choice):

* ``half="weights"``: the half the weights train on (samples of activations, training steps);
* ``half="arch"``: the held-out half (scores that choose between networks).

    batches = sample_batches("cifar10", None, 32, images=2000, half="arch")
    for x, y in training_stream("cifar10", None, 32, batch_size=128):  # augmented, endless
        ...
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator

import torch

from .choose import data_module

HALVES = ("weights", "arch")


def _module(name: str, root: str | None, image_size: int, batch: int, seed: int, **kw):
    dm = data_module(
        name, root, batch_size=batch, eval_batch_size=batch, search_split=True, seed=seed,
        image_size=image_size, **kw,
    )  # fmt: skip
    dm.setup()
    return dm


def sample_batches(
    name: str,
    root: str | None,
    image_size: int,
    images: int,
    half: str = "arch",
    batch: int = 500,
    seed: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``images`` images of one half of the search split as normalised, un-augmented ``(x, y)``
    batches of at most ``batch``: the arch half in its fixed class-mixed order (a class-stratified
    subset), the weights half in its seeded shuffled order (a folder of full-size images leaves
    its loader workers with the training crops already applied)."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    if images < 1:
        raise ValueError(f"the number of images must be >= 1, got {images}")
    if half == "arch":
        dm = _module(name, root, image_size, batch, seed, val_subset=images)
        return [dm.transform_batch(b, train=False) for b in dm.val_dataloader()]
    dm = _module(name, root, image_size, batch, seed)
    out, taken = [], 0
    for x, y in dm.train_dataloader()["weights"]:
        x, y = dm.transform_batch((x[: images - taken], y[: images - taken]), train=False)
        out.append((x, y))
        taken += len(y)
        if taken >= images:
            break
    return out


def training_stream(
    name: str, root: str | None, image_size: int, batch_size: int = 128, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ``(x, y)`` batches of the weights half, epoch after epoch, without end (the
    caller decides how many steps it takes)."""
    dm = _module(name, root, image_size, batch_size, seed)
    for epoch in itertools.count():
        loader = dm.train_dataloader()["weights"]
        loader.sampler.set_epoch(epoch)  # a new order each epoch
        for batch in loader:  # CIFAR: augmented on the batch, reseeded per epoch
            yield dm.prepare_batch(batch, train=True, epoch=epoch)


def add_data_arguments(parser: argparse.ArgumentParser, images: int = 2000) -> None:
    """The data options of the scripts that sample images outside a fit (sensitivity.py,
    prune.py): ``--data_name``, ``--root``, ``--images``, ``--batch``."""
    parser.add_argument("--data_name", default="cifar10", help="as --data.name of train.py")
    parser.add_argument("--root", default=None, help="as --data.root of train.py")
    parser.add_argument(
        "--images", type=int, default=images, help="images sampled from the search split"
    )
    parser.add_argument("--batch", type=int, default=500, help="batch size of those samples")
