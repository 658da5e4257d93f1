"""Run the pruning comparison study: TAS against Uniform, Random, L1-norm and Network Slimming,
under KD, Scratch-E, Scratch-B and fine-tuning (see RESULTS.md), then write its report. Weight
pruning has its own rows: magnitude masks (fine-tuned, or trained from scratch under the same
mask) and lottery tickets (iterative magnitude pruning with rewinding, and its random
re-initialisation control), drawn as accuracy against sparsity.

    python -m studies.run --config configs/study/resnet20_cifar10_cpu.yaml --jobs 2
    python -m studies.run --config configs/study/resnet20_cifar10_cpu.yaml --report

Every step is one train.py / train_search.py / prune.py run in ``studies/runs/NAME/STEP`` (its
log beside it, ``STEP.log``). A step whose result file exists is done; an interrupted step
resumes from its last checkpoint; rerunning the command continues the study wherever it stopped.
On a machine without the run directory, the rows in the committed results
(``studies/results/NAME.json``) count as done and the searches' and structured prunings'
found.json come back from them;
only what the missing rows need is made again (``--list``: todo, done, or idle).
``--jobs N`` runs N independent steps at once, each with cores/N threads (``--threads`` sets it).
``--precision`` is the trainings' arithmetic on this machine (``auto``: bf16-mixed where the CPU
computes bf16 natively, AVX512-BF16 or AMX, else fp32); each row records the precision it ran in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

import tas
from lightning_modules.cli import INIT_CKPT
from lightning_modules.data import NUM_CLASSES
from tas.arch import write_text_atomic
from tas.baselines import random_within
from tas.baselines.sparsity import SCOPES, load_masks, masked_macs
from tas.latency import device_name, native_bf16

ROOT = Path(__file__).resolve().parent.parent


def _without_root(record):
    """A found.json record whose paths inside the repository (a search's warm-start teacher, a
    pruning's ``pruned_from``, its sensitivity curves) are relative to it: the committed
    results name no machine's directories. Paths elsewhere stay as they are."""
    if isinstance(record, dict):
        return {key: _without_root(value) for key, value in record.items()}
    if isinstance(record, list):
        return [_without_root(value) for value in record]
    if isinstance(record, str) and Path(record).is_absolute():
        with contextlib.suppress(ValueError):
            return str(Path(record).relative_to(ROOT))
    return record


# rkd: KD + relational KD; rewind: a lottery ticket (an imp round's mask on its dense run's
# early weights)
SCHEMES = ("kd", "rkd", "scratch_e", "scratch_b", "fine_tune", "rewind")
RANDOM_INIT = ("kd", "rkd", "scratch_e", "scratch_b")  # the finals that start from fresh weights
STUDY_DATASETS = ("cifar10", "cifar100")
PRECISIONS = ("auto", "32-true", "bf16-mixed")
BAND = 0.02  # every compared network's MACs within this fraction of the target


@dataclass
class Step:
    """One run of the study; ``args`` is called at launch, when its dependencies are done."""

    name: str
    args: Callable[[], list[str]]
    result: str  # file in the step's directory that marks it done
    deps: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)  # method / scheme / seed, for the report


@dataclass
class Network:
    """One compared network: its --arch spec, the steps that make it, what fine-tuning inherits
    from, and the row of the report it belongs to (``family``)."""

    name: str
    family: str
    arch: str
    makers: list[Step] = field(default_factory=list)
    deps: tuple[str, ...] = ()  # steps its found.json needs
    inherit_from: str = "teacher"
    write: Callable[[], None] | None = None  # writes its found.json in-process (random draws)
    info: dict = field(default_factory=dict)  # more for its finals' rows (a mask's sparsity)
    # a rewind final's (step, checkpoint): the dense run whose early weights a ticket restarts from
    rewind: tuple[str, str] | None = None
    # the seed of the run whose initial weights its mask was found on: a fresh-weights final at
    # this seed would restart from those very weights (train.py seeds the initialisation)
    mask_seed: int | None = None


