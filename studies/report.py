"""The study's report: a markdown table per backbone and a plot of accuracy against MACs, from
the results file that `studies.run` collects (studies/results/NAME.json); weight-pruned
networks (their rows carry a ``sparsity``: they keep the full network's MACs) get their own
table and a plot of accuracy against sparsity instead.

    python -m studies.run --config configs/study/resnet20_cifar10_cpu.yaml --report
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from studies.run import RESULT_DEFAULTS  # noqa: E402
from tas.arch import write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "full": "Full network (finals recipe)",
    "tas": "TAS (search)",
    "tas_search1": "TAS (second search)",
    "tas_search2": "TAS (third search)",
    "tas_scratch": "TAS (search from scratch)",
    "uniform": "Uniform width",
    "random": "Random (in MACs band)",
    "l1_norm": "L1-norm filters",
    "slimming": "Network Slimming",
    "sensitivity": "L1 sensitivity curves",
    "thinet": "ThiNet",
    "lasso": "LASSO channels",
    "sss": "Sparse Structure Selection",
    "amc": "AMC",
    "netadapt": "NetAdapt (MACs)",
    "magnitude": "Magnitude (weights)",
    "imp": "IMP (lottery ticket)",
}
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
SCHEMES = {
    "kd": "KD",
    "rkd": "KD + RKD",
    "scratch_e": "Scratch-E",
    "scratch_b": "Scratch-B",
    "fine_tune": "Fine-tune",
    "rewind": "Rewind",
}
MARKERS = {
    "kd": "o",
    "rkd": "v",
    "scratch_e": "s",
    "scratch_b": "^",
    "fine_tune": "D",
    "rewind": "P",
}
# the sparsity plot's curves: (source of the mask, scheme) -> label
CURVES = {
    ("magnitude", "fine_tune"): "Magnitude, fine-tuned",
    ("magnitude", "scratch_e"): "Magnitude mask, Scratch-E (same mask)",
    ("magnitude", "scratch_b"): "Magnitude mask, Scratch-B (same mask)",
    ("imp", "rewind"): "IMP, rewound (lottery ticket)",
    ("imp", "scratch_e"): "IMP mask, random re-init (Scratch-E)",
    ("imp", "scratch_b"): "IMP mask, random re-init (Scratch-B)",
}
# the sparsity table's training column ({rewound}: what the rows' tickets restarted from)
TRAINING = {
    ("magnitude", "fine_tune"): "Fine-tuned from the teacher",
    ("magnitude", "scratch_e"): "Scratch-E, same mask",
    ("magnitude", "scratch_b"): "Scratch-B, same mask",
    ("imp", "rewind"): "Rewound to the dense run's {rewound} (ticket)",
    ("imp", "scratch_e"): "Random re-init (Scratch-E), same mask",
    ("imp", "scratch_b"): "Random re-init (Scratch-B), same mask",
}
SOURCES = {"magnitude": "Magnitude (one shot, teacher)", "imp": "IMP (iterative, dense run)"}


def structured(runs: list[dict]) -> list[dict]:
    """The runs compared by MACs: every run but the weight-pruned ones (which carry a
    ``sparsity`` and keep the full network's MACs; see `sparsity_table`)."""
    return [r for r in runs if "sparsity" not in r]


def sparse(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "sparsity" in r]


def groups(runs: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """Runs grouped by (method, scheme), in the table's order."""
    out = []
    extra = sorted({r["method"] for r in runs} - set(METHODS))  # families without a label
    for method in [*METHODS, *extra]:
        for scheme in SCHEMES:
            rows = [r for r in runs if r["method"] == method and r["scheme"] == scheme]
            if rows:
                out.append((method, scheme, rows))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def precisions(rows: list[dict]) -> str:
    """The precisions the rows trained in (a study's machine setting: bf16-mixed on a CPU
    with native bf16, fp32 elsewhere); a record from before the key existed trained in fp32."""
    default = RESULT_DEFAULTS["precision"]
    return ", ".join(sorted({r.get("precision", default) for r in rows}))


def table(data: dict) -> str:
    """One markdown table: a row per (method, scheme), the full networks first; the
    weight-pruned runs are left to `sparsity_table`."""
    head = (
        "| Method | Scheme | MACs | MACs cut | Params | Top-1 % (mean ± std) | n | Epochs "
        "| Wall min | Precision |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    names = {
        "teacher": "Full network (teacher)",
        "teacher_slimming": "Full network, BN-L1 (slimming teacher)",
    }
    for key, label in names.items():
        t = data["teachers"].get(key)
        if t:
            lines.append(
                f"| {label} | CE | {t['macs'] / 1e6:.2f}M | 0.0% | {t['params'] / 1e3:.1f}K | "
                f"{100 * t['test_acc']:.2f} | 1 | {t['epochs']} | {t['wall_time_s'] / 60:.1f} | "
                f"{precisions([t])} |"
            )
    for method, scheme, rows in groups(structured(data["runs"])):
        acc, std = mean_std([100 * r["test_acc"] for r in rows])
        top1 = f"{acc:.2f} ± {std:.2f}" if len(rows) > 1 else f"{acc:.2f}"
        macs = statistics.fmean(r["macs"] for r in rows)
        params = statistics.fmean(r["params"] for r in rows)
        cut = statistics.fmean(100 * r["macs_reduction"] for r in rows)
        epochs = sorted({r["epochs"] for r in rows})
        wall = statistics.fmean(r["wall_time_s"] for r in rows) / 60
        same = len({r["macs"] for r in rows}) == 1
        spread = f"{macs / 1e6:.2f}M" if same else f"{macs / 1e6:.2f}M (mean)"
        lines.append(
            f"| {METHODS.get(method, method)} | {SCHEMES[scheme]} | {spread} | {cut:.1f}% | "
            f"{params / 1e3:.1f}K | {top1} | {len(rows)} | "
            f"{'/'.join(map(str, epochs))} | {wall:.1f} | {precisions(rows)} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    """Left: accuracy against MACs with the full network; right: the pruned networks by scheme
    (one column per scheme, methods side by side, every run a point)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = structured(data["runs"])
    present = list(dict.fromkeys(m for m, _, _ in groups(runs)))
    colors = {m: cycle[i % len(cycle)] for i, m in enumerate(present)}
    _by_scheme(data, ax2, colors)
    for method, scheme, rows in groups(runs):
        ax.scatter(
            [r["macs"] / 1e6 for r in rows],
            [100 * r["test_acc"] for r in rows],
            marker=MARKERS[scheme],
            color=colors[method],
            label=f"{METHODS.get(method, method)}, {SCHEMES[scheme]}",
            s=40,
            alpha=0.85,
        )
    t = data["teachers"].get("teacher")
    if t:
        ax.axhline(100 * t["test_acc"], color="grey", ls="--", lw=1)
        ax.scatter([t["macs"] / 1e6], [100 * t["test_acc"]], color="black", marker="*", s=120,
                   label="Full network")  # fmt: skip
    target = data["target_macs"] / 1e6
    ax.axvspan(0.98 * target, 1.02 * target, color="grey", alpha=0.12, lw=0)
    ax.set_xlabel("MACs (millions, conv + linear)")
    dataset = DATASETS.get(data.get("dataset", "cifar10"), data.get("dataset"))
    ax.set_ylabel(f"{dataset} test top-1 (%)")
    ax.set_title(
        f"{data['study']}: accuracy vs MACs (target {target:.1f}M, shaded: ±2%)", fontsize=10
    )
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _by_scheme(data: dict, ax: plt.Axes, colors: dict[str, str]) -> None:
    runs = structured(data["runs"])
    schemes = [k for k in SCHEMES if any(r["scheme"] == k for r in runs)]
    present = list(colors)
    width = 0.8 / max(1, len(present))
    for method, scheme, rows in groups(runs):
        x = schemes.index(scheme) + (present.index(method) - (len(present) - 1) / 2) * width
        ax.scatter([x] * len(rows), [100 * r["test_acc"] for r in rows], color=colors[method],
                   marker=MARKERS[scheme], s=40, alpha=0.85)  # fmt: skip
    t = data["teachers"].get("teacher")
    if t:
        ax.axhline(100 * t["test_acc"], color="grey", ls="--", lw=1, label="Full network")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xticks(range(len(schemes)), [SCHEMES[k] for k in schemes])
    ax.set_title("Pruned networks by training scheme (colours as left)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def curves(runs: list[dict]) -> list[tuple[str, str, list[tuple[float, list[dict]]]]]:
    """The weight-pruned runs by (source of the mask, scheme), each a list of (sparsity, runs)
    in increasing sparsity; the sources and schemes in CURVES' order, then any others."""
    rows = sparse(runs)
    keys = list(
        dict.fromkeys([*CURVES, *((r.get("source", r["method"]), r["scheme"]) for r in rows)])
    )
    out = []
    for source, scheme in keys:
        mine = [r for r in rows if (r.get("source", r["method"]), r["scheme"]) == (source, scheme)]
        if mine:
            levels = sorted({r["sparsity"] for r in mine})
            out.append(
                (source, scheme, [(s, [r for r in mine if r["sparsity"] == s]) for s in levels])
            )
    return out


def _curve_label(source: str, scheme: str) -> str:
    return CURVES.get((source, scheme), f"{METHODS.get(source, source)}, {SCHEMES[scheme]}")


def _dense_runs(data: dict) -> list[dict]:
    """The full network's runs under the finals' recipe (the tickets' dense run among them)."""
    return [
        r for r in structured(data["runs"]) if r["method"] == "full" and r["scheme"] == "scratch_e"
    ]


def _rewound_to(rows: list[dict]) -> str:
    """The weights the rows' tickets restarted from (their imp entry's ``rewind_epoch``)."""
    epochs = {r.get("rewind_epoch") for r in rows}
    if len(epochs) > 1 or None in epochs:  # mixed, or rows kept before the key existed
        return "early weights"
    (epoch,) = epochs
    return "initial weights" if epoch == "init" else f"weights after epoch {epoch + 1}"


def sparsity_table(data: dict) -> str:
    """The weight-pruned networks: a row per (mask, training, sparsity), under the full
    network's rows; empty when the study has none."""
    found = curves(data["runs"])
    if not found:
        return ""
    lines = [
        "| Mask | Training | Sparsity | Kept-weight MACs (M) | Top-1 % (mean ± std) | n | Epochs "
        "| Wall min |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(mask: str, training: str, sparsity: float, rows: list[dict]) -> None:
        acc, std = mean_std([100 * r["test_acc"] for r in rows])
        top1 = f"{acc:.2f} ± {std:.2f}" if len(rows) > 1 else f"{acc:.2f}"
        epochs = "/".join(map(str, sorted({r["epochs"] for r in rows})))
        wall = statistics.fmean(r["wall_time_s"] for r in rows) / 60
        # a dense row's MACs are all kept; a masked row collected before the count existed: "-"
        kept = {r.get("kept_macs", r["macs"] if sparsity == 0 else None) for r in rows}
        macs = "-" if None in kept else "/".join(f"{m / 1e6:.2f}" for m in sorted(kept))
        lines.append(f"| {mask} | {training} | {100 * sparsity:.1f}% | {macs} | {top1} | "
                     f"{len(rows)} | {epochs} | {wall:.1f} |")  # fmt: skip

    t = data["teachers"].get("teacher")
    if t:
        row("Full network (teacher)", "CE", 0.0, [t])
    if _dense_runs(data):
        row("Full network (finals recipe)", SCHEMES["scratch_e"], 0.0, _dense_runs(data))
    for source, scheme, points in found:
        mask = SOURCES.get(source, METHODS.get(source, source))
        for sparsity, rows in points:
            training = TRAINING.get((source, scheme), SCHEMES[scheme])
            row(mask, training.format(rewound=_rewound_to(rows)), sparsity, rows)
    return "\n".join(lines) + "\n"


def sparsity_plot(data: dict, path: Path) -> None:
    """Accuracy against the fraction of conv and linear weights zeroed: one curve per (mask,
    training), every seed's mean with its spread, the full network's accuracies as lines (the
    figure of Rethinking the Value of Network Pruning's unstructured section)."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    styles = {"fine_tune": "-", "rewind": "-", "scratch_e": "--", "scratch_b": "-."}
    colors = {"magnitude": "tab:blue", "imp": "tab:red"}
    ticks: set[float] = set()
    for source, scheme, points in curves(data["runs"]):
        x = [100 * s for s, _ in points]
        stats = [mean_std([100 * r["test_acc"] for r in rows]) for _, rows in points]
        ticks.update(x)
        ax.errorbar(
            x, [m for m, _ in stats], yerr=[d for _, d in stats],
            marker=MARKERS[scheme], ls=styles.get(scheme, ":"), color=colors.get(source),
            capsize=3, label=_curve_label(source, scheme),
        )  # fmt: skip
    dense = _dense_runs(data)
    if dense:
        acc = statistics.fmean(100 * r["test_acc"] for r in dense)
        ax.axhline(acc, color="black", ls="--", lw=1, label="Full network, finals recipe")
    t = data["teachers"].get("teacher")
    if t:
        ax.axhline(100 * t["test_acc"], color="grey", ls=":", lw=1,
                   label="Full network, teacher (magnitude's source)")  # fmt: skip
    ax.set_xticks(sorted(ticks))
    ax.set_xlabel("Sparsity (% of conv and linear weights zeroed)")
    dataset = DATASETS.get(data.get("dataset", "cifar10"), data.get("dataset"))
    ax.set_ylabel(f"{dataset} test top-1 (%)")
    ax.set_title(f"{data['study']}: accuracy vs weight sparsity", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def paired(data: dict, method: str = "tas", scheme: str = "kd") -> str:
    """``method`` against Uniform (the same training seeds, paired) and against the median
    Random network, under ``scheme``, in points of top-1; empty when either side is missing."""
    runs = [r for r in structured(data["runs"]) if r["scheme"] == scheme]
    ours = {r["seed"]: 100 * r["test_acc"] for r in runs if r["method"] == method}
    if not ours:
        return ""
    lines = []
    uniform = {r["seed"]: 100 * r["test_acc"] for r in runs if r["method"] == "uniform"}
    diffs = [ours[s] - uniform[s] for s in sorted(ours.keys() & uniform.keys())]
    if diffs:
        mean, std = mean_std(diffs)
        each = ", ".join(f"{d:+.2f}" for d in diffs)
        lines.append(
            f"- {METHODS.get(method, method)} - Uniform, {SCHEMES[scheme]}, paired by training "
            f"seed: {mean:+.2f} ± {std:.2f} points (n={len(diffs)}: {each})"
        )
    randoms = [100 * r["test_acc"] for r in runs if r["method"] == "random"]
    if randoms:
        median = statistics.median(randoms)
        gaps = [a - median for a in ours.values()]
        mean, std = mean_std(gaps)
        lines.append(
            f"- {METHODS.get(method, method)} - median Random ({len(randoms)} networks, "
            f"{median:.2f}%), {SCHEMES[scheme]}: {mean:+.2f} ± {std:.2f} points over "
            f"{len(gaps)} training seed(s); the randoms range {min(randoms):.2f}-"
            f"{max(randoms):.2f}%"
        )
    return "\n".join(lines) + "\n" if lines else ""


def devices(data: dict) -> str:
    """Which device ran how many of the rows (their wall times are that device's), as a
    paragraph; rows collected before the study recorded it are counted as not recorded."""
    counts = Counter(r.get("device") or "not recorded" for r in data["runs"])
    if not counts:
        return ""
    listed = "; ".join(f"{device}: {n}" for device, n in counts.most_common())
    return f"\nTrainings by device (wall times are that device's): {listed}.\n"


def write_report(data: dict) -> None:
    name = data["study"]
    md = ROOT / "studies" / "results" / f"{name}.md"
    text = table(data)
    gaps = paired(data)
    if gaps:
        text += f"\nPaired differences:\n\n{gaps}"
    weights = sparsity_table(data)
    if weights:
        head = "Weight pruning (the full network's shape and MACs, masks kept applied)"
        text += f"\n{head}:\n\n{weights}"
    text += devices(data)
    write_text_atomic(md, f"<!-- written by python -m studies.run --report -->\n\n{text}")
    png = ROOT / "docs" / f"study_{name}.png"
    plot(data, png)
    print(text)
    print(f"table: {md.relative_to(ROOT)}\nplot:  {png.relative_to(ROOT)}")
    if weights:
        png = png.with_name(f"study_{name}_sparsity.png")
        sparsity_plot(data, png)
        print(f"plot:  {png.relative_to(ROOT)}")
