"""Tests of lightning_modules/data.py: sources, cache, splits, augmentation, data module."""

import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFARDataModule,
    DataError,
    DataNotFoundError,
    EpochShuffleSampler,
    GpuAugment,
    SearchSplitDataModule,
    augment_batch,
    data_module,
    load_split,
    normalize_batch,
    split_per_class,
    stratified_subset,
)
from lightning_modules.data import sources as D
from lightning_modules.data.common import _local_generator, _mix_seed

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"
real_data = pytest.mark.skipif(
    not REAL_ARCHIVE.is_file(), reason=f"real CIFAR-10 archive not at {REAL_ARCHIVE}"
)

CLASSES = ("cat", "dog", "frog")  # sorted -> labels 0, 1, 2
PER_CLASS = {"train": 4, "test": 2}


# --------------------------------------------------------------------------------------------
# Tiny sources: the same images as an ImageFolder, a .tar.gz, a .tar and torchvision pickles
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    folder = base / "folder"
    expected = {}
    for split, per in PER_CLASS.items():
        images, labels = [], []
        for label, cls in enumerate(CLASSES):
            (folder / split / cls).mkdir(parents=True)
            for i in range(per):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # (H, W, 3)
                Image.fromarray(img).save(folder / split / cls / f"{i:04d}.png")
                images.append(img.transpose(2, 0, 1))  # (3, H, W)
                labels.append(label)
        expected[split] = (np.stack(images), np.array(labels))

    # .tar.gz with a top-level prefix, .tar without one.
    targz = base / "tiny.tar.gz"
    with tarfile.open(targz, "w:gz") as tf:
        tf.add(folder, arcname="cifar_tiny")
    tar = base / "tiny.tar"
    with tarfile.open(tar, "w") as tf:
        for split in PER_CLASS:
            tf.add(folder / split, arcname=split)

    # torchvision pickle root; the training images spread over data_batch_1..5.
    pickles = base / "pickles"
    batches = pickles / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    train_x, train_y = expected["train"]
    for i, chunk in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        entry = {
            b"data": train_x[chunk].reshape(len(chunk), -1),
            b"labels": train_y[chunk].tolist(),
        }
        with open(batches / f"data_batch_{i}", "wb") as f:
            pickle.dump(entry, f)
    test_x, test_y = expected["test"]
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({b"data": test_x.reshape(len(test_y), -1), b"labels": test_y.tolist()}, f)

    return {
        "folder": folder,
        "targz": targz,
        "tar": tar,
        "pickles": pickles,
        "expected": expected,
    }


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("TAS_CACHE_DIR", str(d))
    D._PENDING.clear()
    return d


@pytest.mark.parametrize("train", [True, False])
def test_three_sources_agree(tiny: dict, cache_dir: Path, train: bool) -> None:
    split = "train" if train else "test"
    exp_x, exp_y = tiny["expected"][split]
    for kind in ("folder", "targz", "tar", "pickles"):
        x, y = load_split("cifar10", tiny[kind], train)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64, kind
        assert x.shape == (len(exp_y), 3, 32, 32), kind
        assert torch.equal(x, torch.from_numpy(exp_x)), kind
        assert torch.equal(y, torch.from_numpy(exp_y)), kind