def _tas(study: Study, name: str, spec: dict) -> Network:
    """A TAS search: ``search_config``, search ``seed``, ``warm`` (start from the teacher)."""
    c, step = study.cfg, spec.get("step", f"search_{name}")
    ratio = c["ratio"]
    warm = bool(spec.get("warm", False))

    def args() -> list[str]:
        return [
            "train_search.py",
            "--config", spec.get("search_config", c["search_config"]),
            "--logger", "csv",
            "--seed", str(spec.get("seed", 0)),
            # the search's band [target - tolerance, target] is the study's band
            "--model.ratio", f"{ratio * (1 + BAND):.6g}",
            "--model.tolerance", f"{ratio * 2 * BAND:.6g}",
            *(["--trainer.max_epochs", str(c["search_epochs"])] if "search_epochs" in c else []),
            *(["--teacher", study.ckpt("teacher")] if warm else []),
            *c.get("data_args", []),
            *c.get("run_args", []),
        ]  # fmt: skip

    maker = Step(step, args, "found.json", ("teacher",) if warm else ())
    return Network(
        name,
        spec.get("family", name),
        str(study.path(step, "found.json")),
        [maker],
        (step,),
        # fine-tuning starts from found.init.ckpt, the found network on the search's trained
        # shared weights (`init_from`); a found.json without it (written before the search
        # saved them) from the teacher's first filters, where the warm supernet started
        inherit_from="teacher",
    )


def _uniform(study: Study, name: str, spec: dict) -> Network:
    # the widest uniform network inside the band (the widest under the target itself can fall
    # below the band: the multiplier moves in steps of 1/16 of stage 1's width)
    band_top = f"{study.cfg['ratio'] * (1 + BAND):.6g}"
    return Network(name, spec.get("family", "uniform"), f"uniform:{band_top}")


def _full(study: Study, name: str, spec: dict) -> Network:
    """The full network itself, trained with the finals' recipe: how converged the finals are."""
    return Network(name, spec.get("family", "full"), "full")


def _random(study: Study, name: str, spec: dict) -> Network:
    sample = int(spec["sample"])
    path = study.path(name, "found.json")

    def write() -> None:
        if not path.exists():
            arch = random_within(study.space, study.cfg["ratio"], random.Random(sample), BAND)
            arch.search["seed"] = sample
            arch.save(path)

    return Network(name, spec.get("family", "random"), str(path), write=write)


def _prune(study: Study, name: str, spec: dict) -> Network:
    """A prune.py method (``method``) applied to ``teacher`` (a teacher step's name), with the
    method's own options (``args``, e.g. ``["--steps", "400"]``); a method that looks at images
    samples them from the study's data set."""
    teacher, step = spec.get("teacher", "teacher"), f"prune_{name}"
    ratio = str(study.cfg["ratio"])
    maker = Step(
        step,
        lambda: [
            "prune.py",
            "--method",
            spec["method"],
            "--teacher",
            study.ckpt(teacher),
            "--ratio",
            ratio,
            "--data_name",
            study.dataset,
            *map(str, spec.get("args", [])),
        ],  # fmt: skip
        "found.json",
        (teacher,),
    )
    return Network(
        name, spec.get("family", name), str(study.path(step, "found.json")), [maker], (step,),
        inherit_from=teacher,
    )  # fmt: skip


def _sensitivity(study: Study, name: str, spec: dict) -> Network:
    """Per-layer L1 ratios read off the teacher's sensitivity curves (sensitivity.py, on
    ``images`` held-out images of the training set), then prune.py --method sensitivity."""
    teacher, sens, step = spec.get("teacher", "teacher"), f"sensitivity_{name}", f"prune_{name}"
    curves = Step(
        sens,
        lambda: [
            "sensitivity.py",
            "--teacher",
            study.ckpt(teacher),
            "--data_name",
            study.dataset,
            "--images",
            str(spec.get("images", 2000)),
        ],  # fmt: skip
        "sensitivity.json",
        (teacher,),
    )
    maker = Step(
        step,
        lambda: [
            "prune.py",
            "--method",
            "sensitivity",
            "--teacher",
            study.ckpt(teacher),
            "--ratio",
            str(study.cfg["ratio"]),
            "--sensitivity",
            str(study.path(sens, "sensitivity.json")),
        ],  # fmt: skip
        "found.json",
        (sens,),
    )
    found = str(study.path(step, "found.json"))
    return Network(name, spec.get("family", name), found, [curves, maker], (step,), teacher)


def _check_keys(name: str, spec: dict, allowed: set[str]) -> None:
    unknown = set(spec) - allowed - {"kind", "family"}
    if unknown:
        raise ValueError(
            f"network {name}: unknown keys {sorted(unknown)} ({', '.join(sorted(allowed))})"
        )


def _sparsity_and_scope(name: str, spec: dict, key: str) -> tuple[list[float], str]:
    """``spec[key]`` (one sparsity or an increasing list) and ``scope``, checked."""
    value = spec.get(key)
    values = value if isinstance(value, list) else [value]
    ok = (
        isinstance(value, list) == (key == "sparsities")
        and values
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in values
        )
    )
    if not ok or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        what = "a strictly increasing list of fractions" if key == "sparsities" else "a fraction"
        raise ValueError(
            f"network {name}: {key} must be {what} in (0, 1) of conv and linear weights "
            f"zeroed, got {value!r}"
        )
    scope = spec.get("scope", "global")
    if scope not in SCOPES:
        raise ValueError(f"network {name}: scope must be one of {list(SCOPES)}, got {scope!r}")
    return [float(v) for v in values], scope


