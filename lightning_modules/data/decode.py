"""Decoding the on-disk CIFAR layouts into uint8 tensors.

Handles torchvision pickle folders, ImageFolder directories (``train|test/<class>/<image>``)
and ``.tar.gz`` / ``.tgz`` / ``.tar`` archives of either, read sequentially without extracting.
"""

import io
import pickle
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from .common import _IMAGE_SIZE, DataError, _one_line

# torchvision's pickle folders and the files of each split.
_PICKLE_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_PICKLE_FILES = {
    ("cifar10", True): tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("cifar10", False): ("test_batch",),
    ("cifar100", True): ("train",),
    ("cifar100", False): ("test",),
}

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
_SPLITS = ("train", "test")


@dataclass
class _Decoded:
    """Images ``(N, 32, 32, 3)`` uint8 arrays collected per class name, plus their sort keys.

    ``skipped`` None: an image that cannot be decoded stops the load (DataError naming it);
    a list: its place is appended there and the image left out.
    """

    items: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    skipped: list[str] | None = None

    def add(self, cls: str, key: str, image: np.ndarray) -> None:
        self.items.append((cls, key, image))

    def add_encoded(self, cls: str, key: str, data: bytes, where: str) -> None:
        try:
            image = _decode_image(data, where)
        except DataError:
            if self.skipped is None:
                raise
            self.skipped.append(where)
            return
        self.add(cls, key, image)


def report_skipped(skipped: list[str]) -> None:
    """One warning line for the images a load left out (``skip_bad_images``)."""
    if skipped:
        print(
            f"warning: skipped {len(skipped)} unreadable image(s), first {skipped[0]}",
            file=sys.stderr,
        )


def _decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {where}: {_one_line(exc)}") from None
    if arr.shape != (_IMAGE_SIZE, _IMAGE_SIZE, 3):
        raise DataError(
            f"image {where} is {arr.shape[1]}x{arr.shape[0]}, expected {_IMAGE_SIZE}x{_IMAGE_SIZE}"
        )
    return arr


def _stack_split(
    decoded: dict[str, _Decoded], classes: list[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Sort every split by (class, file name) and stack it into ``(N, 3, 32, 32)`` uint8."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, dec in decoded.items():
        items = sorted(dec.items, key=lambda t: (index[t[0]], t[1]))
        if items:
            arr = np.stack([t[2] for t in items])  # (N, 32, 32, 3)
            images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        else:
            images = torch.empty(0, 3, _IMAGE_SIZE, _IMAGE_SIZE, dtype=torch.uint8)
        labels = torch.tensor([index[t[0]] for t in items], dtype=torch.long)  # (N,)
        out[split] = (images, labels)
    return out


def _parse_cifar_pickle(fileobj: Any, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One torchvision CIFAR pickle -> (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    try:
        raw = pickle.load(fileobj, encoding="bytes")
        entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        key = "fine_labels" if name == "cifar100" else "labels"
        labels = np.asarray(entry[key], dtype=np.int64)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable pickle
        raise DataError(f"cannot read CIFAR pickle {where}: {_one_line(exc)}") from None
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"CIFAR pickle {where} has {images.shape[0]} images, {len(labels)} labels")
    return images, labels


def _load_pickle_dir(folder: Path, name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    parts = []
    for fname in _PICKLE_FILES[(name, train)]:
        path = folder / fname
        try:
            with open(path, "rb") as f:
                parts.append(_parse_cifar_pickle(f, name, str(path)))
        except OSError as exc:
            raise DataError(f"cannot read {path}: {_one_line(exc)}") from None
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))  # (N, 3, 32, 32) uint8
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))  # (N,) int64
    return images, labels


def _decode_image_folder(
    root: Path, split: str, skip_bad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    classes = _folder_classes(root)
    dec = _Decoded(skipped=[] if skip_bad else None)
    split_dir = root / split
    for cls in classes:
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            continue
        for path in sorted(cls_dir.iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read {path}: {_one_line(exc)}") from None
                dec.add_encoded(cls, path.name, data, str(path))
    report_skipped(dec.skipped or [])
    images, labels = _stack_split({split: dec}, classes)[split]
    if images.shape[0] == 0:
        raise DataError(f"ImageFolder {split_dir} holds no images ({split}/<class>/<image>)")
    return images, labels, classes


def _folder_classes(root: Path) -> list[str]:
    """Class names: the union of the class folders under ``train/`` and ``test/``, sorted."""
    names: set[str] = set()
    for split in _SPLITS:
        d = root / split
        if d.is_dir():
            names.update(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def _decode_tar(
    path: Path, name: str, skip_bad: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read an archive once, sequentially, and decode every split it holds.

    Handles an ImageFolder layout (``[prefix/]train|test/<class>/<image>``) and the torchvision
    pickle layout (``[prefix/]cifar-10-batches-py/data_batch_1`` ...). Returns
    ``{"train": (images, labels), "test": (images, labels)}`` for the splits found.
    """
    skipped: list[str] | None = [] if skip_bad else None
    folder = {"train": _Decoded(skipped=skipped), "test": _Decoded(skipped=skipped)}
    pickles: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pickle_dir = _PICKLE_DIRS.get(name)
    wanted_pickles = {
        f: split
        for (n, train), files in _PICKLE_FILES.items()
        if n == name
        for f, split in ((f, "train" if train else "test") for f in files)
    }
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                parts = PurePosixPath(member.name).parts
                where = f"{path}:{member.name}"
                if len(parts) >= 2 and parts[-2] == pickle_dir and parts[-1] in wanted_pickles:
                    f = tf.extractfile(member)
                    if f is not None:
                        pickles[parts[-1]] = _parse_cifar_pickle(f, name, where)
                    continue
                if len(parts) < 3 or parts[-3] not in folder:
                    continue
                if PurePosixPath(parts[-1]).suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                if parts[-1].startswith("."):  # e.g. macOS "._x.jpg" resource forks
                    continue
                f = tf.extractfile(member)
                if f is None:
                    continue
                folder[parts[-3]].add_encoded(parts[-2], parts[-1], f.read(), where)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"cannot read data archive {path}: {_one_line(exc) or type(exc)}") from None
    report_skipped(skipped or [])

    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if any(d.items for d in folder.values()):
        classes = sorted({cls for d in folder.values() for cls, _, _ in d.items})
        stacked = _stack_split(folder, classes)
        out.update({s: v for s, v in stacked.items() if v[0].shape[0] > 0})
    for train in (True, False):
        files = _PICKLE_FILES.get((name, train), ())
        split = "train" if train else "test"
        if split not in out and files and all(f in pickles for f in files):
            imgs = np.concatenate([pickles[f][0] for f in files])
            labs = np.concatenate([pickles[f][1] for f in files])
            out[split] = (torch.from_numpy(imgs), torch.from_numpy(labs))
    if not out:
        raise DataError(
            f"data archive {path} holds no train/<class>/<image> or test/<class>/<image> files"
        )
    return out
