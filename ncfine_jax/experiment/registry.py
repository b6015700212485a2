"""The paper's experiments: name -> ``ExperimentSpec`` (description + default config).

CIFAR experiments use the paper's setting by default: ResNet-18, 350 epochs, SGD momentum
0.9, batch 128, weight decay 5e-4, lr x0.1 at epochs 150 and 250, features at epochs 20,
120, 240 and 350 (README: cost and measured runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from ncfine_jax.experiment.config import (PAPER_SAVE_EPOCHS, DataConfig, ExperimentConfig,
                                          LabelConfig)
from ncfine_jax.train.config import TrainConfig


@dataclass(frozen=True)
class ExperimentSpec:
    """One paper experiment: its name (script), what it trains, and its default config.

    Attributes:
      name: e.g. "coarse_cifar10"; the default workdir is runs/<name>/...
      description: one line for --help.
      defaults: the default ``ExperimentConfig`` (every flag's default).
    """

    name: str
    description: str
    defaults: ExperimentConfig

    @property
    def label_kind(self) -> str:
        return self.defaults.labels.kind


# The paper's lr x weight-decay grid (App. A adds weight decay 0).
PAPER_LRS = (0.1, 0.01, 0.001)
PAPER_WDS = (5e-3, 5e-4, 5e-5)

PAPER_TRAIN = TrainConfig(arch="resnet18", lr=0.01, weight_decay=5e-4, momentum=0.9,
                          epochs=350, batch_size=128, schedule="step",
                          save_features_at=PAPER_SAVE_EPOCHS)


def _spec(name: str, kind: str, description: str, *, data: str = "cifar10",
          num_coarse: int | None = None, train: TrainConfig = PAPER_TRAIN) -> ExperimentSpec:
    return ExperimentSpec(name, description, ExperimentConfig(
        name, train, DataConfig(data), LabelConfig(kind, num_coarse)))


EXPERIMENTS: dict[str, ExperimentSpec] = {
    spec.name: spec
    for spec in (
        _spec("coarse_cifar10", "coarse", "ResNet-18 on Coarse CIFAR-10: 5 labels y mod 5 "
              "(paper Sec. 4).", num_coarse=5),
        _spec("fine_cifar10", "fine", "ResNet-18 on Fine CIFAR-10: 20 labels, each class "
              "split in two at random (paper Sec. 4, eq. 5)."),
        _spec("random_coarse_cifar10", "random_coarse", "ResNet-18 on randomly coarsened "
              "CIFAR-10: classes shuffled by the seed, then y mod 5 (paper App. F).",
              num_coarse=5),
        _spec("coarse_cifar100", "coarse", "ResNet-18 on Coarse CIFAR-100: 20 labels "
              "y mod 20.", data="cifar100", num_coarse=20),
        _spec("cifar100_superclasses", "cifar100_superclass", "ResNet-18 on CIFAR-100's 20 "
              "official superclasses.", data="cifar100"),
        _spec("original_cifar10", "original", "ResNet-18 on the original 10 CIFAR-10 labels "
              "(the OT baseline of the CLP/LPO/OT comparison)."),
        _spec("coarse_digits", "coarse", "Offline demo: the whole pipeline on sklearn's 8x8 "
              "digits (5 coarse labels y mod 5) with a 2-layer MLP.", data="digits",
              num_coarse=5, train=TrainConfig(arch="mlp", lr=0.05, weight_decay=5e-4,
                                              epochs=60, batch_size=128, schedule="step",
                                              save_features_at=(5, 20, 40, 60))),
    )
}
