"""Trained full networks read from disk: the KD teacher, the source of inherited weights and the
warm start of the search.

A teacher is the checkpoint train.py writes (it carries its architecture), or, for the warm
start, a plain state_dict of ``tas.build_model(tas.Arch.full(space))``. Every way a file can be
wrong is a `TeacherError` with one line that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import tas


class TeacherError(ValueError):
    """A teacher checkpoint that is missing, unreadable or not a train.py checkpoint."""


def load_teacher(path: str | Path) -> tuple[nn.Module, tas.Arch]:
    """The network of a train.py checkpoint, weights loaded, in eval mode, with its Arch."""
    return _network(Path(path), _read(path))


def _network(path: Path, ckpt: Any) -> tuple[nn.Module, tas.Arch]:
    """`load_teacher` on a checkpoint already read from ``path``."""
    if not isinstance(ckpt, dict) or "tas_arch" not in ckpt or "state_dict" not in ckpt:
        raise TeacherError(
            f"{path} is not a train.py checkpoint (no network architecture in it); "
            "pass a checkpoints/last.ckpt written by train.py"
        )
    try:
        arch = tas.Arch.from_dict(ckpt["tas_arch"])
    except tas.ArchFormatError as err:
        raise TeacherError(f"teacher checkpoint {path}: {err}") from None
    model = tas.build_model(arch)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise TeacherError(
            f"teacher checkpoint {path}: its weights do not fit its network"
        ) from None
    return model.eval().requires_grad_(False), arch


def _read(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise TeacherError(
            f"teacher checkpoint {path} cannot be read ({type(err).__name__}): "
            "not a checkpoint, or truncated"
        ) from None


def load_full_state(path: str | Path, space: tas.SearchSpace) -> dict[str, torch.Tensor]:
    """The state_dict of the full network of ``space`` from ``path``: a train.py checkpoint of
    that full network, or a plain state_dict as ``tas.build_model(tas.Arch.full(space))`` names
    it. What `tas.Supernet.load_full_weights` takes (which checks a plain state_dict's keys and
    shapes against the space)."""
    ckpt = _read(path)
    if isinstance(ckpt, dict) and "tas_arch" in ckpt:  # a train.py checkpoint
        model, arch = _network(Path(path), ckpt)  # read once
        if arch != tas.Arch.full(space):
            what = "a pruned network" if arch.space == space else arch.space.describe()
            raise TeacherError(
                f"teacher {path} is {what}, not the full {space.describe()} being searched"
            )
        return model.state_dict()
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise TeacherError(
            f"{path} is neither a train.py checkpoint nor a state_dict of the full network"
        )
    return ckpt  # its fit to the space is checked where it is loaded
