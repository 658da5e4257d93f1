"""Pictures of the search: heatmaps of every width distribution and every depth distribution,
drawn each epoch, logged to W&B and kept as OUT/distributions.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import Callback  # noqa: E402
from pytorch_lightning.loggers import WandbLogger  # noqa: E402

import tas  # noqa: E402


def distribution_figure(net: tas.Supernet, title: str = "") -> plt.Figure:
    """Width probabilities (conv x candidate rank) beside depth probabilities (stage x choice)."""
    space = net.space
    with torch.no_grad():
        widths = net.width_probs().float().cpu()  # (num_convs, M)
        depths = net.depth_probs().float().cpu()  # (num_stages, D)
    names = [c.name for c in space.convs()]
    height = max(4.0, 0.12 * len(names) + 1.5)
    fig, (ax_w, ax_d) = plt.subplots(
        1,
        2,
        figsize=(11, height),
        gridspec_kw={"width_ratios": [widths.shape[1], depths.shape[1] + 2]},
    )
    im = ax_w.imshow(widths, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax_w.set_title("width: P(candidate) per conv")
    ax_w.set_xlabel("candidate (narrow -> full width)")
    step = max(1, len(names) // 40)
    ax_w.set_yticks(
        range(0, len(names), step), [names[i] for i in range(0, len(names), step)], fontsize=6
    )
    ax_d.imshow(depths, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax_d.set_title("depth: P(blocks kept)")
    choices = space.stages[0].depth_choices
    ax_d.set_xticks(range(len(choices)), [str(c) for c in choices], fontsize=7)
    ax_d.set_yticks(range(len(space.stages)), [s.name for s in space.stages])
    fig.colorbar(im, ax=[ax_w, ax_d], fraction=0.03)
    fig.suptitle(title)
    return fig


class DistributionPlots(Callback):
    """After every validation epoch of a search: draw the distributions, save, log to W&B."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / "distributions.png"

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fig = distribution_figure(
            module.net, f"epoch {trainer.current_epoch}, tau {module.net.tau:.3g}"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".distributions.tmp.png")
        fig.savefig(tmp, dpi=80)
        tmp.replace(self.path)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image("search/distributions", [fig], step=trainer.global_step)
        plt.close(fig)


def search_curves_figure(metrics_csv: str | Path, title: str = "") -> plt.Figure:
    """The search's curves from a run's logs/metrics.csv (no W&B needed): expected and argmax
    MACs against the target band, the cost loss, the temperature, the losses and accuracy, and
    the convergence of the distributions (largest probabilities, argmax changes per epoch)."""
    import csv

    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(3, 2, figsize=(11, 10.5))
    ax = axes[0, 0]
    for key, label in (
        ("search/expected_macs", "expected MACs"),
        ("search/argmax_macs", "argmax MACs"),
    ):
        s, v = series(key)
        ax.plot(s, [m / 1e6 for m in v], label=label, lw=1)
    s, v = series("search/target_macs")
    if v:
        ax.axhline(v[0] / 1e6, color="k", ls="--", lw=1, label="target")
        s_d, v_d = series("search/derived_macs")
        ax.plot(s_d, [m / 1e6 for m in v_d], "o", ms=3, label="derived per epoch")
    ax.set_ylabel("MACs (M)")
    ax.legend(fontsize=8)
    ax.set_title("MACs vs target")
    ax = axes[0, 1]
    s, v = series("search/cost_loss")
    ax.plot(s, v, lw=1, label="cost loss")
    ax2 = ax.twinx()
    s, v = series("search/tau")
    ax2.plot(s, v, color="tab:red", lw=1, label="tau")
    ax.set_title("cost loss (blue), Gumbel tau (red)")
    ax = axes[1, 0]
    for key, label in (("train/ce", "weight-step CE"), ("search/arch_ce", "arch-step CE")):
        s, v = series(key)
        ax.plot(s, v, lw=1, label=label)
    ax.legend(fontsize=8)
    ax.set_title("cross-entropy")
    ax = axes[1, 1]
    s, v = series("val/acc")
    ax.plot(s, [100 * a for a in v], "o-", ms=3)
    ax.set_title("derived network, accuracy on the architecture half (%)")
    ax = axes[2, 0]
    for key, label, style in (
        ("search/width_maxprob", "width, mean", "o-"),
        ("search/width_maxprob_min", "width, min", "o:"),
        ("search/depth_maxprob", "depth, mean", "s-"),
        ("search/depth_maxprob_min", "depth, min", "s:"),
    ):
        s, v = series(key)
        ax.plot(s, v, style, ms=3, lw=1, label=label)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("convergence: largest probability of each distribution")
    ax.set_xlabel("step")
    ax = axes[2, 1]
    s, v = series("search/argmax_changes")
    ax.bar(s, v, width=max(1.0, (s[-1] - s[0]) / 40 if len(s) > 1 else 1.0), color="tab:gray")
    ax.set_ylabel("convs + stages whose argmax changed", fontsize=8)
    ax2 = ax.twinx()
    for key, label, color in (
        ("search/epoch_expected_macs", "E[MACs]", "tab:blue"),
        ("search/derived_macs", "argmax MACs", "tab:orange"),
    ):
        s, v = series(key)
        ax2.plot(s, [m / 1e6 for m in v], "o-", ms=3, lw=1, color=color, label=label)
    ax2.set_ylabel("MACs at epoch end (M)", fontsize=8)
    ax2.legend(fontsize=8)
    ax.set_title("argmax changes per epoch (bars); E[MACs] vs argmax MACs")
    ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


if __name__ == "__main__":  # python -m lightning_modules.plots RUN_DIR [OUT.png]
    import sys

    run = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else run / "search_curves.png"
    search_curves_figure(run / "logs" / "metrics.csv", f"TAS search: {run}").savefig(target, dpi=90)
    print(target)
