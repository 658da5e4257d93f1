"""The comparison study's plan, scheduler and report (studies/run.py, studies/report.py); the
trainings themselves are covered by the pipeline tests."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import tas
from studies.report import plot, table
from studies.run import ROOT, Study

CONFIG = ROOT / "configs" / "study" / "resnet20_cifar10_cpu.yaml"


@pytest.fixture
def study(tmp_path):
    return Study(str(CONFIG), runs_root=tmp_path, results_root=tmp_path)


def test_plan_covers_every_method_and_scheme(study):
    names = [s.name for s in study.steps]
    assert len(names) == len(set(names))
    for step in study.steps:
        assert all(dep in names for dep in step.deps), step.name
    finals = {(s.info["method"], s.info["scheme"]) for s in study.steps if s.info}
    for method in ("tas", "uniform", "random", "l1_norm", "slimming"):
        for scheme in ("kd", "scratch_e", "scratch_b"):
            assert (method, scheme) in finals
    assert {m for m, s in finals if s == "fine_tune"} == {"l1_norm", "slimming"}
    kd_seeds = {
        (s.info["method"], s.info["seed"]) for s in study.steps if s.info.get("scheme") == "kd"
    }
    assert {("tas", 0), ("tas", 1), ("uniform", 0), ("uniform", 1)} <= kd_seeds
    assert sum(1 for s in study.steps if s.info.get("arch", "").startswith("random")
               and s.info["scheme"] == "kd") == 3  # fmt: skip


def test_scratch_b_gets_the_teachers_compute_capped_at_twice(study):
    epochs = study.cfg["epochs"]
    uniform = tas.Arch.uniform(study.space, 0.51)
    assert 0.49 <= uniform.macs / study.full.macs <= 0.51
    expected = round(epochs * min(2.0, study.full.macs / uniform.macs))
    assert study.scratch_b_epochs("uniform:0.51") == expected
    small = tas.Arch.uniform(study.space, 0.2)
    small.save(study.dir / "small.json")
    assert study.scratch_b_epochs(str(study.dir / "small.json")) == 2 * epochs


def test_search_band_is_the_studys_band(study):
    cmd = study.command(next(s for s in study.steps if s.name == "search"))
    ratio = float(cmd[cmd.index("--model.ratio") + 1])
    tolerance = float(cmd[cmd.index("--model.tolerance") + 1])
    target = study.cfg["ratio"]
    assert ratio == pytest.approx(target * 1.02) and ratio - tolerance == pytest.approx(
        target * 0.98
    )


def test_random_architectures_are_in_the_band_and_stable(study):
    study.write_random_archs()
    target = study.cfg["ratio"] * study.full.macs
    archs = [tas.Arch.load(study.path(f"random{k}", "found.json")) for k in range(3)]
    assert all(abs(a.macs - target) <= 0.02 * target for a in archs)
    assert len({tuple(sorted(a.widths.items())) for a in archs}) == 3
    again = Study(str(CONFIG), runs_root=study.dir.parent)
    shutil.rmtree(study.dir)
    again.write_random_archs()
    assert [tas.Arch.load(again.path(f"random{k}", "found.json")) for k in range(3)] == archs


def test_commands_resume_an_interrupted_step(study):
    step = next(s for s in study.steps if s.name == "uniform-kd-s0")
    cmd = study.command(step)
    assert cmd[-1] == "--overwrite" and "--teacher" in cmd
    assert cmd[cmd.index("--teacher") + 1] == study.ckpt("teacher")
    last = study.path(step.name, "checkpoints", "last.ckpt")
    last.parent.mkdir(parents=True)
    last.touch()
    assert study.command(step)[-1] == "--resume"


def test_run_starts_what_is_ready_and_collects(study, monkeypatch):
    """Mark the teacher done (a fabricated train.py checkpoint), run the L1 pruning step for
    real, and check it ran once, logged, and is skipped the second time."""
    torch.manual_seed(0)
    full = tas.Arch.full(study.space)
    model = tas.build_model(full)
    teacher = study.path("teacher")
    (teacher / "checkpoints").mkdir(parents=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"tas_arch": full.to_dict(), "state_dict": state}, study.ckpt("teacher"))
    result = {"test_acc": 0.5, "macs": full.macs, "params": full.params, "macs_reduction": 0.0,
              "epochs": 1, "wall_time_s": 1.0}  # fmt: skip
    (teacher / "results.json").write_text(json.dumps(result))
    assert study.run(jobs=1, only={"prune_l1_norm"}) == 0
    found = tas.Arch.load(study.path("prune_l1_norm", "found.json"))
    assert found.search["method"] == "l1_norm" and found.macs <= 0.5 * full.macs
    log = (study.dir / "prune_l1_norm.log").read_text()
    assert log.count("$ ") == 1
    assert study.run(jobs=1, only={"prune_l1_norm"}) == 0  # done: not run again
    assert (study.dir / "prune_l1_norm.log").read_text() == log
    data = json.loads(study.results_path().read_text())
    assert data["teachers"]["teacher"]["test_acc"] == 0.5 and data["runs"] == []
    assert "Full network (teacher)" in table(data)


def test_a_network_outside_the_band_is_not_trained(study, monkeypatch, capsys):
    """A search that ended outside the band fails its trainings in one line, none started;
    one inside the band is compared."""
    steps = {s.name: s for s in study.steps}
    kd = next(s for s in study.steps if s.info.get("arch") == "tas" and s.info["scheme"] == "kd")
    found = Path(study.networks["tas"].arch)
    found.parent.mkdir(parents=True)
    over = tas.Arch.uniform(study.space, 0.6)  # 60% of the MACs: a 50% study's band is 49-51%
    over.save(found)
    assert "outside the study's band" in study.outside_band(kd)
    started = []
    monkeypatch.setattr("studies.run.subprocess.Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr(study, "collect", lambda: {})
    monkeypatch.setattr(study, "done", lambda step, pending=None: step.name in kd.deps)
    assert study.run(jobs=1, only={kd.name}) == 1 and not started
    assert f"FAILED {kd.name}: {found}: " in capsys.readouterr().out
    tas.Arch.uniform(study.space, 0.5 * 1.02).save(found)  # the widest uniform network in band
    assert study.outside_band(kd) is None
    assert study.outside_band(steps["uniform-kd-s0"]) is None  # not a found.json


def test_table_groups_seeds_and_plot_draws(tmp_path):
    run = {"macs": 20e6, "params": 1.3e5, "macs_reduction": 0.5, "epochs": 10, "wall_time_s": 60}
    data = {
        "teachers": {},
        "runs": [
            {**run, "method": "tas", "scheme": "kd", "seed": 0, "test_acc": 0.80},
            {**run, "method": "tas", "scheme": "kd", "seed": 1, "test_acc": 0.82},
            {**run, "method": "uniform", "scheme": "scratch_e", "seed": 0, "test_acc": 0.7},
            {**run, "method": "random", "scheme": "kd", "seed": 0, "test_acc": 0.7},
            {**run, "method": "random", "scheme": "kd", "seed": 0, "test_acc": 0.7, "macs": 21e6},
        ],
    }
    text = table(data)
    assert "| TAS (search) | KD | 20.00M | 50.0% | 130.0K | 81.00 ± 1.41 | 2 | 10 |" in text
    assert "| Random (in MACs band) | KD | 20.50M (mean) |" in text
    assert "| Uniform width | Scratch-E | 20.00M | 50.0% | 130.0K | 70.00 | 1 | 10 |" in text
    data |= {"study": "t", "dataset": "cifar100", "target_macs": 20e6}
    data["teachers"]["teacher"] = {**run, "macs": 40e6, "test_acc": 0.85}
    plot(data, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000 and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "study").glob("*.yaml")), ids=str)
def test_every_study_config_plans_with_existing_configs(config, tmp_path):
    study = Study(str(config), runs_root=tmp_path)
    for key in ("train_config", "search_config"):
        assert (ROOT / study.cfg[key]).is_file()
        run_cfg = yaml.safe_load((ROOT / study.cfg[key]).read_text())
        assert run_cfg["model"]["depth"] == study.cfg["depth"]
        classes = {"cifar10": 10, "cifar100": 100}.get(run_cfg["data"]["name"], 10)
        assert study.space.num_classes == classes
    assert study.path("x").parent.name == config.stem == study.name
    study.write_random_archs()
    for step in study.steps:
        if step.name.startswith(("teacher", "search", "uniform", "random")):
            cmd = study.command(step)
            assert Path(cmd[1]).is_file()


def test_full_data_study_plan_is_its_config(tmp_path):
    study = Study(
        str(ROOT / "configs" / "study" / "resnet20_cifar10_full.yaml"), runs_root=tmp_path
    )
    steps = {s.name: s for s in study.steps}
    warm = study.command(steps["search_tas"])
    assert warm[warm.index("--teacher") + 1] == study.ckpt("teacher")
    assert steps["search_tas"].deps == ("teacher",)
    scratch = study.command(steps["search_tas_scratch"])
    assert "--teacher" not in scratch and steps["search_tas_scratch"].deps == ()
    assert scratch[scratch.index("--config") + 1].endswith("search_resnet20_cifar10_scratch.yaml")
    seeds = {
        (s.info["arch"], s.info["scheme"]): set() for s in study.steps if s.info
    }  # fmt: skip
    for s in study.steps:
        if s.info:
            seeds[(s.info["arch"], s.info["scheme"])].add(s.info["seed"])
    assert seeds[("tas", "kd")] == seeds[("uniform", "kd")] == {0, 1, 2}
    further = {"thinet", "lasso", "sss", "amc", "netadapt", "sensitivity"}
    magnitude = {"mag50", "mag75", "mag90", "mag95"}  # weight pruning: see the test below
    assert {a for a, sc in seeds if sc == "fine_tune"} == {
        "tas", "tas_search2", "l1_norm", "slimming", *further, *magnitude
    }  # fmt: skip
    assert {a for a, sc in seeds if sc == "kd"} >= {"tas_scratch", "tas_search1", "random2"}
    assert {a for a, sc in seeds if sc == "kd"} >= further
    assert {a for a, sc in seeds if sc == "rkd"} == {"tas", "uniform"}
    assert steps["prune_sss"].deps == ("teacher",)
    sss = study.command(steps["prune_sss"])
    assert sss[sss.index("--steps") + 1] == "400" and sss[sss.index("--data_name") + 1] == "cifar10"
    full = study.command(steps["full-scratch_e-s0"])
    assert full[full.index("--arch") + 1] == "full"
    teacher = study.command(steps["teacher"])
    assert teacher[teacher.index("--config") + 1] == "configs/cpu/train_resnet20_cifar10_full.yaml"
    assert "--trainer.max_epochs" not in teacher or teacher[
        teacher.index("--trainer.max_epochs") + 1
    ] != str(study.cfg["epochs"])
    # each cosine cycle of the teachers starts from the one before's weights
    assert steps["teacher"].deps == steps["teacher_slimming"].deps == ("teacher_60ep",)
    assert steps["teacher_60ep"].deps == ("teacher_40ep",)
    assert steps["teacher_40ep"].deps == ("teacher_20ep",)
    assert steps["teacher_20ep"].deps == () and "--init" not in study.command(steps["teacher_20ep"])
    for name in ("teacher", "teacher_slimming"):
        cmd = study.command(steps[name])
        assert cmd[cmd.index("--init") + 1] == "inherit"
        assert cmd[cmd.index("--init_from") + 1] == study.ckpt("teacher_60ep")
    slim = study.command(steps["teacher_slimming"])
    assert slim[slim.index("--model.bn_l1") + 1] == "0.0001" and "--model.bn_l1" not in teacher


def test_queue_makes_each_input_just_before_the_first_training_that_needs_it(tmp_path):
    study = Study(str(FULL_CONFIG), runs_root=tmp_path)
    queue = [s.name for s in study.queue()]
    assert sorted(queue) == sorted(s.name for s in study.steps)
    # the trainings keep the plan's order (the finals' order of the config)
    trainings = [s.name for s in study.steps if s.info]
    assert [n for n in queue if n in set(trainings)] == trainings
    # every step starts after what it needs
    where = {name: i for i, name in enumerate(queue)}
    for step in study.steps:
        assert all(where[d] < where[step.name] for d in step.deps), step.name
    # the verdict's trainings come first; the from-scratch search waits for its own training
    assert queue.index("search_tas_scratch") > queue.index("uniform-kd-s2")
    assert queue.index("search_tas_scratch") == queue.index("tas_scratch-kd-s0") - 1
    assert queue.index("search_tas") < queue.index("tas-kd-s0") < queue.index("uniform-kd-s0")


def test_a_baseline_is_one_network_entry(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "study" / "resnet20_cifar10_full.yaml").read_text())
    cfg["networks"]["another"] = {"kind": "prune", "method": "l1_norm"}
    cfg["finals"].append({"scheme": "kd", "seeds": [0], "networks": ["another"]})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    study = Study(str(path), runs_root=tmp_path)
    steps = {s.name: s for s in study.steps}
    assert steps["another-kd-s0"].deps == ("prune_another", "teacher")
    assert study.command(steps["prune_another"])[3] == "l1_norm"
    cfg["networks"]["sens"] = {"kind": "sensitivity", "images": 500}
    cfg["networks"]["thin"] = {"kind": "prune", "method": "thinet", "args": ["--images", 100]}
    cfg["finals"].append({"scheme": "rkd", "seeds": [0], "networks": ["tas"]})
    cfg["finals"].append({"scheme": "fine_tune", "seeds": [0], "networks": ["sens", "thin"]})
    path.write_text(yaml.safe_dump(cfg))
    study = Study(str(path), runs_root=tmp_path)
    steps = {s.name: s for s in study.steps}
    assert steps["prune_sens"].deps == ("sensitivity_sens",)
    assert steps["sensitivity_sens"].deps == ("teacher",)
    sens = study.command(steps["sensitivity_sens"])
    assert sens[sens.index("--out") + 1] == str(study.path("sensitivity_sens"))
    prune = study.command(steps["prune_sens"])
    assert prune[prune.index("--sensitivity") + 1] == str(
        study.path("sensitivity_sens", "sensitivity.json")
    )
    assert study.command(steps["prune_thin"])[-4:-2] == ["--images", "100"]
    rkd = study.command(steps["tas-rkd-s0"])
    assert rkd[rkd.index("--model.distill") + 1] == "hinton+rkd" and "--teacher" in rkd
    # fine-tuning starts from the weights a method left (search.init_ckpt), else the teacher
    tune = steps["thin-fine_tune-s0"]
    assert study.init_from(study.networks["thin"]) == study.ckpt("teacher")
    found = study.path("prune_thin", "found.json")
    arch = tas.Arch.full(study.space)
    arch.search["init_ckpt"] = "found.init.ckpt"
    arch.save(found)
    init = study.command(tune)
    assert init[init.index("--init_from") + 1] == str(study.path("prune_thin", "found.init.ckpt"))
    cfg["teachers"]["teacher"] = {"from": "teacher_40ep", "epoch": 3}  # a misspelt key
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="unknown keys"):
        Study(str(path), runs_root=tmp_path)
    cfg["teachers"]["teacher"] = {"from": "teacher_40ep"}
    cfg["networks"]["bad"] = {"kind": "nonsense"}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="kind must be one of"):
        Study(str(path), runs_root=tmp_path)


def test_paired_differences_by_hand():
    from studies.report import paired

    run = {"macs": 20e6, "params": 1e5, "macs_reduction": 0.5, "epochs": 8, "wall_time_s": 1}
    runs = [
        {**run, "method": "tas", "scheme": "kd", "seed": 0, "test_acc": 0.86},
        {**run, "method": "tas", "scheme": "kd", "seed": 1, "test_acc": 0.87},
        {**run, "method": "uniform", "scheme": "kd", "seed": 0, "test_acc": 0.85},
        {**run, "method": "uniform", "scheme": "kd", "seed": 1, "test_acc": 0.85},
        {**run, "method": "uniform", "scheme": "kd", "seed": 2, "test_acc": 0.99},  # unpaired
        {**run, "method": "random", "scheme": "kd", "seed": 0, "test_acc": 0.84},
        {**run, "method": "random", "scheme": "kd", "seed": 0, "test_acc": 0.85},
        {**run, "method": "random", "scheme": "kd", "seed": 0, "test_acc": 0.90},
    ]
    text = paired({"runs": runs})
    # TAS - Uniform: +1.00 and +2.00 -> mean 1.50, std 0.71
    assert "paired by training seed: +1.50 ± 0.71 points (n=2: +1.00, +2.00)" in text
    # median random 85.00: TAS 86, 87 -> +1.00, +2.00
    assert "median Random (3 networks, 85.00%), KD: +1.50 ± 0.71 points over 2" in text
    assert paired({"runs": runs[2:]}) == ""


@pytest.mark.slow  # ~75 s: seven short fine-tunes
def test_settling_check_ranks_found_uniform_and_random(tmp_path):
    """studies.settling end to end on synthetic data: every network fine-tuned from the
    teacher's first filters and scored; a rerun skips what is done."""
    import subprocess
    import sys

    from tests.cli_helpers import QUIET, run_script, script_env

    teacher = tmp_path / "teacher"
    tiny = ["--data.name=synthetic", "--data.synthetic_train_size=256", "--logger=false"]
    result = run_script("train.py", *QUIET, *tiny, "--model.depth=20",
                        "--trainer.max_epochs=1", f"--out={teacher}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = tmp_path / "found.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(20), 0.47).save(found)
    cmd = [sys.executable, "-m", "studies.settling", "--teacher",
           str(teacher / "checkpoints" / "last.ckpt"), "--found", str(found), "--random", "2",
           "--epochs", "1", "--data_name", "synthetic", "--out", str(tmp_path / "rank")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=script_env())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "rank").glob("*.json")}
    assert len(rows) == 4 and {"uniform", "random_0", "random_1"} <= set(rows)
    full = tas.Arch.full(tas.SearchSpace.cifar_resnet(20)).macs
    for row in rows.values():
        assert 0.0 <= row["arch_half_acc"] <= 1.0 and row["images"] == 1000
    for k in ("random_0", "random_1"):
        assert 0.45 * full <= rows[k]["macs"] <= 0.5 * full
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=script_env())
    assert again.returncode == 0 and "random:0:" not in again.stdout  # done: not retrained


