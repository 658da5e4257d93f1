"""TAS search: learn width and depth distributions under a MACs budget, write found.json and,
beside it, found.init.ckpt: the found network holding the weights the search trained for it.

    python train_search.py                                   # CIFAR-10, ResNet-56, ratio 0.47
    python train_search.py --config configs/search/cpu_resnet20_cifar10.yaml --out runs/s20
    python train_search.py --out runs/s20 --resume           # continue after an interruption

Every option: python train_search.py --help
"""

from __future__ import annotations

from typing import Any

from lightning_modules.cli import TASCLI, describe_arch, main
from lightning_modules.distributed import SearchDDPStrategy
from lightning_modules.plots import DistributionPlots
from lightning_modules.search import SearchModule
from lightning_modules.teacher import save_network


class SearchCLI(TASCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"trainer.max_epochs": 600, "trainer.log_every_n_steps": 10})

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        self.config.data.search_split = True  # weights and architecture learn on separate halves

    ddp_strategy = SearchDDPStrategy  # the search's two backward passes: see distributed.py

    def extra_callbacks(self) -> list:
        return [DistributionPlots(self.out)]


def finish(cli: SearchCLI, seconds: float) -> None:
    if not cli.trainer.is_global_zero:
        return
    module: SearchModule = cli.model
    arch, row = module.chosen()
    if row.val_acc is None:  # derived inside the band after the last epoch: score it likewise
        row.val_acc = module.score(arch, cli.datamodule)
        arch.search["val_acc"] = row.val_acc
    path = cli.out / "found.json"
    # the found network on the weights the search trained, before found.json names it
    init = path.with_name("found.init.ckpt")
    save_network(init, module.net.compact(arch), arch)
    arch.search["init_ckpt"] = init.name
    arch.save(path)
    last = module.history[-1]
    summary = {
        **describe_arch(arch),
        "target_macs": int(module.target_macs),
        "band_macs": [int(module.target_macs - module.tolerance_macs), int(module.target_macs)],
        "in_band": row.in_band,
        **({"latency_ms": row.latency_ms} if row.latency_ms is not None else {}),
        "selected": arch.search["selected"],
        "val_acc": row.val_acc,
        "last_epoch_macs": last.macs,
        "epochs": len(module.history),
        "warm_start": module.warm_start,
        "settling": last.settling() | {"unchanged_epochs": module.settled_epochs()},
        "wall_time_s": round(seconds, 1),
    }
    cli.write_json("search_summary.json", summary)
    band = "inside" if row.in_band else "OUTSIDE"
    chosen = f"{summary['selected']} epoch {row.epoch}, arch-half accuracy {100 * row.val_acc:.2f}%"
    print(f"\nfound.json: {path}\n  {arch.summary()}")
    print(
        f"  its weights on the search's shared weights: {init} (fine-tune: train.py --arch "
        f"{path} --init inherit --init_from {init})"
    )
    if row.latency_ms is not None:
        budget = module.budget
        print(
            f"  predicted latency {row.latency_ms:.3f} ms, target {budget.target:.3f} ms, band "
            f"[{budget.target - budget.tolerance:.3f}, {budget.target:.3f}] ms: {band} ({chosen}; "
            f"table {module.hparams.latency_table})"
        )
    else:
        print(
            f"  target {module.target_macs / 1e6:.2f}M MACs, band "
            f"[{summary['band_macs'][0] / 1e6:.2f}M, {summary['band_macs'][1] / 1e6:.2f}M]: {band}"
            f" ({chosen})"
        )
    settle = summary["settling"]
    print(
        f"  distributions: largest width probability {settle['width_maxprob']:.3f} (mean), depth "
        f"{settle['depth_maxprob_min']:.3f} (min); argmax unchanged for the last "
        f"{settle['unchanged_epochs']} epoch(s)"
    )
    derivation = arch.search.get("derivation")
    if derivation is not None:
        print(
            f"  no epoch's argmax network landed inside the band (the last: "
            f"{derivation['argmax_macs'] / 1e6:.2f}M MACs, log-probability "
            f"{derivation['argmax_log_prob']:.2f}); found.json holds the most probable network "
            f"inside it (log-probability {derivation['log_prob']:.2f})"
        )
    if not row.in_band:
        print(
            "  no epoch's architecture landed inside the band: search longer, or check --model.ratio"
        )
    wandb_logger = cli.wandb()
    if wandb_logger is not None:
        import wandb

        artifact = wandb.Artifact("found-arch", type="architecture", metadata=summary)
        artifact.add_file(str(path))
        wandb_logger.experiment.log_artifact(artifact)
        wandb_logger.experiment.summary.update({f"found/{k}": v for k, v in summary.items()})


if __name__ == "__main__":
    main(SearchCLI, SearchModule, "train_search.py", "runs/search", finish)
