"""The command line shared by train.py, train_search.py and distill.py: a LightningCLI with a run
directory (``--out``), ``--resume``, loggers that never block, atomic checkpoints, and user
errors reported as one line on stderr with exit code 2.

Run directory layout::

    OUT/config.yaml              the full configuration (re-run with --config OUT/config.yaml)
    OUT/checkpoints/last.ckpt    written atomically after every epoch; --resume continues from it
    OUT/logs/metrics.csv         every logged value, readable without W&B
    OUT/wandb/                   the offline W&B run (upload later with `wandb sync OUT/wandb/...`)
    OUT/found.json | results.json  the result, written last (a finished run has it)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentError
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.exceptions import SIGTERMException

import tas
from lightning_modules.data import DataError, data_module
from lightning_modules.distributed import WatchedDDPStrategy, report_peer_failure
from lightning_modules.errors import (
    NonFiniteLossError,
    UsageError,
    WriteFailed,
    describe_write_error,
)
from lightning_modules.teacher import TeacherError
from tas.arch import write_text_atomic

# Spellings users type, mapped to the LightningCLI keys they stand for.
ALIASES = {
    "--seed": "--seed_everything",
    "--arch": "--model.arch",
    "--teacher": "--model.teacher",
    "--init": "--model.init",
    "--init_from": "--model.init_from",
}
FLAGS = ("--resume", "--overwrite", "--debug")  # may be given bare: --resume == --resume=true
LOGGERS = ("wandb", "csv", "false")


USER_ERRORS = (
    ValueError,
    ArgumentError,
    DataError,
    TeacherError,
    NonFiniteLossError,
    WriteFailed,
)
# OSErrors that mean "the disk refused the write", not a bug
DISK_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def normalise_argv(argv: list[str]) -> list[str]:
    """Apply ALIASES and turn bare FLAGS into ``--flag=true``."""
    out = []
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        key = ALIASES.get(key, key)
        if key in FLAGS and not eq:
            nxt = argv[i + 1].lower() if i + 1 < len(argv) else ""
            if nxt not in ("true", "false"):
                out.append(f"{key}=true")
                continue
        out.append(f"{key}{eq}{value}")
    return out


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file in the same folder and renamed into place, so a run
    killed at any moment leaves the previous checkpoint whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # torch reports a failed write as RuntimeError
            raise WriteFailed(describe_write_error(path, err)) from None
        finally:
            tmp.unlink(missing_ok=True)


class WallClock(Callback):
    """Wall time of a run summed over its sittings: the checkpoints carry it, so a resumed run
    reports the time of every finished epoch, not only of its last sitting."""

    def __init__(self) -> None:
        self.before, self.start = 0.0, time.time()

    def seconds(self) -> float:
        return self.before + time.time() - self.start

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the time between the checkpoint and the interruption is lost: that work is redone
        self.before, self.start = float(state_dict["seconds"]), time.time()


class InitialWeights(Callback):
    """Keep ``init.ckpt``, the weights before the first training step, beside the epochs'
    checkpoints: a lottery ticket rewound to iteration 0 (Frankle & Carbin 2019, the original
    ticket) restarts from it. A resumed run has it already and leaves it alone. The test is
    the step count alone, the same on every process: saving is a collective call under DDP."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            trainer.save_checkpoint(self.path)


INIT_CKPT = "init.ckpt"  # with --keep_every_epoch: the weights before the first step
PREEMPTED_EXIT = 143  # 128 + SIGTERM: what a shell reports for a terminated process