FULL_CONFIG = ROOT / "configs" / "study" / "resnet20_cifar10_full.yaml"


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_weight_pruning_rows_of_the_full_data_study(tmp_path):
    """Magnitude masks (fine-tuned; Scratch-E under the same mask) and lottery tickets (IMP
    with rewinding; their random re-initialisation), planned at the end of the queue."""
    study = Study(str(FULL_CONFIG), runs_root=tmp_path)
    steps = {s.name: s for s in study.steps}
    imp = ["imp50", "imp75", "imp90", "imp95"]
    mag = ["mag50", "mag75", "mag90", "mag95"]
    new = [f"{n}-rewind-s0" for n in imp] + [f"{n}-fine_tune-s0" for n in mag]
    new += [f"{n}-scratch_e-s1" for n in [*mag, *imp]]
    new += [f"{n}-scratch_b-s1" for n in [*imp, *mag]]
    assert [s.name for s in study.steps[-len(new) :]] == new  # they run last
    # the dense run keeps every epoch's checkpoint: the tickets rewind to its first
    dense = study.command(steps["full-scratch_e-s0"])
    assert _arg(dense, "--keep_every_epoch") == "true" and _arg(dense, "--arch") == "full"
    assert "--keep_every_epoch" not in study.command(steps["tas-scratch_e-s0"])
    rewind_to = str(study.path("full-scratch_e-s0", "checkpoints", "epoch000.ckpt"))
    # round 1 prunes the dense run; round r the ticket of round r-1, its masks kept
    first = study.command(steps["prune_imp50"])
    assert steps["prune_imp50"].deps == ("full-scratch_e-s0",)
    assert _arg(first, "--method") == "magnitude" and _arg(first, "--sparsity") == "0.5"
    assert _arg(first, "--teacher") == study.ckpt("full-scratch_e-s0") and "--masks" not in first
    assert _arg(first, "--scope") == "global"
    assert _arg(first, "--out") == str(study.path("prune_imp50", "found.json"))
    for prev, this, sparsity in zip(imp, imp[1:], ["0.75", "0.9", "0.95"]):
        cmd = study.command(steps[f"prune_{this}"])
        assert steps[f"prune_{this}"].deps == (f"{prev}-rewind-s0",)
        assert _arg(cmd, "--teacher") == study.ckpt(f"{prev}-rewind-s0")
        assert _arg(cmd, "--masks") == str(study.path(f"prune_{prev}", "found.masks.pt"))
        assert _arg(cmd, "--sparsity") == sparsity
    for r, name in enumerate(imp, 1):
        ticket = steps[f"{name}-rewind-s0"]
        assert ticket.deps == (f"prune_{name}", "full-scratch_e-s0")
        cmd = study.command(ticket)
        assert _arg(cmd, "--arch") == str(study.path(f"prune_{name}", "found.json"))
        assert _arg(cmd, "--init") == "inherit" and _arg(cmd, "--init_from") == rewind_to
        assert _arg(cmd, "--trainer.max_epochs") == str(study.cfg["epochs"])
        assert "--model.lr" not in cmd and "--keep_every_epoch" not in cmd
        assert ticket.info | {"sparsity": 0} == {
            "method": "imp", "scheme": "rewind", "seed": 0, "arch": name, "sparsity": 0,
            "source": "imp", "scope": "global", "round": r, "rewind_epoch": 0,
        }  # fmt: skip
        control = study.command(steps[f"{name}-scratch_e-s1"])
        assert "--init" not in control and _arg(control, "--arch") == _arg(cmd, "--arch")
        assert steps[f"{name}-scratch_e-s1"].deps == (f"prune_{name}",)
    # magnitude: pruned from the teacher, fine-tuned from its weights under the mask
    for name, sparsity in zip(mag, [0.5, 0.75, 0.9, 0.95]):
        prune = study.command(steps[f"prune_{name}"])
        assert steps[f"prune_{name}"].deps == ("teacher",) and "--masks" not in prune
        assert _arg(prune, "--teacher") == study.ckpt("teacher")
        assert float(_arg(prune, "--sparsity")) == sparsity
        tune = steps[f"{name}-fine_tune-s0"]
        assert tune.deps == (f"prune_{name}", "teacher") and tune.info["sparsity"] == sparsity
        cmd = study.command(tune)
        assert _arg(cmd, "--init_from") == study.ckpt("teacher")
        assert _arg(cmd, "--arch") == str(study.path(f"prune_{name}", "found.json"))
        assert _arg(cmd, "--trainer.max_epochs") == str(study.cfg["finetune_epochs"])
        scratch = study.command(steps[f"{name}-scratch_e-s1"])
        assert "--init" not in scratch and _arg(scratch, "--arch") == _arg(cmd, "--arch")
    for name in [*imp, *mag]:
        assert steps[f"{name}-scratch_b-s1"].deps == (f"prune_{name}",)


