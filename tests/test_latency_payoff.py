"""studies.latency_payoff: the payoff arithmetic, the uniform bisection, step skipping and
resume, bad input; the timings are faked (a latency that is a function of MACs) except in the
slow end-to-end run."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

import studies.latency_payoff as lp
import tas
from tas.baselines import random_within
from tas.latency import LatencyTable, timed_convs
from tests.cli_helpers import ROOT, script_env

SPACE = tas.SearchSpace.cifar_resnet(20)
FULL = tas.Arch.full(SPACE)


def fake_ms(arch: tas.Arch) -> float:
    """A monotone stand-in for measured latency: 0.5 ms plus 0.1 ms per million MACs."""
    return 0.5 + arch.macs / 1e7


def write_table(path, **meta) -> LatencyTable:
    convs = {
        c.name: {(i, o): 1e-4 * i * o for i in c.inputs for o in c.outputs}
        for c in timed_convs(SPACE)
    }
    meta = {"backend": "eager", "batch": 1, "threads": 1, **meta}
    table = LatencyTable(SPACE, meta, convs, fixed_ms=0.2)
    table.save(path)
    return table


@pytest.fixture
def fake_timing(monkeypatch):
    """Payoff.measure from fake_ms (calls counted), and no thread pinning."""
    calls = []

    def measure(self, archs, rounds):
        calls.append(sorted(archs))
        return {name: fake_ms(arch) for name, arch in archs.items()}

    monkeypatch.setattr(lp.Payoff, "measure", measure)
    monkeypatch.setattr(lp, "setup", lambda threads: f"test machine, {threads} threads")
    return calls


def in_space(ratio: float, seed: int = 0) -> tas.Arch:
    """A network of the space's candidate widths (the table has entries for it)."""
    return random_within(SPACE, ratio, random.Random(seed), 0.02)


@pytest.fixture
def found(tmp_path):
    path = tmp_path / "found.json"
    in_space(0.5).save(path)
    return path


def main(*args: str) -> None:
    lp.main([str(a) for a in args])


def test_payoff_arithmetic():
    # full 10 ms, network 5 ms: 2x; the target was 4 ms against a full 10 ms: 2.5x asked
    assert lp.payoff(10.0, 5.0, 10.0, 4.0) == pytest.approx(
        {"speedup": 2.0, "target_speedup": 2.5, "payoff": 0.8}
    )
    # each speedup is a ratio within one run: a machine 10% slower in the later run alike
    assert lp.payoff(11.0, 4.4, 10.0, 4.0)["payoff"] == pytest.approx(1.0)


@pytest.mark.parametrize("target_ratio", [0.3, 0.5, 0.62])
def test_uniform_bisection_meets_a_monotone_latency(target_ratio):
    target_ms = fake_ms(tas.Arch.uniform(SPACE, target_ratio)) * 1.003  # between two widths
    arch, probes = lp.bisect_uniform(SPACE, lambda a: fake_ms(a) / target_ms)
    assert len(probes) <= 12
    assert abs(fake_ms(arch) / target_ms - 1) <= 0.01
    assert abs(probes[-1]["relative"] - 1) <= 0.01  # it stopped at the tolerance
    # no uniform network is closer: the neighbours one width step either side are farther
    best = abs(fake_ms(arch) - target_ms)
    for ratio in (r / 200 for r in range(10, 200)):
        assert abs(fake_ms(tas.Arch.uniform(SPACE, ratio)) - target_ms) >= best - 1e-12


def test_uniform_bisection_stops_on_the_interval_when_no_width_fits():
    # every probe 3% off: the bisection ends on the interval, keeping the closest probe
    arch, probes = lp.bisect_uniform(SPACE, lambda a: 1.03 if a.macs > 0.4 * FULL.macs else 0.97)
    assert all(abs(p["relative"] - 1) > 0.01 for p in probes)
    assert len(probes) == 8  # [0.05, 1] halved 8 times: under 0.005 wide
    assert abs(probes[-1]["ratio"] - probes[-2]["ratio"]) < 0.005
    assert abs(probes[-1]["macs"] - 0.4 * FULL.macs) < 0.05 * FULL.macs