def test_archive_is_decoded_once_and_cached(
    tiny: dict, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_decode = D._decode_tar
    monkeypatch.setattr(D, "_decode_tar", lambda *a: calls.append(a) or real_decode(*a))
    x1, y1 = load_split("cifar10", tiny["targz"], True)
    assert len(calls) == 1
    assert sorted(p.name.split("-")[1] for p in cache_dir.glob("*.pt")) == ["test", "train"]
    x2, y2 = load_split("cifar10", tiny["targz"], False)  # same pass filled the test cache
    x3, y3 = load_split("cifar10", tiny["targz"], True)
    assert len(calls) == 1
    assert torch.equal(x1, x3) and torch.equal(y1, y3)
    assert len(y2) == len(CLASSES) * PER_CLASS["test"]

    # A corrupt cache file is ignored and rebuilt.
    for p in cache_dir.glob("*.pt"):
        p.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable data cache"):
        x4, _ = load_split("cifar10", tiny["targz"], True)
    assert len(calls) == 2 and torch.equal(x1, x4)
    assert not list(cache_dir.glob("*.tmp"))

    # A changed source (new mtime) gets a new cache entry.
    st = os.stat(tiny["targz"])
    os.utime(tiny["targz"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_split("cifar10", tiny["targz"], True)
    assert len(calls) == 3


def test_cache_can_be_disabled(tiny: dict, cache_dir: Path) -> None:
    load_split("cifar10", tiny["folder"], True, cache=False)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


def test_default_root_from_env(
    tiny: dict, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAS_DATA_ROOT", str(tiny["pickles"]))
    x, y = load_split("cifar10", None, False)
    assert torch.equal(y, torch.from_numpy(tiny["expected"]["test"][1]))


def test_missing_root_is_one_clean_line() -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_split("cifar10", root="/nonexistent/path")
    msg = str(info.value)
    assert "\n" not in msg
    assert "--data.root" in msg and "/nonexistent/path" in msg
    assert isinstance(info.value, ValueError)


def test_corrupt_archive(tmp_path: Path, tiny: dict, cache_dir: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as info:
        load_split("cifar10", bad, True)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny["targz"].read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated.tar.gz"):
        load_split("cifar10", truncated, True)


def test_empty_folder_is_not_data(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="--data.root"):
        load_split("cifar10", tmp_path, True)


# --------------------------------------------------------------------------------------------
# The real archive
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tas_real_cache")
    load_split("cifar10", REAL_ARCHIVE, True, cache_dir=d)  # the one-time decode (~10-20 s)
    return d


@pytest.mark.data
@real_data
def test_real_archive(real_cache: Path) -> None:
    start = time.perf_counter()
    x, y = load_split("cifar10", REAL_ARCHIVE, True, cache_dir=real_cache)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"cached load took {elapsed:.2f} s"
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (50000,) and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((10,), 5000))
    xt, yt = load_split("cifar10", REAL_ARCHIVE, False, cache_dir=real_cache)
    assert xt.shape == (10000, 3, 32, 32)
    assert torch.equal(torch.bincount(yt), torch.full((10,), 1000))
    # Channel means match the published CIFAR-10 statistics (JPEG moves them a little).
    mean = x[::10].float().mean(dim=(0, 2, 3)) / 255  # every class (sorted by class)
    assert torch.allclose(mean, torch.tensor(CIFAR10_MEAN), atol=0.02)


# --------------------------------------------------------------------------------------------
# Splits and subsets
# --------------------------------------------------------------------------------------------


def _labels(n_per_class: int = 30, num_classes: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return labels[torch.randperm(len(labels), generator=g)]


def test_split_per_class() -> None:
    labels = _labels()
    torch.manual_seed(0)
    a, b = split_per_class(labels, 0.5, seed=0)
    torch.manual_seed(99)  # the global RNG must not matter
    a2, b2 = split_per_class(labels, 0.5, seed=0)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert a.dtype == torch.int64
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert sorted(a.tolist() + b.tolist()) == list(range(len(labels)))
    assert torch.equal(torch.bincount(labels[a]), torch.full((5,), 15))
    assert torch.equal(torch.bincount(labels[b]), torch.full((5,), 15))
    a3, _ = split_per_class(labels, 0.5, seed=1)
    assert not torch.equal(a, a3)


def test_stratified_subset() -> None:
    labels = _labels()
    idx = stratified_subset(labels, 20, seed=3)
    assert idx.dtype == torch.int64 and len(idx) == 20 and len(set(idx.tolist())) == 20
    assert torch.equal(torch.bincount(labels[idx], minlength=5), torch.full((5,), 4))
    assert torch.equal(idx, stratified_subset(labels, 20, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 20, seed=4))
    counts = torch.bincount(labels[stratified_subset(labels, 23, seed=0)], minlength=5)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1
    assert torch.equal(stratified_subset(labels, 1000, seed=0), torch.arange(len(labels)))
    # A class with too few samples gives all it has; the others fill up.
    skewed = torch.cat([torch.zeros(2, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    counts = torch.bincount(skewed[stratified_subset(skewed, 10, seed=0)])
    assert counts.tolist() == [2, 8]


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


def test_normalize_batch_matches_hand_computation() -> None:
    x = torch.tensor([0, 51, 255, 128], dtype=torch.uint8).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    out = normalize_batch(x)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    for c in range(3):
        for v, got in zip([0, 51, 255, 128], out[0, c].flatten().tolist(), strict=True):
            want = (v / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
            assert got == pytest.approx(want, abs=1e-5)


def test_augment_batch() -> None:
    b = 64
    # Each image: a distinct ramp, so crops and flips are visible in the output.
    ramp = torch.arange(32 * 32, dtype=torch.float32).view(32, 32) % 200 + 20
    x = ramp.to(torch.uint8).expand(b, 3, 32, 32).contiguous()  # (B, 3, 32, 32) uint8
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == (b, 3, 32, 32) and out.dtype == torch.float32
    # Different images got different crops / flips.
    distinct = {tuple(o[0, 10].tolist()) for o in out}
    assert len(distinct) > 10
    base = normalize_batch(x[:1])[0]  # (3, 32, 32) un-augmented
    flipped = base.flip(-1)
    # Crops shift: zero padding (normalised black) appears at borders of some images.
    black = normalize_batch(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten()
    has_pad = (out[:, 0] == black[0]).flatten(1).any(1)
    assert has_pad.any() and not has_pad.all()
    # Flips: with no crop, flipped and unflipped images both occur.
    nocrop = augment_batch(x, torch.Generator().manual_seed(1), padding=0)
    is_flip = torch.tensor([torch.allclose(o, flipped) for o in nocrop])
    is_same = torch.tensor([torch.allclose(o, base) for o in nocrop])
    assert (is_flip | is_same).all() and is_flip.any() and is_same.any()
    # Same seed, same output; another seed, another output.
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_batch(x, torch.Generator().manual_seed(2)))


def test_augment_crop_is_a_shifted_window() -> None:
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(5)
    out = augment_batch(x, gen, mean=(0, 0, 0), std=(1, 1, 1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4)).float() / 255
    for i in range(8):
        windows = [
            w
            for dy in range(9)
            for dx in range(9)
            for w in (padded[i, :, dy : dy + 32, dx : dx + 32],)
        ]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


# --------------------------------------------------------------------------------------------
# Synthetic data and the data module
# --------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_learnable() -> None:
    x, y = load_split("synthetic", None, True)
    xt, yt = load_split("synthetic", None, False)
    assert x.shape == (2000, 3, 32, 32) and x.dtype == torch.uint8 and xt.shape[0] == 500
    assert torch.equal(torch.bincount(y), torch.full((10,), 200))
    x2, _ = load_split("synthetic", None, True)
    assert torch.equal(x, x2)
    # A nearest-class-mean classifier is far above chance: the classes are learnable.
    centroids = torch.stack([x[y == c].float().mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(xt.float().flatten(1), centroids).argmin(1)
    assert (pred == yt).float().mean() > 0.5


def test_datamodule_plain() -> None:
    dm = CIFARDataModule(name="synthetic", batch_size=64, eval_batch_size=100, train_subset=500)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.mean.shape == (3,) and dm.std.shape == (3,)
    assert dm.hparams.batch_size == 64
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 500 // 64  # drop_last
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (64,)
    assert torch.equal(torch.bincount(dm.train_labels[dm.train_indices]), torch.full((10,), 50))
    val = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val) == 500 and val[0][0].shape == (100, 3, 32, 32)
    assert torch.equal(torch.cat([b[1] for b in val]), dm.test_labels)  # test set, in order
    xa, ya = dm.transform_batch((x, y), train=True)
    assert xa.dtype == torch.float32 and torch.equal(ya, y)
    xe, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer: evaluation transform
    assert torch.allclose(xe, normalize_batch(x, dm.mean, dm.std))
    assert "synthetic" in dm.describe() and "train 500 of 2000" in dm.describe()


def test_datamodule_search_split() -> None:
    dm = data_module(name="synthetic", batch_size=50, search_split=True, val_subset=100)
    assert isinstance(dm, SearchSplitDataModule) and isinstance(dm.base, CIFARDataModule)
    assert dm.num_classes == 10 and dm.image_size == 32 and dm.hparams.search_split
    assert "not loaded yet" in dm.describe()
    dm.setup()
    loaders = dm.train_dataloader()
    assert set(loaders) == {"weights", "arch"}
    a, b = dm.weight_indices, dm.arch_indices
    assert len(a) == len(b) == 1000 and set(a.tolist()).isdisjoint(b.tolist())
    xw, yw = next(iter(loaders["weights"]))
    assert xw.shape == (50, 3, 32, 32)
    batch = dm.transform_batch({"weights": (xw, yw), "arch": next(iter(loaders["arch"]))}, True)
    assert batch["weights"][0].dtype == torch.float32 and batch["arch"][0].shape == xw.shape
    # Validation iterates (a stratified subset of) the arch half, never the test set.
    val_y = torch.cat([y for _, y in dm.val_dataloader()])
    assert len(val_y) == 100
    val_idx = dm.val_indices()
    assert set(val_idx.tolist()) <= set(b.tolist())
    assert torch.equal(val_y, dm.base.train_labels[val_idx])
    assert len(list(dm.test_dataloader())) == 10  # the base's test set, 500 images
    line = dm.describe()
    assert "train 2000" in line and "search split weights 1000 / arch 1000" in line
    assert "(val 100 of the arch half)" in line and line.count("val ") == 1


def test_search_split_batches_are_those_of_the_seeded_split() -> None:
    """The wrapper's weights, arch and validation batches (images, labels, augmentation) are the
    ones the seeds define: the split of the training subset by split_per_class, each half
    shuffled by its EpochShuffleSampler (seed offsets 1 and 2), the validation subset of the arch
    half in one permutation drawn from seed offset 3."""
    seed, batch, eval_batch = 3, 40, 70
    dm = data_module(
        name="synthetic", batch_size=batch, eval_batch_size=eval_batch, train_subset=600,
        val_subset=150, search_split=True, seed=seed,
    )  # fmt: skip
    dm.setup()
    images, labels = load_split("synthetic", None, True)
    used = stratified_subset(labels, 600, seed)
    a, b = split_per_class(labels[used], 0.5, seed)
    halves = {"weights": (used[a], 1), "arch": (used[b], 2)}
    augment = GpuAugment(*(dm.base.mean.tolist(), dm.base.std.tolist()), seed=seed)
    for epoch in (0, 1):
        loaders = dm.train_dataloader()
        augment.epoch = None  # new loaders: the augmentation reseeds at the next batch
        for key, (index, offset) in halves.items():
            loader = loaders[key]
            loader.sampler.set_epoch(epoch)
            sampler = EpochShuffleSampler(len(index), _mix_seed(seed, offset))
            sampler.set_epoch(epoch)
            order = index[sampler.order()]
            got = list(loader)
            assert len(got) == len(index) // batch  # drop_last
            for k, (x, y) in enumerate(got):
                want = order[k * batch : (k + 1) * batch]
                assert torch.equal(x, images[want]) and torch.equal(y, labels[want])
                augment.set_epoch(epoch)
                xa, ya = dm.prepare_batch((x, y), train=True, epoch=epoch)
                assert torch.equal(xa, augment(images[want], train=True)) and torch.equal(ya, y)
    arch = used[b]
    val = arch[stratified_subset(labels[arch], 150, seed)]
    val = val[torch.randperm(150, generator=_local_generator(_mix_seed(seed, 3)))]
    got = list(dm.val_dataloader())
    assert [len(y) for _, y in got] == [70, 70, 10]
    assert torch.equal(torch.cat([x for x, _ in got]), images[val])
    assert torch.equal(torch.cat([y for _, y in got]), labels[val])
    xe, _ = dm.prepare_batch(got[0], train=False, epoch=0)
    assert torch.equal(xe, normalize_batch(images[val[:70]], dm.base.mean, dm.base.std))


def test_search_validation_batches_mix_the_classes(monkeypatch) -> None:
    """ImageFolder copies store the images sorted by class; the search scores its derived
    network with batch statistics, so every validation batch must hold many classes."""
    dm = data_module(name="synthetic", batch_size=50, search_split=True, val_subset=200)
    load = dm.base._load_split

    def sorted_by_class(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = load(train)
        order = torch.argsort(y, stable=True)
        return x[order], y[order]

    monkeypatch.setattr(dm.base, "_load_split", sorted_by_class)
    dm.setup()
    batches = [y for _, y in dm.val_dataloader()]
    assert len(batches) == 4 and all(len(y.unique()) >= 8 for y in batches)
    assert torch.equal(torch.bincount(torch.cat(batches)), torch.full((10,), 20))
    assert torch.equal(dm.val_indices(), dm.val_indices())  # a fixed order


def test_epoch_shuffle_sampler() -> None:
    s = EpochShuffleSampler(100, seed=7)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1 and sorted(e0) == list(range(100))
    other = EpochShuffleSampler(100, seed=7)
    other.set_epoch(1)
    assert list(other) == e1
    assert len(s) == 100


def test_datamodule_in_lightning(tmp_path: Path) -> None:
    """Lightning calls set_epoch on the sampler and our batch hook; search batches are dicts."""
    import pytorch_lightning as pl

    seen: dict[str, list] = {"train": [], "val": [], "first_idx": []}

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3 * 32 * 32, 10)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            assert isinstance(batch, dict) and set(batch) == {"weights", "arch"}
            x, y = batch["weights"]
            seen["train"].append(x.dtype)
            if batch_idx == 0:
                seen["first_idx"].append(y[:8].tolist())
            return torch.nn.functional.cross_entropy(self.lin(x.flatten(1)), y)

        def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            seen["val"].append(x.dtype)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = data_module(name="synthetic", batch_size=32, search_split=True, val_subset=64)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert seen["train"] and all(dt == torch.float32 for dt in seen["train"] + seen["val"])
    assert len(seen["first_idx"]) == 2 and seen["first_idx"][0] != seen["first_idx"][1]
    assert dm.base.augment.epoch == 1  # the wrapper passed its trainer's epoch on


def test_an_unreadable_image_stops_the_run_or_is_skipped(tmp_path: Path, tiny: dict) -> None:
    """Through train.py: a truncated image in an ImageFolder is named in one line (exit 2), or,
    with --data.skip_bad_images, left out with one warning line; the two decodes are cached
    apart, so a strict run never reads the skipping run's cache."""
    import shutil

    from tests.cli_helpers import QUIET, run_script

    folder = tmp_path / "folder"
    shutil.copytree(tiny["folder"], folder)
    bad = folder / "train" / "dog" / "0001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    common = [*QUIET, "--logger=false", "--model.depth=20", "--data.batch_size=4",
              "--trainer.max_epochs=1", f"--data.root={folder}"]  # fmt: skip
    env = {"TAS_CACHE_DIR": str(tmp_path / "cache")}
    strict = run_script("train.py", *common, f"--out={tmp_path / 'a'}", env=env)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    errors = [ln for ln in strict.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and str(bad) in errors[0] and "cannot decode" in errors[0]
    skip = run_script(
        "train.py", *common, "--data.skip_bad_images=true", f"--out={tmp_path / 'b'}", env=env
    )
    assert skip.returncode == 0, skip.stderr[-2000:]
    assert f"skipped 1 unreadable image(s), first {bad}" in skip.stderr
    again = run_script("train.py", *common, f"--out={tmp_path / 'c'}", env=env)
    assert again.returncode == 2 and str(bad) in again.stderr
