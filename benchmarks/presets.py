"""Speed-benchmark presets: the data, backbone and epoch counts of the quality presets
(configs/digits and configs/cifar10_small), built directly so speed.py can time each part.

The ``cifar10-small`` speed preset augments (crop + flip) although its quality configs do
not: the data-path comparison is against the authors' augmented PIL pipeline, so both
sides do that work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from natmu_lightning.backbones import ResNet18, SmallCNN
from natmu_lightning.data import CIFAR10JPEG, ClassBalancedSubset, DataSource, Digits

REPO = Path(__file__).resolve().parents[1]
CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10_jpeg.npz"


@dataclass(frozen=True)
class Preset:
    name: str
    source: Callable[[], DataSource]
    backbone: Callable[[], nn.Module]
    batch_size: int
    crop_padding: int
    horizontal_flip: bool
    classifier_epochs: int
    classifier_lr: float
    unlearn_epochs: int = 5
    natmu: dict = field(default_factory=lambda: {"lr": 1e-3, "weight_decay": 2e-3, "delta": -0.19})


PRESETS = {
    "digits": Preset(
        name="digits",
        source=lambda: Digits(noise_std=0.25),
        backbone=lambda: SmallCNN(num_classes=10),
        batch_size=64,
        crop_padding=1,
        horizontal_flip=False,
        classifier_epochs=100,
        classifier_lr=0.05,
    ),
    "cifar10-small": Preset(
        name="cifar10-small",
        source=lambda: ClassBalancedSubset(CIFAR10JPEG(str(CIFAR10_JPEG)), train_per_class=500, test_per_class=200),
        backbone=lambda: ResNet18(num_classes=10, width=8),
        batch_size=128,
        crop_padding=4,
        horizontal_flip=True,
        classifier_epochs=20,
        classifier_lr=0.05,
    ),
}