class RunLock:
    """One run per output directory: an exclusive ``flock`` on OUT/.lock, held for the life of
    the process. The kernel drops it when the process ends, however it ends, so a killed run
    never leaves the directory locked."""

    held: list[RunLock] = []  # this process's locks, released by `release_new` on a user error

    def __init__(self, out: Path) -> None:
        import fcntl

        self.out, self.created = out, not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / ".lock"
        self.file = open(self.path, "a+")  # noqa: SIM115 (held until the process ends)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "unknown"
            self.file.close()
            raise UsageError(
                f"{out} is in use by another run (pid {pid}): wait for it to end, or choose "
                "another --out"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        RunLock.held.append(self)

    @classmethod
    def release_new(cls) -> None:
        """Unlock, and remove the directories the locks created if nothing else was written
        there: a run refused for a user error leaves nothing behind."""
        for lock in cls.held:
            lock.file.close()
            if lock.created:
                lock.path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # not empty: the run wrote something
                    lock.out.rmdir()
        cls.held.clear()


def resume_checkpoint(out: Path) -> Path:
    """The newest intact checkpoint of the run in ``out``: last.ckpt, or, when that one cannot
    be read (truncated by a crash of the machine, garbled), the epoch checkpoint beside it, with
    a warning. No intact checkpoint at all is a user error naming the files."""
    folder = out / "checkpoints"
    candidates = [folder / "last.ckpt", *sorted(folder.glob("epoch*.ckpt"), reverse=True)]
    bad = []
    for path in candidates:
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a damaged file raises one of many types
            bad.append(f"{path.name} ({type(err).__name__})")
            continue
        if bad:
            print(
                f"warning: {', '.join(bad)} in {folder} cannot be read; resuming from "
                f"{path.name} instead",
                file=sys.stderr,
            )
        return path
    raise UsageError(
        f"--resume: no intact checkpoint in {folder}: {', '.join(bad)} cannot be read; start "
        "afresh with --overwrite"
    )


def is_first_process() -> bool:
    """False in the extra processes of a multi-process run (they share rank 0's --out)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class ResumeHint(Callback):
    """Say how to continue when the run is interrupted (Ctrl-C, SIGTERM)."""

    def __init__(self, command: str, out: Path) -> None:
        self.command, self.out = command, out

    def on_exception(
        self, trainer: pl.Trainer, module: pl.LightningModule, err: BaseException
    ) -> None:
        if (
            not isinstance(err, (KeyboardInterrupt, NonFiniteLossError, SIGTERMException))
            or not trainer.is_global_zero
        ):
            return
        last = self.out / "checkpoints" / "last.ckpt"
        where = (
            f"the last checkpoint ({last}) holds every finished epoch"
            if last.exists()
            else "no epoch had finished, so there is no checkpoint yet"
        )
        cause = " by SIGTERM" if isinstance(err, SIGTERMException) else ""
        print(
            f"\nStopped{cause} during epoch {trainer.current_epoch}: {where}. Resume with:\n"
            f"  python {self.command} --out {self.out} --resume",
            file=sys.stderr,
        )


class TASCLI(LightningCLI):
    """LightningCLI with the project's conventions (see the module docstring)."""

    def __init__(
        self,
        model_class: type[pl.LightningModule],
        args: list[str] | None,
        script: str,
        default_out: str,
    ) -> None:
        self.script, self.default_out = script, default_out
        super().__init__(
            model_class,
            data_module,
            args=args,
            run=False,
            save_config_callback=None,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False, "prog": script},
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--out",
            type=str,
            default=self.default_out,
            help="run directory: config, checkpoints, logs and results",
        )
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="continue the run in --out from checkpoints/last.ckpt",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="start afresh in an --out that holds an earlier run",
        )
        parser.add_argument("--debug", type=bool, default=False, help="show tracebacks")
        parser.add_argument(
            "--keep_every_epoch",
            type=bool,
            default=False,
            help="keep checkpoints/epochNNN.ckpt of every epoch, not only the last, and "
            f"checkpoints/{INIT_CKPT}, the weights before the first step (a lottery ticket "
            "rewinds to one of them)",
        )
        parser.add_argument(
            "--logger",
            type=str,
            default="wandb",
            help="wandb (offline unless WANDB_MODE says otherwise), csv, or false",
        )
        parser.add_argument("--wandb_project", type=str, default="tas-pruning")
        parser.add_argument(
            "--ddp_timeout_s",
            type=int,
            default=1800,
            help="multi-process runs: how long a process waits in a collective for the others "
            "before giving up (a rank that died or hangs ends the run instead of blocking it)",
        )
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.input_size", apply_on="instantiate")

    # ------------------------------------------------------------ run directory
    def before_instantiate_classes(self) -> None:
        cfg = self.config
        if cfg.logger not in LOGGERS:
            raise UsageError(f"--logger must be one of {', '.join(LOGGERS)}, got {cfg.logger!r}")
        out = Path(cfg.out)
        if is_first_process():
            self.lock = RunLock(out)  # before looking at what the directory holds
        last = out / "checkpoints" / "last.ckpt"
        finished = [n for n in ("found.json", "results.json") if (out / n).exists()]
        if cfg.resume and cfg.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: choose one")
        if cfg.resume:
            if not last.exists():
                raise UsageError(
                    f"--resume: no checkpoint at {last}; start the run without --resume"
                )
            if finished:
                raise UsageError(f"--resume: the run in {out} has finished ({finished[0]} exists)")
        elif cfg.overwrite:
            for name in finished:
                (out / name).unlink()
            last.unlink(missing_ok=True)
        elif finished or last.exists():
            state = f"a finished run ({finished[0]})" if finished else "an unfinished run"
            raise UsageError(
                f"{out} holds {state}: pass --resume to continue it, --overwrite to "
                "start afresh, or choose another --out"
            )
        self.out = out

    ddp_strategy: type[DDPStrategy] = WatchedDDPStrategy  # the search's: distributed.py

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        if self.config.trainer.strategy == "ddp":
            timeout = self.config.ddp_timeout_s
            kwargs["strategy"] = self.ddp_strategy(timeout=timedelta(seconds=timeout))
            if is_first_process():
                print(f"multi-process run: a collective waits at most {timeout} s for a process")
        kwargs.setdefault("default_root_dir", str(self.out))
        kwargs["logger"] = self._loggers()
        kwargs["plugins"] = [AtomicCheckpointIO()]
        self.clock = WallClock()
        kwargs["callbacks"] = [
            ModelCheckpoint(
                dirpath=self.out / "checkpoints",
                filename="epoch{epoch:03d}",
                auto_insert_metric_name=False,
                save_top_k=-1 if self.config.get("keep_every_epoch") else 1,
                save_last=True,
                enable_version_counter=False,
            ),
            ResumeHint(self.script, self.out),
            self.clock,
            *(
                [InitialWeights(self.out / "checkpoints" / INIT_CKPT)]
                if self.config.get("keep_every_epoch")
                else []
            ),  # fmt: skip
            *self.extra_callbacks(),
        ]
        return super().instantiate_trainer(**kwargs)

    def extra_callbacks(self) -> list[Callback]:
        return []

    def _loggers(self) -> list[Logger] | bool:
        if self.config.logger == "false":
            return False
        loggers: list[Logger] = [CSVLogger(save_dir=str(self.out), name="logs", version="")]
        if self.config.logger == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")  # no login, no network, no prompt
            os.environ.setdefault("WANDB_SILENT", "true")
            id_file = self.out / "wandb" / "run_id"
            run_id = (
                id_file.read_text().strip() if self.config.resume and id_file.exists() else None
            )
            wandb_logger = WandbLogger(
                save_dir=str(self.out),
                project=self.config.wandb_project,
                name=self.out.name,
                id=run_id,
                resume="allow" if run_id else None,
            )
            loggers.insert(0, wandb_logger)
        return loggers

    # ------------------------------------------------------------ running
    def fit(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "config.yaml", self.parser.dump(self.config, skip_none=False))
        if self.trainer.is_global_zero:
            for lg in self.trainer.loggers:
                if isinstance(lg, WandbLogger):
                    write_text_atomic(self.out / "wandb" / "run_id", lg.experiment.id + "\n")
        ckpt = resume_checkpoint(self.out) if self.config.resume else None
        self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        if self.trainer.interrupted:
            raise KeyboardInterrupt

    def wandb(self) -> WandbLogger | None:
        return next((lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)), None)

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.out / name
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")
        return path


