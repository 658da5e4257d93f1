"""Train a network from scratch: the full teacher, a uniform or random baseline, or a found
architecture (optionally distilling from a teacher, as distill.py does).

    python train.py                                          # the ResNet-56 teacher, CIFAR-10
    python train.py --model.depth 20 --out runs/teacher20
    python train.py --arch uniform:0.5 --model.depth 20      # uniform-width baseline at 50% MACs
    python train.py --arch runs/search/found.json            # a found network, cross-entropy only

Every option: python train.py --help
"""

from __future__ import annotations

from typing import Any

from lightning_modules.classify import ClassifyModule
from lightning_modules.cli import TASCLI, describe_arch, main
from tas.latency import device_name


class TrainCLI(TASCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"trainer.max_epochs": 300, "trainer.log_every_n_steps": 10})

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        self.config.data.search_split = False


def finish(cli: TASCLI, seconds: float) -> None:
    """Test the final weights, write results.json, print the summary."""
    module: ClassifyModule = cli.model
    metrics = cli.trainer.test(module, datamodule=cli.datamodule, verbose=False)[0]
    if not cli.trainer.is_global_zero:
        return
    results = {
        "test_acc": metrics["test/acc"],
        **describe_arch(module.arch),
        "depth": module.arch.space.depth,
        "arch": module.hparams.arch,
        "teacher": module.hparams.teacher,
        "teacher_test_acc": module.teacher_test_acc,
        "epochs": cli.trainer.current_epoch,
        "precision": str(cli.trainer.precision),
        "wall_time_s": round(seconds, 1),
        "device": device_name(module.device),  # what the wall time was measured on
    }
    path = cli.write_json("results.json", results)
    teacher = (
        f", teacher {100 * module.teacher_test_acc:.2f}%"
        if module.teacher_test_acc is not None
        else ""
    )
    print(
        f"\nresults.json: {path}\n  {module.arch.summary()}\n"
        f"  test top-1 {100 * results['test_acc']:.2f}%{teacher}"
    )
    wandb_logger = cli.wandb()
    if wandb_logger is not None:
        wandb_logger.experiment.summary.update(
            {"test/acc": results["test_acc"], "macs": results["macs"], "params": results["params"]}
        )


if __name__ == "__main__":
    main(TrainCLI, ClassifyModule, "train.py", "runs/train", finish)