def test_scratch_b_of_a_masked_network_counts_the_kept_weights_macs(study):
    """Rethinking's Scratch-B for unstructured pruning: the epochs that bring MACs x epochs up to
    the full network's, a masked network's MACs being those of its kept weights, at most 2x."""
    from tas.baselines.sparsity import magnitude_masks, masked_macs

    epochs, full = study.cfg["epochs"], tas.Arch.full(study.space)
    model = tas.build_model(full)
    spec = str(study.dir / "found.json")
    for sparsity in (0.0, 0.3, 0.9):
        masks = magnitude_masks(model, sparsity, "global")
        _save_masked_network(Path(spec), full, masks)
        ratio = full.macs / masked_macs(model, masks)
        assert study.scratch_b_epochs(spec) == round(epochs * min(2.0, ratio))
        if sparsity == 0.3:
            assert 1.0 < ratio < 2.0 and epochs < study.scratch_b_epochs(spec) < 2 * epochs
    assert study.scratch_b_epochs(spec) == 2 * epochs  # 90%: capped


def _with(cfg: dict, tmp_path: Path, networks: dict | None = None, finals: list | None = None):
    cfg = {**cfg, "networks": {**cfg["networks"], **(networks or {})}}
    cfg["finals"] = [*cfg["finals"], *(finals or [])]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Study(str(path), runs_root=tmp_path)