def _magnitude_args(
    source: str, sparsity: float, scope: str, masks: str | None
) -> Callable[[], list[str]]:
    return lambda: [
        "prune.py",
        "--method", "magnitude",
        "--teacher", source,
        "--sparsity", f"{sparsity:g}",
        "--scope", scope,
        *(["--masks", masks] if masks else []),
    ]  # fmt: skip


def _magnitude(study: Study, name: str, spec: dict) -> Network:
    """Magnitude pruning of ``teacher``'s weights (Han et al. 2015): ``sparsity`` of its conv
    and linear weights zeroed, per layer or under one ``global`` threshold (``scope``, default
    global). The network keeps the full shape; its mask stays applied in every final: fine-tuning
    inherits the teacher's weights under it, Scratch-E trains fresh weights under the same mask
    (Liu et al. 2019, Rethinking the Value of Network Pruning, section 6)."""
    _check_keys(name, spec, {"sparsity", "scope", "teacher"})
    (sparsity,), scope = _sparsity_and_scope(name, spec, "sparsity")
    teacher, step = spec.get("teacher", "teacher"), f"prune_{name}"
    source = study.ckpt(teacher)
    maker = Step(step, _magnitude_args(source, sparsity, scope, None), "found.json",
                 (teacher,))  # fmt: skip
    return Network(
        name, spec.get("family", "magnitude"), str(study.path(step, "found.json")), [maker],
        (step,), inherit_from=teacher,
        info={"sparsity": sparsity, "source": "magnitude", "scope": scope},
        mask_seed=0,  # the teachers are trained with --seed 0
    )  # fmt: skip


def imp_rounds(name: str, sparsities: list[float]) -> list[str]:
    """The network names of an imp entry's rounds: NAME and the sparsity in percent (imp50,
    imp75, imp87p5)."""
    return [name + f"{100 * s:g}".replace(".", "p") for s in sparsities]


def _imp(study: Study, name: str, spec: dict) -> list[Network]:
    """Lottery tickets (Frankle & Carbin 2019; with rewinding, Frankle et al. 2020): iterative
    magnitude pruning of ``dense`` (a ``full`` network; its Scratch-E seed-0 final is the dense
    run, which then keeps every epoch's checkpoint). Round r prunes round r-1's trained ticket
    (round 1: the dense run) to ``sparsities[r-1]``, its pruned weights staying pruned
    (``--masks``); its ``rewind`` final trains that mask from the dense run's weights after epoch
    ``rewind_epoch`` (0: after the first epoch; ``init``: before the first step, the original
    lottery ticket) with the finals' recipe, and the next round prunes
    what that training ends with. The same masks under Scratch-E are Rethinking's random
    re-initialisation control (Liu et al. 2019). One network per round: ``imp_rounds``."""
    _check_keys(name, spec, {"sparsities", "scope", "dense", "rewind_epoch"})
    sparsities, scope = _sparsity_and_scope(name, spec, "sparsities")
    dense = spec.get("dense", "full")
    if study.cfg["networks"].get(dense, {}).get("kind") != "full":
        raise ValueError(f"network {name}: dense must name a `kind: full` network, got {dense!r}")
    epoch = spec.get("rewind_epoch", 0)
    if epoch != "init" and (
        not isinstance(epoch, int)
        or isinstance(epoch, bool)
        or not 0 <= epoch < study.cfg["epochs"]
    ):
        raise ValueError(
            f"network {name}: rewind_epoch must be an epoch of the dense run, 0 to "
            f"{study.cfg['epochs'] - 1}, or init (its weights before the first step), got "
            f"{epoch!r}"
        )
    dense_run = f"{dense}-scratch_e-s0"
    study.keep_epochs.add(dense)
    ckpt = INIT_CKPT if epoch == "init" else f"epoch{epoch:03d}.ckpt"
    rewind = (dense_run, str(study.path(dense_run, "checkpoints", ckpt)))
    networks: list[Network] = []
    source, source_step, masks = study.ckpt(dense_run), dense_run, None
    for r, (round_name, sparsity) in enumerate(zip(imp_rounds(name, sparsities), sparsities), 1):
        step = f"prune_{round_name}"
        maker = Step(step, _magnitude_args(source, sparsity, scope, masks), "found.json",
                     (source_step,))  # fmt: skip
        networks.append(
            Network(
                round_name, spec.get("family", "imp"), str(study.path(step, "found.json")),
                [maker], (step,), inherit_from=source_step,
                info={"sparsity": sparsity, "source": "imp", "scope": scope, "round": r,
                      "rewind_epoch": epoch},
                rewind=rewind, mask_seed=0,  # the dense run's seed
            )
        )  # fmt: skip
        source_step = f"{round_name}-rewind-s0"
        source, masks = study.ckpt(source_step), str(study.path(step, "found.masks.pt"))
    return networks


