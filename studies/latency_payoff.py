"""The payoff of a latency budget, measured side by side: does a search for the measured latency
of the MACs-searched network find a network that is as fast as that target promises, and as
accurate as the MACs-searched one, the uniform network of equal measured latency and NetAdapt
(the seeds' latency-driven baseline) for the same target on the same table?

    python -m studies.latency_payoff --depth 20 --backend eager --batch 1 --threads 1 \\
        --teacher runs/teacher20/checkpoints/last.ckpt --found runs/search_warm/found.json \\
        --out runs/payoff_r20_eager_b1
    python -m studies.latency_payoff --out runs/payoff_r20_eager_b1 --report

Steps, each leaving its file in --out (written atomically; a rerun skips what is done, and a
file made with other --depth/--backend/--batch/--threads is refused):

    table    table.json      the latency table of the space (tas.latency.profile)
    target   target.json     full and MACs-found network measured end to end, interleaved in one
                             run: target_ms = the MACs-found network's latency
    search   search/         train_search.py --config SEARCH_CONFIG --teacher TEACHER
                             --model.budget latency --model.latency_table OUT/table.json
                             --model.target_ms TARGET (the MACs search's config, only the budget
                             differs; resumed with --resume after an interruption)
    netadapt netadapt/       prune.py --method netadapt --teacher TEACHER --latency_table
                             OUT/table.json --target_ms TARGET (NetAdapt's own short fine-tunes
                             choose its widths; --netadapt_args adds options), or, when even
                             its narrowest network (every prunable conv at its narrowest width:
                             NetAdapt removes filters, never blocks) is predicted slower than
                             the target, netadapt/unreachable.json saying so, and no NetAdapt row
    uniform  uniform.json    the uniform network of equal measured latency: bisection on
                             tas.Arch.uniform's MACs ratio, each probe measured interleaved with
                             the MACs-found network; stops when the probe is within 1% of it (or
                             the ratio interval is under 0.005, or after 12 probes), and keeps
                             the closest probe
    latency  latency.json    full, MACs-found, latency-found, NetAdapt and uniform measured
                             interleaved in ONE run; speedups, payoff ratios, the band (redone
                             when it lacks one of them)
    train    train_<net>_s<seed>.json   the four networks fine-tuned with one recipe
                             (studies.settling.fine_tune: the teacher's first filters, --epochs
                             on the weight half of the search split, scored on the arch half;
                             NetAdapt's network too, so only its shape is compared)

speedup = full_ms / net_ms and target speedup = full_ms / target_ms, each from one run (the
target's from the target step); payoff = speedup / target speedup (>= 0.95 asked; the
MACs-found network's own, ~1, shows how well the two runs agree). The band is the search's:
[target - tolerance x the table's full-network latency, target]. A uniform network's widths
floor(C x m) are mostly not candidates of the space: the table has no prediction for it ("-").
Timing steps warn when the 1-minute load average is >= 0.3 and record it: the numbers mean
something only on a quiet machine. --threads is the timings' thread count; the search
and NetAdapt subprocesses (train_search.py, CSV logger, and prune.py, given the --data.* options
too) and the fine-tunes run with the process's threads (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import torch
import yaml

import tas
import tas.latency
from benchmarks.common import load_average, measure_networks, setup, table
from lightning_modules.data import DataError
from lightning_modules.teacher import load_teacher
from studies.settling import data_module, fine_tune
from tas.arch import write_text_atomic
from tas.baselines.netadapt import narrowest
from tas.budget import LatencyBudget

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("table", "target", "search", "netadapt", "uniform", "latency", "train")
FILES = {"table": "table.json", "target": "target.json", "search": "search/found.json",
         "netadapt": "netadapt/found.json", "unreachable": "netadapt/unreachable.json",
         "uniform": "uniform.json", "latency": "latency.json"}  # fmt: skip
NEEDS = {  # what a step reads: inputs (validated up front) and earlier steps' files
    "table": ((), ()),
    "target": (("found",), ()),
    "search": (("config", "teacher"), ("table", "target")),
    "netadapt": (("teacher",), ("table", "target")),
    "uniform": (("found",), ()),
    "latency": (("found",), ("table", "target", "search", "netadapt", "uniform")),
    "train": (("found", "teacher"), ("search", "netadapt", "uniform")),
}
TRAINED = ("macs", "latency", "netadapt", "uniform")  # the networks the train step fine-tunes
NAMES = {"full": "full", "macs": "MACs-found", "latency": "latency-found",
         "netadapt": "NetAdapt, same target", "uniform": "uniform, equal latency"}  # fmt: skip
QUIET_LOAD = 0.3
HEADER = ["network", "MACs (M)", "table ms", "measured ms", "speedup", "payoff", "in band",
          "arch-half top-1 %"]  # fmt: skip
DEFAULT_CONFIG = str(ROOT / "configs" / "cpu" / "search_resnet20_cifar10_warm.yaml")


class InputError(ValueError):
    """Bad input or a file of other settings: one line on stderr, exit status 2."""


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_avg() -> float:
    """The 1-minute load average, with a warning line when it is not quiet."""
    load = load_average()
    if load >= QUIET_LOAD:
        print(f"warning: 1-minute load average {load:.2f} >= {QUIET_LOAD}: these timings mean "
              "something only on a quiet machine", flush=True)  # fmt: skip
    return load


def payoff(full_ms: float, net_ms: float, target_full_ms: float, target_ms: float) -> dict:
    """A network's speedup over the full one and that as a fraction of the target's speedup
    (each pair of times from one interleaved run)."""
    speedup, target_speedup = full_ms / net_ms, target_full_ms / target_ms
    return {"speedup": speedup, "target_speedup": target_speedup,
            "payoff": speedup / target_speedup}  # fmt: skip


def bisect_uniform(
    space: tas.SearchSpace,
    relative: Callable[[tas.Arch], float],
    lo: float = 0.05,
    hi: float = 1.0,
    tolerance: float = 0.01,
    min_step: float = 0.005,
    max_probes: int = 12,
) -> tuple[tas.Arch, list[dict]]:
    """The uniform network whose latency is closest to the target: bisection on the MACs ratio
    of ``tas.Arch.uniform`` in [lo, hi], ``relative(arch)`` being its latency / the target's
    (increasing in the ratio). Stops when a probe is within ``tolerance`` of 1, the interval is
    under ``min_step`` or after ``max_probes`` probes; returns the closest probe and all."""
    probes, seen = [], {}
    while len(probes) < max_probes and hi - lo >= min_step:
        ratio = (lo + hi) / 2
        arch = tas.Arch.uniform(space, ratio)
        key = tuple(sorted(arch.widths.items()))
        if key not in seen:
            seen[key] = relative(arch)
        value = seen[key]
        probes.append({"ratio": ratio, "macs": arch.macs, "relative": value, "arch": arch})
        if abs(value - 1) <= tolerance:
            break
        lo, hi = (lo, ratio) if value > 1 else (ratio, hi)
    best = min(probes, key=lambda p: abs(p["relative"] - 1))
    return best["arch"], [{k: v for k, v in p.items() if k != "arch"} for p in probes]


class Payoff:
    """One study directory: its settings, its inputs (checked when first used) and its steps."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        self.space = tas.SearchSpace.cifar_resnet(args.depth)
        self.settings = {"depth": args.depth, "backend": args.backend, "batch": args.batch,
                         "threads": args.threads}  # fmt: skip
        self.train_threads = torch.get_num_threads()  # the timing steps pin --threads

    # ------------------------------------------------------------ inputs
    @cached_property
    def found(self) -> tas.Arch:
        if not self.args.found:
            raise InputError("--found FILE (the MACs search's found.json) is required")
        return self._arch(self.args.found)

    def _arch(self, path: str | Path) -> tas.Arch:
        arch = tas.Arch.load(path)  # ArchFormatError: one line
        if arch.space != self.space:
            raise InputError(f"{path} is a {arch.space.describe()}, not a {self.space.describe()}")
        return arch

    @cached_property
    def teacher(self) -> torch.nn.Module:
        if not self.args.teacher:
            raise InputError("--teacher CKPT (the trained full network) is required")
        model, arch = load_teacher(self.args.teacher)  # TeacherError: one line
        if arch != tas.Arch.full(self.space):
            raise InputError(f"{self.args.teacher} is not the full {self.space.describe()}")
        return model

    @cached_property
    def config(self) -> str:
        path = self.args.search_config
        try:
            depth = (yaml.safe_load(Path(path).read_text()) or {}).get("model", {}).get("depth")
        except (OSError, yaml.YAMLError) as err:
            raise InputError(
                f"search config {path}: cannot be read ({type(err).__name__})"
            ) from None
        if depth not in (None, self.args.depth):
            raise InputError(f"search config {path} searches depth {depth}, not {self.args.depth}")
        return path

    @cached_property
    def table(self) -> tas.latency.LatencyTable:
        path = self.out / FILES["table"]
        lat = tas.latency.LatencyTable.load(path)
        if lat.space != self.space:
            raise InputError(f"{path} is for {lat.space.describe()}, not {self.space.describe()}")
        lat.check(str(path), backend=self.args.backend, batch=self.args.batch,
                  threads=self.args.threads)  # fmt: skip
        return lat

    def read(self, step: str) -> dict:
        """An earlier step's JSON, refused when made with other settings."""
        path = self.out / FILES[step]
        data = json.loads(path.read_text())
        made = data.get("settings", self.settings)
        if made != self.settings:
            raise InputError(f"{path} was made with {made}, not {self.settings}: use another --out")
        return data

    def done(self, step: str) -> bool:
        if step == "train":
            return all(
                self.train_path(n, s).exists() for n in self.trained() for s in self.args.seeds
            )
        path = self.out / FILES[step]
        if step == "netadapt":
            return path.exists() or (self.out / FILES["unreachable"]).exists()
        if step == "latency" and path.exists():  # one run holds every network, or it is redone
            return set(json.loads(path.read_text()).get("networks", {})) >= set(self.compared())
        return path.exists()

    def compared(self) -> list[str]:
        """The networks side by side: NAMES, less NetAdapt where it cannot reach the target."""
        unreachable = (self.out / FILES["unreachable"]).exists()
        return [n for n in NAMES if not (n == "netadapt" and unreachable)]

    def trained(self) -> list[str]:
        return [n for n in self.compared() if n in TRAINED]

    def validate(self, steps: list[str]) -> None:
        """Every input the steps to run need, and every finished step's settings, checked
        before anything runs."""
        if self.done("table"):
            _ = self.table  # refused when profiled with other settings
        for step in ("target", "uniform", "latency"):
            if self.done(step):
                self.read(step)
        if self.done("search") and self.done("target"):
            searched = self._arch(self.out / FILES["search"]).search.get("budget", {})
            target = self.read("target")["target_ms"]
            if searched.get("target_ms") != target:
                raise InputError(f"{self.out / FILES['search']} was searched for "
                                 f"{searched.get('target_ms')} ms, not the target {target} ms")  # fmt: skip
        for step in steps:
            if not self.done(step):
                for name in NEEDS[step][0]:
                    getattr(self, name)
                missing = [d for d in NEEDS[step][1] if d not in steps and not self.done(d)]
                if missing:
                    raise InputError(f"step {step} needs step {missing[0]} done first "
                                     f"({self.out / FILES[missing[0]]})")  # fmt: skip

    # ------------------------------------------------------------ timing
    def measure(self, archs: dict[str, tas.Arch], rounds: int) -> dict[str, float]:
        """Milliseconds per call of each network, interleaved in one run (median of rounds)."""
        a = self.args
        return measure_networks(archs, a.batch, a.backend, a.threads, rounds, a.warmup)

    def timed(self, record: dict) -> dict:
        """A timing step's JSON: its numbers, the settings, the machine and the load."""
        return {"settings": self.settings, "machine": self.machine, "load_avg": self.load,
                **record, "load_avg_end": load_average()}  # fmt: skip

    def start_timing(self) -> None:
        self.machine = setup(self.args.threads)  # pins the threads; names the CPU
        print(self.machine, flush=True)
        self.load = load_avg()

    # ------------------------------------------------------------ steps
    def run_table(self) -> None:
        a = self.args
        self.start_timing()
        lat = tas.latency.profile(self.space, a.batch, a.backend, a.threads, a.rounds, a.warmup)
        lat.meta |= {"machine": self.machine, "load_avg": self.load,
                     "load_avg_end": load_average()}  # fmt: skip
        lat.save(self.out / FILES["table"])

    def run_target(self) -> None:
        self.start_timing()
        ms = self.measure({"full": tas.Arch.full(self.space), "macs": self.found}, self.args.rounds)
        record = {"found": self.args.found, "full_ms": ms["full"], "target_ms": ms["macs"],
                  "rounds": self.args.rounds}  # fmt: skip
        write_json(self.out / FILES["target"], self.timed(record))

    def search_command(self) -> list[str]:
        a, run = self.args, self.out / "search"
        data = [f"--data.{k}={v}" for k, v in self.data_args().items() if v is not None]
        resume = ["--resume"] if (run / "checkpoints" / "last.ckpt").exists() else []
        return [
            sys.executable, str(ROOT / "train_search.py"), "--config", self.config,
            "--teacher", a.teacher, "--logger", "csv", "--model.budget", "latency",
            "--model.latency_table", str(self.out / FILES["table"]),
            "--model.target_ms", repr(self.read("target")["target_ms"]), "--out", str(run),
            *(["--seed", str(a.seed)] if a.seed is not None else []),
            *data, *shlex.split(a.search_args), *resume,
        ]  # fmt: skip

    def run_search(self) -> None:
        run_command(self.search_command(), "the search failed", "rerun to resume it")

    def netadapt_command(self) -> list[str]:
        a = self.args
        data = {"--data_name": a.data_name, "--root": a.data_root}
        return [
            sys.executable, str(ROOT / "prune.py"), "--method", "netadapt", "--teacher", a.teacher,
            "--latency_table", str(self.out / FILES["table"]),
            "--target_ms", repr(self.read("target")["target_ms"]),
            "--out", str(self.out / FILES["netadapt"]),
            *(x for k, v in data.items() if v is not None for x in (k, str(v))),
            *shlex.split(a.netadapt_args),
        ]  # fmt: skip

    def run_netadapt(self) -> None:
        target = self.read("target")["target_ms"]
        floor = narrowest(self.space, LatencyBudget(self.table, target, tolerance=target))
        floor_ms = self.table.predict_ms(floor)
        if floor_ms > target:
            reason = (f"its narrowest network (full depth, every prunable conv at its narrowest "
                      f"width) is predicted at {floor_ms:.3f} ms, above the target "
                      f"{target:.3f} ms")  # fmt: skip
            print(f"NetAdapt cannot reach the target: {reason}", flush=True)
            write_json(self.out / FILES["unreachable"],
                       {"settings": self.settings, "target_ms": target, "floor_ms": floor_ms,
                        "floor_macs": floor.macs, "reason": reason})  # fmt: skip
            return
        run_command(self.netadapt_command(), "NetAdapt failed", "rerun to redo it")

    def run_uniform(self) -> None:
        self.start_timing()

        def relative(arch: tas.Arch) -> float:
            ms = self.measure({"probe": arch, "macs": self.found}, self.args.probe_rounds)
            print(f"  uniform probe {arch.macs / 1e6:.2f}M MACs: {ms['probe']:.3f} ms, MACs-found "
                  f"{ms['macs']:.3f} ms", flush=True)  # fmt: skip
            return ms["probe"] / ms["macs"]

        arch, probes = bisect_uniform(self.space, relative)
        record = {"arch": arch.to_dict(), "probes": probes, "probe_rounds": self.args.probe_rounds,
                  "stop": "within 1% of the MACs-found network, ratio interval < 0.005, "
                          "or 12 probes"}  # fmt: skip
        write_json(self.out / FILES["uniform"], self.timed(record))

    def networks(self) -> dict[str, tas.Arch]:
        made = {
            "full": lambda: tas.Arch.full(self.space),
            "macs": lambda: self.found,
            "latency": lambda: self._arch(self.out / FILES["search"]),
            "netadapt": lambda: self._arch(self.out / FILES["netadapt"]),
            "uniform": lambda: tas.Arch.from_dict(self.read("uniform")["arch"]),
        }
        return {name: made[name]() for name in self.compared()}

    def predicted_ms(self, arch: tas.Arch) -> float | None:
        """The table's latency of ``arch``; None for widths it has no entry for (a uniform
        network's floor(C x m) need not be one of the space's candidates)."""
        try:
            return self.table.predict_ms(arch)
        except ValueError:
            return None

    def run_latency(self) -> None:
        self.start_timing()
        target, nets = self.read("target"), self.networks()
        budget = nets["latency"].search.get("budget", {})
        full_table_ms = self.table.predict_ms(nets["full"])
        tolerance = budget.get("tolerance_ms", self.args.tolerance * full_table_ms)
        low, high = target["target_ms"] - tolerance, target["target_ms"]
        ms = self.measure(nets, self.args.rounds)
        rows = {
            name: {
                "macs": arch.macs,
                "predicted_ms": self.predicted_ms(arch),
                "measured_ms": ms[name],
                "in_band": low <= ms[name] <= high,
                **payoff(ms["full"], ms[name], target["full_ms"], target["target_ms"]),
            }
            for name, arch in nets.items()
        }
        record = {"band_ms": [low, high], "target_ms": target["target_ms"],
                  "full_drift": ms["full"] / target["full_ms"], "rounds": self.args.rounds,
                  "networks": rows}  # fmt: skip
        write_json(self.out / FILES["latency"], self.timed(record))

    def train_path(self, name: str, seed: int) -> Path:
        return self.out / f"train_{name}_s{seed}.json"

    def data_args(self) -> dict:
        a = self.args
        return {"name": a.data_name, "root": a.data_root, "train_subset": a.train_subset}

    def run_train(self) -> None:
        a = self.args
        torch.set_num_threads(self.train_threads)
        nets = {k: v for k, v in self.networks().items() if k in self.trained()}
        for seed in a.seeds:
            dm = None
            for name, arch in nets.items():
                path = self.train_path(name, seed)
                if path.exists():
                    continue
                if dm is None:
                    dm = data_module(self.space, a.data_name, a.data_root, a.batch_size,
                                     a.train_subset, seed)  # fmt: skip
                result = fine_tune(arch, self.teacher.train(), dm, a.epochs, a.lr, seed)
                write_json(path, {"name": name, "seed": seed, "macs": arch.macs, **result,
                                  "epochs": a.epochs, "lr": a.lr, "teacher": a.teacher,
                                  "arch": arch.to_dict()})  # fmt: skip
                print(f"{name} seed {seed}: {100 * result['arch_half_acc']:.2f}% arch-half")

    def run(self, step: str) -> None:
        if self.done(step):
            print(f"{step}: done", flush=True)
            return
        print(f"{step}: running", flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        getattr(self, f"run_{step}")()


def run_command(cmd: list[str], failed: str, then: str) -> None:
    """A step's subprocess, in this folder (the paths are the user's); its failure ends the
    study with its exit status."""
    print("$ " + shlex.join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code:
        print(f"studies.latency_payoff: {failed} (exit {code}); {then}", file=sys.stderr)
        sys.exit(code)


def report(out: Path) -> str:
    """The side-by-side table of what is done (latency.json and the train files)."""
    path = out / FILES["latency"]
    if not path.exists():
        return f"{out}: no side-by-side measurement yet (step latency)"
    lat = json.loads(path.read_text())
    accs: dict[str, list[float]] = {}
    for p in sorted(out.glob("train_*_s*.json")):
        row = json.loads(p.read_text())
        accs.setdefault(row["name"], []).append(100 * row["arch_half_acc"])

    def acc(name: str) -> str:
        values = accs.get(name)
        if not values:
            return "-"
        n = f" (n={len(values)})" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.2f}{n}"

    rows = [
        [NAMES[k], f"{r['macs'] / 1e6:.2f}",
         "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.3f}", f"{r['measured_ms']:.3f}",
         f"{r['speedup']:.2f}x", *((f"{r['payoff']:.3f}", "yes" if r["in_band"] else "no", acc(k))
                                   if k in TRAINED else ("-", "-", "-"))]
        for k, r in lat["networks"].items()
    ]  # fmt: skip
    s = lat["settings"]
    low, high = lat["band_ms"]
    found = lat["networks"]["latency"]
    lines = [
        f"ResNet-{s['depth']}, {s['backend']}, batch {s['batch']}, {s['threads']} threads; "
        f"{lat['machine']}; load avg {lat['load_avg']:.2f} / {lat['load_avg_end']:.2f} "
        "(start / end)",
        "",
        table(HEADER, rows),
        "",
        f"target {lat['target_ms']:.3f} ms (the MACs-found network, target step), band "
        f"[{low:.3f}, {high:.3f}] ms, target speedup {found['target_speedup']:.2f}x; the full "
        f"network measured {lat['full_drift']:.3f}x its target-step time",
        f"(a) latency-found payoff {found['payoff']:.3f} "
        f"({'>=' if found['payoff'] >= 0.95 else '<'} 0.95), "
        f"{'in' if found['in_band'] else 'outside'} the band",
    ]
    if all(accs.get(k) for k in ("macs", "latency", "uniform")):
        mean = {k: statistics.fmean(accs[k]) for k in ("macs", "latency", "uniform")}
        best = max(("macs", "uniform"), key=mean.get)
        gap = mean["latency"] - mean[best]
        lines.append(
            f"(b) latency-found {mean['latency']:.2f}% vs the better of MACs-found and uniform "
            f"({NAMES[best]}, {mean[best]:.2f}%): {gap:+.2f} points"
            + ("" if gap >= 0 else f" (short by {-gap:.2f})")
        )
    if accs.get("latency") and accs.get("netadapt"):
        gap = statistics.fmean(accs["latency"]) - statistics.fmean(accs["netadapt"])
        lines.append(f"(c) latency-found vs NetAdapt for the same target: {gap:+.2f} points")
    unreachable = out / FILES["unreachable"]
    if unreachable.exists():
        reason = json.loads(unreachable.read_text())["reason"]
        lines.append(f"(c) NetAdapt cannot reach the target: {reason}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m studies.latency_payoff", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--backend", default="eager", choices=tas.latency.BACKENDS)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="threads of every timing")
    p.add_argument("--rounds", type=int, default=15, help="profile rounds and timed repeats")
    p.add_argument("--probe_rounds", type=int, default=5, help="timed repeats per uniform probe")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--teacher", help="train.py checkpoint of the full network")
    p.add_argument("--found", help="found.json of the MACs search (the target's network)")
    p.add_argument("--search_config", default=DEFAULT_CONFIG, help="the MACs search's config")
    p.add_argument("--seed", type=int, default=None, help="the search's seed (default: config's)")
    p.add_argument("--search_args", default="",
                   help='more train_search.py arguments, e.g. --search_args="--trainer.max_epochs 1"')  # fmt: skip
    p.add_argument("--netadapt_args", default="",
                   help='more prune.py arguments for NetAdapt, e.g. --netadapt_args="--short_steps 20"')  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="band width (x full table latency) when found.json does not record it")  # fmt: skip
    p.add_argument("--epochs", type=int, default=2, help="fine-tune epochs (studies.settling)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tune lr (studies.settling)")
    p.add_argument("--batch_size", type=int, default=128, help="fine-tune batch size")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tune seeds")
    p.add_argument("--data.root", dest="data_root", default=None,
                   help="data set (default: as the data module finds it, e.g. ../shared/datasets)")  # fmt: skip
    p.add_argument("--data.name", dest="data_name", default=None)
    p.add_argument("--data.train_subset", dest="train_subset", type=int, default=None)
    p.add_argument("--only", choices=STEPS, help="run this step only")
    p.add_argument("--report", action="store_true", help="only print and write the report")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if not args.report:
        study = Payoff(args)
        steps = [args.only] if args.only else list(STEPS)
        try:
            try:
                study.validate(steps)  # inputs: a missing or foreign file is a ValueError/OSError
            except (ValueError, OSError) as err:
                raise InputError(str(err)) from None
            for step in steps:
                study.run(step)
        except (InputError, DataError) as err:
            print(f"studies.latency_payoff: error: {' '.join(str(err).split())}", file=sys.stderr)
            sys.exit(2)
    text = report(out)
    print(text)
    if out.is_dir() and (out / FILES["latency"]).exists():
        write_text_atomic(out / "report.md", text + "\n")


if __name__ == "__main__":
    main()