IMP = {"kind": "imp", "sparsities": [0.5, 0.9], "dense": "full", "rewind_epoch": 0}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sparsities": [0.9, 0.5]}, "strictly increasing"),
        ({"sparsities": [0.5, 0.5]}, "strictly increasing"),
        ({"sparsities": [0.5, 1.0]}, "strictly increasing"),
        ({"sparsities": []}, "strictly increasing"),
        ({"sparsities": 0.5}, "strictly increasing"),
        ({"sparsities": [0.5, "x"]}, "strictly increasing"),
        ({"rewind": 0}, "unknown keys"),
        ({"scope": "channel"}, "scope must be one of"),
        ({"dense": "tas"}, "dense must name a `kind: full` network"),
        ({"rewind_epoch": 8}, "rewind_epoch must be an epoch of the dense run, 0 to 7"),
        ({"rewind_epoch": -1}, "rewind_epoch"),
    ],
)
def test_bad_imp_specs_raise(change, message, tmp_path):
    cfg = yaml.safe_load(FULL_CONFIG.read_text())
    with pytest.raises(ValueError, match=message):
        _with(cfg, tmp_path, {"lt": {**IMP, **change}})


def test_bad_weight_pruning_plans_raise(tmp_path):
    cfg = yaml.safe_load(FULL_CONFIG.read_text())
    with pytest.raises(ValueError, match="sparsity must be a fraction"):
        _with(cfg, tmp_path, {"m": {"kind": "magnitude", "sparsity": 1.5}})
    with pytest.raises(ValueError, match="sparsity must be a fraction"):
        _with(cfg, tmp_path, {"m": {"kind": "magnitude", "sparsity": [0.5]}})
    with pytest.raises(ValueError, match=r"unknown keys \['ratio'\]"):
        _with(cfg, tmp_path, {"m": {"kind": "magnitude", "sparsity": 0.5, "ratio": 0.5}})
    with pytest.raises(ValueError, match="mag90 is not an imp round"):
        _with(cfg, tmp_path, finals=[{"scheme": "rewind", "seeds": [0], "networks": ["mag90"]}])
    with pytest.raises(ValueError, match="very initial weights"):  # seed 0: the dense run's init
        _with(cfg, tmp_path, finals=[{"scheme": "scratch_e", "seeds": [0], "networks": ["imp50"]}])
    with pytest.raises(ValueError, match="very initial weights"):  # the teachers' init
        _with(cfg, tmp_path, finals=[{"scheme": "kd", "seeds": [0], "networks": ["mag50"]}])
    with pytest.raises(ValueError, match=r"makes the networks \['imp50'"):
        _with(cfg, tmp_path, finals=[{"scheme": "rewind", "seeds": [0], "networks": ["imp"]}])
    with pytest.raises(ValueError, match="'imp50' is defined twice"):
        _with(cfg, tmp_path, {"imp50": {"kind": "magnitude", "sparsity": 0.5}})
    # round 2 prunes round 1's ticket: a plan without that final cannot run
    lone = _with(
        cfg, tmp_path, {"lt": IMP}, [{"scheme": "rewind", "seeds": [0], "networks": ["lt50"]}]
    )
    assert {"prune_lt50", "prune_lt90", "lt50-rewind-s0"} <= {s.name for s in lone.steps}
    # rewind_epoch init: the original ticket, the dense run's weights before its first step
    first = _with(cfg, tmp_path, {"lt": {**IMP, "rewind_epoch": "init"}},
                  [{"scheme": "rewind", "seeds": [0], "networks": ["lt50"]}])  # fmt: skip
    steps = {s.name: s for s in first.steps}
    dense = first.path("full-scratch_e-s0", "checkpoints", "init.ckpt")
    assert _arg(first.command(steps["lt50-rewind-s0"]), "--init_from") == str(dense)
    assert _arg(first.command(steps["full-scratch_e-s0"]), "--keep_every_epoch") == "true"
    with pytest.raises(ValueError, match="prune_lt90 needs lt50-rewind-s0, which the plan"):
        _with(
            cfg, tmp_path, {"lt": IMP}, [{"scheme": "rewind", "seeds": [1], "networks": ["lt50"]}]
        )