# How each kind of network is made: a new baseline is a prune.py method plus one `kind: prune`
# entry in a study config, no code here.
NETWORK_KINDS: dict[str, Callable[[Study, str, dict], Network | list[Network]]] = {
    "tas": _tas,
    "full": _full,
    "uniform": _uniform,
    "random": _random,
    "prune": _prune,
    "sensitivity": _sensitivity,
    "magnitude": _magnitude,
    "imp": _imp,  # one network per round
}


def with_plan(cfg: dict) -> dict:
    """``cfg`` with ``teachers``, ``networks`` and ``finals``: as given, or, for a config of the
    first format (seeds / random_samples / bn_l1), the plan that format always meant."""
    if "networks" in cfg:
        return cfg
    seeds, k = cfg["seeds"], cfg["random_samples"]
    randoms = [f"random{i}" for i in range(k)]
    methods = ["tas", "uniform", "l1_norm", "slimming", "random0"]
    return {
        **cfg,
        "teachers": {"teacher": [], "teacher_slimming": ["--model.bn_l1", str(cfg["bn_l1"])]},
        "networks": {
            "tas": {"kind": "tas", "step": "search"},
            "uniform": {"kind": "uniform"},
            "l1_norm": {"kind": "prune", "method": "l1_norm"},
            "slimming": {"kind": "prune", "method": "slimming", "teacher": "teacher_slimming"},
            **{r: {"kind": "random", "sample": i} for i, r in enumerate(randoms)},
        },
        "finals": [
            {"scheme": "kd", "seeds": seeds[:1], "networks": methods},
            {"scheme": "scratch_e", "seeds": seeds[:1], "networks": methods},
            {"scheme": "fine_tune", "seeds": seeds[:1], "networks": ["l1_norm", "slimming"]},
            {"scheme": "kd", "seeds": seeds[1:], "networks": ["tas", "uniform"]},
            {"scheme": "kd", "seeds": seeds[:1], "networks": randoms[1:]},
            {"scheme": "scratch_b", "seeds": seeds[:1], "networks": methods},
        ],
    }


