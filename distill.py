"""Train the found compact network from scratch with Hinton knowledge distillation.

    python distill.py --arch runs/search/found.json --teacher runs/teacher/checkpoints/last.ckpt
    python distill.py ... --model.distill hinton+rkd      # add relational KD (or: rkd alone)

The network is built from found.json with fresh weights; the teacher (a train.py checkpoint of
the searched network) runs in eval mode without gradients. Every option: python distill.py --help
"""

from __future__ import annotations

from typing import Any

from lightning_modules.classify import ClassifyModule
from lightning_modules.cli import UsageError, main
from train import TrainCLI, finish


class DistillCLI(TrainCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"model.arch": "found.json"})

    def before_instantiate_classes(self) -> None:
        if not self.config.model.teacher:
            raise UsageError(
                "distill.py needs --teacher CKPT (a train.py checkpoint of the "
                "searched network); use train.py to train without a teacher"
            )
        super().before_instantiate_classes()


if __name__ == "__main__":
    main(DistillCLI, ClassifyModule, "distill.py", "runs/distill", finish)