def test_steps_are_skipped_when_done_and_the_search_resumes(tmp_path, found, fake_timing, capsys):
    out = tmp_path / "payoff"
    out.mkdir()
    table = write_table(out / "table.json")
    common = ("--out", out, "--found", found, "--teacher", tmp_path / "unused.ckpt")
    main(*common, "--only", "target")
    target = json.loads((out / "target.json").read_text())
    assert target["target_ms"] == fake_ms(tas.Arch.load(found))
    assert target["settings"] == {"depth": 20, "backend": "eager", "batch": 1, "threads": 1}
    assert "load_avg" in target and fake_timing == [["full", "macs"]]
    main(*common, "--only", "target")  # done: not measured again
    assert fake_timing == [["full", "macs"]] and "target: done" in capsys.readouterr().out

    # the search: its command, resumed once it has a checkpoint
    study = lp.Payoff(lp.parser().parse_args([str(a) for a in common]))
    cmd = study.search_command()
    assert cmd[cmd.index("--model.target_ms") + 1] == repr(target["target_ms"])
    assert cmd[cmd.index("--model.budget") + 1] == "latency" and "--resume" not in cmd
    (out / "search" / "checkpoints").mkdir(parents=True)
    (out / "search" / "checkpoints" / "last.ckpt").touch()
    assert study.search_command()[-1] == "--resume"
    searched = in_space(0.45, seed=1)
    tolerance = 0.05 * table.predict_ms(FULL)
    searched.search["budget"] = {"target_ms": target["target_ms"], "tolerance_ms": tolerance}
    searched.save(out / "search" / "found.json")
    main(*common, "--only", "search")  # done: train_search.py is not started
    assert "search: done" in capsys.readouterr().out

    # NetAdapt: prune.py for the same target on the same table
    cmd = study.netadapt_command()
    assert cmd[cmd.index("--method") + 1] == "netadapt"
    assert cmd[cmd.index("--target_ms") + 1] == repr(target["target_ms"])
    assert cmd[cmd.index("--latency_table") + 1] == str(out / "table.json")
    netadapt = in_space(0.4, seed=2)
    netadapt.save(out / "netadapt" / "found.json")
    main(*common, "--only", "netadapt")  # done: prune.py is not started
    assert "netadapt: done" in capsys.readouterr().out

    main(*common, "--only", "uniform")
    uniform = json.loads((out / "uniform.json").read_text())
    assert abs(uniform["probes"][-1]["relative"] - 1) <= 0.01
    main(*common, "--only", "latency")
    lat = json.loads((out / "latency.json").read_text())
    nets = lat["networks"]
    assert lat["band_ms"] == pytest.approx([target["target_ms"] - tolerance, target["target_ms"]])
    assert nets["latency"]["predicted_ms"] == pytest.approx(table.predict_ms(searched))
    assert nets["uniform"]["predicted_ms"] is None  # floor(C x m): widths the table has not
    assert nets["latency"]["payoff"] == pytest.approx(
        (fake_ms(FULL) / fake_ms(searched)) / (target["full_ms"] / target["target_ms"])
    )
    assert nets["macs"]["payoff"] == pytest.approx(1.0) and nets["macs"]["in_band"]
    assert nets["netadapt"]["measured_ms"] == fake_ms(netadapt)
    assert nets["latency"]["in_band"] == (fake_ms(searched) >= lat["band_ms"][0])
    calls = len(fake_timing)
    main(*common, "--only", "latency")
    main(*common, "--only", "uniform")
    assert len(fake_timing) == calls  # nothing measured again
    text = (out / "report.md").read_text()
    assert "| latency-found | " in text and "(a) latency-found payoff" in text
    assert "| NetAdapt, same target | " in text

    # a side-by-side run without one of the networks (made before NetAdapt was a step) is redone
    del lat["networks"]["netadapt"]
    (out / "latency.json").write_text(json.dumps(lat))
    main(*common, "--only", "latency")
    assert len(fake_timing) == calls + 1
    assert "netadapt" in json.loads((out / "latency.json").read_text())["networks"]


def test_netadapt_runs_only_when_its_narrowest_network_can_meet_the_target(
    tmp_path, found, fake_timing, monkeypatch, capsys
):
    out = tmp_path / "payoff"
    out.mkdir()
    table = write_table(out / "table.json")
    started = []
    monkeypatch.setattr(lp, "run_command", lambda cmd, *a: started.append(cmd))
    monkeypatch.setattr(lp.Payoff, "teacher", None)  # prune.py, not this process, loads it
    common = ("--out", out, "--found", found, "--teacher", tmp_path / "unused.ckpt")
    main(*common, "--only", "target")
    target = json.loads((out / "target.json").read_text())
    narrow = lp.narrowest(SPACE, lp.LatencyBudget(table, 1e9, tolerance=1e9))
    assert narrow.blocks == FULL.blocks  # NetAdapt removes filters, never blocks

    # a target under the narrowest network's latency: recorded, prune.py not started
    target["target_ms"] = 0.9 * table.predict_ms(narrow)
    (out / "target.json").write_text(json.dumps(target))
    main(*common, "--only", "netadapt")
    record = json.loads((out / "netadapt" / "unreachable.json").read_text())
    assert not started and record["floor_ms"] == pytest.approx(table.predict_ms(narrow))
    assert "cannot reach the target" in capsys.readouterr().out
    study = lp.Payoff(lp.parser().parse_args([str(a) for a in common]))
    assert study.done("netadapt") and "netadapt" not in study.compared()
    assert study.trained() == ["macs", "latency", "uniform"]

    # a target it can meet: prune.py is started for it
    (out / "netadapt" / "unreachable.json").unlink()
    target["target_ms"] = 1.1 * table.predict_ms(narrow)
    (out / "target.json").write_text(json.dumps(target))
    main(*common, "--only", "netadapt")
    assert len(started) == 1 and started[0][started[0].index("--method") + 1] == "netadapt"


