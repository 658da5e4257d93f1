"""Trained full networks read from disk: the KD teacher, the source of inherited weights and the
warm start of the search.

A teacher is the checkpoint train.py writes (it carries its architecture), a torchvision ResNet
or MobileNetV2 checkpoint (its plain state_dict, or a dict holding it under ``model`` /
``state_dict`` as torchvision's reference scripts save it; the network is read off its
tensors), or, for the warm start, a plain state_dict of ``tas.build_model(tas.Arch.full(space))``.
Every way a file can be wrong is a `TeacherError` with one line that names the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tas
from tas.arch import save_atomic
from tas.backbones import is_torchvision_state, torchvision_space, torchvision_state
from tas.evaluate import evaluate


class TeacherError(ValueError):
    """A teacher checkpoint that is missing, unreadable or not a train.py checkpoint."""


def load_teacher(path: str | Path, input_size: int | None = None) -> tuple[nn.Module, tas.Arch]:
    """The network of a train.py or torchvision checkpoint, weights loaded, in eval mode, with
    its Arch (a torchvision network's MACs counted at ``input_size``, default 224)."""
    ckpt = _read(path)
    state = _torchvision(ckpt)
    if state is None:
        return _network(Path(path), ckpt)
    try:
        space = torchvision_space(state, input_size or 224)
        arch = tas.Arch.full(space)
        model = tas.build_model(arch)
        model.load_state_dict(torchvision_state(state, space))
    except ValueError as err:
        raise TeacherError(f"teacher checkpoint {path}: {err}") from None
    return model.eval().requires_grad_(False), arch


def _torchvision(ckpt: Any) -> dict[str, torch.Tensor] | None:
    """The torchvision ResNet or MobileNetV2 state dict in a checkpoint (plain, or under
    "model" or "state_dict"), or None."""
    for state in (ckpt, *(ckpt.get(k) for k in ("model", "state_dict") if isinstance(ckpt, dict))):
        if is_torchvision_state(state):
            return state
    return None


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
    that full network, a torchvision checkpoint of it, or a plain state_dict as
    ``tas.build_model(tas.Arch.full(space))`` names it. What `tas.Supernet.load_full_weights` takes (which checks a plain state_dict's keys and
    shapes against the space)."""
    ckpt = _read(path)
    state = _torchvision(ckpt)
    if state is not None:
        try:
            return torchvision_state(state, space)
        except ValueError as err:
            raise TeacherError(f"teacher {path}: {err}") from None
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


def save_network(path: str | Path, model: nn.Module, arch: tas.Arch) -> None:
    """Write ``model`` (a built network of ``arch``) as the smallest checkpoint `load_teacher`
    and ``--init_from`` read (its architecture and its ``model.``-prefixed weights), atomically:
    how prune.py hands on the weights a method changed (ThiNet's and LASSO's reconstructions)."""
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomic({"tas_arch": arch.to_dict(), "state_dict": state}, path)


def test_accuracy(
    model: nn.Module,
    datamodule: Any,
    device: torch.device,
    inputs: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> float:
    """Top-1 of ``model`` on the data module's whole test loader (its evaluation transform;
    ``inputs`` prepares a batch for the model, e.g. the channels-last layout): what a run
    reports as its teacher's accuracy beside the student's."""
    batches = (
        datamodule.transform_batch((x.to(device), y.to(device)), train=False)
        for x, y in datamodule.test_dataloader()
    )
    return evaluate(model, ((inputs(x), y) for x, y in batches)).accuracy