def test_sparsity_table_and_plot_draw(tmp_path, monkeypatch):
    from studies import report

    run = {"macs": 40e6, "params": 2.7e5, "macs_reduction": 0.0, "epochs": 8, "wall_time_s": 3000}
    runs = [
        {**run, "method": "tas", "scheme": "kd", "seed": 0, "test_acc": 0.85, "macs": 20e6},
        {**run, "method": "full", "scheme": "scratch_e", "seed": 0, "test_acc": 0.88},
    ]
    accs = {("magnitude", "fine_tune"): 0.87, ("magnitude", "scratch_e"): 0.84,
            ("imp", "rewind"): 0.86, ("imp", "scratch_e"): 0.83,
            ("magnitude", "scratch_b"): 0.85, ("imp", "scratch_b"): 0.84}  # fmt: skip
    for (source, scheme), acc in accs.items():
        for k, sparsity in enumerate([0.5, 0.75, 0.9, 0.95]):
            seeds = [1, 2] if scheme == "scratch_e" else [0]
            rewind = {"rewind_epoch": 0} if scheme == "rewind" else {}
            # the magnitude rows carry their masks' kept-weight MACs, the IMP rows predate them
            kept = {"kept_macs": 40e6 * (1 - sparsity)} if source == "magnitude" else {}
            for seed in seeds:
                runs.append({**run, "method": source, "scheme": scheme, "seed": seed,
                             "arch": f"{source}{k}", "source": source, "sparsity": sparsity,
                             "test_acc": acc - 0.05 * k - 0.01 * seed, **rewind,
                             **kept})  # fmt: skip
    teacher = {**run, "test_acc": 0.9, "epochs": 40}
    data = {"study": "t", "dataset": "cifar10", "target_macs": 20e6, "teachers":
            {"teacher": teacher}, "runs": runs}  # fmt: skip
    text = report.sparsity_table(data)
    assert "| Full network (teacher) | CE | 0.0% | 40.00 | 90.00 | 1 | 40 | 50.0 |" in text
    assert (
        "| Full network (finals recipe) | Scratch-E | 0.0% | 40.00 | 88.00 | 1 | 8 | 50.0 |" in text
    )
    assert (
        "| Magnitude (one shot, teacher) | Fine-tuned from the teacher | 90.0% | 4.00 | 77.00 |"
        in text
    )
    assert (
        "| IMP (iterative, dense run) | Random re-init (Scratch-E), same mask | 95.0% | - | "
        "66.50 ± 0.71 | 2 |" in text
    )
    assert "| IMP (iterative, dense run) | Random re-init (Scratch-B), same mask | 50.0% |" in text
    assert (
        "| Rewound to the dense run's weights after epoch 1 (ticket) | 90.0% | - | 76.00 |" in text
    )
    assert text.count("\n") == 2 + 2 + 24
    tickets = [r for r in runs if r["scheme"] == "rewind"]
    for r in tickets:
        r["rewind_epoch"] = "init"
    assert "| Rewound to the dense run's initial weights (ticket) |" in report.sparsity_table(data)
    del tickets[0]["rewind_epoch"]  # a row kept before the key existed
    assert "| Rewound to the dense run's early weights (ticket) | 50.0% |" in report.sparsity_table(
        data
    )
    # the MACs table and plot leave them out (they keep the full network's MACs)
    macs = report.table(data)
    assert "Magnitude" not in macs and "IMP" not in macs and "TAS (search)" in macs
    assert report.sparsity_table({**data, "runs": runs[:2]}) == ""
    monkeypatch.setattr(report, "ROOT", tmp_path)
    report.write_report(data)
    md = (tmp_path / "studies" / "results" / "t.md").read_text()
    assert "Weight pruning" in md and "| IMP (iterative, dense run) | Rewound" in md
    assert f"Trainings by device (wall times are that device's): not recorded: {len(runs)}." in md
    for png in ("study_t.png", "study_t_sparsity.png"):
        assert (tmp_path / "docs" / png).stat().st_size > 10_000
    assert not list((tmp_path / "docs").glob(".*tmp*"))