class Study:
    def __init__(
        self, config_path: str, runs_root: Path | None = None, results_root: Path | None = None
    ) -> None:
        try:
            self.cfg = yaml.safe_load(Path(config_path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"study config {config_path}: {err}") from None
        self.cfg = with_plan(self.cfg)
        self.name = self.cfg["name"]
        self.dir = (runs_root or ROOT / "studies" / "runs") / self.name
        self.results_root = results_root  # default: studies/results
        self._committed: dict | None = None
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

    def _train(
        self, step: str, *extra: str, epochs: int | None = None, config: str | None = None
    ) -> list[str]:
        """A train.py command: ``config`` (default: the finals' train_config) for ``epochs``
        (default: the study's ``epochs``; 0: the config's own)."""
        c = self.cfg
        epochs = c["epochs"] if epochs is None else epochs
        return [
            "train.py",
            "--config", config or c["train_config"],
            "--logger", "csv",
            *(["--trainer.max_epochs", str(epochs)] if epochs else []),
            *c.get("data_args", []),
            *c.get("run_args", []),
            *extra,
        ]  # fmt: skip

    def _plan(self) -> list[Step]:
        """Teachers, then the steps that make each network (see NETWORK_KINDS), then the final
        trainings in the order the config lists them (what the report needs most first)."""
        c = self.cfg
        steps = [
            self._teacher(name, spec) for name, spec in c.get("teachers", {"teacher": []}).items()
        ]
        self.networks: dict[str, Network] = {}
        self.keep_epochs: set[str] = set()  # networks whose seed-0 Scratch-E run keeps every epoch
        expanded: dict[str, list[str]] = {}  # an entry that makes several networks: their names
        for name, spec in c["networks"].items():
            kind = spec.get("kind")
            if kind not in NETWORK_KINDS:
                raise ValueError(
                    f"network {name}: kind must be one of {sorted(NETWORK_KINDS)}, got {kind!r}"
                )
            made = NETWORK_KINDS[kind](self, name, spec)
            made = made if isinstance(made, list) else [made]
            if [n.name for n in made] != [name]:
                expanded[name] = [n.name for n in made]
            for network in made:
                if network.name in self.networks or (
                    network.name != name and network.name in c["networks"]
                ):
                    raise ValueError(f"network {name}: {network.name!r} is defined twice")
                self.networks[network.name] = network
                steps += network.makers
        for entry in c["finals"]:
            scheme = entry["scheme"]
            if scheme not in SCHEMES:
                raise ValueError(f"finals: scheme must be one of {list(SCHEMES)}, got {scheme!r}")
            for seed in entry["seeds"]:
                for name in entry["networks"]:
                    if name in expanded and name not in self.networks:
                        raise ValueError(
                            f"finals name {name!r}, which makes the networks "
                            f"{expanded[name]}: name those"
                        )
                    if name not in self.networks:
                        raise ValueError(f"finals name {name!r}, which networks: does not define")
                    steps.append(self._final(self.networks[name], scheme, seed))
        names = {s.name for s in steps}
        for step in steps:
            missing = [d for d in step.deps if d not in names]
            if missing:
                raise ValueError(
                    f"step {step.name} needs {', '.join(missing)}, which the plan does not "
                    "have: add it to finals"
                )
        return steps

    def _teacher(self, name: str, spec: list | dict) -> Step:
        """A teacher: train.py's extra args (a list), or a mapping of ``args``, ``epochs`` and
        ``from``: another teacher step whose weights it starts from (a warm restart of the
        schedule, e.g. a second cosine cycle)."""
        c = self.cfg
        if not isinstance(spec, dict):
            spec = {"args": spec}
        unknown = set(spec) - {"args", "epochs", "from"}
        if unknown:
            raise ValueError(f"teacher {name}: unknown keys {sorted(unknown)} (args, epochs, from)")
        # a teacher_config brings its own schedule unless teacher_epochs says
        epochs = spec.get("epochs", c.get("teacher_epochs", 0 if "teacher_config" in c else None))
        start = spec.get("from")
        init = ["--init", "inherit", "--init_from", self.ckpt(start)] if start else []
        return Step(
            name,
            lambda: self._train(
                name, "--seed", "0", *init, *c.get("teacher_args", []), *spec.get("args", []),
                epochs=epochs, config=c.get("teacher_config"),
            ),
            "results.json",
            (start,) if start else (),
        )  # fmt: skip

    def _final(self, net: Network, scheme: str, seed: int) -> Step:
        """One final training of ``net`` under ``scheme`` with training seed ``seed``."""
        c = self.cfg
        name = f"{net.name}-{scheme}-s{seed}"
        deps = list(net.deps)
        # final_args: what every final training gets and no teacher or search does (e.g. a
        # memory layout measured faster for training the compact networks)
        extra = ["--arch", net.arch, "--seed", str(seed), *c.get("final_args", [])]
        if scheme in ("kd", "rkd"):
            deps.append("teacher")
        if scheme == "fine_tune":
            deps.append(net.inherit_from)
        if scheme == "rewind":
            if net.rewind is None:
                raise ValueError(
                    f"finals: rewind restarts an imp round's mask from its dense run's early "
                    f"weights; {net.name} is not an imp round"
                )
            deps.append(net.rewind[0])
        if scheme in RANDOM_INIT and seed == net.mask_seed:
            raise ValueError(
                f"finals: {scheme} of {net.name} at seed {seed}: its mask was found on a run "
                f"initialised with seed {seed}, so these fresh weights would be that run's very "
                "initial weights (a lottery ticket, not a re-initialisation); use another seed"
            )
        keep = ["--keep_every_epoch", "true"] if net.name in self.keep_epochs and seed == 0 else []

        def args() -> list[str]:
            if scheme in ("kd", "rkd"):
                distill = ["--model.distill", "hinton+rkd"] if scheme == "rkd" else []
                return self._train(name, *extra, "--teacher", self.ckpt("teacher"), *distill)
            if scheme == "scratch_e":  # an imp entry's dense run keeps its early checkpoints
                return self._train(name, *extra, *keep)
            if scheme == "rewind":
                return self._train(name, *extra, "--init", "inherit", "--init_from", net.rewind[1])
            if scheme == "scratch_b":
                return self._train(name, *extra, epochs=self.scratch_b_epochs(net.arch))
            return self._train(
                name, *extra,
                "--init", "inherit", "--init_from", self.init_from(net),
                "--model.lr", str(c["finetune_lr"]),
                epochs=c["finetune_epochs"],
            )  # fmt: skip

        info = {"method": net.family, "scheme": scheme, "seed": seed, "arch": net.name, **net.info}
        return Step(name, args, "results.json", tuple(dict.fromkeys(deps)), info)

    def init_from(self, net: Network) -> str:
        """What fine-tuning ``net`` starts from: the weights its method left (found.json's
        ``search.init_ckpt``: ThiNet's and LASSO's reconstructions, SSS's trained blocks, a TAS
        search's shared weights), else the checkpoint it was pruned from."""
        found = Path(net.arch)
        if found.suffix == ".json" and found.exists():
            init = tas.Arch.load(found).search.get("init_ckpt")
            if init:
                return str(found.with_name(init))
        return self.ckpt(net.inherit_from)

    def scratch_b_epochs(self, spec: str) -> int:
        """Epochs giving the pruned network the teacher's compute (MACs x epochs), at most 2x.
        A weight-masked network's MACs are those of its kept weights (`masked_macs`), as
        Rethinking's Scratch-B counts an unstructured pruning's FLOPs."""
        if spec.startswith("uniform:"):
            macs = tas.Arch.uniform(self.space, float(spec.partition(":")[2])).macs
        else:
            macs = self.kept_macs(spec) or tas.Arch.load(spec).macs
        return round(self.cfg["epochs"] * min(2.0, self.full.macs / macs))

    @staticmethod
    def kept_macs(found: str | Path) -> int | None:
        """A weight-masked network's MACs counting only its kept weights (`masked_macs`, from
        the masks file its found.json names); None for a network without masks."""
        arch = tas.Arch.load(found)
        if not arch.search.get("masks"):
            return None
        model = tas.build_model(arch)
        return masked_macs(model, load_masks(Path(found).with_name(arch.search["masks"]), model))

    def write_random_archs(self) -> None:
        """The random baseline's networks: draws within +-2% of the target, seeded by sample."""
        for net in self.networks.values():
            if net.write is not None:
                net.write()

    # ------------------------------------------------------------ running
    def here(self, step: Step) -> bool:
        """Whether the step's result file is in this machine's run directory."""
        return self.path(step.name, step.result).exists()

    def done(self, step: Step, pending: set[str] | None = None) -> bool:
        """A step is done when its result file is here, or, for a training, when the committed
        results hold its row and no step still to run reads it (``pending``: the names of
        ``self.pending()``, computed when not given). A teacher, a search or a pruning is an
        input to later steps, so it must be here; so must a training that is one (a lottery
        ticket's dense run, a round the next round prunes) while a step that reads it runs."""
        if self.here(step):
            return True
        if not step.info or step.name not in self.committed()["runs"]:
            return False
        if pending is None:
            pending = {s.name for s in self.pending()}
        return step.name not in pending

    def pending(self) -> list[Step]:
        """The steps still to run, in the order they start: every training whose row is
        neither here nor committed, and each step not here that one of them needs, directly or
        through other steps. So a new machine makes again only what the missing rows need: not
        the teachers, searches and prunings of finished rows, but a committed training whose
        checkpoints a missing row starts from."""
        steps = {s.name: s for s in self.steps}
        committed = self.committed()["runs"]
        needed: set[str] = set()

        def need(step: Step) -> None:
            if step.name not in needed and not self.here(step):
                needed.add(step.name)
                for dep in step.deps:
                    need(steps[dep])

        for step in self.steps:
            if step.info and step.name not in committed:
                need(step)
        return [s for s in self.queue() if s.name in needed]

    def results_path(self) -> Path:
        return (self.results_root or ROOT / "studies" / "results") / f"{self.name}.json"

    def committed(self) -> dict:
        """What the study's committed results (studies/results/NAME.json) already hold: its
        trainings' rows by step, its teachers and its found.json records by name. The run
        directory is this machine's; these numbers are the study's across machines. Read once
        (`collect` reads it again when it rewrites the file)."""
        if self._committed is None:
            try:
                data = json.loads(self.results_path().read_text())
            except (OSError, ValueError):
                data = {}
            steps = {s.name for s in self.steps}
            self._committed = {
                "runs": {r["step"]: r for r in data.get("runs", []) if r.get("step") in steps},
                "teachers": data.get("teachers", {}),
                "found": data.get("found", {}),
            }
        return self._committed

    def searches(self) -> dict[str, Network]:
        """The networks a TAS search makes, by name."""
        return {
            name: net
            for name, net in self.networks.items()
            if net.makers and net.makers[0].args()[0] == "train_search.py"
        }

    def found_networks(self) -> dict[str, Network]:
        """The networks whose found.json holds all of them, by name: a search's, a structured
        pruning's (not a weight mask's: its masks file is beside it)."""
        return {
            name: net
            for name, net in self.networks.items()
            if net.makers and net.arch.endswith(".json") and "sparsity" not in net.info
        }

    def restore_found(self) -> list[str]:
        """Write back each found.json (a search's or a structured pruning's) that the committed
        results hold and this machine lacks, so the trainings that need only the network (KD,
        Scratch) need not repeat its search (hours on a CPU) or its teacher. Not where a
        fine-tuning still to run starts from weights that go with the found.json and are not
        committed: a pruning's kept filters of its teacher, a search's own trained weights
        (``search.init_ckpt``); that step runs again. Returns the steps whose found.json came
        back."""
        restored = []
        searches, rows = self.searches(), self.committed()["runs"]
        for name, net in self.found_networks().items():
            record = self.committed()["found"].get(name)
            path = Path(net.arch)
            if record is None or path.exists():
                continue
            tied = name not in searches or (record.get("search") or {}).get("init_ckpt")
            if tied and any(
                s.info and s.info["arch"] == name and s.info["scheme"] == "fine_tune"
                and s.name not in rows for s in self.steps
            ):  # fmt: skip
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(record, indent=2) + "\n")
            restored.append(net.makers[-1].name)
        return restored

    def command(self, step: Step, precision: str | None = None) -> list[str]:
        """The step's command line; ``precision`` (a Lightning precision) for a training or a
        search."""
        args = step.args()
        if precision and args[0] in ("train.py", "train_search.py"):
            args += ["--trainer.precision", precision]
        if args[0] == "sensitivity.py":  # a folder of curves, written in one go
            args += ["--out", str(self.path(step.name))]
        elif args[0] != "prune.py":
            out = self.path(step.name)
            resume = (out / "checkpoints" / "last.ckpt").exists()
            args += ["--out", str(out), "--resume" if resume else "--overwrite"]
        else:
            args += ["--out", str(self.path(step.name, "found.json"))]
        return [sys.executable, str(ROOT / args[0]), *args[1:]]

    def queue(self) -> list[Step]:
        """The steps in the order they start (when their dependencies are done): a training at
        its own place in the plan (the finals' order), a step that makes something (teacher,
        search, pruning) at the place of the first training that needs it, directly or through
        other steps. So a search whose trainings come late does not hold a core while earlier
        trainings wait."""
        index = {s.name: i for i, s in enumerate(self.steps)}
        order = self._places(index)
        return sorted(self.steps, key=lambda s: (order[s.name], index[s.name]))

    def _places(self, index: dict[str, int]) -> dict[str, int]:
        dependents: dict[str, list[str]] = {}
        for step in self.steps:
            for dep in step.deps:
                dependents.setdefault(dep, []).append(step.name)
        trainings = {s.name for s in self.steps if s.info}
        place: dict[str, int] = {}

        def visit(name: str) -> int:
            if name not in place:
                needed = [visit(t) for t in dependents.get(name, [])]
                own = [index[name]] if name in trainings or not needed else []
                place[name] = min(own + needed)
            return place[name]

        return {s.name: visit(s.name) for s in self.steps}

    def outside_band(self, step: Step) -> str | None:
        """Why a training's network is not compared: a found.json (a search's or a pruning's)
        whose MACs fall outside the study's band. None for the others (and for weight pruning,
        which keeps the full network's shape)."""
        net = self.networks.get(step.info.get("arch", "")) if step.info else None
        if net is None or "sparsity" in net.info or not net.arch.endswith(".json"):
            return None
        macs, ratio = tas.Arch.load(net.arch).macs, self.cfg["ratio"]
        low, high = (round(ratio * f * self.full.macs) for f in (1 - BAND, 1 + BAND))
        if low <= macs <= high:
            return None
        return (f"{net.arch}: {macs / 1e6:.2f}M MACs, outside the study's band "
                f"[{low / 1e6:.2f}M, {high / 1e6:.2f}M]")  # fmt: skip

    def run(
        self,
        jobs: int,
        only: set[str] | None = None,
        threads: int | None = None,
        precision: str = "auto",
    ) -> int:
        if precision == "auto":
            precision = "bf16-mixed" if native_bf16() else "32-true"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_random_archs()
        for name in self.restore_found():
            say(f"found.json of {name} restored from {self.results_path()}")
        todo = self.pending()
        if only:  # what the user names runs unless it is done, even if no row needs it now
            names = {s.name for s in todo}
            todo = [s for s in self.queue() if s.name in only and not self.done(s, names)]
        failed: set[str] = set()
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
        say(
            f"study {self.name}: {len(todo)} of {len(self.steps)} steps to run, {jobs} at a "
            f"time, {threads} thread(s) each, precision {precision}"
        )
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
            pending = {s.name for s in self.pending()}
            done = {s.name for s in self.steps if self.done(s, pending)}
            for step in list(todo):
                if any(d in failed for d in step.deps):
                    todo.remove(step)
                    failed.add(step.name)
                    say(f"skip   {step.name}: a step it needs failed")
                elif len(running) < jobs and all(d in done for d in step.deps):
                    todo.remove(step)
                    reason = self.outside_band(step)
                    if reason:  # not a comparison at the same budget: not trained
                        failed.add(step.name)
                        say(f"FAILED {step.name}: {reason}")
                        continue
                    cmd = self.command(step, precision)
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
        """Every finished step's numbers in one JSON file (studies/results/NAME.json): the
        committed results, updated with what finished here (a row, a teacher or a found.json of
        this machine replaces the committed one of the same name)."""
        self._committed = None  # the file as it is now
        committed = self.committed()
        rows = committed["runs"]
        kept: dict[str, int | None] = {}  # a masked network's kept-weight MACs, by network
        for step in self.steps:
            path = self.path(step.name, "results.json")
            if step.info and path.exists():
                res = json.loads(path.read_text())
                rows[step.name] = {**step.info, "step": step.name, **result_record(res)}
                net = self.networks[step.info["arch"]]
                if "sparsity" in step.info and Path(net.arch).exists():
                    if net.name not in kept:
                        try:
                            kept[net.name] = self.kept_macs(net.arch)
                        except ValueError as err:  # its masks file gone or unreadable: "-"
                            say(f"{net.name}: kept-weight MACs not counted: {err}")
                            kept[net.name] = None
                    if kept[net.name] is not None:
                        rows[step.name]["kept_macs"] = kept[net.name]
        teacher = committed["teachers"]
        for name in ("teacher", "teacher_slimming"):
            path = self.path(name, "results.json")
            if path.exists():
                teacher[name] = result_record(json.loads(path.read_text()))
        found = committed["found"]
        for name, net in self.found_networks().items():
            if Path(net.arch).exists():
                found[name] = _without_root(json.loads(Path(net.arch).read_text()))
        order = {s.name: i for i, s in enumerate(self.steps)}
        out = {
            "study": self.name,
            "dataset": self.dataset,
            "config": self.cfg,
            "full_macs": self.full.macs,
            "target_macs": round(self.cfg["ratio"] * self.full.macs),
            "teachers": teacher,
            "found": found,  # every search's and structured pruning's found.json, by network
            "runs": sorted(rows.values(), key=lambda r: order[r["step"]]),
        }
        path = self.results_path()
        write_text_atomic(path, json.dumps(out, indent=1) + "\n")
        self._committed = None
        say(f"{len(rows)} finished trainings collected in {path}")
        return out


