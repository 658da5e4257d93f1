"""Per-layer sensitivity analysis: the curves, the ratios read off them, and the commands."""

from __future__ import annotations

import json

import pytest

import tas
from tas.baselines import prunable_convs
from tas.baselines.sensitivity import (
    l1_keep,
    layer_sensitivity,
    prune_by_sensitivity,
    ratios_for_drop,
)
from tas.compact import count_params
from tests.cli_helpers import run_script
from tests.test_cli_errors import assert_user_error


def test_curves_cover_every_prunable_conv_and_every_ratio():
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(8)))
    full = count_params(model)
    # a score that is the share of parameters left: exact, monotone, no data needed
    sens = layer_sensitivity(model, lambda net: count_params(net) / full, ratios=(0.25, 0.5))
    assert sens["baseline"] == 1.0
    assert set(sens["curves"]) == set(prunable_convs(model.space))
    for name, curve in sens["curves"].items():
        assert len(curve) == 2 and 1.0 > curve[0] > curve[1]
        arch, keep = l1_keep(model, {name: 0.5})
        assert sens["macs"][name][1] == arch.macs and len(keep[name]) == arch.widths[name]


def test_ratios_for_a_drop_and_for_a_macs_target():
    sens = {
        "baseline": 0.9,
        "ratios": [0.1, 0.5, 0.9],
        "curves": {
            "stage1.block0.conv_a": [0.9, 0.85, 0.5],
            "stage1.block1.conv_a": [0.8, 0.7, 0.6],
        },
    }
    assert ratios_for_drop(sens, 0.05) == {"stage1.block0.conv_a": 0.5, "stage1.block1.conv_a": 0.0}
    assert ratios_for_drop(sens, 0.35) == {"stage1.block0.conv_a": 0.5, "stage1.block1.conv_a": 0.9}
    model = tas.build_model(tas.Arch.full(tas.SearchSpace.cifar_resnet(14)))
    full = tas.Arch.full(model.space).macs
    arch, keep = prune_by_sensitivity(model, sens, 0.95)
    assert arch.macs <= 0.95 * full and keep["stage1.block1.conv_a"].tolist() == list(range(16))
    # the smallest tolerance that fits: 0.05 prunes the tolerant conv only, by half
    assert arch.search["max_drop"] == pytest.approx(0.05)
    assert arch.widths["stage1.block0.conv_a"] == 8 and arch.widths["stage1.block1.conv_a"] == 16
    arch, _ = prune_by_sensitivity(model, sens, 0.7)  # both at 0.9 at last
    assert arch.macs <= 0.7 * full and arch.search["max_drop"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="analyse with higher ratios"):
        prune_by_sensitivity(model, sens, 0.2)


@pytest.mark.slow  # 27 scored networks; the curves and ratios are tested above without data
def test_sensitivity_and_prune_from_the_command_line(tmp_path, teacher):
    out = tmp_path / "sens"
    result = run_script(
        "sensitivity.py", f"--teacher={teacher}", f"--out={out}", "--data_name=synthetic",
        "--images=200", "--ratios", "0.3", "0.6", "0.9",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sens = json.loads((out / "sensitivity.json").read_text())
    assert sens["images"] == 200 and len(sens["curves"]) == 9 and (out / "sensitivity.png").exists()
    found = tmp_path / "found.json"
    result = run_script(
        "prune.py", "--method=sensitivity", f"--sensitivity={out / 'sensitivity.json'}",
        f"--teacher={teacher}", "--ratio=0.8", f"--out={found}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    arch = tas.Arch.load(found)
    assert arch.macs <= 0.8 * tas.Arch.full(arch.space).macs and arch.search["keep"]
    result = run_script(
        "prune.py", "--method=sensitivity", f"--sensitivity={found}", f"--teacher={teacher}",
        "--ratio=0.8", f"--out={tmp_path / 'x.json'}",
    )  # fmt: skip
    assert_user_error(result, "not a sensitivity.json")
    result = run_script("sensitivity.py", f"--teacher={found}", f"--out={out}")
    assert_user_error(result, "cannot be read")