WARM = ROOT / "configs" / "cpu" / "search_resnet20_cifar10_warm.yaml"
BAD = {  # case: (arguments, what the error line says, whether OUT holds a ResNet-20 table)
    "missing found": (["--found", "{tmp}/none.json"], "none.json: no such file", True),
    "found of another space": (["--found", "{r32}"], "cifar_resnet-32", True),
    "missing teacher": (
        ["--found", "{found}", "--teacher", "{tmp}/none.ckpt", "--only", "train"],
        "none.ckpt: no such file",
        True,
    ),
    "table of another batch": (
        ["--found", "{found}", "--only", "table", "--batch", "256"],
        "profiled with batch 1 (not 256)",
        True,
    ),
    "table of other threads": (
        ["--found", "{found}", "--only", "target", "--threads", "2"],
        "profiled with threads 1 (not 2)",
        True,
    ),
    "step before its inputs": (["--found", "{found}", "--only", "latency"], "needs step", False),
    "search config of another depth": (
        ["--teacher", "{found}", "--only", "search", "--depth", "56", "--search_config", str(WARM)],
        "searches depth 20, not 56",
        False,
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(tmp_path, found, fake_timing, capsys, case):
    args, needle, has_table = BAD[case]
    r32 = tmp_path / "r32.json"
    tas.Arch.uniform(tas.SearchSpace.cifar_resnet(32), 0.5).save(r32)
    out = tmp_path / "o"
    out.mkdir()
    if has_table:
        write_table(out / "table.json")
    args = [a.format(tmp=tmp_path, r32=r32, found=found) for a in args]
    with pytest.raises(SystemExit) as exit_:
        main("--out", out, *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("studies.latency_payoff: error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "target.json").exists()


def test_a_finished_step_of_other_settings_is_refused(tmp_path, found, fake_timing, capsys):
    out = tmp_path / "o"
    out.mkdir()
    write_table(out / "table.json", threads=2)
    main("--out", out, "--found", found, "--threads", "2", "--only", "target")
    (out / "table.json").unlink()
    with pytest.raises(SystemExit) as exit_:
        main("--out", out, "--found", found, "--only", "target")  # threads 1 now
    assert exit_.value.code == 2
    assert "target.json was made with" in capsys.readouterr().err


@pytest.mark.slow  # a table, a 1-epoch search and three 1-epoch fine-tunes on 500 images
def test_end_to_end_on_tiny_settings(tmp_path, cifar_archive, teacher):
    found = tmp_path / "found.json"
    tas.Arch.uniform(SPACE, 0.5).save(found)
    out = tmp_path / "payoff"
    cmd = [sys.executable, "-m", "studies.latency_payoff", "--out", str(out), "--teacher", teacher,
           "--found", str(found), "--rounds", "2", "--probe_rounds", "1", "--warmup", "1",
           "--data.root", str(cifar_archive), "--data.train_subset", "500", "--epochs", "1",
           "--search_args=--trainer.max_epochs=1 --data.val_subset=null "
           "--trainer.enable_progress_bar=false",
           "--netadapt_args=--short_steps 1 --images 64 --batch 32"]  # fmt: skip
    env = script_env({"OMP_NUM_THREADS": "1"})
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("table", "target", "uniform", "latency", "train_macs_s0", "train_uniform_s0",
                 "train_latency_s0"):  # fmt: skip
        assert (out / f"{name}.json").exists(), name
    assert (out / "search" / "found.json").exists()
    # NetAdapt's row, or the record that its narrowest network is slower than the target
    reached = (out / "netadapt" / "found.json").exists()
    assert reached == (out / "train_netadapt_s0.json").exists()
    assert reached != (out / "netadapt" / "unreachable.json").exists()
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == 5 + reached and "eager, batch 1, 1 threads" in report
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done") == len(lp.STEPS) and "arch-half\n" not in again.stdout
