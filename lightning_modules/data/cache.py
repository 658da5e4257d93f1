"""The decode cache: decoded splits saved with ``torch.save`` under :func:`default_cache_dir`.

Entries are keyed by the source's absolute path, size and mtime; writes are atomic, and an
unreadable entry is ignored (with a warning) and rebuilt.
"""

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .common import _IMAGE_SIZE, _one_line

_CACHE_VERSION = 1

# Splits decoded as a side effect of a single pass (e.g. ``test`` while decoding ``train`` from
# an archive), handed out once if the cache could not be written. Keyed by cache file name.
_PENDING: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def default_cache_dir() -> Path:
    """``$TAS_CACHE_DIR`` if set, else ``~/.cache/tas-pruning``."""
    env = os.environ.get("TAS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tas-pruning"


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def _cache_file(cache_dir: Path, name: str, split: str, stats: Sequence[tuple]) -> Path:
    key = repr((_CACHE_VERSION, name, split, tuple(stats)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir / f"{name}-{split}-{digest}.pt"


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    if path.name in _PENDING:
        return _PENDING.pop(path.name)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        images, labels = obj["images"], obj["labels"]
        ok = (
            obj.get("version") == _CACHE_VERSION
            and images.dtype == torch.uint8
            and images.dim() == 4
            and tuple(images.shape[1:]) == (3, _IMAGE_SIZE, _IMAGE_SIZE)
            and labels.dtype == torch.long
            and labels.shape == (images.shape[0],)
        )
    except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt
        ok = False
    if not ok:
        warnings.warn(f"ignoring unreadable data cache {path}; rebuilding it", stacklevel=3)
        return None
    return images, labels


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor, source: str) -> bool:
    """Save atomically (temp file in the same folder, then ``os.replace``); False on failure."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            payload = {"version": _CACHE_VERSION, "source": source}
            torch.save({**payload, "images": images, "labels": labels}, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shareable
        os.replace(tmp, path)
        return True
    except (OSError, RuntimeError) as exc:  # read-only or full disk, ...
        warnings.warn(f"could not write data cache {path}: {_one_line(exc)}", stacklevel=3)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