def main(
    cli_class: type[TASCLI],
    model_class: type[pl.LightningModule],
    script: str,
    default_out: str,
    finish: Callable[[TASCLI, float], None],
    argv: list[str] | None = None,
) -> None:
    """Parse, train, finish; user errors become one line on stderr and exit code 2."""
    route_info_logs_to_stdout()
    argv = normalise_argv(sys.argv[1:] if argv is None else argv)
    debug = "--debug=true" in argv
    try:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv; passing args too makes it warn
        cli = cli_class(model_class, None, script, default_out)
        cli.fit()
        finish(cli, cli.clock.seconds())  # on every rank: it may run collective steps
    except USER_ERRORS as err:
        if debug:
            raise
        RunLock.release_new()
        print(f"{script}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if debug or err.errno not in DISK_ERRNOS:
            raise
        RunLock.release_new()
        print(f"{script}: error: {describe_write_error(err.filename, err)}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as err:
        if debug or not peer_failure(err):
            raise
        report_peer_failure(one_line(err), script)
        sys.exit(1)
    except SIGTERMException:  # preempted: the hint is printed; a scheduler must not see success
        sys.exit(PREEMPTED_EXIT)


def route_info_logs_to_stdout() -> None:
    """Lightning's progress notes go to stdout, so that stderr holds warnings and errors only
    (a failed run then shows its one-line error alone there)."""
    handler = logging.StreamHandler(sys.stdout)
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.propagate = False


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that lost its peers (gloo/NCCL: closed, reset, timed
    out), not a bug of this process."""
    text = str(err)
    signs = ("Connection closed by peer", "Connection reset by peer", "timed out", "Timeout")
    return type(err).__name__ == "DistBackendError" or any(s in text for s in signs)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def describe_arch(arch: tas.Arch) -> dict[str, Any]:
    """The numbers every result file and summary reports about a network."""
    full = tas.Arch.full(arch.space).macs
    return {
        "macs": arch.macs,
        "params": arch.params,
        "full_macs": full,
        "macs_reduction": round(1 - arch.macs / full, 4),
        "blocks": list(arch.blocks),
    }
