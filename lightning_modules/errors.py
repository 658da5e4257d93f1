"""Errors a user can cause or must be told about plainly; the CLI turns them into one line on
stderr and exit code 2."""

from __future__ import annotations

import torch


class UsageError(ValueError):
    """A command-line or run-directory problem the user can fix."""


class WriteFailed(RuntimeError):
    """A file the run must write could not be written (disk full, I/O error); the previous
    version of the file is left whole."""


def describe_write_error(path: object, err: BaseException) -> str:
    cause = (
        err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())
    )
    return f"cannot write {path}: {cause}; the previous file is intact, free space and --resume"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint still holds the last good epoch."""


def check_finite(loss: torch.Tensor, what: str, epoch: int, step: int) -> None:
    """Raise NonFiniteLossError when ``loss`` is NaN or inf (one host sync)."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(
            f"{what} became {loss.item()} at epoch {epoch}, step {step}: the last checkpoint keeps "
            "the last good epoch; lower the learning rate or use 32-bit precision, then --resume"
        )