RESULT_KEYS = ("test_acc", "macs", "params", "macs_reduction", "epochs", "wall_time_s")
# what a results.json written before a key existed stands for
RESULT_DEFAULTS = {"precision": "32-true", "teacher_test_acc": None}


def result_record(res: dict) -> dict:
    """The numbers a study keeps of one training's results.json (one in this machine's run
    directory: a results.json written before train.py named its device was made here)."""
    return {
        **{k: res[k] for k in RESULT_KEYS},
        **{k: res.get(k, default) for k, default in RESULT_DEFAULTS.items()},
        "device": res.get("device") or device_name(torch.device("cpu")),
    }


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m studies.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="a configs/study/*.yaml file")
    parser.add_argument("--jobs", type=int, default=1, help="steps run at once")
    parser.add_argument(
        "--threads", type=int, help="threads per step (default: the cores shared among --jobs)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="trainings' precision (auto: bf16-mixed where the CPU has AVX512-BF16 or AMX, "
        "else 32-true)",
    )
    parser.add_argument("--only", nargs="*", help="run just these steps (names as in the plan)")
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the steps, in the order they start, and their state (todo, done, or idle: "
        "not here, but no training still to run needs it), after writing back the committed "
        "found.json files as a run does first",
    )
    parser.add_argument("--report", action="store_true", help="collect results, write the report")
    args = parser.parse_args(argv)
    try:
        study = Study(args.config)
    except (ValueError, KeyError) as err:
        print(f"studies.run: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.list:  # in the order they start, as a run would see them
        study.restore_found()
        try:
            pending = {s.name for s in study.pending()}
            for s in study.queue():
                state = (
                    "todo" if s.name in pending else "done" if study.done(s, pending) else "idle"
                )
                print(f"{state}  {s.name}  (needs {', '.join(s.deps) or '-'})", flush=True)
        except BrokenPipeError:  # the reader left early (`| head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if args.report:
        from studies.report import write_report

        write_report(study.collect())
        return
    only = set(args.only) if args.only else None
    sys.exit(
        study.run(max(1, args.jobs), only, args.threads and max(1, args.threads), args.precision)
    )


if __name__ == "__main__":
    main()