def _save_masked_network(found: Path, full: tas.Arch, masks: dict) -> None:
    """What a weight pruning writes: the full network's found.json naming its masks file, and
    that file beside it."""
    from tas.baselines.sparsity import save_masks

    full.search["masks"] = "found.masks.pt"
    found.parent.mkdir(parents=True, exist_ok=True)
    full.save(found)
    save_masks(found.with_name("found.masks.pt"), masks, {})


def _write_masked_networks(study: Study) -> None:
    """Every weight-pruned network of the study, its masks keeping every weight (enough for the
    commands that read them)."""
    from tas.baselines.sparsity import prunable_weights

    full = tas.Arch.full(study.space)
    ones = {k: torch.ones_like(w, dtype=torch.bool)
            for k, w in prunable_weights(tas.build_model(full)).items()}  # fmt: skip
    for net in study.networks.values():
        if "sparsity" in net.info:
            _save_masked_network(Path(net.arch), full, ones)


def test_final_args_reach_every_final_and_nothing_else(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "study" / "resnet20_cifar10_full.yaml").read_text())
    cfg["final_args"], cfg["teacher_args"] = ["--model.channels_last", "true"], []
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    study = Study(str(path), runs_root=tmp_path)
    _write_masked_networks(study)  # a mask's Scratch-B epochs are counted from its file
    for step in study.steps:
        cmd = study.command(step)
        final = step.info is not None and "scheme" in step.info
        assert ("--model.channels_last" in cmd) == final, step.name
        assert ("--model.bn_l1" in cmd) == (step.name == "teacher_slimming"), step.name
        assert cmd.count("--trainer.precision") == 0
    cfg["final_args"], cfg["teacher_args"] = [], ["--model.channels_last", "true"]
    path.write_text(yaml.safe_dump(cfg))
    study = Study(str(path), runs_root=tmp_path)
    for step in study.steps:
        cmd = study.command(step, "bf16-mixed")
        teacher = step.name.startswith("teacher")
        assert ("--model.channels_last" in cmd) == teacher, step.name
        trains = Path(cmd[1]).name in ("train.py", "train_search.py")
        assert (_arg(cmd, "--trainer.precision") if trains else None) == (
            "bf16-mixed" if trains else None
        ), step.name
        assert ("--trainer.precision" in cmd) == trains, step.name


