"""Full-size ImageFolder data (decoded on the fly) and the three commands on it with a
torchvision ResNet: a 2-class folder of 80x96 JPEGs made in the test, 64-pixel crops."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.io import write_jpeg

from lightning_modules.data import (
    DataNotFoundError,
    ImageFolderDataModule,
    SearchSplitDataModule,
    data_module,
    split_per_class,
)
from lightning_modules.data.common import _local_generator, _mix_seed
from tests.cli_helpers import QUIET, run_script
from tests.test_cli_errors import assert_user_error


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("val", 4)):
        for c, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = (torch.rand(3, 80, 96, generator=gen) * 255).to(torch.uint8)
                img[c] = 255  # a learnable cue: the class's colour channel saturated
                write_jpeg(img, str(root / split / cls / f"{i}.jpg"))
    return root


def test_loaders_and_the_search_split(folder):
    dm = ImageFolderDataModule(str(folder), image_size=64, batch_size=4, num_workers=0)
    assert dm.num_classes == 2 and dm.image_size == 64
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and y.shape == (4,)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 64, 64)
    assert len(dm.test_dataloader().dataset) == 8

    dm = SearchSplitDataModule(ImageFolderDataModule(str(folder), 64, batch_size=4, num_workers=0))
    assert dm.num_classes == 2 and dm.image_size == 64
    loaders = dm.train_dataloader()
    weights, arch = set(dm.weight_indices.tolist()), set(dm.arch_indices.tolist())
    assert not weights & arch and len(weights | arch) == 32 and len(weights) == len(arch)
    labels = torch.tensor(dm.base.train_set.targets)
    assert labels[dm.arch_indices].bincount().tolist() == [8, 8]  # split per class
    a, b = split_per_class(labels, 0.5, 0)  # the seeded split, over all of train/
    assert torch.equal(dm.weight_indices, a) and torch.equal(dm.arch_indices, b)
    assert set(loaders) == {"weights", "arch"}
    assert loaders["weights"].dataset.dataset is dm.base.train_set  # augmented
    assert loaders["arch"].sampler.seed == _mix_seed(0, 2)
    val = dm.val_dataloader()
    order = torch.randperm(16, generator=_local_generator(_mix_seed(0, 3)))
    assert torch.equal(val.dataset.indices, b[order])  # the arch half, not val/, class-mixed
    assert val.dataset.dataset is dm.base.train_eval_set  # un-augmented
    x, _ = next(iter(val))
    assert x.shape == (4, 3, 64, 64)
    assert len(dm.test_dataloader().dataset) == 8  # val/
    assert "search split weights 16 / arch 16 (val 16 of the arch half)" in dm.describe()
    assert isinstance(data_module("imagefolder", str(folder), search_split=True), type(dm))


def test_data_order_is_a_function_of_seed_and_epoch(folder):
    def order(epoch: int, seed: int = 0) -> list[int]:
        dm = ImageFolderDataModule(str(folder), 64, batch_size=4, num_workers=0, seed=seed)
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1) == order(1) and order(1) != order(2) and order(1) != order(1, seed=1)


def test_bad_folders_are_refused(tmp_path, folder):
    with pytest.raises(DataNotFoundError, match="no val/ folder"):
        (tmp_path / "train" / "a").mkdir(parents=True)
        ImageFolderDataModule(str(tmp_path))
    with pytest.raises(ValueError, match="needs --data.root"):
        data_module(name="imagefolder")
    with pytest.raises(ValueError, match="imagefolder"):
        data_module(name="imagenet")


def test_torchvision_resnet_three_commands_on_an_image_folder(tmp_path, folder):
    """Train (the user's network), search from it, distil from it: each from the command
    line, with the network's MACs counted at the folder's crop size."""
    data = [
        *QUIET,
        "--logger=false",
        "--data.name=imagefolder",
        f"--data.root={folder}",
        "--data.image_size=64",
        "--data.num_workers=0",
        "--data.batch_size=8",
        "--trainer.max_epochs=1",
    ]
    net = ["--model.backbone=imagenet_resnet", "--model.depth=18"]
    teacher = tmp_path / "teacher"
    result = run_script("train.py", *data, *net, f"--out={teacher}")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = teacher / "checkpoints" / "last.ckpt"
    # the shipped ImageNet configs, shrunk to this folder: fp32 on the CPU, 64-pixel crops
    small = [*data, "--trainer.precision=32-true", "--trainer.accelerator=cpu"]
    small += ["--data.val_subset=null", "--model.channels_last=false"]
    search = tmp_path / "search"
    result = run_script(
        "train_search.py", "--config=configs/imagenet/search_resnet18.yaml", *small,
        f"--teacher={ckpt}", f"--out={search}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((search / "found.json").read_text())
    assert (found["backbone"], found["depth"], found["input_size"]) == ("imagenet_resnet", 18, 64)
    out = tmp_path / "distill"
    result = run_script(
        "distill.py", "--config=configs/imagenet/distill_resnet.yaml", *small,
        f"--arch={search / 'found.json'}", f"--teacher={ckpt}", f"--out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= json.loads((out / "results.json").read_text())["test_acc"] <= 1.0


def test_missing_image_folder_is_one_line(tmp_path):
    result = run_script(
        "train.py", *QUIET, "--logger=false", "--data.name=imagefolder",
        f"--data.root={tmp_path / 'nowhere'}", f"--out={tmp_path / 'run'}",
    )  # fmt: skip
    assert_user_error(result, "no train/ folder")
