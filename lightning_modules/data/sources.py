"""Finding CIFAR data and loading one split: :func:`load_split`.

Resolves a root (torchvision pickles, ImageFolder, tar archive, or the default places), decodes
it through the cache, or generates the ``synthetic`` data set in memory.
"""

import os
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .cache import _PENDING, _cache_file, _read_cache, _stat_key, _write_cache, default_cache_dir
from .common import (
    DataError,
    DataNotFoundError,
    _check_name,
    _local_generator,
    _mix_seed,
    _one_line,
)
from .decode import (
    _PICKLE_DIRS,
    _PICKLE_FILES,
    _decode_image_folder,
    _decode_tar,
    _load_pickle_dir,
)

# Archive names also looked for inside a data folder (e.g. ./data).
_ARCHIVE_NAMES = {
    "cifar10": ("cifar10-jpg.tar.gz", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz",),
}
_SHARED_ARCHIVE = Path("..") / "shared" / "datasets" / "cifar10-jpg.tar.gz"
_REPO_ROOT = Path(__file__).resolve().parent.parent.parent

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def make_synthetic(
    n: int,
    train: bool = True,
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 48.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, learnable stand-in for CIFAR: ``(images (n, 3, 32, 32) uint8, labels (n,))``.

    Every class is a fixed random low-frequency colour pattern (a 4x4 colour grid upsampled
    bilinearly to 32x32); a sample is its class pattern with a random brightness offset and
    Gaussian pixel noise. Train and test share the class patterns and differ in the samples.
    Classes are balanced. Deterministic in ``(n, train, num_classes, seed, noise)``.
    """
    gen = _local_generator(_mix_seed(seed, 0))
    grid = torch.rand(num_classes, 3, 4, 4, generator=gen)  # (C, 3, 4, 4) in [0, 1]
    patterns = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)
    patterns = 40.0 + 176.0 * patterns  # (C, 3, 32, 32) in [40, 216]

    gen = _local_generator(_mix_seed(seed, 1 if train else 2))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]  # (n,)
    brightness = 20.0 * torch.randn(n, 1, 1, 1, generator=gen)  # (n, 1, 1, 1)
    pixels = noise * torch.randn(n, 3, 32, 32, generator=gen)  # (n, 3, 32, 32)
    images = (patterns[labels] + brightness + pixels).round().clamp(0, 255).to(torch.uint8)
    return images, labels.long()


# --------------------------------------------------------------------------------------------
# Source resolution and load_split
# --------------------------------------------------------------------------------------------


@dataclass
class _Source:
    kind: str  # "pickles" | "folder" | "archive"
    path: Path


def _is_tar_name(path: Path) -> bool:
    return path.name.lower().endswith(_TAR_SUFFIXES)


def _pickle_folder(root: Path, name: str, train: bool) -> Path | None:
    """The torchvision pickle folder for this split: ``root/<folder>`` or ``root`` itself."""
    folder_name = _PICKLE_DIRS[name]
    files = _PICKLE_FILES[(name, train)]
    for cand in (root / folder_name, root) if root.name == folder_name else (root / folder_name,):
        if cand.is_dir() and all((cand / f).is_file() for f in files):
            return cand
    return None


def _detect(root: Path, name: str, train: bool) -> _Source | None:
    """What kind of source ``root`` is for this data set and split, or None."""
    if root.is_file():
        try:
            is_tar = _is_tar_name(root) or tarfile.is_tarfile(root)
        except OSError as exc:
            raise DataError(f"cannot read data file {root}: {_one_line(exc)}") from None
        return _Source("archive", root) if is_tar else None
    if not root.is_dir():
        return None
    folder = _pickle_folder(root, name, train)
    if folder is not None:
        return _Source("pickles", folder)
    if (root / "train").is_dir() or (root / "test").is_dir():
        return _Source("folder", root)
    for archive in _ARCHIVE_NAMES.get(name, ()):
        if (root / archive).is_file():
            return _Source("archive", root / archive)
    return None


def _default_candidates(name: str) -> list[Path]:
    cands: list[Path] = []
    env = os.environ.get("TAS_DATA_ROOT")
    if env:
        cands.append(Path(env).expanduser())
    cands.append(Path("data"))
    if name == "cifar10":
        cands.append(_SHARED_ARCHIVE)
        cands.append(_REPO_ROOT / _SHARED_ARCHIVE)
    seen: set[Path] = set()
    unique = []
    for c in cands:
        key = c.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


def _try_download(name: str, train: bool, root: Path) -> tuple[_Source | None, str]:
    """Ask torchvision to download the pickles into ``root``; (source, "") or (None, reason)."""
    try:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            cls(root=str(root), train=train, download=True)
        finally:
            socket.setdefaulttimeout(old_timeout)
    except Exception as exc:  # noqa: BLE001 - offline, HTTP errors, bad checksums, ...
        return None, _one_line(f"{type(exc).__name__}: {exc}")[:200]
    folder = _pickle_folder(root, name, train)
    return (_Source("pickles", folder), "") if folder else (None, "download left no pickles")


_HOW_TO = (
    "pass --data.root PATH (a torchvision CIFAR root, an ImageFolder folder with train/ and "
    "test/, or a .tar.gz of one) or set TAS_DATA_ROOT"
)


def _resolve(name: str, root: str | os.PathLike | None, train: bool) -> _Source:
    if root is not None:
        path = Path(root).expanduser()
        src = _detect(path, name, train)
        if src is None:
            what = "does not exist" if not path.exists() else "holds no recognised data"
            raise DataNotFoundError(
                f"{name} data root {str(path)!r} {what} (expected {_PICKLE_DIRS[name]}/ pickles, "
                f"train/ and test/ ImageFolders, or a .tar.gz of them); {_HOW_TO}"
            )
        return src
    cands = _default_candidates(name)
    for cand in cands:
        src = _detect(cand, name, train)
        if src is not None:
            return src
    src, reason = _try_download(name, train, Path("data"))
    if src is not None:
        return src
    looked = ", ".join(str(c) for c in cands)
    raise DataNotFoundError(
        f"no {name} data found (looked at {looked}; torchvision download into ./data failed: "
        f"{reason}); {_HOW_TO}"
    )


def _load(
    name: str,
    root: str | os.PathLike | None,
    train: bool,
    cache_dir: str | os.PathLike | None,
    cache: bool,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    split = "train" if train else "test"
    src = _resolve(name, root, train)
    described = f"{src.path.resolve()} ({src.kind})"
    if src.kind == "pickles":  # already fast to parse: not cached
        images, labels = _load_pickle_dir(src.path, name, train)
        return images, labels, described

    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = src.path.resolve()

    def stats_for(s: str) -> list[tuple]:
        if src.kind == "archive":
            return [_stat_key(path)]
        # Folder: the root, the split folder and its class folders (adding a file to a class
        # folder changes that folder's mtime).
        split_dir = path / s
        dirs = [path, split_dir] + (sorted(split_dir.iterdir()) if split_dir.is_dir() else [])
        return [_stat_key(d) for d in dirs if d.is_dir()]

    def cache_key(s: str) -> list[tuple]:  # a decode that skipped images is cached apart
        return [*stats_for(s), ("skip_bad_images",)] if skip_bad else stats_for(s)

    target = _cache_file(cdir, name, split, cache_key(split))
    if cache:
        hit = _read_cache(target)
        if hit is not None:
            return hit[0], hit[1], described

    if src.kind == "archive":
        splits = _decode_tar(path, name, skip_bad)  # one sequential pass decodes both splits
        if split not in splits:
            raise DataError(f"data archive {path} holds no {split}/<class>/<image> files")
    else:
        images, labels, _ = _decode_image_folder(path, split, skip_bad)
        splits = {split: (images, labels)}
    if cache:
        for s, (imgs, labs) in splits.items():
            file = _cache_file(cdir, name, s, cache_key(s))
            if not _write_cache(file, imgs, labs, described) and s != split:
                _PENDING[file.name] = (imgs, labs)
    images, labels = splits[split]
    return images, labels, described


def load_split(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    *,
    synthetic_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Args:
        name: ``"cifar10"``, ``"cifar100"`` or ``"synthetic"``.
        root: a torchvision CIFAR root, an ImageFolder folder holding ``train/`` and ``test/``,
            or a ``.tar.gz``/``.tgz``/``.tar`` of one. None looks at ``$TAS_DATA_ROOT``,
            ``./data`` and (CIFAR-10) ``../shared/datasets/cifar10-jpg.tar.gz`` beside the
            current folder and beside the repository, then tries a torchvision download into
            ``./data``. Ignored for ``"synthetic"``.
        train: the training split if True, else the test split.
        synthetic_size: number of synthetic samples (default 2000 train / 500 test).
        cache_dir: where decoded images are cached (default :func:`default_cache_dir`).
        cache: read and write the decode cache.

    Raises:
        DataNotFoundError: nothing usable at ``root`` (or anywhere, when ``root`` is None).
        DataError: the source exists but cannot be read (e.g. a corrupt archive).
    """
    key = _check_name(name)
    if key == "synthetic":
        n = synthetic_size if synthetic_size is not None else (2000 if train else 500)
        return make_synthetic(n, train=train)
    images, labels, _ = _load(key, root, train, cache_dir, cache)
    return images, labels
