"""Run the pruning comparison study: TAS against Uniform, Random, L1-norm and Network Slimming,
under KD, Scratch-E, Scratch-B and fine-tuning (see RESULTS.md), then write its report.

    python -m studies.run --config configs/study/resnet20_cifar10_cpu.yaml --jobs 2
    python -m studies.run --config configs/study/resnet20_cifar10_cpu.yaml --report

Every step is one train.py / train_search.py / prune.py run in ``studies/runs/NAME/STEP`` (its
log beside it, ``STEP.log``). A step whose result file exists is done; an interrupted step
resumes from its last checkpoint; rerunning the command continues the study wherever it stopped.
``--jobs N`` runs N independent steps at once, each with cores/N threads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import tas
from lightning_modules.data import NUM_CLASSES
from tas.arch import write_text_atomic
from tas.baselines import random_within

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = ("kd", "scratch_e", "scratch_b", "fine_tune")
STUDY_DATASETS = ("cifar10", "cifar100")
BAND = 0.02  # every compared network's MACs within this fraction of the target


@dataclass
class Step:
    """One run of the study; ``args`` is called at launch, when its dependencies are done."""

    name: str
    args: Callable[[], list[str]]
    result: str  # file in the step's directory that marks it done
    deps: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)  # method / scheme / seed, for the report


class Study:
    def __init__(self, config_path: str, runs_root: Path | None = None) -> None:
        try:
            self.cfg = yaml.safe_load(Path(config_path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"study config {config_path}: {err}") from None
        self.name = self.cfg["name"]
        self.dir = (runs_root or ROOT / "studies" / "runs") / self.name
        self.dataset = self._dataset()
        self.space = tas.SearchSpace.cifar_resnet(self.cfg["depth"], NUM_CLASSES[self.dataset])
        self.full = tas.Arch.full(self.space)
        self.steps = self._plan()

    def _dataset(self) -> str:
        """The data set that the study's training config names."""
        path = ROOT / self.cfg["train_config"]
        try:
            data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"train config {path}: {err}") from None
        name = data.get("name", "cifar10")
        if name not in STUDY_DATASETS:
            raise ValueError(f"train config {path}: the study runs on {list(STUDY_DATASETS)}")
        return name

    # ------------------------------------------------------------ the protocol
    def path(self, step: str, *parts: str) -> Path:
        return self.dir.joinpath(step, *parts)

    def ckpt(self, step: str) -> str:
        return str(self.path(step, "checkpoints", "last.ckpt"))

    def _train(self, step: str, *extra: str, epochs: int | None = None) -> list[str]:
        c = self.cfg
        return [
            "train.py",
            "--config", c["train_config"],
            "--logger", "csv",
            "--trainer.max_epochs", str(epochs or c["epochs"]),
            *c.get("data_args", []),
            *c.get("run_args", []),
            *extra,
        ]  # fmt: skip

    def _plan(self) -> list[Step]:
        c, ratio = self.cfg, str(self.cfg["ratio"])
        band_top = f"{c['ratio'] * (1 + BAND):.6g}"  # the largest MACs ratio inside the band
        steps = [
            Step("teacher", lambda: self._train("teacher", "--seed", "0"), "results.json"),
            Step(
                "teacher_slimming",
                lambda: self._train(
                    "teacher_slimming", "--seed", "0", "--model.bn_l1", str(c["bn_l1"])
                ),
                "results.json",
            ),
            Step(
                "search",
                lambda: [
                    "train_search.py",
                    "--config",
                    c["search_config"],
                    "--logger",
                    "csv",
                    "--seed",
                    "0",
                    # the search's band [target - tolerance, target] is the study's band
                    "--model.ratio",
                    band_top,
                    "--model.tolerance",
                    f"{c['ratio'] * 2 * BAND:.6g}",
                    "--trainer.max_epochs",
                    str(c["search_epochs"]),
                    *c.get("data_args", []),
                    *c.get("run_args", []),
                ],  # fmt: skip
                "found.json",
            ),
        ]
        for method, teacher in (("l1_norm", "teacher"), ("slimming", "teacher_slimming")):
            steps.append(
                Step(
                    f"prune_{method}",
                    lambda m=method, t=teacher: [
                        "prune.py",
                        "--method",
                        m,
                        "--teacher",
                        self.ckpt(t),
                        "--ratio",
                        ratio,
                    ],  # fmt: skip
                    "found.json",
                    deps=(teacher,),
                )
            )
        archs = {  # method -> (arch spec, step that makes it)
            "tas": (str(self.path("search", "found.json")), "search"),
            # the widest uniform network inside the band (the widest under the target itself
            # can fall below the band: the multiplier moves in steps of 1/16 of stage 1's width)
            "uniform": (f"uniform:{band_top}", None),
            "l1_norm": (str(self.path("prune_l1_norm", "found.json")), "prune_l1_norm"),
            "slimming": (str(self.path("prune_slimming", "found.json")), "prune_slimming"),
        }
        for k in range(c["random_samples"]):
            archs[f"random{k}"] = (str(self.path(f"random{k}", "found.json")), None)

        def final(method: str, scheme: str, seed: int) -> Step:
            spec, maker = archs[method]
            name = f"{method}-{scheme}-s{seed}"
            deps = tuple(d for d in (maker, "teacher" if scheme == "kd" else None) if d)
            extra = ["--arch", spec, "--seed", str(seed)]

            def args() -> list[str]:
                if scheme == "kd":
                    return self._train(name, *extra, "--teacher", self.ckpt("teacher"))
                if scheme == "scratch_e":
                    return self._train(name, *extra)
                if scheme == "scratch_b":
                    return self._train(name, *extra, epochs=self.scratch_b_epochs(spec))
                source = "teacher_slimming" if method == "slimming" else "teacher"
                return self._train(
                    name, *extra,
                    "--init", "inherit", "--init_from", self.ckpt(source),
                    "--model.lr", str(c["finetune_lr"]),
                    epochs=c["finetune_epochs"],
                )  # fmt: skip

            if scheme == "fine_tune":
                deps += ("teacher_slimming" if method == "slimming" else "teacher",)
            family = "random" if method.startswith("random") else method
            info = {"method": family, "scheme": scheme, "seed": seed, "arch": method}
            return Step(name, args, "results.json", tuple(dict.fromkeys(deps)), info)

        methods = ["tas", "uniform", "l1_norm", "slimming", "random0"]
        seeds = c["seeds"]
        # In order of what the report needs most, so that a study cut short still says the most.
        steps += [final(m, "kd", seeds[0]) for m in methods]
        steps += [final(m, "scratch_e", seeds[0]) for m in methods]
        steps += [final(m, "fine_tune", seeds[0]) for m in ("l1_norm", "slimming")]
        steps += [final(m, "kd", s) for s in seeds[1:] for m in ("tas", "uniform")]
        steps += [final(f"random{k}", "kd", seeds[0]) for k in range(1, c["random_samples"])]
        steps += [final(m, "scratch_b", seeds[0]) for m in methods]
        return steps

    def scratch_b_epochs(self, spec: str) -> int:
        """Epochs giving the pruned network the teacher's compute (MACs x epochs), at most 2x."""
        if spec.startswith("uniform:"):
            macs = tas.Arch.uniform(self.space, float(spec.partition(":")[2])).macs
        else:
            macs = tas.Arch.load(spec).macs
        return round(self.cfg["epochs"] * min(2.0, self.full.macs / macs))

    def write_random_archs(self) -> None:
        """The random baseline's networks: draws within +-2% of the target, seeded by sample."""
        for k in range(self.cfg["random_samples"]):
            path = self.path(f"random{k}", "found.json")
            if not path.exists():
                arch = random_within(self.space, self.cfg["ratio"], random.Random(k), BAND)
                arch.search["seed"] = k
                arch.save(path)

    # ------------------------------------------------------------ running
    def done(self, step: Step) -> bool:
        return self.path(step.name, step.result).exists()

    def command(self, step: Step) -> list[str]:
        args = step.args()
        if args[0] != "prune.py":
            out = self.path(step.name)
            resume = (out / "checkpoints" / "last.ckpt").exists()
            args += ["--out", str(out), "--resume" if resume else "--overwrite"]
        else:
            args += ["--out", str(self.path(step.name, "found.json"))]
        return [sys.executable, str(ROOT / args[0]), *args[1:]]

    def run(self, jobs: int, only: set[str] | None = None) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_random_archs()
        todo = [s for s in self.steps if not self.done(s) and (not only or s.name in only)]
        failed: set[str] = set()
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        threads = max(1, (os.cpu_count() or 1) // jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
        say(f"study {self.name}: {len(todo)} of {len(self.steps)} steps to run, {jobs} at a time")
        while todo or running:
            for name, (proc, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                minutes = (time.time() - start) / 60
                if proc.returncode == 0:
                    say(f"done   {name} ({minutes:.1f} min)")
                else:
                    failed.add(name)
                    say(f"FAILED {name} (exit {proc.returncode}); see {self.dir / name}.log")
            done = {s.name for s in self.steps if self.done(s)}
            for step in list(todo):
                if any(d in failed for d in step.deps):
                    todo.remove(step)
                    failed.add(step.name)
                    say(f"skip   {step.name}: a step it needs failed")
                elif len(running) < jobs and all(d in done for d in step.deps):
                    todo.remove(step)
                    cmd = self.command(step)
                    self.path(step.name).mkdir(parents=True, exist_ok=True)
                    log = open(self.dir / f"{step.name}.log", "a")  # noqa: SIM115 (child owns it)
                    log.write(f"\n$ {' '.join(cmd[1:])}\n")
                    log.flush()
                    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
                    running[step.name] = (proc, time.time())
                    say(f"start  {step.name}")
            if todo and not running and not any(all(d in done for d in s.deps) for s in todo):
                break  # nothing can start: dependencies outside --only
            time.sleep(2)
        self.collect()
        return 1 if failed else 0

    # ------------------------------------------------------------ report
    def collect(self) -> dict:
        """Every finished step's numbers in one JSON file (studies/results/NAME.json)."""
        rows = []
        for step in self.steps:
            if not step.info or not self.done(step):
                continue
            res = json.loads(self.path(step.name, "results.json").read_text())
            rows.append({**step.info, "step": step.name, **{k: res[k] for k in RESULT_KEYS}})
        teacher = {}
        for name in ("teacher", "teacher_slimming"):
            path = self.path(name, "results.json")
            if path.exists():
                res = json.loads(path.read_text())
                teacher[name] = {k: res[k] for k in RESULT_KEYS}
        search = self.path("search", "found.json")
        out = {
            "study": self.name,
            "dataset": self.dataset,
            "config": self.cfg,
            "full_macs": self.full.macs,
            "target_macs": round(self.cfg["ratio"] * self.full.macs),
            "teachers": teacher,
            "found": json.loads(search.read_text()) if search.exists() else None,
            "runs": rows,
        }
        path = ROOT / "studies" / "results" / f"{self.name}.json"
        write_text_atomic(path, json.dumps(out, indent=1) + "\n")
        say(f"{len(rows)} finished trainings collected in {path.relative_to(ROOT)}")
        return out


RESULT_KEYS = ("test_acc", "macs", "params", "macs_reduction", "epochs", "wall_time_s")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m studies.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="a configs/study/*.yaml file")
    parser.add_argument("--jobs", type=int, default=1, help="steps run at once")
    parser.add_argument("--only", nargs="*", help="run just these steps (names as in the plan)")
    parser.add_argument("--list", action="store_true", help="print the steps and their state")
    parser.add_argument("--report", action="store_true", help="collect results, write the report")
    args = parser.parse_args(argv)
    try:
        study = Study(args.config)
    except (ValueError, KeyError) as err:
        print(f"studies.run: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.list:
        for s in study.steps:
            print(
                f"{'done' if study.done(s) else 'todo'}  {s.name}  (needs {', '.join(s.deps) or '-'})"
            )
        return
    if args.report:
        from studies.report import write_report

        write_report(study.collect())
        return
    sys.exit(study.run(max(1, args.jobs), set(args.only) if args.only else None))


if __name__ == "__main__":
    main()