def test_committed_results_carry_the_study_to_a_new_machine(tmp_path):
    """A machine without the run directory (a new checkout): the trainings that the committed
    results hold are done, the searches' found.json are written back from them, teachers and
    prunings are not (their weights are inputs, not committed), and collecting merges what
    finished here into the committed file instead of replacing it."""
    study = Study(str(FULL_CONFIG), runs_root=tmp_path / "runs", results_root=tmp_path)
    steps = {s.name: s for s in study.steps}
    arch = tas.Arch.uniform(study.space, 0.5)
    row = {**steps["uniform-kd-s0"].info, "step": "uniform-kd-s0", "test_acc": 0.8,
           "macs": arch.macs, "params": arch.params, "macs_reduction": 0.5, "epochs": 8,
           "wall_time_s": 1.0, "precision": "32-true", "teacher_test_acc": 0.88}  # fmt: skip
    gone = {**row, "step": "no-longer-planned"}
    teacher = {"test_acc": 0.88, "macs": study.full.macs, "params": study.full.params,
               "macs_reduction": 0.0, "epochs": 20, "wall_time_s": 9.0}  # fmt: skip
    committed = {"runs": [row, gone], "teachers": {"teacher": teacher},
                 "found": {"tas": arch.to_dict()}}  # fmt: skip
    study.results_path().write_text(json.dumps(committed))

    assert study.done(steps["uniform-kd-s0"]) and not study.done(steps["uniform-kd-s1"])
    assert not study.done(steps["teacher"]) and not study.done(steps["prune_l1_norm"])
    assert not study.done(steps["search_tas"])
    assert study.restore_found() == ["search_tas"]
    assert study.done(steps["search_tas"]) and not study.done(steps["search_tas_search1"])
    assert tas.Arch.load(study.networks["tas"].arch).to_dict() == arch.to_dict()
    assert study.restore_found() == []  # present now: left as it is
    # a search that wrote its trained weights, with a fine-tuning from them still to run: its
    # found.json alone would name weights this machine lacks, so the search runs again
    weights = {**arch.to_dict(), "search": {"init_ckpt": "elsewhere/found.init.ckpt"}}
    committed["found"] = {"tas_search1": arch.to_dict(), "tas_search2": weights}
    study.results_path().write_text(json.dumps(committed))
    study._committed = None
    assert study.restore_found() == ["search_tas_search1"]
    assert not study.done(steps["search_tas_search2"])
    # a pruning's found.json comes back for its KD and Scratch rows once its fine-tuning (from
    # its teacher's kept filters, which another teacher does not have) is committed
    committed["found"] = {"thinet": arch.to_dict()}
    study.results_path().write_text(json.dumps(committed))
    study._committed = None
    assert study.restore_found() == []
    committed["runs"].append({**row, "step": "thinet-fine_tune-s0"})
    study.results_path().write_text(json.dumps(committed))
    study._committed = None
    assert study.restore_found() == ["prune_thinet"]
    assert study.done(steps["prune_thinet"])
    pending = {s.name for s in study.pending()}
    assert "thinet-scratch_e-s0" in pending and "teacher" in pending  # KD still needs it
    committed["runs"] = [row, gone]
    study.results_path().write_text(json.dumps(committed))
    study._committed = None

    finished = study.path("random0-kd-s0", "results.json")
    finished.parent.mkdir(parents=True)
    finished.write_text(json.dumps({**row, "test_acc": 0.7, "precision": "bf16-mixed"}))
    retrained = study.path("teacher", "results.json")
    retrained.parent.mkdir(parents=True)
    retrained.write_text(json.dumps({**teacher, "test_acc": 0.89}))  # no precision: fp32
    out = study.collect()
    assert [r["step"] for r in out["runs"]] == ["uniform-kd-s0", "random0-kd-s0"]
    assert out["runs"][0]["test_acc"] == 0.8
    assert out["runs"][1]["test_acc"] == 0.7 and out["runs"][1]["precision"] == "bf16-mixed"
    # a row made here names this machine's device (a results.json without one was made here)
    assert out["runs"][1]["device"] == tas.latency.device_name(torch.device("cpu"))
    assert "device" not in out["runs"][0]  # committed before rows recorded it
    assert out["teachers"]["teacher"]["test_acc"] == 0.89
    assert out["teachers"]["teacher"]["precision"] == "32-true"
    assert out["found"]["tas"] == out["found"]["thinet"] == arch.to_dict()
    assert json.loads(study.results_path().read_text()) == json.loads(json.dumps(out))
    # a weight-masked network's row made here carries the MACs of its mask's kept weights
    from tas.baselines.sparsity import magnitude_masks, masked_macs

    full = tas.Arch.full(study.space)
    model = tas.build_model(full)
    masks = magnitude_masks(model, 0.9, "global")
    found = Path(study.networks["mag90"].arch)
    _save_masked_network(found, full, masks)
    finished = study.path("mag90-scratch_e-s1", "results.json")
    finished.parent.mkdir(parents=True)
    finished.write_text(json.dumps({**row, "macs": full.macs, "macs_reduction": 0.0}))
    masked = next(r for r in study.collect()["runs"] if r["step"] == "mag90-scratch_e-s1")
    assert masked["kept_macs"] == masked_macs(model, masks) < 0.5 * full.macs
    assert masked["sparsity"] == 0.9 and "kept_macs" not in out["runs"][1]
    found.with_name("found.masks.pt").unlink()  # the report still collects, the count left out
    masked = next(r for r in study.collect()["runs"] if r["step"] == "mag90-scratch_e-s1")
    assert "kept_macs" not in masked and masked["test_acc"] == row["test_acc"]


def test_collected_found_records_name_no_machine_directory():
    from studies.run import _without_root

    inside = {"search": {"warm_start": {"teacher": str(ROOT / "studies/runs/x/last.ckpt")}}}
    assert _without_root(inside)["search"]["warm_start"]["teacher"] == "studies/runs/x/last.ckpt"
    outside = {"search": {"warm_start": {"teacher": "/elsewhere/last.ckpt"}}}
    assert _without_root(outside)["search"]["warm_start"]["teacher"] == "/elsewhere/last.ckpt"
    assert _without_root({"search": {"warm_start": None}}) == {"search": {"warm_start": None}}
    pruned = {"widths": {"stem": 16}, "search": {"pruned_from": str(ROOT / "studies/runs/t.ckpt"),
              "keep": {"stem": [0, 2]}, "init_ckpt": "found.init.ckpt"}}  # fmt: skip
    assert _without_root(pruned) == {
        "widths": {"stem": 16},
        "search": {"pruned_from": "studies/runs/t.ckpt", "keep": {"stem": [0, 2]},
                   "init_ckpt": "found.init.ckpt"},
    }  # fmt: skip


def _start_finished_processes(monkeypatch, study: Study, started: list) -> None:
    """Make the study's steps start as processes that have already exited cleanly, each
    command appended to ``started``; nothing is collected."""

    class Finished:
        returncode = 0

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def poll(self):
            return 0

    monkeypatch.setattr("studies.run.subprocess.Popen", Finished)
    monkeypatch.setattr(study, "collect", lambda: {})
    monkeypatch.setattr("studies.run.time.sleep", lambda s: None)


@pytest.mark.parametrize(
    "flags, native",
    [
        (["avx2", "avx512f"], False),
        (["avx2", "avx512_bf16"], True),
        (["amx_bf16"], True),
        ([], False),
    ],
)
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(
    flags, native, monkeypatch, tmp_path
):
    """--precision auto: bf16-mixed where the CPU has AVX512-BF16 or AMX (there it is faster),
    fp32 elsewhere (on AVX2 alone bf16 is emulated and far slower); the trainings get it."""
    from tas import latency

    monkeypatch.setattr(latency, "cpu_flags", lambda: flags)
    assert latency.native_bf16() is native
    study = Study(str(CONFIG), runs_root=tmp_path, results_root=tmp_path)
    started = []

    _start_finished_processes(monkeypatch, study, started)
    assert study.run(jobs=1, only={"teacher"}) == 0
    assert _arg(started[0], "--trainer.precision") == ("bf16-mixed" if native else "32-true")


def test_list_into_a_closed_pipe_ends_quietly():
    """`python -m studies.run --list | head -1`: the reader leaves before the list is written;
    the runner stops listing without a traceback and exits 0."""
    import subprocess
    import sys

    from tests.cli_helpers import script_env

    cmd = [sys.executable, "-m", "studies.run", "--config", str(CONFIG), "--list"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=script_env()
    )
    proc.stdout.close()  # before the child has written anything: its first line meets EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()


def test_a_committed_training_that_later_steps_read_runs_again_until_they_are_done(tmp_path):
    """The lottery tickets' dense run (full's Scratch-E seed-0 final) is a row to report and an
    input: its committed row alone does not make it done on a machine without its checkpoints
    while the first round's pruning still has to read them; once that round is here, it is."""
    study = Study(str(FULL_CONFIG), runs_root=tmp_path / "runs", results_root=tmp_path)
    steps = {s.name: s for s in study.steps}
    dense, last = steps["full-scratch_e-s0"], steps["imp95-rewind-s0"]
    rows = [{**s.info, "step": s.name, "test_acc": 0.8} for s in (dense, last)]
    study.results_path().write_text(json.dumps({"runs": rows}))
    assert not study.done(dense) and not study.done(steps["prune_imp50"])
    assert study.done(last)  # nothing reads the last round
    found = study.path("prune_imp50", "found.json")
    found.parent.mkdir(parents=True)
    found.write_text("{}")
    assert study.done(steps["prune_imp50"])
    assert not study.done(dense)  # every round's ticket restarts from its early weights
    for r in (50, 75, 90):
        assert not study.done(dense)
        ticket = study.path(f"imp{r}-rewind-s0", "results.json")
        ticket.parent.mkdir(parents=True)
        ticket.write_text("{}")
    assert study.done(dense)  # the last round's row is committed


def test_only_what_a_training_still_to_run_needs_is_made_again(tmp_path, monkeypatch):
    """A new machine where every row but one is committed makes only that training and what
    it needs (the teachers, its pruning), not the searches and prunings of finished rows."""
    study = Study(str(FULL_CONFIG), runs_root=tmp_path / "runs", results_root=tmp_path)
    left = "thinet-scratch_e-s0"
    rows = [{**s.info, "step": s.name} for s in study.steps if s.info and s.name != left]
    study.results_path().write_text(json.dumps({"runs": rows}))
    pending = [s.name for s in study.pending()]
    assert pending == ["teacher_20ep", "teacher_40ep", "teacher_60ep", "teacher",
                       "prune_thinet", left]  # fmt: skip
    assert all(study.done(s) for s in study.steps if s.info and s.name != left)
    started = []
    _start_finished_processes(monkeypatch, study, started)
    assert "search_tas_scratch" not in pending  # idle: its row is committed
    study.run(jobs=1, only={"search_tas_scratch"})  # named: it runs all the same
    assert [Path(cmd[1]).name for cmd in started] == ["train_search.py"]
    assert not any(study.done(study.networks[n].makers[0]) for n in ("tas", "l1_norm", "imp95"))
